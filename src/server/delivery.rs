//! The server's side of the delivery store (PROTOCOL.md §4, "Stored delivery"): it hands the
//! router's [`Action::Store`] records to the delivery thread, gives the router the results when
//! the loop is woken, sends a user's stored pushes when they log in (a batch at a time, the next
//! batch after an ack), and answers `bester.ack`. Nothing here touches the disk: the thread of
//! `delivery/writer.rs` does, and this module only calls its non-blocking `submit`, `flush`
//! and `try_recv`.
//! Peer servers' outbound queues (store-and-forward) are sent by [`forward`]. When the old
//! process of a hot upgrade exits, what it stored meanwhile is read for the users and peers
//! served here ([`Server::delivery_recount`]).

mod forward;

use std::collections::HashMap;
use std::sync::Arc;

use log::warn;
use serde::Serialize;

use crate::config::delivery::default_path;
use crate::delivery::{Ack, DeliveryStats, Done, Job, Recount, Refusal, Writer};
use crate::protocol::ErrorCode;
use crate::protocol::durable::{AckRequest, parse_ack};
use crate::protocol::error::ErrorBody;
use crate::protocol::message::{ClientMessage, client_ok};
use crate::protocol::write::client_durable_push;
use crate::router::ConnId;

use super::Server;

/// Acknowledge stored pushes.
pub const ACK: &str = "bester.ack";

/// The delivery store as the loop sees it.
pub(super) struct Delivery {
    writer: Writer,
    /// Stored pushes sent to one connection before waiting for an ack.
    window: usize,
    next_ticket: u64,
    /// What each job in flight is for.
    tickets: HashMap<u64, Purpose>,
    /// Connections being sent their backlog: the user, the last id sent, the backlog's end,
    /// whether more is left, and whether a read is in flight.
    backlogs: HashMap<ConnId, Backlog>,
    /// The store's figures.
    pub stats: Arc<DeliveryStats>,
    /// Per peer server, its outbound queue's forwarding.
    lanes: HashMap<String, forward::Lane>,
    /// A [`Job::Recount`] is wanted and was not taken yet (the thread was behind).
    recount_wanted: bool,
}

enum Purpose {
    /// The router's store with its ticket, and the servers it queues deliveries for (in order).
    Store(u64, Vec<String>),
    /// A batch of this server's outbound queue.
    LoadOut(String),
    /// Deleting forwarded deliveries.
    Forwarded,
    /// A client's `bester.ack`, answered with its id.
    Ack(ConnId, Option<String>),
    /// A batch of a connection's backlog.
    Load(ConnId),
    /// `besterd ctl queues` on this control connection.
    Queues(usize),
    /// Counting the queues again after the process before this one exited.
    Recount,
}

struct Backlog {
    user: String,
    after: u64,
    upto: u64,
    more: bool,
    reading: bool,
    /// Ids to read again once the read in flight is back: `(after, upto)`.
    rewind: Option<(u64, u64)>,
}

impl Backlog {
    /// Read the ids `after < id <= upto` too (another process stored them behind where this
    /// backlog has read); what was left to read stays to be read.
    fn rewind(&mut self, (after, upto): (u64, u64)) {
        if self.more {
            self.after = self.after.min(after);
        } else {
            (self.after, self.upto, self.more) = (after, upto, true);
        }
    }
}

/// Open the store the configuration asks for (an error names the file and why: the server does
/// not start).
pub(super) fn open(
    config: &crate::config::Config,
    waker: Arc<mio::Waker>,
) -> std::io::Result<Option<Delivery>> {
    let Some(d) = &config.delivery else {
        return Ok(None);
    };
    let path = d
        .path
        .clone()
        .unwrap_or_else(|| default_path(&config.users));
    let stats = Arc::new(DeliveryStats::default());
    let writer = Writer::start(d, &path, Arc::clone(&stats), waker)
        .map_err(|e| std::io::Error::other(format!("delivery store: {e}")))?;
    Ok(Some(Delivery {
        writer,
        window: d.window,
        next_ticket: 1,
        tickets: HashMap::new(),
        backlogs: HashMap::new(),
        stats,
        lanes: HashMap::new(),
        recount_wanted: false,
    }))
}

impl Delivery {
    /// The first message id of this run.
    pub(super) fn first_id(&self) -> u64 {
        self.writer.first_id
    }

    fn submit(&mut self, purpose: Purpose, job: impl FnOnce(u64) -> Job) -> bool {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        match self.writer.submit(job(ticket)) {
            Ok(()) => {
                self.tickets.insert(ticket, purpose);
                true
            }
            Err(_) => false,
        }
    }
}

