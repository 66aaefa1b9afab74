//! `sendClients` to users of other servers (`bob@b`), with real besterd processes on loopback and,
//! where a peer must misbehave or be watched frame by frame, a hand-rolled peer on a real socket:
//! delivery without the other server's handler, per-user reports (delivered, offline, failed),
//! groups with members on two servers (one frame per server), what a peer may deliver, and
//! `[peers.X] allow_types`.

mod common;

use std::net::SocketAddr;

use besterd::client::Client;
use besterd::federation::handshake::{self, Side, Transcript};
use common::Broker;
use serde_json::{Value, json};

const SECRET: &str = "secret-shared-by-all-of-them";

fn peer(name: &str, address: Option<SocketAddr>, extra: &str) -> String {
    let address = address
        .map(|a| format!("address = \"{a}\"\n"))
        .unwrap_or_default();
    format!("[peers.{name}]\nsecret = {SECRET:?}\n{address}{extra}\n")
}

fn users() -> Vec<(&'static str, &'static str)> {
    vec![
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol-pw"),
    ]
}

/// `[handlers.<kind>]` running the faulty test handler.
fn faulty(kind: &str) -> String {
    format!(
        "[handlers.{kind}]\n{}\n",
        common::handler("python3", "tests/handlers/faulty.py")
    )
}

/// Wait until `server` reports exactly these peers linked.
fn wait_for_peers(server: &Broker, want: &[&str]) {
    common::wait_for_peers_as(server, ("carol", "carol-pw"), want);
}

/// a (faulty handler; peers b and c, c never running) and b, which dials a and has no faulty
/// handler at all: whatever reaches b's users as type "faulty" did not go through a handler there.
fn pair() -> (Broker, Broker) {
    let a_tables = format!(
        "{}{}{}",
        faulty("faulty"),
        peer("b", None, ""),
        peer("c", None, "")
    );
    let a = Broker::launch("a", "127.0.0.1:0", "", &a_tables, &users());
    let b_tables = format!("{}{}", faulty("other"), peer("a", Some(a.addr), ""));
    let b = Broker::launch("b", "127.0.0.1:0", "", &b_tables, &users());
    wait_for_peers(&a, &["b"]);
    wait_for_peers(&b, &["a"]);
    (a, b)
}

/// A hand-rolled peer `name` linked to `a` over a real socket.
fn fake_peer(a: &Broker, name: &str) -> Client {
    let mut c = a.connect();
    let nonce = handshake::nonce();
    c.send(&json!({"header":{"identify":{"type":"server","name":name,"nonce":nonce}}}))
        .unwrap();
    let challenge = c.recv().unwrap().expect("a challenge");
    let theirs = challenge["data"]["nonce"].as_str().unwrap().to_string();
    let t = Transcript {
        initiator: name,
        responder: "a",
        initiator_nonce: &nonce,
        responder_nonce: &theirs,
    };
    c.send(&json!({"header":{"proof": t.proof(SECRET.as_bytes(), Side::Initiator)}}))
        .unwrap();
    let answer = c.recv().unwrap().expect("an answer");
    assert_eq!(
        answer,
        json!({"header":{"status":"ok","kind":"reply"},"data":{"server":"a"}})
    );
    c
}

#[test]
fn send_clients_to_bob_at_b_reaches_his_connections_and_reports_each_user() {
    let (a, b) = pair();
    let mut alice = a.login("alice", "alice-pw");
    let mut bob1 = b.login("bob", "bob-pw");
    let mut bob2 = b.login("bob", "bob-pw");
    let ask =
        json!({"action":"send_to","users":["bob@b","carol@b","bob@a","carol@c","dave","bob@b"]});
    let reply = alice.request("s1", "faulty", &ask).unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"s1","type":"faulty",
            "delivered":["bob@b"],"offline":["bob@a","dave","carol@b"],
            "failed":{"carol@c":"peer_unreachable"}},"data":null}),
        "each user once, reported as the handler named them"
    );
    let push = json!({"header":{"status":"ok","kind":"push","type":"faulty","from":{"user":"alice","server":"a"}},"data":ask});
    for bob in [&mut bob1, &mut bob2] {
        assert_eq!(
            bob.recv().unwrap().unwrap(),
            push,
            "every connection of bob"
        );
    }
    // Exactly one copy each: the next frame is the answer to the next request.
    for bob in [&mut bob1, &mut bob2] {
        let pong = bob.request("p", "bester.ping", &Value::Null).unwrap();
        assert_eq!(pong["header"]["id"], "p", "{pong}");
    }
    // A user of this server named with its name, @a, is the local user.
    let mut bob_a = a.login("bob", "bob-pw");
    let ask = json!({"action":"send_to","users":["bob@a","bob"]});
    let reply = alice.request("s2", "faulty", &ask).unwrap();
    assert_eq!(reply["header"]["delivered"], json!(["bob@a"]), "{reply}");
    assert_eq!(bob_a.recv().unwrap().unwrap()["data"], ask);
}

