//! Where an HTTP/1.1 message body ends (RFC 9112 §6, §7): a pure, incremental state machine
//! for `Content-Length`, chunked (sizes, extensions, trailers) and close-delimited bodies.
//!
//! It never buffers: [`Body::feed`] consumes what it can of the bytes it is given and leaves
//! an incomplete chunk-size or trailer line unconsumed, so the caller keeps those bytes and
//! feeds them again with more. What it consumed is exactly what belongs to this message (the
//! caller forwards those bytes as they are, or only the payload it is told about); what it did
//! not consume after [`Body::is_done`] is the next pipelined message. Any error means nobody
//! can say where the next message starts: the caller closes both sides.
//!
//! It does not decide which framing a message has (head.rs and response.rs do, from headers).

/// The longest chunk-size line (with extensions) or trailer line accepted; longer ones are an
/// attack on buffering, not a real client.
pub const MAX_LINE: usize = 4096;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (no length header on a request; HEAD, 1xx, 204, 304 responses).
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("invalid chunk size line")]
    BadChunkSize,
    #[error("chunk data not followed by CRLF")]
    BadChunkEnd,
    #[error("chunk size or trailer line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("invalid trailer field")]
    BadTrailer,
    #[error("the body ended before its declared end")]
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailer,
    Close,
    Done,
}

/// The body state of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body {
    state: State,
}

impl Body {
    pub fn new(f: Framing) -> Body {
        let state = match f {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        Body { state }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the message ends only when the sender closes.
    pub fn is_close_delimited(&self) -> bool {
        self.state == State::Close
    }

    /// The sender closed: fine for a close-delimited body (now done), an error otherwise.
    pub fn eof(&mut self) -> Result<(), FramingError> {
        match self.state {
            State::Close | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(FramingError::Truncated),
        }
    }

    /// Consumes a prefix of `input`; calls `payload` with each piece of body data in it
    /// (without chunk framing). Returns how many bytes were consumed: less than `input.len()`
    /// when the message is done or a line is incomplete.
    pub fn feed(
        &mut self,
        input: &[u8],
        payload: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, FramingError> {
        let mut i = 0;
        loop {
            let rest = &input[i..];
            match self.state {
                State::Done => return Ok(i),
                State::Close => {
                    if !rest.is_empty() {
                        payload(rest);
                    }
                    return Ok(input.len());
                }
                State::Length(left) | State::ChunkData(left) => {
                    if rest.is_empty() {
                        return Ok(i);
                    }
                    let take = left.min(rest.len() as u64) as usize;
                    payload(&rest[..take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), n) => State::Length(n),
                        (_, 0) => State::ChunkEnd,
                        (_, n) => State::ChunkData(n),
                    };
                }
                State::ChunkEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        i += 2;
                        self.state = State::ChunkSize;
                    }
                    [] | [b'\r'] => return Ok(i),
                    _ => return Err(FramingError::BadChunkEnd),
                },
                State::ChunkSize => match chunk_size(rest)? {
                    None => return Ok(i),
                    Some((n, 0)) => {
                        i += n;
                        self.state = State::Trailer;
                    }
                    Some((n, size)) => {
                        i += n;
                        self.state = State::ChunkData(size);
                    }
                },
                State::Trailer => match line(rest)? {
                    None => return Ok(i),
                    Some(0) => {
                        i += 2;
                        self.state = State::Done;
                    }
                    Some(n) => {
                        if !valid_trailer(&rest[..n]) {
                            return Err(FramingError::BadTrailer);
                        }
                        i += n + 2;
                    }
                },
            }
        }
    }
}

/// A complete chunk-size line at the start of `b`: (its length with CRLF, the size).
/// Stricter than httparse alone: at least one hex digit, and no control bytes in an
/// extension (httparse lets any byte through there, a bare LF included, which a backend
/// could take for a line end).
fn chunk_size(b: &[u8]) -> Result<Option<(usize, u64)>, FramingError> {
    if b.is_empty() {
        return Ok(None);
    }
    if !b[0].is_ascii_hexdigit() {
        return Err(FramingError::BadChunkSize);
    }
    match httparse::parse_chunk_size(b) {
        Ok(httparse::Status::Complete((n, size))) => {
            if b[..n - 2].iter().any(|&c| is_ctl(c)) {
                return Err(FramingError::BadChunkSize);
            }
            Ok(Some((n, size)))
        }
        Ok(httparse::Status::Partial) if b.len() > MAX_LINE => Err(FramingError::LineTooLong),
        Ok(httparse::Status::Partial) => {
            if b.iter().any(|&c| is_ctl(c) && c != b'\r') {
                return Err(FramingError::BadChunkSize);
            }
            Ok(None)
        }
        Err(_) => Err(FramingError::BadChunkSize),
    }
}

fn is_ctl(c: u8) -> bool {
    (c < 0x20 && c != b'\t') || c == 0x7f
}

/// The length of the CRLF-terminated line at the start of `b` (without CRLF), if complete.
fn line(b: &[u8]) -> Result<Option<usize>, FramingError> {
    match b.windows(2).position(|w| w == b"\r\n") {
        Some(n) if n > MAX_LINE => Err(FramingError::LineTooLong),
        Some(n) => Ok(Some(n)),
        None if b.len() > MAX_LINE => Err(FramingError::LineTooLong),
        None => Ok(None),
    }
}

/// `name: value` with a token name and no control bytes (no bare CR or LF, no NUL).
fn valid_trailer(l: &[u8]) -> bool {
    let Some(colon) = l.iter().position(|&c| c == b':') else {
        return false;
    };
    colon > 0
        && l[..colon].iter().all(|&c| is_tchar(c))
        && !l[colon + 1..].iter().any(|&c| is_ctl(c))
}

