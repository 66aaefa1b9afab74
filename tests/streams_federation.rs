//! Client-to-client streams across a peer link, with two real besterd processes on loopback
//! (PROTOCOL.md §5, "Streams across servers"): alice on a dials bob on b, by `bob@b` and by his
//! bare name where the directory knows his server; the frames and the credit cross the link both
//! ways in order; refusals, offline users, the presence rule and timeouts on b reach alice with
//! b's words; a link that does not carry streams, a link that is down and a link that goes down
//! mid-stream; a writer past its credit is stopped on its own server; and a hostile peer that
//! forges a dialler, answers dials it was never sent, writes to streams it does not have or
//! grants past the window gets refusals, silence or the stream ended, while the link stays up.

mod common;

use besterd::client::Client;
use common::{Broker, DEADLINE, eventually, handler};
use serde_json::{Value, json};

const SECRET: &str = "secret-shared-by-a-and-b";
const WINDOW: u64 = 262144;

fn users() -> Vec<(&'static str, &'static str)> {
    vec![
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol-pw"),
    ]
}

fn tables(peer: &str, address: Option<std::net::SocketAddr>, extra: &str) -> String {
    let address = address
        .map(|a| format!("address = \"{a}\"\n"))
        .unwrap_or_default();
    format!(
        "[handlers.echo]\n{}\n[peers.{peer}]\nsecret = {SECRET:?}\n{address}[federation]\ndirectory = true\n{extra}\n",
        handler("python3", "handlers/python/echo.py")
    )
}

/// a, and b linked to it (`b_extra`: more of b's tables), once both say they are linked.
fn pair(b_extra: &str) -> (Broker, Broker) {
    let a = Broker::launch("a", "127.0.0.1:0", "", &tables("b", None, ""), &users());
    let b = Broker::launch(
        "b",
        "127.0.0.1:0",
        "",
        &tables("a", Some(a.addr), b_extra),
        &users(),
    );
    wait_for_peers(&a, &["b"]);
    wait_for_peers(&b, &["a"]);
    (a, b)
}

fn wait_for_peers(server: &Broker, want: &[&str]) {
    common::wait_for_peers_as(server, ("carol", "carol-pw"), want);
}

/// Log in with `stream` negotiated.
fn login(b: &Broker, user: &str) -> Client {
    let mut c = Client::connect(b.addr).unwrap();
    c.set_timeout(Some(DEADLINE)).unwrap();
    let identify = json!({"type":"client","authentication":{"username":user,"password":format!("{user}-pw")},"features":["stream"]});
    c.send(&json!({"header":{"identify":identify}})).unwrap();
    let reply = c.recv().unwrap().unwrap();
    assert_eq!(reply["data"]["features"], json!(["stream"]), "{reply}");
    c
}

fn recv(c: &mut Client) -> Value {
    c.recv().unwrap().expect("connection open")
}

fn dial(c: &mut Client, to: &str, name: &str) {
    c.message("d", "bester.dial", &json!({"to":to,"stream":name}))
        .unwrap();
}

fn data(c: &mut Client, id: u64, data: Value) {
    c.send(&json!({"header":{"stream":id},"data":data}))
        .unwrap();
}

fn dial_error(text: &str, code: &str) -> Value {
    json!({"header":{"status":"error","kind":"reply","id":"d"},"data":{"error":text,"code":code}})
}

fn end_error(id: u64, code: &str, text: &str) -> Value {
    json!({"header":{"status":"error","kind":"end","stream":id},"data":{"error":text,"code":code}})
}

/// alice (on a) dials `to`; bob (on b) gets `incoming` and accepts. Both ends' stream ids.
fn open(alice: &mut Client, bob: &mut Client, to: &str, name: &str) -> (u64, u64) {
    dial(alice, to, name);
    let incoming = recv(bob);
    let theirs = incoming["header"]["stream"].as_u64().expect("a stream id");
    assert_eq!(
        incoming,
        json!({"header":{"status":"ok","kind":"incoming","stream":theirs,"from":{"user":"alice","server":"a"}},"data":{"name":name,"window":WINDOW}})
    );
    let accepted = bob
        .request("a", "bester.accept", &json!({"stream":theirs}))
        .unwrap();
    assert_eq!(
        accepted,
        json!({"header":{"status":"ok","kind":"reply","id":"a","type":"bester.accept"},"data":{"stream":theirs,"name":name,"from":{"user":"alice","server":"a"},"window":WINDOW}})
    );
    let dialled = recv(alice);
    let mine = dialled["data"]["stream"].as_u64().expect("a stream id");
    assert_eq!(
        dialled,
        json!({"header":{"status":"ok","kind":"reply","id":"d","type":"bester.dial"},"data":{"stream":mine,"name":name,"to":{"user":"bob","server":"b"},"window":WINDOW}})
    );
    (mine, theirs)
}

