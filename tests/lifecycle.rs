//! The daemon under a service manager, against the real binary: sd_notify (a test socket plays
//! systemd), socket activation with Debian's `systemd-socket-activate`, the drain on SIGTERM,
//! SIGUSR1, and session revocation when the user store changes.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Broker, DEADLINE, Launch, add_user, besterd_cmd, code, eventually, handler, signal};
use serde_json::{Value, json};

fn faulty() -> String {
    format!(
        "[handlers.faulty]\n{}\n",
        handler("python3", "tests/handlers/faulty.py")
    )
}

const USERS: &[(&str, &str)] = &[("alice", "alice-pw"), ("bob", "bob-pw")];

/// A Unix datagram socket playing the service manager's `NOTIFY_SOCKET`.
struct Manager {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Manager {
            socket,
            _dir: dir,
            path,
        }
    }

    /// The next datagram, as its lines.
    fn next(&self) -> Vec<String> {
        self.socket.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The next datagram that carries a file descriptor: its lines and the descriptor.
    fn next_with_fd(&self) -> (Vec<String>, std::os::fd::OwnedFd) {
        use std::os::fd::{AsRawFd, FromRawFd};
        self.socket.set_read_timeout(Some(DEADLINE)).unwrap();
        loop {
            let mut buf = [0u8; 4096];
            let mut control = [0u8; 64];
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: recvmsg(2) into buffers that outlive the call; the header is zeroed first.
            let (n, fd) = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = control.len() as _;
                let n = libc::recvmsg(self.socket.as_raw_fd(), &mut msg, 0);
                assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                let fd = (!cmsg.is_null() && (*cmsg).cmsg_type == libc::SCM_RIGHTS)
                    .then(|| std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const i32));
                (n as usize, fd)
            };
            if let Some(fd) = fd {
                let lines = String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_string)
                    .collect();
                // SAFETY: the descriptor was just received and is owned by nobody else.
                return (lines, unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            }
        }
    }

    /// Datagrams until one has `line`; returns (everything seen before, that one).
    fn until(&self, line: &str) -> (Vec<Vec<String>>, Vec<String>) {
        let mut before = Vec::new();
        loop {
            let message = self.next();
            if message.iter().any(|l| l == line) {
                return (before, message);
            }
            before.push(message);
        }
    }
}

fn status_of(message: &[String]) -> Option<&str> {
    message.iter().find_map(|l| l.strip_prefix("STATUS="))
}

fn monotonic_usec() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000 + i128::from(ts.tv_nsec) / 1_000
}

#[test]
fn plays_the_service_manager_ready_status_watchdog_reloading_stopping() {
    let manager = Manager::new();
    let how = Launch {
        env: vec![
            ("NOTIFY_SOCKET".into(), manager.path.display().to_string()),
            ("WATCHDOG_USEC".into(), "2000000".into()),
        ],
        wait_ready: false,
        ..Launch::default()
    };
    let mut broker = Broker::launch_with("test", "127.0.0.1:0", "", &faulty(), USERS, &how);

    // READY=1 comes with the status line, once the handler is connected.
    let (_, ready) = manager.until("READY=1");
    assert_eq!(
        status_of(&ready),
        Some("ready: 0 clients; handlers faulty 1"),
        "{ready:?}"
    );
    broker.wait_ready();

    // The handler does not see the service manager's variables.
    let mut alice = broker.login("alice", "alice-pw");
    let env = alice
        .request("e", "faulty", &json!({"action":"env"}))
        .unwrap();
    assert_eq!(env["data"]["env"], json!({}), "{env}");

    // WATCHDOG=1 at half the period (1 s): never later than the period, never far sooner.
    let mut pings = Vec::new();
    while pings.len() < 3 {
        if manager.next().iter().any(|l| l == "WATCHDOG=1") {
            pings.push(Instant::now());
        }
    }
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(500) && gap < Duration::from_secs(2),
            "watchdog gap {gap:?}"
        );
    }

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
    let before = monotonic_usec();
    signal(broker.pid(), libc::SIGHUP);
    let (_, reloading) = manager.until("RELOADING=1");
    let stamp: i128 = reloading
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC with RELOADING=1")
        .parse()
        .unwrap();
    assert!(
        stamp >= before && stamp <= monotonic_usec(),
        "{stamp} not in [{before}, now]"
    );
    let (_, ready) = manager.until("READY=1");
    assert_eq!(
        status_of(&ready),
        Some("ready: 1 client; handlers faulty 1"),
        "{ready:?}"
    );

    // SIGTERM: STOPPING=1 first, then the daemon exits 0.
    signal(broker.pid(), libc::SIGTERM);
    let (_, stopping) = manager.until("STOPPING=1");
    assert!(
        status_of(&stopping).is_some_and(|s| s.starts_with("draining: ")),
        "{stopping:?}"
    );
    let status = broker.wait_exit();
    assert!(status.success(), "{status}");
}

