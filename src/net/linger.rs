//! Lingering close: a TCP connection the server is done with (after an error, a timeout, a
//! logout) is not closed while the peer may still be sending. Closing a socket whose input has
//! not been read makes the kernel send a reset instead of a FIN, and a reset makes the peer's
//! kernel drop what it had received and not yet handed to the application: the error frame and
//! the WebSocket close frame written just before are lost (a client library then reports 1006
//! or "connection reset").
//!
//! So a closing connection's last output is written, its write side is shut down (the peer sees
//! the end of stream after the last byte), and its input is read and thrown away until the peer
//! closes too, or [`LINGER_TIME`] passes, or [`LINGER_BYTES`] more bytes came; only then is the
//! socket closed. Each lingering socket is a small entry here with its own poll token and a
//! deadline; nothing blocks. At most `max` sockets linger at once (a full table closes at once,
//! as before), so an attacker cannot turn lingering into a descriptor leak.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;

/// How long a closed connection's input is drained at most.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// How many bytes of a closed connection's input are drained at most.
pub const LINGER_BYTES: usize = 4 << 20;

struct Entry {
    sock: TcpStream,
    generation: u64,
    /// Bytes that may still be read and discarded.
    budget: usize,
}

/// The sockets whose input is being drained before they close.
pub struct Linger {
    socks: Slab<Entry>,
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    generation: u64,
    base: usize,
    max: usize,
}

impl std::fmt::Debug for Linger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Linger")
            .field("open", &self.socks.len())
            .finish()
    }
}

impl Linger {
    /// Sockets take poll tokens from `base` up; at most `max` linger at once.
    pub fn new(base: usize, max: usize) -> Linger {
        Linger {
            socks: Slab::new(),
            deadlines: BinaryHeap::new(),
            generation: 0,
            base,
            max,
        }
    }

    /// Whether `token` is one of ours.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.base
    }

    /// How many sockets are lingering.
    pub fn len(&self) -> usize {
        self.socks.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    /// Take over a socket whose last output has been handed to the kernel (deregistered from
    /// its old token already): shut its write side, and drain its input until the peer closes,
    /// the time or the byte budget is up. A full table, or a socket already at its end, is
    /// closed at once.
    pub fn start(&mut self, registry: &Registry, mut sock: TcpStream, now: Instant) {
        let _ = sock.shutdown(std::net::Shutdown::Write);
        if self.socks.len() >= self.max {
            return;
        }
        self.generation += 1;
        let entry = self.socks.vacant_entry();
        let slot = entry.key();
        if registry
            .register(&mut sock, Token(self.base + slot), Interest::READABLE)
            .is_err()
        {
            return;
        }
        entry.insert(Entry {
            sock,
            generation: self.generation,
            budget: LINGER_BYTES,
        });
        self.deadlines
            .push(Reverse((now + LINGER_TIME, slot, self.generation)));
        // Input that came before registering gives no event: read it now.
        self.ready(registry, Token(self.base + slot), &mut [0u8; 4096]);
    }

    /// A lingering socket is readable: read and discard what came; close it at its end, on an
    /// error, or when its budget is spent.
    pub fn ready(&mut self, registry: &Registry, token: Token, scratch: &mut [u8]) {
        let slot = token.0 - self.base;
        let Some(entry) = self.socks.get_mut(slot) else {
            return;
        };
        let done = loop {
            match entry.sock.read(scratch) {
                Ok(0) => break true,
                Ok(n) if n >= entry.budget => break true,
                Ok(n) => entry.budget -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if done {
            self.close(registry, slot);
        }
    }

    /// The next deadline, if any socket lingers.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Close the sockets whose time is up.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        while let Some(Reverse((at, slot, generation))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if self
                .socks
                .get(slot)
                .is_some_and(|e| e.generation == generation)
            {
                self.close(registry, slot);
            }
        }
    }

    /// Close every lingering socket (the server stops).
    pub fn close_all(&mut self, registry: &Registry) {
        for mut entry in self.socks.drain() {
            let _ = registry.deregister(&mut entry.sock);
        }
        self.deadlines.clear();
    }

    fn close(&mut self, registry: &Registry, slot: usize) {
        let mut entry = self.socks.remove(slot);
        let _ = registry.deregister(&mut entry.sock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_closed_connection_drains_its_input_and_ends_with_a_fin() {
        let mut poll = mio::Poll::new().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        // Unread input when the server is done with the connection.
        peer.write_all(&[7u8; 10_000]).unwrap();
        let mut linger = Linger::new(1000, 4);
        linger.start(poll.registry(), TcpStream::from_std(ours), Instant::now());
        // The peer sees a clean end of stream, not a reset.
        let mut buf = [0u8; 16];
        assert_eq!(peer.read(&mut buf).unwrap(), 0);
        // It closes its side too; the lingering socket is then closed.
        drop(peer);
        let mut events = mio::Events::with_capacity(4);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !linger.is_empty() && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            for event in &events {
                linger.ready(poll.registry(), event.token(), &mut [0u8; 4096]);
            }
        }
        assert!(linger.is_empty());
    }

    #[test]
    fn lingering_is_bounded_in_count_and_time() {
        let poll = mio::Poll::new().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peers = Vec::new();
        let mut linger = Linger::new(1000, 2);
        let now = Instant::now();
        for _ in 0..3 {
            peers.push(std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap());
            let (ours, _) = listener.accept().unwrap();
            ours.set_nonblocking(true).unwrap();
            linger.start(poll.registry(), TcpStream::from_std(ours), now);
        }
        assert_eq!(linger.len(), 2, "the third is closed at once");
        assert_eq!(linger.next_deadline(), Some(now + LINGER_TIME));
        linger.expire(poll.registry(), now + LINGER_TIME);
        assert!(linger.is_empty());
    }
}
