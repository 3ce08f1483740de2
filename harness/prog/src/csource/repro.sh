#!/bin/sh
# Runs a daxdiff reproducer (./repro, or the binary named by $1) against this machine's DAX
# set-up, as root: an ext4 file system mounted with -o dax, an xfs one with -o dax=always
# (on pmem), and a device-dax device. Each is found from /proc/mounts and /dev; set the
# DAXDIFF_* variables below to choose others. The program's files go in a fresh
# daxdiff-repro directory on each mount.
set -e
bin=${1:-./repro}

dax_mount() { # fstype field(1=device 2=mountpoint 4=options)
	awk -v t="$1" -v f="$2" '$3 == t && $4 ~ /(^|,)dax(=always)?(,|$)/ { print $f; exit }' /proc/mounts
}

: "${DAXDIFF_EXT4_MNT:=$(dax_mount ext4 2)}"
: "${DAXDIFF_EXT4_DEV:=$(dax_mount ext4 1)}"
: "${DAXDIFF_XFS_MNT:=$(dax_mount xfs 2)}"
: "${DAXDIFF_XFS_DEV:=$(dax_mount xfs 1)}"
: "${DAXDIFF_EXT4_OPTS:=dax}"
: "${DAXDIFF_XFS_OPTS:=dax=always}"
if [ -z "${DAXDIFF_DEVDAX:-}" ]; then
	for d in /dev/dax*.*; do
		[ -c "$d" ] && DAXDIFF_DEVDAX=$d && break
	done
fi
: "${DAXDIFF_DEVDAX:=/dev/dax0.0}"
# daxR.N belongs to namespaceR.N (ndctl's numbering); its alignment is in sysfs.
dev=${DAXDIFF_DEVDAX##*/}
: "${DAXDIFF_DEVDAX_NS:=namespace${dev#dax}}"
if [ -z "${DAXDIFF_DEVDAX_ALIGN:-}" ]; then
	DAXDIFF_DEVDAX_ALIGN=$(cat "/sys/bus/dax/devices/$dev/align" 2>/dev/null || echo 2097152)
fi

for fs in EXT4 XFS; do
	eval mnt=\$DAXDIFF_${fs}_MNT
	if [ -n "$mnt" ]; then
		rm -rf "$mnt/daxdiff-repro"
		mkdir -p "$mnt/daxdiff-repro"
		eval ": \${DAXDIFF_${fs}_DIR:=$mnt/daxdiff-repro}"
	else
		echo "repro.sh: no ${fs} file system mounted with DAX; calls on it will fail" >&2
	fi
done

# The non-DAX ends of direct I/O in daxdiff's guest: ext4 without DAX at /mnt/nodax and the
# virtio disk with serial daxdiff-blk.
if [ -z "${DAXDIFF_NODAX_DIR:-}" ] && grep -q " /mnt/nodax " /proc/mounts; then
	rm -rf /mnt/nodax/daxdiff-repro
	mkdir -p /mnt/nodax/daxdiff-repro
	DAXDIFF_NODAX_DIR=/mnt/nodax/daxdiff-repro
fi
if [ -z "${DAXDIFF_BLKDEV:-}" ]; then
	for s in /sys/block/*/serial; do
		if [ "$(cat "$s" 2>/dev/null)" = daxdiff-blk ]; then
			DAXDIFF_BLKDEV=/dev/$(basename "$(dirname "$s")")
		fi
	done
fi
export DAXDIFF_NODAX_DIR DAXDIFF_BLKDEV
export DAXDIFF_EXT4_MNT DAXDIFF_EXT4_DEV DAXDIFF_EXT4_OPTS DAXDIFF_EXT4_DIR
export DAXDIFF_XFS_MNT DAXDIFF_XFS_DEV DAXDIFF_XFS_OPTS DAXDIFF_XFS_DIR
export DAXDIFF_DEVDAX DAXDIFF_DEVDAX_NS DAXDIFF_DEVDAX_ALIGN
echo "repro.sh: ext4 ${DAXDIFF_EXT4_DIR:-none}, xfs ${DAXDIFF_XFS_DIR:-none}, devdax $DAXDIFF_DEVDAX ($DAXDIFF_DEVDAX_NS)" >&2
exec "$bin"
