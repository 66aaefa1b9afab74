#!/usr/bin/env bash
# Fuzz the frame decoder and message parsers (fuzz/ target `frames`) for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]      default 60
#
# Installs what is missing (a C++ compiler for libFuzzer via apt, cargo-fuzz via cargo), builds
# on the stable toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only flags), replays
# fuzz/regressions/frames and fuzz/seeds/frames, then fuzzes with new inputs kept in
# fuzz/corpus/frames (gitignored). Prints executions, exec/s and coverage, lists crash artifacts
# from fuzz/artifacts/frames, and exits non-zero on a crash. No prompts; safe to run unattended.
# Environment: FUZZ_SANITIZER (address | none; default address), CARGO_TARGET_DIR (honoured).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [SECONDS]" >&2
  exit 2
fi
sanitizer="${FUZZ_SANITIZER:-address}"
target=frames

if ! command -v c++ >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q g++
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
flags=(--sanitizer "$sanitizer" --debug-assertions)
corpus="fuzz/corpus/$target"
artifacts="fuzz/artifacts/$target"
mkdir -p "$corpus" "$artifacts" "fuzz/regressions/$target"
log="$(mktemp)"
stamp="$(mktemp)"
trap 'rm -f "$log" "$stamp"' EXIT

echo "== build fuzz target $target (sanitizer $sanitizer)"
cargo fuzz build "${flags[@]}" "$target"

echo "== fuzz $target for ${seconds}s"
set +e
cargo fuzz run "${flags[@]}" "$target" "$corpus" "fuzz/seeds/$target" "fuzz/regressions/$target" -- \
  -max_total_time="$seconds" -timeout=10 -max_len=16384 -dict=fuzz/frames.dict \
  -print_final_stats=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# libFuzzer's own figures: the last status line and the final stats.
# (A crash stops it before the final stats, so any of these may be missing.)
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 || true)
echo "== summary"
echo "executions: ${execs:-?}  exec/s: ${rate:-?}  ${cov:-coverage: ?}"

new=$(find "$artifacts" -type f -newer "$stamp" | sort)
if [ -n "$new" ]; then
  echo "crash artifacts (minimize: RUSTC_BOOTSTRAP=1 cargo fuzz tmin ${flags[*]} $target FILE;"
  echo "then keep the result, named for what it found, in fuzz/regressions/$target):"
  for file in $new; do
    echo "  $file"
    od -A d -t x1z -v "$file" | head -20
  done
fi
if [ "$status" -ne 0 ] || [ -n "$new" ]; then
  echo "FAILED: the fuzzer stopped with status $status" >&2
  exit 1
fi
echo "no crash"
