//! A session that outlives its connections: [`Session::connect`] logs in; [`Session::request`]
//! sends a request and returns its reply's data, following a redirect (at most
//! [`MAX_REDIRECTS`] in a row, logging in at the new server with the redirect's token only: never
//! the password or a key signature, never from TLS to clear text) and, when the connection
//! breaks, connecting again with backoff and logging in with the session's resume token (the
//! first login's credentials only at the first URL, if the resume token is refused), then sending
//! the request once more. A server that is shutting down (`shutting_down`: it drains before a
//! restart) is treated the same way: the session waits for the server to come back and sends the
//! request there. A request whose connection broke may so reach a handler twice: make such
//! handlers idempotent, or turn `reconnect` off.
//!
//! Stored pushes (PROTOCOL.md §4, "Stored delivery": a push with `header.msg`) are handed over
//! by [`Session::recv_push`] once: a copy that comes again (after a reconnection, say) is
//! dropped, and acknowledged again if its ack was sent ([`crate::acks`]). With
//! [`Options::auto_ack`] a push handed over is acknowledged with the next `bester.ack`, sent
//! when no more frames are waiting (one per batch), before the next request, or by
//! [`Session::flush_acks`]; without it, [`Session::ack`] does it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use serde_json::{Value, json};

use crate::acks::{Arrival, MAX_ACK, MAX_SEEN, Seen};
use crate::client::{Client, Uri};
use crate::error::Error;
use crate::login::{Identity, Login, identify_offering};

/// Redirects followed in a row before giving up.
pub const MAX_REDIRECTS: usize = 3;

/// How a [`Session`] connects.
#[derive(Debug, Clone)]
pub struct Options {
    /// What TLS trusts (required for `bester+tls://` and `bester+wss://`; see
    /// [`crate::transport::trust`]).
    pub tls: Option<Arc<ClientConfig>>,
    /// How long one connect, login or request may take (`None`: no limit).
    pub timeout: Option<Duration>,
    /// Connect again when the connection breaks.
    pub reconnect: bool,
    /// How long to keep trying to connect again before giving up.
    pub reconnect_for: Duration,
    /// Acknowledge stored pushes once [`Session::recv_push`] handed them over (true); false:
    /// the application calls [`Session::ack`] when it is done with them.
    pub auto_ack: bool,
    /// How many stored pushes' ids are remembered to drop a copy that comes again (4096).
    pub max_seen: usize,
    /// Offer `compress` at every login (false): where the server accepts it (TCP and TLS,
    /// never WebSocket), long frames go compressed both ways ([`Client::set_compress`]).
    pub compress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: None,
            timeout: Some(Duration::from_secs(30)),
            reconnect: true,
            reconnect_for: Duration::from_secs(30),
            auto_ack: true,
            max_seen: MAX_SEEN,
            compress: false,
        }
    }
}

/// A logged-in session (see the module documentation).
pub struct Session {
    first: Uri,
    current: Uri,
    login: Login,
    options: Options,
    client: Client,
    identity: Identity,
    next_id: u64,
    reconnects: u64,
    /// Pushes read from a connection that was then left.
    pushes: std::collections::VecDeque<Value>,
    /// Stored pushes' ids handed over, and the acks owed (across reconnections).
    seen: Seen,
    /// Ids of the automatic `bester.ack`s on this connection whose reply is still to come.
    acking: HashSet<String>,
}

/// A URI that may name no user (`bester+wss://host:port`, as a redirect gives it).
fn parse_url(url: &str) -> Result<Uri, Error> {
    let text = match url.split_once("://") {
        Some((scheme, rest)) if !rest.contains('@') => format!("{scheme}://@{rest}"),
        _ => url.to_string(),
    };
    Uri::parse(&text).map_err(Error::Protocol)
}

impl Session {
    /// Connect to `url` (`bester[+tls|+ws|+wss]://[user[:password]@]host[:port]`) and log in.
    pub fn connect(url: &str, login: Login, options: Options) -> Result<Session, Error> {
        let uri = parse_url(url)?;
        let (client, identity) = Session::open(&uri, &login, &options)?;
        Ok(Session {
            first: uri.clone(),
            current: uri,
            login,
            client,
            identity,
            next_id: 1,
            reconnects: 0,
            pushes: Default::default(),
            seen: Seen::new(options.max_seen),
            acking: HashSet::new(),
            options,
        })
    }

