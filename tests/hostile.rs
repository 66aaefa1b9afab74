//! The bad-input catalogue (protocol/PROTOCOL.md, "Bad input"): one test per row, each checking the
//! exact reply or close the offender gets, while a well-behaved client on the side keeps being
//! served and sees nothing it did not ask for, and the daemon stays up.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use besterd::client::Client;
use besterd::protocol::encode_frame;
use common::{Broker, DEADLINE, Side, code, eventually, handler};
use serde_json::{Value, json};

/// A broker for hostile tests: the Python echo handler and the faulty test handler, short timeouts.
fn broker(server_keys: &str) -> Broker {
    let handlers = format!(
        "[handlers.echo]\n{}\n[handlers.faulty]\n{}\n",
        handler("python3", "handlers/python/echo.py"),
        handler("python3", "tests/handlers/faulty.py"),
    );
    let keys = format!("request_timeout_ms = 1500\n{server_keys}");
    Broker::start_with(
        &keys,
        &handlers,
        &[
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
            ("mallory", "mallory-pw"),
        ],
    )
}

/// Run one row: `offend` misbehaves; before and after, the side client is served and the daemon up.
fn row(server_keys: &str, offend: impl FnOnce(&mut Broker)) -> Broker {
    let mut broker = broker(server_keys);
    let mut side = Side::new(&broker, "alice", "alice-pw");
    offend(&mut broker);
    side.check();
    assert!(
        broker.is_running(),
        "the daemon must stay up:\n{}",
        broker.log()
    );
    broker
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(body, &mut out);
    out
}

/// The next frame, which must be an error with this code and text prefix.
fn expect_error(client: &mut Client, want_code: &str, text_prefix: &str) -> Value {
    let reply = client.recv().unwrap().expect("an error reply, not a close");
    assert_eq!(reply["header"]["status"], "error", "{reply}");
    assert_eq!(code(&reply), want_code, "{reply}");
    let text = reply["data"]["error"].as_str().unwrap();
    assert!(
        text.starts_with(text_prefix),
        "error text {text:?} should start with {text_prefix:?}"
    );
    reply
}

fn expect_closed(client: &mut Client) {
    match client.recv() {
        Ok(None) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection to be closed, got {other:?}"),
    }
}

/// A logged-in connection still answers.
fn expect_open(client: &mut Client) {
    let pong = client
        .request("still-open", "bester.ping", &Value::Null)
        .unwrap();
    assert_eq!(pong["data"], "pong");
}

#[test]
fn truncated_frame_then_close() {
    let broker = row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        let mut bytes = 100u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{\"header\":");
        c.send_raw(&bytes).unwrap();
        c.shutdown_write().unwrap();
        expect_closed(&mut c);
    });
    assert!(
        broker.log().contains("closed mid-frame"),
        "{}",
        broker.log()
    );
}

#[test]
fn zero_length_frame() {
    row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        c.send_raw(&[0, 0, 0, 0]).unwrap();
        expect_error(&mut c, "invalid_json", "EOF while parsing");
        expect_open(&mut c);
        let mut fresh = b.connect();
        fresh.send_raw(&[0, 0, 0, 0]).unwrap();
        expect_error(&mut fresh, "invalid_json", "EOF while parsing");
        expect_closed(&mut fresh);
    });
}

#[test]
fn length_prefix_of_4_gib_before_and_after_identify() {
    row("", |b| {
        let mut fresh = b.connect();
        fresh.send_raw(&[0xff, 0xff, 0xff, 0xff]).unwrap();
        expect_error(
            &mut fresh,
            "frame_too_large",
            "frame of 4294967295 bytes is over the limit of 4096 bytes",
        );
        expect_closed(&mut fresh);
        let mut c = b.login("bob", "bob-pw");
        c.send_raw(&(1_048_577u32).to_le_bytes()).unwrap();
        expect_error(
            &mut c,
            "frame_too_large",
            "frame of 1048577 bytes is over the limit of 1048576 bytes",
        );
        expect_closed(&mut c);
    });
}

