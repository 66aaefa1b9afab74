//! Stored pushes handed to the application once (PROTOCOL.md §4, "Stored delivery").
//!
//! A push of a storing type carries a durable id in `header.msg` and comes again (at least
//! once) until it is acknowledged with `bester.ack`. [`Seen`] is a [`crate::Session`]'s
//! bookkeeping for that: the ids already handed to the application (a bounded set, oldest
//! forgotten first, kept for the session's life so that it outlasts reconnections) and the ids
//! whose `bester.ack` is owed. No I/O here: the session sends the acks.

use std::collections::{HashMap, VecDeque};

/// How many ids a session remembers by default.
pub const MAX_SEEN: usize = 4096;
/// The most ids one `bester.ack` may carry (the server's limit).
pub const MAX_ACK: usize = 4096;

/// What to do with a push that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The first copy: hand it to the application.
    Deliver,
    /// A copy of one handed over and acknowledged: acknowledged again (it is owed), not handed
    /// over.
    AckAgain,
    /// A copy of one handed over whose ack is still to come: dropped.
    Drop,
}

/// The ids handed over (each with whether its ack was sent) and the acks owed.
#[derive(Debug)]
pub struct Seen {
    size: usize,
    /// msg → (whether its ack was sent, its place in `order`).
    ids: HashMap<String, (bool, u64)>,
    /// (place, msg), oldest first; a place that no longer matches `ids` was forgotten.
    order: VecDeque<(u64, String)>,
    next: u64,
    owed: Vec<String>,
}

impl Seen {
    /// A set that remembers at most `size` ids (at least 1).
    pub fn new(size: usize) -> Seen {
        Seen {
            size: size.max(1),
            ids: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            owed: Vec::new(),
        }
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// What to do with a push whose `header.msg` is `msg`.
    pub fn arrived(&mut self, msg: Option<&str>) -> Arrival {
        let Some(msg) = msg else {
            return Arrival::Deliver;
        };
        match self.ids.get(msg) {
            Some(&(true, _)) => {
                self.owed.push(msg.to_string());
                Arrival::AckAgain
            }
            Some(&(false, _)) => Arrival::Drop,
            None => {
                let place = self.next;
                self.next += 1;
                self.ids.insert(msg.to_string(), (false, place));
                self.order.push_back((place, msg.to_string()));
                while self.ids.len() > self.size {
                    let Some((place, old)) = self.order.pop_front() else {
                        break;
                    };
                    if self.ids.get(&old).is_some_and(|&(_, p)| p == place) {
                        self.ids.remove(&old);
                    }
                }
                // Forgotten ids leave stale places behind: keep `order` within twice the size.
                if self.order.len() > 2 * self.size {
                    let ids = &self.ids;
                    self.order
                        .retain(|(place, m)| ids.get(m).is_some_and(|&(_, p)| p == *place));
                }
                Arrival::Deliver
            }
        }
    }

    /// `msg` was not handed over after all: a later copy is.
    pub fn forget(&mut self, msg: &str) {
        self.ids.remove(msg);
    }

    /// The application has taken `msg`: acknowledge it with the next `bester.ack`.
    pub fn owe(&mut self, msg: &str) {
        self.owed.push(msg.to_string());
    }

    /// Whether acks are owed.
    pub fn owes(&self) -> bool {
        !self.owed.is_empty()
    }

    /// The ids for one `bester.ack` (at most [`MAX_ACK`]), now counted as acknowledged.
    pub fn take(&mut self) -> Vec<String> {
        let rest = self.owed.split_off(self.owed.len().min(MAX_ACK));
        let batch = std::mem::replace(&mut self.owed, rest);
        self.acked(&batch);
        batch
    }

    /// A `bester.ack` for `msgs` is on its way: a later copy is acknowledged again.
    pub fn acked<S: AsRef<str>>(&mut self, msgs: &[S]) {
        for m in msgs {
            if let Some(entry) = self.ids.get_mut(m.as_ref()) {
                entry.0 = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_memory_of_the_ids_handed_over() {
        let mut seen = Seen::new(2);
        assert_eq!(seen.arrived(None), Arrival::Deliver);
        assert_eq!(seen.arrived(Some("1")), Arrival::Deliver);
        assert_eq!(
            seen.arrived(Some("1")),
            Arrival::Drop,
            "its ack is still to come"
        );
        seen.owe("1");
        assert_eq!(seen.take(), ["1"]);
        assert_eq!(seen.arrived(Some("1")), Arrival::AckAgain);
        assert_eq!(seen.take(), ["1"]);
        seen.arrived(Some("2"));
        seen.arrived(Some("3"));
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen.arrived(Some("1")),
            Arrival::Deliver,
            "the oldest forgotten"
        );
        seen.forget("3");
        assert_eq!(
            seen.arrived(Some("3")),
            Arrival::Deliver,
            "forgotten: again"
        );
        for i in 0..5000 {
            seen.owe(&i.to_string());
        }
        assert_eq!(
            seen.take().len(),
            MAX_ACK,
            "at most 4096 ids per bester.ack"
        );
        assert_eq!(seen.take().len(), 5000 - MAX_ACK);
        assert!(!seen.owes());
    }

    #[test]
    fn forgetting_and_coming_back_keeps_the_bound() {
        let mut seen = Seen::new(3);
        for round in 0..100 {
            let id = (round % 5).to_string();
            seen.arrived(Some(&id));
            seen.forget(&id);
            seen.arrived(Some(&id));
            assert!(seen.len() <= 3);
            assert!(seen.order.len() <= 6 + 1);
        }
    }
}
