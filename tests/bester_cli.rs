//! The `bester` client against the real `besterd`: exact stdout, stderr and exit codes of `send`
//! and `listen` (replies, error replies, timeouts, data from stdin, passwords, the server closing
//! first, keep-alive and `--count`), and its `--help`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Broker, DEADLINE, eventually, signal};
use serde_json::json;

const BESTER: &str = env!("CARGO_BIN_EXE_bester");

/// `bester ARGS` with `stdin` piped in (never a terminal) and no `BESTER_PASSWORD`.
fn bester(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = spawn(args);
    let mut input = child.stdin.take().unwrap();
    // A client that never reads stdin closes it early: a broken pipe here is fine.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().unwrap()
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BESTER)
        .args(args)
        .env_remove("BESTER_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bester")
}

/// (exit code, stdout, stderr).
fn outcome(out: &Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn uri(broker: &Broker, userinfo: &str) -> String {
    format!("bester://{userinfo}@{}", broker.addr)
}

/// Brokers for these tests: the standard handlers and users, and these `[server]` keys.
fn broker(keys: &str) -> Broker {
    Broker::start(keys)
}

#[test]
fn send_prints_the_reply_and_takes_data_from_stdin() {
    let b = broker("");
    let out = bester(
        &[
            "send",
            &uri(&b, "alice:alice-pw"),
            "echo",
            r#"{"hello":"world"}"#,
        ],
        b"",
    );
    assert_eq!(
        outcome(&out),
        (
            Some(0),
            "{\"header\":{\"status\":\"ok\",\"kind\":\"reply\",\"id\":\"1\",\"type\":\"echo\"},\"data\":{\"hello\":\"world\"}}\n".into(),
            String::new()
        )
    );

    // `-`: all of stdin, any size up to the frame limit, non-ASCII as it is.
    let text = "grüße ✓ ".repeat(10_000);
    let stdin = serde_json::to_vec(&json!({"text": text})).unwrap();
    let out = bester(
        &["send", &uri(&b, "alice:alice-pw"), "echo", "-", "--id", "é"],
        &stdin,
    );
    let (code, stdout, stderr) = outcome(&out);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    assert_eq!(
        stdout,
        format!(
            "{}\n",
            json!({"header":{"status":"ok","kind":"reply","id":"é","type":"echo"},"data":{"text":text}})
        )
    );

    // No DATA is null.
    let out = bester(&["send", &uri(&b, "alice:alice-pw"), "echo"], b"");
    assert_eq!(
        outcome(&out).1,
        "{\"header\":{\"status\":\"ok\",\"kind\":\"reply\",\"id\":\"1\",\"type\":\"echo\"},\"data\":null}\n"
    );
}

#[test]
fn bad_data_is_a_usage_error() {
    let b = broker("");
    let u = uri(&b, "alice:alice-pw");
    let out = bester(&["send", &u, "echo", "{bad"], b"");
    assert_eq!(
        outcome(&out),
        (
            Some(64),
            String::new(),
            "bester: DATA is not JSON: key must be a string at line 1 column 2\n".into()
        )
    );
    let out = bester(&["send", &u, "echo", "-"], b"[1,");
    assert_eq!(
        outcome(&out),
        (
            Some(64),
            String::new(),
            "bester: DATA on standard input is not JSON: EOF while parsing a value at line 1 column 3\n"
                .into()
        )
    );
    let out = bester(
        &["send", &uri(&b, "alice"), "echo", "-", "--password-stdin"],
        b"alice-pw\n{}",
    );
    assert_eq!(
        outcome(&out),
        (
            Some(64),
            String::new(),
            "bester: DATA \"-\" and --password-stdin cannot both read standard input\n".into()
        )
    );
    let out = bester(&["send", "http://x@y:1", "echo"], b"");
    assert_eq!(
        outcome(&out),
        (
            Some(64),
            String::new(),
            "bester: \"http://x@y:1\" does not start with bester:// (or bester+tls://, bester+ws://, bester+wss://)\n".into()
        )
    );
    let out = bester(&["send", &u, "echo", "--timeout", "soon"], b"");
    let (code, stdout, stderr) = outcome(&out);
    assert_eq!((code, stdout.as_str()), (Some(64), ""));
    assert!(
        stderr.starts_with(
            "error: invalid value 'soon' for '--timeout <SECONDS>': \"soon\" is not a number\n"
        ),
        "{stderr}"
    );
}

#[test]
fn error_reply_exits_1_with_code_and_text_on_stderr() {
    let b = broker("");
    let out = bester(&["send", &uri(&b, "alice:alice-pw"), "nope", "1"], b"");
    assert_eq!(
        outcome(&out),
        (
            Some(1),
            "{\"header\":{\"status\":\"error\",\"kind\":\"reply\",\"id\":\"1\"},\"data\":{\"error\":\"no handler for type \\\"nope\\\"\",\"code\":\"unknown_type\"}}\n".into(),
            "bester: unknown_type: no handler for type \"nope\"\n".into()
        )
    );
    // A handler's own error code passes through.
    let out = bester(
        &[
            "send",
            &uri(&b, "alice:alice-pw"),
            "faulty",
            r#"{"action":"?"}"#,
        ],
        b"",
    );
    let (code, stdout, stderr) = outcome(&out);
    assert_eq!(code, Some(1));
    assert!(stdout.contains("\"code\":\"bad_request\""), "{stdout}");
    assert_eq!(
        stderr,
        "bester: bad_request: data.action must be \"pid\", \"echo\", \"hang\", \"crash\" or \"garbage\"\n"
    );
    // A refused login prints the server's answer too.
    let out = bester(&["send", &uri(&b, "alice:wrong"), "echo"], b"");
    assert_eq!(
        outcome(&out),
        (
            Some(1),
            "{\"header\":{\"status\":\"error\",\"kind\":\"reply\"},\"data\":{\"error\":\"invalid username or password\",\"code\":\"auth_failed\"}}\n".into(),
            "bester: login refused: auth_failed: invalid username or password\n".into()
        )
    );
}

#[test]
fn timeout_exits_75_saying_so() {
    let b = broker("request_timeout_ms = 60000");
    let started = Instant::now();
    let out = bester(
        &[
            "send",
            &uri(&b, "alice:alice-pw"),
            "faulty",
            r#"{"action":"hang"}"#,
            "--timeout",
            "2",
        ],
        b"",
    );
    assert_eq!(
        outcome(&out),
        (
            Some(75),
            String::new(),
            "bester: timed out after 2 s waiting for the reply to message \"1\" (--timeout)\n"
                .into()
        )
    );
    assert!(
        started.elapsed() < DEADLINE,
        "the server's 60 s handler timeout never came into it"
    );

    // Connecting counts too: a listener that never accepts and never answers the login.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let out = bester(
        &[
            "send",
            &format!("bester://a:b@{}", silent.local_addr().unwrap()),
            "echo",
            "--timeout",
            "0.3",
        ],
        b"",
    );
    assert_eq!(
        outcome(&out),
        (
            Some(75),
            String::new(),
            "bester: timed out after 0.3 s logging in (--timeout)\n".into()
        )
    );
}

