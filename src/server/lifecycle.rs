//! The daemon's life under a service manager: readiness, `sd_notify` (READY, STATUS, WATCHDOG,
//! RELOADING, STOPPING), signals, and the drain on SIGTERM.
//!
//! Phases: starting (until every started handler type has a connection, or the startup timeout)
//! → ready → draining (SIGTERM: listener closed, new messages answered `shutting_down`, requests in
//! flight answered for real for up to `shutdown_grace_ms`) → closing (clients and peer links
//! closed once their last frames are written) → stopped (handlers get EOF, then SIGTERM, then
//! SIGKILL). A second SIGTERM or SIGINT skips to closing at once.
//!
//! Signals: TERM/INT drain (twice: stop now), HUP reloads (`server/reload.rs`), CHLD reaps
//! handlers, USR1 logs the status line, USR2 upgrades the binary in place (`server/upgrade.rs`).
//!
//! `STATUS=` lines come from one function, [`status_line`], over [`Figures`]; nothing here blocks
//! (a notification is one datagram on a Unix socket).

use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use sd_notify::NotifyState;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};

use super::Server;
use super::conn::Role;
use crate::protocol::ErrorCode;
use crate::router::ConnId;

/// How long closing clients may take to flush their last frames.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// After the connections are closed, how long handlers have to exit on the EOF.
const EOF_WAIT: Duration = Duration::from_secs(1);
/// Then how long they have after SIGTERM before SIGKILL.
const HANDLER_GRACE: Duration = Duration::from_secs(2);
/// The same two, when stopping at once (second signal).
const HURRY: Duration = Duration::from_millis(300);
/// How often the status line is recomputed (and sent when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// While starting, how often readiness is looked at again: a dialled handler's socket appearing
/// wakes nothing, and a configuration with no handlers to wait for has nothing to wake the loop.
const STARTUP_RECHECK: Duration = Duration::from_millis(50);

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for handlers until this time.
    Starting(Instant),
    /// Serving.
    Ready,
    /// SIGTERM: answering what is in flight until this time.
    Draining(Instant),
    /// Connections closing; stop at this time at the latest.
    Closing(Instant),
}

/// Lifecycle state owned by the server.
#[derive(Debug)]
pub(super) struct Lifecycle {
    pub phase: Phase,
    /// `NOTIFY_SOCKET` is set.
    notify: bool,
    /// Ping the watchdog this often (half of `WATCHDOG_USEC`).
    watchdog: Option<Duration>,
    next_watchdog: Option<Instant>,
    pub last_status: String,
    next_status: Instant,
    /// Something an operator should know, shown in `STATUS=` (a failed reload, handlers down).
    pub note: Option<String>,
    /// The second signal came: stop without waiting.
    hurry: bool,
    /// The new process of an upgrade before it is the main pid: notifications are held.
    hold: bool,
    /// The service manager's watchdog period (`WATCHDOG_USEC`), passed on by an upgrade.
    watchdog_period: Option<Duration>,
}

impl Lifecycle {
    pub fn new(now: Instant, startup: Duration) -> Lifecycle {
        let period = sd_notify::watchdog_enabled();
        let watchdog = period.map(|period| period / 2);
        if let Some(every) = watchdog {
            info!("watchdog: pinging every {} ms", every.as_millis());
        }
        Lifecycle {
            phase: Phase::Starting(now + startup),
            notify: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog,
            next_watchdog: watchdog.map(|every| now + every),
            last_status: String::new(),
            next_status: now,
            note: None,
            hurry: false,
            hold: false,
            watchdog_period: period,
        }
    }

    /// The new process of an upgrade: no notification until [`Lifecycle::take_over`], then the
    /// watchdog the old process had.
    pub fn inherit(&mut self, watchdog: Option<Duration>) {
        self.hold = true;
        self.watchdog_period = watchdog;
        self.watchdog = watchdog.map(|period| period / 2);
        self.next_watchdog = None;
    }

    /// The new process is the main pid now: notify, and ping the watchdog at once.
    pub fn take_over(&mut self, now: Instant) {
        self.hold = false;
        if let Some(every) = self.watchdog {
            info!("watchdog: pinging every {} ms", every.as_millis());
            self.next_watchdog = Some(now);
        }
    }

