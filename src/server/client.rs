//! Client sessions: identify, the built-in `bester.*` commands, and the results of password checks
//! coming back from the auth workers. Ordinary messages are handed to the router.
//!
//! The original spec's clients send `header.authentication` on every message instead of
//! identifying: as a connection's first frame it logs the connection in (argon2 on the auth
//! workers, as identify) and is then handled as a message; on a logged-in connection it must name
//! the session's user and password, checked against a keyed digest kept from the login (HMAC, no
//! argon2 per message, compared in constant time).

use std::time::Instant;

use log::{debug, info, warn};
use serde::{Deserialize, Serialize};

use crate::auth::jobs::{AuthJob, AuthOutcome, AuthResult, Stamp};
use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::protocol::message::{
    Authentication, ClientMessage, Credentials, Identify, Inbound, RESERVED_PREFIX, Scope,
    client_error, client_ok, inbound_id, parse_inbound,
};
use crate::protocol::stream;

use super::Server;
use super::auth_tag::{AuthTag, Purpose};
use super::conn::{ClientState, PasswordDigest, Role};
use super::digest::{digest_matches, password_digest, unguessable};
use super::token_login::{REFRESH, TOKEN};
use crate::router::ConnId;
use crate::stats::Logins;

/// Built-in payload types.
pub const AUTHENTICATE: &str = "bester.authenticate";
/// Log out and close.
pub const LOGOUT: &str = "bester.logout";
/// Change one's own password.
pub const PASSWD: &str = "bester.passwd";
/// Who am I, and what does this server offer.
pub const WHOAMI: &str = "bester.whoami";
/// Keep-alive.
pub const PING: &str = "bester.ping";

/// `data` of `bester.passwd`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswdData {
    old: String,
    new: String,
}

/// `data` of a successful identify or authenticate.
#[derive(Serialize)]
struct Identity<'a> {
    user: &'a str,
    server: &'a str,
}

/// `data` of `bester.whoami`.
#[derive(Serialize)]
struct WhoAmI<'a> {
    user: &'a str,
    server: &'a str,
    connections: usize,
    handlers: std::collections::BTreeMap<String, usize>,
    peers: Vec<String>,
}

impl Server {
    /// A frame from a client connection.
    pub(super) fn client_frame(&mut self, id: ConnId, body: &[u8], now: Instant) {
        let Some(conn) = self.conn(id) else { return };
        let Role::Client(state) = &conn.role else {
            return;
        };
        if matches!(state, ClientState::Challenged(_)) {
            return self.key_signature(id, body, now);
        }
        let identifying = matches!(state, ClientState::Identifying { .. });
        // Only for the log lines of the error paths: not built for every frame.
        let context =
            |server: &mut Server| server.conn(id).map(|c| c.context()).unwrap_or_default();
        // A negotiated session's compressed frames were inflated by its stream already.
        if crate::protocol::compress::is_compressed(body) {
            let error = super::negotiate::not_negotiated();
            if identifying {
                self.tell_error(id, &error);
                return self.finish(id, now, "compressed first frame".into());
            }
            return self.reply_error(id, None, &error);
        }
        if !identifying && stream::starts_as_stream(body) && self.stream_frame(id, body) {
            return;
        }
        match (identifying, parse_inbound(body)) {
            (true, Ok(Inbound::Identify(identify))) => self.identify(id, identify),
            (true, Ok(Inbound::Message(mut msg))) => match msg.authentication.take() {
                Some(credentials) => self.compat_login(id, msg, credentials),
                None => {
                    info!("{} sent a message before identify; closing", context(self));
                    let error = ErrorBody::new(ErrorCode::NotIdentified, "identify first");
                    self.tell_error_id(id, msg.id.as_deref(), &error);
                    self.finish(id, now, "message before identify".into());
                }
            },
            (true, Err(error)) => {
                info!(
                    "{} sent a bad first frame ({error}); closing",
                    context(self)
                );
                self.tell_error_id(id, inbound_id(body).as_deref(), &error);
                self.finish(id, now, "bad first frame".into());
            }
            (false, Ok(Inbound::Identify(_))) => {
                let error = ErrorBody::new(
                    ErrorCode::AlreadyIdentified,
                    "this connection is already identified",
                );
                self.reply_error(id, None, &error);
            }
            (false, Ok(Inbound::Message(mut msg))) => {
                if let Some(credentials) = msg.authentication.take()
                    && !self.session_credentials_ok(id, &credentials, msg.id.as_deref(), now)
                {
                    return;
                }
                self.client_message(id, msg, now)
            }
            (false, Err(_)) if stream::is_stream_frame(body) && self.stream_frame(id, body) => {}
            (false, Err(error)) => {
                debug!("{} bad frame: {error}", context(self));
                self.reply_error(id, inbound_id(body).as_deref(), &error);
            }
        }
    }

