//! Router rules, asserted on the actions it returns.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::protocol::message::{Inbound, parse_handler_message, parse_inbound};

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
    out.drain(..)
        .map(|action| match action {
            Action::Send { to, body } | Action::Request { to, body, .. } => {
                (to, serde_json::from_slice(&body).unwrap())
            }
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

#[test]
fn send_servers_fans_out_and_answers_once_all_peers_reported() {
    let mut r = federated();
    let now = Instant::now();
    let (_, token) = request(&mut r, ALICE, msg("1", "echo", json!(null)), now);
    let mut out = Vec::new();
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","command":"sendServers","commandData":["b","c","d","zz","a"],"request":token},"payload":{"type":"chat","data":{"t":1}}})),
        now,
        &mut out,
    );
    let actions = sent(&mut out);
    assert_eq!(
        actions.len(),
        2,
        "one message per linked peer, no answer yet: {actions:?}"
    );
    assert_eq!(actions[0].0, PEER_B);
    assert_eq!(
        actions[0].1,
        json!({"header":{"scope":"server","msg":actions[0].1["header"]["msg"],"from":{"user":"alice","server":"a"},"hops":1},"payload":{"type":"chat","data":{"t":1}}})
    );
    assert_eq!(
        r.pending_for(ALICE),
        1,
        "the fan-out counts as pending for the client"
    );
    let msg_b = actions[0].1["header"]["msg"].as_str().unwrap().to_string();
    let msg_c = actions[1].1["header"]["msg"].as_str().unwrap().to_string();
    r.peer_ack(
        PEER_B,
        ack(
            &msg_b,
            json!({"header":{"status":"ok","delivered":["bob"],"offline":[]}}),
        ),
        Instant::now(),
        &mut out,
    );
    assert!(out.is_empty(), "still waiting for c");
    // An ack for c's message arriving over b's link is not c's ack.
    r.peer_ack(
        PEER_B,
        ack(&msg_c, json!({"header":{"status":"ok"}})),
        Instant::now(),
        &mut out,
    );
    assert!(out.is_empty());
    r.peer_down(PEER_C, &mut out);
    let actions = sent(&mut out);
    assert_eq!(actions.len(), 1);
    let reply = &actions[0].1;
    assert_eq!(actions[0].0, ALICE);
    assert_eq!(reply["header"]["id"], "1");
    assert_eq!(reply["header"]["status"], "ok");
    let servers = &reply["header"]["servers"];
    assert_eq!(
        servers["b"],
        json!({"status":"ok","delivered":["bob"],"offline":[]})
    );
    assert_eq!(servers["c"]["code"], "peer_unavailable");
    assert_eq!(servers["d"]["code"], "peer_unreachable");
    assert_eq!(servers["zz"]["code"], "unknown_peer");
    assert_eq!(servers["a"]["code"], "hop_limit");
    assert_eq!(r.pending_for(ALICE), 0);
}

#[test]
fn peer_messages_are_dispatched_with_scope_server_and_acked() {
    let mut r = federated();
    let now = Instant::now();
    let mut out = Vec::new();
    let incoming = |from: Value, hops: u32| {
        let frame = json!({"header":{"scope":"server","msg":"m7","from":from,"hops":hops},"payload":{"type":"echo","data":"hi"}});
        match crate::protocol::peer::parse_peer_frame_full(frame.to_string().as_bytes()).unwrap() {
            crate::protocol::peer::PeerFrame::Message(m) => m,
            other => panic!("{other:?}"),
        }
    };
    r.peer_message(
        PEER_B,
        incoming(json!({"user":"bob","server":"b"}), 1),
        now,
        &mut out,
    );
    let actions = sent(&mut out);
    assert_eq!(actions[0].0, ECHO);
    assert_eq!(actions[0].1["header"]["scope"], "server");
    assert_eq!(
        actions[0].1["header"]["from"],
        json!({"user":"bob","server":"b"})
    );
    let token = actions[0].1["header"]["request"]
        .as_str()
        .unwrap()
        .to_string();
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","command":"sendClients","commandData":["alice"],"request":token},"payload":{"type":"chat","data":"hi"}})),
        now,
        &mut out,
    );
    let actions = sent(&mut out);
    assert_eq!(
        actions
            .iter()
            .filter(|(to, _)| *to == ALICE || *to == ALICE2)
            .count(),
        2,
        "both of alice's connections"
    );
    let (to, ack) = actions.last().unwrap();
    assert_eq!(*to, PEER_B);
    assert_eq!(
        ack,
        &json!({"header":{"kind":"ack","msg":"m7","status":"ok","type":"chat","delivered":["alice"],"offline":[]}})
    );

    // A peer cannot speak for a third server, and hop counts are limited.
    r.peer_message(
        PEER_B,
        incoming(json!({"user":"carol","server":"c"}), 1),
        now,
        &mut out,
    );
    r.peer_message(PEER_B, incoming(json!({"server":"b"}), 9), now, &mut out);
    let actions = sent(&mut out);
    assert_eq!(actions[0].1["data"]["code"], "forged_origin");
    assert_eq!(actions[1].1["data"]["code"], "hop_limit");
    assert!(
        actions
            .iter()
            .all(|(to, f)| *to == PEER_B && f["header"]["kind"] == "ack")
    );
}

