//! WebSocket (RFC 6455) on the server side, over a plain or TLS stream: the HTTP/1.1 upgrade
//! (parsed with httparse, with an `Origin` check), plain `GET`s answered from a listener's static
//! files, and then messages in and out. One text or binary message is one besterd frame body.
//!
//! Incoming messages are decoded by tungstenite's [`WebSocketContext`] (masking, fragments,
//! control frames, UTF-8 of text messages, size limits); the message and its fragments are bounded
//! by the connection's frame limit. Pongs and close replies tungstenite writes go into the
//! connection's own bounded output buffer, in order with our messages, which this module frames
//! itself (a server's frames are unmasked). Closing maps besterd's error codes to close codes.
//! This module never touches a socket directly: it is handed the stream by `framed.rs`.
//!
//! permessage-deflate (RFC 7692): when the listener allows it (`ws_deflate`) and the upgrade
//! offers it in terms besterd can honour (`protocol/ws_deflate.rs`), the answer accepts it, and
//! `ws_deflate.rs` notes and clears RSV1 before tungstenite reads a frame; compressed messages
//! are inflated here within the frame limit, and messages out are compressed unless they carry
//! a secret (the caller says which).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use tungstenite::Message;
use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};

use super::framed::ReadResult;
use super::hosts::Hosts;
use super::ws_deflate::{self, Rsv1};
use crate::protocol::compress::{self, InflateError};
use crate::protocol::{FrameError, encode_frame};

/// Longest HTTP request head accepted.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Headers parsed in a request head.
const MAX_HEADERS: usize = 32;
/// Read chunk of tungstenite's input buffer (it grows only for large messages).
const READ_CHUNK: usize = 4096;
/// Largest static file served.
pub const MAX_STATIC_FILE: usize = 1 << 20;
/// Most static files per listener.
pub const MAX_STATIC_FILES: usize = 64;

/// Which browser pages may open a WebSocket (the `Origin` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// Requests without `Origin` (non-browser clients) and pages served from the same host.
    SameHost,
    /// Any origin (`allowed_origins = ["*"]`).
    Any,
    /// Requests without `Origin`, and these exact origins (e.g. `https://chat.example.org`).
    List(Vec<String>),
}

impl Origins {
    /// Whether a request with this `Origin` (if any) and `Host` may upgrade. Same host means the
    /// origin's `host:port` is the `Host` **and** the `Host` is one the listener answers to
    /// (`hosts`): a rebound name agrees with itself, so agreement alone proves nothing.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>, hosts: &Hosts) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        match self {
            Origins::Any => true,
            Origins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
            Origins::SameHost => {
                let origin_host = origin
                    .strip_prefix("http://")
                    .or_else(|| origin.strip_prefix("https://"));
                matches!((origin_host, host),
                    (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) && hosts.allows(h))
            }
        }
    }
}

/// A file served to plain `GET`s.
#[derive(Debug, Clone)]
pub struct StaticFile {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The bytes.
    pub body: Arc<[u8]>,
}

/// What a WebSocket listener does with the HTTP requests it receives.
#[derive(Debug, Clone)]
pub struct WsOptions {
    /// Origins allowed to upgrade.
    pub origins: Origins,
    /// Files by URL path (`/index.html`); `/` serves `/index.html`.
    pub files: HashMap<String, StaticFile>,
    /// The `Host` names the listener answers to.
    pub hosts: Hosts,
    /// Refuse every request whose `Host` is not in `hosts` (loopback listeners, and listeners
    /// with `hosts` configured); otherwise only the same-host origin rule consults `hosts`.
    pub check_host: bool,
    /// Headers sent with every static file (the built-in page's `Content-Security-Policy`).
    pub file_headers: &'static str,
    /// Accept permessage-deflate when an upgrade offers it (`ws_deflate`).
    pub deflate: bool,
}

