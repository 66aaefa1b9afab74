//! The delivery thread's counts (messages and bytes per user's queue and per peer server's
//! outbound queue, and in all): kept as commits change them, put back when a commit fails,
//! taken from the file again after another process wrote to it, and given out as figures (the
//! metrics, `besterd ctl queues`). Only the thread of `delivery/writer.rs` runs this.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use log::info;

use super::super::jobs::{QueueFigures, Recount};
use super::super::store::{Depth, StoreError};
use super::Thread;

impl Thread {
    /// The counts of every queue, as the file holds them.
    pub(super) fn set_counts(
        &mut self,
        depths: HashMap<String, Depth>,
        out_depths: HashMap<String, Depth>,
    ) {
        self.total_bytes = 0;
        self.total_messages = 0;
        self.queues.clear();
        self.outq.clear();
        for (user, depth) in depths {
            self.total_bytes += depth.bytes;
            self.total_messages += depth.count;
            self.queues.insert(user, (depth.count, depth.bytes));
        }
        for (server, depth) in out_depths {
            self.total_bytes += depth.bytes;
            self.outq.insert(server, (depth.count, depth.bytes));
        }
    }

    /// [`Job::Recount`]: the counts from the file again (another process wrote to it: the
    /// counts kept here missed its writes), and what it stored since this one opened the file.
    /// Two grouped reads of the whole store: once per hot upgrade.
    pub(super) fn recount(&mut self) -> Result<Recount, StoreError> {
        let (users, servers) = self
            .store
            .written_between(self.opened_at, self.store.first_id())?;
        let depths = self.store.depths()?;
        let out_depths = self.store.out_depths()?;
        self.set_counts(depths, out_depths);
        info!(
            "delivery store counted again: {} messages for {} users; {} users and {} servers got messages from the process before this one",
            self.total_messages,
            self.queues.len(),
            users.len(),
            servers.len()
        );
        Ok(Recount {
            users,
            servers,
            after: self.opened_at.0,
        })
    }

    /// Figures for the metrics.
    pub(super) fn publish(&mut self) {
        self.stats
            .messages
            .store(self.total_messages, Ordering::Relaxed);
        let out: u64 = self.outq.values().map(|q| q.0).sum();
        let out_bytes: u64 = self.outq.values().map(|q| q.1).sum();
        self.stats.out_messages.store(out, Ordering::Relaxed);
        self.stats.out_bytes.store(out_bytes, Ordering::Relaxed);
        self.stats.bytes.store(self.total_bytes, Ordering::Relaxed);
        // The files' sizes at most every quarter of a second: two system calls a commit
        // otherwise, for a figure the metrics sample far less often.
        let now = Instant::now();
        if self
            .sized_at
            .is_none_or(|at| now.saturating_duration_since(at) >= super::super::budget::EVERY)
        {
            self.sized_at = Some(now);
            self.stats
                .disk_bytes
                .store(self.store.disk_bytes(), Ordering::Relaxed);
        }
    }

    /// Take removed outbound deliveries (their bytes) off `server`'s counts.
    pub(super) fn forget_out(&mut self, server: &str, removed: &[u64]) {
        if removed.is_empty() {
            return;
        }
        let bytes: u64 = removed.iter().sum();
        self.total_bytes = self.total_bytes.saturating_sub(bytes);
        if let Some(q) = self.outq.get_mut(server) {
            q.0 = q.0.saturating_sub(removed.len() as u64);
            q.1 = q.1.saturating_sub(bytes);
            if q.0 == 0 {
                self.outq.remove(server);
            }
        }
    }

    /// Keep `user`'s counts as they are, if a transaction is open and has not kept them yet.
    pub(super) fn keep_undo(&mut self, user: &str) {
        if let Some(undo) = &mut self.undo
            && !undo.contains_key(user)
        {
            undo.insert(user.to_string(), self.queues.get(user).copied());
        }
    }

    /// Take removed messages (their bytes) off `user`'s counts.
    pub(super) fn forget(&mut self, user: &str, removed: &[u64]) {
        if removed.is_empty() {
            return;
        }
        self.keep_undo(user);
        let bytes: u64 = removed.iter().sum();
        self.total_bytes = self.total_bytes.saturating_sub(bytes);
        self.total_messages = self.total_messages.saturating_sub(removed.len() as u64);
        if let Some(q) = self.queues.get_mut(user) {
            q.0 = q.0.saturating_sub(removed.len() as u64);
            q.1 = q.1.saturating_sub(bytes);
            if q.0 == 0 {
                self.queues.remove(user);
            }
        }
    }

    /// `besterd ctl queues`: the `limit` deepest queues (or `user`'s) from the counts kept here,
    /// each with its first message's time, so the answer costs one index step per row shown
    /// however many users hold a queue.
    pub(super) fn queue_figures(
        &self,
        user: Option<&str>,
        limit: usize,
    ) -> Result<QueueFigures, StoreError> {
        let mut picked: Vec<(&String, &(u64, u64))> = match user {
            Some(user) => self.queues.get_key_value(user).into_iter().collect(),
            None => self.queues.iter().collect(),
        };
        let deepest = |a: &(&String, &(u64, u64)), b: &(&String, &(u64, u64))| {
            b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(b.0))
        };
        if picked.len() > limit {
            picked.select_nth_unstable_by(limit, deepest);
            picked.truncate(limit);
        }
        picked.sort_unstable_by(deepest);
        let depth = |(count, bytes): (u64, u64), oldest_ms| Depth {
            count,
            bytes,
            oldest_ms,
        };
        let queues = picked
            .into_iter()
            .map(|(name, &q)| Ok((name.clone(), depth(q, self.store.first_time(name)?))))
            .collect::<Result<_, StoreError>>()?;
        let mut servers = self
            .outq
            .iter()
            .map(|(name, &q)| Ok((name.clone(), depth(q, self.store.first_out_time(name)?))))
            .collect::<Result<Vec<_>, StoreError>>()?;
        servers.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(QueueFigures {
            users: self.queues.len(),
            queues,
            servers,
        })
    }
}
