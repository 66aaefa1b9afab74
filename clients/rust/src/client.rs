//! One connection to a besterd server, blocking (std sockets): send frames, wait for the reply
//! carrying an id while keeping pushes aside, over plain TCP, TLS or WebSocket
//! ([`crate::transport`]). An optional deadline bounds every read and write (a read past it
//! fails with `io::ErrorKind::TimedOut` and leaves the client usable). Logging in is
//! [`crate::login`]; reconnecting and following redirects is [`crate::session`].

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use serde_json::{Value, json};

use crate::frame::{COMPRESS_MIN, FrameDecoder, deflate, inflate};
use crate::transport::{MaybeTls, Scheme, Wire};
use std::sync::Arc;

/// Largest frame the client accepts.
const MAX_FRAME: usize = 16 << 20;

/// `bester://user:password@host:port` (or `bester+tls://`, `bester+ws://`, `bester+wss://`).
#[derive(Clone, PartialEq, Eq)]
pub struct Uri {
    /// The transport.
    pub scheme: Scheme,
    /// The username.
    pub user: String,
    /// The password, if the URI carries one.
    pub password: Option<String>,
    /// `host:port`.
    pub address: String,
}

impl fmt::Debug for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}@{}", self.scheme.prefix(), self.user, self.address)
    }
}

impl Uri {
    /// Parse a `bester://` (or `bester+tls://`, `bester+ws://`, `bester+wss://`) URI; user and
    /// password may be percent-encoded.
    pub fn parse(text: &str) -> Result<Uri, String> {
        let (scheme, rest) = Scheme::split(text).ok_or_else(|| {
            format!(
                "{text:?} does not start with bester:// (or bester+tls://, bester+ws://, bester+wss://)"
            )
        })?;
        let (userinfo, address) = rest
            .rsplit_once('@')
            .ok_or("the URI needs a user: bester://user:password@host:port")?;
        let address = address.trim_end_matches('/');
        if address.is_empty() {
            return Err("the URI needs host:port".into());
        }
        let address = if address.contains(':') {
            address.to_string()
        } else {
            format!("{address}:2222")
        };
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(percent_decode(p)?)),
            None => (userinfo, None),
        };
        Ok(Uri {
            scheme,
            user: percent_decode(user)?,
            password,
            address,
        })
    }
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or("truncated %-escape in URI")?;
            out.push(
                u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape %{hex} in URI"))?,
            );
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "URI user or password is not UTF-8".into())
}

/// A connection to a besterd server.
pub struct Client {
    stream: Wire,
    decoder: FrameDecoder,
    input: Vec<u8>,
    pushes: VecDeque<Value>,
    deadline: Option<Instant>,
    /// The session negotiated `compress` (PROTOCOL.md §1.2).
    compress: bool,
    /// Compressed frames sent and received.
    compressed: (u64, u64),
}

impl Client {
    /// Connect without identifying.
    pub fn connect(address: impl ToSocketAddrs) -> io::Result<Client> {
        Client::over(TcpStream::connect(address)?)
    }

