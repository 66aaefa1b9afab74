//! The Rust library (`clients/rust`, crate `bester-client`) against the real daemon: a session
//! logs in by password, resume token and ed25519 key, gets replies and typed refusals, comes back
//! after a restart with its resume token, follows a greeter's redirect with the token only; a
//! handler written with the library serves requests concurrently, pushes, decides logins as an
//! auth handler, and returns when the daemon closes its socket. Its codes and signed login bytes
//! are the daemon's.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bester_client::handler::{Answer, Request, serve_on};
use bester_client::{Error, Login, Options, Session, codes};
use common::{Broker, DEADLINE, eventually, handler};
use serde_json::{Value, json};

fn password(user: &str, password: &str) -> Login {
    Login::Password {
        user: user.into(),
        password: password.into(),
    }
}

fn url(b: &Broker) -> String {
    format!("bester://{}", b.addr)
}

fn refused(e: Error) -> (String, String) {
    match e {
        Error::Refused { code, text } => (code, text),
        other => panic!("not a refusal: {other:?}"),
    }
}

fn token_key(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("token.key");
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut random)
        .unwrap();
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key, hex).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    key
}

#[test]
fn the_librarys_codes_and_signed_bytes_are_the_daemons() {
    let daemon: Vec<&str> = besterd::protocol::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(codes::ALL, daemon.as_slice());
    assert_eq!(
        bester_client::login::login_message("besterd", "alice", "n-1"),
        besterd::auth::keys::login_message("besterd", "alice", "n-1")
    );
}

#[test]
fn a_session_logs_in_requests_and_gets_typed_refusals() {
    let b = Broker::start("");
    let mut s =
        Session::connect(&url(&b), password("alice", "alice-pw"), Options::default()).unwrap();
    assert_eq!(s.identity().user, "alice");
    assert_eq!(s.identity().server, "test");
    let resume = s.identity().resume.clone().expect("a resume token");
    let reply = s
        .request("faulty", &json!({"action": "echo", "n": 1}))
        .unwrap();
    assert_eq!(reply, json!({"action": "echo", "n": 1}));
    assert_eq!(
        refused(s.request("nobody", &Value::Null).unwrap_err()),
        (
            codes::UNKNOWN_TYPE.to_string(),
            "no handler for type \"nobody\"".to_string()
        )
    );
    assert_eq!(
        refused(s.request("faulty", &json!({"action": "?"})).unwrap_err()).0,
        "bad_request"
    );
    // A refused login is typed too.
    let e = Session::connect(&url(&b), password("alice", "wrong"), Options::default()).unwrap_err();
    assert_eq!(
        refused(e),
        (
            codes::AUTH_FAILED.to_string(),
            "invalid username or password".to_string()
        )
    );
    // The resume token logs in without the password.
    let mut again = Session::connect(&url(&b), Login::Resume(resume), Options::default()).unwrap();
    assert_eq!(again.identity().user, "alice");
    assert_eq!(again.request("bester.ping", &Value::Null).unwrap(), "pong");
}

#[test]
fn a_session_that_offers_compress_gets_it_and_long_frames_go_compressed_both_ways() {
    let b = Broker::start("");
    let chat = json!({"action": "echo", "lines": (0..40)
        .map(|i| json!({"from": format!("user{i}"), "text": format!("line {i}: the quick brown fox")}))
        .collect::<Vec<_>>()});
    // Offering nothing: no features, no limits, nothing compressed.
    let mut plain =
        Session::connect(&url(&b), password("alice", "alice-pw"), Options::default()).unwrap();
    assert_eq!(
        (&plain.identity().features, &plain.identity().limits),
        (&Vec::<String>::new(), &Value::Null)
    );
    assert_eq!(plain.request("faulty", &chat).unwrap(), chat);
    assert_eq!(plain.client().compressed_frames(), (0, 0));
    let options = Options {
        compress: true,
        ..Options::default()
    };
    let mut s = Session::connect(&url(&b), password("alice", "alice-pw"), options).unwrap();
    assert_eq!(s.identity().features, ["compress"]);
    assert_eq!(s.identity().limits["max_frame_bytes"], 1048576);
    for _ in 0..3 {
        assert_eq!(s.request("faulty", &chat).unwrap(), chat);
    }
    assert_eq!(s.client().compressed_frames(), (3, 3));
    // Short requests and built-ins stay plain.
    assert_eq!(s.request("bester.ping", &Value::Null).unwrap(), "pong");
    assert_eq!(
        s.request("faulty", &json!({"action": "echo"})).unwrap(),
        json!({"action": "echo"})
    );
    assert_eq!(s.client().compressed_frames(), (3, 3));
}

