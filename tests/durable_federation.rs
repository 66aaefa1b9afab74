//! Store-and-forward across the federation against real daemons: a storing push to `bob@b` while
//! the link to b is down is queued on a (reported `queued` once durable), forwarded when b's link
//! comes up, acknowledged end to end (b stores it for an offline bob or pushes it to his
//! connection), and deleted from a's queue only then; a kill -9 of a in between loses nothing; a
//! full per-server queue refuses with `queue_full`; a non-storing push to a down server still
//! fails `peer_unreachable`; a type b does not allow from a is refused and leaves the queue.
//! Where the wire must be watched, b is a hand-rolled peer on a real socket: a delivery not acked
//! before the link drops comes again with the same `origin`, and a peer whose link did not take
//! the feature `store` is sent none.

mod common;

use besterd::client::Client;
use common::*;
use serde_json::{Value, json};

const SECRET: &str = "secret-shared-by-a-and-b";

fn users() -> Vec<(&'static str, &'static str)> {
    vec![("alice", "alice-pw"), ("bob", "bob-pw")]
}

/// a: `mail` stores (`offline = "store"`), `note` does not; b is its peer, which dials a.
fn start_a(delivery: &str) -> Broker {
    let tables = format!(
        "[handlers.mail]\n{}\noffline = \"store\"\n[handlers.note]\n{}\n[delivery]\n{delivery}\n[peers.b]\nsecret = {SECRET:?}\n",
        handler("python3", "tests/handlers/greeter.py"),
        handler("python3", "tests/handlers/greeter.py"),
    );
    Broker::launch("a", "127.0.0.1:0", "", &tables, &users())
}

/// b, with a delivery store, dialling a (`extra`: more keys of `[peers.a]`).
fn start_b(a: &Broker, extra: &str) -> Broker {
    let tables = format!(
        "[delivery]\n[peers.a]\nsecret = {SECRET:?}\naddress = \"{}\"\n{extra}\n",
        a.addr
    );
    Broker::launch("b", "127.0.0.1:0", "", &tables, &users())
}

fn ctl(server: &Broker, json: bool) -> Vec<u8> {
    let socket = server.dir.path().join("run/besterd.ctl");
    let mut args = vec!["ctl", "--socket", socket.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    args.push("queues");
    let out = besterd_cmd(&args, None);
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

fn ctl_queues(server: &Broker) -> Value {
    serde_json::from_slice(&ctl(server, true)).unwrap()
}

/// a's outbound queue for b, as `besterd ctl queues` shows it.
fn queue_for_b(a: &Broker) -> Value {
    let answer = ctl_queues(a);
    answer["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server"] == "b")
        .cloned()
        .unwrap_or(Value::Null)
}

/// Wait until a's queue for b is empty, and return its row.
fn wait_drained(a: &Broker) -> Value {
    eventually("a's queue for b to be empty", || {
        let row = queue_for_b(a);
        (row["messages"] == 0 && row["in_flight"] == 0).then_some(row)
    })
}

fn mail(alice: &mut Client, id: &str, to: &[&str], n: u64) -> Value {
    alice
        .request(id, "mail", &json!({"to": to, "n": n}))
        .unwrap()
}

fn push(client: &mut Client) -> Value {
    let frame = client.recv().unwrap().expect("a push");
    assert_eq!(frame["header"]["kind"], "push", "{frame}");
    frame
}

/// Nothing more is waiting for `client`: an ack's reply comes before any push.
fn no_more_pushes(client: &mut Client) {
    client
        .message("barrier", "bester.ack", &json!({"msgs": []}))
        .unwrap();
    let frame = client.recv().unwrap().expect("the ack's reply");
    assert_eq!(frame["header"]["id"], "barrier", "{frame}");
}

fn queued_reply(id: &str, to: &str) -> Value {
    json!({"header":{"status":"ok","kind":"reply","id":id,"type":"mail",
        "delivered":[],"offline":[],"stored":[],"queued":[to]},"data":null})
}

#[test]
fn a_push_to_bob_at_b_while_b_is_down_is_queued_then_delivered_once_on_login() {
    let a = start_a("");
    let mut alice = a.login("alice", "alice-pw");
    for n in 0..3 {
        let id = format!("m{n}");
        assert_eq!(
            mail(&mut alice, &id, &["bob@b"], n),
            queued_reply(&id, "bob@b")
        );
    }
    let row = queue_for_b(&a);
    assert_eq!(row["messages"], 3, "{row}");
    assert_eq!(row["linked"], false, "no link yet: {row}");
    assert!(row["oldest_ms"].as_u64().is_some(), "{row}");
    let text = String::from_utf8(ctl(&a, false)).unwrap();
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().take(2).eq(["b", "3"])),
        "{text}"
    );

    let b = start_b(&a, "");
    wait_drained(&a);
    // bob was offline: b stored them; he gets each once, in order, with b's ids.
    let mut bob = b.login("bob", "bob-pw");
    let got: Vec<Value> = (0..3).map(|_| push(&mut bob)).collect();
    for (n, p) in got.iter().enumerate() {
        assert_eq!(p["header"]["type"], "mail");
        assert_eq!(p["header"]["stored"], true);
        assert_eq!(
            p["header"]["from"],
            json!({"user":"alice","server":"a"}),
            "{p}"
        );
        assert_eq!(p["data"], json!({"to":["bob@b"],"n":n}), "in order");
        assert!(p["header"]["msg"].is_string(), "{p}");
    }
    let last = got[2]["header"]["msg"].as_str().unwrap();
    let ack = bob
        .request("ack", "bester.ack", &json!({"upto": last}))
        .unwrap();
    assert_eq!(ack["data"], json!({"acked": 3}), "{ack}");
    drop(bob);
    let mut bob = b.login("bob", "bob-pw");
    no_more_pushes(&mut bob);
    assert_eq!(ctl_queues(&b)["queues"], json!([]));
}

