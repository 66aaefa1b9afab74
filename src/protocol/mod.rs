//! The wire protocol, pure: framing, message types and error codes. Nothing here touches a socket
//! or a clock; `net/` moves the bytes and `server/` decides what to do with the messages.
//!
//! `protocol/PROTOCOL.md` at the top of the repository is the specification this module implements,
//! and `protocol/vectors/` holds the examples the tests load.

pub mod attach;
pub mod challenge;
pub mod compress;
pub mod directory;
pub mod durable;
pub mod error;
pub mod features;
pub mod frame;
pub mod groups;
pub mod handler;
pub mod login;
pub mod message;
pub mod peer;
pub mod peer_stream;
pub mod pool;
pub mod proxy;
pub mod redact;
pub mod redirect;
pub mod scan;
pub mod stream;
pub mod validate;
pub mod write;
pub mod ws_deflate;

pub use error::ErrorCode;
pub use frame::{FrameDecoder, FrameError, encode_frame};
