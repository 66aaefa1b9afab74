//! Logins by client certificate on `client_ca` listeners, against the real binary over real TLS,
//! with certificates made by the test (rcgen): a certificate logs in only as a user of the store
//! (exact name, one CN; or its email / URI SAN), only with the clientAuth EKU, only when issued
//! directly by a `client_ca` certificate, only if not in `client_crl` (re-read on SIGHUP), only
//! as the certificate pinned for the user when there is one; its session is revoked when the user
//! is deleted or the pin changes; a WebSocket page of another origin never logs in by certificate;
//! and check-config refuses `client_ca` with `allowed_origins = ["*"]` on wss.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use besterd::net::blocking::{Connection, Scheme};
use besterd::net::tls::{Trust, client_config};
use common::{Broker, DEADLINE, besterd_cmd, code, eventually, signal};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, RevokedCertParams, SanType, SerialNumber,
};
use serde_json::{Value, json};

type Ca = CertifiedIssuer<'static, KeyPair>;

/// A test PKI in a temporary directory: a CA, a server certificate, client certificates.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    ca_pem: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A client certificate as written: its PEM chain and key files.
struct ClientCert {
    chain: PathBuf,
    key: PathBuf,
}

/// What a client certificate is made of.
#[derive(Default)]
struct Spec<'a> {
    cns: &'a [&'a str],
    sans: Vec<SanType>,
    /// The EKUs; `None`: no EKU extension at all.
    eku: Option<Vec<ExtendedKeyUsagePurpose>>,
    serial: Option<u64>,
}

fn spec<'a>(cns: &'a [&'a str]) -> Spec<'a> {
    Spec {
        cns,
        eku: Some(vec![ExtendedKeyUsagePurpose::ClientAuth]),
        ..Spec::default()
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    params
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertifiedIssuer::self_signed(
            ca_params("besterd test client CA"),
            KeyPair::generate().unwrap(),
        )
        .unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let pki = Pki {
            ca_pem: dir.path().join("ca.pem"),
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server-key.pem"),
            dir,
            ca,
        };
        std::fs::write(&pki.ca_pem, pki.ca.pem()).unwrap();
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A client certificate issued by `issuer` (the CA unless given), written as `name`; the
    /// chain file holds `extra` after it (intermediates the client sends).
    fn client_by(&self, name: &str, spec: Spec, issuer: &Ca, extra: &[&Ca]) -> ClientCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (i, cn) in spec.cns.iter().enumerate() {
            // rcgen keeps one value per attribute type: a second CN goes in by its OID.
            let ty = if i == 0 {
                DnType::CommonName
            } else {
                DnType::CustomDnType(vec![2, 5, 4, 3])
            };
            params.distinguished_name.push(ty, *cn);
        }
        params.subject_alt_names = spec.sans;
        params.extended_key_usages = spec.eku.unwrap_or_default();
        params.serial_number = spec.serial.map(SerialNumber::from);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        let mut chain = cert.pem();
        for ca in extra {
            chain.push_str(&ca.pem());
        }
        let out = ClientCert {
            chain: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}-key.pem")),
        };
        std::fs::write(&out.chain, chain).unwrap();
        std::fs::write(&out.key, key.serialize_pem()).unwrap();
        out
    }

    fn client(&self, name: &str, spec: Spec) -> ClientCert {
        self.client_by(name, spec, &self.ca, &[])
    }

    /// A CRL of the CA revoking these serial numbers, written to `path`.
    fn write_crl(&self, path: &Path, number: u64, serials: &[u64]) {
        let crl = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca)
        .unwrap();
        std::fs::write(path, crl.pem().unwrap()).unwrap();
    }

    /// A `[[listeners]]` table with `client_ca` (the CA unless `ca` says) and `extra` keys.
    fn listener(&self, name: &str, kind: &str, ca: Option<&Path>, extra: &str) -> String {
        format!(
            "[[listeners]]\nname = {name:?}\nkind = {kind:?}\naddress = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n{extra}\n",
            self.cert.display().to_string(),
            self.key.display().to_string(),
            ca.unwrap_or(&self.ca_pem).display().to_string(),
        )
    }
}

/// A broker with users alice and bob and these listener tables.
fn broker(listeners: &str) -> Broker {
    Broker::launch(
        "test",
        "127.0.0.1:0",
        "identify_timeout_ms = 3000",
        listeners,
        &[("alice", "alice-pw"), ("bob", "bob-pw")],
    )
}

