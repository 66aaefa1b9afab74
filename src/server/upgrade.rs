//! Hot upgrade of the binary in place: `besterd ctl upgrade` or SIGUSR2 starts the binary at the
//! path the daemon was started from, with the same arguments, on the same listening sockets
//! (`server/handover.rs`), waits for it to be ready, then hands over and drains as on SIGTERM.
//!
//! Steps, each logged at info level:
//! 1. *started*: the old process spawns the child with the listeners inherited and the handover
//!    message on a socket pair. The child binds its own handler sockets (`<type>.<pid>.sock`),
//!    its control socket under a temporary name, starts its handlers, and accepts nothing yet;
//!    it sends no notification to the service manager.
//! 2. *ready*: once its handlers are connected (as for READY=1 at a normal start) the child says
//!    `ready` (or, at its startup timeout, `missing a,b`: accepted only if those types are down in
//!    the old process too).
//! 3. *handover*: the old process sends `MAINPID=<child>` (it is the main pid: allowed with the
//!    default `NotifyAccess=main`), stops notifying, tells the child `go`, stops accepting on
//!    every listener and drains. The child renames its control socket over `besterd.ctl`,
//!    starts accepting, sends READY=1 and pings the watchdog from then on.
//! 4. *done*: the old process exits once drained; its clients reconnect to the child with their
//!    resume tokens (same key).
//!
//! A child that cannot be started, exits, says `error …`, or is not ready within the startup
//! timeout plus [`SLACK`] is stopped (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and the old
//! process keeps serving; the `ctl` answer and the log say why. One upgrade at a time.

use std::io::{self, Read, Write};
use std::process::Child;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::Interest;
use sd_notify::NotifyState;
use serde_json::json;

use super::Server;
use super::handover::{self, FdRole, Inherited, Invocation, MAX_LINE, Message, PassedFd};
use super::lifecycle::Phase;
use super::relay::{self, Outbox};
use super::token::UPGRADE;
use crate::config::HandlerSource;

/// Time the child gets beyond `handler_startup_timeout_ms` to become ready.
pub(super) const SLACK: Duration = Duration::from_secs(5);
/// After SIGTERM, how long a failed child has before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Upgrade state, on both sides.
#[derive(Default)]
pub(super) struct Upgrades {
    /// How this process was started (what an upgrade runs).
    pub invocation: Option<Invocation>,
    state: State,
    /// The child's side: the link to the old process, until it says `go`.
    parent: Option<Parent>,
    /// The child's side, after `go`: the link to the old process while it drains (the logouts
    /// it relays).
    predecessor: Option<Parent>,
    /// The child's side, while binding: descriptors not taken yet.
    pub inherited: Option<Inherited>,
    /// The child's side, after taking over: until then `socket = "..."` handler types count as
    /// starting (their handlers come over once the old process has drained).
    grace_until: Option<Instant>,
    /// Upgrades handed over and failed (metrics).
    handed_over: u64,
    failed: u64,
}

#[derive(Default)]
enum State {
    #[default]
    Idle,
    Starting(Box<Attempt>),
    /// A failed attempt's process, being stopped.
    Stopping {
        child: Child,
        kill_at: Instant,
    },
    /// Handed over to this process; draining, and telling it of every logout meanwhile
    /// (`server/relay.rs`) until the link closes.
    Done(Box<Handed>),
}

struct Handed {
    pid: u32,
    link: Option<mio::net::UnixStream>,
    out: Outbox,
}

struct Attempt {
    child: Child,
    link: mio::net::UnixStream,
    input: Vec<u8>,
    started: Instant,
    deadline: Instant,
    /// Control connections waiting for the outcome.
    waiting: Vec<usize>,
    /// The link closed (the child exited or gave up) at this time.
    closed_at: Option<Instant>,
}

struct Parent {
    link: mio::net::UnixStream,
    pid: u32,
    input: Vec<u8>,
    /// `ready` (or `missing`) was sent: waiting for `go`.
    announced: bool,
    /// The old process created the runtime directory: it is ours once we take over.
    adopt_runtime: bool,
}