#[test]
fn a_link_lost_before_the_ack_fails_its_users_peer_unavailable() {
    let a_tables = format!("{}{}", faulty("faulty"), peer("b", None, ""));
    let a = Broker::launch("a", "127.0.0.1:0", "", &a_tables, &users());
    let mut b = fake_peer(&a, "b");
    wait_for_peers(&a, &["b"]);
    let mut alice = a.login("alice", "alice-pw");
    let ask = json!({"action":"send_to","users":["bob@b","carol@b","bob"]});
    alice
        .send(&json!({"header":{"scope":"client","id":"q"},"payload":{"type":"faulty","data":ask}}))
        .unwrap();
    let frame = b.recv().unwrap().expect("a's delivery");
    let msg = frame["header"]["msg"].as_str().unwrap().to_string();
    assert_eq!(
        frame,
        json!({"header":{"scope":"users","msg":msg,"from":{"user":"alice","server":"a"},"users":["bob","carol"]},"payload":{"type":"faulty","data":ask}}),
        "one frame for both users of b, by their names there"
    );
    drop(b);
    let reply = alice.recv().unwrap().expect("the answer");
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"q","type":"faulty","delivered":[],
            "offline":["bob"],"failed":{"bob@b":"peer_unavailable","carol@b":"peer_unavailable"}},"data":null})
    );
}

#[test]
fn a_peer_delivers_only_as_itself_to_our_users_and_only_types_it_may_send() {
    let tables = format!(
        "{}{}{}",
        faulty("faulty"),
        peer("b", None, "allow_types = [\"faulty\"]"),
        peer("c", None, "")
    );
    let a = Broker::launch("a", "127.0.0.1:0", "", &tables, &users());
    let mut b = fake_peer(&a, "b");
    wait_for_peers(&a, &["b"]);
    let mut alice = a.login("alice", "alice-pw");
    let mut ack = |frame: Value| {
        b.send(&frame).unwrap();
        b.recv().unwrap().expect("an ack")
    };
    let refused = |msg: &str, code: &str, error: &str| json!({"header":{"kind":"ack","msg":msg,"status":"error"},"data":{"error":error,"code":code}});
    // As c: forged.
    let got = ack(
        json!({"header":{"scope":"users","msg":"1","from":{"user":"mallory","server":"c"},"users":["alice"]},"payload":{"type":"faulty","data":1}}),
    );
    assert_eq!(
        got,
        refused(
            "1",
            "forged_origin",
            "peer \"b\" may only send as itself, not as \"c\""
        )
    );
    // To a user of a third server: refused whole, nobody is pushed to.
    let got = ack(
        json!({"header":{"scope":"users","msg":"2","from":{"user":"mallory","server":"b"},"users":["alice","carol@c"]},"payload":{"type":"faulty","data":2}}),
    );
    assert_eq!(
        got,
        refused(
            "2",
            "forbidden",
            "peer \"b\" may deliver only to users of \"a\", not to \"carol@c\""
        )
    );
    // A type b may not send, as a delivery and as a message for a handler.
    let got = ack(
        json!({"header":{"scope":"users","msg":"3","from":{"server":"b","handler":"x"},"users":["alice"]},"payload":{"type":"admin","data":3}}),
    );
    let text = "peer \"b\" may not send \"admin\" messages to \"a\"";
    assert_eq!(got, refused("3", "forbidden", text));
    let got = ack(
        json!({"header":{"scope":"server","msg":"4","from":{"server":"b","handler":"x"},"hops":1},"payload":{"type":"admin","data":4}}),
    );
    assert_eq!(got, refused("4", "forbidden", text));
    // Its own user, to ours, with a type it may send: pushed, acked per user.
    let got = ack(
        json!({"header":{"scope":"users","msg":"5","from":{"user":"mallory","server":"b"},"users":["alice","bob","alice@a"]},"payload":{"type":"faulty","data":5}}),
    );
    assert_eq!(
        got,
        json!({"header":{"kind":"ack","msg":"5","status":"ok","delivered":["alice"],"offline":["bob"]}})
    );
    let push = alice.recv().unwrap().expect("the delivery");
    assert_eq!(
        push,
        json!({"header":{"status":"ok","kind":"push","type":"faulty","from":{"user":"mallory","server":"b"}},"data":5}),
        "once, however many ways she was named; the refused ones never reached her"
    );
    let pong = alice.request("p", "bester.ping", &Value::Null).unwrap();
    assert_eq!(pong["header"]["id"], "p", "{pong}");
}

