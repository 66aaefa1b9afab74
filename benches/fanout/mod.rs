//! `fanout`: one message to a group of 1,000 connected members, deliveries per second, besterd
//! beside nats-server delivering a publish to 1,000 subscribers of a subject.
//!
//! besterd: a fresh server per run with one `benches/fanout/fan.py` process (the auth handler,
//! which puts every subscriber in the group "fan" through its login's `info.groups`, and the
//! handler of type `fan`, which answers each request with `sendClients` to that group). The
//! publisher writes 16 requests at once and the next 16 when all are answered (each answer comes
//! once the message is queued to every member's connection); `BENCH_FANOUT_PUBLISH=window`
//! keeps 16 in flight instead (a new request as each answer comes). nats-server: a fresh server
//! per run (user/password, loopback); the publisher writes 16 `PUB`s and a `PING` at once and
//! waits for the `PONG`.
//!
//! Both: 100-byte payloads, the same 1,000 subscriber connections read by 2 threads, each with an
//! epoll set (so a wakeup costs the sockets that are ready, not a scan of all of them), counting
//! whole frames / `MSG`s; the time is from the first publish to the last delivery; the CPU time
//! of the server (and of besterd's handler) and of the bench process (readers and publisher) is
//! divided by the deliveries. Environment: `BENCH_FANOUT_MEMBERS` (1000),
//! `BENCH_FANOUT_MESSAGES` (2000), `BENCH_RUNS` (3), `BENCH_NATS` (the nats-server binary),
//! `BENCH_FANOUT_BASELINE` (another besterd build, measured in the same rounds).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use besterd::client::Client;
use serde_json::{Value, json};

use crate::common::{Broker, Launch, handler};

const WINDOW: usize = 16;
const PAYLOAD: usize = 100;
const NATS_USER: &str = "bench";
const NATS_PASS: &str = "bench-pw-0123";
const READERS: usize = 2;
const LIMIT: Duration = Duration::from_secs(120);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// 100 bytes: a JSON string (valid besterd data), and the NATS payload as is.
fn payload(n: usize) -> Vec<u8> {
    let mut out = format!("\"{n:020}-").into_bytes();
    out.resize(PAYLOAD - 1, b'x');
    out.push(b'"');
    out
}

/// Counts what arrives on one subscriber connection.
enum Counter {
    /// besterd frames: the length prefix read so far, and the body bytes still to skip.
    Bester {
        head: [u8; 4],
        have: usize,
        left: usize,
    },
    /// NATS: the current line, and the payload bytes (with their CRLF) still to skip.
    Nats { line: Vec<u8>, skip: usize },
}

impl Counter {
    fn bester() -> Counter {
        Counter::Bester {
            head: [0; 4],
            have: 0,
            left: 0,
        }
    }

    /// Feed bytes; returns (messages completed, PINGs to answer).
    fn feed(&mut self, mut data: &[u8]) -> (u64, u64) {
        let (mut done, mut pings) = (0, 0);
        match self {
            Counter::Bester { head, have, left } => {
                while !data.is_empty() {
                    if *left > 0 {
                        let n = (*left).min(data.len());
                        *left -= n;
                        data = &data[n..];
                        if *left == 0 {
                            done += 1;
                        }
                        continue;
                    }
                    let n = (4 - *have).min(data.len());
                    head[*have..*have + n].copy_from_slice(&data[..n]);
                    *have += n;
                    data = &data[n..];
                    if *have == 4 {
                        *have = 0;
                        *left = u32::from_le_bytes(*head) as usize;
                        if *left == 0 {
                            done += 1;
                        }
                    }
                }
            }
            Counter::Nats { line, skip } => {
                while !data.is_empty() {
                    if *skip > 0 {
                        let n = (*skip).min(data.len());
                        *skip -= n;
                        data = &data[n..];
                        continue;
                    }
                    match data.iter().position(|b| *b == b'\n') {
                        None => {
                            line.extend_from_slice(data);
                            data = &[];
                        }
                        Some(at) => {
                            line.extend_from_slice(&data[..at]);
                            data = &data[at + 1..];
                            if line.starts_with(b"MSG ") {
                                let text = String::from_utf8_lossy(line);
                                let size: usize = text
                                    .trim_end()
                                    .rsplit(' ')
                                    .next()
                                    .and_then(|s| s.parse().ok())
                                    .expect("MSG size");
                                *skip = size + 2;
                                done += 1;
                            } else if line.starts_with(b"PING") {
                                pings += 1;
                            }
                            line.clear();
                        }
                    }
                }
            }
        }
        (done, pings)
    }
}

