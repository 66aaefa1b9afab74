// Command bench measures request-reply round trips per second through the Go library on both
// sides (clients/go: client → besterd → a handler written with besterd.dev/bester/handler)
// beside nats.go on both sides (nc.Request → nats-server → a nats.go responder, msg.Respond),
// at window 1 and 64 (requests in flight), measured in the same run and interleaved: for each
// of BENCH_RUNS (3) runs, for each window, each system once, with a fresh server and handler.
//
//	scripts/bench.sh go        (or target/gobench [-runs 3] [-secs 3] [-windows 1,64] [-systems bester,nats.go])
//
// Each measurement runs the client in a process of its own (this program, `client`), the
// handler in another (`handler`, started by besterd from its configuration; `responder` beside
// nats-server): 0.5 s of warm-up, then BENCH_SECS seconds counted. Every reply is checked (its
// data is the request's). CPU is utime+stime per 1,000 round trips of the client (getrusage),
// the handler and the broker (/proc/PID/stat), read by the client around the counted phase.
// Prints a Markdown table of medians (ratios are medians of the per-run ratios) and a final
// JSON line. BENCH_PROFILE=DIR writes CPU profiles of the clients and Go handlers there.
// BESTERD_BIN (default target/release/besterd) and NATS_SERVER (default
// nats-server on the PATH) name the servers.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"besterd.dev/bester"
	"besterd.dev/bester/handler"
	"github.com/nats-io/nats.go"
)

const (
	user, password = "bench", "bench-pw"
	warmup         = 500 * time.Millisecond
	deadline       = 20 * time.Second
)

func main() {
	log.SetFlags(0)
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "handler":
			serveBester()
			return
		case "responder":
			serveNats(os.Args[2], os.Args[3])
			return
		case "client":
			runClient(os.Args[2:])
			return
		}
	}
	orchestrate()
}

// ---- the handlers ----

func serveBester() {
	defer profile("handler")()
	err := handler.Serve(func(ctx context.Context, r *handler.Request) handler.Answer {
		return handler.Reply(r.Data)
	})
	if err != nil {
		log.Fatal(err)
	}
}

func serveNats(url, ready string) {
	nc, err := nats.Connect(url, nats.UserInfo(user, password))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := nc.Subscribe("bench", func(m *nats.Msg) {
		if err := m.Respond(m.Data); err != nil {
			log.Print(err)
		}
	}); err != nil {
		log.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(ready, []byte("ready"), 0o600); err != nil {
		log.Fatal(err)
	}
	select {}
}

// ---- the client ----

type payload struct {
	N   int64  `json:"n"`
	Pad string `json:"pad"`
}

var pad = strings.Repeat("x", 80)

// result is what one client process measured.
type result struct {
	Count      int64   `json:"count"`
	Secs       float64 `json:"secs"`
	ClientCPU  float64 `json:"client_cpu"`
	HandlerCPU float64 `json:"handler_cpu"`
	BrokerCPU  float64 `json:"broker_cpu"`
}

// runClient: client SYSTEM URL WINDOW SECS HANDLER_PID BROKER_PID; prints a result as JSON.
func runClient(args []string) {
	system, url := args[0], args[1]
	window, _ := strconv.Atoi(args[2])
	secs, _ := strconv.ParseFloat(args[3], 64)
	hpid, _ := strconv.Atoi(args[4])
	spid, _ := strconv.Atoi(args[5])
	var request func(n int64) error
	switch system {
	case "bester":
		c, err := bester.Dial(context.Background(), url, bester.Auth{Username: user, Password: password})
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		request = func(n int64) error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			reply, err := c.Request(ctx, "bench", payload{n, pad})
			if err != nil {
				return err
			}
			var p payload
			if err := reply.Decode(&p); err != nil {
				return err
			}
			if p.N != n {
				return fmt.Errorf("reply %d to request %d", p.N, n)
			}
			return nil
		}
	case "nats.go":
		nc, err := nats.Connect(url, nats.UserInfo(user, password))
		if err != nil {
			log.Fatal(err)
		}
		defer nc.Close()
		request = func(n int64) error {
			body, err := json.Marshal(payload{n, pad})
			if err != nil {
				return err
			}
			msg, err := nc.Request("bench", body, 30*time.Second)
			if err != nil {
				return err
			}
			var p payload
			if err := json.Unmarshal(msg.Data, &p); err != nil {
				return err
			}
			if p.N != n {
				return fmt.Errorf("reply %d to request %d", p.N, n)
			}
			return nil
		}
	default:
		log.Fatalf("unknown system %q", system)
	}
	var next, done atomic.Int64
	phase := func(d time.Duration) {
		until := time.Now().Add(d)
		var wg sync.WaitGroup
		for w := 0; w < window; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(until) {
					if err := request(next.Add(1)); err != nil {
						log.Fatalf("%s: %v", system, err)
					}
					done.Add(1)
				}
			}()
		}
		wg.Wait()
	}
	phase(warmup)
	done.Store(0)
	c0, h0, s0, t0 := selfCPU(), procCPU(hpid), procCPU(spid), time.Now()
	stop := profile("client-" + system)
	phase(time.Duration(secs * float64(time.Second)))
	stop()
	r := result{Count: done.Load(), Secs: time.Since(t0).Seconds()}
	r.ClientCPU, r.HandlerCPU, r.BrokerCPU = selfCPU()-c0, procCPU(hpid)-h0, procCPU(spid)-s0
	json.NewEncoder(os.Stdout).Encode(r)
}