    /// An original-spec message as the first frame: log in with its credentials (off the loop,
    /// as identify), then handle the message.
    fn compat_login(&mut self, id: ConnId, msg: ClientMessage, credentials: Credentials) {
        let Credentials { username, password } = credentials;
        let reply_id = msg.id.clone();
        let refuse = |server: &mut Server, error: ErrorBody| {
            server.tell_error_id(id, reply_id.as_deref(), &error);
            server.finish(id, Instant::now(), "login refused".into());
        };
        let purpose = |digest| Purpose::Compat {
            msg: Box::new(msg.into_owned()),
            digest,
        };
        if let Err(error) = self.start_login(id, username, password, purpose) {
            refuse(self, error);
        }
    }

    /// A first login (identify or an original-spec first frame): within the rate limits, its
    /// password goes to the verifier threads and the connection waits for the answer. `Err` is
    /// the refusal to send.
    fn start_login(
        &mut self,
        id: ConnId,
        username: String,
        password: String,
        purpose: impl FnOnce(PasswordDigest) -> Purpose,
    ) -> Result<(), ErrorBody> {
        let ip = self.conn(id).and_then(|c| c.ip);
        if !self.logins.allows(ip, &username, Instant::now()) {
            self.stats.logins.rate_limited += 1;
            return Err(rate_limited());
        }
        let tag = AuthTag {
            conn: id,
            ip,
            purpose: purpose(password_digest(&username, &password)),
        };
        let job = AuthJob::Verify {
            tag,
            username,
            password,
        };
        self.submit_login(id, "login", job)?;
        if let Some(conn) = self.conn(id) {
            conn.role = Role::Client(ClientState::Verifying);
        }
        Ok(())
    }

    /// Hand a login's check to the verifier threads (`what` names it in the log); `server_busy`
    /// when their queue is full.
    pub(super) fn submit_login(
        &mut self,
        id: ConnId,
        what: &str,
        job: AuthJob<AuthTag>,
    ) -> Result<(), ErrorBody> {
        if self.auth.submit(job).is_err() {
            warn!("conn={id} {what} refused: the login queue is full");
            return Err(ErrorBody::new(
                ErrorCode::ServerBusy,
                "too many logins in progress; try again",
            ));
        }
        Ok(())
    }

    /// Check an original-spec message's `header.authentication` against the session: same user,
    /// same password (by digest). A mismatch is answered `auth_failed` (or `rate_limited` once
    /// over the login limit) and counts as a failed login; the connection stays open.
    fn session_credentials_ok(
        &mut self,
        id: ConnId,
        credentials: &Credentials,
        reply_id: Option<&str>,
        now: Instant,
    ) -> bool {
        let Some(conn) = self.conn(id) else {
            return false;
        };
        let ip = conn.ip;
        let matches = match &conn.role {
            Role::Client(ClientState::Ready {
                user,
                digest: Some(digest),
                ..
            }) => {
                // Both checks always run, so the answer takes the same time either way.
                let same_password =
                    digest_matches(digest, &credentials.username, &credentials.password);
                *user == credentials.username && same_password
            }
            _ => false,
        };
        if matches {
            return true;
        }
        let context = conn.context();
        // Debited to this session's own user and address, never to the name it sent: a
        // logged-in session must not be able to lock another user out at no argon2 cost.
        let own = conn.user().unwrap_or_default().to_string();
        if !self.logins.allows(ip, &own, now) {
            self.stats.logins.rate_limited += 1;
            self.reply_error(id, reply_id, &rate_limited());
            return false;
        }
        info!(
            "{context} header.authentication as {:?} does not match the session",
            credentials.username
        );
        self.logins.failed(ip, &own, now);
        self.stats.logins.failed += 1;
        let error = ErrorBody::new(
            ErrorCode::AuthFailed,
            "header.authentication does not match this connection's login",
        );
        self.reply_error(id, reply_id, &error);
        false
    }

