//! gzip of a response body on `gzip = true` routes, streamed: each piece of payload is
//! compressed as it passes and sent as one chunk (HTTP/1.1 clients) or as is (HTTP/1.0
//! clients, whose connection then ends the body). Memory stays bounded by the encoder's
//! window, whatever the body's size. Whether to compress is request.rs's decision.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::request::GZIP_LEVEL;

pub struct Gzip {
    enc: GzEncoder<Vec<u8>>,
    chunked: bool,
}

impl Gzip {
    pub fn new(chunked: bool) -> Gzip {
        Gzip {
            enc: GzEncoder::new(Vec::new(), Compression::new(GZIP_LEVEL)),
            chunked,
        }
    }

    /// Compresses `payload`; what the encoder has ready is appended to `out` (framed).
    pub fn feed(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail.
        let _ = self.enc.write_all(payload);
        self.drain(out);
    }

    /// Ends the stream: the rest of the compressed data, the gzip trailer, the last chunk.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        let _ = self.enc.try_finish();
        self.drain(out);
        if self.chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        let ready = self.enc.get_mut();
        if ready.is_empty() {
            return;
        }
        if self.chunked {
            out.extend_from_slice(format!("{:x}\r\n", ready.len()).as_bytes());
        }
        out.append(ready);
        if self.chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::framing::{Body, Framing};
    use std::io::Read;

    #[test]
    fn chunked_gzip_decodes_to_the_original() {
        let mut g = Gzip::new(true);
        let mut wire = Vec::new();
        let text = "hello world ".repeat(2000);
        for piece in text.as_bytes().chunks(777) {
            g.feed(piece, &mut wire);
        }
        g.finish(&mut wire);
        let mut body = Body::new(Framing::Chunked);
        let mut compressed = Vec::new();
        let n = body
            .feed(&wire, &mut |p| compressed.extend_from_slice(p))
            .expect("valid chunked framing");
        assert_eq!((n, body.is_done()), (wire.len(), true));
        assert!(compressed.len() < text.len() / 10);
        let mut plain = String::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_string(&mut plain)
            .expect("valid gzip");
        assert_eq!(plain, text);
    }
}
