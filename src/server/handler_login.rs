//! Logins the application decides: with `[auth] handler = "T"`, an identify whose
//! `authentication` is none of the built-in shapes (or, with `handle = "all"`, a password or a
//! JWT too) goes to handler type T as a `kind:"login"` request (`router/login.rs`). T answers ok
//! with `{"user":…,"info":{…}}` or with an error the client receives as it is.
//!
//! The handler's answer is checked here: a valid user name, `info` a JSON object of at most
//! [`MAX_INFO`] bytes. The session then starts on the verifier threads exactly as a token
//! login's does (`TokenCheck::Granted`: no argon2; the session stands on the user's store entry
//! when there is one), with `info` as `header.from.info` on every request and a resume token in
//! the identify reply (resuming it never asks the handler again).
//!
//! It must not: log the authentication object (it may hold a password or an API key), send a
//! public-key login or a resume token to the handler (T could not check a challenge; a resume
//! token is a session already granted), or let a slow handler hold more than `[auth]
//! max_inflight` logins or one login longer than `auth_timeout_ms`.

use std::time::Instant;

use log::{info, warn};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Server;
use super::auth_tag::AuthTag;
use super::client::rate_limited;
use super::conn::{ClientState, Role};
use super::token_login::{TokenPurpose, anonymous, unix_now};
use crate::auth::jobs::{AuthJob, TokenCheck};
use crate::auth::jwt::MAX_INFO;
use crate::auth::user_store::validate_username;
use crate::config::auth::Handle;
use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::protocol::message::Authentication;
use crate::router::ConnId;

/// `payload.data` of the auth handler's ok answer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginAnswer {
    user: String,
    #[serde(default)]
    info: Option<Box<RawValue>>,
}

/// Why the handler's answer cannot start a session; `Ok`: the user and `info` text.
fn check_answer(data: Option<&str>) -> Result<(String, Option<String>), String> {
    let data = data.ok_or("its answer has no data; expected {\"user\":…,\"info\":{…}}")?;
    if !data.starts_with('{') {
        return Err("its answer is not an object; expected {\"user\":…,\"info\":{…}}".into());
    }
    let answer: LoginAnswer = serde_json::from_str(data).map_err(|e| {
        let text = e.to_string();
        let text = text.rfind(" at line ").map_or(&*text, |at| &text[..at]);
        format!(
            "its answer is not {{\"user\":…,\"info\":{{…}}}}: {}",
            crate::protocol::redact::without_values(text)
        )
    })?;
    validate_username(&answer.user).map_err(|e| format!("its answer's user: {e}"))?;
    let info = match answer.info {
        None => None,
        Some(info) if !info.get().starts_with('{') => {
            return Err("its answer's info is not a JSON object".into());
        }
        Some(info) if info.get().len() > MAX_INFO => {
            return Err(format!("its answer's info is over {MAX_INFO} bytes"));
        }
        Some(info) => Some(info.get().to_string()),
    };
    Ok((answer.user, info))
}

impl Server {
    /// The auth handler type this identify's `authentication` goes to, if any.
    pub(super) fn auth_handler_for(&self, authentication: &Authentication) -> Option<String> {
        let handler = self.config.auth.handler.as_ref()?;
        let decides = match authentication {
            Authentication::Other(_) => true,
            Authentication::PublicKey(_) | Authentication::Resume(_) => false,
            Authentication::Token(token) if token.0.starts_with("v1.") => false,
            Authentication::Password(_) | Authentication::Token(_) => handler.handle == Handle::All,
        };
        decides.then(|| handler.kind.clone())
    }

    /// Send this identify to the auth handler `kind`, within the rate limits. `Err` is the
    /// refusal to send before closing.
    pub(super) fn handler_login(
        &mut self,
        id: ConnId,
        kind: &str,
        authentication: &Authentication,
        now: Instant,
    ) -> Result<(), ErrorBody> {
        let Some(conn) = self.conn(id) else {
            return Ok(());
        };
        let ip = conn.ip;
        let address = conn.peer.clone();
        let listener = match &conn.role {
            Role::Client(ClientState::Identifying { listener, .. }) => *listener,
            _ => return Ok(()),
        };
        if !self.logins.allows(ip, &anonymous(ip), now) {
            self.stats.logins.rate_limited += 1;
            return Err(rate_limited());
        }
        let listener = self.listeners.name_of(listener);
        if let Some(conn) = self.conn(id) {
            conn.role = Role::Client(ClientState::Verifying);
        }
        let json = authentication.to_json();
        self.router
            .login_request(id, kind, address, listener, &json, now, &mut self.actions);
        Ok(())
    }

