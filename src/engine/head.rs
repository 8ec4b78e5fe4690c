//! A client's request head: parsed with httparse into a fixed header array, checked against
//! RFC 9112 and `[limits]`, and rewritten for the backend straight into a reused buffer.
//!
//! Pure: bytes in, a [`Request`] view (borrowing the bytes) or a [`Refusal`] out; and a
//! writer that produces the upstream head in one buffer, ready for one write. It decides
//! nothing about routes or colors (request.rs) and does no I/O (the connection loop in
//! mod.rs).
//!
//! What is refused here, with the status the client gets (then the connection closes):
//! - 400: a request line that is not `method SP target SP HTTP/1.x` (httparse), a target that
//!   is neither origin-form (`/...`), absolute-form (`http://host/...`) nor `*` for OPTIONS;
//!   header syntax (obs-fold, NUL/CR in values, space before the colon: httparse), a bare LF
//!   line end, HTTP/1.1 without `Host`, two `Host`, `Transfer-Encoding` that is not exactly
//!   `chunked` or on HTTP/1.0, `Transfer-Encoding` with `Content-Length`, a `Content-Length`
//!   that is not one plain number, more than 256 header lines;
//! - 405: CONNECT (switchyard is not a forward proxy);
//! - 431: a head over `max_header_bytes`, more than `max_headers` fields.

use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use super::field::{Field, Kinds};
use super::framing::Framing;
use crate::edge::{has_bare_lf, trim_ows, Refusal};

/// httparse's header array: the most lines any request may have (pingora's limit too).
pub const MAX_HEADERS: usize = 256;

/// Room for a head's fields, left uninitialised: httparse fills what it parses, and setting
/// 8 KiB of empty headers first cost about a thousand instructions per head.
pub type Fields<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

pub fn fields<'b>() -> Fields<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Connection options (RFC 9110 §7.6.1) past which a request is refused: each one names a
/// header to drop, and a real client sends two or three.
const MAX_CONNECTION_OPTIONS: usize = 16;

/// A parsed, checked request head, borrowing the bytes it came from.
#[derive(Debug)]
pub struct Request<'b, 'h> {
    pub method: &'b str,
    /// What goes on the upstream request line: origin-form (or `*`).
    pub target: &'b str,
    /// The path for routing: `target` without its query.
    pub path: &'b str,
    /// The authority of an absolute-form target, which replaces `Host` (RFC 9112 §3.2.2).
    pub authority: Option<&'b str>,
    /// `Host` as sent (or the absolute-form authority): for routing.
    pub host: Option<&'b str>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub head_len: usize,
    pub framing: Framing,
    pub headers: &'h [httparse::Header<'b>],
    /// The kinds of the fields, found once by the checks.
    pub kinds: Kinds,
    /// What the client said about this connection.
    pub close: bool,
    pub keep_alive: bool,
    /// A protocol upgrade (WebSocket): `Upgrade` plus the `upgrade` connection option.
    pub upgrade: bool,
    pub expect_continue: bool,
    options: [&'b [u8]; MAX_CONNECTION_OPTIONS],
    n_options: usize,
}

