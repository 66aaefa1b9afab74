package bester

// Every error code of PROTOCOL.md §8 (what the server answers).
const (
	CodeFrameTooLarge      = "frame_too_large"
	CodeInvalidUTF8        = "invalid_utf8"
	CodeInvalidJSON        = "invalid_json"
	CodeInvalidMessage     = "invalid_message"
	CodeUnknownScope       = "unknown_scope"
	CodeNotIdentified      = "not_identified"
	CodeAlreadyIdentified  = "already_identified"
	CodeBadIdentifyType    = "bad_identify_type"
	CodeAuthFailed         = "auth_failed"
	CodeIdentifyTimeout    = "identify_timeout"
	CodeIdleTimeout        = "idle_timeout"
	CodeRateLimited        = "rate_limited"
	CodeTooManyConnections = "too_many_connections"
	CodeUnknownType        = "unknown_type"
	CodeReservedType       = "reserved_type"
	CodeHandlerNotRunning  = "handler_not_running"
	CodeHandlerUnavailable = "handler_unavailable"
	CodeHandlerTimeout     = "handler_timeout"
	CodeHandlerBusy        = "handler_busy"
	CodeHandlerError       = "handler_error"
	CodeBadHandlerReply    = "bad_handler_reply"
	CodeHandlerLoop        = "handler_loop"
	CodeChainTooDeep       = "chain_too_deep"
	CodeUnknownPeer        = "unknown_peer"
	CodePeerUnreachable    = "peer_unreachable"
	CodePeerUnavailable    = "peer_unavailable"
	CodePeerTimeout        = "peer_timeout"
	CodeHopLimit           = "hop_limit"
	CodeForgedOrigin       = "forged_origin"
	CodeServerBusy         = "server_busy"
	CodeSlowConsumer       = "slow_consumer"
	CodeShuttingDown       = "shutting_down"
	CodeSessionRevoked     = "session_revoked"
	CodeKicked             = "kicked"
	CodeTokenLoginsOff     = "token_logins_off"
	CodeTokenMalformed     = "token_malformed"
	CodeTokenUnknownKey    = "token_unknown_key"
	CodeTokenBadSignature  = "token_bad_signature"
	CodeTokenExpired       = "token_expired"
	CodeTokenNotYetValid   = "token_not_yet_valid"
	CodeTokenWrongAudience = "token_wrong_audience"
	CodeTokenWrongIssuer   = "token_wrong_issuer"
	CodeResumeExpired      = "resume_expired"
	CodeResumeRefused      = "resume_refused"
	CodeSessionExpired     = "session_expired"
	// CodeRedirected: a handler redirected the client while this request was in flight.
	CodeRedirected    = "redirected"
	CodeInternalError = "internal_error"
	// CodeForbidden: the server's rules keep the message out (allow/deny, a group not open to
	// joining, presence that is not visible).
	CodeForbidden = "forbidden"
	// CodeLimitReached: a bound of presence or groups would be passed; the text says which.
	CodeLimitReached = "limit_reached"
	// CodeQueueFull: a stored push was refused, the user's queue is full (reported per user).
	CodeQueueFull = "queue_full"
	// CodeStoreFailed: the delivery store could not take a push (disk full, store behind).
	CodeStoreFailed = "store_failed"
	// CodeDialRefused: the user dialled refused the stream (bester.refuse).
	CodeDialRefused = "dial_refused"
	// CodeDialOffline: the user dialled has no connection here that takes streams.
	CodeDialOffline = "dial_offline"
	// CodeDialTimeout: no connection of the user dialled answered in time.
	CodeDialTimeout = "dial_timeout"
	// CodeDialAnswered: (an end) another connection of the same user answered the dial.
	CodeDialAnswered = "dial_answered"
	// CodeUnknownStream: no stream or dial of this connection has that id.
	CodeUnknownStream = "unknown_stream"
	// CodeStreamCreditExceeded: (an end) the writer sent past the credit its reader granted.
	CodeStreamCreditExceeded = "stream_credit_exceeded"
	// CodeStreamClosed: (an end) the other side closed, or broke the stream's flow control.
	CodeStreamClosed = "stream_closed"
)

// The library's own codes: failures the client sees without a server answer.
const (
	// CodeTimeout: no answer before the context ended (the request may still be handled).
	CodeTimeout = "timeout"
	// CodeConnectionLost: the connection went away with the request in flight (it may or may not have been handled).
	CodeConnectionLost = "connection_lost"
	// CodeClosed: the client was closed, or gave up reconnecting.
	CodeClosed = "closed"
	// CodeRedirectRefused: a redirect to a URL that does not parse, or from TLS to clear text.
	CodeRedirectRefused = "redirect_refused"
	// CodeTooManyRedirects: more than MaxRedirects redirects in a row.
	CodeTooManyRedirects = "too_many_redirects"
	// CodeProtocolError: the server sent something this library does not understand.
	CodeProtocolError = "protocol_error"
)

// ServerCodes lists every code the server may answer, in the order of PROTOCOL.md §8.
var ServerCodes = []string{CodeFrameTooLarge, CodeInvalidUTF8, CodeInvalidJSON, CodeInvalidMessage, CodeUnknownScope, CodeNotIdentified, CodeAlreadyIdentified, CodeBadIdentifyType, CodeAuthFailed, CodeIdentifyTimeout, CodeIdleTimeout, CodeRateLimited, CodeTooManyConnections, CodeUnknownType, CodeReservedType, CodeHandlerNotRunning, CodeHandlerUnavailable, CodeHandlerTimeout, CodeHandlerBusy, CodeHandlerError, CodeBadHandlerReply, CodeHandlerLoop, CodeChainTooDeep, CodeUnknownPeer, CodePeerUnreachable, CodePeerUnavailable, CodePeerTimeout, CodeHopLimit, CodeForgedOrigin, CodeServerBusy, CodeSlowConsumer, CodeShuttingDown, CodeSessionRevoked, CodeKicked, CodeTokenLoginsOff, CodeTokenMalformed, CodeTokenUnknownKey, CodeTokenBadSignature, CodeTokenExpired, CodeTokenNotYetValid, CodeTokenWrongAudience, CodeTokenWrongIssuer, CodeResumeExpired, CodeResumeRefused, CodeSessionExpired, CodeRedirected, CodeForbidden, CodeLimitReached, CodeQueueFull, CodeStoreFailed, CodeDialRefused, CodeDialOffline, CodeDialTimeout, CodeDialAnswered, CodeUnknownStream, CodeStreamCreditExceeded, CodeStreamClosed, CodeInternalError}
