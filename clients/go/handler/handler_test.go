package handler_test

// The handler half against protocol/vectors and a real Unix socket playing besterd's side:
// the echo example as a process (vectors, exit 0 at EOF, exit 1 on an oversize frame), and
// Serve in process (concurrency, split frames, reports, panics, auth-handler logins).

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"besterd.dev/bester"
	"besterd.dev/bester/handler"
)

const deadline = 20 * time.Second

var echoBin string

func TestMain(m *testing.M) {
	dir, _ := os.MkdirTemp("", "bester-handler-test-")
	echoBin = filepath.Join(dir, "echo")
	if out, err := exec.Command("go", "build", "-o", echoBin, "../examples/echo").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func vector(t *testing.T, name string, v any) {
	_, file, _, _ := runtime.Caller(0)
	text, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "..", "protocol", "vectors", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(text, v); err != nil {
		t.Fatal(err)
	}
}

func frame(t *testing.T, v any) []byte {
	b, err := bester.EncodeFrame(v, bester.MaxFrame)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func read(t *testing.T, c net.Conn) any {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(deadline))
	body, err := bester.ReadFrame(c, bester.MaxFrame)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	json.Unmarshal(body, &v)
	return v
}

func canon(v any) string { b, _ := json.Marshal(v); return string(b) }

// broker listens where a handler connects, as besterd does.
func broker(t *testing.T) (string, net.Listener) {
	path := filepath.Join(t.TempDir(), "h.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return path, ln
}

// startEcho runs the echo example connected to a fresh socket.
func startEcho(t *testing.T) (net.Conn, *exec.Cmd) {
	path, ln := broker(t)
	cmd := exec.Command(echoBin)
	cmd.Env = append(os.Environ(), "BESTER_SOCKET="+path, "BESTER_TYPE=echo")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return c, cmd
}

func wait(t *testing.T, cmd *exec.Cmd) int {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return cmd.ProcessState.ExitCode()
	case <-time.After(deadline):
		t.Fatal("the handler did not exit")
	}
	return -1
}

func TestEchoExamplePassesTheHandlerVectorsAndExitsZeroAtEOF(t *testing.T) {
	var v struct {
		Cases []struct {
			Name, Handler     string
			Requests, Answers []any
		}
	}
	vector(t, "handlers.json", &v)
	n := 0
	for _, k := range v.Cases {
		if k.Handler != "echo" {
			continue
		}
		n++
		c, cmd := startEcho(t)
		var all []byte
		for _, r := range k.Requests {
			all = append(all, frame(t, r)...)
		}
		// Every request in one write, then again one byte per write.
		for _, chunked := range []bool{false, true} {
			if chunked {
				for i := range all {
					c.Write(all[i : i+1])
				}
			} else {
				c.Write(all)
			}
			got := map[string]string{}
			want := map[string]string{}
			for _, a := range k.Answers {
				g := read(t, c)
				got[canon(g.(map[string]any)["header"].(map[string]any)["request"])] = canon(g)
				want[canon(a.(map[string]any)["header"].(map[string]any)["request"])] = canon(a)
			}
			if canon(got) != canon(want) {
				t.Fatalf("%s: got %v\nwant %v", k.Name, got, want)
			}
		}
		c.Close()
		if code := wait(t, cmd); code != 0 {
			t.Fatalf("%s: exit %d at EOF", k.Name, code)
		}
	}
	if n == 0 {
		t.Fatal("no echo vectors")
	}
}

func TestEchoExampleExitsNonZeroOnAnOversizeFrame(t *testing.T) {
	c, cmd := startEcho(t)
	var head [4]byte
	binary.LittleEndian.PutUint32(head[:], bester.MaxFrame+1)
	c.Write(head[:])
	if code := wait(t, cmd); code == 0 {
		t.Fatal("exit 0 after a frame over 1 MiB")
	}
}

func serve(t *testing.T, f handler.HandlerFunc) (net.Conn, chan error) {
	path, ln := broker(t)
	h, err := handler.Connect(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Serve(context.Background(), f) }()
	return c, done
}

func request(token string, data any) map[string]any {
	return map[string]any{"header": map[string]any{"kind": "request", "request": token, "scope": "client", "from": map[string]string{"user": "alice", "server": "a"}},
		"payload": map[string]any{"type": "t", "data": data}}
}

func TestRequestsAreServedConcurrentlyAndOutOfOrder(t *testing.T) {
	release := make(chan struct{})
	c, done := serve(t, func(ctx context.Context, r *handler.Request) handler.Answer {
		if string(r.Data) == `"slow"` {
			<-release
		}
		return handler.Reply(r.Data)
	})
	c.Write(frame(t, request("1", "slow")))
	c.Write(frame(t, request("2", "fast")))
	if got := canon(read(t, c)); got != `{"header":{"command":"reply","request":"2","status":"ok"},"payload":{"data":"fast","type":"t"}}` {
		t.Fatalf("first answer %s", got)
	}
	close(release)
	if got := canon(read(t, c)); got != `{"header":{"command":"reply","request":"1","status":"ok"},"payload":{"data":"slow","type":"t"}}` {
		t.Fatalf("second answer %s", got)
	}
	// 50 pipelined in one write: 50 answers.
	var all []byte
	for i := 0; i < 50; i++ {
		all = append(all, frame(t, request(fmt.Sprint("p", i), i))...)
	}
	c.Write(all)
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		seen[read(t, c).(map[string]any)["header"].(map[string]any)["request"].(string)] = true
	}
	if len(seen) != 50 {
		t.Fatalf("%d distinct answers", len(seen))
	}
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve at EOF: %v", err)
		}
	case <-time.After(deadline):
		t.Fatal("Serve did not return at EOF")
	}
}

