//! Client-to-client streams against the real binary (PROTOCOL.md §5, "Streams"): a dial
//! accepted and frames relayed both ways in order, to those two connections only; a dial refused,
//! to a user offline, to a user whose connections did not negotiate `stream`, forbidden by the
//! presence rules, unanswered; a reader that stops reading (the writer's credit runs out and
//! what the server holds for the reader stays under the window), a writer past its credit; an
//! end from either side, a close of either side; and a client without the feature, which gets
//! exactly the answers of a server without streams.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use besterd::client::Client;
use common::{Broker, DEADLINE, code, eventually, handler};
use serde_json::{Value, json};

const USERS: &[(&str, &str)] = &[
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("carol", "carol-pw"),
];

fn broker(tables: &str) -> Broker {
    let tables = format!(
        "[handlers.echo]\n{}\n{tables}",
        handler("python3", "handlers/python/echo.py")
    );
    Broker::start_with("", &tables, USERS)
}

fn password(user: &str) -> String {
    format!("{user}-pw")
}

/// Log in offering `features` (`None`: an identify without the key, as an old client sends).
fn login_with(b: &Broker, user: &str, features: Option<Value>) -> Client {
    let mut c = Client::connect(b.addr).unwrap();
    c.set_timeout(Some(DEADLINE)).unwrap();
    let mut identify =
        json!({"type":"client","authentication":{"username":user,"password":password(user)}});
    if let Some(features) = features {
        identify["features"] = features;
    }
    c.send(&json!({"header":{"identify":identify}})).unwrap();
    let reply = c.recv().unwrap().unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    c
}

/// Log in with `stream` negotiated.
fn login(b: &Broker, user: &str) -> Client {
    login_with(b, user, Some(json!(["stream"])))
}

fn request(c: &mut Client, id: &str, kind: &str, data: Value) -> Value {
    c.request(id, kind, &data).unwrap()
}

fn recv(c: &mut Client) -> Value {
    c.recv().unwrap().expect("connection open")
}

/// Nothing but the answer to a ping is waiting for `c`.
fn nothing_else(c: &mut Client) {
    c.message("ping", "bester.ping", &json!(null)).unwrap();
    let next = recv(c);
    assert_eq!(
        next,
        json!({"header":{"status":"ok","kind":"reply","id":"ping","type":"bester.ping"},"data":"pong"}),
        "something else arrived first"
    );
}

/// alice dials bob; bob (one connection) gets `incoming` and accepts. The stream id.
fn open(alice: &mut Client, bob: &mut Client, name: &str) -> u64 {
    alice
        .message("d", "bester.dial", &json!({"to":"bob","stream":name}))
        .unwrap();
    let incoming = recv(bob);
    let id = incoming["header"]["stream"].as_u64().expect("a stream id");
    assert_eq!(
        incoming,
        json!({"header":{"status":"ok","kind":"incoming","stream":id,"from":{"user":"alice","server":"test"}},"data":{"name":name,"window":262144}})
    );
    let accepted = request(bob, "a", "bester.accept", json!({"stream":id}));
    assert_eq!(
        accepted,
        json!({"header":{"status":"ok","kind":"reply","id":"a","type":"bester.accept"},"data":{"stream":id,"name":name,"from":{"user":"alice","server":"test"},"window":262144}})
    );
    let dialled = recv(alice);
    assert_eq!(
        dialled,
        json!({"header":{"status":"ok","kind":"reply","id":"d","type":"bester.dial"},"data":{"stream":id,"name":name,"to":{"user":"bob","server":"test"},"window":262144}})
    );
    id
}

fn data(c: &mut Client, id: u64, data: Value) {
    c.send(&json!({"header":{"stream":id},"data":data}))
        .unwrap();
}

fn end_error(id: u64, code: &str, text: &str) -> Value {
    json!({"header":{"status":"error","kind":"end","stream":id},"data":{"error":text,"code":code}})
}

