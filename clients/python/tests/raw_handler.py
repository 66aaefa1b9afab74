"""A handler that misbehaves on purpose, written on the package's framing only (the Handler
class would never send these): `data.action` "status3" answers with the original spec's numeric
error status, "malformed" with a command besterd does not know."""

import os
import socket
import sys

from bester import wire

sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ["BESTER_SOCKET"])
codec = wire.Codec()
while True:
    data = sock.recv(65536)
    if not data:
        sys.exit(0)
    for body in codec.feed(data):
        frame = wire.loads(body)
        if frame["header"].get("kind") != "request":
            continue
        token = frame["header"]["request"]
        action = (frame["payload"].get("data") or {}).get("action")
        if action == "status3":
            answer = {"header": {"status": "3", "request": token}, "payload": {"type": "raw", "data": "no"}}
        else:
            answer = {"header": {"status": "ok", "command": "sendAll", "request": token}, "payload": {"type": "raw"}}
        sock.sendall(wire.encode_frame(answer))
