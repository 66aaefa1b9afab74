// Package broker starts the real besterd binary for the tests: a temporary directory with a
// configuration, a user store (`besterd user add`) and a runtime directory, an ephemeral
// loopback port read back from --ready-file (polled with a deadline), SIGTERM at the end.
package broker

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Deadline bounds every wait of a test.
const Deadline = 20 * time.Second

// Repo is the repository root (clients/go/internal/broker/../../../..).
func Repo() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", "..", ".."))
}

// Bin is the besterd binary: $BESTERD_BIN, else target/debug/besterd of the repository.
func Bin(t testing.TB) string {
	if b := os.Getenv("BESTERD_BIN"); b != "" {
		return b
	}
	b := filepath.Join(Repo(), "target", "debug", "besterd")
	if _, err := os.Stat(b); err != nil {
		t.Fatalf("no besterd binary at %s: run `cargo build --bin besterd` first (or set BESTERD_BIN)", b)
	}
	return b
}

// Broker is a running besterd.
type Broker struct {
	t    testing.TB
	Dir  string
	Addr string // host:port of [server] listen
	cmd  *exec.Cmd
	done chan struct{}
}

// User is a name and password to add to the store.
type User struct{ Name, Password string }

// Start runs besterd with these [server] keys and further tables (handlers, [auth], listeners).
func Start(t testing.TB, serverKeys, tables string, users ...User) *Broker {
	t.Helper()
	dir := t.TempDir()
	b := &Broker{t: t, Dir: dir, done: make(chan struct{})}
	for _, u := range users {
		b.AddUser(u.Name, u.Password)
	}
	config := fmt.Sprintf("[server]\nname = \"test\"\nlisten = \"127.0.0.1:0\"\nusers = %q\nruntime_dir = %q\n%s\n%s\n",
		b.Users(), filepath.Join(dir, "run"), serverKeys, tables)
	if err := os.WriteFile(filepath.Join(dir, "besterd.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	b.launch()
	t.Cleanup(b.Stop)
	return b
}

func (b *Broker) launch() {
	logf, err := os.OpenFile(filepath.Join(b.Dir, "besterd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.t.Fatal(err)
	}
	ready := filepath.Join(b.Dir, "ready")
	os.Remove(ready)
	b.cmd = exec.Command(Bin(b.t), "serve", "--config", filepath.Join(b.Dir, "besterd.toml"), "--ready-file", ready)
	b.cmd.Env = append(os.Environ(), "RUST_LOG=debug")
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	b.done = make(chan struct{})
	go func() { b.cmd.Wait(); logf.Close(); close(b.done) }()
	start := time.Now()
	for {
		if text, err := os.ReadFile(ready); err == nil && bytes.Contains(text, []byte("\n")) {
			b.Addr = strings.TrimSpace(strings.SplitN(string(text), "\n", 2)[0])
			return
		}
		select {
		case <-b.done:
			b.t.Fatalf("besterd exited before ready:\n%s", b.Log())
		default:
		}
		if time.Since(start) > Deadline {
			b.t.Fatalf("besterd not ready in time:\n%s", b.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// AddUser adds a user to the store (the daemon reads it again within a second).
func (b *Broker) AddUser(name, password string) {
	b.userCmd(password, "add", name, "--password-stdin")
}

// UserCmd runs `besterd user --users STORE ARGS…`; stdin is the password for add.
func (b *Broker) UserCmd(stdin string, args ...string) string {
	return b.userCmd(stdin, args...)
}

func (b *Broker) userCmd(stdin string, args ...string) string {
	cmd := exec.Command(Bin(b.t), append([]string{"user", "--users", b.Users()}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.t.Fatalf("besterd user %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// Users is the user store's path.
func (b *Broker) Users() string { return filepath.Join(b.Dir, "users.json") }

// URL is bester://HOST:PORT of the main listener.
func (b *Broker) URL() string { return "bester://" + b.Addr }

// Listener is the address of the [[listeners]] entry name (from the ready file).
func (b *Broker) Listener(name string) string {
	text, err := os.ReadFile(filepath.Join(b.Dir, "ready"))
	if err != nil {
		b.t.Fatal(err)
	}
	for _, line := range strings.Split(string(text), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == name {
			return f[2]
		}
	}
	b.t.Fatalf("no listener %q in the ready file:\n%s", name, text)
	return ""
}

// Log is the daemon's log so far.
func (b *Broker) Log() string {
	text, _ := os.ReadFile(filepath.Join(b.Dir, "besterd.log"))
	return string(text)
}

// Stop sends SIGTERM and waits (up to the deadline) for the daemon to exit.
func (b *Broker) Stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	select {
	case <-b.done:
		return
	default:
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(Deadline):
		b.cmd.Process.Kill()
		b.t.Errorf("besterd did not stop on SIGTERM:\n%s", b.Log())
	}
}

// Restart stops the daemon and starts it again on the same directory (a new port).
func (b *Broker) Restart() {
	b.Stop()
	b.launch()
}

// Eventually polls f until it is true or the deadline passes.
func Eventually(t testing.TB, what string, f func() bool) {
	t.Helper()
	start := time.Now()
	for !f() {
		if time.Since(start) > Deadline {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