#[test]
fn relayed_messages_go_out_as_this_server_and_never_back() {
    let mut r = federated();
    let now = Instant::now();
    let mut out = Vec::new();
    let frame = json!({"header":{"scope":"server","msg":"9","from":{"user":"bob","server":"b"},"hops":1},"payload":{"type":"echo","data":1}});
    let crate::protocol::peer::PeerFrame::Message(m) =
        crate::protocol::peer::parse_peer_frame_full(frame.to_string().as_bytes()).unwrap()
    else {
        panic!()
    };
    r.peer_message(PEER_B, m, now, &mut out);
    let token = sent(&mut out)[0].1["header"]["request"]
        .as_str()
        .unwrap()
        .to_string();
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","command":"sendServers","commandData":["b","c"],"request":token},"payload":{"type":"chat","data":1}})),
        now,
        &mut out,
    );
    let actions = sent(&mut out);
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].0, PEER_C);
    assert_eq!(
        actions[0].1["header"]["from"],
        json!({"server":"a","handler":"echo"})
    );
    assert_eq!(actions[0].1["header"]["hops"], 2);
    let msg_c = actions[0].1["header"]["msg"].as_str().unwrap().to_string();
    r.expire(now + Duration::from_secs(5), &mut out);
    let actions = sent(&mut out);
    assert_eq!(
        actions[0].0, PEER_B,
        "b gets its ack with the nested report"
    );
    assert_eq!(actions[0].1["header"]["servers"]["b"]["code"], "hop_limit");
    assert_eq!(
        actions[0].1["header"]["servers"]["c"]["code"],
        "peer_timeout"
    );
    // c's late ack changes nothing.
    r.peer_ack(
        PEER_C,
        ack(&msg_c, json!({"header":{"status":"ok"}})),
        Instant::now(),
        &mut out,
    );
    assert!(out.is_empty());
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

fn one_at_a_time(correlate: Correlate, max_inflight: usize) -> Router {
    let mut r = router();
    r.add_type_with(
        "old",
        HandlerMode {
            correlate,
            max_inflight,
            max_queued: 1,
        },
    );
    r
}

