//! The router, sans-io: who is online, which handler connections serve which type, which peer
//! servers are linked, and which requests are in flight. Events come in (a client message, a
//! handler frame, a peer message or ack, a connection gone, the clock passing a deadline);
//! [`Action`]s come out for the server to carry out. Nothing here touches a socket or reads the
//! clock, so every routing rule is tested by asserting the actions.
//!
//! Rules (see `protocol/PROTOCOL.md`, "Routing"):
//! - every client message gets exactly one direct reply with its id; every peer message exactly
//!   one ack; every handler push that asks for delivery exactly one report;
//! - `sendClients` pushes to every connection of the named users except the originating one, which
//!   gets the reply instead; the reply carries `delivered`/`offline`, and the data only if the sender
//!   is one of the recipients;
//! - `sendServers` sends to each named peer and answers once every peer has acknowledged, failed or
//!   timed out, with one report per server;
//! - a request whose handler goes away or times out is answered with an error, never dropped.

mod access;
mod answer;
mod correlate;
mod deadlines;
mod deliver;
mod directory;
mod durable;
mod federation;
mod forward;
mod groups;
mod id;
mod idmap;
mod lifecycle;
mod login;
mod presence;
mod redirect;
mod reply_id;
mod respond;
mod starting;
mod streams;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::protocol::handler::{Command, HandlerMessage, handler_error_report};
use crate::protocol::message::{ClientMessage, Info, PayloadRef, Scope, Sender, Status};
use crate::protocol::redirect::RedirectToken;
use crate::protocol::write::{client_push, handler_login_request, handler_request};
use crate::stats::{HandlerStats, RequestOutcome, RouterStats};
pub use access::{Access, Rule};
pub use correlate::{Correlate, HandlerMode};
use deadlines::Deadlines;
pub use directory::{
    DirectoryConfig, DirectoryStats, PeerTraffic, RESYNC_INTERVAL, ServerDirectory,
};
pub use forward::{ForwardAction, Forwarded};
pub use groups::{GroupLimits, pattern_matches};
pub use id::ConnId;
use idmap::IdMap;
pub use presence::{PresenceConfig, Visibility};
use reply_id::ReplyId;
pub use streams::{StreamConfig, StreamStats};

use deliver::Delivery;
use federation::{Fanout, PeerEntry, Remote};
use respond::Outcome;

/// Something the server must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this frame body to this connection (dropped if the connection is gone).
    Send {
        /// The connection.
        to: ConnId,
        /// The JSON body; the server adds the length prefix.
        body: Vec<u8>,
    },
    /// Send one frame body to each of these connections (a push fanned out to many: one body
    /// and one list instead of a copy of the body per connection). Each connection gets it as
    /// with [`Action::Send`], in this order; connections that are gone are skipped.
    SendEach {
        /// The connections.
        to: Vec<ConnId>,
        /// The JSON body; the server adds the length prefix.
        body: Vec<u8>,
    },
    /// Send this request to a handler; if its queue is full, tell the router with
    /// [`Router::handler_refused`] so the request is answered instead of lost.
    Request {
        /// The handler connection.
        to: ConnId,
        /// The JSON body.
        body: Vec<u8>,
        /// The request's token.
        token: u64,
    },
    /// Connect to a handler of this type that listens on its own socket (`correlate =
    /// "connection"`), send it this request, and report with [`Router::dial_opened`] or
    /// [`Router::dial_failed`].
    Dial {
        /// The handler type.
        kind: String,
        /// The request's token.
        token: u64,
        /// The JSON body.
        body: Vec<u8>,
    },
    /// Close this handler connection (a dialled connection whose one request is over).
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Tell this client to go elsewhere, answering its request `id`, and close its connection
    /// once that is written (`server/redirect.rs` mints the token if asked to).
    Redirect {
        /// The client's connection.
        to: ConnId,
        /// The request it answers.
        id: Option<String>,
        /// Where to.
        url: String,
        /// What to log in with there.
        token: Option<RedirectToken>,
    },
    /// The auth handler accepted this client's login: `data` is its answer's `payload.data`
    /// (JSON text, for the server to check: `{"user","info"}`).
    LoginAccepted {
        /// The client connection.
        conn: ConnId,
        /// The answer's data.
        data: Option<String>,
    },
    /// This client's login to the auth handler failed: send it `body` (an error frame) and
    /// close. `by_handler`: the handler itself refused (a failed login for the rate limits);
    /// otherwise it could not answer (not running, busy, timed out, gone, malformed answer).
    LoginRefused {
        /// The client connection.
        conn: ConnId,
        /// The error frame.
        body: Vec<u8>,
        /// Whether the handler's own answer refused it.
        by_handler: bool,
    },
    /// Write these records to the delivery store, then tell the router with
    /// [`Router::store_done`] (the report waits for the commit).
    Store {
        /// Matches the results to the report waiting for them.
        ticket: u64,
        /// The copies to keep, one per recipient.
        records: Vec<crate::delivery::Record>,
    },
}