/// Read what is there (bounded); true at end of stream.
fn read_into(link: &mut mio::net::UnixStream, input: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match link.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) if input.len() + n > MAX_LINE => return true,
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Read what the old process sent (any amount; a line at most [`MAX_LINE`]): the complete
/// lines, and whether the link closed.
fn read_lines(link: &mut mio::net::UnixStream, input: &mut Vec<u8>) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match link.read(&mut buf) {
            Ok(0) => return (lines, true),
            Ok(n) => {
                input.extend_from_slice(&buf[..n]);
                lines.extend(std::iter::from_fn(|| take_line(input)));
                if input.len() > MAX_LINE {
                    return (lines, true); // longer than any line it sends
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (lines, false),
            Err(_) => return (lines, true),
        }
    }
}

/// Write what the socket takes of the relay to the new process; a link that fails is dropped.
fn flush_relay(link: &mut Option<mio::net::UnixStream>, out: &mut Outbox, pid: u32) {
    let Some(l) = link else {
        return;
    };
    if let Err(e) = out.flush(l) {
        warn!("upgrade: telling pid {pid} of logouts: {e}");
        *link = None;
    }
}

/// The next complete line of `input`, taken out.
fn take_line(input: &mut Vec<u8>) -> Option<String> {
    let end = input.iter().position(|b| *b == b'\n')?;
    let line: Vec<u8> = input.drain(..=end).collect();
    Some(String::from_utf8_lossy(&line[..end]).into_owned())
}

impl Upgrades {
    /// The child's side: the link to the old process (after binding).
    pub fn adopt_parent(&mut self, registry: &mio::Registry) -> io::Result<()> {
        let Some(mut inherited) = self.inherited.take() else {
            return Ok(());
        };
        inherited.close_rest();
        let link = inherited.link.try_clone()?;
        link.set_nonblocking(true)?;
        let mut link = mio::net::UnixStream::from_std(link);
        registry.register(&mut link, UPGRADE, Interest::READABLE)?;
        self.parent = Some(Parent {
            link,
            pid: inherited.parent,
            input: Vec::new(),
            announced: false,
            adopt_runtime: inherited.runtime_dir.is_some(),
        });
        Ok(())
    }

    /// Whether this process took over from an upgrade's old process within the startup
    /// timeout.
    pub fn taking_over(&self) -> bool {
        self.grace_until.is_some()
    }

    /// Whether this process is the new one of an upgrade and has not taken over yet.
    pub fn waiting_for_go(&self) -> bool {
        self.parent.is_some()
    }

    /// The earliest time the upgrade must act.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Starting(a) => Some(a.closed_at.map_or(a.deadline, |at| at.min(a.deadline))),
            State::Stopping { kill_at, .. } => Some(*kill_at),
            _ => None,
        }
        .into_iter()
        .chain(self.grace_until)
        .min()
    }

    /// `(handed over, failed)` so far.
    pub fn outcomes(&self) -> (u64, u64) {
        (self.handed_over, self.failed)
    }

    /// For status: `(state, new pid)`.
    pub fn describe(&self) -> (&'static str, Option<u32>) {
        match &self.state {
            State::Idle if self.parent.is_some() => ("taking over", None),
            State::Idle => ("none", None),
            State::Starting(a) => ("starting", Some(a.child.id())),
            State::Stopping { child, .. } => ("failed", Some(child.id())),
            State::Done(h) => ("handed over", Some(h.pid)),
        }
    }
}