#[test]
fn order_correlated_handlers_get_one_request_at_a_time() {
    const OLD1: ConnId = conn(20);
    const OLD2: ConnId = conn(21);
    let now = Instant::now();
    let mut r = one_at_a_time(Correlate::Order, 1);
    let mut out = Vec::new();
    r.client_message(ALICE, msg("n", "old", json!(0)), now, &mut out);
    assert_eq!(
        sent(&mut out)[0].1["data"]["code"],
        "handler_not_running",
        "no connection yet"
    );
    r.handler_connected(OLD1, "old");
    r.handler_connected(OLD2, "old");
    for (i, id) in ["1", "2", "3"].iter().enumerate() {
        r.client_message(ALICE, msg(id, "old", json!(i)), now, &mut out);
    }
    let first = sent(&mut out);
    let to: Vec<ConnId> = first.iter().map(|(c, _)| *c).collect();
    assert_eq!(to, [OLD1, OLD2], "one each; the third waits");
    r.client_message(ALICE, msg("4", "old", json!(4)), now, &mut out);
    let busy = sent(&mut out);
    assert_eq!(busy[0].0, ALICE);
    assert_eq!(
        busy[0].1["data"],
        json!({"error":"the \"old\" handler has 1 requests waiting","code":"handler_busy"})
    );
    // OLD2 answers without a token: that is the reply to its one request, "2".
    let plain = answer(json!({"header":{"status":"0"},"payload":{"type":"old","data":"two"}}));
    r.handler_message(OLD2, plain, now, &mut out);
    let next = sent(&mut out);
    assert_eq!(next[0].0, ALICE);
    assert_eq!(next[0].1["header"]["id"], "2");
    assert_eq!(next[0].1["data"], "two");
    assert_eq!(
        next[1].0, OLD2,
        "the waiting request goes to the free connection"
    );
    assert_eq!(next[1].1["payload"]["data"], 2);
    // OLD1 goes away: its request fails; the one on OLD2 stays.
    r.handler_gone(OLD1, &mut out);
    let gone = sent(&mut out);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].1["header"]["id"], "1");
    assert_eq!(gone[0].1["data"]["code"], "handler_unavailable");
}

#[test]
fn connection_correlated_handlers_are_dialled_per_request() {
    const D1: ConnId = conn(30);
    const D2: ConnId = conn(31);
    let now = Instant::now();
    let mut r = one_at_a_time(Correlate::Connection, 1);
    let mut out = Vec::new();
    r.client_message(ALICE, msg("1", "old", json!(1)), now, &mut out);
    r.client_message(ALICE, msg("2", "old", json!(2)), now, &mut out);
    let Action::Dial { kind, token, .. } = out.remove(0) else {
        panic!("a dial first: {out:?}")
    };
    assert!(out.is_empty(), "one connection open at most: {out:?}");
    assert_eq!(kind, "old");
    assert!(r.dial_opened(D1, "old", token));
    let plain = answer(json!({"header":{"status":"ok"},"payload":{"type":"old","data":"one"}}));
    r.handler_message(D1, plain, now, &mut out);
    let done = sent(&mut out);
    assert_eq!(done[0].1["header"]["id"], "1");
    assert_eq!(done[1], (D1, json!("close")));
    assert_eq!(done.len(), 2, "no dial while D1 is still open");
    r.handler_gone(D1, &mut out);
    let Action::Dial { token, .. } = out.remove(0) else {
        panic!("the waiting request is dialled once D1 closed")
    };
    r.dial_failed(
        "old",
        token,
        "cannot connect to /x: no socket there",
        &mut out,
    );
    assert_eq!(
        sent(&mut out)[0].1,
        json!({"header":{"status":"error","kind":"reply","id":"2"},"data":{"error":"the \"old\" handler could not be reached: cannot connect to /x: no socket there","code":"handler_unavailable"}})
    );
    // EOF before an answer: handler_unavailable.
    r.client_message(ALICE, msg("3", "old", json!(3)), now, &mut out);
    let Action::Dial { token, .. } = out.remove(0) else {
        panic!("dialled")
    };
    assert!(r.dial_opened(D2, "old", token));
    r.handler_gone(D2, &mut out);
    assert_eq!(sent(&mut out)[0].1["data"]["code"], "handler_unavailable");
}

