//! CORS per route (Fetch standard, RFC 6454 origins): which request origins a route allows,
//! whether a request is a preflight, and which `Access-Control-*` headers the answer gets.
//!
//! Pure decisions on plain values (bytes of the `Origin` and `Access-Control-Request-*`
//! fields, the method as a string); every data path (the HTTP/1.1 engine, HTTP/2) extracts
//! the fields and writes the returned `(name, value)` pairs its own way. A request origin is
//! echoed only when it matched an allowed pattern, and matching accepts only the strict
//! `scheme://host[:port]` grammar, so nothing a client sends (CR, LF, NUL, spaces, a path)
//! can reach a response header. This module does not read config files (config/cors.rs
//! validates and builds a [`Policy`]) nor touch sockets.

use std::time::Duration;

/// Request origins longer than this are never allowed (a real one is a scheme and a host).
pub const MAX_ORIGIN_LEN: usize = 512;

/// One entry of `origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `https://app.example.com` (lower case): the origin itself.
    Exact(String),
    /// `https://*.example.com[:port]`: any origin of this scheme and port whose host is one
    /// or more labels followed by `.example.com`.
    Subdomains {
        scheme: String,
        /// `.example.com`, with its leading dot.
        suffix: String,
        port: Option<String>,
    },
}

/// A route's validated CORS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `origins = ["*"]`: any origin, answered with `Access-Control-Allow-Origin: *`.
    any: bool,
    patterns: Vec<Pattern>,
    /// As they go out: `GET, POST`.
    methods: String,
    any_method: bool,
    /// As they go out: `content-type, x-request-id`; empty when none.
    headers: String,
    /// `Access-Control-Expose-Headers`; empty when none.
    expose: String,
    credentials: bool,
    /// `Access-Control-Max-Age` in seconds.
    max_age: Option<u64>,
}

/// The parts of a policy as the config gives them, each already a valid token list.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    pub origins: Vec<String>,
    pub methods: Vec<String>,
    pub headers: Vec<String>,
    pub expose: Vec<String>,
    pub credentials: bool,
    pub max_age: Option<Duration>,
}

