#!/usr/bin/env bash
# Install what besterd's tests and example handlers need on a fresh Debian machine:
# python3 (Python handlers), nodejs (Node handler), golang-go and make (the Go and C libraries in
# clients/), promtool (Debian's prometheus package, for the metrics lint), the Rust components
# fmt/clippy, TypeScript (npm, into target/typescript: the Node package's declarations), and a Python
# virtual environment at .venv with the test-only PyPI packages of tests/requirements.txt.
# Safe to run again; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi

# Debian packages: the command that shows each is there, and the package that brings it.
need=()
want() { command -v "$1" >/dev/null || need+=("$2"); }
want python3 python3
want node nodejs
want npm npm     # TypeScript for the Node package's declarations (below)
want chromium chromium
want chromedriver chromium-driver
want systemd-socket-activate systemd
want systemd-analyze systemd
want perl perl   # tests/handlers/listen.pl (JSON::PP and IO::Socket::UNIX are core modules)
want jq jq       # handlers/jq/upper.jq, run by `bester handle`
want go golang-go  # clients/go (standard library only: no module downloads)
want make make     # clients/c
want c++ g++       # libFuzzer, built by the fuzz target's check in scripts/test.sh
want openssl openssl            # tests/closing.rs: a TLS client that sends an IP address as SNI
want promtool prometheus        # `promtool check metrics` on /metrics (tests/closing.rs)
if [ ${#need[@]} -gt 0 ]; then
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
  # Only promtool is wanted from the prometheus package: not a Prometheus server running.
  if [[ " ${need[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus.service || true
  fi
fi
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

# TypeScript, to compile the Node package's declarations (scripts/test.sh), from the npm registry
# into target/typescript: never into the repository or the system. Pinned: @types/node for the
# declarations' node: imports, of the Node major the package targets.
tsc_dir=target/typescript
if ! grep -qs '"version": "5.9.3"' "$tsc_dir/node_modules/typescript/package.json" ||
  [ ! -d "$tsc_dir/node_modules/@types/node" ]; then
  mkdir -p "$tsc_dir"
  npm install --prefix "$tsc_dir" --no-audit --no-fund --no-package-lock --silent \
    typescript@5.9.3 @types/node@20.19.43
fi

# Test-only Python packages live in .venv, never in the system Python.
if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv 2>/dev/null; then
    rm -rf .venv
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q python3-venv
    python3 -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
