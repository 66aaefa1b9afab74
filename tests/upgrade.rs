//! Hot upgrade of the binary in place (`besterd ctl upgrade`, SIGUSR2), against the real binary:
//! a copy of it is started from a temporary path, the file at that path is replaced as a
//! package manager does (a new file renamed over it), and the running daemon starts the new
//! file on the same sockets while clients keep connecting and sending requests.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bester_client::{Login, Options, Session};
use common::{Broker, DEADLINE, Launch, besterd_cmd, eventually, handler, signal};
use serde_json::{Value, json};

const USERS: &[(&str, &str)] = &[("alice", "alice-pw"), ("bob", "bob-pw")];

fn faulty() -> String {
    format!(
        "[handlers.faulty]\n{}\n",
        handler("python3", "tests/handlers/faulty.py")
    )
}

/// A copy of this build's daemon at `<dir>/bin/besterd`.
fn copy_binary(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let path = dir.join("bin/besterd");
    std::fs::copy(env!("CARGO_BIN_EXE_besterd"), &path).unwrap();
    path
}

/// A daemon started from a copy of this build at `<dir>/bin/besterd` (what an upgrade runs
/// again), with `tables`.
fn from_a_copy(dir: &Path, tables: &str) -> Broker {
    let how = Launch {
        program: Some(copy_binary(dir)),
        ..Launch::default()
    };
    Broker::launch_with("test", "127.0.0.1:0", "", tables, USERS, &how)
}

/// Replace the file at `path` as dpkg does: write a new file beside it, rename it over.
fn replace_file(path: &Path, contents: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let new = path.with_extension("dpkg-new");
    std::fs::write(&new, contents).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, path).unwrap();
}

/// A different build: this one with bytes appended (an ELF file runs the same with a tail).
fn replace_with_another_build(path: &Path, marker: &[u8]) {
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_besterd")).unwrap();
    bytes.extend_from_slice(marker);
    replace_file(path, &bytes);
}

fn ctl_socket(broker: &Broker) -> String {
    broker
        .dir
        .path()
        .join("run/besterd.ctl")
        .display()
        .to_string()
}

