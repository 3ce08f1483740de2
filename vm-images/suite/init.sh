#!/bin/busybox sh
# daxdiff suite guest /init: the known starting layout every ndctl dax test gets (a fresh boot
# each). Lines starting "daxdiff-init:" are the markers the controller reads, as in
# vm-images/guest/init.sh; keep their wording stable.
/bin/busybox mkdir -p /proc /sys /dev /run /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
say() { echo "daxdiff-init: $*" > /dev/console; }
fail() {
    say "bringup-failed rc=1: $*"
    while true; do sleep 3600; done
}
say "init-start"

cmdline=$(cat /proc/cmdline)
param() { for w in $cmdline; do case "$w" in "$1"=*) echo "${w#*=}";; esac; done; }

if [ "$(param daxdiff.bare)" = 1 ]; then
    say "bare-poweroff"
    poweroff -f
fi

mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
mkdir -p /run/daxdiff
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup   # journald refuses to start without it
# bash's process substitution (dax-ext4.sh reads `< <(trace-cmd report …)`) needs /dev/fd.
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
ln -sf /proc/self/mounts /etc/mtab

# No udev here: load the drivers the NVDIMM buses, the file systems and the network need.
# The tests' own modprobe calls (kmem, nfit_test, cxl_test) find the whole module tree.
while read -r m; do
    [ -n "$m" ] || continue
    if ! out=$(modprobe "$m" 2>&1); then
        say "module-failed $m: $out"
    fi
done < /etc/daxdiff/modules.probe
say "modules-loaded"

# The tests work in directories under /tmp (meson runs them in its build directory, on
# disk), and device-dax opens its data file there O_DIRECT, which tmpfs refuses before 6.6:
# /tmp is ext4 on the scratch disk the controller attaches.
scratch=
tries=0
while [ -z "$scratch" ] && [ $tries -le 25 ]; do
    for s in /sys/block/vd*/serial; do
        [ -e "$s" ] && [ "$(cat "$s")" = daxdiff-scratch ] && scratch=/dev/$(basename "$(dirname "$s")")
    done
    [ -n "$scratch" ] || { tries=$((tries + 1)); sleep 0.2; }
done
if [ -z "$scratch" ]; then
    fail "no scratch disk (virtio-blk, serial daxdiff-scratch): is virtio_blk in the kernel?"
fi
mkfs.ext4 -q -F "$scratch" > /run/mkfs-scratch.log 2>&1 || fail "mkfs.ext4 $scratch: $(cat /run/mkfs-scratch.log)"
mount -t ext4 "$scratch" /tmp || fail "mount $scratch on /tmp"

# The kernel log the tests read back (check_dmesg: `journalctl -k --since …`).
tr -d '-' < /proc/sys/kernel/random/uuid > /etc/machine-id
mkdir -p /run/systemd/journal /run/log/journal
/lib/systemd/systemd-journald > /run/journald.log 2>&1 &
tries=0
until [ -n "$(journalctl -k -q -n 1 --no-pager 2>/dev/null)" ]; do
    tries=$((tries + 1))
    [ $tries -le 100 ] || fail "journalctl -k shows no kernel messages (journald: $(tr '\n' ' ' < /run/journald.log))"
    sleep 0.2
done

ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 \
    || say "network-failed: no eth0 (is virtio_net loaded?)"

mkdir -p /root/.ssh /etc/dropbear
chmod 700 /root /root/.ssh
echo "ssh-ed25519 $(param daxdiff.sshkey) daxdiff" > /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
# A host key made here and announced on the serial console, which only the controller reads:
# it checks that the SSH server it reaches on the forwarded port is this guest.
hostkey=/etc/dropbear/dropbear_ed25519_host_key
dropbearkey -t ed25519 -f "$hostkey" >/dev/null 2>&1 || say "hostkey-failed: dropbearkey"
say "hostkey $(dropbearkey -y -f "$hostkey" 2>/dev/null | grep '^ssh-ed25519 ' | cut -d' ' -f1-2)"
if dropbear -r "$hostkey" -s -p 22 2>/run/dropbear.log; then
    say "sshd-started"
else
    say "sshd-failed: $(cat /run/dropbear.log)"
fi

# Every tool the dax tests call must be here and load its libraries.
for t in bash jq trace-cmd fio dmsetup journalctl mkfs.ext4 mkfs.xfs modprobe modinfo \
         mountpoint fallocate sort seq getconf; do
    command -v "$t" >/dev/null || fail "the suite guest lacks $t"
    case "$("$t" --help 2>&1 </dev/null)" in
        *"error while loading shared libraries"*) fail "$t cannot load its libraries: $("$t" --help 2>&1 | head -1)";;
    esac
done

# The starting layout: labels initialized on every ACPI NVDIMM (a fresh label area has
# none), its regions enabled with all capacity free; the e820 pmem as the kernel made it.
ndctl=/opt/ndctl/build/ndctl/ndctl
[ -x $ndctl ] || fail "no ndctl test build at /opt/ndctl"
out=$({ $ndctl disable-region -b ACPI.NFIT all && $ndctl init-labels -f -b ACPI.NFIT all \
        && $ndctl enable-region -b ACPI.NFIT all; } 2>&1) \
    || fail "preparing the ACPI NVDIMM labels: $(echo "$out" | tr '\n' ' ')"
[ -n "$($ndctl list -b ACPI.NFIT -R)" ] || fail "no ACPI NVDIMM region (QEMU nvdimm=on and nfit)"
[ -n "$($ndctl list -b e820 -N)" ] || fail "no e820 pmem namespace (memmap= on the kernel command line and nd_e820)"

layout=$($ndctl list -RNi)
echo "{\"ok\": true, \"steps\": [{\"step\": \"layout\", \"ndctl\": ${layout:-[]}}]}" > /run/daxdiff/bringup.json
say "bringup-done rc=0"

# init must not exit; the controller powers the guest off.
while true; do sleep 3600; done
