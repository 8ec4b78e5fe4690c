//! A route's own request policies at the HTTP/1.1 engine: reads the fields cors.rs,
//! rate_limit.rs and route_limits.rs decide on out of the parsed head, and turns their
//! verdicts into an answer of switchyard's own (204 preflight, 413, 429) or into what the
//! exchange needs to carry (the CORS lines of the response). The decisions are theirs;
//! nothing here decides.
//!
//! A route with none of these policies costs three field checks per request.

use std::net::IpAddr;

use super::framing::Framing;
use super::head::Request;
use super::{pool, response};
use crate::cors::Policy;
use crate::rate_limit::{self, Verdict};
use crate::route_limits::Body;
use crate::routing::Route;

/// What a request admitted on its route carries into the exchange.
#[derive(Debug, Default)]
pub(crate) struct Admitted {
    /// The CORS header lines for the response (`None`: not a CORS route).
    pub cors: Option<Vec<u8>>,
}

/// switchyard's own answer instead of forwarding.
#[derive(Debug)]
pub(crate) struct Local {
    pub status: u16,
    pub body: &'static str,
    /// The `reason` of `switchyard_refused_total`; `None` for an answer that is no refusal
    /// (a preflight).
    pub refused: Option<&'static str>,
    /// Header lines beyond the route's own (CORS, `Retry-After`).
    pub extra: Vec<u8>,
}

/// Body size, then rate limit, then CORS preflight: the cheapest refusal first, and a
/// preflight counts against the rate limit like any request (as nginx's `limit_req` does).
#[inline]
pub(crate) fn admit(
    req: &Request<'_, '_>,
    route: &Route,
    client: Option<IpAddr>,
) -> Result<Admitted, Local> {
    if route.cors.is_none() && route.rate_limit.is_none() && route.limits.max_body_bytes.is_none() {
        return Ok(Admitted::default());
    }
    let origins = || {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("origin"))
            .map(|h| h.value)
    };
    // Several Origin fields make no origin (nothing is echoed), but still a preflight.
    let origin = route
        .cors
        .as_ref()
        .and_then(|_| crate::cors::single(origins()));
    // Refusals on a CORS route carry its headers, so a page can read its 413 or 429.
    // The buffer is a pooled one the exchange gives back: no allocation per request.
    let cors_lines = |p: &Policy| {
        let mut out = pool::scratch();
        p.actual_each(origin, |n, v| response::push_field(&mut out, n, v));
        out
    };
    let length = match req.framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    // A chunked body to collect is the exchange's to read (route_limits.rs decides again there).
    match route.limits.body(length, req.framing == Framing::Chunked) {
        Body::TooLarge => return Err(Local {
            status: 413,
            body: "switchyard: the request body is larger than this route takes (max_body_bytes)\n",
            refused: Some("body_too_large"),
            extra: route.cors.as_ref().map(cors_lines).unwrap_or_default(),
        }),
        Body::Collect { .. } | Body::Stream => {}
    }
    if let Some(l) = &route.rate_limit {
        let header = l.header().and_then(|h| req.header(h));
        if let Verdict::Limited { retry_after } =
            l.check(rate_limit::key(l.source(), client, header))
        {
            let mut extra = format!("Retry-After: {retry_after}\r\n").into_bytes();
            if let Some(p) = &route.cors {
                extra.extend_from_slice(&cors_lines(p));
            }
            return Err(Local {
                status: 429,
                body: "switchyard: too many requests; retry after the time in Retry-After\n",
                refused: Some("rate_limited"),
                extra,
            });
        }
    }
    let Some(policy) = &route.cors else {
        return Ok(Admitted { cors: None });
    };
    let request_method = req.header("access-control-request-method");
    if Policy::is_preflight(req.method, origins().next(), request_method) {
        let mut extra = Vec::new();
        response::push_fields(&mut extra, &policy.preflight(origin, request_method));
        return Err(Local {
            status: 204,
            body: "",
            refused: None,
            extra,
        });
    }
    Ok(Admitted {
        cors: Some(cors_lines(policy)),
    })
}
