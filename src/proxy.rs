//! The data plane: pingora's `ProxyHttp` for switchyard.
//!
//! Per request: one load of the routing table, a pure route match, the active (or preview)
//! color, a round-robin pick in that color's pool; forwarding headers on the way up (with
//! `X-Forwarded-Proto: https` when the client came over TLS); the route's response headers
//! and, on `gzip` routes, pingora's compression module on the way down; counters, metrics and
//! the access log line in `logging`. It does not decide switches or health; it reads what the
//! control plane published, and leaves to fault.rs whether a failure counts against the
//! color. Before any of that, edge.rs's checks refuse what a backend could misread
//! (400/431, connection closed) and mark the connection's header/idle deadlines. Nothing here
//! locks; the only per-request allocations are the ones pingora's API asks for (the boxed
//! peer, forwarding header values, names of added response headers), the body of a refusal,
//! and the access log line when that log is on.

use std::net::IpAddr;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::{ResponseCompression, ResponseCompressionBuilder};
use pingora::modules::http::HttpModules;
use pingora::prelude::HttpPeer;
use pingora::protocols::http::compression::Algorithm;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::access_log::{self, Entry};
use crate::app::App;
use crate::config::{HeaderRule, PreviewConfig};
use crate::drain::{Open, WsRegistration};
use crate::edge::{self, Refusal};
use crate::fault::{classify, Failure, Kind, Metric, Origin, Stage};
use crate::routing::{Backend, Color, Route};
use crate::wsframe::{close_frame_1012, FrameTracker};

/// gzip level for `gzip = true` routes: most of level 9's gain at a fraction of its CPU.
pub const GZIP_LEVEL: u32 = 5;

pub struct Proxy {
    app: Arc<App>,
    /// Some route has `gzip = true`, so pingora's compression module is installed.
    compression: bool,
    access_log: bool,
}

impl Proxy {
    pub fn new(app: Arc<App>) -> Proxy {
        Proxy {
            compression: app.cfg.routes.iter().any(|r| r.gzip),
            access_log: app.cfg.access_log.is_some(),
            app,
        }
    }
}

/// Per-request state; dropping it releases the in-flight and WebSocket counts.
pub struct Ctx {
    route: Option<Arc<Route>>,
    color: Color,
    started: Instant,
    tries: usize,
    backend: Option<Arc<Backend>>,
    /// The status of the backend's response head (0 before one arrived); switchyard's own
    /// answers never set it.
    backend_status: u16,
    inflight: Option<Open>,
    /// A duplicate of the upstream socket of an upgrade request, kept so a drain can end it.
    upstream_fd: Option<OwnedFd>,
    websocket: Option<Ws>,
}

/// An upgraded connection: its drain registration and where its frames end.
struct Ws {
    reg: WsRegistration,
    frames: FrameTracker,
    close_sent: bool,
}

impl Ws {
    /// Passes server-to-client bytes through, and on a handover puts the 1012 close frame at
    /// the first frame boundary. Whatever the backend sends after that is dropped (the client
    /// must see nothing after a close frame) until the session ends: at the upstream end of
    /// stream that shutting the read side causes, or when either peer closes.
    fn filter(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) {
        if self.close_sent {
            // Not an error: returning one would drop the connection before the close frame
            // written just before is flushed.
            *body = None;
            return;
        }
        let closing = self.reg.handle.closing();
        if let Some(b) = body.as_mut() {
            if closing {
                if let Some(cut) = self.frames.feed(b, true) {
                    let mut out = Vec::with_capacity(cut + 32);
                    out.extend_from_slice(&b[..cut]);
                    out.extend_from_slice(&close_frame_1012());
                    *b = Bytes::from(out);
                    self.close_sent = true;
                    self.reg.handle.end_upstream_reads();
                    return;
                }
            } else {
                self.frames.feed(b, false);
            }
            self.reg.handle.set_at_boundary(self.frames.at_boundary());
        }
        if end_of_stream && closing && self.frames.at_boundary() {
            let mut out = body.take().map(|b| b.to_vec()).unwrap_or_default();
            out.extend_from_slice(&close_frame_1012());
            *body = Some(Bytes::from(out));
            self.close_sent = true;
        }
    }
}

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

