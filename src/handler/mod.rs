//! Handler processes: where their sockets live and how they are started, watched and restarted.
//! The sockets themselves are read and written by `net/` through the server's loop.

pub mod runtime;
pub mod supervisor;

pub use runtime::RuntimeDir;
pub use supervisor::Supervisor;
