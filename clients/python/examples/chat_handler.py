"""Rooms over `sendClients`: {"action":"join"|"leave"|"say","room":"r","text":"hi"}. Run a single
process of it (rooms live in memory)."""

import threading

import bester

handler = bester.Handler()
rooms: dict = {}
lock = threading.Lock()


@handler.on("chat")
def chat(request: bester.Request):
    data = request.data if isinstance(request.data, dict) else {}
    room, action = data.get("room"), data.get("action")
    if not isinstance(room, str):
        raise bester.BesterError("bad_request", "data.room must be a string")
    with lock:
        members = rooms.setdefault(room, set())
        if action == "join":
            members.add(request.user)
            return {"room": room, "members": sorted(members)}
        if action == "leave":
            members.discard(request.user)
            return {"room": room, "members": sorted(members)}
        if action == "say":
            if request.user not in members:
                raise bester.BesterError("not_in_room", f"{request.user} is not in room {room!r}")
            return request.send_clients(sorted(members), {"room": room, "from": request.user, "text": data.get("text")})
    raise bester.BesterError("bad_request", f"unknown action {action!r}")


if __name__ == "__main__":
    handler.run()