/// The content type for a file name.
pub fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Load the regular files directly in `dir` (not recursively), each at most
/// [`MAX_STATIC_FILE`] bytes, at most [`MAX_STATIC_FILES`] of them. Read once, when the
/// configuration is loaded, so the event loop never reads a file.
///
/// A symbolic link in `dir` is an error naming it (it could publish a file from elsewhere, such
/// as the user store): nothing is served through a link, and each file is opened with
/// `O_NOFOLLOW` so that one swapped in after the listing is refused too. Dot files and
/// subdirectories are skipped.
pub fn load_static_dir(dir: &Path) -> Result<HashMap<String, StaticFile>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = HashMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let kind = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if kind.is_symlink() {
            return Err(format!(
                "{}: is a symbolic link (static_dir serves only regular files in the directory \
                 itself)",
                path.display()
            ));
        }
        if !kind.is_file() {
            continue;
        }
        let mut file = match crate::fsutil::open_read_nofollow(&path) {
            Ok(Some(file)) => file,
            Ok(None) => continue,
            Err(e) => return Err(e.to_string()),
        };
        let meta = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            continue;
        }
        if meta.len() > MAX_STATIC_FILE as u64 {
            return Err(format!(
                "{}: larger than {MAX_STATIC_FILE} bytes",
                path.display()
            ));
        }
        if files.len() == MAX_STATIC_FILES {
            return Err(format!(
                "{}: more than {MAX_STATIC_FILES} files",
                dir.display()
            ));
        }
        let mut body = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(&mut file, MAX_STATIC_FILE as u64 + 1),
            &mut body,
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        files.insert(
            format!("/{name}"),
            StaticFile {
                content_type: content_type(&name),
                body: body.into(),
            },
        );
    }
    Ok(files)
}

/// The besterd error code → WebSocket close code (and reason) used when a connection closes
/// right after sending that error.
pub fn close_code_for(error_code: Option<&str>) -> (u16, String) {
    match error_code {
        None => (1000, String::new()),
        Some("frame_too_large") => (1009, "frame_too_large".into()),
        Some("invalid_utf8") => (1007, "invalid_utf8".into()),
        Some("shutting_down") => (1001, "shutting_down".into()),
        Some(code) => (1008, code.to_string()),
    }
}

enum Phase {
    /// Reading the HTTP request head.
    Http { head: Vec<u8> },
    /// Upgraded.
    Open { ctx: Box<WebSocketContext> },
    /// An HTTP answer (or a close) was queued; nothing more is read or sent.
    Done,
}

/// The WebSocket side of one accepted connection.
pub struct WsServer {
    options: Arc<WsOptions>,
    phase: Phase,
    max_message: usize,
    /// An oversized message was refused: `next_frame` reports it.
    pending_error: Option<FrameError>,
    /// The last error body queued, if the last body queued was an error (its code picks the
    /// close code).
    last_error: Option<String>,
    /// A close frame was queued.
    close_sent: bool,
    /// The upgrade came from a non-browser client (no `Origin`) or a page of this same host.
    same_origin: bool,
    /// A ping or pong came since [`WsServer::take_keepalive`] last looked.
    keepalive: bool,
    /// The close code and reason sent for a protocol violation (1002, 1007, 1009, 1011).
    violation: Option<(u16, String)>,
    /// permessage-deflate was negotiated: the RSV1 of incoming messages, followed.
    deflate: Option<Rsv1>,
}

impl std::fmt::Debug for WsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.phase {
            Phase::Http { .. } => "http",
            Phase::Open { .. } => "open",
            Phase::Done => "done",
        };
        f.debug_struct("WsServer").field("phase", &phase).finish()
    }
}

/// The connection's stream for tungstenite: reads from the socket, writes into our output.
struct Io<'a, S> {
    stream: &'a mut S,
    out: &'a mut Vec<u8>,
    room: usize,
    /// With permessage-deflate: sees every byte before tungstenite does.
    rsv1: Option<&'a mut Rsv1>,
}

impl<S: Read> Read for Io<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        if let Some(rsv1) = &mut self.rsv1 {
            rsv1.scan(&mut buf[..n]);
        }
        Ok(n)
    }
}

impl<S> Write for Io<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Pongs a client provokes count against the output limit like anything else.
        if buf.len() > self.room {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.room -= buf.len();
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_REQUEST_HEAD)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

fn invalid(text: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, text)
}

impl WsServer {
    /// A connection that has not sent its HTTP request yet.
    pub fn new(options: Arc<WsOptions>, max_message: usize) -> WsServer {
        WsServer {
            options,
            phase: Phase::Http { head: Vec::new() },
            max_message,
            pending_error: None,
            last_error: None,
            close_sent: false,
            same_origin: false,
            keepalive: false,
            violation: None,
            deflate: None,
        }
    }

