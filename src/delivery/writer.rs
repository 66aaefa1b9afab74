//! The delivery store's one thread: every read and write of the database happens here, never on
//! the event loop. Jobs come in on a channel, each loop turn's together (one send, at most one
//! wake-up of this thread a turn); the thread takes every job already waiting (up to
//! [`MAX_GROUP`]) into one transaction and commits once — a group commit, so one fsync covers
//! many pushes — then sends the group's results back as one message and wakes the loop once
//! through its `mio::Waker`. Without an fsync per commit (`fsync = "never"`) a large group goes
//! in two commits of half each, the first half answered while the second is written, so that
//! the loop and the senders work meanwhile instead of waiting for the whole batch. While a group
//! commits, the jobs the loop hands over meanwhile wait for the next group. At most [`QUEUE`]
//! jobs are in flight (handed over and not yet answered): the loop refuses more, so both
//! channels are bounded by that count. A push is reported `stored` only from a result, that is
//! after its commit returned. Limits are checked here, against counts kept per user (and per
//! peer server for the outbound queues of store-and-forward; `writer/counts.rs`); expiry runs
//! here too, between groups. Another process may write to the same file (the old process of a
//! hot upgrade, while it drains): once it has gone the loop asks for [`Job::Recount`], which
//! takes the counts from the file again and names the users and peer servers it stored for
//! after this thread opened the file.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{error, info, warn};
use mio::Waker;

use super::budget::Budget;
pub use super::jobs::{Ack, Done, Job, QueueFigures, Recount};
use super::store::{Fsync, OutRecord, Record, Store, StoreError};
use super::{DeliveryConfig, DeliveryStats, FullPolicy, Refusal};
use crate::protocol::ErrorCode;

mod counts;

/// Jobs one commit takes at most.
pub const MAX_GROUP: usize = 1024;
/// The smallest group that goes in two commits when commits are not fsynced. Splitting
/// smaller ones feeds on itself (each half is answered sooner, so the next group is smaller):
/// split from 2, the client → handler path of `scripts/bench.sh durable` came down from about
/// 37 jobs a commit to about 10, for no more throughput and a third more CPU per message.
const SPLIT_FROM: usize = 64;
/// Jobs that may be in flight, handed to the thread and not yet answered (the loop refuses
/// more: `store_failed`).
pub const QUEUE: usize = 8192;

/// The loop's side of the thread.
pub struct Writer {
    jobs: Sender<Vec<Job>>,
    /// Jobs submitted this loop turn, handed over together by [`Writer::flush`]: one send and
    /// at most one wake-up of the thread a turn, and the thread finds the turn's jobs at once.
    batch: Vec<Job>,
    /// Wakes the loop when [`Writer::flush`] answered jobs itself (the thread had gone).
    waker: Arc<Waker>,
    done: Receiver<Vec<Done>>,
    /// Results taken from the channel, not yet given to the loop.
    results: VecDeque<Done>,
    /// Jobs submitted and not yet answered.
    in_flight: usize,
    /// The first message id this run may give out.
    pub first_id: u64,
    /// The thread has gone (it stops only on a panic): every job is refused from then on.
    stopped: bool,
}

impl Writer {
    /// Open the store (errors: the file is unusable; nothing is started) and start the thread.
    pub fn start(
        config: &DeliveryConfig,
        path: &std::path::Path,
        stats: Arc<DeliveryStats>,
        waker: Arc<Waker>,
    ) -> Result<Writer, StoreError> {
        let store = Store::open(path, config.fsync)?;
        // Before the counts: what another process adds after this read is counted again, and
        // read for its users, when that process has gone (`Job::Recount`).
        let opened_at = store.last_ids()?;
        let depths = store.depths()?;
        let out_depths = store.out_depths()?;
        let first_id = store.first_id();
        // Both channels hold at most `QUEUE` jobs or results: every job gives one result, and
        // the loop submits no more while `QUEUE` are in flight.
        let (jobs, job_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let mut thread = Thread {
            store,
            config: config.clone(),
            stats,
            waker: Arc::clone(&waker),
            done: done_tx,
            queues: HashMap::new(),
            outq: HashMap::new(),
            total_bytes: 0,
            total_messages: 0,
            undo: None,
            expire_at: Instant::now(),
            budget: Budget::default(),
            sized_at: None,
            opened_at,
        };
        thread.set_counts(depths, out_depths);
        thread.publish();
        info!(
            "delivery store {}: {} messages for {} users",
            path.display(),
            thread.stats.messages.load(Ordering::Relaxed),
            thread.queues.len()
        );
        std::thread::Builder::new()
            .name("delivery".into())
            .spawn(move || thread.run(job_rx))
            .map_err(|e| StoreError::Other(format!("cannot start the delivery thread: {e}")))?;
        Ok(Writer::new(jobs, done, waker, first_id))
    }

    /// The loop's side, on these channels to the thread.
    fn new(
        jobs: Sender<Vec<Job>>,
        done: Receiver<Vec<Done>>,
        waker: Arc<Waker>,
        first_id: u64,
    ) -> Writer {
        Writer {
            jobs,
            batch: Vec::new(),
            waker,
            done,
            results: VecDeque::new(),
            in_flight: 0,
            first_id,
            stopped: false,
        }
    }

    /// Take a job for the thread, handed over at the next [`Writer::flush`]; `Err` gives it
    /// back when [`QUEUE`] jobs are in flight already.
    pub fn submit(&mut self, job: Job) -> Result<(), Job> {
        if self.in_flight >= QUEUE {
            return Err(job);
        }
        self.batch.push(job);
        self.in_flight += 1;
        Ok(())
    }

    /// Hand the jobs submitted since the last flush to the thread (the loop calls this once a
    /// turn, before it waits). Should the thread have gone, each job is answered here as
    /// failed (`store_failed`), and the loop woken to take those answers.
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        if let Err(mpsc::SendError(jobs)) = self.jobs.send(batch) {
            if !self.stopped {
                error!(
                    "the delivery thread has stopped: stored delivery is refused (store_failed) until besterd is restarted"
                );
                self.stopped = true;
            }
            let gone = Refusal::new(
                ErrorCode::StoreFailed,
                "the delivery store has stopped (see the server's log)",
            );
            self.results
                .extend(jobs.into_iter().map(|job| job.refused(&gone)));
            let _ = self.waker.wake();
        }
    }

