//! Several users on one connection against the real daemon (PROTOCOL.md §2 "Several users on
//! one connection"): a gateway user's session negotiates `multiplex`, attaches users with their
//! passwords or resume tokens, sends as each of them (`header.user`: the handler sees each as
//! `from.user`), gets their pushes tagged with whom they are for (and what was stored for them
//! while they were offline, after the attach's answer), detaches them, loses one alone
//! when it is revoked (deleted, new password, logged out), and loses all when the gateway right is
//! taken away; a non-gateway user gets no `multiplex`; the limit; presence of an attached user as
//! a subscriber sees it.

mod common;

use besterd::client::Client;
use common::{Broker, DEADLINE, besterd_cmd, code, eventually, handler};
use serde_json::{Value, json};

const USERS: &[(&str, &str)] = &[
    ("gw", "gw-pw"),
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("carol", "carol-pw"),
];

fn broker(server_keys: &str) -> Broker {
    let tables = format!(
        "[handlers.faulty]\n{}\n[handlers.greet]\n{}\n",
        handler("python3", "tests/handlers/faulty.py"),
        handler("python3", "tests/handlers/greeter.py"),
    );
    let b = Broker::start_with(server_keys, &tables, USERS);
    user_cmd(&b, &["gateway", "gw"]);
    b
}

/// `besterd user ACTION… --users <the broker's store>`; panics unless it succeeds.
fn user_cmd(b: &Broker, args: &[&str]) -> String {
    let store = b.users();
    let mut all = vec!["user", "--users", store.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = besterd_cmd(&all, None);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Log in as `user` offering `features`; the connection and the identify reply.
fn login_offering(b: &Broker, user: &str, password: &str, features: Value) -> (Client, Value) {
    let mut client = b.connect();
    client
        .send(&json!({"header":{"identify":{"type":"client","authentication":{"username":user,"password":password},"features":features}}}))
        .unwrap();
    let reply = client.recv().unwrap().expect("an identify reply");
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    (client, reply)
}

/// The gateway's session, with `multiplex`.
fn gateway(b: &Broker) -> Client {
    let (client, reply) = login_offering(b, "gw", "gw-pw", json!(["multiplex"]));
    assert_eq!(reply["data"]["features"], json!(["multiplex"]), "{reply}");
    client
}

/// The next frame that answers `id` (pushes before it are returned too, in order).
fn answer(client: &mut Client, id: &str) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let frame = client.recv().unwrap().expect("a frame before the close");
        if frame["header"]["kind"] == "reply" && frame["header"]["id"] == id {
            return (frame, before);
        }
        before.push(frame);
    }
}

/// Send a message as attached user `user` and wait for its answer.
fn as_user(client: &mut Client, user: &str, id: &str, kind: &str, data: Value) -> Value {
    client
        .send(&json!({"header":{"scope":"client","id":id,"user":user},"payload":{"type":kind,"data":data}}))
        .unwrap();
    answer(client, id).0
}

fn attach(client: &mut Client, id: &str, data: Value) -> Value {
    client.message(id, "bester.attach", &data).unwrap();
    answer(client, id).0
}

fn attach_password(client: &mut Client, user: &str, password: &str) -> Value {
    let reply = attach(
        client,
        &format!("attach-{user}"),
        json!({"user":user,"password":password}),
    );
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    reply
}

fn error(id: &str, code: &str, text: &str) -> Value {
    json!({"header":{"status":"error","kind":"reply","id":id},"data":{"error":text,"code":code}})
}

fn tagged_error(user: &str, id: &str, code: &str, text: &str) -> Value {
    json!({"header":{"user":user,"status":"error","kind":"reply","id":id},"data":{"error":text,"code":code}})
}

fn ping(client: &mut Client) {
    let pong = client.request("p", "bester.ping", &json!(null)).unwrap();
    assert_eq!(pong["data"], "pong", "{pong}");
}