#[test]
fn a_user_on_a_streams_with_bob_on_b_both_ways_in_order_by_address_and_by_bare_name() {
    let (a, b) = pair("");
    let mut alice = login(&a, "alice");
    let mut bob = login(&b, "bob");
    let (mine, theirs) = open(&mut alice, &mut bob, "bob@b", "s1");
    for n in 0..50 {
        data(&mut alice, mine, json!({"n": n}));
    }
    data(&mut bob, theirs, json!("from bob"));
    for n in 0..50 {
        assert_eq!(
            recv(&mut bob),
            json!({"header":{"status":"ok","kind":"stream","stream":theirs},"data":{"n":n}})
        );
    }
    assert_eq!(
        recv(&mut alice),
        json!({"header":{"status":"ok","kind":"stream","stream":mine},"data":"from bob"})
    );
    // bob's grant crosses the link to alice, as bob sent it.
    bob.send(&json!({"header":{"stream":theirs,"credit":500}}))
        .unwrap();
    assert_eq!(
        recv(&mut alice),
        json!({"header":{"status":"ok","kind":"credit","stream":mine,"credit":500}})
    );
    // bob ends it; alice is told, and a frame she had in flight is dropped without a word.
    bob.send(&json!({"header":{"stream":theirs,"end":true}}))
        .unwrap();
    assert_eq!(
        recv(&mut alice),
        json!({"header":{"status":"ok","kind":"end","stream":mine},"data":null})
    );
    data(&mut alice, mine, json!("late"));

    // The bare name: bob is not on a, and the directory places him on b.
    eventually("a's directory to have bob on b", || {
        let q = alice
            .request("q", "bester.presence", &json!({"users":["bob"]}))
            .unwrap();
        (q["data"]["users"][0]["server"] == "b").then_some(())
    });
    let (mine, theirs) = open(&mut alice, &mut bob, "bob", "s2");
    data(&mut bob, theirs, json!([1, 2, 3]));
    assert_eq!(
        recv(&mut alice),
        json!({"header":{"status":"ok","kind":"stream","stream":mine},"data":[1,2,3]})
    );
    // alice's connection closes: bob is told by b.
    drop(alice);
    assert_eq!(
        recv(&mut bob),
        end_error(
            theirs,
            "stream_closed",
            "the other side's connection closed"
        )
    );
}

#[test]
fn the_presence_rule_of_bs_server_decides_whether_alice_may_dial_bob() {
    let (a, b) = pair("[presence]\nvisible = \"none\"\n");
    let mut alice = login(&a, "alice");
    let mut bob = login(&b, "bob");
    dial(&mut alice, "bob@b", "s");
    assert_eq!(
        recv(&mut alice),
        dial_error(
            r#"server "b": "alice@a" may not dial "bob": presence rules ([presence] visible) hide them"#,
            "forbidden"
        )
    );
    // bob never heard of it.
    bob.message("p", "bester.ping", &Value::Null).unwrap();
    assert_eq!(
        recv(&mut bob)["header"]["id"],
        "p",
        "nothing came before the answer"
    );
}

