//! The monitoring listener: plain HTTP/1.1 on the broker's own mio loop, off unless
//! `[monitor] listen` is set. **Unauthenticated** (like NATS's monitoring port): it shows users,
//! addresses and figures to anyone who can connect, so keep it on loopback (`check-config` warns
//! otherwise).
//!
//! One request per connection (`Connection: close`), parsed with `httparse`. Hostile input is
//! bounded like everywhere else: a request (line and headers) over [`MAX_REQUEST`] bytes gets 431,
//! bytes that are not HTTP get 400, a request not complete within `[monitor] timeout_ms` gets 408
//! (slowloris) and one whose first byte is not there within [`FIRST_BYTE`] too. Past
//! `[monitor] max_connections`, or [`MAX_PER_ADDRESS`] from one address, a connection takes one of
//! [`HEALTH_SLOTS`] where only `GET /healthz` is answered (others: 503), so idle connections
//! cannot fail a liveness probe; while the process is out of descriptors, one connection is served
//! on the spare descriptor of `net/accept.rs`. Every answer is written without blocking; what the socket does not take now is written
//! when it becomes writable. The bodies are built by `report.rs` and `prometheus.rs`.
//!
//! Endpoints (GET only): `/healthz`, `/status`, `/connections?user=&offset=&limit=`, `/handlers`,
//! `/peers`, `/directory` (the federation directory: `server/directory.rs`), `/metrics`.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::Server;
use super::token::{MONITOR_CONN_BASE, MONITOR_LISTENER};
use crate::config::Config;
use crate::net::accept::Accepted;
use crate::net::hosts::Hosts;
use crate::net::local::{read_bounded, write_pending};

/// Largest request (request line plus headers) read from a monitoring connection.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Headers parsed per request; more is answered 431.
const MAX_HEADERS: usize = 32;
/// Bytes read and dropped from a connection before closing it.
const DRAIN_ON_CLOSE: usize = 64 * 1024;
/// Accepts per readiness event.
const MAX_ACCEPTS: usize = 64;
/// Monitoring connections from one address in the general slots; more get a health slot.
pub const MAX_PER_ADDRESS: usize = 8;
/// Slots past the caps where only `GET /healthz` is answered, so that idle connections cannot
/// make a liveness probe fail (the oldest unanswered one makes room for a new one).
pub const HEALTH_SLOTS: usize = 4;
/// A monitoring connection must send its first byte within this long (or `timeout_ms`, if
/// shorter).
pub const FIRST_BYTE: Duration = Duration::from_secs(1);
const TOO_MANY: &str = "too many monitoring connections";

/// The monitoring listener and its connections.
pub(super) struct Monitor {
    listener: TcpListener,
    conns: Slab<HttpConn>,
    max_connections: usize,
    timeout: Duration,
    /// The `Host` names answered (DNS rebinding: a rebound name is refused).
    hosts: Hosts,
    /// The accept cap was reached at this time: accept again without waiting for an event.
    accept_again: Option<Instant>,
}

struct HttpConn {
    stream: TcpStream,
    ip: IpAddr,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    accepted: Instant,
    /// [`FIRST_BYTE`] after the accept until a byte arrives, then `timeout` after the accept.
    deadline: Instant,
    /// In a health slot: only `GET /healthz` is answered.
    health_only: bool,
    /// Accepted on the spare descriptor while out of descriptors (given back when closed).
    on_spare: bool,
}

