//! One request/response exchange on a client connection: from a complete head in the
//! client buffer to the last body byte (or the end of an upgraded session).
//!
//! [`prepare`] is synchronous: it parses the head, decides route and color, picks a server
//! and writes the upstream head, all while httparse's view of the buffer is alive, and
//! returns owned facts ([`Plan`]) that cross the awaits of [`forward`]. Nothing here decides
//! policy: refusals come from head.rs, routes and accounting from request.rs.

use std::io;
use std::net::IpAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::framing::{Body, Framing};
use super::gzip::Gzip;
use super::head::{self, Forwarding};
use super::response::{self, ClientSide, Out};
use super::{bodies, pool, relay, route_policy, timer, Conn, Next};
use crate::app::App;
use crate::color::Color;
use crate::edge::Refusal;
use crate::fault::Stage;
use crate::real_ip;
use crate::redirect;
use crate::request::{self, Failure, Finished, ResponseFacts};
use crate::route_limits;
use crate::routing::{Backend, Route};
use crate::wsframe::FrameTracker;

// Not boxed: a request must not cost a heap allocation, and the value lives on the
// connection task's own stack frame for a moment only.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Step {
    NeedMore,
    Refuse(Refusal),
    Answer(Answer),
    Forward(Plan),
}

/// switchyard's own answer to a well-formed request (404, the 308 of redirect_https, a
/// route's 204 preflight, 413, 429).
pub(crate) struct Answer {
    status: u16,
    body: &'static str,
    /// The `switchyard_refused_total` reason; `None` for a preflight.
    refused: Option<&'static str>,
    /// Header lines beyond the response headers (CORS, `Retry-After`).
    extra: Vec<u8>,
    /// The route whose response headers it gets; `None`: the global `[headers] add`.
    route: Option<Arc<Route>>,
    client: Option<IpAddr>,
    head_len: usize,
    /// The request has a body (not read): the connection cannot continue after it.
    has_body: bool,
    /// A HEAD request: the head only (a body would be read as the next response).
    is_head: bool,
    keep_alive: bool,
    log: Log,
}

/// switchyard's own answer to `req` (what route_policy.rs's `Local` says, with the facts of
/// the request that decide how the connection goes on after it).
fn own_answer(
    req: &head::Request<'_, '_>,
    local: route_policy::Local,
    route: Option<Arc<Route>>,
    client: Option<IpAddr>,
    log: Log,
) -> Step {
    Step::Answer(Answer {
        status: local.status,
        body: local.body,
        refused: local.refused,
        extra: local.extra,
        route,
        client,
        head_len: req.head_len,
        has_body: req.framing != Framing::Empty,
        is_head: req.is_head(),
        keep_alive: req.wants_keep_alive(),
        log,
    })
}

/// An HTTP/1.x request for a gRPC route (src/h2/ serves those over HTTP/2).
const GRPC_NEEDS_H2: Refusal = Refusal::Http2Required(
    "this route serves gRPC, which needs HTTP/2 (TLS with ALPN h2, or h2c with prior knowledge)",
);

/// A chunked request body that breaks its framing: nobody can say where it ends.
const BAD_CHUNK: Refusal = Refusal::BadRequest("invalid chunked request body");

/// What the access log needs of a request: method and target in one string (one allocation),
/// split at the method's length; nothing when the log is off (no allocation per request
/// then).
#[derive(Default)]
struct Log(Option<Box<str>>, usize);

impl Log {
    fn new(on: bool, method: &str, target: &str) -> Log {
        if !on {
            return Log::default();
        }
        Log(
            Some([method, target].concat().into_boxed_str()),
            method.len(),
        )
    }

    fn method(&self) -> &str {
        self.0.as_deref().map_or("", |t| &t[..self.1])
    }

    fn path(&self) -> &str {
        self.0.as_deref().map_or("", |t| &t[self.1..])
    }
}

/// Everything the exchange needs once the head's bytes are gone.
pub(crate) struct Plan {
    route: Arc<Route>,
    color: Color,
    /// The request's client (real_ip.rs): the access log's address.
    client: Option<IpAddr>,
    backend: Arc<Backend>,
    /// The upstream head, then reused for what goes to the client.
    out: Vec<u8>,
    /// Where the Host line written for a host-less request is (u32: the plan sits in every
    /// connection's future).
    host_line: Option<Range<u32>>,
    head_len: usize,
    framing: Framing,
    is_head: bool,
    upgrade: bool,
    keep_alive: bool,
    http10: bool,
    /// The route gzips and the client accepts it.
    gzip: bool,
    idempotent: bool,
    log: Log,
    /// The CORS lines of the response (route_policy.rs); `None` off CORS routes.
    cors: Option<Vec<u8>>,
    expect_continue: bool,
}

impl Plan {
    /// How long the backend may stay silent: the route's `read_timeout`, else the global.
    fn read_timeout(&self, app: &App) -> Duration {
        self.route
            .limits
            .read_timeout(app.cfg.upstream_read_timeout)
    }

