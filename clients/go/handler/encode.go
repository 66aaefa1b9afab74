package handler

// Answer frames written by hand, byte for byte what encoding/json writes for answerFrame:
// the envelope is appended directly; data the request brought (r.Data returned unchanged, in
// compact form) is spliced in as it is, since the scanner has already checked it; data the
// handler built goes through encoding/json (SetEscapeHTML(false), as EncodeFrame). Whenever
// something falls outside that (a string that would need escaping, an encoding error, a frame
// over the limit), the whole answer takes the old path, encodeAll, which gives its errors.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"sync"

	"besterd.dev/bester"
	"besterd.dev/bester/internal/scan"
)

// encodeAnswer is the frames of a (non-nil) answer to r, ready to write.
func encodeAnswer(a Answer, r *Request) ([]byte, error) {
	if out, ok := appendAnswer(make([]byte, 0, 96+len(r.Token)+len(r.Type)+len(r.Data)), a, r); ok {
		return out, nil
	}
	return encodeAll(a.frames(r))
}

func appendAnswer(dst []byte, a Answer, r *Request) ([]byte, bool) {
	switch a := a.(type) {
	case single:
		typ := a.typ
		if typ == "" {
			typ = r.Type
		}
		return appendFrame(dst, r, a.status, a.command, a.commandData, r.Token, "", typ, a.data)
	case push:
		return appendFrame(dst, r, "ok", a.command, nonNil(a.targets), "", a.id, a.typ, a.data)
	case many:
		for _, x := range a {
			if x == nil {
				continue
			}
			var ok bool
			if dst, ok = appendAnswer(dst, x, r); !ok {
				return nil, false
			}
		}
		return dst, true
	}
	return nil, false
}

func appendString(dst []byte, s string) ([]byte, bool) {
	if !scan.Writable(s) {
		return nil, false
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"'), true
}

// appendFrame appends one length-prefixed answerFrame.
func appendFrame(dst []byte, r *Request, status, command string, commandData any, request, id, typ string, data any) ([]byte, bool) {
	var ok bool
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = append(dst, `{"header":{"status":`...)
	if dst, ok = appendString(dst, status); !ok {
		return nil, false
	}
	dst = append(dst, `,"command":`...)
	if dst, ok = appendString(dst, command); !ok {
		return nil, false
	}
	switch cd := commandData.(type) {
	case nil:
	case string:
		dst = append(dst, `,"commandData":`...)
		if dst, ok = appendString(dst, cd); !ok {
			return nil, false
		}
	case []string:
		if cd == nil {
			return nil, false
		}
		dst = append(dst, `,"commandData":[`...)
		for i, s := range cd {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, ok = appendString(dst, s); !ok {
				return nil, false
			}
		}
		dst = append(dst, ']')
	default:
		return nil, false
	}
	if request != "" {
		dst = append(dst, `,"request":`...)
		if dst, ok = appendString(dst, request); !ok {
			return nil, false
		}
	}
	if id != "" {
		dst = append(dst, `,"id":`...)
		if dst, ok = appendString(dst, id); !ok {
			return nil, false
		}
	}
	dst = append(dst, `},"payload":{"type":`...)
	if dst, ok = appendString(dst, typ); !ok {
		return nil, false
	}
	dst = append(dst, `,"data":`...)
	if dst, ok = appendData(dst, r, dataValue(data)); !ok {
		return nil, false
	}
	dst = append(dst, "}}"...)
	n := len(dst) - start - 4
	if n > bester.MaxFrame {
		return nil, false
	}
	binary.LittleEndian.PutUint32(dst[start:], uint32(n))
	return dst, true
}

// appendData appends data: spliced if it is the request's own compact data, else encoded.
func appendData(dst []byte, r *Request, data any) ([]byte, bool) {
	switch d := data.(type) {
	case nil:
		return append(dst, "null"...), true
	case json.RawMessage:
		if r.compact && len(d) == len(r.Data) && &d[0] == &r.Data[0] {
			return append(dst, d...), true
		}
	}
	e := encoders.Get().(*dataEncoder)
	defer encoders.Put(e)
	e.buf.Reset()
	if e.enc.Encode(data) != nil {
		return nil, false
	}
	b := e.buf.Bytes()
	dst = append(dst, b[:len(b)-1]...) // Encode's trailing newline
	if e.buf.Cap() > 64<<10 {          // do not keep a large buffer after a large answer
		e.buf = bytes.Buffer{}
	}
	return dst, true
}

type dataEncoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

func newDataEncoder(buf *bytes.Buffer) *json.Encoder {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	return enc
}

var encoders = sync.Pool{New: func() any {
	e := &dataEncoder{}
	e.enc = newDataEncoder(&e.buf)
	return e
}}
