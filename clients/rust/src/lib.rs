//! `bester-client`: a Rust client and handler library for besterd, blocking (std sockets and
//! threads, no async runtime), with no dependency on the daemon.
//!
//! A client:
//!
//! ```no_run
//! use bester_client::{Login, Options, Session};
//! use serde_json::json;
//!
//! let login = Login::Password { user: "demo".into(), password: "demo".into() };
//! let mut session = Session::connect("bester://127.0.0.1:2222", login, Options::default())?;
//! let reply = session.request("echo", &json!({"hello": "world"}))?;
//! println!("{reply}");
//! # Ok::<(), bester_client::Error>(())
//! ```
//!
//! A handler (besterd starts it with `BESTER_SOCKET` set):
//!
//! ```no_run
//! use bester_client::handler::{Answer, serve};
//!
//! serve(|request| Answer::Reply(request.data().clone()))?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! - [`Session`]: log in by password, token, resume token or ed25519 key ([`Login`]); requests
//!   answered with their data or a typed [`Error`] (every code in [`codes`]); redirects followed
//!   with their token only; reconnection with the resume token.
//! - [`Client`]: one connection, frame by frame (pipelining, pushes, anything the protocol
//!   allows), over `bester://`, `bester+tls://`, `bester+ws://`, `bester+wss://` ([`transport`]).
//! - [`acks`]: stored pushes handed over once and acknowledged (`bester.ack`).
//! - [`handler`]: serve a handler type's requests (and an auth handler's logins).

pub mod acks;
pub mod client;
pub mod error;
pub mod frame;
pub mod handler;
pub mod login;
pub mod session;
pub mod transport;

pub use client::{Client, Uri};
pub use error::{Error, codes};
pub use login::{Identity, Login, identify, identify_offering};
pub use session::{Options, Session};
pub use transport::Scheme;
