//! Logins by ed25519 public key against the real binary: identify names the user and key, the
//! server answers a challenge, the client signs `"besterd-login-v1" 0 server 0 user 0 nonce`.
//! A key made and signed by Python's `cryptography` logs in; so do `bester keygen` + `bester send
//! --key`. Every refusal (wrong key, another user's key, another server's name, a replayed
//! signature, garbage, an unknown user) is exactly a wrong password's refusal, after a challenge
//! like any other; a late signature meets the identify timeout; any other frame while the
//! challenge is pending ends the connection; removing a key revokes the sessions it opened.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use besterd::client::Client;
use common::{Broker, besterd_cmd, code, repo};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};

const BESTER: &str = env!("CARGO_BIN_EXE_bester");

/// A deterministic test key (never a real one).
fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn public(key: &SigningKey) -> String {
    STANDARD.encode(key.verifying_key().as_bytes())
}

/// The signature the protocol asks for, made here (independently of the server's code).
fn sign(key: &SigningKey, server: &str, user: &str, nonce: &str) -> String {
    let mut message = b"besterd-login-v1\0".to_vec();
    message.extend_from_slice(server.as_bytes());
    message.push(0);
    message.extend_from_slice(user.as_bytes());
    message.push(0);
    message.extend_from_slice(nonce.as_bytes());
    STANDARD.encode(key.sign(&message).to_bytes())
}