fn behind() -> Refusal {
    Refusal::new(
        ErrorCode::StoreFailed,
        "the delivery store is behind (too many writes waiting); try again",
    )
}

#[derive(Serialize)]
struct Acked {
    acked: usize,
}

impl Server {
    /// Whether the delivery store's thread has gone (every store is refused).
    pub(super) fn delivery_stopped(&self) -> bool {
        self.delivery.as_ref().is_some_and(|d| d.writer.stopped())
    }

    /// Hand the turn's jobs to the delivery thread together (once a turn, before the loop
    /// waits).
    pub(super) fn delivery_flush(&mut self) {
        if let Some(d) = &mut self.delivery {
            d.writer.flush();
        }
    }

    /// Carry out [`crate::router::Action::Store`].
    pub(super) fn store_records(&mut self, ticket: u64, records: Vec<crate::delivery::Record>) {
        self.store_all(ticket, records, Vec::new());
    }

    /// [`Server::store_records`] with deliveries for peer servers' outbound queues.
    fn store_all(
        &mut self,
        ticket: u64,
        records: Vec<crate::delivery::Record>,
        outbound: Vec<crate::delivery::OutRecord>,
    ) {
        let (n, m) = (records.len(), outbound.len());
        let Some(d) = &mut self.delivery else {
            let (results, queued) = (vec![Err(behind()); n], vec![Err(behind()); m]);
            return self
                .router
                .store_done_all(ticket, results, queued, &mut self.actions);
        };
        let servers = outbound.iter().map(|r| r.server.clone()).collect();
        if !d.submit(Purpose::Store(ticket, servers), |t| Job::Store {
            ticket: t,
            records,
            outbound,
        }) {
            d.stats
                .refused
                .fetch_add((n + m) as u64, std::sync::atomic::Ordering::Relaxed);
            let (results, queued) = (vec![Err(behind()); n], vec![Err(behind()); m]);
            self.router
                .store_done_all(ticket, results, queued, &mut self.actions);
        }
    }

    /// Carry out what the router has for store-and-forward ([`crate::router::ForwardAction`]);
    /// whether there was anything.
    pub(super) fn forward_actions(&mut self) -> bool {
        use crate::router::ForwardAction;
        let actions = self.router.take_forward();
        let any = !actions.is_empty();
        for action in actions {
            match action {
                ForwardAction::Store {
                    ticket,
                    records,
                    outbound,
                } => self.store_all(ticket, records, outbound),
                ForwardAction::Settled(settled) => self.forwarded(settled),
            }
        }
        any
    }

    /// A client logged in as `user`: send what its queue holds (the ids up to now).
    pub(super) fn backlog_start(&mut self, id: ConnId, user: &str) {
        let upto = self.router.last_msg();
        let Some(d) = &mut self.delivery else { return };
        d.backlogs.insert(
            id,
            Backlog {
                user: user.to_string(),
                after: 0,
                upto,
                more: true,
                reading: false,
                rewind: None,
            },
        );
        self.backlog_next(id);
    }

    /// Read the next batch of `id`'s backlog, unless one is being read or none is left.
    fn backlog_next(&mut self, id: ConnId) {
        let Some(d) = &mut self.delivery else { return };
        let window = d.window;
        let Some(b) = d.backlogs.get_mut(&id) else {
            return;
        };
        if b.reading || !b.more {
            return;
        }
        let (user, after, upto) = (b.user.clone(), b.after, b.upto);
        b.reading = true;
        if !d.submit(Purpose::Load(id), |ticket| Job::Load {
            ticket,
            user,
            after,
            upto,
            max: window,
        }) {
            // The thread is behind: the next ack (or login) asks again.
            if let Some(b) = d.backlogs.get_mut(&id) {
                b.reading = false;
            }
        }
    }

    /// A client connection closed.
    pub(super) fn backlog_end(&mut self, id: ConnId) {
        if let Some(d) = &mut self.delivery {
            d.backlogs.remove(&id);
        }
    }