#[test]
fn password_is_never_read_from_stdin_unless_asked() {
    // Nothing may connect: this listener would see it in its backlog.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let out = bester(
        &["send", &format!("bester://alice@{addr}"), "echo"],
        b"alice-pw\n",
    );
    assert_eq!(
        outcome(&out),
        (
            Some(64),
            String::new(),
            "bester: no password for \"alice\": standard input is not a terminal, so give it in the URI, in BESTER_PASSWORD, or on standard input with --password-stdin\n".into()
        )
    );
    let out = bester(&["listen", &format!("bester://alice@{addr}")], b"");
    assert_eq!(out.status.code(), Some(64));
    // An empty password is no password: no user can have one.
    let out = Command::new(BESTER)
        .args(["send", &format!("bester://alice:@{addr}"), "echo"])
        .env("BESTER_PASSWORD", "")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("bester: no password for \"alice\""),
        "{out:?}"
    );
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).unwrap_err(),
        std::io::ErrorKind::WouldBlock,
        "bester connected without a password"
    );

    let b = broker("");
    let out = bester(
        &["send", &uri(&b, "alice"), "echo", "2", "--password-stdin"],
        b"alice-pw\n",
    );
    assert_eq!(
        outcome(&out),
        (
            Some(0),
            "{\"header\":{\"status\":\"ok\",\"kind\":\"reply\",\"id\":\"1\",\"type\":\"echo\"},\"data\":2}\n".into(),
            String::new()
        )
    );
    let out = bester(
        &["send", &uri(&b, "alice"), "echo", "--password-stdin"],
        b"\n",
    );
    assert_eq!(
        outcome(&out),
        (
            Some(64),
            String::new(),
            "bester: --password-stdin: no password on the first line of standard input\n".into()
        )
    );
    let out = Command::new(BESTER)
        .args(["send", &uri(&b, "alice"), "echo", "3"])
        .env("BESTER_PASSWORD", "alice-pw")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        outcome(&out).1,
        "{\"header\":{\"status\":\"ok\",\"kind\":\"reply\",\"id\":\"1\",\"type\":\"echo\"},\"data\":3}\n"
    );
    assert!(
        !b.log().contains("failed: auth_failed"),
        "no login attempt was burnt:\n{}",
        b.log()
    );
}

