//! TLS and WebSocket listeners against the real binary, with certificates made by the test
//! (rcgen): logins and round trips on every transport, and each bad input (wrong CA, expired
//! certificate, clear text on a TLS port, a handshake that never ends, oversized and fragmented
//! messages, unmasked frames, invalid UTF-8, a foreign Origin) answered or closed with its code,
//! while a client on the plain TCP port keeps being served.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use besterd::client::Client;
use besterd::net::blocking::{Connection, Scheme};
use besterd::net::tls::{Trust, client_config};
use common::{Broker, DEADLINE, Side, handler};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};

/// A CA and a server certificate it issued, written as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn write_pki(dir: &Path, tag: &str, expired: bool) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("besterd test CA {tag}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, &ca).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "alice");
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &ca).unwrap();
    let path = |name: &str| dir.join(format!("{tag}-{name}"));
    let pki = Pki {
        ca: path("ca.pem"),
        cert: path("cert.pem"),
        key: path("key.pem"),
        client_cert: path("client-cert.pem"),
        client_key: path("client-key.pem"),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    std::fs::write(&pki.client_cert, client_cert.pem()).unwrap();
    std::fs::write(&pki.client_key, client_key.serialize_pem()).unwrap();
    pki
}

/// A broker with tls, ws and wss listeners next to its plain TCP port.
fn broker(pki: &Pki, extra: &str, server_keys: &str) -> Broker {
    let tables = format!(
        r#"[handlers.echo]
{echo}
[handlers.chat]
{chat}
[[listeners]]
name = "tls"
kind = "tls"
address = "127.0.0.1:0"
cert = {cert:?}
key = {key:?}
[[listeners]]
name = "ws"
kind = "ws"
address = "127.0.0.1:0"
static_dir = "{{web}}"
[[listeners]]
name = "wss"
kind = "wss"
address = "127.0.0.1:0"
cert = {cert:?}
key = {key:?}
{extra}
"#,
        echo = handler("python3", "handlers/python/echo.py"),
        chat = handler("python3", "handlers/python/chat.py"),
        cert = pki.cert.display().to_string(),
        key = pki.key.display().to_string(),
    );
    Broker::launch(
        "test",
        "127.0.0.1:0",
        &format!("identify_timeout_ms = 1000\n{server_keys}"),
        &tables,
        &[("alice", "alice-pw"), ("bob", "bob-pw")],
    )
}

fn trust(ca: &Path) -> Arc<rustls::ClientConfig> {
    client_config(&Trust::CaFile(ca.to_path_buf()), None).unwrap()
}

fn connect(scheme: Scheme, addr: SocketAddr, ca: Option<&Path>) -> std::io::Result<Connection> {
    Connection::connect(scheme, addr, "127.0.0.1", ca.map(trust), Some(DEADLINE))
}

