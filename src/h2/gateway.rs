//! One HTTP/2 stream through pingora-proxy: the [`ProxyHttp`] hooks, each a thin call into
//! the decisions the HTTP/1.1 engine makes for the same request.
//!
//! request_filter: edge refusals (edge.rs's [`Refusal`]), route and color
//! (`request::decide`, the preview header from an allowed source), the in-flight count the
//! drain waits for (drain.rs), a gRPC stream's registration for the handover. upstream_peer:
//! a server of that color (round robin over the healthy ones, as the engine), HTTP/1.1 to an
//! ordinary route's servers, h2c to a gRPC route's. Request and response headers get the
//! engine's rules (X-Forwarded-*, the preview header stripped, `[headers] add`). logging:
//! `request::finish`, so counters, the watch, metrics and the access log see HTTP/2 requests
//! like HTTP/1.1 ones. cut_off: a gRPC stream of a draining color ends with status 14.
//!
//! It does not parse or frame anything (pingora and the h2 crate do), nor choose when a
//! color drains (the switch driver and shutdown do, through the tracker).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::protocols::http::compression::Algorithm;
use pingora::protocols::http::HttpTask;
use pingora::protocols::ALPN;
use pingora::proxy::{CutOffFuture, FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::{grpc, policy};
use crate::app::App;
use crate::color::Color;
use crate::drain::{Open, WsRegistration};
use crate::edge::{trim_ows, Refusal};
use crate::fault::Stage;
use crate::request::{self, Failure, Finished};
use crate::routing::{Backend, Route};
use crate::{real_ip, redirect};

/// Streams one h2c connection to a gRPC server may carry (pingora opens another past it).
const GRPC_STREAMS_PER_CONNECTION: usize = 100;

/// The proxy application behind pingora's HTTP/2 server.
pub struct Gateway {
    app: Arc<App>,
}

impl Gateway {
    pub fn new(app: Arc<App>) -> Gateway {
        Gateway { app }
    }
}

/// What one stream carries from hook to hook.
#[derive(Default)]
pub struct Stream {
    started: Option<Instant>,
    route: Option<Arc<Route>>,
    color: Option<Color>,
    backend: Option<Arc<Backend>>,
    connect_failures: usize,
    /// The backend's response status, once its head arrived.
    backend_status: u16,
    /// The request's client (real_ip.rs): the access log's, preview's address.
    client: Option<IpAddr>,
    /// The connection's peer (after any PROXY header): appended to `X-Forwarded-For`.
    peer: Option<IpAddr>,
    /// The peer is a trusted proxy: the client's `X-Forwarded-For` goes up before it.
    believe_xff: bool,
    /// Over https: ours, or a trusted proxy's (`X-Forwarded-Proto`).
    https: bool,
    /// For the access log only (empty while it is off).
    method: String,
    path: String,
    /// Counted open on its color until the stream ends (the drain waits for it).
    _inflight: Option<Open>,
    /// A gRPC stream's handover registration.
    grpc: Option<WsRegistration>,
    /// The upstream failure already put on record (error_while_proxy / fail_to_connect).
    failure: Option<Failure>,
    /// The route gzips and the client accepts it.
    gzip: bool,
    /// A CORS route's headers for this response (policy.rs); `None` off CORS routes.
    cors: Option<crate::cors::Headers>,
}

/// An HTTP/2 request the front door refuses before routing (the engine refuses the same
/// things in HTTP/1.1: engine/head.rs).
pub fn refusal(method: &http::Method, header_count: usize, max_headers: usize) -> Option<Refusal> {
    if method == http::Method::CONNECT {
        return Some(Refusal::Method(
            "CONNECT is not served (this is not a forward proxy)",
        ));
    }
    if header_count > max_headers {
        return Some(Refusal::HeaderTooLarge(
            "more header fields than [limits] max_headers",
        ));
    }
    None
}

/// How a pingora error reads as the data path's failure (fault.rs decides what it means).
pub fn failure_of(e: &Error) -> Option<Failure> {
    use ErrorType::*;
    if matches!(e.etype(), Custom("cut off")) {
        // A handover is switchyard's own doing, not anyone's fault.
        return None;
    }
    match e.esource() {
        ErrorSource::Upstream => Some(match e.etype() {
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | SocketError
            | BindError => Failure::Connect,
            ReadTimedout | WriteTimedout => Failure::Timeout,
            InvalidHTTPHeader | H2Error | InvalidH2 | H1Error => Failure::Protocol,
            _ => Failure::Reset,
        }),
        ErrorSource::Downstream => Some(match e.etype() {
            ReadTimedout | WriteTimedout => Failure::ClientStalled,
            InvalidHTTPHeader | H2Error | InvalidH2 => Failure::ClientProtocol,
            _ => Failure::ClientGone,
        }),
        ErrorSource::Internal | ErrorSource::Unset => Some(Failure::Reset),
    }
}

/// Sets the gzip level of pingora's response compression for this stream (0: off).
fn compression(session: &mut Session, level: u32) {
    let Session {
        downstream_modules_ctx,
        downstream_session,
        ..
    } = session;
    if let Some(c) = downstream_modules_ctx.get_mut::<ResponseCompression>() {
        c.adjust_algorithm_level(Algorithm::Gzip, level);
        if level > 0 {
            c.request_filter(downstream_session.req_header());
        }
    }
}

/// The request's host as sent: `:authority`, else `Host`.
fn host_of(req: &RequestHeader) -> Option<&str> {
    req.uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(HOST).and_then(|h| h.to_str().ok()))
}

