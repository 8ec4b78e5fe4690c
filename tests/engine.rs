//! End-to-end checks of switchyard's own HTTP/1.1 engine (issue 11) against the real binary:
//! the hostile-client findings (malformed request lines, HTTP/1.0 without Host, CONNECT,
//! absolute-form targets, pipelining after a refusal), interim responses, HTTP/1.0 clients of
//! chunked responses, bad framing from a backend mid-body, a slow reader's memory, and the
//! WebSocket handover's closing handshake.
//!
//! No timing assertions: waits are bounded reads with generous limits.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// A raw TCP backend: answers health checks, records every other byte it receives, and
/// answers each request head with `answer` (keeping the connection).
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start(answer: &'static [u8]) -> Recorder {
        Recorder::start_split(Box::leak(Box::new([answer]))).await
    }

    /// Answers each request with `parts`, a pause between them so they arrive in separate
    /// reads (the pause orders events; nothing measures it).
    async fn start_split(parts: &'static [&'static [u8]]) -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let rec = rec.clone();
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                        if pending.starts_with(b"GET /health") {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                                .await;
                            return;
                        }
                        let heads = pending.windows(4).filter(|w| w == b"\r\n\r\n").count();
                        rec.lock().expect("lock").extend_from_slice(&pending);
                        pending.clear();
                        for _ in 0..heads {
                            for (i, part) in parts.iter().enumerate() {
                                if i > 0 {
                                    tokio::time::sleep(Duration::from_millis(300)).await;
                                }
                                if s.write_all(part).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Recorder { addr, seen }
    }

    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("lock")).into_owned()
    }

    /// One catch-all route with this backend as blue (green is the same).
    fn route(&self) -> String {
        format!(
            "[[route]]\nname = \"raw\"\npath_prefix = \"/\"\nblue = [\"{0}\"]\ngreen = [\"{0}\"]\n",
            self.addr
        )
    }
}

#[tokio::test]
async fn malformed_request_lines_and_connect_are_refused_and_never_forwarded() {
    let b = Backends::start().await;
    let p = Proxy::start(&Setup::new(b.route())).await;
    let cases: &[(&[u8], u16)] = &[
        (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"Extra lineGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET api/x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            400,
        ),
    ];
    for (bytes, want) in cases {
        let r = exchange(p.addr(), bytes).await;
        let name = String::from_utf8_lossy(bytes);
        assert_eq!(r.status(), *want, "{name}: {}", r.text);
        assert!(
            r.text
                .to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{name}: {}",
            r.text
        );
        assert!(r.closed, "{name}: left open");
    }
    assert_eq!(b.blue.app_requests(), 0, "a refused request reached blue");
}

#[tokio::test]
async fn requests_pipelined_after_a_refused_one_are_never_forwarded() {
    let b = Backends::start().await;
    let p = Proxy::start(&Setup::new(b.route())).await;
    let r = exchange(
        p.addr(),
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /a b HTTP/1.1\r\nHost: a\r\n\r\nGET /three HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(r.text.starts_with("HTTP/1.1 200"), "{}", r.text);
    assert_eq!(r.text.matches("HTTP/1.1 ").count(), 2, "{}", r.text);
    assert!(r.text.contains("HTTP/1.1 400"), "{}", r.text);
    assert!(r.closed);
    assert_eq!(
        b.blue.app_requests(),
        1,
        "only the request before the refusal"
    );

    // Pipelined valid requests are all answered, in order, on one connection.
    let r = exchange(
        p.addr(),
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.text.matches("HTTP/1.1 200").count(), 3, "{}", r.text);
    assert_eq!(b.blue.app_requests(), 4);
}

#[tokio::test]
async fn http10_without_host_gets_the_servers_address_as_host() {
    let b = Backends::start().await;
    let p = Proxy::start(&Setup::new(b.route())).await;
    let r = exchange(p.addr(), b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status(), 200, "{}", r.text);
    assert!(
        r.closed,
        "HTTP/1.0 without keep-alive is closed after the answer"
    );
    let h = b.blue.last_headers();
    let host = h.iter().find(|(n, _)| n == "host").map(|(_, v)| v.clone());
    assert_eq!(host, Some(b.blue.addr().to_string()));

    // An HTTP/1.0 client asking for keep-alive keeps its connection.
    let mut s = TcpStream::connect(p.addr()).await.expect("connect");
    s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .expect("send");
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).await.expect("answer");
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.contains("connection: keep-alive"), "{head}");
}

