//! Response headers and gzip per route, against the real binary: security headers only where
//! configured (the route's own winning over `[headers] add`), and gzip only on a gzip route
//! and only for a client that accepts it.

mod common;

use std::io::Read;

use common::*;

const BIG: usize = 100_000;

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a valid gzip body");
    out
}

#[tokio::test]
async fn gzip_and_security_headers_apply_per_route() {
    let b = Backends::start().await;
    let (blue, green) = (b.blue.addr(), b.green.addr());
    let routes = format!(
        "[[route]]\nname = \"web\"\npath_prefix = \"/web\"\nblue = [\"{blue}\"]\ngreen = [\"{green}\"]\n\
         gzip = true\n\
         headers = {{ \"Strict-Transport-Security\" = \"max-age=63072000\", \"x-content-type-options\" = \"nosniff\" }}\n\
         [[route]]\nname = \"api\"\npath_prefix = \"/api\"\nblue = [\"{blue}\"]\ngreen = [\"{green}\"]\n"
    );
    let mut setup = Setup::new(routes);
    setup.extra =
        "[headers]\nadd = { \"x-frame-options\" = \"DENY\", \"x-content-type-options\" = \"global\" }\n"
            .into();
    let p = Proxy::start(&setup).await;
    let big = |path: &str| p.url(&format!("{path}?bytes={BIG}"));

    // gzip route, client accepts gzip: compressed, and it decompresses to the original.
    let (status, h, body) = get_bytes(&big("/web/page"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-encoding"), Some("gzip"), "{h:?}");
    assert!(body.len() < BIG / 10, "compressed to {} bytes", body.len());
    let plain = gunzip(&body);
    assert_eq!(plain.len(), BIG);
    assert!(plain.iter().all(|&c| c == b'x'));
    assert!(header(&h, "vary").is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")));
    assert_eq!(
        header(&h, "strict-transport-security"),
        Some("max-age=63072000")
    );
    assert_eq!(header(&h, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&h, "x-frame-options"), Some("DENY"));

    // Same route, no Accept-Encoding: as the backend sent it.
    let (status, h, body) = get_bytes(&big("/web/page"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-encoding"), None, "{h:?}");
    assert_eq!(body.len(), BIG);
    // A client that only takes something else gets identity too.
    let (_, h, body) = get_bytes(&big("/web/page"), &[("accept-encoding", "identity")]).await;
    assert_eq!((header(&h, "content-encoding"), body.len()), (None, BIG));

    // A route without gzip never compresses, and has only the global headers.
    let (status, h, body) = get_bytes(&big("/api/list"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-encoding"), None, "{h:?}");
    assert_eq!(body.len(), BIG);
    assert_eq!(header(&h, "strict-transport-security"), None);
    assert_eq!(header(&h, "x-content-type-options"), Some("global"));
    assert_eq!(header(&h, "x-frame-options"), Some("DENY"));

    // switchyard's own 404 gets the global headers and is not compressed.
    let (status, h, _) = get_bytes(&p.url("/elsewhere"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(status, 404);
    assert_eq!(header(&h, "content-encoding"), None);
    assert_eq!(header(&h, "x-frame-options"), Some("DENY"));
    assert_eq!(header(&h, "strict-transport-security"), None);

    // Keep-alive: a compressed response then a plain one on the same connection.
    let mut c = Client::connect(p.addr()).await;
    let r = c
        .try_request(
            "GET",
            "/web/a?bytes=5000",
            &[("accept-encoding", "gzip")],
            "",
        )
        .await
        .expect("request");
    assert_eq!(header(&r.headers, "content-encoding"), Some("gzip"));
    let r = c.get("/web/b?bytes=5000").await;
    assert_eq!(
        (header(&r.headers, "content-encoding"), r.body.len()),
        (None, 5000)
    );
}

#[tokio::test]
async fn error_pages_carry_the_configured_headers() {
    let b = Backends::start().await;
    let (blue, green) = (b.blue.addr(), b.green.addr());
    let routes = format!(
        "[[route]]\nname = \"web\"\npath_prefix = \"/\"\nblue = [\"{blue}\"]\ngreen = [\"{green}\"]\n\
         headers = {{ \"strict-transport-security\" = \"max-age=63072000\" }}\n"
    );
    let mut setup = Setup::new(routes);
    setup.extra = "[headers]\nadd = { \"x-frame-options\" = \"DENY\" }\n".into();
    let p = Proxy::start(&setup).await;
    b.blue.stop().await;
    // pingora's own 502 (blue is down) gets the route's headers too.
    let (status, h, _) = get_bytes(&p.url("/"), &[]).await;
    assert_eq!(status, 502);
    assert_eq!(
        header(&h, "strict-transport-security"),
        Some("max-age=63072000"),
        "{h:?}"
    );
    assert_eq!(header(&h, "x-frame-options"), Some("DENY"), "{h:?}");
}
