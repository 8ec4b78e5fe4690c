//! An upgraded connection (WebSocket after a 101): the engine owns both sockets and copies
//! bytes each way at once, with no buffer held while both sides are quiet (a buffer is lent
//! around each read) and no read timeout (an idle WebSocket is normal). A side's end of
//! stream is passed on as a half-close and the other direction goes on until it ends too;
//! a write that makes no progress for `[server] client_send_timeout` ends both.
//!
//! The server-to-client bytes go through a [`FrameTracker`], so a handover (drain deadline,
//! shutdown) puts a 1012 close frame at a frame boundary and never inside a frame; then the
//! relay waits briefly for the client's own close frame (RFC 6455 §7.1.1: the server closes
//! the TCP connection after the closing handshake) and ends both sockets. When to hand over
//! is drain.rs's call; this module only reacts to it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::client::Client;
use super::{bodies, pool};
use crate::drain::WsHandle;
use crate::wsframe::{close_frame_1012, FrameTracker};

/// How long the client has to answer a 1012 close frame with its own.
pub const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(1);

/// Reads into a buffer lent from the worker's pool only for the read itself: while the
/// read is pending the buffer is back in the pool, so a quiet connection holds none.
pub async fn read_lent<R>(r: &mut R, size: usize) -> io::Result<(Vec<u8>, usize)>
where
    R: AsyncRead + Unpin + ?Sized,
{
    std::future::poll_fn(|cx| poll_read_lent(r, cx, size)).await
}

/// One attempt of [`read_lent`].
pub fn poll_read_lent<R>(
    r: &mut R,
    cx: &mut Context<'_>,
    size: usize,
) -> Poll<io::Result<(Vec<u8>, usize)>>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut b = pool::buffer(size);
    let mut rb = ReadBuf::new(&mut b);
    match Pin::new(&mut *r).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) => {
            let n = rb.filled().len();
            Poll::Ready(Ok((b, n)))
        }
        Poll::Ready(Err(e)) => {
            pool::give_back(b);
            Poll::Ready(Err(e))
        }
        Poll::Pending => {
            pool::give_back(b);
            Poll::Pending
        }
    }
}

/// How an upgraded connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Both sides closed (each side's end was passed on to the other as a half-close).
    Closed,
    /// The backend's socket failed (reset), or stopped taking bytes for the send timeout:
    /// on record, never against the color after a 101.
    UpstreamFailed,
    /// The client's socket failed, or it stopped reading for the send timeout.
    ClientFailed,
    /// Handed over with a 1012 close frame, or cut at the drain deadline when the client
    /// could not even take that.
    HandedOver,
}

/// What ended the server-to-client direction.
enum Down {
    /// The backend's end of stream, passed on to the client.
    Eof,
    Failed(Ended),
    /// A handover: the lent buffer and how much of it completes the frame in flight.
    HandOver(Vec<u8>, usize),
}

/// Relays both directions at once until both have ended (a half-close of one side is
/// passed on and the other direction keeps going), one fails, or a handover ends it. A
/// write that makes no progress for `send_timeout` ends the connection. `frames` has
/// already seen what was sent to the client with the 101.
pub(crate) async fn relay(
    client: &mut Client,
    up: &mut TcpStream,
    handle: &WsHandle,
    mut frames: FrameTracker,
    size: usize,
    send_timeout: Duration,
) -> Ended {
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = up.split();
    let end = {
        let upward = upward(&mut cr, &mut uw, size, send_timeout);
        let downward = downward(&mut ur, &mut cw, handle, &mut frames, size, send_timeout);
        tokio::pin!(upward, downward);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut upward, if !up_done => match r {
                    Ok(()) => up_done = true,
                    Err(e) => break Down::Failed(e),
                },
                r = &mut downward, if !down_done => match r {
                    Down::Eof => down_done = true,
                    other => break other,
                },
                // The backend has ended its side (no 1012 can follow its end): a handover
                // ends what is left at once.
                _ = handle.closed(), if down_done => break Down::Failed(Ended::HandedOver),
            }
            if up_done && down_done {
                break Down::Failed(Ended::Closed);
            }
        }
    };
    match end {
        Down::HandOver(b, cut) => {
            hand_over(&mut cr, &mut cw, &b[..cut], size).await;
            pool::give_back(b);
            Ended::HandedOver
        }
        Down::Failed(e) => {
            // The client's side is already shut after the backend's end (Closed, and a
            // handover after it); a failed client is not waited on.
            if e == Ended::UpstreamFailed {
                shut(&mut cw).await;
            }
            e
        }
        Down::Eof => Ended::Closed,
    }
}

/// Client to backend until the client's end of stream, which becomes the backend's.
async fn upward<R, W>(client: &mut R, up: &mut W, size: usize, t: Duration) -> Result<(), Ended>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    loop {
        match read_lent(client, size).await {
            Ok((b, n)) if n > 0 => {
                let w = bodies::within(t, up.write_all(&b[..n])).await;
                pool::give_back(b);
                if !matches!(w, Some(Ok(()))) {
                    return Err(Ended::UpstreamFailed);
                }
            }
            Ok((b, _)) => {
                pool::give_back(b);
                let _ = bodies::within(t, up.shutdown()).await;
                return Ok(());
            }
            Err(_) => return Err(Ended::ClientFailed),
        }
    }
}

