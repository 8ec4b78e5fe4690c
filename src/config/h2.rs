//! The HTTP/2 and gRPC keys: `[listen] http2` and `[[route]] grpc`, and the checks between
//! them (a gRPC route is reachable only over HTTP/2; gRPC compresses its own messages and
//! streams bodies of no announced length, so neither `gzip` nor `max_body_bytes` applies).
//!
//! Only validation lives here; the HTTP/2 data path is src/h2/.

use toml::Spanned;

use super::{At, ConfigError, RawRoute};

/// Checks every route's `grpc` against the rest of the config.
pub(super) fn check_routes(
    routes: &[Spanned<RawRoute>],
    http2: bool,
    at: At<'_>,
) -> Result<(), ConfigError> {
    for r in routes {
        let r = r.get_ref();
        let Some(g) = r.grpc.as_ref().filter(|g| *g.get_ref()) else {
            continue;
        };
        let name = r.name.get_ref();
        if !http2 {
            return Err(at(
                g.span(),
                format!("route \"{name}\": grpc = true needs [listen] http2 = true (gRPC clients speak HTTP/2 only)"),
            ));
        }
        if let Some(m) = &r.max_body_bytes {
            return Err(at(
                m.span(),
                format!("route \"{name}\": max_body_bytes does not apply to a grpc = true route (gRPC streams carry no content-length; limit message sizes in the gRPC server)"),
            ));
        }
        if r.gzip {
            return Err(at(
                g.span(),
                format!("route \"{name}\": grpc = true and gzip = true cannot be combined (gRPC compresses its own messages)"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn text(listen: &str, route: &str) -> String {
        format!("[listen]\nhttp = \"127.0.0.1:8000\"\n{listen}\n[[route]]\nname = \"rpc\"\npath_prefix = \"/\"\nblue = [\"127.0.0.1:3000\"]\ngreen = [\"127.0.0.1:3002\"]\n{route}\n")
    }

    fn parse(t: &str) -> Result<Config, String> {
        Config::parse(Path::new("t.toml"), t).map_err(|e| e.to_string())
    }

    #[test]
    fn http2_and_grpc_are_off_by_default_and_read_when_on() {
        let c = parse(&text("", "")).expect("minimal");
        assert!(!c.http2 && !c.routes[0].grpc);
        let c = parse(&text("http2 = true", "grpc = true")).expect("grpc");
        assert!(c.http2 && c.routes[0].grpc);
        let c = parse(&text("http2 = true", "grpc = false\ngzip = true")).expect("grpc off");
        assert!(!c.routes[0].grpc);
    }

    #[test]
    fn grpc_needs_http2_and_excludes_gzip_at_its_line() {
        let e = parse(&text("", "grpc = true")).expect_err("no http2");
        assert!(
            e.starts_with("t.toml:9:8: route \"rpc\": grpc = true needs [listen] http2 = true"),
            "{e}"
        );
        let e = parse(&text("http2 = true", "gzip = true\ngrpc = true")).expect_err("gzip");
        assert!(
            e.starts_with("t.toml:10:8:") && e.contains("cannot be combined"),
            "{e}"
        );
        let e = parse(&text("http2 = true", "grpc = true\nmax_body_bytes = 1024"))
            .expect_err("max_body_bytes");
        assert!(
            e.starts_with("t.toml:10:18:") && e.contains("max_body_bytes does not apply"),
            "{e}"
        );
        let e = parse(&text("http2 = \"yes\"", "")).expect_err("not a bool");
        assert!(e.starts_with("t.toml:3:"), "{e}");
    }
}
