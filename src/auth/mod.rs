//! Users and passwords: the argon2id user store ([`user_store`]), the verifier threads that keep
//! hashing off the event loop ([`worker`]), and the `besterd user` admin commands ([`admin`]).
//!
//! Passwords exist in clear only in memory, on their way to argon2; they are never stored, logged or
//! put in an error message.

pub mod admin;
pub mod user_store;
pub mod worker;

pub use user_store::{StoreError, UserStore};
pub use worker::{AuthJob, AuthOutcome, AuthPool, AuthResult};
