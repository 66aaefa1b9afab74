//! Abuse limits, pure (the clock is passed in): token buckets of failed logins per source address
//! and per (username, source address), so a flood of bad passwords is refused before any argon2
//! work. A source address is an IPv4 address or an IPv6 /64 (what one host usually gets).
//!
//! The per-name bucket is keyed by the address too, so failures from other addresses never
//! refuse a user's (or a peer's) correct password from an address that has not failed itself:
//! guessing from many addresses is slowed by each address's own buckets and by the argon2 cost of
//! every attempt, not by locking the user out. A name that breaks the naming rules (see
//! [`crate::auth::user_store::validate_username`]) cannot be a user; its attempts are counted
//! under one placeholder, so garbage names do not make keys.
//!
//! Memory is bounded: maps only grow with failures, refilled buckets are swept, each map holds at
//! most [`MAX_KEYS`] keys, and a key is at most a valid name (64 bytes) and an address.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::warn;

/// Buckets refill completely over this period.
const WINDOW: Duration = Duration::from_secs(60);
/// Past this many tracked keys, refilled buckets are swept before a new one is added.
const SWEEP_AT: usize = 10_000;
/// Sweeps are at least this far apart.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Hard cap on tracked keys per map; past it, failures of new keys are not tracked (refusing new
/// keys instead would let whoever fills the map lock out every address not yet in it; argon2's
/// cost per attempt still bounds guessing).
pub const MAX_KEYS: usize = 100_000;
/// What attempts for a name that cannot be a user are counted under.
const INVALID_NAME: &str = "\u{0}invalid";

/// A source address as the limits see it: an IPv4 address, or the /64 of an IPv6 address (an
/// IPv4-mapped IPv6 address is its IPv4 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address.
    V4(std::net::Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6(u64),
}

impl Source {
    /// The limits' view of `ip`.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// The key of a per-name bucket: the name (or the placeholder for invalid names) and the source.
fn name_key(user: &str, ip: Option<IpAddr>) -> (String, Option<Source>) {
    let name = if crate::auth::user_store::validate_username(user).is_ok()
        || user
            .strip_prefix("server:")
            .is_some_and(|peer| peer.len() <= crate::auth::user_store::MAX_USERNAME_LEN)
    {
        user
    } else {
        INVALID_NAME
    };
    (name.to_string(), ip.map(Source::of))
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    refused: u64,
}

#[derive(Debug)]
struct Buckets<K> {
    capacity: f64,
    map: HashMap<K, Bucket>,
    /// When the map was last swept: at most once per [`SWEEP_EVERY`], so that however many keys
    /// an attacker adds, sweeping costs the loop at most one pass over the map per interval.
    swept: Option<Instant>,
}

impl<K: Hash + Eq + Clone + std::fmt::Debug> Buckets<K> {
    fn new(capacity: u32) -> Self {
        Buckets {
            capacity: f64::from(capacity),
            map: HashMap::new(),
            swept: None,
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens =
            (bucket.tokens + elapsed * self.capacity / WINDOW.as_secs_f64()).min(self.capacity);
        bucket.updated = now;
    }

    /// Whether another attempt is allowed (at least one failure left in the bucket).
    fn allows(&mut self, key: &K, now: Instant) -> bool {
        let capacity = self.capacity;
        let Some(mut bucket) = self.map.get(key).cloned() else {
            // Never failed (or not tracked): nothing to hold against it.
            return true;
        };
        self.refill(&mut bucket, now);
        let allowed = bucket.tokens >= 1.0;
        if !allowed {
            if bucket.refused == 0 {
                warn!(
                    "login attempts for {key:?} are rate limited ({capacity} failures per minute)"
                );
            }
            bucket.refused += 1;
        } else {
            bucket.refused = 0;
        }
        self.map.insert(key.clone(), bucket);
        allowed
    }

    fn failed(&mut self, key: &K, now: Instant) {
        if !self.map.contains_key(key) {
            if self.map.len() >= SWEEP_AT
                && self
                    .swept
                    .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY)
            {
                self.sweep(now);
                self.swept = Some(now);
            }
            if self.map.len() >= MAX_KEYS {
                return;
            }
        }
        let capacity = self.capacity;
        let mut bucket = self.map.remove(key).unwrap_or(Bucket {
            tokens: capacity,
            updated: now,
            refused: 0,
        });
        self.refill(&mut bucket, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        self.map.insert(key.clone(), bucket);
    }

    /// Forget buckets that have refilled: they hold no information.
    fn sweep(&mut self, now: Instant) {
        let capacity = self.capacity;
        self.map.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * capacity / WINDOW.as_secs_f64() < capacity
        });
    }
}

/// Failed-login limits per source address and per (username, source address).
#[derive(Debug)]
pub struct LoginLimiter {
    ips: Buckets<Source>,
    users: Buckets<(String, Option<Source>)>,
}

