//! The front door's defences that do not depend on how a request is parsed: the refusal
//! type every path answers with ([`Refusal`]), the raw-byte checks httparse leaves to the
//! application ([`has_bare_lf`]), and the connection cap (a [`Slot`] per open client
//! connection, and the canned 503 past `[limits] max_connections`).
//!
//! The request-head checks themselves are engine/head.rs's (RFC 9112 on httparse's view);
//! the header and keep-alive deadlines are the connection loop's (engine/mod.rs). This
//! module does not route, count per color or decide anything about switches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::{Shutdown, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a request is refused before it reaches a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: ambiguous or malformed framing; a backend might read it differently.
    BadRequest(&'static str),
    /// 431: the header block is larger or longer than `[limits]` allows.
    HeaderTooLarge(&'static str),
    /// 405: a method switchyard does not serve (CONNECT: it is not a forward proxy).
    Method(&'static str),
    /// 505: an HTTP/1.x request for a `grpc = true` route; gRPC needs HTTP/2 (its status
    /// travels in trailers) and a backend that speaks only gRPC cannot answer HTTP/1.1.
    Http2Required(&'static str),
    /// 413: the body is larger than the route's `max_body_bytes`.
    BodyTooLarge(&'static str),
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::HeaderTooLarge(_) => 431,
            Refusal::Method(_) => 405,
            Refusal::Http2Required(_) => 505,
            Refusal::BodyTooLarge(_) => 413,
        }
    }

    /// The `reason` label of `switchyard_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::BadRequest(_) | Refusal::Method(_) => "bad_request",
            Refusal::HeaderTooLarge(_) => "header_too_large",
            Refusal::Http2Required(_) => "http2_required",
            Refusal::BodyTooLarge(_) => "body_too_large",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Refusal::BadRequest(r)
            | Refusal::HeaderTooLarge(r)
            | Refusal::Method(r)
            | Refusal::Http2Required(r)
            | Refusal::BodyTooLarge(r) => r,
        }
    }
}

/// `b` without leading and trailing spaces and tabs (RFC 9110 OWS).
pub fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// Whether a line in `raw` ends in LF without CR.
pub fn has_bare_lf(raw: &[u8]) -> bool {
    raw.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
}

const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 33\r\nRetry-After: 1\r\nConnection: close\r\n\r\nswitchyard: too many connections\n";

/// One counted connection; dropping it frees the slot.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a slot unless `max` are taken.
pub fn take_slot(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
    open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        (n < max).then_some(n + 1)
    })
    .ok()
    .map(|_| Slot(open.clone()))
}

/// Answers a connection past the cap with the canned 503 and closes it.
pub async fn refuse_connection(mut stream: Stream) {
    let write = async {
        stream.write_all(TOO_MANY).await?;
        stream.flush().await
    };
    if tokio::time::timeout(Duration::from_secs(1), write)
        .await
        .is_err()
    {
        return;
    }
    Shutdown::shutdown(&mut *stream).await;
    // Read what the client already sent: closing with unread bytes would reset the
    // connection, and a reset can destroy the 503 before the client reads it.
    let _ = tokio::time::timeout(Duration::from_millis(50), async {
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_lf_is_found() {
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nX-A: o\nB: x\r\n\r\n"));
        assert!(has_bare_lf(b"\n"));
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(trim_ows(b" \tchunked \t"), b"chunked");
        assert_eq!(Refusal::Method("x").status(), 405);
    }

    #[test]
    fn slots_are_bounded_and_released() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = take_slot(&open, 2).expect("first");
        let b = take_slot(&open, 2).expect("second");
        assert!(take_slot(&open, 2).is_none());
        drop(a);
        assert!(take_slot(&open, 2).is_some());
        drop(b);
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }
}
