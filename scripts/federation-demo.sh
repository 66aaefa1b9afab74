#!/usr/bin/env bash
# Start a three-server besterd federation on loopback (a, b, c on ports 2231-2233), each with the
# Python chat handler relaying room messages to the other two, and users alice/bob/carol
# (passwords alice-pw, bob-pw, carol-pw) on every server.
#
#   scripts/federation-demo.sh           run until Ctrl-C, printing how to talk to it
#   scripts/federation-demo.sh --smoke   start, check that a message crosses from a to c, stop
#
# State (configs, user stores, logs) lives in a temporary directory removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

cargo build --release --quiet --bins
besterd="$repo/target/release/besterd"
bester="$repo/target/release/bester"
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

declare -A port=([a]=2231 [b]=2232 [c]=2233)
secret() { # the secret shared by two servers, the same whichever order they are named in
  local pair; pair=$(printf '%s\n' "$1" "$2" | sort | tr -d '\n')
  echo "demo-secret-$pair-0123456789"
}

for me in a b c; do
  dir="$work/$me"; mkdir -p "$dir"
  peers=(); for other in a b c; do [ "$other" != "$me" ] && peers+=("$other"); done
  {
    echo "[server]"
    echo "name = \"$me\""
    echo "listen = \"127.0.0.1:${port[$me]}\""
    echo "users = \"$dir/users.json\""
    echo "runtime_dir = \"$dir/run\""
    echo "[handlers.chat]"
    echo "command = [\"python3\", \"$repo/handlers/python/chat.py\"]"
    echo "env = { BESTER_CHAT_PEERS = \"$(IFS=,; echo "${peers[*]}")\" }"
    for other in "${peers[@]}"; do
      echo "[peers.$other]"
      echo "secret = \"$(secret "$me" "$other")\""
      # Every server dials the others; when both dial, both keep the same one link.
      echo "address = \"127.0.0.1:${port[$other]}\""
    done
  } > "$dir/besterd.toml"
  for user in alice bob carol; do
    echo "$user-pw" | "$besterd" user --users "$dir/users.json" add "$user" --password-stdin 2>/dev/null
  done
  "$besterd" serve --config "$dir/besterd.toml" --ready-file "$dir/ready" 2>"$dir/besterd.log" &
  pids+=($!)
done

for me in a b c; do
  for _ in $(seq 100); do [ -f "$work/$me/ready" ] && break; sleep 0.1; done
  [ -f "$work/$me/ready" ] || { echo "server $me did not start:"; cat "$work/$me/besterd.log"; exit 1; }
done
# Wait until every server has linked both of its peers.
for me in a b c; do
  for _ in $(seq 100); do
    peers=$("$bester" send "bester://bob:bob-pw@127.0.0.1:${port[$me]}" bester.whoami | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["peers"]))')
    [ "$peers" = 2 ] && break; sleep 0.1
  done
  [ "$peers" = 2 ] || { echo "server $me linked $peers peers:"; cat "$work/$me/besterd.log"; exit 1; }
done
echo "federation up: a=127.0.0.1:${port[a]} b=127.0.0.1:${port[b]} c=127.0.0.1:${port[c]} (logs in $work/*/besterd.log)"

if [ "${1:-}" = "--smoke" ]; then
  # carol listens on c while in room "lobby" there; alice (on a) joins lobby on a and says hello.
  "$bester" listen "bester://carol:carol-pw@127.0.0.1:${port[c]}" > "$work/carol.out" 2>/dev/null &
  listener=$!
  pids+=("$listener")
  sleep 0.3
  "$bester" send "bester://carol:carol-pw@127.0.0.1:${port[c]}" chat '{"action":"join","room":"lobby"}' >/dev/null
  "$bester" send "bester://alice:alice-pw@127.0.0.1:${port[a]}" chat '{"action":"join","room":"lobby"}' >/dev/null
  "$bester" send "bester://alice:alice-pw@127.0.0.1:${port[a]}" chat '{"action":"say","room":"lobby","text":"hello from a"}' >/dev/null
  for _ in $(seq 50); do grep -q "hello from a" "$work/carol.out" && break; sleep 0.1; done
  if grep -q "hello from a" "$work/carol.out"; then
    echo "smoke: carol on c received: $(cat "$work/carol.out")"
    exit 0
  fi
  echo "smoke: carol on c got nothing"; exit 1
fi

cat <<TXT
Try it (three terminals):
  $bester listen bester://carol:carol-pw@127.0.0.1:${port[c]}
  $bester send bester://carol:carol-pw@127.0.0.1:${port[c]} chat '{"action":"join","room":"lobby"}'
  $bester send bester://alice:alice-pw@127.0.0.1:${port[a]} chat '{"action":"join","room":"lobby"}'
  $bester send bester://alice:alice-pw@127.0.0.1:${port[a]} chat '{"action":"say","room":"lobby","text":"hi"}'
Ctrl-C stops all three.
TXT
wait
