//! What the verifier pool ([`super::worker::AuthPool`]) is asked and what it answers: the jobs
//! (password checks and changes, certificate and key lookups, tokens, user-store snapshots), the
//! outcomes, and the stamps that tie a session to the user-store entry it logged in with, so that
//! a change to the entry revokes the session.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use super::jwt::{JwtKeys, TokenError};
use super::resume::ResumeError;

/// Work for the pool. `T` is the caller's routing tag, returned untouched in the [`AuthResult`].
pub enum AuthJob<T> {
    /// identify / bester.authenticate: check a password.
    Verify {
        /// Routing tag.
        tag: T,
        /// Who claims to log in.
        username: String,
        /// The password to check.
        password: String,
    },
    /// bester.passwd: check `old`, then store `new` (hash + atomic write, both on the worker).
    ChangePassword {
        /// Routing tag.
        tag: T,
        /// Whose password changes.
        username: String,
        /// The current password.
        old: String,
        /// The new password.
        new: String,
    },
    /// A login by a verified client certificate: does the user exist and, if their entry pins a
    /// certificate, is it this one (its SHA-256)? A store read, no argon2.
    Lookup {
        /// Routing tag.
        tag: T,
        /// The user the certificate names.
        username: String,
        /// SHA-256 of the certificate's DER.
        fingerprint: [u8; 32],
    },
    /// A token login: verify a JWT with the keys given, or a resume token with the pool's token
    /// key, and check the user in the store. No argon2.
    Token {
        /// Routing tag.
        tag: T,
        /// The token as the client sent it (never logged).
        token: String,
        /// Which kind of token, and what to check it with.
        check: TokenCheck,
        /// Seconds since the epoch, to judge expiry by.
        now: u64,
    },
    /// A public-key login (see [`super::keys`]): is `signature` the key's signature of the login
    /// message for this server, user and nonce, and is the key one of the user's? A store read
    /// and one ed25519 verification, no argon2.
    KeyLogin {
        /// Routing tag.
        tag: T,
        /// Who claims to log in.
        username: String,
        /// The key the client named (boxed: a parsed key is large).
        key: Box<VerifyingKey>,
        /// This server's name, as signed.
        server: String,
        /// The nonce the server sent.
        nonce: String,
        /// The client's signature, base64 as sent.
        signature: String,
    },
    /// Re-read the store if it changed (or `force`), and report each user's hash stamp when the
    /// store is newer than generation `since` (session revocation).
    Snapshot {
        /// Routing tag.
        tag: T,
        /// The generation of the last snapshot the caller has.
        since: u64,
    },
}

impl<T> AuthJob<T> {
    /// The job's routing tag.
    pub fn tag(&self) -> &T {
        match self {
            AuthJob::Verify { tag, .. }
            | AuthJob::ChangePassword { tag, .. }
            | AuthJob::Lookup { tag, .. }
            | AuthJob::Token { tag, .. }
            | AuthJob::KeyLogin { tag, .. }
            | AuthJob::Snapshot { tag, .. } => tag,
        }
    }
}

/// Deliberately omits the passwords.
impl<T: std::fmt::Debug> std::fmt::Debug for AuthJob<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthJob::Verify { tag, username, .. } => f
                .debug_struct("Verify")
                .field("tag", tag)
                .field("username", username)
                .finish_non_exhaustive(),
            AuthJob::ChangePassword { tag, username, .. } => f
                .debug_struct("ChangePassword")
                .field("tag", tag)
                .field("username", username)
                .finish_non_exhaustive(),
            AuthJob::Lookup { tag, username, .. } => f
                .debug_struct("Lookup")
                .field("tag", tag)
                .field("username", username)
                .finish_non_exhaustive(),
            AuthJob::Token { tag, .. } => f
                .debug_struct("Token")
                .field("tag", tag)
                .finish_non_exhaustive(),
            AuthJob::KeyLogin { tag, username, .. } => f
                .debug_struct("KeyLogin")
                .field("tag", tag)
                .field("username", username)
                .finish_non_exhaustive(),
            AuthJob::Snapshot { tag, since } => f
                .debug_struct("Snapshot")
                .field("tag", tag)
                .field("since", since)
                .finish(),
        }
    }
}

/// What a token is checked with.
#[derive(Clone)]
pub enum TokenCheck {
    /// A JWT, with `[auth.jwt]`'s keys; `require_user`: `sub` must be in the store.
    Jwt {
        /// The keys and claims checks.
        keys: Arc<JwtKeys>,
        /// Whether `sub` must be a user in the store.
        require_user: bool,
    },
    /// A resume token, with the pool's token key.
    Resume,
    /// A login the auth handler granted to `user`, with its authorisation data: nothing to
    /// verify; the session stands on the user's store entry when the store holds one (so `user
    /// del` or a new password ends it, as it ends a password session).
    Granted {
        /// The user the handler named (a valid user name).
        user: String,
        /// Its `info` (a JSON object's text).
        info: Option<String>,
    },
}

