//! `compare`: besterd and nats-server side by side, driven by the same client code.
//!
//! Each system gets a fresh server per run: besterd with one C echo handler process
//! (`benches/compare/echo.c bester`), nats-server (user/password, loopback) with one C responder
//! (`echo nats`), and, for scenario (a), the floor: the same client through a plain byte relay in
//! front of a byte echo (`echo relay` + `echo unix-echo`, 4 socket crossings like the broker's
//! client → broker → handler → broker → client, no broker logic).
//!
//! Scenarios: (a) 1 connection × 1 in flight, (b) 1 × 64, (c) 8 × 16; 100-byte payloads. Every
//! reply is checked: its id must be outstanding and its data identical to what was sent; a run
//! with an error, a lost reply or a timeout is invalid. Server CPU comes from /proc (utime + stime
//! of the server process, and separately of the handler/responder process), per 100k round trips.
//!
//! Environment: `BENCH_ECHO` (path of the built echo.c, required), `BENCH_SECS` (seconds per
//! measurement, default 3), `BENCH_RUNS` (default 3), `BENCH_NATS` (nats-server binary, default
//! `nats-server`), `BENCH_SYSTEMS` (comma list of besterd,nats,relay; default all).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use besterd::client::Client;
use serde_json::{Value, json};

use crate::common::Broker;

/// Connections, requests in flight per connection.
const SCENARIOS: [(&str, usize, usize); 3] = [("a", 1, 1), ("b", 1, 64), ("c", 8, 16)];
/// Payload bytes (the JSON string including its quotes, and the NATS message body).
pub(crate) const PAYLOAD: usize = 100;
/// Longest any single reply may take before the run is invalid.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on requests per connection and measurement, whatever the duration.
const MAX_PER_CONN: u64 = 5_000_000;
pub(crate) const NATS_USER: &str = "bench";
pub(crate) const NATS_PASS: &str = "bench-pw-0123";
pub(crate) const SUBJECT: &str = "bench.echo";
/// The subject of the JetStream stream [`JS_STREAM`] (benches/durable).
pub(crate) const JS_SUBJECT: &str = "bench.store";
/// The stream's name.
pub(crate) const JS_STREAM: &str = "BENCH";
/// The offline user the storing pushes go to (benches/durable).
pub(crate) const STORED_USER: &str = "off";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proto {
    /// besterd frames.
    Bester,
    /// NATS text protocol.
    Nats,
    /// besterd frames echoed back unchanged.
    Relay,
    /// besterd request-reply across servers: the reply's data is `{"b":<payload>}`, the data
    /// that peer `b`'s handler answered with (`sendServers` with `"replies": true`).
    BesterRemote,
    /// besterd storing pushes (benches/durable): a request of type `store` that the handler
    /// answers with a storing `sendClients` to the offline user `off`; the reply must list `off`
    /// in `stored` (the write is committed).
    BesterStored,
    /// JetStream (benches/durable): a publish to a file-storage stream with a reply subject,
    /// acknowledged by its PubAck, which must name the stream with a sequence number above the
    /// last one.
    JetStream,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Bester => "besterd",
            Proto::Nats => "nats",
            Proto::Relay => "relay",
            Proto::BesterRemote => "besterd-remote",
            Proto::BesterStored => "besterd-stored",
            Proto::JetStream => "jetstream",
        }
    }
}

/// The 100 payload bytes for request `id`: a JSON string (so it is valid besterd data) that
/// differs per request.
pub(crate) fn payload(id: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.push(b'"');
    write!(out, "{id:020}-").unwrap();
    out.resize(start + PAYLOAD - 1, b'x');
    out.push(b'"');
}

pub(crate) fn push_frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

pub(crate) fn bester_request(id: u64, out: &mut Vec<u8>) {
    push_frame(out, |b| {
        write!(
            b,
            r#"{{"header":{{"scope":"client","id":"{id}"}},"payload":{{"type":"echo","data":"#
        )
        .unwrap();
        payload(id, b);
        b.extend_from_slice(b"}}");
    });
}

