//! `streams`: a client-to-client stream (`bester.dial`, PROTOCOL.md §5 "Streams") relayed
//! through besterd, beside the floor: a plain TCP relay (`benches/streams/relay.c`, a poll loop
//! copying bytes both ways) on the same machine, carrying the very same frames.
//!
//! Both systems run the same two ends with the same flow control: the writer sends data frames
//! (`{"header":{"stream":N},"data":"xx…"}`, `BENCH_STREAM_FRAME` = 16384 bytes of data) within
//! its credit, the reader grants back what it consumed once that is half the window
//! (`BENCH_STREAM_WINDOW` = 262144, the default `[streams] window_bytes`); through the relay the
//! writer keeps its own account (the relay checks nothing), through besterd the server enforces
//! it. Throughput: `BENCH_STREAM_MB` (256) MiB of data one way, from the first frame written to
//! the last one read, in MiB/s of data; the server's (or relay's) CPU per MiB. Latency: 5,000
//! round trips of a small frame (one end echoes each back on the stream), p50 and p99.
//!
//! Across servers too: alice on server a, bob on server b, the stream over their peer link
//! (PROTOCOL.md §5, "Streams across servers"); its CPU is both servers'. Measured as configured
//! by default (the link negotiates `compress`, so each frame over 256 bytes is deflated on the
//! link) and with `compression = false` on both servers.
//!
//! A fresh server, pair and relay per run, the systems alternating within each run,
//! `BENCH_RUNS` (3) runs, medians, and the ratio besterd / floor of each run side by side.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::Broker;

/// What a data frame costs besides its `data` (PROTOCOL.md §5, "Streams").
const FRAME_COST: u64 = 128;
const ROUND_TRIPS: usize = 5000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One end of a stream, through either system.
struct End {
    out: TcpStream,
    input: BufReader<TcpStream>,
    id: u64,
    window: u64,
    /// What this end may still send.
    credit: u64,
    /// What it has read and not granted back yet.
    consumed: u64,
    body: Vec<u8>,
}

/// What a frame read was.
enum Got {
    Data(usize),
    Credit(u64),
}

impl End {
    fn new(s: TcpStream, id: u64, window: u64) -> End {
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        End {
            input: BufReader::with_capacity(256 * 1024, s.try_clone().unwrap()),
            out: s,
            id,
            window,
            credit: window,
            consumed: 0,
            body: Vec::new(),
        }
    }

    fn read(&mut self) -> Got {
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len).unwrap();
        let len = u32::from_le_bytes(len) as usize;
        self.body.resize(len, 0);
        self.input.read_exact(&mut self.body).unwrap();
        let head = &self.body[..len.min(96)];
        if head.windows(9).any(|w| w == b"\"credit\":") {
            let v: Value = serde_json::from_slice(&self.body).unwrap();
            return Got::Credit(v["header"]["credit"].as_u64().unwrap());
        }
        assert!(
            head.windows(7).any(|w| w == b"\"data\":"),
            "not a data frame: {}",
            String::from_utf8_lossy(head)
        );
        Got::Data(len)
    }

    /// Read until a data frame; credit frames on the way are added. Grants back what was
    /// consumed once it is half the window.
    fn read_data(&mut self, cost: u64) -> usize {
        loop {
            match self.read() {
                Got::Credit(n) => self.credit += n,
                Got::Data(len) => {
                    self.consumed += cost;
                    if self.consumed >= self.window / 2 {
                        let grant = frame(&format!(
                            r#"{{"header":{{"stream":{},"credit":{}}}}}"#,
                            self.id, self.consumed
                        ));
                        self.out.write_all(&grant).unwrap();
                        self.consumed = 0;
                    }
                    return len;
                }
            }
        }
    }

    /// Wait for credit enough for `cost`.
    fn wait_credit(&mut self, cost: u64) {
        while self.credit < cost {
            match self.read() {
                Got::Credit(n) => self.credit += n,
                Got::Data(_) => panic!("data on the writer's side"),
            }
        }
    }
}

