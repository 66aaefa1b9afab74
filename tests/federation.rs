//! Federation with three real besterd processes on loopback: peers authenticate each other with
//! challenge-response, sendServers delivers through handlers on both ends, unreachable peers are
//! reported, links come back after a restart, and nothing loops.

mod common;

use besterd::client::Client;
use besterd::federation::handshake::{self, Side, Transcript};
use common::{Broker, DEADLINE, code, eventually, handler};
use serde_json::{Value, json};

const SECRET_AB: &str = "secret-shared-by-a-and-b";
const SECRET_AC: &str = "secret-shared-by-a-and-c";
const SECRET_BC: &str = "secret-shared-by-b-and-c";

fn users() -> Vec<(&'static str, &'static str)> {
    vec![
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol-pw"),
    ]
}

/// Handler tables for a server whose chat relays to `chat_peers`.
fn handlers(chat_peers: &str) -> String {
    format!(
        "[handlers.chat]\n{}\nenv = {{ BESTER_CHAT_PEERS = {chat_peers:?} }}\n[handlers.faulty]\n{}\n",
        handler("python3", "handlers/python/chat.py"),
        handler("python3", "tests/handlers/faulty.py"),
    )
}

fn peer(name: &str, secret: &str, address: Option<std::net::SocketAddr>) -> String {
    let address = address
        .map(|a| format!("address = \"{a}\"\n"))
        .unwrap_or_default();
    format!("[peers.{name}]\nsecret = {secret:?}\n{address}")
}

/// A full mesh: a is started first (dials nobody), b dials a, c dials a and b.
struct Mesh {
    a: Broker,
    b: Broker,
    c: Broker,
}

fn start_b(a: &Broker, listen: &str) -> Broker {
    let tables = format!(
        "{}{}{}",
        handlers("a,c"),
        peer("a", SECRET_AB, Some(a.addr)),
        peer("c", SECRET_BC, None)
    );
    Broker::launch("b", listen, "request_timeout_ms = 3000", &tables, &users())
}

fn mesh() -> Mesh {
    let a_tables = format!(
        "{}{}{}",
        handlers("b,c"),
        peer("b", SECRET_AB, None),
        peer("c", SECRET_AC, None)
    );
    let a = Broker::launch(
        "a",
        "127.0.0.1:0",
        "request_timeout_ms = 3000",
        &a_tables,
        &users(),
    );
    let b = start_b(&a, "127.0.0.1:0");
    let c_tables = format!(
        "{}{}{}",
        handlers("a,b"),
        peer("a", SECRET_AC, Some(a.addr)),
        peer("b", SECRET_BC, Some(b.addr))
    );
    let c = Broker::launch(
        "c",
        "127.0.0.1:0",
        "request_timeout_ms = 3000",
        &c_tables,
        &users(),
    );
    let mesh = Mesh { a, b, c };
    for (server, want) in [
        (&mesh.a, ["b", "c"]),
        (&mesh.b, ["a", "c"]),
        (&mesh.c, ["a", "b"]),
    ] {
        wait_for_peers(server, &want);
    }
    mesh
}

/// Wait until `server` reports exactly these peers linked.
fn wait_for_peers(server: &Broker, want: &[&str]) {
    common::wait_for_peers_as(server, ("bob", "bob-pw"), want);
}

#[test]
fn user_on_a_reaches_user_on_c_through_chat_handlers_on_both() {
    let m = mesh();
    let mut alice = m.a.login("alice", "alice-pw");
    let mut carol = m.c.login("carol", "carol-pw");
    for (client, who) in [(&mut alice, "alice"), (&mut carol, "carol")] {
        let reply = client
            .request("j", "chat", &json!({"action":"join","room":"r"}))
            .unwrap();
        assert_eq!(
            reply["data"],
            json!({"room":"r","group":"chat:r"}),
            "{who} joins the room on their own server"
        );
    }
    let reply = alice
        .request(
            "say",
            "chat",
            &json!({"action":"say","room":"r","text":"hello from a"}),
        )
        .unwrap();
    assert_eq!(reply["header"]["delivered"], json!(["alice"]), "{reply}");
    let push = carol
        .recv()
        .unwrap()
        .expect("carol gets alice's message through c's chat handler");
    assert_eq!(push["header"]["kind"], "push");
    assert_eq!(
        push["data"],
        json!({"room":"r","from":"alice","server":"a","text":"hello from a"})
    );
    assert_eq!(
        push["header"]["from"],
        json!({"server":"a","handler":"chat"}),
        "relayed as a's chat handler"
    );
}

#[test]
fn send_servers_reports_each_peer_and_relays_without_loops() {
    let m = mesh();
    let mut alice = m.a.login("alice", "alice-pw");
    // a's faulty handler sends to b; b's faulty handler sends on to a (refused: it came from a)
    // and to c, whose faulty handler answers.
    let data = json!({"action":"to_servers","servers":["b"],"data":{"action":"to_servers","servers":["a","c"],"data":{"action":"echo"}}});
    let reply = alice.request("fan", "faulty", &data).unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    let b = &reply["header"]["servers"]["b"];
    assert_eq!(b["status"], "ok", "{reply}");
    assert_eq!(
        b["servers"]["a"]["code"], "hop_limit",
        "never sent back where it came from: {reply}"
    );
    assert_eq!(b["servers"]["c"]["status"], "ok", "{reply}");
}

