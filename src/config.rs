//! The TOML config: serde types that reject unknown keys, then explicit validators that turn
//! them into a [`Config`] the rest of the crate can trust. Every error names `FILE:LINE:COL`.
//!
//! This module does not touch sockets or files other than the config itself, with two
//! exceptions, both because `check` must catch the mistake before a deploy does: resolving a
//! host name in a server address, and reading the TLS certificate and key (tls.rs parses
//! them and checks that they belong together).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::access_log::Destination;
use crate::color::Color;
use crate::real_ip::TrustedProxies;
use crate::verdict::Rules;

mod cors;
mod h2;
mod https;
mod rate_limit;
mod route_limits;
mod trusted;

pub use https::{sources as tls_sources, CertificateConfig};

/// A config that failed to load: where and what, ready to print as `FILE:LINE:COL: message`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{col}: {message}")]
    Invalid {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
}

/// A duration written with a unit (`"500ms"`, `"5s"`, `"1m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `"500ms"`, `"5s"`, `"1m"`, `"1h 30m"`; a bare number is refused because `30` could
/// mean seconds or milliseconds and a wrong guess at 3 a.m. is expensive.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration: write a number with a unit, like \"5s\"".into());
    }
    if t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "duration \"{s}\" has no unit: write \"{t}s\" or \"{t}ms\""
        ));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration \"{s}\": {e} (examples: \"500ms\", \"5s\", \"1m\")"))
}

fn default_threads() -> Spanned<usize> {
    Spanned::new(0..0, 2)
}
fn default_initial() -> Spanned<ColorName> {
    Spanned::new(0..0, ColorName::Blue)
}
fn default_socket() -> PathBuf {
    PathBuf::from("/run/switchyard/admin.sock")
}
fn default_state_file() -> PathBuf {
    PathBuf::from("/var/lib/switchyard/state")
}
fn dur(s: u64) -> Dur {
    Dur(Duration::from_secs(s))
}
fn default_upstream_idle() -> Dur {
    dur(4)
}
fn default_connect_timeout() -> Dur {
    dur(2)
}
/// nginx's proxy_read_timeout / send_timeout.
fn default_io_timeout() -> Dur {
    dur(60)
}
fn default_header_name() -> Spanned<String> {
    Spanned::new(0..0, "x-switchyard-color".into())
}
fn default_hook_timeout() -> Dur {
    dur(60)
}

/// pingora's own cap on a request header block: past it pingora answers 400 itself, so a
/// `max_header_bytes` above it would never be reached.
pub const PINGORA_MAX_HEADER_BYTES: usize = 1_048_575;
/// pingora parses at most this many header lines (httparse's array); past it, 400.
pub const PINGORA_MAX_HEADERS: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: RawListen,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    switch: RawSwitch,
    #[serde(default)]
    shutdown: RawShutdown,
    preview: Option<RawPreview>,
    #[serde(default)]
    hooks: RawHooks,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    access_log: RawAccessLog,
    #[serde(default)]
    headers: RawHeaders,
    fleet: Option<Spanned<RawFleet>>,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
}

fn default_lease_ttl() -> Spanned<Dur> {
    Spanned::new(0..0, dur(5))
}
fn default_min_members() -> Spanned<usize> {
    Spanned::new(0..0, 1)
}

/// `[fleet]`: several instances switch as one through etcd (src/fleet/).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    etcd: Spanned<Vec<Spanned<String>>>,
    name: Spanned<String>,
    member: Option<Spanned<String>>,
    #[serde(default = "default_lease_ttl")]
    lease_ttl: Spanned<Dur>,
    #[serde(default = "default_min_members")]
    min_members: Spanned<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    http: Spanned<String>,
    /// HTTPS front door; needs `cert` and `key`.
    https: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    /// HTTP/2 to clients: ALPN h2 on `https`, h2c (prior knowledge) on `http`.
    #[serde(default)]
    http2: bool,
    /// PROXY protocol v1/v2 from `[server] trusted_proxies` (config/trusted.rs).
    proxy_protocol: Option<Spanned<bool>>,
    /// 308 to https:// on the plain listener (config/https.rs).
    redirect_https: Option<Spanned<bool>>,
    /// `[[listen.certificates]]`: a certificate per host name (config/https.rs).
    #[serde(default)]
    certificates: Vec<Spanned<https::RawCertificate>>,
}

fn default_access_path() -> Spanned<String> {
    Spanned::new(0..0, "stdout".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccessLog {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "default_access_path")]
    path: Spanned<String>,
}

impl Default for RawAccessLog {
    fn default() -> Self {
        RawAccessLog {
            enabled: false,
            path: default_access_path(),
        }
    }
}

/// Header name (as written) to value.
type RawHeaderMap = BTreeMap<String, Spanned<String>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaders {
    #[serde(default)]
    add: RawHeaderMap,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_threads")]
    threads: Spanned<usize>,
    /// Idle pooled upstream connections are closed after this, below common backend
    /// keep-alive timeouts (node: 5 s) so a pooled connection is never reused just as the
    /// backend closes it.
    #[serde(default = "default_upstream_idle")]
    upstream_idle_timeout: Dur,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: Dur,
    /// Longest wait for the backend's next bytes once the request is sent: for its head
    /// (then 504) and between body reads (then the connection is cut).
    #[serde(default = "default_io_timeout")]
    upstream_read_timeout: Dur,
    /// Longest a write to the client may stall (a client that stops reading).
    #[serde(default = "default_io_timeout")]
    client_send_timeout: Dur,
    /// pingora's socket for a zero-downtime binary upgrade.
    upgrade_sock: Option<PathBuf>,
    /// Whose PROXY header and X-Forwarded-For are believed (config/trusted.rs).
    trusted_proxies: trusted::RawTrusted,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            threads: default_threads(),
            upstream_idle_timeout: default_upstream_idle(),
            connect_timeout: default_connect_timeout(),
            upstream_read_timeout: default_io_timeout(),
            client_send_timeout: default_io_timeout(),
            upgrade_sock: None,
            trusted_proxies: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default = "default_socket")]
    socket: PathBuf,
    metrics: Option<Spanned<String>>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            socket: default_socket(),
            metrics: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    #[serde(default = "default_state_file")]
    file: PathBuf,
    #[serde(default = "default_initial")]
    initial: Spanned<ColorName>,
}

