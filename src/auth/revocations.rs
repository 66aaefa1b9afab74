//! The logged-out sessions on disk, so that a `bester.logout` outlives a restart: with `[auth]
//! token_secret_file` the resume tokens of a run are still valid after it, and so must the list
//! that refuses some of them be.
//!
//! The file (`[auth] revoked_file`, by default `besterd-revoked` beside the user store) holds
//! the [`Revoked`] list as text: a first line `besterd-revoked 1`, then `floor <until>` and one
//! `<session> <until>` line per logged-out session (`until`: seconds since the epoch when its
//! tokens expire anyway; expired lines are left out). It is read once at start (a file that is
//! not ours, a symbolic link, or one that does not parse stops the start with the reason: a
//! silently emptied list would make logged-out sessions valid again) and written by a thread of
//! its own ([`Writer`]): the loop only appends to a bounded list of new entries and signals, the
//! thread keeps its own copy of the list and replaces the file (a fresh file, fsynced, renamed
//! over the old one, the directory fsynced) with every entry that came since the last write.
//!
//! It must not: block the loop, follow a symbolic link, or lose a logout it was told of before a
//! clean stop (the writer writes what is pending before it ends).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{error, info};

use super::resume::Revoked;
use crate::fsutil;

/// The first line of the file.
const MAGIC: &str = "besterd-revoked 1";
/// The largest file read (65,536 sessions take about 3.3 MB).
const MAX_FILE_BYTES: u64 = 16 << 20;
/// New entries waiting for the writer, at most (a write takes milliseconds: never reached
/// unless the disk hangs, and then the newest are refused and logged).
const MAX_PENDING: usize = 65_536;
/// How long the writer waits before trying again after a failed write.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the file holds: the sessions with the time their tokens expire, and the floor.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Saved {
    /// Logged-out sessions and until when each is kept.
    pub sessions: Vec<(String, u64)>,
    /// Tokens that expire no later than this are refused.
    pub floor: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Read the file at `path` (none there: an empty list). Entries already expired at `now` are
/// left out.
pub fn load(path: &Path, now: u64) -> io::Result<Saved> {
    let Some(file) = fsutil::open_read_nofollow(path)? else {
        return Ok(Saved::default());
    };
    fsutil::check_regular(&file, path, &[fsutil::euid()])?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(fsutil::refused(path, "is larger than 16 MiB"));
    }
    parse(&text, now).map_err(|e| fsutil::refused(path, e))
}

fn parse(text: &str, now: u64) -> Result<Saved, String> {
    let mut lines = text.lines().enumerate();
    if lines.next().map(|(_, l)| l) != Some(MAGIC) {
        return Err(format!("does not start with {MAGIC:?}"));
    }
    let mut saved = Saved::default();
    for (n, line) in lines {
        let bad = || {
            format!(
                "line {}: not \"<session> <until>\" or \"floor <until>\"",
                n + 1
            )
        };
        let (name, until) = line.split_once(' ').ok_or_else(bad)?;
        let until: u64 = until.parse().map_err(|_| bad())?;
        if name == "floor" {
            saved.floor = saved.floor.max(until);
        } else if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            if until > now {
                saved.sessions.push((name.to_string(), until));
            }
        } else {
            return Err(bad());
        }
    }
    Ok(saved)
}

/// The file's text for `list` at `now`.
fn render(list: &Revoked, now: u64) -> String {
    let mut text = format!("{MAGIC}\nfloor {}\n", list.floor());
    for (session, until) in list.entries() {
        if until > now {
            text.push_str(session);
            text.push(' ');
            text.push_str(&until.to_string());
            text.push('\n');
        }
    }
    text
}