    fn identify(&mut self, id: ConnId, identify: Identify) {
        let refuse = |server: &mut Server, error: ErrorBody| {
            server.tell_error(id, &error);
            server.finish(id, Instant::now(), "identify refused".into());
        };
        if !self.life.accepting() {
            return refuse(self, shutting_down());
        }
        if identify.kind == "server" && !self.peers.is_empty() {
            return self.peer_identify(id, identify, Instant::now());
        }
        if identify.kind != "client" {
            let text = match identify.kind.as_str() {
                "server" => "this server has no federation peers configured".to_string(),
                other => {
                    format!("unknown identify type {other:?}; expected \"client\" or \"server\"")
                }
            };
            return refuse(self, ErrorBody::new(ErrorCode::BadIdentifyType, text));
        }
        self.offer_features(id, identify.features.as_deref());
        let Some(authentication) = identify.authentication else {
            // On a listener with client_ca: the verified certificate's user (server/cert_login.rs).
            if let Err(error) = self.certificate_login(id) {
                refuse(self, error);
            }
            return;
        };
        // The application decides (server/handler_login.rs).
        if let Some(kind) = self.auth_handler_for(&authentication) {
            if let Err(error) = self.handler_login(id, &kind, &authentication, Instant::now()) {
                refuse(self, error);
            }
            return;
        }
        let Credentials { username, password } = match authentication {
            Authentication::Password(credentials) => credentials,
            // No auth handler to judge it: refused as no built-in shape.
            Authentication::Other(opaque) => return refuse(self, opaque.refusal()),
            // A challenge, then the signature (server/key_login.rs).
            Authentication::PublicKey(credentials) => {
                if let Err(error) = self.key_identify(id, credentials) {
                    refuse(self, error);
                }
                return;
            }
            // On the verifier threads (server/token_login.rs).
            Authentication::Token(token) => {
                if let Err(error) = self.token_login(id, token, false) {
                    refuse(self, error);
                }
                return;
            }
            Authentication::Resume(token) => {
                if let Err(error) = self.token_login(id, token, true) {
                    refuse(self, error);
                }
                return;
            }
        };
        let purpose = |digest| Purpose::Identify {
            digest,
            certificate: false,
        };
        if let Err(error) = self.start_login(id, username, password, purpose) {
            refuse(self, error);
        }
    }

    fn client_message(&mut self, id: ConnId, mut msg: ClientMessage, now: Instant) {
        // Sent as one of a gateway's attached users (`attach.rs`).
        if let Some(user) = msg.user.take() {
            return self.attached_message(id, &user, msg, now);
        }
        // A logout is always carried out: refusing it while draining would leave the session's
        // resume tokens valid on the process that serves next.
        if !self.life.accepting() && msg.payload.kind != LOGOUT {
            return self.reply_error(id, msg.id.as_deref(), &shutting_down());
        }
        if msg.scope != Scope::Client {
            let error = ErrorBody::new(
                ErrorCode::UnknownScope,
                "clients send with scope \"client\"",
            );
            return self.reply_error(id, msg.id.as_deref(), &error);
        }
        if msg.payload.kind.starts_with(RESERVED_PREFIX) {
            return self.builtin(id, msg, now);
        }
        self.router.client_message(id, msg, now, &mut self.actions);
    }