struct Sub {
    stream: TcpStream,
    counter: Counter,
    got: u64,
}

/// Read every subscriber until each has `want` messages; the instant the last one arrived.
/// One epoll set per reader thread: a wakeup costs what is ready, not a scan of every socket,
/// and each ready socket is drained with 64 KiB reads.
fn read_all(subs: Vec<Sub>, want: u64) -> thread::JoinHandle<Instant> {
    thread::spawn(move || {
        let mut subs = subs;
        // SAFETY: plain system calls on descriptors this thread owns; `events` outlives them.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(ep >= 0, "epoll_create1");
        for (i, s) in subs.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: a valid epoll descriptor, socket and event.
            let rc =
                unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.stream.as_raw_fd(), &mut ev) };
            assert_eq!(rc, 0, "epoll_ctl");
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut buf = vec![0u8; 1 << 16];
        let mut left = subs.len();
        let mut last = Instant::now();
        let started = Instant::now();
        while left > 0 {
            assert!(
                started.elapsed() < LIMIT,
                "fan-out: {left} subscribers still short"
            );
            // SAFETY: `events` has room for its length.
            let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 100) };
            for ev in &events[..n.max(0) as usize] {
                let sub = &mut subs[ev.u64 as usize];
                loop {
                    match sub.stream.read(&mut buf) {
                        Ok(0) => panic!("fan-out: a subscriber was closed"),
                        Ok(k) => {
                            let (done, pings) = sub.counter.feed(&buf[..k]);
                            for _ in 0..pings {
                                let _ = sub.stream.write_all(b"PONG\r\n");
                            }
                            if done > 0 {
                                let before = sub.got;
                                sub.got += done;
                                if before < want && sub.got >= want {
                                    left -= 1;
                                    last = Instant::now();
                                }
                            }
                            if k < buf.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => panic!("fan-out: read: {e}"),
                    }
                }
            }
        }
        // SAFETY: the descriptor is ours and no longer used.
        unsafe { libc::close(ep) };
        last
    })
}

/// One run's figures: deliveries per second, and CPU µs per delivery of the server process (and
/// of its handler, for besterd) and of this process (the readers and the publisher).
struct Run {
    rate: f64,
    server_ns: f64,
    handler_ns: f64,
    readers_ns: f64,
}

/// CPU time (user + system) of this process so far, in microseconds.
fn self_cpu_us() -> u64 {
    super::cpu_us(std::process::id())
}

/// Start the readers, run the publisher, and measure.
fn measure(
    subs: Vec<Sub>,
    messages: usize,
    (server, handler): (u32, Option<u32>),
    publish: impl FnOnce(),
) -> Run {
    let members = subs.len();
    for s in &subs {
        s.stream.set_nonblocking(true).unwrap();
    }
    let mut groups: Vec<Vec<Sub>> = (0..READERS).map(|_| Vec::new()).collect();
    for (i, s) in subs.into_iter().enumerate() {
        groups[i % READERS].push(s);
    }
    let cpu0 = (
        super::cpu_us(server),
        handler.map_or(0, super::cpu_us),
        self_cpu_us(),
    );
    let readers: Vec<_> = groups
        .into_iter()
        .map(|g| read_all(g, messages as u64))
        .collect();
    let started = Instant::now();
    publish();
    let last = readers
        .into_iter()
        .map(|r| r.join().expect("reader"))
        .max()
        .unwrap();
    let deliveries = (messages * members) as f64;
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 * 1000.0 / deliveries;
    Run {
        rate: deliveries / last.duration_since(started).as_secs_f64(),
        server_ns: per(cpu0.0, super::cpu_us(server)),
        handler_ns: per(cpu0.1, handler.map_or(0, super::cpu_us)),
        readers_ns: per(cpu0.2, self_cpu_us()),
    }
}

