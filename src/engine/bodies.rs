//! Moving bytes with inactivity bounds: writes to the client within `client_send_timeout`,
//! writes to the backend within `upstream_read_timeout`, and the rest of a request body
//! going up while the response already comes down (a streaming echo, an early answer).
//!
//! Every bound is on inactivity (one read or write making no progress), never on a whole
//! body: a long download is fine, a client that stopped reading is not. No timer is created
//! for a read or write that is ready at once, which is nearly all of them.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::framing::Body;
use crate::request::Failure;

/// Runs `f`, giving up (`None`) when it is not done within `d`.
pub async fn within<F: Future>(d: Duration, f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    if let Poll::Ready(v) = std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await {
        return Some(v);
    }
    tokio::time::timeout(d, f).await.ok()
}

/// Writes `bytes` to the client and flushes; a client that takes nothing for `d` is cut.
pub async fn send<W>(client: &mut W, bytes: &[u8], d: Duration) -> Result<(), Failure>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let w = within(d, async {
        client.write_all(bytes).await?;
        client.flush().await
    });
    match w.await {
        Some(Ok(())) => Ok(()),
        Some(Err(_)) => Err(Failure::ClientGone),
        None => Err(Failure::ClientStalled),
    }
}

/// Writes `bytes` to the backend; one that takes nothing for `d` is given up on.
pub async fn send_up<W>(up: &mut W, bytes: &[u8], d: Duration) -> Result<(), Failure>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    match within(d, up.write_all(bytes)).await {
        Some(Ok(())) => Ok(()),
        Some(Err(_)) => Err(Failure::Reset),
        None => Err(Failure::Timeout),
    }
}

/// The bounds an upload runs under.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The client's longest pause inside its body (`[limits] idle_timeout`).
    pub client_stall: Duration,
    /// The backend's longest refusal to take bytes (`[server] upstream_read_timeout`).
    pub upstream: Duration,
}

/// Sends the rest of the request body: what `buf[..*len]` holds, then what the client
/// sends, until the body's framing says it is complete. Bytes after the body stay in `buf`.
/// The buffer is the connection's own: memory stays bounded by it, and the client is not
/// read while the backend is not taking.
pub async fn upload<R, W>(
    client: &mut R,
    buf: &mut [u8],
    len: &mut usize,
    body: &mut Body,
    up: &mut W,
    bounds: Bounds,
) -> Result<(), Failure>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    loop {
        let n = body
            .feed(&buf[..*len], &mut |_| {})
            .map_err(|_| Failure::ClientProtocol)?;
        if n > 0 {
            send_up(up, &buf[..n], bounds.upstream).await?;
            buf.copy_within(n..*len, 0);
            *len -= n;
        }
        if body.is_done() {
            return Ok(());
        }
        if *len == buf.len() {
            // A chunk-size line longer than the whole buffer: not a body anyone sends.
            return Err(Failure::ClientProtocol);
        }
        match within(bounds.client_stall, client.read(&mut buf[*len..])).await {
            Some(Ok(k)) if k > 0 => *len += k,
            Some(_) => return Err(Failure::ClientGone),
            None => return Err(Failure::ClientStalled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::framing::Framing;

    #[tokio::test]
    async fn upload_sends_exactly_the_body_and_keeps_what_follows() {
        let (mut client, mut feed) = tokio::io::duplex(64);
        let mut up = Vec::new();
        let mut buf = vec![0u8; 32];
        buf[..3].copy_from_slice(b"hel");
        let mut len = 3;
        let mut body = Body::new(Framing::Length(10));
        feed.write_all(b"lo worldGET /").await.expect("feed");
        let bounds = Bounds {
            client_stall: Duration::from_secs(5),
            upstream: Duration::from_secs(5),
        };
        upload(&mut client, &mut buf, &mut len, &mut body, &mut up, bounds)
            .await
            .expect("upload");
        assert_eq!(up, b"hello worl");
        assert_eq!(&buf[..len], b"dGET /");
    }

    #[tokio::test]
    async fn a_client_that_stops_sending_is_a_stall() {
        let (mut client, _feed) = tokio::io::duplex(64);
        let mut up = Vec::new();
        let mut buf = vec![0u8; 32];
        let mut len = 0;
        let mut body = Body::new(Framing::Length(10));
        let bounds = Bounds {
            client_stall: Duration::from_millis(10),
            upstream: Duration::from_secs(5),
        };
        let r = upload(&mut client, &mut buf, &mut len, &mut body, &mut up, bounds).await;
        assert_eq!(r, Err(Failure::ClientStalled));
    }
}
