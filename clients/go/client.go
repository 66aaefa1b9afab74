package bester

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// From says who sent a push (or a request to a handler).
type From struct {
	User    string          `json:"user,omitempty"`
	Server  string          `json:"server,omitempty"`
	Handler string          `json:"handler,omitempty"`
	Info    json.RawMessage `json:"info,omitempty"`
	// For logins sent to an auth handler: the client's address and the listener it reached.
	Address   string `json:"address,omitempty"`
	Listener  string `json:"listener,omitempty"`
	Transport string `json:"transport,omitempty"`
}

// ServerResult is one peer server's result of a sendServers (PROTOCOL.md §7).
type ServerResult struct {
	Status    string   `json:"status"`
	Delivered []string `json:"delivered,omitempty"`
	Offline   []string `json:"offline,omitempty"`
	Error     string   `json:"error,omitempty"`
	Code      string   `json:"code,omitempty"`
}

// Reply is the ok answer to a request.
type Reply struct {
	Type      string
	Data      json.RawMessage
	Delivered []string                // sendClients: who got it
	Offline   []string                // sendClients: who has no connection here
	Servers   map[string]ServerResult // sendServers: per peer server
	Frame     json.RawMessage         // the whole frame
}

// Decode unmarshals the reply's data into v.
func (r Reply) Decode(v any) error { return json.Unmarshal(r.Data, v) }

// Push is a message to this user that answers none of its requests. A push of a storing type
// has its durable id in Msg (acknowledged by the client, or with Ack under WithManualAck) and
// Time, when it was stored (ms since the epoch); Stored says it was kept while the user was away.
type Push struct {
	Type   string
	From   From
	Data   json.RawMessage
	Frame  json.RawMessage
	Msg    string
	Time   int64
	Stored bool
}

type inHeader struct {
	Status    string                  `json:"status"`
	Kind      string                  `json:"kind"`
	ID        *string                 `json:"id"`
	Type      string                  `json:"type"`
	From      From                    `json:"from"`
	Delivered []string                `json:"delivered"`
	Offline   []string                `json:"offline"`
	Servers   map[string]ServerResult `json:"servers"`
	Msg       string                  `json:"msg"`
	Time      int64                   `json:"time"`
	Stored    json.RawMessage         `json:"stored"` // true on a stored push; a list of users in a reply
}

type inFrame struct {
	Header inHeader        `json:"header"`
	Data   json.RawMessage `json:"data"`
	raw    json.RawMessage
}

func parseIn(body []byte) (*inFrame, error) {
	if !utf8.Valid(body) {
		return nil, &Error{Code: CodeInvalidUTF8, Text: "frame body is not valid UTF-8"}
	}
	if f, ok := scanIn(body); ok {
		return f, nil
	}
	return parseInFull(body)
}

// parseInFull is parseIn through encoding/json (valid UTF-8).
func parseInFull(body []byte) (*inFrame, error) {
	f := &inFrame{raw: body}
	if err := json.Unmarshal(body, f); err != nil || len(body) == 0 || body[0] != '{' {
		return nil, &Error{Code: CodeProtocolError, Text: fmt.Sprintf("not a besterd frame: %.200s", body)}
	}
	if len(f.Data) == 0 {
		f.Data = json.RawMessage("null")
	}
	return f, nil
}

type answer struct {
	frame *inFrame
	err   error
}

// conn is one connection of the client (a new one after each reconnect).
type conn struct {
	nc      net.Conn
	r       *bufio.Reader
	w       BatchWriter
	mu      sync.Mutex
	pending map[string]chan answer
	dead    bool
	retired bool   // redirected away: closed once its answers are in
	closing *Error // the id-less error the server sent before closing
	last    atomic.Int64

	compress bool         // the login accepted "compress" (set before anything else is read)
	inflated atomic.Int64 // compressed frames received
	deflated atomic.Int64 // compressed frames sent
}

func newConn(nc net.Conn) *conn {
	cn := &conn{nc: nc, r: bufio.NewReaderSize(nc, 64<<10), pending: map[string]chan answer{}}
	cn.w.W = nc
	cn.last.Store(time.Now().UnixNano())
	return cn
}

