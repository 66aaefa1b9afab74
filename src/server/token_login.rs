//! Token logins and resume tokens: `identify` with `{"token":…}` (a JWT the application issued,
//! checked with `[auth.jwt]`, or a resume token) or `{"resume":…}` (a resume token besterd issued),
//! the resume token every identify reply carries (`data.resume`), the sessions that end with their
//! token (`session_expired`), and the built-ins `bester.token` and `bester.refresh`.
//!
//! Every token is checked on the verifier threads (`AuthJob::Token`: a signature check and a
//! store lookup, no argon2), never on the loop. A refusal is told with its own code, closes the
//! connection, and counts as a failed login against the rate limits: per address, and per name
//! when the name is known (a resume token that verified); a JWT's `sub` is not trusted before its
//! signature is, so a refused JWT is counted by address alone.
//!
//! A resume token carries the session's fingerprint of the user's stored entry, its own expiry,
//! the session's expiry (a JWT's `exp`) and its `info`: a resumed session is worth no more than
//! the one it came from, and a resumed session goes on as the session it came from (same id). It
//! dies on expiry, when the user's entry changes (deleted, new password), and on `bester.logout`
//! of its session (the revoked list, handed to the new process of a hot upgrade,
//! `server/relay.rs`, and kept on disk by `auth/revocations.rs` when tokens outlive a restart;
//! another server that shares the key does not see it).
//!
//! It must not: log a token, run a check on the loop, or give a session more time or other
//! authorisation data than its token says.

use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::info;
use serde::Serialize;
use serde_json::value::RawValue;

use super::Server;
use super::Timer;
use super::auth_tag::AuthTag;
use super::client::rate_limited;
use super::conn::{ClientState, Grant, Role};
use super::relay::{self, Outbox};
use crate::auth::jobs::{AuthJob, AuthOutcome, Stamp, TokenCheck, TokenGrant, TokenRefusal};
use crate::auth::jwt::TokenError;
use crate::auth::resume::{Resume, ResumeError, Revoked, new_session};
use crate::auth::revocations;
use crate::config::Config;
use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::protocol::features::Negotiated;
use crate::protocol::message::{Info, Secret, client_ok};
use crate::router::ConnId;

/// Ask for a new resume token for this session.
pub const TOKEN: &str = "bester.token";
/// Extend a token session with a new JWT.
pub const REFRESH: &str = "bester.refresh";

/// Most logged-out sessions remembered at once (see [`Revoked`]).
const MAX_REVOKED: usize = 65_536;

/// What a token check was for.
#[derive(Debug, Clone)]
pub(super) enum TokenPurpose {
    /// A first login (identify).
    Login,
    /// A first login the auth handler granted (`server/handler_login.rs`).
    Handler,
    /// `bester.refresh` on a logged-in session, answering `id`.
    Refresh {
        /// The id of the request.
        id: Option<String>,
    },
    /// `bester.attach` with a token on a gateway's session, answering `id` (`attach.rs`).
    Attach {
        /// The id of the request.
        id: Option<String>,
        /// The user the gateway named, if it did: the token must be theirs.
        user: Option<String>,
    },
}

/// The server's token state: the logged-out sessions, and the writer of their file.
#[derive(Debug)]
pub(super) struct Tokens {
    revoked: Revoked,
    file: Option<revocations::Writer>,
}

impl Tokens {
    /// The list as `[auth] revoked_file` has it (see [`Config::revoked_file`]), or an empty one
    /// kept in memory only. A file that cannot be trusted or read stops the start.
    pub fn open(config: &Config) -> io::Result<Tokens> {
        let mut revoked = Revoked::new(MAX_REVOKED);
        let Some(path) = config.revoked_file() else {
            return Ok(Tokens {
                revoked,
                file: None,
            });
        };
        let now = unix_now();
        let saved = revocations::load(&path, now).map_err(|e| {
            if crate::fsutil::refusal(&e).is_some() {
                return e;
            }
            io::Error::new(
                e.kind(),
                format!("revoked-sessions file {}: {e}", path.display()),
            )
        })?;
        revoked.raise_floor(saved.floor);
        for (session, until) in &saved.sessions {
            revoked.revoke(session, *until, now);
        }
        if !saved.sessions.is_empty() {
            info!(
                "{} logged-out sessions read from {}",
                saved.sessions.len(),
                path.display()
            );
        }
        let file = revocations::Writer::start(path, saved, MAX_REVOKED)?;
        Ok(Tokens {
            revoked,
            file: Some(file),
        })
    }
}

