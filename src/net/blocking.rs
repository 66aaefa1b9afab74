//! The client side of every transport, blocking (std sockets, for the `bester` command, the load
//! generator and tests): frame bodies over plain TCP, TLS, WebSocket or WebSocket over TLS.
//! TLS refuses a certificate it cannot verify, saying why.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tungstenite::Message;
use tungstenite::protocol::WebSocket;

use crate::protocol::{FrameDecoder, encode_frame};

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

/// A blocking connection carrying frame bodies.
pub enum Connection {
    /// Length-prefixed frames over TCP or TLS.
    Framed {
        /// The stream.
        stream: MaybeTls,
        /// Decoder for what comes back.
        decoder: FrameDecoder,
        /// Received bytes not yet returned.
        input: Vec<u8>,
    },
    /// One WebSocket message per frame body.
    Ws(Box<WebSocket<MaybeTls>>),
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

impl Connection {
    /// Connect to `addr` (named `host` for TLS and the WebSocket `Host`) with `scheme`;
    /// `tls` is required for the TLS schemes.
    pub fn connect(
        scheme: Scheme,
        addr: SocketAddr,
        host: &str,
        tls: Option<Arc<ClientConfig>>,
        timeout: Option<Duration>,
    ) -> io::Result<Connection> {
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
            Scheme::Tcp | Scheme::Tls => Ok(Connection::Framed {
                stream,
                decoder: FrameDecoder::new(MAX_FRAME),
                input: Vec::new(),
            }),
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
                Ok(Connection::Ws(Box::new(ws)))
            }
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Connection::Framed { stream, .. } => stream.tcp(),
            Connection::Ws(ws) => ws.get_ref().tcp(),
        }
    }

    /// Give up waiting for a frame after this long.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }

    /// The server's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// Send one frame body.
    pub fn send_body(&mut self, body: &[u8]) -> io::Result<()> {
        match self {
            Connection::Framed { stream, .. } => {
                let mut frame = Vec::with_capacity(body.len() + 4);
                encode_frame(body, &mut frame);
                stream.write_all(&frame)?;
                stream.flush()
            }
            Connection::Ws(ws) => {
                let text = String::from_utf8_lossy(body).into_owned();
                ws.send(Message::text(text)).map_err(ws_io)
            }
        }
    }

    /// Queue frame bodies and send them in one go (pipelining).
    pub fn send_bodies(&mut self, bodies: &[Vec<u8>]) -> io::Result<()> {
        match self {
            Connection::Framed { stream, .. } => {
                let mut wire = Vec::new();
                for body in bodies {
                    encode_frame(body, &mut wire);
                }
                stream.write_all(&wire)?;
                stream.flush()
            }
            Connection::Ws(ws) => {
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
        match self {
            Connection::Framed {
                stream,
                decoder,
                input,
            } => loop {
                match decoder.decode(input) {
                    Ok(Some((used, body))) => {
                        let body = body.to_vec();
                        input.drain(..used);
                        return Ok(Some(body));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
                let mut buf = [0u8; 16 * 1024];
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                input.extend_from_slice(&buf[..n]);
            },
            Connection::Ws(ws) => loop {
                match ws.read() {
                    Ok(Message::Text(t)) => return Ok(Some(t.as_bytes().to_vec())),
                    Ok(Message::Binary(b)) => return Ok(Some(b.to_vec())),
                    Ok(Message::Close(_)) => {}
                    Ok(_) => {}
                    Err(
                        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                    ) => {
                        return Ok(None);
                    }
                    Err(e) => return Err(ws_io(e)),
                }
            },
        }
    }
}

fn ws_io(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}
