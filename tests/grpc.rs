//! Issue 13 items 1 and 2 end to end: HTTP/2 to clients (`[listen] http2 = true`) over TLS
//! with ALPN and as h2c on the plain listener, WebSockets still on HTTP/1.1 on the same port,
//! and gRPC routes (`grpc = true`) with a real tonic client and server: unary and streaming
//! calls, statuses and trailers passed through, and the drain handover that ends a stream of
//! the old color with UNAVAILABLE (14) so the client retries on the new one.

mod common;
// Only this suite needs tonic: kept out of common/mod.rs so other suites do not build it.
#[path = "common/grpc.rs"]
mod grpc;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use grpc::{echo, Echo};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;

/// Two gRPC servers (blue, green) behind a `grpc = true` route, and the demo backends
/// behind a catch-all route.
struct Fleet {
    web: Backends,
    blue: grpc::EchoServer,
    green: grpc::EchoServer,
    routes: String,
}

async fn fleet() -> Fleet {
    let web = Backends::start().await;
    let (blue_addr, blue) = grpc::start("blue").await;
    let (green_addr, green) = grpc::start("green").await;
    let routes = format!(
        "[[route]]\nname = \"grpc\"\npath_prefix = \"/test.Echo/\"\ngrpc = true\nblue = [\"{blue_addr}\"]\ngreen = [\"{green_addr}\"]\n\n{}",
        web.route()
    );
    Fleet {
        web,
        blue,
        green,
        routes,
    }
}

fn h2_setup(routes: &str, drain: &str) -> Setup {
    let mut s = Setup::new(routes.to_string());
    s.listen_extra = "http2 = true\n".into();
    s.switch = format!(
        "[switch]\ngate_timeout = \"5s\"\ndrain_timeout = \"{drain}\"\nwatch = \"300ms\"\nmax_errors = 1000000\n"
    );
    s
}

type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// An HTTP/2 client connection on `io` (h2c, or TLS that chose h2).
async fn h2_client<T>(io: T) -> H2Sender
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

