//! What a [`Framed`](super::Framed) connection runs over: a [`Link`] that carries bytes (plain TCP
//! or Unix, or TLS over TCP), and optionally WebSocket messages on top of it
//! ([`WsServer`]). The frame layer above sees the same frame bodies on every transport.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::framed::Stream;
use super::tls::TlsStream;
use super::ws::{WsOptions, WsServer};

/// A byte stream: plain, or TLS over TCP.
#[derive(Debug)]
pub enum Link {
    /// TCP or Unix without encryption.
    Plain(Stream),
    /// TLS over TCP.
    Tls(Box<TlsStream>),
}

impl Link {
    /// Write what the link itself has pending (TLS records); `Ok(true)` when nothing is left.
    pub fn write_pending(&mut self) -> io::Result<bool> {
        match self {
            Link::Plain(_) => Ok(true),
            Link::Tls(tls) => tls.write_pending(),
        }
    }

    /// Close both directions (TLS: close_notify first, best effort).
    pub fn shutdown(&mut self) {
        match self {
            Link::Plain(stream) => stream.shutdown(),
            Link::Tls(tls) => tls.shutdown(),
        }
    }

    /// The TCP stream, for socket options.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Link::Plain(Stream::Tcp(s)) => Some(s),
            Link::Plain(Stream::Unix(_)) => None,
            Link::Tls(tls) => Some(tls.tcp()),
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Link::Plain(stream) => stream,
            Link::Tls(tls) => tls.tcp_mut(),
        }
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.read(buf),
            Link::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.write(buf),
            Link::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Link {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.source().register(r, t, i)
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.source().reregister(r, t, i)
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.source().deregister(r)
    }
}

/// A link, and WebSocket on top of it for connections accepted on a `ws`/`wss` listener.
#[derive(Debug)]
pub struct Transport {
    /// The bytes.
    pub link: Link,
    /// The WebSocket layer, if any.
    pub ws: Option<Box<WsServer>>,
}

impl Transport {
    /// Frames straight on the link.
    pub fn new(link: Link) -> Transport {
        Transport { link, ws: None }
    }

    /// WebSocket messages on the link, accepted by a server with these options; messages over
    /// `max_message` bytes are refused.
    pub fn websocket(link: Link, options: Arc<WsOptions>, max_message: usize) -> Transport {
        Transport {
            link,
            ws: Some(Box::new(WsServer::new(options, max_message))),
        }
    }

    /// A short name for logs: `tcp`, `tls`, `ws`, `wss`, `unix`.
    pub fn kind(&self) -> &'static str {
        match (&self.link, self.ws.is_some()) {
            (Link::Plain(Stream::Unix(_)), _) => "unix",
            (Link::Plain(_), false) => "tcp",
            (Link::Plain(_), true) => "ws",
            (Link::Tls(_), false) => "tls",
            (Link::Tls(_), true) => "wss",
        }
    }
}

impl From<Stream> for Transport {
    fn from(stream: Stream) -> Transport {
        Transport::new(Link::Plain(stream))
    }
}

impl From<Link> for Transport {
    fn from(link: Link) -> Transport {
        Transport::new(link)
    }
}
