//! Request-level decisions that any data path calls (the HTTP/1.1 engine today, HTTP/2
//! later): which route and color a request goes to, whether its response may be gzipped,
//! and what a finished request records (route and color counters the watch reads, the
//! Prometheus series, the access log line).
//!
//! Pure or near-pure: no sockets, no parsing of wire bytes (engine/head.rs and
//! engine/response.rs hand over plain values). It does not frame messages or hold
//! connections.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::access_log::{self, Entry};
use crate::app::App;
use crate::color::Color;
use crate::config::PreviewConfig;
use crate::edge::trim_ows;
use crate::fault::{self, classify, Kind, Metric, Origin, Stage};
use crate::routing::{Backend, Route};

/// gzip level for `gzip = true` routes: most of level 9's gain at a fraction of its CPU.
pub const GZIP_LEVEL: u32 = 5;

/// Which color a request goes to: the preview header wins only from an allowed source.
pub fn choose_color(
    active: Color,
    preview: Option<&PreviewConfig>,
    client: Option<IpAddr>,
    header: Option<&[u8]>,
) -> Color {
    let (Some(p), Some(ip), Some(value)) = (preview, client, header) else {
        return active;
    };
    if !p.allow.iter().any(|net| net.contains(&ip)) {
        return active;
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(active)
}

/// Where a request goes.
pub struct Decision {
    pub route: Arc<Route>,
    pub color: Color,
}

/// The route (by host and path) and color (active, or the preview header's from an allowed
/// source) of a request; `None` is a 404. One load of the routing table.
pub fn decide(
    app: &App,
    host: Option<&str>,
    path: &str,
    client: Option<IpAddr>,
    preview_value: Option<&[u8]>,
) -> Option<Decision> {
    let table = app.router.load();
    let route = table.find(host, path)?.clone();
    let color = choose_color(
        table.active,
        app.cfg.preview.as_ref(),
        client,
        preview_value,
    );
    Some(Decision { route, color })
}

/// Whether the client takes gzip (RFC 9110 §12.5.3): `gzip` (or `x-gzip`) with a non-zero
/// q-value, or `*` with one when gzip is not listed.
pub fn accepts_gzip<'a>(values: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut star = None;
    for v in values {
        for item in v.split(|&c| c == b',') {
            let mut parts = item.split(|&c| c == b';');
            let coding = trim_ows(parts.next().unwrap_or_default());
            let q = parts
                .filter_map(|p| {
                    let p = trim_ows(p);
                    (p.len() >= 2 && p[..2].eq_ignore_ascii_case(b"q=")).then(|| q_value(&p[2..]))
                })
                .next()
                .unwrap_or(1000);
            if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
                return q > 0;
            }
            if coding == b"*" {
                star = Some(q > 0);
            }
        }
    }
    star.unwrap_or(false)
}

/// A q-value in thousandths; anything unparsable counts as 0 (not acceptable).
fn q_value(v: &[u8]) -> u32 {
    let v = trim_ows(v);
    let Ok(s) = std::str::from_utf8(v) else {
        return 0;
    };
    s.parse::<f32>()
        .ok()
        .filter(|q| (0.0..=1.0).contains(q))
        .map(|q| (q * 1000.0).round() as u32)
        .unwrap_or(0)
}

/// Whether a response of this `Content-Type` is text worth compressing (not every
/// `application/*` type: PDFs, archives and octet streams only burn CPU in gzip).
pub fn text_like(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let is = |t: &[u8]| essence.eq_ignore_ascii_case(t);
    let starts = |p: &[u8]| essence.len() >= p.len() && essence[..p.len()].eq_ignore_ascii_case(p);
    let ends = |s: &[u8]| {
        essence.len() >= s.len() && essence[essence.len() - s.len()..].eq_ignore_ascii_case(s)
    };
    (starts(b"text/") && essence.len() > 5)
        || is(b"application/json")
        || is(b"application/javascript")
        || is(b"application/x-javascript")
        || is(b"application/xml")
        || is(b"application/wasm")
        || is(b"image/svg+xml")
        || (starts(b"application/") && (ends(b"+json") || ends(b"+xml")))
}

/// What a response says about being compressed.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseFacts<'a> {
    pub status: u16,
    pub content_type: Option<&'a [u8]>,
    pub content_range: bool,
    /// Already encoded by the backend.
    pub content_encoding: bool,
    pub no_transform: bool,
}

/// Whether a gzip route may compress this response, as far as the response says: text, not
/// already encoded, not a partial range (its offsets count the uncompressed bytes), and not
/// marked `Cache-Control: no-transform`.
pub fn may_gzip(r: &ResponseFacts<'_>) -> bool {
    r.status >= 200
        && r.status != 204
        && r.status != 206
        && r.status != 304
        && !r.content_range
        && !r.content_encoding
        && !r.no_transform
        && r.content_type.is_some_and(text_like)
}