/// Seconds since the epoch.
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `data` of a successful login: who, and the session's resume token.
#[derive(Serialize)]
struct LoginReply<'a> {
    user: &'a str,
    server: &'a str,
    resume: String,
    resume_expires: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<u64>,
    /// Only when identify offered `features` (`negotiate.rs`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    negotiated: Option<Negotiated>,
}

/// What a login's check gave besides its grant, and how it was made (for the log).
struct Done {
    stamp: Option<Stamp>,
    fingerprint: Option<String>,
    gateway: bool,
    how: &'static str,
}

/// What a token check gave besides its outcome: the stamp, the entry's fingerprint, and whether
/// the user has the gateway right.
pub(super) type Checked = (Option<Stamp>, Option<String>, bool);

/// `data` of `bester.token`.
#[derive(Serialize)]
struct TokenReply {
    resume: String,
    resume_expires: u64,
}

/// `data` of `bester.refresh`.
#[derive(Serialize)]
struct RefreshReply {
    expires: u64,
}

/// The name a refused token is counted under when its user is not known: one per address, so
/// bad tokens from one address never lock out another's logins.
pub(super) fn anonymous(ip: Option<std::net::IpAddr>) -> String {
    match ip {
        Some(ip) => format!("\0token {ip}"),
        None => "\0token".into(),
    }
}

/// What a refused token is told.
fn refusal_error(refusal: &TokenRefusal) -> ErrorBody {
    let text = |t: &str| t.to_string();
    match refusal {
        TokenRefusal::Jwt(e) => {
            let code = match e {
                TokenError::Malformed(_) => ErrorCode::TokenMalformed,
                TokenError::UnknownKey => ErrorCode::TokenUnknownKey,
                TokenError::BadSignature => ErrorCode::TokenBadSignature,
                TokenError::Expired => ErrorCode::TokenExpired,
                TokenError::NotYetValid => ErrorCode::TokenNotYetValid,
                TokenError::WrongAudience => ErrorCode::TokenWrongAudience,
                TokenError::WrongIssuer => ErrorCode::TokenWrongIssuer,
            };
            ErrorBody::new(code, e.to_string())
        }
        TokenRefusal::Resume(ResumeError::Expired) => {
            ErrorBody::new(ErrorCode::ResumeExpired, ResumeError::Expired.to_string())
        }
        TokenRefusal::Resume(e) => ErrorBody::new(ErrorCode::ResumeRefused, e.to_string()),
        // Like an unknown password user: the token verified, but names nobody this server has.
        TokenRefusal::UnknownUser => {
            ErrorBody::new(ErrorCode::AuthFailed, text("invalid username or password"))
        }
        TokenRefusal::Changed => ErrorBody::new(
            ErrorCode::ResumeRefused,
            "the resume token's user was deleted or their password changed",
        ),
    }
}

fn logged_out() -> ErrorBody {
    ErrorBody::new(ErrorCode::ResumeRefused, ResumeError::Revoked.to_string())
}

fn session_ended() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::SessionExpired,
        "the session's token has expired; log in again",
    )
}

impl Server {
    /// `identify` with a token: `resume` for `{"resume":…}` (and a `{"token":…}` that is a resume
    /// token). Within the rate limits, the token goes to the verifier threads. `Err` is the
    /// refusal to send before closing.
    pub(super) fn token_login(
        &mut self,
        id: ConnId,
        token: Secret,
        resume: bool,
    ) -> Result<(), ErrorBody> {
        let ip = self.conn(id).and_then(|c| c.ip);
        if !self.logins.allows(ip, &anonymous(ip), Instant::now()) {
            self.stats.logins.rate_limited += 1;
            return Err(rate_limited());
        }
        let resume = resume || token.0.starts_with("v1.");
        let check = if resume {
            TokenCheck::Resume
        } else {
            match self.jwt_check() {
                Ok(check) => check,
                Err(error) => {
                    self.logins.failed(ip, &anonymous(ip), Instant::now());
                    self.stats.logins.failed += 1;
                    return Err(error);
                }
            }
        };
        self.submit_token(id, ip, TokenPurpose::Login, token.0, check)?;
        if let Some(conn) = self.conn(id) {
            conn.role = Role::Client(ClientState::Verifying);
        }
        Ok(())
    }

