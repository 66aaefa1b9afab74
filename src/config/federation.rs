//! `[federation]`: the federation directory (`directory`, off by default) and its bound, as
//! written and validated into the router's [`DirectoryConfig`]. Every problem names its key.

use serde::Deserialize;

use crate::router::DirectoryConfig;

/// `[federation]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFederation {
    /// Tell linked peers which users are online here, and keep what they tell (default false).
    pub directory: Option<bool>,
    /// Most directory entries kept for one peer server; default 100000.
    pub max_directory_entries: Option<usize>,
}

/// Validate `[federation]`.
pub fn validate_federation(
    f: FileFederation,
    problems: &mut Vec<(String, String)>,
) -> DirectoryConfig {
    let defaults = DirectoryConfig::default();
    let max_entries_per_peer = match f.max_directory_entries {
        Some(0) => {
            problems.push((
                "federation.max_directory_entries".into(),
                "must be at least 1".into(),
            ));
            defaults.max_entries_per_peer
        }
        Some(n) => n,
        None => defaults.max_entries_per_peer,
    };
    DirectoryConfig {
        enabled: f.directory.unwrap_or(defaults.enabled),
        max_entries_per_peer,
    }
}
