//! TLS with rustls (ring provider, no OpenSSL), driven by readiness: a [`TlsStream`] is a rustls
//! connection over a non-blocking `mio` TCP stream. `read` feeds ciphertext from the socket into
//! rustls and returns plaintext; `write` hands plaintext to rustls (bounded by its buffer limit,
//! `WouldBlock` when full) and pushes ciphertext out as far as the socket takes it. Handshake
//! records are written as soon as rustls has them, so an edge-triggered loop never stalls.
//!
//! Also here: building server configurations from PEM files (reloadable: a new configuration
//! applies to connections accepted afterwards), client configurations that trust a CA file or pin
//! a certificate's SHA-256 fingerprint, and the fingerprint function itself.
//!
//! Client certificates (`client_ca`): rustls/webpki verify the chain, validity dates, CRLs
//! (`client_crl`) and, when the certificate has an extended key usage, that it includes
//! clientAuth. On top of that a certificate must carry the clientAuth EKU (webpki accepts one
//! without any EKU), and must be issued directly by a certificate of `client_ca`: the
//! intermediates a client sends are ignored, so an intermediate CA is trusted only when it is
//! itself listed in `client_ca`. Which part of a certificate names its user ([`CertMap`]) is read
//! here with x509-parser; whether that user exists is the server's business.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, ClientConnection, Connection, DigitallySignedStruct, DistinguishedName,
    RootCertStore, ServerConfig, ServerConnection, SignatureScheme,
};
use sha2::{Digest, Sha256};

/// Plaintext rustls keeps for us before `write` reports `WouldBlock` (the framing layer above
/// keeps its own bounded queue).
const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// The crypto provider every configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls connection over a non-blocking TCP stream.
#[derive(Debug)]
pub struct TlsStream {
    sock: TcpStream,
    conn: Connection,
    /// The socket reached end of stream.
    eof: bool,
    /// The server side: the listener's settings it was accepted with.
    server: Option<Arc<ServerTls>>,
    /// What made the handshake fail, if something did.
    failure: Option<HandshakeFailure>,
}

impl TlsStream {
    /// The server side of a freshly accepted connection.
    pub fn server(sock: TcpStream, tls: Arc<ServerTls>) -> io::Result<TlsStream> {
        let mut conn = ServerConnection::new(Arc::clone(&tls.config)).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Ok(TlsStream {
            sock,
            conn: conn.into(),
            eof: false,
            server: Some(tls),
            failure: None,
        })
    }

    /// The client side of an outgoing connection to `name`.
    pub fn client(
        sock: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<TlsStream> {
        let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Ok(TlsStream {
            sock,
            conn: conn.into(),
            eof: false,
            server: None,
            failure: None,
        })
    }

    /// On a listener with `client_ca`: how the peer's certificate names its user.
    pub fn cert_map(&self) -> Option<&CertMap> {
        self.server.as_ref()?.map.as_ref()
    }

    /// The server side: the listener settings the connection was accepted with.
    pub fn server_tls(&self) -> Option<&ServerTls> {
        self.server.as_deref()
    }

    /// The TCP stream underneath.
    pub fn tcp(&self) -> &TcpStream {
        &self.sock
    }

    /// The TCP stream underneath, mutably (to register it).
    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.sock
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The peer's certificate chain, once the handshake is done.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Write ciphertext rustls has ready until it is all out (`Ok(true)`) or the socket is full.
    pub fn write_pending(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Send close_notify and whatever else is pending (best effort), then shut the socket.
    pub fn shutdown(&mut self) {
        self.conn.send_close_notify();
        let _ = self.write_pending();
        let _ = self.sock.shutdown(Shutdown::Both);
    }

    /// Hand over the TCP stream for a lingering close (`linger.rs`): close_notify and whatever
    /// else rustls has pending are written first, as far as the socket takes them now.
    pub fn into_tcp(mut self) -> TcpStream {
        self.conn.send_close_notify();
        let _ = self.write_pending();
        self.sock
    }

    /// Why the handshake failed, if it did: set when rustls refused what the peer sent before
    /// the handshake was done.
    pub fn handshake_failure(&self) -> Option<HandshakeFailure> {
        self.failure
    }

    /// Read ciphertext from the socket into rustls and process it. `Ok(false)` when the socket
    /// had nothing (would block).
    fn read_tls(&mut self) -> io::Result<bool> {
        loop {
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(true);
                }
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let handshaking = self.conn.is_handshaking();
        let processed = self.conn.process_new_packets();
        // Handshake messages or an alert: send them now (an alert is best effort).
        let written = self.write_pending();
        match processed {
            Ok(_) => written.map(|_| true),
            Err(e) => {
                if handshaking {
                    self.failure = Some(HandshakeFailure::of(&e));
                }
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("tls: {e}"),
                ))
            }
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.eof {
                        // The peer closed without close_notify: an end of stream all the same.
                        return Ok(0);
                    }
                    if !self.read_tls()? {
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        self.write_pending()?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending().map(|_| ())
    }
}

/// Why a TLS handshake failed, in a few stable classes (the `reason` label of
/// `besterd_tls_handshake_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The peer sent something that is not TLS, or TLS out of order.
    InvalidMessage,
    /// No protocol version, cipher suite or signature scheme in common.
    Incompatible,
    /// The peer's certificate was refused (client certificates), or none was presented.
    BadCertificate,
    /// The peer sent an alert (e.g. it does not trust our certificate).
    AlertReceived,
    /// The peer closed the connection before the handshake was done.
    Eof,
    /// The handshake did not finish in time.
    Timeout,
    /// Anything else.
    Other,
}

impl HandshakeFailure {
    /// Every class, in index order.
    pub const ALL: [HandshakeFailure; 7] = [
        HandshakeFailure::InvalidMessage,
        HandshakeFailure::Incompatible,
        HandshakeFailure::BadCertificate,
        HandshakeFailure::AlertReceived,
        HandshakeFailure::Eof,
        HandshakeFailure::Timeout,
        HandshakeFailure::Other,
    ];

