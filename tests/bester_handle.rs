//! `bester handle`: any program is a handler, against the real daemon. A jq filter and a bash
//! `while read` loop serve requests (pipelined, in order); a filter that writes garbage, an
//! oversized line, hangs or crashes costs only the request it did it on (each with its exact
//! error), while the requests behind it are answered by the filter started again; `--answers`
//! lets the program push to other users and answer errors; `--per-request` runs one process per
//! request, with the sender in its environment, at most `--max-procs` at once; and `bester handle`
//! exits 0, its filter gone, when the broker closes the socket.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use besterd::client::Client;
use common::{Broker, DEADLINE, code, eventually};
use serde_json::{Value, json};

const BESTER: &str = env!("CARGO_BIN_EXE_bester");

/// `command = […]` running `bester handle KIND FLAGS -- PROGRAM…`.
fn adapter(kind: &str, flags: &[&str], program: &[&str]) -> String {
    let mut command = vec![BESTER.to_string(), "handle".into(), kind.into()];
    command.extend(flags.iter().map(|f| f.to_string()));
    command.push("--".into());
    command.extend(program.iter().map(|p| p.to_string()));
    format!(
        "[handlers.{kind}]\ncommand = {}\n",
        serde_json::to_string(&command).unwrap()
    )
}

fn repo(path: &str) -> String {
    common::repo().join(path).display().to_string()
}

fn broker() -> Broker {
    let tables = [
        adapter(
            "upper",
            &[],
            &[
                "jq",
                "-c",
                "--unbuffered",
                "-f",
                &repo("handlers/jq/upper.jq"),
            ],
        ),
        adapter("count", &[], &["bash", &repo("handlers/shell/count.sh")]),
        adapter(
            "filter",
            &["--request-timeout", "3"],
            &["python3", &repo("tests/handlers/filter.py")],
        ),
        adapter(
            "full",
            &["--answers"],
            &["python3", &repo("tests/handlers/filter.py")],
        ),
        adapter(
            "once",
            &[
                "--per-request",
                "--max-procs",
                "2",
                "--request-timeout",
                "5",
            ],
            &["python3", &repo("tests/handlers/per_request.py")],
        ),
    ]
    .concat();
    Broker::start_with("", &tables, &[("alice", "alice-pw"), ("bob", "bob-pw")])
}

fn ok_data(reply: &Value) -> &Value {
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    &reply["data"]
}

fn error_of(reply: &Value) -> (&str, &str) {
    assert_eq!(reply["header"]["status"], "error", "{reply}");
    (code(reply), reply["data"]["error"].as_str().unwrap())
}

/// Send these (id, type, data) at once, then read one reply each: the replies by id.
fn pipelined(c: &mut Client, requests: &[(String, &str, Value)]) -> Vec<Value> {
    for (id, kind, data) in requests {
        c.send(&json!({"header":{"scope":"client","id":id},"payload":{"type":kind,"data":data}}))
            .unwrap();
    }
    let mut replies: Vec<Value> = (0..requests.len())
        .map(|_| c.recv().unwrap().expect("a reply"))
        .collect();
    replies.sort_by_key(|r| {
        let id = r["header"]["id"].as_str().unwrap().to_string();
        requests.iter().position(|(i, _, _)| *i == id).unwrap()
    });
    replies
}

#[test]
fn a_jq_filter_and_a_bash_loop_are_handlers() {
    let b = broker();
    let mut alice = b.login("alice", "alice-pw");
    alice.set_timeout(Some(DEADLINE)).unwrap();
    let reply = alice.request("1", "upper", &json!({"text": "hi"})).unwrap();
    assert_eq!(ok_data(&reply), &json!({"text": "HI"}));
    assert_eq!(reply["header"]["type"], "upper");
    // Input it cannot take is answered too, so the answers stay in step.
    let reply = alice.request("2", "upper", &json!({"text": 5})).unwrap();
    assert_eq!(
        ok_data(&reply),
        &json!({"error": "data.text must be a string"})
    );
    let reply = alice.request("3", "count", &json!(null)).unwrap();
    assert_eq!(ok_data(&reply), &json!({"count": 1, "user": "alice"}));
    let reply = alice.request("4", "count", &json!(null)).unwrap();
    assert_eq!(ok_data(&reply), &json!({"count": 2, "user": "alice"}));
    // Pipelined: every request answered with its own reply.
    let requests: Vec<(String, &str, Value)> = (0..200)
        .map(|i| (format!("p{i}"), "upper", json!({ "text": format!("t{i}") })))
        .collect();
    for (i, reply) in pipelined(&mut alice, &requests).iter().enumerate() {
        assert_eq!(ok_data(reply), &json!({ "text": format!("T{i}") }));
    }
}

