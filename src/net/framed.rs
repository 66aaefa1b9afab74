//! `Framed`: one non-blocking connection (TCP, Unix, TLS, WebSocket: see `transport.rs`) with its
//! partial-frame input and bounded output. WebSocket messages are turned into length-prefixed frames
//! on the way in, so the same decoder and limits apply on every transport.
//!
//! Reads go through a scratch buffer owned by the event loop, so an idle connection holds no read
//! buffer at all; only the bytes of an incomplete frame are kept. Output is queued whole frames up
//! to a byte limit; past it the caller decides (close a slow consumer). A drained buffer over
//! 4 KiB goes back to the loop's spares (`spare.rs`) for the next burst on any connection.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use super::spare;
use super::transport::Transport;
use super::ws::WsServer;
use crate::protocol::compress::{self, InflateError};
use crate::protocol::{FrameDecoder, FrameError, encode_frame};

/// A TCP or Unix stream.
#[derive(Debug)]
pub enum Stream {
    /// A client or peer server.
    Tcp(TcpStream),
    /// A handler process.
    Unix(UnixStream),
}

impl Stream {
    /// Close both directions.
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// What one read did.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// This many bytes were added to the input.
    Data(usize),
    /// This many bytes were added, and a plain socket gave fewer than asked for: it has nothing
    /// more now, so the next read can wait for the next readiness event (an edge-triggered
    /// event comes for any byte that arrives later) instead of a read that would block.
    Drained(usize),
    /// Nothing more to read for now.
    WouldBlock,
    /// The peer closed its sending side.
    Eof,
}

/// The output queue is over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// Bytes queued before this frame.
    pub queued: usize,
    /// The limit.
    pub max: usize,
}

/// A stream with framing and bounded buffers.
#[derive(Debug)]
pub struct Framed {
    transport: Transport,
    decoder: FrameDecoder,
    input: Vec<u8>,
    input_pos: usize,
    output: Vec<u8>,
    output_pos: usize,
    max_output: usize,
    /// The session negotiated `compress`: compressed bodies are inflated on the way in, and
    /// bodies worth it are compressed on the way out.
    compress: bool,
    /// The next frame queued is sent as it is, even with `compress` (it carries a secret).
    plain_next: bool,
}

impl Framed {
    /// Wrap a stream or transport; frames over `max_frame` are refused, output over `max_output`
    /// overflows.
    pub fn new(transport: impl Into<Transport>, max_frame: usize, max_output: usize) -> Self {
        let mut transport = transport.into();
        if let Some(ws) = &mut transport.ws {
            ws.set_max_message(max_frame);
        }
        Framed {
            transport,
            decoder: FrameDecoder::new(max_frame),
            input: Vec::new(),
            input_pos: 0,
            output: Vec::new(),
            output_pos: 0,
            max_output,
            compress: false,
            plain_next: false,
        }
    }

