#!/usr/bin/env python3
"""Drive besterd's WebSocket listener with websocket-client (a standard RFC 6455 client library,
in .venv) and print what the application saw as one JSON object per line. Used by
tests/closing.rs.

  ws_probe.py oversize URL SIZE TRIES [CA]  one text message of SIZE bytes per try; per try
                                            {"error": code or null, "close": code or null,
                                             "failure": text or null}
  ws_probe.py utf8 URL                      a text message that is not UTF-8; the same fields
  ws_probe.py ping URL USER PASSWORD SECS   log in, then only ping (every 0.2 s) for SECS
                                            seconds, then one echo request: {"pongs": n,
                                            "answer": the reply, or "failure": text}
"""
import json
import ssl
import struct
import sys
import time

import websocket


def connect(url, ca=None):
    sslopt = {"ca_certs": ca, "cert_reqs": ssl.CERT_REQUIRED} if ca else None
    ws = websocket.create_connection(url, timeout=10, sslopt=sslopt)
    return ws


def error_then_close(ws):
    """Read the JSON error and the close frame that should follow it."""
    seen = {"error": None, "close": None, "reason": None, "failure": None}
    try:
        opcode, frame = ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            seen["error"] = json.loads(frame.data)["data"]["code"]
            opcode, frame = ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            if len(frame.data) >= 2:
                seen["close"] = struct.unpack("!H", frame.data[:2])[0]
                seen["reason"] = frame.data[2:].decode()
    except Exception as e:  # a reset, or the connection lost without a close frame (1006)
        seen["failure"] = f"{type(e).__name__}: {e}"
    return seen


def main():
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "oversize":
        size, tries = int(sys.argv[3]), int(sys.argv[4])
        ca = sys.argv[5] if len(sys.argv) > 5 else None
        for _ in range(tries):
            ws = connect(url, ca)
            try:
                ws.send(" " * size)
            except Exception as e:
                print(json.dumps({"error": None, "close": None, "failure": f"send: {e}"}))
                continue
            print(json.dumps(error_then_close(ws)), flush=True)
            ws.close()
    elif mode == "utf8":
        ws = connect(url)
        ws.send(b'{"a":"\xff\xfe"}', opcode=websocket.ABNF.OPCODE_TEXT)
        print(json.dumps(error_then_close(ws)))
    elif mode == "ping":
        user, password, secs = sys.argv[3], sys.argv[4], float(sys.argv[5])
        ws = connect(url)
        ws.send(json.dumps({"header": {"identify": {"type": "client", "authentication": {
            "username": user, "password": password}}}}))
        assert json.loads(ws.recv())["header"]["status"] == "ok"
        pongs = 0
        end = time.monotonic() + secs
        try:
            while time.monotonic() < end:
                ws.ping(b"still here")
                ws.settimeout(10)
                opcode, _ = ws.recv_data_frame(True)
                if opcode != websocket.ABNF.OPCODE_PONG:
                    raise RuntimeError(f"opcode {opcode} while only pinging")
                pongs += 1
                # The client's pace: nothing may arrive before its next ping, 0.2 s later.
                ws.settimeout(0.2)
                try:
                    opcode, _ = ws.recv_data_frame(True)
                    raise RuntimeError(f"opcode {opcode} while only pinging")
                except websocket.WebSocketTimeoutException:
                    pass
            ws.settimeout(10)
            ws.send(json.dumps({"header": {"scope": "client", "id": "after-pings"},
                                "payload": {"type": "echo", "data": "still open"}}))
            print(json.dumps({"pongs": pongs, "answer": json.loads(ws.recv())}))
        except Exception as e:
            print(json.dumps({"pongs": pongs, "failure": f"{type(e).__name__}: {e}"}))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
