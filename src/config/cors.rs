//! `[[route]] cors = { ... }`: its raw (serde) form and its validation into a
//! [`crate::cors::Policy`], each mistake located at FILE:LINE:COL. The matching itself is
//! crate::cors's.

use serde::Deserialize;
use toml::Spanned;

use super::{At, ConfigError, Dur};
use crate::cors::{check_origin, is_token, Parts, Policy};

type List = Vec<Spanned<String>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCors {
    origins: Spanned<List>,
    /// Default: the CORS-safelisted methods a page may send without asking.
    methods: Option<Spanned<List>>,
    #[serde(default)]
    headers: List,
    #[serde(default)]
    expose: List,
    #[serde(default)]
    credentials: bool,
    max_age: Option<Spanned<Dur>>,
}

/// Validates one route's `cors`.
pub(super) fn policy(
    raw: &Spanned<RawCors>,
    route: &str,
    at: At<'_>,
) -> Result<Policy, ConfigError> {
    let c = raw.get_ref();
    for o in c.origins.get_ref() {
        check_origin(o.get_ref())
            .map_err(|m| at(o.span(), format!("route \"{route}\" cors: {m}")))?;
    }
    let default_methods = ["GET", "HEAD", "POST"].map(|m| Spanned::new(0..0, m.to_string()));
    let methods = c
        .methods
        .as_ref()
        .map(|m| m.get_ref().as_slice())
        .unwrap_or(&default_methods);
    for (what, list) in [
        ("methods", methods),
        ("headers", &c.headers),
        ("expose", &c.expose),
    ] {
        for v in list {
            if !is_token(v.get_ref()) {
                return Err(at(
                    v.span(),
                    format!(
                        "route \"{route}\" cors {what}: \"{}\" is not a valid {}",
                        v.get_ref(),
                        if what == "methods" {
                            "method name"
                        } else {
                            "header name"
                        }
                    ),
                ));
            }
        }
    }
    let strings = |l: &[Spanned<String>]| l.iter().map(|s| s.get_ref().clone()).collect();
    Policy::new(&Parts {
        origins: strings(c.origins.get_ref()),
        methods: strings(methods),
        headers: strings(&c.headers),
        expose: strings(&c.expose),
        credentials: c.credentials,
        max_age: c.max_age.as_ref().map(|d| d.get_ref().0),
    })
    .map_err(|m| at(raw.span(), format!("route \"{route}\" cors: {m}")))
}

#[cfg(test)]
mod tests {
    use super::super::route_limits::parse_route;

    #[test]
    fn the_design_example_is_read() {
        let c = parse_route(r#"cors = { origins = ["https://app.example.com", "https://*.example.com"], methods = ["GET", "POST"], headers = ["content-type"], credentials = true, max_age = "10m" }"#)
            .expect("valid");
        let p = c.routes[0].cors.as_ref().expect("policy");
        assert!(p.allow(Some(b"https://x.example.com")).is_some());
        let defaults = parse_route(r#"cors = { origins = ["*"] }"#).expect("valid");
        let h = defaults.routes[0]
            .cors
            .as_ref()
            .expect("policy")
            .preflight(Some(b"https://a.org"), Some(b"HEAD"));
        assert!(h
            .iter()
            .any(|(n, v)| *n == "Access-Control-Allow-Methods" && v == b"GET, HEAD, POST"));
    }

    #[test]
    fn bad_policies_are_located() {
        for (lines, want) in [
            (r#"cors = { origins = ["https://a.com", "https://b.com/"] }"#, "sy.toml:9:38: route \"api\" cors: origin \"https://b.com/\" is not valid"),
            (r#"cors = { origins = ["https://*.com"] }"#, "sy.toml:9:21: route \"api\" cors: origin \"https://*.com\": a wildcard must be followed"),
            (r#"cors = { origins = ["*"], credentials = true }"#, "sy.toml:9:8: route \"api\" cors: credentials = true cannot go with origins = [\"*\"]"),
            (r#"cors = { origins = ["*"], methods = ["GET", "P O"] }"#, "sy.toml:9:45: route \"api\" cors methods: \"P O\" is not a valid method name"),
            (r#"cors = { origins = ["*"], headers = ["x:y"] }"#, "sy.toml:9:38: route \"api\" cors headers: \"x:y\" is not a valid header name"),
            (r#"cors = { origins = ["https://a.com"], credentials = true, methods = ["*"] }"#, "sy.toml:9:8: route \"api\" cors: methods: \"*\" is only a wildcard without credentials"),
            (r#"cors = { origins = ["https://a.com"], max_age = "10" }"#, "sy.toml:9:49: duration \"10\" has no unit"),
            (r#"cors = { origin = ["https://a.com"] }"#, "sy.toml:9:10: unknown field `origin`"),
        ] {
            let e = parse_route(lines).expect_err(lines).to_string();
            assert!(e.starts_with(want), "{lines}: {e}");
        }
    }
}
