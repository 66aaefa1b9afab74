//! Greeter redirects against the real daemon (PROTOCOL.md §6, "Redirects"): a greeter broker
//! whose handler (tests/handlers/greeter.py) sends the client to a session broker that shares its
//! token key and user store. `bester send` follows the redirect, logs in there with the minted
//! resume token alone (the session broker runs no password check) and prints the session
//! broker's reply; redirect loops, redirects without a token, and the `commandData` the broker
//! must refuse each end with their exact error; the client's frame is byte-exact, its other
//! requests in flight are each answered `redirected`, and the connection closes after it.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Broker, DEADLINE, besterd_cmd, handler};
use serde_json::{Value, json};

const BESTER: &str = env!("CARGO_BIN_EXE_bester");

/// Two brokers sharing a token key and a user store: `greeter-a` and `session-b`, both serving
/// `greet` (and `front`, which passes on to `greet`) with tests/handlers/greeter.py.
struct Pair {
    a: Broker,
    b: Broker,
    _keys: tempfile::TempDir,
}

fn pair() -> Pair {
    pair_with("")
}

/// A CA and a certificate it issued for 127.0.0.1, written as PEM files in `dir`: (ca, cert, key).
fn write_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "besterd redirect test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// [`pair`] with these tables added to both brokers' configuration.
fn pair_with(extra: &str) -> Pair {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("token.key");
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut random)
        .unwrap();
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key, hex).unwrap();
    let greeter = handler("python3", "tests/handlers/greeter.py");
    let tables = format!(
        "[handlers.greet]\n{greeter}\n[handlers.front]\n{greeter}\n[auth]\ntoken_secret_file = {:?}\n{extra}",
        key.display().to_string()
    );
    let a = Broker::launch(
        "greeter-a",
        "127.0.0.1:0",
        "",
        &tables,
        &[("alice", "alice-pw"), ("bob", "bob-pw")],
    );
    let b = Broker::launch("session-b", "127.0.0.1:0", "", &tables, &[]);
    // The same user store: a copy of the greeter's, put in place in one rename.
    let tmp = b.dir.path().join("users.json.new");
    std::fs::copy(a.users(), &tmp).unwrap();
    std::fs::rename(&tmp, b.users()).unwrap();
    Pair { a, b, _keys: keys }
}

fn url(b: &Broker) -> String {
    format!("bester://{}", b.addr)
}

/// `data` for a request that the broker named `server` answers with this redirect.
fn redirect_at(server: &str, command_data: Value) -> Value {
    json!({ "redirect": { server: command_data } })
}

/// `bester ARGS` with nothing on stdin and no `BESTER_PASSWORD`: (exit code, stdout, stderr).
fn bester(args: &[&str]) -> (Option<i32>, String, String) {
    let out: Output = Command::new(BESTER)
        .args(args)
        .env_remove("BESTER_PASSWORD")
        .env_remove("BESTER_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run bester");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How many argon2 password checks a daemon has run (`besterd ctl status --json`).
fn password_checks(b: &Broker) -> u64 {
    let socket = b.dir.path().join("run/besterd.ctl");
    let out = besterd_cmd(
        &[
            "ctl",
            "--socket",
            socket.to_str().unwrap(),
            "status",
            "--json",
        ],
        None,
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    answer["status"]["logins"]["password_checks"]
        .as_u64()
        .unwrap_or_else(|| panic!("no password_checks in {answer}"))
}

/// A raw connection: frames written and read as bytes.
struct Raw(TcpStream);

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Raw(stream)
    }

    fn login(addr: SocketAddr, authentication: Value) -> (Raw, Value) {
        let mut raw = Raw::connect(addr);
        raw.send(&json!({"header":{"identify":{"type":"client","authentication":authentication}}}));
        let reply = raw.recv().expect("an identify reply");
        (raw, serde_json::from_str(&reply).unwrap())
    }

    fn password(addr: SocketAddr, user: &str, password: &str) -> Raw {
        let (raw, reply) = Raw::login(addr, json!({"username": user, "password": password}));
        assert_eq!(reply["header"]["status"], "ok", "{reply}");
        raw
    }

    fn send(&mut self, value: &Value) {
        self.send_all(std::slice::from_ref(value));
    }

    /// Several frames in one write (so the server reads them together).
    fn send_all(&mut self, values: &[Value]) {
        let mut bytes = Vec::new();
        for value in values {
            let body = value.to_string();
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(body.as_bytes());
        }
        self.0.write_all(&bytes).unwrap();
    }

    fn message(&mut self, id: &str, kind: &str, data: Value) {
        self.send(
            &json!({"header":{"scope":"client","id":id},"payload":{"type":kind,"data":data}}),
        );
    }

    /// The next frame's body as text; `None` on EOF.
    fn recv(&mut self) -> Option<String> {
        let mut len = [0u8; 4];
        match self.0.read(&mut len[..1]) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read: {e}"),
        }
        self.0.read_exact(&mut len[1..]).unwrap();
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        self.0.read_exact(&mut body).unwrap();
        Some(String::from_utf8(body).unwrap())
    }
}

