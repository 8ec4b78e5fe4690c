//! Moving bytes with inactivity bounds: writes to the client within `client_send_timeout`,
//! writes to the backend within `upstream_read_timeout`, and the rest of a request body
//! going up while the response already comes down (a streaming echo, an early answer).
//!
//! Every bound is on inactivity (one read or write making no progress), never on a whole
//! body: a long download is fine, a client that stopped reading is not. No timer is created
//! for a read or write that is ready at once, which is nearly all of them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::framing::Body;
use super::timer;
use crate::request::Failure;

/// Polls `poll` until it is ready, giving up (`None`) when it is not within `d`, on the
/// connection's own timer (timer.rs): the wait holds no timer of its own, which keeps it
/// out of every connection's future (and so out of the memory of every idle keep-alive
/// connection). A poll that is ready at once reads no clock.
pub fn within_on<T, P>(timer: Pin<&mut Sleep>, d: Duration, poll: P) -> Within<'_, P>
where
    P: FnMut(&mut Context<'_>) -> Poll<T> + Unpin,
{
    Within {
        timer,
        d,
        due: None,
        poll,
    }
}

/// The future of [`within_on`], written out: an `async fn` would hold its arguments twice,
/// and a future argument pinned a second time, in every connection's future.
pub struct Within<'t, P> {
    timer: Pin<&'t mut Sleep>,
    d: Duration,
    /// Set (and the timer armed) once the first poll found it not ready.
    due: Option<Instant>,
    poll: P,
}

impl<T, P> Future for Within<'_, P>
where
    P: FnMut(&mut Context<'_>) -> Poll<T> + Unpin,
{
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        if let Poll::Ready(v) = (this.poll)(cx) {
            return Poll::Ready(Some(v));
        }
        let due = match this.due {
            Some(due) => due,
            None => {
                let due = Instant::now() + this.d;
                timer::arm(this.timer.as_mut(), due);
                this.due = Some(due);
                due
            }
        };
        timer::expired(this.timer.as_mut(), due)
            .poll_unpin(cx)
            .map(|()| None)
    }
}

/// [`send`] on the connection's own timer.
pub fn send_on<'a, W>(
    timer: Pin<&'a mut Sleep>,
    client: &'a mut W,
    bytes: &'a [u8],
    d: Duration,
) -> impl Future<Output = Result<(), Failure>> + 'a
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut written = 0;
    let write = move |cx: &mut Context<'_>| -> Poll<io::Result<()>> {
        while written < bytes.len() {
            match Pin::new(&mut *client).poll_write(cx, &bytes[written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut *client).poll_flush(cx)
    };
    within_on(timer, d, write).map(|r| match r {
        Some(Ok(())) => Ok(()),
        Some(Err(_)) => Err(Failure::ClientGone),
        None => Err(Failure::ClientStalled),
    })
}

/// One read of `r` into `buf` on the connection's own timer: the bytes read (0 at the end
/// of the stream), `None` when nothing came within `d`.
pub fn read_on<'a, R>(
    timer: Pin<&'a mut Sleep>,
    r: &'a mut R,
    buf: &'a mut [u8],
    d: Duration,
) -> Within<'a, impl FnMut(&mut Context<'_>) -> Poll<io::Result<usize>> + Unpin + 'a>
where
    R: AsyncRead + Unpin + ?Sized,
{
    within_on(timer, d, move |cx: &mut Context<'_>| {
        let mut rb = ReadBuf::new(&mut *buf);
        Pin::new(&mut *r)
            .poll_read(cx, &mut rb)
            .map_ok(|()| rb.filled().len())
    })
}

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
    async fn within_on_gives_up_at_the_bound_and_passes_what_is_ready() {
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let ready = within_on(
            timer.as_mut(),
            Duration::from_millis(10),
            |_: &mut Context<'_>| Poll::Ready(7),
        )
        .await;
        assert_eq!(ready, Some(7));
        let start = Instant::now();
        let d = Duration::from_millis(20);
        let never = within_on(timer.as_mut(), d, |_: &mut Context<'_>| Poll::<()>::Pending).await;
        assert_eq!(never, None);
        assert!(Instant::now() >= start + d);
        // A reader that has bytes is read; a quiet one is given up on at the bound.
        let (mut a, mut b) = tokio::io::duplex(64);
        b.write_all(b"hi").await.expect("write");
        let mut buf = [0u8; 8];
        let n = read_on(timer.as_mut(), &mut a, &mut buf, d).await;
        assert!(matches!(n, Some(Ok(2))));
        let start = Instant::now();
        assert!(read_on(timer.as_mut(), &mut a, &mut buf, d).await.is_none());
        assert!(Instant::now() >= start + d);
        // What is sent arrives whole.
        send_on(timer.as_mut(), &mut b, b"hello", d)
            .await
            .expect("send");
        let n = read_on(timer.as_mut(), &mut a, &mut buf, d).await;
        assert!(matches!(n, Some(Ok(5))));
        assert_eq!(&buf[..5], b"hello");
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
