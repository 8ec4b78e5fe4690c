//! Review of the HTTP/1.1 engine (issue 11) before it merges: each test reproduces one
//! finding, raw bytes in and raw bytes out against the real binary. They FAIL on the engine as
//! reviewed (branch `engine` at b7f8fad, rechecked at 4af8989); each states what a correct
//! proxy does instead.
//!
//! - Connection-named framing fields (request and response): smuggling / client desync.
//! - The request body stops flowing once the response head arrives: full-duplex exchanges
//!   (an echo backend, a server that answers early and reads on) hang forever.
//! - An upgraded connection half-closed by the client loses the backend's answer.
//! - No upstream timeout: a backend that never answers, or a client that never reads, holds
//!   both connections forever.
//! - Pooled connections of a server nobody asks for again are never closed.
//! - A 204 keeps the backend's `Transfer-Encoding`.
//! - A response head over the read buffer (16 KiB by default) is a 502 counted on the color.
//! - A WebSocket whose client stopped reading survives the drain deadline (no 1012, no end).
//!
//! - A second `Upgrade: h2c` line rides along a WebSocket upgrade and any 101 is relayed
//!   (bypass of 4af8989's h2c fix; the single-line case is in tests/smuggling.rs).
//!
//! Findings 1 (Connection naming Content-Length / Transfer-Encoding) are fixed at 4af8989;
//! every other finding is fixed on branch `review` (timeouts through `[server]
//! upstream_read_timeout` / `client_send_timeout`, short here). All tests stay as regression
//! tests.
//!
//! Waits are generous bounds on "eventually", never a measured duration.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::raw_backend::{Answer, RawBackend};
use common::wire::show;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn proxy_for(be: &RawBackend) -> Proxy {
    let mut s = Setup::new(be.route());
    s.health = RawBackend::health();
    Proxy::start(&s).await
}

/// One catch-all route to `addr` (both colors).
fn route_to(addr: SocketAddr) -> String {
    format!(
        "[[route]]\nname = \"r\"\npath_prefix = \"/\"\nblue = [\"{addr}\"]\ngreen = [\"{addr}\"]\n"
    )
}

/// Reads a request head (up to its empty line) from `s`; `None` at EOF. Health checks are
/// answered here and `None` returned, so the caller only sees client requests.
async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    if head.starts_with(b"GET /health") {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
            .await;
        return None;
    }
    Some(head)
}

