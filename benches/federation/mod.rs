//! `federation-compare`: delivery across servers, besterd beside a NATS cluster, driven by the
//! same client code and the C peers of `compare/echo.c`.
//!
//! Delivery (window 1 and 64, 100-byte payloads): a client on the first server sends, a user on
//! the last one receives.
//! - `nats`: a 2-node nats-server cluster (`cluster { routes }` on loopback); a publisher on node
//!   1, a subscriber on node 2.
//! - `besterd`: servers a and b linked as peers; a's handler (`echo bester sendServers ["b"]`)
//!   sends each message to b, whose handler (`echo bester sendClients ["u1"]`) delivers it to u1
//!   on b. The sender gets a's report for each message (b's `delivered: ["u1"]`).
//! - `direct`: the same two servers, but a's handler (`echo bester sendClients ["u1@b"]`) names
//!   the user on b: a delivers over the peer link and b pushes to u1 without its handler (a
//!   delivery frame and its ack instead of a message, b's handler and its answer). The sender
//!   gets a's reply (`delivered: ["u1@b"]`).
//! - `local`: besterd's own single server: a's handler delivers to u1 on a (the p50 goal's base).
//! - `chain`: a → b → c (b's handler sends on to c, c's delivers), within the hop limit.
//!
//! Request-reply across servers (window 1 and 64): `nats-rr`, a requester on node 1 and the C responder
//! on node 2; `besterd-rr`, a client on a whose handler answers `sendServers ["b"]` with
//! `"replies": true`, and b's C echo handler, whose data comes back in the reply.
//!
//! Every message is checked: delivered once, in order on the receiving connection, with its exact
//! payload; every besterd report is checked too (b's status and `delivered`). A run with an error,
//! a lost message or a timeout is invalid and left out of the table. The window counts messages
//! sent and not yet received. Server CPU (utime + stime from /proc of both servers, and apart of the
//! handlers) is given per message; each system gets fresh servers per measurement; runs are
//! interleaved (every system once per run), medians of the runs, ratios per run.
//!
//! Environment: `BENCH_ECHO` (required), `BENCH_SECS` (default 3), `BENCH_RUNS` (default 3),
//! `BENCH_FED` (comma list of nats,besterd,direct,local,chain,nats-rr,besterd-rr; default all),
//! `BENCH_WINDOWS` (default `1,64`),
//! `BENCH_NATS` (nats-server binary), `BENCH_FED_BASELINE` (another besterd binary: each besterd
//! system runs again right after itself as `system@base` with that build, and the table gives
//! this build ÷ the baseline per run).

use std::collections::{HashSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use besterd::client::Client;
use serde_json::{Value, json};

use crate::common::Broker;
use crate::compare::{
    self, NATS_PASS, NATS_USER, PAYLOAD, Proto, REPLY_TIMEOUT, SUBJECT, bester_request, children,
    cpu_seconds, echo_bin, find, frame_id, free_port, median, payload, read_line,
};

const SECRET: &str = "bench-federation-secret-0123";
const FED_SUBJECT: &str = "bench.fed";
const WARM_SUBJECT: &str = "bench.warm";
const DELIVERY: [&str; 5] = ["nats", "besterd", "direct", "local", "chain"];
const REQUEST_REPLY: [&str; 2] = ["nats-rr", "besterd-rr"];

/// How the two ends talk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wire {
    Bester,
    Nats,
}

