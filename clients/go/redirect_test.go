package bester_test

// Redirects and TLS. besterd itself sends no redirects yet, so a small fake front server in
// the test sends them; the session always ends at the real daemon, which must accept the
// redirect's token (a real resume token) as a login.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"besterd.dev/bester"
)

// front is a fake server: it answers each connection's identify with login(identify), and
// each later request with request(frame).
type front struct {
	ln         net.Listener
	mu         sync.Mutex
	identifies []string
	login      func(identify string) any
	request    func(frame map[string]any) any
}

func newFront(t *testing.T, tlsConfig *tls.Config, login func(string) any) *front {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	f := &front{ln: ln, login: login}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *front) serve(c net.Conn) {
	defer c.Close()
	body, err := bester.ReadFrame(c, bester.MaxFrame)
	if err != nil {
		return
	}
	f.mu.Lock()
	f.identifies = append(f.identifies, string(body))
	f.mu.Unlock()
	send := func(v any) bool {
		out, _ := bester.EncodeFrame(v, bester.MaxFrame)
		_, err := c.Write(out)
		return err == nil
	}
	if !send(f.login(string(body))) || f.request == nil {
		return
	}
	for {
		body, err := bester.ReadFrame(c, bester.MaxFrame)
		if err != nil {
			return
		}
		var m map[string]any
		json.Unmarshal(body, &m)
		if !send(f.request(m)) {
			return
		}
	}
}

func (f *front) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.identifies...)
}

func redirectTo(url, token string, id any) map[string]any {
	h := map[string]any{"status": "ok", "kind": "redirect"}
	if id != nil {
		h["id"] = id
	}
	return map[string]any{"header": h, "data": map[string]string{"url": url, "token": token}}
}

func TestLoginRedirectsAreFollowedWithTheirTokenOnly(t *testing.T) {
	b := start(t, "", "")
	c0 := dial(t, b, "alice", "alice-pw")
	second := newFront(t, nil, func(string) any { return redirectTo(b.URL(), c0.Resume(), nil) })
	first := newFront(t, nil, func(string) any {
		return redirectTo("bester://mallory:stolen@"+second.ln.Addr().String(), "t-1", nil)
	})
	c, err := bester.Dial(ctx(t), "bester://"+first.ln.Addr().String(), bester.Auth{Username: "alice", Password: "alice-pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.User() != "alice" || c.Connections() != 1 {
		t.Fatalf("user %q after %d logins", c.User(), c.Connections())
	}
	if r, err := c.Request(ctx(t), "echo", "hi"); err != nil || string(r.Data) != `"hi"` {
		t.Fatalf("%v %s", err, r.Data)
	}
	// The credentials went to the URL they were given for, and only there.
	if s := first.seen(); len(s) != 1 || !strings.Contains(s[0], `"password":"alice-pw"`) {
		t.Fatalf("first: %q", s)
	}
	if s := second.seen(); len(s) != 1 || s[0] != `{"header":{"identify":{"authentication":{"token":"t-1"},"type":"client"}}}` {
		t.Fatalf("second got %q", s)
	}
}

func TestRedirectLoopStopsAfterThreeHops(t *testing.T) {
	var loop *front
	loop = newFront(t, nil, func(string) any { return redirectTo("bester://"+loop.ln.Addr().String(), "t", nil) })
	addr := "bester://" + loop.ln.Addr().String()
	_, err := bester.Dial(ctx(t), addr, bester.Auth{Username: "alice", Password: "pw"})
	wantError(t, err, bester.CodeTooManyRedirects, fmt.Sprintf("more than 3 redirects in a row (the last to %q)", addr))
	if n := len(loop.seen()); n != 4 {
		t.Fatalf("%d logins: the first and three redirects", n)
	}
}

// pki writes a self-signed certificate for 127.0.0.1 (cert.pem, key.pem in dir).
func pki(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool, pair tls.Certificate) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := x509.MarshalPKCS8PrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	pair, _ = tls.X509KeyPair(certPEM, keyPEM)
	return
}

func TestRedirectFromTLSToClearTextIsRefused(t *testing.T) {
	_, _, pool, pair := pki(t, t.TempDir())
	clear := newFront(t, nil, func(string) any { return nil })
	secure := newFront(t, &tls.Config{Certificates: []tls.Certificate{pair}}, func(string) any {
		return redirectTo("bester://"+clear.ln.Addr().String(), "t", nil)
	})
	_, err := bester.Dial(ctx(t), "bester+tls://"+secure.ln.Addr().String(), bester.Auth{Username: "alice", Password: "pw"},
		bester.WithTLS(&tls.Config{RootCAs: pool}))
	wantError(t, err, bester.CodeRedirectRefused, "redirect from bester+tls:// to bester:// would send the token in clear")
	if len(clear.seen()) != 0 {
		t.Fatal("the clear-text server was dialled")
	}
}