#[test]
fn an_invalid_reload_changes_nothing_and_says_so() {
    let manager = Manager::new();
    let how = Launch {
        env: vec![("NOTIFY_SOCKET".into(), manager.path.display().to_string())],
        ..Launch::default()
    };
    let mut broker = Broker::launch_with(
        "test",
        "127.0.0.1:0",
        "request_timeout_ms = 700",
        &faulty(),
        USERS,
        &how,
    );
    manager.until("READY=1");
    let text = std::fs::read_to_string(broker.config_path()).unwrap();
    let broken =
        text.replace("request_timeout_ms = 700", "request_timeout_ms = 0") + "[handlers.extra]\n";
    std::fs::write(broker.config_path(), broken).unwrap();
    signal(broker.pid(), libc::SIGHUP);
    manager.until("RELOADING=1");
    let (_, ready) = manager.until("READY=1");
    assert_eq!(
        status_of(&ready),
        Some(
            "ready: 0 clients; handlers faulty 1; reload failed (2 problems, first \
             server.request_timeout_ms): still running the previous configuration"
        ),
        "{ready:?}"
    );
    let log = broker.log();
    assert!(
        log.contains("server.request_timeout_ms: must be greater than 0"),
        "{log}"
    );
    assert!(log.contains("handlers.extra: needs command"), "{log}");
    // The old timeout is still in force.
    let mut alice = broker.login("alice", "alice-pw");
    let reply = alice
        .request("h", "faulty", &json!({"action":"hang"}))
        .unwrap();
    assert_eq!(code(&reply), "handler_timeout");
    assert_eq!(
        reply["data"]["error"],
        "the \"faulty\" handler did not answer within 700 ms"
    );
    assert!(broker.stop().success());
}

/// A free loopback port (bound and released; `systemd-socket-activate` cannot take port 0).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn socket_activation_serves_a_client_on_the_inherited_socket() {
    let port = free_port();
    let how = Launch {
        wrapper: vec![
            "systemd-socket-activate".into(),
            "-l".into(),
            format!("127.0.0.1:{port}"),
            "--fdname=client".into(),
            "-E".into(),
            "RUST_LOG=debug".into(),
        ],
        wait_ready: false,
        ..Launch::default()
    };
    // The configured address is never bound: the inherited socket is used instead.
    let mut broker = Broker::launch_with("test", "127.0.0.1:1", "", &faulty(), USERS, &how);
    broker.addr = format!("127.0.0.1:{port}").parse().unwrap();
    // systemd-socket-activate starts besterd on the first connection; this one is then served.
    let (mut alice, reply) = eventually("the activation socket", || {
        besterd::client::Client::login(broker.addr, "alice", "alice-pw").ok()
    });
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    alice.set_timeout(Some(DEADLINE)).unwrap();
    // The first request of the first client, sent while the handler is still starting, waits
    // for it and gets its real answer.
    let echo = alice
        .request("1", "faulty", &json!({"action":"echo","n":1}))
        .unwrap();
    assert_eq!(echo["header"]["status"], "ok", "{echo}");
    assert_eq!(echo["data"], json!({"action":"echo","n":1}));
    let env = alice
        .request("e", "faulty", &json!({"action":"env"}))
        .unwrap();
    assert_eq!(env["data"]["env"], json!({}), "LISTEN_* stripped: {env}");
    broker.wait_ready();
    assert_eq!(broker.addr.port(), port);
    let log = broker.log();
    assert!(
        log.contains("socket activation: 1 socket(s) passed: client"),
        "{log}"
    );
    assert!(log.contains("(socket activation)"), "{log}");
    assert!(broker.stop().success());
}