    /// Register for both directions once (edge-triggered; no reregister per write).
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            &mut self.transport.link,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    /// Stop receiving events for this stream.
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.transport.link);
    }

    /// `tcp`, `tls`, `ws`, `wss` or `unix`.
    pub fn kind(&self) -> &'static str {
        self.transport.kind()
    }

    /// The transport (e.g. to look at a TLS peer's certificate).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Change the frame limit (raised after identify).
    pub fn set_max_frame(&mut self, max: usize) {
        self.decoder.set_max(max);
        if let Some(ws) = &mut self.transport.ws {
            ws.set_max_message(max);
        }
    }

    /// Turn on the feature `compress` for this connection (after a negotiation that accepted
    /// it): compressed bodies are inflated within the frame limit, and outgoing bodies that
    /// shrink are compressed. Not for WebSocket (permessage-deflate is its compression).
    pub fn set_compress(&mut self, on: bool) {
        self.compress = on && self.transport.ws.is_none();
    }

    /// Whether the feature `compress` is on.
    pub fn compressing(&self) -> bool {
        self.compress
    }

    /// Send the next queued frame uncompressed whatever the session negotiated (`compress`, or
    /// a WebSocket's permessage-deflate): it carries a
    /// credential or a token (compressing a secret beside text an attacker chose tells the
    /// attacker about the secret by the compressed size: CRIME, BREACH).
    pub fn plain_next(&mut self) {
        self.plain_next = true;
    }

    /// One `read` into `scratch`, appended to the input (for WebSocket: one message, or nothing
    /// when a control frame or part of a message came). Retries on `Interrupted`. A short read
    /// on a plain socket is [`ReadResult::Drained`] (TLS may hold more records than it gave).
    pub fn read_some(&mut self, scratch: &mut [u8]) -> io::Result<ReadResult> {
        if self.transport.ws.is_some() {
            return self.read_ws(scratch);
        }
        loop {
            return match self.transport.link.read(scratch) {
                Ok(0) => Ok(ReadResult::Eof),
                Ok(n) => {
                    spare::reserve(&mut self.input, n);
                    self.input.extend_from_slice(&scratch[..n]);
                    let plain = matches!(self.transport.link, super::Link::Plain(_));
                    Ok(if plain && n < scratch.len() {
                        ReadResult::Drained(n)
                    } else {
                        ReadResult::Data(n)
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadResult::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    fn read_ws(&mut self, scratch: &mut [u8]) -> io::Result<ReadResult> {
        let room = self.max_output.saturating_sub(self.queued_output());
        let Transport { link, ws } = &mut self.transport;
        let ws = ws.as_mut().expect("checked by the caller");
        let result = loop {
            match ws.read(link, scratch, &mut self.input, &mut self.output, room) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        // An HTTP answer, a pong or a close reply: send it now (the socket may not signal
        // writable again until it is written to).
        if self.queued_output() > 0 {
            self.flush()?;
        }
        result
    }

    /// The next complete frame body in the input, if any.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let mut body = Vec::new();
        Ok(self.next_frame_into(&mut body)?.then_some(body))
    }

    /// [`Framed::next_frame`] into a buffer the caller reuses (replacing its contents), so that
    /// taking a frame out allocates nothing once the buffer has grown. True if there was one.
    pub fn next_frame_into(&mut self, body: &mut Vec<u8>) -> Result<bool, FrameError> {
        if let Some(error) = self.transport.ws.as_mut().and_then(|ws| ws.take_error()) {
            return Err(error);
        }
        match self.decoder.decode(&self.input[self.input_pos..])? {
            Some((used, frame)) => {
                let inflated = if self.compress && compress::is_compressed(frame) {
                    compress::inflate(&frame[1..], self.decoder.max(), body)
                } else {
                    body.clear();
                    body.extend_from_slice(frame);
                    Ok(())
                };
                self.input_pos += used;
                if let Err(e) = inflated {
                    body.clear();
                    return Err(match e {
                        InflateError::TooLarge { max } => FrameError::InflatesTooLarge { max },
                        InflateError::Corrupt => FrameError::BadCompression,
                    });
                }
                if self.input_pos == self.input.len() {
                    self.input.clear();
                    self.input_pos = 0;
                    spare::drained(&mut self.input);
                }
                Ok(true)
            }
            None => {
                // Keep only the incomplete frame's bytes.
                if self.input_pos > 0 {
                    self.input.drain(..self.input_pos);
                    self.input_pos = 0;
                }
                Ok(false)
            }
        }
    }

    /// Bytes received but not yet returned as frames (an incomplete frame, or frames held back).
    pub fn buffered_input(&self) -> usize {
        self.input.len() - self.input_pos
    }

    /// Queue one frame for sending; refused when it would take the queue over its limit.
    pub fn queue(&mut self, body: &[u8]) -> Result<(), Overflow> {
        let queued = self.queued_output();
        let overhead = match &self.transport.ws {
            Some(_) => WsServer::overhead(body.len()),
            None => 4,
        };
        if queued + overhead + body.len() > self.max_output {
            return Err(Overflow {
                queued,
                max: self.max_output,
            });
        }
        spare::reserve(&mut self.output, overhead + body.len());
        let secret = std::mem::take(&mut self.plain_next);
        let plain = secret || !self.compress;
        match &mut self.transport.ws {
            // permessage-deflate, if negotiated, follows the same rule: never a secret.
            Some(ws) => ws.queue(body, &mut self.output, !secret),
            None if plain => encode_frame(body, &mut self.output),
            None => {
                // The length is patched in once the compressed size is known; a body that does
                // not shrink goes as it is.
                let start = self.output.len();
                self.output.extend_from_slice(&[0; 4]);
                if compress::compress_into(body, &mut self.output) {
                    let len = (self.output.len() - start - 4) as u32;
                    self.output[start..start + 4].copy_from_slice(&len.to_le_bytes());
                } else {
                    self.output.truncate(start);
                    encode_frame(body, &mut self.output);
                }
            }
        }
        Ok(())
    }

    /// The connection will close once its output is written: a WebSocket gets its close frame
    /// (with a code following the last error sent), other transports nothing.
    pub fn begin_close(&mut self) {
        let room = self.max_output.saturating_sub(self.queued_output());
        let Transport { link, ws } = &mut self.transport;
        if let Some(ws) = ws {
            ws.begin_close(link, &mut self.output, room);
        }
    }

    /// Bytes queued but not yet written.
    pub fn queued_output(&self) -> usize {
        self.output.len() - self.output_pos
    }

    /// Write queued output until done or the socket would block. `Ok(true)` when all is written
    /// (for TLS: also every record rustls had ready).
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.output_pos < self.output.len() {
            match self.transport.link.write(&self.output[self.output_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.output_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.output_pos > self.output.len() / 2 {
                        self.output.drain(..self.output_pos);
                        self.output_pos = 0;
                    }
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.output_pos = 0;
        spare::drained(&mut self.output);
        self.transport.link.write_pending()
    }

    /// For an outgoing TCP connection in progress: `None` while still connecting, then whether it
    /// connected (mio's recipe: `take_error`, then `peer_addr`).
    pub fn connect_result(&self) -> Option<io::Result<()>> {
        let Some(s) = self.transport.link.tcp() else {
            return Some(Ok(()));
        };
        match s.take_error() {
            Ok(Some(e)) | Err(e) => return Some(Err(e)),
            Ok(None) => {}
        }
        match s.peer_addr() {
            Ok(_) => Some(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Turn on TCP keepalive: after `idle_secs` of silence, probe every `interval_secs`, and
    /// report the connection dead after `count` unanswered probes (a peer host that vanished
    /// without a reset is noticed in idle + interval × count seconds instead of ~15 minutes).
    pub fn set_keepalive(&self, idle_secs: i32, interval_secs: i32, count: i32) -> io::Result<()> {
        let Some(s) = self.transport.link.tcp() else {
            return Ok(());
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(s);
        let options = [
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle_secs),
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, interval_secs),
            (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, count),
        ];
        for (level, name, value) in options {
            // SAFETY: setsockopt on a descriptor we own, with a pointer to a live c_int.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    level,
                    name,
                    std::ptr::from_ref(&value).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Whether a WebSocket ping or pong came since the last call (activity for the idle timeout,
    /// though no frame came).
    pub fn take_keepalive(&mut self) -> bool {
        self.transport
            .ws
            .as_mut()
            .is_some_and(|ws| ws.take_keepalive())
    }

    /// The WebSocket close code and reason sent for a protocol violation, if one was.
    pub fn ws_violation(&self) -> Option<(u16, &str)> {
        self.transport.ws.as_ref().and_then(|ws| ws.violation())
    }

    /// For a TLS connection whose handshake did not finish: why (`None` when it finished, or for
    /// other transports). A handshake cut short by our side is a timeout; by the peer's, an end
    /// of stream.
    pub fn tls_failure(&self, read_closed: bool) -> Option<super::tls::HandshakeFailure> {
        use super::tls::HandshakeFailure;
        let super::Link::Tls(tls) = &self.transport.link else {
            return None;
        };
        if let Some(failure) = tls.handshake_failure() {
            return Some(failure);
        }
        tls.is_handshaking().then_some(if read_closed {
            HandshakeFailure::Eof
        } else {
            HandshakeFailure::Timeout
        })
    }

    /// Hand the TCP socket over for a lingering close (`linger.rs`), after writing what the
    /// socket takes of the queued output now (for TLS: close_notify too). A Unix stream is
    /// closed at once (`None`).
    pub fn into_lingering(mut self) -> Option<TcpStream> {
        let _ = self.flush();
        match self.transport.link {
            super::Link::Plain(Stream::Tcp(sock)) => Some(sock),
            super::Link::Tls(tls) => Some(tls.into_tcp()),
            mut link @ super::Link::Plain(Stream::Unix(_)) => {
                link.shutdown();
                None
            }
        }
    }

    /// Close both directions now. Queued output is discarded, except what the socket takes at
    /// once (so a WebSocket close frame or a TLS alert queued just before usually gets out).
    pub fn shutdown(&mut self) {
        if self.transport.ws.is_some() || matches!(self.transport.link, super::Link::Tls(_)) {
            let _ = self.flush();
        }
        self.transport.link.shutdown();
    }

    /// Bytes of heap this connection's buffers hold (for memory accounting).
    pub fn buffer_capacity(&self) -> usize {
        self.input.capacity() + self.output.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(max_frame: usize, max_output: usize) -> (Framed, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let framed = Framed::new(
            Stream::Unix(UnixStream::from_std(ours)),
            max_frame,
            max_output,
        );
        (framed, theirs)
    }

    #[test]
    fn frames_split_and_batched_across_reads() {
        let (mut framed, mut peer) = pair(64, 1024);
        let mut wire = Vec::new();
        encode_frame(b"{\"a\":1}", &mut wire);
        encode_frame(b"{}", &mut wire);
        peer.write_all(&wire[..3]).unwrap();
        let mut scratch = [0u8; 2];
        let mut frames = Vec::new();
        let mut sent = 3;
        // A full read may leave more; a short one says the socket had no more.
        assert_eq!(framed.read_some(&mut scratch).unwrap(), ReadResult::Data(2));
        assert_eq!(
            framed.read_some(&mut scratch).unwrap(),
            ReadResult::Drained(1)
        );
        loop {
            match framed.read_some(&mut scratch).unwrap() {
                ReadResult::Data(_) | ReadResult::Drained(_) => {
                    while let Some(f) = framed.next_frame().unwrap() {
                        frames.push(f);
                    }
                }
                ReadResult::WouldBlock if sent < wire.len() => {
                    peer.write_all(&wire[sent..]).unwrap();
                    sent = wire.len();
                }
                other => panic!("unexpected {other:?} with frames {frames:?}"),
            }
            if frames.len() == 2 {
                break;
            }
        }
        assert_eq!(frames, vec![b"{\"a\":1}".to_vec(), b"{}".to_vec()]);
        assert_eq!(framed.buffered_input(), 0);
        drop(peer);
        assert_eq!(framed.read_some(&mut scratch).unwrap(), ReadResult::Eof);
    }

    #[test]
    fn output_is_bounded_and_flushes() {
        let (mut framed, mut peer) = pair(64, 20);
        framed.queue(b"0123456789").unwrap();
        assert_eq!(
            framed.queue(b"0123456789"),
            Err(Overflow {
                queued: 14,
                max: 20
            })
        );
        assert!(framed.flush().unwrap());
        assert_eq!(framed.queued_output(), 0);
        let mut got = [0u8; 14];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got[4..], b"0123456789");
    }

    #[test]
    fn keepalive_is_set_on_tcp() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let framed = Framed::new(Stream::Tcp(TcpStream::from_std(stream)), 64, 64);
        framed.set_keepalive(10, 5, 3).unwrap();
        let get = |level, name| {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt into a local c_int on a live descriptor.
            unsafe {
                libc::getsockopt(
                    fd,
                    level,
                    name,
                    std::ptr::from_mut(&mut value).cast(),
                    &mut len,
                );
            }
            value
        };
        assert_eq!(get(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 10);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 5);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 3);
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let (mut framed, mut peer) = pair(8, 64);
        peer.write_all(&9u32.to_le_bytes()).unwrap();
        let mut scratch = [0u8; 64];
        assert_eq!(
            framed.read_some(&mut scratch).unwrap(),
            ReadResult::Drained(4)
        );
        assert_eq!(
            framed.next_frame(),
            Err(FrameError::TooLarge { len: 9, max: 8 })
        );
    }
}
