//! Several users on one connection: a session of a user with the `gateway` right that negotiated
//! the feature `multiplex` attaches further users with `bester.attach` (each with that user's own
//! password, resume token or JWT, checked on the verifier threads as a login is, under the same
//! failed-login limits) and lets them go with `bester.detach`. Messages then name their user in
//! `header.user`; frames for an attached user say whom they are for, in the same place.
//!
//! Each attached user is a connection of its own as the router sees it: a [`ConnId`] whose slot
//! is [`SLOT`] (never a slab key) with a generation of its own. The router keeps its presence,
//! its requests in flight, its subscriptions and its pushes exactly as for a socket; the server
//! sends what the router addresses to it over the gateway's socket, tagged with the user
//! ([`crate::protocol::attach::tag_user`]), in [`Server::try_send`]. So limits, `allow`/`deny`,
//! presence and `sendClients` apply per attached user with no rule of their own, and an attach
//! starts the user's stored backlog (`delivery.rs`) as a login does.
//!
//! An attached user stands on its own stamp (`revoke.rs`): deleted, a new password, the key's
//! session logged out (`bester.logout` with `header.user`) — that user alone is detached and the
//! gateway told `session_revoked` for it; the gateway and the other users stay. Taking the
//! gateway right away detaches them all. The gateway's close, logout or switch to another user
//! detaches them all too.
//!
//! It must not: attach without a credential, check one on the loop, let one attached user's
//! refusal or revocation touch another, or keep more than `server.max_attached_per_connection`
//! users on one connection.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::info;
use serde::Serialize;

use super::Server;
use super::Timer;
use super::auth_tag::AuthTag;
use super::client::{LOGOUT, PING, WHOAMI, login_error, rate_limited, too_many_for};
use super::conn::Grant;
use super::token_login::{TokenPurpose, anonymous, unix_now};
use crate::auth::jobs::{AuthJob, AuthOutcome, Stamp, TokenCheck, TokenGrant, UserSnapshot};
use crate::auth::resume::new_session;
use crate::auth::user_store::MAX_USERNAME_LEN;
use crate::protocol::ErrorCode;
use crate::protocol::attach::{ATTACH, AttachCredential, DETACH, DetachData, attach_credential};
use crate::protocol::error::ErrorBody;
use crate::protocol::message::{
    ClientMessage, Info, RESERVED_PREFIX, Scope, client_error, client_ok,
};
use crate::router::ConnId;

/// The slot of every attached user's [`ConnId`]: no slab key is ever this large.
pub(super) const SLOT: usize = usize::MAX - 1;
// Far above every token range (slab keys are bounded by `max_connections`).
const _: () = assert!(SLOT > super::token::LINGER_BASE);

/// The attached users of every gateway connection.
#[derive(Debug, Default)]
pub(super) struct Attachments {
    gateways: HashMap<ConnId, Gateway>,
    /// An attached user's id → its gateway's connection and its name.
    users: HashMap<ConnId, (ConnId, String)>,
}

/// One gateway connection's users.
#[derive(Debug, Default)]
struct Gateway {
    attached: HashMap<String, Attached>,
    /// Attaches being checked on the verifier threads.
    checking: usize,
    /// Users detached or revoked lately, with why (bounded: the oldest go first), so that their
    /// messages get `session_revoked` instead of the "not attached" of a name never attached.
    ended: VecDeque<(String, String)>,
}

#[derive(Debug)]
struct Attached {
    /// The user's id as the router knows it.
    conn: ConnId,
    /// What the attachment stands on in the user store.
    stamp: Option<Stamp>,
    /// Its session (for its resume tokens and `bester.logout`).
    grant: Grant,
}

/// `data` of a successful `bester.attach`.
#[derive(Serialize)]
struct AttachReply<'a> {
    user: &'a str,
    server: &'a str,
    resume: String,
    resume_expires: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<u64>,
}

/// `data` of `bester.detach` and of an attached user's `bester.logout`.
#[derive(Serialize)]
struct Detached<'a> {
    user: &'a str,
    server: &'a str,
}

