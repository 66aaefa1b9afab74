//! Store-and-forward across the federation (PROTOCOL.md §7, "Stored delivery across servers"),
//! sans-io, both ends of it.
//!
//! The sending end: a storing push to `bob@node-b` is written to node-b's outbound queue in
//! the delivery store (`router/durable.rs` builds the records); the server's forwarder
//! (`server/delivery/forward.rs`) reads the queue when the link to node-b is up with the
//! feature `store` and hands each delivery to [`Router::forward`], which sends it as a delivery
//! frame carrying `"store":true` and its durable id (`"origin"`) and waits for the peer's ack.
//! The outcome goes back to the server as [`ForwardAction::Settled`]: an ok ack (end to end:
//! the peer pushed it to its user's connections or stored it durably) or a final refusal
//! deletes the delivery from the queue; a lost link or a silent peer leaves it there, to be
//! sent again.
//!
//! The receiving end ([`Router::peer_deliver_stored`]): every named user's copy is written to
//! their queue here, keyed by `<peer>/<origin id>/<user>` so a redelivery is kept once; only
//! after the commit are the users with connections pushed it (with this server's `msg` id) and
//! the peer acked. A peer can only name itself as the origin's server (`from.server` is
//! checked), so it cannot suppress another server's deliveries by guessing keys.

use super::federation::Waiter;
use super::*;
use crate::delivery::{OutRecord, Record};
use crate::protocol::durable::Refused;
use crate::protocol::message::PayloadRef;
use crate::protocol::peer::{PeerDelivery, ServerReport, UserFailures, deliver_frame};
use crate::protocol::write::{client_durable_push, sender_json};
use std::borrow::Cow;

/// What the server does for store-and-forward: kept in the router and taken by the server with
/// [`Router::take_forward`] after each batch of actions.
#[derive(Debug)]
pub enum ForwardAction {
    /// [`Action::Store`] with deliveries for peer servers' outbound queues, all in one commit;
    /// then [`Router::store_done_all`].
    Store {
        /// Matches the results to the report waiting for them.
        ticket: u64,
        /// The copies to keep for users of this server.
        records: Vec<Record>,
        /// The deliveries to queue, per peer server.
        outbound: Vec<OutRecord>,
    },
    /// A delivery of an outbound queue was settled ([`Router::forward`]).
    Settled(Forwarded),
}

/// What became of a delivery from an outbound queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// The peer acknowledged it end to end: delete it. `failed`: its users the peer could not
    /// keep it for (its `queue_full`, …), by their names there.
    Done {
        /// The peer server.
        server: String,
        /// The delivery's durable id.
        row: u64,
        /// Users the peer refused, with the code.
        failed: UserFailures,
    },
    /// The peer refused it for good (`forbidden`, `frame_too_large`, …): delete it, and say why.
    Refused {
        /// The peer server.
        server: String,
        /// The delivery's durable id.
        row: u64,
        /// The code.
        code: String,
        /// The peer's (or our) sentence.
        error: String,
    },
    /// Not acknowledged (the link went down, the peer did not answer in time, its store was
    /// behind): keep it and send it again.
    Retry {
        /// The peer server.
        server: String,
        /// The delivery's durable id.
        row: u64,
    },
}

/// Codes after which a delivery is sent again rather than dropped.
const TRANSIENT: &[ErrorCode] = &[
    ErrorCode::PeerUnavailable,
    ErrorCode::PeerTimeout,
    ErrorCode::PeerUnreachable,
    ErrorCode::StoreFailed,
    ErrorCode::ShuttingDown,
    ErrorCode::ServerBusy,
    ErrorCode::RateLimited,
];

/// A stored delivery from a peer waiting for its commit here.
#[derive(Debug)]
pub(super) struct Taking {
    origin: Origin,
    /// (as the peer named them, their name here, the message id here) per record.
    users: Vec<(String, String, u64)>,
    kind: String,
    from_json: String,
    data: String,
    time_ms: u64,
}

impl Router {
    /// What the server is to carry out for store-and-forward, since the last call.
    pub fn take_forward(&mut self) -> Vec<ForwardAction> {
        std::mem::take(&mut self.durable.forward_out)
    }

    /// The link to `name` is up; `store`: whether it took the feature `store` (a peer that did
    /// not gets no stored deliveries: a storing push to its users fails `peer_unreachable`
    /// while that is what its last link said).
    pub fn peer_store(&mut self, name: &str, store: bool) {
        if let Some(entry) = self.peers.get_mut(name) {
            entry.store = Some(store);
        }
    }

    /// Send a delivery of `record.server`'s outbound queue over its link; `false` when the link
    /// is not up (or does not take stored deliveries): it stays queued.
    pub fn forward(&mut self, record: &OutRecord, now: Instant, out: &mut Vec<Action>) -> bool {
        let Some(entry) = self.peers.get(&record.server) else {
            return false;
        };
        let (Some(link), Some(true)) = (entry.link, entry.store) else {
            return false;
        };
        let stat = entry.stat;
        let refuse = |code: ErrorCode, error: String| {
            ForwardAction::Settled(Forwarded::Refused {
                server: record.server.clone(),
                row: record.id,
                code: code.as_str().to_string(),
                error,
            })
        };
        let from: Sender = match serde_json::from_str(&record.sender) {
            Ok(from) => from,
            Err(e) => {
                self.durable.forward_out.push(refuse(
                    ErrorCode::InternalError,
                    format!("the queued delivery's sender cannot be read: {e}"),
                ));
                return true;
            }
        };
        let payload = PayloadRef {
            kind: Cow::Borrowed(&record.kind),
            data: (record.data != "null").then_some(Cow::Borrowed(record.data.as_str())),
        };
        let msg = self.next_id();
        let names = record.users.iter().map(String::as_str);
        let body = deliver_frame(msg, &from, names, &payload, Some(record.id));
        if body.len() > self.config.max_frame {
            let text = super::too_large(
                body.len(),
                self.config.max_frame,
                &format!("{:?}", record.server),
            );
            crate::protocol::pool::recycle(body);
            self.durable
                .forward_out
                .push(refuse(ErrorCode::FrameTooLarge, text));
            return true;
        }
        out.push(Action::Send { to: link, body });
        let waiter = Waiter::Forward {
            server: record.server.clone(),
            row: record.id,
        };
        self.await_ack(msg, waiter, (&record.server, link, stat), now);
        true
    }

