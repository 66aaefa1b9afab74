//! Logins an auth handler decides (`[auth] handler`), against the real daemon with real handler
//! processes: the API-key example (handlers/python/auth_keys.py) logs a client in and its `info`
//! reaches another handler as `header.from.info`; its refusal reaches the client as it is; a
//! resume token of such a session logs in again without the handler; `handle = "all"` sends
//! passwords to it; and a handler that hangs, crashes, answers garbage, is busy or is not running
//! gets each its exact error, while the rate limits and the log hold.

mod common;

use std::path::PathBuf;

use besterd::client::Client;
use common::{Broker, DEADLINE, code, handler};
use serde_json::{Value, json};

/// A key file for auth_keys.py.
struct KeyFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl KeyFile {
    fn new(text: &str) -> KeyFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-keys");
        std::fs::write(&path, text).unwrap();
        KeyFile { _dir: dir, path }
    }
}

const KEYS: &str = "k-alice-0123 alice {\"plan\":\"pro\"}\nk-dave-4567 dave\n";

/// A broker whose auth handler is the API-key example, with `[auth]` keys `auth` and
/// `[server]` keys `server`.
fn keys_broker(keys: &KeyFile, server: &str, auth: &str) -> Broker {
    let tables = format!(
        "[handlers.keys]\ncommand = [\"python3\", {:?}, {:?}]\n[handlers.faulty]\n{}\n[auth]\nhandler = \"keys\"\n{auth}\n",
        common::repo()
            .join("handlers/python/auth_keys.py")
            .display()
            .to_string(),
        keys.path.display().to_string(),
        handler("python3", "tests/handlers/faulty.py"),
    );
    Broker::start_with(server, &tables, &[("alice", "alice-pw"), ("bob", "bob-pw")])
}

/// A broker whose auth handler is the misbehaving test handler.
fn faulty_broker(auth: &str) -> Broker {
    let tables = format!(
        "[handlers.faulty]\n{}\n[auth]\nhandler = \"faulty\"\n{auth}\n",
        handler("python3", "tests/handlers/faulty.py"),
    );
    Broker::start_with("", &tables, &[("alice", "alice-pw")])
}

/// Identify with this `authentication` on a fresh connection: the client and the reply.
fn identify(b: &Broker, authentication: Value) -> (Client, Value) {
    let mut client = b.connect();
    client.set_timeout(Some(DEADLINE)).unwrap();
    client
        .send(&json!({"header":{"identify":{"type":"client","authentication":authentication}}}))
        .unwrap();
    let reply = client.recv().unwrap().expect("an identify reply");
    (client, reply)
}

/// The refusal a login gets, checking the connection is closed after it: (code, text).
fn refused(b: &Broker, authentication: Value) -> (String, String) {
    let (mut client, reply) = identify(b, authentication);
    assert_eq!(reply["header"]["status"], "error", "{reply}");
    assert_eq!(reply["header"].get("id"), None, "{reply}");
    assert_eq!(client.recv().unwrap(), None, "closed after the refusal");
    (
        code(&reply).to_string(),
        reply["data"]["error"].as_str().unwrap().to_string(),
    )
}

/// `header.from` of a request this session makes.
fn from_seen(client: &mut Client) -> Value {
    let reply = client
        .request("h", "faulty", &json!({"action":"header"}))
        .unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    reply["data"]["header"]["from"].clone()
}

