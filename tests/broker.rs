//! End to end on one server: the real besterd binary, real Python and Node handler processes, real
//! TCP clients. Each test says what behaviour it shows.

mod common;

use std::collections::HashSet;

use besterd::protocol::encode_frame;
use common::{Broker, DEADLINE, code, eventually, signal};
use serde_json::json;

#[test]
fn login_ok_says_who_you_are_and_bad_password_is_refused_and_closed() {
    let broker = Broker::start("");
    let (_, mut reply) = besterd::client::Client::login(broker.addr, "alice", "alice-pw").unwrap();
    // Every login's reply carries the session's resume token (tests/token_login.rs).
    let data = reply["data"].as_object_mut().unwrap();
    assert!(
        data.remove("resume")
            .unwrap()
            .as_str()
            .unwrap()
            .starts_with("v1.")
    );
    assert!(data.remove("resume_expires").unwrap().is_u64());
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply"},"data":{"user":"alice","server":"test"}})
    );

    for (user, password) in [("alice", "wrong"), ("nobody", "alice-pw")] {
        let (mut client, reply) =
            besterd::client::Client::login(broker.addr, user, password).unwrap();
        assert_eq!(
            reply,
            json!({"header":{"status":"error","kind":"reply"},"data":{"error":"invalid username or password","code":"auth_failed"}})
        );
        client.set_timeout(Some(DEADLINE)).unwrap();
        assert_eq!(
            client.recv().unwrap(),
            None,
            "connection closed after a failed login"
        );
    }
}

#[test]
fn message_before_identify_is_refused_and_closed() {
    let broker = Broker::start("");
    let mut client = broker.connect();
    client.message("1", "echo", &json!("hi")).unwrap();
    let reply = client.recv().unwrap().unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"error","kind":"reply","id":"1"},"data":{"error":"identify first","code":"not_identified"}})
    );
    assert_eq!(client.recv().unwrap(), None);
}

#[test]
fn connection_that_never_identifies_is_closed_after_the_timeout() {
    let broker = Broker::start("identify_timeout_ms = 300");
    let mut client = broker.connect();
    let reply = client.recv().unwrap().unwrap();
    assert_eq!(code(&reply), "identify_timeout");
    assert_eq!(reply["data"]["error"], "no identify within 300 ms");
    assert_eq!(client.recv().unwrap(), None);
}

#[test]
fn echo_round_trip_keeps_the_id_python_and_node() {
    let broker = Broker::start("");
    let mut alice = broker.login("alice", "alice-pw");
    let data = json!({"nested":{"list":[1,2.5,"three",null,true]},"text":"grüße ✓"});
    let reply = alice.request("id-42", "echo", &data).unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"id-42","type":"echo"},"data":data})
    );

    let reply = alice
        .request("n1", "upper", &json!({"text":"hello"}))
        .unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"n1","type":"upper"},"data":{"text":"HELLO"}})
    );

    // Node's handler passes its result on to the Python echo handler with sendHandler.
    let reply = alice
        .request("chain", "upper", &json!({"text":"via","forward":"echo"}))
        .unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    assert_eq!(reply["header"]["type"], "echo");
    assert_eq!(reply["data"], json!({"text":"VIA"}));

    let reply = alice.request("bad", "upper", &json!({"text": 5})).unwrap();
    assert_eq!(reply["header"]["status"], "error");
    assert_eq!(code(&reply), "bad_request");
}

#[test]
fn unknown_type_and_unknown_builtin_get_clear_errors() {
    let broker = Broker::start("");
    let mut alice = broker.login("alice", "alice-pw");
    let reply = alice.request("u", "no-such-type", &json!(null)).unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"error","kind":"reply","id":"u"},"data":{"error":"no handler for type \"no-such-type\"","code":"unknown_type"}})
    );
    let reply = alice
        .request("b", "bester.frobnicate", &json!(null))
        .unwrap();
    assert_eq!(code(&reply), "reserved_type");
}

