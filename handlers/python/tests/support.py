"""Test support: repo paths, the shared vectors, and a fake broker on a real Unix socket."""
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import besterlib

REPO = Path(__file__).resolve().parents[3]  # tests -> python -> handlers -> repo root
PYTHON_DIR = REPO / "handlers" / "python"
VECTORS = REPO / "protocol" / "vectors"
TIMEOUT = 10.0  # seconds; a deadline, never a sleep

# In-process calls log (e.g. error reports at WARNING); keep that out of the test output.
besterlib.log.addHandler(logging.NullHandler())
besterlib.log.propagate = False


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
        self.decoder = besterlib.FrameDecoder()
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
        self.conn.sendall(b"".join(besterlib.encode_frame(f) for f in frames))

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