    /// How long a write to the backend may wait: the route's `write_timeout`, else the global.
    fn write_timeout(&self, app: &App) -> Duration {
        self.route
            .limits
            .write_timeout(app.cfg.upstream_read_timeout)
    }
}

/// Parses and checks the head in the client buffer and decides where it goes.
pub(crate) fn prepare(conn: &Conn<'_>) -> Step {
    let app = conn.app;
    let limits = app.cfg.limits;
    let mut headers = head::fields();
    let req = match head::parse(
        &conn.rbuf[..conn.rlen],
        &mut headers,
        limits.max_header_bytes,
        limits.max_headers,
    ) {
        Ok(None) => return Step::NeedMore,
        Err(r) => return Step::Refuse(r),
        Ok(Some(r)) => r,
    };
    let log = Log::new(app.cfg.access_log.is_some(), req.method, req.target);
    let trusted = &app.cfg.trusted_proxies;
    // Nobody trusted (the default): the forwarding fields are not even looked for.
    let sender = if trusted.is_empty() {
        real_ip::Sender::direct(conn.peer_ip, conn.tls)
    } else {
        let xff = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            .map(|h| h.value);
        let proto = req.header("x-forwarded-proto");
        real_ip::sender(conn.peer_ip, conn.tls, trusted, xff, proto)
    };
    if let Some(port) = redirect::port_for(&app.cfg, req.path, sender.https) {
        return to_https(&req, port, sender.client, log);
    }
    prepare_routed(conn, &req, sender, log)
}

/// The 308 to https:// for a request on the plain listener (redirect.rs); a request
/// without a Host cannot be redirected and is refused.
fn to_https(req: &head::Request<'_, '_>, port: u16, client: Option<IpAddr>, log: Log) -> Step {
    let Some(location) = redirect::location(req.host, req.target, port) else {
        return Step::Refuse(Refusal::BadRequest(
            "a redirect to https needs a Host header",
        ));
    };
    let local = route_policy::Local {
        status: 308,
        body: "switchyard: this site is served over https\n",
        refused: None,
        extra: format!("Location: {location}\r\n").into_bytes(),
    };
    own_answer(req, local, None, client, log)
}

/// Route, color, server and the upstream head of a request that is forwarded (or 404).
fn prepare_routed(
    conn: &Conn<'_>,
    req: &head::Request<'_, '_>,
    sender: real_ip::Sender,
    log: Log,
) -> Step {
    let app = conn.app;
    let client = sender.client;
    let preview = app.cfg.preview.as_ref();
    let steer = preview.and_then(|p| req.header(&p.header));
    let Some(d) = request::decide(app, req.host, req.path, client, steer) else {
        let local = route_policy::Local {
            status: 404,
            body: "switchyard: no route for this path\n",
            refused: Some("no_route"),
            extra: Vec::new(),
        };
        return own_answer(req, local, None, client, log);
    };
    if d.route.grpc {
        return Step::Refuse(GRPC_NEEDS_H2);
    }
    let admitted = match route_policy::admit(req, &d.route, client) {
        Ok(a) => a,
        Err(local) => return own_answer(req, local, Some(d.route), client, log),
    };
    let backend = d.route.pool(d.color).pick().clone();
    let fwd = Forwarding {
        peer: conn.peer_ip,
        believe_xff: sender.peer_trusted,
        tls: sender.https,
        strip: preview.map(|p| p.header.as_str()),
    };
    let mut out = pool::scratch();
    let host_line = head::write_upstream(req, &fwd, backend.addr, &mut out);
    let gzip = d.route.gzip
        && request::accepts_gzip(
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("accept-encoding"))
                .map(|h| h.value),
        );
    Step::Forward(Plan {
        color: d.color,
        client,
        backend,
        out,
        host_line: host_line.map(|r| r.start as u32..r.end as u32),
        head_len: req.head_len,
        framing: req.framing,
        is_head: req.is_head(),
        upgrade: req.upgrade,
        keep_alive: req.wants_keep_alive(),
        http10: req.minor == 0,
        gzip,
        idempotent: matches!(
            req.method,
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
        ),
        log,
        cors: admitted.cors,
        expect_continue: req.expect_continue && req.minor > 0,
        route: d.route,
    })
}

