//! `directory`: the federation directory measured on three real besterd servers a, b, c, linked
//! in a full mesh with `[federation] directory = true`, and 10,000 online users spread across them.
//!
//!   cargo bench --bench load -- directory    (BENCH_DIR_USERS, default 10,000; BENCH_DIR_CHANGES,
//!                                             default 300; BENCH_RUNS, default 3)
//!
//! Logins go through an auth handler (`benches/directory/auth.py`) that accepts `{"user":U}` as
//! U: one handler round trip per login and no argon2 check, so 10,000 distinct users are online in
//! seconds. Each run, on fresh servers:
//!
//! 1. **Size.** Resident memory (`/proc/PID/status` `VmRSS`) of each server with the links up and
//!    no users; then c's third of the users logs in, and a's and b's growth (they hold only c's
//!    entries, no connections of those users) divided by the entries is the memory per entry;
//!    then b's and a's thirds. Each server's `GET /directory` entries and heap estimate, and its
//!    RSS after all users, are reported.
//! 2. **Per change.** A watcher on a subscribes (`bester.presence.subscribe`) to BENCH_DIR_CHANGES
//!    users of c who are not online yet; they log in on c one at a time, and for each the time
//!    from c's login reply to the watcher's presence push is a latency sample. The directory
//!    bytes c sent to a over those logins (`besterd_directory_sent_bytes_total`, kept per peer)
//!    divided by the changes is the traffic per change per peer.
//! 3. **Relink.** c is reloaded without its `[peers.a]` (the link goes down) and then with it
//!    again; the directory bytes each side sent the other from the second reload until both have
//!    the other's snapshot in are the snapshot traffic, and the time they took.
//!
//! Medians of BENCH_RUNS runs. Bytes are directory frame bodies (the 4-byte length prefixes, one
//! per frame, are not counted).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use besterd::client::Client;
use serde_json::{Value, json};

use super::common::{Broker, besterd_cmd, handler};
use super::{percentiles, rss_kib};

