#!/usr/bin/env bash
# Run every test of the project: Rust (unit + integration against the real binary and real
# handler processes), the Python and Node example handlers' own tests, formatting and lints.
# Installs nothing; `.ci/run` (or scripts/setup.sh) installs what is needed first.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== fuzz target compiles"
# fuzz/ is outside the workspace (it needs libFuzzer): a check here keeps it in step with the
# parsers it drives; scripts/fuzz.sh runs it.
cargo check --quiet --manifest-path fuzz/Cargo.toml

echo "== cargo test"
# Unit and integration tests; benches/load.rs is a load generator run by scripts/bench.sh,
# not a test (clippy above still compiles it).
cargo build --quiet --bins
cargo test --lib --bins --tests
cargo test --quiet -p bester-client

echo "== python handler tests"
python3 -m unittest discover -s handlers/python/tests -t handlers/python

echo "== python package (clients/python) against the real daemon"
.venv/bin/python -m pip install --quiet --no-index --force-reinstall ./clients/python
(cd clients/python/tests && ../../../.venv/bin/python -m unittest -q)

echo "== node handler tests"
node --test handlers/node/test/

echo "== node package tests (clients/node, against target/debug/besterd)"
node --test clients/node/test/

echo "== typescript declarations (clients/node): tsc --noEmit --strict on test/types/check.ts"
tsc_modules=target/typescript/node_modules # installed by scripts/setup.sh
[ -x "$tsc_modules/.bin/tsc" ] || { echo "no $tsc_modules/.bin/tsc: run scripts/setup.sh" >&2; exit 1; }
"$tsc_modules/.bin/tsc" --noEmit --strict --target es2022 --module nodenext --moduleResolution nodenext \
  --typeRoots "$tsc_modules/@types" --types node clients/node/test/types/check.ts

echo "== go library (clients/go): vet, gofmt, tests against the daemon built above"
# Standard library only: no module proxy; a build cache under target/ when there is no $HOME.
(
  cd clients/go
  export GOPROXY=off
  if [ -z "${HOME:-}" ] && [ -z "${GOCACHE:-}" ]; then export GOCACHE="$PWD/../../target/go-cache"; fi
  go vet ./... && test -z "$(gofmt -l .)" && go test -count=1 ./...
)

echo "== c library (clients/c): ASan/UBSan unit and fuzz tests, tests against the daemon"
make -C clients/c --no-print-directory -s test

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
# chat.py keeps its rooms in the broker's groups (its join answers with the room's group), not the
# in-memory rooms of the "chat" vectors: checked with its own probe.
conformance rooms --request '{"action":"join","room":"lobby"}' --expect '{"room":"lobby","group":"chat:lobby"}' -- python3 handlers/python/chat.py
conformance keys --login '{"apiKey":"k-conformance"}' -- python3 handlers/python/auth_keys.py "$keys"
conformance upper node handlers/node/upper.js
# The libraries' echo examples, and programs made handlers by `bester handle`.
cargo build --quiet -p bester-client --examples
conformance echo target/debug/examples/echo_handler
(
  cd clients/go
  export GOPROXY=off
  if [ -z "${HOME:-}" ] && [ -z "${GOCACHE:-}" ]; then export GOCACHE="$PWD/../../target/go-cache"; fi
  go build -o ../../target/go-echo ./examples/echo
)
conformance echo target/go-echo
make -C clients/c --no-print-directory -s examples/echo
conformance echo clients/c/examples/echo
conformance echo .venv/bin/python clients/python/examples/echo_handler.py
conformance echo node clients/node/examples/echo_handler.js
conformance jq-upper -- target/debug/bester handle jq-upper -- jq -c --unbuffered -f handlers/jq/upper.jq
conformance count -- target/debug/bester handle count -- bash handlers/shell/count.sh

echo "== browser test (headless Chromium: the built-in chat page)"
.venv/bin/python tests/browser/test_chat_page.py
# The Debian package: built, installed with dpkg -i, checked, purged (needs root).
if [ "${CI:-}" = true ] || [ "$(id -u)" -eq 0 ]; then
  echo "== debian package"
  bash scripts/package-test.sh
fi