/// Sends switchyard's own answer (404, 308, 204 preflight, 413, 429) with the route's response
/// headers (the global ones without a route). Not a backend's doing: it never touches a
/// color's counters.
pub(crate) async fn answer(conn: &mut Conn<'_>, a: Answer) -> Next {
    let started = Instant::now();
    if let Some(reason) = a.refused {
        conn.app.metrics.refused(reason);
    }
    let close = a.has_body || !a.keep_alive || conn.leaving();
    let mut out = pool::scratch();
    let rules = a
        .route
        .as_ref()
        .map_or(&conn.app.cfg.headers[..], |r| &r.headers[..]);
    response::write_own_with(&mut out, a.status, a.body, rules, &a.extra, close);
    let body_len = if a.is_head || a.status == 204 {
        0
    } else {
        a.body.len()
    };
    if a.is_head {
        out.truncate(out.len() - a.body.len().min(out.len()));
    }
    let sent = conn.client.write_all(&out).await.is_ok() && conn.client.flush().await.is_ok();
    pool::give_back_scratch(out);
    conn.consume(a.head_len);
    request::finish(
        conn.app,
        &Finished {
            route: None,
            color: conn.app.router.active(),
            status: if sent { a.status } else { 0 },
            backend_status: 0,
            stage: Stage::BeforeHead,
            failure: None,
            elapsed: started.elapsed(),
            bytes: body_len as u64,
            client: a.client,
            method: a.log.method(),
            path: a.log.path(),
            backend: None,
        },
    );
    if close || !sent {
        if sent {
            conn.linger().await;
        }
        return Next::Close;
    }
    Next::KeepAlive
}

/// What became of one exchange, for the accounting at its end.
#[derive(Default)]
struct Outcome {
    status: u16,
    /// The backend's final (or 101) status, once its head arrived.
    backend_status: u16,
    bytes: u64,
    failure: Option<Failure>,
}

impl Outcome {
    fn stage(&self) -> Stage {
        match self.backend_status {
            0 => Stage::BeforeHead,
            101 => Stage::Upgraded,
            _ => Stage::AfterHead,
        }
    }

    /// Names the failure; a backend's is on record at once, before any error page goes out.
    fn fail(&mut self, app: &App, color: Color, f: Failure) {
        if f.is_upstream() && f != Failure::Connect {
            app.metrics.upstream_error(color, f.fault().kind.label());
        }
        self.failure = Some(f);
    }
}

/// Forwards one request and its response; accounts for it at the end.
pub(crate) async fn forward(conn: &mut Conn<'_>, plan: &mut Plan, timer: Pin<&mut Sleep>) -> Next {
    let started = Instant::now();
    let app = conn.app;
    let _inflight = app.tracker.request(plan.color);
    let mut o = Outcome::default();
    let next = run(conn, plan, &mut o, timer).await;
    if let Some(f) = o.failure {
        tracing::debug!(failure = ?f, server = %plan.backend.addr, "request failed");
    }
    request::finish(
        app,
        &Finished {
            route: Some(&plan.route),
            color: plan.color,
            status: o.status,
            backend_status: o.backend_status,
            stage: o.stage(),
            failure: o.failure,
            elapsed: started.elapsed(),
            bytes: o.bytes,
            client: plan.client,
            method: plan.log.method(),
            path: plan.log.path(),
            backend: Some(&plan.backend),
        },
    );
    pool::give_back_scratch(std::mem::take(&mut plan.out));
    if let Some(c) = plan.cors.take() {
        pool::give_back_scratch(c);
    }
    next
}

/// An upstream connection: taken from the pool (`reused`) or new.
async fn connect(
    app: &App,
    b: &Backend,
    color: Color,
    fresh: bool,
    resendable: bool,
) -> io::Result<(TcpStream, bool)> {
    if !fresh {
        let max_idle = app.cfg.upstream_idle_timeout;
        if let Some(s) = pool::take(b.addr, color, max_idle, !resendable) {
            return Ok((s, true));
        }
    }
    // Boxed: a new connection is the uncommon case under keep-alive, and its future (the
    // connect and its timer) would otherwise be part of every connection's future.
    let s = Box::pin(tokio::time::timeout(
        app.cfg.connect_timeout,
        TcpStream::connect(b.addr),
    ))
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = s.set_nodelay(true);
    Ok((s, false))
}

