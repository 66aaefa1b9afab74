//! Token logins against the real daemon: JWTs signed by PyJWT and cryptography (never by
//! besterd's own code) with each algorithm, every refusal with its exact code and text, session
//! expiry and `bester.refresh`, resume tokens across a restart and after the user's entry
//! changes, logout and expiry, JWKS re-read on SIGHUP, and `bester send --token`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use besterd::client::Client;
use common::{Broker, DEADLINE, besterd_cmd, code, eventually, handler, signal};
use serde_json::{Value, json};

/// Keys made for one test: Ed25519, P-256 and RSA pairs, an HS256 secret and a token key.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        tool(&["keygen", dir.path().to_str().unwrap()]);
        std::fs::write(
            dir.path().join("hs.secret"),
            format!("{}\n", "h".repeat(40)),
        )
        .unwrap();
        let mut random = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut random)
            .unwrap();
        let key: String = random.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(dir.path().join("token.key"), key).unwrap();
        Keys { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A token signed with `key` (a file of this set) by `alg`, claims as given.
    fn mint(&self, alg: &str, key: &str, headers: Value, claims: Value) -> String {
        let spec = json!({"alg": alg, "key": self.path(key), "headers": headers, "claims": claims});
        tool(&["mint", &spec.to_string()])
    }

    /// `[auth]` and `[auth.jwt]` with every key of this set (kid = file stem).
    fn auth(&self, extra_jwt: &str, extra_auth: &str) -> String {
        format!(
            "[auth]\ntoken_secret_file = {:?}\n{extra_auth}\n[auth.jwt]\nhmac_secret_file = {:?}\npublic_keys = [{:?}, {:?}, {:?}]\nissuer = \"issuer\"\naudience = \"app\"\n{extra_jwt}\n",
            self.path("token.key"),
            self.path("hs.secret"),
            self.path("ed.pem"),
            self.path("ec.pem"),
            self.path("rsa.pem"),
        )
    }
}

