//! Configuration: the TOML file (`FileConfig`, serde with `deny_unknown_fields`), validated into a
//! `Config` the server runs with. Defaults live here and nowhere else; every validation error names
//! the key it is about. Hostnames are resolved here, once, so the event loop never does DNS.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod auth;
mod checks;
pub mod federation;
mod handlers;
pub mod listeners;
mod peers;
pub mod presence;
pub mod streams;

pub use handlers::{FileHandler, HandlerConfig, HandlerSource};
pub use listeners::{ListenerConfig, ListenerKind, PeerTls, StaticFiles, TlsFiles};
pub use peers::{FilePeer, PeerConfig};

use crate::cli::ServeArgs;

pub mod delivery;
pub mod diff;
use crate::protocol::message::validate_type;

/// The configuration built into the binary, used by `besterd serve` without `--config`.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Placeholder in a handler command for the directory holding the bundled example handlers.
pub const EXAMPLES_PLACEHOLDER: &str = "{examples}";

/// The configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[server]`.
    #[serde(default)]
    pub server: FileServer,
    /// `[handlers.<type>]`.
    #[serde(default)]
    pub handlers: BTreeMap<String, FileHandler>,
    /// `[peers.<name>]`.
    #[serde(default)]
    pub peers: BTreeMap<String, FilePeer>,
    /// `[[listeners]]`: more ways to listen besides `[server] listen` (plain TCP).
    #[serde(default)]
    pub listeners: Vec<listeners::FileListener>,
    /// `[monitor]`.
    #[serde(default)]
    pub monitor: FileMonitor,
    /// `[auth]`: token logins and resume tokens.
    #[serde(default)]
    pub auth: auth::FileAuth,
    /// `[presence]`: who may see whose presence.
    #[serde(default)]
    pub presence: presence::FilePresence,
    /// `[groups]`: bounds and the groups clients may join themselves.
    #[serde(default)]
    pub groups: presence::FileGroups,
    /// `[federation]`: the directory of users online on the linked peers.
    #[serde(default)]
    pub federation: federation::FileFederation,
    /// `[delivery]`: the store of pushes for users who are offline.
    pub delivery: Option<delivery::FileDelivery>,
    /// `[streams]`: client-to-client streams.
    #[serde(default)]
    pub streams: streams::FileStreams,
}

/// `[monitor]` as written: the monitoring HTTP listener, off unless `listen` is set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMonitor {
    /// `host:port` for the (unauthenticated) monitoring HTTP listener, e.g. `127.0.0.1:8222`.
    pub listen: Option<String>,
    /// Most monitoring connections at once; more are closed on accept.
    pub max_connections: Option<usize>,
    /// A monitoring connection must send its whole request within this long.
    pub timeout_ms: Option<u64>,
    /// Host names the monitor answers to besides IP literals and `localhost` (DNS rebinding).
    pub hosts: Option<Vec<String>>,
}

/// The validated `[monitor]` section (present only when `listen` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Where the monitoring HTTP listener binds.
    pub listen: SocketAddr,
    /// Most monitoring connections at once.
    pub max_connections: usize,
    /// Time allowed for a whole request.
    pub timeout: Duration,
    /// Host names answered besides IP literals and `localhost`.
    pub hosts: Vec<String>,
}

/// Words that mark a configuration line as one that may hold a secret.
const SECRET_WORDS: [&str; 3] = ["secret", "password", "token"];

/// A TOML error as `line L, column C: message` and the line itself, without the values a line
/// holding a secret (`secret = "…"`) carries, and without any value serde quotes in the message.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let message = crate::protocol::redact::without_values(e.message().trim_end());
    let Some(span) = e.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..start].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    let lower = line.to_ascii_lowercase();
    let shown = match line.split_once('=') {
        Some((key, _)) if SECRET_WORDS.iter().any(|w| lower.contains(w)) => {
            format!("{}= <redacted>", key)
        }
        None if SECRET_WORDS.iter().any(|w| lower.contains(w)) => "<redacted>".to_string(),
        _ => line.to_string(),
    };
    format!("line {line_no}, column {column}: {message}\n    {line_no} | {shown}")
}

/// Shortest accepted peer secret.
pub const MIN_SECRET: usize = 16;