/// The status pingora's default `fail_to_proxy` would answer `e` with; 0 when the client is
/// gone and nothing can be sent.
pub fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// pingora's error as fault.rs sees it: who broke the exchange, and how.
pub fn failure_of(e: &Error) -> Failure {
    let origin = match e.esource() {
        ErrorSource::Upstream => Origin::Upstream,
        ErrorSource::Downstream => Origin::Client,
        ErrorSource::Internal | ErrorSource::Unset => Origin::Proxy,
    };
    let kind = match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::SocketError
        | ErrorType::BindError => Kind::Connect,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Kind::Timeout,
        ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => Kind::Reset,
        ErrorType::InvalidHTTPHeader | ErrorType::H1Error | ErrorType::H2Error => Kind::Protocol,
        _ => Kind::Other,
    };
    Failure { origin, kind }
}

/// How far this request's exchange got, for fault.rs.
fn stage(ctx: &Ctx) -> Stage {
    if ctx.websocket.is_some() {
        Stage::Upgraded
    } else if ctx.backend_status != 0 {
        Stage::AfterHead
    } else {
        Stage::BeforeHead
    }
}

static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");

/// Whether a response of this `Content-Type` is text worth compressing. pingora's own check
/// also takes every `application/*` type (PDF, archives, octet streams), which gzip only
/// burns CPU on.
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

/// Whether a gzip route may compress this response, as far as the response says: text, not
/// a partial range (its offsets count the uncompressed bytes), and not marked
/// `Cache-Control: no-transform`. Whether the client accepts gzip is the module's check.
pub fn may_gzip(resp: &ResponseHeader) -> bool {
    let h = &resp.headers;
    resp.status != http::StatusCode::PARTIAL_CONTENT
        && !h.contains_key(http::header::CONTENT_RANGE)
        && h.get(http::header::CONTENT_TYPE)
            .is_some_and(|ct| text_like(ct.as_bytes()))
        && !h.get_all(http::header::CACHE_CONTROL).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
        })
}

/// Turns gzip on or off for this request's response, while the compression module (when
/// installed) has not decided yet; pingora picks the client's first listed coding, so a
/// client that prefers br or zstd over gzip gets an uncompressed response.
fn set_gzip(session: &mut Session, on: bool) {
    if let Some(c) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    {
        if c.is_header_phase() {
            c.adjust_level(0);
            if on {
                c.adjust_algorithm_level(Algorithm::Gzip, GZIP_LEVEL);
            }
        }
    }
}

/// Sets each rule's header, replacing what the backend sent under that name.
fn add_headers(resp: &mut ResponseHeader, rules: &[HeaderRule]) -> Result<()> {
    for r in rules {
        resp.insert_header(r.wire_name.clone(), r.value.clone())?;
    }
    Ok(())
}

/// Whether the client reached us over TLS (the HTTPS listener).
fn over_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// Writes `ip` as text into `buf` without allocating.
fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    use std::io::Write;
    let mut w = std::io::Cursor::new(&mut buf[..]);
    // 64 bytes hold the longest IPv6 text form (45 bytes), so this cannot fail.
    let _ = write!(w, "{ip}");
    let n = w.position() as usize;
    &buf[..n]
}