func (cn *conn) write(frame []byte) error {
	cn.last.Store(time.Now().UnixNano())
	_, err := cn.w.Write(frame)
	return err
}

// writeRequest writes a request's frame: without waiting for company when it is the only
// request in flight.
func (cn *conn) writeRequest(frame []byte) error {
	cn.last.Store(time.Now().UnixNano())
	cn.mu.Lock()
	solo := len(cn.pending) <= 1
	cn.mu.Unlock()
	var err error
	if solo {
		_, err = cn.w.WriteSolo(frame)
	} else {
		_, err = cn.w.Write(frame)
	}
	return err
}

func (cn *conn) register(id string, ch chan answer) bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.dead || cn.retired {
		return false
	}
	cn.pending[id] = ch
	return true
}

func (cn *conn) unregister(id string) {
	cn.mu.Lock()
	delete(cn.pending, id)
	idle := cn.retired && len(cn.pending) == 0
	cn.mu.Unlock()
	if idle {
		cn.nc.Close()
	}
}

func (cn *conn) deliver(id string, a answer) {
	cn.mu.Lock()
	ch, ok := cn.pending[id]
	delete(cn.pending, id)
	idle := cn.retired && len(cn.pending) == 0
	cn.mu.Unlock()
	if ok {
		ch <- a
	}
	if idle {
		cn.nc.Close()
	}
}

// die fails every request in flight and reports whether this call was the one that killed it.
func (cn *conn) die(cause error) bool {
	cn.mu.Lock()
	if cn.dead {
		cn.mu.Unlock()
		return false
	}
	cn.dead = true
	pending := cn.pending
	cn.pending = nil
	var err error = cn.closing
	if cn.closing == nil {
		err = &Error{Code: CodeConnectionLost, Text: "the connection was lost with the request in flight", cause: cause}
	}
	cn.mu.Unlock()
	cn.nc.Close()
	for _, ch := range pending {
		ch <- answer{err: err}
	}
	return true
}

// Client is a logged-in session with a besterd server; it is safe for concurrent use.
type Client struct {
	home *URL
	auth Auth
	opts Options

	ids    atomic.Uint64
	pushes chan Push
	done   chan struct{}
	lost   chan *conn

	mu       sync.Mutex
	changed  chan struct{} // closed (and replaced) whenever conn or err changes
	url      *URL          // where the session is now (after redirects)
	conn     *conn
	err      *Error // why the client gave up for good
	closed   bool
	user     string
	server   string
	resume   string
	resumeX  int64 // resume_expires, seconds since the epoch
	renewAt  time.Time
	redirMu  sync.Mutex
	conns    int
	dropped  int
	queue    []Push        // pushes not yet handed to Pushes() (at most PushBuffer)
	queued   chan struct{} // a push was queued (buffered: 1)
	seen     *seenSet      // stored pushes' ids handed over, across reconnections
	features []string      // accepted at the last login
	limits   Limits        // named at the last login
}

// Dial connects to url (bester://host:port or bester+tls://host:port), logs in and keeps the
// session up until Close. A refused login is returned as its *Error (e.g. CodeAuthFailed).
func Dial(ctx context.Context, rawURL string, auth Auth, opts ...Option) (*Client, error) {
	home, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if auth.Password == "" && auth.Token == "" && auth.Resume == "" && auth.Key == nil && auth.Other == nil && home.HasPassword {
		auth.Password = home.Password
	}
	if auth.Username == "" {
		auth.Username = home.Username
	}
	if a, err := auth.authentication(); err != nil {
		return nil, err
	} else if a == nil && auth.Resume == "" {
		return nil, errors.New("bester: Dial needs a password, token, resume token or key")
	}
	c := &Client{home: home, url: home, auth: auth, changed: make(chan struct{}),
		done: make(chan struct{}), lost: make(chan *conn, 4), resume: auth.Resume}
	c.opts = Options{KeepAlive: 60 * time.Second, Backoff: 100 * time.Millisecond, MaxBackoff: 10 * time.Second, PushBuffer: 1024}
	for _, o := range opts {
		o(&c.opts)
	}
	if c.opts.PushBuffer <= 0 {
		c.opts.PushBuffer = 1
	}
	c.pushes = make(chan Push)
	c.queued = make(chan struct{}, 1)
	c.seen = newSeenSet(c.opts.MaxSeen)
	cn, err := c.establish(ctx)
	if err != nil {
		return nil, err
	}
	c.install(cn)
	go c.manage()
	go c.pump()
	return c, nil
}

