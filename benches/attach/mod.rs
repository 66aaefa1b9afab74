//! Several users on one connection (issue 21): what a user costs the server attached to a
//! gateway's connection, beside the same users on sockets of their own.
//!
//!   cargo bench --bench load -- attach     (BENCH_ATTACH_N users, default 1,000; BENCH_RUNS, 3)
//!
//! Each run starts two fresh servers on the same user store (N users with passwords, and the
//! gateway `gw`). On one, `gw` attaches the N users over its one connection by password, 64
//! attaches in flight at a time (argon2 on the two verifier threads); on the other, the N users
//! log in on N connections, 64 identifies in flight at a time. The figures: the server's VmRSS
//! growth per user, measured once the verifier threads have been quiet long enough to give their
//! argon2 work areas back (so both sides are measured without them), the attaches and logins
//! per second, and, on the gateway's connection, echo round trips (window 1) sent as an attached
//! user (`header.user`, the answer tagged) beside the gateway's own, in the same run. Medians of
//! the runs; the load average at the start and the end.

use std::time::{Duration, Instant};

use besterd::client::Client;
use serde_json::{Value, json};

use super::common::{Broker, handler};
use super::rss_kib;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const WINDOW: usize = 64;

/// A fresh server on a copy of `store`, with the Python echo handler and room for everyone.
fn server(store: &std::path::Path) -> Broker {
    let tables = format!(
        "[handlers.echo]\n{}\n",
        handler("python3", "handlers/python/echo.py")
    );
    let keys = "max_connections_per_ip = 100000\nmax_connections_per_user = 100000\nlogin_failures_per_ip = 100000\nmax_attached_per_connection = 100000\nauth_threads = 2";
    let b = Broker::launch("bench", "127.0.0.1:0", keys, &tables, &[]);
    let tmp = b.dir.path().join("users.json.new");
    std::fs::copy(store, &tmp).unwrap();
    std::fs::rename(&tmp, b.users()).unwrap();
    b
}

/// VmRSS once the verifier threads have given their work areas back (they do after 5 s quiet).
fn settled_rss(b: &Broker) -> u64 {
    std::thread::sleep(Duration::from_millis(6500));
    rss_kib(b.pid()).0
}

fn identify(user: &str, features: Option<Value>) -> Value {
    let mut identify = json!({"type":"client","authentication":{"username":user,"password":"pw"}});
    if let Some(features) = features {
        identify["features"] = features;
    }
    json!({"header":{"identify":identify}})
}

fn attach_run(store: &std::path::Path, n: usize) -> Value {
    let b = server(store);
    let base = rss_kib(b.pid()).0;
    let mut gw = Client::connect(b.addr).unwrap();
    gw.set_timeout(Some(Duration::from_secs(120))).unwrap();
    gw.send(&identify("gw", Some(json!(["multiplex"]))))
        .unwrap();
    let reply = gw.recv().unwrap().unwrap();
    assert_eq!(reply["data"]["features"], json!(["multiplex"]), "{reply}");
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(WINDOW) {
        for i in chunk {
            let data = json!({"user": format!("u{i}"), "password": "pw"});
            gw.message(&format!("a{i}"), "bester.attach", &data)
                .unwrap();
        }
        for _ in chunk {
            let r = gw.recv().unwrap().unwrap();
            assert_eq!(r["header"]["status"], "ok", "{r}");
        }
    }
    let attach_s = started.elapsed().as_secs_f64();
    let rss = settled_rss(&b);
    // Round trips on the same connection: as an attached user, and as the gateway itself.
    let rounds = 2000;
    let mut as_user = Vec::with_capacity(rounds);
    let mut own = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t = Instant::now();
        gw.send(&json!({"header":{"scope":"client","id":"u","user":"u1"},"payload":{"type":"echo","data":{"i":i}}}))
            .unwrap();
        let r = gw.recv().unwrap().unwrap();
        assert_eq!(r["header"]["user"], "u1", "{r}");
        as_user.push(t.elapsed());
        let t = Instant::now();
        let r = gw.request("g", "echo", &json!({"i": i})).unwrap();
        assert_eq!(r["header"]["status"], "ok", "{r}");
        own.push(t.elapsed());
    }
    let median = |mut v: Vec<Duration>| {
        v.sort_unstable();
        v[v.len() / 2].as_micros() as u64
    };
    json!({
        "rss_growth_kib": rss.saturating_sub(base),
        "bytes_per_user": rss.saturating_sub(base) * 1024 / n as u64,
        "per_s": (n as f64 / attach_s).round(),
        "rtt_attached_p50_us": median(as_user),
        "rtt_own_p50_us": median(own),
    })
}

