#!/usr/bin/env bash
# The main job with sensible defaults: set up this machine, then fuzz the default kernel pair
# (debian-6.12, old DAX refcount scheme, against debian-7.3, the reworked one) into
# ./daxdiff-work. Extra arguments go to `daxdiff fuzz` (e.g. --budget 8h --workdir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh
exec ./target/release/daxdiff fuzz "$@"
