//! The HTTP/2 and gRPC keys: `[listen] http2` and `[[route]] grpc`, and the checks between
//! them (a gRPC route is reachable only over HTTP/2; gRPC compresses its own messages).
//!
//! Only validation lives here; the HTTP/2 data path is src/h2/.

use std::ops::Range;

use toml::Spanned;

use super::ConfigError;

/// Checks one route's `grpc` against the rest of the config.
pub(super) fn check_route(
    name: &str,
    grpc: &Option<Spanned<bool>>,
    gzip: bool,
    http2: bool,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<bool, ConfigError> {
    let Some(g) = grpc else {
        return Ok(false);
    };
    if !*g.get_ref() {
        return Ok(false);
    }
    if !http2 {
        return Err(at(
            g.span(),
            format!("route \"{name}\": grpc = true needs [listen] http2 = true (gRPC clients speak HTTP/2 only)"),
        ));
    }
    if gzip {
        return Err(at(
            g.span(),
            format!("route \"{name}\": grpc = true and gzip = true cannot be combined (gRPC compresses its own messages)"),
        ));
    }
    Ok(true)
}
