//! Connection identities: mio tokens for the reserved event sources, and `ConnId`, a slab slot plus
//! a generation, so that a late answer for a closed connection never reaches whoever reuses its slot.

use std::fmt;

use mio::Token;

/// The TCP listener.
pub const LISTENER: Token = Token(0);
/// Wakes the loop when a worker thread has a result.
pub const WAKER: Token = Token(1);
/// SIGTERM, SIGINT, SIGCHLD, SIGHUP.
pub const SIGNALS: Token = Token(2);
/// Handler socket listeners take tokens from here up.
pub const HANDLER_LISTENER_BASE: usize = 16;
/// Connections take tokens from here up (slab key + base).
pub const CONN_BASE: usize = 1 << 20;

/// A connection: its slab slot and the generation it was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The slab key.
    pub slot: usize,
    /// Unique per connection over the server's life.
    pub generation: u64,
}

impl ConnId {
    /// The mio token of this connection.
    pub fn token(self) -> Token {
        Token(CONN_BASE + self.slot)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.slot, self.generation)
    }
}
