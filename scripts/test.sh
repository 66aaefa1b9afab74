#!/usr/bin/env bash
# Run every test of the project: Rust (unit + integration against the real binary and real
# handler processes), the Python and Node example handlers' own tests, formatting and lints.
# Installs nothing; `.ci/run` (or scripts/setup.sh) installs what is needed first.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings

echo "== cargo test"
# Unit and integration tests; benches/load.rs is a load generator run by scripts/bench.sh,
# not a test (clippy above still compiles it).
cargo build --quiet --bins
cargo test --lib --bins --tests

echo "== python handler tests"
python3 -m unittest discover -s handlers/python/tests -t handlers/python

echo "== node handler tests"
node --test handlers/node/test/

echo "== conformance kit: besterd handler-test against every example handler"
keys=$(mktemp)
trap 'rm -f "$keys"' EXIT
echo 'k-conformance alice' >"$keys"
conformance() { # TYPE [FLAGS --] COMMAND...: the example passes every check (else its lines are shown)
  local type=$1 out
  shift
  [[ " $* " == *" -- "* ]] || set -- -- "$@"
  if ! out=$("${CARGO_TARGET_DIR:-target}/debug/besterd" handler-test --type "$type" "$@" 2>/dev/null); then
    printf '%s\n' "$out"
    return 1
  fi
  echo "$type: ${out##*$'\n'}"
}
conformance echo python3 handlers/python/echo.py
conformance chat python3 handlers/python/chat.py
conformance keys --login '{"apiKey":"k-conformance"}' -- python3 handlers/python/auth_keys.py "$keys"
conformance upper node handlers/node/upper.js

echo "== browser test (headless Chromium: the built-in chat page)"
.venv/bin/python tests/browser/test_chat_page.py
# The Debian package: built, installed with dpkg -i, checked, purged (needs root).
if [ "${CI:-}" = true ] || [ "$(id -u)" -eq 0 ]; then
  echo "== debian package"
  bash scripts/package-test.sh
fi