#[test]
fn body_not_utf8_not_json_not_an_object() {
    row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        c.send_body(b"{\"a\":\"\xff\xfe\"}").unwrap();
        expect_error(
            &mut c,
            "invalid_utf8",
            "frame body is not valid UTF-8 (at byte 6)",
        );
        c.send_body(b"hello").unwrap();
        expect_error(&mut c, "invalid_json", "expected value");
        c.send_body(b"[1,2]").unwrap();
        expect_error(&mut c, "invalid_message", "a frame must be a JSON object");
        c.send_body(b"\"just a string\"").unwrap();
        expect_error(&mut c, "invalid_message", "a frame must be a JSON object");
        expect_open(&mut c);
    });
}

#[test]
fn duplicate_keys_anywhere_are_refused() {
    row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        c.send_body(br#"{"header":{"scope":"client","id":"1"},"header":{"scope":"client"},"payload":{"type":"echo"}}"#)
            .unwrap();
        expect_error(&mut c, "invalid_message", "duplicate key \"header\"");
        c.send_body(br#"{"header":{"scope":"client","id":"2"},"payload":{"type":"echo","data":{"to":"a","to":"b"}}}"#)
            .unwrap();
        expect_error(&mut c, "invalid_message", "duplicate key \"to\"");
        expect_open(&mut c);
    });
}

#[test]
fn deeply_nested_json_is_refused() {
    row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        let sixty: Value = serde_json::from_str(&nested(60)).unwrap();
        c.message("deep", "echo", &sixty).unwrap();
        assert_eq!(
            c.recv().unwrap().unwrap()["header"]["status"],
            "ok",
            "60 levels are fine"
        );
        let deep = nested(100);
        let body = format!(
            r#"{{"header":{{"scope":"client","id":"x"}},"payload":{{"type":"echo","data":{deep}}}}}"#
        );
        c.send_body(body.as_bytes()).unwrap();
        expect_error(
            &mut c,
            "invalid_message",
            "JSON nested deeper than 64 levels",
        );
        expect_open(&mut c);
    });
}

#[test]
fn missing_fields_wrong_types_unknown_fields() {
    row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        let cases: [(&str, &str, &str); 6] = [
            (
                r#"{"payload":{"type":"echo"}}"#,
                "invalid_message",
                "missing field `header`",
            ),
            (
                r#"{"header":{"scope":"client","id":"1"}}"#,
                "invalid_message",
                "missing field `payload`",
            ),
            (
                r#"{"header":{"scope":5},"payload":{"type":"echo"}}"#,
                "invalid_message",
                "header.scope: invalid type: integer, expected a string",
            ),
            (
                r#"{"header":{"scope":"client","id":7},"payload":{"type":"echo"}}"#,
                "invalid_message",
                "header.id: invalid type: integer, expected a string",
            ),
            (
                r#"{"header":{"scope":"client"},"payload":{"type":"echo","dat":1}}"#,
                "invalid_message",
                "payload: unknown field `dat`",
            ),
            (
                r#"{"header":{"scope":"client"},"payload":{"type":"a b"}}"#,
                "invalid_message",
                "payload.type \"a b\" must be",
            ),
        ];
        for (body, want, text) in cases {
            c.send_body(body.as_bytes()).unwrap();
            expect_error(&mut c, want, text);
        }
        expect_open(&mut c);
    });
}

#[test]
fn unknown_scope_and_unknown_type() {
    row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        c.send_body(br#"{"header":{"scope":"galaxy","id":"1"},"payload":{"type":"echo"}}"#)
            .unwrap();
        expect_error(&mut c, "unknown_scope", "unknown scope \"galaxy\"");
        c.send_body(br#"{"header":{"scope":"server","id":"2"},"payload":{"type":"echo"}}"#)
            .unwrap();
        let reply = expect_error(
            &mut c,
            "unknown_scope",
            "clients send with scope \"client\"",
        );
        assert_eq!(reply["header"]["id"], "2");
        let reply = c.request("3", "nope", &Value::Null).unwrap();
        assert_eq!(code(&reply), "unknown_type");
    });
}

