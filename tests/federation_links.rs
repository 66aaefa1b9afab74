//! Peer links under a magnifying glass, with two real besterd processes on loopback: the socket
//! options of both ends of a link (read from the daemons' own descriptors), and request-reply
//! across servers (`sendServers` with `"replies": true`).

mod common;

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};

use common::{Broker, eventually};
use serde_json::{Value, json};

const SECRET: &str = "secret-shared-by-a-and-b";

fn peer(name: &str, address: Option<SocketAddr>) -> String {
    let address = address
        .map(|a| format!("address = \"{a}\"\n"))
        .unwrap_or_default();
    format!("[peers.{name}]\nsecret = {SECRET:?}\n{address}")
}

fn users() -> Vec<(&'static str, &'static str)> {
    vec![("alice", "alice-pw"), ("bob", "bob-pw")]
}

/// Wait until `server` reports exactly these peers linked.
fn wait_for_peers(server: &Broker, want: &[&str]) {
    common::wait_for_peers_as(server, ("bob", "bob-pw"), want);
}

/// The established TCP connections in /proc/net/tcp: inode → (local port, remote port).
fn tcp_table() -> std::collections::HashMap<u64, (u16, u16)> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f[3] == "01").then(|| (f[9].parse().unwrap(), (port(f[1]), port(f[2]))))
        })
        .collect()
}

/// A duplicate of the descriptor that process `pid` holds for the TCP connection matching
/// `wanted` (local port, remote port), taken with pidfd_getfd (the tests run as root).
fn their_socket(pid: u32, wanted: impl Fn(u16, u16) -> bool) -> Option<(OwnedFd, (u16, u16))> {
    let table = tcp_table();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue;
        };
        let Some(&(local, remote)) = table.get(&inode) else {
            continue;
        };
        if !wanted(local, remote) {
            continue;
        }
        let fd: i32 = entry.file_name().to_string_lossy().parse().ok()?;
        // SAFETY: plain system calls; a descriptor they return is ours to own.
        unsafe {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) as i32;
            assert!(
                pidfd >= 0,
                "pidfd_open: {}",
                std::io::Error::last_os_error()
            );
            let dup = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as i32;
            let err = std::io::Error::last_os_error();
            libc::close(pidfd);
            assert!(dup >= 0, "pidfd_getfd: {err}");
            return Some((OwnedFd::from_raw_fd(dup), (local, remote)));
        }
    }
    None
}

fn nodelay(fd: &OwnedFd) -> i32 {
    let mut value: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a live c_int on a descriptor we own.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
    value
}

#[test]
fn both_ends_of_a_peer_link_disable_nagle() {
    let a = Broker::launch("a", "127.0.0.1:0", "", &peer("b", None), &users());
    let b = Broker::launch("b", "127.0.0.1:0", "", &peer("a", Some(a.addr)), &users());
    wait_for_peers(&a, &["b"]);
    let a_port = a.addr.port();
    // b dialled a: its socket's remote port is a's listening port.
    let (dialled, (b_port, _)) =
        their_socket(b.pid(), |_, remote| remote == a_port).expect("b's dialled socket to a");
    let (accepted, _) = their_socket(a.pid(), |local, remote| local == a_port && remote == b_port)
        .expect("a's accepted socket from b");
    assert_eq!(nodelay(&accepted), 1, "the accepted end sets TCP_NODELAY");
    assert_eq!(nodelay(&dialled), 1, "the dialled end sets TCP_NODELAY");
}

/// a and b, both with the faulty test handler; b dials a. Extra `[server]` keys for each.
fn pair(a_keys: &str, b_keys: &str) -> (Broker, Broker) {
    let faulty = format!(
        "[handlers.faulty]\n{}\n",
        common::handler("python3", "tests/handlers/faulty.py")
    );
    let a = Broker::launch(
        "a",
        "127.0.0.1:0",
        a_keys,
        &format!("{faulty}{}", peer("b", None)),
        &users(),
    );
    let b = Broker::launch(
        "b",
        "127.0.0.1:0",
        b_keys,
        &format!("{faulty}{}", peer("a", Some(a.addr))),
        &users(),
    );
    wait_for_peers(&a, &["b"]);
    wait_for_peers(&b, &["a"]);
    (a, b)
}

#[test]
fn a_client_on_a_gets_the_reply_of_the_handler_on_b() {
    let (a, _b) = pair("", "");
    let mut alice = a.login("alice", "alice-pw");
    let ask = json!({"action":"to_servers","servers":["b"],"replies":true,"data":{"action":"echo","n":1}});
    let reply = alice.request("rr1", "faulty", &ask).unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"rr1","type":"faulty","servers":{"b":{"status":"ok"}}},"data":{"b":{"action":"echo","n":1}}}),
        "b's handler's data comes back, with the request's id"
    );
    // A server that cannot be reached is reported, and has no entry in the data.
    let ask = json!({"action":"to_servers","servers":["b","zed"],"replies":true,"data":{"action":"echo","n":2}});
    let reply = alice.request("rr2", "faulty", &ask).unwrap();
    assert_eq!(reply["header"]["servers"]["zed"]["code"], "unknown_peer");
    assert_eq!(
        reply["data"],
        json!({"b":{"action":"echo","n":2}}),
        "{reply}"
    );
    // Without "replies" the answer is the reports alone, as before.
    let ask = json!({"action":"to_servers","servers":["b"],"data":{"action":"echo","n":3}});
    let reply = alice.request("plain", "faulty", &ask).unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"plain","type":"faulty","servers":{"b":{"status":"ok"}}},"data":null})
    );
}

