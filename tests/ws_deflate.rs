//! permessage-deflate (RFC 7692) on WebSocket listeners, against the real binary: a real client
//! library that does the extension (Python `websockets`) echoing through a real handler
//! compressed both ways; a raw client that sends hand-compressed RSV1 frames (flate2 directly,
//! not the server's code) and reads RSV1 replies, secrets plain; an old client without the
//! extension; a decompression bomb; RSV1 where it means nothing; offers that are declined; and
//! a listener with `ws_deflate = false` — while a client beside them keeps being served.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{Broker, DEADLINE, Side, handler, repo};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};

/// What the server answers to an offer it accepts.
const ACCEPTED: &str = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n";

/// A broker with the echo handler, a `ws` listener and one with `ws_deflate = false`.
fn broker() -> Broker {
    let tables = format!(
        "[handlers.echo]\n{}\n[[listeners]]\nname = \"ws\"\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"plain\"\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\nws_deflate = false\n",
        handler("python3", "handlers/python/echo.py"),
    );
    Broker::start_with("", &tables, &[("alice", "alice-pw"), ("bob", "bob-pw")])
}

/// A message compressed as RFC 7692 §7.2.1 says: raw DEFLATE, sync flush, tail cut off.
fn deflate(body: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(body.len() + 64);
    c.compress_vec(body, &mut out, FlushCompress::Sync).unwrap();
    assert_eq!(c.total_in() as usize, body.len());
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// RFC 7692 §7.2.2: append the tail, inflate.
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut data = payload.to_vec();
    data.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&data, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

fn identify(user: &str, password: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"header":{"identify":{"type":"client","authentication":{"username":user,"password":password}}}})).unwrap()
}

/// A chat-like message of about 2 KB.
fn chat_message(id: &str) -> Vec<u8> {
    let text = "Are we still meeting at the station at nine? I will bring the maps. ".repeat(28);
    serde_json::to_vec(&json!({"header":{"scope":"client","id":id},"payload":{"type":"echo","data":{"room":"general","from":"alice","text":text}}})).unwrap()
}

/// A raw WebSocket client: upgrade by hand with the offer given, then frames built here.
struct RawWs {
    stream: TcpStream,
    input: Vec<u8>,
    head: String,
}

impl RawWs {
    /// Upgrade, offering `extensions` (one `Sec-WebSocket-Extensions` header each).
    fn open(addr: SocketAddr, extensions: &[&str]) -> RawWs {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let offers: String = extensions
            .iter()
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .collect();
        write!(
            stream,
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offers}\r\n"
        )
        .unwrap();
        let mut ws = RawWs {
            stream,
            input: Vec::new(),
            head: String::new(),
        };
        loop {
            if let Some(end) = ws.input.windows(4).position(|w| w == b"\r\n\r\n") {
                ws.head = String::from_utf8(ws.input[..end + 4].to_vec()).unwrap();
                ws.input.drain(..end + 4);
                break;
            }
            let mut buf = [0u8; 1024];
            let n = ws.stream.read(&mut buf).unwrap();
            assert!(n > 0, "closed during the upgrade");
            ws.input.extend_from_slice(&buf[..n]);
        }
        assert!(ws.head.starts_with("HTTP/1.1 101 "), "{}", ws.head);
        ws
    }

    /// A masked client frame with this first byte (FIN, RSV1, opcode).
    fn send(&mut self, first: u8, payload: &[u8]) {
        let mut frame = vec![first];
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len < 65536 {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let key = [0x37u8, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        // The server may close before taking all of it.
        let _ = self.stream.write_all(&frame);
    }

    /// The next server frame: (first byte, payload); `None` at end of stream.
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
                    let first = self.input[0];
                    let payload = self.input[head..head + len].to_vec();
                    self.input.drain(..head + len);
                    return Some((first, payload));
                }
            }
            let mut buf = [0u8; 16384];
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// The next message as JSON, and whether it came compressed (RSV1).
    fn json(&mut self) -> (Value, bool) {
        let (first, payload) = self.recv().expect("a message");
        assert_eq!(first & 0x8f, 0x81, "one final text frame: {first:#x}");
        let compressed = first & 0x40 != 0;
        let body = if compressed {
            inflate(&payload)
        } else {
            payload
        };
        (serde_json::from_slice(&body).unwrap(), compressed)
    }

    /// The close frame's code and reason, and that the connection then ends.
    fn close_code(&mut self) -> (u16, String) {
        let (first, payload) = self.recv().expect("a close frame");
        assert_eq!(first, 0x88, "expected a close frame, got {payload:?}");
        let code = u16::from_be_bytes([payload[0], payload[1]]);
        let reason = String::from_utf8(payload[2..].to_vec()).unwrap();
        assert!(self.recv().is_none(), "the connection ends after the close");
        (code, reason)
    }
}

