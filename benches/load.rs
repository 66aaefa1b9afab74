//! Load generator: starts real besterd processes (release build, Python handlers) on loopback and
//! measures them from client threads. Run by hand or with `scripts/bench.sh`; nothing here is
//! asserted in the test suite, since shared machines are noisy.
//!
//!   cargo bench --bench load -- [rtt] [throughput] [misbehave] [idle] [slow] [federation] [metrics]
//!                                [transport] [--transports=tcp,tls,ws,wss]
//!
//! `metrics` measures what the figures cost: pipelined throughput (Python echo, and the built-in
//! ping, which only the broker answers) with the monitoring port off, with it on and scraped every
//! 100 ms, and, when `BESTERD_BASELINE_BIN` names a build without the figures, that build; three
//! rounds, interleaved, and the ratio of the medians.
//!
//! `instructions` counts what the broker executes per request with valgrind's callgrind, which
//! does not depend on what else the machine runs: the broker answers N and then 3N pipelined
//! pings (and Python echo requests), and the difference of the instruction totals divided by 2N
//! is the cost of one request, for this build and for `BESTERD_BASELINE_BIN`.
//!
//!   cargo bench --bench load -- compare     (besterd vs nats-server; see `compare/`)
//!   cargo bench --bench load -- federation-compare
//!                                           (across servers: besterd peers vs a NATS cluster;
//!                                            see `federation/`)
//!   cargo bench --bench load -- allocs      (heap allocations per round trip; see `allocs/`)
//!   cargo bench --bench load -- rest        (resident memory of a server at rest, 1,000 clients)
//!   cargo bench --bench load -- attach      (1,000 users on one gateway connection; see `attach/`)
//!   cargo bench --bench load -- storm       (10,000 clients back after a restart; see `storm/`)
//!   cargo bench --bench load -- adapter     (`bester handle` in line and per-request mode; see
//!                                            `adapter/`)
//!   cargo bench --bench load -- restart     (2,000 library clients through a restart; see
//!                                            `restart/`)
//!   cargo bench --bench load -- fanout      (one message to a group of 1,000 members, beside
//!                                            nats-server; see `fanout/`)
//!   cargo bench --bench load -- compress    (a 2 KB chat message with and without the feature
//!                                            `compress`: bytes and server CPU; see `compress/`)
//!   cargo bench --bench load -- directory   (the federation directory on 3 servers with 10,000
//!                                            users: size, sync bytes, presence latency; see
//!                                            `directory/`)
//!   cargo bench --bench load -- streams     (a stream through besterd beside a plain TCP relay:
//!                                            MiB/s, CPU, round trips; see `streams/`)
//!
//! Every scenario is bounded in count and time and talks only to 127.0.0.1. Each prints a line per
//! figure and, at the end, one JSON line with all figures.

mod adapter;
mod allocs;
mod attach;
#[path = "../tests/common/mod.rs"]
mod common;
mod compare;
mod compress;
mod directory;
mod durable;
mod fanout;
mod federation;
mod restart;
mod storm;
mod streams;

#[global_allocator]
static ALLOCATOR: allocs::Counting = allocs::Counting;

