//! The reconnect storm (issue: logins the way applications do them): N clients were logged in, the
//! daemon restarts, and all N log in again at once. With resume tokens that costs no argon2; with
//! passwords every one of them is an argon2id check on the verifier threads.
//!
//!   cargo bench --bench load -- storm        (BENCH_STORM_N clients, default 10,000; 3 runs)
//!
//! Each run: one password login takes N resume tokens (`bester.token`), the daemon restarts with
//! the same `[auth] token_secret_file` and user store, then N connections are opened and each sends
//! its `{"resume":…}` identify at once; the figure is the time from the first connect to the last
//! identify reply, and the daemon's CPU (loop and verifier threads) over that time divided by N.
//! `password_checks` must stay 0 after the restart. The same storm with passwords is measured on
//! BENCH_STORM_PASSWORDS clients (default 200, within the login queue of 256: past it a password
//! login is told `server_busy`) and extrapolated to N: at about 50 logins/s a
//! storm of 10,000 password logins would take minutes per run.

use std::time::{Duration, Instant};

use besterd::client::Client;
use serde_json::{Value, json};

use super::common::Broker;
use super::{broker_keys_tables, cpu_us, login};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A broker with a token key file, room for the storm, and the user u0.
fn storm_broker(key_dir: &std::path::Path, n: usize) -> Broker {
    let key = key_dir.join("token.key");
    if !key.exists() {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&key, format!("{hex}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let keys = format!(
        "auth_threads = 2\nmax_connections = {}\nidentify_timeout_ms = 60000",
        n + 1000
    );
    let tables = format!(
        "[auth]\ntoken_secret_file = {:?}\n",
        key.display().to_string()
    );
    broker_keys_tables(&keys, &tables, 1, 1)
}

/// Open `identifies.len()` connections, send each its identify at once, and wait for every reply:
/// (seconds from the first connect to the last reply, server CPU µs used meanwhile, failures).
fn burst(b: &Broker, identifies: &[Vec<u8>]) -> (f64, u64, usize) {
    let cpu0 = cpu_us(b.pid());
    let started = Instant::now();
    let mut clients = Vec::with_capacity(identifies.len());
    for body in identifies {
        let mut c = Client::connect(b.addr).expect("connect");
        c.set_timeout(Some(Duration::from_secs(120))).unwrap();
        c.send_body(body).expect("send identify");
        clients.push(c);
    }
    let mut failed = 0;
    for c in &mut clients {
        match c.recv() {
            Ok(Some(reply)) if reply["header"]["status"] == "ok" => {}
            other => {
                if failed == 0 {
                    eprintln!("first refusal: {other:?}");
                }
                failed += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    (secs, cpu_us(b.pid()) - cpu0, failed)
}

/// The daemon's count of argon2 password checks since it started (`besterd ctl status --json`).
fn password_checks(b: &Broker) -> u64 {
    let socket = b.dir.path().join("run/besterd.ctl");
    let out = super::common::besterd_cmd(
        &[
            "ctl",
            "--socket",
            socket.to_str().unwrap(),
            "status",
            "--json",
        ],
        None,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.pointer("/status/logins/password_checks")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| {
            panic!(
                "no password_checks in {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn storm() -> Value {
    let n = env_usize("BENCH_STORM_N", 10_000);
    let passwords = env_usize("BENCH_STORM_PASSWORDS", 200);
    let runs = env_usize("BENCH_RUNS", 3);
    let mut resume_secs = Vec::new();
    let mut resume_cpu = Vec::new();
    let mut password_secs = Vec::new();
    let mut password_cpu = Vec::new();
    for run in 0..runs {
        let key_dir = tempfile::tempdir().unwrap();
        let mut b = storm_broker(key_dir.path(), n);
        // One session hands out the N tokens the N clients would each have kept.
        let mut c = login(&b, "u0");
        let mut identifies = Vec::with_capacity(n);
        for i in 0..n {
            let r = c
                .request(&i.to_string(), "bester.token", &Value::Null)
                .unwrap();
            let token = r["data"]["resume"]
                .as_str()
                .expect("a resume token")
                .to_string();
            let frame =
                json!({"header":{"identify":{"type":"client","authentication":{"resume":token}}}});
            identifies.push(serde_json::to_vec(&frame).unwrap());
        }
        drop(c);
        b.restart();
        let (secs, cpu, failed) = burst(&b, &identifies);
        assert_eq!(failed, 0, "every resume login is served");
        assert_eq!(password_checks(&b), 0, "a resume login runs no argon2");
        eprintln!(
            "storm run {run}: {n} resume logins in {secs:.2} s, {:.1} µs CPU each",
            cpu as f64 / n as f64
        );
        resume_secs.push(secs);
        resume_cpu.push(cpu as f64 / n as f64);
        // The same burst with passwords, on fewer clients.
        let body = serde_json::to_vec(&json!({"header":{"identify":{"type":"client",
            "authentication":{"username":"u0","password":"pw"}}}}))
        .unwrap();
        let (secs, cpu, failed) = burst(&b, &vec![body; passwords]);
        assert_eq!(failed, 0, "every password login is served");
        eprintln!(
            "storm run {run}: {passwords} password logins in {secs:.2} s, {:.0} µs CPU each",
            cpu as f64 / passwords as f64
        );
        password_secs.push(secs);
        password_cpu.push(cpu as f64 / passwords as f64);
    }
    let per_password = median(password_secs.clone()) / passwords as f64;
    json!({
        "clients": n,
        "runs": runs,
        "resume_last_served_s": (median(resume_secs) * 100.0).round() / 100.0,
        "resume_cpu_us_per_login": (median(resume_cpu) * 10.0).round() / 10.0,
        "password_clients": passwords,
        "password_last_served_s": (median(password_secs) * 100.0).round() / 100.0,
        "password_cpu_us_per_login": median(password_cpu).round(),
        "password_storm_of_n_extrapolated_s": (per_password * n as f64).round(),
    })
}
