"""Start the real besterd binary for the tests: an ephemeral loopback port, a temporary directory
with its configuration, a user store made with ``besterd user add``, and handler processes
written with this package. Nothing here sleeps for a fixed time: waits poll with a deadline.

The binary is ``$BESTERD_BIN``, else ``target/debug/besterd`` of the repository.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, TypeVar

import bester
from bester import wire

# The library's own log lines (reconnects, refused logins) are what the tests provoke: keep them
# out of the test output unless BESTER_TEST_LOG asks for them.
_LEVEL = os.environ.get("BESTER_TEST_LOG", "")
logging.getLogger("bester").setLevel(_LEVEL.upper() if _LEVEL in ("debug", "info", "warning", "error") else logging.CRITICAL)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
DEADLINE = 20.0
T = TypeVar("T")


def besterd_bin() -> str:
    path = os.environ.get("BESTERD_BIN") or str(REPO / "target" / "debug" / "besterd")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"no besterd binary at {path}: build it (cargo build --bins) or set BESTERD_BIN")
    return path


def package_path() -> str:
    """The directory ``bester`` was imported from (put on the handlers' PYTHONPATH)."""
    return str(Path(bester.__file__).resolve().parent.parent)


def eventually(what: str, fn: Callable[[], Optional[T]], deadline: float = DEADLINE) -> T:
    end = time.monotonic() + deadline
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def handler_command(script: str = "app_handler.py", *args: str) -> str:
    return "command = [{!r}, {!r}{}]".format(sys.executable, str(HERE / script), "".join(f", {a!r}" for a in args)).replace("'", '"')


def free_port() -> int:
    """A port that was free a moment ago (for a daemon that must come back on the same port)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A running besterd. ``tables``: TOML after ``[server]`` (handlers, listeners, auth)."""

    def __init__(
        self,
        server_keys: str = "",
        tables: Optional[str] = None,
        users: Sequence[tuple] = (("alice", "alice-pw"), ("bob", "bob-pw")),
        name: str = "test",
        fixed_port: bool = False,
        users_file: Optional[Path] = None,
    ):
        self.dir = Path(tempfile.mkdtemp(prefix="bester-py-"))
        self.users_file = users_file or self.dir / "users.json"
        if users_file is None:  # else another broker's store, shared
            for user, password in users:
                self.add_user(user, password)
        if tables is None:
            tables = f"[handlers.app]\n{handler_command()}\n"
        (self.dir / "besterd.toml").write_text(
            f'[server]\nname = "{name}"\nlisten = "127.0.0.1:{free_port() if fixed_port else 0}"\nusers = "{self.users_file}"\n'
            f'runtime_dir = "{self.dir / "run"}"\n{server_keys}\n{tables}\n'
        )
        self.proc: Optional[subprocess.Popen] = None
        self.addr = ""
        self.start()

    def add_user(self, user: str, password: str) -> None:
        out = subprocess.run(
            [besterd_bin(), "user", "--users", str(self.users_file), "add", user, "--password-stdin"],
            input=password + "\n", capture_output=True, text=True, timeout=DEADLINE,
        )
        if out.returncode != 0:
            raise RuntimeError(f"user add {user}: {out.stderr}")

    def start(self) -> None:
        ready = self.dir / "ready"
        if ready.exists():
            ready.unlink()
        env = dict(os.environ, PYTHONPATH=package_path(), RUST_LOG=os.environ.get("BESTER_TEST_LOG", "info"))
        log = open(self.dir / "besterd.log", "ab")
        self.proc = subprocess.Popen(
            [besterd_bin(), "serve", "--config", str(self.dir / "besterd.toml"), "--ready-file", str(ready)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
        )
        log.close()

        def is_ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"besterd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                text = ready.read_text()
            except FileNotFoundError:
                return None
            return text if text.endswith("\n") else None

        text = eventually("besterd to be ready", is_ready)
        lines = text.splitlines()
        self.addr = lines[0].strip()
        self.listeners: Dict[str, str] = {}
        for line in lines[1:]:
            words = line.split()
            if len(words) >= 3:
                self.listeners[words[0]] = words[2]

    def url(self, user: Optional[str] = None, password: Optional[str] = None, scheme: str = "bester", listener: Optional[str] = None) -> str:
        addr = self.listeners[listener] if listener else self.addr
        auth = f"{user}:{password}@" if password is not None else f"{user}@" if user else ""
        return f"{scheme}://{auth}{addr}"

    def connect(self, user: str = "alice", password: Optional[str] = None, **kw) -> bester.Client:
        kw.setdefault("timeout", DEADLINE)
        return bester.connect(self.url(), username=user, password=password if password is not None else f"{user}-pw", **kw)

    def log(self) -> str:
        try:
            return (self.dir / "besterd.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"besterd did not stop on SIGTERM:\n{self.log()}")

    def restart(self) -> None:
        assert self.stop() == 0, self.log()
        self.start()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FakeServer:
    """A frame server on loopback: ``script(n, identify_authentication, send)`` answers the
    identify of the n-th connection; ``on_message(frame, send)`` each later frame."""

    def __init__(self, script, on_message=None):
        self.script = script
        self.on_message = on_message
        self.logins = []  # the authentication objects received, in order
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"bester://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, len(self.conns) - 1), daemon=True).start()

    def _serve(self, conn, n):
        codec = wire.Codec()

        def send(frame):
            conn.sendall(wire.encode_frame(frame))

        first = True
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                for body in codec.feed(data):
                    frame = wire.loads(body)
                    if first:
                        first = False
                        auth = frame["header"]["identify"]["authentication"]
                        self.logins.append(auth)
                        if not self.script(n, auth, send):
                            conn.close()
                            return
                    elif self.on_message:
                        self.on_message(frame, send)
        except OSError:
            return

    def drop_all(self):
        # The connections open now: iterating the live list would also drop a client's
        # reconnection accepted meanwhile, so that it logged in twice.
        for c in list(self.conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.sock.close()
        self.drop_all()
