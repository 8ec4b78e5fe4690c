//! The HTTP listener on `[admin] metrics`: `/metrics` for Prometheus, the read-only status
//! page (`/`), its state for scripts (`/status.json`), its live feed (`/events`,
//! Server-Sent Events), and for load balancers `/live` and `/ready` (what "ready" means is
//! app.rs's decision). Which path is what is decided by [`route`] alone.
//!
//! Why a pingora [`HttpServerApp`] and not pingora's one-response `ServeHttp` or a hyper server
//! of our own: an event stream needs to write the response body chunk by chunk for as long as
//! the page is open, which `ServeHttp` cannot; a hyper server would be a second listener
//! stack outside pingora, and would miss pingora's socket handover on a binary upgrade
//! (`run --upgrade` gets this listener's socket from the old process like the front door's).
//! `HttpServerApp` gets the parsed request and writes the header and body chunks itself
//! through the same `ServerSession`, with chunked framing and a flush per chunk.
//!
//! An event stream never slows a switch down and never holds more than a bounded amount of
//! memory: it reads the controller's broadcast feed (a watcher that falls behind skips ahead
//! to a fresh snapshot), every write has a deadline (a client that stops reading is dropped),
//! and at most [`MAX_EVENT_STREAMS`] are open at once. This module serves; it changes
//! nothing: none of these paths has a way to send a command.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::app::App;
use crate::status::snapshot::Snapshot;
use crate::status::PAGE;

/// Open `/events` streams at most; one more gets a 503. Each costs a task, a socket and at
/// most one snapshot in flight.
pub const MAX_EVENT_STREAMS: usize = 32;
/// A full state snapshot this often on every stream, so a page that connected (or skipped
/// ahead) mid-switch is current within this time, and a dead connection is noticed.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
/// A client that does not take a chunk within this time is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// What an `EventSource` waits before it reconnects after the stream drops.
const RETRY_MS: u64 = 2000;

/// What a request on the admin listener asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Page,
    StatusJson,
    Events,
    Live,
    Ready,
    NotFound,
    MethodNotAllowed,
}

/// The one place that maps paths to what serves them.
pub fn route(method: &Method, path: &str) -> Route {
    let r = match path {
        "/metrics" => Route::Metrics,
        "/" | "/index.html" => Route::Page,
        "/status.json" => Route::StatusJson,
        "/events" => Route::Events,
        "/live" => Route::Live,
        "/ready" => Route::Ready,
        _ => return Route::NotFound,
    };
    let head_ok = r != Route::Events;
    if method == Method::GET || (head_ok && method == Method::HEAD) {
        r
    } else {
        Route::MethodNotAllowed
    }
}

/// One Server-Sent Events message; `data` must be one line (compact JSON is).
pub fn sse(event: &str, data: &str) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

pub struct AdminHttp {
    app: Arc<App>,
    streams: AtomicUsize,
}

impl AdminHttp {
    pub fn new(app: Arc<App>) -> AdminHttp {
        AdminHttp {
            app,
            streams: AtomicUsize::new(0),
        }
    }
}

/// A slot among [`MAX_EVENT_STREAMS`], given back on drop.
struct StreamSlot<'a>(&'a AtomicUsize);

impl Drop for StreamSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn take_slot(n: &AtomicUsize) -> Option<StreamSlot<'_>> {
    n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        (v < MAX_EVENT_STREAMS).then_some(v + 1)
    })
    .ok()
    .map(|_| StreamSlot(n))
}

