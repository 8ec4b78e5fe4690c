//! Issue 10's end-to-end checks of the watch window: what a client does cannot move a switch
//! (WebSockets broken on purpose so green's server resets them, a client hanging up in the
//! middle of a slow response), and the rate rules decide on real traffic: green answering 5xx
//! for a fraction of requests rolls back by max_error_rate over blue's baseline, a slow green
//! rolls back by max_p99, a quiet window commits as "not enough traffic" (or rolls back with
//! require_traffic). Real binary, real backends: the demo app, and a hand-written green server
//! for what the demo app does not do (reset a WebSocket with SO_LINGER 0, stall mid-body).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// Reads one request head; `None` at the end of the connection.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A green server written by hand: `/ws` is a strict WebSocket echo that answers a protocol
/// violation with close 1002 and a TCP reset; `/slow` sends a head and 1 KB of a 64 MB body,
/// stalls, then sends the rest; `/fail` answers 500; anything else (health checks included)
/// 200.
async fn raw_green() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s));
        }
    });
    addr
}

async fn serve(mut s: TcpStream) {
    while let Some(head) = read_head(&mut s).await {
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let answer = match path.as_str() {
            "/ws" => return websocket(s, &head).await,
            "/slow" => return slow(s).await,
            "/fail" => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 5\r\nx-color: green\r\n\r\nfail\n",
            _ => "HTTP/1.1 200 OK\r\ncontent-length: 6\r\nx-color: green\r\n\r\ngreen\n",
        };
        if s.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn websocket(mut s: TcpStream, head: &str) {
    let key = header(head, "sec-websocket-key").unwrap_or_default();
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    if s.write_all(resp.as_bytes()).await.is_err() {
        return;
    }
    let mut ws = WebSocketStream::from_raw_socket(s, Role::Server, None).await;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(m) if m.is_text() || m.is_binary() => {
                if ws.send(m).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => {
                // What a strict server does on a protocol error (RFC 6455 7.4.1: 1002), then
                // drops the connection hard: SO_LINGER 0 makes the close a TCP reset.
                let raw = ws.get_mut();
                let _ = raw.write_all(&[0x88, 0x02, 0x03, 0xEA]).await;
                let _ = raw.set_zero_linger();
                return;
            }
        }
    }
}

async fn slow(mut s: TcpStream) {
    // Bigger than any socket buffer on the way, so the proxy cannot hand the rest to a
    // client that is gone without noticing.
    const LEN: usize = 64 << 20;
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {LEN}\r\nx-color: green\r\n\r\n");
    let chunk = vec![b'x'; 64 << 10];
    if s.write_all(head.as_bytes()).await.is_err() || s.write_all(&chunk[..1024]).await.is_err() {
        return;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut sent = 1024;
    while sent < LEN
        && s.write_all(&chunk[..chunk.len().min(LEN - sent)])
            .await
            .is_ok()
    {
        sent += chunk.len();
    }
}

fn route(blue: SocketAddr, green: SocketAddr) -> String {
    format!("[[route]]\nname = \"app\"\npath_prefix = \"/\"\nblue = [\"{blue}\"]\ngreen = [\"{green}\"]\n")
}

fn switch_cfg(watch: &str, rules: &str) -> String {
    format!(
        "[switch]\ngate_timeout = \"5s\"\ndrain_timeout = \"1s\"\nwatch = \"{watch}\"\n{rules}\n"
    )
}

/// Demo blue, green from `green` (or the demo green), the proxy, both colors healthy.
async fn start(green: Option<SocketAddr>, watch: &str, rules: &str) -> (Backends, Proxy) {
    let b = Backends::start().await;
    let mut s = Setup::new(route(b.blue.addr(), green.unwrap_or(b.green.addr())));
    s.switch = switch_cfg(watch, rules);
    let p = Proxy::start(&s).await;
    p.wait_healthy().await;
    (b, p)
}

/// Sends `switch green` and reads up to the swap.
async fn switch_green(p: &Proxy) -> (AdminConn, Vec<String>) {
    let mut c = AdminConn::connect(p).await;
    c.send_raw(b"switch green\n").await;
    let mut seen = Vec::new();
    loop {
        let l = c.next_line().await.expect("admin connection open");
        let swapped = l.starts_with("swap: active=green");
        assert!(!is_final(&l), "switch ended before the swap: {seen:?} {l}");
        seen.push(l);
        if swapped {
            return (c, seen);
        }
    }
}

/// The value of one exact series, 0 when absent.
async fn series(p: &Proxy, name: &str) -> f64 {
    p.metrics()
        .await
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix(' '))
                .map(|v| v.trim().parse().expect("metric value"))
        })
        .unwrap_or(0.0)
}

/// Opens a WebSocket through the proxy, sends `frame` and reads until the proxy closes the
/// connection; returns what came back after the 101.
async fn broken_websocket(addr: SocketAddr, frame: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = "GET /ws HTTP/1.1\r\nhost: app\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n";
    s.write_all(req.as_bytes()).await.expect("send upgrade");
    let head = read_head(&mut s).await.expect("response head");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(frame).await.expect("send frame");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    rest
}

