//! Router rules, asserted on the actions it returns.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::protocol::handler::parse_handler_message;
use crate::protocol::message::{Inbound, parse_inbound};

mod federation;
mod handlers;
mod logins;

/// A connection id for tests: slot and generation both `n`.
const fn conn(n: usize) -> ConnId {
    ConnId {
        slot: n,
        generation: n as u64,
    }
}

const ALICE: ConnId = conn(1);
const ALICE2: ConnId = conn(2);
const BOB: ConnId = conn(3);
const ECHO: ConnId = conn(10);
const ECHO2: ConnId = conn(11);
const UPPER: ConnId = conn(12);
/// Where `sent` puts the body of a dial.
const DIAL: ConnId = conn(99);

fn router() -> Router {
    let mut r = Router::new(RouterConfig {
        server: "a".into(),
        request_timeout: Duration::from_secs(5),
        max_chain_depth: 3,
        max_frame: 1024,
        login_timeout: Duration::from_secs(1),
        max_logins: 2,
    });
    r.add_type("echo", 2);
    r.add_type("upper", 2);
    r.add_type("lower", 2);
    r.client_identified(ALICE, "alice", &mut Vec::new());
    r.client_identified(ALICE2, "alice", &mut Vec::new());
    r.client_identified(BOB, "bob", &mut Vec::new());
    r.handler_connected(ECHO, "echo");
    r.handler_connected(UPPER, "upper");
    r
}

fn msg(id: &str, kind: &str, data: Value) -> ClientMessage<'static> {
    let frame = json!({"header":{"scope":"client","id":id},"payload":{"type":kind,"data":data}});
    match parse_inbound(frame.to_string().as_bytes()).unwrap() {
        Inbound::Message(m) => m.into_owned(),
        Inbound::Identify(_) => unreachable!(),
    }
}

fn answer(frame: Value) -> HandlerMessage<'static> {
    parse_handler_message(frame.to_string().as_bytes())
        .unwrap()
        .into_owned()
}

/// The actions as (destination, parsed JSON).
fn sent(out: &mut Vec<Action>) -> Vec<(ConnId, Value)> {
    let mut each = Vec::new();
    for action in out.drain(..) {
        match action {
            Action::SendEach { to, body } => {
                each.extend(to.into_iter().map(|to| Action::Send {
                    to,
                    body: body.clone(),
                }));
            }
            other => each.push(other),
        }
    }
    each.into_iter()
        .map(|action| match action {
            Action::Send { to, body } | Action::Request { to, body, .. } => {
                (to, serde_json::from_slice(&body).unwrap())
            }
            Action::SendEach { .. } => unreachable!("expanded above"),
            Action::Dial { body, .. } => (DIAL, serde_json::from_slice(&body).unwrap()),
            Action::Close { conn } => (conn, json!("close")),
            Action::Redirect { to, id, url, token } => (
                to,
                json!({"redirect": url, "id": id, "token": format!("{token:?}")}),
            ),
            Action::LoginAccepted { conn, data } => (conn, json!({ "accepted": data })),
            Action::LoginRefused {
                conn,
                body,
                by_handler,
            } => {
                let body: Value = serde_json::from_slice(&body).unwrap();
                (conn, json!({ "refused": body, "by_handler": by_handler }))
            }
            Action::Store { ticket, records } => {
                let users: Vec<&str> = records.iter().map(|r| r.user.as_str()).collect();
                (DIAL, json!({ "store": ticket, "users": users }))
            }
        })
        .collect()
}

const PEER_B: ConnId = conn(20);
const PEER_C: ConnId = conn(21);

fn federated() -> Router {
    let mut r = router();
    r.add_peer("b");
    r.add_peer("c");
    r.add_peer("d");
    r.peer_up("b", PEER_B);
    r.peer_up("c", PEER_C);
    r
}