#[test]
fn bester_send_at_the_greeter_ends_up_at_the_session_server_with_the_token_only() {
    let p = pair();
    let data = redirect_at("greeter-a", json!({"url": url(&p.b), "token": "mint"}));
    let uri = format!("bester://alice:alice-pw@{}", p.a.addr);
    let (code, stdout, stderr) = bester(&["send", &uri, "greet", &data.to_string()]);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (
            Some(0),
            "{\"header\":{\"status\":\"ok\",\"kind\":\"reply\",\"id\":\"1\",\"type\":\"greet\"},\"data\":{\"server\":\"session-b\",\"from\":{\"user\":\"alice\",\"server\":\"session-b\"}}}\n",
            ""
        )
    );
    // The session server took a resume token and never saw a password.
    let log = p.b.log();
    assert!(
        log.contains("user=alice logged in from") && log.contains("by resume token"),
        "{log}"
    );
    assert_eq!(log.matches("logged in from").count(), 1, "{log}");
    assert_eq!(password_checks(&p.b), 0);
    assert_eq!(password_checks(&p.a), 1);
    assert!(
        p.a.log().contains("user=alice redirected to bester://"),
        "{}",
        p.a.log()
    );
    assert!(!p.a.log().contains("v1."), "the minted token is not logged");
}

#[test]
fn the_redirect_frame_is_byte_exact_and_the_connection_closes_after_it() {
    let p = pair();
    let vector: Value =
        serde_json::from_str(include_str!("../protocol/vectors/redirect.json")).unwrap();
    let frames = vector["frames"].as_array().unwrap();
    let answer: Value = serde_json::from_str(frames[2]["json"].as_str().unwrap()).unwrap();
    // The vector's redirect, as the handler answers it.
    let command_data = answer["header"]["commandData"].clone();
    let mut raw = Raw::password(p.a.addr, "alice", "alice-pw");
    raw.message("1", "greet", redirect_at("greeter-a", command_data));
    assert_eq!(raw.recv().as_deref(), frames[3]["json"].as_str());
    assert_eq!(raw.recv(), None, "closed after the redirect");

    // A minted token, at the end of a sendHandler chain (front -> greet), logs in at the target.
    let mut raw = Raw::password(p.a.addr, "bob", "bob-pw");
    let mut data = redirect_at("greeter-a", json!({"url": url(&p.b), "token": "mint"}));
    data["via"] = json!("greet");
    raw.message("chain-1", "front", data);
    let frame = raw.recv().unwrap();
    let prefix = format!(
        "{{\"header\":{{\"status\":\"ok\",\"kind\":\"redirect\",\"id\":\"chain-1\"}},\"data\":{{\"url\":\"{}\",\"token\":\"v1.",
        url(&p.b)
    );
    assert!(frame.starts_with(&prefix), "{frame}");
    assert_eq!(raw.recv(), None, "closed after the redirect");
    let token = serde_json::from_str::<Value>(&frame).unwrap()["data"]["token"].clone();
    let (mut there, reply) = Raw::login(p.b.addr, json!({ "token": token }));
    assert_eq!(reply["data"]["user"], "bob", "{reply}");
    assert_eq!(reply["data"]["server"], "session-b", "{reply}");
    there.message("2", "greet", Value::Null);
    assert_eq!(
        there.recv().unwrap(),
        r#"{"header":{"status":"ok","kind":"reply","id":"2","type":"greet"},"data":{"server":"session-b","from":{"user":"bob","server":"session-b"}}}"#
    );
}