    /// Connect without identifying, trying each address `address` resolves to until `deadline`
    /// (`None`: no limit but the system's). Name resolution itself is not bounded.
    pub fn connect_until(address: &str, deadline: Option<Instant>) -> io::Result<Client> {
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("{address} resolves to no address"),
        );
        for addr in address.to_socket_addrs()? {
            let attempt = match deadline {
                None => TcpStream::connect(addr),
                Some(deadline) => match remaining(deadline) {
                    Ok(left) => TcpStream::connect_timeout(&addr, left),
                    Err(e) => return Err(e),
                },
            };
            match attempt {
                Ok(stream) => {
                    let mut client = Client::over(stream)?;
                    client.set_deadline(deadline);
                    return Ok(client);
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Connect with the URI's transport without identifying, within `deadline`. TLS trusts
    /// `tls` (required for `bester+tls://` and `bester+wss://`) and refuses a certificate it
    /// cannot verify, saying why.
    pub fn connect_uri(
        uri: &Uri,
        tls: Option<Arc<ClientConfig>>,
        deadline: Option<Instant>,
    ) -> io::Result<Client> {
        if uri.scheme == Scheme::Tcp {
            return Client::connect_until(&uri.address, deadline);
        }
        let host = uri
            .address
            .rsplit_once(':')
            .map_or(uri.address.as_str(), |(h, _)| h);
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} resolves to no address", uri.address),
        );
        for addr in uri.address.to_socket_addrs()? {
            let left = deadline.map(remaining).transpose()?;
            match Wire::connect(uri.scheme, addr, host, tls.clone(), left) {
                Ok(wire) => {
                    let mut client = Client::on(wire);
                    client.set_deadline(deadline);
                    return Ok(client);
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(e),
                Err(e) => last = timed_out(e),
            }
        }
        Err(last)
    }

    fn over(stream: TcpStream) -> io::Result<Client> {
        stream.set_nodelay(true)?;
        Ok(Client::on(Wire::Stream(MaybeTls::Plain(stream))))
    }

    fn on(stream: Wire) -> Client {
        Client {
            stream,
            decoder: FrameDecoder::new(MAX_FRAME),
            input: Vec::new(),
            pushes: VecDeque::new(),
            deadline: None,
            compress: false,
            compressed: (0, 0),
        }
    }

    /// Whether the session negotiated `compress`: when on, bodies starting with 0x00 are
    /// inflated, and [`Client::message`] compresses bodies of [`COMPRESS_MIN`] bytes or more
    /// when that makes them shorter — never a `bester.*` message, which carries passwords,
    /// tokens or other users' credentials (a secret compressed beside text an attacker chose
    /// leaks through the sizes). Set by [`crate::login::identify_offering`].
    pub fn set_compress(&mut self, on: bool) {
        self.compress = on;
    }

    /// Compressed frames sent and received on this connection.
    pub fn compressed_frames(&self) -> (u64, u64) {
        self.compressed
    }

    /// Fail every read and write that would end after `deadline` with `io::ErrorKind::TimedOut`
    /// (`None`: wait as long as it takes). Replaces [`Client::set_timeout`].
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Set the socket timeouts to what is left before the deadline.
    fn arm_deadline(&self) -> io::Result<()> {
        if let Some(deadline) = self.deadline {
            let left = remaining(deadline)?;
            self.stream.tcp().set_read_timeout(Some(left))?;
            self.stream.tcp().set_write_timeout(Some(left))?;
        }
        Ok(())
    }

    /// Connect and identify; the identify reply is returned whatever its status.
    pub fn login(
        address: impl ToSocketAddrs,
        user: &str,
        password: &str,
    ) -> io::Result<(Client, Value)> {
        let mut client = Client::connect(address)?;
        client.send(&json!({"header":{"identify":{"type":"client","authentication":{"username":user,"password":password}}}}))?;
        let reply = client
            .recv()?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed during login"))?;
        Ok((client, reply))
    }

    /// The server's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.tcp().peer_addr()
    }

    /// Give up waiting for a frame after this long (`None`: wait forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.tcp().set_read_timeout(timeout)
    }

    /// Send one JSON frame.
    pub fn send(&mut self, value: &Value) -> io::Result<()> {
        self.send_body(value.to_string().as_bytes())
    }

    /// Send one frame with this body (which need not be JSON).
    pub fn send_body(&mut self, body: &[u8]) -> io::Result<()> {
        self.arm_deadline()?;
        self.stream.write_body(body).map_err(timed_out)
    }

