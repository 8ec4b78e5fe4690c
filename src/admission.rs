//! A route's own request policies in order, for any path: body size, then rate limit, then
//! CORS preflight: the cheapest refusal first, and a preflight counts against the rate limit
//! like any request (as nginx's `limit_req` does). cors.rs, rate_limit.rs and
//! route_limits.rs each decide their part; this says which answer a request gets. How its
//! headers are written is the path's: engine/route_policy.rs (header lines) and
//! h2/policy.rs (header pairs) read the request and render this verdict, nothing more.

use std::net::IpAddr;

use crate::cors::Policy;
use crate::rate_limit::{self, Verdict};
use crate::route_limits::Body;
use crate::routing::Route;

/// What the policies read of a request.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'h> {
    pub method: &'h str,
    /// `Content-Length`, when the head gives one.
    pub length: Option<u64>,
    /// A body follows whose size the head does not give (chunked; HTTP/2 DATA frames
    /// without `content-length`).
    pub size_unknown: bool,
    /// Whether the path can read such a body whole before forwarding it (HTTP/1.1 can; on
    /// HTTP/2 it would be forwarded in part, so it gets 411 instead: RFC 9110 §15.5.12).
    pub can_collect: bool,
    /// The first `Origin` field (a preflight is one whatever the others say).
    pub first_origin: Option<&'h [u8]>,
    pub request_method: Option<&'h [u8]>,
    /// The value of the route's rate-limit key header, when its key is a header.
    pub key_header: Option<&'h [u8]>,
}

/// The CORS headers an answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorsFields {
    None,
    /// The route's headers for an actual request (a refusal a page can read).
    Actual,
    /// The preflight's answer.
    Preflight,
}

/// switchyard's own answer instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub text: &'static str,
    /// The `reason` of `switchyard_refused_total`; `None` for a preflight (no refusal).
    pub refused: Option<&'static str>,
    /// Seconds for `Retry-After`, written before the CORS headers.
    pub retry_after: Option<u32>,
    pub cors: CorsFields,
}

/// The verdict: forward (`Ok`: whether the response gets the route's CORS headers), or answer.
pub fn decide(route: &Route, client: Option<IpAddr>, ask: &Ask<'_>) -> Result<bool, Answer> {
    let cors = || match route.cors {
        Some(_) => CorsFields::Actual,
        None => CorsFields::None,
    };
    match route.limits.body(ask.length, ask.size_unknown) {
        Body::TooLarge => {
            return Err(Answer {
                status: 413,
                text: "switchyard: the request body is larger than this route takes (max_body_bytes)\n",
                refused: Some("body_too_large"),
                retry_after: None,
                cors: cors(),
            })
        }
        Body::Collect { .. } if !ask.can_collect => {
            return Err(Answer {
                status: 411,
                text: "switchyard: this route limits request bodies (max_body_bytes); send content-length\n",
                refused: Some("length_required"),
                retry_after: None,
                cors: cors(),
            })
        }
        // A body to collect is the exchange's to read (route_limits.rs decides again there).
        Body::Collect { .. } | Body::Stream => {}
    }
    if let Some(l) = &route.rate_limit {
        if let Verdict::Limited { retry_after } =
            l.check(rate_limit::key(l.source(), client, ask.key_header))
        {
            return Err(Answer {
                status: 429,
                text: "switchyard: too many requests; retry after the time in Retry-After\n",
                refused: Some("rate_limited"),
                retry_after: Some(retry_after),
                cors: cors(),
            });
        }
    }
    if route.cors.is_some()
        && Policy::is_preflight(ask.method, ask.first_origin, ask.request_method)
    {
        return Err(Answer {
            status: 204,
            text: "",
            refused: None,
            retry_after: None,
            cors: CorsFields::Preflight,
        });
    }
    Ok(route.cors.is_some())
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
        let router = Router::new(&cfg, Color::Blue, &Metrics::new());
        let table = router.load();
        table.find(None, "/").expect("route").clone()
    }

    const ASK: Ask<'static> = Ask {
        method: "POST",
        length: None,
        size_unknown: true,
        can_collect: true,
        first_origin: Some(b"https://app.example.com"),
        request_method: Some(b"POST"),
        key_header: None,
    };

    const IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn a_body_of_unknown_size_is_collected_where_the_path_can_and_refused_where_not() {
        let r = route("max_body_bytes = 10");
        assert_eq!(decide(&r, IP, &ASK), Ok(false));
        let refused = decide(
            &r,
            IP,
            &Ask {
                can_collect: false,
                ..ASK
            },
        )
        .expect_err("411");
        assert_eq!(
            (refused.status, refused.refused),
            (411, Some("length_required"))
        );
        let big = Ask {
            length: Some(11),
            size_unknown: false,
            ..ASK
        };
        assert_eq!(decide(&r, IP, &big).map_err(|a| a.status), Err(413));
    }

    #[test]
    fn the_order_is_body_then_rate_then_preflight_and_refusals_carry_cors() {
        let r = route(
            "max_body_bytes = 10\nrate_limit = { per_second = 1, burst = 1, key = \"ip\" }\ncors = { origins = [\"https://app.example.com\"] }",
        );
        let preflight = Ask {
            method: "OPTIONS",
            size_unknown: false,
            ..ASK
        };
        // Too large: 413 before the rate limit is counted.
        let big = Ask {
            length: Some(11),
            size_unknown: false,
            ..ASK
        };
        let a = decide(&r, IP, &big).expect_err("413");
        assert_eq!((a.status, a.cors), (413, CorsFields::Actual));
        // The preflight spends the one request the limit allows...
        let a = decide(&r, IP, &preflight).expect_err("204");
        assert_eq!(
            (a.status, a.refused, a.cors),
            (204, None, CorsFields::Preflight)
        );
        // ...so the next request is limited, with Retry-After and the route's CORS headers.
        let a = decide(&r, IP, &preflight).expect_err("429");
        assert_eq!((a.status, a.cors), (429, CorsFields::Actual));
        assert!(a.retry_after.is_some());
    }

    #[test]
    fn only_a_cors_route_answers_preflights_or_adds_cors_headers() {
        let plain = route("");
        let preflight = Ask {
            method: "OPTIONS",
            size_unknown: false,
            ..ASK
        };
        assert_eq!(decide(&plain, IP, &preflight), Ok(false));
        let cors = route("cors = { origins = [\"https://app.example.com\"] }");
        assert_eq!(
            decide(
                &cors,
                IP,
                &Ask {
                    method: "GET",
                    ..ASK
                }
            ),
            Ok(true)
        );
    }
}
