//! Users and passwords: the argon2id user store, the verifier pool that keeps hashing and store
//! writes off the event loop, and the `besterd user` admin commands; tokens: [`jwt`] verifies
//! the application's JWTs, [`resume`] makes and checks the resume tokens besterd issues,
//! [`keys`] checks ed25519 login signatures.
//!
//! Owns everything that touches a password or the user store file. The event loop only talks to
//! [`AuthPool`] (`submit` / `try_recv`, woken through a `mio::Waker`); the CLI calls [`run_admin`].
//!
//! It must not: run argon2 or write the store on the event loop thread, keep or log a plaintext
//! password, or write the store other than through [`user_store::update`] / [`bootstrap`]
//! (exclusive lock on `<store>.lock`, atomic 0600 replace).

pub mod admin;
pub mod jobs;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod resume;
pub mod revocations;
pub mod user_store;
pub mod worker;

pub use admin::{AdminError, run as run_admin};
pub use jobs::{AuthJob, AuthOutcome, AuthResult};
pub use user_store::{
    StoreError, UserStore, Users, bootstrap, hash_password, lock_path, update, validate_password,
    validate_username, verify_password,
};
pub use worker::AuthPool;
