//! `[listen] redirect_https = true`: which requests on the plain listener get a 308 to
//! `https://`, and the `Location` they get. Pure; the engine writes the answer.
//!
//! Every request is redirected except those for a health path (`[health] path` and every
//! route's `health_path`), so a balancer's plain-HTTP check of the front door keeps
//! reaching the backends instead of following (or failing on) a redirect. 308 rather than
//! 301: the method and body are kept (a POST stays a POST), which 301 does not promise.

use crate::config::Config;

/// The https port to redirect a request for `path` to, or `None` to serve it: it came over
/// https already, `redirect_https` is off, or the path is a health path.
pub fn port_for(cfg: &Config, path: &str, https: bool) -> Option<u16> {
    let port = cfg.redirect_https.filter(|_| !https)?;
    let health = std::iter::once(cfg.health.path.as_str())
        .chain(cfg.routes.iter().map(|r| r.health_path.as_str()));
    (!exempt(path, health)).then_some(port)
}

/// Whether a request for `path` (without its query) is served as usual on the plain
/// listener.
pub fn exempt<'a>(path: &str, health_paths: impl IntoIterator<Item = &'a str>) -> bool {
    health_paths.into_iter().any(|h| h == path)
}

/// `https://HOST[:PORT]TARGET` for a request with this `Host` (port dropped) and target;
/// the port is written unless it is 443. `None` without a usable host.
pub fn location(host: Option<&str>, target: &str, https_port: u16) -> Option<String> {
    let host = strip_port(host?.trim());
    if host.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(16 + host.len() + target.len());
    out.push_str("https://");
    out.push_str(host);
    if https_port != 443 {
        out.push(':');
        out.push_str(&https_port.to_string());
    }
    // `OPTIONS *` and an absolute-form target without a path have no path of their own.
    if target.starts_with('/') {
        out.push_str(target);
    } else {
        out.push('/');
    }
    Some(out)
}

/// `example.com:8000` → `example.com`; `[2001:db8::1]:8000` → `[2001:db8::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_keep_host_path_and_query() {
        assert_eq!(
            location(Some("example.com:8000"), "/a/b?x=1&y=2", 443).as_deref(),
            Some("https://example.com/a/b?x=1&y=2")
        );
        assert_eq!(
            location(Some("example.com"), "/", 8443).as_deref(),
            Some("https://example.com:8443/")
        );
        assert_eq!(
            location(Some("[2001:db8::1]:8000"), "/p", 443).as_deref(),
            Some("https://[2001:db8::1]/p")
        );
        assert_eq!(
            location(Some("[2001:db8::1]"), "/p", 8443).as_deref(),
            Some("https://[2001:db8::1]:8443/p")
        );
        assert_eq!(location(Some("h"), "*", 443).as_deref(), Some("https://h/"));
        assert_eq!(location(None, "/", 443), None);
        assert_eq!(location(Some(""), "/", 443), None);
    }

    #[test]
    fn only_health_paths_are_exempt() {
        let health = ["/health/ready", "/healthz"];
        assert!(exempt("/health/ready", health));
        assert!(exempt("/healthz", health));
        assert!(!exempt("/health/ready/x", health));
        assert!(!exempt("/health", health));
        assert!(!exempt("/", health));
    }
}