/// Backend to client, frames tracked, until the backend's end of stream (which becomes the
/// client's) or a handover.
async fn downward<R, W>(
    up: &mut R,
    client: &mut W,
    handle: &WsHandle,
    frames: &mut FrameTracker,
    size: usize,
    t: Duration,
) -> Down
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    loop {
        if handle.closing() && frames.at_boundary() {
            return Down::HandOver(Vec::new(), 0);
        }
        let r = tokio::select! {
            _ = handle.closed(), if !handle.closing() => continue,
            r = read_lent(up, size) => r,
        };
        let (b, n) = match r {
            Ok((b, n)) if n > 0 => (b, n),
            Ok((b, _)) => {
                pool::give_back(b);
                let _ = bodies::within(CLOSE_REPLY_WAIT, client.shutdown()).await;
                return Down::Eof;
            }
            Err(_) => return Down::Failed(Ended::UpstreamFailed),
        };
        if handle.closing() {
            if let Some(cut) = frames.feed(&b[..n], true) {
                return Down::HandOver(b, cut);
            }
        } else {
            frames.feed(&b[..n], false);
        }
        let sent = send_until_drain(client, &b[..n], handle, t).await;
        pool::give_back(b);
        if let Err(e) = sent {
            return Down::Failed(e);
        }
    }
}

/// Writes to the client within `t`; once a handover is asked for, within
/// [`CLOSE_REPLY_WAIT`] (a client that stopped reading must not keep a drained color's
/// WebSocket alive).
async fn send_until_drain<W>(
    client: &mut W,
    data: &[u8],
    handle: &WsHandle,
    t: Duration,
) -> Result<(), Ended>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let write = async {
        client.write_all(data).await?;
        client.flush().await
    };
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    if let Poll::Ready(r) = first {
        return r.map_err(|_| Ended::ClientFailed);
    }
    let mut closing = handle.closing();
    let mut deadline = Instant::now() + t;
    if closing {
        deadline = deadline.min(Instant::now() + CLOSE_REPLY_WAIT);
    }
    loop {
        tokio::select! {
            r = &mut write => return r.map_err(|_| Ended::ClientFailed),
            _ = tokio::time::sleep_until(deadline) => {
                return Err(if closing { Ended::HandedOver } else { Ended::ClientFailed });
            }
            _ = handle.closed(), if !closing => {
                closing = true;
                deadline = deadline.min(Instant::now() + CLOSE_REPLY_WAIT);
            }
        }
    }
}

/// Sends `before` (the rest of the frame in flight) and the 1012 close frame, then waits up
/// to [`CLOSE_REPLY_WAIT`] for the client's close frame or its end of stream, and closes.
async fn hand_over<R, W>(client_r: &mut R, client_w: &mut W, before: &[u8], size: usize)
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut out = Vec::with_capacity(before.len() + 32);
    out.extend_from_slice(before);
    out.extend_from_slice(&close_frame_1012());
    let sent = bodies::within(CLOSE_REPLY_WAIT, async {
        client_w.write_all(&out).await?;
        client_w.flush().await
    })
    .await;
    if !matches!(sent, Some(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, wait_close_reply(client_r, size)).await;
    shut(client_w).await;
}

/// Reads client frames until its close frame (opcode 8) or the end of the stream.
async fn wait_close_reply<R>(client: &mut R, size: usize)
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut frames = FrameTracker::default();
    loop {
        let Ok((b, n)) = read_lent(client, size).await else {
            return;
        };
        let found = n == 0 || has_close_frame(&mut frames, &b[..n]);
        pool::give_back(b);
        if found {
            return;
        }
    }
}

/// Feeds client-to-server bytes; true once a close frame starts among them.
fn has_close_frame(frames: &mut FrameTracker, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        if frames.at_boundary() {
            if data[0] & 0x0f == 0x8 {
                return true;
            }
            frames.feed(&data[..1], false);
            data = &data[1..];
            continue;
        }
        match frames.feed(data, true) {
            Some(n) if n > 0 => data = &data[n..],
            _ => return false,
        }
    }
    false
}

async fn shut<W>(client: &mut W)
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let _ = tokio::time::timeout(Duration::from_secs(1), client.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_close_frame_after_other_frames_in_any_split() {
        // A masked text frame "hi", then a masked close frame.
        let mut data = vec![0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        let close_at = data.len();
        data.extend_from_slice(&[0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xf4 ^ 2]);
        for split in 0..data.len() {
            let mut t = FrameTracker::default();
            let first = has_close_frame(&mut t, &data[..split]);
            let second = has_close_frame(&mut t, &data[split..]);
            assert_eq!(first, split > close_at, "split {split}");
            assert!(first || second, "split {split}");
        }
        let mut t = FrameTracker::default();
        assert!(!has_close_frame(&mut t, &data[..close_at]));
    }
}
