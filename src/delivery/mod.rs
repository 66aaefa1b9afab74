//! Durable, acknowledged delivery to users who are offline (`[delivery]`, PROTOCOL.md §4
//! "Stored delivery"): an embedded SQLite database ([`store`]) written by one thread of its own
//! ([`writer`]) with group commit, talking to the event loop through bounded channels and the
//! loop's `mio::Waker`. This module owns the disk; the router decides what is stored and the
//! server (`server/delivery.rs`) carries it out. Nothing here runs on the event loop thread
//! except [`writer::Writer::submit`] and [`writer::Writer::try_recv`], which never block.

pub mod budget;
pub mod jobs;
pub mod store;
pub mod writer;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

pub use store::{Depth, Fsync, OutRecord, Record};
pub use writer::{Ack, Done, Job, Recount, Writer};

/// What a full queue does (`[delivery] full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Refuse the new message: the sender's report gives `queue_full` for that user.
    Refuse,
    /// Delete the user's oldest messages until the new one fits.
    DropOldest,
}

/// The validated `[delivery]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// The database file; `None`: `$STATE_DIRECTORY/delivery.db`, else `delivery.db` beside
    /// the user store.
    pub path: Option<PathBuf>,
    /// Messages one user's queue may hold.
    pub max_per_user: usize,
    /// Bytes one user's queue may hold.
    pub max_bytes_per_user: u64,
    /// How long a stored message is kept unacknowledged.
    pub max_age: Duration,
    /// Bytes all queues together may hold.
    pub max_disk_bytes: u64,
    /// Free bytes on the store's file system below which new messages are refused, kept so
    /// acknowledgements (deletes) can always be written.
    pub min_free_bytes: u64,
    /// What a full queue does.
    pub full: FullPolicy,
    /// How commits are made durable.
    pub fsync: Fsync,
    /// Stored messages sent to one connection and not yet acknowledged before the next batch
    /// waits for acks.
    pub window: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            path: None,
            max_per_user: 10_000,
            max_bytes_per_user: 16 << 20,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_disk_bytes: 1 << 30,
            min_free_bytes: 16 << 20,
            full: FullPolicy::Refuse,
            fsync: Fsync::Always,
            window: 256,
        }
    }
}

/// Why a message was not stored (or an ack not carried out), as the sender is told.
pub use crate::protocol::durable::Refused as Refusal;

/// The store's figures, updated by its thread and read by the metrics.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Messages written to a queue.
    pub stored: AtomicU64,
    /// Transactions that wrote and committed: each a group of jobs (a large one without an
    /// fsync per commit in two), so `stored` over this is the pushes one commit carried.
    pub commits: AtomicU64,
    /// Stored messages sent to a client on login (each sending counts).
    pub delivered: AtomicU64,
    /// Messages acknowledged (deleted by `bester.ack`).
    pub acked: AtomicU64,
    /// Messages deleted because they were older than `max_age`.
    pub expired: AtomicU64,
    /// Messages refused (a limit, or the disk).
    pub refused: AtomicU64,
    /// Messages deleted to make room (`full = "drop_oldest"`).
    pub dropped: AtomicU64,
    /// Messages in the store now.
    pub messages: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
    /// The database's size on disk (with its write-ahead log).
    pub disk_bytes: AtomicU64,
    /// Deliveries written to a peer server's outbound queue (store-and-forward).
    pub queued: AtomicU64,
    /// Outbound deliveries deleted after the peer's end-to-end ack (or its final refusal).
    pub forwarded: AtomicU64,
    /// Outbound deliveries a peer refused for good (deleted, not retried).
    pub forward_refused: AtomicU64,
    /// Deliveries in the outbound queues now.
    pub out_messages: AtomicU64,
    /// Their bytes.
    pub out_bytes: AtomicU64,
}
