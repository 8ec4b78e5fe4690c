//! The front door's defences: what a client may send and what it may cost before switchyard
//! refuses it. Owns the request checks that pingora and httparse leave to the application
//! (pure: [`check_request`]), the per-connection header and keep-alive deadlines (a thin
//! wrapper around the client socket, [`Guarded`]), and the connection cap ([`FrontDoor`],
//! pingora's `ServerApp` around the proxy).
//!
//! What pingora already refuses with 400 and a close, and is therefore not repeated here:
//! header syntax (obs-fold, space before the colon, NUL/CR/LF in values — httparse), two
//! different `Content-Length` values or a non-numeric one, a `Transfer-Encoding` whose last
//! coding is not `chunked`, `Transfer-Encoding` on HTTP/1.0, duplicate `Host`, a header block
//! over 1 MiB or over 256 lines, and invalid chunk sizes while it streams a body.
//!
//! It does not route, count per color or decide anything about switches (proxy.rs, drain.rs).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use pingora::apps::ServerApp;
use pingora::http::RequestHeader;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::proxy::{HttpProxy, ProxyHttp, Session};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::LimitsConfig;
use crate::drain::Open;
use crate::metrics::Metrics;

/// Why a request is refused before it reaches a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: ambiguous or malformed framing; a backend might read it differently.
    BadRequest(&'static str),
    /// 431: the header block is larger or longer than `[limits]` allows.
    HeaderTooLarge(&'static str),
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::HeaderTooLarge(_) => 431,
        }
    }

    /// The `reason` label of `switchyard_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "bad_request",
            Refusal::HeaderTooLarge(_) => "header_too_large",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Refusal::BadRequest(r) | Refusal::HeaderTooLarge(r) => r,
        }
    }
}

/// The checks on a parsed request header that pingora does not make. `raw` is the request
/// line and header block as received: pingora drops `Content-Length` from the parsed headers
/// when `Transfer-Encoding` is present (and forwards the request), so only the raw bytes
/// still show that a client sent both.
pub fn check_request(
    req: &RequestHeader,
    raw: &[u8],
    limits: &LimitsConfig,
) -> Result<(), Refusal> {
    if raw.len() > limits.max_header_bytes {
        return Err(Refusal::HeaderTooLarge(
            "request line and headers are larger than [limits] max_header_bytes",
        ));
    }
    if has_bare_lf(raw) {
        // httparse accepts a lone LF as a line end (RFC 9112 allows it), which makes
        // `X-A: o\nTransfer-Encoding: chunked` two headers here and one value elsewhere.
        return Err(Refusal::BadRequest("bare LF in the request header"));
    }
    if req.headers.len() > limits.max_headers {
        return Err(Refusal::HeaderTooLarge(
            "more header fields than [limits] max_headers",
        ));
    }
    if req.version == http::Version::HTTP_11 && !req.headers.contains_key(HOST) {
        // RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
        return Err(Refusal::BadRequest("HTTP/1.1 request without Host"));
    }
    let mut te = req.headers.get_all(TRANSFER_ENCODING).iter();
    if let Some(first) = te.next() {
        // Only the one coding every backend understands: `gzip, chunked` is valid HTTP but
        // a backend that does not know gzip frames the body differently from us.
        if te.next().is_some() || !trim_ows(first.as_bytes()).eq_ignore_ascii_case(b"chunked") {
            return Err(Refusal::BadRequest(
                "Transfer-Encoding must be exactly \"chunked\"",
            ));
        }
        if has_header_line(raw, b"content-length") {
            return Err(Refusal::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        return Ok(());
    }
    let mut cl = req.headers.get_all(CONTENT_LENGTH).iter();
    if let Some(first) = cl.next() {
        let digits = first.as_bytes();
        // pingora accepts identical duplicates (`4, 4`, or two lines) and forwards them as
        // sent; a backend may not. One plain number only.
        if cl.next().is_some() || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(Refusal::BadRequest(
                "Content-Length must be one plain number",
            ));
        }
    }
    Ok(())
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// Whether a line in `raw` ends in LF without CR.
pub fn has_bare_lf(raw: &[u8]) -> bool {
    raw.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
}

/// Whether a header line named `name` (lower case) is in a raw header block; the request
/// line is skipped. httparse already refused names with a space before the colon.
pub fn has_header_line(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[name.len()] == b':'
            && line[..name.len()].eq_ignore_ascii_case(name)
    })
}

