//! TLS with rustls (ring provider, no OpenSSL), driven by readiness: a [`TlsStream`] is a rustls
//! connection over a non-blocking `mio` TCP stream. `read` feeds ciphertext from the socket into
//! rustls and returns plaintext; `write` hands plaintext to rustls (bounded by its buffer limit,
//! `WouldBlock` when full) and pushes ciphertext out as far as the socket takes it. Handshake
//! records are written as soon as rustls has them, so an edge-triggered loop never stalls.
//!
//! Also here: building server configurations from PEM files (reloadable: a new configuration
//! applies to connections accepted afterwards), client configurations that trust a CA file or pin
//! a certificate's SHA-256 fingerprint, and the fingerprint function itself.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, Connection, DigitallySignedStruct, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme,
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
}

impl TlsStream {
    /// The server side of a freshly accepted connection.
    pub fn server(sock: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Ok(TlsStream {
            sock,
            conn: conn.into(),
            eof: false,
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
        })
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
        let processed = self.conn.process_new_packets();
        // Handshake messages or an alert: send them now (an alert is best effort).
        let written = self.write_pending();
        match processed {
            Ok(_) => written.map(|_| true),
            Err(e) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("tls: {e}"),
            )),
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

/// A server configuration from PEM files; with `client_ca`, clients must present a certificate
/// issued by that CA. Read again on reload.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let certs = load_certs(cert)?;
    let key_path = key;
    let key = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider())
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key_path.display()))?;
    Ok(Arc::new(config))
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

/// The subject's common name (CN) of a DER certificate, if it has one (UTF8String,
/// PrintableString or IA5String). Only called on certificates rustls has already verified.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    /// One DER element at the start of `buf`: (tag, contents, rest).
    fn element(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = buf.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |a, b| (a << 8) | usize::from(*b));
            rest = &rest[n..];
            len
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let (SEQUENCE, cert, _) = element(cert)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = element(cert)? else {
        return None;
    };
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = element(tbs)?.2;
    }
    let (SEQUENCE, mut subject, _) = element(tbs)? else {
        return None;
    };
    while !subject.is_empty() {
        let (tag, set, rest) = element(subject)?;
        subject = rest;
        if tag != SET {
            return None;
        }
        let (SEQUENCE, pair, _) = element(set)? else {
            return None;
        };
        let (0x06, oid, value) = element(pair)? else {
            return None;
        };
        if oid == CN {
            let (tag, text, _) = element(value)?;
            return matches!(tag, 0x0c | 0x13 | 0x16)
                .then(|| std::str::from_utf8(text).ok().map(str::to_string))
                .flatten();
        }
    }
    None
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

    #[test]
    fn common_name_of_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "besterd");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()).as_deref(), Some("alice"));
        let no_cn = rcgen::CertificateParams::new(vec!["x.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        // rcgen's default subject has a CN too; a cut-off certificate yields none, no panic.
        let mut der = no_cn.der().to_vec();
        assert!(subject_common_name(&der).is_some());
        der.truncate(20);
        assert_eq!(subject_common_name(&der), None);
        assert_eq!(subject_common_name(b""), None);
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
