//! `[[route]] rate_limit = { per_second, burst, key }`: its raw (serde) form and its
//! validation into a [`crate::rate_limit::Limit`], located at FILE:LINE:COL. Counting is
//! crate::rate_limit's.

use http::HeaderName;
use serde::Deserialize;
use toml::Spanned;

use super::{At, ConfigError};
use crate::rate_limit::{KeySource, Limit};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    per_second: Spanned<u32>,
    /// Default: `per_second` (one second's worth at once).
    burst: Option<Spanned<u32>>,
    /// `"ip"` (default) or `"header:NAME"`.
    key: Option<Spanned<String>>,
}

/// Validates one route's `rate_limit`.
pub(super) fn limit(raw: &RawRateLimit, route: &str, at: At<'_>) -> Result<Limit, ConfigError> {
    let per_second = *raw.per_second.get_ref();
    if per_second == 0 {
        return Err(at(
            raw.per_second.span(),
            format!("route \"{route}\" rate_limit: per_second must be at least 1"),
        ));
    }
    let burst = raw
        .burst
        .as_ref()
        .map(|b| *b.get_ref())
        .unwrap_or(per_second);
    if burst < per_second {
        let span = raw.burst.as_ref().map(|b| b.span()).unwrap_or(0..0);
        return Err(at(
            span,
            format!("route \"{route}\" rate_limit: burst ({burst}) must be at least per_second ({per_second}): it is how many requests may come at once, and a second's worth is the least that makes sense"),
        ));
    }
    let key = match &raw.key {
        None => KeySource::Ip,
        Some(k) => key_source(k.get_ref())
            .map_err(|m| at(k.span(), format!("route \"{route}\" rate_limit: {m}")))?,
    };
    Ok(Limit {
        per_second,
        burst,
        key,
    })
}

fn key_source(s: &str) -> Result<KeySource, String> {
    if s == "ip" {
        return Ok(KeySource::Ip);
    }
    let Some(name) = s.strip_prefix("header:") else {
        return Err(format!(
            "key \"{s}\" must be \"ip\" or \"header:NAME\", like \"header:x-api-key\""
        ));
    };
    let lower = name.trim().to_ascii_lowercase();
    HeaderName::from_bytes(lower.as_bytes())
        .map_err(|_| format!("key \"{s}\": \"{name}\" is not a valid header name"))?;
    Ok(KeySource::Header(lower))
}

#[cfg(test)]
mod tests {
    use super::super::route_limits::parse_route;
    use super::*;

    #[test]
    fn limits_are_read_with_defaults() {
        let c = parse_route(
            "rate_limit = { per_second = 100, burst = 200, key = \"header:X-Api-Key\" }",
        )
        .expect("valid");
        assert_eq!(
            c.routes[0].rate_limit,
            Some(Limit {
                per_second: 100,
                burst: 200,
                key: KeySource::Header("x-api-key".into())
            })
        );
        let c = parse_route("rate_limit = { per_second = 5 }").expect("valid");
        assert_eq!(
            c.routes[0].rate_limit,
            Some(Limit {
                per_second: 5,
                burst: 5,
                key: KeySource::Ip
            })
        );
    }

    #[test]
    fn bad_limits_are_located() {
        for (lines, want) in [
            ("rate_limit = { per_second = 0 }", "sy.toml:9:29: route \"api\" rate_limit: per_second must be at least 1"),
            ("rate_limit = { per_second = 10, burst = 5 }", "sy.toml:9:41: route \"api\" rate_limit: burst (5) must be at least per_second (10)"),
            ("rate_limit = { per_second = 1, key = \"cookie\" }", "sy.toml:9:38: route \"api\" rate_limit: key \"cookie\" must be \"ip\" or \"header:NAME\""),
            ("rate_limit = { per_second = 1, key = \"header:x y\" }", "sy.toml:9:38: route \"api\" rate_limit: key \"header:x y\": \"x y\" is not a valid header name"),
            ("rate_limit = { per_second = 1, per_minute = 3 }", "sy.toml:9:32: unknown field `per_minute`"),
        ] {
            let e = parse_route(lines).expect_err(lines).to_string();
            assert!(e.starts_with(want), "{lines}: {e}");
        }
    }
}