#[test]
fn an_accepted_dial_relays_both_ways_in_order_to_those_two_only() {
    let b = broker("");
    let mut alice = login(&b, "alice");
    let mut bob = login(&b, "bob");
    let mut carol = login(&b, "carol");
    let id = open(&mut alice, &mut bob, "s1");
    for i in 0..200 {
        data(&mut alice, id, json!({"n": i, "pad": "a".repeat(i * 7)}));
        data(&mut bob, id, json!([i, "b"]));
    }
    for i in 0..200 {
        assert_eq!(
            recv(&mut bob),
            json!({"header":{"status":"ok","kind":"stream","stream":id},"data":{"n": i, "pad": "a".repeat(i * 7)}})
        );
        assert_eq!(
            recv(&mut alice),
            json!({"header":{"status":"ok","kind":"stream","stream":id},"data":[i, "b"]})
        );
    }
    // Credit goes to the writer only.
    bob.send(&json!({"header":{"stream":id,"credit":1000}}))
        .unwrap();
    assert_eq!(
        recv(&mut alice),
        json!({"header":{"status":"ok","kind":"credit","stream":id,"credit":1000}})
    );
    // A third connection, even one that takes streams, sees nothing; and may not write to it.
    nothing_else(&mut carol);
    data(&mut carol, id, json!("intrusion"));
    assert_eq!(
        recv(&mut carol),
        end_error(
            id,
            "unknown_stream",
            &format!("no open stream {id} on this connection")
        )
    );
    nothing_else(&mut alice);
    nothing_else(&mut bob);
}

#[test]
fn a_dial_is_offered_to_every_connection_that_takes_streams_and_answered_once() {
    let b = broker("");
    let mut alice = login(&b, "alice");
    let mut bob1 = login(&b, "bob");
    let mut bob2 = login(&b, "bob");
    let mut bob_old = login_with(&b, "bob", None);
    alice
        .message("d", "bester.dial", &json!({"to":"bob","stream":"s"}))
        .unwrap();
    let id = recv(&mut bob1)["header"]["stream"].as_u64().unwrap();
    assert_eq!(recv(&mut bob2)["header"]["stream"], id);
    let reply = request(&mut bob2, "a", "bester.accept", json!({"stream":id}));
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    assert_eq!(
        recv(&mut bob1),
        end_error(
            id,
            "dial_answered",
            "another connection of \"bob\" answered"
        )
    );
    assert_eq!(recv(&mut alice)["data"]["stream"], id);
    let late = request(&mut bob1, "a", "bester.accept", json!({"stream":id}));
    assert_eq!(
        late,
        json!({"header":{"status":"error","kind":"reply","id":"a"},"data":{"error":format!("no dial {id} is waiting for this connection's answer"),"code":"unknown_stream"}})
    );
    nothing_else(&mut bob_old);
}

#[test]
fn a_refused_dial_is_answered_dial_refused() {
    let b = broker("");
    let mut alice = login(&b, "alice");
    let mut bob = login(&b, "bob");
    alice
        .message("d", "bester.dial", &json!({"to":"bob","stream":"call"}))
        .unwrap();
    let id = recv(&mut bob)["header"]["stream"].as_u64().unwrap();
    let reply = request(&mut bob, "r", "bester.refuse", json!({"stream":id}));
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"r","type":"bester.refuse"},"data":null})
    );
    assert_eq!(
        recv(&mut alice),
        json!({"header":{"status":"error","kind":"reply","id":"d"},"data":{"error":"\"bob\" refused the stream \"call\"","code":"dial_refused"}})
    );
    // The name is free again.
    alice
        .message("d2", "bester.dial", &json!({"to":"bob","stream":"call"}))
        .unwrap();
    assert_eq!(recv(&mut bob)["header"]["kind"], "incoming");
}

#[test]
fn a_dial_to_an_offline_user_or_one_without_streams_is_dial_offline() {
    let b = broker("");
    let mut alice = login(&b, "alice");
    let offline = |to: &str| json!({"header":{"status":"error","kind":"reply","id":"d"},"data":{"error":format!("{to:?} has no connection here that takes streams"),"code":"dial_offline"}});
    let reply = request(
        &mut alice,
        "d",
        "bester.dial",
        json!({"to":"carol","stream":"s"}),
    );
    assert_eq!(reply, offline("carol"));
    let reply = request(
        &mut alice,
        "d",
        "bester.dial",
        json!({"to":"nobody-at-all","stream":"s"}),
    );
    assert_eq!(reply, offline("nobody-at-all"));
    // bob is online, but neither of his connections negotiated `stream` (one offered nothing,
    // one offered only other features): he is offline for streams, and never hears of it.
    let mut bob_old = login_with(&b, "bob", None);
    let mut bob_other = login_with(&b, "bob", Some(json!(["compress-not", "x"])));
    let reply = request(
        &mut alice,
        "d",
        "bester.dial",
        json!({"to":"bob","stream":"s"}),
    );
    assert_eq!(reply, offline("bob"));
    nothing_else(&mut bob_old);
    nothing_else(&mut bob_other);
}

