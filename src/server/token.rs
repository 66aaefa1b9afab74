//! Poll tokens: the reserved event sources, and the mapping from a [`ConnId`] (the router's name
//! for a connection) to its token.

use mio::Token;

use crate::router::ConnId;

/// Client listeners take tokens from here up (`[server] listen` first, then `[[listeners]]`).
pub const LISTENER_BASE: usize = 1 << 16;
/// The `[server] listen` listener.
pub const LISTENER: Token = Token(LISTENER_BASE);
/// Wakes the loop when a worker thread has a result.
pub const WAKER: Token = Token(1);
/// SIGTERM, SIGINT, SIGCHLD, SIGHUP.
pub const SIGNALS: Token = Token(2);
/// The monitoring HTTP listener (`[monitor] listen`).
pub const MONITOR_LISTENER: Token = Token(3);
/// The admin control socket (`besterd ctl`).
pub const ADMIN_LISTENER: Token = Token(4);
/// The socket pair between the two processes of a hot upgrade (`server/upgrade.rs`).
pub const UPGRADE: Token = Token(5);
/// Handler socket listeners take tokens from here up.
pub const HANDLER_LISTENER_BASE: usize = 16;
/// Connections awaiting their PROXY protocol header take tokens from here up to
/// [`MONITOR_CONN_BASE`].
pub const PROXY_CONN_BASE: usize = 1 << 17;
/// Monitoring HTTP connections take tokens from here up to [`ADMIN_CONN_BASE`].
pub const MONITOR_CONN_BASE: usize = 1 << 18;
/// Admin control connections take tokens from here up to [`CONN_BASE`].
pub const ADMIN_CONN_BASE: usize = 1 << 19;
/// Connections take tokens from here up (slab key + base) to [`LINGER_BASE`].
pub const CONN_BASE: usize = 1 << 20;
/// Closed connections draining their input (`net/linger.rs`) take tokens from here up.
pub const LINGER_BASE: usize = 1 << 40;

/// The mio token of a connection.
pub fn conn_token(id: ConnId) -> Token {
    Token(CONN_BASE + id.slot)
}