    /// The peer's ack (or the loss of the link, or a timeout) for a forwarded delivery.
    pub(super) fn forward_settled(&mut self, server: String, row: u64, report: ServerReport) {
        let settled = if report.status == Status::Ok {
            Forwarded::Done {
                server,
                row,
                failed: report.failed.unwrap_or_default(),
            }
        } else {
            let code = report.code.unwrap_or_else(|| "internal_error".into());
            if TRANSIENT.iter().any(|c| c.as_str() == code) {
                Forwarded::Retry { server, row }
            } else {
                Forwarded::Refused {
                    server,
                    row,
                    code,
                    error: report.error.unwrap_or_default(),
                }
            }
        };
        self.durable
            .forward_out
            .push(ForwardAction::Settled(settled));
    }

    /// A stored delivery from peer `server` (its durable id `id`), checked already: keep a copy
    /// for each named user, then push and ack once it is durable ([`Router::taken`]).
    pub(super) fn peer_deliver_stored(
        &mut self,
        origin: Origin,
        server: &str,
        id: u64,
        d: PeerDelivery<'_>,
        out: &mut Vec<Action>,
    ) {
        if !self.durable_enabled() {
            let error = ErrorBody::new(
                ErrorCode::StoreFailed,
                "this server keeps no delivery store ([delivery])",
            );
            return self.fail(&origin, error, out);
        }
        let from = Sender {
            info: None,
            ..d.from
        };
        let from_json = sender_json(&from);
        let time_ms = crate::delivery::writer::now_ms();
        let data = d.payload.data.as_deref().unwrap_or("null").to_string();
        let mut seen = HashSet::new();
        let mut users = Vec::new();
        let mut records = Vec::new();
        for named in &d.users {
            let user = match self.target(named) {
                deliver::Target::Local(user) => user.to_string(),
                deliver::Target::Remote { .. } => continue,
            };
            if !seen.insert(user.clone()) {
                continue;
            }
            let msg = self.durable_id();
            records.push(Record {
                id: msg,
                user: user.clone(),
                time_ms,
                kind: d.payload.kind.to_string(),
                sender: from_json.clone(),
                data: data.clone(),
                origin: Some(format!("{server}/{id}/{user}")),
            });
            users.push((named.clone(), user, msg));
        }
        let ticket = self.store_ticket();
        let taking = Taking {
            origin,
            users,
            kind: d.payload.kind.to_string(),
            from_json,
            data,
            time_ms,
        };
        self.durable.taking.insert(ticket, taking);
        out.push(Action::Store { ticket, records });
    }

    /// The commit of a stored delivery from a peer: push the new copies to their users'
    /// connections, and ack the peer with who was delivered to, who will get it on login, and
    /// who not (their queue refused it).
    pub(super) fn taken(
        &mut self,
        taking: Taking,
        results: Vec<Result<bool, Refused>>,
        out: &mut Vec<Action>,
    ) {
        let (mut delivered, mut offline) = (Vec::new(), Vec::new());
        let mut failed = UserFailures::new();
        for ((named, user, msg), result) in taking.users.iter().zip(results) {
            let conns = self.presence.conns(user).map(|c| c.to_vec());
            match (result, conns) {
                (Err(why), _) => {
                    failed.insert(named.clone(), why.code.as_str().to_string());
                }
                (Ok(new), Some(conns)) => {
                    // A copy taken before was pushed then (or comes with the next login).
                    if new {
                        let push = client_durable_push(
                            &taking.kind,
                            &taking.from_json,
                            Some(&taking.data),
                            (*msg, taking.time_ms),
                            false,
                        );
                        for conn in conns {
                            out.push(Action::Send {
                                to: conn,
                                body: push.clone(),
                            });
                        }
                    }
                    delivered.push(named.clone());
                }
                (Ok(_), None) => offline.push(named.clone()),
            }
        }
        let outcome = Outcome {
            delivered: Some(&delivered),
            offline: Some(&offline),
            failed: (!failed.is_empty()).then_some(&failed),
            ..Outcome::default()
        };
        self.respond_ok(&taking.origin, &outcome, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_codes_are_retried() {
        let mut router = Router::new(RouterConfig {
            server: "a".into(),
            request_timeout: Duration::from_secs(5),
            max_chain_depth: 3,
            max_frame: 1024,
            login_timeout: Duration::from_secs(1),
            max_logins: 2,
        });
        for (code, retried) in [
            (ErrorCode::PeerUnavailable, true),
            (ErrorCode::StoreFailed, true),
            (ErrorCode::Forbidden, false),
            (ErrorCode::ReservedType, false),
        ] {
            let report = ServerReport::failed(code, "why");
            router.forward_settled("b".into(), 7, report);
            let Some(ForwardAction::Settled(f)) = router.take_forward().pop() else {
                panic!("no outcome")
            };
            assert_eq!(matches!(f, Forwarded::Retry { .. }), retried, "{code:?}");
        }
    }
}
