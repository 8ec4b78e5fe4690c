//! Test fixtures: real demo backends on port 0 in the test process, the real `switchyard`
//! binary started on a config written to a temp dir, and small real clients (HTTP over
//! hyper, the admin socket over a Unix stream, WebSockets over tokio-tungstenite). For exact
//! bytes on the wire: a recording raw TCP backend (`raw_backend`), a raw client
//! (`raw_client`) and the HTTP/1.1 framing both read with (`wire`).
#![allow(dead_code)]

pub mod etcd;
pub mod raw_backend;
pub mod raw_client;
pub mod wire;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use switchyard::demo::{DemoApp, DemoHandle};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

pub const FAST_HEALTH: &str =
    "[health]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\n";

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// Two demo backends, blue and green.
pub struct Backends {
    pub blue: DemoHandle,
    pub green: DemoHandle,
}

impl Backends {
    pub async fn start() -> Backends {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        Backends {
            blue: DemoApp::start("blue", any).await.expect("blue backend"),
            green: DemoApp::start("green", any).await.expect("green backend"),
        }
    }

    /// One catch-all route to the two backends.
    pub fn route(&self) -> String {
        format!(
            "[[route]]\nname = \"app\"\npath_prefix = \"/\"\nblue = [\"{}\"]\ngreen = [\"{}\"]\n",
            self.blue.addr(),
            self.green.addr()
        )
    }
}

/// What a test may change in the config; everything else is fixed by the harness.
pub struct Setup {
    pub routes: String,
    pub health: String,
    pub switch: String,
    pub extra: String,
    /// Lines added inside `[listen]`, e.g. the https keys.
    pub listen_extra: String,
    /// Lines added inside `[server]`, e.g. short timeouts.
    pub server_extra: String,
}

impl Setup {
    pub fn new(routes: String) -> Setup {
        Setup {
            routes,
            health: FAST_HEALTH.into(),
            switch: "[switch]\ngate_timeout = \"5s\"\ndrain_timeout = \"2s\"\nwatch = \"1s\"\nmax_errors = 3\n".into(),
            extra: String::new(),
            listen_extra: String::new(),
            server_extra: String::new(),
        }
    }
}

/// A running `switchyard run` process.
pub struct Proxy {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub port: u16,
    pub metrics_port: u16,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_switchyard"))
}

impl Proxy {
    pub async fn start(setup: &Setup) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let metrics_port = free_port();
        let socket = dir.path().join("admin.sock");
        let state = dir.path().join("state");
        let config = dir.path().join("switchyard.toml");
        let text = format!(
            "[listen]\nhttp = \"127.0.0.1:{port}\"\n{}\n[server]\nthreads = 2\n{}\n[admin]\nsocket = \"{}\"\nmetrics = \"127.0.0.1:{metrics_port}\"\n[state]\nfile = \"{}\"\n{}\n{}\n{}\n{}\n",
            setup.listen_extra,
            setup.server_extra,
            socket.display(),
            state.display(),
            setup.health,
            setup.switch,
            setup.extra,
            setup.routes
        );
        std::fs::write(&config, text).expect("write config");
        let mut p = Proxy {
            log: dir.path().join("switchyard.log"),
            dir,
            child: None,
            port,
            metrics_port,
            socket,
            state,
            config,
        };
        p.spawn(false).await;
        p
    }

    /// Starts the binary on this proxy's config (again, after a stop) and waits until it
    /// answers on the front door and the admin socket.
    pub async fn spawn(&mut self, upgrade: bool) {
        self.start_child(upgrade);
        self.wait_ready().await;
    }

    /// Starts `run --upgrade` without waiting: it only serves once the old process has been
    /// sent SIGQUIT and handed its sockets over.
    pub fn spawn_upgrade_child(&mut self) {
        self.start_child(true);
    }

    fn start_child(&mut self, upgrade: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(binary());
        cmd.arg("run").arg("--config").arg(&self.config);
        if upgrade {
            cmd.arg("--upgrade");
        }
        let child = cmd
            .env(
                "RUST_LOG",
                std::env::var("SY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn switchyard");
        self.child = Some(child);
    }

    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "switchyard exited early with {st}; log:\n{}",
                        self.log_text()
                    );
                }
            }
            let tcp = TcpStream::connect(("127.0.0.1", self.port)).await.is_ok();
            let admin = UnixStream::connect(&self.socket).await.is_ok();
            if tcp && admin {
                return;
            }
            if Instant::now() > deadline {
                panic!("switchyard not ready after 30s; log:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the process to exit; panics after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .expect("running")
                .try_wait()
                .expect("wait")
            {
                self.child = None;
                return st;
            }
            if Instant::now() > deadline {
                panic!(
                    "switchyard did not exit within {limit:?}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends one admin command; returns every reply line through the final one.
    pub async fn ctl(&self, cmd: &str) -> Vec<String> {
        let mut s = AdminConn::connect(self).await;
        s.send(cmd).await
    }

    /// The final line of `ctl`.
    pub async fn ctl_last(&self, cmd: &str) -> String {
        self.ctl(cmd).await.pop().expect("a final line")
    }

    pub async fn metrics(&self) -> String {
        let r = get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port)).await;
        assert_eq!(r.status, 200);
        r.body
    }

    /// The value of one exact series in /metrics, 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map(|v| v.trim().parse().expect("metric value"))
            .unwrap_or(0.0)
    }

    /// Waits (up to 5 s) until exactly `n` requests are in flight on `color`; `what` names
    /// the wait in the failure.
    pub async fn wait_inflight(&self, what: &str, color: &str, n: f64) {
        let series = format!("switchyard_inflight_requests{{color=\"{color}\"}}");
        eventually(what, Duration::from_secs(5), || async {
            self.metric(&series).await == n
        })
        .await;
    }

    /// Waits until `ctl status` says phase=idle (a switch finished).
    pub async fn wait_idle(&self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let last = self.ctl_last("status").await;
            if last.ends_with("phase=idle") {
                return last;
            }
            assert!(Instant::now() < deadline, "still switching: {last}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every server of both colors is healthy per the `health` command.
    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.ctl("health").await;
            if lines
                .iter()
                .filter(|l| *l != "ok")
                .all(|l| l.contains(" healthy "))
            {
                return;
            }
            assert!(Instant::now() < deadline, "not healthy: {lines:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- switchyard log ----\n{}", self.log_text());
        }
        self.kill();
    }
}