async fn run(
    conn: &mut Conn<'_>,
    plan: &mut Plan,
    o: &mut Outcome,
    mut timer: Pin<&mut Sleep>,
) -> Next {
    let app = conn.app;
    // The body bytes that came with the head go up in the same write as the head; a bad
    // chunk among them is refused before the backend sees anything.
    let mut body = Body::new(plan.framing);
    let start = plan.head_len;
    let mut payload = 0u64;
    let consumed = match body.feed(&conn.rbuf[start..conn.rlen], &mut |p| {
        payload += p.len() as u64
    }) {
        Ok(n) => n,
        Err(_) => {
            o.failure = Some(Failure::ClientProtocol);
            if conn.send_refusal(BAD_CHUNK).await {
                o.status = 400;
                Box::pin(conn.linger()).await;
            }
            return Next::Close;
        }
    };
    plan.out
        .extend_from_slice(&conn.rbuf[start..start + consumed]);
    conn.consume(start + consumed);
    // Computed again rather than carried: the plan crosses every await of the exchange.
    let chunked = plan.framing == Framing::Chunked;
    if let route_limits::Body::Collect { max } = plan.route.limits.body(None, chunked) {
        // Boxed: only chunked bodies on limited routes come here.
        let whole = Box::pin(collect(
            conn,
            plan,
            &mut body,
            max,
            payload,
            consumed as u64,
        ));
        if let Err(f) = whole.await {
            return Box::pin(refuse_body(conn, o, f)).await;
        }
    }
    // Only a request whose body went up whole with the head can be sent again.
    let resendable = plan.idempotent && body.is_done();

    let servers = plan.route.pool(plan.color).backends.len();
    let mut connect_failures = 0;
    let mut fresh = false;
    let size = conn.engine.buf_size;
    loop {
        let (mut up, reused) =
            match connect(app, &plan.backend, plan.color, fresh, resendable).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(server = %plan.backend.addr, "connect failed: {e}");
                    app.metrics.upstream_error(plan.color, "connect");
                    connect_failures += 1;
                    if connect_failures < servers {
                        // Nothing was sent: another server of the same color may take it.
                        plan.backend = plan.route.pool(plan.color).pick().clone();
                        if let Some(at) = plan.host_line.take() {
                            let at = at.start as usize..at.end as usize;
                            let new = head::rewrite_host(&mut plan.out, at, plan.backend.addr);
                            plan.host_line = Some(new.start as u32..new.end as u32);
                        }
                        continue;
                    }
                    o.failure = Some(Failure::Connect);
                    return Box::pin(error_page(conn, plan, o, &body)).await;
                }
            };
        if let Err(f) = bodies::send_up(&mut up, &plan.out, plan.write_timeout(app)).await {
            if reused && f == Failure::Reset {
                // The backend closed this pooled connection while it idled: nothing was
                // processed, so any request may go again on a new connection.
                fresh = true;
                continue;
            }
            tracing::debug!(server = %plan.backend.addr, "sending the request failed: {f:?}");
            o.fail(app, plan.color, f);
            return Box::pin(error_page(conn, plan, o, &body)).await;
        }
        let mut ubuf = pool::buffer(size);
        let mut r = respond(conn, plan, o, &mut body, &mut up, &mut ubuf, timer.as_mut()).await;
        if let Respond::Head(head, ulen) = r {
            // Awaited here, not inside respond: the two futures then share their space in
            // this one instead of nesting (every connection's future is as large as its
            // deepest nesting).
            let answer = Received {
                head,
                buf: &mut ubuf,
                len: ulen,
            };
            let (b, u) = (&mut body, &mut up);
            r = send_response(conn, plan, o, b, u, answer, timer.as_mut()).await;
        }
        // A buffer grown for a large response head is freed: the pool keeps one size.
        if ubuf.len() == size {
            pool::give_back(ubuf);
        }
        match r {
            Respond::Done { next, reusable } => {
                if reusable {
                    pool::put(
                        plan.backend.addr,
                        plan.color,
                        up,
                        app.cfg.upstream_idle_timeout,
                    );
                }
                return next;
            }
            Respond::DeadBeforeAnyByte if reused && resendable => {
                fresh = true;
                continue;
            }
            Respond::DeadBeforeAnyByte => {
                o.fail(app, plan.color, Failure::Reset);
                return Box::pin(error_page(conn, plan, o, &body)).await;
            }
            // Boxed: an upgraded session's relay is large and rare, and would otherwise
            // make every connection's future (idle keep-alives included) that large.
            Respond::Upgraded(frames) => {
                return Box::pin(upgraded(conn, plan, o, &mut up, frames)).await
            }
            // send_response answers Done (or another of the above), never a head.
            Respond::Head(..) => unreachable!("a response head left unsent"),
        }
    }
}

/// Why a chunked body being collected is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uncollected {
    /// Over the route's `max_body_bytes`: 413.
    TooLarge,
    /// Broken chunk framing: 400.
    BadChunk,
    /// The client left or stalled: no answer.
    Gone(Failure),
}

/// Reads the rest of a chunked body into `plan.out` behind the upstream head, so the
/// backend gets all of it or nothing: nginx's `client_max_body_size` with request buffering.
/// Memory is bounded by the route's limit (route_limits.rs bounds the framing overhead too).
/// A client that sent `Expect: 100-continue` gets the 100 from here: the backend sees
/// nothing until the body is whole.
async fn collect(
    conn: &mut Conn<'_>,
    plan: &mut Plan,
    body: &mut Body,
    max: u64,
    mut payload: u64,
    mut raw: u64,
) -> Result<(), Uncollected> {
    let stall = conn.app.cfg.limits.idle_timeout;
    if plan.expect_continue && !body.is_done() {
        bodies::send(
            &mut conn.client,
            b"HTTP/1.1 100 Continue\r\n\r\n",
            conn.app.cfg.client_send_timeout,
        )
        .await
        .map_err(Uncollected::Gone)?;
    }
    loop {
        if crate::route_limits::collected_too_large(max, payload, raw) {
            return Err(Uncollected::TooLarge);
        }
        if body.is_done() {
            return Ok(());
        }
        match bodies::within(stall, conn.read_more()).await {
            Some(Ok(n)) if n > 0 => {}
            Some(_) => return Err(Uncollected::Gone(Failure::ClientGone)),
            None => return Err(Uncollected::Gone(Failure::ClientStalled)),
        }
        let n = body
            .feed(&conn.rbuf[..conn.rlen], &mut |p| payload += p.len() as u64)
            .map_err(|_| Uncollected::BadChunk)?;
        plan.out.extend_from_slice(&conn.rbuf[..n]);
        raw += n as u64;
        conn.consume(n);
    }
}