    /// Whether a ping or pong came since the last call (control frames are activity too).
    pub fn take_keepalive(&mut self) -> bool {
        std::mem::take(&mut self.keepalive)
    }

    /// The close code and reason, if the connection was closed for a protocol violation.
    pub fn violation(&self) -> Option<(u16, &str)> {
        self.violation.as_ref().map(|(c, r)| (*c, r.as_str()))
    }

    /// Whether the upgrade sent no `Origin` or one of this listener's own host (a page from
    /// elsewhere, even one `allowed_origins` lets in, is cross-origin). False before the upgrade.
    pub fn same_origin(&self) -> bool {
        self.same_origin
    }

    /// Change the message limit (raised after identify).
    pub fn set_max_message(&mut self, max: usize) {
        self.max_message = max;
        if let Phase::Open { ctx } = &mut self.phase {
            ctx.set_config(|c| {
                c.max_message_size = Some(max);
                c.max_frame_size = Some(max);
            });
        }
    }

    /// Whether messages can be sent.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open { .. }) && !self.close_sent
    }

    /// An error the next `next_frame` must return.
    pub fn take_error(&mut self) -> Option<FrameError> {
        self.pending_error.take()
    }

    /// Read from `stream`: the HTTP head, or one WebSocket message, whose body is appended to
    /// `input` as a length-prefixed frame. Anything to send (HTTP answer, pong, close) goes to `out`
    /// within `room` bytes. `Data(0)` means "nothing for the frame layer, read again"; `Eof` that
    /// the connection is done (closed by the client, or an HTTP answer was queued); an `Err`
    /// closes the connection (a close frame was queued).
    pub fn read<S: Read>(
        &mut self,
        stream: &mut S,
        scratch: &mut [u8],
        input: &mut Vec<u8>,
        out: &mut Vec<u8>,
        room: usize,
    ) -> io::Result<ReadResult> {
        match &mut self.phase {
            Phase::Done => Ok(ReadResult::Eof),
            Phase::Http { head } => {
                let n = match stream.read(scratch) {
                    Ok(0) => return Ok(ReadResult::Eof),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(ReadResult::WouldBlock);
                    }
                    Err(e) => return Err(e),
                };
                head.extend_from_slice(&scratch[..n]);
                let head = std::mem::take(head);
                self.http(head, out)
            }
            Phase::Open { ctx } => {
                let mut io = Io {
                    stream,
                    out,
                    room,
                    rsv1: self.deflate.as_mut(),
                };
                let result = ctx.read(&mut io);
                let note = match &result {
                    Ok(Message::Text(_) | Message::Binary(_))
                    | Err(WsError::Capacity(_) | WsError::Utf8(_)) => {
                        io.rsv1.as_deref_mut().map(Rsv1::next_note)
                    }
                    _ => None,
                };
                match result {
                    Ok(Message::Text(text)) => {
                        encode_frame(text.as_bytes(), input);
                        Ok(ReadResult::Data(text.len()))
                    }
                    Ok(Message::Binary(bytes)) if note.is_some_and(|n| n.compressed) => {
                        let text = note.is_some_and(|n| n.text);
                        Ok(self.inflated(bytes.into(), text, input))
                    }
                    Ok(Message::Binary(bytes)) => {
                        encode_frame(&bytes, input);
                        Ok(ReadResult::Data(bytes.len()))
                    }
                    Ok(Message::Ping(_) | Message::Pong(_)) => {
                        self.keepalive = true;
                        let _ = ctx.flush(&mut io);
                        Ok(ReadResult::Data(0))
                    }
                    Ok(Message::Frame(_)) => {
                        let _ = ctx.flush(&mut io);
                        Ok(ReadResult::Data(0))
                    }
                    Ok(Message::Close(_)) => {
                        // tungstenite queued the reply; push it into our output.
                        let _ = ctx.flush(&mut io);
                        self.close_sent = true;
                        Ok(ReadResult::Eof)
                    }
                    Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        Ok(ReadResult::WouldBlock)
                    }
                    Err(WsError::Io(e)) => Err(e),
                    Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Ok(ReadResult::Eof),
                    Err(WsError::Protocol(
                        tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    )) => Ok(ReadResult::Eof),
                    Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
                        self.pending_error = Some(FrameError::TooLarge {
                            len: u32::try_from(size).unwrap_or(u32::MAX),
                            max: max_size,
                        });
                        Ok(ReadResult::Data(0))
                    }
                    Err(WsError::Utf8(_)) => {
                        // The JSON `invalid_utf8` error first (`next_frame` reports it), then
                        // the close with 1007 that follows from it.
                        self.pending_error = Some(FrameError::InvalidUtf8);
                        Ok(ReadResult::Data(0))
                    }
                    Err(WsError::Protocol(e)) => {
                        let text = e.to_string();
                        self.close_now(stream, out, room, 1002, &text);
                        Err(invalid(format!("websocket protocol error: {text}")))
                    }
                    Err(e) => {
                        let text = e.to_string();
                        self.close_now(stream, out, room, 1011, &text);
                        Err(invalid(format!("websocket: {text}")))
                    }
                }
            }
        }
    }

    /// A compressed message's payload (tungstenite's binary message, RSV1 noted): inflated
    /// within the message limit into `input` as one frame, or the error `next_frame` reports
    /// (a bomb is `frame_too_large`, as a message over the limit is).
    fn inflated(&mut self, mut payload: Vec<u8>, text: bool, input: &mut Vec<u8>) -> ReadResult {
        payload.extend_from_slice(&compress::SYNC_TAIL);
        let mut body = Vec::new();
        match compress::inflate_message(&payload, self.max_message, &mut body) {
            Ok(()) if text && std::str::from_utf8(&body).is_err() => {
                self.pending_error = Some(FrameError::InvalidUtf8);
                ReadResult::Data(0)
            }
            Ok(()) => {
                encode_frame(&body, input);
                ReadResult::Data(body.len())
            }
            Err(InflateError::TooLarge { max }) => {
                self.pending_error = Some(FrameError::InflatesTooLarge { max });
                ReadResult::Data(0)
            }
            Err(InflateError::Corrupt) => {
                self.pending_error = Some(FrameError::BadCompression);
                ReadResult::Data(0)
            }
        }
    }

    /// Frame one message body (text: besterd frames are UTF-8 JSON) into `out`, compressed with
    /// permessage-deflate when it was negotiated, `may_compress` (false for a frame carrying a
    /// credential or a token) and it pays. Dropped silently before the upgrade or after a close
    /// (the connection is going away).
    pub fn queue(&mut self, body: &[u8], out: &mut Vec<u8>, may_compress: bool) {
        if !self.is_open() {
            return;
        }
        self.last_error = if body.starts_with(br#"{"header":{"status":"error""#) {
            error_code(body)
        } else {
            None
        };
        ws_deflate::frame_message(body, may_compress && self.deflate.is_some(), out);
    }

    /// Bytes framing adds to a body of `len` bytes.
    pub fn overhead(len: usize) -> usize {
        if len < 126 {
            2
        } else if len <= usize::from(u16::MAX) {
            4
        } else {
            10
        }
    }

    /// Queue a close frame whose code follows the last error sent (1000 if none).
    pub fn begin_close<S: Read>(&mut self, stream: &mut S, out: &mut Vec<u8>, room: usize) {
        match self.pending_error {
            // Not reported yet (the connection closes for another reason first): the close
            // says what was wrong all the same.
            Some(FrameError::TooLarge { .. } | FrameError::InflatesTooLarge { .. }) => {
                self.last_error = Some("frame_too_large".into());
            }
            Some(FrameError::InvalidUtf8) => self.last_error = Some("invalid_utf8".into()),
            Some(_) | None => {}
        }
        let (code, reason) = close_code_for(self.last_error.as_deref());
        self.close_now(stream, out, room, code, &reason);
    }

    fn close_now<S: Read>(
        &mut self,
        stream: &mut S,
        out: &mut Vec<u8>,
        room: usize,
        code: u16,
        reason: &str,
    ) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        if let Phase::Open { ctx } = &mut self.phase {
            if matches!(code, 1002 | 1007 | 1009 | 1011) {
                self.violation = Some((code, reason.to_string()));
            }
            let mut io = Io {
                stream,
                out,
                room: room.max(128),
                rsv1: None,
            };
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.chars().take(100).collect::<String>().into(),
            };
            let _ = ctx.close(&mut io, Some(frame));
        }
    }

    /// A complete (or too long) HTTP request head in `head`.
    fn http(&mut self, head: Vec<u8>, out: &mut Vec<u8>) -> io::Result<ReadResult> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let used = match request.parse(&head) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) if head.len() <= MAX_REQUEST_HEAD => {
                self.phase = Phase::Http { head };
                return Ok(ReadResult::Data(0));
            }
            Ok(httparse::Status::Partial) => {
                return Ok(self.answer(out, 431, "request head too large\n", None));
            }
            Err(e) => {
                return Ok(self.answer(out, 400, &format!("bad request: {e}\n"), None));
            }
        };
        if used > MAX_REQUEST_HEAD {
            return Ok(self.answer(out, 431, "request head too large\n", None));
        }
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::trim)
        };
        let method = request.method.unwrap_or("");
        let path = request.path.unwrap_or("/");
        let host = header("host");
        if self.options.check_host
            && let Some(host) = host
            && !self.options.hosts.allows(host)
        {
            let text = format!("host {host} is not served here\n");
            return Ok(self.answer(out, 403, &text, None));
        }
        let upgrade = header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        if !upgrade {
            if method != "GET" && method != "HEAD" {
                return Ok(self.answer(out, 405, "only GET\n", None));
            }
            let path = path.split('?').next().unwrap_or("/");
            let path = if path == "/" { "/index.html" } else { path };
            let file = self.options.files.get(path).cloned();
            let head_only = method == "HEAD";
            return Ok(match file {
                Some(file) => self.file(out, &file, head_only),
                None => self.answer(out, 404, "not found\n", None),
            });
        }
        let connection_upgrade = header("connection").is_some_and(|c| {
            c.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
        let key = header("sec-websocket-key");
        if method != "GET" || !connection_upgrade || header("sec-websocket-version") != Some("13") {
            return Ok(self.answer(
                out,
                400,
                "a WebSocket upgrade needs GET, Connection: Upgrade and Sec-WebSocket-Version: 13\n",
                Some("Sec-WebSocket-Version: 13\r\n"),
            ));
        }
        let Some(key) = key else {
            return Ok(self.answer(out, 400, "missing Sec-WebSocket-Key\n", None));
        };
        if !valid_key(key) {
            return Ok(self.answer(
                out,
                400,
                "Sec-WebSocket-Key must be 16 bytes in base64\n",
                None,
            ));
        }
        if !self
            .options
            .origins
            .allows(header("origin"), host, &self.options.hosts)
        {
            let text = format!("origin {} is not allowed\n", header("origin").unwrap_or(""));
            return Ok(self.answer(out, 403, &text, None));
        }
        self.same_origin = Origins::SameHost.allows(header("origin"), host, &self.options.hosts);
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let offers = request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
            .filter_map(|h| std::str::from_utf8(h.value).ok());
        let deflate = self.options.deflate && crate::protocol::ws_deflate::accept(offers);
        let extensions = if deflate {
            format!(
                "Sec-WebSocket-Extensions: {}\r\n",
                crate::protocol::ws_deflate::ACCEPTED
            )
        } else {
            String::new()
        };
        out.extend_from_slice(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extensions}\r\n"
            )
            .as_bytes(),
        );
        let mut rest = head[used..].to_vec();
        if deflate {
            // Frames sent right behind the request are followed from their first byte.
            let mut rsv1 = Rsv1::default();
            rsv1.scan(&mut rest);
            self.deflate = Some(rsv1);
        }
        let config = config(self.max_message);
        self.phase = Phase::Open {
            ctx: Box::new(WebSocketContext::from_partially_read(
                rest,
                Role::Server,
                Some(config),
            )),
        };
        Ok(ReadResult::Data(0))
    }

    /// Queue a short HTTP answer and stop.
    fn answer(
        &mut self,
        out: &mut Vec<u8>,
        status: u16,
        text: &str,
        extra: Option<&str>,
    ) -> ReadResult {
        let reason = match status {
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            _ => "Error",
        };
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n{text}",
                text.len(),
                extra.unwrap_or("")
            )
            .as_bytes(),
        );
        self.phase = Phase::Done;
        ReadResult::Eof
    }

    fn file(&mut self, out: &mut Vec<u8>, file: &StaticFile, head_only: bool) -> ReadResult {
        out.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n{}Connection: close\r\n\r\n",
                file.content_type,
                file.body.len(),
                self.options.file_headers,
            )
            .as_bytes(),
        );
        if !head_only {
            out.extend_from_slice(&file.body);
        }
        self.phase = Phase::Done;
        ReadResult::Eof
    }
}