impl LoginLimiter {
    /// Allow `per_ip` failures per minute from one address and `per_user` per minute for one name
    /// from one address.
    pub fn new(per_ip: u32, per_user: u32) -> Self {
        LoginLimiter {
            ips: Buckets::new(per_ip),
            users: Buckets::new(per_user),
        }
    }

    /// Whether a login attempt may be checked now.
    pub fn allows(&mut self, ip: Option<IpAddr>, user: &str, now: Instant) -> bool {
        let ip_ok = ip.is_none_or(|ip| self.ips.allows(&Source::of(ip), now));
        let user_ok = self.users.allows(&name_key(user, ip), now);
        ip_ok && user_ok
    }

    /// Record a failed attempt.
    pub fn failed(&mut self, ip: Option<IpAddr>, user: &str, now: Instant) {
        if let Some(ip) = ip {
            self.ips.failed(&Source::of(ip), now);
        }
        self.users.failed(&name_key(user, ip), now);
    }

    /// Keys tracked (for tests and status).
    pub fn tracked(&self) -> (usize, usize) {
        (self.ips.map.len(), self.users.map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn per_user_failures_are_limited_and_refill() {
        let mut l = LoginLimiter::new(100, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.allows(IP, "alice", t0));
            l.failed(IP, "alice", t0);
        }
        assert!(
            !l.allows(IP, "alice", t0),
            "fourth failure in a minute is refused"
        );
        assert!(l.allows(IP, "bob", t0), "other users are not affected");
        // One token back after a third of the window.
        assert!(l.allows(IP, "alice", t0 + WINDOW / 3 + Duration::from_millis(1)));
    }

    #[test]
    fn per_ip_failures_are_limited_across_names() {
        let mut l = LoginLimiter::new(5, 100);
        let t0 = Instant::now();
        for i in 0..5 {
            l.failed(IP, &format!("user{i}"), t0);
        }
        assert!(!l.allows(IP, "fresh-name", t0));
        let other = Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2)));
        assert!(l.allows(other, "fresh-name", t0));
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn failures_from_other_addresses_never_refuse_a_clean_address() {
        let mut l = LoginLimiter::new(100, 3);
        let t0 = Instant::now();
        for i in 2..20 {
            let from = ip(&format!("127.0.0.{i}"));
            if l.allows(from, "carol", t0) {
                l.failed(from, "carol", t0);
            }
        }
        assert!(l.allows(IP, "carol", t0), "carol from her own address");
        for _ in 0..3 {
            l.failed(ip("127.0.0.2"), "carol", t0);
        }
        assert!(
            !l.allows(ip("127.0.0.2"), "carol", t0),
            "the attacker is limited"
        );
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        let mut l = LoginLimiter::new(3, 100);
        let t0 = Instant::now();
        for i in 1..=3 {
            l.failed(ip(&format!("2001:db8:1:2::{i}")), &format!("u{i}"), t0);
        }
        assert!(
            !l.allows(ip("2001:db8:1:2:ffff::1"), "fresh", t0),
            "same /64"
        );
        assert!(l.allows(ip("2001:db8:1:3::1"), "fresh", t0), "another /64");
        assert_eq!(
            Source::of("::ffff:10.0.0.1".parse().unwrap()),
            Source::of("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn invalid_names_share_one_key() {
        let mut l = LoginLimiter::new(1000, 1000);
        let t0 = Instant::now();
        for i in 0..100 {
            l.failed(IP, &format!("{}{i}", "x".repeat(100)), t0);
            l.failed(IP, &format!("bad name {i}"), t0);
        }
        assert_eq!(
            l.tracked().1,
            1,
            "one placeholder key for names that cannot be users"
        );
        l.failed(IP, "server:b", t0);
        assert_eq!(l.tracked().1, 2, "peer names are keys of their own");
    }

    #[test]
    fn a_full_map_does_not_lock_out_new_addresses() {
        let mut l = LoginLimiter::new(1, 1);
        let t0 = Instant::now();
        for i in 0..MAX_KEYS as u32 {
            let from = Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
            l.failed(from, "alice", t0);
        }
        assert_eq!(l.tracked(), (MAX_KEYS, MAX_KEYS));
        assert!(l.allows(IP, "alice", t0), "a fresh address is not refused");
        assert!(!l.allows(Some("10.0.0.1".parse().unwrap()), "alice", t0));
    }

    #[test]
    fn refilled_buckets_are_swept() {
        let mut l = LoginLimiter::new(1000, 1000);
        let t0 = Instant::now();
        for i in 0..SWEEP_AT {
            l.failed(None, &format!("u{i}"), t0);
        }
        assert_eq!(l.tracked().1, SWEEP_AT);
        l.failed(None, "late", t0 + WINDOW);
        assert_eq!(l.tracked().1, 1, "old buckets refilled and were forgotten");
    }
}