#[test]
fn an_online_bob_gets_it_when_the_link_comes_up_and_the_queue_drains() {
    let a = start_a("");
    let mut alice = a.login("alice", "alice-pw");
    assert_eq!(
        mail(&mut alice, "m", &["bob@b"], 1),
        queued_reply("m", "bob@b")
    );
    // b starts with bob online before its link to a is up (b dials a after its start).
    let b = start_b(&a, "");
    let mut bob = b.login("bob", "bob-pw");
    let p = push(&mut bob);
    assert_eq!(p["data"], json!({"to":["bob@b"],"n":1}), "{p}");
    assert!(p["header"]["msg"].is_string(), "{p}");
    wait_drained(&a);
    // Once only, and kept at b until bob acks it (a connection that dies gets it again).
    no_more_pushes(&mut bob);
    drop(bob);
    let mut bob = b.login("bob", "bob-pw");
    let again = push(&mut bob);
    assert_eq!(again["header"]["msg"], p["header"]["msg"]);
    assert_eq!(again["header"]["stored"], true);
}

#[test]
fn a_kill_9_of_a_after_queued_still_delivers() {
    let mut a = start_a("");
    let mut alice = a.login("alice", "alice-pw");
    assert_eq!(
        mail(&mut alice, "m", &["bob@b"], 42),
        queued_reply("m", "bob@b")
    );
    drop(alice);
    a.kill_and_restart();
    assert_eq!(queue_for_b(&a)["messages"], 1);
    let b = start_b(&a, "");
    wait_drained(&a);
    let mut bob = b.login("bob", "bob-pw");
    let p = push(&mut bob);
    assert_eq!(p["data"], json!({"to":["bob@b"],"n":42}), "{p}");
    no_more_pushes(&mut bob);
}

#[test]
fn a_full_queue_for_b_refuses_with_queue_full() {
    let a = start_a("max_per_user = 2\n");
    let mut alice = a.login("alice", "alice-pw");
    for n in 0..2 {
        let id = format!("m{n}");
        assert_eq!(
            mail(&mut alice, &id, &["bob@b"], n),
            queued_reply(&id, "bob@b")
        );
    }
    assert_eq!(
        mail(&mut alice, "m2", &["bob@b", "bob"], 2),
        json!({"header":{"status":"ok","kind":"reply","id":"m2","type":"mail",
            "delivered":[],"offline":[],"stored":["bob"],
            "refused":[{"user":"bob@b","code":"queue_full",
                "error":"the outbound queue for server \"b\" holds 2 deliveries, the most it may ([delivery] max_per_user)"}]},
            "data":null})
    );
    assert_eq!(queue_for_b(&a)["messages"], 2);
}

#[test]
fn a_non_storing_push_to_a_down_server_still_fails_peer_unreachable() {
    let a = start_a("");
    let mut alice = a.login("alice", "alice-pw");
    let reply = alice
        .request("n", "note", &json!({"to": ["bob@b"], "n": 1}))
        .unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"n","type":"note",
            "delivered":[],"offline":[],"failed":{"bob@b":"peer_unreachable"}},"data":null})
    );
    assert_eq!(queue_for_b(&a), Value::Null, "nothing queued");
}

#[test]
fn a_type_b_does_not_allow_from_a_is_refused_and_leaves_the_queue() {
    let a = start_a("");
    let mut alice = a.login("alice", "alice-pw");
    assert_eq!(
        mail(&mut alice, "m", &["bob@b"], 1),
        queued_reply("m", "bob@b")
    );
    let b = start_b(&a, "allow_types = [\"chat\"]");
    let row = wait_drained(&a);
    assert_eq!(row["refused"], 1, "{row}");
    assert_eq!(
        row["last_refusal"],
        json!({"code":"forbidden","error":"peer \"a\" may not send \"mail\" messages to \"b\""}),
        "{row}"
    );
    let mut bob = b.login("bob", "bob-pw");
    no_more_pushes(&mut bob);
}