/// A masked frame (mask 0) with the given first byte and payload.
fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b0, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn websockets_broken_by_a_client_during_the_watch_do_not_roll_back() {
    let green = raw_green().await;
    let (_b, p) = start(Some(green), "3s", "max_errors = 3").await;
    let (mut c, mut reply) = switch_green(&p).await;

    let frames = [
        masked(0xF1, b"hi"),          // FIN + RSV1..3 with no extension
        masked(0x83, b"hi"),          // reserved opcode 3
        vec![0x81, 0x02, b'h', b'i'], // unmasked client frame
    ];
    let mut tasks = Vec::new();
    for f in frames.iter().chain(frames.iter()) {
        let (addr, f) = (p.addr(), f.clone());
        tasks.push(tokio::spawn(
            async move { broken_websocket(addr, &f).await },
        ));
    }
    for t in tasks {
        let back = t.await.expect("websocket task");
        // The server's 1002 close reached the client, unless the reset overtook it.
        assert!(
            back.is_empty() || back.starts_with(&[0x88, 0x02, 0x03, 0xEA]),
            "{back:?}"
        );
    }
    reply.extend(c.read_reply().await);

    assert_eq!(
        reply.last().map(String::as_str),
        Some("ok active=green"),
        "{reply:?}"
    );
    // The resets happened and are on record, just not against green.
    let resets = series(
        &p,
        "switchyard_upstream_errors_total{color=\"green\",kind=\"reset\"}",
    )
    .await;
    assert!(
        resets >= 1.0,
        "the attack must reset upstream connections: {resets}"
    );
    assert!(
        reply
            .iter()
            .any(|l| l.starts_with("watch: green 0 errors in 6 requests")),
        "{reply:?}"
    );
    assert_eq!(
        series(&p, "switchyard_switches_total{result=\"committed\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_client_hanging_up_mid_body_of_a_slow_response_does_not_roll_back() {
    let green = raw_green().await;
    let (_b, p) = start(Some(green), "3s", "max_errors = 1").await;
    let (mut c, mut reply) = switch_green(&p).await;

    for _ in 0..3 {
        let mut s = TcpStream::connect(p.addr()).await.expect("connect");
        s.write_all(b"GET /slow HTTP/1.1\r\nhost: app\r\n\r\n")
            .await
            .expect("send");
        let head = read_head(&mut s).await.expect("head");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut part = [0u8; 512];
        s.read_exact(&mut part).await.expect("some of the body");
        drop(s);
    }
    reply.extend(c.read_reply().await);

    assert_eq!(
        reply.last().map(String::as_str),
        Some("ok active=green"),
        "{reply:?}"
    );
    let name = "switchyard_client_aborts_total{color=\"green\"}";
    eventually("client aborts counted", Duration::from_secs(5), || async {
        series(&p, name).await >= 3.0
    })
    .await;
}

/// Background traffic on one keep-alive client: request `i` goes to `path(i)`.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<u16>>,
}

impl Traffic {
    async fn start(p: &Proxy, path: fn(u64) -> &'static str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let mut c = Client::connect(p.addr()).await;
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = 0;
            while !flag.load(Ordering::SeqCst) {
                seen.push(c.get(path(i)).await.status);
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        });
        Traffic { stop, task }
    }

    async fn finish(self) -> Vec<u16> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("traffic task")
    }
}

#[tokio::test]
async fn green_failing_a_fifth_of_requests_rolls_back_by_max_error_rate_over_blues_baseline() {
    let green = raw_green().await;
    let rules = "max_error_rate = \"5%\"\nbaseline = true\nmin_requests = 20";
    let (_b, p) = start(Some(green), "2s", rules).await;
    // Blue serves a while first, so the baseline has samples: blue never fails.
    let traffic = Traffic::start(&p, |i| if i % 5 == 0 { "/fail" } else { "/" }).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut c, mut reply) = switch_green(&p).await;
    reply.extend(c.read_reply().await);
    let seen = traffic.finish().await;

    let fin = reply.last().cloned().unwrap_or_default();
    assert!(
        fin.starts_with("error: rolled back to blue: green ")
            && fin.contains("errors over 2s > max_error_rate 5% over baseline (blue 0%)"),
        "{reply:?}"
    );
    assert!(
        reply.iter().any(|l| l.starts_with("watch: green ")
            && l.contains("errors (baseline blue 0%, allowed +5%) in ")),
        "{reply:?}"
    );
    assert!(seen.contains(&500), "green's 500s were served");
    assert_eq!(p.ctl_last("status").await, "ok active=blue phase=idle");
}

#[tokio::test]
async fn green_slower_than_max_p99_rolls_back() {
    let (_b, p) = start(None, "2s", "max_p99 = \"100ms\"\nmin_requests = 3").await;
    let (mut c, mut reply) = switch_green(&p).await;
    let traffic = Traffic::start(&p, |_| "/?sleep_ms=300").await;
    reply.extend(c.read_reply().await);
    traffic.finish().await;

    let fin = reply.last().cloned().unwrap_or_default();
    assert!(
        fin.starts_with("error: rolled back to blue: green p99 ")
            && fin.contains("> max_p99 100ms in "),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_quiet_window_commits_as_not_enough_traffic_and_says_so() {
    let (_b, p) = start(None, "1s", "max_error_rate = \"1%\"\nmin_requests = 50").await;
    let (mut c, mut reply) = switch_green(&p).await;
    for _ in 0..3 {
        assert_eq!(get(&p.url("/")).await.color(), "green");
    }
    reply.extend(c.read_reply().await);

    let n = reply.len();
    assert_eq!(reply[n - 1], "ok active=green", "{reply:?}");
    assert!(
        reply[n - 2].starts_with(
            "watch: not enough traffic: green had 3 requests in 1s < min_requests 50; committing"
        ),
        "{reply:?}"
    );
}

#[tokio::test]
async fn require_traffic_rolls_back_a_quiet_window() {
    let (_b, p) = start(None, "1s", "min_requests = 50\nrequire_traffic = true").await;
    let (mut c, mut reply) = switch_green(&p).await;
    reply.extend(c.read_reply().await);

    assert_eq!(
        reply.last().map(String::as_str),
        Some("error: rolled back to blue: not enough traffic: green had 0 requests in 1s < min_requests 50; rolling back (require_traffic = true)"),
        "{reply:?}"
    );
}