/// A token that verified: the session it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// When the session ends (a JWT's `exp`, or what a resume token carries), if it does.
    pub expires: Option<u64>,
    /// The session's authorisation data (a JSON object's text).
    pub info: Option<String>,
    /// For a resume token: the session it was issued to (logged-out sessions are refused by the
    /// caller, which keeps that list).
    pub resumed: Option<Resumed>,
}

/// What a verified resume token says of its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    /// The session it was issued to.
    pub session: String,
    /// When the token itself expires (seconds since the epoch).
    pub token_expires: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// The JWT did not verify.
    Jwt(TokenError),
    /// The resume token did not verify.
    Resume(ResumeError),
    /// `require_user` and `sub` is not in the store.
    UnknownUser,
    /// The resume token's user was deleted, or their stored entry changed (a new password).
    Changed,
}

/// The fingerprint entry of a user the store does not hold (no PHC string looks like it).
pub(super) const ABSENT: &str = "\0absent";

/// What a session stands on: the store generation it was checked in, what it logged in with,
/// and a digest of that part of the user's entry (never the hash itself): the PHC string for a
/// password, the pinned certificate (or its absence) for a certificate. A session whose user
/// disappears, or whose digest changes, in a later generation has been revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The store generation (starts at 1, grows with every reload that saw a change).
    pub generation: u64,
    /// Digest of the user's PHC string, or of their pinned certificate.
    pub digest: u64,
    /// Which of the two.
    pub credential: Credential,
}

/// What a session logged in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A password (identify, `bester.authenticate`, `bester.passwd`).
    Password,
    /// A client certificate.
    Certificate,
    /// A token whose user must be in the store: revoked only when the user is deleted.
    Presence,
    /// An ed25519 key (the stamp's digest is [`key_digest`] of it).
    Key,
}

/// A user's digests at one store generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryDigests {
    /// Of the PHC string.
    pub password: u64,
    /// Of the pinned certificate (or its absence).
    pub certificate: u64,
    /// Of each public key.
    pub keys: Vec<u64>,
    /// Whether the user has the `gateway` right (sessions that attached users stand on it).
    pub gateway: bool,
}

/// Every user's stamp digests at one store generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSnapshot {
    /// The store generation.
    pub generation: u64,
    /// User name → digests of their entry.
    pub users: HashMap<String, EntryDigests>,
}

/// The digest of a PHC string used in a [`Stamp`]: it only tells hashes apart, it protects nothing.
pub fn hash_digest(phc: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    phc.hash(&mut hasher);
    hasher.finish()
}

/// The digest of a user's pinned certificate (`None`: no pin) used in a [`Stamp`].
pub fn pin_digest(pin: Option<&str>) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    pin.hash(&mut hasher);
    hasher.finish()
}

/// The digest of a user's public key (base64 as stored) used in a [`Stamp`].
pub fn key_digest(key: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    ("key", key).hash(&mut hasher);
    hasher.finish()
}

/// A finished job.
#[derive(Debug)]
pub struct AuthResult<T> {
    /// The tag given with the job.
    pub tag: T,
    /// The user name given with the job.
    pub username: String,
    /// What happened.
    pub outcome: AuthOutcome,
    /// Verify or ChangePassword that succeeded: the hash the session now stands on.
    pub stamp: Option<Stamp>,
    /// A login that succeeded: the fingerprint of the user's stored entry, for resume tokens.
    pub fingerprint: Option<String>,
    /// A login that succeeded as a user with the `gateway` right (who may attach other users).
    pub gateway: bool,
}

/// The outcome of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Verify: the password is right. ChangePassword: the new password is stored.
    Ok,
    /// Unknown user or wrong (old) password; deliberately does not say which.
    BadCredentials,
    /// ChangePassword: the new password breaks the rules (the reason, never the password).
    InvalidPassword(String),
    /// The store could not be written, or the job failed internally. The message never contains
    /// a password but may name server paths: the pool has already logged it, so tell the client
    /// something generic rather than forwarding it.
    StoreError(String),
    /// Snapshot: the users of a newer generation, or `None` when nothing changed since.
    Users(Option<UserSnapshot>),
    /// Token: the session it gives, or why not.
    Token(Result<TokenGrant, TokenRefusal>),
}