    /// `bester.ack`: delete acknowledged messages of the client's user.
    pub(super) fn builtin_ack(&mut self, id: ConnId, user: &str, msg: &ClientMessage) {
        let reply_id = msg.id.as_deref().map(str::to_string);
        let ack = match parse_ack(msg.payload.data.as_deref()) {
            Ok(AckRequest::Ids(ids)) => Ack::Ids(ids),
            Ok(AckRequest::Upto(upto)) => Ack::Upto(upto),
            Err(error) => return self.reply_error(id, reply_id.as_deref(), &error),
        };
        let Some(d) = &mut self.delivery else {
            let error = ErrorBody::new(
                ErrorCode::StoreFailed,
                "this server keeps no delivery store ([delivery])",
            );
            return self.reply_error(id, reply_id.as_deref(), &error);
        };
        let user = user.to_string();
        if !d.submit(Purpose::Ack(id, reply_id.clone()), |ticket| Job::Ack {
            ticket,
            user,
            ack,
        }) {
            let r = behind();
            let error = ErrorBody::new(r.code, r.error);
            self.reply_error(id, reply_id.as_deref(), &error);
        }
    }

    /// The process before this one (a hot upgrade) has exited: it wrote to the same file
    /// until then, so count the queues again from the file, and send what it stored for
    /// users connected here, and for peers linked here, since this process opened the store.
    pub(super) fn delivery_recount(&mut self) {
        let Some(d) = &mut self.delivery else { return };
        d.recount_wanted = !d.submit(Purpose::Recount, |ticket| Job::Recount { ticket });
    }

    /// What the process before this one stored after this one opened the store: read it for
    /// every connection of those users (a login before that was sent its backlog without it)
    /// and from the oldest again for those peers' outbound queues. At least once, as always: a
    /// message read again before it was acknowledged comes again with its id.
    fn predecessor_stored(&mut self, recount: Recount) {
        let Some(d) = &mut self.delivery else { return };
        let range = (recount.after, d.writer.first_id.saturating_sub(1));
        let users: std::collections::HashSet<&str> =
            recount.users.iter().map(String::as_str).collect();
        let mut now: Vec<ConnId> = Vec::new();
        for (&conn, b) in d.backlogs.iter_mut() {
            if !users.contains(b.user.as_str()) {
                continue;
            }
            if b.reading {
                b.rewind = Some(range);
            } else {
                b.rewind(range);
                now.push(conn);
            }
        }
        for conn in now {
            self.backlog_next(conn);
        }
        for server in &recount.servers {
            self.forward_rewind(server);
        }
    }

    /// The loop was woken: take every result the delivery thread has.
    pub(super) fn delivery_results(&mut self) {
        if self.delivery.as_ref().is_some_and(|d| d.recount_wanted) {
            self.delivery_recount();
        }
        loop {
            let Some(d) = &mut self.delivery else { return };
            let Some(done) = d.writer.try_recv() else {
                return;
            };
            let ticket = match &done {
                Done::Stored { ticket, .. }
                | Done::Acked { ticket, .. }
                | Done::Loaded { ticket, .. }
                | Done::LoadedOut { ticket, .. }
                | Done::Queues { ticket, .. }
                | Done::Recounted { ticket, .. } => *ticket,
            };
            let Some(purpose) = d.tickets.remove(&ticket) else {
                continue;
            };
            match (purpose, done) {
                (
                    Purpose::Store(t, servers),
                    Done::Stored {
                        results, queued, ..
                    },
                ) => {
                    let mut kick: Vec<String> = servers
                        .into_iter()
                        .zip(&queued)
                        .filter(|(_, r)| r.is_ok())
                        .map(|(s, _)| s)
                        .collect();
                    kick.dedup();
                    self.router
                        .store_done_all(t, results, queued, &mut self.actions);
                    for server in kick {
                        self.forward_queued(&server);
                    }
                }
                (Purpose::LoadOut(server), Done::LoadedOut { result, .. }) => {
                    self.forward_loaded(&server, result)
                }
                (Purpose::Forwarded, Done::Acked { result: Err(r), .. }) => {
                    warn!("forwarded deliveries not deleted: {}", r.error);
                }
                (Purpose::Ack(conn, reply_id), Done::Acked { result, .. }) => {
                    match result {
                        Ok(n) => {
                            self.stats.messages.answered(true);
                            let body =
                                client_ok(reply_id.as_deref(), Some(ACK), &Acked { acked: n });
                            self.send(conn, body);
                        }
                        Err(r) => {
                            let error = ErrorBody::new(r.code, r.error);
                            self.reply_error(conn, reply_id.as_deref(), &error);
                        }
                    }
                    self.backlog_next(conn);
                }
                (Purpose::Load(conn), Done::Loaded { result, .. }) => {
                    self.backlog_loaded(conn, result)
                }
                (Purpose::Queues(slot), Done::Queues { result, .. }) => {
                    let answer = self.queues_answer(result);
                    self.ctl_answer(slot, answer, std::time::Instant::now());
                }
                (Purpose::Recount, Done::Recounted { result, .. }) => match result {
                    Ok(recount) => self.predecessor_stored(recount),
                    Err(r) => warn!("the delivery store was not counted again: {}", r.error),
                },
                _ => {}
            }
        }
    }