impl Request<'_, '_> {
    /// The client keeps the connection after this exchange unless it said otherwise.
    pub fn wants_keep_alive(&self) -> bool {
        if self.minor == 0 {
            self.keep_alive && !self.close
        } else {
            !self.close
        }
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Whether a field is hop-by-hop here: the standard ones and those the client named in
    /// `Connection`.
    fn hop_by_hop(&self, f: Field, name: &str) -> bool {
        f.is_hop_by_hop()
            || self.options[..self.n_options]
                .iter()
                .any(|o| o.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Parses the head at the start of `buf`; `Ok(None)` while it is incomplete.
pub fn parse<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut Fields<'b>,
    max_header_bytes: usize,
    max_headers: usize,
) -> Result<Option<Request<'b, 'h>>, Refusal> {
    let mut req = httparse::Request::new(&mut []);
    let status = req
        .parse_with_uninit_headers(buf, &mut headers[..])
        .map_err(|e| match e {
            httparse::Error::TooManyHeaders => Refusal::BadRequest("more than 256 header lines"),
            httparse::Error::Version => Refusal::BadRequest("malformed request line"),
            httparse::Error::Token => Refusal::BadRequest("malformed request line"),
            _ => Refusal::BadRequest("malformed request header"),
        });
    let head_len = match status {
        Err(r) if buf.len() > max_header_bytes => {
            // Whatever is wrong, it is also too large; say the more useful thing.
            let _ = r;
            return Err(too_large());
        }
        Err(r) => return Err(r),
        Ok(httparse::Status::Partial) if buf.len() > max_header_bytes => return Err(too_large()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(n)) => n,
    };
    if head_len > max_header_bytes {
        return Err(too_large());
    }
    if has_bare_lf(&buf[..head_len]) {
        return Err(Refusal::BadRequest("bare LF in the request header"));
    }
    let (Some(method), Some(raw_target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Refusal::BadRequest("malformed request line"));
    };
    let headers: &'h [httparse::Header<'b>] = req.headers;
    if headers.len() > max_headers {
        return Err(Refusal::HeaderTooLarge(
            "more header fields than [limits] max_headers",
        ));
    }
    if method == "CONNECT" {
        return Err(Refusal::Method(
            "CONNECT is not served: switchyard is not a forward proxy",
        ));
    }
    let (target, path, authority) = target_form(method, raw_target)?;
    let mut r = Request {
        method,
        target,
        path,
        authority,
        host: authority,
        minor,
        head_len,
        framing: Framing::Empty,
        headers,
        kinds: Kinds::default(),
        close: false,
        keep_alive: false,
        upgrade: false,
        expect_continue: false,
        options: [b""; MAX_CONNECTION_OPTIONS],
        n_options: 0,
    };
    check_fields(&mut r)?;
    Ok(Some(r))
}

fn too_large() -> Refusal {
    Refusal::HeaderTooLarge("request line and headers are larger than [limits] max_header_bytes")
}

/// RFC 9112 §3.2: (forwarded target, routing path, authority of an absolute-form target).
fn target_form<'b>(
    method: &str,
    t: &'b str,
) -> Result<(&'b str, &'b str, Option<&'b str>), Refusal> {
    if t.starts_with('/') {
        let Some(path) = path_of(t) else {
            return Err(Refusal::BadRequest("fragment in the request target"));
        };
        return Ok((t, path, None));
    }
    if t == "*" {
        return match method {
            "OPTIONS" => Ok((t, "/", None)),
            _ => Err(Refusal::BadRequest("\"*\" target is only for OPTIONS")),
        };
    }
    let lower = |n: usize| t.len() > n && t.as_bytes()[..n].eq_ignore_ascii_case(&b"https://"[..n]);
    let rest = if t.len() > 7 && t.as_bytes()[..7].eq_ignore_ascii_case(b"http://") {
        &t[7..]
    } else if lower(8) {
        &t[8..]
    } else {
        return Err(Refusal::BadRequest(
            "request target is neither /path, http://host/path nor *",
        ));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || !valid_host(authority) || rest.contains('#') {
        return Err(Refusal::BadRequest(
            "invalid authority in the request target",
        ));
    }
    let target = &rest[end..];
    if target.starts_with('/') {
        // The fragment was refused above.
        Ok((target, path_of(target).unwrap_or(target), Some(authority)))
    } else {
        // `http://h` or `http://h?q`: the path is "/" (the writer adds it).
        Ok((target, "/", Some(authority)))
    }
}

/// The routing path of a target: what comes before its query; `None` when it has a
/// fragment. One pass over the bytes (every request's target goes through it).
fn path_of(t: &str) -> Option<&str> {
    let mut end = None;
    for (i, &c) in t.as_bytes().iter().enumerate() {
        match c {
            b'#' => return None,
            b'?' if end.is_none() => end = Some(i),
            _ => {}
        }
    }
    Some(end.map_or(t, |e| &t[..e]))
}

/// Whether `v` is RFC 3986 `host [":" port]` (or empty, which RFC 9112 §3.2 allows):
/// an IP literal in brackets, or a reg-name / IPv4 of unreserved characters, sub-delims
/// other than ',' (a list) and percent-escapes; the port digits only.
pub fn valid_host(v: &str) -> bool {
    valid_host_bytes(v.as_bytes())
}

/// The bytes a reg-name or IPv4 address may hold as they are (RFC 3986 unreserved and
/// sub-delims but ','), looked up once per byte: this check runs on every request.
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b';'
                    | b'='
            );
        c += 1;
    }
    t
};