/// `besterd ctl --socket … --json ACTION`: (success, stdout as JSON or Null, stderr).
fn ctl(broker: &Broker, action: &str) -> (bool, Value, String) {
    let socket = ctl_socket(broker);
    let out = besterd_cmd(&["ctl", "--socket", &socket, "--json", action], None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.success(),
        serde_json::from_str(&text).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The pid serving the control socket.
fn serving_pid(broker: &Broker) -> u64 {
    let (ok, status, err) = ctl(broker, "status");
    assert!(ok, "ctl status: {err}");
    status["status"]["pid"].as_u64().expect("pid in status")
}

/// Whether a process (not our child) is gone: no /proc entry, or a zombie.
fn gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A daemon that is not our child (started by an upgrade): SIGTERM it when the test ends.
struct Adopted(u64);

impl Drop for Adopted {
    fn drop(&mut self) {
        signal(self.0 as u32, libc::SIGTERM);
        let started = Instant::now();
        while !gone(self.0) && started.elapsed() < DEADLINE {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !gone(self.0) {
            signal(self.0 as u32, libc::SIGKILL);
        }
    }
}

/// `besterd ctl upgrade`, then wait until the new process answers on the control socket.
fn upgrade_until_served(broker: &Broker) -> Adopted {
    let (ok, answer, err) = ctl(broker, "upgrade");
    assert!(ok, "ctl upgrade failed: {err}\n{}", broker.log());
    let new = answer["pid"].as_u64().expect("the new pid");
    let adopted = Adopted(new);
    eventually("the new process serves", || {
        (serving_pid(broker) == new).then_some(())
    });
    adopted
}

/// What the load threads saw.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Requests answered ok (at the first try or after a retry on a new connection).
    answered: u64,
    /// Requests answered `shutting_down` (the drain) or cut by the drain, then sent again on a
    /// new connection and answered there.
    retried: u64,
    /// Connection attempts refused.
    refused: u64,
    /// Requests never answered ok.
    failed: u64,
}

struct Load {
    stop: Arc<AtomicBool>,
    progress: Vec<Arc<std::sync::atomic::AtomicU64>>,
    threads: Vec<JoinHandle<(Counts, u64)>>,
}

impl Load {
    /// `sessions` threads with a [`Session`] each (reconnecting with its resume token) and
    /// `fresh` threads that connect, log in and send one request on a new connection each time.
    fn start(addr: SocketAddr, kind: &'static str, sessions: usize, fresh: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut progress = Vec::new();
        let mut threads = Vec::new();
        for t in 0..sessions + fresh {
            let stop = Arc::clone(&stop);
            let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
            progress.push(Arc::clone(&done));
            let (user, password) = USERS[t % USERS.len()];
            threads.push(std::thread::spawn(move || {
                if t < sessions {
                    session_loop(addr, kind, (user, password), &stop, &done)
                } else {
                    (fresh_loop(addr, kind, (user, password), &stop, &done), 0)
                }
            }));
        }
        Load {
            stop,
            progress,
            threads,
        }
    }

    /// Wait until every thread answered `n` more requests than now.
    fn advance(&self, n: u64) {
        let now: Vec<u64> = self
            .progress
            .iter()
            .map(|p| p.load(Ordering::SeqCst))
            .collect();
        eventually("every load thread answered more", || {
            self.progress
                .iter()
                .zip(&now)
                .all(|(p, was)| p.load(Ordering::SeqCst) >= was + n)
                .then_some(())
        });
    }

    /// Stop; the counts summed, and the sessions' reconnects.
    fn finish(self) -> (Counts, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Counts::default();
        let mut reconnects = 0;
        for t in self.threads {
            let (c, r) = t.join().unwrap();
            total.answered += c.answered;
            total.retried += c.retried;
            total.refused += c.refused;
            total.failed += c.failed;
            reconnects += r;
        }
        (total, reconnects)
    }
}

fn session_loop(
    addr: SocketAddr,
    kind: &str,
    (user, password): (&str, &str),
    stop: &AtomicBool,
    done: &std::sync::atomic::AtomicU64,
) -> (Counts, u64) {
    let login = Login::Password {
        user: user.into(),
        password: password.into(),
    };
    let mut session = Session::connect(&format!("bester://{addr}"), login, Options::default())
        .expect("session login");
    let mut counts = Counts::default();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let data = json!({"action": "echo", "n": n});
        match session.request(kind, &data) {
            Ok(reply) if reply == data => {
                counts.answered += 1;
                done.fetch_add(1, Ordering::SeqCst);
            }
            other => {
                eprintln!("session request {n}: {other:?}");
                counts.failed += 1;
            }
        }
    }
    (counts, session.reconnects())
}

fn fresh_loop(
    addr: SocketAddr,
    kind: &str,
    (user, password): (&str, &str),
    stop: &AtomicBool,
    done: &std::sync::atomic::AtomicU64,
) -> Counts {
    let mut counts = Counts::default();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let data = json!({"action": "echo", "n": n});
        let mut answered = false;
        for attempt in 0..3 {
            let (mut client, reply) = match besterd::client::Client::login(addr, user, password) {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    counts.refused += 1;
                    continue;
                }
                Err(_) => {
                    // Cut by the drain before the login was answered: again.
                    counts.retried += u64::from(attempt == 0);
                    continue;
                }
            };
            if reply["header"]["status"] != "ok" {
                assert_eq!(reply["data"]["code"], "shutting_down", "{reply}");
                counts.retried += u64::from(attempt == 0);
                continue;
            }
            client.set_timeout(Some(DEADLINE)).unwrap();
            match client.request("1", kind, &data) {
                Ok(reply) if reply["header"]["status"] == "ok" && reply["data"] == data => {
                    answered = true;
                    break;
                }
                Ok(reply) if reply["data"]["code"] == "shutting_down" => {
                    counts.retried += u64::from(attempt == 0);
                }
                Ok(reply) => panic!("request {n}: {reply}"),
                Err(_) => counts.retried += u64::from(attempt == 0),
            }
        }
        if answered {
            counts.answered += 1;
            done.fetch_add(1, Ordering::SeqCst);
        } else {
            eprintln!("fresh request {n}: not answered in 3 tries");
            counts.failed += 1;
        }
    }
    counts
}