#[test]
fn reserved_builtin_types_misused() {
    row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        let reply = c.request("1", "bester.nope", &Value::Null).unwrap();
        assert_eq!(code(&reply), "reserved_type");
        let reply = c.request("2", "bester.passwd", &json!("x")).unwrap();
        assert_eq!(code(&reply), "invalid_message");
        assert!(
            reply["data"]["error"]
                .as_str()
                .unwrap()
                .starts_with("bad data for \"bester.passwd\"")
        );
        let reply = c
            .request("3", "bester.authenticate", &json!({"username":"bob"}))
            .unwrap();
        assert_eq!(code(&reply), "invalid_message");
        expect_open(&mut c);
    });
}

#[test]
fn identify_twice_and_identify_as_unknown_type() {
    row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        c.send(&json!({"header":{"identify":{"type":"client","authentication":{"username":"bob","password":"bob-pw"}}}}))
            .unwrap();
        expect_error(
            &mut c,
            "already_identified",
            "this connection is already identified",
        );
        expect_open(&mut c);
        let mut fresh = b.connect();
        fresh
            .send(&json!({"header":{"identify":{"type":"robot"}}}))
            .unwrap();
        expect_error(
            &mut fresh,
            "bad_identify_type",
            "unknown identify type \"robot\"",
        );
        expect_closed(&mut fresh);
    });
}

#[test]
fn message_before_identify() {
    row("", |b| {
        let mut fresh = b.connect();
        fresh.message("1", "echo", &Value::Null).unwrap();
        expect_error(&mut fresh, "not_identified", "identify first");
        expect_closed(&mut fresh);
    });
}

#[test]
fn ten_thousand_frames_in_one_write() {
    row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        let mut wire = Vec::new();
        for i in 0..10_000 {
            let f = json!({"header":{"scope":"client","id":i.to_string()},"payload":{"type":"bester.ping"}});
            encode_frame(f.to_string().as_bytes(), &mut wire);
        }
        c.send_raw(&wire).unwrap();
        for i in 0..10_000 {
            let reply = c.recv().unwrap().expect("a reply");
            assert_eq!(
                reply["header"]["id"],
                i.to_string(),
                "answered in order, exactly once"
            );
            assert_eq!(reply["data"], "pong");
        }
    });
}

#[test]
fn one_byte_per_write() {
    row("", |b| {
        let mut stream = TcpStream::connect(b.addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let identify = json!({"header":{"identify":{"type":"client","authentication":{"username":"bob","password":"bob-pw"}}}});
        let message = json!({"header":{"scope":"client","id":"slow"},"payload":{"type":"echo","data":"drip"}});
        let mut bytes = frame(identify.to_string().as_bytes());
        bytes.extend(frame(message.to_string().as_bytes()));
        for byte in &bytes {
            stream.write_all(std::slice::from_ref(byte)).unwrap();
        }
        let mut reader = ReadFrames(stream);
        assert_eq!(reader.next()["data"]["user"], "bob");
        assert_eq!(reader.next()["data"], "drip");
    });
}

/// Minimal frame reader over a raw stream.
struct ReadFrames(TcpStream);

impl ReadFrames {
    fn next(&mut self) -> Value {
        use std::io::Read;
        self.0.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        self.0.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }
}

#[test]
fn client_half_close_still_gets_its_answers() {
    row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        for i in 0..3 {
            c.message(&format!("h{i}"), "echo", &json!(i)).unwrap();
        }
        c.shutdown_write().unwrap();
        let mut ids: Vec<String> = (0..3)
            .map(|_| {
                c.recv().unwrap().expect("answer after half-close")["header"]["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        ids.sort();
        assert_eq!(ids, ["h0", "h1", "h2"]);
        expect_closed(&mut c);
    });
}

#[test]
fn half_close_right_after_messages_answered_at_once() {
    // Answers the server gives without a handler (errors, built-ins) are routed in the same read
    // as the end of the stream: they must still be written before the connection closes.
    row("", |b| {
        for _ in 0..20 {
            let mut c = b.login("bob", "bob-pw");
            let mut wire = Vec::new();
            for i in 0..3 {
                let f = json!({"header":{"scope":"client","id":format!("n{i}")},"payload":{"type":"nope"}});
                encode_frame(f.to_string().as_bytes(), &mut wire);
            }
            c.send_raw(&wire).unwrap();
            c.shutdown_write().unwrap();
            for i in 0..3 {
                let reply = c.recv().unwrap().expect("every answer before the close");
                assert_eq!(reply["header"]["id"], format!("n{i}"));
                assert_eq!(code(&reply), "unknown_type");
            }
            expect_closed(&mut c);
        }
    });
}

#[test]
fn handler_sends_garbage_is_told_and_logged_once() {
    let broker = row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        for i in 0..3 {
            let reply = c
                .request(&format!("g{i}"), "faulty", &json!({"action":"garbage"}))
                .unwrap();
            assert_eq!(
                code(&reply),
                "handler_timeout",
                "the garbage answered nothing: {reply}"
            );
        }
        let reply = c
            .request("after", "faulty", &json!({"action":"echo","x":1}))
            .unwrap();
        assert_eq!(
            reply["header"]["status"], "ok",
            "the handler keeps serving: {reply}"
        );
    });
    let log = broker.log();
    assert_eq!(
        log.matches("sent a bad frame").count(),
        1,
        "logged once:\n{log}"
    );
}