/// Start `bester send ... faulty hang` and wait until the handler has the request.
fn hanging_send(b: &Broker) -> Child {
    let child = spawn(&[
        "send",
        &uri(b, "alice:alice-pw"),
        "faulty",
        r#"{"action":"hang"}"#,
        "--id",
        "h",
    ]);
    eventually("the hang request at the handler", || {
        b.log().contains(": hang").then_some(())
    });
    child
}

#[test]
fn server_closing_first_shows_its_last_frame() {
    // A frame over the limit: the server says so (without an id: it read only the length) and
    // closes.
    let b = broker("");
    let big = serde_json::to_vec(&"x".repeat(1 << 20)).unwrap();
    let out = bester(&["send", &uri(&b, "alice:alice-pw"), "echo", "-"], &big);
    assert_eq!(
        outcome(&out),
        (
            Some(1),
            "{\"header\":{\"status\":\"error\",\"kind\":\"reply\"},\"data\":{\"error\":\"frame of 1048650 bytes is over the limit of 1048576 bytes\",\"code\":\"frame_too_large\"}}\n".into(),
            "bester: frame_too_large: frame of 1048650 bytes is over the limit of 1048576 bytes\n".into()
        )
    );

    // The server stops while the request is in flight.
    let mut b = broker("");
    let child = hanging_send(&b);
    b.stop();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        outcome(&out),
        (
            Some(1),
            "{\"header\":{\"status\":\"error\",\"kind\":\"reply\",\"id\":\"h\"},\"data\":{\"error\":\"the server is shutting down; the \\\"faulty\\\" request was not answered\",\"code\":\"shutting_down\"}}\n".into(),
            "bester: shutting_down: the server is shutting down; the \"faulty\" request was not answered\n".into()
        )
    );

    // The server dies: nothing to show but that it closed.
    let mut b = broker("");
    let child = hanging_send(&b);
    signal(b.pid(), libc::SIGKILL);
    let addr = b.addr;
    b.stop();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        outcome(&out),
        (
            Some(1),
            String::new(),
            format!("bester: {addr} closed the connection before the reply\n")
        )
    );
}

/// A running `bester listen`: its stdout lines arrive on a channel.
struct Listener {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn listen(args: &[&str]) -> Listener {
    let mut child = spawn(args);
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    Listener {
        child,
        lines,
        stderr,
    }
}

impl Listener {
    /// Exit code, stdout lines not taken yet, stderr.
    fn finish(mut self) -> (Option<i32>, Vec<String>, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < DEADLINE, "bester listen did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = self.stderr.join().unwrap();
        (status.code(), self.lines.iter().collect(), stderr)
    }
}

#[test]
fn listen_keeps_alive_with_ping_and_stops_after_count() {
    let b = broker("idle_timeout_ms = 1500");
    let l = listen(&[
        "listen",
        &uri(&b, "bob:bob-pw"),
        "--count",
        "2",
        "--ping",
        "0.2",
    ]);
    // bob is connected once alice's message to him is delivered rather than offline.
    let mut alice = b.login("alice", "alice-pw");
    let delivered = |alice: &mut besterd::client::Client, n: u32| {
        let reply = alice
            .request(
                &n.to_string(),
                "faulty",
                &json!({"action":"send_to","users":["bob"],"n":n}),
            )
            .unwrap();
        reply["header"]["delivered"] == json!(["bob"])
    };
    let mut n = 0;
    eventually("bob listening", || {
        n += 1;
        delivered(&mut alice, n).then_some(())
    });
    let first = l.lines.recv_timeout(DEADLINE).unwrap();
    // More than two idle timeouts later, bob is still there: his pings kept the connection open.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_millis(3500) {
        alice
            .request("p", "bester.ping", &serde_json::Value::Null)
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    n += 1;
    assert!(delivered(&mut alice, n), "bob was closed:\n{}", b.log());
    let (code, rest, stderr) = l.finish();
    let push = |n: u32| {
        json!({"header":{"status":"ok","kind":"push","type":"faulty","from":{"user":"alice","server":"test"}},
            "data":{"action":"send_to","users":["bob"],"n":n}})
        .to_string()
    };
    assert_eq!(
        (code, first, rest, stderr.as_str()),
        (
            Some(0),
            push(n - 1),
            vec![push(n)],
            "bester: listening (Ctrl-C to stop)\n"
        )
    );
    assert!(
        !b.log().contains("idle timeout"),
        "nobody timed out:\n{}",
        b.log()
    );
}

#[test]
fn listen_without_ping_is_closed_by_the_idle_timeout() {
    let b = broker("idle_timeout_ms = 500");
    let l = listen(&["listen", &uri(&b, "bob:bob-pw"), "--ping", "600"]);
    let (code, lines, stderr) = l.finish();
    assert_eq!(
        (code, lines, stderr),
        (
            Some(1),
            vec![],
            format!(
                "bester: listening (Ctrl-C to stop)\nbester: {} closed the connection: idle_timeout: nothing received for 500 ms (send bester.ping to keep a connection open)\n",
                b.addr
            )
        )
    );
    let out = bester(&["listen", &uri(&b, "bob:bob-pw"), "--count", "0"], b"");
    let (code, _, stderr) = outcome(&out);
    assert_eq!(code, Some(64));
    assert!(
        stderr.starts_with("error: invalid value '0' for '--count <N>': 0 is not in 1.."),
        "{stderr}"
    );
}

#[test]
fn help_describes_the_client() {
    for flag in ["--help", "-h"] {
        let out = bester(&[flag], b"");
        let (code, stdout, stderr) = outcome(&out);
        assert_eq!((code, stderr.as_str()), (Some(0), ""));
        assert_eq!(
            stdout.lines().next(),
            Some("bester: the command-line client of a besterd server"),
            "{stdout}"
        );
        for part in [
            "Usage: bester [OPTIONS] <COMMAND>",
            "send",
            "listen",
            "--timeout",
        ] {
            assert!(stdout.contains(part), "{part} missing:\n{stdout}");
        }
        assert!(!stdout.contains("dispatches"), "{stdout}");
    }
}

/// Runs `bester ARGS` on a new pseudo-terminal (python3's pty module), answers its password
/// prompt with `password`, and returns (exit code, everything it wrote to the terminal).
fn on_a_terminal(args: &[&str], password: &str) -> (i32, String) {
    const DRIVER: &str = r#"
import os, select, sys, termios, time
import pty
password = sys.argv[1].encode() + b"\n"
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
deadline, out, answered = time.time() + 20, b"", False
while True:
    # Answer once the prompt is out and echo is off (the terminal's ECHO flag, shared with the
    # master side), as a person typing after the prompt would.
    prompted = b"password for " in out
    if not answered and prompted and not termios.tcgetattr(fd)[3] & termios.ECHO:
        os.write(fd, password)
        answered = True
    wait = 0.02 if prompted and not answered else max(0.0, deadline - time.time())
    ready, _, _ = select.select([fd], [], [], wait)
    if not ready and prompted and not answered and time.time() < deadline:
        continue
    if not ready:
        os.kill(pid, 9)
        sys.exit("no end in time: %r" % out)
    try:
        chunk = os.read(fd, 4096)
    except OSError:  # EIO: the child is gone
        chunk = b""
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode())
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(DRIVER)
        .arg(password)
        .arg(BESTER)
        .args(args)
        .env_remove("BESTER_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n"),
    )
}