    /// The old process after an upgrade's handover: the new one is the main pid and alone
    /// talks to the service manager.
    pub fn release(&mut self) {
        self.notify = false;
        self.watchdog = None;
        self.next_watchdog = None;
    }

    /// The watchdog period in microseconds, for an upgrade's new process.
    pub fn watchdog_usec(&self) -> Option<u64> {
        self.watchdog_period
            .map(|p| u64::try_from(p.as_micros()).unwrap_or(u64::MAX))
    }

    /// Send states to the service manager, if there is one.
    pub fn notify(&self, states: &[NotifyState]) {
        if self.notify
            && !self.hold
            && let Err(e) = sd_notify::notify(states)
        {
            debug!("sd_notify failed: {e}");
        }
    }

    /// Whether the daemon still takes new work (not draining or closing).
    pub fn accepting(&self) -> bool {
        matches!(self.phase, Phase::Starting(_) | Phase::Ready)
    }

    /// The earliest time the lifecycle must act.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Starting(at) => Some(at.min(now + STARTUP_RECHECK)),
            Phase::Draining(at) | Phase::Closing(at) => Some(at),
            Phase::Ready => None,
        };
        let status = (self.notify && !self.hold).then_some(self.next_status);
        [phase, self.next_watchdog, status]
            .into_iter()
            .flatten()
            .min()
    }
}

/// The figures a status line is made of (the monitor's counters can feed the same function).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// "starting", "ready", "reloading", "draining", "stopping".
    pub state: &'static str,
    /// Logged-in client connections.
    pub clients: usize,
    /// Connections per configured handler type.
    pub handlers: Vec<(String, usize)>,
    /// Linked peers and configured peers.
    pub peers: (usize, usize),
    /// Requests in flight.
    pub in_flight: usize,
    /// A note for the operator.
    pub note: Option<String>,
}

/// The one-line status shown by `systemctl status` (and logged on SIGUSR1).
pub fn status_line(f: &Figures) -> String {
    let mut line = format!(
        "{}: {} client{}",
        f.state,
        f.clients,
        if f.clients == 1 { "" } else { "s" }
    );
    if f.handlers.is_empty() {
        line.push_str("; no handlers");
    } else {
        let up: Vec<String> = f.handlers.iter().map(|(k, n)| format!("{k} {n}")).collect();
        line.push_str(&format!("; handlers {}", up.join(", ")));
        let down: Vec<&str> = f
            .handlers
            .iter()
            .filter(|(_, n)| *n == 0)
            .map(|(k, _)| k.as_str())
            .collect();
        if !down.is_empty() {
            line.push_str(&format!(" (down: {})", down.join(", ")));
        }
    }
    if f.peers.1 > 0 {
        line.push_str(&format!("; peers {}/{} linked", f.peers.0, f.peers.1));
    }
    if f.in_flight > 0 {
        line.push_str(&format!("; {} in flight", f.in_flight));
    }
    if let Some(note) = &f.note {
        line.push_str("; ");
        line.push_str(note);
    }
    line
}

impl Server {
    /// The figures of the status line, now.
    pub fn figures(&self) -> Figures {
        let state = match self.life.phase {
            Phase::Starting(_) => "starting",
            Phase::Ready if self.reloads.in_progress() => "reloading",
            Phase::Ready => "ready",
            Phase::Draining(_) => "draining",
            Phase::Closing(_) => "stopping",
        };
        Figures {
            state,
            clients: self.router.client_count(),
            handlers: self.router.handler_counts().into_iter().collect(),
            peers: (self.router.peers_up().len(), self.router.peer_count()),
            in_flight: self.router.pending_total(),
            note: self.life.note.clone(),
        }
    }

    /// Send `STATUS=` now (e.g. after an admin command changed something).
    pub fn send_status(&mut self) {
        let line = status_line(&self.figures());
        self.life.notify(&[NotifyState::Status(&line)]);
        self.life.last_status = line;
    }