// profile writes a CPU profile to $BENCH_PROFILE/NAME-PID.pprof until the returned function
// is called (nothing without BENCH_PROFILE).
func profile(name string) func() {
	dir := os.Getenv("BENCH_PROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", name, os.Getpid())))
	if err != nil {
		log.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// procCPU is utime+stime of a process in seconds, from /proc/PID/stat (clock ticks of 1/100 s:
// USER_HZ is 100 on Linux).
func procCPU(pid int) float64 {
	text, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(text)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / 100
}

// ---- the servers ----

type server struct {
	url        string
	proc       *exec.Cmd
	handlerPID int
	handler    *exec.Cmd // the NATS responder (besterd starts and stops its own handler)
	dir        string
}

// started are the processes the orchestrator started (servers, responders), killed by fatalf.
var started []*exec.Cmd

func start(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	started = append(started, cmd)
	return nil
}

// fatalf kills the processes started so far (besterd stops its handler as it exits) and exits.
func fatalf(format string, args ...any) {
	for _, c := range started {
		if c.ProcessState == nil {
			c.Process.Signal(syscall.SIGTERM)
		}
	}
	log.Fatalf(format, args...)
}

func waitFor(what string, ok func() bool) {
	start := time.Now()
	for !ok() {
		if time.Since(start) > deadline {
			fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func repo() string {
	dir, err := os.Getwd()
	if err != nil {
		fatalf("%v", err)
	}
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "Cargo.toml")); err == nil {
			return d
		}
	}
	return dir
}

func startBesterd(self string) *server {
	bin := os.Getenv("BESTERD_BIN")
	if bin == "" {
		bin = filepath.Join(repo(), "target", "release", "besterd")
	}
	dir, err := os.MkdirTemp("", "bester-gobench-")
	if err != nil {
		fatalf("%v", err)
	}
	users := filepath.Join(dir, "users.json")
	add := exec.Command(bin, "user", "--users", users, "add", user, "--password-stdin")
	add.Stdin = strings.NewReader(password + "\n")
	if out, err := add.CombinedOutput(); err != nil {
		fatalf("besterd user add: %v\n%s", err, out)
	}
	config := fmt.Sprintf("[server]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\nusers = %q\nruntime_dir = %q\n[handlers.bench]\ncommand = [%q, \"handler\"]\n",
		users, filepath.Join(dir, "run"), self)
	if err := os.WriteFile(filepath.Join(dir, "b.toml"), []byte(config), 0o600); err != nil {
		fatalf("%v", err)
	}
	ready := filepath.Join(dir, "ready")
	cmd := exec.Command(bin, "serve", "--config", filepath.Join(dir, "b.toml"), "--ready-file", ready)
	cmd.Env = append(os.Environ(), "RUST_LOG=warn")
	cmd.Stderr = os.Stderr
	if err := start(cmd); err != nil {
		fatalf("%v", err)
	}
	s := &server{proc: cmd, dir: dir}
	var addr string
	waitFor("besterd", func() bool {
		text, err := os.ReadFile(ready)
		if err != nil || !strings.Contains(string(text), "\n") {
			return false
		}
		addr = strings.SplitN(string(text), "\n", 2)[0]
		return true
	})
	s.url = "bester://" + user + ":" + password + "@" + addr
	waitFor("the Go handler", func() bool { s.handlerPID = childOf(cmd.Process.Pid); return s.handlerPID != 0 })
	return s
}

// childOf is a child process of pid (0 if there is none yet).
func childOf(pid int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		text, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(text)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			return n
		}
	}
	return 0
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("%v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startNats(self string) *server {
	bin := os.Getenv("NATS_SERVER")
	if bin == "" {
		if p, err := exec.LookPath("nats-server"); err == nil {
			bin = p
		} else {
			bin = "/usr/sbin/nats-server"
		}
	}
	dir, err := os.MkdirTemp("", "nats-gobench-")
	if err != nil {
		fatalf("%v", err)
	}
	port := freePort()
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "--user", user, "--pass", password)
	if err := start(cmd); err != nil {
		fatalf("%v", err)
	}
	s := &server{proc: cmd, dir: dir, url: fmt.Sprintf("nats://127.0.0.1:%d", port)}
	waitFor("nats-server", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	ready := filepath.Join(dir, "ready")
	s.handler = exec.Command(self, "responder", s.url, ready)
	s.handler.Stderr = os.Stderr
	if err := start(s.handler); err != nil {
		fatalf("%v", err)
	}
	waitFor("the nats.go responder", func() bool { _, err := os.Stat(ready); return err == nil })
	s.handlerPID = s.handler.Process.Pid
	return s
}

