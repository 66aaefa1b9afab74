//! What a check on the auth workers was for ([`AuthTag`]): the connection, its address, and the
//! purpose that decides how the result is applied when it comes back (`client.rs`).

use super::conn::PasswordDigest;
use super::digest::{password_digest, unguessable};
use super::token_login::TokenPurpose;
use crate::protocol::message::ClientMessage;
use crate::router::ConnId;

/// What a password check was for, carried through the auth workers.
#[derive(Debug, Clone)]
pub struct AuthTag {
    pub(super) conn: ConnId,
    pub(super) ip: Option<std::net::IpAddr>,
    pub(super) purpose: Purpose,
}

impl AuthTag {
    /// A job of the server's own (a user store check), not a connection's.
    pub(super) fn internal() -> AuthTag {
        AuthTag {
            conn: ConnId {
                slot: usize::MAX,
                generation: 0,
            },
            ip: None,
            purpose: Purpose::Internal,
        }
    }

    /// A token check (`server/token_login.rs`).
    pub(super) fn token(
        conn: ConnId,
        ip: Option<std::net::IpAddr>,
        purpose: TokenPurpose,
    ) -> AuthTag {
        AuthTag {
            conn,
            ip,
            purpose: Purpose::Token(purpose),
        }
    }

    /// A login by client certificate as `user` (no password: a digest of a random one, so
    /// per-message credentials never match the session).
    pub(super) fn certificate(conn: ConnId, ip: Option<std::net::IpAddr>, user: &str) -> AuthTag {
        AuthTag {
            conn,
            ip,
            purpose: Purpose::Identify {
                digest: password_digest(user, &unguessable()),
                certificate: true,
            },
        }
    }

    /// A login by public key as `user` (no password, as [`AuthTag::certificate`]).
    pub(super) fn public_key(conn: ConnId, ip: Option<std::net::IpAddr>, user: &str) -> AuthTag {
        AuthTag {
            conn,
            ip,
            purpose: Purpose::Identify {
                digest: password_digest(user, &unguessable()),
                certificate: false,
            },
        }
    }
}

/// What the check is for: how its result is applied (`client.rs`, `token_login.rs`).
#[derive(Debug, Clone)]
pub(super) enum Purpose {
    Internal,
    /// A token login or `bester.refresh`.
    Token(TokenPurpose),
    Identify {
        digest: PasswordDigest,
        /// By client certificate (no password was checked).
        certificate: bool,
    },
    /// An original-spec first frame: log in with its `header.authentication`, then handle it.
    Compat {
        msg: Box<ClientMessage<'static>>,
        digest: PasswordDigest,
    },
    Authenticate {
        id: Option<String>,
        digest: PasswordDigest,
    },
    Passwd {
        id: Option<String>,
        digest: PasswordDigest,
    },
}
