//! TLS termination end to end: a certificate made at test time (rcgen), a real rustls client
//! trusting only that certificate, HTTPS and WebSocket-over-TLS through the real binary, and
//! `reload-tls` swapping the certificate without a restart.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A self-signed certificate for `localhost`.
struct Pair {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn pair() -> Pair {
    let k = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    Pair {
        cert_pem: k.cert.pem(),
        key_pem: k.key_pair.serialize_pem(),
        der: k.cert.der().to_vec(),
    }
}

/// The cert files and the https port of one proxy.
struct Tls {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    port: u16,
}

impl Tls {
    fn write(&self, p: &Pair) {
        std::fs::write(&self.cert, &p.cert_pem).expect("write cert");
        std::fs::write(&self.key, &p.key_pem).expect("write key");
    }
}

fn tls_setup(routes: String, first: &Pair) -> (Setup, Tls) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = Tls {
        cert: dir.path().join("fullchain.pem"),
        key: dir.path().join("key.pem"),
        port: free_port(),
        _dir: dir,
    };
    tls.write(first);
    let mut s = Setup::new(routes);
    s.listen_extra = format!(
        "https = \"127.0.0.1:{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        tls.port,
        tls.cert.display(),
        tls.key.display()
    );
    (s, tls)
}

/// A TLS connection that trusts only `root`; also returns the certificate the server showed.
async fn connect(port: u16, root: &[u8]) -> Result<(TlsStream<TcpStream>, Vec<u8>), String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(root.to_vec()))
        .map_err(|e| e.to_string())?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no peer certificate")?;
    Ok((tls, peer))
}