/// `BENCH_FANOUT_PUBLISH`: `batch` (default) or `window`.
fn publish_in_batches() -> bool {
    std::env::var("BENCH_FANOUT_PUBLISH").map_or(true, |v| v != "window")
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn bester_run(members: usize, messages: usize, program: Option<&str>) -> Run {
    let tables = format!(
        "[handlers.fan]\n{}\n[auth]\nhandler = \"fan\"\n[groups]\nmax_members = 100000\n",
        handler("python3", "benches/fanout/fan.py")
    );
    let broker = Broker::launch_with(
        "bench",
        "127.0.0.1:0",
        &format!(
            "max_connections = {}\nmax_connections_per_ip = 100000\nmax_outbound_bytes = 67108864",
            members + 100
        ),
        &tables,
        &[],
        &Launch {
            program: program.map(std::path::PathBuf::from),
            ..Launch::default()
        },
    );
    let login = |user: &str| -> TcpStream {
        let started = Instant::now();
        loop {
            let mut c = Client::connect(broker.addr).unwrap();
            c.set_timeout(Some(Duration::from_secs(20))).unwrap();
            c.send(
                &json!({"header":{"identify":{"type":"client","authentication":{"user":user}}}}),
            )
            .unwrap();
            let reply = c.recv().unwrap().expect("login reply");
            if reply["header"]["status"] == "ok" {
                return c.into_stream();
            }
            // The auth handler may still be starting.
            assert!(started.elapsed() < LIMIT, "login refused: {reply}");
            thread::sleep(Duration::from_millis(20));
        }
    };
    let mut publisher = login("pub");
    let subs: Vec<Sub> = (0..members)
        .map(|i| Sub {
            stream: login(&format!("s{i}")),
            counter: Counter::bester(),
            got: 0,
        })
        .collect();
    // Every subscriber is in the group before the first message.
    let mut probe = Client::connect(broker.addr).unwrap();
    probe.set_timeout(Some(Duration::from_secs(20))).unwrap();
    probe
        .send(&json!({"header":{"identify":{"type":"client","authentication":{"user":"pub"}}}}))
        .unwrap();
    probe.recv().unwrap();
    let now = probe
        .request("q", "bester.presence", &json!({"groups":["fan"]}))
        .unwrap();
    assert_eq!(
        now["data"]["groups"]["fan"].as_array().map(Vec::len),
        Some(members),
        "{now}"
    );
    let frames: Vec<Vec<u8>> = (0..messages)
        .map(|n| {
            let mut body = format!(
                "{{\"header\":{{\"scope\":\"client\",\"id\":\"{n}\"}},\"payload\":{{\"type\":\"fan\",\"data\":"
            )
            .into_bytes();
            body.extend_from_slice(&payload(n));
            body.extend_from_slice(b"}}");
            frame(&body)
        })
        .collect();
    let handler = children(broker.pid()).first().copied();
    measure(subs, messages, (broker.pid(), handler), move || {
        publisher
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut replies = Counter::bester();
        let (mut sent, mut answered) = (0, 0u64);
        let mut buf = vec![0u8; 1 << 16];
        let batch = publish_in_batches();
        let mut out = Vec::new();
        while answered < messages as u64 {
            // Batches: the next WINDOW requests in one write once all before are answered (as
            // the NATS publisher does with its PUBs and PING); else a sliding window.
            let room = if batch && sent as u64 != answered {
                0
            } else {
                WINDOW - (sent - answered as usize)
            };
            for frame in frames.iter().skip(sent).take(room) {
                out.extend_from_slice(frame);
                sent += 1;
            }
            if !out.is_empty() {
                publisher.write_all(&out).unwrap();
                out.clear();
            }
            let k = publisher.read(&mut buf).unwrap();
            assert!(k > 0, "the publisher was closed");
            answered += replies.feed(&buf[..k]).0;
        }
    })
}

fn nats_run(members: usize, messages: usize) -> Run {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = std::env::var("BENCH_NATS").unwrap_or_else(|_| "nats-server".into());
    let mut server: Child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["--user", NATS_USER, "--pass", NATS_PASS])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(started.elapsed() < LIMIT, "nats-server not up");
        thread::sleep(Duration::from_millis(20));
    }
    // Connect, subscribe (if `sub`), and wait for the PONG that says the server has it all.
    let connect = |sub: bool| -> TcpStream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let hello = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"user\":\"{NATS_USER}\",\"pass\":\"{NATS_PASS}\"}}\r\n{}PING\r\n",
            if sub { "SUB fan 1\r\n" } else { "" }
        );
        s.write_all(hello.as_bytes()).unwrap();
        wait_pong(&mut s);
        s
    };
    let mut publisher = connect(false);
    let subs: Vec<Sub> = (0..members)
        .map(|_| Sub {
            stream: connect(true),
            counter: Counter::Nats {
                line: Vec::new(),
                skip: 0,
            },
            got: 0,
        })
        .collect();
    let batches: Vec<Vec<u8>> = (0..messages)
        .step_by(WINDOW)
        .map(|first| {
            let mut out = Vec::new();
            for n in first..(first + WINDOW).min(messages) {
                out.extend_from_slice(format!("PUB fan {PAYLOAD}\r\n").as_bytes());
                out.extend_from_slice(&payload(n));
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"PING\r\n");
            out
        })
        .collect();
    let rate = measure(subs, messages, (server.id(), None), move || {
        for batch in &batches {
            publisher.write_all(batch).unwrap();
            wait_pong(&mut publisher);
        }
    });
    let _ = server.kill();
    let _ = server.wait();
    rate
}