fn tls_config(pki: &Pki, cert: &ClientCert) -> Arc<rustls::ClientConfig> {
    client_config(
        &Trust::CaFile(pki.ca_pem.clone()),
        Some((&cert.chain, &cert.key)),
    )
    .unwrap()
}

fn connect(pki: &Pki, addr: SocketAddr, cert: &ClientCert) -> std::io::Result<Connection> {
    let config = tls_config(pki, cert);
    Connection::connect(Scheme::Tls, addr, "127.0.0.1", Some(config), Some(DEADLINE))
}

fn recv(conn: &mut Connection) -> std::io::Result<Option<Value>> {
    Ok(conn
        .recv_body()?
        .map(|b| serde_json::from_slice(&b).unwrap()))
}

const CERT_IDENTIFY: &str = r#"{"header":{"identify":{"type":"client"}}}"#;

/// Identify without a password over a fresh TLS connection: the first answer (or the error
/// that ended the connection, e.g. a TLS alert), and the connection.
fn cert_login(
    pki: &Pki,
    addr: SocketAddr,
    cert: &ClientCert,
) -> (Result<Value, String>, Option<Connection>) {
    let mut conn = match connect(pki, addr, cert) {
        Ok(conn) => conn,
        Err(e) => return (Err(e.to_string()), None),
    };
    let answer = conn
        .send_body(CERT_IDENTIFY.as_bytes())
        .and_then(|()| recv(&mut conn));
    match answer {
        Ok(Some(frame)) => (Ok(frame), Some(conn)),
        Ok(None) => (Err("closed without an answer".into()), None),
        Err(e) => (Err(e.to_string()), None),
    }
}

/// A certificate login that must succeed as `user`: the session, checked with whoami.
fn logs_in_as(pki: &Pki, addr: SocketAddr, cert: &ClientCert, user: &str) -> Connection {
    let (answer, conn) = cert_login(pki, addr, cert);
    let answer = answer.expect("an answer");
    assert_eq!(answer["header"]["status"], "ok", "{answer}");
    assert_eq!(answer["data"]["user"], user, "{answer}");
    let mut conn = conn.unwrap();
    let whoami = json!({"header":{"scope":"client","id":"w"},"payload":{"type":"bester.whoami"}});
    conn.send_body(whoami.to_string().as_bytes()).unwrap();
    let reply = recv(&mut conn).unwrap().unwrap();
    assert_eq!(reply["data"]["user"], user, "{reply}");
    conn
}

/// What an unknown user's password login is told, exactly.
fn unknown_user_error(broker: &Broker) -> Value {
    let mut client = broker.connect();
    client
        .send(&json!({"header":{"identify":{"type":"client","authentication":{"username":"nobody","password":"x"}}}}))
        .unwrap();
    let frame = client.recv().unwrap().unwrap();
    assert_eq!(code(&frame), "auth_failed", "{frame}");
    frame
}

/// A certificate login refused exactly as an unknown user's password login, then closed.
fn refused_like_unknown_user(broker: &Broker, pki: &Pki, addr: SocketAddr, cert: &ClientCert) {
    let (answer, conn) = cert_login(pki, addr, cert);
    let answer = answer.expect("an answer");
    assert_eq!(answer, unknown_user_error(broker));
    assert_eq!(
        answer["data"]["error"], "invalid username or password",
        "{answer}"
    );
    assert_eq!(recv(&mut conn.unwrap()).unwrap(), None, "closed after");
}

/// A certificate the TLS handshake refuses: the client gets this alert.
fn refused_by_tls(pki: &Pki, addr: SocketAddr, cert: &ClientCert, alert: &str) {
    let (answer, _) = cert_login(pki, addr, cert);
    let err = answer.expect_err("refused by TLS");
    assert!(err.contains(alert), "expected {alert}: {err}");
}

