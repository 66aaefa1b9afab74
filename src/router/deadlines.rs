//! The router's deadlines, earliest first. Nearly every one is "now + the request timeout", so
//! they arrive in time order: those go to a FIFO queue (O(1) in and out, where a heap would sift
//! on every request). One that is earlier than the last queued (a reload shortened the timeout,
//! or a peer message with its own) goes to a heap beside it; the earliest is the earlier of the
//! two fronts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

use super::Due;

/// Deadlines with what each is for.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    in_order: VecDeque<(Instant, Due)>,
    out_of_order: BinaryHeap<Reverse<(Instant, Due)>>,
}

impl Deadlines {
    pub(super) fn push(&mut self, at: Instant, due: Due) {
        if self.in_order.back().is_none_or(|(last, _)| *last <= at) {
            self.in_order.push_back((at, due));
        } else {
            self.out_of_order.push(Reverse((at, due)));
        }
    }

    /// The earliest deadline.
    pub(super) fn peek(&self) -> Option<(Instant, Due)> {
        let first = self.in_order.front().copied();
        let other = self.out_of_order.peek().map(|Reverse(d)| *d);
        match (first, other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Remove the earliest deadline.
    pub(super) fn pop(&mut self) -> Option<(Instant, Due)> {
        let first = self.in_order.front().copied();
        let other = self.out_of_order.peek().map(|Reverse(d)| *d);
        match (first, other) {
            (Some(a), Some(b)) if b < a => self.out_of_order.pop().map(|Reverse(d)| d),
            (Some(_), _) => self.in_order.pop_front(),
            (None, _) => self.out_of_order.pop().map(|Reverse(d)| d),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn earliest_first_whatever_the_order_of_arrival() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut d = Deadlines::default();
        // In order, then earlier ones (a shorter timeout), a tie, and a later one.
        for (ms, token) in [(10, 1), (20, 2), (30, 3), (5, 4), (25, 5), (30, 6), (40, 7)] {
            d.push(at(ms), Due::Request(token));
        }
        assert_eq!(d.peek(), Some((at(5), Due::Request(4))));
        let order: Vec<u64> = std::iter::from_fn(|| d.pop())
            .map(|(_, due)| match due {
                Due::Request(t) | Due::Remote(t) | Due::Dial(t) => t,
            })
            .collect();
        assert_eq!(order, [4, 1, 2, 5, 3, 6, 7]);
        assert_eq!(d.peek(), None);
    }
}
