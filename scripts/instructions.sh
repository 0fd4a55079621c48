#!/usr/bin/env bash
# Instructions per point of the forest's score_and_update, counted by valgrind, which
# gives the same figure on every run where timings on a shared machine vary by 10-20%.
#
#   scripts/instructions.sh FEATURES SHINGLE_SIZE TREES [POINTS]
#   e.g. scripts/instructions.sh 1 8 50      (the bench's shingle 8, 50 trees case)
#
# Runs examples/instructions.rs (the bench's stream, 20,000 warm-up points) with and
# without POINTS scored points (default 20,000) and prints the difference per point,
# instructions and simulated mispredicted branches (fewer instructions with more
# mispredictions can be slower: check a change with the bench too), with the sum of the
# scores: a change that keeps every score prints the same sum.
# Needs valgrind (apt-get install valgrind).
set -euo pipefail
[[ $# -ge 3 ]] || { echo "usage: $0 FEATURES SHINGLE_SIZE TREES [POINTS]" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rcfd-bench}"
cargo build --quiet --release --example instructions --manifest-path "$ROOT/Cargo.toml"
bin="$CARGO_TARGET_DIR/release/examples/instructions"
points="${4:-20000}"
# Prints "instructions mispredictions" (the latter from valgrind's branch simulator: not
# the processor's own predictor, but a change that adds branches on data shows there).
count() {
    valgrind --tool=cachegrind --cache-sim=no --branch-sim=yes --cachegrind-out-file=/dev/null \
        "$bin" "$1" "$2" "$3" 20000 "$4" 2>&1 |
        awk '/I *refs/ { gsub(/,/, "", $NF); i = $NF } /Mispredicts:/ { gsub(/,/, "", $3); m = $3 } END { print i, m }'
}
read -r with_i with_m <<<"$(count "$1" "$2" "$3" "$points")"
read -r without_i without_m <<<"$(count "$1" "$2" "$3" 0)"
echo "features $1, shingle $2, $3 trees: $(( (with_i - without_i) / points )) instructions and" \
    "$(( (with_m - without_m) / points )) simulated mispredicted branches per point"
"$bin" "$1" "$2" "$3" 20000 "$points"
