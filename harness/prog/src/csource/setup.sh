#!/bin/sh
# Prepares this machine's NVDIMMs for a daxdiff reproducer, as root, the way daxdiff's guests
# are set up: one fsdax namespace with ext4 mounted -o dax, one fsdax namespace with xfs
# (reflink off) mounted -o dax=always, one devdax namespace (2 MiB alignment) — only those
# the reproducer uses. Then repro.sh finds them. Needs ndctl, and mkfs.ext4 / mkfs.xfs.
#
# Careful by default: what is already set up is reused, new namespaces are made only from
# free region space, and nothing that exists is destroyed. DAXDIFF_FORCE=1 lets it
# reconfigure an existing namespace that is not mounted, and write labels on NVDIMMs whose
# label area is blank; THE DATA ON THOSE IS LOST. Every command it runs is printed (+ ...).
#
#   DAXDIFF_ROLES       which to set up (default: what this reproducer uses)
#   DAXDIFF_NS_SIZE     size of each new namespace when a region has more room (default 1G)
#   DAXDIFF_EXT4_MNT    where ext4 is mounted (default /mnt/daxdiff-ext4)
#   DAXDIFF_XFS_MNT     where xfs is mounted (default /mnt/daxdiff-xfs)
#   DAXDIFF_FORCE       1: allow the destructive steps above
set -eu
: "${DAXDIFF_ROLES:=@ROLES@}"
: "${DAXDIFF_NS_SIZE:=1G}"
: "${DAXDIFF_EXT4_MNT:=/mnt/daxdiff-ext4}"
: "${DAXDIFF_XFS_MNT:=/mnt/daxdiff-xfs}"
: "${DAXDIFF_FORCE:=0}"
nd=/sys/bus/nd/devices

say() { echo "setup.sh: $*" >&2; }
die() {
	say "$*"
	exit 1
}
run() {
	echo "+ $*" >&2
	"$@"
}
run_err_to() { # file command...: run, with the command's stderr in file
	f=$1
	shift
	echo "+ $*" >&2
	"$@" 2>"$f"
}

[ "$(id -u)" = 0 ] || die "run me as root (namespaces, mkfs and mount need it)"
command -v ndctl >/dev/null || die "ndctl not found: apt-get install ndctl (or dnf install ndctl)"
[ -d "$nd" ] || die "no $nd: load the NVDIMM drivers (modprobe nfit nd_pmem dax_pmem device_dax) or boot with NVDIMMs"

# Bytes of a size such as 1G, 512M or 1073741824.
bytes() {
	case $1 in
	*[Gg]) echo $((${1%?} << 30)) ;;
	*[Mm]) echo $((${1%?} << 20)) ;;
	*) echo "$1" ;;
	esac
}
want=$(bytes "$DAXDIFF_NS_SIZE")

# The field of the first DAX mount of fstype (1 device, 2 mountpoint), as repro.sh finds it.
dax_mount() {
	awk -v t="$1" -v f="$2" '$3 == t && $4 ~ /(^|,)dax(=always)?(,|$)/ { print $f; exit }' /proc/mounts
}
mounted() { # device
	awk -v d="$1" '$1 == d || index($1, d "p") == 1 { found = 1 } END { exit !found }' /proc/mounts
}
first_devdax() {
	for d in /dev/dax*.*; do
		[ -c "$d" ] && echo "$d" && return 0
	done
	return 0
}
field() { # name: the value of "name":"…" in ndctl's JSON output on stdin
	sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" | head -n 1
}

# The block device of a namespace directory (raw: its own; fsdax: its pfn holder's), or
# nothing (devdax, disabled).
blockdev_of() {
	h=$(cat "$1/holder" 2>/dev/null || true)
	for b in "$1"/block/* ${h:+"$nd/$h"/block/*}; do
		[ -e "$b" ] && echo "${b##*/}" && return 0
	done
	return 0
}

# Namespaces in use by this run, so two roles never take the same one.
taken=""

# A region with at least 512 MiB free (xfs needs 300 MiB), or nothing.
free_region() {
	for r in "$nd"/region*; do
		[ -e "$r/available_size" ] || continue
		a=$(cat "$r/available_size")
		[ "$a" -ge $((512 << 20)) ] && echo "${r##*/}" && return 0
	done
	return 0
}

# An existing namespace (not this run's, not mounted, not an active devdax mapping we just
# made) that DAXDIFF_FORCE may reconfigure, or nothing.
reusable_namespace() {
	for n in "$nd"/namespace*.*; do
		[ -e "$n/size" ] || continue
		ns=${n##*/}
		[ "$(cat "$n/size")" -gt 0 ] || continue
		case " $taken " in *" $ns "*) continue ;; esac
		b=$(blockdev_of "$n")
		[ -n "$b" ] && mounted "/dev/$b" && continue
		echo "$ns"
		return 0
	done
	return 0
}

