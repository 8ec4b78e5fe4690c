//! Colors, backends, pools and the routing table behind one `ArcSwap`.
//!
//! The request path loads the table once and matches a route with a pure function; a switch
//! stores a new table that shares every route (and so every pool, counter and health flag)
//! with the old one and differs only in `active`. This module decides where a request goes;
//! it does not probe health (health.rs writes the flags) or drive switches (switch.rs).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

pub use crate::color::{Color, UnknownColor};
use crate::config::{Config, HeaderRule};
use crate::metrics::{Metrics, RouteStats};

/// What the active checker last concluded about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed to a conclusion yet: traffic may go there, a gate does not pass on it.
    Unknown,
    Healthy,
    Unhealthy,
}

/// One server of one color, shared by every route that lists it.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    pub color: Color,
    pub health_path: String,
    /// Spoken to over HTTP/2 (h2c): a server of a `grpc = true` route (src/h2/).
    pub h2: bool,
    health: AtomicU8,
    /// The checker's last verdict in words, for the `health` command; never read per request.
    detail: Mutex<String>,
    /// When the checker last set `detail` (ms since the Unix epoch, 0: never), for the status
    /// page's "last check".
    checked_at_ms: AtomicU64,
}

impl Backend {
    pub fn new(addr: SocketAddr, color: Color, health_path: String) -> Backend {
        Backend {
            addr,
            color,
            health_path,
            h2: false,
            health: AtomicU8::new(0),
            detail: Mutex::new("not checked yet".into()),
            checked_at_ms: AtomicU64::new(0),
        }
    }

    pub fn detail(&self) -> String {
        self.detail.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// The result of a check that just finished.
    pub fn set_detail(&self, d: String) {
        if let Ok(mut g) = self.detail.lock() {
            *g = d;
        }
        self.checked_at_ms
            .store(crate::status::unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    /// When the last check finished; `None` before the first.
    pub fn last_check(&self) -> Option<SystemTime> {
        match self.checked_at_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
        }
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }

    pub fn set_health(&self, h: Health) {
        let v = match h {
            Health::Unknown => 0,
            Health::Healthy => 1,
            Health::Unhealthy => 2,
        };
        self.health.store(v, Ordering::Relaxed);
    }
}

/// The servers of one color for one route, picked round robin.
#[derive(Debug)]
pub struct Pool {
    pub backends: Vec<Arc<Backend>>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(backends: Vec<Arc<Backend>>) -> Pool {
        Pool {
            backends,
            next: AtomicUsize::new(0),
        }
    }

    /// Round robin over the servers not known to be down; when every one is down, still
    /// pick one, so the client gets a fast 502 instead of a made-up answer.
    pub fn pick(&self) -> &Arc<Backend> {
        let n = self.backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let b = &self.backends[(start + i) % n];
            if b.health() != Health::Unhealthy {
                return b;
            }
        }
        &self.backends[start % n]
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub prefix: String,
    pub host: Option<String>,
    pools: [Pool; 2],
    pub stats: Arc<RouteStats>,
    /// Set on every response of this route (`[headers] add` merged with the route's own).
    pub headers: Vec<HeaderRule>,
    /// gzip text responses for clients that accept it.
    pub gzip: bool,
    /// gRPC: HTTP/2 clients only, h2c to the servers (src/h2/).
    pub grpc: bool,
    /// CORS answered at the edge (cors.rs).
    pub cors: Option<crate::cors::Policy>,
    /// The route's limiter, its counts shared by every connection (rate_limit.rs).
    pub rate_limit: Option<crate::rate_limit::Limiter>,
    /// Body size and backend timeouts (route_limits.rs).
    pub limits: crate::route_limits::RouteLimits,
}

impl Route {
    pub fn pool(&self, c: Color) -> &Pool {
        &self.pools[c.idx()]
    }
}

/// One immutable version of the routing state.
#[derive(Debug)]
pub struct RoutingTable {
    /// Sorted for matching: longest prefix first, host-specific before any-host.
    pub routes: Vec<Arc<Route>>,
    pub active: Color,
}

impl RoutingTable {
    /// The route for a request; `host` is the Host header as sent (port and case are ignored).
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        let host = host.map(strip_port);
        self.routes.iter().find(|r| {
            prefix_matches(&r.prefix, path)
                && match (&r.host, host) {
                    (None, _) => true,
                    (Some(want), Some(h)) => want.eq_ignore_ascii_case(h),
                    (Some(_), None) => false,
                }
        })
    }
}

/// `/api` matches `/api`, `/api/` and `/api/x`, not `/apix`: prefixes match whole path
/// segments, which is what people mean by "the /api route".
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The one writer-side handle of the routing table, plus every backend for the checker.
pub struct Router {
    table: ArcSwap<RoutingTable>,
    backends: Vec<Arc<Backend>>,
}

impl Router {
    pub fn new(cfg: &Config, active: Color, metrics: &Metrics) -> Router {
        let mut backends: Vec<Arc<Backend>> = Vec::new();
        let mut backend = |addr: SocketAddr, color: Color, path: &str, h2: bool| {
            if let Some(b) = backends
                .iter()
                .find(|b| b.addr == addr && b.color == color && b.health_path == path && b.h2 == h2)
            {
                return b.clone();
            }
            let b = Arc::new(Backend {
                h2,
                ..Backend::new(addr, color, path.to_string())
            });
            backends.push(b.clone());
            b
        };
        let mut routes: Vec<Arc<Route>> = cfg
            .routes
            .iter()
            .map(|r| {
                let pool = |addrs: &[SocketAddr],
                                c: Color,
                                be: &mut dyn FnMut(
                        SocketAddr,
                        Color,
                        &str,
                        bool,
                    ) -> Arc<Backend>| {
                        Pool::new(
                            addrs
                                .iter()
                                .map(|a| be(*a, c, &r.health_path, r.grpc))
                                .collect(),
                        )
                    };
                let blue = pool(&r.blue, Color::Blue, &mut backend);
                let green = pool(&r.green, Color::Green, &mut backend);
                Arc::new(Route {
                    name: r.name.clone(),
                    prefix: r.path_prefix.clone(),
                    host: r.host.clone(),
                    pools: [blue, green],
                    stats: metrics.route_stats(&r.name),
                    headers: r.headers.clone(),
                    gzip: r.gzip,
                    grpc: r.grpc,
                    cors: r.cors.clone(),
                    rate_limit: r.rate_limit.clone().map(crate::rate_limit::Limiter::new),
                    limits: r.limits,
                })
            })
            .collect();
        routes.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        Router {
            table: ArcSwap::from_pointee(RoutingTable { routes, active }),
            backends,
        }
    }