#[tokio::test]
async fn absolute_form_routes_on_its_host_and_goes_up_in_origin_form() {
    let rec = Recorder::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let b = Backends::start().await;
    let routes = format!(
        "{}[[route]]\nname = \"api\"\npath_prefix = \"/api\"\nhost = \"api.example\"\nblue = [\"{1}\"]\ngreen = [\"{1}\"]\n",
        b.route(),
        rec.addr
    );
    let p = Proxy::start(&Setup::new(routes)).await;
    let r = exchange(
        p.addr(),
        b"GET http://api.example/api/x?y=1 HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text);
    let seen = rec.seen();
    assert!(
        seen.starts_with("GET /api/x?y=1 HTTP/1.1\r\nHost: api.example\r\n"),
        "{seen}"
    );
    assert!(!seen.contains("elsewhere"), "{seen}");
    assert_eq!(b.blue.app_requests(), 0);
}

#[tokio::test]
async fn expect_100_continue_and_chunked_bodies_with_trailers_pass() {
    let b = Backends::start().await;
    let p = Proxy::start(&Setup::new(b.route())).await;
    let mut s = TcpStream::connect(p.addr()).await.expect("connect");
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .expect("head");
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an interim answer")
        .expect("read");
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    s.write_all(b"hello").await.expect("body");
    let mut got = interim;
    while !got.contains("HTTP/1.1 200") {
        let n = s.read(&mut buf).await.expect("final answer");
        assert!(n > 0, "closed before the final answer: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }

    let r = exchange(
        p.addr(),
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text);
    assert_eq!(b.blue.app_requests(), 2);
}

#[tokio::test]
async fn chunked_response_to_an_http10_client_is_unchunked_and_closed() {
    let rec = Recorder::start(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let p = Proxy::start(&Setup::new(rec.route())).await;
    let r = exchange(p.addr(), b"GET / HTTP/1.0\r\nHost: a\r\n\r\n").await;
    assert!(r.closed);
    assert!(r.text.ends_with("\r\n\r\nhello world"), "{:?}", r.text);
    assert!(
        !r.text.to_ascii_lowercase().contains("transfer-encoding"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn bad_framing_from_a_backend_never_desynchronises_the_client() {
    // Valid head, then (in a later read) a broken chunk: the client has the head already,
    // so the connection ends there; nothing after it may look like a response.
    let rec = Recorder::start_split(&[
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"XXHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
    ])
    .await;
    let p = Proxy::start(&Setup::new(rec.route())).await;
    let r = exchange(
        p.addr(),
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(r.closed, "{}", r.text);
    assert_eq!(r.text.matches("HTTP/1.1 ").count(), 1, "{}", r.text);
    assert!(!r.text.contains("evil"), "{}", r.text);

    // Bad framing that arrives with the head, or a bad head, is a 502 (nothing was sent
    // yet), with the connection usable after it.
    let answers: [&'static [u8]; 2] = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ];
    for answer in answers {
        let rec = Recorder::start(answer).await;
        let p = Proxy::start(&Setup::new(rec.route())).await;
        let r = exchange(
            p.addr(),
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(r.text.matches("HTTP/1.1 502").count(), 2, "{}", r.text);
    }
}

fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_slow_reader_does_not_make_the_proxy_buffer_the_response() {
    let b = Backends::start().await;
    let p = Proxy::start(&Setup::new(b.route())).await;
    // Warm up so the baseline includes the engine's buffers.
    assert_eq!(get(&p.url("/")).await.status, 200);
    let before = rss_kb(p.pid());
    const SIZE: usize = 48 * 1024 * 1024;
    let mut s = TcpStream::connect(p.addr()).await.expect("connect");
    s.write_all(
        format!("GET /big?bytes={SIZE} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("send");
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = s.read(&mut buf).await.expect("first bytes");
    // Stop reading: the backend has the whole body ready; only backpressure keeps it out of
    // the proxy.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = rss_kb(p.pid());
    assert!(
        during < before + 16 * 1024,
        "proxy RSS grew from {before} KB to {during} KB under a slow reader"
    );
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    assert!(total > SIZE, "got {total} bytes");
}

#[tokio::test]
async fn websocket_handover_waits_for_the_clients_close_reply() {
    let b = Backends::start().await;
    let mut s = Setup::new(b.route());
    s.switch = "[switch]\ngate_timeout = \"5s\"\ndrain_timeout = \"1s\"\nwatch = \"100ms\"\nmax_errors = 3\n".into();
    let p = Proxy::start(&s).await;
    p.wait_healthy().await;
    let stream = TcpStream::connect(p.addr()).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", p.addr()), stream)
        .await
        .expect("handshake");
    let _hello = ws.next().await;
    assert_eq!(p.ctl_last("switch green").await, "ok active=green");
    let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a close frame in time")
        .expect("a frame")
        .expect("not a reset");
    match msg {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Restart),
        other => panic!("expected 1012, got {other:?}"),
    }
    // tungstenite answers the close frame; the proxy must still be there to take it, and
    // then end the connection cleanly (no reset, no broken pipe).
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("closed in time");
    assert!(end.is_none(), "{end:?}");
    let _ = ws.send(Message::Text("late".into())).await;
}

#[tokio::test]
async fn a_bad_chunk_mid_body_is_a_400_and_both_sides_close() {
    // A backend that waits for the whole body before it answers (it never gets it).
    let rec = Recorder::start(b"").await;
    let p = Proxy::start(&Setup::new(rec.route())).await;
    let mut s = TcpStream::connect(p.addr()).await.expect("connect");
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .expect("head and first chunk");
    // The backend has the head and the first chunk before the bad one is written.
    eventually(
        "the first chunk reached the backend",
        Duration::from_secs(5),
        || async { rec.seen().ends_with("5\r\nhello\r\n") },
    )
    .await;
    s.write_all(b"zz\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("bad chunk");
    let r = read_all(&mut s, Duration::from_secs(10)).await;
    assert_eq!(r.status(), 400, "{}", r.text);
    assert!(r.closed);
    assert!(!rec.seen().contains("smuggled"), "{}", rec.seen());
}