#[test]
fn a_malformed_answer_naming_its_request_fails_it_at_once() {
    let now = Instant::now();
    let mut r = router();
    let (_, token) = request(&mut r, ALICE, msg("7", "echo", json!(1)), now);
    let mut out = Vec::new();
    let error = ErrorBody::new(ErrorCode::InvalidMessage, "header.status: bad");
    assert_eq!(
        r.handler_bad_frame(ECHO, Some("999"), &error, &mut out),
        None
    );
    assert!(out.is_empty(), "an unknown token fails nothing");
    let failed = r.handler_bad_frame(ECHO, Some(&token), &error, &mut out);
    assert_eq!(failed.as_deref(), Some(token.as_str()));
    assert_eq!(
        sent(&mut out),
        [(
            ALICE,
            json!({"header":{"status":"error","kind":"reply","id":"7"},"data":{"error":"the \"echo\" handler sent a malformed answer: header.status: bad","code":"bad_handler_reply"}})
        )]
    );
    assert_eq!(r.pending_for(ALICE), 0);
}

#[test]
fn numeric_error_status_is_a_handler_error_with_that_status() {
    let now = Instant::now();
    let mut r = router();
    let (_, token) = request(&mut r, ALICE, msg("8", "echo", json!(1)), now);
    let mut out = Vec::new();
    let frame =
        json!({"header":{"status":"3","request":token},"payload":{"type":"echo","data":"no"}});
    r.handler_message(ECHO, answer(frame), now, &mut out);
    assert_eq!(
        sent(&mut out),
        [(
            ALICE,
            json!({"header":{"status":"error","kind":"reply","id":"8"},"data":{"error":"the \"echo\" handler answered with status \"3\"","code":"handler_error","status":"3"}})
        )]
    );
}

#[test]
fn a_late_answer_on_an_order_connection_is_never_taken_for_the_next_request() {
    const OLD: ConnId = conn(20);
    let now = Instant::now();
    let mut r = one_at_a_time(Correlate::Order, 1);
    r.handler_connected(OLD, "old");
    let mut out = Vec::new();
    r.client_message(ALICE, msg("slow", "old", json!(1)), now, &mut out);
    assert_eq!(sent(&mut out)[0].0, OLD);
    r.expire(now + Duration::from_secs(6), &mut out);
    assert_eq!(sent(&mut out)[0].1["data"]["code"], "handler_timeout");
    // The next request waits: the connection still owes the slow one's answer.
    r.client_message(ALICE, msg("next", "old", json!(2)), now, &mut out);
    assert!(out.is_empty(), "{out:?}");
    let late = answer(json!({"header":{"status":"0"},"payload":{"type":"old","data":"late"}}));
    r.handler_message(OLD, late, now, &mut out);
    let next = sent(&mut out);
    assert_eq!(next.len(), 1, "the late answer reaches nobody: {next:?}");
    assert_eq!(next[0].0, OLD, "then the waiting request goes out");
    let own = answer(json!({"header":{"status":"0"},"payload":{"type":"old","data":"own"}}));
    r.handler_message(OLD, own, now, &mut out);
    let reply = sent(&mut out);
    assert_eq!(reply[0].1["header"]["id"], "next");
    assert_eq!(reply[0].1["data"], "own");
}

