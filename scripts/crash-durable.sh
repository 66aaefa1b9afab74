#!/usr/bin/env bash
# Crash test of the delivery store: kill -9 the daemon at random moments while pushes to an
# offline user are being stored, restart it, and check that every push the sender saw reported
# `stored` is delivered exactly once to a client that acks and at least once (again, with the same
# ids) to a client that reads them and crashes before acking, and that nothing else appears
# (tests/durable.rs: kill_9_while_storing_loses_nothing_reported_stored, with an fsync per commit,
# and kill_9_while_storing_without_fsync_loses_nothing_reported_stored, with none and groups
# large enough to go in two commits).
#
#   scripts/crash-durable.sh [KILLS]      # default 200; BESTER_CRASH_SEED=N repeats a run
set -euo pipefail
cd "$(dirname "$0")/.."
export BESTER_CRASH_KILLS="${1:-200}"
exec cargo test --test durable -- kill_9_while_storing_ --nocapture --test-threads 1
