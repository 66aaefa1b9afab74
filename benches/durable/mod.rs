//! `durable`: stored pushes with acknowledgement beside JetStream, and `durable-memory`: the
//! server's memory with a million stored messages.
//!
//! `durable`: one client connection keeps `window` (1, 64) requests in flight. On besterd each
//! request (type `store`, 100-byte data) is answered by the C handler (`echo bester sendClients
//! '["off"]'`) with a storing `sendClients` to `off`, a user with no connection, so every push is
//! written to the delivery store and committed; the client's reply lists `off` in `stored` only
//! after the commit returned (with `[delivery] fsync = "always"`, after the fsync), and that reply
//! is the acknowledgement waited for. Beside it nats-server with JetStream (`-js`, `--store_dir`
//! in a fresh temporary directory on the same file system) and a file-storage stream on the
//! subject; each publish has a reply subject and is acknowledged by its PubAck, which must name
//! the stream with a sequence number above the last one (and the last one must equal the count).
//! Every reply is checked; a run with an error is left out. Fresh servers per measurement, runs
//! interleaved, medians, and besterd/JetStream ratios taken within each run. CPU from /proc
//! (utime + stime) of the server and, for besterd, its handler, in µs per stored message.
//!
//! Durability: nats-server 2.9.10 writes each message to its block file before the PubAck (the
//! operating system has it: a crash of the server loses nothing) and fsyncs every 2 minutes (the
//! interval is fixed in that version; `sync_interval` and `always` came in 2.10.0), so a power
//! loss may lose acknowledged messages. besterd `fsync = "never"` is that durability (commits
//! reach the operating system; SQLite fsyncs the log at checkpoints); `"always"` (the default)
//! fsyncs every commit before a push is reported `stored`, which 2.9.10 cannot do at all.
//!
//! `push-always`, `push-never`: the load generator is the handler. The type `store` has
//! `socket = "…"` (besterd listens, the bench connects as the type's one handler connection) and
//! `offline = "store"`; the bench keeps `window` handler pushes (no `request`) in flight, each
//! `{"header":{"status":"ok","command":"sendClients","commandData":["off"],"id":"<n>","store":true},"payload":{"type":"store","data":<payload>}}`,
//! and waits for each push's report, which besterd sends once the commit returned: it must carry
//! the push's id, be `ok`, list `off` in `stored` and no one in `delivered`, `offline` or
//! `refused`. So the path is the one JetStream's publisher has (pusher → server → acknowledgement),
//! without the client → besterd → handler hop of `always` and `never`.
//!
//! Environment: `BENCH_ECHO` (the built echo.c, required), `BENCH_SECS` (per measurement,
//! default 3), `BENCH_RUNS` (default 3), `BENCH_NATS` (default `nats-server`),
//! `BENCH_DURABLE_SYSTEMS` (comma list of always,never,push-always,push-never,jetstream; default
//! all), `BENCH_WINDOWS` (default `1,64`), `BENCH_DURABLE_BASELINE` (another besterd binary: each
//! besterd system is measured with it too, as `<system>@base`, in the same runs, and a table of
//! this build ÷ the baseline, ratios taken within each run, is printed).
//!
//! `durable-memory`: one besterd stores `BENCH_MEM_TOTAL` (1,000,000) pushes at window 64, every
//! tenth to the user `big` (up to `[delivery] max_per_user` = a tenth of the total), the rest
//! spread over `BENCH_MEM_USERS` (10,000) users; one more to `big` must be refused with
//! `queue_full`. It reports the server's VmRSS every tenth of the way and VmHWM, the database's
//! size on disk, then logs in as `big` and as one of the many, acknowledging each batch, and
//! reports the time to the last push of each queue and the memory after. `BENCH_MEM_FSYNC`
//! (`always`) picks the fsync policy.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use besterd::client::Client;
use serde_json::{Value, json};

use crate::common::Broker;
use crate::compare::{
    ConnResult, JS_STREAM, JS_SUBJECT, NATS_PASS, NATS_USER, Proto, REPLY_TIMEOUT, STORED_USER,
    children, cpu_seconds, echo_bin, free_port, median, payload, push_frame, run_clients,
};