/// What a request asks for, once parsed.
enum Parsed {
    /// Not complete yet.
    Partial,
    /// A complete GET (path with query).
    Get(String),
    /// Answer with this status and text.
    Refuse(u16, &'static str),
}

impl Monitor {
    /// Bind the listener if `[monitor] listen` is set.
    /// `inherited`: the old process's listener (a hot upgrade), used instead of binding.
    pub(super) fn bind(
        config: &Config,
        registry: &Registry,
        inherited: Option<TcpListener>,
    ) -> io::Result<Option<Monitor>> {
        let Some(m) = &config.monitor else {
            return Ok(None);
        };
        let mut listener = match inherited {
            Some(listener) => listener,
            None => crate::net::accept::bind_tcp(m.listen).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen on {} (monitor.listen): {e}", m.listen),
                )
            })?,
        };
        registry.register(&mut listener, MONITOR_LISTENER, Interest::READABLE)?;
        let addr = listener.local_addr()?;
        for (key, warning) in config.warnings() {
            if key.starts_with("monitor.") {
                warn!("{key}: {warning}");
            }
        }
        info!("monitor: listening on http://{addr} (unauthenticated; keep it on loopback)");
        Ok(Some(Monitor {
            listener,
            conns: Slab::new(),
            max_connections: m.max_connections,
            timeout: m.timeout,
            hosts: Hosts::new(&m.hosts),
            accept_again: None,
        }))
    }

    /// The listening socket, for the new process of an upgrade.
    pub(super) fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.listener)
    }

    /// Accept nothing (an upgrade: the other process serves the listener).
    pub(super) fn pause(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.listener);
    }

    /// Accept again after [`Monitor::pause`].
    pub(super) fn resume(&mut self, registry: &Registry) {
        if let Err(e) = registry.register(&mut self.listener, MONITOR_LISTENER, Interest::READABLE)
        {
            warn!("monitor: cannot accept: {e}");
        }
    }

    /// Open monitoring connections.
    pub(super) fn open(&self) -> usize {
        self.conns.len()
    }

    /// Connections in general slots, those of them from `ip`, and those in health slots.
    fn counts(&self, ip: IpAddr) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for (_, c) in &self.conns {
            if c.health_only {
                counts.2 += 1;
            } else {
                counts.0 += 1;
                counts.1 += usize::from(c.ip == ip);
            }
        }
        counts
    }

    fn next_deadline(&self) -> Option<Instant> {
        let conns = self.conns.iter().map(|(_, c)| c.deadline).min();
        match (conns, self.accept_again) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Server {
    /// Accept monitoring connections. Past `[monitor] max_connections`, or past
    /// [`MAX_PER_ADDRESS`] from one address, a connection gets one of the [`HEALTH_SLOTS`]
    /// (evicting the oldest there) where only `GET /healthz` is answered and the first byte must
    /// come within [`FIRST_BYTE`].
    pub(super) fn monitor_accept(&mut self, now: Instant) {
        let key = MONITOR_LISTENER.0;
        for _ in 0..MAX_ACCEPTS {
            let Some(monitor) = &mut self.monitor else {
                return;
            };
            let mut on_spare = false;
            let (stream, peer) = match self.accept.accept(key, "monitor", &monitor.listener, now) {
                Accepted::Conn(stream, peer) => (stream, peer),
                Accepted::Empty => return,
                Accepted::Stalled => {
                    // Out of descriptors: one connection is served on the spare descriptor so
                    // that `/healthz` can say what is wrong; the rest wait for the retry timer.
                    let accepted = if self.accept.lend_spare() {
                        let accepted = monitor.listener.accept().ok();
                        if accepted.is_none() {
                            self.accept.give_back();
                        }
                        accepted
                    } else {
                        None
                    };
                    self.retry_accept_later(MONITOR_LISTENER, now);
                    let Some(accepted) = accepted else { return };
                    on_spare = true;
                    accepted
                }
            };
            self.monitor_insert(stream, peer, on_spare, now);
            if on_spare {
                return;
            }
        }
        // The cap of accepts per event was reached: the listener may still be ready.
        if let Some(monitor) = &mut self.monitor {
            monitor.accept_again = Some(now);
        }
    }

    /// Take an accepted monitoring connection into a slot (or a health slot, or refuse it).
    fn monitor_insert(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        on_spare: bool,
        now: Instant,
    ) {
        let Some(monitor) = &mut self.monitor else {
            return;
        };
        let ip = peer.ip();
        let (general, from_ip, health) = monitor.counts(ip);
        let health_only =
            on_spare || general >= monitor.max_connections || from_ip >= MAX_PER_ADDRESS;
        if health_only && health >= HEALTH_SLOTS {
            // Make room: the oldest connection in a health slot that has not asked yet.
            let oldest = monitor
                .conns
                .iter()
                .filter(|(_, c)| c.health_only && !c.on_spare && c.output.is_empty())
                .min_by_key(|(_, c)| c.accepted)
                .map(|(slot, _)| slot);
            match oldest {
                Some(slot) => {
                    if let Some(conn) = self.monitor.as_mut().and_then(|m| m.conns.get_mut(slot)) {
                        let _ = conn
                            .stream
                            .write(&response(503, &error_body(TOO_MANY), JSON));
                    }
                    self.stats.monitor_refused += 1;
                    self.monitor_close(slot);
                }
                None => {
                    debug!("monitor: refusing {peer}: {TOO_MANY}");
                    self.stats.monitor_refused += 1;
                    let _ = stream.write(&response(503, &error_body(TOO_MANY), JSON));
                    if on_spare {
                        drop(stream);
                        self.accept.give_back();
                    }
                    return;
                }
            }
        }
        let Some(monitor) = &mut self.monitor else {
            return;
        };
        let entry = monitor.conns.vacant_entry();
        let token = Token(MONITOR_CONN_BASE + entry.key());
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("monitor: cannot register {peer}: {e}");
            if on_spare {
                drop(stream);
                self.accept.give_back();
            }
            return;
        }
        entry.insert(HttpConn {
            stream,
            ip,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            accepted: now,
            deadline: now + FIRST_BYTE.min(monitor.timeout),
            health_only,
            on_spare,
        });
    }

    /// A monitoring connection is readable or writable.
    pub(super) fn monitor_ready(&mut self, slot: usize, now: Instant) {
        let parsed = {
            let Some(monitor) = self.monitor.as_mut() else {
                return;
            };
            let monitor_hosts = &monitor.hosts;
            let Some(conn) = monitor.conns.get_mut(slot) else {
                return;
            };
            if conn.output.is_empty() {
                let parsed = match read_request(conn, &mut self.scratch, monitor_hosts) {
                    Ok(parsed) => parsed,
                    Err(()) => return self.monitor_close(slot),
                };
                let timeout = self.monitor.as_ref().map_or(FIRST_BYTE, |m| m.timeout);
                let Some(conn) = self.monitor.as_mut().and_then(|m| m.conns.get_mut(slot)) else {
                    return;
                };
                if !conn.input.is_empty() && !conn.health_only {
                    // The first byte came: the whole request has the rest of `timeout_ms`.
                    conn.deadline = conn.accepted + timeout;
                }
                match parsed {
                    Parsed::Get(target)
                        if conn.health_only && target.split('?').next() != Some("/healthz") =>
                    {
                        Parsed::Refuse(503, TOO_MANY)
                    }
                    parsed => parsed,
                }
            } else {
                Parsed::Partial
            }
        };
        let answer = match parsed {
            Parsed::Partial => None,
            Parsed::Get(target) => {
                self.stats.monitor_requests += 1;
                Some(self.monitor_answer(&target, now))
            }
            Parsed::Refuse(status, text) => {
                self.stats.monitor_refused += 1;
                Some(response(status, &error_body(text), JSON))
            }
        };
        let Some(conn) = self.monitor.as_mut().and_then(|m| m.conns.get_mut(slot)) else {
            return;
        };
        if let Some(answer) = answer {
            conn.output = answer;
        }
        if !conn.output.is_empty() && write_some(conn) {
            self.monitor_close(slot);
        }
    }

    /// Answer a GET for `target` (path and query).
    fn monitor_answer(&self, target: &str, now: Instant) -> Vec<u8> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        match path {
            "/healthz" => match self.health() {
                Ok(()) => response(200, br#"{"status":"ok"}"#, JSON),
                Err(reason) => {
                    let body = serde_json::json!({"status": "unavailable", "reason": reason});
                    response(503, body.to_string().as_bytes(), JSON)
                }
            },
            "/status" => json_response(&self.status_report(now)),
            "/connections" => match ConnectionQuery::parse(query) {
                Ok(q) => json_response(&self.connections_report(now, &q)),
                Err(text) => response(400, &error_body(&text), JSON),
            },
            "/handlers" => json_response(&self.handlers_report()),
            "/peers" => json_response(&self.peers_report(now)),
            "/directory" => json_response(&self.directory_report()),
            "/metrics" => response(200, self.prometheus_text(now).as_bytes(), PROMETHEUS),
            _ => response(404, &error_body("no such page"), JSON),
        }
    }

    fn monitor_close(&mut self, slot: usize) {
        if let Some(monitor) = &mut self.monitor
            && monitor.conns.contains(slot)
        {
            let mut conn = monitor.conns.remove(slot);
            let _ = self.poll.registry().deregister(&mut conn.stream);
            // Read what the client sent past its request (bounded), so that closing does not
            // reset the connection and destroy the answer before the client has read it.
            let mut left = DRAIN_ON_CLOSE;
            while left > 0 {
                let cap = left.min(self.scratch.len());
                match conn.stream.read(&mut self.scratch[..cap]) {
                    Ok(n) if n > 0 => left = left.saturating_sub(n),
                    _ => break,
                }
            }
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            let on_spare = conn.on_spare;
            drop(conn);
            if on_spare {
                self.accept.give_back();
            }
        }
    }

    /// Monitoring connections whose time is up: answered 408 if nothing was answered yet, closed.
    pub(super) fn monitor_timers(&mut self, now: Instant) {
        let Some(monitor) = &mut self.monitor else {
            return;
        };
        if monitor.accept_again.take().is_some() {
            self.monitor_accept(now);
        }
        let Some(monitor) = &mut self.monitor else {
            return;
        };
        let expired: Vec<usize> = monitor
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(slot, _)| slot)
            .collect();
        for slot in expired {
            if let Some(monitor) = &mut self.monitor
                && let Some(conn) = monitor.conns.get_mut(slot)
                && conn.output.is_empty()
            {
                self.stats.monitor_refused += 1;
                let _ = conn.stream.write(&response(
                    408,
                    &error_body("request not complete in time"),
                    JSON,
                ));
            }
            self.monitor_close(slot);
        }
    }

    /// The earliest monitoring-connection deadline.
    pub(super) fn monitor_deadline(&self) -> Option<Instant> {
        self.monitor.as_ref().and_then(Monitor::next_deadline)
    }
}

