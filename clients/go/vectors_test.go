package bester

// protocol/vectors, the conformance suite: frames, the key login's signed bytes and
// signature, and the frames the server sends a client.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func vector(t *testing.T, name string, v any) {
	_, file, _, _ := runtime.Caller(0)
	text, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "protocol", "vectors", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(text, v); err != nil {
		t.Fatal(err)
	}
}

type framesVectors struct {
	MaxFrame int `json:"max_frame"`
	Valid    []struct{ Name, JSON, Hex string }
	Stream   struct{ Hex string }
	Invalid  []struct{ Name, Hex, Code string }
}

func TestFramesVectors(t *testing.T) {
	var v framesVectors
	vector(t, "frames.json", &v)
	for _, c := range v.Valid {
		raw, _ := hex.DecodeString(c.Hex)
		body, err := ReadFrame(bytes.NewReader(raw), v.MaxFrame)
		if err != nil || string(body) != c.JSON {
			t.Fatalf("%s: %v %q", c.Name, err, body)
		}
		if _, err := DecodeBody(body); err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		enc, err := EncodeFrame(json.RawMessage(c.JSON), v.MaxFrame)
		if err != nil || !bytes.Equal(enc, raw) {
			t.Fatalf("%s: encoded %x, want %s", c.Name, enc, c.Hex)
		}
	}
	for _, c := range v.Invalid {
		raw, _ := hex.DecodeString(c.Hex)
		body, err := ReadFrame(bytes.NewReader(raw), v.MaxFrame)
		if err == nil {
			_, err = DecodeBody(body)
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != c.Code {
			t.Fatalf("%s: want %s, got %v", c.Name, c.Code, err)
		}
	}
	// The stream, split at every byte (and fed whole): every frame, in order.
	stream, _ := hex.DecodeString(v.Stream.Hex)
	for split := 0; split <= len(stream); split++ {
		d := Decoder{Max: v.MaxFrame}
		a, err1 := d.Feed(stream[:split])
		b, err2 := d.Feed(stream[split:])
		got := append(a, b...)
		if err1 != nil || err2 != nil || len(got) != len(v.Valid) || d.Pending() != 0 {
			t.Fatalf("split %d: %v %v %d frames", split, err1, err2, len(got))
		}
		for i, f := range got {
			if string(f) != v.Valid[i].JSON {
				t.Fatalf("split %d frame %d: %q", split, i, f)
			}
		}
	}
	d := Decoder{Max: v.MaxFrame}
	for i := range stream {
		if _, err := d.Feed(stream[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := (&Decoder{Max: 4096}).Feed([]byte{0xff, 0xff, 0xff, 0xff}); err == nil || err.(*Error).Code != CodeFrameTooLarge {
		t.Fatalf("ffffffff: %v", err)
	}
}

func TestKeyLoginVector(t *testing.T) {
	var v struct {
		Seed      string `json:"seed_hex"`
		PublicKey string `json:"public_key"`
		Server    string
		Username  string
		Nonce     string
		Message   string `json:"message_hex"`
		Signature string
		Frames    []struct{ Direction, JSON string }
	}
	vector(t, "key_login.json", &v)
	seed, _ := hex.DecodeString(v.Seed)
	key := ed25519.NewKeyFromSeed(seed)
	a, err := Auth{Username: v.Username, Key: key}.authentication()
	if err != nil {
		t.Fatal(err)
	}
	ident, _ := json.Marshal(map[string]any{"header": map[string]any{"identify": map[string]any{"type": "client", "authentication": a}}})
	var want, got any
	json.Unmarshal([]byte(v.Frames[0].JSON), &want)
	json.Unmarshal(ident, &got)
	if !jsonEqual(want, got) {
		t.Fatalf("identify %s, want %s", ident, v.Frames[0].JSON)
	}
	if hex.EncodeToString(SignedBytes(v.Server, v.Username, v.Nonce)) != v.Message {
		t.Fatal("signed bytes differ")
	}
	if sig := base64.StdEncoding.EncodeToString(ed25519.Sign(key, SignedBytes(v.Server, v.Username, v.Nonce))); sig != v.Signature {
		t.Fatalf("signature %s", sig)
	}
	ch, err := parseIn([]byte(v.Frames[1].JSON))
	if err != nil || ch.Header.Kind != "challenge" {
		t.Fatalf("%v %+v", err, ch)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestServerToClientMessageVectors(t *testing.T) {
	var v struct {
		Cases []struct {
			Name, Direction, JSON string
		}
	}
	vector(t, "messages.json", &v)
	n := 0
	for _, c := range v.Cases {
		if c.Direction != "server_to_client" {
			continue
		}
		n++
		f, err := parseIn([]byte(c.JSON))
		if err == nil && f.Header.ID == nil && f.Header.Status == "ok" && bytes.Contains(f.Data, []byte(`"resume"`)) {
			continue // an identify reply (the login's own vectors check those)
		}
		if err != nil || f.Header.Kind != "reply" || f.Header.ID == nil || *f.Header.ID != "42" {
			t.Fatalf("%s: %v %+v", c.Name, err, f)
		}
		if f.Header.Status == "error" {
			e := errorFromData(f.Data)
			if e.Code != CodeUnknownType || e.Text != `no handler for type "nope"` {
				t.Fatalf("%s: %v", c.Name, e)
			}
		}
	}
	if n == 0 {
		t.Fatal("no server_to_client vectors")
	}
}

func TestURLs(t *testing.T) {
	for in, want := range map[string]string{
		"bester://h":                   "bester://h:2222",
		"bester+tls://a%40b:p%3a@h:9/": "bester+tls://a%40b@h:9",
		"bester://[::1]":               "bester://[::1]:2222",
	} {
		u, err := ParseURL(in)
		if err != nil || u.String() != want {
			t.Fatalf("%s: %v %v", in, err, u)
		}
	}
	u, _ := ParseURL("bester+tls://a%40b:p%3a@h:9/")
	if u.Username != "a@b" || u.Password != "p:" || !u.TLS() {
		t.Fatalf("%+v", u)
	}
	if u, _ := ParseURL("bester+wss://h"); !u.TLS() || !u.WebSocket() || u.Host != "h:2222" {
		t.Fatalf("%+v", u)
	}
	for _, bad := range []string{"http://h", "bester://", "bester://h/x", "bester+udp://h", "h:1"} {
		if _, err := ParseURL(bad); err == nil {
			t.Fatalf("%s parsed", bad)
		}
	}
}

func TestWebSocketAcceptKeyOfRFC6455(t *testing.T) {
	// RFC 6455 section 1.3's example.
	sum := sha1.Sum([]byte("dGhlIHNhbXBsZSBub25jZQ==" + wsGUID))
	if got := base64.StdEncoding.EncodeToString(sum[:]); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatal(got)
	}
}
