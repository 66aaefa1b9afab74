//! Handlers that answer without request tokens, as the original spec's handlers do.
//!
//! - `correlate = "order"`: at most one request in flight on each connection of the type, so the
//!   next answer on a connection is the reply to its one request; several connections share the
//!   load, and requests wait (bounded, `max_queued`) for a free connection.
//! - `correlate = "connection"`: the server dials the handler's own socket for every request
//!   ([`Action::Dial`]); the first frame back is the answer, then the connection is closed. At most
//!   `max_inflight` dialled connections are open at once; the others wait, as above.
//!
//! A handler frame that fails to parse but can still be tied to its request (a readable `request`
//! token, or the one request of such a connection) fails that request at once with
//! `bad_handler_reply`, instead of leaving it to time out.

use serde::Serialize;

use log::debug;

use super::{Action, ConnId, Link, Origin, Pending, Router};
use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::protocol::message::PayloadRef;
use crate::stats::RequestOutcome;

/// How a handler type's answers are matched to the requests they answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Correlate {
    /// By the `request` token the answer echoes (pipelined, any order).
    #[default]
    Request,
    /// One request in flight per connection; the next answer on it is the reply.
    Order,
    /// One dialled connection per request; the first frame back is the reply.
    Connection,
}

impl Correlate {
    /// The configuration word.
    pub fn as_str(self) -> &'static str {
        match self {
            Correlate::Request => "request",
            Correlate::Order => "order",
            Correlate::Connection => "connection",
        }
    }
}

/// How one handler type is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerMode {
    /// How answers are correlated.
    pub correlate: Correlate,
    /// `request`: requests in flight per connection. `connection`: dialled connections open at
    /// once. (`order` has one per connection.)
    pub max_inflight: usize,
    /// `order` and `connection`: requests waiting for a free connection before `handler_busy`.
    pub max_queued: usize,
}

impl Default for HandlerMode {
    fn default() -> Self {
        HandlerMode {
            correlate: Correlate::Request,
            max_inflight: 1024,
            max_queued: 1024,
        }
    }
}

/// The client's view of a numeric error status from an original-spec handler.
#[derive(Serialize)]
struct StatusError<'a> {
    error: String,
    code: ErrorCode,
    status: &'a str,
}

