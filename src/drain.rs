//! Per-color accounting of what is still open: in-flight requests and upgraded WebSockets.
//!
//! A request is counted exactly once, by a guard created when its color is decided and
//! dropped with the request context (pingora may call `upstream_peer` several times on
//! retry; the guard is not created there). The drain of a switch and graceful shutdown read
//! these counts; the gauges behind them are the Prometheus ones, so what `status` says and what
//! Prometheus scrapes cannot disagree.
//!
//! Upgraded WebSockets are also registered, so a drain deadline can hand them over:
//! [`Tracker::close_websockets`] marks each one closing and wakes its relay, which puts a
//! 1012 close frame at the next frame boundary of the server-to-client stream (engine/relay.rs
//! writes the frame; wsframe.rs knows the boundaries). No socket is duplicated for this. This
//! module does not decide when to drain: the switch driver and shutdown do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pingora_prometheus::prometheus::IntGauge;
use tokio::sync::Notify;

use crate::color::Color;
use crate::metrics::Metrics;
use crate::sync::lock;

/// Counts one open thing (a request or a WebSocket of one color, a client connection) on a
/// gauge until dropped.
#[derive(Debug)]
pub struct Open(IntGauge);

impl Open {
    pub fn new(g: &IntGauge) -> Open {
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

/// One proxied WebSocket as the drain sees it.
#[derive(Debug, Default)]
pub struct WsHandle {
    closing: AtomicBool,
    wake: Notify,
}

impl WsHandle {
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Resolves once a handover is asked for (at once if it already was).
    pub async fn closed(&self) {
        loop {
            let notified = self.wake.notified();
            if self.closing() {
                return;
            }
            notified.await;
        }
    }

    fn request_close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }
}

#[derive(Default)]
struct Sockets {
    next: AtomicU64,
    open: [Mutex<HashMap<u64, Arc<WsHandle>>>; 2],
}

/// A registered WebSocket; dropping it (with the request) unregisters it and its count.
pub struct WsRegistration {
    id: u64,
    color: Color,
    sockets: Arc<Sockets>,
    pub handle: Arc<WsHandle>,
    /// The WebSocket gauge; a gRPC stream is counted as the request it is.
    _open: Option<Open>,
}

impl Drop for WsRegistration {
    fn drop(&mut self) {
        lock(&self.sockets.open[self.color.idx()]).remove(&self.id);
    }
}

#[derive(Clone)]
pub struct Tracker {
    metrics: Arc<Metrics>,
    sockets: Arc<Sockets>,
}

impl Tracker {
    pub fn new(metrics: Arc<Metrics>) -> Tracker {
        Tracker {
            metrics,
            sockets: Arc::default(),
        }
    }

    /// Registers an upgraded connection of `color`.
    pub fn register_websocket(&self, color: Color) -> WsRegistration {
        self.register(color, Some(self.websocket(color)))
    }

    /// Registers a gRPC stream of `color` (src/h2/): the same handover as a WebSocket, but
    /// it ends with `grpc-status: 14` and stays counted as a request only.
    pub fn register_grpc(&self, color: Color) -> WsRegistration {
        self.register(color, None)
    }

    fn register(&self, color: Color, open: Option<Open>) -> WsRegistration {
        let handle = Arc::new(WsHandle::default());
        let id = self.sockets.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.sockets.open[color.idx()]).insert(id, handle.clone());
        WsRegistration {
            id,
            color,
            sockets: self.sockets.clone(),
            handle,
            _open: open,
        }
    }

    /// Hands every WebSocket of `color` over: each gets a 1012 close frame at its next frame
    /// boundary; every gRPC stream ends with `grpc-status: 14`. Returns how many were asked
    /// to close.
    pub fn close_websockets(&self, color: Color) -> usize {
        let handles: Vec<Arc<WsHandle>> = lock(&self.sockets.open[color.idx()])
            .values()
            .cloned()
            .collect();
        for h in &handles {
            h.request_close();
        }
        handles.len()
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
        let r = t.register_websocket(Color::Green);
        assert_eq!(t.open(Color::Green).websockets, 1);
        assert!(!r.handle.closing());
        assert_eq!(t.close_websockets(Color::Green), 1);
        assert!(r.handle.closing());
        drop(r);
        assert_eq!(t.close_websockets(Color::Green), 0);
        let g = t.register_grpc(Color::Green);
        assert_eq!(
            t.open(Color::Green).websockets,
            0,
            "a gRPC stream is a request"
        );
        assert_eq!(t.close_websockets(Color::Green), 1);
        assert!(g.handle.closing());
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
