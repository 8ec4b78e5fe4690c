//! A backend on raw TCP that a test fully controls: it records every byte the proxy sends it
//! (and the requests those bytes frame, read with [`super::wire`]), and answers each request
//! with the next scripted [`Answer`] or, when the script is empty, a well-framed 200 that
//! names the request. Health checks (on [`HEALTH_PATH`]) are answered and kept out of the
//! record, so a test sees only what clients caused.
//!
//! It does not judge what it receives beyond framing: a request it cannot frame is recorded
//! as garbage (and every later byte on that connection with it); the tests decide.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::wire::{head_expects_continue, parse_request, show, Message, Parse};

/// The health path the raw backend answers and does not record.
pub const HEALTH_PATH: &str = "/__raw_health";

/// How the raw backend answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Write these bytes; the connection stays open for the next request.
    Reply(Vec<u8>),
    /// Write these bytes, then close the connection.
    ReplyClose(Vec<u8>),
    /// Write these bytes (a 101), then echo every later byte, recorded as tunnel bytes.
    Upgrade(Vec<u8>),
    /// Wait this long, then answer (bytes that come meanwhile are read after the answer).
    After(Duration, Box<Answer>),
}

/// Everything the proxy sent since the last reset (health checks left out).
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Every request framed, in arrival order over all connections.
    pub messages: Vec<Message>,
    /// Every byte of every connection, in arrival order.
    pub raw: Vec<u8>,
    /// Bytes that did not frame as a request, or a request cut off by a close.
    pub garbage: Vec<String>,
    /// Bytes after a 101, on any connection.
    pub tunnel: Vec<u8>,
    /// Connections that carried at least one byte.
    pub connections: usize,
}

#[derive(Default)]
struct Shared {
    rec: Received,
    script: VecDeque<Answer>,
}

pub struct RawBackend {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    generation: watch::Sender<u64>,
}

/// The default answer's body: what the request was, so order and identity can be checked.
pub fn answer_body(m: &Message) -> String {
    format!("{} {} {}", m.method(), m.target(), m.body.len())
}

