//! An upgraded connection (WebSocket after a 101): the engine owns both sockets and copies
//! bytes each way itself, with no buffer held while both sides are quiet (a buffer is lent
//! around each read) and no read timeout (an idle WebSocket is normal).
//!
//! The server-to-client bytes go through a [`FrameTracker`], so a handover (drain deadline,
//! shutdown) puts a 1012 close frame at a frame boundary and never inside a frame; then the
//! relay waits briefly for the client's own close frame (RFC 6455 §7.1.1: the server closes
//! the TCP connection after the closing handshake) and ends both sockets. When to hand over
//! is drain.rs's call; this module only reacts to it.

use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use pingora::protocols::Stream;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::pool;
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
    std::future::poll_fn(|cx| {
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
    })
    .await
}

/// How an upgraded connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// One side closed; the other was closed after it.
    Closed,
    /// The backend's socket failed (reset): on record, never against the color after a 101.
    UpstreamFailed,
    /// The client's socket failed.
    ClientFailed,
    /// Handed over with a 1012 close frame.
    HandedOver,
}

/// Relays until one side closes or a handover ends it. `frames` has already seen what was
/// sent to the client with the 101.
pub async fn relay(
    client: &mut Stream,
    up: &mut TcpStream,
    handle: &WsHandle,
    mut frames: FrameTracker,
    size: usize,
) -> Ended {
    loop {
        if handle.closing() && frames.at_boundary() {
            return hand_over(client, &[], size).await;
        }
        tokio::select! {
            _ = handle.closed(), if !handle.closing() => {}
            r = read_lent(client, size) => match r {
                Ok((b, n)) if n > 0 => {
                    let w = up.write_all(&b[..n]).await;
                    pool::give_back(b);
                    if w.is_err() {
                        shut(client).await;
                        return Ended::UpstreamFailed;
                    }
                }
                Ok((b, _)) => {
                    pool::give_back(b);
                    let _ = up.shutdown().await;
                    return Ended::Closed;
                }
                Err(_) => return Ended::ClientFailed,
            },
            r = read_lent(up, size) => match r {
                Ok((b, n)) if n > 0 => {
                    let data = &b[..n];
                    if handle.closing() {
                        if let Some(cut) = frames.feed(data, true) {
                            let ended = hand_over(client, &data[..cut], size).await;
                            pool::give_back(b);
                            return ended;
                        }
                    } else {
                        frames.feed(data, false);
                    }
                    let w = client.write_all(data).await;
                    pool::give_back(b);
                    if w.is_err() || client.flush().await.is_err() {
                        return Ended::ClientFailed;
                    }
                }
                Ok((b, _)) => {
                    pool::give_back(b);
                    shut(client).await;
                    return Ended::Closed;
                }
                Err(_) => {
                    shut(client).await;
                    return Ended::UpstreamFailed;
                }
            },
        }
    }
}

/// Sends `before` (the rest of the frame in flight) and the 1012 close frame, then waits up
/// to [`CLOSE_REPLY_WAIT`] for the client's close frame or its end of stream, and closes.
async fn hand_over(client: &mut Stream, before: &[u8], size: usize) -> Ended {
    let mut out = Vec::with_capacity(before.len() + 32);
    out.extend_from_slice(before);
    out.extend_from_slice(&close_frame_1012());
    if client.write_all(&out).await.is_err() || client.flush().await.is_err() {
        return Ended::HandedOver;
    }
    let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, wait_close_reply(client, size)).await;
    shut(client).await;
    Ended::HandedOver
}

/// Reads client frames until its close frame (opcode 8) or the end of the stream.
async fn wait_close_reply(client: &mut Stream, size: usize) {
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

async fn shut(client: &mut Stream) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        pingora::protocols::Shutdown::shutdown(&mut **client),
    )
    .await;
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
