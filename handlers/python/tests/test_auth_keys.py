"""auth_keys.py, the example auth handler: its answers to logins, and its key file."""
import os
import tempfile
import unittest

import auth_keys
from tests.support import exchange


def login(auth, token="4"):
    return {
        "header": {"kind": "login", "request": token,
                   "from": {"address": "127.0.0.1:5000", "listener": "main", "transport": "tcp"}},
        "payload": {"type": "bester.login", "data": auth},
    }


class AuthKeys(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "keys")
        self.write("# comment\n\nk-alice alice {\"plan\":\"pro\",\"via\":\"forged\"}\nk-bob bob\nbroken\nk-x x [1]\n")
        self.handler = auth_keys.make_handler(auth_keys.Keys(self.path))

    def tearDown(self):
        self.dir.cleanup()

    def write(self, text):
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)

    def answer(self, auth):
        """What the handler writes for a login, decoded."""
        (frame,) = exchange(self.handler, [login(auth)])
        return frame

    def test_a_known_key_logs_in_with_the_line_s_info(self):
        self.assertEqual(self.answer({"apiKey": "k-alice"}), {
            "header": {"status": "ok", "command": "reply", "request": "4"},
            "payload": {"type": "bester.login", "data": {"user": "alice", "info": {"plan": "pro", "via": "api-key"}}}})
        self.assertEqual(self.answer({"apiKey": "k-bob"})["payload"]["data"], {"user": "bob", "info": {"via": "api-key"}})

    def test_refusals_say_why_without_the_key(self):
        for auth, text in [({"apiKey": "k-nobody"}, "invalid API key"),
                           ({"apiKey": "k-x"}, "invalid API key"),  # its info was not an object
                           ({"apiKey": ""}, 'log in with {"apiKey":"<key>"}'),
                           ({"username": "a", "password": "p"}, 'log in with {"apiKey":"<key>"}'),
                           ("k-alice", 'log in with {"apiKey":"<key>"}')]:
            got = self.answer(auth)
            self.assertEqual(got["header"]["status"], "error", auth)
            self.assertEqual(got["payload"]["data"], {"code": "auth_failed", "error": text}, auth)

    def test_the_file_is_read_again_when_it_changes(self):
        self.assertEqual(self.answer({"apiKey": "k-bob"})["header"]["status"], "ok")
        self.write("k-carol carol\n")
        self.assertEqual(self.answer({"apiKey": "k-bob"})["header"]["status"], "error")
        self.assertEqual(self.answer({"apiKey": "k-carol"})["payload"]["data"]["user"], "carol")
        os.unlink(self.path)
        self.assertEqual(self.answer({"apiKey": "k-carol"})["header"]["status"], "error")

    def test_requests_that_are_not_logins_are_refused(self):
        request = {"header": {"kind": "request", "request": "5", "scope": "client",
                              "from": {"user": "alice", "server": "s"}},
                   "payload": {"type": "keys", "data": {"apiKey": "k-alice"}}}
        (frame,) = exchange(self.handler, [request])
        self.assertEqual(frame, {
            "header": {"status": "error", "command": "reply", "request": "5"},
            "payload": {"type": "keys", "data": {"error": "this handler only decides logins", "code": "unknown_request"}}})


if __name__ == "__main__":
    unittest.main()
