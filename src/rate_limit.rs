//! Rate limits per route: `per_second` requests on average, up to `burst` at once, per
//! client IP or per value of a request header (an API key).
//!
//! The counts live in pingora-limits' [`Rate`]: two count-min sketches of fixed size (one
//! for the current window, one for the previous), so memory is the same whether 10 or 10
//! million distinct keys arrive, and a flood of spoofed keys cannot grow it. The price of a
//! fixed size is that keys share counters: under a flood of many distinct keys an innocent
//! key can be over-counted (refused early), never under-counted (the limit always holds).
//!
//! The window is `burst / per_second` seconds long (at least a second: config/rate_limit.rs
//! refuses `burst < per_second`) and holds at most `burst` requests, estimated as a sliding
//! window (the previous window's count weighted by how much of it still overlaps, plus the
//! current one's): the long-run rate is `per_second` and a burst of `burst` passes at once.
//! Unlike a token bucket, a key that spent its whole burst waits for the window to slide
//! (up to `burst / per_second` seconds) rather than one request's worth; `Retry-After` says
//! exactly how long. Only admitted requests are counted, so a client that keeps retrying
//! past its limit gets through again as soon as its window allows.
//!
//! Plain values in, a verdict out: any data path (HTTP/1.1 engine, HTTP/2) extracts the key
//! and answers 429 itself. This module does not count refusals in metrics nor write
//! responses.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::AtomicIsize;
use std::time::Duration;

use pingora_limits::rate::{Rate, RateComponents};

/// Rows of each count-min sketch: more rows make an over-count less likely.
const HASHES: usize = 4;
/// Counters per row: more make collisions under a key flood rarer, at 8 bytes each.
const SLOTS: usize = 4096;

/// What the limiter's counters take, for every key there will ever be: two sketches.
pub const MEMORY_BYTES: usize = 2 * HASHES * SLOTS * std::mem::size_of::<AtomicIsize>();

/// Where a request's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `key = "ip"`: the client address (the real one behind a trusted load balancer).
    Ip,
    /// `key = "header:NAME"` (the name in lower case). A request without the header is
    /// limited by its client IP instead (in counters of its own), so leaving the header
    /// out is not a way around the limit, and key-less clients do not share one budget.
    Header(String),
}

/// A route's validated limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub per_second: u32,
    pub burst: u32,
    pub key: KeySource,
}

impl Limit {
    /// The sliding window: long enough to hold `burst` requests at `per_second`.
    pub fn window(&self) -> Duration {
        Duration::from_millis(u64::from(self.burst) * 1000 / u64::from(self.per_second.max(1)))
    }
}

/// What a request is counted under. The variant is part of the hash, so an IP and a
/// header value with the same bytes never share a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key<'a> {
    Ip(IpAddr),
    Header(&'a [u8]),
    /// Neither the header nor a client address (a Unix socket peer): one shared count.
    Unknown,
}

/// Whether a request may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// 429 with `Retry-After` in whole seconds (at least 1).
    Limited {
        retry_after: u32,
    },
}

/// One route's limiter: its limit and its fixed-size counts.
pub struct Limiter {
    limit: Limit,
    rate: Rate,
    /// Hashes a key once per request (a header value may be kilobytes long); the sketch's
    /// 12 row lookups then hash only these 8 bytes. Seeded per process, so nobody can aim
    /// keys at one counter.
    seed: ahash::RandomState,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("limit", &self.limit)
            .finish()
    }
}

impl Limiter {
    pub fn new(limit: Limit) -> Limiter {
        let rate = Rate::new_with_estimator_config(limit.window(), HASHES, SLOTS);
        Limiter {
            limit,
            rate,
            seed: ahash::RandomState::new(),
        }
    }

    pub fn source(&self) -> &KeySource {
        &self.limit.key
    }

    /// The header whose value is the key, if the limit is keyed by one.
    pub fn header(&self) -> Option<&str> {
        match &self.limit.key {
            KeySource::Header(h) => Some(h),
            KeySource::Ip => None,
        }
    }

    /// Checks one request and, when it passes, counts it.
    pub fn check(&self, key: Key<'_>) -> Verdict {
        let key = self.seed.hash_one(key);
        let (prev, curr, fraction) = self.rate.rate_with(&key, |c: RateComponents| {
            (c.prev_samples, c.curr_samples, c.current_interval_fraction)
        });
        let v = verdict(&self.limit, prev, curr, fraction);
        if v == Verdict::Allow {
            self.rate.observe(&key, 1);
        }
        v
    }
}

/// The key of a request: its header's value when the limit says so and the request has
/// one, else its client address.
pub fn key<'a>(source: &KeySource, client: Option<IpAddr>, header: Option<&'a [u8]>) -> Key<'a> {
    match (source, header, client) {
        (KeySource::Header(_), Some(v), _) => Key::Header(v),
        (_, _, Some(ip)) => Key::Ip(ip),
        _ => Key::Unknown,
    }
}