#[test]
fn a_refused_dial_an_offline_user_and_an_unanswered_dial_across_servers() {
    let (a, b) = pair("[streams]\ndial_timeout_ms = 400\n");
    let mut alice = login(&a, "alice");
    let mut bob = login(&b, "bob");
    dial(&mut alice, "bob@b", "s");
    let id = recv(&mut bob)["header"]["stream"].as_u64().unwrap();
    let refused = bob
        .request("r", "bester.refuse", &json!({"stream":id}))
        .unwrap();
    assert_eq!(refused["header"]["status"], "ok", "{refused}");
    assert_eq!(
        recv(&mut alice),
        dial_error(
            r#"server "b": "bob" refused the stream "s""#,
            "dial_refused"
        )
    );
    // carol has no connection on b.
    dial(&mut alice, "carol@b", "s");
    assert_eq!(
        recv(&mut alice),
        dial_error(
            r#"server "b": "carol" has no connection here that takes streams"#,
            "dial_offline"
        )
    );
    // bob does not answer: b's shorter timeout ends the dial for both.
    dial(&mut alice, "bob@b", "s");
    let id = recv(&mut bob)["header"]["stream"].as_u64().unwrap();
    assert_eq!(
        recv(&mut bob),
        end_error(id, "dial_timeout", "the dial was not answered in time")
    );
    assert_eq!(
        recv(&mut alice),
        dial_error(
            r#"server "b": "bob" did not answer the dial within 400 ms"#,
            "dial_timeout"
        )
    );
    let late = bob
        .request("a", "bester.accept", &json!({"stream":id}))
        .unwrap();
    assert_eq!(late["data"]["code"], "unknown_stream", "{late}");
    // alice gives up on a dial: bob's offer ends.
    dial(&mut alice, "bob@b", "s");
    let id = recv(&mut bob)["header"]["stream"].as_u64().unwrap();
    drop(alice);
    assert_eq!(
        recv(&mut bob),
        end_error(id, "stream_closed", "the dialler's connection closed")
    );
}

#[test]
fn a_writer_past_its_credit_is_stopped_on_its_own_server() {
    let (a, b) = pair("");
    let mut alice = login(&a, "alice");
    let mut bob = login(&b, "bob");
    let (mine, theirs) = open(&mut alice, &mut bob, "bob@b", "bulk");
    // Four frames of 64 KiB (data and its 128-byte cost) use the window; the fifth is past it.
    let chunk = "x".repeat(65536 - 128 - 2);
    for _ in 0..4 {
        data(&mut alice, mine, json!(chunk));
    }
    data(&mut alice, mine, json!("one more"));
    let text =
        format!("a frame costing 138 bytes is over the credit left on stream {mine}, 0 bytes");
    assert_eq!(
        recv(&mut alice),
        end_error(mine, "stream_credit_exceeded", &text)
    );
    for _ in 0..4 {
        let got = recv(&mut bob);
        assert_eq!(got["header"]["kind"], "stream", "{got}");
        assert_eq!(got["data"].as_str().unwrap().len(), chunk.len());
    }
    assert_eq!(
        recv(&mut bob),
        end_error(
            theirs,
            "stream_closed",
            "the other side sent past its credit"
        )
    );
}