#[test]
fn presence_rules_decide_who_may_dial_whom() {
    let b = broker("[presence]\nvisible = \"groups\"\n");
    let mut alice = login(&b, "alice");
    let mut bob = login(&b, "bob");
    let reply = request(
        &mut alice,
        "d",
        "bester.dial",
        json!({"to":"bob","stream":"s"}),
    );
    assert_eq!(
        reply,
        json!({"header":{"status":"error","kind":"reply","id":"d"},"data":{"error":"\"alice\" may not dial \"bob\": presence rules ([presence] visible) hide them","code":"forbidden"}})
    );
    // Refused before anything about bob's connections is looked at: offline users alike.
    let reply = request(
        &mut alice,
        "d",
        "bester.dial",
        json!({"to":"carol","stream":"s"}),
    );
    assert_eq!(code(&reply), "forbidden", "{reply}");
    nothing_else(&mut bob);
}

#[test]
fn an_unanswered_dial_times_out() {
    let b = broker("[streams]\ndial_timeout_ms = 300\n");
    let mut alice = login(&b, "alice");
    let mut bob = login(&b, "bob");
    alice
        .message("d", "bester.dial", &json!({"to":"bob","stream":"s"}))
        .unwrap();
    let id = recv(&mut bob)["header"]["stream"].as_u64().unwrap();
    assert_eq!(
        recv(&mut alice),
        json!({"header":{"status":"error","kind":"reply","id":"d"},"data":{"error":"\"bob\" did not answer the dial within 300 ms","code":"dial_timeout"}})
    );
    assert_eq!(
        recv(&mut bob),
        end_error(id, "dial_timeout", "the dial was not answered in time")
    );
    let late = request(&mut bob, "a", "bester.accept", json!({"stream":id}));
    assert_eq!(code(&late), "unknown_stream", "{late}");
}

/// `GET path` on the monitoring port, as JSON.
fn monitor(b: &Broker, path: &str) -> Value {
    serde_json::from_str(&monitor_text(b, path)).unwrap()
}

/// `GET path` on the monitoring port: the body.
fn monitor_text(b: &Broker, path: &str) -> String {
    let log = b.log();
    let marker = "monitor: listening on http://";
    let at = log.find(marker).expect("monitor line in the log") + marker.len();
    let end = log[at..].find(' ').unwrap() + at;
    let addr: SocketAddr = log[at..end].parse().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .expect("an HTTP answer")
        .1
        .to_string()
}

#[test]
fn a_reader_that_stops_reading_stops_its_writer_and_the_server_holds_at_most_the_window() {
    // A window larger than the kernel's socket buffers take, so the server has to hold some
    // (and an outbound limit above it, so that holding it is no slow consumer).
    let window = 16u64 << 20;
    let tables = format!(
        "[handlers.echo]\n{}\n[streams]\nwindow_bytes = {window}\n[monitor]\nlisten = \"127.0.0.1:0\"\n",
        handler("python3", "handlers/python/echo.py")
    );
    let b = Broker::start_with("max_outbound_bytes = 67108864", &tables, USERS);
    let mut alice = login(&b, "alice");
    let mut bob = login(&b, "bob");
    alice
        .message("d", "bester.dial", &json!({"to":"bob","stream":"bulk"}))
        .unwrap();
    let id = recv(&mut bob)["header"]["stream"].as_u64().unwrap();
    request(&mut bob, "a", "bester.accept", json!({"stream":id}));
    assert_eq!(recv(&mut alice)["data"]["window"], window);
    // bob reads no more. alice writes exactly her window: 64 KiB of data per frame.
    let chunk = "x".repeat(65536 - 2);
    let cost = 65536 + 128;
    let frames = window / cost;
    for _ in 0..frames {
        data(&mut alice, id, json!(chunk));
    }
    let left = window - frames * cost;
    // What the server holds for bob grows to what the kernel does not take, and no further.
    let queued = |b: &Broker| {
        monitor(b, "/connections?user=bob")["connections"][0]["queued_output_bytes"]
            .as_u64()
            .unwrap()
    };
    let held = eventually("output held for bob", || {
        let q = queued(&b);
        (q > 0).then_some(q)
    });
    assert!(held <= window, "{held} bytes held for a window of {window}");
    // No credit came back: alice's next frame past what is left ends the stream, exactly.
    let over = "y".repeat(left as usize);
    data(&mut alice, id, json!(over));
    let cost_over = left + 2 + 128;
    assert_eq!(
        recv(&mut alice),
        end_error(
            id,
            "stream_credit_exceeded",
            &format!(
                "a frame costing {cost_over} bytes is over the credit left on stream {id}, {left} bytes"
            )
        )
    );
    assert!(queued(&b) <= window);
    let metrics = monitor_text(&b, "/metrics");
    for line in [
        "besterd_stream_credit_exceeded_total 1",
        "besterd_streams_open 0",
        "besterd_stream_dials_accepted_total 1",
        &format!("besterd_stream_frames_total {frames}"),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in /metrics"
        );
    }
    // bob, reading again, gets every frame sent within the credit, then the end.
    for _ in 0..frames {
        let frame = recv(&mut bob);
        assert_eq!(frame["header"]["kind"], "stream");
        assert_eq!(frame["data"].as_str().unwrap().len(), chunk.len());
    }
    assert_eq!(
        recv(&mut bob),
        end_error(id, "stream_closed", "the other side sent past its credit")
    );
    nothing_else(&mut bob);
    nothing_else(&mut alice);
}

