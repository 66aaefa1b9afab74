//! The server's forwarder for store-and-forward (PROTOCOL.md §7): per peer server, a *lane*
//! that reads that server's outbound queue from the delivery thread a window at a time while
//! the link is up with the feature `store`, hands each delivery to the router
//! ([`crate::router::Router::forward`]), and deletes it from the queue once the router says it
//! was acknowledged end to end or refused for good ([`Forwarded`]). A delivery that was not
//! acknowledged (link lost, timeout) is sent again: the lane starts over from the queue's
//! oldest once its deliveries in flight have all settled, so the order is kept, and the peer keeps
//! one copy per delivery and user however often it comes.
//!
//! Nothing here blocks: reads and deletes are jobs for the delivery thread.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use log::{info, warn};

use super::{Delivery, Purpose};
use crate::delivery::{Job, OutRecord, Refusal};
use crate::router::Forwarded;

use super::super::Server;

/// Deliveries sent to one peer and not yet acknowledged.
pub(super) const WINDOW: usize = 64;

/// One peer server's outbound queue as the loop sees it.
#[derive(Debug, Default)]
pub(in crate::server) struct Lane {
    /// The link is up and takes stored deliveries.
    up: bool,
    /// The last id read from the queue.
    after: u64,
    /// The queue may hold more after `after`.
    more: bool,
    /// A read is in flight.
    reading: bool,
    /// Sent, not yet settled.
    in_flight: BTreeSet<u64>,
    /// Something was not acknowledged: start over once `in_flight` is empty.
    again: bool,
    /// Deliveries the peer refused for good since the start.
    pub(super) refused: u64,
    /// The last refusal: (code, sentence).
    pub(super) last_refusal: Option<(String, String)>,
}

impl Lane {
    /// Once nothing is in flight or being read, start over from the oldest still queued if
    /// asked to (deletes already asked for are done by then: the thread takes jobs in order).
    fn start_over_if_settled(&mut self) {
        if self.again && self.in_flight.is_empty() && !self.reading {
            self.again = false;
            self.after = 0;
            self.more = true;
        }
    }

    /// Figures for `besterd ctl queues`.
    pub(super) fn figures(&self) -> serde_json::Value {
        serde_json::json!({
            "linked": self.up,
            "in_flight": self.in_flight.len(),
            "refused": self.refused,
            "last_refusal": self.last_refusal.as_ref().map(|(code, error)| {
                serde_json::json!({"code": code, "error": error})
            }),
        })
    }
}

impl Delivery {
    fn lane(&mut self, server: &str) -> &mut Lane {
        self.lanes.entry(server.to_string()).or_default()
    }
}

impl Server {
    /// The link to peer `name` is up; `store`: whether it took the feature `store`.
    pub(in crate::server) fn forward_link_up(&mut self, name: &str, store: bool) {
        self.router.peer_store(name, store);
        let Some(d) = &mut self.delivery else { return };
        let lane = d.lane(name);
        lane.up = store;
        lane.after = 0;
        lane.more = true;
        lane.again = false;
        if !store {
            info!("peer={name} takes no stored deliveries: its outbound queue waits");
        }
        self.forward_next(name);
    }

    /// The link to peer `name` went down: nothing more is sent until it is back.
    pub(in crate::server) fn forward_link_down(&mut self, name: &str) {
        if let Some(d) = &mut self.delivery
            && let Some(lane) = d.lanes.get_mut(name)
        {
            lane.up = false;
        }
    }

    /// New deliveries were queued for `server`.
    pub(super) fn forward_queued(&mut self, server: &str) {
        let Some(d) = &mut self.delivery else { return };
        d.lane(server).more = true;
        self.forward_next(server);
    }

    /// Another process (the one a hot upgrade replaced) queued deliveries for `server` with
    /// ids below where this lane has read: read the queue from its oldest again, once what is
    /// in flight has settled.
    pub(super) fn forward_rewind(&mut self, server: &str) {
        let Some(d) = &mut self.delivery else { return };
        let Some(lane) = d.lanes.get_mut(server) else {
            // No lane yet: the link's next up reads from the oldest.
            return;
        };
        lane.more = true;
        lane.again = true;
        lane.start_over_if_settled();
        self.forward_next(server);
    }