/// Run tests/tools/jwt_tool.py with the project's Python environment; its stdout, trimmed.
fn tool(args: &[&str]) -> String {
    let python = common::repo().join(".venv/bin/python");
    let out = Command::new(python)
        .arg(common::repo().join("tests/tools/jwt_tool.py"))
        .args(args)
        .output()
        .expect("run jwt_tool.py");
    assert!(
        out.status.success(),
        "jwt_tool.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass every check of [`Keys::auth`].
fn claims(sub: &str, exp_in: i64) -> Value {
    json!({"sub": sub, "exp": now() as i64 + exp_in, "iat": now(), "iss": "issuer", "aud": "app"})
}

fn faulty() -> String {
    format!(
        "[handlers.faulty]\n{}\n",
        handler("python3", "tests/handlers/faulty.py")
    )
}

fn broker(server_keys: &str, tables: &str) -> Broker {
    Broker::start_with(
        server_keys,
        &format!("{}{tables}", faulty()),
        &[
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
            ("carol", "carol-pw"),
        ],
    )
}

/// Identify with this `authentication` on a fresh connection: the client and the reply.
fn identify(b: &Broker, authentication: Value) -> (Client, Value) {
    let mut client = b.connect();
    client
        .send(&json!({"header":{"identify":{"type":"client","authentication":authentication}}}))
        .unwrap();
    let reply = client.recv().unwrap().expect("an identify reply");
    (client, reply)
}

/// The refusal a token gets, checking that the connection is closed after it.
fn refused(b: &Broker, authentication: Value) -> (String, String) {
    let (mut client, reply) = identify(b, authentication);
    assert_eq!(reply["header"]["status"], "error", "{reply}");
    assert_eq!(client.recv().unwrap(), None, "closed after the refusal");
    (
        code(&reply).to_string(),
        reply["data"]["error"].as_str().unwrap().to_string(),
    )
}

/// The header a handler received for a request from `client`.
fn header_seen(client: &mut Client) -> Value {
    let reply = client
        .request("h", "faulty", &json!({"action":"header"}))
        .unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    reply["data"]["header"].clone()
}

/// How many argon2 password checks the daemon has run (from `besterd ctl status --json`).
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

#[test]
fn every_algorithm_logs_in_and_info_reaches_the_handler() {
    let keys = Keys::new();
    let b = broker("", &keys.auth("", ""));
    let info = json!({"role": "admin", "tenant": 7});
    let exp = now() + 600;
    for (alg, key, kid) in [
        ("HS256", "hs.secret", None),
        ("EdDSA", "ed.key", Some("ed")),
        ("ES256", "ec.key", Some("ec")),
        ("RS256", "rsa.key", Some("rsa")),
    ] {
        let mut c = claims("alice", 600);
        c["exp"] = json!(exp);
        c["info"] = info.clone();
        let headers = kid.map_or(json!({}), |k| json!({ "kid": k }));
        let token = keys.mint(alg, key, headers, c);
        let (mut client, reply) = identify(&b, json!({ "token": token }));
        assert_eq!(reply["header"]["status"], "ok", "{alg}: {reply}");
        assert_eq!(reply["data"]["user"], "alice", "{alg}");
        assert_eq!(reply["data"]["server"], "test");
        assert_eq!(
            reply["data"]["expires"], exp,
            "{alg}: the session ends with exp"
        );
        assert!(reply["data"]["resume"].as_str().unwrap().starts_with("v1."));
        assert!(reply["data"]["resume_expires"].as_u64().unwrap() <= exp);
        client.set_timeout(Some(DEADLINE)).unwrap();
        let header = header_seen(&mut client);
        assert_eq!(
            header["from"],
            json!({"user": "alice", "server": "test", "info": info}),
            "{alg}"
        );
    }
    // A session without info sends exactly what it sent before: no info key at all.
    let mut plain = b.login("bob", "bob-pw");
    assert_eq!(
        header_seen(&mut plain)["from"],
        json!({"user": "bob", "server": "test"})
    );
}

#[test]
fn every_refusal_has_its_code_and_text_and_closes_the_connection() {
    let keys = Keys::new();
    let b = broker(
        "login_failures_per_ip = 1000\nlogin_failures_per_user = 1000",
        &keys.auth("require_user = true", ""),
    );
    let hs = |c: Value| keys.mint("HS256", "hs.secret", json!({}), c);
    let valid = hs(claims("alice", 600));
    let mut expired = claims("alice", -100);
    expired["iat"] = json!(now() - 200);
    let mut early = claims("alice", 600);
    early["nbf"] = json!(now() + 500);
    let mut audience = claims("alice", 600);
    audience["aud"] = json!("other");
    let mut issuer = claims("alice", 600);
    issuer["iss"] = json!("someone");
    // Tampered: the claims changed to another user, the signature kept.
    let parts: Vec<&str> = valid.split('.').collect();
    let forged_claims = hs(claims("bob", 600));
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        forged_claims.split('.').nth(1).unwrap(),
        parts[2]
    );
    let cases = [
        (hs(expired), "token_expired", "the token has expired"),
        (
            hs(early),
            "token_not_yet_valid",
            "the token is not valid yet",
        ),
        (
            tampered,
            "token_bad_signature",
            "the token's signature does not verify",
        ),
        (
            hs(audience),
            "token_wrong_audience",
            "the token is for another audience",
        ),
        (
            hs(issuer),
            "token_wrong_issuer",
            "the token is from another issuer",
        ),
        (
            keys.mint(
                "EdDSA",
                "ed.key",
                json!({"kid": "nope"}),
                claims("alice", 600),
            ),
            "token_unknown_key",
            "no key for this token (kid or algorithm)",
        ),
        (
            keys.mint("none", "", json!({}), claims("alice", 600)),
            "token_malformed",
            "malformed token: an algorithm besterd does not take (\"none\")",
        ),
        // Algorithm confusion: the RSA public key PEM used as an HS256 secret.
        (
            keys.mint("HS256-raw", "rsa.pem", json!({}), claims("alice", 600)),
            "token_bad_signature",
            "the token's signature does not verify",
        ),
        (
            "not a token".to_string(),
            "token_malformed",
            "malformed token: not three base64url parts",
        ),
        // require_user: a verified token for a user the store does not hold.
        (
            hs(claims("mallory", 600)),
            "auth_failed",
            "invalid username or password",
        ),
    ];
    for (token, want_code, want_text) in &cases {
        let got = refused(&b, json!({ "token": token }));
        assert_eq!(got, (want_code.to_string(), want_text.to_string()));
    }
    // The confused token also fails with the RSA key pinned to its kid: no key of HS256 has it.
    let confused = keys.mint(
        "HS256-raw",
        "rsa.pem",
        json!({"kid": "rsa"}),
        claims("alice", 600),
    );
    assert_eq!(
        refused(&b, json!({ "token": confused })).0,
        "token_unknown_key"
    );
    let log = b.log();
    for (token, _, _) in &cases {
        if token.len() > 20 {
            assert!(!log.contains(token.as_str()), "a token was logged");
        }
    }
    let (mut session, ok) = identify(&b, json!({ "token": valid }));
    assert_eq!(ok["header"]["status"], "ok", "{ok}");
    // With require_user the session stands on the user's entry: deleting the user ends it.
    session.set_timeout(Some(DEADLINE)).unwrap();
    user_cmd(&b, &["del", "alice"], None);
    let revoked = session.recv().unwrap().expect("session_revoked");
    assert_eq!(code(&revoked), "session_revoked", "{revoked}");
    assert_eq!(
        revoked["data"]["error"],
        "session revoked: the user was deleted; log in again"
    );
}

#[test]
fn token_logins_are_off_without_auth_jwt_and_failures_count_against_the_rate_limit() {
    let keys = Keys::new();
    let off = broker("", "");
    let token = keys.mint("HS256", "hs.secret", json!({}), claims("alice", 600));
    assert_eq!(
        refused(&off, json!({ "token": token })),
        (
            "token_logins_off".to_string(),
            "this server takes no token logins ([auth.jwt] is not configured)".to_string()
        )
    );
    // Resume tokens need no configuration: a random key for this run.
    let (_, reply) = identify(&off, json!({"username":"alice","password":"alice-pw"}));
    let (_, again) = identify(&off, json!({ "resume": resume_of(&reply) }));
    assert_eq!(again["data"]["user"], "alice", "{again}");
    let b = broker("login_failures_per_ip = 2", &keys.auth("", ""));
    let bad = keys.mint("HS256-raw", "rsa.pem", json!({}), claims("alice", 600));
    for _ in 0..2 {
        assert_eq!(
            refused(&b, json!({ "token": bad })).0,
            "token_bad_signature"
        );
    }
    // Now even a good token from this address waits.
    assert_eq!(refused(&b, json!({ "token": token })).0, "rate_limited");
}

#[test]
fn a_session_ends_when_its_token_expires_unless_refreshed() {
    let keys = Keys::new();
    let b = broker("", &keys.auth("leeway_s = 0", ""));
    let hs = |c: Value| keys.mint("HS256", "hs.secret", json!({}), c);

    let (mut short, reply) = identify(&b, json!({ "token": hs(claims("alice", 3)) }));
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    short.set_timeout(Some(DEADLINE)).unwrap();
    let ended = short.recv().unwrap().expect("session_expired");
    assert_eq!(
        ended,
        json!({"header":{"status":"error","kind":"reply"},
               "data":{"error":"the session's token has expired; log in again","code":"session_expired"}})
    );
    assert_eq!(short.recv().unwrap(), None, "closed");

    // Tokens are minted first: the session's seconds are not spent starting Python.
    let later = claims("alice", 600);
    let later_exp = later["exp"].clone();
    let mut new_claims = later.clone();
    new_claims["info"] = json!({"level": 2});
    let new_token = hs(new_claims);
    let first = claims("alice", 3);
    let first_exp = first["exp"].as_u64().unwrap();
    let first_token = hs(first);
    let (mut refreshed, _) = identify(&b, json!({ "token": first_token }));
    refreshed.set_timeout(Some(DEADLINE)).unwrap();
    let reply = refreshed
        .request("r", "bester.refresh", &json!({ "token": new_token }))
        .unwrap();
    assert_eq!(
        reply,
        json!({"header":{"status":"ok","kind":"reply","id":"r","type":"bester.refresh"},
               "data":{"expires": later_exp}})
    );
    assert_eq!(
        header_seen(&mut refreshed)["from"]["info"],
        json!({"level": 2})
    );
    // Past the first token's end the session still serves.
    let deadline = Instant::now() + DEADLINE;
    while now() <= first_exp + 1 {
        let pong = refreshed.request("p", "bester.ping", &json!(null)).unwrap();
        assert_eq!(pong["header"]["status"], "ok", "{pong}");
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    let pong = refreshed.request("p", "bester.ping", &json!(null)).unwrap();
    assert_eq!(pong["data"], "pong");
    // Another user's token does not refresh this session.
    let reply = refreshed
        .request(
            "x",
            "bester.refresh",
            &json!({ "token": hs(claims("bob", 600)) }),
        )
        .unwrap();
    assert_eq!(code(&reply), "auth_failed", "{reply}");
    assert_eq!(
        reply["data"]["error"],
        "the token is for another user than this session's"
    );
    let pong = refreshed.request("p", "bester.ping", &json!(null)).unwrap();
    assert_eq!(pong["data"], "pong", "the session stays");

    // A refreshed session ends at its new end.
    let later = claims("bob", 5);
    let end = later["exp"].as_u64().unwrap();
    let later = hs(later);
    let short_token = hs(claims("bob", 3));
    let (mut extended, _) = identify(&b, json!({ "token": short_token }));
    extended.set_timeout(Some(DEADLINE)).unwrap();
    let reply = extended
        .request("r", "bester.refresh", &json!({ "token": later }))
        .unwrap();
    assert_eq!(reply["data"]["expires"], end, "{reply}");
    let ended = extended.recv().unwrap().expect("session_expired");
    assert_eq!(code(&ended), "session_expired", "{ended}");
    assert!(now() >= end, "not before the refreshed end");

    // An end too far away to name: the session simply does not end; nothing breaks.
    let mut forever = claims("carol", 0);
    forever["exp"] = json!(u64::MAX);
    let (mut far, reply) = identify(&b, json!({ "token": hs(forever) }));
    assert_eq!(reply["data"]["expires"], u64::MAX, "{reply}");
    far.set_timeout(Some(DEADLINE)).unwrap();
    let pong = far.request("p", "bester.ping", &json!(null)).unwrap();
    assert_eq!(pong["data"], "pong");
}

/// `besterd user ARGS` on the broker's store.
fn user_cmd(b: &Broker, args: &[&str], stdin: Option<&str>) {
    let users = b.users();
    let mut all = vec!["user", "--users", users.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = besterd_cmd(&all, stdin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn resume_of(reply: &Value) -> String {
    reply["data"]["resume"]
        .as_str()
        .expect("data.resume")
        .to_string()
}

#[test]
fn resume_tokens_survive_a_restart_and_die_with_the_users_entry() {
    let keys = Keys::new();
    let mut b = broker(
        "login_failures_per_ip = 1000\nlogin_failures_per_user = 1000",
        &keys.auth("", ""),
    );
    let (_, alice) = identify(&b, json!({"username":"alice","password":"alice-pw"}));
    let (_, bob) = identify(&b, json!({"username":"bob","password":"bob-pw"}));
    let mut c = claims("carol", 3600);
    c["info"] = json!({"role": "viewer"});
    let exp = c["exp"].clone();
    let (_, carol) = identify(
        &b,
        json!({"token": keys.mint("ES256", "ec.key", json!({"kid":"ec"}), c)}),
    );
    assert_eq!(carol["data"]["expires"], exp);
    b.restart();
    assert_eq!(password_checks(&b), 0);

    let (mut resumed, reply) = identify(&b, json!({ "resume": resume_of(&alice) }));
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    assert_eq!(reply["data"]["user"], "alice");
    assert!(reply["data"].get("expires").is_none(), "{reply}");
    // A token for the same session again (the same bytes within the same second).
    assert!(resume_of(&reply).starts_with("v1."));
    assert!(reply["data"]["resume_expires"].as_u64() >= alice["data"]["resume_expires"].as_u64());
    resumed.set_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(
        header_seen(&mut resumed)["from"],
        json!({"user":"alice","server":"test"})
    );
    // The same token in the token field logs in the same way.
    let (_, again) = identify(&b, json!({ "token": resume_of(&alice) }));
    assert_eq!(again["data"]["user"], "alice", "{again}");
    // A resumed token session keeps its info and its end.
    let (mut carol2, reply) = identify(&b, json!({ "resume": resume_of(&carol) }));
    assert_eq!(reply["data"]["user"], "carol", "{reply}");
    assert_eq!(reply["data"]["expires"], exp);
    carol2.set_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(
        header_seen(&mut carol2)["from"]["info"],
        json!({"role":"viewer"})
    );
    // No argon2 for any of these.
    assert_eq!(
        password_checks(&b),
        0,
        "resume logins run no password check"
    );

    let changed = (
        "resume_refused".to_string(),
        "the resume token's user was deleted or their password changed".to_string(),
    );
    user_cmd(
        &b,
        &["passwd", "alice", "--password-stdin"],
        Some("new-alice-pw"),
    );
    assert_eq!(refused(&b, json!({ "resume": resume_of(&alice) })), changed);
    user_cmd(&b, &["del", "bob"], None);
    assert_eq!(refused(&b, json!({ "resume": resume_of(&bob) })), changed);

    // bester.logout revokes the session's tokens, including those bester.token made.
    let (mut session, reply) = identify(&b, json!({"username":"carol","password":"carol-pw"}));
    session.set_timeout(Some(DEADLINE)).unwrap();
    let first = resume_of(&reply);
    let more = session.request("t", "bester.token", &json!(null)).unwrap();
    assert_eq!(more["header"]["type"], "bester.token", "{more}");
    let second = more["data"]["resume"].as_str().unwrap().to_string();
    assert!(more["data"]["resume_expires"].as_u64().unwrap() > now());
    let (_, ok) = identify(&b, json!({ "resume": second }));
    assert_eq!(ok["header"]["status"], "ok", "{ok}");
    session.request("l", "bester.logout", &json!(null)).unwrap();
    let out = (
        "resume_refused".to_string(),
        "the resume token's session logged out".to_string(),
    );
    assert_eq!(refused(&b, json!({ "resume": first })), out);
    assert_eq!(refused(&b, json!({ "resume": second })), out);
    assert_eq!(refused(&b, json!({ "resume": resume_of(&ok) })), out);
    // A resumed session is the session it came from: its logout ends the whole chain.
    let (_, reply) = identify(&b, json!({"username":"carol","password":"carol-pw"}));
    let original = resume_of(&reply);
    let (mut resumed, reply) = identify(&b, json!({ "resume": original }));
    resumed.set_timeout(Some(DEADLINE)).unwrap();
    let chained = resume_of(&reply);
    resumed.request("l", "bester.logout", &json!(null)).unwrap();
    assert_eq!(refused(&b, json!({ "resume": original })), out);
    assert_eq!(refused(&b, json!({ "resume": chained })), out);

    // Another server's key.
    let other_keys = Keys::new();
    let other = broker("", &other_keys.auth("", ""));
    let (_, theirs) = identify(&other, json!({"username":"carol","password":"carol-pw"}));
    assert_eq!(
        refused(&b, json!({ "resume": resume_of(&theirs) })),
        (
            "resume_refused".to_string(),
            "the resume token was not issued with this server's key".to_string()
        )
    );
    assert_eq!(
        refused(&b, json!({ "resume": "v1.garbage" })),
        (
            "resume_refused".to_string(),
            "not a resume token".to_string()
        )
    );
    assert!(
        !b.log().contains(&resume_of(&theirs)),
        "tokens are not logged"
    );
}

#[test]
fn resume_tokens_expire_after_resume_ttl() {
    let keys = Keys::new();
    let b = broker("", &keys.auth("", "resume_ttl_s = 1"));
    let (_, reply) = identify(&b, json!({"username":"alice","password":"alice-pw"}));
    let expires = reply["data"]["resume_expires"].as_u64().unwrap();
    assert!(expires <= now() + 1, "{reply}");
    let deadline = Instant::now() + DEADLINE;
    while now() < expires {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        refused(&b, json!({ "resume": resume_of(&reply) })),
        (
            "resume_expired".to_string(),
            "the resume token has expired".to_string()
        )
    );
}

fn write_jwks(path: &Path, kid: &str, pem: &Path) {
    tool(&["jwks", path.to_str().unwrap(), kid, pem.to_str().unwrap()]);
}

#[test]
fn a_jwks_file_is_read_again_on_sighup() {
    let one = Keys::new();
    let two = Keys::new();
    let jwks = one.path("keys.json");
    write_jwks(&jwks, "k1", &one.path("rsa.pem"));
    let auth =
        format!("[auth.jwt]\njwks_file = {jwks:?}\nissuer = \"issuer\"\naudience = \"app\"\n");
    let b = broker("login_failures_per_ip = 1000", &auth);
    let old = one.mint(
        "RS256",
        "rsa.key",
        json!({"kid":"k1"}),
        claims("alice", 600),
    );
    let new = two.mint(
        "RS256",
        "rsa.key",
        json!({"kid":"k2"}),
        claims("alice", 600),
    );
    assert_eq!(
        identify(&b, json!({ "token": old })).1["header"]["status"],
        "ok"
    );
    assert_eq!(refused(&b, json!({ "token": new })).0, "token_unknown_key");

    write_jwks(&jwks, "k2", &two.path("rsa.pem"));
    let applied = b.log().matches("reload applied").count();
    signal(b.pid(), libc::SIGHUP);
    eventually("the reload to be applied", || {
        (b.log().matches("reload applied").count() > applied).then_some(())
    });
    assert_eq!(
        identify(&b, json!({ "token": new })).1["header"]["status"],
        "ok"
    );
    assert_eq!(refused(&b, json!({ "token": old })).0, "token_unknown_key");

    // A JWKS file that no longer parses: the reload fails, the keys read before stay.
    std::fs::write(&jwks, "not json").unwrap();
    let failed = b.log().matches("reload failed").count();
    signal(b.pid(), libc::SIGHUP);
    eventually("the reload to fail", || {
        (b.log().matches("reload failed").count() > failed).then_some(())
    });
    assert!(b.log().contains("auth.jwt:"), "{}", b.log());
    let new = two.mint(
        "RS256",
        "rsa.key",
        json!({"kid":"k2"}),
        claims("alice", 600),
    );
    assert_eq!(
        identify(&b, json!({ "token": new })).1["header"]["status"],
        "ok"
    );
}

#[test]
fn a_new_token_secret_file_takes_effect_on_sighup() {
    let keys = Keys::new();
    let b = broker("", &keys.auth("", ""));
    let (_, before) = identify(&b, json!({"username":"alice","password":"alice-pw"}));
    std::fs::write(keys.path("token.key"), "n".repeat(48)).unwrap();
    let applied = b.log().matches("reload applied").count();
    signal(b.pid(), libc::SIGHUP);
    eventually("the reload to be applied", || {
        (b.log().matches("reload applied").count() > applied).then_some(())
    });
    assert_eq!(
        refused(&b, json!({ "resume": resume_of(&before) })),
        (
            "resume_refused".to_string(),
            "the resume token was not issued with this server's key".to_string()
        )
    );
    let (_, after) = identify(&b, json!({"username":"alice","password":"alice-pw"}));
    let (_, again) = identify(&b, json!({ "resume": resume_of(&after) }));
    assert_eq!(again["data"]["user"], "alice", "{again}");
}

#[test]
fn check_config_reports_a_bad_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("short.secret");
    std::fs::write(&secret, "short").unwrap();
    let config = dir.path().join("besterd.toml");
    std::fs::write(
        &config,
        format!("[auth.jwt]\nhmac_secret_file = {secret:?}\n"),
    )
    .unwrap();
    let out = besterd_cmd(
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.jwt") && err.contains("an HS256 secret must be at least 32 bytes"),
        "{err}"
    );
    // A good secret that others may read: OK, with a warning naming the key.
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(&secret, "s".repeat(40)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = besterd_cmd(
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: auth.jwt.hmac_secret_file: ")
            && err.contains("is readable by group or others (mode 0644)"),
        "{err}"
    );
}

#[test]
fn bester_send_logs_in_with_a_token() {
    let keys = Keys::new();
    let b = broker("", &keys.auth("", ""));
    let token = keys.mint("EdDSA", "ed.key", json!({"kid":"ed"}), claims("alice", 600));
    let bester = env!("CARGO_BIN_EXE_bester");
    let address = format!("bester://{}", b.addr);
    let out = Command::new(bester)
        .args([
            "send",
            "--token",
            &token,
            &address,
            "faulty",
            r#"{"action":"echo","n":1}"#,
        ])
        .env_remove("BESTER_PASSWORD")
        .env_remove("BESTER_TOKEN")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"header\":{\"status\":\"ok\",\"kind\":\"reply\",\"id\":\"1\",\"type\":\"faulty\"},\"data\":{\"action\":\"echo\",\"n\":1}}\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    // BESTER_TOKEN, and a resume token works the same way.
    let (_, reply) = identify(&b, json!({"username":"bob","password":"bob-pw"}));
    let out = Command::new(bester)
        .args(["send", &address, "bester.whoami"])
        .env("BESTER_TOKEN", resume_of(&reply))
        .env_remove("BESTER_PASSWORD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whoami: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(whoami["data"]["user"], "bob");
    // A refused token: the refusal on stdout, its code on stderr, exit 1.
    let out = Command::new(bester)
        .args(["send", "--token", "not-a-token", &address, "faulty"])
        .env_remove("BESTER_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "bester: login refused: token_malformed: malformed token: not three base64url parts\n"
    );
}

/// The lines of the revoked-sessions file: sessions (its header and floor left out).
fn revoked_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count().saturating_sub(2))
}

#[test]
fn a_logout_outlives_a_restart_and_a_kill() {
    let keys = Keys::new();
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("revoked");
    let mut b = broker(
        "",
        &keys.auth(
            "",
            &format!("revoked_file = {:?}", file.display().to_string()),
        ),
    );
    let (_, carol) = identify(&b, json!({"username":"carol","password":"carol-pw"}));
    let (mut bob, reply) = identify(&b, json!({"username":"bob","password":"bob-pw"}));
    bob.set_timeout(Some(DEADLINE)).unwrap();
    let bobs = resume_of(&reply);
    let (_, reply) = identify(&b, json!({"username":"alice","password":"alice-pw"}));
    let alices = resume_of(&reply);
    bob.request("l", "bester.logout", &json!(null)).unwrap();
    let out = (
        "resume_refused".to_string(),
        "the resume token's session logged out".to_string(),
    );

    // A clean stop: bob's token stays refused; carol's, of a session that did not log out, works.
    b.restart();
    assert_eq!(refused(&b, json!({ "resume": bobs })), out);
    let (_, again) = identify(&b, json!({ "resume": resume_of(&carol) }));
    assert_eq!(again["header"]["status"], "ok", "{again}");

    // kill -9 once the logout is written: still refused after the start.
    let (mut alice, _) = identify(&b, json!({ "resume": alices }));
    alice.set_timeout(Some(DEADLINE)).unwrap();
    alice.request("l", "bester.logout", &json!(null)).unwrap();
    eventually("alice's logout written", || {
        (revoked_lines(&file) == 2).then_some(())
    });
    b.kill_and_restart();
    assert_eq!(refused(&b, json!({ "resume": alices })), out);
    assert_eq!(refused(&b, json!({ "resume": bobs })), out);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "written private");
}

#[test]
fn a_planted_or_broken_revoked_file_stops_the_start() {
    let keys = Keys::new();
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("revoked");
    let start = |b_file: &std::path::Path| {
        let mut b = Broker::launch_with(
            "test",
            "127.0.0.1:0",
            "",
            &format!(
                "{}{}",
                faulty(),
                keys.auth(
                    "",
                    &format!("revoked_file = {:?}", b_file.display().to_string())
                )
            ),
            &[("alice", "alice-pw")],
            &common::Launch {
                wait_ready: false,
                ..common::Launch::default()
            },
        );
        let status = b.wait_exit();
        assert!(!status.success(), "{status}");
        b.log()
    };
    // A symbolic link another user planted, pointing where the daemon may write: never read
    // or written through.
    let target = state.path().join("target");
    std::fs::write(&target, "besterd-revoked 1\nfloor 0\n").unwrap();
    std::os::unix::fs::symlink(&target, &file).unwrap();
    let log = start(&file);
    assert!(
        log.contains(&format!("refusing {}: is a symbolic link", file.display())),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "besterd-revoked 1\nfloor 0\n"
    );
    // A file that does not parse: the start stops rather than forgetting the logouts.
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, "besterd-revoked 1\nfloor 0\nabc12 soon\n").unwrap();
    let log = start(&file);
    assert!(
        log.contains(&format!(
            "refusing {}: line 3: not \"<session> <until>\" or \"floor <until>\"",
            file.display()
        )),
        "{log}"
    );
}