/// `GET path` on the monitoring port: the body.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn monitor_addr(broker: &Broker) -> SocketAddr {
    let log = broker.log();
    let marker = "monitor: listening on http://";
    let at = log.find(marker).expect("monitor line in the log") + marker.len();
    let end = log[at..].find(' ').unwrap() + at;
    log[at..end].parse().unwrap()
}

const EVERY_LISTENER: &str = "[[listeners]]\nname = \"extra\"\nkind = \"tcp\"\naddress = \"127.0.0.1:0\"\n\
    [monitor]\nlisten = \"127.0.0.1:0\"\n";

#[test]
fn an_upgrade_runs_the_new_build_on_the_same_sockets_and_loses_no_client() {
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_binary(dir.path());
    let how = Launch {
        program: Some(exe.clone()),
        ..Launch::default()
    };
    let tables = format!("{}{EVERY_LISTENER}", faulty());
    let mut broker = Broker::launch_with("test", "127.0.0.1:0", "", &tables, USERS, &how);
    let old = u64::from(broker.pid());
    let extra = broker.listener("extra");
    let monitor = monitor_addr(&broker);
    assert_eq!(serving_pid(&broker), old);
    let before = Session::connect(
        &format!("bester://{}", broker.addr),
        Login::Password {
            user: "alice".into(),
            password: "alice-pw".into(),
        },
        Options::default(),
    )
    .unwrap();
    let resume = before.identity().resume.clone().expect("a resume token");

    let load = Load::start(broker.addr, "faulty", 3, 2);
    load.advance(5);
    replace_with_another_build(&exe, b"\0besterd-upgrade-test-build-2\0");
    let (ok, answer, err) = ctl(&broker, "upgrade");
    assert!(ok, "ctl upgrade failed: {err}\n{}", broker.log());
    let new = answer["pid"].as_u64().expect("the new pid");
    let _adopted = Adopted(new);
    assert_eq!(answer["old_pid"].as_u64(), Some(old));
    assert_ne!(new, old);
    // The old process drains and exits by itself, with 0.
    assert!(broker.wait_exit().success(), "{}", broker.log());
    load.advance(5);
    let (counts, reconnects) = load.finish();
    eprintln!("load across the upgrade: {counts:?}, session reconnects {reconnects}");
    assert_eq!(counts.refused, 0, "connections refused: {counts:?}");
    assert_eq!(counts.failed, 0, "requests not answered: {counts:?}");
    assert!(
        reconnects >= 3,
        "every session was drained from the old process and came back: {reconnects}"
    );

    // The new process runs the new file, at the path the daemon was started from.
    let link = std::fs::read_link(format!("/proc/{new}/exe")).unwrap();
    assert_eq!(link, exe, "not the replaced file (deleted inode?)");
    let running = std::fs::metadata(format!("/proc/{new}/exe")).unwrap().len();
    assert_eq!(running, std::fs::metadata(&exe).unwrap().len());
    assert_eq!(serving_pid(&broker), new);

    // A resume token the old process issued logs in at the new one.
    let mut again = Session::connect(
        &format!("bester://{}", broker.addr),
        Login::Resume(resume),
        Options::default(),
    )
    .expect("resume-token login across the upgrade");
    assert_eq!(again.identity().user, "alice");
    assert_eq!(again.request("bester.ping", &Value::Null).unwrap(), "pong");
    // Every listener came along: [[listeners]] and the monitor, served by the new process.
    let (mut on_extra, reply) = besterd::client::Client::login(extra, "bob", "bob-pw").unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    on_extra.set_timeout(Some(DEADLINE)).unwrap();
    let echo = on_extra
        .request("1", "faulty", &json!({"action": "echo"}))
        .unwrap();
    assert_eq!(echo["header"]["status"], "ok", "{echo}");
    let status: Value = serde_json::from_str(&http_get(monitor, "/status")).unwrap();
    assert_eq!(status["pid"].as_u64(), Some(new));
    let log = broker.log();
    for step in [
        format!("upgrade: started pid {new}: {}", exe.display()),
        format!("upgrade: pid {new} ready after"),
        "upgrade: draining; pid".to_string(),
        format!("upgrade: done; pid {new} serves"),
        format!("upgrade: took over from pid {old}"),
    ] {
        assert!(log.contains(&step), "no {step:?} in the log:\n{log}");
    }
    // The old process's handler socket is gone, the new one's is named with its pid; the
    // control socket is the new process's (it answered above).
    let run = broker.dir.path().join("run");
    assert!(!run.join("faulty.sock").exists());
    assert!(run.join(format!("faulty.{new}.sock")).exists());

    // SIGUSR2 does the same, from the new process to a third one.
    signal(new as u32, libc::SIGUSR2);
    let third = eventually("a third process serves", || {
        let pid = serving_pid(&broker);
        (pid != new).then_some(pid)
    });
    let _third = Adopted(third);
    eventually("the second process exits", || gone(new).then_some(()));
    assert!(broker.log().contains("upgrade requested by SIGUSR2"));
    let mut s = Session::connect(
        &format!("bester://{}", broker.addr),
        Login::Password {
            user: "bob".into(),
            password: "bob-pw".into(),
        },
        Options::default(),
    )
    .unwrap();
    assert_eq!(
        s.request("faulty", &json!({"action": "echo"})).unwrap(),
        json!({"action": "echo"})
    );
}

