//! The lent-buffer read of a plain client socket, with tokio's rule for a short read.
//!
//! tokio keeps a socket marked readable after a successful read, because with
//! edge-triggered epoll it cannot know whether the read took everything; its `poll_read`
//! clears the mark when a read comes back shorter than the buffer (the receive queue was
//! emptied), but `try_read` does not. The engine reads a waiting client with `try_read`,
//! taking a buffer only once the socket is ready, so without that rule every request cost
//! one more `recv` that answered EAGAIN (about a fifth of the proxy's system calls). This module
//! applies the rule to that read. Nothing is lost by it: bytes that arrive after the read
//! raise a new epoll edge, and an end of stream that came with them stays marked (tokio never
//! clears the closed states).
//!
//! This module only reads; what the bytes mean is the engine's business.

use std::io;
use std::task::{Context, Poll};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// One read of `s` into `buf`: the bytes read, 0 at the end of the stream.
pub(crate) fn poll_read(
    s: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let room = buf.len();
    loop {
        // The read runs inside `try_io`, which takes the readiness it clears before the
        // read: cleared after it, an edge the reactor recorded in between (on another
        // thread) would be lost, and the connection would wait for bytes already there.
        // `try_io` answers WouldBlock at once, with no system call, when not ready.
        let mut n = 0;
        let r = s.try_io(Interest::READABLE, || {
            n = s.try_read(buf)?;
            if drained(n, room) {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match r {
            Ok(()) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if n > 0 {
                    return Poll::Ready(Ok(n));
                }
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
        // Not ready (or the readiness was stale): register for the next edge.
        std::task::ready!(s.poll_read_ready(cx))?;
    }
}

/// Whether a read of `n` bytes into a buffer of `room` emptied the receive queue: it came
/// back short and was not the end of the stream (which stays marked on its own).
fn drained(n: usize, room: usize) -> bool {
    n > 0 && n < room
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[test]
    fn only_a_short_nonempty_read_drains() {
        assert!(drained(5, 16));
        assert!(!drained(16, 16), "a full buffer may have left bytes behind");
        assert!(!drained(0, 16), "the end of the stream keeps its own mark");
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (b, _) = l.accept().await.expect("accept");
        (a, b)
    }

    fn marked_readable(s: &TcpStream) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        s.poll_read_ready(&mut cx).is_ready()
    }

    #[tokio::test]
    async fn a_full_read_keeps_the_mark() {
        let (mut w, r) = pair().await;
        let mut buf = [0u8; 4];
        w.write_all(b"abcd").await.expect("write");
        assert_eq!(read_within(&r, &mut buf).await, 4);
        assert!(
            marked_readable(&r),
            "a full buffer may have left bytes behind"
        );
    }

    async fn read_within(s: &TcpStream, buf: &mut [u8]) -> usize {
        let read = std::future::poll_fn(|cx| poll_read(s, cx, buf));
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("bytes written after a drained read must wake the reader")
            .expect("read")
    }

    #[tokio::test]
    async fn a_drained_socket_reads_what_comes_later() {
        let (mut w, r) = pair().await;
        let mut buf = [0u8; 64];
        for round in 0..50u8 {
            w.write_all(&[round; 3]).await.expect("write");
            assert_eq!(read_within(&r, &mut buf).await, 3);
            assert_eq!(buf[..3], [round; 3]);
        }
    }

    #[tokio::test]
    async fn a_drained_socket_is_not_readable_until_more_comes() {
        let (mut w, r) = pair().await;
        let mut buf = [0u8; 64];
        w.write_all(b"abc").await.expect("write");
        assert_eq!(read_within(&r, &mut buf).await, 3);
        // The mark is gone: the reactor says not ready (before the change it said ready,
        // and the next read was a system call answering EAGAIN).
        assert!(
            !marked_readable(&r),
            "a short read leaves the socket marked readable"
        );
        w.write_all(b"de").await.expect("write");
        assert_eq!(read_within(&r, &mut buf).await, 2);
    }

    #[tokio::test]
    async fn the_end_of_stream_after_a_drained_read_is_seen() {
        let (mut w, r) = pair().await;
        let mut buf = [0u8; 64];
        // The bytes and the FIN may reach the socket before one epoll report of both.
        w.write_all(b"last").await.expect("write");
        drop(w);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(read_within(&r, &mut buf).await, 4);
        assert_eq!(
            read_within(&r, &mut buf).await,
            0,
            "the end of stream is not lost"
        );
    }

    /// With the reactor on another thread, an edge can arrive between a short read and the
    /// clearing of the mark, and often does: the read opens the receive window, which wakes
    /// a sender that was blocked on it. Clearing the mark after the read would strand the
    /// bytes that came with that edge (an upload stalled this way before the mark was
    /// cleared from the readiness taken before the read).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_bytes_are_stranded_when_the_reactor_runs_on_another_thread() {
        const TOTAL: usize = 16 << 20;
        let (mut w, r) = pair().await;
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 << 10];
            let mut got = 0;
            while got < TOTAL {
                got += read_within(&r, &mut buf).await;
                // A reader a little slower than the sender keeps the sender blocked on the
                // window, so each read wakes it.
                std::thread::sleep(Duration::from_micros(20));
            }
            got
        });
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0;
        while sent < TOTAL {
            let n = chunk.len().min(TOTAL - sent);
            w.write_all(&chunk[..n]).await.expect("write");
            sent += n;
        }
        assert_eq!(reader.await.expect("reader"), TOTAL);
    }

    #[tokio::test]
    async fn a_full_buffer_leaves_the_rest_readable() {
        let (mut w, r) = pair().await;
        let mut buf = [0u8; 4];
        w.write_all(b"abcdefgh").await.expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(read_within(&r, &mut buf).await, 4);
        assert_eq!(read_within(&r, &mut buf).await, 4);
        assert_eq!(&buf, b"efgh");
    }
}
