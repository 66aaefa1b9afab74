//! Handlers the broker dials (`[handlers.T] connect = "/path/handler.sock"`), as the original
//! daemon did: each such handler listens on its own Unix socket and the broker opens a new
//! connection to it for every request (`correlate = "connection"`). This module knows the paths and
//! makes the non-blocking connects; the server registers the streams in its loop and the router
//! decides when to dial and what the first frame back answers.
//!
//! A request goes only to a socket of a user allowed to serve the type
//! ([`crate::net::local::uid_allowed`]: root, this daemon's user, or `handlers.T.uid`): the
//! socket file's owner is checked before the connect, and the credentials of the process that
//! listens (`SO_PEERCRED`, fixed when it called `listen`) right after it, so that a socket swapped
//! in between is caught too.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use mio::net::UnixStream;

use crate::net::local::{allowed_text, peer_cred, uid_allowed};

/// The sockets of every dialled handler type.
#[derive(Debug, Default)]
pub struct Dialer {
    /// Type → (socket path, `handlers.T.uid`).
    targets: BTreeMap<String, (PathBuf, Option<u32>)>,
}

impl Dialer {
    /// No dialled types.
    pub fn new() -> Self {
        Dialer::default()
    }

    /// Dial `path` for requests of type `kind`; `uid` is `handlers.T.uid`, another user allowed
    /// to own the socket.
    pub fn add(&mut self, kind: &str, path: &Path, uid: Option<u32>) {
        self.targets
            .insert(kind.to_string(), (path.to_path_buf(), uid));
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
        self.targets.get(kind).is_some_and(|(p, _)| p.exists())
    }

    /// Start a connection to the handler of `kind`. A Unix socket connect completes or fails at
    /// once; a full listen backlog (`WouldBlock`) is [`DialError::busy`], worth trying again. The
    /// error text says why, for the client's `handler_unavailable`.
    ///
    /// A socket owned by a user who may not serve the type is not dialled (`the socket is owned by
    /// uid 65534, not uid 0 (root, this daemon's)`), nor kept if the process listening on it runs
    /// as such a user.
    pub fn connect(&self, kind: &str) -> Result<UnixStream, DialError> {
        self.try_connect(kind).map_err(|why| DialError {
            busy: why.ends_with(BUSY),
            why,
        })
    }

    fn try_connect(&self, kind: &str) -> Result<UnixStream, String> {
        let (path, configured) = self
            .targets
            .get(kind)
            .ok_or_else(|| format!("{kind:?} is not a dialled handler type"))?;
        let meta = std::fs::metadata(path).map_err(|e| describe(path, &e))?;
        let refuse = |why: String| format!("cannot connect to {}: {why}", path.display());
        if !meta.file_type().is_socket() {
            return Err(refuse("it is not a socket".into()));
        }
        if !uid_allowed(meta.uid(), *configured) {
            return Err(refuse(format!(
                "the socket is owned by uid {}, not {}",
                meta.uid(),
                allowed_text(*configured)
            )));
        }
        let stream = UnixStream::connect(path).map_err(|e| describe(path, &e))?;
        match peer_cred(stream.as_raw_fd()) {
            Ok((_, uid)) if uid_allowed(uid, *configured) => Ok(stream),
            Ok((_, uid)) => Err(refuse(format!(
                "the process listening there runs as uid {uid}, not {}",
                allowed_text(*configured)
            ))),
            Err(e) => Err(refuse(format!(
                "cannot read the listener's credentials: {e}"
            ))),
        }
    }
}

/// Why a dial failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialError {
    /// For the client's `handler_unavailable` and the log.
    pub why: String,
    /// The handler's listen queue was full: it is there, only busy; try again shortly.
    pub busy: bool,
}

/// How a full listen queue is said.
const BUSY: &str = "its listen queue is full";

fn describe(path: &Path, e: &io::Error) -> String {
    let why = match e.kind() {
        io::ErrorKind::NotFound => "no socket there".to_string(),
        io::ErrorKind::ConnectionRefused => "nothing is listening".to_string(),
        io::ErrorKind::WouldBlock => BUSY.to_string(),
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
        dialer.add("h", &path, None);
        assert!(dialer.dials("h") && !dialer.dials("x"));
        assert!(!dialer.socket_exists("h"));
        let e = dialer.connect("h").unwrap_err();
        assert_eq!(
            e.why,
            format!("cannot connect to {}: no socket there", path.display())
        );
        assert!(!e.busy);
        // A socket file nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let e = dialer.connect("h").unwrap_err();
        assert_eq!(
            e.why,
            format!("cannot connect to {}: nothing is listening", path.display())
        );
        let listener = std::os::unix::net::UnixListener::bind(dir.path().join("ok.sock")).unwrap();
        dialer.add("ok", &dir.path().join("ok.sock"), None);
        assert!(dialer.socket_exists("ok"));
        dialer.connect("ok").unwrap();
        listener.accept().unwrap();
        // Not a socket at all.
        std::fs::write(dir.path().join("file"), b"").unwrap();
        dialer.add("file", &dir.path().join("file"), None);
        let e = dialer.connect("file").unwrap_err();
        assert!(e.why.ends_with(": it is not a socket"), "{e:?}");
    }
}
