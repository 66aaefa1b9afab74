//! The router's federation side: which peer servers are linked, `sendServers` fan-out with one
//! report per server, messages arriving from peers (dispatched to local handlers with scope
//! `server`), their acks, and what a lost link or a silent peer means for work in flight.
//!
//! What a peer may claim: a message's `from.server` must be the peer itself (it speaks for its own
//! users, never for a third server). A server relaying on a message that came from elsewhere sends
//! it as itself (`from: {server, handler}`). Loops are stopped twice over: a message is never sent
//! back to the server it came from, and it may cross at most [`MAX_HOPS`] links.
//!
//! Request-reply across servers: a `sendServers` with `"replies": true` answers its origin with
//! the reports and, as `data`, an object holding the reply data of each peer whose report is ok
//! (`null` when it had none); a reply that would take the answer over the frame limit is left
//! out and that peer's report becomes `frame_too_large`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use log::warn;

use super::respond::Outcome;
use super::{Action, Due, Origin, Pending, Router};
use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::protocol::message::{PayloadRef, RESERVED_PREFIX, Scope, Sender, Status};
use crate::protocol::peer::{PeerAck, PeerMessage, ServerReport, ServerReports, message_frame};
use crate::protocol::write;
use crate::router::ConnId;
use crate::stats::PeerStats;

/// Most links a message may cross.
pub const MAX_HOPS: u32 = 4;

/// A `sendServers` waiting for its peers' acks.
#[derive(Debug)]
pub(super) struct Fanout {
    pub origin: Origin,
    kind: String,
    waiting: usize,
    reports: ServerReports,
    /// Whether the origin asked for the peers' replies (`"replies": true`).
    replies: bool,
    /// With `replies`: the reply data (JSON text) of each peer whose report is ok.
    data: BTreeMap<String, Option<String>>,
}

/// Who waits for a message sent to a peer.
#[derive(Debug)]
pub(super) enum Waiter {
    /// A `sendServers` (its number in `fanouts`).
    Fanout(u64),
    /// A `sendClients` to users of the peer (its number in `deliveries`), with the users this
    /// frame named: (as the handler named them, their name on the peer).
    Delivery {
        /// The delivery.
        id: u64,
        /// The users of this frame.
        users: Vec<(String, String)>,
    },
    /// A delivery from the outbound queue for `server`, by its durable id.
    Forward {
        /// The peer.
        server: String,
        /// The delivery's durable id.
        row: u64,
    },
}

/// A message sent to a peer, waiting for its ack.
#[derive(Debug)]
pub(super) struct Remote {
    waiter: Waiter,
    server: String,
    link: ConnId,
    /// Index of the peer's figures.
    stat: usize,
    sent_at: Instant,
}

/// A configured peer as the router sees it.
#[derive(Debug)]
pub(super) struct PeerEntry {
    /// The live link, if any.
    pub(super) link: Option<ConnId>,
    /// Index of its figures in `RouterStats::peers`.
    pub(super) stat: usize,
    /// `[peers.X] allow_types`: the payload types the peer may send us (`None`: any).
    allow_types: Option<Vec<String>>,
    /// Whether its last link took stored deliveries (feature `store`; `None`: no link yet).
    pub(super) store: Option<bool>,
    /// Whether its link carries client-to-client streams (feature `stream`).
    pub(super) streams: bool,
}

impl Router {
    /// Declare a configured peer server (unlinked until [`Router::peer_up`]).
    pub fn add_peer(&mut self, name: &str) {
        let stat = self.stats.peers.len();
        self.stats.peers.push(PeerStats::default());
        self.peers.insert(
            name.to_string(),
            PeerEntry {
                link: None,
                stat,
                allow_types: None,
                store: None,
                streams: false,
            },
        );
    }

    /// `[peers.X] allow_types`: the payload types `name` may send us (`None`: any).
    pub fn set_peer_types(&mut self, name: &str, types: Option<Vec<String>>) {
        if let Some(entry) = self.peers.get_mut(name) {
            entry.allow_types = types;
        }
    }

