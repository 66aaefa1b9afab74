"""besterlib: a small stdlib-only library for writing besterd handlers in Python.

A handler is a process the broker starts with two environment variables:
  BESTER_SOCKET  path of the Unix stream socket the broker listens on
  BESTER_TYPE    the payload type this handler serves
It connects to BESTER_SOCKET (being connected means "ready"), then reads requests and writes
answers. Every frame on the socket is a 4-byte little-endian length, then that many bytes of
UTF-8 JSON (one object). When the broker closes the socket the handler exits with status 0.

Typical use (see echo.py):

    import besterlib

    def handle(request):
        return besterlib.reply(request, besterlib.data_of(request))

    besterlib.run(handle)

`handle(request)` gets every request (a dict) and returns an answer dict, a list of frames
(e.g. an answer plus a push), or None to send nothing. The full protocol is in
protocol/PROTOCOL.md.

An auth handler (`[auth] handler = "T"`) gets logins too: `is_login(request)` tells them apart,
`data_of(request)` is the client's authentication object, and `login_ok(request, user, info)` or
`error(request, code, text)` answers (see auth_keys.py).
"""

import json
import logging
import os
import socket
import struct
import sys

# The broker rejects frames with a body over 1 MiB; so do we, in both directions.
MAX_FRAME = 1024 * 1024
_HEADER = struct.Struct("<I")  # the length prefix: unsigned 32-bit little-endian

log = logging.getLogger("bester")


class FrameError(Exception):
    """The byte stream cannot be decoded (or a frame cannot be encoded).

    `code` is a stable string: "frame_too_large", "invalid_json" or "invalid_utf8".
    """

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _reject_constant(name):
    # json.loads accepts NaN/Infinity by default; they are not JSON.
    raise ValueError(f"{name} is not valid JSON")


def encode_frame(obj, max_frame=MAX_FRAME):
    """Serialize `obj` as compact UTF-8 JSON and prefix it with its length."""
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(body) > max_frame:
        raise FrameError("frame_too_large", f"frame of {len(body)} bytes is over the limit of {max_frame} bytes")
    return _HEADER.pack(len(body)) + body


def decode_body(body):
    """Parse one frame body (bytes) into a JSON value, or raise FrameError."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FrameError("invalid_utf8", f"frame body is not valid UTF-8 (at byte {e.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:  # JSONDecodeError is a ValueError; so is an empty body
        raise FrameError("invalid_json", f"frame body is not JSON: {e}") from None
    except RecursionError:  # absurdly deep nesting (the broker refuses over 64 levels anyway)
        raise FrameError("invalid_json", "frame body is nested too deeply") from None


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get back whole decoded frames.

    Handles partial reads (a frame split over many reads) and several frames in one read.
    The declared length is checked against `max_frame` as soon as the 4-byte header is in,
    before waiting for (or buffering) the body. After a FrameError the stream is unusable:
    every later feed() raises the same error, and frames decoded earlier in the failing call are
    dropped (the connection is being closed anyway).
    """

    def __init__(self, max_frame=MAX_FRAME):
        self.max_frame = max_frame
        self._buf = bytearray()
        self._error = None

    @property
    def pending(self):
        """Bytes received that do not yet make a whole frame (non-zero at EOF = truncated frame)."""
        return len(self._buf)

    def feed(self, data):
        """Add received bytes; return the list of objects decoded from every complete frame."""
        if self._error:
            raise self._error
        self._buf += data
        frames = []
        try:
            while len(self._buf) >= _HEADER.size:
                (length,) = _HEADER.unpack_from(self._buf)
                if length > self.max_frame:
                    raise FrameError(
                        "frame_too_large",
                        f"frame of {length} bytes is over the limit of {self.max_frame} bytes",
                    )
                end = _HEADER.size + length
                if len(self._buf) < end:
                    break  # the rest of this frame has not arrived yet
                body = bytes(self._buf[_HEADER.size:end])
                del self._buf[:end]
                frames.append(decode_body(body))
        except FrameError as e:
            self._error = e
            self._buf.clear()
            raise
        return frames


# ---------------------------------------------------------------------------------------------
# Reading requests
# ---------------------------------------------------------------------------------------------