#[test]
fn hand_compressed_frames_are_inflated_and_replies_come_compressed_but_secrets_plain() {
    let b = broker();
    let mut side = Side::new(&b, "bob", "bob-pw");
    let mut ws = RawWs::open(
        b.listener("ws"),
        &["permessage-deflate; client_max_window_bits"],
    );
    assert!(ws.head.contains(ACCEPTED), "{}", ws.head);
    // A compressed identify: the reply carries a resume token, so it comes plain.
    ws.send(0xc1, &deflate(&identify("alice", "alice-pw")));
    let (reply, compressed) = ws.json();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    assert!(!compressed, "a login reply is never compressed");

    // 2 KB compressed, fragmented (RSV1 on the first frame only), a ping between fragments.
    let msg = chat_message("c1");
    let packed = deflate(&msg);
    assert!(packed.len() < msg.len() / 4, "{} bytes", packed.len());
    let (a, rest) = packed.split_at(packed.len() / 3);
    let (c, d) = rest.split_at(rest.len() / 2);
    ws.send(0x41, a); // text, RSV1, not final
    ws.send(0x00, c);
    ws.send(0x89, b"ping"); // a ping between fragments
    ws.send(0x80, d);
    assert_eq!(ws.recv(), Some((0x8a, b"ping".to_vec())), "pong");
    let (first, payload) = ws.recv().expect("the echo");
    assert_eq!(first, 0xc1, "the echo came compressed (FIN, RSV1, text)");
    assert!(payload.len() < 400, "{} bytes on the wire", payload.len());
    let reply: Value = serde_json::from_slice(&inflate(&payload)).unwrap();
    let sent: Value = serde_json::from_slice(&msg).unwrap();
    assert_eq!(reply["header"]["id"], "c1", "{reply}");
    assert_eq!(reply["data"], sent["payload"]["data"]);

    // Plain messages still work, and short replies come plain.
    ws.send(
        0x81,
        br#"{"header":{"scope":"client","id":"p"},"payload":{"type":"echo","data":{"n":1}}}"#,
    );
    let (reply, compressed) = ws.json();
    assert_eq!((reply["data"].clone(), compressed), (json!({"n":1}), false));
    // A compressed binary message is a frame body too.
    ws.send(0xc2, &deflate(&chat_message("b1")));
    let (reply, compressed) = ws.json();
    assert_eq!(
        (reply["header"]["id"].clone(), compressed),
        (json!("b1"), true)
    );

    // bester.token carries a token: plain, although it is long enough to compress.
    let token = br#"{"header":{"scope":"client","id":"t"},"payload":{"type":"bester.token"}}"#;
    ws.send(0xc1, &deflate(token));
    let (first, payload) = ws.recv().expect("the token");
    assert_eq!(first, 0x81, "a token answer is never compressed");
    assert!(payload.len() > 256, "{} bytes", payload.len());
    let reply: Value = serde_json::from_slice(&payload).unwrap();
    assert!(reply["data"]["resume"].is_string(), "{reply}");
    side.check();
}

