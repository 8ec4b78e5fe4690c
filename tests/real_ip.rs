//! Real client addresses behind a balancer, end to end: PROXY protocol v1 and v2 on the
//! plain and TLS listeners, from a trusted source (its own loopback address, 127.0.0.2)
//! and from an untrusted one (127.0.0.1); malformed, oversized and split headers;
//! `X-Forwarded-For` believed only from trusted peers; preview `allow` on the real address.
//! Each case is checked where it shows: the access log line, the `X-Forwarded-For` a raw
//! backend received, the refusal counter.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::raw_backend::RawBackend;
use common::*;
use ppp::v2;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// The balancer's address: the only trusted one.
const LB: &str = "127.0.0.2";

/// Writes a `Connection: close` GET and reads until the proxy closes: the response text,
/// empty when the connection was closed without one.
async fn get_on<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, path: &str, extra: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{extra}Connection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn v1(client: &str, port: u16) -> Vec<u8> {
    let fam = if client.contains(':') { "TCP6" } else { "TCP4" };
    let dst = if client.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    };
    format!("PROXY {fam} {client} {dst} {port} 8000\r\n").into_bytes()
}

fn v2(client: &str, port: u16) -> Vec<u8> {
    let src: SocketAddr = SocketAddr::new(client.parse().expect("ip"), port);
    let dst: SocketAddr = if src.is_ipv6() {
        "[::1]:8000".parse().expect("addr")
    } else {
        "127.0.0.1:8000".parse().expect("addr")
    };
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (src, dst),
    )
    // A TLV, as AWS and HAProxy send them: skipped over.
    .write_tlv(v2::Type::Authority, b"app.test")
    .expect("tlv")
    .build()
    .expect("v2 header")
}

fn access_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A proxy with `proxy_protocol = true`, the balancer trusted, the access log on, and TLS.
struct Front {
    p: Proxy,
    raw: RawBackend,
    log: PathBuf,
    https: u16,
    root: Vec<u8>,
    _dir: tempfile::TempDir,
}

async fn front(proxy_protocol: bool) -> Front {
    let raw = RawBackend::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let k = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, k.cert.pem()).expect("write");
    std::fs::write(&key, k.key_pair.serialize_pem()).expect("write");
    let https = free_port();
    let mut s = Setup::new(raw.route());
    s.health = RawBackend::health();
    s.listen_extra = format!(
        "https = \"127.0.0.1:{https}\"\ncert = \"{}\"\nkey = \"{}\"\nproxy_protocol = {proxy_protocol}\n",
        cert.display(),
        key.display()
    );
    s.server_extra = format!("trusted_proxies = [\"{LB}/32\"]\n");
    s.extra = format!(
        "[access_log]\nenabled = true\npath = \"{}\"\n",
        log.display()
    );
    let p = Proxy::start(&s).await;
    Front {
        p,
        raw,
        log,
        https,
        root: k.cert.der().to_vec(),
        _dir: dir,
    }
}

impl Front {
    /// The access log's client of the request for `path`, once it is written.
    async fn logged_client(&self, path: &str) -> String {
        let mut found = String::new();
        for _ in 0..100 {
            if let Some(l) = access_log(&self.log).iter().find(|l| l["path"] == path) {
                found = l["client"].as_str().unwrap_or("").to_string();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found
    }

    /// The `X-Forwarded-For` the backend got with the request for `path`.
    fn forwarded_for(&self, path: &str) -> Vec<String> {
        self.raw
            .received()
            .messages
            .iter()
            .find(|m| m.target() == path)
            .map(|m| m.values("x-forwarded-for"))
            .unwrap_or_default()
    }

    async fn tls_over(&self, tcp: TcpStream) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.root.clone()))
            .expect("root");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake after the PROXY header")
    }

    async fn refused(&self, reason: &str) -> f64 {
        self.p
            .metric(&format!("switchyard_refused_total{{reason=\"{reason}\"}}"))
            .await
    }
}

