//! Hostile HTTP/2 input (issue 13): frames written by hand on a raw socket, since a real
//! HTTP/2 client cannot send broken ones. A bad preface, an oversized frame, a header block
//! that is not valid HPACK, frames on a closed stream and a rapid-reset flood (HEADERS then
//! RST_STREAM in a loop, CVE-2023-44487), a CONTINUATION flood (CVE-2024-27316) and a header
//! block that never ends must neither take the proxy down nor reach the backend unbounded;
//! the recording raw backend counts what reached it.

mod common;

use std::time::Duration;

use common::raw_backend::RawBackend;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const PROTOCOL_ERROR: u32 = 0x1;
const FRAME_SIZE_ERROR: u32 = 0x6;
const COMPRESSION_ERROR: u32 = 0x9;
const STREAM_CLOSED: u32 = 0x5;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET /` for `localhost` in HPACK without the dynamic table: indexed `:method GET`,
/// `:scheme http`, `:path /`, and `:authority` as a literal without indexing.
fn get_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x84, 0x01, 9];
    b.extend_from_slice(b"localhost");
    b
}

fn request(stream: u32) -> Vec<u8> {
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &get_block())
}

/// A connection that sent the preface and an empty SETTINGS.
async fn h2c(p: &Proxy) -> TcpStream {
    let mut s = TcpStream::connect(p.addr()).await.expect("connect");
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).await.expect("preface");
    s
}

/// Frames the proxy sends until it closes (or `limit` passes): (type, flags, stream,
/// payload).
async fn frames_until_close(s: &mut TcpStream, limit: Duration) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 16 * 1024];
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() >= at + 9 {
        let len = (usize::from(buf[at]) << 16)
            | (usize::from(buf[at + 1]) << 8)
            | usize::from(buf[at + 2]);
        if buf.len() < at + 9 + len {
            break;
        }
        let stream =
            u32::from_be_bytes([buf[at + 5], buf[at + 6], buf[at + 7], buf[at + 8]]) & 0x7fff_ffff;
        out.push((
            buf[at + 3],
            buf[at + 4],
            stream,
            buf[at + 9..at + 9 + len].to_vec(),
        ));
        at += 9 + len;
    }
    out
}

fn goaway_code(frames: &[(u8, u8, u32, Vec<u8>)]) -> Option<u32> {
    frames
        .iter()
        .rev()
        .find(|f| f.0 == GOAWAY && f.3.len() >= 8)
        .map(|f| u32::from_be_bytes([f.3[4], f.3[5], f.3[6], f.3[7]]))
}

async fn setup() -> (RawBackend, Proxy) {
    let raw = RawBackend::start().await;
    let mut s = Setup::new(raw.route());
    s.health = RawBackend::health();
    s.listen_extra = "http2 = true\n".into();
    let p = Proxy::start(&s).await;
    p.wait_healthy().await;
    (raw, p)
}

/// Nothing of the abuse reached the backend, and the proxy still serves.
async fn untouched_and_serving(raw: &RawBackend, p: &Proxy) {
    assert!(
        raw.received().messages.is_empty(),
        "nothing reached the backend"
    );
    still_serving(p).await;
}

/// The proxy still serves HTTP/1.1 and HTTP/2 after the abuse.
async fn still_serving(p: &Proxy) {
    assert_eq!(
        get(&p.url("/after")).await.status,
        200,
        "HTTP/1.1 still served"
    );
    let mut s = h2c(p).await;
    s.write_all(&request(1)).await.expect("request");
    let frames = frames_until_close(&mut s, Duration::from_millis(500)).await;
    assert!(
        frames.iter().any(|f| f.0 == HEADERS && f.2 == 1),
        "HTTP/2 still served: {frames:?}"
    );
}

#[tokio::test]
async fn a_bad_preface_or_a_broken_frame_ends_only_that_connection() {
    let (raw, p) = setup().await;

    // Almost the preface: not HTTP/2, and not valid HTTP/1.1 either.
    let mut s = TcpStream::connect(p.addr()).await.expect("connect");
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // The preface, then a SETTINGS frame on a stream (it belongs to the connection).
    let mut s = TcpStream::connect(p.addr()).await.expect("connect");
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 1, &[]));
    s.write_all(&bytes).await.expect("write");
    let frames = frames_until_close(&mut s, Duration::from_secs(3)).await;
    assert_eq!(goaway_code(&frames), Some(PROTOCOL_ERROR), "{frames:?}");

    // A frame larger than the 16 KiB SETTINGS_MAX_FRAME_SIZE.
    let mut s = h2c(&p).await;
    s.write_all(&frame(HEADERS, END_HEADERS, 1, &vec![0x82; 20_000]))
        .await
        .expect("write");
    let frames = frames_until_close(&mut s, Duration::from_secs(3)).await;
    assert_eq!(goaway_code(&frames), Some(FRAME_SIZE_ERROR), "{frames:?}");

    // A header block that is not HPACK: an index past the static table with an empty
    // dynamic one.
    let mut s = h2c(&p).await;
    s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x80 | 70]))
        .await
        .expect("write");
    let frames = frames_until_close(&mut s, Duration::from_secs(3)).await;
    // RFC 9113 says COMPRESSION_ERROR; the h2 crate says PROTOCOL_ERROR. Either way the
    // connection ends, since its HPACK state can no longer be trusted.
    assert!(
        matches!(
            goaway_code(&frames),
            Some(COMPRESSION_ERROR | PROTOCOL_ERROR)
        ),
        "{frames:?}"
    );

    untouched_and_serving(&raw, &p).await;
}

#[tokio::test]
async fn frames_on_a_closed_stream_are_refused_and_the_request_went_up_once() {
    let (raw, p) = setup().await;
    let mut s = h2c(&p).await;
    s.write_all(&request(1)).await.expect("request");
    // Let the response come, then keep sending on the finished stream.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut late = frame(DATA, END_STREAM, 1, b"late body");
    late.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &get_block()));
    s.write_all(&late).await.expect("late frames");
    let frames = frames_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(
        frames.iter().any(|f| f.0 == HEADERS && f.2 == 1),
        "stream 1 answered: {frames:?}"
    );
    let closed = goaway_code(&frames) == Some(STREAM_CLOSED)
        || frames.iter().any(|f| {
            f.0 == RST_STREAM && f.2 == 1 && f.3.get(..4) == Some(&STREAM_CLOSED.to_be_bytes()[..])
        });
    assert!(closed, "STREAM_CLOSED for frames after the end: {frames:?}");
    assert_eq!(raw.received().messages.len(), 1, "the request went up once");
    still_serving(&p).await;
}

#[tokio::test]
async fn a_rapid_reset_flood_is_cut_off_and_reaches_the_backend_boundedly() {
    let (raw, p) = setup().await;
    const CONNECTIONS: usize = 4;
    const PAIRS: u32 = 5_000;
    let mut floods = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut s = h2c(&p).await;
        floods.push(tokio::spawn(async move {
            let mut batch = Vec::new();
            for i in 0..PAIRS {
                let id = 2 * i + 1;
                batch.extend(request(id));
                batch.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
                if batch.len() > 64 * 1024 {
                    if s.write_all(&batch).await.is_err() {
                        // The proxy gave up on this connection: the point of the test.
                        return frames_until_close(&mut s, Duration::from_secs(2)).await;
                    }
                    batch.clear();
                }
            }
            let _ = s.write_all(&batch).await;
            frames_until_close(&mut s, Duration::from_secs(5)).await
        }));
    }
    let mut cut = 0;
    for f in floods {
        let frames = f.await.expect("flood");
        if goaway_code(&frames) == Some(ENHANCE_YOUR_CALM) {
            cut += 1;
        }
    }
    assert_eq!(
        cut, CONNECTIONS,
        "every flooding connection ended with GOAWAY(ENHANCE_YOUR_CALM)"
    );
    // Let whatever was accepted finish reaching the backend, then count it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reached = raw.received().messages.len();
    let sent = CONNECTIONS * PAIRS as usize;
    assert!(
        reached <= CONNECTIONS * 200,
        "{reached} of {sent} reset requests reached the backend"
    );
    eprintln!("rapid reset: {reached} of {sent} reset requests reached the backend");
    still_serving(&p).await;
}

#[tokio::test]
async fn resets_after_the_proxy_accepted_each_stream_stay_bounded() {
    let (raw, p) = setup().await;
    raw.script(std::iter::repeat_n(
        common::raw_backend::Answer::After(
            Duration::from_secs(2),
            Box::new(common::raw_backend::ok("slow")),
        ),
        5000,
    ));
    const PAIRS: u32 = 2_000;
    let mut s = h2c(&p).await;
    let mut written = 0;
    for i in 0..PAIRS {
        let id = 2 * i + 1;
        if s.write_all(&request(id)).await.is_err() {
            break;
        }
        // The stream is accepted (and forwarded) before its reset arrives.
        tokio::time::sleep(Duration::from_micros(200)).await;
        if s.write_all(&frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()))
            .await
            .is_err()
        {
            break;
        }
        written += 1;
    }
    let frames = frames_until_close(&mut s, Duration::from_secs(3)).await;
    let reached = raw.received().messages.len();
    assert!(
        reached <= 200,
        "{reached} of {written} reset requests reached the backend"
    );
    assert_eq!(goaway_code(&frames), Some(ENHANCE_YOUR_CALM), "{frames:?}");
    raw.reset();
    still_serving(&p).await;
}

const CONTINUATION: u8 = 9;

#[tokio::test]
async fn a_continuation_flood_ends_the_connection_with_nothing_upstream() {
    let (raw, p) = setup().await;
    let mut s = h2c(&p).await;
    // HEADERS without END_HEADERS, then CONTINUATION frames that never end the block
    // (CVE-2024-27316's shape): the header block outgrows any limit.
    let mut flood = frame(HEADERS, 0, 1, &get_block());
    // Valid HPACK (a literal field without indexing, 127-byte value), so the flood is judged
    // on size alone.
    let filler = {
        let mut b = vec![0x00, 10];
        b.extend_from_slice(b"x-filler-a");
        b.extend_from_slice(&[0x7f, 0x00]);
        b.extend(std::iter::repeat_n(b'b', 127));
        b
    };
    for _ in 0..2_000 {
        flood.extend(frame(CONTINUATION, 0, 1, &filler));
    }
    let _ = s.write_all(&flood).await;
    let frames = frames_until_close(&mut s, Duration::from_secs(5)).await;
    assert_eq!(goaway_code(&frames), Some(ENHANCE_YOUR_CALM), "{frames:?}");
    untouched_and_serving(&raw, &p).await;
}

#[tokio::test]
async fn a_header_block_that_never_ends_does_not_hold_the_connection_forever() {
    let raw = RawBackend::start().await;
    let mut setup = Setup::new(raw.route());
    setup.health = RawBackend::health();
    setup.listen_extra = "http2 = true\n".into();
    setup.extra = "[limits]\nidle_timeout = \"1s\"\n".into();
    let p = Proxy::start(&setup).await;
    p.wait_healthy().await;
    let mut s = h2c(&p).await;
    s.write_all(&frame(HEADERS, 0, 1, &get_block()))
        .await
        .expect("half a header block");
    // No stream is open until the block ends, so the idle timeout applies: the proxy closes.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was still open after 10 s");
    untouched_and_serving(&raw, &p).await;
}