#[test]
fn a_new_binary_that_fails_leaves_the_old_daemon_serving() {
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_binary(dir.path());
    let how = Launch {
        program: Some(exe.clone()),
        ..Launch::default()
    };
    let mut broker = Broker::launch_with(
        "test",
        "127.0.0.1:0",
        "handler_startup_timeout_ms = 1000",
        &faulty(),
        USERS,
        &how,
    );
    let old = u64::from(broker.pid());
    let mut alice = broker.login("alice", "alice-pw");

    // A file that exits at once.
    replace_file(&exe, b"#!/bin/sh\necho 'not besterd' >&2\nexit 1\n");
    let (ok, _, err) = ctl(&broker, "upgrade");
    assert!(!ok);
    assert!(
        err.contains("upgrade failed: new process pid ")
            && err.contains("exited (exit status: 1) before it was ready")
            && err.contains(&format!("still serving with pid {old}")),
        "{err}"
    );
    let echo = alice
        .request("1", "faulty", &json!({"action": "echo"}))
        .unwrap();
    assert_eq!(echo["header"]["status"], "ok", "{echo}");

    // A file that never becomes ready: stopped at the startup timeout (+5 s); meanwhile a
    // second upgrade is refused.
    replace_file(&exe, b"#!/bin/sh\nexec sleep 600\n");
    let socket = ctl_socket(&broker);
    let exe_for_ctl = env!("CARGO_BIN_EXE_besterd");
    let waiting = std::process::Command::new(exe_for_ctl)
        .args(["ctl", "--socket", &socket, "upgrade"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    eventually("the upgrade in progress", || {
        (ctl(&broker, "status").1["status"]["upgrade"]["state"] == "starting").then_some(())
    });
    let (ok, _, second) = ctl(&broker, "upgrade");
    assert!(!ok);
    assert!(
        second.starts_with("besterd ctl: an upgrade is already in progress: new process pid "),
        "{second}"
    );
    let out = waiting.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("upgrade failed: new process pid ")
            && err.contains("not ready within")
            && err.contains("stopped it; still serving with pid"),
        "{err}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "bounded, not at once"
    );
    // Still the old process, serving the same client.
    assert_eq!(serving_pid(&broker), old);
    let echo = alice
        .request("2", "faulty", &json!({"action": "echo"}))
        .unwrap();
    assert_eq!(echo["header"]["status"], "ok", "{echo}");
    let log = broker.log();
    assert!(log.contains("upgrade failed: new process pid "), "{log}");
    // The stopped child is reaped; a later upgrade may be tried again.
    eventually("the failed attempt is cleared", || {
        (ctl(&broker, "status").1["status"]["upgrade"]["state"] == "none").then_some(())
    });
    assert!(broker.is_running());
}

/// A Unix datagram socket playing the service manager's `NOTIFY_SOCKET`, which learns each
/// sender's pid (`SO_PASSCRED`), as systemd does.
struct Manager {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let on: libc::c_int = 1;
        // SAFETY: setsockopt(2) with a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        Manager {
            socket,
            _dir: dir,
            path,
        }
    }

    /// The next datagram within `wait`: (sender pid, lines).
    fn next(&self, wait: Duration) -> Option<(u32, Vec<String>)> {
        let wait = wait.max(Duration::from_millis(1));
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 4096];
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: recvmsg(2) into buffers that outlive the call; the header is zeroed first;
        // control messages are walked with the CMSG macros within `msg_controllen`.
        let (n, pid) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            let n = libc::recvmsg(self.socket.as_raw_fd(), &mut msg, 0);
            if n < 0 {
                return None;
            }
            let mut pid = 0;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
                {
                    let cred: libc::ucred =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::ucred);
                    pid = cred.pid as u32;
                } else if (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    // An FDSTORE datagram: close what came.
                    let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const i32);
                    libc::close(fd);
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            (n as usize, pid)
        };
        let lines = String::from_utf8_lossy(&buf[..n])
            .lines()
            .map(str::to_string)
            .collect();
        Some((pid, lines))
    }
}

