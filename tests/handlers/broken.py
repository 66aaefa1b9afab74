#!/usr/bin/env python3
"""broken.py: echo handlers with one deliberate bug each, for the conformance kit's own tests
(`besterd handler-test` must fail them, saying what they did). Not an example to copy.

The first argument picks the bug; without one it is a correct echo handler:
  answers-reports  answers every frame, reports too (with the report's request or id as token)
  no-exit          does not exit when the broker closes the socket (keeps running)
  wrong-token      echoes the request token as a number: "007" comes back as "7"
  split            takes every read for whole frames: a frame split across reads is lost
  login-push       answers a login (kind "login") with sendClients instead of a reply
  abort-oversize   crashes (SIGABRT) on a frame over 1 MiB instead of closing the socket
  skip-oversize    not a bug: skips a frame over 1 MiB unanswered and keeps serving
Standard library only, no library, so that each bug is the only one.
"""
import json
import os
import socket
import struct
import sys
import time

MODE = sys.argv[1] if len(sys.argv) > 1 else "correct"
MAX_FRAME = 1 << 20


def frame(obj):
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return struct.pack("<I", len(body)) + body


def answer(msg):
    header = msg.get("header", {})
    if header.get("kind") == "report" and MODE != "answers-reports":
        return b""
    token = header.get("request", header.get("id"))
    if MODE == "wrong-token" and isinstance(token, str) and token.isdigit():
        token = str(int(token))
    payload = msg.get("payload") or {"type": os.environ.get("BESTER_TYPE", "echo")}
    out = {"status": "ok", "command": "reply", "request": token}
    if MODE == "login-push" and header.get("kind") == "login":
        out.update(command="sendClients", commandData=["alice"])
    return frame({"header": out, "payload": {"type": payload["type"], "data": payload.get("data")}})


def main():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["BESTER_SOCKET"])
    buf = b""
    skip = 0  # bytes of an oversized frame still to skip
    while True:
        data = sock.recv(65536)
        if not data:
            if MODE == "no-exit":
                while True:
                    time.sleep(60)
            sys.exit(0)
        buf = data if MODE == "split" else buf + data
        out = b""
        while True:
            if skip:
                n = min(skip, len(buf))
                buf, skip = buf[n:], skip - n
            if skip or len(buf) < 4:
                break
            (length,) = struct.unpack_from("<I", buf)
            if length > MAX_FRAME and MODE == "skip-oversize":
                buf, skip = buf[4:], length
                continue
            if length > MAX_FRAME and MODE == "abort-oversize":
                os.abort()
            if length > MAX_FRAME:
                sys.exit(1)
            if len(buf) < 4 + length:
                break
            body, buf = buf[4:4 + length], buf[4 + length:]
            try:
                out += answer(json.loads(body.decode("utf-8")))
            except ValueError:
                pass  # the split bug: a piece of a frame taken for one
        if MODE == "split":
            buf = b""
        if out:
            sock.sendall(out)


if __name__ == "__main__":
    main()
