//! Login throttling: failed logins counted per username and per client address over a
//! sliding window. Past the limit a login is refused before its password is checked (HTTP
//! 429 with `Retry-After`) until the oldest failure in the window ages out.
//!
//! Every username counts, existing or not, so the throttle tells nothing about which users
//! exist. IPv6 addresses count per /64 (one host usually has a whole /64). The per-address
//! limit is higher than the per-user one by default because a call centre's agents often
//! share one public address. A success clears the username's failures, not the address's.
//!
//! The state is bounded ([`ThrottleConfig::max_keys`]): past the bound, expired keys are
//! dropped, then the key idle longest. It is per node: behind a load balancer each node
//! counts on its own, which multiplies the allowance by the number of nodes at most.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// The throttle's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures of one username allowed in the window.
    pub per_user: u32,
    /// Failures from one address (IPv6: one /64) allowed in the window.
    pub per_address: u32,
    pub window_ms: i64,
    /// The most usernames plus addresses tracked.
    pub max_keys: usize,
}

impl Default for ThrottleConfig {
    /// 5 failures per username and 20 per address in 15 minutes.
    fn default() -> Self {
        ThrottleConfig {
            per_user: 5,
            per_address: 20,
            window_ms: 15 * 60_000,
            max_keys: 100_000,
        }
    }
}

/// A refused login: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after_ms: i64,
}

impl Throttled {
    /// The `Retry-After` header's value: whole seconds, rounded up, at least 1.
    pub fn retry_after_s(&self) -> u64 {
        (self.retry_after_ms.max(1) as u64).div_ceil(1000)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    V4([u8; 4]),
    V6([u8; 8]),
}

fn addr_key(a: IpAddr) -> Key {
    match a {
        IpAddr::V4(v4) => Key::V4(v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Key::V4(v4.octets()),
            None => {
                let mut p = [0u8; 8];
                p.copy_from_slice(&v6.octets()[..8]);
                Key::V6(p)
            }
        },
    }
}

fn user_key(username: &str) -> Key {
    Key::User(username.trim().to_ascii_lowercase())
}

/// The failed-login counter (see the module docs).
#[derive(Debug, Clone)]
pub struct Throttle {
    cfg: ThrottleConfig,
    /// Failure times per key, oldest first, at most the key's limit of them.
    failures: HashMap<Key, VecDeque<i64>>,
}

impl Throttle {
    pub fn new(cfg: ThrottleConfig) -> Throttle {
        Throttle {
            cfg,
            failures: HashMap::new(),
        }
    }

    /// At least 1: a limit of 0 would refuse even the first try, for ever.
    fn limit(&self, k: &Key) -> u32 {
        match k {
            Key::User(_) => self.cfg.per_user,
            _ => self.cfg.per_address,
        }
        .max(1)
    }

    /// How long `k` is refused at `now_ms`, if it is.
    fn blocked(&self, k: &Key, now_ms: i64) -> Option<i64> {
        let q = self.failures.get(k)?;
        let live = q.iter().filter(|t| now_ms - **t < self.cfg.window_ms);
        if live.count() < self.limit(k) as usize {
            return None;
        }
        // Allowed again once the oldest failure that keeps the count at the limit ages out.
        let oldest = q[q.len() - self.limit(k) as usize];
        Some(oldest + self.cfg.window_ms - now_ms)
    }

    /// Whether a login for `username` from `from` may be tried at `now_ms`.
    pub fn check(&self, username: &str, from: IpAddr, now_ms: i64) -> Result<(), Throttled> {
        let wait = [user_key(username), addr_key(from)]
            .iter()
            .filter_map(|k| self.blocked(k, now_ms))
            .max();
        match wait {
            Some(ms) => Err(Throttled { retry_after_ms: ms }),
            None => Ok(()),
        }
    }

    /// A login failed.
    pub fn failed(&mut self, username: &str, from: IpAddr, now_ms: i64) {
        for k in [user_key(username), addr_key(from)] {
            if !self.failures.contains_key(&k) && self.failures.len() >= self.cfg.max_keys {
                self.make_room(now_ms);
            }
            let limit = self.limit(&k) as usize;
            let window = self.cfg.window_ms;
            let q = self.failures.entry(k).or_default();
            while q.front().is_some_and(|t| now_ms - *t >= window) {
                q.pop_front();
            }
            q.push_back(now_ms);
            while q.len() > limit {
                q.pop_front();
            }
        }
    }

    /// A login succeeded: the username's failures are forgotten.
    pub fn succeeded(&mut self, username: &str) {
        self.failures.remove(&user_key(username));
    }