/// A system under test.
struct Running {
    addr: SocketAddr,
    server: u32,
    /// besterd's handler process (none for JetStream).
    handler: Option<u32>,
    _broker: Option<Broker>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `[delivery]` limits far above what a measurement stores.
const ROOMY: &str = "max_per_user = 100000000\nmax_bytes_per_user = 68719476736\nmax_disk_bytes = 68719476736\nmin_free_bytes = 0\n";

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// besterd with the C handler answering with a storing `sendClients` (`command_data`), and the
/// delivery store in `dir` with this fsync policy and `[delivery]` keys.
fn start_besterd(
    fsync: &str,
    command_data: &str,
    delivery: &str,
    users: &[(&str, &str)],
) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_bin();
    let db = dir.path().join("delivery.db");
    let tables = format!(
        "[handlers.store]\ncommand = [{echo:?}, \"bester\", \"sendClients\", {command_data:?}]\nprocesses = 1\noffline = \"store\"\n[delivery]\npath = {:?}\nfsync = {fsync:?}\n{delivery}",
        db.display().to_string()
    );
    let broker = Broker::launch(
        "bench",
        "127.0.0.1:0",
        "max_connections_per_ip = 100000\nlogin_failures_per_ip = 100000",
        &tables,
        users,
    );
    let server = broker.pid();
    let started = Instant::now();
    loop {
        let handler_up = children(server).len() == 1;
        if handler_up {
            let (mut c, _) = Client::login(broker.addr, "u0", "pw").unwrap();
            c.set_timeout(Some(REPLY_TIMEOUT)).unwrap();
            // The handler is connected once a request of its type is answered (the test
            // request stores one message, for a user no measurement uses).
            let r = c
                .request("warm", "store", &json!({"to": ["warm"]}))
                .unwrap();
            if r["header"]["status"] == "ok" {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "besterd's handler not up"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let handler = children(server).first().copied();
    Running {
        addr: broker.addr,
        server,
        handler,
        _broker: Some(broker),
        children: Vec::new(),
        _dir: dir,
    }
}

/// nats-server with JetStream, its store in a fresh directory, and the file-storage stream
/// [`JS_STREAM`] on [`JS_SUBJECT`].
fn start_jetstream() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bin = std::env::var("BENCH_NATS").unwrap_or_else(|_| "nats-server".into());
    let store = dir.path().join("js");
    let server = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["--user", NATS_USER, "--pass", NATS_PASS])
        .arg("-js")
        .arg("--store_dir")
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    let mut s = loop {
        if let Ok(s) = TcpStream::connect(addr) {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nats-server not up"
        );
        thread::sleep(Duration::from_millis(20));
    };
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let config = json!({
        "name": JS_STREAM, "subjects": [JS_SUBJECT], "storage": "file", "retention": "limits",
        "discard": "old", "max_msgs": -1, "max_bytes": -1, "max_age": 0, "num_replicas": 1,
    })
    .to_string();
    let hello = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"user\":\"{NATS_USER}\",\"pass\":\"{NATS_PASS}\",\"protocol\":1}}\r\nSUB _INBOX.create 1\r\nPUB $JS.API.STREAM.CREATE.{JS_STREAM} _INBOX.create {}\r\n{config}\r\n",
        config.len()
    );
    s.write_all(hello.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer: MSG _INBOX.create 1 N\r\n{...}\r\n, a stream info without "error".
    let answer = loop {
        let n = s.read(&mut buf).expect("the stream create answer");
        assert!(n > 0, "nats-server closed the connection");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(at) = text.find("MSG _INBOX.create")
            && let Some(body) = text[at..].split("\r\n").nth(1)
            && body.ends_with('}')
        {
            break body.to_string();
        }
        assert!(!text.contains("-ERR"), "nats-server refused: {text}");
    };
    let info: Value = serde_json::from_str(&answer).expect("stream info JSON");
    assert!(info.get("error").is_none(), "stream not created: {info}");
    assert_eq!(info["config"]["storage"], "file", "{info}");
    Running {
        addr,
        server: server.id(),
        handler: None,
        _broker: None,
        children: vec![server],
        _dir: dir,
    }
}

/// besterd whose type `store` is served by the bench itself: `socket = …` (besterd listens, the
/// bench connects), `offline = "store"`, the delivery store with this fsync policy. Returns the
/// connected handler socket once a first push (to a user no measurement uses) is reported
/// `stored`.
fn start_push_besterd(fsync: &str) -> (Running, UnixStream) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("delivery.db");
    let sock = dir.path().join("store.sock");
    let tables = format!(
        "[handlers.store]\nsocket = {:?}\noffline = \"store\"\n[delivery]\npath = {:?}\nfsync = {fsync:?}\n{ROOMY}",
        sock.display().to_string(),
        db.display().to_string()
    );
    let broker = Broker::launch(
        "bench",
        "127.0.0.1:0",
        "max_connections_per_ip = 100000\nlogin_failures_per_ip = 100000",
        &tables,
        &[("u0", "pw")],
    );
    let started = Instant::now();
    let mut s = loop {
        if let Ok(s) = UnixStream::connect(&sock) {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "besterd's handler socket not up"
        );
        thread::sleep(Duration::from_millis(20));
    };
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let mut out = Vec::new();
    push_frame(&mut out, |b| {
        b.extend_from_slice(
            br#"{"header":{"status":"ok","command":"sendClients","commandData":["warm"],"id":"warm","store":true},"payload":{"type":"store","data":null}}"#,
        )
    });
    s.write_all(&out).unwrap();
    let (mut buf, mut pos) = (Vec::new(), 0);
    let r = read_frame(&mut s, &mut buf, &mut pos);
    assert_eq!(r["header"]["kind"], "report", "{r}");
    assert_eq!(r["header"]["id"], "warm", "{r}");
    assert_eq!(r["header"]["stored"], json!(["warm"]), "{r}");
    let running = Running {
        addr: broker.addr,
        server: broker.pid(),
        handler: None,
        _broker: Some(broker),
        children: Vec::new(),
        _dir: dir,
    };
    (running, s)
}

