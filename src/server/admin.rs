//! The control socket `besterd ctl` talks to: a Unix socket `besterd.ctl` in the runtime
//! directory, mode 0600 inside the 0700 directory, and every connection's peer credentials
//! (`SO_PEERCRED`) must be root or the daemon's own user. On the same mio loop as everything else.
//!
//! One request per connection: a JSON line `{"command": "status" | "kick" | "queues" | "reload" |
//! "drain" | "upgrade",
//! "conn": "3.7" | "user": "alice", "limit": 100}` (`limit`: `queues` only; at most [`MAX_CTL_REQUEST`] bytes, within
//! [`CTL_TIMEOUT`]), answered with one JSON line `{"ok": true, ...}` or
//! `{"ok": false, "error": "..."}`, then closed.
//!
//! `reload` runs [`Server::reload`] (what SIGHUP runs) and `drain` runs
//! [`Server::begin_drain`] (what SIGTERM runs); `upgrade` (what SIGUSR2 runs, `upgrade.rs`) is
//! answered once the new process serves or the attempt failed.
//!
//! The socket is bound under a temporary name (`besterd.ctl.<pid>`) and renamed over
//! `besterd.ctl`, so that the new process of an upgrade takes the name over atomically (when
//! the old one hands over); a process removes the name when it stops only if it still names
//! its own socket.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use serde::Deserialize;
use serde_json::{Value, json};
use slab::Slab;

use super::Server;
use super::conn::Role;
use super::monitor::{ConnectionQuery, DEFAULT_LIMIT, MAX_LIMIT};
use super::token::{ADMIN_CONN_BASE, ADMIN_LISTENER, MONITOR_CONN_BASE};
use crate::ctl::CTL_SOCKET;
use crate::handler::RuntimeDir;
use crate::net::accept::Accepted;
use crate::net::local::{peer_cred, read_bounded, write_pending};
use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::router::ConnId;

/// Largest control request.
pub const MAX_CTL_REQUEST: usize = 4096;
/// Time allowed for a whole control request.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(5);
/// Control connections at once; more are closed on accept.
pub(super) const MAX_CTL_CONNECTIONS: usize = 16;

/// The control listener and its connections.
pub(super) struct Admin {
    listener: UnixListener,
    path: PathBuf,
    /// Where it is bound until [`Admin::publish`] renames it to `path`.
    temp: Option<PathBuf>,
    /// The published socket's (device, inode): what `path` names while it is ours.
    published: Option<(u64, u64)>,
    conns: Slab<CtlConn>,
}

struct CtlConn {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    deadline: Instant,
    /// Its request is under way (an upgrade): nothing more is read from it.
    waiting: bool,
}

/// A control request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    command: String,
    #[serde(default)]
    conn: Option<String>,
    #[serde(default)]
    user: Option<String>,
    /// `queues`: at most this many users' queues (default [`DEFAULT_LIMIT`], at most
    /// [`MAX_LIMIT`]).
    #[serde(default)]
    limit: Option<usize>,
}

