//! The Prometheus registry and the handles the request path records into (the listener that
//! serves `/metrics` is admin_http.rs).
//!
//! Everything the hot path touches is resolved ahead of time (a histogram per route and
//! color, a lazily created counter per status code) so recording a request is a few atomic
//! adds with no label hashing and no lock. This module owns no decisions: the watch window
//! reads `ColorStats`, the admin socket reads gauges, but what they mean lives elsewhere.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pingora_prometheus::prometheus::{
    self, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::color::Color;

/// Status codes a counter can be kept for; anything else is counted as 0 (never seen in
/// practice: pingora refuses to parse such a response).
const CODES: usize = 600;

/// The `reason` label values of `switchyard_refused_total`.
pub const REFUSAL_REASONS: &[&str] = &[
    "bad_request",
    "header_too_large",
    "too_many_connections",
    "no_route",
    "http2_required",
    "rate_limited",
    "body_too_large",
    // HTTP/2: a body of unknown length on a route with max_body_bytes (h2/policy.rs).
    "length_required",
    // Connections closed at accept on a proxy_protocol listener (real_ip::ProxyRefusal).
    "proxy_untrusted",
    "proxy_missing",
    "proxy_malformed",
    "proxy_oversized",
    "proxy_timeout",
];

/// Upper bounds (seconds) of `switchyard_request_duration_seconds`.
pub const DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Per-color request totals and the errors that count against the color (fault.rs decides
/// which), read by the watch window as deltas.
#[derive(Debug, Default)]
pub struct ColorStats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
}

impl ColorStats {
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// What one route records into, per color.
pub struct RouteStats {
    name: String,
    duration: [Histogram; 2],
    requests: IntCounterVec,
    codes: [Box<[OnceLock<IntCounter>]>; 2],
}

impl std::fmt::Debug for RouteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteStats")
            .field("name", &self.name)
            .finish()
    }
}

impl RouteStats {
    pub fn record(&self, color: Color, code: u16, elapsed: Duration) {
        self.duration[color.idx()].observe(elapsed.as_secs_f64());
        let slot = if (code as usize) < CODES {
            code as usize
        } else {
            0
        };
        self.codes[color.idx()][slot]
            .get_or_init(|| {
                let code = code.to_string();
                self.requests.with_label_values(&[
                    self.name.as_str(),
                    color.as_str(),
                    code.as_str(),
                ])
            })
            .inc();
    }
}

/// All of switchyard's metrics, in a registry of their own (gathered together with
/// prometheus' default registry, where libraries may register theirs).
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    active: IntGaugeVec,
    inflight: [IntGauge; 2],
    websockets: [IntGauge; 2],
    server_healthy: IntGaugeVec,
    switches: IntCounterVec,
    upstream_errors: IntCounterVec,
    client_aborts: [IntCounter; 2],
    refused: IntCounterVec,
    client_connections: IntGauge,
    color_stats: [ColorStats; 2],
    fleet: FleetMetrics,
}

/// Fleet mode's gauges; registered only with `[fleet]` (see [`Metrics::enable_fleet`]).
struct FleetMetrics {
    connected: IntGauge,
    members: IntGauge,
    epoch: IntGauge,
    swap: Histogram,
}