#[test]
fn on_a_terminal_the_password_is_prompted_for_without_echo() {
    let b = broker("");
    let (code, screen) = on_a_terminal(&["send", &uri(&b, "alice"), "echo", "4"], "alice-pw");
    assert_eq!(
        (code, screen.as_str()),
        (
            0,
            "password for alice: \n{\"header\":{\"status\":\"ok\",\"kind\":\"reply\",\"id\":\"1\",\"type\":\"echo\"},\"data\":4}\n"
        ),
        "the password is not echoed"
    );
}

/// Another user of the machine reads `ps` (that is, `/proc/PID/cmdline`): a password given in the
/// URI is overwritten there once `bester` has started, and the login still works with it.
#[test]
fn a_password_in_the_uri_is_hidden_from_ps() {
    let b = broker("");
    let target = uri(&b, "alice:alice-pw");
    let mut child = spawn(&["listen", &target]);
    eventually("alice logged in", || {
        b.log().contains("user=alice logged in").then_some(())
    });
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(
        args[1..],
        [
            "listen".to_string(),
            format!("bester://alice:********@{}", b.addr)
        ]
    );
}

/// A token given with `--token` is overwritten in `/proc/PID/cmdline` as a URI's password is,
/// and the login still works with it.
#[test]
fn a_token_on_the_command_line_is_hidden_from_ps() {
    let b = broker("");
    let (_, reply) = besterd::client::Client::login(b.addr, "alice", "alice-pw").unwrap();
    let token = reply["data"]["resume"].as_str().unwrap().to_string();
    let target = format!("bester://{}", b.addr);
    let mut child = spawn(&["listen", "--token", &token, &target]);
    eventually("alice logged in by resume token", || {
        b.log().contains("user=alice logged in from").then_some(())
    });
    eventually("alice logged in by resume token", || {
        b.log().contains("by resume token").then_some(())
    });
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&cmdline).into_owned();
    assert!(
        text.contains(&format!("--token\0{}\0", "*".repeat(token.len()))),
        "{text:?}"
    );
    assert!(!text.contains(&token[3..]), "{text:?}");
}
