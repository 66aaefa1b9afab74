//! The client listeners: `[server] listen` (plain TCP, always index 0) and each `[[listeners]]`
//! entry (tcp, tls, ws, wss). Binding, accepting (with the connection limits, before any TLS or
//! WebSocket byte is read, so a handshake counts against them like any connection), wrapping each
//! accepted socket in its transport, and reloading TLS certificates and static files.
//!
//! Every accepted connection starts as a client that must identify before the identify timeout;
//! a TLS or WebSocket handshake that never finishes is closed by that same timer.

use std::cmp::Reverse;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::config::{Config, HandlerSource, ListenerConfig, ListenerKind, StaticFiles};
use crate::net::accept::{self, Accepted};
use crate::net::hosts::Hosts;
use crate::net::tls::{self, ServerTls, TlsStream};
use crate::net::ws::{self, Origins, WsOptions};
use crate::net::{Framed, Link, Stream, Transport};
use crate::protocol::error::ErrorBody;
use crate::protocol::message::client_error;
use crate::protocol::{ErrorCode, proxy};

use super::conn::{ClientState, Role};
use super::limits::Source;
use super::token::PROXY_CONN_BASE;
use super::token::{ADMIN_LISTENER, HANDLER_LISTENER_BASE, LISTENER_BASE, MONITOR_LISTENER};
use super::{MAX_ACCEPTS_PER_EVENT, Server, Timer};

/// The web client built into the binary, served by `static_dir = "{web}"`. `bester.js` imports
/// `protocol.js`, the Node package's I/O-free protocol core, as it is.
const WEB_FILES: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../web/index.html")),
    ("bester.js", include_bytes!("../web/bester.js")),
    (
        "protocol.js",
        include_bytes!("../../clients/node/lib/protocol.js"),
    ),
    ("chat.js", include_bytes!("../web/chat.js")),
    ("chat.css", include_bytes!("../web/chat.css")),
];

/// One bound listener.
pub(super) struct ClientListener {
    /// How it was configured.
    pub config: ListenerConfig,
    /// The socket (`None` once shutting down).
    socket: Option<TcpListener>,
    /// Where it is bound.
    pub addr: SocketAddr,
    /// For tls and wss (replaced on reload).
    tls: Option<Arc<ServerTls>>,
    /// For ws and wss (replaced on reload).
    ws: Option<Arc<WsOptions>>,
}

/// Every client listener; the poll token of listener `i` is `LISTENER_BASE + i`.
pub(super) struct Listeners {
    list: Vec<ClientListener>,
    /// Connections on `proxy_protocol` listeners still awaiting their PROXY header (poll token
    /// `PROXY_CONN_BASE + slot`).
    pending: Slab<Pending>,
}

/// A connection from a trusted proxy whose PROXY header has not come whole yet.
struct Pending {
    stream: TcpStream,
    /// The proxy's address.
    peer: SocketAddr,
    /// Its listener.
    index: usize,
    generation: u64,
    /// The identify deadline, which the header must also meet.
    deadline: Instant,
}

/// The poll token of listener `index`.
pub(super) fn token(index: usize) -> Token {
    Token(LISTENER_BASE + index)
}

/// Sent with the built-in web client's files: its scripts and styles come only from the
/// listener itself, it talks only to the listener, and no other site may frame it.
const WEB_HEADERS: &str = "Content-Security-Policy: default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n";

fn static_files(files: Option<&StaticFiles>) -> Result<Arc<WsOptions>, String> {
    let file_headers = match files {
        Some(StaticFiles::Builtin) => WEB_HEADERS,
        _ => "",
    };
    let files = match files {
        None => Default::default(),
        Some(StaticFiles::Dir(dir)) => ws::load_static_dir(dir)?,
        Some(StaticFiles::Builtin) => WEB_FILES
            .iter()
            .map(|(name, body)| {
                let file = ws::StaticFile {
                    content_type: ws::content_type(name),
                    body: (*body).into(),
                };
                (format!("/{name}"), file)
            })
            .collect(),
    };
    Ok(Arc::new(WsOptions {
        origins: Origins::SameHost,
        files,
        hosts: Hosts::default(),
        check_host: false,
        file_headers,
        deflate: true,
    }))
}