def type_of(request):
    """The payload type of a request."""
    return request["payload"]["type"]


def data_of(request):
    """The payload data of a request (None when missing or null)."""
    return request["payload"].get("data")


def is_login(request):
    """Whether this is a login for an auth handler to decide (header.kind "login")."""
    return request["header"].get("kind") == "login"


def address_of(request):
    """A login's client address ("ip:port"), or None for other requests."""
    return (request["header"].get("from") or {}).get("address")


def info_of(request):
    """The session's authorisation data (header.from.info: what the auth handler or the token
    gave at login), or None."""
    return (request["header"].get("from") or {}).get("info")


def sender_of(request):
    """The user who sent a request (header.from.user), or None (e.g. a push from a peer)."""
    return (request["header"].get("from") or {}).get("user")


# ---------------------------------------------------------------------------------------------
# Building answers (handler -> broker). The broker rejects unknown header/payload fields.
# ---------------------------------------------------------------------------------------------

def _answer(request, command, command_data, type_, data, status="ok"):
    header = {"status": status, "command": command, "request": request["header"]["request"]}
    if command_data is not None:
        header["commandData"] = command_data
    return {"header": header, "payload": {"type": type_, "data": data}}


def reply(request, data, type_=None):
    """Answer only the sender. The type defaults to the request's type."""
    return _answer(request, "reply", None, type_ or type_of(request), data)


def login_ok(request, user, info=None):
    """Accept a login as `user`; `info` (a dict, at most 4 KiB as JSON) reaches every handler
    as header.from.info on the session's requests."""
    data = {"user": user}
    if info is not None:
        data["info"] = info
    return reply(request, data)


def error(request, code, text):
    """Answer the sender with an error: code is stable snake_case, text is for people."""
    return _answer(request, "reply", None, type_of(request), {"error": text, "code": code}, status="error")


def send_clients(request, users, data, type_=None):
    """Answer by delivering the payload to these users of this server.

    The broker tells the sender who got it ("delivered") and who is "offline".
    """
    return _answer(request, "sendClients", list(users), type_ or type_of(request), data)


def send_servers(request, servers, data, type_=None):
    """Answer by delivering the payload to these federated peer servers."""
    return _answer(request, "sendServers", list(servers), type_ or type_of(request), data)


def send_handler(request, type_, data):
    """Answer by passing the payload on to the handler of `type_`; its answer is routed in turn."""
    return _answer(request, "sendHandler", type_, type_, data)


REDIRECT_SCHEMES = ("bester://", "bester+tls://", "bester+ws://", "bester+wss://")


def redirect(request, url, token=None):
    """Answer by sending the client to another server (PROTOCOL.md §6, "Redirects").

    The client is told `url` (a bester://, bester+tls://, bester+ws:// or bester+wss:// URI with
    no user in it, at most 512 bytes) and `token`, what it logs in with there: a token of your own
    (a JWT the target accepts, at most 8 KiB), "mint" for a resume token the broker signs for the
    client's session (the target must share its [auth] token_secret_file), or None. Then the
    broker closes the client's connection. Checked here as the broker checks it, so a mistake
    raises ValueError instead of reaching the client as bad_handler_reply.
    """
    if not isinstance(url, str) or not url.startswith(REDIRECT_SCHEMES):
        raise ValueError("a redirect url must be a bester://, bester+tls://, bester+ws:// or bester+wss:// URI")
    if len(url.encode()) > 512:
        raise ValueError("a redirect url is at most 512 bytes")
    if token is not None and (not isinstance(token, str) or not 1 <= len(token.encode()) <= 8192):
        raise ValueError("a redirect token is a string of 1 to 8192 bytes")
    command_data = {"url": url}
    if token is not None:
        command_data["token"] = token
    header = {"status": "ok", "command": "redirect", "commandData": command_data,
              "request": request["header"]["request"]}
    return {"header": header}


def _push(command, targets, type_, data, id_):
    header = {"status": "ok", "command": command, "commandData": list(targets)}
    if id_ is not None:
        header["id"] = id_  # the broker echoes it in its delivery report
    return {"header": header, "payload": {"type": type_, "data": data}}