#[test]
fn under_a_service_manager_the_main_pid_moves_to_the_new_process() {
    let manager = Manager::new();
    let how = Launch {
        env: vec![
            ("NOTIFY_SOCKET".into(), manager.path.display().to_string()),
            ("WATCHDOG_USEC".into(), "1000000".into()),
        ],
        ..Launch::default()
    };
    let mut broker = Broker::launch_with("test", "127.0.0.1:0", "", &faulty(), USERS, &how);
    let old = broker.pid();
    // The old process is ready (READY=1 from it).
    loop {
        let (pid, lines) = manager.next(DEADLINE).expect("READY=1");
        assert_eq!(pid, old);
        if lines.iter().any(|l| l == "READY=1") {
            break;
        }
    }
    let (ok, answer, err) = ctl(&broker, "upgrade");
    assert!(ok, "{err}\n{}", broker.log());
    let new = answer["pid"].as_u64().unwrap() as u32;
    let _adopted = Adopted(u64::from(new));
    // Everything up to MAINPID= comes from the old process; the new one says nothing before.
    loop {
        let (pid, lines) = manager.next(DEADLINE).expect("MAINPID=");
        assert_eq!(
            pid, old,
            "a notification from {pid} before MAINPID: {lines:?}"
        );
        assert!(!lines.iter().any(|l| l == "STOPPING=1"), "{lines:?}");
        if lines.contains(&format!("MAINPID={new}")) {
            break;
        }
    }
    // Then only the new process speaks: READY=1, and it pings the watchdog (every 500 ms).
    let mut ready = false;
    let mut pings = 0;
    let until = Instant::now() + DEADLINE;
    while !(ready && pings >= 2) {
        assert!(
            Instant::now() < until,
            "no READY=1 and watchdog from the new process"
        );
        let (pid, lines) = manager
            .next(DEADLINE)
            .expect("the new process's notifications");
        assert_eq!(pid, new, "{lines:?} from {pid} after MAINPID={new}");
        assert!(!lines.iter().any(|l| l.starts_with("FDSTORE")), "{lines:?}");
        ready |= lines.iter().any(|l| l == "READY=1");
        pings += lines.iter().filter(|l| *l == "WATCHDOG=1").count();
    }
    assert!(broker.wait_exit().success());
    // The old process said nothing more on its way out (no STOPPING=1, no STATUS=).
    let until = Instant::now() + Duration::from_millis(1500);
    while let Some((pid, lines)) = manager.next(until.saturating_duration_since(Instant::now())) {
        assert_eq!(pid, new, "{lines:?} from {pid} after the handover");
        if Instant::now() >= until {
            break;
        }
    }
}