/// What a listener reads from its files: TLS configuration and WebSocket options.
type Loaded = (Option<Arc<ServerTls>>, Option<Arc<WsOptions>>);

/// TLS configuration and WebSocket options of listener `index`, read from its files.
fn load(config: &ListenerConfig, index: usize) -> Result<Loaded, String> {
    let tls = match &config.tls {
        Some(files) => Some(tls::server_config(
            &files.cert,
            &files.key,
            files.client.as_ref(),
            index,
        )?),
        None => None,
    };
    let ws = if config.kind.websocket() {
        let mut options = static_files(config.static_files.as_ref())?;
        let o = Arc::make_mut(&mut options);
        o.origins = config.origins.clone();
        // DNS rebinding: a loopback listener, or one told its names, answers no other Host.
        o.hosts = Hosts::new(&config.hosts);
        o.check_host = config.address.ip().is_loopback() || !config.hosts.is_empty();
        o.deflate = config.ws_deflate;
        Some(options)
    } else {
        None
    };
    Ok((tls, ws))
}

/// Descriptors kept free of client connections for everything else: standard streams, the poll
/// instance, waker and signal pipe, the spare descriptor, the log, the user store and
/// certificates being read, handler processes being started, and some slack.
const BASE_RESERVE: usize = 32;
/// The floor `max_connections` is never clamped below, whatever the descriptor limit: with a limit
/// that low, running out is handled by `net/accept.rs` (shedding, retry, `/healthz`).
const MIN_CONNECTIONS: usize = 8;

/// Descriptors the broker may need besides client connections, from the configuration.
fn reserved_fds(config: &Config) -> usize {
    let handlers: usize = config
        .handlers
        .values()
        .map(|h| {
            let links = match &h.source {
                HandlerSource::Command { processes, .. } => *processes,
                HandlerSource::Socket(_) => 4,
                HandlerSource::External => 0,
            };
            let dialed = if h.connect.is_some() {
                h.max_inflight.min(64)
            } else {
                0
            };
            1 + links + dialed
        })
        .sum();
    let monitor = config
        .monitor
        .as_ref()
        .map_or(0, |m| 1 + m.max_connections + super::monitor::HEALTH_SLOTS);
    BASE_RESERVE
        + 1
        + config.listeners.len()
        + handlers
        + 2 * config.peers.len()
        + monitor
        + 1
        + super::admin::MAX_CTL_CONNECTIONS
        + config.auth_threads
}

/// Raise the soft descriptor limit to the hard one, and lower `server.max_connections` (with a
/// warning) to what the limit leaves after what the broker needs besides clients, so that client
/// connections alone cannot run the process out of descriptors.
pub(super) fn fit_fd_limit(config: &mut Config) {
    let limit = match accept::raise_fd_limit() {
        Ok(limit) => usize::try_from(limit).unwrap_or(usize::MAX),
        Err(e) => {
            warn!("cannot read the file descriptor limit: {e}");
            return;
        }
    };
    let reserve = reserved_fds(config);
    let room = limit.saturating_sub(reserve).max(MIN_CONNECTIONS);
    if config.max_connections > room {
        warn!(
            "server.max_connections = {} lowered to {room}: the file descriptor limit is {limit} \
             and {reserve} are kept for listeners, handlers, peers, monitoring and control \
             connections (raise LimitNOFILE= or `ulimit -n`)",
            config.max_connections
        );
        config.max_connections = room;
    }
}

impl ClientListener {
    /// How the listener is named in logs and `/healthz`.
    fn name_for_logs(&self) -> String {
        format!("listener {} ({})", self.config.name, self.addr)
    }
}

