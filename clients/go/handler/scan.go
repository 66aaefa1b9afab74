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

// scanRequest reads a request or login frame (valid UTF-8) in one pass; ok=false means "ask
// decodeFull", never that the frame is wrong.
func scanRequest(body []byte) (req *Request, ok bool) {
	c := scan.Cursor{B: body}
	var (
		kind, token, scope, typ []byte
		haveToken               bool
		from                    scan.From
		via                     []string
		dataStart, dataEnd      int
		dataSpaces              = -1
		seen                    uint16
	)
	once := func(bit uint16) bool {
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	}
	// members walks one object's members, calling field for each known key.
	members := func(names []string, field func(key string) bool) bool {
		if !c.Eat('{') {
			return false
		}
		if c.Peek() == '}' {
			c.Pos++
			return true
		}
		for {
			k, ok := c.Key()
			if !ok {
				return false
			}
			known := false
			for _, n := range names {
				if string(k) == n {
					known = true
					if !field(n) {
						return false
					}
					break
				}
			}
			if !known {
				if scan.Folds(k, names...) {
					return false
				}
				if _, _, ok := c.Value(); !ok {
					return false
				}
			}
			more, ok := c.More('}')
			if !ok {
				return false
			}
			if !more {
				return true
			}
		}
	}
	plain := func(dst *[]byte) bool {
		v, ok := c.Plain()
		*dst = v
		return ok
	}
	header := func(key string) bool {
		switch key {
		case "kind":
			return once(1<<0) && plain(&kind)
		case "request":
			haveToken = true
			return once(1<<1) && plain(&token)
		case "scope":
			return once(1<<2) && plain(&scope)
		case "from":
			return once(1<<3) && c.ReadFrom(&from)
		case "via":
			if !once(1<<4) || !c.Eat('[') {
				return false
			}
			via = []string{}
			if c.Peek() == ']' {
				c.Pos++
				return true
			}
			for {
				v, ok := c.Plain()
				if !ok {
					return false
				}
				via = append(via, string(v))
				more, ok := c.More(']')
				if !ok {
					return false
				}
				if !more {
					return true
				}
			}
		case "status": // only reports have one; they take the full path
			return false
		}
		return false
	}
	payload := func(key string) bool {
		switch key {
		case "type":
			return once(1<<5) && plain(&typ)
		case "data":
			if !once(1 << 6) {
				return false
			}
			c.Peek()
			before := c.Spaces
			s, e, ok := c.Value()
			dataStart, dataEnd, dataSpaces = s, e, c.Spaces-before
			return ok
		}
		return false
	}
	top := func(key string) bool {
		switch key {
		case "header":
			return once(1<<7) && members(headerNames, header)
		case "payload":
			return once(1<<8) && members(payloadNames, payload)
		case "data": // not a request's; validated and skipped
			if !once(1 << 9) {
				return false
			}
			_, _, ok := c.Value()
			return ok
		}
		return false
	}
	if !members(topNames, top) || !c.End() || !haveToken {
		return nil, false
	}
	var k string
	switch string(kind) {
	case "request":
		k = "request"
	case "login":
		k = "login"
	default:
		return nil, false
	}
	req = &Request{Kind: k, Token: string(token), Type: string(typ), Via: via, Frame: body,
		From: bester.From{User: from.User, Server: from.Server, Handler: from.Handler, Info: from.Info,
			Address: from.Address, Listener: from.Listener, Transport: from.Transport}}
	switch string(scope) {
	case "client":
		req.Scope = "client"
	case "server":
		req.Scope = "server"
	default:
		req.Scope = string(scope)
	}
	if dataSpaces < 0 {
		req.Data = json.RawMessage("null")
	} else {
		req.Data = body[dataStart:dataEnd:dataEnd]
		req.compact = dataSpaces == 0
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