#[test]
fn a_sessions_info_reaches_its_handlers_only() {
    let mut r = federated();
    let now = Instant::now();
    let info = crate::protocol::message::Info(
        serde_json::value::RawValue::from_string(r#"{"role":"admin"}"#.into()).unwrap(),
    );
    r.set_client_info(ALICE, Some(info), &mut Vec::new());
    let (handler, token) = request(&mut r, ALICE, msg("1", "echo", json!(null)), now);
    assert_eq!(handler, ECHO);
    let mut out = Vec::new();
    // The handler's answer pushes to bob and sends to peer b, both as alice.
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","command":"sendClients","commandData":["bob"],"request":token},"payload":{"type":"chat","data":1}})),
        now,
        &mut out,
    );
    let actions = sent(&mut out);
    let push = actions.iter().find(|(to, _)| *to == BOB).unwrap();
    assert_eq!(
        push.1["header"]["from"],
        json!({"user":"alice","server":"a"}),
        "pushes never carry info"
    );
    let (_, token) = request(&mut r, ALICE, msg("2", "echo", json!(null)), now);
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","command":"sendServers","commandData":["b"],"request":token},"payload":{"type":"chat","data":1}})),
        now,
        &mut out,
    );
    let actions = sent(&mut out);
    assert_eq!(actions[0].0, PEER_B);
    assert_eq!(
        actions[0].1["header"]["from"],
        json!({"user":"alice","server":"a"}),
        "peers never get info"
    );
    // Nor is a peer's claim of info believed.
    let frame = json!({"header":{"scope":"server","msg":"m1","from":{"user":"bob","server":"b","info":{"role":"admin"}},"hops":1},"payload":{"type":"echo","data":"hi"}});
    let crate::protocol::peer::PeerFrame::Message(m) =
        crate::protocol::peer::parse_peer_frame_full(frame.to_string().as_bytes()).unwrap()
    else {
        panic!()
    };
    r.peer_message(PEER_B, m, now, &mut out);
    let actions = sent(&mut out);
    assert_eq!(
        actions[0].1["header"]["from"],
        json!({"user":"bob","server":"b"})
    );
}

/// A login sent to the auth handler type `echo`; the request the handler got.
fn login(r: &mut Router, from: ConnId, now: Instant) -> Vec<(ConnId, Value)> {
    let mut out = Vec::new();
    let listener = ("main".to_string(), "tcp");
    let auth = r#"{"apiKey":"k1"}"#;
    r.login_request(
        from,
        "echo",
        "127.0.0.1:9".into(),
        listener,
        auth,
        now,
        &mut out,
    );
    sent(&mut out)
}

/// The refusal a login got: (code, text, by the handler).
fn refusal(action: &(ConnId, Value)) -> (String, String, bool) {
    let refused = &action.1["refused"];
    assert_eq!(refused["header"]["status"], "error", "{action:?}");
    (
        refused["data"]["code"].as_str().unwrap().to_string(),
        refused["data"]["error"].as_str().unwrap().to_string(),
        action.1["by_handler"].as_bool().unwrap(),
    )
}