#[test]
fn a_grant_past_the_window_ends_the_stream() {
    let b = broker("");
    let mut alice = login(&b, "alice");
    let mut bob = login(&b, "bob");
    let id = open(&mut alice, &mut bob, "s");
    bob.send(&json!({"header":{"stream":id,"credit":1}}))
        .unwrap();
    assert_eq!(
        recv(&mut bob),
        end_error(
            id,
            "invalid_message",
            &format!(
                "a credit of 1 would give stream {id}'s writer over the window of 262144 bytes"
            )
        )
    );
    assert_eq!(
        recv(&mut alice),
        end_error(
            id,
            "stream_closed",
            "the other side granted credit past the window"
        )
    );
}

#[test]
fn either_side_may_end_a_stream() {
    let b = broker("");
    let mut alice = login(&b, "alice");
    let mut bob = login(&b, "bob");
    let ended = |id: u64| json!({"header":{"status":"ok","kind":"end","stream":id},"data":null});
    let first = open(&mut alice, &mut bob, "one");
    data(&mut alice, first, json!("last words"));
    alice
        .send(&json!({"header":{"stream":first,"end":true}}))
        .unwrap();
    assert_eq!(recv(&mut bob)["data"], "last words");
    assert_eq!(recv(&mut bob), ended(first));
    // bob's frame in flight as the end crossed it is dropped without a word.
    data(&mut bob, first, json!("too late"));
    nothing_else(&mut bob);
    nothing_else(&mut alice);

    let second = open(&mut alice, &mut bob, "two");
    assert_ne!(first, second);
    bob.send(&json!({"header":{"stream":second,"end":true}}))
        .unwrap();
    assert_eq!(recv(&mut alice), ended(second));
    nothing_else(&mut bob);
}

#[test]
fn a_close_of_either_side_ends_its_streams_for_the_other() {
    let b = broker("");
    let mut alice = login(&b, "alice");
    let mut bob = login(&b, "bob");
    let id = open(&mut alice, &mut bob, "s");
    drop(bob);
    assert_eq!(
        recv(&mut alice),
        end_error(id, "stream_closed", "the other side's connection closed")
    );
    let mut bob = login(&b, "bob");
    let id = open(&mut alice, &mut bob, "s");
    drop(alice);
    assert_eq!(
        recv(&mut bob),
        end_error(id, "stream_closed", "the other side's connection closed")
    );
    // A dial whose dialler goes before an answer: the incoming is withdrawn.
    let mut alice = login(&b, "alice");
    alice
        .message("d", "bester.dial", &json!({"to":"bob","stream":"s"}))
        .unwrap();
    let id = recv(&mut bob)["header"]["stream"].as_u64().unwrap();
    drop(alice);
    assert_eq!(
        recv(&mut bob),
        end_error(id, "stream_closed", "the dialler's connection closed")
    );
}