    /// Read the next deliveries of `server`'s queue, if the link is up, there may be more, no
    /// read is in flight and the window has room.
    fn forward_next(&mut self, server: &str) {
        let Some(d) = &mut self.delivery else { return };
        let Some(lane) = d.lanes.get_mut(server) else {
            return;
        };
        if !lane.up || lane.reading || lane.again || !lane.more || lane.in_flight.len() >= WINDOW {
            return;
        }
        let (after, max) = (lane.after, WINDOW - lane.in_flight.len());
        lane.reading = true;
        let server_name = server.to_string();
        if !d.submit(Purpose::LoadOut(server_name.clone()), |ticket| {
            Job::LoadOut {
                ticket,
                server: server_name,
                after,
                max,
            }
        }) {
            // The thread is behind: the next settled delivery (or link up) asks again.
            d.lane(server).reading = false;
        }
    }

    /// A batch of `server`'s queue was read: send it.
    pub(super) fn forward_loaded(
        &mut self,
        server: &str,
        result: Result<(Vec<OutRecord>, bool), Refusal>,
    ) {
        let Some(d) = &mut self.delivery else { return };
        let lane = d.lane(server);
        lane.reading = false;
        let (records, more) = match result {
            Ok(r) => r,
            Err(r) => {
                warn!("peer={server} outbound queue not read: {}", r.error);
                return;
            }
        };
        if !lane.up {
            lane.more = true;
            return;
        }
        lane.more = more;
        let now = Instant::now();
        let mut failed = false;
        for record in records {
            if !self.router.forward(&record, now, &mut self.actions) {
                let Some(d) = &mut self.delivery else { return };
                let lane = d.lane(server);
                lane.more = true;
                lane.again = true;
                failed = true;
                break;
            }
            let Some(d) = &mut self.delivery else { return };
            let lane = d.lane(server);
            lane.after = record.id;
            lane.in_flight.insert(record.id);
        }
        if let Some(d) = &mut self.delivery
            && !failed
        {
            // Asked to start over while this batch was read (not a link that failed it).
            d.lane(server).start_over_if_settled();
        }
        self.forward_next(server);
    }

    /// Carry out [`crate::router::Action::Forwarded`].
    pub(in crate::server) fn forwarded(&mut self, settled: Forwarded) {
        let (server, row, delete) = match settled {
            Forwarded::Done {
                server,
                row,
                failed,
            } => {
                if !failed.is_empty() {
                    warn!("peer={server} could not keep delivery {row} for {failed:?}");
                }
                (server, row, true)
            }
            Forwarded::Refused {
                server,
                row,
                code,
                error,
            } => {
                warn!("peer={server} refused queued delivery {row} ({code}): {error}; deleted");
                if let Some(d) = &mut self.delivery {
                    d.stats.forward_refused.fetch_add(1, Relaxed);
                    let lane = d.lane(&server);
                    lane.refused += 1;
                    lane.last_refusal = Some((code, error));
                }
                (server, row, true)
            }
            Forwarded::Retry { server, row } => (server, row, false),
        };
        let Some(d) = &mut self.delivery else { return };
        let lane = d.lane(&server);
        lane.in_flight.remove(&row);
        if !delete {
            lane.again = true;
        }
        lane.start_over_if_settled();
        if delete {
            let name = server.clone();
            let submitted = d.submit(Purpose::Forwarded, |ticket| Job::Forwarded {
                ticket,
                server: name,
                ids: vec![row],
            });
            if !submitted {
                // Kept; sent again after the next link up (the peer keeps it once).
                warn!(
                    "peer={server} delivery {row} acknowledged but not deleted yet (store behind)"
                );
            }
        }
        self.forward_next(&server);
    }

    /// Every lane's figures, by server (for `besterd ctl queues`).
    pub(super) fn lanes(&self) -> HashMap<String, serde_json::Value> {
        self.delivery
            .as_ref()
            .map(|d| {
                d.lanes
                    .iter()
                    .map(|(server, lane)| (server.clone(), lane.figures()))
                    .collect()
            })
            .unwrap_or_default()
    }
}
