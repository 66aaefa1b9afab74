//! The stable error codes a peer can see in `data.code`, and the error body they travel in.
//!
//! A code never changes meaning once published; `protocol/PROTOCOL.md` lists every one of them.

use std::fmt;

use serde::Serialize;

/// Every error a client, handler or peer server can be told about. Serialized in `snake_case`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The length prefix is over the connection's frame limit (the connection is closed).
    FrameTooLarge,
    /// The body is not valid UTF-8.
    InvalidUtf8,
    /// The body is not JSON (or is empty).
    InvalidJson,
    /// The JSON does not have the shape of a message (missing or unknown field, wrong type, not an object).
    InvalidMessage,
    /// `header.scope` names no scope this connection may use.
    UnknownScope,
    /// A message came before identify succeeded (the connection is closed).
    NotIdentified,
    /// A second identify on a connection that is already identified.
    AlreadyIdentified,
    /// Identify with a `type` this server does not accept.
    BadIdentifyType,
    /// Wrong username or password.
    AuthFailed,
    /// No identify within the identify timeout (the connection is closed).
    IdentifyTimeout,
    /// No handler is configured for `payload.type`.
    UnknownType,
    /// A built-in (`bester.*`) type used the wrong way.
    ReservedType,
    /// No process of the handler's type is connected (not started, restarting, or refusing to start).
    HandlerNotRunning,
    /// The handler went away with the request in flight.
    HandlerUnavailable,
    /// The handler did not answer within the request timeout.
    HandlerTimeout,
    /// The handler has too many requests in flight.
    HandlerBusy,
    /// The handler answered with status "error" without a well-formed error body.
    HandlerError,
    /// The handler's answer was malformed (bad command or commandData).
    BadHandlerReply,
    /// A `sendHandler` chain came back to a type it already passed through.
    HandlerLoop,
    /// A `sendHandler` chain is longer than the configured maximum.
    ChainTooDeep,
    /// `sendServers` named a server that is not a configured peer.
    UnknownPeer,
    /// The peer is configured but its link is down.
    PeerUnreachable,
    /// The link to the peer went down before it acknowledged the message.
    PeerUnavailable,
    /// The peer did not acknowledge within the request timeout.
    PeerTimeout,
    /// The message has crossed too many servers, or would go back where it came from.
    HopLimit,
    /// A peer sent a message claiming another server as its origin.
    ForgedOrigin,
    /// The server is too busy to take the request (e.g. the login queue is full).
    ServerBusy,
    /// The connection's outbound queue passed its limit (the connection is closed).
    SlowConsumer,
    /// Too many connections: in total, from this address, or for this user (the connection is closed).
    TooManyConnections,
    /// Too many failed logins for this user or from this address; try again later.
    RateLimited,
    /// Nothing received for the idle timeout (the connection is closed).
    IdleTimeout,
    /// The server is shutting down.
    ShuttingDown,
    /// The session's user was deleted, or its password changed elsewhere (the connection is closed).
    SessionRevoked,
    /// An administrator closed the connection (`besterd ctl kick`; the connection is closed).
    Kicked,
    /// A token login on a server without `[auth.jwt]` (the connection is closed).
    TokenLoginsOff,
    /// The token is not a JWT besterd can read: its shape, its algorithm (`none` among others) or its claims (the connection is closed).
    TokenMalformed,
    /// No configured key has the token's `kid` and algorithm (the connection is closed).
    TokenUnknownKey,
    /// The token's signature does not verify (the connection is closed).
    TokenBadSignature,
    /// The token's `exp` has passed (the connection is closed).
    TokenExpired,
    /// The token's `nbf` or `iat` is in the future (the connection is closed).
    TokenNotYetValid,
    /// The token's `aud` is not this server's audience (the connection is closed).
    TokenWrongAudience,
    /// The token's `iss` is not this server's issuer (the connection is closed).
    TokenWrongIssuer,
    /// The resume token has expired (the connection is closed).
    ResumeExpired,
    /// The resume token is refused: another server's key, malformed, its session logged out, or its user deleted or their password changed; the text says which (the connection is closed).
    ResumeRefused,
    /// The session's token expired and was not refreshed (the connection is closed).
    SessionExpired,
    /// A handler redirected the client elsewhere while this request was in flight; it was not
    /// answered (the connection closes after the redirect).
    Redirected,
    /// Not allowed: a type's `allow`/`deny` refuses the sender, a group is not open to
    /// `bester.join`, or presence the rule `[presence] visible` hides.
    Forbidden,
    /// A bound of presence or groups would be passed (subscriptions per connection, groups in
    /// total or per user, members per group); the text says which.
    LimitReached,
    /// A stored push was refused: the user's queue (`[delivery] max_per_user`,
    /// `max_bytes_per_user`) or the store (`max_disk_bytes`) is full; the text says which.
    QueueFull,
    /// The delivery store could not write (the disk is full, an I/O error) or is not kept on
    /// this server; the text says why.
    StoreFailed,
    /// `bester.dial`: the user asked refused the stream (`bester.refuse`).
    DialRefused,
    /// `bester.dial`: the user asked has no connection here that negotiated `stream`.
    DialOffline,
    /// `bester.dial`: no connection of the user asked answered in time.
    DialTimeout,
    /// An `incoming` was answered by another connection of the same user (an `end`).
    DialAnswered,
    /// A stream frame, `bester.accept` or `bester.refuse` names no stream of this connection.
    UnknownStream,
    /// A stream's writer sent past the credit its reader granted (an `end`, both sides).
    StreamCreditExceeded,
    /// The other side's connection closed (an `end`).
    StreamClosed,
    /// Something went wrong inside the server; the details are in its log.
    InternalError,
}