/// Read what is there and try to parse a request. `Err` when the connection is gone before a
/// whole request arrived (a client may half-close right after its request: that is answered).
fn read_request(conn: &mut HttpConn, scratch: &mut [u8], hosts: &Hosts) -> Result<Parsed, ()> {
    let eof =
        read_bounded(&mut conn.stream, &mut conn.input, MAX_REQUEST, scratch).map_err(|_| ())?;
    match parse(&conn.input, hosts) {
        Parsed::Partial if eof => Err(()),
        parsed => Ok(parsed),
    }
}

/// Parse a request from the bytes received so far; a `Host` that is not an IP literal,
/// `localhost` or one of `hosts` is refused (a page whose name was rebound to this address).
fn parse(input: &[u8], hosts: &Hosts) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(input) {
        Ok(httparse::Status::Complete(_)) => {
            let host = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .map(|h| std::str::from_utf8(h.value).unwrap_or(""));
            if host.is_some_and(|h| !hosts.allows(h)) {
                return Parsed::Refuse(403, "this Host is not served here (see [monitor] hosts)");
            }
            if request.method != Some("GET") {
                return Parsed::Refuse(405, "only GET is served here");
            }
            Parsed::Get(request.path.unwrap_or("/").to_string())
        }
        Ok(httparse::Status::Partial) if input.len() > MAX_REQUEST => {
            Parsed::Refuse(431, "request line and headers too large")
        }
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::Refuse(431, "too many headers"),
        Err(_) => Parsed::Refuse(400, "not an HTTP/1.x request"),
    }
}

