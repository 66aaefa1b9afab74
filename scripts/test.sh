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

echo "== node package tests (clients/node, against target/debug/besterd)"
node --test clients/node/test/

echo "== browser test (headless Chromium: the built-in chat page)"
.venv/bin/python tests/browser/test_chat_page.py
# The Debian package: built, installed with dpkg -i, checked, purged (needs root).
if [ "${CI:-}" = true ] || [ "$(id -u)" -eq 0 ]; then
  echo "== debian package"
  bash scripts/package-test.sh
fi