#[test]
fn a_client_flooding_a_stalled_handler_gets_handler_busy_and_the_handler_stays() {
    let broker = row("max_frame_bytes = 16384\nmax_outbound_bytes = 65536", |b| {
        let mut c = b.login("bob", "bob-pw");
        let pid = c
            .request("pid", "faulty", &json!({"action":"pid"}))
            .unwrap()["data"]["pid"]
            .clone();
        // The handler stops reading for a second while 100 requests of 8 KB arrive for it; the
        // client keeps reading its answers (a client that did not would be cut off itself).
        let n = 100;
        let stream = c.into_stream();
        let mut writer = stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let mut wire = Vec::new();
            let stall = json!({"header":{"scope":"client","id":"stall"},"payload":{"type":"faulty","data":{"action":"stall","seconds":1}}});
            encode_frame(stall.to_string().as_bytes(), &mut wire);
            let pad = "x".repeat(8000);
            for i in 0..n {
                let f = json!({"header":{"scope":"client","id":format!("f{i}")},"payload":{"type":"faulty","data":{"action":"echo","pad":pad}}});
                encode_frame(f.to_string().as_bytes(), &mut wire);
            }
            writer.write_all(&wire).unwrap();
        });
        let mut reader = ReadFrames(stream);
        let (mut ok, mut busy) = (0, 0);
        for _ in 0..=n {
            let reply = reader.next();
            match code(&reply) {
                "<none>" => ok += 1,
                // Requests queued behind the stall may outlive this broker's 1.5 s timeout.
                "handler_timeout" => {}
                "handler_busy" => {
                    assert!(
                        reply["data"]["error"]
                            .as_str()
                            .unwrap()
                            .contains("queue is full"),
                        "{reply}"
                    );
                    busy += 1;
                }
                other => panic!("unexpected {other}: {reply}"),
            }
        }
        sender.join().unwrap();
        assert!(busy > 0, "a full queue to the handler refuses requests");
        assert!(
            ok >= 1,
            "the stalled request is answered once the handler reads again"
        );
        let mut again = b.login("bob", "bob-pw");
        let pid2 = again
            .request("pid2", "faulty", &json!({"action":"pid"}))
            .unwrap();
        assert_eq!(
            pid2["data"]["pid"], pid,
            "the same handler process, never cut off"
        );
    });
    assert!(
        !broker.log().contains("handler=faulty disconnected"),
        "{}",
        broker.log()
    );
}