/// A request of type `store`, its data the payload (answered with a storing `sendClients`).
pub(crate) fn stored_request(id: u64, out: &mut Vec<u8>) {
    push_frame(out, |b| {
        write!(
            b,
            r#"{{"header":{{"scope":"client","id":"{id}"}},"payload":{{"type":"store","data":"#
        )
        .unwrap();
        payload(id, b);
        b.extend_from_slice(b"}}");
    });
}

fn bester_reply(id: u64, out: &mut Vec<u8>) {
    write!(
        out,
        r#"{{"header":{{"status":"ok","kind":"reply","id":"{id}","type":"echo"}},"data":"#
    )
    .unwrap();
    payload(id, out);
    out.push(b'}');
}

/// What one connection did.
#[derive(Default)]
pub(crate) struct ConnResult {
    pub done: u64,
    pub errors: Vec<String>,
    pub latencies: Vec<Duration>,
    /// JetStream: the sequence number of the last PubAck.
    pub last_seq: u64,
}

/// One client connection: keep `window` requests in flight until `deadline`, then drain.
struct Driver {
    stream: TcpStream,
    proto: Proto,
    conn: usize,
    outstanding: HashMap<u64, Instant>,
    input: Vec<u8>,
    pos: usize,
    scratch: Vec<u8>,
    result: ConnResult,
}