func TestARequestsRedirectMovesTheSessionAndResendsIt(t *testing.T) {
	b := start(t, "", "")
	c0 := dial(t, b, "alice", "alice-pw")
	f := newFront(t, nil, func(string) any {
		return map[string]any{"header": map[string]any{"status": "ok", "kind": "reply"}, "data": map[string]string{"user": "alice", "server": "front"}}
	})
	f.request = func(m map[string]any) any {
		return redirectTo(b.URL(), c0.Resume(), m["header"].(map[string]any)["id"])
	}
	c, err := bester.Dial(ctx(t), "bester://"+f.ln.Addr().String(), bester.Auth{Username: "alice", Password: "alice-pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Request(ctx(t), "echo", "moved")
	if err != nil || string(r.Data) != `"moved"` || c.Server() != "test" || c.Connections() != 2 {
		t.Fatalf("%v %s server %q, %d logins", err, r.Data, c.Server(), c.Connections())
	}
}

func TestTLSListener(t *testing.T) {
	dir := t.TempDir()
	cert, key, pool, _ := pki(t, dir)
	b := start(t, "", fmt.Sprintf("[[listeners]]\nname = \"tls\"\nkind = \"tls\"\naddress = \"127.0.0.1:0\"\ncert = %q\nkey = %q\n", cert, key))
	url := "bester+tls://" + b.Listener("tls")
	c, err := bester.Dial(ctx(t), url, bester.Auth{Username: "alice", Password: "alice-pw"}, bester.WithTLS(&tls.Config{RootCAs: pool}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, err := c.Request(ctx(t), "echo", "over tls"); err != nil || string(r.Data) != `"over tls"` {
		t.Fatalf("%v %s", err, r.Data)
	}
	// A certificate nobody vouches for is refused before any credential is sent.
	_, err = bester.Dial(ctx(t), url, bester.Auth{Username: "alice", Password: "alice-pw"})
	wantError(t, err, bester.CodeConnectionLost, "")
	if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("%v", err)
	}
}

func TestWebSocketListeners(t *testing.T) {
	dir := t.TempDir()
	cert, key, pool, _ := pki(t, dir)
	b := start(t, "", fmt.Sprintf("[[listeners]]\nname = \"ws\"\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\n"+
		"[[listeners]]\nname = \"wss\"\nkind = \"wss\"\naddress = \"127.0.0.1:0\"\ncert = %q\nkey = %q\n", cert, key))
	bob := dial(t, b, "bob", "bob-pw")
	big := strings.Repeat("x", 200000) // a 64-bit WebSocket length
	for _, url := range []string{"bester+ws://" + b.Listener("ws"), "bester+wss://" + b.Listener("wss")} {
		c, err := bester.Dial(ctx(t), url, bester.Auth{Username: "alice", Password: "alice-pw"}, bester.WithTLS(&tls.Config{RootCAs: pool}))
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		for _, data := range []string{"small", big} {
			r, err := c.Request(ctx(t), "echo", data)
			if err != nil || string(r.Data) != `"`+data+`"` {
				t.Fatalf("%s: %v (%d bytes)", url, err, len(r.Data))
			}
		}
		// Errors and pushes the same way as over TCP.
		_, err = c.Request(ctx(t), "nope", nil)
		wantError(t, err, bester.CodeUnknownType, `no handler for type "nope"`)
		if _, err := bob.Request(ctx(t), "gtest", map[string]any{"action": "send", "to": []string{"alice"}, "text": url}); err != nil {
			t.Fatal(err)
		}
		if p := recvPush(t, c); p.From.User != "bob" || !strings.Contains(string(p.Data), url) {
			t.Fatalf("%s: push %+v", url, p)
		}
		c.Close()
	}
	// A request over the frame limit is refused before it is sent.
	c, err := bester.Dial(ctx(t), "bester+ws://"+b.Listener("ws"), bester.Auth{Username: "alice", Password: "alice-pw"}, bester.WithoutReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Request(ctx(t), "echo", strings.Repeat("y", bester.MaxFrame))
	wantError(t, err, bester.CodeFrameTooLarge, "")
}