/// `besterd user ARGS` on the broker's store; (success, stdout, stderr).
fn user_cmd(broker: &Broker, args: &[&str]) -> (bool, String, String) {
    let users = broker.users();
    let mut all = vec!["user", "--users", users.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = besterd_cmd(&all, None);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Give `user` the key (written as one line of base64).
fn add_key(broker: &Broker, user: &str, key: &SigningKey) {
    let name: String = key.verifying_key().as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let file = broker.dir.path().join(format!("{user}-{name}.pub"));
    std::fs::write(&file, public(key) + "\n").unwrap();
    let (ok, _, err) = user_cmd(broker, &["add-key", user, file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(
        err,
        format!("public key {} added to user {user}\n", public(key))
    );
}

/// Identify as `user` naming `public_key`; the server's challenge, checked to the byte, gives
/// the nonce.
fn challenge(broker: &Broker, user: &str, public_key: &str) -> (Client, String) {
    let mut client = broker.connect();
    client
        .send(&json!({"header":{"identify":{"type":"client","authentication":{"username":user,"publicKey":public_key}}}}))
        .unwrap();
    let frame = client.recv().unwrap().expect("a challenge");
    let nonce = frame["data"]["nonce"]
        .as_str()
        .expect("a nonce")
        .to_string();
    assert_eq!(
        frame,
        json!({"header":{"status":"ok","kind":"challenge"},"data":{"nonce":nonce,"server":"test"}})
    );
    assert_eq!(nonce.len(), 43, "32 random bytes, base64url");
    (client, nonce)
}

/// Send the signature; the server's answer.
fn answer(client: &mut Client, signature: &str) -> Value {
    client
        .send(&json!({"header":{"signature":signature}}))
        .unwrap();
    client.recv().unwrap().expect("an answer")
}

/// Log in as `user` with `key` (signing for the test broker's name, "test").
fn key_login(broker: &Broker, user: &str, key: &SigningKey) -> Client {
    let (mut client, nonce) = challenge(broker, user, &public(key));
    let reply = answer(&mut client, &sign(key, "test", user, &nonce));
    assert_eq!(
        without_resume(reply),
        json!({"header":{"status":"ok","kind":"reply"},"data":{"user":user,"server":"test"}})
    );
    client
}

/// A login reply without its resume token (every login gets one: tests/token_login.rs).
fn without_resume(mut reply: Value) -> Value {
    if let Some(data) = reply["data"].as_object_mut() {
        let resume = data.remove("resume");
        assert!(
            resume
                .as_ref()
                .and_then(Value::as_str)
                .is_some_and(|r| r.starts_with("v1.")),
            "a login reply carries data.resume: {reply}"
        );
        data.remove("resume_expires");
    }
    reply
}

/// What an unknown user's password login is told, exactly.
fn unknown_user_error(broker: &Broker) -> Value {
    let mut client = broker.connect();
    client
        .send(&json!({"header":{"identify":{"type":"client","authentication":{"username":"nobody","password":"x"}}}}))
        .unwrap();
    let frame = client.recv().unwrap().unwrap();
    assert_eq!(
        frame,
        json!({"header":{"status":"error","kind":"reply"},"data":{"error":"invalid username or password","code":"auth_failed"}})
    );
    frame
}

/// The signature is refused exactly as a wrong password is, and the connection closed.
fn refused(broker: &Broker, mut client: Client, signature: &str, what: &str) {
    let reply = answer(&mut client, signature);
    assert_eq!(reply, unknown_user_error(broker), "{what}");
    assert_eq!(client.recv().unwrap(), None, "{what}: closed after");
}

fn whoami(client: &mut Client) -> Value {
    client.request("w", "bester.whoami", &Value::Null).unwrap()
}

#[test]
fn a_key_made_and_signed_by_python_logs_in() {
    let broker = Broker::start("");
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh",
        python.display()
    );
    let script = repo().join("tests/tools/ed25519_login.py");
    let private = broker.dir.path().join("py.key");
    let public = broker.dir.path().join("py.pub");
    let out = Command::new(&python)
        .arg(&script)
        .args([
            "keygen",
            private.to_str().unwrap(),
            public.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        std::fs::read_to_string(&public)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let (ok, _, err) = user_cmd(&broker, &["add-key", "alice", public.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (_, listed, _) = user_cmd(&broker, &["keys", "alice"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    let login = |server: &str| -> Vec<Value> {
        let out = Command::new(&python)
            .arg(&script)
            .args([
                "login",
                "127.0.0.1",
                &broker.addr.port().to_string(),
                server,
                "alice",
            ])
            .arg(&private)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let frames = login("test");
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert_eq!(frames[0]["header"]["kind"], "challenge");
    assert_eq!(
        without_resume(frames[1].clone()),
        json!({"header":{"status":"ok","kind":"reply"},"data":{"user":"alice","server":"test"}})
    );
    assert_eq!(frames[2]["data"]["user"], "alice", "{}", frames[2]);
    // The same key signing for another server's name is worth nothing here.
    let frames = login("elsewhere");
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[1], unknown_user_error(&broker));
}

#[test]
fn every_refusal_is_a_wrong_passwords_after_a_challenge_like_any_other() {
    // More failures than the default limits allow in a minute.
    let broker = Broker::start("login_failures_per_ip = 1000\nlogin_failures_per_user = 1000");
    let (alice, bob, stranger) = (key(1), key(2), key(3));
    add_key(&broker, "alice", &alice);
    add_key(&broker, "bob", &bob);

    // Each case: who logs in, whose public key is named, who signs, and the server and user
    // the signature covers.
    let cases: [(&str, &SigningKey, &SigningKey, &str, &str, &str); 8] = [
        ("alice", &alice, &stranger, "test", "alice", "wrong key"),
        (
            "alice",
            &stranger,
            &stranger,
            "test",
            "alice",
            "unregistered key",
        ),
        ("alice", &bob, &bob, "test", "alice", "another user's key"),
        (
            "alice",
            &bob,
            &bob,
            "test",
            "bob",
            "signed for another user",
        ),
        ("alice", &alice, &alice, "other", "alice", "another server"),
        // A user who does not exist gets a challenge all the same, then the same refusal.
        ("nobody", &alice, &alice, "test", "nobody", "unknown user"),
        (
            "carol",
            &alice,
            &alice,
            "test",
            "carol",
            "user without keys",
        ),
        ("alice", &alice, &alice, "test", "", "signed for no user"),
    ];
    for (user, named, signer, server, signed_user, what) in cases {
        let (client, nonce) = challenge(&broker, user, &public(named));
        refused(
            &broker,
            client,
            &sign(signer, server, signed_user, &nonce),
            what,
        );
    }
    // A good signature, replayed on a new connection (which has a new nonce).
    let (mut first, nonce) = challenge(&broker, "alice", &public(&alice));
    let good = sign(&alice, "test", "alice", &nonce);
    assert_eq!(answer(&mut first, &good)["header"]["status"], "ok");
    let (client, second_nonce) = challenge(&broker, "alice", &public(&alice));
    assert_ne!(second_nonce, nonce);
    refused(&broker, client, &good, "replayed");
    // Garbage, and well-formed base64 that is no signature.
    for garbage in [
        "!!",
        "",
        &STANDARD.encode([0u8; 64]),
        &STANDARD.encode([1u8; 63]),
    ] {
        let (client, _) = challenge(&broker, "alice", &public(&alice));
        refused(&broker, client, garbage, garbage);
    }
    // Alice still logs in.
    let mut session = key_login(&broker, "alice", &alice);
    assert_eq!(whoami(&mut session)["data"]["user"], "alice");
}

#[test]
fn a_signature_after_the_identify_timeout_is_too_late() {
    let broker = Broker::start("identify_timeout_ms = 300");
    let alice = key(1);
    add_key(&broker, "alice", &alice);
    let (mut client, nonce) = challenge(&broker, "alice", &public(&alice));
    // No sleep: the server's own timer speaks first.
    let frame = client.recv().unwrap().expect("the timeout");
    assert_eq!(
        frame,
        json!({"header":{"status":"error","kind":"reply"},"data":{"error":"no signature for the challenge within 300 ms","code":"identify_timeout"}})
    );
    let _ = client.send(&json!({"header":{"signature":sign(&alice, "test", "alice", &nonce)}}));
    assert!(matches!(client.recv(), Ok(None) | Err(_)), "closed");
}

#[test]
fn anything_but_a_signature_while_a_challenge_is_pending_ends_the_connection() {
    let broker = Broker::start("");
    let alice = key(1);
    add_key(&broker, "alice", &alice);
    let (mut client, _) = challenge(&broker, "alice", &public(&alice));
    client.message("m1", "echo", &json!("hi")).unwrap();
    let frame = client.recv().unwrap().unwrap();
    assert_eq!(code(&frame), "invalid_message", "{frame}");
    assert_eq!(frame["header"]["id"], "m1", "{frame}");
    assert_eq!(
        frame["data"]["error"],
        "a challenge is pending: the next frame must be {\"header\":{\"signature\":\"<base64>\"}} \
         (header: unknown field `scope`, expected `signature`)"
    );
    assert_eq!(client.recv().unwrap(), None, "closed");
    // A public key that is not one is refused at identify.
    let mut client = broker.connect();
    client
        .send(&json!({"header":{"identify":{"type":"client","authentication":{"username":"alice","publicKey":STANDARD.encode([1u8; 31])}}}}))
        .unwrap();
    let frame = client.recv().unwrap().unwrap();
    assert_eq!(
        frame["data"],
        json!({"error":"header.identify.authentication.publicKey: an ed25519 public key is 32 bytes","code":"invalid_message"})
    );
    // Both a password and a key.
    let mut client = broker.connect();
    client
        .send(&json!({"header":{"identify":{"type":"client","authentication":{"username":"alice","password":"alice-pw","publicKey":public(&alice)}}}}))
        .unwrap();
    let frame = client.recv().unwrap().unwrap();
    assert_eq!(
        frame["data"],
        json!({"error":"header.identify.authentication: give either `password` or `publicKey`, not both","code":"invalid_message"})
    );
}

#[test]
fn key_logins_count_against_the_login_rate_limits() {
    let broker = Broker::start("login_failures_per_user = 2");
    let alice = key(1);
    add_key(&broker, "alice", &alice);
    for _ in 0..2 {
        let (client, nonce) = challenge(&broker, "alice", &public(&alice));
        refused(
            &broker,
            client,
            &sign(&key(9), "test", "alice", &nonce),
            "bad",
        );
    }
    // The third attempt is refused before any challenge, and so is alice's password.
    for authentication in [
        json!({"username":"alice","publicKey":public(&alice)}),
        json!({"username":"alice","password":"alice-pw"}),
    ] {
        let mut client = broker.connect();
        client
            .send(&json!({"header":{"identify":{"type":"client","authentication":authentication}}}))
            .unwrap();
        let frame = client.recv().unwrap().unwrap();
        assert_eq!(code(&frame), "rate_limited", "{frame}");
    }
}

#[test]
fn removing_a_key_revokes_the_sessions_it_opened_and_no_other() {
    let broker = Broker::start("");
    let (first, second) = (key(1), key(2));
    add_key(&broker, "alice", &first);
    add_key(&broker, "alice", &second);
    let (_, listed, _) = user_cmd(&broker, &["keys", "alice"]);
    assert_eq!(listed, format!("{}\n{}\n", public(&first), public(&second)));
    let mut by_first = key_login(&broker, "alice", &first);
    let mut by_second = key_login(&broker, "alice", &second);
    let mut by_password = broker.login("alice", "alice-pw");

    let (ok, _, err) = user_cmd(&broker, &["del-key", "alice", &public(&first)]);
    assert!(ok, "{err}");
    assert_eq!(
        err,
        format!("public key {} removed from user alice\n", public(&first))
    );
    let frame = by_first.recv().unwrap().expect("the revocation");
    assert_eq!(
        frame,
        json!({"header":{"status":"error","kind":"reply"},"data":{"error":"session revoked: the key it logged in with was removed; log in again","code":"session_revoked"}})
    );
    assert_eq!(by_first.recv().unwrap(), None, "closed");
    assert_eq!(whoami(&mut by_second)["data"]["user"], "alice");
    assert_eq!(whoami(&mut by_password)["data"]["user"], "alice");
    // The removed key no longer logs in; removing it again is an error.
    let (client, nonce) = challenge(&broker, "alice", &public(&first));
    refused(
        &broker,
        client,
        &sign(&first, "test", "alice", &nonce),
        "removed key",
    );
    let (ok, _, err) = user_cmd(&broker, &["del-key", "alice", &public(&first)]);
    assert!(!ok);
    assert_eq!(
        err,
        format!("besterd: user \"alice\": has no key {}\n", public(&first))
    );
    // Deleting the user revokes the key session too.
    let (ok, _, err) = user_cmd(&broker, &["del", "alice"]);
    assert!(ok, "{err}");
    let frame = by_second.recv().unwrap().expect("the revocation");
    assert_eq!(
        frame["data"]["error"],
        "session revoked: the user was deleted; log in again"
    );
}

/// `bester ARGS`; (exit code, stdout, stderr).
fn bester(args: &[&str]) -> (Option<i32>, String, String) {
    let out: Output = Command::new(BESTER)
        .args(args)
        .env_remove("BESTER_PASSWORD")
        .env_remove("BESTER_SERVER_NAME")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn bester_keygen_and_send_with_the_key_log_in() {
    let broker = Broker::start("");
    let file: PathBuf = broker.dir.path().join("robot.key");
    let pub_file = broker.dir.path().join("robot.key.pub");
    let (status, printed, err) = bester(&["keygen", file.to_str().unwrap()]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(mode(&file), 0o600);
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    assert!(
        std::fs::read_to_string(&pub_file)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let printed = printed.trim().to_string();
    assert_eq!(STANDARD.decode(&printed).unwrap().len(), 32, "{printed}");
    // A missing directory for the key is made, private to its owner (as ssh-keygen makes ~/.ssh).
    let nested = broker.dir.path().join("home/.bester/id");
    let (status, _, err) = bester(&["keygen", nested.to_str().unwrap()]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(mode(nested.parent().unwrap()), 0o700);
    assert_eq!(mode(&nested), 0o600);

    // keygen never writes over a file (neither the key nor its .pub).
    let before = std::fs::read(&file).unwrap();
    let (status, _, err) = bester(&["keygen", file.to_str().unwrap()]);
    assert_eq!(status, Some(1));
    assert!(
        err.starts_with(&format!("bester: cannot create {}: ", pub_file.display())),
        "{err}"
    );
    std::fs::remove_file(&pub_file).unwrap();
    let (status, _, err) = bester(&["keygen", file.to_str().unwrap()]);
    assert_eq!(status, Some(1));
    assert!(
        err.starts_with(&format!("bester: cannot create {}: ", file.display())),
        "{err}"
    );
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert!(!pub_file.exists(), "nothing half-written");
    let (status, printed_again, _) =
        bester(&["keygen", broker.dir.path().join("k2").to_str().unwrap()]);
    assert_eq!(status, Some(0));
    let second_pub = broker.dir.path().join("k2.pub");
    assert_ne!(printed_again.trim(), printed);

    // A user with no password, only this key (from the first pair's public half, as base64).
    let b64_file = broker.dir.path().join("robot.b64");
    std::fs::write(&b64_file, format!("{printed}\n")).unwrap();
    let (ok, _, err) = user_cmd(
        &broker,
        &[
            "add",
            "robot",
            "--no-password",
            "--public-key",
            b64_file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        err,
        format!("public key {printed} added\nuser robot added\n")
    );
    let (_, listed, _) = user_cmd(&broker, &["keys", "robot"]);
    assert_eq!(listed, format!("{printed}\n"));

    let uri = format!("bester://robot@127.0.0.1:{}", broker.addr.port());
    let key = file.to_str().unwrap();
    let (status, out, err) = bester(&[
        "send",
        "--key",
        key,
        "--server-name",
        "test",
        &uri,
        "echo",
        "\"hi\"",
    ]);
    assert_eq!(status, Some(0), "{err}");
    let reply: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(reply["data"], "hi", "{reply}");
    // Without --server-name, bester signs for the server the challenge names.
    let (status, out, err) = bester(&["send", "--key", key, &uri, "echo", "1"]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).unwrap()["data"],
        1
    );
    // With it, a challenge naming another server is not signed at all.
    let (status, out, err) = bester(&[
        "send",
        "--key",
        key,
        "--server-name",
        "besterd",
        &uri,
        "echo",
        "1",
    ]);
    assert_eq!(status, Some(1));
    assert_eq!(out, "");
    assert_eq!(
        err,
        "bester: the server says it is \"test\", not \"besterd\" (--server-name): not signing\n"
    );
    // The other pair is not robot's.
    let other = broker.dir.path().join("k2");
    let (status, _, _) = bester(&[
        "send",
        "--key",
        other.to_str().unwrap(),
        "--server-name",
        "test",
        &uri,
        "echo",
        "1",
    ]);
    assert_eq!(status, Some(1));
    // Once added, it is.
    let (ok, _, err) = user_cmd(&broker, &["add-key", "robot", second_pub.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (status, _, err) = bester(&[
        "send",
        "--key",
        other.to_str().unwrap(),
        "--server-name",
        "test",
        &uri,
        "echo",
        "1",
    ]);
    assert_eq!(status, Some(0), "{err}");
    // A private key others can read is refused before connecting, as ssh does.
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, _, err) = bester(&[
        "send",
        "--key",
        other.to_str().unwrap(),
        "--server-name",
        "test",
        &uri,
        "echo",
        "1",
    ]);
    assert_eq!(status, Some(64));
    assert_eq!(
        err,
        format!(
            "bester: the private key {} can be read by others (mode 0644): chmod 600 it\n",
            other.display()
        )
    );
    // robot has no password: a password login fails.
    let mut client = broker.connect();
    client
        .send(&json!({"header":{"identify":{"type":"client","authentication":{"username":"robot","password":""}}}}))
        .unwrap();
    assert_eq!(client.recv().unwrap().unwrap(), unknown_user_error(&broker));
}

#[test]
fn a_user_has_at_most_sixteen_keys() {
    let broker = Broker::start("");
    for n in 1..=16 {
        add_key(&broker, "bob", &key(n));
    }
    let file = broker.dir.path().join("17.pub");
    std::fs::write(&file, public(&key(17))).unwrap();
    let (ok, _, err) = user_cmd(&broker, &["add-key", "bob", file.to_str().unwrap()]);
    assert!(!ok);
    assert_eq!(
        err,
        "besterd: user \"bob\": already has 16 keys, the most a user may have\n"
    );
    let (ok, _, err) = user_cmd(
        &broker,
        &["add-key", "bob", broker.users().to_str().unwrap()],
    );
    assert!(!ok);
    assert!(err.contains("a public key must be base64"), "{err}");
}

#[test]
fn bester_listen_logs_in_with_a_key() {
    use std::io::BufRead;
    let broker = Broker::start("");
    let file = broker.dir.path().join("bob.key");
    let (status, _, err) = bester(&["keygen", file.to_str().unwrap()]);
    assert_eq!(status, Some(0), "{err}");
    let pub_file = broker.dir.path().join("bob.key.pub");
    let (ok, _, err) = user_cmd(&broker, &["add-key", "bob", pub_file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let uri = format!("bester://bob@127.0.0.1:{}", broker.addr.port());
    let key = file.to_str().unwrap();
    let join = json!({"action":"join","room":"r"}).to_string();
    let (status, _, err) = bester(&[
        "send",
        "--key",
        key,
        "--server-name",
        "test",
        &uri,
        "chat",
        &join,
    ]);
    assert_eq!(status, Some(0), "{err}");
    let mut child = Command::new(BESTER)
        .args([
            "listen",
            "--count",
            "1",
            "--key",
            key,
            "--server-name",
            "test",
            &uri,
        ])
        .env_remove("BESTER_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Logged in once it says so (it logs in before printing this line).
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert_eq!(line, "bester: listening (Ctrl-C to stop)\n");
    let mut alice = broker.login("alice", "alice-pw");
    alice
        .request("j", "chat", &json!({"action":"join","room":"r"}))
        .unwrap();
    alice
        .request(
            "s",
            "chat",
            &json!({"action":"say","room":"r","text":"hi bob"}),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let push: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(push["data"]["text"], "hi bob", "{push}");
}