impl Listeners {
    /// Bind `[server] listen` and every `[[listeners]]` entry, and register them; a listener
    /// for which `inherited(name)` gives a socket (socket activation: `"main"` for
    /// `[server] listen`, else the entry's `name`) uses it instead of binding its address.
    pub fn bind_with(
        config: &Config,
        registry: &Registry,
        mut inherited: impl FnMut(&str) -> io::Result<Option<TcpListener>>,
    ) -> io::Result<Listeners> {
        let main = ListenerConfig {
            name: "main".into(),
            kind: ListenerKind::Tcp,
            address: config.listen,
            tls: None,
            origins: Origins::SameHost,
            static_files: None,
            trusted_proxies: None,
            hosts: Vec::new(),
            ws_deflate: false,
        };
        let mut list = Vec::new();
        for (i, lc) in std::iter::once(main)
            .chain(config.listeners.iter().cloned())
            .enumerate()
        {
            let (tls, ws) = load(&lc, i).map_err(io::Error::other)?;
            let mut socket = match inherited(&lc.name)? {
                Some(socket) => socket,
                None => crate::net::accept::bind_tcp(lc.address).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {}: {e}", lc.address))
                })?,
            };
            registry.register(&mut socket, token(i), Interest::READABLE)?;
            let addr = socket.local_addr()?;
            if i > 0 {
                info!("listener {} ({}) on {addr}", lc.name, lc.kind.as_str());
            }
            list.push(ClientListener {
                config: lc,
                socket: Some(socket),
                addr,
                tls,
                ws,
            });
        }
        Ok(Listeners {
            list,
            pending: Slab::new(),
        })
    }

    /// The `[server] listen` address.
    /// Hand every listening socket to the service manager's file-descriptor store (`FDSTORE=1`,
    /// named as socket activation names them: `client` for `[server] listen`, else the
    /// listener's name), so that a restart gets them back: connections made while no daemon runs
    /// wait in the socket's queue instead of being refused. Without `NOTIFY_SOCKET`, or when the
    /// unit keeps no store (`FileDescriptorStoreMax=0`), it does nothing.
    pub fn store_in_fd_store(&self) {
        for (i, l) in self.list.iter().enumerate() {
            let Some(socket) = &l.socket else { continue };
            let name = if i == 0 {
                super::activation::CLIENT
            } else {
                l.config.name.as_str()
            };
            let fd = std::os::fd::AsFd::as_fd(socket);
            let states = [
                sd_notify::NotifyState::FdStore,
                sd_notify::NotifyState::FdName(name),
            ];
            match sd_notify::notify_with_fds(&states, &[fd]) {
                Ok(()) => debug!("listener {name}: handed to the service manager's fd store"),
                Err(e) => debug!("listener {name}: fd store: {e}"),
            }
        }
    }

    /// Every listening socket and its name (as [`Listeners::store_in_fd_store`] names them),
    /// for the new process of an upgrade.
    pub fn fds(&self) -> Vec<(std::os::fd::RawFd, String)> {
        use std::os::fd::AsRawFd;
        self.list
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let name = if i == 0 {
                    super::activation::CLIENT.to_string()
                } else {
                    l.config.name.clone()
                };
                Some((l.socket.as_ref()?.as_raw_fd(), name))
            })
            .collect()
    }

    /// Accept nothing for now (the new process of an upgrade, until the old one hands over):
    /// connections wait in the sockets' queues, which the old process serves meanwhile.
    pub fn pause(&mut self, registry: &Registry) {
        for l in &mut self.list {
            if let Some(socket) = &mut l.socket {
                let _ = registry.deregister(socket);
            }
        }
    }

    /// Accept again after [`Listeners::pause`].
    pub fn resume(&mut self, registry: &Registry) {
        for (i, l) in self.list.iter_mut().enumerate() {
            if let Some(socket) = &mut l.socket
                && let Err(e) = registry.register(socket, token(i), Interest::READABLE)
            {
                warn!("listener {}: cannot accept: {e}", l.config.name);
            }
        }
    }

    /// The `[server] listen` address.
    pub fn main_addr(&self) -> SocketAddr {
        self.list[0].addr
    }

    /// Whether `token` is a listener's; its index.
    pub fn index_of(&self, token: Token) -> Option<usize> {
        token
            .0
            .checked_sub(LISTENER_BASE)
            .filter(|i| *i < self.list.len())
    }

    /// How many listeners there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Lines for the ready file after the main address: `name kind address` per extra listener.
    pub fn ready_lines(&self) -> String {
        self.list
            .iter()
            .skip(1)
            .map(|l| format!("{} {} {}\n", l.config.name, l.config.kind.as_str(), l.addr))
            .collect()
    }

    /// Read every listener's certificate, key, client CA and CRLs, and static files again; new
    /// connections use them.
    /// A listener whose files are now bad keeps what it had; the errors are returned.
    pub fn reload(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for (i, l) in self.list.iter_mut().enumerate() {
            if l.config.tls.is_none() && l.config.static_files.is_none() {
                continue;
            }
            match load(&l.config, i) {
                Ok((tls, ws)) => {
                    l.tls = tls;
                    l.ws = ws;
                    info!(
                        "listener {}: certificates, CRLs and files reloaded",
                        l.config.name
                    );
                }
                Err(e) => errors.push(format!(
                    "listener {}: {e}; keeping the old ones",
                    l.config.name
                )),
            }
        }
        errors
    }

    /// The name and transport of listener `index` (`[[listeners]] name`; `main` for
    /// `[server] listen`).
    pub fn name_of(&self, index: usize) -> (String, &'static str) {
        self.list.get(index).map_or(("?".into(), "tcp"), |l| {
            (l.config.name.clone(), l.config.kind.as_str())
        })
    }

    /// The TLS settings listener `index` accepts new connections with.
    pub fn tls_of(&self, index: usize) -> Option<&tls::ServerTls> {
        self.list.get(index)?.tls.as_deref()
    }

    /// Stop accepting (shutdown).
    pub fn close_all(&mut self, registry: &Registry) {
        for l in &mut self.list {
            if let Some(mut socket) = l.socket.take() {
                let _ = registry.deregister(&mut socket);
            }
        }
    }

    /// Wrap an accepted socket in listener `index`'s transport.
    fn transport(&self, index: usize, stream: TcpStream) -> io::Result<Transport> {
        let l = &self.list[index];
        let link = match &l.tls {
            Some(config) => Link::Tls(Box::new(TlsStream::server(stream, Arc::clone(config))?)),
            None => Link::Plain(Stream::Tcp(stream)),
        };
        Ok(match &l.ws {
            // The message limit is set by Framed from the connection's frame limit.
            Some(options) => Transport::websocket(link, Arc::clone(options), 0),
            None => Transport::new(link),
        })
    }
}

