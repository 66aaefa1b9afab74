//! Users and passwords: the argon2id user store, the verifier thread pool that keeps hashing off the
//! event loop, and the `besterd user` admin commands.
//!
//! Placeholder: the real implementation lands with the auth work.

pub mod admin;
pub mod user_store;
pub mod worker;
