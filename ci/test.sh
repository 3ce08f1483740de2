#!/usr/bin/env bash
# The test command: installs what is missing (ci/setup.sh), builds, runs the unit tests, then
# the integration tests that boot real Debian kernels under QEMU. DAXDIFF_HEAVY=1 adds the
# long runs (fuzz campaigns, full suites) that CI leaves out.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh
echo "test: unit tests"
cargo test --release --workspace
echo "test: integration tests (real kernels under QEMU; first run fetches kernels and packages)"
cargo test --release -p daxdiff --test vm_boot -- --ignored --test-threads=1
for t in harness/daxdiff/tests/*.rs; do
    name=$(basename "$t" .rs)
    [ "$name" = vm_boot ] && continue
    cargo test --release -p daxdiff --test "$name" -- --ignored --test-threads=1
done
