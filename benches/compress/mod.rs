//! `compress`: what the feature `compress` costs and saves for a chat-like JSON message of
//! about 2 KB, echoed by the Python echo handler over TCP: bytes on the wire per round trip (the
//! client's frames up and the server's down, length prefixes included) and the server's CPU
//! time per round trip, with a session that negotiated `compress` (its requests compressed by
//! the client with DEFLATE level 1, the server's level) and one that did not.
//!
//! The same over WebSocket: a session without extensions, and one that negotiated
//! permessage-deflate (RFC 7692; the client compresses its messages at level 1, without
//! context takeover, as the server does), frame headers and the client's masks included.
//!
//! A fresh server per run, the kinds alternating, 16 requests in flight, `BENCH_MESSAGES`
//! (20000) round trips per run (the CPU clock ticks at 10 ms), `BENCH_RUNS` (3) runs, medians.
//! Every reply is checked.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use flate2::{
    Compress, Compression, Decompress, FlushCompress, FlushDecompress, read::DeflateDecoder,
    write::DeflateEncoder,
};
use serde_json::{Value, json};

use crate::common::Broker;

const WINDOW: usize = 16;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A chat message of about 2 KB: a room, a sender, and text of several sentences.
fn message(n: usize) -> Vec<u8> {
    let sentences = [
        "Are we still meeting at the station at nine tomorrow? ",
        "I will bring the maps and the tickets for everyone. ",
        "The weather should be fine, but take a coat just in case. ",
        "Anna says she might be a little late, so wait for her at the cafe. ",
    ];
    let names = [
        "Anna", "Bruno", "Chen", "Dagny", "Emeka", "Farah", "Goran", "Hiro",
    ];
    let mut text = String::new();
    let mut i = n;
    while text.len() < 1900 {
        // Sentences, names and numbers that vary, as in a chat log pasted into one message.
        let k = i.wrapping_mul(2_654_435_761) >> 7;
        let line = format!(
            "[{:02}:{:02}] {}: {}({} of {}) ",
            k % 24,
            (k / 24) % 60,
            names[k % names.len()],
            sentences[(k / 7) % sentences.len()],
            k % 97,
            k % 1013
        );
        text.push_str(&line);
        i += 1;
    }
    let msg = json!({"header":{"scope":"client","id":n.to_string()},"payload":{"type":"echo","data":{"room":"general","from":"alice","sent":1796421600 + n,"text":text}}});
    serde_json::to_vec(&msg).unwrap()
}

fn deflate(body: &[u8]) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(vec![0u8], Compression::new(1));
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

fn write_frame(s: &mut TcpStream, body: &[u8]) -> usize {
    let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).unwrap();
    bytes.len()
}

/// One frame: its body (inflated if compressed) and its bytes on the wire.
fn read_frame(s: &mut TcpStream) -> (Vec<u8>, usize) {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let wire = 4 + body.len();
    if body.first() == Some(&0) {
        let mut out = Vec::new();
        DeflateDecoder::new(&body[1..])
            .read_to_end(&mut out)
            .unwrap();
        body = out;
    }
    (body, wire)
}

/// A permessage-deflate message: level 1, sync flush, the tail cut off (RFC 7692 §7.2.1).
fn deflate_message(body: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(1), false);
    let mut out = Vec::with_capacity(body.len() + 64);
    c.compress_vec(body, &mut out, FlushCompress::Sync).unwrap();
    out.truncate(out.len() - 4);
    out
}

/// A masked client frame (text, FIN, RSV1 if `compressed`) around `payload`.
fn ws_frame(payload: &[u8], compressed: bool) -> Vec<u8> {
    let mut frame = vec![if compressed { 0xc1 } else { 0x81 }];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    }
    let key = [0x37u8, 0xfa, 0x21, 0x3d];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// One server message: its body (inflated if RSV1) and its bytes on the wire.
fn ws_read(s: &mut TcpStream) -> (Vec<u8>, usize) {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    let (len, extra) = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            (usize::from(u16::from_be_bytes(l)), 2)
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).unwrap();
            (u64::from_be_bytes(l) as usize, 8)
        }
        n => (usize::from(n), 0),
    };
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    assert_eq!(head[0] & 0x0f, 1, "a text message");
    if head[0] & 0x40 != 0 {
        body.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(64 * 1024);
        Decompress::new(false)
            .decompress_vec(&body, &mut out, FlushDecompress::Sync)
            .unwrap();
        return (out, 2 + extra + len);
    }
    (body, 2 + extra + len)
}

/// The transports and sessions compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// TCP, no features.
    Tcp,
    /// TCP with the feature `compress`.
    TcpCompress,
    /// WebSocket, no extension.
    Ws,
    /// WebSocket with permessage-deflate.
    WsDeflate,
}

impl Kind {
    fn compressed(self) -> bool {
        matches!(self, Kind::TcpCompress | Kind::WsDeflate)
    }

    fn ws(self) -> bool {
        matches!(self, Kind::Ws | Kind::WsDeflate)
    }
}

