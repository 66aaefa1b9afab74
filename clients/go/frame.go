// Package bester is the Go client and handler library for besterd.
//
// A client dials a server by URL (bester://, bester+tls://, bester+ws://, bester+wss://), logs in by
// password, JWT, resume token or ed25519 key, and sends requests that are correlated by id and
// pipelined; pushes arrive on a channel. The client keeps the connection alive, reconnects with
// backoff (logging in again with the session's resume token) and follows redirects. Every error
// the server answers is an *Error carrying its code and text.
//
// A handler (package besterd.dev/bester/handler) is a function per request:
// handler.Serve(func(ctx, *handler.Request) handler.Answer) connects to
// $BESTER_SOCKET, serves requests concurrently and returns nil when besterd closes the socket.
//
// Only the standard library is used. The wire protocol is protocol/PROTOCOL.md.
package bester

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"unicode/utf8"
)

// MaxFrame is the largest frame body besterd accepts (1 MiB); frames to a client carry a
// header around data of at most that size, so the client reads up to MaxFrame+ClientSlack.
const MaxFrame = 1 << 20

// ClientSlack is what a reply's or push's header may add to data of MaxFrame bytes.
const ClientSlack = 64 << 10

// EncodeFrame marshals v as compact JSON and prefixes it with its length (u32, little-endian).
// A body over max bytes is refused with frame_too_large.
func EncodeFrame(v any, max int) ([]byte, error) {
	var buf bytes.Buffer
	buf.Write([]byte{0, 0, 0, 0})
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, &Error{Code: CodeInvalidMessage, Text: "cannot encode the frame: " + err.Error()}
	}
	out := buf.Bytes()
	out = out[:len(out)-1] // Encode's trailing newline
	n := len(out) - 4
	if n > max {
		return nil, &Error{Code: CodeFrameTooLarge, Text: fmt.Sprintf("frame of %d bytes is over the limit of %d bytes", n, max)}
	}
	binary.LittleEndian.PutUint32(out, uint32(n))
	return out, nil
}

// ReadFrame reads one frame body from r. The declared length is checked against max before
// the body is read or allocated. A clean EOF before the first byte is io.EOF; EOF inside a
// frame is io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader, max int) ([]byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(head[:])
	if uint64(n) > uint64(max) {
		return nil, &Error{Code: CodeFrameTooLarge, Text: fmt.Sprintf("frame of %d bytes is over the limit of %d bytes", n, max)}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return body, nil
}

// DecodeBody checks that a frame body is UTF-8 JSON holding one object and returns its
// top-level fields.
func DecodeBody(body []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(body) {
		return nil, &Error{Code: CodeInvalidUTF8, Text: "frame body is not valid UTF-8"}
	}
	if !json.Valid(body) {
		return nil, &Error{Code: CodeInvalidJSON, Text: "frame body is not JSON"}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return nil, &Error{Code: CodeInvalidMessage, Text: "a frame must be a JSON object"}
	}
	return obj, nil
}

// Decoder splits a byte stream into frame bodies: feed it bytes as they arrive, in any split.
// After an error the stream is unusable and every later Feed returns the same error.
type Decoder struct {
	Max int
	buf []byte
	err error
}

// Feed adds bytes and returns every whole frame body they complete.
func (d *Decoder) Feed(p []byte) ([][]byte, error) {
	if d.err != nil {
		return nil, d.err
	}
	d.buf = append(d.buf, p...)
	var out [][]byte
	for len(d.buf) >= 4 {
		n := binary.LittleEndian.Uint32(d.buf)
		if uint64(n) > uint64(d.Max) {
			d.err = &Error{Code: CodeFrameTooLarge, Text: fmt.Sprintf("frame of %d bytes is over the limit of %d bytes", n, d.Max)}
			d.buf = nil
			return out, d.err
		}
		if uint64(len(d.buf)) < 4+uint64(n) {
			break
		}
		body := make([]byte, n)
		copy(body, d.buf[4:4+n])
		d.buf = d.buf[4+n:]
		out = append(out, body)
	}
	if len(d.buf) == 0 {
		d.buf = nil
	}
	return out, nil
}

// Pending is the number of bytes of an incomplete frame (non-zero at EOF: a truncated frame).
func (d *Decoder) Pending() int { return len(d.buf) }
