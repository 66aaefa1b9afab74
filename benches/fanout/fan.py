#!/usr/bin/env python3
"""The handler of the fan-out figure (benches/fanout/mod.rs): type "fan", also the auth handler.

A login {"user":U} is accepted as U with info {"groups":["fan"]} (the publisher, "pub", with no
groups), so every subscriber is a member of the group "fan" from its login on. A request is answered with sendClients to the group "fan",
carrying the request's data: one message, one delivery to every member's connection.
Raw frames, no library: the broker is the thing measured.
"""
import json
import os
import socket
import struct
import sys

HEAD = struct.Struct("<I")


def main():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["BESTER_SOCKET"])
    buf = b""
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            sys.exit(0)
        buf += chunk
        out = []
        while len(buf) >= 4:
            (n,) = HEAD.unpack_from(buf)
            if len(buf) < 4 + n:
                break
            frame = json.loads(buf[4:4 + n])
            buf = buf[4 + n:]
            header = frame["header"]
            kind = header.get("kind")
            if kind == "login":
                user = (frame["payload"].get("data") or {}).get("user", "nobody")
                answer = {"header": {"status": "ok", "command": "reply", "request": header["request"]},
                          "payload": {"type": frame["payload"]["type"],
                                      "data": {"user": user,
                                               "info": {"groups": [] if user == "pub" else ["fan"]}}}}
            elif kind == "request":
                answer = {"header": {"status": "ok", "command": "sendClients",
                                     "commandData": {"groups": ["fan"]}, "request": header["request"]},
                          "payload": {"type": "fan", "data": frame["payload"].get("data")}}
            else:
                continue
            body = json.dumps(answer, separators=(",", ":")).encode()
            out.append(HEAD.pack(len(body)) + body)
        if out:
            sock.sendall(b"".join(out))


if __name__ == "__main__":
    main()
