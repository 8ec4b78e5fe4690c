//! Active health checks of every server of both colors, as a background service.
//!
//! Each backend gets its own probe loop (`GET [health] path`, 2xx passes; anything else,
//! a timeout, a refused or reset connection fails). Consecutive results go through a pure
//! rise/fall function; the verdict is published in the backend's atomic flag that the data
//! plane and the switch gate read without locks, and in `switchyard_server_healthy`. This
//! module does not decide whether a switch may proceed: the gate in switch.rs does.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::net::TcpStream;

use crate::app::App;
use crate::config::HealthConfig;
use crate::routing::{Backend, Health};

/// Consecutive results of one backend's probes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    pub passes: u32,
    pub fails: u32,
}

/// The rise/fall rule: `rise` passes in a row make a server healthy, `fall` failures in a
/// row make it unhealthy; anything in between keeps the last verdict.
pub fn observe(state: Health, streak: &mut Streak, pass: bool, rise: u32, fall: u32) -> Health {
    if pass {
        streak.passes = streak.passes.saturating_add(1);
        streak.fails = 0;
        if streak.passes >= rise {
            return Health::Healthy;
        }
    } else {
        streak.fails = streak.fails.saturating_add(1);
        streak.passes = 0;
        if streak.fails >= fall {
            return Health::Unhealthy;
        }
    }
    state
}

/// One probe: Ok on a 2xx answer, else what went wrong in words an operator can act on.
pub async fn probe(backend: &Backend, timeout: Duration) -> Result<u16, String> {
    let addr = backend.addr;
    let path = backend.health_path.as_str();
    let work = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = http::Request::builder()
            .uri(path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::USER_AGENT, "switchyard-health")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let resp = if backend.h2 {
            send_h2(stream, req).await?
        } else {
            send_h1(stream, req).await?
        };
        let code = resp.status().as_u16();
        if resp.status().is_success() {
            Ok(code)
        } else {
            Err(format!("GET {path} answered {code}"))
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

type Probe = http::Request<Empty<Bytes>>;

/// One probe over HTTP/1.1 on its own connection (closed after it).
async fn send_h1(stream: TcpStream, mut req: Probe) -> Result<http::Response<Incoming>, String> {
    req.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let r = sender.send_request(req).await;
    conn.abort();
    r.map_err(|e| format!("request: {e}"))
}

/// One probe over HTTP/2 with prior knowledge (h2c), as the data path speaks to a gRPC
/// route's servers; a gRPC server answers a plain GET with 200 (and a grpc-status).
async fn send_h2(stream: TcpStream, mut req: Probe) -> Result<http::Response<Incoming>, String> {
    // HTTP/2 carries scheme and authority as pseudo-headers: the URI must be absolute.
    let host = req
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_string))
        .unwrap_or_default();
    *req.uri_mut() = format!("http://{host}{}", req.uri())
        .parse()
        .map_err(|e| format!("request: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("h2c handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let r = sender.send_request(req).await;
    conn.abort();
    r.map_err(|e| format!("request: {e}"))
}

/// Probes one backend forever, publishing each verdict.
async fn check_loop(app: Arc<App>, backend: Arc<Backend>, cfg: HealthConfig) {
    let mut streak = Streak::default();
    let server = backend.addr.to_string();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = probe(&backend, cfg.timeout).await;
        let before = backend.health();
        let after = observe(before, &mut streak, result.is_ok(), cfg.rise, cfg.fall);
        backend.set_health(after);
        backend.set_detail(match &result {
            Ok(code) => format!("last check answered {code}"),
            Err(e) => e.clone(),
        });
        app.metrics
            .set_server_healthy(backend.color, &server, after == Health::Healthy);
        if before != after {
            match &result {
                Ok(_) => {
                    tracing::info!(color = %backend.color, server = %server, "server is healthy")
                }
                Err(e) => {
                    tracing::warn!(color = %backend.color, server = %server, error = %e, "server is unhealthy")
                }
            }
        }
    }
}

/// The pingora background service that runs one probe loop per backend.
pub struct HealthChecker {
    pub app: Arc<App>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = tokio::task::JoinSet::new();
        for b in self.app.router.backends() {
            self.app
                .metrics
                .set_server_healthy(b.color, &b.addr.to_string(), false);
            tasks.spawn(check_loop(
                self.app.clone(),
                b.clone(),
                self.app.cfg.health.clone(),
            ));
        }
        let _ = shutdown.changed().await;
        tasks.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let mut s = Streak::default();
        let mut h = Health::Unknown;
        h = observe(h, &mut s, true, 2, 3);
        assert_eq!(h, Health::Unknown, "one pass is not enough with rise 2");
        h = observe(h, &mut s, true, 2, 3);
        assert_eq!(h, Health::Healthy);
        h = observe(h, &mut s, false, 2, 3);
        h = observe(h, &mut s, false, 2, 3);
        assert_eq!(
            h,
            Health::Healthy,
            "two failures are not enough with fall 3"
        );
        h = observe(h, &mut s, true, 2, 3);
        h = observe(h, &mut s, false, 2, 3);
        h = observe(h, &mut s, false, 2, 3);
        assert_eq!(h, Health::Healthy, "a pass resets the failure streak");
        h = observe(h, &mut s, false, 2, 3);
        assert_eq!(h, Health::Unhealthy);
        h = observe(h, &mut s, true, 2, 3);
        assert_eq!(h, Health::Unhealthy);
        h = observe(h, &mut s, true, 2, 3);
        assert_eq!(h, Health::Healthy);
    }

    #[test]
    fn unknown_falls_to_unhealthy() {
        let mut s = Streak::default();
        assert_eq!(
            observe(Health::Unknown, &mut s, false, 1, 1),
            Health::Unhealthy
        );
    }

    #[tokio::test]
    async fn probe_reports_refused_connections() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        let b = Backend::new(addr, crate::routing::Color::Green, "/health/ready".into());
        let e = probe(&b, Duration::from_secs(1))
            .await
            .expect_err("refused");
        assert!(e.starts_with("connect:"), "{e}");
    }
}
