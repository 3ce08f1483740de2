#!/usr/bin/env bash
# The test command: installs what is missing (ci/setup.sh), builds, runs the unit tests, then
# the integration tests that boot real Debian kernels under QEMU. DAXDIFF_HEAVY=1 adds the
# long runs (fuzz campaigns, full suites) that CI leaves out.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh
# The declared minimum Rust (rust-version) is checked by building with exactly that version.
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
have=$(rustc --version | awk '{print $2}')
if [ "$have" = "$msrv" ] || [ "${have%.0}" = "$msrv" ]; then
    echo "test: building with Rust $have, the declared minimum (rust-version = $msrv)"
elif rustup run "$msrv" rustc --version >/dev/null 2>&1; then
    echo "test: checking the workspace with Rust $msrv, the declared minimum (the build uses $have)"
    cargo "+$msrv" check --release --workspace --all-targets --locked
else
    echo "test: Rust $msrv, the declared minimum, is not installed here (rustup toolchain install $msrv); the build uses $have"
fi
echo "test: unit tests (and the parser fuzz targets of harness/daxdiff/tests/parsers_fuzz.rs:"
echo "      a few seconds each, 120 s with DAXDIFF_HEAVY=1)"
cargo test --release --workspace
echo "test: integration tests (real kernels under QEMU; first run fetches kernels and packages)"
cargo test --release -p daxdiff --test vm_boot -- --ignored --test-threads=1
for t in harness/daxdiff/tests/*.rs; do
    name=$(basename "$t" .rs)
    # vm_boot ran first; kasan needs a kernel built in the heavy runs below; parsers_fuzz
    # boots nothing and ran with the unit tests.
    [ "$name" = vm_boot ] || [ "$name" = kasan ] || [ "$name" = parsers_fuzz ] && continue
    cargo test --release -p daxdiff --test "$name" -- --ignored --test-threads=1
done
if [ "${DAXDIFF_HEAVY:-0}" = 1 ]; then
    echo "test: heavy runs (self-diff of debian-6.12, 300 programs: must find nothing)"
    rm -rf target/heavy && mkdir -p target/heavy
    ./target/release/daxdiff fuzz --a debian-6.12 --b debian-6.12 --no-seeds --execs 300 --budget 60m \
        --seed 11 --workdir target/heavy/self-diff || [ $? -eq 1 ]
    ./target/release/daxdiff show target/heavy/self-diff || true
    # Kernel reports may turn up (they are the kernel's); a divergence of a kernel with itself may not.
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["divergences"]; print("self-diff divergences:", d); sys.exit(d != 0)' \
        target/heavy/self-diff/stats.json
    for v in 6.12 7.3; do
        echo "test: heavy runs (a KASAN+KCOV kernel from Debian's linux-source-$v)"
        ./target/release/daxdiff kernel build --source "linux-source-$v" --name "$v-kasan"
        DAXDIFF_KASAN_KERNEL="$v-kasan" cargo test --release -p daxdiff --test kasan -- --ignored --test-threads=1
    done
    echo "test: heavy runs (debian-6.12 vs debian-7.3, 30 minutes)"
    ./target/release/daxdiff fuzz --budget 30m --workdir target/heavy/pair || [ $? -eq 1 ]
    ./target/release/daxdiff show target/heavy/pair || true
fi
