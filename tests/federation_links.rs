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
    let mut probe = server.login("bob", "bob-pw");
    let mut n = 0;
    eventually(&format!("peers {want:?} to be linked"), || {
        n += 1;
        let who = probe
            .request(&format!("w{n}"), "bester.whoami", &Value::Null)
            .unwrap();
        (who["data"]["peers"] == json!(want)).then_some(())
    });
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