/// `data` of an attached user's `bester.whoami`.
#[derive(Serialize)]
struct AttachedWhoAmI<'a> {
    user: &'a str,
    server: &'a str,
    connections: usize,
    gateway: &'a str,
}

fn forbidden(text: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::Forbidden, text)
}

fn not_multiplexed() -> ErrorBody {
    forbidden(
        "bester.attach and header.user are for a gateway user's session that negotiated the feature \"multiplex\"",
    )
}

fn not_attached(user: &str) -> ErrorBody {
    forbidden(format!("user {user:?} is not attached to this connection"))
}

impl Attachments {
    fn gateway(&self, id: ConnId) -> Option<&Gateway> {
        self.gateways.get(&id)
    }

    /// The attached user `id` is, and its gateway.
    pub(super) fn route(&self, id: ConnId) -> Option<(ConnId, &str)> {
        self.users.get(&id).map(|(gw, user)| (*gw, user.as_str()))
    }

    /// Forget one attached user; `why` is told to its later messages.
    fn remove(
        &mut self,
        gateway: ConnId,
        user: &str,
        why: String,
        keep: usize,
    ) -> Option<Attached> {
        let gw = self.gateways.get_mut(&gateway)?;
        let attached = gw.attached.remove(user)?;
        self.users.remove(&attached.conn);
        gw.ended.retain(|(name, _)| name != user);
        gw.ended.push_back((user.to_string(), why));
        while gw.ended.len() > keep.max(1) {
            gw.ended.pop_front();
        }
        Some(attached)
    }
}

/// Whether `kind` is one of the gateway's built-ins (`bester.attach`, `bester.detach`).
pub(super) fn is_attach_builtin(kind: &str) -> bool {
    kind == ATTACH || kind == DETACH
}

impl Server {
    /// `bester.attach` or `bester.detach` from the gateway connection `id` itself.
    pub(super) fn attach_builtin(&mut self, id: ConnId, msg: &ClientMessage, now: Instant) {
        match &*msg.payload.kind {
            ATTACH => self.builtin_attach(id, msg, now),
            _ => self.builtin_detach(id, msg),
        }
    }

    /// Whether `id` names an attached user rather than a socket.
    pub(super) fn is_attached_id(id: ConnId) -> bool {
        id.slot == SLOT
    }

    /// The user a session (a connection or an attached user) is logged in as.
    pub(super) fn session_user(&mut self, id: ConnId) -> Option<String> {
        if Server::is_attached_id(id) {
            return self.attached.route(id).map(|(_, user)| user.to_string());
        }
        self.conn(id).and_then(|c| c.user().map(str::to_string))
    }

    /// A login of this connection succeeded: `multiplex` stays only for a gateway user.
    pub(super) fn keep_multiplex(&mut self, id: ConnId, gateway: bool) {
        if let Some(conn) = self.conn(id)
            && let Some(features) = &mut conn.features
            && !gateway
        {
            features.multiplex = false;
        }
    }

    fn multiplexed(&mut self, id: ConnId) -> bool {
        self.conn(id)
            .and_then(|c| c.features)
            .is_some_and(|f| f.multiplex)
    }

    /// One attach of gateway `id` more (`1`) or fewer (`-1`) being checked.
    fn checking(&mut self, id: ConnId, delta: isize) {
        let gateway = self.attached.gateways.entry(id).or_default();
        gateway.checking = gateway.checking.saturating_add_signed(delta);
    }

