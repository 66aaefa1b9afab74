//! Logins an auth handler decides (`[auth] handler`): the client's `authentication` object goes
//! to the handler type as a request with `"kind":"login"`, through the same pools, in-flight
//! limits, deadlines and failure paths as every request, with its own timeout and its own cap on
//! logins in flight. Its one answer becomes [`Action::LoginAccepted`] (the handler's data, for
//! the server to check) or [`Action::LoginRefused`] (an error frame for the client). Part of the
//! [`Router`]; no I/O.

use std::borrow::Cow;

use super::*;
use crate::protocol::message::client_error;

/// The payload type of a login request.
pub const LOGIN: &str = "bester.login";

impl Router {
    /// Send a client's login to the auth handler type `kind`: `authentication` is the object as
    /// JSON text; `address`, `listener` and `transport` what the handler is told of the
    /// connection.
    #[allow(clippy::too_many_arguments)]
    pub fn login_request(
        &mut self,
        conn: ConnId,
        kind: &str,
        address: String,
        (listener, transport): (String, &'static str),
        authentication: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let origin = Origin::Login {
            conn,
            address,
            listener,
            transport,
        };
        if self.logins >= self.config.max_logins {
            if let Some(pool) = self.pools.get(kind) {
                let stat = pool.stat;
                self.ended(stat, RequestOutcome::Busy);
            }
            let text = format!(
                "the {kind:?} auth handler has {} logins in flight",
                self.logins
            );
            return self.fail(&origin, ErrorBody::new(ErrorCode::HandlerBusy, text), out);
        }
        let pending = Pending {
            origin,
            handler: None,
            kind: self.type_name(kind),
            from: Arc::new(Sender {
                user: None,
                server: self.config.server.clone(),
                handler: None,
                info: None,
            }),
            scope: Scope::Client,
            via: Vec::new(),
            hops: 0,
            stat: 0,
            sent_at: now,
        };
        let payload = PayloadRef {
            kind: Cow::Borrowed(LOGIN),
            data: Some(Cow::Borrowed(authentication)),
        };
        self.dispatch(pending, &payload, now, out);
    }

    /// Logins in flight to the auth handler.
    pub fn logins_in_flight(&self) -> usize {
        self.logins
    }

    /// How long the work of `origin` may wait for its handler.
    pub(super) fn timeout_of(&self, origin: &Origin) -> Duration {
        match origin {
            Origin::Login { .. } => self.config.login_timeout,
            _ => self.config.request_timeout,
        }
    }

    /// Refuse a login for a reason of ours (the handler did not or could not answer).
    pub(super) fn login_failed(&mut self, conn: ConnId, error: &ErrorBody, out: &mut Vec<Action>) {
        out.push(Action::LoginRefused {
            conn,
            body: client_error(None, error),
            by_handler: false,
        });
    }
}
