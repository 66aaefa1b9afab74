//! What a reload changes: a pure comparison of the running [`Config`] with a newly loaded one.
//!
//! The result says, for each part of the configuration, whether it is applied live (limits,
//! timeouts, handler types, peers, `[auth]`) or needs a restart (the listener and `[[listeners]]`,
//! `[monitor]`, `[federation]`, `[delivery]`, the server's name, the user store, the runtime
//! directory, the verifier pool). `server/reload.rs` carries it out; nothing
//! here touches a socket, a process or the clock, so the matrix is tested here.

use std::collections::BTreeMap;

use super::Config;

/// What differs between two configurations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Handler types only in the new configuration: started.
    pub handlers_added: Vec<String>,
    /// Handler types only in the old one: stopped once their requests in flight are answered.
    pub handlers_removed: Vec<String>,
    /// Handler types whose command, processes, env, cwd or socket changed: restarted in turn.
    pub handlers_restarted: Vec<String>,
    /// Handler types where only `max_inflight` changed: applied live.
    pub handlers_tuned: Vec<String>,
    /// Peers only in the new configuration: linked.
    pub peers_added: Vec<String>,
    /// Peers only in the old one: unlinked.
    pub peers_removed: Vec<String>,
    /// Peers whose address or secret changed: relinked.
    pub peers_changed: Vec<String>,
    /// `[server]` keys whose new value applies live.
    pub live: Vec<&'static str>,
    /// `[server]` keys whose new value needs a restart (the old value stays in effect).
    pub restart: Vec<&'static str>,
}

impl ConfigDiff {
    /// Whether nothing at all changed.
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }

    /// A one-line summary for the log and `STATUS=`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let mut list = |what: &str, items: &[String]| {
            if !items.is_empty() {
                parts.push(format!("{what} {}", items.join(",")));
            }
        };
        list("handlers added", &self.handlers_added);
        list("handlers removed", &self.handlers_removed);
        list("handlers restarted", &self.handlers_restarted);
        list("handlers tuned", &self.handlers_tuned);
        list("peers added", &self.peers_added);
        list("peers removed", &self.peers_removed);
        list("peers changed", &self.peers_changed);
        if !self.live.is_empty() {
            parts.push(format!("applied {}", self.live.join(",")));
        }
        if !self.restart.is_empty() {
            parts.push(format!("needs a restart: {}", self.restart.join(",")));
        }
        if parts.is_empty() {
            "no changes".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Keys of the new configuration that cannot change while running: the old values are kept in
/// `merged` (see [`merge_running`]).
fn restart_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.listen != new.listen {
        keys.push("server.listen");
    }
    if old.name != new.name {
        keys.push("server.name");
    }
    if old.users != new.users {
        keys.push("server.users");
    }
    if old.runtime_dir != new.runtime_dir {
        keys.push("server.runtime_dir");
    }
    if old.auth_threads != new.auth_threads {
        keys.push("server.auth_threads");
    }
    if old.auth_queue != new.auth_queue {
        keys.push("server.auth_queue");
    }
    if old.monitor != new.monitor {
        keys.push("monitor");
    }
    if old.federation != new.federation {
        keys.push("federation");
    }
    // The delivery store's thread took its path and limits when it opened the file.
    if old.delivery != new.delivery {
        keys.push("delivery");
    }
    // Listeners are bound at start (a reload reads the same certificates and files again).
    let bound = |c: &Config| format!("{:?}", c.listeners);
    if bound(old) != bound(new) {
        keys.push("listeners");
    }
    keys
}

