#!/usr/bin/env python3
"""chat.py: a besterd handler for chat rooms (type usually "chat"), fanning out with sendClients.

Requests (payload.data):
  {"action":"join","room":"r"}             -> reply {"room":"r","members":[sorted names]}
  {"action":"leave","room":"r"}            -> reply {"room":"r","members":[who is left]}
  {"action":"say","room":"r","text":"hi"}  -> sendClients to every member (sender included) with
                                              {"room":"r","from":"alice","text":"hi"}
Errors: "not_in_room" (leave/say from a non-member), "bad_request" (bad action or fields).
The sender is always header.from.user, never a field of the data.

Federation: with BESTER_CHAT_PEERS="node-b,node-c", a local say is also pushed to those servers
(a separate sendServers frame, no request) as {"action":"say","room","text","from"}. A say that
arrives from a peer (scope "server") goes to the local members of the room, with "server" added
to the data, and is never relayed again (no loops between servers).

Rooms live in this process's memory: run ONE chat process, or members end up split between
processes. The logic is pure (ChatState + handle) so tests call it without a socket. Written with
the Python package (`import bester`, clients/python), which sits beside this file as `bester/`.
"""
import os

import bester


class ChatState:
    """Room memberships, plus the peer servers a local say is relayed to."""

    def __init__(self, peers=()):
        self.rooms = {}  # room name -> set of user names
        self.peers = [p for p in peers if p]

    @classmethod
    def from_env(cls, environ=os.environ):
        """Peers from BESTER_CHAT_PEERS, comma-separated server names."""
        return cls(p.strip() for p in environ.get("BESTER_CHAT_PEERS", "").split(","))

    def members(self, room):
        return sorted(self.rooms.get(room, ()))


class BadRequest(Exception):
    """The data of a request is not something chat understands."""


def _string_field(data, key):
    value = data.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"data.{key} must be a string")
    return value


def handle(state, request: bester.Request):
    """Handle one request: its answer, or [answer, push to the peers] for a relayed say."""
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
        if request.scope == "server":
            return _from_peer(state, request, data, action, room)
        user = request.user
        if not user:
            raise BadRequest("the request has no sender (header.from.user)")
        if action == "join":
            state.rooms.setdefault(room, set()).add(user)
            return request.reply({"room": room, "members": state.members(room)})
        if user not in state.rooms.get(room, ()):
            return request.error("not_in_room", f'{user} is not in room "{room}"')
        if action == "leave":
            state.rooms[room].discard(user)
            if not state.rooms[room]:
                del state.rooms[room]
            return request.reply({"room": room, "members": state.members(room)})
        # say
        text = _string_field(data, "text")
        answer = request.send_clients(state.members(room), {"room": room, "from": user, "text": text})
        if not state.peers:
            return answer
        relay = {"action": "say", "room": room, "text": text, "from": user}
        return [answer, bester.push_servers(state.peers, request.type, relay)]
    except BadRequest as e:
        return request.error("bad_request", str(e))


def _from_peer(state, request, data, action, room):
    """A say relayed by a peer server: deliver it to our local members of the room."""
    if action != "say":
        raise BadRequest('a peer server may only send "say"')
    text = _string_field(data, "text")
    # A relayed push carries the user in the data; the broker may also name them in the header.
    user = request.user or data.get("from")
    if not isinstance(user, str) or not user:
        raise BadRequest("a say from a peer needs the user in header.from.user or data.from")
    message = {"room": room, "from": user, "server": request.server, "text": text}
    return request.send_clients(state.members(room), message)


def make_handler(state):
    """A bester.Handler serving every type with `handle` on `state`."""
    # workers=0: one request at a time, in order, on the reading thread: the rooms are shared
    # state, and a client's pipelined "join" then "say" must run in that order.
    handler = bester.Handler(workers=0)
    handler.on()(lambda request: handle(state, request))
    return handler


if __name__ == "__main__":
    make_handler(ChatState.from_env()).run()
