//! The router, sans-io: who is online, which handler connections serve which type, and which
//! requests are in flight. Events come in (a client message, a handler frame, a connection gone, the
//! clock passing a deadline); [`Action`]s come out for the server to carry out. Nothing here touches
//! a socket or reads the clock, so every routing rule is tested by asserting the actions.
//!
//! Rules (see `protocol/PROTOCOL.md`, "Routing"):
//! - every client message gets exactly one direct reply with its id;
//! - `sendClients` pushes to every connection of the named users except the originating one, which
//!   gets the reply instead; the reply carries `delivered`/`offline`, and the data only if the sender
//!   is one of the recipients;
//! - a request whose handler goes away or times out is answered with an error, never dropped.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use log::{debug, warn};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::protocol::message::{
    self, ClientFrame, ClientHeader, ClientMessage, Command, HandlerMessage, Payload, Scope,
    Sender, Status, client_error, handler_delivery_report, handler_error_report, handler_request,
    to_body,
};
use crate::protocol::{ErrorCode, error::ErrorBody};
use crate::server::token::ConnId;

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
}

/// Router limits.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// This server's name.
    pub server: String,
    /// How long a handler has to answer.
    pub request_timeout: Duration,
    /// Longest `sendHandler` chain (number of handlers a request may visit).
    pub max_chain_depth: usize,
}

#[derive(Debug)]
struct Pool {
    links: Vec<ConnId>,
    max_inflight: usize,
    next: usize,
}

#[derive(Debug)]
struct Link {
    kind: String,
    inflight: usize,
}

#[derive(Debug)]
struct Client {
    user: String,
    pending: usize,
}

#[derive(Debug)]
struct Pending {
    origin: ConnId,
    id: Option<String>,
    handler: ConnId,
    kind: String,
    from: Sender,
    via: Vec<String>,
}

/// The error body a handler should put in `payload.data` with status "error".
#[derive(Deserialize)]
struct HandlerErrorBody {
    error: String,
    code: String,
}

/// The routing state of one server.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    presence: HashMap<String, Vec<ConnId>>,
    clients: HashMap<ConnId, Client>,
    pools: BTreeMap<String, Pool>,
    links: HashMap<ConnId, Link>,
    pending: HashMap<u64, Pending>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    next_request: u64,
}

impl Router {
    /// A router with these limits and no handler types.
    pub fn new(config: RouterConfig) -> Self {
        Router {
            config,
            presence: HashMap::new(),
            clients: HashMap::new(),
            pools: BTreeMap::new(),
            links: HashMap::new(),
            pending: HashMap::new(),
            deadlines: BinaryHeap::new(),
            next_request: 1,
        }
    }