// User is the user the session is logged in as.
func (c *Client) User() string { c.mu.Lock(); defer c.mu.Unlock(); return c.user }

// Server is the name of the server the session is logged in at.
func (c *Client) Server() string { c.mu.Lock(); defer c.mu.Unlock(); return c.server }

// Resume is the session's current resume token ("" if the server gave none).
func (c *Client) Resume() string { c.mu.Lock(); defer c.mu.Unlock(); return c.resume }

// Connections counts the logins so far (1 after Dial; one more per reconnect or redirect).
func (c *Client) Connections() int { c.mu.Lock(); defer c.mu.Unlock(); return c.conns }

// Pushes delivers pushes; it is closed when the client is closed or gives up.
func (c *Client) Pushes() <-chan Push { return c.pushes }

// Err is why the client gave up (nil while it is serving or reconnecting).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		return nil
	}
	return c.err
}

func (c *Client) logf(format string, args ...any) {
	if c.opts.Logger != nil {
		c.opts.Logger.Printf(format, args...)
	}
}

func (c *Client) broadcast() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Client) install(cn *conn) {
	c.mu.Lock()
	c.conn = cn
	c.conns++
	c.broadcast()
	c.mu.Unlock()
	go c.read(cn)
	c.flushAcks() // owed when the last connection went
}

// current waits for a live connection (while reconnecting), the final error, or ctx.
func (c *Client) current(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		cn, err, closed, changed := c.conn, c.err, c.closed, c.changed
		c.mu.Unlock()
		if closed {
			return nil, &Error{Code: CodeClosed, Text: "the client is closed"}
		}
		if err != nil {
			return nil, err
		}
		if cn != nil {
			return cn, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctxError(ctx, "not connected")
		}
	}
}

func marshalData(data any) (json.RawMessage, error) {
	switch d := data.(type) {
	case nil:
		return json.RawMessage("null"), nil
	case json.RawMessage:
		if !json.Valid(d) {
			return nil, &Error{Code: CodeInvalidJSON, Text: "data is not JSON"}
		}
		return d, nil
	}
	b, err := json.Marshal(data)
	if err != nil {
		return nil, &Error{Code: CodeInvalidMessage, Text: "cannot encode data: " + err.Error()}
	}
	return b, nil
}

type outMessage struct {
	Header struct {
		Scope string `json:"scope"`
		ID    string `json:"id"`
	} `json:"header"`
	Payload struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	} `json:"payload"`
}

// Request sends a message of type typ with data (any JSON-encodable value, or json.RawMessage)
// and waits for its reply. Requests from any number of goroutines are pipelined on the one
// connection. An error answer is an *Error with the server's code and text; ctx ending first
// is CodeTimeout (wrapping ctx.Err()), a lost connection CodeConnectionLost (the request may
// or may not have been handled; it is not sent again).
func (c *Client) Request(ctx context.Context, typ string, data any) (Reply, error) {
	n := c.ids.Add(1)
	frame, err := requestFrame(n, typ, data)
	if err != nil {
		return Reply{}, err
	}
	id := strconv.FormatUint(n, 10)
	for hops := 0; ; {
		if ctx.Err() != nil {
			return Reply{}, ctxError(ctx, fmt.Sprintf("no answer to %q", typ))
		}
		cn, err := c.current(ctx)
		if err != nil {
			return Reply{}, err
		}
		ch := make(chan answer, 1)
		if !cn.register(id, ch) {
			c.yield(ctx, cn)
			continue
		}
		if err := cn.writeRequest(cn.pack(frame, typ)); err != nil {
			// Not written whole: the server never handles a cut frame, so it is safe to resend.
			cn.unregister(id)
			if cn.die(err) {
				c.notifyLost(cn)
			}
			c.yield(ctx, cn)
			continue
		}
		select {
		case a := <-ch:
			if a.err != nil {
				return Reply{}, a.err
			}
			f := a.frame
			if f.Header.Kind == "redirect" {
				hops++
				if err := c.redirect(ctx, cn, f, hops); err != nil {
					return Reply{}, err
				}
				continue
			}
			if f.Header.Status != "ok" {
				return Reply{}, errorFromData(f.Data)
			}
			return Reply{Type: f.Header.Type, Data: f.Data, Delivered: f.Header.Delivered,
				Offline: f.Header.Offline, Servers: f.Header.Servers, Frame: f.raw}, nil
		case <-ctx.Done():
			cn.unregister(id)
			return Reply{}, ctxError(ctx, fmt.Sprintf("no answer to %q", typ))
		}
	}
}