/// Whether a `Sec-WebSocket-Key` is what RFC 6455 §4.1 requires: 16 bytes in base64, which is 22
/// characters of the base64 alphabet and `==`, the last of the 22 carrying no stray bits.
fn valid_key(key: &str) -> bool {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = key.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22].iter().all(|c| ALPHABET.contains(c))
        // 16 bytes are 128 bits: the 22nd character holds 2 of them and 4 bits of padding.
        && ALPHABET.iter().position(|c| *c == b[21]).is_some_and(|v| v & 0x0f == 0)
}

/// `data.code` of an error frame.
fn error_code(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("data")?.get("code")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let none = Hosts::default();
        let same = Origins::SameHost;
        assert!(same.allows(None, Some("127.0.0.1:2223"), &none));
        assert!(same.allows(Some("http://127.0.0.1:2223"), Some("127.0.0.1:2223"), &none));
        assert!(!same.allows(Some("http://evil.example"), Some("127.0.0.1:2223"), &none));
        // DNS rebinding: the rebound name agrees with itself, and is still refused.
        let rebound = Some("evil.example:2223");
        assert!(!same.allows(Some("http://evil.example:2223"), rebound, &none));
        let named = Hosts::new(&["chat.example.org".into()]);
        let chat = Some("chat.example.org");
        assert!(same.allows(Some("https://chat.example.org"), chat, &named));
        assert!(!same.allows(Some("http://evil.example:2223"), rebound, &named));
        let list = Origins::List(vec!["https://chat.example.org".into()]);
        assert!(list.allows(Some("https://chat.example.org"), Some("x"), &none));
        assert!(!list.allows(Some("https://other.example.org"), Some("x"), &none));
        assert!(Origins::Any.allows(Some("http://anything"), None, &none));
    }

    #[test]
    fn websocket_keys_must_be_16_bytes_of_base64() {
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(valid_key("AAAAAAAAAAAAAAAAAAAAAA=="));
        for bad in [
            "",
            "x",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25jZQ===",
            "dGhlIHNhbXBsZSBub25j*Q==",
            "dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ==",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn close_codes_follow_besterd_errors() {
        assert_eq!(close_code_for(None).0, 1000);
        assert_eq!(close_code_for(Some("frame_too_large")).0, 1009);
        assert_eq!(close_code_for(Some("invalid_utf8")).0, 1007);
        assert_eq!(close_code_for(Some("shutting_down")).0, 1001);
        assert_eq!(
            close_code_for(Some("auth_failed")),
            (1008, "auth_failed".into())
        );
    }

    #[test]
    fn messages_are_framed_unmasked_with_the_right_length() {
        let mut ws = WsServer::new(
            Arc::new(WsOptions {
                origins: Origins::Any,
                files: HashMap::new(),
                hosts: Hosts::default(),
                check_host: false,
                file_headers: "",
                deflate: false,
            }),
            1 << 20,
        );
        ws.phase = Phase::Open {
            ctx: Box::new(WebSocketContext::new(Role::Server, Some(config(1 << 20)))),
        };
        for len in [0usize, 125, 126, 65535, 65536] {
            let mut out = Vec::new();
            ws.queue(&vec![b'x'; len], &mut out, true);
            assert_eq!(out.len(), len + WsServer::overhead(len), "{len}");
            assert_eq!(out[0], 0x81);
        }
        let mut out = Vec::new();
        ws.queue(
            br#"{"header":{"status":"error","kind":"reply"},"data":{"error":"no","code":"auth_failed"}}"#,
            &mut out,
            true,
        );
        assert_eq!(ws.last_error.as_deref(), Some("auth_failed"));
    }
}
