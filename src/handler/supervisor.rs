//! The supervisor: starts each configured handler process, notices when one exits (reaped with
//! `try_wait`, never a blocking wait on the loop), and restarts it with exponential backoff. A handler
//! that keeps crashing is reported in the log at every failure and retried no faster than the backoff
//! allows. Requests in flight to a dead handler are failed by the router when its socket closes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use log::{error, info, warn};

/// First restart delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A process that ran this long is considered healthy: its failure count starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Consecutive quick failures after which the log calls the handler crash-looping.
const CRASH_LOOP: u32 = 5;

/// Environment variables of the daemon that must not leak into handlers.
const STRIPPED_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// How to start one handler process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The payload type it serves.
    pub kind: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// The socket it connects to.
    pub socket: PathBuf,
}

#[derive(Debug)]
struct Process {
    spec: ProcessSpec,
    index: usize,
    child: Option<Child>,
    started: Option<Instant>,
    failures: u32,
    restart_at: Option<Instant>,
    /// Replaced or removed by a reload: never restarted, stopped at `retire` time if still running.
    old: bool,
    /// When to send SIGTERM, then when to send SIGKILL, to an old process that has not exited.
    retire: Option<(Instant, Instant)>,
    /// Starts after the first one.
    restarts: u64,
}

/// Every handler process besterd starts.
#[derive(Debug, Default)]
pub struct Supervisor {
    processes: Vec<Process>,
    server: String,
}

impl Supervisor {
    /// A supervisor for the server named `server` (passed to handlers as `BESTER_SERVER`).
    pub fn new(server: &str) -> Self {
        Supervisor {
            processes: Vec::new(),
            server: server.to_string(),
        }
    }

    /// Add `count` processes of a spec; they start at the next [`Supervisor::tick`].
    pub fn add(&mut self, spec: ProcessSpec, count: usize, now: Instant) {
        for index in 0..count {
            self.processes.push(Process {
                spec: spec.clone(),
                index,
                child: None,
                started: None,
                failures: 0,
                restart_at: Some(now),
                old: false,
                retire: None,
                restarts: 0,
            });
        }
    }

