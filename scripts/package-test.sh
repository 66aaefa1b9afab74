#!/usr/bin/env bash
# Build the Debian package with cargo-deb (twice: this version and VERSION+test1, for the
# upgrade), check it with lintian (no error or warning left but those overridden, with a reason,
# in scripts/debian/besterd.lintian-overrides) and the unit with `systemd-analyze security`
# (exposure at most 1.2), install it with dpkg -i, and check the installed files: the units pass
# `systemd-analyze verify`, `besterd check-config` accepts the shipped /etc/besterd/besterd.toml,
# and the installed daemon, run as the besterd user the way besterd.service runs it, starts from
# that file and answers a round trip through the shipped echo handler. Then, where systemd runs,
# the service as installed: started, answering through the echo handler under the unit's
# hardening, restarted by `dpkg -i` of the second package (the new binary serves); where it does
# not, the daemon started from /usr/bin/besterd is upgraded in place after `dpkg -i` of the second
# package with `besterd ctl upgrade` (the new file serves on the same port). After purge
# no unit symlink, user store or state is left. The package is purged afterwards, whatever
# happened.
#
# Needs root (dpkg). Run by scripts/test.sh when CI=true or when run as root. Refuses to touch a
# machine where a besterd package is already installed. Installs cargo-deb if it is missing
# (`cargo install cargo-deb --locked`, about 2.5 minutes of build) and lintian.
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
if ! command -v lintian >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q lintian
fi
for tool in systemd-analyze dpkg setpriv lintian deb-systemd-helper gzip; do
  command -v "$tool" >/dev/null || { echo "package-test: $tool is missing (scripts/setup.sh)" >&2; exit 1; }
done
if ! cargo deb --version >/dev/null 2>&1; then
  echo "== installing cargo-deb"
  cargo install cargo-deb --locked --quiet
fi

