//! besterd: a message broker (TCP, TLS, WebSocket) that dispatches JSON messages by `payload.type` to handler
//! processes written in any language.
//!
//! # Architecture
//!
//! Three layers, one direction: bytes → frames → typed messages → routing actions.
//!
//! - [`protocol`] (pure): the length-prefixed [`protocol::frame`] codec, the serde
//!   [`protocol::message`] types, the stable [`protocol::ErrorCode`]s, and the PROXY protocol
//!   header of listeners behind a load balancer ([`protocol::proxy`]).
//! - [`net`]: the only code that reads and writes sockets — [`net::Framed`] streams with bounded
//!   buffers, for TCP clients and Unix-socket handlers alike, over a [`net::Transport`]: plain,
//!   TLS ([`net::tls`], rustls) or WebSocket ([`net::ws`], tungstenite; permessage-deflate in
//!   [`net::ws_deflate`], negotiated by [`protocol::ws_deflate`]); [`net::blocking`] is the
//!   client side of the same transports; [`net::accept`] keeps every listener accepting when
//!   file descriptors run out (retry with backoff, a spare descriptor to shed the queue).
//! - [`router`] (sans-io): presence, handler pools, requests in flight and their deadlines; takes
//!   events, returns [`router::Action`]s.
//! - [`server`]: the mio event loop that ties them together — accepts, reads, dispatches, applies
//!   actions, flushes; the listener table (`[server] listen` and `[[listeners]]`) in
//!   `server/listeners.rs`, client sessions and built-ins in `server/client.rs`, logins by client certificate in
//!   `server/cert_login.rs`, by ed25519 key in `server/key_login.rs` (frames in
//!   [`protocol::challenge`], signatures in [`auth::keys`]), token logins (JWT), resume tokens
//!   and session expiry in `server/token_login.rs` (keys from `config/auth.rs`), handler links in
//!   `server/handlers.rs`, a handler's redirect of its client in `server/redirect.rs` (its
//!   shapes in [`protocol::redirect`]). The built-in web client (`src/web/`) is served by
//!   WebSocket listeners.
//!   Life under a service manager: `server/lifecycle.rs` (sd_notify, readiness, signals, the drain), `server/activation.rs` (socket activation),
//!   `server/reload.rs` (SIGHUP, carrying out the pure [`config::diff`]), `server/revoke.rs`
//!   (sessions whose user was deleted or whose password changed elsewhere). Several users on
//!   one gateway connection: `server/attach.rs` (`bester.attach`, `header.user`; each attached
//!   user an id of its own to the router), its shapes in [`protocol::attach`].
//! - [`handler`]: the runtime directory for handler sockets, the [`handler::Supervisor`] that
//!   starts, reaps and restarts handler processes, and the [`handler::Dialer`] for handlers the
//!   broker connects to (`connect`, dialled per request by `server/dial.rs`; matched to their
//!   requests by order or connection in `router/correlate.rs`).
//! - [`federation`]: the peer handshake; peer links live in `server/peers.rs`, their routing in
//!   `router/federation.rs`, their frames in [`protocol::peer`].
//! - [`auth`]: the argon2id user store (atomic 0600 writes) and the verifier threads that keep
//!   password hashing off the event loop, reporting back through a `mio::Waker`.
//! - [`stats`] (pure): counters and fixed-bucket histograms the router and the server update;
//!   `server/monitor.rs` serves them over HTTP (JSON and Prometheus text) and `server/admin.rs`
//!   over the private control socket (`besterd ctl`).
//! - [`delivery`]: durable, acknowledged delivery to offline users — the SQLite delivery store
//!   and the one thread that reads and writes it (group commit, bounded channels, the loop's
//!   waker); the router decides what is stored (`router/durable.rs`), `server/delivery.rs`
//!   carries it out (the backlog on login, `bester.ack`).
//! - [`fsutil`]: the one way besterd creates or writes files and directories by path (no
//!   symbolic links followed, exclusive creation, ownership and mode checked through the open
//!   descriptor), for the user store's lock and temp files, the ready file and the runtime
//!   directory.
//! - [`config`]: the TOML file validated into a [`config::Config`]; [`cli`]: the command line;
//!   [`ctl`]: the `besterd ctl` side of the control socket;
//!   [`client`]: a small blocking client used by the `bester` command and the tests;
//!   [`conformance`]: `besterd handler-test`, which runs a handler program as besterd would and
//!   checks it against the protocol (a client-side tool on top of [`protocol`] and [`handler`]).
//!
//! # The hot path, and cores
//!
//! One event-loop thread owns every connection and all routing state; argon2 runs on the verifier
//! threads and handlers are processes of their own, so they already use other cores. On a round
//! trip a client's message and the handler's reply are read by the fast lane of
//! `protocol/scan.rs` (one strict pass that borrows every string and `payload.data` from the
//! frame; anything unusual goes to the serde path, which gives the exact error); the request to
//! the handler and the reply to the client are written by hand (`protocol/write.rs`) into pooled
//! buffers (`protocol/pool.rs`); request records share the type name and the client's sender and
//! keep a short reply id in place; connection buffers that grow for a burst come from and go back
//! to the loop's spares (`net/spare.rs`); deadlines in time order are a FIFO
//! (`router/deadlines.rs`). No heap allocation per echo round trip at one in flight, 0.23 at 64
//! (`scripts/bench.sh allocs`).
//!
//! **Two cores: one loop thread.** Measured with `scripts/bench.sh compare` (benches/RESULTS.md):
//! at 8 connections × 16 in flight, about 200k round trips/s cost the loop thread 0.27 CPU-s per
//! 100k round trips, i.e. about half a core, while loop, C handler and load generator together
//! kept 1.7 of the 2 cores busy: the load generator and the handler take the rest. A second loop
//! thread pays only when the one loop saturates its core with cores to spare; on 2 cores neither
//! holds (a second loop would compete with the handler and the clients for the same two cores),
//! and it would add cross-thread traffic for every `sendClients` between users on different
//! threads. Not built.
//!
//! **16 or 64 cores: one loop per core, shared nothing on the hot path.** The design that scales:
//! - N loop threads (about one per core left after the handler processes), each with its own
//!   `mio::Poll` and its own listening socket bound with `SO_REUSEPORT`, so the kernel spreads
//!   new connections over them; each thread owns its clients' `Framed` streams, their requests in
//!   flight, deadlines and buffer pools, exactly as the one loop does today.
//! - Each loop thread opens its own connections to every handler type (handlers already accept
//!   many connections, and `processes` per type grows with the cores), so a request and its answer
//!   never leave the thread that read it: no lock and no cross-core cache traffic per message.
//! - What is global stays small and off the hot path: presence (user → thread) as a sharded map
//!   updated at login and close; `sendClients` to users on another thread and messages for a
//!   federation link (owned by one thread) travel as bounded mpsc messages plus a `mio::Waker`;
//!   the verifier pool and the user store are shared as now.
//! - Limits keep their meaning: per-connection limits are local; global ones (connections in
//!   total, per address, per user) become atomic counters.
#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub use bester_client as client;
pub mod config;
pub mod conformance;
pub mod ctl;
pub mod delivery;
pub mod federation;
pub mod fsutil;
pub mod handler;
pub mod manpage;
pub mod net;
pub mod protocol;
pub mod router;
pub mod server;
pub mod stats;
