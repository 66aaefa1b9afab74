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
                restarts: 0,
            });
        }
    }

    /// The payload types that have processes to start.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.processes.iter().map(|p| p.spec.kind.clone()).collect();
        kinds.dedup();
        kinds
    }

    /// Reap exited processes and start those whose restart time has come.
    pub fn tick(&mut self, now: Instant) {
        for p in &mut self.processes {
            p.reap(now);
            if p.child.is_none() && p.restart_at.is_some_and(|at| at <= now) {
                p.start(&self.server, now);
            }
        }
    }

    /// When the next restart is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.processes
            .iter()
            .filter(|p| p.child.is_none())
            .filter_map(|p| p.restart_at)
            .min()
    }

    /// `(processes configured, restarts so far)` of a type's started processes.
    pub fn figures(&self, kind: &str) -> (usize, u64) {
        self.processes
            .iter()
            .filter(|p| p.spec.kind == kind)
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
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
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
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
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
