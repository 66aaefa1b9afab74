#!/usr/bin/env python3
"""A test handler that sends the broker handler frames on a client's behalf, for tests/presence.rs.

Requests (payload.data):
  {"send":[frame, ...]}  -> writes each frame as it is (pushes: groupAdd, groupRemove, presence,
                            sendClients, ...), reads the broker's report to each, and answers
                            {"reports":[report, ...]}
  anything else          -> reply with the data as it came

As an auth handler (a login request), it accepts {"user":U,"groups":[...]} as user U with
info {"groups":[...]}, and refuses anything else.

Raw frames, one request at a time: tests wait for each answer before the next request.
"""
import json
import os
import socket
import struct
import sys


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            sys.exit(0)
        buf += chunk
    return buf


def read_frame(sock):
    (length,) = struct.unpack("<I", read_exact(sock, 4))
    return json.loads(read_exact(sock, length))


def write_frame(sock, obj):
    body = json.dumps(obj, separators=(",", ":")).encode()
    sock.sendall(struct.pack("<I", len(body)) + body)


def main():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["BESTER_SOCKET"])
    while True:
        request = read_frame(sock)
        header = request["header"]
        if header.get("kind") == "report":
            continue
        data = request.get("payload", {}).get("data")
        token = header.get("request")
        kind = request.get("payload", {}).get("type")
        if header.get("kind") == "login":
            if isinstance(data, dict) and isinstance(data.get("user"), str):
                answer = {"user": data["user"], "info": {"groups": data.get("groups", [])}}
                write_frame(sock, {"header": {"status": "ok", "command": "reply", "request": token},
                                   "payload": {"type": kind, "data": answer}})
            else:
                write_frame(sock, {"header": {"status": "error", "command": "reply", "request": token},
                                   "payload": {"type": kind, "data": {"error": "no", "code": "auth_failed"}}})
            continue
        if isinstance(data, dict) and isinstance(data.get("send"), list):
            for frame in data["send"]:
                write_frame(sock, frame)
            reports = []
            while len(reports) < len(data["send"]):
                frame = read_frame(sock)
                if frame["header"].get("kind") == "report":
                    reports.append(frame)
            write_frame(sock, {"header": {"status": "ok", "command": "reply", "request": token},
                               "payload": {"type": kind, "data": {"reports": reports}}})
            continue
        write_frame(sock, {"header": {"status": "ok", "command": "reply", "request": token},
                           "payload": {"type": kind, "data": data}})


if __name__ == "__main__":
    main()
