//! `GET /metrics`: the figures in the Prometheus text exposition format (version 0.0.4), every
//! name prefixed `besterd_` but the standard `process_*` ones (`procstat.rs`). Points in time
//! are `*_timestamp_seconds` gauges (seconds since the epoch), not "seconds since" gauges. Counters end in `_total`; latencies are histograms in seconds with
//! `_bucket{le=...}`, `_sum` and `_count`. Built only when scraped.

use std::fmt::Write;
use std::time::Instant;

use super::Server;
use crate::net::tls::HandshakeFailure;
use crate::stats::{Histogram, ListenerStats, RequestOutcome, RoleKind, Traffic, WS_ERROR_CODES};

/// Text being built: one family at a time.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP besterd_{name} {help}");
        let _ = writeln!(self.0, "# TYPE besterd_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.0, "besterd_{name}");
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A standard `process_*` family (no `besterd_` prefix) with its one sample, if known.
    fn process(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        value: Option<impl std::fmt::Display>,
    ) {
        if let Some(value) = value {
            let _ = writeln!(self.0, "# HELP {name} {help}");
            let _ = writeln!(self.0, "# TYPE {name} {kind}");
            let _ = writeln!(self.0, "{name} {value}");
        }
    }

    /// One family with a single unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// One family with a sample per connection role, from a count indexed by role.
    fn per_role(&mut self, name: &str, kind: &str, help: &str, counts: &[impl std::fmt::Display]) {
        self.family(name, kind, help);
        for role in RoleKind::ALL {
            self.sample(name, &[("role", role.as_str())], &counts[role as usize]);
        }
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        for (bound, count) in h.cumulative() {
            let le = bound.map_or("+Inf".to_string(), seconds);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &with_le, count);
        }
        self.sample(&format!("{name}_sum"), labels, seconds(h.sum_us()));
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

/// Microseconds as seconds, exactly (no float rounding noise).
fn seconds(us: u64) -> String {
    let frac = us % 1_000_000;
    if frac == 0 {
        format!("{}", us / 1_000_000)
    } else {
        let digits = format!("{frac:06}");
        format!("{}.{}", us / 1_000_000, digits.trim_end_matches('0'))
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Server {
    /// The whole exposition.
    pub(super) fn prometheus_text(&self, now: Instant) -> String {
        let t = self.totals();
        let s = &self.stats;
        let mut out = Text(String::with_capacity(16 * 1024));
        out.family("info", "gauge", "The server's name and version (always 1).");
        out.sample(
            "info",
            &[
                ("server", &self.config.name),
                ("version", env!("CARGO_PKG_VERSION")),
            ],
            1,
        );
        let p = super::procstat::read();
        out.process(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time,
        );
        out.process(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            p.open_fds,
        );
        out.process(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            p.max_fds,
        );
        out.process(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes,
        );
        out.process(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        );
        out.single(
            "healthy",
            "gauge",
            "1 while /healthz answers 200 (serving, every handler type connected), else 0.",
            u8::from(self.health().is_ok()),
        );
        out.per_role(
            "connections_open",
            "gauge",
            "Open connections by role.",
            &t.open,
        );
        out.per_role(
            "connections_total",
            "counter",
            "Connections opened since start, by role.",
            &s.connections_total,
        );
        out.family(
            "logins_total",
            "counter",
            "Logins (identify and bester.authenticate) by outcome.",
        );
        for (outcome, n) in [
            ("ok", s.logins.ok),
            ("failed", s.logins.failed),
            ("rate_limited", s.logins.rate_limited),
        ] {
            out.sample("logins_total", &[("outcome", outcome)], n);
        }
        out.single(
            "password_checks_total",
            "counter",
            "Password checks (argon2 runs) by the verifier threads; token logins run none.",
            self.auth.password_checks(),
        );
        for (name, help, value) in [
            (
                "frames_received_total",
                "Complete frames received.",
                t.traffic.frames_in,
            ),
            (
                "frames_sent_total",
                "Frames queued for sending.",
                t.traffic.frames_out,
            ),
            (
                "received_bytes_total",
                "Bytes read from connections.",
                t.traffic.bytes_in,
            ),
            (
                "sent_bytes_total",
                "Bytes queued for sending, length prefixes included.",
                t.traffic.bytes_out,
            ),
        ] {
            out.single(name, "counter", help, value);
        }
        out.family(
            "messages_total",
            "counter",
            "Frames from logged-in clients, by the status of their answer.",
        );
        out.sample("messages_total", &[("outcome", "ok")], t.messages.ok);
        out.sample("messages_total", &[("outcome", "error")], t.messages.error);
        out.family(
            "errors_total",
            "counter",
            "Errors the server sent (frames and per-server reports), by code.",
        );
        for (code, n) in t.errors.iter() {
            out.sample("errors_total", &[("code", code.as_str())], n);
        }
        out.single(
            "slow_consumers_total",
            "counter",
            "Clients and peers cut off because their output queue overflowed.",
            s.slow_consumers,
        );
        let (handed_over, failed) = self.upgrades.outcomes();
        out.family(
            "upgrades_total",
            "counter",
            "Hot upgrades this process started, by outcome (`ctl upgrade`, SIGUSR2).",
        );
        out.sample("upgrades_total", &[("outcome", "handed_over")], handed_over);
        out.sample("upgrades_total", &[("outcome", "failed")], failed);
        out.single(
            "upgrade_in_progress",
            "gauge",
            "1 while a new process started by an upgrade is not ready yet.",
            u8::from(self.upgrades.describe().0 == "starting"),
        );
        out.single(
            "requests_in_flight",
            "gauge",
            "Handler requests and server fan-outs waiting for an answer.",
            self.router.pending_total(),
        );
        self.listener_metrics(&mut out);
        self.handler_metrics(&mut out);
        self.peer_metrics(&mut out, now);
        self.delivery_metrics(&mut out);
        let st = self.router.stream_stats();
        for (name, kind, help, value) in [
            (
                "stream_dials_total",
                "counter",
                "bester.dial requests.",
                st.dials,
            ),
            (
                "stream_dials_accepted_total",
                "counter",
                "Dials accepted.",
                st.accepted,
            ),
            (
                "stream_dials_failed_total",
                "counter",
                "Dials refused, offline, forbidden, timed out or abandoned.",
                st.failed,
            ),
            (
                "streams_open",
                "gauge",
                "Client-to-client streams open now.",
                st.open,
            ),
            (
                "stream_frames_total",
                "counter",
                "Stream data frames relayed.",
                st.frames,
            ),
            (
                "stream_bytes_total",
                "counter",
                "Bytes of data relayed on streams.",
                st.bytes,
            ),
            (
                "stream_credit_exceeded_total",
                "counter",
                "Streams ended because a writer sent past its credit.",
                st.credit_exceeded,
            ),
        ] {
            out.single(name, kind, help, value);
        }
        out.single(
            "monitor_requests_total",
            "counter",
            "Requests served on the monitoring port.",
            s.monitor_requests,
        );
        out.single(
            "monitor_refused_total",
            "counter",
            "Monitoring connections refused: bad, too large or too slow requests, or over the cap.",
            s.monitor_refused,
        );
        out.0
    }

    /// The delivery store's figures, when the server keeps one.
    fn delivery_metrics(&self, out: &mut Text) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(d) = self.delivery_stats() else {
            return;
        };
        for (name, kind, help, value) in [
            (
                "delivery_stored_total",
                "counter",
                "Pushes written to a user's queue.",
                &d.stored,
            ),
            (
                "delivery_commits_total",
                "counter",
                "Delivery store transactions committed with writes (group commits: stored_total over this is pushes per commit).",
                &d.commits,
            ),
            (
                "delivery_delivered_total",
                "counter",
                "Stored pushes sent to a client on login (each sending counts).",
                &d.delivered,
            ),
            (
                "delivery_acked_total",
                "counter",
                "Stored pushes acknowledged and deleted (bester.ack).",
                &d.acked,
            ),
            (
                "delivery_expired_total",
                "counter",
                "Stored pushes deleted unacknowledged after [delivery] max_age_s.",
                &d.expired,
            ),
            (
                "delivery_refused_total",
                "counter",
                "Pushes not stored: a limit (queue_full) or the disk (store_failed).",
                &d.refused,
            ),
            (
                "delivery_dropped_total",
                "counter",
                "Stored pushes deleted to make room ([delivery] full = \"drop_oldest\").",
                &d.dropped,
            ),
            (
                "delivery_messages",
                "gauge",
                "Pushes in the delivery store now.",
                &d.messages,
            ),
            (
                "delivery_bytes",
                "gauge",
                "Their bytes, as the limits count them.",
                &d.bytes,
            ),
            (
                "delivery_disk_bytes",
                "gauge",
                "The delivery store's database and log on disk, in bytes (taken at most every 250 ms).",
                &d.disk_bytes,
            ),
            (
                "delivery_queued_total",
                "counter",
                "Deliveries written to a peer server's outbound queue (store-and-forward).",
                &d.queued,
            ),
            (
                "delivery_forwarded_total",
                "counter",
                "Outbound deliveries deleted after the peer's end-to-end ack or final refusal.",
                &d.forwarded,
            ),
            (
                "delivery_forward_refused_total",
                "counter",
                "Outbound deliveries a peer refused for good (deleted, not sent again).",
                &d.forward_refused,
            ),
            (
                "delivery_outbound_messages",
                "gauge",
                "Deliveries in the peer servers' outbound queues now.",
                &d.out_messages,
            ),
            (
                "delivery_outbound_bytes",
                "gauge",
                "Their bytes, as the limits count them.",
                &d.out_bytes,
            ),
        ] {
            out.single(name, kind, help, value.load(Relaxed));
        }
    }

    /// Per client listener (`listener` = its name, `transport` = tcp, tls, ws or wss): open
    /// connections, connections and traffic since start, TLS handshake failures by reason and
    /// WebSocket protocol errors by close code.
    fn listener_metrics(&self, out: &mut Text) {
        let count = self.listeners.len();
        let mut open = vec![0u64; count];
        let mut traffic: Vec<Traffic> = (0..count)
            .map(|i| {
                self.stats
                    .listeners
                    .get(i)
                    .map(|l| l.traffic)
                    .unwrap_or_default()
            })
            .collect();
        for (_, conn) in &self.conns {
            if let Some(i) = conn.listener.filter(|i| *i < count)
                && matches!(conn.role, super::conn::Role::Client(_))
            {
                open[i] += 1;
                traffic[i].add(&conn.traffic);
            }
        }
        let names: Vec<(String, &str)> = (0..count).map(|i| self.listeners.name_of(i)).collect();
        let blank = ListenerStats::default();
        let stats = |i: usize| self.stats.listeners.get(i).unwrap_or(&blank);
        let families: [(&str, &str, &str); 6] = [
            (
                "listener_connections_open",
                "gauge",
                "Open client connections by listener.",
            ),
            (
                "listener_connections_total",
                "counter",
                "Client connections accepted since start, by listener.",
            ),
            (
                "listener_received_bytes_total",
                "counter",
                "Bytes read from client connections, by listener.",
            ),
            (
                "listener_sent_bytes_total",
                "counter",
                "Bytes queued for client connections, length prefixes included, by listener.",
            ),
            (
                "listener_frames_received_total",
                "counter",
                "Complete frames received from client connections, by listener.",
            ),
            (
                "listener_frames_sent_total",
                "counter",
                "Frames queued for client connections, by listener.",
            ),
        ];
        for (f, (name, kind, help)) in families.iter().enumerate() {
            out.family(name, kind, help);
            for (i, (listener, transport)) in names.iter().enumerate() {
                let value = match f {
                    0 => open[i],
                    1 => stats(i).connections_total,
                    2 => traffic[i].bytes_in,
                    3 => traffic[i].bytes_out,
                    4 => traffic[i].frames_in,
                    _ => traffic[i].frames_out,
                };
                let labels = [("listener", listener.as_str()), ("transport", *transport)];
                out.sample(name, &labels, value);
            }
        }
        out.family(
            "tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed, by listener and reason.",
        );
        for (i, (listener, transport)) in names.iter().enumerate() {
            if !matches!(*transport, "tls" | "wss") {
                continue;
            }
            for reason in HandshakeFailure::ALL {
                out.sample(
                    "tls_handshake_failures_total",
                    &[("listener", listener.as_str()), ("reason", reason.as_str())],
                    stats(i).tls_failures[reason as usize],
                );
            }
        }
        out.family(
            "websocket_protocol_errors_total",
            "counter",
            "WebSocket connections closed for a protocol violation, by listener and close code.",
        );
        for (i, (listener, transport)) in names.iter().enumerate() {
            if !matches!(*transport, "ws" | "wss") {
                continue;
            }
            for (c, code) in WS_ERROR_CODES.iter().enumerate() {
                out.sample(
                    "websocket_protocol_errors_total",
                    &[("listener", listener.as_str()), ("code", &code.to_string())],
                    stats(i).ws_errors[c],
                );
            }
        }
    }

    fn handler_metrics(&self, out: &mut Text) {
        let rows = self.handler_rows();
        let families: [(&str, &str, &str); 4] = [
            (
                "handler_processes",
                "gauge",
                "Handler processes besterd starts for the type (0 for an external socket).",
            ),
            (
                "handler_connections",
                "gauge",
                "Handler processes connected for the type.",
            ),
            (
                "handler_restarts_total",
                "counter",
                "Restarts of the type's processes.",
            ),
            (
                "handler_in_flight",
                "gauge",
                "Requests sent to the type and not answered yet.",
            ),
        ];
        for (i, (name, kind, help)) in families.iter().enumerate() {
            out.family(name, kind, help);
            for h in &rows {
                let value = match i {
                    0 => h.configured as u64,
                    1 => h.connected as u64,
                    2 => h.restarts,
                    _ => h.stats.in_flight,
                };
                out.sample(name, &[("type", h.kind)], value);
            }
        }
        out.family(
            "handler_requests_total",
            "counter",
            "Requests dispatched to the type, by outcome.",
        );
        for h in &rows {
            for o in RequestOutcome::ALL {
                out.sample(
                    "handler_requests_total",
                    &[("type", h.kind), ("outcome", o.as_str())],
                    h.stats.outcome(o),
                );
            }
        }
        out.family(
            "handler_latency_seconds",
            "histogram",
            "Time from dispatch to the handler's answer.",
        );
        for h in &rows {
            out.histogram(
                "handler_latency_seconds",
                &[("type", h.kind)],
                &h.stats.latency,
            );
        }
    }

    fn peer_metrics(&self, out: &mut Text, now: Instant) {
        let rows = self.peer_rows();
        out.family("peer_up", "gauge", "1 while the link to the peer is up.");
        for p in &rows {
            out.sample("peer_up", &[("peer", p.name)], u8::from(p.state == "up"));
        }
        out.family(
            "peer_state_change_timestamp_seconds",
            "gauge",
            "When the link to the peer last went up or down, in seconds since the epoch.",
        );
        let wall = super::procstat::unix_now();
        for p in &rows {
            let ago = now.saturating_duration_since(p.since).as_secs_f64();
            let at = format!("{:.3}", wall - ago);
            out.sample(
                "peer_state_change_timestamp_seconds",
                &[("peer", p.name)],
                at,
            );
        }
        for (name, help) in [
            ("peer_messages_sent_total", "Messages sent to the peer."),
            (
                "peer_messages_acked_total",
                "Messages the peer acknowledged with status ok.",
            ),
            (
                "peer_messages_failed_total",
                "Messages that failed: error ack, link lost, or no ack in time.",
            ),
        ] {
            out.family(name, "counter", help);
            for p in &rows {
                let value = match name {
                    "peer_messages_sent_total" => p.stats.sent,
                    "peer_messages_acked_total" => p.stats.acked,
                    _ => p.stats.failed,
                };
                out.sample(name, &[("peer", p.name)], value);
            }
        }
        out.family(
            "peer_ack_latency_seconds",
            "histogram",
            "Time from sending a message to the peer's ack.",
        );
        for p in &rows {
            out.histogram(
                "peer_ack_latency_seconds",
                &[("peer", p.name)],
                &p.stats.ack_latency,
            );
        }
        self.directory_metrics(out);
    }

    /// The federation directory per peer server: entries held and directory frames both ways.
    fn directory_metrics(&self, out: &mut Text) {
        let servers = self.router.directory_servers();
        out.family(
            "directory_entries",
            "gauge",
            "Users the federation directory has online on the peer server.",
        );
        for s in &servers {
            out.sample("directory_entries", &[("peer", &s.server)], s.entries);
        }
        for (name, help) in [
            (
                "directory_sent_bytes_total",
                "Bytes of directory frames (snapshots, deltas, resyncs, refusals) sent to the peer.",
            ),
            (
                "directory_received_bytes_total",
                "Bytes of directory frames received from the peer.",
            ),
            (
                "directory_sent_frames_total",
                "Directory frames sent to the peer.",
            ),
            (
                "directory_received_frames_total",
                "Directory frames received from the peer.",
            ),
        ] {
            out.family(name, "counter", help);
            for s in &servers {
                let t = &s.traffic;
                let value = match name {
                    "directory_sent_bytes_total" => t.sent_bytes,
                    "directory_received_bytes_total" => t.received_bytes,
                    "directory_sent_frames_total" => t.sent_frames,
                    _ => t.received_frames,
                };
                out.sample(name, &[("peer", &s.server)], value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(100), "0.0001");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(30_000_000), "30");
        assert_eq!(seconds(1_000_001), "1.000001");
    }

    #[test]
    fn histograms_have_buckets_sum_and_count() {
        let mut h = Histogram::default();
        h.observe(std::time::Duration::from_micros(300));
        let mut t = Text(String::new());
        t.histogram("x_seconds", &[("type", "echo")], &h);
        let lines: Vec<&str> = t.0.lines().collect();
        assert_eq!(
            lines[0],
            r#"besterd_x_seconds_bucket{type="echo",le="0.0001"} 0"#
        );
        assert_eq!(
            lines[2],
            r#"besterd_x_seconds_bucket{type="echo",le="0.0005"} 1"#
        );
        assert_eq!(
            lines[17],
            r#"besterd_x_seconds_bucket{type="echo",le="+Inf"} 1"#
        );
        assert_eq!(lines[18], r#"besterd_x_seconds_sum{type="echo"} 0.0003"#);
        assert_eq!(lines[19], r#"besterd_x_seconds_count{type="echo"} 1"#);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