    /// The auth handler accepted a login: check its answer, then start the session on the
    /// verifier threads (they answer in `token_login.rs`, as for a token).
    pub(super) fn login_accepted(&mut self, id: ConnId, data: Option<String>, now: Instant) {
        let Some(conn) = self.conn(id) else { return };
        let ip = conn.ip;
        let kind = self
            .config
            .auth
            .handler
            .as_ref()
            .map_or("?", |h| h.kind.as_str());
        let (user, info) = match check_answer(data.as_deref()) {
            Ok(answer) => answer,
            Err(why) => {
                warn!("conn={id} the {kind:?} auth handler's login answer was refused: {why}");
                self.stats.logins.failed += 1;
                let text = format!("the {kind:?} auth handler sent a malformed answer: {why}");
                let error = ErrorBody::new(ErrorCode::BadHandlerReply, text);
                self.tell_error(id, &error);
                return self.finish(id, now, "login refused".into());
            }
        };
        let job = AuthJob::Token {
            tag: AuthTag::token(id, ip, TokenPurpose::Handler),
            token: String::new(),
            check: TokenCheck::Granted { user, info },
            now: unix_now(),
        };
        if let Err(error) = self.submit_login(id, "auth handler login", job) {
            self.tell_error(id, &error);
            self.finish(id, now, "login refused".into());
        }
    }

    /// A login to the auth handler failed: tell the client `body` and close. A refusal by the
    /// handler itself counts as a failed login from the client's address.
    pub(super) fn login_refused(
        &mut self,
        id: ConnId,
        body: Vec<u8>,
        by_handler: bool,
        now: Instant,
    ) {
        let Some(conn) = self.conn(id) else { return };
        let (ip, peer) = (conn.ip, conn.peer.clone());
        if by_handler {
            self.logins.failed(ip, &anonymous(ip), now);
        }
        self.stats.logins.failed += 1;
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["data"]["code"].as_str().map(str::to_string))
            .unwrap_or_default();
        let how = if by_handler {
            "refused by the auth handler"
        } else {
            "not answered by the auth handler"
        };
        info!("conn={id} login from {peer} {how}: {code:?}");
        self.send(id, body);
        self.finish(id, now, "login refused".into());
    }
}

#[cfg(test)]
mod tests {
    use super::check_answer;

    /// `protocol/vectors/auth_handler.json`: what each answer of the handler gives.
    #[test]
    fn the_vectors_answers() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../protocol/vectors/auth_handler.json")).unwrap();
        for answer in vectors["answers"].as_array().unwrap() {
            let got = check_answer(answer["data"].as_str());
            match (&answer["accepted"], &answer["refused"]) {
                (accepted, serde_json::Value::Null) => assert_eq!(
                    got,
                    Ok((
                        accepted["user"].as_str().unwrap().to_string(),
                        accepted["info"].as_str().map(str::to_string)
                    )),
                    "{answer}"
                ),
                (_, refused) => assert_eq!(got, Err(refused.as_str().unwrap().into()), "{answer}"),
            }
        }
    }

    #[test]
    fn the_answer_names_a_valid_user_and_an_object_of_info() {
        assert_eq!(
            check_answer(Some(r#"{"user":"alice","info":{"plan":"pro"}}"#)),
            Ok(("alice".into(), Some(r#"{"plan":"pro"}"#.into())))
        );
        assert_eq!(
            check_answer(Some(r#"{"user":"bob"}"#)),
            Ok(("bob".into(), None))
        );
        let why = |data: Option<&str>| check_answer(data).unwrap_err();
        assert_eq!(
            why(None),
            "its answer has no data; expected {\"user\":…,\"info\":{…}}"
        );
        assert_eq!(
            why(Some(r#"{"info":{}}"#)),
            "its answer is not {\"user\":…,\"info\":{…}}: missing field `user`"
        );
        assert_eq!(
            why(Some(r#"{"user":"a","info":[1]}"#)),
            "its answer's info is not a JSON object"
        );
        let big = format!(r#"{{"user":"a","info":{{"p":"{}"}}}}"#, "x".repeat(4096));
        assert_eq!(why(Some(&big)), "its answer's info is over 4096 bytes");
        assert!(why(Some(r#"{"user":"a b"}"#)).starts_with("its answer's user: "));
        assert_eq!(
            why(Some(r#"{"user":5}"#)),
            "its answer is not {\"user\":…,\"info\":{…}}: invalid type: integer, expected a string"
        );
    }
}