#[test]
fn a_client_with_its_fill_of_requests_in_flight_is_paused_not_refused() {
    // Client a pipelines 200 requests that each hold the handler ~10 ms; client b then sends one.
    // With at most 4 of a's requests in flight, b's request waits behind 4, not 200: b is
    // answered while most of a's answers are still to come, and none of a's is refused.
    row("max_pending_per_connection = 4", |b| {
        let a = b.login("alice", "alice-pw");
        let mut bob = b.login("bob", "bob-pw");
        let n = 200;
        let stream = a.into_stream();
        let mut writer = stream.try_clone().unwrap();
        let mut wire = Vec::new();
        for i in 0..n {
            let f = json!({"header":{"scope":"client","id":format!("a{i}")},"payload":{"type":"faulty","data":{"action":"stall","seconds":0.01}}});
            encode_frame(f.to_string().as_bytes(), &mut wire);
        }
        writer.write_all(&wire).unwrap();
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = answered.clone();
        let reader = std::thread::spawn(move || {
            let mut frames = ReadFrames(stream);
            for _ in 0..n {
                let reply = frames.next();
                assert_eq!(
                    reply["header"]["status"], "ok",
                    "paused, never refused: {reply}"
                );
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let reply = bob
            .request("b", "faulty", &json!({"action":"pid"}))
            .unwrap();
        let a_done = answered.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(reply["header"]["status"], "ok");
        assert!(a_done < n / 2, "b waited behind {a_done} of a's requests");
        reader.join().unwrap();
    });
}

#[test]
fn a_frame_at_the_limit_is_refused_before_it_can_crash_a_handler() {
    // A client frame of exactly 1 MiB is legal, but wrapped in the request header it would be
    // over the handler's 1 MiB limit (the example handlers close on that): it is refused.
    row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        let pid = c
            .request("pid", "faulty", &json!({"action":"pid"}))
            .unwrap()["data"]["pid"]
            .clone();
        let envelope =
            json!({"header":{"scope":"client","id":"big"},"payload":{"type":"faulty","data":""}});
        let pad = 1_048_576 - envelope.to_string().len();
        c.message("big", "faulty", &json!("x".repeat(pad))).unwrap();
        expect_error(
            &mut c,
            "frame_too_large",
            "with its header the message to the \"faulty\" handler would be",
        );
        let again = c
            .request("pid2", "faulty", &json!({"action":"pid"}))
            .unwrap();
        assert_eq!(
            again["data"]["pid"], pid,
            "the handler was never sent it and still runs"
        );
    });
}

#[test]
fn handler_that_never_answers_times_out() {
    row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        let started = Instant::now();
        let reply = c.request("h", "faulty", &json!({"action":"hang"})).unwrap();
        assert_eq!(
            reply,
            json!({"header":{"status":"error","kind":"reply","id":"h"},"data":{"error":"the \"faulty\" handler did not answer within 1500 ms","code":"handler_timeout"}})
        );
        assert!(started.elapsed() >= Duration::from_millis(1500));
    });
}

#[test]
fn handler_sends_an_oversized_frame_and_is_cut_off() {
    let broker = row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        let reply = c
            .request("big", "faulty", &json!({"action":"oversize"}))
            .unwrap();
        assert_eq!(code(&reply), "handler_unavailable", "{reply}");
        let mut n = 0;
        eventually("the handler to come back", || {
            n += 1;
            let reply = c
                .request(&format!("e{n}"), "faulty", &json!({"action":"echo"}))
                .unwrap();
            (reply["header"]["status"] == "ok").then_some(())
        });
    });
    assert!(broker.log().contains("over the limit of 1048576 bytes"));
}

#[test]
fn handler_replies_to_an_unknown_request_and_to_a_user_that_does_not_exist() {
    row("", |b| {
        let mut c = b.login("bob", "bob-pw");
        // The handler first answers a request token nobody sent, then the real one.
        let reply = c
            .request("bogus", "faulty", &json!({"action":"bogus_reply"}))
            .unwrap();
        assert_eq!(reply["header"]["status"], "ok", "{reply}");
        eventually("the refusal to be logged", || {
            b.log()
                .contains("no request \"999999\" is waiting for an answer")
                .then_some(())
        });
        let reply = c
            .request(
                "ghost",
                "faulty",
                &json!({"action":"send_to","users":["ghost","bob"]}),
            )
            .unwrap();
        assert_eq!(reply["header"]["delivered"], json!(["bob"]));
        assert_eq!(reply["header"]["offline"], json!(["ghost"]));
    });
}

