//! Handlers the broker dials (`[handlers.T] connect = "/path/handler.sock"`), as the original
//! daemon did: each such handler listens on its own Unix socket and the broker opens a new
//! connection to it for every request (`correlate = "connection"`). This module knows the paths and
//! makes the non-blocking connects; the server registers the streams in its loop and the router
//! decides when to dial and what the first frame back answers.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use mio::net::UnixStream;

/// The sockets of every dialled handler type.
#[derive(Debug, Default)]
pub struct Dialer {
    targets: BTreeMap<String, PathBuf>,
}

impl Dialer {
    /// No dialled types.
    pub fn new() -> Self {
        Dialer::default()
    }

    /// Dial `path` for requests of type `kind`.
    pub fn add(&mut self, kind: &str, path: &Path) {
        self.targets.insert(kind.to_string(), path.to_path_buf());
    }

    /// Stop dialling for `kind` (a reload removed or changed it).
    pub fn remove(&mut self, kind: &str) {
        self.targets.remove(kind);
    }

    /// Whether `kind` is a dialled type.
    pub fn dials(&self, kind: &str) -> bool {
        self.targets.contains_key(kind)
    }

    /// Whether the handler of `kind` has created its socket yet (for startup readiness only).
    pub fn socket_exists(&self, kind: &str) -> bool {
        self.targets.get(kind).is_some_and(|p| p.exists())
    }

    /// Start a connection to the handler of `kind`. A Unix socket connect completes or fails at
    /// once; a full listen backlog (`WouldBlock`) counts as a failure. The error text says why,
    /// for the client's `handler_unavailable`.
    pub fn connect(&self, kind: &str) -> Result<UnixStream, String> {
        let path = self
            .targets
            .get(kind)
            .ok_or_else(|| format!("{kind:?} is not a dialled handler type"))?;
        UnixStream::connect(path).map_err(|e| describe(path, &e))
    }
}

fn describe(path: &Path, e: &io::Error) -> String {
    let why = match e.kind() {
        io::ErrorKind::NotFound => "no socket there".to_string(),
        io::ErrorKind::ConnectionRefused => "nothing is listening".to_string(),
        io::ErrorKind::WouldBlock => "its listen queue is full".to_string(),
        _ => e.to_string(),
    };
    format!("cannot connect to {}: {why}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sock");
        let mut dialer = Dialer::new();
        dialer.add("h", &path);
        assert!(dialer.dials("h") && !dialer.dials("x"));
        assert!(!dialer.socket_exists("h"));
        let e = dialer.connect("h").unwrap_err();
        assert_eq!(
            e,
            format!("cannot connect to {}: no socket there", path.display())
        );
        // A socket file nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let e = dialer.connect("h").unwrap_err();
        assert_eq!(
            e,
            format!("cannot connect to {}: nothing is listening", path.display())
        );
        let listener = std::os::unix::net::UnixListener::bind(dir.path().join("ok.sock")).unwrap();
        dialer.add("ok", &dir.path().join("ok.sock"));
        assert!(dialer.socket_exists("ok"));
        dialer.connect("ok").unwrap();
        listener.accept().unwrap();
    }
}
