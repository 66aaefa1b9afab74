//! Handler processes: where their sockets live and how they are started, watched and restarted.
//! The sockets themselves are read and written by `net/` through the server's loop; `dial` holds
//! the sockets of handlers the broker connects to.

pub mod dial;
pub mod runtime;
pub mod supervisor;

pub use dial::Dialer;
pub use runtime::RuntimeDir;
pub use supervisor::Supervisor;