impl FleetMetrics {
    fn new() -> FleetMetrics {
        FleetMetrics {
            connected: must(IntGauge::new(
                "switchyard_fleet_connected",
                "1 while this member is connected to etcd, 0 while detached (traffic stays).",
            )),
            members: must(IntGauge::new(
                "switchyard_fleet_members",
                "Live members of the fleet as this member sees them.",
            )),
            epoch: must(IntGauge::new(
                "switchyard_fleet_epoch",
                "The fleet decision epoch this member applied last.",
            )),
            swap: must(Histogram::with_opts(
                HistogramOpts::new(
                    "switchyard_fleet_swap_seconds",
                    "Time from a fleet decision (its timestamp in etcd) to this member's routing table swap.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            )),
        }
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only fails on a malformed metric definition or a duplicate registration, both fixed
    // at compile time here; the unit test below registers everything once.
    r.unwrap_or_else(|e| panic!("metric definition: {e}"))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = must(IntCounterVec::new(
            Opts::new(
                "switchyard_requests_total",
                "Requests answered, by route, color and status code.",
            ),
            &["route", "color", "code"],
        ));
        let duration = must(HistogramVec::new(
            HistogramOpts::new(
                "switchyard_request_duration_seconds",
                "Time from request start to the last byte of the response, by route and color.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "color"],
        ));
        let active = must(IntGaugeVec::new(
            Opts::new(
                "switchyard_active_color",
                "1 for the color that receives traffic, 0 for the other.",
            ),
            &["color"],
        ));
        let inflight_vec = must(IntGaugeVec::new(
            Opts::new(
                "switchyard_inflight_requests",
                "Requests being proxied right now, by color.",
            ),
            &["color"],
        ));
        let ws_vec = must(IntGaugeVec::new(
            Opts::new(
                "switchyard_websocket_connections",
                "Open proxied WebSockets, by color.",
            ),
            &["color"],
        ));
        let server_healthy = must(IntGaugeVec::new(
            Opts::new(
                "switchyard_server_healthy",
                "1 if the active health check passes for the server, else 0.",
            ),
            &["color", "server"],
        ));
        let switches = must(IntCounterVec::new(
            Opts::new(
                "switchyard_switches_total",
                "Switches by how they ended: committed, rolled_back, refused, aborted.",
            ),
            &["result"],
        ));
        let upstream_errors = must(IntCounterVec::new(
            Opts::new(
                "switchyard_upstream_errors_total",
                "Failures talking to a backend, by color and kind.",
            ),
            &["color", "kind"],
        ));
        let client_aborts_vec = must(IntCounterVec::new(
            Opts::new(
                "switchyard_client_aborts_total",
                "Exchanges the client ended early (hung up, reset, stalled), by color; never counted against the color.",
            ),
            &["color"],
        ));
        let refused = must(IntCounterVec::new(
            Opts::new(
                "switchyard_refused_total",
                "Requests and connections the front door answered itself without a backend, by reason.",
            ),
            &["reason"],
        ));
        let client_connections = must(IntGauge::new(
            "switchyard_client_connections",
            "Open client connections on the front door (capped by [limits] max_connections).",
        ));
        for c in [
            Box::new(refused.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(client_connections.clone()),
            Box::new(requests.clone()),
            Box::new(duration.clone()),
            Box::new(active.clone()),
            Box::new(inflight_vec.clone()),
            Box::new(ws_vec.clone()),
            Box::new(server_healthy.clone()),
            Box::new(switches.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(client_aborts_vec.clone()),
        ] {
            must(registry.register(c));
        }
        for r in ["committed", "rolled_back", "refused", "aborted"] {
            switches.with_label_values(&[r]);
        }
        for r in REFUSAL_REASONS {
            refused.with_label_values(&[r]);
        }
        let per_color = |v: &IntGaugeVec| Color::ALL.map(|c| v.with_label_values(&[c.as_str()]));
        Metrics {
            client_aborts: Color::ALL.map(|c| client_aborts_vec.with_label_values(&[c.as_str()])),
            inflight: per_color(&inflight_vec),
            websockets: per_color(&ws_vec),
            registry,
            requests,
            duration,
            active,
            server_healthy,
            switches,
            upstream_errors,
            refused,
            client_connections,
            color_stats: Default::default(),
            fleet: FleetMetrics::new(),
        }
    }

    /// Registers the fleet metrics; called once at start in fleet mode.
    pub fn enable_fleet(&self) {
        let f = &self.fleet;
        for c in [
            Box::new(f.connected.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(f.members.clone()),
            Box::new(f.epoch.clone()),
            Box::new(f.swap.clone()),
        ] {
            must(self.registry.register(c));
        }
    }

    pub fn fleet_connected(&self, yes: bool) {
        self.fleet.connected.set(i64::from(yes));
    }

    pub fn fleet_members(&self, n: usize) {
        self.fleet.members.set(n as i64);
    }

    pub fn fleet_epoch(&self, epoch: u64) {
        self.fleet.epoch.set(epoch as i64);
    }

    pub fn fleet_swap_observe(&self, lag: Duration) {
        self.fleet.swap.observe(lag.as_secs_f64());
    }

    /// The handles for one route; call once per route at start.
    pub fn route_stats(&self, route: &str) -> Arc<RouteStats> {
        Arc::new(RouteStats {
            name: route.to_string(),
            duration: Color::ALL.map(|c| self.duration.with_label_values(&[route, c.as_str()])),
            requests: self.requests.clone(),
            codes: Color::ALL.map(|_| (0..CODES).map(|_| OnceLock::new()).collect()),
        })
    }

    pub fn set_active(&self, active: Color) {
        for c in Color::ALL {
            self.active
                .with_label_values(&[c.as_str()])
                .set(i64::from(c == active));
        }
    }

    pub fn inflight(&self, c: Color) -> &IntGauge {
        &self.inflight[c.idx()]
    }

    pub fn websockets(&self, c: Color) -> &IntGauge {
        &self.websockets[c.idx()]
    }

    pub fn color_stats(&self, c: Color) -> &ColorStats {
        &self.color_stats[c.idx()]
    }

    pub fn set_server_healthy(&self, c: Color, server: &str, healthy: bool) {
        self.server_healthy
            .with_label_values(&[c.as_str(), server])
            .set(i64::from(healthy));
    }

    pub fn switch_ended(&self, result: &str) {
        self.switches.with_label_values(&[result]).inc();
    }

    pub fn switches(&self, result: &str) -> u64 {
        self.switches.with_label_values(&[result]).get()
    }

    pub fn upstream_error(&self, c: Color, kind: &str) {
        self.upstream_errors
            .with_label_values(&[c.as_str(), kind])
            .inc();
    }

    pub fn client_abort(&self, c: Color) {
        self.client_aborts[c.idx()].inc();
    }

    /// Records what fault.rs says makes a failed exchange visible.
    pub fn record_fault(&self, c: Color, m: crate::fault::Metric) {
        match m {
            crate::fault::Metric::None => {}
            crate::fault::Metric::UpstreamError(kind) => self.upstream_error(c, kind.label()),
            crate::fault::Metric::ClientAbort => self.client_abort(c),
        }
    }

    /// The color's request-duration histogram summed over its routes: cumulative counts per
    /// bound of [`DURATION_BUCKETS`], then the total. Gathers (allocates): for the watch's
    /// once-a-tick p99, never for the request path.
    pub fn duration_buckets(&self, c: Color) -> Vec<u64> {
        use prometheus::core::Collector;
        let mut sums = vec![0u64; DURATION_BUCKETS.len() + 1];
        for family in self.duration.collect() {
            for m in family.get_metric() {
                let ours = m
                    .get_label()
                    .iter()
                    .any(|l| l.name() == "color" && l.value() == c.as_str());
                if !ours {
                    continue;
                }
                let h = m.get_histogram();
                for (sum, b) in sums.iter_mut().zip(h.get_bucket()) {
                    *sum = sum.wrapping_add(b.cumulative_count());
                }
                if let Some(total) = sums.last_mut() {
                    *total = total.wrapping_add(h.get_sample_count());
                }
            }
        }
        sums
    }

    /// One refusal by the front door; `reason` is one of [`REFUSAL_REASONS`].
    pub fn refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }

    pub fn client_connections(&self) -> &IntGauge {
        &self.client_connections
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut families = self.registry.gather();
        families.extend(prometheus::default_registry().gather());
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!("encoding metrics failed: {e}");
        }
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_contract_names() {
        let m = Metrics::new();
        m.set_active(Color::Green);
        let web = m.route_stats("web");
        web.record(Color::Green, 200, Duration::from_millis(3));
        web.record(Color::Green, 200, Duration::from_millis(3));
        web.record(Color::Blue, 502, Duration::from_millis(1));
        m.inflight(Color::Blue).inc();
        m.set_server_healthy(Color::Green, "127.0.0.1:1", true);
        m.upstream_error(Color::Blue, "connect");
        m.refused("no_route");
        m.client_abort(Color::Green);
        m.client_connections().add(2);
        let text = String::from_utf8(m.render()).expect("utf8");
        for want in [
            "switchyard_requests_total{code=\"200\",color=\"green\",route=\"web\"} 2",
            "switchyard_requests_total{code=\"502\",color=\"blue\",route=\"web\"} 1",
            "switchyard_request_duration_seconds_bucket{color=\"green\",route=\"web\",le=\"0.005\"} 2",
            "switchyard_active_color{color=\"green\"} 1",
            "switchyard_active_color{color=\"blue\"} 0",
            "switchyard_inflight_requests{color=\"blue\"} 1",
            "switchyard_websocket_connections{color=\"green\"} 0",
            "switchyard_server_healthy{color=\"green\",server=\"127.0.0.1:1\"} 1",
            "switchyard_switches_total{result=\"refused\"} 0",
            "switchyard_upstream_errors_total{color=\"blue\",kind=\"connect\"} 1",
            "switchyard_refused_total{reason=\"no_route\"} 1",
            "switchyard_refused_total{reason=\"too_many_connections\"} 0",
            "switchyard_client_connections 2",
            "switchyard_client_aborts_total{color=\"green\"} 1",
            "switchyard_client_aborts_total{color=\"blue\"} 0",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn duration_buckets_sum_a_colors_routes() {
        let m = Metrics::new();
        let (a, b) = (m.route_stats("a"), m.route_stats("b"));
        a.record(Color::Green, 200, Duration::from_millis(3));
        b.record(Color::Green, 500, Duration::from_millis(40));
        b.record(Color::Blue, 200, Duration::from_millis(1));
        let g = m.duration_buckets(Color::Green);
        assert_eq!(g.len(), DURATION_BUCKETS.len() + 1);
        // le=0.005 holds the 3 ms one, le=0.05 both, the total both.
        assert_eq!((g[3], g[6], g[15]), (1, 2, 2));
        assert_eq!(m.duration_buckets(Color::Blue)[15], 1);
    }
}
