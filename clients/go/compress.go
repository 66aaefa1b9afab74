package bester

// Feature negotiation and compressed frames (PROTOCOL.md §1.2, §2 "Features and limits"): with
// WithCompression the client offers "compress" at every login; where the server accepts it (TCP
// and TLS, never WebSocket) a body whose first byte is 0x00 is raw DEFLATE, inflated here within
// the frame limit, and requests of CompressMin bytes or more go compressed when that makes them
// shorter — never a bester.* request, which carries passwords, tokens or other users'
// credentials (a secret compressed beside text an attacker chose leaks through the sizes).

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// CompressMin is the shortest body ever compressed (the server's own threshold).
const CompressMin = 256

// FeatureCompress is the feature name of compressed frames.
const FeatureCompress = "compress"

// Limits are the session's limits the identify reply names when features were offered (zero
// when it named none).
type Limits struct {
	MaxFrameBytes int64 `json:"max_frame_bytes"`
	MaxInFlight   int64 `json:"max_in_flight"`
	IdleTimeoutMs int64 `json:"idle_timeout_ms"`
}

// WithCompression offers the feature "compress" at every login.
func WithCompression() Option { return func(o *Options) { o.Compress = true } }

// Features are the features the server accepted at the last login (data.features).
func (c *Client) Features() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.features...)
}

// Limits are the session's limits named at the last login.
func (c *Client) Limits() Limits { c.mu.Lock(); defer c.mu.Unlock(); return c.limits }

// offer is what identify offers (nil: no features key at all, as a spec-v3 client sends).
func (o *Options) offer() []string {
	if o.Compress {
		return []string{FeatureCompress}
	}
	return nil
}

// negotiated reads a login reply's features and limits.
func negotiated(d map[string]json.RawMessage) (features []string, limits Limits) {
	json.Unmarshal(d["features"], &features)
	json.Unmarshal(d["limits"], &limits)
	return features, limits
}

func has(features []string, name string) bool {
	for _, f := range features {
		if f == name {
			return true
		}
	}
	return false
}

// carriesSecret: built-in types are never compressed.
func carriesSecret(typ string) bool { return strings.HasPrefix(typ, "bester.") }

// Deflate returns frame (length prefix and body) with its body compressed, or frame itself
// when that would not be shorter.
func Deflate(frame []byte) []byte {
	var buf bytes.Buffer
	buf.Write([]byte{0, 0, 0, 0, 0})
	w, _ := flate.NewWriter(&buf, flate.BestSpeed)
	w.Write(frame[4:])
	w.Close()
	out := buf.Bytes()
	if len(out) >= len(frame) {
		return frame
	}
	binary.LittleEndian.PutUint32(out, uint32(len(out)-4))
	return out
}

// Inflate returns the JSON of a compressed body (0x00, then raw DEFLATE): over max bytes
// inflated is frame_too_large (at most one byte past max is inflated), a body that is not one
// whole DEFLATE stream protocol_error.
func Inflate(body []byte, max int) ([]byte, error) {
	src := bytes.NewReader(body[1:])
	r := flate.NewReader(src)
	defer r.Close()
	out, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, &Error{Code: CodeProtocolError, Text: "compressed frame is not a valid DEFLATE stream: " + err.Error()}
	}
	if len(out) > max {
		return nil, &Error{Code: CodeFrameTooLarge, Text: fmt.Sprintf("compressed frame inflates to over the limit of %d bytes", max)}
	}
	if src.Len() != 0 {
		return nil, &Error{Code: CodeProtocolError, Text: "compressed frame is not a valid DEFLATE stream: bytes after its end"}
	}
	return out, nil
}

// open is a received body as JSON: inflated when compressed, refused when the session did not
// negotiate compression.
func (cn *conn) open(body []byte, max int) ([]byte, error) {
	if len(body) == 0 || body[0] != 0 {
		return body, nil
	}
	if !cn.compress {
		return nil, &Error{Code: CodeProtocolError, Text: `a compressed frame on a session that did not negotiate "compress"`}
	}
	cn.inflated.Add(1)
	return Inflate(body, max)
}

// pack is a request's frame as it is sent on this connection.
func (cn *conn) pack(frame []byte, typ string) []byte {
	if !cn.compress || carriesSecret(typ) || len(frame)-4 < CompressMin {
		return frame
	}
	out := Deflate(frame)
	if len(out) < len(frame) {
		cn.deflated.Add(1)
	}
	return out
}
