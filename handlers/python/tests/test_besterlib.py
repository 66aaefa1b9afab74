"""Tests for the Python handler library and example handlers, against the shared vectors in
protocol/vectors (the same files the broker's Rust tests load) and over a real Unix socket.

Run from the repository root: python3 -m unittest discover -s handlers/python/tests -t handlers/python
"""
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(PYDIR))
sys.path.insert(0, PYDIR)

import besterlib  # noqa: E402
import chat  # noqa: E402
import echo  # noqa: E402


def vectors(name):
    with open(os.path.join(REPO, "protocol", "vectors", name), encoding="utf-8") as f:
        return json.load(f)


class FramingVectors(unittest.TestCase):
    def setUp(self):
        self.doc = vectors("frames.json")

    def test_valid_frames_encode_to_the_exact_bytes_and_back(self):
        for case in self.doc["valid"]:
            obj = json.loads(case["json"])
            want = bytes.fromhex(case["hex"])
            # The vector's JSON text is compact already; encoding the parsed object must give it back.
            self.assertEqual(besterlib.encode_frame(obj), want, case["name"])
            self.assertEqual(besterlib.FrameDecoder().feed(want), [obj], case["name"])

    def test_stream_in_every_split(self):
        stream = bytes.fromhex(self.doc["stream"]["hex"])
        want = [json.loads(c["json"]) for c in self.doc["valid"]]
        splits = [1, 2, 3, 5, 64, len(stream)]
        rng = random.Random(7)
        for split in splits + [None] * 20:
            decoder, got, pos = besterlib.FrameDecoder(), [], 0
            while pos < len(stream):
                step = split or rng.randint(1, 40)
                got += decoder.feed(stream[pos:pos + step])
                pos += step
            self.assertEqual(got, want, f"split {split}")
            self.assertEqual(decoder.pending, 0)

    def test_invalid_inputs_get_their_code(self):
        for case in self.doc["invalid"]:
            decoder = besterlib.FrameDecoder(self.doc["max_frame"])
            with self.assertRaises(besterlib.FrameError, msg=case["name"]) as caught:
                decoder.feed(bytes.fromhex(case["hex"]))
            self.assertEqual(caught.exception.code, case["code"], case["name"])

    def test_deep_nesting_is_an_error_not_a_crash(self):
        body = b"[" * 100_000 + b"]" * 100_000
        with self.assertRaises(besterlib.FrameError) as caught:
            besterlib.decode_body(body)
        self.assertEqual(caught.exception.code, "invalid_json")


def run_case(case, handle):
    """Feed a vector case's requests through respond() and decode everything written back."""
    out = []
    for request in case["requests"]:
        out += besterlib.FrameDecoder().feed(besterlib.respond(request, handle))
    return out


class HandlerVectors(unittest.TestCase):
    def test_python_handlers(self):
        ran = 0
        for case in vectors("handlers.json")["cases"]:
            if case["handler"] == "echo":
                handle = echo.handle
            elif case["handler"] == "chat":
                peers = case.get("env", {}).get("BESTER_CHAT_PEERS", "")
                state = chat.ChatState(p for p in peers.split(",") if p)
                handle = lambda request, state=state: chat.handle(state, request)  # noqa: E731
            else:
                continue
            self.assertEqual(run_case(case, handle), case["answers"], case["name"])
            ran += 1
        self.assertGreaterEqual(ran, 6)


class EndToEnd(unittest.TestCase):
    """The real echo.py process against a Unix socket this test listens on."""

    def test_pipelined_requests_over_a_real_socket_then_exit_on_close(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "echo.sock")
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(path)
            server.listen(1)
            env = dict(os.environ, BESTER_SOCKET=path, BESTER_TYPE="echo")
            proc = subprocess.Popen([sys.executable, os.path.join(PYDIR, "echo.py")], env=env,
                                    stderr=subprocess.DEVNULL)
            try:
                server.settimeout(20)
                conn, _ = server.accept()
                conn.settimeout(20)
                wire = b"".join(
                    besterlib.encode_frame({
                        "header": {"kind": "request", "request": str(i), "scope": "client",
                                   "from": {"user": "u", "server": "s"}},
                        "payload": {"type": "echo", "data": {"n": i}},
                    })
                    for i in range(50)
                )
                conn.sendall(wire)  # 50 requests in one write
                decoder, answers = besterlib.FrameDecoder(), []
                while len(answers) < 50:
                    chunk = conn.recv(65536)
                    self.assertTrue(chunk, "handler closed early")
                    answers += decoder.feed(chunk)
                for i, answer in enumerate(answers):
                    self.assertEqual(answer["header"], {"status": "ok", "command": "reply", "request": str(i)})
                    self.assertEqual(answer["payload"], {"type": "echo", "data": {"n": i}})
                conn.close()
                self.assertEqual(proc.wait(timeout=20), 0, "exits 0 when the broker closes the socket")
            finally:
                if proc.poll() is None:
                    proc.kill()
                server.close()


if __name__ == "__main__":
    unittest.main()