impl Admin {
    /// Bind `besterd.ctl` in the runtime directory, 0600: under a temporary name, renamed over
    /// `besterd.ctl` now if `publish` (else at [`Admin::publish`]).
    pub(super) fn bind(
        runtime: &RuntimeDir,
        registry: &Registry,
        publish: bool,
    ) -> io::Result<Option<Admin>> {
        let path = runtime.path().join(CTL_SOCKET);
        let temp = runtime
            .path()
            .join(format!("{CTL_SOCKET}.{}", std::process::id()));
        match std::fs::remove_file(&temp) {
            Ok(()) => debug!("removed stale socket {}", temp.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", temp.display()))),
        }
        // 0600 from the start (set on the socket before bind, not by path afterwards).
        let mut listener = crate::net::local::bind_private(&temp).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot bind {}: {e}", temp.display()))
        })?;
        registry.register(&mut listener, ADMIN_LISTENER, Interest::READABLE)?;
        let mut admin = Admin {
            listener,
            path,
            temp: Some(temp),
            published: None,
            conns: Slab::new(),
        };
        if publish {
            admin.publish();
        }
        Ok(Some(admin))
    }

    /// Rename the socket over `besterd.ctl` (atomically replacing a stale one, or the old
    /// process's at an upgrade).
    pub(super) fn publish(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Some(temp) = self.temp.take() else { return };
        if let Err(e) = std::fs::rename(&temp, &self.path) {
            warn!(
                "control socket: cannot rename {} to {}: {e}; it stays at {}",
                temp.display(),
                self.path.display(),
                temp.display()
            );
            self.path = temp;
        }
        self.published = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        info!(
            "control socket {} (root or this user only): besterd ctl --socket {} status",
            self.path.display(),
            self.path.display()
        );
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if let Some(temp) = &self.temp {
            let _ = std::fs::remove_file(temp);
            return;
        }
        // Not the new process's socket, renamed over ours by an upgrade.
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| Some((m.dev(), m.ino())) == self.published);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether `uid` may use the control socket: root or the daemon's own user.
fn allowed(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

fn line(value: &Value) -> Vec<u8> {
    let mut out = value.to_string().into_bytes();
    out.push(b'\n');
    out
}

fn refusal(text: &str) -> Vec<u8> {
    line(&json!({"ok": false, "error": text}))
}

impl Server {
    /// The monitoring or the control listener is ready.
    pub(super) fn control_accept(&mut self, token: Token, now: Instant) {
        if token == ADMIN_LISTENER {
            self.admin_accept(now);
        } else {
            self.monitor_accept(now);
        }
    }

    /// A monitoring or control connection (by its token number) is ready.
    pub(super) fn control_ready(&mut self, token: usize, now: Instant) {
        if token >= ADMIN_CONN_BASE {
            self.admin_ready(token - ADMIN_CONN_BASE, now);
        } else {
            self.monitor_ready(token - MONITOR_CONN_BASE, now);
        }
    }

    /// Accept control connections, refusing other users.
    fn admin_accept(&mut self, now: Instant) {
        let Some(admin) = &mut self.admin else { return };
        loop {
            let key = ADMIN_LISTENER.0;
            let (mut stream, _) =
                match self
                    .accept
                    .accept(key, "control socket", &admin.listener, now)
                {
                    Accepted::Conn(stream, addr) => (stream, addr),
                    Accepted::Empty => return,
                    Accepted::Stalled => {
                        // Out of descriptors: close what is queued; try again on the timer.
                        self.accept.shed(key, &admin.listener, |_, _| {});
                        return self.retry_accept_later(ADMIN_LISTENER, now);
                    }
                };
            match peer_cred(stream.as_raw_fd()).map(|(_, uid)| uid) {
                Ok(uid) if allowed(uid) => {}
                Ok(uid) => {
                    warn!("control socket: refused a connection from uid {uid}");
                    let _ = stream.write(&refusal("permission denied"));
                    continue;
                }
                Err(e) => {
                    warn!("control socket: cannot read peer credentials: {e}");
                    continue;
                }
            }
            if admin.conns.len() >= MAX_CTL_CONNECTIONS {
                let _ = stream.write(&refusal("too many control connections"));
                continue;
            }
            let entry = admin.conns.vacant_entry();
            let token = Token(ADMIN_CONN_BASE + entry.key());
            if self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            entry.insert(CtlConn {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                deadline: now + CTL_TIMEOUT,
                waiting: false,
            });
        }
    }

    /// A control connection is readable or writable.
    fn admin_ready(&mut self, slot: usize, now: Instant) {
        let request = {
            let Some(conn) = self.admin.as_mut().and_then(|a| a.conns.get_mut(slot)) else {
                return;
            };
            if conn.waiting {
                return;
            }
            if conn.output.is_empty() {
                match read_line(conn, &mut self.scratch) {
                    Ok(request) => request,
                    Err(()) => return self.admin_close(slot),
                }
            } else {
                None
            }
        };
        let mut drain = false;
        if let Some(request) = request {
            let answer = match request {
                Ok(request) => {
                    drain = request.command == "drain";
                    self.admin_command(&request, slot, now)
                }
                Err(text) => refusal(&text),
            };
            if let Some(conn) = self.admin.as_mut().and_then(|a| a.conns.get_mut(slot)) {
                conn.output = answer;
            }
        }
        let Some(conn) = self.admin.as_mut().and_then(|a| a.conns.get_mut(slot)) else {
            return;
        };
        if !conn.output.is_empty() && write_some(conn) {
            self.admin_close(slot);
        }
        if drain {
            self.begin_drain(now);
        }
    }

    fn admin_command(&mut self, request: &Request, slot: usize, now: Instant) -> Vec<u8> {
        match request.command.as_str() {
            "status" => {
                let query = ConnectionQuery {
                    user: None,
                    offset: 0,
                    limit: MAX_LIMIT,
                };
                line(&json!({
                    "ok": true,
                    "status": self.status_report(now),
                    "connections": self.connections_report(now, &query),
                }))
            }
            "kick" => match self.kick(request, now) {
                Ok(kicked) => line(&json!({"ok": true, "kicked": kicked})),
                Err(text) => refusal(&text),
            },
            "queues" => {
                if let Some(conn) = self.admin.as_mut().and_then(|a| a.conns.get_mut(slot)) {
                    conn.waiting = true;
                }
                let limit = request.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
                match self.queues_start(slot, request.user.clone(), limit) {
                    // Answered when the delivery thread has read them (`delivery.rs`).
                    Ok(()) => Vec::new(),
                    Err(why) => {
                        if let Some(conn) = self.admin.as_mut().and_then(|a| a.conns.get_mut(slot))
                        {
                            conn.waiting = false;
                        }
                        refusal(&why)
                    }
                }
            }
            "reload" => {
                info!("reload requested on the control socket");
                if self.reload(now) {
                    line(&json!({"ok": true}))
                } else {
                    refusal("a reload is already in progress, or the server is draining")
                }
            }
            "drain" => {
                info!("drain requested on the control socket");
                line(&json!({"ok": true, "draining": true}))
            }
            "upgrade" => {
                info!("upgrade requested on the control socket");
                if let Some(conn) = self.admin.as_mut().and_then(|a| a.conns.get_mut(slot)) {
                    conn.waiting = true;
                }
                match self.upgrade_start(Some(slot), now) {
                    // Answered with the outcome (`upgrade.rs`).
                    Ok(_) => Vec::new(),
                    Err(why) => {
                        warn!("upgrade refused: {why}");
                        if let Some(conn) = self.admin.as_mut().and_then(|a| a.conns.get_mut(slot))
                        {
                            conn.waiting = false;
                        }
                        refusal(&why)
                    }
                }
            }
            other => refusal(&format!(
                "unknown command {other:?}; expected status, kick, queues, reload, drain or upgrade"
            )),
        }
    }

    /// Close client connections named by id or by user, telling each `kicked` first.
    fn kick(&mut self, request: &Request, now: Instant) -> Result<Vec<String>, String> {
        let targets: Vec<ConnId> = match (&request.conn, &request.user) {
            (Some(id), None) => {
                let found = self
                    .conns
                    .iter()
                    .map(|(_, c)| c)
                    .find(|c| c.id.to_string() == *id && matches!(c.role, Role::Client(_)));
                match found {
                    Some(c) if c.closing.is_none() => vec![c.id],
                    _ => return Err(format!("no open client connection {id}")),
                }
            }
            (None, Some(user)) => {
                let ids: Vec<ConnId> = self
                    .conns
                    .iter()
                    .map(|(_, c)| c)
                    .filter(|c| c.user() == Some(user.as_str()) && c.closing.is_none())
                    .map(|c| c.id)
                    .collect();
                if ids.is_empty() {
                    return Err(format!("user {user:?} has no open connection"));
                }
                ids
            }
            _ => return Err("kick needs conn or user (one of them)".into()),
        };
        let error = ErrorBody::new(ErrorCode::Kicked, "closed by an administrator");
        for id in &targets {
            info!("conn={id} kicked by an administrator");
            self.tell_error(*id, &error);
            self.finish(*id, now, "kicked".into());
        }
        Ok(targets.iter().map(ConnId::to_string).collect())
    }

    /// Keep control connection `slot` open until `until` (its answer comes later).
    pub(super) fn ctl_hold(&mut self, slot: usize, until: Instant) {
        if let Some(conn) = self.admin.as_mut().and_then(|a| a.conns.get_mut(slot)) {
            conn.deadline = until;
        }
    }

    /// The late answer of control connection `slot`: written, then the connection closes.
    pub(super) fn ctl_answer(&mut self, slot: usize, answer: Vec<u8>, now: Instant) {
        let Some(conn) = self.admin.as_mut().and_then(|a| a.conns.get_mut(slot)) else {
            return;
        };
        conn.waiting = false;
        conn.output = answer;
        conn.deadline = conn.deadline.min(now + CTL_TIMEOUT);
        if write_some(conn) {
            self.admin_close(slot);
        }
    }

    fn admin_close(&mut self, slot: usize) {
        if let Some(admin) = &mut self.admin
            && admin.conns.contains(slot)
        {
            let mut conn = admin.conns.remove(slot);
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    /// The earliest deadline of the monitoring and control connections.
    pub(super) fn control_deadline(&self) -> Option<Instant> {
        let admin = self
            .admin
            .as_ref()
            .and_then(|a| a.conns.iter().map(|(_, c)| c.deadline).min());
        match (self.monitor_deadline(), admin) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Close monitoring and control connections whose time is up.
    pub(super) fn control_timers(&mut self, now: Instant) {
        if self.control_deadline().is_none_or(|at| at > now) {
            return;
        }
        self.monitor_timers(now);
        let expired: Vec<usize> = self.admin.as_ref().map_or_else(Vec::new, |a| {
            a.conns
                .iter()
                .filter(|(_, c)| c.deadline <= now)
                .map(|(slot, _)| slot)
                .collect()
        });
        for slot in expired {
            if let Some(conn) = self.admin.as_mut().and_then(|a| a.conns.get_mut(slot))
                && conn.output.is_empty()
            {
                let _ = conn.stream.write(&refusal("request not complete in time"));
            }
            self.admin_close(slot);
        }
    }
}

/// Read what is there; a complete line is parsed. `Err` when the connection is gone.
fn read_line(
    conn: &mut CtlConn,
    scratch: &mut [u8],
) -> Result<Option<Result<Request, String>>, ()> {
    let eof = read_bounded(&mut conn.stream, &mut conn.input, MAX_CTL_REQUEST, scratch)
        .map_err(|_| ())?;
    let end = conn.input.iter().position(|b| *b == b'\n');
    let text = match end {
        Some(end) => &conn.input[..end],
        None if conn.input.len() > MAX_CTL_REQUEST => {
            return Ok(Some(Err(format!("request over {MAX_CTL_REQUEST} bytes"))));
        }
        None if eof && !conn.input.is_empty() => &conn.input[..],
        None if eof => return Err(()),
        None => return Ok(None),
    };
    Ok(Some(
        serde_json::from_slice::<Request>(text).map_err(|e| format!("bad request: {e}")),
    ))
}

/// Write queued output; true once all of it is written (or the connection failed).
fn write_some(conn: &mut CtlConn) -> bool {
    write_pending(&mut conn.stream, &conn.output, &mut conn.written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_the_daemons_user_are_allowed() {
        assert!(allowed(0));
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        assert!(allowed(me));
        if me != 0 {
            assert!(!allowed(me + 1));
        } else {
            assert!(!allowed(12345));
        }
    }

    #[test]
    fn requests_are_strict() {
        let r: Request = serde_json::from_str(r#"{"command":"kick","user":"alice"}"#).unwrap();
        assert_eq!(
            (r.command.as_str(), r.user.as_deref()),
            ("kick", Some("alice"))
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"kick","usr":"a"}"#).is_err());
    }
}