/// For a chunked request, parses the body bytes that arrived together with the header before
/// anything is sent upstream, so an invalid chunk size there is refused while the backend
/// has seen nothing (pingora would find it only after forwarding the header). Polled once:
/// bytes not yet received are not waited for, and later ones are checked by pingora while it
/// streams. What is read here is kept in pingora's retry buffer, which the proxy sends first.
pub fn check_chunked_prefix(session: &mut Session) -> Result<(), Refusal> {
    if !session.req_header().headers.contains_key(TRANSFER_ENCODING) {
        return Ok(());
    }
    session.as_downstream_mut().enable_retry_buffering();
    // The body reader keeps its state across a dropped poll (pingora commits its offsets
    // before every await), so giving up after one poll loses nothing.
    match session
        .as_downstream_mut()
        .read_request_body()
        .now_or_never()
    {
        None | Some(Ok(None)) => Ok(()),
        Some(Ok(Some(_))) if session.as_downstream().get_retry_buffer().is_none() => Err(
            Refusal::BadRequest("request body prefix did not fit the retry buffer"),
        ),
        Some(Ok(Some(_))) => Ok(()),
        Some(Err(_)) => Err(Refusal::BadRequest("invalid chunked body")),
    }
}

/// Marks a proxy hook leaves on the client connection; see [`Guarded`].
#[derive(Debug, Default)]
struct Marks {
    headers_read: AtomicU32,
    requests_done: AtomicU32,
}

fn marks(session: &Session) -> Option<&Marks> {
    let stream = session.as_downstream().as_http1()?.stream();
    (**stream)
        .as_any()
        .downcast_ref::<Guarded>()
        .map(|g| &g.marks)
}

/// Called once a request header has been parsed: its header deadline no longer applies.
pub fn header_read(session: &Session) {
    if let Some(m) = marks(session) {
        m.headers_read.fetch_add(1, Ordering::Relaxed);
    }
}