fn default_answer(m: &Message) -> Answer {
    let body = answer_body(m);
    Answer::Reply(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// A complete 200 with this body, kept alive.
pub fn ok(body: &str) -> Answer {
    Answer::Reply(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl RawBackend {
    pub async fn start() -> RawBackend {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw backend");
        let addr = l.local_addr().expect("raw backend addr");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (generation, _) = watch::channel(0u64);
        let (sh, gen) = (shared.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(Conn::new(sh.clone()).serve(s, gen.subscribe()));
            }
        });
        RawBackend {
            addr,
            shared,
            generation,
        }
    }

    /// One catch-all route with this backend as both colors (blue is active).
    pub fn route(&self) -> String {
        format!(
            "[[route]]\nname = \"raw\"\npath_prefix = \"/\"\nblue = [\"{0}\"]\ngreen = [\"{0}\"]\n",
            self.addr
        )
    }

    /// A `[health]` section that probes [`HEALTH_PATH`].
    pub fn health() -> String {
        format!("[health]\npath = \"{HEALTH_PATH}\"\ninterval = \"200ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 3\n")
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers for the next requests, in order; the default answer follows.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.lock().script.extend(answers);
    }

    /// Forgets what was received and the script; open connections stay.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.rec = Received::default();
        s.script.clear();
    }

    /// Closes every open connection (the proxy's pooled ones too) and resets.
    pub async fn drop_connections(&self) {
        self.generation.send_modify(|g| *g += 1);
        self.reset();
        // Lets the proxy see the closes before the next request picks a pooled connection.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    pub fn received(&self) -> Received {
        self.lock().rec.clone()
    }

    /// Waits until `messages` requests arrived (at most `limit`), then a short quiet spell
    /// so bytes that should not come have the chance to.
    pub async fn settle(&self, messages: usize, limit: Duration) -> Received {
        let deadline = tokio::time::Instant::now() + limit;
        while self.lock().rec.messages.len() < messages && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.received()
    }
}

/// One accepted connection's state.
struct Conn {
    shared: Arc<Mutex<Shared>>,
    buf: Vec<u8>,
    /// `None` until the first request head shows whether this is a health check.
    health: Option<bool>,
    continued: bool,
    broken: bool,
    tunnel: bool,
}

impl Conn {
    fn new(shared: Arc<Mutex<Shared>>) -> Conn {
        Conn {
            shared,
            buf: Vec::new(),
            health: None,
            continued: false,
            broken: false,
            tunnel: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn serve(mut self, mut s: TcpStream, mut gen: watch::Receiver<u64>) {
        let mut chunk = vec![0u8; 16384];
        loop {
            let n = tokio::select! {
                r = s.read(&mut chunk) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                _ = gen.changed() => return,
            };
            if !self.take(&mut s, &chunk[..n]).await {
                return;
            }
        }
        if self.health == Some(false) && !self.buf.is_empty() && !self.broken && !self.tunnel {
            let cut = format!("cut off by a close: {}", show(&self.buf));
            self.lock().rec.garbage.push(cut);
        }
    }

    /// Handles bytes just read; false when the connection is done.
    async fn take(&mut self, s: &mut TcpStream, bytes: &[u8]) -> bool {
        if self.tunnel {
            {
                let mut sh = self.lock();
                sh.rec.raw.extend_from_slice(bytes);
                sh.rec.tunnel.extend_from_slice(bytes);
            }
            return s.write_all(bytes).await.is_ok();
        }
        self.buf.extend_from_slice(bytes);
        match self.health {
            None => self.classify(),
            Some(false) => self.lock().rec.raw.extend_from_slice(bytes),
            Some(true) => {}
        }
        match self.health {
            None => true,
            Some(true) => !self.answer_health(s).await,
            Some(false) if self.broken => {
                self.lock().rec.garbage.push(show(bytes));
                true
            }
            Some(false) => self.answer_requests(s).await,
        }
    }

    fn classify(&mut self) {
        let health = match parse_request(&self.buf) {
            Parse::Partial if !self.buf.windows(4).any(|w| w == b"\r\n\r\n") => return,
            Parse::Done(m, _) => m.target() == HEALTH_PATH,
            _ => self
                .buf
                .starts_with(format!("GET {HEALTH_PATH} ").as_bytes()),
        };
        self.health = Some(health);
        if !health {
            let mut sh = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            sh.rec.connections += 1;
            sh.rec.raw.extend_from_slice(&self.buf);
        }
    }

    /// Answers a complete health check; true once answered.
    async fn answer_health(&mut self, s: &mut TcpStream) -> bool {
        if !matches!(parse_request(&self.buf), Parse::Done(..)) {
            return false;
        }
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
        let _ = s.write_all(ok).await;
        let _ = s.shutdown().await;
        true
    }

    /// Answers every complete request in the buffer; false once the connection is done.
    async fn answer_requests(&mut self, s: &mut TcpStream) -> bool {
        loop {
            match parse_request(&self.buf) {
                Parse::Done(m, used) => {
                    self.buf.drain(..used);
                    self.continued = false;
                    let answer = {
                        let mut sh = self.lock();
                        sh.rec.messages.push(m.clone());
                        sh.script.pop_front().unwrap_or_else(|| default_answer(&m))
                    };
                    if !self.send(s, answer).await {
                        return false;
                    }
                    if self.tunnel {
                        let rest = std::mem::take(&mut self.buf);
                        return rest.is_empty() || Box::pin(self.take(s, &rest)).await;
                    }
                }
                Parse::Partial => {
                    if !self.continued && head_expects_continue(&self.buf) {
                        self.continued = true;
                        return s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_ok();
                    }
                    return true;
                }
                Parse::Invalid(e) => {
                    let what = format!("{e}: {}", show(&self.buf));
                    self.lock().rec.garbage.push(what);
                    self.broken = true;
                    return true;
                }
            }
        }
    }

    /// Writes one answer; false when the connection is done.
    async fn send(&mut self, s: &mut TcpStream, answer: Answer) -> bool {
        match answer {
            Answer::Reply(b) => s.write_all(&b).await.is_ok(),
            Answer::ReplyClose(b) => {
                let _ = s.write_all(&b).await;
                let _ = s.shutdown().await;
                false
            }
            Answer::Upgrade(b) => {
                self.tunnel = true;
                s.write_all(&b).await.is_ok()
            }
            Answer::After(wait, inner) => {
                tokio::time::sleep(wait).await;
                Box::pin(self.send(s, *inner)).await
            }
        }
    }
}