/// Whether a `Cache-Control` value has `no-transform`.
pub fn has_no_transform(v: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|d| trim_ows(d).eq_ignore_ascii_case(b"no-transform"))
}

/// Where an exchange failed, in the data path's words; fault.rs decides what that means for
/// the color (with the stage the exchange had reached and the backend's status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection to any server of the color.
    Connect,
    /// The backend sent something that is not HTTP, or broke its body's framing.
    Protocol,
    /// The backend closed or reset the connection.
    Reset,
    /// The backend sent nothing (or took nothing) for `[server] upstream_read_timeout`:
    /// 504 before its head, a cut connection after it.
    Timeout,
    /// The client hung up or reset.
    ClientGone,
    /// The client stopped sending its body, or stopped reading the response
    /// (`[server] client_send_timeout`).
    ClientStalled,
    /// The client broke its own body's framing (answered 400).
    ClientProtocol,
}

impl Failure {
    pub fn fault(self) -> fault::Failure {
        let (origin, kind) = match self {
            Failure::Connect => (Origin::Upstream, Kind::Connect),
            Failure::Protocol => (Origin::Upstream, Kind::Protocol),
            Failure::Reset => (Origin::Upstream, Kind::Reset),
            Failure::Timeout => (Origin::Upstream, Kind::Timeout),
            Failure::ClientGone => (Origin::Client, Kind::Reset),
            Failure::ClientStalled => (Origin::Client, Kind::Timeout),
            Failure::ClientProtocol => (Origin::Client, Kind::Protocol),
        };
        fault::Failure { origin, kind }
    }

    /// The backend's fault, as far as the metrics go (`switchyard_upstream_errors_total`).
    pub fn is_upstream(self) -> bool {
        self.fault().origin == Origin::Upstream
    }
}

/// switchyard's own answer when the exchange failed before the backend's head: 502, or 504
/// when the backend did not answer in time (HTTP/1.1 and HTTP/2 alike).
pub fn error_page(f: Option<Failure>) -> (u16, &'static str) {
    match f {
        Some(Failure::Connect) => (
            502,
            "switchyard: no server of this color could be reached\n",
        ),
        Some(Failure::Protocol) => (
            502,
            "switchyard: the server's response was not valid HTTP\n",
        ),
        Some(Failure::Timeout) => (504, "switchyard: the server did not answer in time\n"),
        _ => (
            502,
            "switchyard: the server closed the connection without an answer\n",
        ),
    }
}

/// One finished request, as the data path saw it.
pub struct Finished<'a> {
    pub route: Option<&'a Route>,
    pub color: Color,
    /// The status the client got; 0 when it got none.
    pub status: u16,
    /// The status of the backend's response head; 0 when none arrived (switchyard's own
    /// answers are not a backend status).
    pub backend_status: u16,
    pub stage: Stage,
    pub failure: Option<Failure>,
    pub elapsed: Duration,
    pub bytes: u64,
    pub client: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub backend: Option<&'a Backend>,
}

/// Records a finished request: the access log line (when on), the route's series and the
/// color's watch counters, as fault.rs classifies the exchange. Upstream errors are on record
/// already, where they happened (before any error page went out).
pub fn finish(app: &App, f: &Finished<'_>) {
    if app.cfg.access_log.is_some() {
        log_access(f);
    }
    let Some(route) = f.route else {
        return;
    };
    route.stats.record(f.color, f.status, f.elapsed);
    let stats = app.metrics.color_stats(f.color);
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let fault = classify(f.stage, f.backend_status, f.failure.map(Failure::fault));
    if fault.metric == Metric::ClientAbort {
        app.metrics.client_abort(f.color);
    }
    if fault.counts {
        stats.errors.fetch_add(1, Ordering::Relaxed);
    }
}