#[test]
fn links_without_streams_links_down_and_a_link_going_down_mid_stream() {
    // b takes no streams: its link does not negotiate them.
    let (a, b) = pair("[streams]\nenabled = false\n");
    let mut alice = login(&a, "alice");
    dial(&mut alice, "bob@b", "s");
    assert_eq!(
        recv(&mut alice),
        dial_error(
            r#""bob" is a user of server "b", whose link does not carry streams"#,
            "dial_offline"
        )
    );
    drop(b);
    // b is down.
    eventually("a to see b's link down", || {
        dial(&mut alice, "bob@b", "s");
        let answer = recv(&mut alice);
        (answer["data"]["code"] == "peer_unavailable").then_some(answer)
    });
    dial(&mut alice, "bob@b", "s");
    assert_eq!(
        recv(&mut alice),
        dial_error(
            r#""bob" is a user of server "b", which is not linked now"#,
            "peer_unavailable"
        )
    );
    drop(alice);
    drop(a);

    // A stream open when b is killed: alice is told by a.
    let (a, mut b) = pair("");
    let mut alice = login(&a, "alice");
    let mut bob = login(&b, "bob");
    let (mine, _) = open(&mut alice, &mut bob, "bob@b", "s");
    common::signal(b.pid(), libc::SIGKILL);
    let _ = b.stop();
    assert_eq!(
        recv(&mut alice),
        end_error(mine, "stream_closed", r#"the link to server "b" went down"#)
    );
    // A dial waiting when the link goes: it fails peer_unavailable.
    let (a, mut b) = pair("");
    let mut alice = login(&a, "alice");
    let mut bob = login(&b, "bob");
    dial(&mut alice, "bob@b", "s");
    recv(&mut bob);
    common::signal(b.pid(), libc::SIGKILL);
    let _ = b.stop();
    assert_eq!(
        recv(&mut alice),
        dial_error(
            r#"the link to server "b" went down before "bob" answered"#,
            "peer_unavailable"
        )
    );
}

/// A hand-rolled peer "b" linked to `a`, offering `stream`: the link, after the handshake.
fn fake_b(a: &Broker) -> Client {
    let (c, answer) = common::fake_peer(a, "b", SECRET, Some(&["stream"]));
    assert_eq!(answer["data"]["features"], json!(["stream"]), "{answer}");
    c
}

#[test]
fn a_hostile_peer_gets_refusals_silence_or_an_ended_stream_and_the_link_stays_up() {
    let a = Broker::launch("a", "127.0.0.1:0", "", &tables("b", None, ""), &users());
    let mut b = fake_b(&a);
    let mut alice = login(&a, "alice");
    // A dial for a user of a third server, and one naming a bad window-less shape.
    b.send(&json!({"header":{"kind":"stream.dial","stream":1,"from":"mallory@c","to":"alice","name":"s","window":1000}}))
        .unwrap();
    assert_eq!(
        common::next_non_directory(&mut b),
        json!({"header":{"kind":"stream.refuse","dial":1},"data":{"error":"a peer dials for its own users only, not for \"mallory@c\"","code":"forged_origin"}})
    );
    // Answers to dials a never made, and frames for streams it does not have: dropped.
    b.send(&json!({"header":{"kind":"stream.accept","stream":5,"dial":77,"window":1000}}))
        .unwrap();
    b.send(&json!({"header":{"kind":"stream.refuse","dial":78},"data":{"error":"x","code":"dial_refused"}}))
        .unwrap();
    b.send(&json!({"header":{"kind":"stream","stream":99},"data":"hi"}))
        .unwrap();
    // A malformed one is a bad frame: logged, the link stays up.
    b.send(&json!({"header":{"kind":"stream","stream":1,"credit":0}}))
        .unwrap();
    // A real dial from mallory, a user of b: offered to alice with b's smaller window.
    b.send(&json!({"header":{"kind":"stream.dial","stream":2,"from":"mallory","to":"alice","name":"s","window":1000}}))
        .unwrap();
    let incoming = recv(&mut alice);
    let id = incoming["header"]["stream"].as_u64().unwrap();
    assert_eq!(
        incoming,
        json!({"header":{"status":"ok","kind":"incoming","stream":id,"from":{"user":"mallory","server":"b"}},"data":{"name":"s","window":1000}})
    );
    alice
        .request("a", "bester.accept", &json!({"stream":id}))
        .unwrap();
    assert_eq!(
        common::next_non_directory(&mut b),
        json!({"header":{"kind":"stream.accept","stream":id,"dial":2,"window":1000}})
    );
    // b writes within the window: alice gets it; then b grants past the window.
    b.send(&json!({"header":{"kind":"stream","stream":2},"data":"hello"}))
        .unwrap();
    assert_eq!(
        recv(&mut alice),
        json!({"header":{"status":"ok","kind":"stream","stream":id},"data":"hello"})
    );
    b.send(&json!({"header":{"kind":"stream","stream":2,"credit":1}}))
        .unwrap();
    assert_eq!(
        common::next_non_directory(&mut b),
        json!({"header":{"kind":"stream","stream":id,"end":true},"data":{"error":format!("a credit of 1 would give stream {id}'s writer over the window of 1000 bytes"),"code":"invalid_message"}})
    );
    assert_eq!(
        recv(&mut alice),
        end_error(
            id,
            "stream_closed",
            "the other side granted credit past the window"
        )
    );
    // And past its credit: 1000 bytes are 7 frames of 10; the 8th is over.
    b.send(&json!({"header":{"kind":"stream.dial","stream":3,"from":"mallory","to":"alice","name":"t","window":1000}}))
        .unwrap();
    let id = recv(&mut alice)["header"]["stream"].as_u64().unwrap();
    alice
        .request("a", "bester.accept", &json!({"stream":id}))
        .unwrap();
    common::next_non_directory(&mut b);
    for _ in 0..8 {
        b.send(&json!({"header":{"kind":"stream","stream":3},"data":"12345678"}))
            .unwrap();
    }
    for _ in 0..7 {
        assert_eq!(recv(&mut alice)["data"], "12345678");
    }
    assert_eq!(
        common::next_non_directory(&mut b)["data"]["code"],
        "stream_credit_exceeded"
    );
    assert_eq!(
        recv(&mut alice),
        end_error(id, "stream_closed", "the other side sent past its credit")
    );
    // The link is up all along: a still answers b's directory and alice's pings.
    let who = alice.request("w", "bester.whoami", &Value::Null).unwrap();
    assert_eq!(who["data"]["peers"], json!(["b"]), "{who}");
}