fn recv(conn: &mut Connection) -> Option<Value> {
    conn.recv_body()
        .unwrap()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

fn identify(user: &str, password: &str) -> Vec<u8> {
    json!({"header":{"identify":{"type":"client","authentication":{"username":user,"password":password}}}})
        .to_string()
        .into_bytes()
}

fn message(id: &str, kind: &str, data: Value) -> Vec<u8> {
    json!({"header":{"scope":"client","id":id},"payload":{"type":kind,"data":data}})
        .to_string()
        .into_bytes()
}

fn login(conn: &mut Connection, user: &str, password: &str) -> Value {
    conn.send_body(&identify(user, password)).unwrap();
    recv(conn).expect("login reply")
}

#[test]
fn every_transport_logs_in_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), "a", false);
    let broker = broker(&pki, "", "");
    let cases = [
        (Scheme::Tcp, broker.addr),
        (Scheme::Tls, broker.listener("tls")),
        (Scheme::Ws, broker.listener("ws")),
        (Scheme::Wss, broker.listener("wss")),
    ];
    for (scheme, addr) in cases {
        let mut conn = connect(scheme, addr, Some(&pki.ca)).unwrap();
        let reply = login(&mut conn, "alice", "alice-pw");
        assert_eq!(reply["header"]["status"], "ok", "{scheme:?}: {reply}");
        // A body that needs a 2-byte and one that needs an 8-byte WebSocket length.
        for size in [10usize, 300, 70_000] {
            let text = "é".repeat(size / 2);
            conn.send_body(&message("m1", "echo", json!({"text": text})))
                .unwrap();
            let reply = recv(&mut conn).unwrap();
            assert_eq!(reply["header"]["id"], "m1", "{scheme:?}");
            assert_eq!(reply["data"]["text"], text, "{scheme:?}");
        }
        // Pipelined: 50 in one write, each answered once with its own id.
        let bodies: Vec<Vec<u8>> = (0..50)
            .map(|i| message(&format!("p{i}"), "echo", json!(i)))
            .collect();
        conn.send_bodies(&bodies).unwrap();
        for i in 0..50 {
            let reply = recv(&mut conn).unwrap();
            assert_eq!(reply["header"]["id"], format!("p{i}"), "{scheme:?}");
        }
    }
    // A push crosses transports: alice on WebSocket hears bob on TLS in a chat room.
    let mut ws = connect(Scheme::Ws, broker.listener("ws"), None).unwrap();
    login(&mut ws, "alice", "alice-pw");
    let mut tls = connect(Scheme::Tls, broker.listener("tls"), Some(&pki.ca)).unwrap();
    login(&mut tls, "bob", "bob-pw");
    for conn in [&mut ws, &mut tls] {
        conn.send_body(&message("j", "chat", json!({"action":"join","room":"r"})))
            .unwrap();
        assert_eq!(recv(conn).unwrap()["header"]["status"], "ok");
    }
    tls.send_body(&message(
        "s",
        "chat",
        json!({"action":"say","room":"r","text":"over TLS"}),
    ))
    .unwrap();
    let push = recv(&mut ws).unwrap();
    assert_eq!(push["header"]["kind"], "push", "{push}");
    assert_eq!(
        push["data"],
        json!({"room":"r","from":"bob","text":"over TLS"})
    );
}

#[test]
fn untrusted_and_expired_certificates_are_refused_by_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), "a", false);
    let other = write_pki(dir.path(), "other", false);
    let expired = write_pki(dir.path(), "old", true);
    let extra = format!(
        "[[listeners]]\nname = \"old\"\nkind = \"tls\"\naddress = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n",
        expired.cert.display().to_string(),
        expired.key.display().to_string()
    );
    let broker = broker(&pki, &extra, "");
    let mut side = Side::new(&broker, "bob", "bob-pw");
    for scheme in [Scheme::Tls, Scheme::Wss] {
        let addr = broker.listener(if scheme == Scheme::Tls { "tls" } else { "wss" });
        let err = connect(scheme, addr, Some(&other.ca))
            .err()
            .expect("refused");
        assert!(
            err.to_string().starts_with("refusing the server: the certificate of 127.0.0.1 is not signed by a trusted CA (give the CA with --ca FILE)"),
            "{err}"
        );
        side.check();
    }
    let err = connect(Scheme::Tls, broker.listener("old"), Some(&expired.ca))
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .starts_with("refusing the server: the certificate of 127.0.0.1 has expired"),
        "{err}"
    );
    side.check();
}

/// Read until end of stream or error; what arrived.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn clear_text_on_a_tls_port_gets_an_alert_and_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), "a", false);
    let broker = broker(&pki, "", "");
    let mut side = Side::new(&broker, "bob", "bob-pw");
    let mut raw = TcpStream::connect(broker.listener("tls")).unwrap();
    let mut frame = Vec::new();
    besterd::protocol::encode_frame(&identify("alice", "alice-pw"), &mut frame);
    raw.write_all(&frame).unwrap();
    let got = read_to_close(&mut raw);
    // A TLS alert record (content type 21), then the close; never a besterd frame.
    assert_eq!(got.first(), Some(&21), "{got:?}");
    side.check();
    let log = broker.log();
    assert!(log.contains("read error: tls: "), "{log}");
}

