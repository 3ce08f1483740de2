#!/usr/bin/env bash
# Installs what daxdiff needs on a fresh Debian host (as root), from the host's own release:
# QEMU, kmod (module dependency resolution), dpkg/apt (already there), an ssh client for
# `daxdiff vm shell`, and the headers the Rust build links against. Then builds everything.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v depmod >/dev/null || [ -x /sbin/depmod ] || need+=(kmod)
command -v ssh >/dev/null || need+=(openssh-client)
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v cc >/dev/null || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing host packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
else
    echo "setup: host packages present (qemu-system-x86, kmod, openssh-client, libssl-dev)"
fi
ci/build.sh
