"""besterlib without sockets: answer builders and respond() (what the loop writes per frame)."""
import unittest

import besterlib
from besterlib import FrameDecoder, respond

from tests.support import request

REQ = request("17", "echo", {"hello": "world"})


def frames(data):
    return FrameDecoder().feed(data)


class Builders(unittest.TestCase):
    def test_reply(self):
        self.assertEqual(besterlib.reply(REQ, [1]), {
            "header": {"status": "ok", "command": "reply", "request": "17"},
            "payload": {"type": "echo", "data": [1]}})

    def test_error(self):
        self.assertEqual(besterlib.error(REQ, "bad_request", "no"), {
            "header": {"status": "error", "command": "reply", "request": "17"},
            "payload": {"type": "echo", "data": {"error": "no", "code": "bad_request"}}})

    def test_send_clients(self):
        self.assertEqual(besterlib.send_clients(REQ, ("bob", "carol"), 1, type_="news"), {
            "header": {"status": "ok", "command": "sendClients", "commandData": ["bob", "carol"], "request": "17"},
            "payload": {"type": "news", "data": 1}})

    def test_send_handler(self):
        self.assertEqual(besterlib.send_handler(REQ, "upper", {"text": "x"}), {
            "header": {"status": "ok", "command": "sendHandler", "commandData": "upper", "request": "17"},
            "payload": {"type": "upper", "data": {"text": "x"}}})

    def test_redirect(self):
        self.assertEqual(besterlib.redirect(REQ, "bester+wss://s1.example:443", "mint"), {
            "header": {"status": "ok", "command": "redirect", "request": "17",
                       "commandData": {"url": "bester+wss://s1.example:443", "token": "mint"}}})
        self.assertEqual(besterlib.redirect(REQ, "bester://h:1")["header"]["commandData"],
                         {"url": "bester://h:1"})
        for url, token in [("http://h/", None), ("bester://" + "h" * 510, None),
                           ("bester://h:1", ""), ("bester://h:1", "t" * 8193)]:
            with self.assertRaises(ValueError):
                besterlib.redirect(REQ, url, token)

    def test_push_has_no_request(self):
        self.assertEqual(besterlib.push(["bob"], "news", "hi", id_="p1"), {
            "header": {"status": "ok", "command": "sendClients", "commandData": ["bob"], "id": "p1"},
            "payload": {"type": "news", "data": "hi"}})
        self.assertEqual(besterlib.push_servers(["node-b"], "chat", None)["header"],
                         {"status": "ok", "command": "sendServers", "commandData": ["node-b"]})

    def test_request_accessors(self):
        self.assertEqual(besterlib.type_of(REQ), "echo")
        self.assertEqual(besterlib.data_of(REQ), {"hello": "world"})
        self.assertEqual(besterlib.sender_of(REQ), "alice")
        bare = {"header": {"kind": "request", "request": "1", "scope": "server", "from": {"server": "b"}},
                "payload": {"type": "t"}}
        self.assertIsNone(besterlib.data_of(bare))
        self.assertIsNone(besterlib.sender_of(bare))


class Respond(unittest.TestCase):
    def test_one_answer(self):
        self.assertEqual(frames(respond(REQ, lambda r: besterlib.reply(r, 1))), [besterlib.reply(REQ, 1)])

    def test_several_frames_and_none(self):
        two = [besterlib.reply(REQ, 1), besterlib.push(["bob"], "echo", 2)]
        self.assertEqual(frames(respond(REQ, lambda r: two)), two)
        self.assertEqual(respond(REQ, lambda r: None), b"")

    def test_reports_and_unknown_frames_are_not_answered(self):
        called = []
        for frame in ({"header": {"kind": "report", "status": "ok", "id": "p1", "delivered": [], "offline": []}},
                      {"header": {"kind": "report", "status": "error"}, "data": {"error": "x", "code": "y"}},
                      {"header": {"kind": "surprise"}}, {"no": "header"}, [1, 2], "text"):
            self.assertEqual(respond(frame, called.append), b"")
        self.assertEqual(called, [])

    def test_an_exception_becomes_internal_error(self):
        def broken(request):
            raise KeyError("room")
        self.assertEqual(frames(respond(REQ, broken)),
                         [besterlib.error(REQ, "internal_error", "the echo handler failed: KeyError")])

    def test_an_unencodable_answer_becomes_internal_error(self):
        (answer,) = frames(respond(REQ, lambda r: besterlib.reply(r, {1, 2})))  # a set is not JSON
        self.assertEqual(answer["payload"]["data"]["code"], "internal_error")
        (answer,) = frames(respond(REQ, lambda r: besterlib.reply(r, "x" * besterlib.MAX_FRAME)))
        self.assertEqual(answer["payload"]["data"]["code"], "internal_error")


if __name__ == "__main__":
    unittest.main()
