"""Every besterd error code as a typed exception.

An error answer from the server is ``{"error": TEXT, "code": CODE}``; the client raises the
subclass of :class:`BesterError` registered for ``CODE`` (a handler's own codes, such as
``not_in_room``, raise :class:`BesterError` itself), carrying ``.code``, ``.text`` and the whole
``.frame``. Catch by family (:class:`AuthError`, :class:`HandlerFailed`, ...) or by code::

    try:
        client.request("chat", {...})
    except bester.HandlerUnavailable:
        ...
    except bester.BesterError as e:
        print(e.code, e.text)

Codes the library itself produces (never sent by the server) are in :class:`ErrorCode` too:
``timeout``, ``connection_lost``, ``closed``, ``redirect_refused``, ``too_many_redirects``,
``protocol_error``.
"""

from __future__ import annotations

import enum
from typing import Any, Dict, Optional, Type


class ErrorCode(str, enum.Enum):
    """Every code of PROTOCOL.md §8, plus the client library's own (last block)."""

    FRAME_TOO_LARGE = "frame_too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_SCOPE = "unknown_scope"
    NOT_IDENTIFIED = "not_identified"
    ALREADY_IDENTIFIED = "already_identified"
    BAD_IDENTIFY_TYPE = "bad_identify_type"
    AUTH_FAILED = "auth_failed"
    IDENTIFY_TIMEOUT = "identify_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    UNKNOWN_TYPE = "unknown_type"
    RESERVED_TYPE = "reserved_type"
    HANDLER_NOT_RUNNING = "handler_not_running"
    HANDLER_UNAVAILABLE = "handler_unavailable"
    HANDLER_TIMEOUT = "handler_timeout"
    HANDLER_BUSY = "handler_busy"
    HANDLER_ERROR = "handler_error"
    BAD_HANDLER_REPLY = "bad_handler_reply"
    HANDLER_LOOP = "handler_loop"
    CHAIN_TOO_DEEP = "chain_too_deep"
    UNKNOWN_PEER = "unknown_peer"
    PEER_UNREACHABLE = "peer_unreachable"
    PEER_UNAVAILABLE = "peer_unavailable"
    PEER_TIMEOUT = "peer_timeout"
    HOP_LIMIT = "hop_limit"
    FORGED_ORIGIN = "forged_origin"
    SERVER_BUSY = "server_busy"
    SLOW_CONSUMER = "slow_consumer"
    SHUTTING_DOWN = "shutting_down"
    SESSION_REVOKED = "session_revoked"
    KICKED = "kicked"
    TOKEN_LOGINS_OFF = "token_logins_off"
    TOKEN_MALFORMED = "token_malformed"
    TOKEN_UNKNOWN_KEY = "token_unknown_key"
    TOKEN_BAD_SIGNATURE = "token_bad_signature"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    TOKEN_WRONG_AUDIENCE = "token_wrong_audience"
    TOKEN_WRONG_ISSUER = "token_wrong_issuer"
    RESUME_EXPIRED = "resume_expired"
    RESUME_REFUSED = "resume_refused"
    SESSION_EXPIRED = "session_expired"
    REDIRECTED = "redirected"
    FORBIDDEN = "forbidden"
    LIMIT_REACHED = "limit_reached"
    QUEUE_FULL = "queue_full"
    STORE_FAILED = "store_failed"
    DIAL_REFUSED = "dial_refused"
    DIAL_OFFLINE = "dial_offline"
    DIAL_TIMEOUT = "dial_timeout"
    DIAL_ANSWERED = "dial_answered"
    UNKNOWN_STREAM = "unknown_stream"
    STREAM_CREDIT_EXCEEDED = "stream_credit_exceeded"
    STREAM_CLOSED = "stream_closed"
    INTERNAL_ERROR = "internal_error"
    # The library's own.
    TIMEOUT = "timeout"
    CONNECTION_LOST = "connection_lost"
    CLOSED = "closed"
    REDIRECT_REFUSED = "redirect_refused"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    PROTOCOL_ERROR = "protocol_error"


class BesterError(Exception):
    """An error answer (or a failure of the connection): ``code`` and ``text``."""

    code: str
    text: str

    def __init__(self, code: str, text: str, frame: Optional[Dict[str, Any]] = None):
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.frame = frame

    @property
    def data(self) -> Any:
        """The error frame's whole ``data`` (e.g. ``status`` of a ``handler_error``)."""
        return (self.frame or {}).get("data")

    def __reduce__(self):  # picklable across processes
        return (error_for, (self.code, self.text, self.frame))


# Families.
class FrameError(BesterError):
    """The bytes were not a frame: too large, not UTF-8, not JSON."""


class MessageError(BesterError):
    """The message was refused as malformed or misaddressed."""


class AuthError(BesterError):
    """A login (or a credential check) was refused."""


class TokenError(AuthError):
    """A JWT was refused (``token_*``)."""