fn user_cmd(broker: &Broker, args: &[&str]) {
    let users = broker.users();
    let mut all = vec!["user", "--users", users.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = besterd_cmd(&all, None);
    assert!(out.status.success(), "{out:?}");
}

fn revoked(conn: &mut Connection, why: &str) {
    let frame = recv(conn).unwrap().expect("a frame before the close");
    assert_eq!(code(&frame), "session_revoked", "{frame}");
    assert_eq!(
        frame["data"]["error"],
        format!("session revoked: {why}; log in again")
    );
    assert_eq!(recv(conn).unwrap(), None, "closed");
}

#[test]
fn unknown_users_and_names_in_another_case_are_refused_like_a_wrong_password() {
    let pki = Pki::new();
    let broker = broker(&pki.listener("mtls", "tls", None, ""));
    let addr = broker.listener("mtls");
    let alice = pki.client("alice", spec(&["alice"]));
    drop(logs_in_as(&pki, addr, &alice, "alice"));
    // A name the store never held.
    let mallory = pki.client("mallory", spec(&["mallory"]));
    refused_like_unknown_user(&broker, &pki, addr, &mallory);
    // Names are matched exactly: CN=Alice is not alice.
    let upper = pki.client("upper", spec(&["Alice"]));
    refused_like_unknown_user(&broker, &pki, addr, &upper);
    // Not a valid user name at all.
    let spaced = pki.client("spaced", spec(&["alice smith"]));
    refused_like_unknown_user(&broker, &pki, addr, &spaced);
    assert!(broker.log().contains("certificate login refused"));
}

#[test]
fn a_deleted_users_certificate_session_is_revoked_and_the_certificate_refused() {
    let pki = Pki::new();
    let broker = broker(&pki.listener("mtls", "tls", None, ""));
    let addr = broker.listener("mtls");
    let bob = pki.client("bob", spec(&["bob"]));
    let mut session = logs_in_as(&pki, addr, &bob, "bob");
    user_cmd(&broker, &["del", "bob"]);
    revoked(&mut session, "the user was deleted");
    refused_like_unknown_user(&broker, &pki, addr, &bob);
}

#[test]
fn a_subject_with_two_common_names_is_refused() {
    let pki = Pki::new();
    let broker = broker(&pki.listener("mtls", "tls", None, ""));
    let addr = broker.listener("mtls");
    let two = pki.client("two", spec(&["alice", "bob"]));
    refused_like_unknown_user(&broker, &pki, addr, &two);
    assert!(
        broker
            .log()
            .contains("the certificate has 2 subject CNs; one is needed")
    );
}

#[test]
fn certificates_need_the_client_auth_eku() {
    let pki = Pki::new();
    let broker = broker(&pki.listener("mtls", "tls", None, ""));
    let addr = broker.listener("mtls");
    // webpki alone accepts a certificate without any EKU; besterd does not.
    let none = Spec {
        eku: None,
        ..spec(&["alice"])
    };
    let none = pki.client("no-eku", none);
    refused_by_tls(&pki, addr, &none, "UnsupportedCertificate");
    // An EKU without clientAuth is refused by webpki itself.
    let server_only = Spec {
        eku: Some(vec![ExtendedKeyUsagePurpose::ServerAuth]),
        ..spec(&["alice"])
    };
    let server_only = pki.client("server-only", server_only);
    refused_by_tls(&pki, addr, &server_only, "UnsupportedCertificate");
    // The same name with clientAuth logs in.
    let good = pki.client("good", spec(&["alice"]));
    drop(logs_in_as(&pki, addr, &good, "alice"));
}

#[test]
fn intermediates_are_trusted_only_when_listed_in_client_ca() {
    let pki = Pki::new();
    let intermediate = CertifiedIssuer::signed_by(
        ca_params("besterd test intermediate"),
        KeyPair::generate().unwrap(),
        &pki.ca,
    )
    .unwrap();
    // The CA and the intermediate, both trusted on the second listener.
    let both = pki.path("ca-and-intermediate.pem");
    std::fs::write(&both, format!("{}{}", pki.ca.pem(), intermediate.pem())).unwrap();
    let broker = broker(&format!(
        "{}{}",
        pki.listener("root-only", "tls", None, ""),
        pki.listener("listed", "tls", Some(&both), "")
    ));
    // The client sends its certificate and the intermediate that issued it.
    let cert = pki.client_by(
        "via-intermediate",
        spec(&["alice"]),
        &intermediate,
        &[&intermediate],
    );
    refused_by_tls(&pki, broker.listener("root-only"), &cert, "UnknownCA");
    drop(logs_in_as(&pki, broker.listener("listed"), &cert, "alice"));
    // A user's own (non-CA) certificate can never issue one, even when listed.
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "bob");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = CertifiedIssuer::signed_by(leaf_params, leaf_key, &pki.ca).unwrap();
    let forged = pki.client_by("forged", spec(&["alice"]), &leaf, &[&leaf]);
    refused_by_tls(&pki, broker.listener("root-only"), &forged, "UnknownCA");
}