/// A response header; `None` length means a streamed (chunked) body.
fn header(
    status: u16,
    ctype: &str,
    len: Option<usize>,
    extra: &[(&'static str, &str)],
) -> Option<ResponseHeader> {
    let mut h = ResponseHeader::build(status, Some(4 + extra.len())).ok()?;
    h.insert_header("content-type", ctype).ok()?;
    h.insert_header("cache-control", "no-store").ok()?;
    match len {
        Some(n) => h.insert_header("content-length", n.to_string()).ok()?,
        None => h.insert_header("transfer-encoding", "chunked").ok()?,
    }
    for (k, v) in extra {
        h.insert_header(*k, *v).ok()?;
    }
    Some(h)
}

/// The page may run only its own inline script and style and talk only to this listener.
const PAGE_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

impl AdminHttp {
    /// Every route but the event stream: one whole response.
    fn respond(
        &self,
        r: Route,
    ) -> (
        u16,
        &'static str,
        Vec<u8>,
        &'static [(&'static str, &'static str)],
    ) {
        match r {
            Route::Metrics => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.app.metrics.render(),
                &[],
            ),
            Route::Page => (
                200,
                "text/html; charset=utf-8",
                PAGE.as_bytes().to_vec(),
                PAGE_HEADERS,
            ),
            Route::StatusJson => (
                200,
                "application/json",
                Snapshot::of(&self.app).to_json().into_bytes(),
                &[],
            ),
            Route::Live => (200, "text/plain; charset=utf-8", b"live\n".to_vec(), &[]),
            Route::Ready => match self.app.readiness() {
                Ok(()) => (200, "text/plain; charset=utf-8", b"ready\n".to_vec(), &[]),
                Err(why) => (
                    503,
                    "text/plain; charset=utf-8",
                    format!("not ready: {why}\n").into_bytes(),
                    &[],
                ),
            },
            Route::MethodNotAllowed => (
                405,
                "text/plain; charset=utf-8",
                b"method not allowed: this listener is read-only (GET)\n".to_vec(),
                &[("allow", "GET, HEAD")],
            ),
            Route::NotFound | Route::Events => (
                404,
                "text/plain; charset=utf-8",
                b"not found: /metrics, / (status page), /status.json, /events, /live, /ready\n"
                    .to_vec(),
                &[],
            ),
        }
    }

    async fn whole(&self, http: &mut ServerSession, r: Route) -> Option<()> {
        let (status, ctype, body, extra) = self.respond(r);
        let h = header(status, ctype, Some(body.len()), extra)?;
        http.write_response_header(Box::new(h)).await.ok()?;
        if http.req_header().method != Method::HEAD {
            http.write_response_body(body.into(), true).await.ok()?;
        }
        Some(())
    }

    /// `GET /events` until the client goes away or the process shuts down.
    async fn events(&self, http: &mut ServerSession, shutdown: &ShutdownWatch) -> Option<()> {
        let Some(_slot) = take_slot(&self.streams) else {
            return unavailable(
                http,
                format!("too many status page streams open (max {MAX_EVENT_STREAMS}); close some tabs\n"),
            )
            .await;
        };
        // Subscribed before the first snapshot, so nothing between the two is missed.
        let mut feed = self.app.controller.feed.subscribe();
        let mut shutdown = shutdown.clone();
        if *shutdown.borrow() {
            // The page retries, and reaches the new process after a restart or an upgrade.
            return unavailable(http, "switchyard is shutting down\n".into()).await;
        }
        // `x-accel-buffering: no` keeps an nginx in front from holding events back.
        let h = header(
            200,
            "text/event-stream",
            None,
            &[("x-accel-buffering", "no")],
        )?;
        http.set_keepalive(None);
        http.set_write_timeout(Some(WRITE_TIMEOUT));
        http.write_response_header(Box::new(h)).await.ok()?;
        let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut chunk = format!("retry: {RETRY_MS}\n\n");
        loop {
            if !chunk.is_empty() {
                http.write_response_body(Bytes::from(chunk), false)
                    .await
                    .ok()?;
            }
            chunk = String::new();
            tokio::select! {
                r = feed.recv() => match r {
                    Ok(e) => {
                        chunk.push_str(&sse("progress", &json(&*e)));
                        drain_ready(&mut feed, &mut chunk);
                    }
                    // Fell behind: skip ahead; the snapshot below says where things are now.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            // Every wake-up ends with the state as it is now: a line can start or end a
            // phase, and a page must not wait for the next tick to show it.
            chunk.push_str(&sse("snapshot", &Snapshot::of(&self.app).to_json()));
            tick.reset();
        }
        http.write_response_body(Bytes::new(), true).await.ok()
    }
}

/// A 503 the page's retry loop understands.
async fn unavailable(http: &mut ServerSession, body: String) -> Option<()> {
    let h = header(
        503,
        "text/plain; charset=utf-8",
        Some(body.len()),
        &[("retry-after", "10")],
    )?;
    http.set_keepalive(None);
    http.write_response_header(Box::new(h)).await.ok()?;
    http.write_response_body(body.into(), true).await.ok()
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Every event already waiting, in one chunk; a lag just skips.
fn drain_ready(
    feed: &mut tokio::sync::broadcast::Receiver<Arc<crate::status::feed::Event>>,
    chunk: &mut String,
) {
    loop {
        match feed.try_recv() {
            Ok(e) => chunk.push_str(&sse("progress", &json(&*e))),
            Err(TryRecvError::Lagged(_)) => continue,
            Err(_) => return,
        }
    }
}

#[async_trait]
impl HttpServerApp for AdminHttp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !http.read_request().await.ok()? {
            return None;
        }
        let r = route(&http.req_header().method, http.req_header().uri.path());
        if r == Route::Events {
            self.events(&mut http, shutdown).await;
            return None;
        }
        http.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        self.whole(&mut http, r).await?;
        let settings = HttpPersistentSettings::for_session(&http);
        let reusable = http.finish().await.ok()??;
        Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let get = Method::GET;
        assert_eq!(route(&get, "/metrics"), Route::Metrics);
        assert_eq!(route(&get, "/"), Route::Page);
        assert_eq!(route(&Method::HEAD, "/"), Route::Page);
        assert_eq!(route(&get, "/status.json"), Route::StatusJson);
        assert_eq!(route(&get, "/events"), Route::Events);
        assert_eq!(route(&get, "/ready"), Route::Ready);
        assert_eq!(route(&Method::HEAD, "/live"), Route::Live);
        assert_eq!(route(&Method::HEAD, "/events"), Route::MethodNotAllowed);
        assert_eq!(route(&Method::POST, "/"), Route::MethodNotAllowed);
        assert_eq!(route(&get, "/switch"), Route::NotFound);
        assert_eq!(route(&Method::POST, "/switch"), Route::NotFound);
    }

    #[test]
    fn stream_slots_are_capped_and_given_back() {
        let n = AtomicUsize::new(0);
        let slots: Vec<_> = (0..MAX_EVENT_STREAMS).map(|_| take_slot(&n)).collect();
        assert!(slots.iter().all(Option::is_some));
        assert!(take_slot(&n).is_none(), "one over the cap");
        drop(slots);
        assert_eq!(n.load(Ordering::Relaxed), 0);
        assert!(take_slot(&n).is_some());
    }

    #[test]
    fn sse_framing() {
        assert_eq!(
            sse("progress", "{\"a\":1}"),
            "event: progress\ndata: {\"a\":1}\n\n"
        );
    }
}
