//! `[[route]] max_body_bytes`, `read_timeout`, `write_timeout`: their validation into a
//! [`crate::route_limits::RouteLimits`], located at FILE:LINE:COL.

use std::ops::Range;

use toml::Spanned;

use super::{ConfigError, Dur};
use crate::route_limits::RouteLimits;

/// Validates one route's limits (the raw fields are the route's own, in config.rs).
pub(super) fn limits(
    max_body_bytes: Option<&Spanned<u64>>,
    read_timeout: Option<&Spanned<Dur>>,
    write_timeout: Option<&Spanned<Dur>>,
    route: &str,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<RouteLimits, ConfigError> {
    if let Some(m) = max_body_bytes.filter(|m| *m.get_ref() == 0) {
        return Err(at(
            m.span(),
            format!(
                "route \"{route}\": max_body_bytes must be at least 1; leave it out for no limit"
            ),
        ));
    }
    let positive = |d: Option<&Spanned<Dur>>, name: &str| match d {
        Some(d) if d.get_ref().0.is_zero() => Err(at(
            d.span(),
            format!("route \"{route}\": {name} must be greater than zero"),
        )),
        d => Ok(d.map(|d| d.get_ref().0)),
    };
    Ok(RouteLimits {
        max_body_bytes: max_body_bytes.map(|m| *m.get_ref()),
        read_timeout: positive(read_timeout, "read_timeout")?,
        write_timeout: positive(write_timeout, "write_timeout")?,
    })
}
