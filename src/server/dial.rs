//! The server's side of handlers it dials (`connect`): carry out the router's [`Action::Dial`] by
//! connecting through [`crate::handler::Dialer`], registering the stream as a handler connection
//! for its one request, and queueing the request on it. A handler whose listen queue is full is
//! busy, not gone: the dial is tried again after a short, growing pause ([`Redials`]) until the
//! request's deadline passes (the router then answers `handler_timeout`). Other failures go back
//! to the router, which answers the client `handler_unavailable`.
//!
//! [`Action::Dial`]: crate::router::Action::Dial

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use log::debug;
use slab::Slab;

use crate::net::Stream;

use super::conn::Role;
use super::{Server, Timer};

/// First pause before dialling a busy handler again; it doubles up to [`MAX_REDIAL_PAUSE`].
const REDIAL_PAUSE: Duration = Duration::from_millis(2);
/// Longest pause between two dials of a busy handler.
const MAX_REDIAL_PAUSE: Duration = Duration::from_millis(100);

/// Dials waiting to be tried again.
#[derive(Debug, Default)]
pub(super) struct Redials {
    waiting: Slab<Redial>,
}

#[derive(Debug)]
struct Redial {
    kind: String,
    token: u64,
    body: Vec<u8>,
    pause: Duration,
}

impl Server {
    /// Connect to the handler of `kind` for request `token` and send it `body`.
    pub(super) fn dial(&mut self, kind: &str, token: u64, body: Vec<u8>) {
        self.dial_after(kind, token, body, Duration::ZERO);
    }

    /// A busy handler's redial is due: dial again if the request still waits; else give its dial
    /// slot back.
    pub(super) fn redial(&mut self, slot: usize) {
        let Some(r) = self.redials.waiting.try_remove(slot) else {
            return;
        };
        if self.router.is_pending(r.token) {
            self.dial_after(&r.kind, r.token, r.body, r.pause);
        } else {
            let why = "the request is no longer waiting";
            self.router
                .dial_failed(&r.kind, r.token, why, &mut self.actions);
        }
    }

    /// [`Server::dial`], `pause` being the last pause before it (zero: the first try).
    fn dial_after(&mut self, kind: &str, token: u64, body: Vec<u8>, pause: Duration) {
        let stream = match self.dialer.connect(kind) {
            Ok(stream) => stream,
            Err(e) if e.busy => {
                let pause = (pause * 2).clamp(REDIAL_PAUSE, MAX_REDIAL_PAUSE);
                debug!(
                    "handler={kind} busy ({}); dialling again in {pause:?}",
                    e.why
                );
                let slot = self.redials.waiting.insert(Redial {
                    kind: kind.to_string(),
                    token,
                    body,
                    pause,
                });
                let at = Instant::now() + pause;
                self.timers.push(Reverse((at, Timer::Redial(slot))));
                return;
            }
            Err(e) => {
                debug!("handler={kind} dial for request {token} failed: {}", e.why);
                return self
                    .router
                    .dial_failed(kind, token, &e.why, &mut self.actions);
            }
        };
        let role = Role::Handler {
            kind: kind.to_string(),
            complained: false,
            dialed: true,
        };
        let max_frame = self.config.max_frame;
        let Some(id) = self.insert_conn(
            Stream::Unix(stream),
            format!("{kind} (dialled)"),
            None,
            role,
            max_frame,
        ) else {
            let why = "the connection could not be registered";
            return self.router.dial_failed(kind, token, why, &mut self.actions);
        };
        debug!("conn={id} handler={kind} dialled for request {token}");
        if !self.router.dial_opened(id, kind, token) {
            return self.close(id, "request no longer waiting".into());
        }
        if !self.try_send(id, body) {
            self.router.handler_refused(token, &mut self.actions);
            self.close(id, "request refused".into());
        }
    }
}