fn content_length(head: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A backend whose every connection is served by `serve` (health checks are answered first).
async fn backend<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let serve = serve.clone();
            tokio::spawn(async move {
                if let Some(head) = read_head(&mut s).await {
                    serve(s, head).await;
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------
// Finding 1 (smuggling): a Connection option naming Content-Length / Transfer-Encoding makes
// head.rs drop the framing field while the body still goes up (head.rs write_upstream, the
// `_ => r.hop_by_hop(f, n)` arm).

#[tokio::test]
async fn connection_content_length_never_lets_a_body_become_a_request() {
    let be = RawBackend::start().await;
    let p = proxy_for(&be).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let req = format!(
        "POST /p HTTP/1.1\r\nHost: a\r\nConnection: Content-Length\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let r = exchange_quick(p.addr(), req.as_bytes()).await;
    let rec = be.settle(2, Duration::from_secs(2)).await;
    let lines: Vec<&str> = rec.messages.iter().map(|m| m.start_line.as_str()).collect();
    assert!(
        !lines.iter().any(|l| l.contains("/smuggled")),
        "the body of POST /p reached the backend as a request of its own: backend framed {lines:?} from {}; client got {:?}",
        show(&rec.raw),
        r.text
    );
}

#[tokio::test]
async fn connection_transfer_encoding_keeps_the_chunked_body_framed() {
    let be = RawBackend::start().await;
    let p = proxy_for(&be).await;
    let req = b"POST /p HTTP/1.1\r\nHost: a\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let r = exchange_quick(p.addr(), req).await;
    let rec = be.settle(1, Duration::from_secs(2)).await;
    let refused = r.status() == 400 && rec.raw.is_empty();
    let framed = rec.garbage.is_empty()
        && rec.messages.len() == 1
        && rec.messages[0].body == b"hello"
        && !rec.messages[0].framing().is_empty();
    assert!(
        refused || framed,
        "neither refused nor forwarded framed: backend got {} (garbage {:?}); client got {:?}",
        show(&rec.raw),
        rec.garbage,
        r.text
    );
}

// ---------------------------------------------------------------------------------------
// Finding 2 (client-side desync): a backend response whose Connection names Content-Length
// or Transfer-Encoding loses that field in the client head (response.rs write_client,
// named_in_connection) while the body is passed through raw and the connection kept alive.

/// What a client gets for one GET on a kept-alive connection: the bytes and whether the
/// proxy closed.
async fn one_get(p: &Proxy) -> Raw {
    let mut s = TcpStream::connect(p.addr()).await.expect("connect");
    s.write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("send");
    read_all(&mut s, Duration::from_millis(800)).await
}

fn head_of(text: &str) -> String {
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn assert_framed_or_closed(r: &Raw) {
    let head = head_of(&r.text);
    let framed =
        head.contains("\r\ncontent-length:") || head.contains("\r\ntransfer-encoding: chunked");
    assert!(
        framed || r.closed,
        "the client got a response with no framing on a connection kept open: after it, every \
         later response on this connection is read as this body: {:?}",
        r.text
    );
}

#[tokio::test]
async fn response_naming_content_length_in_connection_keeps_the_client_framed() {
    let be = RawBackend::start().await;
    let p = proxy_for(&be).await;
    be.script([Answer::Reply(
        b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
    )]);
    assert_framed_or_closed(&one_get(&p).await);
}

#[tokio::test]
async fn response_naming_transfer_encoding_in_connection_keeps_the_client_framed() {
    let be = RawBackend::start().await;
    let p = proxy_for(&be).await;
    be.script([Answer::Reply(
        b"HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            .to_vec(),
    )]);
    assert_framed_or_closed(&one_get(&p).await);
}

// ---------------------------------------------------------------------------------------
// Finding 3 (hang): once the response head arrives, exchange.rs stops reading the client's
// body (respond() leaves its loop; send_response() never reads the client), so a backend
// that answers before it has read the whole body (streaming echo, early 200 + progress)
// waits for the rest of the body forever, and so does the client.

#[tokio::test]
async fn request_body_keeps_flowing_after_the_response_head() {
    let addr = backend(|mut s, head| async move {
        let want = content_length(&head);
        // Answer at once and echo each piece of the body as a chunk (Node's req.pipe(res)).
        if s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let mut got = 0;
        let mut b = [0u8; 4096];
        while got < want {
            let n = match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            got += n;
            let chunk = format!("{:x}\r\n{}\r\n", n, String::from_utf8_lossy(&b[..n]));
            if s.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
        let mut rest = [0u8; 64];
        let _ = s.read(&mut rest).await;
    })
    .await;
    let p = Proxy::start(&Setup::new(route_to(addr))).await;
    let mut c = TcpStream::connect(p.addr()).await.expect("connect");
    c.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .expect("send");
    let mut seen = Vec::new();
    let mut b = [0u8; 4096];
    // The first half's echo comes back; only then the second half goes.
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        while !seen.windows(5).any(|w| w == b"hello") {
            match c.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&b[..n]),
            }
        }
    })
    .await;
    assert!(
        first.is_ok() && seen.windows(5).any(|w| w == b"hello"),
        "no echo of the first half: {}",
        show(&seen)
    );
    c.write_all(b"world").await.expect("send the second half");
    let r = read_all(&mut c, Duration::from_secs(10)).await;
    seen.extend_from_slice(r.text.as_bytes());
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains("world") && text.contains("0\r\n\r\n"),
        "the second half of the body never reached the backend (the exchange hangs): client got {text:?}, closed {}",
        r.closed
    );
}

// ---------------------------------------------------------------------------------------
// Finding 4 (data loss in tunnels): relay.rs ends the whole upgraded connection when the
// client half-closes (its EOF: `up.shutdown()` then return), so what the backend sends after
// the client's last byte never reaches the client. A TCP relay forwards the FIN and keeps the
// other direction open until it ends too.

#[tokio::test]
async fn upgraded_connection_half_closed_by_the_client_still_gets_the_backends_answer() {
    let addr = backend(|mut s, _head| async move {
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        if s.write_all(ok).await.is_err() {
            return;
        }
        // Read everything the client sends until its end, then answer and close.
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&b[..n]),
            }
        }
        let mut answer = b"got:".to_vec();
        answer.extend_from_slice(&got);
        let _ = s.write_all(&answer).await;
    })
    .await;
    let p = Proxy::start(&Setup::new(route_to(addr))).await;
    let mut c = TcpStream::connect(p.addr()).await.expect("connect");
    c.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .expect("send");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), c.read(&mut b)).await {
            Ok(Ok(1)) => head.push(b[0]),
            other => panic!("no 101: {other:?} after {}", show(&head)),
        }
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", show(&head));
    c.write_all(b"ping").await.expect("tunnel bytes");
    c.shutdown().await.expect("half-close");
    let r = read_all(&mut c, Duration::from_secs(5)).await;
    assert_eq!(
        r.text, "got:ping",
        "the backend's answer after the client's half-close was dropped"
    );
}

