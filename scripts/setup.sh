#!/usr/bin/env bash
# Install what besterd's tests and example handlers need on a fresh Debian machine:
# python3 (Python handlers), nodejs (Node handler), the Rust components fmt/clippy, and a Python
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
want chromium chromium
want chromedriver chromium-driver
want systemd-socket-activate systemd
want systemd-analyze systemd
want perl perl   # tests/handlers/listen.pl (JSON::PP and IO::Socket::UNIX are core modules)
want jq jq       # handlers/jq/upper.jq, run by `bester handle`
if [ ${#need[@]} -gt 0 ]; then
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}"
fi
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
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
