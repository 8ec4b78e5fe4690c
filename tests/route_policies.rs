//! Per-route policies of issue 13 against the real binary and real backends: CORS answered at
//! the edge, rate limits, body size and backend timeouts.
//!
//! - `cors_*`: preflights never reach the backend (zero bytes at a raw backend), allowed,
//!   disallowed and wildcard origins, credentials, hostile `Origin` values never echoed.
//! - `rate_limit_*`: per IP and per header, 429 + `Retry-After`, the refusal metric, other
//!   routes and keys unaffected, a switch's watch not moved by 429s, and memory that stays
//!   flat under a flood of distinct spoofed keys.
//! - `body_*`: 413 for a `Content-Length` over `max_body_bytes` (without a 100 Continue) and
//!   for a chunked body that turns out larger, with nothing at all at the backend.
//! - `*_timeout_*`: 504 when the backend is slower than the route's `read_timeout`, or stops
//!   taking the request body for its `write_timeout`.
//!
//! No timing assertions: limits are sized so a slow machine cannot change the counts.

mod common;

use std::time::Duration;

use common::raw_backend::{ok, Answer, RawBackend};
use common::raw_client::RawClient;
use common::wire::Message;
use common::*;
use tokio::io::AsyncWriteExt;

/// Long enough for bytes that must not come (a forwarded request) to land.
const QUIET: Duration = Duration::from_millis(150);

const CORS: &str = r#"cors = { origins = ["https://app.example.com", "https://*.example.com"], methods = ["GET", "POST"], headers = ["content-type"], credentials = true, max_age = "10m" }"#;

/// A proxy in front of `be` with two routes: `/api` with `policy` lines, `/` without.
async fn proxy_with(be: &RawBackend, policy: &str) -> Proxy {
    let routes = format!(
        "[[route]]\nname = \"api\"\npath_prefix = \"/api\"\nblue = [\"{0}\"]\ngreen = [\"{0}\"]\n{policy}\n\n[[route]]\nname = \"web\"\npath_prefix = \"/\"\nblue = [\"{0}\"]\ngreen = [\"{0}\"]\n",
        be.addr
    );
    let mut s = Setup::new(routes);
    s.health = RawBackend::health();
    Proxy::start(&s).await
}

async fn one(p: &Proxy, request: &str) -> Message {
    let mut c = RawClient::connect(p.addr()).await;
    c.send(request.as_bytes()).await.expect("send");
    c.response(false, Duration::from_secs(5))
        .await
        .expect("a response")
}

fn header(m: &Message, name: &str) -> Option<String> {
    m.values(name).into_iter().next()
}

fn cors_fields(m: &Message) -> Vec<String> {
    m.headers
        .iter()
        .filter(|(n, _)| n.starts_with("access-control-"))
        .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
        .collect()
}

fn preflight(origin: &str) -> String {
    format!("OPTIONS /api/orders HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n")
}

