//! `fanout`: one message to a group of 1,000 connected members, deliveries per second, besterd
//! beside nats-server delivering a publish to 1,000 subscribers of a subject.
//!
//! besterd: a fresh server per run with one `benches/fanout/fan.py` process (the auth handler,
//! which puts every subscriber in the group "fan" through its login's `info.groups`, and the
//! handler of type `fan`, which answers each request with `sendClients` to that group). The
//! publisher keeps 16 requests in flight; each answer comes once the message is queued to every
//! member's connection. nats-server: a fresh server per run (user/password, loopback); the
//! publisher sends batches of 16 `PUB`s, each followed by a `PING` whose `PONG` it waits for.
//!
//! Both: 100-byte payloads, the same 1,000 subscriber connections read by 2 threads with
//! `poll(2)`, counting whole frames / `MSG`s; the time is from the first publish to the last
//! delivery. Environment: `BENCH_FANOUT_MEMBERS` (1000), `BENCH_FANOUT_MESSAGES` (2000),
//! `BENCH_RUNS` (3), `BENCH_NATS` (the nats-server binary).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use besterd::client::Client;
use serde_json::{Value, json};

use crate::common::{Broker, handler};

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
fn read_all(subs: Vec<Sub>, want: u64) -> thread::JoinHandle<Instant> {
    thread::spawn(move || {
        let mut subs = subs;
        let mut fds: Vec<libc::pollfd> = subs
            .iter()
            .map(|s| libc::pollfd {
                fd: s.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut buf = vec![0u8; 1 << 16];
        let mut left = subs.len();
        let mut last = Instant::now();
        let started = Instant::now();
        while left > 0 {
            assert!(
                started.elapsed() < LIMIT,
                "fan-out: {left} subscribers still short"
            );
            // SAFETY: a valid array of pollfd of the given length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
            if n <= 0 {
                continue;
            }
            for (i, fd) in fds.iter_mut().enumerate() {
                if fd.revents == 0 {
                    continue;
                }
                fd.revents = 0;
                let sub = &mut subs[i];
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
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => panic!("fan-out: read: {e}"),
                    }
                }
            }
        }
        last
    })
}

/// Start the readers, run the publisher, and return deliveries per second.
fn measure(subs: Vec<Sub>, messages: usize, publish: impl FnOnce()) -> f64 {
    let members = subs.len();
    for s in &subs {
        s.stream.set_nonblocking(true).unwrap();
    }
    let mut groups: Vec<Vec<Sub>> = (0..READERS).map(|_| Vec::new()).collect();
    for (i, s) in subs.into_iter().enumerate() {
        groups[i % READERS].push(s);
    }
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
    (messages * members) as f64 / last.duration_since(started).as_secs_f64()
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn bester_run(members: usize, messages: usize) -> f64 {
    let tables = format!(
        "[handlers.fan]\n{}\n[auth]\nhandler = \"fan\"\n[groups]\nmax_members = 100000\n",
        handler("python3", "benches/fanout/fan.py")
    );
    let broker = Broker::launch(
        "bench",
        "127.0.0.1:0",
        &format!(
            "max_connections = {}\nmax_connections_per_ip = 100000\nmax_outbound_bytes = 67108864",
            members + 100
        ),
        &tables,
        &[],
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
    measure(subs, messages, move || {
        publisher
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut replies = Counter::bester();
        let (mut sent, mut answered) = (0, 0u64);
        let mut buf = vec![0u8; 1 << 16];
        while answered < messages as u64 {
            while sent < messages && sent as u64 - answered < WINDOW as u64 {
                publisher.write_all(&frames[sent]).unwrap();
                sent += 1;
            }
            let k = publisher.read(&mut buf).unwrap();
            assert!(k > 0, "the publisher was closed");
            answered += replies.feed(&buf[..k]).0;
        }
    })
}

fn nats_run(members: usize, messages: usize) -> f64 {
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
    let rate = measure(subs, messages, move || {
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The figure: medians of `BENCH_RUNS` runs of each, side by side.
pub fn fanout() -> Value {
    let members = env("BENCH_FANOUT_MEMBERS", 1000);
    let messages = env("BENCH_FANOUT_MESSAGES", 2000);
    let runs = env("BENCH_RUNS", 3);
    let (mut bester, mut nats) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let b = bester_run(members, messages);
        let n = nats_run(members, messages);
        eprintln!("fanout run {run}: besterd {b:.0}/s, nats-server {n:.0}/s deliveries");
        bester.push(b);
        nats.push(n);
    }
    let (b, n) = (median(bester.clone()), median(nats.clone()));
    eprintln!(
        "fanout: {members} members × {messages} messages of {PAYLOAD} bytes, window {WINDOW}"
    );
    eprintln!("  system        deliveries/s (median of {runs})");
    eprintln!("  besterd       {b:>12.0}");
    eprintln!("  nats-server   {n:>12.0}");
    eprintln!("  ratio         {:>12.2}", b / n);
    json!({
        "members": members, "messages": messages, "payload_bytes": PAYLOAD, "window": WINDOW,
        "besterd_deliveries_per_s": b.round(), "nats_deliveries_per_s": n.round(),
        "ratio": (b / n * 100.0).round() / 100.0,
        "besterd_runs": bester.iter().map(|v| v.round()).collect::<Vec<_>>(),
        "nats_runs": nats.iter().map(|v| v.round()).collect::<Vec<_>>(),
    })
}
