//! Accepting when file descriptors run out, one piece of code for every listener (client, handler,
//! monitoring and control sockets).
//!
//! mio is edge-triggered: a listener whose `accept()` fails with `EMFILE` (or `ENFILE`,
//! `ENOBUFS`, `ENOMEM`) and is simply left alone gets no new edge while its queue stays full, so
//! it would stop accepting for good. [`AcceptGuard::accept`] records such a listener as stalled
//! and the caller arms a retry on the loop's timer heap ([`AcceptGuard::retry_at`], backing off
//! from [`FIRST_RETRY`] to [`MAX_RETRY`]). Meanwhile [`AcceptGuard::shed`] uses the spare
//! descriptor it keeps open (`/dev/null`, as nginx and libuv do): it closes the spare, accepts a
//! pending connection and closes it at once, until the queue is empty, then takes the spare
//! again. The queue drains and the clients see a close instead of hanging.
//!
//! A stalled listener recovers once an accept succeeds, or once the queue is empty and a
//! descriptor can be had (probed by duplicating the spare). [`AcceptGuard::problems`] says which
//! listeners cannot accept, for `/healthz`.
//!
//! [`raise_fd_limit`] raises the soft `RLIMIT_NOFILE` to the hard limit at start.
//!
//! Nothing here blocks: it only calls `accept`, `open("/dev/null")`, `fcntl` and `close`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use log::{info, warn};

/// First retry after a listener ran out of descriptors.
pub const FIRST_RETRY: Duration = Duration::from_millis(10);
/// Retries back off (doubling) up to this.
pub const MAX_RETRY: Duration = Duration::from_secs(1);
/// Connections accepted and closed per [`AcceptGuard::shed`] call.
const MAX_SHED: usize = 1024;

/// A listening socket mio can accept from.
pub trait Accept {
    /// What an accept gives.
    type Stream;
    /// The peer's address.
    type Addr;
    /// One non-blocking accept.
    fn accept_one(&self) -> io::Result<(Self::Stream, Self::Addr)>;
}

impl Accept for mio::net::TcpListener {
    type Stream = mio::net::TcpStream;
    type Addr = std::net::SocketAddr;
    fn accept_one(&self) -> io::Result<(Self::Stream, Self::Addr)> {
        self.accept()
    }
}

impl Accept for mio::net::UnixListener {
    type Stream = mio::net::UnixStream;
    type Addr = std::os::unix::net::SocketAddr;
    fn accept_one(&self) -> io::Result<(Self::Stream, Self::Addr)> {
        self.accept()
    }
}

/// Whether an accept error means the process or the system is out of descriptors or memory: the
/// pending connection stays queued and the listener must be retried later, not dropped.
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Whether an accept error concerns only the connection being accepted (it went away before it
/// was accepted): the next one may be accepted at once.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) || matches!(e.raw_os_error(), Some(libc::EPROTO | libc::EPERM))
}

/// What one [`AcceptGuard::accept`] call gives.
#[derive(Debug)]
pub enum Accepted<S, A> {
    /// A new connection.
    Conn(S, A),
    /// The queue is empty.
    Empty,
    /// The listener cannot accept now (out of descriptors or another lasting error): shed what
    /// is queued if wanted, and arm the retry from [`AcceptGuard::retry_at`].
    Stalled,
}

/// A listener that cannot accept.
#[derive(Debug, Clone)]
struct Stall {
    name: String,
    reason: String,
    since: Instant,
    delay: Duration,
    /// A retry is on the timer heap.
    armed: bool,
    shed: u64,
}

/// The spare descriptor and the listeners that cannot accept, keyed by their poll token.
#[derive(Debug)]
pub struct AcceptGuard {
    spare: Option<File>,
    /// The spare was lent out (to serve one monitoring connection while out of descriptors).
    lent: bool,
    stalled: BTreeMap<usize, Stall>,
}

fn open_spare() -> Option<File> {
    // std opens with O_CLOEXEC.
    File::open("/dev/null").ok()
}

impl Default for AcceptGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl AcceptGuard {
    /// Open the spare descriptor.
    pub fn new() -> AcceptGuard {
        let spare = open_spare();
        if spare.is_none() {
            warn!(
                "cannot open /dev/null as a spare descriptor; accepting when out of descriptors cannot shed"
            );
        }
        AcceptGuard {
            spare,
            lent: false,
            stalled: BTreeMap::new(),
        }
    }

