//! Named groups of users, sans-io: their members, how each member got in (a handler's
//! `groupAdd`, the login's `info.groups`, `bester.join`), the bounds, and the `[groups]
//! self_join` patterns. A member a handler added stays while offline (the group is persistent);
//! the others leave when their user's last connection closes. State only: the router's
//! `groups_*` methods (below) turn changes into presence pushes, and `sendClients` expands
//! groups through [`Groups::members`].
//!
//! Members are keyed by name: a user of this server by their plain name, a user of a peer
//! server as `user@server` (a handler's `groupAdd` naming `bob@node-b`; `bob@<this server>` is
//! stored as `bob`). A group lives on the server where it was made; `sendClients` to it pushes to
//! the local members and sends one delivery frame per other server (`router/deliver.rs`). A
//! federation directory adds remote members under the same `user@server` keys.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::*;
use crate::protocol::groups::{GroupChange, check_group_name};

/// Bounds and rules of groups (`[groups]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLimits {
    /// Groups in total.
    pub max_groups: usize,
    /// Members of one group.
    pub max_members: usize,
    /// Groups one user is a member of.
    pub max_groups_per_user: usize,
    /// Name patterns (`*` matches any run of characters) of the groups clients may join
    /// themselves with `bester.join`.
    pub self_join: Vec<String>,
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            max_groups: 10_000,
            max_members: 10_000,
            max_groups_per_user: 64,
            self_join: Vec::new(),
        }
    }
}

/// How a member got into a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Membership {
    /// Added by a handler: stays while the user is offline, until a handler removes it.
    kept: bool,
    /// Joined with `bester.join`, or given by the login's `info.groups`: ends with the user's
    /// last connection (or `bester.leave`).
    session: bool,
}

/// Every group and its members.
#[derive(Debug, Default)]
pub(super) struct Groups {
    pub(super) limits: GroupLimits,
    groups: HashMap<String, BTreeMap<String, Membership>>,
    of_user: HashMap<String, BTreeSet<String>>,
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (none included).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn limit(text: String) -> ErrorBody {
    ErrorBody::new(ErrorCode::LimitReached, text)
}

impl Groups {
    /// The members of `group`, in name order (none for a group that does not exist).
    pub(super) fn members(&self, group: &str) -> impl Iterator<Item = &String> {
        self.groups.get(group).into_iter().flat_map(|m| m.keys())
    }

    /// How many members `group` has (0 if there is no such group).
    pub(super) fn size(&self, group: &str) -> usize {
        self.groups.get(group).map_or(0, |m| m.len())
    }

    /// Whether `user` is a member of `group`.
    pub(super) fn is_member(&self, group: &str, user: &str) -> bool {
        self.groups.get(group).is_some_and(|m| m.contains_key(user))
    }

    /// The groups `user` is a member of.
    pub(super) fn of(&self, user: &str) -> impl Iterator<Item = &String> {
        self.of_user.get(user).into_iter().flatten()
    }

    /// Whether two users share a group.
    pub(super) fn share(&self, a: &str, b: &str) -> bool {
        let (Some(ga), Some(gb)) = (self.of_user.get(a), self.of_user.get(b)) else {
            return false;
        };
        ga.iter().any(|g| gb.contains(g))
    }

    /// Whether clients may join `group` themselves.
    pub(super) fn self_join_allowed(&self, group: &str) -> bool {
        self.limits
            .self_join
            .iter()
            .any(|p| pattern_matches(p, group))
    }

