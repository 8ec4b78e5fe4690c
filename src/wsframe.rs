//! WebSocket frame boundaries in the server-to-client byte stream, so the proxy can put a
//! close frame between two frames and never inside one.
//!
//! Pure and incremental: it is fed the upgraded bytes exactly as they pass through the proxy,
//! in chunks of any size, and only decodes frame headers (RFC 6455 §5.2) to know where each
//! frame ends. It never looks at payloads and never buffers them. Fragmented messages are made
//! of several frames; a control frame between two fragments is allowed by the RFC (§5.4), so
//! "after the current frame" is always a valid place for the close frame.

/// The close frame switchyard sends on a handover: code 1012 "service restart", unmasked as
/// every server-to-client frame is.
pub fn close_frame_1012() -> bytes::Bytes {
    let reason = b"service restart";
    let mut f = Vec::with_capacity(4 + reason.len());
    f.push(0x88); // FIN + opcode 8 (close)
    f.push(2 + reason.len() as u8);
    f.extend_from_slice(&1012u16.to_be_bytes());
    f.extend_from_slice(reason);
    bytes::Bytes::from(f)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading a frame header; `have` bytes of it so far.
    Header { buf: [u8; 14], have: usize },
    /// Inside a frame's payload with this many bytes left.
    Payload { left: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameTracker {
    state: State,
}

impl Default for FrameTracker {
    fn default() -> Self {
        FrameTracker {
            state: State::Header {
                buf: [0; 14],
                have: 0,
            },
        }
    }
}

/// Header length once its first two bytes are known.
fn header_len(b0: u8, b1: u8) -> usize {
    let _ = b0;
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[2..10]);
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    }
}

impl FrameTracker {
    /// True between two frames (and before the first).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Consumes `data`; returns the offset just past the first frame end reached while doing
    /// so (0 if it starts at a boundary), or `None` if no frame ends in `data`.
    /// With `stop_at_first`, consumption stops there (the rest is not fed).
    pub fn feed(&mut self, data: &[u8], stop_at_first: bool) -> Option<usize> {
        if self.at_boundary() && stop_at_first {
            return Some(0);
        }
        let mut first = None;
        let mut i = 0;
        while i < data.len() {
            match &mut self.state {
                State::Payload { left } => {
                    let take = (*left).min((data.len() - i) as u64) as usize;
                    *left -= take as u64;
                    i += take;
                    if *left == 0 {
                        self.state = State::Header {
                            buf: [0; 14],
                            have: 0,
                        };
                    }
                }
                State::Header { buf, have } => {
                    buf[*have] = data[i];
                    *have += 1;
                    i += 1;
                    if *have >= 2 && *have == header_len(buf[0], buf[1]) {
                        let left = payload_len(&buf[..*have]);
                        self.state = if left == 0 {
                            State::Header {
                                buf: [0; 14],
                                have: 0,
                            }
                        } else {
                            State::Payload { left }
                        };
                    }
                }
            }
            if self.at_boundary() && first.is_none() {
                first = Some(i);
                if stop_at_first {
                    return first;
                }
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![opcode | if fin { 0x80 } else { 0 }];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn close_frame_is_1012() {
        let f = close_frame_1012();
        assert_eq!(&f[..4], &[0x88, 17, 0x03, 0xf4]);
        assert_eq!(&f[4..], b"service restart");
    }

    #[test]
    fn boundaries_in_one_chunk() {
        let mut data = frame(1, true, b"hello");
        let first_end = data.len();
        data.extend(frame(2, true, &[7u8; 300]));
        let mut t = FrameTracker::default();
        assert!(t.at_boundary());
        assert_eq!(t.feed(&data, true), Some(0), "already at a boundary");
        assert_eq!(t.feed(&data[..3], false), None);
        assert!(!t.at_boundary());
        let mut t = FrameTracker::default();
        assert_eq!(
            t.feed(&data[1..2], false),
            None,
            "a lone second byte is not a frame"
        );
        let mut t = FrameTracker::default();
        t.feed(&data[..1], false);
        assert_eq!(t.feed(&data[1..], true), Some(first_end - 1));
        assert!(t.at_boundary());
    }

    #[test]
    fn any_chunking_finds_the_same_boundaries() {
        // A fragmented message (three frames, 70 000 bytes, 64-bit length) between two
        // small messages.
        let big = vec![b'x'; 70_000];
        let mut data = frame(1, true, b"a");
        data.extend(frame(2, false, &big[..30_000]));
        data.extend(frame(0, false, &big[..20_000]));
        data.extend(frame(0, true, &big[..20_000]));
        data.extend(frame(1, true, b"b"));
        let mut want = Vec::new();
        {
            let mut t = FrameTracker::default();
            for (i, b) in data.iter().enumerate() {
                if t.feed(std::slice::from_ref(b), false).is_some() {
                    want.push(i + 1);
                }
            }
        }
        assert_eq!(want.len(), 5, "five frames");
        assert_eq!(*want.last().expect("end"), data.len());
        for chunk in [1usize, 7, 126, 4096, 65_536, data.len()] {
            let mut t = FrameTracker::default();
            let mut got = Vec::new();
            let mut base = 0;
            for c in data.chunks(chunk) {
                let mut off = 0;
                while off < c.len() {
                    match t.feed(&c[off..], true) {
                        Some(n) if n > 0 => {
                            off += n;
                            got.push(base + off);
                        }
                        Some(_) => {
                            // At a boundary: feed one byte to step into the next frame.
                            t.feed(&c[off..off + 1], false);
                            off += 1;
                            if t.at_boundary() {
                                got.push(base + off);
                            }
                        }
                        None => off = c.len(),
                    }
                }
                base += c.len();
            }
            assert_eq!(got, want, "chunk size {chunk}");
        }
    }

    #[test]
    fn masked_and_empty_frames() {
        // Client-style masked frame with an empty payload, then a ping.
        let mut data = vec![0x81, 0x80, 1, 2, 3, 4];
        data.extend(frame(9, true, b""));
        let mut t = FrameTracker::default();
        assert_eq!(t.feed(&data, false), Some(6));
        assert!(t.at_boundary());
    }
}