    /// Whether the thread has gone, so that every job is refused.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// A finished job, if any (jobs not yet handed over are handed over first).
    pub fn try_recv(&mut self) -> Option<Done> {
        self.flush();
        if self.results.is_empty() {
            while let Ok(group) = self.done.try_recv() {
                self.results.extend(group);
            }
        }
        let done = self.results.pop_front()?;
        self.in_flight = self.in_flight.saturating_sub(1);
        Some(done)
    }
}

struct Thread {
    store: Store,
    config: DeliveryConfig,
    stats: Arc<DeliveryStats>,
    waker: Arc<Waker>,
    done: Sender<Vec<Done>>,
    /// (messages, bytes) per user with a queue.
    queues: HashMap<String, (u64, u64)>,
    /// (deliveries, bytes) per peer server with an outbound queue.
    outq: HashMap<String, (u64, u64)>,
    total_bytes: u64,
    /// Messages in all queues.
    total_messages: u64,
    /// While a group's transaction is open: each user's counts as they were before it touched
    /// them (`None`: no queue), put back if the commit fails. Only the users a group touches
    /// are kept, so a commit costs nothing per user of the whole store.
    undo: Option<HashMap<String, Option<(u64, u64)>>>,
    expire_at: Instant,
    /// The disk figures kept between measurements.
    budget: Budget,
    /// When the files' sizes were last taken for the metrics.
    sized_at: Option<Instant>,
    /// The largest message and outbound ids when the store was opened (see
    /// [`Store::last_ids`]).
    opened_at: (u64, u64),
}

/// The second half of a group that goes in two commits (see [`Thread::run`]), taken off
/// `group`: a group of [`SPLIT_FROM`] jobs or more when commits are not fsynced; `None`
/// (committed whole) otherwise, and always with an fsync per commit, where a second fsync
/// costs more than the overlap saves.
fn second_half(group: &mut Vec<Job>, fsync: Fsync) -> Option<Vec<Job>> {
    (fsync == Fsync::Never && group.len() >= SPLIT_FROM)
        .then(|| group.split_off(group.len().div_ceil(2)))
}

/// What one group's writes did, and what stops the rest of it.
#[derive(Default)]
struct Tally {
    /// The first write that failed: the rest of the group fails with it, and it rolls back.
    failure: Option<StoreError>,
    /// The disk figure for this group's checks, lowered by what each write may take.
    free: Option<u64>,
    /// What this group's writes may take of the disk, for the kept figures.
    spent: u64,
    stored: u64,
    refused: u64,
    dropped: u64,
    queued: u64,
    acked: u64,
    forwarded: u64,
}

/// Whether a successful write took room on the disk: a store, unless it was a forwarded
/// delivery this store had taken already (kept once: `false`); a queued delivery; never a
/// delete (a count).
trait Wrote {
    fn wrote(&self) -> bool;
}

impl Wrote for bool {
    fn wrote(&self) -> bool {
        *self
    }
}

impl Wrote for () {
    fn wrote(&self) -> bool {
        true
    }
}

impl Wrote for usize {
    fn wrote(&self) -> bool {
        false
    }
}

/// A group's results once its commit failed: every one becomes `refusal`, except refusals
/// for a full queue (true whatever the commit did); how many changed.
fn rolled_back<T>(results: &mut [Result<T, Refusal>], refusal: &Refusal) -> u64 {
    let mut failed = 0;
    for r in results.iter_mut() {
        if r.as_ref().is_ok() || r.as_ref().is_err_and(|x| x.code != ErrorCode::QueueFull) {
            *r = Err(refusal.clone());
            failed += 1;
        }
    }
    failed
}

/// What storing `record` may take on the disk: its bytes in the write-ahead log and again in
/// the database, each rounded up by a page.
fn disk_cost(record: &Record) -> u64 {
    2 * (record.bytes() + 4096)
}