#[test]
fn a_login_goes_to_the_auth_handler_and_its_answer_comes_back() {
    let mut r = router();
    let now = Instant::now();
    const NEW: ConnId = conn(20);
    let got = login(&mut r, NEW, now);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, ECHO);
    let token = got[0].1["header"]["request"].as_str().unwrap().to_string();
    assert_eq!(
        got[0].1,
        json!({"header":{"kind":"login","request":token,
                         "from":{"address":"127.0.0.1:9","listener":"main","transport":"tcp"}},
               "payload":{"type":"bester.login","data":{"apiKey":"k1"}}})
    );
    assert_eq!(r.logins_in_flight(), 1);
    let mut out = Vec::new();
    let ok = json!({"header":{"status":"ok","command":"reply","request":token},
                    "payload":{"type":"bester.login","data":{"user":"carol","info":{"plan":"pro"}}}});
    r.handler_message(ECHO, answer(ok), now, &mut out);
    assert_eq!(
        sent(&mut out),
        [(
            NEW,
            json!({"accepted": r#"{"user":"carol","info":{"plan":"pro"}}"#})
        )]
    );
    assert_eq!(r.logins_in_flight(), 0);

    // The handler's own refusal reaches the client as it is, counted as the handler's.
    let got = login(&mut r, NEW, now);
    let token = got[0].1["header"]["request"].as_str().unwrap().to_string();
    let no = json!({"header":{"status":"error","command":"reply","request":token},
                    "payload":{"type":"bester.login","data":{"code":"bad_api_key","error":"unknown key"}}});
    r.handler_message(ECHO, answer(no), now, &mut out);
    let got = sent(&mut out);
    assert_eq!(
        refusal(&got[0]),
        ("bad_api_key".into(), "unknown key".into(), true)
    );
    assert_eq!(got[0].1["refused"]["header"].get("id"), None);

    // A login is answered with a reply, nothing else.
    let got = login(&mut r, NEW, now);
    let token = got[0].1["header"]["request"].as_str().unwrap().to_string();
    let push = json!({"header":{"status":"ok","command":"sendClients","commandData":["bob"],"request":token},
                      "payload":{"type":"x","data":1}});
    r.handler_message(ECHO, answer(push), now, &mut out);
    let got = sent(&mut out);
    assert_eq!(got.len(), 1, "nothing is pushed to bob: {got:?}");
    assert_eq!(
        refusal(&got[0]),
        (
            "bad_handler_reply".into(),
            "the \"echo\" auth handler answered a login with a command other than \"reply\"".into(),
            false
        )
    );
}

#[test]
fn logins_are_bounded_timed_and_failed_like_requests() {
    let mut r = router();
    let now = Instant::now();
    // max_logins = 2: the third is refused at once.
    login(&mut r, conn(20), now);
    login(&mut r, conn(21), now);
    let got = login(&mut r, conn(22), now);
    assert_eq!(
        refusal(&got[0]),
        (
            "handler_busy".into(),
            "the \"echo\" auth handler has 2 logins in flight".into(),
            false
        )
    );
    // login_timeout = 1 s, not request_timeout (5 s).
    let mut out = Vec::new();
    r.expire(now + Duration::from_millis(999), &mut out);
    assert!(out.is_empty(), "{out:?}");
    r.expire(now + Duration::from_secs(1), &mut out);
    let got = sent(&mut out);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        refusal(&got[0]),
        (
            "handler_timeout".into(),
            "the \"echo\" handler did not answer within 1000 ms".into(),
            false
        )
    );
    assert_eq!(r.logins_in_flight(), 0);
    // The handler going away fails its logins; with no handler, not running.
    login(&mut r, conn(23), now);
    r.handler_gone(ECHO, &mut out);
    let got = sent(&mut out);
    assert_eq!(refusal(&got[0]).0, "handler_unavailable");
    let got = login(&mut r, conn(24), now);
    assert_eq!(
        refusal(&got[0]),
        (
            "handler_not_running".into(),
            "the \"echo\" handler is not running".into(),
            false
        )
    );
    // Shutdown answers logins in flight too.
    r.handler_connected(ECHO, "echo");
    login(&mut r, conn(25), now);
    r.fail_all(ErrorCode::ShuttingDown, &mut out);
    let got = sent(&mut out);
    assert_eq!(refusal(&got[0]).0, "shutting_down");
    assert_eq!(r.logins_in_flight(), 0);
}

#[test]
fn requests_wait_for_a_type_that_is_starting() {
    let mut r = router();
    let now = Instant::now();
    let mut out = Vec::new();
    const LOWER: ConnId = conn(13);
    // Not starting, no connection: refused at once, as always.
    r.client_message(ALICE, msg("1", "lower", json!(1)), now, &mut out);
    assert_eq!(sent(&mut out)[0].1["data"]["code"], "handler_not_running");
    // Starting: it waits, and goes out when a connection comes.
    r.set_starting("lower", true, &mut out);
    r.client_message(ALICE, msg("2", "lower", json!(2)), now, &mut out);
    r.client_message(ALICE, msg("3", "lower", json!(3)), now, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(r.waiting_for("lower"), 2);
    assert_eq!(r.pending_for(ALICE), 2);
    r.handler_connected(LOWER, "lower");
    r.start_waiting(&mut out);
    let got = sent(&mut out);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter()
            .all(|(to, f)| *to == LOWER && f["header"]["kind"] == "request")
    );
    assert_eq!(got[0].1["payload"]["data"], 2, "oldest first");
    let token = got[0].1["header"]["request"].as_str().unwrap().to_string();
    let ok =
        json!({"header":{"status":"ok","request":token},"payload":{"type":"lower","data":"two"}});
    r.handler_message(LOWER, answer(ok), now, &mut out);
    let got = sent(&mut out);
    assert_eq!((got[0].0, &got[0].1["header"]["id"]), (ALICE, &json!("2")));
}