    /// Write bytes as they are (over WebSocket: as one binary message).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.arm_deadline()?;
        self.stream.write_raw(bytes).map_err(timed_out)
    }

    /// The underlying stream (to misbehave with it in tests).
    pub fn into_stream(self) -> TcpStream {
        self.stream.into_tcp()
    }

    /// Close the sending side (half-close).
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.tcp().shutdown(std::net::Shutdown::Write)
    }

    /// Send a client message (compressed when the session compresses and that pays).
    pub fn message(&mut self, id: &str, kind: &str, data: &Value) -> io::Result<()> {
        let body = json!({"header":{"scope":"client","id":id},"payload":{"type":kind,"data":data}})
            .to_string();
        if self.compress
            && !kind.starts_with("bester.")
            && body.len() >= COMPRESS_MIN
            && let Some(packed) = deflate(body.as_bytes())
        {
            self.compressed.0 += 1;
            return self.send_body(&packed);
        }
        self.send_body(body.as_bytes())
    }

    /// Whether a whole frame is waiting to be returned by [`Client::recv`] without a read.
    pub fn has_frame(&self) -> bool {
        !self.pushes.is_empty() || matches!(self.decoder.decode(&self.input), Ok(Some(_)))
    }

    /// Next frame from the server (pushes kept aside by [`Client::request`] first); `None` on EOF.
    pub fn recv(&mut self) -> io::Result<Option<Value>> {
        if let Some(push) = self.pushes.pop_front() {
            return Ok(Some(push));
        }
        self.recv_wire()
    }

    fn recv_wire(&mut self) -> io::Result<Option<Value>> {
        loop {
            let decoded = self.decoder.decode(&self.input)?;
            if let Some((used, body)) = decoded {
                let value = if body.first() == Some(&0) {
                    if !self.compress {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "a compressed frame on a session that did not negotiate \"compress\"",
                        ));
                    }
                    self.compressed.1 += 1;
                    serde_json::from_slice(&inflate(body, MAX_FRAME)?)
                } else {
                    serde_json::from_slice(body)
                }
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                self.input.drain(..used);
                return Ok(Some(value));
            }
            self.arm_deadline()?;
            // A signal (SIGCHLD of a process the caller started, say) is not the server's doing.
            let n = match self.stream.read_into(&mut self.input) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => read.map_err(timed_out)?,
            };
            if n == 0 {
                if self.input.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-frame",
                ));
            }
        }
    }

    /// Send a message and wait for the answer carrying its id (a reply, or a redirect); pushes
    /// received meanwhile are kept for [`Client::recv`].
    pub fn request(&mut self, id: &str, kind: &str, data: &Value) -> io::Result<Value> {
        self.message(id, kind, data)?;
        loop {
            let frame = self.recv_wire()?.ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the reply")
            })?;
            let answers = matches!(frame["header"]["kind"].as_str(), Some("reply" | "redirect"));
            if answers && frame["header"]["id"] == id {
                return Ok(frame);
            }
            self.pushes.push_back(frame);
        }
    }
}

/// Time left before `deadline`, or `TimedOut` if none is.
fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
    } else {
        Ok(left)
    }
}

/// A socket timeout shows as `WouldBlock` on Unix; call it what it is.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_forms() {
        let uri = Uri::parse("bester://alice:s%40cret@127.0.0.1:2222").unwrap();
        assert_eq!(uri.user, "alice");
        assert_eq!(uri.password.as_deref(), Some("s@cret"));
        assert_eq!(uri.address, "127.0.0.1:2222");
        assert!(
            !format!("{uri:?}").contains("cret"),
            "Debug must not show the password"
        );
        let uri = Uri::parse("bester://bob@localhost").unwrap();
        assert_eq!(
            (uri.password, uri.address.as_str()),
            (None, "localhost:2222")
        );
        assert!(Uri::parse("http://a@b:1").is_err());
        for (text, scheme) in [
            ("bester+tls://a:p@h:1", Scheme::Tls),
            ("bester+ws://a:p@h:1", Scheme::Ws),
            ("bester+wss://a@h:1", Scheme::Wss),
            ("bester://a@h:1", Scheme::Tcp),
        ] {
            let uri = Uri::parse(text).unwrap();
            assert_eq!((uri.scheme, uri.address.as_str()), (scheme, "h:1"));
            assert!(format!("{uri:?}").starts_with(scheme.prefix()));
        }
        assert!(Uri::parse("bester://host:1").is_err());
        assert!(Uri::parse("bester://a:%zz@h:1").is_err());
    }
}
