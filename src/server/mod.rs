//! The server: one mio `Poll` for the TCP listener, the handler sockets, every connection, the auth
//! workers' waker and signals. The loop only dispatches: each event goes to a small method that reads
//! frames, hands them to `client.rs`/`handlers.rs`, and queues [`Action`]s; at the end of each
//! iteration actions are applied, connections marked for closing are closed, and queued output is
//! flushed. Edge-triggered: reads and accepts drain until `WouldBlock`, capped per event, with the
//! rest picked up in the next iteration without waiting.

pub mod activation;
mod admin;
mod attach;
mod auth_tag;
mod bind;
mod cert_login;
mod client;
mod conn;
mod delivery;
mod dial;
mod digest;
mod directory;
mod handler_login;
mod handlers;
pub mod handover;
mod key_login;
mod lifecycle;
pub mod limits;
mod listeners;
mod monitor;
mod negotiate;
mod noise;
mod peers;
mod presence;
mod procstat;
mod prometheus;
mod redirect;
mod relay;
mod reload;
mod report;
mod revoke;
mod streams;
pub mod token;
mod token_login;
mod upgrade;
mod violations;

pub use lifecycle::{Figures, status_line};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::UnixListener;
use mio::{Events, Interest, Poll, Waker};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::auth::worker::AuthPool;
use crate::config::Config;
use crate::handler::{Dialer, RuntimeDir, Supervisor};
use crate::net::accept::AcceptGuard;
use crate::net::linger::Linger;
use crate::net::{Framed, ReadResult, Transport};
use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::router::{Action, Router, RouterConfig};
use crate::stats::ServerStats;

use crate::router::ConnId;
use auth_tag::AuthTag;
use conn::{ClientState, Conn, Role};
use lifecycle::Lifecycle;
use limits::{LoginLimiter, Source};
use listeners::Listeners;
use peers::PeerSlot;
use reload::Reloads;
use revoke::Sessions;
use token::{ADMIN_LISTENER, CONN_BASE, MONITOR_CONN_BASE};
use token::{LINGER_BASE, MONITOR_LISTENER, SIGNALS, UPGRADE, WAKER};

/// Reads per readiness event before yielding to other connections.
const MAX_READS_PER_EVENT: usize = 16;
/// Accepts per readiness event before yielding.
const MAX_ACCEPTS_PER_EVENT: usize = 256;
/// Size of the loop's shared read buffer.
const SCRATCH_SIZE: usize = 64 * 1024;
/// How long a closing connection may take to flush its last frames.
const LINGER: Duration = Duration::from_secs(2);

/// A deadline the loop must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Close the connection if it has not identified.
    Identify(ConnId),
    /// Close the connection even if its last frames are not flushed.
    Linger(ConnId),
    /// Close the connection if nothing arrived for the idle timeout.
    Idle(ConnId),
    /// Close a peer connection that has not finished its handshake.
    Handshake(ConnId),
    /// End a token session whose token expired, unless it was refreshed.
    Expire(ConnId),
    /// Try accepting again on a listener (by poll token) that could not accept.
    Accept(mio::Token),
    /// Dial a busy `connect` handler again (`server/dial.rs`).
    Redial(usize),
    /// Close a connection from a trusted proxy that has not sent its PROXY header.
    ProxyHeader {
        /// Its slot among the connections awaiting a header.
        slot: usize,
        /// Which connection held the slot.
        generation: u64,
    },
}

struct HandlerListener {
    kind: String,
    listener: UnixListener,
    path: PathBuf,
    /// Connections refused because of the peer's user id (`server/handlers.rs`).
    refused: u64,
    /// Inherited from the old process of an upgrade and not taken over yet: not accepted on,
    /// and never unlinked (the path is the old process's until the handover).
    shared: bool,
}