    fn open(uri: &Uri, login: &Login, options: &Options) -> Result<(Client, Identity), Error> {
        let deadline = options.timeout.map(|t| Instant::now() + t);
        let mut client = Client::connect_uri(uri, options.tls.clone(), deadline)?;
        let offer: &[&str] = if options.compress { &["compress"] } else { &[] };
        let identity = identify_offering(&mut client, login, offer)?;
        client.set_deadline(None);
        Ok((client, identity))
    }

    /// Who this session is logged in as, and its latest resume token.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// How many times the session connected again (after a broken connection or a drain).
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The connection (to pipeline requests by hand, or read pushes).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Send a request of `kind` with `data`; its reply's data, or the refusal.
    pub fn request(&mut self, kind: &str, data: &Value) -> Result<Value, Error> {
        self.flush_acks()?;
        let mut redirects = 0;
        let mut reconnected = false;
        loop {
            let id = self.next_id.to_string();
            self.next_id += 1;
            self.client
                .set_deadline(self.options.timeout.map(|t| Instant::now() + t));
            let answer = self.client.request(&id, kind, data);
            self.client.set_deadline(None);
            let frame = match answer {
                Ok(frame) => frame,
                Err(e) if self.options.reconnect && !reconnected && broken(&e) => {
                    self.reconnect()?;
                    reconnected = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if frame["header"]["kind"] == "redirect" {
                redirects += 1;
                self.follow(&frame, redirects)?;
                continue;
            }
            match Error::of_frame(&frame) {
                Some(error)
                    if self.options.reconnect
                        && !reconnected
                        && error.code() == Some(crate::codes::SHUTTING_DOWN) =>
                {
                    // Draining before a restart: the connection closes once the drain ends.
                    self.drain_out();
                    self.reconnect()?;
                    reconnected = true;
                    continue;
                }
                Some(error) => return Err(error),
                None => return Ok(frame["data"].clone()),
            }
        }
    }

    /// The next push (waiting up to the client's timeout); `None` when the connection closed.
    /// A copy of a stored push handed over before is not returned (see the module
    /// documentation); the reply to an automatic `bester.ack` is read here, and its refusal is
    /// returned as the error.
    pub fn recv_push(&mut self) -> Result<Option<Value>, Error> {
        loop {
            let frame = match self.pushes.pop_front() {
                Some(frame) => frame,
                None => {
                    if !self.client.has_frame() {
                        self.flush_acks()?; // nothing more waiting: one ack for what was taken
                    }
                    match self.client.recv()? {
                        Some(frame) => frame,
                        None => return Ok(None),
                    }
                }
            };
            if let Some(frame) = self.sort(frame)? {
                return Ok(Some(frame));
            }
        }
    }

    /// A frame read while waiting for pushes: one to hand over, or `None` for a copy of a stored
    /// push or the reply to an automatic `bester.ack` (its refusal is the error).
    fn sort(&mut self, frame: Value) -> Result<Option<Value>, Error> {
        let header = &frame["header"];
        if header["kind"] == "reply" {
            if let Some(id) = header["id"].as_str()
                && self.acking.remove(id)
            {
                return Error::of_frame(&frame).map_or(Ok(None), Err);
            }
            return Ok(Some(frame));
        }
        if header["kind"] != "push" {
            return Ok(Some(frame));
        }
        let msg = header["msg"].as_str().map(str::to_string);
        match self.seen.arrived(msg.as_deref()) {
            Arrival::Deliver => {
                if let Some(msg) = msg.filter(|_| self.options.auto_ack) {
                    self.seen.owe(&msg);
                }
                Ok(Some(frame))
            }
            Arrival::AckAgain | Arrival::Drop => Ok(None),
        }
    }

    /// `bester.ack` for these stored pushes' ids (`header.msg`): the server deletes them; the
    /// number it deleted. With `auto_ack` off, call it once the work a push started is done; a
    /// copy that comes again before is not handed over twice.
    pub fn ack<S: AsRef<str>>(&mut self, msgs: &[S]) -> Result<u64, Error> {
        self.seen.acked(msgs);
        let mut acked = 0;
        for chunk in msgs.chunks(MAX_ACK) {
            let ids: Vec<&str> = chunk.iter().map(AsRef::as_ref).collect();
            let data = self.request("bester.ack", &json!({ "msgs": ids }))?;
            acked += data["acked"].as_u64().unwrap_or(0);
        }
        Ok(acked)
    }

    /// Send the automatic acks owed, one `bester.ack` per 4096 ids, without waiting for the
    /// reply ([`Session::recv_push`] reads it). On a broken connection they are lost, and the
    /// pushes come again after the reconnection, to be acknowledged again.
    pub fn flush_acks(&mut self) -> Result<(), Error> {
        while self.seen.owes() {
            let msgs = self.seen.take();
            let id = self.next_id.to_string();
            self.next_id += 1;
            match self
                .client
                .message(&id, "bester.ack", &json!({ "msgs": msgs }))
            {
                Ok(()) => {
                    self.acking.insert(id);
                }
                Err(e) if broken(&e) => return Ok(()), // the next read says the connection is gone
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Go where a redirect says, with its token.
    fn follow(&mut self, frame: &Value, hops: usize) -> Result<(), Error> {
        if hops > MAX_REDIRECTS {
            return Err(Error::Protocol(format!(
                "redirected more than {MAX_REDIRECTS} times"
            )));
        }
        let url = frame["data"]["url"].as_str().unwrap_or_default();
        let Some(token) = frame["data"]["token"].as_str() else {
            return Err(Error::Protocol(format!(
                "redirected to {url} without a token"
            )));
        };
        let uri = parse_url(url)?;
        if !uri.user.is_empty() {
            return Err(Error::Protocol(format!("a redirect names a user: {url}")));
        }
        if self.current.scheme.tls() && !uri.scheme.tls() {
            return Err(Error::Protocol(format!(
                "a redirect from TLS to {} is not followed",
                uri.scheme.prefix()
            )));
        }
        let login = Login::Token(token.to_string());
        let (client, identity) = Session::open(&uri, &login, &self.options)?;
        (self.client, self.identity, self.current) = (client, identity, uri);
        self.acking.clear();
        Ok(())
    }

    /// Wait (up to the timeout) for a draining server to close this connection.
    fn drain_out(&mut self) {
        self.client
            .set_deadline(self.options.timeout.map(|t| Instant::now() + t));
        while let Ok(Some(frame)) = self.client.recv() {
            if frame["header"]["kind"] == "push" {
                self.pushes.push_back(frame);
            }
        }
        self.client.set_deadline(None);
    }

    /// Connect again with backoff: with the resume token, else (at the first URL only) with the
    /// first login.
    fn reconnect(&mut self) -> Result<(), Error> {
        self.reconnects += 1;
        let until = Instant::now() + self.options.reconnect_for;
        let mut pause = Duration::from_millis(100);
        loop {
            let resume = self.identity.resume.clone().map(Login::Resume);
            let attempt = match resume {
                Some(resume) => match Session::open(&self.current, &resume, &self.options) {
                    Err(Error::Refused { .. }) if self.current == self.first => {
                        Session::open(&self.current, &self.login, &self.options)
                    }
                    other => other,
                },
                None if self.current == self.first => {
                    Session::open(&self.current, &self.login, &self.options)
                }
                None => Err(Error::Protocol(
                    "the connection broke and the server gave no resume token".into(),
                )),
            };
            match attempt {
                Ok((client, identity)) => {
                    (self.client, self.identity) = (client, identity);
                    self.acking.clear(); // their replies went with the old connection
                    return Ok(());
                }
                Err(Error::Io(e)) if Instant::now() + pause < until => {
                    let _ = e;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether an I/O error means the connection is gone (not merely slow).
fn broken(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected
    )
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("url", &self.current)
            .field("user", &self.identity.user)
            .finish()
    }
}