#[test]
fn a_socket_handler_started_elsewhere_comes_over_without_a_failed_request() {
    // `socket = "..."`: a handler besterd does not start connects to a fixed path. The path's
    // listening socket passes to the new process; the handler, connected to the old one until
    // it has drained, connects again (here a shell loop runs it again) and the requests for it
    // meanwhile wait instead of failing `handler_not_running`.
    let sockets = tempfile::tempdir().unwrap();
    let path = sockets.path().join("ext.sock");
    let tables = format!(
        "[handlers.ext]\nsocket = {:?}\n",
        path.display().to_string()
    );
    let mut broker = Broker::start_with("", &tables, USERS);
    let old = u64::from(broker.pid());
    let script = common::repo().join("tests/handlers/faulty.py");
    let mut external = std::process::Command::new("sh")
        .arg("-c")
        .arg("while :; do python3 \"$0\"; done")
        .arg(&script)
        .env("BESTER_SOCKET", &path)
        .env("BESTER_TYPE", "ext")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut alice = broker.login("alice", "alice-pw");
    eventually("the external handler serves", || {
        let reply = alice
            .request("1", "ext", &json!({"action": "echo"}))
            .unwrap();
        (reply["header"]["status"] == "ok").then_some(())
    });
    drop(alice);
    let load = Load::start(broker.addr, "ext", 2, 1);
    load.advance(5);
    let (ok, answer, err) = ctl(&broker, "upgrade");
    assert!(ok, "{err}\n{}", broker.log());
    let new = answer["pid"].as_u64().unwrap();
    let _adopted = Adopted(new);
    assert!(broker.wait_exit().success());
    load.advance(5);
    let (counts, _) = load.finish();
    eprintln!("load across the upgrade: {counts:?}");
    assert_eq!((counts.refused, counts.failed), (0, 0), "{counts:?}");
    // The old process did not unlink the path on its way out: the new one listens on it.
    assert!(path.exists());
    assert!(
        broker
            .log()
            .contains(&format!("upgrade: took over from pid {old}"))
    );
    let _ = external.kill();
    let _ = external.wait();
}

#[test]
fn a_stop_during_an_upgrade_stops_the_new_process_too() {
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_binary(dir.path());
    let how = Launch {
        program: Some(exe.clone()),
        ..Launch::default()
    };
    let mut broker = Broker::launch_with("test", "127.0.0.1:0", "", &faulty(), USERS, &how);
    replace_file(&exe, b"#!/bin/sh\nexec sleep 600\n");
    let socket = ctl_socket(&broker);
    let waiting = std::process::Command::new(env!("CARGO_BIN_EXE_besterd"))
        .args(["ctl", "--socket", &socket, "upgrade"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let child = eventually("the upgrade in progress", || {
        let status = ctl(&broker, "status").1;
        (status["status"]["upgrade"]["state"] == "starting")
            .then(|| status["status"]["upgrade"]["new_pid"].as_u64().unwrap())
    });
    // systemctl stop meanwhile: the new process must not take over once the old one is gone.
    assert!(broker.stop().success());
    let out = waiting.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "upgrade failed: the server is stopping before new process pid {child} was ready"
        )),
        "{err}"
    );
    eventually("the new process stopped", || gone(child).then_some(()));
}