    /// Add `users` to `group` (`kept`: by a handler), all or none: `Err` names the bound that
    /// would be passed. Returns the users who were not members before.
    pub(super) fn add(
        &mut self,
        group: &str,
        users: &[String],
        kept: bool,
    ) -> Result<Vec<String>, ErrorBody> {
        check_group_name(group).map_err(|e| ErrorBody::new(ErrorCode::InvalidMessage, e))?;
        for user in users {
            crate::protocol::groups::check_member_name(user)
                .map_err(|e| ErrorBody::new(ErrorCode::InvalidMessage, e))?;
        }
        let existing = self.groups.get(group);
        if existing.is_none() && self.groups.len() >= self.limits.max_groups {
            return Err(limit(format!(
                "there are already {} groups on this server (the most there may be)",
                self.limits.max_groups
            )));
        }
        let fresh: BTreeSet<&String> = users
            .iter()
            .filter(|u| !existing.is_some_and(|m| m.contains_key(*u)))
            .collect();
        let members = existing.map_or(0, BTreeMap::len);
        if members + fresh.len() > self.limits.max_members {
            return Err(limit(format!(
                "group {group:?} would have {} members, over the limit of {}",
                members + fresh.len(),
                self.limits.max_members
            )));
        }
        for user in &fresh {
            let count = self.of_user.get(*user).map_or(0, BTreeSet::len);
            if count >= self.limits.max_groups_per_user {
                return Err(limit(format!(
                    "user {user:?} is already a member of {} groups, the most one user may be in",
                    self.limits.max_groups_per_user
                )));
            }
        }
        let fresh: Vec<String> = fresh.into_iter().cloned().collect();
        let entry = self.groups.entry(group.to_string()).or_default();
        for user in users {
            let m = entry.entry(user.clone()).or_default();
            if kept {
                m.kept = true;
            } else {
                m.session = true;
            }
        }
        for user in &fresh {
            self.of_user
                .entry(user.clone())
                .or_default()
                .insert(group.to_string());
        }
        Ok(fresh)
    }

    /// Take `user` out of `group`: entirely (`all`: a handler's `groupRemove`), or only the
    /// membership the user made (`bester.leave`). Whether the user is no longer a member.
    pub(super) fn remove(&mut self, group: &str, user: &str, all: bool) -> bool {
        let Some(members) = self.groups.get_mut(group) else {
            return false;
        };
        let Some(m) = members.get_mut(user) else {
            return false;
        };
        m.session = false;
        if !all && m.kept {
            return false;
        }
        members.remove(user);
        if members.is_empty() {
            self.groups.remove(group);
        }
        if let Some(of) = self.of_user.get_mut(user) {
            of.remove(group);
            if of.is_empty() {
                self.of_user.remove(user);
            }
        }
        true
    }

    /// `user`'s last connection closed: they leave every group a handler did not add them to.
    /// Returns those groups.
    pub(super) fn user_offline(&mut self, user: &str) -> Vec<String> {
        let groups: Vec<String> = self.of(user).cloned().collect();
        groups
            .into_iter()
            .filter(|g| self.remove(g, user, false))
            .collect()
    }

    /// Groups in total.
    pub(super) fn count(&self) -> usize {
        self.groups.len()
    }
}

impl Router {
    /// Set the bounds and the `self_join` patterns of groups.
    pub fn set_group_limits(&mut self, limits: GroupLimits) {
        self.groups.limits = limits;
    }

    /// A handler's `groupAdd` or `groupRemove` (a push: no request), answered with a report.
    pub(super) fn group_change(
        &mut self,
        handler: ConnId,
        id: Option<&str>,
        change: &GroupChange,
        add: bool,
        out: &mut Vec<Action>,
    ) {
        let origin = Origin::Push {
            handler,
            id: id.map(str::to_string),
        };
        // One key per user: `bob@<this server>` is `bob`, a peer's user is `user@server`.
        let users: Vec<String> = change
            .users
            .iter()
            .map(|named| match self.target(named) {
                super::deliver::Target::Local(user) => user.to_string(),
                super::deliver::Target::Remote { server, user } => format!("{user}@{server}"),
            })
            .collect();
        if add {
            match self.groups.add(&change.group, &users, true) {
                Ok(fresh) => {
                    for user in fresh {
                        self.member_changed(&change.group, &user, true, out);
                    }
                }
                Err(error) => return self.fail(&origin, error, out),
            }
        } else {
            for user in &users {
                if self.groups.remove(&change.group, user, true) {
                    self.member_changed(&change.group, user, false, out);
                }
            }
        }
        let body = crate::protocol::groups::handler_report::<()>(id, None);
        out.push(Action::Send { to: handler, body });
    }

