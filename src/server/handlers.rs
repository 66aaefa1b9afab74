//! Handler links: accepting a handler process's connection on its type's socket (connected means
//! ready), and handing its frames to the router. A handler that sends garbage is told so in an error
//! report and logged once per connection, not once per frame.

use std::time::Instant;

use log::{debug, info, warn};

use crate::net::Stream;
use crate::net::local::{allowed_text, peer_cred, uid_allowed};
use crate::protocol::handler::{handler_error_report, parse_handler_message};
use crate::protocol::message::handler_request_token;

use super::Server;
use super::conn::Role;
use super::lifecycle::Phase;
use super::token::HANDLER_LISTENER_BASE;
use crate::net::accept::Accepted;
use crate::router::ConnId;

impl Server {
    /// Tell the router which handler types are on their way, so that their requests wait for a
    /// connection instead of failing `handler_not_running`: every type while the server starts;
    /// afterwards the types whose processes are started or restarting and not failing over and
    /// over (a type besterd does not start itself, once the server is ready, is not).
    ///
    /// After a hot upgrade's handover, `socket = "..."` types are on their way too for the
    /// startup timeout: their handlers are still connected to the old process until it has
    /// drained, then connect here (`upgrade.rs`).
    pub(super) fn update_starting(&mut self) {
        let starting = matches!(self.life.phase, Phase::Starting(_));
        let handed_over = self.upgrades.taking_over();
        let kinds: Vec<String> = self.config.handlers.keys().cloned().collect();
        for kind in kinds {
            let coming = starting
                || self.supervisor.coming(&kind)
                || (handed_over && self.shared_handler_socket(&kind));
            self.router.set_starting(&kind, coming, &mut self.actions);
        }
    }

    /// Accept handler connections on the socket of listener `index`.
    pub(super) fn accept_handlers(&mut self, index: usize, now: Instant) {
        loop {
            let Some(h) = self.handler_listeners.get(index) else {
                return;
            };
            let kind = h.kind.clone();
            let key = HANDLER_LISTENER_BASE + index;
            let name = format!("handler socket {kind}");
            let stream = match self.accept.accept(key, &name, &h.listener, now) {
                Accepted::Conn(stream, _) => stream,
                Accepted::Empty => return,
                Accepted::Stalled => {
                    // Out of descriptors: a queued handler is closed (it reconnects or is
                    // restarted); try again on the timer.
                    self.accept.shed(key, &h.listener, |_, _| {});
                    return self.retry_accept_later(mio::Token(key), now);
                }
            };
            let (pid, uid) = match peer_cred(super::reload::fd_of(&stream)) {
                Ok((pid, uid)) => (Some(pid).filter(|p| *p > 0), uid),
                Err(e) => {
                    warn!("handler={kind} refused a connection: cannot read its credentials: {e}");
                    continue;
                }
            };
            let configured = self.config.handlers.get(&kind).and_then(|h| h.uid);
            if !uid_allowed(uid, configured) {
                // Dropping the stream closes it before it is ever read.
                self.refuse_handler(index, uid, pid, configured);
                continue;
            }
            let role = Role::Handler {
                kind: kind.clone(),
                complained: false,
                dialed: false,
            };
            let max_frame = self.config.max_frame;
            if let Some(id) = self.insert_conn(
                Stream::Unix(stream),
                format!("{kind}.sock"),
                None,
                role,
                max_frame,
            ) {
                info!(
                    "conn={id} handler={kind} connected (pid {})",
                    pid.map_or("?".into(), |p| p.to_string())
                );
                self.router.handler_connected(id, &kind);
                self.router.start_waiting(&mut self.actions);
                self.handler_joined(id, &kind, pid, now);
            }
        }
    }

    /// Count and log a handler connection refused because of its user id: the first one, then
    /// each time the count reaches a power of two (a local user cannot flood the log).
    fn refuse_handler(
        &mut self,
        index: usize,
        uid: u32,
        pid: Option<u32>,
        configured: Option<u32>,
    ) {
        let Some(h) = self.handler_listeners.get_mut(index) else {
            return;
        };
        h.refused += 1;
        if h.refused.is_power_of_two() {
            warn!(
                "handler={} refused a connection from uid {uid} (pid {}): only {} may connect \
                 (handlers.{}.uid allows another user); {} refused so far",
                h.kind,
                pid.map_or("?".into(), |p| p.to_string()),
                allowed_text(configured),
                h.kind,
                h.refused
            );
        }
    }

    /// A frame from a handler.
    pub(super) fn handler_frame(&mut self, id: ConnId, body: &[u8], now: Instant) {
        match parse_handler_message(body) {
            Ok(msg) => self.router.handler_message(id, msg, now, &mut self.actions),
            Err(error) => {
                let Some(conn) = self.conn(id) else { return };
                if let Role::Handler {
                    complained, dialed, ..
                } = &mut conn.role
                {
                    if *complained || *dialed {
                        debug!("{} bad frame: {error}", conn.context());
                    } else {
                        *complained = true;
                        warn!(
                            "{} sent a bad frame: {error} (further ones are logged at debug level)",
                            conn.context()
                        );
                    }
                }
                self.stats.error(error.code, false);
                // A malformed answer that still names its request fails it now, not at its timeout.
                let token = handler_request_token(body);
                let failed =
                    self.router
                        .handler_bad_frame(id, token.as_deref(), &error, &mut self.actions);
                self.send(
                    id,
                    handler_error_report(failed.as_deref().or(token.as_deref()), None, &error),
                );
            }
        }
    }
}