/// Read until a PONG line (answering PINGs).
fn wait_pong(s: &mut TcpStream) {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = s.read(&mut byte).unwrap();
        assert!(n > 0, "nats-server closed the connection");
        if byte[0] != b'\n' {
            line.push(byte[0]);
            continue;
        }
        if line.starts_with(b"PONG") {
            return;
        }
        if line.starts_with(b"PING") {
            s.write_all(b"PONG\r\n").unwrap();
        }
        assert!(
            !line.starts_with(b"-ERR"),
            "nats-server: {}",
            String::from_utf8_lossy(&line)
        );
        line.clear();
    }
}

/// The child processes of `pid` (besterd's handlers).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The figure: medians of `BENCH_RUNS` runs of each, side by side (and of the besterd build
/// `BENCH_FANOUT_BASELINE` names, when set, in the same rounds).
pub fn fanout() -> Value {
    let members = env("BENCH_FANOUT_MEMBERS", 1000);
    let messages = env("BENCH_FANOUT_MESSAGES", 2000);
    let runs = env("BENCH_RUNS", 3);
    let baseline = std::env::var("BENCH_FANOUT_BASELINE").ok();
    let mut systems: Vec<(&str, Vec<Run>)> = vec![("besterd", Vec::new())];
    if baseline.is_some() {
        systems.push(("besterd-baseline", Vec::new()));
    }
    systems.push(("nats-server", Vec::new()));
    for run in 0..runs {
        for (name, results) in &mut systems {
            let r = match *name {
                "besterd" => bester_run(members, messages, None),
                "besterd-baseline" => bester_run(members, messages, baseline.as_deref()),
                _ => nats_run(members, messages),
            };
            eprintln!(
                "fanout run {run}: {name} {:.0} deliveries/s, CPU per delivery: server {:.0} ns, handler {:.0} ns, readers {:.0} ns",
                r.rate, r.server_ns, r.handler_ns, r.readers_ns
            );
            results.push(r);
        }
    }
    eprintln!(
        "fanout: {members} members × {messages} messages of {PAYLOAD} bytes, window {WINDOW}, medians of {runs}"
    );
    eprintln!("  system             deliveries/s  server ns  handler ns  readers ns");
    let mut out = serde_json::Map::new();
    let nats_rate = median(systems.last().unwrap().1.iter().map(|r| r.rate).collect());
    for (name, results) in &systems {
        let m = |f: fn(&Run) -> f64| median(results.iter().map(f).collect());
        let (rate, server, handler, readers) = (
            m(|r| r.rate),
            m(|r| r.server_ns),
            m(|r| r.handler_ns),
            m(|r| r.readers_ns),
        );
        eprintln!(
            "  {name:<18} {rate:>12.0} {server:>10.0} {handler:>11.0} {readers:>11.0}   ratio {:.2}",
            rate / nats_rate
        );
        out.insert(
            name.to_string(),
            json!({
                "deliveries_per_s": rate.round(),
                "runs": results.iter().map(|r| r.rate.round()).collect::<Vec<_>>(),
                "server_cpu_ns_per_delivery": server.round(),
                "handler_cpu_ns_per_delivery": handler.round(),
                "readers_cpu_ns_per_delivery": readers.round(),
                "ratio_to_nats": (rate / nats_rate * 100.0).round() / 100.0,
            }),
        );
    }
    out.insert(
        "setup".into(),
        json!({"members": members, "messages": messages, "payload_bytes": PAYLOAD, "window": WINDOW}),
    );
    Value::Object(out)
}
