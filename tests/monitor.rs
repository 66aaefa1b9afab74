//! The monitoring port and the control socket against the real daemon: every endpoint read after
//! real traffic (logins, echo, errors of several codes, a handler crash, a slow consumer, a kick)
//! with the counts asserted exactly; `/metrics` read by the real `prometheus_client` parser;
//! `besterd ctl` tables, JSON, kick, reload and drain; health while starting and with a handler
//! type missing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use besterd::client::Client;
use common::{Broker, DEADLINE, besterd_cmd, code, eventually, handler, repo};
use serde_json::{Value, json};

/// The monitoring address, from the line the daemon logs when it binds it.
pub fn monitor_addr(broker: &Broker) -> SocketAddr {
    let log = broker.log();
    let marker = "monitor: listening on http://";
    let at = log.find(marker).expect("monitor line in the log") + marker.len();
    let end = log[at..].find(' ').unwrap() + at;
    log[at..end].parse().unwrap()
}

/// Send raw bytes to the monitoring port and read the whole answer: (status, body).
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(request).unwrap();
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    let text = String::from_utf8(text).unwrap();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// GET a path: (status, body).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
}

/// GET a JSON page that must answer 200.
pub fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

const MONITOR: &str = "[monitor]\nlisten = \"127.0.0.1:0\"\ntimeout_ms = 1000\n";

fn handlers() -> String {
    format!(
        "[handlers.echo]\n{}\n[handlers.faulty]\n{}\n",
        handler("python3", "handlers/python/echo.py"),
        handler("python3", "tests/handlers/faulty.py"),
    )
}

fn broker(server_keys: &str) -> Broker {
    let keys = format!("request_timeout_ms = 1500\n{server_keys}");
    Broker::start_with(
        &keys,
        &format!("{}{MONITOR}", handlers()),
        &[
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
            ("mallory", "mallory-pw"),
        ],
    )
}

/// A client whose bytes sent are counted, to check the daemon's per-connection figures.
struct Counted {
    client: Client,
    bytes: u64,
    frames: u64,
}

impl Counted {
    fn login(b: &Broker, user: &str, password: &str) -> Counted {
        let mut c = Counted {
            client: b.connect(),
            bytes: 0,
            frames: 0,
        };
        c.send(&json!({"header":{"identify":{"type":"client","authentication":{"username":user,"password":password}}}}));
        let reply = c.client.recv().unwrap().unwrap();
        assert_eq!(reply["header"]["status"], "ok", "{reply}");
        c
    }

    fn send(&mut self, value: &Value) {
        self.send_body(value.to_string().as_bytes());
    }

    fn send_body(&mut self, body: &[u8]) {
        self.client.send_body(body).unwrap();
        self.bytes += 4 + body.len() as u64;
        self.frames += 1;
    }

    /// Send a message and return its answer.
    fn ask(&mut self, id: &str, kind: &str, data: Value) -> Value {
        self.send(
            &json!({"header":{"scope":"client","id":id},"payload":{"type":kind,"data":data}}),
        );
        self.client.recv().unwrap().expect("an answer")
    }
}

/// The parsed exposition: every sample as (name, labels, value).
struct Metrics(Vec<(String, serde_json::Map<String, Value>, f64)>, Value);

impl Metrics {
    /// Parse with the real `prometheus_client` parser (in .venv, see scripts/setup.sh).
    fn parse(text: &str) -> Metrics {
        let python = repo().join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/setup.sh",
            python.display()
        );
        let mut child = Command::new(python)
            .arg(repo().join("tests/tools/prometheus_parse.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the Prometheus parser refused /metrics: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let families: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut samples = Vec::new();
        for family in families.as_object().unwrap().values() {
            for s in family["samples"].as_array().unwrap() {
                let value = match &s[2] {
                    Value::String(inf) if inf == "+Inf" => f64::INFINITY,
                    v => v.as_f64().unwrap(),
                };
                samples.push((
                    s[0].as_str().unwrap().to_string(),
                    s[1].as_object().unwrap().clone(),
                    value,
                ));
            }
        }
        Metrics(samples, families)
    }

    /// The one sample with this name and (at least) these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .0
            .iter()
            .filter(|(n, l, _)| {
                n == name && labels.iter().all(|(k, v)| l.get(*k) == Some(&json!(v)))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0]
    }

    fn family_type(&self, family: &str) -> &str {
        self.1[family]["type"].as_str().unwrap()
    }
}

fn ctl_socket(b: &Broker) -> PathBuf {
    b.dir.path().join("run/besterd.ctl")
}

fn ctl(b: &Broker, args: &[&str]) -> std::process::Output {
    let socket = ctl_socket(b);
    let mut all = vec!["ctl", "--socket", socket.to_str().unwrap()];
    all.extend_from_slice(args);
    besterd_cmd(&all, None)
}

fn handler_row<'a>(handlers: &'a Value, kind: &str) -> &'a Value {
    handlers["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["type"] == kind)
        .unwrap()
}