    fn builtin(&mut self, id: ConnId, msg: ClientMessage, now: Instant) {
        let Some(user) = self.conn(id).and_then(|c| c.user().map(str::to_string)) else {
            return;
        };
        let reply_id = msg.id.as_deref();
        let kind = &*msg.payload.kind;
        match kind {
            PING => self.reply_ok(id, client_ok(reply_id, Some(kind), "pong")),
            WHOAMI => {
                let data = WhoAmI {
                    user: &user,
                    server: &self.config.name,
                    connections: self.router.connections_of(&user),
                    handlers: self.router.handler_counts(),
                    peers: self.router.peers_up(),
                };
                let body = client_ok(reply_id, Some(kind), &data);
                self.reply_ok(id, body);
            }
            TOKEN => self.builtin_token(id, &user, reply_id),
            REFRESH => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct RefreshData {
                    token: String,
                }
                let data = msg.payload.data_as::<RefreshData>().map(|d| d.token);
                self.builtin_refresh(id, reply_id, data, now);
            }
            LOGOUT => {
                info!("conn={id} user={user} logged out");
                self.revoke_resume_tokens(id);
                self.router.client_gone(id, &mut self.actions);
                let data = Identity {
                    user: &user,
                    server: &self.config.name,
                };
                let body = client_ok(reply_id, Some(kind), &data);
                self.reply_ok(id, body);
                self.finish(id, now, "logged out".into());
            }
            AUTHENTICATE => match msg.payload.data_as::<Credentials>() {
                Ok(Credentials { username, password }) => {
                    if self.login_allowed(id, &username, now) {
                        let purpose = Purpose::Authenticate {
                            id: msg.id.as_deref().map(str::to_string),
                            digest: password_digest(&username, &password),
                        };
                        self.submit_busy(id, purpose, AuthJobKind::Verify { username, password });
                    } else {
                        self.stats.logins.rate_limited += 1;
                        self.reply_error(id, reply_id, &rate_limited());
                    }
                }
                Err(error) => self.reply_error(id, reply_id, &error),
            },
            PASSWD if !self.login_allowed(id, &user, now) => {
                self.reply_error(id, reply_id, &rate_limited());
            }
            PASSWD => match msg.payload.data_as::<PasswdData>() {
                Ok(PasswdData { old, new }) => {
                    let purpose = Purpose::Passwd {
                        id: msg.id.as_deref().map(str::to_string),
                        digest: password_digest(&user, &new),
                    };
                    self.submit_busy(
                        id,
                        purpose,
                        AuthJobKind::Change {
                            username: user,
                            old,
                            new,
                        },
                    );
                }
                Err(error) => self.reply_error(id, reply_id, &error),
            },
            kind if super::presence::is_presence_builtin(kind) => self.presence_builtin(id, &msg),
            kind if super::streams::is_stream_builtin(kind) && self.takes_streams(id) => {
                self.stream_builtin(id, &msg, now)
            }
            super::delivery::ACK => self.builtin_ack(id, &user, &msg),
            kind if super::attach::is_attach_builtin(kind) => self.attach_builtin(id, &msg, now),
            other => {
                let error = ErrorBody::new(
                    ErrorCode::ReservedType,
                    format!(
                        "{other:?} is not a built-in type; types starting with {RESERVED_PREFIX:?} are reserved"
                    ),
                );
                self.reply_error(id, reply_id, &error);
            }
        }
    }

    fn login_allowed(&mut self, id: ConnId, user: &str, now: Instant) -> bool {
        let ip = self.conn(id).and_then(|c| c.ip);
        self.logins.allows(ip, user, now)
    }

    /// Queue an auth job for a ready client and hold its later frames until the answer.
    fn submit_busy(&mut self, id: ConnId, purpose: Purpose, job: AuthJobKind) {
        let reply_id = match &purpose {
            Purpose::Authenticate { id, .. } | Purpose::Passwd { id, .. } => id.clone(),
            Purpose::Identify { .. }
            | Purpose::Compat { .. }
            | Purpose::Internal
            | Purpose::Token(_) => None,
        };
        let ip = self.conn(id).and_then(|c| c.ip);
        let tag = AuthTag {
            conn: id,
            ip,
            purpose,
        };
        let job = match job {
            AuthJobKind::Verify { username, password } => AuthJob::Verify {
                tag,
                username,
                password,
            },
            AuthJobKind::Change { username, old, new } => AuthJob::ChangePassword {
                tag,
                username,
                old,
                new,
            },
        };
        if self.auth.submit(job).is_err() {
            let error = ErrorBody::new(
                ErrorCode::ServerBusy,
                "too many logins in progress; try again",
            );
            return self.reply_error(id, reply_id.as_deref(), &error);
        }
        if let Some(conn) = self.conn(id)
            && let Role::Client(ClientState::Ready { busy, .. }) = &mut conn.role
        {
            *busy = true;
        }
    }

    /// Drain finished password checks.
    pub(super) fn auth_results(&mut self, now: Instant) {
        while let Some(result) = self.auth.try_recv() {
            self.auth_result(result, now);
        }
    }

    fn auth_result(&mut self, result: AuthResult<AuthTag>, now: Instant) {
        let AuthResult {
            tag,
            username,
            outcome,
            stamp,
            fingerprint,
            gateway,
        } = result;
        if let Purpose::Token(purpose) = tag.purpose {
            let (id, ip) = (tag.conn, tag.ip);
            let done = (stamp, fingerprint, gateway);
            return self.token_result(id, ip, purpose, username, outcome, done, now);
        }
        if matches!(tag.purpose, Purpose::Internal) {
            let snapshot = match outcome {
                AuthOutcome::Users(snapshot) => snapshot,
                _ => None,
            };
            return self.users_checked(snapshot);
        }
        let id = tag.conn;
        let server = self.config.name.clone();
        let max_frame = self.config.max_frame;
        let by_certificate = matches!(
            tag.purpose,
            Purpose::Identify {
                certificate: true,
                ..
            }
        );
        // A certificate names its user: nothing was guessed, no login bucket is debited.
        if outcome == AuthOutcome::BadCredentials && !by_certificate {
            self.logins.failed(tag.ip, &username, now);
        }
        count_login(&mut self.stats.logins, &tag.purpose, &outcome);
        let Some(conn) = self.conn(id) else {
            debug!("conn={id} gone before its password check finished");
            return;
        };
        let previous = conn.user().map(str::to_string);
        let peer = conn.peer.clone();
        let over_limit = outcome == AuthOutcome::Ok
            && previous.as_deref() != Some(username.as_str())
            && self.router.connections_of(&username) >= self.config.max_connections_per_user;
        let Some(conn) = self.conn(id) else { return };
        let identity = Identity {
            user: &username,
            server: &server,
        };
        match (tag.purpose, outcome) {
            (Purpose::Internal | Purpose::Token(_), _) => {}
            (Purpose::Identify { .. }, AuthOutcome::Ok) if over_limit => {
                info!("conn={id} user={username} refused: too many connections");
                let error = too_many_for(&username, self.config.max_connections_per_user);
                self.tell_error(id, &error);
                self.finish(id, now, "too many connections for the user".into());
            }
            (Purpose::Compat { msg, .. }, AuthOutcome::Ok) if over_limit => {
                info!("conn={id} user={username} refused: too many connections");
                let error = too_many_for(&username, self.config.max_connections_per_user);
                self.tell_error_id(id, msg.id.as_deref(), &error);
                self.finish(id, now, "too many connections for the user".into());
            }
            (Purpose::Authenticate { id: reply_id, .. }, AuthOutcome::Ok) if over_limit => {
                self.set_idle(id);
                let error = too_many_for(&username, self.config.max_connections_per_user);
                self.reply_error(id, reply_id.as_deref(), &error);
            }
            (Purpose::Identify { digest, .. }, AuthOutcome::Ok) => {
                let how = if by_certificate {
                    " by client certificate"
                } else {
                    ""
                };
                info!("conn={id} user={username} logged in from {peer}{how}");
                conn.io.set_max_frame(max_frame);
                self.keep_multiplex(id, gateway);
                self.logged_in(id, &username, digest, stamp, now);
                let grant = Server::password_grant(fingerprint);
                let body = self.login_reply(id, &username, grant, None);
                self.send_secret(id, body);
            }
            (Purpose::Compat { msg, digest }, AuthOutcome::Ok) => {
                info!("conn={id} user={username} logged in from {peer} (header.authentication)");
                conn.io.set_max_frame(max_frame);
                self.logged_in(id, &username, digest, stamp, now);
                if let Some(conn) = self.conn(id)
                    && let Role::Client(ClientState::Ready { grant, .. }) = &mut conn.role
                {
                    *grant = Some(Box::new(Server::password_grant(fingerprint)));
                }
                self.client_message(id, *msg, now);
            }
            (purpose @ (Purpose::Identify { .. } | Purpose::Compat { .. }), outcome) => {
                let error = login_error(&outcome);
                info!(
                    "conn={id} login as {username:?} from {peer} failed: {}",
                    error.code
                );
                let reply_id = match purpose {
                    Purpose::Compat { msg, .. } => msg.id,
                    _ => None,
                };
                self.tell_error_id(id, reply_id.as_deref(), &error);
                self.finish(id, now, "login failed".into());
            }
            (
                Purpose::Authenticate {
                    id: reply_id,
                    digest,
                },
                AuthOutcome::Ok,
            ) => {
                info!(
                    "conn={id} switched from user={} to user={username}",
                    previous.as_deref().unwrap_or("?")
                );
                conn.role = Role::Client(ClientState::Ready {
                    user: username.clone(),
                    busy: false,
                    digest: Some(digest),
                    stamp: None,
                    grant: None,
                });
                self.detach_all(id); // another user now: its attached users go
                self.keep_multiplex(id, gateway);
                self.router
                    .client_identified(id, &username, &mut self.actions);
                self.backlog_start(id, &username);
                let grant = Server::password_grant(fingerprint);
                let answer = Some((reply_id.as_deref(), AUTHENTICATE));
                let body = self.login_reply(id, &username, grant, answer);
                self.stats.messages.answered(true);
                self.send_secret(id, body);
                self.session_started(id, &username, stamp);
            }
            (Purpose::Authenticate { id: reply_id, .. }, outcome) => {
                info!("conn={id} re-authentication as {username:?} failed");
                self.set_idle(id);
                self.reply_error(id, reply_id.as_deref(), &login_error(&outcome));
            }
            (
                Purpose::Passwd {
                    id: reply_id,
                    digest,
                },
                outcome,
            ) => {
                self.set_idle(id);
                let error = match outcome {
                    AuthOutcome::Ok => {
                        info!("conn={id} user={username} changed their password");
                        if let Some(conn) = self.conn(id)
                            && let Role::Client(ClientState::Ready {
                                digest: kept,
                                grant,
                                ..
                            }) = &mut conn.role
                        {
                            *kept = Some(digest);
                            // Its resume tokens from now on stand on the new password.
                            if let (Some(grant), Some(fingerprint)) = (grant, fingerprint) {
                                grant.fingerprint = fingerprint;
                            }
                        }
                        let body = client_ok(reply_id.as_deref(), Some(PASSWD), &identity);
                        self.reply_ok(id, body);
                        self.session_started(id, &username, stamp);
                        None
                    }
                    AuthOutcome::BadCredentials => Some(ErrorBody::new(
                        ErrorCode::AuthFailed,
                        "the old password is wrong",
                    )),
                    AuthOutcome::InvalidPassword(why) => Some(ErrorBody::new(
                        ErrorCode::InvalidMessage,
                        format!("new password refused: {why}"),
                    )),
                    AuthOutcome::Users(_) | AuthOutcome::Token(_) => return,
                    AuthOutcome::StoreError(e) => {
                        warn!("conn={id} user={username} password change failed: {e}");
                        Some(ErrorBody::new(
                            ErrorCode::InternalError,
                            "the user store could not be updated",
                        ))
                    }
                };
                if let Some(error) = error {
                    self.reply_error(id, reply_id.as_deref(), &error);
                }
            }
        }
        // Frames that arrived while the check ran can now be handled (and a half-closed
        // connection closed once they are answered).
        self.more_input.push(id);
    }

    /// Answer a client's message with an error, counted by code and as a message answered.
    pub(super) fn reply_error(&mut self, id: ConnId, reply_id: Option<&str>, error: &ErrorBody) {
        self.stats.error(error.code, true);
        self.send(id, client_error(reply_id, error));
    }

    /// Answer a client's message with success, counted as a message answered.
    fn reply_ok(&mut self, id: ConnId, body: Vec<u8>) {
        self.stats.messages.answered(true);
        self.send(id, body);
    }

    /// Tell a client an error that answers no message (identify, timeouts, a kick), counted by code.
    pub(super) fn tell_error(&mut self, id: ConnId, error: &ErrorBody) {
        self.tell_error_id(id, None, error);
    }

    /// [`Server::tell_error`] carrying the id of the frame it is about, when it had one.
    pub(super) fn tell_error_id(&mut self, id: ConnId, reply_id: Option<&str>, error: &ErrorBody) {
        self.stats.error(error.code, false);
        self.send(id, client_error(reply_id, error));
    }

    /// A first login succeeded (identify or an original-spec first frame): the session starts.
    fn logged_in(
        &mut self,
        id: ConnId,
        username: &str,
        digest: PasswordDigest,
        stamp: Option<Stamp>,
        now: Instant,
    ) {
        if let Some(conn) = self.conn(id) {
            conn.role = Role::Client(ClientState::Ready {
                user: username.to_string(),
                busy: false,
                digest: Some(digest),
                stamp: None,
                grant: None,
            });
        }
        self.router
            .client_identified(id, username, &mut self.actions);
        self.session_started(id, username, stamp);
        self.backlog_start(id, username);
        self.arm_idle(id, now);
    }

    /// A token login succeeded: the session starts (no password: per-message credentials
    /// never match it).
    pub(super) fn logged_in_by_token(
        &mut self,
        id: ConnId,
        username: &str,
        stamp: Option<Stamp>,
        now: Instant,
    ) {
        let digest = password_digest(username, &unguessable());
        self.logged_in(id, username, digest, stamp, now);
    }

    fn set_idle(&mut self, id: ConnId) {
        if let Some(conn) = self.conn(id)
            && let Role::Client(ClientState::Ready { busy, .. }) = &mut conn.role
        {
            *busy = false;
        }
    }
}