/// Waits for the https listener (it comes up with the http one, but is not what
/// `wait_ready` polls), then connects.
async fn connect_when_up(port: u16, root: &[u8]) -> (TlsStream<TcpStream>, Vec<u8>) {
    let mut last = String::new();
    for _ in 0..100 {
        match connect(port, root).await {
            Ok(c) => return c,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no TLS connection to port {port}: {last}");
}

/// One GET over a TLS stream: status, `x-color` and body.
async fn https_get(tls: TlsStream<TcpStream>, path: &str) -> (u16, String, String) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http handshake over TLS");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response over TLS");
    let status = resp.status().as_u16();
    let color = resp
        .headers()
        .get("x-color")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, color, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn https_reaches_blue_and_tells_the_backend_it_was_https() {
    let b = Backends::start().await;
    let first = pair();
    let (setup, tls) = tls_setup(b.route(), &first);
    let p = Proxy::start(&setup).await;

    let (stream, peer) = connect_when_up(tls.port, &first.der).await;
    assert_eq!(peer, first.der);
    assert_eq!(
        https_get(stream, "/over-tls").await,
        (200, "blue".into(), "blue\n".into())
    );
    let seen = b.blue.last_headers();
    assert!(
        seen.iter()
            .any(|(k, v)| k == "x-forwarded-proto" && v == "https"),
        "{seen:?}"
    );

    // The plain listener beside it still says http.
    assert_eq!(get(&p.url("/plain")).await.status, 200);
    let seen = b.blue.last_headers();
    assert!(
        seen.iter()
            .any(|(k, v)| k == "x-forwarded-proto" && v == "http"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn websocket_over_tls_echoes() {
    let b = Backends::start().await;
    let first = pair();
    let (setup, tls) = tls_setup(b.route(), &first);
    let _p = Proxy::start(&setup).await;

    let (stream, _) = connect_when_up(tls.port, &first.der).await;
    let url = format!("wss://localhost:{}/ws", tls.port);
    let (mut ws, resp) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("wss handshake through the proxy");
    assert_eq!(resp.status(), 101);
    let hello = ws.next().await.expect("greeting").expect("greeting ok");
    assert_eq!(hello, Message::Text("hello from blue".into()));
    ws.send(Message::Text("over tls".into()))
        .await
        .expect("send");
    let echo = ws.next().await.expect("echo").expect("echo ok");
    assert_eq!(echo, Message::Text("over tls".into()));
    ws.send(Message::Binary(vec![0, 1, 2, 255]))
        .await
        .expect("send");
    let echo = ws.next().await.expect("echo").expect("echo ok");
    assert_eq!(echo, Message::Binary(vec![0, 1, 2, 255]));
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn reload_tls_swaps_the_certificate_and_a_broken_file_keeps_the_old_one() {
    let b = Backends::start().await;
    let first = pair();
    let (setup, tls) = tls_setup(b.route(), &first);
    let p = Proxy::start(&setup).await;
    // The handshake before the reload, kept open across it.
    let (before, peer) = connect_when_up(tls.port, &first.der).await;
    assert_eq!(peer, first.der);

    let second = pair();
    tls.write(&second);
    // Not read until told: the old certificate is still served.
    let (_, peer) = connect(tls.port, &first.der).await.expect("old cert");
    assert_eq!(peer, first.der);
    assert_eq!(p.ctl_last("reload-tls").await, "ok");
    let (stream, peer) = connect(tls.port, &second.der).await.expect("new cert");
    assert_eq!(peer, second.der, "a new handshake sees the new certificate");
    assert_eq!(https_get(stream, "/").await.0, 200);
    // A connection from before the reload keeps working.
    assert_eq!(https_get(before, "/").await.0, 200);

    // A broken certificate file: refused, named, and the second pair stays in use.
    std::fs::write(&tls.cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").expect("write");
    let reply = p.ctl_last("reload-tls").await;
    assert!(reply.starts_with("error: "), "{reply}");
    assert!(
        reply.contains(&tls.cert.display().to_string()),
        "names the file: {reply}"
    );
    // A key that belongs to another certificate: refused, and the key file is named.
    let third = pair();
    std::fs::write(&tls.cert, &second.cert_pem).expect("write");
    std::fs::write(&tls.key, &third.key_pem).expect("write");
    let reply = p.ctl_last("reload-tls").await;
    assert!(
        reply.starts_with("error: ") && reply.contains(&tls.key.display().to_string()),
        "{reply}"
    );
    let (stream, peer) = connect(tls.port, &second.der)
        .await
        .expect("still the second cert");
    assert_eq!(peer, second.der);
    assert_eq!(https_get(stream, "/").await.0, 200);
}

#[tokio::test]
async fn reload_tls_without_https_is_an_error() {
    let b = Backends::start().await;
    let p = Proxy::start(&Setup::new(b.route())).await;
    let reply = p.ctl_last("reload-tls").await;
    assert!(reply.starts_with("error: no [listen] https"), "{reply}");
}

#[test]
fn check_points_at_a_missing_or_bad_cert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pair();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &p.cert_pem).expect("write");
    std::fs::write(&key, &p.key_pem).expect("write");
    let config = |cert: &str, key: &str| {
        format!(
            "[listen]\nhttp = \"127.0.0.1:1\"\nhttps = \"127.0.0.1:2\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
             [[route]]\nname = \"a\"\npath_prefix = \"/\"\nblue = [\"127.0.0.1:3\"]\ngreen = [\"127.0.0.1:4\"]\n"
        )
    };
    let missing = dir.path().join("missing.pem");
    let cases = [
        (
            "missing",
            config(&missing.display().to_string(), &key.display().to_string()),
            ":4:8: [listen] cannot read certificate file",
        ),
        (
            "swapped",
            config(&key.display().to_string(), &cert.display().to_string()),
            ":4:8: [listen] certificate file",
        ),
        (
            "lonely",
            format!(
                "[listen]\nhttp = \"127.0.0.1:1\"\nkey = \"{}\"\n",
                key.display()
            ),
            ":3:7: [listen] https, cert and key go together",
        ),
    ];
    for (name, text, want) in cases {
        let f = dir.path().join(format!("{name}.toml"));
        std::fs::write(&f, text).expect("write");
        let out = std::process::Command::new(binary())
            .args(["check", "--config"])
            .arg(&f)
            .output()
            .expect("run check");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.starts_with(&format!("{}{want}", f.display())),
            "{name}: want {want} in {err}"
        );
    }
    let f = dir.path().join("good.toml");
    std::fs::write(
        &f,
        config(&cert.display().to_string(), &key.display().to_string()),
    )
    .expect("write");
    let out = std::process::Command::new(binary())
        .args(["check", "--config"])
        .arg(&f)
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("and https 127.0.0.1:2"), "{text}");
}