/// Called when a request is over: the connection now idles until the next one.
pub fn request_done(session: &Session) {
    if let Some(m) = marks(session) {
        m.requests_done.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request header: the whole header must arrive before the deadline.
    Header,
    /// Between keep-alive requests: the first byte of the next one must arrive in time.
    Idle,
    /// Header read: body, response and upgraded bytes; pingora's own timeouts apply.
    Open,
}

/// The client socket with switchyard's two deadlines, which pingora lacks: pingora's
/// downstream timeouts apply to each read (a client sending a byte a second never trips
/// them), and after the first request a keep-alive connection may idle forever.
///
/// The deadlines run here, on the reads pingora makes; the proxy hooks only bump two
/// counters ([`header_read`], [`request_done`]) and the next read picks the phase up. An
/// expired header deadline is a read error, so pingora drops the connection (silently if
/// nothing was sent); an expired idle deadline is an end of stream, a clean close.
#[derive(Debug)]
pub struct Guarded {
    inner: Stream,
    marks: Marks,
    seen_headers: u32,
    seen_done: u32,
    phase: Phase,
    timer: Pin<Box<Sleep>>,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl Guarded {
    pub fn new(inner: Stream, limits: &LimitsConfig) -> Guarded {
        Guarded {
            inner,
            marks: Marks::default(),
            seen_headers: 0,
            seen_done: 0,
            phase: Phase::Header,
            timer: Box::pin(tokio::time::sleep(limits.header_timeout)),
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout,
        }
    }

    fn sync_phase(&mut self) {
        let done = self.marks.requests_done.load(Ordering::Relaxed);
        if done != self.seen_done {
            self.seen_done = done;
            self.seen_headers = self.marks.headers_read.load(Ordering::Relaxed);
            self.phase = Phase::Idle;
            self.timer
                .as_mut()
                .reset(Instant::now() + self.idle_timeout);
            return;
        }
        let headers = self.marks.headers_read.load(Ordering::Relaxed);
        if headers != self.seen_headers {
            self.seen_headers = headers;
            self.phase = Phase::Open;
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.sync_phase();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        match (this.phase, r) {
            (Phase::Open, r) => r,
            (Phase::Idle, Poll::Ready(Ok(()))) if buf.filled().len() > before => {
                this.phase = Phase::Header;
                this.timer
                    .as_mut()
                    .reset(Instant::now() + this.header_timeout);
                Poll::Ready(Ok(()))
            }
            (_, Poll::Ready(r)) => Poll::Ready(r),
            (phase, Poll::Pending) => match this.timer.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                // End of stream: pingora closes a connection that idles out quietly.
                Poll::Ready(()) if phase == Phase::Idle => Poll::Ready(Ok(())),
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request header not complete within [limits] header_timeout",
                ))),
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

/// pingora finishes the TLS handshake before the proxy gets the stream, so `inner` is the
/// TLS stream on the HTTPS listener and [`Guarded`] reads decrypted bytes; the TLS facts are
/// passed through so the session digest (and `X-Forwarded-Proto`) sees them.
impl Ssl for Guarded {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Guarded {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 33\r\nRetry-After: 1\r\nConnection: close\r\n\r\nswitchyard: too many connections\n";

/// The proxy service's application: counts open client connections, refuses the ones past
/// `[limits] max_connections` with a canned 503, and hands the others, wrapped in
/// [`Guarded`], to pingora's HTTP proxy.
///
/// pingora's own `ConnectionFilter` is behind a cargo feature and sees only the address, not
/// when a connection ends, so it cannot count; this wrapper is the one place that sees a
/// connection's whole life (pingora runs every keep-alive request of a connection inside one
/// `process_new`).
pub struct FrontDoor<P: ProxyHttp> {
    proxy: Arc<HttpProxy<P>>,
    limits: LimitsConfig,
    open: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl<P: ProxyHttp> FrontDoor<P> {
    pub fn new(proxy: HttpProxy<P>, limits: LimitsConfig, metrics: Arc<Metrics>) -> FrontDoor<P> {
        FrontDoor {
            proxy: Arc::new(proxy),
            limits,
            open: Arc::new(AtomicUsize::new(0)),
            metrics,
        }
    }

    /// Open client connections right now.
    pub fn open(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }
}

/// One counted connection; dropping it frees the slot.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a slot unless `max` are taken.
fn take_slot(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
    open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        (n < max).then_some(n + 1)
    })
    .ok()
    .map(|_| Slot(open.clone()))
}

async fn refuse(mut stream: Stream) {
    let write = async {
        stream.write_all(TOO_MANY).await?;
        stream.flush().await
    };
    if tokio::time::timeout(Duration::from_secs(1), write)
        .await
        .is_err()
    {
        return;
    }
    Shutdown::shutdown(&mut *stream).await;
    // Read what the client already sent: closing with unread bytes would reset the
    // connection, and a reset can destroy the 503 before the client reads it.
    let _ = tokio::time::timeout(Duration::from_millis(50), async {
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[async_trait]
impl<P> ServerApp for FrontDoor<P>
where
    P: ProxyHttp + Send + Sync + 'static,
    P::CTX: Send + Sync,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(_slot) = take_slot(&self.open, self.limits.max_connections) else {
            tracing::debug!("refused a connection: [limits] max_connections reached");
            self.metrics.refused("too_many_connections");
            refuse(stream).await;
            return None;
        };
        // Counted until the connection ends, however it ends (the guard drops).
        let _counted = Open::new(self.metrics.client_connections());
        let guarded: Stream = Box::new(Guarded::new(stream, &self.limits));
        self.proxy.process_new(guarded, shutdown).await
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(lines: &[(&str, &str)]) -> (RequestHeader, Vec<u8>) {
        let mut r = RequestHeader::build("POST", b"/", None).expect("request");
        let mut raw = b"POST / HTTP/1.1\r\n".to_vec();
        for (k, v) in lines {
            r.append_header(k.to_string(), *v).expect("header");
            raw.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        (r, raw)
    }

    fn check(lines: &[(&str, &str)]) -> Result<(), Refusal> {
        let (r, raw) = req(lines);
        check_request(&r, &raw, &LimitsConfig::default())
    }

    #[test]
    fn plain_requests_pass() {
        assert_eq!(check(&[("host", "a")]), Ok(()));
        assert_eq!(check(&[("host", "a"), ("content-length", "12")]), Ok(()));
        assert_eq!(
            check(&[("host", "a"), ("transfer-encoding", "chunked")]),
            Ok(())
        );
        assert_eq!(
            check(&[("host", "a"), ("Transfer-Encoding", " Chunked ")]),
            Ok(())
        );
    }

    #[test]
    fn framing_that_a_backend_could_read_differently_is_refused() {
        let bad = |lines: &[(&str, &str)]| match check(lines) {
            Err(Refusal::BadRequest(_)) => {}
            other => panic!("{lines:?}: {other:?}"),
        };
        bad(&[("host", "a"), ("transfer-encoding", "gzip, chunked")]);
        bad(&[
            ("host", "a"),
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ]);
        bad(&[("host", "a"), ("transfer-encoding", "identity")]);
        bad(&[
            ("host", "a"),
            ("content-length", "4"),
            ("content-length", "4"),
        ]);
        bad(&[("host", "a"), ("content-length", "4, 4")]);
        bad(&[("host", "a"), ("content-length", "+4")]);
        bad(&[("host", "a"), ("content-length", "")]);
        bad(&[]);
    }

    #[test]
    fn content_length_with_transfer_encoding_is_found_in_the_raw_header() {
        // pingora removes Content-Length from the parsed map; the raw block still has it.
        let (mut r, raw) = req(&[
            ("host", "a"),
            ("Content-Length", "4"),
            ("transfer-encoding", "chunked"),
        ]);
        r.remove_header("content-length");
        assert_eq!(
            check_request(&r, &raw, &LimitsConfig::default()),
            Err(Refusal::BadRequest(
                "both Content-Length and Transfer-Encoding"
            ))
        );
        assert!(has_header_line(
            b"GET / HTTP/1.1\nCONTENT-LENGTH:1\n",
            b"content-length"
        ));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nX-A: o\nB: x\r\n\r\n"));
        assert!(has_bare_lf(b"\n"));
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!has_header_line(
            b"GET /content-length: HTTP/1.1\r\nx-content-length: 1\r\n",
            b"content-length"
        ));
    }

    #[test]
    fn limits_give_431() {
        let limits = LimitsConfig {
            max_headers: 3,
            max_header_bytes: 64,
            ..LimitsConfig::default()
        };
        let (r, raw) = req(&[("host", "a"), ("a", "1"), ("b", "2"), ("c", "3")]);
        assert_eq!(
            check_request(&r, &raw, &limits).map_err(Refusal::status),
            Err(431)
        );
        let long = "x".repeat(60);
        let (r, raw) = req(&[("host", "a"), ("a", long.as_str())]);
        assert_eq!(
            check_request(&r, &raw, &limits).map_err(Refusal::status),
            Err(431)
        );
        let (r, raw) = req(&[("host", "a")]);
        assert_eq!(check_request(&r, &raw, &limits), Ok(()));
    }

    #[test]
    fn slots_are_bounded_and_released() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = take_slot(&open, 2).expect("first");
        let b = take_slot(&open, 2).expect("second");
        assert!(take_slot(&open, 2).is_none());
        drop(a);
        assert!(take_slot(&open, 2).is_some());
        drop(b);
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }
}
