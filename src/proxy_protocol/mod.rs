//! The PROXY protocol at accept (`[listen] proxy_protocol = true`): before the first HTTP
//! byte or the TLS ClientHello, read what a balancer in front announces, decide whether to
//! believe it (real_ip.rs), and give the connection its real client address.
//!
//! It runs as pingora-core's pre-handshake hook (`PreTlsProcess`; vendor/pingora-core
//! runs it on cleartext listeners too, see PATCHED.md), on every listener of the proxy
//! service. The address goes into the stream's `SocketDigest` as its `peer_addr`, so every
//! data path that asks the digest (the HTTP/1.1 engine's `Conn::new`, pingora-proxy's
//! HTTP/2 sessions) sees the client, never the balancer, with no code of its own.
//!
//! A refused connection is counted in `switchyard_refused_total{reason="proxy_..."}`, logged
//! at debug, and closed without a byte written: the peer is not speaking HTTP yet.
//! Header parsing is header.rs's; what is believed is real_ip.rs's.

pub mod header;

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use tokio::io::AsyncReadExt;

use crate::metrics::Metrics;
use crate::real_ip::{self, Announced, ProxyRefusal, TrustedProxies};
use header::{Parsed, Signature};

/// Bytes asked for per read: a v1 line or a usual v2 header in one read, and little more of
/// the client's own bytes, which are put back.
const READ_CHUNK: usize = 512;

/// The hook pingora calls for every accepted connection of the proxy service.
pub struct ProxyProtocolHook {
    trusted: TrustedProxies,
    /// `[limits] header_timeout`: the whole header (or the first bytes that show there is
    /// none) must arrive within it.
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl ProxyProtocolHook {
    pub fn new(trusted: TrustedProxies, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        ProxyProtocolHook {
            trusted,
            timeout,
            metrics,
        }
    }

    fn refuse(&self, peer: std::net::IpAddr, r: ProxyRefusal) -> pingora::BError {
        self.metrics.refused(r.label());
        tracing::debug!(%peer, reason = r.reason(), "closed a connection before serving it");
        // ConnectionClosed: pingora logs it at debug, not as a handshake error (PATCHED.md).
        pingora::Error::explain(pingora::ErrorType::ConnectionClosed, r.reason())
    }
}

#[async_trait]
impl PreTlsProcess for ProxyProtocolHook {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let Some(peer) = socket_peer(stream) else {
            // Not TCP (a Unix socket listener): there is no address to replace.
            return Ok(());
        };
        let trusted = self.trusted.contains(peer);
        let read = tokio::time::timeout(self.timeout, read_preamble(stream, trusted)).await;
        let (announced, buf, len) = match read {
            Ok(Ok(x)) => x,
            Ok(Err(r)) => return Err(self.refuse(peer, r)),
            Err(_) => return Err(self.refuse(peer, ProxyRefusal::Timeout)),
        };
        // The client's own first bytes go back for HTTP or TLS to read.
        stream.rewind(&buf[len..]);
        match real_ip::accept_proxy_header(peer, &self.trusted, announced) {
            Ok(Some(real)) => {
                set_peer(stream, real);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(r) => Err(self.refuse(peer, r)),
        }
    }
}

/// The socket peer's IP address as pingora's listener recorded it.
fn socket_peer(stream: &L4Stream) -> Option<std::net::IpAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
}

/// Replaces the stream's socket digest with one whose peer is the real client (the local
/// address and the rest still come from the socket).
fn set_peer(stream: &mut L4Stream, real: std::net::SocketAddr) {
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    // A new digest's cell is empty, so this cannot fail; if it did, the socket's address
    // would stay, which is the safe side.
    let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(real)));
    stream.set_socket_digest(digest);
}

/// Reads until it is clear what the connection starts with: a whole PROXY header from a
/// trusted source, the start of one from an untrusted source (refused at once), or the
/// client's own bytes. Returns the header's announcement (`None`: no header), the bytes
/// read, and how many of them the header took.
async fn read_preamble(
    stream: &mut L4Stream,
    trusted: bool,
) -> Result<(Option<Announced>, Vec<u8>, usize), ProxyRefusal> {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        match header::signature(&buf) {
            Signature::Partial => {}
            Signature::None => return Ok((None, buf, 0)),
            // Whatever else it says, an untrusted source's header is not read to its end.
            Signature::V1 | Signature::V2 if !trusted => return Err(ProxyRefusal::Untrusted),
            Signature::V1 | Signature::V2 => match header::parse(&buf) {
                Parsed::NeedMore => {}
                Parsed::Done { announced, len } => return Ok((Some(announced), buf, len)),
                Parsed::Refused(r) => return Err(r),
            },
        }
        read_some(stream, &mut buf).await?;
    }
}

/// Appends up to [`READ_CHUNK`] bytes; the peer closing or failing first is a timeout's
/// kin: the header never came.
async fn read_some(stream: &mut L4Stream, buf: &mut Vec<u8>) -> Result<(), ProxyRefusal> {
    let start = buf.len();
    buf.resize(start + READ_CHUNK, 0);
    let n = stream
        .read(&mut buf[start..])
        .await
        .map_err(|_| ProxyRefusal::Timeout)?;
    buf.truncate(start + n);
    if n == 0 {
        return Err(ProxyRefusal::Timeout);
    }
    Ok(())
}
