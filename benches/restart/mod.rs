//! A restart nobody notices (issue: restarts and upgrades): N clients of the Rust library
//! (`bester-client` sessions, reconnect on) send `bester.ping` at a steady rate; the daemon is
//! restarted the way systemd does it with socket activation — a holder keeps the listening socket,
//! SIGTERM drains the running daemon, a new one is started on the same socket — and every client
//! must carry on.
//!
//!   cargo bench --bench load -- restart     (BENCH_RESTART_N clients, default 2,000; BENCH_RUNS)
//!
//! Figures per run: requests answered, failed (an error reached the application), retried (the
//! library connected again and sent the request once more), the longest gap between two answers a
//! client saw, and the time from SIGTERM until every client had an answer from the new daemon.
//! Goal: 0 failed, every client back within 5 s.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use bester_client::{Login, Options, Session};
use serde_json::{Value, json};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Start besterd on the held socket as systemd would: fd 3, `LISTEN_FDS=1`,
/// `LISTEN_FDNAMES=client`, `LISTEN_PID` its own pid (the shell's `$$`, kept by `exec`).
fn start(listener: &TcpListener, config: &Path, log: &Path) -> Child {
    let fd = listener.as_raw_fd();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=client exec \"$0\" serve --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_besterd"))
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = libc::fcntl(3, libc::F_GETFD);
            libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    command.spawn().expect("start besterd")
}

/// One run: (answered, failed, retried, longest gap, time until all were back).
fn run(n: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("token.key");
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key, hex).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let users = dir.path().join("users.json");
    super::common::add_user(&users, "u0", "pw");
    let config = dir.path().join("besterd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nname = \"bench\"\nlisten = \"127.0.0.1:1\"\nusers = {:?}\nruntime_dir = {:?}\n\
             max_connections = 100000\nmax_connections_per_ip = 100000\nmax_connections_per_user = 100000\n\
             login_failures_per_ip = 100000\n[auth]\ntoken_secret_file = {:?}\n",
            users.display().to_string(),
            dir.path().join("run").display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    // The holder: the listening socket outlives every daemon, with a long queue.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: listen(2) again on a bound, listening socket only changes its backlog.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    let addr = listener.local_addr().unwrap();
    let log = dir.path().join("besterd.log");
    let mut daemon = start(&listener, &config, &log);
    let url = format!("bester://{addr}");
    let options = Options {
        timeout: Some(Duration::from_secs(30)),
        ..Options::default()
    };
    // One password login (argon2 once), then resume tokens for everyone.
    let mut first = super::common::eventually("the daemon", || {
        Session::connect(
            &url,
            Login::Password {
                user: "u0".into(),
                password: "pw".into(),
            },
            options.clone(),
        )
        .ok()
    });
    let token = first.request("bester.token", &Value::Null).unwrap()["resume"]
        .as_str()
        .unwrap()
        .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let restarted_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let ready = Arc::new(Barrier::new(n + 1));
    let workers: Vec<_> = (0..n)
        .map(|i| {
            let (url, token, options) = (url.clone(), token.clone(), options.clone());
            let (stop, restarted_at, ready) = (stop.clone(), restarted_at.clone(), ready.clone());
            let (answered, failed) = (answered.clone(), failed.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let session = Session::connect(&url, Login::Resume(token), options);
                    ready.wait();
                    let mut session = session.expect("a resume login");
                    // Spread the clients over the second.
                    std::thread::sleep(Duration::from_millis((i * 1000 / n.max(1)) as u64));
                    let (mut last, mut gap, mut back) = (Instant::now(), Duration::ZERO, None);
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        match session.request("bester.ping", &Value::Null) {
                            Ok(_) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                                let now = Instant::now();
                                gap = gap.max(now - last);
                                last = now;
                                let restart = *restarted_at.lock().unwrap();
                                if let Some(at) = restart
                                    && back.is_none()
                                    && sent > at
                                {
                                    back = Some(now - at);
                                }
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                eprintln!("client {i}: {e}");
                            }
                        }
                        std::thread::sleep(Duration::from_secs(1).saturating_sub(sent.elapsed()));
                    }
                    (gap, back, session.reconnects())
                })
                .unwrap()
        })
        .collect();
    ready.wait();
    std::thread::sleep(Duration::from_secs(3));
    // The restart: SIGTERM drains the daemon; a new one starts on the same socket.
    *restarted_at.lock().unwrap() = Some(Instant::now());
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(status.success(), "the daemon's drain: {status}");
    daemon = start(&listener, &config, &log);
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    let ends: Vec<(Duration, Option<Duration>, u64)> =
        workers.into_iter().map(|w| w.join().unwrap()).collect();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let longest_gap = ends.iter().map(|e| e.0).max().unwrap_or_default();
    let not_back = ends.iter().filter(|e| e.1.is_none()).count();
    let all_back = ends.iter().filter_map(|e| e.1).max().unwrap_or_default();
    json!({
        "clients": n,
        "answered": answered.load(Ordering::Relaxed),
        "failed": failed.load(Ordering::Relaxed),
        "retried": ends.iter().map(|e| e.2).sum::<u64>(),
        "longest_gap_ms": longest_gap.as_millis() as u64,
        "all_back_after_ms": all_back.as_millis() as u64,
        "not_back": not_back,
    })
}

pub fn restart() -> Value {
    let n = env_usize("BENCH_RESTART_N", 2000);
    let runs = env_usize("BENCH_RUNS", 3);
    let results: Vec<Value> = (0..runs).map(|_| run(n)).collect();
    let median = |key: &str| {
        let mut v: Vec<u64> = results.iter().map(|r| r[key].as_u64().unwrap()).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    json!({
        "runs": results,
        "median_failed": median("failed"),
        "median_longest_gap_ms": median("longest_gap_ms"),
        "median_all_back_after_ms": median("all_back_after_ms"),
    })
}