def push(users, type_, data, id_=None):
    """A message to users that answers no request (the broker replies with a report)."""
    return _push("sendClients", users, type_, data, id_)


def push_servers(servers, type_, data, id_=None):
    """A message to peer servers that answers no request."""
    return _push("sendServers", servers, type_, data, id_)


# ---------------------------------------------------------------------------------------------
# The connection loop
# ---------------------------------------------------------------------------------------------

def setup_logging():
    """Log to stderr (never stdout) as "<type>[<pid>] LEVEL message"; BESTER_LOG=debug for more."""
    level = getattr(logging, os.environ.get("BESTER_LOG", "info").upper(), logging.INFO)
    name = os.environ.get("BESTER_TYPE", "handler")
    logging.basicConfig(stream=sys.stderr, level=level, format=f"{name}[%(process)d] %(levelname)s %(message)s")


def respond(message, handle):
    """The bytes to write back for one frame from the broker (pure: no socket).

    A request goes to handle(); its answers are encoded, and an exception (or an answer that
    cannot be encoded) becomes an "internal_error" answer. A report is logged, never answered.
    """
    header = message.get("header") if isinstance(message, dict) else None
    kind = header.get("kind") if isinstance(header, dict) else None
    if kind == "report":
        # Reports follow our pushes, or a frame the broker rejected.
        level = logging.DEBUG if header.get("status") == "ok" else logging.WARNING
        log.log(level, "report: %s", json.dumps(message, ensure_ascii=False))
        return b""
    if kind not in ("request", "login"):
        log.warning("ignoring a frame that is neither request, login nor report: %.200r", message)
        return b""
    try:
        answers = handle(message)
        if answers is None:
            return b""
        if isinstance(answers, dict):
            answers = [answers]
        return b"".join(encode_frame(a) for a in answers)
    except Exception as e:  # a bug in one request must not take the handler down
        log.exception("request %s failed", header.get("request"))
        try:
            text = f"the {type_of(message)} handler failed: {type(e).__name__}"
            return encode_frame(error(message, "internal_error", text))
        except Exception:  # the request itself is malformed: nothing sensible to answer
            return b""


class Handler:
    """One connection to the broker. Most handlers only need the module-level run()."""

    def __init__(self, sock):
        self.sock = sock

    @classmethod
    def connect(cls, path=None):
        """Connect to `path` (default $BESTER_SOCKET). Exits 2 if unset, 1 if it cannot connect."""
        path = path or os.environ.get("BESTER_SOCKET")
        if not path:
            log.error("BESTER_SOCKET is not set: handlers are started by besterd")
            sys.exit(2)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as e:
            log.error("cannot connect to %s: %s", path, e)
            sys.exit(1)
        log.info("connected to %s", path)
        return cls(sock)

    def send(self, frames):
        """Write one frame (a dict) or a list of them. Raises BrokenPipeError if the broker left."""
        if isinstance(frames, dict):
            frames = [frames]
        self.send_raw(b"".join(encode_frame(f) for f in frames))

    def send_raw(self, data):
        """Write bytes as they are (sendall loops over partial writes)."""
        self.sock.sendall(data)

    def serve(self, handle):
        """Read frames until the broker closes the socket, then exit 0.

        Exits 1 if the broker sends bytes that are not valid frames.
        """
        decoder = FrameDecoder()
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                if decoder.pending:
                    log.warning("socket closed in the middle of a frame (%d bytes)", decoder.pending)
                log.info("broker closed the socket; exiting")
                sys.exit(0)
            try:
                messages = decoder.feed(data)
            except FrameError as e:
                log.error("bad frame from the broker, closing: %s", e)
                self.sock.close()
                sys.exit(1)
            for msg in messages:
                out = respond(msg, handle)
                if not out:
                    continue
                try:
                    # Written as soon as it is ready, so answers keep the order of the requests.
                    self.send_raw(out)
                except (BrokenPipeError, ConnectionResetError):
                    log.info("broker closed the socket while we were writing; exiting")
                    sys.exit(0)


def run(handle):
    """Set up logging, connect to $BESTER_SOCKET and serve `handle` until the broker leaves."""
    setup_logging()
    Handler.connect().serve(handle)