/// Response header pairs (name as sent, value bytes): what a data path adds to an answer.
pub type Headers = Vec<(&'static str, Vec<u8>)>;

const ALLOW_ORIGIN: &str = "Access-Control-Allow-Origin";
const ALLOW_CREDENTIALS: &str = "Access-Control-Allow-Credentials";

impl Policy {
    /// Builds a policy; the message names the first thing wrong (config/cors.rs locates it).
    pub fn new(p: &Parts) -> Result<Policy, String> {
        let any = p.origins.iter().any(|o| o == "*");
        if any && p.origins.len() > 1 {
            return Err("\"*\" allows every origin: it cannot be listed with others".into());
        }
        if any && p.credentials {
            return Err("credentials = true cannot go with origins = [\"*\"]: browsers refuse a wildcard origin on credentialed requests (Fetch standard); list the origins".into());
        }
        let patterns = if any {
            Vec::new()
        } else {
            p.origins
                .iter()
                .map(|o| parse_pattern(o))
                .collect::<Result<_, _>>()?
        };
        if p.origins.is_empty() {
            return Err("origins must list at least one origin (or \"*\")".into());
        }
        let any_method = p.methods.iter().any(|m| m == "*");
        for (what, list) in [
            ("methods", &p.methods),
            ("headers", &p.headers),
            ("expose", &p.expose),
        ] {
            for v in list {
                if !is_token(v) {
                    return Err(format!(
                        "{what}: \"{v}\" is not a valid {}",
                        if what == "methods" {
                            "method name"
                        } else {
                            "header name"
                        }
                    ));
                }
                if v == "*" && p.credentials {
                    return Err(format!("{what}: \"*\" is only a wildcard without credentials (Fetch standard); list the names"));
                }
            }
        }
        if p.methods.is_empty() {
            return Err("methods must list at least one method, like [\"GET\", \"POST\"]".into());
        }
        Ok(Policy {
            any,
            patterns,
            methods: p.methods.join(", "),
            any_method,
            headers: p.headers.join(", ").to_ascii_lowercase(),
            expose: p.expose.join(", ").to_ascii_lowercase(),
            credentials: p.credentials,
            max_age: p.max_age.map(|d| d.as_secs()),
        })
    }

    /// The value of `Access-Control-Allow-Origin` for this request origin, or `None`: not
    /// allowed (the answer then gets no CORS headers at all).
    pub fn allow<'a>(&self, origin: Option<&'a [u8]>) -> Option<&'a [u8]> {
        let origin = origin?;
        let parts = OriginParts::parse(origin)?;
        if self.any {
            return Some(b"*");
        }
        self.patterns
            .iter()
            .any(|p| p.matches(origin, &parts))
            .then_some(origin)
    }

    /// Whether a request is a CORS preflight: `OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`. It is answered here, never forwarded.
    pub fn is_preflight(
        method: &str,
        origin: Option<&[u8]>,
        request_method: Option<&[u8]>,
    ) -> bool {
        method == "OPTIONS" && origin.is_some() && request_method.is_some()
    }

    /// The headers of the 204 answering a preflight: the full set when the origin and the
    /// requested method are allowed, else only `Vary` (the browser then fails the request).
    pub fn preflight(&self, origin: Option<&[u8]>, request_method: Option<&[u8]>) -> Headers {
        let mut out: Headers = vec![(
            "Vary",
            b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers".to_vec(),
        )];
        let (Some(allowed), Some(m)) = (self.allow(origin), request_method) else {
            return out;
        };
        if !self.method_allowed(m) {
            return out;
        }
        out.push((ALLOW_ORIGIN, allowed.to_vec()));
        if self.credentials {
            out.push((ALLOW_CREDENTIALS, b"true".to_vec()));
        }
        out.push((
            "Access-Control-Allow-Methods",
            self.methods.as_bytes().to_vec(),
        ));
        if !self.headers.is_empty() {
            out.push((
                "Access-Control-Allow-Headers",
                self.headers.as_bytes().to_vec(),
            ));
        }
        if let Some(s) = self.max_age {
            out.push(("Access-Control-Max-Age", s.to_string().into_bytes()));
        }
        out
    }

    /// The headers added to an actual (non-preflight) response: `Vary: Origin` whenever the
    /// answer depends on the origin (so a cache never serves one origin's answer to
    /// another), and the `Access-Control-*` ones only for an allowed origin.
    pub fn actual(&self, origin: Option<&[u8]>) -> Headers {
        let mut out = Headers::new();
        self.actual_each(origin, |n, v| out.push((n, v.to_vec())));
        out
    }

    /// [`Policy::actual`] without allocating: `field(name, value)` for each header, in order
    /// (what the hot path uses).
    pub fn actual_each(&self, origin: Option<&[u8]>, mut field: impl FnMut(&'static str, &[u8])) {
        if !self.any {
            field("Vary", b"Origin");
        }
        let Some(allowed) = self.allow(origin) else {
            return;
        };
        field(ALLOW_ORIGIN, allowed);
        if self.credentials {
            field(ALLOW_CREDENTIALS, b"true");
        }
        if !self.expose.is_empty() {
            field("Access-Control-Expose-Headers", self.expose.as_bytes());
        }
    }

    /// `Access-Control-Request-Method`: a listed method (methods are case-sensitive), or
    /// anything under `methods = ["*"]`.
    fn method_allowed(&self, m: &[u8]) -> bool {
        self.any_method || self.methods.split(", ").any(|x| x.as_bytes() == m)
    }
}

/// Whether a response field belongs to CORS: on a route with a policy, the backend's own
/// are dropped so the client never sees two conflicting answers.
pub fn is_cors_field(name: &str) -> bool {
    name.len() > 15 && name[..15].eq_ignore_ascii_case("access-control-")
}