#[test]
fn clients_that_do_not_offer_it_or_are_declined_are_served_plain() {
    let b = broker();
    let mut side = Side::new(&b, "bob", "bob-pw");
    let offers: [(&str, &[&str]); 4] = [
        ("an old client", &[]),
        (
            "a window the server cannot keep to",
            &["permessage-deflate; server_max_window_bits=10"],
        ),
        ("an unknown parameter", &["permessage-deflate; mystery=1"]),
        ("another extension", &["x-webkit-deflate-frame"]),
    ];
    for (what, offer) in offers {
        let mut ws = RawWs::open(b.listener("ws"), offer);
        assert!(
            !ws.head
                .to_ascii_lowercase()
                .contains("sec-websocket-extensions"),
            "{what}: {}",
            ws.head
        );
        ws.send(0x81, &identify("alice", "alice-pw"));
        assert_eq!(ws.json().0["header"]["status"], "ok", "{what}");
        ws.send(0x81, &chat_message("m"));
        let (reply, compressed) = ws.json();
        assert_eq!(
            (reply["header"]["id"].clone(), compressed),
            (json!("m"), false),
            "{what}"
        );
        // And RSV1 means nothing on its connection: a protocol error (RFC 6455 §5.2).
        ws.send(0xc1, &deflate(&chat_message("x")));
        let (code, reason) = ws.close_code();
        assert_eq!(code, 1002, "{what}: {reason}");
        assert!(
            reason.to_lowercase().contains("reserved"),
            "{what}: {reason}"
        );
        side.check();
    }
    // A declined offer does not stop a later acceptable one (RFC 7692 §5).
    let ws = RawWs::open(
        b.listener("ws"),
        &["permessage-deflate; server_max_window_bits=9, permessage-deflate"],
    );
    assert!(ws.head.contains(ACCEPTED), "{}", ws.head);
    // ws_deflate = false: never accepted.
    let ws = RawWs::open(b.listener("plain"), &["permessage-deflate"]);
    assert!(
        !ws.head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{}",
        ws.head
    );
}

#[test]
fn a_websocket_decompression_bomb_gets_frame_too_large_and_1009() {
    let b = broker();
    let mut side = Side::new(&b, "bob", "bob-pw");
    // Before identify the limit is 4096 bytes: 64 KiB of spaces, a few hundred bytes packed.
    let mut ws = RawWs::open(b.listener("ws"), &["permessage-deflate"]);
    let bomb = deflate(&vec![b' '; 64 * 1024]);
    assert!(bomb.len() < 4096, "{} bytes", bomb.len());
    ws.send(0xc1, &bomb);
    let (error, _) = ws.json();
    assert_eq!(
        error,
        json!({"header":{"status":"error","kind":"reply"},"data":{"error":"compressed frame inflates to over the limit of 4096 bytes","code":"frame_too_large"}})
    );
    assert_eq!(ws.close_code(), (1009, "frame_too_large".into()));
    side.check();
    // After identify, the 1 MiB limit: 64 MiB of spaces in about 64 KiB, in fragments.
    let mut ws = RawWs::open(b.listener("ws"), &["permessage-deflate"]);
    ws.send(0xc1, &deflate(&identify("alice", "alice-pw")));
    assert_eq!(ws.json().0["header"]["status"], "ok");
    let bomb = deflate(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 128 * 1024, "{} bytes", bomb.len());
    let (a, rest) = bomb.split_at(bomb.len() / 2);
    ws.send(0x41, a);
    ws.send(0x80, rest);
    let (error, _) = ws.json();
    assert_eq!(error["data"]["code"], "frame_too_large", "{error}");
    assert_eq!(
        error["data"]["error"],
        "compressed frame inflates to over the limit of 1048576 bytes"
    );
    assert_eq!(ws.close_code(), (1009, "frame_too_large".into()));
    side.check();
}

