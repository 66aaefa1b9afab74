//! `besterd handler-test`, the conformance kit, run as a user runs it: the real binary against
//! real handler programs. It passes the example handlers (Python echo, Node upper), and fails the
//! deliberately broken ones of `tests/handlers/broken.py` with the exact line saying what each did.
//! The kit bounds every wait itself; these tests only read its output.

mod common;

use std::process::{Command, Output};

fn kit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_besterd"))
        .arg("handler-test")
        .args(args)
        .current_dir(common::repo())
        .output()
        .expect("run besterd handler-test")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The kit's lines for a broken handler (2 s per wait keeps the failing checks short).
fn broken(mode: &str) -> (Option<i32>, String) {
    let out = kit(&[
        "--timeout-ms",
        "2000",
        "--",
        "python3",
        "tests/handlers/broken.py",
        mode,
    ]);
    (out.status.code(), stdout(&out))
}

fn assert_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

#[test]
fn python_echo_passes_every_check() {
    let out = kit(&["--type", "echo", "--", "python3", "handlers/python/echo.py"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    assert_line(
        &text,
        "# type \"echo\", connecting to BESTER_SOCKET; probe: vector \"echo object\" (echo-compatible)",
    );
    assert_line(
        &text,
        "ok  vector \"echo ignores reports and unknown header fields\"",
    );
    assert_line(
        &text,
        "ok  64 pipelined requests in one write, answered in any order",
    );
    assert_line(&text, "ok  reports are not answered");
    assert_line(&text, "ok  request tokens of odd shapes come back exactly");
    assert_line(
        &text,
        "ok  a frame over 1 MiB: closed the connection; it exited with status 1",
    );
    assert_line(&text, "ok  exit status 0 at end of stream");
    assert_line(&text, "14 ok, 0 failed, 0 skipped");
}

#[test]
fn node_upper_passes_every_check() {
    let out = kit(&["--type", "upper", "--", "node", "handlers/node/upper.js"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_line(&text, "ok  vector \"upper forward to another handler\"");
    assert_line(&text, "13 ok, 0 failed, 0 skipped");
}

#[test]
fn a_probe_given_on_the_command_line_is_checked() {
    // faulty.py echoes {"action":"echo",...}; the probe is echo-compatible, so pipelined requests
    // carry data of their own ("seq") and a swapped answer would be caught.
    let data = r#"{"action":"echo","n":1}"#;
    let args = [
        "--type",
        "faulty",
        "--request",
        data,
        "--expect",
        data,
        "--",
    ];
    let out = kit(&[&args[..], &["python3", "tests/handlers/faulty.py"]].concat());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_line(
        &text,
        "# type \"faulty\", connecting to BESTER_SOCKET; probe: --request (echo-compatible)",
    );
    // The same handler asked for an answer it does not give.
    let args = [
        "--type",
        "faulty",
        "--request",
        data,
        "--expect",
        "{}",
        "--",
    ];
    let out = kit(&[&args[..], &["python3", "tests/handlers/faulty.py"]].concat());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_line(
        &text,
        "FAIL a request is answered: answered request \"41\" with \
         {\"header\":{\"status\":\"ok\",\"command\":\"reply\",\"request\":\"41\"},\"payload\":{\"type\":\"faulty\",\"data\":{\"action\":\"echo\",\"n\":1}}}, \
         expected {\"header\":{\"status\":\"ok\",\"command\":\"reply\",\"request\":\"41\"},\"payload\":{\"type\":\"faulty\",\"data\":{}}}",
    );
}

#[test]
fn a_handler_that_answers_reports_fails() {
    let (code, text) = broken("answers-reports");
    assert_eq!(code, Some(1), "{text}");
    assert_line(
        &text,
        "FAIL reports are not answered: answered a report: \
         {\"header\":{\"status\":\"ok\",\"command\":\"reply\",\"request\":\"p1\"},\"payload\":{\"type\":\"echo\",\"data\":null}}",
    );
    assert_line(
        &text,
        "FAIL vector \"echo ignores reports and unknown header fields\": frame 1 is \
         {\"header\":{\"status\":\"ok\",\"command\":\"reply\",\"request\":\"p1\"},\"payload\":{\"type\":\"echo\",\"data\":null}}, \
         expected {\"header\":{\"status\":\"ok\",\"command\":\"reply\",\"request\":\"3\"},\"payload\":{\"type\":\"echo\",\"data\":[1,2,3]}}",
    );
    assert_line(&text, "12 ok, 2 failed, 0 skipped");
}

#[test]
fn a_handler_that_does_not_exit_on_eof_fails() {
    let (code, text) = broken("no-exit");
    assert_eq!(code, Some(1), "{text}");
    assert_line(
        &text,
        "FAIL exit status 0 at end of stream: still running 2000 ms after the broker closed the socket",
    );
    assert_line(&text, "13 ok, 1 failed, 0 skipped");
}

#[test]
fn a_handler_that_answers_with_the_wrong_token_fails() {
    let (code, text) = broken("wrong-token");
    assert_eq!(code, Some(1), "{text}");
    assert_line(
        &text,
        "FAIL request tokens of odd shapes come back exactly: answered request \"007\" with the token \"7\"",
    );
    assert_line(&text, "13 ok, 1 failed, 0 skipped");
}

#[test]
fn a_handler_that_breaks_on_split_frames_fails() {
    let (code, text) = broken("split");
    assert_eq!(code, Some(1), "{text}");
    assert_line(
        &text,
        "FAIL a request split at every byte: split after byte 1: closed the connection without \
         answering request \"30001\"; it exited with status 1",
    );
    assert_line(
        &text,
        "FAIL five frames in two writes, the boundary inside a frame: closed the connection with \
         2 of 5 requests unanswered; it exited with status 1",
    );
}

#[test]
fn the_correct_twin_of_the_broken_handlers_passes() {
    // So each failure above is its bug's alone.
    let (code, text) = broken("correct");
    assert_eq!(code, Some(0), "{text}");
    assert_line(&text, "14 ok, 0 failed, 0 skipped");
}

#[test]
fn a_dialled_handler_is_checked_a_connection_per_request() {
    // listen.pl is an original-style handler: it listens, answers one frame per connection without
    // a token, and reads frames of any size (so it fails the 1 MiB check).
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("listen.sock");
    let socket = socket.to_str().unwrap();
    let out = kit(&[
        "--type",
        "listen",
        "--connect",
        socket,
        "--timeout-ms",
        "2000",
        "--",
        "perl",
        "tests/handlers/listen.pl",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_line(&text, "ok  64 requests on connections open at once");
    assert_line(
        &text,
        "ok  a request split at every byte: 147 splits, then one byte per write",
    );
    assert_line(
        &text,
        "skip reports are not answered: a dialled connection carries one request and its \
         answer, no push to report on",
    );
    assert_line(
        &text,
        "ok  SIGTERM after a connection without a request: on SIGTERM it exited with status 0",
    );
    assert!(
        text.lines().any(|l| l.starts_with(
            "FAIL a frame over 1 MiB: answered a frame of 1048577 bytes (over the limit of 1048576) \
             instead of closing the connection: {\"header\":"
        )),
        "{text}"
    );
    assert_line(&text, "7 ok, 1 failed, 2 skipped");
    assert!(
        !std::path::Path::new(socket).exists(),
        "the program's socket is removed"
    );

    // A socket something else already listens on is not the program's: refused, left alone.
    let _other = std::os::unix::net::UnixListener::bind(socket).unwrap();
    let out = kit(&[
        "--connect",
        socket,
        "--",
        "perl",
        "tests/handlers/listen.pl",
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "besterd handler-test: something already listens on {socket}: give --connect a path \
             of its own\n"
        )
    );
    assert!(std::path::Path::new(socket).exists());
}

#[test]
fn usage_errors_exit_64() {
    let out = kit(&["--type", "echo"]);
    assert_eq!(out.status.code(), Some(64));
    let out = kit(&["--request", "{\"a\":1,\"a\":2}", "--", "true"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("besterd handler-test: --request: not valid JSON: duplicate key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kit(&["--expect", "{}", "--", "true"]);
    assert_eq!(out.status.code(), Some(64));
    let out = kit(&["--type", "a b", "--", "true"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stdout(&out).is_empty());
}

#[test]
fn a_program_that_never_connects_fails_every_check_saying_so() {
    let out = kit(&[
        "--timeout-ms",
        "500",
        "--",
        "python3",
        "-c",
        "import sys; sys.exit(3)",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_line(
        &text,
        "FAIL a request is answered: exited with status 3 before connecting",
    );
    assert_line(&text, "0 ok, 14 failed, 0 skipped");
}

#[test]
fn a_handler_correlated_by_order_gets_one_request_at_a_time() {
    // order.js answers without tokens and logs OVERLAP if a second request comes before its
    // answer; it reads frames of any size (so it fails the 1 MiB check).
    let out = kit(&[
        "--type",
        "order",
        "--correlate",
        "order",
        "--",
        "node",
        "tests/handlers/order.js",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("OVERLAP"));
    assert_line(
        &text,
        "# type \"order\", connecting to BESTER_SOCKET, correlated by order; probe: none (any answer)",
    );
    assert_line(
        &text,
        "skip 64 pipelined requests in one write, answered in any order: besterd sends a handler \
         correlated by order one request at a time",
    );
    assert_line(&text, "ok  16 requests with descending tokens");
    assert_line(&text, "ok  reports are not answered");
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL a frame over 1 MiB: answered a frame of 1048577 bytes")),
        "{text}"
    );
    assert_line(&text, "7 ok, 1 failed, 2 skipped");
    let out = kit(&[
        "--correlate",
        "order",
        "--connect",
        "/nonexistent/x.sock",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn an_auth_handler_answers_a_login_with_a_reply() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "k-test alice {\"plan\":\"pro\"}\n").unwrap();
    let keys = keys.to_str().unwrap();
    let auth = r#"{"apiKey":"k-test"}"#;
    let args = ["--type", "keys", "--login", auth, "--"];
    let out = kit(&[
        &args[..],
        &["python3", "handlers/python/auth_keys.py", keys],
    ]
    .concat());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_line(
        &text,
        "ok  a login is answered with a reply: accepted: \
         {\"user\":\"alice\",\"info\":{\"plan\":\"pro\",\"via\":\"api-key\"}}",
    );
    let args = ["--login", auth, "--timeout-ms", "2000", "--"];
    let out = kit(&[
        &args[..],
        &["python3", "tests/handlers/broken.py", "login-push"],
    ]
    .concat());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_line(
        &text,
        "FAIL a login is answered with a reply: answered a login with a command other than \
         \"reply\" (besterd: bad_handler_reply): {\"header\":{\"status\":\"ok\",\"command\":\
         \"sendClients\",\"request\":\"7\",\"commandData\":[\"alice\"]},\"payload\":{\"type\":\
         \"bester.login\",\"data\":{\"apiKey\":\"k-test\"}}}",
    );
    assert_line(&text, "14 ok, 1 failed, 0 skipped");
}

#[test]
fn a_frame_over_1_mib_may_be_refused_but_must_not_crash_the_handler() {
    let (code, text) = broken("skip-oversize");
    assert_eq!(code, Some(0), "{text}");
    assert_line(
        &text,
        "ok  a frame over 1 MiB: refused it (no answer) and answered the next request",
    );
    let (code, text) = broken("abort-oversize");
    assert_eq!(code, Some(1), "{text}");
    assert_line(
        &text,
        "FAIL a frame over 1 MiB: closed the connection; it was killed by signal 6",
    );
    assert_line(&text, "13 ok, 1 failed, 0 skipped");
}
