//! The `Host` names an HTTP listener answers to: the defence against DNS rebinding.
//!
//! A web page at `http://evil.example:2223/` whose name the attacker then points at 127.0.0.1
//! talks to a loopback listener as if it were its own site: the browser sends
//! `Host: evil.example:2223` and `Origin: http://evil.example:2223`, which agree with each other.
//! So neither the monitor nor a WebSocket listener may trust a `Host` just because the `Origin`
//! matches it. A listener answers to:
//!
//! - IP literals (`127.0.0.1:2223`, `[::1]:2223`): no name, nothing to rebind;
//! - `localhost` and names under `.localhost` (RFC 6761: they never leave the machine);
//! - the names configured for it (`hosts = ["chat.example.org"]`).
//!
//! Pure: no sockets. `net/ws.rs` and `server/monitor.rs` ask [`Hosts::allows`].

use std::net::IpAddr;

/// Names a listener answers to, beside IP literals and `localhost`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    /// Configured names, lower case, without a port or a trailing dot.
    names: Vec<String>,
}

impl Hosts {
    /// The names configured for a listener (already checked by [`valid_name`]).
    pub fn new(names: &[String]) -> Hosts {
        Hosts {
            names: names.iter().map(|n| normalise(n).to_string()).collect(),
        }
    }

    /// Whether a `Host` header value (`name`, `name:port`, `1.2.3.4:80`, `[::1]:80`) names this
    /// listener.
    pub fn allows(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = normalise(name);
        name.eq_ignore_ascii_case("localhost")
            || name.to_ascii_lowercase().ends_with(".localhost")
            || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// A name without its trailing dot (`localhost.` is `localhost`).
fn normalise(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// The name or address of a `Host` value without its port; `None` when it is not of that shape.
pub fn host_name(host: &str) -> Option<&str> {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        return (port_ok && inside.parse::<std::net::Ipv6Addr>().is_ok()).then_some(inside);
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => host,
    };
    valid_name(name).then_some(name)
}

/// Whether `name` is a host name (letters, digits, `-`, `.`, 1 to 253 bytes) or an IPv4 address.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_localhost_and_configured_names_are_allowed() {
        let hosts = Hosts::new(&["Chat.Example.org".to_string()]);
        for ok in [
            "127.0.0.1:2223",
            "127.0.0.1",
            "[::1]:2223",
            "[::1]",
            "10.1.2.3:80",
            "localhost:2223",
            "LOCALHOST",
            "localhost.:2223",
            "app.localhost:2223",
            "chat.example.org",
            "chat.example.org.:443",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example:2223",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io:2223",
            "chat.example.org.evil.example",
            "",
            "x:y",
            "[::1",
            "[::1]x",
            "[evil.example]:80",
            "a b:80",
            "localhost:",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
        assert!(!Hosts::default().allows("chat.example.org"));
    }
}
