//! The figures the broker keeps about itself: plain counters and fixed-bucket histograms, updated
//! on the loop thread by the router and the server, read by the monitor (`server/monitor.rs`) and
//! the admin socket (`server/admin.rs`).
//!
//! Pure: no I/O and no clock (durations and instants are passed in). Every update is an integer
//! increment or a bucket search over a fixed array: nothing here allocates, hashes a string or
//! locks, so counting costs the hot path next to nothing. Per-handler-type and per-peer figures
//! live in `Vec`s addressed by an index the router resolves once, when the type or peer is
//! declared (see `router::Pool` and `router::federation`).

use std::time::Duration;

use crate::protocol::ErrorCode;

/// Upper bounds of the latency histogram buckets, in microseconds (plus an implicit `+Inf`).
pub const LATENCY_BUCKETS_US: [u64; 17] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// A latency histogram with the fixed buckets of [`LATENCY_BUCKETS_US`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: [u64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of all observations, in microseconds.
    sum_us: u64,
    /// Number of observations.
    count: u64,
}

impl Histogram {
    /// Record one duration.
    pub fn observe(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US.partition_point(|bound| *bound < us);
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the observations, in microseconds.
    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// `(upper bound in µs, or None for +Inf; cumulative count)` for every bucket, in order.
    pub fn cumulative(&self) -> Vec<(Option<u64>, u64)> {
        let mut total = 0;
        self.counts
            .iter()
            .enumerate()
            .map(|(i, n)| {
                total += n;
                (LATENCY_BUCKETS_US.get(i).copied(), total)
            })
            .collect()
    }

    /// The upper bound (µs) of the bucket holding quantile `q` (0..=1); `None` without
    /// observations, `Some(None)` when it falls in the `+Inf` bucket.
    pub fn quantile(&self, q: f64) -> Option<Option<u64>> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        self.cumulative()
            .into_iter()
            .find(|(_, total)| *total >= rank)
            .map(|(bound, _)| bound)
    }
}

/// The kind of a connection, for the per-role figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    /// A user's client.
    Client = 0,
    /// A handler process.
    Handler = 1,
    /// A federated peer server.
    Peer = 2,
}

impl RoleKind {
    /// Every role, in index order.
    pub const ALL: [RoleKind; 3] = [RoleKind::Client, RoleKind::Handler, RoleKind::Peer];

    /// The role's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Client => "client",
            RoleKind::Handler => "handler",
            RoleKind::Peer => "peer",
        }
    }
}

/// Frames and bytes in each direction (of one connection, or of the whole server).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Complete frames received.
    pub frames_in: u64,
    /// Bytes read from the socket.
    pub bytes_in: u64,
    /// Frames queued for sending.
    pub frames_out: u64,
    /// Bytes queued for sending (length prefix included).
    pub bytes_out: u64,
}

impl Traffic {
    /// Bytes read from the socket.
    pub fn read(&mut self, bytes: usize) {
        self.bytes_in += bytes as u64;
    }

    /// One complete frame received.
    pub fn frame_in(&mut self) {
        self.frames_in += 1;
    }

    /// One frame with a body of `body` bytes queued for sending.
    pub fn frame_out(&mut self, body: usize) {
        self.frames_out += 1;
        self.bytes_out += body as u64 + 4;
    }

    /// Add another connection's traffic to these totals.
    pub fn add(&mut self, other: &Traffic) {
        self.frames_in += other.frames_in;
        self.bytes_in += other.bytes_in;
        self.frames_out += other.frames_out;
        self.bytes_out += other.bytes_out;
    }
}

/// Error frames and reports the broker produced, by code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorCounts([u64; ErrorCode::ALL.len()]);

impl Default for ErrorCounts {
    fn default() -> Self {
        ErrorCounts([0; ErrorCode::ALL.len()])
    }
}

impl ErrorCounts {
    /// One more error with this code.
    pub fn count(&mut self, code: ErrorCode) {
        self.0[code as usize] += 1;
    }

    /// How many errors with this code.
    pub fn get(&self, code: ErrorCode) -> u64 {
        self.0[code as usize]
    }

    /// `(code, count)` for every code, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (ErrorCode, u64)> + '_ {
        ErrorCode::ALL.iter().map(|c| (*c, self.get(*c)))
    }

    /// These counts plus `other`'s.
    pub fn plus(&self, other: &ErrorCounts) -> ErrorCounts {
        let mut sum = self.clone();
        for (a, b) in sum.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
        sum
    }
}