/// Servers under test, fresh for one measurement.
struct Setup {
    wire: Wire,
    /// Where the sender connects, and the receiver.
    send: SocketAddr,
    recv: SocketAddr,
    servers: Vec<u32>,
    handlers: Vec<u32>,
    /// What every besterd report must contain.
    report: String,
    _brokers: Vec<Broker>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn toml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A besterd server `name` whose `echo` handler is `echo bester ARGS…`, with these peers.
fn besterd(name: &str, args: &[&str], peers: &[(&str, Option<SocketAddr>)]) -> Broker {
    let echo = echo_bin();
    let mut command = vec![echo.as_str(), "bester"];
    command.extend_from_slice(args);
    let mut tables = format!(
        "[handlers.echo]\ncommand = {}\nprocesses = 1\n",
        toml_list(&command)
    );
    for (peer, address) in peers {
        tables.push_str(&format!("[peers.{peer}]\nsecret = {SECRET:?}\n"));
        if let Some(a) = address {
            tables.push_str(&format!("address = \"{a}\"\n"));
        }
    }
    Broker::launch(
        name,
        "127.0.0.1:0",
        "max_connections_per_ip = 100000\nlogin_failures_per_ip = 100000",
        &tables,
        &[("u0", "pw"), ("u1", "pw")],
    )
}

fn wait_for_peers(b: &Broker, want: &[&str]) {
    let (mut c, _) = Client::login(b.addr, "u0", "pw").unwrap();
    c.set_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let started = Instant::now();
    for n in 0.. {
        let who = c
            .request(&format!("w{n}"), "bester.whoami", &Value::Null)
            .unwrap();
        if who["data"]["peers"] == json!(want) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "peers {want:?} not linked: {who}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// One message end to end through fresh clients (handlers connected, links up).
fn warm_besterd(send: SocketAddr, recv: SocketAddr, report: &str) {
    let started = Instant::now();
    loop {
        let (mut rx, _) = Client::login(recv, "u1", "pw").unwrap();
        let (mut tx, _) = Client::login(send, "u0", "pw").unwrap();
        rx.set_timeout(Some(REPLY_TIMEOUT)).unwrap();
        tx.set_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let r = tx.request("warm", "echo", &json!("x")).unwrap();
        if r["header"]["status"] == "ok" && r.to_string().contains(report) {
            let push = rx.recv().unwrap().expect("the warm-up push");
            assert_eq!(push["data"], "x", "{push}");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "path not up: {r}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn pids(brokers: &[Broker]) -> (Vec<u32>, Vec<u32>) {
    let servers: Vec<u32> = brokers.iter().map(Broker::pid).collect();
    let handlers = servers.iter().flat_map(|s| children(*s)).collect();
    (servers, handlers)
}

fn start_besterd(system: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (brokers, report): (Vec<Broker>, &str) = match system {
        "local" | "local-rr" => {
            let a = besterd("a", &["sendClients", r#"["u1"]"#], &[]);
            (vec![a], r#""delivered":["u1"],"offline":[]"#)
        }
        "besterd" => {
            let a = besterd("a", &["sendServers", r#"["b"]"#], &[("b", None)]);
            let b = besterd("b", &["sendClients", r#"["u1"]"#], &[("a", Some(a.addr))]);
            wait_for_peers(&a, &["b"]);
            (
                vec![a, b],
                r#""servers":{"b":{"status":"ok","delivered":["u1"],"offline":[]}}"#,
            )
        }
        "direct" => {
            let a = besterd("a", &["sendClients", r#"["u1@b"]"#], &[("b", None)]);
            let b = besterd("b", &[], &[("a", Some(a.addr))]);
            wait_for_peers(&a, &["b"]);
            (vec![a, b], r#""delivered":["u1@b"],"offline":[]"#)
        }
        "chain" => {
            let a = besterd("a", &["sendServers", r#"["b"]"#], &[("b", None)]);
            let b = besterd(
                "b",
                &["sendServers", r#"["c"]"#],
                &[("a", Some(a.addr)), ("c", None)],
            );
            let c = besterd("c", &["sendClients", r#"["u1"]"#], &[("b", Some(b.addr))]);
            wait_for_peers(&a, &["b"]);
            wait_for_peers(&b, &["a", "c"]);
            (
                vec![a, b, c],
                r#""servers":{"b":{"status":"ok","servers":{"c":{"status":"ok","delivered":["u1"],"offline":[]}}}}"#,
            )
        }
        "besterd-rr" => {
            let a = besterd("a", &["sendServers", r#"["b"]"#, "replies"], &[("b", None)]);
            let b = besterd("b", &[], &[("a", Some(a.addr))]);
            wait_for_peers(&a, &["b"]);
            (vec![a, b], r#""servers":{"b":{"status":"ok""#)
        }
        other => panic!("unknown system {other:?}"),
    };
    let send = brokers[0].addr;
    let recv = brokers.last().unwrap().addr;
    if system != "besterd-rr" {
        warm_besterd(send, recv, report);
    }
    let (servers, handlers) = pids(&brokers);
    Setup {
        wire: Wire::Bester,
        send,
        recv,
        servers,
        handlers,
        report: report.to_string(),
        _brokers: brokers,
        children: Vec::new(),
        _dir: dir,
    }
}

/// A 2-node nats-server cluster on loopback (client ports, route ports), both nodes up and
/// routed. With `responder`, the C responder on node 2 answers `SUBJECT`.
fn start_nats(responder: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let bin = std::env::var("BENCH_NATS").unwrap_or_else(|_| "nats-server".into());
    let (p1, p2, r1, r2) = (free_port(), free_port(), free_port(), free_port());
    let mut children = Vec::new();
    for (i, (port, route, other)) in [(p1, r1, r2), (p2, r2, r1)].into_iter().enumerate() {
        let conf = dir.path().join(format!("node{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\nauthorization {{ user: {NATS_USER}, password: {NATS_PASS:?} }}\n\
                 cluster {{\n  name: bench\n  listen: 127.0.0.1:{route}\n  routes: [nats://127.0.0.1:{other}]\n}}\n"
            ),
        )
        .unwrap();
        children.push(
            Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nats-server"),
        );
    }
    let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
    let started = Instant::now();
    while TcpStream::connect(addr(p1)).is_err() || TcpStream::connect(addr(p2)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "nats not up");
        thread::sleep(Duration::from_millis(20));
    }
    let servers: Vec<u32> = children.iter().map(Child::id).collect();
    let mut handlers = Vec::new();
    if responder {
        let mut r = Command::new(echo_bin())
            .args(["nats", "127.0.0.1", &p2.to_string(), NATS_USER, NATS_PASS])
            .arg(SUBJECT)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the responder");
        assert_eq!(read_line(&mut r), "ready");
        handlers.push(r.id());
        children.push(r);
        // The responder's interest reaches node 1 through the route: a request is answered.
        let mut probe = nats_conn(addr(p1), "probe", "SUB _INBOX.probe 1\r\n");
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut seen = Vec::new();
        loop {
            probe
                .write_all(format!("PUB {SUBJECT} _INBOX.probe 1\r\nx\r\n").as_bytes())
                .unwrap();
            let mut buf = [0u8; 4096];
            if let Ok(n) = probe.read(&mut buf) {
                seen.extend_from_slice(&buf[..n]);
                if find(&seen, b"MSG _INBOX.probe").is_some() {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no route to the responder"
            );
        }
    }
    Setup {
        wire: Wire::Nats,
        send: addr(p1),
        recv: addr(p2),
        servers,
        handlers,
        report: String::new(),
        _brokers: Vec::new(),
        children,
        _dir: dir,
    }
}

/// A NATS connection that has sent CONNECT and `then`, and seen the PONG after them.
fn nats_conn(addr: SocketAddr, name: &str, then: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let hello = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"user\":\"{NATS_USER}\",\"pass\":\"{NATS_PASS}\",\"name\":\"{name}\",\"lang\":\"rust\",\"version\":\"1\",\"protocol\":1}}\r\n{then}PING\r\n"
    );
    s.write_all(hello.as_bytes()).unwrap();
    let mut seen = Vec::new();
    while find(&seen, b"PONG\r\n").is_none() {
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("nats handshake");
        assert!(n > 0, "nats closed");
        seen.extend_from_slice(&buf[..n]);
        assert!(find(&seen, b"-ERR").is_none(), "nats refused");
    }
    s
}

/// A NATS item: its line, and a MSG's payload.
type NatsItem<'a> = (String, Option<&'a [u8]>);

/// A connection's input: bytes read and not yet used.
#[derive(Default)]
struct Input {
    buf: Vec<u8>,
    pos: usize,
}

impl Input {
    /// Read what the (non-blocking) stream has; `Err` on end of stream or an error.
    fn fill(&mut self, s: &mut TcpStream) -> Result<(), String> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 65536];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => return Err("connection closed by the server".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// The next complete besterd frame body.
    fn frame(&mut self) -> Option<&[u8]> {
        let rest = &self.buf[self.pos..];
        let n = u32::from_le_bytes(rest.get(..4)?.try_into().unwrap()) as usize;
        let body = rest.get(4..4 + n)?;
        self.pos += 4 + n;
        Some(body)
    }

    /// The next NATS item: a control line, or a MSG line with its payload.
    fn nats(&mut self) -> Result<Option<NatsItem<'_>>, String> {
        let rest = &self.buf[self.pos..];
        let Some(eol) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&rest[..eol]).into_owned();
        if !line.starts_with("MSG ") {
            self.pos += eol + 2;
            return Ok(Some((line, None)));
        }
        let n: usize = line
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("bad MSG line {line}"))?;
        if rest.len() < eol + 2 + n + 2 {
            return Ok(None);
        }
        let start = self.pos + eol + 2;
        self.pos = start + n + 2;
        Ok(Some((line, Some(&self.buf[start..start + n]))))
    }
}

/// What one delivery measurement saw.
#[derive(Default)]
struct Delivery {
    done: u64,
    errors: Vec<String>,
    latencies: Vec<Duration>,
}

fn set_nonblocking(s: &TcpStream) {
    s.set_nonblocking(true).unwrap();
    s.set_nodelay(true).unwrap();
}

/// Wait until `tx` (when `want_write`, for writing) or either stream is readable.
fn wait(tx: &TcpStream, rx: &TcpStream, want_write: bool, timeout: Duration) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: tx.as_raw_fd(),
            events: libc::POLLIN | if want_write { libc::POLLOUT } else { 0 },
            revents: 0,
        },
        libc::pollfd {
            fd: rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfd entries for descriptors owned by the streams.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout.as_millis() as i32) };
    n > 0 || (n < 0 && std::io::Error::last_os_error().kind() == ErrorKind::Interrupted)
}

/// Keep `window` messages between sending on `tx` and receiving on `rx` for `secs`, then drain.
fn deliver(setup: &Setup, window: usize, secs: f64, at_start: impl FnOnce()) -> Delivery {
    let mut out = Delivery::default();
    let (mut tx, mut rx) = match setup.wire {
        Wire::Bester => {
            let (rx, _) = Client::login(setup.recv, "u1", "pw").unwrap();
            let (tx, _) = Client::login(setup.send, "u0", "pw").unwrap();
            (tx.into_stream(), rx.into_stream())
        }
        Wire::Nats => {
            // Both subjects in one batch: once a warm-up message arrives, node 1 knows both.
            let subs = format!("SUB {FED_SUBJECT} 1\r\nSUB {WARM_SUBJECT} 2\r\n");
            let mut rx = nats_conn(setup.recv, "subscriber", &subs);
            let mut tx = nats_conn(setup.send, "publisher", "");
            rx.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let started = Instant::now();
            let mut seen = Vec::new();
            while find(&seen, b"MSG bench.warm").is_none() {
                tx.write_all(format!("PUB {WARM_SUBJECT} 1\r\nw\r\n").as_bytes())
                    .unwrap();
                let mut buf = [0u8; 4096];
                if let Ok(n) = rx.read(&mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "no route between the nats nodes"
                );
            }
            (tx, rx)
        }
    };
    set_nonblocking(&tx);
    set_nonblocking(&rx);
    let (mut tin, mut rin) = (Input::default(), Input::default());
    let mut sent_at: VecDeque<Instant> = VecDeque::new();
    let mut unreported: HashSet<u64> = HashSet::new();
    let (mut next, mut expected) = (0u64, 0u64);
    let mut pending: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut want = Vec::new();
    at_start();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let fail = |out: &mut Delivery, e: String| out.errors.push(e);
    'run: loop {
        let now = Instant::now();
        if now < deadline {
            while sent_at.len() < window {
                match setup.wire {
                    Wire::Bester => {
                        bester_request(next, &mut pending);
                        unreported.insert(next);
                    }
                    Wire::Nats => {
                        write!(pending, "PUB {FED_SUBJECT} {PAYLOAD}\r\n").unwrap();
                        payload(next, &mut pending);
                        pending.extend_from_slice(b"\r\n");
                    }
                }
                sent_at.push_back(now);
                next += 1;
            }
        }
        while !pending.is_empty() {
            match tx.write(&pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    fail(&mut out, format!("write: {e}"));
                    break 'run;
                }
            }
        }
        if sent_at.is_empty() && unreported.is_empty() && pending.is_empty() && now >= deadline {
            break;
        }
        if !wait(&tx, &rx, !pending.is_empty(), REPLY_TIMEOUT) {
            fail(
                &mut out,
                format!(
                    "nothing for {REPLY_TIMEOUT:?} with {} undelivered, {} unreported",
                    sent_at.len(),
                    unreported.len()
                ),
            );
            break;
        }
        if let Err(e) = tin.fill(&mut tx).and_then(|()| rin.fill(&mut rx)) {
            fail(&mut out, e);
            break;
        }
        // The sender's side: besterd reports, NATS control lines.
        match setup.wire {
            Wire::Bester => {
                while let Some(body) = tin.frame() {
                    let id = frame_id(body);
                    let ok = id.is_some_and(|id| unreported.remove(&id))
                        && find(body, br#""status":"ok""#) == Some(11)
                        && find(body, setup.report.as_bytes()).is_some();
                    if !ok {
                        let text = String::from_utf8_lossy(body).into_owned();
                        fail(&mut out, format!("unexpected report {text}"));
                        break 'run;
                    }
                }
            }
            Wire::Nats => loop {
                match tin.nats() {
                    Ok(None) => break,
                    Ok(Some((line, None))) if line == "PING" => {
                        pending.extend_from_slice(b"PONG\r\n")
                    }
                    // INFO comes again whenever the cluster's client URLs change.
                    Ok(Some((line, None)))
                        if line == "PONG"
                            || line.starts_with("+OK")
                            || line.starts_with("INFO") => {}
                    Ok(Some((line, _))) => {
                        fail(&mut out, format!("publisher got {line}"));
                        break 'run;
                    }
                    Err(e) => {
                        fail(&mut out, e);
                        break 'run;
                    }
                }
            },
        }
        // The receiver's side: every message once, in order, with its payload.
        let now = Instant::now();
        loop {
            let data = match setup.wire {
                Wire::Bester => match rin.frame() {
                    None => break,
                    Some(body) => {
                        // `…"data":<payload>}`, after a push header.
                        want.clear();
                        want.extend_from_slice(b"\"data\":");
                        payload(expected, &mut want);
                        want.push(b'}');
                        let ok = find(body, br#""kind":"push""#).is_some() && body.ends_with(&want);
                        if !ok {
                            let text = String::from_utf8_lossy(body).into_owned();
                            fail(&mut out, format!("message {expected} wrong: {text}"));
                            break 'run;
                        }
                        continue_ok(&mut sent_at, &mut out, now, &mut expected);
                        continue;
                    }
                },
                Wire::Nats => match rin.nats() {
                    Ok(None) => break,
                    Ok(Some((line, data))) => (line, data.map(<[u8]>::to_vec)),
                    Err(e) => {
                        fail(&mut out, e);
                        break 'run;
                    }
                },
            };
            match data {
                (line, None) if line == "PING" => {
                    let _ = (&rx).write_all(b"PONG\r\n");
                }
                (line, None)
                    if line == "PONG" || line.starts_with("+OK") || line.starts_with("INFO") => {}
                (line, Some(_)) if line.starts_with(&format!("MSG {WARM_SUBJECT} ")) => {}
                (line, Some(body)) if line.starts_with(&format!("MSG {FED_SUBJECT} 1 ")) => {
                    want.clear();
                    payload(expected, &mut want);
                    if body != want {
                        fail(&mut out, format!("message {expected} wrong"));
                        break 'run;
                    }
                    continue_ok(&mut sent_at, &mut out, now, &mut expected);
                }
                (line, _) => {
                    fail(&mut out, format!("subscriber got {line}"));
                    break 'run;
                }
            }
        }
        if expected > next {
            fail(&mut out, "more messages than were sent".into());
            break;
        }
    }
    out
}

/// The next message arrived in order: count it and its latency.
fn continue_ok(sent_at: &mut VecDeque<Instant>, out: &mut Delivery, now: Instant, n: &mut u64) {
    if let Some(t) = sent_at.pop_front() {
        out.latencies.push(now.saturating_duration_since(t));
    }
    out.done += 1;
    *n += 1;
}

fn percentile(lat: &mut [Duration], p: f64) -> u64 {
    lat.sort_unstable();
    let i = ((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1));
    lat.get(i).map_or(0, |d| d.as_micros() as u64)
}

fn cpu(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

/// One measurement of `system` on fresh servers; `system@base` runs it with the build named by
/// `BENCH_FED_BASELINE`.
fn measure(system: &str, window: usize, secs: f64) -> Value {
    let bare = crate::choose_build(system, "BENCH_FED_BASELINE");
    let mut m = measure_bare(bare, window, secs);
    m["system"] = json!(system);
    m
}

fn measure_bare(system: &str, window: usize, secs: f64) -> Value {
    let load = crate::loadavg();
    let setup = match system {
        "nats" => start_nats(false),
        "nats-rr" => start_nats(true),
        other => start_besterd(other),
    };
    let me = std::process::id();
    let mut cpu0 = (0.0, 0.0, 0.0);
    let snapshot = |setup: &Setup| (cpu(&setup.servers), cpu(&setup.handlers), cpu_seconds(me));
    let t0 = Instant::now();
    let (done, errors, mut lat) = if system.ends_with("-rr") {
        let proto = if system == "nats-rr" {
            Proto::Nats
        } else {
            Proto::BesterRemote
        };
        let (results, _) = compare::run_clients(proto, setup.send, 1, window, secs, || {
            cpu0 = snapshot(&setup)
        });
        let done = results.iter().map(|r| r.done).sum();
        let errors: Vec<String> = results.iter().flat_map(|r| r.errors.clone()).collect();
        let lat: Vec<Duration> = results.into_iter().flat_map(|r| r.latencies).collect();
        (done, errors, lat)
    } else {
        let d = deliver(&setup, window, secs, || cpu0 = snapshot(&setup));
        (d.done, d.errors, d.latencies)
    };
    let elapsed = t0.elapsed().as_secs_f64();
    let (server1, handler1, client1) = snapshot(&setup);
    drop(setup);
    let per_msg = |c: f64| (c / done.max(1) as f64 * 1e6 * 100.0).round() / 100.0;
    json!({
        "system": system, "window": window, "messages": done,
        "per_s": (done as f64 / elapsed).round(),
        "p50_us": percentile(&mut lat, 0.5), "p99_us": percentile(&mut lat, 0.99),
        "server_cpu_us_per_msg": per_msg(server1 - cpu0.0),
        "handler_cpu_us_per_msg": per_msg(handler1 - cpu0.1),
        "client_cpu_us_per_msg": per_msg(client1 - cpu0.2),
        "cores_busy": ((server1 - cpu0.0 + handler1 - cpu0.1 + client1 - cpu0.2) / elapsed * 100.0).round() / 100.0,
        "loadavg": load,
        "errors": errors.len(), "first_error": errors.first(),
    })
}

/// The whole comparison: runs × windows × systems, interleaved, then tables of medians.
pub fn federation_compare() -> Value {
    let env = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let secs = env("BENCH_SECS", 3.0);
    let runs = env("BENCH_RUNS", 3.0) as usize;
    let chosen: Vec<String> = std::env::var("BENCH_FED")
        .unwrap_or_else(|_| [DELIVERY.as_slice(), &REQUEST_REPLY].concat().join(","))
        .split(',')
        .map(str::to_string)
        .collect();
    let windows: Vec<usize> = std::env::var("BENCH_WINDOWS")
        .unwrap_or_else(|_| "1,64".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let mut plan: Vec<(&str, usize)> = Vec::new();
    for &w in &windows {
        plan.extend(DELIVERY.iter().map(|s| (*s, w)));
    }
    for &w in &windows {
        plan.extend(REQUEST_REPLY.iter().map(|s| (*s, w)));
    }
    plan.retain(|(s, _)| chosen.iter().any(|c| c == s));
    let baseline = std::env::var_os("BENCH_FED_BASELINE").is_some();
    let plan: Vec<(String, usize)> = plan
        .into_iter()
        .flat_map(|(s, w)| {
            let base = (baseline && !s.starts_with("nats")).then(|| (format!("{s}@base"), w));
            std::iter::once((s.to_string(), w)).chain(base)
        })
        .collect();
    let mut all = Vec::new();
    for run in 0..runs {
        for (system, window) in &plan {
            let (system, window) = (system.as_str(), *window);
            let mut m = measure(system, window, secs);
            m["run"] = json!(run);
            eprintln!("run {run} {m}");
            all.push(m);
        }
    }
    let valid = |m: &&Value| m["errors"] == 0;
    let med = |system: &str, window: usize, key: &str| -> f64 {
        median(
            all.iter()
                .filter(valid)
                .filter(|m| m["system"] == system && m["window"] == window)
                .filter_map(|m| m[key].as_f64())
                .collect(),
        )
    };
    // a/b within each run, then the median of the ratios.
    let ratio = |a: &str, b: &str, window: usize, key: &str| -> f64 {
        let get = |s: &str, run: usize| {
            all.iter()
                .filter(valid)
                .find(|m| m["system"] == s && m["window"] == window && m["run"] == run)
                .and_then(|m| m[key].as_f64())
        };
        median(
            (0..runs)
                .filter_map(|r| Some(get(a, r)? / get(b, r)?))
                .collect(),
        )
    };
    let invalid = all.iter().filter(|m| m["errors"] != 0).count();
    let mut table = serde_json::Map::new();
    println!();
    println!(
        "| window | system | messages/s | p50 µs | p99 µs | server CPU µs/msg (all servers) | handler CPU µs/msg | cores busy | ÷ NATS msg/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (system, window) in &plan {
        let (system, window) = (system.as_str(), *window);
        let nats = if system.trim_end_matches("@base").ends_with("-rr") {
            "nats-rr"
        } else {
            "nats"
        };
        let r = ratio(system, nats, window, "per_s");
        println!(
            "| {window} | {system} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {r:.2} |",
            med(system, window, "per_s"),
            med(system, window, "p50_us"),
            med(system, window, "p99_us"),
            med(system, window, "server_cpu_us_per_msg"),
            med(system, window, "handler_cpu_us_per_msg"),
            med(system, window, "cores_busy"),
        );
        table.insert(
            format!("{system}_w{window}"),
            json!({"per_s": med(system, window, "per_s"), "p50_us": med(system, window, "p50_us"),
                   "p99_us": med(system, window, "p99_us"),
                   "server_cpu_us_per_msg": med(system, window, "server_cpu_us_per_msg"),
                   "over_nats": r}),
        );
    }
    for (system, window) in plan.iter().filter(|(s, _)| s.ends_with("@base")) {
        let this = system.trim_end_matches("@base");
        let r = ratio(this, system, *window, "per_s");
        println!("window {window}: {this} messages/s, this build ÷ the baseline = {r:.2}");
        table.insert(format!("{this}_w{window}_over_base"), json!(r));
    }
    let planned = |s: &str, w: usize| plan.iter().any(|(p, pw)| p == s && *pw == w);
    for w in [1, 64] {
        for (system, key) in [
            ("besterd", "p50_over_local"),
            ("direct", "direct_p50_over_local"),
        ] {
            if planned(system, w) && planned("local", w) {
                let p = ratio(system, "local", w, "p50_us");
                println!(
                    "window {w}: p50 of {system} across a↔b ÷ p50 on one server = {p:.2} (goal ≤ 2)"
                );
                table.insert(format!("{key}_w{w}"), json!(p));
            }
        }
    }
    println!(
        "medians of {runs} runs × {secs} s, interleaved; invalid runs (errors, lost, out of order or wrong messages): {invalid}"
    );
    json!({"runs": runs, "seconds": secs, "invalid_runs": invalid, "medians": table})
}
