package bester

// Logging in: the credentials and the identify frame they make, the login exchange (reply,
// ed25519 challenge, redirect), dialling a URL's transport, and following redirects.

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// MaxRedirects is how many redirects in a row a login or a request follows.
const MaxRedirects = 3

// Auth says how to log in. Give one of Password (with Username), Token (a JWT), Resume (a
// resume token) or Key (with Username); a password in the URL is used when Auth has none. The
// credentials are only ever sent to the URL given to Dial: after a redirect the client logs in
// with the redirect's token, and with resume tokens afterwards.
type Auth struct {
	Username string
	Password string
	Token    string
	Resume   string
	Key      ed25519.PrivateKey
	// ServerName, for a key login: refuse to sign a challenge that names another server.
	ServerName string
	// Other is an authentication object of another shape (e.g. {"apiKey": "…"}), for a server
	// whose auth handler decides logins ([auth] handler).
	Other map[string]any
}

func (a Auth) authentication() (map[string]any, error) {
	switch {
	case a.Other != nil:
		return a.Other, nil
	case a.Token != "":
		return map[string]any{"token": a.Token}, nil
	case a.Key != nil:
		if a.Username == "" || len(a.Key) != ed25519.PrivateKeySize {
			return nil, errors.New("bester: a key login needs Username and a 64-byte ed25519.PrivateKey")
		}
		pub := a.Key.Public().(ed25519.PublicKey)
		return map[string]any{"username": a.Username, "publicKey": base64.StdEncoding.EncodeToString(pub)}, nil
	case a.Password != "":
		if a.Username == "" {
			return nil, errors.New("bester: a password login needs Username")
		}
		return map[string]any{"username": a.Username, "password": a.Password}, nil
	}
	return nil, nil
}

// SignedBytes is what a key login signs (PROTOCOL.md §2): the parts joined by zero bytes.
func SignedBytes(server, username, nonce string) []byte {
	return []byte("besterd-login-v1\x00" + server + "\x00" + username + "\x00" + nonce)
}

type login struct {
	auth  map[string]any
	key   ed25519.PrivateKey
	user  string
	isRes bool
}

// logins are the ways to log in now, in order: the resume token while it lasts, then the
// credentials, only at the URL they were given for.
func (c *Client) logins() []login {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []login
	if c.resume != "" && (c.resumeX == 0 || time.Now().Unix()+1 < c.resumeX) {
		out = append(out, login{auth: map[string]any{"resume": c.resume}, isRes: true})
	}
	if *c.url == *c.home {
		if a, _ := c.auth.authentication(); a != nil {
			out = append(out, login{auth: a, key: c.auth.Key, user: c.auth.Username})
		}
	}
	return out
}

func (c *Client) dialURL(ctx context.Context, u *URL) (net.Conn, error) {
	dial := c.opts.Dialer
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	nc, err := dial(ctx, "tcp", u.Host)
	if err != nil {
		return nil, &Error{Code: CodeConnectionLost, Text: "cannot connect to " + u.Host + ": " + err.Error(), cause: err}
	}
	if u.TLS() {
		tc, err := c.tlsHandshake(ctx, nc, u)
		if err != nil {
			return nil, err
		}
		nc = tc
	}
	if u.WebSocket() {
		// The handshake is bounded by ctx like the login after it.
		stop := make(chan struct{})
		go func() {
			select {
			case <-ctx.Done():
				nc.SetDeadline(time.Unix(1, 0))
			case <-stop:
			}
		}()
		ws, err := wsUpgrade(nc, u.Host, MaxFrame+ClientSlack)
		close(stop)
		nc.SetDeadline(time.Time{})
		if err != nil {
			nc.Close()
			return nil, &Error{Code: CodeConnectionLost, Text: "WebSocket upgrade at " + u.Host + " failed: " + err.Error(), cause: err}
		}
		nc = ws
	}
	return nc, nil
}