    /// Accept one connection from `listener` (poll token `key`, called `name` in logs and
    /// `/healthz`). Retries `EINTR` and per-connection errors; a lasting error stalls the listener.
    pub fn accept<L: Accept>(
        &mut self,
        key: usize,
        name: &str,
        listener: &L,
        now: Instant,
    ) -> Accepted<L::Stream, L::Addr> {
        for _ in 0..MAX_SHED {
            match listener.accept_one() {
                Ok((stream, addr)) => {
                    self.recovered(key);
                    return Accepted::Conn(stream, addr);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.stalled.contains_key(&key) && self.descriptor_free() {
                        self.recovered(key);
                    }
                    return if self.stalled.contains_key(&key) {
                        Accepted::Stalled
                    } else {
                        Accepted::Empty
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    self.stall(key, name, &e, now);
                    return Accepted::Stalled;
                }
            }
        }
        // Only per-connection errors for a long while: treat as a stall rather than spin.
        self.stall(key, name, &io::Error::other("accept keeps failing"), now);
        Accepted::Stalled
    }

    fn stall(&mut self, key: usize, name: &str, e: &io::Error, now: Instant) {
        let reason = if is_exhaustion(e) {
            format!("out of file descriptors or memory ({e})")
        } else {
            e.to_string()
        };
        match self.stalled.get_mut(&key) {
            Some(stall) => stall.reason = reason,
            None => {
                warn!("{name}: accept failed: {reason}; retrying with backoff");
                self.stalled.insert(
                    key,
                    Stall {
                        name: name.to_string(),
                        reason,
                        since: now,
                        delay: FIRST_RETRY,
                        armed: false,
                        shed: 0,
                    },
                );
            }
        }
    }

    fn recovered(&mut self, key: usize) {
        if let Some(stall) = self.stalled.remove(&key) {
            info!(
                "{}: accepting again ({} queued connection(s) were closed meanwhile)",
                stall.name, stall.shed
            );
        }
        if self.spare.is_none() && !self.lent {
            self.spare = open_spare();
        }
    }

    /// Whether a descriptor can be had now (the spare is held and can be duplicated).
    fn descriptor_free(&mut self) -> bool {
        if self.spare.is_none() && !self.lent {
            self.spare = open_spare();
        }
        let Some(spare) = &self.spare else {
            return false;
        };
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own; the copy is closed right away.
        let copy = unsafe { libc::fcntl(spare.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if copy < 0 {
            return false;
        }
        // SAFETY: `copy` is a descriptor this call just created and nothing else holds.
        unsafe { libc::close(copy) };
        true
    }

    /// When the timer should retry a stalled listener, if it is stalled and no retry is armed
    /// yet; the delay doubles each time up to [`MAX_RETRY`].
    pub fn retry_at(&mut self, key: usize, now: Instant) -> Option<Instant> {
        let stall = self.stalled.get_mut(&key)?;
        if stall.armed {
            return None;
        }
        stall.armed = true;
        let at = now + stall.delay;
        stall.delay = (stall.delay * 2).min(MAX_RETRY);
        Some(at)
    }

    /// The retry timer of `key` fired.
    pub fn retry_fired(&mut self, key: usize) {
        if let Some(stall) = self.stalled.get_mut(&key) {
            stall.armed = false;
        }
    }

    /// Close the spare, accept what is queued on `listener` and hand each connection to `close`
    /// (which may write a last word, best effort, and drops it), then take the spare again.
    /// Returns how many were closed.
    pub fn shed<L: Accept>(
        &mut self,
        key: usize,
        listener: &L,
        mut close: impl FnMut(L::Stream, L::Addr),
    ) -> usize {
        if self.spare.take().is_none() {
            return 0;
        }
        let mut closed = 0;
        while closed < MAX_SHED {
            match listener.accept_one() {
                Ok((stream, addr)) => {
                    closed += 1;
                    close(stream, addr);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted || is_per_connection(&e) => {}
                Err(_) => break,
            }
        }
        self.spare = open_spare();
        if let Some(stall) = self.stalled.get_mut(&key) {
            stall.shed += closed as u64;
        }
        closed
    }

    /// Give up the spare so that one connection (a monitoring request, which says whether the
    /// broker is healthy) can be accepted and served while out of descriptors; call
    /// [`AcceptGuard::give_back`] when that connection is closed. False if there is no spare.
    pub fn lend_spare(&mut self) -> bool {
        if self.lent || self.spare.take().is_none() {
            return false;
        }
        self.lent = true;
        true
    }

    /// The connection that used the spare is closed: take a spare again.
    pub fn give_back(&mut self) {
        self.lent = false;
        if self.spare.is_none() {
            self.spare = open_spare();
        }
    }

    /// Whether any listener is stalled.
    pub fn any_stalled(&self) -> bool {
        !self.stalled.is_empty()
    }

    /// Why listeners cannot accept, one line each (for `/healthz`); empty when all can.
    pub fn problems(&self, now: Instant) -> Vec<String> {
        self.stalled
            .values()
            .map(|s| {
                format!(
                    "{} cannot accept for {} ms: {}",
                    s.name,
                    now.saturating_duration_since(s.since).as_millis(),
                    s.reason
                )
            })
            .collect()
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; the soft limit now in force.
pub fn raise_fd_limit() -> io::Result<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            info!(
                "file descriptor limit raised from {} to {}",
                limit.rlim_cur, limit.rlim_max
            );
            return Ok(limit.rlim_max);
        }
        warn!(
            "cannot raise the file descriptor limit from {} to {}: {}",
            limit.rlim_cur,
            limit.rlim_max,
            io::Error::last_os_error()
        );
    }
    Ok(limit.rlim_cur)
}

/// Connections the kernel queues for a listener before besterd accepts them (the kernel caps it at
/// `net.core.somaxconn`). The standard library's 128 overflows in a reconnect storm: a client whose
/// SYN finds the queue full is dropped and tries again only after the one-second retransmission
/// timeout, so 10,000 clients coming back at once took over ten seconds to connect while the loop
/// sat idle (measured with `scripts/bench.sh storm`).
pub const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking TCP listener on `addr` with a queue of [`LISTEN_BACKLOG`].
pub fn bind_tcp(addr: std::net::SocketAddr) -> io::Result<mio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    // SAFETY: listen(2) on a socket this function owns; calling it again on a listening socket
    // only changes its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    listener.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_queues_a_storm_of_connections_before_it_accepts() {
        // 600 clients connect while nobody accepts: each handshake completes in the kernel's
        // queue. With the standard library's backlog of 128 the 130th SYN would be dropped and
        // its connect would wait for the one-second retransmission.
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for i in 0..600 {
            let client = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                .unwrap_or_else(|e| panic!("connect {i}: {e}"));
            clients.push(client);
        }
    }
    use std::net::TcpStream;

    fn err(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn exhaustion_errors() {
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(is_exhaustion(&err(code)), "{code}");
        }
        assert!(!is_exhaustion(&err(libc::EAGAIN)));
        assert!(!is_exhaustion(&err(libc::ECONNABORTED)));
        assert!(is_per_connection(&err(libc::ECONNABORTED)));
    }

    /// A listener whose accept fails with a chosen error.
    struct Failing(i32);
    impl Accept for Failing {
        type Stream = ();
        type Addr = ();
        fn accept_one(&self) -> io::Result<((), ())> {
            Err(err(self.0))
        }
    }

    #[test]
    fn a_stall_backs_off_and_is_reported() {
        let mut g = AcceptGuard::new();
        let t0 = Instant::now();
        assert!(matches!(
            g.accept(7, "listener x", &Failing(libc::EMFILE), t0),
            Accepted::Stalled
        ));
        assert_eq!(g.retry_at(7, t0), Some(t0 + FIRST_RETRY));
        assert_eq!(g.retry_at(7, t0), None, "one retry armed at a time");
        g.retry_fired(7);
        assert_eq!(g.retry_at(7, t0), Some(t0 + FIRST_RETRY * 2));
        for _ in 0..20 {
            g.retry_fired(7);
            g.retry_at(7, t0);
        }
        g.retry_fired(7);
        assert_eq!(g.retry_at(7, t0), Some(t0 + MAX_RETRY));
        let problems = g.problems(t0 + Duration::from_millis(5));
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("listener x cannot accept for 5 ms: out of file descriptors"),
            "{problems:?}"
        );
        // The queue is empty and a descriptor is free: recovered.
        assert!(matches!(
            g.accept(7, "listener x", &Failing(libc::EAGAIN), t0),
            Accepted::Empty
        ));
        assert!(!g.any_stalled());
        assert_eq!(g.retry_at(7, t0), None);
    }

    #[test]
    fn shedding_closes_what_is_queued() {
        let listener = mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut g = AcceptGuard::new();
        let mut closed = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while closed < 3 && Instant::now() < deadline {
            closed += g.shed(1, &listener, |_, _| {});
        }
        assert_eq!(closed, 3);
        for mut c in clients {
            use std::io::Read;
            let mut buf = [0u8; 1];
            assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "closed, not left hanging");
        }
        assert!(g.spare.is_some(), "the spare is taken again");
        assert!(g.lend_spare());
        assert!(!g.lend_spare(), "lent once at a time");
        g.give_back();
        assert!(g.spare.is_some());
    }
}
