//! Every message answered with its id, and clients and handlers written from the original spec,
//! against the real binary: exact frames for each point.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};

use besterd::client::Client;
use common::{Broker, besterd_cmd, code, eventually, handler, repo};
use serde_json::{Value, json};

const USERS: &[(&str, &str)] = &[("alice", "alice-pw"), ("bob", "bob-pw")];

fn recv(client: &mut Client) -> Value {
    client
        .recv()
        .unwrap()
        .expect("a frame, not the end of the connection")
}

fn closed(client: &mut Client) -> bool {
    matches!(client.recv(), Ok(None) | Err(_))
}

fn error(id: Option<&str>, code: &str, text: &str) -> Value {
    let mut header = json!({"status":"error","kind":"reply"});
    if let Some(id) = id {
        header["id"] = json!(id);
    }
    json!({"header": header, "data": {"error": text, "code": code}})
}

/// An original-spec message: credentials beside the scope.
fn with_auth(id: &str, user: &str, password: &str, kind: &str, data: Value) -> Value {
    json!({"header":{"scope":"client","id":id,"authentication":{"username":user,"password":password}},
           "payload":{"type":kind,"data":data}})
}

#[test]
fn frames_that_fail_to_parse_are_answered_with_their_id_when_it_can_be_read() {
    let tables = format!(
        "[handlers.echo]\n{}\n",
        handler("python3", "handlers/python/echo.py")
    );
    let broker = Broker::start_with("", &tables, USERS);
    let mut c = broker.login("alice", "alice-pw");
    let long = "t".repeat(65);
    let type_text =
        |t: &str| format!("payload.type {t:?} must be 1 to 64 characters of A-Z a-z 0-9 . _ -");
    let cases: Vec<(String, Value)> = vec![
        (
            r#"{"header":{"scope":"client","id":"t1"},"payload":{"type":"a b"}}"#.into(),
            error(Some("t1"), "invalid_message", &type_text("a b")),
        ),
        (
            format!(r#"{{"header":{{"scope":"client","id":"t2"}},"payload":{{"type":"{long}"}}}}"#),
            error(Some("t2"), "invalid_message", &type_text(&long)),
        ),
        (
            r#"{"header":{"scope":5,"id":"s1"},"payload":{"type":"echo"}}"#.into(),
            error(
                Some("s1"),
                "invalid_message",
                "header.scope: invalid type: integer, expected a string",
            ),
        ),
        (
            r#"{"header":{"scope":"client","id":"u1"},"payload":{"type":"echo","dat":1}}"#.into(),
            error(
                Some("u1"),
                "invalid_message",
                "payload: unknown field `dat`, expected `type` or `data`",
            ),
        ),
        (
            r#"{"header":{"scope":"client","id":"u2","prio":1},"payload":{"type":"echo"}}"#.into(),
            error(
                Some("u2"),
                "invalid_message",
                "header: unknown field `prio`, expected one of `identify`, `scope`, `id`, `authentication`, `user`",
            ),
        ),
        (
            r#"{"header":"x","payload":{"type":"echo"}}"#.into(),
            error(
                None,
                "invalid_message",
                "header: invalid type: string, expected an object",
            ),
        ),
        (
            r#"{"header":{"scope":"galaxy","id":"g1"},"payload":{"type":"echo"}}"#.into(),
            error(Some("g1"), "unknown_scope", "unknown scope \"galaxy\"; expected \"client\""),
        ),
        (
            r#"{"header":{"scope":"client","id":"d1"},"payload":{"type":"echo","data":{"to":"a","to":"b"}}}"#.into(),
            error(Some("d1"), "invalid_message", "duplicate key \"to\""),
        ),
        // The id itself cannot be read: not a string, repeated, or not JSON at all.
        (
            r#"{"header":{"scope":"client","id":7},"payload":{"type":"echo"}}"#.into(),
            error(
                None,
                "invalid_message",
                "header.id: invalid type: integer, expected a string",
            ),
        ),
        (
            r#"{"header":{"scope":"client","id":"a","id":"b"},"payload":{"type":"echo"}}"#.into(),
            error(None, "invalid_message", "duplicate key \"id\""),
        ),
        (
            r#"{"header":{"scope":"client","id":"x"#.into(),
            error(
                None,
                "invalid_json",
                "EOF while parsing a string at line 1 column 35",
            ),
        ),
    ];
    for (body, want) in cases {
        c.send_body(body.as_bytes()).unwrap();
        assert_eq!(recv(&mut c), want, "for {body}");
    }
    // Still open and served.
    let reply = c.request("ok", "echo", &json!(1)).unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"ok","type":"echo"},"data":1})
    );

    // Before login: the error carries the id too, then the connection closes.
    let mut first = broker.connect();
    first
        .send_body(br#"{"header":{"scope":"client","id":"f1"},"payload":{"type":"a b"}}"#)
        .unwrap();
    assert_eq!(
        recv(&mut first),
        error(Some("f1"), "invalid_message", &type_text("a b"))
    );
    assert!(closed(&mut first));
    let mut first = broker.connect();
    first.message("f2", "echo", &json!(1)).unwrap();
    assert_eq!(
        recv(&mut first),
        error(Some("f2"), "not_identified", "identify first")
    );
    assert!(closed(&mut first));
}