fn ack(msg: &str, body: Value) -> crate::protocol::peer::PeerAck<'static> {
    let mut frame = body;
    frame["header"]["kind"] = json!("ack");
    frame["header"]["msg"] = json!(msg);
    match crate::protocol::peer::parse_peer_frame_full(frame.to_string().as_bytes()).unwrap() {
        crate::protocol::peer::PeerFrame::Ack(a) => a,
        other => panic!("{other:?}"),
    }
}

/// Send a client message and return the request token the handler got.
fn request(r: &mut Router, from: ConnId, m: ClientMessage, now: Instant) -> (ConnId, String) {
    let mut out = Vec::new();
    r.client_message(from, m, now, &mut out);
    let actions = sent(&mut out);
    assert_eq!(actions.len(), 1, "{actions:?}");
    let (to, frame) = &actions[0];
    assert_eq!(frame["header"]["kind"], "request");
    (
        *to,
        frame["header"]["request"].as_str().unwrap().to_string(),
    )
}

#[test]
fn request_carries_sender_and_reply_returns_with_id() {
    let mut r = router();
    let now = Instant::now();
    let mut out = Vec::new();
    r.client_message(ALICE, msg("7", "echo", json!({"x":1})), now, &mut out);
    let actions = sent(&mut out);
    assert_eq!(
        actions,
        vec![(
            ECHO,
            json!({"header":{"kind":"request","request":"1","scope":"client","from":{"user":"alice","server":"a"}},
                   "payload":{"type":"echo","data":{"x":1}}})
        )]
    );
    assert_eq!(r.pending_for(ALICE), 1);
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","command":"reply","request":"1"},"payload":{"type":"echo","data":{"x":1}}})),
        now,
        &mut out,
    );
    assert_eq!(
        sent(&mut out),
        vec![(
            ALICE,
            json!({"header":{"status":"ok","kind":"reply","id":"7","type":"echo"},"data":{"x":1}})
        )]
    );
    assert_eq!(r.pending_for(ALICE), 0);
}

#[test]
fn unknown_and_unavailable_types() {
    let mut r = router();
    let mut out = Vec::new();
    r.client_message(
        ALICE,
        msg("1", "nope", json!(null)),
        Instant::now(),
        &mut out,
    );
    r.client_message(
        ALICE,
        msg("2", "lower", json!(null)),
        Instant::now(),
        &mut out,
    );
    let actions = sent(&mut out);
    assert_eq!(actions[0].1["data"]["code"], "unknown_type");
    assert_eq!(
        actions[0].1["data"]["error"],
        "no handler for type \"nope\""
    );
    assert_eq!(actions[1].1["data"]["code"], "handler_not_running");
    assert_eq!(actions[1].1["header"]["id"], "2");
}

#[test]
fn send_clients_fans_out_and_reports_offline() {
    let mut r = router();
    let now = Instant::now();
    let (_, token) = request(&mut r, ALICE, msg("9", "echo", json!("hi")), now);
    let mut out = Vec::new();
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","command":"sendClients","commandData":["alice","bob","carol","bob"],"request":token},
                      "payload":{"type":"chat","data":"hi"}})),
        now,
        &mut out,
    );
    let actions = sent(&mut out);
    let push = json!({"header":{"status":"ok","kind":"push","type":"chat","from":{"user":"alice","server":"a"}},"data":"hi"});
    assert_eq!(
        actions,
        vec![
            (ALICE2, push.clone()),
            (BOB, push),
            (
                ALICE,
                json!({"header":{"status":"ok","kind":"reply","id":"9","type":"chat","delivered":["alice","bob"],"offline":["carol"]},"data":"hi"})
            ),
        ]
    );
}

