//! Requests for a handler type that is starting: while a type's processes start, restart after a
//! crash, or are replaced by a reload, it may have no connection for a moment. Its requests then
//! wait in the type's queue (bounded in count by `max_queued` and in bytes by
//! [`MAX_WAITING_BYTES`]) until a connection comes (`pump`) or their deadline passes
//! (`handler_not_running`, as at once before). A type whose processes keep failing to start is
//! not starting: its requests are refused at once, and those waiting are refused when it stops
//! being one. Part of the [`Router`]; no I/O.

use super::*;

/// Most bytes of request bodies waiting for one handler type to start.
pub const MAX_WAITING_BYTES: usize = 16 << 20;

impl Router {
    /// Whether `kind` is starting (the server says so as its processes start, crash, restart or
    /// keep failing). When it stops starting with no connection, its waiting requests are
    /// refused `handler_not_running` now rather than at their deadlines.
    pub fn set_starting(&mut self, kind: &str, starting: bool, out: &mut Vec<Action>) {
        let Some(pool) = self.pools.get_mut(kind) else {
            return;
        };
        if pool.starting == starting {
            return;
        }
        pool.starting = starting;
        if starting || !pool.links.is_empty() || pool.mode.correlate == Correlate::Connection {
            return;
        }
        let waiting: Vec<u64> = pool.waiting.drain(..).map(|(token, _)| token).collect();
        pool.waiting_bytes = 0;
        for token in waiting {
            let Some(pending) = self.take_pending(token) else {
                continue;
            };
            self.ended(pending.stat, RequestOutcome::Unavailable);
            let text = format!("the {:?} handler is not running", pending.kind);
            self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::HandlerNotRunning, text),
                out,
            );
        }
    }

    /// Start what waits for connections that are now there (after a handler connected).
    pub fn start_waiting(&mut self, out: &mut Vec<Action>) {
        self.pump(out);
    }

    /// Requests waiting for `kind` to start.
    pub fn waiting_for(&self, kind: &str) -> usize {
        self.pools.get(kind).map_or(0, |p| p.waiting.len())
    }

    /// Queue a request for a `request`-correlated type with no connection yet, or refuse it
    /// `handler_busy` when the queue is full.
    pub(super) fn wait_for_start(
        &mut self,
        mut pending: Pending,
        payload: &PayloadRef<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let pool = self.pools.get(&*pending.kind).expect("checked by dispatch");
        let (queued, bytes, max) = (pool.waiting.len(), pool.waiting_bytes, pool.mode.max_queued);
        let full = |server: &mut Router, pending: &Pending, out: &mut Vec<Action>| {
            server.ended(pending.stat, RequestOutcome::Busy);
            let text = format!(
                "the {:?} handler is starting and has {queued} requests waiting",
                pending.kind
            );
            server.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::HandlerBusy, text),
                out,
            );
        };
        if queued >= max {
            return full(self, &pending, out);
        }
        let Some((token, body)) = self.request_body(&pending, payload, out) else {
            return;
        };
        if bytes + body.len() > MAX_WAITING_BYTES {
            return full(self, &pending, out);
        }
        pending.handler = None;
        let kind = pending.kind.clone();
        self.track(token, pending, now);
        let pool = self.pools.get_mut(&*kind).expect("checked above");
        pool.waiting_bytes += body.len();
        pool.waiting.push_back((token, body));
    }

    /// Whether a request whose deadline passed never reached a handler because its type had no
    /// connection (answered `handler_not_running`, not `handler_timeout`).
    pub(super) fn never_started(&self, pending: &Pending) -> bool {
        pending.handler.is_none()
            && self
                .pools
                .get(&*pending.kind)
                .is_none_or(|p| p.links.is_empty() && p.mode.correlate != Correlate::Connection)
    }
}