impl Default for RawState {
    fn default() -> Self {
        RawState {
            file: default_state_file(),
            initial: default_initial(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ColorName {
    #[default]
    Blue,
    Green,
}

impl From<ColorName> for Color {
    fn from(c: ColorName) -> Color {
        match c {
            ColorName::Blue => Color::Blue,
            ColorName::Green => Color::Green,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHealth {
    path: Spanned<String>,
    interval: Dur,
    timeout: Dur,
    rise: Spanned<u32>,
    fall: Spanned<u32>,
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth {
            path: Spanned::new(0..0, "/health/ready".into()),
            interval: dur(2),
            timeout: dur(1),
            rise: Spanned::new(0..0, 2),
            fall: Spanned::new(0..0, 3),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSwitch {
    gate_timeout: Dur,
    drain_timeout: Dur,
    watch: Dur,
    max_errors: Option<Spanned<u64>>,
    max_error_rate: Option<Spanned<String>>,
    baseline: Option<Spanned<bool>>,
    min_requests: Option<Spanned<u64>>,
    require_traffic: bool,
    max_p99: Option<Spanned<Dur>>,
}

impl Default for RawSwitch {
    fn default() -> Self {
        RawSwitch {
            gate_timeout: dur(50),
            drain_timeout: dur(30),
            watch: dur(30),
            max_errors: None,
            max_error_rate: None,
            baseline: None,
            min_requests: None,
            require_traffic: false,
            max_p99: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShutdown {
    timeout: Dur,
}

impl Default for RawShutdown {
    fn default() -> Self {
        RawShutdown { timeout: dur(30) }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPreview {
    #[serde(default = "default_header_name")]
    header: Spanned<String>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    #[serde(default)]
    pre_switch: String,
    #[serde(default)]
    post_commit: String,
    #[serde(default)]
    on_rollback: String,
    #[serde(default = "default_hook_timeout")]
    timeout: Dur,
}

impl Default for RawHooks {
    fn default() -> Self {
        RawHooks {
            pre_switch: String::new(),
            post_commit: String::new(),
            on_rollback: String::new(),
            timeout: default_hook_timeout(),
        }
    }
}

/// What a client may cost the front door before it is refused. Defaults fit a public edge on
/// a small machine: well under the fd limit, nginx-like header sizes, short timeouts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_connections: Spanned<usize>,
    max_header_bytes: Spanned<usize>,
    max_headers: Spanned<usize>,
    header_timeout: Spanned<Dur>,
    idle_timeout: Spanned<Dur>,
}

impl Default for RawLimits {
    fn default() -> Self {
        let d = LimitsConfig::default();
        RawLimits {
            max_connections: Spanned::new(0..0, d.max_connections),
            max_header_bytes: Spanned::new(0..0, d.max_header_bytes),
            max_headers: Spanned::new(0..0, d.max_headers),
            header_timeout: Spanned::new(0..0, Dur(d.header_timeout)),
            idle_timeout: Spanned::new(0..0, Dur(d.idle_timeout)),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    path_prefix: Spanned<String>,
    host: Option<Spanned<String>>,
    /// Overrides `[health] path` for this route's servers.
    health_path: Option<Spanned<String>>,
    blue: Spanned<Vec<Spanned<String>>>,
    green: Spanned<Vec<Spanned<String>>>,
    /// Response headers for this route; they win over `[headers] add`.
    #[serde(default)]
    headers: RawHeaderMap,
    /// gzip text responses for clients that accept it.
    #[serde(default)]
    gzip: bool,
    /// HTTP/2 (h2c) to the backends; see config/h2.rs.
    grpc: Option<Spanned<bool>>,
    cors: Option<Spanned<cors::RawCors>>,
    rate_limit: Option<rate_limit::RawRateLimit>,
    max_body_bytes: Option<Spanned<u64>>,
    read_timeout: Option<Spanned<Dur>>,
    write_timeout: Option<Spanned<Dur>>,
}

/// The validated config. Everything here has been checked; nothing downstream re-validates.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub listen_http: SocketAddr,
    /// `[listen] https`, `cert`, `key`: the HTTPS front door, its pair already checked.
    pub tls: Option<TlsConfig>,
    /// `[listen] proxy_protocol`: read a PROXY header from trusted sources at accept.
    pub proxy_protocol: bool,
    /// `[listen] redirect_https`: the https port the plain listener's 308s point at.
    pub redirect_https: Option<u16>,
    /// `[server] trusted_proxies`.
    pub trusted_proxies: TrustedProxies,
    /// `[access_log]`: where the JSON lines go; `None` when off.
    pub access_log: Option<Destination>,
    /// `[listen] http2`: HTTP/2 to clients (src/h2/).
    pub http2: bool,
    /// `[headers] add`: for switchyard's own answers (each route has its merged list).
    pub headers: Vec<HeaderRule>,
    pub threads: usize,
    pub upstream_idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub upstream_read_timeout: Duration,
    pub client_send_timeout: Duration,
    pub upgrade_sock: PathBuf,
    pub admin_socket: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub state_file: PathBuf,
    pub initial: Color,
    pub health: HealthConfig,
    pub switch: SwitchConfig,
    pub shutdown_timeout: Duration,
    pub preview: Option<PreviewConfig>,
    pub hooks: HooksConfig,
    pub limits: LimitsConfig,
    /// `[fleet]`: `None` is one instance on its state file (the default).
    pub fleet: Option<FleetConfig>,
    pub routes: Vec<RouteConfig>,
}

/// `[fleet]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// etcd client URLs (`http://HOST:PORT`).
    pub etcd: Vec<String>,
    /// Key prefix: every instance with this name is one fleet.
    pub name: String,
    /// This instance's id in the fleet.
    pub member: String,
    /// Whole seconds: etcd leases count in seconds.
    pub lease_ttl: Duration,
    pub min_members: usize,
}

/// `[limits]`: the refusals of the front door (docs/refusals.md lists status codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Open client connections; the next one gets a 503 and is closed at once.
    pub max_connections: usize,
    /// Request line plus header block, in bytes; past it, 431.
    pub max_header_bytes: usize,
    /// Header lines; past it, 431.
    pub max_headers: usize,
    /// From accept (or the first byte of a keep-alive request) to the end of its header.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may sit between requests.
    pub idle_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 8192,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Debug, Clone)]
pub struct SwitchConfig {
    pub gate_timeout: Duration,
    pub drain_timeout: Duration,
    pub watch: Duration,
    /// What the watch judges: `max_errors`, `max_error_rate`, `baseline`, `min_requests`,
    /// `require_traffic`, `max_p99`.
    pub rules: Rules,
}

#[derive(Debug, Clone)]
pub struct PreviewConfig {
    /// Lower-case header name.
    pub header: String,
    pub allow: Vec<IpNet>,
}

#[derive(Debug, Clone, Default)]
pub struct HooksConfig {
    pub pre_switch: Option<String>,
    pub post_commit: Option<String>,
    pub on_rollback: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub path_prefix: String,
    /// Lower-case host without port.
    pub host: Option<String>,
    pub health_path: String,
    pub blue: Vec<SocketAddr>,
    pub green: Vec<SocketAddr>,
    /// `[headers] add` merged with the route's own `headers` (the route's win).
    pub headers: Vec<HeaderRule>,
    pub gzip: bool,
    /// `grpc = true`: reached over HTTP/2 only, forwarded as h2c (src/h2/).
    pub grpc: bool,
    pub cors: Option<crate::cors::Policy>,
    pub rate_limit: Option<crate::rate_limit::Limit>,
    pub limits: crate::route_limits::RouteLimits,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The pair as `check` validated it; `reload-tls` re-reads the two paths.
    pub loaded: Arc<CertifiedKey>,
    /// `[[listen.certificates]]`: more pairs, chosen by SNI; this pair is the default.
    pub certificates: Vec<CertificateConfig>,
}

/// One response header to set, parsed once at load so a request only clones two `Bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRule {
    pub name: HeaderName,
    /// The name as written in the config, which HTTP/1 sends as is.
    pub wire_name: Bytes,
    pub value: HeaderValue,
}

/// Response headers a config may not set: they frame the message or belong to a hop, and
/// overriding them would corrupt responses (Content-Encoding belongs to `gzip`).
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-encoding",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Validates one `headers` table; `scope` names it in messages.
fn header_rules(
    raw: &RawHeaderMap,
    scope: &str,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<Vec<HeaderRule>, ConfigError> {
    let mut out: Vec<HeaderRule> = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let lower = name.to_ascii_lowercase();
        let parsed = HeaderName::from_bytes(lower.as_bytes()).map_err(|_| {
            at(
                value.span(),
                format!("{scope}: \"{name}\" is not a valid header name"),
            )
        })?;
        if RESERVED_HEADERS.contains(&parsed.as_str()) {
            return Err(at(
                value.span(),
                format!("{scope}: \"{name}\" cannot be set here: it frames the response or belongs to one connection"),
            ));
        }
        if out.iter().any(|r| r.name == parsed) {
            return Err(at(
                value.span(),
                format!("{scope}: \"{name}\" is given twice (header names ignore case)"),
            ));
        }
        let v = HeaderValue::from_str(value.get_ref()).map_err(|_| {
            at(
                value.span(),
                format!("{scope}: the value of \"{name}\" must be visible ASCII text without line breaks"),
            )
        })?;
        out.push(HeaderRule {
            name: parsed,
            wire_name: Bytes::from(name.clone()),
            value: v,
        });
    }
    Ok(out)
}

/// The headers a route's responses get: the global ones, each replaced by the route's own
/// of the same name, then the route's others.
pub fn merge_headers(global: &[HeaderRule], route: &[HeaderRule]) -> Vec<HeaderRule> {
    global
        .iter()
        .filter(|g| !route.iter().any(|r| r.name == g.name))
        .chain(route.iter())
        .cloned()
        .collect()
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.display().to_string(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Validates config text; `path` is only used in messages and to name the file.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let at = |span: Range<usize>, message: String| {
            let (line, col) = line_col(text, span.start);
            ConfigError::Invalid {
                file: file.clone(),
                line,
                col,
                message,
            }
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            at(span, e.message().trim_end().to_string())
        })?;
        validate(raw, path, &at)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(format!(
            "address \"{s}\" has no port: write it as HOST:PORT, like \"127.0.0.1:8080\""
        ));
    }
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("address \"{s}\" resolved to nothing")),
        Err(e) => Err(format!(
            "address \"{s}\" is not HOST:PORT or does not resolve: {e}"
        )),
    }
}

/// The error reporter every validator gets: a span of the file and a message.
type At<'a> = &'a dyn Fn(Range<usize>, String) -> ConfigError;

/// Checks every section (one validator each) and builds the config.
fn validate(raw: RawConfig, path: &Path, at: At<'_>) -> Result<Config, ConfigError> {
    let listen_http = socket_addr(raw.listen.http.get_ref())
        .map_err(|m| at(raw.listen.http.span(), format!("[listen] http: {m}")))?;
    let tls = tls_config(&raw.listen, listen_http, at)?;
    let (tls, redirect_https) = https::listen_extras(&raw.listen, tls, at)?;
    let trusted_proxies = trusted::trusted_proxies(
        &raw.server.trusted_proxies,
        raw.listen.proxy_protocol.as_ref(),
        at,
    )?;
    let access_log = access_log_destination(&raw.access_log, at)?;
    let global_headers = header_rules(&raw.headers.add, "[headers] add", at)?;
    let threads = server_section(&raw.server, at)?;
    let metrics = metrics_addr(&raw.admin, at)?;
    let health = health_config(&raw.health, at)?;
    let switch = switch_config(raw.switch, at)?;
    let preview = match &raw.preview {
        Some(p) => Some(preview_config(p, at)?),
        None => None,
    };
    let limits = limits(&raw.limits, at)?;
    let fleet = match &raw.fleet {
        Some(f) => Some(fleet_config(f, at)?),
        None => None,
    };
    let routes = route_configs(&raw.route, &health.path, &global_headers, at)?;
    h2::check_routes(&raw.route, raw.listen.http2, at)?;
    let upgrade_sock = raw.server.upgrade_sock.clone().unwrap_or_else(|| {
        raw.admin
            .socket
            .parent()
            .unwrap_or(Path::new("/tmp"))
            .join("upgrade.sock")
    });
    Ok(Config {
        file: path.to_path_buf(),
        listen_http,
        tls,
        proxy_protocol: raw.listen.proxy_protocol.is_some_and(|p| *p.get_ref()),
        redirect_https,
        trusted_proxies,
        access_log,
        http2: raw.listen.http2,
        headers: global_headers,
        threads,
        upstream_idle_timeout: raw.server.upstream_idle_timeout.0,
        connect_timeout: raw.server.connect_timeout.0,
        upstream_read_timeout: raw.server.upstream_read_timeout.0,
        client_send_timeout: raw.server.client_send_timeout.0,
        upgrade_sock,
        admin_socket: raw.admin.socket,
        metrics,
        state_file: raw.state.file,
        initial: (*raw.state.initial.get_ref()).into(),
        health,
        switch,
        shutdown_timeout: raw.shutdown.timeout.0,
        preview,
        hooks: hooks_config(raw.hooks),
        limits,
        fleet,
        routes,
    })
}

/// `[access_log]`: `None` when off.
fn access_log_destination(
    a: &RawAccessLog,
    at: At<'_>,
) -> Result<Option<Destination>, ConfigError> {
    if !a.enabled {
        return Ok(None);
    }
    Ok(Some(match a.path.get_ref().trim() {
        "" => {
            return Err(at(
                a.path.span(),
                "[access_log] path must be \"stdout\" or a file path".into(),
            ))
        }
        "stdout" | "-" => Destination::Stdout,
        p => Destination::File(PathBuf::from(p)),
    }))
}

/// `[server]`: the worker count (the timeouts are taken as they are once non-zero).
fn server_section(s: &RawServer, at: At<'_>) -> Result<usize, ConfigError> {
    let threads = *s.threads.get_ref();
    if threads == 0 || threads > 1024 {
        return Err(at(
            s.threads.span(),
            "[server] threads must be between 1 and 1024".into(),
        ));
    }
    if s.upstream_read_timeout.0.is_zero() || s.client_send_timeout.0.is_zero() {
        return Err(at(
            0..0,
            "[server] upstream_read_timeout and client_send_timeout must be greater than zero"
                .into(),
        ));
    }
    Ok(threads)
}

/// `[admin] metrics`: an empty string turns the endpoint off.
fn metrics_addr(a: &RawAdmin, at: At<'_>) -> Result<Option<SocketAddr>, ConfigError> {
    match &a.metrics {
        Some(m) if m.get_ref().is_empty() => Ok(None),
        Some(m) => socket_addr(m.get_ref())
            .map(Some)
            .map_err(|e| at(m.span(), format!("[admin] metrics: {e}"))),
        None => Ok(None),
    }
}

fn health_config(h: &RawHealth, at: At<'_>) -> Result<HealthConfig, ConfigError> {
    let path = h.path.get_ref().clone();
    if !path.starts_with('/') {
        return Err(at(
            h.path.span(),
            format!("[health] path \"{path}\" must start with '/'"),
        ));
    }
    for (name, v) in [("rise", &h.rise), ("fall", &h.fall)] {
        if *v.get_ref() == 0 {
            return Err(at(v.span(), format!("[health] {name} must be at least 1")));
        }
    }
    if h.interval.0.is_zero() || h.timeout.0.is_zero() {
        return Err(at(
            0..0,
            "[health] interval and timeout must be greater than zero".into(),
        ));
    }
    Ok(HealthConfig {
        path,
        interval: h.interval.0,
        timeout: h.timeout.0,
        rise: *h.rise.get_ref(),
        fall: *h.fall.get_ref(),
    })
}

fn preview_config(p: &RawPreview, at: At<'_>) -> Result<PreviewConfig, ConfigError> {
    let header = p.header.get_ref().to_ascii_lowercase();
    if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        return Err(at(
            p.header.span(),
            format!("[preview] header \"{header}\" is not a valid header name"),
        ));
    }
    let allow = p
        .allow
        .iter()
        .map(|a| {
            let s = a.get_ref();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    at(
                        a.span(),
                        format!("[preview] allow: \"{s}\" is not an address or CIDR like \"127.0.0.1/32\""),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PreviewConfig { header, allow })
}

/// `[hooks]`: an empty command is no hook.
fn hooks_config(h: RawHooks) -> HooksConfig {
    let hook = |s: String| if s.trim().is_empty() { None } else { Some(s) };
    HooksConfig {
        pre_switch: hook(h.pre_switch),
        post_commit: hook(h.post_commit),
        on_rollback: hook(h.on_rollback),
        timeout: h.timeout.0,
    }
}

/// Every `[[route]]`, each checked alone and then against the ones before it.
fn route_configs(
    raw: &[Spanned<RawRoute>],
    health_path: &str,
    global_headers: &[HeaderRule],
    at: At<'_>,
) -> Result<Vec<RouteConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(at(
            // Something missing from the whole file: point at its first line.
            0..0,
            "no [[route]]: add at least one, with name, path_prefix, blue and green".into(),
        ));
    }
    let mut routes: Vec<RouteConfig> = Vec::new();
    for r in raw {
        let r = r.get_ref();
        let route = route_config(r, health_path, global_headers, at)?;
        if routes.iter().any(|o| o.name == route.name) {
            return Err(at(
                r.name.span(),
                format!(
                    "duplicate route name \"{}\": route names must be unique",
                    route.name
                ),
            ));
        }
        if routes
            .iter()
            .any(|o| o.path_prefix == route.path_prefix && o.host == route.host)
        {
            return Err(at(
                r.path_prefix.span(),
                format!(
                    "route \"{}\": another route already has path_prefix \"{}\" for the same host",
                    route.name, route.path_prefix
                ),
            ));
        }
        routes.push(route);
    }
    Ok(routes)
}

/// One `[[route]]` on its own.
fn route_config(
    r: &RawRoute,
    default_health_path: &str,
    global_headers: &[HeaderRule],
    at: At<'_>,
) -> Result<RouteConfig, ConfigError> {
    let name = r.name.get_ref().trim().to_string();
    if name.is_empty() {
        return Err(at(r.name.span(), "route name must not be empty".into()));
    }
    let prefix = r.path_prefix.get_ref().clone();
    if !prefix.starts_with('/') {
        return Err(at(
            r.path_prefix.span(),
            format!("path_prefix \"{prefix}\" must start with '/'"),
        ));
    }
    let host = match &r.host {
        Some(h) if h.get_ref().trim().is_empty() => {
            return Err(at(
                h.span(),
                "host must not be empty; leave it out to match any host".into(),
            ))
        }
        Some(h) => Some(h.get_ref().trim().to_ascii_lowercase()),
        None => None,
    };
    let health_path = match &r.health_path {
        Some(p) if !p.get_ref().starts_with('/') => {
            return Err(at(p.span(), "health_path must start with '/'".into()))
        }
        Some(p) => p.get_ref().clone(),
        None => default_health_path.to_string(),
    };
    let blue = servers(&r.blue, &name, "blue", at)?;
    let green = servers(&r.green, &name, "green", at)?;
    let own = header_rules(&r.headers, &format!("route \"{name}\" headers"), at)?;
    let cors = r
        .cors
        .as_ref()
        .map(|c| cors::policy(c, &name, at))
        .transpose()?;
    let rate_limit = r
        .rate_limit
        .as_ref()
        .map(|l| rate_limit::limit(l, &name, at))
        .transpose()?;
    let limits = route_limits::limits(
        r.max_body_bytes.as_ref(),
        r.read_timeout.as_ref(),
        r.write_timeout.as_ref(),
        &name,
        at,
    )?;
    Ok(RouteConfig {
        name,
        path_prefix: prefix,
        host,
        health_path,
        blue,
        green,
        headers: merge_headers(global_headers, &own),
        gzip: r.gzip,
        grpc: r.grpc.as_ref().is_some_and(|g| *g.get_ref()),
        cors,
        rate_limit,
        limits,
    })
}

/// A route's server list for one color: at least one, each an address, none twice.
fn servers(
    list: &Spanned<Vec<Spanned<String>>>,
    route: &str,
    color: &str,
    at: At<'_>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    if list.get_ref().is_empty() {
        return Err(at(
            list.span(),
            format!("route \"{route}\": {color} needs at least one server"),
        ));
    }
    let mut out: Vec<SocketAddr> = Vec::new();
    for s in list.get_ref() {
        let a = socket_addr(s.get_ref())
            .map_err(|e| at(s.span(), format!("route \"{route}\" {color}: {e}")))?;
        if out.contains(&a) {
            return Err(at(
                s.span(),
                format!("route \"{route}\" {color}: server {a} is listed twice"),
            ));
        }
        out.push(a);
    }
    Ok(out)
}

/// A fleet name or member id: it goes into etcd keys and admin lines, so no `/`, no spaces.
fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// This machine's host name, the default member id.
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // fails.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    Some(name)
}

/// `http://HOST:PORT`: the form etcd prints and etcd-client dials.
fn etcd_url(s: &str) -> Result<String, String> {
    let uri: http::Uri = s
        .parse()
        .map_err(|_| format!("\"{s}\" is not a URL like \"http://127.0.0.1:2379\""))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
            "\"{s}\": TLS to etcd is not supported yet; reach etcd over http on a trusted network"
        ))
        }
        _ => {
            return Err(format!(
                "\"{s}\" needs http:// in front, like \"http://127.0.0.1:2379\""
            ))
        }
    }
    if uri.port_u16().is_none() {
        return Err(format!(
            "\"{s}\" has no port: etcd clients use 2379, like \"http://127.0.0.1:2379\""
        ));
    }
    if uri.path() != "/" || uri.query().is_some() {
        return Err(format!("\"{s}\": give only http://HOST:PORT, no path"));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// `[fleet]`: etcd URLs, names usable in keys, a lease etcd can grant.
fn fleet_config(
    raw: &Spanned<RawFleet>,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<FleetConfig, ConfigError> {
    let section = raw.span();
    let raw = raw.get_ref();
    if raw.etcd.get_ref().is_empty() {
        return Err(at(
            raw.etcd.span(),
            "[fleet] etcd needs at least one URL, like [\"http://127.0.0.1:2379\"]".into(),
        ));
    }
    let mut etcd = Vec::new();
    for u in raw.etcd.get_ref() {
        etcd.push(
            etcd_url(u.get_ref().trim()).map_err(|m| at(u.span(), format!("[fleet] etcd: {m}")))?,
        );
    }
    let id_rule = "letters, digits, '-', '_' or '.' (at most 128)";
    let name = raw.name.get_ref().trim().to_string();
    if !valid_id(&name) {
        return Err(at(
            raw.name.span(),
            format!("[fleet] name \"{name}\" must be {id_rule}: it is the etcd key prefix"),
        ));
    }
    let member = match &raw.member {
        Some(m) => {
            let id = m.get_ref().trim().to_string();
            if !valid_id(&id) {
                return Err(at(m.span(), format!("[fleet] member \"{id}\" must be {id_rule}")));
            }
            id
        }
        None => match host_name().filter(|h| valid_id(h)) {
            Some(h) => h,
            None => {
                return Err(at(
                    section,
                    format!("[fleet] member is not set and the host name cannot serve as one ({id_rule}); set member = \"...\""),
                ))
            }
        },
    };
    let ttl = raw.lease_ttl.get_ref().0;
    if ttl < Duration::from_secs(2) || ttl > Duration::from_secs(300) || ttl.subsec_nanos() != 0 {
        return Err(at(
            raw.lease_ttl.span(),
            "[fleet] lease_ttl must be whole seconds between \"2s\" and \"5m\" (etcd leases count seconds and refuse shorter ones)".into(),
        ));
    }
    let min_members = *raw.min_members.get_ref();
    if min_members == 0 {
        return Err(at(
            raw.min_members.span(),
            "[fleet] min_members must be at least 1".into(),
        ));
    }
    Ok(FleetConfig {
        etcd,
        name,
        member,
        lease_ttl: ttl,
        min_members,
    })
}

/// Parses `"1%"`, `"0.5%"` into a ratio (0.01, 0.005); 0% to 100%.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let Some(num) = t.strip_suffix('%') else {
        return Err(format!(
            "\"{s}\" is not a percentage: write it with a % sign, like \"1%\" or \"0.5%\""
        ));
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=100.0).contains(&v) => Ok(v / 100.0),
        _ => Err(format!(
            "\"{s}\" is not a percentage between 0% and 100% (examples: \"1%\", \"0.5%\")"
        )),
    }
}

