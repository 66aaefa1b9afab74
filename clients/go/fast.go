package bester

// The client's fast lane: replies and pushes read in one pass with the strict cursor of
// internal/scan (envelope strings without escapes, no field repeated, no servers map), and
// request frames written by hand. Whatever the lane declines takes the encoding/json path, as
// before, so errors and odd frames behave as they always did; tests compare both paths.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strconv"

	"besterd.dev/bester/internal/scan"
)

var (
	inTopNames    = []string{"header", "data"}
	inHeaderNames = []string{"status", "kind", "id", "type", "from", "delivered", "offline", "servers"}
)

// scanIn reads a frame from the server (valid UTF-8) in one pass; ok=false means "ask the
// full path", never that the frame is wrong.
func scanIn(body []byte) (f *inFrame, ok bool) {
	if len(body) == 0 || body[0] != '{' {
		return nil, false
	}
	c := scan.Cursor{B: body}
	f = &inFrame{raw: body}
	h := &f.Header
	var seen uint16
	once := func(bit uint16) bool {
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	}
	plain := func(dst *string) bool {
		v, ok := c.Plain()
		switch string(v) { // the usual values, without an allocation
		case "ok":
			*dst = "ok"
		case "error":
			*dst = "error"
		case "reply":
			*dst = "reply"
		case "push":
			*dst = "push"
		default:
			*dst = string(v)
		}
		return ok
	}
	header := func(key []byte) bool {
		switch string(key) {
		case "status":
			return once(1<<0) && plain(&h.Status)
		case "kind":
			return once(1<<1) && plain(&h.Kind)
		case "id":
			var id string
			h.ID = &id
			return once(1<<2) && plain(&id)
		case "type":
			return once(1<<3) && plain(&h.Type)
		case "from":
			var fr scan.From
			if !once(1<<4) || !c.ReadFrom(&fr) {
				return false
			}
			h.From = From{User: fr.User, Server: fr.Server, Handler: fr.Handler, Info: fr.Info,
				Address: fr.Address, Listener: fr.Listener, Transport: fr.Transport}
			return true
		case "delivered":
			return once(1<<5) && c.Strings(&h.Delivered)
		case "offline":
			return once(1<<6) && c.Strings(&h.Offline)
		case "servers", "msg", "time", "stored": // a map of results, a stored push: the full path
			return false
		}
		return c.SkipUnknown(key, inHeaderNames)
	}
	top := func(key []byte) bool {
		switch string(key) {
		case "header":
			return once(1<<7) && c.Members(header)
		case "data":
			if !once(1 << 8) {
				return false
			}
			s, e, ok := c.Value()
			f.Data = body[s:e:e]
			return ok
		}
		return c.SkipUnknown(key, inTopNames)
	}
	if !c.Members(top) || !c.End() {
		return nil, false
	}
	if len(f.Data) == 0 {
		f.Data = json.RawMessage("null")
	}
	return f, true
}

// requestFrame is the frame of a client request, byte for byte what EncodeFrame writes for
// outMessage: written by hand when typ needs no escaping, data is spliced as json.Marshal
// wrote it (compact already) or compacted from the caller's json.RawMessage.
func requestFrame(id uint64, typ string, data any) ([]byte, error) {
	if !scan.Writable(typ) {
		return slowRequestFrame(id, typ, data)
	}
	var d []byte
	raw, isRaw := data.(json.RawMessage)
	if data != nil && !isRaw {
		var err error
		if d, err = marshalData(data); err != nil {
			return nil, err
		}
	}
	out := make([]byte, 0, 64+len(typ)+len(d)+len(raw))
	out = append(out, 0, 0, 0, 0)
	out = append(out, `{"header":{"scope":"client","id":"`...)
	out = strconv.AppendUint(out, id, 10)
	out = append(out, `"},"payload":{"type":"`...)
	out = append(out, typ...)
	out = append(out, `","data":`...)
	switch {
	case data == nil:
		out = append(out, "null"...)
	case isRaw:
		b := bytes.NewBuffer(out)
		if json.Compact(b, raw) != nil {
			return nil, &Error{Code: CodeInvalidJSON, Text: "data is not JSON"}
		}
		out = b.Bytes()
	default:
		out = append(out, d...)
	}
	out = append(out, "}}"...)
	if len(out)-4 > MaxFrame {
		return slowRequestFrame(id, typ, data)
	}
	binary.LittleEndian.PutUint32(out, uint32(len(out)-4))
	return out, nil
}

// slowRequestFrame is requestFrame through encoding/json (and its errors).
func slowRequestFrame(id uint64, typ string, data any) ([]byte, error) {
	d, err := marshalData(data)
	if err != nil {
		return nil, err
	}
	var m outMessage
	m.Header.Scope, m.Header.ID = "client", strconv.FormatUint(id, 10)
	m.Payload.Type, m.Payload.Data = typ, d
	return EncodeFrame(&m, MaxFrame)
}