/// One admin connection, reusable for several commands.
pub struct AdminConn {
    r: BufReader<tokio::net::unix::OwnedReadHalf>,
    w: tokio::net::unix::OwnedWriteHalf,
}

pub fn is_final(line: &str) -> bool {
    line == "ok" || line.starts_with("ok ") || line.starts_with("error:")
}

impl AdminConn {
    pub async fn connect(p: &Proxy) -> AdminConn {
        let s = UnixStream::connect(&p.socket).await.expect("admin connect");
        let (r, w) = s.into_split();
        AdminConn {
            r: BufReader::new(r),
            w,
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.expect("admin write");
    }

    pub async fn next_line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(60), self.r.read_line(&mut line))
            .await
            .expect("admin reply within 60s")
            .expect("admin read");
        if n == 0 {
            return None;
        }
        Some(line.trim_end().to_string())
    }

    /// Reads lines through the final one.
    pub async fn read_reply(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = self.next_line().await {
            let done = is_final(&l);
            out.push(l);
            if done {
                return out;
            }
        }
        panic!("admin connection closed mid-reply: {out:?}");
    }

    pub async fn send(&mut self, cmd: &str) -> Vec<String> {
        self.send_raw(format!("{cmd}\n").as_bytes()).await;
        self.read_reply().await
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: String,
    pub headers: http::HeaderMap,
}

impl Resp {
    /// Which demo backend answered.
    pub fn color(&self) -> &str {
        self.headers
            .get("x-color")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Client::from_stream(stream, addr).await
    }

    pub async fn from_stream(stream: TcpStream, addr: SocketAddr) -> Client {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Client {
            sender,
            authority: addr.to_string(),
        }
    }

    pub async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Resp, String> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        if self.sender.ready().await.is_err() {
            // The server closed this connection between requests (e.g. it answered with
            // `Connection: close`): the request was never sent, so do what every HTTP client
            // pool does and send it on a new connection.
            let addr: SocketAddr = self.authority.parse().map_err(|e| format!("{e}"))?;
            *self = Client::connect(addr).await;
        }
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Resp {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            headers,
        })
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.try_request("GET", path, &[], "")
            .await
            .expect("request")
    }
}

/// One GET on a fresh connection.
pub async fn get(url: &str) -> Resp {
    get_with(url, &[]).await
}

pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Resp {
    let uri: http::Uri = url.parse().expect("url");
    let addr: SocketAddr = uri
        .authority()
        .expect("authority")
        .as_str()
        .parse()
        .expect("addr");
    let mut c = Client::connect(addr).await;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    c.try_request("GET", path, headers, "")
        .await
        .expect("request")
}

pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One GET on a fresh connection, with the body as raw bytes (compressed bodies are not text).
pub async fn get_bytes(url: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, Vec<u8>) {
    let uri: http::Uri = url.parse().expect("url");
    let addr = uri.authority().expect("authority").as_str().to_string();
    let stream = TcpStream::connect(&addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut b = http::Request::builder()
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", addr);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = sender
        .send_request(b.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, body.to_vec())
}

/// Awaits client tasks that report `Err(what went wrong)`; returns the failures.
pub async fn failures(tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>) -> Vec<String> {
    let mut failed = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.expect("client task panicked") {
            failed.push(e);
        }
    }
    failed
}

/// What a raw client saw: everything the proxy sent, and whether it then closed.
pub struct Raw {
    pub text: String,
    pub closed: bool,
}

impl Raw {
    pub fn status(&self) -> u16 {
        self.text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub fn says_close(&self) -> bool {
        self.text
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n")
    }
}

/// Reads until the peer closes, an error, or `limit`.
pub async fn read_all(s: &mut TcpStream, limit: Duration) -> Raw {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    Raw {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// Sends `bytes` on a fresh connection and reads what comes back.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("send");
    read_all(&mut s, Duration::from_secs(10)).await
}

/// A TCP connection to `to` from the loopback address `from` (`"127.0.0.2"`): how a test
/// plays a trusted balancer and an untrusted client on one machine.
pub async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::new(from.parse().expect("ip"), 0))
        .expect("bind a loopback source address");
    s.connect(to).await.expect("connect")
}
