"""bester: the Python client and handler library of besterd (standard library only).

Client (blocking)::

    import bester
    with bester.connect("bester://alice:secret@localhost:2222") as client:
        print(client.request("echo", {"hello": "world"}))

Client (asyncio): :func:`bester.aio.connect`. Handler: :class:`bester.Handler`.
The protocol is protocol/PROTOCOL.md of the besterd repository.
"""

from .client import Client, Push, connect
from .errors import *  # noqa: F401,F403  (every error class)
from .errors import ERRORS, BesterError, ErrorCode, error_for
from .handler import Answer, Handler, LoginRequest, Report, Request, push, push_servers
from .wire import MAX_FRAME, Codec, Url, WsCodec, encode_frame

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "BesterError",
    "Client",
    "Codec",
    "ERRORS",
    "ErrorCode",
    "Handler",
    "LoginRequest",
    "MAX_FRAME",
    "Push",
    "Report",
    "Request",
    "Url",
    "WsCodec",
    "connect",
    "encode_frame",
    "push",
    "push_servers",
    "error_for",
]
