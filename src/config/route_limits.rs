//! `[[route]] max_body_bytes`, `read_timeout`, `write_timeout`: their validation into a
//! [`crate::route_limits::RouteLimits`], located at FILE:LINE:COL.

use toml::Spanned;

use super::{At, ConfigError, Dur};
use crate::route_limits::RouteLimits;

/// Validates one route's limits (the raw fields are the route's own, in config.rs).
pub(super) fn limits(
    max_body_bytes: Option<&Spanned<u64>>,
    read_timeout: Option<&Spanned<Dur>>,
    write_timeout: Option<&Spanned<Dur>>,
    route: &str,
    at: At<'_>,
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

/// Config text with one route carrying `lines`, parsed (for the route policies' tests).
#[cfg(test)]
pub(super) fn parse_route(lines: &str) -> Result<super::Config, ConfigError> {
    let text = format!(
        "[listen]\nhttp = \"127.0.0.1:8000\"\n\n[[route]]\nname = \"api\"\npath_prefix = \"/\"\nblue = [\"127.0.0.1:3000\"]\ngreen = [\"127.0.0.1:3001\"]\n{lines}\n"
    );
    super::Config::parse(std::path::Path::new("sy.toml"), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_and_bad_ones_located() {
        let c =
            parse_route("max_body_bytes = 1048576\nread_timeout = \"30s\"\nwrite_timeout = \"5s\"")
                .expect("valid");
        let l = c.routes[0].limits;
        assert_eq!(l.max_body_bytes, Some(1 << 20));
        assert_eq!(l.read_timeout, Some(std::time::Duration::from_secs(30)));
        assert_eq!(l.write_timeout, Some(std::time::Duration::from_secs(5)));
        assert_eq!(
            parse_route("").expect("none").routes[0].limits,
            RouteLimits::default()
        );
        for (lines, want) in [
            (
                "max_body_bytes = 0",
                "sy.toml:9:18: route \"api\": max_body_bytes must be at least 1",
            ),
            (
                "read_timeout = \"0s\"",
                "sy.toml:9:16: route \"api\": read_timeout must be greater than zero",
            ),
            (
                "write_timeout = \"5\"",
                "sy.toml:9:17: duration \"5\" has no unit",
            ),
            ("max_body_bytes = -1", "sy.toml:9:18:"),
        ] {
            let e = parse_route(lines).expect_err(lines).to_string();
            assert!(e.starts_with(want), "{lines}: {e}");
        }
    }
}