#[tokio::test]
async fn cors_preflight_is_answered_at_the_edge_and_never_forwarded() {
    let be = RawBackend::start().await;
    let p = proxy_with(&be, CORS).await;

    let m = one(&p, &preflight("https://app.example.com")).await;
    assert_eq!(m.status, 204);
    assert_eq!(
        cors_fields(&m),
        [
            "access-control-allow-origin: https://app.example.com",
            "access-control-allow-credentials: true",
            "access-control-allow-methods: GET, POST",
            "access-control-allow-headers: content-type",
            "access-control-max-age: 600",
        ]
    );
    assert!(header(&m, "vary").expect("vary").contains("Origin"));
    assert!(m.framing().is_empty(), "a 204 has no framing fields");

    // Disallowed origins, a method not listed, two Origin fields: answered here, no CORS
    // headers, still nothing forwarded.
    for req in [
        preflight("https://evil-example.com"),
        preflight("https://example.com.evil.net"),
        preflight("null"),
        "OPTIONS /api/x HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: DELETE\r\n\r\n".into(),
        "OPTIONS /api/x HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\nOrigin: https://evil.com\r\nAccess-Control-Request-Method: GET\r\n\r\n".into(),
    ] {
        let m = one(&p, &req).await;
        assert_eq!(m.status, 204, "{req}");
        assert!(cors_fields(&m).is_empty(), "{req}: {:?}", cors_fields(&m));
    }
    tokio::time::sleep(QUIET).await;
    let got = be.received();
    assert_eq!(
        got.raw.len(),
        0,
        "the backend got bytes: {:?}",
        got.messages
    );

    // An OPTIONS without Access-Control-Request-Method is not a preflight: forwarded.
    let m = one(
        &p,
        "OPTIONS /api/x HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(m.status, 200);
    assert_eq!(be.settle(1, Duration::from_secs(5)).await.messages.len(), 1);
}

#[tokio::test]
async fn cors_actual_requests_echo_allowed_origins_only() {
    let be = RawBackend::start().await;
    let p = proxy_with(&be, CORS).await;
    let get = |origin: &str| format!("GET /api/x HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\r\n");

    for origin in [
        "https://app.example.com",
        "https://a.example.com",
        "https://a.b.example.com",
    ] {
        let m = one(&p, &get(origin)).await;
        assert_eq!(m.status, 200);
        assert_eq!(
            cors_fields(&m),
            [
                format!("access-control-allow-origin: {origin}"),
                "access-control-allow-credentials: true".into()
            ]
        );
        assert_eq!(header(&m, "vary").as_deref(), Some("Origin"));
    }
    for origin in [
        "https://evil-example.com",
        "https://example.com.evil.net",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com/",
        "https://.example.com",
        &format!("https://{}.example.com", "a".repeat(600)),
    ] {
        let m = one(&p, &get(origin)).await;
        assert_eq!(m.status, 200, "{origin}");
        assert!(
            cors_fields(&m).is_empty(),
            "{origin}: {:?}",
            cors_fields(&m)
        );
        assert_eq!(header(&m, "vary").as_deref(), Some("Origin"), "{origin}");
    }
    // The backend's own CORS answer is replaced by the route's, never doubled.
    be.script([Answer::Reply(
        b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: 2\r\n\r\nok"
            .to_vec(),
    )]);
    let m = one(&p, &get("https://evil.com")).await;
    assert!(cors_fields(&m).is_empty(), "{:?}", cors_fields(&m));
    // Routes without a policy are untouched.
    let m = one(
        &p,
        "GET /other HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\n\r\n",
    )
    .await;
    assert!(cors_fields(&m).is_empty());
    assert!(header(&m, "vary").is_none());
}

#[tokio::test]
async fn cors_hostile_origins_are_refused_or_ignored_never_reflected() {
    let be = RawBackend::start().await;
    let p = proxy_with(&be, CORS).await;
    // CR, NUL and bare LF inside the value: the head is refused before routing.
    for bad in [
        &b"Origin: https://a.example.com\rSet-Cookie: x=1\r\n"[..],
        b"Origin: https://a.example.com\0\r\n",
        b"Origin: https://a.example.com\nSet-Cookie: x=1\r\n",
    ] {
        let mut req = b"GET /api/x HTTP/1.1\r\nHost: x\r\n".to_vec();
        req.extend_from_slice(bad);
        req.extend_from_slice(b"\r\n");
        let r = exchange(p.addr(), &req).await;
        assert_eq!(r.status(), 400, "{}", r.text);
        assert!(
            !r.text.to_ascii_lowercase().contains("set-cookie"),
            "{}",
            r.text
        );
        assert!(!r.text.contains("access-control"), "{}", r.text);
    }
    // obs-text and many Origin fields: forwarded, nothing echoed.
    let mut req =
        b"GET /api/x HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example.com\xff\r\n\r\n".to_vec();
    let r = exchange(p.addr(), &req).await;
    assert!(!r.text.contains("Access-Control"), "{}", r.text);
    req = b"GET /api/x HTTP/1.1\r\nHost: x\r\n".to_vec();
    for _ in 0..50 {
        req.extend_from_slice(b"Origin: https://a.example.com\r\n");
    }
    req.extend_from_slice(b"Connection: close\r\n\r\n");
    let r = exchange(p.addr(), &req).await;
    assert!(r.text.starts_with("HTTP/1.1 200"), "{}", r.text);
    assert!(!r.text.contains("Access-Control"), "{}", r.text);
}

/// 20 requests at once per key, then 1 per second: a 20 s window, so a slow machine
/// cannot refill the budget while the test runs.
const LIMIT_IP: &str = r#"rate_limit = { per_second = 1, burst = 20, key = "ip" }"#;

/// Sends `n` GETs to `path` on one connection with extra header lines; the statuses.
async fn statuses(p: &Proxy, path: &str, extra: &str, n: usize) -> Vec<Message> {
    let mut c = RawClient::connect(p.addr()).await;
    let mut out = Vec::new();
    for _ in 0..n {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes())
            .await
            .expect("send");
        out.push(
            c.response(false, Duration::from_secs(5))
                .await
                .expect("response"),
        );
    }
    out
}