/// [`valid_host`] on bytes: true only for ASCII.
fn valid_host_bytes(v: &[u8]) -> bool {
    if let [b'[', rest @ ..] = v {
        return valid_ip_literal(rest);
    }
    let mut i = 0;
    while i < v.len() {
        let c = v[i];
        if REG_NAME[usize::from(c)] {
            i += 1;
        } else if c == b'%' {
            let hex = |j: usize| v.get(j).is_some_and(|x| x.is_ascii_hexdigit());
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            return c == b':' && v[i + 1..].iter().all(u8::is_ascii_digit);
        }
    }
    true
}

/// What follows the `[` of an IP literal: `addr]` and an optional `:port`.
fn valid_ip_literal(rest: &[u8]) -> bool {
    let Some(end) = rest.iter().position(|&c| c == b']') else {
        return false;
    };
    let (lit, after) = (&rest[..end], &rest[end + 1..]);
    let lit_ok = !lit.is_empty()
        && lit
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b':' | b'.'));
    lit_ok
        && match after {
            [] => true,
            [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
            _ => false,
        }
}

/// The field checks: Host, framing, connection options, expectations.
fn check_fields(r: &mut Request<'_, '_>) -> Result<(), Refusal> {
    let mut host = None;
    let mut te = None;
    let mut cl: Option<&[u8]> = None;
    for (i, h) in r.headers.iter().enumerate() {
        let f = r.kinds.find(i, h.name);
        if f == Field::Host {
            if host.is_some() {
                return Err(Refusal::BadRequest("two Host fields"));
            }
            if !valid_host_bytes(h.value) {
                // A list, a space or a path would be routed on one reading and sent on with
                // another by whatever reads it next (RFC 9112 §3.2: 400).
                return Err(Refusal::BadRequest("Host is not a host[:port]"));
            }
            // SAFETY: valid_host_bytes admits ASCII bytes only (its table and the digit and
            // '%' / ':' / '[' / ']' checks), and ASCII is UTF-8. str::from_utf8 here cost
            // ~120 instructions per request for a check already made.
            let v = unsafe { std::str::from_utf8_unchecked(h.value) };
            host = Some(v);
        } else if f == Field::TransferEncoding {
            if te.is_some() {
                return Err(Refusal::BadRequest(
                    "Transfer-Encoding must be exactly \"chunked\"",
                ));
            }
            te = Some(h.value);
        } else if f == Field::ContentLength {
            if cl.is_some() {
                return Err(Refusal::BadRequest(
                    "Content-Length must be one plain number",
                ));
            }
            cl = Some(h.value);
        } else if f == Field::Connection {
            connection_options(r, h.value)?;
        } else if f == Field::Expect {
            r.expect_continue = trim_ows(h.value).eq_ignore_ascii_case(b"100-continue");
        }
    }
    if r.minor == 1 && host.is_none() {
        // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
        return Err(Refusal::BadRequest("HTTP/1.1 request without Host"));
    }
    if r.authority.is_none() {
        r.host = host;
    }
    r.framing = framing(r.minor, te, cl)?;
    // Only WebSocket: another protocol (h2c above all) must never become a tunnel the
    // engine cannot read; its Upgrade field is dropped and the request goes as plain HTTP.
    r.upgrade = r.upgrade
        && r.minor == 1
        && r.method == "GET"
        && r.headers.iter().enumerate().any(|(i, h)| {
            r.kinds.of(i, h.name) == Field::Upgrade
                && trim_ows(h.value).eq_ignore_ascii_case(b"websocket")
        });
    Ok(())
}

