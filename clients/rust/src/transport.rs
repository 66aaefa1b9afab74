//! The client side of every transport, blocking (std sockets): frame bodies over plain TCP, TLS,
//! WebSocket or WebSocket over TLS. TLS refuses a certificate it cannot verify, saying why;
//! [`trust`] builds what it trusts from a CA file or the system's CAs.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tungstenite::Message;
use tungstenite::protocol::WebSocket;

use crate::frame::{FrameDecoder, encode_frame};

/// Largest frame a client accepts.
const MAX_FRAME: usize = 16 << 20;

/// Which transport to dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `bester://`: frames over TCP.
    Tcp,
    /// `bester+tls://`.
    Tls,
    /// `bester+ws://`.
    Ws,
    /// `bester+wss://`.
    Wss,
}

impl Scheme {
    /// The URI prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Scheme::Tcp => "bester://",
            Scheme::Tls => "bester+tls://",
            Scheme::Ws => "bester+ws://",
            Scheme::Wss => "bester+wss://",
        }
    }

    /// Split a URI into its scheme and the rest.
    pub fn split(uri: &str) -> Option<(Scheme, &str)> {
        [Scheme::Tls, Scheme::Ws, Scheme::Wss, Scheme::Tcp]
            .into_iter()
            .find_map(|s| uri.strip_prefix(s.prefix()).map(|rest| (s, rest)))
    }

    /// Whether it needs TLS.
    pub fn tls(self) -> bool {
        matches!(self, Scheme::Tls | Scheme::Wss)
    }
}

/// A TCP stream, or TLS over it.
pub enum MaybeTls {
    /// Plain.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl MaybeTls {
    fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(s) => &s.sock,
        }
    }
}

impl Read for MaybeTls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            MaybeTls::Plain(s) => s.read(buf),
            MaybeTls::Tls(s) => s.read(buf),
        }
    }
}

impl Write for MaybeTls {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            MaybeTls::Plain(s) => s.write(buf),
            MaybeTls::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            MaybeTls::Plain(s) => s.flush(),
            MaybeTls::Tls(s) => s.flush(),
        }
    }
}

/// A blocking connection to a server: bytes (frames) over TCP or TLS, or WebSocket messages.
pub enum Wire {
    /// Length-prefixed frames over TCP or TLS.
    Stream(MaybeTls),
    /// One WebSocket message per frame body.
    Ws(Box<WebSocket<MaybeTls>>),
}

impl Wire {
    /// The TCP stream underneath (timeouts, shutdown, addresses).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Wire::Stream(stream) => stream.tcp(),
            Wire::Ws(ws) => ws.get_ref().tcp(),
        }
    }

    /// The TCP stream, giving up the rest (to misbehave with it in tests).
    pub fn into_tcp(self) -> TcpStream {
        match self {
            Wire::Stream(MaybeTls::Plain(s)) => s,
            Wire::Stream(MaybeTls::Tls(s)) => s.sock,
            Wire::Ws(ws) => match ws.into_inner() {
                MaybeTls::Plain(s) => s,
                MaybeTls::Tls(s) => s.sock,
            },
        }
    }

    /// Send one frame body.
    pub fn write_body(&mut self, body: &[u8]) -> io::Result<()> {
        match self {
            Wire::Stream(_) => {
                let mut frame = Vec::with_capacity(body.len() + 4);
                encode_frame(body, &mut frame);
                self.write_raw(&frame)
            }
            Wire::Ws(ws) => {
                let text = String::from_utf8_lossy(body).into_owned();
                ws.send(Message::text(text)).map_err(ws_io)
            }
        }
    }

    /// Send bytes as they are (over WebSocket: as one binary message).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Wire::Stream(stream) => {
                stream.write_all(bytes)?;
                stream.flush()
            }
            Wire::Ws(ws) => ws.send(Message::binary(bytes.to_vec())).map_err(ws_io),
        }
    }

    /// Read what is there into `input` as length-prefixed frames (a WebSocket message becomes
    /// one frame); `Ok(0)` at the end of the stream.
    pub fn read_into(&mut self, input: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Wire::Stream(stream) => {
                let mut buf = [0u8; 16 * 1024];
                let n = stream.read(&mut buf)?;
                input.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            Wire::Ws(ws) => loop {
                let body = match ws.read() {
                    Ok(Message::Text(t)) => t.as_bytes().to_vec(),
                    Ok(Message::Binary(b)) => b.to_vec(),
                    Ok(_) => continue,
                    Err(
                        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                    ) => return Ok(0),
                    Err(e) => return Err(ws_io(e)),
                };
                encode_frame(&body, input);
                return Ok(body.len() + 4);
            },
        }
    }
}

/// Frame bodies over a [`Wire`] (used by tests and the load generator).
pub struct Connection {
    wire: Wire,
    decoder: FrameDecoder,
    input: Vec<u8>,
}