fn log_access(f: &Finished<'_>) {
    let mut ip_buf = Vec::with_capacity(48);
    let mut up_buf = Vec::with_capacity(48);
    if let Some(ip) = f.client {
        crate::engine::head::write_ip(&mut ip_buf, ip);
    }
    if let Some(b) = f.backend {
        crate::engine::head::write_addr(&mut up_buf, b.addr);
    }
    let text = |b: &Vec<u8>| std::str::from_utf8(b).unwrap_or("").to_string();
    let (client, upstream) = (text(&ip_buf), text(&up_buf));
    access_log::emit(&Entry {
        client: f.client.map(|_| client.as_str()),
        method: f.method,
        path: f.path,
        status: f.status,
        bytes: f.bytes,
        duration: f.elapsed,
        route: f.route.map(|r| r.name.as_str()),
        color: f.route.map(|_| f.color.as_str()),
        upstream: f.backend.map(|_| upstream.as_str()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_text_like_types_are_compressed() {
        for ct in [
            "text/html",
            "text/plain; charset=utf-8",
            "TEXT/CSS",
            "application/json",
            "application/problem+json; charset=utf-8",
            "application/javascript",
            "application/atom+xml",
            "image/svg+xml",
        ] {
            assert!(text_like(ct.as_bytes()), "{ct}");
        }
        for ct in [
            "",
            "text/",
            "image/png",
            "application/octet-stream",
            "application/pdf",
            "application/zip",
            "video/mp4",
            "font/woff2",
        ] {
            assert!(!text_like(ct.as_bytes()), "{ct}");
        }
    }

    #[test]
    fn ranges_encoded_and_no_transform_are_not_compressed() {
        let text = Some(&b"text/html"[..]);
        let r = |status, content_type| ResponseFacts {
            status,
            content_type,
            ..Default::default()
        };
        assert!(may_gzip(&r(200, text)));
        assert!(may_gzip(&r(404, text)));
        assert!(!may_gzip(&r(200, None)));
        assert!(!may_gzip(&r(200, Some(b"image/png"))));
        assert!(!may_gzip(&r(206, text)));
        assert!(!may_gzip(&ResponseFacts {
            content_range: true,
            ..r(200, text)
        }));
        assert!(!may_gzip(&ResponseFacts {
            content_encoding: true,
            ..r(200, text)
        }));
        assert!(!may_gzip(&ResponseFacts {
            no_transform: true,
            ..r(200, text)
        }));
        assert!(has_no_transform(b"public, No-Transform"));
        assert!(!has_no_transform(b"no-cache"));
    }

    #[test]
    fn accept_encoding_is_parsed_with_q_values() {
        let acc = |v: &str| accepts_gzip(std::iter::once(v.as_bytes()));
        assert!(acc("gzip"));
        assert!(acc("br, gzip;q=0.5"));
        assert!(acc("br;q=1.0, GZIP"));
        assert!(acc("*"));
        assert!(acc("x-gzip"));
        assert!(!acc("identity"));
        assert!(!acc("gzip;q=0"));
        assert!(!acc("gzip; q=0.000"));
        assert!(!acc("*, gzip;q=0"));
        assert!(!acc("*;q=0"));
        assert!(!acc(""));
        assert!(!accepts_gzip(std::iter::empty()));
    }

    fn preview() -> PreviewConfig {
        PreviewConfig {
            header: "x-switchyard-color".into(),
            allow: vec!["127.0.0.1/32".parse().expect("net")],
        }
    }

    #[test]
    fn preview_only_from_allowed_sources() {
        let p = preview();
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        let remote: IpAddr = "10.1.2.3".parse().expect("ip");
        let g = Some(&b"green"[..]);
        assert_eq!(
            choose_color(Color::Blue, Some(&p), Some(local), g),
            Color::Green
        );
        assert_eq!(
            choose_color(Color::Blue, Some(&p), Some(remote), g),
            Color::Blue
        );
        assert_eq!(choose_color(Color::Blue, None, Some(local), g), Color::Blue);
        assert_eq!(
            choose_color(Color::Blue, Some(&p), Some(local), Some(&b"purple"[..])),
            Color::Blue
        );
        assert_eq!(
            choose_color(Color::Green, Some(&p), Some(local), None),
            Color::Green
        );
    }

    #[test]
    fn failures_map_onto_fault_origins() {
        for f in [
            Failure::ClientGone,
            Failure::ClientStalled,
            Failure::ClientProtocol,
        ] {
            assert!(!f.is_upstream(), "{f:?}");
            let c = classify(Stage::BeforeHead, 0, Some(f.fault()));
            assert!(!c.counts, "{f:?} never counts against the color");
        }
        for f in [
            Failure::Connect,
            Failure::Protocol,
            Failure::Reset,
            Failure::Timeout,
        ] {
            assert!(f.is_upstream());
            assert!(
                classify(Stage::BeforeHead, 0, Some(f.fault())).counts,
                "{f:?}"
            );
            assert!(
                !classify(Stage::AfterHead, 200, Some(f.fault())).counts,
                "{f:?}"
            );
        }
        assert_eq!(Failure::Connect.fault().kind.label(), "connect");
        assert_eq!(error_page(Some(Failure::Timeout)).0, 504);
        assert_eq!(error_page(Some(Failure::Connect)).0, 502);
        assert_eq!(error_page(Some(Failure::Reset)).0, 502);
    }
}
