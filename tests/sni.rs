//! Certificates per host name and `redirect_https`, end to end: a rustls client asks for a
//! name (SNI) and reads which certificate the real binary showed; `reload-tls` swaps every
//! pair at once and a broken one keeps them all; the plain listener answers 308 to https
//! except on the health path.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

/// Accepts any certificate: the test reads which one was shown and compares it itself.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate (DER) the server shows for `name` (`None`: no SNI, as for an IP).
async fn shown(port: u16, name: Option<&str>) -> Result<Vec<u8>, String> {
    let provider = Arc::new(crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let server = match name {
        Some(n) => ServerName::try_from(n.to_string()).map_err(|e| e.to_string())?,
        None => ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
    };
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(server, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| "no peer certificate".into())
}

/// Writes a fresh self-signed pair for `names` to `stem`.pem/.key; returns its DER.
fn write_pair(dir: &Path, stem: &str, names: &[&str]) -> Vec<u8> {
    let k =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("rcgen");
    std::fs::write(dir.join(format!("{stem}.pem")), k.cert.pem()).expect("write");
    std::fs::write(dir.join(format!("{stem}.key")), k.key_pair.serialize_pem()).expect("write");
    k.cert.der().to_vec()
}

const PAIRS: [(&str, &[&str]); 4] = [
    ("default", &["localhost"]),
    ("api", &["api.example.com"]),
    ("shop", &["shop.example.org", "www.shop.example.org"]),
    ("wild", &["*.example.com"]),
];

/// Four pairs (default, two exact names, a wildcard) and a proxy serving them.
async fn sni_proxy(dir: &Path, b: &Backends) -> (Proxy, u16) {
    for (stem, names) in PAIRS {
        write_pair(dir, stem, names);
    }
    let f = |s: &str| dir.join(s).display().to_string();
    let https = free_port();
    let mut s = Setup::new(b.route());
    s.listen_extra = format!(
        "https = \"127.0.0.1:{https}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        f("default.pem"),
        f("default.key")
    );
    // [[listen.certificates]] must come after the [listen] keys: appended to `extra`.
    s.extra = format!(
        "[[listen.certificates]]\nhosts = [\"api.example.com\"]\ncert = \"{}\"\nkey = \"{}\"\n\
         [[listen.certificates]]\nhosts = [\"shop.example.org\", \"www.shop.example.org\"]\ncert = \"{}\"\nkey = \"{}\"\n\
         [[listen.certificates]]\nhosts = [\"*.example.com\"]\ncert = \"{}\"\nkey = \"{}\"\n",
        f("api.pem"),
        f("api.key"),
        f("shop.pem"),
        f("shop.key"),
        f("wild.pem"),
        f("wild.key")
    );
    (Proxy::start(&s).await, https)
}

fn der_of(dir: &Path, stem: &str) -> Vec<u8> {
    let pem = std::fs::read(dir.join(format!("{stem}.pem"))).expect("read");
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(&pem).expect("pem").to_vec()
}

/// Which pair each name gets: (name, stem).
const EXPECT: [(Option<&str>, &str); 8] = [
    (Some("api.example.com"), "api"),
    (Some("API.Example.COM"), "api"),
    (Some("shop.example.org"), "shop"),
    (Some("www.shop.example.org"), "shop"),
    (Some("anything.example.com"), "wild"),
    (Some("a.b.example.com"), "default"),
    (Some("unknown.test"), "default"),
    (None, "default"),
];

async fn check_all(dir: &Path, port: u16, when: &str) {
    for (name, stem) in EXPECT {
        let got = shown(port, name)
            .await
            .unwrap_or_else(|e| panic!("{when}: handshake for {name:?}: {e}"));
        assert!(
            got == der_of(dir, stem),
            "{when}: {name:?} should get {stem}"
        );
    }
}

async fn wait_tls(port: u16) {
    for _ in 0..100 {
        if shown(port, None).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no TLS listener on {port}");
}

#[tokio::test]
async fn sni_picks_the_certificate_and_reload_tls_swaps_them_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Backends::start().await;
    let (p, port) = sni_proxy(dir.path(), &b).await;
    wait_tls(port).await;
    check_all(dir.path(), port, "at start").await;

    // New pairs for every file: nothing changes until reload-tls, then all at once.
    let first: Vec<Vec<u8>> = PAIRS.iter().map(|(s, _)| der_of(dir.path(), s)).collect();
    for (stem, names) in PAIRS {
        write_pair(dir.path(), stem, names);
    }
    assert_eq!(
        shown(port, Some("api.example.com")).await.expect("tls"),
        first[1]
    );
    assert_eq!(p.ctl_last("reload-tls").await, "ok");
    check_all(dir.path(), port, "after reload").await;

    // One broken pair (the wildcard's key belongs to another certificate): refused, the
    // file named, and every pair in use stays, the good new ones included.
    let second: Vec<Vec<u8>> = PAIRS.iter().map(|(s, _)| der_of(dir.path(), s)).collect();
    write_pair(dir.path(), "api", &["api.example.com"]);
    let other = tempfile::tempdir().expect("tempdir");
    write_pair(other.path(), "x", &["*.example.com"]);
    std::fs::copy(other.path().join("x.key"), dir.path().join("wild.key")).expect("copy");
    let reply = p.ctl_last("reload-tls").await;
    assert!(reply.starts_with("error: "), "{reply}");
    assert!(reply.contains("wild.key"), "names the file: {reply}");
    assert_eq!(
        shown(port, Some("api.example.com")).await.expect("tls"),
        second[1]
    );
    assert_eq!(
        shown(port, Some("x.example.com")).await.expect("tls"),
        second[3]
    );

    // A renewed certificate that no longer covers its host name is refused too.
    write_pair(dir.path(), "wild", &["*.example.net"]);
    let reply = p.ctl_last("reload-tls").await;
    assert!(
        reply.starts_with("error: ") && reply.contains("does not cover host name *.example.com"),
        "{reply}"
    );
    assert_eq!(
        shown(port, Some("x.example.com")).await.expect("tls"),
        second[3]
    );
}

/// Sends raw bytes to the plain listener and reads the answer until close or a quiet spell.
async fn plain(addr: SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn redirect_https_sends_308_except_for_the_health_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Backends::start().await;
    write_pair(dir.path(), "default", &["localhost"]);
    let https = free_port();
    let mut s = Setup::new(b.route());
    s.listen_extra = format!(
        "https = \"127.0.0.1:{https}\"\ncert = \"{}\"\nkey = \"{}\"\nredirect_https = true\n",
        dir.path().join("default.pem").display(),
        dir.path().join("default.key").display()
    );
    // A TLS-terminating balancer in front, on 127.0.0.2.
    s.server_extra = "trusted_proxies = [\"127.0.0.2\"]\n".into();
    let p = Proxy::start(&s).await;
    let addr = p.addr();

    // What the trusted balancer says came over https is not redirected (no loop), and the
    // backend hears https; the same claim from anyone else is ignored.
    let balanced = "GET /via-lb HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";
    let mut c = connect_from("127.0.0.2", addr).await;
    c.write_all(balanced.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
    let r = String::from_utf8_lossy(&out);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let seen = b.blue.last_headers();
    assert!(
        seen.iter()
            .any(|(n, v)| n == "x-forwarded-proto" && v == "https"),
        "{seen:?}"
    );
    assert!(plain(addr, balanced).await.starts_with("HTTP/1.1 308"));
    let via_lb = b.blue.app_requests();

    let r = plain(
        addr,
        "GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: shop.example.com:8000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 308 Permanent Redirect\r\n"), "{r}");
    assert_eq!(
        header(&r, "location"),
        Some(format!("https://shop.example.com:{https}/a/b?x=1&y=%20").as_str())
    );
    // A POST keeps its method through a 308; its unread body ends the connection.
    let r = plain(
        addr,
        "POST /form HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 308"), "{r}");
    assert_eq!(header(&r, "connection"), Some("close"));
    assert_eq!(
        b.blue.app_requests(),
        via_lb,
        "nothing redirected reached a backend"
    );

    // The health path is served as usual, so a balancer's plain check keeps working.
    let r = plain(
        addr,
        "GET /health/ready HTTP/1.1\r\nHost: 10.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    // HTTPS itself is not redirected.
    let tls_port = https;
    for _ in 0..100 {
        if shown(tls_port, None).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let provider = Arc::new(crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", tls_port))
        .await
        .expect("tcp");
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("tls");
    tls.write_all(b"GET /page HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    let r = String::from_utf8_lossy(&out);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(b.blue.app_requests(), via_lb + 1);
}

#[test]
fn check_refuses_redirect_without_https_and_uncovered_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_pair(dir.path(), "d", &["localhost"]);
    write_pair(dir.path(), "a", &["api.example.com"]);
    let f = |s: &str| dir.path().join(s).display().to_string();
    let route = "[[route]]\nname = \"a\"\npath_prefix = \"/\"\nblue = [\"127.0.0.1:3\"]\ngreen = [\"127.0.0.1:4\"]\n";
    let check = |text: String| -> (i32, String) {
        let path: PathBuf = dir.path().join("c.toml");
        std::fs::write(&path, text).expect("write");
        let out = std::process::Command::new(binary())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run check");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let (code, out) = check(format!(
        "[listen]\nhttp = \"127.0.0.1:1\"\nredirect_https = true\n{route}"
    ));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("c.toml:3:18: [listen] redirect_https = true needs [listen] https"),
        "{out}"
    );

    let (code, out) = check(format!(
        "[listen]\nhttp = \"127.0.0.1:1\"\nhttps = \"127.0.0.1:2\"\ncert = \"{}\"\nkey = \"{}\"\n\
         [[listen.certificates]]\nhosts = [\"www.example.com\"]\ncert = \"{}\"\nkey = \"{}\"\n{route}",
        f("d.pem"),
        f("d.key"),
        f("a.pem"),
        f("a.key")
    ));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("c.toml:7:10: [[listen.certificates]] the certificate in"),
        "{out}"
    );
    assert!(
        out.contains("does not cover host name www.example.com"),
        "{out}"
    );
}