fn connection_options<'b>(r: &mut Request<'b, '_>, value: &'b [u8]) -> Result<(), Refusal> {
    for o in value.split(|&c| c == b',').map(trim_ows) {
        if o.is_empty() {
            continue;
        }
        if o.eq_ignore_ascii_case(b"close") {
            r.close = true;
        } else if o.eq_ignore_ascii_case(b"keep-alive") {
            r.keep_alive = true;
        } else if o.eq_ignore_ascii_case(b"upgrade") {
            r.upgrade = true;
        } else {
            // Dropping these as hop-by-hop would strip the message's framing (or its Host)
            // on the way up while the body still follows: refused.
            let name = std::str::from_utf8(o).unwrap_or("");
            if matches!(
                Field::of(name),
                Field::ContentLength | Field::TransferEncoding | Field::Host
            ) {
                return Err(Refusal::BadRequest(
                    "Connection may not name Content-Length, Transfer-Encoding or Host",
                ));
            }
            if r.n_options == MAX_CONNECTION_OPTIONS {
                return Err(Refusal::BadRequest("too many Connection options"));
            }
            r.options[r.n_options] = o;
            r.n_options += 1;
        }
    }
    Ok(())
}

/// RFC 9112 §6.3, strictly: one coding (`chunked`) or one plain length, never both.
pub fn framing(minor: u8, te: Option<&[u8]>, cl: Option<&[u8]>) -> Result<Framing, Refusal> {
    match (te, cl) {
        (Some(_), Some(_)) => Err(Refusal::BadRequest(
            "both Content-Length and Transfer-Encoding",
        )),
        (Some(_), None) if minor == 0 => Err(Refusal::BadRequest(
            "Transfer-Encoding on an HTTP/1.0 request",
        )),
        (Some(te), None) if trim_ows(te).eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
        (Some(_), None) => Err(Refusal::BadRequest(
            "Transfer-Encoding must be exactly \"chunked\"",
        )),
        (None, Some(cl)) => parse_length(cl)
            .map(Framing::Length)
            .ok_or(Refusal::BadRequest(
                "Content-Length must be one plain number",
            )),
        (None, None) => Ok(Framing::Empty),
    }
}

/// A plain decimal length (no sign, no list, no spaces inside), at most 18 digits.
pub fn parse_length(v: &[u8]) -> Option<u64> {
    let v = trim_ows(v);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// What the upstream head carries besides the client's own fields.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The connection's peer (after any PROXY header): appended to `X-Forwarded-For`.
    pub peer: Option<IpAddr>,
    /// The peer is a trusted proxy (real_ip.rs): the client's `X-Forwarded-For` goes up
    /// before it. From anyone else it is dropped: the backend gets only the peer.
    pub believe_xff: bool,
    /// The request came over https: ours, or a trusted proxy's (`X-Forwarded-Proto`).
    pub tls: bool,
    /// The preview header's name (lower case), stripped from what goes upstream.
    pub strip: Option<&'a str>,
}