/// Answers a body that was not collected (413 or 400, or nothing to a client that left)
/// and closes: the rest of the body is unread.
async fn refuse_body(conn: &mut Conn<'_>, o: &mut Outcome, why: Uncollected) -> Next {
    let refusal = match why {
        Uncollected::TooLarge => Refusal::BodyTooLarge(
            "the request body is larger than this route takes (max_body_bytes)",
        ),
        Uncollected::BadChunk => {
            o.failure = Some(Failure::ClientProtocol);
            BAD_CHUNK
        }
        Uncollected::Gone(f) => {
            o.failure = Some(f);
            return Next::Close;
        }
    };
    if conn.send_refusal(refusal).await {
        o.status = refusal.status();
        conn.linger().await;
    }
    Next::Close
}

enum Respond {
    Done {
        next: Next,
        reusable: bool,
    },
    /// The (pooled) connection ended before a single response byte.
    DeadBeforeAnyByte,
    /// A 101 went to the client (with whatever followed it): relay from here, with where the
    /// server-to-client frames stand after what came with it.
    Upgraded(FrameTracker),
    /// A final response head (the client's head is in `plan.out`), and how much of its body
    /// is in the buffer: send it ([`send_response`]).
    Head(FinalHead, usize),
}

/// Reads the response head (relaying interim ones) while the rest of the request body goes
/// up, then sends the response to the client. The backend has `upstream_read_timeout` for
/// its head once the body is sent (then the client gets a 504).
async fn respond(
    conn: &mut Conn<'_>,
    plan: &mut Plan,
    o: &mut Outcome,
    body: &mut Body,
    up: &mut TcpStream,
    ubuf: &mut Vec<u8>,
    mut timer: Pin<&mut Sleep>,
) -> Respond {
    let mut ulen = 0;
    let size = conn.engine.buf_size;
    let cfg = &conn.app.cfg;
    // A client that stops sending its body for idle_timeout is cut: it would hold a backend
    // connection forever otherwise.
    let body_stall = cfg.limits.idle_timeout;
    // Deadlines since the last progress of each side, read off the clock only when a wait
    // needs one (`None`: progress since).
    let mut body_due = None;
    let mut head_due = None;
    let head = loop {
        if ulen > 0 {
            match final_head(conn, plan, o, body, &ubuf[..ulen]) {
                Parsed::Incomplete => {}
                Parsed::Interim(n, forward) => {
                    if let Some(h) = forward {
                        let t = cfg.client_send_timeout;
                        let sent = bodies::send_on(timer.as_mut(), &mut conn.client, &h, t).await;
                        pool::give_back_scratch(h);
                        if let Err(f) = sent {
                            o.failure = Some(f);
                            return done(Next::Close);
                        }
                    }
                    ubuf.copy_within(n..ulen, 0);
                    ulen -= n;
                    continue;
                }
                Parsed::Bad(e) => {
                    tracing::debug!(server = %plan.backend.addr, "{e}");
                    o.fail(conn.app, plan.color, Failure::Protocol);
                    return done(Box::pin(error_page(conn, plan, o, body)).await);
                }
                Parsed::Final(h) => break h,
            }
            if ulen == ubuf.len() {
                if ubuf.len() >= response::MAX_HEAD {
                    o.fail(conn.app, plan.color, Failure::Protocol);
                    return done(Box::pin(error_page(conn, plan, o, body)).await);
                }
                // Response heads may be larger than request heads (cookies, CSP): this
                // exchange's buffer grows up to MAX_HEAD.
                ubuf.resize(response::MAX_HEAD, 0);
            }
        }
        if conn.rbuf.is_empty() && !body.is_done() {
            conn.rbuf = pool::buffer(size);
        }
        let rlen = conn.rlen;
        let sending = !body.is_done();
        let now = tokio::time::Instant::now;
        // The connection's own timer (timer.rs): for the client's body while it is still
        // coming, for the backend's head once it is all sent.
        let due = if sending {
            *body_due.get_or_insert_with(|| now() + body_stall)
        } else {
            *head_due.get_or_insert_with(|| now() + plan.read_timeout(conn.app))
        };
        timer::arm(timer.as_mut(), due);
        tokio::select! {
            // Biased: the backend's answer is what nearly every wake-up is for. (The
            // requests/s "regression" once blamed on this bias was the scheduler's placement
            // of the processes; docs/benchmarks.md, Results.)
            biased;
            r = up.read(&mut ubuf[ulen..]) => match r {
                Ok(n) if n > 0 => {
                    ulen += n;
                    head_due = None;
                }
                _ if ulen == 0 => return Respond::DeadBeforeAnyByte,
                _ => {
                    o.fail(conn.app, plan.color, Failure::Reset);
                    return done(Box::pin(error_page(conn, plan, o, body)).await);
                }
            },
            r = conn.client.read(&mut conn.rbuf[rlen..]), if sending => match r {
                Ok(n) if n > 0 => {
                    conn.rlen += n;
                    body_due = None;
                    // Looked up here, not held: the wait's state sits in every connection's future.
                    let write_timeout = plan.write_timeout(conn.app);
                    if let Err(f) = send_body(conn, body, up, write_timeout).await {
                        o.fail(conn.app, plan.color, f);
                        if f == Failure::ClientProtocol {
                            if conn.send_refusal(BAD_CHUNK).await {
                                o.status = 400;
                                Box::pin(conn.linger()).await;
                            }
                            return done(Next::Close);
                        }
                        return done(Box::pin(error_page(conn, plan, o, body)).await);
                    }
                    if body.is_done() {
                        head_due = None;
                    }
                }
                _ => {
                    // The client left in the middle of its body.
                    o.failure = Some(Failure::ClientGone);
                    return done(Next::Close);
                }
            },
            _ = timer::expired(timer.as_mut(), due) => {
                if sending {
                    o.failure = Some(Failure::ClientStalled);
                    return done(Next::Close);
                }
                tracing::debug!(server = %plan.backend.addr, "no response head in time");
                o.fail(conn.app, plan.color, Failure::Timeout);
                return done(Box::pin(error_page(conn, plan, o, body)).await);
            },
        }
    };
    if head.status == 101 {
        o.status = 101;
        // The 101 head (already rewritten in plan.out) and whatever the backend sent after it.
        let rest = &ubuf[head.len..ulen];
        plan.out.extend_from_slice(rest);
        let mut frames = FrameTracker::default();
        frames.feed(rest, false);
        return Respond::Upgraded(frames);
    }
    ubuf.copy_within(head.len..ulen, 0);
    ulen -= head.len;
    Respond::Head(head, ulen)
}

