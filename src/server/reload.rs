//! Reload (SIGHUP, `systemctl reload`, or an admin's reload command): the configuration file is
//! read and validated on a thread of its own (it may resolve peer host names), then the pure
//! [`diff`] with the running configuration is carried out on the loop:
//!
//! | change | effect |
//! | --- | --- |
//! | handler type added | its socket is bound and its processes started |
//! | handler type removed | new messages get `unknown_type`; each connection is closed once its requests in flight are answered; the processes get EOF, then SIGTERM |
//! | handler command, processes, env, cwd or socket changed | new processes start beside the old ones; each new connection retires one old connection (closed once its requests are answered); while no new one serves, the old ones go on serving |
//! | handler `max_inflight` | applied at once |
//! | limits and timeouts of `[server]` | applied at once (frame and queue limits to new connections, the frame limit also to logged-in ones) |
//! | peers added / removed / address or secret changed | linked / unlinked / relinked |
//! | `listen`, `name`, `users`, `runtime_dir`, `auth_threads`, `auth_queue`, `[[listeners]]`, `[monitor]`, `[federation]`, `[delivery]` (also a type with `offline = "store"` added to a server without a store) | need a restart: logged and shown in `STATUS=`, the running value stays |
//! | `[auth]`, `[auth.jwt]` | their key files were read with the file: new logins use the new keys (without `token_secret_file` the random key of this run stays) |
//! | an invalid file | nothing changes; each problem is logged with its key, and `STATUS=` says so |
//!
//! The user store is checked at once as well (`server/revoke.rs`).

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::{Interest, Waker};
use sd_notify::NotifyState;

use super::Server;
use super::conn::{ClientState, PeerState, Role};
use super::limits::LoginLimiter;
use super::peers::PeerSlot;
use super::token::{CONN_BASE, HANDLER_LISTENER_BASE};
use super::{HandlerListener, lifecycle::status_line};
use crate::cli::ServeArgs;
use crate::config::diff::{ConfigDiff, diff, merge_running};
use crate::config::{Config, ConfigError, EXAMPLES_PLACEHOLDER, HandlerConfig, HandlerSource};
use crate::handler::supervisor::{ProcessSpec, socket_path_fits};
use crate::router::{ConnId, RouterConfig};

/// Extra time a retired handler process gets, past the request timeout, before SIGTERM.
const RETIRE_SLACK: Duration = Duration::from_secs(1);
/// Then before SIGKILL.
const RETIRE_KILL: Duration = Duration::from_secs(3);

/// Reload state owned by the server.
pub(super) struct Reloads {
    /// The file to re-read (`None`: the embedded default) and the flags that override it.
    source: (Option<PathBuf>, Option<ServeArgs>),
    job: Option<Receiver<Result<Config, ConfigError>>>,
    waker: Arc<Waker>,
    /// Where the bundled example handlers were written, once needed.
    examples: Option<PathBuf>,
    /// Handler connections taken out of their pool, closed once their requests are answered.
    retiring: Vec<ConnId>,
    /// The process id behind each handler connection (from `SO_PEERCRED`).
    pids: HashMap<ConnId, u32>,
    /// Handler connections that were serving when their type was changed by a reload (their
    /// process may not be the supervisor's child, e.g. behind a wrapper script).
    old_links: HashSet<ConnId>,
}

impl Reloads {
    pub fn new(waker: Arc<Waker>) -> Reloads {
        Reloads {
            source: (None, None),
            job: None,
            waker,
            examples: None,
            retiring: Vec::new(),
            pids: HashMap::new(),
            old_links: HashSet::new(),
        }
    }

    /// Whether a reload is being read.
    pub fn in_progress(&self) -> bool {
        self.job.is_some()
    }

    /// A connection closed.
    pub fn forget(&mut self, id: ConnId) {
        self.pids.remove(&id);
        self.old_links.remove(&id);
    }
}

impl Server {
    /// Where [`Server::reload`] reads the configuration from: `path` (or the embedded default),
    /// with the `serve` flags applied on top as at startup.
    pub fn set_reload_source(&mut self, path: Option<PathBuf>, args: ServeArgs) {
        self.reloads.source = (path, Some(args));
    }