/// The build a measurement of `system` runs: `name@base` runs `name` with the besterd binary
/// named by the environment variable `baseline`, anything else with this build (through
/// `BESTERD_BIN`, which the brokers read). Returns `name`.
fn choose_build<'a>(system: &'a str, baseline: &str) -> &'a str {
    let (bare, base) = match system.strip_suffix("@base") {
        Some(bare) => (bare, std::env::var_os(baseline)),
        None => (system, None),
    };
    // SAFETY: the benches run one measurement at a time and no other thread is running.
    unsafe {
        match &base {
            Some(bin) => std::env::set_var("BESTERD_BIN", bin),
            None => std::env::remove_var("BESTERD_BIN"),
        }
    }
    bare
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`), for the figures' context.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use besterd::client::Client;
use besterd::protocol::encode_frame;
use common::{Broker, handler};
use serde_json::{Value, json};

fn main() {
    // SAFETY: set before any thread is started.
    unsafe { std::env::set_var("BESTER_TEST_LOG", "warn") };
    common::raise_fd_limit();
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = [
        "rtt",
        "throughput",
        "misbehave",
        "idle",
        "slow",
        "federation",
        "transport",
        "metrics",
        "instructions",
        "compat",
    ];
    let extra = [
        "compare",
        "federation-compare",
        "allocs",
        "rest",
        "storm",
        "adapter",
        "restart",
        "fanout",
        "compress",
        "directory",
        "durable",
        "durable-memory",
        "streams",
        "attach",
    ];
    let run: Vec<&str> = if wanted.is_empty() {
        all.to_vec()
    } else {
        all.iter()
            .chain(&extra)
            .copied()
            .filter(|s| wanted.iter().any(|w| w == s))
            .collect()
    };
    let mut figures = serde_json::Map::new();
    for scenario in run {
        eprintln!("== {scenario}");
        let result = match scenario {
            "rtt" => rtt(),
            "throughput" => throughput(),
            "misbehave" => misbehave(),
            "idle" => idle(),
            "slow" => slow(),
            "federation" => federation(),
            "transport" => transport(),
            "compare" => compare::compare(),
            "federation-compare" => federation::federation_compare(),
            "allocs" => allocs::allocs(),
            "rest" => rest(),
            "storm" => storm::storm(),
            "adapter" => adapter::adapter_figures(),
            "restart" => restart::restart(),
            "fanout" => fanout::fanout(),
            "compress" => compress::compress(),
            "directory" => directory::directory(),
            "durable" => durable::durable(),
            "durable-memory" => durable::durable_memory(),
            "streams" => streams::streams(),
            "attach" => attach::attach(),
            "metrics" => metrics(),
            "instructions" => instructions(),
            "compat" => compat(),
            _ => unreachable!(),
        };
        for (k, v) in result.as_object().unwrap() {
            println!("{scenario:<11} {k:<28} {v}");
        }
        figures.insert(scenario.to_string(), result);
    }
    println!("{}", Value::Object(figures));
}

/// A broker with the Python echo handler (`processes` copies) and `users` users u0.. (password pw).
fn broker(server_keys: &str, processes: usize, users: usize) -> Broker {
    broker_keys_tables(server_keys, "", processes, users)
}

/// [`broker`] with more tables (e.g. `[monitor]`) and no extra `[server]` keys.
fn broker_with(tables: &str, processes: usize, users: usize) -> Broker {
    broker_keys_tables("", tables, processes, users)
}

fn broker_keys_tables(server_keys: &str, more: &str, processes: usize, users: usize) -> Broker {
    let names: Vec<String> = (0..users).map(|i| format!("u{i}")).collect();
    let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "pw")).collect();
    let tables = format!(
        "[handlers.echo]\n{}\nprocesses = {processes}\n{more}",
        handler("python3", "handlers/python/echo.py")
    );
    let keys = format!(
        "max_connections_per_ip = 100000\nmax_connections_per_user = 100000\nlogin_failures_per_ip = 100000\n{server_keys}"
    );
    Broker::launch("bench", "127.0.0.1:0", &keys, &tables, &pairs)
}

fn login(b: &Broker, user: &str) -> Client {
    let (client, reply) = Client::login(b.addr, user, "pw").expect("connect");
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    client.set_timeout(Some(Duration::from_secs(60))).unwrap();
    client
}

/// Median, p99 and p99.9 in microseconds.
fn percentiles(mut samples: Vec<Duration>) -> Value {
    samples.sort_unstable();
    let at =
        |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_micros() as u64;
    json!({"n": samples.len(), "p50_us": at(0.5), "p99_us": at(0.99), "p999_us": at(0.999)})
}

/// CPU time (user + system) a process has used so far, in microseconds.
fn cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    fields.iter().sum::<u64>() * 1_000_000 / ticks
}

/// Resident and peak resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn rtt() -> Value {
    let b = broker("", 1, 1);
    let mut c = login(&b, "u0");
    let mut ping = Vec::new();
    let mut echo = Vec::new();
    for i in 0..3000 {
        let t = Instant::now();
        c.request(&format!("p{i}"), "bester.ping", &Value::Null)
            .unwrap();
        ping.push(t.elapsed());
        let t = Instant::now();
        let r = c
            .request(&format!("e{i}"), "echo", &json!({"i": i}))
            .unwrap();
        echo.push(t.elapsed());
        assert_eq!(r["data"]["i"], i);
    }
    json!({"builtin_ping": percentiles(ping), "python_echo": percentiles(echo)})
}

/// The original spec's per-message credentials against none, on one logged-in connection: what the
/// session digest check (HMAC, no argon2) adds to a built-in round trip.
fn compat() -> Value {
    let b = broker("", 1, 1);
    let mut c = login(&b, "u0");
    let (mut plain, mut with_credentials) = (Vec::new(), Vec::new());
    for i in 0..3000 {
        let t = Instant::now();
        c.request(&format!("p{i}"), "bester.ping", &Value::Null)
            .unwrap();
        plain.push(t.elapsed());
        let frame = json!({"header":{"scope":"client","id":format!("a{i}"),
            "authentication":{"username":"u0","password":"pw"}},"payload":{"type":"bester.ping"}});
        let t = Instant::now();
        c.send(&frame).unwrap();
        let r = c.recv().unwrap().unwrap();
        with_credentials.push(t.elapsed());
        assert_eq!(r["data"], "pong", "{r}");
    }
    json!({"ping": percentiles(plain), "ping_with_credentials": percentiles(with_credentials)})
}

fn throughput() -> Value {
    throughput_of("echo", "", 10, false)
}

/// `conns` clients each keeping `window` requests of type `kind` in flight for `secs` seconds.
/// With `scrape`, a thread reads /metrics and /connections from the monitoring port every 100 ms.
fn throughput_of(kind: &str, tables: &str, secs: u64, scrape: bool) -> Value {
    let (conns, window) = (50, 32);
    // The monitoring port on a port picked now (the bench logs at warn level: no address line).
    let addr: std::net::SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let tables = if scrape {
        format!("{tables}[monitor]\nlisten = \"{addr}\"\n")
    } else {
        tables.to_string()
    };
    let b = broker_with(&tables, 2, conns);
    let scraper = scrape.then(|| {
        let stop = Instant::now() + Duration::from_secs(secs);
        thread::spawn(move || {
            let mut scrapes = 0u64;
            while Instant::now() < stop {
                for path in ["/metrics", "/connections"] {
                    if let Ok(mut s) = TcpStream::connect(addr) {
                        let _ = write!(s, "GET {path} HTTP/1.1\r\n\r\n");
                        let _ = std::io::Read::read_to_end(&mut s, &mut Vec::new());
                        scrapes += 1;
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
            scrapes
        })
    });
    let kind = kind.to_string();
    let clients: Vec<Client> = (0..conns).map(|i| login(&b, &format!("u{i}"))).collect();
    let lost = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_us(b.pid());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut threads = Vec::new();
    for mut c in clients {
        let (lost, done, errors) = (lost.clone(), done.clone(), errors.clone());
        let kind = kind.clone();
        threads.push(thread::spawn(move || {
            let mut waiting: HashSet<u64> = HashSet::new();
            let mut next = 0u64;
            let mut samples = Vec::new();
            let mut sent_at = std::collections::HashMap::new();
            loop {
                while waiting.len() < window && Instant::now() < deadline {
                    c.message(&next.to_string(), &kind, &json!(next)).unwrap();
                    waiting.insert(next);
                    sent_at.insert(next, Instant::now());
                    next += 1;
                }
                if waiting.is_empty() {
                    break;
                }
                let Some(r) = c.recv().unwrap() else {
                    lost.fetch_add(waiting.len() as u64, Ordering::Relaxed);
                    break;
                };
                let id: u64 = r["header"]["id"].as_str().unwrap().parse().unwrap();
                assert!(waiting.remove(&id), "reply {id} twice or unasked");
                let want = if kind == "echo" {
                    json!(id)
                } else {
                    json!("pong")
                };
                if r["header"]["status"] != "ok" || r["data"] != want {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                samples.push(sent_at.remove(&id).unwrap().elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            samples
        }));
    }
    let samples: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    let scrapes = scraper.map_or(0, |t| t.join().unwrap());
    let cpu = cpu_us(b.pid()).saturating_sub(cpu_before);
    let answered = done.load(Ordering::Relaxed).max(1);
    json!({
        "broker_cpu_us_per_request": (cpu as f64 / answered as f64 * 100.0).round() / 100.0,
        "kind": kind, "scrapes": scrapes,
        "connections": conns, "window": window, "handler_processes": 2,
        "requests_per_s": (done.load(Ordering::Relaxed) as f64 / elapsed).round(),
        "latency": percentiles(samples),
        "errors": errors.load(Ordering::Relaxed), "lost": lost.load(Ordering::Relaxed),
        "broker_rss_kib": rss_kib(b.pid()).1,
    })
}

/// One misbehaving connection, cycling through bad behaviours until `stop`.
fn misbehave_loop(addr: std::net::SocketAddr, n: usize, stop: Instant) {
    let mut k = n;
    while Instant::now() < stop {
        k += 1;
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
        match k % 6 {
            0 => drop(s.write_all(b"\x05\x00\x00\x00garbage and more garbage")),
            1 => drop(s.write_all(&u32::MAX.to_le_bytes())),
            2 => {
                // One byte per write, then stall.
                let mut f = Vec::new();
                encode_frame(br#"{"header":{"identify":{"type":"client"}}}"#, &mut f);
                for byte in &f[..f.len() / 2] {
                    let _ = s.write_all(std::slice::from_ref(byte));
                    thread::sleep(Duration::from_millis(5));
                }
            }
            3 => thread::sleep(Duration::from_millis(300)), // never identify
            4 => {
                // Log in, flood pings, never read.
                let (c, _) = match Client::login(addr, &format!("u{}", n % 10), "pw") {
                    Ok(x) => x,
                    Err(_) => continue,
                };
                let mut s = c.into_stream();
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                let mut f = Vec::new();
                let ping = json!({"header":{"scope":"client"},"payload":{"type":"bester.ping","data":"x".repeat(2000)}});
                encode_frame(ping.to_string().as_bytes(), &mut f);
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(2) && s.write_all(&f).is_ok() {}
            }
            _ => {
                // Half-close in the middle of a frame.
                let _ = s.write_all(&[50, 0, 0, 0, b'{']);
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
        }
    }
}

fn misbehave() -> Value {
    let (good, bad, per_conn) = (1000, 50, 10);
    let b = broker("auth_threads = 2", 2, good);
    let addr = b.addr;
    let logins_started = Instant::now();
    // Log everyone in first (argon2-bound), 8 at a time.
    let mut clients = Vec::with_capacity(good);
    let mut batch = Vec::new();
    for i in 0..good {
        batch.push(thread::spawn(move || {
            let (c, r) = Client::login(addr, &format!("u{i}"), "pw").unwrap();
            assert_eq!(r["header"]["status"], "ok");
            c.set_timeout(Some(Duration::from_secs(120))).unwrap();
            c
        }));
        if batch.len() == 8 {
            clients.extend(batch.drain(..).map(|t| t.join().unwrap()));
        }
    }
    clients.extend(batch.drain(..).map(|t| t.join().unwrap()));
    let login_secs = logins_started.elapsed().as_secs_f64();
    let stop = Instant::now() + Duration::from_secs(15);
    let bad_threads: Vec<_> = (0..bad)
        .map(|n| thread::spawn(move || misbehave_loop(addr, n, stop)))
        .collect();
    let barrier = Arc::new(Barrier::new(good));
    let ok = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let good_threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let (barrier, ok, wrong, lost) =
                (barrier.clone(), ok.clone(), wrong.clone(), lost.clone());
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    barrier.wait();
                    for j in 0..per_conn {
                        let id = format!("{i}-{j}");
                        match c.request(&id, "echo", &json!({"c": i, "j": j})) {
                            Ok(r)
                                if r["header"]["status"] == "ok"
                                    && r["data"] == json!({"c": i, "j": j}) =>
                            {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {
                                wrong.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                lost.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    for t in good_threads {
        t.join().unwrap();
    }
    let good_secs = started.elapsed().as_secs_f64();
    let (rss, peak) = rss_kib(b.pid());
    for t in bad_threads {
        t.join().unwrap();
    }
    json!({
        "good_connections": good, "misbehaving_connections": bad,
        "requests": good * per_conn, "answered_ok": ok.load(Ordering::Relaxed),
        "answered_wrong": wrong.load(Ordering::Relaxed), "lost": lost.load(Ordering::Relaxed),
        "login_seconds": (login_secs * 10.0).round() / 10.0, "logins_per_s": (good as f64 / login_secs).round(),
        "requests_seconds": (good_secs * 10.0).round() / 10.0,
        "broker_rss_kib": rss, "broker_peak_rss_kib": peak,
    })
}

fn idle() -> Value {
    let n = 2000;
    let b = broker("auth_threads = 2", 1, 1);
    // Warm up both verifier threads first: each keeps one argon2 work area (19 MiB), a fixed
    // cost that is not per connection.
    let warm: Vec<Client> = (0..8).map(|_| login(&b, "u0")).collect();
    let before = rss_kib(b.pid()).0;
    let clients: Vec<Client> = (0..n).map(|_| login(&b, "u0")).collect();
    thread::sleep(Duration::from_millis(500));
    let after = rss_kib(b.pid()).0;
    drop(clients);
    drop(warm);
    json!({"connections": n, "rss_before_kib": before, "rss_after_kib": after,
           "bytes_per_connection": ((after.saturating_sub(before)) * 1024) / n as u64})
}

/// Resident memory of a server at rest: 1,000 logged-in idle connections, measured right after
/// the logins (the verifier threads still hold their argon2 work areas) and once the threads have
/// been quiet long enough to give them back (polled, at most 30 s).
fn rest() -> Value {
    let n = 1000;
    let b = broker("auth_threads = 2", 1, 1);
    let started = Instant::now();
    let clients: Vec<Client> = (0..n).map(|_| login(&b, "u0")).collect();
    let after_logins = rss_kib(b.pid()).0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut at_rest = after_logins;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(250));
        at_rest = rss_kib(b.pid()).0;
        if at_rest < 10 * 1024 {
            break;
        }
    }
    let settled = started.elapsed().as_secs_f64();
    // Still connected and served.
    let mut c = clients.into_iter().next().unwrap();
    let r = c.request("p", "bester.ping", &Value::Null).unwrap();
    assert_eq!(r["header"]["status"], "ok", "{r}");
    json!({"connections": n, "rss_after_logins_kib": after_logins, "rss_at_rest_kib": at_rest,
           "seconds_from_first_login": (settled * 10.0).round() / 10.0})
}

fn slow() -> Value {
    let n = 20;
    let b = broker("", 1, 1);
    let base = rss_kib(b.pid()).0;
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let c = login(&b, "u0");
            thread::spawn(move || {
                let mut s = c.into_stream();
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                let mut f = Vec::new();
                let ping = json!({"header":{"scope":"client"},"payload":{"type":"bester.ping","data":"x".repeat(4000)}});
                encode_frame(ping.to_string().as_bytes(), &mut f);
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(20) && s.write_all(&f).is_ok() {}
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (rss, peak) = rss_kib(b.pid());
    let cut = b.log().matches("slow consumer").count();
    json!({"slow_consumers": n, "disconnected_as_slow": cut, "rss_base_kib": base,
           "peak_rss_kib": peak, "rss_after_kib": rss, "max_outbound_bytes": 8 << 20})
}

fn federation() -> Value {
    let secret = "bench-secret-0123456789";
    let tables = |peer: &str, addr: Option<std::net::SocketAddr>| {
        let address = addr
            .map(|a| format!("address = \"{a}\"\n"))
            .unwrap_or_default();
        format!(
            "[handlers.faulty]\n{}\n[peers.{peer}]\nsecret = \"{secret}\"\n{address}",
            handler("python3", "tests/handlers/faulty.py")
        )
    };
    let a = Broker::launch("a", "127.0.0.1:0", "", &tables("b", None), &[("u0", "pw")]);
    let bb = Broker::launch(
        "b",
        "127.0.0.1:0",
        "",
        &tables("a", Some(a.addr)),
        &[("u0", "pw")],
    );
    let mut c = login(&a, "u0");
    for i in 0..200 {
        let who = c
            .request(&format!("w{i}"), "bester.whoami", &Value::Null)
            .unwrap();
        if who["data"]["peers"] == json!(["b"]) {
            break;
        }
        thread::sleep(Duration::from_millis(25));
    }
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for i in 0..2000 {
        let t = Instant::now();
        let r = c
            .request(&format!("l{i}"), "faulty", &json!({"action":"echo"}))
            .unwrap();
        local.push(t.elapsed());
        assert_eq!(r["header"]["status"], "ok");
        let t = Instant::now();
        let r = c
            .request(
                &format!("r{i}"),
                "faulty",
                &json!({"action":"to_servers","servers":["b"],"data":{"action":"echo"}}),
            )
            .unwrap();
        remote.push(t.elapsed());
        assert_eq!(r["header"]["servers"]["b"]["status"], "ok", "{r}");
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort_unstable();
        v[v.len() / 2].as_micros() as f64
    };
    let (l, r) = (median(&mut local.clone()), median(&mut remote.clone()));
    drop(bb);
    json!({"one_server": percentiles(local), "across_two_servers": percentiles(remote),
           "median_ratio": (r / l * 100.0).round() / 100.0})
}

/// Round trips of the built-in `bester.ping` (no handler process in the way, so the figures are
/// the transport's) over each transport, on one connection: at window 1 (one in flight) and at
/// window 64 (64 in flight), three runs each, with the median of the three.
/// `--transports=tcp,tls,ws,wss` picks the transports (default all).
fn transport() -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = bench_certificates(dir.path());
    let tables = format!(
        "[[listeners]]\nname = \"tls\"\nkind = \"tls\"\naddress = \"127.0.0.1:0\"\ncert = {cert:?}\nkey = {key:?}\n\
         [[listeners]]\nname = \"ws\"\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"wss\"\nkind = \"wss\"\naddress = \"127.0.0.1:0\"\ncert = {cert:?}\nkey = {key:?}\n"
    );
    let b = Broker::launch(
        "bench",
        "127.0.0.1:0",
        "max_pending_per_connection = 1024",
        &tables,
        &[("u0", "pw")],
    );
    let trust = besterd::net::tls::client_trust(Some(&ca)).unwrap();
    let chosen: Vec<String> = std::env::args()
        .find_map(|a| a.strip_prefix("--transports=").map(str::to_string))
        .unwrap_or_else(|| "tcp,tls,ws,wss".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let mut out = serde_json::Map::new();
    for kind in chosen {
        let (scheme, addr) = match kind.as_str() {
            "tcp" => ("bester", b.addr),
            "tls" => ("bester+tls", b.listener("tls")),
            "ws" => ("bester+ws", b.listener("ws")),
            "wss" => ("bester+wss", b.listener("wss")),
            other => panic!("unknown transport {other:?}"),
        };
        let uri = besterd::client::Uri::parse(&format!("{scheme}://u0:pw@{addr}")).unwrap();
        let mut figures = serde_json::Map::new();
        for window in [1usize, 64] {
            let runs: Vec<(f64, u64)> = (0..3)
                .map(|_| {
                    let mut c =
                        besterd::client::Client::connect_uri(&uri, Some(trust.clone()), None)
                            .unwrap();
                    c.set_timeout(Some(Duration::from_secs(60))).unwrap();
                    let reply = c
                        .send(&json!({"header":{"identify":{"type":"client","authentication":{"username":"u0","password":"pw"}}}}))
                        .and_then(|()| c.recv())
                        .unwrap()
                        .unwrap();
                    assert_eq!(reply["header"]["status"], "ok", "{reply}");
                    pings(&mut c, window, Duration::from_secs(3))
                })
                .collect();
            let mut rates: Vec<f64> = runs.iter().map(|r| r.0).collect();
            let mut p99s: Vec<u64> = runs.iter().map(|r| r.1).collect();
            rates.sort_by(f64::total_cmp);
            p99s.sort_unstable();
            figures.insert(
                format!("window_{window}"),
                json!({
                    "round_trips_per_s": rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
                    "p99_us": p99s,
                    "median_round_trips_per_s": rates[1].round(),
                    "median_p99_us": p99s[1],
                }),
            );
        }
        out.insert(kind, Value::Object(figures));
    }
    Value::Object(out)
}

/// Keep `window` pings in flight for `length`; (round trips per second, p99 in µs).
fn pings(c: &mut Client, window: usize, length: Duration) -> (f64, u64) {
    let start = Instant::now();
    let deadline = start + length;
    let mut sent_at = std::collections::HashMap::new();
    let mut next = 0u64;
    let mut samples = Vec::new();
    loop {
        while sent_at.len() < window && Instant::now() < deadline {
            c.message(&next.to_string(), "bester.ping", &Value::Null)
                .unwrap();
            sent_at.insert(next, Instant::now());
            next += 1;
        }
        if sent_at.is_empty() {
            break;
        }
        let r = c.recv().unwrap().expect("open");
        let id: u64 = r["header"]["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(r["header"]["status"], "ok", "{r}");
        samples.push(sent_at.remove(&id).expect("asked once").elapsed());
    }
    let rate = samples.len() as f64 / start.elapsed().as_secs_f64();
    let p99 = percentiles(samples)["p99_us"].as_u64().unwrap();
    (rate, p99)
}

/// A CA and a server certificate for 127.0.0.1 it signed, as PEM files: (ca, cert, key).
fn bench_certificates(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// What the figures cost: throughput with the monitoring port off, on and scraped, and (with
/// `BESTERD_BASELINE_BIN`) a build without the figures; three interleaved rounds, medians, ratios.
fn metrics() -> Value {
    let current = std::env::var_os("BESTERD_BIN");
    let baseline = std::env::var_os("BESTERD_BASELINE_BIN");
    let mut variants: Vec<(&str, &str, bool)> = vec![("off", "", false), ("scraped", "", true)];
    if baseline.is_some() {
        variants.insert(0, ("baseline", "", false));
    }
    let mut figures = serde_json::Map::new();
    for kind in ["echo", "bester.ping"] {
        // Per variant: (requests per second, broker CPU µs per request) of each round.
        let mut runs: Vec<(String, Vec<f64>, Vec<f64>)> = variants
            .iter()
            .map(|(name, _, _)| (name.to_string(), Vec::new(), Vec::new()))
            .collect();
        for round in 0..3 {
            for (i, (name, tables, scrape)) in variants.iter().enumerate() {
                let bin = if *name == "baseline" {
                    &baseline
                } else {
                    &current
                };
                // SAFETY: no other thread is running between scenarios.
                unsafe {
                    match bin {
                        Some(bin) => std::env::set_var("BESTERD_BIN", bin),
                        None => std::env::remove_var("BESTERD_BIN"),
                    }
                }
                let r = throughput_of(kind, tables, 5, *scrape);
                assert_eq!(
                    (r["errors"].as_u64(), r["lost"].as_u64()),
                    (Some(0), Some(0)),
                    "{r}"
                );
                let rate = r["requests_per_s"].as_f64().unwrap();
                let cpu = r["broker_cpu_us_per_request"].as_f64().unwrap();
                eprintln!(
                    "metrics {kind} round {round} {name}: {rate} req/s, broker {cpu} µs CPU per request (scrapes {})",
                    r["scrapes"]
                );
                runs[i].1.push(rate);
                runs[i].2.push(cpu);
            }
        }
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let mut row = serde_json::Map::new();
        let (rate0, cpu0) = (median(&runs[0].1), median(&runs[0].2));
        for (name, rates, cpus) in &runs {
            row.insert(
                name.clone(),
                json!({
                    "requests_per_s": rates, "median": median(rates),
                    "ratio_to_first": median(rates) / rate0,
                    "cpu_us_per_request": cpus, "cpu_median": median(cpus),
                    "cpu_ratio_to_first": median(cpus) / cpu0,
                }),
            );
        }
        figures.insert(kind.to_string(), Value::Object(row));
    }
    // SAFETY: as above.
    unsafe {
        match &current {
            Some(bin) => std::env::set_var("BESTERD_BIN", bin),
            None => std::env::remove_var("BESTERD_BIN"),
        }
    }
    Value::Object(figures)
}

/// Instructions per request, counted by callgrind (see the module doc).
fn instructions() -> Value {
    let current =
        std::env::var_os("BESTERD_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_besterd").into());
    let mut builds = vec![("current", current.clone())];
    if let Some(baseline) = std::env::var_os("BESTERD_BASELINE_BIN") {
        builds.insert(0, ("baseline", baseline));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut figures = serde_json::Map::new();
    for kind in ["bester.ping", "echo"] {
        let n = if kind == "echo" { 4_000 } else { 10_000 };
        let mut row = serde_json::Map::new();
        for (name, bin) in &builds {
            let wrapper = dir.path().join(format!("{name}.sh"));
            std::fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=/dev/null {:?} \"$@\"\n",
                    bin.to_string_lossy()
                ),
            )
            .unwrap();
            std::fs::set_permissions(
                &wrapper,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            let mut totals = Vec::new();
            for count in [n, 3 * n] {
                // SAFETY: no other thread is running.
                unsafe { std::env::set_var("BESTERD_BIN", &wrapper) };
                let mut b = broker("handler_startup_timeout_ms = 60000", 1, 4);
                let clients: Vec<Client> = (0..4).map(|i| login(&b, &format!("u{i}"))).collect();
                let threads: Vec<_> = clients
                    .into_iter()
                    .map(|mut c| {
                        let kind = kind.to_string();
                        thread::spawn(move || {
                            let (mut sent, mut got) = (0, 0);
                            while got < count / 4 {
                                while sent < count / 4 && sent - got < 32 {
                                    c.message(&sent.to_string(), &kind, &json!(sent)).unwrap();
                                    sent += 1;
                                }
                                let r = c.recv().unwrap().unwrap();
                                assert_eq!(r["header"]["status"], "ok", "{r}");
                                got += 1;
                            }
                        })
                    })
                    .collect();
                for t in threads {
                    t.join().unwrap();
                }
                assert!(b.stop().success());
                let log = b.log();
                let total: u64 = log
                    .lines()
                    .find_map(|l| {
                        l.split_once("Collected : ")
                            .map(|(_, n)| n.trim().to_string())
                    })
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no callgrind total in the log:\n{log}"));
                eprintln!("instructions {kind} {name} {count} requests: {total}");
                totals.push(total);
            }
            let per = (totals[1] - totals[0]) as f64 / (2 * n) as f64;
            row.insert(
                name.to_string(),
                json!({"totals": totals, "per_request": per.round()}),
            );
        }
        if let (Some(base), Some(cur)) = (row.get("baseline"), row.get("current")) {
            let ratio =
                cur["per_request"].as_f64().unwrap() / base["per_request"].as_f64().unwrap();
            row.insert("ratio".into(), json!(ratio));
        }
        figures.insert(kind.to_string(), Value::Object(row));
    }
    // SAFETY: as above.
    unsafe { std::env::set_var("BESTERD_BIN", &current) };
    Value::Object(figures)
}