fn done(next: Next) -> Respond {
    Respond::Done {
        next,
        reusable: false,
    }
}

/// Forwards the client body bytes in `rbuf[..rlen]` that belong to this request.
async fn send_body(
    conn: &mut Conn<'_>,
    body: &mut Body,
    up: &mut TcpStream,
    write_timeout: Duration,
) -> Result<(), Failure> {
    let n = body
        .feed(&conn.rbuf[..conn.rlen], &mut |_| {})
        .map_err(|_| Failure::ClientProtocol)?;
    if n > 0 {
        bodies::send_up(up, &conn.rbuf[..n], write_timeout).await?;
        conn.consume(n);
    }
    Ok(())
}

/// What the backend has answered so far: its final head, and the body bytes that came
/// with it (`buf[..len]`), as the response relay takes them over.
struct Received<'b> {
    head: FinalHead,
    buf: &'b mut [u8],
    len: usize,
}

/// The facts of a final response head, owned.
struct FinalHead {
    status: u16,
    len: usize,
    framing: Framing,
    mode: Out,
    upstream_close: bool,
    client_close: bool,
}

enum Parsed {
    Incomplete,
    /// An interim (1xx) head of this length, and its rewritten form for the client (none
    /// for an HTTP/1.0 client, which cannot read one).
    Interim(usize, Option<Vec<u8>>),
    Bad(response::BadResponse),
    Final(FinalHead),
}

/// Parses the head in `buf`; for a final one, writes the client's head into `plan.out`.
fn final_head(
    conn: &Conn<'_>,
    plan: &mut Plan,
    o: &mut Outcome,
    body: &Body,
    buf: &[u8],
) -> Parsed {
    let mut headers = head::fields();
    let r = match response::parse(buf, &mut headers, plan.is_head, plan.upgrade) {
        Ok(None) => return Parsed::Incomplete,
        Err(e) => return Parsed::Bad(e),
        Ok(Some(r)) => r,
    };
    if r.is_interim() {
        let rewritten = (!plan.http10).then(|| {
            let mut h = pool::scratch();
            response::write_interim(&r, &mut h);
            h
        });
        return Parsed::Interim(r.head_len, rewritten);
    }
    let gzip = plan.gzip
        && request::may_gzip(&ResponseFacts {
            status: r.status,
            content_type: r.header("content-type"),
            content_range: r.header("content-range").is_some(),
            content_encoding: r.header("content-encoding").is_some(),
            no_transform: r
                .headers_named("cache-control")
                .any(request::has_no_transform),
        });
    let mode = response::mode(&r, gzip, plan.http10);
    let client_close = !plan.keep_alive
        || conn.leaving()
        || !body.is_done()
        || response::ends_connection(&r, mode);
    let side = ClientSide {
        rules: &plan.route.headers,
        http10: plan.http10,
        close: client_close,
        gzip,
        cors: plan.cors.as_deref(),
    };
    response::write_client(&r, &side, &mut plan.out);
    o.status = r.status;
    o.backend_status = r.status;
    Parsed::Final(FinalHead {
        status: r.status,
        len: r.head_len,
        framing: r.framing,
        mode,
        upstream_close: r.close,
        client_close,
    })
}