#[test]
fn with_the_link_up_bob_gets_it_at_once_and_a_kill_9_of_b_keeps_it_until_acked() {
    let a = start_a("");
    let mut b = start_b(&a, "");
    eventually("the link to b to take stored deliveries", || {
        (queue_for_b(&a)["linked"] == true).then_some(())
    });
    let mut bob = b.login("bob", "bob-pw");
    let mut alice = a.login("alice", "alice-pw");
    assert_eq!(
        mail(&mut alice, "m", &["bob@b"], 5),
        queued_reply("m", "bob@b")
    );
    let live = push(&mut bob);
    assert_eq!(live["data"], json!({"to":["bob@b"],"n":5}), "{live}");
    assert!(live["header"].get("stored").is_none(), "{live}");
    wait_drained(&a);
    drop(bob);
    // bob never acked: b keeps it across a kill -9 and gives it again with the same id.
    b.kill_and_restart();
    let mut bob = b.login("bob", "bob-pw");
    let again = push(&mut bob);
    assert_eq!(again["header"]["msg"], live["header"]["msg"]);
    assert_eq!(again["header"]["stored"], true);
    let ack = bob
        .request(
            "ack",
            "bester.ack",
            &json!({"msgs": [again["header"]["msg"]]}),
        )
        .unwrap();
    assert_eq!(ack["data"], json!({"acked": 1}), "{ack}");
    no_more_pushes(&mut bob);
}

/// A hand-rolled peer `b` linked to `a` over a real socket, offering `features`; returns the
/// link and the features a accepted.
fn fake_b(a: &Broker, features: &[&str]) -> (Client, Value) {
    let (c, answer) = common::fake_peer(a, "b", SECRET, Some(features));
    assert_eq!(answer["data"]["server"], "a", "{answer}");
    (c, answer["data"]["features"].clone())
}

#[test]
fn a_delivery_not_acked_before_the_link_drops_comes_again_with_the_same_origin() {
    let a = start_a("");
    let mut alice = a.login("alice", "alice-pw");
    assert_eq!(
        mail(&mut alice, "m", &["bob@b"], 3),
        queued_reply("m", "bob@b")
    );
    let (mut b, features) = fake_b(&a, &["store"]);
    assert_eq!(features, json!(["store"]));
    let first = b.recv().unwrap().expect("the delivery");
    let h = &first["header"];
    assert_eq!(h["scope"], "users", "{first}");
    assert_eq!(h["store"], true, "{first}");
    assert_eq!(h["users"], json!(["bob"]), "{first}");
    assert_eq!(h["from"], json!({"user":"alice","server":"a"}), "{first}");
    assert_eq!(
        first["payload"],
        json!({"type":"mail","data":{"to":["bob@b"],"n":3}})
    );
    let origin = h["origin"].clone();
    assert!(origin.as_str().unwrap().parse::<u64>().is_ok(), "{first}");
    // The link drops before b acks: the delivery stays queued.
    drop(b);
    eventually("the lost delivery to be back in the queue", || {
        let row = queue_for_b(&a);
        (row["linked"] == false && row["in_flight"] == 0).then_some(())
    });
    assert_eq!(queue_for_b(&a)["messages"], 1);
    let (mut b, _) = fake_b(&a, &["store"]);
    let again = b.recv().unwrap().expect("the delivery again");
    assert_eq!(again["header"]["origin"], origin, "the same durable id");
    assert_eq!(again["payload"], first["payload"]);
    let msg = again["header"]["msg"].as_str().unwrap();
    b.send(
        &json!({"header":{"kind":"ack","msg":msg,"status":"ok","delivered":[],"offline":["bob"]}}),
    )
    .unwrap();
    wait_drained(&a);
}

#[test]
fn a_peer_that_does_not_take_stored_deliveries_gets_none() {
    let a = start_a("");
    let (mut b, features) = fake_b(&a, &[]);
    assert_eq!(features, json!([]));
    eventually("the link to b to be up", || {
        (queue_for_b(&a)["linked"] == false).then_some(())
    });
    let mut alice = a.login("alice", "alice-pw");
    assert_eq!(
        mail(&mut alice, "m", &["bob@b"], 1),
        json!({"header":{"status":"ok","kind":"reply","id":"m","type":"mail",
            "delivered":[],"offline":[],"stored":[],"failed":{"bob@b":"peer_unreachable"}},"data":null})
    );
    // Nothing was sent to it: the next frame b gets is the answer to its own message.
    b.send(&json!({"header":{"scope":"users","msg":"1","from":{"server":"b"},"users":["nobody"]},"payload":{"type":"mail"}}))
        .unwrap();
    let next = b.recv().unwrap().expect("an ack");
    assert_eq!(next["header"]["kind"], "ack", "{next}");
    assert_eq!(next["header"]["msg"], "1", "{next}");
}
