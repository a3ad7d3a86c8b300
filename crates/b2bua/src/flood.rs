//! Per-source request rate limiting, as Kamailio's `pike` does: each source IP address has a
//! token bucket; a request that finds it empty is refused (503 with Retry-After) or dropped.
//!
//! Sans-IO like the rest of the core: time comes in as `now`. Memory is bounded: buckets idle
//! long enough to be full again are forgotten, and the table never holds more than
//! `max_sources` entries (the oldest are evicted first when a spoofed-source flood tries to
//! grow it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What to do with a request over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodAction {
    /// Answer 503 Service Unavailable with Retry-After (costs a parse and a send).
    Reject,
    /// Drop silently (cheapest; the sender sees a timeout).
    Drop,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FloodConfig {
    /// Sustained requests per second allowed from one address; 0 disables the limit.
    pub rate: f64,
    /// Requests one address may send in a burst above the rate.
    pub burst: f64,
    pub action: FloodAction,
    pub max_sources: usize,
    /// Trusted networks (carrier trunks, the PBX) that are never limited.
    pub exempt: Vec<crate::routing::Cidr>,
}

impl Default for FloodConfig {
    fn default() -> Self {
        Self {
            rate: 0.0,
            burst: 0.0,
            action: FloodAction::Reject,
            max_sources: 100_000,
            exempt: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Outcome of [`FloodGuard::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Limit(FloodAction),
}

#[derive(Debug)]
pub struct FloodGuard {
    cfg: FloodConfig,
    buckets: HashMap<IpAddr, Bucket>,
    next_sweep: Option<Instant>,
    limited: u64,
}

impl FloodGuard {
    pub fn new(cfg: FloodConfig) -> Self {
        Self {
            cfg,
            buckets: HashMap::new(),
            next_sweep: None,
            limited: 0,
        }
    }

    pub fn set_config(&mut self, cfg: FloodConfig) {
        self.cfg = cfg;
    }

    /// Requests refused or dropped so far.
    pub fn limited(&self) -> u64 {
        self.limited
    }

    pub fn sources(&self) -> usize {
        self.buckets.len()
    }

    /// Charges one request from `src` at `now`.
    pub fn check(&mut self, now: Instant, src: IpAddr) -> Verdict {
        if self.cfg.rate <= 0.0 || self.cfg.exempt.iter().any(|c| c.contains(src)) {
            return Verdict::Allow;
        }
        self.sweep(now);
        let cap = self.cfg.burst.max(1.0);
        if !self.buckets.contains_key(&src) && self.buckets.len() >= self.cfg.max_sources {
            // Evict the least recently seen source to stay within the bound.
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(k, _)| *k)
            {
                self.buckets.remove(&oldest);
            }
        }
        let b = self.buckets.entry(src).or_insert(Bucket {
            tokens: cap,
            last: now,
        });
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * self.cfg.rate).min(cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Verdict::Allow
        } else {
            self.limited += 1;
            Verdict::Limit(self.cfg.action)
        }
    }

    /// Forgets buckets that have refilled completely: they would start full anyway.
    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        let full_after =
            Duration::from_secs_f64((self.cfg.burst.max(1.0) / self.cfg.rate).min(3600.0));
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < full_after);
        self.next_sweep = Some(now + Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_source_is_limited_others_are_not() {
        let mut g = FloodGuard::new(FloodConfig {
            rate: 10.0,
            burst: 20.0,
            action: FloodAction::Reject,
            max_sources: 1000,
            exempt: vec![crate::routing::Cidr::parse("198.51.100.0/24").unwrap()],
        });
        let t0 = Instant::now();
        let flood = ip("192.0.2.1");
        let allowed = (0..1000)
            .filter(|i| g.check(t0 + Duration::from_millis(*i), flood) == Verdict::Allow)
            .count();
        // 20 burst + 10/s over one second.
        assert!((29..=31).contains(&allowed), "{allowed}");
        assert_eq!(g.limited(), 1000 - allowed as u64);
        for i in 0..20 {
            assert_eq!(
                g.check(t0 + Duration::from_millis(1000 + i), ip("192.0.2.2")),
                Verdict::Allow
            );
        }
        for _ in 0..1000 {
            assert_eq!(
                g.check(t0, ip("198.51.100.7")),
                Verdict::Allow,
                "exempt network"
            );
        }
    }

    #[test]
    fn refills_over_time_and_disabled_means_allow() {
        let mut g = FloodGuard::new(FloodConfig {
            rate: 1.0,
            burst: 1.0,
            action: FloodAction::Drop,
            max_sources: 10,
            exempt: Vec::new(),
        });
        let t0 = Instant::now();
        let a = ip("2001:db8::1");
        assert_eq!(g.check(t0, a), Verdict::Allow);
        assert_eq!(g.check(t0, a), Verdict::Limit(FloodAction::Drop));
        assert_eq!(g.check(t0 + Duration::from_secs(1), a), Verdict::Allow);
        let mut off = FloodGuard::new(FloodConfig::default());
        for _ in 0..10_000 {
            assert_eq!(off.check(t0, a), Verdict::Allow);
        }
    }

    #[test]
    fn memory_is_bounded_under_spoofed_sources() {
        let mut g = FloodGuard::new(FloodConfig {
            rate: 1.0,
            burst: 5.0,
            action: FloodAction::Drop,
            max_sources: 100,
            exempt: Vec::new(),
        });
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let src = IpAddr::from(i.to_be_bytes());
            g.check(t0, src);
        }
        assert!(g.sources() <= 100);
        // Idle sources are forgotten once full again.
        g.check(t0 + Duration::from_secs(60), ip("192.0.2.9"));
        assert_eq!(g.sources(), 1);
    }
}
