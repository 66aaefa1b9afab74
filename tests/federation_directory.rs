//! The federation directory (`[federation] directory = true`) with real besterd processes on
//! loopback: a user logging in on b is online in a's directory, a's subscribers are told when he
//! comes and when his last connection closes, a handler's `sendClients ["bob"]` on a reaches him
//! on b, a's entries for b go when b is killed and come back when it returns, and a peer that
//! announces another server's users is refused `forged_origin` (and past the bound,
//! `limit_reached`).

mod common;

use besterd::client::Client;
use common::{Broker, eventually, handler};
use serde_json::{Value, json};

const SECRET: &str = "secret-shared-by-a-and-b";

fn users() -> Vec<(&'static str, &'static str)> {
    vec![("alice", "alice-pw"), ("bob", "bob-pw")]
}

fn tables(peer: &str, address: Option<std::net::SocketAddr>, extra: &str) -> String {
    let address = address
        .map(|a| format!("address = \"{a}\"\n"))
        .unwrap_or_default();
    format!(
        "[handlers.faulty]\n{}\n[peers.{peer}]\nsecret = {SECRET:?}\n{address}[federation]\ndirectory = true\n{extra}\n",
        handler("python3", "tests/handlers/faulty.py")
    )
}

fn start_a(extra: &str) -> Broker {
    Broker::launch("a", "127.0.0.1:0", "", &tables("b", None, extra), &users())
}

fn start_b(a: &Broker, listen: &str) -> Broker {
    Broker::launch("b", listen, "", &tables("a", Some(a.addr), ""), &users())
}

/// Wait until `server` reports exactly these peers linked.
fn wait_for_peers(server: &Broker, want: &[&str]) {
    common::wait_for_peers_as(server, ("alice", "alice-pw"), want);
}

/// The next presence push on `c` (skipping nothing: anything else fails the test).
fn push(c: &mut Client) -> Value {
    let frame = c.recv().unwrap().expect("a presence push");
    assert_eq!(frame["header"]["kind"], "presence", "{frame}");
    frame["data"].clone()
}

fn bob_on_b(state: &str, connections: u64) -> Value {
    json!({"user":"bob","server":"b","state":state,"connections":connections})
}

#[test]
fn bob_on_b_is_seen_from_a_on_connect_and_last_close_and_reached_by_name() {
    let a = start_a("");
    let mut alice = a.login("alice", "alice-pw");
    let answer = alice
        .request(
            "s",
            "bester.presence.subscribe",
            &json!({"users":["bob@b"]}),
        )
        .unwrap();
    assert_eq!(answer["data"]["users"], json!([bob_on_b("offline", 0)]));
    let b = start_b(&a, "127.0.0.1:0");
    wait_for_peers(&a, &["b"]);
    let bob = b.login("bob", "bob-pw");
    assert_eq!(push(&mut alice), bob_on_b("online", 1), "told on connect");
    let bob2 = b.login("bob", "bob-pw");
    assert_eq!(push(&mut alice), bob_on_b("online", 2));
    // A bare name finds him on b, since he is not on a.
    let now = alice
        .request("q", "bester.presence", &json!({"users":["bob"]}))
        .unwrap();
    assert_eq!(now["data"]["users"], json!([bob_on_b("online", 2)]));
    // A handler on a sends to "bob": the directory places him on b, and he gets it there.
    let mut bob = bob;
    let reply = alice
        .request(
            "to-bob",
            "faulty",
            &json!({"action":"send_to","users":["bob"],"n":1}),
        )
        .unwrap();
    assert_eq!(reply["header"]["delivered"], json!(["bob"]), "{reply}");
    let got = bob.recv().unwrap().expect("the push on b");
    assert_eq!(got["header"]["kind"], "push", "{got}");
    assert_eq!(got["data"]["n"], 1, "{got}");
    drop(bob);
    assert_eq!(push(&mut alice), bob_on_b("online", 1));
    drop(bob2);
    assert_eq!(
        push(&mut alice),
        bob_on_b("offline", 0),
        "told on the last close"
    );
}

#[test]
fn a_entries_for_b_go_when_b_is_killed_and_come_back_after_its_restart() {
    let a = start_a("");
    let mut b = start_b(&a, "127.0.0.1:0");
    let b_addr = b.addr;
    wait_for_peers(&a, &["b"]);
    let _bob = b.login("bob", "bob-pw");
    let mut alice = a.login("alice", "alice-pw");
    eventually("a's directory to have bob on b", || {
        let q = alice
            .request("q", "bester.presence", &json!({"users":["bob@b"]}))
            .unwrap();
        (q["data"]["users"][0]["state"] == "online").then_some(())
    });
    alice
        .request("s", "bester.presence.subscribe", &json!({"users":["bob"]}))
        .unwrap();
    common::signal(b.pid(), libc::SIGKILL);
    let _ = b.stop();
    assert_eq!(
        push(&mut alice),
        bob_on_b("offline", 0),
        "b's entries go with its link"
    );
    let b = start_b(&a, &b_addr.to_string());
    wait_for_peers(&a, &["b"]);
    let _bob = b.login("bob", "bob-pw");
    assert_eq!(push(&mut alice), bob_on_b("online", 1), "and come back");
}

