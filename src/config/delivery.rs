//! `[delivery]` (the delivery store for offline users) and a handler type's `offline`: as written,
//! and validated into [`DeliveryConfig`]. Every problem names its key.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::delivery::{DeliveryConfig, Fsync, FullPolicy};

/// `[delivery]` as written. The store is kept when this section is present or a handler type
/// stores (`offline = "store"`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDelivery {
    /// The database file; default `$STATE_DIRECTORY/delivery.db`, else `delivery.db` beside
    /// the user store.
    pub path: Option<PathBuf>,
    /// Messages one user's queue may hold; default 10000.
    pub max_per_user: Option<usize>,
    /// Bytes one user's queue may hold; default 16 MiB.
    pub max_bytes_per_user: Option<u64>,
    /// Seconds a message is kept unacknowledged; default 7 days.
    pub max_age_s: Option<u64>,
    /// Bytes all queues may hold; default 1 GiB.
    pub max_disk_bytes: Option<u64>,
    /// Free bytes kept on the file system for acknowledgements; default 16 MiB.
    pub min_free_bytes: Option<u64>,
    /// `"refuse"` (default) or `"drop_oldest"`.
    pub full: Option<String>,
    /// `"always"` (default) or `"never"`.
    pub fsync: Option<String>,
    /// Stored messages sent on login before waiting for acks; default 256.
    pub window: Option<usize>,
}

fn at_least_1<T: PartialEq + From<u8> + Copy>(
    problems: &mut Vec<(String, String)>,
    key: &str,
    v: Option<T>,
    default: T,
) -> T {
    match v {
        Some(v) if v == T::from(0) => {
            problems.push((format!("delivery.{key}"), "must be at least 1".into()));
            default
        }
        Some(v) => v,
        None => default,
    }
}

/// Validate `[delivery]` (`present`: the section or a storing type asks for the store).
pub fn validate_delivery(
    d: Option<FileDelivery>,
    wanted: bool,
    problems: &mut Vec<(String, String)>,
) -> Option<DeliveryConfig> {
    if d.is_none() && !wanted {
        return None;
    }
    let d = d.unwrap_or_default();
    let def = DeliveryConfig::default();
    let p = problems;
    let full = match d.full.as_deref() {
        None | Some("refuse") => FullPolicy::Refuse,
        Some("drop_oldest") => FullPolicy::DropOldest,
        Some(other) => {
            p.push((
                "delivery.full".into(),
                format!("{other:?} is not one of \"refuse\", \"drop_oldest\""),
            ));
            FullPolicy::Refuse
        }
    };
    let fsync = match d.fsync.as_deref() {
        None | Some("always") => Fsync::Always,
        Some("never") => Fsync::Never,
        Some(other) => {
            p.push((
                "delivery.fsync".into(),
                format!("{other:?} is not one of \"always\", \"never\""),
            ));
            Fsync::Always
        }
    };
    Some(DeliveryConfig {
        path: d.path,
        max_per_user: at_least_1(p, "max_per_user", d.max_per_user, def.max_per_user),
        max_bytes_per_user: at_least_1(
            p,
            "max_bytes_per_user",
            d.max_bytes_per_user,
            def.max_bytes_per_user,
        ),
        max_age: Duration::from_secs(at_least_1(
            p,
            "max_age_s",
            d.max_age_s,
            def.max_age.as_secs(),
        )),
        max_disk_bytes: at_least_1(p, "max_disk_bytes", d.max_disk_bytes, def.max_disk_bytes),
        min_free_bytes: d.min_free_bytes.unwrap_or(def.min_free_bytes),
        full,
        fsync,
        window: at_least_1(p, "window", d.window, def.window),
    })
}

/// Validate a handler type's `offline`: `"drop"` (default) or `"store"`.
pub fn validate_offline(key: &str, v: Option<&str>, problems: &mut Vec<(String, String)>) -> bool {
    match v {
        None | Some("drop") => false,
        Some("store") => true,
        Some(other) => {
            problems.push((
                format!("{key}.offline"),
                format!("{other:?} is not one of \"drop\", \"store\""),
            ));
            false
        }
    }
}

/// Where the store goes when `[delivery] path` is not given: `$STATE_DIRECTORY/delivery.db`
/// (the systemd unit's state directory), else beside the user store.
pub fn default_path(users: &std::path::Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|p| p.is_absolute())
    {
        return dir.join("delivery.db");
    }
    match users.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join("delivery.db"),
        _ => PathBuf::from("delivery.db"),
    }
}
