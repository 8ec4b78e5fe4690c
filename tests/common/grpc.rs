#![allow(dead_code)]
//! A real gRPC server and client (tonic) for the HTTP/2 tests: the `test.Echo` service with
//! a unary call (`Unary`: answers `COLOR:TEXT`, INVALID_ARGUMENT for the text `fail`, and
//! for the text `slow` only after `interval_ms`) and
//! a server-streaming call (`Stream`: `count` messages `COLOR:i`, `interval_ms` apart; a
//! count of 0 streams until the client or the proxy ends the call), and a bidirectional one
//! (`Chat`: each message back as `COLOR:TEXT`, as it comes). Messages are
//! hand-written prost structs and the service a hand-written tower service over tonic's
//! generic codec: no build-script codegen.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{self, BoxStream, StreamExt};
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Echo {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
    #[prost(uint32, tag = "3")]
    pub interval_ms: u32,
}

pub fn echo(text: &str) -> Echo {
    Echo {
        text: text.into(),
        count: 0,
        interval_ms: 0,
    }
}

/// The server side of `test.Echo` for one color.
#[derive(Clone)]
pub struct EchoServer {
    color: &'static str,
    /// Calls that reached this server.
    pub calls: Arc<AtomicUsize>,
    /// Streams that ended because the other side went away (a cancel or reset).
    pub cancelled: Arc<AtomicUsize>,
}

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = "test.Echo";
}

type Codec = ProstCodec<Echo, Echo>;

/// Counts a stream the client (or the proxy) abandoned: dropped before its last message.
struct Watch {
    done: bool,
    cancelled: Arc<AtomicUsize>,
}

impl Watch {
    /// The stream sent its last message: not a cancel.
    fn complete(mut self) {
        self.done = true;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.done {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn messages(
    color: &'static str,
    req: Echo,
    cancelled: Arc<AtomicUsize>,
) -> BoxStream<'static, Result<Echo, Status>> {
    let watch = Watch {
        done: false,
        cancelled,
    };
    let interval = Duration::from_millis(u64::from(req.interval_ms));
    stream::unfold((0u32, watch), move |(i, w)| async move {
        if req.count > 0 && i >= req.count {
            w.complete();
            return None;
        }
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let m = Echo {
            text: format!("{color}:{i}"),
            count: i,
            interval_ms: 0,
        };
        Some((Ok(m), (i + 1, w)))
    })
    .boxed()
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for EchoServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let color = self.color;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let cancelled = self.cancelled.clone();
        match req.uri().path() {
            "/test.Echo/Unary" => Box::pin(async move {
                let svc = tower::service_fn(move |r: Request<Echo>| async move {
                    let m = r.into_inner();
                    if m.text == "fail" {
                        return Err(Status::invalid_argument("bad input: fail"));
                    }
                    if m.text == "slow" {
                        // No response head until interval_ms has passed.
                        tokio::time::sleep(Duration::from_millis(u64::from(m.interval_ms))).await;
                    }
                    Ok(Response::new(Echo {
                        text: format!("{color}:{}", m.text),
                        ..m
                    }))
                });
                Ok(tonic::server::Grpc::new(Codec::default())
                    .unary(svc, req)
                    .await)
            }),
            "/test.Echo/Stream" => Box::pin(async move {
                let svc = tower::service_fn(move |r: Request<Echo>| {
                    let cancelled = cancelled.clone();
                    async move { Ok(Response::new(messages(color, r.into_inner(), cancelled))) }
                });
                Ok(tonic::server::Grpc::new(Codec::default())
                    .server_streaming(svc, req)
                    .await)
            }),
            "/test.Echo/Chat" => Box::pin(async move {
                let svc = tower::service_fn(move |r: Request<tonic::Streaming<Echo>>| async move {
                    let replies = r.into_inner().map(move |m| {
                        m.map(|m| Echo {
                            text: format!("{color}:{}", m.text),
                            ..m
                        })
                    });
                    Ok(Response::new(replies.boxed()))
                });
                Ok(tonic::server::Grpc::new(Codec::default())
                    .streaming(svc, req)
                    .await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// Starts a `test.Echo` server (HTTP/2 only, as gRPC servers are) on port 0.
pub async fn start(color: &'static str) -> (SocketAddr, EchoServer) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind grpc");
    let addr = l.local_addr().expect("addr");
    let server = EchoServer {
        color,
        calls: Arc::default(),
        cancelled: Arc::default(),
    };
    let svc = server.clone();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, server)
}

/// A channel to `addr` over h2c with prior knowledge (what a gRPC client speaks in clear).
pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("grpc channel")
}

fn path(method: &str) -> http::uri::PathAndQuery {
    http::uri::PathAndQuery::try_from(format!("/test.Echo/{method}")).expect("path")
}

pub async fn unary(ch: &Channel, m: Echo) -> Result<Echo, Status> {
    let mut c = tonic::client::Grpc::new(ch.clone());
    c.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    c.unary(Request::new(m), path("Unary"), Codec::default())
        .await
        .map(Response::into_inner)
}

pub async fn server_stream(ch: &Channel, m: Echo) -> Result<tonic::Streaming<Echo>, Status> {
    let mut c = tonic::client::Grpc::new(ch.clone());
    c.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    c.server_streaming(Request::new(m), path("Stream"), Codec::default())
        .await
        .map(Response::into_inner)
}

/// A bidirectional call: the messages from `outgoing` go up as the server answers each.
pub async fn chat(
    ch: &Channel,
    outgoing: impl futures_util::Stream<Item = Echo> + Send + 'static,
) -> Result<tonic::Streaming<Echo>, Status> {
    let mut c = tonic::client::Grpc::new(ch.clone());
    c.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    c.streaming(Request::new(outgoing), path("Chat"), Codec::default())
        .await
        .map(Response::into_inner)
}