impl Server {
    /// Accept on every listener (after the per-event cap was reached on one of them).
    pub(super) fn accept_all(&mut self, now: Instant) {
        for i in 0..self.listeners.len() {
            self.accept_clients(i, now);
        }
    }

    /// A listener (by poll token) is ready, or its retry timer fired.
    pub(super) fn accept_ready(&mut self, token: Token, now: Instant) {
        match token {
            MONITOR_LISTENER | ADMIN_LISTENER => self.control_accept(token, now),
            Token(t) if t >= PROXY_CONN_BASE => self.proxy_ready(t - PROXY_CONN_BASE),
            Token(t) if t >= LISTENER_BASE => {
                if let Some(i) = self.listeners.index_of(token) {
                    self.accept_clients(i, now);
                }
            }
            Token(t) if t >= HANDLER_LISTENER_BASE => {
                self.accept_handlers(t - HANDLER_LISTENER_BASE, now);
            }
            _ => {}
        }
    }

    /// Listener `token` could not accept: arm its retry on the timer heap (once at a time).
    pub(super) fn retry_accept_later(&mut self, token: Token, now: Instant) {
        if let Some(at) = self.accept.retry_at(token.0, now) {
            self.timers.push(Reverse((at, Timer::Accept(token))));
        }
    }

    /// Accept connections on listener `index` until it would block (or the per-event cap).
    pub(super) fn accept_clients(&mut self, index: usize, now: Instant) {
        for _ in 0..MAX_ACCEPTS_PER_EVENT {
            let l = &self.listeners.list[index];
            let Some(socket) = &l.socket else {
                return;
            };
            let (stream, peer) =
                match self
                    .accept
                    .accept(token(index).0, &l.name_for_logs(), socket, now)
                {
                    Accepted::Conn(stream, peer) => (stream, peer),
                    Accepted::Empty => return,
                    Accepted::Stalled => {
                        // Out of descriptors: close what is queued (TCP clients are told why), and
                        // try again on the timer.
                        let tcp = l.config.kind == ListenerKind::Tcp;
                        let closed = self.accept.shed(token(index).0, socket, |stream, _| {
                            if tcp {
                                let error = ErrorBody::new(
                                    ErrorCode::TooManyConnections,
                                    "the server is out of file descriptors; try again later",
                                );
                                let mut framed = Framed::new(Stream::Tcp(stream), 0, 1024);
                                let _ = framed.queue(&client_error(None, &error));
                                let _ = framed.flush();
                            }
                        });
                        for _ in 0..closed {
                            self.stats.error(ErrorCode::TooManyConnections, false);
                        }
                        return self.retry_accept_later(token(index), now);
                    }
                };
            let deadline = now + self.config.identify_timeout;
            if self.listeners.list[index].config.trusted_proxies.is_some() {
                self.accept_proxied(index, stream, peer, deadline);
            } else {
                self.admit_client(index, stream, peer, None, deadline);
            }
        }
        // Cap reached: the listener may still be ready; come back next iteration.
        self.accept_again = true;
    }