    /// Declare a configured handler type (it exists even while no handler is connected).
    pub fn add_type(&mut self, kind: &str, max_inflight: usize) {
        self.pools.insert(
            kind.to_string(),
            Pool {
                links: Vec::new(),
                max_inflight,
                next: 0,
            },
        );
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
                },
            );
        }
    }

    /// A handler connection closed: everything in flight to it is answered `handler_unavailable`.
    pub fn handler_gone(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let Some(link) = self.links.remove(&conn) else {
            return;
        };
        if let Some(pool) = self.pools.get_mut(&link.kind) {
            pool.links.retain(|c| *c != conn);
        }
        let mut lost: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.handler == conn)
            .map(|(token, _)| *token)
            .collect();
        lost.sort_unstable();
        for token in lost {
            let pending = self.take_pending(token).expect("listed above");
            let text = format!("the {:?} handler went away before answering", pending.kind);
            self.answer_error(&pending, ErrorCode::HandlerUnavailable, text, out);
        }
    }

    /// Handler connections per configured type.
    pub fn handler_counts(&self) -> BTreeMap<String, usize> {
        self.pools
            .iter()
            .map(|(kind, pool)| (kind.clone(), pool.links.len()))
            .collect()
    }

    /// Whether `kind` is a configured handler type.
    pub fn has_type(&self, kind: &str) -> bool {
        self.pools.contains_key(kind)
    }

    /// A client connection identified as `user`.
    pub fn client_identified(&mut self, conn: ConnId, user: &str) {
        self.client_gone(conn);
        self.presence
            .entry(user.to_string())
            .or_default()
            .push(conn);
        self.clients.insert(
            conn,
            Client {
                user: user.to_string(),
                pending: 0,
            },
        );
    }

    /// A client connection closed or logged out. Its requests in flight stay: their fan-out still
    /// reaches the other recipients; the reply to the closed connection is dropped by the server.
    pub fn client_gone(&mut self, conn: ConnId) {
        let Some(client) = self.clients.remove(&conn) else {
            return;
        };
        if let Some(conns) = self.presence.get_mut(&client.user) {
            conns.retain(|c| *c != conn);
            if conns.is_empty() {
                self.presence.remove(&client.user);
            }
        }
    }

    /// Connections of `user` on this server.
    pub fn connections_of(&self, user: &str) -> usize {
        self.presence.get(user).map_or(0, Vec::len)
    }

    /// Requests from this client connection still waiting for an answer.
    pub fn pending_for(&self, conn: ConnId) -> usize {
        self.clients.get(&conn).map_or(0, |c| c.pending)
    }

    /// Requests in flight in total.
    pub fn pending_total(&self) -> usize {
        self.pending.len()
    }

    /// A message from an identified client: dispatch it to a handler of its type.
    pub fn client_message(
        &mut self,
        conn: ConnId,
        msg: ClientMessage,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(client) = self.clients.get(&conn) else {
            warn!("conn={conn} message from a connection that is not identified");
            return;
        };
        let from = Sender {
            user: Some(client.user.clone()),
            server: self.config.server.clone(),
            handler: None,
        };
        let kind = msg.payload.kind.clone();
        let pending = Pending {
            origin: conn,
            id: msg.id,
            handler: conn,
            kind: kind.clone(),
            from,
            via: Vec::new(),
        };
        self.dispatch(pending, msg.scope, &msg.payload, now, out);
    }

    /// Send a request to a handler of `pending.kind`, or answer the origin with why not.
    fn dispatch(
        &mut self,
        mut pending: Pending,
        scope: Scope,
        payload: &Payload,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(pool) = self.pools.get_mut(&pending.kind) else {
            let text = format!("no handler for type {:?}", pending.kind);
            return self.answer_error(&pending, ErrorCode::UnknownType, text, out);
        };
        // Least loaded link, ties broken round-robin.
        let count = pool.links.len();
        let chosen = (0..count)
            .map(|i| pool.links[(pool.next + i) % count])
            .min_by_key(|c| self.links.get(c).map_or(usize::MAX, |l| l.inflight));
        let Some(handler) = chosen else {
            let text = format!("the {:?} handler is not running", pending.kind);
            return self.answer_error(&pending, ErrorCode::HandlerNotRunning, text, out);
        };
        pool.next = (pool.next + 1) % count;
        let max_inflight = pool.max_inflight;
        let link = self
            .links
            .get_mut(&handler)
            .expect("pool links are in links");
        if link.inflight >= max_inflight {
            let text = format!(
                "the {:?} handler has {} requests in flight",
                pending.kind, link.inflight
            );
            return self.answer_error(&pending, ErrorCode::HandlerBusy, text, out);
        }
        link.inflight += 1;
        let token = self.next_request;
        self.next_request += 1;
        let body = handler_request(
            &token.to_string(),
            scope,
            &pending.from,
            &pending.via,
            payload,
        );
        out.push(Action::Send { to: handler, body });
        pending.handler = handler;
        if let Some(client) = self.clients.get_mut(&pending.origin) {
            client.pending += 1;
        }
        self.pending.insert(token, pending);
        self.deadlines
            .push(Reverse((now + self.config.request_timeout, token)));
    }

    /// Remove a pending request, keeping the per-link and per-client counts right.
    fn take_pending(&mut self, token: u64) -> Option<Pending> {
        let pending = self.pending.remove(&token)?;
        if let Some(link) = self.links.get_mut(&pending.handler) {
            link.inflight = link.inflight.saturating_sub(1);
        }
        if let Some(client) = self.clients.get_mut(&pending.origin) {
            client.pending = client.pending.saturating_sub(1);
        }
        Some(pending)
    }

    fn answer_error(
        &self,
        pending: &Pending,
        code: ErrorCode,
        text: String,
        out: &mut Vec<Action>,
    ) {
        debug!(
            "conn={} request for {:?} fails: {code}: {text}",
            pending.origin, pending.kind
        );
        let body = client_error(pending.id.as_deref(), &ErrorBody::new(code, text));
        out.push(Action::Send {
            to: pending.origin,
            body,
        });
    }

    /// A frame a handler sent (already parsed).
    pub fn handler_message(
        &mut self,
        conn: ConnId,
        msg: HandlerMessage,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        let kind = link.kind.clone();
        let Some(token) = msg.request.as_deref() else {
            return self.handler_push(conn, &kind, msg, out);
        };
        let owned = token
            .parse::<u64>()
            .ok()
            .filter(|t| self.pending.get(t).is_some_and(|p| p.handler == conn));
        let Some(token) = owned else {
            let error = ErrorBody::new(
                ErrorCode::BadHandlerReply,
                format!("no request {token:?} is waiting for an answer from this handler"),
            );
            debug!("conn={conn} handler={kind} {error}");
            let body = handler_error_report(msg.request.as_deref(), msg.id.as_deref(), &error);
            out.push(Action::Send { to: conn, body });
            return;
        };
        let pending = self.take_pending(token).expect("checked above");
        self.route_answer(conn, pending, msg, now, out);
    }

    /// Route a handler's answer to the request it answers.
    fn route_answer(
        &mut self,
        conn: ConnId,
        pending: Pending,
        msg: HandlerMessage,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if msg.status == Status::Error {
            let data = msg.payload.as_ref().and_then(|p| p.data.as_deref());
            let body =
                match data.and_then(|d| serde_json::from_str::<HandlerErrorBody>(d.get()).ok()) {
                    Some(e) => to_body(&ClientFrame {
                        header: ClientHeader::reply(Status::Error, pending.id.as_deref()),
                        data: &serde_json::json!({"error": e.error, "code": e.code}),
                    }),
                    None => client_error(
                        pending.id.as_deref(),
                        &ErrorBody::new(
                            ErrorCode::HandlerError,
                            format!("the {:?} handler reported an error", pending.kind),
                        ),
                    ),
                };
            out.push(Action::Send {
                to: pending.origin,
                body,
            });
            return;
        }
        let Some(payload) = msg.payload else {
            let error = ErrorBody::new(ErrorCode::BadHandlerReply, "an ok answer needs a payload");
            out.push(Action::Send {
                to: conn,
                body: handler_error_report(msg.request.as_deref(), None, &error),
            });
            let text = format!("the {:?} handler sent a malformed answer", pending.kind);
            return self.answer_error(&pending, ErrorCode::BadHandlerReply, text, out);
        };
        match msg.command {
            Command::Reply => {
                let body =
                    message::client_ok(pending.id.as_deref(), Some(&payload.kind), &payload.data);
                out.push(Action::Send {
                    to: pending.origin,
                    body,
                });
            }
            Command::SendClients(users) => {
                let (delivered, offline) =
                    self.push_to_users(&users, &payload, &pending.from, Some(pending.origin), out);
                let sender_included = pending
                    .from
                    .user
                    .as_ref()
                    .is_some_and(|u| users.contains(u));
                let mut header = ClientHeader::reply(Status::Ok, pending.id.as_deref());
                header.kind_of = Some(&payload.kind);
                header.delivered = Some(&delivered);
                header.offline = Some(&offline);
                let data = if sender_included {
                    payload.data.as_deref()
                } else {
                    None
                };
                out.push(Action::Send {
                    to: pending.origin,
                    body: to_body(&ClientFrame {
                        header,
                        data: &data,
                    }),
                });
            }
            Command::SendServers(servers) => {
                let text = format!(
                    "cannot deliver to servers {servers:?}: this server has no federation links"
                );
                self.answer_error(&pending, ErrorCode::FederationUnavailable, text, out);
            }
            Command::SendHandler(next) => self.chain(pending, next, &payload, now, out),
        }
    }

    /// Pass a payload on to the handler of `next`, refusing loops and over-long chains.
    fn chain(
        &mut self,
        mut pending: Pending,
        next: String,
        payload: &Payload,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if next == pending.kind || pending.via.contains(&next) {
            let text = format!(
                "sendHandler to {next:?} would loop (chain: {} -> {})",
                pending.via.join(" -> "),
                pending.kind
            );
            return self.answer_error(&pending, ErrorCode::HandlerLoop, text, out);
        }
        if pending.via.len() + 2 > self.config.max_chain_depth {
            let text = format!(
                "sendHandler chain longer than {} handlers",
                self.config.max_chain_depth
            );
            return self.answer_error(&pending, ErrorCode::ChainTooDeep, text, out);
        }
        let previous = std::mem::replace(&mut pending.kind, next);
        pending.via.push(previous);
        let scope = if pending.from.user.is_some() {
            Scope::Client
        } else {
            Scope::Server
        };
        self.dispatch(pending, scope, payload, now, out);
    }

    /// Push a payload to every connection of `users` (except `skip`); returns (delivered, offline).
    fn push_to_users(
        &self,
        users: &[String],
        payload: &Payload,
        from: &Sender,
        skip: Option<ConnId>,
        out: &mut Vec<Action>,
    ) -> (Vec<String>, Vec<String>) {
        let mut delivered = Vec::new();
        let mut offline = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let push = to_body(&ClientFrame {
            header: ClientHeader::push(&payload.kind, from),
            data: &payload.data,
        });
        for user in users {
            if !seen.insert(user.as_str()) {
                continue;
            }
            match self.presence.get(user) {
                Some(conns) => {
                    for conn in conns.iter().filter(|c| Some(**c) != skip) {
                        out.push(Action::Send {
                            to: *conn,
                            body: push.clone(),
                        });
                    }
                    delivered.push(user.clone());
                }
                None => offline.push(user.clone()),
            }
        }
        (delivered, offline)
    }

    /// A handler frame with no `request`: a push to users, answered with a delivery report.
    fn handler_push(
        &mut self,
        conn: ConnId,
        kind: &str,
        msg: HandlerMessage,
        out: &mut Vec<Action>,
    ) {
        let reject = |text: String, out: &mut Vec<Action>| {
            let error = ErrorBody::new(ErrorCode::BadHandlerReply, text);
            out.push(Action::Send {
                to: conn,
                body: handler_error_report(None, msg.id.as_deref(), &error),
            });
        };
        let Some(payload) = &msg.payload else {
            return reject("a push needs a payload".into(), out);
        };
        match &msg.command {
            Command::SendClients(users) => {
                let from = Sender {
                    user: None,
                    server: self.config.server.clone(),
                    handler: Some(kind.to_string()),
                };
                let (delivered, offline) = self.push_to_users(users, payload, &from, None, out);
                out.push(Action::Send {
                    to: conn,
                    body: handler_delivery_report(msg.id.as_deref(), &delivered, &offline),
                });
            }
            Command::SendServers(servers) => {
                let error = ErrorBody::new(
                    ErrorCode::FederationUnavailable,
                    format!(
                        "cannot deliver to servers {servers:?}: this server has no federation links"
                    ),
                );
                out.push(Action::Send {
                    to: conn,
                    body: handler_error_report(None, msg.id.as_deref(), &error),
                });
            }
            Command::Reply | Command::SendHandler(_) => reject(
                "a push (no request) must use sendClients or sendServers".into(),
                out,
            ),
        }
    }

    /// Answer every request in flight with `code` (shutdown).
    pub fn fail_all(&mut self, code: ErrorCode, out: &mut Vec<Action>) {
        let mut tokens: Vec<u64> = self.pending.keys().copied().collect();
        tokens.sort_unstable();
        for token in tokens {
            let pending = self.take_pending(token).expect("listed above");
            let text = format!(
                "the server is shutting down; the {:?} request was not answered",
                pending.kind
            );
            self.answer_error(&pending, code, text, out);
        }
    }

    /// The earliest request deadline, for the poll timeout.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        // Drop deadlines of requests already answered.
        while let Some(Reverse((_, token))) = self.deadlines.peek() {
            if self.pending.contains_key(token) {
                break;
            }
            self.deadlines.pop();
        }
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Answer `handler_timeout` for every request whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Action>) {
        while let Some(Reverse((at, token))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if let Some(pending) = self.take_pending(token) {
                warn!(
                    "conn={} request {token} to the {:?} handler timed out",
                    pending.origin, pending.kind
                );
                let text = format!(
                    "the {:?} handler did not answer within {} ms",
                    pending.kind,
                    self.config.request_timeout.as_millis()
                );
                self.answer_error(&pending, ErrorCode::HandlerTimeout, text, out);
            }
        }
    }
}

/// Parse JSON text into a `RawValue` (test and builder helper).
pub fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_string()).expect("valid JSON")
}

#[cfg(test)]
mod tests;