#[test]
fn a_runtime_directory_besterd_made_itself_passes_to_the_new_process() {
    // No runtime_dir, no $RUNTIME_DIRECTORY: the daemon makes a private temp directory (and
    // removes it when it stops). An upgrade hands it over: the new process's control socket is
    // at the same path, the old process leaves it, the new one removes it when it stops. The
    // embedded default configuration runs the built-in example handlers.
    let dir = tempfile::tempdir().unwrap();
    common::add_user(&dir.path().join("users.json"), "alice", "alice-pw");
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut old = std::process::Command::new(env!("CARGO_BIN_EXE_besterd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--users"])
        .arg(dir.path().join("users.json"))
        .arg("--ready-file")
        .arg(dir.path().join("ready"))
        .env_remove("RUNTIME_DIRECTORY")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    let addr: SocketAddr = eventually("ready", || {
        let ready = std::fs::read_to_string(dir.path().join("ready")).ok()?;
        ready.lines().next()?.parse().ok()
    });
    let marker = "control socket ";
    let log_text = text();
    let at = log_text.find(marker).expect("control socket line") + marker.len();
    let socket = PathBuf::from(&log_text[at..at + log_text[at..].find(' ').unwrap()]);
    let run = socket.parent().unwrap().to_path_buf();
    let old_examples = format!("examples-{}-", old.id());
    let out = besterd_cmd(
        &[
            "ctl",
            "--socket",
            socket.to_str().unwrap(),
            "--json",
            "upgrade",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        text()
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let new = answer["pid"].as_u64().unwrap();
    let adopted = Adopted(new);
    assert!(old.wait().unwrap().success());
    // The directory stayed, without the old process's examples; the new one's are there.
    let names: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"besterd.ctl".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with(&old_examples)),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(&format!("examples-{new}-"))),
        "{names:?}"
    );
    let (mut alice, reply) = besterd::client::Client::login(addr, "alice", "alice-pw").unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    alice.set_timeout(Some(DEADLINE)).unwrap();
    let echo = alice.request("1", "echo", &json!({"hi": 1})).unwrap();
    assert_eq!(echo["data"], json!({"hi": 1}), "{echo}");
    drop(adopted);
    assert!(!run.exists(), "removed by the process that stopped last");
}

/// Log in with a password on a raw connection: (client, its resume token).
fn raw_login(broker: &Broker, user: &str, password: &str) -> (besterd::client::Client, String) {
    let (client, reply) = besterd::client::Client::login(broker.addr, user, password).unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    client.set_timeout(Some(DEADLINE)).unwrap();
    let resume = reply["data"]["resume"]
        .as_str()
        .expect("data.resume")
        .to_string();
    (client, resume)
}

/// What identify with `{"resume": token}` gets.
fn resume_reply(broker: &Broker, token: &str) -> Value {
    let mut client = besterd::client::Client::connect(broker.addr).unwrap();
    client.set_timeout(Some(DEADLINE)).unwrap();
    client
        .send(&json!({"header":{"identify":{"type":"client","authentication":{"resume": token}}}}))
        .unwrap();
    client.recv().unwrap().expect("an identify reply")
}

fn logged_out(reply: &Value) {
    assert_eq!(reply["header"]["status"], "error", "{reply}");
    assert_eq!(reply["data"]["code"], "resume_refused", "{reply}");
    assert_eq!(
        reply["data"]["error"], "the resume token's session logged out",
        "{reply}"
    );
}

