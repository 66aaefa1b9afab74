"""chat.py's pure logic: rooms are the broker's groups, so the handler keeps no room state."""
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

    def handle(self, raw, state=None):
        """The frames chat.handle answers `raw` with, in the order they are sent."""
        out = chat.handle(state or self.state, bester.Request(raw))
        return [a.frame for a in (out if isinstance(out, list) else [out])]

    def test_join_adds_to_the_group_then_answers(self):
        add, answer = self.handle(join("bob", "r"))
        self.assertEqual(add, {"header": {"status": "ok", "command": "groupAdd",
                                          "commandData": {"group": "chat:r", "users": ["bob"]}}})
        self.assertNotIn("request", add["header"], "a group change is a push, not an answer")
        # The request token is filled in when the package sends the answer.
        self.assertEqual(answer["header"], {"status": "ok", "command": "reply"})
        self.assertEqual(answer["payload"]["data"], {"room": "r", "group": "chat:r"})

    def test_leave_removes_from_the_group(self):
        remove, answer = self.handle(leave("bob", "r"))
        self.assertEqual(remove["header"]["command"], "groupRemove")
        self.assertEqual(remove["header"]["commandData"], {"group": "chat:r", "users": ["bob"]})
        self.assertEqual(answer["payload"]["data"], {"room": "r", "group": "chat:r"})

    def test_say_goes_to_the_group_members_only_from_a_member(self):
        (answer,) = self.handle(say("alice", "r", "hi"))
        self.assertEqual(answer["header"]["command"], "sendClients")
        self.assertEqual(answer["header"]["commandData"],
                         {"users": [], "groups": ["chat:r"], "require_member": True})
        self.assertEqual(answer["payload"]["data"], {"room": "r", "from": "alice", "text": "hi"})

    def test_the_same_answers_from_any_process(self):
        other = chat.ChatState()
        self.assertEqual(self.handle(say("a", "r", "x")), self.handle(say("a", "r", "x"), other))

    def test_room_names_must_make_group_names(self):
        (answer,) = self.handle(join("bob", "a b"))
        self.assertEqual(answer["payload"]["data"]["code"], "bad_request")
        (answer,) = self.handle(join("bob", "r" * 60))
        self.assertEqual(answer["payload"]["data"]["code"], "bad_request")

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
        self.assertEqual(answer["header"]["commandData"], {"users": [], "groups": ["chat:r"]})
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
        (_, answer) = self.handle(req)
        self.assertEqual(answer["payload"]["type"], "rooms")


if __name__ == "__main__":
    unittest.main()
