//! Byte transport: the only module that reads and writes sockets. A [`Framed`] connection turns a
//! non-blocking TCP or Unix stream into frame bodies in and frame bodies out, with bounded buffers.

pub mod framed;
pub mod local;

pub use framed::{Framed, Overflow, ReadResult, Stream};
