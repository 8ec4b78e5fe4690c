//! Per-worker-thread pools: idle upstream connections and I/O buffers.
//!
//! Each worker runs its own current-thread runtime, so a thread-local pool needs no lock,
//! and a socket registered with one worker's reactor is only ever used on that worker.
//! Upstream connections are kept per server and color, taken last-in first-out (the most
//! recently used socket is the one least likely to have been closed by the backend), checked
//! for liveness when taken (readable or closed means the backend is gone or misbehaving: it
//! is dropped; by the reactor's view, or by the kernel's for a request that cannot be sent
//! again), and expired when the pool is touched and by one sweeper task per worker
//! (every second, only while the worker holds idle connections): no task or timer per idle
//! connection, and a server that gets no more traffic still has its connections closed. Buffers are lent around each read so an idle client connection holds none.
//!
//! This module does not decide what to reuse (the connection loop does), only keeps it.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::color::Color;

/// Idle connections kept per server and color; more are closed.
const MAX_IDLE_PER_KEY: usize = 256;

/// Buffers kept per worker; more are freed.
const MAX_FREE_BUFFERS: usize = 64;

struct Idle {
    stream: TcpStream,
    since: Instant,
}

struct Key {
    addr: SocketAddr,
    color: Color,
    idle: Vec<Idle>,
}

struct Pools {
    upstream: Vec<Key>,
    /// Read buffers, each as long as it was lent (never shrunk, so never zeroed again).
    buffers: Vec<Vec<u8>>,
    /// Write buffers, empty, with the capacity they grew to.
    scratch: Vec<Vec<u8>>,
    /// This worker's sweeper task runs (one per worker while it holds idle connections).
    sweeping: bool,
}

thread_local! {
    // Const-initialised: no lazy-initialisation check on every access.
    static POOLS: RefCell<Pools> = const {
        RefCell::new(Pools {
            upstream: Vec::new(),
            buffers: Vec::new(),
            scratch: Vec::new(),
            sweeping: false,
        })
    };
}

/// Takes a live idle connection to `addr` for `color`, if one is pooled and younger than
/// `max_idle`.
/// `ask_kernel`: check liveness with a system call rather than the reactor's view alone,
/// for a request that cannot be sent again if the connection turns out dead.
pub fn take(
    addr: SocketAddr,
    color: Color,
    max_idle: Duration,
    ask_kernel: bool,
) -> Option<TcpStream> {
    POOLS.with(|p| {
        let mut p = p.borrow_mut();
        let key = p
            .upstream
            .iter_mut()
            .find(|k| k.addr == addr && k.color == color)?;
        while let Some(idle) = key.idle.pop() {
            if idle.since.elapsed() >= max_idle {
                // Everything below is older still.
                key.idle.clear();
                return None;
            }
            if is_live(&idle.stream, ask_kernel) {
                return Some(idle.stream);
            }
        }
        None
    })
}

/// Returns a connection that finished a response cleanly; drops the expired ones.
pub fn put(addr: SocketAddr, color: Color, stream: TcpStream, max_idle: Duration) {
    POOLS.with(|p| {
        let mut p = p.borrow_mut();
        let now = Instant::now();
        let i = match p
            .upstream
            .iter()
            .position(|k| k.addr == addr && k.color == color)
        {
            Some(i) => i,
            None => {
                p.upstream.push(Key {
                    addr,
                    color,
                    idle: Vec::new(),
                });
                p.upstream.len() - 1
            }
        };
        let idle = &mut p.upstream[i].idle;
        // The oldest sit at the bottom of the stack.
        let expired = idle
            .iter()
            .take_while(|c| now.duration_since(c.since) >= max_idle)
            .count();
        idle.drain(..expired);
        if idle.len() >= MAX_IDLE_PER_KEY {
            idle.remove(0);
        }
        idle.push(Idle { stream, since: now });
        if !p.sweeping {
            // Keys that get no more traffic (a server after a switch) are never touched
            // again: without a sweep their connections would stay open forever.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                p.sweeping = true;
                rt.spawn(sweeper(max_idle));
            }
        }
    })
}

/// How often a worker's sweeper looks for expired idle connections.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Closes this worker's expired idle connections every [`SWEEP_EVERY`] (capped by
/// `max_idle`) until none are left, then ends; the next `put` starts it again. It runs on
/// the worker's own current-thread runtime, so it sees the same thread-local pool.
async fn sweeper(max_idle: Duration) {
    let every = SWEEP_EVERY.min(max_idle).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        let left = POOLS.with(|p| {
            let mut p = p.borrow_mut();
            let left = sweep(&mut p.upstream, Instant::now(), max_idle);
            if left == 0 {
                p.sweeping = false;
            }
            left
        });
        if left == 0 {
            return;
        }
    }
}

/// Drops every idle connection older than `max_idle` (and keys left empty); how many stay.
fn sweep(keys: &mut Vec<Key>, now: Instant, max_idle: Duration) -> usize {
    for k in keys.iter_mut() {
        let expired = k
            .idle
            .iter()
            .take_while(|c| now.duration_since(c.since) >= max_idle)
            .count();
        k.idle.drain(..expired);
    }
    keys.retain(|k| !k.idle.is_empty());
    keys.iter().map(|k| k.idle.len()).sum()
}