/// The one `Origin` value of a request: several `Origin` fields make it no origin at all
/// (a browser sends one; two are an attempt to confuse).
pub fn single<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// A request origin split per RFC 6454's serialization: `scheme://host[:port]`.
struct OriginParts<'a> {
    scheme: &'a [u8],
    host: &'a [u8],
    port: Option<&'a [u8]>,
}

impl<'a> OriginParts<'a> {
    /// `None` for anything that is not exactly `scheme://host[:port]` in safe characters
    /// (`null`, a path, a trailing slash, userinfo, control bytes, over [`MAX_ORIGIN_LEN`]).
    fn parse(o: &'a [u8]) -> Option<OriginParts<'a>> {
        if o.len() > MAX_ORIGIN_LEN {
            return None;
        }
        // The scheme ends at the first ':' (it cannot contain one).
        let sep = o.iter().position(|&b| b == b':')?;
        let (scheme, rest) = (&o[..sep], o[sep + 1..].strip_prefix(b"//")?);
        if !valid_scheme(scheme) {
            return None;
        }
        let (host, port) = if rest.first() == Some(&b'[') {
            let end = rest.iter().position(|&b| b == b']')?;
            let inner = &rest[1..end];
            if inner.is_empty()
                || !inner
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return None;
            }
            (&rest[..=end], port_of(&rest[end + 1..])?)
        } else {
            // One pass: the host ends at its first other byte, which may only start a port.
            let end = rest
                .iter()
                .position(|&b| !HOST_BYTE[usize::from(b)])
                .unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            (&rest[..end], port_of(&rest[end..])?)
        };
        Some(OriginParts { scheme, host, port })
    }
}

/// The bytes of a host name in an origin: letters, digits, `-`, `.`.
static HOST_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
        i += 1;
    }
    t
};

/// `""` → no port; `":443"` → `443`; anything else is not an origin.
fn port_of(rest: &[u8]) -> Option<Option<&[u8]>> {
    match rest {
        [] => Some(None),
        [b':', digits @ ..]
            if (1..=5).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) =>
        {
            Some(Some(digits))
        }
        _ => None,
    }
}

