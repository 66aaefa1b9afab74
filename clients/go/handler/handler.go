// Package handler is the handler half of the besterd Go library: a function per request.
//
//	handler.Serve(func(ctx context.Context, r *handler.Request) handler.Answer {
//		return handler.Reply(r.Data)
//	})
//
// Serve connects to $BESTER_SOCKET (being connected means ready), serves requests
// concurrently and returns nil when besterd closes the socket (exit 0 then).
package handler

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"unicode/utf8"

	"besterd.dev/bester"
)

// Request is one request (or, for an auth handler, one login) besterd sends a handler.
type Request struct {
	Kind  string // "request", or "login" for an auth handler ([auth] handler)
	Token string // header.request: echoed in the answer
	Type  string
	Data  json.RawMessage // "null" when absent; the frame's own bytes, not to be modified in place
	Scope string          // "client" or "server" (from a peer server)
	From  bester.From
	Via   []string        // the types a sendHandler chain came through
	Frame json.RawMessage // the whole frame

	compact bool // Data is the frame's own, checked and in compact form: spliced as it is
}

// IsLogin reports whether the request is a login for an auth handler to decide.
func (r *Request) IsLogin() bool { return r.Kind == "login" }

// Decode unmarshals the request's data into v.
func (r *Request) Decode(v any) error { return json.Unmarshal(r.Data, v) }

// Answer is what a handler function returns: Reply, Error, SendClients, SendServers,
// SendHandler, LoginOK, a Push, several of them (Answers), or nil to send nothing.
type Answer interface {
	frames(r *Request) []any
}

type answerHeader struct {
	Status      string `json:"status"`
	Command     string `json:"command,omitempty"`
	CommandData any    `json:"commandData,omitempty"`
	Request     string `json:"request,omitempty"`
	ID          string `json:"id,omitempty"`
}

type answerPayload struct {
	Type string `json:"type"`
	Data any    `json:"data"`
}

type answerFrame struct {
	Header  answerHeader  `json:"header"`
	Payload answerPayload `json:"payload"`
}

type single struct {
	status, command string
	commandData     any
	typ             string
	data            any
}

func (s single) frames(r *Request) []any {
	typ := s.typ
	if typ == "" {
		typ = r.Type
	}
	return []any{answerFrame{answerHeader{s.status, s.command, s.commandData, r.Token, ""}, answerPayload{typ, dataValue(s.data)}}}
}

func dataValue(d any) any {
	if raw, ok := d.(json.RawMessage); ok && len(raw) == 0 {
		return nil
	}
	return d
}

// Reply answers the sender with data, of the request's type.
func Reply(data any) Answer { return single{"ok", "reply", nil, "", data} }

// ReplyType answers the sender with data of another type.
func ReplyType(typ string, data any) Answer { return single{"ok", "reply", nil, typ, data} }

// Error answers the sender with an error: code is stable snake_case, text is for people.
func Error(code, text string) Answer {
	return single{"error", "reply", nil, "", map[string]string{"error": text, "code": code}}
}

// LoginOK accepts a login as user; info (a JSON object, at most 4 KiB, or nil) reaches every
// handler as header.from.info on the session's requests.
func LoginOK(user string, info any) Answer {
	d := map[string]any{"user": user}
	if info != nil {
		d["info"] = info
	}
	return Reply(d)
}

// SendClients delivers data (of the request's type) to these users of this server.
func SendClients(users []string, data any) Answer {
	return single{"ok", "sendClients", nonNil(users), "", data}
}

// SendServers delivers data (of the request's type) to these peer servers.
func SendServers(servers []string, data any) Answer {
	return single{"ok", "sendServers", nonNil(servers), "", data}
}

// SendHandler passes data on to the handler of typ; its answer is routed in turn.
func SendHandler(typ string, data any) Answer { return single{"ok", "sendHandler", typ, typ, data} }

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

type push struct {
	command string
	targets []string
	typ, id string
	data    any
}

func (p push) frames(*Request) []any {
	return []any{answerFrame{answerHeader{"ok", p.command, nonNil(p.targets), "", p.id}, answerPayload{p.typ, dataValue(p.data)}}}
}

