//! `[[route]] rate_limit = { per_second, burst, key }`: its raw (serde) form and its
//! validation into a [`crate::rate_limit::Limit`], located at FILE:LINE:COL. Counting is
//! crate::rate_limit's.

use std::ops::Range;

use http::HeaderName;
use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
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
pub(super) fn limit(
    raw: &RawRateLimit,
    route: &str,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<Limit, ConfigError> {
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
