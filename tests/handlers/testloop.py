"""testloop.py: the connection loop of the test handlers (faulty.py, greeter.py), not an example.

Frames are read and written with the Python package's codec (clients/python, linked beside these
files as bester/), by hand: bester.Handler fills in request tokens and answers every request,
and these handlers must be able to send a token nobody sent, a broken frame, or nothing at all.
`run(handle)` connects to $BESTER_SOCKET and calls handle(link, request) per request: it returns
an answer (a dict), a list of frames, or None (no answer); it may write raw bytes on `link`.
"""
import logging
import os
import socket
import sys

from bester import BesterError, wire
from bester.handler import setup_logging

MAX_FRAME = 1024 * 1024
log = logging.getLogger(os.environ.get("BESTER_TYPE", "handler"))


def reply(request, data, status="ok"):
    header = {"status": status, "command": "reply", "request": request["header"]["request"]}
    return {"header": header, "payload": {"type": request["payload"]["type"], "data": data}}


def send_to(request, command, targets, data):
    header = {"status": "ok", "command": command, "commandData": list(targets), "request": request["header"]["request"]}
    return {"header": header, "payload": {"type": request["payload"]["type"], "data": data}}


def redirect(request, url, token=None):
    command_data = {"url": url}
    if token is not None:
        command_data["token"] = token
    return {"header": {"status": "ok", "command": "redirect", "commandData": command_data,
                       "request": request["header"]["request"]}}


def respond(handle, link, message):
    """The bytes to write for one frame from the broker: reports are logged, never answered; an
    exception in handle() is an internal_error answer."""
    header = message.get("header") if isinstance(message, dict) else None
    kind = header.get("kind") if isinstance(header, dict) else None
    if kind == "report":
        log.log(logging.DEBUG if header.get("status") == "ok" else logging.WARNING, "report: %s", wire.dumps(message).decode())
        return b""
    if kind not in ("request", "login"):
        log.warning("ignoring a frame that is neither request, login nor report: %.200r", message)
        return b""
    try:
        answers = handle(link, message)
        if answers is None:
            return b""
        return b"".join(wire.encode_frame(a, MAX_FRAME) for a in (answers if isinstance(answers, list) else [answers]))
    except Exception as e:  # a bug in one request must not take the handler down
        log.exception("request %s failed", header.get("request"))
        try:
            text = f"the {message['payload']['type']} handler failed: {type(e).__name__}"
            return wire.encode_frame(reply(message, {"error": text, "code": "internal_error"}, "error"))
        except Exception:  # the request itself is malformed: nothing sensible to answer
            return b""


def serve(handle, link):
    """Answer frames until the broker closes the socket (exit 0) or sends a broken one (exit 1)."""
    codec = wire.Codec(MAX_FRAME)
    while True:
        try:
            data = link.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            log.info("broker closed the socket; exiting")
            return 0
        try:
            messages = [wire.loads(body) for body in codec.feed(data)]
        except BesterError as e:
            log.error("bad frame from the broker, closing: %s", e)
            return 1
        for message in messages:
            out = respond(handle, link, message)
            try:
                link.sendall(out)
            except (BrokenPipeError, ConnectionResetError):
                log.info("broker closed the socket while we were writing; exiting")
                return 0


def run(handle):
    """Log to stderr, connect to $BESTER_SOCKET and serve; exit 0 at EOF, 1 on a broken frame or
    if it cannot connect, 2 if BESTER_SOCKET is not set."""
    setup_logging()
    path = os.environ.get("BESTER_SOCKET")
    if not path:
        log.error("BESTER_SOCKET is not set: handlers are started by besterd")
        sys.exit(2)
    link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        link.connect(path)
    except OSError as e:
        log.error("cannot connect to %s: %s", path, e)
        sys.exit(1)
    sys.exit(serve(handle, link))