impl Driver {
    fn open(proto: Proto, addr: SocketAddr, conn: usize) -> Driver {
        let stream = match proto {
            Proto::Bester | Proto::BesterRemote | Proto::BesterStored => {
                let (client, reply) = Client::login(addr, "u0", "pw").expect("connect to besterd");
                assert_eq!(reply["header"]["status"], "ok", "{reply}");
                client.into_stream()
            }
            Proto::Nats | Proto::Relay | Proto::JetStream => {
                TcpStream::connect(addr).expect("connect")
            }
        };
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let mut d = Driver {
            stream,
            proto,
            conn,
            outstanding: HashMap::new(),
            input: Vec::with_capacity(1 << 20),
            pos: 0,
            scratch: Vec::new(),
            result: ConnResult::default(),
        };
        if matches!(proto, Proto::Nats | Proto::JetStream) {
            let hello = format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"user\":\"{NATS_USER}\",\"pass\":\"{NATS_PASS}\",\"name\":\"load{conn}\",\"lang\":\"rust\",\"version\":\"1\",\"protocol\":1}}\r\nSUB _INBOX.{conn}.* 1\r\nPING\r\n"
            );
            d.stream.write_all(hello.as_bytes()).unwrap();
            // INFO first, then PONG once CONNECT and SUB are processed.
            loop {
                let line = d.line().expect("nats handshake");
                if line == "PONG" {
                    break;
                }
                assert!(!line.starts_with("-ERR"), "nats refused: {line}");
            }
        }
        d
    }

    /// Read one CRLF line (handshake only).
    fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(at) = find(&self.input[self.pos..], b"\r\n") {
                let line = String::from_utf8_lossy(&self.input[self.pos..self.pos + at]).into();
                self.pos += at + 2;
                return Ok(line);
            }
            self.read_more()?;
        }
    }

    fn read_more(&mut self) -> Result<(), String> {
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.input.len();
        if self.input.capacity() - len < 65536 {
            self.input.reserve(65536);
        }
        let cap = self.input.capacity();
        self.input.resize(cap, 0);
        match self.stream.read(&mut self.input[len..]) {
            Ok(0) => {
                self.input.truncate(len);
                Err("connection closed by the server".into())
            }
            Ok(n) => {
                self.input.truncate(len + n);
                Ok(())
            }
            Err(e) => {
                self.input.truncate(len);
                Err(format!("read: {e}"))
            }
        }
    }

    fn request(&mut self, id: u64, out: &mut Vec<u8>) {
        match self.proto {
            Proto::Bester | Proto::Relay | Proto::BesterRemote => bester_request(id, out),
            Proto::BesterStored => stored_request(id, out),
            Proto::Nats | Proto::JetStream => {
                let subject = if self.proto == Proto::Nats {
                    SUBJECT
                } else {
                    JS_SUBJECT
                };
                write!(out, "PUB {subject} _INBOX.{}.{id} {PAYLOAD}\r\n", self.conn).unwrap();
                payload(id, out);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    fn run(mut self, window: usize, start: &Barrier, deadline_after: Duration) -> ConnResult {
        start.wait();
        let deadline = Instant::now() + deadline_after;
        let mut next = 0u64;
        let mut out = Vec::with_capacity(64 * 1024);
        loop {
            let now = Instant::now();
            if now < deadline && next < MAX_PER_CONN {
                while self.outstanding.len() < window {
                    self.request(next, &mut out);
                    self.outstanding.insert(next, now);
                    next += 1;
                }
            }
            if !out.is_empty() {
                if let Err(e) = self.stream.write_all(&out) {
                    self.result.errors.push(format!("write: {e}"));
                    break;
                }
                out.clear();
            }
            if self.outstanding.is_empty() {
                break;
            }
            if let Err(e) = self.read_more() {
                self.result.errors.push(format!(
                    "{e} with {} replies outstanding",
                    self.outstanding.len()
                ));
                break;
            }
            if let Err(e) = self.replies(&mut out) {
                self.result.errors.push(e);
                break;
            }
        }
        self.result
    }

    /// Check every complete reply in the input. NATS PINGs are answered into `out`.
    fn replies(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        loop {
            let rest = &self.input[self.pos..];
            let (used, id, ok) = match self.proto {
                Proto::Bester | Proto::Relay | Proto::BesterRemote | Proto::BesterStored => {
                    if rest.len() < 4 {
                        return Ok(());
                    }
                    let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                    if rest.len() < 4 + n {
                        return Ok(());
                    }
                    let body = &rest[4..4 + n];
                    let id = frame_id(body).ok_or_else(|| {
                        format!(
                            "reply without a readable id: {}",
                            String::from_utf8_lossy(body)
                        )
                    })?;
                    self.scratch.clear();
                    if self.proto == Proto::Relay {
                        bester_request(id, &mut self.scratch);
                        self.scratch.drain(..4);
                    } else {
                        bester_reply(id, &mut self.scratch);
                    }
                    let ok = match self.proto {
                        Proto::BesterRemote => remote_reply(body, id),
                        Proto::BesterStored => stored_reply(body, id),
                        _ => {
                            body == self.scratch.as_slice()
                                || (self.proto == Proto::Bester && same_reply(body, id))
                        }
                    };
                    if !ok {
                        return Err(format!(
                            "reply {id} differs: {}",
                            String::from_utf8_lossy(body)
                        ));
                    }
                    (4 + n, id, ok)
                }
                Proto::Nats | Proto::JetStream => {
                    let Some(eol) = find(rest, b"\r\n") else {
                        return Ok(());
                    };
                    let line = &rest[..eol];
                    if line == b"PING" {
                        out.extend_from_slice(b"PONG\r\n");
                        self.pos += eol + 2;
                        continue;
                    }
                    if line == b"PONG" || line.starts_with(b"+OK") || line.starts_with(b"INFO") {
                        self.pos += eol + 2;
                        continue;
                    }
                    let text = String::from_utf8_lossy(line).into_owned();
                    // A PubAck has no reply subject, and nats-server then writes two spaces.
                    let fields: Vec<&str> = text.split_whitespace().collect();
                    if fields.len() != 4 || fields[0] != "MSG" {
                        return Err(format!("unexpected from nats: {text}"));
                    }
                    let n: usize = fields[3].parse().map_err(|_| format!("bad MSG {text}"))?;
                    if rest.len() < eol + 2 + n + 2 {
                        return Ok(());
                    }
                    let prefix = format!("_INBOX.{}.", self.conn);
                    let id: u64 = fields[1]
                        .strip_prefix(&prefix)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| format!("reply on an unknown subject: {text}"))?;
                    let data = &rest[eol + 2..eol + 2 + n];
                    if &rest[eol + 2 + n..eol + 4 + n] != b"\r\n" {
                        return Err(format!("reply {id} is not followed by CRLF"));
                    }
                    if self.proto == Proto::JetStream {
                        let seq = pub_ack_seq(data).ok_or_else(|| {
                            format!(
                                "publish {id}: not a PubAck of stream {JS_STREAM}: {}",
                                String::from_utf8_lossy(data)
                            )
                        })?;
                        if seq <= self.result.last_seq {
                            return Err(format!(
                                "publish {id}: PubAck seq {seq} after seq {}",
                                self.result.last_seq
                            ));
                        }
                        self.result.last_seq = seq;
                    } else {
                        self.scratch.clear();
                        payload(id, &mut self.scratch);
                        if data != self.scratch.as_slice() {
                            return Err(format!("reply {id} differs"));
                        }
                    }
                    (eol + 4 + n, id, true)
                }
            };
            debug_assert!(ok);
            let Some(sent) = self.outstanding.remove(&id) else {
                return Err(format!(
                    "reply {id} was not outstanding (twice, or never asked)"
                ));
            };
            self.result.latencies.push(sent.elapsed());
            self.result.done += 1;
            self.pos += used;
        }
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The digits of `"id":"N"` in a frame body.
pub(crate) fn frame_id(body: &[u8]) -> Option<u64> {
    let at = find(body, br#""id":""#)? + 6;
    let end = at + body[at..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&body[at..end]).ok()?.parse().ok()
}

/// A besterd reply that is not byte-for-byte the expected one can still be right (another key
/// order): status ok, the id, and the data identical.
fn same_reply(body: &[u8], id: u64) -> bool {
    #[derive(serde::Deserialize)]
    struct Reply<'a> {
        #[serde(borrow)]
        header: HashMap<&'a str, Value>,
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    let Ok(reply) = serde_json::from_slice::<Reply>(body) else {
        return false;
    };
    let mut want = Vec::new();
    payload(id, &mut want);
    reply.header.get("status") == Some(&json!("ok"))
        && reply.header.get("id") == Some(&json!(id.to_string()))
        && reply.data.get().as_bytes() == want.as_slice()
}

/// A reply to a request answered by peer `b`'s handler: status ok, the id, b's report ok, and
/// the data `{"b":<payload>}` byte for byte.
fn remote_reply(body: &[u8], id: u64) -> bool {
    #[derive(serde::Deserialize)]
    struct Reply<'a> {
        #[serde(borrow)]
        header: HashMap<&'a str, Value>,
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    let Ok(reply) = serde_json::from_slice::<Reply>(body) else {
        return false;
    };
    let mut want = b"{\"b\":".to_vec();
    payload(id, &mut want);
    want.push(b'}');
    reply.header.get("status") == Some(&json!("ok"))
        && reply.header.get("id") == Some(&json!(id.to_string()))
        && reply.header.get("servers").map(|s| &s["b"]["status"]) == Some(&json!("ok"))
        && reply.data.get().as_bytes() == want.as_slice()
}

/// The reply to a storing request: status ok, the id, `off` in `stored` and no one refused,
/// delivered or offline.
fn stored_reply(body: &[u8], id: u64) -> bool {
    let Ok(reply) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let h = &reply["header"];
    h["status"] == "ok"
        && h["id"] == json!(id.to_string())
        && h["stored"] == json!([STORED_USER])
        && h["delivered"] == json!([])
        && h["offline"] == json!([])
        && h.get("refused").is_none()
}

/// The sequence number of a JetStream PubAck `{"stream":"BENCH","seq":N}` (no `error`).
fn pub_ack_seq(data: &[u8]) -> Option<u64> {
    let ack: Value = serde_json::from_slice(data).ok()?;
    if ack.get("error").is_some() || ack["stream"] != JS_STREAM {
        return None;
    }
    ack["seq"].as_u64()
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Children of `parent` (from /proc).
pub(crate) fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// A running system under test.
struct System {
    addr: SocketAddr,
    server: u32,
    handler: u32,
    _broker: Option<Broker>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for System {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn echo_bin() -> String {
    std::env::var("BENCH_ECHO").expect("BENCH_ECHO: the built benches/echo.c (scripts/bench.sh)")
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn read_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_string()
}

fn start(proto: Proto) -> System {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_bin();
    match proto {
        Proto::Bester => {
            let tables =
                format!("[handlers.echo]\ncommand = [{echo:?}, \"bester\"]\nprocesses = 1\n");
            let broker = Broker::launch(
                "bench",
                "127.0.0.1:0",
                "max_connections_per_ip = 100000\nlogin_failures_per_ip = 100000",
                &tables,
                &[("u0", "pw")],
            );
            let server = broker.pid();
            // Wait for the handler to connect: a round trip succeeds.
            let started = Instant::now();
            loop {
                let (mut c, _) = Client::login(broker.addr, "u0", "pw").unwrap();
                c.set_timeout(Some(REPLY_TIMEOUT)).unwrap();
                let r = c.request("warm", "echo", &json!("x")).unwrap();
                if r["header"]["status"] == "ok" {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "handler not up: {r}"
                );
                thread::sleep(Duration::from_millis(20));
            }
            let handler = *children(server).first().expect("the echo handler process");
            System {
                addr: broker.addr,
                server,
                handler,
                _broker: Some(broker),
                children: Vec::new(),
                _dir: dir,
            }
        }
        Proto::Nats => {
            let port = free_port();
            let bin = std::env::var("BENCH_NATS").unwrap_or_else(|_| "nats-server".into());
            let server = Command::new(bin)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .args(["--user", NATS_USER, "--pass", NATS_PASS])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nats-server");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let started = Instant::now();
            while TcpStream::connect(addr).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "nats-server not up"
                );
                thread::sleep(Duration::from_millis(20));
            }
            let mut responder = Command::new(&echo)
                .args([
                    "nats",
                    "127.0.0.1",
                    &port.to_string(),
                    NATS_USER,
                    NATS_PASS,
                    SUBJECT,
                ])
                .stdout(Stdio::piped())
                .spawn()
                .expect("start the responder");
            assert_eq!(read_line(&mut responder), "ready");
            System {
                addr,
                server: server.id(),
                handler: responder.id(),
                _broker: None,
                children: vec![responder, server],
                _dir: dir,
            }
        }
        Proto::BesterRemote => unreachable!("two servers: started by `federation_compare`"),
        Proto::BesterStored | Proto::JetStream => unreachable!("started by benches/durable"),
        Proto::Relay => {
            let path = dir.path().join("echo.sock");
            let path = path.to_str().unwrap();
            let mut back = Command::new(&echo)
                .args(["unix-echo", path])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            assert_eq!(read_line(&mut back), "ready");
            let mut relay = Command::new(&echo)
                .args(["relay", path])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let port: u16 = read_line(&mut relay).parse().unwrap();
            System {
                addr: format!("127.0.0.1:{port}").parse().unwrap(),
                server: relay.id(),
                handler: back.id(),
                _broker: None,
                children: vec![relay, back],
                _dir: dir,
            }
        }
    }
}

/// Connect `conns` clients, run them for `secs`, and return what each did and the seconds
/// taken; `at_start` runs just before they start.
pub(crate) fn run_clients(
    proto: Proto,
    addr: SocketAddr,
    conns: usize,
    window: usize,
    secs: f64,
    at_start: impl FnOnce(),
) -> (Vec<ConnResult>, f64) {
    let drivers: Vec<Driver> = (0..conns).map(|c| Driver::open(proto, addr, c)).collect();
    let barrier = Arc::new(Barrier::new(conns + 1));
    let threads: Vec<_> = drivers
        .into_iter()
        .map(|d| {
            let barrier = barrier.clone();
            thread::spawn(move || d.run(window, &barrier, Duration::from_secs_f64(secs)))
        })
        .collect();
    at_start();
    barrier.wait();
    let t0 = Instant::now();
    let results = threads.into_iter().map(|t| t.join().unwrap()).collect();
    (results, t0.elapsed().as_secs_f64())
}

/// Drive a running system for `secs`; the number of round trips. Panics on any error.
pub fn drive(proto: Proto, addr: SocketAddr, conns: usize, window: usize, secs: f64) -> u64 {
    let (results, _) = run_clients(proto, addr, conns, window, secs, || {});
    for r in &results {
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }
    results.iter().map(|r| r.done).sum()
}

/// One measurement on a fresh system.
fn measure(proto: Proto, conns: usize, window: usize, secs: f64) -> Value {
    let system = start(proto);
    let me = std::process::id();
    let mut cpu0 = (0.0, 0.0, 0.0);
    let (results, elapsed) = run_clients(proto, system.addr, conns, window, secs, || {
        cpu0 = (
            cpu_seconds(system.server),
            cpu_seconds(system.handler),
            cpu_seconds(me),
        );
    });
    let (server0, handler0, client0) = cpu0;
    let (server1, handler1, client1) = (
        cpu_seconds(system.server),
        cpu_seconds(system.handler),
        cpu_seconds(me),
    );
    drop(system);
    let done: u64 = results.iter().map(|r| r.done).sum();
    let errors: Vec<String> = results.iter().flat_map(|r| r.errors.clone()).collect();
    let mut lat: Vec<Duration> = results.into_iter().flat_map(|r| r.latencies).collect();
    lat.sort_unstable();
    let p50 = lat.get(lat.len() / 2).map_or(0, |d| d.as_micros() as u64);
    let per100k = |cpu: f64| (cpu / done.max(1) as f64 * 100_000.0 * 1000.0).round() / 1000.0;
    json!({
        "system": proto.name(), "connections": conns, "window": window,
        "round_trips": done, "seconds": (elapsed * 1000.0).round() / 1000.0,
        "per_s": (done as f64 / elapsed).round(), "p50_us": p50,
        "server_cpu_s_per_100k": per100k(server1 - server0),
        "handler_cpu_s_per_100k": per100k(handler1 - handler0),
        "client_cpu_s_per_100k": per100k(client1 - client0),
        // Cores kept busy by server, handler and client together (2 on this machine = full).
        "cores_busy": ((server1 - server0 + handler1 - handler0 + client1 - client0) / elapsed * 100.0).round() / 100.0,
        "errors": errors.len(), "first_error": errors.first().map(|e| e.as_str()),
    })
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The whole comparison: runs × scenarios × systems, then the table of medians.
pub fn compare() -> Value {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let systems: Vec<Proto> = std::env::var("BENCH_SYSTEMS")
        .unwrap_or_else(|_| "besterd,nats,relay".into())
        .split(',')
        .filter_map(|s| match s.trim() {
            "besterd" => Some(Proto::Bester),
            "nats" => Some(Proto::Nats),
            "relay" => Some(Proto::Relay),
            _ => None,
        })
        .collect();
    let scenarios: Vec<(&str, usize, usize)> = match std::env::var("BENCH_SCENARIOS") {
        Ok(list) => SCENARIOS
            .iter()
            .copied()
            .filter(|(n, _, _)| list.split(',').any(|w| w == *n))
            .collect(),
        Err(_) => SCENARIOS.to_vec(),
    };
    let mut all = Vec::new();
    let mut invalid = 0;
    for run in 0..runs {
        for &(name, conns, window) in &scenarios {
            for &proto in &systems {
                if proto == Proto::Relay && name != "a" {
                    continue;
                }
                let mut m = measure(proto, conns, window, secs);
                m["run"] = json!(run);
                m["scenario"] = json!(name);
                eprintln!("run {run} ({name}) {m}");
                if m["errors"] != 0 {
                    invalid += 1;
                }
                all.push(m);
            }
        }
    }
    let valid = |m: &&Value| m["errors"] == 0;
    let pick = |s: &str, p: Proto, key: &str| -> Vec<f64> {
        all.iter()
            .filter(valid)
            .filter(|m| m["scenario"] == s && m["system"] == p.name())
            .filter_map(|m| m[key].as_f64())
            .collect()
    };
    // besterd/NATS ratio within each run, then the median of the ratios.
    let ratio = |s: &str, other: Proto| -> f64 {
        let per_run = (0..runs)
            .filter_map(|run| {
                let get = |p: Proto| {
                    all.iter()
                        .filter(valid)
                        .find(|m| m["run"] == run && m["scenario"] == s && m["system"] == p.name())
                        .and_then(|m| m["per_s"].as_f64())
                };
                Some(get(Proto::Bester)? / get(other)?)
            })
            .collect();
        median(per_run)
    };
    println!();
    println!(
        "| scenario | besterd /s (p50 µs) | NATS /s (p50 µs) | besterd/NATS | server CPU-s per 100k: besterd / NATS | handler CPU-s per 100k: besterd / NATS | relay floor /s (p50 µs) | besterd/relay | cores busy: besterd / NATS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut table = serde_json::Map::new();
    for &(name, conns, window) in &scenarios {
        let m = |p: Proto, k: &str| median(pick(name, p, k));
        let relay = if name == "a" && systems.contains(&Proto::Relay) {
            format!(
                "{:.0} ({:.0}) | {:.2}",
                m(Proto::Relay, "per_s"),
                m(Proto::Relay, "p50_us"),
                ratio(name, Proto::Relay)
            )
        } else {
            "— | —".into()
        };
        println!(
            "| ({name}) {conns} conn × {window} in flight | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {relay} | {:.2} / {:.2} |",
            m(Proto::Bester, "per_s"),
            m(Proto::Bester, "p50_us"),
            m(Proto::Nats, "per_s"),
            m(Proto::Nats, "p50_us"),
            ratio(name, Proto::Nats),
            m(Proto::Bester, "server_cpu_s_per_100k"),
            m(Proto::Nats, "server_cpu_s_per_100k"),
            m(Proto::Bester, "handler_cpu_s_per_100k"),
            m(Proto::Nats, "handler_cpu_s_per_100k"),
            m(Proto::Bester, "cores_busy"),
            m(Proto::Nats, "cores_busy"),
        );
        table.insert(
            name.into(),
            json!({
                "besterd_per_s": m(Proto::Bester, "per_s"), "nats_per_s": m(Proto::Nats, "per_s"),
                "relay_per_s": m(Proto::Relay, "per_s"),
                "besterd_over_nats": ratio(name, Proto::Nats),
                "besterd_over_relay": ratio(name, Proto::Relay),
                "besterd_server_cpu_s_per_100k": m(Proto::Bester, "server_cpu_s_per_100k"),
                "nats_server_cpu_s_per_100k": m(Proto::Nats, "server_cpu_s_per_100k"),
            }),
        );
    }
    println!(
        "medians of {runs} runs × {secs} s; invalid runs (errors, lost or wrong replies): {invalid}"
    );
    if invalid > 0 {
        eprintln!("{invalid} invalid runs: the table above leaves them out");
    }
    json!({"runs": runs, "seconds": secs, "invalid_runs": invalid, "medians": table})
}