#[test]
fn a_group_with_members_on_two_servers_gets_one_frame_per_server() {
    let tables = format!("{}{}", faulty("faulty"), peer("b", None, ""));
    let a = Broker::launch("a", "127.0.0.1:0", "", &tables, &users());
    let mut b = fake_peer(&a, "b");
    wait_for_peers(&a, &["b"]);
    let mut alice = a.login("alice", "alice-pw");
    let mut bob = a.login("bob", "bob-pw");
    for (id, group, members) in [
        ("g1", "room:1", json!(["alice", "bob", "bob@b", "carol@b"])),
        ("g2", "room:2", json!(["bob@a", "bob@b"])),
    ] {
        let ask = json!({"action":"group_add","group":group,"users":members});
        let reply = alice.request(id, "faulty", &ask).unwrap();
        assert_eq!(reply["header"]["status"], "ok", "{reply}");
    }
    let ask = json!({"action":"to_groups","groups":["room:1","room:2"],"users":["carol@b"]});
    alice
        .send(&json!({"header":{"scope":"client","id":"q"},"payload":{"type":"faulty","data":ask}}))
        .unwrap();
    let frame = b.recv().unwrap().expect("a's delivery");
    let msg = frame["header"]["msg"].as_str().unwrap().to_string();
    assert_eq!(
        frame["header"]["users"],
        json!(["carol", "bob"]),
        "one frame, each member of b once: {frame}"
    );
    b.send(&json!({"header":{"kind":"ack","msg":msg,"status":"ok","delivered":["bob"],"offline":["carol"]}}))
        .unwrap();
    let reply = alice.recv().unwrap().expect("the answer");
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"q","type":"faulty",
            "delivered":["alice","bob","bob@b"],"offline":["carol@b"]},"data":ask}),
        "alice is a member: she gets the data in her answer"
    );
    assert_eq!(bob.recv().unwrap().unwrap()["data"], ask);
    let pong = bob.request("p", "bester.ping", &Value::Null).unwrap();
    assert_eq!(
        pong["header"]["id"], "p",
        "bob once, though in both groups: {pong}"
    );
    // Nothing more went to b.
    b.set_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    assert!(b.recv().is_err(), "no second frame to b");
}

#[test]
fn group_members_on_two_real_servers_each_get_it_once() {
    let (a, b) = pair();
    let mut alice = a.login("alice", "alice-pw");
    let mut bob_b = b.login("bob", "bob-pw");
    let mut carol_a = a.login("carol", "carol-pw");
    let add = json!({"action":"group_add","group":"team","users":["carol","bob@b","alice"]});
    let reply = alice.request("g", "faulty", &add).unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    let ask = json!({"action":"to_groups","groups":["team"],"users":["bob@b"]});
    let reply = alice.request("t", "faulty", &ask).unwrap();
    assert_eq!(
        reply["header"],
        json!({"status":"ok","kind":"reply","id":"t","type":"faulty","delivered":["alice","carol","bob@b"],"offline":[]}),
        "{reply}"
    );
    for (who, client) in [("bob on b", &mut bob_b), ("carol on a", &mut carol_a)] {
        assert_eq!(client.recv().unwrap().unwrap()["data"], ask, "{who}");
        let pong = client.request("p", "bester.ping", &Value::Null).unwrap();
        assert_eq!(pong["header"]["id"], "p", "{who} once: {pong}");
    }
}
