//! The work the event loop hands to the delivery thread (`delivery/writer.rs`) and what comes
//! back: plain data, one [`Done`] per [`Job`], matched by its ticket. Nothing here does I/O.

use super::Refusal;
use super::store::{Depth, OutRecord, Record};

/// What to acknowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// These ids.
    Ids(Vec<u64>),
    /// Every id up to this one.
    Upto(u64),
}

/// Work for the thread; `ticket` comes back with the result.
#[derive(Debug)]
pub enum Job {
    /// Store these records (their ids given by the loop), and queue these deliveries for peer
    /// servers, in one commit.
    Store {
        /// Matches the result to what waits for it.
        ticket: u64,
        /// The records.
        records: Vec<Record>,
        /// The deliveries for peer servers' outbound queues.
        outbound: Vec<OutRecord>,
    },
    /// Delete deliveries of `server`'s outbound queue (the peer acknowledged them, or refused
    /// them for good); answered with [`Done::Acked`].
    Forwarded {
        /// Matches the result.
        ticket: u64,
        /// The peer server.
        server: String,
        /// The deliveries' ids.
        ids: Vec<u64>,
    },
    /// Read `server`'s outbound deliveries with `id > after`, in order.
    LoadOut {
        /// Matches the result.
        ticket: u64,
        /// The peer server.
        server: String,
        /// After this id.
        after: u64,
        /// At most this many.
        max: usize,
    },
    /// Delete acknowledged messages of `user`.
    Ack {
        /// Matches the result.
        ticket: u64,
        /// Whose.
        user: String,
        /// Which.
        ack: Ack,
    },
    /// Read `user`'s messages with `after < id <= upto`, in order, a batch at a time.
    Load {
        /// Matches the result.
        ticket: u64,
        /// Whose.
        user: String,
        /// After this id.
        after: u64,
        /// Up to this id.
        upto: u64,
        /// At most this many.
        max: usize,
    },
    /// Count every queue again from the file, and say what another process stored since this
    /// one opened it (after a hot upgrade's old process has exited).
    Recount {
        /// Matches the result.
        ticket: u64,
    },
    /// The deepest queues in figures, or one user's (`besterd ctl queues`).
    Queues {
        /// Matches the result.
        ticket: u64,
        /// Only this user's queue.
        user: Option<String>,
        /// At most this many users' queues.
        limit: usize,
    },
}

impl Job {
    /// The job's answer when it was not done: every part of it refused with `why`.
    pub fn refused(self, why: &Refusal) -> Done {
        match self {
            Job::Store {
                ticket,
                records,
                outbound,
            } => Done::Stored {
                ticket,
                results: records.iter().map(|_| Err(why.clone())).collect(),
                queued: outbound.iter().map(|_| Err(why.clone())).collect(),
            },
            Job::Forwarded { ticket, .. } | Job::Ack { ticket, .. } => Done::Acked {
                ticket,
                result: Err(why.clone()),
            },
            Job::LoadOut { ticket, .. } => Done::LoadedOut {
                ticket,
                result: Err(why.clone()),
            },
            Job::Load { ticket, .. } => Done::Loaded {
                ticket,
                result: Err(why.clone()),
            },
            Job::Recount { ticket } => Done::Recounted {
                ticket,
                result: Err(why.clone()),
            },
            Job::Queues { ticket, .. } => Done::Queues {
                ticket,
                result: Err(why.clone()),
            },
        }
    }
}

/// A finished job.
#[derive(Debug)]
pub enum Done {
    /// Per record, in order: stored (`true`; `false`: a forwarded delivery this store had
    /// taken already, kept once), or why not.
    Stored {
        /// The job's ticket.
        ticket: u64,
        /// One result per record.
        results: Vec<Result<bool, Refusal>>,
        /// One result per outbound delivery.
        queued: Vec<Result<(), Refusal>>,
    },
    /// A batch of a peer server's outbound queue.
    LoadedOut {
        /// The job's ticket.
        ticket: u64,
        /// The deliveries and whether more are left, or why the read failed.
        result: Result<(Vec<OutRecord>, bool), Refusal>,
    },
    /// How many messages were deleted.
    Acked {
        /// The job's ticket.
        ticket: u64,
        /// The count, or why the delete failed.
        result: Result<usize, Refusal>,
    },
    /// A batch of a user's queue.
    Loaded {
        /// The job's ticket.
        ticket: u64,
        /// The records, or why the read failed.
        result: Result<(Vec<Record>, bool), Refusal>,
    },
    /// The queues counted again.
    Recounted {
        /// The job's ticket.
        ticket: u64,
        /// What another process stored meanwhile, or why the store could not be read.
        result: Result<Recount, Refusal>,
    },
    /// The queues asked for, and every peer server's outbound queue.
    Queues {
        /// The job's ticket.
        ticket: u64,
        /// The queues, or why they could not be read.
        result: Result<QueueFigures, Refusal>,
    },
}

/// Users' queues and peer servers' outbound queues in figures.
#[derive(Debug)]
pub struct QueueFigures {
    /// Users holding a queue, in all.
    pub users: usize,
    /// The deepest users' queues (most messages first, then by name), or the one asked for.
    pub queues: Vec<(String, Depth)>,
    /// Every peer server's outbound queue, by name.
    pub servers: Vec<(String, Depth)>,
}

/// What another process holding the same file (the one a hot upgrade replaced) stored after
/// this one opened it: the messages and deliveries with ids after [`Recount::after`] and below
/// this run's first id, which this process has not read.
#[derive(Debug)]
pub struct Recount {
    /// Users whose queues got such messages.
    pub users: Vec<String>,
    /// Peer servers whose outbound queues got such deliveries.
    pub servers: Vec<String>,
    /// The largest message id when this process opened the store.
    pub after: u64,
}