class ResumeError(AuthError):
    """A resume token was refused (``resume_*``)."""


class SessionEnded(BesterError):
    """The server ended the session (revoked, kicked, idle, expired, draining)."""


class HandlerFailed(BesterError):
    """The handler for the type could not answer properly (``handler_*``, ...)."""


class PeerError(BesterError):
    """A per-server result of ``sendServers``."""


class ServerError(BesterError):
    """The server is overloaded or failed."""


class ClientError(BesterError):
    """Raised by the library itself, not answered by the server."""


class Timeout(ClientError, TimeoutError):
    """No answer within the request's timeout (the request may still be handled)."""


class ConnectionLost(ClientError, ConnectionError):
    """The connection went away with the request in flight (it may or may not have been handled)."""


class Closed(ClientError):
    """The client was closed (or gave up reconnecting)."""


# One class per code (written out, so type checkers see them).
class FrameTooLarge(FrameError):
    """``frame_too_large``"""


class InvalidUtf8(FrameError):
    """``invalid_utf8``"""


class InvalidJson(FrameError):
    """``invalid_json``"""


class InvalidMessage(MessageError):
    """``invalid_message``"""


class UnknownScope(MessageError):
    """``unknown_scope``"""


class NotIdentified(MessageError):
    """``not_identified``"""


class AlreadyIdentified(MessageError):
    """``already_identified``"""


class BadIdentifyType(MessageError):
    """``bad_identify_type``"""


class AuthFailed(AuthError):
    """``auth_failed``"""


class IdentifyTimeout(AuthError):
    """``identify_timeout``"""


class IdleTimeout(SessionEnded):
    """``idle_timeout``"""


class RateLimited(AuthError):
    """``rate_limited``"""


class TooManyConnections(ServerError):
    """``too_many_connections``"""


class UnknownType(MessageError):
    """``unknown_type``"""


class ReservedType(MessageError):
    """``reserved_type``"""


class HandlerNotRunning(HandlerFailed):
    """``handler_not_running``"""


class HandlerUnavailable(HandlerFailed):
    """``handler_unavailable``"""


class HandlerTimeout(HandlerFailed):
    """``handler_timeout``"""


class HandlerBusy(HandlerFailed):
    """``handler_busy``"""


class HandlerError(HandlerFailed):
    """``handler_error``"""


class BadHandlerReply(HandlerFailed):
    """``bad_handler_reply``"""


class HandlerLoop(HandlerFailed):
    """``handler_loop``"""


class ChainTooDeep(HandlerFailed):
    """``chain_too_deep``"""


class UnknownPeer(PeerError):
    """``unknown_peer``"""


class PeerUnreachable(PeerError):
    """``peer_unreachable``"""


class PeerUnavailable(PeerError):
    """``peer_unavailable``"""


class PeerTimeout(PeerError):
    """``peer_timeout``"""


class HopLimit(PeerError):
    """``hop_limit``"""


class ForgedOrigin(PeerError):
    """``forged_origin``"""


class ServerBusy(ServerError):
    """``server_busy``"""


class SlowConsumer(ServerError):
    """``slow_consumer``"""


class ShuttingDown(SessionEnded):
    """``shutting_down``"""


class SessionRevoked(SessionEnded):
    """``session_revoked``"""


class Kicked(SessionEnded):
    """``kicked``"""


class TokenLoginsOff(TokenError):
    """``token_logins_off``"""


class TokenMalformed(TokenError):
    """``token_malformed``"""


class TokenUnknownKey(TokenError):
    """``token_unknown_key``"""


class TokenBadSignature(TokenError):
    """``token_bad_signature``"""


class TokenExpired(TokenError):
    """``token_expired``"""


class TokenNotYetValid(TokenError):
    """``token_not_yet_valid``"""


class TokenWrongAudience(TokenError):
    """``token_wrong_audience``"""


class TokenWrongIssuer(TokenError):
    """``token_wrong_issuer``"""


class ResumeExpired(ResumeError):
    """``resume_expired``"""


class ResumeRefused(ResumeError):
    """``resume_refused``"""


class SessionExpired(SessionEnded):
    """``session_expired``"""


class Redirected(SessionEnded):
    """``redirected``: a handler redirected the client while this request was in flight, and it
    was not answered (the handler may or may not have acted on it)."""


class Forbidden(MessageError):
    """``forbidden``: the server's rules keep this message out (a type's allow/deny, a group not
    open to joining, presence that is not visible)."""


class LimitReached(MessageError):
    """``limit_reached``: a bound of presence or groups would be passed; the text says which."""


class QueueFull(MessageError):
    """``queue_full``: a stored push was refused, the user's queue or the delivery store is full."""


class StoreFailed(ServerError):
    """``store_failed``: the delivery store could not write (or the server keeps none)."""


class DialRefused(MessageError):
    """``dial_refused``: the user dialled refused the stream (bester.refuse)."""


class DialOffline(MessageError):
    """``dial_offline``: the user dialled has no connection here that takes streams."""


