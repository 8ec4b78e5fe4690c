//! Built-in demo backend used by `switchyard demo` and by the end-to-end tests.
//!
//! Owns: a tiny HTTP/1.1 + WebSocket server (one per "color") that answers
//! with its name, exposes a toggleable readiness endpoint, can be told to fail
//! or to be slow or to send large bodies, counts what it receives, and can be
//! killed abruptly (listener and every open connection dropped at once) so
//! tests can simulate a crashed backend.
//!
//! Does not own: anything about proxying, routing, health-check policy or
//! configuration. It knows nothing about switchyard's other modules (bar the
//! generic `sync::lock`); it is a
//! stand-in for a real upstream application and nothing more.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::sync::lock;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const HEALTH_PATH: &str = "/health/ready";
const MAX_SLEEP_MS: u64 = 60_000;
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// 0 is not a valid HTTP status, so it can mean "no override" in an atomic.
const NO_STATUS_OVERRIDE: u32 = 0;

/// Shared, mutable state of one demo application. Everything is atomic or
/// behind a short-lived lock so connection tasks never contend for long.
struct State {
    name: String,
    color: HeaderValue,
    healthy: AtomicBool,
    status: AtomicU32,
    requests: AtomicU64,
    app_requests: AtomicU64,
    last_headers: Mutex<Vec<(String, String)>>,
}

/// A demo application; the type is the entry point (`DemoApp::start`) and the
/// cheap-to-clone state shared by all of its connection tasks.
#[derive(Clone)]
pub struct DemoApp {
    state: Arc<State>,
}

/// Control handle for a running [`DemoApp`]. Cloning is cheap. Dropping it
/// deliberately leaves the server running: tests often let handles fall out
/// of scope while the runtime is still needed, and a surprise shutdown there
/// would be far harder to debug than an explicit `stop()`.
#[derive(Clone)]
pub struct DemoHandle {
    app: DemoApp,
    addr: SocketAddr,
    shutdown: Arc<watch::Sender<bool>>,
    /// Every task (acceptor, connections, websockets) holds a clone of the
    /// matching sender; `recv()` returning `None` proves they have all exited,
    /// i.e. every socket has been dropped.
    done: Arc<tokio::sync::Mutex<Option<mpsc::Receiver<()>>>>,
    acceptor: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// Everything a connection (and the websocket tasks it spawns) needs to obey
/// `stop()` and to let `stop()` know when it has finished.
#[derive(Clone)]
struct TaskCtx {
    app: DemoApp,
    shutdown: watch::Receiver<bool>,
    /// Never sent on; its only job is to be dropped when the task ends.
    _alive: mpsc::Sender<()>,
}

type Body = Full<Bytes>;

impl DemoApp {
    /// Binds `addr` (use "127.0.0.1:0" for a free port) and serves until stopped.
    pub async fn start(name: &str, addr: SocketAddr) -> std::io::Result<DemoHandle> {
        let color = HeaderValue::from_str(name).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("demo app name {name:?} is not a valid header value: {e}"),
            )
        })?;
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let app = DemoApp {
            state: Arc::new(State {
                name: name.to_string(),
                color,
                healthy: AtomicBool::new(true),
                status: AtomicU32::new(NO_STATUS_OVERRIDE),
                requests: AtomicU64::new(0),
                app_requests: AtomicU64::new(0),
                last_headers: Mutex::new(Vec::new()),
            }),
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        // Capacity is irrelevant: nobody ever sends, the channel only tracks
        // how many senders are still alive.
        let (alive_tx, alive_rx) = mpsc::channel(1);
        let ctx = TaskCtx {
            app: app.clone(),
            shutdown: shutdown_rx,
            _alive: alive_tx,
        };
        let acceptor = tokio::spawn(accept_loop(listener, ctx));
        tracing::debug!(name, %local, "demo app listening");
        Ok(DemoHandle {
            app,
            addr: local,
            shutdown: Arc::new(shutdown_tx),
            done: Arc::new(tokio::sync::Mutex::new(Some(alive_rx))),
            acceptor: Arc::new(Mutex::new(Some(acceptor))),
        })
    }
}

