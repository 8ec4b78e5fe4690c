//! switchyard: a front-door reverse proxy with blue-green deployment built in.
//!
//! Crate map (one concept per file):
//! - [`config`]: the TOML config, validated, errors with `FILE:LINE:COL`
//! - [`color`]: blue and green, shared by every part
//! - [`routing`]: backends, pools and the `ArcSwap` routing table
//! - [`engine`]: the HTTP/1.1 data plane on pingora-core's `ServerApp`: heads, framing,
//!   upstream pool, upgrade relay
//! - [`request`]: request-level decisions any data path calls: route, color, gzip, accounting
//! - [`edge`]: the refusal type, raw-byte checks and the connection cap
//! - [`cors`], [`rate_limit`], [`route_limits`]: per-route CORS, rate limits, body size and
//!   backend timeouts, as plain-value decisions every data path calls
//! - [`tls`]: the HTTPS certificate, checked at load and swapped by `reload-tls`
//! - [`sni`]: a certificate per host name, chosen by SNI; the set `reload-tls` swaps
//! - [`real_ip`]: who the client is behind balancers: `trusted_proxies`, PROXY header and
//!   `X-Forwarded-For` decisions; [`proxy_protocol`]: the PROXY header read at accept
//! - [`redirect`]: `redirect_https`: which plain requests get a 308 to https, and where
//! - [`access_log`]: one JSON line per request, off the request path
//! - [`health`]: active health checks (background service)
//! - [`switch`]: the pure switch state machine; [`controller`] drives it and fills
//!   [`switch_state`], the running switch's record
//! - [`fault`]: whose fault a failed exchange was (what the watch may count)
//! - [`verdict`]: the watch's rules (error count, error rate over a baseline, p99, traffic)
//! - [`history`]: per-second samples of each color's counts, for the baseline
//! - [`hooks`]: operator commands run around a switch
//! - [`drain`]: per-color open requests and WebSockets, and their handover
//! - [`wsframe`]: WebSocket frame boundaries, for a clean 1012 close
//! - [`fleet`]: fleet mode: several instances switch as one, through etcd
//! - [`admin`]: the admin Unix socket protocol
//! - [`state`]: the persisted active color
//! - [`metrics`]: the Prometheus registry
//! - [`admin_http`]: the `[admin] metrics` listener: `/metrics`, the status page and its feed
//! - [`progress_bar`]: `ctl`'s bar for a switch's progress on a terminal
//! - [`status`]: the status page, its state snapshot and the controller's progress feed
//! - [`app`]: the shared state; [`server`]: assembling and running the process
//! - [`sync`]: poison-tolerant locking for the control plane
//! - [`demo`]: built-in demo backends (for `switchyard demo` and tests)

pub mod access_log;
pub mod admin;
pub mod admin_http;
pub mod admission;
pub mod app;
pub mod clock;
pub mod color;
pub mod config;
pub mod controller;
pub mod cors;
pub mod demo;
pub mod demo_tour;
pub mod drain;
pub mod edge;
pub mod engine;
pub mod fault;
pub mod fleet;
pub mod h2;
pub mod health;
pub mod history;
pub mod hooks;
pub mod metrics;
pub mod progress_bar;
pub mod proxy_protocol;
pub mod rate_limit;
pub mod real_ip;
pub mod redirect;
pub mod request;
pub mod route_limits;
pub mod routing;
pub mod server;
pub mod sni;
pub mod state;
pub mod status;
pub mod switch;
pub mod switch_state;
pub mod sync;
pub mod tls;
pub mod verdict;
pub mod wsframe;