/// What became of a response's relay to the client.
enum Relayed {
    /// The body went whole; `extra`: the backend's connection cannot be reused (it sent
    /// bytes after the body, or the request body's upload was cut).
    Whole { extra: bool },
    /// A close-delimited body ended with the backend's close.
    EndedByClose,
    /// Nothing reached the client (its framing broke at once): it gets an error page.
    Unsent,
    /// Cut midway (the failure is on the outcome): both connections end.
    Cut,
}

/// Sends the response head and body to the client, framing checked all the way; the rest
/// of the request body keeps going up meanwhile.
async fn send_response(
    conn: &mut Conn<'_>,
    plan: &mut Plan,
    o: &mut Outcome,
    body: &mut Body,
    up: &mut TcpStream,
    mut answer: Received<'_>,
    timer: Pin<&mut Sleep>,
) -> Respond {
    let app = conn.app;
    let relayed = if body.is_done() {
        relay_response(app, &mut conn.client, up, plan, o, &mut answer, timer).await
    } else {
        // Boxed: both directions at once is the rare case, and its future is large.
        Box::pin(duplex(conn, plan, o, body, up, &mut answer)).await
    };
    let head = &answer.head;
    match relayed {
        Relayed::Unsent => done(Box::pin(error_page(conn, plan, o, body)).await),
        Relayed::Cut => done(Next::Close),
        Relayed::EndedByClose => {
            Box::pin(conn.close_after_response()).await;
            done(Next::Close)
        }
        Relayed::Whole { extra } => {
            let reusable =
                !extra && !head.upstream_close && head.framing != Framing::Close && body.is_done();
            if head.client_close {
                Box::pin(conn.close_after_response()).await;
                return Respond::Done {
                    next: Next::Close,
                    reusable,
                };
            }
            Respond::Done {
                next: Next::KeepAlive,
                reusable,
            }
        }
    }
}

/// The response's relay and the request body's upload at once, over split sockets: a
/// backend that answers before it has read the whole body (an echo) gets the rest.
async fn duplex(
    conn: &mut Conn<'_>,
    plan: &mut Plan,
    o: &mut Outcome,
    body: &mut Body,
    up: &mut TcpStream,
    answer: &mut Received<'_>,
) -> Relayed {
    let app = conn.app;
    if conn.rbuf.is_empty() {
        conn.rbuf = pool::buffer(conn.engine.buf_size);
    }
    let bounds = bodies::Bounds {
        client_stall: app.cfg.limits.idle_timeout,
        upstream: plan.write_timeout(app),
    };
    let (mut cr, mut cw) = tokio::io::split(&mut conn.client);
    let (mut ur, mut uw) = up.split();
    let failed = {
        let upload = bodies::upload(
            &mut cr,
            &mut conn.rbuf,
            &mut conn.rlen,
            body,
            &mut uw,
            bounds,
        );
        // Its own timer: the upload runs at the same time, under bounds of its own.
        let download_timer = tokio::time::sleep(plan.read_timeout(app));
        tokio::pin!(download_timer);
        let download = relay_response(
            app,
            &mut cw,
            &mut ur,
            plan,
            o,
            answer,
            download_timer.as_mut(),
        );
        tokio::pin!(upload, download);
        let mut uploading = true;
        loop {
            tokio::select! {
                // The response decides the end: the connection closes after it (the body
                // was not complete when the head came), so an unfinished upload is dropped,
                // and the backend's connection with it (a write may have been cut).
                r = &mut download => return match r {
                    Relayed::Whole { extra } => Relayed::Whole { extra: extra || uploading },
                    other => other,
                },
                r = &mut upload, if uploading => match r {
                    Ok(()) => uploading = false,
                    Err(f) => break f,
                },
            }
        }
    };
    o.fail(app, plan.color, failed);
    Relayed::Cut
}