#[test]
fn a_peer_whose_handler_never_answers_is_reported_peer_timeout() {
    let (a, _b) = pair("request_timeout_ms = 1000", "request_timeout_ms = 30000");
    let mut alice = a.login("alice", "alice-pw");
    let ask =
        json!({"action":"to_servers","servers":["b"],"replies":true,"data":{"action":"hang"}});
    let started = std::time::Instant::now();
    let reply = alice.request("slow", "faulty", &ask).unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(1000));
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"slow","type":"faulty","servers":{"b":{"status":"error","error":"\"b\" did not acknowledge within 1000 ms","code":"peer_timeout"}}},"data":{}})
    );
}

#[test]
fn a_reply_too_large_for_the_answer_is_refused_frame_too_large() {
    let keys = "max_frame_bytes = 8192";
    let (a, _b) = pair(keys, keys);
    let mut alice = a.login("alice", "alice-pw");
    // Fits: b's handler's 8000 bytes come back.
    let ask = json!({"action":"to_servers","servers":["b"],"replies":true,"data":{"action":"fill","bytes":8000}});
    let reply = alice.request("fits", "faulty", &ask).unwrap();
    assert_eq!(reply["header"]["servers"]["b"], json!({"status":"ok"}));
    assert_eq!(reply["data"]["b"]["fill"].as_str().unwrap().len(), 8000);
    // 8082 bytes fit in b's handler's answer (8188 bytes) and in b's ack, but not in the answer
    // to the client with its header and the report: left out, reported, the client served.
    let ask = json!({"action":"to_servers","servers":["b"],"replies":true,"data":{"action":"fill","bytes":8082}});
    let reply = alice.request("ov", "faulty", &ask).unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    assert_eq!(reply["data"], json!({}), "{reply}");
    let b = &reply["header"]["servers"]["b"];
    assert_eq!(b["code"], "frame_too_large", "{reply}");
    assert_eq!(
        b["error"],
        "the reply from \"b\" (8093 bytes of data) does not fit in the answer: it would be 8206 bytes, over the frame limit of 8192"
    );
    assert!(a.log().contains("link up"));
    wait_for_peers(&a, &["b"]);
}

/// A hand-rolled peer `b` linked to `a` over a real socket (`a` has `b` without an address).
fn fake_peer(a: &Broker) -> besterd::client::Client {
    let (c, answer) = common::fake_peer(a, "b", SECRET, None);
    assert_eq!(
        answer,
        json!({"header":{"status":"ok","kind":"reply"},"data":{"server":"a"}})
    );
    c
}

#[test]
fn acks_for_messages_never_sent_are_dropped_and_the_link_stays_up() {
    let faulty = format!(
        "[handlers.faulty]\n{}\n",
        common::handler("python3", "tests/handlers/faulty.py")
    );
    let a = Broker::launch(
        "a",
        "127.0.0.1:0",
        "",
        &format!("{faulty}{}", peer("b", None)),
        &users(),
    );
    let mut b = fake_peer(&a);
    wait_for_peers(&a, &["b"]);
    let mut alice = a.login("alice", "alice-pw");
    let ask =
        json!({"action":"to_servers","servers":["b"],"replies":true,"data":{"action":"echo"}});
    alice
        .send(&json!({"header":{"scope":"client","id":"q"},"payload":{"type":"faulty","data":ask}}))
        .unwrap();
    let message = b.recv().unwrap().expect("a's message");
    let msg = message["header"]["msg"].as_str().unwrap().to_string();
    assert_eq!(
        message,
        json!({"header":{"scope":"server","msg":msg,"from":{"user":"alice","server":"a"},"hops":1},"payload":{"type":"faulty","data":{"action":"echo"}}})
    );
    let unsent = (msg.parse::<u64>().unwrap() + 1000).to_string();
    for (number, data) in [
        ("999999", json!({"forged":true})),
        (unsent.as_str(), json!({"forged":2})),
        ("not a number", json!({"forged":3})),
        (msg.as_str(), json!({"real":1})),
        (msg.as_str(), json!({"late":true})),
    ] {
        b.send(&json!({"header":{"kind":"ack","msg":number,"status":"ok","type":"faulty"},"data":data}))
            .unwrap();
    }
    let reply = alice.recv().unwrap().expect("the answer");
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"q","type":"faulty","servers":{"b":{"status":"ok"}}},"data":{"b":{"real":1}}}),
        "only the ack of the message sent counts"
    );
    for number in ["999999", unsent.as_str(), "not a number", msg.as_str()] {
        let line = format!("peer=b acknowledged message {number:?}, which is not waiting for it");
        eventually(&format!("a to log {line:?}"), || {
            a.log().contains(&line).then_some(())
        });
    }
    // Nothing else reached alice (the next frame she gets answers her next request), and the
    // link is still up.
    let pong = alice.request("p", "bester.ping", &Value::Null).unwrap();
    assert_eq!(pong["header"]["id"], "p", "{pong}");
    wait_for_peers(&a, &["b"]);
}