impl Action {
    /// One body to these connections: [`Action::Send`] for one, else [`Action::SendEach`].
    pub(crate) fn send_each(to: Vec<ConnId>, body: Vec<u8>) -> Action {
        match *to {
            [one] => Action::Send { to: one, body },
            _ => Action::SendEach { to, body },
        }
    }
}

/// Router limits.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// This server's name.
    pub server: String,
    /// How long a handler (or a peer server) has to answer.
    pub request_timeout: Duration,
    /// Longest `sendHandler` chain (number of handlers a request may visit).
    pub max_chain_depth: usize,
    /// Largest frame body anyone is sent: a request or peer message that would be larger once
    /// wrapped in its header is refused, never sent (handlers and peers close on oversized frames).
    pub max_frame: usize,
    /// How long the auth handler has to answer a login (`[auth] auth_timeout_ms`).
    pub login_timeout: Duration,
    /// Most logins in flight to the auth handler (`[auth] max_inflight`).
    pub max_logins: usize,
}

/// Who started a piece of work, and so who gets the one answer to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A client's message: answered with a reply carrying its id.
    Client {
        /// The client connection.
        conn: ConnId,
        /// The client's id.
        id: Option<ReplyId>,
    },
    /// A peer server's message: answered with an ack for its number.
    Peer {
        /// The link it came over.
        link: ConnId,
        /// The peer's message number.
        msg: String,
        /// The peer's name.
        server: String,
    },
    /// A handler's push: answered with a report.
    Push {
        /// The handler connection.
        handler: ConnId,
        /// The handler's id for the push.
        id: Option<String>,
    },
    /// A client's login sent to the auth handler: answered with [`Action::LoginAccepted`] or
    /// [`Action::LoginRefused`].
    Login {
        /// The client connection.
        conn: ConnId,
        /// The client's address (`ip:port`), told to the handler.
        address: String,
        /// The listener it connected to, told to the handler.
        listener: String,
        /// That listener's transport (`tcp`, `tls`, `ws`, `wss`).
        transport: &'static str,
    },
}