/// A handler's storing push `id` to [`STORED_USER`], its data the 100-byte payload.
fn handler_push(id: u64, out: &mut Vec<u8>) {
    push_frame(out, |b| {
        write!(
            b,
            r#"{{"header":{{"status":"ok","command":"sendClients","commandData":["{STORED_USER}"],"id":"{id}","store":true}},"payload":{{"type":"store","data":"#
        )
        .unwrap();
        payload(id, b);
        b.extend_from_slice(b"}}");
    });
}

/// The id of the report of a stored push: kind `report`, status ok, [`STORED_USER`] in `stored`,
/// no one delivered, offline or refused, no data.
fn push_report(body: &[u8]) -> Result<u64, String> {
    let bad = || {
        format!(
            "not the report of a stored push: {}",
            String::from_utf8_lossy(body)
        )
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| bad())?;
    let h = &v["header"];
    let ok = h["kind"] == "report"
        && h["status"] == "ok"
        && h["stored"] == json!([STORED_USER])
        && h["delivered"] == json!([])
        && h["offline"] == json!([])
        && h.get("refused").is_none()
        && v.get("data").is_none();
    match h["id"].as_str().and_then(|i| i.parse().ok()) {
        Some(id) if ok => Ok(id),
        _ => Err(bad()),
    }
}

/// Keep `window` handler pushes in flight on `s` for `secs`, then wait for the last reports;
/// what was done and the seconds taken.
fn run_pusher(s: &mut UnixStream, window: usize, secs: f64) -> (ConnResult, f64) {
    let mut result = ConnResult::default();
    let mut outstanding: HashMap<u64, Instant> = HashMap::new();
    let (mut input, mut pos) = (Vec::<u8>::with_capacity(1 << 20), 0);
    let mut out = Vec::with_capacity(64 * 1024);
    let mut next = 0u64;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    'run: loop {
        let now = Instant::now();
        if now < deadline {
            while outstanding.len() < window {
                handler_push(next, &mut out);
                outstanding.insert(next, now);
                next += 1;
            }
        }
        if !out.is_empty() {
            if let Err(e) = s.write_all(&out) {
                result.errors.push(format!("write: {e}"));
                break;
            }
            out.clear();
        }
        if outstanding.is_empty() {
            break;
        }
        input.drain(..pos);
        pos = 0;
        let len = input.len();
        input.resize(len + 65536, 0);
        match s.read(&mut input[len..]) {
            Ok(n) if n > 0 => input.truncate(len + n),
            other => {
                result.errors.push(format!(
                    "read: {other:?} with {} reports outstanding",
                    outstanding.len()
                ));
                break;
            }
        }
        loop {
            let rest = &input[pos..];
            if rest.len() < 4 {
                break;
            }
            let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            if rest.len() < 4 + n {
                break;
            }
            match push_report(&rest[4..4 + n]) {
                Ok(id) => match outstanding.remove(&id) {
                    Some(sent) => {
                        result.latencies.push(sent.elapsed());
                        result.done += 1;
                    }
                    None => {
                        result
                            .errors
                            .push(format!("report {id} was not outstanding"));
                        break 'run;
                    }
                },
                Err(e) => {
                    result.errors.push(e);
                    break 'run;
                }
            }
            pos += 4 + n;
        }
    }
    (result, t0.elapsed().as_secs_f64())
}