#[test]
fn a_malformed_handler_answer_naming_its_request_fails_it_at_once() {
    // The request timeout (60 s) is longer than the test's read deadline: only an immediate
    // answer passes.
    let tables = format!(
        "[handlers.faulty]\n{}\n",
        handler("python3", "tests/handlers/faulty.py")
    );
    let broker = Broker::start_with("request_timeout_ms = 60000", &tables, USERS);
    let mut c = broker.login("alice", "alice-pw");
    let reply = c
        .request("m1", "faulty", &json!({"action":"malformed"}))
        .unwrap();
    assert_eq!(
        reply,
        error(
            Some("m1"),
            "bad_handler_reply",
            "the \"faulty\" handler sent a malformed answer: header.status: invalid value: string, expected \"ok\", \"error\" or a numeric status (\"0\" is success)"
        )
    );
    let reply = c
        .request("m2", "faulty", &json!({"action":"echo","n":2}))
        .unwrap();
    assert_eq!(reply["data"], json!({"action":"echo","n":2}));
}

#[test]
fn original_spec_clients_send_credentials_on_every_message() {
    let tables = format!(
        "[handlers.echo]\n{}\n",
        handler("python3", "handlers/python/echo.py")
    );
    let broker = Broker::start_with("login_failures_per_user = 3", &tables, USERS);

    // First frame, no identify: logs in, then is handled as the message it is.
    let mut c = broker.connect();
    c.send(&with_auth("1", "alice", "alice-pw", "echo", json!("hi")))
        .unwrap();
    let reply = recv(&mut c);
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"1","type":"echo"},"data":"hi"})
    );
    // The original reply shape is a subset: header.status and data.
    assert_eq!(reply["header"]["status"], "ok");
    assert_eq!(reply["data"], "hi");
    // Later messages: with the session's credentials, or without any.
    c.send(&with_auth("2", "alice", "alice-pw", "echo", json!(2)))
        .unwrap();
    assert_eq!(recv(&mut c)["header"]["id"], "2");
    let reply = c.request("3", "bester.whoami", &json!(null)).unwrap();
    assert_eq!(reply["data"]["user"], "alice");

    // A wrong password or another user's (correct) credentials: auth_failed, the connection stays.
    let mismatch = "header.authentication does not match this connection's login";
    c.send(&with_auth("4", "alice", "wrong", "echo", json!(4)))
        .unwrap();
    assert_eq!(recv(&mut c), error(Some("4"), "auth_failed", mismatch));
    c.send(&with_auth("5", "bob", "bob-pw", "echo", json!(5)))
        .unwrap();
    assert_eq!(recv(&mut c), error(Some("5"), "auth_failed", mismatch));
    c.send(&with_auth("6", "alice", "alice-pw", "echo", json!(6)))
        .unwrap();
    assert_eq!(recv(&mut c)["data"], 6);

    // Mismatches count against the login limit (3 per user and address per minute here), all
    // of them against the session's own user (alice), bob's credentials ("5") included.
    c.send(&with_auth("7", "alice", "wrong", "echo", json!(7)))
        .unwrap();
    assert_eq!(recv(&mut c), error(Some("7"), "auth_failed", mismatch));
    c.send(&with_auth("9", "alice", "wrong", "echo", json!(9)))
        .unwrap();
    let limited = "too many failed logins for this user or from this address; try again later";
    assert_eq!(recv(&mut c), error(Some("9"), "rate_limited", limited));
    let (mut other, reply) = Client::login(broker.addr, "alice", "alice-pw").unwrap();
    assert_eq!(reply, error(None, "rate_limited", limited));
    assert!(closed(&mut other));
    // The session itself still works.
    c.send(&with_auth("10", "alice", "alice-pw", "echo", json!(10)))
        .unwrap();
    assert_eq!(recv(&mut c)["data"], 10);

    // A first frame with a wrong password: auth_failed with its id, then closed.
    let mut bad = broker.connect();
    bad.send(&with_auth("b1", "bob", "nope", "echo", json!(1)))
        .unwrap();
    assert_eq!(
        recv(&mut bad),
        error(Some("b1"), "auth_failed", "invalid username or password")
    );
    assert!(closed(&mut bad));

    // A session that identified is checked against the password it identified with.
    let mut bob = broker.login("bob", "bob-pw");
    bob.send(&with_auth("c1", "bob", "bob-pw", "echo", json!("x")))
        .unwrap();
    assert_eq!(recv(&mut bob)["data"], "x");
}

