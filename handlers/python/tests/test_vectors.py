"""The shared exchange vectors (protocol/vectors/handlers.json) against the Python handlers.

Each case runs twice: through the example's bester.Handler served in this process over a socket
pair, and through the real handler script behind a fake broker. Cases for handlers written in another language are checked
by that language's tests (upper: handlers/node/test/vectors.test.js). The "chat" cases describe
a chat that keeps its rooms in memory (the client packages' examples); chat.py keeps its rooms in
the broker's groups instead, and tests/test_chat.py checks it.
"""
import socket
import unittest

import echo

from tests.support import PYTHON_DIR, FakeBroker, exchange, load_vectors

VECTORS = load_vectors("handlers.json")
KNOWN = {"echo", "chat", "upper"}  # every handler some language's tests cover


def make_handler(name, env):
    """A fresh handler, as if started with `env`."""
    assert name == "echo", name
    return echo.handler


class HandlerVectors(unittest.TestCase):
    def cases(self):
        cases = [c for c in VECTORS["cases"] if c["handler"] == "echo"]
        self.assertGreater(len(cases), 0)
        return cases

    def test_every_case_names_a_known_handler(self):
        for case in VECTORS["cases"]:
            self.assertIn(case["handler"], KNOWN, case["name"])

    def test_in_process(self):
        for case in self.cases():
            with self.subTest(case["name"]):
                handler = make_handler(case["handler"], case.get("env", {}))
                self.assertEqual(exchange(handler, case["requests"]), case["answers"])

    def test_real_process(self):
        for case in self.cases():
            with self.subTest(case["name"]):
                script = PYTHON_DIR / f"{case['handler']}.py"
                with FakeBroker(script, case["handler"], case.get("env")) as broker:
                    broker.accept().send(*case["requests"])
                    # Half-close: the handler sees EOF after the last request, answers, exits 0.
                    broker.conn.shutdown(socket.SHUT_WR)
                    self.assertEqual(broker.read_until_eof(), case["answers"])
                    self.assertEqual(broker.proc.wait(10), 0, broker.stderr())


if __name__ == "__main__":
    unittest.main()