// yield waits until the client's connection is no longer cn (or ctx ends).
func (c *Client) yield(ctx context.Context, cn *conn) {
	c.mu.Lock()
	same, changed := c.conn == cn, c.changed
	c.mu.Unlock()
	if same {
		select {
		case <-changed:
		case <-ctx.Done():
		}
	}
}

// Ping sends bester.ping.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.Request(ctx, "bester.ping", nil)
	return err
}

// Logout ends the session (its resume tokens die with it) and closes the client.
func (c *Client) Logout(ctx context.Context) error {
	_, err := c.Request(ctx, "bester.logout", nil)
	var e *Error
	if errors.As(err, &e) && e.Code == CodeConnectionLost {
		err = nil // the server closes right after its answer
	}
	c.Close()
	return err
}

// Close ends the client: requests waiting get CodeClosed, Pushes() is closed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	cn := c.conn
	c.conn = nil
	close(c.done) // the pump closes Pushes()
	c.broadcast()
	c.mu.Unlock()
	if cn != nil {
		cn.die(&Error{Code: CodeClosed, Text: "the client is closed"})
	}
	return nil
}

// push queues p for Pushes(), unless it is a copy of a stored push handed over before (true:
// that copy is to be acknowledged again). Full, the oldest not yet taken goes.
func (c *Client) push(p Push) (owed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	switch c.seen.arrived(p.Msg) {
	case seenAck:
		return true
	case seenDrop:
		return false
	}
	if len(c.queue) >= c.opts.PushBuffer {
		c.seen.forget(c.queue[0].Msg) // never taken, not acknowledged: it comes again
		c.queue[0] = Push{}
		c.queue = c.queue[1:]
		c.dropped++
		if c.dropped == 1 || c.dropped&(c.dropped-1) == 0 {
			c.logf("bester: %d pushes dropped (nobody reads Pushes())", c.dropped)
		}
	}
	c.queue = append(c.queue, p)
	select {
	case c.queued <- struct{}{}:
	default:
	}
	return false
}

// read is the one reader of a connection.
func (c *Client) read(cn *conn) {
	owing := false // copies to acknowledge again: once the frames read so far are handled
	for {
		if owing && cn.r.Buffered() == 0 {
			owing = false
			c.flushAcks()
		}
		body, err := ReadFrame(cn.r, MaxFrame+ClientSlack)
		if err == nil {
			body, err = cn.open(body, MaxFrame+ClientSlack)
		}
		if err != nil {
			if cn.die(err) {
				c.notifyLost(cn)
			}
			return
		}
		f, err := parseIn(body)
		if err != nil {
			if cn.die(err) {
				c.notifyLost(cn)
			}
			return
		}
		h := f.Header
		switch {
		case h.Kind == "push":
			owing = c.push(Push{Type: h.Type, From: h.From, Data: f.Data, Frame: f.raw, Msg: h.Msg, Time: h.Time, Stored: string(h.Stored) == "true"}) || owing
		case h.ID != nil && (h.Kind == "reply" || h.Kind == "redirect"):
			cn.deliver(*h.ID, answer{frame: f})
		case h.Status == "error" && h.ID == nil:
			// kicked, session_revoked, idle_timeout, shutting_down…: the server closes next.
			e := errorFromData(f.Data)
			cn.mu.Lock()
			cn.closing = e
			cn.mu.Unlock()
			c.logf("bester: the server ends the connection: %v", e)
		}
	}
}

