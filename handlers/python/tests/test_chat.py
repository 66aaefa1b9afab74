"""chat.py's pure logic, beyond the shared vectors."""
import unittest

import bester
import chat

from tests.support import request


def say(user, room, text, scope="client", **header_from):
    return request("s", "chat", {"action": "say", "room": room, "text": text}, user=user, scope=scope, **header_from)


def join(user, room):
    return request("j", "chat", {"action": "join", "room": room}, user=user)


def leave(user, room):
    return request("l", "chat", {"action": "leave", "room": room}, user=user)


class Chat(unittest.TestCase):
    def setUp(self):
        self.state = chat.ChatState()

    def handle(self, raw):
        """The frames chat.handle answers `raw` with (the answer first, then any push)."""
        out = chat.handle(self.state, bester.Request(raw))
        return [a.frame for a in (out if isinstance(out, list) else [out])]

    def run_all(self, *requests):
        return [self.handle(r) for r in requests][-1]

    def test_join_twice_is_one_membership(self):
        (answer,) = self.run_all(join("bob", "r"), join("bob", "r"))
        self.assertEqual(answer["payload"]["data"], {"room": "r", "members": ["bob"]})

    def test_rooms_are_independent(self):
        (answer,) = self.run_all(join("alice", "a"), join("bob", "b"), say("alice", "a", "hi"))
        self.assertEqual(answer["header"]["commandData"], ["alice"])

    def test_last_leave_removes_the_room(self):
        self.run_all(join("alice", "r"), leave("alice", "r"))
        self.assertEqual(self.state.rooms, {})

    def test_a_client_request_without_user_is_refused(self):
        req = request("1", "chat", {"action": "join", "room": "r"})
        del req["header"]["from"]["user"]
        (answer,) = self.handle(req)
        self.assertEqual(answer["payload"]["data"]["code"], "bad_request")

    def test_peer_say_prefers_the_header_user_and_is_not_relayed(self):
        self.state = chat.ChatState(["node-b"])
        req = say("erin", "r", "hi", scope="server", server="node-b")
        req["payload"]["data"]["from"] = "mallory"
        (answer,) = self.handle(req)  # one frame: no relay back to the peers
        self.assertEqual(answer["payload"]["data"], {"room": "r", "from": "erin", "server": "node-b", "text": "hi"})

    def test_peer_say_without_any_user_is_refused(self):
        req = say(None, "r", "hi", scope="server")
        (answer,) = self.handle(req)
        self.assertEqual(answer["payload"]["data"]["code"], "bad_request")

    def test_peers_from_env(self):
        state = chat.ChatState.from_env({"BESTER_CHAT_PEERS": " node-b, ,node-c "})
        self.assertEqual(state.peers, ["node-b", "node-c"])
        self.assertEqual(chat.ChatState.from_env({}).peers, [])

    def test_answers_use_the_request_type(self):
        req = join("alice", "r")
        req["payload"]["type"] = "rooms"
        (answer,) = self.handle(req)
        self.assertEqual(answer["payload"]["type"], "rooms")


if __name__ == "__main__":
    unittest.main()
