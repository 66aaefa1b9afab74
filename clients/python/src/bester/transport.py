"""Opening a connection for a URL: TCP, TLS (``ssl``), WebSocket and WebSocket over TLS, for the
blocking client (sockets) and the asyncio one (streams). Both return a :class:`~bester.wire.Codec`
ready for frames (the WebSocket upgrade done and checked).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import Optional, Tuple, Union

from .errors import error_for
from .wire import MAX_FRAME, Codec, Url, WsCodec


def tls_context(ca: Optional[str] = None, context: Optional[ssl.SSLContext] = None) -> ssl.SSLContext:
    """The context for TLS URLs: ``context`` as given, else one that verifies the server's
    certificate and name against ``ca`` (a PEM file) or the system's CAs."""
    if context is not None:
        return context
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def client_certificate(ca: Optional[str], context: Optional[ssl.SSLContext], cert: Union[str, Tuple[str, str]]) -> ssl.SSLContext:
    """The TLS context with a client certificate: ``cert`` is a PEM file holding the certificate
    and its key, or a pair (certificate file, key file)."""
    ctx = tls_context(ca, context)
    if isinstance(cert, tuple):
        ctx.load_cert_chain(cert[0], cert[1])
    else:
        ctx.load_cert_chain(cert)
    return ctx


def make_codec(url: Url, max_frame: int = MAX_FRAME) -> Codec:
    return WsCodec(max_frame) if url.ws else Codec(max_frame)


def open_socket(
    url: Url, timeout: float, ca: Optional[str] = None, context: Optional[ssl.SSLContext] = None, max_frame: int = MAX_FRAME
) -> Tuple[socket.socket, Codec, list]:
    """A connected (blocking) socket, its codec and any frame bodies that came with the upgrade."""
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((url.host, url.port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if url.tls:
            sock = tls_context(ca, context).wrap_socket(sock, server_hostname=url.host)
        codec = make_codec(url, max_frame)
        early: list = []
        if isinstance(codec, WsCodec):
            sock.sendall(codec.handshake(url.authority, url.path))
            while not codec.upgraded:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = sock.recv(65536)
                if not data:
                    raise error_for("connection_lost", "closed during the WebSocket upgrade")
                early += codec.feed(data)
        sock.settimeout(None)
        return sock, codec, early
    except BaseException:
        sock.close()
        raise


async def open_stream(
    url: Url, timeout: float, ca: Optional[str] = None, context: Optional[ssl.SSLContext] = None, max_frame: int = MAX_FRAME
) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter, Codec, list]:
    """The asyncio counterpart of :func:`open_socket`."""

    async def go():
        ctx = tls_context(ca, context) if url.tls else None
        reader, writer = await asyncio.open_connection(url.host, url.port, ssl=ctx, server_hostname=url.host if ctx else None)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        codec = make_codec(url, max_frame)
        early: list = []
        if isinstance(codec, WsCodec):
            writer.write(codec.handshake(url.authority, url.path))
            while not codec.upgraded:
                data = await reader.read(65536)
                if not data:
                    raise error_for("connection_lost", "closed during the WebSocket upgrade")
                early += codec.feed(data)
        return reader, writer, codec, early

    return await asyncio.wait_for(go(), timeout)