impl Router {
    /// Dispatch to an `order` or `connection` type: send now if a connection is free (or may be
    /// dialled), else wait in the type's queue.
    pub(super) fn dispatch_one_at_a_time(
        &mut self,
        mut pending: Pending,
        payload: &PayloadRef<'_>,
        now: std::time::Instant,
        out: &mut Vec<Action>,
    ) {
        let pool = self.pools.get(&*pending.kind).expect("checked by dispatch");
        let correlate = pool.mode.correlate;
        if correlate == Correlate::Order && pool.links.is_empty() && !pool.starting {
            self.ended(pending.stat, RequestOutcome::Unavailable);
            let text = format!("the {:?} handler is not running", pending.kind);
            return self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::HandlerNotRunning, text),
                out,
            );
        }
        if pool.waiting.len() >= pool.mode.max_queued {
            let text = format!(
                "the {:?} handler has {} requests waiting",
                pending.kind,
                pool.waiting.len()
            );
            self.ended(pending.stat, RequestOutcome::Busy);
            return self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::HandlerBusy, text),
                out,
            );
        }
        let Some((token, body)) = self.request_body(&pending, payload, out) else {
            return;
        };
        pending.handler = None;
        let kind = pending.kind.clone();
        self.track(token, pending, now);
        let pool = self.pools.get_mut(&*kind).expect("checked above");
        pool.waiting_bytes += body.len();
        pool.waiting.push_back((token, body));
        self.pump(out);
    }

    /// Start waiting requests of `order` and `connection` types that now have a free connection.
    pub(super) fn pump(&mut self, out: &mut Vec<Action>) {
        let kinds: Vec<String> = self
            .pools
            .iter()
            .filter(|(_, p)| !p.waiting.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for kind in kinds {
            loop {
                let pool = self.pools.get_mut(&kind).expect("listed above");
                // Requests that timed out while waiting are gone from `pending`.
                while pool
                    .waiting
                    .front()
                    .is_some_and(|(t, _)| !self.pending.contains_key(t))
                {
                    let (_, body) = pool.waiting.pop_front().expect("not empty");
                    pool.waiting_bytes -= body.len();
                }
                if pool.waiting.is_empty() {
                    break;
                }
                match pool.mode.correlate {
                    Correlate::Connection if pool.open < pool.mode.max_inflight => {
                        let (token, body) = pool.waiting.pop_front().expect("not empty");
                        pool.waiting_bytes -= body.len();
                        pool.open += 1;
                        out.push(Action::Dial {
                            kind: kind.clone(),
                            token,
                            body,
                        });
                    }
                    Correlate::Order => {
                        let count = pool.links.len();
                        let free = (0..count)
                            .map(|i| pool.links[(pool.next + i) % count])
                            .find(|c| {
                                self.links
                                    .get(c)
                                    .is_some_and(|l| l.current.is_none() && l.late == 0)
                            });
                        let Some(conn) = free else { break };
                        pool.next = (pool.next + 1) % count.max(1);
                        let (token, body) = pool.waiting.pop_front().expect("not empty");
                        pool.waiting_bytes -= body.len();
                        let link = self.links.get_mut(&conn).expect("pool links are links");
                        link.current = Some(token);
                        link.inflight += 1;
                        if let Some(p) = self.pending.get_mut(&token) {
                            p.handler = Some(conn);
                        }
                        out.push(Action::Request {
                            to: conn,
                            body,
                            token,
                        });
                    }
                    // Requests that waited for the type to start: least loaded link first.
                    Correlate::Request => {
                        let count = pool.links.len();
                        let max = pool.max_inflight;
                        let free = (0..count)
                            .map(|i| pool.links[(pool.next + i) % count])
                            .filter_map(|c| Some((c, self.links.get(&c)?.inflight)))
                            .filter(|(_, inflight)| *inflight < max)
                            .min_by_key(|(_, inflight)| *inflight);
                        let Some((conn, _)) = free else { break };
                        pool.next = (pool.next + 1) % count.max(1);
                        let (token, body) = pool.waiting.pop_front().expect("not empty");
                        pool.waiting_bytes -= body.len();
                        self.links
                            .get_mut(&conn)
                            .expect("pool links are links")
                            .inflight += 1;
                        if let Some(p) = self.pending.get_mut(&token) {
                            p.handler = Some(conn);
                        }
                        out.push(Action::Request {
                            to: conn,
                            body,
                            token,
                        });
                    }
                    _ => break,
                }
            }
        }
    }

    /// A request on `conn` was answered: a dialled connection is closed, and waiting requests may
    /// now go out.
    pub(super) fn one_answered(
        &mut self,
        conn: ConnId,
        correlate: Correlate,
        out: &mut Vec<Action>,
    ) {
        if correlate == Correlate::Connection {
            out.push(Action::Close { conn });
        }
        if correlate != Correlate::Request {
            self.pump(out);
        }
    }

    /// A request on `handler` timed out. A dialled connection is closed; an `order` connection
    /// still owes its answer, which must not be taken for the next request's: it gets no new
    /// request until that late answer came and was dropped.
    pub(super) fn after_timeout(&mut self, handler: Option<ConnId>, out: &mut Vec<Action>) {
        let Some(conn) = handler else { return };
        match self.links.get_mut(&conn) {
            Some(link) if link.correlate == Correlate::Connection => {
                out.push(Action::Close { conn });
            }
            Some(link) if link.correlate == Correlate::Order => link.late += 1,
            _ => {}
        }
    }

    /// An answer with no token on an `order` link with no request in flight: if a timed-out
    /// request's answer is owed, this is it; drop it and free the link. False if none is owed.
    pub(super) fn drop_late_answer(&mut self, conn: ConnId, out: &mut Vec<Action>) -> bool {
        let Some(link) = self.links.get_mut(&conn).filter(|l| l.late > 0) else {
            return false;
        };
        link.late -= 1;
        debug!(
            "conn={conn} handler={} late answer to a request that timed out; dropped",
            link.kind
        );
        self.pump(out);
        true
    }

    /// The server connected to the handler for `token` ([`Action::Dial`]): the request is on `conn`.
    /// False if the request is no longer waiting (the server then closes the connection).
    pub fn dial_opened(&mut self, conn: ConnId, kind: &str, token: u64) -> bool {
        let Some(pending) = self.pending.get_mut(&token) else {
            if let Some(pool) = self.pools.get_mut(kind) {
                pool.open = pool.open.saturating_sub(1);
            }
            return false;
        };
        pending.handler = Some(conn);
        self.links.insert(
            conn,
            Link {
                kind: kind.to_string(),
                inflight: 1,
                correlate: Correlate::Connection,
                current: Some(token),
                late: 0,
            },
        );
        true
    }

    /// The server could not connect to the handler for `token`: answer `handler_unavailable`.
    pub fn dial_failed(&mut self, kind: &str, token: u64, why: &str, out: &mut Vec<Action>) {
        if let Some(pool) = self.pools.get_mut(kind) {
            pool.open = pool.open.saturating_sub(1);
        }
        if let Some(pending) = self.take_pending(token) {
            self.ended(pending.stat, RequestOutcome::Unavailable);
            let text = format!("the {:?} handler could not be reached: {why}", pending.kind);
            self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::HandlerUnavailable, text),
                out,
            );
        }
        self.pump(out);
    }

    /// A frame from handler `conn` failed to parse. If it can be tied to a request (its readable
    /// `request` token names one in flight on `conn`, or `conn` has one request by order or
    /// connection), that request is failed now with `bad_handler_reply`. Returns the token text of
    /// the request failed, for the error report to the handler.
    pub fn handler_bad_frame(
        &mut self,
        conn: ConnId,
        token: Option<&str>,
        error: &ErrorBody,
        out: &mut Vec<Action>,
    ) -> Option<String> {
        let link = self.links.get(&conn)?;
        let correlate = link.correlate;
        let by_token = token
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|t| self.pending.get(t).is_some_and(|p| p.handler == Some(conn)));
        let Some(token) = by_token.or(link.current) else {
            // A malformed late answer settles what was owed just as well.
            self.drop_late_answer(conn, out);
            return None;
        };
        let pending = self.take_pending(token)?;
        self.ended(pending.stat, RequestOutcome::Error);
        let text = format!(
            "the {:?} handler sent a malformed answer: {}",
            pending.kind, error.error
        );
        self.fail(
            &pending.origin,
            ErrorBody::new(ErrorCode::BadHandlerReply, text),
            out,
        );
        self.one_answered(conn, correlate, out);
        Some(token.to_string())
    }

    /// Answer an original-spec numeric error status: `handler_error` with that status.
    pub(super) fn fail_status(
        &mut self,
        origin: &Origin,
        kind: &str,
        status: &str,
        out: &mut Vec<Action>,
    ) {
        let text = format!("the {kind:?} handler answered with status {status:?}");
        match origin {
            Origin::Client { .. } => {
                let error = StatusError {
                    error: text,
                    code: ErrorCode::HandlerError,
                    status,
                };
                self.respond_error(origin, &error, out);
            }
            _ => self.fail(origin, ErrorBody::new(ErrorCode::HandlerError, text), out),
        }
    }
}