    /// What every frame from peer `server` must meet, whatever it asks for: it speaks as
    /// itself, not with a built-in type, and only with a type it may send us.
    pub(super) fn check_peer_claims(
        &self,
        server: &str,
        from: &Sender,
        kind: &str,
    ) -> Result<(), ErrorBody> {
        if from.server != server {
            warn!(
                "peer={server} sent a message claiming to come from {:?}; refused",
                from.server
            );
            let text = format!(
                "peer {server:?} may only send as itself, not as {:?}",
                from.server
            );
            return Err(ErrorBody::new(ErrorCode::ForgedOrigin, text));
        }
        if kind.starts_with(RESERVED_PREFIX) {
            let text = format!("{kind:?} is a built-in type and cannot be sent between servers");
            return Err(ErrorBody::new(ErrorCode::ReservedType, text));
        }
        let allowed = self.peers.get(server).and_then(|e| e.allow_types.as_ref());
        if let Some(types) = allowed
            && !types.iter().any(|t| t == kind)
        {
            let text = format!(
                "peer {server:?} may not send {kind:?} messages to {:?}",
                self.config.server
            );
            return Err(ErrorBody::new(ErrorCode::Forbidden, text));
        }
        Ok(())
    }

    /// Wait for the ack of message `msg`, just sent to `server` over `link`.
    pub(super) fn await_ack(
        &mut self,
        msg: u64,
        waiter: Waiter,
        (server, link, stat): (&str, ConnId, usize),
        now: Instant,
    ) {
        self.stats.peers[stat].sent += 1;
        self.remote.insert(
            msg,
            Remote {
                waiter,
                server: server.to_string(),
                link,
                stat,
                sent_at: now,
            },
        );
        self.deadlines
            .push(now + self.config.request_timeout, Due::Remote(msg));
    }

    /// The link to `name` is authenticated and up.
    pub fn peer_up(&mut self, name: &str, link: ConnId) {
        if let Some(entry) = self.peers.get_mut(name) {
            entry.link = Some(link);
            self.peer_links.insert(link, name.to_string());
        }
    }

    /// The live link to `name`, if any.
    pub fn peer_link(&self, name: &str) -> Option<ConnId> {
        self.peers.get(name).and_then(|e| e.link)
    }

    /// The configured peers with the index of their figures in `RouterStats::peers`.
    pub fn peer_names(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.peers.iter().map(|(name, e)| (name.as_str(), e.stat))
    }

    /// A failure report for one server of a `sendServers`, counted by code.
    fn failed_report(&mut self, code: ErrorCode, text: impl Into<String>) -> ServerReport {
        self.stats.errors.count(code);
        ServerReport::failed(code, text)
    }

    /// The peer behind this link, if it is a live peer link.
    pub fn peer_of(&self, link: ConnId) -> Option<&str> {
        self.peer_links.get(&link).map(String::as_str)
    }

