//! Errors: every refusal a server gives is [`Error::Refused`] with its code (one of [`codes`],
//! or a handler's own) and its text; I/O and protocol failures are the other variants.

use std::fmt;
use std::io;

use serde_json::Value;

/// What went wrong.
#[derive(Debug)]
pub enum Error {
    /// The server (or a handler) answered with an error: its `code` and `text`.
    Refused {
        /// The code (see [`codes`]; handlers may use their own).
        code: String,
        /// The text, for people.
        text: String,
    },
    /// The connection failed or timed out.
    Io(io::Error),
    /// The server sent something this library cannot read, or broke the protocol.
    Protocol(String),
}

impl Error {
    /// The code of a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The error of an error frame (`{"header":{"status":"error"},"data":{"code","error"}}`),
    /// or `None` for any other frame.
    pub fn of_frame(frame: &Value) -> Option<Error> {
        if frame["header"]["status"] != "error" {
            return None;
        }
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Some(Error::Refused {
            code: text(&frame["data"]["code"]),
            text: text(&frame["data"]["error"]),
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Refused { code, text } => write!(f, "{code}: {text}"),
            Error::Io(e) => write!(f, "{e}"),
            Error::Protocol(text) => write!(f, "protocol error: {text}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// The server's error codes (protocol/PROTOCOL.md §8).
pub mod codes {
    /// `frame_too_large`.
    pub const FRAME_TOO_LARGE: &str = "frame_too_large";
    /// `invalid_utf8`.
    pub const INVALID_UTF8: &str = "invalid_utf8";
    /// `invalid_json`.
    pub const INVALID_JSON: &str = "invalid_json";
    /// `invalid_message`.
    pub const INVALID_MESSAGE: &str = "invalid_message";
    /// `unknown_scope`.
    pub const UNKNOWN_SCOPE: &str = "unknown_scope";
    /// `not_identified`.
    pub const NOT_IDENTIFIED: &str = "not_identified";
    /// `already_identified`.
    pub const ALREADY_IDENTIFIED: &str = "already_identified";
    /// `bad_identify_type`.
    pub const BAD_IDENTIFY_TYPE: &str = "bad_identify_type";
    /// `auth_failed`.
    pub const AUTH_FAILED: &str = "auth_failed";
    /// `identify_timeout`.
    pub const IDENTIFY_TIMEOUT: &str = "identify_timeout";
    /// `unknown_type`.
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    /// `reserved_type`.
    pub const RESERVED_TYPE: &str = "reserved_type";
    /// `handler_not_running`.
    pub const HANDLER_NOT_RUNNING: &str = "handler_not_running";
    /// `handler_unavailable`.
    pub const HANDLER_UNAVAILABLE: &str = "handler_unavailable";
    /// `handler_timeout`.
    pub const HANDLER_TIMEOUT: &str = "handler_timeout";
    /// `handler_busy`.
    pub const HANDLER_BUSY: &str = "handler_busy";
    /// `handler_error`.
    pub const HANDLER_ERROR: &str = "handler_error";
    /// `bad_handler_reply`.
    pub const BAD_HANDLER_REPLY: &str = "bad_handler_reply";
    /// `handler_loop`.
    pub const HANDLER_LOOP: &str = "handler_loop";
    /// `chain_too_deep`.
    pub const CHAIN_TOO_DEEP: &str = "chain_too_deep";
    /// `unknown_peer`.
    pub const UNKNOWN_PEER: &str = "unknown_peer";
    /// `peer_unreachable`.
    pub const PEER_UNREACHABLE: &str = "peer_unreachable";
    /// `peer_unavailable`.
    pub const PEER_UNAVAILABLE: &str = "peer_unavailable";
    /// `peer_timeout`.
    pub const PEER_TIMEOUT: &str = "peer_timeout";
    /// `hop_limit`.
    pub const HOP_LIMIT: &str = "hop_limit";
    /// `forged_origin`.
    pub const FORGED_ORIGIN: &str = "forged_origin";
    /// `server_busy`.
    pub const SERVER_BUSY: &str = "server_busy";
    /// `slow_consumer`.
    pub const SLOW_CONSUMER: &str = "slow_consumer";
    /// `too_many_connections`.
    pub const TOO_MANY_CONNECTIONS: &str = "too_many_connections";
    /// `rate_limited`.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// `idle_timeout`.
    pub const IDLE_TIMEOUT: &str = "idle_timeout";
    /// `shutting_down`.
    pub const SHUTTING_DOWN: &str = "shutting_down";
    /// `session_revoked`.
    pub const SESSION_REVOKED: &str = "session_revoked";
    /// `kicked`.
    pub const KICKED: &str = "kicked";
    /// `token_logins_off`.
    pub const TOKEN_LOGINS_OFF: &str = "token_logins_off";
    /// `token_malformed`.
    pub const TOKEN_MALFORMED: &str = "token_malformed";
    /// `token_unknown_key`.
    pub const TOKEN_UNKNOWN_KEY: &str = "token_unknown_key";
    /// `token_bad_signature`.
    pub const TOKEN_BAD_SIGNATURE: &str = "token_bad_signature";
    /// `token_expired`.
    pub const TOKEN_EXPIRED: &str = "token_expired";
    /// `token_not_yet_valid`.
    pub const TOKEN_NOT_YET_VALID: &str = "token_not_yet_valid";
    /// `token_wrong_audience`.
    pub const TOKEN_WRONG_AUDIENCE: &str = "token_wrong_audience";
    /// `token_wrong_issuer`.
    pub const TOKEN_WRONG_ISSUER: &str = "token_wrong_issuer";
    /// `resume_expired`.
    pub const RESUME_EXPIRED: &str = "resume_expired";
    /// `resume_refused`.
    pub const RESUME_REFUSED: &str = "resume_refused";
    /// `session_expired`.
    pub const SESSION_EXPIRED: &str = "session_expired";
    /// `redirected`.
    pub const REDIRECTED: &str = "redirected";
    /// `internal_error`.
    pub const INTERNAL_ERROR: &str = "internal_error";
    /// `forbidden`.
    pub const FORBIDDEN: &str = "forbidden";
    /// `limit_reached`.
    pub const LIMIT_REACHED: &str = "limit_reached";
    /// `queue_full`: a stored push was refused, the user's queue or the store is full.
    pub const QUEUE_FULL: &str = "queue_full";
    /// `store_failed`: the delivery store could not write, or there is none.
    pub const STORE_FAILED: &str = "store_failed";
    /// `dial_refused`: the user dialled refused the stream (bester.refuse).
    pub const DIAL_REFUSED: &str = "dial_refused";
    /// `dial_offline`: the user dialled has no connection here that takes streams.
    pub const DIAL_OFFLINE: &str = "dial_offline";
    /// `dial_timeout`: no connection of the user dialled answered in time.
    pub const DIAL_TIMEOUT: &str = "dial_timeout";
    /// `dial_answered`: (an end) another connection of the same user answered the dial.
    pub const DIAL_ANSWERED: &str = "dial_answered";
    /// `unknown_stream`: no stream or dial of this connection has that id.
    pub const UNKNOWN_STREAM: &str = "unknown_stream";
    /// `stream_credit_exceeded`: (an end) the writer sent past the credit its reader granted.
    pub const STREAM_CREDIT_EXCEEDED: &str = "stream_credit_exceeded";
    /// `stream_closed`: (an end) the other side closed, or broke the stream's flow control.
    pub const STREAM_CLOSED: &str = "stream_closed";

    /// Every code the server gives, in the order of its definition.
    pub const ALL: &[&str] = &[
        FRAME_TOO_LARGE,
        INVALID_UTF8,
        INVALID_JSON,
        INVALID_MESSAGE,
        UNKNOWN_SCOPE,
        NOT_IDENTIFIED,
        ALREADY_IDENTIFIED,
        BAD_IDENTIFY_TYPE,
        AUTH_FAILED,
        IDENTIFY_TIMEOUT,
        UNKNOWN_TYPE,
        RESERVED_TYPE,
        HANDLER_NOT_RUNNING,
        HANDLER_UNAVAILABLE,
        HANDLER_TIMEOUT,
        HANDLER_BUSY,
        HANDLER_ERROR,
        BAD_HANDLER_REPLY,
        HANDLER_LOOP,
        CHAIN_TOO_DEEP,
        UNKNOWN_PEER,
        PEER_UNREACHABLE,
        PEER_UNAVAILABLE,
        PEER_TIMEOUT,
        HOP_LIMIT,
        FORGED_ORIGIN,
        SERVER_BUSY,
        SLOW_CONSUMER,
        TOO_MANY_CONNECTIONS,
        RATE_LIMITED,
        IDLE_TIMEOUT,
        SHUTTING_DOWN,
        SESSION_REVOKED,
        KICKED,
        TOKEN_LOGINS_OFF,
        TOKEN_MALFORMED,
        TOKEN_UNKNOWN_KEY,
        TOKEN_BAD_SIGNATURE,
        TOKEN_EXPIRED,
        TOKEN_NOT_YET_VALID,
        TOKEN_WRONG_AUDIENCE,
        TOKEN_WRONG_ISSUER,
        RESUME_EXPIRED,
        RESUME_REFUSED,
        SESSION_EXPIRED,
        REDIRECTED,
        FORBIDDEN,
        LIMIT_REACHED,
        QUEUE_FULL,
        STORE_FAILED,
        DIAL_REFUSED,
        DIAL_OFFLINE,
        DIAL_TIMEOUT,
        DIAL_ANSWERED,
        UNKNOWN_STREAM,
        STREAM_CREDIT_EXCEEDED,
        STREAM_CLOSED,
        INTERNAL_ERROR,
    ];
}