#[test]
fn a_handshake_that_never_finishes_is_closed_and_counts_against_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), "a", false);
    let broker = broker(&pki, "", "max_connections_per_ip = 3");
    let mut side = Side::new(&broker, "bob", "bob-pw");
    // Two stalled handshakes: a TLS client that sends nothing, a WebSocket one that sends half
    // a request head. With the side client that is the address's three.
    let started = Instant::now();
    let mut tls = TcpStream::connect(broker.listener("tls")).unwrap();
    let mut ws = TcpStream::connect(broker.listener("ws")).unwrap();
    ws.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    common::eventually("both stalled connections accepted", || {
        broker
            .log()
            .matches("accepted from")
            .count()
            .ge(&3)
            .then_some(())
    });
    let mut fourth = Client::connect(broker.addr).unwrap();
    fourth.set_timeout(Some(DEADLINE)).unwrap();
    let refused = fourth.recv().unwrap().expect("refusal");
    assert_eq!(refused["data"]["code"], "too_many_connections", "{refused}");
    // Both are closed by the identify timeout (1 s here), not before: the TLS one with at most
    // a close_notify alert (content type 21), never a besterd frame in clear.
    let tls_got = read_to_close(&mut tls);
    assert!(tls_got.is_empty() || tls_got[0] == 21, "{tls_got:?}");
    let ws_got = read_to_close(&mut ws);
    assert!(ws_got.is_empty(), "{}", String::from_utf8_lossy(&ws_got));
    assert!(started.elapsed() >= Duration::from_millis(900));
    side.check();
    // Slots are given back: a new connection is accepted again.
    let mut conn = connect(Scheme::Tls, broker.listener("tls"), Some(&pki.ca)).unwrap();
    assert_eq!(
        login(&mut conn, "alice", "alice-pw")["header"]["status"],
        "ok"
    );
}

#[test]
fn client_certificates_are_required_with_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), "a", false);
    let extra = format!(
        "[[listeners]]\nname = \"mtls\"\nkind = \"tls\"\naddress = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
        pki.ca.display().to_string()
    );
    let broker = broker(&pki, &extra, "");
    let mut side = Side::new(&broker, "bob", "bob-pw");
    let addr = broker.listener("mtls");
    // Without a certificate: TLS 1.3 finishes the client's side, the server refuses at once.
    let refused = connect(Scheme::Tls, addr, Some(&pki.ca)).and_then(|mut c| {
        c.send_body(&identify("alice", "alice-pw"))?;
        c.recv_body()
    });
    let err = refused.expect_err("refused without a client certificate");
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    side.check();
    let config = client_config(
        &Trust::CaFile(pki.ca.clone()),
        Some((&pki.client_cert, &pki.client_key)),
    )
    .unwrap();
    let mut conn =
        Connection::connect(Scheme::Tls, addr, "127.0.0.1", Some(config), Some(DEADLINE)).unwrap();
    assert_eq!(
        login(&mut conn, "alice", "alice-pw")["header"]["status"],
        "ok"
    );
}

// ---- WebSocket at the byte level ----

/// A raw WebSocket client: upgrade by hand, then frames built by the test.
struct RawWs {
    stream: TcpStream,
    input: Vec<u8>,
}

impl RawWs {
    fn open(addr: SocketAddr) -> RawWs {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        write!(
            stream,
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut ws = RawWs {
            stream,
            input: Vec::new(),
        };
        let head = ws.read_head();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        // RFC 6455's own example key and answer.
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{head}"
        );
        ws
    }

    fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.input.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(self.input[..end + 4].to_vec()).unwrap();
                self.input.drain(..end + 4);
                return head;
            }
            let mut buf = [0u8; 1024];
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "closed during the upgrade");
            self.input.extend_from_slice(&buf[..n]);
        }
    }

    /// A client frame: `fin`, `opcode`, masked unless `masked` is false.
    fn send(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        let len = payload.len();
        if len < 126 {
            frame.push(mask_bit | len as u8);
        } else if len < 65536 {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let key = [0x37u8, 0xfa, 0x21, 0x3d];
        if masked {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        // The server may close before taking all of it: that is what some tests check.
        let _ = self.stream.write_all(&frame);
    }

    fn text(&mut self, body: &[u8]) {
        self.send(true, 1, body, true);
    }

    /// The next server frame: (opcode, payload); `None` at end of stream.
    fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.input.len() >= 2 {
                assert_eq!(self.input[1] & 0x80, 0, "server frames are never masked");
                let (len, head) = match self.input[1] & 0x7f {
                    126 if self.input.len() >= 4 => (
                        u16::from_be_bytes([self.input[2], self.input[3]]) as usize,
                        4,
                    ),
                    127 if self.input.len() >= 10 => (
                        u64::from_be_bytes(self.input[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.input.len() >= head + len {
                    let opcode = self.input[0] & 0x0f;
                    let payload = self.input[head..head + len].to_vec();
                    self.input.drain(..head + len);
                    return Some((opcode, payload));
                }
            }
            let mut buf = [0u8; 16384];
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn json(&mut self) -> Value {
        let (opcode, payload) = self.recv().expect("a message");
        assert_eq!(opcode, 1, "besterd sends text messages");
        serde_json::from_slice(&payload).unwrap()
    }

    /// The close frame's code and reason, and that the connection then ends.
    fn close_code(&mut self) -> (u16, String) {
        let (opcode, payload) = self.recv().expect("a close frame");
        assert_eq!(opcode, 8, "expected a close frame, got {payload:?}");
        let code = u16::from_be_bytes([payload[0], payload[1]]);
        let reason = String::from_utf8(payload[2..].to_vec()).unwrap();
        assert!(self.recv().is_none(), "the connection ends after the close");
        (code, reason)
    }
}

fn ws_broker() -> (tempfile::TempDir, Pki, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), "a", false);
    let broker = broker(&pki, "", "");
    (dir, pki, broker)
}

#[test]
fn websocket_fragments_are_reassembled_and_pings_answered() {
    let (_dir, _pki, broker) = ws_broker();
    let mut side = Side::new(&broker, "bob", "bob-pw");
    let mut ws = RawWs::open(broker.listener("ws"));
    let body = identify("alice", "alice-pw");
    let (a, rest) = body.split_at(10);
    let (b, c) = rest.split_at(20);
    ws.send(false, 1, a, true);
    ws.send(true, 9, b"are you there", true); // a ping between fragments
    ws.send(false, 0, b, true);
    ws.send(true, 0, c, true);
    assert_eq!(ws.recv(), Some((10, b"are you there".to_vec())), "pong");
    assert_eq!(ws.json()["header"]["status"], "ok");
    // Binary messages are frame bodies too.
    ws.send(true, 2, &message("b1", "echo", json!("bin")), true);
    let reply = ws.json();
    assert_eq!(
        (reply["header"]["id"].clone(), reply["data"].clone()),
        (json!("b1"), json!("bin"))
    );
    side.check();
    // A close from the client is answered with the same code.
    ws.send(true, 8, &1000u16.to_be_bytes(), true);
    assert_eq!(ws.close_code(), (1000, String::new()));
    side.check();
}

#[test]
fn oversized_websocket_messages_get_frame_too_large_and_1009() {
    let (_dir, _pki, broker) = ws_broker();
    let mut side = Side::new(&broker, "bob", "bob-pw");
    // Before identify the limit is 4096 bytes: one message over it.
    let mut ws = RawWs::open(broker.listener("ws"));
    ws.text(&vec![b' '; 5000]);
    let error = ws.json();
    assert_eq!(error["data"]["code"], "frame_too_large", "{error}");
    assert_eq!(
        error["data"]["error"],
        "frame of 5000 bytes is over the limit of 4096 bytes"
    );
    assert_eq!(ws.close_code(), (1009, "frame_too_large".into()));
    side.check();
    // Fragments that add up to more than the limit are refused as they arrive.
    let mut ws = RawWs::open(broker.listener("ws"));
    ws.send(false, 1, &vec![b' '; 3000], true);
    ws.send(false, 0, &vec![b' '; 3000], true);
    let error = ws.json();
    assert_eq!(error["data"]["code"], "frame_too_large", "{error}");
    assert_eq!(ws.close_code().0, 1009);
    side.check();
}

#[test]
fn websocket_protocol_violations_are_closed_with_their_codes() {
    let (_dir, _pki, broker) = ws_broker();
    let mut side = Side::new(&broker, "bob", "bob-pw");
    // An unmasked frame from a client: 1002.
    let mut ws = RawWs::open(broker.listener("ws"));
    ws.send(true, 1, &identify("alice", "alice-pw"), false);
    let (code, reason) = ws.close_code();
    assert_eq!(code, 1002, "{reason}");
    assert!(reason.contains("mask"), "{reason}");
    side.check();
    // A continuation with nothing to continue: 1002.
    let mut ws = RawWs::open(broker.listener("ws"));
    ws.send(true, 0, b"{}", true);
    assert_eq!(ws.close_code().0, 1002);
    side.check();
    // Invalid UTF-8 in a text message: the JSON error, then 1007.
    let mut ws = RawWs::open(broker.listener("ws"));
    ws.text(b"{\"a\":\"\xff\xfe\"}");
    let error = ws.json();
    assert_eq!(error["data"]["code"], "invalid_utf8", "{error}");
    assert_eq!(error["data"]["error"], "text message is not valid UTF-8");
    assert_eq!(ws.close_code(), (1007, "invalid_utf8".into()));
    side.check();
    // besterd's own errors close with 1008 and the code as the reason: a wrong password.
    let mut ws = RawWs::open(broker.listener("ws"));
    ws.text(&identify("alice", "wrong"));
    assert_eq!(ws.json()["data"]["code"], "auth_failed");
    assert_eq!(ws.close_code(), (1008, "auth_failed".into()));
    side.check();
    // Valid JSON of the wrong shape is answered like on TCP, and the connection stays.
    let mut ws = RawWs::open(broker.listener("ws"));
    ws.text(&identify("alice", "alice-pw"));
    assert_eq!(ws.json()["header"]["status"], "ok");
    ws.text(b"[1,2]");
    assert_eq!(ws.json()["data"]["code"], "invalid_message");
    ws.text(&message("e", "echo", json!(1)));
    assert_eq!(ws.json()["header"]["id"], "e");
    side.check();
}

/// One HTTP request; the whole answer (the server closes after it).
fn http(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    String::from_utf8_lossy(&read_to_close(&mut stream)).into_owned()
}

#[test]
fn the_websocket_listener_serves_the_web_client_and_checks_origins() {
    let (_dir, _pki, broker) = ws_broker();
    let mut side = Side::new(&broker, "bob", "bob-pw");
    let addr = broker.listener("ws");
    let page = http(addr, &format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(
        page.contains("Content-Type: text/html; charset=utf-8\r\n"),
        "{page}"
    );
    assert!(page.contains("chat.js"), "{page}");
    let module = http(
        addr,
        &format!("GET /bester.js HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
    );
    assert!(
        module.contains("Content-Type: text/javascript; charset=utf-8\r\n"),
        "{module}"
    );
    assert!(module.contains("export class BesterClient"), "{module}");
    // The protocol core it imports: the Node package's lib/protocol.js, as it is.
    let core = http(
        addr,
        &format!("GET /protocol.js HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
    );
    assert!(core.starts_with("HTTP/1.1 200 OK\r\n"), "{core}");
    assert!(
        core.contains("Content-Type: text/javascript; charset=utf-8\r\n"),
        "{core}"
    );
    assert!(
        core.ends_with(include_str!("../clients/node/lib/protocol.js")),
        "{core}"
    );
    let missing = http(
        addr,
        &format!("GET /../../etc/passwd HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
    );
    assert!(
        missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{missing}"
    );
    let post = http(
        addr,
        &format!("POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"),
    );
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    let garbage = http(addr, "\x16\x03\x01 not http\r\n\r\n");
    assert!(
        garbage.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{garbage}"
    );
    // A page from another site may not open a WebSocket; the same host may.
    let upgrade = |origin: &str| {
        http(
            addr,
            &format!(
                "GET / HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
        )
    };
    let foreign = upgrade("http://evil.example");
    assert!(
        foreign.starts_with("HTTP/1.1 403 Forbidden\r\n"),
        "{foreign}"
    );
    assert!(
        foreign.ends_with("origin http://evil.example is not allowed\n"),
        "{foreign}"
    );
    let same = upgrade(&format!("http://{addr}"));
    assert!(same.starts_with("HTTP/1.1 101 "), "{same}");
    side.check();
}

/// An upgrade request from a page on `origin`, sent to `addr` with `Host: host` and this key.
fn upgrade_request(host: &str, origin: &str, key: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// DNS rebinding: a page at `http://evil.example:PORT/` whose name now points at 127.0.0.1 sends
/// `Host` and `Origin` that agree with each other. A loopback listener answers only IP literals,
/// `localhost` and its configured `hosts`, so the page can neither open a WebSocket (and log in
/// as demo/demo) nor read files; the real names still work.
#[test]
fn a_page_whose_name_was_rebound_to_loopback_cannot_open_a_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), "a", false);
    let named = "[[listeners]]\nname = \"named\"\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\nhosts = [\"chat.example.org\"]\n";
    let broker = broker(&pki, named, "");
    let mut side = Side::new(&broker, "bob", "bob-pw");
    let addr = broker.listener("ws");
    let rebound = format!("evil.example:{}", addr.port());
    let answer = http(
        addr,
        &upgrade_request(&rebound, &format!("http://{rebound}"), KEY),
    );
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert!(
        answer.ends_with(&format!("host {rebound} is not served here\n")),
        "{answer}"
    );
    let page = http(addr, &format!("GET / HTTP/1.1\r\nHost: {rebound}\r\n\r\n"));
    assert!(page.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{page}");
    for host in [addr.to_string(), format!("localhost:{}", addr.port())] {
        let answer = http(
            addr,
            &upgrade_request(&host, &format!("http://{host}"), KEY),
        );
        assert!(answer.starts_with("HTTP/1.1 101 "), "{host}: {answer}");
    }
    // A listener told its name answers it, and still no other.
    let named = broker.listener("named");
    let host = format!("chat.example.org:{}", named.port());
    let answer = http(
        named,
        &upgrade_request(&host, &format!("http://{host}"), KEY),
    );
    assert!(answer.starts_with("HTTP/1.1 101 "), "{answer}");
    let rebound = format!("evil.example:{}", named.port());
    let answer = http(
        named,
        &upgrade_request(&rebound, &format!("http://{rebound}"), KEY),
    );
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    side.check();
}

/// The built-in page may not be framed by another site (clickjacking) and loads scripts, styles
/// and connections only from its own listener; a malformed `Sec-WebSocket-Key` is refused.
#[test]
fn the_built_in_page_forbids_framing_and_upgrades_need_a_real_key() {
    let (_dir, _pki, broker) = ws_broker();
    let addr = broker.listener("ws");
    for path in ["/", "/chat.js"] {
        let page = http(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
        );
        let head = page.split("\r\n\r\n").next().unwrap();
        assert!(head.contains("\r\nX-Frame-Options: DENY\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"),
            "{head}"
        );
    }
    let origin = format!("http://{addr}");
    for key in [
        "x",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZR==",
        "!!!!!!!!!!!!!!!!!!!!!!==",
    ] {
        let answer = http(addr, &upgrade_request(&addr.to_string(), &origin, key));
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{key}: {answer}"
        );
        assert!(
            answer.ends_with("Sec-WebSocket-Key must be 16 bytes in base64\n"),
            "{key}: {answer}"
        );
    }
    let answer = http(addr, &upgrade_request(&addr.to_string(), &origin, KEY));
    assert!(answer.starts_with("HTTP/1.1 101 "), "{answer}");
}

#[test]
fn federation_links_run_over_tls_with_a_ca_or_a_pinned_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), "b", false);
    let other = write_pki(dir.path(), "other", false);
    const SECRET: &str = "secret-shared-by-a-and-b";
    let chat = |peers: &str| {
        format!(
            "[handlers.chat]\n{}\nenv = {{ BESTER_CHAT_PEERS = {peers:?} }}\n",
            handler("python3", "handlers/python/chat.py")
        )
    };
    let users = [("alice", "alice-pw"), ("bob", "bob-pw")];
    let b = Broker::launch(
        "b",
        "127.0.0.1:0",
        "",
        &format!(
            "{}[peers.a]\nsecret = {SECRET:?}\n[peers.a2]\nsecret = {SECRET:?}\n[peers.a3]\nsecret = {SECRET:?}\n[[listeners]]\nname = \"tls\"\nkind = \"tls\"\naddress = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n",
            chat("a"),
            pki.cert.display().to_string(),
            pki.key.display().to_string()
        ),
        &users,
    );
    let b_tls = b.listener("tls");
    let der = besterd::net::tls::load_certs(&pki.cert).unwrap().remove(0);
    let pin: String = besterd::net::tls::fingerprint(&der)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    let dial = |name: &str, trust: &str| {
        Broker::launch(
            name,
            "127.0.0.1:0",
            "",
            &format!(
                "{}[peers.b]\nsecret = {SECRET:?}\naddress = \"{b_tls}\"\ntls = true\n{trust}\n",
                chat("b")
            ),
            &users,
        )
    };
    // a pins b's certificate; a2 trusts b's CA; a3 trusts another CA and must never link.
    let a = dial("a", &format!("fingerprint = {pin:?}"));
    let a2 = dial("a2", &format!("ca = {:?}", pki.ca.display().to_string()));
    let a3 = dial("a3", &format!("ca = {:?}", other.ca.display().to_string()));
    for (server, name) in [(&a, "a"), (&a2, "a2")] {
        eventually_linked(server, &b, name);
    }
    // A chat line said on a reaches alice on b through the TLS link.
    let mut alice = b.login("alice", "alice-pw");
    let joined = alice
        .request("j", "chat", &json!({"action":"join","room":"r"}))
        .unwrap();
    assert_eq!(joined["header"]["status"], "ok");
    let mut bob = a.login("bob", "bob-pw");
    bob.request("j", "chat", &json!({"action":"join","room":"r"}))
        .unwrap();
    bob.request(
        "s",
        "chat",
        &json!({"action":"say","room":"r","text":"via TLS"}),
    )
    .unwrap();
    let push = alice.recv().unwrap().expect("the relayed say");
    assert_eq!(push["data"]["text"], "via TLS", "{push}");
    assert_eq!(push["data"]["server"], "a", "{push}");
    common::eventually("a3 to refuse b's certificate", || {
        a3.log()
            .contains("invalid peer certificate: UnknownIssuer")
            .then_some(())
    });
    assert!(!b.log().contains("peer=a3 link up"), "{}", b.log());
}

/// Both ends log the link as up.
fn eventually_linked(server: &Broker, b: &Broker, name: &str) {
    let up = |log: String, peer: &str| {
        log.lines()
            .any(|l| l.contains(&format!("peer={peer} link up")))
    };
    common::eventually(&format!("{name} to link with b over TLS"), || {
        (up(b.log(), name) && up(server.log(), "b")).then_some(())
    });
}

/// Run the `bester` command; (exit code, stdout, stderr).
fn bester(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bester"))
        .args(args)
        .env_remove("BESTER_PASSWORD")
        .env("SSL_CERT_FILE", "/nonexistent")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_bester_command_speaks_every_transport_and_refuses_untrusted_servers() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), "a", false);
    let broker = broker(&pki, "", "");
    let ca = pki.ca.display().to_string();
    let uri = |scheme: &str, name: &str| {
        let addr = if name == "main" {
            broker.addr
        } else {
            broker.listener(name)
        };
        format!("{scheme}://alice:alice-pw@{addr}")
    };
    for (uri, tls) in [
        (uri("bester", "main"), false),
        (uri("bester+tls", "tls"), true),
        (uri("bester+ws", "ws"), false),
        (uri("bester+wss", "wss"), true),
    ] {
        let mut args = vec!["send", &uri, "echo", r#"{"via":"bester"}"#];
        if tls {
            args.extend(["--ca", &ca]);
        }
        let (code, stdout, stderr) = bester(&args);
        assert_eq!(code, Some(0), "{uri}: {stderr}");
        assert_eq!(
            stdout,
            "{\"header\":{\"status\":\"ok\",\"kind\":\"reply\",\"id\":\"1\",\"type\":\"echo\"},\"data\":{\"via\":\"bester\"}}\n",
            "{uri}"
        );
    }
    // Without --ca (and no system CA that signed it) the certificate is refused, clearly.
    let tls_uri = uri("bester+tls", "tls");
    let (code, stdout, stderr) = bester(&["send", &tls_uri, "echo"]);
    assert_eq!((code, stdout.as_str()), (Some(1), ""));
    let addr = broker.listener("tls");
    assert!(
        stderr.starts_with(&format!("bester: cannot connect to {addr}: refusing the server: the certificate of 127.0.0.1 is not signed by a trusted CA (give the CA with --ca FILE)")),
        "{stderr}"
    );
    // --ca on a plain URI is a usage error.
    let (code, _, stderr) = bester(&["send", &uri("bester", "main"), "echo", "--ca", &ca]);
    assert_eq!(
        (code, stderr.as_str()),
        (
            Some(64),
            "bester: --ca only goes with bester+tls:// or bester+wss:// (not bester://)\n"
        )
    );
    // bester listen over WebSocket gets a push sent over TLS.
    let mut listener = std::process::Command::new(env!("CARGO_BIN_EXE_bester"))
        .args(["listen", &uri("bester+ws", "ws"), "--count", "1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut sender = connect(Scheme::Tls, broker.listener("tls"), Some(&pki.ca)).unwrap();
    login(&mut sender, "bob", "bob-pw");
    // alice is in the room on another connection; the push of each say reaches every connection
    // of hers, the listening one included once it has logged in: say until it has one.
    let mut alice = connect(Scheme::Tcp, broker.addr, None).unwrap();
    login(&mut alice, "alice", "alice-pw");
    for conn in [&mut alice, &mut sender] {
        conn.send_body(&message("j", "chat", json!({"action":"join","room":"x"})))
            .unwrap();
        recv(conn).unwrap();
    }
    let out = loop {
        sender
            .send_body(&message(
                "s",
                "chat",
                json!({"action":"say","room":"x","text":"hi"}),
            ))
            .unwrap();
        recv(&mut sender).unwrap();
        if let Some(status) = listener.try_wait().unwrap() {
            assert!(status.success());
            break listener.wait_with_output().unwrap();
        }
        assert!(started.elapsed() < DEADLINE, "bester listen got nothing");
        std::thread::sleep(Duration::from_millis(100));
    };
    let line = String::from_utf8(out.stdout).unwrap();
    let push: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(push["data"], json!({"room":"x","from":"bob","text":"hi"}));
}

#[test]
fn sighup_reloads_certificates_for_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let old = write_pki(dir.path(), "old", false);
    let new = write_pki(dir.path(), "new", false);
    let broker = broker(&old, "", "");
    let addr = broker.listener("tls");
    let mut before = connect(Scheme::Tls, addr, Some(&old.ca)).unwrap();
    assert_eq!(
        login(&mut before, "alice", "alice-pw")["header"]["status"],
        "ok"
    );
    // A bad key first: the reload is refused and the old certificate stays in use.
    std::fs::write(&old.key, "not a key").unwrap();
    common::signal(broker.pid(), libc::SIGHUP);
    common::eventually("the failed reload to be logged", || {
        broker
            .log()
            .contains("reload: listener tls: ")
            .then_some(())
    });
    assert!(connect(Scheme::Tls, addr, Some(&old.ca)).is_ok());
    // Now the new certificate and key, in place of the old files.
    std::fs::copy(&new.cert, &old.cert).unwrap();
    std::fs::copy(&new.key, &old.key).unwrap();
    common::signal(broker.pid(), libc::SIGHUP);
    common::eventually("new connections to get the new certificate", || {
        connect(Scheme::Tls, addr, Some(&new.ca)).ok()
    });
    let err = connect(Scheme::Tls, addr, Some(&old.ca))
        .err()
        .expect("the old CA no longer fits");
    assert!(
        err.to_string().contains("not signed by a trusted CA"),
        "{err}"
    );
    // The connection opened before the reload is still served.
    before
        .send_body(&message("after", "echo", json!("still here")))
        .unwrap();
    assert_eq!(recv(&mut before).unwrap()["data"], "still here");
}