    /// Linked peers.
    pub fn peers_up(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|(_, e)| e.link.is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A peer link closed: every message waiting for its ack is reported `peer_unavailable`.
    pub fn peer_down(&mut self, link: ConnId, out: &mut Vec<Action>) {
        self.streams_link_down(link, out);
        let Some(name) = self.peer_links.remove(&link) else {
            return;
        };
        if let Some(entry) = self.peers.get_mut(&name)
            && entry.link == Some(link)
        {
            entry.link = None;
        }
        let mut lost: Vec<u64> = self
            .remote
            .iter()
            .filter(|(_, r)| r.link == link)
            .map(|(msg, _)| *msg)
            .collect();
        lost.sort_unstable();
        for msg in lost {
            let text = format!("the link to {name:?} went down before it acknowledged the message");
            let report = self.failed_report(ErrorCode::PeerUnavailable, text);
            self.settle_remote(msg, report, None, out);
        }
    }

    /// The sender a message carries to a peer: a local user as themselves; anything that came
    /// from another server is relayed as this server's handler (a peer never speaks for a third).
    pub(super) fn relay_sender(&self, from: &Sender, kind: &str) -> Sender {
        if from.server == self.config.server {
            // A session's authorisation data stays with this server's handlers.
            Sender {
                info: None,
                ..from.clone()
            }
        } else {
            Sender {
                user: None,
                server: self.config.server.clone(),
                handler: Some(kind.to_string()),
                info: None,
            }
        }
    }

    /// Send `payload` to each of `servers`; the origin is answered once all have reported (with
    /// their reply data too when it asked for `replies`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_servers(
        &mut self,
        origin: Origin,
        from: Sender,
        hops: u32,
        (servers, replies): (&[String], bool),
        payload: &PayloadRef<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let came_from = match &origin {
            Origin::Peer { server, .. } => Some(server.clone()),
            _ => None,
        };
        let fanout = self.next_id();
        let mut reports = ServerReports::new();
        let mut waiting = 0;
        let unique: BTreeSet<&String> = servers.iter().collect();
        for server in unique {
            let refusal = if *server == self.config.server {
                Some((
                    ErrorCode::HopLimit,
                    "a server does not send to itself".to_string(),
                ))
            } else if came_from.as_ref() == Some(server) {
                Some((
                    ErrorCode::HopLimit,
                    format!("the message came from {server:?}; it is not sent back"),
                ))
            } else if hops >= MAX_HOPS {
                Some((
                    ErrorCode::HopLimit,
                    format!("the message has crossed {hops} servers already"),
                ))
            } else {
                match self.peers.get(server).map(|e| (e.link, e.stat)) {
                    None => Some((
                        ErrorCode::UnknownPeer,
                        format!("{server:?} is not a configured peer"),
                    )),
                    Some((None, _)) => Some((
                        ErrorCode::PeerUnreachable,
                        format!("no link to {server:?} right now"),
                    )),
                    Some((Some(link), stat)) => {
                        let msg = self.next_id();
                        let body = message_frame(msg, &from, hops + 1, payload);
                        if body.len() > self.config.max_frame {
                            let text = super::too_large(
                                body.len(),
                                self.config.max_frame,
                                &format!("{server:?}"),
                            );
                            let report = self.failed_report(ErrorCode::FrameTooLarge, text);
                            reports.insert(server.clone(), report);
                            continue;
                        }
                        out.push(Action::Send { to: link, body });
                        self.await_ack(msg, Waiter::Fanout(fanout), (server, link, stat), now);
                        waiting += 1;
                        None
                    }
                }
            };
            if let Some((code, text)) = refusal {
                let report = self.failed_report(code, text);
                reports.insert(server.clone(), report);
            }
        }
        let fanout_state = Fanout {
            origin,
            kind: payload.kind.to_string(),
            waiting,
            reports,
            replies,
            data: BTreeMap::new(),
        };
        self.count_pending(&fanout_state.origin, 1);
        self.fanouts.insert(fanout, fanout_state);
        if waiting == 0 {
            self.finish_fanout(fanout, out);
        }
    }

    fn finish_fanout(&mut self, id: u64, out: &mut Vec<Action>) {
        let Some(mut fanout) = self.fanouts.remove(&id) else {
            return;
        };
        self.count_pending(&fanout.origin, -1);
        if !fanout.replies {
            let outcome = Outcome {
                kind_of: Some(&fanout.kind),
                servers: Some(&fanout.reports),
                ..Outcome::default()
            };
            return self.respond_ok(&fanout.origin, &outcome, out);
        }
        // The replies count against the frame limit: while the answer is over it, the largest
        // reply is left out and its server reported `frame_too_large`.
        let max = self.config.max_frame;
        loop {
            let data = replies_object(&fanout.data);
            let outcome = Outcome {
                kind_of: Some(&fanout.kind),
                data: Some(&data),
                servers: Some(&fanout.reports),
                ..Outcome::default()
            };
            let len = self.ok_body_len(&fanout.origin, &outcome);
            let largest = fanout
                .data
                .iter()
                .map(|(server, d)| (d.as_ref().map_or(4, String::len), server))
                .max();
            match largest {
                Some((size, server)) if len > max => {
                    let server = server.clone();
                    fanout.data.remove(&server);
                    let text = format!(
                        "the reply from {server:?} ({size} bytes of data) does not fit in the \
                         answer: it would be {len} bytes, over the frame limit of {max}"
                    );
                    let report = self.failed_report(ErrorCode::FrameTooLarge, text);
                    fanout.reports.insert(server, report);
                }
                _ => return self.respond_ok(&fanout.origin, &outcome, out),
            }
        }
    }

