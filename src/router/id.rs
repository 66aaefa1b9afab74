//! Connection identities as the router names them: a slab slot plus a generation, so that a late
//! answer for a closed connection never reaches whoever reuses its slot. The server hands them
//! out and maps them to poll tokens; the router only compares and stores them.

use std::fmt;

/// A connection: its slab slot and the generation it was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The slab key.
    pub slot: usize,
    /// Unique per connection over the server's life.
    pub generation: u64,
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.slot, self.generation)
    }
}
