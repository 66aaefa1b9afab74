//! Presence, sans-io: which users are online here (their connections and `bester.status`
//! text), who watches whom (`bester.presence.subscribe`, by user or by group), the rule of who
//! may see whose presence (`[presence] visible`), and the pushes a change makes. The server only
//! sends the [`Action::Send`]s that come out.
//!
//! Entries are local users, named by user with this server's name beside them in every answer
//! and push (`{"user","server",…}`). With the federation directory (`router/directory.rs`)
//! there are remote entries too, keyed by `(user, server)`: a name `bob@b` means bob's entry on
//! server b, and a bare `bob` means bob here while he is online here, else the first server the
//! directory has him on. Watchers of `bob` are told of changes of bob's entry on every server
//! (each push names its server); watchers of `bob@b` of his entry on b.

use std::collections::{BTreeSet, HashMap};

use super::deliver::Target;
use super::*;
use crate::protocol::groups::{PresenceAnswer, PresenceEntry, Recipients, presence_push};

/// Who may see whose presence (`[presence] visible`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Visibility {
    /// Everyone sees everyone.
    #[default]
    All,
    /// A user sees the users they share a group with, and the members of their groups.
    Groups,
    /// A user sees only themselves (handlers still see everyone).
    None,
}

/// Presence rules and bounds (`[presence]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceConfig {
    /// Who may see whose presence.
    pub visible: Visibility,
    /// Users and groups one connection may watch (also the most one query may name).
    pub max_subscriptions: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            visible: Visibility::All,
            max_subscriptions: 256,
        }
    }
}

/// A user who is online here.
#[derive(Debug, Default)]
pub(super) struct Online {
    /// Their connections, oldest first.
    pub(super) conns: Vec<ConnId>,
    /// Their `bester.status` text.
    status: Option<String>,
}

/// What one connection watches.
#[derive(Debug, Default)]
struct Watch {
    users: BTreeSet<String>,
    groups: BTreeSet<String>,
}

/// Who is online, and who watches.
#[derive(Debug, Default)]
pub(super) struct Presence {
    pub(super) config: PresenceConfig,
    online: HashMap<String, Online>,
    watches: HashMap<ConnId, Watch>,
    user_watchers: HashMap<String, BTreeSet<ConnId>>,
    group_watchers: HashMap<String, BTreeSet<ConnId>>,
}

/// Where a name in a presence request points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place<'a> {
    /// A bare name: here while online here, else wherever the directory has the user.
    Any,
    /// `user@<this server>`.
    Here,
    /// `user@server` for another server.
    There(&'a str),
}

impl Presence {
    /// Whether any connection watches anything.
    pub(super) fn has_watchers(&self) -> bool {
        !self.watches.is_empty()
    }

    /// Every user online here with their connections and status.
    pub(super) fn online(&self) -> Vec<(&str, usize, Option<&str>)> {
        self.online
            .iter()
            .map(|(u, o)| (u.as_str(), o.conns.len(), o.status.as_deref()))
            .collect()
    }

    /// `user`'s connections and status here, if they are online.
    pub(super) fn local(&self, user: &str) -> Option<(usize, Option<&str>)> {
        self.online
            .get(user)
            .map(|o| (o.conns.len(), o.status.as_deref()))
    }

    /// The connections of `user` here, if they are online.
    pub(super) fn conns(&self, user: &str) -> Option<&[ConnId]> {
        self.online.get(user).map(|o| o.conns.as_slice())
    }

    /// A connection of `user` came.
    pub(super) fn add(&mut self, user: &str, conn: ConnId) {
        self.online
            .entry(user.to_string())
            .or_default()
            .conns
            .push(conn);
    }

    /// A connection of `user` went; whether it was their last.
    pub(super) fn remove(&mut self, user: &str, conn: ConnId) -> bool {
        let Some(online) = self.online.get_mut(user) else {
            return false;
        };
        online.conns.retain(|c| *c != conn);
        if online.conns.is_empty() {
            self.online.remove(user);
            return true;
        }
        false
    }

