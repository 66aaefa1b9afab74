//! What passes from a running daemon to the new process of a hot upgrade (`server/upgrade.rs`):
//! the command line it was started with ([`Invocation`]), the listening sockets (inherited: the
//! child gets exactly those descriptors with `FD_CLOEXEC` cleared, and nothing else), and over
//! an inherited socket pair one JSON line ([`Message`]) naming each descriptor, the in-memory
//! resume-token key, the watchdog period and an owned runtime directory. The socket pair then
//! carries the child's readiness (`ready`, `missing a,b`, `error …`), the logged-out sessions
//! (`server/relay.rs`) and the old process's `go`, then the logouts while the old one drains.
//!
//! The key travels only over the socket pair: never in argv or the environment, which other
//! processes can read in /proc. The only thing on the child's command line is the number of
//! the socket pair's descriptor (`--upgrade-fd=N`, hidden).
//!
//! It must not: leave an inherited descriptor open across the child's own `exec`s (its handlers),
//! take a descriptor the message does not name, or accept a descriptor that is not the kind of
//! socket its name says.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use log::warn;
use serde::{Deserialize, Serialize};

use crate::auth::resume::TokenKey;

/// The hidden `serve` flag that names the socket pair's descriptor.
pub const UPGRADE_FD_FLAG: &str = "--upgrade-fd";
/// How long the child waits for the handover message at its start.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest handover message or status line.
pub(super) const MAX_LINE: usize = 64 * 1024;
/// Environment the child must not inherit: it describes the old process (its pid), not the
/// child; the watchdog period comes in the message instead.
const NOT_INHERITED: &[&str] = &[
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
];

/// How the daemon was started: the binary's path as it was named at start (not
/// `/proc/self/exe`, which names the old, possibly deleted, file once a package manager
/// replaced it) and the arguments after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The binary started by an upgrade.
    pub exe: PathBuf,
    /// Its arguments (without a previous upgrade's `--upgrade-fd`).
    pub args: Vec<OsString>,
}

impl Invocation {
    /// From this process's `argv`, resolved now: `argv[0]` with a `/` against the working
    /// directory, else along `PATH`, else `/proc/self/exe` as it is now.
    pub fn from_args(argv: &[OsString]) -> Invocation {
        let name = argv.first().map(PathBuf::from).unwrap_or_default();
        let exe = resolve(&name, std::env::var_os("PATH").as_deref())
            .or_else(|| std::fs::read_link("/proc/self/exe").ok())
            .unwrap_or(name);
        let mut args = Vec::new();
        let mut rest = argv.iter().skip(1);
        while let Some(arg) = rest.next() {
            if arg == UPGRADE_FD_FLAG {
                rest.next();
                continue;
            }
            if arg
                .to_str()
                .is_some_and(|a| a.starts_with(&format!("{UPGRADE_FD_FLAG}=")))
            {
                continue;
            }
            args.push(arg.clone());
        }
        Invocation { exe, args }
    }
}

/// `name` as an absolute path: relative to the working directory if it has a `/`, else the
/// first executable of that name along `path`.
fn resolve(name: &Path, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.as_os_str().is_empty() {
        return None;
    }
    if name.is_absolute() {
        return Some(name.to_path_buf());
    }
    if name.components().count() > 1 || name.to_string_lossy().contains('/') {
        return std::env::current_dir().ok().map(|d| d.join(name));
    }
    std::env::split_paths(path?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.is_absolute()
                && std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// What a passed descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FdRole {
    /// A client listener (`client` for `[server] listen`, else the `[[listeners]]` name).
    Listener,
    /// `[monitor] listen`.
    Monitor,
    /// The socket a `socket = "..."` handler type connects to (named by its type).
    Handler,
}

/// One descriptor the child inherits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassedFd {
    /// Its number (the same in the child).
    pub fd: RawFd,
    /// What it is.
    pub role: FdRole,
    /// Its name.
    pub name: String,
}