#[test]
fn requests_in_flight_are_answered_redirected_before_the_redirect() {
    let p = pair();
    let mut raw = Raw::password(p.a.addr, "alice", "alice-pw");
    // Answered before the redirect: its answer goes out first.
    raw.message("done", "greet", Value::Null);
    assert!(raw.recv().unwrap().contains("\"id\":\"done\""));
    raw.message("slow-1", "greet", json!({"hang": true}));
    raw.message("slow-2", "front", json!({"hang": true}));
    raw.message(
        "go",
        "greet",
        redirect_at("greeter-a", json!({"url": "bester://s1.example:2222"})),
    );
    let redirected = |id: &str, kind: &str| {
        format!(
            r#"{{"header":{{"status":"error","kind":"reply","id":"{id}"}},"data":{{"error":"the client was redirected before the \"{kind}\" handler answered this request","code":"redirected"}}}}"#
        )
    };
    assert_eq!(raw.recv().unwrap(), redirected("slow-1", "greet"));
    assert_eq!(raw.recv().unwrap(), redirected("slow-2", "front"));
    assert_eq!(
        raw.recv().unwrap(),
        r#"{"header":{"status":"ok","kind":"redirect","id":"go"},"data":{"url":"bester://s1.example:2222"}}"#
    );
    assert_eq!(raw.recv(), None, "closed after the redirect");
    // The greeter keeps serving.
    let mut other = Raw::password(p.a.addr, "bob", "bob-pw");
    other.message("x", "greet", Value::Null);
    assert!(other.recv().unwrap().contains("\"id\":\"x\""));
}

#[test]
fn a_built_in_still_running_is_answered_before_the_redirect() {
    let p = pair();
    let mut raw = Raw::password(p.a.addr, "alice", "alice-pw");
    // The greeter answers at once; bester.passwd runs argon2 on a verifier thread meanwhile.
    let message = |id: &str, kind: &str, data: Value| json!({"header":{"scope":"client","id":id},"payload":{"type":kind,"data":data}});
    raw.send_all(&[
        message(
            "go",
            "greet",
            redirect_at("greeter-a", json!({"url": url(&p.b)})),
        ),
        message(
            "pw",
            "bester.passwd",
            json!({"old": "alice-pw", "new": "alice-pw-2"}),
        ),
    ]);
    let passwd: Value = serde_json::from_str(&raw.recv().unwrap()).unwrap();
    assert_eq!(
        (&passwd["header"]["id"], &passwd["header"]["status"]),
        (&json!("pw"), &json!("ok")),
        "{passwd}"
    );
    assert_eq!(
        raw.recv().unwrap(),
        format!(
            r#"{{"header":{{"status":"ok","kind":"redirect","id":"go"}},"data":{{"url":"{}"}}}}"#,
            url(&p.b)
        )
    );
    assert_eq!(raw.recv(), None, "closed after the redirect");
}

#[test]
fn a_redirect_loop_stops_after_three_hops() {
    let p = pair();
    // A sends to B, B back to A, and so on; each hop logs in with a token B or A minted.
    let data = json!({"redirect": {
        "greeter-a": {"url": url(&p.b), "token": "mint"},
        "session-b": {"url": url(&p.a), "token": "mint"},
    }});
    let uri = format!("bester://alice:alice-pw@{}", p.a.addr);
    let (code, stdout, stderr) = bester(&["send", &uri, "greet", &data.to_string()]);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (Some(1), "", "bester: redirected more than 3 times\n")
    );
    // Three hops: B, A, B; one password check, at the first server only.
    assert_eq!(p.b.log().matches("by resume token").count(), 2);
    assert_eq!(p.a.log().matches("by resume token").count(), 1);
    assert_eq!(password_checks(&p.a), 1);
    assert_eq!(password_checks(&p.b), 0);
}