// PushClients is a message to users that answers no request; besterd answers it with a
// report (id, if not empty, is echoed there).
func PushClients(users []string, typ string, data any, id string) Answer {
	return push{"sendClients", users, typ, id, data}
}

// PushServers is a message to peer servers that answers no request.
func PushServers(servers []string, typ string, data any, id string) Answer {
	return push{"sendServers", servers, typ, id, data}
}

type many []Answer

func (m many) frames(r *Request) []any {
	var out []any
	for _, a := range m {
		if a != nil {
			out = append(out, a.frames(r)...)
		}
	}
	return out
}

// Answers sends several frames for one request (e.g. a Reply and a PushClients), in order.
func Answers(a ...Answer) Answer { return many(a) }

// HandlerFunc serves one request. It runs on a goroutine of its own: requests are served
// concurrently. ctx ends when the broker closes the connection.
type HandlerFunc func(ctx context.Context, r *Request) Answer

// Handler is one connection to besterd as a handler.
type Handler struct {
	conn net.Conn
	w    bester.BatchWriter
	// MaxConcurrent bounds the requests served at once (default 1024, besterd's max_inflight);
	// past it, reading pauses.
	MaxConcurrent int
	// Logger gets error reports and failures (default: stderr with the type as prefix).
	Logger *log.Logger
}

