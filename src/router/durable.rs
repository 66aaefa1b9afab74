//! Storing pushes (PROTOCOL.md §4, "Stored delivery"), sans-io: which copies of a `sendClients`
//! are kept (the type's `offline = "store"`, or `"store": true` in the answer), their durable
//! message ids, and the report once the store has committed. The router hands the records to the
//! server in [`Action::Store`]; the server's delivery thread writes them and the server calls
//! [`Router::store_done`] with the results, so nothing is reported `stored` before its commit.
//!
//! Every recipient's copy of a storing push is written: a user with connections is sent it at
//! once with its `msg` id (and listed in `delivered`), so that a connection that dies before its
//! `bester.ack` gets it again on the next login; a user with none is listed in `stored` (or in
//! `refused`, with why) once the commit is durable.
//!
//! A recipient of another server (`bob@node-b`) is not stored here but queued for that server
//! (store-and-forward, `router/forward.rs`): listed in `queued` once the outbound queue's commit
//! is durable (the same commit as the local copies), or in `failed` with `peer_unreachable` when
//! the peer's last link did not take stored deliveries (feature `store`).

use std::collections::HashMap;

use super::deliver::Target;
use super::forward::Taking;
use super::*;
use crate::delivery::{OutRecord, Record};
use crate::protocol::durable::{Refused, StoreLists, client_store_reply, handler_store_report};
use crate::protocol::groups::Recipients;
use crate::protocol::peer::{MAX_DELIVER_USERS, UserFailures};
use crate::protocol::write::{client_durable_push, sender_json};

/// The router's side of the delivery store.
#[derive(Debug, Default)]
pub(super) struct Durable {
    /// Whether the server keeps a store at all.
    enabled: bool,
    /// Types whose pushes are stored (`offline = "store"`).
    types: HashSet<String>,
    /// The next durable message id.
    next_msg: u64,
    /// Stores waiting for their commit, by ticket.
    waiting: HashMap<u64, Waiting>,
    /// Stored deliveries from peers waiting for their commit, by ticket.
    pub(super) taking: HashMap<u64, Taking>,
    /// Store-and-forward work for the server ([`Router::take_forward`]).
    pub(super) forward_out: Vec<super::ForwardAction>,
    next_ticket: u64,
}

#[derive(Debug)]
struct Waiting {
    origin: Origin,
    kind_of: String,
    /// The data, for a sender that is also a recipient.
    data: Option<String>,
    delivered: Vec<String>,
    /// Each record's user, and whether they had a connection.
    users: Vec<(String, bool)>,
    /// Each outbound delivery's users, as the sender named them.
    queued: Vec<Vec<String>>,
    /// Users of other servers not queued, with the code of why.
    failed: UserFailures,
}

impl Router {
    /// Keep a delivery store: message ids start at `first_msg`, and pushes of `types` store.
    pub fn set_delivery(&mut self, first_msg: u64, types: impl IntoIterator<Item = String>) {
        self.durable.enabled = true;
        self.durable.next_msg = first_msg;
        self.durable.types = types.into_iter().collect();
    }

    /// Stores (of answers and of peers' deliveries) waiting for their commit: each reports
    /// to someone once it is back.
    pub(super) fn storing(&self) -> usize {
        self.durable.waiting.len() + self.durable.taking.len()
    }

    /// The last durable message id given out (a login's backlog ends there).
    pub fn last_msg(&self) -> u64 {
        self.durable.next_msg.saturating_sub(1)
    }

    /// Whether a push of `kind` (with the answer's `"store"`) is stored.
    pub(super) fn stores(&self, kind: &str, asked: bool) -> bool {
        asked || self.durable.types.contains(kind)
    }

    /// A ticket for a store job.
    pub(super) fn store_ticket(&mut self) -> u64 {
        let ticket = self.durable.next_ticket;
        self.durable.next_ticket += 1;
        ticket
    }

    /// A new durable message id.
    pub(super) fn durable_id(&mut self) -> u64 {
        let id = self.durable.next_msg;
        self.durable.next_msg += 1;
        id
    }

    /// Whether the server keeps a delivery store.
    pub(super) fn durable_enabled(&self) -> bool {
        self.durable.enabled
    }

