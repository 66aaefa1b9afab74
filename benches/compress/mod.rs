//! `compress`: what the feature `compress` costs and saves for a chat-like JSON message of
//! about 2 KB, echoed by the Python echo handler over TCP: bytes on the wire per round trip (the
//! client's frames up and the server's down, length prefixes included) and the server's CPU
//! time per round trip, with a session that negotiated `compress` (its requests compressed by
//! the client with DEFLATE level 1, the server's level) and one that did not.
//!
//! A fresh server per run, the two kinds alternating, 16 requests in flight, `BENCH_MESSAGES`
//! (20000) round trips per run (the CPU clock ticks at 10 ms), `BENCH_RUNS` (3) runs, medians.
//! Every reply is checked.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use flate2::{Compression, read::DeflateDecoder, write::DeflateEncoder};
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

/// One run: (bytes per round trip, server CPU µs per round trip, compressed replies).
fn run(compress: bool, messages: usize) -> (f64, f64, usize) {
    let tables = format!(
        "[handlers.echo]\n{}\nprocesses = 2\n",
        crate::common::handler("python3", "handlers/python/echo.py")
    );
    let b = Broker::launch("bench", "127.0.0.1:0", "", &tables, &[("alice", "pw")]);
    let mut s = TcpStream::connect(b.addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut identify =
        json!({"type":"client","authentication":{"username":"alice","password":"pw"}});
    if compress {
        identify["features"] = json!(["compress"]);
    }
    write_frame(
        &mut s,
        &serde_json::to_vec(&json!({"header":{"identify":identify}})).unwrap(),
    );
    let (reply, _) = read_frame(&mut s);
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    let bodies: Vec<Vec<u8>> = (0..messages)
        .map(|n| {
            let body = message(n);
            if compress { deflate(&body) } else { body }
        })
        .collect();
    let cpu_before = crate::cpu_us(b.pid());
    let (mut wire, mut sent, mut packed) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    while sent < WINDOW.min(messages) {
        wire += write_frame(&mut s, &bodies[sent]);
        sent += 1;
    }
    // Two handler processes: replies may come out of order.
    let mut seen = vec![false; messages];
    for _ in 0..messages {
        let (body, bytes) = read_frame(&mut s);
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
            wire += write_frame(&mut s, &bodies[sent]);
            sent += 1;
        }
    }
    let cpu = crate::cpu_us(b.pid()).saturating_sub(cpu_before);
    eprintln!(
        "compress={compress}: {messages} round trips in {:?}",
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
    let mut figures = serde_json::Map::new();
    let (mut plain, mut packed) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for round in 0..runs {
        for compress in [false, true] {
            let (bytes, cpu, compressed) = run(compress, messages);
            eprintln!(
                "round {round} compress={compress}: {bytes:.0} bytes and {cpu:.1} µs server CPU per round trip, {compressed} replies compressed"
            );
            let into = if compress { &mut packed } else { &mut plain };
            into.0.push(bytes);
            into.1.push(cpu);
        }
    }
    figures.insert("message_frame_bytes".into(), json!(plain_size));
    figures.insert("message_frame_bytes_compressed".into(), json!(packed_size));
    figures.insert("plain_wire_bytes_per_rtt".into(), json!(median(&plain.0)));
    figures.insert(
        "compressed_wire_bytes_per_rtt".into(),
        json!(median(&packed.0)),
    );
    figures.insert(
        "plain_server_cpu_us_per_rtt".into(),
        json!(median(&plain.1)),
    );
    figures.insert(
        "compressed_server_cpu_us_per_rtt".into(),
        json!(median(&packed.1)),
    );
    figures.insert("plain_cpu_runs".into(), json!(plain.1));
    figures.insert("compressed_cpu_runs".into(), json!(packed.1));
    Value::Object(figures)
}