// Connect connects to path (default $BESTER_SOCKET) as a handler.
func Connect(path string) (*Handler, error) {
	if path == "" {
		path = os.Getenv("BESTER_SOCKET")
	}
	if path == "" {
		return nil, errors.New("BESTER_SOCKET is not set: handlers are started by besterd")
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	return NewHandler(c), nil
}

// NewHandler serves an established connection (a socket besterd dialled, a test's pipe).
func NewHandler(c net.Conn) *Handler {
	name := os.Getenv("BESTER_TYPE")
	if name == "" {
		name = "handler"
	}
	return &Handler{conn: c, w: bester.BatchWriter{W: c}, MaxConcurrent: 1024, Logger: log.New(os.Stderr, fmt.Sprintf("%s[%d] ", name, os.Getpid()), 0)}
}

// Send writes an answer that belongs to no request (PushClients, PushServers).
func (h *Handler) Send(a Answer) error {
	buf, err := encodeAnswer(a, &Request{})
	if err != nil {
		return err
	}
	return h.write(buf)
}

func encodeAll(frames []any) ([]byte, error) {
	var buf []byte
	for _, f := range frames {
		b, err := bester.EncodeFrame(f, bester.MaxFrame)
		if err != nil {
			return nil, err
		}
		buf = append(buf, b...)
	}
	return buf, nil
}

func (h *Handler) write(buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	_, err := h.w.Write(buf) // answers finished at the same time share a write
	return err
}

// Serve reads requests until besterd closes the connection, calling handle for each on a
// goroutine of its own (a few that have finished wait for the next requests) and writing its
// answer. It returns nil at EOF or when ctx ends (once
// the requests being served are done), or the error that broke the connection (a frame over 1 MiB, bytes that are
// not frames). Reports are never answered; error reports are logged. A panic in handle answers
// its request with internal_error and serving goes on.
func (h *Handler) Serve(ctx context.Context, handle HandlerFunc) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	limit := h.MaxConcurrent
	if limit <= 0 {
		limit = 1
	}
	slots := make(chan struct{}, limit)
	var wg sync.WaitGroup
	defer wg.Wait()
	work := make(chan *Request)
	var idle atomic.Int32
	serveOne := func(req *Request) {
		defer func() { <-slots }()
		out := h.call(ctx, handle, req)
		var err error
		if len(slots) <= 1 && len(out) > 0 { // no other answer on its way: no yield first
			_, err = h.w.WriteSolo(out)
		} else {
			err = h.write(out)
		}
		if err != nil && ctx.Err() == nil {
			h.Logger.Printf("request %s: cannot write the answer: %v", req.Token, err)
		}
	}
	worker := func(req *Request) {
		for {
			serveOne(req)
			if idle.Add(1) > keepWorkers {
				idle.Add(-1)
				return
			}
			req = nextRequest(work, ctx.Done())
			idle.Add(-1)
			if req == nil {
				return
			}
		}
	}
	r := bufio.NewReaderSize(h.conn, 64<<10)
	go func() {
		<-ctx.Done()
		h.conn.Close()
	}()
	for {
		body, err := bester.ReadFrame(r, bester.MaxFrame)
		if err != nil {
			stopped := ctx.Err() != nil
			cancel()
			if errors.Is(err, io.ErrUnexpectedEOF) {
				h.Logger.Printf("besterd closed the socket in the middle of a frame")
			}
			if stopped || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
				return nil
			}
			return err
		}
		if !utf8.Valid(body) {
			cancel()
			return &bester.Error{Code: bester.CodeInvalidUTF8, Text: "frame body is not valid UTF-8"}
		}
		req, ok := scanRequest(body) // the fast lane; what it declines, encoding/json reads
		if !ok {
			var v verdict
			if req, v, err = decodeFull(body, h.Logger.Printf); v == fatal {
				cancel()
				return err
			} else if v == skipIt {
				continue
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		select {
		case work <- req: // a worker that is waiting takes it
		default:
			wg.Add(1)
			go func() {
				defer wg.Done()
				worker(req)
			}()
		}
	}
}

// keepWorkers is how many idle workers Serve keeps: a worker that finishes while as many are
// idle exits. Workers that stay keep the stack they grew, which a new goroutine per request
// would grow again each time.
const keepWorkers = 16

// nextRequest is where an idle worker waits (nil when done is closed). Its frame holds a pad
// of 1 KiB: the GC halves the stack of a goroutine that uses less than a quarter of it, and a
// worker waiting with a shallow stack would lose the stack its next request grows again.
//
//go:noinline
func nextRequest(work <-chan *Request, done <-chan struct{}) *Request {
	var pad [1 << 10]byte
	var req *Request
	select {
	case req = <-work:
	case <-done:
	}
	if req != nil && pad[len(req.Token)&(len(pad)-1)] != 0 { // keeps pad in the frame
		return nil
	}
	return req
}

func (h *Handler) call(ctx context.Context, handle HandlerFunc, req *Request) (out []byte) {
	defer func() {
		if p := recover(); p != nil {
			h.Logger.Printf("request %s failed: %v\n%s", req.Token, p, debug.Stack())
			out, _ = encodeAll(Error(bester.CodeInternalError, fmt.Sprintf("the %s handler failed", req.Type)).frames(req))
		}
	}()
	a := handle(ctx, req)
	if a == nil {
		return nil
	}
	out, err := encodeAnswer(a, req)
	if err != nil { // an answer that cannot be encoded (or too large) becomes internal_error
		h.Logger.Printf("request %s: its answer cannot be sent: %v", req.Token, err)
		code := bester.CodeInternalError
		var e *bester.Error
		if errors.As(err, &e) {
			code = e.Code
		}
		out, _ = encodeAll(Error(bester.CodeInternalError, fmt.Sprintf("the %s handler's answer cannot be sent: %s", req.Type, code)).frames(req))
	}
	return out
}

// Serve connects to $BESTER_SOCKET and serves handle until besterd closes the socket, then
// returns nil (exit 0 then: besterd restarts handlers itself).
func Serve(handle HandlerFunc) error {
	h, err := Connect("")
	if err != nil {
		return err
	}
	return h.Serve(context.Background(), handle)
}

// Listen serves a type configured with connect = "/path" (besterd dials the handler): it
// listens on $BESTER_SOCKET (the connect path; a stale socket left there is replaced, anything
// else is an error) and serves every connection besterd makes, each on its own goroutine. It
// returns only if the listener fails.
func Listen(handle HandlerFunc) error {
	path := os.Getenv("BESTER_SOCKET")
	if path == "" {
		return errors.New("BESTER_SOCKET is not set: handlers are started by besterd")
	}
	return ListenOn(context.Background(), path, handle)
}

// ListenOn is Listen on path, until ctx ends (then it returns nil).
func ListenOn(ctx context.Context, path string, handle HandlerFunc) error {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	defer ln.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go NewHandler(c).Serve(ctx, handle)
	}
}