/// `[server]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    /// This server's name.
    pub name: Option<String>,
    /// `host:port` to listen on.
    pub listen: Option<String>,
    /// User store path.
    pub users: Option<PathBuf>,
    /// Directory for handler sockets.
    pub runtime_dir: Option<PathBuf>,
    /// Close connections that have not identified after this long.
    pub identify_timeout_ms: Option<u64>,
    /// Answer `handler_timeout` when a handler has not answered after this long.
    pub request_timeout_ms: Option<u64>,
    /// How long `serve` waits for started handlers to connect before declaring itself ready.
    pub handler_startup_timeout_ms: Option<u64>,
    /// Largest frame body after identify.
    pub max_frame_bytes: Option<usize>,
    /// Largest frame body before identify.
    pub max_identify_frame_bytes: Option<usize>,
    /// Per-connection outbound queue limit.
    pub max_outbound_bytes: Option<usize>,
    /// Most connections at once (clients and handlers).
    pub max_connections: Option<usize>,
    /// Argon2 verifier threads.
    pub auth_threads: Option<usize>,
    /// Logins waiting for a verifier before new ones are refused with `server_busy`.
    pub auth_queue: Option<usize>,
    /// Longest `sendHandler` chain.
    pub max_chain_depth: Option<usize>,
    /// Requests one client connection may have in flight; past it the server stops reading
    /// from that connection until answers go out.
    pub max_pending_per_connection: Option<usize>,
    /// Close client connections that send nothing for this long (keep alive with `bester.ping`).
    pub idle_timeout_ms: Option<u64>,
    /// Most connections from one IP address.
    pub max_connections_per_ip: Option<usize>,
    /// Most connections of one user.
    pub max_connections_per_user: Option<usize>,
    /// Most users one gateway connection may have attached at once (`bester.attach`).
    pub max_attached_per_connection: Option<usize>,
    /// Failed logins allowed per IP address per minute (a burst of this many, refilled over a minute).
    pub login_failures_per_ip: Option<u32>,
    /// Failed logins allowed per username per minute.
    pub login_failures_per_user: Option<u32>,
    /// User seeded into a store that does not exist yet.
    pub bootstrap_user: Option<BootstrapUser>,
    /// On SIGTERM, how long requests already in flight may take to be answered (drain).
    pub shutdown_grace_ms: Option<u64>,
    /// Whether clients and peers that offer the feature `compress` get it (default true).
    pub compression: Option<bool>,
}

/// `[server.bootstrap_user]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapUser {
    /// The user's name.
    pub username: String,
    /// An argon2 PHC string (never a clear password).
    pub password_hash: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This server's name, as peers and users see it.
    pub name: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The user store.
    pub users: PathBuf,
    /// Where handler sockets go; `None` means `$RUNTIME_DIRECTORY` or a private temp directory.
    pub runtime_dir: Option<PathBuf>,
    /// Written with the bound address once ready.
    pub ready_file: Option<PathBuf>,
    /// Identify deadline.
    pub identify_timeout: Duration,
    /// Handler answer deadline.
    pub request_timeout: Duration,
    /// How long to wait for started handlers at startup.
    pub handler_startup_timeout: Duration,
    /// Largest frame body after identify.
    pub max_frame: usize,
    /// Largest frame body before identify.
    pub max_identify_frame: usize,
    /// Per-connection outbound queue limit.
    pub max_outbound: usize,
    /// Most connections at once.
    pub max_connections: usize,
    /// Argon2 verifier threads.
    pub auth_threads: usize,
    /// Pending logins before `server_busy`.
    pub auth_queue: usize,
    /// Longest `sendHandler` chain.
    pub max_chain_depth: usize,
    /// Requests in flight per client connection before reading from it pauses.
    pub max_pending_per_connection: usize,
    /// Idle client connections are closed after this long.
    pub idle_timeout: Duration,
    /// Whether the feature `compress` is accepted (`server.compression`).
    pub compression: bool,
    /// Most connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Most connections of one user.
    pub max_connections_per_user: usize,
    /// Most users one gateway connection may have attached at once.
    pub max_attached_per_connection: usize,
    /// Failed logins per IP address per minute.
    pub login_failures_per_ip: u32,
    /// Failed logins per username per minute.
    pub login_failures_per_user: u32,
    /// User seeded into a missing store.
    pub bootstrap_user: Option<BootstrapUser>,
    /// How long a drain (SIGTERM) waits for the answers to requests in flight.
    pub shutdown_grace: Duration,
    /// Handlers by type.
    pub handlers: BTreeMap<String, HandlerConfig>,
    /// Federation peers by name.
    pub peers: BTreeMap<String, PeerConfig>,
    /// `[[listeners]]`, besides `listen`.
    pub listeners: Vec<ListenerConfig>,
    /// The monitoring HTTP listener, if enabled.
    pub monitor: Option<MonitorConfig>,
    /// `[auth]`: token logins and resume tokens, with their keys.
    pub auth: auth::AuthConfig,
    /// `[presence]`.
    pub presence: crate::router::PresenceConfig,
    /// `[groups]`.
    pub groups: crate::router::GroupLimits,
    /// `[federation]`: the directory.
    pub federation: crate::router::DirectoryConfig,
    /// `[delivery]`: `None` when no store is kept.
    pub delivery: Option<crate::delivery::DeliveryConfig>,
    /// `[streams]`.
    pub streams: crate::router::StreamConfig,
}

