//! A push to a group fanned out to many connections, against the real daemon: one body is
//! queued to every member's connection (PROTOCOL.md §6, `sendClients` with `groups`), so a
//! member that stops reading is closed as a slow consumer on its own while every other member,
//! listed after it or before it, still gets every push, in order.

mod common;

use std::thread;
use std::time::Instant;

use common::{Broker, DEADLINE, eventually, handler};
use serde_json::{Value, json};

const USERS: &[(&str, &str)] = &[
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("carol", "carol-pw"),
    ("dave", "dave-pw"),
];

/// Have the `g` handler (tests/handlers/groups.py) send these frames; the broker's reports.
fn handler_sends(client: &mut besterd::client::Client, frames: Value) -> Vec<Value> {
    let reply = client
        .request("hs", "g", &json!({ "send": frames }))
        .unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    reply["data"]["reports"].as_array().unwrap().clone()
}

/// Read pushes until the one whose data is "end": the `n` of each push before it, in order
/// (and the client, still connected).
fn read_until_end(mut client: besterd::client::Client) -> (Vec<u64>, besterd::client::Client) {
    let mut seen = Vec::new();
    loop {
        let push = client.recv().unwrap().expect("a push");
        assert_eq!(push["header"]["kind"], "push", "{push}");
        match &push["data"] {
            Value::String(s) if s == "end" => return (seen, client),
            data => seen.push(data["n"].as_u64().expect("n")),
        }
    }
}

#[test]
fn a_member_that_stops_reading_is_closed_alone_and_the_others_get_every_push() {
    let handlers = format!(
        "[handlers.g]\n{}\n",
        handler("python3", "tests/handlers/groups.py")
    );
    let b = Broker::start_with(
        "max_frame_bytes = 65536\nmax_outbound_bytes = 131072",
        &handlers,
        USERS,
    );
    let mut alice = b.login("alice", "alice-pw");
    // bob before carol and dave after her in the group's order; bob with two connections.
    let bob1 = b.login("bob", "bob-pw");
    let bob2 = b.login("bob", "bob-pw");
    let carol = b.login("carol", "carol-pw").into_stream();
    let dave = b.login("dave", "dave-pw");
    let add = json!({"header":{"status":"ok","command":"groupAdd","commandData":{"group":"room","users":["bob","carol","dave"]},"id":"add"}});
    let reports = handler_sends(&mut alice, json!([add]));
    assert_eq!(reports[0]["header"]["status"], "ok", "{reports:?}");
    let readers: Vec<_> = [bob1, bob2, dave]
        .into_iter()
        .map(|c| thread::spawn(move || read_until_end(c)))
        .collect();
    // Pushes of 8 KB to the group, 6 at a time (a request under the frame limit), until carol, who never reads, is over her limit.
    let filler = "x".repeat(8000);
    let (mut sent, started) = (0u64, Instant::now());
    while !b.log().contains("slow consumer") {
        assert!(
            started.elapsed() < DEADLINE,
            "carol was never over her limit"
        );
        let frames: Vec<Value> = (sent..sent + 6)
            .map(|n| json!({"header":{"status":"ok","command":"sendClients","commandData":{"groups":["room"]},"id":n.to_string()},"payload":{"type":"news","data":{"n":n,"filler":filler}}}))
            .collect();
        for report in handler_sends(&mut alice, Value::Array(frames)) {
            assert_eq!(report["header"]["status"], "ok", "{report}");
            let delivered = &report["header"]["delivered"];
            assert!(
                delivered.as_array().unwrap().iter().any(|u| u == "bob")
                    && delivered.as_array().unwrap().iter().any(|u| u == "dave"),
                "{report}"
            );
        }
        sent += 6;
    }
    let end = json!({"header":{"status":"ok","command":"sendClients","commandData":{"groups":["room"]},"id":"end"},"payload":{"type":"news","data":"end"}});
    handler_sends(&mut alice, json!([end]));
    let expected: Vec<u64> = (0..sent).collect();
    let mut members = Vec::new();
    for reader in readers {
        let (seen, client) = reader.join().unwrap();
        assert_eq!(seen, expected, "every push, in order");
        members.push(client);
    }
    eventually("carol's close to be logged", || {
        b.log().contains("user=carol: slow consumer").then_some(())
    });
    let log = b.log();
    assert_eq!(log.matches("user=carol: slow consumer").count(), 1, "{log}");
    for other in ["bob", "dave"] {
        assert!(!log.contains(&format!("user={other}: slow")), "{log}");
    }
    // Carol is gone from the group's online members; the others are still there.
    let reports = handler_sends(
        &mut alice,
        json!([{"header":{"status":"ok","command":"sendClients","commandData":{"groups":["room"]},"id":"after"},"payload":{"type":"news","data":"after"}}]),
    );
    assert_eq!(
        reports[0],
        json!({"header":{"kind":"report","status":"ok","id":"after","delivered":["bob","dave"],"offline":["carol"]}})
    );
    drop((carol, members));
}