    /// The class of a rustls error.
    pub fn of(error: &rustls::Error) -> HandshakeFailure {
        use rustls::Error as E;
        match error {
            E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::PeerMisbehaved(_)
            | E::DecryptError => HandshakeFailure::InvalidMessage,
            E::PeerIncompatible(_) => HandshakeFailure::Incompatible,
            E::InvalidCertificate(_)
            | E::NoCertificatesPresented
            | E::InvalidCertRevocationList(_) => HandshakeFailure::BadCertificate,
            E::AlertReceived(_) => HandshakeFailure::AlertReceived,
            _ => HandshakeFailure::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::InvalidMessage => "invalid_message",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::BadCertificate => "bad_certificate",
            HandshakeFailure::AlertReceived => "alert_received",
            HandshakeFailure::Eof => "eof",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Other => "other",
        }
    }
}

/// What is wrong with a TLS file.
fn file_error(path: &Path, what: &str, e: impl std::fmt::Display) -> String {
    format!("{}: cannot read {what}: {e}", path.display())
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, "certificates", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, "certificates", e))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, "private key", e))
}

/// A root store holding every certificate of a PEM file.
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Which part of a verified client certificate names its user (`client_cert_map`). User names
/// are matched exactly as the certificate spells them (no case folding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertMap {
    /// `"cn"`: the subject's common name; a subject with more than one CN names no one.
    Cn,
    /// `"email"`: the one email (rfc822Name) subject alternative name, whose domain must be this
    /// one (compared ignoring ASCII case, as domains are); its local part is the user.
    Email(String),
    /// `"uri"`: the one URI subject alternative name, which must start with this prefix (byte
    /// for byte); the rest is the user.
    Uri(String),
}

/// The client-certificate settings of a listener (`client_ca`, `client_crl`, `client_cert_map`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// PEM CA certificates: clients must present a certificate one of them issued directly.
    pub ca: PathBuf,
    /// PEM certificate revocation lists.
    pub crls: Vec<PathBuf>,
    /// How a certificate names its user.
    pub map: CertMap,
}

/// What a TLS listener accepts connections with.
#[derive(Debug)]
pub struct ServerTls {
    /// The rustls configuration.
    pub config: Arc<ServerConfig>,
    /// With `client_ca`: how a client certificate names its user.
    pub map: Option<CertMap>,
    /// Which listener (its index) this is for, so a connection finds its listener's current
    /// settings after a reload.
    pub listener: usize,
    /// With `client_ca`: the client certificate verifier in `config`.
    clients: Option<Arc<ClientCerts>>,
}

impl ServerTls {
    /// With `client_ca`: whether a connection presenting `cert` would be accepted now (after a
    /// reload: the CA file, the CRLs, the validity dates as they are now). `Ok` without `client_ca`.
    pub fn accepts_client_cert(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        match &self.clients {
            Some(verifier) => verifier
                .verify_client_cert(cert, &[], UnixTime::now())
                .map(|_| ()),
            None => Ok(()),
        }
    }
}

/// Every CRL in the PEM files (each file at least one).
pub fn load_crls(paths: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let mut crls = Vec::new();
    for path in paths {
        let before = crls.len();
        for crl in CertificateRevocationListDer::pem_file_iter(path)
            .map_err(|e| file_error(path, "revocation lists", e))?
        {
            crls.push(crl.map_err(|e| file_error(path, "revocation lists", e))?);
        }
        if crls.len() == before {
            return Err(format!(
                "{}: no certificate revocation list (X509 CRL) in the file",
                path.display()
            ));
        }
    }
    Ok(crls)
}

