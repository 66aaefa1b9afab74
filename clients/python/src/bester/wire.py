"""The bytes on the wire, without I/O: frames (4-byte little-endian length + UTF-8 JSON body),
WebSocket (RFC 6455, client side) and ``bester://`` URIs.

Both the blocking and the asyncio client, and the handler, drive these codecs over their own
sockets, so the protocol is written once. ``Codec.feed(bytes)`` returns the frame bodies that
became complete; ``Codec.encode(body)`` the bytes to write; ``Codec.take_output()`` bytes the codec
itself must send (WebSocket pongs and close replies).

A session that negotiated ``compress`` (PROTOCOL.md §1.2) sets ``Codec.compress``: bodies whose
first byte is 0x00 are then raw DEFLATE, inflated within the frame limit, and bodies of at least
256 bytes are sent compressed when that makes them shorter, except frames that carry a secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import urllib.parse
import zlib
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from .errors import error_for

#: The server refuses bodies over 1 MiB; answers wrap at most that in a header, so accept more.
MAX_FRAME = 1024 * 1024 + 64 * 1024
_LEN = struct.Struct("<I")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One encoder and one decoder for every frame: json.dumps/loads with options build new ones per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (no NaN/Infinity: they are not JSON)."""
    return _ENCODER.encode(value).encode("utf-8")


