//! What a connection's close says about its peer breaking the protocol, counted and logged once
//! per connection when it closes: a TLS handshake that failed (by [`HandshakeFailure`] class) and
//! a WebSocket closed for a protocol violation (1002, 1007, 1009, 1011), per listener. The log
//! line goes through the rate limit of `noise.rs`: any unauthenticated peer can cause it.

use std::time::Instant;

use super::Server;
use super::conn::{Conn, Role};
use crate::stats::WS_ERROR_CODES;

impl Server {
    /// Count and log what went wrong with `conn`, which is being closed for `reason`.
    pub(super) fn note_violations(&mut self, conn: &Conn, reason: &str, now: Instant) {
        if !matches!(conn.role, Role::Client(_)) {
            return;
        }
        let Some(index) = conn.listener else {
            return;
        };
        let listener = self.listeners.name_of(index).0;
        if let Some(failure) = conn.io.tls_failure(conn.read_closed) {
            self.stats.listener(index).tls_failures[failure as usize] += 1;
            self.noise.info(
                now,
                format_args!(
                    "listener {listener}: TLS handshake with {} failed ({}): {reason}",
                    conn.peer,
                    failure.as_str()
                ),
            );
        } else if let Some((code, text)) = conn.io.ws_violation()
            && let Some(i) = WS_ERROR_CODES.iter().position(|c| *c == code)
        {
            self.stats.listener(index).ws_errors[i] += 1;
            self.noise.info(
                now,
                format_args!(
                    "{}: WebSocket closed with {code} ({text}) on listener {listener}",
                    conn.context()
                ),
            );
        }
    }
}