class DialTimeout(MessageError):
    """``dial_timeout``: no connection of the user dialled answered in time."""


class DialAnswered(MessageError):
    """``dial_answered``: (an end) another connection of the same user answered the dial."""


class UnknownStream(MessageError):
    """``unknown_stream``: no stream or dial of this connection has that id."""


class StreamCreditExceeded(MessageError):
    """``stream_credit_exceeded``: (an end) the writer sent past the credit its reader granted."""


class StreamClosed(MessageError):
    """``stream_closed``: (an end) the other side closed, or broke the stream's flow control."""


class InternalError(ServerError):
    """``internal_error``"""


class RedirectRefused(ClientError):
    """``redirect_refused``"""


class TooManyRedirects(ClientError):
    """``too_many_redirects``"""


class ProtocolError(ClientError):
    """``protocol_error``"""


#: code -> exception class, one class per code of :class:`ErrorCode`.
ERRORS: Dict[str, Type[BesterError]] = {
    "timeout": Timeout,
    "connection_lost": ConnectionLost,
    "closed": Closed,
    "frame_too_large": FrameTooLarge,
    "invalid_utf8": InvalidUtf8,
    "invalid_json": InvalidJson,
    "invalid_message": InvalidMessage,
    "unknown_scope": UnknownScope,
    "not_identified": NotIdentified,
    "already_identified": AlreadyIdentified,
    "bad_identify_type": BadIdentifyType,
    "auth_failed": AuthFailed,
    "identify_timeout": IdentifyTimeout,
    "idle_timeout": IdleTimeout,
    "rate_limited": RateLimited,
    "too_many_connections": TooManyConnections,
    "unknown_type": UnknownType,
    "reserved_type": ReservedType,
    "handler_not_running": HandlerNotRunning,
    "handler_unavailable": HandlerUnavailable,
    "handler_timeout": HandlerTimeout,
    "handler_busy": HandlerBusy,
    "handler_error": HandlerError,
    "bad_handler_reply": BadHandlerReply,
    "handler_loop": HandlerLoop,
    "chain_too_deep": ChainTooDeep,
    "unknown_peer": UnknownPeer,
    "peer_unreachable": PeerUnreachable,
    "peer_unavailable": PeerUnavailable,
    "peer_timeout": PeerTimeout,
    "hop_limit": HopLimit,
    "forged_origin": ForgedOrigin,
    "server_busy": ServerBusy,
    "slow_consumer": SlowConsumer,
    "shutting_down": ShuttingDown,
    "session_revoked": SessionRevoked,
    "kicked": Kicked,
    "token_logins_off": TokenLoginsOff,
    "token_malformed": TokenMalformed,
    "token_unknown_key": TokenUnknownKey,
    "token_bad_signature": TokenBadSignature,
    "token_expired": TokenExpired,
    "token_not_yet_valid": TokenNotYetValid,
    "token_wrong_audience": TokenWrongAudience,
    "token_wrong_issuer": TokenWrongIssuer,
    "resume_expired": ResumeExpired,
    "resume_refused": ResumeRefused,
    "session_expired": SessionExpired,
    "redirected": Redirected,
    "forbidden": Forbidden,
    "limit_reached": LimitReached,
    "queue_full": QueueFull,
    "store_failed": StoreFailed,
    "dial_refused": DialRefused,
    "dial_offline": DialOffline,
    "dial_timeout": DialTimeout,
    "dial_answered": DialAnswered,
    "unknown_stream": UnknownStream,
    "stream_credit_exceeded": StreamCreditExceeded,
    "stream_closed": StreamClosed,
    "internal_error": InternalError,
    "redirect_refused": RedirectRefused,
    "too_many_redirects": TooManyRedirects,
    "protocol_error": ProtocolError,
}

# Closing errors: after one of these the server closes the connection, and logging in again
# with the same credentials would be refused again (so the client does not reconnect).
FATAL_LOGIN = frozenset(
    c.value
    for c in ErrorCode
    if c.value.startswith(("token_", "resume_"))
    or c.value in ("auth_failed", "rate_limited", "bad_identify_type", "not_identified")
)
# The server ended the session for good: reconnecting would undo what an administrator did.
FINAL = frozenset({"session_revoked", "kicked", "session_expired"})


def error_for(code: str, text: str, frame: Optional[Dict[str, Any]] = None) -> BesterError:
    """The typed exception for an error code (a handler's own code: :class:`BesterError`)."""
    return ERRORS.get(code, BesterError)(code, text, frame)


def from_frame(frame: Dict[str, Any]) -> BesterError:
    """The exception for an error frame ``{"header":{"status":"error",..},"data":{"error","code"}}``."""
    data = frame.get("data")
    if isinstance(data, dict):
        return error_for(str(data.get("code", "protocol_error")), str(data.get("error", "")), frame)
    return error_for("protocol_error", f"an error frame without error data: {frame!r:.200}", frame)