    /// A storing `sendClients`: push to the users with connections (with `msg`), write every
    /// recipient's copy, and answer `origin` once the store reports.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn push_storing(
        &mut self,
        origin: Origin,
        to: &Recipients,
        payload: &PayloadRef<'_>,
        from: &Sender,
        skip: Option<ConnId>,
        sender_data: bool,
        out: &mut Vec<Action>,
    ) {
        let mut seen = HashSet::new();
        let members: Vec<String> = to
            .groups
            .iter()
            .flat_map(|g| self.groups.members(g))
            .cloned()
            .collect();
        let from_json = sender_json(from);
        let time_ms = crate::delivery::writer::now_ms();
        let mut delivered = Vec::new();
        let mut offline = Vec::new();
        let mut records = Vec::new();
        let mut users = Vec::new();
        let mut remote: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let mut failed = UserFailures::new();
        for user in to.users.iter().chain(members.iter()) {
            if !seen.insert(user.clone()) {
                continue;
            }
            if let Target::Remote {
                server,
                user: there,
            } = self.target(user)
                && self.durable.enabled
            {
                match self.peers.get(server).and_then(|e| e.store) {
                    Some(false) => {
                        self.stats.errors.count(ErrorCode::PeerUnreachable);
                        let code = ErrorCode::PeerUnreachable.as_str().to_string();
                        failed.insert(user.clone(), code);
                    }
                    _ => remote
                        .entry(server.to_string())
                        .or_default()
                        .push((user.clone(), there.to_string())),
                }
                continue;
            }
            let conns = self.presence.conns(user).map(|c| c.to_vec());
            if !self.durable.enabled {
                match conns {
                    Some(conns) => {
                        let push = client_push(&payload.kind, from, payload.data.as_deref());
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
                continue;
            }
            if skip.is_some() && from.user.as_ref() == Some(user) {
                // The sender itself: its data is in the reply, its other connections get a
                // plain push, and nothing is kept for it.
                if let Some(conns) = &conns {
                    let push = client_push(&payload.kind, from, payload.data.as_deref());
                    for conn in conns.iter().filter(|c| Some(**c) != skip) {
                        out.push(Action::Send {
                            to: *conn,
                            body: push.clone(),
                        });
                    }
                    delivered.push(user.clone());
                }
                continue;
            }
            let id = self.durable.next_msg;
            self.durable.next_msg += 1;
            if let Some(conns) = &conns {
                let push = client_durable_push(
                    &payload.kind,
                    &from_json,
                    payload.data.as_deref(),
                    (id, time_ms),
                    false,
                );
                for conn in conns.iter().filter(|c| Some(**c) != skip) {
                    out.push(Action::Send {
                        to: *conn,
                        body: push.clone(),
                    });
                }
                delivered.push(user.clone());
            }
            users.push((user.clone(), conns.is_some()));
            records.push(Record {
                id,
                user: user.clone(),
                time_ms,
                kind: payload.kind.to_string(),
                sender: from_json.clone(),
                data: payload.data.as_deref().unwrap_or("null").to_string(),
                origin: None,
            });
        }
        let mut outbound = Vec::new();
        let mut queued = Vec::new();
        if !remote.is_empty() {
            let relay = sender_json(&self.relay_sender(from, &payload.kind));
            for (server, named) in remote {
                for chunk in named.chunks(MAX_DELIVER_USERS) {
                    outbound.push(OutRecord {
                        id: self.durable_id(),
                        server: server.clone(),
                        time_ms,
                        kind: payload.kind.to_string(),
                        sender: relay.clone(),
                        data: payload.data.as_deref().unwrap_or("null").to_string(),
                        users: chunk.iter().map(|(_, there)| there.clone()).collect(),
                    });
                    queued.push(chunk.iter().map(|(named, _)| named.clone()).collect());
                }
            }
        }
        let data = sender_data.then(|| payload.data.as_deref().map(str::to_string));
        let waiting = Waiting {
            origin,
            kind_of: payload.kind.to_string(),
            data: data.flatten(),
            delivered,
            users,
            queued,
            failed,
        };
        if !self.durable.enabled {
            // No store here: the users with no connection are refused, and told why.
            let refusal = Refused::new(
                ErrorCode::StoreFailed,
                "this server keeps no delivery store ([delivery])",
            );
            let refused: Vec<(String, Refused)> =
                offline.into_iter().map(|u| (u, refusal.clone())).collect();
            return self.report_store(&waiting, (&[], &[]), &refused, out);
        }
        let ticket = self.store_ticket();
        self.durable.waiting.insert(ticket, waiting);
        if outbound.is_empty() {
            out.push(Action::Store { ticket, records });
        } else {
            self.durable.forward_out.push(super::ForwardAction::Store {
                ticket,
                records,
                outbound,
            });
        }
    }

    /// The store's results for the records of `ticket`, in order: the report goes out now.
    /// The store's results for the records of `ticket`, in order: the report goes out now.
    pub fn store_done(
        &mut self,
        ticket: u64,
        results: Vec<Result<(), Refused>>,
        out: &mut Vec<Action>,
    ) {
        let results = results.into_iter().map(|r| r.map(|()| true)).collect();
        self.store_done_all(ticket, results, Vec::new(), out);
    }

    /// [`Router::store_done`] telling new copies (`true`) from forwarded ones taken before
    /// (`false`), with `queued`: the results of the outbound deliveries, in order.
    pub fn store_done_all(
        &mut self,
        ticket: u64,
        results: Vec<Result<bool, Refused>>,
        queued: Vec<Result<(), Refused>>,
        out: &mut Vec<Action>,
    ) {
        if let Some(taking) = self.durable.taking.remove(&ticket) {
            return self.taken(taking, results, out);
        }
        let Some(waiting) = self.durable.waiting.remove(&ticket) else {
            return;
        };
        let mut stored = Vec::new();
        let mut refused = Vec::new();
        for ((user, online), result) in waiting.users.iter().zip(results) {
            match (online, result) {
                // Sent already; the copy kept (or not) only matters if the connection dies.
                (true, _) => {}
                (false, Ok(_)) => stored.push(user.clone()),
                (false, Err(why)) => refused.push((user.clone(), why)),
            }
        }
        let mut forwarding = Vec::new();
        for (named, result) in waiting.queued.iter().zip(queued) {
            match result {
                Ok(()) => forwarding.extend(named.iter().cloned()),
                Err(why) => refused.extend(named.iter().map(|u| (u.clone(), why.clone()))),
            }
        }
        self.report_store(&waiting, (&stored, &forwarding), &refused, out);
    }

    fn report_store(
        &mut self,
        waiting: &Waiting,
        (stored, queued): (&[String], &[String]),
        refused: &[(String, Refused)],
        out: &mut Vec<Action>,
    ) {
        let lists = StoreLists {
            delivered: &waiting.delivered,
            offline: &[],
            stored,
            queued,
            refused,
            failed: &waiting.failed,
        };
        match &waiting.origin {
            Origin::Client { conn, id } => {
                self.stats.messages.answered(true);
                let body = client_store_reply(
                    id.as_deref(),
                    &waiting.kind_of,
                    &lists,
                    waiting.data.as_deref(),
                );
                out.push(Action::Send { to: *conn, body });
            }
            Origin::Push { handler, id } => {
                let body = handler_store_report(id.as_deref(), &lists);
                out.push(Action::Send { to: *handler, body });
            }
            origin @ (Origin::Peer { .. } | Origin::Login { .. }) => {
                // Across servers the ack keeps its lists: stored users count as offline there.
                let offline: Vec<String> = stored
                    .iter()
                    .chain(queued)
                    .cloned()
                    .chain(refused.iter().map(|(u, _)| u.clone()))
                    .collect();
                let outcome = Outcome {
                    kind_of: Some(&waiting.kind_of),
                    data: waiting.data.as_deref(),
                    delivered: Some(&waiting.delivered),
                    offline: Some(&offline),
                    servers: None,
                    failed: (!waiting.failed.is_empty()).then_some(&waiting.failed),
                };
                let origin = origin.clone();
                self.respond_ok(&origin, &outcome, out);
            }
        }
    }
}
