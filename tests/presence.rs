//! Presence, groups and who may send what, against the real daemon (PROTOCOL.md §5 "Presence
//! and groups", §6 "Groups and presence" and "Who may send what"): presence on connect, on the
//! last connection's close, on kill -9 of a client, on revocation and during the drain; groups
//! with overlapping members (one delivery per connection); every bound and refusal with its
//! exact error; `allow` / `deny`; the chat example on groups with four processes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use besterd::client::Client;
use common::{Broker, besterd_cmd, code, eventually, handler, signal};
use serde_json::{Value, json};

const USERS: &[(&str, &str)] = &[
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("carol", "carol-pw"),
];

/// A broker with the group test handler (type `g`, also the auth handler), the faulty handler,
/// and these extra tables.
fn broker(server_keys: &str, tables: &str) -> Broker {
    let handlers = format!(
        "[handlers.g]\n{}\n[handlers.faulty]\n{}\n[auth]\nhandler = \"g\"\n{tables}",
        handler("python3", "tests/handlers/groups.py"),
        handler("python3", "tests/handlers/faulty.py"),
    );
    Broker::start_with(server_keys, &handlers, USERS)
}

fn presence(user: &str, state: &str, connections: u64) -> Value {
    json!({"header":{"status":"ok","kind":"presence"},"data":{"user":user,"server":"test","state":state,"connections":connections}})
}

fn entry(user: &str, state: &str, connections: u64) -> Value {
    json!({"user":user,"server":"test","state":state,"connections":connections})
}

fn next(client: &mut Client) -> Value {
    client.recv().unwrap().expect("a frame")
}

/// Have the `g` handler send these frames; the broker's reports to them.
fn handler_sends(client: &mut Client, frames: Value) -> Vec<Value> {
    let reply = client
        .request("hs", "g", &json!({ "send": frames }))
        .unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    reply["data"]["reports"].as_array().unwrap().clone()
}

fn group_add(group: &str, users: &[&str], id: &str) -> Value {
    json!({"header":{"status":"ok","command":"groupAdd","commandData":{"group":group,"users":users},"id":id}})
}

fn error(id: &str, code: &str, text: &str) -> Value {
    json!({"header":{"status":"error","kind":"reply","id":id},"data":{"error":text,"code":code}})
}

/// Log in through the auth handler with this authentication object.
fn login_with(b: &Broker, authentication: Value) -> (Client, Value) {
    let mut client = b.connect();
    client
        .send(&json!({"header":{"identify":{"type":"client","authentication":authentication}}}))
        .unwrap();
    let reply = next(&mut client);
    (client, reply)
}

fn subscribe(client: &mut Client, data: Value) -> Value {
    client
        .request("sub", "bester.presence.subscribe", &data)
        .unwrap()
}

#[test]
fn presence_on_connect_second_connection_and_last_close() {
    let b = broker("", "");
    let mut alice = b.login("alice", "alice-pw");
    let reply = subscribe(&mut alice, json!({"users":["bob"]}));
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"sub","type":"bester.presence.subscribe"},"data":{"users":[entry("bob","offline",0)]}})
    );
    let bob1 = b.login("bob", "bob-pw");
    assert_eq!(next(&mut alice), presence("bob", "online", 1));
    let bob2 = b.login("bob", "bob-pw");
    assert_eq!(next(&mut alice), presence("bob", "online", 2));
    drop(bob1);
    assert_eq!(next(&mut alice), presence("bob", "online", 1));
    drop(bob2);
    assert_eq!(next(&mut alice), presence("bob", "offline", 0));
    // The one-off query says the same.
    let now = alice
        .request("q", "bester.presence", &json!({"users":["bob","alice"]}))
        .unwrap();
    assert_eq!(
        now["data"],
        json!({"users":[entry("bob","offline",0), entry("alice","online",1)]})
    );
    // After unsubscribing, nothing more comes: the next frame is the answer to a ping.
    alice
        .request("u", "bester.presence.unsubscribe", &json!(null))
        .unwrap();
    let _bob = b.login("bob", "bob-pw");
    let pong = alice.request("p", "bester.ping", &json!(null)).unwrap();
    assert_eq!(pong["data"], "pong");
}

