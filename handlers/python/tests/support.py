"""Test support: repo paths, the shared vectors, a fake broker on a real Unix socket, and a
handler served in this process over a socket pair. Frames are read and written with the package
the examples use (`bester`, beside them in handlers/python)."""
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bester import wire

REPO = Path(__file__).resolve().parents[3]  # tests -> python -> handlers -> repo root
PYTHON_DIR = REPO / "handlers" / "python"
VECTORS = REPO / "protocol" / "vectors"
TIMEOUT = 10.0  # seconds; a deadline, never a sleep

# In-process handlers log (e.g. error reports at WARNING); keep that out of the test output.
for name in ("bester", "auth_keys"):
    logging.getLogger(name).addHandler(logging.NullHandler())
    logging.getLogger(name).propagate = False

encode_frame = wire.encode_frame


class FrameDecoder:
    """Frames in, decoded JSON values out (the package's codec; raises bester.BesterError)."""

    def __init__(self):
        self.codec = wire.Codec()

    @property
    def pending(self):
        return self.codec.pending

    def feed(self, data):
        return [wire.loads(body) for body in self.codec.feed(data)]


def decode_all(data):
    """Every frame in `data`, which must end on a frame boundary."""
    decoder = FrameDecoder()
    frames = decoder.feed(data)
    assert decoder.pending == 0, "a partial frame was written"
    return frames


def exchange(handler, frames):
    """Serve `handler` (a bester.Handler) in this process on one end of a socket pair, send it
    `frames`, close our side, and return every frame it wrote back before it saw the EOF."""
    ours, theirs = socket.socketpair()
    ours.settimeout(TIMEOUT)
    status = []
    thread = threading.Thread(target=lambda: status.append(handler.serve_socket(theirs)), daemon=True)
    thread.start()
    ours.sendall(b"".join(encode_frame(f) for f in frames))
    ours.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := ours.recv(65536):
        data += chunk
    ours.close()
    thread.join(TIMEOUT)
    assert status == [0], f"serve_socket returned {status}"
    return decode_all(data)


def load_vectors(name):
    with open(VECTORS / name, encoding="utf-8") as f:
        return json.load(f)


def request(token, type_, data, user="alice", scope="client", server="node-a"):
    """A broker -> handler request frame."""
    return {
        "header": {"kind": "request", "request": token, "scope": scope, "from": {"user": user, "server": server}},
        "payload": {"type": type_, "data": data},
    }


def random_splits(data, rng):
    """Cut `data` into random pieces (some empty), as a socket might deliver it."""
    pieces, i = [], 0
    while i < len(data):
        n = rng.randint(0, 9)
        pieces.append(data[i:i + n])
        i += n
    return pieces


class FakeBroker:
    """Listen on a Unix socket, start a handler script with BESTER_SOCKET pointing at it, accept.

    Use as a context manager; `conn` is the accepted connection, `proc` the handler process.
    """

    def __init__(self, script, type_="test", env=None):
        self.dir = tempfile.mkdtemp(prefix="bester-")  # short: AF_UNIX paths max out near 108 bytes
        self.path = os.path.join(self.dir, "handler.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.listener.settimeout(TIMEOUT)
        full_env = dict(os.environ, BESTER_SOCKET=self.path, BESTER_TYPE=type_)
        full_env.update(env or {})
        self.proc = subprocess.Popen([sys.executable, str(script)], env=full_env, cwd=REPO, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.conn = None
        self.decoder = FrameDecoder()
        self.frames = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for s in (self.conn, self.listener):
            if s:
                s.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def accept(self):
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(TIMEOUT)
        return self

    def send(self, *frames):
        """Send all frames in one write (pipelined)."""
        self.conn.sendall(b"".join(encode_frame(f) for f in frames))

    def read_frames(self, count):
        """Read until `count` frames have arrived in total since the start; return those new ones."""
        start = len(self.frames)
        deadline = time.monotonic() + TIMEOUT
        while len(self.frames) < start + count:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out: got {len(self.frames) - start} of {count} frames")
            data = self.conn.recv(65536)
            if not data:
                raise AssertionError(f"handler closed the socket after {len(self.frames) - start} of {count} frames")
            self.frames += self.decoder.feed(data)
        return self.frames[start:start + count]

    def read_until_eof(self):
        """Read every remaining frame until the handler closes its side."""
        start = len(self.frames)
        while True:
            data = self.conn.recv(65536)
            if not data:
                return self.frames[start:]
            self.frames += self.decoder.feed(data)

    def close_and_wait(self):
        """Close our side like a broker going away; return the handler's exit status."""
        self.conn.close()
        self.conn = None
        return self.proc.wait(TIMEOUT)

    def stderr(self):
        return self.proc.stderr.read().decode("utf-8", "replace")

