//! The server (in progress).
pub mod token;