/// One measurement on a fresh system: `system` is `always`, `never` (a client's request, the C
/// handler's storing answer), `push-always`, `push-never` (the bench is the handler and pushes)
/// or `jetstream`.
fn measure(system: &str, window: usize, secs: f64) -> Value {
    let bare = crate::choose_build(system, "BENCH_DURABLE_BASELINE");
    let mut m = measure_bare(bare, window, secs);
    m["system"] = json!(system);
    m
}

fn measure_bare(system: &str, window: usize, secs: f64) -> Value {
    let handler_cpu = |r: &Running| r.handler.map_or(0.0, cpu_seconds);
    let (results, elapsed, cpu0, cpu1, proto) = if let Some(fsync) = system.strip_prefix("push-") {
        let (running, mut s) = start_push_besterd(fsync);
        let cpu0 = (cpu_seconds(running.server), 0.0);
        let (result, elapsed) = run_pusher(&mut s, window, secs);
        let cpu1 = (cpu_seconds(running.server), 0.0);
        drop(s);
        drop(running);
        (vec![result], elapsed, cpu0, cpu1, None)
    } else {
        let (running, proto) = match system {
            "jetstream" => (start_jetstream(), Proto::JetStream),
            fsync => (
                start_besterd(
                    fsync,
                    &json!([STORED_USER]).to_string(),
                    ROOMY,
                    &[("u0", "pw")],
                ),
                Proto::BesterStored,
            ),
        };
        let mut cpu0 = (0.0, 0.0);
        let (results, elapsed) = run_clients(proto, running.addr, 1, window, secs, || {
            cpu0 = (cpu_seconds(running.server), handler_cpu(&running));
        });
        let cpu1 = (cpu_seconds(running.server), handler_cpu(&running));
        drop(running);
        (results, elapsed, cpu0, cpu1, Some(proto))
    };
    let done: u64 = results.iter().map(|r| r.done).sum();
    let mut errors: Vec<String> = results.iter().flat_map(|r| r.errors.clone()).collect();
    if proto == Some(Proto::JetStream) && results[0].last_seq != done {
        errors.push(format!(
            "{done} PubAcks but the last seq is {}",
            results[0].last_seq
        ));
    }
    let mut lat: Vec<Duration> = results.into_iter().flat_map(|r| r.latencies).collect();
    lat.sort_unstable();
    let p50 = lat.get(lat.len() / 2).map_or(0, |d| d.as_micros() as u64);
    let per_msg_us = |cpu: f64| (cpu / done.max(1) as f64 * 1e6 * 10.0).round() / 10.0;
    json!({
        "system": system, "window": window, "stored": done,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "per_s": (done as f64 / elapsed).round(), "p50_us": p50,
        "server_cpu_us_per_msg": per_msg_us(cpu1.0 - cpu0.0),
        "handler_cpu_us_per_msg": per_msg_us(cpu1.1 - cpu0.1),
        "errors": errors.len(), "first_error": errors.first(),
    })
}

