//! A route's own request policies on the HTTP/2 path: the counterpart of
//! engine/route_policy.rs for a pingora request head. It reads the fields the policies look
//! at and writes admission.rs's verdict (shared with HTTP/1.1) as header pairs: switchyard's
//! own answer (204 preflight, 411, 413, 429) or the CORS headers the response gets. Nothing
//! here decides, and nothing here writes to the client (gateway.rs does).
//!
//! One difference from HTTP/1.1: a body of unknown length (DATA frames without
//! `content-length`) on a route with `max_body_bytes` cannot be collected before it is
//! forwarded, as the engine does with a chunked one, so it is refused with 411 Length
//! Required rather than forwarded in part (RFC 9110 §15.5.12): `can_collect` is false.
use std::net::IpAddr;

use pingora::http::RequestHeader;

use crate::admission::{self, Ask, CorsFields};
use crate::cors::{self, Headers};
use crate::routing::Route;

/// switchyard's own answer instead of forwarding.
#[derive(Debug, PartialEq, Eq)]
pub struct Local {
    pub status: u16,
    pub text: &'static str,
    /// The `reason` of `switchyard_refused_total`; `None` for a preflight (no refusal).
    pub refused: Option<&'static str>,
    /// Headers beyond the route's own (CORS, `Retry-After`).
    pub extra: Headers,
}

/// The route's policies (admission.rs) on a pingora request head. `Ok` carries the CORS
/// headers of the response (`None`: not a CORS route). `body_empty`: the request ends with
/// its head (END_STREAM on HEADERS, or `content-length: 0`).
pub fn admit(
    req: &RequestHeader,
    body_empty: bool,
    route: &Route,
    client: Option<IpAddr>,
) -> Result<Option<Headers>, Local> {
    if route.cors.is_none() && route.rate_limit.is_none() && route.limits.max_body_bytes.is_none() {
        return Ok(None);
    }
    let origins = || req.headers.get_all("origin").iter().map(|v| v.as_bytes());
    let origin = route.cors.as_ref().and_then(|_| cors::single(origins()));
    let field = |name: &str| req.headers.get(name).map(|v| v.as_bytes());
    let length = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let ask = Ask {
        method: req.method.as_str(),
        length,
        size_unknown: length.is_none() && !body_empty,
        can_collect: false,
        first_origin: route.cors.as_ref().and_then(|_| origins().next()),
        request_method: route
            .cors
            .as_ref()
            .and_then(|_| field("access-control-request-method")),
        key_header: route
            .rate_limit
            .as_ref()
            .and_then(|l| l.header())
            .and_then(field),
    };
    match admission::decide(route, client, &ask) {
        Ok(cors) => Ok(route
            .cors
            .as_ref()
            .filter(|_| cors)
            .map(|p| p.actual(origin))),
        Err(a) => {
            let mut extra: Headers = Vec::new();
            if let Some(s) = a.retry_after {
                extra.push(("Retry-After", s.to_string().into_bytes()));
            }
            match (a.cors, &route.cors) {
                (CorsFields::Actual, Some(p)) => extra.extend(p.actual(origin)),
                (CorsFields::Preflight, Some(p)) => {
                    extra.extend(p.preflight(origin, ask.request_method))
                }
                _ => {}
            }
            Err(Local {
                status: a.status,
                text: a.text,
                refused: a.refused,
                extra,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::color::Color;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::routing::Router;
    use std::path::Path;
    use std::sync::Arc;

    fn route(extra: &str) -> Arc<Route> {
        let text = format!("[listen]\nhttp = \"127.0.0.1:8000\"\n[admin]\nsocket = \"/tmp/x.sock\"\n[state]\nfile = \"/tmp/x.state\"\n[[route]]\nname = \"api\"\npath_prefix = \"/\"\nblue = [\"127.0.0.1:3000\"]\ngreen = [\"127.0.0.1:3002\"]\n{extra}\n");
        let cfg = Config::parse(Path::new("t.toml"), &text).expect("config");
        let metrics = Metrics::new();
        let router = Router::new(&cfg, Color::Blue, &metrics);
        let table = router.load();
        table.find(None, "/").expect("route").clone()
    }

    fn head(method: &str, fields: &[(&str, &str)]) -> RequestHeader {
        let mut h = RequestHeader::build(method, b"/x", None).expect("head");
        for (n, v) in fields {
            h.append_header(n.to_string(), *v).expect("field");
        }
        h
    }

    const IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn a_route_without_policies_admits_everything() {
        let r = route("");
        let h = head("POST", &[("origin", "https://evil.example")]);
        assert_eq!(admit(&h, false, &r, IP), Ok(None));
    }

    #[test]
    fn bodies_over_the_limit_or_of_unknown_length_are_refused() {
        let r = route("max_body_bytes = 10");
        let big = head("POST", &[("content-length", "11")]);
        assert_eq!(admit(&big, false, &r, IP).map_err(|l| l.status), Err(413));
        let small = head("POST", &[("content-length", "10")]);
        assert_eq!(admit(&small, false, &r, IP), Ok(None));
        let unknown = head("POST", &[]);
        let refused = admit(&unknown, false, &r, IP).expect_err("411");
        assert_eq!(
            (refused.status, refused.refused),
            (411, Some("length_required"))
        );
        // No body at all (END_STREAM on the head): nothing to measure.
        assert_eq!(admit(&head("GET", &[]), true, &r, IP), Ok(None));
    }

    #[test]
    fn past_the_rate_the_answer_is_429_with_retry_after() {
        let r = route("rate_limit = { per_second = 1, burst = 1, key = \"header:x-api-key\" }");
        let h = head("GET", &[("x-api-key", "k1")]);
        assert_eq!(admit(&h, true, &r, IP), Ok(None));
        let limited = admit(&h, true, &r, IP).expect_err("429");
        assert_eq!(limited.status, 429);
        assert!(limited.extra.iter().any(|(n, _)| *n == "Retry-After"));
        // Another key has its own budget.
        assert_eq!(
            admit(&head("GET", &[("x-api-key", "k2")]), true, &r, IP),
            Ok(None)
        );
    }

    #[test]
    fn preflights_are_answered_and_actual_requests_carry_cors_headers() {
        let r = route(
            "cors = { origins = [\"https://app.example.com\"], methods = [\"GET\", \"POST\"] }",
        );
        let pre = head(
            "OPTIONS",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
            ],
        );
        let answer = admit(&pre, true, &r, IP).expect_err("preflight");
        assert_eq!((answer.status, answer.refused), (204, None));
        assert!(answer
            .extra
            .iter()
            .any(|(n, v)| *n == "Access-Control-Allow-Origin" && v == b"https://app.example.com"));
        let actual = admit(
            &head("GET", &[("origin", "https://app.example.com")]),
            true,
            &r,
            IP,
        )
        .expect("admitted")
        .expect("cors headers");
        assert!(actual
            .iter()
            .any(|(n, _)| *n == "Access-Control-Allow-Origin"));
        let other = admit(
            &head("GET", &[("origin", "https://evil.example")]),
            true,
            &r,
            IP,
        )
        .expect("admitted")
        .expect("vary only");
        assert!(other.iter().all(|(n, _)| !n.starts_with("Access-Control")));
    }
}