#[test]
fn chat_fans_out_to_two_users_and_reports_offline_ones() {
    let broker = Broker::start("");
    let mut alice = broker.login("alice", "alice-pw");
    let mut bob = broker.login("bob", "bob-pw");
    let mut carol = broker.login("carol", "carol-pw");
    for (client, who) in [
        (&mut alice, "alice"),
        (&mut bob, "bob"),
        (&mut carol, "carol"),
    ] {
        let reply = client
            .request("j", "chat", &json!({"action":"join","room":"r"}))
            .unwrap();
        assert_eq!(reply["header"]["status"], "ok", "{who} join: {reply}");
    }
    // carol stays a member of the room but has no connection any more. Logging out is answered
    // only after the server has forgotten the connection, so there is no race with the next step.
    let bye = carol.request("l", "bester.logout", &json!(null)).unwrap();
    assert_eq!(bye["header"]["status"], "ok");
    let reply = alice
        .request(
            "say",
            "chat",
            &json!({"action":"say","room":"r","text":"hello"}),
        )
        .unwrap();
    let said = json!({"room":"r","from":"alice","text":"hello"});
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    assert_eq!(reply["header"]["delivered"], json!(["alice", "bob"]));
    assert_eq!(reply["header"]["offline"], json!(["carol"]));
    assert_eq!(
        reply["data"], said,
        "the sender is a recipient, so the reply carries the data"
    );
    let push = bob.recv().unwrap().unwrap();
    assert_eq!(
        push,
        json!({"header":{"status":"ok","kind":"push","type":"chat","from":{"user":"alice","server":"test"}},"data":said})
    );
}

#[test]
fn handler_killed_mid_request_is_answered_then_restarted() {
    let broker = Broker::start("");
    let mut alice = broker.login("alice", "alice-pw");
    let first = alice
        .request("p1", "faulty", &json!({"action":"pid"}))
        .unwrap();
    let pid = first["data"]["pid"].as_u64().expect("pid") as u32;
    alice
        .message("hang", "faulty", &json!({"action":"hang"}))
        .unwrap();
    // The request is in flight (the handler holds it); kill -9 the handler process.
    let check = alice
        .request("p2", "faulty", &json!({"action":"pid"}))
        .unwrap();
    assert_eq!(check["data"]["pid"], pid, "same process still serving");
    signal(pid, libc::SIGKILL);
    let reply = alice.recv().unwrap().unwrap();
    assert_eq!(reply["header"]["id"], "hang");
    assert_eq!(code(&reply), "handler_unavailable");
    assert_eq!(
        reply["data"]["error"],
        "the \"faulty\" handler went away before answering"
    );
    // Restarted with backoff and serving again, as a new process: a request sent while it
    // restarts waits for it (never handler_not_running).
    let reply = alice
        .request("again", "faulty", &json!({"action":"pid"}))
        .unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    let new_pid = reply["data"]["pid"].as_u64().unwrap();
    assert_ne!(new_pid as u32, pid);
    assert!(
        broker.log().contains("handler=faulty#0 exited"),
        "the death is logged"
    );
}

#[test]
fn change_password_then_login_with_the_new_one() {
    let broker = Broker::start("");
    let mut alice = broker.login("alice", "alice-pw");
    let reply = alice
        .request("c1", "bester.passwd", &json!({"old":"wrong","new":"x"}))
        .unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"error","kind":"reply","id":"c1"},"data":{"error":"the old password is wrong","code":"auth_failed"}})
    );
    let reply = alice
        .request(
            "c2",
            "bester.passwd",
            &json!({"old":"alice-pw","new":"new-secret"}),
        )
        .unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    // Still logged in on this connection.
    assert_eq!(alice.request("e", "echo", &json!(1)).unwrap()["data"], 1);
    let (_, old) = besterd::client::Client::login(broker.addr, "alice", "alice-pw").unwrap();
    assert_eq!(code(&old), "auth_failed");
    broker.login("alice", "new-secret");
    let store = std::fs::read_to_string(broker.users()).unwrap();
    assert!(!store.contains("new-secret"), "only the hash is stored");
}