#[test]
fn kill_9_of_a_client_is_reported_offline() {
    let b = broker("", "");
    let mut alice = b.login("alice", "alice-pw");
    subscribe(&mut alice, json!({"users":["bob"]}));
    // bob is another process: logged in, then killed with SIGKILL (its socket dies with it).
    let script = format!(
        r#"
import json, socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", {port}))
body = json.dumps({{"header":{{"identify":{{"type":"client","authentication":{{"username":"bob","password":"bob-pw"}}}}}}}}).encode()
s.sendall(struct.pack("<I", len(body)) + body)
n = struct.unpack("<I", s.recv(4))[0]
s.recv(n)
print("in", flush=True)
time.sleep(600)
"#,
        port = b.addr.port()
    );
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "in");
    assert_eq!(next(&mut alice), presence("bob", "online", 1));
    signal(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    assert_eq!(next(&mut alice), presence("bob", "offline", 0));
}

#[test]
fn revocation_and_the_drain_are_reported_offline() {
    let b = broker("shutdown_grace_ms = 10000", "");
    let mut alice = b.login("alice", "alice-pw");
    subscribe(&mut alice, json!({"users":["bob","carol"]}));
    let mut bob = b.login("bob", "bob-pw");
    assert_eq!(next(&mut alice), presence("bob", "online", 1));
    // bob is deleted from the user store: his session is revoked, and he is offline.
    let del = besterd_cmd(
        &["user", "--users", b.users().to_str().unwrap(), "del", "bob"],
        None,
    );
    assert!(del.status.success(), "{del:?}");
    assert_eq!(code(&next(&mut bob)), "session_revoked");
    assert_eq!(next(&mut alice), presence("bob", "offline", 0));
    // The drain: a request hangs, so the server waits for it; carol leaving meanwhile is told.
    let carol = b.login("carol", "carol-pw");
    assert_eq!(next(&mut alice), presence("carol", "online", 1));
    alice
        .message("hang", "faulty", &json!({"action":"hang"}))
        .unwrap();
    let probe = alice.request("w", "bester.whoami", &json!(null)).unwrap();
    assert_eq!(probe["header"]["status"], "ok");
    signal(b.pid(), libc::SIGTERM);
    let mut n = 0;
    eventually("the drain to begin", || {
        n += 1;
        let r = alice
            .request(&format!("d{n}"), "bester.ping", &json!(null))
            .unwrap();
        (code(&r) == "shutting_down").then_some(())
    });
    drop(carol);
    assert_eq!(next(&mut alice), presence("carol", "offline", 0));
}

#[test]
fn status_text_is_carried_and_bounded() {
    let b = broker("", "");
    let mut alice = b.login("alice", "alice-pw");
    let mut bob = b.login("bob", "bob-pw");
    subscribe(&mut alice, json!({"users":["bob"]}));
    let set = bob
        .request("s", "bester.status", &json!({"text":"in a meeting"}))
        .unwrap();
    assert_eq!(
        set["data"],
        json!({"user":"bob","server":"test","state":"online","connections":1,"status":"in a meeting"})
    );
    assert_eq!(
        next(&mut alice),
        json!({"header":{"status":"ok","kind":"presence"},"data":{"user":"bob","server":"test","state":"online","connections":1,"status":"in a meeting"}})
    );
    let long = bob
        .request("l", "bester.status", &json!({"text":"x".repeat(257)}))
        .unwrap();
    assert_eq!(
        long,
        error(
            "l",
            "invalid_message",
            "bad data for \"bester.status\": text is at most 256 bytes (this one is 257)"
        )
    );
    bob.request("c", "bester.status", &json!({})).unwrap();
    assert_eq!(next(&mut alice), presence("bob", "online", 1));
}

