//! `[streams]`: client-to-client streams (PROTOCOL.md §5, "Streams"), as written and validated
//! into the router's [`StreamConfig`]. Every problem names its key.

use std::time::Duration;

use serde::Deserialize;

use crate::protocol::stream::FRAME_COST;
use crate::router::StreamConfig;

/// The largest window a stream may have (per direction).
pub const MAX_WINDOW: u64 = 16 << 20;

/// `[streams]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStreams {
    /// Whether client sessions may negotiate `stream`; default true.
    pub enabled: Option<bool>,
    /// Bytes a writer may have outstanding per stream; default 262144.
    pub window_bytes: Option<u64>,
    /// Streams open or being dialled per connection; default 16.
    pub max_per_connection: Option<usize>,
    /// How long a dial waits for an answer; default 30000.
    pub dial_timeout_ms: Option<u64>,
}

/// Validate `[streams]`.
pub fn validate_streams(f: FileStreams, problems: &mut Vec<(String, String)>) -> StreamConfig {
    let defaults = StreamConfig::default();
    let min = 2 * FRAME_COST as u64;
    let window = match f.window_bytes {
        Some(w) if !(min..=MAX_WINDOW).contains(&w) => {
            problems.push((
                "streams.window_bytes".into(),
                format!("must be from {min} to {MAX_WINDOW}"),
            ));
            defaults.window
        }
        Some(w) => w,
        None => defaults.window,
    };
    let max_per_connection = match f.max_per_connection {
        Some(0) => {
            problems.push((
                "streams.max_per_connection".into(),
                "must be at least 1".into(),
            ));
            defaults.max_per_connection
        }
        Some(n) => n,
        None => defaults.max_per_connection,
    };
    let dial_timeout = match f.dial_timeout_ms {
        Some(0) => {
            problems.push((
                "streams.dial_timeout_ms".into(),
                "must be at least 1".into(),
            ));
            defaults.dial_timeout
        }
        Some(ms) => Duration::from_millis(ms),
        None => defaults.dial_timeout,
    };
    StreamConfig {
        enabled: f.enabled.unwrap_or(defaults.enabled),
        window,
        max_per_connection,
        dial_timeout,
    }
}