/// Write queued output; true once all of it is written (or the connection failed).
fn write_some(conn: &mut HttpConn) -> bool {
    write_pending(&mut conn.stream, &conn.output, &mut conn.written)
}

const JSON: &str = "application/json";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A whole HTTP/1.1 response; the connection closes after it.
fn response(status: u16, body: &[u8], content_type: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn json_response(value: &serde_json::Value) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    response(200, &body, JSON)
}

fn error_body(text: &str) -> Vec<u8> {
    serde_json::json!({ "error": text })
        .to_string()
        .into_bytes()
}

/// `/connections` query: `user`, `offset`, `limit`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ConnectionQuery {
    /// Only this user's connections.
    pub user: Option<String>,
    /// Skip this many.
    pub offset: usize,
    /// Return at most this many.
    pub limit: usize,
}

/// Default page size of `/connections`.
pub(super) const DEFAULT_LIMIT: usize = 100;
/// Largest page size of `/connections`.
pub(super) const MAX_LIMIT: usize = 1000;

impl ConnectionQuery {
    fn parse(query: &str) -> Result<ConnectionQuery, String> {
        let mut q = ConnectionQuery {
            limit: DEFAULT_LIMIT,
            ..ConnectionQuery::default()
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).ok_or_else(|| format!("bad escape in {key}"))?;
            let number = || {
                value
                    .parse::<usize>()
                    .map_err(|_| format!("{key} must be a whole number"))
            };
            match key {
                "user" => q.user = Some(value.clone()),
                "offset" => q.offset = number()?,
                "limit" => q.limit = number()?.min(MAX_LIMIT),
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        Ok(q)
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed_or_refused() {
        let none = Hosts::default();
        assert!(
            matches!(parse(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1:8222\r\n\r\n", &none), Parsed::Get(p) if p == "/status")
        );
        assert!(matches!(
            parse(b"GET /status HTTP/1.1\r\nHost:", &none),
            Parsed::Partial
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\n\r\n", &none),
            Parsed::Refuse(405, _)
        ));
        assert!(matches!(
            parse(b"\x00\x01garbage\r\n\r\n", &none),
            Parsed::Refuse(400, _)
        ));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&many, &none), Parsed::Refuse(431, _)));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_REQUEST));
        assert!(matches!(
            parse(long.as_bytes(), &none),
            Parsed::Refuse(431, _)
        ));
        // DNS rebinding: a page whose name was pointed at 127.0.0.1 sends its own name.
        let rebound = b"GET /connections HTTP/1.1\r\nHost: evil.example:8222\r\n\r\n";
        assert!(matches!(parse(rebound, &none), Parsed::Refuse(403, _)));
        let named = Hosts::new(&["metrics.internal".into()]);
        let ok = b"GET /metrics HTTP/1.1\r\nHost: metrics.internal:8222\r\n\r\n";
        assert!(matches!(parse(ok, &named), Parsed::Get(_)));
        let local = b"GET /metrics HTTP/1.1\r\nHost: localhost:8222\r\n\r\n";
        assert!(matches!(parse(local, &none), Parsed::Get(_)));
    }

    #[test]
    fn connection_queries() {
        assert_eq!(
            ConnectionQuery::parse("").unwrap(),
            ConnectionQuery {
                user: None,
                offset: 0,
                limit: DEFAULT_LIMIT
            }
        );
        assert_eq!(
            ConnectionQuery::parse("user=al%69ce&offset=2&limit=5000").unwrap(),
            ConnectionQuery {
                user: Some("alice".into()),
                offset: 2,
                limit: MAX_LIMIT
            }
        );
        assert_eq!(
            ConnectionQuery::parse("limit=x").unwrap_err(),
            "limit must be a whole number"
        );
        assert_eq!(
            ConnectionQuery::parse("sort=1").unwrap_err(),
            "unknown parameter \"sort\""
        );
        assert_eq!(
            ConnectionQuery::parse("user=%zz").unwrap_err(),
            "bad escape in user"
        );
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = String::from_utf8(response(404, b"{}", JSON)).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n{}"
        );
    }
}
