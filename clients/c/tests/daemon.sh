#!/bin/sh
# Start the real besterd (BESTERD_BIN) on an ephemeral loopback port with the C echo example and
# the C test handler as configured handlers, then run the client tests and the example client
# against it. Usage: daemon.sh BUILD_DIR (holding echo, test_handler, test_daemon).
set -eu
build=$(cd "$1" && pwd)
bin=${BESTERD_BIN:?BESTERD_BIN: the besterd binary (cargo build --bin besterd)}
[ -x "$bin" ] || { echo "no besterd binary at $bin: run cargo build --bin besterd" >&2; exit 1; }
dir=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for u in alice bob; do
  printf '%s' "$u-pw" | "$bin" user --users "$dir/users.json" add "$u" --password-stdin 2>/dev/null
done
cat > "$dir/besterd.toml" <<CONF
[server]
name = "test"
listen = "127.0.0.1:0"
users = "$dir/users.json"
runtime_dir = "$dir/run"
[handlers.echo]
command = ["$build/echo"]
[handlers.ctest]
command = ["$build/test_handler"]
[handlers.cmail]
command = ["$build/test_handler"]
offline = "store"
[auth]
handler = "ctest"
CONF
"$bin" serve --config "$dir/besterd.toml" --ready-file "$dir/ready" >"$dir/log" 2>&1 &
pid=$!
# Poll for the ready file (up to 20 s).
i=0
until [ -s "$dir/ready" ]; do
  i=$((i + 1))
  if [ $i -gt 400 ] || ! kill -0 "$pid" 2>/dev/null; then cat "$dir/log" >&2; echo "besterd not ready" >&2; exit 1; fi
  sleep 0.05
done
addr=$(head -n 1 "$dir/ready")
host=${addr%:*}
port=${addr##*:}
status=0
"$build/test_daemon" "$host" "$port" || status=1
out=$(examples/client "$host" "$port" alice alice-pw 2>&1 || true)
if [ "$out" != '{"hello":"world"}' ]; then echo "example client printed: $out" >&2; status=1; fi
# No handler crashed or was restarted meanwhile (a sanitizer report would end it), and the
# daemon stops cleanly.
if grep -E 'handler=(echo|ctest|cmail)#[0-9]+ exited|AddressSanitizer|runtime error' "$dir/log" >&2; then status=1; fi
kill -TERM "$pid"
wait "$pid" || { echo "besterd exited with $? on SIGTERM" >&2; status=1; }
pid=
cp "$dir/log" "$build/daemon.log"
[ $status -eq 0 ] && echo "daemon tests: ok"
exit $status