    /// The payload types that have (current) processes to start.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .processes
            .iter()
            .filter(|p| !p.old)
            .map(|p| p.spec.kind.clone())
            .collect();
        kinds.dedup();
        kinds
    }

    /// Reload: the processes of `kind` become old (they keep running and serving, but are never
    /// restarted) and `count` new ones of `spec` are added. The caller retires the old ones once
    /// new ones serve ([`Supervisor::retire_pid`], [`Supervisor::retire_kind`]).
    pub fn replace(&mut self, spec: ProcessSpec, count: usize, now: Instant) {
        self.mark_old(&spec.kind);
        self.add(spec, count, now);
    }

    /// The processes of `kind` become old: they keep running and serving, but are never restarted.
    pub fn mark_old(&mut self, kind: &str) {
        for p in self.processes.iter_mut().filter(|p| p.spec.kind == kind) {
            p.old = true;
            p.restart_at = None;
        }
    }

    /// Reload removed `kind`, or its replacement serves: every old process of it is stopped with
    /// SIGTERM at `term_at` if it has not exited by then (it normally exits on the EOF it gets
    /// when the broker closes its connection), and SIGKILL at `kill_at`.
    pub fn retire_kind(&mut self, kind: &str, term_at: Instant, kill_at: Instant, only_old: bool) {
        for p in self.processes.iter_mut().filter(|p| p.spec.kind == kind) {
            if only_old && !p.old {
                continue;
            }
            p.old = true;
            p.restart_at = None;
            p.retire.get_or_insert((term_at, kill_at));
        }
    }

    /// Stop one old process like [`Supervisor::retire_kind`].
    pub fn retire_pid(&mut self, pid: u32, term_at: Instant, kill_at: Instant) {
        for p in &mut self.processes {
            if p.child.as_ref().is_some_and(|c| c.id() == pid) {
                p.old = true;
                p.restart_at = None;
                p.retire.get_or_insert((term_at, kill_at));
            }
        }
    }

    /// Whether `pid` is one of this supervisor's processes replaced by a reload.
    pub fn is_old(&self, pid: u32) -> bool {
        self.processes
            .iter()
            .any(|p| p.old && p.child.as_ref().is_some_and(|c| c.id() == pid))
    }

    /// How many current (not old) processes `kind` should have.
    pub fn current_count(&self, kind: &str) -> usize {
        self.processes
            .iter()
            .filter(|p| !p.old && p.spec.kind == kind)
            .count()
    }

    /// Whether a process of `kind` is on its way: started or to be restarted, and not failing
    /// over and over (fewer than [`CRASH_LOOP`] quick failures in a row). Requests for a type
    /// that is on its way wait for it rather than being refused.
    pub fn coming(&self, kind: &str) -> bool {
        self.processes
            .iter()
            .any(|p| !p.old && p.spec.kind == kind && p.failures < CRASH_LOOP)
    }

    /// Reap exited processes, start those whose restart time has come, and stop retired ones
    /// that outstay their time.
    pub fn tick(&mut self, now: Instant) {
        for p in &mut self.processes {
            p.reap(now);
            if p.child.is_none() && p.restart_at.is_some_and(|at| at <= now) {
                p.start(&self.server, now);
            }
            if let (Some(child), Some((term_at, kill_at))) = (&mut p.child, p.retire) {
                if now >= kill_at {
                    warn!(
                        "handler={} process {} outstayed its retirement; killing it",
                        p.spec.kind,
                        child.id()
                    );
                    let _ = child.kill();
                    p.retire = None;
                } else if now >= term_at {
                    info!(
                        "handler={} process {} retired; sending SIGTERM",
                        p.spec.kind,
                        child.id()
                    );
                    signal(child, libc::SIGTERM);
                    p.retire = Some((kill_at, kill_at));
                }
            }
        }
        // Old processes that exited are gone for good.
        self.processes.retain(|p| !(p.old && p.child.is_none()));
    }

    /// When the next restart or retirement step is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let restarts = self
            .processes
            .iter()
            .filter(|p| p.child.is_none())
            .filter_map(|p| p.restart_at);
        let retirements = self
            .processes
            .iter()
            .filter(|p| p.child.is_some())
            .filter_map(|p| p.retire.map(|(term_at, _)| term_at));
        restarts.chain(retirements).min()
    }

    /// Wait up to `timeout` for every process to exit by itself (after the broker closed their
    /// connections they get EOF); true if none is left running. Only called once the loop has
    /// stopped serving.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        for p in &mut self.processes {
            p.restart_at = None;
        }
        self.wait_all(timeout)
    }

    /// Reap every process that has exited, polling up to `timeout`; true if none is left running.
    /// Blocks: only for shutdown, once the loop has stopped serving.
    fn wait_all(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let mut running = false;
            for p in &mut self.processes {
                if let Some(child) = &mut p.child {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => p.child = None,
                        Ok(None) => running = true,
                    }
                }
            }
            if !running {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `(processes configured, restarts so far)` of a type's started processes.
    pub fn figures(&self, kind: &str) -> (usize, u64) {
        self.processes
            .iter()
            .filter(|p| p.spec.kind == kind && !p.old)
            .fold((0, 0), |(n, r), p| (n + 1, r + p.restarts))
    }

    /// Process ids currently running, by type (for status and tests).
    pub fn pids(&self) -> BTreeMap<String, Vec<u32>> {
        let mut pids: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for p in &self.processes {
            if let Some(child) = &p.child {
                pids.entry(p.spec.kind.clone())
                    .or_default()
                    .push(child.id());
            }
        }
        pids
    }

    /// Stop every process: SIGTERM, up to `grace` to exit, then SIGKILL. Blocks for at most `grace`;
    /// only called once the loop has stopped serving.
    pub fn stop_all(&mut self, grace: Duration) {
        for p in &mut self.processes {
            p.restart_at = None;
            if let Some(child) = &p.child {
                signal(child, libc::SIGTERM);
            }
        }
        if self.wait_all(grace) {
            return;
        }
        for p in &mut self.processes {
            if let Some(mut child) = p.child.take() {
                warn!(
                    "handler={} process {} did not exit on SIGTERM; killing it",
                    p.spec.kind,
                    child.id()
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) with a pid we spawned and have not reaped yet; no memory is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl Process {
    fn name(&self) -> String {
        format!("handler={}#{}", self.spec.kind, self.index)
    }

    fn reap(&mut self, now: Instant) {
        let Some(child) = &mut self.child else {
            return;
        };
        let status = match child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => return,
            Err(e) => {
                error!("{} cannot be waited for: {e}", self.name());
                return;
            }
        };
        let ran = self
            .started
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        self.child = None;
        if self.old {
            info!("{} (replaced) exited ({status})", self.name());
            return;
        }
        if ran >= HEALTHY_AFTER {
            self.failures = 0;
        }
        self.schedule_restart(
            now,
            &format!("exited ({status}) after {} ms", ran.as_millis()),
        );
    }

    fn schedule_restart(&mut self, now: Instant, what: &str) {
        self.failures += 1;
        let delay = backoff(self.failures);
        self.restart_at = Some(now + delay);
        if self.failures >= CRASH_LOOP {
            error!(
                "{} {what}; it keeps failing ({} times in a row), next try in {} ms",
                self.name(),
                self.failures,
                delay.as_millis()
            );
        } else {
            warn!(
                "{} {what}; restarting in {} ms",
                self.name(),
                delay.as_millis()
            );
        }
    }

    fn start(&mut self, server: &str, now: Instant) {
        let spec = &self.spec;
        let mut cmd = Command::new(&spec.argv[0]);
        cmd.args(&spec.argv[1..])
            .envs(&spec.env)
            .env("BESTER_SOCKET", &spec.socket)
            .env("BESTER_TYPE", &spec.kind)
            .env("BESTER_SERVER", server)
            .stdin(Stdio::null());
        for var in STRIPPED_ENV {
            cmd.env_remove(var);
        }
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        match cmd.spawn() {
            Ok(child) => {
                info!(
                    "{} started: pid {} ({})",
                    self.name(),
                    child.id(),
                    spec.argv.join(" ")
                );
                self.child = Some(child);
                if self.started.is_some() {
                    self.restarts += 1;
                }
                self.started = Some(now);
                self.restart_at = None;
            }
            Err(e) => {
                let what = format!("could not be started ({}: {e})", spec.argv[0]);
                self.schedule_restart(now, &what);
            }
        }
    }
}

/// Delay before restart number `failures` (1-based): 100 ms doubling up to 30 s.
pub(crate) fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    (BACKOFF_MIN * factor).min(BACKOFF_MAX)
}

/// Whether `path` fits in a Unix socket address (108 bytes with the terminating NUL on Linux).
pub fn socket_path_fits(path: &Path) -> bool {
    path.as_os_str().len() < 108
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(20), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    fn spec(argv: &[&str]) -> ProcessSpec {
        ProcessSpec {
            kind: "t".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            cwd: None,
            socket: PathBuf::from("/nonexistent.sock"),
        }
    }

    #[test]
    fn a_crashing_process_is_restarted_with_backoff() {
        let mut sup = Supervisor::new("s");
        let start = Instant::now();
        sup.add(spec(&["sh", "-c", "exit 3"]), 1, start);
        sup.tick(start);
        assert_eq!(sup.pids()["t"].len(), 1);
        // Wait (bounded) for the process to exit and be reaped.
        let deadline = Instant::now() + Duration::from_secs(10);
        while sup.next_deadline().is_none() {
            assert!(Instant::now() < deadline, "process never exited");
            std::thread::sleep(Duration::from_millis(10));
            sup.tick(start);
        }
        assert_eq!(sup.next_deadline(), Some(start + BACKOFF_MIN));
        assert!(sup.pids().is_empty());
        // Not restarted before its time, restarted at it.
        sup.tick(start);
        assert!(sup.pids().is_empty());
        sup.tick(start + BACKOFF_MIN);
        assert_eq!(sup.pids()["t"].len(), 1);
        sup.stop_all(Duration::from_secs(5));
        assert!(sup.pids().is_empty());
    }

    #[test]
    fn a_program_that_cannot_start_backs_off() {
        let mut sup = Supervisor::new("s");
        let start = Instant::now();
        sup.add(spec(&["/nonexistent/handler"]), 1, start);
        sup.tick(start);
        assert_eq!(sup.next_deadline(), Some(start + BACKOFF_MIN));
        sup.tick(start + BACKOFF_MIN);
        assert_eq!(sup.next_deadline(), Some(start + BACKOFF_MIN + backoff(2)));
    }

    #[test]
    fn stop_all_terminates_a_running_handler() {
        let mut sup = Supervisor::new("s");
        let start = Instant::now();
        sup.add(spec(&["sleep", "30"]), 2, start);
        sup.tick(start);
        assert_eq!(sup.pids()["t"].len(), 2);
        sup.stop_all(Duration::from_secs(5));
        assert!(sup.pids().is_empty());
        assert_eq!(
            sup.next_deadline(),
            None,
            "a stopped handler is not restarted"
        );
    }
}