    /// Take an accepted client connection within the limits, wrapped in its listener's
    /// transport. `peer` is the client's address (from the PROXY header, if `via` is the proxy).
    fn admit_client(
        &mut self,
        index: usize,
        stream: TcpStream,
        peer: SocketAddr,
        via: Option<SocketAddr>,
        deadline: Instant,
    ) {
        let kind = self.listeners.list[index].config.kind;
        let open = self.conns.len() + self.listeners.pending.len();
        let from_ip = self
            .per_ip
            .get(&Source::of(peer.ip()))
            .copied()
            .unwrap_or(0);
        let refusal = if open >= self.config.max_connections {
            Some(format!("too many connections ({} open)", self.conns.len()))
        } else if from_ip >= self.config.max_connections_per_ip {
            Some(format!(
                "too many connections from {} ({from_ip} open)",
                peer.ip()
            ))
        } else {
            None
        };
        if let Some(text) = refusal {
            debug!("refusing {peer}: {text}");
            let error = ErrorBody::new(ErrorCode::TooManyConnections, text);
            self.stats.error(error.code, false);
            // Told once, best effort, without taking a slot; then a lingering close (bounded
            // in count: past it the socket is dropped at once). A TLS or WebSocket client could
            // not read a bare frame: it only gets the end of stream.
            let mut framed = Framed::new(Stream::Tcp(stream), 0, 1024);
            if kind == ListenerKind::Tcp {
                let _ = framed.queue(&client_error(None, &error));
            }
            if let Some(sock) = framed.into_lingering() {
                self.linger
                    .start(self.poll.registry(), sock, Instant::now());
            }
            return;
        }
        let _ = stream.set_nodelay(true);
        let transport = match self.listeners.transport(index, stream) {
            Ok(t) => t,
            Err(e) => {
                warn!("cannot set up {} for {peer}: {e}", kind.as_str());
                return;
            }
        };
        *self.per_ip.entry(Source::of(peer.ip())).or_default() += 1;
        let id = self.insert_conn(
            transport,
            peer.to_string(),
            Some(peer.ip()),
            Role::Client(ClientState::Identifying {
                deadline,
                listener: index,
            }),
            self.config.max_identify_frame,
        );
        if let Some(id) = id {
            match via {
                Some(proxy) => debug!(
                    "conn={id} accepted from {peer} via proxy {proxy} ({})",
                    kind.as_str()
                ),
                None => debug!("conn={id} accepted from {peer} ({})", kind.as_str()),
            }
            self.timers.push(Reverse((deadline, Timer::Identify(id))));
        }
    }