/// What a response head says about being compressed (request::may_gzip decides).
fn facts(resp: &ResponseHeader) -> request::ResponseFacts<'_> {
    let h = &resp.headers;
    request::ResponseFacts {
        status: resp.status.as_u16(),
        content_type: h.get(CONTENT_TYPE).map(|v| v.as_bytes()),
        content_range: h.contains_key(http::header::CONTENT_RANGE),
        content_encoding: h.contains_key(http::header::CONTENT_ENCODING),
        no_transform: h
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .any(|v| request::has_no_transform(v.as_bytes())),
    }
}

impl Gateway {
    /// Writes switchyard's own answer with the given response headers.
    async fn answer(
        &self,
        session: &mut Session,
        status: u16,
        text: &str,
        rules: &[crate::config::HeaderRule],
    ) -> bool {
        self.answer_with(session, status, text, &[], rules).await
    }

    /// [`Self::answer`] with more headers (the 308's `Location`, CORS, `Retry-After`).
    async fn answer_with(
        &self,
        session: &mut Session,
        status: u16,
        text: &str,
        extra: &[(&'static str, Vec<u8>)],
        rules: &[crate::config::HeaderRule],
    ) -> bool {
        let Ok(mut head) = ResponseHeader::build(status, Some(4 + extra.len())) else {
            return false;
        };
        let _ = head.insert_header(CONTENT_TYPE, "text/plain; charset=utf-8");
        for (name, value) in extra {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                let _ = head.append_header(*name, v);
            }
        }
        let _ = head.insert_header(http::header::CONTENT_LENGTH, text.len());
        for r in rules {
            let _ = head.insert_header(r.name.clone(), r.value.clone());
        }
        // A response to HEAD has no body (its Content-Length still says how long it would be).
        let tasks = if session.req_header().method == http::Method::HEAD {
            vec![HttpTask::Header(Box::new(head), true)]
        } else {
            let body = Bytes::copy_from_slice(text.as_bytes());
            vec![
                HttpTask::Header(Box::new(head), false),
                HttpTask::Body(Some(body), true),
            ]
        };
        session.write_response_tasks(tasks).await.is_ok()
    }

    /// A gRPC client gets a gRPC status (it cannot read an error page): UNAVAILABLE.
    async fn answer_grpc(&self, session: &mut Session, text: &str) -> bool {
        let head = grpc::trailers_only(grpc::UNAVAILABLE, text.trim_end());
        session
            .write_response_tasks(vec![HttpTask::Header(head, true)])
            .await
            .is_ok()
    }

    /// Who sent the request (real_ip.rs, the engine's decision): the connection's peer after
    /// any PROXY header, and what a trusted peer's `X-Forwarded-*` say.
    fn identify(&self, session: &Session, ctx: &mut Stream) {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| real_ip::canonical(a.ip()));
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let req = session.req_header();
        let xff = req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes());
        let proto = req.headers.get("x-forwarded-proto").map(|v| v.as_bytes());
        let sender = real_ip::sender(peer, tls, &self.app.cfg.trusted_proxies, xff, proto);
        ctx.peer = peer;
        ctx.client = sender.client;
        ctx.believe_xff = sender.peer_trusted;
        ctx.https = sender.https;
    }

    /// The 308 to https:// of `redirect_https` (redirect.rs); without a host, a 400.
    async fn to_https(&self, session: &mut Session, port: u16) {
        let req = session.req_header();
        let target = req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let rules = &self.app.cfg.headers;
        match redirect::location(host_of(req), &target, port) {
            Some(location) => {
                let text = "switchyard: this site is served over https\n";
                let location = [("Location", location.into_bytes())];
                self.answer_with(session, 308, text, &location, rules).await;
            }
            None => {
                let r = Refusal::BadRequest("a redirect to https needs a Host header");
                self.app.metrics.refused(r.label());
                let text = format!("switchyard: {}\n", r.reason());
                self.answer(session, r.status(), &text, rules).await;
            }
        }
    }

    fn route_of(&self, session: &Session, ctx: &Stream) -> Option<request::Decision> {
        let req = session.req_header();
        let host = host_of(req);
        let steer = self
            .app
            .cfg
            .preview
            .as_ref()
            .and_then(|p| req.headers.get(p.header.as_str()))
            .map(|v| v.as_bytes());
        request::decide(&self.app, host, req.uri.path(), ctx.client, steer)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Stream;

    fn new_ctx(&self) -> Stream {
        Stream {
            started: Some(Instant::now()),
            ..Stream::default()
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Stream) -> Result<bool> {
        let app = &self.app;
        self.identify(session, ctx);
        // Whether a body follows the head (for a route's max_body_bytes).
        let body_empty = session.is_body_empty();
        let req = session.req_header();
        if app.cfg.access_log.is_some() {
            ctx.method = req.method.to_string();
            ctx.path = req
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
        }
        if let Some(r) = refusal(&req.method, req.headers.len(), app.cfg.limits.max_headers) {
            tracing::debug!(
                status = r.status(),
                reason = r.reason(),
                "refused an HTTP/2 request"
            );
            app.metrics.refused(r.label());
            let text = format!("switchyard: {}\n", r.reason());
            self.answer(session, r.status(), &text, &app.cfg.headers)
                .await;
            return Ok(true);
        }
        if let Some(port) = redirect::port_for(&app.cfg, req.uri.path(), ctx.https) {
            self.to_https(session, port).await;
            return Ok(true);
        }
        let Some(d) = self.route_of(session, ctx) else {
            app.metrics.refused("no_route");
            self.answer(
                session,
                404,
                "switchyard: no route for this path\n",
                &app.cfg.headers,
            )
            .await;
            return Ok(true);
        };
        // The route's own policies (CORS, rate limit, body size), as the engine applies them.
        match policy::admit(session.req_header(), body_empty, &d.route, ctx.client) {
            Ok(cors) => ctx.cors = cors,
            Err(local) => {
                if let Some(reason) = local.refused {
                    app.metrics.refused(reason);
                }
                let rules = &d.route.headers;
                self.answer_with(session, local.status, local.text, &local.extra, rules)
                    .await;
                return Ok(true);
            }
        }
        ctx._inflight = Some(app.tracker.request(d.color));
        if d.route.grpc {
            ctx.grpc = Some(app.tracker.register_grpc(d.color));
        }
        ctx.gzip = d.route.gzip
            && request::accepts_gzip(
                req.headers
                    .get_all(http::header::ACCEPT_ENCODING)
                    .iter()
                    .map(|v| v.as_bytes()),
            );
        if ctx.gzip {
            // pingora's compression module does the work; it reads Accept-Encoding only
            // while on, so it reads it again now.
            compression(session, request::GZIP_LEVEL);
        }
        // A client that stops reading (its flow-control window stays shut) is cut like an
        // HTTP/1.1 one that stops reading: a client fault, never the color's.
        session
            .as_downstream_mut()
            .set_write_timeout(Some(app.cfg.client_send_timeout));
        ctx.color = Some(d.color);
        ctx.route = Some(d.route);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Stream,
    ) -> Result<Box<HttpPeer>> {
        let (Some(route), Some(color)) = (&ctx.route, ctx.color) else {
            return Error::e_explain(ErrorType::InternalError, "no route decided");
        };
        let backend = route.pool(color).pick().clone();
        let cfg = &self.app.cfg;
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        peer.options.connection_timeout = Some(cfg.connect_timeout);
        peer.options.idle_timeout = Some(cfg.upstream_idle_timeout);
        if route.grpc {
            // h2c with prior knowledge; a stream may be quiet for as long as the call lasts.
            peer.options.alpn = ALPN::H2;
            peer.options.max_h2_streams = GRPC_STREAMS_PER_CONNECTION;
            peer.options.h2_ping_interval = Some(Duration::from_secs(30));
        } else {
            // As the engine: silent for upstream_read_timeout, or not taking the request body.
            let limits = &route.limits;
            peer.options.read_timeout = Some(limits.read_timeout(cfg.upstream_read_timeout));
            peer.options.write_timeout = Some(limits.write_timeout(cfg.upstream_read_timeout));
        }
        ctx.backend = Some(backend);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Stream,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(c) = ctx.color {
            self.app.metrics.upstream_error(c, "connect");
        }
        ctx.connect_failures += 1;
        let servers = ctx
            .route
            .as_ref()
            .zip(ctx.color)
            .map_or(0, |(r, c)| r.pool(c).backends.len());
        // Nothing was sent: another server of the same color may take it (as the engine).
        e.set_retry(ctx.connect_failures < servers);
        ctx.failure = Some(Failure::Connect);
        e
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        _session: &mut Session,
        mut e: Box<Error>,
        _ctx: &mut Stream,
        _client_reused: bool,
    ) -> Box<Error> {
        // Something may have reached the server: never sent twice.
        e.set_retry(false);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Stream,
    ) -> Result<()> {
        if let Some(p) = &self.app.cfg.preview {
            up.remove_header(p.header.as_str());
        }
        // One X-Forwarded-For: what earlier trusted proxies said, in order, then the peer
        // (engine/head.rs writes the same).
        let mut xff: Vec<u8> = Vec::new();
        let earlier = session.req_header().headers.get_all("x-forwarded-for");
        for v in earlier.iter().filter(|_| ctx.believe_xff) {
            if !xff.is_empty() {
                xff.extend_from_slice(b", ");
            }
            xff.extend_from_slice(trim_ows(v.as_bytes()));
        }
        if let Some(ip) = ctx.peer {
            if !xff.is_empty() {
                xff.extend_from_slice(b", ");
            }
            crate::engine::head::write_ip(&mut xff, ip);
        }
        up.remove_header("x-forwarded-for");
        if let Ok(v) = HeaderValue::from_bytes(&xff) {
            if !xff.is_empty() {
                up.insert_header("x-forwarded-for", v)?;
            }
        }
        up.insert_header(
            "x-forwarded-proto",
            if ctx.https { "https" } else { "http" },
        )?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Stream,
    ) -> Result<()> {
        if !resp.status.is_informational() {
            ctx.backend_status = resp.status.as_u16();
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Stream,
    ) -> Result<()> {
        let Some(route) = &ctx.route else {
            return Ok(());
        };
        if resp.status.is_informational() {
            return Ok(());
        }
        if ctx.gzip && !request::may_gzip(&facts(resp)) {
            // The engine's decision says no for this response: switch the module off again.
            compression(session, 0);
        }
        // The route's headers replace the backend's of the same name (as in HTTP/1.1).
        for rule in &route.headers {
            resp.remove_header(&rule.name);
        }
        for rule in &route.headers {
            resp.append_header(HeaderName::clone(&rule.name), rule.value.clone())?;
        }
        if let Some(cors) = &ctx.cors {
            // The route's policy is the one CORS answer: the backend's own are dropped.
            let theirs: Vec<HeaderName> = resp
                .headers
                .keys()
                .filter(|n| crate::cors::is_cors_field(n.as_str()))
                .cloned()
                .collect();
            for n in theirs {
                resp.remove_header(&n);
            }
            for (name, value) in cors {
                if let Ok(v) = HeaderValue::from_bytes(value) {
                    resp.append_header(*name, v)?;
                }
            }
        }
        Ok(())
    }

    fn cut_off(&self, ctx: &Stream) -> Option<CutOffFuture> {
        let handle = ctx.grpc.as_ref()?.handle.clone();
        Some(Box::pin(async move {
            handle.closed().await;
            grpc::handover()
        }))
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Stream,
    ) -> FailToProxy {
        let failure = failure_of(e);
        if ctx.failure.is_none() {
            if let (Some(f), Some(c)) = (failure, ctx.color) {
                if f.is_upstream() && f != Failure::Connect {
                    self.app.metrics.upstream_error(c, f.fault().kind.label());
                }
            }
            ctx.failure = failure;
        }
        let mut code = 0;
        let upstream = failure.is_some_and(Failure::is_upstream);
        if upstream && session.response_written().is_none() {
            let (status, text) = request::error_page(failure);
            let grpc_client = grpc::is_grpc(
                session
                    .req_header()
                    .headers
                    .get(CONTENT_TYPE)
                    .map(|v| v.as_bytes()),
            );
            let sent = if grpc_client {
                self.answer_grpc(session, text).await
            } else {
                let rules = ctx
                    .route
                    .as_ref()
                    .map_or(&self.app.cfg.headers, |r| &r.headers);
                self.answer(session, status, text, rules).await
            };
            if sent {
                code = status;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Stream, e: &Error) -> bool {
        // A handover and a client that went away are not errors of the proxy.
        matches!(e.etype(), ErrorType::Custom("cut off")) || e.esource() == &ErrorSource::Downstream
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Stream) {
        let status = session.response_written().map_or(0, |h| h.status.as_u16());
        if ctx.failure.is_none() {
            ctx.failure = e.and_then(failure_of);
        }
        let stage = if ctx.backend_status == 0 {
            Stage::BeforeHead
        } else {
            Stage::AfterHead
        };
        let color = ctx.color.unwrap_or_else(|| self.app.router.active());
        request::finish(
            &self.app,
            &Finished {
                route: ctx.route.as_deref(),
                color,
                status,
                backend_status: ctx.backend_status,
                stage,
                failure: ctx.failure,
                elapsed: ctx.started.map_or(Duration::ZERO, |s| s.elapsed()),
                bytes: session.body_bytes_sent() as u64,
                client: ctx.client,
                method: &ctx.method,
                path: &ctx.path,
                backend: ctx.backend.as_deref(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_and_too_many_headers_are_refused() {
        assert_eq!(
            refusal(&http::Method::CONNECT, 1, 100).map(Refusal::status),
            Some(405)
        );
        assert_eq!(
            refusal(&http::Method::GET, 101, 100).map(Refusal::status),
            Some(431)
        );
        assert_eq!(refusal(&http::Method::POST, 100, 100), None);
    }

    #[test]
    fn pingora_errors_map_onto_the_engines_failures() {
        let up = |t| Error::new(t).into_up();
        let down = |t| Error::new(t).into_down();
        assert_eq!(
            failure_of(&up(ErrorType::ConnectRefused)),
            Some(Failure::Connect)
        );
        assert_eq!(
            failure_of(&up(ErrorType::ReadTimedout)),
            Some(Failure::Timeout)
        );
        assert_eq!(failure_of(&up(ErrorType::H2Error)), Some(Failure::Protocol));
        assert_eq!(
            failure_of(&up(ErrorType::ConnectionClosed)),
            Some(Failure::Reset)
        );
        assert_eq!(
            failure_of(&down(ErrorType::ConnectionClosed)),
            Some(Failure::ClientGone)
        );
        assert_eq!(failure_of(&down(ErrorType::Custom("cut off"))), None);
    }
}