/// Whether a pooled socket still waits quietly: no bytes and no end of stream from the
/// backend.
///
/// The reactor's view costs no system call when the last read emptied the socket (tokio's
/// `poll_read` clears the readable mark on a short read), but it is only as fresh as the
/// reactor's last look at epoll: a close that arrived since is missed, and the request fails
/// on the dead connection. That is harmless for a request the engine sends again on a new
/// connection; for one it cannot resend (a POST, a streamed body), the kernel is asked (a
/// `MSG_PEEK`, which leaves any bytes where they are).
fn is_live(s: &TcpStream, ask_kernel: bool) -> bool {
    if ask_kernel {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        would_block(socket2::SockRef::from(s).peek(&mut probe))
    } else {
        would_block(s.try_read(&mut [0u8; 1]))
    }
}

fn would_block(r: std::io::Result<usize>) -> bool {
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Idle connections this worker holds (for tests and debugging).
pub fn idle_count() -> usize {
    POOLS.with(|p| p.borrow().upstream.iter().map(|k| k.idle.len()).sum())
}

/// Lends a read buffer of `size` bytes (contents unspecified). Every read buffer of a
/// process has the same size, so a reused one is taken as it is: zeroed once, when it was
/// first allocated.
pub fn buffer(size: usize) -> Vec<u8> {
    let reused = POOLS.with(|p| p.borrow_mut().buffers.pop());
    match reused {
        Some(mut b) => {
            if b.len() != size {
                b.resize(size, 0);
            }
            b
        }
        None => vec![0; size],
    }
}

/// Gives a read buffer back for the next read on this worker.
pub fn give_back(b: Vec<u8>) {
    POOLS.with(|p| {
        let mut p = p.borrow_mut();
        if p.buffers.len() < MAX_FREE_BUFFERS && !b.is_empty() {
            p.buffers.push(b);
        }
    })
}

/// Lends an empty write buffer (a head being written), with the capacity an earlier one
/// grew to.
pub fn scratch() -> Vec<u8> {
    POOLS
        .with(|p| p.borrow_mut().scratch.pop())
        .unwrap_or_default()
}

/// Gives a write buffer back, emptied.
pub fn give_back_scratch(mut b: Vec<u8>) {
    b.clear();
    POOLS.with(|p| {
        let mut p = p.borrow_mut();
        if p.scratch.len() < MAX_FREE_BUFFERS && b.capacity() > 0 {
            p.scratch.push(b);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn lifo_liveness_and_expiry() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let a = TcpStream::connect(addr).await.expect("a");
        let (mut sa, _) = l.accept().await.expect("accept a");
        let b = TcpStream::connect(addr).await.expect("b");
        let (_sb, _) = l.accept().await.expect("accept b");
        let long = Duration::from_secs(60);
        let a_local = a.local_addr().expect("a");
        let b_local = b.local_addr().expect("b");
        put(addr, Color::Blue, a, long);
        put(addr, Color::Blue, b, long);
        assert_eq!(
            take(addr, Color::Green, long, false).map(|_| ()),
            None,
            "per color"
        );
        let got = take(addr, Color::Blue, long, false).expect("b is live");
        assert_eq!(got.local_addr().expect("b"), b_local, "last in, first out");
        put(addr, Color::Blue, got, long);
        // The backend writes on (or closes) a pooled connection: it is not reused.
        sa.write_all(b"unexpected").await.expect("write");
        drop(sa);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = take(addr, Color::Blue, long, false).expect("b");
        assert_ne!(got.local_addr().expect("b"), a_local);
        // a (closed by its peer) is found dead and dropped.
        let _ = a_local;
        assert!(take(addr, Color::Blue, long, false).is_none());
        put(addr, Color::Blue, got, Duration::ZERO);
        assert!(
            take(addr, Color::Blue, Duration::ZERO, false).is_none(),
            "expired"
        );
        assert_eq!(idle_count(), 0);
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_resent_asks_the_kernel() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let up = TcpStream::connect(addr).await.expect("connect");
        let (mut peer, _) = l.accept().await.expect("accept");
        let long = Duration::from_secs(60);
        // A response read that empties the socket clears the reactor's mark (tokio's
        // `poll_read` does on a short read).
        peer.write_all(b"response").await.expect("write");
        let mut up = up;
        let mut b = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), up.read(&mut b))
            .await
            .expect("the response")
            .expect("read");
        assert_eq!(n, 8);
        put(addr, Color::Blue, up, long);
        // The backend closes it while the worker is busy: the FIN is in the socket, but the
        // reactor has not looked (no await in between).
        drop(peer);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            take(addr, Color::Blue, long, true).is_none(),
            "the kernel knows the connection is closed"
        );
        assert_eq!(idle_count(), 0);
    }

    #[tokio::test]
    async fn the_sweeper_closes_connections_of_keys_nobody_uses_again() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let a = TcpStream::connect(addr).await.expect("a");
        let (mut sa, _) = l.accept().await.expect("accept a");
        put(addr, Color::Green, a, Duration::from_millis(50));
        // The backend sees its end without any further use of the pool.
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), sa.read(&mut b))
            .await
            .expect("closed by the sweeper")
            .expect("read");
        assert_eq!(n, 0);
        assert_eq!(idle_count(), 0);
        assert!(
            !POOLS.with(|p| p.borrow().sweeping),
            "the sweeper ends when idle"
        );
    }

    #[test]
    fn buffers_are_reused() {
        let b = buffer(100);
        assert_eq!(b.len(), 100);
        let p = b.as_ptr();
        give_back(b);
        let again = buffer(100);
        assert_eq!((again.as_ptr(), again.len()), (p, 100));
        let mut w = scratch();
        w.extend_from_slice(b"head");
        let (wp, cap) = (w.as_ptr(), w.capacity());
        give_back_scratch(w);
        let w = scratch();
        assert_eq!((w.as_ptr(), w.capacity(), w.len()), (wp, cap, 0));
    }
}
