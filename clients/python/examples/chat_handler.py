"""Chat rooms, fanning out with sendClients (the same behaviour as handlers/python/chat.py, which
protocol/vectors/handlers.json describes case by case):

  {"action":"join","room":"r"}             -> {"room":"r","members":[sorted names]}
  {"action":"leave","room":"r"}            -> {"room":"r","members":[who is left]}
  {"action":"say","room":"r","text":"hi"}  -> sendClients to every member, {"room","from","text"}

Errors: not_in_room, bad_request. With BESTER_CHAT_PEERS="node-b,node-c" a local say is also
pushed to those servers; a say from a peer goes to the local members only. Rooms live in memory:
run one process of it.
"""

import os
import threading

import bester

handler = bester.Handler(workers=0)  # quick and stateful: one request at a time, in order
rooms: dict = {}
lock = threading.Lock()
peers = [p.strip() for p in os.environ.get("BESTER_CHAT_PEERS", "").split(",") if p.strip()]


def bad(text):
    return bester.BesterError("bad_request", text)


def string(data, key):
    if not isinstance(data.get(key), str):
        raise bad(f"data.{key} must be a string")
    return data[key]


@handler.on()
def chat(request: bester.Request):
    data = request.data
    if not isinstance(data, dict):
        raise bad('data must be an object like {"action":"join","room":"lobby"}')
    action = data.get("action")
    if action not in ("join", "leave", "say"):
        raise bad('data.action must be "join", "leave" or "say"')
    room = string(data, "room")
    if not room:
        raise bad("data.room must not be empty")
    with lock:
        if request.scope == "server":  # relayed by a peer server: local members only
            if action != "say":
                raise bad('a peer server may only send "say"')
            text = string(data, "text")
            user = request.user or data.get("from")
            if not isinstance(user, str) or not user:
                raise bad("a say from a peer needs the user in header.from.user or data.from")
            return request.send_clients(sorted(rooms.get(room, ())), {"room": room, "from": user, "server": request.server, "text": text})
        user = request.user
        if not user:
            raise bad("the request has no sender (header.from.user)")
        if action == "join":
            rooms.setdefault(room, set()).add(user)
            return {"room": room, "members": sorted(rooms[room])}
        if user not in rooms.get(room, ()):
            raise bester.BesterError("not_in_room", f'{user} is not in room "{room}"')
        if action == "leave":
            rooms[room].discard(user)
            members = sorted(rooms[room])
            if not members:
                del rooms[room]
            return {"room": room, "members": members}
        text = string(data, "text")
        answer = request.send_clients(sorted(rooms[room]), {"room": room, "from": user, "text": text})
        if not peers:
            return answer
        relay = bester.push_servers(peers, request.type, {"action": "say", "room": room, "text": text, "from": user})
        return [answer, relay]


if __name__ == "__main__":
    handler.run()
