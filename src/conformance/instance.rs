//! One run of the handler program under test, started the way besterd starts a handler: a fresh
//! private (0700) directory, a Unix socket in it that only this user can connect to (0600), the
//! program's environment holding `BESTER_SOCKET`, `BESTER_TYPE` and `BESTER_SERVER` (less the
//! service manager's variables), stdin `/dev/null`. With `--connect` the program listens on the
//! given socket instead and every request is sent on a connection of its own, dialled through the
//! same [`Dialer`] the broker uses (the socket's owner and the listening process's user checked).
//!
//! [`Conn`] is the broker's end of one connection: bytes written as given (in pieces, each read by
//! the handler before the next is sent) and frames read back through the broker's own decoder and
//! parser ([`FrameDecoder`], [`parse_handler_message`]), every read and write bounded by a
//! deadline. A push the handler makes is answered with a delivery report, as besterd answers it.
//! Nothing here waits for ever.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::handler::Dialer;
use crate::handler::supervisor::STRIPPED_ENV;
use crate::net::local::{bind_private, peer_cred, uid_allowed};
use crate::protocol::ErrorCode;
use crate::protocol::FrameDecoder;
use crate::protocol::handler::{Command as Cmd, handler_delivery_report, parse_handler_message};
use crate::protocol::message::Status;
use crate::protocol::peer::{ServerReport, ServerReports};
use crate::{fsutil, protocol};

/// The largest frame besterd exchanges with a handler (`server.max_frame_bytes`, default).
pub const MAX_FRAME: usize = 1 << 20;
/// How long besterd waits for a started handler to connect (`handler_startup_timeout_ms`).
pub const STARTUP: Duration = Duration::from_secs(10);
/// The name the kit gives itself as `BESTER_SERVER` (the server the vectors' requests come from).
pub const SERVER: &str = "node-a";
/// Longest excerpt of a frame quoted in a failure line.
const EXCERPT: usize = 300;

/// How the program is run and reached.
#[derive(Debug, Clone)]
pub struct Program {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// `BESTER_TYPE`.
    pub kind: String,
    /// `Some(path)`: the program listens there and is dialled per request (`connect = path`).
    pub dial: Option<PathBuf>,
    /// `correlate = "order"`: one request in flight, the next frame answers it (token or not).
    pub order: bool,
}

/// The program's directory and socket, removed when it is dropped.
struct Place {
    dir: PathBuf,
    listener: Option<UnixListener>,
    dialer: Option<(Dialer, String, PathBuf)>,
    /// The socket found at the `connect` path before the program started, if any.
    before: Option<(u64, u64)>,
}

impl Drop for Place {
    fn drop(&mut self) {
        // The program's own socket goes, so that the next run binds afresh; one that was there
        // before it started is not ours to remove.
        if let Some((_, _, path)) = &self.dialer
            && let Some(now) = socket_inode(path)
            && Some(now) != self.before
        {
            let _ = fs::remove_file(path);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A running handler program.
pub struct Instance {
    child: Child,
    exit: Option<ExitStatus>,
    place: Place,
    order: bool,
}

impl Instance {
    /// Start the program with these extra environment variables (a vector case's `env`).
    pub fn start(program: &Program, env: &BTreeMap<String, String>) -> Result<Instance, String> {
        let parent = fs::canonicalize(std::env::temp_dir())
            .map_err(|e| format!("the kit cannot use the temp directory: {e}"))?;
        let dir = fsutil::fresh_dir(&parent, "besterd-handler-test-")
            .map_err(|e| format!("the kit cannot make its directory: {e}"))?;
        let mut place = Place {
            dir: dir.clone(),
            listener: None,
            dialer: None,
            before: None,
        };
        let socket = match &program.dial {
            Some(path) => {
                place.before = socket_inode(path);
                let mut dialer = Dialer::new();
                dialer.add(&program.kind, path, None);
                place.dialer = Some((dialer, program.kind.clone(), path.clone()));
                path.clone()
            }
            None => {
                let mut path = dir.join(format!("{}.sock", program.kind));
                if path.as_os_str().len() >= 100 {
                    path = dir.join("handler.sock");
                }
                let listener = bind_private(&path)
                    .map_err(|e| format!("the kit cannot listen on {}: {e}", path.display()))?;
                // SAFETY: the descriptor is the listener's own, handed over whole.
                let listener = unsafe { UnixListener::from_raw_fd(listener.into_raw_fd()) };
                place.listener = Some(listener);
                path
            }
        };
        let mut cmd = Command::new(&program.argv[0]);
        cmd.args(&program.argv[1..])
            .envs(env)
            .env("BESTER_SOCKET", &socket)
            .env("BESTER_TYPE", &program.kind)
            .env("BESTER_SERVER", SERVER)
            .stdin(Stdio::null());
        for var in STRIPPED_ENV {
            cmd.env_remove(var);
        }
        // The kit's stdout carries its report: the program's stdout goes to stderr with its logs.
        if let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() {
            cmd.stdout(Stdio::from(fd));
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.argv[0]))?;
        Ok(Instance {
            child,
            exit: None,
            place,
            order: program.order,
        })
    }

    /// Whether the program is dialled per request.
    pub fn dialled(&self) -> bool {
        self.place.dialer.is_some()
    }

    /// The program's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Wait (polling) until the program exits or `deadline` passes.
    pub fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
        }
    }