impl Origin {
    fn client(&self) -> Option<ConnId> {
        match self {
            Origin::Client { conn, .. } => Some(*conn),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Pool {
    links: Vec<ConnId>,
    max_inflight: usize,
    next: usize,
    mode: HandlerMode,
    /// Requests (token, body) waiting for a free connection (`order`), a dial slot
    /// (`connection`), or a first connection while the type starts (any mode), oldest first.
    waiting: VecDeque<(u64, Vec<u8>)>,
    /// The bytes of the bodies in `waiting`.
    waiting_bytes: usize,
    /// A process of the type is starting or being restarted (or the server itself is starting):
    /// with no connection, requests wait for one instead of failing `handler_not_running`.
    starting: bool,
    /// Dialled connections open or being opened (`connection`).
    open: usize,
    /// Index of this type's figures in `RouterStats::handlers`.
    stat: usize,
    /// The type's name, shared by its requests in flight.
    name: Arc<str>,
    /// Who may send to the type (`allow` / `deny`).
    access: Access,
}

#[derive(Debug)]
struct Link {
    kind: String,
    inflight: usize,
    correlate: Correlate,
    /// The one request in flight on an `order` or `connection` link.
    current: Option<u64>,
    /// `order`: answers still owed for requests that timed out. The next answers on the link are
    /// theirs and are dropped; until then the link gets no new request.
    late: usize,
}

#[derive(Debug)]
struct Client {
    /// `from` of this client's requests, shared by them; its `user` is the client's.
    sender: Arc<Sender>,
    pending: usize,
    /// The groups the session's `info` names (for `allow` / `deny`).
    info_groups: Vec<String>,
}

#[derive(Debug)]
struct Pending {
    origin: Origin,
    /// The handler connection it went to; `None` while waiting or being dialled.
    handler: Option<ConnId>,
    kind: Arc<str>,
    from: Arc<Sender>,
    scope: Scope,
    via: Vec<String>,
    hops: u32,
    /// Index of the handler type's figures (set by `dispatch`).
    stat: usize,
    /// When it was sent to the handler (set by `dispatch`).
    sent_at: Instant,
}

/// A deadline the router keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// A handler request.
    Request(u64),
    /// A message to a peer server.
    Remote(u64),
    /// A `bester.dial` waiting for an answer (`router/streams.rs`).
    Dial(u64),
}

/// The error body a handler should put in `payload.data` with status "error"; passed on as is.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandlerErrorBody {
    error: String,
    code: String,
}

/// The routing state of one server.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    presence: presence::Presence,
    groups: groups::Groups,
    directory: directory::Directory,
    clients: IdMap<ConnId, Client>,
    pools: BTreeMap<String, Pool>,
    stats: RouterStats,
    links: IdMap<ConnId, Link>,
    pending: IdMap<u64, Pending>,
    peers: BTreeMap<String, PeerEntry>,
    peer_links: IdMap<ConnId, String>,
    fanouts: IdMap<u64, Fanout>,
    deliveries: IdMap<u64, Delivery>,
    remote: IdMap<u64, Remote>,
    deadlines: Deadlines,
    next_id: u64,
    /// Logins in flight to the auth handler.
    logins: usize,
    /// Storing pushes (`router/durable.rs`).
    durable: durable::Durable,
    /// Client-to-client streams (`router/streams.rs`).
    streams: streams::Streams,
}