/// Turn a rustls error (found under an io error) into a sentence a user can act on.
fn explain(e: io::Error, host: &str) -> io::Error {
    let text = e.to_string();
    let hint = if text.contains("UnknownIssuer") || text.contains("unknown issuer") {
        format!(
            "the certificate of {host} is not signed by a trusted CA (give the CA with --ca FILE)"
        )
    } else if text.contains("Expired") || text.contains("expired") {
        format!("the certificate of {host} has expired")
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        format!("the certificate of {host} is not valid for that name")
    } else {
        return e;
    };
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("refusing the server: {hint} ({text})"),
    )
}

impl Wire {
    /// Connect to `addr` (named `host` for TLS and the WebSocket `Host`) with `scheme`;
    /// `tls` is required for the TLS schemes. `timeout` bounds the connect and each read and
    /// write until changed.
    pub fn connect(
        scheme: Scheme,
        addr: SocketAddr,
        host: &str,
        tls: Option<Arc<ClientConfig>>,
        timeout: Option<Duration>,
    ) -> io::Result<Wire> {
        let tcp = match timeout {
            Some(t) => TcpStream::connect_timeout(&addr, t)?,
            None => TcpStream::connect(addr)?,
        };
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(timeout)?;
        tcp.set_write_timeout(timeout)?;
        let mut stream = if scheme.tls() {
            let config = tls.ok_or_else(|| io::Error::other("TLS needs a client configuration"))?;
            let name = ServerName::try_from(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            )
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
            let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
            MaybeTls::Tls(Box::new(StreamOwned::new(conn, tcp)))
        } else {
            MaybeTls::Plain(tcp)
        };
        if let MaybeTls::Tls(s) = &mut stream {
            // Finish the handshake now so a bad certificate is reported as such.
            while s.conn.is_handshaking() {
                s.conn
                    .complete_io(&mut s.sock)
                    .map_err(|e| explain(e, host))?;
            }
        }
        match scheme {
            Scheme::Tcp | Scheme::Tls => Ok(Wire::Stream(stream)),
            Scheme::Ws | Scheme::Wss => {
                let http = if scheme.tls() { "wss" } else { "ws" };
                let url = format!("{http}://{host}:{}/", addr.port());
                let (ws, _) = tungstenite::client::client(url, stream).map_err(|e| match e {
                    tungstenite::HandshakeError::Failure(e) => io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("WebSocket upgrade refused: {e}"),
                    ),
                    tungstenite::HandshakeError::Interrupted(_) => {
                        io::Error::new(io::ErrorKind::TimedOut, "WebSocket upgrade timed out")
                    }
                })?;
                Ok(Wire::Ws(Box::new(ws)))
            }
        }
    }
}

impl Connection {
    /// [`Wire::connect`], with frame bodies in and out.
    pub fn connect(
        scheme: Scheme,
        addr: SocketAddr,
        host: &str,
        tls: Option<Arc<ClientConfig>>,
        timeout: Option<Duration>,
    ) -> io::Result<Connection> {
        Ok(Connection {
            wire: Wire::connect(scheme, addr, host, tls, timeout)?,
            decoder: FrameDecoder::new(MAX_FRAME),
            input: Vec::new(),
        })
    }

    /// Give up waiting for a frame after this long.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.wire.tcp().set_read_timeout(timeout)
    }

    /// The server's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.wire.tcp().peer_addr()
    }

    /// Send one frame body.
    pub fn send_body(&mut self, body: &[u8]) -> io::Result<()> {
        self.wire.write_body(body)
    }

    /// Send frame bodies in one go (pipelining).
    pub fn send_bodies(&mut self, bodies: &[Vec<u8>]) -> io::Result<()> {
        match &mut self.wire {
            Wire::Stream(_) => {
                let mut wire = Vec::new();
                for body in bodies {
                    encode_frame(body, &mut wire);
                }
                self.wire.write_raw(&wire)
            }
            Wire::Ws(ws) => {
                for body in bodies {
                    let text = String::from_utf8_lossy(body).into_owned();
                    ws.write(Message::text(text)).map_err(ws_io)?;
                }
                ws.flush().map_err(ws_io)
            }
        }
    }

    /// The next frame body; `None` at a clean end of stream (or a WebSocket close).
    pub fn recv_body(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.decoder.decode(&self.input) {
                Ok(Some((used, body))) => {
                    let body = body.to_vec();
                    self.input.drain(..used);
                    return Ok(Some(body));
                }
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            if self.wire.read_into(&mut self.input)? == 0 {
                if self.input.is_empty() {
                    return Ok(None);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

fn ws_io(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// The system's CA bundle on Debian.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What a TLS client trusts: the CA certificates of `ca` (a PEM file) if given, else the system's
/// bundle (`SSL_CERT_FILE`, else Debian's). With neither, nothing is trusted, so every certificate
/// is refused (saying to give a CA file).
pub fn trust(ca: Option<&std::path::Path>) -> Result<Arc<ClientConfig>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let file = match ca {
        Some(ca) => Some(ca.to_path_buf()),
        None => Some(
            std::env::var_os("SSL_CERT_FILE")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| SYSTEM_CA_FILE.into()),
        )
        .filter(|f| f.is_file()),
    };
    let mut roots = rustls::RootCertStore::empty();
    if let Some(file) = file {
        let certs =
            CertificateDer::pem_file_iter(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", file.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no CA certificate in it", file.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