/// Answers to client messages (identify excluded: see [`Logins`]), by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Messages {
    /// Answered with status ok.
    pub ok: u64,
    /// Answered with status error.
    pub error: u64,
}

impl Messages {
    /// Count one answer.
    pub fn answered(&mut self, ok: bool) {
        if ok {
            self.ok += 1;
        } else {
            self.error += 1;
        }
    }
}

/// Logins (identify and `bester.authenticate`), by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Logins {
    /// The password was right.
    pub ok: u64,
    /// Wrong user or password.
    pub failed: u64,
    /// Refused by the failed-login limits before any check.
    pub rate_limited: u64,
}

/// How a request dispatched to a handler type ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The handler answered with status ok.
    Ok = 0,
    /// The handler answered with an error, or malformed; or the request was too large to send.
    Error = 1,
    /// The handler did not answer in time.
    Timeout = 2,
    /// No process was connected, or it went away with the request (or the server stopped).
    Unavailable = 3,
    /// The handler had too many requests in flight, or its queue was full.
    Busy = 4,
}

impl RequestOutcome {
    /// Every outcome, in index order.
    pub const ALL: [RequestOutcome; 5] = [
        RequestOutcome::Ok,
        RequestOutcome::Error,
        RequestOutcome::Timeout,
        RequestOutcome::Unavailable,
        RequestOutcome::Busy,
    ];

    /// The outcome's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::Error => "error",
            RequestOutcome::Timeout => "timeout",
            RequestOutcome::Unavailable => "unavailable",
            RequestOutcome::Busy => "busy",
        }
    }
}

/// One handler type's figures (kept by the router).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// Requests sent and not answered yet.
    pub in_flight: u64,
    /// Requests by [`RequestOutcome`] index.
    pub requests: [u64; 5],
    /// Dispatch → answer, for requests the handler answered (ok or error).
    pub latency: Histogram,
}

impl HandlerStats {
    /// Count a request's outcome.
    pub fn ended(&mut self, outcome: RequestOutcome) {
        self.requests[outcome as usize] += 1;
    }

    /// Requests that ended with `outcome`.
    pub fn outcome(&self, outcome: RequestOutcome) -> u64 {
        self.requests[outcome as usize]
    }
}

/// One peer's message figures (kept by the router).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Messages sent to it.
    pub sent: u64,
    /// Messages it acknowledged with status ok.
    pub acked: u64,
    /// Messages that failed: an error ack, the link went down, or no ack in time.
    pub failed: u64,
    /// Send → ack, for acknowledged messages (ok or error).
    pub ack_latency: Histogram,
}

/// The router's figures: per handler type and per peer (by the index the router gave them), the
/// answers it made to client messages, and the errors it produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Per handler type, in the order the types were declared.
    pub handlers: Vec<HandlerStats>,
    /// Per peer, in the order the peers were declared.
    pub peers: Vec<PeerStats>,
    /// Answers to client messages.
    pub messages: Messages,
    /// Errors by code.
    pub errors: ErrorCounts,
}

/// The server's own figures (connections, logins, traffic, its own answers and errors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted or dialled, by [`RoleKind`] index, since start.
    pub connections_total: [u64; 3],
    /// Logins by outcome.
    pub logins: Logins,
    /// Frames and bytes over every connection.
    pub traffic: Traffic,
    /// Answers the server made itself to client messages (built-ins, refusals).
    pub messages: Messages,
    /// Errors the server produced itself, by code.
    pub errors: ErrorCounts,
    /// Clients and peers cut off because their outbound queue overflowed.
    pub slow_consumers: u64,
    /// Requests served on the monitoring port.
    pub monitor_requests: u64,
    /// Monitoring connections closed for bad input, size, time or the connection cap.
    pub monitor_refused: u64,
    /// Per client listener, by its index (`[server] listen` is 0).
    pub listeners: Vec<ListenerStats>,
}

/// Classes of TLS handshake failures (`net::tls::HandshakeFailure`, by index).
pub const TLS_FAILURE_CLASSES: usize = 7;
/// The WebSocket close codes counted as protocol errors, in index order.
pub const WS_ERROR_CODES: [u16; 4] = [1002, 1007, 1009, 1011];

/// The figures of one client listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Frames and bytes of its connections that have closed (open ones are added when reported).
    pub traffic: Traffic,
    /// TLS handshakes that failed, by class.
    pub tls_failures: [u64; TLS_FAILURE_CLASSES],
    /// WebSocket connections closed for a protocol violation, by [`WS_ERROR_CODES`] index.
    pub ws_errors: [u64; WS_ERROR_CODES.len()],
}

