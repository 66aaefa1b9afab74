//! `[presence]`, `[groups]` and a handler type's `allow` / `deny`: as written, and validated into
//! the router's [`PresenceConfig`], [`GroupLimits`] and [`Access`]. Every problem names its key.

use serde::Deserialize;

use crate::protocol::groups::check_group_name;
use crate::router::{Access, GroupLimits, PresenceConfig, Rule, Visibility};

/// `[presence]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePresence {
    /// Who may see whose presence: `"all"` (default), `"groups"` or `"none"`.
    pub visible: Option<String>,
    /// Users and groups one connection may watch (and one query may name); default 256.
    pub max_subscriptions: Option<usize>,
}

/// `[groups]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGroups {
    /// Patterns of the groups clients may join themselves (`"room:*"`).
    #[serde(default)]
    pub self_join: Vec<String>,
    /// Groups in total; default 10000.
    pub max_groups: Option<usize>,
    /// Members of one group; default 10000.
    pub max_members: Option<usize>,
    /// Groups one user may be in; default 64.
    pub max_groups_per_user: Option<usize>,
}

fn positive(
    problems: &mut Vec<(String, String)>,
    key: &str,
    v: Option<usize>,
    default: usize,
) -> usize {
    match v {
        Some(0) => {
            problems.push((key.into(), "must be at least 1".into()));
            default
        }
        Some(v) => v,
        None => default,
    }
}

/// Validate `[presence]`.
pub fn validate_presence(p: FilePresence, problems: &mut Vec<(String, String)>) -> PresenceConfig {
    let visible = match p.visible.as_deref() {
        None | Some("all") => Visibility::All,
        Some("groups") => Visibility::Groups,
        Some("none") => Visibility::None,
        Some(other) => {
            problems.push((
                "presence.visible".into(),
                format!("{other:?} is not one of \"all\", \"groups\", \"none\""),
            ));
            Visibility::All
        }
    };
    PresenceConfig {
        visible,
        max_subscriptions: positive(
            problems,
            "presence.max_subscriptions",
            p.max_subscriptions,
            256,
        ),
    }
}

/// Validate `[groups]`.
pub fn validate_groups(g: FileGroups, problems: &mut Vec<(String, String)>) -> GroupLimits {
    let defaults = GroupLimits::default();
    for (i, pattern) in g.self_join.iter().enumerate() {
        // A pattern is a group name in which `*` stands for any run of characters.
        if let Err(e) = check_group_name(&pattern.replace('*', "x")) {
            problems.push((
                format!("groups.self_join[{i}]"),
                format!("{pattern:?} is not a group name pattern: {e}"),
            ));
        }
    }
    GroupLimits {
        max_groups: positive(
            problems,
            "groups.max_groups",
            g.max_groups,
            defaults.max_groups,
        ),
        max_members: positive(
            problems,
            "groups.max_members",
            g.max_members,
            defaults.max_members,
        ),
        max_groups_per_user: positive(
            problems,
            "groups.max_groups_per_user",
            g.max_groups_per_user,
            defaults.max_groups_per_user,
        ),
        self_join: g.self_join,
    }
}

/// Validate `[handlers.<type>] allow` and `deny`.
pub fn validate_access(
    key: &str,
    allow: Option<Vec<String>>,
    deny: Vec<String>,
    problems: &mut Vec<(String, String)>,
) -> Access {
    let mut rules = |which: &str, list: Vec<String>| -> Vec<Rule> {
        list.iter()
            .enumerate()
            .filter_map(|(i, r)| match Rule::parse(r) {
                Ok(rule) => Some(rule),
                Err(e) => {
                    problems.push((format!("{key}.{which}[{i}]"), e));
                    None
                }
            })
            .collect()
    };
    Access {
        allow: allow.map(|a| rules("allow", a)),
        deny: rules("deny", deny),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        let mut p = Vec::new();
        validate_presence(
            FilePresence {
                visible: Some("some".into()),
                max_subscriptions: Some(0),
            },
            &mut p,
        );
        validate_groups(
            FileGroups {
                self_join: vec!["room:*".into(), "a b*".into()],
                ..FileGroups::default()
            },
            &mut p,
        );
        validate_access("handlers.x", Some(vec!["staff".into()]), vec![], &mut p);
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "presence.visible",
                "presence.max_subscriptions",
                "groups.self_join[1]",
                "handlers.x.allow[0]"
            ]
        );
    }
}
