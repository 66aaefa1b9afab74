//! Router rules across servers: `sendServers`, peer messages and acks, relays, replies.

use std::time::Instant;

use serde_json::{Value, json};

use super::*;

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