impl ServerStats {
    /// A connection of `role` was opened.
    pub fn opened(&mut self, role: RoleKind) {
        self.connections_total[role as usize] += 1;
    }

    /// The figures of listener `index` (made on first use).
    pub fn listener(&mut self, index: usize) -> &mut ListenerStats {
        if self.listeners.len() <= index {
            self.listeners.resize_with(index + 1, Default::default);
        }
        &mut self.listeners[index]
    }

    /// An accepted client connection turned out to be a peer server.
    pub fn became_peer(&mut self) {
        let clients = &mut self.connections_total[RoleKind::Client as usize];
        *clients = clients.saturating_sub(1);
        self.connections_total[RoleKind::Peer as usize] += 1;
    }

    /// The server sent an error with this code; `answer` when it answers a client message.
    pub fn error(&mut self, code: ErrorCode, answer: bool) {
        self.errors.count(code);
        if answer {
            self.messages.error += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let mut h = Histogram::default();
        for d in [0, 100, 101, 250, 30_000_000, 30_000_001] {
            h.observe(us(d));
        }
        let c = h.cumulative();
        assert_eq!(c.len(), LATENCY_BUCKETS_US.len() + 1);
        assert_eq!(c[0], (Some(100), 2), "0 and 100 are <= 100");
        assert_eq!(c[1], (Some(250), 4));
        assert_eq!(c[16], (Some(30_000_000), 5));
        assert_eq!(c[17], (None, 6), "+Inf holds everything");
        assert_eq!(h.count(), 6);
        assert_eq!(h.sum_us(), 100 + 101 + 250 + 30_000_000 + 30_000_001);
    }

    #[test]
    fn quantiles_name_the_bucket_bound() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..90 {
            h.observe(us(200));
        }
        for _ in 0..10 {
            h.observe(us(40_000));
        }
        assert_eq!(h.quantile(0.5), Some(Some(250)));
        assert_eq!(h.quantile(0.9), Some(Some(250)));
        assert_eq!(h.quantile(0.91), Some(Some(50_000)));
        assert_eq!(h.quantile(1.0), Some(Some(50_000)));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.quantile(1.0), Some(None));
    }

    #[test]
    fn huge_durations_saturate() {
        let mut h = Histogram::default();
        h.observe(Duration::MAX);
        h.observe(Duration::MAX);
        assert_eq!(h.sum_us(), u64::MAX);
        assert_eq!(h.cumulative().last(), Some(&(None, 2)));
    }

    #[test]
    fn traffic_counts_the_length_prefix_out() {
        let mut t = Traffic::default();
        t.read(10);
        t.frame_in();
        t.frame_out(6);
        assert_eq!(
            t,
            Traffic {
                frames_in: 1,
                bytes_in: 10,
                frames_out: 1,
                bytes_out: 10
            }
        );
    }

    #[test]
    fn errors_are_counted_per_code_and_summed() {
        let mut a = ErrorCounts::default();
        let mut b = ErrorCounts::default();
        a.count(ErrorCode::Kicked);
        b.count(ErrorCode::Kicked);
        b.count(ErrorCode::AuthFailed);
        let sum = a.plus(&b);
        assert_eq!(sum.get(ErrorCode::Kicked), 2);
        assert_eq!(sum.get(ErrorCode::AuthFailed), 1);
        assert_eq!(sum.iter().count(), ErrorCode::ALL.len());
        assert_eq!(sum.iter().map(|(_, n)| n).sum::<u64>(), 3);
    }

    #[test]
    fn a_client_that_becomes_a_peer_moves_role() {
        let mut s = ServerStats::default();
        s.opened(RoleKind::Client);
        s.opened(RoleKind::Client);
        s.became_peer();
        assert_eq!(s.connections_total, [1, 0, 1]);
        s.error(ErrorCode::UnknownScope, true);
        s.error(ErrorCode::IdentifyTimeout, false);
        assert_eq!(s.messages, Messages { ok: 0, error: 1 });
        assert_eq!(s.errors.get(ErrorCode::IdentifyTimeout), 1);
    }

    #[test]
    fn handler_outcomes_have_their_own_slots() {
        let mut h = HandlerStats::default();
        for o in RequestOutcome::ALL {
            h.ended(o);
        }
        h.ended(RequestOutcome::Busy);
        assert_eq!(h.requests, [1, 1, 1, 1, 2]);
        assert_eq!(h.outcome(RequestOutcome::Busy), 2);
    }
}