    /// `bester.attach` from the gateway connection `id`: within the limits, the credential goes
    /// to the verifier threads. The connection is not paused meanwhile: its other users' frames
    /// flow, and several attaches may be checked at once (counted against the limit).
    fn builtin_attach(&mut self, id: ConnId, msg: &ClientMessage, now: Instant) {
        let reply_id = msg.id.as_deref();
        if !self.multiplexed(id) {
            return self.reply_error(id, reply_id, &not_multiplexed());
        }
        let credential = match attach_credential(&msg.payload) {
            Ok(credential) => credential,
            Err(error) => return self.reply_error(id, reply_id, &error),
        };
        let max = self.config.max_attached_per_connection;
        let gateway = self.attached.gateway(id);
        let count = gateway.map_or(0, |g| g.attached.len() + g.checking);
        let again = match &credential {
            AttachCredential::Password { user, .. } => {
                gateway.is_some_and(|g| g.attached.contains_key(user))
            }
            _ => false,
        };
        if count >= max && !again {
            let error = ErrorBody::new(
                ErrorCode::LimitReached,
                format!(
                    "this connection has {count} users attached (or being attached), the most it may have"
                ),
            );
            return self.reply_error(id, reply_id, &error);
        }
        let ip = self.conn(id).and_then(|c| c.ip);
        let job = match credential {
            AttachCredential::Password { user, password } => {
                if !self.logins.allows(ip, &user, now) {
                    self.stats.logins.rate_limited += 1;
                    return self.reply_error(id, reply_id, &rate_limited());
                }
                // Tagged as a token check's purpose: its answer comes back to `token_login.rs`,
                // which hands a password's outcome to `attach_password_done`.
                let purpose = TokenPurpose::Attach {
                    id: reply_id.map(str::to_string),
                    user: Some(user.clone()),
                };
                AuthJob::Verify {
                    tag: AuthTag::token(id, ip, purpose),
                    username: user,
                    password,
                }
            }
            AttachCredential::Resume { user, token } | AttachCredential::Jwt { user, token } => {
                if !self.logins.allows(ip, &anonymous(ip), now) {
                    self.stats.logins.rate_limited += 1;
                    return self.reply_error(id, reply_id, &rate_limited());
                }
                let check = if token.starts_with("v1.") {
                    TokenCheck::Resume
                } else {
                    match self.jwt_check() {
                        Ok(check) => check,
                        Err(error) => return self.reply_error(id, reply_id, &error),
                    }
                };
                let purpose = TokenPurpose::Attach {
                    id: reply_id.map(str::to_string),
                    user,
                };
                AuthJob::Token {
                    tag: AuthTag::token(id, ip, purpose),
                    token,
                    check,
                    now: unix_now(),
                }
            }
        };
        match self.submit_login(id, "attach", job) {
            Ok(()) => self.checking(id, 1),
            Err(error) => self.reply_error(id, reply_id, &error),
        }
    }

