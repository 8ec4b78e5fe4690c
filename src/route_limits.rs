//! A route's own bounds on a request: the largest body it takes (`max_body_bytes`) and how
//! long its backend may take to answer or to accept the request (`read_timeout`,
//! `write_timeout`, defaulting to `[server] upstream_read_timeout`).
//!
//! The body decision is made before anything reaches the backend, so a request over the
//! limit is never half-forwarded: a `Content-Length` over it is refused from the head alone,
//! and a chunked body (whose size nobody knows in advance) is read whole, up to the limit,
//! before the backend is even connected to, like nginx's `client_max_body_size` with its
//! default request buffering. Pure: the data paths read and answer.

use std::time::Duration;

/// `max_body_bytes`, `read_timeout`, `write_timeout` of one route; `None`: not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteLimits {
    pub max_body_bytes: Option<u64>,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
}

/// What to do with a request body, from its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Stream it as it comes (no limit, or a length within it).
    Stream,
    /// 413 now: the declared length is over the limit.
    TooLarge,
    /// Of unknown size on a limited route: read it whole (at most the limit) before
    /// forwarding.
    Collect { max: u64 },
}

impl RouteLimits {
    /// The body decision for a request with this `Content-Length` (`None`: none), or a
    /// body whose size the head does not give (`size_unknown`: chunked in HTTP/1.1, DATA frames
    /// without `content-length` in HTTP/2).
    pub fn body(&self, content_length: Option<u64>, size_unknown: bool) -> Body {
        match (self.max_body_bytes, content_length) {
            (None, _) => Body::Stream,
            (Some(max), Some(n)) if n > max => Body::TooLarge,
            (Some(max), _) if size_unknown => Body::Collect { max },
            _ => Body::Stream,
        }
    }

    /// How long the backend may go without sending (its head, then each part of its body).
    pub fn read_timeout(&self, global: Duration) -> Duration {
        self.read_timeout.unwrap_or(global)
    }

    /// How long one write of the request to the backend may wait for it to take bytes.
    pub fn write_timeout(&self, global: Duration) -> Duration {
        self.write_timeout.unwrap_or(global)
    }
}

/// Whether a body being collected is over the limit: its payload, or its raw
/// bytes beyond what honest chunk framing needs (chunk size lines, extensions and trailers
/// may add up to the payload again plus 16 KiB; more is a client making the buffer grow
/// with framing alone).
pub fn collected_too_large(max: u64, payload: u64, raw: u64) -> bool {
    payload > max || raw > max.saturating_mul(2).saturating_add(16 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_judged_from_the_head() {
        let none = RouteLimits::default();
        assert_eq!(none.body(Some(1 << 40), false), Body::Stream);
        assert_eq!(none.body(None, true), Body::Stream);
        let l = RouteLimits {
            max_body_bytes: Some(100),
            ..RouteLimits::default()
        };
        assert_eq!(l.body(Some(100), false), Body::Stream);
        assert_eq!(l.body(Some(101), false), Body::TooLarge);
        assert_eq!(l.body(None, false), Body::Stream);
        assert_eq!(l.body(None, true), Body::Collect { max: 100 });
    }

    #[test]
    fn collected_bodies_are_bounded_by_payload_and_framing() {
        assert!(!collected_too_large(100, 100, 300));
        assert!(collected_too_large(100, 101, 120));
        assert!(collected_too_large(100, 10, 200 + 16 * 1024 + 1));
    }

    #[test]
    fn timeouts_fall_back_to_the_global_one() {
        let g = Duration::from_secs(60);
        let l = RouteLimits {
            read_timeout: Some(Duration::from_secs(1)),
            ..RouteLimits::default()
        };
        assert_eq!(l.read_timeout(g), Duration::from_secs(1));
        assert_eq!(l.write_timeout(g), g);
    }
}