/// A bound, running-to-be broker.
pub struct Server {
    config: Config,
    poll: Poll,
    listeners: Listeners,
    signals: Signals,
    conns: Slab<Conn>,
    generation: u64,
    router: Router,
    auth: AuthPool<AuthTag>,
    logins: LoginLimiter,
    per_ip: HashMap<Source, usize>,
    peers: BTreeMap<String, PeerSlot>,
    supervisor: Supervisor,
    handler_listeners: Slab<HandlerListener>,
    dialer: Dialer,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// Dials of busy `connect` handlers waiting to be tried again.
    redials: dial::Redials,
    actions: Vec<Action>,
    to_close: Vec<(ConnId, String)>,
    /// Redirects to carry out once the actions before them are applied (`redirect.rs`).
    redirects: std::collections::VecDeque<redirect::Redirect>,
    /// Redirects of clients with a built-in running, until it is answered.
    redirects_waiting: Vec<redirect::Redirect>,
    dirty: Vec<ConnId>,
    more_input: Vec<ConnId>,
    accept_again: bool,
    /// The spare descriptor and the listeners that cannot accept (`net/accept.rs`).
    accept: AcceptGuard,
    scratch: Box<[u8]>,
    life: Lifecycle,
    reloads: Reloads,
    sessions: Sessions,
    tokens: token_login::Tokens,
    /// The users gateway connections have attached (`attach.rs`).
    attached: attach::Attachments,
    /// The frame being handled, reused from frame to frame (see `handle_buffered_frames`).
    frame: Vec<u8>,
    stats: ServerStats,
    started: Instant,
    monitor: Option<monitor::Monitor>,
    admin: Option<admin::Admin>,
    /// The delivery store, when `[delivery]` keeps one.
    delivery: Option<delivery::Delivery>,
    /// Closed connections draining their input before the socket closes (`net/linger.rs`).
    linger: Linger,
    /// The rate limit on log lines unauthenticated peers can cause (`noise.rs`).
    noise: noise::Noise,
    /// Hot upgrades, as the old or the new process (`upgrade.rs`).
    upgrades: upgrade::Upgrades,
    // Dropped last: removes the sockets' directory.
    runtime: RuntimeDir,
}

impl Server {
    /// How this process was started, for a hot upgrade (`ctl upgrade`, SIGUSR2) to start the
    /// same command line again.
    pub fn set_invocation(&mut self, invocation: handover::Invocation) {
        self.upgrades.invocation = Some(invocation);
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners.main_addr()
    }

    /// Read the TLS certificates, keys and static files of every listener again (SIGHUP); new
    /// connections use them, open ones keep theirs. A listener whose files fail keeps the old ones.
    pub fn reload_listeners(&mut self) {
        for problem in self.listeners.reload() {
            error!("reload: {problem}");
        }
        self.recheck_client_certificates();
    }