    /// Drops keys whose failures are all out of the window (call now and then).
    pub fn prune(&mut self, now_ms: i64) {
        let window = self.cfg.window_ms;
        self.failures
            .retain(|_, q| q.back().is_some_and(|t| now_ms - *t < window));
    }

    fn make_room(&mut self, now_ms: i64) {
        self.prune(now_ms);
        if self.failures.len() < self.cfg.max_keys {
            return;
        }
        let oldest = self
            .failures
            .iter()
            .min_by_key(|(_, q)| q.back().copied().unwrap_or(i64::MIN))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.failures.remove(&k);
        }
    }

    /// Usernames and addresses tracked.
    pub fn keys(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;
    const MIN: i64 = 60_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn five_failures_of_a_user_refuse_the_sixth_until_the_first_ages_out() {
        let mut t = Throttle::new(ThrottleConfig::default());
        let a = ip("192.0.2.1");
        for i in 0..5 {
            assert_eq!(t.check("anna", a, T0 + i * MIN), Ok(()));
            t.failed("anna", ip(&format!("192.0.2.{}", 10 + i)), T0 + i * MIN);
        }
        // From any address, in any case.
        let refused = t.check("ANNA", a, T0 + 5 * MIN).unwrap_err();
        assert_eq!(refused.retry_after_ms, 10 * MIN);
        assert_eq!(refused.retry_after_s(), 600);
        assert!(t.check("anna", a, T0 + 15 * MIN - 1).is_err());
        assert_eq!(
            t.check("anna", a, T0 + 15 * MIN),
            Ok(()),
            "the first aged out"
        );
        // One more failure then blocks until the second ages out.
        t.failed("anna", a, T0 + 15 * MIN);
        assert_eq!(
            t.check("anna", a, T0 + 15 * MIN)
                .unwrap_err()
                .retry_after_ms,
            MIN
        );
        // Another user is not affected.
        assert_eq!(t.check("bert", a, T0 + 5 * MIN), Ok(()));
    }

    #[test]
    fn an_address_is_refused_after_its_own_limit_whatever_the_usernames() {
        let mut t = Throttle::new(ThrottleConfig::default());
        let a = ip("198.51.100.7");
        for i in 0..20 {
            t.failed(&format!("user{i}"), a, T0 + i);
        }
        assert!(t.check("fresh", a, T0 + 20).is_err());
        assert_eq!(t.check("fresh", ip("198.51.100.8"), T0 + 20), Ok(()));
        // IPv6 counts per /64, and a v4-mapped address as its IPv4.
        let mut t = Throttle::new(ThrottleConfig {
            per_address: 2,
            ..Default::default()
        });
        t.failed("a", ip("2001:db8:1:2::1"), T0);
        t.failed("b", ip("2001:db8:1:2:ffff::9"), T0);
        assert!(t.check("c", ip("2001:db8:1:2::77"), T0).is_err());
        assert!(t.check("c", ip("2001:db8:1:3::1"), T0).is_ok());
        t.failed("a", ip("::ffff:192.0.2.9"), T0);
        t.failed("b", ip("192.0.2.9"), T0);
        assert!(t.check("c", ip("192.0.2.9"), T0).is_err());
    }

    #[test]
    fn a_success_clears_the_user_but_not_the_address() {
        let cfg = ThrottleConfig {
            per_user: 3,
            per_address: 4,
            ..Default::default()
        };
        let mut t = Throttle::new(cfg);
        let a = ip("192.0.2.1");
        for i in 0..3 {
            t.failed("anna", a, T0 + i);
        }
        assert!(t.check("anna", ip("192.0.2.2"), T0 + 3).is_err());
        t.succeeded("Anna");
        assert_eq!(t.check("anna", ip("192.0.2.2"), T0 + 3), Ok(()));
        t.failed("bert", a, T0 + 4);
        assert!(t.check("anna", a, T0 + 5).is_err(), "the address is at 4");
    }

    #[test]
    fn the_state_stays_bounded() {
        let mut t = Throttle::new(ThrottleConfig {
            max_keys: 10,
            ..Default::default()
        });
        for i in 0..100 {
            t.failed(&format!("u{i}"), ip("192.0.2.1"), T0 + i);
            assert!(t.keys() <= 10, "{}", t.keys());
        }
        // The address (failing on every attempt) is the freshest key and stays counted.
        assert!(t.check("new", ip("192.0.2.1"), T0 + 100).is_err());
        t.prune(T0 + 100 + 15 * MIN);
        assert_eq!(t.keys(), 0);
    }
}
