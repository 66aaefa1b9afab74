//! Byte transport: the only module that reads and writes sockets. A [`Framed`] connection turns a
//! non-blocking stream into frame bodies in and frame bodies out, with bounded buffers, over any
//! [`Transport`]: plain TCP or Unix, TLS ([`tls`], rustls), or WebSocket ([`ws`], tungstenite)
//! over either.

pub mod accept;
pub use bester_client::transport as blocking;
pub mod framed;
pub mod hosts;
pub mod linger;
pub mod local;
pub mod spare;
pub mod tls;
pub mod transport;
pub mod ws;
pub mod ws_deflate;

pub use framed::{Framed, Overflow, ReadResult, Stream};
pub use transport::{Link, Transport};
