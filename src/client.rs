//! A small blocking client (std `TcpStream`), used by the `bester` command and by the tests: log in,
//! send a message, wait for the reply with its id while keeping pushes aside. It speaks the same
//! framing through the same codec as the server. An optional deadline bounds every read and write
//! (a read past it fails with `io::ErrorKind::TimedOut` and leaves the client usable).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::protocol::{FrameDecoder, encode_frame};

/// Largest frame the client accepts.
const MAX_FRAME: usize = 16 << 20;

/// `bester://user:password@host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct Uri {
    /// The username.
    pub user: String,
    /// The password, if the URI carries one.
    pub password: Option<String>,
    /// `host:port`.
    pub address: String,
}

impl fmt::Debug for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bester://{}@{}", self.user, self.address)
    }
}

impl Uri {
    /// Parse a `bester://` URI; user and password may be percent-encoded.
    pub fn parse(text: &str) -> Result<Uri, String> {
        let rest = text
            .strip_prefix("bester://")
            .ok_or_else(|| format!("{text:?} does not start with bester://"))?;
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
    stream: TcpStream,
    decoder: FrameDecoder,
    input: Vec<u8>,
    pushes: VecDeque<Value>,
    deadline: Option<Instant>,
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

    fn over(stream: TcpStream) -> io::Result<Client> {
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            decoder: FrameDecoder::new(MAX_FRAME),
            input: Vec::new(),
            pushes: VecDeque::new(),
            deadline: None,
        })
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
            self.stream.set_read_timeout(Some(left))?;
            self.stream.set_write_timeout(Some(left))?;
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
        self.stream.peer_addr()
    }

    /// Give up waiting for a frame after this long (`None`: wait forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// Send one JSON frame.
    pub fn send(&mut self, value: &Value) -> io::Result<()> {
        self.send_body(value.to_string().as_bytes())
    }

    /// Send one frame with this body (which need not be JSON).
    pub fn send_body(&mut self, body: &[u8]) -> io::Result<()> {
        let mut frame = Vec::new();
        encode_frame(body, &mut frame);
        self.send_raw(&frame)
    }

    /// Write bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.arm_deadline()?;
        self.stream.write_all(bytes).map_err(timed_out)
    }

    /// The underlying stream (to misbehave with it in tests).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Close the sending side (half-close).
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Write)
    }

    /// Send a client message.
    pub fn message(&mut self, id: &str, kind: &str, data: &Value) -> io::Result<()> {
        self.send(&json!({"header":{"scope":"client","id":id},"payload":{"type":kind,"data":data}}))
    }

    /// Next frame from the server (pushes kept aside by [`Client::request`] first); `None` on EOF.
    pub fn recv(&mut self) -> io::Result<Option<Value>> {
        if let Some(push) = self.pushes.pop_front() {
            return Ok(Some(push));
        }
        self.recv_wire()
    }

    fn recv_wire(&mut self) -> io::Result<Option<Value>> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let decoded = self
                .decoder
                .decode(&self.input)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if let Some((used, body)) = decoded {
                let value = serde_json::from_slice(body)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                self.input.drain(..used);
                return Ok(Some(value));
            }
            self.arm_deadline()?;
            let n = self.stream.read(&mut chunk).map_err(timed_out)?;
            if n == 0 {
                if self.input.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-frame",
                ));
            }
            self.input.extend_from_slice(&chunk[..n]);
        }
    }

    /// Send a message and wait for the reply carrying its id; pushes received meanwhile are kept
    /// for [`Client::recv`].
    pub fn request(&mut self, id: &str, kind: &str, data: &Value) -> io::Result<Value> {
        self.message(id, kind, data)?;
        loop {
            let frame = self.recv_wire()?.ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the reply")
            })?;
            if frame["header"]["kind"] == "reply" && frame["header"]["id"] == id {
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
        assert!(Uri::parse("bester://host:1").is_err());
        assert!(Uri::parse("bester://a:%zz@h:1").is_err());
    }
}
