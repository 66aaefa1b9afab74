package bester_test

// Stored pushes against the real besterd: kept while the user is away, handed over once and in
// order with their Msg, acknowledged by the client (or with Ack under WithManualAck), and a
// copy that comes again after a reconnect not handed over twice (PROTOCOL.md §4).

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"besterd.dev/bester"
	"besterd.dev/bester/internal/broker"
)

// startMail: a broker whose type mail stores for offline users.
func startMail(t *testing.T) *broker.Broker {
	return start(t, "", fmt.Sprintf("[handlers.mail]\ncommand = [%q]\noffline = \"store\"\n", filepath.Join(bins, "testhandler")))
}

func mail(t *testing.T, alice *bester.Client, text string) bester.Reply {
	t.Helper()
	r, err := alice.Request(ctx(t), "mail", map[string]any{"action": "send", "to": []string{"bob"}, "text": text})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// barrier returns once everything the server had for c when it was sent has come: the reply
// to an empty ack comes after the backlog read (and the acks) before it.
func barrier(t *testing.T, c *bester.Client) {
	t.Helper()
	r, err := c.Request(ctx(t), "bester.ack", map[string][]string{"msgs": {}})
	if err != nil || string(r.Data) != `{"acked":0}` {
		t.Fatalf("%v %s", err, r.Data)
	}
}

// noPush checks that c has no push to hand over (after a barrier).
func noPush(t *testing.T, c *bester.Client) {
	t.Helper()
	select {
	case p := <-c.Pushes():
		t.Fatalf("a push handed over twice: %+v %s", p, p.Data)
	case <-time.After(20 * time.Millisecond): // the pump hands over what was read at once
	}
}

// leftFor is what a fresh client of bob (no memory of ids, manual acks) is sent now.
func leftFor(t *testing.T, b *broker.Broker) []string {
	t.Helper()
	fresh := dial(t, b, "bob", "bob-pw", bester.WithManualAck(), bester.WithoutReconnect())
	defer fresh.Close()
	barrier(t, fresh)
	var left []string
	for {
		select {
		case p := <-fresh.Pushes():
			left = append(left, string(p.Data))
		case <-time.After(20 * time.Millisecond):
			return left
		}
	}
}

func takeThree(t *testing.T, bob *bester.Client) []bester.Push {
	t.Helper()
	var got []bester.Push
	for i := 0; i < 3; i++ {
		p := recvPush(t, bob)
		if want := fmt.Sprintf(`{"from":"alice","text":"%d"}`, i); string(p.Data) != want {
			t.Fatalf("push %d: %s, want %s (in order)", i, p.Data, want)
		}
		if _, err := strconv.ParseUint(p.Msg, 10, 64); err != nil || !p.Stored || p.Time < 1.6e12 {
			t.Fatalf("push %d: msg %q stored %v time %d", i, p.Msg, p.Stored, p.Time)
		}
		got = append(got, p)
	}
	return got
}

func storeThree(t *testing.T, b *broker.Broker) {
	t.Helper()
	alice := dial(t, b, "alice", "alice-pw")
	for i := 0; i < 3; i++ {
		if r := mail(t, alice, strconv.Itoa(i)); string(r.Frame) == "" || !bytes.Contains(r.Frame, []byte(`"stored":["bob"]`)) {
			t.Fatalf("not stored: %s", r.Frame)
		}
	}
	alice.Close()
}

func TestStoredPushesComeOnceInOrder(t *testing.T) {
	b := startMail(t)
	storeThree(t, b)
	bob := dial(t, b, "bob", "bob-pw")
	got := takeThree(t, bob)
	if got[0].Msg == got[1].Msg || got[1].Msg == got[2].Msg {
		t.Fatalf("ids: %s %s %s", got[0].Msg, got[1].Msg, got[2].Msg)
	}
	barrier(t, bob)
	noPush(t, bob)
	bob.Close()
	if left := leftFor(t, b); len(left) != 0 {
		t.Fatalf("left on the server: %v", left)
	}
}

func TestALiveStoringPushHasItsMsg(t *testing.T) {
	b := startMail(t)
	bob := dial(t, b, "bob", "bob-pw")
	alice := dial(t, b, "alice", "alice-pw")
	if r := mail(t, alice, "live"); fmt.Sprint(r.Delivered) != "[bob]" {
		t.Fatalf("%v", r.Delivered)
	}
	p := recvPush(t, bob)
	if p.Msg == "" || p.Stored {
		t.Fatalf("%+v", p)
	}
	broker.Eventually(t, "the queue to empty", func() bool { return len(leftFor(t, b)) == 0 })
}

func TestManualAckAndACopyAfterAReconnect(t *testing.T) {
	b := startMail(t)
	storeThree(t, b)
	rec := &recorder{}
	bob := dial(t, b, "bob", "bob-pw", bester.WithManualAck(), bester.WithDialer(rec.dial), bester.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	got := takeThree(t, bob)
	barrier(t, bob)
	if left := leftFor(t, b); len(left) != 3 {
		t.Fatalf("manual ack: %d left on the server before Ack, want 3", len(left))
	}
	// The connection dies before the application acknowledges: the server sends all three
	// again after the next login; the client does not hand them over again.
	rec.get(0).Close()
	broker.Eventually(t, "a second login", func() bool { return bob.Connections() == 2 })
	barrier(t, bob)
	noPush(t, bob)
	n, err := bob.Ack(ctx(t), got[0].Msg, got[1].Msg, got[2].Msg)
	if err != nil || n != 3 {
		t.Fatalf("Ack: %d %v", n, err)
	}
	if left := leftFor(t, b); len(left) != 0 {
		t.Fatalf("left on the server after Ack: %v", left)
	}
}

// ackLoser is a connection that loses every bester.ack written to it while lose is set.
type ackLoser struct {
	net.Conn
	lose *atomic.Bool
}

func (a ackLoser) Write(p []byte) (int, error) {
	if a.lose.Load() && bytes.Contains(p, []byte(`"bester.ack"`)) {
		return len(p), nil
	}
	return a.Conn.Write(p)
}

func TestCopiesOfLostAcksAckedAgain(t *testing.T) {
	b := startMail(t)
	storeThree(t, b)
	var lose atomic.Bool
	lose.Store(true)
	var first atomic.Pointer[net.Conn]
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		wrapped := net.Conn(ackLoser{c, &lose})
		first.CompareAndSwap(nil, &wrapped)
		return wrapped, nil
	}
	bob := dial(t, b, "bob", "bob-pw", bester.WithDialer(dialer), bester.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	takeThree(t, bob)
	// The automatic ack leaves (and is lost); then the connection dies.
	broker.Eventually(t, "the three still stored", func() bool { return len(leftFor(t, b)) == 3 })
	lose.Store(false)
	(*first.Load()).Close()
	broker.Eventually(t, "a second login", func() bool { return bob.Connections() == 2 })
	barrier(t, bob)
	noPush(t, bob)
	broker.Eventually(t, "the copies acknowledged", func() bool { return len(leftFor(t, b)) == 0 })
}
