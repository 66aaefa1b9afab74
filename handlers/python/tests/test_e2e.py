"""End to end: the real handler scripts as subprocesses, behind a fake broker on a Unix socket."""
import os
import subprocess
import sys
import unittest

from tests.support import PYTHON_DIR, TIMEOUT, FakeBroker, encode_frame, request

ECHO = PYTHON_DIR / "echo.py"
CHAT = PYTHON_DIR / "chat.py"
MAX_FRAME = 1024 * 1024  # the largest frame besterd sends, and the handler accepts


def reply(req, data):
    """The echo handler's answer to `req`."""
    return {"header": {"status": "ok", "command": "reply", "request": req["header"]["request"]},
            "payload": {"type": req["payload"]["type"], "data": data}}


class Echo(unittest.TestCase):
    def test_fifty_pipelined_requests_then_exit_0(self):
        with FakeBroker(ECHO, "echo") as broker:
            broker.accept()
            requests = [request(f"r{i}", "echo", {"n": i, "text": "é" * i}) for i in range(50)]
            broker.send(*requests)  # all 50 in one write
            answers = broker.read_frames(50)
            by_token = {a["header"]["request"]: a for a in answers}
            self.assertEqual(len(by_token), 50, "every request answered exactly once")
            for req in requests:
                token = req["header"]["request"]
                self.assertEqual(by_token[token], reply(req, req["payload"]["data"]))
            self.assertEqual(broker.close_and_wait(), 0)
            self.assertEqual(broker.proc.stdout.read(), b"", "handlers log to stderr only")

    def test_frames_split_across_writes(self):
        with FakeBroker(ECHO, "echo") as broker:
            broker.accept()
            data = b"".join(encode_frame(request(str(i), "echo", i)) for i in range(3))
            for i in range(len(data)):  # one byte per write
                broker.conn.sendall(data[i:i + 1])
            self.assertEqual([a["payload"]["data"] for a in broker.read_frames(3)], [0, 1, 2])
            self.assertEqual(broker.close_and_wait(), 0)

    def test_a_frame_near_the_limit_round_trips(self):
        # ~1 MB each way: arrives in many reads, leaves in several partial writes.
        with FakeBroker(ECHO, "echo") as broker:
            broker.accept()
            big = request("big", "echo", "x" * 1_000_000)
            broker.send(big, request("small", "echo", 1))
            first, second = broker.read_frames(2)
            self.assertEqual(first, reply(big, "x" * 1_000_000))
            self.assertEqual(second["header"]["request"], "small")

    def test_reports_get_no_answer(self):
        with FakeBroker(ECHO, "echo") as broker:
            broker.accept()
            report = {"header": {"kind": "report", "status": "error", "request": "9"},
                      "data": {"error": "unknown command", "code": "bad_handler_reply"}}
            broker.send(report, request("1", "echo", "after"))
            (answer,) = broker.read_frames(1)
            self.assertEqual(answer["header"]["request"], "1")

    def test_oversize_frame_from_broker_closes_with_status_1(self):
        with FakeBroker(ECHO, "echo") as broker:
            broker.accept()
            broker.conn.sendall((MAX_FRAME + 1).to_bytes(4, "little"))
            self.assertEqual(broker.read_until_eof(), [])
            self.assertEqual(broker.proc.wait(TIMEOUT), 1)
            self.assertIn("frame_too_large", broker.stderr())

    def test_close_in_the_middle_of_a_frame_exits_0(self):
        with FakeBroker(ECHO, "echo") as broker:
            broker.accept()
            broker.conn.sendall(encode_frame(request("1", "echo", 1))[:7])
            self.assertEqual(broker.close_and_wait(), 0)
            self.assertIn("middle of a frame", broker.stderr())

    def test_without_bester_socket_exits_2(self):
        env = {k: v for k, v in os.environ.items() if k != "BESTER_SOCKET"}
        proc = subprocess.run([sys.executable, str(ECHO)], env=env, capture_output=True, timeout=TIMEOUT)
        self.assertEqual(proc.returncode, 2)
        self.assertIn(b"BESTER_SOCKET", proc.stderr)

    def test_unreachable_socket_exits_1(self):
        env = dict(os.environ, BESTER_SOCKET="/nonexistent/bester.sock")
        proc = subprocess.run([sys.executable, str(ECHO)], env=env, capture_output=True, timeout=TIMEOUT)
        self.assertEqual(proc.returncode, 1)


class Chat(unittest.TestCase):
    def test_join_and_say_with_peers(self):
        with FakeBroker(CHAT, "chat", {"BESTER_CHAT_PEERS": "node-b"}) as broker:
            broker.accept()
            broker.send(request("1", "chat", {"action": "join", "room": "r"}, user="alice"),
                        request("2", "chat", {"action": "join", "room": "r"}, user="bob"),
                        request("3", "chat", {"action": "say", "room": "r", "text": "hi"}, user="bob"))
            add, _, _, _, fanout, relay = broker.read_frames(6)
            self.assertEqual(add["header"], {"status": "ok", "command": "groupAdd",
                                             "commandData": {"group": "chat:r", "users": ["alice"]}})
            self.assertEqual(fanout["header"], {"status": "ok", "command": "sendClients",
                                                "commandData": {"users": [], "groups": ["chat:r"],
                                                                "require_member": True},
                                                "request": "3"})
            self.assertEqual(fanout["payload"]["data"], {"room": "r", "from": "bob", "text": "hi"})
            self.assertEqual(relay["header"], {"status": "ok", "command": "sendServers", "commandData": ["node-b"]})
            self.assertEqual(broker.close_and_wait(), 0)


if __name__ == "__main__":
    unittest.main()