    /// Start a reload: `RELOADING=1`, the file is read and checked off the loop, and applied when
    /// it arrives (then `READY=1`). False when one is already running or the server is draining.
    pub fn reload(&mut self, now: Instant) -> bool {
        if !self.life.accepting() {
            info!("reload ignored: the server is shutting down");
            return false;
        }
        if self.reloads.in_progress() {
            info!("reload ignored: one is already in progress");
            return false;
        }
        info!("reloading the configuration");
        let mut states = vec![NotifyState::Reloading];
        if let Ok(stamp) = NotifyState::monotonic_usec_now() {
            states.push(stamp);
        }
        self.life.notify(&states);
        self.sessions.check_soon(now);
        // TLS certificates and keys, and static files, of the listeners as configured now.
        self.reload_listeners();
        let (path, args) = self.reloads.source.clone();
        let (tx, rx) = mpsc::channel();
        let waker = Arc::clone(&self.reloads.waker);
        let spawned = std::thread::Builder::new()
            .name("besterd-reload".into())
            .spawn(move || {
                let loaded = match &path {
                    Some(path) => Config::load(path),
                    None => Ok(Config::embedded()),
                };
                let result = loaded.and_then(|mut config| match &args {
                    Some(args) => config.apply_flags(args).map(|()| config),
                    None => Ok(config),
                });
                let _ = tx.send(result);
                let _ = waker.wake();
            });
        match spawned {
            Ok(_) => {
                self.reloads.job = Some(rx);
                true
            }
            Err(e) => {
                error!("reload: cannot start the reader thread: {e}");
                self.life.note = Some(format!("reload failed: {e}"));
                self.reload_finished();
                false
            }
        }
    }

    /// The reader thread woke the loop: apply its result, if it is there.
    pub(super) fn reload_results(&mut self, now: Instant) {
        let Some(job) = &self.reloads.job else { return };
        let result = match job.try_recv() {
            Ok(result) => result,
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => Err(ConfigError {
                origin: "reload".into(),
                problems: vec![("(reload)".into(), "the reader thread failed".into())],
            }),
        };
        self.reloads.job = None;
        if !self.life.accepting() {
            info!("reload dropped: the server is shutting down");
            return;
        }
        match result {
            Ok(mut config) => {
                super::listeners::fit_fd_limit(&mut config);
                self.apply_config(config, now);
            }
            Err(e) => {
                for (key, problem) in &e.problems {
                    error!("reload: {}: {key}: {problem}", e.origin);
                }
                let first = e.problems.first().map_or("?", |(k, _)| k.as_str());
                self.life.note = Some(format!(
                    "reload failed ({} problem{}, first {first}): still running the previous configuration",
                    e.problems.len(),
                    if e.problems.len() == 1 { "" } else { "s" }
                ));
                warn!("reload failed: nothing was changed");
            }
        }
        self.reload_finished();
    }

    fn reload_finished(&mut self) {
        let line = status_line(&self.figures());
        self.life
            .notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
        self.life.last_status = line;
    }

    fn apply_config(&mut self, new: Config, now: Instant) {
        let d = diff(&self.config, &new);
        let merged = merge_running(&self.config, new);
        let old = std::mem::replace(&mut self.config, merged);
        self.apply_limits(&old);
        self.apply_token_keys();
        let mut problems = Vec::new();
        for kind in &d.handlers_tuned {
            self.router
                .set_max_inflight(kind, self.config.handlers[kind].max_inflight);
        }
        for kind in &d.handlers_removed {
            self.remove_handler(kind, now);
        }
        for kind in &d.handlers_added {
            let handler = self.config.handlers[kind].clone();
            if let Err(e) = self.add_handler(kind, &handler, now) {
                error!("reload: handlers.{kind}: {e}");
                problems.push(format!("handlers.{kind}"));
            }
        }
        for kind in &d.handlers_restarted {
            let handler = self.config.handlers[kind].clone();
            if let Err(e) = self.restart_handler(kind, &old.handlers[kind], &handler, now) {
                error!("reload: handlers.{kind}: {e}");
                problems.push(format!("handlers.{kind}"));
            }
        }
        for (kind, handler) in &self.config.handlers {
            self.router.set_access(kind, handler.access.clone());
        }
        self.apply_peers(&d, now);
        for key in &d.restart {
            warn!("reload: {key} changed; it needs a restart (the running value stays)");
        }
        info!("reload applied: {}", d.summary());
        self.life.note = if !problems.is_empty() {
            Some(format!("reloaded, but failed: {}", problems.join(", ")))
        } else if !d.restart.is_empty() {
            Some(format!(
                "reloaded; needs a restart for {}",
                d.restart.join(", ")
            ))
        } else {
            None
        };
        self.supervisor.tick(now);
        self.update_starting();
    }

