"""tests/handlers/faulty.py: the misbehaving handler the broker's integration tests use."""
import os
import socket
import subprocess
import sys
import unittest

import bester

from tests.support import REPO, TIMEOUT, FakeBroker, FrameDecoder, request

FAULTY = REPO / "tests" / "handlers" / "faulty.py"


def ask(token, action, **data):
    return request(token, "faulty", dict(data, action=action))


class Faulty(unittest.TestCase):
    def test_pid_and_echo(self):
        with FakeBroker(FAULTY, "faulty") as broker:
            broker.accept().send(ask("1", "pid"), ask("2", "echo", x=[1]))
            pid, echo = broker.read_frames(2)
            self.assertEqual(pid["payload"]["data"], {"pid": broker.proc.pid})
            self.assertEqual(echo["payload"]["data"], {"action": "echo", "x": [1]})
            self.assertEqual(broker.close_and_wait(), 0)

    def test_hang_leaves_that_request_unanswered_and_serves_others(self):
        with FakeBroker(FAULTY, "faulty") as broker:
            broker.accept().send(ask("1", "hang"), ask("2", "echo"))
            broker.conn.shutdown(socket.SHUT_WR)  # EOF after the two requests
            (answer,) = broker.read_until_eof()  # only "2" is ever answered
            self.assertEqual(answer["header"]["request"], "2")
            self.assertEqual(broker.proc.wait(TIMEOUT), 0)

    def test_garbage_writes_a_non_json_frame_then_keeps_serving(self):
        with FakeBroker(FAULTY, "faulty") as broker:
            broker.accept().send(ask("1", "garbage"), ask("2", "echo"))
            broker.conn.shutdown(socket.SHUT_WR)
            raw = b""
            while chunk := broker.conn.recv(65536):
                raw += chunk
            length = int.from_bytes(raw[:4], "little")
            with self.assertRaises(bester.BesterError) as caught:
                FrameDecoder().feed(raw[:4 + length])
            self.assertEqual(caught.exception.code, "invalid_json")
            (answer,) = FrameDecoder().feed(raw[4 + length:])  # a whole frame, then the answer
            self.assertEqual(answer["header"]["request"], "2")
            self.assertEqual(broker.proc.wait(TIMEOUT), 0)

    def test_crash_exits_3_without_answering(self):
        with FakeBroker(FAULTY, "faulty") as broker:
            broker.accept().send(ask("1", "echo"), ask("2", "crash"), ask("3", "echo"))
            self.assertEqual([a["header"]["request"] for a in broker.read_until_eof()], ["1"])
            self.assertEqual(broker.proc.wait(TIMEOUT), 3)

    def test_unknown_action_is_bad_request(self):
        with FakeBroker(FAULTY, "faulty") as broker:
            broker.accept().send(ask("1", "dance"))
            (answer,) = broker.read_frames(1)
            self.assertEqual(answer["payload"]["data"]["code"], "bad_request")

    def test_refuse_mode_exits_1_without_connecting(self):
        env = dict(os.environ, BESTER_SOCKET="/nonexistent/never-used.sock", BESTER_FAULTY_MODE="refuse")
        proc = subprocess.run([sys.executable, str(FAULTY)], env=env, capture_output=True, timeout=TIMEOUT)
        self.assertEqual(proc.returncode, 1)
        self.assertIn(b"refuse", proc.stderr)
        self.assertNotIn(b"cannot connect", proc.stderr)


if __name__ == "__main__":
    unittest.main()