impl ErrorCode {
    /// Every code, in declaration order (`code as usize` is its position here).
    pub const ALL: [ErrorCode; 58] = [
        ErrorCode::FrameTooLarge,
        ErrorCode::InvalidUtf8,
        ErrorCode::InvalidJson,
        ErrorCode::InvalidMessage,
        ErrorCode::UnknownScope,
        ErrorCode::NotIdentified,
        ErrorCode::AlreadyIdentified,
        ErrorCode::BadIdentifyType,
        ErrorCode::AuthFailed,
        ErrorCode::IdentifyTimeout,
        ErrorCode::UnknownType,
        ErrorCode::ReservedType,
        ErrorCode::HandlerNotRunning,
        ErrorCode::HandlerUnavailable,
        ErrorCode::HandlerTimeout,
        ErrorCode::HandlerBusy,
        ErrorCode::HandlerError,
        ErrorCode::BadHandlerReply,
        ErrorCode::HandlerLoop,
        ErrorCode::ChainTooDeep,
        ErrorCode::UnknownPeer,
        ErrorCode::PeerUnreachable,
        ErrorCode::PeerUnavailable,
        ErrorCode::PeerTimeout,
        ErrorCode::HopLimit,
        ErrorCode::ForgedOrigin,
        ErrorCode::ServerBusy,
        ErrorCode::SlowConsumer,
        ErrorCode::TooManyConnections,
        ErrorCode::RateLimited,
        ErrorCode::IdleTimeout,
        ErrorCode::ShuttingDown,
        ErrorCode::SessionRevoked,
        ErrorCode::Kicked,
        ErrorCode::TokenLoginsOff,
        ErrorCode::TokenMalformed,
        ErrorCode::TokenUnknownKey,
        ErrorCode::TokenBadSignature,
        ErrorCode::TokenExpired,
        ErrorCode::TokenNotYetValid,
        ErrorCode::TokenWrongAudience,
        ErrorCode::TokenWrongIssuer,
        ErrorCode::ResumeExpired,
        ErrorCode::ResumeRefused,
        ErrorCode::SessionExpired,
        ErrorCode::Redirected,
        ErrorCode::Forbidden,
        ErrorCode::LimitReached,
        ErrorCode::QueueFull,
        ErrorCode::StoreFailed,
        ErrorCode::DialRefused,
        ErrorCode::DialOffline,
        ErrorCode::DialTimeout,
        ErrorCode::DialAnswered,
        ErrorCode::UnknownStream,
        ErrorCode::StreamCreditExceeded,
        ErrorCode::StreamClosed,
        ErrorCode::InternalError,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::InvalidUtf8 => "invalid_utf8",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnknownScope => "unknown_scope",
            ErrorCode::NotIdentified => "not_identified",
            ErrorCode::AlreadyIdentified => "already_identified",
            ErrorCode::BadIdentifyType => "bad_identify_type",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::IdentifyTimeout => "identify_timeout",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::ReservedType => "reserved_type",
            ErrorCode::HandlerNotRunning => "handler_not_running",
            ErrorCode::HandlerUnavailable => "handler_unavailable",
            ErrorCode::HandlerTimeout => "handler_timeout",
            ErrorCode::HandlerBusy => "handler_busy",
            ErrorCode::HandlerError => "handler_error",
            ErrorCode::BadHandlerReply => "bad_handler_reply",
            ErrorCode::HandlerLoop => "handler_loop",
            ErrorCode::ChainTooDeep => "chain_too_deep",
            ErrorCode::UnknownPeer => "unknown_peer",
            ErrorCode::PeerUnreachable => "peer_unreachable",
            ErrorCode::PeerUnavailable => "peer_unavailable",
            ErrorCode::PeerTimeout => "peer_timeout",
            ErrorCode::HopLimit => "hop_limit",
            ErrorCode::ForgedOrigin => "forged_origin",
            ErrorCode::ServerBusy => "server_busy",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::SessionRevoked => "session_revoked",
            ErrorCode::Kicked => "kicked",
            ErrorCode::TokenLoginsOff => "token_logins_off",
            ErrorCode::TokenMalformed => "token_malformed",
            ErrorCode::TokenUnknownKey => "token_unknown_key",
            ErrorCode::TokenBadSignature => "token_bad_signature",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenNotYetValid => "token_not_yet_valid",
            ErrorCode::TokenWrongAudience => "token_wrong_audience",
            ErrorCode::TokenWrongIssuer => "token_wrong_issuer",
            ErrorCode::ResumeExpired => "resume_expired",
            ErrorCode::ResumeRefused => "resume_refused",
            ErrorCode::SessionExpired => "session_expired",
            ErrorCode::Redirected => "redirected",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::StoreFailed => "store_failed",
            ErrorCode::DialRefused => "dial_refused",
            ErrorCode::DialOffline => "dial_offline",
            ErrorCode::DialTimeout => "dial_timeout",
            ErrorCode::DialAnswered => "dial_answered",
            ErrorCode::UnknownStream => "unknown_stream",
            ErrorCode::StreamCreditExceeded => "stream_credit_exceeded",
            ErrorCode::StreamClosed => "stream_closed",
            ErrorCode::InternalError => "internal_error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `data` of every error frame: `{"error":"<clear text>","code":"<stable code>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    /// A sentence for people.
    pub error: String,
    /// The stable code for programs.
    pub code: ErrorCode,
}

impl ErrorBody {
    /// An error body with this code and text.
    pub fn new(code: ErrorCode, error: impl Into<String>) -> Self {
        ErrorBody {
            error: error.into(),
            code,
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn all_lists_every_code_at_its_index() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*code as usize, i, "{code}");
        }
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