    /// Limits and timeouts of the new configuration (already in `self.config`).
    fn apply_limits(&mut self, old: &Config) {
        let c = &self.config;
        self.router.set_limits(RouterConfig {
            server: c.name.clone(),
            request_timeout: c.request_timeout,
            max_chain_depth: c.max_chain_depth,
            max_frame: c.max_frame,
            login_timeout: c.auth.login_timeout,
            max_logins: c.auth.max_logins,
        });
        self.router.set_presence(c.presence.clone());
        self.router.set_streams(c.streams.clone());
        self.router.set_group_limits(c.groups.clone());
        if (c.login_failures_per_ip, c.login_failures_per_user)
            != (old.login_failures_per_ip, old.login_failures_per_user)
        {
            self.logins = LoginLimiter::new(c.login_failures_per_ip, c.login_failures_per_user);
        }
        if c.max_frame != old.max_frame {
            let max = c.max_frame;
            for (_, conn) in self.conns.iter_mut() {
                let logged_in = match &conn.role {
                    Role::Client(state) => matches!(state, ClientState::Ready { .. }),
                    Role::Handler { .. } => true,
                    Role::Peer(p) => p.state == PeerState::Up,
                };
                if logged_in {
                    conn.io.set_max_frame(max);
                }
            }
        }
    }

    /// Bind a handler type's socket, declare it to the router, and start its processes.
    pub(super) fn add_handler(
        &mut self,
        kind: &str,
        handler: &HandlerConfig,
        now: Instant,
    ) -> io::Result<()> {
        let path = self.bind_handler_socket(kind, handler)?;
        self.router.add_type_with(kind, handler.mode);
        self.router.set_access(kind, handler.access.clone());
        if let Some((spec, count)) = self.process_spec(kind, handler, path)? {
            self.supervisor.add(spec, count, now);
        }
        Ok(())
    }