/// Open the session of `kind` and log in; a function that frames a request for it.
fn open(b: &Broker, kind: Kind) -> TcpStream {
    let addr = if kind.ws() { b.listener("ws") } else { b.addr };
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    if kind.ws() {
        let offer = if kind == Kind::WsDeflate {
            "Sec-WebSocket-Extensions: permessage-deflate\r\n"
        } else {
            ""
        };
        write!(
            s,
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(
            head.contains("permessage-deflate"),
            kind == Kind::WsDeflate,
            "{head}"
        );
    }
    let mut identify =
        json!({"type":"client","authentication":{"username":"alice","password":"pw"}});
    if kind == Kind::TcpCompress {
        identify["features"] = json!(["compress"]);
    }
    let body = serde_json::to_vec(&json!({"header":{"identify":identify}})).unwrap();
    let reply = if kind.ws() {
        s.write_all(&ws_frame(&body, false)).unwrap();
        ws_read(&mut s).0
    } else {
        write_frame(&mut s, &body);
        read_frame(&mut s).0
    };
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    s
}

/// One run: (bytes per round trip, server CPU µs per round trip, compressed replies).
fn run(kind: Kind, messages: usize) -> (f64, f64, usize) {
    let tables = format!(
        "[handlers.echo]\n{}\nprocesses = 2\n[[listeners]]\nname = \"ws\"\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\n",
        crate::common::handler("python3", "handlers/python/echo.py")
    );
    let b = Broker::launch("bench", "127.0.0.1:0", "", &tables, &[("alice", "pw")]);
    let mut s = open(&b, kind);
    let bodies: Vec<Vec<u8>> = (0..messages)
        .map(|n| {
            let body = message(n);
            match kind {
                Kind::Tcp => body,
                Kind::TcpCompress => deflate(&body),
                Kind::Ws => ws_frame(&body, false),
                Kind::WsDeflate => ws_frame(&deflate_message(&body), true),
            }
        })
        .collect();
    let cpu_before = crate::cpu_us(b.pid());
    let (mut wire, mut sent, mut packed) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    let send = |s: &mut TcpStream, body: &[u8]| {
        if kind.ws() {
            s.write_all(body).unwrap();
            body.len()
        } else {
            write_frame(s, body)
        }
    };
    while sent < WINDOW.min(messages) {
        wire += send(&mut s, &bodies[sent]);
        sent += 1;
    }
    // Two handler processes: replies may come out of order.
    let mut seen = vec![false; messages];
    for _ in 0..messages {
        let (body, bytes) = if kind.ws() {
            ws_read(&mut s)
        } else {
            read_frame(&mut s)
        };
        wire += bytes;
        packed += usize::from(bytes < 1200);
        let reply: Value = serde_json::from_slice(&body).unwrap();
        let id: usize = reply["header"]["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            reply["data"],
            serde_json::from_slice::<Value>(&message(id)).unwrap()["payload"]["data"]
        );
        assert!(!std::mem::replace(&mut seen[id], true), "{id} twice");
        if sent < messages {
            wire += send(&mut s, &bodies[sent]);
            sent += 1;
        }
    }
    let cpu = crate::cpu_us(b.pid()).saturating_sub(cpu_before);
    eprintln!(
        "{kind:?}: {messages} round trips in {:?}",
        started.elapsed()
    );
    (
        wire as f64 / messages as f64,
        cpu as f64 / messages as f64,
        packed,
    )
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn compress() -> Value {
    let messages = env("BENCH_MESSAGES", 20000);
    let runs = env("BENCH_RUNS", 3);
    let plain_size = 4 + message(0).len();
    let packed_size = 4 + deflate(&message(0)).len();
    let ws_plain_size = ws_frame(&message(0), false).len();
    let ws_packed_size = ws_frame(&deflate_message(&message(0)), true).len();
    let mut figures = serde_json::Map::new();
    let kinds = [Kind::Tcp, Kind::TcpCompress, Kind::Ws, Kind::WsDeflate];
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); kinds.len()];
    for round in 0..runs {
        for (i, kind) in kinds.iter().enumerate() {
            let (bytes, cpu, compressed) = run(*kind, messages);
            eprintln!(
                "round {round} {kind:?}: {bytes:.0} bytes and {cpu:.1} µs server CPU per round trip, {compressed} replies compressed"
            );
            assert_eq!(compressed > 0, kind.compressed(), "{kind:?}");
            results[i].0.push(bytes);
            results[i].1.push(cpu);
        }
    }
    figures.insert("message_frame_bytes".into(), json!(plain_size));
    figures.insert("message_frame_bytes_compressed".into(), json!(packed_size));
    figures.insert("ws_message_frame_bytes".into(), json!(ws_plain_size));
    figures.insert(
        "ws_message_frame_bytes_deflated".into(),
        json!(ws_packed_size),
    );
    for (name, (bytes, cpu)) in ["plain", "compressed", "ws_plain", "ws_deflate"]
        .iter()
        .zip(&results)
    {
        figures.insert(format!("{name}_wire_bytes_per_rtt"), json!(median(bytes)));
        figures.insert(format!("{name}_server_cpu_us_per_rtt"), json!(median(cpu)));
        figures.insert(format!("{name}_cpu_runs"), json!(cpu));
    }
    Value::Object(figures)
}