fn sockets_run(store: &std::path::Path, n: usize) -> Value {
    let b = server(store);
    let base = rss_kib(b.pid()).0;
    let started = Instant::now();
    let mut clients = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(WINDOW) {
        let mut opened: Vec<Client> = chunk
            .iter()
            .map(|i| {
                let mut c = Client::connect(b.addr).unwrap();
                c.set_timeout(Some(Duration::from_secs(120))).unwrap();
                c.send(&identify(&format!("u{i}"), None)).unwrap();
                c
            })
            .collect();
        for c in &mut opened {
            let r = c.recv().unwrap().unwrap();
            assert_eq!(r["header"]["status"], "ok", "{r}");
        }
        clients.extend(opened);
    }
    let login_s = started.elapsed().as_secs_f64();
    let rss = settled_rss(&b);
    drop(clients);
    json!({
        "rss_growth_kib": rss.saturating_sub(base),
        "bytes_per_user": rss.saturating_sub(base) * 1024 / n as u64,
        "per_s": (n as f64 / login_s).round(),
    })
}

fn median_of(runs: &[Value], key: &str) -> f64 {
    let mut v: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The `attach` scenario.
pub fn attach() -> Value {
    let n = env_usize("BENCH_ATTACH_N", 1000);
    let runs = env_usize("BENCH_RUNS", 3);
    let load_start = crate::loadavg();
    // One user store for every server: N users and the gateway, made once.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("users.json");
    let hash = besterd::auth::user_store::hash_password("pw").unwrap();
    besterd::auth::user_store::update(&store, |users| {
        for i in 0..n {
            users.add(&format!("u{i}"), &hash)?;
        }
        users.add("gw", &hash)?;
        users.set_gateway("gw", true)
    })
    .unwrap();
    let mut attached = Vec::new();
    let mut sockets = Vec::new();
    for run in 0..runs {
        eprintln!("attach: run {}/{runs}", run + 1);
        attached.push(attach_run(&store, n));
        sockets.push(sockets_run(&store, n));
    }
    let a_bytes = median_of(&attached, "bytes_per_user");
    let s_bytes = median_of(&sockets, "bytes_per_user");
    let rtt_a = median_of(&attached, "rtt_attached_p50_us");
    let rtt_o = median_of(&attached, "rtt_own_p50_us");
    json!({
        "users": n,
        "runs": runs,
        "attached_bytes_per_user": a_bytes,
        "socket_bytes_per_user": s_bytes,
        "memory_ratio_attached_to_socket": (a_bytes / s_bytes * 100.0).round() / 100.0,
        "attaches_per_s": median_of(&attached, "per_s"),
        "socket_logins_per_s": median_of(&sockets, "per_s"),
        "echo_rtt_p50_us_attached": rtt_a,
        "echo_rtt_p50_us_own": rtt_o,
        "rtt_ratio_attached_to_own": (rtt_a / rtt_o * 100.0).round() / 100.0,
        "each_run_attached": attached,
        "each_run_sockets": sockets,
        "load_average_start": load_start,
        "load_average_end": crate::loadavg(),
    })
}