// notifyLost tells the manager a connection died, without blocking the caller.
func (c *Client) notifyLost(cn *conn) {
	go func() {
		select {
		case c.lost <- cn:
		case <-c.done:
		}
	}()
}

// manage reconnects, keeps the line alive and renews the resume token.
func (c *Client) manage() {
	tick := time.Second
	if k := c.opts.KeepAlive; k > 0 && k/4 < tick {
		tick = k / 4
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	pinging := atomic.Bool{}
	for {
		select {
		case <-c.done:
			return
		case cn := <-c.lost:
			cn.mu.Lock()
			retired := cn.retired
			cn.mu.Unlock()
			c.mu.Lock()
			if c.conn != cn || c.closed || retired {
				c.mu.Unlock()
				continue
			}
			c.conn = nil
			c.broadcast()
			c.mu.Unlock()
			cn.mu.Lock()
			closing := cn.closing
			cn.mu.Unlock()
			if closing != nil && final(closing.Code) || c.opts.NoReconnect {
				if closing == nil {
					closing = &Error{Code: CodeConnectionLost, Text: "the connection was lost"}
				}
				c.giveUp(closing)
				return
			}
			if !c.reconnect() {
				return
			}
		case <-ticker.C:
			c.mu.Lock()
			cn, renew := c.conn, !c.renewAt.IsZero() && time.Now().After(c.renewAt)
			if renew {
				c.renewAt = time.Time{}
			}
			c.mu.Unlock()
			if cn == nil {
				continue
			}
			if k := c.opts.KeepAlive; k > 0 && time.Since(time.Unix(0, cn.last.Load())) >= k && pinging.CompareAndSwap(false, true) {
				go func() {
					defer pinging.Store(false)
					ctx, cancel := context.WithTimeout(context.Background(), k)
					defer cancel()
					var e *Error
					if err := c.Ping(ctx); errors.As(err, &e) && e.Code == CodeTimeout {
						c.logf("bester: no answer to bester.ping within %v: reconnecting", k)
						if cn.die(err) {
							c.notifyLost(cn)
						}
					}
				}()
			}
			if renew {
				go c.renewResume()
			}
		}
	}
}

func (c *Client) renewResume() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := c.Request(ctx, "bester.token", nil)
	if err == nil {
		var d map[string]json.RawMessage
		if json.Unmarshal(r.Data, &d) == nil {
			c.mu.Lock()
			c.loggedIn(d)
			c.mu.Unlock()
		}
	}
}

func (c *Client) giveUp(e *Error) {
	c.mu.Lock()
	c.err = e
	c.broadcast()
	c.mu.Unlock()
}

// reconnect logs in again with backoff until it works, the login is refused for good, or the
// client is closed; false means the manager is done.
func (c *Client) reconnect() bool {
	delay := c.opts.Backoff
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		go func() {
			select {
			case <-c.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		cn, err := c.establish(ctx)
		cancel()
		if err == nil {
			c.mu.Lock()
			closed := c.closed
			c.mu.Unlock()
			if closed {
				cn.nc.Close()
				return false
			}
			c.logf("bester: reconnected to %s", c.url)
			c.install(cn)
			return true
		}
		var e *Error
		if errors.As(err, &e) && fatalLogin(e.Code) {
			c.logf("bester: logging in again was refused: %v", e)
			c.giveUp(e)
			return false
		}
		c.logf("bester: reconnecting to %s failed (%v); again in %v", c.url, err, delay)
		jitter := time.Duration(rand.Int63n(int64(delay)/2 + 1))
		select {
		case <-c.done:
			return false
		case <-time.After(delay/2 + jitter):
		}
		if delay *= 2; delay > c.opts.MaxBackoff {
			delay = c.opts.MaxBackoff
		}
	}
}