#[tokio::test]
async fn proxy_v1_and_v2_from_the_balancer_give_the_real_client_on_plain_and_tls() {
    let f = front(true).await;
    let plain = f.p.addr();

    let mut c = connect_from(LB, plain).await;
    c.write_all(&v1("203.0.113.7", 51000)).await.expect("send");
    // What the client itself wrote in X-Forwarded-For is not believed (it is not trusted).
    let r = get_on(&mut c, "/v1-plain", "X-Forwarded-For: 6.6.6.6\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(f.forwarded_for("/v1-plain"), ["203.0.113.7"]);
    assert_eq!(f.logged_client("/v1-plain").await, "203.0.113.7");

    let mut c = connect_from(LB, plain).await;
    c.write_all(&v2("2001:db8::7", 51001)).await.expect("send");
    let r = get_on(&mut c, "/v2-plain", "").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(f.forwarded_for("/v2-plain"), ["2001:db8::7"]);
    assert_eq!(f.logged_client("/v2-plain").await, "2001:db8::7");

    // On the TLS listener the header comes before the ClientHello.
    let https: SocketAddr = ([127, 0, 0, 1], f.https).into();
    for (name, header, client) in [
        ("/v1-tls", v1("198.51.100.20", 40000), "198.51.100.20"),
        ("/v2-tls", v2("198.51.100.21", 40001), "198.51.100.21"),
    ] {
        let mut tcp = connect_from(LB, https).await;
        tcp.write_all(&header).await.expect("send");
        let mut tls = f.tls_over(tcp).await;
        let r = get_on(&mut tls, name, "").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{name}: {r}");
        assert_eq!(f.forwarded_for(name), [client], "{name}");
        assert_eq!(f.logged_client(name).await, client, "{name}");
    }

    // A v2 LOCAL header (the balancer's own health check) keeps the balancer's address.
    let mut c = connect_from(LB, plain).await;
    let local = v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Local,
        v2::Protocol::Unspecified,
        v2::Addresses::Unspecified,
    )
    .build()
    .expect("local");
    c.write_all(&local).await.expect("send");
    assert!(get_on(&mut c, "/local", "")
        .await
        .starts_with("HTTP/1.1 200"));
    assert_eq!(f.forwarded_for("/local"), [LB]);

    // A direct client that is not a balancer and sends no header is served as itself.
    let mut c = connect_from("127.0.0.1", plain).await;
    assert!(get_on(&mut c, "/direct", "")
        .await
        .starts_with("HTTP/1.1 200"));
    assert_eq!(f.forwarded_for("/direct"), ["127.0.0.1"]);
    // The same on the TLS listener: the first bytes, read to look for a header, are a
    // ClientHello and are put back for the handshake.
    let mut tls = f.tls_over(connect_from("127.0.0.1", https).await).await;
    let r = get_on(&mut tls, "/direct-tls", "").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(f.forwarded_for("/direct-tls"), ["127.0.0.1"]);
}