/// The decision on counts: `prev` requests in the previous window, `curr` in this one,
/// `fraction` of this one gone. A request passes while the sliding count is under `burst`.
/// Past it, `Retry-After` is when the count will have slid under `burst` again if nothing
/// more is admitted meanwhile (rounded up, at least a second).
pub fn verdict(limit: &Limit, prev: isize, curr: isize, fraction: f64) -> Verdict {
    let (prev, curr) = (prev.max(0) as f64, curr.max(0) as f64);
    let f = fraction.clamp(0.0, 1.0);
    let burst = f64::from(limit.burst);
    if prev * (1.0 - f) + curr < burst {
        return Verdict::Allow;
    }
    let w = limit.window().as_secs_f64();
    let wait = if curr >= burst {
        // This window alone is full: its end, then until its count has faded under burst.
        (1.0 - f) * w + (1.0 - burst / curr) * w
    } else {
        // The previous window's share must fade to what this one leaves room for.
        (1.0 - (burst - curr) / prev - f).max(0.0) * w
    };
    Verdict::Limited {
        retry_after: wait.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: u32) -> Limit {
        Limit {
            per_second,
            burst,
            key: KeySource::Ip,
        }
    }

    #[test]
    fn the_window_holds_a_burst_at_the_rate() {
        assert_eq!(limit(100, 200).window(), Duration::from_secs(2));
        assert_eq!(limit(10, 10).window(), Duration::from_secs(1));
        assert_eq!(limit(3, 10).window(), Duration::from_millis(3333));
    }

    #[test]
    fn verdicts_follow_the_sliding_window() {
        // 10/s, 20 at once: a 2 s window.
        let l = limit(10, 20);
        assert_eq!(verdict(&l, 0, 0, 0.0), Verdict::Allow);
        assert_eq!(verdict(&l, 0, 19, 0.5), Verdict::Allow);
        // Full: the window ends in 1 s, and its 20 must fade under 20 (at once).
        assert_eq!(verdict(&l, 0, 20, 0.5), Verdict::Limited { retry_after: 1 });
        // Half of a full previous window still counts.
        assert_eq!(verdict(&l, 20, 0, 0.5), Verdict::Allow);
        assert_eq!(verdict(&l, 20, 9, 0.5), Verdict::Allow);
        // 10 of 20 still weigh: they fade to 9 or less (room 20 - 11) at 55%, 0.1 s on.
        assert_eq!(
            verdict(&l, 20, 11, 0.5),
            Verdict::Limited { retry_after: 1 }
        );
        // 1/s, 20 at once: a 20 s window; a spent burst waits for it to slide.
        let slow = limit(1, 20);
        assert_eq!(
            verdict(&slow, 0, 20, 0.05),
            Verdict::Limited { retry_after: 19 }
        );
        assert_eq!(
            verdict(&slow, 20, 10, 0.25),
            Verdict::Limited { retry_after: 5 }
        );
        // Counted past the burst (concurrent admissions): longer still.
        assert_eq!(
            verdict(&slow, 0, 40, 0.0),
            Verdict::Limited { retry_after: 30 }
        );
        // Overflowed counters read negative: as if empty, never a panic.
        assert_eq!(verdict(&l, -5, 0, 0.0), Verdict::Allow);
        assert_eq!(
            verdict(&limit(1, 1), 0, 1, 0.0),
            Verdict::Limited { retry_after: 1 }
        );
    }

    #[test]
    fn a_burst_passes_then_the_limit_holds_per_key() {
        let lim = Limiter::new(limit(5, 10));
        let a = Key::Header(b"key-a");
        let passed = (0..25).filter(|_| lim.check(a) == Verdict::Allow).count();
        assert_eq!(passed, 10);
        // Another key has its own budget, an IP with the same bytes too.
        assert_eq!(lim.check(Key::Header(b"key-b")), Verdict::Allow);
        assert_eq!(
            lim.check(Key::Ip("127.0.0.1".parse().expect("ip"))),
            Verdict::Allow
        );
    }

    #[test]
    fn a_request_without_the_header_is_keyed_by_its_address() {
        let src = KeySource::Header("x-api-key".into());
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(key(&src, Some(ip), Some(b"k")), Key::Header(b"k"));
        assert_eq!(key(&src, Some(ip), None), Key::Ip(ip));
        assert_eq!(key(&src, None, None), Key::Unknown);
        assert_eq!(key(&KeySource::Ip, Some(ip), Some(b"k")), Key::Ip(ip));
    }

    /// The memory design: a flood of distinct keys lands in the same fixed counters, and
    /// the limit for a key that sent nothing stays open (no false refusal at this scale).
    #[test]
    fn a_flood_of_distinct_keys_needs_no_memory() {
        assert_eq!(MEMORY_BYTES, 256 * 1024);
        let lim = Limiter::new(limit(1000, 1000));
        for i in 0u32..50_000 {
            let k = i.to_le_bytes();
            lim.check(Key::Header(&k));
        }
        assert_eq!(lim.check(Key::Header(b"innocent")), Verdict::Allow);
    }
}