fn live_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            keys.push(key);
        }
    };
    check(
        old.identify_timeout != new.identify_timeout,
        "server.identify_timeout_ms",
    );
    check(
        old.request_timeout != new.request_timeout,
        "server.request_timeout_ms",
    );
    check(
        old.handler_startup_timeout != new.handler_startup_timeout,
        "server.handler_startup_timeout_ms",
    );
    check(old.max_frame != new.max_frame, "server.max_frame_bytes");
    check(
        old.max_identify_frame != new.max_identify_frame,
        "server.max_identify_frame_bytes",
    );
    check(
        old.max_outbound != new.max_outbound,
        "server.max_outbound_bytes",
    );
    check(
        old.max_connections != new.max_connections,
        "server.max_connections",
    );
    check(
        old.max_chain_depth != new.max_chain_depth,
        "server.max_chain_depth",
    );
    check(
        old.max_pending_per_connection != new.max_pending_per_connection,
        "server.max_pending_per_connection",
    );
    check(
        old.idle_timeout != new.idle_timeout,
        "server.idle_timeout_ms",
    );
    check(
        old.max_connections_per_ip != new.max_connections_per_ip,
        "server.max_connections_per_ip",
    );
    check(
        old.max_connections_per_user != new.max_connections_per_user,
        "server.max_connections_per_user",
    );
    check(
        old.max_attached_per_connection != new.max_attached_per_connection,
        "server.max_attached_per_connection",
    );
    check(
        old.login_failures_per_ip != new.login_failures_per_ip,
        "server.login_failures_per_ip",
    );
    check(
        old.login_failures_per_user != new.login_failures_per_user,
        "server.login_failures_per_user",
    );
    check(
        old.shutdown_grace != new.shutdown_grace,
        "server.shutdown_grace_ms",
    );
    check(old.auth.handler != new.auth.handler, "auth.handler");
    check(
        old.auth.login_timeout != new.auth.login_timeout,
        "auth.auth_timeout_ms",
    );
    check(
        old.auth.max_logins != new.auth.max_logins,
        "auth.max_inflight",
    );
    check(old.streams != new.streams, "streams");
    keys
}

/// Names in `new` but not `old`, in `old` but not `new`, and in both with `same` false.
fn sets<T>(
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    same: impl Fn(&T, &T) -> bool,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let added = new.keys().filter(|k| !old.contains_key(*k)).cloned();
    let removed = old.keys().filter(|k| !new.contains_key(*k)).cloned();
    let changed = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|o| !same(o, v)))
        .map(|(k, _)| k.clone());
    (added.collect(), removed.collect(), changed.collect())
}

/// Compare the running configuration with a newly loaded one.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let (handlers_added, handlers_removed, changed) =
        sets(&old.handlers, &new.handlers, |a, b| a == b);
    let (handlers_tuned, handlers_restarted) = changed.into_iter().partition(|kind| {
        let mut a = old.handlers[kind].clone();
        a.max_inflight = new.handlers[kind].max_inflight;
        a.mode.max_inflight = new.handlers[kind].mode.max_inflight;
        a.access = new.handlers[kind].access.clone();
        a == new.handlers[kind]
    });
    let (peers_added, peers_removed, peers_changed) = sets(&old.peers, &new.peers, |a, b| {
        a.address == b.address && a.secret == b.secret
    });
    ConfigDiff {
        handlers_added,
        handlers_removed,
        handlers_restarted,
        handlers_tuned,
        peers_added,
        peers_removed,
        peers_changed,
        live: live_keys(old, new),
        restart: restart_keys(old, new),
    }
}

