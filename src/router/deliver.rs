//! `sendClients` to users of other servers (`bob@node-b`), and deliveries that peers send us.
//!
//! One place decides where a named user is reached ([`Router::target`]): `name@S` is user
//! `name` of server `S` when `S` is this server or a configured peer; any other name is a user of
//! this server, as before (so a local name that itself holds an `@`, e.g. a token's
//! `alice@example.com`, stays local, and can always be written `alice@example.com@<this server>`).
//!
//! The users of one `sendClients` that live on other servers are grouped by server, and each
//! server gets one delivery frame (`scope:"users"`, at most [`MAX_DELIVER_USERS`] users; more
//! users make more frames), pushed by that server to its users' connections without a handler.
//! The sender's answer waits for every frame's ack and then reports each user like a local one:
//! `delivered`, `offline`, or in `failed` with the code of why not (`peer_unreachable`,
//! `peer_unavailable`, `peer_timeout`, `frame_too_large`, or the peer's refusal).
//!
//! What a peer may ask of us: a delivery to users of this server only (a name that is a user of
//! another server is refused whole, `forbidden`), as itself (`forged_origin`), with a type it may
//! send (`[peers.X] allow_types`, `forbidden`), never a built-in type (`reserved_type`).

use super::federation::Waiter;
use super::*;
use crate::protocol::peer::{
    MAX_DELIVER_USERS, PeerDelivery, ServerReport, UserFailures, deliver_frame,
};

/// Where a named user is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Target<'n> {
    /// A user of this server, by their name here.
    Local(&'n str),
    /// User `user` of peer server `server`.
    Remote {
        /// The peer.
        server: &'n str,
        /// The user's name there.
        user: &'n str,
    },
}

/// Users to reach on other servers: per server, (as the sender named them, their name there).
pub(super) type Remotes = BTreeMap<String, Vec<(String, String)>>;

/// A `sendClients` waiting for the acks of its deliveries to other servers.
#[derive(Debug)]
pub(super) struct Delivery {
    origin: Origin,
    kind: String,
    /// The data, for a sender that is also a recipient.
    data: Option<String>,
    delivered: Vec<String>,
    offline: Vec<String>,
    failed: UserFailures,
    /// Frames not yet acknowledged.
    waiting: usize,
}

/// What a `sendClients` did on this server, and what is left for others.
#[derive(Debug, Default)]
pub(super) struct Reach {
    /// Users pushed to here.
    pub delivered: Vec<String>,
    /// Users of this server with no connection.
    pub offline: Vec<String>,
    /// Users of other servers.
    pub remote: Remotes,
}