    /// Bind the socket a handler type connects to, or (`connect`) note the socket it listens on.
    fn bind_handler_socket(&mut self, kind: &str, handler: &HandlerConfig) -> io::Result<PathBuf> {
        let path = match (&handler.connect, &handler.source) {
            (Some(path), _) => path.clone(),
            (None, HandlerSource::Socket(path)) => path.clone(),
            (None, _) => self.runtime.socket_for(kind),
        };
        if !socket_path_fits(&path) {
            return Err(io::Error::other(format!(
                "handler socket path {} is too long for a Unix socket",
                path.display()
            )));
        }
        if handler.connect.is_some() {
            // A handler besterd dials owns its socket: nothing to bind here.
            self.dialer.add(kind, &path, handler.uid);
            return Ok(path);
        }
        // The new process of an upgrade takes a `socket = "..."` path's listener over from
        // the old one (others connect to that path); accepted on once the old one hands over.
        let shared_path = self.shared_handler_socket(kind);
        let inherited = match self.upgrades.inherited.as_mut() {
            Some(i) if shared_path => i.take_unix(kind)?,
            _ => None,
        };
        let shared = inherited.is_some();
        let mut unix = match inherited {
            Some(unix) => unix,
            None => {
                match std::fs::remove_file(&path) {
                    Ok(()) => debug!("removed stale socket {}", path.display()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
                    }
                }
                crate::net::local::bind_private(&path).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display()))
                })?
            }
        };
        let entry = self.handler_listeners.vacant_entry();
        let token = HANDLER_LISTENER_BASE + entry.key();
        if token >= CONN_BASE {
            return Err(io::Error::other("too many handler sockets"));
        }
        if !shared {
            self.poll
                .registry()
                .register(&mut unix, mio::Token(token), Interest::READABLE)?;
        }
        entry.insert(HandlerListener {
            kind: kind.to_string(),
            listener: unix,
            path: path.clone(),
            refused: 0,
            shared,
        });
        Ok(path)
    }

    fn unbind_handler_socket(&mut self, kind: &str) {
        self.dialer.remove(kind);
        let keys: Vec<usize> = self
            .handler_listeners
            .iter()
            .filter(|(_, h)| h.kind == kind)
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            let mut h = self.handler_listeners.remove(key);
            let _ = self.poll.registry().deregister(&mut h.listener);
            if !h.shared {
                let _ = std::fs::remove_file(&h.path);
            }
        }
    }

    /// How to start a command handler's processes (`None` for a socket handler).
    fn process_spec(
        &mut self,
        kind: &str,
        handler: &HandlerConfig,
        socket: PathBuf,
    ) -> io::Result<Option<(ProcessSpec, usize)>> {
        let HandlerSource::Command {
            argv,
            processes,
            env,
            cwd,
        } = &handler.source
        else {
            return Ok(None);
        };
        let mut argv = argv.clone();
        if argv.iter().any(|a| a.contains(EXAMPLES_PLACEHOLDER)) {
            let dir = match &self.reloads.examples {
                Some(dir) => dir.clone(),
                None => self
                    .reloads
                    .examples
                    .insert(self.runtime.write_examples()?)
                    .clone(),
            };
            let dir = dir.to_string_lossy().into_owned();
            for arg in &mut argv {
                *arg = arg.replace(EXAMPLES_PLACEHOLDER, &dir);
            }
        }
        let spec = ProcessSpec {
            kind: kind.to_string(),
            argv,
            env: env.clone(),
            cwd: cwd.clone(),
            socket,
        };
        Ok(Some((spec, *processes)))
    }

    fn retire_deadlines(&self, now: Instant) -> (Instant, Instant) {
        let term_at = now + self.config.request_timeout + RETIRE_SLACK;
        (term_at, term_at + RETIRE_KILL)
    }

    /// A handler type left the configuration.
    fn remove_handler(&mut self, kind: &str, now: Instant) {
        info!(
            "reload: handler={kind} removed; its connections close once their requests are answered"
        );
        let links = self.router.remove_type(kind);
        self.reloads.retiring.extend(links);
        self.unbind_handler_socket(kind);
        let (term_at, kill_at) = self.retire_deadlines(now);
        self.supervisor.retire_kind(kind, term_at, kill_at, false);
    }

    /// A handler type's command, processes, env, cwd or socket changed: start the new processes
    /// beside the old ones; [`Server::handler_joined`] retires an old connection for each new one.
    fn restart_handler(
        &mut self,
        kind: &str,
        old: &HandlerConfig,
        new: &HandlerConfig,
        now: Instant,
    ) -> io::Result<()> {
        info!("reload: handler={kind} changed; restarting its processes in turn");
        self.router.set_mode(kind, new.mode);
        let socket_moved = old.connect != new.connect
            || match (&old.source, &new.source) {
                (HandlerSource::Command { .. }, HandlerSource::Command { .. }) => false,
                (a, b) => a != b,
            };
        let path = if socket_moved {
            self.unbind_handler_socket(kind);
            self.bind_handler_socket(kind, new)?
        } else {
            let path = new
                .connect
                .clone()
                .unwrap_or_else(|| self.runtime.socket_for(kind));
            if new.connect.is_some() {
                // Same socket, perhaps another `uid` allowed to own it.
                self.dialer.add(kind, &path, new.uid);
            }
            path
        };
        self.supervisor.mark_old(kind);
        self.reloads.old_links.extend(self.router.links_of(kind));
        if let Some((spec, count)) = self.process_spec(kind, new, path)? {
            self.supervisor.add(spec, count, now);
        }
        if self.router.links_of(kind).is_empty() {
            // Nothing old is serving: nothing to wait for.
            self.supervisor
                .retire_kind(kind, now, now + RETIRE_KILL, true);
        }
        Ok(())
    }

    /// A handler connected on `kind`'s socket. If it is a new process after a reload, one old
    /// connection of the type is retired; once the new processes all serve, every old one is.
    pub(super) fn handler_joined(
        &mut self,
        id: ConnId,
        kind: &str,
        pid: Option<u32>,
        now: Instant,
    ) {
        if let Some(pid) = pid {
            self.reloads.pids.insert(id, pid);
        }
        if pid.is_some_and(|p| self.supervisor.is_old(p)) {
            return; // an old process connecting late: it serves until it is retired
        }
        let is_old = |server: &Server, c: &ConnId| {
            server.reloads.old_links.contains(c)
                || server
                    .reloads
                    .pids
                    .get(c)
                    .is_some_and(|p| server.supervisor.is_old(*p))
        };
        let links = self.router.links_of(kind);
        let olds: Vec<ConnId> = links.iter().filter(|c| is_old(self, c)).copied().collect();
        let Some(first) = olds.first() else { return };
        self.retire_link(*first, now);
        let current = links.len() - olds.len();
        if current >= self.supervisor.current_count(kind).max(1) {
            for id in &olds[1..] {
                self.retire_link(*id, now);
            }
            let (term_at, kill_at) = self.retire_deadlines(now);
            self.supervisor.retire_kind(kind, term_at, kill_at, true);
            info!("reload: handler={kind} now served by its new processes only");
        }
    }

    fn retire_link(&mut self, id: ConnId, now: Instant) {
        debug!("conn={id} retired by a reload; closing once its requests are answered");
        self.reloads.old_links.remove(&id);
        self.router.retire_link(id);
        self.reloads.retiring.push(id);
        if let Some(pid) = self.reloads.pids.get(&id).copied() {
            let (term_at, kill_at) = self.retire_deadlines(now);
            self.supervisor.retire_pid(pid, term_at, kill_at);
        }
    }

    /// Close retired handler connections that have nothing left in flight.
    pub(super) fn retire_tick(&mut self, _now: Instant) {
        if self.reloads.retiring.is_empty() {
            return;
        }
        let retiring = std::mem::take(&mut self.reloads.retiring);
        for id in retiring {
            match self.router.inflight_of(id) {
                Some(n) if n > 0 => self.reloads.retiring.push(id),
                _ => self.close(id, "retired by a reload".into()),
            }
        }
    }

    fn drop_peer_links(&mut self, name: &str, why: &str) {
        let mut links: Vec<ConnId> = self.router.peer_link(name).into_iter().collect();
        if let Some(slot) = self.peers.get(name) {
            links.extend(slot.dialing);
        }
        for id in links {
            self.close(id, why.to_string());
        }
    }

    fn apply_peers(&mut self, d: &ConfigDiff, now: Instant) {
        for name in &d.peers_removed {
            info!("reload: peer={name} removed; unlinking");
            self.drop_peer_links(name, "peer removed by a reload");
            self.peers.remove(name);
            self.router.remove_peer(name);
        }
        for name in &d.peers_changed {
            info!("reload: peer={name} changed; relinking");
            self.drop_peer_links(name, "peer changed by a reload");
            if let Some(slot) = self.peers.get_mut(name) {
                slot.config = self.config.peers[name].clone();
                slot.dialing = None;
                slot.failures = 0;
                slot.retry_at = now;
            }
        }
        for name in &d.peers_added {
            info!("reload: peer={name} added");
            self.router.add_peer(name);
            self.peers.insert(
                name.clone(),
                PeerSlot {
                    tls: match super::peers::tls_for(name, &self.config.peers[name]) {
                        Ok(tls) => tls,
                        Err(e) => {
                            error!("reload: {e}; peer={name} not added");
                            continue;
                        }
                    },
                    config: self.config.peers[name].clone(),
                    dialing: None,
                    plain_handshake: false,
                    failures: 0,
                    retry_at: now,
                    since: now,
                },
            );
        }
        // `allow_types` applies at once, to the link that is up: no relink.
        for (name, peer) in &self.config.peers {
            self.router.set_peer_types(name, peer.allow_types.clone());
        }
    }
}

/// The raw fd of an accepted handler stream, for its peer's credentials.
pub(super) fn fd_of(stream: &mio::net::UnixStream) -> RawFd {
    stream.as_raw_fd()
}
