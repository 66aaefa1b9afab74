//! Redirects, the server's side: carry out the router's [`Action::Redirect`] — a handler sent a
//! client elsewhere (PROTOCOL.md §6, "Redirects"). The client's other requests in flight are
//! answered `redirected` (by the router), answers already queued go out first, then the client
//! gets `{"header":{"status":"ok","kind":"redirect","id":…},"data":{"url":…,"token":…}}` as its
//! last frame and the connection closes once that is written. With `"token":"mint"` the token is a
//! resume token for the client's session, signed with this server's token key (`[auth]
//! token_secret_file`), which a server sharing the key takes as a login.
//!
//! A redirect is carried out only after the rest of the batch of actions it came in: answers the
//! router gave the client before it are queued first. While the client has a built-in running on
//! the verifier threads (`bester.passwd`, `bester.authenticate`, `bester.refresh`), the redirect
//! waits for that built-in's answer, so that it too is answered.
//!
//! It must not: log the token, or redirect a connection that is not a logged-in client.
//!
//! [`Action::Redirect`]: crate::router::Action::Redirect

use std::time::Instant;

use log::{debug, info};

use super::Server;
use super::conn::{ClientState, Role};
use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::protocol::redirect::{RedirectToken, client_redirect};
use crate::router::ConnId;

/// A redirect to carry out once the actions queued before it are applied.
#[derive(Debug)]
pub(super) struct Redirect {
    /// The client.
    pub to: ConnId,
    /// The id of the request it answers.
    pub id: Option<String>,
    /// Where to.
    pub url: String,
    /// What the client logs in with there.
    pub token: Option<RedirectToken>,
}

impl Server {
    /// Tell the client where to go, answer its other requests `redirected`, and close.
    pub(super) fn carry_out_redirect(&mut self, redirect: Redirect, now: Instant) {
        let Redirect { to, id, url, token } = redirect;
        if Server::is_attached_id(to) {
            return self.attached_redirect(to, id.as_deref());
        }
        let Some(conn) = self.conn(to) else {
            return debug!("conn={to} gone before its redirect");
        };
        let (user, grant) = match &conn.role {
            Role::Client(ClientState::Ready { busy: true, .. }) if conn.closing.is_none() => {
                self.redirects_waiting.push(Redirect { to, id, url, token });
                return;
            }
            Role::Client(ClientState::Ready { user, grant, .. }) if conn.closing.is_none() => {
                (user.clone(), grant.as_deref().cloned())
            }
            _ => return debug!("{} closing; redirect dropped", conn.context()),
        };
        let token = match token {
            None => None,
            Some(RedirectToken::Given(token)) => Some(token),
            Some(RedirectToken::Mint) => match grant {
                Some(grant) => Some(self.mint(&user, &grant).0),
                None => {
                    // A session that logged in with the original spec's per-message
                    // credentials has no resume token (it got no identify reply).
                    let error = ErrorBody::new(
                        ErrorCode::InternalError,
                        "the handler redirected with \"token\":\"mint\", but this session has \
                         no resume token (it logged in with credentials on its first message)",
                    );
                    return self.reply_error(to, id.as_deref(), &error);
                }
            },
        };
        // Everything else the client asked is answered now, before the redirect frame.
        let mut answers = Vec::new();
        self.router.client_redirected(to, &mut answers);
        for action in answers {
            self.apply(action);
        }
        info!("conn={to} user={user} redirected to {url}");
        self.send_secret(to, client_redirect(id.as_deref(), &url, token.as_deref()));
        self.finish(to, now, "redirected".into());
    }

    /// Redirects that waited for a built-in go back in line once their client is free (or
    /// gone); true if any did.
    pub(super) fn release_redirects(&mut self) -> bool {
        let waiting = std::mem::take(&mut self.redirects_waiting);
        let before = self.redirects.len();
        for redirect in waiting {
            let busy = matches!(
                self.conn(redirect.to).map(|c| &c.role),
                Some(Role::Client(ClientState::Ready { busy: true, .. }))
            );
            if busy {
                self.redirects_waiting.push(redirect);
            } else {
                self.redirects.push_back(redirect);
            }
        }
        self.redirects.len() > before
    }
}