/// One GET over HTTP/2 on `io` (h2c or TLS with ALPN h2): status, version, `x-color`.
async fn h2_get<T>(io: T, authority: &str, path: &str) -> (u16, http::Version, String)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut sender = h2_client(io).await;
    let req = http::Request::builder()
        .uri(format!("http://{authority}{path}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("h2 response");
    let status = resp.status().as_u16();
    let version = resp.version();
    let color = resp
        .headers()
        .get("x-color")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let _ = resp.into_body().collect().await;
    (status, version, color)
}

#[tokio::test]
async fn grpc_calls_statuses_h2c_and_websockets_share_the_plain_port() {
    let f = fleet().await;
    let p = Proxy::start(&h2_setup(&f.routes, "2s")).await;
    p.wait_healthy().await;
    let ch = grpc::channel(p.addr()).await;

    let r = grpc::unary(&ch, echo("hi")).await.expect("unary");
    assert_eq!(r.text, "blue:hi");
    // A non-OK status and its message come through in the trailers.
    let e = grpc::unary(&ch, echo("fail"))
        .await
        .expect_err("a failed call");
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "bad input: fail")
    );

    let mut s = grpc::server_stream(
        &ch,
        Echo {
            text: String::new(),
            count: 3,
            interval_ms: 10,
        },
    )
    .await
    .expect("stream");
    let mut got = Vec::new();
    while let Some(m) = s.message().await.expect("stream message") {
        got.push(m.text);
    }
    assert_eq!(got, ["blue:0", "blue:1", "blue:2"], "ended with status OK");

    // Bidirectional: each message goes up while the answers come down on the same stream.
    let (tx, rx) = tokio::sync::mpsc::channel::<Echo>(4);
    let mut answers = grpc::chat(&ch, tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("chat");
    for word in ["one", "two"] {
        tx.send(echo(word)).await.expect("send");
        let m = answers.message().await.expect("answer").expect("a message");
        assert_eq!(m.text, format!("blue:{word}"));
    }
    drop(tx);
    assert!(
        answers.message().await.expect("end").is_none(),
        "ended with status OK"
    );
    assert_eq!(f.blue.calls.load(Ordering::SeqCst), 4);
    assert_eq!(f.green.calls.load(Ordering::SeqCst), 0);

    // The watch and Prometheus count gRPC calls per color like any request.
    eventually("calls counted for blue", Duration::from_secs(5), || async {
        p.metric("switchyard_requests_total{code=\"200\",color=\"blue\",route=\"grpc\"}")
            .await
            == 4.0
    })
    .await;

    // h2c with prior knowledge to an HTTP/1.1 backend.
    let tcp = TcpStream::connect(p.addr()).await.expect("connect");
    let (status, version, color) = h2_get(tcp, &p.addr().to_string(), "/h2c").await;
    // switchyard's own answer over HTTP/2: 405 to CONNECT (it is not a forward proxy).
    let mut sender = h2_client(TcpStream::connect(p.addr()).await.expect("connect")).await;
    let connect = http::Request::builder()
        .method("CONNECT")
        .uri(p.addr().to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(connect).await.expect("405");
    assert_eq!(resp.status(), 405);
    assert_eq!(
        (status, version, color.as_str()),
        (200, http::Version::HTTP_2, "blue")
    );

    // HTTP/1.1 and a WebSocket on the same port, unchanged.
    assert_eq!(get(&p.url("/plain")).await.color(), "blue");
    let tcp = TcpStream::connect(p.addr()).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", p.addr()), tcp)
        .await
        .expect("websocket over HTTP/1.1 with http2 on");
    let hello = ws.next().await.expect("frame").expect("frame ok");
    assert_eq!(hello, Message::Text("hello from blue".into()));
    ws.send(Message::Text("still here".into()))
        .await
        .expect("send");
    let echoed = ws.next().await.expect("frame").expect("frame ok");
    assert_eq!(echoed, Message::Text("still here".into()));

    // A gRPC route over HTTP/1.1 is refused with a reason, never half-forwarded.
    let r = get_with(
        &p.url("/test.Echo/Unary"),
        &[("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(r.status, 505, "{}", r.body);
    assert!(r.body.contains("needs HTTP/2"), "{}", r.body);
    assert_eq!(
        p.metric("switchyard_refused_total{reason=\"http2_required\"}")
            .await,
        1.0
    );
    assert_eq!(
        f.blue.calls.load(Ordering::SeqCst),
        4,
        "the 505 reached no server"
    );
    drop(f.web);
}

/// A TLS client trusting only `root`, offering `alpn`; returns the protocol chosen.
async fn tls_connect(
    port: u16,
    root: &[u8],
    alpn: &[&[u8]],
) -> (tokio_rustls::client::TlsStream<TcpStream>, Option<Vec<u8>>) {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(root.to_vec()))
        .expect("root");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let mut last = String::new();
    for _ in 0..100 {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(tcp) => {
                let name = ServerName::try_from("localhost").expect("name");
                let tls = TlsConnector::from(Arc::new(config.clone()))
                    .connect(name, tcp)
                    .await
                    .expect("TLS handshake");
                let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                return (tls, chosen);
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no TLS listener on {port}: {last}");
}

#[tokio::test]
async fn tls_offers_h2_then_http11_and_grpc_works_over_it() {
    let f = fleet().await;
    let k = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, k.cert.pem()).expect("cert");
    std::fs::write(&key, k.key_pair.serialize_pem()).expect("key");
    let der = k.cert.der().to_vec();
    let port = free_port();
    let mut setup = h2_setup(&f.routes, "2s");
    setup.listen_extra = format!(
        "http2 = true\nredirect_https = true\nhttps = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let p = Proxy::start(&setup).await;
    p.wait_healthy().await;

    let (tls, chosen) = tls_connect(port, &der, &[b"h2", b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]), "h2 is preferred");
    let (status, version, color) = h2_get(tls, "localhost", "/over-h2").await;
    assert_eq!(
        (status, version, color.as_str()),
        (200, http::Version::HTTP_2, "blue")
    );

    // redirect_https: an h2c request on the plain port gets the same 308 as HTTP/1.1.
    let mut plain = h2_client(TcpStream::connect(p.addr()).await.expect("connect")).await;
    let req = http::Request::builder()
        .uri("http://app.example/some/where?x=1")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = plain.send_request(req).await.expect("308");
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers().get("location").map(|v| v.as_bytes()),
        Some(format!("https://app.example:{port}/some/where?x=1").as_bytes())
    );

    // A client that offers only HTTP/1.1 gets it.
    let (tls, chosen) = tls_connect(port, &der, &[b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("/over-h1")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("h1 response");
    assert_eq!(
        (resp.status().as_u16(), resp.version()),
        (200, http::Version::HTTP_11)
    );

    // gRPC over TLS (ALPN h2), through tonic's channel on our TLS connection.
    let connector = tower::service_fn(move |_: http::Uri| {
        let der = der.clone();
        async move {
            let (tls, _) = tls_connect(port, &der, &[b"h2"]).await;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let ch = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await
        .expect("grpc over tls");
    let r = grpc::unary(&ch, echo("tls")).await.expect("unary over tls");
    assert_eq!(r.text, "blue:tls");
    drop(f.web);
}

/// gRPC unary calls in a loop until `stop`; every one must succeed (on either color).
fn grpc_load(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
    ok: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ch = grpc::channel(addr).await;
        while !stop.load(Ordering::Relaxed) {
            match grpc::unary(&ch, echo("load")).await {
                Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    eprintln!("load call failed: {e:?}");
                    failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

#[tokio::test]
async fn a_stream_on_the_old_color_runs_through_the_drain_then_ends_unavailable_and_the_retry_lands_on_green(
) {
    let f = fleet().await;
    let p = Proxy::start(&h2_setup(&f.routes, "2s")).await;
    p.wait_healthy().await;
    let ch = grpc::channel(p.addr()).await;
    let endless = Echo {
        text: String::new(),
        count: 0,
        interval_ms: 50,
    };
    let mut stream = grpc::server_stream(&ch, endless.clone())
        .await
        .expect("stream");
    let first = stream.message().await.expect("first").expect("a message");
    assert_eq!(first.text, "blue:0");

    let stop = Arc::new(AtomicBool::new(false));
    let (failed, ok) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = grpc_load(p.addr(), stop.clone(), failed.clone(), ok.clone());

    let mut admin = AdminConn::connect(&p).await;
    admin.send_raw(b"switch green\n").await;
    eventually("green is live", Duration::from_secs(10), || async {
        grpc::unary(&ch, echo("x"))
            .await
            .is_ok_and(|r| r.text == "green:x")
    })
    .await;

    // The stream keeps running on blue during the drain, then gets UNAVAILABLE.
    let mut during_drain = 0;
    let end = loop {
        match stream.message().await {
            Ok(Some(m)) => {
                assert!(m.text.starts_with("blue:"), "{}", m.text);
                during_drain += 1;
            }
            Ok(None) => panic!("the stream ended with OK instead of a handover"),
            Err(status) => break status,
        }
    };
    assert!(
        during_drain >= 5,
        "the stream ran on during the drain: {during_drain} messages"
    );
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(end.message().contains("draining"), "{end:?}");

    // What a gRPC client does on UNAVAILABLE: call again, which lands on green.
    let mut retry = grpc::server_stream(&ch, endless).await.expect("retry");
    let m = retry
        .message()
        .await
        .expect("retry message")
        .expect("a message");
    assert_eq!(m.text, "green:0");
    drop(retry);

    let mut reply = Vec::new();
    while let Some(l) = admin.next_line().await {
        let last = is_final(&l);
        reply.push(l);
        if last {
            break;
        }
    }
    assert_eq!(
        reply.last().map(String::as_str),
        Some("ok active=green"),
        "{reply:?}"
    );
    assert!(
        reply
            .iter()
            .any(|l| l.starts_with("drain: blue has ")
                && !l.starts_with("drain: blue has 0 requests")),
        "the drain waited for the open stream: {reply:?}"
    );
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no other call failed");
    assert!(ok.load(Ordering::Relaxed) > 0);
    // The blue server saw its stream cancelled (RST_STREAM), not left running.
    eventually(
        "blue's stream cancelled",
        Duration::from_secs(5),
        || async { f.blue.cancelled.load(Ordering::SeqCst) == 1 },
    )
    .await;
    p.wait_inflight("nothing open on blue", "blue", 0.0).await;
    drop(f.web);
}

#[tokio::test]
async fn sigterm_ends_open_streams_with_unavailable() {
    let f = fleet().await;
    let p = Proxy::start(&h2_setup(&f.routes, "2s")).await;
    p.wait_healthy().await;
    let ch = grpc::channel(p.addr()).await;
    let mut stream = grpc::server_stream(
        &ch,
        Echo {
            text: String::new(),
            count: 0,
            interval_ms: 50,
        },
    )
    .await
    .expect("stream");
    stream.message().await.expect("first").expect("a message");
    p.signal(libc::SIGTERM);
    let end = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("ended with OK"),
            Err(s) => break s,
        }
    };
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    drop(f.web);
}

#[tokio::test]
async fn h2_responses_get_the_routes_headers_and_gzip() {
    let web = Backends::start().await;
    let routes = format!(
        "[[route]]\nname = \"gz\"\npath_prefix = \"/gz\"\ngzip = true\nheaders = {{ \"x-route\" = \"gz\" }}\nblue = [\"{}\"]\ngreen = [\"{}\"]\n",
        web.blue.addr(),
        web.green.addr()
    );
    let p = Proxy::start(&h2_setup(&routes, "2s")).await;
    p.wait_healthy().await;
    let mut sender = h2_client(TcpStream::connect(p.addr()).await.expect("connect")).await;
    let get = |accept: &'static str| {
        http::Request::builder()
            .uri(format!("http://{}/gz/big?bytes=20000", p.addr()))
            .header("accept-encoding", accept)
            .body(Empty::<Bytes>::new())
            .expect("request")
    };
    let resp = sender.send_request(get("gzip")).await.expect("response");
    let h = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        h.get("content-encoding").map(|v| v.as_bytes()),
        Some(&b"gzip"[..]),
        "{h:?}"
    );
    assert_eq!(
        h.get("x-route").map(|v| v.as_bytes()),
        Some(&b"gz"[..]),
        "{h:?}"
    );
    assert!(body.len() < 20_000, "compressed: {} bytes", body.len());
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
        .expect("valid gzip");
    assert_eq!(plain.len(), 20_000);

    // A client that does not take gzip gets the bytes as they are, with the route's header.
    let resp = sender
        .send_request(get("identity"))
        .await
        .expect("response");
    assert!(resp.headers().get("content-encoding").is_none());
    assert_eq!(
        resp.headers().get("x-route").map(|v| v.as_bytes()),
        Some(&b"gz"[..])
    );
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body.len(), 20_000);
}

#[tokio::test]
async fn h2_requests_reach_an_http11_backend_with_host_and_forwarding_fields() {
    let raw = common::raw_backend::RawBackend::start().await;
    let mut s = h2_setup(&raw.route(), "2s");
    s.health = common::raw_backend::RawBackend::health();
    let log = temp_log();
    // The test client is a trusted proxy: its X-Forwarded-For names the client (real_ip.rs).
    s.server_extra = "trusted_proxies = [\"127.0.0.1/32\"]\n".into();
    s.extra = format!(
        "[preview]\nallow = [\"10.9.9.9/32\"]\n[access_log]\nenabled = true\npath = \"{}\"\n",
        log.path.display()
    );
    let p = Proxy::start(&s).await;
    p.wait_healthy().await;
    let mut sender = h2_client(TcpStream::connect(p.addr()).await.expect("connect")).await;
    let req = http::Request::builder()
        .uri("http://app.example:8080/fwd?q=1")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-switchyard-color", "green")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let got = raw.received().messages;
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!((m.method(), m.target()), ("GET", "/fwd?q=1"));
    assert_eq!(m.values("host"), ["app.example:8080"]);
    assert_eq!(m.values("x-forwarded-for"), ["10.0.0.1, 127.0.0.1"]);
    assert_eq!(m.values("x-forwarded-proto"), ["http"]);
    assert!(
        m.values("x-switchyard-color").is_empty(),
        "the preview header is stripped"
    );
    // A request body goes up whole, framed for HTTP/1.1.
    let (mut poster, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(TcpStream::connect(p.addr()).await.expect("connect")),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let post = http::Request::builder()
        .method("POST")
        .uri("http://app.example/post")
        .body(http_body_util::Full::new(Bytes::from_static(
            b"hello over h2",
        )))
        .expect("request");
    assert_eq!(
        poster.send_request(post).await.expect("response").status(),
        200
    );
    let got = raw.received().messages;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (got[1].method(), got[1].body_text().as_str()),
        ("POST", "hello over h2")
    );

    // The same access log line as an HTTP/1.1 request.
    eventually("an access log line", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log.path).unwrap_or_default();
        async move { !text.is_empty() }
    })
    .await;
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&log.path)
            .expect("access log")
            .lines()
            .next()
            .expect("a line"),
    )
    .expect("JSON");
    assert_eq!(
        (
            &line["method"],
            &line["path"],
            &line["status"],
            &line["route"],
            &line["color"]
        ),
        (
            &serde_json::json!("GET"),
            &serde_json::json!("/fwd?q=1"),
            &serde_json::json!(200),
            &serde_json::json!("raw"),
            &serde_json::json!("blue")
        )
    );
    assert_eq!(
        line["client"], "10.0.0.1",
        "the client a trusted peer named"
    );
}

/// A file in a temp dir that lives as long as the value.
struct TempLog {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

fn temp_log() -> TempLog {
    let dir = tempfile::tempdir().expect("tempdir");
    TempLog {
        path: dir.path().join("access.log"),
        _dir: dir,
    }
}

#[tokio::test]
async fn an_unreachable_grpc_server_is_unavailable_to_the_client() {
    let dead = free_port();
    let routes = format!(
        "[[route]]\nname = \"grpc\"\npath_prefix = \"/test.Echo/\"\ngrpc = true\nblue = [\"127.0.0.1:{dead}\"]\ngreen = [\"127.0.0.1:{dead}\"]\n"
    );
    let p = Proxy::start(&h2_setup(&routes, "2s")).await;
    let ch = grpc::channel(p.addr()).await;
    // A gRPC status the client retries, not an HTML error page it cannot read.
    let e = grpc::unary(&ch, echo("x")).await.expect_err("no server");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("could be reached"), "{e:?}");
    assert!(
        p.metric("switchyard_upstream_errors_total{color=\"blue\",kind=\"connect\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_call_whose_server_has_not_answered_by_the_drain_deadline_gets_a_trailers_only_unavailable(
) {
    let f = fleet().await;
    let p = Proxy::start(&h2_setup(&f.routes, "1s")).await;
    p.wait_healthy().await;
    let ch = grpc::channel(p.addr()).await;
    let slow = Echo {
        text: "slow".into(),
        count: 0,
        interval_ms: 30_000,
    };
    let call = {
        let ch = ch.clone();
        tokio::spawn(async move { grpc::unary(&ch, slow).await })
    };
    p.wait_inflight("the slow call is open on blue", "blue", 1.0)
        .await;
    let reply = p.ctl("switch green").await;
    assert_eq!(
        reply.last().map(String::as_str),
        Some("ok active=green"),
        "{reply:?}"
    );
    let e = call.await.expect("join").expect_err("handed over");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("draining"), "{e:?}");
    let r = grpc::unary(&ch, echo("again")).await.expect("retry");
    assert_eq!(r.text, "green:again");
    drop(f.web);
}

#[tokio::test]
async fn a_silent_backend_gives_an_h2_client_a_504_and_an_upstream_timeout() {
    let raw = common::raw_backend::RawBackend::start().await;
    raw.script([common::raw_backend::Answer::After(
        Duration::from_secs(5),
        Box::new(common::raw_backend::ok("late")),
    )]);
    let mut s = h2_setup(&raw.route(), "2s");
    s.health = common::raw_backend::RawBackend::health();
    s.server_extra = "upstream_read_timeout = \"300ms\"\n".into();
    let p = Proxy::start(&s).await;
    p.wait_healthy().await;
    let tcp = TcpStream::connect(p.addr()).await.expect("connect");
    let (status, version, _) = h2_get(tcp, "app.example", "/silent").await;
    assert_eq!((status, version), (504, http::Version::HTTP_2));
    assert_eq!(
        p.metric("switchyard_upstream_errors_total{color=\"blue\",kind=\"timeout\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_h2c_connection_behind_a_proxy_protocol_balancer_is_its_real_client() {
    use tokio::io::AsyncWriteExt;
    let raw = common::raw_backend::RawBackend::start().await;
    let mut s = h2_setup(&raw.route(), "2s");
    s.health = common::raw_backend::RawBackend::health();
    s.listen_extra = "http2 = true\nproxy_protocol = true\n".into();
    s.server_extra = "trusted_proxies = [\"127.0.0.1/32\"]\n".into();
    let p = Proxy::start(&s).await;
    p.wait_healthy().await;
    // The balancer's PROXY line, then the client's h2c preface on the same connection.
    let mut tcp = TcpStream::connect(p.addr()).await.expect("connect");
    tcp.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 5000 80\r\n")
        .await
        .expect("PROXY header");
    let (status, version, _) = h2_get(tcp, "app.example", "/behind-lb").await;
    assert_eq!((status, version), (200, http::Version::HTTP_2));
    let got = raw.received().messages;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].values("x-forwarded-for"), ["203.0.113.7"]);
}

/// A route's CORS, rate limit and body size hold over HTTP/2 as over HTTP/1.1
/// (h2/policy.rs calls the same decisions): nothing the client does there gets around them.
#[tokio::test]
async fn h2_requests_meet_the_routes_cors_rate_limit_and_body_size() {
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;

    let raw = common::raw_backend::RawBackend::start().await;
    let route = format!(
        "{}cors = {{ origins = [\"https://app.example.com\"], methods = [\"GET\", \"POST\"] }}\nrate_limit = {{ per_second = 1, burst = 1, key = \"header:x-api-key\" }}\nmax_body_bytes = 10\n",
        raw.route()
    );
    let mut s = h2_setup(&route, "2s");
    s.health = common::raw_backend::RawBackend::health();
    let p = Proxy::start(&s).await;
    p.wait_healthy().await;
    type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
    let io = TokioIo::new(TcpStream::connect(p.addr()).await.expect("connect"));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake::<_, _, Body>(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let uri = format!("http://{}/x", p.addr());
    let req = |method: &str, key: &str, body: Body| {
        http::Request::builder()
            .method(method)
            .uri(&uri)
            .header("origin", "https://app.example.com")
            .header("x-api-key", key)
            .body(body)
            .expect("request")
    };
    let empty = || Empty::<Bytes>::new().boxed();
    let allowed_origin = |r: &http::Response<hyper::body::Incoming>| {
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes().to_vec())
    };

    // A preflight is answered here, with the policy's headers.
    let mut pre = req("OPTIONS", "k1", empty());
    pre.headers_mut().insert(
        "access-control-request-method",
        http::HeaderValue::from_static("POST"),
    );
    let resp = sender.send_request(pre).await.expect("preflight");
    assert_eq!(resp.status(), 204);
    assert_eq!(
        allowed_origin(&resp).as_deref(),
        Some(&b"https://app.example.com"[..])
    );
    // An actual request is forwarded and its response carries the CORS headers.
    let resp = sender
        .send_request(req("GET", "k2", empty()))
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        allowed_origin(&resp).as_deref(),
        Some(&b"https://app.example.com"[..])
    );
    // The same key again within its window: 429 with Retry-After, not forwarded.
    let resp = sender
        .send_request(req("GET", "k2", empty()))
        .await
        .expect("limited");
    assert_eq!(resp.status(), 429);
    assert!(
        resp.headers().contains_key("retry-after"),
        "{:?}",
        resp.headers()
    );
    // A body over max_body_bytes (content-length 20): 413.
    let big = Full::new(Bytes::from_static(b"01234567890123456789")).boxed();
    let resp = sender
        .send_request(req("POST", "k3", big))
        .await
        .expect("413");
    assert_eq!(resp.status(), 413);
    // A body of unknown length cannot be measured before it is forwarded: 411.
    let frames = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(
        Bytes::from_static(b"abc"),
    ))]);
    let stream = BodyExt::boxed(StreamBody::new(frames));
    let resp = sender
        .send_request(req("POST", "k4", stream))
        .await
        .expect("411");
    assert_eq!(resp.status(), 411);

    let got = raw.received().messages;
    assert_eq!(
        got.len(),
        1,
        "only the one GET reached the backend: {got:?}"
    );
    let metrics = p.metrics().await;
    for reason in ["rate_limited", "body_too_large", "length_required"] {
        assert!(
            metrics.contains(&format!(
                "switchyard_refused_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason} counted once"
        );
    }
}