impl Router {
    /// Where the user named `name` is reached (see the module's documentation).
    pub(super) fn target<'n>(&self, name: &'n str) -> Target<'n> {
        if let Some((user, server)) = name.rsplit_once('@')
            && !user.is_empty()
        {
            if server == self.config.server {
                return Target::Local(user);
            }
            if self.peers.contains_key(server) {
                return Target::Remote { server, user };
            }
        }
        Target::Local(name)
    }

    /// Answer a `sendClients` once the users of other servers have been reached too: at once
    /// when there are none, else when every delivery frame is acknowledged, failed or timed out.
    /// `kind`/`data`: the answer's type and data; `from`/`handler`: who the message is from
    /// and the handler type that sent it (relayed as that handler when `from` is not ours).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer_send_clients(
        &mut self,
        origin: Origin,
        (kind, data): (&str, Option<&str>),
        reach: Reach,
        (from, handler): (&Sender, &str),
        payload: &PayloadRef<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Reach {
            delivered,
            offline,
            remote,
        } = reach;
        if remote.is_empty() {
            let outcome = Outcome {
                kind_of: Some(kind),
                data,
                delivered: Some(&delivered),
                offline: Some(&offline),
                ..Outcome::default()
            };
            return self.respond_ok(&origin, &outcome, out);
        }
        let id = self.next_id();
        let mut delivery = Delivery {
            origin,
            kind: kind.to_string(),
            data: data.map(str::to_string),
            delivered,
            offline,
            failed: UserFailures::new(),
            waiting: 0,
        };
        let from = self.relay_sender(from, handler);
        for (server, users) in remote {
            self.deliver_at(id, &server, users, &from, payload, now, &mut delivery, out);
        }
        self.count_pending(&delivery.origin, 1);
        let done = delivery.waiting == 0;
        self.deliveries.insert(id, delivery);
        if done {
            self.finish_delivery(id, out);
        }
    }

    /// Deliver `payload` to these users of peer `server` (one frame per [`MAX_DELIVER_USERS`]
    /// users), or record why not.
    #[allow(clippy::too_many_arguments)]
    fn deliver_at(
        &mut self,
        id: u64,
        server: &str,
        users: Vec<(String, String)>,
        from: &Sender,
        payload: &PayloadRef<'_>,
        now: Instant,
        delivery: &mut Delivery,
        out: &mut Vec<Action>,
    ) {
        let Some((link, stat)) = self.peers.get(server).map(|e| (e.link, e.stat)) else {
            return fail_all(delivery, &users, ErrorCode::UnknownPeer);
        };
        let Some(link) = link else {
            self.stats.errors.count(ErrorCode::PeerUnreachable);
            return fail_all(delivery, &users, ErrorCode::PeerUnreachable);
        };
        let mut users = users.into_iter().peekable();
        while users.peek().is_some() {
            let chunk: Vec<(String, String)> = users.by_ref().take(MAX_DELIVER_USERS).collect();
            let msg = self.next_id();
            let names = chunk.iter().map(|(_, there)| there.as_str());
            let body = deliver_frame(msg, from, names, payload, None);
            if body.len() > self.config.max_frame {
                crate::protocol::pool::recycle(body);
                self.stats.errors.count(ErrorCode::FrameTooLarge);
                fail_all(delivery, &chunk, ErrorCode::FrameTooLarge);
                continue;
            }
            out.push(Action::Send { to: link, body });
            let waiter = Waiter::Delivery { id, users: chunk };
            self.await_ack(msg, waiter, (server, link, stat), now);
            delivery.waiting += 1;
        }
    }

    /// One delivery frame's outcome: an ok ack says who was delivered to there; anything else
    /// fails each of its users with the code.
    pub(super) fn settle_delivery(
        &mut self,
        id: u64,
        users: Vec<(String, String)>,
        report: ServerReport,
        out: &mut Vec<Action>,
    ) {
        let Some(delivery) = self.deliveries.get_mut(&id) else {
            return;
        };
        if report.status == Status::Ok {
            let reached = report.delivered.unwrap_or_default();
            for (named, there) in users {
                if reached.contains(&there) {
                    delivery.delivered.push(named);
                } else {
                    delivery.offline.push(named);
                }
            }
        } else {
            let code = report.code.unwrap_or_else(|| "internal_error".into());
            for (named, _) in users {
                delivery.failed.insert(named, code.clone());
            }
        }
        delivery.waiting -= 1;
        if delivery.waiting == 0 {
            self.finish_delivery(id, out);
        }
    }

    fn finish_delivery(&mut self, id: u64, out: &mut Vec<Action>) {
        let Some(delivery) = self.deliveries.remove(&id) else {
            return;
        };
        self.count_pending(&delivery.origin, -1);
        let outcome = Outcome {
            kind_of: Some(&delivery.kind),
            data: delivery.data.as_deref(),
            delivered: Some(&delivery.delivered),
            offline: Some(&delivery.offline),
            failed: (!delivery.failed.is_empty()).then_some(&delivery.failed),
            servers: None,
        };
        self.respond_ok(&delivery.origin, &outcome, out);
    }

    /// A delivery from a linked peer: check it, push the payload to the users' connections and
    /// ack with who was delivered to and who is offline (the names as the peer sent them).
    pub fn peer_deliver(&mut self, link: ConnId, d: PeerDelivery<'_>, out: &mut Vec<Action>) {
        let Some(server) = self.peer_links.get(&link).cloned() else {
            return;
        };
        let origin = Origin::Peer {
            link,
            msg: d.msg.clone().into_owned(),
            server: server.clone(),
        };
        if let Err(error) = self.check_peer_claims(&server, &d.from, &d.payload.kind) {
            return self.fail(&origin, error, out);
        }
        if d.users.len() > MAX_DELIVER_USERS {
            let text = format!(
                "a delivery may name at most {MAX_DELIVER_USERS} users (this one names {})",
                d.users.len()
            );
            return self.fail(&origin, ErrorBody::new(ErrorCode::LimitReached, text), out);
        }
        if let Some((user, other)) = d.users.iter().find_map(|u| match self.target(u) {
            Target::Remote { server, .. } => Some((u, server)),
            Target::Local(_) => None,
        }) {
            warn!("peer={server} asked to deliver to {user:?} of {other:?}; refused");
            let text = format!(
                "peer {server:?} may deliver only to users of {:?}, not to {user:?}",
                self.config.server
            );
            return self.fail(&origin, ErrorBody::new(ErrorCode::Forbidden, text), out);
        }
        if let Some(id) = d.store {
            return self.peer_deliver_stored(origin, &server, id, d, out);
        }
        // A session's authorisation data stays with its own server.
        let from = Sender {
            info: None,
            ..d.from
        };
        let mut conns = Vec::with_capacity(d.users.len());
        let (mut delivered, mut offline) = (Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        for named in &d.users {
            let Target::Local(user) = self.target(named) else {
                continue;
            };
            if !seen.insert(user) {
                continue;
            }
            match self.presence.conns(user) {
                Some(online) => {
                    conns.extend_from_slice(online);
                    delivered.push(named.clone());
                }
                None => offline.push(named.clone()),
            }
        }
        if !conns.is_empty() {
            let push = client_push(&d.payload.kind, &from, d.payload.data.as_deref());
            out.push(Action::send_each(conns, push));
        }
        let outcome = Outcome {
            delivered: Some(&delivered),
            offline: Some(&offline),
            ..Outcome::default()
        };
        self.respond_ok(&origin, &outcome, out);
    }
}

/// Fail every user of `users` with `code`.
fn fail_all(delivery: &mut Delivery, users: &[(String, String)], code: ErrorCode) {
    for (named, _) in users {
        delivery
            .failed
            .insert(named.clone(), code.as_str().to_string());
    }
}
