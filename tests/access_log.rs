//! The access log against the real binary: one JSON line per request, with every documented
//! field, for a proxied 200, switchyard's own 404 and a 502 from a dead backend.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn one_json_line_per_request_with_every_field() {
    let b = Backends::start().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let logdir = tempfile::tempdir().expect("tempdir");
    let log = logdir.path().join("access.log");
    let routes = format!(
        "[[route]]\nname = \"app\"\npath_prefix = \"/app\"\nblue = [\"{}\"]\ngreen = [\"{}\"]\n\
         [[route]]\nname = \"dead\"\npath_prefix = \"/dead\"\nblue = [\"{dead}\"]\ngreen = [\"{dead}\"]\n",
        b.blue.addr(),
        b.green.addr()
    );
    let mut setup = Setup::new(routes);
    setup.extra = format!(
        "[access_log]\nenabled = true\npath = \"{}\"\n",
        log.display()
    );
    let p = Proxy::start(&setup).await;

    let mut c = Client::connect(p.addr()).await;
    let r = c.get("/app/x?q=%22quoted%22&n=1").await;
    assert_eq!((r.status, r.body.as_str()), (200, "blue\n"));
    assert_eq!(c.get("/nowhere").await.status, 404);
    assert_eq!(c.get("/dead/end").await.status, 502);

    eventually("three access log lines", Duration::from_secs(5), || {
        let n = lines(&log).len();
        async move { n >= 3 }
    })
    .await;
    let got = lines(&log);
    assert_eq!(got.len(), 3, "{got:?}");
    let keys = [
        "time",
        "client",
        "method",
        "path",
        "status",
        "bytes",
        "duration_ms",
        "route",
        "color",
        "upstream",
    ];
    for l in &got {
        let obj = l.as_object().expect("an object");
        for k in keys {
            assert!(obj.contains_key(k), "no {k} in {l}");
        }
        assert_eq!(obj.len(), keys.len(), "{l}");
        let t = l["time"].as_str().expect("time is a string");
        assert!(t.ends_with('Z'), "UTC: {t}");
        humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("RFC 3339 {t}: {e}"));
        assert_eq!(l["client"], "127.0.0.1");
        assert_eq!(l["method"], "GET");
        let ms = l["duration_ms"].as_f64().expect("duration_ms is a number");
        assert!((0.0..5000.0).contains(&ms), "{l}");
    }

    let ok = &got[0];
    assert_eq!(ok["path"], "/app/x?q=%22quoted%22&n=1");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["bytes"], 5, "blue\\n is 5 bytes: {ok}");
    assert_eq!(ok["route"], "app");
    assert_eq!(ok["color"], "blue");
    assert_eq!(ok["upstream"], b.blue.addr().to_string());

    let missing = &got[1];
    assert_eq!(missing["path"], "/nowhere");
    assert_eq!(missing["status"], 404);
    assert!(missing["bytes"].as_u64().expect("bytes") > 0);
    assert!(missing["route"].is_null() && missing["color"].is_null());
    assert!(missing["upstream"].is_null());

    let bad = &got[2];
    assert_eq!(bad["status"], 502);
    assert_eq!(bad["route"], "dead");
    assert_eq!(bad["color"], "blue");
    assert_eq!(bad["upstream"], dead);

    // The access lines stay out of the stderr log.
    assert!(!p.log_text().contains("/app/x"), "{}", p.log_text());
}