// ---------------------------------------------------------------------------------------
// Finding 5 (timeouts that never fire): no timeout covers waiting for the response head
// once the body is sent, the response body, or writes to a client that stopped reading.
// Each holds a client connection, a backend connection and a max_connections slot forever
// (pingora's path had its downstream read/write timeouts; nginx: proxy_read_timeout 60 s,
// send_timeout 60 s). The fix bounds them by `[server] upstream_read_timeout` and
// `client_send_timeout` (60 s by default, 1 s here).

const SHORT: &str = "[limits]\nidle_timeout = \"1s\"\nheader_timeout = \"1s\"\n";
const SHORT_SERVER: &str = "upstream_read_timeout = \"1s\"\nclient_send_timeout = \"1s\"\n";

#[tokio::test]
async fn a_backend_that_never_answers_is_given_up_on() {
    let addr = backend(|mut s, _head| async move {
        // Keep the connection open and say nothing.
        let mut b = [0u8; 64];
        while let Ok(n) = s.read(&mut b).await {
            if n == 0 {
                return;
            }
        }
    })
    .await;
    let mut setup = Setup::new(route_to(addr));
    setup.extra = SHORT.into();
    setup.server_extra = SHORT_SERVER.into();
    let p = Proxy::start(&setup).await;
    let mut c = TcpStream::connect(p.addr()).await.expect("connect");
    c.write_all(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("send");
    let r = read_all(&mut c, Duration::from_secs(20)).await;
    assert!(
        r.closed || r.status() >= 500,
        "20 s after the request, with upstream_read_timeout 1s, the client still waits: {:?}",
        r.text
    );
}

#[tokio::test]
async fn a_client_that_never_reads_releases_the_backend() {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let addr = backend(move |mut s, _head| {
        let d = d.clone();
        async move {
            let size = 64usize << 20;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
            let _ = s.write_all(head.as_bytes()).await;
            let block = vec![b'x'; 1 << 20];
            for _ in 0..64 {
                if s.write_all(&block).await.is_err() {
                    break;
                }
            }
            // Written whole, or cut by the proxy: either way the backend is free again.
            d.store(true, Ordering::SeqCst);
        }
    })
    .await;
    let mut setup = Setup::new(route_to(addr));
    setup.extra = SHORT.into();
    setup.server_extra = SHORT_SERVER.into();
    let p = Proxy::start(&setup).await;
    let mut c = TcpStream::connect(p.addr()).await.expect("connect");
    c.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("send");
    // The client never reads (a zero window, as a slow-read attack keeps it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        done.load(Ordering::SeqCst),
        "20 s on, with client_send_timeout 1s, the proxy still holds the backend for a client that reads nothing"
    );
    drop(c);
}

// ---------------------------------------------------------------------------------------
// Finding 6 (fd leak): pool.rs expires idle connections only when the same (server, color)
// key is used again, so after a switch (or a server that gets no more traffic) its pooled
// connections stay open forever, CLOSE_WAIT once the backend times them out. The README
// says they close after upstream_idle_timeout (4 s by default).