    /// Every loop iteration: readiness, the drain, the watchdog, the status line, and the
    /// periodic work of reload (retiring handlers) and revocation (user store changes).
    pub(super) fn lifecycle_tick(&mut self, now: Instant) {
        self.check_ready(now);
        self.drain_progress(now);
        if let Some(at) = self.life.next_watchdog
            && at <= now
        {
            self.life.notify(&[NotifyState::Watchdog]);
            let every = self.life.watchdog.expect("set with next_watchdog");
            self.life.next_watchdog = Some(now + every);
        }
        if self.life.notify && self.life.next_status <= now {
            self.life.next_status = now + STATUS_EVERY;
            let line = status_line(&self.figures());
            if line != self.life.last_status {
                self.life.notify(&[NotifyState::Status(&line)]);
                self.life.last_status = line;
            }
        }
        self.retire_tick(now);
        self.users_tick(now);
    }

    pub(super) fn signals(&mut self, now: Instant) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            match signal {
                SIGTERM | SIGINT if !self.life.accepting() => self.stop_now(now),
                SIGTERM | SIGINT => self.begin_drain(now),
                SIGCHLD => {
                    self.supervisor.tick(now);
                    self.update_starting();
                    self.upgrade_tick(now);
                }
                SIGHUP => {
                    self.reload(now);
                }
                SIGUSR1 => info!("status: {}", status_line(&self.figures())),
                SIGUSR2 => {
                    info!("upgrade requested by SIGUSR2");
                    if let Err(why) = self.upgrade_start(None, now) {
                        warn!("upgrade refused: {why}");
                    }
                }
                _ => {}
            }
        }
    }

    /// Once every started handler type has a connection (or the startup timeout passed): ready.
    fn check_ready(&mut self, now: Instant) {
        let Phase::Starting(deadline) = self.life.phase else {
            return;
        };
        let counts = self.router.handler_counts();
        let missing: Vec<String> = self
            .supervisor
            .kinds()
            .into_iter()
            .filter(|k| counts.get(k).copied().unwrap_or(0) == 0 && !self.dialer.socket_exists(k))
            .collect();
        if !missing.is_empty() && now < deadline {
            return;
        }
        self.life.phase = Phase::Ready;
        self.update_starting();
        if !missing.is_empty() {
            warn!(
                "handlers not connected after startup timeout: {}",
                missing.join(", ")
            );
            self.life.note = Some(format!(
                "not connected after the startup timeout: {}",
                missing.join(", ")
            ));
        }
        info!(
            "ready: server={} listening on {}",
            self.config.name,
            self.local_addr()
        );
        if self.upgrades.waiting_for_go() {
            // The new process of an upgrade: the old one hands over first.
            return self.upgrade_announce(&missing);
        }
        self.announce_ready(now);
    }

    /// READY=1 and the ready file.
    pub(super) fn announce_ready(&mut self, _now: Instant) {
        let line = status_line(&self.figures());
        self.life
            .notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
        self.life.last_status = line;
        if let Some(path) = &self.config.ready_file {
            // The main address first, then `name kind address` for each [[listeners]] entry.
            let text = format!("{}\n{}", self.local_addr(), self.listeners.ready_lines());
            // Through a fresh temp file with an unguessable name (never one someone planted or
            // linked elsewhere), renamed over the ready file.
            let written = crate::fsutil::replace_file(path, text.as_bytes(), 0o644);
            if let Err(e) = written {
                error!("cannot write ready file {}: {e}", path.display());
            }
        }
    }

    /// Start the drain (SIGTERM, or an admin's drain command): stop accepting, answer new
    /// messages `shutting_down`, let requests in flight be answered for up to
    /// `shutdown_grace_ms`, then close. Does nothing if a drain is already under way.
    pub fn begin_drain(&mut self, now: Instant) {
        if !self.life.accepting() {
            return;
        }
        // A stop during an upgrade stops the new process too: it must not take over.
        self.upgrade_abort(now, "the server is stopping");
        let grace = self.config.shutdown_grace;
        self.life.phase = Phase::Draining(now + grace);
        self.close_listener();
        let line = status_line(&self.figures());
        self.life
            .notify(&[NotifyState::Stopping, NotifyState::Status(&line)]);
        self.life.last_status = line;
        info!(
            "draining: {} requests in flight get up to {} ms to be answered; new messages get shutting_down",
            self.router.pending_total(),
            grace.as_millis()
        );
        self.drain_progress(now);
    }

    /// Stop at once (a second SIGTERM or SIGINT): everything in flight is answered
    /// `shutting_down`, connections are closed, handlers are stopped without waiting long.
    pub fn stop_now(&mut self, now: Instant) {
        if matches!(self.life.phase, Phase::Closing(_)) && self.life.hurry {
            return;
        }
        if self.life.accepting() {
            self.upgrade_abort(now, "the server is stopping");
            self.life.notify(&[NotifyState::Stopping]);
            self.close_listener();
        }
        info!("stopping now");
        self.life.hurry = true;
        self.close_everything(now, HURRY);
    }

    fn close_listener(&mut self) {
        self.listeners.close_all(self.poll.registry());
    }

    /// Draining: once nothing is in flight, or the grace is over, close.
    fn drain_progress(&mut self, now: Instant) {
        let Phase::Draining(until) = self.life.phase else {
            return;
        };
        let in_flight = self.router.pending_total();
        if in_flight > 0 && now < until {
            return;
        }
        if in_flight > 0 {
            warn!("drain: grace over with {in_flight} requests unanswered; they get shutting_down");
        } else {
            info!("drain: every request in flight is answered; closing connections");
        }
        self.close_everything(now, CLOSE_LINGER);
    }

    /// Fail what is left, and close clients and peer links once their queued frames are written.
    fn close_everything(&mut self, now: Instant, linger: Duration) {
        self.life.phase = Phase::Closing(now + linger);
        self.router
            .fail_all(ErrorCode::ShuttingDown, &mut self.actions);
        self.settle(now);
        let open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !matches!(c.role, Role::Handler { .. }))
            .map(|(_, c)| c.id)
            .collect();
        for id in open {
            self.finish(id, now, "server shutting down".into());
        }
    }

    /// Whether the loop may stop: closing, and every client and peer link closed, their input
    /// drained (or time up).
    pub(super) fn shutdown_done(&self, now: Instant) -> bool {
        let Phase::Closing(until) = self.life.phase else {
            return false;
        };
        now >= until
            || (self.linger.is_empty()
                && !self
                    .conns
                    .iter()
                    .any(|(_, c)| !matches!(c.role, Role::Handler { .. })))
    }

    /// After the loop: close what is left (handlers get EOF), wait for handlers to exit, then
    /// SIGTERM and SIGKILL the ones that do not; remove the sockets.
    pub(super) fn finish_shutdown(&mut self) {
        let left: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for id in left {
            self.close(id, "server stopped".into());
        }
        self.actions.clear();
        let (eof_wait, grace) = if self.life.hurry {
            (HURRY, HURRY)
        } else {
            (EOF_WAIT, HANDLER_GRACE)
        };
        if !self.supervisor.wait_exit(eof_wait) {
            debug!("handlers still running after EOF; sending SIGTERM");
        }
        self.supervisor.stop_all(grace);
        for (_, h) in &self.handler_listeners {
            if !h.shared {
                let _ = std::fs::remove_file(&h.path);
            }
        }
        self.upgrade_last_flush();
        if let Some(pid) = self.handed_over_to() {
            info!("upgrade: done; pid {pid} serves");
        }
        info!(
            "stopped; removing {} if besterd created it",
            self.runtime.path().display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_names_what_is_down_and_the_note() {
        let mut f = Figures {
            state: "ready",
            clients: 1,
            handlers: vec![("echo".into(), 2), ("upper".into(), 0)],
            peers: (1, 2),
            in_flight: 0,
            note: None,
        };
        assert_eq!(
            status_line(&f),
            "ready: 1 client; handlers echo 2, upper 0 (down: upper); peers 1/2 linked"
        );
        f.state = "draining";
        f.clients = 3;
        f.handlers.clear();
        f.peers = (0, 0);
        f.in_flight = 4;
        f.note = Some("reload failed: 1 problem".into());
        assert_eq!(
            status_line(&f),
            "draining: 3 clients; no handlers; 4 in flight; reload failed: 1 problem"
        );
    }
}
