//! The fast lane against the full path: wherever it answers, the full path accepts the frame and
//! gives the same value; whatever the full path refuses, the fast lane leaves to it.

use serde_json::Value;

use super::*;
use crate::protocol::handler::parse_handler_message_full;
use crate::protocol::message::{Inbound, parse_inbound_full};

/// Run both readers on a client frame; `Some(true)` when the fast lane read it.
fn client_agrees(text: &str) -> bool {
    let fast = client_message(text);
    let full = parse_inbound_full(text.as_bytes());
    match (fast, full) {
        (None, _) => false,
        (Some(fast), Ok(Inbound::Message(full))) => {
            assert_eq!(fast.id, full.id, "id of {text}");
            assert_eq!(fast.scope, full.scope, "scope of {text}");
            assert_eq!(fast.payload, full.payload, "payload of {text}");
            assert_eq!(fast.user, full.user, "user of {text}");
            assert!(full.authentication.is_none(), "{text}");
            true
        }
        (Some(fast), full) => panic!("fast lane read {text} as {fast:?}; full path: {full:?}"),
    }
}

fn handler_agrees(text: &str) -> bool {
    let fast = handler_message(text);
    let full = parse_handler_message_full(text.as_bytes());
    match (fast, full) {
        (None, _) => false,
        (Some(fast), Ok(full)) => {
            assert_eq!(fast.status, full.status, "status of {text}");
            assert_eq!(fast.status_code, full.status_code, "{text}");
            assert_eq!(fast.command, full.command, "command of {text}");
            assert_eq!(fast.request, full.request, "request of {text}");
            assert_eq!(fast.id, full.id, "id of {text}");
            assert_eq!(fast.payload, full.payload, "payload of {text}");
            assert_eq!(fast.replies, full.replies, "replies of {text}");
            assert_eq!(fast.store, full.store, "store of {text}");
            true
        }
        (Some(fast), Err(e)) => panic!("fast lane read {text} as {fast:?}; full path: {e}"),
    }
}

#[test]
fn the_first_special_byte_of_a_word_is_found_in_any_lane() {
    let is_special = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
    for byte in 0..=255u8 {
        for lane in 0..8 {
            for (fill, later) in [(b'a', b'a'), (0x7f, b'"'), (0xc3, 0), (b' ', b'\\')] {
                // `fill` before the lane, `later` after it.
                let mut word = [fill; 8];
                word[lane] = byte;
                word[lane + 1..].fill(later);
                let mask = special(u64::from_le_bytes(word));
                let first = word.iter().position(|&b| is_special(b));
                let found = (mask != 0).then(|| (mask.trailing_zeros() / 8) as usize);
                assert_eq!(found, first, "{word:x?}");
            }
        }
    }
}

#[test]
fn common_frames_take_the_fast_lane() {
    for text in [
        r#"{"header":{"scope":"client","id":"42"},"payload":{"type":"echo","data":{"hello":"world"}}}"#,
        r#"{"payload":{"data":[1,-2.5,0,true,false,null,"a\nb\"c"],"type":"x.y-z_1"},"header":{"id":"","scope":"client"}}"#,
        " { \"header\" : { \"scope\" : \"client\" } , \"payload\" : { \"type\" : \"t\" , \"data\" : null } } \n",
        r#"{"header":{"scope":"server"},"payload":{"type":"t","data":{"":{},"a":[],"b":[[]]}}}"#,
        r#"{"header":{"scope":"client","id":"7","user":"bob"},"payload":{"type":"echo"}}"#,
    ] {
        assert!(client_agrees(text), "{text}");
    }
    let as_bob = r#"{"header":{"user":"bob","scope":"client"},"payload":{"type":"echo"}}"#;
    assert_eq!(client_message(as_bob).unwrap().user.as_deref(), Some("bob"));
    let twice = r#"{"header":{"user":"bob","scope":"client","user":"eve"},"payload":{"type":"e"}}"#;
    assert!(client_message(twice).is_none());
    assert!(parse_inbound_full(twice.as_bytes()).is_err());
    for text in [
        r#"{"header":{"status":"ok","request":"17"},"payload":{"type":"echo","data":"x"}}"#,
        r#"{"payload":{"type":"t"},"header":{"command":"reply","id":"p","request":"1","status":"error"}}"#,
        r#"{"header":{"status":"ok"}}"#,
        r#"{"header":{"status":"ok","command":"sendClients","commandData":["a","b"],"request":"3"},"payload":{"type":"t","data":1}}"#,
        r#"{"header":{"status":"ok","command":"sendServers","commandData":[],"request":"3"},"payload":{"type":"t"}}"#,
        r#"{"header":{"replies":true,"status":"ok","command":"sendServers","commandData":["b"],"request":"3"},"payload":{"type":"t"}}"#,
        r#"{"header":{"status":"ok","command":"sendServers","commandData":["b"],"replies":false}}"#,
        r#"{"header":{"status":"ok","command":"sendClients","commandData":["off"],"id":"7","store":true},"payload":{"type":"t","data":1}}"#,
        r#"{"header":{"store":false,"status":"ok","command":"sendClients","commandData":["a"],"request":"3"},"payload":{"type":"t"}}"#,
    ] {
        assert!(handler_agrees(text), "{text}");
    }
}