#[test]
fn attached_users_send_as_themselves_get_their_pushes_and_detach() {
    let b = broker("");
    let mut gw = gateway(&b);
    let reply = attach_password(&mut gw, "bob", "bob-pw");
    assert_eq!(
        reply["header"],
        json!({"status":"ok","kind":"reply","id":"attach-bob","type":"bester.attach"})
    );
    assert_eq!(reply["data"]["user"], "bob");
    assert_eq!(reply["data"]["server"], "test");
    let bob_resume = reply["data"]["resume"].as_str().unwrap().to_string();
    assert!(bob_resume.starts_with("v1."), "{reply}");
    assert!(
        reply["data"]["resume_expires"].as_u64().is_some(),
        "{reply}"
    );
    attach_password(&mut gw, "carol", "carol-pw");

    // The handler sees each as the sender; each answer says whom it is for.
    for user in ["bob", "carol"] {
        let reply = as_user(&mut gw, user, "h", "faulty", json!({"action":"header"}));
        assert_eq!(reply["header"]["user"], user, "{reply}");
        assert_eq!(reply["header"]["status"], "ok", "{reply}");
        assert_eq!(
            reply["data"]["header"]["from"],
            json!({"user":user,"server":"test"}),
            "{reply}"
        );
    }
    // The gateway's own messages are still its own.
    let own = gw
        .request("own", "faulty", &json!({"action":"header"}))
        .unwrap();
    assert_eq!(own["data"]["header"]["from"]["user"], "gw", "{own}");
    assert!(own["header"].get("user").is_none(), "{own}");

    // A push to both reaches the gateway once per user, each saying whom it is for.
    let mut alice = b.login("alice", "alice-pw");
    let sent = alice
        .request(
            "s",
            "faulty",
            &json!({"action":"send_to","users":["bob","carol"],"text":"hi"}),
        )
        .unwrap();
    assert_eq!(
        sent["header"]["delivered"],
        json!(["bob", "carol"]),
        "{sent}"
    );
    let mut pushes: Vec<Value> = (0..2).map(|_| gw.recv().unwrap().unwrap()).collect();
    pushes.sort_by_key(|p| p["header"]["user"].as_str().unwrap().to_string());
    for (push, user) in pushes.iter().zip(["bob", "carol"]) {
        assert_eq!(push["header"]["kind"], "push", "{push}");
        assert_eq!(push["header"]["user"], user, "{push}");
        assert_eq!(push["header"]["from"]["user"], "alice", "{push}");
        assert_eq!(push["data"]["text"], "hi", "{push}");
    }

    let whoami = as_user(&mut gw, "bob", "w", "bester.whoami", json!(null));
    assert_eq!(
        whoami["data"],
        json!({"user":"bob","server":"test","connections":1,"gateway":"gw"})
    );

    // Detached: its messages get session_revoked with their id; a name never attached, forbidden.
    let detached = gw
        .request("d", "bester.detach", &json!({"user":"bob"}))
        .unwrap();
    assert_eq!(
        detached,
        json!({"header":{"status":"ok","kind":"reply","id":"d","type":"bester.detach"},"data":{"user":"bob","server":"test"}})
    );
    let after = as_user(&mut gw, "bob", "b2", "faulty", json!({"action":"echo"}));
    assert_eq!(
        after,
        error(
            "b2",
            "session_revoked",
            "user \"bob\" is no longer attached: it was detached"
        )
    );
    let never = as_user(&mut gw, "dave", "d1", "faulty", json!({"action":"echo"}));
    assert_eq!(
        never,
        error(
            "d1",
            "forbidden",
            "user \"dave\" is not attached to this connection"
        )
    );
    let again = gw
        .request("d2", "bester.detach", &json!({"user":"bob"}))
        .unwrap();
    assert_eq!(
        again,
        error(
            "d2",
            "forbidden",
            "user \"bob\" is not attached to this connection"
        )
    );
    // carol was not touched.
    let carol = as_user(
        &mut gw,
        "carol",
        "c",
        "faulty",
        json!({"action":"echo","n":1}),
    );
    assert_eq!(carol["data"], json!({"action":"echo","n":1}), "{carol}");

    // bob again, by the resume token the first attach gave.
    let resumed = attach(&mut gw, "r", json!({"resume": bob_resume}));
    assert_eq!(resumed["header"]["status"], "ok", "{resumed}");
    assert_eq!(resumed["data"]["user"], "bob", "{resumed}");
    let reply = as_user(&mut gw, "bob", "b3", "faulty", json!({"action":"header"}));
    assert_eq!(reply["data"]["header"]["from"]["user"], "bob", "{reply}");

    // bob logs out: detached, and the tokens of its session die.
    let out = as_user(&mut gw, "bob", "lo", "bester.logout", json!(null));
    assert_eq!(
        out,
        json!({"header":{"user":"bob","status":"ok","kind":"reply","id":"lo","type":"bester.logout"},"data":{"user":"bob","server":"test"}})
    );
    let refused = attach(&mut gw, "r2", json!({"resume": bob_resume}));
    assert_eq!(
        refused,
        error(
            "r2",
            "resume_refused",
            "the resume token's session logged out"
        )
    );
    let after = as_user(&mut gw, "bob", "b4", "faulty", json!({"action":"echo"}));
    assert_eq!(
        after,
        error(
            "b4",
            "session_revoked",
            "user \"bob\" is no longer attached: it logged out"
        )
    );
    ping(&mut gw);
}

