#!/usr/bin/env bash
# What the figures cost: `cargo bench --bench load -- metrics` against a build of REF (default
# main, a tree without the figures) as the baseline. Builds REF from `git archive` in a temporary
# directory (sharing this tree's target directory for the dependencies), then runs three
# interleaved rounds of pipelined throughput: baseline, this build with the monitoring port off,
# this build with it on and scraped every 100 ms. Prints the medians and their ratios.
#   scripts/bench-metrics.sh [REF] [metrics] [instructions]
# `instructions` counts the broker's instructions per request with valgrind instead (steady on a
# busy machine; needs valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
ref="${1:-main}"
shift || true
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(metrics)
bash scripts/setup.sh >/dev/null
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git archive "$ref" | tar -x -C "$work"
target="$(pwd)/target"
CARGO_TARGET_DIR="$target" cargo build --quiet --release --bin besterd --manifest-path "$work/Cargo.toml"
cp "$target/release/besterd" "$work/besterd-baseline"
cargo build --quiet --release --bin besterd
BESTERD_BASELINE_BIN="$work/besterd-baseline" cargo bench --bench load -- "${scenarios[@]}"