    /// Serve until SIGTERM or SIGINT, then shut down cleanly.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    WAKER => {
                        self.delivery_results();
                        self.auth_results(now);
                        self.reload_results(now);
                    }
                    SIGNALS => self.signals(now),
                    UPGRADE => self.upgrade_ready(now),
                    t @ (MONITOR_LISTENER | ADMIN_LISTENER) => self.accept_ready(t, now),
                    t if self.linger.owns(t) => {
                        self.linger
                            .ready(self.poll.registry(), t, &mut self.scratch)
                    }
                    mio::Token(t) if t >= CONN_BASE => {
                        let slot = t - CONN_BASE;
                        let Some(id) = self.conns.get(slot).map(|c| c.id) else {
                            continue;
                        };
                        if self.connecting(id) {
                            self.peer_connecting(id);
                        }
                        if (event.is_read_closed() || event.is_error())
                            && let Some(conn) = self.conn(id)
                        {
                            conn.hangup_seen = true;
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.readable(id, now);
                        }
                        if event.is_writable() {
                            self.dirty.push(id);
                        }
                    }
                    mio::Token(t) if t >= MONITOR_CONN_BASE => self.control_ready(t, now),
                    t => self.accept_ready(t, now),
                }
                // Apply what this event routed before the next event is looked at: a later
                // event may decide from the router's state (e.g. that a half-closed client has
                // nothing pending) and must find the answers already queued.
                self.settle(now);
            }
            if std::mem::take(&mut self.accept_again) {
                self.accept_all(now);
            }
            let mut more = std::mem::take(&mut self.more_input);
            for id in more.drain(..) {
                self.readable(id, now);
                self.settle(now);
            }
            keep_capacity(&mut self.more_input, more);
            self.fire_timers(now);
            self.control_timers(now);
            // Exits are reaped on SIGCHLD (see signals()); here only restarts that are due.
            if self.supervisor.next_deadline().is_some_and(|at| at <= now) {
                self.supervisor.tick(now);
                self.update_starting();
            }
            // (The new process of an upgrade links to peers once it serves.)
            if self.life.accepting() && !self.upgrades.waiting_for_go() {
                self.dial_peers(now);
            }
            self.upgrade_tick(now);
            self.lifecycle_tick(now);
            self.router.directory_flush(now, &mut self.actions);
            self.settle(now);
            // A flush may finish a lingering close, whose actions queue more output (a stream's
            // other end, a peer's directory): written before the loop waits again.
            loop {
                self.flush_dirty();
                self.settle(now);
                if self.dirty.is_empty() {
                    break;
                }
            }
            self.delivery_flush();
            if self.shutdown_done(now) {
                break;
            }
        }
        self.finish_shutdown();
        Ok(())
    }

    fn poll_timeout(&mut self, now: Instant) -> Option<Duration> {
        if self.accept_again || !self.more_input.is_empty() || !self.to_close.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut next = self.router.next_deadline();
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        };
        consider(self.timers.peek().map(|Reverse((at, _))| *at));
        consider(self.supervisor.next_deadline());
        consider(self.next_dial());
        consider(self.life.next_deadline(now));
        consider(self.sessions.next_deadline());
        consider(self.control_deadline());
        consider(self.linger.next_deadline());
        consider(self.upgrades.next_deadline());
        consider(self.router.directory_next_due());
        next.map(|at| at.saturating_duration_since(now))
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Whether this is an outgoing peer connection still being established.
    fn connecting(&self, id: ConnId) -> bool {
        self.conns.get(id.slot).is_some_and(|c| {
            c.id == id && matches!(&c.role, Role::Peer(p) if p.state == conn::PeerState::Connecting)
        })
    }

    /// Look a connection up by id, checking the generation.
    fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id.slot).filter(|c| c.id == id)
    }

    fn insert_conn(
        &mut self,
        stream: impl Into<Transport>,
        peer: String,
        ip: Option<IpAddr>,
        role: Role,
        max_frame: usize,
    ) -> Option<ConnId> {
        let generation = self.next_generation();
        let entry = self.conns.vacant_entry();
        let id = ConnId {
            slot: entry.key(),
            generation,
        };
        let mut io = Framed::new(stream, max_frame, self.config.max_outbound);
        self.stats.opened(role.kind());
        let listener = match &role {
            Role::Client(ClientState::Identifying { listener, .. }) => Some(*listener),
            _ => None,
        };
        if let Some(index) = listener {
            self.stats.listener(index).connections_total += 1;
        }
        if let Err(e) = io.register(self.poll.registry(), token::conn_token(id)) {
            error!("cannot register connection from {peer}: {e}");
            self.forget_ip(ip);
            return None;
        }
        entry.insert(Conn {
            id,
            io,
            peer,
            ip,
            last_seen: Instant::now(),
            role,
            read_closed: false,
            hangup_seen: false,
            closing: None,
            throttled: false,
            since: Instant::now(),
            traffic: Default::default(),
            listener,
            features: None,
        });
        Some(id)
    }

    /// Read and handle frames until the socket would block, the connection pauses, or the cap.
    fn readable(&mut self, id: ConnId, now: Instant) {
        for _ in 0..MAX_READS_PER_EVENT {
            if !self.handle_buffered_frames(id, now) {
                return;
            }
            let Some(conn) = self.conns.get_mut(id.slot).filter(|c| c.id == id) else {
                return;
            };
            if conn.read_closed {
                return self.close_if_drained(id, now);
            }
            let read = conn.io.read_some(&mut self.scratch);
            if conn.io.take_keepalive() {
                // A WebSocket ping or pong: activity, though no frame came.
                conn.last_seen = now;
            }
            match read {
                Ok(ReadResult::Data(n)) => conn.traffic.read(n),
                Ok(ReadResult::Drained(n)) => {
                    conn.traffic.read(n);
                    if !conn.hangup_seen {
                        self.handle_buffered_frames(id, now);
                        return;
                    }
                }
                Ok(ReadResult::WouldBlock) => return,
                Ok(ReadResult::Eof) => conn.read_closed = true,
                Err(e) => {
                    debug!("{} read error: {e}", conn.context());
                    return self.close(id, format!("read error: {e}"));
                }
            }
        }
        self.more_input.push(id);
    }

    /// Handle every complete frame already received. False when the connection cannot take more
    /// input now (paused, closing or gone).
    fn handle_buffered_frames(&mut self, id: ConnId, now: Instant) -> bool {
        // The loop's frame buffer, lent out while frames are handled (a nested call finds it
        // empty and simply allocates its own).
        let mut frame = std::mem::take(&mut self.frame);
        let more = self.handle_frames_into(id, now, &mut frame);
        if frame.capacity() <= SCRATCH_SIZE {
            self.frame = frame;
        }
        more
    }

    fn handle_frames_into(&mut self, id: ConnId, now: Instant, frame: &mut Vec<u8>) -> bool {
        let max_pending = self.config.max_pending_per_connection;
        loop {
            let pending = self.router.pending_for(id);
            let Some(conn) = self.conn(id) else {
                return false;
            };
            if !conn.accepts_input() {
                return false;
            }
            // Backpressure: a client with its fill of requests in flight is not read from (the
            // kernel buffers fill and TCP slows the client down) until answers go out.
            if pending >= max_pending && matches!(conn.role, Role::Client(_)) {
                if !conn.throttled {
                    conn.throttled = true;
                    debug!(
                        "{} has {pending} requests in flight; reading paused",
                        conn.context()
                    );
                }
                return false;
            }
            conn.throttled = false;
            match conn.io.next_frame_into(frame) {
                Ok(true) => {}
                Ok(false) => return true,
                Err(e) => {
                    let is_client = matches!(conn.role, Role::Client(_));
                    if !is_client {
                        warn!("{}: {e}; closing", conn.context());
                    } else if conn.io.transport().ws.is_none() {
                        // (A WebSocket's is logged with its close code when it closes.)
                        let line = format!("{}: {e}; closing", conn.context());
                        self.noise.info(now, format_args!("{line}"));
                    }
                    let body = e.to_body();
                    if is_client {
                        self.tell_error(id, &body);
                        self.finish(id, now, e.to_string());
                    } else {
                        self.close(id, e.to_string());
                    }
                    return false;
                }
            }
            conn.last_seen = now;
            conn.traffic.frame_in();
            match &conn.role {
                Role::Client(_) => self.client_frame(id, frame, now),
                Role::Handler { .. } => self.handler_frame(id, frame, now),
                Role::Peer(_) => self.peer_frame(id, frame, now),
            }
        }
    }

    /// The peer sent its last byte and every complete frame has been handled. A handler link closes
    /// at once; a client is closed once the answers to its requests still in flight are written.
    fn close_if_drained(&mut self, id: ConnId, now: Instant) {
        let pending = self.router.pending_for(id);
        let Some(conn) = self.conn(id) else {
            return;
        };
        if matches!(conn.role, Role::Handler { .. }) {
            return self.close(id, "closed by peer".into());
        }
        if conn.io.buffered_input() > 0 {
            debug!(
                "{} closed mid-frame ({} bytes dropped)",
                conn.context(),
                conn.io.buffered_input()
            );
        }
        if pending == 0 && !conn.paused() {
            self.finish(id, now, "closed by peer".into());
        }
    }

    /// Queue a frame body to a connection; false if it was not queued. A client or peer whose
    /// queue overflows is a slow consumer and is closed. A handler whose queue is full keeps its
    /// connection: the frame is refused (a request is then answered `handler_busy`), so one
    /// client flooding a handler cannot cut it off for everyone.
    fn try_send(&mut self, id: ConnId, body: Vec<u8>) -> bool {
        let queued = self.try_queue(id, &body);
        crate::protocol::pool::recycle(body);
        queued
    }

    /// One body to each of these connections, as [`Server::send`] to each in turn (a fan-out:
    /// the body is copied into each connection's output, never allocated per connection).
    fn send_each(&mut self, to: Vec<ConnId>, body: Vec<u8>) {
        for id in &to {
            self.try_queue(*id, &body);
        }
        crate::protocol::pool::recycle(body);
    }

    /// [`Server::try_send`] without taking the body.
    fn try_queue(&mut self, id: ConnId, body: &[u8]) -> bool {
        // For an attached user: over its gateway's connection, saying whom it is for.
        if Server::is_attached_id(id) {
            let Some((gateway, tagged)) = self
                .attached
                .route(id)
                .map(|(gateway, user)| (gateway, crate::protocol::attach::tag_user(body, user)))
            else {
                debug!("conn={id} detached; dropping a frame for it");
                return false;
            };
            let queued = self.try_queue(gateway, &tagged);
            crate::protocol::pool::recycle(tagged);
            return queued;
        }
        let Some(conn) = self.conns.get_mut(id.slot).filter(|c| c.id == id) else {
            debug!("conn={id} gone; dropping a frame for it");
            return false;
        };
        if conn.closing.is_some() {
            return false;
        }
        let mut queued = conn.io.queue(body);
        if queued.is_err() {
            // Full only counts once the socket takes no more: write what it takes now (the
            // queue may have filled within this pass, before the end-of-pass flush), then retry.
            if let Err(e) = conn.io.flush() {
                debug!("{} write error: {e}", conn.context());
            }
            queued = conn.io.queue(body);
        }
        match queued {
            Ok(()) => {
                conn.traffic.frame_out(body.len());
                self.dirty.push(id);
                // Only a half-closed or throttled client may have input to take up again.
                if conn.read_closed || conn.throttled {
                    let pending = self.router.pending_for(id);
                    let drained = conn.read_closed && pending == 0 && !conn.paused();
                    let resume = conn.throttled && pending < self.config.max_pending_per_connection;
                    if drained || resume {
                        self.more_input.push(id);
                    }
                }
                true
            }
            Err(overflow) if matches!(conn.role, Role::Handler { .. }) => {
                debug!(
                    "{}: queue full ({} bytes, limit {}); frame refused",
                    conn.context(),
                    overflow.queued,
                    overflow.max
                );
                false
            }
            Err(overflow) => {
                let reason = format!(
                    "slow consumer: {} bytes queued, limit {}",
                    overflow.queued, overflow.max
                );
                warn!("{}: {reason}; closing", conn.context());
                // Nothing more is queued for it (and nothing more logged); it closes this iteration.
                conn.closing = Some(reason.clone());
                self.stats.slow_consumers += 1;
                self.to_close.push((id, reason));
                false
            }
        }
    }

    /// [`Server::try_send`] for frames whose refusal needs no follow-up.
    fn send(&mut self, id: ConnId, body: Vec<u8>) {
        self.try_send(id, body);
    }

    /// [`Server::send`] for a frame that carries a credential or a token: never compressed,
    /// whatever the session negotiated (see `negotiate.rs`).
    fn send_secret(&mut self, id: ConnId, body: Vec<u8>) {
        if let Some(conn) = self.conn(id) {
            conn.io.plain_next();
        }
        self.try_send(id, body);
    }

    /// Close once the queued frames are written (or after the linger time).
    fn finish(&mut self, id: ConnId, now: Instant, reason: String) {
        // Answers already routed to this connection are queued before it stops taking frames.
        self.settle(now);
        self.detach_all(id);
        if let Some(conn) = self.conn(id)
            && conn.closing.is_none()
        {
            conn.io.begin_close();
            conn.closing = Some(reason);
            self.timers.push(Reverse((now + LINGER, Timer::Linger(id))));
            self.dirty.push(id);
        }
    }

    /// Close now: deregister, drop queued output, and tell the router.
    fn close(&mut self, id: ConnId, reason: String) {
        if self.conn(id).is_none() {
            return;
        }
        let mut conn = self.conns.remove(id.slot);
        let now = Instant::now();
        self.reloads.forget(id);
        self.stats.traffic.add(&conn.traffic);
        if let Some(index) = conn.listener {
            self.stats.listener(index).traffic.add(&conn.traffic);
        }
        self.note_violations(&conn, &reason, now);
        conn.io.deregister(self.poll.registry());
        match &conn.role {
            Role::Client(_) => {
                debug!("{} closed: {reason}", conn.context());
                self.router.client_gone(id, &mut self.actions);
                self.detach_all(id);
                self.backlog_end(id);
                self.forget_ip(conn.ip);
            }
            Role::Handler { dialed, .. } => {
                if *dialed {
                    debug!("{} closed: {reason}", conn.context());
                } else {
                    info!("{} disconnected: {reason}", conn.context());
                }
                self.router.handler_gone(id, &mut self.actions);
            }
            Role::Peer(peer) => {
                debug!("{} closed: {reason}", conn.context());
                self.forget_ip(conn.ip);
                self.peer_closed(id, peer, &reason, now);
            }
        }
        // The last output is out (or given up on): the peer gets an end of stream after it,
        // and what it still sends is read and dropped, so the kernel sends no reset over it.
        if let Some(sock) = conn.io.into_lingering() {
            self.linger.start(self.poll.registry(), sock, now);
        }
    }

    /// One connection from this address fewer.
    fn forget_ip(&mut self, ip: Option<IpAddr>) {
        if let Some(source) = ip.map(Source::of)
            && let Some(count) = self.per_ip.get_mut(&source)
        {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&source);
            }
        }
    }

    /// Apply queued actions and closes until none are left.
    fn settle(&mut self, now: Instant) {
        loop {
            if !self.actions.is_empty() {
                let mut batch = std::mem::take(&mut self.actions);
                for action in batch.drain(..) {
                    self.apply(action);
                }
                keep_capacity(&mut self.actions, batch);
            } else if self.forward_actions() {
            } else if let Some(redirect) = self.redirects.pop_front() {
                self.carry_out_redirect(redirect, now);
            } else if !self.redirects_waiting.is_empty() && self.release_redirects() {
                // Back in line: carried out on the next pass.
            } else if let Some((id, reason)) = self.to_close.pop() {
                self.close(id, reason);
            } else {
                return;
            }
        }
    }

    /// Carry out one action of the router (a redirect waits for the rest of its batch).
    fn apply(&mut self, action: Action) {
        match action {
            Action::Send { to, body } => self.send(to, body),
            Action::SendEach { to, body } => self.send_each(to, body),
            Action::Request { to, body, token } => {
                if !self.try_send(to, body) {
                    self.router.handler_refused(token, &mut self.actions);
                }
            }
            Action::Dial { kind, token, body } => self.dial(&kind, token, body),
            Action::Close { conn } => self.close(conn, "request answered".into()),
            Action::Redirect { to, id, url, token } => self
                .redirects
                .push_back(redirect::Redirect { to, id, url, token }),
            Action::LoginAccepted { conn, data } => self.login_accepted(conn, data, Instant::now()),
            Action::LoginRefused {
                conn,
                body,
                by_handler,
            } => self.login_refused(conn, body, by_handler, Instant::now()),
            Action::Store { ticket, records } => self.store_records(ticket, records),
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for id in dirty.drain(..) {
            let Some(conn) = self.conn(id) else {
                continue;
            };
            match conn.io.flush() {
                Ok(true) => {
                    if let Some(reason) = conn.closing.clone() {
                        self.close(id, reason);
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    debug!("{} write error: {e}", conn.context());
                    self.close(id, format!("write error: {e}"));
                }
            }
        }
        keep_capacity(&mut self.dirty, dirty);
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Identify(id) => {
                    let Some(conn) = self.conn(id) else { continue };
                    let challenged = matches!(conn.role, Role::Client(ClientState::Challenged(_)));
                    if challenged
                        || matches!(conn.role, Role::Client(ClientState::Identifying { .. }))
                    {
                        let line = format!("{} did not identify in time; closing", conn.context());
                        self.noise.info(now, format_args!("{line}"));
                        let what = if challenged {
                            "signature for the challenge"
                        } else {
                            "identify"
                        };
                        let error = ErrorBody::new(
                            ErrorCode::IdentifyTimeout,
                            format!(
                                "no {what} within {} ms",
                                self.config.identify_timeout.as_millis()
                            ),
                        );
                        self.tell_error(id, &error);
                        self.finish(id, now, "identify timeout".into());
                    }
                }
                Timer::Linger(id) => {
                    if self.conn(id).is_some() {
                        self.close(id, "linger time over".into());
                    }
                }
                Timer::Idle(id) => self.check_idle(id, now),
                Timer::Handshake(id) => self.check_handshake(id),
                Timer::Expire(id) if Server::is_attached_id(id) => self.attached_expiry(id),
                Timer::Expire(id) => self.check_expiry(id, now),
                Timer::ProxyHeader { slot, generation } => self.proxy_deadline(slot, generation),
                Timer::Redial(slot) => self.redial(slot),
                Timer::Accept(token) => {
                    self.accept.retry_fired(token.0);
                    self.accept_ready(token, now);
                }
            }
        }
        self.router.expire(now, &mut self.actions);
        self.linger.expire(self.poll.registry(), now);
    }

    /// Start watching an identified client for idleness.
    fn arm_idle(&mut self, id: ConnId, now: Instant) {
        self.timers
            .push(Reverse((now + self.config.idle_timeout, Timer::Idle(id))));
    }

    fn check_idle(&mut self, id: ConnId, now: Instant) {
        let idle = self.config.idle_timeout;
        let pending = self.router.pending_for(id);
        let Some(conn) = self.conn(id) else { return };
        if conn.closing.is_some() {
            return;
        }
        let due = conn.last_seen + idle;
        if due > now || pending > 0 || conn.paused() {
            // Never idle while requests are in flight: they count as activity.
            if pending > 0 || conn.paused() {
                conn.last_seen = now;
            }
            let due = conn.last_seen + idle;
            self.timers.push(Reverse((due, Timer::Idle(id))));
            return;
        }
        info!(
            "{} idle for {} ms; closing",
            conn.context(),
            idle.as_millis()
        );
        let error = ErrorBody::new(
            ErrorCode::IdleTimeout,
            format!(
                "nothing received for {} ms (send bester.ping to keep a connection open)",
                idle.as_millis()
            ),
        );
        self.tell_error(id, &error);
        self.finish(id, now, "idle timeout".into());
    }
}

/// Put an emptied work list back unless new work was queued meanwhile, so that the loop's lists
/// keep their capacity instead of allocating again on every pass.
fn keep_capacity<T>(list: &mut Vec<T>, emptied: Vec<T>) {
    debug_assert!(emptied.is_empty());
    if list.is_empty() && emptied.capacity() <= 4096 {
        *list = emptied;
    }
}
