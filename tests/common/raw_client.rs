//! A client on raw TCP: writes exact bytes (however split) and reads the proxy's answers as
//! HTTP/1.1 messages with [`super::wire`], keeping whatever does not frame as a response.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{parse_response, show, Message, Parse};

pub struct RawClient {
    s: TcpStream,
    buf: Vec<u8>,
    /// The proxy closed (or reset) the connection.
    pub eof: bool,
}

/// What a raw client saw in answer to what it wrote.
#[derive(Debug, Default)]
pub struct Seen {
    /// Status codes of interim (1xx) responses, in order.
    pub interim: Vec<u16>,
    pub finals: Vec<Message>,
    /// Why reading stopped before the expected responses, if it did.
    pub error: Option<String>,
    /// Bytes after the last response that are not a response.
    pub leftover: Vec<u8>,
    pub closed: bool,
}

impl Seen {
    pub fn statuses(&self) -> Vec<u16> {
        self.finals.iter().map(|m| m.status).collect()
    }
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let s = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        s.set_nodelay(true).expect("nodelay");
        RawClient {
            s,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes all of `bytes`; an error (the proxy already closed) is returned, not a panic.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes).await
    }

    /// Reads more bytes until `deadline`; false on timeout, close or error.
    async fn fill(&mut self, deadline: tokio::time::Instant) -> bool {
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                false
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => false,
        }
    }

    /// The next response, interim ones included.
    pub async fn response(&mut self, to_head: bool, limit: Duration) -> Result<Message, String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match parse_response(&self.buf, to_head, self.eof) {
                Parse::Done(m, used) => {
                    self.buf.drain(..used);
                    return Ok(m);
                }
                Parse::Invalid(e) => return Err(format!("{e}: {}", show(&self.buf))),
                Parse::Partial if self.eof => return Err("connection closed".into()),
                Parse::Partial => {
                    if !self.fill(deadline).await && !self.eof {
                        return Err(format!("no response within {limit:?}: {}", show(&self.buf)));
                    }
                }
            }
        }
    }

    /// Reads up to `finals` final responses (stopping early at a close or an error), then
    /// waits `quiet` for anything more, which ends up in `leftover` (or closes).
    pub async fn read(&mut self, finals: usize, to_head: bool, quiet: Duration) -> Seen {
        let mut seen = Seen::default();
        while seen.finals.len() < finals {
            match self.response(to_head, Duration::from_secs(5)).await {
                Ok(m) if m.status < 200 => seen.interim.push(m.status),
                Ok(m) => seen.finals.push(m),
                Err(e) => {
                    seen.error = Some(e);
                    break;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + quiet;
        while !self.eof && self.fill(deadline).await {}
        seen.leftover = std::mem::take(&mut self.buf);
        seen.closed = self.eof;
        seen
    }

    /// Whether the proxy closes the connection within `limit` (bytes meanwhile are kept).
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.eof && self.fill(deadline).await {}
        self.eof
    }

    /// Bytes received and not yet read as a response.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}