#[test]
fn visibility_groups_hides_strangers_and_other_groups() {
    let b = broker("", "[presence]\nvisible = \"groups\"\n");
    let mut alice = b.login("alice", "alice-pw");
    let reply = subscribe(&mut alice, json!({"users":["bob"]}));
    assert_eq!(
        reply,
        error(
            "sub",
            "forbidden",
            "the presence of \"bob\" is visible only to users who share a group with them"
        )
    );
    let reply = subscribe(&mut alice, json!({"groups":["team"]}));
    assert_eq!(
        reply,
        error(
            "sub",
            "forbidden",
            "the presence of group \"team\" is visible only to its members"
        )
    );
    let reports = handler_sends(
        &mut alice,
        json!([group_add("team", &["alice", "bob"], "a")]),
    );
    assert_eq!(
        reports,
        [json!({"header":{"kind":"report","status":"ok","id":"a"}})]
    );
    let reply = subscribe(&mut alice, json!({"groups":["team"]}));
    assert_eq!(
        reply["data"],
        json!({"users":[entry("alice","online",1), entry("bob","offline",0)],"groups":{"team":["alice","bob"]}})
    );
    let _bob = b.login("bob", "bob-pw");
    assert_eq!(next(&mut alice), presence("bob", "online", 1));
}

#[test]
fn visibility_none_shows_only_oneself() {
    let b = broker("", "[presence]\nvisible = \"none\"\n");
    let mut alice = b.login("alice", "alice-pw");
    let reply = alice
        .request("q", "bester.presence", &json!({"users":["bob"]}))
        .unwrap();
    assert_eq!(
        reply,
        error("q", "forbidden", "presence is not visible on this server")
    );
    let me = alice
        .request("q", "bester.presence", &json!({"users":["alice"]}))
        .unwrap();
    assert_eq!(me["data"], json!({"users":[entry("alice","online",1)]}));
    // Handlers see everyone whatever the rule.
    let reports = handler_sends(
        &mut alice,
        json!([{"header":{"status":"ok","command":"presence","commandData":{"users":["bob","alice"]},"id":"q"}}]),
    );
    assert_eq!(
        reports,
        [
            json!({"header":{"kind":"report","status":"ok","id":"q"},"data":{"users":[entry("bob","offline",0), entry("alice","online",1)]}})
        ]
    );
}

#[test]
fn subscription_bound_is_enforced() {
    let b = broker("", "[presence]\nmax_subscriptions = 2\n");
    let mut alice = b.login("alice", "alice-pw");
    let reply = subscribe(&mut alice, json!({"users":["a","b","c"]}));
    assert_eq!(
        reply,
        error(
            "sub",
            "limit_reached",
            "a presence request may name at most 2 users and groups (this one names 3)"
        )
    );
    // A name is at most 256 bytes: a watcher cannot make the server keep long ones.
    let reply = subscribe(&mut alice, json!({"users":["x".repeat(257)]}));
    assert_eq!(code(&reply), "invalid_message", "{reply}");
    subscribe(&mut alice, json!({"users":["a","b"]}));
    subscribe(&mut alice, json!({"users":["a"]}));
    let reply = subscribe(&mut alice, json!({"groups":["g1"]}));
    assert_eq!(
        reply,
        error(
            "sub",
            "limit_reached",
            "a connection may watch at most 2 users and groups (this would make 3)"
        )
    );
}

#[test]
fn groups_with_overlapping_members_deliver_once_per_connection() {
    let b = broker("", "");
    let mut alice = b.login("alice", "alice-pw");
    let mut bob1 = b.login("bob", "bob-pw");
    let mut bob2 = b.login("bob", "bob-pw");
    let reports = handler_sends(
        &mut alice,
        json!([
            group_add("one", &["bob", "carol"], "1"),
            group_add("two", &["bob", "alice"], "2"),
            {"header":{"status":"ok","command":"sendClients","commandData":{"users":["bob"],"groups":["one","two"]},"id":"s"},"payload":{"type":"news","data":"hi"}},
            {"header":{"status":"ok","command":"sendClients","commandData":["bob"],"id":"m"},"payload":{"type":"news","data":"marker"}}
        ]),
    );
    assert_eq!(
        reports[2],
        json!({"header":{"kind":"report","status":"ok","id":"s","delivered":["bob","alice"],"offline":["carol"]}})
    );
    let hi = json!({"header":{"status":"ok","kind":"push","type":"news","from":{"server":"test","handler":"g"}},"data":"hi"});
    let marker = json!({"header":{"status":"ok","kind":"push","type":"news","from":{"server":"test","handler":"g"}},"data":"marker"});
    for bob in [&mut bob1, &mut bob2] {
        assert_eq!(next(bob), hi);
        assert_eq!(
            next(bob),
            marker,
            "one copy per connection, not one per group"
        );
    }
    assert_eq!(next(&mut alice), hi);
}

