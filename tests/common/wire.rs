//! HTTP/1.1 message framing for the raw test peers (the raw backend reads requests with it,
//! raw clients read responses): where a message ends per RFC 9112 §6, what its body is once
//! the chunked coding is removed, and its framing headers.
//!
//! Strict on purpose: it is the yardstick the proxy's output is measured against, so anything
//! a careful HTTP/1.1 recipient would not accept is [`Parse::Invalid`]. It does not judge
//! semantics (Host, methods); the tests do that on the parsed [`Message`].

/// One HTTP/1.1 message as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Start line and header block, up to and including the empty line.
    pub head: Vec<u8>,
    /// The request or status line, without its CRLF.
    pub start_line: String,
    /// Header fields in arrival order; names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body bytes as framed on the wire (chunk sizes and all).
    pub body_raw: Vec<u8>,
    /// The body with the chunked coding removed.
    pub body: Vec<u8>,
    /// Status code for responses, 0 for requests.
    pub status: u16,
}

impl Message {
    /// Every value of one header field, in order, as lossy text.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The framing headers (`content-length`, `transfer-encoding`) as `name: value` lines.
    pub fn framing(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "content-length" || n == "transfer-encoding")
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
            .collect()
    }

    pub fn method(&self) -> &str {
        self.start_line.split(' ').next().unwrap_or("")
    }

    pub fn target(&self) -> &str {
        self.start_line.split(' ').nth(1).unwrap_or("")
    }

    /// Total bytes on the wire.
    pub fn wire_len(&self) -> usize {
        self.head.len() + self.body_raw.len()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the bytes at the front of a buffer are.
#[derive(Debug)]
pub enum Parse {
    /// A whole message, and how many bytes it took.
    Done(Message, usize),
    /// Not enough bytes yet.
    Partial,
    /// Not HTTP/1.1 framing a careful recipient accepts.
    Invalid(String),
}

/// How a body ends.
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Responses only: until the connection closes.
    Close,
}

const MAX_HEADERS: usize = 512;

/// The head of a request, when complete: (head length, message without body).
fn request_head(buf: &[u8]) -> Result<Option<(usize, Message)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            if has_bare_lf(&buf[..n]) {
                return Err("bare LF in the request head".into());
            }
            let line_end = buf.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
            Ok(Some((n, message(buf, n, line_end, req.headers, 0))))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("request head: {e}")),
    }
}

fn message(
    buf: &[u8],
    n: usize,
    line_end: usize,
    headers: &[httparse::Header],
    status: u16,
) -> Message {
    Message {
        head: buf[..n].to_vec(),
        start_line: String::from_utf8_lossy(&buf[..line_end]).into_owned(),
        headers: headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect(),
        body_raw: Vec::new(),
        body: Vec::new(),
        status,
    }
}

/// Whether a complete request head asks for `100 Continue` (the body may not have come yet).
pub fn head_expects_continue(buf: &[u8]) -> bool {
    match request_head(buf) {
        Ok(Some((_, m))) => m
            .values("expect")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("100-continue")),
        _ => false,
    }
}

/// One request from the front of `buf`.
pub fn parse_request(buf: &[u8]) -> Parse {
    let (n, m) = match request_head(buf) {
        Ok(Some(h)) => h,
        Ok(None) => return Parse::Partial,
        Err(e) => return Parse::Invalid(e),
    };
    let framing = match request_framing(&m) {
        Ok(f) => f,
        Err(e) => return Parse::Invalid(e),
    };
    finish(m, n, &buf[n..], framing, false).unwrap_or(Parse::Partial)
}

fn request_framing(m: &Message) -> Result<Framing, String> {
    let te = m.values("transfer-encoding");
    let cl = m.values("content-length");
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err("both Content-Length and Transfer-Encoding".into());
        }
        if te.len() != 1 || !te[0].trim().eq_ignore_ascii_case("chunked") {
            return Err(format!("Transfer-Encoding {te:?} is not exactly chunked"));
        }
        return Ok(Framing::Chunked);
    }
    match cl.as_slice() {
        [] => Ok(Framing::None),
        [one] => content_length(one).map(Framing::Length),
        more => Err(format!("several Content-Length: {more:?}")),
    }
}

fn content_length(v: &str) -> Result<u64, String> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("Content-Length {v:?} is not a number"));
    }
    v.parse()
        .map_err(|_| format!("Content-Length {v:?} overflows"))
}

