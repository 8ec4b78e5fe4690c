//! A backend's response head: parsed with httparse, its framing decided (RFC 9112 §6.3), and
//! rewritten for the client with the route's response headers, the connection's own
//! `Connection` field and, when the response is compressed here, gzip's fields.
//!
//! Pure: bytes in, a [`Response`] view or a [`BadResponse`] out (the client gets a 502), and
//! a writer into a reused buffer. Whether to gzip is request.rs's decision; the body bytes
//! are framing.rs's and mod.rs's.

use super::field::{Field, Kinds};
use super::framing::Framing;
use super::head::{parse_length, Fields};
use crate::config::HeaderRule;
use crate::edge::trim_ows;

/// Why a backend's head cannot be passed on: the client gets a 502.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("the backend's response head is malformed")]
    Malformed,
    #[error("the backend's response head is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the backend sent conflicting Content-Length values")]
    Length,
    #[error("the backend switched protocols without being asked")]
    UnaskedUpgrade,
    #[error("the backend switched to a protocol other than WebSocket")]
    NotWebSocket,
}

#[derive(Debug)]
pub struct Response<'b, 'h> {
    pub status: u16,
    pub reason: &'b str,
    pub minor: u8,
    pub head_len: usize,
    pub framing: Framing,
    pub headers: &'h [httparse::Header<'b>],
    /// The backend closes after this response (or never said it keeps the connection).
    pub close: bool,
    /// `Connection` names other fields (hop-by-hop ones to drop): rare, so the per-field
    /// check only runs then.
    names_fields: bool,
    /// The kinds of the fields, found once by the parse.
    kinds: Kinds,
}

impl Response<'_, '_> {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parses the response head at the start of `buf`; `Ok(None)` while incomplete. `head` is
/// whether the request was HEAD, `upgrade` whether it asked to switch protocols.
pub fn parse<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut Fields<'b>,
    head: bool,
    upgrade: bool,
) -> Result<Option<Response<'b, 'h>>, BadResponse> {
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers[..],
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(BadResponse::TooLarge(MAX_HEAD))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse::Malformed),
    };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(BadResponse::Malformed);
    };
    if !(100..=999).contains(&status) {
        return Err(BadResponse::Malformed);
    }
    if status == 101 && !upgrade {
        return Err(BadResponse::UnaskedUpgrade);
    }
    let headers: &'h [httparse::Header<'b>] = resp.headers;
    if status == 101 && !switches_to_websocket(headers) {
        // Only a WebSocket was asked for: anything else (h2c) would be a tunnel the engine
        // cannot read, so it is never relayed.
        return Err(BadResponse::NotWebSocket);
    }
    let mut r = Response {
        status,
        reason: resp.reason.unwrap_or(""),
        minor,
        head_len,
        framing: Framing::Empty,
        headers,
        close: minor == 0,
        names_fields: false,
        kinds: Kinds::default(),
    };
    // One pass: connection options, and the framing fields for framing().
    let mut te = None;
    let mut len = Ok(None);
    for (i, h) in r.headers.iter().enumerate() {
        let f = r.kinds.find(i, h.name);
        if f == Field::TransferEncoding {
            te = Some(h.value);
        } else if f == Field::ContentLength {
            len = match (len, parse_length(h.value)) {
                (Ok(None), Some(n)) => Ok(Some(n)),
                (Ok(Some(l)), Some(n)) if l == n => Ok(Some(n)),
                _ => Err(BadResponse::Length),
            };
        } else if f == Field::Connection {
            for o in h.value.split(|&c| c == b',').map(trim_ows) {
                if o.eq_ignore_ascii_case(b"close") {
                    r.close = true;
                } else if o.eq_ignore_ascii_case(b"keep-alive") {
                    if minor == 0 {
                        r.close = false;
                    }
                } else if !o.is_empty() && !o.eq_ignore_ascii_case(b"upgrade") {
                    r.names_fields = true;
                }
            }
        }
    }
    r.framing = framing(&r, head, te, len)?;
    Ok(Some(r))
}