fn order_tables() -> String {
    format!(
        "[handlers.old]\n{}\nprocesses = 2\ncorrelate = \"order\"\n",
        handler("node", "tests/handlers/order.js")
    )
}

#[test]
fn handlers_correlated_by_order_answer_without_tokens_one_request_at_a_time() {
    let broker = Broker::start_with("", &order_tables(), USERS);
    let mut alice = broker.login("alice", "alice-pw");
    let mut bob = broker.login("bob", "bob-pw");
    eventually("both order.js processes connected", || {
        let who = alice.request("w", "bester.whoami", &json!(null)).unwrap();
        (who["data"]["handlers"]["old"] == 2).then_some(())
    });

    // Twelve pipelined requests: each answered once, with its own data; both processes serve.
    for i in 0..12 {
        alice
            .message(
                &i.to_string(),
                "old",
                &json!({"action":"delay","ms":20,"n":i}),
            )
            .unwrap();
    }
    let mut pids = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        let reply = recv(&mut alice);
        assert_eq!(reply["header"]["status"], "ok", "{reply}");
        let id: u64 = reply["header"]["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(reply["data"]["got"]["n"], id, "{reply}");
        assert!(seen.insert(id), "answered twice: {reply}");
        pids.insert(reply["data"]["pid"].as_u64().unwrap());
    }
    assert_eq!(pids.len(), 2, "the two processes share the load");
    assert!(
        !broker.log().contains("OVERLAP"),
        "a process got a second request while one was in flight:\n{}",
        broker.log()
    );

    // A numeric status other than "0": handler_error with that status.
    let reply = alice
        .request("s", "old", &json!({"action":"status","status":"3"}))
        .unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"error","kind":"reply","id":"s"},"data":{"error":"the \"old\" handler answered with status \"3\"","code":"handler_error","status":"3"}})
    );
    // The command object form: {"type":"sendClients","data":[..]}.
    let reply = alice
        .request("p", "old", &json!({"action":"send","users":["bob"]}))
        .unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"p","type":"old","delivered":["bob"],"offline":[]},"data":null})
    );
    assert_eq!(
        recv(&mut bob),
        json!({"header":{"status":"ok","kind":"push","type":"old","from":{"user":"alice","server":"test"}},"data":{"action":"send","users":["bob"]}})
    );
    // A malformed answer fails the connection's one request at once; the next one is served.
    let reply = alice
        .request("m", "old", &json!({"action":"malformed"}))
        .unwrap();
    assert_eq!(reply["data"]["code"], "bad_handler_reply", "{reply}");
    assert_eq!(
        reply["data"]["error"],
        "the \"old\" handler sent a malformed answer: header.status: invalid value: string, expected \"ok\", \"error\" or a numeric status (\"0\" is success)"
    );
    let reply = alice
        .request("e", "old", &json!({"action":"echo"}))
        .unwrap();
    assert_eq!(reply["data"]["got"], json!({"action":"echo"}));
}