#[derive(Debug, Default)]
struct Pending {
    entries: Vec<(String, u64)>,
    floor: u64,
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

fn lock(shared: &Shared) -> MutexGuard<'_, Pending> {
    shared
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The thread that keeps the file. Dropping it writes what is pending and waits for that.
#[derive(Debug)]
pub struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Start the writer for the file at `path`, holding `saved` (what [`load`] read) and at most
    /// `max` sessions, as the loop's list does.
    pub fn start(path: PathBuf, saved: Saved, max: usize) -> io::Result<Writer> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let mut list = Revoked::new(max);
        list.raise_floor(saved.floor);
        let now = unix_now();
        for (session, until) in &saved.sessions {
            list.revoke(session, *until, now);
        }
        let theirs = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("revoked-file".into())
            .spawn(move || write_loop(&theirs, &path, list))?;
        Ok(Writer {
            shared,
            thread: Some(thread),
        })
    }

    /// `session`'s tokens, valid until `until`, are refused: write it down.
    pub fn revoked(&self, session: &str, until: u64) {
        let mut pending = lock(&self.shared);
        if pending.entries.len() >= MAX_PENDING {
            error!(
                "the revoked-sessions file is {MAX_PENDING} logouts behind: not writing one more"
            );
            return;
        }
        pending.entries.push((session.to_string(), until));
        drop(pending);
        self.shared.wake.notify_one();
    }

    /// Tokens that expire no later than `until` are refused: write it down.
    pub fn floor(&self, until: u64) {
        let mut pending = lock(&self.shared);
        pending.floor = pending.floor.max(until);
        drop(pending);
        self.shared.wake.notify_one();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        lock(&self.shared).stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_loop(shared: &Shared, path: &Path, mut list: Revoked) {
    let mut failing = false;
    let mut dirty = false;
    loop {
        let (entries, floor, stop) = {
            let mut pending = lock(shared);
            while !pending.stop && pending.entries.is_empty() && pending.floor == 0 && !dirty {
                pending = shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            let floor = std::mem::take(&mut pending.floor);
            (std::mem::take(&mut pending.entries), floor, pending.stop)
        };
        let now = unix_now();
        dirty |= !entries.is_empty() || floor > list.floor();
        list.raise_floor(floor);
        for (session, until) in entries {
            list.revoke(&session, until, now);
        }
        if dirty {
            match write(path, &render(&list, now)) {
                Ok(()) => {
                    if failing {
                        info!(
                            "the revoked-sessions file {} is written again",
                            path.display()
                        );
                    }
                    failing = false;
                    dirty = false;
                }
                Err(e) => {
                    if !failing {
                        error!(
                            "cannot write the revoked-sessions file {}: {e} (trying again every \
                             second; logouts since are kept in memory only)",
                            path.display()
                        );
                    }
                    failing = true;
                    if !stop {
                        thread::sleep(RETRY_AFTER);
                    }
                }
            }
        }
        if stop {
            return;
        }
    }
}

/// Replace the file with `text`, durably.
fn write(path: &Path, text: &str) -> io::Result<()> {
    fsutil::replace_file(path, text.as_bytes(), 0o600)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_reads_back_what_was_written_less_what_expired() {
        let mut list = Revoked::new(8);
        list.revoke("aa11", 2_000, 1_000);
        list.revoke("bb22", 1_500, 1_000);
        list.raise_floor(900);
        let text = render(&list, 1_000);
        let mut saved = parse(&text, 1_600).unwrap();
        saved.sessions.sort();
        assert_eq!(
            saved,
            Saved {
                sessions: vec![("aa11".into(), 2_000)],
                floor: 900
            }
        );
    }

    #[test]
    fn a_file_that_does_not_parse_is_refused_with_the_line() {
        assert_eq!(
            parse("", 0).unwrap_err(),
            "does not start with \"besterd-revoked 1\""
        );
        assert_eq!(
            parse("besterd-revoked 1\nfloor 5\naa11 x\n", 0).unwrap_err(),
            "line 3: not \"<session> <until>\" or \"floor <until>\""
        );
        assert_eq!(
            parse("besterd-revoked 1\n../x 5\n", 0).unwrap_err(),
            "line 2: not \"<session> <until>\" or \"floor <until>\""
        );
    }

    #[test]
    fn the_writer_writes_every_logout_before_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked");
        let now = unix_now();
        let writer = Writer::start(
            path.clone(),
            Saved {
                sessions: vec![("old1".into(), now + 100)],
                floor: 0,
            },
            16,
        )
        .unwrap();
        writer.floor(7);
        for n in 0..50 {
            writer.revoked(&format!("s{n}"), now + 100 + n);
        }
        drop(writer);
        let saved = load(&path, now).unwrap();
        assert_eq!(saved.sessions.len(), 16, "bounded like the loop's list");
        assert!(saved.sessions.iter().any(|(s, _)| s == "s49"));
        // The sessions that left the list raised the floor past their tokens.
        assert!(saved.floor >= now + 100, "{}", saved.floor);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "private");
    }

    #[test]
    fn a_symbolic_link_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked");
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        let e = load(&path, 0).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
    }
}