#[test]
fn every_endpoint_after_real_traffic_counts_exactly() {
    let b =
        broker("max_frame_bytes = 16384\nmax_outbound_bytes = 65536\nlogin_failures_per_user = 2");
    let m = monitor_addr(&b);
    assert_eq!(get(m, "/healthz"), (200, r#"{"status":"ok"}"#.to_string()));

    // Logins: alice (twice), mallory wrong twice then rate limited, a raw connection that
    // talks before identifying.
    let mut alice = Counted::login(&b, "alice", "alice-pw");
    let mut alice2 = Counted::login(&b, "alice", "alice-pw");
    for _ in 0..2 {
        let (_, reply) = Client::login(b.addr, "mallory", "guess").unwrap();
        assert_eq!(code(&reply), "auth_failed");
    }
    let (_, reply) = Client::login(b.addr, "mallory", "mallory-pw").unwrap();
    assert_eq!(code(&reply), "rate_limited");
    let mut raw = b.connect();
    raw.message("early", "echo", &json!(1)).unwrap();
    assert_eq!(code(&raw.recv().unwrap().unwrap()), "not_identified");

    // Traffic and errors of several codes.
    for i in 0..3 {
        let r = alice.ask(&format!("e{i}"), "echo", json!({"i": i}));
        assert_eq!(r["data"], json!({"i": i}));
    }
    assert_eq!(code(&alice.ask("u", "nope", json!(null))), "unknown_type");
    assert_eq!(
        code(&alice.ask("r", "bester.nope", json!(null))),
        "reserved_type"
    );
    alice.send_body(b"{");
    assert_eq!(code(&alice.client.recv().unwrap().unwrap()), "invalid_json");
    let r = alice.ask("bad", "faulty", json!({"action": "what"}));
    assert_eq!(code(&r), "bad_request", "the handler's own code");
    let r = alice.ask("hang", "faulty", json!({"action": "hang"}));
    assert_eq!(code(&r), "handler_timeout");
    let r = alice.ask("crash", "faulty", json!({"action": "crash"}));
    assert_eq!(code(&r), "handler_unavailable");
    eventually("faulty to be restarted and connected", || {
        let h = get_json(m, "/handlers");
        let f = handler_row(&h, "faulty");
        (f["processes_connected"] == 1 && f["restarts"] == 1).then_some(())
    });
    let pong = alice2.ask("p", "bester.ping", json!(null));
    assert_eq!(pong["data"], "pong");

    // Paging and filtering while alice has two connections.
    let page = get_json(m, "/connections?user=alice&limit=1&offset=1");
    assert_eq!(page["total"], 2);
    assert_eq!(page["connections"].as_array().unwrap().len(), 1);
    let alice2_id = page["connections"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(page["connections"][0]["user"], "alice");
    assert_eq!(page["connections"][0]["frames_in"], 2);

    // A slow consumer: bob never reads while alice pushes big frames at him.
    let bob = b.login("bob", "bob-pw");
    let big = "x".repeat(12_000);
    let mut pushes = 0;
    loop {
        let r = alice.ask(
            &format!("push{pushes}"),
            "faulty",
            json!({"action": "send_to", "users": ["bob"], "pad": big}),
        );
        assert_eq!(r["header"]["status"], "ok", "{r}");
        pushes += 1;
        if r["header"]["offline"] == json!(["bob"]) {
            break;
        }
        assert!(pushes < 5000, "bob was never cut off");
    }
    drop(bob);

    // Kick alice's second connection over the control socket.
    let out = ctl(&b, &["kick", &alice2_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("kicked {alice2_id}\n")
    );
    let kicked = alice2.client.recv().unwrap().unwrap();
    assert_eq!(
        kicked,
        json!({"header":{"status":"error","kind":"reply"},"data":{"error":"closed by an administrator","code":"kicked"}})
    );
    assert!(
        alice2.client.recv().unwrap().is_none(),
        "closed after kicked"
    );

    // Wait until every closed connection is gone, then check every figure.
    let status = eventually("only alice's connection to remain", || {
        let s = get_json(m, "/status");
        (s["connections"]["client"]["now"] == 1).then_some(s)
    });
    assert_eq!(status["server"], "test");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["health"], "ok");
    assert_eq!(status["limits"]["max_frame_bytes"], 16384);
    assert_eq!(status["limits"]["request_timeout_ms"], 1500);
    assert_eq!(
        status["connections"],
        json!({
            "client": {"now": 1, "total": 7},
            "handler": {"now": 2, "total": 3},
            "peer": {"now": 0, "total": 0},
        })
    );
    assert_eq!(
        status["logins"],
        json!({"ok": 3, "failed": 2, "rate_limited": 1, "password_checks": 5})
    );
    let ok = 3 + 1 + pushes;
    assert_eq!(status["messages"], json!({"ok": ok, "error": 6}));
    let mut errors = serde_json::Map::new();
    for code in besterd::protocol::ErrorCode::ALL {
        errors.insert(code.as_str().into(), json!(0));
    }
    for (code, n) in [
        ("auth_failed", 2),
        ("rate_limited", 1),
        ("not_identified", 1),
        ("unknown_type", 1),
        ("reserved_type", 1),
        ("invalid_json", 1),
        ("handler_timeout", 1),
        ("handler_unavailable", 1),
        ("kicked", 1),
    ] {
        errors.insert(code.into(), json!(n));
    }
    assert_eq!(status["errors"], Value::Object(errors));
    assert_eq!(status["slow_consumers"], 1);
    assert_eq!(status["requests_in_flight"], 0);

    let handlers = get_json(m, "/handlers");
    let echo = handler_row(&handlers, "echo");
    assert_eq!(
        (
            &echo["processes_configured"],
            &echo["processes_connected"],
            &echo["restarts"],
            &echo["in_flight"]
        ),
        (&json!(1), &json!(1), &json!(0), &json!(0))
    );
    assert_eq!(
        echo["requests"],
        json!({"ok": 3, "error": 0, "timeout": 0, "unavailable": 0, "busy": 0})
    );
    assert_eq!(echo["latency_us"]["count"], 3);
    assert_eq!(echo["latency_us"]["buckets"]["+Inf"], 3);
    assert!(echo["latency_us"]["p50"].is_u64(), "{echo}");
    let faulty = handler_row(&handlers, "faulty");
    assert_eq!(faulty["restarts"], 1);
    assert_eq!(
        faulty["requests"],
        json!({"ok": pushes, "error": 1, "timeout": 1, "unavailable": 1, "busy": 0})
    );
    assert_eq!(faulty["latency_us"]["count"], pushes + 1);
    assert_eq!(status["handlers"], handlers["handlers"]);

    let conns = get_json(m, "/connections");
    assert_eq!(conns["total"], 1);
    let a = &conns["connections"][0];
    assert_eq!(a["user"], "alice");
    assert_eq!(a["frames_in"], alice.frames);
    assert_eq!(a["frames_out"], alice.frames, "one answer per frame");
    assert_eq!(a["bytes_in"], alice.bytes);
    assert!(a["bytes_out"].as_u64().unwrap() > 4 * alice.frames);
    assert_eq!(a["in_flight"], 0);
    assert_eq!(a["queued_output_bytes"], 0);
    let alice_stream = alice.client.into_stream();
    assert_eq!(a["address"], alice_stream.local_addr().unwrap().to_string());
    assert_eq!(get_json(m, "/peers"), json!({"peers": []}));

    // /metrics through the real Prometheus parser.
    let (status_code, text) = get(m, "/metrics");
    assert_eq!(status_code, 200);
    let metrics = Metrics::parse(&text);
    assert_eq!(metrics.get("besterd_info", &[("server", "test")]), 1.0);
    assert_eq!(metrics.get("besterd_healthy", &[]), 1.0);
    assert_eq!(metrics.family_type("besterd_connections_open"), "gauge");
    assert_eq!(metrics.family_type("besterd_errors"), "counter");
    assert_eq!(
        metrics.family_type("besterd_handler_latency_seconds"),
        "histogram"
    );
    assert_eq!(
        metrics.get("besterd_connections_open", &[("role", "client")]),
        1.0
    );
    assert_eq!(
        metrics.get("besterd_connections_total", &[("role", "client")]),
        7.0
    );
    assert_eq!(
        metrics.get("besterd_logins_total", &[("outcome", "failed")]),
        2.0
    );
    assert_eq!(metrics.get("besterd_password_checks_total", &[]), 5.0);
    for code in besterd::protocol::ErrorCode::ALL {
        assert_eq!(
            metrics.get("besterd_errors_total", &[("code", code.as_str())]),
            status["errors"][code.as_str()].as_f64().unwrap(),
            "{code}"
        );
    }
    assert_eq!(
        metrics.get("besterd_messages_total", &[("outcome", "ok")]),
        ok as f64
    );
    assert_eq!(metrics.get("besterd_slow_consumers_total", &[]), 1.0);
    assert_eq!(
        metrics.get(
            "besterd_handler_requests_total",
            &[("type", "faulty"), ("outcome", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        metrics.get("besterd_handler_restarts_total", &[("type", "faulty")]),
        1.0
    );
    assert_eq!(
        metrics.get("besterd_handler_latency_seconds_count", &[("type", "echo")]),
        3.0
    );
    assert_eq!(
        metrics.get(
            "besterd_handler_latency_seconds_bucket",
            &[("type", "echo"), ("le", "+Inf")]
        ),
        3.0
    );
    let sum = metrics.get("besterd_handler_latency_seconds_sum", &[("type", "echo")]);
    assert!(sum > 0.0 && sum < 60.0, "{sum}");
    let buckets: Vec<f64> = metrics
        .0
        .iter()
        .filter(|(n, l, _)| n == "besterd_handler_latency_seconds_bucket" && l["type"] == "echo")
        .map(|(_, _, v)| *v)
        .collect();
    assert_eq!(buckets.len(), 18);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert!(metrics.get("besterd_monitor_requests_total", &[]) >= 5.0);
    drop(alice_stream);
}

#[test]
fn bad_paths_methods_and_queries_are_answered() {
    let b = broker("");
    let m = monitor_addr(&b);
    assert_eq!(get(m, "/nope"), (404, r#"{"error":"no such page"}"#.into()));
    assert_eq!(
        http_raw(m, b"POST /status HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        (405, r#"{"error":"only GET is served here"}"#.into())
    );
    assert_eq!(
        get(m, "/connections?limit=many"),
        (400, r#"{"error":"limit must be a whole number"}"#.into())
    );
    assert_eq!(
        get(m, "/connections?sort=1"),
        (400, r#"{"error":"unknown parameter \"sort\""}"#.into())
    );
    let page = get_json(m, "/connections?user=nobody");
    assert_eq!(page["total"], 0);
    // A client that half-closes right after its request is still answered.
    let mut s = TcpStream::connect(m).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(text.ends_with("\r\n\r\n{\"status\":\"ok\"}"), "{text:?}");
    // One that leaves mid-request is simply closed, and the port keeps serving.
    let mut s = TcpStream::connect(m).unwrap();
    s.write_all(b"GET /sta").unwrap();
    drop(s);
    assert_eq!(get(m, "/healthz").0, 200);
}

/// DNS rebinding: a web page at `http://evil.example:PORT/` whose name the attacker then points
/// at 127.0.0.1 reaches the monitor with its own name in `Host`. It is refused; IP literals,
/// `localhost` and names listed in `[monitor] hosts` are answered.
#[test]
fn a_page_whose_name_was_rebound_to_loopback_cannot_read_the_monitor() {
    let b = Broker::start_with(
        "",
        &format!("{}{MONITOR}hosts = [\"metrics.internal\"]\n", handlers()),
        &[("alice", "alice-pw")],
    );
    let _alice = b.login("alice", "alice-pw");
    let m = monitor_addr(&b);
    let port = m.port();
    let ask = |host: &str| {
        http_raw(
            m,
            format!("GET /connections HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n\r\n")
                .as_bytes(),
        )
    };
    let refused = (
        403,
        r#"{"error":"this Host is not served here (see [monitor] hosts)"}"#.to_string(),
    );
    assert_eq!(ask(&format!("evil.example:{port}")), refused);
    assert_eq!(ask(&format!("127.0.0.1.evil.example:{port}")), refused);
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("metrics.internal:{port}"),
    ] {
        let (status, body) = ask(&host);
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body.contains("\"alice\""), "{host}: {body}");
    }
}

#[test]
fn healthz_says_why_while_starting_and_when_a_type_has_no_process() {
    // A handler that never starts: the daemon waits for it (starting), then serves without it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tables = format!(
        "[handlers.echo]\n{}\n[handlers.broken]\n{}\nenv = {{ BESTER_FAULTY_MODE = \"refuse\" }}\n[monitor]\nlisten = \"127.0.0.1:{port}\"\n",
        handler("python3", "handlers/python/echo.py"),
        handler("python3", "tests/handlers/faulty.py"),
    );
    let starter = std::thread::spawn(move || {
        Broker::start_with(
            "handler_startup_timeout_ms = 4000",
            &tables,
            &[("alice", "pw")],
        )
    });
    let m: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    let mut seen_starting = false;
    while !starter.is_finished() && started.elapsed() < DEADLINE {
        if let Ok(mut s) = TcpStream::connect(m) {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n");
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            if text.starts_with("HTTP/1.1 503")
                && text.ends_with(
                    r#"{"status":"unavailable","reason":"starting: waiting for handlers to connect"}"#,
                )
            {
                seen_starting = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let b = starter.join().unwrap();
    assert!(seen_starting, "/healthz never said starting:\n{}", b.log());
    assert_eq!(
        get(m, "/healthz"),
        (
            503,
            r#"{"status":"unavailable","reason":"no process connected for handler type(s): broken"}"#
                .into()
        )
    );
    let status = get_json(m, "/status");
    assert_eq!(
        status["health"],
        "no process connected for handler type(s): broken"
    );
    let metrics = Metrics::parse(&get(m, "/metrics").1);
    assert_eq!(metrics.get("besterd_healthy", &[]), 0.0);
    assert_eq!(
        metrics.get("besterd_handler_connections", &[("type", "broken")]),
        0.0
    );
}

#[test]
fn ctl_status_tables_json_reload_and_drain() {
    let mut b = broker("");
    let socket = ctl_socket(&b);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the control socket is private");
    let mut alice = b.login("alice", "alice-pw");
    alice.request("e", "echo", &json!(1)).unwrap();

    let out = ctl(&b, &["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!(
            "server test (besterd {}) on {}, up ",
            env!("CARGO_PKG_VERSION"),
            b.addr
        )),
        "{text}"
    );
    assert!(
        text.contains("\nconnections  now  total\nclient       1    1\n"),
        "{text}"
    );
    assert!(text.contains("\necho     1/1"), "{text}");
    assert!(text.contains("  alice  127.0.0.1:"), "{text}");

    let out = ctl(&b, &["status", "--json"]);
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["status"]["connections"]["client"]["now"], 1);
    assert_eq!(answer["connections"]["connections"][0]["user"], "alice");
    assert_eq!(answer["connections"]["connections"][0]["frames_in"], 2);

    let out = ctl(&b, &["kick", "--user", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "besterd ctl: user \"nobody\" has no open connection\n"
    );
    let out = ctl(&b, &["kick", "99.99"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "besterd ctl: no open client connection 99.99\n"
    );
    let out = besterd_cmd(
        &["ctl", "--socket", "/nonexistent/besterd.ctl", "status"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("besterd ctl: cannot connect to /nonexistent/besterd.ctl: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = ctl(&b, &["reload"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "reloaded\n");
    assert!(b.log().contains("reload requested on the control socket"));

    let out = ctl(&b, &["drain", "--json"]);
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer, json!({"ok": true, "draining": true}));
    assert!(alice.recv().unwrap().is_none(), "an idle client is closed");
    let started = Instant::now();
    while b.is_running() {
        assert!(
            started.elapsed() < DEADLINE,
            "drain did not stop the daemon"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!socket.exists(), "the control socket is removed on exit");
}

#[test]
fn the_control_socket_refuses_other_users() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    let b = broker("");
    let socket = ctl_socket(&b);
    // Open the file modes so that only the peer-credential check stands in the way.
    std::fs::set_permissions(
        socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ntry:\n  s.sendall(b'{\"command\":\"drain\"}\\n')\nexcept BrokenPipeError:\n  pass\nprint(s.makefile().readline(), end='')";
    let out = Command::new("python3")
        .args(["-c", script, socket.to_str().unwrap()])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"ok\":false,\"error\":\"permission denied\"}\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        b.log()
            .contains("control socket: refused a connection from uid 65534")
    );
    // Not drained: still serving.
    b.login("alice", "alice-pw");
}

/// The broker serves a client beside the monitoring port's troubles: an echo round trip.
fn still_serving(client: &mut Client, n: u32) {
    let r = client
        .request(&format!("side{n}"), "echo", &json!({"n": n}))
        .unwrap();
    assert_eq!(r["data"], json!({"n": n}), "{r}");
}

#[test]
fn oversized_requests_and_non_http_bytes_are_answered_and_closed() {
    let mut b = broker("");
    let m = monitor_addr(&b);
    let mut side = b.login("alice", "alice-pw");
    still_serving(&mut side, 0);
    let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(10_000));
    assert_eq!(
        http_raw(m, long_line.as_bytes()),
        (
            431,
            r#"{"error":"request line and headers too large"}"#.into()
        )
    );
    let long_header = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(9_000));
    assert_eq!(
        http_raw(m, long_header.as_bytes()),
        (
            431,
            r#"{"error":"request line and headers too large"}"#.into()
        )
    );
    let mut many = "GET /status HTTP/1.1\r\n".to_string();
    for i in 0..40 {
        many.push_str(&format!("X-{i}: y\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(
        http_raw(m, many.as_bytes()),
        (431, r#"{"error":"too many headers"}"#.into())
    );
    still_serving(&mut side, 1);
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        &b"\x00\x00\x00\x10{\"header\":{}}"[..],
        b"HELLO\r\n\r\n",
    ] {
        assert_eq!(
            http_raw(m, garbage),
            (400, r#"{"error":"not an HTTP/1.x request"}"#.into()),
            "{garbage:?}"
        );
    }
    still_serving(&mut side, 2);
    let status = get_json(m, "/status");
    assert_eq!(status["monitor"]["refused"], 6);
    assert!(b.is_running());
}

#[test]
fn a_slowloris_request_is_timed_out() {
    let mut b = broker("");
    let m = monitor_addr(&b);
    let mut side = b.login("alice", "alice-pw");
    let mut stream = TcpStream::connect(m).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    stream.write_all(b"GET /status HTTP/1.1\r\n").unwrap();
    let mut answer = Vec::new();
    let mut i = 0;
    loop {
        assert!(started.elapsed() < DEADLINE, "never timed out");
        // One header line at a time, never the blank line that ends the request.
        if stream
            .write_all(format!("X-{i}: y\r\n").as_bytes())
            .is_err()
        {
            break;
        }
        i += 1;
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        if i % 5 == 0 {
            still_serving(&mut side, i);
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n")
            && text.ends_with(r#"{"error":"request not complete in time"}"#),
        "{text:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the whole request had timeout_ms = 1000"
    );
    still_serving(&mut side, 9999);
    assert!(b.is_running());
}

#[test]
fn a_thousand_idle_monitoring_connections_are_capped_and_timed_out() {
    common::raise_fd_limit();
    let mut b = broker("");
    let m = monitor_addr(&b);
    let mut side = b.login("alice", "alice-pw");
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let s = TcpStream::connect(m).unwrap();
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            s
        })
        .collect();
    // The broker keeps serving while they are open.
    still_serving(&mut side, 1);
    let mut over_cap = 0;
    let mut timed_out = 0;
    for mut s in idle {
        let mut text = String::new();
        let read = s.read_to_string(&mut text);
        if text.starts_with("HTTP/1.1 503 ") {
            assert!(text.ends_with(r#"{"error":"too many monitoring connections"}"#));
            over_cap += 1;
        } else if text.starts_with("HTTP/1.1 408 ") {
            timed_out += 1;
        } else {
            panic!("neither refused nor timed out: {text:?} {read:?}");
        }
    }
    assert_eq!(over_cap + timed_out, 1000);
    // From one address: the per-address cap (8) were held until the first-byte timeout (and
    // slots freed by it were taken by later ones).
    assert!(
        timed_out >= 8,
        "the per-address cap were held until their timeout: {timed_out}"
    );
    still_serving(&mut side, 2);
    let status = eventually("the monitoring port to take requests again", || {
        let (code, body) = get(m, "/status");
        (code == 200).then(|| serde_json::from_str::<Value>(&body).unwrap())
    });
    assert_eq!(status["monitor"]["refused"], 1000);
    assert_eq!(status["monitor"]["connections"], 1, "only this request's");
    assert!(b.is_running());
}

#[test]
fn peers_show_link_state_and_message_figures() {
    let secret = "secret-shared-by-a-and-b";
    let faulty = handler("python3", "tests/handlers/faulty.py");
    let a = Broker::launch(
        "a",
        "127.0.0.1:0",
        "",
        &format!("[handlers.faulty]\n{faulty}\n[peers.b]\nsecret = {secret:?}\n{MONITOR}"),
        &[("alice", "alice-pw")],
    );
    let m = monitor_addr(&a);
    let mut b = Broker::launch(
        "b",
        "127.0.0.1:0",
        "",
        &format!(
            "[handlers.faulty]\n{faulty}\n[peers.a]\nsecret = {secret:?}\naddress = \"{}\"\n",
            a.addr
        ),
        &[("alice", "alice-pw")],
    );
    let up = eventually("the link to b", || {
        let p = get_json(m, "/peers");
        (p["peers"][0]["state"] == "up").then_some(p)
    });
    assert_eq!(up["peers"][0]["name"], "b");
    assert_eq!(up["peers"][0]["address"], Value::Null, "b dials a");

    let mut alice = a.login("alice", "alice-pw");
    let r = alice
        .request(
            "1",
            "faulty",
            &json!({"action": "to_servers", "servers": ["b", "nope"], "data": {"action": "echo"}}),
        )
        .unwrap();
    assert_eq!(r["header"]["servers"]["b"]["status"], "ok", "{r}");
    assert_eq!(
        r["header"]["servers"]["nope"]["code"], "unknown_peer",
        "{r}"
    );
    let r = alice
        .request(
            "2",
            "faulty",
            &json!({"action": "to_servers", "servers": ["b"], "data": {"action": "what"}}),
        )
        .unwrap();
    assert_eq!(r["header"]["servers"]["b"]["code"], "bad_request", "{r}");

    let p = get_json(m, "/peers");
    let row = &p["peers"][0];
    assert_eq!(
        (&row["sent"], &row["acked"], &row["failed"]),
        (&json!(2), &json!(1), &json!(1))
    );
    assert_eq!(row["ack_latency_us"]["count"], 2);
    let status = get_json(m, "/status");
    assert_eq!(status["connections"]["peer"], json!({"now": 1, "total": 1}));
    assert_eq!(status["errors"]["unknown_peer"], 1);
    let metrics = Metrics::parse(&get(m, "/metrics").1);
    assert_eq!(metrics.get("besterd_peer_up", &[("peer", "b")]), 1.0);
    assert_eq!(
        metrics.get("besterd_peer_messages_acked_total", &[("peer", "b")]),
        1.0
    );
    assert_eq!(
        metrics.get("besterd_peer_ack_latency_seconds_count", &[("peer", "b")]),
        2.0
    );

    let since_up = row["since"].as_f64().unwrap();
    assert!(b.stop().success());
    let down = eventually("the link to b to be down", || {
        let p = get_json(m, "/peers");
        (p["peers"][0]["state"] == "down").then_some(p)
    });
    assert!(down["peers"][0]["since"].as_f64().unwrap() >= since_up);
    assert_eq!(
        Metrics::parse(&get(m, "/metrics").1).get("besterd_peer_up", &[("peer", "b")]),
        0.0
    );
}

#[test]
fn healthz_says_draining_while_the_last_output_lingers() {
    let b = broker("");
    let m = monitor_addr(&b);
    let mut alice = b.login("alice", "alice-pw");
    // bob stops reading; alice pushes to him until the broker itself holds output for him (the
    // kernel buffers are full), so that shutting down has to wait for his connection.
    let bob = b.login("bob", "bob-pw");
    let pad = "x".repeat(500_000);
    let mut n = 0;
    eventually("output queued for bob", || {
        n += 1;
        let r = alice
            .request(
                &format!("p{n}"),
                "faulty",
                &json!({"action": "send_to", "users": ["bob"], "pad": pad}),
            )
            .unwrap();
        assert_eq!(r["header"]["delivered"], json!(["bob"]), "{r}");
        let page = get_json(m, "/connections?user=bob");
        (page["connections"][0]["queued_output_bytes"]
            .as_u64()
            .unwrap()
            > 0)
        .then_some(())
    });
    let out = ctl(&b, &["drain"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "draining: no new clients; exiting once in-flight work is answered\n"
    );
    assert_eq!(
        get(m, "/healthz"),
        (
            503,
            r#"{"status":"unavailable","reason":"draining: the server is shutting down"}"#.into()
        )
    );
    drop(bob);
}
