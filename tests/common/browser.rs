//! A real headless Chromium driven through chromedriver's W3C WebDriver HTTP API: start a
//! session, open a URL, run a script in the page, take a screenshot. Just the five calls the
//! status page test needs, over hyper, so no WebDriver crate (and its dependency tree) is
//! needed.
//!
//! chromedriver runs in a process group of its own; dropping the [`Browser`] kills that group,
//! which takes Chromium with it even when a test panics.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::common::free_port;

/// Chromium's flags for running as root in a container, offline and quiet.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1100,1040",
];

fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A browser, or `None` (said loudly) when Chromium is not installed and this is not CI;
    /// in CI (`CI=true`) a missing Chromium fails the test.
    pub async fn start_or_skip(test: &str) -> Option<Browser> {
        let found = (which("chromium"), which("chromedriver"));
        let (Some(chromium), Some(chromedriver)) = found else {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(
                !ci,
                "{test}: chromium and chromedriver are required in CI; run scripts/install-deps.sh"
            );
            eprintln!(
                "\n!!!!!!!!\n!!! SKIPPED {test}: chromium/chromedriver not installed (scripts/install-deps.sh installs them)\n!!!!!!!!\n"
            );
            return None;
        };
        Some(Browser::start(&chromium, &chromedriver).await)
    }

    async fn start(chromium: &std::path::Path, chromedriver: &std::path::Path) -> Browser {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let profile = tempfile::tempdir().expect("profile dir");
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.call("GET", "/status", None).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start within 20s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", b._profile.path().display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let v = b
            .call("POST", "/session", Some(caps))
            .await
            .expect("new session");
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {v}"))
            .to_string();
        b
    }

    /// One WebDriver command; `Ok(value)` or `Err(what went wrong)`.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {v}"));
        }
        Ok(v["value"].clone())
    }

    async fn session_call(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}/{what}", self.session);
        self.call(method, &path, body)
            .await
            .unwrap_or_else(|e| panic!("webdriver: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.session_call("POST", "url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.eval_with(script, Value::Null).await
    }

    /// The same with one argument, `arguments[0]` in the script.
    pub async fn eval_with(&self, script: &str, arg: Value) -> Value {
        self.session_call(
            "POST",
            "execute/sync",
            Some(json!({"script": script, "args": [arg]})),
        )
        .await
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self.session_call("GET", "screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 string"))
            .expect("valid base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium it started.
        // SAFETY: kill(2) on the process group of a child this struct spawned.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}
