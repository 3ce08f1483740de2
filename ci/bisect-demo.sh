#!/bin/sh
# Git-mode bisection on a real kernel tree (corpora/bisect-demo/README.md says what it shows).
# Usage: ci/bisect-demo.sh [TREE] [OUT]
#   TREE: an unpacked Linux 6.12 tree to copy (default: Debian's linux-source-6.12, fetched
#         and unpacked into the daxdiff cache by `daxdiff kernel build --config-only`)
#   OUT:  where the git tree and the bisection state go (default: ./daxdiff-bisect-demo)
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
daxdiff=${DAXDIFF:-$here/target/release/daxdiff}
[ -x "$daxdiff" ] || { echo "bisect-demo: build daxdiff first (ci/build.sh)" >&2; exit 2; }
out=${2:-./daxdiff-bisect-demo}
tree=${1:-}
if [ -z "$tree" ]; then
	echo "bisect-demo: fetching linux-source-6.12 (once; the cache keeps it)" >&2
	"$daxdiff" kernel build --source linux-source-6.12 --name bisect-demo-config \
		--config-only >/dev/null
	cache=${DAXDIFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/daxdiff}
	tree=$(ls -d "$cache"/sources/linux-source-6.12-*/linux-source-6.12 | tail -n 1)
fi
[ -f "$tree/Makefile" ] || { echo "bisect-demo: $tree is not a kernel tree" >&2; exit 2; }
mkdir -p "$out"
repo="$out/linux"
if [ ! -d "$repo/.git" ]; then
	echo "bisect-demo: importing $tree into git at $repo (a few minutes)" >&2
	rm -rf "$repo"
	cp -a "$tree" "$repo"
	git -C "$repo" init -q
	git -C "$repo" add -A -f
	git -C "$repo" -c user.name=import -c user.email=import@daxdiff.invalid \
		commit -q -m "$(basename "$tree"), imported"
	git -C "$repo" tag base
	git -C "$repo" -c user.name=import -c user.email=import@daxdiff.invalid \
		am -q "$here"/corpora/bisect-demo/*.patch
fi
exec "$daxdiff" bisect --git "$repo" --good base --bad HEAD \
	--prog "$here/corpora/uring_fixed_devdax.prog" --bad-if 'call 5 fails' \
	--fragment base --fragment dax --runs 3 --out "$out/bisect"
