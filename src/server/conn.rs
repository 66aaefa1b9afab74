//! One connection as the server sees it: its framed stream, what kind of peer it is, and where a
//! client is in its session (identifying → verifying → ready). The transitions are made by
//! `server/client.rs`; this module only holds the state and answers questions about it.

use std::net::IpAddr;
use std::time::Instant;

use crate::auth::jobs::Stamp;
use crate::net::Framed;
use crate::protocol::features::Features;
use crate::protocol::message::Info;
use crate::stats::{RoleKind, Traffic};

use crate::router::ConnId;

/// HMAC-SHA256 of a session's username and password under a random per-process key.
pub type PasswordDigest = [u8; 32];

/// Where a client connection is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientState {
    /// Connected; identify must arrive before the deadline.
    Identifying {
        /// When the connection is closed if it has not identified.
        deadline: Instant,
        /// The index of the listener it came in on.
        listener: usize,
    },
    /// Identify with a public key received and a challenge sent; the signature must come next,
    /// before the identify deadline (the timer armed at accept).
    Challenged(Box<Challenge>),
    /// Identify received; the password is being checked off the loop.
    Verifying,
    /// Logged in.
    Ready {
        /// The user.
        user: String,
        /// A built-in auth operation is running: later frames wait until it is done.
        busy: bool,
        /// Keyed digest of the password this session logged in with, so that the original
        /// spec's per-message `header.authentication` is checked without argon2.
        digest: Option<PasswordDigest>,
        /// The stored hash the session stands on (see `revoke.rs`), once the verifier gave it.
        stamp: Option<Stamp>,
        /// What resume tokens of this session say, and when the session ends (`token_login.rs`).
        grant: Option<Box<Grant>>,
    },
}

/// What a session's resume tokens carry, and what a token login gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The session's id, named by its resume tokens (what `bester.logout` revokes).
    pub session: String,
    /// Fingerprint of the user's stored entry the session logged in against.
    pub fingerprint: String,
    /// When the session ends (seconds since the epoch), if it does: a token's `exp`.
    pub expires: Option<u64>,
    /// The session's authorisation data.
    pub info: Option<Info>,
    /// The end the session's pending expiry timer is set for, if one is.
    pub armed: Option<u64>,
}

/// A public-key login waiting for its signature (see `key_login.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Who the client says it is.
    pub username: String,
    /// The key it named.
    pub key: ed25519_dalek::VerifyingKey,
    /// The nonce sent, used once.
    pub nonce: String,
}

/// Where a server-to-server connection is in its handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerState {
    /// We dialled; the TCP connection is not established yet.
    Connecting,
    /// We sent identify with this nonce; waiting for the challenge.
    AwaitChallenge {
        /// Our nonce.
        nonce: String,
    },
    /// We sent our proof; waiting for acceptance.
    AwaitAccept,
    /// We were dialled and sent our challenge; waiting for the peer's proof.
    AwaitProof {
        /// Our nonce.
        nonce: String,
        /// The peer's nonce.
        theirs: String,
    },
    /// Authenticated both ways.
    Up,
}

/// A server-to-server connection.
#[derive(Debug)]
pub struct PeerConn {
    /// The peer's configured name.
    pub name: String,
    /// Whether we dialled it.
    pub outgoing: bool,
    /// Handshake progress.
    pub state: PeerState,
    /// Whether a bad frame from it has been logged already.
    pub complained: bool,
}

/// What is on the other end.
#[derive(Debug)]
pub enum Role {
    /// A user's client over TCP.
    Client(ClientState),
    /// A handler process over its type's Unix socket.
    Handler {
        /// The payload type it serves.
        kind: String,
        /// Whether a bad frame from it has been logged already (log once, not per frame).
        complained: bool,
        /// The broker dialled it for one request (`connect`); closed once that is answered.
        dialed: bool,
    },
    /// A federated peer server.
    Peer(PeerConn),
}

/// A connection in the server's slab.
#[derive(Debug)]
pub struct Conn {
    /// Its identity.
    pub id: ConnId,
    /// The stream.
    pub io: Framed,
    /// The peer's address, for logs.
    pub peer: String,
    /// The peer's IP address (TCP connections).
    pub ip: Option<IpAddr>,
    /// When the last frame arrived (for the idle timeout).
    pub last_seen: Instant,
    /// Client or handler.
    pub role: Role,
    /// The peer closed its sending side; answers still in flight are delivered before closing.
    pub read_closed: bool,
    /// An event said the peer closed its side or the socket has an error: read until the
    /// end, even after a short read (the close came with the data, and no later event will).
    pub hangup_seen: bool,
    /// Close as soon as queued output is written; read nothing more.
    pub closing: Option<String>,
    /// Reading is paused because this client has the most requests in flight it may have;
    /// it resumes when an answer goes out.
    pub throttled: bool,
    /// When the connection was opened.
    pub since: Instant,
    /// Frames and bytes over this connection.
    pub traffic: Traffic,
    /// The client listener it was accepted on, by index (connections accepted as clients).
    pub listener: Option<usize>,
    /// The features its identify offered that this server accepts (`None`: it offered none,
    /// and its identify reply has neither `features` nor `limits`).
    pub features: Option<Features>,
}

impl Role {
    /// Client, handler or peer, for the figures.
    pub fn kind(&self) -> RoleKind {
        match self {
            Role::Client(_) => RoleKind::Client,
            Role::Handler { .. } => RoleKind::Handler,
            Role::Peer(_) => RoleKind::Peer,
        }
    }
}

impl Conn {
    /// Whether frames already received should be left waiting (login or auth built-in running).
    pub fn paused(&self) -> bool {
        match &self.role {
            Role::Client(ClientState::Verifying) => true,
            Role::Client(ClientState::Ready { busy, .. }) => *busy,
            _ => false,
        }
    }

    /// Whether received frames may be handled now.
    pub fn accepts_input(&self) -> bool {
        self.closing.is_none() && !self.paused()
    }

    /// The logged-in user, for clients that are ready.
    pub fn user(&self) -> Option<&str> {
        match &self.role {
            Role::Client(ClientState::Ready { user, .. }) => Some(user),
            _ => None,
        }
    }

    /// A short description for log lines: `conn=3.7 user=alice` or `conn=4.8 handler=echo`.
    pub fn context(&self) -> String {
        match &self.role {
            Role::Client(ClientState::Ready { user, .. }) => {
                format!("conn={} user={user}", self.id)
            }
            Role::Client(_) => format!("conn={} peer={}", self.id, self.peer),
            Role::Handler { kind, .. } => format!("conn={} handler={kind}", self.id),
            Role::Peer(p) => format!("conn={} peer={}", self.id, p.name),
        }
    }
}