fn valid_scheme(s: &[u8]) -> bool {
    matches!(s.first(), Some(c) if c.is_ascii_alphabetic())
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

impl Pattern {
    fn matches(&self, origin: &[u8], o: &OriginParts<'_>) -> bool {
        match self {
            Pattern::Exact(e) => e.as_bytes().eq_ignore_ascii_case(origin),
            Pattern::Subdomains {
                scheme,
                suffix,
                port,
            } => {
                let (h, s) = (o.host, suffix.as_bytes());
                o.scheme.eq_ignore_ascii_case(scheme.as_bytes())
                    && o.port == port.as_deref().map(str::as_bytes)
                    && h.len() > s.len()
                    && h[h.len() - s.len()..].eq_ignore_ascii_case(s)
                    && labels(&h[..h.len() - s.len()])
            }
        }
    }
}

/// One or more DNS labels (letters, digits, `-`) joined by dots: no empty label.
fn labels(b: &[u8]) -> bool {
    b.split(|&c| c == b'.')
        .all(|l| !l.is_empty() && l.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-'))
}

/// Parses one configured origin: `*`-free exact origins, or `scheme://*.domain[:port]` with
/// at least two labels after the wildcard (`https://*.com` would allow half the web).
fn parse_pattern(s: &str) -> Result<Pattern, String> {
    let lower = s.to_ascii_lowercase();
    let shape = "write it as scheme://host[:port], like \"https://app.example.com\", with no path or trailing slash";
    if lower == "null" {
        return Err(
            "\"null\" cannot be allowed: sandboxed documents and local files all send it".into(),
        );
    }
    if let Some((scheme, rest)) = lower.split_once("://*.") {
        let sample = format!("{scheme}://x.{rest}");
        let parts = OriginParts::parse(sample.as_bytes())
            .ok_or_else(|| format!("origin \"{s}\" is not valid: {shape}"))?;
        let domain = std::str::from_utf8(&parts.host[2..]).unwrap_or_default();
        if domain.split('.').filter(|l| !l.is_empty()).count() < 2 || !labels(domain.as_bytes()) {
            return Err(format!("origin \"{s}\": a wildcard must be followed by a domain of at least two labels, like \"https://*.example.com\""));
        }
        return Ok(Pattern::Subdomains {
            scheme: scheme.to_string(),
            suffix: format!(".{domain}"),
            port: parts.port.map(|p| String::from_utf8_lossy(p).into_owned()),
        });
    }
    if lower.contains('*') {
        return Err(format!("origin \"{s}\": a wildcard may only stand for the leftmost labels, like \"https://*.example.com\""));
    }
    OriginParts::parse(lower.as_bytes())
        .ok_or_else(|| format!("origin \"{s}\" is not valid: {shape}"))?;
    Ok(Pattern::Exact(lower))
}

/// Whether `s` is a valid entry of `origins` (config/cors.rs points at the bad one).
pub fn check_origin(s: &str) -> Result<(), String> {
    if s == "*" {
        return Ok(());
    }
    parse_pattern(s).map(|_| ())
}

/// RFC 9110 token: what method and header names are made of.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], credentials: bool) -> Result<Policy, String> {
        Policy::new(&Parts {
            origins: origins.iter().map(|s| s.to_string()).collect(),
            methods: vec!["GET".into(), "POST".into()],
            headers: vec!["Content-Type".into()],
            expose: vec![],
            credentials,
            max_age: Some(Duration::from_secs(600)),
        })
    }

    fn example() -> Policy {
        policy(&["https://app.example.com", "https://*.example.com"], true).expect("policy")
    }

    fn allowed(p: &Policy, o: &str) -> bool {
        p.allow(Some(o.as_bytes())).is_some()
    }

    #[test]
    fn exact_and_wildcard_origins_match_exactly() {
        let p = example();
        for o in [
            "https://app.example.com",
            "https://APP.example.com",
            "https://a.example.com",
            "https://a.b-c.example.com",
        ] {
            assert!(allowed(&p, o), "{o}");
        }
        for o in [
            "https://example.com",
            "https://evil-example.com",
            "https://example.com.evil.net",
            "https://a.example.com.evil.net",
            "https://.example.com",
            "https://a..example.com",
            "http://a.example.com",
            "https://a.example.com:8443",
            "https://app.example.com/",
            "https://app.example.com/x",
            "https://u@app.example.com",
            "https://a_b.example.com",
            "null",
            "",
            "app.example.com",
        ] {
            assert!(!allowed(&p, o), "{o}");
        }
        assert!(p.allow(None).is_none());
    }

    #[test]
    fn ports_must_match_the_pattern() {
        let p = policy(
            &["https://*.example.com:8443", "http://localhost:3000"],
            false,
        )
        .expect("policy");
        assert!(allowed(&p, "https://a.example.com:8443"));
        assert!(!allowed(&p, "https://a.example.com"));
        assert!(!allowed(&p, "https://a.example.com:443"));
        assert!(allowed(&p, "http://localhost:3000"));
        assert!(!allowed(&p, "http://localhost:30001"));
        assert!(!allowed(&p, "http://localhost"));
    }

    #[test]
    fn hostile_origins_are_never_echoed() {
        let p = example();
        for o in [
            &b"https://a.example.com\r\nSet-Cookie: x=1"[..],
            b"https://a.example.com\n",
            b"https://a.example.com\0",
            b"https://a.exa mple.com",
            b"https://a.example.com\xff",
        ] {
            assert!(p.allow(Some(o)).is_none(), "{o:?}");
        }
        let long = format!("https://{}.example.com", "a".repeat(MAX_ORIGIN_LEN));
        assert!(!allowed(&p, &long));
        assert_eq!(single([&b"a"[..], b"b"].into_iter()), None);
        assert_eq!(single([&b"a"[..]].into_iter()), Some(&b"a"[..]));
    }

    #[test]
    fn preflight_answers_allowed_origins_only() {
        let p = example();
        let o = Some(&b"https://a.example.com"[..]);
        let h = p.preflight(o, Some(b"POST"));
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_slice());
        assert_eq!(get(ALLOW_ORIGIN), Some(&b"https://a.example.com"[..]));
        assert_eq!(get(ALLOW_CREDENTIALS), Some(&b"true"[..]));
        assert_eq!(get("Access-Control-Allow-Methods"), Some(&b"GET, POST"[..]));
        assert_eq!(
            get("Access-Control-Allow-Headers"),
            Some(&b"content-type"[..])
        );
        assert_eq!(get("Access-Control-Max-Age"), Some(&b"600"[..]));
        // A method not listed, or an origin not allowed: only Vary.
        assert_eq!(p.preflight(o, Some(b"DELETE")).len(), 1);
        assert_eq!(
            p.preflight(Some(b"https://evil.com"), Some(b"GET")).len(),
            1
        );
        assert!(Policy::is_preflight("OPTIONS", o, Some(b"GET")));
        assert!(!Policy::is_preflight("OPTIONS", o, None));
        assert!(!Policy::is_preflight("GET", o, Some(b"GET")));
    }

    #[test]
    fn actual_responses_vary_and_echo() {
        let p = example();
        let h = p.actual(Some(b"https://app.example.com"));
        assert_eq!(h[0], ("Vary", b"Origin".to_vec()));
        assert_eq!(h[1], (ALLOW_ORIGIN, b"https://app.example.com".to_vec()));
        assert_eq!(h[2], (ALLOW_CREDENTIALS, b"true".to_vec()));
        assert_eq!(
            p.actual(Some(b"https://evil.com")),
            vec![("Vary", b"Origin".to_vec())]
        );
        let any = policy(&["*"], false).expect("any");
        assert_eq!(
            any.actual(Some(b"https://x.org")),
            vec![(ALLOW_ORIGIN, b"*".to_vec())]
        );
        assert!(any.actual(Some(b"https://x.org/\r\n")).is_empty());
        assert!(is_cors_field("Access-Control-Allow-Origin"));
        assert!(!is_cors_field("access-control"));
    }

    #[test]
    fn bad_policies_are_refused() {
        for (origins, credentials, want) in [
            (&["*"][..], true, "credentials = true cannot go with"),
            (
                &["*", "https://a.com"],
                false,
                "cannot be listed with others",
            ),
            (&["https://a.com/"], false, "no path or trailing slash"),
            (&["https://a.com/x"], false, "is not valid"),
            (&["a.com"], false, "is not valid"),
            (&["null"], false, "\"null\" cannot"),
            (&["https://*.com"], false, "at least two labels"),
            (&["https://a.*.com"], false, "leftmost labels"),
            (&["https://a.com\r\n"], false, "is not valid"),
            (&[], false, "at least one origin"),
        ] {
            let e = policy(origins, credentials).expect_err(want);
            assert!(e.contains(want), "{origins:?}: {e}");
        }
        let bad_method = Policy::new(&Parts {
            origins: vec!["https://a.com".into()],
            methods: vec!["GE T".into()],
            ..Parts::default()
        });
        assert!(bad_method
            .expect_err("method")
            .contains("not a valid method"));
        let bad_header = Policy::new(&Parts {
            origins: vec!["https://a.com".into()],
            methods: vec!["GET".into()],
            headers: vec!["x:y".into()],
            ..Parts::default()
        });
        assert!(bad_header
            .expect_err("header")
            .contains("not a valid header name"));
    }
}
