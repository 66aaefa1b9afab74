package bester_test

// Tests of the client against the real besterd binary, with handlers written with this
// library (internal/testhandler, examples/echo) as configured handler processes.

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"besterd.dev/bester"
	"besterd.dev/bester/internal/broker"
)

var bins string // directory of the built Go handler programs

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bester-go-test-")
	if err != nil {
		panic(err)
	}
	for _, p := range []string{"./internal/testhandler", "./examples/echo", "./examples/client"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, filepath.Base(p)), p).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", p, err, out)
			os.Exit(1)
		}
	}
	bins = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func handlers() string {
	return fmt.Sprintf("[handlers.gtest]\ncommand = [%q]\n[handlers.echo]\ncommand = [%q]\n",
		filepath.Join(bins, "testhandler"), filepath.Join(bins, "echo"))
}

var users = []broker.User{{Name: "alice", Password: "alice-pw"}, {Name: "bob", Password: "bob-pw"}}

func start(t *testing.T, server, tables string) *broker.Broker {
	return broker.Start(t, server, handlers()+tables, users...)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), broker.Deadline)
	t.Cleanup(cancel)
	return c
}

func dial(t *testing.T, b *broker.Broker, user, password string, opts ...bester.Option) *bester.Client {
	t.Helper()
	c, err := bester.Dial(ctx(t), b.URL(), bester.Auth{Username: user, Password: password}, opts...)
	if err != nil {
		t.Fatalf("login of %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wantError checks that err is an *bester.Error with exactly this code and text.
func wantError(t *testing.T, err error, code, text string) {
	t.Helper()
	var e *bester.Error
	if !errors.As(err, &e) {
		t.Fatalf("want %s %q, got %v (%T)", code, text, err, err)
	}
	if e.Code != code || (text != "" && e.Text != text) {
		t.Fatalf("want %s %q, got %s %q", code, text, e.Code, e.Text)
	}
}

func TestEchoThroughTheGoEchoExample(t *testing.T) {
	b := start(t, "", "")
	c := dial(t, b, "alice", "alice-pw")
	if c.User() != "alice" || c.Server() != "test" || !strings.HasPrefix(c.Resume(), "v1.") {
		t.Fatalf("session: %q %q %q", c.User(), c.Server(), c.Resume())
	}
	r, err := c.Request(ctx(t), "echo", map[string]any{"text": "grüße ✓", "n": 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.Type != "echo" || string(r.Data) != `{"n":1,"text":"grüße ✓"}` {
		t.Fatalf("reply %s %s", r.Type, r.Data)
	}
	// The password in the URL logs in too, and the example client prints the reply.
	out, err := exec.Command(filepath.Join(bins, "client"), "bester://alice:alice-pw@"+b.Addr).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != `{"hello":"world"}` {
		t.Fatalf("example client: %v %s", err, out)
	}
}

func TestPipelinedRequestsFromManyGoroutinesAreAnsweredByID(t *testing.T) {
	b := start(t, "", "")
	c := dial(t, b, "alice", "alice-pw")
	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	order := make(chan int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ms := 0
			if i%10 == 0 {
				ms = 300 // the slow ones are answered after the fast ones that came later
			}
			r, err := c.Request(ctx(t), "gtest", map[string]any{"action": "sleep", "ms": ms, "i": i})
			if err != nil {
				errs <- err
				return
			}
			var d struct{ I int }
			if r.Decode(&d) != nil || d.I != i {
				errs <- fmt.Errorf("request %d got %s", i, r.Data)
			}
			order <- i
		}(i)
	}
	wg.Wait()
	close(errs)
	close(order)
	for err := range errs {
		t.Fatal(err)
	}
	first := <-order
	if first%10 == 0 {
		t.Fatalf("a slow request was answered first: the handler or the client serialises")
	}
}

func TestEveryRefusalIsItsTypedError(t *testing.T) {
	b := start(t, "request_timeout_ms = 500", "")
	_, err := bester.Dial(ctx(t), b.URL(), bester.Auth{Username: "alice", Password: "wrong"})
	wantError(t, err, bester.CodeAuthFailed, "invalid username or password")
	_, err = bester.Dial(ctx(t), b.URL(), bester.Auth{Token: "not.a.jwt"})
	wantError(t, err, bester.CodeTokenLoginsOff, "this server takes no token logins ([auth.jwt] is not configured)")
	_, err = bester.Dial(ctx(t), b.URL(), bester.Auth{Resume: "v1.e30.AAAA"})
	wantError(t, err, bester.CodeResumeRefused, "")
	_, err = bester.Dial(ctx(t), b.URL(), bester.Auth{Other: map[string]any{"apiKey": "k"}})
	wantError(t, err, bester.CodeInvalidMessage, "header.identify.authentication: unknown field `apiKey`, expected one of `username`, `password`, `publicKey`, `token`, `resume`")

	c := dial(t, b, "alice", "alice-pw")
	cases := []struct {
		typ        string
		data       any
		code, text string
	}{
		{"nope", nil, bester.CodeUnknownType, `no handler for type "nope"`},
		{"bester.nope", nil, bester.CodeReservedType, ""},
		{"a b", nil, bester.CodeInvalidMessage, `payload.type "a b" must be 1 to 64 characters of A-Z a-z 0-9 . _ -`},
		{"gtest", map[string]string{"action": "fail"}, "not_in_room", `alice is not in room "r"`},
		{"gtest", map[string]string{"action": "panic"}, bester.CodeInternalError, "the gtest handler failed"},
		{"gtest", map[string]string{"action": "big"}, bester.CodeInternalError, "the gtest handler's answer cannot be sent: frame_too_large"},
		{"gtest", map[string]string{"action": "hang"}, bester.CodeHandlerTimeout, `the "gtest" handler did not answer within 500 ms`},
		{"gtest", map[string]any{"action": "forward", "forward": "gtest"}, bester.CodeHandlerLoop, ""},
		{"bester.passwd", map[string]string{"old": "wrong", "new": "x"}, bester.CodeAuthFailed, ""},
	}
	for _, k := range cases {
		_, err := c.Request(ctx(t), k.typ, k.data)
		wantError(t, err, k.code, k.text)
	}
	// After every refusal the session is still there.
	if err := c.Ping(ctx(t)); err != nil {
		t.Fatal(err)
	}
	// A request that is not answered before its context ends is a timeout error.
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = c.Request(short, "gtest", map[string]string{"action": "hang"})
	wantError(t, err, bester.CodeTimeout, "")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a timeout wraps the context's error: %v", err)
	}
}

func TestSendClientsAndHandlerPushesArriveOnThePushChannel(t *testing.T) {
	b := start(t, "", "")
	alice := dial(t, b, "alice", "alice-pw")
	bob := dial(t, b, "bob", "bob-pw")
	r, err := alice.Request(ctx(t), "gtest", map[string]any{"action": "send", "to": []string{"bob", "zed"}, "text": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(r.Delivered, r.Offline) != "[bob] [zed]" || string(r.Data) != "null" {
		t.Fatalf("report: %v %v %s", r.Delivered, r.Offline, r.Data)
	}
	p := recvPush(t, bob)
	if p.Type != "gtest" || p.From.User != "alice" || p.From.Server != "test" || string(p.Data) != `{"from":"alice","text":"hi"}` {
		t.Fatalf("push %+v %s", p, p.Data)
	}
	r, err = alice.Request(ctx(t), "gtest", map[string]any{"action": "push", "to": []string{"bob"}, "text": "extra"})
	if err != nil || string(r.Data) != `"pushed"` {
		t.Fatalf("%v %s", err, r.Data)
	}
	p = recvPush(t, bob)
	if p.Type != "news" || p.From.Handler != "gtest" || string(p.Data) != `"extra"` {
		t.Fatalf("handler push %+v %s", p, p.Data)
	}
	// sendServers reports per server (this one has no peers).
	r, err = alice.Request(ctx(t), "gtest", map[string]any{"action": "servers", "to": []string{"nowhere"}, "text": "x"})
	if err != nil || r.Servers["nowhere"].Status != "error" || r.Servers["nowhere"].Code != bester.CodeUnknownPeer {
		t.Fatalf("%v %+v", err, r.Servers)
	}
}

func recvPush(t *testing.T, c *bester.Client) bester.Push {
	t.Helper()
	select {
	case p := <-c.Pushes():
		return p
	case <-time.After(broker.Deadline):
		t.Fatal("no push")
	}
	return bester.Push{}
}

func TestKeyLogin(t *testing.T) {
	b := start(t, "", "")
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	file := filepath.Join(b.Dir, "alice.pub")
	os.WriteFile(file, []byte(base64.StdEncoding.EncodeToString(pub)+"\n"), 0o600)
	b.UserCmd("", "add-key", "alice", file)
	broker.Eventually(t, "the key to be read", func() bool {
		c, err := bester.Dial(ctx(t), b.URL(), bester.Auth{Username: "alice", Key: key})
		if err == nil {
			defer c.Close()
			return c.User() == "alice"
		}
		return false
	})
	c, err := bester.Dial(ctx(t), b.URL(), bester.Auth{Username: "alice", Key: key, ServerName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// A challenge for another server than the one meant is not signed.
	_, err = bester.Dial(ctx(t), b.URL(), bester.Auth{Username: "alice", Key: key, ServerName: "prod"})
	wantError(t, err, bester.CodeAuthFailed, `the challenge is for server "test", not "prod": not signing`)
	// Another key is refused as a wrong password is.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	_, err = bester.Dial(ctx(t), b.URL(), bester.Auth{Username: "alice", Key: other})
	wantError(t, err, bester.CodeAuthFailed, "invalid username or password")
}

func jwt(secret []byte, claims map[string]any) string {
	enc := base64.RawURLEncoding
	head, _ := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT"})
	body, _ := json.Marshal(claims)
	msg := enc.EncodeToString(head) + "." + enc.EncodeToString(body)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(msg))
	return msg + "." + enc.EncodeToString(mac.Sum(nil))
}

func TestTokenLoginAndTokenRefusals(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("a test HS256 secret, 32 bytes or more")
	os.WriteFile(filepath.Join(dir, "hs.secret"), secret, 0o600)
	b := start(t, "", fmt.Sprintf("[auth.jwt]\nhmac_secret_file = %q\n", filepath.Join(dir, "hs.secret")))
	exp := time.Now().Add(time.Hour).Unix()
	c, err := bester.Dial(ctx(t), b.URL(), bester.Auth{Token: jwt(secret, map[string]any{"sub": "carol", "exp": exp, "info": map[string]string{"role": "admin"}})})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Request(ctx(t), "gtest", map[string]string{"action": "whoami"})
	if err != nil || string(r.Data) != `{"user":"carol","server":"test","info":{"role":"admin"}}` {
		t.Fatalf("%v %s", err, r.Data)
	}
	_, err = bester.Dial(ctx(t), b.URL(), bester.Auth{Token: jwt(secret, map[string]any{"sub": "carol", "exp": time.Now().Add(-time.Hour).Unix()})})
	wantError(t, err, bester.CodeTokenExpired, "")
	_, err = bester.Dial(ctx(t), b.URL(), bester.Auth{Token: jwt([]byte("another secret of thirty-two bytes!!"), map[string]any{"sub": "carol", "exp": exp})})
	wantError(t, err, bester.CodeTokenBadSignature, "")
}

func TestAuthHandlerWrittenWithTheLibraryDecidesLogins(t *testing.T) {
	b := start(t, "", "[auth]\nhandler = \"gtest\"\n")
	c, err := bester.Dial(ctx(t), b.URL(), bester.Auth{Other: map[string]any{"apiKey": "k-alice"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Request(ctx(t), "gtest", map[string]string{"action": "whoami"})
	if err != nil || c.User() != "alice" || string(r.Data) != `{"user":"alice","server":"test","info":{"plan":"pro"}}` {
		t.Fatalf("%v %q %s", err, c.User(), r.Data)
	}
	_, err = bester.Dial(ctx(t), b.URL(), bester.Auth{Other: map[string]any{"apiKey": "k-nobody"}})
	wantError(t, err, bester.CodeAuthFailed, "invalid API key")
}

// recorder is a dialer whose connections the test can cut, recording what the client wrote.
type recorder struct {
	mu    sync.Mutex
	conns []*recConn
}

type recConn struct {
	net.Conn
	mu      sync.Mutex
	written []byte
}

func (r *recConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.written = append(r.written, p...)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

func (r *recConn) sent() string { r.mu.Lock(); defer r.mu.Unlock(); return string(r.written) }

func (r *recorder) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	rc := &recConn{Conn: c}
	r.mu.Lock()
	r.conns = append(r.conns, rc)
	r.mu.Unlock()
	return rc, nil
}

func (r *recorder) get(i int) *recConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < len(r.conns) {
		return r.conns[i]
	}
	return nil
}

func TestReconnectLogsInAgainWithTheResumeToken(t *testing.T) {
	b := start(t, "", "")
	rec := &recorder{}
	c := dial(t, b, "alice", "alice-pw", bester.WithDialer(rec.dial), bester.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	if _, err := c.Request(ctx(t), "echo", 1); err != nil {
		t.Fatal(err)
	}
	rec.get(0).Close() // the connection is lost
	broker.Eventually(t, "a second login", func() bool { return c.Connections() == 2 })
	r, err := c.Request(ctx(t), "echo", 2)
	if err != nil || string(r.Data) != "2" {
		t.Fatalf("%v %s", err, r.Data)
	}
	again := rec.get(1).sent()
	if !strings.Contains(again, `"authentication":{"resume":"v1.`) || strings.Contains(again, "alice-pw") {
		t.Fatalf("the second login did not use the resume token alone: %q", again)
	}
	// A client given only a resume token logs in with it.
	d, err := bester.Dial(ctx(t), b.URL(), bester.Auth{Resume: c.Resume()})
	if err != nil || d.User() != "alice" {
		t.Fatalf("%v", err)
	}
	d.Close()
}

func TestRequestInFlightWhenTheConnectionDiesIsConnectionLost(t *testing.T) {
	b := start(t, "", "")
	rec := &recorder{}
	c := dial(t, b, "alice", "alice-pw", bester.WithDialer(rec.dial), bester.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	done := make(chan error, 1)
	go func() {
		_, err := c.Request(ctx(t), "gtest", map[string]any{"action": "sleep", "ms": 2000})
		done <- err
	}()
	broker.Eventually(t, "the request to be written", func() bool { return strings.Contains(rec.get(0).sent(), `"sleep"`) })
	rec.get(0).Close()
	wantError(t, <-done, bester.CodeConnectionLost, "the connection was lost with the request in flight")
	if _, err := c.Request(ctx(t), "echo", 3); err != nil {
		t.Fatal(err)
	}
}

func TestRevokedSessionIsFinalAndNotReconnected(t *testing.T) {
	b := start(t, "", "")
	c := dial(t, b, "bob", "bob-pw", bester.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	b.UserCmd("", "del", "bob")
	broker.Eventually(t, "the session to be revoked", func() bool { return c.Err() != nil })
	_, err := c.Request(ctx(t), "echo", 1)
	wantError(t, err, bester.CodeSessionRevoked, "")
	if c.Connections() != 1 {
		t.Fatalf("reconnected after a revocation")
	}
}

func TestKeepAlivePingsAQuietConnection(t *testing.T) {
	b := start(t, "idle_timeout_ms = 600", "")
	rec := &recorder{}
	c := dial(t, b, "alice", "alice-pw", bester.WithDialer(rec.dial), bester.WithKeepAlive(200*time.Millisecond))
	// Five pings take longer than the idle timeout: only they keep the connection.
	broker.Eventually(t, "five pings", func() bool { return strings.Count(rec.get(0).sent(), "bester.ping") >= 5 })
	if c.Connections() != 1 || !strings.Contains(rec.get(0).sent(), "bester.ping") {
		t.Fatalf("connections %d; sent %q", c.Connections(), rec.get(0).sent())
	}
	if _, err := c.Request(ctx(t), "echo", 1); err != nil {
		t.Fatal(err)
	}
}

func TestServerCodesCoverProtocolSection8(t *testing.T) {
	text, err := os.ReadFile(filepath.Join(broker.Repo(), "protocol", "PROTOCOL.md"))
	if err != nil {
		t.Fatal(err)
	}
	sec := string(text)
	sec = sec[strings.Index(sec, "## 8. Error codes"):strings.Index(sec, "## 9. Bad input")]
	var doc []string
	for _, line := range strings.Split(sec, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cell := strings.SplitN(line, "|", 3)[1]
		for _, part := range strings.Split(cell, ",") {
			doc = append(doc, strings.Trim(strings.TrimSpace(part), "`"))
		}
	}
	have := append([]string(nil), bester.ServerCodes...)
	sort.Strings(doc)
	sort.Strings(have)
	if strings.Join(doc, " ") != strings.Join(have, " ") {
		t.Fatalf("PROTOCOL.md §8 codes:\n%v\nlibrary:\n%v", doc, have)
	}
}

func TestHandlerFailuresAreTheirTypedErrors(t *testing.T) {
	dir := t.TempDir()
	// gdead never connects: do not wait the default 10 s for it before ready.
	b := start(t, "handler_startup_timeout_ms = 300", fmt.Sprintf("[handlers.gdead]\ncommand = [\"/bin/false\"]\n"+
		"[handlers.gdial]\ncommand = [%q, \"listen\"]\nconnect = %q\ncorrelate = \"connection\"\n",
		filepath.Join(bins, "testhandler"), filepath.Join(dir, "gdial.sock")))
	c := dial(t, b, "alice", "alice-pw")
	_, err := c.Request(ctx(t), "gdead", nil)
	wantError(t, err, bester.CodeHandlerNotRunning, `the "gdead" handler is not running`)
	_, err = c.Request(ctx(t), "gtest", map[string]string{"action": "exit"})
	wantError(t, err, bester.CodeHandlerUnavailable, `the "gtest" handler went away before answering`)
	// A handler that besterd dials (connect mode), written with handler.Listen; the ready file
	// may come (after the short startup timeout) before it listens.
	broker.Eventually(t, "gdial to listen", func() bool {
		_, err := c.Request(ctx(t), "gdial", nil)
		return err == nil
	})
	r, err := c.Request(ctx(t), "gdial", map[string]string{"action": "whoami"})
	if err != nil || string(r.Data) != `{"user":"alice","server":"test"}` {
		t.Fatalf("%v %s", err, r.Data)
	}
	_, err = c.Request(ctx(t), "gdial", map[string]string{"action": "fail"})
	wantError(t, err, "not_in_room", `alice is not in room "r"`)
}