    /// Forget what `conn` watched.
    fn unwatch_all(&mut self, conn: ConnId) {
        let Some(watch) = self.watches.remove(&conn) else {
            return;
        };
        for user in watch.users {
            unlist(&mut self.user_watchers, &user, conn);
        }
        for group in watch.groups {
            unlist(&mut self.group_watchers, &group, conn);
        }
    }
}

fn unlist(map: &mut HashMap<String, BTreeSet<ConnId>>, key: &str, conn: ConnId) {
    if let Some(set) = map.get_mut(key) {
        set.remove(&conn);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

fn forbidden(text: String) -> ErrorBody {
    ErrorBody::new(ErrorCode::Forbidden, text)
}

impl Router {
    /// Set who may see whose presence, and the bound on subscriptions.
    pub fn set_presence(&mut self, config: PresenceConfig) {
        self.presence.config = config;
    }

    /// A name split into the user and where it points (`bob@<me>` is `bob` here), by the rule
    /// of [`Router::target`]: a suffix that names neither this server nor a peer is part of the
    /// user's name (`alice@example.com` is a user here, or wherever the directory has her).
    pub(super) fn place<'a>(&self, name: &'a str) -> (&'a str, Place<'a>) {
        match self.target(name) {
            Target::Local(user) if user.len() < name.len() => (user, Place::Here),
            Target::Local(user) => (user, Place::Any),
            Target::Remote { server, user } => (user, Place::There(server)),
        }
    }

    /// `user`'s presence here.
    fn local_entry(&self, user: &str) -> PresenceEntry {
        let online = self.presence.online.get(user);
        PresenceEntry {
            user: user.to_string(),
            server: self.config.server.clone(),
            state: if online.is_some() {
                "online"
            } else {
                "offline"
            },
            connections: online.map_or(0, |o| o.conns.len()),
            status: online.and_then(|o| o.status.clone()),
            group: None,
            member: None,
        }
    }

    /// `user`'s presence on peer server `server`, as the directory has it.
    fn remote_entry(&self, user: &str, server: &str) -> PresenceEntry {
        let remote = self.directory.remote(user, server);
        PresenceEntry {
            user: user.to_string(),
            server: server.to_string(),
            state: if remote.is_some() {
                "online"
            } else {
                "offline"
            },
            connections: remote.map_or(0, |(n, _)| n),
            status: remote.and_then(|(_, s)| s.map(str::to_string)),
            group: None,
            member: None,
        }
    }

    /// The presence a name points to (see [`Place`]).
    fn presence_entry(&self, name: &str) -> PresenceEntry {
        match self.place(name) {
            (user, Place::Here) => self.local_entry(user),
            (user, Place::There(server)) => self.remote_entry(user, server),
            (user, Place::Any) => {
                if self.presence.online.contains_key(user) {
                    return self.local_entry(user);
                }
                match self.directory.find(user) {
                    Some(server) => self.remote_entry(user, server),
                    None => self.local_entry(user),
                }
            }
        }
    }

    /// Whether `watcher` (a user; `None`: a handler) may see `user`'s presence.
    /// One namespace: `alice` sees herself on every server, and shares a group with `bob@b`
    /// if she shares one with `bob` or with `bob@b`.
    pub(super) fn sees_user(&self, watcher: Option<&str>, name: &str) -> bool {
        let Some(watcher) = watcher else { return true };
        let (user, place) = self.place(name);
        watcher == user
            || match self.presence.config.visible {
                Visibility::All => true,
                Visibility::Groups => {
                    self.groups.share(watcher, user)
                        || matches!(place, Place::There(_)) && self.groups.share(watcher, name)
                }
                Visibility::None => false,
            }
    }

    /// Whether `watcher` may see the members of `group`.
    fn sees_group(&self, watcher: Option<&str>, group: &str) -> bool {
        let Some(watcher) = watcher else { return true };
        match self.presence.config.visible {
            Visibility::All => true,
            Visibility::Groups => self.groups.is_member(group, watcher),
            Visibility::None => false,
        }
    }

    /// Check what a query or subscription names against the bound and the visibility rule.
    fn presence_allowed(&self, asker: Option<&str>, what: &Recipients) -> Result<(), ErrorBody> {
        let asked = what.users.len() + what.groups.len();
        let max = self.presence.config.max_subscriptions;
        if asked > max {
            return Err(ErrorBody::new(
                ErrorCode::LimitReached,
                format!(
                    "a presence request may name at most {max} users and groups (this one names {asked})"
                ),
            ));
        }
        for group in &what.groups {
            crate::protocol::groups::check_group_name(group)
                .map_err(|e| ErrorBody::new(ErrorCode::InvalidMessage, e))?;
            if !self.sees_group(asker, group) {
                return Err(forbidden(match self.presence.config.visible {
                    Visibility::None => "presence is not visible on this server".to_string(),
                    _ => format!("the presence of group {group:?} is visible only to its members"),
                }));
            }
        }
        for user in &what.users {
            crate::protocol::groups::check_member_name(user)
                .map_err(|e| ErrorBody::new(ErrorCode::InvalidMessage, e))?;
            if !self.sees_user(asker, user) {
                return Err(forbidden(match self.presence.config.visible {
                    Visibility::None => "presence is not visible on this server".to_string(),
                    _ => format!(
                        "the presence of {user:?} is visible only to users who share a group with them"
                    ),
                }));
            }
        }
        Ok(())
    }

    /// The presence of the users and the members of the groups named (`bester.presence`, and a
    /// handler's `presence` frame: `asker` `None`).
    pub fn presence_query(
        &self,
        asker: Option<&str>,
        what: &Recipients,
    ) -> Result<PresenceAnswer, ErrorBody> {
        self.presence_allowed(asker, what)?;
        let mut answer = PresenceAnswer::default();
        let mut seen = HashSet::new();
        for user in &what.users {
            if seen.insert(user.clone()) {
                answer.users.push(self.presence_entry(user));
            }
        }
        for group in &what.groups {
            let members: Vec<String> = self.groups.members(group).cloned().collect();
            for user in &members {
                if seen.insert(user.clone()) {
                    answer.users.push(self.presence_entry(user));
                }
            }
            answer.groups.insert(group.clone(), members);
        }
        Ok(answer)
    }

    /// `bester.presence.subscribe`: watch these users and groups; the answer is their presence
    /// now, and every change is pushed from now on.
    pub fn presence_subscribe(
        &mut self,
        conn: ConnId,
        what: &Recipients,
    ) -> Result<PresenceAnswer, ErrorBody> {
        let asker = self
            .user_of(conn)
            .ok_or_else(|| ErrorBody::new(ErrorCode::NotIdentified, "identify first"))?;
        let answer = self.presence_query(Some(&asker), what)?;
        // `bob@<me>` is watched as `bob`, so that local changes find its watchers.
        let here: Vec<String> = what
            .users
            .iter()
            .map(|name| match self.place(name) {
                (user, Place::Here) => user.to_string(),
                _ => name.clone(),
            })
            .collect();
        let what = &Recipients {
            users: here,
            ..what.clone()
        };
        let watch = self.presence.watches.get(&conn);
        let new_users = what
            .users
            .iter()
            .filter(|u| !watch.is_some_and(|w| w.users.contains(*u)))
            .collect::<BTreeSet<_>>();
        let new_groups = what
            .groups
            .iter()
            .filter(|g| !watch.is_some_and(|w| w.groups.contains(*g)))
            .collect::<BTreeSet<_>>();
        let now = watch.map_or(0, |w| w.users.len() + w.groups.len());
        let total = now + new_users.len() + new_groups.len();
        let max = self.presence.config.max_subscriptions;
        if total > max {
            return Err(ErrorBody::new(
                ErrorCode::LimitReached,
                format!(
                    "a connection may watch at most {max} users and groups (this would make {total})"
                ),
            ));
        }
        let (new_users, new_groups): (Vec<String>, Vec<String>) = (
            new_users.into_iter().cloned().collect(),
            new_groups.into_iter().cloned().collect(),
        );
        let watch = self.presence.watches.entry(conn).or_default();
        for user in new_users {
            watch.users.insert(user.clone());
            self.presence
                .user_watchers
                .entry(user)
                .or_default()
                .insert(conn);
        }
        for group in new_groups {
            watch.groups.insert(group.clone());
            self.presence
                .group_watchers
                .entry(group)
                .or_default()
                .insert(conn);
        }
        Ok(answer)
    }

    /// `bester.presence.unsubscribe`: stop watching these users and groups (`None`: all).
    pub fn presence_unsubscribe(&mut self, conn: ConnId, what: Option<&Recipients>) {
        let Some(what) = what else {
            return self.presence.unwatch_all(conn);
        };
        let users: Vec<&str> = what
            .users
            .iter()
            .map(|name| match self.place(name) {
                (user, Place::Here) => user,
                _ => name.as_str(),
            })
            .collect();
        let Some(watch) = self.presence.watches.get_mut(&conn) else {
            return;
        };
        for user in users {
            if watch.users.remove(user) {
                unlist(&mut self.presence.user_watchers, user, conn);
            }
        }
        for group in &what.groups {
            if watch.groups.remove(group) {
                unlist(&mut self.presence.group_watchers, group, conn);
            }
        }
        if watch.users.is_empty() && watch.groups.is_empty() {
            self.presence.watches.remove(&conn);
        }
    }

    /// `bester.status`: set (or clear) the user's status text; watchers are told. The user's
    /// presence as it is now.
    pub fn set_status(
        &mut self,
        conn: ConnId,
        text: Option<String>,
        out: &mut Vec<Action>,
    ) -> Option<PresenceEntry> {
        let user = self.user_of(conn)?;
        let online = self.presence.online.get_mut(&user)?;
        if online.status != text {
            online.status = text;
            self.user_changed(&user, out);
            self.directory_touch(&user);
        }
        Some(self.local_entry(&user))
    }

    /// `user`'s connections or status changed: tell everyone watching them (directly or
    /// through a group) who may see them, once per watching connection.
    pub(super) fn user_changed(&self, user: &str, out: &mut Vec<Action>) {
        let mut targets: BTreeSet<ConnId> = self
            .presence
            .user_watchers
            .get(user)
            .cloned()
            .unwrap_or_default();
        for group in self.groups.of(user) {
            if let Some(watchers) = self.presence.group_watchers.get(group) {
                targets.extend(watchers.iter().copied());
            }
        }
        if targets.is_empty() {
            return;
        }
        let body = presence_push(&self.local_entry(user));
        for conn in targets {
            let watcher = self.user_of(conn);
            if self.sees_user(watcher.as_deref(), user) {
                out.push(Action::Send {
                    to: conn,
                    body: body.clone(),
                });
            }
        }
    }

    /// `user` joined or left `group`: tell the group's watchers who may see its members.
    pub(super) fn member_changed(
        &self,
        group: &str,
        user: &str,
        member: bool,
        out: &mut Vec<Action>,
    ) {
        let Some(watchers) = self.presence.group_watchers.get(group) else {
            return;
        };
        let mut entry = self.presence_entry(user);
        entry.group = Some(group.to_string());
        entry.member = Some(member);
        let body = presence_push(&entry);
        for conn in watchers {
            let watcher = self.user_of(*conn);
            let sees = match watcher.as_deref() {
                Some(w) if w == user => true,
                w => self.sees_group(w, group) || !member && self.sees_user(w, user),
            };
            if sees {
                out.push(Action::Send {
                    to: *conn,
                    body: body.clone(),
                });
            }
        }
    }

    /// `user`'s entry on peer server `server` changed (the directory): tell everyone watching
    /// `user` or `user@server` (directly or through a group) who may see them.
    pub(super) fn remote_changed(&self, user: &str, server: &str, out: &mut Vec<Action>) {
        let qualified = format!("{user}@{server}");
        let mut targets = BTreeSet::new();
        for name in [user, qualified.as_str()] {
            if let Some(watchers) = self.presence.user_watchers.get(name) {
                targets.extend(watchers.iter().copied());
            }
            for group in self.groups.of(name) {
                if let Some(watchers) = self.presence.group_watchers.get(group) {
                    targets.extend(watchers.iter().copied());
                }
            }
        }
        if targets.is_empty() {
            return;
        }
        let body = presence_push(&self.remote_entry(user, server));
        for conn in targets {
            let watcher = self.user_of(conn);
            if self.sees_user(watcher.as_deref(), &qualified) {
                out.push(Action::Send {
                    to: conn,
                    body: body.clone(),
                });
            }
        }
    }

    /// A client connection of `user` came: it is counted, and watchers are told.
    pub(super) fn presence_connected(&mut self, conn: ConnId, user: &str, out: &mut Vec<Action>) {
        self.presence.add(user, conn);
        self.user_changed(user, out);
        self.directory_touch(user);
    }

    /// A client connection of `user` went: its subscriptions end; watchers are told; after the
    /// user's last connection, they leave the groups no handler put them in.
    pub(super) fn presence_disconnected(
        &mut self,
        conn: ConnId,
        user: &str,
        out: &mut Vec<Action>,
    ) {
        self.presence.unwatch_all(conn);
        let last = self.presence.remove(user, conn);
        self.user_changed(user, out);
        self.directory_touch(user);
        if last {
            for group in self.groups.user_offline(user) {
                self.member_changed(&group, user, false, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;

    const fn conn(n: usize) -> ConnId {
        ConnId {
            slot: n,
            generation: n as u64,
        }
    }

    fn router() -> Router {
        Router::new(RouterConfig {
            server: "a".into(),
            request_timeout: Duration::from_secs(5),
            max_chain_depth: 3,
            max_frame: 1024,
            login_timeout: Duration::from_secs(1),
            max_logins: 2,
        })
    }

    fn sent(out: &mut Vec<Action>) -> Vec<(ConnId, Value)> {
        out.drain(..)
            .map(|a| match a {
                Action::Send { to, body } => (to, serde_json::from_slice(&body).unwrap()),
                other => panic!("not a send: {other:?}"),
            })
            .collect()
    }

    fn what(users: &[&str], groups: &[&str]) -> Recipients {
        Recipients {
            users: users.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            require_member: false,
        }
    }

    #[test]
    fn a_watcher_reached_twice_is_told_once() {
        let mut r = router();
        let mut out = Vec::new();
        r.client_identified(conn(1), "alice", &mut out);
        r.groups.add("team", &["bob".to_string()], true).unwrap();
        r.presence_subscribe(conn(1), &what(&["bob"], &["team"]))
            .unwrap();
        assert!(sent(&mut out).is_empty());
        r.client_identified(conn(2), "bob", &mut out);
        let data = json!({"user":"bob","server":"a","state":"online","connections":1});
        assert_eq!(
            sent(&mut out),
            [(
                conn(1),
                json!({"header":{"status":"ok","kind":"presence"},"data":data})
            )]
        );
        // The watcher's own connection closing ends its subscriptions.
        r.client_gone(conn(1), &mut out);
        r.client_gone(conn(2), &mut out);
        assert!(sent(&mut out).is_empty());
        assert!(r.presence.watches.is_empty());
        assert!(r.presence.user_watchers.is_empty());
        assert!(r.presence.group_watchers.is_empty());
    }

    #[test]
    fn last_close_leaves_session_groups_after_going_offline() {
        let mut r = router();
        let mut out = Vec::new();
        r.client_identified(conn(1), "alice", &mut out);
        r.client_identified(conn(2), "bob", &mut out);
        r.info_groups(conn(2), &["room".to_string()], &mut out);
        r.presence_subscribe(conn(1), &what(&[], &["room"]))
            .unwrap();
        r.client_gone(conn(2), &mut out);
        let frames: Vec<Value> = sent(&mut out)
            .into_iter()
            .map(|(_, v)| v["data"].clone())
            .collect();
        assert_eq!(
            frames,
            [
                json!({"user":"bob","server":"a","state":"offline","connections":0}),
                json!({"user":"bob","server":"a","state":"offline","connections":0,"group":"room","member":false}),
            ]
        );
        assert_eq!(r.group_count(), 0);
    }
}