func TestReportsAreNotAnsweredAndAPanicIsInternalError(t *testing.T) {
	c, _ := serve(t, func(ctx context.Context, r *handler.Request) handler.Answer {
		if string(r.Data) == `"boom"` {
			panic("boom")
		}
		return handler.Answers(handler.Reply(r.Data), handler.PushClients([]string{"bob"}, "news", 1, "p1"))
	})
	c.Write(frame(t, map[string]any{"header": map[string]any{"kind": "report", "status": "error", "request": "9"}, "data": map[string]string{"error": "x", "code": "bad_handler_reply"}}))
	c.Write(frame(t, request("1", "boom")))
	if got := canon(read(t, c)); got != `{"header":{"command":"reply","request":"1","status":"error"},"payload":{"data":{"code":"internal_error","error":"the t handler failed"},"type":"t"}}` {
		t.Fatalf("%s", got)
	}
	c.Write(frame(t, request("2", "ok")))
	if got := canon(read(t, c)); got != `{"header":{"command":"reply","request":"2","status":"ok"},"payload":{"data":"ok","type":"t"}}` {
		t.Fatalf("%s", got)
	}
	if got := canon(read(t, c)); got != `{"header":{"command":"sendClients","commandData":["bob"],"id":"p1","status":"ok"},"payload":{"data":1,"type":"news"}}` {
		t.Fatalf("push %s", got)
	}
}

func TestOversizeFrameEndsServeWithFrameTooLarge(t *testing.T) {
	c, done := serve(t, func(ctx context.Context, r *handler.Request) handler.Answer { return nil })
	c.Write([]byte{0xff, 0xff, 0xff, 0xff})
	var e *bester.Error
	if err := <-done; !errors.As(err, &e) || e.Code != bester.CodeFrameTooLarge {
		t.Fatalf("%v", err)
	}
}

func TestAuthHandlerVector(t *testing.T) {
	var v struct {
		Request string
		Answers []struct {
			Data     json.RawMessage
			Accepted *struct {
				User string
				Info *string
			}
		}
	}
	vector(t, "auth_handler.json", &v)
	got := make(chan *handler.Request, 1)
	c, _ := serve(t, func(ctx context.Context, r *handler.Request) handler.Answer {
		got <- r
		return handler.LoginOK("alice", map[string]string{"plan": "pro"})
	})
	var req any
	json.Unmarshal([]byte(v.Request), &req)
	c.Write(frame(t, req))
	r := <-got
	if !r.IsLogin() || r.Token != "7" || r.Type != "bester.login" || string(r.Data) != `{"apiKey":"k-3f9a1c"}` ||
		r.From.Address != "192.0.2.10:50312" || r.From.Listener != "main" || r.From.Transport != "tcp" {
		t.Fatalf("%+v", r)
	}
	if a := canon(read(t, c)); a != `{"header":{"command":"reply","request":"7","status":"ok"},"payload":{"data":{"info":{"plan":"pro"},"user":"alice"},"type":"bester.login"}}` {
		t.Fatalf("%s", a)
	}
	// Each accepted answer of the vectors is what LoginOK builds.
	for _, a := range v.Answers {
		if a.Accepted == nil {
			continue
		}
		var info any
		if a.Accepted.Info != nil {
			info = json.RawMessage(*a.Accepted.Info)
		}
		c2, _ := serve(t, func(ctx context.Context, r *handler.Request) handler.Answer {
			return handler.LoginOK(a.Accepted.User, info)
		})
		c2.Write(frame(t, req))
		out := read(t, c2).(map[string]any)["payload"].(map[string]any)["data"]
		var text string
		json.Unmarshal(a.Data, &text) // the vector's data is JSON text
		var want any
		json.Unmarshal([]byte(text), &want)
		if canon(out) != canon(want) {
			t.Fatalf("LoginOK gives %s, want %s", canon(out), a.Data)
		}
	}
}