/// RFC 9110 §5.6.2 token characters.
pub fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `data` in the given pieces the way a connection does (unconsumed bytes are kept
    /// and fed again with the next read); returns payload, bytes consumed, and the outcome.
    fn run(
        f: Framing,
        data: &[u8],
        cuts: &[usize],
    ) -> (Vec<u8>, usize, Result<bool, FramingError>) {
        let mut body = Body::new(f);
        let mut payload = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut consumed = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.push(data.len());
        points.sort_unstable();
        let mut at = 0;
        for p in points {
            pending.extend_from_slice(&data[at..p]);
            at = p;
            match body.feed(&pending, &mut |d| payload.extend_from_slice(d)) {
                Ok(n) => {
                    consumed += n;
                    pending.drain(..n);
                }
                Err(e) => return (payload, consumed, Err(e)),
            }
            if body.is_done() {
                break;
            }
        }
        (payload, consumed, Ok(body.is_done()))
    }

    fn whole(f: Framing, data: &[u8]) -> (Vec<u8>, usize, Result<bool, FramingError>) {
        run(f, data, &[])
    }

    #[test]
    fn content_length_stops_at_its_end() {
        let (p, n, done) = whole(Framing::Length(5), b"helloGET / HTTP/1.1");
        assert_eq!((p.as_slice(), n, done), (&b"hello"[..], 5, Ok(true)));
        let (p, n, done) = whole(Framing::Length(10), b"hello");
        assert_eq!((p.len(), n, done), (5, 5, Ok(false)));
        assert!(Body::new(Framing::Length(0)).is_done());
        assert!(Body::new(Framing::Empty).is_done());
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let data = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\nNEXT";
        let (p, n, done) = whole(Framing::Chunked, data);
        assert_eq!(p, b"hello world");
        assert_eq!(n, data.len() - 4, "stops before the next message");
        assert_eq!(done, Ok(true));
        let (p, _, done) = whole(Framing::Chunked, b"A\r\n0123456789\r\n0\r\n\r\n");
        assert_eq!((p.len(), done), (10, Ok(true)));
    }

    #[test]
    fn bad_chunked_bodies_are_errors() {
        use FramingError::*;
        let cases: &[(&[u8], FramingError)] = &[
            (b"zz\r\nhello\r\n0\r\n\r\n", BadChunkSize),
            (b"-5\r\nhello\r\n0\r\n\r\n", BadChunkSize),
            (b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n", BadChunkSize),
            (b";ext\r\n\r\n", BadChunkSize),
            (b"5\nhello\r\n0\r\n\r\n", BadChunkSize),
            (b"5;a\nb\r\nhello\r\n0\r\n\r\n", BadChunkSize),
            (b"5;a\x00\r\nhello\r\n0\r\n\r\n", BadChunkSize),
            (b"5\r\nhelloXX0\r\n\r\n", BadChunkEnd),
            (b"5\r\nhello\n0\r\n\r\n", BadChunkEnd),
            (b"0\r\nbad trailer\r\n\r\n", BadTrailer),
            (b"0\r\nX: a\x00b\r\n\r\n", BadTrailer),
            (b"0\r\nX: a\nY: b\r\n\r\n", BadTrailer),
        ];
        for (data, want) in cases {
            let (_, _, got) = whole(Framing::Chunked, data);
            assert_eq!(got, Err(*want), "{:?}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn over_long_lines_are_refused_without_waiting_for_their_end() {
        let mut long = b"5;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE));
        assert_eq!(
            whole(Framing::Chunked, &long).2,
            Err(FramingError::LineTooLong)
        );
        let mut t = b"0\r\nX: ".to_vec();
        t.extend(std::iter::repeat_n(b'y', MAX_LINE));
        assert_eq!(
            whole(Framing::Chunked, &t).2,
            Err(FramingError::LineTooLong)
        );
    }

    #[test]
    fn close_delimited_ends_at_eof_and_others_are_truncated() {
        let mut b = Body::new(Framing::Close);
        let mut got = Vec::new();
        assert_eq!(b.feed(b"abc", &mut |d| got.extend_from_slice(d)), Ok(3));
        assert!(b.is_close_delimited());
        assert_eq!(b.eof(), Ok(()));
        assert!(b.is_done());
        assert_eq!(
            Body::new(Framing::Length(3)).eof(),
            Err(FramingError::Truncated)
        );
        assert_eq!(
            Body::new(Framing::Chunked).eof(),
            Err(FramingError::Truncated)
        );
    }

    fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..6),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(chunks, ext, trailer)| {
                let mut out = Vec::new();
                for c in chunks {
                    out.extend_from_slice(format!("{:x}", c.len()).as_bytes());
                    if ext {
                        out.extend_from_slice(b";a=\"b c\"");
                    }
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                if trailer {
                    out.extend_from_slice(b"X-T: v\r\n");
                }
                out.extend_from_slice(b"\r\nGET / HTTP/1.1\r\n");
                out
            })
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_chunked_result(
            data in chunked_body(),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            prop_assert_eq!(run(Framing::Chunked, &data, &cuts), whole(Framing::Chunked, &data));
            prop_assert_eq!(whole(Framing::Chunked, &data).2, Ok(true));
        }

        #[test]
        fn any_split_of_any_bytes_gives_the_same_result(
            data in prop::collection::vec(any::<u8>(), 0..200),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
            len in 0u64..300,
        ) {
            for f in [Framing::Chunked, Framing::Length(len), Framing::Close] {
                let a = run(f, &data, &cuts);
                let b = whole(f, &data);
                // An error may show up earlier or later but must show up either way.
                prop_assert_eq!(a.2.is_err(), b.2.is_err());
                if b.2.is_ok() {
                    prop_assert_eq!(a, b);
                }
            }
        }
    }
}
