"""The package against protocol/vectors: frames (every split of the stream, every invalid case),
the key login (the signed bytes, the signature, the frames the login sends), the answers the
handler helpers build, the typed errors of the server's frames, and the echo cases of
handlers.json against examples/echo_handler.py run as a real process."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import unittest

import bester
from bester import handler as handler_mod
from bester import session, wire

from support import DEADLINE, HERE, REPO, package_path

VECTORS = REPO / "protocol" / "vectors"


def load(name):
    with open(VECTORS / name, encoding="utf-8") as f:
        return json.load(f)


class Frames(unittest.TestCase):
    def setUp(self):
        self.v = load("frames.json")

    def test_valid_frames_encode_byte_for_byte_and_decode(self):
        for case in self.v["valid"]:
            with self.subTest(case["name"]):
                value = json.loads(case["json"])
                self.assertEqual(wire.encode_frame(value).hex(), case["hex"])
                self.assertEqual([json.loads(b) for b in wire.Codec().feed(bytes.fromhex(case["hex"]))], [value])

    def test_stream_split_at_every_byte(self):
        stream = bytes.fromhex(self.v["stream"]["hex"])
        want = [json.loads(c["json"]) for c in self.v["valid"]]
        for cut in range(len(stream) + 1):
            codec = wire.Codec()
            got = codec.feed(stream[:cut]) + codec.feed(stream[cut:])
            self.assertEqual([wire.loads(b) for b in got], want, f"split at {cut}")
        codec = wire.Codec()
        got = []
        for i in range(len(stream)):
            got += codec.feed(stream[i : i + 1])
        self.assertEqual([wire.loads(b) for b in got], want)

    def test_invalid_frames_raise_their_code(self):
        for case in self.v["invalid"]:
            with self.subTest(case["name"]):
                codec = wire.Codec(self.v["max_frame"])
                with self.assertRaises(bester.BesterError) as cm:
                    for body in codec.feed(bytes.fromhex(case["hex"])):
                        wire.loads(body)
                self.assertEqual(cm.exception.code, case["code"])
                self.assertIsInstance(cm.exception, bester.ERRORS[case["code"]])


class KeyLogin(unittest.TestCase):
    def test_the_signed_bytes_signature_and_frames(self):
        try:
            key = session.load_key(bytes.fromhex(load("key_login.json")["seed_hex"]))
        except ImportError:
            self.skipTest("cryptography is not installed")
        v = load("key_login.json")
        self.assertEqual(session.public_key_b64(key), v["public_key"])
        self.assertEqual(session.signed_bytes(v["server"], v["username"], v["nonce"]).hex(), v["message_hex"])
        frames = [json.loads(f["json"]) for f in v["frames"]]
        creds = session.Credentials(username=v["username"], key=key, server_name=v["server"])
        login = session.Login(creds.authentication(), key=key, username=v["username"], server_name=v["server"])
        self.assertEqual(login.first(), frames[0])
        self.assertEqual(login.step(frames[1]), ("send", frames[2]))
        self.assertEqual(login.step(frames[3]), ("ok", frames[3]["data"]))

    def test_a_challenge_for_another_server_is_not_signed(self):
        try:
            key = session.load_key(bytes.fromhex(load("key_login.json")["seed_hex"]))
        except ImportError:
            self.skipTest("cryptography is not installed")
        v = load("key_login.json")
        login = session.Login({}, key=key, username="alice", server_name="elsewhere")
        with self.assertRaises(bester.AuthFailed) as cm:
            login.step(json.loads(v["frames"][1]["json"]))
        self.assertEqual(cm.exception.text, "the challenge is for server 'besterd', not 'elsewhere': not signing")


class Messages(unittest.TestCase):
    def setUp(self):
        self.cases = {c["name"]: c for c in load("messages.json")["cases"]}
        self.request = handler_mod.Request({"header": {"kind": "request", "request": "17"}, "payload": {"type": "echo", "data": None}})

    def built(self, answer):
        frame = dict(answer.frame)
        frame["header"] = dict(frame["header"], request="17")
        return frame

    def test_the_answer_helpers_build_the_vectors(self):
        r = self.request
        pairs = {
            "reply": r.reply({"hello": "world"}),
            "sendClients": r.send_clients(["alice", "bob"], "hi", "chat"),
            "sendHandler": r.send_handler("echo"),
            "error answer": handler_mod.Request({"header": {"request": "17"}, "payload": {"type": "chat"}}).error("not_in_room", "no"),
        }
        for name, answer in pairs.items():
            with self.subTest(name):
                want = json.loads(self.cases[name]["json"])
                want["payload"].setdefault("data", None)
                self.assertEqual(self.built(answer), want)
        servers = json.loads(self.cases["sendServers"]["json"])
        servers["payload"]["data"] = None
        self.assertEqual(self.built(r.send_servers(["node-b"], None, "chat")), servers)

    def test_server_frames_become_typed_errors(self):
        frame = json.loads(self.cases["error reply keeps the original shape"]["json"])
        error = bester.errors.from_frame(frame)
        self.assertIsInstance(error, bester.UnknownType)
        self.assertEqual((error.code, error.text), ("unknown_type", 'no handler for type "nope"'))

    def test_every_code_of_the_protocol_has_its_class(self):
        text = (REPO / "protocol" / "PROTOCOL.md").read_text()
        table = text[text.index("## 8. Error codes") : text.index("## 9.")]
        import re

        codes = set()
        for line in table.splitlines():
            if line.startswith("| `"):
                codes.update(re.findall(r"`([a-z0-9_]+)`", line.split("|")[1]))
        self.assertTrue(codes)
        for code in codes:
            with self.subTest(code):
                cls = bester.ERRORS[code]
                self.assertEqual(bester.error_for(code, "t").code, code)
                self.assertIsNot(cls, bester.BesterError)
                self.assertEqual(bester.ErrorCode(code).value, code)


class HandlerVectors(unittest.TestCase):
    """Every case of handlers.json, played against the examples written with the package."""

    def test_every_case(self):
        cases = load("handlers.json")["cases"]
        self.assertEqual({c["handler"] for c in cases}, {"echo", "upper", "chat"})
        for case in cases:
            with self.subTest(case["name"]):
                script = HERE.parent / "examples" / f"{case['handler']}_handler.py"
                self.assertEqual(play(script, case), case["answers"])


def play(script, case):
    """Be the broker for one handler process: send the case's requests, collect its answers."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "h.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        env = dict(os.environ, BESTER_SOCKET=path, BESTER_TYPE="echo", PYTHONPATH=package_path(), **case.get("env", {}))
        proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.DEVNULL)
        try:
            server.settimeout(DEADLINE)
            conn, _ = server.accept()
            conn.settimeout(DEADLINE)
            conn.sendall(b"".join(wire.encode_frame(r) for r in case["requests"]))
            want = len(case["answers"])
            codec, got = wire.Codec(), []
            while len(got) < want:
                data = conn.recv(65536)
                if not data:
                    break
                got += [wire.loads(b) for b in codec.feed(data)]
            conn.close()
            assert proc.wait(DEADLINE) == 0
            return got
        finally:
            if proc.poll() is None:
                proc.kill()
            server.close()


if __name__ == "__main__":
    unittest.main()