func TestAnswersAreTheVectorsShapes(t *testing.T) {
	var v struct {
		Cases []struct {
			Name, Direction, JSON string
			Valid                 bool
		}
	}
	vector(t, "messages.json", &v)
	want := map[string]string{}
	for _, k := range v.Cases {
		if k.Direction == "handler_to_server" && k.Valid {
			var x any
			json.Unmarshal([]byte(k.JSON), &x)
			want[k.Name] = canon(x)
		}
	}
	built := map[string]handler.Answer{
		"reply":           handler.Reply(map[string]string{"hello": "world"}),
		"sendClients":     handler.SendClients([]string{"alice", "bob"}, "hi"),
		"error answer":    handler.Error("not_in_room", "no"),
		"push with an id": handler.PushClients([]string{"bob"}, "news", 1, "p1"),
	}
	types := map[string]string{"reply": "echo", "sendClients": "chat", "error answer": "chat", "push with an id": "news"}
	for name, a := range built {
		c, _ := serve(t, func(ctx context.Context, r *handler.Request) handler.Answer { return a })
		r := request("17", nil)
		r["payload"].(map[string]any)["type"] = types[name]
		c.Write(frame(t, r))
		if got := canon(read(t, c)); got != want[name] {
			t.Fatalf("%s: %s, want %s", name, got, want[name])
		}
	}
	_ = bytes.Equal
}

func TestSendPushesOutsideAnyRequest(t *testing.T) {
	path, ln := broker(t)
	h, err := handler.Connect(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Send(handler.PushServers([]string{"node-b"}, "chat", map[string]int{"t": 1}, "")); err != nil {
		t.Fatal(err)
	}
	if got := canon(read(t, c)); got != `{"header":{"command":"sendServers","commandData":["node-b"],"status":"ok"},"payload":{"data":{"t":1},"type":"chat"}}` {
		t.Fatalf("%s", got)
	}
}

func TestBytesThatAreNotJSONEndServeWithInvalidJSON(t *testing.T) {
	c, done := serve(t, func(ctx context.Context, r *handler.Request) handler.Answer { return nil })
	c.Write([]byte("\x05\x00\x00\x00hello"))
	var e *bester.Error
	if err := <-done; !errors.As(err, &e) || e.Code != bester.CodeInvalidJSON {
		t.Fatalf("%v", err)
	}
}

// Finished requests leave at most a few goroutines waiting for the next ones: 200 requests
// served at once (all started before any is let go) end with the goroutine count back near
// where it was, and a request whose
// function ends its goroutine (runtime.Goexit) still frees its place for the others.
func TestWorkersThatFinishAreFewAndGoexitFreesItsSlot(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 300)
	path, ln := broker(t)
	h, err := handler.Connect(path)
	if err != nil {
		t.Fatal(err)
	}
	h.MaxConcurrent = 201
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	go h.Serve(context.Background(), func(ctx context.Context, r *handler.Request) handler.Answer {
		if string(r.Data) == `"exit"` {
			runtime.Goexit()
		}
		started <- struct{}{}
		<-release
		return handler.Reply(r.Data)
	})
	for i := 0; i < 200; i++ {
		c.Write(frame(t, request(fmt.Sprint(i), i)))
	}
	for i := 0; i < 200; i++ {
		<-started
	}
	close(release)
	for i := 0; i < 200; i++ {
		read(t, c)
	}
	for end := time.Now().Add(deadline); runtime.NumGoroutine() > base+2+16; {
		if time.Now().After(end) {
			t.Fatalf("%d goroutines left after the requests (%d before)", runtime.NumGoroutine(), base)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// MaxConcurrent is 201: if each Goexit kept its slot, "after" would never be read.
	for i := 0; i < 201; i++ {
		c.Write(frame(t, request(fmt.Sprint("x", i), "exit")))
	}
	c.Write(frame(t, request("after", "ok")))
	if got := canon(read(t, c)); got != `{"header":{"command":"reply","request":"after","status":"ok"},"payload":{"data":"ok","type":"t"}}` {
		t.Fatalf("%s", got)
	}
}