    /// Record one server's report (and its ack's data) for a message and answer whoever waits
    /// for it if it was the last they waited for.
    fn settle_remote(
        &mut self,
        msg: u64,
        report: ServerReport,
        data: Option<&str>,
        out: &mut Vec<Action>,
    ) {
        let Some(remote) = self.remote.remove(&msg) else {
            return;
        };
        let stats = &mut self.stats.peers[remote.stat];
        if report.status == Status::Ok {
            stats.acked += 1;
        } else {
            stats.failed += 1;
        }
        let id = match remote.waiter {
            Waiter::Fanout(id) => id,
            Waiter::Delivery { id, users } => return self.settle_delivery(id, users, report, out),
            Waiter::Forward { server, row } => {
                return self.forward_settled(server, row, report);
            }
        };
        let Some(fanout) = self.fanouts.get_mut(&id) else {
            return;
        };
        if fanout.replies && report.status == Status::Ok {
            fanout
                .data
                .insert(remote.server.clone(), data.map(str::to_string));
        }
        fanout.reports.insert(remote.server, report);
        fanout.waiting -= 1;
        if fanout.waiting == 0 {
            self.finish_fanout(id, out);
        }
    }

    pub(super) fn remote_timed_out(&mut self, msg: u64, out: &mut Vec<Action>) {
        if let Some(remote) = self.remote.get(&msg) {
            let text = format!(
                "{:?} did not acknowledge within {} ms",
                remote.server,
                self.config.request_timeout.as_millis()
            );
            warn!("message {msg} to peer {:?} timed out", remote.server);
            let report = self.failed_report(ErrorCode::PeerTimeout, text);
            self.settle_remote(msg, report, None, out);
        }
    }

    /// An ack from a peer for a message we sent it.
    pub fn peer_ack(
        &mut self,
        link: ConnId,
        ack: PeerAck<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let owned = ack
            .msg
            .parse::<u64>()
            .ok()
            .filter(|m| self.remote.get(m).is_some_and(|r| r.link == link));
        match owned {
            Some(msg) => {
                if let Some(remote) = self.remote.get(&msg) {
                    let waited = now.saturating_duration_since(remote.sent_at);
                    self.stats.peers[remote.stat].ack_latency.observe(waited);
                }
                self.settle_remote(msg, ack.report, ack.data.as_deref(), out)
            }
            None => warn!(
                "peer={} acknowledged message {:?}, which is not waiting for it",
                self.peer_of(link).unwrap_or("?"),
                ack.msg
            ),
        }
    }

    /// A message from a linked peer: check what it claims, then dispatch it to a local handler.
    pub fn peer_message(
        &mut self,
        link: ConnId,
        msg: PeerMessage<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(server) = self.peer_links.get(&link).cloned() else {
            return;
        };
        let origin = Origin::Peer {
            link,
            msg: msg.msg.into_owned(),
            server: server.clone(),
        };
        if let Err(error) = self.check_peer_claims(&server, &msg.from, &msg.payload.kind) {
            return self.fail(&origin, error, out);
        }
        if msg.hops > MAX_HOPS {
            let text = format!(
                "the message has crossed {} servers (at most {MAX_HOPS})",
                msg.hops
            );
            return self.fail(&origin, ErrorBody::new(ErrorCode::HopLimit, text), out);
        }
        let pending = Pending {
            origin,
            handler: None,
            kind: self.type_name(&msg.payload.kind),
            // A session's authorisation data is this server's own: never taken from a peer.
            from: Arc::new(Sender {
                info: None,
                ..msg.from
            }),
            scope: Scope::Server,
            via: Vec::new(),
            hops: msg.hops,
            stat: 0,
            sent_at: now,
        };
        self.dispatch(pending, &msg.payload, now, out);
    }
}

/// `{"<server>":<data>,…}`: the replies of a `sendServers` that asked for them.
fn replies_object(data: &BTreeMap<String, Option<String>>) -> String {
    let mut out = Vec::new();
    out.push(b'{');
    for (i, (server, reply)) in data.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write::string(&mut out, server);
        out.push(b':');
        out.extend_from_slice(reply.as_deref().unwrap_or("null").as_bytes());
    }
    out.push(b'}');
    String::from_utf8(out).expect("JSON text from JSON text")
}
