//! `GET /metrics`: the figures in the Prometheus text exposition format (version 0.0.4), every
//! name prefixed `besterd_`. Counters end in `_total`; latencies are histograms in seconds with
//! `_bucket{le=...}`, `_sum` and `_count`. Built only when scraped.

use std::fmt::Write;
use std::time::Instant;

use super::Server;
use crate::stats::{Histogram, RequestOutcome, RoleKind};

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
        out.single(
            "uptime_seconds",
            "gauge",
            "Seconds since the server started.",
            now.saturating_duration_since(self.started).as_secs(),
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
        out.single(
            "requests_in_flight",
            "gauge",
            "Handler requests and server fan-outs waiting for an answer.",
            self.router.pending_total(),
        );
        self.handler_metrics(&mut out);
        self.peer_metrics(&mut out, now);
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
            "peer_state_seconds",
            "gauge",
            "Seconds since the link to the peer last went up or down.",
        );
        for p in &rows {
            let secs = now.saturating_duration_since(p.since).as_secs();
            out.sample("peer_state_seconds", &[("peer", p.name)], secs);
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