impl DemoHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.app.state.name
    }

    /// /health/ready answers 200 when true, 503 when false (default true).
    pub fn set_healthy(&self, healthy: bool) {
        self.app.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// When Some(code), every non-health request is answered with that status
    /// (e.g. 500) instead of 200. WebSocket upgrades still get 101.
    pub fn set_status(&self, code: Option<u16>) {
        let raw = code.map_or(NO_STATUS_OVERRIDE, u32::from);
        self.app.state.status.store(raw, Ordering::SeqCst);
    }

    /// Number of HTTP requests received (all paths, including health checks, upgrades).
    pub fn requests(&self) -> u64 {
        self.app.state.requests.load(Ordering::SeqCst)
    }

    /// Number of requests received on paths other than the health path.
    pub fn app_requests(&self) -> u64 {
        self.app.state.app_requests.load(Ordering::SeqCst)
    }

    /// Headers of the last non-health request (lower-case names).
    pub fn last_headers(&self) -> Vec<(String, String)> {
        lock(&self.app.state.last_headers).clone()
    }

    /// Stops accepting AND closes every open connection (including
    /// WebSockets) at once, like a killed process; the port is freed.
    /// Awaits until done. Calling it again is a no-op.
    pub async fn stop(&self) {
        self.shutdown.send_replace(true);
        let acceptor = lock(&self.acceptor).take();
        if let Some(acceptor) = acceptor {
            // The acceptor drops the listener before it exits, so once this
            // returns the port is free even if some connection lingers.
            if let Err(e) = acceptor.await {
                tracing::debug!(error = %e, "demo acceptor task ended abnormally");
            }
        }
        let mut done = self.done.lock().await;
        if let Some(rx) = done.as_mut() {
            // Returns None only once every task holding a sender is gone.
            while rx.recv().await.is_some() {}
        }
        *done = None;
        tracing::debug!(name = %self.app.state.name, "demo app stopped");
    }
}

/// Resolves once `stop()` has been called. If the sender is gone without a
/// stop (cannot happen while a handle exists), keep running rather than
/// treating it as a kill: dropping handles must not stop the server.
async fn stopped(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|stopped| *stopped).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn accept_loop(listener: TcpListener, ctx: TaskCtx) {
    let stop = stopped(ctx.shutdown.clone());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    tokio::spawn(serve_connection(stream, peer, ctx.clone()));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "demo accept failed");
                    // Errors such as EMFILE repeat immediately; back off a
                    // little instead of spinning a core.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    drop(ctx);
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, ctx: TaskCtx) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, %peer, "demo set_nodelay failed");
    }
    let svc_ctx = ctx.clone();
    let service = service_fn(move |req| handle(req, svc_ctx.clone()));
    let mut builder = http1::Builder::new();
    // No header-read timeout: the proxy keeps pooled idle upstream
    // connections, and closing them behind its back would make tests flaky.
    builder.keep_alive(true).header_read_timeout(None);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    // Dropping the connection future (on stop) drops the socket, including
    // any in-flight request such as a long sleep_ms.
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::debug!(error = %e, %peer, "demo connection error");
            }
        }
        _ = stopped(ctx.shutdown.clone()) => {}
    }
}

async fn handle(req: Request<Incoming>, ctx: TaskCtx) -> Result<Response<Body>, Infallible> {
    let state = &ctx.app.state;
    state.requests.fetch_add(1, Ordering::SeqCst);

    if req.uri().path() == HEALTH_PATH {
        let (status, body) = if state.healthy.load(Ordering::SeqCst) {
            (StatusCode::OK, "ok\n")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
        };
        return Ok(respond(state, status, Bytes::from_static(body.as_bytes())));
    }

    state.app_requests.fetch_add(1, Ordering::SeqCst);
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    *lock(&state.last_headers) = headers;

    if is_websocket_upgrade(&req) {
        return Ok(upgrade_websocket(req, ctx.clone()));
    }

    let query = req.uri().query().unwrap_or("").to_string();
    let mut body = req.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    received += data.len() as u64;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "demo failed reading request body");
                return Ok(respond(
                    state,
                    StatusCode::BAD_REQUEST,
                    Bytes::from_static(b"bad request body\n"),
                ));
            }
        }
    }
    tracing::debug!(received, "demo request body read");

    if let Some(ms) = query_u64(&query, "sleep_ms") {
        tokio::time::sleep(Duration::from_millis(ms.min(MAX_SLEEP_MS))).await;
    }

    let status = match state.status.load(Ordering::SeqCst) {
        NO_STATUS_OVERRIDE => StatusCode::OK,
        raw => u16::try_from(raw)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let body = match query_u64(&query, "bytes") {
        Some(n) => {
            let n = usize::try_from(n)
                .unwrap_or(MAX_BODY_BYTES)
                .min(MAX_BODY_BYTES);
            Bytes::from(vec![b'x'; n])
        }
        None => Bytes::from(format!("{}\n", state.name)),
    };
    Ok(respond(state, status, body))
}

