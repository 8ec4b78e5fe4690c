//! Issue 6's end-to-end checks: hostile input, faults and limits, against the real binary.
//!
//! Covered: request smuggling shapes (400, closed, the backend sees nothing), header size and
//! count (431), slowloris and idle keep-alive deadlines, garbage from a backend (502), a
//! backend dying mid-response or while pooled, a whole color down, green flapping in the
//! watch window, SIGKILL mid-switch, damaged and unwritable state files, the admin socket's
//! owner and mode (a real second uid), hostile admin clients, a killed `ctl`, property tests
//! of the config loader, and `max_connections`.
//!
//! No timing assertions: waits are "eventually" with generous limits; the short limits in
//! the configs only keep the tests fast.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
use switchyard::config::{Config, ConfigError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

const LIMITS: &str = "[limits]\nmax_header_bytes = 4096\nmax_headers = 20\n";

fn setup_with(b: &Backends, extra: &str) -> Setup {
    let mut s = Setup::new(b.route());
    s.extra = extra.to_string();
    s
}

#[tokio::test]
async fn smuggling_shapes_get_400_and_a_close_and_never_reach_the_backend() {
    let b = Backends::start().await;
    let p = Proxy::start(&setup_with(&b, LIMITS)).await;
    let cases: &[(&str, &[u8])] = &[
        (
            "CL and TE",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE and CL",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        ),
        (
            "two different CL",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        ),
        (
            "repeated CL",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        (
            "CL list",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nabcde",
        ),
        (
            "TE not chunked last",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE gzip then chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE on two lines",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE xchunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE on HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "chunk size not hex",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "negative chunk size",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunk size overflow",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n",
        ),
        (
            "obs-fold tab",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n\ttwo\r\n\r\n",
        ),
        ("NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: o\x00ne\r\n\r\n"),
        ("CR in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: o\rne\r\n\r\n"),
        (
            "LF in value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: o\nne: x\r\n\r\n",
        ),
        (
            "space before colon",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A : one\r\n\r\n",
        ),
        ("bare LF line ends", b"GET / HTTP/1.1\nHost: a\n\n"),
        ("two Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n"),
    ];
    for (name, bytes) in cases {
        let r = exchange(p.addr(), bytes).await;
        assert_eq!(r.status(), 400, "{name}: {}", r.text);
        assert!(r.says_close(), "{name}: no Connection: close in {}", r.text);
        assert!(r.closed, "{name}: connection left open");
    }
    assert_eq!(b.blue.app_requests(), 0, "a refused request reached blue");
    assert_eq!(b.green.app_requests(), 0);
    // The shapes switchyard (not pingora) refuses are counted.
    assert!(
        p.metric("switchyard_refused_total{reason=\"bad_request\"}")
            .await
            >= 5.0
    );

    // The same shapes done right go through, on a connection that stays usable.
    let ok = exchange(
        p.addr(),
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(ok.status(), 200, "{}", ok.text);
    assert_eq!(b.blue.app_requests(), 1);
}

#[tokio::test]
async fn header_block_and_count_past_the_limits_get_431() {
    let b = Backends::start().await;
    let p = Proxy::start(&setup_with(&b, LIMITS)).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "x".repeat(5000)
    );
    let r = exchange(p.addr(), big.as_bytes()).await;
    assert_eq!(r.status(), 431, "{}", r.text);
    assert!(r.says_close() && r.closed, "{}", r.text);

    let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "p".repeat(5000));
    assert_eq!(exchange(p.addr(), long_line.as_bytes()).await.status(), 431);

    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let r = exchange(p.addr(), many.as_bytes()).await;
    assert_eq!(r.status(), 431, "{}", r.text);

    // Past pingora's own parser limit (256 lines) it is pingora's 400.
    let mut lots = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..300 {
        lots.push_str(&format!("X-H{i}: v\r\n"));
    }
    lots.push_str("\r\n");
    assert_eq!(exchange(p.addr(), lots.as_bytes()).await.status(), 400);
    assert_eq!(b.blue.app_requests(), 0);

    // Just under the limits is fine.
    let fine = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "x".repeat(3000)
    );
    assert_eq!(exchange(p.addr(), fine.as_bytes()).await.status(), 200);
}

#[tokio::test]
async fn slowloris_is_cut_by_the_header_timeout_and_silent_clients_too() {
    let b = Backends::start().await;
    let p = Proxy::start(&setup_with(
        &b,
        "[limits]\nheader_timeout = \"1s\"\nidle_timeout = \"30s\"\n",
    ))
    .await;

    // One byte at a time, each well inside pingora's per-read timeout, never a whole header.
    let mut s = TcpStream::connect(p.addr()).await.expect("connect");
    let drip = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut cut = false;
    for byte in drip.iter() {
        if s.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        // A closed socket shows as a readable EOF (or reset) before the next write fails.
        let mut probe = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(250), s.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    assert!(
        cut,
        "a client dripping a header for {:?} was not cut",
        started.elapsed()
    );
    assert_eq!(b.blue.app_requests(), 0);

    // A client that connects and never speaks is closed too.
    let mut s = TcpStream::connect(p.addr()).await.expect("connect");
    let r = read_all(&mut s, Duration::from_secs(15)).await;
    assert!(r.closed, "silent client still connected");

    // A normal client is unaffected.
    assert_eq!(get(&p.url("/")).await.status, 200);
}

#[tokio::test]
async fn idle_keepalive_connection_is_closed_after_idle_timeout() {
    let b = Backends::start().await;
    let p = Proxy::start(&setup_with(
        &b,
        "[limits]\nidle_timeout = \"1s\"\nheader_timeout = \"30s\"\n",
    ))
    .await;
    let mut s = TcpStream::connect(p.addr()).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("send");
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.expect("response");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    // Second request on the same connection, then nothing: the proxy closes it (pingora
    // alone would keep it open forever after the first request).
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("send");
    let n = s.read(&mut buf).await.expect("second response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let r = read_all(&mut s, Duration::from_secs(15)).await;
    assert!(r.closed, "idle keep-alive connection still open");
    assert!(r.text.is_empty(), "{}", r.text);
}

/// A backend on raw TCP: answers health checks properly and every other request with
/// `answer`, then closes.
async fn raw_backend(answer: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if req.starts_with(b"GET /health") {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                        .await;
                } else {
                    let _ = s.write_all(answer).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

fn one_route(blue: &str, green: SocketAddr) -> String {
    format!(
        "[[route]]\nname = \"app\"\npath_prefix = \"/\"\nblue = [{blue}]\ngreen = [\"{green}\"]\n"
    )
}

#[tokio::test]
async fn garbage_from_a_backend_is_a_502_and_the_proxy_stays_up() {
    let b = Backends::start().await;
    let answers: [&'static [u8]; 4] = [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"\x00\x01\x02\xff\xfe\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\nhello",
    ];
    for answer in answers {
        let garbage = raw_backend(answer).await;
        let routes = one_route(&format!("\"{garbage}\""), b.green.addr());
        let p = Proxy::start(&Setup::new(routes)).await;
        let r = get(&p.url("/")).await;
        assert_eq!(
            r.status,
            502,
            "{:?}: {}",
            String::from_utf8_lossy(answer),
            r.body
        );
        // Still up: the admin socket answers, the next request gets the same clean 502.
        assert_eq!(p.ctl_last("status").await, "ok active=blue phase=idle");
        assert_eq!(get(&p.url("/again")).await.status, 502);
    }
}

#[tokio::test]
async fn backend_killed_mid_response_is_a_clean_error_and_counted() {
    let b = Backends::start().await;
    // Promises 100000 bytes, sends 10, and closes: a backend that crashed mid-body.
    let dying = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789").await;
    let p = Proxy::start(&Setup::new(one_route(
        &format!("\"{dying}\""),
        b.green.addr(),
    )))
    .await;
    let mut c = Client::connect(p.addr()).await;
    let r = tokio::time::timeout(Duration::from_secs(10), c.try_request("GET", "/", &[], ""))
        .await
        .expect("no hang");
    match r {
        Err(e) => assert!(!e.is_empty()),
        Ok(r) => panic!(
            "a truncated body passed as complete: {} {}",
            r.status, r.body
        ),
    }
    eventually("the failure is counted", Duration::from_secs(5), || async {
        let text = p.metrics().await;
        text.lines().any(|l| {
            l.starts_with("switchyard_upstream_errors_total{color=\"blue\"")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(1.0)
        })
    })
    .await;
    // The next request is served normally (by green via a switch: blue is broken).
    assert_eq!(p.ctl_last("switch green force").await, "ok active=green");
    assert_eq!(get(&p.url("/")).await.color(), "green");
}

#[tokio::test]
async fn backend_restarted_under_a_pooled_connection_is_reached_on_a_fresh_one() {
    let b = Backends::start().await;
    let p = Proxy::start(&Setup::new(b.route())).await;
    let mut c = Client::connect(p.addr()).await;
    assert_eq!(c.get("/").await.color(), "blue");
    let addr = b.blue.addr();
    // Kills the listener and every connection, including the one in the proxy's pool.
    b.blue.stop().await;
    let reborn = switchyard::demo::DemoApp::start("blue", addr)
        .await
        .expect("blue again on the same port");
    for _ in 0..3 {
        let r = c.get("/").await;
        assert_eq!((r.status, r.color()), (200, "blue"));
    }
    assert_eq!(reborn.app_requests(), 3);
}

#[tokio::test]
async fn every_server_of_the_active_color_down_is_a_fast_502() {
    let b = Backends::start().await;
    let dead = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let (d1, d2) = (dead(), dead());
    let p = Proxy::start(&Setup::new(one_route(
        &format!("\"{d1}\", \"{d2}\""),
        b.green.addr(),
    )))
    .await;
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(10), get(&p.url("/")))
            .await
            .expect("an answer, not a hang");
        assert!(matches!(r.status, 502 | 503), "{}", r.status);
    }
    assert!(
        p.metric("switchyard_upstream_errors_total{color=\"blue\",kind=\"connect\"}")
            .await
            >= 3.0
    );
}

#[tokio::test]
async fn flapping_green_in_the_watch_window_rolls_back_once() {
    let b = Backends::start().await;
    let mut s = Setup::new(b.route());
    s.switch =
        "[switch]\ngate_timeout = \"5s\"\ndrain_timeout = \"1s\"\nwatch = \"3s\"\nmax_errors = 3\n"
            .into();
    let p = Proxy::start(&s).await;
    p.wait_healthy().await;

    let mut c = AdminConn::connect(&p).await;
    c.send_raw(b"switch green\n").await;
    let mut reply = vec![c.next_line().await.expect("progress")];
    while !reply.last().is_some_and(|l| l.starts_with("swap:")) {
        let l = c.next_line().await.expect("progress");
        assert!(!is_final(&l), "{reply:?} {l}");
        reply.push(l);
    }
    // Green now flaps: healthy and failing, on and off, for the rest of the test.
    let stop = Arc::new(AtomicBool::new(false));
    let flap = {
        let (green, stop) = (b.green.clone(), stop.clone());
        tokio::spawn(async move {
            let mut bad = true;
            while !stop.load(Ordering::SeqCst) {
                green.set_healthy(!bad);
                green.set_status(bad.then_some(500));
                bad = !bad;
                tokio::time::sleep(Duration::from_millis(70)).await;
            }
        })
    };
    let traffic = tokio::spawn({
        let url = p.url("/");
        let stop = stop.clone();
        async move {
            while !stop.load(Ordering::SeqCst) {
                let _ = get(&url).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    reply.extend(c.read_reply().await);
    let fin = reply.last().cloned().unwrap_or_default();
    assert!(fin.starts_with("error: rolled back to blue"), "{reply:?}");
    // Keep flapping a while: nothing switches again by itself.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let _ = flap.await;
    let _ = traffic.await;

    let swaps = reply.iter().filter(|l| l.starts_with("swap:")).count();
    assert_eq!(swaps, 2, "{reply:?}");
    assert_eq!(p.ctl_last("status").await, "ok active=blue phase=idle");
    assert_eq!(
        p.metric("switchyard_switches_total{result=\"rolled_back\"}")
            .await,
        1.0
    );
    assert_eq!(
        p.metric("switchyard_switches_total{result=\"committed\"}")
            .await,
        0.0
    );
    assert_eq!(std::fs::read_to_string(&p.state).expect("state"), "blue\n");
}

#[tokio::test]
async fn sigkill_mid_switch_comes_back_on_the_persisted_color() {
    let b = Backends::start().await;
    let mut s = Setup::new(b.route());
    s.switch = "[switch]\ngate_timeout = \"30s\"\ndrain_timeout = \"5s\"\nwatch = \"30s\"\nmax_errors = 3\n".into();
    let mut p = Proxy::start(&s).await;
    p.wait_healthy().await;

    // Killed in the gate: nothing was persisted, blue it is.
    b.green.set_healthy(false);
    eventually(
        "green counts unhealthy",
        Duration::from_secs(10),
        || async {
            p.ctl("health")
                .await
                .iter()
                .any(|l| l.starts_with("green ") && l.contains(" unhealthy "))
        },
    )
    .await;
    let mut c = AdminConn::connect(&p).await;
    c.send_raw(b"switch green\n").await;
    let l = c.next_line().await.expect("progress");
    assert!(l.starts_with("gate: green 0/1"), "{l}");
    p.kill();
    drop(c);
    p.spawn(false).await;
    let st = p.ctl_last("status").await;
    assert_eq!(st, "ok active=blue phase=idle");
    assert_eq!(std::fs::read_to_string(&p.state).expect("state"), "blue\n");
    assert_eq!(get(&p.url("/")).await.color(), "blue");

    // Killed in the drain right after the swap: green was persisted before traffic moved.
    b.green.set_healthy(true);
    p.wait_healthy().await;
    let mut c = AdminConn::connect(&p).await;
    c.send_raw(b"switch green\n").await;
    loop {
        let l = c.next_line().await.expect("progress");
        assert!(!is_final(&l), "{l}");
        if l.starts_with("swap:") {
            break;
        }
    }
    p.kill();
    drop(c);
    p.spawn(false).await;
    let persisted = std::fs::read_to_string(&p.state).expect("state");
    assert_eq!(persisted, "green\n");
    assert_eq!(p.ctl_last("status").await, "ok active=green phase=idle");
    assert_eq!(get(&p.url("/")).await.color(), "green");
    // No temp file left behind by the write the kill may have interrupted.
    let leftovers: Vec<_> = std::fs::read_dir(p.dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Runs `switchyard run` on `config` and expects it to refuse to start.
async fn run_refuses(config: &Path) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(binary())
            .args(["run", "--config"])
            .arg(config)
            .output(),
    )
    .await
    .expect("exits promptly")
    .expect("run");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started anyway: {err}");
    err
}

#[tokio::test]
async fn damaged_state_file_refuses_to_start_and_names_the_fix() {
    let b = Backends::start().await;
    let mut p = Proxy::start(&Setup::new(b.route())).await;
    p.kill();
    for damage in [&b"gre"[..], b"", b"\xff\xfe\x00garbage", b"purple\n"] {
        std::fs::write(&p.state, damage).expect("damage the state file");
        let err = run_refuses(&p.config).await;
        assert!(err.contains(&p.state.display().to_string()), "{err}");
        assert!(err.contains("damaged"), "{err}");
        assert!(
            err.contains("echo green >") && err.contains("delete it"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&p.state).expect("state"),
            damage,
            "the file is left for the operator"
        );
    }
}

#[tokio::test]
async fn unwritable_state_fails_the_switch_and_traffic_stays() {
    let b = Backends::start().await;
    let s = Setup::new(b.route());
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state.d");
    std::fs::create_dir(&state_dir).expect("mkdir");
    // The harness sets [state] file; it is pointed into state.d by rewriting the config.
    let mut p = Proxy::start(&s).await;
    let state = state_dir.join("state");
    let cfg = std::fs::read_to_string(&p.config).expect("config");
    let cfg = cfg.replace(
        &format!("file = \"{}\"", p.state.display()),
        &format!("file = \"{}\"", state.display()),
    );
    std::fs::write(&p.config, cfg).expect("config");
    p.kill();
    p.spawn(false).await;
    p.wait_healthy().await;
    assert_eq!(std::fs::read_to_string(&state).expect("state"), "blue\n");

    // Root ignores permission bits, so break the directory for real: it becomes a file.
    std::fs::remove_dir_all(&state_dir).expect("rm");
    std::fs::write(&state_dir, b"not a directory").expect("file in its place");

    let reply = p.ctl("switch green").await;
    let fin = reply.last().cloned().unwrap_or_default();
    assert!(fin.starts_with("error:"), "{reply:?}");
    assert!(fin.contains("cannot write"), "{reply:?}");
    assert!(fin.contains("traffic stays on blue"), "{reply:?}");
    assert_eq!(p.ctl_last("status").await, "ok active=blue phase=idle");
    assert_eq!(get(&p.url("/")).await.color(), "blue");
    assert_eq!(
        p.metric("switchyard_active_color{color=\"blue\"}").await,
        1.0
    );
    let r = p.ctl("rollback").await;
    assert!(r.last().is_some_and(|l| l.starts_with("error:")), "{r:?}");
    assert_eq!(get(&p.url("/")).await.color(), "blue");
}

#[tokio::test]
async fn admin_socket_is_0600_and_owned_by_the_running_user() {
    let b = Backends::start().await;
    let p = Proxy::start(&Setup::new(b.route())).await;
    let meta = std::fs::metadata(&p.socket).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // SAFETY: geteuid has no preconditions.
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
}

/// A path to a tool, or None.
fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

#[tokio::test]
async fn another_user_cannot_use_the_admin_socket() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to act as a second user (nobody)");
        return;
    }
    let Some(setpriv) = which("setpriv") else {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    };
    let b = Backends::start().await;
    let p = Proxy::start(&Setup::new(b.route())).await;
    // Let nobody reach the socket file, so only the socket's own mode stands in the way.
    std::fs::set_permissions(p.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod dir");
    let as_nobody = || {
        std::process::Command::new(&setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(binary())
            .args(["ctl", "--socket"])
            .arg(&p.socket)
            .arg("status")
            .output()
            .expect("setpriv")
    };
    let out = as_nobody();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody could use the admin socket");
    assert!(err.contains("Permission denied"), "{err}");

    // The control: with the mode opened up, the same command as nobody works, so the
    // refusal above was the socket's mode and nothing else.
    std::fs::set_permissions(&p.socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = as_nobody();
    std::fs::set_permissions(&p.socket, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    if !out.status.success() {
        eprintln!(
            "skipped control: nobody cannot run the binary here: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok active=blue"));
}

#[tokio::test]
async fn hostile_admin_clients_do_not_block_a_switch() {
    let b = Backends::start().await;
    let p = Proxy::start(&Setup::new(b.route())).await;
    p.wait_healthy().await;

    let mut held = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let mut s = UnixStream::connect(&p.socket).await.expect("connect");
        match i % 3 {
            // Connects and never speaks.
            0 => held.push(s),
            // A line far over 4 KiB that never ends, then binary garbage.
            1 => tasks.push(tokio::spawn(async move {
                let junk: Vec<u8> = (0..20_000u32).map(|n| (n * 7 % 251) as u8 | 1).collect();
                let _ = s.write_all(&junk).await;
                let _ = s.write_all(b"\xff\xfe\x00\x01").await;
                s
            })),
            // Asks for status over and over.
            _ => tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    let _ = s.write_all(b"status\n").await;
                }
                s
            })),
        }
    }
    let reply = tokio::time::timeout(Duration::from_secs(30), p.ctl("switch green"))
        .await
        .expect("the switch was not blocked");
    assert_eq!(
        reply.last().map(String::as_str),
        Some("ok active=green"),
        "{reply:?}"
    );
    for t in tasks {
        held.push(t.await.expect("client task"));
    }
    // An over-long line gets its error and the connection stays usable.
    let mut c = AdminConn::connect(&p).await;
    c.send_raw(&vec![b'x'; 10_000]).await;
    let r = c.send("").await;
    assert!(r[0].starts_with("error: line too long"), "{r:?}");
    assert_eq!(
        c.send("status").await.last().map(String::as_str),
        Some("ok active=green phase=idle")
    );
    drop(held);
}

#[tokio::test]
async fn ctl_killed_mid_switch_does_not_cancel_it() {
    let b = Backends::start().await;
    let mut s = Setup::new(b.route());
    s.switch =
        "[switch]\ngate_timeout = \"5s\"\ndrain_timeout = \"1s\"\nwatch = \"2s\"\nmax_errors = 3\n"
            .into();
    let p = Proxy::start(&s).await;
    p.wait_healthy().await;
    let mut ctl = tokio::process::Command::new(binary())
        .args(["ctl", "--socket"])
        .arg(&p.socket)
        .args(["switch", "green"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ctl");
    eventually("the switch is running", Duration::from_secs(10), || async {
        !p.ctl_last("status").await.ends_with("phase=idle")
    })
    .await;
    ctl.start_kill().expect("SIGKILL ctl");
    let _ = ctl.wait().await;
    p.wait_idle(Duration::from_secs(20)).await;
    assert_eq!(p.ctl_last("status").await, "ok active=green phase=idle");
    assert_eq!(
        p.metric("switchyard_switches_total{result=\"committed\"}")
            .await,
        1.0
    );
    assert_eq!(get(&p.url("/")).await.color(), "green");
}

#[tokio::test]
async fn connections_past_max_connections_get_a_fast_503() {
    let b = Backends::start().await;
    let p = Proxy::start(&setup_with(&b, "[limits]\nmax_connections = 8\n")).await;
    // Eight keep-alive clients, each proven accepted by a request.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut c = Client::connect(p.addr()).await;
        assert_eq!(c.get("/").await.status, 200);
        clients.push(c);
    }
    for _ in 0..3 {
        let mut s = TcpStream::connect(p.addr()).await.expect("connect");
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let r = read_all(&mut s, Duration::from_secs(10)).await;
        assert_eq!(r.status(), 503, "{}", r.text);
        assert!(r.says_close() && r.closed, "{}", r.text);
    }
    assert_eq!(b.blue.app_requests(), 8);
    assert_eq!(
        p.metric("switchyard_refused_total{reason=\"too_many_connections\"}")
            .await,
        3.0
    );
    assert_eq!(p.metric("switchyard_client_connections").await, 8.0);
    // The held ones still work, and a freed slot is usable again.
    assert_eq!(clients[0].get("/").await.status, 200);
    clients.pop();
    eventually("a slot frees up", Duration::from_secs(10), || async {
        let mut s = TcpStream::connect(p.addr()).await.expect("connect");
        let _ = s
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await;
        read_all(&mut s, Duration::from_secs(5)).await.status() == 200
    })
    .await;
}

#[tokio::test]
async fn every_example_config_passes_check() {
    for entry in std::fs::read_dir("conf").expect("conf/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = std::process::Command::new(binary())
                .args(["check", "--config"])
                .arg(&path)
                .output()
                .expect("check");
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

const DESIGN: &str = include_str!("fixtures/design.toml");

/// Every refusal is `FILE:LINE:COL` inside the text, never a panic.
fn located(text: &str) -> Result<(), TestCaseError> {
    match Config::parse(Path::new("p.toml"), text) {
        Ok(_) => Ok(()),
        Err(ConfigError::Invalid {
            file, line, col, ..
        }) => {
            prop_assert_eq!(file, "p.toml");
            let lines: Vec<&str> = text.split('\n').collect();
            prop_assert!(
                line >= 1 && line <= lines.len(),
                "line {} of {}",
                line,
                lines.len()
            );
            let width = lines[line - 1].chars().count();
            prop_assert!(col >= 1 && col <= width + 1, "col {} of {}", col, width);
            Ok(())
        }
        Err(e) => Err(TestCaseError::fail(format!("not located: {e}"))),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    Duplicate(usize),
    Replace(usize, char),
}

fn apply(text: &str, m: &Mutation) -> String {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len().max(1);
    let mut out = chars.clone();
    match m {
        Mutation::Delete(at, len) => {
            let at = at % n;
            let end = (at + len).min(out.len());
            out.drain(at.min(end)..end);
        }
        Mutation::Insert(at, s) => {
            let at = at % (out.len() + 1);
            out.splice(at..at, s.chars());
        }
        Mutation::Duplicate(line) => {
            let lines: Vec<&str> = text.split('\n').collect();
            let i = line % lines.len();
            let mut v = lines.clone();
            v.insert(i, lines[i]);
            return v.join("\n");
        }
        Mutation::Replace(at, c) => {
            if !out.is_empty() {
                let at = at % out.len();
                out[at] = *c;
            }
        }
    }
    out.into_iter().collect()
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(a, l)| Mutation::Delete(a, l)),
        (any::<usize>(), "[\\[\\]=\"#\\n a-z0-9.:{},'\\\\]{1,12}")
            .prop_map(|(a, s)| Mutation::Insert(a, s)),
        any::<usize>().prop_map(Mutation::Duplicate),
        (any::<usize>(), any::<char>()).prop_map(|(a, c)| Mutation::Replace(a, c)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_and_errors_are_located(text in any::<String>()) {
        located(&text)?;
    }

    #[test]
    fn toml_shaped_text_never_panics(text in "(\\[[a-z]{1,8}\\]\\n|[a-z_]{1,10} = (\"[^\"\\n]{0,12}\"|[0-9]{1,4}|\\[\\]|true)\\n|\\[\\[route\\]\\]\\n){0,12}") {
        located(&text)?;
    }

    #[test]
    fn mutated_design_example_never_panics(ms in prop::collection::vec(mutation(), 1..4)) {
        let mut text = DESIGN.to_string();
        for m in &ms {
            text = apply(&text, m);
        }
        located(&text)?;
    }
}
