#!/bin/sh
# The C library's line of the figures: round trips/s at window 1 and 64 (medians of
# BENCH_RUNS=3 runs of BENCH_SECS=3 s), client and handler both written with libbester (the
# echo example), through a fresh besterd (BESTERD_BIN, a release build) each run.
# Usage: bench.sh BUILD_DIR (holding echo and bench, built with -O2).
set -eu
build=$(cd "$1" && pwd)
bin=${BESTERD_BIN:?BESTERD_BIN: the besterd binary (cargo build --release --bin besterd)}
runs=${BENCH_RUNS:-3}
secs=${BENCH_SECS:-3}
dir=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
printf 'bench-pw' | "$bin" user --users "$dir/users.json" add bench --password-stdin 2>/dev/null
cat > "$dir/besterd.toml" <<CONF
[server]
name = "bench"
listen = "127.0.0.1:0"
users = "$dir/users.json"
runtime_dir = "$dir/run"
[handlers.echo]
command = ["$build/echo"]
CONF
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { sed -n "s/.*\"$1\":\([-0-9.]*\).*/\1/p"; }
for window in 1 64; do
  : > "$dir/results"
  run=0
  while [ $run -lt "$runs" ]; do
    run=$((run + 1))
    rm -f "$dir/ready"
    RUST_LOG=info "$bin" serve --config "$dir/besterd.toml" --ready-file "$dir/ready" >"$dir/log" 2>&1 &
    pid=$!
    i=0
    until [ -s "$dir/ready" ]; do
      i=$((i + 1))
      if [ $i -gt 400 ] || ! kill -0 "$pid" 2>/dev/null; then cat "$dir/log" >&2; exit 1; fi
      sleep 0.05
    done
    addr=$(head -n 1 "$dir/ready")
    hpid=$(sed -n 's/.*handler=echo#0 started: pid \([0-9]*\).*/\1/p' "$dir/log" | head -n 1)
    "$build/bench" "${addr%:*}" "${addr##*:}" "$window" "$secs" "$hpid" >> "$dir/results"
    kill -TERM "$pid"; wait "$pid" || true; pid=
  done
  rate=$(field round_trips_per_s < "$dir/results" | median)
  ccpu=$(field client_cpu_us_per_request < "$dir/results" | median)
  hcpu=$(field handler_cpu_us_per_request < "$dir/results" | median)
  printf '%-28s window %-3s %10s round trips/s   client %6s µs/req   handler %6s µs/req\n' \
    "C library (libbester)" "$window" "$rate" "$ccpu" "$hcpu"
  printf '{"bench":"clib","window":%s,"round_trips_per_s":%s,"client_cpu_us_per_request":%s,"handler_cpu_us_per_request":%s,"runs":%s}\n' \
    "$window" "$rate" "$ccpu" "$hcpu" "$runs"
done