#[test]
fn email_and_uri_subject_alternative_names_map_to_users() {
    let pki = Pki::new();
    let email_keys = "client_cert_map = \"email\"\nclient_cert_email_domain = \"example.org\"";
    let uri_keys =
        "client_cert_map = \"uri\"\nclient_cert_uri_prefix = \"spiffe://example.org/user/\"";
    let broker = broker(&format!(
        "{}{}",
        pki.listener("email", "tls", None, email_keys),
        pki.listener("uri", "tls", None, uri_keys)
    ));
    let email = |a: &str| SanType::Rfc822Name(a.try_into().unwrap());
    let uri = |a: &str| SanType::URI(a.try_into().unwrap());
    let with = |sans: Vec<SanType>| Spec {
        sans,
        ..spec(&["mallory"])
    };
    // The CN is not looked at: the email SAN names alice.
    let alice = pki.client("alice-mail", with(vec![email("alice@example.org")]));
    drop(logs_in_as(&pki, broker.listener("email"), &alice, "alice"));
    let elsewhere = pki.client("other-domain", with(vec![email("alice@example.net")]));
    refused_like_unknown_user(&broker, &pki, broker.listener("email"), &elsewhere);
    let two = pki.client(
        "two-mails",
        with(vec![email("alice@example.org"), email("bob@example.org")]),
    );
    refused_like_unknown_user(&broker, &pki, broker.listener("email"), &two);

    let bob = pki.client("bob-uri", with(vec![uri("spiffe://example.org/user/bob")]));
    drop(logs_in_as(&pki, broker.listener("uri"), &bob, "bob"));
    let admin = pki.client(
        "admin-uri",
        with(vec![uri("spiffe://example.org/admin/bob")]),
    );
    refused_like_unknown_user(&broker, &pki, broker.listener("uri"), &admin);
    // On the URI listener, a certificate without a URI SAN names no one (its CN is ignored).
    let mallory = pki.client("mallory-cn", with(vec![email("alice@example.org")]));
    refused_like_unknown_user(&broker, &pki, broker.listener("uri"), &mallory);
}

#[test]
fn a_pinned_certificate_is_the_only_one_that_logs_in_as_its_user() {
    let pki = Pki::new();
    let broker = broker(&pki.listener("mtls", "tls", None, ""));
    let addr = broker.listener("mtls");
    let first = pki.client("alice-1", spec(&["alice"]));
    let second = pki.client("alice-2", spec(&["alice"]));
    // Before any pin, either one logs in; pinning the first revokes the session of the second.
    let mut unpinned = logs_in_as(&pki, addr, &second, "alice");
    user_cmd(
        &broker,
        &["cert", "alice", "--cert", first.chain.to_str().unwrap()],
    );
    revoked(&mut unpinned, "the user's pinned certificate was changed");
    drop(logs_in_as(&pki, addr, &first, "alice"));
    refused_like_unknown_user(&broker, &pki, addr, &second);
    // A password login is not affected by the pin.
    drop(broker.login("alice", "alice-pw"));
    // A user added without a password, with a pin, logs in by that certificate only.
    let robot = pki.client("robot", spec(&["robot"]));
    user_cmd(
        &broker,
        &[
            "add",
            "robot",
            "--no-password",
            "--cert",
            robot.chain.to_str().unwrap(),
        ],
    );
    drop(logs_in_as(&pki, addr, &robot, "robot"));
    // Removing the pin lets the second in again.
    user_cmd(&broker, &["cert", "alice", "--clear"]);
    eventually("the pin to be gone", || {
        let (answer, _) = cert_login(&pki, addr, &second);
        (answer.ok()?["header"]["status"] == "ok").then_some(())
    });
}

#[test]
fn revoked_certificates_are_refused_and_the_crl_is_read_again_on_sighup() {
    let pki = Pki::new();
    let crl = pki.path("clients.crl.pem");
    pki.write_crl(&crl, 1, &[1001]);
    let keys = format!("client_crl = [{:?}]", crl.display().to_string());
    let broker = broker(&pki.listener("mtls", "tls", None, &keys));
    let addr = broker.listener("mtls");
    let cert = |name: &str, serial| {
        let cns = [name];
        let spec = Spec {
            serial: Some(serial),
            ..spec(&cns)
        };
        pki.client(&format!("{name}-{serial}"), spec)
    };
    let revoked_one = cert("alice", 1001);
    let good = cert("bob", 1002);
    refused_by_tls(&pki, addr, &revoked_one, "CertificateRevoked");
    let mut open = logs_in_as(&pki, addr, &good, "bob");
    // bob's certificate is revoked too; SIGHUP reads the new list: his open session ends, and
    // new connections with the certificate are refused.
    pki.write_crl(&crl, 2, &[1001, 1002]);
    signal(broker.pid(), libc::SIGHUP);
    let frame = recv(&mut open).unwrap().expect("a frame before the close");
    assert_eq!(code(&frame), "session_revoked", "{frame}");
    assert_eq!(
        frame["data"]["error"],
        "session revoked: the client certificate is no longer accepted; log in again"
    );
    assert_eq!(recv(&mut open).unwrap(), None, "closed");
    eventually("the new CRL to apply", || {
        let (answer, _) = cert_login(&pki, addr, &good);
        answer
            .err()
            .filter(|e| e.contains("CertificateRevoked"))
            .map(|_| ())
    });
    assert!(
        broker
            .log()
            .contains("listener mtls: certificates, CRLs and files reloaded")
    );
}