#[test]
fn unusual_frames_are_left_to_the_full_path() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let deep_objects = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    let client = |data: &str| {
        format!(
            r#"{{"header":{{"scope":"client","id":"1"}},"payload":{{"type":"echo","data":{data}}}}}"#
        )
    };
    let keys = |n: usize| {
        let keys: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{i}")).collect();
        format!("{{{}}}", keys.join(","))
    };
    // Accepted by the full path, but not read here.
    for text in [
        client(r#""\u00e9""#),
        client("1e5"),
        client(&"1".repeat(MAX_NUMBER + 1)),
        client(&keys(INLINE_KEYS + 1)),
        client(r#"{"\u0061":1}"#),
        r#"{"header":{"scope":"client","id":"\u0031"},"payload":{"type":"echo"}}"#.into(),
        r#"{"header":{"scope":"client","id":null},"payload":{"type":"echo"}}"#.into(),
        r#"{"header":{"scope":"client","authentication":{"username":"a","password":"b"}},"payload":{"type":"echo"}}"#.into(),
    ] {
        assert!(client_message(&text).is_none(), "{text}");
        assert!(parse_inbound_full(text.as_bytes()).is_ok(), "{text}");
    }
    // At the limit both read it; one deeper is refused by the full path and left to it here.
    assert!(client_agrees(&client(&deep(MAX_DEPTH - 2))));
    assert!(client_agrees(&client(&deep_objects(MAX_DEPTH - 2))));
    assert!(client_agrees(&client(&keys(INLINE_KEYS))));
    assert!(client_agrees(&client(&"1".repeat(MAX_NUMBER))));
    for text in [
        client(&deep(MAX_DEPTH - 1)),
        client(&deep_objects(MAX_DEPTH - 1)),
        client(r#"{"a":1,"a":2}"#),
        client(r#"[{"b":{"c":1,"c":1}}]"#),
        client("[1,]"),
        client("{\"a\":1,}"),
        client("01"),
        client("1."),
        client("-"),
        client("tru"),
        client("\"a\tb\""),
        client(r#""\x""#),
        client("[1 2]"),
        r#"{"header":{"scope":"client","id":"1","id":"1"},"payload":{"type":"echo"}}"#.into(),
        r#"{"header":{"scope":"client"},"payload":{"type":"echo","type":"echo"}}"#.into(),
        r#"{"header":{"scope":"client"},"header":{"scope":"client"},"payload":{"type":"echo"}}"#
            .into(),
        r#"{"header":{"scope":"client"},"payload":{"type":"echo"},"extra":1}"#.into(),
        r#"{"header":{"scope":"nobody"},"payload":{"type":"echo"}}"#.into(),
        r#"{"header":{"scope":"client"},"payload":{"type":"bad type"}}"#.into(),
        r#"{"header":{"scope":"client"},"payload":{"type":""}}"#.into(),
        r#"{"header":{"scope":"client"}}"#.into(),
        r#"{"payload":{"type":"echo"}}"#.into(),
        format!(
            r#"{{"header":{{"scope":"client","id":"{}"}},"payload":{{"type":"e"}}}}"#,
            "i".repeat(MAX_ID_LEN + 1)
        ),
        r#"{"header":{"scope":"client"},"payload":{"type":"echo"}} x"#.into(),
        r#"[{"header":{"scope":"client"},"payload":{"type":"echo"}}]"#.into(),
    ] {
        assert!(client_message(&text).is_none(), "{text}");
        assert!(parse_inbound_full(text.as_bytes()).is_err(), "{text}");
    }
    for text in [
        r#"{"header":{"status":"0","request":"1"},"payload":{"type":"t"}}"#,
        r#"{"header":{"status":"ok","command":"sendClients","commandData":["a"],"replies":true},"payload":{"type":"t"}}"#,
        r#"{"header":{"status":"ok","command":"sendServers","commandData":"b"},"payload":{"type":"t"}}"#,
        r#"{"header":{"status":"ok","command":"sendServers"},"payload":{"type":"t"}}"#,
        r#"{"header":{"status":"ok","replies":false},"payload":{"type":"t"}}"#,
        r#"{"header":{"status":"ok","command":"sendServers","commandData":["b"],"replies":1},"payload":{"type":"t"}}"#,
        r#"{"header":{"status":"ok","command":"sendHandler","commandData":["b"]},"payload":{"type":"t"}}"#,
        r#"{"header":{"status":"ok","status":"ok"}}"#,
        r#"{"header":{"status":"ok","request":1}}"#,
        r#"{"header":{"status":"ok","command":"reply","commandData":"x"}}"#,
        r#"{"header":{"status":"ok"},"payload":{"type":"t","data":{"z":0,"z":0}}}"#,
        r#"{"header":{"request":"1"},"payload":{"type":"t"}}"#,
        r#"{"header":{"status":"ok","store":true},"payload":{"type":"t"}}"#,
        r#"{"header":{"status":"ok","command":"sendServers","commandData":["b"],"store":true}}"#,
        r#"{"header":{"status":"ok","command":"sendClients","commandData":["a"],"store":1}}"#,
        r#"{"header":{"status":"ok","command":"sendClients","commandData":["a"],"store":true,"store":true}}"#,
    ] {
        assert!(handler_message(text).is_none(), "{text}");
    }
}

#[test]
fn every_vector_gets_the_same_answer() {
    let doc: Value =
        serde_json::from_str(include_str!("../../../protocol/vectors/messages.json")).unwrap();
    let mut fast = 0;
    for case in doc["cases"].as_array().unwrap() {
        let text = case["json"].as_str().unwrap();
        let read = match case["direction"].as_str().unwrap() {
            "client_to_server" => client_agrees(text),
            "handler_to_server" => handler_agrees(text),
            _ => continue,
        };
        if read {
            assert_eq!(case["valid"], true, "{}", case["name"]);
            fast += 1;
        }
    }
    assert!(fast >= 5, "only {fast} vectors took the fast lane");
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// A JSON-like value: mostly valid, sometimes not (repeated keys, odd numbers and strings, deep
/// nesting), so both readers see every case.
fn value(rng: &mut Rng, depth: usize, out: &mut String) {
    const ATOMS: &[&str] = &[
        "0",
        "-0",
        "17",
        "-3.25",
        "1e3",
        "01",
        "1.",
        "-",
        "123456789012345678901234567890",
        "true",
        "false",
        "null",
        "nul",
        "\"\"",
        "\"plain\"",
        "\"a\\nb\"",
        "\"q\\\"\"",
        "\"\\u00e9\"",
        "\"\\x\"",
        "\"€😀\"",
        "\"tab\there\"",
        // Long enough for the eight-at-a-time scan, with the special byte in various lanes.
        "\"0123456789abcdefghijklmnopqrstuvwxyz\"",
        "\"0123456789abcdef\\nghijklmnop\"",
        "\"0123456789a\\\"bcdefghij\"",
        "\"0123456789abcd\u{1}efghij\"",
        "\"0123456789abcdefghijklm\\u0041nop\"",
        "\"€€€€€€€€€€😀😀😀😀\"",
    ];
    const KEYS: &[&str] = &[
        "\"a\"",
        "\"b\"",
        "\"\"",
        "\"type\"",
        "\"a\\u0062\"",
        "\"é\"",
    ];
    match rng.below(if depth > 70 { 1 } else { 6 }) {
        0..=2 => out.push_str(rng.pick(ATOMS)),
        3 => {
            out.push('[');
            for i in 0..rng.below(4) {
                if i > 0 {
                    out.push(',');
                }
                value(rng, depth + 1, out);
            }
            out.push_str(rng.pick(&["]", "]", "]", ",]"]));
        }
        4 => {
            out.push('{');
            for i in 0..rng.below(5) {
                if i > 0 {
                    out.push_str(rng.pick(&[",", ",", " , "]));
                }
                out.push_str(rng.pick(KEYS));
                out.push(':');
                value(rng, depth + 1, out);
            }
            out.push('}');
        }
        _ => {
            // A run of nesting around the limit, of arrays or of objects.
            let n = 58 + rng.below(8);
            if rng.below(2) == 0 {
                out.push_str(&"[".repeat(n));
                out.push_str(&"]".repeat(n));
            } else {
                out.push_str(&"{\"k\":".repeat(n));
                out.push('0');
                out.push_str(&"}".repeat(n));
            }
        }
    }
}

fn client_frame(rng: &mut Rng) -> String {
    let mut data = String::new();
    value(rng, 2, &mut data);
    let mut header = vec![format!(
        "\"scope\":{}",
        rng.pick(&["\"client\"", "\"server\"", "\"x\"", "5"])
    )];
    if rng.below(3) > 0 {
        header.push(format!(
            "\"id\":{}",
            rng.pick(&["\"1\"", "\"abc\"", "\"\\u0031\"", "7", "null"])
        ));
    }
    if rng.below(10) == 0 {
        header.push(header[0].clone());
    }
    let mut payload = vec![format!(
        "\"type\":{}",
        rng.pick(&["\"echo\"", "\"a.b-c_d\"", "\"bad type\"", "\"\"", "1"])
    )];
    if rng.below(4) > 0 {
        payload.push(format!("\"data\":{data}"));
    }
    if rng.below(2) == 0 {
        header.reverse();
        payload.reverse();
    }
    let mut parts = [
        format!("\"header\":{{{}}}", header.join(",")),
        format!("\"payload\":{{{}}}", payload.join(",")),
    ];
    if rng.below(2) == 0 {
        parts.reverse();
    }
    format!("{{{}}}", parts.join(rng.pick(&[",", " ,\n"])))
}

fn handler_frame(rng: &mut Rng) -> String {
    let mut data = String::new();
    value(rng, 2, &mut data);
    let mut header = vec![format!(
        "\"status\":{}",
        rng.pick(&["\"ok\"", "\"error\"", "\"0\"", "\"maybe\""])
    )];
    for (field, values) in [
        ("request", &["\"12\"", "\"x\"", "3"][..]),
        ("id", &["\"p1\"", "null"][..]),
        (
            "command",
            &[
                "\"reply\"",
                "\"sendAll\"",
                "\"sendClients\"",
                "\"sendServers\"",
            ][..],
        ),
        (
            "commandData",
            &["[\"a\"]", "[]", "\"b\"", "[\"a\",\"b\"]"][..],
        ),
        ("replies", &["true", "false", "null"][..]),
        ("store", &["true", "false", "null"][..]),
    ] {
        if rng.below(2) == 0 {
            header.push(format!("\"{field}\":{}", rng.pick(values)));
        }
    }
    if rng.below(2) == 0 {
        header.reverse();
    }
    let payload = match rng.below(4) {
        0 => String::new(),
        1 => ",\"payload\":{\"type\":\"t\"}".into(),
        _ => format!(",\"payload\":{{\"type\":\"t\",\"data\":{data}}}"),
    };
    format!("{{\"header\":{{{}}}{payload}}}", header.join(","))
}

/// Change one byte, drop one, or cut the text short (kept valid UTF-8).
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let at = rng.below(bytes.len());
    match rng.below(3) {
        0 => {
            const BYTES: &[u8] = b"{}[],:\"\\ 0a-";
            bytes[at] = BYTES[rng.below(BYTES.len())];
        }
        1 => {
            bytes.remove(at);
        }
        _ => bytes.truncate(at),
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn generated_frames_get_the_same_answer() {
    let mut rng = Rng(0x5eed_b357_e4d0_0001);
    let (mut client_fast, mut handler_fast, mut storing_fast) = (0, 0, 0);
    for round in 0..20_000 {
        let client = client_frame(&mut rng);
        let handler = handler_frame(&mut rng);
        client_fast += usize::from(client_agrees(&client));
        let fast = handler_agrees(&handler);
        handler_fast += usize::from(fast);
        storing_fast += usize::from(fast && handler.contains("\"store\":true"));
        if round % 2 == 0 {
            client_agrees(&mutate(&mut rng, &client));
            handler_agrees(&mutate(&mut rng, &handler));
        }
    }
    // The generator reaches the fast lane often enough for the comparison to mean something.
    assert!(client_fast > 1_000, "{client_fast}");
    assert!(handler_fast > 400, "{handler_fast}");
    assert!(storing_fast > 5, "{storing_fast}");
}

#[test]
fn plain_value_is_the_strict_check() {
    use crate::protocol::validate::check_at;
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        let mut text = String::new();
        value(&mut rng, 2, &mut text);
        if plain_value(&text, 2) {
            assert!(check_at(&text, 2).is_ok(), "{text}");
        }
    }
}