#[test]
fn two_hundred_pipelined_requests_each_answered_once_with_its_id() {
    let broker = Broker::start("");
    let mut alice = broker.login("alice", "alice-pw");
    let mut wire = Vec::new();
    for i in 0..200usize {
        let kind = if i.is_multiple_of(2) { "echo" } else { "upper" };
        let data = if kind == "echo" {
            json!({"n": i})
        } else {
            json!({"text": format!("m{i}")})
        };
        let frame = json!({"header":{"scope":"client","id":format!("r{i}")},"payload":{"type":kind,"data":data}});
        encode_frame(frame.to_string().as_bytes(), &mut wire);
    }
    alice.send_raw(&wire).unwrap();
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let reply = alice.recv().unwrap().expect("a reply");
        assert_eq!(reply["header"]["status"], "ok", "{reply}");
        let id = reply["header"]["id"].as_str().unwrap().to_string();
        let i: usize = id[1..].parse().unwrap();
        let expected = if i.is_multiple_of(2) {
            json!({"n": i})
        } else {
            json!({"text": format!("M{i}")})
        };
        assert_eq!(reply["data"], expected, "reply {id} carries its own data");
        assert!(seen.insert(id.clone()), "{id} answered twice");
    }
    assert_eq!(seen.len(), 200);
    // Nothing more: a ping is the very next frame.
    let pong = alice.request("after", "bester.ping", &json!(null)).unwrap();
    assert_eq!(pong["data"], "pong");
}

#[test]
fn whoami_authenticate_and_logout() {
    let broker = Broker::start("");
    let mut client = broker.login("alice", "alice-pw");
    let me = client.request("w", "bester.whoami", &json!(null)).unwrap();
    assert_eq!(me["data"]["user"], "alice");
    assert_eq!(me["data"]["handlers"]["echo"], 1);
    let bad = client
        .request(
            "a1",
            "bester.authenticate",
            &json!({"username":"bob","password":"nope"}),
        )
        .unwrap();
    assert_eq!(code(&bad), "auth_failed");
    let ok = client
        .request(
            "a2",
            "bester.authenticate",
            &json!({"username":"bob","password":"bob-pw"}),
        )
        .unwrap();
    assert_eq!(ok["data"]["user"], "bob");
    assert_eq!(ok["data"]["server"], "test");
    assert!(ok["data"]["resume"].as_str().unwrap().starts_with("v1."));
    assert_eq!(
        client.request("w2", "bester.whoami", &json!(null)).unwrap()["data"]["user"],
        "bob"
    );
    let bye = client.request("l", "bester.logout", &json!(null)).unwrap();
    assert_eq!(bye["header"]["status"], "ok");
    assert_eq!(client.recv().unwrap(), None, "closed after logout");
}

#[test]
fn sigterm_stops_the_daemon_and_its_handlers() {
    let mut broker = Broker::start("");
    let mut alice = broker.login("alice", "alice-pw");
    let pid = alice
        .request("p", "faulty", &json!({"action":"pid"}))
        .unwrap()["data"]["pid"]
        .as_u64()
        .unwrap();
    let status = broker.stop();
    assert!(status.success(), "{status}");
    assert!(
        !broker.dir.path().join("run/echo.sock").exists(),
        "sockets removed"
    );
    eventually("the handler to exit", || {
        // kill(pid, 0) fails once the process is gone (it was reaped by besterd).
        (unsafe { libc::kill(pid as i32, 0) } != 0).then_some(())
    });
}

/// The examples built into the binary (what `besterd serve` runs with no configuration) answer
/// with nothing installed: besterd writes the Python package they import (`bester/`) beside them,
/// and `python3 -S` (no site-packages at all) finds it there.
#[test]
fn the_built_in_examples_run_on_the_package_written_beside_them() {
    let handlers = "[handlers.echo]\ncommand = [\"python3\", \"-S\", \"{examples}/echo.py\"]\n\
                    [handlers.chat]\ncommand = [\"python3\", \"-S\", \"{examples}/chat.py\"]\n";
    let broker = Broker::start_with("", handlers, &[("alice", "alice-pw")]);
    let mut alice = broker.login("alice", "alice-pw");
    let reply = alice.request("e", "echo", &json!({"n": 1})).unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"e","type":"echo"},"data":{"n":1}}),
        "{}",
        broker.log()
    );
    let reply = alice
        .request("j", "chat", &json!({"action":"join","room":"r"}))
        .unwrap();
    assert_eq!(reply["data"], json!({"room":"r","group":"chat:r"}));
    let examples = std::fs::read_dir(broker.dir.path().join("run"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("examples-")
        })
        .expect("the examples directory");
    assert!(examples.join("bester").join("handler.py").is_file());
}