/// Whether a 101's `Upgrade` says exactly `websocket` (one line, one value).
fn switches_to_websocket(headers: &[httparse::Header<'_>]) -> bool {
    let mut upgrades = headers
        .iter()
        .filter(|h| Field::of(h.name) == Field::Upgrade);
    matches!(
        (upgrades.next(), upgrades.next()),
        (Some(h), None) if trim_ows(h.value).eq_ignore_ascii_case(b"websocket")
    )
}

/// The largest response head accepted from a backend.
pub const MAX_HEAD: usize = 64 * 1024;

/// RFC 9112 §6.3 for responses: no body for HEAD, 1xx, 204, 304; chunked when it is the last
/// coding; any other coding, or no length at all, runs until the backend closes.
fn framing(
    r: &Response<'_, '_>,
    head: bool,
    te: Option<&[u8]>,
    len: Result<Option<u64>, BadResponse>,
) -> Result<Framing, BadResponse> {
    if head || r.status < 200 || r.status == 204 || r.status == 304 {
        return Ok(Framing::Empty);
    }
    if let Some(te) = te {
        let last = te
            .rsplit(|&c| c == b',')
            .next()
            .map(trim_ows)
            .unwrap_or(b"");
        return Ok(if last.eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    Ok(match len? {
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// How the body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// The backend's bytes as they are (its framing is the client's).
    Pass,
    /// Chunked from the backend to an HTTP/1.0 client: the payload only, then close.
    Dechunk,
    /// Compressed here: chunked to an HTTP/1.1 client, close-delimited to HTTP/1.0.
    Gzip { chunked: bool },
}

/// What the client head says beyond the backend's fields.
#[derive(Debug, Clone, Copy)]
pub struct ClientSide<'a> {
    pub rules: &'a [HeaderRule],
    /// HTTP/1.0 client (no chunked framing towards it).
    pub http10: bool,
    /// This connection ends after the response.
    pub close: bool,
    /// Compress the body (request.rs decided: route, client, response type).
    pub gzip: bool,
    /// A CORS route's header lines (cors.rs decided): the backend's own `Access-Control-*`
    /// fields are dropped and these go out instead. `None`: not a CORS route.
    pub cors: Option<&'a [u8]>,
}

/// How the body of `r` goes to the client: compressed when `gzip` (and there is a body),
/// de-chunked for an HTTP/1.0 client, else as it comes.
pub fn mode(r: &Response<'_, '_>, gzip: bool, http10: bool) -> Out {
    match (gzip && r.framing != Framing::Empty, r.framing) {
        (true, _) => Out::Gzip { chunked: !http10 },
        (false, Framing::Chunked) if http10 => Out::Dechunk,
        _ => Out::Pass,
    }
}

/// Writes the client's head into `out` (cleared first) and returns how the body goes.
pub fn write_client(r: &Response<'_, '_>, side: &ClientSide<'_>, out: &mut Vec<u8>) -> Out {
    let mode = mode(r, side.gzip, side.http10);
    let gzip = matches!(mode, Out::Gzip { .. });
    start_head(out, r);
    let upgrade = r.status == 101;
    // RFC 9110 §8.6, RFC 9112 §6.1: no framing fields on 1xx and 204, and Transfer-Encoding
    // never to an HTTP/1.0 client (it cannot read it).
    let bodiless = r.status < 200 || r.status == 204;
    for (i, h) in r.headers.iter().enumerate() {
        let n = h.name;
        let f = r.kinds.of(i, n);
        let skip = match f {
            Field::Upgrade => !upgrade,
            Field::TransferEncoding => mode != Out::Pass || bodiless || side.http10,
            Field::ContentLength => mode != Out::Pass || r.framing == Framing::Chunked || bodiless,
            Field::Vary => gzip,
            _ => f.is_hop_by_hop(),
        };
        // Connection may not remove the framing fields (RFC 9112 §6.1 makes them the
        // message's own): dropping one would leave the client reading this body as the
        // next response. The same rule as head.rs applies to requests.
        let framing_field = matches!(f, Field::ContentLength | Field::TransferEncoding);
        if skip
            || (side.cors.is_some() && crate::cors::is_cors_field(n))
            || (!framing_field && named_in_connection(r, n))
            || side
                .rules
                .iter()
                .any(|rule| rule.name.as_str().eq_ignore_ascii_case(n))
        {
            continue;
        }
        push_line(out, n.as_bytes(), h.value);
    }
    if gzip {
        // One Vary: the backend's values, then Accept-Encoding.
        out.extend_from_slice(b"Vary: ");
        for v in r.headers_named("vary") {
            out.extend_from_slice(trim_ows(v));
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(b"Accept-Encoding\r\n");
    }
    for rule in side.rules {
        push_line(out, &rule.wire_name, rule.value.as_bytes());
    }
    out.extend_from_slice(side.cors.unwrap_or_default());
    if let Out::Gzip { chunked } = mode {
        out.extend_from_slice(b"Content-Encoding: gzip\r\n");
        if chunked {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
    }
    out.extend_from_slice(match (upgrade, side.close, side.http10) {
        (true, _, _) => b"Connection: upgrade\r\n",
        (false, true, _) => b"Connection: close\r\n",
        (false, false, true) => b"Connection: keep-alive\r\n",
        (false, false, false) => b"",
    });
    out.extend_from_slice(b"\r\n");
    mode
}

/// Writes an interim (1xx) head for the client into `out` (cleared first): its fields
/// minus hop-by-hop and framing ones; no route headers (they belong to the final response).
pub fn write_interim(r: &Response<'_, '_>, out: &mut Vec<u8>) {
    start_head(out, r);
    for (i, h) in r.headers.iter().enumerate() {
        let f = r.kinds.of(i, h.name);
        if f.is_hop_by_hop()
            || matches!(f, Field::ContentLength | Field::TransferEncoding)
            || named_in_connection(r, h.name)
        {
            continue;
        }
        push_line(out, h.name.as_bytes(), h.value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether the client connection must end after this response for its framing's sake.
pub fn ends_connection(r: &Response<'_, '_>, mode: Out) -> bool {
    match mode {
        Out::Pass => r.framing == Framing::Close,
        Out::Dechunk => true,
        Out::Gzip { chunked } => !chunked,
    }
}

fn named_in_connection(r: &Response<'_, '_>, name: &str) -> bool {
    r.names_fields
        && r.headers_named("connection")
            .flat_map(|v| v.split(|&c| c == b','))
            .any(|o| trim_ows(o).eq_ignore_ascii_case(name.as_bytes()))
}

/// Clears `out` and writes the client's status line for `r` (always HTTP/1.1).
fn start_head(out: &mut Vec<u8>, r: &Response<'_, '_>) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, r.status);
    out.push(b' ');
    out.extend_from_slice(r.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Header pairs (cors.rs's) as HTTP/1 lines.
pub fn push_fields(out: &mut Vec<u8>, fields: &[(&'static str, Vec<u8>)]) {
    for (n, v) in fields {
        push_line(out, n.as_bytes(), v);
    }
}

/// One header line as HTTP/1 writes it.
pub fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    push_line(out, name.as_bytes(), value);
}

fn push_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_status(out: &mut Vec<u8>, s: u16) {
    out.extend_from_slice(&[
        b'0' + (s / 100 % 10) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]);
}

/// switchyard's own answer (refusals, 404, 502): a short text body, the given response
/// headers, and `Connection: close` when the connection ends.
pub fn write_own(out: &mut Vec<u8>, status: u16, body: &str, rules: &[HeaderRule], close: bool) {
    write_own_with(out, status, body, rules, b"", close);
}

/// [`write_own`] with `extra` header lines (CORS, `Retry-After`); a 204 gets no body and no
/// framing fields (RFC 9110 §8.6).
pub fn write_own_with(
    out: &mut Vec<u8>,
    status: u16,
    body: &str,
    rules: &[HeaderRule],
    extra: &[u8],
    close: bool,
) {
    let body = if status == 204 { "" } else { body };
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, status);
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if status != 204 {
        out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for rule in rules {
        push_line(out, &rule.wire_name, rule.value.as_bytes());
    }
    out.extend_from_slice(extra);
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

fn reason(status: u16) -> &'static str {
    match status {
        204 => "No Content",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing_of(raw: &[u8], head: bool) -> Result<Option<Framing>, BadResponse> {
        let mut h = super::super::head::fields();
        parse(raw, &mut h, head, false).map(|r| r.map(|r| r.framing))
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |raw: &[u8]| framing_of(raw, false);
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Ok(Some(Framing::Length(5)))
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            Ok(Some(Framing::Length(5)))
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\n"),
            Err(BadResponse::Length)
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(BadResponse::Length)
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n"),
            Ok(Some(Framing::Chunked))
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Ok(Some(Framing::Close))
        );
        assert_eq!(f(b"HTTP/1.1 200 OK\r\n\r\n"), Ok(Some(Framing::Close)));
        assert_eq!(
            f(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
            Ok(Some(Framing::Empty))
        );
        assert_eq!(
            f(b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(Some(Framing::Empty))
        );
        assert_eq!(
            f(b"HTTP/1.1 100 Continue\r\n\r\n"),
            Ok(Some(Framing::Empty))
        );
        assert_eq!(
            framing_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Ok(Some(Framing::Empty))
        );
        assert_eq!(f(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        assert_eq!(
            f(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
            Err(BadResponse::Malformed)
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n"),
            Err(BadResponse::Malformed)
        );
        assert_eq!(
            f(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Err(BadResponse::UnaskedUpgrade)
        );
        let asked = |raw: &[u8]| {
            let mut h = super::super::head::fields();
            parse(raw, &mut h, false, true).map(|r| r.map(|r| r.status))
        };
        assert_eq!(
            asked(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"),
            Err(BadResponse::NotWebSocket)
        );
        assert_eq!(
            asked(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Err(BadResponse::NotWebSocket)
        );
        assert_eq!(
            asked(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n\r\n"),
            Ok(Some(101))
        );
    }

    /// No rules, HTTP/1.1, kept alive, no gzip.
    const PLAIN: ClientSide<'static> = ClientSide {
        rules: &[],
        http10: false,
        close: false,
        gzip: false,
        cors: None,
    };

    fn rule(name: &str, value: &str) -> HeaderRule {
        HeaderRule {
            name: http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).expect("name"),
            wire_name: bytes::Bytes::from(name.to_string()),
            value: http::HeaderValue::from_str(value).expect("value"),
        }
    }

    fn client_head(raw: &[u8], side: ClientSide<'_>) -> (String, Out) {
        let mut h = super::super::head::fields();
        let r = parse(raw, &mut h, false, true)
            .expect("valid")
            .expect("complete");
        let mut out = Vec::new();
        let mode = write_client(&r, &side, &mut out);
        (String::from_utf8_lossy(&out).into_owned(), mode)
    }

    #[test]
    fn client_head_gets_rules_and_loses_hop_by_hop() {
        let rules = [rule("X-Frame-Options", "DENY")];
        let side = ClientSide {
            rules: &rules,
            http10: false,
            close: true,
            gzip: false,
            cors: None,
        };
        let (h, mode) = client_head(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nx-frame-options: SAMEORIGIN\r\nContent-Length: 2\r\n\r\n",
            side,
        );
        assert_eq!(mode, Out::Pass);
        assert_eq!(h, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Frame-Options: DENY\r\nConnection: close\r\n\r\n");
    }

    #[test]
    fn connection_cannot_remove_framing_fields() {
        let side = PLAIN;
        let (h, _) = client_head(
            b"HTTP/1.1 200 OK\r\nConnection: Content-Length, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
            side,
        );
        assert_eq!(h, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        let (h, _) = client_head(
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n",
            side,
        );
        assert_eq!(h, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    }

    #[test]
    fn bodiless_and_interim_heads_lose_framing_and_http10_never_gets_chunked() {
        let side = PLAIN;
        let (h, _) = client_head(
            b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\nX-A: 1\r\n\r\n",
            side,
        );
        assert_eq!(h, "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n");
        let (h, _) = client_head(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            side,
        );
        assert_eq!(h, "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n");
        let old = ClientSide {
            http10: true,
            close: true,
            ..side
        };
        let (h, mode) = client_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", old);
        assert_eq!(mode, Out::Pass);
        assert_eq!(h, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        let mut fields = super::super::head::fields();
        let raw = b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n";
        let r = parse(raw, &mut fields, false, false)
            .expect("valid")
            .expect("complete");
        let mut out = Vec::new();
        write_interim(&r, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
        );
    }

    #[test]
    fn a_cors_route_replaces_the_backends_cors_fields() {
        let lines = b"Vary: Origin\r\nAccess-Control-Allow-Origin: https://a.com\r\n";
        let side = ClientSide {
            cors: Some(lines),
            ..PLAIN
        };
        let (h, _) = client_head(
            b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\naccess-control-expose-headers: x\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
            side,
        );
        assert_eq!(h, "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\nVary: Origin\r\nAccess-Control-Allow-Origin: https://a.com\r\n\r\n");
        let (h, _) = client_head(
            b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: 0\r\n\r\n",
            PLAIN,
        );
        assert!(h.contains("Access-Control-Allow-Origin: *"), "{h}");
    }

    #[test]
    fn own_answers_carry_extra_lines_and_204_has_no_body() {
        let mut out = Vec::new();
        write_own_with(
            &mut out,
            429,
            "slow down\n",
            &[],
            b"Retry-After: 3\r\n",
            false,
        );
        assert_eq!(out, b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\nRetry-After: 3\r\n\r\nslow down\n");
        write_own_with(&mut out, 204, "ignored", &[], b"Vary: Origin\r\n", false);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\nVary: Origin\r\n\r\n");
    }

    #[test]
    fn gzip_replaces_the_length_and_merges_vary() {
        let side = ClientSide {
            rules: &[],
            http10: false,
            close: false,
            gzip: true,
            cors: None,
        };
        let (h, mode) = client_head(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nVary: Origin\r\nContent-Length: 2000\r\n\r\n",
            side,
        );
        assert_eq!(mode, Out::Gzip { chunked: true });
        assert_eq!(h, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nVary: Origin, Accept-Encoding\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n");
        let side = ClientSide {
            rules: &[],
            http10: true,
            close: true,
            gzip: false,
            cors: None,
        };
        let (h, mode) = client_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            side,
        );
        assert_eq!(mode, Out::Dechunk);
        assert_eq!(h, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    }

    #[test]
    fn upgrades_keep_their_fields() {
        let side = PLAIN;
        let (h, _) = client_head(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n",
            side,
        );
        assert_eq!(h, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\nConnection: upgrade\r\n\r\n");
    }

    #[test]
    fn own_answers_carry_the_rules() {
        let mut out = Vec::new();
        write_own(&mut out, 502, "switchyard: x\n", &[rule("a", "b")], true);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 14\r\na: b\r\nConnection: close\r\n\r\nswitchyard: x\n"
        );
    }
}
