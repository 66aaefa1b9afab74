//! Who may send what: a handler type's `allow` and `deny` rules (`"*"`, `"user:NAME"`,
//! `"group:NAME"`), checked by the router before a client's message is dispatched, so handlers
//! need not check `header.from.user` themselves. A user's groups are those of the group table
//! (a handler's `groupAdd`, `bester.join`) and those the session's `info.groups` names. Pure.

use super::*;

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `"*"`: everyone.
    Anyone,
    /// `"user:NAME"`.
    User(String),
    /// `"group:NAME"`: the members of the group.
    Group(String),
}

impl Rule {
    /// Read a rule as written in the configuration.
    pub fn parse(text: &str) -> Result<Rule, String> {
        if text == "*" {
            return Ok(Rule::Anyone);
        }
        if let Some(user) = text.strip_prefix("user:")
            && !user.is_empty()
        {
            return Ok(Rule::User(user.to_string()));
        }
        if let Some(group) = text.strip_prefix("group:") {
            crate::protocol::groups::check_group_name(group)?;
            return Ok(Rule::Group(group.to_string()));
        }
        Err(format!(
            "{text:?} is not a rule: \"*\", \"user:NAME\" or \"group:NAME\""
        ))
    }

    fn covers(&self, user: &str, in_group: &dyn Fn(&str) -> bool) -> bool {
        match self {
            Rule::Anyone => true,
            Rule::User(name) => name == user,
            Rule::Group(group) => in_group(group),
        }
    }
}

/// A type's rules: `deny` wins; with `allow` set, only what it covers gets through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// `allow`: `None` lets everyone through (but `deny`).
    pub allow: Option<Vec<Rule>>,
    /// `deny`.
    pub deny: Vec<Rule>,
}

impl Access {
    /// Whether there is any rule at all.
    pub fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }

    /// Whether `user` (whose groups `in_group` tells) may send to the type.
    pub fn permits(&self, user: &str, in_group: &dyn Fn(&str) -> bool) -> bool {
        if self.deny.iter().any(|r| r.covers(user, in_group)) {
            return false;
        }
        self.allow
            .as_ref()
            .is_none_or(|rules| rules.iter().any(|r| r.covers(user, in_group)))
    }
}

impl Router {
    /// Set a handler type's `allow`/`deny` rules.
    pub fn set_access(&mut self, kind: &str, access: Access) {
        if let Some(pool) = self.pools.get_mut(kind) {
            pool.access = access;
        }
    }

    /// `Err(forbidden)` when the type's rules keep this client's message out.
    pub(super) fn check_access(&self, conn: ConnId, kind: &str) -> Result<(), ErrorBody> {
        let Some(pool) = self.pools.get(kind) else {
            return Ok(());
        };
        if pool.access.is_open() {
            return Ok(());
        }
        let Some(client) = self.clients.get(&conn) else {
            return Ok(());
        };
        let user = client.sender.user.as_deref().unwrap_or_default();
        let in_group =
            |g: &str| client.info_groups.iter().any(|i| i == g) || self.groups.is_member(g, user);
        if pool.access.permits(user, &in_group) {
            return Ok(());
        }
        Err(ErrorBody::new(
            ErrorCode::Forbidden,
            format!("user {user:?} may not send {kind:?} messages on this server"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let rules = |v: &[&str]| {
            v.iter()
                .map(|r| Rule::parse(r).unwrap())
                .collect::<Vec<_>>()
        };
        let staff = |g: &str| g == "staff";
        let nobody = |_: &str| false;
        let a = Access {
            allow: Some(rules(&["group:staff", "user:alice"])),
            deny: rules(&["user:mallory"]),
        };
        assert!(a.permits("alice", &nobody));
        assert!(a.permits("bob", &staff));
        assert!(!a.permits("bob", &nobody));
        assert!(!a.permits("mallory", &staff), "deny wins");
        let open_but = Access {
            allow: None,
            deny: rules(&["group:staff"]),
        };
        assert!(open_but.permits("x", &nobody));
        assert!(!open_but.permits("x", &staff));
        let everyone = Access {
            allow: Some(rules(&["*"])),
            deny: vec![],
        };
        assert!(everyone.permits("x", &nobody));
        assert_eq!(
            Rule::parse("admin").unwrap_err(),
            "\"admin\" is not a rule: \"*\", \"user:NAME\" or \"group:NAME\""
        );
        assert!(Rule::parse("group:a b").is_err());
        assert!(Rule::parse("user:").is_err());
    }
}
