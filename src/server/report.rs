//! Reports built from the server's state and figures, for the monitoring port and the control
//! socket: health, status, connections, handlers, peers (JSON). Built only when asked for, never on
//! the message path; `prometheus.rs` renders the same figures as Prometheus text.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::Server;
use super::conn::{PeerState, Role};
use super::lifecycle::Phase;
use super::monitor::ConnectionQuery;
use crate::config::HandlerSource;
use crate::stats::{ErrorCounts, Histogram, Messages, RequestOutcome, RoleKind, Traffic};

/// Figures summed over the server's and the router's parts.
pub(super) struct Totals {
    /// Open connections by role index.
    pub open: [u64; 3],
    /// Traffic of closed and open connections.
    pub traffic: Traffic,
    /// Answers to client messages.
    pub messages: Messages,
    /// Errors by code.
    pub errors: ErrorCounts,
}

/// One handler type's figures, gathered.
pub(super) struct HandlerRow<'a> {
    /// The payload type.
    pub kind: &'a str,
    /// Processes besterd starts for it (0 for an external `socket` handler).
    pub configured: usize,
    /// Connections now.
    pub connected: usize,
    /// Restarts of its processes.
    pub restarts: u64,
    /// The router's figures for it.
    pub stats: &'a crate::stats::HandlerStats,
}

/// One peer's figures, gathered.
pub(super) struct PeerRow<'a> {
    /// The peer's name.
    pub name: &'a str,
    /// `up`, `connecting` or `down`.
    pub state: &'static str,
    /// When it entered its current up/down state.
    pub since: Instant,
    /// The router's figures for it.
    pub stats: &'a crate::stats::PeerStats,
}