#[test]
fn handler_members_stay_offline_session_members_leave() {
    let b = broker("", "[groups]\nself_join = [\"room:*\"]\n");
    let mut alice = b.login("alice", "alice-pw");
    let mut bob = b.login("bob", "bob-pw");
    handler_sends(&mut alice, json!([group_add("room:1", &["carol"], "k")]));
    let joined = bob
        .request("j", "bester.join", &json!({"group":"room:1"}))
        .unwrap();
    assert_eq!(
        joined,
        json!({"header":{"status":"ok","kind":"reply","id":"j","type":"bester.join"},"data":{"group":"room:1","member":true}})
    );
    let reply = subscribe(&mut alice, json!({"groups":["room:1"]}));
    assert_eq!(reply["data"]["groups"], json!({"room:1":["bob","carol"]}));
    drop(bob);
    assert_eq!(next(&mut alice), presence("bob", "offline", 0));
    assert_eq!(
        next(&mut alice),
        json!({"header":{"status":"ok","kind":"presence"},"data":{"user":"bob","server":"test","state":"offline","connections":0,"group":"room:1","member":false}})
    );
    let now = alice
        .request("q", "bester.presence", &json!({"groups":["room:1"]}))
        .unwrap();
    assert_eq!(
        now["data"],
        json!({"users":[entry("carol","offline",0)],"groups":{"room:1":["carol"]}}),
        "carol, whom a handler added, stays while offline"
    );
}

#[test]
fn join_and_group_bounds_refuse_with_their_errors() {
    let b = broker(
        "",
        "[groups]\nself_join = [\"room:*\"]\nmax_groups = 3\nmax_members = 2\nmax_groups_per_user = 2\n",
    );
    let mut alice = b.login("alice", "alice-pw");
    let mut bob = b.login("bob", "bob-pw");
    let mut carol = b.login("carol", "carol-pw");
    let join = |c: &mut Client, group: &str| {
        c.request("j", "bester.join", &json!({ "group": group }))
            .unwrap()
    };
    assert_eq!(
        join(&mut alice, "staff"),
        error(
            "j",
            "forbidden",
            "group \"staff\" is not open to bester.join on this server"
        )
    );
    assert_eq!(
        join(&mut alice, "room:a b"),
        error(
            "j",
            "invalid_message",
            "group name \"room:a b\" must be 1 to 64 characters of A-Z a-z 0-9 . _ - :"
        )
    );
    assert_eq!(join(&mut alice, "room:1")["header"]["status"], "ok");
    assert_eq!(join(&mut bob, "room:1")["header"]["status"], "ok");
    assert_eq!(
        join(&mut carol, "room:1"),
        error(
            "j",
            "limit_reached",
            "group \"room:1\" would have 3 members, over the limit of 2"
        )
    );
    assert_eq!(join(&mut alice, "room:2")["header"]["status"], "ok");
    assert_eq!(
        join(&mut alice, "room:3"),
        error(
            "j",
            "limit_reached",
            "user \"alice\" is already a member of 2 groups, the most one user may be in"
        )
    );
    assert_eq!(join(&mut carol, "room:3")["header"]["status"], "ok");
    assert_eq!(
        join(&mut carol, "room:4"),
        error(
            "j",
            "limit_reached",
            "there are already 3 groups on this server (the most there may be)"
        )
    );
    // A handler's groupAdd meets the same bounds, in its report.
    let reports = handler_sends(&mut alice, json!([group_add("room:1", &["carol"], "x")]));
    assert_eq!(
        reports,
        [
            json!({"header":{"kind":"report","status":"error","id":"x"},"data":{"error":"group \"room:1\" would have 3 members, over the limit of 2","code":"limit_reached"}})
        ]
    );
    // A groupAdd with a request is not an answer.
    let left = alice
        .request("l", "bester.leave", &json!({"group":"room:2"}))
        .unwrap();
    assert_eq!(left["data"], json!({"group":"room:2","member":false}));
}