/// A server configuration from PEM files; with `client`, clients must present a certificate
/// issued directly by its CA, with the clientAuth EKU, and not revoked by its CRLs. Read again on
/// reload.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client: Option<&ClientAuth>,
    listener: usize,
) -> Result<Arc<ServerTls>, String> {
    let certs = load_certs(cert)?;
    let key_path = key;
    let key = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut clients = None;
    let builder = match client {
        Some(client) => {
            let ca = &client.ca;
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider());
            if !client.crls.is_empty() {
                // A certificate whose issuer has no CRL among them is refused (fail closed).
                verifier = verifier.with_crls(load_crls(&client.crls)?);
            }
            let inner = verifier
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            let verifier = Arc::new(ClientCerts { inner });
            clients = Some(Arc::clone(&verifier));
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key_path.display()))?;
    Ok(Arc::new(ServerTls {
        config: Arc::new(config),
        map: client.map(|c| c.map.clone()),
        listener,
        clients,
    }))
}

/// webpki's client verifier, stricter: the certificate must carry the clientAuth EKU, and must be
/// issued directly by a trusted CA (the client's intermediates are not used to build a path).
#[derive(Debug)]
struct ClientCerts {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for ClientCerts {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Chain, dates and CRLs first, so that a certificate from elsewhere is `UnknownIssuer`.
        let verified = self.inner.verify_client_cert(end_entity, &[], now)?;
        if !has_client_auth_eku(end_entity) {
            log::info!("tls: refusing a client certificate without the clientAuth EKU");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::InvalidPurpose,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether a DER certificate has an extended key usage extension that lists clientAuth.
fn has_client_auth_eku(cert: &[u8]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert) else {
        return false;
    };
    matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth)
}

/// The user a (verified) DER client certificate names under `map`, or why it names no one
/// (for the log; the client is only told its login failed). The name is not checked here.
pub fn certificate_user(cert: &[u8], map: &CertMap) -> Result<String, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let sans = |want: &str| -> Result<Vec<String>, String> {
        let names = match cert.subject_alternative_name() {
            Ok(Some(ext)) => &ext.value.general_names,
            Ok(None) => return Ok(Vec::new()),
            Err(e) => return Err(format!("bad subject alternative names: {e}")),
        };
        Ok(names
            .iter()
            .filter_map(|n| match (n, want) {
                (GeneralName::RFC822Name(v), "email") | (GeneralName::URI(v), "uri") => {
                    Some(v.to_string())
                }
                _ => None,
            })
            .collect())
    };
    let one = |mut found: Vec<String>, what: &str| match found.len() {
        1 => Ok(found.pop().unwrap_or_default()),
        0 => Err(format!("the certificate has no {what}")),
        n => Err(format!("the certificate has {n} {what}s; one is needed")),
    };
    match map {
        CertMap::Cn => {
            let cns = cert
                .subject()
                .iter_common_name()
                .map(|cn| {
                    cn.as_str()
                        .map(str::to_string)
                        .map_err(|_| "the subject's CN is not a text string".to_string())
                })
                .collect::<Result<Vec<_>, _>>()?;
            one(cns, "subject CN")
        }
        CertMap::Email(domain) => {
            let email = one(sans("email")?, "email SAN")?;
            match email.rsplit_once('@') {
                Some((local, at)) if at.eq_ignore_ascii_case(domain) => Ok(local.to_string()),
                _ => Err(format!(
                    "the email SAN {email:?} is not in domain {domain:?}"
                )),
            }
        }
        CertMap::Uri(prefix) => {
            let uri = one(sans("uri")?, "URI SAN")?;
            match uri.strip_prefix(prefix.as_str()) {
                Some(user) => Ok(user.to_string()),
                None => Err(format!(
                    "the URI SAN {uri:?} does not start with {prefix:?}"
                )),
            }
        }
    }
}

/// How a client decides to trust the server it dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Certificates issued by the CAs of this PEM file.
    CaFile(std::path::PathBuf),
    /// Exactly the certificate with this SHA-256 fingerprint (32 bytes), whoever issued it.
    Pinned([u8; 32]),
}

