//! The logged-out sessions an upgrade's old process hands to the new one, over the handover
//! socket pair (`server/handover.rs`): the whole list when the child is ready (written before
//! `go`, so the child serves no client before it has it), then each logout of a client still
//! draining on the old process. Without it, the new process would take a resume token of a
//! session that logged out (it shares the key) until the token expired.
//!
//! Lines: `revoked <session> <until>` and `floor <until>` (see [`Revoked`]). The old process
//! writes without blocking: a bounded [`Outbox`], flushed when the socket is writable, and as the
//! process exits for at most [`LAST_FLUSH`]. An outbox that would overflow keeps only the latest
//! expiry it could not send and sends it as a floor: no logout is forgotten, some tokens of
//! other sessions end early. The child ignores lines it does not know.
//!
//! [`Revoked`]: crate::auth::resume::Revoked

use std::io::{self, Write};
use std::time::{Duration, Instant};

/// How long the old process waits, as it exits, for the child to read what is left.
pub(super) const LAST_FLUSH: Duration = Duration::from_secs(1);
/// The most bytes waiting to be written (the whole list is about 3.5 MiB).
const MAX_OUTBOX: usize = 16 << 20;

/// What the old process still has to write.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    buf: Vec<u8>,
    /// Written already (the front of `buf`).
    sent: usize,
    /// The latest expiry of revocations that did not fit.
    floor: Option<u64>,
}

impl Outbox {
    /// A revoked session, valid until `until`.
    pub fn revoked(&mut self, session: &str, until: u64) {
        // Session ids are the server's own hex; anything else could not be read back.
        if session.is_empty() || !session.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return;
        }
        if self.buf.len() - self.sent + session.len() + 32 > MAX_OUTBOX {
            self.floor = Some(self.floor.map_or(until, |f| f.max(until)));
            return;
        }
        self.line(format_args!("revoked {session} {until}"));
    }

    /// Every token that expires no later than `until` is refused.
    pub fn floor(&mut self, until: u64) {
        if until > 0 {
            self.line(format_args!("floor {until}"));
        }
    }

    /// Any other line (`go`).
    pub fn line(&mut self, line: std::fmt::Arguments) {
        let _ = writeln!(self.buf, "{line}");
    }

    /// Write what the socket takes; true once nothing is left.
    pub fn flush(&mut self, to: &mut impl Write) -> io::Result<bool> {
        loop {
            if self.sent == self.buf.len() {
                self.buf.clear();
                self.sent = 0;
                match self.floor.take() {
                    Some(until) => self.floor(until),
                    None => return Ok(true),
                }
            }
            match to.write(&self.buf[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// As the process exits: keep writing until `deadline` (the loop is over; blocking here
    /// holds up nobody).
    pub fn flush_before(&mut self, to: &mut impl Write, deadline: Instant) -> io::Result<bool> {
        loop {
            if self.flush(to)? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A line the child reads.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line<'a> {
    Revoked(&'a str, u64),
    Floor(u64),
    Go,
    Other,
}

/// Read one line (without its newline).
pub(super) fn parse(line: &str) -> Line<'_> {
    let mut words = line.split(' ');
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("go"), None, _, _) => Line::Go,
        (Some("revoked"), Some(session), Some(until), None) if !session.is_empty() => {
            match until.parse() {
                Ok(until) => Line::Revoked(session, until),
                Err(_) => Line::Other,
            }
        }
        (Some("floor"), Some(until), None, _) => until.parse().map_or(Line::Other, Line::Floor),
        _ => Line::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes `n` bytes a call, then would block after `limit` in all.
    struct Slow {
        got: Vec<u8>,
        n: usize,
        limit: usize,
    }

    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.got.len() >= self.limit {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.n).min(self.limit - self.got.len());
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_round_trip_through_a_socket_that_takes_a_little_at_a_time() {
        let mut out = Outbox::default();
        out.revoked("0123abcd", 1_700_000_000);
        out.floor(42);
        out.line(format_args!("go"));
        let mut sock = Slow {
            got: Vec::new(),
            n: 5,
            limit: 20,
        };
        assert!(!out.flush(&mut sock).unwrap(), "would block");
        sock.limit = usize::MAX;
        assert!(out.flush(&mut sock).unwrap());
        let text = String::from_utf8(sock.got).unwrap();
        let lines: Vec<Line> = text.lines().map(parse).collect();
        assert_eq!(
            lines,
            [
                Line::Revoked("0123abcd", 1_700_000_000),
                Line::Floor(42),
                Line::Go
            ]
        );
    }

    #[test]
    fn odd_lines_are_other_and_odd_sessions_are_not_written() {
        for line in [
            "",
            "go now",
            "revoked",
            "revoked a",
            "revoked a b",
            "revoked a 1 2",
            "floor",
            "floor x",
            "ready",
        ] {
            assert_eq!(parse(line), Line::Other, "{line:?}");
        }
        let mut out = Outbox::default();
        out.revoked("a b", 1);
        out.revoked("", 1);
        out.revoked("a\nfloor 1", 1);
        assert!(out.buf.is_empty());
    }

    #[test]
    fn an_overflowing_outbox_sends_a_floor_instead() {
        let mut out = Outbox::default();
        let session = "f".repeat(32);
        let mut n = 0u64;
        while out.floor.is_none() {
            n += 1;
            out.revoked(&session, n);
        }
        out.revoked(&session, n + 5);
        let mut sock = Slow {
            got: Vec::new(),
            n: usize::MAX,
            limit: usize::MAX,
        };
        assert!(out.flush(&mut sock).unwrap());
        let text = String::from_utf8(sock.got).unwrap();
        assert_eq!(
            text.lines().last().map(parse),
            Some(Line::Floor(n + 5)),
            "the latest expiry that did not fit"
        );
        assert!(text.len() <= MAX_OUTBOX + 64);
    }
}