fn count(ms: &[Message], status: u16) -> usize {
    ms.iter().filter(|m| m.status == status).count()
}

#[tokio::test]
async fn rate_limit_by_ip_answers_429_with_retry_after_and_counts_it() {
    let be = RawBackend::start().await;
    let p = proxy_with(&be, LIMIT_IP).await;
    let ms = statuses(&p, "/api/x", "", 25).await;
    assert_eq!(count(&ms, 200), 20);
    assert_eq!(count(&ms, 429), 5);
    let refused = &ms[24];
    let retry: u32 = header(refused, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    // A spent burst of 20 at 1/s waits for the 20 s window to slide.
    assert!((1..=20).contains(&retry), "{retry}");
    assert!(refused.body_text().contains("too many requests"));
    assert_eq!(
        p.metric("switchyard_refused_total{reason=\"rate_limited\"}")
            .await,
        5.0
    );
    assert_eq!(
        be.settle(20, Duration::from_secs(5)).await.messages.len(),
        20
    );
    // Another route of the same client is not limited.
    let ms = statuses(&p, "/web", "", 30).await;
    assert_eq!(count(&ms, 200), 30);
}

#[tokio::test]
async fn rate_limit_by_header_keeps_keys_apart_and_falls_back_to_the_ip() {
    let be = RawBackend::start().await;
    let p = proxy_with(
        &be,
        r#"rate_limit = { per_second = 1, burst = 20, key = "header:x-api-key" }"#,
    )
    .await;
    let a = statuses(&p, "/api/x", "X-Api-Key: a\r\n", 22).await;
    assert_eq!((count(&a, 200), count(&a, 429)), (20, 2));
    let b = statuses(&p, "/api/x", "X-Api-Key: b\r\n", 5).await;
    assert_eq!(count(&b, 200), 5, "key b has its own budget");
    // Without the header: limited by client address, its own budget.
    let none = statuses(&p, "/api/x", "", 21).await;
    assert_eq!((count(&none, 200), count(&none, 429)), (20, 1));
    assert_eq!(
        p.metric("switchyard_refused_total{reason=\"rate_limited\"}")
            .await,
        3.0
    );
}

/// A flood of 429s during a switch's watch window is not the new color's fault.
#[tokio::test]
async fn rate_limited_requests_never_move_a_switch() {
    let be = RawBackend::start().await;
    let p = proxy_with(
        &be,
        r#"rate_limit = { per_second = 1, burst = 1, key = "ip" }"#,
    )
    .await;
    p.wait_healthy().await;
    let flood = {
        let addr = p.addr();
        tokio::spawn(async move {
            let mut c = RawClient::connect(addr).await;
            let mut refused = 0;
            for _ in 0..200 {
                c.send(b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .expect("send");
                let m = c
                    .response(false, Duration::from_secs(5))
                    .await
                    .expect("response");
                refused += usize::from(m.status == 429);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            refused
        })
    };
    assert_eq!(p.ctl_last("switch green").await, "ok active=green");
    assert!(flood.await.expect("flood") >= 150);
}

/// Memory design: the limiter's counters are a fixed-size sketch, so 4,000 distinct 8 KB
/// keys (32 MB of keys, which any table of keys would have to hold) leave the proxy's
/// resident memory where it was.
#[tokio::test]
async fn rate_limit_memory_stays_flat_under_a_flood_of_spoofed_keys() {
    let bes = Backends::start().await;
    let routes = format!(
        "[[route]]\nname = \"api\"\npath_prefix = \"/\"\nblue = [\"{}\"]\ngreen = [\"{}\"]\nrate_limit = {{ per_second = 100, burst = 100, key = \"header:x-api-key\" }}\n",
        bes.blue.addr(),
        bes.green.addr()
    );
    let p = Proxy::start(&Setup::new(routes)).await;
    let flood = |from: usize, n: usize| {
        let addr = p.addr();
        tokio::spawn(async move {
            let mut c = RawClient::connect(addr).await;
            for i in from..from + n {
                let key = format!("{i:08}{}", "k".repeat(8000));
                c.send(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\n\r\n").as_bytes())
                    .await
                    .expect("send");
                let m = c
                    .response(false, Duration::from_secs(10))
                    .await
                    .expect("response");
                assert!(m.status == 200 || m.status == 429, "{}", m.status);
            }
        })
    };
    for t in [flood(0, 250), flood(250, 250)] {
        t.await.expect("warm-up");
    }
    let before = rss_kb(p.pid());
    let tasks: Vec<_> = (0..4).map(|i| flood(1000 + i * 1000, 1000)).collect();
    for t in tasks {
        t.await.expect("flood");
    }
    let after = rss_kb(p.pid());
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} kB to {after} kB under 32 MB of distinct keys"
    );
}

fn rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn body_over_max_body_bytes_is_refused_before_the_backend_sees_a_byte() {
    let be = RawBackend::start().await;
    let p = proxy_with(&be, "max_body_bytes = 100").await;
    let body = "x".repeat(101);
    // Content-Length over the limit: 413 from the head, body unread, connection closed.
    let r = exchange(
        p.addr(),
        format!("POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n{body}").as_bytes(),
    )
    .await;
    assert_eq!(r.status(), 413, "{}", r.text);
    assert!(r.closed && r.says_close());
    // Expect: 100-continue with an oversized length: 413 and never a 100.
    let mut c = RawClient::connect(p.addr()).await;
    c.send(b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .expect("send");
    let seen = c.read(1, false, QUIET).await;
    assert!(seen.interim.is_empty(), "interim {:?}", seen.interim);
    assert_eq!(seen.statuses(), [413]);
    // Chunked, over the limit only in its second chunk, sent in two parts: 413, nothing
    // forwarded (not even the head).
    let mut c = RawClient::connect(p.addr()).await;
    c.send(b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n50\r\n")
        .await
        .expect("send");
    c.send(&[b'a'; 0x50]).await.expect("send");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = c
        .send(format!("\r\n20\r\n{}\r\n0\r\n\r\n", "b".repeat(0x20)).as_bytes())
        .await;
    let seen = c.read(1, false, QUIET).await;
    assert_eq!(seen.statuses(), [413]);
    assert!(seen.closed);
    tokio::time::sleep(QUIET).await;
    assert_eq!(be.received().raw.len(), 0, "{:?}", be.received().messages);
    assert_eq!(
        p.metric("switchyard_refused_total{reason=\"body_too_large\"}")
            .await,
        3.0
    );
}

#[tokio::test]
async fn body_within_max_body_bytes_reaches_the_backend_whole() {
    let be = RawBackend::start().await;
    let p = proxy_with(&be, "max_body_bytes = 100").await;
    let mut c = RawClient::connect(p.addr()).await;
    // Exactly at the limit, by length.
    c.send(
        format!(
            "POST /api/a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}",
            "x".repeat(100)
        )
        .as_bytes(),
    )
    .await
    .expect("send");
    assert_eq!(
        c.response(false, Duration::from_secs(5))
            .await
            .expect("a")
            .status,
        200
    );
    // Chunked in pieces, with Expect: the 100 comes from the edge, then the whole body.
    c.send(b"POST /api/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        .await
        .expect("send");
    let m = c
        .response(false, Duration::from_secs(5))
        .await
        .expect("100");
    assert_eq!(m.status, 100);
    c.send(b"30\r\n").await.expect("send");
    c.send(&[b'c'; 0x30]).await.expect("send");
    c.send(b"\r\n34\r\n").await.expect("send");
    c.send(&[b'd'; 0x34]).await.expect("send");
    c.send(b"\r\n0\r\n\r\n").await.expect("send");
    let seen = c.read(1, false, QUIET).await;
    assert_eq!(seen.statuses(), [200]);
    let got = be.settle(2, Duration::from_secs(5)).await;
    assert_eq!(got.messages.len(), 2);
    assert_eq!(got.messages[0].body, vec![b'x'; 100]);
    let mut want = vec![b'c'; 0x30];
    want.extend_from_slice(&[b'd'; 0x34]);
    assert_eq!(got.messages[1].body, want);
    assert!(got.garbage.is_empty(), "{:?}", got.garbage);
}

#[tokio::test]
async fn read_timeout_per_route_gives_504() {
    let be = RawBackend::start().await;
    let p = proxy_with(&be, "read_timeout = \"300ms\"").await;
    be.script([Answer::After(Duration::from_secs(3), Box::new(ok("late")))]);
    let m = one(&p, "GET /api/slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(m.status, 504);
    assert_eq!(
        p.metric("switchyard_upstream_errors_total{color=\"blue\",kind=\"timeout\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn write_timeout_per_route_gives_504_when_the_backend_stops_reading() {
    // A backend that accepts and never reads: its receive window fills, then our writes wait.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            keep.push(s);
        }
    });
    let routes = format!(
        "[[route]]\nname = \"up\"\npath_prefix = \"/\"\nblue = [\"{addr}\"]\ngreen = [\"{addr}\"]\nwrite_timeout = \"500ms\"\n"
    );
    let p = Proxy::start(&Setup::new(routes)).await;
    let len = 64 << 20;
    let mut s = tokio::net::TcpStream::connect(p.addr())
        .await
        .expect("connect");
    s.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
    )
    .await
    .expect("head");
    let (mut rd, mut wr) = s.into_split();
    let sender = tokio::spawn(async move {
        let chunk = vec![b'z'; 1 << 16];
        for _ in 0..(len >> 16) {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout(Duration::from_secs(20), rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!("no answer: {other:?} {}", String::from_utf8_lossy(&got)),
        }
    }
    assert!(
        got.starts_with(b"HTTP/1.1 504"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    sender.abort();
    held.abort();
}

/// switchyard's own answers to HEAD carry no body: the next response on the connection
/// must not start inside one.
#[tokio::test]
async fn own_answers_to_head_requests_have_no_body() {
    let be = RawBackend::start().await;
    let p = proxy_with(
        &be,
        r#"rate_limit = { per_second = 1, burst = 1, key = "ip" }"#,
    )
    .await;
    let mut c = RawClient::connect(p.addr()).await;
    c.send(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /api/b HTTP/1.1\r\nHost: x\r\n\r\nGET /api/c HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let first = c
        .response(false, Duration::from_secs(5))
        .await
        .expect("200");
    assert_eq!(first.status, 200);
    let head = c
        .response(true, Duration::from_secs(5))
        .await
        .expect("429 to HEAD");
    assert_eq!(head.status, 429);
    let third = c
        .response(false, Duration::from_secs(5))
        .await
        .expect("429");
    assert_eq!(third.status, 429);
    assert!(third.body_text().contains("too many requests"));
}

/// A page must be able to read its 429 or 413: on a CORS route they carry the CORS
/// headers for an allowed origin (and none for another).
#[tokio::test]
async fn refusals_on_a_cors_route_carry_its_headers() {
    let be = RawBackend::start().await;
    let policy = format!(
        "{CORS}\nrate_limit = {{ per_second = 1, burst = 1, key = \"ip\" }}\nmax_body_bytes = 10"
    );
    let p = proxy_with(&be, &policy).await;
    let get = |origin: &str| format!("GET /api/x HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\r\n");
    assert_eq!(one(&p, &get("https://app.example.com")).await.status, 200);
    let limited = one(&p, &get("https://app.example.com")).await;
    assert_eq!(limited.status, 429);
    assert_eq!(
        header(&limited, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let other = one(&p, &get("https://evil.com")).await;
    assert_eq!(other.status, 429);
    assert!(cors_fields(&other).is_empty());
    let big = one(
        &p,
        "POST /api/x HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example.com\r\nContent-Length: 11\r\n\r\n",
    )
    .await;
    assert_eq!(big.status, 413);
    assert_eq!(
        header(&big, "access-control-allow-origin").as_deref(),
        Some("https://a.example.com")
    );
}

/// The keys exactly as DESIGN.md writes them (commented out in its example) pass `check`.
#[test]
fn the_design_examples_route_policies_pass_check() {
    let design = include_str!("fixtures/design.toml");
    let text = design
        .replace("# cors = ", "cors = ")
        .replace("# rate_limit = ", "rate_limit = ")
        .replace(
            "# max_body_bytes = 1048576; read_timeout = \"30s\"; write_timeout = \"30s\"",
            "max_body_bytes = 1048576\nread_timeout = \"30s\"\nwrite_timeout = \"30s\"",
        );
    assert_ne!(text, design, "the example's policy lines moved");
    for key in [
        "\ncors = {",
        "\nrate_limit = {",
        "\nmax_body_bytes = 1048576\n",
        "\nwrite_timeout = \"30s\"",
    ] {
        assert!(text.contains(key), "{key}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("design.toml");
    std::fs::write(&path, text).expect("write");
    let out = std::process::Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
