//! Per-source token buckets in a bounded table (the NTP server's Kiss-o'-Death RATE policy).
//!
//! The table is a fixed array indexed by a keyed hash of the client address (IPv6 clients are
//! grouped by /64, since one host owns the whole prefix). A new address that lands on an occupied
//! slot replaces its occupant: memory stays bounded whatever the number of (spoofed) sources,
//! at the price of occasionally forgetting a client's history — which can only make us more
//! lenient, never refuse a well-behaved client.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

/// Rate limit parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained requests per second allowed per source.
    pub rate_per_sec: f64,
    /// Requests a source may send back to back before being limited.
    pub burst: u32,
    /// Number of slots in the table (memory bound); 0 disables rate limiting.
    pub table_size: usize,
}

impl Default for RateLimitConfig {
    /// A client polling every 2 s forever, or an `iburst` of 8, is never limited.
    fn default() -> Self {
        Self {
            rate_per_sec: 0.5,
            burst: 8,
            table_size: 65_536,
        }
    }
}

impl RateLimitConfig {
    /// No rate limiting (benchmarks, trusted networks).
    pub fn disabled() -> Self {
        Self {
            table_size: 0,
            ..Self::default()
        }
    }
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Within budget: answer with the time.
    Allow,
    /// Over budget: answer with a Kiss-o'-Death RATE.
    Kiss,
    /// Far over budget (already kissed `burst` times without backing off): stay silent, so the
    /// server cannot be used as a reflector.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: IpAddr,
    tokens: f64,
    last: Instant,
}

/// The bounded table of token buckets. Time is passed in.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    slots: Vec<Option<Slot>>,
    hasher: RandomState,
}

fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

impl RateLimiter {
    /// A table of `config.table_size` slots (allocated once).
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            slots: vec![None; config.table_size],
            hasher: RandomState::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Number of slots (the memory bound): never grows.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Number of slots in use.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// `true` when no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Charges one request from `ip` at `now`.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> RateDecision {
        if self.slots.is_empty() {
            return RateDecision::Allow;
        }
        let key = bucket_key(ip);
        let burst = f64::from(self.config.burst.max(1));
        let index = (self.hasher.hash_one(key) % self.slots.len() as u64) as usize;
        let slot = &mut self.slots[index];
        let s = match slot {
            Some(s) if s.key == key => s,
            _ => slot.insert(Slot {
                key,
                tokens: burst,
                last: now,
            }),
        };
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.last = s.last.max(now);
        s.tokens = (s.tokens + elapsed * self.config.rate_per_sec).min(burst);
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            RateDecision::Allow
        } else if s.tokens > -burst {
            // In debt: each further request deepens it, so a client that keeps hammering
            // must wait longer; the first `burst` excess requests are told so.
            s.tokens -= 1.0;
            RateDecision::Kiss
        } else {
            RateDecision::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    fn cfg() -> RateLimitConfig {
        RateLimitConfig {
            rate_per_sec: 1.0,
            burst: 4,
            table_size: 16,
        }
    }

    #[test]
    fn burst_then_kiss_then_drop_then_recover() {
        let mut l = RateLimiter::new(cfg());
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(l.check(ip, t0), RateDecision::Allow);
        }
        for _ in 0..4 {
            assert_eq!(l.check(ip, t0), RateDecision::Kiss);
        }
        assert_eq!(l.check(ip, t0), RateDecision::Drop);
        // Another source is unaffected.
        assert_eq!(
            l.check(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), t0),
            RateDecision::Allow
        );
        // After backing off long enough to repay the debt, answered again.
        assert_eq!(
            l.check(ip, t0 + Duration::from_secs(6)),
            RateDecision::Allow
        );
    }

    #[test]
    fn steady_polling_never_limited() {
        let mut l = RateLimiter::new(cfg());
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let t0 = Instant::now();
        for i in 0..1000 {
            assert_eq!(
                l.check(ip, t0 + Duration::from_millis(1000 * i)),
                RateDecision::Allow
            );
        }
    }

    #[test]
    fn table_is_bounded() {
        let mut l = RateLimiter::new(cfg());
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            l.check(IpAddr::V4(Ipv4Addr::from(i)), t0);
        }
        assert_eq!(l.capacity(), 16);
        assert!(l.len() <= 16);
    }

    #[test]
    fn ipv6_grouped_by_64() {
        let mut l = RateLimiter::new(cfg());
        let t0 = Instant::now();
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        for _ in 0..4 {
            assert_eq!(l.check(IpAddr::V6(a), t0), RateDecision::Allow);
        }
        assert_eq!(l.check(IpAddr::V6(b), t0), RateDecision::Kiss);
    }

    #[test]
    fn disabled_always_allows() {
        let mut l = RateLimiter::new(RateLimitConfig::disabled());
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(
                l.check(IpAddr::V4(Ipv4Addr::LOCALHOST), t0),
                RateDecision::Allow
            );
        }
    }
}