#[test]
fn allow_and_deny_refuse_with_forbidden_and_the_id() {
    let b = broker(
        "",
        &format!(
            "[handlers.echo]\n{}\nallow = [\"group:staff\", \"user:alice\"]\ndeny = [\"user:carol\"]\n",
            handler("python3", "handlers/python/echo.py")
        ),
    );
    let mut alice = b.login("alice", "alice-pw");
    let mut bob = b.login("bob", "bob-pw");
    let mut carol = b.login("carol", "carol-pw");
    let ok = alice.request("e", "echo", &json!("hi")).unwrap();
    assert_eq!(ok["data"], "hi");
    let refused = bob.request("e1", "echo", &json!("hi")).unwrap();
    assert_eq!(
        refused,
        error(
            "e1",
            "forbidden",
            "user \"bob\" may not send \"echo\" messages on this server"
        )
    );
    handler_sends(
        &mut alice,
        json!([group_add("staff", &["bob", "carol"], "s")]),
    );
    assert_eq!(bob.request("e2", "echo", &json!(1)).unwrap()["data"], 1);
    let denied = carol.request("e3", "echo", &json!(1)).unwrap();
    assert_eq!(code(&denied), "forbidden", "deny wins over allow: {denied}");
    // Groups from the auth handler's info count.
    let (mut dave, reply) = login_with(&b, json!({"user":"dave","groups":["staff"]}));
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    assert_eq!(dave.request("e4", "echo", &json!(2)).unwrap()["data"], 2);
    let (mut erin, _) = login_with(&b, json!({"user":"erin"}));
    assert_eq!(
        code(&erin.request("e5", "echo", &json!(2)).unwrap()),
        "forbidden"
    );
}

#[test]
fn chat_example_with_four_processes_shares_rooms() {
    let b = Broker::start_with(
        "",
        &format!(
            "[handlers.chat]\n{}\nprocesses = 4\n",
            handler("python3", "handlers/python/chat.py")
        ),
        USERS,
    );
    let mut alice = b.login("alice", "alice-pw");
    let mut bob = b.login("bob", "bob-pw");
    // Each join and say may go to any of the four processes: none keeps the room.
    for client in [&mut alice, &mut bob] {
        let reply = client
            .request("j", "chat", &json!({"action":"join","room":"r"}))
            .unwrap();
        assert_eq!(
            reply["data"],
            json!({"room":"r","group":"chat:r"}),
            "{reply}"
        );
    }
    // The room is the broker's group: who is in it, online or not, is a presence query.
    let members = alice
        .request("q", "bester.presence", &json!({"groups":["chat:r"]}))
        .unwrap();
    assert_eq!(members["data"]["groups"], json!({"chat:r":["alice","bob"]}));
    for n in 0..8 {
        let text = format!("hello {n}");
        let reply = alice
            .request("s", "chat", &json!({"action":"say","room":"r","text":text}))
            .unwrap();
        assert_eq!(
            reply["header"]["delivered"],
            json!(["alice", "bob"]),
            "{reply}"
        );
        let push = next(&mut bob);
        assert_eq!(push["data"], json!({"room":"r","from":"alice","text":text}));
    }
    let carol_says = {
        let mut carol = b.login("carol", "carol-pw");
        carol
            .request(
                "s",
                "chat",
                &json!({"action":"say","room":"r","text":"me too"}),
            )
            .unwrap()
    };
    assert_eq!(
        carol_says,
        error(
            "s",
            "forbidden",
            "carol is not a member of group \"chat:r\""
        )
    );
}
