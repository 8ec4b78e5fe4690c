//! A route's own request policies at the HTTP/1.1 engine: reads the fields they look at out
//! of the parsed head and writes admission.rs's verdict as header lines: an answer of
//! switchyard's own (204 preflight, 413, 429), or the CORS lines the exchange carries into
//! the response. Which answer a request gets is admission.rs's (shared with HTTP/2).
//!
//! A route with none of these policies costs three field checks per request.
use std::net::IpAddr;

use super::framing::Framing;
use super::head::Request;
use super::{pool, response};
use crate::admission::{self, Ask, CorsFields};
use crate::cors::Policy;
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

/// The route's policies (admission.rs) on a parsed head: forward it, with the CORS lines of
/// its response, or answer.
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
    let ask = Ask {
        method: req.method,
        length: match req.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        },
        size_unknown: req.framing == Framing::Chunked,
        can_collect: true,
        first_origin: route.cors.as_ref().and_then(|_| origins().next()),
        request_method: route
            .cors
            .as_ref()
            .and_then(|_| req.header("access-control-request-method")),
        key_header: route
            .rate_limit
            .as_ref()
            .and_then(|l| l.header())
            .and_then(|h| req.header(h)),
    };
    // The CORS lines go into a pooled buffer the exchange gives back: no allocation per
    // request.
    let cors_lines = |p: &Policy, out: &mut Vec<u8>| {
        p.actual_each(origin, |n, v| response::push_field(out, n, v))
    };
    match admission::decide(route, client, &ask) {
        Ok(false) => Ok(Admitted::default()),
        Ok(true) => Ok(Admitted {
            cors: route.cors.as_ref().map(|p| {
                let mut out = pool::scratch();
                cors_lines(p, &mut out);
                out
            }),
        }),
        Err(a) => {
            let mut extra = match a.retry_after {
                Some(s) => format!("Retry-After: {s}\r\n").into_bytes(),
                None => Vec::new(),
            };
            // Refusals on a CORS route carry its headers, so a page can read its 413 or 429.
            match (a.cors, &route.cors) {
                (CorsFields::Actual, Some(p)) => cors_lines(p, &mut extra),
                (CorsFields::Preflight, Some(p)) => {
                    response::push_fields(&mut extra, &p.preflight(origin, ask.request_method))
                }
                _ => {}
            }
            Err(Local {
                status: a.status,
                body: a.text,
                refused: a.refused,
                extra,
            })
        }
    }
}
