//! Log lines that anyone who can reach a listener can cause, before logging in: TLS handshake
//! failures, WebSocket protocol violations, oversized frames, identify timeouts. Each is worth a
//! line at info level (it explains why a client was cut off), but a scan or a flood must not
//! fill the log: at most [`PER_MINUTE`] such lines a minute are written at info level, the rest
//! at debug level, and the next line after a minute with suppressed lines says how many were.
//! The figures count every one of them whatever the log shows (`/metrics`).

use std::time::{Duration, Instant};

use log::{debug, info};

/// Lines written at info level per minute; the rest go to debug level.
pub const PER_MINUTE: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);

/// The rate limit on peer-caused log lines.
#[derive(Debug)]
pub struct Noise {
    window: Instant,
    logged: u32,
    suppressed: u64,
}

impl Noise {
    /// A limit whose first minute starts `now`.
    pub fn new(now: Instant) -> Noise {
        Noise {
            window: now,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Log `line` at info level if this minute's allowance is not spent, else at debug level.
    pub fn info(&mut self, now: Instant, line: std::fmt::Arguments<'_>) {
        if now.saturating_duration_since(self.window) >= WINDOW {
            if self.suppressed > 0 {
                info!(
                    "{} more lines like the next were logged at debug level only in the last \
                     minute (more than {PER_MINUTE} a minute)",
                    self.suppressed
                );
            }
            self.window = now;
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.allow() {
            info!("{line}");
        } else {
            debug!("{line}");
        }
    }

    /// Whether one more line may go out at info level this minute (and count it).
    fn allow(&mut self) -> bool {
        if self.logged < PER_MINUTE {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_lines_a_minute_then_debug_then_a_new_minute() {
        let start = Instant::now();
        let mut noise = Noise::new(start);
        let allowed = (0..100).filter(|_| noise.allow()).count();
        assert_eq!(allowed, PER_MINUTE as usize);
        assert_eq!(noise.suppressed, 90);
        noise.info(start + WINDOW, format_args!("again"));
        assert_eq!((noise.logged, noise.suppressed), (1, 0));
    }
}
