//! Per-color accounting of what is still open: in-flight requests and upgraded WebSockets.
//!
//! A request is counted exactly once, by a guard created when its color is decided and
//! dropped with the request context (pingora may call `upstream_peer` several times on
//! retry; the guard is not created there). The drain of a switch and graceful shutdown read
//! these counts; the gauges behind them are the Prometheus ones, so what `status` says and what
//! Prometheus scrapes cannot disagree. This module does not decide when to drain: the switch
//! driver and shutdown do.

use std::sync::Arc;

use pingora_prometheus::prometheus::IntGauge;

use crate::metrics::Metrics;
use crate::routing::Color;

/// Counts one open thing (a request or a WebSocket) of one color until dropped.
#[derive(Debug)]
pub struct Open(IntGauge);

impl Open {
    fn new(g: &IntGauge) -> Open {
        g.inc();
        Open(g.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What is open on one color right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenCounts {
    pub requests: i64,
    pub websockets: i64,
}

impl OpenCounts {
    pub fn is_empty(&self) -> bool {
        self.requests <= 0 && self.websockets <= 0
    }
}

#[derive(Clone)]
pub struct Tracker {
    metrics: Arc<Metrics>,
}

impl Tracker {
    pub fn new(metrics: Arc<Metrics>) -> Tracker {
        Tracker { metrics }
    }

    pub fn request(&self, c: Color) -> Open {
        Open::new(self.metrics.inflight(c))
    }

    pub fn websocket(&self, c: Color) -> Open {
        Open::new(self.metrics.websockets(c))
    }

    /// Requests count while they run, so an open WebSocket is also an open request; the
    /// `requests` figure here excludes them so the two numbers add up to what is open.
    pub fn open(&self, c: Color) -> OpenCounts {
        let ws = self.metrics.websockets(c).get();
        OpenCounts {
            requests: self.metrics.inflight(c).get() - ws,
            websockets: ws,
        }
    }
}

/// The drain progress line of the admin protocol.
pub fn drain_line(c: Color, open: OpenCounts) -> String {
    format!(
        "drain: {c} has {} requests, {} websockets",
        open.requests.max(0),
        open.websockets.max(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_once_and_release_on_drop() {
        let t = Tracker::new(Arc::new(Metrics::new()));
        let a = t.request(Color::Blue);
        let b = t.request(Color::Blue);
        let w = t.websocket(Color::Blue);
        assert_eq!(
            t.open(Color::Blue),
            OpenCounts {
                requests: 1,
                websockets: 1
            }
        );
        assert!(t.open(Color::Green).is_empty());
        drop((a, b, w));
        assert!(t.open(Color::Blue).is_empty());
        assert_eq!(
            drain_line(
                Color::Blue,
                OpenCounts {
                    requests: 4,
                    websockets: 2
                }
            ),
            "drain: blue has 4 requests, 2 websockets"
        );
    }
}