# Blank label areas leave a region with one raw namespace and no free space; ndctl needs
# labels to create fsdax/devdax namespaces there.
init_blank_labels() {
	blank=""
	for d in "$nd"/nmem*; do
		[ -e "$d" ] || continue
		ndctl check-labels "${d##*/}" >/dev/null 2>&1 || blank="$blank ${d##*/}"
	done
	[ -n "$blank" ] || return 0
	if [ "$DAXDIFF_FORCE" != 1 ]; then
		say "NVDIMMs with blank label areas:$blank; rerun with DAXDIFF_FORCE=1 to write empty labels (ndctl init-labels; regions are disabled meanwhile)"
		return 0
	fi
	for d in $blank; do
		for r in "$nd"/region*; do
			grep -qs "^$d," "$r"/mapping* || continue
			for n in "$r"/namespace*.*; do
				b=$(blockdev_of "$n")
				[ -n "$b" ] && mounted "/dev/$b" && die "$d has blank labels but /dev/$b is mounted: unmount it first"
			done
			run ndctl disable-region "${r##*/}" >&2
		done
	done
	# shellcheck disable=SC2086
	run ndctl init-labels $blank >&2
	run ndctl enable-region all >&2
}

# Makes a namespace in mode (fsdax|devdax); prints ndctl's JSON for it.
new_namespace() { # mode role
	set -- "$1" "$2" "$(free_region)"
	if [ -z "$3" ]; then
		init_blank_labels
		set -- "$1" "$2" "$(free_region)"
	fi
	extra=""
	[ "$1" = devdax ] && extra="-a 2M"
	if [ -n "$3" ]; then
		a=$(cat "$nd/$3/available_size")
		size=""
		[ "$a" -gt "$want" ] && size="-s $DAXDIFF_NS_SIZE"
		err=$(mktemp)
		# shellcheck disable=SC2086
		if run_err_to "$err" ndctl create-namespace -r "$3" -m "$1" $size $extra; then
			rm -f "$err"
			return
		fi
		cat "$err" >&2
		# ndctl asks for 16 MiB alignment for portability; x86 needs 2 MiB, which -f allows.
		if grep -q "misaligned to 16M" "$err"; then
			rm -f "$err"
			# shellcheck disable=SC2086
			run ndctl create-namespace -f -r "$3" -m "$1" $size $extra
			return
		fi
		rm -f "$err"
		die "ndctl create-namespace -r $3 -m $1 failed (above)"
	fi
	old=$(reusable_namespace)
	if [ -n "$old" ] && [ "$DAXDIFF_FORCE" = 1 ]; then
		say "no free NVDIMM space for $2: reconfiguring $old to $1 (DAXDIFF_FORCE=1; its data is lost)"
		# shellcheck disable=SC2086
		run ndctl create-namespace -f -e "$old" -m "$1" $extra
		return
	fi
	say "no free NVDIMM space for $2 (a region with 512 MiB or more available). Namespaces:"
	ndctl list -N >&2 || true
	if [ -n "$old" ]; then
		die "rerun with DAXDIFF_FORCE=1 to reconfigure $old (not mounted; its data is lost), or free space yourself (ndctl destroy-namespace -f NAMESPACE)"
	fi
	die "every namespace is mounted or already used here: free one (umount; ndctl destroy-namespace -f NAMESPACE), or use a machine with more NVDIMM space"
}

set_up_fs() { # fstype mountpoint option mkfs...
	fs=$1 mnt=$2 opt=$3
	shift 3
	if [ -n "$(dax_mount "$fs" 2)" ]; then
		say "$fs: reusing $(dax_mount "$fs" 1) mounted with DAX on $(dax_mount "$fs" 2)"
		return
	fi
	json=$(new_namespace fsdax "$fs")
	echo "$json" >&2
	ns=$(echo "$json" | field dev)
	dev=/dev/$(echo "$json" | field blockdev)
	[ -b "$dev" ] || die "ndctl made $ns but $dev is not a block device"
	taken="$taken $ns"
	run "$@" "$dev"
	run mkdir -p "$mnt"
	run mount -t "$fs" -o "$opt" "$dev" "$mnt"
}

for role in $DAXDIFF_ROLES; do
	case $role in
	ext4)
		command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 not found: apt-get install e2fsprogs"
		set_up_fs ext4 "$DAXDIFF_EXT4_MNT" dax mkfs.ext4 -F -q -b 4096
		;;
	xfs)
		command -v mkfs.xfs >/dev/null || die "mkfs.xfs not found: apt-get install xfsprogs"
		set_up_fs xfs "$DAXDIFF_XFS_MNT" dax=always mkfs.xfs -f -q -m reflink=0
		;;
	devdax)
		if [ -n "$(first_devdax)" ]; then
			say "devdax: reusing $(first_devdax)"
			continue
		fi
		json=$(new_namespace devdax devdax)
		echo "$json" >&2
		taken="$taken $(echo "$json" | field dev)"
		;;
	*) die "unknown role $role in DAXDIFF_ROLES (ext4, xfs, devdax)" ;;
	esac
done

# What repro.sh will find (it takes the first of each).
echo "setup.sh: repro.sh will use:"
for fs in ext4 xfs; do
	if [ -n "$(dax_mount $fs 2)" ]; then
		echo "  $fs: $(dax_mount $fs 1) on $(dax_mount $fs 2) (DAX)"
	else
		echo "  $fs: none"
	fi
done
d=$(first_devdax)
if [ -n "$d" ]; then
	echo "  devdax: $d (align $(cat "/sys/bus/dax/devices/${d##*/}/align" 2>/dev/null || echo unknown))"
else
	echo "  devdax: none"
fi