#[test]
fn waiting_for_a_start_is_bounded_and_ends() {
    let mut r = router();
    r.add_type_with(
        "w",
        HandlerMode {
            max_queued: 2,
            ..HandlerMode::default()
        },
    );
    let now = Instant::now();
    let mut out = Vec::new();
    r.set_starting("w", true, &mut out);
    for i in 0..3 {
        r.client_message(ALICE, msg(&i.to_string(), "w", json!(i)), now, &mut out);
    }
    let got = sent(&mut out);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (
            &got[0].1["header"]["id"],
            &got[0].1["data"]["code"],
            &got[0].1["data"]["error"]
        ),
        (
            &json!("2"),
            &json!("handler_busy"),
            &json!("the \"w\" handler is starting and has 2 requests waiting")
        )
    );
    // The deadline passes with no connection: handler_not_running, not handler_timeout.
    r.expire(now + Duration::from_secs(5), &mut out);
    let got = sent(&mut out);
    assert_eq!(got.len(), 2, "{got:?}");
    for (_, frame) in &got {
        assert_eq!(frame["data"]["code"], "handler_not_running", "{frame}");
        assert_eq!(frame["data"]["error"], "the \"w\" handler is not running");
    }
    // A type that stops starting (its processes keep failing) refuses what waits, at once.
    r.client_message(ALICE, msg("9", "w", json!(9)), now, &mut out);
    assert!(out.is_empty());
    r.set_starting("w", false, &mut out);
    let got = sent(&mut out);
    assert_eq!(
        (&got[0].1["header"]["id"], &got[0].1["data"]["code"]),
        (&json!("9"), &json!("handler_not_running"))
    );
    assert_eq!(r.waiting_for("w"), 0);
    assert_eq!(r.pending_for(ALICE), 0);
}

#[test]
fn a_push_cannot_ask_for_replies() {
    let mut r = federated();
    let mut out = Vec::new();
    r.handler_message(
        ECHO,
        answer(json!({"header":{"status":"ok","command":"sendServers","commandData":["b"],"replies":true,"id":"p1"},"payload":{"type":"news","data":1}})),
        Instant::now(),
        &mut out,
    );
    assert_eq!(
        sent(&mut out),
        vec![(
            ECHO,
            json!({"header":{"kind":"report","status":"error","id":"p1"},"data":{"error":"a push gets no replies: \"replies\" needs a request to answer","code":"bad_handler_reply"}})
        )],
        "nothing goes to b"
    );
}

#[test]
fn a_reply_too_large_for_an_ack_is_refused_not_sent_to_the_peer() {
    let mut r = federated();
    let now = Instant::now();
    let mut out = Vec::new();
    let frame = json!({"header":{"scope":"server","msg":"m9","from":{"user":"bob","server":"b"},"hops":1},"payload":{"type":"echo","data":1}});
    let crate::protocol::peer::PeerFrame::Message(m) =
        crate::protocol::peer::parse_peer_frame_full(frame.to_string().as_bytes()).unwrap()
    else {
        panic!()
    };
    r.peer_message(PEER_B, m, now, &mut out);
    let token = sent(&mut out)[0].1["header"]["request"]
        .as_str()
        .unwrap()
        .to_string();
    // The ack with this data and its header would be one byte over the 1024-byte limit.
    let data = "y".repeat(951);
    let body =
        json!({"header":{"status":"ok","request":token},"payload":{"type":"echo","data":data}});
    r.handler_message(ECHO, answer(body), now, &mut out);
    assert_eq!(
        sent(&mut out),
        vec![(
            PEER_B,
            json!({"header":{"kind":"ack","msg":"m9","status":"error"},"data":{"error":"with its ack header the answer would be 1025 bytes, over the limit of 1024 bytes","code":"frame_too_large"}})
        )]
    );
}
