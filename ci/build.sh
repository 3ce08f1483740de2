#!/usr/bin/env bash
# Builds the host controller and the static guest executor (the guest has no host libraries).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "build: daxdiff (host controller)"
cargo build --release -p daxdiff
echo "build: daxdiff-exec (static guest executor)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p daxdiff-exec --target x86_64-unknown-linux-gnu