#[test]
fn a_storing_push_is_reported_only_once_the_store_answers() {
    let mut r = router();
    r.set_delivery(100, ["mail".to_string()]);
    let now = Instant::now();
    let (_, token) = request(&mut r, ALICE, msg("9", "echo", json!("hi")), now);
    let mut out = Vec::new();
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","command":"sendClients","commandData":["alice","bob","carol","dave"],"request":token},
                      "payload":{"type":"mail","data":"hi"}})),
        now,
        &mut out,
    );
    let actions = sent(&mut out);
    assert_eq!(actions.len(), 3, "{actions:?}");
    // The sender's other connection gets a plain push: nothing is kept for the sender.
    assert_eq!(actions[0].0, ALICE2);
    assert!(actions[0].1["header"].get("msg").is_none(), "{actions:?}");
    assert_eq!(actions[1].0, BOB);
    assert_eq!(actions[1].1["header"]["msg"], "100");
    assert_eq!(
        actions[2],
        (DIAL, json!({"store": 0, "users": ["bob", "carol", "dave"]})),
        "no reply before the commit"
    );
    let full = crate::protocol::durable::Refused::new(ErrorCode::QueueFull, "full");
    r.store_done(0, vec![Ok(()), Ok(()), Err(full)], &mut out);
    assert_eq!(
        sent(&mut out),
        vec![(
            ALICE,
            json!({"header":{"status":"ok","kind":"reply","id":"9","type":"mail","delivered":["alice","bob"],"offline":[],"stored":["carol"],
                   "refused":[{"user":"dave","error":"full","code":"queue_full"}]},"data":"hi"})
        )]
    );
}

#[test]
fn sender_not_among_recipients_gets_report_without_data() {
    let mut r = router();
    let now = Instant::now();
    let (_, token) = request(&mut r, BOB, msg("1", "echo", json!(null)), now);
    let mut out = Vec::new();
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","command":"sendClients","commandData":["alice"],"request":token},
                      "payload":{"type":"note","data":"secret"}})),
        now,
        &mut out,
    );
    let actions = sent(&mut out);
    assert_eq!(actions.len(), 3);
    assert_eq!(actions[2].0, BOB);
    assert_eq!(actions[2].1["data"], Value::Null);
    assert_eq!(actions[2].1["header"]["delivered"], json!(["alice"]));
}

#[test]
fn handler_gone_fails_its_requests_only() {
    let mut r = router();
    r.handler_connected(ECHO2, "echo");
    let now = Instant::now();
    let (first, _) = request(&mut r, ALICE, msg("1", "echo", json!(1)), now);
    let (second, _) = request(&mut r, BOB, msg("2", "echo", json!(2)), now);
    assert_ne!(first, second, "least-loaded link is chosen");
    let mut out = Vec::new();
    r.handler_gone(first, &mut out);
    let actions = sent(&mut out);
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].0, ALICE);
    assert_eq!(actions[0].1["data"]["code"], "handler_unavailable");
    assert_eq!(r.pending_total(), 1);
}

#[test]
fn busy_handler_and_timeouts() {
    let mut r = router();
    let now = Instant::now();
    request(&mut r, ALICE, msg("1", "echo", json!(1)), now);
    request(&mut r, ALICE, msg("2", "echo", json!(2)), now);
    let mut out = Vec::new();
    r.client_message(ALICE, msg("3", "echo", json!(3)), now, &mut out);
    assert_eq!(sent(&mut out)[0].1["data"]["code"], "handler_busy");
    assert_eq!(r.next_deadline(), Some(now + Duration::from_secs(5)));
    r.expire(now + Duration::from_secs(4), &mut out);
    assert!(out.is_empty());
    r.expire(now + Duration::from_secs(5), &mut out);
    let actions = sent(&mut out);
    let ids: Vec<&Value> = actions.iter().map(|(_, f)| &f["header"]["id"]).collect();
    assert_eq!(ids, [&json!("1"), &json!("2")]);
    assert!(
        actions
            .iter()
            .all(|(_, f)| f["data"]["code"] == "handler_timeout")
    );
    // A late answer is refused back to the handler, and nobody else hears of it.
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","request":"1"},"payload":{"type":"echo"}})),
        now,
        &mut out,
    );
    let actions = sent(&mut out);
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].0, ECHO);
    assert_eq!(actions[0].1["header"]["kind"], "report");
    assert_eq!(actions[0].1["data"]["code"], "bad_handler_reply");
}