/// A client configuration trusting `trust`, optionally presenting a client certificate.
pub fn client_config(
    trust: &Trust,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match trust {
        Trust::CaFile(path) => builder.with_root_certificates(load_roots(path)?),
        Trust::Pinned(fingerprint) => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCert {
                    fingerprint: *fingerprint,
                    algorithms: provider().signature_verification_algorithms,
                }))
        }
    };
    let config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| format!("{}: {e}", cert.display()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Where the system keeps its trusted CAs (Debian's bundle), unless `SSL_CERT_FILE` says.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What a client trusts by default: the CAs of `ca` if given, else the system's CA bundle
/// (`SSL_CERT_FILE`, else Debian's). With neither, nothing is trusted, so every certificate is
/// refused with a message that names `--ca`.
pub fn client_trust(ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    if let Some(ca) = ca {
        return client_config(&Trust::CaFile(ca.to_path_buf()), None);
    }
    let system = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| SYSTEM_CA_FILE.into());
    if system.is_file() {
        return client_config(&Trust::CaFile(system), None);
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The SHA-256 fingerprint of a DER certificate.
pub fn fingerprint(cert: &[u8]) -> [u8; 32] {
    Sha256::digest(cert).into()
}

/// Parse a fingerprint written as 64 hex digits, optionally `sha256:`-prefixed and with `:`
/// between bytes (as `openssl x509 -fingerprint -sha256` prints it).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let hex: String = text
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let bad = || format!("{text:?} is not a SHA-256 fingerprint (64 hex digits)");
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Trusts one certificate by its fingerprint; signatures are still checked against its key, so
/// only the holder of that certificate's private key passes.
#[derive(Debug)]
struct PinnedCert {
    fingerprint: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity);
        // Not secret: a fingerprint is public, so a plain comparison is fine.
        if got == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The name to check a server's certificate against: an IP address or a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_both_spellings() {
        let plain = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let colons: String = plain
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        let a = parse_fingerprint(plain).unwrap();
        assert_eq!(a, parse_fingerprint(&format!("sha256:{colons}")).unwrap());
        assert_eq!(a[1], 0x11);
        assert_eq!(
            parse_fingerprint("abc").unwrap_err(),
            "\"abc\" is not a SHA-256 fingerprint (64 hex digits)"
        );
    }

    fn cert_with(dn: &[(rcgen::DnType, &str)], sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in dn {
            params.distinguished_name.push(ty.clone(), *value);
        }
        params.subject_alt_names = sans;
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn certificate_users_by_cn_email_and_uri() {
        use rcgen::{DnType, SanType};
        let cn = CertMap::Cn;
        let alice = cert_with(
            &[
                (DnType::OrganizationName, "o"),
                (DnType::CommonName, "Alice"),
            ],
            vec![],
        );
        assert_eq!(
            certificate_user(&alice, &cn).unwrap(),
            "Alice",
            "no folding"
        );
        // A second CN (same OID, its own RDN) makes the subject ambiguous.
        let two = cert_with(
            &[
                (DnType::CommonName, "alice"),
                (DnType::CustomDnType(vec![2, 5, 4, 3]), "root"),
            ],
            vec![],
        );
        assert_eq!(
            certificate_user(&two, &cn).unwrap_err(),
            "the certificate has 2 subject CNs; one is needed"
        );
        let none = cert_with(&[(DnType::OrganizationName, "o")], vec![]);
        assert_eq!(
            certificate_user(&none, &cn).unwrap_err(),
            "the certificate has no subject CN"
        );
        let email = CertMap::Email("example.org".into());
        let mail = |a: &str| SanType::Rfc822Name(a.try_into().unwrap());
        let c = cert_with(&[(DnType::CommonName, "x")], vec![mail("bob@Example.ORG")]);
        assert_eq!(certificate_user(&c, &email).unwrap(), "bob");
        let c = cert_with(&[], vec![mail("bob@example.net")]);
        assert!(certificate_user(&c, &email).is_err());
        let c = cert_with(&[], vec![mail("bob@example.org"), mail("eve@example.org")]);
        assert_eq!(
            certificate_user(&c, &email).unwrap_err(),
            "the certificate has 2 email SANs; one is needed"
        );
        let uri = CertMap::Uri("spiffe://example.org/user/".into());
        let u = |a: &str| SanType::URI(a.try_into().unwrap());
        let c = cert_with(&[], vec![u("spiffe://example.org/user/carol")]);
        assert_eq!(certificate_user(&c, &uri).unwrap(), "carol");
        let c = cert_with(&[], vec![u("spiffe://example.org/admin/carol")]);
        assert!(certificate_user(&c, &uri).is_err());
        assert!(certificate_user(b"", &cn).is_err());
        assert!(certificate_user(&alice[..20], &cn).is_err());
    }

    #[test]
    fn missing_files_are_named() {
        let err = load_certs(Path::new("/nonexistent/cert.pem")).unwrap_err();
        assert!(
            err.starts_with("/nonexistent/cert.pem: cannot read certificates"),
            "{err}"
        );
    }
}
