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
/// Handler socket listeners take tokens from here up.
pub const HANDLER_LISTENER_BASE: usize = 16;
/// Connections take tokens from here up (slab key + base).
pub const CONN_BASE: usize = 1 << 20;

/// The mio token of a connection.
pub fn conn_token(id: ConnId) -> Token {
    Token(CONN_BASE + id.slot)
}