    /// `bester.join`: the client's user joins `group`, where `[groups] self_join` allows.
    pub fn client_join(
        &mut self,
        conn: ConnId,
        group: &str,
        out: &mut Vec<Action>,
    ) -> Result<(), ErrorBody> {
        let user = self.user_of(conn).ok_or_else(not_identified)?;
        check_group_name(group).map_err(|e| ErrorBody::new(ErrorCode::InvalidMessage, e))?;
        if !self.groups.self_join_allowed(group) {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                format!("group {group:?} is not open to bester.join on this server"),
            ));
        }
        for fresh in self.groups.add(group, std::slice::from_ref(&user), false)? {
            self.member_changed(group, &fresh, true, out);
        }
        Ok(())
    }

    /// `bester.leave`: the client's user leaves `group` (a membership a handler made stays).
    pub fn client_leave(
        &mut self,
        conn: ConnId,
        group: &str,
        out: &mut Vec<Action>,
    ) -> Result<bool, ErrorBody> {
        let user = self.user_of(conn).ok_or_else(not_identified)?;
        check_group_name(group).map_err(|e| ErrorBody::new(ErrorCode::InvalidMessage, e))?;
        if !self.groups.self_join_allowed(group) {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                format!("group {group:?} is not open to bester.leave on this server"),
            ));
        }
        let left = self.groups.remove(group, &user, false);
        if left {
            self.member_changed(group, &user, false, out);
        }
        Ok(self.groups.is_member(group, &user))
    }

    /// Whether `user` is a member of `group` (a handler's `groupAdd`, `bester.join`, or the
    /// login's `info.groups`).
    pub fn is_member(&self, group: &str, user: &str) -> bool {
        self.groups.is_member(group, user)
    }

    /// Groups on this server.
    pub fn group_count(&self) -> usize {
        self.groups.count()
    }

    /// The groups a login's `info` names (`{"groups":["staff",…]}`): the session's user joins
    /// them until their last connection closes. Names that are not group names, and groups past
    /// a bound, are skipped (logged).
    pub(super) fn info_groups(&mut self, conn: ConnId, names: &[String], out: &mut Vec<Action>) {
        let Some(user) = self.user_of(conn) else {
            return;
        };
        for group in names {
            match self.groups.add(group, std::slice::from_ref(&user), false) {
                Ok(fresh) => {
                    for fresh in fresh {
                        self.member_changed(group, &fresh, true, out);
                    }
                }
                Err(error) => {
                    warn!("conn={conn} user={user} info.groups: {group:?} skipped: {error}")
                }
            }
        }
    }

    /// The user of an identified client connection.
    pub(super) fn user_of(&self, conn: ConnId) -> Option<String> {
        self.clients.get(&conn)?.sender.user.clone()
    }
}

fn not_identified() -> ErrorBody {
    ErrorBody::new(ErrorCode::NotIdentified, "identify first")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("room:*", "room:1"));
        assert!(pattern_matches("room:*", "room:"));
        assert!(!pattern_matches("room:*", "rooms"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("a*b*c", "aXbYc"));
        assert!(!pattern_matches("a*b*c", "aXcYb"));
        assert!(pattern_matches("exact", "exact"));
        assert!(!pattern_matches("exact", "exact2"));
        assert!(!pattern_matches("ab*ba", "aba"));
    }

    #[test]
    fn bounds_are_all_or_nothing() {
        let mut g = Groups {
            limits: GroupLimits {
                max_groups: 2,
                max_members: 2,
                max_groups_per_user: 2,
                self_join: vec![],
            },
            ..Groups::default()
        };
        assert_eq!(g.add("a", &names(&["x", "y"]), true).unwrap().len(), 2);
        let e = g.add("a", &names(&["z"]), true).unwrap_err();
        assert_eq!(e.code, ErrorCode::LimitReached);
        assert_eq!(
            e.error,
            "group \"a\" would have 3 members, over the limit of 2"
        );
        assert!(g.add("b", &names(&["x"]), true).is_ok());
        let e = g.add("c", &names(&["q"]), true).unwrap_err();
        assert_eq!(
            e.error,
            "there are already 2 groups on this server (the most there may be)"
        );
        g.limits.max_groups = 3;
        let e = g.add("c", &names(&["q", "x"]), true).unwrap_err();
        assert_eq!(
            e.error,
            "user \"x\" is already a member of 2 groups, the most one user may be in"
        );
        assert!(!g.is_member("c", "q"), "nothing was added");
        assert_eq!(g.count(), 2);
    }

    #[test]
    fn kept_members_stay_offline_session_members_leave() {
        let mut g = Groups::default();
        g.add("room", &names(&["alice"]), true).unwrap();
        g.add("room", &names(&["bob"]), false).unwrap();
        g.add("room", &names(&["alice"]), false).unwrap();
        assert_eq!(g.user_offline("bob"), ["room"]);
        assert!(g.user_offline("alice").is_empty());
        assert!(g.is_member("room", "alice"));
        assert!(
            !g.remove("room", "alice", false),
            "bester.leave keeps a kept one"
        );
        assert!(g.remove("room", "alice", true));
        assert_eq!(g.count(), 0);
        assert!(g.of_user.is_empty());
    }
}
