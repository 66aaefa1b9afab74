//! Presence and groups on the wire: the data of the `bester.presence*`, `bester.status`,
//! `bester.join` and `bester.leave` built-ins, the handler frames `groupAdd`, `groupRemove` and
//! `presence`, `sendClients`'s `{"users","groups"}` form, and the presence frames the server
//! sends (PROTOCOL.md §5 "Presence and groups", §6 "Groups and presence"). Pure: no state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::message::{Status, to_body};

/// Longest group name, in bytes.
pub const MAX_GROUP_NAME: usize = 64;
/// Longest `bester.status` text, in bytes.
pub const MAX_STATUS_TEXT: usize = 256;

/// Why `name` is not a group name (1 to 64 characters of `A-Z a-z 0-9 . _ - :`), if it is not.
pub fn check_group_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_GROUP_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "group name {name:?} must be 1 to {MAX_GROUP_NAME} characters of A-Z a-z 0-9 . _ - :"
        ))
    }
}

/// Why `name` cannot be a member of a group (1 to 256 bytes, no control characters), if so.
pub fn check_member_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(format!(
            "user name {name:?} must be 1 to 256 bytes without control characters"
        ));
    }
    Ok(())
}

/// Users by name and groups by name: who a `sendClients` reaches, what a presence query or
/// subscription is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipients {
    /// Users, by name.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups, by name: their members.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `sendClients` answering a client's request: carried out only if the request's sender is
    /// a member of every group named (else the request is answered `forbidden`).
    #[serde(default)]
    pub require_member: bool,
}

impl Recipients {
    /// These users and no group (the list form of `sendClients`).
    pub fn users(users: Vec<String>) -> Recipients {
        Recipients {
            users,
            ..Recipients::default()
        }
    }
}

/// `commandData` of `groupAdd` / `groupRemove`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupChange {
    /// The group.
    pub group: String,
    /// The users added or removed.
    pub users: Vec<String>,
}

/// `data` of `bester.join` / `bester.leave`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinData {
    /// The group.
    pub group: String,
}

/// `data` of `bester.status`: the text, or none to clear it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusData {
    /// At most [`MAX_STATUS_TEXT`] bytes; absent or null clears the status.
    #[serde(default)]
    pub text: Option<String>,
}

/// One user's presence on one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresenceEntry {
    /// The user.
    pub user: String,
    /// The server the connections are on.
    pub server: String,
    /// `"online"` or `"offline"`.
    pub state: &'static str,
    /// Connections of the user there.
    pub connections: usize,
    /// The user's `bester.status` text, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// In a push about a group's membership: the group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// In a push about a group's membership: whether the user is now a member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<bool>,
}

/// The answer to a presence query or subscription: every user asked about or a member of a
/// group asked about, once, and each group's members.
#[derive(Debug, Default, Serialize)]
pub struct PresenceAnswer {
    /// One entry per user.
    pub users: Vec<PresenceEntry>,
    /// The groups asked about, with their members (an unknown group has none).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Vec<String>>,
}

#[derive(Serialize)]
struct PushHeader {
    status: Status,
    kind: &'static str,
}

#[derive(Serialize)]
struct Frame<'a, D: Serialize> {
    header: PushHeader,
    data: &'a D,
}

/// A presence push to a subscriber:
/// `{"header":{"status":"ok","kind":"presence"},"data":{"user","server","state","connections"}}`.
pub fn presence_push(entry: &PresenceEntry) -> Vec<u8> {
    to_body(&Frame {
        header: PushHeader {
            status: Status::Ok,
            kind: "presence",
        },
        data: entry,
    })
}

#[derive(Serialize)]
struct ReportHeader<'a> {
    kind: &'static str,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

#[derive(Serialize)]
struct Report<'a, D: Serialize> {
    header: ReportHeader<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
}

/// An ok report to a handler's `groupAdd`, `groupRemove` (no data) or `presence` (its answer).
pub fn handler_report<D: Serialize>(id: Option<&str>, data: Option<&D>) -> Vec<u8> {
    to_body(&Report {
        header: ReportHeader {
            kind: "report",
            status: Status::Ok,
            id,
        },
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        assert!(check_group_name("room:1").is_ok());
        assert!(check_group_name(&"a".repeat(64)).is_ok());
        assert!(check_group_name(&"a".repeat(65)).is_err());
        assert!(check_group_name("").is_err());
        assert_eq!(
            check_group_name("a b").unwrap_err(),
            "group name \"a b\" must be 1 to 64 characters of A-Z a-z 0-9 . _ - :"
        );
    }

    #[test]
    fn push_shape() {
        let entry = PresenceEntry {
            user: "bob".into(),
            server: "alpha".into(),
            state: "online",
            connections: 2,
            status: None,
            group: None,
            member: None,
        };
        assert_eq!(
            String::from_utf8(presence_push(&entry)).unwrap(),
            r#"{"header":{"status":"ok","kind":"presence"},"data":{"user":"bob","server":"alpha","state":"online","connections":2}}"#
        );
        assert_eq!(
            String::from_utf8(handler_report::<()>(Some("g1"), None)).unwrap(),
            r#"{"header":{"kind":"report","status":"ok","id":"g1"}}"#
        );
    }
}
