#!/bin/busybox sh
# daxdiff guest /init. Lines starting "daxdiff-init:" on the console are the markers the
# controller times the boot with and reads failures from; keep their wording stable.
/bin/busybox mkdir -p /proc /sys /dev /run /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
say() { echo "daxdiff-init: $*" > /dev/console; }
say "init-start"

cmdline=$(cat /proc/cmdline)
param() { for w in $cmdline; do case "$w" in "$1"=*) echo "${w#*=}";; esac; done; }

if [ "$(param daxdiff.bare)" = 1 ]; then
    say "bare-poweroff"
    poweroff -f
fi

mkdir -p /dev/pts /dev/shm /run/daxdiff /mnt/ext4 /mnt/xfs
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mkdir -p /run/daxdiff
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null

release=$(uname -r)
# modules.load: "GROUP PATH" lines; groups share no module, so they load in parallel.
load_group() {
    while read -r g m; do
        [ "$g" = "$1" ] || continue
        if ! out=$(insmod "/lib/modules/$release/$m" 2>&1); then
            say "module-failed $m: $out"
        fi
    done < /etc/daxdiff/modules.load
}
for g in $(cut -d' ' -f1 /etc/daxdiff/modules.load | sort -u); do
    load_group "$g" &
done
wait
say "modules-loaded"

# The reference-count probe (vm-images/probe), in the image when the host could build it for
# this kernel; `daxdiff-exec refcounts` reads it from debugfs.
probe=/lib/modules/$release/extra/daxdiff_probe.ko
if [ ! -f "$probe" ]; then
    say "probe-missing: not built for this kernel (the host said why)"
elif out=$(insmod "$probe" 2>&1); then
    say "probe-loaded"
else
    say "probe-missing: insmod: $out"
fi

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

if daxdiff-exec bringup >/run/daxdiff/bringup.json 2>/run/daxdiff/bringup.err; then
    say "bringup-done rc=0"
else
    rc=$?
    say "bringup-failed rc=$rc: $(tr '\n' ' ' < /run/daxdiff/bringup.err)"
fi

# init must not exit; the controller powers the guest off.
while true; do sleep 3600; done