/// Everything wrong with a configuration.
#[derive(Debug)]
pub struct ConfigError {
    /// Where the configuration came from.
    pub origin: String,
    /// `(key, problem)` pairs.
    pub problems: Vec<(String, String)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration {}:", self.origin)?;
        for (key, problem) in &self.problems {
            write!(f, "\n  {key}: {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Settings that are valid but probably not meant: `(key, warning)` pairs for `check-config`
    /// (and logged by `serve`).
    pub fn warnings(&self) -> Vec<(String, String)> {
        let mut warnings = Vec::new();
        if let Some(m) = &self.monitor
            && !m.listen.ip().is_loopback()
        {
            warnings.push((
                "monitor.listen".to_string(),
                format!(
                    "{} is not a loopback address; the monitoring port has no authentication and \
                     shows users, addresses and figures to anyone who can reach it",
                    m.listen
                ),
            ));
        }
        if self.idle_timeout < self.request_timeout {
            warnings.push((
                "server.idle_timeout_ms".to_string(),
                format!(
                    "{} ms is shorter than server.request_timeout_ms ({} ms): a client waiting \
                     quietly for a slow handler is kept open only while its request is in flight",
                    self.idle_timeout.as_millis(),
                    self.request_timeout.as_millis()
                ),
            ));
        }
        warnings
    }

    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            problems: vec![("(file)".into(), e.to_string())],
        })?;
        Config::parse(&text, &origin)
    }

    /// The embedded default configuration.
    pub fn embedded() -> Config {
        Config::parse(EMBEDDED_DEFAULT, "(embedded default)")
            .expect("the embedded default configuration is valid (tested)")
    }

    /// Parse and validate configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError {
            origin: origin.to_string(),
            problems: vec![("(syntax)".into(), syntax_error(text, &e))],
        })?;
        file.validate().map_err(|problems| ConfigError {
            origin: origin.to_string(),
            problems,
        })
    }

    /// Where the logged-out sessions are kept across restarts: `[auth] revoked_file`, else
    /// `besterd-revoked` beside the user store when `[auth] token_secret_file` is set (resume
    /// tokens then outlive a restart, so the logouts that refuse some of them must too), else
    /// nowhere (each run's tokens die with its random key).
    pub fn revoked_file(&self) -> Option<PathBuf> {
        self.auth.revoked_file.clone().or_else(|| {
            self.auth
                .token_secret_file
                .as_ref()
                .map(|_| self.users.with_file_name("besterd-revoked"))
        })
    }

    /// Apply `besterd serve` flags, which win over the file.
    pub fn apply_flags(&mut self, args: &ServeArgs) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if let Some(listen) = &args.listen {
            match resolve(listen) {
                Ok(addr) => self.listen = addr,
                Err(e) => problems.push(("--listen".to_string(), e)),
            }
        }
        if let Some(name) = &args.name {
            match validate_server_name(name) {
                Ok(()) => self.name = name.clone(),
                Err(e) => problems.push(("--name".to_string(), e)),
            }
        }
        if let Some(users) = &args.users {
            self.users = users.clone();
        }
        if let Some(dir) = &args.runtime_dir {
            self.runtime_dir = Some(dir.clone());
        }
        if let Some(file) = &args.ready_file {
            self.ready_file = Some(file.clone());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                origin: "(command line)".into(),
                problems,
            })
        }
    }
}