#[test]
fn a_redirect_without_a_token_is_not_followed() {
    let p = pair();
    let data = redirect_at("greeter-a", json!({"url": url(&p.b)}));
    let uri = format!("bester://alice:alice-pw@{}", p.a.addr);
    let (code, stdout, stderr) = bester(&["send", &uri, "greet", &data.to_string()]);
    assert_eq!(
        (code, stdout.as_str(), stderr),
        (
            Some(1),
            "",
            format!("bester: redirected to {} without a token\n", url(&p.b))
        )
    );
    assert!(
        !p.b.log().contains("logged in"),
        "nothing was sent to the target: {}",
        p.b.log()
    );
}

#[test]
fn commanddata_the_broker_refuses_is_bad_handler_reply_with_why() {
    let p = pair();
    let mut raw = Raw::password(p.a.addr, "alice", "alice-pw");
    let long_url = format!("bester://{}:1", "h".repeat(600));
    let cases = [
        (
            json!({"url": "https://evil.example/"}),
            "a redirect url must be a bester://, bester+tls://, bester+ws:// or bester+wss:// URI"
                .to_string(),
        ),
        (
            json!({"url": long_url}),
            "a redirect url is at most 512 bytes (this one is 611)".to_string(),
        ),
        (
            json!({"url": "bester://alice:alice-pw@elsewhere:2222", "token": "mint"}),
            "a redirect url names no user: the client logs in there with the token".to_string(),
        ),
        (
            json!({"url": url(&p.b), "token": "t".repeat(8193)}),
            "a redirect token is 1 to 8192 bytes (this one is 8193)".to_string(),
        ),
        (
            json!({"url": url(&p.b), "token": 7}),
            "header.commandData: invalid type: integer `7`, expected a string".to_string(),
        ),
    ];
    for (n, (command_data, why)) in cases.into_iter().enumerate() {
        let id = format!("bad-{n}");
        raw.message(
            &id,
            "greet",
            redirect_at("greeter-a", json!({ "raw": command_data })),
        );
        let expected = json!({"header":{"status":"error","kind":"reply","id":id},
            "data":{"error": format!("the \"greet\" handler sent a malformed answer: {why}"),
                    "code":"bad_handler_reply"}});
        assert_eq!(
            serde_json::from_str::<Value>(&raw.recv().unwrap()).unwrap(),
            expected
        );
    }
    // The connection stays open and the handler keeps serving.
    raw.message("after", "greet", Value::Null);
    assert!(raw.recv().unwrap().contains("\"id\":\"after\""));
}

#[test]
fn a_redirect_url_naming_a_user_is_refused_by_bester() {
    // Only `bester` can see these (the broker refuses a user in the URL itself): a fake server
    // that answers the login with a redirect, as a server may.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = |listener: std::net::TcpListener, frame: String| {
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut raw = Raw(stream);
            raw.0.set_read_timeout(Some(DEADLINE)).unwrap();
            let identify = raw.recv().unwrap();
            let body = frame.into_bytes();
            let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
            bytes.extend_from_slice(&body);
            raw.0.write_all(&bytes).unwrap();
            identify
        })
    };
    let frame = r#"{"header":{"status":"ok","kind":"redirect"},"data":{"url":"bester://mallory:pw@127.0.0.1:1","token":"t"}}"#;
    let server = serve(listener, frame.to_string());
    let uri = format!("bester://alice:alice-pw@{addr}");
    let (code, stdout, stderr) = bester(&["send", &uri, "greet"]);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (
            Some(1),
            "",
            "bester: redirected to \"bester://mallory:pw@127.0.0.1:1\", which is not a bester:// URL without a user\n"
        )
    );
    assert!(server.join().unwrap().contains("alice-pw"));
}