/// A hand-rolled peer "b" linked to `a`: the link, after the handshake.
fn fake_b(a: &Broker) -> Client {
    let (c, answer) = common::fake_peer(a, "b", SECRET, None);
    assert_eq!(answer["header"]["status"], "ok", "{answer}");
    c
}

#[test]
fn a_peer_announcing_another_servers_users_is_refused() {
    // a knows c as a peer too (never linked here), so `bob@c` names c's user.
    let a = start_a(&format!(
        "max_directory_entries = 3\n[peers.c]\nsecret = {SECRET:?}"
    ));
    let mut b = fake_b(&a);
    // a sends its snapshot first: one part, nobody online.
    let snapshot = b.recv().unwrap().unwrap();
    assert_eq!(
        snapshot,
        json!({"header":{"kind":"directory","server":"a","seq":1,"part":1,"parts":1},"data":[]})
    );
    // Speaking as c: refused, nothing taken.
    b.send(&json!({"header":{"kind":"directory","server":"c","seq":1,"part":1,"parts":1},"data":[["bob",1]]}))
        .unwrap();
    assert_eq!(
        common::next_non_directory(&mut b),
        json!({"header":{"kind":"directory.error","status":"error","seq":1},"data":{"error":"peer \"b\" may announce only its own users, not those of \"c\"","code":"forged_origin"}})
    );
    // Naming c's user: that entry refused; b's own taken, also one whose name holds an `@`
    // naming no server a knows (a token's `sub`).
    b.send(&json!({"header":{"kind":"directory","server":"b","seq":2},"data":[["bob@c",1],["carl",1],["ann@example.com",2]]}))
        .unwrap();
    assert_eq!(
        common::next_non_directory(&mut b)["data"],
        json!({"error":"peer \"b\" may announce only its own users, not \"bob@c\"","code":"forged_origin"})
    );
    let mut alice = a.login("alice", "alice-pw");
    let q = alice
        .request(
            "q",
            "bester.presence",
            &json!({"users":["bob@c","carl@b","bob","ann@example.com"]}),
        )
        .unwrap();
    assert_eq!(
        q["data"]["users"],
        json!([
            {"user":"bob","server":"c","state":"offline","connections":0},
            {"user":"carl","server":"b","state":"online","connections":1},
            {"user":"bob","server":"a","state":"offline","connections":0},
            {"user":"ann@example.com","server":"b","state":"online","connections":2},
        ]),
        "{q}"
    );
    // Past the bound of 3 entries for b.
    b.send(
        &json!({"header":{"kind":"directory","server":"b","seq":3},"data":[["dee",1],["eve",1]]}),
    )
    .unwrap();
    let refused = common::next_non_directory(&mut b);
    assert_eq!(refused["data"]["code"], "limit_reached", "{refused}");
    // A gap in the numbers: a asks for a resync.
    b.send(&json!({"header":{"kind":"directory","server":"b","seq":9},"data":[["fay",1]]}))
        .unwrap();
    assert_eq!(
        common::next_non_directory(&mut b),
        json!({"header":{"kind":"directory.resync"}})
    );
}

/// A forged message from the hand-rolled peer `b`: a's refusal (an ack with `forged_origin`)
/// comes after every frame a queued for `b` before it read this one.
fn sync_on(b: &mut Client, msg: &str) -> Value {
    b.send(&json!({"header":{"scope":"server","msg":msg,"from":{"user":"mallory","server":"c"},"hops":1},"payload":{"type":"faulty","data":{}}}))
        .unwrap();
    b.recv().unwrap().expect("a frame")
}

#[test]
fn only_a_peer_that_negotiated_the_directory_is_sent_it() {
    let refusal = |msg: &str| json!({"kind":"ack","msg":msg,"status":"error"});
    let a = start_a("");
    // A server without the directory negotiates other features only: nothing of a's directory
    // reaches it, neither the snapshot at link-up nor the change of alice's login.
    let (mut b, answer) = common::fake_peer(&a, "b", SECRET, Some(&["stream", "directory-x"]));
    assert_eq!(answer["data"]["features"], json!(["stream"]), "{answer}");
    let alice = a.login("alice", "alice-pw");
    assert_eq!(sync_on(&mut b, "1")["header"], refusal("1"));
    drop(alice);
    assert_eq!(sync_on(&mut b, "2")["header"], refusal("2"));
    drop(b);

    // One that offers it gets both, before the refusal.
    let (mut b, answer) = common::fake_peer(&a, "b", SECRET, Some(&["directory"]));
    assert_eq!(answer["data"]["features"], json!(["directory"]), "{answer}");
    assert_eq!(
        b.recv().unwrap().unwrap(),
        json!({"header":{"kind":"directory","server":"a","seq":1,"part":1,"parts":1},"data":[]})
    );
    let _alice = a.login("alice", "alice-pw");
    assert_eq!(
        sync_on(&mut b, "3"),
        json!({"header":{"kind":"directory","server":"a","seq":2},"data":[["alice",1]]})
    );
    assert_eq!(b.recv().unwrap().unwrap()["header"], refusal("3"));
}