fn respond(state: &State, status: StatusCode, body: Bytes) -> Response<Body> {
    let len = body.len();
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert("x-color", state.color.clone());
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Returns the first value of `key` in a query string parsed as a number;
/// malformed values are ignored rather than rejected, as a demo convenience.
fn query_u64(query: &str, key: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn upgrade_websocket(mut req: Request<Incoming>, ctx: TaskCtx) -> Response<Body> {
    let state = &ctx.app.state;
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return respond(
            state,
            StatusCode::BAD_REQUEST,
            Bytes::from_static(b"missing sec-websocket-key\n"),
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        // derive_accept_key yields base64, so this is unreachable in practice.
        return respond(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(b"bad accept key\n"),
        );
    };
    // Must be taken before the response is returned: hyper hands over the
    // raw IO only after the 101 has been written.
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_ctx = ctx.clone();
    // The websocket outlives the HTTP connection task (hyper finishes that
    // future once it hands over the IO), so it needs its own task that also
    // obeys stop() and is tracked via `_alive`.
    tokio::spawn(async move {
        let stop = stopped(task_ctx.shutdown.clone());
        tokio::select! {
            _ = stop => {}
            _ = async {
                match on_upgrade.await {
                    Ok(upgraded) => run_websocket(upgraded, &task_ctx.app.state.name).await,
                    Err(e) => tracing::debug!(error = %e, "demo websocket upgrade failed"),
                }
            } => {}
        }
        drop(task_ctx);
    });

    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    h.insert("x-color", state.color.clone());
    resp
}

async fn run_websocket(upgraded: hyper::upgrade::Upgraded, name: &str) {
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    if let Err(e) = ws.send(Message::Text(format!("hello from {name}"))).await {
        tracing::debug!(error = %e, "demo websocket greeting failed");
        return;
    }
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                if let Err(e) = ws.send(msg).await {
                    tracing::debug!(error = %e, "demo websocket echo failed");
                    return;
                }
            }
            // tungstenite answers pings and close frames itself while reading.
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "demo websocket read failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start() -> DemoHandle {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal addr");
        DemoApp::start("blue", addr).await.expect("start demo")
    }

    /// Sends one request with `Connection: close` and returns (status, lower-cased head, body).
    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nX-Probe: 1\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8(buf).expect("utf8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head/body split");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    #[tokio::test]
    async fn get_root_answers_with_name_and_color() {
        let h = start().await;
        assert_eq!(h.name(), "blue");
        let (status, head, body) = get(h.addr(), "/").await;
        assert_eq!(status, 200);
        assert_eq!(body, "blue\n");
        assert!(head.contains("x-color: blue"), "{head}");
        assert!(head.contains("content-length: 5"), "{head}");
        assert_eq!(h.requests(), 1);
        assert_eq!(h.app_requests(), 1);
        assert!(h
            .last_headers()
            .iter()
            .any(|(k, v)| k == "x-probe" && v == "1"));
        h.stop().await;
    }

    #[tokio::test]
    async fn health_toggles_and_is_not_an_app_request() {
        let h = start().await;
        let (status, head, body) = get(h.addr(), "/health/ready").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        assert!(head.contains("x-color: blue"));
        h.set_healthy(false);
        let (status, _, body) = get(h.addr(), "/health/ready").await;
        assert_eq!((status, body.as_str()), (503, "unhealthy\n"));
        assert_eq!(h.requests(), 2);
        assert_eq!(h.app_requests(), 0);
        h.stop().await;
    }

    #[tokio::test]
    async fn status_override_and_bytes() {
        let h = start().await;
        h.set_status(Some(500));
        let (status, _, body) = get(h.addr(), "/x").await;
        assert_eq!((status, body.as_str()), (500, "blue\n"));
        // Health is unaffected by the override.
        let (status, _, _) = get(h.addr(), "/health/ready").await;
        assert_eq!(status, 200);
        h.set_status(None);
        let (status, _, body) = get(h.addr(), "/big?bytes=100000").await;
        assert_eq!(status, 200);
        assert_eq!(body.len(), 100_000);
        assert!(body.bytes().all(|b| b == b'x'));
        h.stop().await;
    }

    #[tokio::test]
    async fn sleep_ms_delays_answer() {
        let h = start().await;
        let t0 = std::time::Instant::now();
        let (status, _, body) = get(h.addr(), "/slow?a=b&sleep_ms=200").await;
        assert!(t0.elapsed() >= Duration::from_millis(200));
        assert_eq!((status, body.as_str()), (200, "blue\n"));
        h.stop().await;
    }

    #[tokio::test]
    async fn keep_alive_then_post_body() {
        let h = start().await;
        let mut s = TcpStream::connect(h.addr()).await.expect("connect");
        let req = "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd\
                   GET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8(buf).expect("utf8");
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
        assert_eq!(h.app_requests(), 2);
        h.stop().await;
    }

    async fn ws_connect(addr: SocketAddr) -> WebSocketStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (ws, resp) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp)
            .await
            .expect("ws handshake");
        assert_eq!(
            resp.headers().get("x-color").and_then(|v| v.to_str().ok()),
            Some("blue")
        );
        ws
    }

    #[tokio::test]
    async fn websocket_greets_and_echoes() {
        let h = start().await;
        let mut ws = ws_connect(h.addr()).await;
        let first = ws.next().await.expect("greeting").expect("greeting ok");
        assert_eq!(first, Message::Text("hello from blue".into()));
        ws.send(Message::Text("ping me".into()))
            .await
            .expect("send");
        let echo = ws.next().await.expect("echo").expect("echo ok");
        assert_eq!(echo, Message::Text("ping me".into()));
        ws.send(Message::Binary(vec![1, 2, 3])).await.expect("send");
        let echo = ws.next().await.expect("echo").expect("echo ok");
        assert_eq!(echo, Message::Binary(vec![1, 2, 3]));
        ws.close(None).await.expect("close");
        assert_eq!(h.app_requests(), 1);
        h.stop().await;
    }

    #[tokio::test]
    async fn websocket_upgrade_on_reused_connection() {
        let h = start().await;
        let mut s = TcpStream::connect(h.addr()).await.expect("connect");
        s.write_all(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.ends_with(b"blue\n") {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", h.addr()), s)
            .await
            .expect("upgrade on second request");
        let first = ws.next().await.expect("greeting").expect("greeting ok");
        assert_eq!(first, Message::Text("hello from blue".into()));
        h.stop().await;
    }

    #[tokio::test]
    async fn stop_refuses_new_connections_and_kills_open_ones() {
        let h = start().await;
        let addr = h.addr();
        let mut ws = ws_connect(addr).await;
        let _ = ws.next().await.expect("greeting").expect("greeting ok");

        // An idle keep-alive connection must be closed too.
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut buf = vec![0u8; 4096];
        let n = idle.read(&mut buf).await.expect("read");
        assert!(n > 0);

        // And an in-flight slow request.
        let slow = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(b"GET /slow?sleep_ms=60000 HTTP/1.1\r\nHost: t\r\n\r\n")
                .await?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.map(|_| buf)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;

        tokio::time::timeout(Duration::from_secs(5), h.stop())
            .await
            .expect("stop finishes promptly");
        h.stop().await; // idempotent

        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener still open"
        );
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("websocket noticed the kill");
        assert!(!matches!(
            next,
            Some(Ok(Message::Text(_) | Message::Binary(_)))
        ));
        let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
            .await
            .expect("idle conn noticed the kill");
        assert!(matches!(n, Ok(0) | Err(_)));
        let slow = tokio::time::timeout(Duration::from_secs(5), slow)
            .await
            .expect("slow request ended");
        // Either a reset or a clean EOF, but never a response.
        if let Ok(bytes) = slow.expect("slow task") {
            assert!(bytes.is_empty(), "got a response");
        }
    }
}