const SECRET: &str = "directory-bench-secret-0123456789";
const LIMIT: Duration = Duration::from_secs(120);
/// Logins in flight at once on one server (the auth handler's queue is bounded).
const BATCH: usize = 200;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Server {
    broker: Broker,
    monitor: SocketAddr,
    /// The configuration file's text, and where its `[peers.a]` table starts (c only).
    config: String,
    peer_a_at: Option<usize>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.broker.pid()
    }

    fn rss(&self) -> u64 {
        rss_kib(self.pid()).0
    }

    fn get(&self, path: &str) -> Value {
        let mut s = TcpStream::connect(self.monitor).expect("monitor");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    /// What `GET /directory` says about peer `server`.
    fn peer(&self, server: &str) -> Value {
        let d = self.get("/directory");
        d["servers"]
            .as_array()
            .and_then(|s| s.iter().find(|e| e["server"] == server).cloned())
            .unwrap_or(Value::Null)
    }

    fn reload(&self, config: &str) {
        std::fs::write(self.broker.config_path(), config).unwrap();
        let socket = self.broker.dir.path().join("run/besterd.ctl");
        let out = besterd_cmd(
            &["ctl", "--socket", socket.to_str().unwrap(), "reload"],
            None,
        );
        assert!(
            out.status.success(),
            "reload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A free loopback port for the monitor (the daemon logs its address only at info level).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Server `name` with these peers (a peer with an address is dialled).
fn start(name: &str, peers: &[(&str, Option<SocketAddr>)]) -> Server {
    let monitor = free_addr();
    let mut tables = format!(
        "[handlers.dirauth]\n{}\n[auth]\nhandler = \"dirauth\"\nmax_inflight = 256\n[presence]\nmax_subscriptions = 10000\n\
         [federation]\ndirectory = true\n[monitor]\nlisten = \"{monitor}\"\n",
        handler("python3", "benches/directory/auth.py")
    );
    let mut peer_a_at = None;
    for (peer, address) in peers {
        let table = format!("[peers.{peer}]\nsecret = {SECRET:?}\n");
        if *peer == "a" {
            peer_a_at = Some(tables.len());
        }
        tables.push_str(&table);
        if let Some(a) = address {
            tables.push_str(&format!("address = \"{a}\"\n"));
        }
    }
    let broker = Broker::launch(
        name,
        "127.0.0.1:0",
        "max_connections = 30000\nmax_connections_per_ip = 100000\nmax_connections_per_user = 100000\n\
         login_failures_per_ip = 100000\nidentify_timeout_ms = 60000",
        &tables,
        &[],
    );
    let config = std::fs::read_to_string(broker.config_path()).unwrap();
    // The offset in the file: the tables come last.
    let peer_a_at = peer_a_at.map(|at| config.len() - tables.len() + at);
    Server {
        broker,
        monitor,
        config,
        peer_a_at,
    }
}

fn identify(user: &str) -> Value {
    json!({"header":{"identify":{"type":"client","authentication":{"user":user}}}})
}

/// Log `users` in on `server`, BATCH at a time; the connections stay open.
fn log_in(server: &Server, users: &[String]) -> Vec<Client> {
    let mut clients = Vec::with_capacity(users.len());
    for batch in users.chunks(BATCH) {
        let mut open = Vec::with_capacity(batch.len());
        for user in batch {
            let mut c = Client::connect(server.broker.addr).expect("connect");
            c.set_timeout(Some(Duration::from_secs(60))).unwrap();
            c.send(&identify(user)).unwrap();
            open.push(c);
        }
        for mut c in open {
            let reply = c.recv().unwrap().expect("login reply");
            assert_eq!(reply["header"]["status"], "ok", "{reply}");
            clients.push(c);
        }
    }
    clients
}

/// Wait until `server`'s directory has exactly `n` entries for `peer`, its snapshot in.
fn wait_entries(server: &Server, peer: &str, n: usize) {
    let started = Instant::now();
    loop {
        let p = server.peer(peer);
        if p["entries"] == n && p["in_sync"] == true {
            return;
        }
        assert!(
            started.elapsed() < LIMIT,
            "directory short of {n} for {peer}: {p}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until the auth handler is connected (`/healthz` 200) and every link is in sync.
fn wait_up(servers: &[(&str, &Server)]) {
    for (name, s) in servers {
        let started = Instant::now();
        loop {
            let health = s.get("/healthz");
            let ok = health["status"] == "ok"
                && servers
                    .iter()
                    .filter(|(other, _)| other != name)
                    .all(|(other, _)| s.peer(other)["in_sync"] == true);
            if ok {
                break;
            }
            assert!(started.elapsed() < LIMIT, "{name} not up: {health}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn sent_to(server: &Server, peer: &str) -> u64 {
    server.peer(peer)["sent_bytes"].as_u64().unwrap_or(0)
}

fn received_from(server: &Server, peer: &str) -> u64 {
    server.peer(peer)["received_bytes"].as_u64().unwrap_or(0)
}

/// One run's figures.
fn run(users: usize, changes: usize) -> Value {
    let a = start("a", &[("b", None), ("c", None)]);
    let b = start("b", &[("c", None), ("a", Some(a.broker.addr))]);
    let c = start(
        "c",
        &[("b", Some(b.broker.addr)), ("a", Some(a.broker.addr))],
    );
    wait_up(&[("a", &a), ("b", &b), ("c", &c)]);
    let rss0 = [a.rss(), b.rss(), c.rss()];
    // u0.. by thirds: i % 3 == 0 on a, 1 on b, 2 on c.
    let names = |k: usize| -> Vec<String> {
        (0..users)
            .filter(|i| i % 3 == k)
            .map(|i| format!("u{i}"))
            .collect()
    };
    let (on_a, on_b, on_c) = (names(0), names(1), names(2));
    let started = Instant::now();
    let c_clients = log_in(&c, &on_c);
    wait_entries(&a, "c", on_c.len());
    wait_entries(&b, "c", on_c.len());
    // a and b hold only c's entries now: their growth is the directory's.
    let grown = [a.rss() - rss0[0], b.rss() - rss0[1]];
    let b_clients = log_in(&b, &on_b);
    let a_clients = log_in(&a, &on_a);
    for (s, peers) in [
        (&a, [("b", on_b.len()), ("c", on_c.len())]),
        (&b, [("a", on_a.len()), ("c", on_c.len())]),
        (&c, [("a", on_a.len()), ("b", on_b.len())]),
    ] {
        for (peer, n) in peers {
            wait_entries(s, peer, n);
        }
    }
    let all_in = started.elapsed().as_secs_f64();
    let rss1 = [a.rss(), b.rss(), c.rss()];
    let mut size = serde_json::Map::new();
    for (name, s, i) in [("a", &a, 0), ("b", &b, 1), ("c", &c, 2)] {
        let d = s.get("/directory");
        let servers = d["servers"].as_array().cloned().unwrap_or_default();
        let entries: u64 = servers.iter().filter_map(|e| e["entries"].as_u64()).sum();
        let heap: u64 = servers.iter().filter_map(|e| e["bytes"].as_u64()).sum();
        size.insert(
            name.into(),
            json!({"entries": entries, "heap_bytes": heap,
                   "heap_bytes_per_entry": heap as f64 / entries.max(1) as f64,
                   "rss_kib_before": rss0[i], "rss_kib_after": rss1[i]}),
        );
    }
    let rss_per_entry = (grown[0] + grown[1]) as f64 * 1024.0 / (2 * on_c.len()) as f64;

    // 2. Presence changes: logins on c seen by a watcher on a.
    let extra: Vec<String> = (0..changes).map(|i| format!("x{i}")).collect();
    let mut watcher = log_in(&a, &["watcher".to_string()]).pop().unwrap();
    let watched: Vec<String> = extra.iter().map(|u| format!("{u}@c")).collect();
    let answer = watcher
        .request(
            "w",
            "bester.presence.subscribe",
            &json!({ "users": watched }),
        )
        .unwrap();
    assert_eq!(answer["header"]["status"], "ok", "{answer}");
    // The watcher's own login reaches b and c as a delta first; let it pass.
    wait_entries(&c, "a", on_a.len() + 1);
    let c_to_a = sent_to(&c, "a");
    let c_to_b = sent_to(&c, "b");
    // The watcher reads on a thread of its own, so each push's arrival is timed as it comes.
    let (arrived_tx, arrived) = std::sync::mpsc::channel::<(Value, Instant)>();
    let reader = thread::spawn(move || {
        for _ in 0..changes {
            let push = watcher.recv().unwrap().expect("a presence push");
            arrived_tx.send((push, Instant::now())).unwrap();
        }
        watcher
    });
    let mut after_reply = Vec::with_capacity(changes);
    let mut after_identify = Vec::with_capacity(changes);
    let mut login_rtt = Vec::with_capacity(changes);
    let mut early = 0;
    let mut extra_clients = Vec::with_capacity(changes);
    for user in &extra {
        let t0 = Instant::now();
        let mut client = Client::connect(c.broker.addr).unwrap();
        client.set_timeout(Some(Duration::from_secs(60))).unwrap();
        client.send(&identify(user)).unwrap();
        let reply = client.recv().unwrap().expect("login reply");
        let t1 = Instant::now();
        assert_eq!(reply["header"]["status"], "ok", "{reply}");
        let (push, t2) = arrived.recv_timeout(LIMIT).expect("a presence push");
        assert_eq!(push["header"]["kind"], "presence", "{push}");
        assert_eq!(push["data"]["user"], user.as_str(), "{push}");
        assert_eq!(push["data"]["state"], "online", "{push}");
        // The push may come before the login's own reply is read.
        if t2 < t1 {
            early += 1;
        }
        after_reply.push(t2.saturating_duration_since(t1));
        after_identify.push(t2 - t0);
        login_rtt.push(t1 - t0);
        extra_clients.push(client);
    }
    let _watcher = reader.join().expect("watcher");
    let per_change_to_a = (sent_to(&c, "a") - c_to_a) as f64 / changes as f64;
    let per_change_to_b = (sent_to(&c, "b") - c_to_b) as f64 / changes as f64;

    // 3. Relink c↔a with everyone online.
    let at = c.peer_a_at.expect("c has [peers.a]");
    let without = format!("{}{}", &c.config[..at], "\n");
    c.reload(&without);
    let started = Instant::now();
    while a.peer("c")["entries"] != 0 {
        assert!(started.elapsed() < LIMIT, "the link a-c stays up");
        thread::sleep(Duration::from_millis(5));
    }
    let (a_sent0, a_recv0) = (sent_to(&a, "c"), received_from(&a, "c"));
    let (c_sent0, c_recv0) = (sent_to(&c, "a"), received_from(&c, "a"));
    let relinked = Instant::now();
    c.reload(&c.config);
    let on_c_now = on_c.len() + changes;
    let on_a_now = on_a.len() + 1;
    wait_entries(&a, "c", on_c_now);
    wait_entries(&c, "a", on_a_now);
    let relink_s = relinked.elapsed().as_secs_f64();
    let c_to_a_snapshot = sent_to(&c, "a") - c_sent0;
    let a_to_c_snapshot = sent_to(&a, "c") - a_sent0;
    assert_eq!(received_from(&a, "c") - a_recv0, c_to_a_snapshot);
    assert_eq!(received_from(&c, "a") - c_recv0, a_to_c_snapshot);
    drop((a_clients, b_clients, c_clients, extra_clients));
    let p = |v: Vec<Duration>| percentiles(v);
    json!({
        "logins_s": all_in,
        "size": size,
        "rss_bytes_per_entry": rss_per_entry,
        "change": {
            "changes": changes,
            "bytes_per_change_to_a": per_change_to_a,
            "bytes_per_change_to_b": per_change_to_b,
            "latency_from_login_reply": p(after_reply),
            "latency_from_identify": p(after_identify),
            "login_round_trip": p(login_rtt),
            "pushes_before_reply": early,
        },
        "relink": {
            "c_to_a_bytes": c_to_a_snapshot, "c_entries": on_c_now,
            "a_to_c_bytes": a_to_c_snapshot, "a_entries": on_a_now,
            "bytes_per_entry": (c_to_a_snapshot + a_to_c_snapshot) as f64 / (on_c_now + on_a_now) as f64,
            "seconds": relink_s,
        },
    })
}

pub fn directory() -> Value {
    let users = env("BENCH_DIR_USERS", 10_000);
    let changes = env("BENCH_DIR_CHANGES", 300);
    let runs = env("BENCH_RUNS", 3);
    let mut all = Vec::new();
    for i in 0..runs {
        let r = run(users, changes);
        eprintln!("directory run {i}: {r}");
        all.push(r);
    }
    let med = |path: &str| -> f64 {
        median(
            all.iter()
                .map(|r| r.pointer(path).and_then(Value::as_f64).unwrap_or(f64::NAN))
                .collect(),
        )
    };
    let mut size = serde_json::Map::new();
    for s in ["a", "b", "c"] {
        let f = |k: &str| med(&format!("/size/{s}/{k}"));
        size.insert(
            s.into(),
            json!({"entries": f("entries"), "heap_bytes_per_entry": (f("heap_bytes_per_entry") * 10.0).round() / 10.0,
                   "rss_kib_before": f("rss_kib_before"), "rss_kib_after": f("rss_kib_after")}),
        );
    }
    let out = json!({
        "users": users,
        "runs": runs,
        "logins_s": (med("/logins_s") * 100.0).round() / 100.0,
        "size": size,
        "rss_bytes_per_entry": med("/rss_bytes_per_entry").round(),
        "change_bytes_to_each_peer": (med("/change/bytes_per_change_to_a") * 10.0).round() / 10.0,
        "change_bytes_to_b": (med("/change/bytes_per_change_to_b") * 10.0).round() / 10.0,
        "change_p50_us": med("/change/latency_from_login_reply/p50_us"),
        "change_p99_us": med("/change/latency_from_login_reply/p99_us"),
        "change_from_identify_p50_us": med("/change/latency_from_identify/p50_us"),
        "change_from_identify_p99_us": med("/change/latency_from_identify/p99_us"),
        "login_round_trip_p50_us": med("/change/login_round_trip/p50_us"),
        "login_round_trip_p99_us": med("/change/login_round_trip/p99_us"),
        "pushes_before_reply": med("/change/pushes_before_reply"),
        "relink_c_to_a_bytes": med("/relink/c_to_a_bytes"),
        "relink_c_entries": med("/relink/c_entries"),
        "relink_a_to_c_bytes": med("/relink/a_to_c_bytes"),
        "relink_a_entries": med("/relink/a_entries"),
        "relink_bytes_per_entry": (med("/relink/bytes_per_entry") * 10.0).round() / 10.0,
        "relink_s": (med("/relink/seconds") * 1000.0).round() / 1000.0,
    });
    eprintln!("directory: {users} users on 3 servers, {changes} changes, medians of {runs}");
    out
}
