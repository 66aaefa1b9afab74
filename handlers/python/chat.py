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

The logic is pure (ChatState + handle) so tests call it without a socket. Written with the
Python package (`import bester`, clients/python), which sits beside this file as `bester/`.
"""
import os

import bester


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
    answer = request.send_clients(users, data)
    target = {"users": list(users), "groups": [group]}
    if require_member:
        target["require_member"] = True
    answer.frame["header"]["commandData"] = target
    return answer


def _group_frame(command, group, user):
    """A groupAdd / groupRemove push (no request): the broker answers it with a report."""
    return bester.Answer({"header": {"status": "ok", "command": command,
                                     "commandData": {"group": group, "users": [user]}}}, push=True)


def handle(state, request: bester.Request):
    """Handle one request: its answer, or a list of frames (pushes first, then the answer)."""
    data = request.data
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
        if request.scope == "server":
            return _from_peer(request, data, action, room)
        user = request.user
        if not user:
            raise BadRequest("the request has no sender (header.from.user)")
        if action in ("join", "leave"):
            # The broker applies the group change before the answer that follows it on this
            # socket, so the client's next say already finds it done, whichever process gets it.
            command = "groupAdd" if action == "join" else "groupRemove"
            return [_group_frame(command, group, user), request.reply({"room": room, "group": group})]
        # say
        text = _string_field(data, "text")
        answer = _to_group(request, group, {"room": room, "from": user, "text": text}, require_member=True)
        if not state.peers:
            return answer
        relay = {"action": "say", "room": room, "text": text, "from": user}
        return [answer, bester.push_servers(state.peers, request.type, relay)]
    except BadRequest as e:
        return request.error("bad_request", str(e))


def _from_peer(request, data, action, room):
    """A say relayed by a peer server: deliver it to our local members of the room."""
    if action != "say":
        raise BadRequest('a peer server may only send "say"')
    text = _string_field(data, "text")
    # A relayed push carries the user in the data; the broker may also name them in the header.
    user = request.user or data.get("from")
    if not isinstance(user, str) or not user:
        raise BadRequest("a say from a peer needs the user in header.from.user or data.from")
    message = {"room": room, "from": user, "server": request.server, "text": text}
    return _to_group(request, group_of(room), message)


def make_handler(state):
    """A bester.Handler serving every type with `handle` on `state`."""
    # workers=0: one request at a time, in order, on the reading thread, so a client's pipelined
    # "join" then "say" reach the broker in that order (the group change before the say).
    handler = bester.Handler(workers=0)
    handler.on()(lambda request: handle(state, request))
    return handler


if __name__ == "__main__":
    make_handler(ChatState.from_env()).run()