/// Writes the upstream head into `out` (cleared first): origin-form request line as
/// HTTP/1.1, the client's fields minus hop-by-hop ones, the stripped header and the old
/// forwarding fields; then `Host` when needed, one `X-Forwarded-For` (a trusted peer's list
/// with the peer appended, else the peer alone), `X-Forwarded-Proto`, and exactly `Upgrade: websocket` + `Connection: upgrade`
/// for an upgrade (the client's other Upgrade values are dropped). Returns where the
/// `Host` line written for a host-less HTTP/1.0 request is, so a retry on another server can
/// rewrite it.
pub fn write_upstream(
    r: &Request<'_, '_>,
    fwd: &Forwarding<'_>,
    backend: SocketAddr,
    out: &mut Vec<u8>,
) -> Option<Range<usize>> {
    out.clear();
    out.extend_from_slice(r.method.as_bytes());
    out.push(b' ');
    if r.authority.is_some() && !r.target.starts_with('/') {
        out.push(b'/');
    }
    out.extend_from_slice(r.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut xff_prev = false;
    for (i, h) in r.headers.iter().enumerate() {
        let n = h.name;
        let f = r.kinds.of(i, n);
        let skip = match f {
            // Written below, once: a second Upgrade line (h2c) must not ride along a
            // WebSocket upgrade and let the backend pick a protocol the engine cannot read.
            Field::Upgrade => true,
            Field::XForwardedProto | Field::XForwardedFor => true,
            Field::Host => r.authority.is_some(),
            _ => r.hop_by_hop(f, n),
        };
        if skip || fwd.strip.is_some_and(|s| n.eq_ignore_ascii_case(s)) {
            continue;
        }
        line(out, n.as_bytes(), h.value);
    }
    let mut host_line = None;
    if let Some(a) = r.authority {
        line(out, b"Host", a.as_bytes());
    } else if r.host.is_none() {
        let start = out.len();
        out.extend_from_slice(b"Host: ");
        write_addr(out, backend);
        out.extend_from_slice(b"\r\n");
        host_line = Some(start..out.len());
    }
    // One X-Forwarded-For: what earlier trusted proxies said, in order, then the peer.
    let prev = r
        .headers
        .iter()
        .enumerate()
        .filter(|(i, h)| fwd.believe_xff && r.kinds.of(*i, h.name) == Field::XForwardedFor);
    for (_, h) in prev {
        out.extend_from_slice(if xff_prev {
            b", "
        } else {
            b"X-Forwarded-For: "
        });
        out.extend_from_slice(trim_ows(h.value));
        xff_prev = true;
    }
    if let Some(ip) = fwd.peer {
        out.extend_from_slice(if xff_prev {
            b", "
        } else {
            b"X-Forwarded-For: "
        });
        write_ip(out, ip);
        xff_prev = true;
    }
    if xff_prev {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if fwd.tls {
        b"X-Forwarded-Proto: https\r\n"
    } else {
        b"X-Forwarded-Proto: http\r\n"
    });
    if r.upgrade {
        out.extend_from_slice(b"Upgrade: websocket\r\nConnection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
    host_line
}

/// Rewrites the `Host` line [`write_upstream`] added, for another server.
pub fn rewrite_host(out: &mut Vec<u8>, at: Range<usize>, backend: SocketAddr) -> Range<usize> {
    let mut l = b"Host: ".to_vec();
    write_addr(&mut l, backend);
    l.extend_from_slice(b"\r\n");
    let new = at.start..at.start + l.len();
    out.splice(at, l);
    new
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes text into a byte buffer without an intermediate String.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Writes an address as text; IPv4 without the formatting machinery (it is on every request).
pub fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if o >= 100 {
                    out.push(b'0' + o / 100);
                }
                if o >= 10 {
                    out.push(b'0' + o / 10 % 10);
                }
                out.push(b'0' + o % 10);
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(Bytes(out), "{ip}");
        }
    }
}

pub fn write_addr(out: &mut Vec<u8>, a: SocketAddr) {
    let _ = write!(Bytes(out), "{a}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(raw: &[u8]) -> Result<Option<(String, Framing)>, Refusal> {
        check_from(raw, true)
    }

    /// The upstream head as written for a peer 10.0.0.9, trusted (its X-Forwarded-For is
    /// kept) or not.
    fn check_from(raw: &[u8], trusted: bool) -> Result<Option<(String, Framing)>, Refusal> {
        let mut h = fields();
        parse(raw, &mut h, 16 * 1024, 100).map(|r| {
            r.map(|r| {
                let mut out = Vec::new();
                let fwd = Forwarding {
                    peer: Some("10.0.0.9".parse().expect("ip")),
                    believe_xff: trusted,
                    tls: false,
                    strip: Some("x-switchyard-color"),
                };
                write_upstream(&r, &fwd, "127.0.0.1:81".parse().expect("addr"), &mut out);
                (String::from_utf8_lossy(&out).into_owned(), r.framing)
            })
        })
    }

    fn status(raw: &[u8]) -> u16 {
        match check(raw) {
            Ok(_) => 200,
            Err(r) => r.status(),
        }
    }

    #[test]
    fn hostile_heads_are_refused_with_the_right_status() {
        let cases: &[(&[u8], u16)] = &[
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: o\x00ne\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: o\rne\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX-A : one\r\n\r\n", 400),
            (b"GET / HTTP/1.1\nHost: a\n\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: o\nY: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"Extra lineGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET api/x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET /#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 405),
            (b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close, Content-Length\r\nContent-Length: 5\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: host\r\n\r\n", 400),
            (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 200),
            (b"GET / HTTP/1.0\r\n\r\n", 200),
            (b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        ];
        for (raw, want) in cases {
            assert_eq!(status(raw), *want, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn hosts_must_be_host_and_port() {
        for good in [
            "a",
            "a:80",
            "example.com",
            "EXAMPLE.com:8080",
            "10.0.0.1:1",
            "[::1]",
            "[::1]:443",
            "a%41b",
            "",
            "a:",
        ] {
            assert!(valid_host(good), "{good:?}");
        }
        for bad in [
            "a, b", "a,b", "a b", "a/../b", "a/b", "a:b", "a:80:90", "u@a", "[::1", "[]", "[::1]x",
            "a%4", "a?b", "a#b", "a\\b",
        ] {
            assert!(!valid_host(bad), "{bad:?}");
        }
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a/../b\r\n\r\n",
            b"GET http://a/b/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http://a,b/ HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let want = if raw.starts_with(b"GET http://a/") {
                200
            } else {
                400
            };
            assert_eq!(status(raw), want, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn limits_give_431() {
        let mut h = fields();
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "x".repeat(100)
        );
        assert_eq!(
            parse(big.as_bytes(), &mut h, 64, 100).map(|_| ()),
            Err(too_large())
        );
        let mut h = fields();
        assert_eq!(
            parse(&big.as_bytes()[..90], &mut h, 64, 100).map(|_| ()),
            Err(too_large()),
            "an incomplete head past the limit is refused without waiting for its end"
        );
        let mut h = fields();
        let many = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
        assert_eq!(
            parse(many, &mut h, 1024, 2)
                .map(|_| ())
                .map_err(Refusal::status),
            Err(431)
        );
        let mut lots = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..300 {
            lots.push_str(&format!("X-H{i}: v\r\n"));
        }
        lots.push_str("\r\n");
        let mut h = fields();
        assert_eq!(
            parse(lots.as_bytes(), &mut h, 1 << 20, 1000)
                .map(|_| ())
                .map_err(Refusal::status),
            Err(400)
        );
    }

    #[test]
    fn upstream_head_drops_hop_by_hop_and_adds_forwarding() {
        let (up, f) = check(
            b"POST /p?q=1 HTTP/1.1\r\nHost: h:8\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Switchyard-Color: green\r\nContent-Length: 3\r\n\r\nabc",
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(f, Framing::Length(3));
        assert_eq!(
            up,
            "POST /p?q=1 HTTP/1.1\r\nHost: h:8\r\nContent-Length: 3\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn an_untrusted_peers_forwarded_for_is_replaced_by_the_peer() {
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7\r\n\r\n";
        let (up, _) = check_from(raw, false).expect("valid").expect("complete");
        assert_eq!(
            up,
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
        let (up, _) = check_from(raw, true).expect("valid").expect("complete");
        assert!(
            up.contains("X-Forwarded-For: 6.6.6.6, 7.7.7.7, 10.0.0.9\r\n"),
            "{up}"
        );
    }

    #[test]
    fn absolute_form_routes_on_its_authority_and_goes_up_in_origin_form() {
        let mut h = fields();
        let raw = b"GET http://api.example:80/v1/x?y HTTP/1.1\r\nHost: other\r\n\r\n";
        let r = parse(raw, &mut h, 4096, 100)
            .expect("valid")
            .expect("complete");
        assert_eq!(
            (r.host, r.path, r.target),
            (Some("api.example:80"), "/v1/x", "/v1/x?y")
        );
        let (up, _) = check(raw).expect("ok").expect("complete");
        assert!(
            up.starts_with("GET /v1/x?y HTTP/1.1\r\nHost: api.example:80\r\n"),
            "{up}"
        );
        let (up, _) = check(b"GET http://a.b HTTP/1.1\r\nHost: a.b\r\n\r\n")
            .expect("ok")
            .expect("c");
        assert!(up.starts_with("GET / HTTP/1.1\r\nHost: a.b\r\n"), "{up}");
    }

    #[test]
    fn http10_without_host_gets_the_servers_address_and_upgrades_keep_their_headers() {
        let (up, _) = check(b"GET / HTTP/1.0\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(up.contains("\r\nHost: 127.0.0.1:81\r\n"), "{up}");
        let mut h = fields();
        let raw = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        let r = parse(raw, &mut h, 4096, 100).expect("v").expect("c");
        assert!(r.wants_keep_alive());
        let (up, _) = check(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
        )
        .expect("ok")
        .expect("complete");
        assert!(up.contains("\r\nUpgrade: websocket\r\n"), "{up}");
        assert!(up.ends_with("Connection: upgrade\r\n\r\n"), "{up}");
        // h2c is not a WebSocket: no upgrade, its fields dropped, plain HTTP upstream.
        let (up, _) = check(
            b"GET /h HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
        )
        .expect("ok")
        .expect("complete");
        assert!(!up.to_ascii_lowercase().contains("upgrade"), "{up}");
        assert!(!up.contains("HTTP2-Settings"), "{up}");
        // A second Upgrade line never goes along with a WebSocket upgrade.
        let (up, _) = check(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(
            up.to_ascii_lowercase().matches("upgrade:").count(),
            1,
            "{up}"
        );
        assert!(up.contains("\r\nUpgrade: websocket\r\n"), "{up}");
    }

    #[test]
    fn addresses_are_written_as_text() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.30.4",
            "255.255.255.255",
            "::1",
            "fe80::1:2",
        ] {
            let mut out = Vec::new();
            write_ip(&mut out, ip.parse().expect("ip"));
            assert_eq!(String::from_utf8_lossy(&out), ip);
        }
    }

    #[test]
    fn host_line_can_be_rewritten_for_a_retry() {
        let mut h = fields();
        let r = parse(b"GET / HTTP/1.0\r\n\r\n", &mut h, 4096, 100)
            .expect("v")
            .expect("c");
        let fwd = Forwarding {
            peer: None,
            believe_xff: false,
            tls: true,
            strip: None,
        };
        let mut out = Vec::new();
        let at = write_upstream(&r, &fwd, "127.0.0.1:1".parse().expect("a"), &mut out)
            .expect("host line");
        rewrite_host(&mut out, at, "127.0.0.1:65000".parse().expect("a"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:65000\r\nX-Forwarded-Proto: https\r\n\r\n"
        );
    }

    proptest! {
        /// check_fields relies on it to skip str::from_utf8 on Host.
        #[test]
        fn a_valid_host_is_ascii(v in proptest::collection::vec(any::<u8>(), 0..24)) {
            if valid_host_bytes(&v) {
                prop_assert!(v.is_ascii());
            }
        }

        #[test]
        fn a_valid_host_of_host_like_bytes_is_ascii(v in "[\\[\\]a-z0-9:.%\\x80-\\xff]{0,16}") {
            if valid_host_bytes(v.as_bytes()) {
                prop_assert!(v.is_ascii());
            }
        }
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_head(cut in 0usize..200) {
            let raw: &[u8] = b"POST /a?b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
            let cut = cut % raw.len();
            let end = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4).unwrap_or(0);
            let mut h = fields();
            let first = parse(&raw[..cut], &mut h, 4096, 100).map(|r| r.map(|r| r.head_len));
            let mut h = fields();
            let whole = parse(raw, &mut h, 4096, 100).map(|r| r.map(|r| (r.head_len, r.framing)));
            prop_assert_eq!(whole, Ok(Some((end, Framing::Chunked))));
            // A prefix is either incomplete or (once it holds the whole head) the same head.
            match first {
                Ok(None) => prop_assert!(cut < end),
                Ok(Some(n)) => prop_assert_eq!(n, end),
                Err(e) => prop_assert!(false, "prefix refused: {:?}", e),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = check(&raw);
        }
    }
}