    /// `exited with status 1`, `was killed by signal 11`, or `is still running`.
    pub fn state(&mut self) -> String {
        match self.exited() {
            Some(status) => describe_exit(status),
            None => "is still running".to_string(),
        }
    }

    /// Send SIGTERM (how besterd stops a handler).
    pub fn terminate(&mut self) {
        if self.exited().is_none()
            && let Ok(pid) = libc::pid_t::try_from(self.child.id())
        {
            // SAFETY: kill(2) on our own child, which has not been reaped (try_wait said so).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }

    /// The first connection of the program (socket mode) or a new dialled connection.
    pub fn connect(&mut self) -> Result<Conn, String> {
        let deadline = Instant::now() + STARTUP;
        if self.place.dialer.is_some() {
            return self.dial(deadline);
        }
        let listener = self
            .place
            .listener
            .as_ref()
            .expect("socket mode has a listener")
            .try_clone()
            .map_err(|e| format!("the kit cannot use its socket: {e}"))?;
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    match peer_cred(stream.as_raw_fd()) {
                        Ok((_, uid)) if uid_allowed(uid, None) => {}
                        Ok((pid, uid)) => {
                            eprintln!(
                                "handler-test: refused a connection from uid {uid} (pid {pid})"
                            );
                            continue;
                        }
                        Err(e) => {
                            return Err(format!("cannot read a connection's credentials: {e}"));
                        }
                    }
                    stream
                        .set_nonblocking(false)
                        .map_err(|e| format!("the kit cannot use the connection: {e}"))?;
                    return Ok(Conn::new(stream, self.order));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("the kit cannot accept: {e}")),
            }
            if let Some(status) = self.exited() {
                return Err(format!("{} before connecting", describe_exit(status)));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "did not connect to BESTER_SOCKET within {} ms",
                    STARTUP.as_millis()
                ));
            }
            wait_readable(
                listener.as_fd(),
                deadline.min(Instant::now() + Duration::from_millis(20)),
            );
        }
    }

    /// Dial the program's socket as besterd does, retrying until it listens (startup only).
    fn dial(&mut self, deadline: Instant) -> Result<Conn, String> {
        loop {
            let (dialer, kind, _) = self.place.dialer.as_ref().expect("dial mode");
            let error = match dialer.connect(kind) {
                Ok(stream) => {
                    // SAFETY: the descriptor is the stream's own, handed over whole.
                    let stream = unsafe { UnixStream::from_raw_fd(stream.into_raw_fd()) };
                    stream
                        .set_nonblocking(false)
                        .map_err(|e| format!("the kit cannot use the connection: {e}"))?;
                    return Ok(Conn::new(stream, true));
                }
                Err(e) => e.why,
            };
            let waiting =
                error.ends_with("no socket there") || error.ends_with("nothing is listening");
            if !waiting {
                return Err(error);
            }
            if let Some(status) = self.exited() {
                return Err(format!(
                    "{} before listening ({error})",
                    describe_exit(status)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "did not listen within {} ms ({error})",
                    STARTUP.as_millis()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The (device, inode) of the socket of this user at `path`, if there is one.
fn socket_inode(path: &Path) -> Option<(u64, u64)> {
    let meta = fs::symlink_metadata(path).ok()?;
    (meta.file_type().is_socket() && meta.uid() == fsutil::euid()).then(|| (meta.dev(), meta.ino()))
}

/// `exited with status 1` or `was killed by signal 9`.
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended ({status})"),
    }
}

/// poll(2) for readability until `deadline`.
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, deadline: Instant) {
    let ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        .min(1000) as libc::c_int;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// A frame the handler sent, accepted by besterd's parser.
#[derive(Debug, Clone)]
pub struct Frame {
    /// `header.request`, if any.
    pub request: Option<String>,
    /// No `request` on a connection correlated by token: a push.
    pub push: bool,
    /// Its command is `reply`.
    pub reply: bool,
    /// The body as JSON, for comparisons.
    pub json: Value,
    /// The body as it came (for failure lines).
    pub text: String,
}

/// What reading from the handler gave.
#[derive(Debug)]
pub enum Next {
    /// A frame besterd accepts.
    Frame(Frame),
    /// The handler closed the connection (between frames).
    Closed,
    /// Nothing by the deadline.
    Silent,
    /// Something besterd refuses (the text says what the handler did).
    Broken(String),
}

/// The broker's end of one connection.
pub struct Conn {
    stream: UnixStream,
    input: Vec<u8>,
    decoder: FrameDecoder,
    /// Correlated by order or by connection: a frame without a token answers the request in
    /// flight (it is not a push).
    tokenless: bool,
}

impl Conn {
    fn new(stream: UnixStream, tokenless: bool) -> Conn {
        Conn {
            stream,
            input: Vec::new(),
            decoder: FrameDecoder::new(MAX_FRAME),
            tokenless,
        }
    }

    /// A second handle on the socket (for a writer thread).
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        self.stream.try_clone()
    }

    /// Write bytes, giving up after `timeout` (a handler that stops reading).
    pub fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), String> {
        let _ = self.stream.set_write_timeout(Some(timeout));
        match self.stream.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(format!(
                    "stopped reading: a write did not complete within {} ms",
                    timeout.as_millis()
                ))
            }
            Err(e) => Err(format!("closed the connection ({e})")),
        }
    }

    /// Write bytes in pieces, one write each; before the next piece, wait until the handler has
    /// read the last one (the socket's unread count, `SIOCOUTQ`, is back to 0), so that each of
    /// its reads returns exactly one piece: a split it must cope with.
    pub fn write_pieces(&mut self, pieces: &[&[u8]], timeout: Duration) -> Result<(), String> {
        for (i, piece) in pieces.iter().enumerate() {
            self.write(piece, timeout)?;
            if i + 1 < pieces.len() {
                self.wait_read(Instant::now() + timeout, timeout)?;
            }
        }
        Ok(())
    }

    /// Poll until the handler has read everything written so far.
    fn wait_read(&self, deadline: Instant, timeout: Duration) -> Result<(), String> {
        loop {
            let mut unread: libc::c_int = 0;
            // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int, the bytes the peer has not read yet.
            let rc = unsafe { libc::ioctl(self.stream.as_raw_fd(), libc::TIOCOUTQ, &mut unread) };
            if rc != 0 || unread == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "stopped reading: {unread} bytes of a frame still unread after {} ms",
                    timeout.as_millis()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Close our end.
    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// The next frame, by `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Next {
        let mut scratch = [0u8; 64 * 1024];
        loop {
            match self.decoder.decode(&self.input) {
                Ok(Some((used, body))) => {
                    let body = body.to_vec();
                    self.input.drain(..used);
                    match self.accept(&body) {
                        // A group change or presence query: answered with its report, and
                        // neither an answer nor a push to the checks.
                        None => continue,
                        Some(next) => return next,
                    }
                }
                Ok(None) => {}
                Err(protocol::FrameError::TooLarge { len, max }) => {
                    return Next::Broken(format!(
                        "sent a frame of {len} bytes, over the limit of {max} bytes \
                         (besterd disconnects a handler for that)"
                    ));
                }
                // The length-prefix decoder never says these (WebSocket messages and
                // inflated bodies do).
                Err(e) => {
                    return Next::Broken(format!("sent a frame besterd refuses: {e}"));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Silent;
            }
            let _ = self.stream.set_read_timeout(Some(left));
            match self.stream.read(&mut scratch) {
                Ok(0) if self.input.is_empty() => return Next::Closed,
                Ok(0) => {
                    return Next::Broken(format!(
                        "closed the connection in the middle of a frame ({} bytes of it sent)",
                        self.input.len()
                    ));
                }
                Ok(n) => self.input.extend_from_slice(&scratch[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Next::Silent;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Next::Closed,
                Err(e) => return Next::Broken(format!("broke the connection ({e})")),
            }
        }
    }

    /// Judge one frame as besterd would; answer a push with its report (`None`: a frame to the
    /// server itself, `groupAdd`, `groupRemove` or `presence`, that answers nothing).
    fn accept(&mut self, body: &[u8]) -> Option<Next> {
        let text = String::from_utf8_lossy(body).into_owned();
        let msg = match parse_handler_message(body) {
            Ok(msg) => msg,
            Err(e) => {
                return Some(Next::Broken(format!(
                    "sent a frame besterd refuses ({}: {}): {}",
                    e.code.as_str(),
                    e.error,
                    excerpt(&text)
                )));
            }
        };
        let push = msg.request.is_none() && !self.tokenless;
        // Group changes and presence queries are pushes without a payload.
        let to_server = matches!(
            *msg.command,
            Cmd::GroupAdd(_) | Cmd::GroupRemove(_) | Cmd::Presence(_)
        );
        if to_server && msg.request.is_some() {
            return Some(Next::Broken(format!(
                "sent groupAdd, groupRemove or presence with a request (besterd: \
                 bad_handler_reply, they are sent without one): {}",
                excerpt(&text)
            )));
        }
        if msg.status == Status::Ok && msg.payload.is_none() && !to_server {
            return Some(Next::Broken(format!(
                "sent an ok answer without a payload (besterd: bad_handler_reply, \"an ok answer \
                 needs a payload\"): {}",
                excerpt(&text)
            )));
        }
        let mut report = None;
        if push {
            let id = msg.id.as_deref();
            report = match &*msg.command {
                Cmd::SendClients(to) => Some(handler_delivery_report(
                    id,
                    Some(&[]),
                    Some(&to.users),
                    None,
                )),
                // Nobody is online in a test: no group has members.
                Cmd::GroupAdd(_) | Cmd::GroupRemove(_) => {
                    Some(crate::protocol::groups::handler_report::<()>(id, None))
                }
                Cmd::Presence(_) => {
                    let none = crate::protocol::groups::PresenceAnswer::default();
                    Some(crate::protocol::groups::handler_report(id, Some(&none)))
                }
                Cmd::SendServers(servers) => {
                    let failed: ServerReports = servers
                        .iter()
                        .map(|s| {
                            let why = format!("{s:?} is not a configured peer (this is a test)");
                            (s.clone(), ServerReport::failed(ErrorCode::UnknownPeer, why))
                        })
                        .collect();
                    Some(handler_delivery_report(id, None, None, Some(&failed)))
                }
                Cmd::Reply | Cmd::SendHandler(_) | Cmd::Redirect { .. } => {
                    return Some(Next::Broken(format!(
                        "sent a frame with no request token that is not a push (besterd: \
                         bad_handler_reply, \"a push (no request) must use sendClients, \
                         sendServers, groupAdd, groupRemove or presence\"): {}",
                        excerpt(&text)
                    )));
                }
            };
        }
        let request = msg.request.as_deref().map(str::to_string);
        let reply = *msg.command == Cmd::Reply;
        let json = canonical(&msg);
        if let Some(report) = report {
            let mut frame = Vec::new();
            protocol::encode_frame(&report, &mut frame);
            // A handler that stopped reading shows up in the checks that follow.
            let _ = self.write(&frame, Duration::from_secs(1));
        }
        if to_server {
            return None;
        }
        Some(Next::Frame(Frame {
            request,
            push,
            reply,
            json,
            text,
        }))
    }
}

/// A handler frame as besterd understands it, as JSON: `status` `"ok"`/`"error"` (the original
/// spec's numeric status in `statusCode`), `command` spelled out (with `commandData`), `request`
/// and `id` if given, and `payload` with `data` (`null` when missing). Two frames besterd cannot
/// tell apart compare equal (`"0"` and `"ok"`, a missing `command` and `"reply"`, the command
/// object form and `commandData`, a missing `data` and `null`).
pub fn canonical(msg: &crate::protocol::handler::HandlerMessage<'_>) -> Value {
    let mut header = serde_json::Map::new();
    let status = if msg.status == Status::Ok {
        "ok"
    } else {
        "error"
    };
    header.insert("status".into(), status.into());
    if let Some(code) = &msg.status_code {
        header.insert("statusCode".into(), code.as_str().into());
    }
    let (command, data) = match &*msg.command {
        Cmd::Reply => ("reply", None),
        Cmd::SendClients(to) if to.groups.is_empty() => {
            ("sendClients", Some(serde_json::json!(to.users)))
        }
        Cmd::SendClients(to) => (
            "sendClients",
            Some(serde_json::json!({
                "users": to.users,
                "groups": to.groups,
                "require_member": to.require_member
            })),
        ),
        Cmd::GroupAdd(c) => (
            "groupAdd",
            Some(serde_json::json!({"group": c.group, "users": c.users})),
        ),
        Cmd::GroupRemove(c) => (
            "groupRemove",
            Some(serde_json::json!({"group": c.group, "users": c.users})),
        ),
        Cmd::Presence(q) => (
            "presence",
            Some(serde_json::json!({"users": q.users, "groups": q.groups})),
        ),
        Cmd::SendServers(servers) => ("sendServers", Some(serde_json::json!(servers))),
        Cmd::SendHandler(kind) => ("sendHandler", Some(serde_json::json!(kind))),
        Cmd::Redirect { url, token } => {
            let mut target = serde_json::json!({ "url": url });
            match token {
                Some(crate::protocol::redirect::RedirectToken::Given(t)) => {
                    target["token"] = t.as_str().into()
                }
                Some(crate::protocol::redirect::RedirectToken::Mint) => {
                    target["token"] = "mint".into()
                }
                None => {}
            }
            ("redirect", Some(target))
        }
    };
    header.insert("command".into(), command.into());
    if let Some(request) = &msg.request {
        header.insert("request".into(), request.as_ref().into());
    }
    if let Some(data) = data {
        header.insert("commandData".into(), data);
    }
    if let Some(id) = &msg.id {
        header.insert("id".into(), id.as_ref().into());
    }
    let mut frame = serde_json::Map::new();
    frame.insert("header".into(), Value::Object(header));
    if let Some(payload) = &msg.payload {
        let data = payload
            .data
            .as_deref()
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
            .unwrap_or(Value::Null);
        frame.insert(
            "payload".into(),
            serde_json::json!({"type": payload.kind.as_ref(), "data": data}),
        );
    }
    Value::Object(frame)
}

/// [`canonical`] of a frame given as JSON (an expected answer); as it is if besterd refuses it.
pub fn canonical_json(frame: &Value) -> Value {
    let text = frame.to_string();
    match parse_handler_message(text.as_bytes()) {
        Ok(msg) => canonical(&msg),
        Err(_) => frame.clone(),
    }
}

/// How often an unread count is polled.
const POLL: Duration = Duration::from_micros(200);

/// A frame's text cut for a failure line.
pub fn excerpt(text: &str) -> String {
    if text.len() <= EXCERPT {
        return text.to_string();
    }
    let mut end = EXCERPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_besterd_cannot_tell_apart_compare_equal() {
        let same = [
            (
                r#"{"header":{"status":"ok","command":"reply","request":"1"},"payload":{"type":"t","data":null}}"#,
                r#"{"header":{"status":"0","request":"1"},"payload":{"type":"t"}}"#,
            ),
            (
                r#"{"header":{"status":"ok","command":"sendClients","commandData":["a"],"request":"1"},"payload":{"type":"t","data":1}}"#,
                r#"{"header":{"request":"1","status":0,"command":{"type":"sendClients","data":["a"]}},"payload":{"data":1,"type":"t"}}"#,
            ),
        ];
        for (a, b) in same {
            let a = canonical(&parse_handler_message(a.as_bytes()).unwrap());
            let b = canonical(&parse_handler_message(b.as_bytes()).unwrap());
            assert_eq!(a, b);
        }
        let error = r#"{"header":{"status":"3"},"payload":{"type":"t","data":"no"}}"#;
        assert_eq!(
            canonical(&parse_handler_message(error.as_bytes()).unwrap()).to_string(),
            r#"{"header":{"status":"error","statusCode":"3","command":"reply"},"payload":{"type":"t","data":"no"}}"#
        );
        let refused = serde_json::json!({"header":{"status":"maybe"}});
        assert_eq!(canonical_json(&refused), refused);
    }

    #[test]
    fn excerpts_cut_at_a_character() {
        let long = "é".repeat(400);
        let cut = excerpt(&long);
        assert!(
            cut.ends_with("… (800 bytes)") && cut.starts_with("éé"),
            "{cut}"
        );
        assert_eq!(excerpt("short"), "short");
    }
}