fn frame(body: &str) -> Vec<u8> {
    let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

fn data_frame(id: u64, data_len: usize) -> Vec<u8> {
    frame(&format!(
        r#"{{"header":{{"stream":{id}}},"data":"{}"}}"#,
        "x".repeat(data_len)
    ))
}

/// Both ends of a stream through besterd.
fn via_besterd(b: &Broker, window: u64) -> (End, End) {
    let login = |user: &str| {
        let mut s = TcpStream::connect(b.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let identify = json!({"header":{"identify":{"type":"client","authentication":{"username":user,"password":"pw"},"features":["stream"]}}});
        s.write_all(&frame(&identify.to_string())).unwrap();
        let reply = read_json(&mut s);
        assert_eq!(reply["data"]["features"], json!(["stream"]), "{reply}");
        s
    };
    let mut a = login("alice");
    let mut bob = login("bob");
    let dial = json!({"header":{"scope":"client","id":"d"},"payload":{"type":"bester.dial","data":{"to":"bob","stream":"bench"}}});
    a.write_all(&frame(&dial.to_string())).unwrap();
    let incoming = read_json(&mut bob);
    let id = incoming["header"]["stream"].as_u64().unwrap();
    let accept = json!({"header":{"scope":"client","id":"a"},"payload":{"type":"bester.accept","data":{"stream":id}}});
    bob.write_all(&frame(&accept.to_string())).unwrap();
    assert_eq!(read_json(&mut bob)["header"]["status"], "ok");
    let dialled = read_json(&mut a);
    assert_eq!(dialled["data"]["window"], window, "{dialled}");
    (End::new(a, id, window), End::new(bob, id, window))
}

fn read_json(s: &mut TcpStream) -> Value {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

const SECRET: &str = "bench-streams-secret-a-b";

/// Servers a and b, linked (`compress`: whether their link may compress).
fn pair(window: u64, compress: bool) -> (Broker, Broker) {
    let keys = if compress { "" } else { "compression = false" };
    let tables = |peer: &str, address: Option<std::net::SocketAddr>| {
        let address = address
            .map(|a| format!("address = \"{a}\"\n"))
            .unwrap_or_default();
        format!(
            "[streams]\nwindow_bytes = {window}\n[peers.{peer}]\nsecret = {SECRET:?}\n{address}"
        )
    };
    let users = [("alice", "pw"), ("bob", "pw")];
    let a = Broker::launch("a", "127.0.0.1:0", keys, &tables("b", None), &users);
    let b = Broker::launch("b", "127.0.0.1:0", keys, &tables("a", Some(a.addr)), &users);
    (a, b)
}

/// Both ends of a stream from alice on `a` to bob on `b` (once their link is up).
fn via_federation(a: &Broker, b: &Broker, window: u64) -> (End, End) {
    let login = |server: &Broker, user: &str| {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let identify = json!({"header":{"identify":{"type":"client","authentication":{"username":user,"password":"pw"},"features":["stream"]}}});
        s.write_all(&frame(&identify.to_string())).unwrap();
        assert_eq!(read_json(&mut s)["data"]["features"], json!(["stream"]));
        s
    };
    let mut alice = login(a, "alice");
    let mut bob = login(b, "bob");
    let dial = json!({"header":{"scope":"client","id":"d"},"payload":{"type":"bester.dial","data":{"to":"bob@b","stream":"bench"}}});
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        alice.write_all(&frame(&dial.to_string())).unwrap();
        // Not linked yet: the dial is answered `peer_unavailable` at once.
        if let Ok(Some(answer)) = read_json_within(&mut alice, Duration::from_millis(100)) {
            assert_eq!(answer["data"]["code"], "peer_unavailable", "{answer}");
            assert!(Instant::now() < deadline, "a and b never linked");
            thread::sleep(Duration::from_millis(50));
            continue;
        }
        break;
    }
    alice
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let incoming = read_json(&mut bob);
    let theirs = incoming["header"]["stream"].as_u64().unwrap();
    let accept = json!({"header":{"scope":"client","id":"a"},"payload":{"type":"bester.accept","data":{"stream":theirs}}});
    bob.write_all(&frame(&accept.to_string())).unwrap();
    assert_eq!(read_json(&mut bob)["header"]["status"], "ok");
    let dialled = read_json(&mut alice);
    assert_eq!(dialled["data"]["window"], window, "{dialled}");
    let mine = dialled["data"]["stream"].as_u64().unwrap();
    (End::new(alice, mine, window), End::new(bob, theirs, window))
}

/// A frame within `wait`, if one comes (`Ok(None)`: none did).
fn read_json_within(s: &mut TcpStream, wait: Duration) -> std::io::Result<Option<Value>> {
    s.set_read_timeout(Some(wait))?;
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    }
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(Some(serde_json::from_slice(&body).unwrap()))
}

/// The relay process and both ends through it.
fn via_relay(window: u64) -> (Child, End, End) {
    let program = std::env::var("BENCH_RELAY").unwrap_or_else(|_| "target/bench/relay".into());
    let mut child = Command::new(&program)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/bench.sh streams builds it)"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let a = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let b = TcpStream::connect(("127.0.0.1", port)).unwrap();
    (child, End::new(a, 1, window), End::new(b, 1, window))
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// `bytes` of data one way, writer → reader: (MiB/s, CPU seconds of `pids` per MiB).
fn throughput(
    mut writer: End,
    mut reader: End,
    bytes: u64,
    frame_data: usize,
    pids: &[u32],
) -> (f64, f64) {
    let cpu_all = || pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let cost = frame_data as u64 + 2 + FRAME_COST;
    let frames = bytes / frame_data as u64;
    let one = data_frame(writer.id, frame_data);
    let expected = one.len() - 4;
    let start = Arc::new(Barrier::new(2));
    let go = start.clone();
    let read = thread::spawn(move || {
        go.wait();
        for _ in 0..frames {
            let len = reader.read_data(cost);
            // Through besterd the header is the server's: longer by its status and kind.
            assert!(len >= expected && len < expected + 64, "frame of {len}");
        }
        Instant::now()
    });
    let cpu0 = cpu_all();
    start.wait();
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(256 * 1024 + one.len());
    for _ in 0..frames {
        if writer.credit < cost {
            writer.out.write_all(&batch).unwrap();
            batch.clear();
            writer.wait_credit(cost);
        }
        writer.credit -= cost;
        batch.extend_from_slice(&one);
        if batch.len() >= 256 * 1024 {
            writer.out.write_all(&batch).unwrap();
            batch.clear();
        }
    }
    writer.out.write_all(&batch).unwrap();
    let t1 = read.join().unwrap();
    let cpu = cpu_all() - cpu0;
    let mib = (frames * frame_data as u64) as f64 / (1 << 20) as f64;
    (mib / (t1 - t0).as_secs_f64(), cpu / mib)
}

/// Round trips of a small frame: (p50 µs, p99 µs).
fn latency(mut a: End, mut b: End) -> (f64, f64) {
    let one = data_frame(a.id, 16);
    let cost = 16 + 2 + FRAME_COST;
    let echo = thread::spawn(move || {
        for _ in 0..ROUND_TRIPS {
            b.read_data(cost);
            b.wait_credit(cost);
            b.credit -= cost;
            b.out.write_all(&one).unwrap();
        }
    });
    let one = data_frame(a.id, 16);
    let mut rtts = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        a.wait_credit(cost);
        a.credit -= cost;
        let t = Instant::now();
        a.out.write_all(&one).unwrap();
        a.read_data(cost);
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    echo.join().unwrap();
    rtts.sort_by(f64::total_cmp);
    (rtts[rtts.len() / 2], rtts[rtts.len() * 99 / 100])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn broker(window: u64) -> Broker {
    Broker::start_with(
        "",
        &format!("[streams]\nwindow_bytes = {window}\n"),
        &[("alice", "pw"), ("bob", "pw")],
    )
}

pub fn streams() -> Value {
    let runs = env("BENCH_RUNS", 3) as usize;
    let window = env("BENCH_STREAM_WINDOW", 256 * 1024);
    let frame_data = env("BENCH_STREAM_FRAME", 16384) as usize;
    let bytes = env("BENCH_STREAM_MB", 256) << 20;
    let load_before = crate::loadavg();
    let mut rows = Vec::new();
    for run in 0..runs {
        let b = broker(window);
        let (w, r) = via_besterd(&b, window);
        let (bester_mbs, bester_cpu) = throughput(w, r, bytes, frame_data, &[b.pid()]);
        let (mut relay, w, r) = via_relay(window);
        let (floor_mbs, floor_cpu) = throughput(w, r, bytes, frame_data, &[relay.id()]);
        let _ = relay.kill();
        let _ = relay.wait();
        let (a, c) = via_besterd(&b, window);
        let (bester_p50, bester_p99) = latency(a, c);
        let (mut relay, a, c) = via_relay(window);
        let (floor_p50, floor_p99) = latency(a, c);
        let _ = relay.kill();
        let _ = relay.wait();
        drop(b);
        let mut fed = Vec::new();
        for compress in [true, false] {
            let (sa, sb) = pair(window, compress);
            let (w, r) = via_federation(&sa, &sb, window);
            let (mbs, cpu) = throughput(w, r, bytes, frame_data, &[sa.pid(), sb.pid()]);
            let (x, y) = via_federation(&sa, &sb, window);
            let (p50, p99) = latency(x, y);
            eprintln!(
                "run {run}: a→b (link compress {compress}) {mbs:.0} MiB/s ({:.2} ms CPU/MiB, both servers), ratio {:.2}; rtt p50 {p50:.0} µs, p99 {p99:.0}",
                cpu * 1e3,
                mbs / floor_mbs
            );
            fed.extend([mbs, mbs / floor_mbs, cpu * 1e3, p50, p99]);
        }
        eprintln!(
            "run {run}: besterd {bester_mbs:.0} MiB/s ({:.2} ms CPU/MiB), relay {floor_mbs:.0} MiB/s ({:.2} ms CPU/MiB), ratio {:.2}; rtt p50 {bester_p50:.0} µs vs {floor_p50:.0} µs, p99 {bester_p99:.0} vs {floor_p99:.0}",
            bester_cpu * 1e3,
            floor_cpu * 1e3,
            bester_mbs / floor_mbs
        );
        rows.push([
            bester_mbs,
            floor_mbs,
            bester_mbs / floor_mbs,
            bester_cpu * 1e3,
            floor_cpu * 1e3,
            bester_p50,
            floor_p50,
            bester_p99,
            floor_p99,
            fed[0],
            fed[1],
            fed[2],
            fed[3],
            fed[4],
            fed[5],
            fed[6],
            fed[7],
            fed[8],
            fed[9],
        ]);
    }
    let col = |i: usize| median(rows.iter().map(|r| r[i]).collect());
    let ratios: Vec<String> = rows.iter().map(|r| format!("{:.2}", r[2])).collect();
    json!({
        "window_bytes": window,
        "frame_data_bytes": frame_data,
        "mib_per_run": bytes >> 20,
        "runs": runs,
        "besterd_mib_s": (col(0) * 10.0).round() / 10.0,
        "relay_mib_s": (col(1) * 10.0).round() / 10.0,
        "ratio_median": (col(2) * 100.0).round() / 100.0,
        "ratios": ratios,
        "besterd_cpu_ms_per_mib": (col(3) * 100.0).round() / 100.0,
        "relay_cpu_ms_per_mib": (col(4) * 100.0).round() / 100.0,
        "besterd_rtt_p50_us": col(5).round(),
        "relay_rtt_p50_us": col(6).round(),
        "besterd_rtt_p99_us": col(7).round(),
        "relay_rtt_p99_us": col(8).round(),
        "federated_mib_s": (col(9) * 10.0).round() / 10.0,
        "federated_ratio_median": (col(10) * 100.0).round() / 100.0,
        "federated_ratios": rows.iter().map(|r| format!("{:.2}", r[10])).collect::<Vec<_>>(),
        "federated_cpu_ms_per_mib": (col(11) * 100.0).round() / 100.0,
        "federated_rtt_p50_us": col(12).round(),
        "federated_rtt_p99_us": col(13).round(),
        "federated_plain_mib_s": (col(14) * 10.0).round() / 10.0,
        "federated_plain_ratio_median": (col(15) * 100.0).round() / 100.0,
        "federated_plain_cpu_ms_per_mib": (col(16) * 100.0).round() / 100.0,
        "federated_plain_rtt_p50_us": col(17).round(),
        "federated_plain_rtt_p99_us": col(18).round(),
        "load_before": load_before,
        "load_after": crate::loadavg(),
    })
}
