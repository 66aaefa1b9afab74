#!/usr/bin/env bash
# Measure besterd with the load generator in benches/load.rs (release build, real Python handlers,
# loopback only, bounded: a few minutes in all). Scenarios: rtt throughput misbehave idle slow
# federation compat (default: all). Prints a table and a final JSON line; compare medians and ratios
# between runs on the same machine rather than absolute numbers on a shared one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
cargo bench --bench load -- "$@"
