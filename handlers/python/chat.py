#!/usr/bin/env python3
"""chat.py: a besterd handler for chat rooms (type usually "chat") that keeps no room state.

Each room is the broker's group "chat:<room>" (PROTOCOL.md §6, "Groups and presence"), so any
number of chat processes can serve the type (`processes = 4`) and the broker knows who is in
which room, online or not.

Requests (payload.data):
  {"action":"join","room":"r"}             -> groupAdd the sender to "chat:r" (a member until
                                              they leave, online or not), then reply
                                              {"room":"r","group":"chat:r"}
  {"action":"leave","room":"r"}            -> groupRemove the sender, then the same reply
  {"action":"say","room":"r","text":"hi"}  -> sendClients to the room's members (sender
                                              included) {"room":"r","from":"alice","text":"hi"},
                                              only if the sender is a member ("require_member":
                                              the broker answers anyone else "forbidden")
Errors: "bad_request" (bad action or fields). The sender is always header.from.user, never a
field of the data. Who is online in a room: `bester.presence.subscribe` with
{"groups":["chat:r"]} (the chat page does).

Federation: with BESTER_CHAT_PEERS="node-b,node-c", a local say is also pushed to those servers
(a separate sendServers frame, no request) as {"action":"say","room","text","from"}. A say that
arrives from a peer (scope "server") goes to the local members of the room, with "server" added
to the data, and is never relayed again (no loops between servers).

The logic is pure (ChatState + handle) so tests call it without a socket.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # find besterlib next to us
import besterlib  # noqa: E402


class ChatState:
    """The peer servers a local say is relayed to: the only state, and it is configuration."""

    def __init__(self, peers=()):
        self.peers = [p for p in peers if p]

    @classmethod
    def from_env(cls, environ=os.environ):
        """Peers from BESTER_CHAT_PEERS, comma-separated server names."""
        return cls(p.strip() for p in environ.get("BESTER_CHAT_PEERS", "").split(","))


class BadRequest(Exception):
    """The data of a request is not something chat understands."""


GROUP_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-:")


def group_of(room):
    """The broker group that is this room."""
    return "chat:" + room


def _string_field(data, key):
    value = data.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"data.{key} must be a string")
    return value


def _to_group(request, group, data, users=(), require_member=False):
    """An answer delivering `data` to the members of `group` (and `users`)."""
    answer = besterlib.send_clients(request, users, data)
    target = {"users": list(users), "groups": [group]}
    if require_member:
        target["require_member"] = True
    answer["header"]["commandData"] = target
    return answer


def _group_frame(command, group, user):
    """A groupAdd / groupRemove push (no request): the broker answers it with a report."""
    return {"header": {"status": "ok", "command": command, "commandData": {"group": group, "users": [user]}}}


def handle(state, request):
    """Handle one request; return the list of frames to send (pushes first, then the answer)."""
    data = besterlib.data_of(request)
    try:
        if not isinstance(data, dict):
            raise BadRequest('data must be an object like {"action":"join","room":"lobby"}')
        action = data.get("action")
        if action not in ("join", "leave", "say"):
            raise BadRequest('data.action must be "join", "leave" or "say"')
        room = _string_field(data, "room")
        if not room:
            raise BadRequest("data.room must not be empty")
        if len(group_of(room)) > 64 or not set(room) <= GROUP_CHARS:
            raise BadRequest("data.room must be at most 59 characters of A-Z a-z 0-9 . _ - :")
        group = group_of(room)
        if request["header"].get("scope") == "server":
            return _from_peer(request, data, action, room)
        user = besterlib.sender_of(request)
        if not user:
            raise BadRequest("the request has no sender (header.from.user)")
        if action in ("join", "leave"):
            # The broker applies the group change before the answer that follows it on this
            # socket, so the client's next say already finds it done, whichever process gets it.
            command = "groupAdd" if action == "join" else "groupRemove"
            return [_group_frame(command, group, user),
                    besterlib.reply(request, {"room": room, "group": group})]
        # say
        text = _string_field(data, "text")
        out = [_to_group(request, group, {"room": room, "from": user, "text": text}, require_member=True)]
        if state.peers:
            relay = {"action": "say", "room": room, "text": text, "from": user}
            out.append(besterlib.push_servers(state.peers, besterlib.type_of(request), relay))
        return out
    except BadRequest as e:
        return [besterlib.error(request, "bad_request", str(e))]


def _from_peer(request, data, action, room):
    """A say relayed by a peer server: deliver it to our local members of the room."""
    if action != "say":
        raise BadRequest('a peer server may only send "say"')
    text = _string_field(data, "text")
    header_from = request["header"].get("from") or {}
    # A relayed push carries the user in the data; the broker may also name them in the header.
    user = header_from.get("user") or data.get("from")
    if not isinstance(user, str) or not user:
        raise BadRequest("a say from a peer needs the user in header.from.user or data.from")
    message = {"room": room, "from": user, "server": header_from.get("server"), "text": text}
    return [_to_group(request, group_of(room), message)]


if __name__ == "__main__":
    state = ChatState.from_env()
    besterlib.run(lambda request: handle(state, request))