func (c *Client) tlsHandshake(ctx context.Context, nc net.Conn, u *URL) (net.Conn, error) {
	cfg := &tls.Config{}
	if c.opts.TLS != nil {
		cfg = c.opts.TLS.Clone()
	}
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(u.Host)
		cfg.ServerName = host
	}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, &Error{Code: CodeConnectionLost, Text: "TLS handshake with " + u.Host + " failed: " + err.Error(), cause: err}
	}
	return tc, nil
}

// establish connects and logs in at the session's URL, following redirects.
func (c *Client) establish(ctx context.Context) (*conn, error) {
	logins := c.logins()
	if len(logins) == 0 {
		return nil, &Error{Code: CodeResumeExpired, Text: "no resume token left to log in again with, and no credentials for this server"}
	}
	c.mu.Lock()
	u := c.url
	c.mu.Unlock()
	for i, hops := 0, 0; i < len(logins); {
		nc, err := c.dialURL(ctx, u)
		if err != nil {
			return nil, err
		}
		cn := newConn(nc)
		data, redirect, err := c.login(ctx, cn, logins[i])
		if err != nil {
			nc.Close()
			var e *Error
			if errors.As(err, &e) && logins[i].isRes && (e.Code == CodeResumeExpired || e.Code == CodeResumeRefused) && i+1 < len(logins) {
				c.logf("bester: resume token refused (%v); logging in with the credentials", e)
				i++
				continue
			}
			return nil, err
		}
		if redirect != nil {
			nc.Close()
			hops++
			nu, token, err := checkRedirect(u, redirect, hops)
			if err != nil {
				return nil, err
			}
			c.logf("bester: redirected from %s to %s", u, nu)
			u = nu
			c.mu.Lock()
			c.url, c.resume = nu, ""
			c.mu.Unlock()
			logins, i = []login{{auth: map[string]any{"token": token}}}, 0
			continue
		}
		c.mu.Lock()
		c.loggedIn(data)
		c.mu.Unlock()
		return cn, nil
	}
	return nil, &Error{Code: CodeProtocolError, Text: "no way to log in"}
}

// loggedIn takes the user, server and resume token of a login reply; c.mu is held.
func (c *Client) loggedIn(d map[string]json.RawMessage) {
	var s string
	if json.Unmarshal(d["user"], &s) == nil && s != "" {
		c.user = s
	}
	if json.Unmarshal(d["server"], &s) == nil && s != "" {
		c.server = s
	}
	c.features, c.limits = negotiated(d)
	if json.Unmarshal(d["resume"], &s) == nil && s != "" {
		c.resume = s
		var x int64
		if json.Unmarshal(d["resume_expires"], &x) == nil {
			c.resumeX = x
			if life := time.Until(time.Unix(x, 0)); life > 0 {
				c.renewAt = time.Now().Add(life * 2 / 3)
			}
		}
	}
}

type redirectData struct {
	URL   string `json:"url"`
	Token string `json:"token"`
}

func checkRedirect(from *URL, f *inFrame, hops int) (*URL, string, error) {
	var d redirectData
	if json.Unmarshal(f.Data, &d) != nil || d.URL == "" || d.Token == "" {
		return nil, "", &Error{Code: CodeProtocolError, Text: "a redirect without data.url and data.token"}
	}
	if hops > MaxRedirects {
		return nil, "", &Error{Code: CodeTooManyRedirects, Text: fmt.Sprintf("more than %d redirects in a row (the last to %q)", MaxRedirects, d.URL)}
	}
	u, err := ParseURL(d.URL)
	if err != nil {
		return nil, "", &Error{Code: CodeRedirectRefused, Text: "redirect to a URL that does not parse: " + err.Error()}
	}
	if from.TLS() && !u.TLS() {
		return nil, "", &Error{Code: CodeRedirectRefused, Text: fmt.Sprintf("redirect from %s:// to %s:// would send the token in clear", from.Scheme, u.Scheme)}
	}
	u.Username, u.Password, u.HasPassword = "", "", false // credentials never follow a redirect
	return u, d.Token, nil
}

