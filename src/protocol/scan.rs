//! The hot-path reader: a strict JSON scanner for the two frames a broker sees most, a client's
//! message and a handler's answer, that borrows every string and the opaque `data` from the frame
//! and allocates nothing.
//!
//! It is a fast lane beside the serde path, never a second judge: it accepts only frames the full
//! path ([`super::message::parse_inbound`], [`super::handler::parse_handler_message`]) accepts,
//! and gives the same value. On anything else it returns `None` and the caller takes the full
//! path, which gives the exact error. "Anything else" is every syntax or data error, and also what
//! it leaves to the full path on purpose: escapes in the envelope's strings or in any key, `\u`
//! escapes anywhere, numbers with an exponent or over [`MAX_NUMBER`] bytes, objects with more
//! than [`INLINE_KEYS`] keys, `null` where an optional field may be `null`, and every envelope
//! field other than the common ones (`identify`, `authentication`, numeric handler statuses,
//! commands other than `reply`). So a frame is never refused here, and the error texts are the
//! full path's.
//!
//! What it checks is what the full path checks: JSON syntax (RFC 8259: no trailing commas, no
//! leading zeros, no control characters in strings), no repeated key in any object, nesting of at
//! most [`MAX_DEPTH`] levels, no unknown or repeated envelope field, the field types, `header.id`
//! at most [`MAX_ID_LEN`] bytes, the scope, and `payload.type`. The tests run both paths on the
//! protocol vectors and on generated frames and require the same answer; the fuzz target does the
//! same on arbitrary bytes.

use std::borrow::Cow;

use super::groups::Recipients;
use super::handler::{Command, HandlerMessage};
use super::message::{ClientMessage, MAX_ID_LEN, PayloadRef, Scope, Status, valid_type};
use super::validate::MAX_DEPTH;

/// Objects with more keys than this are left to the full path.
pub const INLINE_KEYS: usize = 16;
/// Numbers longer than this (in bytes) are left to the full path. Shorter ones without an
/// exponent are always finite, so the full path accepts them too.
pub const MAX_NUMBER: usize = 40;

/// The one answer the fast lane reads from a handler: a reply to a request.
static REPLY: Command = Command::Reply;

/// A cursor over a frame's text.
struct Scan<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Self {
        Scan { text, pos: 0 }
    }

    fn byte(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// The next byte after whitespace.
    fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.byte() {
            self.pos += 1;
        }
        self.byte()
    }

    /// Consume `c` (after whitespace).
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.pos += 1)
    }

    /// After a member or element: `true` for a comma, `false` for the closing `end`.
    fn more(&mut self, end: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.pos += 1;
                Some(true)
            }
            c if c == end => {
                self.pos += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// The whole text was consumed (trailing whitespace allowed).
    fn end(&mut self) -> Option<()> {
        self.peek().is_none().then_some(())
    }

    /// Skip the bytes of a string that need no look (not `"`, `\\` or a control character), eight
    /// at a time, up to the first one that does (or the last few bytes of the text).
    fn skip_plain(&mut self) {
        let bytes = self.text.as_bytes();
        while let Some(chunk) = bytes.get(self.pos..self.pos + 8) {
            let mask = special(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
            if mask != 0 {
                self.pos += (mask.trailing_zeros() / 8) as usize;
                return;
            }
            self.pos += 8;
        }
    }

    /// A string without escapes (after whitespace): its contents.
    fn plain_str(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.pos;
        let bytes = self.text.as_bytes();
        loop {
            self.skip_plain();
            match *bytes.get(self.pos)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.pos += 1,
            }
        }
        self.pos += 1;
        // Both ends are next to an ASCII quote, so they are character boundaries.
        self.text.get(start..self.pos - 1)
    }

    /// Skip a string (the opening quote is next) that may hold the simple escapes.
    fn skip_str(&mut self) -> Option<()> {
        self.pos += 1;
        let bytes = self.text.as_bytes();
        loop {
            self.skip_plain();
            match *bytes.get(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    return Some(());
                }
                b'\\' => {
                    match *bytes.get(self.pos + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        _ => return None,
                    }
                    self.pos += 2;
                }
                0..=0x1f => return None,
                _ => self.pos += 1,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.byte() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, at most [`MAX_NUMBER`] bytes.
    fn number(&mut self) -> Option<()> {
        let start = self.pos;
        if self.byte() == Some(b'-') {
            self.pos += 1;
        }
        match self.byte()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.byte() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.byte() {
            return None;
        }
        (self.pos - start <= MAX_NUMBER).then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        (self.text.as_bytes().get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// `true` or `false` (after whitespace).
    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    /// Any value (after whitespace) inside `depth` enclosing arrays and objects.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_str(),
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(());
        }
        let mut keys: [&str; INLINE_KEYS] = [""; INLINE_KEYS];
        let mut len = 0;
        loop {
            let key = self.plain_str()?;
            if len == INLINE_KEYS || keys[..len].contains(&key) {
                return None;
            }
            keys[len] = key;
            len += 1;
            self.eat(b':')?;
            self.value(depth + 1)?;
            if !self.more(b'}')? {
                return Some(());
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(());
        }
        loop {
            self.value(depth + 1)?;
            if !self.more(b']')? {
                return Some(());
            }
        }
    }

    /// A value's text, or `None` for `null` (an absent optional field).
    fn raw(&mut self, depth: usize) -> Option<Option<&'a str>> {
        self.peek()?;
        let start = self.pos;
        self.value(depth)?;
        let text = &self.text[start..self.pos];
        Some((text != "null").then_some(text))
    }

    /// An object (after whitespace) whose members `member` reads one at a time; it gets each key
    /// and reads the value itself, or refuses the key.
    fn members(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        loop {
            let key = self.plain_str()?;
            self.eat(b':')?;
            member(self, key)?;
            if !self.more(b'}')? {
                return Some(());
            }
        }
    }

    /// An array of strings without escapes.
    fn names(&mut self) -> Option<Vec<String>> {
        self.eat(b'[')?;
        let mut names = Vec::new();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(names);
        }
        loop {
            names.push(self.plain_str()?.to_string());
            if !self.more(b']')? {
                return Some(names);
            }
        }
    }

    /// `payload`: `{"type":T,"data":D}` (data optional), at depth 1.
    fn payload(&mut self) -> Option<PayloadRef<'a>> {
        let (mut kind, mut data, mut seen_data) = (None, None, false);
        self.members(|s, key| {
            match key {
                "type" if kind.is_none() => kind = Some(s.plain_str()?),
                "data" if !seen_data => {
                    seen_data = true;
                    data = s.raw(2)?;
                }
                _ => return None,
            }
            Some(())
        })?;
        let kind = kind.filter(|k| valid_type(k))?;
        Some(PayloadRef {
            kind: Cow::Borrowed(kind),
            data: data.map(Cow::Borrowed),
        })
    }
}