    /// The store's figures, when there is one (for the metrics).
    pub(super) fn delivery_stats(&self) -> Option<&DeliveryStats> {
        self.delivery.as_ref().map(|d| &*d.stats)
    }

    /// `besterd ctl queues`: ask the delivery thread for the `limit` deepest queues' figures
    /// (or `user`'s) and every peer server's.
    pub(super) fn queues_start(
        &mut self,
        slot: usize,
        user: Option<String>,
        limit: usize,
    ) -> Result<(), String> {
        let Some(d) = &mut self.delivery else {
            return Err("this server keeps no delivery store ([delivery])".into());
        };
        if d.submit(Purpose::Queues(slot), |ticket| Job::Queues {
            ticket,
            user,
            limit,
        }) {
            Ok(())
        } else {
            Err("the delivery store is behind (too many writes waiting); try again".into())
        }
    }

    fn queues_answer(
        &mut self,
        result: Result<crate::delivery::writer::QueueFigures, Refusal>,
    ) -> Vec<u8> {
        let mut lanes = self.lanes();
        use std::sync::atomic::Ordering::Relaxed;
        let path = self.config.delivery.as_ref().map(|d| {
            d.path
                .clone()
                .unwrap_or_else(|| default_path(&self.config.users))
        });
        let value = match (result, &self.delivery) {
            (Ok(figures), Some(d)) => {
                let rows: Vec<serde_json::Value> = figures
                    .queues
                    .iter()
                    .map(|(user, q)| {
                        serde_json::json!({"user": user, "messages": q.count, "bytes": q.bytes, "oldest_ms": q.oldest_ms})
                    })
                    .collect();
                // Every server with a queue, then every lane with figures but an empty queue.
                let mut servers: Vec<serde_json::Value> = figures
                    .servers
                    .iter()
                    .map(|(server, q)| {
                        let mut row = serde_json::json!({"server": server, "messages": q.count, "bytes": q.bytes, "oldest_ms": q.oldest_ms});
                        if let Some(serde_json::Value::Object(lane)) = lanes.remove(server) {
                            row.as_object_mut().expect("an object").extend(lane);
                        }
                        row
                    })
                    .collect();
                let mut idle: Vec<(String, serde_json::Value)> = lanes.into_iter().collect();
                idle.sort_by(|a, b| a.0.cmp(&b.0));
                for (server, lane) in idle {
                    let mut row = serde_json::json!({"server": server, "messages": 0, "bytes": 0, "oldest_ms": null});
                    if let serde_json::Value::Object(lane) = lane {
                        row.as_object_mut().expect("an object").extend(lane);
                    }
                    servers.push(row);
                }
                serde_json::json!({
                    "ok": true,
                    "now_ms": crate::delivery::writer::now_ms(),
                    "store": {
                        "path": path.map(|p| p.display().to_string()),
                        "messages": d.stats.messages.load(Relaxed),
                        "bytes": d.stats.bytes.load(Relaxed),
                        "disk_bytes": d.stats.disk_bytes.load(Relaxed),
                    },
                    "users": figures.users,
                    "queues": rows,
                    "servers": servers,
                })
            }
            (Err(r), _) => serde_json::json!({"ok": false, "error": r.error}),
            (_, None) => serde_json::json!({"ok": false, "error": "no delivery store"}),
        };
        let mut line = serde_json::to_vec(&value).expect("JSON");
        line.push(b'\n');
        line
    }

    fn backlog_loaded(
        &mut self,
        conn: ConnId,
        result: Result<(Vec<crate::delivery::Record>, bool), Refusal>,
    ) {
        let Some(d) = &mut self.delivery else { return };
        let Some(b) = d.backlogs.get_mut(&conn) else {
            return;
        };
        b.reading = false;
        let (records, more) = match result {
            Ok(r) => r,
            Err(r) => {
                warn!("conn={conn} stored pushes not sent: {}", r.error);
                b.more = false;
                return;
            }
        };
        b.more = more;
        if let Some(last) = records.last() {
            b.after = last.id;
        }
        let rewound = b.rewind.take().map(|range| b.rewind(range)).is_some();
        d.stats
            .delivered
            .fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if rewound && records.is_empty() {
            // No ack will ask for the next batch: ask now.
            return self.backlog_next(conn);
        }
        for r in records {
            let body =
                client_durable_push(&r.kind, &r.sender, Some(&r.data), (r.id, r.time_ms), true);
            self.send(conn, body);
        }
    }
}