#[test]
fn a_logout_before_or_during_an_upgrade_is_still_a_logout_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = from_a_copy(dir.path(), &faulty());
    // Alice logs out before the upgrade: the old process refuses her token from then on.
    let (mut alice, alice_token) = raw_login(&broker, "alice", "alice-pw");
    let bye = alice.request("1", "bester.logout", &Value::Null).unwrap();
    assert_eq!(bye["header"]["status"], "ok", "{bye}");
    logged_out(&resume_reply(&broker, &alice_token));
    // Bob keeps a request in flight, so the old process drains with him still connected.
    let (mut bob, bob_token) = raw_login(&broker, "bob", "bob-pw");
    bob.message("h", "faulty", &json!({"action": "hang"}))
        .unwrap();
    // A third session that never logs out: its token must keep working.
    let (_carol, kept_token) = raw_login(&broker, "alice", "alice-pw");

    let _adopted = upgrade_until_served(&broker);
    // Bob logs out on the draining old process: answered, not refused as shutting down.
    let bye = bob.request("2", "bester.logout", &Value::Null).unwrap();
    assert_eq!(bye["header"]["status"], "ok", "{bye}");
    assert!(broker.wait_exit().success(), "{}", broker.log());

    // The new process knows both logouts, and still takes the token of the session that stayed.
    logged_out(&resume_reply(&broker, &alice_token));
    logged_out(&resume_reply(&broker, &bob_token));
    let kept = resume_reply(&broker, &kept_token);
    assert_eq!(kept["header"]["status"], "ok", "{kept}");
    assert_eq!(kept["data"]["user"], "alice", "{kept}");
}

/// `besterd ctl --json queues` on the serving process: (user, messages) of every queue.
fn queue_depths(broker: &Broker) -> Vec<(String, u64)> {
    let (ok, answer, err) = ctl(broker, "queues");
    assert!(ok, "ctl queues: {err}");
    answer["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| {
            let user = q["user"].as_str().expect("user").to_string();
            (user, q["messages"].as_u64().expect("messages"))
        })
        .collect()
}

#[test]
fn what_the_old_process_stores_while_it_drains_reaches_a_user_on_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let tables = format!("{}offline = \"store\"\n", faulty());
    let mut broker = from_a_copy(dir.path(), &tables);
    // Alice's request is answered by the old process's handler 3 s from now, with a storing
    // push to bob: by then bob is on the new process, so the old one finds him offline.
    let (mut alice, _) = raw_login(&broker, "alice", "alice-pw");
    let later = json!({"action": "later", "seconds": 3, "users": ["bob"], "n": 7});
    alice.message("late", "faulty", &later).unwrap();

    let _adopted = upgrade_until_served(&broker);
    let (mut bob, _) = raw_login(&broker, "bob", "bob-pw");
    let barrier = bob
        .request("b", "bester.ack", &json!({"msgs": []}))
        .unwrap();
    assert_eq!(
        barrier["data"],
        json!({"acked": 0}),
        "nothing stored yet: {barrier}"
    );

    let reply = alice
        .recv()
        .unwrap()
        .unwrap_or_else(|| panic!("the old process's answer\n{}", broker.log()));
    assert_eq!(reply["header"]["id"], "late", "{reply}");
    assert_eq!(reply["header"]["stored"], json!(["bob"]), "{reply}");
    assert!(broker.wait_exit().success(), "{}", broker.log());

    // Once the old process has gone, the new one reads what it stored for bob, who is
    // connected already, and counts it in bob's queue.
    let push = bob
        .recv()
        .unwrap()
        .expect("the push the old process stored");
    assert_eq!(push["header"]["kind"], "push", "{push}");
    assert_eq!(push["header"]["stored"], true, "{push}");
    assert_eq!(push["header"]["from"]["user"], "alice", "{push}");
    assert_eq!(push["data"]["n"], 7, "{push}");
    let msg = push["header"]["msg"].as_str().expect("msg").to_string();
    assert_eq!(queue_depths(&broker), vec![("bob".to_string(), 1)]);
    let acked = bob
        .request("a", "bester.ack", &json!({"msgs": [msg]}))
        .unwrap();
    assert_eq!(acked["data"], json!({"acked": 1}), "{acked}");
    assert_eq!(queue_depths(&broker), vec![]);
}