#[test]
fn killing_b_is_reported_and_links_come_back_after_restart() {
    let mut m = mesh();
    let b_addr = m.b.addr;
    let mut alice = m.a.login("alice", "alice-pw");
    common::signal(m.b.pid(), libc::SIGKILL);
    let _ = m.b.stop();
    wait_for_peers(&m.a, &["c"]);
    let data = json!({"action":"to_servers","servers":["b","c"],"data":{"action":"echo"}});
    let reply = alice.request("while-down", "faulty", &data).unwrap();
    assert_eq!(
        reply["header"]["servers"]["b"]["code"], "peer_unreachable",
        "{reply}"
    );
    assert_eq!(reply["header"]["servers"]["c"]["status"], "ok", "{reply}");
    // Restart b on the same address: it dials a again, and c redials it.
    m.b = start_b(&m.a, &b_addr.to_string());
    wait_for_peers(&m.a, &["b", "c"]);
    wait_for_peers(&m.c, &["a", "b"]);
    let reply = alice.request("after", "faulty", &data).unwrap();
    assert_eq!(reply["header"]["servers"]["b"]["status"], "ok", "{reply}");
}

#[test]
fn wrong_secret_is_refused_and_never_linked() {
    let a_tables = format!("{}{}", handlers(""), peer("b", SECRET_AB, None));
    let a = Broker::launch("a", "127.0.0.1:0", "", &a_tables, &users());
    let b_tables = format!(
        "{}{}",
        handlers(""),
        peer("a", "not-the-secret-a-has", Some(a.addr))
    );
    let b = Broker::launch("b", "127.0.0.1:0", "", &b_tables, &users());
    eventually("b to notice the wrong proof", || {
        b.log().contains("the peer's proof is wrong").then_some(())
    });
    eventually("b to back off and retry", || {
        b.log().contains("retrying in").then_some(())
    });
    wait_for_peers(&a, &[]);
    assert!(!a.log().contains("link up"));
}

/// A hand-rolled peer speaking the handshake over a real socket.
fn fake_peer_handshake(a: &Broker, claim: &str, secret: &str) -> (Client, Value) {
    let mut c = a.connect();
    let nonce = handshake::nonce();
    c.send(&json!({"header":{"identify":{"type":"server","name":claim,"nonce":nonce}}}))
        .unwrap();
    let challenge = c.recv().unwrap().expect("a challenge");
    if challenge["header"]["status"] != "ok" {
        return (c, challenge);
    }
    assert_eq!(challenge["header"]["kind"], "challenge");
    assert_eq!(challenge["data"]["server"], "a");
    let theirs = challenge["data"]["nonce"].as_str().unwrap().to_string();
    let t = Transcript {
        initiator: claim,
        responder: "a",
        initiator_nonce: &nonce,
        responder_nonce: &theirs,
    };
    // a proves itself with the secret it shares with the server we claim to be.
    let claimed_secret = if claim == "b" { SECRET_AB } else { SECRET_AC };
    assert!(t.verify(
        claimed_secret.as_bytes(),
        Side::Responder,
        challenge["data"]["proof"].as_str().unwrap()
    ));
    c.send(&json!({"header":{"proof": t.proof(secret.as_bytes(), Side::Initiator)}}))
        .unwrap();
    let answer = c.recv().unwrap().expect("an answer");
    (c, answer)
}

#[test]
fn a_peer_cannot_claim_another_name_or_forge_a_third_server() {
    let a_tables = format!(
        "{}{}{}",
        handlers(""),
        peer("b", SECRET_AB, None),
        peer("c", SECRET_AC, None)
    );
    let a = Broker::launch("a", "127.0.0.1:0", "", &a_tables, &users());
    // Claiming to be c with b's secret: refused, closed.
    let (mut c, answer) = fake_peer_handshake(&a, "c", SECRET_AB);
    assert_eq!(
        answer,
        json!({"header":{"status":"error","kind":"reply"},"data":{"error":"peer authentication failed","code":"auth_failed"}})
    );
    c.set_timeout(Some(DEADLINE)).unwrap();
    assert!(
        matches!(c.recv(), Ok(None) | Err(_)),
        "closed after the refusal"
    );
    // An unknown server name gets the same answer, with no hint.
    let mut stranger = a.connect();
    stranger.send(&json!({"header":{"identify":{"type":"server","name":"zed","nonce":handshake::nonce()}}})).unwrap();
    assert_eq!(code(&stranger.recv().unwrap().unwrap()), "auth_failed");

    // As b with the right secret: linked. Then a message claiming to come from c is refused.
    let (mut b, answer) = fake_peer_handshake(&a, "b", SECRET_AB);
    assert_eq!(
        answer,
        json!({"header":{"status":"ok","kind":"reply"},"data":{"server":"a"}})
    );
    b.send(&json!({"header":{"scope":"server","msg":"1","from":{"user":"mallory","server":"c"},"hops":1},"payload":{"type":"faulty","data":{"action":"echo"}}}))
        .unwrap();
    let ack = b.recv().unwrap().unwrap();
    assert_eq!(
        ack["header"],
        json!({"kind":"ack","msg":"1","status":"error"})
    );
    assert_eq!(ack["data"]["code"], "forged_origin");
    // Speaking for its own users is fine.
    b.send(&json!({"header":{"scope":"server","msg":"2","from":{"user":"bob","server":"b"},"hops":1},"payload":{"type":"faulty","data":{"action":"echo","n":2}}}))
        .unwrap();
    let ack = b.recv().unwrap().unwrap();
    assert_eq!(ack["header"]["status"], "ok", "{ack}");
    assert_eq!(ack["data"], json!({"action":"echo","n":2}));
}