func (s *server) close() {
	if s.handler != nil {
		s.handler.Process.Kill()
		s.handler.Wait()
	}
	s.proc.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.proc.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(deadline):
		s.proc.Process.Kill()
		<-done
	}
	os.RemoveAll(s.dir)
}

// ---- the orchestration ----

type measured struct {
	Rate, ClientMs, HandlerMs, BrokerMs float64
}

func measure(self, system string, window int, secs float64) measured {
	var s *server
	if system == "nats.go" {
		s = startNats(self)
	} else {
		s = startBesterd(self)
	}
	defer s.close()
	cmd := exec.Command(self, "client", system, s.url, strconv.Itoa(window), strconv.FormatFloat(secs, 'f', -1, 64),
		strconv.Itoa(s.handlerPID), strconv.Itoa(s.proc.Process.Pid))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		s.close()
		fatalf("%s client: %v", system, err)
	}
	var r result
	if err := json.Unmarshal(out, &r); err != nil {
		fatalf("%s client said %q: %v", system, out, err)
	}
	if r.Count == 0 {
		fatalf("%s: no round trips", system)
	}
	perK := 1e6 / float64(r.Count) // ms per 1,000 round trips, from seconds
	return measured{float64(r.Count) / r.Secs, r.ClientCPU * perK, r.HandlerCPU * perK, r.BrokerCPU * perK}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func orchestrate() {
	runs := flag.Int("runs", atoiOr(envOr("BENCH_RUNS", "3")), "runs (medians are taken over them)")
	secs := flag.Float64("secs", atofOr(envOr("BENCH_SECS", "3")), "seconds counted per measurement")
	windowsFlag := flag.String("windows", envOr("BENCH_WINDOWS", "1,64"), "requests in flight")
	systemsFlag := flag.String("systems", envOr("BENCH_SYSTEMS", "bester,nats.go"), "bester, nats.go")
	flag.Parse()
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	var windows []int
	for _, w := range strings.Split(*windowsFlag, ",") {
		windows = append(windows, atoiOr(w))
	}
	systems := strings.Split(*systemsFlag, ",")
	loadStart := loadavg()
	results := map[string][]measured{}
	key := func(system string, window int) string { return fmt.Sprintf("%s@%d", system, window) }
	for run := 1; run <= *runs; run++ {
		for _, w := range windows {
			for _, system := range systems {
				m := measure(self, system, w, *secs)
				results[key(system, w)] = append(results[key(system, w)], m)
				fmt.Fprintf(os.Stderr, "run %d window %d %s: %.0f/s\n", run, w, system, m.Rate)
			}
		}
	}
	fmt.Printf("\nGo client → broker → Go handler; %d runs × %g s, medians; CPU ms per 1,000 round trips (utime+stime); load average %s before, %s after\n\n",
		*runs, *secs, loadStart, loadavg())
	fmt.Println("| window | system | round trips/s | ÷ nats.go | client CPU | handler CPU | broker CPU |")
	fmt.Println("|---|---|---|---|---|---|---|")
	out := map[string]map[string]float64{}
	for _, w := range windows {
		natsRuns := results[key("nats.go", w)]
		for _, system := range systems {
			rs := results[key(system, w)]
			pick := func(f func(measured) float64) float64 {
				var xs []float64
				for _, r := range rs {
					xs = append(xs, f(r))
				}
				return median(xs)
			}
			m := map[string]float64{
				"rate":       pick(func(r measured) float64 { return r.Rate }),
				"client_ms":  pick(func(r measured) float64 { return r.ClientMs }),
				"handler_ms": pick(func(r measured) float64 { return r.HandlerMs }),
				"server_ms":  pick(func(r measured) float64 { return r.BrokerMs }),
			}
			ratio := "—"
			if len(natsRuns) == len(rs) {
				var xs []float64
				for i := range rs {
					xs = append(xs, rs[i].Rate/natsRuns[i].Rate)
				}
				m["ratio"] = median(xs)
				ratio = fmt.Sprintf("%.2f", m["ratio"])
			}
			out[key(system, w)] = m
			fmt.Printf("| %d | %s | %.0f | %s | %.1f | %.1f | %.1f |\n", w, system, m["rate"], ratio, m["client_ms"], m["handler_ms"], m["server_ms"])
		}
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
}

// loadavg is the 1, 5 and 15 minute load averages.
func loadavg() string {
	text, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(text)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

func atoiOr(s string) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		log.Fatalf("not a number: %q", s)
	}
	return n
}

func atofOr(s string) float64 {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		log.Fatalf("not a number: %q", s)
	}
	return f
}