    /// A password `bester.attach` came back from the verifier.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attach_password_done(
        &mut self,
        id: ConnId,
        ip: Option<std::net::IpAddr>,
        reply_id: Option<String>,
        user: String,
        outcome: AuthOutcome,
        stamp: Option<Stamp>,
        fingerprint: Option<String>,
        now: Instant,
    ) {
        if self.conn(id).is_none() {
            return; // closed meanwhile (its users are gone already)
        }
        self.checking(id, -1);
        if outcome != AuthOutcome::Ok {
            if outcome == AuthOutcome::BadCredentials {
                self.logins.failed(ip, &user, now);
            }
            self.stats.logins.failed += 1;
            let error = login_error(&outcome);
            info!("conn={id} attach of {user:?} refused: {}", error.code);
            return self.reply_error(id, reply_id.as_deref(), &error);
        }
        self.stats.logins.ok += 1;
        let grant = Server::password_grant(fingerprint);
        self.attach_done(
            id,
            reply_id.as_deref(),
            &user,
            stamp,
            grant,
            "password",
            now,
        );
    }

    /// A resume-token or JWT `bester.attach` came back from the verifier (`user`: the name the
    /// gateway gave, if it did).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attach_token_done(
        &mut self,
        id: ConnId,
        ip: Option<std::net::IpAddr>,
        reply_id: Option<String>,
        named: Option<String>,
        username: String,
        result: Result<TokenGrant, (ErrorBody, Option<String>)>,
        stamp: Option<Stamp>,
        fingerprint: Option<String>,
        now: Instant,
    ) {
        if self.conn(id).is_none() {
            return;
        }
        self.checking(id, -1);
        let reply_id = reply_id.as_deref();
        let result = match result {
            Ok(_) if named.as_deref().is_some_and(|n| n != username) => Err((
                ErrorBody::new(ErrorCode::AuthFailed, "the token is not that user's"),
                None,
            )),
            other => other,
        };
        let grant = match result {
            Ok(grant) => grant,
            Err((error, name)) => {
                let name = name.unwrap_or_else(|| anonymous(ip));
                self.logins.failed(ip, &name, now);
                self.stats.logins.failed += 1;
                info!("conn={id} attach by token refused: {}", error.code);
                return self.reply_error(id, reply_id, &error);
            }
        };
        self.stats.logins.ok += 1;
        let how = if grant.resumed.is_some() {
            "resume token"
        } else {
            "token"
        };
        let info = grant
            .info
            .as_deref()
            .and_then(|text| serde_json::value::RawValue::from_string(text.to_string()).ok())
            .map(Info);
        let session = Grant {
            session: grant.resumed.map_or_else(new_session, |r| r.session),
            fingerprint: fingerprint.unwrap_or_default(),
            expires: grant.expires,
            info,
            armed: None,
        };
        self.attach_done(id, reply_id, &username, stamp, session, how, now);
    }

    /// A checked `bester.attach`: the user joins the gateway's connection (or, attached already,
    /// goes on with the new session).
    #[allow(clippy::too_many_arguments)]
    fn attach_done(
        &mut self,
        id: ConnId,
        reply_id: Option<&str>,
        user: &str,
        stamp: Option<Stamp>,
        grant: Grant,
        how: &str,
        now: Instant,
    ) {
        let Some(own) = self.conn(id).and_then(|c| c.user().map(str::to_string)) else {
            return;
        };
        if !self.multiplexed(id) {
            // The gateway right went away while the check ran.
            return self.reply_error(id, reply_id, &not_multiplexed());
        }
        if own == user {
            let error = ErrorBody::new(
                ErrorCode::InvalidMessage,
                format!("this connection is logged in as {user:?} already"),
            );
            return self.reply_error(id, reply_id, &error);
        }
        let existing = self
            .attached
            .gateway(id)
            .and_then(|g| g.attached.get(user))
            .map(|a| a.conn);
        // A store change already seen may refuse it at once (as a login, `revoke.rs`).
        let revoked = match (stamp, self.sessions.latest()) {
            (Some(stamp), Some(snapshot)) => super::revoke::revoked(snapshot, user, &stamp),
            _ => None,
        };
        if let Some(why) = revoked {
            let error = ErrorBody::new(
                ErrorCode::SessionRevoked,
                format!("session revoked: {why}; attach again"),
            );
            return self.reply_error(id, reply_id, &error);
        }
        if existing.is_none() {
            let max = self.config.max_connections_per_user;
            if self.router.connections_of(user) >= max {
                return self.reply_error(id, reply_id, &too_many_for(user, max));
            }
        }
        let conn = existing.unwrap_or(ConnId {
            slot: SLOT,
            generation: self.next_generation(),
        });
        let (resume, resume_expires) = self.mint(user, &grant);
        let expires = grant.expires;
        let info = grant.info.clone();
        if existing.is_none() {
            self.router.client_identified(conn, user, &mut self.actions);
            self.attached.users.insert(conn, (id, user.to_string()));
        }
        self.router.set_client_info(conn, info, &mut self.actions);
        let gateway = self.attached.gateways.entry(id).or_default();
        gateway.ended.retain(|(name, _)| name != user);
        gateway
            .attached
            .insert(user.to_string(), Attached { conn, stamp, grant });
        info!("conn={id} user={own} attached user={user} by {how}");
        if let Some(end) = expires {
            self.arm_attached_expiry(conn, end, now);
        }
        let data = AttachReply {
            user,
            server: &self.config.name,
            resume,
            resume_expires,
            expires,
        };
        self.stats.messages.answered(true);
        let body = client_ok(reply_id, Some(ATTACH), &data);
        self.send_secret(id, body);
        if existing.is_none() {
            // What the user's queue holds comes after the answer, as after a login.
            self.backlog_start(conn, user);
        }
    }

    fn arm_attached_expiry(&mut self, conn: ConnId, end: u64, now: Instant) {
        let left = UNIX_EPOCH
            .checked_add(Duration::from_secs(end))
            .and_then(|end| end.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::ZERO);
        if let Some(at) = now.checked_add(left + Duration::from_millis(5)) {
            self.timers
                .push(std::cmp::Reverse((at, Timer::Expire(conn))));
        }
    }

    /// An attached user's expiry timer fired: detach it if its session's end has come.
    pub(super) fn attached_expiry(&mut self, conn: ConnId) {
        let Some((gateway, user)) = self.attached.route(conn).map(|(g, u)| (g, u.to_string()))
        else {
            return;
        };
        let ended = self
            .attached
            .gateway(gateway)
            .and_then(|g| g.attached.get(&user))
            .and_then(|a| a.grant.expires)
            .is_some_and(|end| end <= unix_now());
        if ended {
            let why = "the session's token has expired; attach again";
            self.end_attached(gateway, &user, Some(ErrorCode::SessionExpired), why);
        }
    }

    /// Let an attached user go: the router forgets it (watchers are told), its later messages get
    /// `session_revoked`. With a code, the gateway is told first, tagged with the user.
    fn end_attached(&mut self, gateway: ConnId, user: &str, tell: Option<ErrorCode>, why: &str) {
        let conn = self
            .attached
            .gateway(gateway)
            .and_then(|g| g.attached.get(user))
            .map(|a| a.conn);
        let Some(conn) = conn else { return };
        if let Some(code) = tell {
            info!("conn={gateway} attached user={user} ended: {why}");
            let error = ErrorBody::new(code, why.to_string());
            self.stats.error(code, false);
            self.send(conn, client_error(None, &error));
        }
        let keep = self.config.max_attached_per_connection;
        self.attached.remove(gateway, user, why.to_string(), keep);
        self.backlog_end(conn);
        self.router.client_gone(conn, &mut self.actions);
    }

    /// The gateway connection `id` closes, logs out or becomes another user: every user it
    /// holds is detached.
    pub(super) fn detach_all(&mut self, id: ConnId) {
        let Some(gateway) = self.attached.gateways.remove(&id) else {
            return;
        };
        let mut conns: Vec<ConnId> = gateway.attached.values().map(|a| a.conn).collect();
        conns.sort_unstable();
        for conn in conns {
            self.attached.users.remove(&conn);
            self.backlog_end(conn);
            self.router.client_gone(conn, &mut self.actions);
        }
    }

    /// A message with `header.user` on connection `id`: sent as that attached user.
    pub(super) fn attached_message(
        &mut self,
        id: ConnId,
        user: &str,
        msg: ClientMessage,
        now: Instant,
    ) {
        let reply_id = msg.id.as_deref();
        if !self.multiplexed(id) {
            return self.reply_error(id, reply_id, &not_multiplexed());
        }
        if user.len() > MAX_USERNAME_LEN {
            let error = ErrorBody::new(
                ErrorCode::InvalidMessage,
                format!("header.user is longer than {MAX_USERNAME_LEN} bytes"),
            );
            return self.reply_error(id, reply_id, &error);
        }
        let Some(gateway) = self.attached.gateway(id) else {
            return self.reply_error(id, reply_id, &not_attached(user));
        };
        let Some(conn) = gateway.attached.get(user).map(|a| a.conn) else {
            let error = match gateway.ended.iter().find(|(name, _)| name == user) {
                Some((_, why)) => ErrorBody::new(
                    ErrorCode::SessionRevoked,
                    format!("user {user:?} is no longer attached: {why}"),
                ),
                None => not_attached(user),
            };
            return self.reply_error(id, reply_id, &error);
        };
        // From here on every answer goes to the attached user (tagged with its name).
        if !self.life.accepting() && msg.payload.kind != LOGOUT {
            let error = ErrorBody::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down and takes no new messages",
            );
            return self.reply_error(conn, reply_id, &error);
        }
        if msg.scope != Scope::Client {
            let error = ErrorBody::new(
                ErrorCode::UnknownScope,
                "clients send with scope \"client\"",
            );
            return self.reply_error(conn, reply_id, &error);
        }
        if msg.payload.kind.starts_with(RESERVED_PREFIX) {
            return self.attached_builtin(id, conn, user, &msg);
        }
        let max = self.config.max_pending_per_connection;
        let pending = self.router.pending_for(conn);
        if pending >= max {
            let error = ErrorBody::new(
                ErrorCode::ServerBusy,
                format!("user {user:?} has {pending} requests in flight, the most it may have"),
            );
            return self.reply_error(conn, reply_id, &error);
        }
        self.router
            .client_message(conn, msg, now, &mut self.actions);
    }

    /// A built-in sent as an attached user (`conn`) over gateway `id`.
    fn attached_builtin(&mut self, id: ConnId, conn: ConnId, user: &str, msg: &ClientMessage) {
        let reply_id = msg.id.as_deref();
        let kind = &*msg.payload.kind;
        match kind {
            PING => {
                self.stats.messages.answered(true);
                self.send(conn, client_ok(reply_id, Some(kind), "pong"));
            }
            WHOAMI => {
                let own = self.session_user(id).unwrap_or_default();
                let data = AttachedWhoAmI {
                    user,
                    server: &self.config.name,
                    connections: self.router.connections_of(user),
                    gateway: &own,
                };
                self.stats.messages.answered(true);
                self.send(conn, client_ok(reply_id, Some(kind), &data));
            }
            DETACH | LOGOUT => {
                if kind == DETACH && msg.payload.data.as_deref().is_some_and(|d| d != "null") {
                    match msg.payload.data_as::<DetachData>() {
                        Ok(data) if data.user == user => {}
                        Ok(_) => {
                            let error = ErrorBody::new(
                                ErrorCode::InvalidMessage,
                                "data.user and header.user name different users",
                            );
                            return self.reply_error(conn, reply_id, &error);
                        }
                        Err(error) => return self.reply_error(conn, reply_id, &error),
                    }
                }
                // The answer goes out before the user does (tagged, to the gateway).
                let data = Detached {
                    user,
                    server: &self.config.name,
                };
                self.stats.messages.answered(true);
                self.send(conn, client_ok(reply_id, Some(kind), &data));
                self.detach(id, user, kind == LOGOUT);
            }
            kind if super::presence::is_presence_builtin(kind) => self.presence_builtin(conn, msg),
            // A storing push reaches an attached user with its `msg` like any session's: the
            // acknowledgement deletes it from that user's queue (`delivery.rs`).
            super::delivery::ACK => self.builtin_ack(conn, user, msg),
            other => {
                let error = forbidden(format!("{other:?} is not available to an attached user"));
                self.reply_error(conn, reply_id, &error);
            }
        }
    }

    /// A handler redirected an attached user: the gateway's connection is not the user's to
    /// leave, so the request is answered `redirected` and the user stays attached.
    pub(super) fn attached_redirect(&mut self, conn: ConnId, reply_id: Option<&str>) {
        let error = ErrorBody::new(
            ErrorCode::Redirected,
            "the handler redirected this user, and an attached user is not redirected",
        );
        self.reply_error(conn, reply_id, &error);
    }

    /// `bester.detach` sent by the gateway itself, naming the user in `data.user`.
    fn builtin_detach(&mut self, id: ConnId, msg: &ClientMessage) {
        let reply_id = msg.id.as_deref();
        let data = match msg.payload.data_as::<DetachData>() {
            Ok(data) => data,
            Err(error) => return self.reply_error(id, reply_id, &error),
        };
        let attached = self
            .attached
            .gateway(id)
            .is_some_and(|g| g.attached.contains_key(&data.user));
        if !attached {
            return self.reply_error(id, reply_id, &not_attached(&data.user));
        }
        let body = client_ok(
            reply_id,
            Some(DETACH),
            &Detached {
                user: &data.user,
                server: &self.config.name,
            },
        );
        self.stats.messages.answered(true);
        self.send(id, body);
        self.detach(id, &data.user, false);
    }

    /// Detach `user` from gateway `id`; `logout`: its session's resume tokens die too.
    fn detach(&mut self, id: ConnId, user: &str, logout: bool) {
        let own = self.session_user(id).unwrap_or_default();
        if logout {
            let session = self
                .attached
                .gateway(id)
                .and_then(|g| g.attached.get(user))
                .map(|a| a.grant.session.clone());
            if let Some(session) = session {
                self.revoke_session(&session);
            }
            info!("conn={id} user={own} attached user={user} logged out");
        } else {
            info!("conn={id} user={own} detached user={user}");
        }
        let why = if logout {
            "it logged out"
        } else {
            "it was detached"
        };
        self.end_attached(id, user, None, why);
    }

    /// The user store changed (`revoke.rs`): attached users whose entry no longer backs them
    /// are let go, each alone; a gateway whose right was taken loses them all.
    pub(super) fn attached_checked(&mut self, snapshot: &UserSnapshot) {
        let mut gone: Vec<(ConnId, String, String)> = Vec::new();
        let mut gateways: Vec<ConnId> = self.attached.gateways.keys().copied().collect();
        gateways.sort_unstable();
        for gateway in gateways {
            let Some(own) = self.session_user(gateway) else {
                continue;
            };
            let Some(g) = self.attached.gateway(gateway) else {
                continue;
            };
            let right = snapshot.users.get(&own).is_some_and(|d| d.gateway);
            let mut names: Vec<&String> = g.attached.keys().collect();
            names.sort_unstable();
            for name in names {
                let why = if right {
                    let stamp = g.attached[name].stamp;
                    match stamp.and_then(|s| super::revoke::revoked(snapshot, name, &s)) {
                        Some(why) => why.to_string(),
                        None => continue,
                    }
                } else {
                    "the gateway's right to attach users was taken away".to_string()
                };
                gone.push((gateway, name.clone(), why));
            }
            if !right {
                self.keep_multiplex(gateway, false);
            }
        }
        for (gateway, user, why) in gone {
            let text = format!("session revoked: {why}; attach again");
            self.end_attached(gateway, &user, Some(ErrorCode::SessionRevoked), &text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(generation: u64) -> Attached {
        Attached {
            conn: ConnId {
                slot: SLOT,
                generation,
            },
            stamp: None,
            grant: Server::password_grant(None),
        }
    }

    #[test]
    fn a_removed_user_is_remembered_with_why_and_the_memory_is_bounded() {
        let gateway = ConnId {
            slot: 3,
            generation: 1,
        };
        let mut all = Attachments::default();
        let g = all.gateways.entry(gateway).or_default();
        for (n, name) in ["bob", "carol", "dave"].iter().enumerate() {
            g.attached.insert(name.to_string(), attached(10 + n as u64));
        }
        for (n, name) in ["bob", "carol", "dave"].iter().enumerate() {
            all.users
                .insert(attached(10 + n as u64).conn, (gateway, name.to_string()));
        }
        let bob = attached(10).conn;
        assert_eq!(all.route(bob), Some((gateway, "bob")));
        assert!(
            all.remove(gateway, "bob", "it was detached".into(), 2)
                .is_some()
        );
        assert_eq!(all.route(bob), None, "its frames are dropped from now on");
        assert!(all.remove(gateway, "bob", "again".into(), 2).is_none());
        all.remove(gateway, "carol", "revoked".into(), 2).unwrap();
        all.remove(gateway, "dave", "logged out".into(), 2).unwrap();
        // At most `keep` names are remembered: the oldest (bob) went first.
        let ended: Vec<&str> = all.gateways[&gateway]
            .ended
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(ended, ["carol", "dave"]);
        assert!(all.gateways[&gateway].attached.is_empty());
        assert!(all.users.is_empty());
    }

    #[test]
    fn attached_ids_are_never_slab_keys() {
        assert!(Server::is_attached_id(ConnId {
            slot: SLOT,
            generation: 7
        }));
        assert!(!Server::is_attached_id(ConnId {
            slot: 0,
            generation: 7
        }));
    }
}