#[test]
fn socket_activation_with_a_datagram_socket_refuses_to_start() {
    let port = free_port();
    let how = Launch {
        wrapper: vec![
            "systemd-socket-activate".into(),
            "--datagram".into(),
            "-l".into(),
            format!("127.0.0.1:{port}"),
            "--fdname=client".into(),
        ],
        wait_ready: false,
        ..Launch::default()
    };
    let mut broker = Broker::launch_with("test", "127.0.0.1:1", "", &faulty(), USERS, &how);
    // The first datagram makes systemd-socket-activate start besterd.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    eventually("besterd to start and fail", || {
        let _ = udp.send_to(b"x", ("127.0.0.1", port));
        broker.log().contains("cannot start").then_some(())
    });
    let status = broker.wait_exit();
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(
        broker.log().contains(
            "cannot start: socket activation: fd 3 (client): not a TCP socket (use ListenStream= with an IP address and port)"
        ),
        "{}",
        broker.log()
    );
}

/// Process ids the supervisor logged as started for `kind`.
fn started_pids(log: &str, kind: &str) -> Vec<i32> {
    let marker = format!("handler={kind}#");
    log.lines()
        .filter(|l| l.contains(&marker) && l.contains(" started: pid "))
        .filter_map(|l| {
            l.split(" started: pid ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn gone(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks whether the process exists.
    unsafe { libc::kill(pid, 0) != 0 }
}

#[test]
fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_0() {
    let mut broker = Broker::start_with("shutdown_grace_ms = 15000", &faulty(), USERS);
    let mut alice = broker.login("alice", "alice-pw");
    alice
        .message(
            "slow",
            "faulty",
            &json!({"action":"stall","seconds":1.5,"n":7}),
        )
        .unwrap();
    eventually("the slow request to reach the handler", || {
        broker.log().contains(": stall").then_some(())
    });
    signal(broker.pid(), libc::SIGTERM);
    eventually("the drain to begin", || {
        broker.log().contains("draining:").then_some(())
    });
    // A message sent now is refused, with its id; the connection stays open meanwhile.
    let refused = alice
        .request("late", "faulty", &json!({"action":"echo"}))
        .unwrap();
    assert_eq!(code(&refused), "shutting_down", "{refused}");
    assert_eq!(
        refused["data"]["error"],
        "the server is shutting down and takes no new messages"
    );
    // A new connection is refused: the listener is closed.
    assert!(
        std::net::TcpStream::connect(broker.addr).is_err(),
        "still accepting"
    );
    // The request in flight gets its real answer.
    let answer = alice.recv().unwrap().expect("the slow answer");
    assert_eq!(answer["header"]["id"], "slow");
    assert_eq!(answer["header"]["status"], "ok", "{answer}");
    assert_eq!(answer["data"]["n"], 7);
    assert_eq!(alice.recv().unwrap(), None, "closed after the drain");
    let status = broker.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
    let pids = started_pids(&broker.log(), "faulty");
    assert_eq!(pids.len(), 1, "{}", broker.log());
    eventually("the handler to be gone", || gone(pids[0]).then_some(()));
    assert!(
        !broker.dir.path().join("run/faulty.sock").exists(),
        "handler socket removed"
    );
}

#[test]
fn a_second_sigterm_stops_at_once() {
    let mut broker = Broker::start_with("", &faulty(), USERS);
    let mut alice = broker.login("alice", "alice-pw");
    alice
        .message("slow", "faulty", &json!({"action":"stall","seconds":60}))
        .unwrap();
    eventually("the slow request to reach the handler", || {
        broker.log().contains(": stall").then_some(())
    });
    let started = Instant::now();
    signal(broker.pid(), libc::SIGTERM);
    eventually("the drain to begin", || {
        broker.log().contains("draining:").then_some(())
    });
    signal(broker.pid(), libc::SIGTERM);
    let answer = alice.recv().unwrap().expect("an answer");
    assert_eq!(answer["header"]["id"], "slow");
    assert_eq!(code(&answer), "shutting_down", "{answer}");
    let status = broker.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped without waiting for the 10 s grace or the 60 s stall"
    );
    let pids = started_pids(&broker.log(), "faulty");
    eventually("the handler to be gone", || gone(pids[0]).then_some(()));
}

#[test]
fn sigusr1_logs_the_status() {
    let mut broker = Broker::start_with("", &faulty(), USERS);
    let mut alice = broker.login("alice", "alice-pw");
    signal(broker.pid(), libc::SIGUSR1);
    eventually("the status line", || {
        broker
            .log()
            .contains("status: ready: 1 client; handlers faulty 1")
            .then_some(())
    });
    assert!(broker.is_running());
    let echo = alice
        .request("1", "faulty", &json!({"action":"echo"}))
        .unwrap();
    assert_eq!(echo["header"]["status"], "ok");
    assert!(broker.stop().success());
    assert!(
        !broker.dir.path().join("run/faulty.sock").exists(),
        "handler socket removed"
    );
}

fn revoked(frame: &Value, why: &str) {
    assert_eq!(code(frame), "session_revoked", "{frame}");
    assert_eq!(
        frame["data"]["error"],
        format!("session revoked: {why}; log in again")
    );
    assert!(frame["header"].get("id").is_none(), "{frame}");
}

#[test]
fn deleted_users_and_passwords_changed_elsewhere_revoke_sessions() {
    let broker = Broker::start_with("", &faulty(), USERS);
    let mut alice1 = broker.login("alice", "alice-pw");
    let mut alice2 = broker.login("alice", "alice-pw");
    let mut bob = broker.login("bob", "bob-pw");

    // bob is deleted by the administrator: his session ends.
    let users = broker.users();
    let out = besterd_cmd(
        &["user", "--users", users.to_str().unwrap(), "del", "bob"],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let frame = bob.recv().unwrap().expect("a frame before the close");
    revoked(&frame, "the user was deleted");
    assert_eq!(bob.recv().unwrap(), None, "closed");
    assert!(broker.log().contains("user=bob session revoked"));

    // alice changes her password on one connection: that one stays, the other is revoked.
    let reply = alice1
        .request(
            "pw",
            "bester.passwd",
            &json!({"old":"alice-pw","new":"alice-new"}),
        )
        .unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    let frame = alice2.recv().unwrap().expect("a frame before the close");
    revoked(&frame, "the password was changed elsewhere");
    assert_eq!(alice2.recv().unwrap(), None, "closed");
    let ping = alice1.request("p", "bester.ping", &json!(null)).unwrap();
    assert_eq!(
        ping["header"]["status"], "ok",
        "the changer keeps its session"
    );

    // An administrator changes alice's password: the remaining session is revoked too.
    let out = besterd_cmd(
        &[
            "user",
            "--users",
            users.to_str().unwrap(),
            "passwd",
            "alice",
            "--password-stdin",
        ],
        Some("by-admin"),
    );
    assert!(out.status.success(), "{out:?}");
    let frame = alice1.recv().unwrap().expect("a frame before the close");
    revoked(&frame, "the password was changed elsewhere");
    // The new password logs in and is served.
    let mut again = broker.login("alice", "by-admin");
    let echo = again
        .request("1", "faulty", &json!({"action":"echo"}))
        .unwrap();
    assert_eq!(echo["header"]["status"], "ok");
    add_user(&users, "carol", "carol-pw");
    let ping = again.request("p", "bester.ping", &json!(null)).unwrap();
    assert_eq!(
        ping["header"]["status"], "ok",
        "adding a user revokes nobody"
    );
}

#[test]
fn a_draining_peer_answers_what_it_has_refuses_new_messages_and_closes_the_link() {
    const SECRET: &str = "secret-shared-by-a-and-b-drain";
    let a = Broker::launch(
        "a",
        "127.0.0.1:0",
        "",
        &format!("{}[peers.b]\nsecret = {SECRET:?}\n", faulty()),
        USERS,
    );
    let mut b = Broker::launch(
        "b",
        "127.0.0.1:0",
        "",
        &format!(
            "{}[peers.a]\nsecret = {SECRET:?}\naddress = \"{}\"\n",
            faulty(),
            a.addr
        ),
        USERS,
    );
    let mut alice = a.login("alice", "alice-pw");
    let mut n = 0;
    let mut peers = move |client: &mut besterd::client::Client| {
        n += 1;
        client
            .request(&format!("w{n}"), "bester.whoami", &json!(null))
            .unwrap()["data"]["peers"]
            .clone()
    };
    eventually("the link", || {
        (peers(&mut alice) == json!(["b"])).then_some(())
    });
    // A message to b that b's handler is slow to answer is in flight when b drains.
    let slow =
        json!({"action":"to_servers","servers":["b"],"data":{"action":"stall","seconds":1.5}});
    alice.message("slow", "faulty", &slow).unwrap();
    eventually("b's handler to get it", || {
        b.log().contains(": stall").then_some(())
    });
    signal(b.pid(), libc::SIGTERM);
    eventually("b to drain", || b.log().contains("draining:").then_some(()));
    // A new message to b is refused by b with shutting_down, reported per server.
    let late = json!({"action":"to_servers","servers":["b"],"data":{"action":"echo"}});
    let reply = alice.request("late", "faulty", &late).unwrap();
    assert_eq!(
        reply["header"]["servers"]["b"]["code"], "shutting_down",
        "{reply}"
    );
    // The one in flight is answered for real.
    let answer = alice.recv().unwrap().expect("the slow report");
    assert_eq!(answer["header"]["id"], "slow");
    assert_eq!(answer["header"]["servers"]["b"]["status"], "ok", "{answer}");
    assert_eq!(b.wait_exit().code(), Some(0));
    // a sees the link close.
    eventually("the link to go", || {
        (peers(&mut alice) == json!([])).then_some(())
    });
}

#[test]
fn a_missing_or_empty_user_store_is_said_loudly_and_the_ctl_command_is_logged() {
    let broker = Broker::start_with("", &faulty(), &[]);
    let log = broker.log();
    let users = broker.users();
    assert!(
        log.contains(&format!(
            "WARN  besterd::server::bind] the user store {} does not exist: nobody can log in with a password until one is added (besterd user --users {} add NAME; it is read again when it changes)",
            users.display(),
            users.display()
        )),
        "{log}"
    );
    let socket = broker.dir.path().join("run/besterd.ctl");
    assert!(
        log.contains(&format!(
            "(root or this user only): besterd ctl --socket {} status",
            socket.display()
        )),
        "{log}"
    );
    // An empty store (its last user deleted) is said too, at the next start.
    let mut broker = Broker::start_with("", &faulty(), &[("alice", "alice-pw")]);
    assert!(!broker.log().contains("nobody can log in"));
    let out = besterd_cmd(
        &[
            "user",
            "--users",
            broker.users().to_str().unwrap(),
            "del",
            "alice",
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    broker.restart();
    let log = broker.log();
    assert!(
        log.contains(&format!(
            "the user store {} holds no users: nobody can log in",
            broker.users().display()
        )),
        "{log}"
    );
}

#[test]
fn the_listening_socket_goes_to_the_fd_store_and_a_restart_on_it_loses_no_client() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let manager = Manager::new();
    let how = Launch {
        env: vec![("NOTIFY_SOCKET".into(), manager.path.display().to_string())],
        ..Launch::default()
    };
    let mut first = Broker::launch_with("test", "127.0.0.1:0", "", &faulty(), USERS, &how);
    let (lines, fd) = manager.next_with_fd();
    assert_eq!(lines, ["FDSTORE=1", "FDNAME=client"]);
    // The daemon stops; a client connects while no daemon runs: the stored socket queues it.
    assert!(first.stop().success());
    let mut waiting = besterd::client::Client::connect(first.addr).expect("queued, not refused");
    waiting.set_timeout(Some(DEADLINE)).unwrap();
    waiting
        .send(&json!({"header":{"identify":{"type":"client","authentication":{"username":"alice","password":"alice-pw"}}}}))
        .unwrap();
    // The service manager starts the next daemon with the stored socket (fd 3).
    let raw = fd.as_raw_fd();
    let log = std::fs::File::create(first.dir.path().join("second.log")).unwrap();
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=client exec \"$0\" serve --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_besterd"))
        .arg(first.config_path())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: only dup2 and fcntl between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::fcntl(3, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let mut second = command.spawn().unwrap();
    let reply = waiting
        .recv()
        .unwrap()
        .expect("the identify answered by the new daemon");
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    let echo = waiting
        .request("1", "faulty", &json!({"action": "echo"}))
        .unwrap();
    assert_eq!(echo["header"]["status"], "ok", "{echo}");
    signal(second.id(), libc::SIGTERM);
    assert!(second.wait().unwrap().success());
}