#[test]
fn an_attach_being_checked_pauses_nobody() {
    let b = broker("");
    let mut gw = gateway(&b);
    attach_password(&mut gw, "carol", "carol-pw");
    // Two attaches (argon2 on the verifier threads), then pings from carol and the gateway: the
    // pings are answered first, the attaches when their checks are done.
    for (id, user, password) in [("ab", "bob", "bob-pw"), ("aa", "alice", "alice-pw")] {
        gw.message(
            id,
            "bester.attach",
            &json!({"user":user,"password":password}),
        )
        .unwrap();
    }
    gw.send(&json!({"header":{"scope":"client","id":"pc","user":"carol"},"payload":{"type":"bester.ping"}}))
        .unwrap();
    // Sent as bob before bob's attach is answered: bob is not attached yet.
    gw.send(&json!({"header":{"scope":"client","id":"early","user":"bob"},"payload":{"type":"bester.ping"}}))
        .unwrap();
    gw.message("pg", "bester.ping", &json!(null)).unwrap();
    let order: Vec<String> = (0..5)
        .map(|_| {
            let frame = gw.recv().unwrap().expect("a frame");
            assert_eq!(frame["header"]["kind"], "reply", "{frame}");
            if frame["header"]["id"] == "early" {
                assert_eq!(
                    frame,
                    error(
                        "early",
                        "forbidden",
                        "user \"bob\" is not attached to this connection"
                    )
                );
            } else if frame["header"]["id"].as_str().unwrap().starts_with('a') {
                assert_eq!(frame["header"]["status"], "ok", "{frame}");
            }
            frame["header"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(order[..3], ["pc", "early", "pg"], "{order:?}");
    let mut attaches = order[3..].to_vec();
    attaches.sort();
    assert_eq!(attaches, ["aa", "ab"]);
    for user in ["alice", "bob", "carol"] {
        let reply = as_user(&mut gw, user, "h", "faulty", json!({"action":"header"}));
        assert_eq!(reply["data"]["header"]["from"]["user"], user, "{reply}");
    }
}

#[test]
fn a_wrong_password_is_refused_exactly_and_counts_as_a_failed_login() {
    let b = broker("login_failures_per_user = 2");
    let mut gw = gateway(&b);
    for (id, user, password) in [("w1", "bob", "nope"), ("w2", "zed", "bob-pw")] {
        let reply = attach(&mut gw, id, json!({"user":user,"password":password}));
        assert_eq!(
            reply,
            error(id, "auth_failed", "invalid username or password")
        );
    }
    // The gateway stays, and nobody was attached.
    ping(&mut gw);
    let reply = as_user(&mut gw, "bob", "m", "faulty", json!({"action":"echo"}));
    assert_eq!(code(&reply), "forbidden", "{reply}");
    // bob's failures count as bob's failed logins: past the limit, not even checked.
    let reply = attach(&mut gw, "w3", json!({"user":"bob","password":"nope"}));
    assert_eq!(code(&reply), "auth_failed", "{reply}");
    let reply = attach(&mut gw, "w4", json!({"user":"bob","password":"bob-pw"}));
    assert_eq!(
        reply,
        error(
            "w4",
            "rate_limited",
            "too many failed logins for this user or from this address; try again later"
        )
    );
    // Never without a credential; a forged resume token is refused as at login.
    for (data, text) in [
        (
            json!({"user":"carol"}),
            "bad data for \"bester.attach\": a credential is needed: \"password\" (with \"user\"), \"resume\" or \"token\"",
        ),
        (
            json!({"user":"carol","password":"carol-pw","resume":"v1.x.y"}),
            "bad data for \"bester.attach\": exactly one of \"password\", \"resume\" and \"token\" is given",
        ),
    ] {
        let reply = attach(&mut gw, "bad", data);
        assert_eq!(reply, error("bad", "invalid_message", text));
    }
    let forged = attach(&mut gw, "f", json!({"resume":"v1.e30.AAAA"}));
    assert_eq!(code(&forged), "resume_refused", "{forged}");
    // carol's own password still attaches carol.
    attach_password(&mut gw, "carol", "carol-pw");
}

#[test]
fn a_user_without_the_gateway_right_gets_no_multiplex_and_may_not_attach() {
    let b = broker("");
    let forbidden = "bester.attach and header.user are for a gateway user's session that negotiated the feature \"multiplex\"";
    let offered = json!(["multiplex", "compress"]);
    let (_compressed, reply) = login_offering(&b, "alice", "alice-pw", offered);
    assert_eq!(reply["data"]["features"], json!(["compress"]), "{reply}");
    // (That session compresses now; the checks below use one that offered multiplex alone.)
    let (mut alice, reply) = login_offering(&b, "alice", "alice-pw", json!(["multiplex"]));
    assert_eq!(reply["data"]["features"], json!([]), "{reply}");
    let reply = attach(&mut alice, "a", json!({"user":"bob","password":"bob-pw"}));
    assert_eq!(reply, error("a", "forbidden", forbidden));
    let reply = as_user(&mut alice, "bob", "m", "faulty", json!({"action":"echo"}));
    assert_eq!(reply, error("m", "forbidden", forbidden));
    ping(&mut alice);
    // A gateway user that did not offer multiplex has not got it either.
    let mut plain = b.login("gw", "gw-pw");
    let reply = attach(&mut plain, "a", json!({"user":"bob","password":"bob-pw"}));
    assert_eq!(reply, error("a", "forbidden", forbidden));
}

#[test]
fn revoking_one_attached_user_leaves_the_gateway_and_the_others() {
    let b = broker("");
    let mut gw = gateway(&b);
    attach_password(&mut gw, "bob", "bob-pw");
    attach_password(&mut gw, "carol", "carol-pw");
    attach_password(&mut gw, "alice", "alice-pw");

    user_cmd(&b, &["del", "bob"]);
    let revoked = gw.recv().unwrap().expect("bob's revocation");
    assert_eq!(
        revoked,
        json!({"header":{"user":"bob","status":"error","kind":"reply"},"data":{"error":"session revoked: the user was deleted; attach again","code":"session_revoked"}})
    );
    let after = as_user(&mut gw, "bob", "b", "faulty", json!({"action":"echo"}));
    assert_eq!(
        after,
        error(
            "b",
            "session_revoked",
            "user \"bob\" is no longer attached: session revoked: the user was deleted; attach again"
        )
    );
    let carol = as_user(&mut gw, "carol", "c", "faulty", json!({"action":"echo"}));
    assert_eq!(carol["header"]["status"], "ok", "{carol}");

    // A new password for carol: carol alone goes.
    let out = besterd_cmd(
        &[
            "user",
            "--users",
            b.users().to_str().unwrap(),
            "passwd",
            "carol",
            "--password-stdin",
        ],
        Some("carol-new-pw"),
    );
    assert!(out.status.success());
    let revoked = gw.recv().unwrap().expect("carol's revocation");
    assert_eq!(revoked["header"]["user"], "carol", "{revoked}");
    assert_eq!(
        revoked["data"]["error"],
        "session revoked: the password was changed elsewhere; attach again"
    );
    let alice = as_user(&mut gw, "alice", "a", "faulty", json!({"action":"echo"}));
    assert_eq!(alice["header"]["status"], "ok", "{alice}");
    ping(&mut gw);

    // The gateway right taken away: every attached user goes, the gateway's session stays.
    let said = user_cmd(&b, &["gateway", "gw", "--clear"]);
    assert_eq!(said, "user gw is no longer a gateway\n");
    let revoked = gw.recv().unwrap().expect("alice's revocation");
    assert_eq!(
        revoked,
        json!({"header":{"user":"alice","status":"error","kind":"reply"},"data":{"error":"session revoked: the gateway's right to attach users was taken away; attach again","code":"session_revoked"}})
    );
    ping(&mut gw);
    let reply = attach(
        &mut gw,
        "again",
        json!({"user":"alice","password":"alice-pw"}),
    );
    assert_eq!(code(&reply), "forbidden", "{reply}");
}

#[test]
fn attached_users_per_connection_are_bounded() {
    let b = broker("max_attached_per_connection = 2");
    let mut gw = gateway(&b);
    attach_password(&mut gw, "bob", "bob-pw");
    attach_password(&mut gw, "carol", "carol-pw");
    let reply = attach(&mut gw, "x", json!({"user":"alice","password":"alice-pw"}));
    assert_eq!(
        reply,
        error(
            "x",
            "limit_reached",
            "this connection has 2 users attached (or being attached), the most it may have"
        )
    );
    // Attaching one already attached again is no new one.
    attach_password(&mut gw, "bob", "bob-pw");
    let _ = gw
        .request("d", "bester.detach", &json!({"user":"carol"}))
        .unwrap();
    attach_password(&mut gw, "alice", "alice-pw");
    // Another gateway connection has its own count.
    let mut gw2 = gateway(&b);
    attach_password(&mut gw2, "carol", "carol-pw");
}

#[test]
fn an_attached_user_is_online_while_attached() {
    let b = broker("");
    let mut alice = b.login("alice", "alice-pw");
    let sub = alice
        .request(
            "sub",
            "bester.presence.subscribe",
            &json!({"users":["bob"]}),
        )
        .unwrap();
    assert_eq!(sub["data"]["users"][0]["state"], "offline", "{sub}");
    let presence = |state: &str, n: u64| json!({"header":{"status":"ok","kind":"presence"},"data":{"user":"bob","server":"test","state":state,"connections":n}});
    let mut gw = gateway(&b);
    attach_password(&mut gw, "bob", "bob-pw");
    assert_eq!(alice.recv().unwrap().unwrap(), presence("online", 1));
    let bob = b.login("bob", "bob-pw");
    assert_eq!(alice.recv().unwrap().unwrap(), presence("online", 2));
    let _ = gw
        .request("d", "bester.detach", &json!({"user":"bob"}))
        .unwrap();
    assert_eq!(alice.recv().unwrap().unwrap(), presence("online", 1));
    drop(bob);
    assert_eq!(alice.recv().unwrap().unwrap(), presence("offline", 0));
    // The gateway's close lets its users go.
    attach_password(&mut gw, "bob", "bob-pw");
    assert_eq!(alice.recv().unwrap().unwrap(), presence("online", 1));
    drop(gw);
    assert_eq!(alice.recv().unwrap().unwrap(), presence("offline", 0));
    // An attached user subscribes too: its presence frames say whom they are for.
    let mut gw = gateway(&b);
    attach_password(&mut gw, "carol", "carol-pw");
    let sub = as_user(
        &mut gw,
        "carol",
        "s",
        "bester.presence.subscribe",
        json!({"users":["bob"]}),
    );
    assert_eq!(sub["header"]["user"], "carol", "{sub}");
    let _bob = b.login("bob", "bob-pw");
    let frame = gw.recv().unwrap().unwrap();
    assert_eq!(frame["header"]["user"], "carol", "{frame}");
    assert_eq!(frame["data"]["state"], "online", "{frame}");
    eventually("the log line of the attach", || {
        b.log()
            .contains("user=gw attached user=carol by password")
            .then_some(())
    });
}

#[test]
fn an_attached_user_acknowledges_its_stored_pushes() {
    let tables = format!(
        "[handlers.greet]\n{}\noffline = \"store\"\n",
        handler("python3", "tests/handlers/greeter.py"),
    );
    let b = Broker::start_with("", &tables, USERS);
    user_cmd(&b, &["gateway", "gw"]);
    let mut gw = gateway(&b);
    attach_password(&mut gw, "bob", "bob-pw");
    let mut alice = b.login("alice", "alice-pw");
    let sent = alice
        .request("s", "greet", &json!({"to": ["bob"], "n": 1}))
        .unwrap();
    assert_eq!(sent["header"]["delivered"], json!(["bob"]), "{sent}");
    let push = gw.recv().unwrap().expect("bob's push");
    assert_eq!(
        (&push["header"]["kind"], &push["header"]["user"]),
        (&json!("push"), &json!("bob")),
        "{push}"
    );
    let msg = push["header"]["msg"]
        .as_str()
        .unwrap_or_else(|| panic!("no durable id: {push}"))
        .to_string();
    // Acknowledged as bob through the gateway: deleted from bob's queue.
    let acked = as_user(&mut gw, "bob", "a", "bester.ack", json!({"msgs": [msg]}));
    assert_eq!(acked["header"]["user"], "bob", "{acked}");
    assert_eq!(acked["data"], json!({"acked": 1}), "{acked}");
    let bad = as_user(&mut gw, "bob", "b", "bester.ack", json!({"msgs": 7}));
    assert_eq!(
        (&bad["header"]["status"], &bad["data"]["code"]),
        (&json!("error"), &json!("invalid_message")),
        "{bad}"
    );
    // bob's own login later finds nothing left for him; without the ack it would come again.
    as_user(&mut gw, "bob", "d", "bester.detach", json!(null));
    let mut bob = b.login("bob", "bob-pw");
    let left = bob
        .request("empty", "bester.ack", &json!({"msgs": []}))
        .unwrap();
    assert_eq!(left["data"], json!({"acked": 0}), "{left}");
    assert!(!bob.has_frame(), "a push came again after its ack");
}

#[test]
fn an_attached_user_gets_its_stored_backlog_after_the_attach_answer() {
    let tables = format!(
        "[handlers.greet]\n{}\noffline = \"store\"\n",
        handler("python3", "tests/handlers/greeter.py"),
    );
    let b = Broker::start_with("", &tables, USERS);
    user_cmd(&b, &["gateway", "gw"]);
    let mut alice = b.login("alice", "alice-pw");
    for n in 0..2 {
        let sent = alice
            .request(&format!("s{n}"), "greet", &json!({"to": ["bob"], "n": n}))
            .unwrap();
        assert_eq!(sent["header"]["stored"], json!(["bob"]), "{sent}");
    }
    let mut gw = gateway(&b);
    // The answer first, then bob's backlog, in order, each saying it is for bob.
    let (answer, before) = {
        gw.message(
            "at",
            "bester.attach",
            &json!({"user":"bob","password":"bob-pw"}),
        )
        .unwrap();
        answer(&mut gw, "at")
    };
    assert_eq!(answer["header"]["status"], "ok", "{answer}");
    assert!(before.is_empty(), "{before:?}");
    let pushes: Vec<Value> = (0..2)
        .map(|_| gw.recv().unwrap().expect("a push"))
        .collect();
    for (n, p) in pushes.iter().enumerate() {
        assert_eq!(p["header"]["kind"], "push", "{p}");
        assert_eq!(p["header"]["user"], "bob", "{p}");
        assert_eq!(p["header"]["stored"], true, "{p}");
        assert_eq!(p["data"]["n"], n as u64, "{p}");
    }
    let first = pushes[0]["header"]["msg"].as_str().unwrap().to_string();
    let second = pushes[1]["header"]["msg"].as_str().unwrap().to_string();
    let acked = as_user(&mut gw, "bob", "a", "bester.ack", json!({"msgs": [first]}));
    assert_eq!(acked["data"], json!({"acked": 1}), "{acked}");
    // Detached before acknowledging the second: it comes again on the next attach, alone.
    as_user(&mut gw, "bob", "d", "bester.detach", json!(null));
    attach_password(&mut gw, "bob", "bob-pw");
    let again = gw.recv().unwrap().expect("the second again");
    assert_eq!(
        (&again["header"]["user"], &again["header"]["msg"]),
        (&json!("bob"), &json!(second)),
        "{again}"
    );
    let acked = as_user(&mut gw, "bob", "b", "bester.ack", json!({"upto": second}));
    assert_eq!(acked["data"], json!({"acked": 1}), "{acked}");
    // Nothing else: the next answer comes before any push.
    let empty = as_user(&mut gw, "bob", "e", "bester.ack", json!({"msgs": []}));
    assert_eq!(empty["data"], json!({"acked": 0}), "{empty}");
    assert!(!gw.has_frame(), "a push came again after its ack");
}

#[test]
fn what_an_attached_user_may_not_do() {
    let b = broker("");
    let mut gw = gateway(&b);
    attach_password(&mut gw, "bob", "bob-pw");
    for kind in [
        "bester.passwd",
        "bester.attach",
        "bester.authenticate",
        "bester.token",
    ] {
        let reply = as_user(&mut gw, "bob", "x", kind, json!({}));
        assert_eq!(
            reply,
            tagged_error(
                "bob",
                "x",
                "forbidden",
                &format!("{kind:?} is not available to an attached user")
            )
        );
    }
    // A handler's redirect is not followed for an attached user: answered, and it stays.
    let redirect = json!({"redirect":{"test":{"url":"bester://127.0.0.1:1"}}});
    let reply = as_user(&mut gw, "bob", "rd", "greet", redirect);
    assert_eq!(
        reply,
        tagged_error(
            "bob",
            "rd",
            "redirected",
            "the handler redirected this user, and an attached user is not redirected"
        )
    );
    let pong = as_user(&mut gw, "bob", "p", "bester.ping", json!(null));
    assert_eq!(pong["data"], "pong", "{pong}");
    let reply = attach(&mut gw, "self", json!({"user":"gw","password":"gw-pw"}));
    assert_eq!(
        reply,
        error(
            "self",
            "invalid_message",
            "this connection is logged in as \"gw\" already"
        )
    );
    let reply = as_user(
        &mut gw,
        "bob",
        "dd",
        "bester.detach",
        json!({"user":"carol"}),
    );
    assert_eq!(
        reply,
        tagged_error(
            "bob",
            "dd",
            "invalid_message",
            "data.user and header.user name different users"
        )
    );
    let reply = gw.request("nd", "bester.detach", &json!(null)).unwrap();
    assert_eq!(code(&reply), "invalid_message", "{reply}");
    // A frame naming its user twice is refused with its id, and the gateway stays.
    gw.send_body(br#"{"header":{"scope":"client","id":"t","user":"bob","user":"eve"},"payload":{"type":"faulty"}}"#)
        .unwrap();
    let (reply, _) = answer(&mut gw, "t");
    assert_eq!(code(&reply), "invalid_message", "{reply}");
    let text = reply["data"]["error"].as_str().unwrap();
    assert!(text.starts_with("duplicate key \"user\""), "{reply}");
    gw.set_timeout(Some(DEADLINE)).unwrap();
    ping(&mut gw);
}

/// Run tests/tools/jwt_tool.py with the project's Python environment; its stdout, trimmed.
fn jwt_tool(args: &[&str]) -> String {
    let python = common::repo().join(".venv/bin/python");
    let out = std::process::Command::new(python)
        .arg(common::repo().join("tests/tools/jwt_tool.py"))
        .args(args)
        .output()
        .expect("run jwt_tool.py");
    assert!(
        out.status.success(),
        "jwt_tool.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_jwt_attaches_its_own_user_until_its_exp() {
    let keys = tempfile::tempdir().unwrap();
    let secret = keys.path().join("hs.secret");
    std::fs::write(&secret, format!("{}\n", "h".repeat(40))).unwrap();
    let auth = format!(
        "[auth.jwt]\nhmac_secret_file = {:?}\nissuer = \"issuer\"\naudience = \"app\"\nleeway_s = 0\n",
        secret.display().to_string()
    );
    let tables = format!(
        "[handlers.faulty]\n{}\n{auth}",
        handler("python3", "tests/handlers/faulty.py")
    );
    let b = Broker::start_with("", &tables, USERS);
    user_cmd(&b, &["gateway", "gw"]);
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let mint = |sub: &str, exp: u64| {
        let claims = json!({"sub": sub, "exp": exp, "iat": unix(), "iss": "issuer", "aud": "app"});
        let spec = json!({"alg": "HS256", "key": secret, "headers": {}, "claims": claims});
        jwt_tool(&["mint", &spec.to_string()])
    };
    let mut gw = gateway(&b);
    // The token names its user: another name beside it is refused.
    let bobs = mint("bob", unix() + 600);
    let reply = attach(&mut gw, "t1", json!({"user":"carol","token":bobs}));
    assert_eq!(
        reply,
        error("t1", "auth_failed", "the token is not that user's")
    );
    let reply = attach(
        &mut gw,
        "t2",
        json!({"token":"eyJhbGciOiJIUzI1NiJ9.e30.AAAA"}),
    );
    assert_eq!(code(&reply), "token_bad_signature", "{reply}");
    // carol's token ends in 5 seconds: so does her attachment, alone.
    let end = unix() + 5;
    let reply = attach(&mut gw, "t3", json!({"token": mint("carol", end)}));
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    assert_eq!(reply["data"]["user"], "carol", "{reply}");
    assert_eq!(reply["data"]["expires"], end, "{reply}");
    let reply = attach(&mut gw, "t4", json!({"user":"bob","token":bobs}));
    assert_eq!(reply["data"]["user"], "bob", "{reply}");
    let carol = as_user(&mut gw, "carol", "c", "faulty", json!({"action":"header"}));
    assert_eq!(carol["data"]["header"]["from"]["user"], "carol", "{carol}");
    let ended = gw.recv().unwrap().expect("carol's end");
    assert_eq!(
        ended,
        json!({"header":{"user":"carol","status":"error","kind":"reply"},"data":{"error":"the session's token has expired; attach again","code":"session_expired"}})
    );
    let after = as_user(&mut gw, "carol", "c2", "faulty", json!({"action":"echo"}));
    assert_eq!(
        after,
        error(
            "c2",
            "session_revoked",
            "user \"carol\" is no longer attached: the session's token has expired; attach again"
        )
    );
    let bob = as_user(&mut gw, "bob", "b", "faulty", json!({"action":"echo"}));
    assert_eq!(bob["header"]["status"], "ok", "{bob}");
}