#[test]
fn a_request_the_handler_queue_refused_is_answered_busy() {
    let mut r = router();
    let now = Instant::now();
    let mut out = Vec::new();
    r.client_message(ALICE, msg("q", "echo", json!(1)), now, &mut out);
    let Some(Action::Request { token, .. }) = out.pop() else {
        panic!("a request action")
    };
    r.handler_refused(token, &mut out);
    let actions = sent(&mut out);
    assert_eq!(actions[0].0, ALICE);
    assert_eq!(actions[0].1["header"]["id"], "q");
    assert_eq!(actions[0].1["data"]["code"], "handler_busy");
    assert_eq!(r.pending_for(ALICE), 0);
    assert_eq!(r.next_deadline(), None, "nothing left to time out");
}

#[test]
fn a_request_too_large_once_wrapped_is_refused_not_sent() {
    let mut r = federated();
    let now = Instant::now();
    let mut out = Vec::new();
    // A payload that fits a client frame of 1024 bytes, but not with the request header around it.
    r.client_message(
        ALICE,
        msg("big", "echo", json!("x".repeat(990))),
        now,
        &mut out,
    );
    let actions = sent(&mut out);
    assert_eq!(actions.len(), 1, "nothing goes to the handler: {actions:?}");
    assert_eq!(actions[0].0, ALICE);
    assert_eq!(actions[0].1["data"]["code"], "frame_too_large");
    assert_eq!(r.pending_for(ALICE), 0);
    let (_, token) = request(&mut r, ALICE, msg("s", "echo", json!(1)), now);
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","command":"sendServers","commandData":["b"],"request":token},"payload":{"type":"chat","data":"y".repeat(990)}})),
        now,
        &mut out,
    );
    let actions = sent(&mut out);
    assert_eq!(actions.len(), 1, "nothing goes to the peer: {actions:?}");
    assert_eq!(
        actions[0].1["header"]["servers"]["b"]["code"],
        "frame_too_large"
    );
}

#[test]
fn send_handler_chains_and_refuses_loops() {
    let mut r = router();
    let now = Instant::now();
    let (_, token) = request(&mut r, ALICE, msg("1", "upper", json!("x")), now);
    let mut out = Vec::new();
    r.handler_message(
        UPPER,
        answer(json!({"header":{"status":"ok","command":"sendHandler","commandData":"echo","request":token},"payload":{"type":"echo","data":"X"}})),
        now,
        &mut out,
    );
    let actions = sent(&mut out);
    assert_eq!(actions[0].0, ECHO);
    assert_eq!(actions[0].1["header"]["via"], json!(["upper"]));
    let token = actions[0].1["header"]["request"]
        .as_str()
        .unwrap()
        .to_string();
    // echo sends it back to upper: a loop.
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","command":"sendHandler","commandData":"upper","request":token},"payload":{"type":"upper","data":"X"}})),
        now,
        &mut out,
    );
    let actions = sent(&mut out);
    assert_eq!(actions[0].0, ALICE);
    assert_eq!(actions[0].1["data"]["code"], "handler_loop");
    assert_eq!(
        actions[0].1["data"]["error"],
        "sendHandler to \"upper\" would loop (chain: upper -> echo)"
    );
    assert_eq!(r.pending_total(), 0);
}

#[test]
fn handler_errors_pass_through_or_are_wrapped() {
    let mut r = router();
    let now = Instant::now();
    let (_, token) = request(&mut r, ALICE, msg("1", "echo", json!(1)), now);
    let mut out = Vec::new();
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"error","request":token},"payload":{"type":"echo","data":{"error":"no room","code":"not_in_room"}}})),
        now,
        &mut out,
    );
    assert_eq!(
        sent(&mut out)[0].1,
        json!({"header":{"status":"error","kind":"reply","id":"1"},"data":{"error":"no room","code":"not_in_room"}})
    );
    let (_, token) = request(&mut r, ALICE, msg("2", "echo", json!(1)), now);
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"error","request":token},"payload":{"type":"echo","data":"oops"}})),
        now,
        &mut out,
    );
    assert_eq!(sent(&mut out)[0].1["data"]["code"], "handler_error");
}