/// The configuration to run with after a reload: `new`, except for the keys that need a restart,
/// which keep their running values (and the command line's `--ready-file`).
pub fn merge_running(old: &Config, new: Config) -> Config {
    Config {
        listen: old.listen,
        name: old.name.clone(),
        users: old.users.clone(),
        runtime_dir: old.runtime_dir.clone(),
        auth_threads: old.auth_threads,
        auth_queue: old.auth_queue,
        ready_file: old.ready_file.clone(),
        monitor: old.monitor.clone(),
        listeners: old.listeners.clone(),
        federation: old.federation.clone(),
        delivery: old.delivery.clone(),
        ..new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "test").unwrap()
    }

    const BASE: &str = r#"
        [server]
        listen = "127.0.0.1:2222"
        request_timeout_ms = 1000
        [handlers.echo]
        command = ["echo.py"]
        [handlers.upper]
        command = ["upper.js"]
        [handlers.gone]
        socket = "/run/x.sock"
        [peers.b]
        address = "127.0.0.1:2223"
        secret = "0123456789abcdef"
        [peers.c]
        secret = "0123456789abcdef"
    "#;

    #[test]
    fn the_same_file_changes_nothing() {
        let d = diff(&config(BASE), &config(BASE));
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.summary(), "no changes");
    }

    #[test]
    fn every_row_of_the_matrix() {
        let new = r#"
            [server]
            listen = "127.0.0.1:2224"
            name = "renamed"
            request_timeout_ms = 2000
            idle_timeout_ms = 1000
            shutdown_grace_ms = 5
            [handlers.echo]
            command = ["echo.py"]
            max_inflight = 5
            [handlers.upper]
            command = ["upper.js", "--loud"]
            [handlers.added]
            command = ["new.py"]
            [peers.b]
            address = "127.0.0.1:2225"
            secret = "0123456789abcdef"
            [peers.d]
            secret = "0123456789abcdef"
        "#;
        let d = diff(&config(BASE), &config(new));
        assert_eq!(d.handlers_added, ["added"]);
        assert_eq!(d.handlers_removed, ["gone"]);
        assert_eq!(d.handlers_restarted, ["upper"]);
        assert_eq!(d.handlers_tuned, ["echo"]);
        assert_eq!(d.peers_added, ["d"]);
        assert_eq!(d.peers_removed, ["c"]);
        assert_eq!(d.peers_changed, ["b"]);
        assert_eq!(
            d.live,
            [
                "server.request_timeout_ms",
                "server.idle_timeout_ms",
                "server.shutdown_grace_ms"
            ]
        );
        assert_eq!(d.restart, ["server.listen", "server.name"]);
        assert_eq!(
            d.summary(),
            "handlers added added; handlers removed gone; handlers restarted upper; \
             handlers tuned echo; peers added d; peers removed c; peers changed b; \
             applied server.request_timeout_ms,server.idle_timeout_ms,server.shutdown_grace_ms; \
             needs a restart: server.listen,server.name"
        );
    }

    #[test]
    fn a_changed_secret_relinks_and_env_or_processes_restart() {
        let old =
            config("[handlers.t]\ncommand = [\"t\"]\n[peers.b]\nsecret = \"0123456789abcdef\"\n");
        let new = config(
            "[handlers.t]\ncommand = [\"t\"]\nprocesses = 2\n[peers.b]\nsecret = \"0123456789abcdeX\"\n",
        );
        let d = diff(&old, &new);
        assert_eq!(d.peers_changed, ["b"]);
        assert_eq!(d.handlers_restarted, ["t"]);
        let env = config("[handlers.t]\ncommand = [\"t\"]\nenv = { A = \"1\" }\n");
        assert_eq!(diff(&old, &env).handlers_restarted, ["t"]);
    }

    #[test]
    fn restart_keys_keep_their_running_values() {
        let old = config(BASE);
        let new = config(
            "[server]\nlisten = \"127.0.0.1:9\"\nname = \"x\"\nusers = \"/u\"\nauth_threads = 7\nidle_timeout_ms = 5\n",
        );
        let merged = merge_running(&old, new);
        assert_eq!(merged.listen, old.listen);
        assert_eq!(merged.name, old.name);
        assert_eq!(merged.users, old.users);
        assert_eq!(merged.auth_threads, old.auth_threads);
        assert_eq!(merged.idle_timeout, std::time::Duration::from_millis(5));
        assert!(
            merged.handlers.is_empty(),
            "handlers come from the new file"
        );
    }

    #[test]
    fn the_delivery_store_added_or_changed_by_a_reload_needs_a_restart() {
        let old = config(&format!("{BASE}\n[delivery]\nmax_per_user = 1\n"));
        let new = config(&format!(
            "{BASE}\n[delivery]\nmax_per_user = 5\npath = \"/x.db\"\n"
        ));
        let d = diff(&old, &new);
        assert_eq!(d.restart, ["delivery"]);
        assert!(
            d.summary().ends_with("needs a restart: delivery"),
            "{}",
            d.summary()
        );
        let merged = merge_running(&old, new);
        assert_eq!(merged.delivery, old.delivery);
        assert_eq!(merged.delivery.as_ref().unwrap().max_per_user, 1);
        // A type that stores, added to a server without a store, would need one.
        let stores = config(&format!(
            "{BASE}\n[handlers.mail]\ncommand = [\"m.py\"]\noffline = \"store\"\n"
        ));
        assert_eq!(diff(&config(BASE), &stores).restart, ["delivery"]);
        assert!(merge_running(&config(BASE), stores).delivery.is_none());
    }

    #[test]
    fn a_monitor_or_listener_added_by_a_reload_needs_a_restart() {
        let old = config(BASE);
        let new = config(&format!(
            "{BASE}\n[monitor]\nlisten = \"127.0.0.1:9100\"\n[[listeners]]\nname = \"ws\"\nkind = \"ws\"\naddress = \"127.0.0.1:9101\"\n"
        ));
        let d = diff(&old, &new);
        assert_eq!(d.restart, ["monitor", "listeners"]);
        assert!(
            d.summary().ends_with("needs a restart: monitor,listeners"),
            "{}",
            d.summary()
        );
        let merged = merge_running(&old, new);
        assert_eq!(merged.monitor, None, "the running value stays");
        assert!(merged.listeners.is_empty());
    }
}