#[test]
fn bester_listen_follows_a_redirect_of_its_login() {
    let p = pair();
    // A resume token of alice's, from the greeter (the two share the key and the store).
    let (_, login) = Raw::login(
        p.a.addr,
        json!({"username": "alice", "password": "alice-pw"}),
    );
    let token = login["data"]["resume"].as_str().unwrap().to_string();
    // A server that answers the login itself with a redirect to the session broker.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake = listener.local_addr().unwrap();
    let frame = json!({"header":{"status":"ok","kind":"redirect"},
        "data":{"url": url(&p.b), "token": token}})
    .to_string();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut raw = Raw(stream);
        raw.0.set_read_timeout(Some(DEADLINE)).unwrap();
        let identify = raw.recv().unwrap();
        let mut bytes = (frame.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(frame.as_bytes());
        raw.0.write_all(&bytes).unwrap();
        identify
    });
    let uri = format!("bester://alice:alice-pw@{fake}");
    let child = Command::new(BESTER)
        .args(["listen", "--count", "1", &uri])
        .env_remove("BESTER_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    server.join().unwrap();
    common::eventually("alice to log in at the session broker", || {
        p.b.log().contains("by resume token").then_some(())
    });
    let mut bob = Raw::password(p.b.addr, "bob", "bob-pw");
    bob.message("1", "greet", json!({"to": ["alice"], "text": "hi"}));
    assert!(bob.recv().unwrap().contains("\"delivered\":[\"alice\"]"));
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned()
        ),
        (
            Some(0),
            "{\"header\":{\"status\":\"ok\",\"kind\":\"push\",\"type\":\"greet\",\"from\":{\"user\":\"bob\",\"server\":\"session-b\"}},\"data\":{\"to\":[\"alice\"],\"text\":\"hi\"}}\n".to_string(),
            "bester: listening (Ctrl-C to stop)\n".to_string()
        )
    );
    assert_eq!(p.b.log().matches("user=alice logged in").count(), 1);
}

#[test]
fn tls_trust_covers_every_hop_and_no_redirect_leaves_tls() {
    let pki_dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_pki(pki_dir.path());
    let listeners = format!(
        "[[listeners]]\nname = \"tls\"\nkind = \"tls\"\naddress = \"127.0.0.1:0\"\ncert = {c:?}\nkey = {k:?}\n\
         [[listeners]]\nname = \"wss\"\nkind = \"wss\"\naddress = \"127.0.0.1:0\"\ncert = {c:?}\nkey = {k:?}\n",
        c = cert.display().to_string(),
        k = key.display().to_string(),
    );
    let p = pair_with(&listeners);
    let ca = ca.display().to_string();
    let uri = format!("bester+tls://alice:alice-pw@{}", p.a.listener("tls"));
    // From TLS to WebSocket over TLS: the test CA (--ca) verifies the second server too.
    let wss = format!("bester+wss://{}", p.b.listener("wss"));
    let data = redirect_at("greeter-a", json!({"url": wss, "token": "mint"}));
    let (code, stdout, stderr) = bester(&["send", "--ca", &ca, &uri, "greet", &data.to_string()]);
    assert_eq!((code, stderr.as_str()), (Some(0), ""), "{stdout}");
    assert!(stdout.contains("\"server\":\"session-b\""), "{stdout}");
    // Without --ca the first server is refused already: the system CAs do not know the test CA.
    let (code, _, stderr) = bester(&["send", &uri, "greet", &data.to_string()]);
    assert_eq!(code, Some(1), "{stderr}");
    // From TLS to clear text: the token is not sent.
    let logins = p.b.log().matches("logged in from").count();
    let data = redirect_at("greeter-a", json!({"url": url(&p.b), "token": "mint"}));
    let (code, stdout, stderr) = bester(&["send", "--ca", &ca, &uri, "greet", &data.to_string()]);
    assert_eq!(
        (code, stdout.as_str(), stderr),
        (
            Some(1),
            "",
            format!(
                "bester: redirected from TLS to {}: not sending the token unencrypted\n",
                url(&p.b)
            )
        )
    );
    assert_eq!(p.b.log().matches("logged in from").count(), logins);
}