impl Server {
    /// Ok while serving; otherwise why not: starting, draining, the delivery store's thread
    /// gone, or handler types with no process connected (types besterd dials per request,
    /// `connect`, have none between requests and are left out).
    pub(super) fn health(&self) -> Result<(), String> {
        match self.life.phase {
            Phase::Draining(_) | Phase::Closing(_) => {
                return Err("draining: the server is shutting down".into());
            }
            Phase::Starting(_) => return Err("starting: waiting for handlers to connect".into()),
            Phase::Ready => {}
        }
        if self.delivery_stopped() {
            return Err("the delivery store has stopped: stored pushes are refused".into());
        }
        let stalled = self.accept.problems(Instant::now());
        if !stalled.is_empty() {
            return Err(stalled.join("; "));
        }
        let counts = self.router.handler_counts();
        let missing: Vec<&str> = counts
            .iter()
            .filter(|(_, n)| **n == 0)
            .filter(|(kind, _)| {
                self.config
                    .handlers
                    .get(*kind)
                    .is_none_or(|h| h.source != HandlerSource::External)
            })
            .map(|(kind, _)| kind.as_str())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "no process connected for handler type(s): {}",
                missing.join(", ")
            ))
        }
    }

    pub(super) fn totals(&self) -> Totals {
        let mut open = [0u64; 3];
        let mut traffic = self.stats.traffic;
        for (_, conn) in &self.conns {
            open[conn.role.kind() as usize] += 1;
            traffic.add(&conn.traffic);
        }
        let r = self.router.stats();
        Totals {
            open,
            traffic,
            messages: Messages {
                ok: self.stats.messages.ok + r.messages.ok,
                error: self.stats.messages.error + r.messages.error,
            },
            errors: self.stats.errors.plus(&r.errors),
        }
    }

    pub(super) fn handler_rows(&self) -> Vec<HandlerRow<'_>> {
        let counts = self.router.handler_counts();
        let stats = &self.router.stats().handlers;
        self.config
            .handlers
            .iter()
            .zip(stats)
            .map(|((kind, handler), stats)| {
                let (configured, restarts) = match &handler.source {
                    HandlerSource::Command { .. } => self.supervisor.figures(kind),
                    HandlerSource::Socket(_) | HandlerSource::External => (0, 0),
                };
                HandlerRow {
                    kind,
                    configured,
                    connected: counts.get(kind).copied().unwrap_or(0),
                    restarts,
                    stats,
                }
            })
            .collect()
    }

    pub(super) fn peer_rows(&self) -> Vec<PeerRow<'_>> {
        let stats = &self.router.stats().peers;
        self.router
            .peer_names()
            .map(|(name, stat)| {
                let connecting = self.conns.iter().any(|(_, c)| {
                    matches!(&c.role, Role::Peer(p) if p.name == name && p.state != PeerState::Up)
                });
                let state = if self.router.peer_link(name).is_some() {
                    "up"
                } else if connecting {
                    "connecting"
                } else {
                    "down"
                };
                PeerRow {
                    name,
                    state,
                    since: self.peers.get(name).map_or(self.started, |s| s.since),
                    stats: &stats[stat],
                }
            })
            .collect()
    }

    /// `GET /status`: who, since when, limits, and every figure.
    pub(super) fn status_report(&self, now: Instant) -> Value {
        let t = self.totals();
        let c = &self.config;
        let mut connections = Map::new();
        for role in RoleKind::ALL {
            connections.insert(
                role.as_str().into(),
                json!({
                    "now": t.open[role as usize],
                    "total": self.stats.connections_total[role as usize],
                }),
            );
        }
        let errors: Map<String, Value> = t
            .errors
            .iter()
            .map(|(code, n)| (code.as_str().to_string(), json!(n)))
            .collect();
        json!({
            "server": c.name,
            "version": env!("CARGO_PKG_VERSION"),
            "listen": self.local_addr().to_string(),
            "started": unix_time(now, self.started),
            "uptime_s": secs(now.saturating_duration_since(self.started)),
            "pid": std::process::id(),
            "upgrade": {
                "state": self.upgrades.describe().0,
                "new_pid": self.upgrades.describe().1,
            },
            "health": match self.health() { Ok(()) => "ok".to_string(), Err(e) => e },
            "limits": {
                "max_connections": c.max_connections,
                "max_connections_per_ip": c.max_connections_per_ip,
                "max_connections_per_user": c.max_connections_per_user,
                "max_frame_bytes": c.max_frame,
                "max_identify_frame_bytes": c.max_identify_frame,
                "max_outbound_bytes": c.max_outbound,
                "max_pending_per_connection": c.max_pending_per_connection,
                "max_chain_depth": c.max_chain_depth,
                "identify_timeout_ms": c.identify_timeout.as_millis() as u64,
                "idle_timeout_ms": c.idle_timeout.as_millis() as u64,
                "request_timeout_ms": c.request_timeout.as_millis() as u64,
                "login_failures_per_ip": c.login_failures_per_ip,
                "login_failures_per_user": c.login_failures_per_user,
                "auth_threads": c.auth_threads,
                "auth_queue": c.auth_queue,
            },
            "connections": connections,
            "logins": {
                "ok": self.stats.logins.ok,
                "failed": self.stats.logins.failed,
                "rate_limited": self.stats.logins.rate_limited,
                "password_checks": self.auth.password_checks(),
            },
            "traffic": {
                "frames_in": t.traffic.frames_in,
                "bytes_in": t.traffic.bytes_in,
                "frames_out": t.traffic.frames_out,
                "bytes_out": t.traffic.bytes_out,
            },
            "messages": { "ok": t.messages.ok, "error": t.messages.error },
            "errors": errors,
            "slow_consumers": self.stats.slow_consumers,
            "requests_in_flight": self.router.pending_total(),
            "monitor": {
                "connections": self.monitor.as_ref().map_or(0, |m| m.open()),
                "requests": self.stats.monitor_requests,
                "refused": self.stats.monitor_refused,
            },
            "handlers": self.handlers_report()["handlers"],
            "peers": self.peers_report(now)["peers"],
        })
    }

    /// `GET /connections`: client connections, oldest first, paged, optionally one user's.
    pub(super) fn connections_report(&self, now: Instant, q: &ConnectionQuery) -> Value {
        let mut clients: Vec<&super::conn::Conn> = self
            .conns
            .iter()
            .map(|(_, c)| c)
            .filter(|c| matches!(c.role, Role::Client(_)))
            .filter(|c| q.user.is_none() || c.user() == q.user.as_deref())
            .collect();
        clients.sort_by_key(|c| c.id.generation);
        let total = clients.len();
        let page: Vec<Value> = clients
            .into_iter()
            .skip(q.offset)
            .take(q.limit)
            .map(|c| {
                json!({
                    "id": c.id.to_string(),
                    "user": c.user(),
                    "address": c.peer,
                    "connected_since": unix_time(now, c.since),
                    "last_activity": unix_time(now, c.last_seen),
                    "idle_s": secs(now.saturating_duration_since(c.last_seen)),
                    "in_flight": self.router.pending_for(c.id),
                    "frames_in": c.traffic.frames_in,
                    "bytes_in": c.traffic.bytes_in,
                    "frames_out": c.traffic.frames_out,
                    "bytes_out": c.traffic.bytes_out,
                    "queued_output_bytes": c.io.queued_output(),
                })
            })
            .collect();
        json!({
            "total": total,
            "offset": q.offset,
            "limit": q.limit,
            "user": q.user,
            "connections": page,
        })
    }

    /// `GET /handlers`: every configured handler type.
    pub(super) fn handlers_report(&self) -> Value {
        let rows: Vec<Value> = self
            .handler_rows()
            .iter()
            .map(|h| {
                let mut requests = Map::new();
                for o in RequestOutcome::ALL {
                    requests.insert(o.as_str().into(), json!(h.stats.outcome(o)));
                }
                json!({
                    "type": h.kind,
                    "processes_configured": h.configured,
                    "processes_connected": h.connected,
                    "restarts": h.restarts,
                    "in_flight": h.stats.in_flight,
                    "requests": requests,
                    "latency_us": latency(&h.stats.latency),
                })
            })
            .collect();
        json!({ "handlers": rows })
    }

    /// `GET /peers`: every configured peer.
    pub(super) fn peers_report(&self, now: Instant) -> Value {
        let rows: Vec<Value> = self
            .peer_rows()
            .iter()
            .map(|p| {
                let address = self
                    .peers
                    .get(p.name)
                    .and_then(|s| s.config.address)
                    .map(|a| a.to_string());
                json!({
                    "name": p.name,
                    "address": address,
                    "state": p.state,
                    "since": unix_time(now, p.since),
                    "for_s": secs(now.saturating_duration_since(p.since)),
                    "sent": p.stats.sent,
                    "acked": p.stats.acked,
                    "failed": p.stats.failed,
                    "ack_latency_us": latency(&p.stats.ack_latency),
                })
            })
            .collect();
        json!({ "peers": rows })
    }
}

/// A histogram as JSON: count, sum and the bucket bounds holding p50/p90/p99 (`null` without
/// observations, `"+Inf"` past the last bucket), plus the cumulative buckets.
fn latency(h: &Histogram) -> Value {
    let q = |q: f64| match h.quantile(q) {
        None => Value::Null,
        Some(Some(bound)) => json!(bound),
        Some(None) => json!("+Inf"),
    };
    let buckets: Map<String, Value> = h
        .cumulative()
        .into_iter()
        .map(|(bound, n)| (bound.map_or("+Inf".into(), |b| b.to_string()), json!(n)))
        .collect();
    json!({
        "count": h.count(),
        "sum": h.sum_us(),
        "p50": q(0.5),
        "p90": q(0.9),
        "p99": q(0.99),
        "buckets": buckets,
    })
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// The wall-clock time (Unix seconds, ms precision) of `at`, given that `now` is now.
pub(super) fn unix_time(now: Instant, at: Instant) -> f64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(now.saturating_duration_since(at));
    secs(wall)
}