/// A listen.pl started by the test itself (a handler besterd does not start).
struct External(Child);

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn handlers_besterd_dials_get_one_connection_per_request() {
    let sockets = tempfile::tempdir().unwrap();
    let started = sockets.path().join("started.sock");
    let external = sockets.path().join("external.sock");
    let missing = sockets.path().join("missing.sock");
    let ext = External(
        Command::new("perl")
            .arg(repo().join("tests/handlers/listen.pl"))
            .env("BESTER_SOCKET", &external)
            .stdin(Stdio::null())
            .spawn()
            .expect("perl"),
    );
    eventually("the external handler's socket", || {
        external.exists().then_some(())
    });
    let tables = format!(
        "[handlers.dial]\n{}\nconnect = {:?}\ncorrelate = \"connection\"\nmax_inflight = 2\n\
         [handlers.ext]\nconnect = {:?}\n[handlers.gone]\nconnect = {:?}\n",
        handler("perl", "tests/handlers/listen.pl"),
        started.display().to_string(),
        external.display().to_string(),
        missing.display().to_string(),
    );
    let broker = Broker::start_with("", &tables, USERS);
    let mut c = broker.login("alice", "alice-pw");

    // Pipelined: every request gets its own connection (listen.pl counts them), two at a time.
    for i in 0..6 {
        c.message(&i.to_string(), "dial", &json!({"n": i})).unwrap();
    }
    let mut connections = BTreeSet::new();
    for _ in 0..6 {
        let reply = recv(&mut c);
        assert_eq!(reply["header"]["status"], "ok", "{reply}");
        let id: u64 = reply["header"]["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(reply["data"]["got"], json!({"n": id}), "{reply}");
        connections.insert(reply["data"]["connection"].as_u64().unwrap());
    }
    assert_eq!(connections.len(), 6, "one connection per request");

    // Closed before answering: handler_unavailable.
    let reply = c.request("eof", "dial", &json!({"action":"eof"})).unwrap();
    assert_eq!(
        reply,
        error(
            Some("eof"),
            "handler_unavailable",
            "the \"dial\" handler went away before answering"
        )
    );
    // Started by something else.
    let reply = c.request("x", "ext", &json!("hello")).unwrap();
    assert_eq!(reply["header"]["type"], "ext");
    assert_eq!(reply["data"]["got"], "hello");
    assert_eq!(reply["data"]["pid"], ext.0.id());
    // Nothing listening: handler_unavailable, saying why.
    let reply = c.request("g", "gone", &json!(1)).unwrap();
    assert_eq!(
        reply,
        error(
            Some("g"),
            "handler_unavailable",
            &format!(
                "the \"gone\" handler could not be reached: cannot connect to {}: no socket there",
                missing.display()
            )
        )
    );
    // The broker keeps serving the dialled type after all that.
    let reply = c.request("last", "dial", &json!("again")).unwrap();
    assert_eq!(reply["data"]["got"], "again");
}

#[test]
fn the_idle_timeout_spares_connections_with_requests_in_flight() {
    let tables = format!(
        "[handlers.old]\n{}\ncorrelate = \"order\"\n",
        handler("node", "tests/handlers/order.js")
    );
    let broker = Broker::start_with("idle_timeout_ms = 300", &tables, USERS);
    let mut c = broker.login("alice", "alice-pw");
    // The answer comes long after the idle timeout: the connection must still be open for it.
    let reply = c
        .request("slow", "old", &json!({"action":"delay","ms":1500}))
        .unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    assert_eq!(reply["data"]["got"]["ms"], 1500);
    // Quiet with nothing in flight: closed as before.
    let idle = recv(&mut c);
    assert_eq!(code(&idle), "idle_timeout", "{idle}");
    assert!(closed(&mut c));
}

#[test]
fn check_config_warns_when_the_idle_timeout_is_shorter_than_the_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("besterd.toml");
    std::fs::write(
        &path,
        "[server]\nidle_timeout_ms = 1000\nrequest_timeout_ms = 5000\n",
    )
    .unwrap();
    let out = besterd_cmd(&["check-config", "--config", path.to_str().unwrap()], None);
    assert!(out.status.success(), "a warning is not an error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: warning: server.idle_timeout_ms: 1000 ms is shorter than server.request_timeout_ms (5000 ms)",
            path.display()
        )),
        "{stderr}"
    );
    std::fs::write(
        &path,
        "[server]\nidle_timeout_ms = 5000\nrequest_timeout_ms = 5000\n",
    )
    .unwrap();
    let out = besterd_cmd(&["check-config", "--config", path.to_str().unwrap()], None);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    // Handler options: a bad correlate, and connection without connect, name their key.
    std::fs::write(
        &path,
        "[handlers.a]\ncommand = [\"x\"]\ncorrelate = \"fifo\"\n[handlers.b]\ncommand = [\"x\"]\ncorrelate = \"connection\"\n",
    )
    .unwrap();
    let out = besterd_cmd(&["check-config", "--config", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "handlers.a.correlate: \"fifo\" is not one of \"request\", \"order\", \"connection\""
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "handlers.b.correlate: \"connection\" needs connect = \"/path/to/handler.sock\""
        ),
        "{stderr}"
    );
}