/// The whole comparison: runs × windows × systems, then the table of medians.
pub fn durable() -> Value {
    let secs: f64 = env_or("BENCH_SECS", 3.0);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let systems: Vec<String> = std::env::var("BENCH_DURABLE_SYSTEMS")
        .unwrap_or_else(|_| "always,never,push-always,push-never,jetstream".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| {
            ["always", "never", "push-always", "push-never", "jetstream"].contains(&s.as_str())
        })
        .collect();
    let baseline = std::env::var_os("BENCH_DURABLE_BASELINE").is_some();
    let besterd_systems: Vec<String> = systems
        .iter()
        .filter(|s| *s != "jetstream")
        .cloned()
        .collect();
    let mut systems = systems;
    if baseline {
        // Each besterd system right after itself with the baseline binary.
        systems = systems
            .into_iter()
            .flat_map(|s| {
                if s == "jetstream" {
                    vec![s]
                } else {
                    vec![s.clone(), format!("{s}@base")]
                }
            })
            .collect();
    }
    let windows: Vec<usize> = std::env::var("BENCH_WINDOWS")
        .unwrap_or_else(|_| "1,64".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let load_before = crate::loadavg();
    let mut all = Vec::new();
    let mut invalid = 0;
    for run in 0..runs {
        for &window in &windows {
            for system in &systems {
                let mut m = measure(system, window, secs);
                m["run"] = json!(run);
                eprintln!("run {run} {m}");
                if m["errors"] != 0 {
                    invalid += 1;
                }
                all.push(m);
            }
        }
    }
    let load_after = crate::loadavg();
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
    // system/JetStream within each run, then the median of the ratios.
    let ratio_to = |system: &str, other: &str, window: usize| -> f64 {
        let per_run = (0..runs)
            .filter_map(|run| {
                let get = |s: &str| {
                    all.iter()
                        .filter(valid)
                        .find(|m| m["run"] == run && m["window"] == window && m["system"] == s)
                        .and_then(|m| m["per_s"].as_f64())
                };
                Some(get(system)? / get(other)?)
            })
            .collect();
        median(per_run)
    };
    let ratio = |system: &str, window: usize| ratio_to(system, "jetstream", window);
    println!();
    println!(
        "| window | besterd `always` /s (p50 µs) | besterd `never` /s (p50 µs) | JetStream /s (p50 µs) | `always`/JetStream | `never`/JetStream | server CPU µs/msg: `always` / `never` / JetStream | handler CPU µs/msg: `always` / `never` |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut table = serde_json::Map::new();
    for &w in &windows {
        println!(
            "| {w} | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.2} | {:.2} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} |",
            med("always", w, "per_s"),
            med("always", w, "p50_us"),
            med("never", w, "per_s"),
            med("never", w, "p50_us"),
            med("jetstream", w, "per_s"),
            med("jetstream", w, "p50_us"),
            ratio("always", w),
            ratio("never", w),
            med("always", w, "server_cpu_us_per_msg"),
            med("never", w, "server_cpu_us_per_msg"),
            med("jetstream", w, "server_cpu_us_per_msg"),
            med("always", w, "handler_cpu_us_per_msg"),
            med("never", w, "handler_cpu_us_per_msg"),
        );
        table.insert(
            format!("window_{w}"),
            json!({
                "always_per_s": med("always", w, "per_s"),
                "never_per_s": med("never", w, "per_s"),
                "jetstream_per_s": med("jetstream", w, "per_s"),
                "always_over_jetstream": ratio("always", w),
                "never_over_jetstream": ratio("never", w),
                "push_always_per_s": med("push-always", w, "per_s"),
                "push_never_per_s": med("push-never", w, "per_s"),
                "push_always_over_jetstream": ratio("push-always", w),
                "push_never_over_jetstream": ratio("push-never", w),
            }),
        );
    }
    // The handler's pushes (no client hop; the bench is the handler, so no handler CPU).
    println!();
    println!(
        "| window | push `always` /s (p50 µs) | push `never` /s (p50 µs) | JetStream /s (p50 µs) | push `always`/JetStream | push `never`/JetStream | server CPU µs/msg: push `always` / push `never` / JetStream |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &w in &windows {
        println!(
            "| {w} | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.2} | {:.2} | {:.1} / {:.1} / {:.1} |",
            med("push-always", w, "per_s"),
            med("push-always", w, "p50_us"),
            med("push-never", w, "per_s"),
            med("push-never", w, "p50_us"),
            med("jetstream", w, "per_s"),
            med("jetstream", w, "p50_us"),
            ratio("push-always", w),
            ratio("push-never", w),
            med("push-always", w, "server_cpu_us_per_msg"),
            med("push-never", w, "server_cpu_us_per_msg"),
            med("jetstream", w, "server_cpu_us_per_msg"),
        );
    }
    if baseline {
        println!();
        println!(
            "| window | system | this build /s (p50 µs) | baseline /s (p50 µs) | this ÷ baseline | this ÷ JetStream | baseline ÷ JetStream | server CPU µs/msg: this / baseline |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &w in &windows {
            for s in &besterd_systems {
                let b = format!("{s}@base");
                println!(
                    "| {w} | {s} | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.2} | {:.2} | {:.2} | {:.1} / {:.1} |",
                    med(s, w, "per_s"),
                    med(s, w, "p50_us"),
                    med(&b, w, "per_s"),
                    med(&b, w, "p50_us"),
                    ratio_to(s, &b, w),
                    ratio(s, w),
                    ratio(&b, w),
                    med(s, w, "server_cpu_us_per_msg"),
                    med(&b, w, "server_cpu_us_per_msg"),
                );
                if let Some(serde_json::Value::Object(t)) = table.get_mut(&format!("window_{w}")) {
                    t.insert(format!("{s}_over_baseline"), json!(ratio_to(s, &b, w)));
                    t.insert(format!("{s}_baseline_per_s"), json!(med(&b, w, "per_s")));
                }
            }
        }
    }
    println!(
        "medians of {runs} runs × {secs} s; invalid runs: {invalid}; load average before {load_before}, after {load_after}"
    );
    json!({"runs": runs, "seconds": secs, "invalid_runs": invalid, "medians": table,
           "load_before": load_before, "load_after": load_after})
}

/// VmRSS and VmHWM of a process, in KiB.
fn rss(pid: u32) -> (u64, u64) {
    crate::rss_kib(pid)
}

/// The user the memory bench's request `n` goes to.
fn mem_user(n: u64, users: u64) -> String {
    if n.is_multiple_of(10) {
        "big".into()
    } else {
        format!("m{}", (n - n / 10 - 1) % users)
    }
}

fn mem_request(id: u64, to: &str, out: &mut Vec<u8>) {
    push_frame(out, |b| {
        write!(
            b,
            r#"{{"header":{{"scope":"client","id":"{id}"}},"payload":{{"type":"store","data":{{"to":["{to}"],"n":{id},"pad":"{:0>64}"}}}}}}"#,
            ""
        )
        .unwrap();
    });
}

/// Read one frame from a blocking stream with a buffer.
fn read_frame(s: &mut impl Read, buf: &mut Vec<u8>, pos: &mut usize) -> Value {
    loop {
        let rest = &buf[*pos..];
        if rest.len() >= 4 {
            let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            if rest.len() >= 4 + n {
                let v = serde_json::from_slice(&rest[4..4 + n]).expect("a JSON frame");
                *pos += 4 + n;
                return v;
            }
        }
        buf.drain(..*pos);
        *pos = 0;
        let len = buf.len();
        buf.resize(len + 65536, 0);
        let got = s.read(&mut buf[len..]).expect("read a reply");
        assert!(got > 0, "the server closed the connection");
        buf.truncate(len + got);
    }
}

/// Log in as `user` and take its whole queue (`expect` pushes), acknowledging each batch of
/// `batch`; the seconds to the last push. Checks order and count. (The client's own reader is
/// used throughout: the first pushes may come in the same read as the login's reply.)
fn drain_queue(addr: SocketAddr, user: &str, expect: u64, batch: u64) -> f64 {
    let t0 = Instant::now();
    let (mut client, reply) = Client::login(addr, user, "pw").expect("log in");
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    client.set_timeout(Some(Duration::from_secs(20))).unwrap();
    let (mut got, mut last_n) = (0u64, None::<u64>);
    let mut last_ack = String::new();
    while got < expect {
        let f = match client.recv() {
            Ok(Some(f)) => f,
            other => panic!("{user}: {got} of {expect} pushes, then {other:?}"),
        };
        if f["header"]["kind"] != "push" {
            assert_eq!(f["header"]["status"], "ok", "{f}");
            continue; // an ack's reply
        }
        assert_eq!(f["header"]["stored"], true, "{f}");
        let n = f["data"]["n"].as_u64().expect("n");
        assert!(
            last_n.is_none_or(|l| n > l),
            "out of order: {n} after {last_n:?}"
        );
        last_n = Some(n);
        got += 1;
        if got.is_multiple_of(batch) || got == expect {
            let msg = f["header"]["msg"].as_str().unwrap();
            client
                .message(&format!("a{got}"), "bester.ack", &json!({"upto": msg}))
                .unwrap();
            last_ack = format!("a{got}");
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    // The last ack's reply: the whole queue deleted.
    loop {
        match client.recv() {
            Ok(Some(f)) if f["header"]["id"] == last_ack.as_str() => {
                assert_eq!(f["header"]["status"], "ok", "{f}");
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("{user}: no reply to the last ack: {other:?}"),
        }
    }
    secs
}

fn disk_size(dir: &std::path::Path) -> u64 {
    ["delivery.db", "delivery.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
        .sum()
}

/// A million stored messages: memory during and after, the file, and the time to a queue on login.
pub fn durable_memory() -> Value {
    let total: u64 = env_or("BENCH_MEM_TOTAL", 1_000_000);
    let users: u64 = env_or("BENCH_MEM_USERS", 10_000);
    let fsync: String = env_or("BENCH_MEM_FSYNC", "always".to_string());
    let window: u64 = 64;
    let big = total.div_ceil(10);
    let delivery = format!(
        "max_per_user = {big}\nmax_bytes_per_user = 68719476736\nmax_disk_bytes = 68719476736\nmin_free_bytes = 0\n"
    );
    let load_before = crate::loadavg();
    let running = start_besterd(
        &fsync,
        "@to",
        &delivery,
        &[("u0", "pw"), ("big", "pw"), ("m0", "pw")],
    );
    let db_dir = running._dir.path().to_path_buf();
    let pid = running.server;
    let (client, _) = Client::login(running.addr, "u0", "pw").unwrap();
    let mut s = client.into_stream();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let (mut buf, mut pos) = (Vec::new(), 0);
    let mut samples = Vec::new();
    let (rss0, _) = rss(pid);
    let t0 = Instant::now();
    let cpu0 = cpu_seconds(pid);
    let (mut sent, mut done) = (0u64, 0u64);
    let mut out = Vec::new();
    // One more than the total: the last one to `big`, over its limit.
    let last = total;
    while done <= last {
        while sent <= last && sent - done < window {
            let to = if sent == last {
                "big".to_string()
            } else {
                mem_user(sent, users)
            };
            mem_request(sent, &to, &mut out);
            sent += 1;
        }
        s.write_all(&out).unwrap();
        out.clear();
        let f = read_frame(&mut s, &mut buf, &mut pos);
        let id: u64 = f["header"]["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(id, done, "replies in order: {f}");
        if id == last {
            assert_eq!(f["header"]["stored"], json!([]), "{f}");
            assert_eq!(f["header"]["refused"][0]["code"], "queue_full", "{f}");
            assert_eq!(f["header"]["refused"][0]["user"], "big", "{f}");
        } else {
            assert_eq!(f["header"]["status"], "ok", "{f}");
            assert_eq!(f["header"]["stored"], json!([mem_user(id, users)]), "{f}");
        }
        done += 1;
        if done.is_multiple_of(total / 10) {
            let (r, _) = rss(pid);
            eprintln!(
                "stored {done}: VmRSS {r} KiB, {:.0} s, db {} MB",
                t0.elapsed().as_secs_f64(),
                disk_size(&db_dir) / 1_000_000
            );
            samples.push(json!({"stored": done, "vm_rss_kib": r}));
        }
    }
    let fill_secs = t0.elapsed().as_secs_f64();
    let fill_cpu = cpu_seconds(pid) - cpu0;
    drop(s);
    let (rss_full, hwm_full) = rss(pid);
    let db_bytes = disk_size(&db_dir);
    let small = (total - big) / users;
    let small_secs = drain_queue(running.addr, "m0", small, 256);
    let big_secs = drain_queue(running.addr, "big", big, 256);
    let (rss_after, hwm_after) = rss(pid);
    let result = json!({
        "stored": total, "users": users + 1, "fsync": fsync, "window": window,
        "fill_seconds": (fill_secs * 10.0).round() / 10.0,
        "stored_per_s": (total as f64 / fill_secs).round(),
        "server_cpu_us_per_msg": (fill_cpu / total as f64 * 1e7).round() / 10.0,
        "vm_rss_kib_at_start": rss0, "vm_rss_kib_samples": samples,
        "vm_rss_kib_full": rss_full, "vm_hwm_kib_full": hwm_full,
        "db_bytes": db_bytes,
        "login_small_queue": {"messages": small, "seconds": (small_secs * 1000.0).round() / 1000.0},
        "login_big_queue": {"messages": big, "seconds": (big_secs * 1000.0).round() / 1000.0,
                            "per_s": (big as f64 / big_secs).round()},
        "vm_rss_kib_after_delivery": rss_after, "vm_hwm_kib_after_delivery": hwm_after,
        "load_before": load_before, "load_after": crate::loadavg(),
    });
    drop(running);
    result
}
