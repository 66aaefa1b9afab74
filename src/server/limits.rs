//! Abuse limits, pure (the clock is passed in): token buckets of failed logins per source address
//! and per username, so a flood of bad passwords is refused before any argon2 work, and connection
//! counts per source address. Maps only grow with failures and are swept of refilled buckets, so an
//! attacker cycling through names cannot grow them without bound.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::warn;

/// Buckets refill completely over this period.
const WINDOW: Duration = Duration::from_secs(60);
/// Past this many tracked keys, refilled buckets are swept before a new one is added.
const SWEEP_AT: usize = 10_000;
/// Hard cap on tracked keys per map; past it, new keys are treated as limited.
const MAX_KEYS: usize = 100_000;

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
}

impl<K: Hash + Eq + Clone + std::fmt::Debug> Buckets<K> {
    fn new(capacity: u32) -> Self {
        Buckets {
            capacity: f64::from(capacity),
            map: HashMap::new(),
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
            return self.map.len() < MAX_KEYS;
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
            if self.map.len() >= SWEEP_AT {
                self.sweep(now);
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

/// Failed-login limits per source address and per username.
#[derive(Debug)]
pub struct LoginLimiter {
    ips: Buckets<IpAddr>,
    users: Buckets<String>,
}

impl LoginLimiter {
    /// Allow `per_ip` failures per minute from one address and `per_user` per minute for one name.
    pub fn new(per_ip: u32, per_user: u32) -> Self {
        LoginLimiter {
            ips: Buckets::new(per_ip),
            users: Buckets::new(per_user),
        }
    }

    /// Whether a login attempt may be checked now.
    pub fn allows(&mut self, ip: Option<IpAddr>, user: &str, now: Instant) -> bool {
        let ip_ok = ip.is_none_or(|ip| self.ips.allows(&ip, now));
        let user_ok = self.users.allows(&user.to_string(), now);
        ip_ok && user_ok
    }

    /// Record a failed attempt.
    pub fn failed(&mut self, ip: Option<IpAddr>, user: &str, now: Instant) {
        if let Some(ip) = ip {
            self.ips.failed(&ip, now);
        }
        self.users.failed(&user.to_string(), now);
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
