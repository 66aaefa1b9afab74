//! Denial of service and lockouts by anyone who can reach a port, against the real daemon: running
//! it out of file descriptors (a listener must keep accepting once they are back, and say so in
//! `/healthz` meanwhile), idle monitoring connections against `/healthz`, and failed logins from
//! other addresses against a user's own correct password.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use besterd::client::Client;
use common::{
    Broker, DEADLINE, Launch, code, connect_from, eventually, handler, recv_frame, send_frame,
};
use serde_json::{Value, json};

/// The monitoring address, from the line the daemon logs when it binds it.
fn monitor_addr(broker: &Broker) -> SocketAddr {
    let log = broker.log();
    let marker = "monitor: listening on http://";
    let at = log.find(marker).expect("monitor line in the log") + marker.len();
    let end = log[at..].find(' ').unwrap() + at;
    log[at..end].parse().unwrap()
}

/// GET `path` on the monitoring port: (status, body); `None` if the connection was closed
/// without an answer.
fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    let text = String::from_utf8(text).unwrap();
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_get(addr, path).unwrap_or_else(|| panic!("GET {path}: closed without an answer"))
}

fn echo_handler() -> String {
    format!(
        "[handlers.echo]\n{}\n",
        handler("python3", "handlers/python/echo.py")
    )
}

/// A broker run under `prlimit --nofile=N:N`, with a monitoring port.
fn limited_broker(nofile: u32, server_keys: &str) -> Broker {
    let how = Launch {
        wrapper: vec![
            "prlimit".into(),
            format!("--nofile={nofile}:{nofile}"),
            "--".into(),
        ],
        ..Launch::default()
    };
    Broker::launch_with(
        "test",
        "127.0.0.1:0",
        &format!("identify_timeout_ms = 60000\n{server_keys}"),
        &format!(
            "{}[monitor]\nlisten = \"127.0.0.1:0\"\nmax_connections = 4\ntimeout_ms = 1000\n",
            echo_handler()
        ),
        &[("alice", "alice-pw")],
        &how,
    )
}

/// Whether a connection that sent nothing is closed by the server (EOF, or an error frame
/// then EOF) within the deadline, rather than left hanging. The error frame's code, if any.
fn closed_without_service(stream: &mut TcpStream) -> Option<String> {
    let mut bytes = Vec::new();
    match stream.read_to_end(&mut bytes) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection was left hanging: {e}"),
    }
    if bytes.len() < 4 {
        return None;
    }
    let frame: Value = serde_json::from_slice(&bytes[4..]).unwrap();
    Some(code(&frame).to_string())
}

/// Log in and echo once.
fn served(addr: SocketAddr) -> bool {
    let Ok((mut client, reply)) = Client::login(addr, "alice", "alice-pw") else {
        return false;
    };
    if reply["header"]["status"] != "ok" {
        return false;
    }
    client.set_timeout(Some(DEADLINE)).unwrap();
    client
        .request("e1", "echo", &json!({"n": 1}))
        .is_ok_and(|r| r["header"]["status"] == "ok")
}