    /// How a JWT is checked here, or `token_logins_off` when `[auth.jwt]` is not configured.
    pub(super) fn jwt_check(&self) -> Result<TokenCheck, ErrorBody> {
        match (&self.config.auth.jwt_keys, &self.config.auth.jwt) {
            (Some(keys), Some(settings)) => Ok(TokenCheck::Jwt {
                keys: keys.clone(),
                require_user: settings.require_user,
            }),
            _ => Err(ErrorBody::new(
                ErrorCode::TokenLoginsOff,
                "this server takes no token logins ([auth.jwt] is not configured)",
            )),
        }
    }

    fn submit_token(
        &mut self,
        id: ConnId,
        ip: Option<std::net::IpAddr>,
        purpose: TokenPurpose,
        token: String,
        check: TokenCheck,
    ) -> Result<(), ErrorBody> {
        let job = AuthJob::Token {
            tag: AuthTag::token(id, ip, purpose),
            token,
            check,
            now: unix_now(),
        };
        self.submit_login(id, "token check", job)
    }

    /// A token check came back.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn token_result(
        &mut self,
        id: ConnId,
        ip: Option<std::net::IpAddr>,
        purpose: TokenPurpose,
        username: String,
        outcome: AuthOutcome,
        checked: Checked,
        now: Instant,
    ) {
        let (stamp, fingerprint, gateway) = checked;
        if let TokenPurpose::Attach { id: reply_id, .. } = &purpose
            && !matches!(outcome, AuthOutcome::Token(_))
        {
            // A password `bester.attach` (`attach.rs`).
            let reply_id = reply_id.clone();
            return self.attach_password_done(
                id,
                ip,
                reply_id,
                username,
                outcome,
                stamp,
                fingerprint,
                now,
            );
        }
        let AuthOutcome::Token(result) = outcome else {
            return;
        };
        let result = match result {
            Ok(grant)
                if grant
                    .resumed
                    .as_ref()
                    .is_some_and(|r| self.tokens.revoked.refuses(&r.session, r.token_expires)) =>
            {
                Err((logged_out(), Some(username.clone())))
            }
            Ok(grant)
                if grant.resumed.is_some() && grant.expires.is_some_and(|e| e <= unix_now()) =>
            {
                Err((session_ended(), Some(username.clone())))
            }
            Ok(grant) => Ok(grant),
            Err(refusal) => {
                // The user is known only when the resume token itself verified.
                let known = matches!(refusal, TokenRefusal::Changed | TokenRefusal::UnknownUser);
                Err((refusal_error(&refusal), known.then(|| username.clone())))
            }
        };
        match purpose {
            TokenPurpose::Login | TokenPurpose::Handler => {
                let how = match (&purpose, &result) {
                    (TokenPurpose::Handler, _) => "the auth handler",
                    (_, Ok(grant)) if grant.resumed.is_some() => "resume token",
                    _ => "token",
                };
                let done = Done {
                    stamp,
                    fingerprint,
                    gateway,
                    how,
                };
                self.token_login_done(id, ip, username, result, done, now)
            }
            TokenPurpose::Refresh { id: reply_id } => {
                self.refresh_done(id, ip, reply_id, username, result, now)
            }
            TokenPurpose::Attach { id: reply_id, user } => self.attach_token_done(
                id,
                ip,
                reply_id,
                user,
                username,
                result,
                stamp,
                fingerprint,
                now,
            ),
        }
        self.more_input.push(id);
    }

    fn token_login_done(
        &mut self,
        id: ConnId,
        ip: Option<std::net::IpAddr>,
        username: String,
        result: Result<TokenGrant, (ErrorBody, Option<String>)>,
        done: Done,
        now: Instant,
    ) {
        let Done {
            stamp,
            fingerprint,
            gateway,
            how,
        } = done;
        let Some(conn) = self.conn(id) else { return };
        let peer = conn.peer.clone();
        let grant = match result {
            Ok(grant) => grant,
            Err((error, name)) => {
                let name = name.unwrap_or_else(|| anonymous(ip));
                self.logins.failed(ip, &name, now);
                self.stats.logins.failed += 1;
                info!("conn={id} token login from {peer} refused: {}", error.code);
                self.tell_error(id, &error);
                return self.finish(id, now, "login refused".into());
            }
        };
        self.stats.logins.ok += 1;
        if self.router.connections_of(&username) >= self.config.max_connections_per_user {
            info!("conn={id} user={username} refused: too many connections");
            let error =
                super::client::too_many_for(&username, self.config.max_connections_per_user);
            self.tell_error(id, &error);
            return self.finish(id, now, "too many connections for the user".into());
        }
        info!("conn={id} user={username} logged in from {peer} by {how}");
        let max_frame = self.config.max_frame;
        if let Some(conn) = self.conn(id) {
            conn.io.set_max_frame(max_frame);
        }
        let info = grant.info.as_deref().and_then(info_of);
        self.keep_multiplex(id, gateway);
        self.logged_in_by_token(id, &username, stamp, now);
        self.router
            .set_client_info(id, info.clone(), &mut self.actions);
        let grant = Grant {
            // A resumed session goes on as the session it came from: its logout revokes every
            // token of the chain.
            session: grant.resumed.map_or_else(new_session, |r| r.session),
            fingerprint: fingerprint.unwrap_or_default(),
            expires: grant.expires,
            info,
            armed: None,
        };
        let body = self.login_reply(id, &username, grant, None);
        self.arm_expiry(id, now);
        self.send_secret(id, body);
    }

    /// The body of a successful login's reply (identify, `bester.authenticate`): the session
    /// gets `grant` and the reply its first resume token.
    pub(super) fn login_reply(
        &mut self,
        id: ConnId,
        user: &str,
        grant: Grant,
        answer: Option<(Option<&str>, &str)>,
    ) -> Vec<u8> {
        let (resume, resume_expires) = self.mint(user, &grant);
        // The identify reply ends a negotiation; `bester.authenticate`'s changes nothing.
        let negotiated = match answer {
            None => self.negotiated(id, true),
            Some(_) => None,
        };
        let data = LoginReply {
            user,
            server: &self.config.name,
            resume,
            resume_expires,
            expires: grant.expires,
            negotiated,
        };
        let body = match answer {
            Some((reply_id, kind)) => client_ok(reply_id, Some(kind), &data),
            None => client_ok(None, None, &data),
        };
        if let Some(conn) = self.conn(id)
            && let Role::Client(ClientState::Ready { grant: kept, .. }) = &mut conn.role
        {
            *kept = Some(Box::new(grant));
        }
        body
    }

    /// A new session's grant for a password or certificate login.
    pub(super) fn password_grant(fingerprint: Option<String>) -> Grant {
        Grant {
            session: new_session(),
            fingerprint: fingerprint.unwrap_or_default(),
            expires: None,
            info: None,
            armed: None,
        }
    }

    /// A resume token for `grant`'s session, and when it expires: the TTL from now, never
    /// past the session's own end.
    pub(super) fn mint(&self, user: &str, grant: &Grant) -> (String, u64) {
        let ttl = self.config.auth.resume_ttl.as_secs();
        let mut expires = unix_now().saturating_add(ttl);
        if let Some(end) = grant.expires {
            expires = expires.min(end);
        }
        let resume = Resume {
            user: user.to_string(),
            fingerprint: grant.fingerprint.clone(),
            expires,
            session: grant.session.clone(),
            session_expires: grant.expires,
            info: grant.info.as_ref().map(|i| i.0.get().to_string()),
        };
        (self.auth.token_key().mint(&resume), expires)
    }

    /// Make sure a timer fires when the session's grant ends. At most one timer per session is
    /// the armed one: a refresh to a later end lets the armed timer fire and re-arm (so
    /// refreshing in a loop does not grow the timer heap).
    fn arm_expiry(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conn(id) else { return };
        let Role::Client(ClientState::Ready {
            grant: Some(grant), ..
        }) = &mut conn.role
        else {
            return;
        };
        let Some(expires) = grant.expires else { return };
        if grant.armed.is_some_and(|armed| armed <= expires) {
            return;
        }
        // To the instant the second `expires` begins (plus a little: the check then finds it).
        let left = UNIX_EPOCH
            .checked_add(Duration::from_secs(expires))
            .and_then(|end| end.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::ZERO);
        // An end too far away for the clock to name never comes.
        let Some(at) = now.checked_add(left + Duration::from_millis(5)) else {
            return;
        };
        grant.armed = Some(expires);
        self.timers.push(std::cmp::Reverse((at, Timer::Expire(id))));
    }

    /// A session's expiry timer fired: end it unless `bester.refresh` moved its end.
    pub(super) fn check_expiry(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conn(id) else { return };
        let Role::Client(ClientState::Ready {
            user,
            grant: Some(grant),
            ..
        }) = &conn.role
        else {
            return;
        };
        if conn.closing.is_some() {
            return;
        }
        let secs = unix_now();
        if grant.expires.is_none_or(|e| e > secs) {
            // Refreshed: if the armed timer is the one that fired, arm one for the new end.
            if grant.armed.is_some_and(|armed| armed <= secs)
                && let Role::Client(ClientState::Ready {
                    grant: Some(grant), ..
                }) = &mut conn.role
            {
                grant.armed = None;
                self.arm_expiry(id, now);
            }
            return;
        }
        let user = user.clone();
        info!("conn={id} user={user} session expired");
        self.router.client_gone(id, &mut self.actions);
        self.tell_error(id, &session_ended());
        self.finish(id, now, "session expired".into());
    }

    /// `bester.token`: a new resume token for this session.
    pub(super) fn builtin_token(&mut self, id: ConnId, user: &str, reply_id: Option<&str>) {
        let grant = match self.conn(id).map(|c| &c.role) {
            Some(Role::Client(ClientState::Ready {
                grant: Some(grant), ..
            })) => Grant::clone(grant),
            _ => {
                let error =
                    ErrorBody::new(ErrorCode::InternalError, "this session has no resume token");
                return self.reply_error(id, reply_id, &error);
            }
        };
        let (resume, resume_expires) = self.mint(user, &grant);
        let data = TokenReply {
            resume,
            resume_expires,
        };
        self.stats.messages.answered(true);
        self.send_secret(id, client_ok(reply_id, Some(TOKEN), &data));
    }

    /// `bester.refresh` with `{"token":"<JWT>"}`: checked on the verifier threads; the answer
    /// comes back to [`Server::refresh_done`].
    pub(super) fn builtin_refresh(
        &mut self,
        id: ConnId,
        reply_id: Option<&str>,
        data: Result<String, ErrorBody>,
        now: Instant,
    ) {
        let token = match data {
            Ok(token) => token,
            Err(error) => return self.reply_error(id, reply_id, &error),
        };
        let ip = self.conn(id).and_then(|c| c.ip);
        let name = self
            .conn(id)
            .and_then(|c| c.user().map(str::to_string))
            .unwrap_or_default();
        if !self.logins.allows(ip, &name, now) {
            self.stats.logins.rate_limited += 1;
            return self.reply_error(id, reply_id, &rate_limited());
        }
        let check = match self.jwt_check() {
            Ok(check) => check,
            Err(error) => return self.reply_error(id, reply_id, &error),
        };
        let purpose = TokenPurpose::Refresh {
            id: reply_id.map(str::to_string),
        };
        if let Err(error) = self.submit_token(id, ip, purpose, token, check) {
            return self.reply_error(id, reply_id, &error);
        }
        if let Some(conn) = self.conn(id)
            && let Role::Client(ClientState::Ready { busy, .. }) = &mut conn.role
        {
            *busy = true;
        }
    }

    fn refresh_done(
        &mut self,
        id: ConnId,
        ip: Option<std::net::IpAddr>,
        reply_id: Option<String>,
        username: String,
        result: Result<TokenGrant, (ErrorBody, Option<String>)>,
        now: Instant,
    ) {
        let Some(conn) = self.conn(id) else { return };
        let Role::Client(ClientState::Ready {
            user, busy, grant, ..
        }) = &mut conn.role
        else {
            return;
        };
        *busy = false;
        let session_user = user.clone();
        let result = match result {
            Ok(_) if username != session_user => Err((
                ErrorBody::new(
                    ErrorCode::AuthFailed,
                    "the token is for another user than this session's",
                ),
                Some(session_user.clone()),
            )),
            other => other,
        };
        let new = match result {
            Ok(new) => new,
            Err((error, _)) => {
                info!(
                    "conn={id} user={session_user} refresh refused: {}",
                    error.code
                );
                self.logins.failed(ip, &session_user, now);
                self.stats.logins.failed += 1;
                return self.reply_error(id, reply_id.as_deref(), &error);
            }
        };
        let expires = new.expires.unwrap_or_default();
        let info = new.info.as_deref().and_then(info_of);
        match grant {
            Some(grant) => {
                grant.expires = Some(expires);
                grant.info = info.clone();
            }
            None => {
                let mut fresh = Server::password_grant(None);
                fresh.expires = Some(expires);
                fresh.info = info.clone();
                *grant = Some(Box::new(fresh));
            }
        }
        info!("conn={id} user={session_user} session refreshed");
        self.router.set_client_info(id, info, &mut self.actions);
        self.arm_expiry(id, now);
        self.stats.messages.answered(true);
        let body = client_ok(
            reply_id.as_deref(),
            Some(REFRESH),
            &RefreshReply { expires },
        );
        self.send(id, body);
    }

    /// `bester.logout`: the session's resume tokens are refused from now on.
    pub(super) fn revoke_resume_tokens(&mut self, id: ConnId) {
        let session = match self.conn(id).map(|c| &c.role) {
            Some(Role::Client(ClientState::Ready {
                grant: Some(grant), ..
            })) => grant.session.clone(),
            _ => return,
        };
        self.revoke_session(&session);
    }

    /// The resume tokens of `session` are refused from now on (kept on disk and passed to an
    /// upgrade's new process as every logout is).
    pub(super) fn revoke_session(&mut self, session: &str) {
        let session = session.to_string();
        let now = unix_now();
        let until = now.saturating_add(self.config.auth.resume_ttl.as_secs());
        self.tokens.revoked.revoke(&session, until, now);
        // After an upgrade's handover the new process keeps the file: one writer at a time.
        if !self.upgrade_relay(|out| out.revoked(&session, until))
            && let Some(file) = &self.tokens.file
        {
            file.revoked(&session, until);
        }
    }

    /// The logged-out sessions, for the new process of an upgrade (`server/relay.rs`).
    pub(super) fn revoked_snapshot(&self, out: &mut Outbox) {
        for (session, until) in self.tokens.revoked.entries() {
            out.revoked(session, until);
        }
        out.floor(self.tokens.revoked.floor());
    }

    /// A line from an upgrade's old process: a logged-out session, or a floor.
    pub(super) fn adopt_revocation(&mut self, line: &relay::Line) {
        match *line {
            relay::Line::Revoked(session, until) => {
                self.tokens.revoked.revoke(session, until, unix_now());
                if let Some(file) = &self.tokens.file {
                    file.revoked(session, until);
                }
            }
            relay::Line::Floor(until) => {
                self.tokens.revoked.raise_floor(until);
                if let Some(file) = &self.tokens.file {
                    file.floor(until);
                }
            }
            relay::Line::Go | relay::Line::Other => {}
        }
    }

    /// The token key and JWT keys of the configuration now running (after a reload): a key file
    /// named now is used from now on; without one, the random key of this run stays.
    pub(super) fn apply_token_keys(&mut self) {
        if let Some(key) = &self.config.auth.token_key {
            self.auth.set_token_key(key.clone());
        }
    }
}

/// A verified token's `info` text as the session's authorisation data.
fn info_of(text: &str) -> Option<Info> {
    RawValue::from_string(text.to_string()).ok().map(Info)
}
