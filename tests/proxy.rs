//! PROXY protocol listeners against the real daemon, with real version 1 and version 2 headers
//! written here: the client address they carry is the one the limits count, a connection from an
//! address that is not a trusted proxy is closed whatever it sends, and a garbage, oversized or
//! missing header closes the connection.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpStream};
use std::time::Instant;

use common::{Broker, DEADLINE, code, connect_from, eventually, handler, recv_frame, send_frame};
use serde_json::{Value, json};

fn broker(server_keys: &str, trusted: &str) -> Broker {
    let tables = format!(
        "[handlers.echo]\n{}\n\
         [[listeners]]\nkind = \"tcp\"\nname = \"lb\"\naddress = \"127.0.0.1:0\"\n\
         proxy_protocol = true\ntrusted_proxies = {trusted}\n",
        handler("python3", "handlers/python/echo.py")
    );
    Broker::start_with(
        &format!("identify_timeout_ms = 1000\n{server_keys}"),
        &tables,
        &[("alice", "alice-pw")],
    )
}

fn v1(source: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {source} 127.0.0.1 {port} 2222\r\n").into_bytes()
}

fn v2_inet6(source: Ipv6Addr, port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x21]);
    let tlv = [0x04u8, 0x00, 0x02, 0xaa, 0xbb]; // a NOOP TLV, to be skipped
    h.extend_from_slice(&((36 + tlv.len()) as u16).to_be_bytes());
    h.extend_from_slice(&source.octets());
    h.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&2222u16.to_be_bytes());
    h.extend_from_slice(&tlv);
    h
}

fn identify(password: &str) -> Value {
    json!({"header":{"identify":{"type":"client","authentication":{"username":"alice","password":password}}}})
}

/// Through the proxy listener from `from`: the header, then identify, in one write. The reply's
/// status ("ok") or error code.
fn login_via(b: &Broker, from: &str, header: &[u8], password: &str) -> (TcpStream, String) {
    let mut s = connect_from(from.parse().unwrap(), b.listener("lb"));
    let body = serde_json::to_vec(&identify(password)).unwrap();
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&body);
    s.write_all(&bytes).unwrap();
    let reply = recv_frame(&mut s).expect("a reply");
    let status = if reply["header"]["status"] == "ok" {
        "ok".to_string()
    } else {
        code(&reply).to_string()
    };
    (s, status)
}

/// Whether the server closes the connection without sending anything.
fn closed_silently(s: &mut TcpStream) -> bool {
    let mut bytes = Vec::new();
    match s.read_to_end(&mut bytes) {
        Ok(_) => bytes.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn the_address_in_the_header_is_the_one_counted_per_ip() {
    let b = broker("max_connections_per_ip = 2", r#"["127.0.0.1"]"#);
    // Version 1: two connections for 192.0.2.7 are served, a third is one too many from it.
    let (mut first, status) = login_via(&b, "127.0.0.1", &v1("192.0.2.7", 40001), "alice-pw");
    assert_eq!(status, "ok");
    first.set_read_timeout(Some(DEADLINE)).unwrap();
    send_frame(
        &mut first,
        &json!({"header":{"scope":"client","id":"1"},"payload":{"type":"echo","data":1}}),
    );
    assert_eq!(recv_frame(&mut first).unwrap()["data"], 1);
    let (_second, status) = login_via(&b, "127.0.0.1", &v1("192.0.2.7", 40002), "alice-pw");
    assert_eq!(status, "ok");
    let (_, status) = login_via(&b, "127.0.0.1", &v1("192.0.2.7", 40003), "alice-pw");
    assert_eq!(status, "too_many_connections");
    assert!(
        b.log()
            .contains("too many connections from 192.0.2.7 (2 open)")
    );
    // Another client behind the same proxy is not affected.
    let (_third, status) = login_via(&b, "127.0.0.1", &v1("192.0.2.8", 40004), "alice-pw");
    assert_eq!(status, "ok");
    assert!(
        b.log()
            .contains("accepted from 192.0.2.8:40004 via proxy 127.0.0.1:"),
        "{}",
        b.log()
    );
    // Version 2 over IPv6, with a TLV: served, and logged under the client's address.
    let client: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let (_v6, status) = login_via(&b, "127.0.0.1", &v2_inet6(client, 443), "alice-pw");
    assert_eq!(status, "ok");
    assert!(
        b.log()
            .contains("accepted from [2001:db8::7]:443 via proxy")
    );
}

#[test]
fn login_limits_apply_to_the_client_behind_the_proxy() {
    let b = broker("login_failures_per_ip = 2", r#"["127.0.0.0/8"]"#);
    let attacker = v1("198.51.100.9", 1234);
    for _ in 0..2 {
        assert_eq!(
            login_via(&b, "127.0.0.1", &attacker, "guess").1,
            "auth_failed"
        );
    }
    assert_eq!(
        login_via(&b, "127.0.0.1", &attacker, "guess").1,
        "rate_limited"
    );
    // The same proxy carrying another client: served.
    let honest = v1("198.51.100.10", 1234);
    assert_eq!(login_via(&b, "127.0.0.1", &honest, "alice-pw").1, "ok");
    // A v2 LOCAL header (the balancer's own check) keeps the proxy's address.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    assert_eq!(login_via(&b, "127.0.0.2", &local, "alice-pw").1, "ok");
    assert!(b.log().contains("accepted from 127.0.0.2:"));
}

#[test]
fn untrusted_addresses_and_bad_headers_are_closed() {
    let b = broker("", r#"["127.0.0.1"]"#);
    // From an address that is not a trusted proxy: closed, whatever it sends.
    let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 3), b.listener("lb"));
    s.write_all(&v1("192.0.2.7", 1)).unwrap();
    assert!(closed_silently(&mut s));
    eventually("the refusal to be logged", || {
        b.log()
            .lines()
            .any(|l| l.contains("127.0.0.3:") && l.ends_with("is not a trusted proxy; closed"))
            .then_some(())
    });
    // From the proxy: garbage, a malformed line, an oversized line, a header cut short.
    let cases: [(&[u8], &str); 4] = [
        (
            b"\x10\x00\x00\x00{\"header\":{}}",
            "no PROXY protocol header",
        ),
        (
            b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 2\r\n",
            "malformed PROXY protocol header: bad source port",
        ),
        (
            &[b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat(),
            "PROXY protocol header too long",
        ),
        (
            b"PROXY TCP4 192.0.2.7",
            "no PROXY header within the identify timeout",
        ),
    ];
    for (bytes, logged) in cases {
        let started = Instant::now();
        let mut s = connect_from(Ipv4Addr::LOCALHOST, b.listener("lb"));
        s.write_all(bytes).unwrap();
        assert!(closed_silently(&mut s), "{logged}");
        assert!(started.elapsed() < DEADLINE);
        eventually(logged, || b.log().contains(logged).then_some(()));
    }
    // None of them became a client; the plain listener is not affected.
    assert!(!b.log().contains("via proxy"), "{}", b.log());
    let mut alice = b.login("alice", "alice-pw");
    let who = alice.request("w", "bester.whoami", &Value::Null).unwrap();
    assert_eq!(who["data"]["user"], "alice");
}