/// switchyard's own answer (404, refusals); it gets the `[headers] add` headers.
async fn respond(
    session: &mut Session,
    code: u16,
    body: Bytes,
    headers: &[HeaderRule],
) -> Result<()> {
    let mut h = ResponseHeader::build(code, Some(3 + headers.len()))?;
    h.insert_header("content-type", "text/plain; charset=utf-8")?;
    h.insert_header("content-length", body.len().to_string())?;
    add_headers(&mut h, headers)?;
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Answers a refused request and closes the connection: after a framing error nobody can
/// say where the next request would start.
async fn refuse(session: &mut Session, r: Refusal, headers: &[HeaderRule]) -> Result<()> {
    tracing::debug!(
        status = r.status(),
        reason = r.reason(),
        "refused a request"
    );
    session.set_keepalive(None);
    let body = Bytes::from(format!("switchyard: {}\n", r.reason()));
    respond(session, r.status(), body, headers).await
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    /// pingora installs a disabled compression module by default, which still costs a module
    /// context and filter calls on every request: switchyard installs it only when some route
    /// has `gzip = true`, and request_filter turns it on per request for those routes only.
    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        if self.compression {
            // Enabled for every coding here so the module reads Accept-Encoding at all (it
            // does so before request_filter); set_gzip then narrows it per request.
            modules.add_module(ResponseCompressionBuilder::enable(GZIP_LEVEL));
        }
    }

    fn new_ctx(&self) -> Ctx {
        Ctx {
            route: None,
            color: Color::Blue,
            started: Instant::now(),
            tries: 0,
            backend: None,
            backend_status: 0,
            inflight: None,
            upstream_fd: None,
            websocket: None,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        edge::header_read(session);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let app = &self.app;
        if self.compression {
            // Off until a gzip route is matched: refusals, 404s and other routes stay as is.
            set_gzip(session, false);
        }
        let headers = app.cfg.headers.as_slice();
        let raw = session
            .as_downstream()
            .as_http1()
            .map(|h| h.get_headers_raw_bytes())
            .unwrap_or_default();
        if let Err(r) = edge::check_request(session.req_header(), &raw, &app.cfg.limits) {
            app.metrics.refused(r.label());
            refuse(session, r, headers).await?;
            return Ok(true);
        }
        let table = app.router.load();
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host());
        let Some(route) = table.find(host, req.uri.path()) else {
            app.metrics.refused("no_route");
            let body = Bytes::from_static(b"switchyard: no route for this path\n");
            respond(session, 404, body, headers).await?;
            return Ok(true);
        };
        let preview = app.cfg.preview.as_ref();
        let header = preview.and_then(|p| req.headers.get(p.header.as_str()));
        ctx.color = choose_color(
            table.active,
            preview,
            client_ip(session),
            header.map(|h| h.as_bytes()),
        );
        let had_header = header.is_some();
        let route = route.clone();
        drop(table);
        if let Err(r) = edge::check_chunked_prefix(session) {
            app.metrics.refused(r.label());
            refuse(session, r, headers).await?;
            return Ok(true);
        }
        if route.gzip {
            set_gzip(session, true);
        }
        ctx.route = Some(route);
        if let (Some(p), true) = (preview, had_header) {
            // Never let the backend (or a second proxy behind us) see a steering header it
            // did not come from us.
            session.req_header_mut().remove_header(p.header.as_str());
        }
        if session.is_upgrade_req() {
            // An idle WebSocket must not be cut by the downstream read timeout.
            session.set_read_timeout(None);
        }
        ctx.inflight = Some(app.tracker.request(ctx.color));
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        ctx.tries += 1;
        let backend = route.pool(ctx.color).pick().clone();
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        peer.options.connection_timeout = Some(self.app.cfg.connect_timeout);
        peer.options.idle_timeout = Some(self.app.cfg.upstream_idle_timeout);
        // Pooled connections are keyed by color too: even where both colors list the same
        // address, a connection opened for one color never carries the other's requests.
        peer.group_key = ctx.color.idx() as u64;
        ctx.backend = Some(backend);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent yet: another server of the same color may take the request.
        let servers = ctx
            .route
            .as_ref()
            .map(|r| r.pool(ctx.color).backends.len())
            .unwrap_or(0);
        // Every failed attempt is on record before any 502 goes out; whether the request
        // counts against the color is decided once, in logging.
        let kind = failure_of(&e).kind;
        self.app.metrics.upstream_error(ctx.color, kind.label());
        if ctx.tries < servers {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(ip) = client_ip(session) {
            let mut buf = [0u8; 64];
            let ip = format_ip(ip, &mut buf);
            let xff = match upstream.headers.get(&X_FORWARDED_FOR) {
                Some(prev) => {
                    let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
                    v.extend_from_slice(prev.as_bytes());
                    v.extend_from_slice(b", ");
                    v.extend_from_slice(ip);
                    http::HeaderValue::from_bytes(&v)
                }
                None => http::HeaderValue::from_bytes(ip),
            };
            if let Ok(xff) = xff {
                upstream.insert_header(X_FORWARDED_FOR.clone(), xff)?;
            }
        }
        let proto = if over_tls(session) { "https" } else { "http" };
        upstream.insert_header(
            X_FORWARDED_PROTO.clone(),
            http::HeaderValue::from_static(proto),
        )?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        if status >= 200 || status == 101 {
            ctx.backend_status = status;
        }
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS && ctx.websocket.is_none() {
            match ctx.upstream_fd.take() {
                Some(fd) => {
                    ctx.websocket = Some(Ws {
                        reg: self.app.tracker.register_websocket(ctx.color, fd),
                        frames: FrameTracker::default(),
                        close_sent: false,
                    })
                }
                None => {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "upgrade without a tracked upstream socket",
                    )
                }
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(route) = ctx.route.as_ref() {
            add_headers(resp, &route.headers)?;
            // Runs before the compression module looks at this header.
            if route.gzip && !may_gzip(resp) {
                set_gzip(session, false);
            }
        }
        if self.app.leaving() || session.is_process_shutting_down() {
            // Tell the client this connection ends here (`Connection: close`) so its next
            // request opens a new one, which the next process accepts on an upgrade,
            // instead of landing on a socket about to close.
            session.set_keepalive(None);
        }
        Ok(())
    }

    async fn connected_to_upstream(
        &self,
        session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if session.is_upgrade_req() {
            // SAFETY: pingora hands us the upstream socket's fd, open for this whole call.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            match borrowed.try_clone_to_owned() {
                Ok(owned) => ctx.upstream_fd = Some(owned),
                Err(e) => {
                    return Error::e_explain(
                        ErrorType::SocketError,
                        format!("cannot track the upgrade's upstream socket: {e}"),
                    )
                }
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let Some(ws) = ctx.websocket.as_mut() {
            ws.filter(body, end_of_stream);
        }
        Ok(None)
    }

    /// pingora's error page (502 and friends), with the route's (or the global) response
    /// headers, which pingora's default would leave off: HSTS and friends must be on every
    /// answer.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = error_status(e);
        if code > 0 {
            let mut resp = pingora::protocols::http::ServerSession::generate_error(code);
            let rules = ctx
                .route
                .as_ref()
                .map(|r| r.headers.as_slice())
                .unwrap_or(self.app.cfg.headers.as_slice());
            if add_headers(&mut resp, rules).is_ok() {
                if let Err(err) = session
                    .as_downstream_mut()
                    .write_error_response(resp, Bytes::new())
                    .await
                {
                    tracing::debug!("could not send the error response: {err}");
                }
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        ctx.websocket.as_ref().is_some_and(|w| w.close_sent)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // A pooled connection the backend closed while idle is retried (on a fresh
        // connection) when the request is idempotent; anything else is a real failure.
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        let failure = failure_of(&e);
        if failure.origin == Origin::Upstream {
            // On record before the error page goes out (see fail_to_connect).
            self.app
                .metrics
                .upstream_error(ctx.color, failure.kind.label());
        }
        e
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        edge::request_done(session);
        let code = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let elapsed: Duration = ctx.started.elapsed();
        if self.access_log {
            log_access(session, ctx, code, elapsed);
        }
        let Some(route) = ctx.route.as_ref() else {
            return;
        };
        route.stats.record(ctx.color, code, elapsed);
        let stats = self.app.metrics.color_stats(ctx.color);
        stats
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fault = classify(stage(ctx), ctx.backend_status, e.map(failure_of));
        if fault.metric == Metric::ClientAbort {
            // Upstream errors were recorded where they happened, attempt by attempt.
            self.app.metrics.client_abort(ctx.color);
        }
        if fault.counts {
            stats
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        ctx.websocket = None;
        ctx.inflight = None;
    }
}

/// Writes a socket address as text into `buf` without allocating.
fn format_addr(addr: std::net::SocketAddr, buf: &mut [u8; 64]) -> &str {
    use std::io::Write;
    let mut w = std::io::Cursor::new(&mut buf[..]);
    // The longest form, [v6%scope]:port, is well under 64 bytes.
    let _ = write!(w, "{addr}");
    let n = w.position() as usize;
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

fn log_access(session: &Session, ctx: &Ctx, status: u16, elapsed: Duration) {
    let mut ip_buf = [0u8; 64];
    let mut up_buf = [0u8; 64];
    let client =
        client_ip(session).map(|ip| std::str::from_utf8(format_ip(ip, &mut ip_buf)).unwrap_or(""));
    let upstream = ctx
        .backend
        .as_ref()
        .map(|b| format_addr(b.addr, &mut up_buf));
    let req = session.req_header();
    let path = req
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or_else(|| req.uri.path());
    access_log::emit(&Entry {
        client,
        method: req.method.as_str(),
        path,
        status,
        bytes: session.as_downstream().body_bytes_sent() as u64,
        duration: elapsed,
        route: ctx.route.as_ref().map(|r| r.name.as_str()),
        color: ctx.route.as_ref().map(|_| ctx.color.as_str()),
        upstream,
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
    fn ranges_and_no_transform_are_not_compressed() {
        let resp = |status: u16, headers: &[(&str, &str)]| {
            let mut r = ResponseHeader::build(status, None).expect("resp");
            for (k, v) in headers {
                r.append_header(k.to_string(), *v).expect("header");
            }
            r
        };
        let text = ("content-type", "text/html");
        assert!(may_gzip(&resp(200, &[text])));
        assert!(may_gzip(&resp(404, &[text, ("cache-control", "no-cache")])));
        assert!(!may_gzip(&resp(200, &[])));
        assert!(!may_gzip(&resp(200, &[("content-type", "image/png")])));
        assert!(!may_gzip(&resp(
            206,
            &[text, ("content-range", "bytes 0-9/100")]
        )));
        assert!(!may_gzip(&resp(
            200,
            &[text, ("cache-control", "public, No-Transform")]
        )));
    }

    #[test]
    fn addresses_format_without_allocating() {
        let mut buf = [0u8; 64];
        let a: std::net::SocketAddr = "[::1]:8080".parse().expect("addr");
        assert_eq!(format_addr(a, &mut buf), "[::1]:8080");
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
    fn ips_format_without_allocating() {
        let mut buf = [0u8; 64];
        assert_eq!(
            format_ip("127.0.0.1".parse().expect("ip"), &mut buf),
            b"127.0.0.1"
        );
        let v6: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .expect("ip");
        assert_eq!(format_ip(v6, &mut buf), v6.to_string().as_bytes());
    }

    #[test]
    fn error_statuses_follow_pingora() {
        let e = Error::new(ErrorType::ConnectRefused).into_up();
        assert_eq!(error_status(&e), 502);
        let e = Error::new(ErrorType::ConnectionClosed).into_down();
        assert_eq!(error_status(&e), 0, "client gone: nothing to send");
        let e = Error::new(ErrorType::InvalidHTTPHeader).into_down();
        assert_eq!(error_status(&e), 400);
        let e = Error::new(ErrorType::HTTPStatus(504));
        assert_eq!(error_status(&e), 504);
        let e = Error::new(ErrorType::InternalError);
        assert_eq!(error_status(&e), 500);
    }

    #[test]
    fn pingora_errors_map_onto_failures() {
        let f = failure_of(&Error::new(ErrorType::ConnectRefused).into_up());
        assert_eq!((f.origin, f.kind), (Origin::Upstream, Kind::Connect));
        let f = failure_of(&Error::new(ErrorType::ReadTimedout).into_up());
        assert_eq!((f.origin, f.kind), (Origin::Upstream, Kind::Timeout));
        let f = failure_of(&Error::new(ErrorType::ConnectionClosed).into_down());
        assert_eq!((f.origin, f.kind), (Origin::Client, Kind::Reset));
        let f = failure_of(&Error::new(ErrorType::InvalidHTTPHeader).into_down());
        assert_eq!((f.origin, f.kind), (Origin::Client, Kind::Protocol));
        let f = failure_of(&Error::new(ErrorType::InternalError));
        assert_eq!((f.origin, f.kind), (Origin::Proxy, Kind::Other));
    }
}