    /// The current table; the request path calls this once per request.
    pub fn load(&self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.table.load()
    }

    pub fn active(&self) -> Color {
        self.table.load().active
    }

    /// Moves every route to `color` in one atomic store.
    pub fn set_active(&self, color: Color) {
        let cur = self.table.load_full();
        if cur.active == color {
            return;
        }
        self.table.store(Arc::new(RoutingTable {
            routes: cur.routes.clone(),
            active: color,
        }));
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    pub fn backends_of(&self, c: Color) -> impl Iterator<Item = &Arc<Backend>> {
        self.backends.iter().filter(move |b| b.color == c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn router() -> Router {
        let cfg = Config::parse(
            Path::new("t"),
            r#"
[listen]
http = "127.0.0.1:1"
[[route]]
name = "web"
path_prefix = "/"
blue = ["127.0.0.1:10"]
green = ["127.0.0.1:20"]
[[route]]
name = "api"
path_prefix = "/api"
blue = ["127.0.0.1:11", "127.0.0.1:12"]
green = ["127.0.0.1:21"]
[[route]]
name = "admin-host"
path_prefix = "/"
host = "Admin.Example.com"
blue = ["127.0.0.1:10"]
green = ["127.0.0.1:20"]
"#,
        )
        .expect("config");
        Router::new(&cfg, Color::Blue, &Metrics::new())
    }

    fn name(t: &RoutingTable, host: Option<&str>, path: &str) -> Option<String> {
        t.find(host, path).map(|r| r.name.clone())
    }

    #[test]
    fn longest_prefix_and_host_win() {
        let r = router();
        let t = r.load();
        assert_eq!(name(&t, None, "/api/users").as_deref(), Some("api"));
        assert_eq!(name(&t, None, "/api").as_deref(), Some("api"));
        assert_eq!(name(&t, None, "/apix").as_deref(), Some("web"));
        assert_eq!(name(&t, None, "/").as_deref(), Some("web"));
        assert_eq!(
            name(&t, Some("admin.example.com:8000"), "/x").as_deref(),
            Some("admin-host")
        );
        assert_eq!(name(&t, Some("other"), "/x").as_deref(), Some("web"));
    }

    #[test]
    fn no_route_without_catch_all() {
        let mut t = RoutingTable {
            routes: router().load().routes.clone(),
            active: Color::Blue,
        };
        t.routes.retain(|r| r.name == "api");
        assert!(t.find(None, "/").is_none());
        assert!(t.find(None, "/ap").is_none());
    }

    #[test]
    fn switch_shares_routes_and_moves_all_at_once() {
        let r = router();
        let before = r.load_full_for_test();
        r.set_active(Color::Green);
        let after = r.load();
        assert_eq!(after.active, Color::Green);
        assert!(Arc::ptr_eq(&before.routes[0], &after.routes[0]));
        assert_eq!(r.active(), Color::Green);
    }

    #[test]
    fn round_robin_skips_unhealthy() {
        let r = router();
        let t = r.load();
        let api = t.find(None, "/api").expect("api route");
        let pool = api.pool(Color::Blue);
        let a = pool.pick().addr;
        let b = pool.pick().addr;
        assert_ne!(a, b);
        pool.backends[0].set_health(Health::Unhealthy);
        for _ in 0..4 {
            assert_eq!(pool.pick().addr, pool.backends[1].addr);
        }
        pool.backends[1].set_health(Health::Unhealthy);
        let _still_answers = pool.pick();
    }

    #[test]
    fn shared_backends_are_deduplicated() {
        let r = router();
        assert_eq!(r.backends_of(Color::Blue).count(), 3);
        assert_eq!(r.backends_of(Color::Green).count(), 2);
    }

    #[test]
    fn colors_parse() {
        assert_eq!("GREEN".parse::<Color>(), Ok(Color::Green));
        assert!("red".parse::<Color>().is_err());
        assert_eq!(Color::Blue.other(), Color::Green);
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("a.com"), "a.com");
    }

    impl Router {
        fn load_full_for_test(&self) -> Arc<RoutingTable> {
            self.table.load_full()
        }
    }
}