/// Read one frame from a dialled connection (blocking, with the test deadline).
fn read_frame(stream: &mut std::os::unix::net::UnixStream) -> Value {
    use std::io::Read;
    stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).unwrap();
    let mut body = vec![0u8; u32::from_le_bytes(head) as usize];
    stream.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Accept every connection already waiting on a non-blocking listener.
fn accept_waiting(
    listener: &std::os::unix::net::UnixListener,
) -> Vec<std::os::unix::net::UnixStream> {
    let mut accepted = Vec::new();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                accepted.push(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return accepted,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[test]
fn at_most_max_inflight_dialled_connections_are_open_at_once() {
    use std::io::Write;
    // The test itself is the handler: it listens, and answers only when it chooses to.
    let sockets = tempfile::tempdir().unwrap();
    let path = sockets.path().join("bounded.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let tables = format!(
        "[handlers.bounded]\nconnect = {:?}\nmax_inflight = 2\n",
        path.display().to_string()
    );
    let broker = Broker::start_with("", &tables, USERS);
    let mut c = broker.login("alice", "alice-pw");
    for i in 0..5 {
        c.message(&i.to_string(), "bounded", &json!(i)).unwrap();
    }
    // Frames are handled in order: once the ping is answered, all five were dialled or queued.
    let pong = c.request("ping", "bester.ping", &Value::Null).unwrap();
    assert_eq!(pong["data"], "pong");
    let mut open = accept_waiting(&listener);
    assert_eq!(open.len(), 2, "two connections at most (max_inflight = 2)");
    let mut answered = 0;
    while let Some(mut stream) = open.pop() {
        let request = read_frame(&mut stream);
        assert_eq!(request["header"]["kind"], "request");
        let body = serde_json::to_vec(&json!({"header":{"status":"0"},
            "payload":{"type":"bounded","data":request["payload"]["data"]}}))
        .unwrap();
        stream
            .write_all(&[&(body.len() as u32).to_le_bytes()[..], &body].concat())
            .unwrap();
        answered += 1;
        // The broker closes the answered connection; only then may the next one come.
        let mut byte = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut stream, &mut byte).unwrap(), 0);
        drop(stream);
        if answered + open.len() < 5 {
            let more = eventually("the next dialled connection", || {
                let more = accept_waiting(&listener);
                (!more.is_empty()).then_some(more)
            });
            open.extend(more);
        }
        assert!(open.len() <= 2, "{} connections open at once", open.len());
    }
    assert_eq!(answered, 5);
    let mut ids = BTreeSet::new();
    for _ in 0..5 {
        let reply = recv(&mut c);
        assert_eq!(reply["header"]["status"], "ok", "{reply}");
        let id = reply["header"]["id"].as_str().unwrap().to_string();
        assert_eq!(reply["data"].to_string(), id, "{reply}");
        ids.insert(id);
    }
    assert_eq!(ids.len(), 5);
}

#[test]
fn a_dialled_handler_with_a_full_listen_queue_is_dialled_again_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("narrow.sock");
    let tables = format!(
        "[handlers.narrow]\n{}\nconnect = {:?}\ncorrelate = \"connection\"\nmax_inflight = 32\n\
         env = {{ LISTEN_BACKLOG = \"1\", ACCEPT_DELAY_MS = \"5\" }}\n",
        handler("perl", "tests/handlers/listen.pl"),
        socket.display().to_string(),
    );
    let broker = Broker::start_with("", &tables, USERS);
    let mut c = broker.login("alice", "alice-pw");
    // 40 at once against a listen queue of 1 and a slow accept loop: every one is answered.
    for i in 0..40 {
        c.message(&i.to_string(), "narrow", &json!({ "n": i }))
            .unwrap();
    }
    for _ in 0..40 {
        let reply = recv(&mut c);
        assert_eq!(reply["header"]["status"], "ok", "{reply}");
        let id: u64 = reply["header"]["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(reply["data"]["got"], json!({ "n": id }));
    }
    assert!(
        broker.log().contains("busy (cannot connect to"),
        "the queue did fill"
    );
}
