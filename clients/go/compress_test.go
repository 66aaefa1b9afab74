package bester_test

// Feature negotiation and compressed frames against the real besterd (PROTOCOL.md §1.2, §2
// "Features and limits"): what the client offers and learns, long messages compressed both ways
// (counted on the wire) and whole, and the bounds on what a frame may inflate to.

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"besterd.dev/bester"
)

// countingConn counts the bytes the client reads and writes on its socket.
type countingConn struct {
	net.Conn
	in, out *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

func chat() map[string]any {
	lines := make([]map[string]any, 40)
	for i := range lines {
		lines[i] = map[string]any{"from": "user" + string(rune('a'+i%26)), "at": 1796400000 + i*7, "text": strings.Repeat("the quick brown fox ", 1+i%3)}
	}
	return map[string]any{"room": "room:1", "lines": lines}
}

// roundTrips dials alice (with opts), echoes the chat message 10 times and returns the bytes
// read and written after the login, and the client.
func roundTrips(t *testing.T, url string, opts ...bester.Option) (int64, int64, *bester.Client) {
	var in, out atomic.Int64
	dialer := func(ctx context.Context, network, address string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return countingConn{nc, &in, &out}, nil
	}
	c, err := bester.Dial(ctx(t), url, bester.Auth{Username: "alice", Password: "alice-pw"}, append(opts, bester.WithDialer(dialer))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	in0, out0 := in.Load(), out.Load()
	want, _ := json.Marshal(chat())
	for i := 0; i < 10; i++ {
		r, err := c.Request(ctx(t), "echo", chat())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.Data, want) {
			t.Fatalf("echo came back as %s", r.Data)
		}
	}
	return in.Load() - in0, out.Load() - out0, c
}

func TestCompressionIsNegotiatedAndLongFramesGoCompressedBothWays(t *testing.T) {
	b := start(t, "", "")
	plainIn, plainOut, plain := roundTrips(t, b.URL())
	if len(plain.Features()) != 0 || plain.Limits() != (bester.Limits{}) {
		t.Fatalf("offered nothing, learned %v %+v", plain.Features(), plain.Limits())
	}
	in, out, c := roundTrips(t, b.URL(), bester.WithCompression())
	if f := c.Features(); len(f) != 1 || f[0] != "compress" {
		t.Fatalf("features %v", f)
	}
	if l := c.Limits(); l.MaxFrameBytes != 1<<20 || l.MaxInFlight == 0 {
		t.Fatalf("limits %+v", l)
	}
	// Each way the compressed session moves well under half the bytes of the plain one.
	if in*2 > plainIn || out*2 > plainOut {
		t.Fatalf("bytes in %d (plain %d), out %d (plain %d)", in, plainIn, out, plainOut)
	}
}

func TestOverWebSocketCompressIsNotGiven(t *testing.T) {
	b := start(t, "", "[[listeners]]\nname = \"ws\"\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\n")
	c, err := bester.Dial(ctx(t), "bester+ws://"+b.Listener("ws"), bester.Auth{Username: "alice", Password: "alice-pw"}, bester.WithCompression())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.Features()) != 0 {
		t.Fatalf("features over WebSocket: %v", c.Features())
	}
	if _, err := c.Request(ctx(t), "echo", chat()); err != nil {
		t.Fatal(err)
	}
}

func deflated(body []byte) []byte {
	var buf bytes.Buffer
	buf.WriteByte(0)
	w, _ := flate.NewWriter(&buf, flate.BestCompression)
	w.Write(body)
	w.Close()
	return buf.Bytes()
}

func TestInflateIsBoundedAndRefusesBrokenStreams(t *testing.T) {
	body := []byte(`{"a":"` + strings.Repeat("x", 500) + `"}`)
	got, err := bester.Inflate(deflated(body), 4096)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("inflate: %v %q", err, got)
	}
	bomb := deflated(append(append([]byte("{"), bytes.Repeat([]byte(" "), 2<<20)...), '}'))
	if len(bomb) > 4096 {
		t.Fatalf("bomb of %d bytes", len(bomb))
	}
	_, err = bester.Inflate(bomb, 4096)
	wantError(t, err, "frame_too_large", "compressed frame inflates to over the limit of 4096 bytes")
	good := deflated([]byte(`{"a":1}`))
	for _, broken := range [][]byte{good[:len(good)-2], append(append([]byte(nil), good...), "junk"...), {0, 0xff, 0xff, 0xff}} {
		_, err := bester.Inflate(broken, 4096)
		var e *bester.Error
		if !errors.As(err, &e) || e.Code != "protocol_error" || !strings.HasPrefix(e.Text, "compressed frame is not a valid DEFLATE stream") {
			t.Fatalf("%x: %v", broken, err)
		}
	}
}

func TestDeflateOnlyWhenShorter(t *testing.T) {
	frame := func(body string) []byte {
		out := make([]byte, 4+len(body))
		binary.LittleEndian.PutUint32(out, uint32(len(body)))
		copy(out[4:], body)
		return out
	}
	short := frame(`{"a":1}`)
	if got := bester.Deflate(short); !bytes.Equal(got, short) {
		t.Fatalf("a short frame was changed: %x", got)
	}
	long := frame(`{"a":"` + strings.Repeat("abc", 300) + `"}`)
	got := bester.Deflate(long)
	if got[4] != 0 || int(binary.LittleEndian.Uint32(got)) != len(got)-4 || len(got) >= len(long) {
		t.Fatalf("compressed frame %x", got[:8])
	}
	if back, err := bester.Inflate(got[4:], 1<<20); err != nil || !bytes.Equal(back, long[4:]) {
		t.Fatalf("round trip: %v", err)
	}
}
