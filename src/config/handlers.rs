//! `[handlers.<type>]`: how each type's handler processes are provided (started, waited for, or
//! dialled), how their answers are correlated, their limits, who may send the type, and whether
//! its pushes to offline users are stored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{delivery, positive, presence};
use crate::protocol::message::{RESERVED_PREFIX, validate_type};
use crate::router::{Correlate, HandlerMode};

/// `[handlers.<type>]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHandler {
    /// Program and arguments to start (besterd supervises it).
    pub command: Option<Vec<String>>,
    /// Socket path for a handler started elsewhere (besterd only listens).
    pub socket: Option<PathBuf>,
    /// How many processes to start.
    pub processes: Option<usize>,
    /// Extra environment for the processes.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory for the processes.
    pub cwd: Option<PathBuf>,
    /// Requests in flight to one handler connection before `handler_busy` (with `connect`:
    /// dialled connections open at once).
    pub max_inflight: Option<usize>,
    /// How answers are matched to requests: `"request"` (the token, default), `"order"` (one
    /// request in flight per connection) or `"connection"` (one dialled connection per request).
    pub correlate: Option<String>,
    /// A socket the handler listens on; besterd dials it for every request.
    pub connect: Option<PathBuf>,
    /// `order` and `connection`: requests waiting for a free connection before `handler_busy`.
    pub max_queued: Option<usize>,
    /// Another user id (besides this daemon's and root) whose processes may connect to the
    /// type's socket, and who may own a `connect` socket.
    pub uid: Option<u32>,
    /// Who may send messages of this type (`"*"`, `"user:NAME"`, `"group:NAME"`); absent:
    /// everyone.
    pub allow: Option<Vec<String>>,
    /// Who may not (wins over `allow`).
    #[serde(default)]
    pub deny: Vec<String>,
    /// A push of this type to a user with no connection: `"drop"` (default, reported
    /// `offline`) or `"store"` (kept in the delivery store, reported `stored`).
    pub offline: Option<String>,
}

/// How a handler type is provided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerSource {
    /// besterd starts and supervises these processes.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// How many processes.
        processes: usize,
        /// Extra environment.
        env: BTreeMap<String, String>,
        /// Working directory.
        cwd: Option<PathBuf>,
    },
    /// Something else starts the handler; it connects to this socket path.
    Socket(PathBuf),
    /// Something else starts the handler; it listens on its `connect` socket.
    External,
}

/// One validated `[handlers.<type>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerConfig {
    /// Where the processes come from.
    pub source: HandlerSource,
    /// Requests in flight per connection before `handler_busy`.
    pub max_inflight: usize,
    /// How answers are matched to requests, and the limits that go with it.
    pub mode: HandlerMode,
    /// The socket besterd dials for every request (`correlate = "connection"`).
    pub connect: Option<PathBuf>,
    /// `handlers.T.uid`: another user whose processes may be this type's handlers.
    pub uid: Option<u32>,
    /// `allow` / `deny`: who may send messages of the type.
    pub access: crate::router::Access,
    /// `offline = "store"`: pushes of the type to users with no connection are stored.
    pub store_offline: bool,
}

/// Check every `[handlers.<type>]`.
pub(super) fn validate_handlers(
    file: BTreeMap<String, FileHandler>,
    problems: &mut Vec<(String, String)>,
) -> BTreeMap<String, HandlerConfig> {
    let mut handlers = BTreeMap::new();
    for (kind, h) in file {
        let key = format!("handlers.{kind}");
        if validate_type(&kind).is_err() {
            problems.push((
                key.clone(),
                "type names are 1 to 64 characters of A-Z a-z 0-9 . _ -".into(),
            ));
        }
        if kind.starts_with(RESERVED_PREFIX) {
            problems.push((
                key.clone(),
                format!("types starting with {RESERVED_PREFIX:?} are built in"),
            ));
        }
        let correlate = match h.correlate.as_deref() {
            None if h.connect.is_some() => Correlate::Connection,
            None | Some("request") => Correlate::Request,
            Some("order") => Correlate::Order,
            Some("connection") => Correlate::Connection,
            Some(other) => {
                problems.push((
                    format!("{key}.correlate"),
                    format!("{other:?} is not one of \"request\", \"order\", \"connection\""),
                ));
                Correlate::Request
            }
        };
        match (&h.connect, correlate) {
            (Some(_), Correlate::Connection) | (None, Correlate::Request | Correlate::Order) => {}
            (Some(_), other) => problems.push((
                format!("{key}.correlate"),
                format!(
                    "a handler besterd dials (connect) is correlated by \"connection\", not {:?}",
                    other.as_str()
                ),
            )),
            (None, _) => problems.push((
                format!("{key}.correlate"),
                "\"connection\" needs connect = \"/path/to/handler.sock\"".into(),
            )),
        }
        if h.connect.is_some() && h.socket.is_some() {
            problems.push((key.clone(), "give connect or socket, not both".into()));
            continue;
        }
        let source = match (h.command, h.socket) {
            (None, None) if h.connect.is_some() => HandlerSource::External,
            (Some(argv), None) => {
                if argv.is_empty() || argv[0].is_empty() {
                    problems.push((format!("{key}.command"), "needs at least a program".into()));
                }
                let processes = h.processes.unwrap_or(1);
                if !(1..=64).contains(&processes) {
                    problems.push((format!("{key}.processes"), "must be from 1 to 64".into()));
                }
                HandlerSource::Command {
                    argv,
                    processes,
                    env: h.env,
                    cwd: h.cwd,
                }
            }
            (None, Some(socket)) => {
                if h.processes.is_some() || !h.env.is_empty() || h.cwd.is_some() {
                    problems.push((
                        key.clone(),
                        "processes, env and cwd only go with command".into(),
                    ));
                }
                HandlerSource::Socket(socket)
            }
            (Some(_), Some(_)) => {
                problems.push((key.clone(), "give command or socket, not both".into()));
                continue;
            }
            (None, None) => {
                problems.push((
                    key.clone(),
                    "needs command (to start it), socket (to wait for it) or connect (to dial it)"
                        .into(),
                ));
                continue;
            }
        };
        let max_inflight = positive(
            problems,
            &format!("{key}.max_inflight"),
            h.max_inflight,
            if correlate == Correlate::Connection {
                64
            } else {
                1024
            },
        );
        let max_queued = positive(problems, &format!("{key}.max_queued"), h.max_queued, 1024);
        let access = presence::validate_access(&key, h.allow, h.deny, problems);
        let store_offline = delivery::validate_offline(&key, h.offline.as_deref(), problems);
        handlers.insert(
            kind,
            HandlerConfig {
                source,
                max_inflight,
                mode: HandlerMode {
                    correlate,
                    max_inflight,
                    max_queued,
                },
                connect: h.connect,
                uid: h.uid,
                access,
                store_offline,
            },
        );
    }

    handlers
}
