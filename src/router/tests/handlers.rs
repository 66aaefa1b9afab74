//! Router rules for handlers that correlate answers by order or by connection, and for
//! malformed or late answers.

use std::time::Instant;

use serde_json::json;

use super::*;

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