impl Server {
    /// Start an upgrade (`ctl upgrade` from control connection `waiting`, or SIGUSR2). `Err` says
    /// why not; the outcome of a started one comes later (log, and the control connection).
    pub(super) fn upgrade_start(
        &mut self,
        waiting: Option<usize>,
        now: Instant,
    ) -> Result<u32, String> {
        if self.upgrades.parent.is_some() {
            return Err(
                "this process is the new one of an upgrade and has not taken over yet; \
                        try again once it serves"
                    .into(),
            );
        }
        match &mut self.upgrades.state {
            State::Starting(a) => {
                return Err(format!(
                    "an upgrade is already in progress: new process pid {} started {} ms ago",
                    a.child.id(),
                    now.saturating_duration_since(a.started).as_millis()
                ));
            }
            State::Stopping { child, .. } => {
                return Err(format!(
                    "the last upgrade's process (pid {}) is still being stopped; try again in a moment",
                    child.id()
                ));
            }
            State::Done(h) => {
                return Err(format!(
                    "already handed over to pid {}; this process is draining",
                    h.pid
                ));
            }
            State::Idle => {}
        }
        match self.life.phase {
            Phase::Ready if self.reloads.in_progress() => {
                return Err("a reload is in progress; try again once it is done".into());
            }
            Phase::Ready => {}
            Phase::Starting(_) => return Err("the server is still starting".into()),
            Phase::Draining(_) | Phase::Closing(_) => {
                return Err("the server is draining".into());
            }
        }
        let Some(invocation) = self.upgrades.invocation.clone() else {
            return Err("this process does not know the command line it was started with".into());
        };
        let message = self.handover_message();
        let (child, link) = match handover::spawn(&invocation, &message) {
            Ok(spawned) => spawned,
            Err(e) => {
                let why = format!("cannot start {}: {e}", invocation.exe.display());
                error!("upgrade failed: {why}; still serving");
                self.upgrades.failed += 1;
                return Err(format!("upgrade failed: {why}"));
            }
        };
        let pid = child.id();
        let mut link = mio::net::UnixStream::from_std(link);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut link, UPGRADE, Interest::READABLE)
        {
            warn!("upgrade: cannot watch the link to pid {pid}: {e}");
        }
        info!(
            "upgrade: started pid {pid}: {} {}",
            invocation.exe.display(),
            invocation
                .args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let deadline = now + self.config.handler_startup_timeout + SLACK;
        self.upgrades.state = State::Starting(Box::new(Attempt {
            child,
            link,
            input: Vec::new(),
            started: now,
            deadline,
            waiting: waiting.into_iter().collect(),
            closed_at: None,
        }));
        if let Some(slot) = waiting {
            self.ctl_hold(slot, deadline + SLACK);
        }
        self.life.note = Some(format!("upgrading: new process pid {pid} starting"));
        self.send_status();
        Ok(pid)
    }