#[test]
fn bad_stream_frames_and_dials_get_exact_errors() {
    let b = broker("[streams]\nmax_per_connection = 1\n");
    let mut alice = login(&b, "alice");
    let mut bob = login(&b, "bob");
    let error = |text: &str, code: &str| json!({"header":{"status":"error","kind":"reply"},"data":{"error":text,"code":code}});
    alice.send(&json!({"header":{"stream":1}})).unwrap();
    assert_eq!(
        recv(&mut alice),
        error(
            "a stream frame carries data, header.credit or header.end",
            "invalid_message"
        )
    );
    alice
        .send(&json!({"header":{"stream":1,"credit":0}}))
        .unwrap();
    assert_eq!(
        recv(&mut alice),
        error("header.credit must be at least 1", "invalid_message")
    );
    alice
        .send_body(br#"{"header":{"end":true,"stream":"1"}}"#)
        .unwrap();
    assert_eq!(
        recv(&mut alice),
        error(
            "header.stream: invalid type: string, expected u64",
            "invalid_message"
        )
    );
    alice
        .send_body(br#"{"header":{"stream":1},"data":{"k":1,"k":2}}"#)
        .unwrap();
    assert_eq!(code(&recv(&mut alice)), "invalid_message");
    let dial_error = |text: &str, code: &str| json!({"header":{"status":"error","kind":"reply","id":"d"},"data":{"error":text,"code":code}});
    let long = "n".repeat(65);
    let reply = request(
        &mut alice,
        "d",
        "bester.dial",
        json!({"to":"bob","stream":long}),
    );
    assert_eq!(
        reply,
        dial_error(
            "bad data for \"bester.dial\": stream must be 1 to 64 bytes without control characters",
            "invalid_message"
        )
    );
    let reply = request(&mut alice, "d", "bester.dial", json!({"to":"bob"}));
    assert_eq!(
        reply,
        dial_error(
            "bad data for \"bester.dial\": missing field `stream`",
            "invalid_message"
        )
    );
    alice
        .message("d", "bester.dial", &json!({"to":"bob","stream":"s"}))
        .unwrap();
    recv(&mut bob);
    let reply = request(
        &mut alice,
        "d",
        "bester.dial",
        json!({"to":"bob","stream":"s"}),
    );
    assert_eq!(
        reply,
        dial_error(
            "stream name \"s\" is in use on this connection already",
            "invalid_message"
        )
    );
    let reply = request(
        &mut alice,
        "d",
        "bester.dial",
        json!({"to":"bob","stream":"t"}),
    );
    assert_eq!(
        reply,
        dial_error(
            "this connection has 1 streams open or dialling, the most [streams] max_per_connection allows",
            "limit_reached"
        )
    );
    let reply = request(&mut bob, "d", "bester.accept", json!({"stream":999}));
    assert_eq!(
        reply,
        dial_error(
            "no dial 999 is waiting for this connection's answer",
            "unknown_stream"
        )
    );
}

#[test]
fn a_client_without_the_feature_gets_the_answers_of_a_server_without_streams() {
    let b = broker("");
    let mut old = login_with(&b, "alice", None);
    let mut bob = login(&b, "bob");
    for kind in ["bester.dial", "bester.accept", "bester.refuse"] {
        let reply = request(&mut old, "x", kind, json!({"to":"bob","stream":"s"}));
        assert_eq!(
            reply,
            json!({"header":{"status":"error","kind":"reply","id":"x"},"data":{"error":format!("{kind:?} is not a built-in type; types starting with \"bester.\" are reserved"),"code":"reserved_type"}})
        );
    }
    old.send(&json!({"header":{"stream":1},"data":"x"}))
        .unwrap();
    assert_eq!(
        recv(&mut old),
        json!({"header":{"status":"error","kind":"reply"},"data":{"error":"header: unknown field `stream`, expected one of `identify`, `scope`, `id`, `authentication`, `user`","code":"invalid_message"}})
    );
    nothing_else(&mut bob);
    // A server with streams off accepts no `stream`.
    let off = broker("[streams]\nenabled = false\n");
    let mut c = Client::connect(off.addr).unwrap();
    c.set_timeout(Some(DEADLINE)).unwrap();
    c.send(&json!({"header":{"identify":{"type":"client","authentication":{"username":"alice","password":"alice-pw"},"features":["stream"]}}}))
        .unwrap();
    assert_eq!(recv(&mut c)["data"]["features"], json!([]));
}
