//! HTTP/2 to clients (`[listen] http2 = true`) and gRPC routes (`[[route]] grpc = true`).
//!
//! Owns the hand-off of a client connection that chose HTTP/2 (ALPN `h2` after the TLS
//! handshake, or the h2c connection preface on the plain listener) to pingora-proxy's
//! HTTP/2 server path, with the h2 crate's limits set from `[limits]` ([`H2Front`]); the
//! recognition of the preface ([`preface`]); the per-stream proxy ([`gateway`]) and what a
//! gRPC stream is ended with at a drain deadline ([`grpc`]).
//!
//! It does not frame HTTP/2 (pingora and the h2 crate do) and decides nothing itself: routes,
//! colors, accounting, response headers and refusals are the same functions the HTTP/1.1
//! engine (src/engine/) calls, in request.rs, edge.rs and drain.rs. HTTP/1.1 and WebSocket
//! connections never come here.

pub mod gateway;
pub mod grpc;
pub mod policy;

use std::sync::Arc;

use pingora::apps::{HttpServerOptions, ServerApp};
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;

use crate::app::App;
use crate::config::Config;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a plain connection say about HTTP/2 with prior knowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preface {
    /// The whole preface: an h2c client.
    Complete,
    /// A prefix of it: read more before deciding.
    Partial,
    /// Anything else: HTTP/1.x for the engine.
    No,
}

/// Classifies the first bytes read from a plain connection.
pub fn preface(first: &[u8]) -> Preface {
    let n = first.len().min(PREFACE.len());
    if first[..n] != PREFACE[..n] {
        Preface::No
    } else if n == PREFACE.len() {
        Preface::Complete
    } else {
        Preface::Partial
    }
}

/// Streams one client may have open at once: enough for a browser page or a gRPC channel's
/// concurrent calls, small enough that one connection cannot hold a backend's worth.
pub const MAX_CONCURRENT_STREAMS: u32 = 128;

/// Streams a client may reset before the proxy accepted them (the h2 crate's defence against
/// the rapid-reset attack, CVE-2023-44487): past it, the connection ends with GOAWAY.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// The h2 crate's server limits, from `[limits]`.
pub fn options(cfg: &Config) -> H2Options {
    let mut o = pingora::protocols::http::v2::server::default_h2_options();
    o.max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(cfg.limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        // Streams the proxy itself had to reset (malformed requests) before GOAWAY.
        .max_local_error_reset_streams(Some(64));
    o
}

/// pingora-proxy's HTTP/2 server, serving the streams with [`gateway::Gateway`].
pub struct H2Front {
    proxy: Arc<HttpProxy<gateway::Gateway>>,
}

impl H2Front {
    pub fn new(app: Arc<App>, conf: &Arc<ServerConf>) -> H2Front {
        let mut proxy = pingora::proxy::http_proxy(conf, gateway::Gateway::new(app.clone()));
        let mut server = HttpServerOptions::default();
        // The engine already saw the preface: a plain connection handed over is h2c.
        server.h2c = true;
        // An idle HTTP/2 connection ends like an idle HTTP/1.1 one.
        server.h2_idle_timeout = Some(app.cfg.limits.idle_timeout);
        proxy.server_options = Some(server);
        proxy.h2_options = Some(options(&app.cfg));
        H2Front {
            proxy: Arc::new(proxy),
        }
    }

    /// Serves one HTTP/2 client connection until it ends (or the shutdown's GOAWAY).
    pub async fn serve(&self, stream: Stream, shutdown: &ShutdownWatch) {
        self.proxy.process_new(stream, shutdown).await;
    }
}

/// Puts bytes the engine already read back in front of a plain connection, so the HTTP/2
/// server reads the preface itself. `None` if the connection is not pingora's plain TCP
/// stream (it always is on the plain listener).
pub fn rewind(stream: Stream, read: &[u8]) -> Option<Stream> {
    let mut l4 = stream
        .into_any()
        .downcast::<pingora::protocols::l4::stream::Stream>()
        .ok()?;
    l4.rewind(read);
    Some(l4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_recognised_whole_partial_or_not() {
        assert_eq!(preface(PREFACE), Preface::Complete);
        let mut more = PREFACE.to_vec();
        more.extend_from_slice(b"\0\0\x12\x04");
        assert_eq!(preface(&more), Preface::Complete);
        assert_eq!(preface(b"PRI * HTTP/2"), Preface::Partial);
        assert_eq!(preface(b"P"), Preface::Partial);
        assert_eq!(preface(b"POST / HTTP/1.1\r\n"), Preface::No);
        assert_eq!(preface(b"PRI * HTTP/1.1\r\n"), Preface::No);
        assert_eq!(preface(b"GET / HTTP/1.1\r\n"), Preface::No);
    }
}