/// Relays the response body from `up` to `client` (the head is in `plan.out`), gzipping
/// or de-chunking as the head's mode says. The backend has `upstream_read_timeout` for each
/// read, the client `client_send_timeout` for each write.
async fn relay_response<W, R>(
    app: &App,
    client: &mut W,
    up: &mut R,
    plan: &mut Plan,
    o: &mut Outcome,
    answer: &mut Received<'_>,
    mut timer: Pin<&mut Sleep>,
) -> Relayed
where
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
    R: tokio::io::AsyncRead + Unpin + ?Sized,
{
    let head = &answer.head;
    let ubuf = &mut *answer.buf;
    let mut ulen = answer.len;
    let mut rbody = Body::new(head.framing);
    // Boxed: the encoder is ~150 bytes that every connection's future would otherwise hold.
    let mut gz = match head.mode {
        Out::Gzip { chunked } => Some(Box::new(Gzip::new(chunked))),
        _ => None,
    };
    let mut head_sent = false;
    let head_len = plan.out.len();
    loop {
        let out = &mut plan.out;
        let fed = match (head.mode, gz.as_mut()) {
            (Out::Pass, _) => rbody.feed(&ubuf[..ulen], &mut |_| {}).inspect(|&n| {
                out.extend_from_slice(&ubuf[..n]);
            }),
            (_, Some(g)) => rbody.feed(&ubuf[..ulen], &mut |p| g.feed(p, out)),
            _ => rbody.feed(&ubuf[..ulen], &mut |p| out.extend_from_slice(p)),
        };
        let n = match fed {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(server = %plan.backend.addr, "bad response body framing: {e}");
                o.fail(app, plan.color, Failure::Protocol);
                if !head_sent {
                    plan.out.clear();
                    return Relayed::Unsent;
                }
                return Relayed::Cut;
            }
        };
        ubuf.copy_within(n..ulen, 0);
        ulen -= n;
        if rbody.is_done() {
            if let Some(g) = gz.take() {
                g.finish(&mut plan.out);
            }
        }
        if !plan.out.is_empty() {
            let t = app.cfg.client_send_timeout;
            if let Err(f) = bodies::send_on(timer.as_mut(), client, &plan.out, t).await {
                o.failure = Some(f);
                if !head_sent {
                    o.status = 0;
                }
                return Relayed::Cut;
            }
            o.bytes += (plan.out.len() - if head_sent { 0 } else { head_len }) as u64;
            head_sent = true;
            plan.out.clear();
        }
        if rbody.is_done() {
            return Relayed::Whole { extra: ulen > 0 };
        }
        let t = plan.read_timeout(app);
        match bodies::read_on(timer.as_mut(), up, &mut ubuf[ulen..], t).await {
            Some(Ok(k)) if k > 0 => ulen += k,
            None => {
                tracing::debug!(server = %plan.backend.addr, "the response body stalled");
                o.fail(app, plan.color, Failure::Timeout);
                return Relayed::Cut;
            }
            Some(_) => {
                if rbody.eof().is_ok() {
                    // Close-delimited: the end of the stream is the end of the body.
                    if let Some(g) = gz.take() {
                        g.finish(&mut plan.out);
                        let t = app.cfg.client_send_timeout;
                        let _ = bodies::send_on(timer.as_mut(), client, &plan.out, t).await;
                        plan.out.clear();
                    }
                    return Relayed::EndedByClose;
                }
                o.fail(app, plan.color, Failure::Reset);
                return Relayed::Cut;
            }
        }
    }
}

/// The client gets a 502 (504 when the backend did not answer in time) with the route's
/// response headers (when nothing was sent to it yet); the connection continues only when
/// the request's body was read whole.
async fn error_page(conn: &mut Conn<'_>, plan: &mut Plan, o: &mut Outcome, body: &Body) -> Next {
    let close = !plan.keep_alive || conn.leaving() || !body.is_done();
    let (status, text) = request::error_page(o.failure);
    let cors = plan.cors.as_deref().unwrap_or_default();
    response::write_own_with(
        &mut plan.out,
        status,
        text,
        &plan.route.headers,
        cors,
        close,
    );
    let sent = bodies::send(
        &mut conn.client,
        &plan.out,
        conn.app.cfg.client_send_timeout,
    )
    .await
    .is_ok();
    plan.out.clear();
    if !sent {
        return Next::Close;
    }
    o.status = status;
    o.bytes = text.len() as u64;
    if close {
        conn.linger().await;
        return Next::Close;
    }
    Next::KeepAlive
}

/// After a 101: registers the WebSocket, relays it until it ends, and closes.
async fn upgraded(
    conn: &mut Conn<'_>,
    plan: &mut Plan,
    o: &mut Outcome,
    up: &mut TcpStream,
    frames: FrameTracker,
) -> Next {
    let app = conn.app;
    if bodies::send(&mut conn.client, &plan.out, app.cfg.client_send_timeout)
        .await
        .is_err()
    {
        return Next::Close;
    }
    plan.out.clear();
    // What the client sent after its upgrade request belongs to the new protocol.
    if conn.rlen > 0 {
        if up.write_all(&conn.rbuf[..conn.rlen]).await.is_err() {
            return Next::Close;
        }
        let n = conn.rlen;
        conn.consume(n);
    }
    conn.release();
    let reg = app.tracker.register_websocket(plan.color);
    let size = conn.engine.buf_size;
    let t = app.cfg.client_send_timeout;
    let ended = relay::relay(&mut conn.client, up, &reg.handle, frames, size, t).await;
    tracing::debug!(?ended, color = %plan.color, "websocket ended");
    match ended {
        relay::Ended::UpstreamFailed => o.fail(app, plan.color, Failure::Reset),
        relay::Ended::ClientFailed => o.failure = Some(Failure::ClientGone),
        relay::Ended::Closed | relay::Ended::HandedOver => {}
    }
    Next::Close
}