#[test]
fn a_filter_that_misbehaves_costs_only_the_request_it_misbehaved_on() {
    let b = broker();
    let mut alice = b.login("alice", "alice-pw");
    alice.set_timeout(Some(DEADLINE)).unwrap();
    let pid = |c: &mut Client| {
        let reply = c
            .request("pid", "filter", &json!({"action": "pid"}))
            .unwrap();
        ok_data(&reply)["pid"].as_u64().unwrap()
    };
    let first = pid(&mut alice);
    let echo = |i: u32| (format!("e{i}"), "filter", json!({"action": "echo", "n": i}));
    let cases = [
        (
            json!({"action": "garbage"}),
            "bad_handler_reply",
            "the python3 command's answer is not JSON: expected ident",
        ),
        (
            json!({"action": "big"}),
            "bad_handler_reply",
            "the python3 command's answer is over 1048576 bytes",
        ),
        (
            json!({"action": "hang"}),
            "handler_timeout",
            "the python3 command did not answer within 3 s",
        ),
        (
            json!({"action": "crash"}),
            "handler_unavailable",
            "the python3 command exited with status 3 before answering",
        ),
    ];
    for (n, (bad, want_code, want_text)) in cases.into_iter().enumerate() {
        let n = n as u32;
        // The bad request with two good ones right behind it, all in flight at once.
        let requests = [
            (format!("bad{n}"), "filter", bad.clone()),
            echo(2 * n),
            echo(2 * n + 1),
        ];
        let replies = pipelined(&mut alice, &requests);
        assert_eq!(error_of(&replies[0]), (want_code, want_text), "{bad}");
        assert_eq!(ok_data(&replies[1]), &requests[1].2, "{bad}");
        assert_eq!(ok_data(&replies[2]), &requests[2].2, "{bad}");
    }
    assert_ne!(pid(&mut alice), first, "the filter was started again");
    let log = b.log();
    assert!(log.contains("hung on a request; started again"), "{log}");
}

#[test]
fn with_answers_the_program_sends_to_others_and_answers_errors() {
    let b = broker();
    let mut alice = b.login("alice", "alice-pw");
    let mut bob = b.login("bob", "bob-pw");
    alice.set_timeout(Some(DEADLINE)).unwrap();
    bob.set_timeout(Some(DEADLINE)).unwrap();
    let push = json!({"header":{"status":"ok","command":"sendClients","commandData":["bob"]},
                      "payload":{"type":"news","data":"hi"}});
    let reply = alice
        .request("1", "full", &json!({"action": "answer", "answer": push}))
        .unwrap();
    assert_eq!(reply["header"]["delivered"], json!(["bob"]), "{reply}");
    let pushed = bob.recv().unwrap().unwrap();
    assert_eq!(pushed["header"]["kind"], "push");
    assert_eq!(pushed["data"], "hi");
    assert_eq!(pushed["header"]["from"]["user"], "alice");
    let refusal = json!({"header":{"status":"error","command":"reply"},
                         "payload":{"type":"full","data":{"error":"not today","code":"nope"}}});
    let reply = alice
        .request("2", "full", &json!({"action": "answer", "answer": refusal}))
        .unwrap();
    assert_eq!(error_of(&reply), ("nope", "not today"));
    let reply = alice
        .request("3", "full", &json!({"action": "answer", "answer": 5}))
        .unwrap();
    assert_eq!(
        error_of(&reply),
        (
            "bad_handler_reply",
            "the python3 command's answer is not {\"header\":{…},\"payload\":{…}} (--answers)"
        )
    );
}