/// [`disk_cost`] of an outbound delivery.
fn out_cost(record: &OutRecord) -> u64 {
    2 * (record.bytes() + 4096)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn store_failed(e: &StoreError) -> Refusal {
    Refusal::new(
        ErrorCode::StoreFailed,
        format!("the delivery store could not write: {e}"),
    )
}

impl Drop for Writer {
    /// Jobs submitted since the last flush still reach the thread.
    fn drop(&mut self) {
        self.flush();
    }
}

impl Thread {
    fn run(mut self, jobs: Receiver<Vec<Job>>) {
        let tick =
            (self.config.max_age / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
        // Jobs received and not yet in a group (past a full group's [`MAX_GROUP`]).
        let mut waiting = VecDeque::new();
        loop {
            if waiting.is_empty() {
                let wait = self.expire_at.saturating_duration_since(Instant::now());
                match jobs.recv_timeout(wait) {
                    Ok(batch) => waiting.extend(batch),
                    Err(RecvTimeoutError::Timeout) => {
                        self.expire();
                        self.expire_at = Instant::now() + tick;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            while waiting.len() < MAX_GROUP
                && let Ok(batch) = jobs.try_recv()
            {
                waiting.extend(batch);
            }
            let take = waiting.len().min(MAX_GROUP);
            let mut group: Vec<Job> = waiting.drain(..take).collect();
            // Without an fsync per commit, a large group goes in two commits, its first half
            // answered while the second is written: the loop sends those replies and reads the
            // senders' next jobs meanwhile, where one commit of everything would have the loop,
            // this thread and the senders take turns with the whole batch.
            let second = second_half(&mut group, self.config.fsync);
            for part in std::iter::once(group).chain(second) {
                let results = self.run_group(part);
                if self.done.send(results).is_err() {
                    return;
                }
                self.publish();
                let _ = self.waker.wake();
            }
            // Under a steady stream of jobs expiry still runs when it is due.
            if Instant::now() >= self.expire_at {
                self.expire();
                self.expire_at = Instant::now() + tick;
            }
        }
    }

    /// One write of a group: refused as the group's failure once a write failed, or when the
    /// disk is too low for its `cost` (a store; `None`: a delete), else `write`, whose outcome
    /// is tallied (a failure fails the rest of the group; a store that wrote spends its cost).
    fn write_one<T: Wrote>(
        &mut self,
        g: &mut Tally,
        cost: Option<u64>,
        write: impl FnOnce(&mut Self, &mut Tally) -> Result<Result<T, Refusal>, StoreError>,
    ) -> Result<T, Refusal> {
        if let Some(e) = &g.failure {
            return Err(store_failed(e));
        }
        if let Some(low) = cost.and_then(|c| g.free.and_then(|f| self.disk_low(f, c))) {
            g.refused += 1;
            return Err(low);
        }
        match write(self, g) {
            Ok(Ok(done)) => {
                if let Some(cost) = cost.filter(|_| done.wrote()) {
                    g.spent += cost;
                    g.free = g.free.map(|f| f.saturating_sub(cost));
                }
                Ok(done)
            }
            Ok(Err(refusal)) => {
                g.refused += 1;
                Err(refusal)
            }
            Err(e) => {
                let r = store_failed(&e);
                g.failure = Some(e);
                Err(r)
            }
        }
    }

    /// The jobs of one group: writes in one transaction, then the reads; the results in the
    /// order of the jobs (so a client's ack is answered after the backlog read before it).
    fn run_group(&mut self, group: Vec<Job>) -> Vec<Done> {
        let mut out: Vec<Option<Done>> = Vec::with_capacity(group.len());
        let writes = group.iter().any(|j| {
            matches!(
                j,
                Job::Store { .. } | Job::Ack { .. } | Job::Forwarded { .. }
            )
        });
        if !writes {
            return group.into_iter().map(|job| self.read(job)).collect();
        }
        // Counts as they will be if the commit succeeds; put back if it fails.
        // (The per-server counts are a few entries: copied whole.)
        let before = (self.total_messages, self.total_bytes, self.outq.clone());
        self.undo = Some(HashMap::new());
        let mut g = Tally::default();
        let cost: u64 = group
            .iter()
            .map(|j| match j {
                Job::Store {
                    records, outbound, ..
                } => {
                    records.iter().map(disk_cost).sum::<u64>()
                        + outbound.iter().map(out_cost).sum::<u64>()
                }
                _ => 0,
            })
            .sum();
        g.free = if cost > 0 { self.disk_free(cost) } else { None };
        g.failure = self.store.begin().err();
        let mut reads = Vec::new();
        for job in group {
            match job {
                Job::Store {
                    ticket,
                    records,
                    outbound,
                } => {
                    let results: Vec<_> = records
                        .iter()
                        .map(|record| {
                            let r = self.write_one(&mut g, Some(disk_cost(record)), |t, g| {
                                t.store_one(record, &mut g.dropped)
                            });
                            g.stored += u64::from(r == Ok(true));
                            r
                        })
                        .collect();
                    let queued: Vec<_> = outbound
                        .iter()
                        .map(|record| {
                            let r = self.write_one(&mut g, Some(out_cost(record)), |t, g| {
                                t.queue_one(record, &mut g.dropped)
                            });
                            g.queued += u64::from(r.is_ok());
                            r
                        })
                        .collect();
                    out.push(Some(Done::Stored {
                        ticket,
                        results,
                        queued,
                    }));
                }
                Job::Forwarded {
                    ticket,
                    server,
                    ids,
                } => {
                    let result = self.write_one(&mut g, None, |t, g| {
                        let removed = t.store.delete_out(&server, &ids)?;
                        g.forwarded += removed.len() as u64;
                        t.forget_out(&server, &removed);
                        Ok(Ok(removed.len()))
                    });
                    out.push(Some(Done::Acked { ticket, result }));
                }
                Job::Ack { ticket, user, ack } => {
                    let result = self.write_one(&mut g, None, |t, g| {
                        let n = t.ack(&user, &ack)?;
                        g.acked += n as u64;
                        Ok(Ok(n))
                    });
                    out.push(Some(Done::Acked { ticket, result }));
                }
                read => {
                    reads.push((out.len(), read));
                    out.push(None);
                }
            }
        }
        if g.failure.is_none()
            && let Err(e) = self.store.commit()
        {
            g.failure = Some(e);
        }
        self.budget.spend(g.spent);
        if let Some(e) = g.failure {
            warn!("delivery store: a commit failed: {e}");
            self.store.rollback();
            for (user, old) in self.undo.take().unwrap_or_default() {
                match old {
                    Some(q) => self.queues.insert(user, q),
                    None => self.queues.remove(&user),
                };
            }
            (self.total_messages, self.total_bytes, self.outq) = before;
            let refusal = store_failed(&e);
            let mut failed = 0;
            for done in out.iter_mut().flatten() {
                match done {
                    Done::Stored {
                        results, queued, ..
                    } => {
                        failed += rolled_back(results, &refusal) + rolled_back(queued, &refusal);
                    }
                    Done::Acked { result, .. } => *result = Err(refusal.clone()),
                    _ => {}
                }
            }
            self.stats
                .refused
                .fetch_add(failed + g.refused, Ordering::Relaxed);
        } else {
            // Near a full disk the log is copied into the database and emptied after every
            // commit: acknowledgements free pages there, and a log left to grow would take the
            // room kept for them.
            let floor = self.config.min_free_bytes.saturating_mul(2);
            let near = match self.budget.kept(0, floor, Instant::now()) {
                Some(_) => false,
                None => self.store.fs_free_bytes().is_some_and(|f| f < floor),
            };
            if near {
                self.store.checkpoint();
                self.budget.forget();
            }
            let stats = &self.stats;
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.stored.fetch_add(g.stored, Ordering::Relaxed);
            stats.refused.fetch_add(g.refused, Ordering::Relaxed);
            stats.dropped.fetch_add(g.dropped, Ordering::Relaxed);
            stats.acked.fetch_add(g.acked, Ordering::Relaxed);
            stats.queued.fetch_add(g.queued, Ordering::Relaxed);
            stats.forwarded.fetch_add(g.forwarded, Ordering::Relaxed);
        }
        self.undo = None;
        for (slot, job) in reads {
            out[slot] = Some(self.read(job));
        }
        out.into_iter().flatten().collect()
    }

    /// Bytes free for the store, if it can be told: when that is less than `min_free_bytes`
    /// and `cost` more, after giving the log's space back first.
    /// Far from the limit the figure kept since the last measurement stands for one
    /// ([`super::budget`]).
    fn disk_free(&mut self, cost: u64) -> Option<u64> {
        let now = Instant::now();
        let min = self.config.min_free_bytes;
        if let Some(kept) = self.budget.kept(cost, min, now) {
            return kept.map(|f| f.free);
        }
        let mut figures = self.store.free_bytes();
        if figures.is_some_and(|f| f.free < min.saturating_add(cost)) {
            self.store.checkpoint();
            figures = self.store.free_bytes();
        }
        self.budget.measured(figures, now);
        figures.map(|f| f.free)
    }

    /// A refusal when storing what costs `cost` on the disk would leave less than
    /// `min_free_bytes` free, kept for acknowledgements (a delete needs room in the log too).
    fn disk_low(&self, free: u64, cost: u64) -> Option<Refusal> {
        let min = self.config.min_free_bytes;
        (free < min.saturating_add(cost)).then(|| {
            Refusal::new(
                ErrorCode::StoreFailed,
                format!(
                    "the disk holding the delivery store is full ({free} bytes free, {min} kept for acknowledgements: [delivery] min_free_bytes)"
                ),
            )
        })
    }

    /// Store one record under the limits: `Ok(Err)` refused, `Err` the database failed.
    fn store_one(
        &mut self,
        record: &Record,
        dropped: &mut u64,
    ) -> Result<Result<bool, Refusal>, StoreError> {
        if let Some(key) = &record.origin
            && self.store.origin_known(key)?
        {
            return Ok(Ok(false));
        }
        let (max_count, max_bytes, full) = (
            self.config.max_per_user as u64,
            self.config.max_bytes_per_user,
            self.config.full,
        );
        let bytes = record.bytes();
        if bytes > max_bytes {
            return Ok(Err(Refusal::new(
                ErrorCode::QueueFull,
                format!(
                    "a message of {bytes} bytes is over the limit of {max_bytes} bytes for one user's queue ([delivery] max_bytes_per_user)"
                ),
            )));
        }
        self.keep_undo(&record.user);
        let (count, queued) = self.queues.get(&record.user).copied().unwrap_or_default();
        let over = |count: u64, queued: u64| count + 1 > max_count || queued + bytes > max_bytes;
        if over(count, queued) {
            match full {
                FullPolicy::Refuse => {
                    let text = if count + 1 > max_count {
                        format!(
                            "{}'s queue holds {count} messages, the most it may ([delivery] max_per_user)",
                            record.user
                        )
                    } else {
                        format!(
                            "{}'s queue holds {queued} bytes; with this message's {bytes} it would be over the limit of {max_bytes} ([delivery] max_bytes_per_user)",
                            record.user
                        )
                    };
                    return Ok(Err(Refusal::new(ErrorCode::QueueFull, text)));
                }
                FullPolicy::DropOldest => {
                    let (mut count, mut queued) = (count, queued);
                    while over(count, queued) && count > 0 {
                        let mut dropping = Vec::new();
                        for (id, b) in self.store.oldest(&record.user, 64)? {
                            if !over(count, queued) {
                                break;
                            }
                            dropping.push(id);
                            // Saturating: while a hot upgrade's two processes share the file,
                            // the other one's messages are in it and not in these counts.
                            count = count.saturating_sub(1);
                            queued = queued.saturating_sub(b);
                            self.total_bytes = self.total_bytes.saturating_sub(b);
                            self.total_messages = self.total_messages.saturating_sub(1);
                            *dropped += 1;
                        }
                        if dropping.is_empty() {
                            break;
                        }
                        self.store.delete_ids(&record.user, &dropping)?;
                    }
                    self.queues.insert(record.user.clone(), (count, queued));
                }
            }
        }
        let budget = self.config.max_disk_bytes;
        if self.total_bytes + bytes > budget {
            return Ok(Err(Refusal::new(
                ErrorCode::QueueFull,
                format!(
                    "the delivery store holds {} bytes; with this message's {bytes} it would be over its budget of {budget} ([delivery] max_disk_bytes)",
                    self.total_bytes
                ),
            )));
        }
        self.store.insert(record)?;
        let entry = self.queues.entry(record.user.clone()).or_default();
        entry.0 += 1;
        entry.1 += bytes;
        self.total_bytes += bytes;
        self.total_messages += 1;
        Ok(Ok(true))
    }

    /// Queue one delivery for its peer server under the limits (the same keys as a user's
    /// queue, counted per server): `Ok(Err)` refused, `Err` the database failed.
    fn queue_one(
        &mut self,
        record: &OutRecord,
        dropped: &mut u64,
    ) -> Result<Result<(), Refusal>, StoreError> {
        let (max_count, max_bytes) = (
            self.config.max_per_user as u64,
            self.config.max_bytes_per_user,
        );
        let bytes = record.bytes();
        let server = &record.server;
        if bytes > max_bytes {
            return Ok(Err(Refusal::new(
                ErrorCode::QueueFull,
                format!(
                    "a delivery of {bytes} bytes is over the limit of {max_bytes} bytes for one server's outbound queue ([delivery] max_bytes_per_user)"
                ),
            )));
        }
        let (count, held) = self.outq.get(server).copied().unwrap_or_default();
        let over = |count: u64, held: u64| count + 1 > max_count || held + bytes > max_bytes;
        if over(count, held) {
            match self.config.full {
                FullPolicy::Refuse => {
                    let text = if count + 1 > max_count {
                        format!(
                            "the outbound queue for server {server:?} holds {count} deliveries, the most it may ([delivery] max_per_user)"
                        )
                    } else {
                        format!(
                            "the outbound queue for server {server:?} holds {held} bytes; with this delivery's {bytes} it would be over the limit of {max_bytes} ([delivery] max_bytes_per_user)"
                        )
                    };
                    return Ok(Err(Refusal::new(ErrorCode::QueueFull, text)));
                }
                FullPolicy::DropOldest => {
                    let (mut count, mut held) = (count, held);
                    while over(count, held) && count > 0 {
                        let mut dropping = Vec::new();
                        for (id, b) in self.store.oldest_out(server, 64)? {
                            if !over(count, held) {
                                break;
                            }
                            dropping.push(id);
                            count = count.saturating_sub(1);
                            held = held.saturating_sub(b);
                            self.total_bytes = self.total_bytes.saturating_sub(b);
                            *dropped += 1;
                        }
                        if dropping.is_empty() {
                            break;
                        }
                        self.store.delete_out(server, &dropping)?;
                    }
                    self.outq.insert(server.clone(), (count, held));
                }
            }
        }
        let budget = self.config.max_disk_bytes;
        if self.total_bytes + bytes > budget {
            return Ok(Err(Refusal::new(
                ErrorCode::QueueFull,
                format!(
                    "the delivery store holds {} bytes; with this delivery's {bytes} it would be over its budget of {budget} ([delivery] max_disk_bytes)",
                    self.total_bytes
                ),
            )));
        }
        self.store.insert_out(record)?;
        let entry = self.outq.entry(server.clone()).or_default();
        entry.0 += 1;
        entry.1 += bytes;
        self.total_bytes += bytes;
        Ok(Ok(()))
    }

    fn ack(&mut self, user: &str, ack: &Ack) -> Result<usize, StoreError> {
        let removed = match ack {
            Ack::Ids(ids) => self.store.delete_ids(user, ids)?,
            Ack::Upto(upto) => self.store.delete_upto(user, *upto)?,
        };
        self.forget(user, &removed);
        Ok(removed.len())
    }

    fn read(&mut self, job: Job) -> Done {
        let failed = |e: StoreError| {
            Refusal::new(
                ErrorCode::StoreFailed,
                format!("the delivery store could not be read: {e}"),
            )
        };
        match job {
            Job::Load {
                ticket,
                user,
                after,
                upto,
                max,
            } => {
                let since = now_ms().saturating_sub(self.config.max_age.as_millis() as u64);
                let result = self
                    .store
                    .load(&user, (after, upto), since, (max, 512 * 1024))
                    .map_err(failed);
                Done::Loaded { ticket, result }
            }
            Job::LoadOut {
                ticket,
                server,
                after,
                max,
            } => {
                let since = now_ms().saturating_sub(self.config.max_age.as_millis() as u64);
                let result = self
                    .store
                    .load_out(&server, after, since, max)
                    .map_err(failed);
                Done::LoadedOut { ticket, result }
            }
            Job::Queues {
                ticket,
                user,
                limit,
            } => Done::Queues {
                ticket,
                result: self.queue_figures(user.as_deref(), limit).map_err(failed),
            },
            Job::Recount { ticket } => Done::Recounted {
                ticket,
                result: self.recount().map_err(failed),
            },
            Job::Store { .. } | Job::Ack { .. } | Job::Forwarded { .. } => {
                unreachable!("writes are done in the group")
            }
        }
    }

    /// Delete what is older than `max_age`.
    fn expire(&mut self) {
        let cutoff = now_ms().saturating_sub(self.config.max_age.as_millis() as u64);
        let result = self.store.begin().and_then(|()| {
            let removed = self.store.expire(cutoff)?;
            let out = self.store.expire_out(cutoff)?;
            self.store.commit()?;
            Ok((removed, out))
        });
        match result {
            Ok((removed, out)) if removed.is_empty() && out.is_empty() => {}
            Ok((removed, out)) => {
                let mut by_server: HashMap<String, Vec<u64>> = HashMap::new();
                for (server, bytes) in out {
                    by_server.entry(server).or_default().push(bytes);
                }
                for (server, bytes) in by_server {
                    info!(
                        "delivery store: {} deliveries for server {server:?} expired",
                        bytes.len()
                    );
                    self.stats
                        .expired
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    self.forget_out(&server, &bytes);
                }
                let mut by_user: HashMap<String, Vec<u64>> = HashMap::new();
                for (user, bytes) in removed {
                    by_user.entry(user).or_default().push(bytes);
                }
                let mut n = 0;
                for (user, bytes) in by_user {
                    n += bytes.len() as u64;
                    self.forget(&user, &bytes);
                }
                if n > 0 {
                    info!("delivery store: {n} messages expired");
                }
                self.stats.expired.fetch_add(n, Ordering::Relaxed);
                self.publish();
            }
            Err(e) => {
                self.store.rollback();
                error!("delivery store: expiry failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, user: &str, data: &str) -> Record {
        Record {
            id,
            user: user.into(),
            time_ms: now_ms(),
            kind: "mail".into(),
            sender: "{}".into(),
            data: data.into(),
            origin: None,
        }
    }

    /// A delivery for bob on server b.
    fn out_record(id: u64) -> OutRecord {
        OutRecord {
            id,
            server: "b".into(),
            time_ms: now_ms(),
            kind: "mail".into(),
            sender: "{}".into(),
            data: "1".into(),
            users: vec!["bob".into()],
        }
    }

    fn start(config: DeliveryConfig) -> (tempfile::TempDir, Writer, mio::Poll) {
        let dir = tempfile::tempdir().unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let path = dir.path().join("d.db");
        let w = Writer::start(&config, &path, Arc::default(), waker).unwrap();
        (dir, w, poll)
    }

    fn wait(w: &mut Writer) -> Done {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(d) = w.try_recv() {
                return d;
            }
            assert!(Instant::now() < deadline, "no result from the writer");
            std::thread::yield_now();
        }
    }

    fn store(w: &mut Writer, ticket: u64, records: Vec<Record>) -> Vec<Result<bool, Refusal>> {
        w.submit(Job::Store {
            ticket,
            records,
            outbound: vec![],
        })
        .unwrap();
        let Done::Stored { results, .. } = wait(w) else {
            panic!("not a store result")
        };
        results
    }

    fn depths(w: &mut Writer, ticket: u64) -> Vec<(String, u64, u64)> {
        w.submit(Job::Queues {
            ticket,
            user: None,
            limit: 10,
        })
        .unwrap();
        let Done::Queues { result: Ok(f), .. } = wait(w) else {
            panic!("not the queues' figures")
        };
        let mut q: Vec<_> = f
            .queues
            .into_iter()
            .map(|(u, d)| (u, d.count, d.bytes))
            .collect();
        q.sort();
        q
    }

    fn tickets(jobs: &[Job]) -> Vec<u64> {
        jobs.iter()
            .map(|j| match j {
                Job::Recount { ticket } => *ticket,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_group_goes_in_two_halves_only_without_an_fsync_per_commit() {
        let group = |n: u64| {
            (0..n)
                .map(|ticket| Job::Recount { ticket })
                .collect::<Vec<_>>()
        };
        let odd = SPLIT_FROM as u64 + 1;
        let mut g = group(odd);
        let second = second_half(&mut g, Fsync::Never).expect("split");
        assert_eq!(tickets(&g), (0..=odd / 2).collect::<Vec<_>>());
        assert_eq!(tickets(&second), (odd / 2 + 1..odd).collect::<Vec<_>>());
        let mut g = group(odd);
        assert!(second_half(&mut g, Fsync::Always).is_none());
        assert_eq!(tickets(&g), (0..odd).collect::<Vec<_>>());
        let mut small = group(SPLIT_FROM as u64 - 1);
        assert!(second_half(&mut small, Fsync::Never).is_none());
        assert_eq!(small.len(), SPLIT_FROM - 1);
    }

    /// Submit `count` stores of one message for bob, tickets from 0.
    fn submit_stores(w: &mut Writer, count: u64) {
        let first = w.first_id;
        for n in 0..count {
            w.submit(Job::Store {
                ticket: n,
                records: vec![record(first + n, "bob", "1")],
                outbound: vec![],
            })
            .unwrap();
        }
    }

    /// The jobs of one loop turn reach the thread together, so they go in one group: with an
    /// fsync per commit (no halves), once the first is answered the others are too. A job is
    /// not handed over before the flush.
    #[test]
    fn a_turns_jobs_are_one_group() {
        let (_dir, mut w, _poll) = start(DeliveryConfig {
            fsync: Fsync::Always,
            min_free_bytes: 0,
            ..DeliveryConfig::default()
        });
        submit_stores(&mut w, 40);
        std::thread::sleep(Duration::from_millis(50));
        assert!(w.done.try_recv().is_err(), "answered before the flush");
        w.flush();
        assert!(matches!(wait(&mut w), Done::Stored { ticket: 0, .. }));
        for n in 1..40 {
            let done = w.results.pop_front().expect("answered with the first");
            assert!(matches!(done, Done::Stored { ticket, .. } if ticket == n));
        }
    }

    /// Once the thread has gone, a flush answers each job itself, refused, and says so once.
    #[test]
    fn jobs_for_a_thread_that_has_gone_are_refused() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (jobs, thread_side) = mpsc::channel();
        drop(thread_side);
        let (_results, done) = mpsc::channel();
        let mut w = Writer::new(jobs, done, waker, 1);
        submit_stores(&mut w, 2);
        assert!(!w.stopped(), "nothing handed over yet");
        w.flush();
        assert!(w.stopped());
        for n in 0..2 {
            let Some(Done::Stored {
                ticket, results, ..
            }) = w.try_recv()
            else {
                panic!("no refusal")
            };
            assert_eq!(ticket, n);
            let [Err(r)] = &results[..] else {
                panic!("{results:?}")
            };
            assert_eq!(r.code, ErrorCode::StoreFailed);
            assert_eq!(
                r.error,
                "the delivery store has stopped (see the server's log)"
            );
        }
        assert!(w.try_recv().is_none());
        assert_eq!(w.in_flight, 0);
    }

    #[test]
    fn a_job_not_done_is_refused_whole() {
        let why = Refusal::new(ErrorCode::StoreFailed, "gone");
        let store = Job::Store {
            ticket: 3,
            records: vec![record(1, "bob", "1"), record(2, "eve", "1")],
            outbound: vec![out_record(3)],
        };
        let Done::Stored {
            ticket,
            results,
            queued,
        } = store.refused(&why)
        else {
            panic!("not a store's answer")
        };
        assert_eq!(ticket, 3);
        assert_eq!(results, vec![Err(why.clone()), Err(why.clone())]);
        assert_eq!(queued, vec![Err(why.clone())]);
        let ack = Job::Ack {
            ticket: 4,
            user: "bob".into(),
            ack: Ack::Upto(9),
        };
        assert!(matches!(ack.refused(&why), Done::Acked { ticket: 4, result: Err(r) } if r == why));
        let load = Job::Load {
            ticket: 5,
            user: "bob".into(),
            after: 0,
            upto: 9,
            max: 1,
        };
        assert!(
            matches!(load.refused(&why), Done::Loaded { ticket: 5, result: Err(r) } if r == why)
        );
    }

    /// Jobs handed over faster than the thread commits them come back once each, in order,
    /// whether or not their groups were split.
    #[test]
    fn jobs_waiting_together_are_answered_once_each_in_order() {
        for fsync in [Fsync::Never, Fsync::Always] {
            let (_dir, mut w, _poll) = start(DeliveryConfig {
                fsync,
                min_free_bytes: 0,
                ..DeliveryConfig::default()
            });
            submit_stores(&mut w, 300);
            for n in 0..300 {
                match wait(&mut w) {
                    Done::Stored {
                        ticket, results, ..
                    } => assert_eq!((ticket, results), (n, vec![Ok(true)]), "{fsync:?}"),
                    other => panic!("{other:?}"),
                }
            }
            let small = record(0, "bob", "1").bytes();
            assert_eq!(depths(&mut w, 300), [("bob".into(), 300, 300 * small)]);
        }
    }

    /// A hot upgrade: the old process keeps writing to the file the new one has opened.
    #[test]
    fn what_another_process_stored_is_counted_again_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let mut old = Store::open(&path, super::super::Fsync::Never).unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let config = DeliveryConfig {
            max_per_user: 1,
            full: FullPolicy::DropOldest,
            min_free_bytes: 0,
            ..DeliveryConfig::default()
        };
        let mut w = Writer::start(&config, &path, Arc::default(), waker).unwrap();
        let new_id = w.first_id;
        assert_eq!(
            store(&mut w, 1, vec![record(new_id, "carol", "1")]),
            [Ok(true)]
        );
        // The old process stores after the new one opened the file (its ids are lower).
        let old_id = old.first_id();
        assert!(old_id < new_id);
        let big = "x".repeat(1000);
        old.begin().unwrap();
        old.insert(&record(old_id, "bob", &big)).unwrap();
        old.insert(&record(old_id + 1, "carol", &big)).unwrap();
        old.insert_out(&out_record(old_id + 2)).unwrap();
        old.commit().unwrap();
        // Counts that missed those: dropping carol's oldest (the old process's, larger than
        // all this process counted for her) must not wrap them round (a panic in this build,
        // a store refusing everything as over its budget in a release build).
        assert_eq!(
            store(&mut w, 2, vec![record(new_id + 1, "carol", "2")]),
            [Ok(true)]
        );
        drop(old);

        w.submit(Job::Recount { ticket: 3 }).unwrap();
        let Done::Recounted { result: Ok(r), .. } = wait(&mut w) else {
            panic!("not a recount")
        };
        assert_eq!(
            r.users,
            ["bob"],
            "carol's message from the old process was dropped"
        );
        assert_eq!(r.servers, ["b"]);
        assert_eq!(r.after, 0, "the file was empty when the writer opened it");
        // The file's truth: carol holds two (one over her limit, by what the counts missed
        // while both processes wrote), and the next store for her finds that.
        let small = record(0, "carol", "1").bytes();
        assert_eq!(
            depths(&mut w, 4),
            [
                ("bob".into(), 1, record(0, "bob", &big).bytes()),
                ("carol".into(), 2, 2 * small)
            ]
        );
        assert_eq!(
            store(&mut w, 5, vec![record(new_id + 2, "carol", "3")]),
            [Ok(true)]
        );
        assert_eq!(depths(&mut w, 6)[1], ("carol".into(), 1, small));
    }

    #[test]
    fn a_forwarded_delivery_is_kept_once_and_outbound_queues_have_their_limits() {
        let config = DeliveryConfig {
            max_per_user: 1,
            min_free_bytes: 0,
            ..DeliveryConfig::default()
        };
        let (_dir, mut w, _poll) = start(config);
        let id = w.first_id;
        let taken = |n: u64| Record {
            origin: Some("a/77/bob".into()),
            ..record(id + n, "bob", "1")
        };
        let out = |n: u64| out_record(id + 10 + n);
        w.submit(Job::Store {
            ticket: 1,
            records: vec![taken(0)],
            outbound: vec![out(0), out(1)],
        })
        .unwrap();
        let Done::Stored {
            results, queued, ..
        } = wait(&mut w)
        else {
            panic!("not a store result")
        };
        assert_eq!(results, [Ok(true)]);
        assert!(queued[0].is_ok());
        let e = queued[1].clone().unwrap_err();
        assert_eq!(e.code, ErrorCode::QueueFull);
        assert_eq!(
            e.error,
            "the outbound queue for server \"b\" holds 1 deliveries, the most it may ([delivery] max_per_user)"
        );
        // The same delivery again (a redelivery): kept once, even past the user's limit.
        w.submit(Job::Store {
            ticket: 2,
            records: vec![taken(1)],
            outbound: vec![],
        })
        .unwrap();
        let Done::Stored { results, .. } = wait(&mut w) else {
            panic!("not a store result")
        };
        assert_eq!(results, [Ok(false)]);
        // Acked by the peer: the delivery leaves the queue, and the read sees none.
        w.submit(Job::Forwarded {
            ticket: 3,
            server: "b".into(),
            ids: vec![id + 10],
        })
        .unwrap();
        assert!(matches!(wait(&mut w), Done::Acked { result: Ok(1), .. }));
        w.submit(Job::LoadOut {
            ticket: 4,
            server: "b".into(),
            after: 0,
            max: 10,
        })
        .unwrap();
        let Done::LoadedOut { result, .. } = wait(&mut w) else {
            panic!("not a read")
        };
        assert_eq!(result.unwrap(), (vec![], false));
    }

    #[test]
    fn limits_refuse_with_their_key_and_drop_oldest_makes_room() {
        let config = DeliveryConfig {
            max_per_user: 2,
            min_free_bytes: 0,
            ..DeliveryConfig::default()
        };
        let (_dir, mut w, _poll) = start(config.clone());
        let id = w.first_id;
        let records = (0..3).map(|i| record(id + i, "bob", "1")).collect();
        w.submit(Job::Store {
            ticket: 1,
            records,
            outbound: vec![],
        })
        .unwrap();
        let Done::Stored {
            ticket, results, ..
        } = wait(&mut w)
        else {
            panic!("not a store result")
        };
        assert_eq!(ticket, 1);
        assert!(results[0].is_ok() && results[1].is_ok());
        let e = results[2].clone().unwrap_err();
        assert_eq!(e.code, ErrorCode::QueueFull);
        assert_eq!(
            e.error,
            "bob's queue holds 2 messages, the most it may ([delivery] max_per_user)"
        );
        w.submit(Job::Ack {
            ticket: 2,
            user: "bob".into(),
            ack: Ack::Upto(id),
        })
        .unwrap();
        assert!(matches!(
            wait(&mut w),
            Done::Acked {
                ticket: 2,
                result: Ok(1)
            }
        ));

        let (_dir, mut w, _poll) = start(DeliveryConfig {
            full: FullPolicy::DropOldest,
            ..config
        });
        let id = w.first_id;
        let records = (0..3).map(|i| record(id + i, "bob", "1")).collect();
        w.submit(Job::Store {
            ticket: 3,
            records,
            outbound: vec![],
        })
        .unwrap();
        let Done::Stored { results, .. } = wait(&mut w) else {
            panic!("not a store result")
        };
        assert!(results.iter().all(Result::is_ok));
        w.submit(Job::Load {
            ticket: 4,
            user: "bob".into(),
            after: 0,
            upto: u64::MAX,
            max: 10,
        })
        .unwrap();
        let Done::Loaded { result, .. } = wait(&mut w) else {
            panic!("not a load")
        };
        let ids: Vec<u64> = result.unwrap().0.iter().map(|r| r.id).collect();
        assert_eq!(ids, [id + 1, id + 2]);
    }
}