/// `[switch]`: the timeouts and the watch rules. `max_errors` defaults to 3 (the seed's
/// smoke test) only while no rate or latency rule is written, else it is off unless written:
/// a default count of 3 would defeat a rate rule on a busy service.
fn switch_config(
    raw: RawSwitch,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<SwitchConfig, ConfigError> {
    if let Some(m) = raw.max_errors.as_ref().filter(|m| *m.get_ref() == 0) {
        return Err(at(
            m.span(),
            "[switch] max_errors must be at least 1 (1 means: the first error rolls back)".into(),
        ));
    }
    let max_error_rate = match &raw.max_error_rate {
        Some(r) => Some(
            parse_percent(r.get_ref())
                .map_err(|e| at(r.span(), format!("[switch] max_error_rate: {e}")))?,
        ),
        None => None,
    };
    let baseline = raw.baseline.as_ref().is_some_and(|b| *b.get_ref());
    if let (Some(b), true, None) = (&raw.baseline, baseline, max_error_rate) {
        return Err(at(
            b.span(),
            "[switch] baseline = true needs max_error_rate: the allowance over the old color's error ratio, like \"1%\"".into(),
        ));
    }
    let max_p99 = match &raw.max_p99 {
        Some(p) if p.get_ref().0.is_zero() => {
            return Err(at(
                p.span(),
                "[switch] max_p99 must be greater than zero".into(),
            ))
        }
        Some(p) => Some(p.get_ref().0),
        None => None,
    };
    let rates = max_error_rate.is_some() || max_p99.is_some();
    let max_errors = match raw.max_errors {
        Some(m) => Some(*m.get_ref()),
        None if rates => None,
        None => Rules::default().max_errors,
    };
    Ok(SwitchConfig {
        gate_timeout: raw.gate_timeout.0,
        drain_timeout: raw.drain_timeout.0,
        watch: raw.watch.0,
        rules: Rules {
            max_errors,
            max_error_rate,
            baseline,
            min_requests: raw.min_requests.map(|m| *m.get_ref()).unwrap_or(0),
            require_traffic: raw.require_traffic,
            max_p99,
        },
    })
}

/// `[listen] https`, `cert` and `key` come together or not at all; the pair must load.
fn tls_config(
    raw: &RawListen,
    listen_http: SocketAddr,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<Option<TlsConfig>, ConfigError> {
    let (https, cert, key) = match (&raw.https, &raw.cert, &raw.key) {
        (None, None, None) => return Ok(None),
        (Some(h), Some(c), Some(k)) => (h, c, k),
        _ => {
            let given = [&raw.https, &raw.cert, &raw.key]
                .into_iter()
                .flatten()
                .map(|s| s.span())
                .min_by_key(|s| s.start)
                .unwrap_or(0..0);
            return Err(at(
                given,
                "[listen] https, cert and key go together: give all three (cert and key are PEM files) or none".into(),
            ));
        }
    };
    let addr = socket_addr(https.get_ref())
        .map_err(|m| at(https.span(), format!("[listen] https: {m}")))?;
    if addr == listen_http {
        return Err(at(
            https.span(),
            format!("[listen] https {addr} is also the http address"),
        ));
    }
    let (cert, key, loaded) = https::load_pair("[listen]", cert, key, at)?;
    Ok(Some(TlsConfig {
        addr,
        cert,
        key,
        loaded: Arc::new(loaded),
        certificates: Vec::new(),
    }))
}

fn limits(
    raw: &RawLimits,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<LimitsConfig, ConfigError> {
    let in_range = |v: &Spanned<usize>, name: &str, lo: usize, hi: usize, why: &str| {
        let n = *v.get_ref();
        if n < lo || n > hi {
            Err(at(
                v.span(),
                format!("[limits] {name} must be between {lo} and {hi}{why}"),
            ))
        } else {
            Ok(n)
        }
    };
    let positive = |v: &Spanned<Dur>, name: &str| {
        if v.get_ref().0.is_zero() {
            Err(at(
                v.span(),
                format!("[limits] {name} must be greater than zero"),
            ))
        } else {
            Ok(v.get_ref().0)
        }
    };
    Ok(LimitsConfig {
        // Each proxied connection costs two fds (client and backend).
        max_connections: in_range(&raw.max_connections, "max_connections", 1, 1 << 20, "")?,
        max_header_bytes: in_range(
            &raw.max_header_bytes,
            "max_header_bytes",
            1024,
            PINGORA_MAX_HEADER_BYTES,
            " (pingora refuses larger header blocks itself)",
        )?,
        max_headers: in_range(
            &raw.max_headers,
            "max_headers",
            1,
            PINGORA_MAX_HEADERS,
            " (pingora parses at most 256)",
        )?,
        header_timeout: positive(&raw.header_timeout, "header_timeout")?,
        idle_timeout: positive(&raw.idle_timeout, "idle_timeout")?,
    })
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listen {}", self.listen_http)?;
        if let Some(t) = &self.tls {
            write!(f, " and https {}", t.addr)?;
        }
        write!(
            f,
            " with {} route(s), admin socket {}",
            self.routes.len(),
            self.admin_socket.display()
        )?;
        if let Some(t) = self.tls.as_ref().filter(|t| !t.certificates.is_empty()) {
            write!(f, "; {} certificates by SNI", t.certificates.len() + 1)?;
        }
        if self.proxy_protocol {
            write!(f, "; PROXY protocol")?;
        }
        if !self.trusted_proxies.is_empty() {
            let n = self.trusted_proxies.nets().len();
            write!(f, "; {n} trusted proxy network(s)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[listen]
http = "127.0.0.1:8000"

[[route]]
name = "web"
path_prefix = "/"
blue = ["127.0.0.1:3000"]
green = ["127.0.0.1:3002"]
"#;

    fn err(text: &str) -> String {
        Config::parse(Path::new("t.toml"), text)
            .expect_err("config should be refused")
            .to_string()
    }

    #[test]
    fn design_example_passes() {
        let text = include_str!("../tests/fixtures/design.toml");
        let c = Config::parse(Path::new("design.toml"), text).expect("DESIGN.md example");
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.threads, 2);
        assert_eq!(c.switch.gate_timeout, Duration::from_secs(50));
        assert_eq!(c.preview.as_ref().map(|p| p.allow.len()), Some(1));
        assert_eq!(c.hooks.post_commit, None);
        assert!(c.hooks.pre_switch.is_some());
        let f = c.fleet.expect("[fleet]");
        assert_eq!(f.etcd, vec!["http://127.0.0.1:2379".to_string()]);
        assert_eq!((f.name.as_str(), f.member.as_str()), ("fx-prod", "edge-1"));
        assert_eq!(f.lease_ttl, Duration::from_secs(5));
        assert_eq!(f.min_members, 2);
    }

    #[test]
    fn fleet_is_optional_defaulted_and_validated() {
        assert!(Config::parse(Path::new("t.toml"), MIN)
            .expect("min")
            .fleet
            .is_none());
        let fleet = |body: &str| format!("{MIN}\n[fleet]\n{body}\n");
        let ok =
            fleet("etcd = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379/\"]\nname = \"fx\"");
        let f = Config::parse(Path::new("t.toml"), &ok)
            .expect("fleet")
            .fleet
            .expect("fleet");
        assert_eq!(f.etcd[1], "http://10.0.0.2:2379");
        assert_eq!(f.lease_ttl, Duration::from_secs(5));
        assert_eq!(f.min_members, 1);
        assert!(valid_id(&f.member), "host name default: {}", f.member);

        let e = err(&fleet("etcd = []\nname = \"fx\""));
        assert!(
            e.starts_with("t.toml:12:8: [fleet] etcd needs at least one"),
            "{e}"
        );
        let e = err(&fleet("etcd = [\"127.0.0.1:2379\"]\nname = \"fx\""));
        assert!(
            e.starts_with("t.toml:12:9: [fleet] etcd:") && e.contains("http://"),
            "{e}"
        );
        let e = err(&fleet("etcd = [\"https://e:2379\"]\nname = \"fx\""));
        assert!(e.contains("TLS to etcd"), "{e}");
        let e = err(&fleet("etcd = [\"http://e\"]\nname = \"fx\""));
        assert!(e.contains("has no port"), "{e}");
        let e = err(&fleet("etcd = [\"http://e:1\"]\nname = \"fx/prod\""));
        assert!(
            e.starts_with("t.toml:13:8: [fleet] name \"fx/prod\""),
            "{e}"
        );
        let e = err(&fleet(
            "etcd = [\"http://e:1\"]\nname = \"fx\"\nmember = \"edge 1\"",
        ));
        assert!(e.starts_with("t.toml:14:10: [fleet] member"), "{e}");
        let e = err(&fleet(
            "etcd = [\"http://e:1\"]\nname = \"fx\"\nlease_ttl = \"500ms\"",
        ));
        assert!(
            e.starts_with("t.toml:14:13: [fleet] lease_ttl must be whole seconds"),
            "{e}"
        );
        let e = err(&fleet(
            "etcd = [\"http://e:1\"]\nname = \"fx\"\nmin_members = 0",
        ));
        assert!(e.starts_with("t.toml:14:15: [fleet] min_members"), "{e}");
        let e = err(&fleet("etcd = [\"http://e:1\"]"));
        assert!(e.contains("missing field `name`"), "{e}");
        let e = err(&fleet(
            "etcd = [\"http://e:1\"]\nname = \"fx\"\nttl = \"5s\"",
        ));
        assert!(e.contains("unknown field `ttl`"), "{e}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(Path::new("t.toml"), MIN).expect("minimal config");
        assert_eq!(c.health.rise, 2);
        assert_eq!(c.initial, Color::Blue);
        assert!(c.preview.is_none());
        assert_eq!(
            c.upgrade_sock,
            PathBuf::from("/run/switchyard/upgrade.sock")
        );
    }

    #[test]
    fn unknown_key_names_line_and_col() {
        let e = err(&MIN.replace("[listen]\n", "[listen]\nhtps = \"x\"\n"));
        assert!(e.starts_with("t.toml:3:1: "), "{e}");
        assert!(e.contains("unknown field `htps`"), "{e}");
    }

    #[test]
    fn bad_duration_is_located() {
        let e = err(&format!("{MIN}\n[switch]\nwatch = \"30 parsecs\"\n"));
        assert!(e.starts_with("t.toml:12:9: "), "{e}");
        assert!(e.contains("invalid duration"), "{e}");
        let e = err(&format!("{MIN}\n[switch]\nwatch = \"30\"\n"));
        assert!(e.contains("has no unit"), "{e}");
    }

    #[test]
    fn missing_green_is_located() {
        let e = err(&MIN.replace("green = [\"127.0.0.1:3002\"]\n", ""));
        assert!(e.contains("missing field `green`"), "{e}");
        assert!(e.starts_with("t.toml:"), "{e}");
    }

    #[test]
    fn validators_point_at_the_value() {
        let e = err(&MIN.replace("path_prefix = \"/\"", "path_prefix = \"api\""));
        assert_eq!(e, "t.toml:7:15: path_prefix \"api\" must start with '/'");
        let e = err(&MIN.replace("\"127.0.0.1:3000\"", "\"127.0.0.1\""));
        assert!(e.starts_with("t.toml:8:9: route \"web\" blue: "), "{e}");
        let e = err(&MIN.replace("green = [\"127.0.0.1:3002\"]", "green = []"));
        assert!(e.contains("green needs at least one server"), "{e}");
        let e = err(&format!("{MIN}\n[health]\nrise = 0\n"));
        assert!(e.contains("rise must be at least 1"), "{e}");
        let e = err(&format!("{MIN}\n[switch]\nmax_errors = 0\n"));
        assert!(e.contains("max_errors"), "{e}");
        let e = err(&format!("{MIN}\n[server]\nthreads = 0\n"));
        assert!(e.contains("threads"), "{e}");
        let e = err(&format!("{MIN}\n[state]\ninitial = \"red\"\n"));
        assert!(e.contains("unknown variant `red`"), "{e}");
    }

    #[test]
    fn duplicates_and_missing_routes_are_refused() {
        let dup = format!(
            "{MIN}\n[[route]]\nname = \"web\"\npath_prefix = \"/x\"\nblue = [\"127.0.0.1:1\"]\ngreen = [\"127.0.0.1:2\"]\n"
        );
        assert!(err(&dup).contains("duplicate route name \"web\""));
        let e = err("[listen]\nhttp = \"127.0.0.1:1\"\n");
        assert!(e.starts_with("t.toml:1:1: no [[route]]"), "{e}");
        let e = err("[[route]]\nname = \"x\"\n");
        assert!(e.contains("missing field"), "{e}");
    }

    #[test]
    fn preview_allow_must_parse() {
        let e = err(&format!(
            "{MIN}\n[preview]\nheader = \"x-c\"\nallow = [\"10.0.0.0/33\"]\n"
        ));
        assert!(e.contains("[preview] allow"), "{e}");
        let ok = format!("{MIN}\n[preview]\nallow = [\"127.0.0.1\", \"::1/128\"]\n");
        let c = Config::parse(Path::new("t.toml"), &ok).expect("preview");
        let p = c.preview.expect("preview section");
        assert_eq!(p.header, "x-switchyard-color");
        assert_eq!(p.allow.len(), 2);
    }

    #[test]
    fn limits_have_defaults_and_are_validated() {
        let c = Config::parse(Path::new("t.toml"), MIN).expect("minimal config");
        assert_eq!(c.limits, LimitsConfig::default());
        let ok = format!(
            "{MIN}\n[limits]\nmax_connections = 10\nmax_header_bytes = 2048\nmax_headers = 50\nheader_timeout = \"500ms\"\nidle_timeout = \"5s\"\n"
        );
        let l = Config::parse(Path::new("t.toml"), &ok)
            .expect("limits")
            .limits;
        assert_eq!(l.max_connections, 10);
        assert_eq!(l.max_header_bytes, 2048);
        assert_eq!(l.max_headers, 50);
        assert_eq!(l.header_timeout, Duration::from_millis(500));
        assert_eq!(l.idle_timeout, Duration::from_secs(5));

        let e = err(&format!("{MIN}\n[limits]\nmax_connections = 0\n"));
        assert!(
            e.starts_with("t.toml:12:19: [limits] max_connections"),
            "{e}"
        );
        let e = err(&format!("{MIN}\n[limits]\nmax_header_bytes = 2000000\n"));
        assert!(e.contains("pingora refuses larger"), "{e}");
        let e = err(&format!("{MIN}\n[limits]\nmax_headers = 300\n"));
        assert!(e.contains("between 1 and 256"), "{e}");
        let e = err(&format!("{MIN}\n[limits]\nheader_timeout = \"0s\"\n"));
        assert!(
            e.starts_with("t.toml:12:18: [limits] header_timeout"),
            "{e}"
        );
        let e = err(&format!("{MIN}\n[limits]\nidle = \"5s\"\n"));
        assert!(e.contains("unknown field `idle`"), "{e}");
    }

    /// A config with `[listen] https` on a fresh self-signed pair in `dir`.
    fn with_tls(dir: &Path, listen_extra: &str) -> String {
        let k = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
        std::fs::write(dir.join("cert.pem"), k.cert.pem()).expect("write");
        std::fs::write(dir.join("key.pem"), k.key_pair.serialize_pem()).expect("write");
        MIN.replace(
            "[listen]\n",
            &format!(
                "[listen]\nhttps = \"127.0.0.1:8443\"\ncert = \"{}\"\nkey = \"{}\"\n{listen_extra}",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            ),
        )
    }

    #[test]
    fn tls_pair_is_loaded_and_errors_point_at_the_file_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = with_tls(dir.path(), "");
        let c = Config::parse(Path::new("t.toml"), &text).expect("tls config");
        let t = c.tls.expect("tls");
        assert_eq!(t.addr, "127.0.0.1:8443".parse().expect("addr"));
        assert_eq!(t.loaded.cert.len(), 1);
        assert!(Config::parse(Path::new("t.toml"), MIN)
            .expect("min")
            .tls
            .is_none());

        // cert is on line 4 (value at column 8), key on line 5 (column 7).
        let missing = text.replace("cert.pem", "missing.pem");
        let e = err(&missing);
        assert!(
            e.starts_with("t.toml:4:8: [listen] cannot read certificate file"),
            "{e}"
        );
        assert!(e.contains("missing.pem"), "{e}");
        std::fs::write(dir.path().join("junk.pem"), "junk").expect("write");
        let e = err(&text.replace("key.pem", "junk.pem"));
        assert!(e.starts_with("t.toml:5:7: [listen] key file"), "{e}");
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).expect("rcgen");
        std::fs::write(dir.path().join("other.pem"), other.key_pair.serialize_pem())
            .expect("write");
        let e = err(&text.replace("key.pem", "other.pem"));
        assert!(
            e.starts_with("t.toml:5:7: ") && e.contains("does not belong"),
            "{e}"
        );

        let e = err(&MIN.replace("[listen]\n", "[listen]\ncert = \"/x.pem\"\n"));
        assert!(
            e.starts_with("t.toml:3:8: [listen] https, cert and key go together"),
            "{e}"
        );
        let e = err(&text.replace("127.0.0.1:8443", "127.0.0.1:8000"));
        assert!(e.contains("also the http address"), "{e}");
    }

    fn rule(name: &str, value: &str) -> HeaderRule {
        HeaderRule {
            name: HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).expect("name"),
            wire_name: Bytes::from(name.to_string()),
            value: HeaderValue::from_str(value).expect("value"),
        }
    }

    #[test]
    fn route_headers_win_over_global_ones() {
        let global = [rule("X-Frame-Options", "DENY"), rule("x-a", "1")];
        let route = [rule("X-A", "2"), rule("x-b", "3")];
        let m = merge_headers(&global, &route);
        let got: Vec<(&str, &[u8])> = m
            .iter()
            .map(|r| (r.name.as_str(), r.value.as_bytes()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("x-frame-options", &b"DENY"[..]),
                ("x-a", b"2"),
                ("x-b", b"3")
            ]
        );
        assert_eq!(m[1].wire_name, Bytes::from_static(b"X-A"));
    }

    #[test]
    fn headers_gzip_and_access_log_are_read_and_validated() {
        let text = format!(
            "{}headers = {{ \"Strict-Transport-Security\" = \"max-age=63072000\", \"x-frame-options\" = \"SAMEORIGIN\" }}\ngzip = true\n\n[headers]\nadd = {{ \"x-frame-options\" = \"DENY\", \"x-content-type-options\" = \"nosniff\" }}\n\n[access_log]\nenabled = true\npath = \"/var/log/sy.json\"\n",
            MIN
        );
        let c = Config::parse(Path::new("t.toml"), &text).expect("config");
        let r = &c.routes[0];
        assert!(r.gzip);
        assert_eq!(r.headers.len(), 3);
        assert!(r
            .headers
            .iter()
            .any(|h| h.name == "x-frame-options" && h.value == "SAMEORIGIN"));
        assert_eq!(c.headers.len(), 2);
        assert_eq!(
            c.access_log,
            Some(Destination::File("/var/log/sy.json".into()))
        );

        let min = Config::parse(Path::new("t.toml"), MIN).expect("min");
        assert!(min.access_log.is_none() && !min.routes[0].gzip && min.headers.is_empty());
        let on = format!("{MIN}\n[access_log]\nenabled = true\n");
        let c = Config::parse(Path::new("t.toml"), &on).expect("stdout default");
        assert_eq!(c.access_log, Some(Destination::Stdout));

        let e = err(&format!(
            "{MIN}\n[headers]\nadd = {{ \"bad name\" = \"x\" }}\n"
        ));
        assert!(
            e.starts_with("t.toml:12:22: [headers] add: \"bad name\" is not a valid"),
            "{e}"
        );
        let e = err(&format!(
            "{MIN}\n[headers]\nadd = {{ \"x-a\" = \"line\\nbreak\" }}\n"
        ));
        assert!(e.contains("visible ASCII"), "{e}");
        let e = err(&format!(
            "{MIN}\n[headers]\nadd = {{ \"Content-Length\" = \"1\" }}\n"
        ));
        assert!(e.contains("cannot be set here"), "{e}");
        let e = err(&format!(
            "{MIN}\n[headers]\nadd = {{ \"X-A\" = \"1\", \"x-a\" = \"2\" }}\n"
        ));
        assert!(e.contains("given twice"), "{e}");
        let e = err(&format!("{MIN}headers = {{ \"x y\" = \"1\" }}\n"));
        assert!(e.contains("route \"web\" headers"), "{e}");
        let e = err(&format!(
            "{MIN}\n[access_log]\nenabled = true\npath = \"\"\n"
        ));
        assert!(e.starts_with("t.toml:13:8: [access_log] path"), "{e}");
        let e = err(&format!("{MIN}\n[headers]\nset = {{}}\n"));
        assert!(e.contains("unknown field `set`"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 3), (2, 1));
        assert_eq!(line_col("", 10), (1, 1));
    }

    fn rules(switch: &str) -> Rules {
        let text = format!("{MIN}\n[switch]\n{switch}\n");
        Config::parse(Path::new("t.toml"), &text)
            .expect("valid [switch]")
            .switch
            .rules
    }

    #[test]
    fn watch_rules_and_how_max_errors_combines_with_them() {
        assert_eq!(rules(""), Rules::default());
        assert_eq!(rules("max_errors = 7").max_errors, Some(7));
        let r = rules(
            "max_error_rate = \"0.5%\"\nbaseline = true\nmin_requests = 50\nrequire_traffic = true\nmax_p99 = \"250ms\"",
        );
        assert_eq!(
            r,
            Rules {
                max_errors: None,
                max_error_rate: Some(0.005),
                baseline: true,
                min_requests: 50,
                require_traffic: true,
                max_p99: Some(Duration::from_millis(250)),
            }
        );
        // Written next to a rate rule, max_errors stays: an early brake on a disaster.
        let r = rules("max_errors = 500\nmax_error_rate = \"1%\"");
        assert_eq!((r.max_errors, r.max_error_rate), (Some(500), Some(0.01)));
        assert_eq!(rules("max_p99 = \"1s\"").max_errors, None);
    }

    #[test]
    fn bad_watch_rules_point_at_the_value() {
        let line = MIN.lines().count() + 3;
        let e = err(&format!("{MIN}\n[switch]\nmax_error_rate = \"1\"\n"));
        assert_eq!(
            e,
            format!("t.toml:{line}:18: [switch] max_error_rate: \"1\" is not a percentage: write it with a % sign, like \"1%\" or \"0.5%\"")
        );
        let e = err(&format!("{MIN}\n[switch]\nmax_error_rate = \"120%\"\n"));
        assert!(e.contains("between 0% and 100%"), "{e}");
        let e = err(&format!("{MIN}\n[switch]\nbaseline = true\n"));
        assert!(
            e.starts_with(&format!(
                "t.toml:{line}:12: [switch] baseline = true needs max_error_rate"
            )),
            "{e}"
        );
        let e = err(&format!("{MIN}\n[switch]\nmax_p99 = \"0ms\"\n"));
        assert!(e.starts_with(&format!("t.toml:{line}:11: ")), "{e}");
        let e = err(&format!("{MIN}\n[switch]\nmax_p99 = \"250\"\n"));
        assert!(e.contains("has no unit"), "{e}");
        let e = err(&format!("{MIN}\n[switch]\nmin_requests = -1\n"));
        assert!(e.contains(&format!("t.toml:{line}:")), "{e}");
        assert_eq!(parse_percent(" 2.5% "), Ok(0.025));
        assert_eq!(parse_percent("0%"), Ok(0.0));
        assert!(parse_percent("abc%").is_err());
        assert!(parse_percent("NaN%").is_err());
    }
}