#[test]
fn handler_that_refuses_to_start() {
    let handlers = format!(
        "[handlers.echo]\n{}\n[handlers.refuser]\n{}\nenv = {{ BESTER_FAULTY_MODE = \"refuse\" }}\n",
        handler("python3", "handlers/python/echo.py"),
        handler("python3", "tests/handlers/faulty.py"),
    );
    let broker = Broker::start_with(
        "handler_startup_timeout_ms = 500",
        &handlers,
        &[("alice", "alice-pw")],
    );
    let mut side = Side::new(&broker, "alice", "alice-pw");
    let mut c = broker.login("alice", "alice-pw");
    let reply = c.request("r", "refuser", &Value::Null).unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"error","kind":"reply","id":"r"},"data":{"error":"the \"refuser\" handler is not running","code":"handler_not_running"}})
    );
    eventually("the crash loop to be reported", || {
        broker.log().contains("it keeps failing").then_some(())
    });
    // A type that keeps failing to start is refused at once, not after a wait.
    let started = std::time::Instant::now();
    let reply = c.request("r2", "refuser", &Value::Null).unwrap();
    assert_eq!(code(&reply), "handler_not_running", "{reply}");
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    side.check();
}

#[test]
fn slow_consumer_is_disconnected_and_others_are_not_affected() {
    let broker = row("max_frame_bytes = 16384\nmax_outbound_bytes = 65536", |b| {
        let mut stream = b.login("bob", "bob-pw").into_stream();
        // Flood pings and never read: the answers pile up in the broker until the limit.
        let ping = frame(json!({"header":{"scope":"client"},"payload":{"type":"bester.ping","data":"x".repeat(1000)}}).to_string().as_bytes());
        stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
            if stream.write_all(&ping).is_err() {
                break;
            }
            if b.log().contains("slow consumer") {
                break;
            }
        }
        eventually("the slow consumer to be logged", || {
            b.log().contains("slow consumer").then_some(())
        });
    });
    let log = broker.log();
    assert_eq!(
        log.matches("user=bob: slow consumer").count(),
        1,
        "logged once:\n{log}"
    );
}

#[test]
fn failed_logins_are_rate_limited_per_user() {
    row("login_failures_per_user = 3", |b| {
        for _ in 0..3 {
            let (_, reply) = Client::login(b.addr, "mallory", "guess").unwrap();
            assert_eq!(code(&reply), "auth_failed");
        }
        let (mut c, reply) = Client::login(b.addr, "mallory", "mallory-pw").unwrap();
        assert_eq!(
            code(&reply),
            "rate_limited",
            "even the right password waits: {reply}"
        );
        c.set_timeout(Some(DEADLINE)).unwrap();
        expect_closed(&mut c);
        // Other users are not affected.
        b.login("bob", "bob-pw");
    });
}

#[test]
fn connections_are_capped_per_address_and_per_user() {
    row(
        "max_connections_per_ip = 4\nmax_connections_per_user = 2",
        |b| {
            // The side client holds one connection from 127.0.0.1.
            let _b1 = b.login("bob", "bob-pw");
            let _b2 = b.login("bob", "bob-pw");
            let (mut third, reply) = Client::login(b.addr, "bob", "bob-pw").unwrap();
            assert_eq!(
                reply["data"],
                json!({"error":"user \"bob\" already has 2 connections","code":"too_many_connections"})
            );
            third.set_timeout(Some(DEADLINE)).unwrap();
            expect_closed(&mut third);
            let _open = b.connect();
            // Wait until the refused one is gone, then the 5th from this address is refused.
            let mut fifth = eventually("the refused connection to be released", || {
                let mut c = b.connect();
                c.set_timeout(Some(Duration::from_millis(300))).unwrap();
                match c.recv() {
                    Ok(Some(reply)) if code(&reply) == "too_many_connections" => Some(c),
                    _ => None,
                }
            });
            expect_closed(&mut fifth);
        },
    );
}

#[test]
fn idle_connections_are_closed_and_pings_keep_them_open() {
    // Every client here must ping to stay: the side client is the one that keeps pinging.
    let mut broker = broker("idle_timeout_ms = 700");
    let mut idle = broker.login("bob", "bob-pw");
    let mut busy = broker.login("bob", "bob-pw");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        expect_open(&mut busy);
        std::thread::sleep(Duration::from_millis(200));
    }
    expect_error(&mut idle, "idle_timeout", "nothing received for 700 ms");
    expect_closed(&mut idle);
    expect_open(&mut busy);
    assert!(broker.is_running());
}