/// One response from the front of `buf`; `to_head` says the request was HEAD, `at_eof` that
/// the connection has closed (which completes a close-delimited body). A 1xx is returned as
/// a message of its own.
pub fn parse_response(buf: &[u8], to_head: bool, at_eof: bool) -> Parse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if at_eof && !buf.is_empty() => {
            return Parse::Invalid("connection closed inside a response head".into())
        }
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(e) => return Parse::Invalid(format!("response head: {e}")),
    };
    if has_bare_lf(&buf[..n]) {
        return Parse::Invalid("bare LF in the response head".into());
    }
    let status = resp.code.unwrap_or(0);
    let line_end = buf.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
    let m = message(buf, n, line_end, resp.headers, status);
    let framing = if to_head || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else {
        match response_framing(&m) {
            Ok(f) => f,
            Err(e) => return Parse::Invalid(e),
        }
    };
    match finish(m, n, &buf[n..], framing, at_eof) {
        Some(p) => p,
        None if at_eof => Parse::Invalid("connection closed inside a response body".into()),
        None => Parse::Partial,
    }
}

fn response_framing(m: &Message) -> Result<Framing, String> {
    let te = m.values("transfer-encoding");
    if !te.is_empty() {
        if !m.values("content-length").is_empty() {
            return Err("both Content-Length and Transfer-Encoding".into());
        }
        let last = te.last().map(|v| v.rsplit(',').next().unwrap_or("").trim());
        if !last.is_some_and(|l| l.eq_ignore_ascii_case("chunked")) {
            return Ok(Framing::Close);
        }
        return Ok(Framing::Chunked);
    }
    match m.values("content-length").as_slice() {
        [] => Ok(Framing::Close),
        [one] => content_length(one).map(Framing::Length),
        more => Err(format!("several Content-Length: {more:?}")),
    }
}

/// Completes a message whose head took `n` bytes; `None` when the body is not all there.
fn finish(mut m: Message, n: usize, rest: &[u8], framing: Framing, at_eof: bool) -> Option<Parse> {
    let (used, body) = match framing {
        Framing::None => (0, Vec::new()),
        Framing::Length(len) => {
            let len = usize::try_from(len).ok()?;
            if rest.len() < len {
                return None;
            }
            (len, rest[..len].to_vec())
        }
        Framing::Chunked => match dechunk(rest) {
            Ok(Some(done)) => done,
            Ok(None) => return None,
            Err(e) => return Some(Parse::Invalid(e)),
        },
        Framing::Close if at_eof => (rest.len(), rest.to_vec()),
        Framing::Close => return None,
    };
    m.body_raw = rest[..used].to_vec();
    m.body = body;
    Some(Parse::Done(m, n + used))
}

/// Removes the chunked coding from the front of `buf`: (bytes used, body), trailers
/// included in the bytes used; `None` when incomplete.
pub fn dechunk(buf: &[u8]) -> Result<Option<(usize, Vec<u8>)>, String> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(format!("invalid chunk size line at body byte {pos}")),
        };
        if buf[pos..pos + size_len].ends_with(b"\n") && !buf[pos..pos + size_len].ends_with(b"\r\n")
        {
            return Err(format!(
                "chunk size line ends in a bare LF at body byte {pos}"
            ));
        }
        pos += size_len;
        if size == 0 {
            return trailers(buf, pos).map(|end| end.map(|e| (e, body)));
        }
        let size = usize::try_from(size).map_err(|_| "chunk size overflows".to_string())?;
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size;
        if &buf[pos..pos + 2] != b"\r\n" {
            return Err(format!(
                "chunk data not followed by CRLF at body byte {pos}"
            ));
        }
        pos += 2;
    }
}

/// Skips the trailer section that starts at `pos`; the end of the message, if all there.
fn trailers(buf: &[u8], mut pos: usize) -> Result<Option<usize>, String> {
    loop {
        let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        if eol == 0 {
            return Ok(Some(pos + 2));
        }
        if buf[pos..pos + eol].contains(&b'\n') {
            return Err("bare LF in the trailer section".into());
        }
        pos += eol + 2;
    }
}

fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

/// Bytes as a readable Rust-like string literal, for failure messages.
pub fn show(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(600) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'"' => s.push_str("\\\""),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > 600 {
        s.push_str(&format!("...({} bytes)", bytes.len()));
    }
    format!("\"{s}\"")
}