#[test]
fn check_config_refuses_client_ca_with_any_origin_on_wss() {
    let pki = Pki::new();
    let config = pki.path("besterd.toml");
    let listener = pki.listener("wss", "wss", None, "allowed_origins = [\"*\"]");
    std::fs::write(&config, format!("[server]\nname = \"a\"\n{listener}")).unwrap();
    let out = besterd_cmd(
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "listeners[0].allowed_origins: [\"*\"] cannot go with client_ca: any web page could \
             log its visitors in with their browser certificates; list the origins allowed"
        ),
        "{err}"
    );
    // serve refuses it the same way.
    let out = besterd_cmd(&["serve", "--config", config.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    // A list of origins is fine.
    let listener = pki.listener(
        "wss",
        "wss",
        None,
        "allowed_origins = [\"https://chat.example.org\"]",
    );
    std::fs::write(&config, format!("[server]\nname = \"a\"\n{listener}")).unwrap();
    let out = besterd_cmd(
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{out:?}");
}

/// A wss connection with a client certificate, upgraded with this `Origin` (if any).
fn wss(
    pki: &Pki,
    addr: SocketAddr,
    cert: &ClientCert,
    origin: Option<&str>,
) -> tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    use tungstenite::client::IntoClientRequest;
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(tls_config(pki, cert), name).unwrap();
    let stream = rustls::StreamOwned::new(conn, tcp);
    let mut request = format!("wss://127.0.0.1:{}/", addr.port())
        .into_client_request()
        .unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    tungstenite::client::client(request, stream).unwrap().0
}

fn ws_ask(
    ws: &mut tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    body: &str,
) -> Value {
    ws.send(tungstenite::Message::text(body)).unwrap();
    loop {
        match ws.read().unwrap() {
            tungstenite::Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            tungstenite::Message::Close(_) => panic!("closed"),
            _ => {}
        }
    }
}

#[test]
fn a_cross_origin_websocket_page_does_not_log_in_by_certificate() {
    let pki = Pki::new();
    let origins = "allowed_origins = [\"https://chat.example.org\"]";
    let broker = broker(&format!(
        "{}{}",
        pki.listener("wss", "wss", None, origins),
        pki.listener("own", "wss", None, "")
    ));
    let addr = broker.listener("wss");
    let alice = pki.client("alice", spec(&["alice"]));
    // A page of an allowed but other origin: the upgrade works, the certificate alone does not.
    let mut page = wss(&pki, addr, &alice, Some("https://chat.example.org"));
    let answer = ws_ask(&mut page, CERT_IDENTIFY);
    assert_eq!(code(&answer), "invalid_message", "{answer}");
    assert_eq!(
        answer["data"]["error"],
        "identify as a client needs authentication (a page of another origin cannot log in by \
         client certificate)"
    );
    // It may log in with a password like anyone else.
    let mut page = wss(&pki, addr, &alice, Some("https://chat.example.org"));
    let identify = json!({"header":{"identify":{"type":"client","authentication":{"username":"bob","password":"bob-pw"}}}});
    let answer = ws_ask(&mut page, &identify.to_string());
    assert_eq!(answer["data"]["user"], "bob", "{answer}");
    // A page of this host (default allowed_origins), and a client that sends no Origin, log
    // in by certificate.
    let addr = broker.listener("own");
    let own = format!("https://127.0.0.1:{}", addr.port());
    for origin in [Some(own.as_str()), None] {
        let mut ws = wss(&pki, addr, &alice, origin);
        let answer = ws_ask(&mut ws, CERT_IDENTIFY);
        assert_eq!(answer["data"]["user"], "alice", "{origin:?}: {answer}");
    }
}
