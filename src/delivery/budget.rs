//! The disk figures the writer thread checks before a commit (`[delivery] min_free_bytes`), kept
//! between measurements so that a commit far from the limit costs no system call. Measuring means
//! a `statvfs` of the store's file system, the size of the write-ahead log and two reads of
//! SQLite's page counts; between measurements the figures are lowered by what each commit may have
//! taken ([`Budget::spend`], the writer's pessimistic `disk_cost`), never raised. They are measured
//! again when the lowered figure comes within [`NEAR`] of what a commit needs, or when the last
//! measurement is older than [`EVERY`] (other files on the same file system take room too). So near
//! the limit every commit measures, exactly as before, and the refusal a user sees is unchanged.
//! Pure state: the thread does the measuring; nothing here touches the disk.

use std::time::{Duration, Instant};

/// How close to the limit the kept figure may come before every commit measures again: more than
/// the write-ahead log can grow between measurements through writes the costs do not count
/// (acknowledgements' deletes; the log is copied back every 4 MiB).
pub const NEAR: u64 = 64 << 20;

/// The oldest a kept figure may be.
pub const EVERY: Duration = Duration::from_millis(250);

/// Free bytes as last measured, less what was written since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    /// Free for us on the file system holding the store.
    pub fs_free: u64,
    /// Free for new messages: the file system's free bytes, plus free pages inside the
    /// database, less the write-ahead log (`Store::free_bytes`).
    pub free: u64,
}

/// The kept figures.
#[derive(Debug, Default)]
pub struct Budget {
    /// The last measurement: when, and what it gave (`None`: the file system cannot tell).
    measured: Option<(Instant, Option<Figures>)>,
    /// Bytes the commits since may have taken.
    spent: u64,
}

impl Budget {
    /// The figures now, if fresh enough to stand for a measurement for a commit of `cost` bytes
    /// that must leave `floor` free: `Some(None)` when the file system cannot tell (as measured
    /// less than [`EVERY`] ago); `None` when the thread must measure.
    pub fn kept(&self, cost: u64, floor: u64, now: Instant) -> Option<Option<Figures>> {
        let (at, figures) = self.measured?;
        if now.saturating_duration_since(at) >= EVERY {
            return None;
        }
        let Some(f) = figures else {
            return Some(None);
        };
        let need = floor.saturating_add(cost).saturating_add(NEAR);
        let now = self.lowered(f);
        (now.free >= need && now.fs_free >= need).then_some(Some(now))
    }

    /// A measurement, taken at `at`.
    pub fn measured(&mut self, figures: Option<Figures>, at: Instant) {
        self.measured = Some((at, figures));
        self.spent = 0;
    }

    /// A commit may have taken `bytes` of the disk.
    pub fn spend(&mut self, bytes: u64) {
        self.spent = self.spent.saturating_add(bytes);
    }

    /// Forget the figures: the next commit measures (after a checkpoint, for instance, which
    /// changes them).
    pub fn forget(&mut self) {
        self.measured = None;
    }

    fn lowered(&self, f: Figures) -> Figures {
        Figures {
            fs_free: f.fs_free.saturating_sub(self.spent),
            free: f.free.saturating_sub(self.spent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn kept_far_from_the_limit_measured_near_it_and_when_old() {
        let t0 = Instant::now();
        let mut b = Budget::default();
        assert_eq!(b.kept(1000, 0, t0), None, "never measured");
        let f = Figures {
            fs_free: GIB,
            free: GIB,
        };
        b.measured(Some(f), t0);
        assert_eq!(b.kept(1000, 16 << 20, t0), Some(Some(f)));
        // What was written since lowers the figure.
        b.spend(GIB - (16 << 20) - NEAR - 1000);
        let lowered = b.kept(1000, 16 << 20, t0).unwrap().unwrap();
        assert_eq!(lowered.free, (16 << 20) + NEAR + 1000);
        // One byte more and the commit must measure.
        assert_eq!(b.kept(1001, 16 << 20, t0), None);
        b.spend(1);
        assert_eq!(b.kept(1000, 16 << 20, t0), None);
        // A new measurement starts again; an old one is not used.
        b.measured(Some(f), t0);
        assert!(b.kept(1000, 0, t0 + EVERY / 2).is_some());
        assert_eq!(b.kept(1000, 0, t0 + EVERY), None);
        b.forget();
        assert_eq!(b.kept(1000, 0, t0), None);
    }

    #[test]
    fn either_figure_near_the_limit_measures() {
        let t0 = Instant::now();
        let mut b = Budget::default();
        // Much free inside the database, little on the file system.
        b.measured(
            Some(Figures {
                fs_free: NEAR,
                free: GIB,
            }),
            t0,
        );
        assert_eq!(b.kept(1, 0, t0), None);
        // A file system that cannot tell is measured again only when the figure is old.
        b.measured(None, t0);
        assert_eq!(b.kept(1, 0, t0), Some(None));
        assert_eq!(b.kept(1, 0, t0 + EVERY), None);
    }
}
