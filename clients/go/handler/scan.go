package handler

// The fast lane for requests: one pass over the frame with the strict cursor of
// internal/scan, for the frames besterd sends most (kind "request" or "login", every envelope
// string without escapes, no field repeated). Anything else is read by decodeFull with
// encoding/json, as it always was, so errors and oddities keep their behaviour.

import (
	"encoding/json"
	"errors"

	"besterd.dev/bester"
	"besterd.dev/bester/internal/scan"
)

var (
	topNames     = []string{"header", "payload", "data"}
	headerNames  = []string{"kind", "request", "scope", "from", "via", "status"}
	payloadNames = []string{"type", "data"}
)

// reqScan is scanRequest's state (methods, not closures, so that it stays on the stack).
type reqScan struct {
	c                       scan.Cursor
	kind, token, scope, typ []byte
	haveToken               bool
	from                    scan.From
	via                     []string
	dataStart, dataEnd      int
	dataSpaces              int
	seen                    uint16
}

// The objects of a request's envelope.
const (
	inTop = iota
	inHeader
	inPayload
)

var levelNames = [...][]string{inTop: topNames, inHeader: headerNames, inPayload: payloadNames}

func (q *reqScan) once(bit uint16) bool {
	if q.seen&bit != 0 {
		return false
	}
	q.seen |= bit
	return true
}

func (q *reqScan) plain(dst *[]byte) bool {
	v, ok := q.c.Plain()
	*dst = v
	return ok
}

// object walks one object of the envelope (after whitespace).
func (q *reqScan) object(level int) bool {
	return q.c.Members(func(key []byte) bool { return q.member(level, key) })
}

// member reads the value of key in the object at level.
func (q *reqScan) member(level int, key []byte) bool {
	c := &q.c
	switch level {
	case inTop:
		switch string(key) {
		case "header":
			return q.once(1<<7) && q.object(inHeader)
		case "payload":
			return q.once(1<<8) && q.object(inPayload)
		case "data": // not a request's; checked and skipped
			_, _, ok := c.Value()
			return q.once(1<<9) && ok
		}
	case inHeader:
		switch string(key) {
		case "kind":
			return q.once(1<<0) && q.plain(&q.kind)
		case "request":
			q.haveToken = true
			return q.once(1<<1) && q.plain(&q.token)
		case "scope":
			return q.once(1<<2) && q.plain(&q.scope)
		case "from":
			return q.once(1<<3) && c.ReadFrom(&q.from)
		case "via":
			return q.once(1<<4) && q.readVia()
		case "status": // only reports have one; they take the full path
			return false
		}
	case inPayload:
		switch string(key) {
		case "type":
			return q.once(1<<5) && q.plain(&q.typ)
		case "data":
			c.Peek()
			before := c.Spaces
			s, e, ok := c.Value()
			q.dataStart, q.dataEnd, q.dataSpaces = s, e, c.Spaces-before
			return q.once(1<<6) && ok
		}
	}
	return c.SkipUnknown(key, levelNames[level])
}

func (q *reqScan) readVia() bool {
	c := &q.c
	if !c.Eat('[') {
		return false
	}
	q.via = []string{}
	if c.Peek() == ']' {
		c.Pos++
		return true
	}
	for {
		v, ok := c.Plain()
		if !ok {
			return false
		}
		q.via = append(q.via, string(v))
		more, ok := c.More(']')
		if !ok {
			return false
		}
		if !more {
			return true
		}
	}
}

// scanRequest reads a request or login frame (valid UTF-8) in one pass; ok=false means "ask
// decodeFull", never that the frame is wrong.
func scanRequest(body []byte) (req *Request, ok bool) {
	q := reqScan{c: scan.Cursor{B: body}, dataSpaces: -1}
	if !q.object(inTop) || !q.c.End() || !q.haveToken {
		return nil, false
	}
	var k string
	switch string(q.kind) {
	case "request":
		k = "request"
	case "login":
		k = "login"
	default:
		return nil, false
	}
	f := &q.from
	req = &Request{Kind: k, Token: string(q.token), Type: string(q.typ), Via: q.via, Frame: body,
		From: bester.From{User: f.User, Server: f.Server, Handler: f.Handler, Info: f.Info,
			Address: f.Address, Listener: f.Listener, Transport: f.Transport}}
	switch string(q.scope) {
	case "client":
		req.Scope = "client"
	case "server":
		req.Scope = "server"
	default:
		req.Scope = string(q.scope)
	}
	if q.dataSpaces < 0 {
		req.Data = json.RawMessage("null")
	} else {
		req.Data = body[q.dataStart:q.dataEnd:q.dataEnd]
		req.compact = q.dataSpaces == 0
	}
	return req, true
}

type inRequest struct {
	Header struct {
		Kind    string      `json:"kind"`
		Request *string     `json:"request"`
		Scope   string      `json:"scope"`
		From    bester.From `json:"from"`
		Via     []string    `json:"via"`
		Status  string      `json:"status"`
	} `json:"header"`
	Payload struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	} `json:"payload"`
	Data json.RawMessage `json:"data"`
}

// What decodeFull says about a frame that is not a request to serve.
type verdict int

const (
	serveIt verdict = iota
	skipIt          // logged and ignored
	fatal           // ends Serve with err
)

// decodeFull is the full path: encoding/json over the whole frame (valid UTF-8).
func decodeFull(body []byte, logf func(string, ...any)) (*Request, verdict, error) {
	var in inRequest
	if err := json.Unmarshal(body, &in); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) || len(body) == 0 {
			return nil, fatal, &bester.Error{Code: bester.CodeInvalidJSON, Text: "frame body is not JSON: " + err.Error()}
		}
		logf("ignoring a frame that is not a request: %.200s", body)
		return nil, skipIt, nil
	}
	kind := in.Header.Kind
	if kind == "report" {
		if in.Header.Status != "ok" {
			logf("report: %.500s", body)
		}
		return nil, skipIt, nil
	}
	if (kind != "request" && kind != "login") || in.Header.Request == nil {
		logf("ignoring a frame that is neither request, login nor report: %.200s", body)
		return nil, skipIt, nil
	}
	data := in.Payload.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	return &Request{Kind: kind, Token: *in.Header.Request, Type: in.Payload.Type, Data: data,
		Scope: in.Header.Scope, From: in.Header.From, Via: in.Header.Via, Frame: body}, serveIt, nil
}
