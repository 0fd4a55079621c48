#!/usr/bin/env bash
# Instructions per point of the forest's score_and_update, counted by valgrind, which
# gives the same figure on every run where timings on a shared machine vary by 10-20%.
#
#   scripts/instructions.sh FEATURES SHINGLE_SIZE TREES [POINTS]
#   e.g. scripts/instructions.sh 1 8 50      (the bench's shingle 8, 50 trees case)
#
# Runs examples/instructions.rs (the bench's stream, 20,000 warm-up points) with and
# without POINTS scored points (default 20,000) and prints the difference per point,
# with the sum of the scores: a change that keeps every score prints the same sum.
# Needs valgrind (apt-get install valgrind).
set -euo pipefail
[[ $# -ge 3 ]] || { echo "usage: $0 FEATURES SHINGLE_SIZE TREES [POINTS]" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rcfd-bench}"
cargo build --quiet --release --example instructions --manifest-path "$ROOT/Cargo.toml"
bin="$CARGO_TARGET_DIR/release/examples/instructions"
points="${4:-20000}"
count() {
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$bin" "$1" "$2" "$3" 20000 "$4" 2>&1 |
        awk '/I *refs/ { gsub(/,/, "", $NF); print $NF }'
}
with=$(count "$1" "$2" "$3" "$points")
without=$(count "$1" "$2" "$3" 0)
echo "features $1, shingle $2, $3 trees: $(( (with - without) / points )) instructions per point"
"$bin" "$1" "$2" "$3" 20000 "$points"
