//! besterd: a plain-TCP message broker that dispatches JSON messages by `payload.type` to handler
//! processes written in any language.
//!
//! # Architecture
//!
//! Three layers, one direction: bytes → frames → typed messages → routing actions.
//!
//! - [`protocol`] (pure): the length-prefixed [`protocol::frame`] codec, the serde
//!   [`protocol::message`] types, and the stable [`protocol::ErrorCode`]s.
//! - [`net`]: the only code that reads and writes sockets — [`net::Framed`] streams with bounded
//!   buffers, for TCP clients and Unix-socket handlers alike.
//! - [`router`] (sans-io): presence, handler pools, requests in flight and their deadlines; takes
//!   events, returns [`router::Action`]s.
//! - [`server`]: the mio event loop that ties them together — accepts, reads, dispatches, applies
//!   actions, flushes; client sessions and built-ins in `server/client.rs`, handler links in
//!   `server/handlers.rs`.
//! - [`handler`]: the runtime directory for handler sockets, the [`handler::Supervisor`] that
//!   starts, reaps and restarts handler processes, and the [`handler::Dialer`] for handlers the
//!   broker connects to (`connect`, dialled per request by `server/dial.rs`; matched to their
//!   requests by order or connection in `router/correlate.rs`).
//! - [`federation`]: the peer handshake; peer links live in `server/peers.rs`, their routing in
//!   `router/federation.rs`, their frames in [`protocol::peer`].
//! - [`auth`]: the argon2id user store (atomic 0600 writes) and the verifier threads that keep
//!   password hashing off the event loop, reporting back through a `mio::Waker`.
//! - [`config`]: the TOML file validated into a [`config::Config`]; [`cli`]: the command line;
//!   [`client`]: a small blocking client used by the `bester` command and the tests.
#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod federation;
pub mod handler;
pub mod net;
pub mod protocol;
pub mod router;
pub mod server;