#[tokio::test]
async fn pooled_connections_close_after_upstream_idle_timeout_without_more_traffic() {
    let closed = Arc::new(AtomicUsize::new(0));
    let c2 = closed.clone();
    let addr = backend(move |mut s, _head| {
        let closed = c2.clone();
        async move {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            // Keep-alive: wait for the proxy's next request or its close.
            let mut b = [0u8; 256];
            loop {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                }
            }
            closed.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    let p = Proxy::start(&Setup::new(route_to(addr))).await;
    let r = exchange_quick(
        p.addr(),
        b"GET /once HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text);
    // Default upstream_idle_timeout is 4 s; allow several times that.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while closed.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        closed.load(Ordering::SeqCst),
        1,
        "the pooled upstream connection was still open 15 s after its only request (upstream_idle_timeout 4 s)"
    );
}

/// Sends `bytes` on a fresh connection and reads for a short while (the proxy may keep the
/// connection open).
async fn exchange_quick(addr: SocketAddr, bytes: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("send");
    read_all(&mut s, Duration::from_millis(800)).await
}

// ---------------------------------------------------------------------------------------
// Finding 7 (RFC 9110 §8.6 / RFC 9112 §6.1 deviation, client desync for lenient clients):
// a 204 (or 1xx) is passed on with the backend's `Transfer-Encoding: chunked`; a client that
// trusts the header waits for a chunked body that never comes and reads the next response as
// it. response.rs write_client keeps framing fields whenever the mode is Pass.

#[tokio::test]
async fn no_content_responses_carry_no_transfer_encoding() {
    let be = RawBackend::start().await;
    let p = proxy_for(&be).await;
    be.script([Answer::Reply(
        b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
    )]);
    let r = one_get(&p).await;
    assert!(r.text.starts_with("HTTP/1.1 204"), "{:?}", r.text);
    assert!(
        !head_of(&r.text).contains("transfer-encoding"),
        "a 204 went to the client with Transfer-Encoding: {:?}",
        r.text
    );
}

// ---------------------------------------------------------------------------------------
// Finding 8 (regression, counted against the color): a response head longer than the
// engine's read buffer (max_header_bytes + 1, 16 KiB by default) is a 502 "not valid HTTP"
// and an upstream protocol error, although response.rs accepts heads up to MAX_HEAD (64 KiB)
// and pingora's path passed them. Big CSP / Set-Cookie heads are real; a switch to a color
// that sends them would be rolled back for it.

#[tokio::test]
async fn a_20_kib_response_head_is_passed_on() {
    let be = RawBackend::start().await;
    let p = proxy_for(&be).await;
    let big = "x".repeat(20 * 1024);
    be.script([Answer::Reply(
        format!("HTTP/1.1 200 OK\r\nX-Big: {big}\r\nContent-Length: 2\r\n\r\nok").into_bytes(),
    )]);
    let r = one_get(&p).await;
    assert_eq!(r.status(), 200, "{:?}", &r.text[..r.text.len().min(300)]);
}

// ---------------------------------------------------------------------------------------
// Finding 9 (handover never happens): relay.rs writes server-to-client data with a plain
// `client.write_all` and only looks at the drain's closing flag between reads, so a
// WebSocket client that stops reading while its backend sends pins the relay in that write:
// the drain deadline's 1012 never goes out, the old color's WebSocket never ends, and the
// backend stays blocked. No write timeout cuts it either.

#[tokio::test]
async fn a_websocket_whose_client_stopped_reading_is_still_ended_by_the_drain() {
    let ended = Arc::new(AtomicBool::new(false));
    let e = ended.clone();
    let addr = backend(move |mut s, _head| {
        let e = e.clone();
        async move {
            let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
            if s.write_all(ok).await.is_err() {
                return;
            }
            // Unmasked binary frames of 64 KiB, as long as the proxy takes them.
            let mut frame = vec![0x82, 127];
            frame.extend_from_slice(&(65536u64).to_be_bytes());
            frame.extend(std::iter::repeat_n(b'x', 65536));
            while s.write_all(&frame).await.is_ok() {}
            e.store(true, Ordering::SeqCst);
        }
    })
    .await;
    let mut setup = Setup::new(route_to(addr));
    setup.switch =
        "[switch]\ngate_timeout = \"5s\"\ndrain_timeout = \"1s\"\nwatch = \"1s\"\nmax_errors = 3\n"
            .into();
    let p = Proxy::start(&setup).await;
    p.wait_healthy().await;
    let mut c = TcpStream::connect(p.addr()).await.expect("connect");
    c.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .expect("send");
    let mut first = [0u8; 12];
    c.read_exact(&mut first).await.expect("101");
    assert_eq!(&first, b"HTTP/1.1 101");
    // From here the client reads nothing; the backend fills every buffer on the way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(p.ctl_last("switch green").await, "ok active=green");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ended.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ended.load(Ordering::SeqCst),
        "20 s after a switch with drain_timeout 1s, the old color's WebSocket (client not reading) is still relayed"
    );
    drop(c);
}

// ---------------------------------------------------------------------------------------
// Finding 10 (tunnel past the front door, bypass of 4af8989's h2c fix): a request with one
// `Upgrade: websocket` line counts as a WebSocket upgrade, but write_upstream then forwards
// every Upgrade line (head.rs `Field::Upgrade => !r.upgrade`), a second `Upgrade: h2c`
// included, and response.rs accepts any 101 for an upgrade request whatever protocol it
// switches to. An h2c-capable backend may pick h2c, and the client gets an HTTP/2 tunnel.

#[tokio::test]
async fn a_second_upgrade_line_never_makes_an_h2c_tunnel() {
    let be = RawBackend::start().await;
    let p = proxy_for(&be).await;
    be.script([Answer::Upgrade(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec(),
    )]);
    let mut c = TcpStream::connect(p.addr()).await.expect("connect");
    c.write_all(
        b"GET /h HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .expect("send");
    let r = read_all(&mut c, Duration::from_millis(800)).await;
    let _ = c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let rec = be.settle(1, Duration::from_secs(1)).await;
    let up = String::from_utf8_lossy(&rec.raw).to_ascii_lowercase();
    assert!(
        !up.contains("upgrade: h2c") && !r.text.starts_with("HTTP/1.1 101"),
        "h2c offered upstream and/or a 101 to h2c relayed: backend got {}; client got {:?}; tunnel {}",
        show(&rec.raw),
        r.text,
        show(&rec.tunnel)
    );
}