#[test]
fn per_request_runs_one_process_each_within_the_cap() {
    let b = broker();
    let mut alice = b.login("alice", "alice-pw");
    alice.set_timeout(Some(DEADLINE)).unwrap();
    let reply = alice
        .request("1", "once", &json!({"action": "env"}))
        .unwrap();
    assert_eq!(
        ok_data(&reply),
        &json!({"user": "alice", "server": "test", "scope": "client", "kind": "request", "info": ""})
    );
    // Four at once, at most two running (max-procs 2): each saw at most 2, and some saw 2.
    let dir = tempfile::tempdir().unwrap();
    let requests: Vec<(String, &str, Value)> = (0..4)
        .map(|i| {
            let data = json!({"action": "sleep", "seconds": 0.3, "dir": dir.path()});
            (format!("s{i}"), "once", data)
        })
        .collect();
    let most: Vec<u64> = pipelined(&mut alice, &requests)
        .iter()
        .map(|r| ok_data(r)["most"].as_u64().unwrap())
        .collect();
    assert!(most.iter().all(|m| *m <= 2), "{most:?}");
    assert!(most.contains(&2), "{most:?}");
    let reply = alice
        .request("2", "once", &json!({"action": "exit", "status": 3}))
        .unwrap();
    assert_eq!(
        error_of(&reply),
        (
            "handler_unavailable",
            "the python3 command exited with status 3 before answering"
        )
    );
    let reply = alice
        .request("3", "once", &json!({"action": "text", "text": "nope"}))
        .unwrap();
    assert_eq!(error_of(&reply).0, "bad_handler_reply");
    let started = Instant::now();
    let reply = alice
        .request(
            "4",
            "once",
            &json!({"action": "sleep", "seconds": 30, "dir": dir.path()}),
        )
        .unwrap();
    assert_eq!(
        error_of(&reply),
        (
            "handler_timeout",
            "the python3 command did not answer within 5 s"
        )
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    // The others kept being served.
    let reply = alice.request("5", "once", &json!({"n": 1})).unwrap();
    assert_eq!(ok_data(&reply), &json!({"n": 1}));
}

#[test]
fn it_exits_0_and_its_filter_is_gone_when_the_broker_closes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut child = Command::new(BESTER)
        .args(["handle", "t", "--socket", path.to_str().unwrap(), "--"])
        .args(["python3", &repo("tests/handlers/filter.py")])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let (mut broker, _) = listener.accept().unwrap();
    broker.set_read_timeout(Some(DEADLINE)).unwrap();
    let request = json!({"header":{"kind":"request","request":"5","scope":"client",
                                   "from":{"user":"alice","server":"s"}},
                         "payload":{"type":"t","data":{"action":"pid"}}});
    let body = serde_json::to_vec(&request).unwrap();
    broker
        .write_all(&(body.len() as u32).to_le_bytes())
        .unwrap();
    broker.write_all(&body).unwrap();
    let mut len = [0u8; 4];
    broker.read_exact(&mut len).unwrap();
    let mut answer = vec![0u8; u32::from_le_bytes(len) as usize];
    broker.read_exact(&mut answer).unwrap();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    let filter_pid = answer["payload"]["data"]["pid"].as_u64().unwrap();
    let text = String::from_utf8(serde_json::to_vec(&answer).unwrap()).unwrap();
    assert_eq!(
        text,
        format!(
            r#"{{"header":{{"status":"ok","command":"reply","request":"5"}},"payload":{{"type":"t","data":{{"pid":{filter_pid}}}}}}}"#
        )
    );
    drop(broker);
    let status = eventually("bester handle to exit", || child.try_wait().unwrap());
    assert_eq!(status.code(), Some(0));
    eventually("the filter to be gone", || {
        let stat = std::fs::read_to_string(format!("/proc/{filter_pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for init.
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
}

#[test]
fn usage_errors_say_what_is_missing() {
    let out = Command::new(BESTER).args(["handle", "t"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("<COMMAND>"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BESTER)
        .args(["handle", "t", "--", "cat"])
        .env_remove("BESTER_SOCKET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "bester: BESTER_SOCKET is not set: give --socket, or run under besterd\n"
    );
}