#[tokio::test]
async fn a_header_split_across_writes_still_works() {
    let f = front(true).await;
    for (name, header) in [
        ("/split-v1", v1("203.0.113.8", 52000)),
        ("/split-v2", v2("203.0.113.9", 52001)),
    ] {
        let mut c = connect_from(LB, f.p.addr()).await;
        c.set_nodelay(true).expect("nodelay");
        for piece in [&header[..3], &header[3..14], &header[14..]] {
            c.write_all(piece).await.expect("send");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let r = get_on(&mut c, name, "").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{name}: {r}");
        assert_eq!(f.forwarded_for(name).len(), 1, "{name}");
        assert!(f.forwarded_for(name)[0].starts_with("203.0.113."), "{name}");
    }
}

#[tokio::test]
async fn untrusted_malformed_oversized_and_missing_headers_close_before_any_backend() {
    let f = front(true).await;
    let plain = f.p.addr();
    let https: SocketAddr = ([127, 0, 0, 1], f.https).into();
    let mut huge_v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
    huge_v2.extend_from_slice(&[0; 1000]);
    let mut long_v1 = b"PROXY UNKNOWN ".to_vec();
    long_v1.resize(120, b'x');
    long_v1.extend_from_slice(b"\r\n");
    let cases: Vec<(&str, &str, SocketAddr, Vec<u8>, &str)> = vec![
        (
            "untrusted v1",
            "127.0.0.1",
            plain,
            v1("203.0.113.7", 1),
            "proxy_untrusted",
        ),
        (
            "untrusted v2",
            "127.0.0.1",
            plain,
            v2("203.0.113.7", 1),
            "proxy_untrusted",
        ),
        (
            "untrusted v1 on tls",
            "127.0.0.1",
            https,
            v1("203.0.113.7", 1),
            "proxy_untrusted",
        ),
        (
            "malformed v1",
            LB,
            plain,
            b"PROXY TCP4 999.0.0.1 127.0.0.1 1 2\r\n".to_vec(),
            "proxy_malformed",
        ),
        (
            "bad v2 version",
            LB,
            https,
            b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c".to_vec(),
            "proxy_malformed",
        ),
        ("v1 over 107 bytes", LB, plain, long_v1, "proxy_oversized"),
        (
            "v2 with a huge length",
            LB,
            plain,
            huge_v2,
            "proxy_oversized",
        ),
        (
            "no header from the balancer",
            LB,
            plain,
            Vec::new(),
            "proxy_missing",
        ),
    ];
    for (name, from, to, header, reason) in cases {
        let before = f.refused(reason).await;
        let mut c = connect_from(from, to).await;
        let _ = c.write_all(&header).await;
        let r = get_on(&mut c, &format!("/{}", name.replace(' ', "-")), "").await;
        assert_eq!(r, "", "{name}: closed without an answer");
        assert_eq!(
            f.refused(reason).await,
            before + 1.0,
            "{name}: counted as {reason}"
        );
    }
    assert!(
        f.raw.received().messages.is_empty(),
        "nothing reached the backend: {:?}",
        f.raw.received().messages
    );
    // Refused on purpose and counted: not an error line per connection (a flood of them
    // would flood the log).
    let log = f.p.log_text();
    assert!(!log.contains("handshake error"), "{log}");
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_peers() {
    // No PROXY protocol: the balancer is an L7 proxy that writes X-Forwarded-For.
    let f = front(false).await;
    let mut c = connect_from(LB, f.p.addr()).await;
    let r = get_on(
        &mut c,
        "/from-lb",
        "X-Forwarded-For: 6.6.6.6, 198.51.100.9\r\nX-Forwarded-For: 127.0.0.2\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // The rightmost untrusted address; the chain goes on upstream with the peer appended.
    assert_eq!(f.logged_client("/from-lb").await, "198.51.100.9");
    assert_eq!(
        f.forwarded_for("/from-lb"),
        ["6.6.6.6, 198.51.100.9, 127.0.0.2, 127.0.0.2"]
    );

    let mut c = connect_from("127.0.0.1", f.p.addr()).await;
    let r = get_on(&mut c, "/from-client", "X-Forwarded-For: 198.51.100.9\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(f.logged_client("/from-client").await, "127.0.0.1");
    assert_eq!(f.forwarded_for("/from-client"), ["127.0.0.1"]);

    // Without proxy_protocol a PROXY line is just a bad request line.
    let mut c = connect_from(LB, f.p.addr()).await;
    c.write_all(&v1("203.0.113.7", 1)).await.expect("send");
    assert!(get_on(&mut c, "/x", "").await.starts_with("HTTP/1.1 400"));
}

#[tokio::test]
async fn preview_allow_is_judged_on_the_real_client() {
    let b = Backends::start().await;
    let mut s = Setup::new(b.route());
    s.listen_extra = "proxy_protocol = true\n".into();
    s.server_extra = format!("trusted_proxies = [\"{LB}/32\"]\n");
    s.extra = "[preview]\nallow = [\"203.0.113.0/24\"]\n".into();
    let p = Proxy::start(&s).await;
    let color = |r: &str| {
        r.lines()
            .find_map(|l| l.strip_prefix("x-color: "))
            .unwrap_or("")
            .to_string()
    };
    let preview = "x-switchyard-color: green\r\n";

    // Through the balancer, from an allowed client: green.
    let mut c = connect_from(LB, p.addr()).await;
    c.write_all(&v1("203.0.113.50", 1234)).await.expect("send");
    assert_eq!(color(&get_on(&mut c, "/", preview).await), "green");
    // Through the balancer, from anyone else: the header is ignored.
    let mut c = connect_from(LB, p.addr()).await;
    c.write_all(&v2("198.51.100.50", 1234)).await.expect("send");
    assert_eq!(color(&get_on(&mut c, "/", preview).await), "blue");
    // A direct client cannot open the preview by writing an allowed X-Forwarded-For.
    let mut c = connect_from("127.0.0.1", p.addr()).await;
    let r = get_on(
        &mut c,
        "/",
        &format!("X-Forwarded-For: 203.0.113.50\r\n{preview}"),
    )
    .await;
    assert_eq!(
        color(&r),
        "blue",
        "a client's own X-Forwarded-For opens no preview"
    );
}