/// The handover message, one JSON line on the socket pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// The old process.
    pub parent: u32,
    /// The inherited descriptors.
    pub fds: Vec<PassedFd>,
    /// The resume-token key in hex, when `[auth] token_secret_file` is unset (else the child
    /// reads the file).
    pub token_key: Option<String>,
    /// The service manager's watchdog period (`WATCHDOG_USEC`), if it watches.
    pub watchdog_usec: Option<u64>,
    /// A runtime directory the old process created itself (no `runtime_dir`, no
    /// `$RUNTIME_DIRECTORY`): the child takes it over, and removes it when it stops.
    pub runtime_dir: Option<PathBuf>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Message {
    /// The key as the message carries it.
    pub fn key_text(key: &TokenKey) -> String {
        hex(key.bytes())
    }
}

/// Start `invocation` with `message` waiting on its socket pair and exactly `message.fds` (and
/// the pair) inherited. Returns the child and the old process's end of the pair (non-blocking).
pub fn spawn(invocation: &Invocation, message: &Message) -> io::Result<(Child, UnixStream)> {
    let (mut ours, theirs) = UnixStream::pair()?;
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    // A fresh pair's buffer takes the few kilobytes at once: this never waits.
    ours.set_nonblocking(true)?;
    ours.write_all(&line)?;
    let link = theirs.as_raw_fd();
    let mut keep: Vec<RawFd> = message.fds.iter().map(|p| p.fd).collect();
    keep.push(link);
    let mut command = Command::new(&invocation.exe);
    command
        .args(&invocation.args)
        .arg(format!("{UPGRADE_FD_FLAG}={link}"))
        .stdin(Stdio::null());
    for var in NOT_INHERITED {
        command.env_remove(var);
    }
    // SAFETY: between fork and exec only fcntl(2), which is async-signal-safe; `keep` was
    // allocated before the fork and is only read.
    unsafe {
        command.pre_exec(move || {
            for fd in &keep {
                if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(theirs);
    Ok((child, ours))
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(2) on a descriptor number; no memory is involved.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

/// The child's side: what the old process handed over.
#[derive(Debug)]
pub struct Inherited {
    /// The socket pair to the old process.
    pub link: UnixStream,
    /// The old process.
    pub parent: u32,
    fds: Vec<(OwnedFd, FdRole, String)>,
    /// The resume-token key of the old process, if it had no key file.
    pub token_key: Option<TokenKey>,
    /// The watchdog period.
    pub watchdog: Option<Duration>,
    /// A runtime directory to take over.
    pub runtime_dir: Option<PathBuf>,
}

fn bad(text: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("upgrade handover: {text}"),
    )
}

impl Inherited {
    /// Read the handover from descriptor `fd` (`--upgrade-fd`), waiting a bounded time; every
    /// descriptor it names is checked and marked close-on-exec again.
    pub fn receive(fd: RawFd) -> io::Result<Inherited> {
        if fd < 3 || !is_open(fd) {
            return Err(bad(format!(
                "{UPGRADE_FD_FLAG}={fd} is not an open descriptor"
            )));
        }
        set_cloexec(fd)?;
        // SAFETY: the descriptor was inherited for this purpose and is owned by nobody else.
        let link = unsafe { UnixStream::from_raw_fd(fd) };
        link.set_read_timeout(Some(RECEIVE_TIMEOUT))?;
        let mut input = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            if let Some(end) = input.iter().position(|b| *b == b'\n') {
                break end;
            }
            if input.len() > MAX_LINE {
                return Err(bad("message too long".into()));
            }
            let n = (&link)
                .read(&mut buf)
                .map_err(|e| bad(format!("reading the message: {e}")))?;
            if n == 0 {
                return Err(bad(
                    "the old process closed the link before the message".into()
                ));
            }
            input.extend_from_slice(&buf[..n]);
        };
        let message: Message =
            serde_json::from_slice(&input[..end]).map_err(|e| bad(e.to_string()))?;
        link.set_read_timeout(None)?;
        let mut fds = Vec::new();
        for p in &message.fds {
            if p.fd < 3
                || p.fd == fd
                || fds
                    .iter()
                    .any(|(f, _, _): &(OwnedFd, _, _)| f.as_raw_fd() == p.fd)
            {
                return Err(bad(format!("descriptor {} named twice or reserved", p.fd)));
            }
            if !is_open(p.fd) {
                return Err(bad(format!("descriptor {} ({}) is not open", p.fd, p.name)));
            }
            set_cloexec(p.fd)?;
            // SAFETY: inherited for this purpose, named once (checked above), owned from here.
            fds.push((
                unsafe { OwnedFd::from_raw_fd(p.fd) },
                p.role,
                p.name.clone(),
            ));
        }
        let token_key = match &message.token_key {
            Some(text) => Some(TokenKey::from_bytes(
                unhex(text).ok_or_else(|| bad("token key is not hex".into()))?,
            )),
            None => None,
        };
        Ok(Inherited {
            link,
            parent: message.parent,
            fds,
            token_key,
            watchdog: message.watchdog_usec.map(Duration::from_micros),
            runtime_dir: message.runtime_dir,
        })
    }

    fn take(&mut self, role: FdRole, name: &str) -> Option<OwnedFd> {
        let i = self
            .fds
            .iter()
            .position(|(_, r, n)| *r == role && n == name)?;
        Some(self.fds.remove(i).0)
    }

    /// The listening TCP socket passed as `role`/`name`, if any (non-blocking).
    pub fn take_tcp(
        &mut self,
        role: FdRole,
        name: &str,
    ) -> io::Result<Option<mio::net::TcpListener>> {
        let Some(fd) = self.take(role, name) else {
            return Ok(None);
        };
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        let listener =
            super::activation::tcp_listener(raw, name).map_err(|e| bad(e.to_string()))?;
        Ok(Some(mio::net::TcpListener::from_std(listener)))
    }

    /// The listening Unix socket of handler type `kind`, if passed (non-blocking).
    pub fn take_unix(&mut self, kind: &str) -> io::Result<Option<mio::net::UnixListener>> {
        let Some(fd) = self.take(FdRole::Handler, kind) else {
            return Ok(None);
        };
        let listener = std::os::unix::net::UnixListener::from(fd);
        let domain = super::activation::sockopt(listener.as_raw_fd(), libc::SO_DOMAIN)?;
        let listening = super::activation::sockopt(listener.as_raw_fd(), libc::SO_ACCEPTCONN)?;
        if domain != libc::AF_UNIX || listening == 0 {
            return Err(bad(format!(
                "handler socket {kind}: not a listening Unix socket"
            )));
        }
        listener.set_nonblocking(true)?;
        Ok(Some(mio::net::UnixListener::from_std(listener)))
    }

    /// Close what no listener took, saying so.
    pub fn close_rest(&mut self) {
        for (fd, role, name) in self.fds.drain(..) {
            warn!(
                "upgrade: descriptor {} ({role:?} {name:?}) matches nothing configured; closing it",
                fd.as_raw_fd()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_invocation_drops_a_previous_upgrade_fd_and_resolves_the_path() {
        let argv: Vec<OsString> = [
            "besterd-x",
            "serve",
            "--upgrade-fd=7",
            "--config",
            "c",
            "--upgrade-fd",
            "9",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let inv = Invocation::from_args(&argv);
        assert_eq!(inv.args, ["serve", "--config", "c"].map(OsString::from));
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        assert_eq!(resolve(Path::new("tool"), Some(&path)), Some(exe.clone()));
        assert_eq!(resolve(&exe, None), Some(exe));
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(resolve(Path::new("./a/b"), None), Some(cwd.join("./a/b")));
    }

    #[test]
    fn keys_round_trip_through_hex() {
        let key = TokenKey::random();
        let text = Message::key_text(&key);
        assert_eq!(unhex(&text).unwrap(), key.bytes());
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
