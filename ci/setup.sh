#!/usr/bin/env bash
# Installs what daxdiff needs on a fresh Debian host (as root), from the host's own release:
# QEMU, kmod (module dependency resolution), dpkg/apt (already there), an ssh client for
# `daxdiff vm shell`, and the headers the Rust build links against. Then builds everything.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust: the workspace declares its minimum (rust-version in Cargo.toml); Debian's own cargo is
# older than that, so the toolchain comes from rustup, which this script does not install.
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
    echo "setup: no Rust toolchain (cargo, rustc) on PATH; daxdiff needs Rust $msrv or newer." >&2
    echo "setup: install rustup (https://rustup.rs), then: rustup toolchain install $msrv" >&2
    echo "setup: (Debian's cargo and rustc packages are too old for the locked dependencies)" >&2
    exit 1
fi
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$msrv" "$have" | sort -V | head -1)" != "$msrv" ]; then
    echo "setup: rustc $have ($(command -v rustc)) is older than the Rust $msrv daxdiff needs." >&2
    echo "setup: rustup toolchain install $msrv (or rustup update), or put a newer cargo first on PATH" >&2
    exit 1
fi
echo "setup: Rust $have (the workspace needs $msrv or newer)"

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v depmod >/dev/null || [ -x /sbin/depmod ] || need+=(kmod)
command -v ssh >/dev/null || need+=(openssh-client)
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v cc >/dev/null || need+=(gcc libc6-dev)
# Kernel sources (linux-source-*.tar.xz) and 7.x kernel packages are xz-compressed; a minimal
# image lacks the tool.
command -v xz >/dev/null || need+=(xz-utils)
# The reference-count probe: make, gcc-12 and libelf1 (Debian's kbuild tools) build it for
# gcc-12 kernels on the host; debootstrap makes the build chroot for gcc-14 kernels.
command -v make >/dev/null || need+=(make)
command -v x86_64-linux-gnu-gcc-12 >/dev/null || need+=(gcc-12)
[ -e /usr/lib/x86_64-linux-gnu/libelf.so.1 ] || need+=(libelf1)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
# Kernel builds (`daxdiff kernel build`): kbuild's host tools and headers, git and patch for series.
for p in flex bison bc libelf-dev git patch perl; do
    dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || need+=("$p")
done
# Mail: git send-email, which the tests run (--dry-run) on the reply and report daxdiff write.
for p in git-email; do
    dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || need+=("$p")
done
# ndctl's test build for `daxdiff suite`: meson and the headers of ndctl's libraries.
for p in meson ninja-build libkmod-dev libudev-dev uuid-dev libjson-c-dev libiniparser-dev \
         libkeyutils-dev libtracefs-dev libtraceevent-dev; do
    dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing host packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
else
    echo "setup: host packages present (qemu-system-x86, kmod, openssh-client, libssl-dev, kernel and ndctl build deps, git-email)"
fi
ci/build.sh