impl Router {
    /// A router with these limits and no handler types.
    pub fn new(config: RouterConfig) -> Self {
        Router {
            config,
            presence: presence::Presence::default(),
            groups: groups::Groups::default(),
            directory: directory::Directory::default(),
            clients: IdMap::default(),
            pools: BTreeMap::new(),
            stats: RouterStats::default(),
            links: IdMap::default(),
            pending: IdMap::default(),
            peers: BTreeMap::new(),
            peer_links: IdMap::default(),
            fanouts: IdMap::default(),
            deliveries: IdMap::default(),
            remote: IdMap::default(),
            deadlines: Deadlines::default(),
            next_id: 1,
            logins: 0,
            durable: durable::Durable::default(),
            streams: streams::Streams::default(),
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Declare a configured handler type (it exists even while no handler is connected).
    pub fn add_type(&mut self, kind: &str, max_inflight: usize) {
        self.add_type_with(
            kind,
            HandlerMode {
                max_inflight,
                ..HandlerMode::default()
            },
        );
    }

    /// Declare a handler type with how its answers are correlated.
    pub fn add_type_with(&mut self, kind: &str, mode: HandlerMode) {
        let stat = self.stats.handlers.len();
        self.stats.handlers.push(HandlerStats::default());
        self.pools.insert(
            kind.to_string(),
            Pool {
                links: Vec::new(),
                max_inflight: mode.max_inflight,
                next: 0,
                mode,
                waiting: VecDeque::new(),
                waiting_bytes: 0,
                starting: false,
                open: 0,
                stat,
                name: Arc::from(kind),
                access: Access::default(),
            },
        );
    }

    /// The router's figures (per handler type in the order of [`Router::add_type`], per peer in
    /// the order of [`Router::add_peer`]).
    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    /// Count a request's outcome for its handler type.
    fn ended(&mut self, stat: usize, outcome: RequestOutcome) {
        self.stats.handlers[stat].ended(outcome);
    }

    /// A handler connection for `kind` is ready.
    pub fn handler_connected(&mut self, conn: ConnId, kind: &str) {
        if let Some(pool) = self.pools.get_mut(kind) {
            pool.links.push(conn);
            self.links.insert(
                conn,
                Link {
                    kind: kind.to_string(),
                    inflight: 0,
                    correlate: pool.mode.correlate,
                    current: None,
                    late: 0,
                },
            );
        }
    }

    /// A handler connection closed: everything in flight to it is answered `handler_unavailable`.
    pub fn handler_gone(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        let kind = link.kind.clone();
        let mut lost: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.handler == Some(conn))
            .map(|(token, _)| *token)
            .collect();
        lost.sort_unstable();
        for token in lost {
            let pending = self.take_pending(token).expect("listed above");
            self.ended(pending.stat, RequestOutcome::Unavailable);
            let text = format!("the {:?} handler went away before answering", pending.kind);
            self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::HandlerUnavailable, text),
                out,
            );
        }
        let link = self.links.remove(&conn).expect("looked up above");
        if let Some(pool) = self.pools.get_mut(&kind) {
            pool.links.retain(|c| *c != conn);
            if link.correlate == Correlate::Connection {
                pool.open = pool.open.saturating_sub(1);
            }
        }
        self.pump(out);
    }

    /// Handler connections per configured type.
    pub fn handler_counts(&self) -> BTreeMap<String, usize> {
        self.pools
            .iter()
            .map(|(kind, pool)| (kind.clone(), pool.links.len()))
            .collect()
    }

    /// A client connection identified as `user`: it counts for the user's presence (watchers
    /// are told).
    pub fn client_identified(&mut self, conn: ConnId, user: &str, out: &mut Vec<Action>) {
        let pending = self.clients.get(&conn).map_or(0, |c| c.pending);
        self.client_gone(conn, out);
        self.clients.insert(
            conn,
            Client {
                sender: Arc::new(Sender {
                    user: Some(user.to_string()),
                    server: self.config.server.clone(),
                    handler: None,
                    info: None,
                }),
                pending,
                info_groups: Vec::new(),
            },
        );
        self.presence_connected(conn, user, out);
    }

    /// Set (or clear) the authorisation data a client's requests carry as `from.info`; the
    /// groups it names (`"groups":[…]`) count for `allow`/`deny`, and the user joins them.
    pub fn set_client_info(&mut self, conn: ConnId, info: Option<Info>, out: &mut Vec<Action>) {
        #[derive(Deserialize)]
        struct InfoGroups {
            #[serde(default)]
            groups: Vec<String>,
        }
        let groups = info
            .as_ref()
            .and_then(|i| serde_json::from_str::<InfoGroups>(i.0.get()).ok())
            .map(|i| i.groups)
            .unwrap_or_default();
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        let mut sender = Sender::clone(&client.sender);
        sender.info = info;
        client.sender = Arc::new(sender);
        client.info_groups.clone_from(&groups);
        self.info_groups(conn, &groups, out);
    }

    /// A client connection closed or logged out. Its requests in flight stay: their fan-out still
    /// reaches the other recipients; the reply to the closed connection is dropped by the server.
    /// Its presence subscriptions end, and watchers of its user are told; its streams end.
    pub fn client_gone(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        self.streams_gone(conn, out);
        let Some(client) = self.clients.remove(&conn) else {
            return;
        };
        let user = client.sender.user.as_deref().unwrap_or_default();
        self.presence_disconnected(conn, user, out);
    }

    /// Connections of `user` on this server.
    pub fn connections_of(&self, user: &str) -> usize {
        self.presence.conns(user).map_or(0, <[ConnId]>::len)
    }

    /// Requests from this client connection still waiting for an answer.
    pub fn pending_for(&self, conn: ConnId) -> usize {
        self.clients.get(&conn).map_or(0, |c| c.pending)
    }

    /// Requests in flight in total (handler requests, server fan-outs, and answers waiting for
    /// the delivery store's commit before they are reported): a drain waits for all of them.
    pub fn pending_total(&self) -> usize {
        self.pending.len() + self.fanouts.len() + self.storing()
    }

    fn count_pending(&mut self, origin: &Origin, delta: isize) {
        if let Origin::Login { .. } = origin {
            self.logins = self.logins.saturating_add_signed(delta);
        }
        if let Some(conn) = origin.client()
            && let Some(client) = self.clients.get_mut(&conn)
        {
            client.pending = client.pending.saturating_add_signed(delta);
        }
    }

    /// A message from an identified client: dispatch it to a handler of its type.
    pub fn client_message(
        &mut self,
        conn: ConnId,
        msg: ClientMessage<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if !self.clients.contains_key(&conn) {
            warn!("conn={conn} message from a connection that is not identified");
            return;
        }
        if let Err(error) = self.check_access(conn, &msg.payload.kind) {
            let origin = Origin::Client {
                conn,
                id: msg.id.as_deref().map(ReplyId::new),
            };
            return self.fail(&origin, error, out);
        }
        let Some(client) = self.clients.get(&conn) else {
            return;
        };
        let pending = Pending {
            origin: Origin::Client {
                conn,
                id: msg.id.as_deref().map(ReplyId::new),
            },
            handler: None,
            kind: self.type_name(&msg.payload.kind),
            from: client.sender.clone(),
            scope: msg.scope,
            via: Vec::new(),
            hops: 0,
            stat: 0,
            sent_at: now,
        };
        self.dispatch(pending, &msg.payload, now, out);
    }

    /// `kind` as shared by the requests of a configured type (a type nobody serves gets its own
    /// copy: its request is refused at once).
    fn type_name(&self, kind: &str) -> Arc<str> {
        self.pools
            .get(kind)
            .map_or_else(|| Arc::from(kind), |pool| pool.name.clone())
    }

    /// Send a request to a handler of `pending.kind`, or answer the origin with why not.
    fn dispatch(
        &mut self,
        mut pending: Pending,
        payload: &PayloadRef<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(pool) = self.pools.get_mut(&*pending.kind) else {
            let text = format!("no handler for type {:?}", pending.kind);
            return self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::UnknownType, text),
                out,
            );
        };
        pending.stat = pool.stat;
        if pool.mode.correlate != Correlate::Request {
            return self.dispatch_one_at_a_time(pending, payload, now, out);
        }
        // Least loaded link, ties broken round-robin.
        let count = pool.links.len();
        let chosen = (0..count)
            .map(|i| pool.links[(pool.next + i) % count])
            .min_by_key(|c| self.links.get(c).map_or(usize::MAX, |l| l.inflight));
        let stat = pool.stat;
        let Some(handler) = chosen else {
            if pool.starting {
                return self.wait_for_start(pending, payload, now, out);
            }
            self.stats.handlers[stat].ended(RequestOutcome::Unavailable);
            let text = format!("the {:?} handler is not running", pending.kind);
            return self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::HandlerNotRunning, text),
                out,
            );
        };
        pool.next = (pool.next + 1) % count;
        let max_inflight = pool.max_inflight;
        let link = self
            .links
            .get_mut(&handler)
            .expect("pool links are in links");
        if link.inflight >= max_inflight {
            self.stats.handlers[stat].ended(RequestOutcome::Busy);
            let text = format!(
                "the {:?} handler has {} requests in flight",
                pending.kind, link.inflight
            );
            return self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::HandlerBusy, text),
                out,
            );
        }
        let Some((token, body)) = self.request_body(&pending, payload, out) else {
            return;
        };
        self.links.get_mut(&handler).expect("chosen above").inflight += 1;
        out.push(Action::Request {
            to: handler,
            body,
            token,
        });
        pending.handler = Some(handler);
        self.track(token, pending, now);
    }

    /// A token and the request body for `pending`, or `None` (origin answered) when the request
    /// would be over the frame limit.
    fn request_body(
        &mut self,
        pending: &Pending,
        payload: &PayloadRef<'_>,
        out: &mut Vec<Action>,
    ) -> Option<(u64, Vec<u8>)> {
        let token = self.next_id();
        let mut digits = idmap::Digits::default();
        let body = match &pending.origin {
            Origin::Login {
                address,
                listener,
                transport,
                ..
            } => handler_login_request(
                digits.of(token),
                address,
                (listener, transport),
                payload.data.as_deref().unwrap_or("null"),
            ),
            _ => handler_request(
                digits.of(token),
                pending.scope,
                &pending.from,
                &pending.via,
                payload,
            ),
        };
        if body.len() > self.config.max_frame {
            self.ended(pending.stat, RequestOutcome::Error);
            let text = too_large(
                body.len(),
                self.config.max_frame,
                &format!("the {:?} handler", pending.kind),
            );
            self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::FrameTooLarge, text),
                out,
            );
            return None;
        }
        Some((token, body))
    }

    /// Keep a request in flight (or waiting) until answered or timed out.
    fn track(&mut self, token: u64, mut pending: Pending, now: Instant) {
        pending.sent_at = now;
        self.stats.handlers[pending.stat].in_flight += 1;
        self.count_pending(&pending.origin, 1);
        let timeout = self.timeout_of(&pending.origin);
        self.pending.insert(token, pending);
        self.deadlines.push(now + timeout, Due::Request(token));
    }

    /// Remove a pending request, keeping the per-link and per-client counts right.
    fn take_pending(&mut self, token: u64) -> Option<Pending> {
        let pending = self.pending.remove(&token)?;
        if let Some(link) = pending.handler.and_then(|h| self.links.get_mut(&h)) {
            link.inflight = link.inflight.saturating_sub(1);
            if link.current == Some(token) {
                link.current = None;
            }
        }
        let stats = &mut self.stats.handlers[pending.stat];
        stats.in_flight = stats.in_flight.saturating_sub(1);
        self.count_pending(&pending.origin, -1);
        Some(pending)
    }

    /// A request could not be queued to its handler (the handler is not reading fast enough):
    /// answer it `handler_busy`; the handler keeps its connection.
    pub fn handler_refused(&mut self, token: u64, out: &mut Vec<Action>) {
        if let Some(pending) = self.take_pending(token) {
            self.ended(pending.stat, RequestOutcome::Busy);
            let text = format!(
                "the {:?} handler is not taking requests fast enough (its queue is full)",
                pending.kind
            );
            self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::HandlerBusy, text),
                out,
            );
        }
        self.pump(out);
    }

    /// Answer every request in flight with `code` (shutdown).
    pub fn fail_all(&mut self, code: ErrorCode, out: &mut Vec<Action>) {
        let mut tokens: Vec<u64> = self.pending.keys().copied().collect();
        tokens.sort_unstable();
        for token in tokens {
            let pending = self.take_pending(token).expect("listed above");
            self.ended(pending.stat, RequestOutcome::Unavailable);
            let text = format!(
                "the server is shutting down; the {:?} request was not answered",
                pending.kind
            );
            self.fail(&pending.origin, ErrorBody::new(code, text), out);
        }
        let mut fanouts: Vec<u64> = self.fanouts.keys().copied().collect();
        fanouts.sort_unstable();
        for id in fanouts {
            let fanout = self.fanouts.remove(&id).expect("listed above");
            self.count_pending(&fanout.origin, -1);
            self.fail(
                &fanout.origin,
                ErrorBody::new(code, "the server is shutting down"),
                out,
            );
        }
        self.remote.clear();
    }

    /// The earliest deadline, for the poll timeout.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        // Drop deadlines of work already answered.
        while let Some((_, due)) = self.deadlines.peek() {
            let live = match due {
                Due::Request(token) => self.pending.contains_key(&token),
                Due::Remote(msg) => self.remote.contains_key(&msg),
                Due::Dial(id) => self.streams.dialling(id),
            };
            if live {
                break;
            }
            self.deadlines.pop();
        }
        self.deadlines.peek().map(|(at, _)| at)
    }

    /// Answer timeouts for everything whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Action>) {
        while let Some((at, due)) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            match due {
                Due::Request(token) => {
                    if let Some(pending) = self.take_pending(token) {
                        if self.never_started(&pending) {
                            self.ended(pending.stat, RequestOutcome::Unavailable);
                            let text = format!("the {:?} handler is not running", pending.kind);
                            let error = ErrorBody::new(ErrorCode::HandlerNotRunning, text);
                            self.fail(&pending.origin, error, out);
                            continue;
                        }
                        self.ended(pending.stat, RequestOutcome::Timeout);
                        self.after_timeout(pending.handler, out);
                        warn!(
                            "request {token} to the {:?} handler timed out",
                            pending.kind
                        );
                        let text = format!(
                            "the {:?} handler did not answer within {} ms",
                            pending.kind,
                            self.timeout_of(&pending.origin).as_millis()
                        );
                        self.fail(
                            &pending.origin,
                            ErrorBody::new(ErrorCode::HandlerTimeout, text),
                            out,
                        );
                    }
                }
                Due::Remote(msg) => self.remote_timed_out(msg, out),
                Due::Dial(id) => self.stream_dial_timed_out(id, out),
            }
        }
        self.pump(out);
    }
}

/// Why a message cannot be forwarded: wrapped in its header it would be over the frame limit.
fn too_large(len: usize, max: usize, to: &str) -> String {
    format!(
        "with its header the message to {to} would be {len} bytes, over the limit of {max} bytes"
    )
}

/// Parse JSON text into a `RawValue` (test and builder helper).
pub fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_string()).expect("valid JSON")
}

#[cfg(test)]
mod tests;