fn resolve(listen: &str) -> Result<SocketAddr, String> {
    listen
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {listen:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{listen:?} resolves to no address"))
}

fn validate_server_name(name: &str) -> Result<(), String> {
    validate_type(name)
        .map_err(|_| format!("{name:?} must be 1 to 64 characters of A-Z a-z 0-9 . _ -"))
}

/// Take `value` if set, else `default`; note a problem if it is zero.
fn positive<T: Copy + PartialEq + Default>(
    problems: &mut Vec<(String, String)>,
    key: &str,
    value: Option<T>,
    default: T,
) -> T {
    let value = value.unwrap_or(default);
    if value == T::default() {
        problems.push((key.to_string(), "must be greater than 0".into()));
    }
    value
}

impl FileConfig {
    /// Check every key and fill in defaults; on failure, every problem found.
    pub fn validate(self) -> Result<Config, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let s = self.server;
        let name = s.name.unwrap_or_else(|| "besterd".into());
        if let Err(e) = validate_server_name(&name) {
            problems.push(("server.name".into(), e));
        }
        let listen = resolve(s.listen.as_deref().unwrap_or("127.0.0.1:2222")).unwrap_or_else(|e| {
            problems.push(("server.listen".into(), e));
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        let ms = |v: u64| Duration::from_millis(v);
        let p = &mut problems;
        let identify_timeout = ms(positive(
            p,
            "server.identify_timeout_ms",
            s.identify_timeout_ms,
            3_000,
        ));
        let request_timeout = ms(positive(
            p,
            "server.request_timeout_ms",
            s.request_timeout_ms,
            30_000,
        ));
        let handler_startup_timeout = ms(positive(
            p,
            "server.handler_startup_timeout_ms",
            s.handler_startup_timeout_ms,
            10_000,
        ));
        let max_frame = positive(p, "server.max_frame_bytes", s.max_frame_bytes, 1 << 20);
        let max_identify_frame = positive(
            p,
            "server.max_identify_frame_bytes",
            s.max_identify_frame_bytes,
            4096,
        );
        let max_outbound = positive(
            p,
            "server.max_outbound_bytes",
            s.max_outbound_bytes,
            8 << 20,
        );
        let max_connections = positive(p, "server.max_connections", s.max_connections, 10_000);
        let auth_threads = positive(p, "server.auth_threads", s.auth_threads, 2);
        let auth_queue = positive(p, "server.auth_queue", s.auth_queue, 256);
        let max_chain_depth = positive(p, "server.max_chain_depth", s.max_chain_depth, 8);
        let max_pending_per_connection = positive(
            p,
            "server.max_pending_per_connection",
            s.max_pending_per_connection,
            256,
        );
        let idle_timeout = ms(positive(
            p,
            "server.idle_timeout_ms",
            s.idle_timeout_ms,
            300_000,
        ));
        let max_connections_per_ip = positive(
            p,
            "server.max_connections_per_ip",
            s.max_connections_per_ip,
            256,
        );
        let max_connections_per_user = positive(
            p,
            "server.max_connections_per_user",
            s.max_connections_per_user,
            64,
        );
        let max_attached_per_connection = positive(
            p,
            "server.max_attached_per_connection",
            s.max_attached_per_connection,
            1000,
        );
        let login_failures_per_ip = positive(
            p,
            "server.login_failures_per_ip",
            s.login_failures_per_ip,
            30,
        );
        let login_failures_per_user = positive(
            p,
            "server.login_failures_per_user",
            s.login_failures_per_user,
            10,
        );
        let shutdown_grace = ms(s.shutdown_grace_ms.unwrap_or(10_000));
        if max_frame > u32::MAX as usize {
            problems.push((
                "server.max_frame_bytes".into(),
                "must be below 4 GiB".into(),
            ));
        }
        if max_identify_frame > max_frame {
            problems.push((
                "server.max_identify_frame_bytes".into(),
                "must not be larger than server.max_frame_bytes".into(),
            ));
        }
        if max_outbound < max_frame + 4 {
            problems.push((
                "server.max_outbound_bytes".into(),
                "must hold at least one frame of server.max_frame_bytes".into(),
            ));
        }
        if let Some(user) = &s.bootstrap_user
            && !user.password_hash.starts_with("$argon2")
        {
            problems.push((
                "server.bootstrap_user.password_hash".into(),
                "must be an argon2 PHC string ($argon2id$...), never a clear password".into(),
            ));
        }

        let handlers = handlers::validate_handlers(self.handlers, &mut problems);
        let peers = peers::validate_peers(self.peers, &name, &mut problems);
        let listeners = listeners::validate_listeners(self.listeners, &mut problems, resolve);
        let auth = auth::validate_auth(self.auth, handlers.keys(), &mut problems);
        let presence = presence::validate_presence(self.presence, &mut problems);
        let groups = presence::validate_groups(self.groups, &mut problems);
        let federation = federation::validate_federation(self.federation, &mut problems);
        let streams = streams::validate_streams(self.streams, &mut problems);
        let wanted = handlers.values().any(|h: &HandlerConfig| h.store_offline);
        let delivery = delivery::validate_delivery(self.delivery, wanted, &mut problems);

        let monitor = self.monitor.listen.as_deref().and_then(|listen| {
            let m = &self.monitor;
            let max_connections = positive(
                &mut problems,
                "monitor.max_connections",
                m.max_connections,
                64,
            );
            let timeout = ms(positive(
                &mut problems,
                "monitor.timeout_ms",
                m.timeout_ms,
                5_000,
            ));
            let hosts = m.hosts.clone().unwrap_or_default();
            for (j, host) in hosts.iter().enumerate() {
                if !crate::net::hosts::valid_name(host) || host.parse::<IpAddr>().is_ok() {
                    problems.push((
                        format!("monitor.hosts[{j}]"),
                        format!("{host:?} is not a host name (IP addresses are always answered)"),
                    ));
                }
            }
            match resolve(listen) {
                Ok(listen) => Some(MonitorConfig {
                    listen,
                    max_connections,
                    timeout,
                    hosts,
                }),
                Err(e) => {
                    problems.push(("monitor.listen".into(), e));
                    None
                }
            }
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Config {
            name,
            listen,
            users: s
                .users
                .unwrap_or_else(|| PathBuf::from("besterd-users.json")),
            runtime_dir: s.runtime_dir,
            ready_file: None,
            identify_timeout,
            request_timeout,
            handler_startup_timeout,
            max_frame,
            max_identify_frame,
            max_outbound,
            max_connections,
            auth_threads,
            auth_queue,
            max_chain_depth,
            max_pending_per_connection,
            idle_timeout,
            compression: s.compression.unwrap_or(true),
            max_connections_per_ip,
            max_connections_per_user,
            max_attached_per_connection,
            login_failures_per_ip,
            login_failures_per_user,
            bootstrap_user: s.bootstrap_user,
            shutdown_grace,
            handlers,
            peers,
            listeners,
            monitor,
            auth,
            presence,
            groups,
            federation,
            delivery,
            streams,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<(String, String)> {
        Config::parse(text, "test").unwrap_err().problems
    }

    #[test]
    fn embedded_default_is_valid() {
        let config = Config::embedded();
        assert_eq!(config.listen, "127.0.0.1:2222".parse().unwrap());
        assert!(config.handlers.contains_key("echo"));
        assert!(config.handlers.contains_key("chat"));
        assert!(config.bootstrap_user.is_some());
        let web = &config.listeners[0];
        assert_eq!(web.kind, ListenerKind::Ws);
        assert_eq!(web.address, "127.0.0.1:2223".parse().unwrap());
        assert_eq!(web.static_files, Some(StaticFiles::Builtin));
    }

    #[test]
    fn empty_file_gets_defaults() {
        let config = Config::parse("", "test").unwrap();
        assert_eq!(config.name, "besterd");
        assert_eq!(config.identify_timeout, Duration::from_secs(3));
        assert_eq!(config.max_frame, 1 << 20);
        assert!(config.handlers.is_empty());
    }

    /// CONFIG.md lists exactly the keys of each section that the parser takes (it asks the
    /// parser itself: an unknown key's error names every key the section has).
    #[test]
    fn the_reference_lists_every_key_and_no_other() {
        let reference = include_str!("../CONFIG.md");
        let sections = [
            ("[server]", "[server]"),
            ("[server.bootstrap_user]", "[server.bootstrap_user]"),
            ("[handlers.<type>]", "[handlers.t]"),
            ("[peers.<name>]", "[peers.p]"),
            ("[[listeners]]", "[[listeners]]"),
            ("[monitor]", "[monitor]"),
            ("[auth]", "[auth]"),
            ("[auth.jwt]", "[auth.jwt]"),
            ("[presence]", "[presence]"),
            ("[groups]", "[groups]"),
            ("[federation]", "[federation]"),
            ("[delivery]", "[delivery]"),
            ("[streams]", "[streams]"),
        ];
        for (title, header) in sections {
            let text = problems(&format!("{header}\nzzz_no_such_key = 1\n"))[0]
                .1
                .clone();
            let expected = &text[text.find("expected").expect("a list of keys")..];
            let mut parsed: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let heading = format!("### `{title}`\n");
            let at = reference
                .find(&heading)
                .unwrap_or_else(|| panic!("CONFIG.md has no section {title}"));
            let table = &reference[at + heading.len()..];
            let table = &table[..table.find("\n### ").unwrap_or(table.len())];
            let mut listed: Vec<&str> = table
                .lines()
                .filter_map(|l| l.strip_prefix("| `"))
                .filter_map(|l| l.split('`').next())
                .collect();
            parsed.sort_unstable();
            listed.sort_unstable();
            assert_eq!(listed, parsed, "CONFIG.md, {title}");
        }
    }

    #[test]
    fn unknown_keys_fail_loudly() {
        let p = problems("[server]\nlisten_on = \"x\"\n");
        assert_eq!(p[0].0, "(syntax)");
        assert!(p[0].1.contains("unknown field `listen_on`"), "{p:?}");
    }

    #[test]
    fn every_problem_names_its_key() {
        let p = problems(
            r#"
            [server]
            name = "bad name"
            identify_timeout_ms = 0
            max_identify_frame_bytes = 9999999
            [handlers."bester.echo"]
            command = ["x"]
            [handlers.both]
            command = ["x"]
            socket = "/tmp/x"
            [handlers.neither]
            "#,
        );
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.name",
                "server.identify_timeout_ms",
                "server.max_identify_frame_bytes",
                "handlers.bester.echo",
                "handlers.both",
                "handlers.neither"
            ]
        );
    }

    #[test]
    fn syntax_errors_never_show_a_secret() {
        for (text, want) in [
            (
                "[peers.b]\nsecret = \"supersecretvalue123\" junk\n",
                "line 2, column 32: unexpected key or value, expected newline, `#`\n    2 | secret = <redacted>",
            ),
            (
                "[peers.b]\nsecret = [\"supersecretvalue123\"]\n",
                "line 2, column 10: invalid type: sequence, expected a string\n    2 | secret = <redacted>",
            ),
            (
                "[peers.b]\nsecret = 12345678901234567\n",
                "line 2, column 10: invalid type: integer, expected a string\n    2 | secret = <redacted>",
            ),
            (
                "[peers]\nb = { address = \"x:1\", secret = \"supersecretvalue123\", bogus = 1 }\n",
                "line 2, column 56: unknown field `bogus`, expected one of `address`, `secret`, `secret_file`, `tls`, `ca`, `fingerprint`, `server_name`, `allow_types`\n    2 | b = <redacted>",
            ),
            (
                "[server]\nlisten = 5\n",
                "line 2, column 10: invalid type: integer, expected a string\n    2 | listen = 5",
            ),
        ] {
            let p = problems(text);
            assert_eq!(
                p,
                vec![("(syntax)".to_string(), want.to_string())],
                "{text}"
            );
            assert!(!p[0].1.contains("supersecret"), "{}", p[0].1);
        }
    }

    #[test]
    fn peer_allow_types_must_be_type_names() {
        let p = problems(
            "[peers.b]\nsecret = \"0123456789abcdef\"\nallow_types = [\"chat\", \"a b\"]\n",
        );
        assert_eq!(
            p,
            vec![(
                "peers.b.allow_types".to_string(),
                "\"a b\" must be 1 to 64 characters of A-Z a-z 0-9 . _ -".to_string()
            )]
        );
    }

    #[test]
    fn peers_need_a_long_enough_secret_and_another_name() {
        let config = Config::parse(
            "[server]\nname = \"a\"\n[peers.b]\naddress = \"127.0.0.1:2223\"\nsecret = \"0123456789abcdef\"\n[peers.c]\nsecret = \"0123456789abcdefg\"\n",
            "test",
        )
        .unwrap();
        assert_eq!(
            config.peers["b"].address,
            Some("127.0.0.1:2223".parse().unwrap())
        );
        assert_eq!(config.peers["c"].address, None);
        assert!(
            !format!("{:?}", config.peers["b"]).contains("0123"),
            "secrets are not in Debug"
        );
        let p = problems(
            "[server]\nname = \"a\"\n[peers.a]\nsecret = \"0123456789abcdef\"\n[peers.b]\nsecret = \"short\"\n[peers.c]\n",
        );
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["peers.a", "peers.b", "peers.c"]);
        assert_eq!(p[1].1, "the secret must be at least 16 bytes");
    }

    #[test]
    fn listener_problems_name_their_key() {
        let p = problems(
            r#"
            [[listeners]]
            kind = "quic"
            address = "127.0.0.1:1"
            [[listeners]]
            kind = "tls"
            address = "127.0.0.1:1"
            [[listeners]]
            kind = "tls"
            address = "127.0.0.1:1"
            cert = "/nonexistent/c.pem"
            key = "/nonexistent/k.pem"
            [[listeners]]
            kind = "tcp"
            address = "127.0.0.1:1"
            static_dir = "x"
            [peers.b]
            secret = "0123456789abcdef"
            tls = true
            "#,
        );
        assert_eq!(
            p,
            [
                (
                    "peers.b".to_string(),
                    "tls = true needs ca (a PEM file) or fingerprint (the peer certificate's SHA-256), one of them".to_string()
                ),
                (
                    "listeners[0].kind".into(),
                    "\"quic\" is not one of \"tcp\", \"tls\", \"ws\", \"wss\"".into()
                ),
                (
                    "listeners[1]".into(),
                    "a tls listener needs cert and key".into()
                ),
                (
                    "listeners[2].cert".into(),
                    "/nonexistent/c.pem: cannot read certificates: I/O error: No such file or directory (os error 2)".into()
                ),
                (
                    "listeners[3]".into(),
                    "allowed_origins, static_dir and hosts only go with kind \"ws\" or \"wss\"".into()
                ),
            ]
        );
    }

    #[test]
    fn monitor_is_off_unless_listen_is_set_and_warns_off_loopback() {
        let config = Config::parse("[monitor]\ntimeout_ms = 100\n", "test").unwrap();
        assert_eq!(config.monitor, None);
        let config = Config::parse("[monitor]\nlisten = \"127.0.0.1:8222\"\n", "test").unwrap();
        let m = config.monitor.clone().unwrap();
        assert_eq!(m.listen, "127.0.0.1:8222".parse().unwrap());
        assert_eq!((m.max_connections, m.timeout), (64, Duration::from_secs(5)));
        assert!(config.warnings().is_empty());
        let config = Config::parse("[monitor]\nlisten = \"0.0.0.0:8222\"\n", "test").unwrap();
        assert_eq!(config.warnings().len(), 1);
        assert_eq!(config.warnings()[0].0, "monitor.listen");
        assert!(
            config.warnings()[0]
                .1
                .starts_with("0.0.0.0:8222 is not a loopback")
        );
        let p = problems("[monitor]\nlisten = \"127.0.0.1:8222\"\nmax_connections = 0\n");
        assert_eq!(p[0].0, "monitor.max_connections");
    }

    #[test]
    fn handler_programs_are_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let config = |command: &str, extra: &str| {
            Config::parse(
                &format!("[handlers.h]\ncommand = [{command:?}]\n{extra}"),
                "test",
            )
            .unwrap()
            .program_problems()
        };
        let script_text = script.display().to_string();
        assert_eq!(
            config(&script_text, ""),
            [(
                "handlers.h.command".to_string(),
                format!("program {script_text:?}: is not executable")
            )]
        );
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert!(config(&script_text, "").is_empty());
        let dir_text = dir.path().display().to_string();
        assert!(config("./run.sh", &format!("cwd = {dir_text:?}")).is_empty());
        assert!(config("run.sh", &format!("env = {{ PATH = {dir_text:?} }}")).is_empty());
        assert_eq!(
            config("run.sh", "env = { PATH = \"/nonexistent\" }")[0].1,
            "program \"run.sh\" not found on PATH"
        );
        assert!(config("{examples}/x.py", "").is_empty());
        let embedded = Config::embedded().program_problems();
        assert!(embedded.is_empty(), "{embedded:?}");
    }

    #[test]
    fn bootstrap_user_must_be_a_hash() {
        let p =
            problems("[server.bootstrap_user]\nusername = \"a\"\npassword_hash = \"hunter2\"\n");
        assert_eq!(p[0].0, "server.bootstrap_user.password_hash");
    }
}
