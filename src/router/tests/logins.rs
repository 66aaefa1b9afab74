//! Router rules for logins through an auth handler, and for requests to a type that is starting.

use std::time::Instant;

use serde_json::{Value, json};

use super::*;

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