#[test]
fn handler_push_is_delivered_and_reported() {
    let mut r = router();
    let mut out = Vec::new();
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","command":"sendClients","commandData":["bob","zed"],"id":"p1"},"payload":{"type":"news","data":1}})),
        Instant::now(),
        &mut out,
    );
    assert_eq!(
        sent(&mut out),
        vec![
            (
                BOB,
                json!({"header":{"status":"ok","kind":"push","type":"news","from":{"server":"a","handler":"echo"}},"data":1})
            ),
            (
                ECHO,
                json!({"header":{"kind":"report","status":"ok","id":"p1","delivered":["bob"],"offline":["zed"]}})
            ),
        ]
    );
}

#[test]
fn logged_out_user_is_offline() {
    let mut r = router();
    r.client_gone(BOB, &mut Vec::new());
    assert_eq!(r.connections_of("bob"), 0);
    assert_eq!(r.connections_of("alice"), 2);
}

#[test]
fn per_type_figures_count_every_outcome_and_the_latency() {
    use crate::stats::RequestOutcome::{Busy, Error, Ok, Timeout, Unavailable};
    let mut r = router();
    let t0 = Instant::now();
    let mut out = Vec::new();
    // echo (index 0): answered ok after 3 ms, answered with an error, timed out.
    let (_, token) = request(&mut r, ALICE, msg("1", "echo", json!(1)), t0);
    assert_eq!(r.stats().handlers[0].in_flight, 1);
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","command":"reply","request":token},"payload":{"type":"echo","data":1}})),
        t0 + Duration::from_millis(3),
        &mut out,
    );
    let (_, token) = request(&mut r, ALICE, msg("2", "echo", json!(2)), t0);
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"error","command":"reply","request":token},"payload":{"type":"echo","data":{"error":"no","code":"bad_request"}}})),
        t0,
        &mut out,
    );
    request(&mut r, ALICE, msg("3", "echo", json!(3)), t0);
    r.expire(t0 + Duration::from_secs(6), &mut out);
    // upper (index 1, max_inflight 2): two in flight, the third is busy; the link goes away.
    request(&mut r, ALICE, msg("4", "upper", json!(4)), t0);
    request(&mut r, ALICE, msg("5", "upper", json!(5)), t0);
    r.client_message(ALICE, msg("6", "upper", json!(6)), t0, &mut out);
    assert_eq!(r.stats().handlers[1].in_flight, 2);
    r.handler_gone(UPPER, &mut out);
    // lower (index 2) has no process: unavailable.
    r.client_message(ALICE, msg("7", "lower", json!(7)), t0, &mut out);
    // An unknown type belongs to no type's figures.
    r.client_message(ALICE, msg("8", "nope", json!(8)), t0, &mut out);

    let s = r.stats();
    let echo = &s.handlers[0];
    assert_eq!(
        [Ok, Error, Timeout, Unavailable, Busy].map(|o| echo.outcome(o)),
        [1, 1, 1, 0, 0]
    );
    assert_eq!(echo.in_flight, 0);
    assert_eq!(echo.latency.count(), 2, "answers only, not the timeout");
    assert_eq!(echo.latency.sum_us(), 3_000);
    let upper = &s.handlers[1];
    assert_eq!(upper.requests, [0, 0, 0, 2, 1]);
    assert_eq!(upper.in_flight, 0);
    assert_eq!(s.handlers[2].requests, [0, 0, 0, 1, 0]);
    assert_eq!(s.messages.ok, 1);
    assert_eq!(s.messages.error, 7);
    let codes = [
        ErrorCode::HandlerTimeout,
        ErrorCode::HandlerBusy,
        ErrorCode::HandlerUnavailable,
        ErrorCode::HandlerNotRunning,
        ErrorCode::UnknownType,
    ];
    assert_eq!(codes.map(|c| s.errors.get(c)), [1, 1, 2, 1, 1]);
    assert_eq!(
        s.errors.iter().map(|(_, n)| n).sum::<u64>(),
        6,
        "the handler's own error code is not one of ours"
    );
}