def loads(body: bytes) -> Any:
    """Parse a frame body, raising the typed error the server would use for it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error_for("invalid_utf8", f"frame body is not valid UTF-8 (at byte {e.start})") from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise error_for("invalid_json", "frame body is nested too deeply") from None
    except ValueError as e:
        raise error_for("invalid_json", f"frame body is not JSON: {e}") from None


#: Bodies shorter than this are never compressed (as the server does: PROTOCOL.md §1.2).
COMPRESS_MIN = 256


def carries_secret(frame: Any) -> bool:
    """Whether a frame must never be compressed: the built-in ``bester.*`` types carry passwords
    (``bester.passwd``), tokens (``bester.refresh``) and credentials of other users; compressing a
    secret beside text an attacker chose leaks it through the sizes (CRIME, BREACH)."""
    try:
        kind = frame["payload"]["type"]
    except (KeyError, TypeError):
        return True  # not a message (identify, a signature): never compressed
    return not isinstance(kind, str) or kind.startswith("bester.")


def deflate(body: bytes) -> Optional[bytes]:
    """``body`` as a compressed frame body (0x00 then raw DEFLATE), or ``None`` when that is not
    shorter."""
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    out = b"\0" + c.compress(body) + c.flush()
    return out if len(out) < len(body) else None


def inflate(body: bytes, max_frame: int) -> bytes:
    """A compressed frame body's JSON; over ``max_frame`` inflated is ``frame_too_large`` (at most
    one byte past the limit is ever inflated), a broken stream ``protocol_error``."""
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(memoryview(body)[1:], max_frame + 1)
    except zlib.error as e:
        raise error_for("protocol_error", f"compressed frame is not a valid DEFLATE stream: {e}") from None
    if len(out) > max_frame:
        raise error_for("frame_too_large", f"compressed frame inflates to over the limit of {max_frame} bytes")
    if not d.eof or d.unused_data:
        raise error_for("protocol_error", "compressed frame is not a valid DEFLATE stream")
    return out


def encode_frame(value: Any, max_frame: int = MAX_FRAME) -> bytes:
    """One length-prefixed frame for ``value``."""
    body = dumps(value)
    if len(body) > max_frame:
        raise error_for("frame_too_large", f"frame of {len(body)} bytes is over the limit of {max_frame} bytes")
    return _LEN.pack(len(body)) + body


class Codec:
    """Length-prefixed frames (``bester://``, ``bester+tls://``, handler sockets)."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self.max_frame = max_frame
        self._buf = bytearray()
        self.closed = False  # the peer sent a close (WebSocket only)
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.compress = False  # the session negotiated "compress" (set after the login)
        self.inflated = 0  # compressed frames received
        self.deflated = 0  # compressed frames sent

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame (non-zero at EOF: the stream was cut mid-frame)."""
        return len(self._buf)

    def encode(self, body: bytes, secret: bool = True) -> bytes:
        """The bytes of one frame; compressed only on a compressing session, for a body that is
        not ``secret`` (see :func:`carries_secret`), long enough, and shorter compressed."""
        if self.compress and not secret and len(body) >= COMPRESS_MIN:
            packed = deflate(body)
            if packed is not None:
                self.deflated += 1
                body = packed
        return _LEN.pack(len(body)) + body

    def take_output(self) -> bytes:
        return b""

    def open(self, body: bytes) -> bytes:
        """A body from :meth:`feed` as JSON text: inflated if it is compressed. Called as each
        frame is handled, not as it is read, because the frame that says the session compresses
        (the identify reply) may come in one read with compressed frames after it."""
        if body[:1] != b"\0":
            return body
        if not self.compress:
            raise error_for("protocol_error", 'a compressed frame on a session that did not negotiate "compress"')
        self.inflated += 1
        return inflate(body, self.max_frame)

    def feed(self, data: bytes) -> List[bytes]:
        """Bodies completed by ``data``; a length over the limit raises ``frame_too_large`` at once."""
        buf = self._buf
        buf += data
        out = []
        pos = 0
        while len(buf) - pos >= 4:
            (length,) = _LEN.unpack_from(buf, pos)
            if length > self.max_frame:
                raise error_for("frame_too_large", f"frame of {length} bytes is over the limit of {self.max_frame} bytes")
            end = pos + 4 + length
            if len(buf) < end:
                break
            out.append(bytes(buf[pos + 4 : end]))
            pos = end
        if pos:
            del buf[:pos]
        return out


_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WsCodec(Codec):
    """RFC 6455, client side: masked frames out; fragments reassembled, pings answered, a close
    echoed. One WebSocket message is one frame body (no length prefix).

    Start with :meth:`handshake` (the HTTP upgrade request) and feed the server's bytes:
    ``feed`` returns nothing until the ``101`` answer is read and checked.
    """

    def __init__(self, max_frame: int = MAX_FRAME):
        super().__init__(max_frame)
        self._key = base64.b64encode(os.urandom(16)).decode()
        self.upgraded = False
        self._out = bytearray()
        self._parts: List[bytes] = []
        self._parts_len = 0
        self._in_message = False

    def handshake(self, host: str, path: str = "/") -> bytes:
        return (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    @staticmethod
    def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
        """One masked client frame."""
        head = bytearray([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            head.append(0x80 | n)
        elif n < 65536:
            head.append(0x80 | 126)
            head += struct.pack(">H", n)
        else:
            head.append(0x80 | 127)
            head += struct.pack(">Q", n)
        mask = os.urandom(4)
        head += mask
        return bytes(head) + _mask(payload, mask)

    def encode(self, body: bytes, secret: bool = True) -> bytes:
        return self.frame(0x1, body)

    def close_frame(self, code: int = 1000) -> bytes:
        return self.frame(0x8, struct.pack(">H", code))

    def take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def feed(self, data: bytes) -> List[bytes]:
        buf = self._buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 16384:
                    raise error_for("protocol_error", "the WebSocket upgrade answer is over 16 KiB")
                return []
            head = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            self._check_upgrade(head)
            self.upgraded = True
        out: List[bytes] = []
        while True:
            parsed = self._parse_one()
            if parsed is None:
                break
            fin, opcode, payload = parsed
            if opcode == 0x9:  # ping
                self._out += self.frame(0xA, payload)
            elif opcode == 0xA:  # pong
                pass
            elif opcode == 0x8:  # close
                if len(payload) >= 2:
                    (self.close_code,) = struct.unpack(">H", payload[:2])
                    self.close_reason = payload[2:].decode("utf-8", "replace")
                if not self.closed:
                    self._out += self.frame(0x8, payload[:2])
                self.closed = True
                break
            elif opcode in (0x0, 0x1, 0x2):
                if (opcode == 0x0) != self._in_message:
                    raise error_for("protocol_error", "a WebSocket continuation out of place")
                self._in_message = True
                self._parts_len += len(payload)
                if self._parts_len > self.max_frame:
                    raise error_for("frame_too_large", f"a WebSocket message over {self.max_frame} bytes")
                self._parts.append(payload)
                if fin:
                    out.append(b"".join(self._parts))
                    self._parts = []
                    self._parts_len = 0
                    self._in_message = False
            else:
                raise error_for("protocol_error", f"unknown WebSocket opcode {opcode}")
        return out

    def _parse_one(self) -> Optional[Tuple[bool, int, bytes]]:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b0 & 0x70:
            raise error_for("protocol_error", "WebSocket frame with reserved bits set")
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            (n,) = struct.unpack_from(">H", buf, 2)
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            (n,) = struct.unpack_from(">Q", buf, 2)
            pos = 10
        if n > self.max_frame:
            raise error_for("frame_too_large", f"a WebSocket frame of {n} bytes is over the limit of {self.max_frame} bytes")
        mask = None
        if b1 & 0x80:  # servers must not mask, but reading it costs nothing
            if len(buf) < pos + 4:
                return None
            mask = bytes(buf[pos : pos + 4])
            pos += 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos : pos + n])
        del buf[: pos + n]
        if mask:
            payload = _mask(payload, mask)
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def _check_upgrade(self, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or parts[1] != "101":
            raise error_for("protocol_error", f"WebSocket upgrade refused: {lines[0]}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expect = base64.b64encode(hashlib.sha1(self._key.encode() + _GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expect:
            raise error_for("protocol_error", "WebSocket upgrade answer has the wrong Sec-WebSocket-Accept")


def _mask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return b""
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


# ---------------------------------------------------------------------------------------------
# URIs
# ---------------------------------------------------------------------------------------------

SCHEMES = {"bester": (False, False), "bester+tls": (True, False), "bester+ws": (False, True), "bester+wss": (True, True)}
DEFAULT_PORT = 2222


@dataclass(frozen=True)
class Url:
    """A parsed ``bester[+tls|+ws|+wss]://[user[:password]@]host[:port][/path]``."""

    scheme: str
    host: str
    port: int
    username: Optional[str] = None
    password: Optional[str] = None
    path: str = "/"

    @property
    def tls(self) -> bool:
        return SCHEMES[self.scheme][0]

    @property
    def ws(self) -> bool:
        return SCHEMES[self.scheme][1]

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __repr__(self) -> str:  # never shows the password
        user = f"{self.username}@" if self.username else ""
        return f"Url('{self.scheme}://{user}{self.authority}')"

    __str__ = __repr__

    @classmethod
    def parse(cls, text: str) -> "Url":
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in SCHEMES:
            raise ValueError(f"{text.split('://')[0]!r}: a besterd URL starts with bester://, bester+tls://, bester+ws:// or bester+wss://")
        if not parts.hostname:
            raise ValueError("the URL needs a host: bester://host:port")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError as e:
            raise ValueError(f"bad port in the URL: {e}") from None
        user = urllib.parse.unquote(parts.username) if parts.username else None
        password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        return cls(parts.scheme, parts.hostname, port, user, password, parts.path or "/")
