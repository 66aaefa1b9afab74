package bester

import (
	"context"
	"encoding/json"
	"fmt"
)

// Error is an error answer of the server ({"error": Text, "code": Code}) or one of the
// library's own failures (CodeTimeout, CodeConnectionLost, ...). Compare Code with the Code*
// constants, or use errors.As:
//
//	var e *bester.Error
//	if errors.As(err, &e) && e.Code == bester.CodeUnknownType { ... }
type Error struct {
	Code string
	Text string
	// Data is the error frame's whole data (e.g. "status" of a handler_error), if any.
	Data json.RawMessage
	// cause is what a library error wraps (a context error, a network error).
	cause error
}

func (e *Error) Error() string { return e.Code + ": " + e.Text }

// Unwrap gives the context or network error behind a library error.
func (e *Error) Unwrap() error { return e.cause }

// Is makes errors.Is(err, &bester.Error{Code: c}) match on the code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Text == "" || t.Text == e.Text)
}

// fatalLogin: after one of these at login the same credentials would be refused again, so the
// client does not retry them.
func fatalLogin(code string) bool {
	switch code {
	case CodeAuthFailed, CodeRateLimited, CodeBadIdentifyType, CodeNotIdentified,
		CodeTooManyRedirects, CodeRedirectRefused, CodeProtocolError, CodeInvalidMessage:
		return true
	}
	return len(code) > 6 && (code[:6] == "token_" || code[:7] == "resume_")
}

// final: the server ended the session on purpose; reconnecting would undo it.
func final(code string) bool {
	return code == CodeSessionRevoked || code == CodeKicked || code == CodeSessionExpired
}

func errorFromData(data json.RawMessage) *Error {
	var d struct {
		Error *string `json:"error"`
		Code  *string `json:"code"`
	}
	if json.Unmarshal(data, &d) != nil || d.Code == nil {
		return &Error{Code: CodeProtocolError, Text: fmt.Sprintf("an error frame without error data: %.200s", data), Data: data}
	}
	text := ""
	if d.Error != nil {
		text = *d.Error
	}
	return &Error{Code: *d.Code, Text: text, Data: data}
}

func ctxError(ctx context.Context, what string) *Error {
	err := ctx.Err()
	if err == nil {
		err = context.DeadlineExceeded
	}
	return &Error{Code: CodeTimeout, Text: what + ": " + err.Error(), cause: err}
}
