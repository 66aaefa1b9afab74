//! The client listeners: `[server] listen` (plain TCP, always index 0) and each `[[listeners]]`
//! entry (tcp, tls, ws, wss). Binding, accepting (with the connection limits, before any TLS or
//! WebSocket byte is read, so a handshake counts against them like any connection), wrapping each
//! accepted socket in its transport, and reloading TLS certificates and static files.
//!
//! Every accepted connection starts as a client that must identify before the identify timeout;
//! a TLS or WebSocket handshake that never finishes is closed by that same timer.

use std::cmp::Reverse;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::config::{Config, ListenerConfig, ListenerKind, StaticFiles};
use crate::net::hosts::Hosts;
use crate::net::tls::{self, ServerTls, TlsStream};
use crate::net::ws::{self, Origins, WsOptions};
use crate::net::{Framed, Link, Stream, Transport};
use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::protocol::message::client_error;

use super::conn::{ClientState, Role};
use super::token::LISTENER_BASE;
use super::{MAX_ACCEPTS_PER_EVENT, Server, Timer};

/// The web client built into the binary, served by `static_dir = "{web}"`.
const WEB_FILES: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../web/index.html")),
    ("bester.js", include_bytes!("../web/bester.js")),
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
        Some(options)
    } else {
        None
    };
    Ok((tls, ws))
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
            hosts: Vec::new(),
        };
        let mut list = Vec::new();
        for (i, lc) in std::iter::once(main)
            .chain(config.listeners.iter().cloned())
            .enumerate()
        {
            let (tls, ws) = load(&lc, i).map_err(io::Error::other)?;
            let mut socket = match inherited(&lc.name)? {
                Some(socket) => socket,
                None => TcpListener::bind(lc.address).map_err(|e| {
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
        Ok(Listeners { list })
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

    /// Accept connections on listener `index` until it would block (or the per-event cap).
    pub(super) fn accept_clients(&mut self, index: usize, now: Instant) {
        for _ in 0..MAX_ACCEPTS_PER_EVENT {
            let Some(socket) = &self.listeners.list[index].socket else {
                return;
            };
            let (stream, peer) = match socket.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log and wait for the next event rather than spin.
                    error!("accept failed: {e}");
                    return;
                }
            };
            let kind = self.listeners.list[index].config.kind;
            let from_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
            let refusal = if self.conns.len() >= self.config.max_connections {
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
                // Told once, best effort, without taking a slot: the socket is dropped at once.
                // A TLS or WebSocket client could not read a bare frame: it is just closed.
                if kind == ListenerKind::Tcp {
                    let mut framed = Framed::new(Stream::Tcp(stream), 0, 1024);
                    let _ = framed.queue(&client_error(None, &error));
                    let _ = framed.flush();
                }
                continue;
            }
            let _ = stream.set_nodelay(true);
            let transport = match self.listeners.transport(index, stream) {
                Ok(t) => t,
                Err(e) => {
                    warn!("cannot set up {} for {peer}: {e}", kind.as_str());
                    continue;
                }
            };
            *self.per_ip.entry(peer.ip()).or_default() += 1;
            let deadline = now + self.config.identify_timeout;
            let id = self.insert_conn(
                transport,
                peer.to_string(),
                Some(peer.ip()),
                Role::Client(ClientState::Identifying { deadline }),
                self.config.max_identify_frame,
            );
            if let Some(id) = id {
                debug!("conn={id} accepted from {peer} ({})", kind.as_str());
                self.timers.push(Reverse((deadline, Timer::Identify(id))));
            }
        }
        // Cap reached: the listener may still be ready; come back next iteration.
        self.accept_again = true;
    }
}
