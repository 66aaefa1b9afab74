#!/usr/bin/env bash
# Build the Debian package with cargo-deb, install it with dpkg -i, and check the installed
# files: the units pass `systemd-analyze verify`, `besterd check-config` accepts the shipped
# /etc/besterd/besterd.toml, and the installed daemon, run as the besterd user the way
# besterd.service runs it, starts from that file and answers a round trip through the shipped
# echo handler. The package is purged afterwards, whatever happened.
#
# Needs root (dpkg). Run by scripts/test.sh when CI=true or when run as root. Refuses to touch a
# machine where a besterd package is already installed. Installs cargo-deb if it is missing
# (`cargo install cargo-deb --locked`, about 2.5 minutes of build).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "package-test: needs root (dpkg -i); skipped" >&2
  exit 0
fi
if dpkg-query -W -f='${Status}' besterd 2>/dev/null | grep -q "install ok installed"; then
  echo "package-test: a besterd package is already installed here; not touching it" >&2
  exit 1
fi
for tool in systemd-analyze dpkg setpriv; do
  command -v "$tool" >/dev/null || { echo "package-test: $tool is missing (scripts/setup.sh)" >&2; exit 1; }
done
if ! cargo deb --version >/dev/null 2>&1; then
  echo "== installing cargo-deb"
  cargo install cargo-deb --locked --quiet
fi

echo "== cargo deb"
deb=$(cargo deb --quiet 2>/dev/null | tail -n 1)
[ -f "$deb" ] || { echo "package-test: cargo deb made no package" >&2; exit 1; }

work=$(mktemp -d)
chmod 0711 "$work" # the besterd user must reach its runtime directory inside
daemon=""
cleanup() {
  if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
    kill -KILL "$daemon" 2>/dev/null || true
  fi
  dpkg --purge besterd >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "package-test: $*" >&2
  [ -f "$work/besterd.log" ] && sed 's/^/  | /' "$work/besterd.log" >&2
  exit 1
}

echo "== dpkg -i $(basename "$deb")"
dpkg -i "$deb" >/dev/null

echo "== installed files"
for f in /usr/bin/besterd /usr/bin/bester /lib/systemd/system/besterd.service \
  /lib/systemd/system/besterd.socket /usr/lib/sysusers.d/besterd.conf \
  /usr/lib/tmpfiles.d/besterd.conf /etc/besterd/besterd.toml \
  /usr/share/besterd/handlers/python/echo.py /usr/share/besterd/handlers/python/besterlib.py \
  /usr/share/besterd/handlers/python/auth_keys.py \
  /usr/share/besterd/handlers/node/upper.js /usr/share/doc/besterd/PROTOCOL.md \
  /usr/share/doc/besterd/SECURITY.md; do
  [ -e "$f" ] || fail "$f is not installed"
done
grep -qx /etc/besterd/besterd.toml /var/lib/dpkg/info/besterd.conffiles ||
  fail "/etc/besterd/besterd.toml is not a conffile"
getent passwd besterd >/dev/null || fail "the besterd user was not created"
[ "$(stat -c '%U %a' /var/lib/besterd)" = "besterd 700" ] ||
  fail "/var/lib/besterd is $(stat -c '%U %a' /var/lib/besterd), not besterd 700"
[ "$(stat -c '%a' /etc/besterd/peers)" = 700 ] || fail "/etc/besterd/peers is not 0700"

echo "== systemd-analyze verify"
systemd-analyze verify /lib/systemd/system/besterd.service /lib/systemd/system/besterd.socket ||
  fail "the units do not verify"

echo "== besterd check-config"
besterd check-config --config /etc/besterd/besterd.toml

echo "== the installed daemon, from the shipped configuration"
# As besterd.service runs it: user besterd, $RUNTIME_DIRECTORY for the handler sockets. Only the
# port differs (0: any free one), so that a broker on 2222 elsewhere on the machine is no matter.
besterd user --users /var/lib/besterd/users.json add pkgtest --password-stdin <<<"pkgtest-pw" >/dev/null
[ "$(stat -c '%U %a' /var/lib/besterd/users.json)" = "besterd 600" ] ||
  fail "users.json is $(stat -c '%U %a' /var/lib/besterd/users.json), not besterd 600"
install -d -m 0700 -o besterd -g besterd "$work/run"
# setpriv execs (no intermediate process), so the signal below reaches besterd itself.
setpriv --reuid=besterd --regid=besterd --init-groups env RUNTIME_DIRECTORY="$work/run" \
  besterd serve --config /etc/besterd/besterd.toml --listen 127.0.0.1:0 \
  --ready-file "$work/run/ready" >"$work/besterd.log" 2>&1 &
daemon=$!
for _ in $(seq 1 400); do
  [ -s "$work/run/ready" ] && break
  kill -0 "$daemon" 2>/dev/null || fail "besterd exited before it was ready"
  sleep 0.05
done
[ -s "$work/run/ready" ] || fail "besterd was not ready within 20 s"
addr=$(cat "$work/run/ready")
reply=$(BESTER_PASSWORD=pkgtest-pw timeout 20 bester send "bester://pkgtest@$addr" echo '{"from":"package"}') ||
  fail "bester send failed: $reply"
echo "$reply"
case "$reply" in
  *'"status":"ok"'*'"data":{"from":"package"}'*) ;;
  *) fail "unexpected reply: $reply" ;;
esac
kill -TERM "$daemon"
status=0
wait "$daemon" || status=$?
daemon=""
[ "$status" -eq 0 ] || fail "besterd exited with $status on SIGTERM"
grep -q "stopped" "$work/besterd.log" || fail "no 'stopped' in the log"
echo "== package test passed"