#[test]
fn rsv1_where_it_means_nothing_and_bad_payloads_close_the_connection() {
    let b = broker();
    let mut side = Side::new(&b, "bob", "bob-pw");
    let open = || RawWs::open(b.listener("ws"), &["permessage-deflate"]);
    // RSV1 on a control frame: 1002 (RFC 7692 §6.1).
    let mut ws = open();
    ws.send(0xc9, b"ping");
    assert_eq!(ws.close_code().0, 1002);
    // RSV1 on a continuation frame: 1002.
    let mut ws = open();
    let packed = deflate(&chat_message("f"));
    ws.send(0x41, &packed[..10]);
    ws.send(0xc0, &packed[10..]);
    assert_eq!(ws.close_code().0, 1002);
    // Not DEFLATE: the JSON error, then the close.
    let mut ws = open();
    ws.send(0xc1, &[0xff, 0xff, 0xff, 0xff]);
    let (error, _) = ws.json();
    assert_eq!(
        error["data"],
        json!({"error":"compressed frame is not a valid DEFLATE stream","code":"invalid_message"})
    );
    assert_eq!(ws.close_code(), (1008, "invalid_message".into()));
    // A compressed text message that is not UTF-8 once inflated: invalid_utf8 and 1007.
    let mut ws = open();
    ws.send(0xc1, &deflate(b"{\"a\":\"\xff\xfe\"}"));
    let (error, _) = ws.json();
    assert_eq!(error["data"]["code"], "invalid_utf8", "{error}");
    assert_eq!(ws.close_code(), (1007, "invalid_utf8".into()));
    side.check();
}

/// Python `websockets` (a client nobody here wrote, compression on by default) through a
/// socket that counts the bytes: the handshake's answer, and 2 KB echoes both ways compressed.
const PYTHON_CLIENT: &str = r#"
import json, socket, sys
from websockets.sync.client import connect

class Counting(socket.socket):
    sent = got = 0
    def sendall(self, data, *a):
        Counting.sent += len(data)
        return super().sendall(data, *a)
    def recv(self, n, *a):
        data = super().recv(n, *a)
        Counting.got += len(data)
        return data

host, port = sys.argv[1].rsplit(":", 1)
sock = Counting(socket.AF_INET, socket.SOCK_STREAM)
sock.connect((host, int(port)))
text = "Are we still meeting at the station at nine? I will bring the maps. " * 28
with connect(f"ws://{sys.argv[1]}/", sock=sock) as ws:
    extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
    ws.send(json.dumps({"header": {"identify": {"type": "client", "authentication": {"username": "alice", "password": "alice-pw"}}}}))
    login = json.loads(ws.recv(timeout=20))
    before = (Counting.sent, Counting.got)
    echoes = []
    for i in range(3):
        msg = {"header": {"scope": "client", "id": f"e{i}"}, "payload": {"type": "echo", "data": {"room": "general", "from": "alice", "text": text}}}
        ws.send(json.dumps(msg))
        reply = json.loads(ws.recv(timeout=20))
        echoes.append(reply["header"]["id"] if reply["data"]["text"] == text else "wrong")
    print(json.dumps({"extensions": extensions, "login": login["header"]["status"], "echoes": echoes,
                      "sent": Counting.sent - before[0], "got": Counting.got - before[1], "size": len(json.dumps(msg))}))
"#;

#[test]
fn python_websockets_echoes_compressed_both_ways() {
    let b = broker();
    let python = repo().join(".venv/bin/python");
    let out = std::process::Command::new(&python)
        .args(["-c", PYTHON_CLIENT, &b.listener("ws").to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result["extensions"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert_eq!(result["login"], "ok");
    assert_eq!(result["echoes"], json!(["e0", "e1", "e2"]));
    let size = result["size"].as_u64().unwrap();
    assert!(size > 2000, "{result}");
    // Three 2 KB messages each way in under a quarter of their size: compressed both ways.
    for way in ["sent", "got"] {
        let bytes = result[way].as_u64().unwrap();
        assert!(bytes < 3 * size / 4, "{way}: {bytes} bytes for 3 × {size}");
    }
}
