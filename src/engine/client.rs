//! The client's connection as the engine reads and writes it: the TCP socket itself for a
//! plain connection, pingora's stream for a TLS one.
//!
//! pingora-core hands every accepted connection over as a boxed stream whose reads and
//! writes pass several layers (buffers, a rewind buffer, two clock reads per pending read for
//! its timing digest); the engine buffers and times on its own, so a plain connection is
//! taken out of it (`into_tcp`, vendor/pingora-core/PATCHED.md) and its box and digests
//! freed. This module does not decide anything about the bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Shutdown, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{pool, readiness};

pub(crate) enum Client {
    /// A plain TCP connection, out of pingora's stream.
    Tcp(TcpStream),
    /// Anything else (TLS): pingora's stream.
    Io(Stream),
}

impl Client {
    /// The plain socket when pingora's stream is one with nothing buffered, else the stream.
    /// (pingora-core has already moved it to this worker's reactor: PATCHED.md.)
    pub(crate) fn new(stream: Stream) -> Client {
        if !stream.as_any().is::<L4Stream>() {
            return Client::Io(stream);
        }
        match stream.into_any().downcast::<L4Stream>() {
            Ok(l4) => match l4.into_tcp() {
                Ok(tcp) => Client::Tcp(tcp),
                Err(l4) => Client::Io(Box::new(l4)),
            },
            // Checked above; unreachable, but a stream is never lost over it.
            Err(_) => unreachable!("the stream is an L4 stream"),
        }
    }

    /// Ends our side of the connection (a TLS close_notify first, for TLS).
    pub(crate) async fn shutdown(&mut self) {
        match self {
            Client::Tcp(s) => {
                let _ = AsyncWriteExt::shutdown(s).await;
            }
            Client::Io(s) => Shutdown::shutdown(&mut **s).await,
        }
    }

    /// Reads into a buffer of `size` bytes lent from the worker's pool only while bytes are
    /// there to read, so a quiet connection holds none. A plain socket is asked for
    /// readiness first and is read only when ready; pingora's stream has no readiness
    /// call, so for it the buffer is taken for each attempt and given back when it pends.
    pub(crate) fn poll_read_lent(
        &mut self,
        cx: &mut Context<'_>,
        size: usize,
    ) -> Poll<io::Result<(Vec<u8>, usize)>> {
        match self {
            Client::Tcp(s) => {
                std::task::ready!(s.poll_read_ready(cx))?;
                let mut b = pool::buffer(size);
                match readiness::poll_read(s, cx, &mut b) {
                    Poll::Ready(Ok(n)) => Poll::Ready(Ok((b, n))),
                    other => {
                        pool::give_back(b);
                        // An error, or a readiness that was stale (the read registered the
                        // wait for the next one).
                        other.map_ok(|_| (Vec::new(), 0))
                    }
                }
            }
            Client::Io(s) => super::relay::poll_read_lent(&mut **s, cx, size),
        }
    }
}

impl AsyncRead for Client {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Client::Io(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Client {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Client::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Client::Io(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            // Nothing is buffered on a socket.
            Client::Tcp(_) => Poll::Ready(Ok(())),
            Client::Io(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Client::Io(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Client::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Client::Io(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Client::Tcp(s) => s.is_write_vectored(),
            Client::Io(s) => s.is_write_vectored(),
        }
    }
}