// login runs one identify exchange on a fresh connection: the reply's data, or a redirect.
func (c *Client) login(ctx context.Context, cn *conn, l login) (map[string]json.RawMessage, *inFrame, error) {
	if dl, ok := ctx.Deadline(); ok {
		cn.nc.SetDeadline(dl)
		defer cn.nc.SetDeadline(time.Time{})
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-ctx.Done():
			cn.nc.SetDeadline(time.Unix(1, 0))
		case <-stop:
		}
	}()
	send := func(v any) error {
		frame, err := EncodeFrame(v, MaxFrame)
		if err != nil {
			return err
		}
		return cn.write(frame)
	}
	stanza := map[string]any{"type": "client", "authentication": l.auth}
	if offer := c.opts.offer(); offer != nil {
		stanza["features"] = offer
	}
	ident := map[string]any{"header": map[string]any{"identify": stanza}}
	if err := send(ident); err != nil {
		return nil, nil, c.netErr(ctx, err)
	}
	challenged := false
	for {
		body, err := ReadFrame(cn.r, MaxFrame+ClientSlack)
		if err != nil {
			return nil, nil, c.netErr(ctx, err)
		}
		f, err := parseIn(body)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case f.Header.Status == "error":
			return nil, nil, errorFromData(f.Data)
		case f.Header.Kind == "redirect":
			return nil, f, nil
		case f.Header.Kind == "challenge":
			var d struct{ Server, Nonce string }
			if l.key == nil || challenged || json.Unmarshal(f.Data, &d) != nil || d.Nonce == "" {
				return nil, nil, &Error{Code: CodeProtocolError, Text: "the server sent a challenge this login did not ask for"}
			}
			challenged = true
			if c.auth.ServerName != "" && d.Server != c.auth.ServerName {
				return nil, nil, &Error{Code: CodeAuthFailed, Text: fmt.Sprintf("the challenge is for server %q, not %q: not signing", d.Server, c.auth.ServerName)}
			}
			sig := ed25519.Sign(l.key, SignedBytes(d.Server, l.user, d.Nonce))
			if err := send(map[string]any{"header": map[string]any{"signature": base64.StdEncoding.EncodeToString(sig)}}); err != nil {
				return nil, nil, c.netErr(ctx, err)
			}
		case f.Header.Kind == "reply":
			var d map[string]json.RawMessage
			json.Unmarshal(f.Data, &d)
			features, _ := negotiated(d)
			cn.compress = has(features, FeatureCompress)
			return d, nil, nil
		default:
			return nil, nil, &Error{Code: CodeProtocolError, Text: fmt.Sprintf("unexpected frame during login: %.200s", body)}
		}
	}
}

func (c *Client) netErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctxError(ctx, "logging in")
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &Error{Code: CodeConnectionLost, Text: "the server closed the connection during login", cause: err}
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeConnectionLost, Text: err.Error(), cause: err}
}

// redirect follows a request's redirect: log in at its URL with its token, make that the
// session's connection (the old one closes once its other answers are in), and let the
// request be sent again there.
func (c *Client) redirect(ctx context.Context, from *conn, f *inFrame, hops int) error {
	c.redirMu.Lock()
	defer c.redirMu.Unlock()
	c.mu.Lock()
	cur, u := c.conn, c.url
	c.mu.Unlock()
	if cur != from {
		return nil // another request followed it already
	}
	nu, token, err := checkRedirect(u, f, hops)
	if err != nil {
		return err
	}
	nc, err := c.dialURL(ctx, nu)
	if err != nil {
		return err
	}
	cn := newConn(nc)
	data, again, err := c.login(ctx, cn, login{auth: map[string]any{"token": token}})
	if err == nil && again != nil {
		err = &Error{Code: CodeRedirectRefused, Text: "a redirect's login was redirected again"}
	}
	if err != nil {
		nc.Close()
		return err
	}
	c.mu.Lock()
	c.url, c.resume = nu, ""
	c.loggedIn(data)
	c.mu.Unlock()
	from.mu.Lock()
	from.retired = true
	idle := len(from.pending) == 0
	from.mu.Unlock()
	c.install(cn)
	if idle {
		from.nc.Close()
	}
	return nil
}