fn s(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[test]
fn an_api_key_logs_in_through_the_example_and_its_info_reaches_handlers() {
    let keys = KeyFile::new(KEYS);
    let b = keys_broker(&keys, "", "");
    let (mut alice, reply) = identify(&b, json!({"apiKey": "k-alice-0123"}));
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    assert_eq!(reply["data"]["user"], "alice");
    assert_eq!(reply["data"]["server"], "test");
    let resume = reply["data"]["resume"].as_str().unwrap().to_string();
    assert!(resume.starts_with("v1."), "{reply}");
    let info = json!({"plan": "pro", "via": "api-key"});
    assert_eq!(
        from_seen(&mut alice),
        json!({"user": "alice", "server": "test", "info": info})
    );
    // A user the store does not hold is the handler's to name.
    let (mut dave, reply) = identify(&b, json!({"apiKey": "k-dave-4567"}));
    assert_eq!(reply["data"]["user"], "dave", "{reply}");
    assert_eq!(from_seen(&mut dave)["info"], json!({"via": "api-key"}));
    // Passwords are still besterd's (handle = "others"), with no info.
    let mut bob = b.login("bob", "bob-pw");
    assert_eq!(
        from_seen(&mut bob),
        json!({"user": "bob", "server": "test"})
    );
    // The handler's refusal, as it gave it.
    assert_eq!(
        refused(&b, json!({"apiKey": "k-wrong-9999"})),
        s("auth_failed", "invalid API key")
    );
    assert_eq!(
        refused(&b, json!({"key": "k-alice-0123"})),
        s("auth_failed", "log in with {\"apiKey\":\"<key>\"}")
    );
    // The resume token logs in again with the same info, without the handler: revoke the key
    // first, so only the resume token can let her in.
    std::fs::write(&keys.path, "k-dave-4567 dave\n").unwrap();
    assert_eq!(
        refused(&b, json!({"apiKey": "k-alice-0123"})),
        s("auth_failed", "invalid API key")
    );
    let (mut again, reply) = identify(&b, json!({ "resume": resume }));
    assert_eq!(reply["data"]["user"], "alice", "{reply}");
    assert_eq!(from_seen(&mut again)["info"], info);
    // Nothing of what the clients sent is in the log.
    let log = b.log();
    for secret in ["k-alice-0123", "k-dave-4567", "k-wrong-9999", "bob-pw"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    assert!(log.contains("refused by the auth handler"), "{log}");
}

#[test]
fn without_an_auth_handler_other_shapes_are_refused_as_before() {
    let b = Broker::start("");
    assert_eq!(
        refused(&b, json!({"apiKey": "k-1"})),
        s(
            "invalid_message",
            "header.identify.authentication: unknown field `apiKey`, expected one of `username`, `password`, `publicKey`, `token`, `resume`"
        )
    );
    assert!(!b.log().contains("k-1\""));
}

#[test]
fn handle_all_sends_passwords_and_jwts_to_the_handler_but_not_resume_tokens() {
    let keys = KeyFile::new(KEYS);
    let b = keys_broker(&keys, "", "handle = \"all\"");
    // alice/alice-pw is right by the store, but the handler decides, and wants an API key.
    assert_eq!(
        refused(&b, json!({"username": "alice", "password": "alice-pw"})),
        s("auth_failed", "log in with {\"apiKey\":\"<key>\"}")
    );
    assert_eq!(
        refused(&b, json!({"token": "a.b.c"})),
        s("auth_failed", "log in with {\"apiKey\":\"<key>\"}")
    );
    let (_, reply) = identify(&b, json!({"apiKey": "k-alice-0123"}));
    let resume = reply["data"]["resume"].as_str().unwrap().to_string();
    let (_, reply) = identify(&b, json!({ "resume": resume }));
    assert_eq!(reply["data"]["user"], "alice", "{reply}");
    let log = b.log();
    assert!(!log.contains("alice-pw"), "the password is not logged");
}

#[test]
fn a_handler_that_hangs_crashes_or_answers_garbage_gets_each_its_error() {
    let b = faulty_broker("auth_timeout_ms = 500\nmax_inflight = 1");
    // One login hangs: a second one is over max_inflight; the first times out.
    let mut hung = b.connect();
    hung.set_timeout(Some(DEADLINE)).unwrap();
    hung.send(&json!({"header":{"identify":{"type":"client","authentication":{"action":"hang"}}}}))
        .unwrap();
    let busy = common::eventually("the second login refused busy", || {
        let (c, t) = refused(&b, json!({"action": "echo"}));
        (c == "handler_busy").then_some(t)
    });
    assert_eq!(busy, "the \"faulty\" auth handler has 1 logins in flight");
    let reply = hung.recv().unwrap().unwrap();
    assert_eq!(
        (code(&reply), reply["data"]["error"].as_str().unwrap()),
        (
            "handler_timeout",
            "the \"faulty\" handler did not answer within 500 ms"
        )
    );
    assert_eq!(hung.recv().unwrap(), None, "closed after the timeout");
    // An answer that is not {"user","info"}.
    assert_eq!(
        refused(&b, json!({"action": "echo", "user": "alice"})),
        s(
            "bad_handler_reply",
            "the \"faulty\" auth handler sent a malformed answer: its answer is not {\"user\":…,\"info\":{…}}: unknown field `action`, expected `user` or `info`"
        )
    );
    assert_eq!(
        refused(&b, json!({"action": "send_to", "users": ["alice"]})),
        s(
            "bad_handler_reply",
            "the \"faulty\" auth handler answered a login with a command other than \"reply\""
        )
    );
    // A frame that is not JSON answers nothing: the login times out.
    assert_eq!(
        refused(&b, json!({"action": "garbage"})).0,
        "handler_timeout"
    );
    // The handler crashing with the login in flight.
    assert_eq!(
        refused(&b, json!({"action": "crash"})),
        s(
            "handler_unavailable",
            "the \"faulty\" handler went away before answering"
        )
    );
    // Restarted, it serves again; the daemon kept serving throughout.
    common::eventually("the restarted handler", || {
        let (c, _) = refused(&b, json!({"action": "echo", "user": "alice"}));
        (c == "bad_handler_reply").then_some(())
    });
    let mut ok = b.login("alice", "alice-pw");
    assert_eq!(from_seen(&mut ok)["user"], "alice");
}

#[test]
fn a_handler_that_is_not_running_refuses_logins() {
    let tables = format!(
        "[handlers.down]\n{}\nenv = {{ BESTER_FAULTY_MODE = \"refuse\" }}\n[auth]\nhandler = \"down\"\n",
        handler("python3", "tests/handlers/faulty.py"),
    );
    let b = Broker::start_with(
        "handler_startup_timeout_ms = 200",
        &tables,
        &[("alice", "alice-pw")],
    );
    assert_eq!(
        refused(&b, json!({"apiKey": "k"})),
        s("handler_not_running", "the \"down\" handler is not running")
    );
    // Password logins do not need it.
    b.login("alice", "alice-pw");
}

#[test]
fn refusals_by_the_handler_count_against_the_login_rate_limit() {
    let keys = KeyFile::new(KEYS);
    let b = keys_broker(&keys, "login_failures_per_ip = 3", "");
    for _ in 0..3 {
        assert_eq!(refused(&b, json!({"apiKey": "k-guess"})).0, "auth_failed");
    }
    assert_eq!(
        refused(&b, json!({"apiKey": "k-alice-0123"})),
        s(
            "rate_limited",
            "too many failed logins for this user or from this address; try again later"
        )
    );
}