#[test]
fn out_of_descriptors_the_port_sheds_says_so_and_recovers() {
    common::raise_fd_limit();
    let b = limited_broker(20, "");
    let m = monitor_addr(&b);
    assert_eq!(get(m, "/healthz").0, 200);
    // Silent connections until the daemon has no descriptor left: past max_connections they are
    // told too_many_connections; past the descriptors, closed by the spare descriptor.
    let mut attack: Vec<TcpStream> = Vec::new();
    let mut out_of_fds = false;
    for _ in 0..200 {
        let mut s = TcpStream::connect(b.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut byte = [0u8; 4];
        match s.read(&mut byte) {
            // Accepted and waiting for identify (or not accepted yet): keep it open.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => attack.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => attack.push(s),
            _ => {
                s.set_read_timeout(Some(DEADLINE)).unwrap();
                if b.log().contains("out of file descriptors") {
                    out_of_fds = true;
                    break;
                }
            }
        }
    }
    assert!(
        out_of_fds || attack.len() > 20,
        "the daemon ran out of descriptors:\n{}",
        b.log()
    );
    // A new connection is closed, not left hanging, and told why.
    let mut probe = TcpStream::connect(b.addr).unwrap();
    probe.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(
        closed_without_service(&mut probe).as_deref(),
        Some("too_many_connections")
    );
    // /healthz is answered (on the spare descriptor) and names the listener.
    let (status, body) = eventually("/healthz to say the listener cannot accept", || {
        try_get(m, "/healthz").filter(|(s, _)| *s == 503)
    });
    assert_eq!(status, 503);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "unavailable");
    let reason = health["reason"].as_str().unwrap();
    assert!(
        reason.contains("listener main (127.0.0.1:") && reason.contains("cannot accept for"),
        "{reason}"
    );
    assert!(reason.contains("out of file descriptors"), "{reason}");
    // The control socket is out of descriptors too: a connection is closed, not left hanging.
    let ctl_socket = b.dir.path().join("run/besterd.ctl");
    let mut ctl = std::os::unix::net::UnixStream::connect(&ctl_socket).unwrap();
    ctl.set_read_timeout(Some(DEADLINE)).unwrap();
    // The daemon may close it before the request is written (a broken pipe): closed either way.
    let _ = ctl.write_all(b"{\"command\":\"status\"}\n");
    let mut answer = String::new();
    let read = ctl.read_to_string(&mut answer);
    assert!(
        !matches!(&read, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the control connection was left hanging: {read:?}"
    );
    assert_eq!(answer, "", "closed without an answer");
    // The attacker leaves: the same port accepts and serves again, and /healthz is 200.
    drop(attack);
    eventually("a login to be served again", || {
        served(b.addr).then_some(())
    });
    eventually("/healthz to be 200 again", || {
        try_get(m, "/healthz").filter(|(s, _)| *s == 200)
    });
    assert!(b.log().contains("accepting again"), "{}", b.log());
    let status = common::besterd_cmd(
        &["ctl", "--socket", ctl_socket.to_str().unwrap(), "status"],
        None,
    );
    assert!(status.status.success(), "{status:?}");
    // Below this limit the clamp cannot keep descriptors free; it still says so.
    assert!(
        b.log()
            .contains("server.max_connections = 10000 lowered to 8"),
        "the clamp is logged:\n{}",
        b.log()
    );
}

#[test]
fn max_connections_is_clamped_to_the_descriptor_limit() {
    common::raise_fd_limit();
    let b = limited_broker(200, "");
    let m = monitor_addr(&b);
    let log = b.log();
    let at = log
        .find("server.max_connections = 10000 lowered to ")
        .unwrap_or_else(|| panic!("the clamp is logged:\n{log}"));
    let room: usize = log[at + 42..].split(':').next().unwrap().parse().unwrap();
    assert!(room > 100 && room < 200, "{room}");
    // More silent connections than the limit: those past the clamp are told so and closed,
    // and the daemon never runs out of descriptors. (max_connections counts the handler's link.)
    let attack: Vec<TcpStream> = (0..250)
        .map(|_| {
            let s = TcpStream::connect(b.addr).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mut refused = vec![false; attack.len()];
    let want = attack.len() - (room - 1);
    eventually("the connections past the clamp to be refused", || {
        for (s, done) in attack.iter().zip(refused.iter_mut()) {
            let mut byte = [0u8; 1];
            let pending =
                matches!(s.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            *done |= !pending;
        }
        (refused.iter().filter(|r| **r).count() == want).then_some(())
    });
    let mut probe = TcpStream::connect(b.addr).unwrap();
    probe.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(
        closed_without_service(&mut probe).as_deref(),
        Some("too_many_connections")
    );
    assert_eq!(get(m, "/healthz"), (200, r#"{"status":"ok"}"#.to_string()));
    assert!(!b.log().contains("out of file descriptors"), "{}", b.log());
    drop(attack);
    eventually("a login to be served again", || {
        served(b.addr).then_some(())
    });
}

#[test]
fn idle_monitoring_connections_cannot_fail_healthz() {
    common::raise_fd_limit();
    // timeout_ms is long: the first byte must still come within a second.
    let b = Broker::start_with(
        "",
        &format!(
            "{}[monitor]\nlisten = \"127.0.0.1:0\"\ntimeout_ms = 30000\n",
            echo_handler()
        ),
        &[("alice", "alice-pw")],
    );
    let m = monitor_addr(&b);
    let started = Instant::now();
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| connect_from("127.0.0.1".parse().unwrap(), m))
        .collect();
    // A liveness probe is answered, from the same address, while they are open.
    let (status, body) = get(m, "/healthz");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    // Other pages from that address wait for a general slot: refused at the per-address cap.
    let (status, body) = get(m, "/status");
    assert_eq!(
        (status, body.as_str()),
        (503, r#"{"error":"too many monitoring connections"}"#)
    );
    // Another address is not affected by this one's connections.
    let mut other = connect_from("127.0.0.2".parse().unwrap(), m);
    other
        .write_all(format!("GET /status HTTP/1.1\r\nHost: {m}\r\n\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    other.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    // Every idle connection is answered (503 past the slots, 408 once its first byte is late)
    // and closed, long before timeout_ms.
    let mut timed_out = 0;
    for mut s in idle {
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        if text.starts_with("HTTP/1.1 408 ") {
            timed_out += 1;
        } else {
            assert!(text.starts_with("HTTP/1.1 503 "), "{text:?}");
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed by the first-byte timeout, not timeout_ms"
    );
    // The per-address cap (8) held until the first-byte timeout, and at most the 4 health
    // slots' last holders.
    assert!((8..=12).contains(&timed_out), "{timed_out}");
    assert_eq!(get(m, "/healthz").0, 200);
}

/// Identify as `user` from `source`: the reply's error code, or "ok".
fn login_from(source: &str, to: SocketAddr, user: &str, password: &str) -> String {
    let mut s = connect_from(source.parse().unwrap(), to);
    send_frame(
        &mut s,
        &json!({"header":{"identify":{"type":"client","authentication":{"username":user,"password":password}}}}),
    );
    let reply = recv_frame(&mut s).expect("a reply");
    if reply["header"]["status"] == "ok" {
        "ok".into()
    } else {
        code(&reply).to_string()
    }
}

#[test]
fn wrong_passwords_from_other_addresses_do_not_lock_a_user_out() {
    let b = Broker::start_with(
        "",
        &echo_handler(),
        &[("carol", "carol-pw"), ("bob", "bob-pw")],
    );
    // The attacker's own address: 10 failures a minute for one name (the default), then refused.
    for i in 0..10 {
        assert_eq!(
            login_from("127.0.0.2", b.addr, "carol", "guess"),
            "auth_failed",
            "{i}"
        );
    }
    assert_eq!(
        login_from("127.0.0.2", b.addr, "carol", "guess"),
        "rate_limited"
    );
    assert_eq!(
        login_from("127.0.0.2", b.addr, "carol", "carol-pw"),
        "rate_limited",
        "the attacker's address stays limited"
    );
    for i in 3..8 {
        assert_eq!(
            login_from(&format!("127.0.0.{i}"), b.addr, "carol", "guess"),
            "auth_failed"
        );
    }
    // Carol from her own address, which never failed: served.
    assert_eq!(login_from("127.0.0.1", b.addr, "carol", "carol-pw"), "ok");
    assert!(served_as(b.addr, "carol", "carol-pw"));

    // A logged-in session sending bob's name in header.authentication: debited to carol (the
    // session's own user) and its address, never to bob.
    let mut carol = b.login("carol", "carol-pw");
    let mismatch = |n: u32| {
        json!({"header":{"scope":"client","id":format!("m{n}"),
               "authentication":{"username":"bob","password":"guess"}},
               "payload":{"type":"echo","data":n}})
    };
    let mut codes = Vec::new();
    for n in 0..15 {
        carol.send(&mismatch(n)).unwrap();
        codes.push(code(&carol.recv().unwrap().unwrap()).to_string());
    }
    assert_eq!(codes[..10], vec!["auth_failed"; 10][..], "{codes:?}");
    assert_eq!(codes[10..], vec!["rate_limited"; 5][..], "{codes:?}");
    assert_eq!(login_from("127.0.0.1", b.addr, "bob", "bob-pw"), "ok");
}

fn served_as(addr: SocketAddr, user: &str, password: &str) -> bool {
    let Ok((mut client, reply)) = Client::login(addr, user, password) else {
        return false;
    };
    client.set_timeout(Some(DEADLINE)).unwrap();
    reply["header"]["status"] == "ok"
        && client
            .request("e1", "echo", &json!({"n": 1}))
            .is_ok_and(|r| r["header"]["status"] == "ok")
}

/// Claim to be server `claim` from `source` and send a wrong proof: the answers' codes (the
/// identify's, then the proof's if a challenge came).
fn wrong_peer_proof(source: &str, to: SocketAddr, claim: &str) -> Vec<String> {
    let mut s = connect_from(source.parse().unwrap(), to);
    let nonce = besterd::federation::handshake::nonce();
    send_frame(
        &mut s,
        &json!({"header":{"identify":{"type":"server","name":claim,"nonce":nonce}}}),
    );
    let first = recv_frame(&mut s).expect("an answer to identify");
    if first["header"]["kind"] != "challenge" {
        return vec![code(&first).to_string()];
    }
    send_frame(&mut s, &json!({"header":{"proof": "0".repeat(64)}}));
    let answer = recv_frame(&mut s).expect("an answer to the proof");
    vec!["challenge".into(), code(&answer).to_string()]
}

#[test]
fn wrong_peer_proofs_from_elsewhere_do_not_keep_a_peer_link_down() {
    const SECRET: &str = "secret-shared-by-a-and-b";
    let peer = |name: &str, address: Option<SocketAddr>| {
        let address = address
            .map(|a| format!("address = \"{a}\"\n"))
            .unwrap_or_default();
        format!("[peers.{name}]\nsecret = {SECRET:?}\n{address}")
    };
    let users = [("bob", "bob-pw")];
    // Two failures a minute per name and address: a token comes back only after 30 s.
    let keys = "login_failures_per_user = 2";
    let a = Broker::launch(
        "a",
        "127.0.0.1:0",
        keys,
        &format!("{}{}", echo_handler(), peer("b", None)),
        &users,
    );
    // A stranger on 127.0.0.2 claims to be b with wrong proofs until it is refused.
    for _ in 0..2 {
        assert_eq!(
            wrong_peer_proof("127.0.0.2", a.addr, "b"),
            ["challenge", "auth_failed"]
        );
    }
    assert_eq!(wrong_peer_proof("127.0.0.2", a.addr, "b"), ["rate_limited"]);
    // The real b (dialling from 127.0.0.1) links up all the same.
    let b = Broker::launch(
        "b",
        "127.0.0.1:0",
        keys,
        &format!("{}{}", echo_handler(), peer("a", Some(a.addr))),
        &users,
    );
    // b dials a, so b takes `identify` as a only from a's address: no challenge for others.
    assert_eq!(wrong_peer_proof("127.0.0.2", b.addr, "a"), ["auth_failed"]);
    assert!(
        b.log()
            .contains("comes from 127.0.0.2, not from its configured address"),
        "{}",
        b.log()
    );
    for (server, other) in [(&a, "b"), (&b, "a")] {
        let mut probe = server.login("bob", "bob-pw");
        let mut n = 0;
        eventually(&format!("the link to {other}"), || {
            n += 1;
            let who = probe
                .request(&format!("w{n}"), "bester.whoami", &Value::Null)
                .unwrap();
            (who["data"]["peers"] == json!([other])).then_some(())
        });
    }
}