echo "== cargo build --release, man pages"
cargo build --release --bins --quiet
rm -rf target/man
mkdir -p target/man
target/release/besterd __man target/man >/dev/null
target/release/bester __man target/man >/dev/null
gzip -9n target/man/*.1

echo "== cargo deb (twice: the upgrade goes from the first to the second)"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# cargo deb empties target/debian each time: each package goes into a directory of its own.
deb=$(cargo deb --no-build --quiet --output target/debian-first/ 2>&1 | tail -n 1)
deb2=$(cargo deb --no-build --quiet --deb-version "$version+test1" --output target/debian-second/ 2>&1 | tail -n 1)
[ -f "$deb" ] && [ -f "$deb2" ] || { echo "package-test: cargo deb made no package" >&2; exit 1; }

echo "== lintian $(basename "$deb")"
lintian --fail-on error,warning "$deb"

echo "== systemd-analyze security (exposure at most 1.2)"
systemd-analyze security --offline=yes --threshold=12 scripts/systemd/besterd.service |
  tail -n 1

work=$(mktemp -d)
chmod 0711 "$work" # the besterd user must reach its runtime directory inside
daemon=""
upgraded=""
cleanup() {
  if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
    kill -KILL "$daemon" 2>/dev/null || true
  fi
  if [ -n "$upgraded" ] && kill -0 "$upgraded" 2>/dev/null; then
    kill -KILL "$upgraded" 2>/dev/null || true
  fi
  rm -rf /etc/systemd/system/besterd.service.d
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
  /usr/share/besterd/handlers/python/echo.py /usr/share/besterd/handlers/python/bester/__init__.py \
  /usr/share/besterd/handlers/python/bester/handler.py /usr/share/besterd/handlers/python/auth_keys.py \
  /usr/share/besterd/handlers/node/upper.js /usr/share/besterd/handlers/node/package.json \
  /usr/share/besterd/handlers/node/node_modules/bester-client/index.js \
  /usr/share/besterd/handlers/node/node_modules/bester-client/lib/handler.js \
  /usr/share/doc/besterd/PROTOCOL.md \
  /usr/share/doc/besterd/SECURITY.md /usr/share/man/man1/besterd.1.gz \
  /usr/share/man/man1/besterd-serve.1.gz /usr/share/man/man1/bester.1.gz; do
  [ -e "$f" ] || fail "$f is not installed"
done
# The examples load the packages installed beside them: past the imports, they stop only for want
# of a broker to connect to.
for example in "python3 -S /usr/share/besterd/handlers/python/chat.py" \
  "python3 -S /usr/share/besterd/handlers/python/auth_keys.py /dev/null"; do
  out=$(BESTER_SOCKET=/nonexistent/besterd.sock $example 2>&1) && fail "$example ran without a broker"
  case "$out" in *"cannot connect to /nonexistent/besterd.sock"*) ;; *) fail "$example: $out" ;; esac
done
if command -v node >/dev/null; then
  out=$(BESTER_SOCKET=/nonexistent/besterd.sock node /usr/share/besterd/handlers/node/upper.js 2>&1) &&
    fail "upper.js ran without a broker"
  case "$out" in *"cannot connect to /nonexistent/besterd.sock"*) ;; *) fail "upper.js: $out" ;; esac
fi
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
start_daemon() {
  rm -f "$work/run/ready"
  setpriv --reuid=besterd --regid=besterd --init-groups env RUNTIME_DIRECTORY="$work/run" \
    /usr/bin/besterd serve --config /etc/besterd/besterd.toml --listen 127.0.0.1:0 \
    --ready-file "$work/run/ready" >>"$work/besterd.log" 2>&1 &
  daemon=$!
  for _ in $(seq 1 400); do
    [ -s "$work/run/ready" ] && break
    kill -0 "$daemon" 2>/dev/null || fail "besterd exited before it was ready"
    sleep 0.05
  done
  [ -s "$work/run/ready" ] || fail "besterd was not ready within 20 s"
  addr=$(cat "$work/run/ready")
}
start_daemon
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

if [ -d /run/systemd/system ]; then
echo "== besterd.service as installed (under systemd, with the unit's hardening)"
# Only the port differs from the shipped unit (a free one): a drop-in, removed before purge.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p /etc/systemd/system/besterd.service.d
printf '[Service]\nExecStart=\nExecStart=/usr/bin/besterd serve --config /etc/besterd/besterd.toml --listen 127.0.0.1:%s\n' \
  "$port" >/etc/systemd/system/besterd.service.d/port.conf
systemctl daemon-reload
systemctl start besterd.service ||
  { journalctl -u besterd --no-pager >&2 || true; fail "besterd.service did not start"; }
send() {
  BESTER_PASSWORD=pkgtest-pw timeout 20 bester send "bester://pkgtest@127.0.0.1:$port" echo "$1"
}
reply=$(send '{"from":"unit"}') ||
  { journalctl -u besterd --no-pager >&2 || true; fail "bester send to the unit failed: $reply"; }
case "$reply" in
  *'"status":"ok"'*'"data":{"from":"unit"}'*) echo "$reply" ;;
  *) fail "unexpected reply from the unit: $reply" ;;
esac
old_pid=$(systemctl show -P MainPID besterd.service)
[ "$old_pid" -gt 0 ] || fail "besterd.service has no main PID"

echo "== dpkg -i $(basename "$deb2") (the upgrade restarts the running daemon)"
dpkg -i "$deb2" >/dev/null
[ "$(dpkg-query -W -f='${Version}' besterd)" = "$version+test1" ] || fail "the upgrade was not installed"
systemctl is-active --quiet besterd.service || fail "besterd.service is not active after the upgrade"
new_pid=$(systemctl show -P MainPID besterd.service)
[ "$new_pid" != "$old_pid" ] || fail "the upgrade left the old daemon (PID $old_pid) running"
# The daemon runs the file the upgrade installed (not the unlinked old one).
exe=$(readlink "/proc/$new_pid/exe")
[ "$exe" = /usr/bin/besterd ] || fail "the new daemon runs $exe, not /usr/bin/besterd"
reply=$(send '{"from":"upgraded"}') || fail "bester send after the upgrade failed: $reply"
case "$reply" in
  *'"status":"ok"'*'"data":{"from":"upgraded"}'*) echo "$reply" ;;
  *) fail "unexpected reply after the upgrade: $reply" ;;
esac

else
  echo "== no systemd running here: the service under its unit and its restart on upgrade are not checked"
  echo "== dpkg -i $(basename "$deb2") (the upgrade), then besterd ctl upgrade of the daemon running"
  start_daemon
  dpkg -i "$deb2" >/dev/null
  [ "$(dpkg-query -W -f='${Version}' besterd)" = "$version+test1" ] || fail "the upgrade was not installed"
  out=$(timeout 60 besterd ctl --socket "$work/run/besterd.ctl" upgrade 2>&1) ||
    fail "besterd ctl upgrade failed: $out"
  echo "$out"
  upgraded=$(sed -n 's/^upgraded: pid \([0-9]*\) serves.*/\1/p' <<<"$out")
  [ -n "$upgraded" ] || fail "no new pid in: $out"
  status=0
  wait "$daemon" || status=$?
  daemon=""
  [ "$status" -eq 0 ] || fail "the old daemon exited with $status after the upgrade"
  # The new process runs the file the upgrade installed (not the unlinked old one).
  exe=$(readlink "/proc/$upgraded/exe")
  [ "$exe" = /usr/bin/besterd ] || fail "the upgraded daemon runs $exe, not /usr/bin/besterd"
  reply=$(BESTER_PASSWORD=pkgtest-pw timeout 20 bester send "bester://pkgtest@$addr" echo '{"from":"upgraded"}') ||
    fail "bester send after ctl upgrade failed: $reply"
  case "$reply" in
    *'"status":"ok"'*'"data":{"from":"upgraded"}'*) echo "$reply" ;;
    *) fail "unexpected reply after ctl upgrade: $reply" ;;
  esac
  kill -TERM "$upgraded"
  for _ in $(seq 1 400); do
    kill -0 "$upgraded" 2>/dev/null || break
    [ "$(cut -d' ' -f3 "/proc/$upgraded/stat" 2>/dev/null)" = Z ] && break
    sleep 0.05
  done
  grep -q "upgrade: done; pid $upgraded serves" "$work/besterd.log" || fail "no 'upgrade: done' in the log"
  upgraded=""
fi

echo "== dpkg --purge (enabled units first: no symlink may dangle)"
rm -rf /etc/systemd/system/besterd.service.d
systemctl enable besterd.service besterd.socket >/dev/null 2>&1
[ -L /etc/systemd/system/multi-user.target.wants/besterd.service ] || fail "systemctl enable made no symlink"
dpkg --purge besterd >/dev/null
left=$(find /etc/systemd/system -name 'besterd*' 2>/dev/null; ls -d /var/lib/besterd /etc/besterd \
  /var/lib/systemd/deb-systemd-helper-enabled/*besterd* 2>/dev/null || true)
[ -z "$left" ] || fail "left after purge: $left"
echo "== package test passed"