    /// What the child is told: every listening socket, the key, the watchdog period.
    fn handover_message(&self) -> Message {
        let mut fds: Vec<PassedFd> = self
            .listeners
            .fds()
            .into_iter()
            .map(|(fd, name)| PassedFd {
                fd,
                role: FdRole::Listener,
                name,
            })
            .collect();
        if let Some(fd) = self.monitor.as_ref().map(|m| m.fd()) {
            fds.push(PassedFd {
                fd,
                role: FdRole::Monitor,
                name: "monitor".into(),
            });
        }
        for (_, h) in &self.handler_listeners {
            if self.shared_handler_socket(&h.kind) {
                fds.push(PassedFd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&h.listener),
                    role: FdRole::Handler,
                    name: h.kind.clone(),
                });
            }
        }
        Message {
            parent: std::process::id(),
            fds,
            token_key: self
                .config
                .auth
                .token_key
                .is_none()
                .then(|| Message::key_text(&self.auth.token_key())),
            watchdog_usec: self.life.watchdog_usec(),
            runtime_dir: self
                .runtime
                .owned()
                .then(|| self.runtime.path().to_path_buf()),
        }
    }

    /// Whether `kind`'s socket is one others connect to by its configured path
    /// (`socket = "..."`): it is passed on, not bound again.
    pub(super) fn shared_handler_socket(&self, kind: &str) -> bool {
        self.config
            .handlers
            .get(kind)
            .is_some_and(|h| h.connect.is_none() && matches!(h.source, HandlerSource::Socket(_)))
    }

    /// The link to the other process is readable.
    pub(super) fn upgrade_ready(&mut self, now: Instant) {
        if self.upgrades.parent.is_some() {
            return self.parent_ready(now);
        }
        if self.upgrades.predecessor.is_some() {
            return self.predecessor_ready();
        }
        if let State::Done(h) = &mut self.upgrades.state {
            // Writable (what is left of the relay), or closed by the child.
            let closed = h.link.as_mut().is_some_and(|l| {
                let mut sink = Vec::new();
                read_into(l, &mut sink)
            });
            if closed {
                h.link = None;
            }
            return flush_relay(&mut h.link, &mut h.out, h.pid);
        }
        let State::Starting(a) = &mut self.upgrades.state else {
            return;
        };
        let eof = read_into(&mut a.link, &mut a.input);
        while let Some(line) = {
            let State::Starting(a) = &mut self.upgrades.state else {
                return;
            };
            take_line(&mut a.input)
        } {
            let pid = self.upgrade_pid();
            if line == "ready" {
                return self.upgrade_handover(now);
            } else if let Some(types) = line.strip_prefix("missing ") {
                let counts = self.router.handler_counts();
                let lost: Vec<&str> = types
                    .split(',')
                    .filter(|k| counts.get(*k).copied().unwrap_or(0) > 0)
                    .collect();
                if lost.is_empty() {
                    warn!(
                        "upgrade: pid {pid} is ready without {types} (down here too); handing over"
                    );
                    return self.upgrade_handover(now);
                }
                return self.upgrade_failed(
                    now,
                    format!(
                        "new process pid {pid}: handlers not connected within the startup timeout: {}",
                        lost.join(", ")
                    ),
                );
            } else if let Some(why) = line.strip_prefix("error ") {
                return self.upgrade_failed(now, format!("new process pid {pid}: {why}"));
            }
        }
        if eof && let State::Starting(a) = &mut self.upgrades.state {
            let _ = self.poll.registry().deregister(&mut a.link);
            a.closed_at.get_or_insert(now + Duration::from_millis(500));
        }
    }

    fn upgrade_pid(&self) -> u32 {
        match &self.upgrades.state {
            State::Starting(a) => a.child.id(),
            _ => 0,
        }
    }

    /// Time-outs, the child's exit, and stopping a failed child.
    pub(super) fn upgrade_tick(&mut self, now: Instant) {
        if self.upgrades.grace_until.is_some_and(|at| at <= now) {
            self.upgrades.grace_until = None;
            self.update_starting();
        }
        match &mut self.upgrades.state {
            State::Starting(a) => {
                let exited = a.child.try_wait().ok().flatten();
                let pid = a.child.id();
                if let Some(status) = exited {
                    self.upgrades_reap_failed(
                        now,
                        format!("new process pid {pid} exited ({status}) before it was ready"),
                    );
                } else if a.closed_at.is_some_and(|at| at <= now) {
                    self.upgrade_failed(
                        now,
                        format!(
                            "new process pid {pid} closed its handover link before it was ready"
                        ),
                    );
                } else if a.deadline <= now {
                    let waited = now.saturating_duration_since(a.started).as_millis();
                    self.upgrade_failed(
                        now,
                        format!("new process pid {pid} not ready within {waited} ms"),
                    );
                }
            }
            State::Stopping { child, kill_at } => match child.try_wait() {
                Ok(Some(status)) => {
                    info!(
                        "upgrade: the failed new process pid {} exited ({status})",
                        child.id()
                    );
                    self.upgrades.state = State::Idle;
                }
                Ok(None) if *kill_at <= now => {
                    warn!(
                        "upgrade: pid {} did not exit on SIGTERM; killing it",
                        child.id()
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    self.upgrades.state = State::Idle;
                }
                Ok(None) => {}
                Err(_) => self.upgrades.state = State::Idle,
            },
            State::Idle | State::Done(_) => {}
        }
    }

    /// The child already exited: report, nothing to stop.
    fn upgrades_reap_failed(&mut self, now: Instant, why: String) {
        let State::Starting(mut a) = std::mem::take(&mut self.upgrades.state) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut a.link);
        self.upgrade_outcome(&a.waiting, Err(why), now);
    }

    /// Give up on an upgrade under way (the server stops): its new process is stopped.
    pub(super) fn upgrade_abort(&mut self, now: Instant, why: &str) {
        if matches!(self.upgrades.state, State::Starting(_)) {
            let pid = self.upgrade_pid();
            self.upgrade_failed(now, format!("{why} before new process pid {pid} was ready"));
        }
    }

    /// Give up on the child: stop it, keep serving, say why.
    fn upgrade_failed(&mut self, now: Instant, why: String) {
        let State::Starting(mut a) = std::mem::take(&mut self.upgrades.state) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut a.link);
        if let Ok(pid) = libc::pid_t::try_from(a.child.id()) {
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let waiting = std::mem::take(&mut a.waiting);
        self.upgrades.state = State::Stopping {
            child: a.child,
            kill_at: now + STOP_GRACE,
        };
        self.upgrade_outcome(&waiting, Err(format!("{why}; stopped it")), now);
    }

    /// Tell the waiting control connections and the log.
    fn upgrade_outcome(&mut self, waiting: &[usize], outcome: Result<u32, String>, now: Instant) {
        let me = std::process::id();
        let answer = match &outcome {
            Ok(pid) => json!({"ok": true, "pid": pid, "old_pid": me}),
            Err(why) => {
                error!("upgrade failed: {why}; still serving with pid {me}");
                json!({"ok": false, "error": format!("upgrade failed: {why}; still serving with pid {me}")})
            }
        };
        match &outcome {
            Ok(_) => self.upgrades.handed_over += 1,
            Err(_) => self.upgrades.failed += 1,
        }
        if outcome.is_err() {
            self.life.note = None;
            self.send_status();
        }
        let mut line = answer.to_string().into_bytes();
        line.push(b'\n');
        for slot in waiting {
            self.ctl_answer(*slot, line.clone(), now);
        }
    }

    /// The child is ready: move the main pid, let it go, stop accepting, drain.
    fn upgrade_handover(&mut self, now: Instant) {
        let State::Starting(a) = std::mem::take(&mut self.upgrades.state) else {
            return;
        };
        let pid = a.child.id();
        info!(
            "upgrade: pid {pid} ready after {} ms; handing over",
            now.saturating_duration_since(a.started).as_millis()
        );
        // From the main pid, before anything the child sends.
        self.life.notify(&[
            NotifyState::MainPid(pid),
            NotifyState::Status(&format!("handing over to pid {pid} (upgrade)")),
        ]);
        self.life.release();
        // The logged-out sessions first: the child serves nobody before it has them.
        let mut out = Outbox::default();
        self.revoked_snapshot(&mut out);
        out.line(format_args!("go"));
        let mut link = Some(a.link);
        if let Some(l) = &mut link
            && let Err(e) =
                self.poll
                    .registry()
                    .reregister(l, UPGRADE, Interest::READABLE | Interest::WRITABLE)
        {
            warn!("upgrade: cannot watch the link to pid {pid}: {e}");
        }
        flush_relay(&mut link, &mut out, pid);
        // The child serves these from now on: accept no more (the sockets stay open in it).
        if let Some(monitor) = &mut self.monitor {
            monitor.pause(self.poll.registry());
        }
        let shared: Vec<usize> = self
            .handler_listeners
            .iter()
            .filter(|(_, h)| self.shared_handler_socket(&h.kind))
            .map(|(key, _)| key)
            .collect();
        for key in shared {
            // Dropped, not unlinked: the path is the child's now.
            let mut h = self.handler_listeners.remove(key);
            let _ = self.poll.registry().deregister(&mut h.listener);
        }
        // A runtime directory this process created is the child's to remove.
        self.runtime.set_owned(false);
        self.upgrades.state = State::Done(Box::new(Handed { pid, link, out }));
        self.upgrade_outcome(&a.waiting, Ok(pid), now);
        self.life.note = Some(format!("handed over to pid {pid}"));
        info!("upgrade: draining; pid {pid} serves the listeners");
        self.begin_drain(now);
    }

    /// The new process's handover, after it stopped (for the last log line).
    pub(super) fn handed_over_to(&self) -> Option<u32> {
        match &self.upgrades.state {
            State::Done(h) => Some(h.pid),
            _ => None,
        }
    }

    /// The child's side: ready (or at the startup timeout with `missing` types): say so and
    /// wait for `go`.
    pub(super) fn upgrade_announce(&mut self, missing: &[String]) {
        let Some(parent) = &mut self.upgrades.parent else {
            return;
        };
        if parent.announced {
            return;
        }
        parent.announced = true;
        let line = if missing.is_empty() {
            "ready\n".to_string()
        } else {
            format!("missing {}\n", missing.join(","))
        };
        info!(
            "upgrade: ready; waiting for pid {} to hand over",
            parent.pid
        );
        if let Err(e) = parent.link.write_all(line.as_bytes()) {
            warn!("upgrade: telling pid {} we are ready: {e}", parent.pid);
        }
    }

    /// The child's side: the old process said `go`, or went away.
    fn parent_ready(&mut self, now: Instant) {
        let Some(parent) = &mut self.upgrades.parent else {
            return;
        };
        let pid = parent.pid;
        let (lines, eof) = read_lines(&mut parent.link, &mut parent.input);
        let mut go = false;
        for line in &lines {
            match relay::parse(line) {
                relay::Line::Go => go = true,
                other => self.adopt_revocation(&other),
            }
        }
        if !go && !eof {
            return;
        }
        if !go {
            warn!("upgrade: pid {pid} went away before handing over; taking over anyway");
        }
        self.take_over(now, !eof);
    }

    /// The child's side, after taking over: the old process relays a logout, or exits.
    fn predecessor_ready(&mut self) {
        let Some(p) = &mut self.upgrades.predecessor else {
            return;
        };
        let (lines, eof) = read_lines(&mut p.link, &mut p.input);
        if eof {
            let _ = self.poll.registry().deregister(&mut p.link);
            self.upgrades.predecessor = None;
        }
        for line in &lines {
            self.adopt_revocation(&relay::parse(line));
        }
        if eof {
            // It has exited: what it stored until then is in the file, not in this process's
            // counts, and may be for users and peers already served here.
            self.delivery_recount();
        }
    }

    /// The old side, after handing over: tell the new process (a logout while draining).
    ///
    /// Whether it was relayed (the new process has it from now on).
    pub(super) fn upgrade_relay(&mut self, add: impl FnOnce(&mut Outbox)) -> bool {
        if let State::Done(h) = &mut self.upgrades.state
            && h.link.is_some()
        {
            add(&mut h.out);
            flush_relay(&mut h.link, &mut h.out, h.pid);
            return true;
        }
        false
    }

    /// The old side, as it exits: what the new process has not read yet, for a moment.
    pub(super) fn upgrade_last_flush(&mut self) {
        if let State::Done(h) = &mut self.upgrades.state
            && let Some(link) = &mut h.link
        {
            let deadline = Instant::now() + relay::LAST_FLUSH;
            match h.out.flush_before(link, deadline) {
                Ok(true) => {}
                Ok(false) => warn!(
                    "upgrade: pid {} did not read the last logouts within {} ms",
                    h.pid,
                    relay::LAST_FLUSH.as_millis()
                ),
                Err(e) => warn!("upgrade: telling pid {} of logouts: {e}", h.pid),
            }
        }
    }

    /// The child's side: serve.
    fn take_over(&mut self, now: Instant, link_open: bool) {
        let Some(mut parent) = self.upgrades.parent.take() else {
            return;
        };
        let pid = parent.pid;
        let adopt_runtime = parent.adopt_runtime;
        if link_open {
            // It drains now, and tells of the logouts of its clients until it exits.
            self.upgrades.predecessor = Some(parent);
        } else {
            let _ = self.poll.registry().deregister(&mut parent.link);
            self.delivery_recount();
        }
        self.life.take_over(now);
        self.upgrades.grace_until = Some(now + self.config.handler_startup_timeout);
        self.update_starting();
        if adopt_runtime {
            self.runtime.set_owned(true);
        }
        if let Some(admin) = &mut self.admin {
            admin.publish();
        }
        let registry = self.poll.registry();
        self.listeners.resume(registry);
        if let Some(monitor) = &mut self.monitor {
            monitor.resume(registry);
        }
        for (key, h) in self.handler_listeners.iter_mut() {
            if h.shared {
                h.shared = false;
                let token = mio::Token(super::token::HANDLER_LISTENER_BASE + key);
                if let Err(e) = registry.register(&mut h.listener, token, Interest::READABLE) {
                    warn!("handler socket {}: {e}", h.kind);
                }
            }
        }
        info!("upgrade: took over from pid {pid}; serving on the same listeners");
        self.announce_ready(now);
    }
}