    /// A connection on a `proxy_protocol` listener: only a trusted proxy may connect; its PROXY
    /// header is awaited (without blocking) until `deadline`.
    fn accept_proxied(
        &mut self,
        index: usize,
        mut stream: TcpStream,
        peer: SocketAddr,
        deadline: Instant,
    ) {
        let trusted = self.listeners.list[index]
            .config
            .trusted_proxies
            .as_ref()
            .is_some_and(|nets| nets.iter().any(|n| n.contains(peer.ip())));
        if !trusted {
            info!(
                "listener {}: {peer} is not a trusted proxy; closed",
                self.listeners.list[index].config.name
            );
            return;
        }
        if self.conns.len() + self.listeners.pending.len() >= self.config.max_connections {
            debug!("refusing {peer}: too many connections");
            self.stats.error(ErrorCode::TooManyConnections, false);
            return;
        }
        let generation = self.next_generation();
        let entry = self.listeners.pending.vacant_entry();
        let slot = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(PROXY_CONN_BASE + slot),
            Interest::READABLE,
        ) {
            warn!("cannot register {peer}: {e}");
            return;
        }
        entry.insert(Pending {
            stream,
            peer,
            index,
            generation,
            deadline,
        });
        self.timers
            .push(Reverse((deadline, Timer::ProxyHeader { slot, generation })));
    }

    /// A connection awaiting its PROXY header is readable: look at what came (without taking
    /// it); once the header is whole, take exactly its bytes and admit the client.
    pub(super) fn proxy_ready(&mut self, slot: usize) {
        let Some(p) = self.listeners.pending.get(slot) else {
            return;
        };
        let cap = proxy::MAX_HEADER.min(self.scratch.len());
        let seen = match p.stream.peek(&mut self.scratch[..cap]) {
            Ok(0) => return self.proxy_drop(slot, "closed before its PROXY header"),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(e) => return self.proxy_drop(slot, &format!("read error: {e}")),
        };
        let header = match proxy::parse(&self.scratch[..seen]) {
            Ok(Some(header)) => header,
            Ok(None) => return,
            Err(e) => return self.proxy_drop(slot, &e.to_string()),
        };
        let mut p = self.listeners.pending.remove(slot);
        let _ = self.poll.registry().deregister(&mut p.stream);
        // The header's bytes are already received (they were just seen): this read takes them.
        let mut taken = 0;
        while taken < header.len {
            match p.stream.read(&mut self.scratch[taken..header.len]) {
                Ok(0) => return,
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("{}: reading the PROXY header: {e}", p.peer);
                    return;
                }
            }
        }
        if self.listeners.list[p.index].socket.is_none() {
            // Shutting down: the listener stopped accepting meanwhile.
            return;
        }
        let client = header.source.unwrap_or(p.peer);
        self.admit_client(p.index, p.stream, client, Some(p.peer), p.deadline);
    }

    /// Close a connection that sent no valid PROXY header.
    fn proxy_drop(&mut self, slot: usize, why: &str) {
        if let Some(mut p) = self.listeners.pending.try_remove(slot) {
            let _ = self.poll.registry().deregister(&mut p.stream);
            info!(
                "listener {}: {} closed: {why}",
                self.listeners.list[p.index].config.name, p.peer
            );
        }
    }

    /// The PROXY header deadline of a pending connection.
    pub(super) fn proxy_deadline(&mut self, slot: usize, generation: u64) {
        if self
            .listeners
            .pending
            .get(slot)
            .is_some_and(|p| p.generation == generation)
        {
            self.proxy_drop(slot, "no PROXY header within the identify timeout");
        }
    }
}
