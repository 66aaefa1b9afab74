#!/usr/bin/env python3
"""The auth handler of the directory figures (benches/directory/mod.rs), type "dirauth".

A login {"user":U} is accepted as U with no info: ten thousand distinct users log in at the cost
of one handler round trip each, without an argon2 check per user. Raw frames, no library.
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
            if header.get("kind") != "login":
                continue
            user = (frame["payload"].get("data") or {}).get("user", "nobody")
            answer = {"header": {"status": "ok", "command": "reply", "request": header["request"]},
                      "payload": {"type": frame["payload"]["type"], "data": {"user": user}}}
            body = json.dumps(answer, separators=(",", ":")).encode()
            out.append(HEAD.pack(len(body)) + body)
        if out:
            sock.sendall(b"".join(out))


if __name__ == "__main__":
    main()
