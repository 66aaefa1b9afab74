//! Secrets never reach the log or an error text: credentials sent in the wrong shape (whose
//! values serde would quote), passwords travelling in WebSocket frames at the most verbose log
//! level, and peer secrets on a configuration line with a syntax error.

mod common;

use besterd::client::{Client, Uri};
use common::*;
use serde_json::{Value, json};

fn launch(log: &str, tables: &str) -> Broker {
    Broker::launch_with(
        "test",
        "127.0.0.1:0",
        "",
        &format!("{}{tables}", standard_handlers()),
        &[("alice", "alice-pw-4xq"), ("bob", "bob-pw")],
        &Launch {
            env: vec![("RUST_LOG".into(), log.into())],
            ..Launch::default()
        },
    )
}

/// Send one frame on a fresh connection and take the answer.
fn first_frame(broker: &Broker, frame: &Value) -> Value {
    let mut client = broker.connect();
    client.send(frame).unwrap();
    client.recv().unwrap().expect("an answer")
}

fn assert_not_in_log(broker: &Broker, secrets: &[&str]) {
    let log = broker.log();
    for secret in secrets {
        assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
    }
}

#[test]
fn credentials_of_the_wrong_shape_are_not_quoted_in_replies_or_the_log() {
    let broker = launch("debug", "");
    let reply = first_frame(
        &broker,
        &json!({"header":{"identify":{"type":"client","authentication":"alice:s3cret-as-a-string"}}}),
    );
    assert_eq!(code(&reply), "invalid_message");
    assert_eq!(
        reply["data"]["error"],
        "header.identify.authentication: invalid type: string, expected an object"
    );
    // The original spec's form: credentials on the first message.
    let reply = first_frame(
        &broker,
        &json!({"header":{"scope":"client","id":"1","authentication":"alice:compat-s3cret"},
                "payload":{"type":"echo","data":{}}}),
    );
    assert_eq!(reply["header"]["id"], "1");
    assert_eq!(
        reply["data"]["error"],
        "header.authentication: invalid type: string, expected an object"
    );
    let reply = first_frame(
        &broker,
        &json!({"header":{"identify":{"type":"client","authentication":{"username":"alice","password":["pw-in-a-list"]}}}}),
    );
    assert_eq!(
        reply["data"]["error"],
        "header.identify.authentication.password: invalid type: sequence, expected a string"
    );
    let reply = first_frame(
        &broker,
        &json!({"header":{"identify":{"type":"client","authentication":{"username":"alice","password":"s3cret","x":"s3cret-2"}}}}),
    );
    assert_eq!(code(&reply), "invalid_message");
    assert_eq!(
        reply["data"]["error"],
        "header.identify.authentication: unknown field `x`, expected one of `username`, `password`, `publicKey`, `token`, `resume`"
    );
    assert!(
        !reply["data"]["error"].as_str().unwrap().contains("s3cret"),
        "{reply}"
    );
    // A logged-in user changing their password with data of the wrong shape.
    let mut alice = broker.login("alice", "alice-pw-4xq");
    let reply = alice
        .request("p", "bester.passwd", &json!("new-pw-as-a-string"))
        .unwrap();
    assert_eq!(
        reply["data"]["error"],
        "bad data for \"bester.passwd\": invalid type: string, expected an object"
    );
    assert_eq!(alice.request("e", "echo", &json!(1)).unwrap()["data"], 1);
    assert_not_in_log(
        &broker,
        &[
            "s3cret-as-a-string",
            "compat-s3cret",
            "pw-in-a-list",
            "s3cret-type",
            "new-pw-as-a-string",
            "alice-pw-4xq",
        ],
    );
}

/// At `RUST_LOG=trace` the WebSocket library would log every message it reads, the identify
/// with its password among them.
#[test]
fn the_most_verbose_log_level_holds_no_websocket_message() {
    let broker = launch(
        "trace",
        "[[listeners]]\nname = \"ws\"\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\n",
    );
    let uri = Uri::parse(&format!("bester+ws://alice@{}", broker.listener("ws"))).unwrap();
    let deadline = Some(std::time::Instant::now() + DEADLINE);
    let mut client = Client::connect_uri(&uri, None, deadline).unwrap();
    client
        .send(&json!({"header":{"identify":{"type":"client","authentication":{"username":"alice","password":"alice-pw-4xq"}}}}))
        .unwrap();
    let reply = client.recv().unwrap().unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    let reply = client
        .request("1", "echo", &json!({"note":"trace-payload-9z"}))
        .unwrap();
    assert_eq!(reply["data"]["note"], "trace-payload-9z");
    // The daemon did log at trace level (its dependencies' handshake lines), just not contents.
    eventually("a trace line in the log", || {
        broker.log().contains("TRACE").then_some(())
    });
    assert_not_in_log(&broker, &["alice-pw-4xq", "trace-payload-9z"]);
}

#[test]
fn a_configuration_error_on_a_secret_line_does_not_print_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "[server]\nname = \"a\"\n[peers.b]\naddress = \"127.0.0.1:1\"\nsecret = \"supersecretvalue123\" junk\n",
            "  (syntax): line 5, column 32: unexpected key or value, expected newline, `#`\n    5 | secret = <redacted>\n",
        ),
        (
            "[server]\nname = \"a\"\n[peers.b]\naddress = \"127.0.0.1:1\"\nsecret = [\"supersecretvalue123\"]\n",
            "  (syntax): line 5, column 10: invalid type: sequence, expected a string\n    5 | secret = <redacted>\n",
        ),
    ] {
        let path = dir.path().join("besterd.toml");
        std::fs::write(&path, text).unwrap();
        let out = besterd_cmd(&["check-config", "--config", path.to_str().unwrap()], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{stderr}");
        assert!(!stderr.contains("supersecret"), "{stderr}");
        assert_eq!(
            stderr,
            format!("invalid configuration {}:\n{want}", path.display())
        );
    }
}