enum AuthJobKind {
    Verify {
        username: String,
        password: String,
    },
    Change {
        username: String,
        old: String,
        new: String,
    },
}

fn shutting_down() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::ShuttingDown,
        "the server is shutting down and takes no new messages",
    )
}

/// Count a finished password check as a login (identify or `bester.authenticate`; `bester.passwd`
/// is not a login).
fn count_login(logins: &mut Logins, purpose: &Purpose, outcome: &AuthOutcome) {
    if matches!(purpose, Purpose::Passwd { .. }) {
        return;
    }
    match outcome {
        AuthOutcome::Ok => logins.ok += 1,
        _ => logins.failed += 1,
    }
}

pub(super) fn rate_limited() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::RateLimited,
        "too many failed logins for this user or from this address; try again later",
    )
}

pub(super) fn too_many_for(user: &str, max: usize) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::TooManyConnections,
        format!("user {user:?} already has {max} connections"),
    )
}

/// What a failed login is told (an unknown user and a wrong password alike).
pub(super) fn login_error(outcome: &AuthOutcome) -> ErrorBody {
    match outcome {
        AuthOutcome::StoreError(e) => {
            warn!("user store error during login: {e}");
            ErrorBody::new(ErrorCode::InternalError, "the user store could not be read")
        }
        _ => ErrorBody::new(ErrorCode::AuthFailed, "invalid username or password"),
    }
}