#[test]
fn a_key_login_signs_the_servers_challenge() {
    let b = Broker::start("");
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("id");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bester"))
        .args(["keygen", key_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = String::from_utf8(out.stdout).unwrap();
    let out = common::besterd_cmd(
        &[
            "user",
            "--users",
            b.users().to_str().unwrap(),
            "add-key",
            "bob",
            &format!("{}.pub", key_path.display()),
        ],
        None,
    );
    assert!(out.status.success(), "{out:?} {public}");
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let key = ed25519_dalek::SigningKey::read_pkcs8_pem_file(&key_path).unwrap();
    let login = |server: Option<&str>| Login::Key {
        user: "bob".into(),
        key: Box::new(key.clone()),
        server: server.map(str::to_string),
    };
    let s = eventually("the store to be read again", || {
        Session::connect(&url(&b), login(None), Options::default()).ok()
    });
    assert_eq!(s.identity().user, "bob");
    match Session::connect(&url(&b), login(Some("elsewhere")), Options::default()) {
        Err(Error::Protocol(text)) => assert_eq!(
            text,
            "the server says it is \"test\", not \"elsewhere\": not signing"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_session_comes_back_after_a_restart_with_its_resume_token() {
    let keys = tempfile::tempdir().unwrap();
    let key = token_key(keys.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tables = format!(
        "[handlers.faulty]\n{}\n[auth]\ntoken_secret_file = {:?}\n",
        handler("python3", "tests/handlers/faulty.py"),
        key.display().to_string()
    );
    let mut b = Broker::launch(
        "test",
        &format!("127.0.0.1:{port}"),
        "",
        &tables,
        &[("alice", "alice-pw")],
    );
    let mut s =
        Session::connect(&url(&b), password("alice", "alice-pw"), Options::default()).unwrap();
    let before = s.request("faulty", &json!({"action": "pid"})).unwrap();
    b.restart();
    let started = Instant::now();
    let after = s.request("faulty", &json!({"action": "pid"})).unwrap();
    assert_ne!(after["pid"], before["pid"], "a new daemon, a new handler");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(s.identity().user, "alice");
    let log = b.log();
    assert!(log.contains("by resume token"), "{log}");
}

#[test]
fn a_session_follows_a_redirect_with_the_token_only() {
    let keys = tempfile::tempdir().unwrap();
    let key = token_key(keys.path());
    let tables = format!(
        "[handlers.greet]\n{}\n[auth]\ntoken_secret_file = {:?}\n",
        handler("python3", "tests/handlers/greeter.py"),
        key.display().to_string()
    );
    let a = Broker::launch(
        "greeter-a",
        "127.0.0.1:0",
        "",
        &tables,
        &[("alice", "alice-pw")],
    );
    let b = Broker::launch("session-b", "127.0.0.1:0", "", &tables, &[]);
    let tmp = b.dir.path().join("users.json.new");
    std::fs::copy(a.users(), &tmp).unwrap();
    std::fs::rename(&tmp, b.users()).unwrap();
    let mut s =
        Session::connect(&url(&a), password("alice", "alice-pw"), Options::default()).unwrap();
    let there = json!({"redirect": {"greeter-a": {"url": url(&b), "token": "mint"}}});
    let reply = eventually("the session broker to take the token", || {
        s.request("greet", &there).ok()
    });
    assert_eq!(reply["server"], "session-b", "{reply}");
    assert_eq!(reply["from"]["user"], "alice");
    assert!(b.log().contains("alice logged in from"), "{}", b.log());
    assert!(b.log().contains("by resume token"), "{}", b.log());
    assert!(!b.log().contains("alice-pw"));
    // A loop is cut after 3 hops.
    let mut s =
        Session::connect(&url(&a), password("alice", "alice-pw"), Options::default()).unwrap();
    let ping_pong = json!({"redirect": {
        "greeter-a": {"url": url(&b), "token": "mint"},
        "session-b": {"url": url(&a), "token": "mint"}}});
    match s.request("greet", &ping_pong) {
        Err(Error::Protocol(text)) => assert_eq!(text, "redirected more than 3 times"),
        other => panic!("{other:?}"),
    }
}

/// A handler written with the library, for `[handlers.rs] socket = …`.
fn answer(request: &Request) -> Answer {
    if request.is_login() {
        return match request.data()["apiKey"].as_str() {
            Some("k-1") => Answer::Login {
                user: "carol".into(),
                info: Some(json!({"via": "rust"})),
            },
            _ => Answer::Error {
                code: "auth_failed".into(),
                text: "no such key".into(),
            },
        };
    }
    let data = request.data();
    match data["action"].as_str() {
        Some("sleep") => {
            std::thread::sleep(Duration::from_millis(300));
            Answer::Reply(json!({"slept": data["n"]}))
        }
        Some("push") => Answer::SendClients(vec!["bob".into()], json!("hi")),
        Some("info") => Answer::Reply(request.info().cloned().unwrap_or(Value::Null)),
        _ => Answer::Reply(json!({"user": request.user(), "data": data})),
    }
}

#[test]
fn a_handler_written_with_the_library_serves_concurrently_and_decides_logins() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("rs.sock");
    let tables = format!(
        "[handlers.rs]\nsocket = {:?}\n[auth]\nhandler = \"rs\"\n",
        socket.display().to_string()
    );
    let mut b = Broker::launch_with(
        "test",
        "127.0.0.1:0",
        "handler_startup_timeout_ms = 200",
        &tables,
        &[("alice", "alice-pw"), ("bob", "bob-pw")],
        &common::Launch {
            wait_ready: true,
            ..common::Launch::default()
        },
    );
    let stream = eventually("the handler socket", || UnixStream::connect(&socket).ok());
    let serving = std::thread::spawn(move || serve_on(stream, 4, answer));
    let mut alice = b.login("alice", "alice-pw");
    alice.set_timeout(Some(DEADLINE)).unwrap();
    let mut bob = b.login("bob", "bob-pw");
    bob.set_timeout(Some(DEADLINE)).unwrap();
    let reply = eventually("the handler to be connected", || {
        let r = alice.request("1", "rs", &json!({"x": 1})).unwrap();
        (r["header"]["status"] == "ok").then_some(r)
    });
    assert_eq!(reply["data"], json!({"user": "alice", "data": {"x": 1}}));
    // Four slow requests at once take about one's time on four workers.
    let started = Instant::now();
    for n in 0..4 {
        alice
            .message(&format!("s{n}"), "rs", &json!({"action": "sleep", "n": n}))
            .unwrap();
    }
    for _ in 0..4 {
        let r = alice.recv().unwrap().unwrap();
        assert_eq!(r["header"]["status"], "ok", "{r}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "served one by one"
    );
    let reply = alice
        .request("p", "rs", &json!({"action": "push"}))
        .unwrap();
    assert_eq!(reply["header"]["delivered"], json!(["bob"]));
    assert_eq!(bob.recv().unwrap().unwrap()["data"], "hi");
    // As the auth handler.
    let mut c = b.connect();
    c.set_timeout(Some(DEADLINE)).unwrap();
    c.send(&json!({"header":{"identify":{"type":"client","authentication":{"apiKey":"k-1"}}}}))
        .unwrap();
    let reply = c.recv().unwrap().unwrap();
    assert_eq!(reply["data"]["user"], "carol", "{reply}");
    let info = c.request("i", "rs", &json!({"action": "info"})).unwrap();
    assert_eq!(info["data"], json!({"via": "rust"}));
    // The daemon closing the socket ends serve_on with Ok.
    assert!(b.stop().success());
    let done = serving.join().unwrap();
    assert!(done.is_ok(), "{done:?}");
}

/// A broker on a fixed port (a restart keeps it) whose type `mail` stores for offline users;
/// `note` does not.
fn mail_broker() -> Broker {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tables = format!(
        "[handlers.mail]\n{}\noffline = \"store\"\n[handlers.note]\n{}\n",
        handler("python3", "tests/handlers/greeter.py"),
        handler("python3", "tests/handlers/greeter.py"),
    );
    Broker::launch(
        "test",
        &format!("127.0.0.1:{port}"),
        "",
        &tables,
        &[("alice", "alice-pw"), ("bob", "bob-pw")],
    )
}

/// alice sends `kind` (`mail` stores) to bob: the reply frame.
fn send_bob(b: &Broker, kind: &str, n: u64) -> Value {
    let mut alice = b.login("alice", "alice-pw");
    alice
        .request("1", kind, &json!({"to": ["bob"], "n": n}))
        .unwrap()
}

/// The three stored pushes, in order, each with its id; their ids.
fn three_stored(s: &mut Session) -> Vec<String> {
    (0..3)
        .map(|n| {
            let p = s.recv_push().unwrap().expect("a push");
            assert_eq!(p["header"]["stored"], true, "{p}");
            assert_eq!(p["data"]["n"], n, "in order: {p}");
            p["header"]["msg"].as_str().expect("msg").to_string()
        })
        .collect()
}

/// Whether bob's queue on the server is empty: a fresh connection (no memory of ids) is sent
/// nothing before the reply to an empty ack, which comes after the backlog read.
fn queue_is_empty(b: &Broker) -> bool {
    let mut fresh = b.login("bob", "bob-pw");
    fresh
        .message("barrier", "bester.ack", &json!({"msgs": []}))
        .unwrap();
    let frame = fresh.recv().unwrap().expect("a frame");
    frame["header"]["id"] == "barrier"
}

/// After a non-storing push sent now comes first, no copy of a stored push was handed over.
fn next_is_the_note(b: &Broker, s: &mut Session) {
    let sent = send_bob(b, "note", 99);
    assert_eq!(sent["header"]["delivered"], json!(["bob"]), "{sent}");
    let p = s.recv_push().unwrap().expect("the note");
    assert_eq!(
        (&p["header"]["type"], &p["data"]["n"]),
        (&json!("note"), &json!(99)),
        "a copy handed over twice: {p}"
    );
}

#[test]
fn stored_pushes_come_once_in_order_and_the_session_acknowledges_them() {
    let b = mail_broker();
    for n in 0..3 {
        assert_eq!(send_bob(&b, "mail", n)["header"]["stored"], json!(["bob"]));
    }
    let mut s = Session::connect(&url(&b), password("bob", "bob-pw"), Options::default()).unwrap();
    let ids = three_stored(&mut s);
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "{ids:?}");
    // The acks owed go out before this request; its reply comes after them.
    assert_eq!(
        s.request("bester.ack", &json!({"msgs": []})).unwrap(),
        json!({"acked": 0})
    );
    next_is_the_note(&b, &mut s); // the ack's reply was read, not handed over
    assert!(queue_is_empty(&b), "acknowledged by the session");
}

#[test]
fn manual_ack_keeps_them_and_a_copy_after_a_reconnect_is_not_handed_over() {
    let mut b = mail_broker();
    for n in 0..3 {
        send_bob(&b, "mail", n);
    }
    let options = Options {
        auto_ack: false,
        ..Options::default()
    };
    let mut s = Session::connect(&url(&b), password("bob", "bob-pw"), options).unwrap();
    let ids = three_stored(&mut s);
    assert!(!queue_is_empty(&b), "nothing acknowledged yet");
    // The connection dies before the application acknowledges: after the reconnection the
    // server sends all three again; the session does not hand them over again.
    b.restart();
    s.request("bester.ack", &json!({"msgs": []})).unwrap();
    assert_eq!(s.reconnects(), 1);
    next_is_the_note(&b, &mut s);
    assert_eq!(s.ack(&ids).unwrap(), 3);
    assert!(queue_is_empty(&b));
}

#[test]
fn copies_of_pushes_whose_ack_was_lost_are_acknowledged_again_not_handed_over() {
    let mut b = mail_broker();
    for n in 0..3 {
        send_bob(&b, "mail", n);
    }
    let mut s = Session::connect(&url(&b), password("bob", "bob-pw"), Options::default()).unwrap();
    three_stored(&mut s);
    // The acks are owed; they leave with the next request, after the server went away.
    b.restart();
    s.request("bester.ack", &json!({"msgs": []})).unwrap();
    assert_eq!(s.reconnects(), 1);
    assert!(!queue_is_empty(&b), "the first acks were lost");
    next_is_the_note(&b, &mut s); // the copies came before it, and were acknowledged again
    s.flush_acks().unwrap();
    s.request("bester.ack", &json!({"msgs": []})).unwrap();
    assert!(queue_is_empty(&b));
}