/// The high bit of each of the eight bytes of `word` (little-endian) that is `"`, `\\` or below
/// 0x20, by the bit tricks of "Bit Twiddling Hacks". No such byte is missed, and the lowest bit
/// set is exact (a byte after a flagged one may be flagged wrongly: the subtraction's borrow only
/// runs upwards), which is all the caller uses.
fn special(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    quote | backslash | control
}

/// The whole frame `{"header":{..},"payload":{..}}` (either order, `payload` optional), with
/// each member of `header` read by `header`: the payload, if there was one.
fn envelope<'a>(
    text: &'a str,
    mut header: impl FnMut(&mut Scan<'a>, &'a str) -> Option<()>,
) -> Option<Option<PayloadRef<'a>>> {
    let mut s = Scan::new(text);
    let (mut seen_header, mut payload) = (false, None);
    s.members(|s, key| match key {
        "header" if !seen_header => {
            seen_header = true;
            s.members(&mut header)
        }
        "payload" if payload.is_none() => {
            payload = Some(s.payload()?);
            Some(())
        }
        _ => None,
    })?;
    s.end()?;
    seen_header.then_some(payload)
}

/// Set `slot` once; a second time is a repeated field.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.is_none().then(|| *slot = Some(value))
}

/// A client's message after identify, in the common shape
/// `{"header":{"scope":S,"id":I},"payload":{"type":T,"data":D}}` (any order; `id` and `data`
/// optional), or `None` for the full path.
pub fn client_message(text: &str) -> Option<ClientMessage<'_>> {
    let (mut scope, mut id, mut user) = (None, None, None);
    let payload = envelope(text, |s, key| match key {
        "scope" => once(&mut scope, s.plain_str()?),
        "id" => once(&mut id, s.plain_str()?),
        "user" => once(&mut user, s.plain_str()?),
        _ => None,
    })?;
    let scope = match scope? {
        "client" => Scope::Client,
        "server" => Scope::Server,
        _ => return None,
    };
    if id.is_some_and(|id: &str| id.len() > MAX_ID_LEN) {
        return None;
    }
    Some(ClientMessage {
        id: id.map(Cow::Borrowed),
        scope,
        payload: payload?,
        authentication: None,
        user: user.map(Cow::Borrowed),
    })
}

/// A handler's answer in the common shape
/// `{"header":{"status":"ok"|"error","request":R,"id":I,"command":C,"commandData":[..],"replies":B,"store":B},"payload":P}`
/// (any order; all but `status` optional): `C` is `reply` (no `commandData`), `sendClients` or
/// `sendServers` (with `commandData`, an array of names; `replies` only with `sendServers`,
/// `store` only with `sendClients`). `None` for the full path.
pub fn handler_message(text: &str) -> Option<HandlerMessage<'_>> {
    let (mut status, mut request, mut id, mut command) = (None, None, None, None);
    let (mut names, mut replies, mut store) = (None, None, None);
    let payload = envelope(text, |s, key| match key {
        "status" => {
            let value = match s.plain_str()? {
                "ok" => Status::Ok,
                "error" => Status::Error,
                _ => return None,
            };
            once(&mut status, value)
        }
        "request" => once(&mut request, s.plain_str()?),
        "id" => once(&mut id, s.plain_str()?),
        "command" => once(&mut command, s.plain_str()?),
        "commandData" => once(&mut names, s.names()?),
        "replies" => once(&mut replies, s.boolean()?),
        "store" => once(&mut store, s.boolean()?),
        _ => None,
    })?;
    let command = match (command.unwrap_or("reply"), names, replies, store) {
        ("reply", None, None, None) => Cow::Borrowed(&REPLY),
        ("sendClients", Some(users), None, _) => {
            Cow::Owned(Command::SendClients(Recipients::users(users)))
        }
        ("sendServers", Some(servers), _, None) => Cow::Owned(Command::SendServers(servers)),
        _ => return None,
    };
    Some(HandlerMessage {
        status: status?,
        status_code: None,
        command,
        request: request.map(Cow::Borrowed),
        id: id.map(Cow::Borrowed),
        payload,
        replies: replies.unwrap_or(false),
        store: store.unwrap_or(false),
    })
}

/// Whether `text` is one JSON value that the strict check accepts at `depth`, as far as the fast
/// lane can tell (`false` may also mean "ask the full check").
pub fn plain_value(text: &str, depth: usize) -> bool {
    let mut s = Scan::new(text);
    s.value(depth).and_then(|()| s.end()).is_some()
}

pub mod peer;

#[cfg(test)]
mod tests;
