//! A PROXY protocol header (v1 text, v2 binary) at the start of a connection's bytes: is it
//! one, is it complete, what does it announce, how long is it. Pure: bytes in, a verdict
//! out; the `ppp` crate parses, this module bounds what it is given and maps the result.
//!
//! Bounds, so a peer can never make switchyard buffer more: a v1 line is at most 107 bytes
//! (the specification's own limit), a v2 header at most [`V2_MAX`] bytes (the length field
//! allows 64 KiB; real balancers send 16 to a few hundred bytes of addresses and TLVs).

use std::net::SocketAddr;

use ppp::v1;
use ppp::v2;

use crate::real_ip::{Announced, ProxyRefusal};

/// The v2 signature.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// What every v1 line starts with.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest v1 line, CRLF included (the specification's limit).
pub const V1_MAX: usize = 107;
/// The longest v2 header switchyard reads: the 16 fixed bytes plus addresses and TLVs.
pub const V2_MAX: usize = 4096;
/// v2 header bytes before the addresses: signature, version/command, family, length.
const V2_FIXED: usize = 16;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// Too few bytes to tell (they are the start of a signature).
    Partial,
    V1,
    V2,
    /// Anything else: HTTP, a TLS ClientHello, garbage.
    None,
}

/// Which signature `buf` starts with, as soon as that can be told.
pub fn signature(buf: &[u8]) -> Signature {
    for (sig, kind) in [
        (&V2_SIGNATURE[..], Signature::V2),
        (&V1_PREFIX[..], Signature::V1),
    ] {
        let n = buf.len().min(sig.len());
        if buf[..n] == sig[..n] {
            return if n == sig.len() {
                kind
            } else {
                Signature::Partial
            };
        }
    }
    if buf.is_empty() {
        Signature::Partial
    } else {
        Signature::None
    }
}

/// A header read to its end, or why not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    NeedMore,
    /// The header, `len` bytes long; what follows is the client's own first bytes.
    Done {
        announced: Announced,
        len: usize,
    },
    Refused(ProxyRefusal),
}

/// Parses the header `buf` starts with (its signature already seen by [`signature`]).
pub fn parse(buf: &[u8]) -> Parsed {
    match signature(buf) {
        Signature::V1 => parse_v1(buf),
        Signature::V2 => parse_v2(buf),
        Signature::Partial => Parsed::NeedMore,
        Signature::None => Parsed::Refused(ProxyRefusal::Malformed),
    }
}

/// v1: nothing is parsed before the line's LF is in (so a line split across writes is never
/// judged on a prefix), and no LF within 107 bytes is too long.
fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Parsed::Refused(ProxyRefusal::Oversized)
        } else {
            Parsed::NeedMore
        };
    };
    let line = &buf[..=lf];
    match v1::Header::try_from(line) {
        Ok(h) if h.header.len() == line.len() => Parsed::Done {
            announced: match h.addresses {
                v1::Addresses::Tcp4(a) => {
                    Announced::Client(SocketAddr::from((a.source_address, a.source_port)))
                }
                v1::Addresses::Tcp6(a) => {
                    Announced::Client(SocketAddr::from((a.source_address, a.source_port)))
                }
                v1::Addresses::Unknown => Announced::Local,
            },
            len: line.len(),
        },
        // Parsed, but not up to the LF: a bare LF or bytes after the CR.
        Ok(_) => Parsed::Refused(ProxyRefusal::Malformed),
        Err(v1::BinaryParseError::Parse(v1::ParseError::HeaderTooLong)) => {
            Parsed::Refused(ProxyRefusal::Oversized)
        }
        Err(_) => Parsed::Refused(ProxyRefusal::Malformed),
    }
}

/// v2: the length field says how much follows; past [`V2_MAX`] it is refused before a byte
/// more is read.
fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < V2_FIXED {
        return Parsed::NeedMore;
    }
    let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX {
        return Parsed::Refused(ProxyRefusal::Oversized);
    }
    if buf.len() < len {
        return Parsed::NeedMore;
    }
    let h = match v2::Header::try_from(&buf[..len]) {
        Ok(h) => h,
        Err(_) => return Parsed::Refused(ProxyRefusal::Malformed),
    };
    let announced = match (h.command, h.protocol, h.addresses) {
        (v2::Command::Local, _, _) => Announced::Local,
        // A datagram (UDP) announcement cannot describe this TCP connection.
        (v2::Command::Proxy, v2::Protocol::Datagram, _) => {
            return Parsed::Refused(ProxyRefusal::Malformed)
        }
        (v2::Command::Proxy, _, v2::Addresses::IPv4(a)) => {
            Announced::Client(SocketAddr::from((a.source_address, a.source_port)))
        }
        (v2::Command::Proxy, _, v2::Addresses::IPv6(a)) => {
            Announced::Client(SocketAddr::from((a.source_address, a.source_port)))
        }
        // Unspecified or unix: no IP address to use; the socket's stays.
        (v2::Command::Proxy, _, _) => Announced::Local,
    };
    Parsed::Done { announced, len }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a peer sends after a signature: no panic, a header never longer than
        /// what was read, and never a wait for more past the bounds (so nothing buffers
        /// more than V2_MAX bytes, or V1_MAX for a v1 line).
        #[test]
        fn any_bytes_after_a_signature_are_bounded(
            v2_sig in any::<bool>(),
            tail in proptest::collection::vec(any::<u8>(), 0..300),
            len in any::<u16>(),
        ) {
            let mut buf = if v2_sig { V2_SIGNATURE.to_vec() } else { V1_PREFIX.to_vec() };
            if v2_sig {
                buf.extend_from_slice(&[0x21, 0x11]);
                buf.extend_from_slice(&len.to_be_bytes());
            }
            buf.extend_from_slice(&tail);
            match parse(&buf) {
                Parsed::Done { len, .. } => prop_assert!(len <= buf.len()),
                Parsed::NeedMore => {
                    let bound = if v2_sig { V2_MAX } else { V1_MAX };
                    prop_assert!(buf.len() < bound);
                    if v2_sig {
                        prop_assert!(16 + usize::from(len) <= V2_MAX);
                    }
                }
                Parsed::Refused(_) => {}
            }
        }
    }

    fn client(s: &str) -> Announced {
        Announced::Client(s.parse().expect("addr"))
    }

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(0x20 | command);
        b.push(family);
        b.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    fn v2_tcp4(src: [u8; 4], port: u16) -> Vec<u8> {
        let mut p = src.to_vec();
        p.extend_from_slice(&[10, 0, 0, 1]);
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&443u16.to_be_bytes());
        v2(1, 0x11, &p)
    }

    #[test]
    fn signatures_are_told_as_early_as_possible() {
        assert_eq!(signature(b""), Signature::Partial);
        assert_eq!(signature(b"PRO"), Signature::Partial);
        assert_eq!(signature(b"PROXY "), Signature::V1);
        assert_eq!(signature(b"\r\n\r\n"), Signature::Partial);
        assert_eq!(signature(V2_SIGNATURE), Signature::V2);
        assert_eq!(signature(b"GET / HTTP/1.1\r\n"), Signature::None);
        assert_eq!(signature(b"PROXZ"), Signature::None);
        assert_eq!(signature(&[0x16, 0x03, 0x01]), Signature::None);
        assert_eq!(signature(b"\r\n\r\nX"), Signature::None);
    }

    #[test]
    fn v1_lines_and_what_follows_them() {
        let line = b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 443\r\n";
        let mut buf = line.to_vec();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse(&buf),
            Parsed::Done {
                announced: client("203.0.113.9:51000"),
                len: line.len()
            }
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::9 2001:db8::1 51000 443\r\n"),
            Parsed::Done {
                announced: client("[2001:db8::9]:51000"),
                len: 46
            }
        );
        let unknown = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert!(matches!(
            parse(unknown),
            Parsed::Done {
                announced: Announced::Local,
                ..
            }
        ));
    }

    #[test]
    fn every_split_of_a_good_header_waits_for_more() {
        let v1 = b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 443\r\n".to_vec();
        let v2 = v2_tcp4([203, 0, 113, 9], 51000);
        for h in [v1, v2] {
            for cut in 0..h.len() {
                assert_eq!(parse(&h[..cut]), Parsed::NeedMore, "cut at {cut}");
            }
            assert!(matches!(parse(&h), Parsed::Done { .. }));
        }
    }

    #[test]
    fn malformed_v1_lines_are_refused() {
        let bad = ProxyRefusal::Malformed;
        for l in [
            &b"PROXY TCP4 203.0.113.9 10.0.0.1 51000\r\n"[..],
            b"PROXY TCP4 300.0.113.9 10.0.0.1 51000 443\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 51000 443\r\n",
            b"PROXY TCP4 203.0.113.9 10.0.0.1 99999 443\r\n",
            b"PROXY TCP4 203.0.113.9 10.0.0.1 051000 443\r\n",
            b"PROXY TCP5 203.0.113.9 10.0.0.1 51000 443\r\n",
            b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 443\n",
            b"PROXY TCP4  203.0.113.9 10.0.0.1 51000 443\r\n",
            b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 443\rX\n",
            b"PROXY \xff\xfe\r\n",
        ] {
            assert_eq!(
                parse(l),
                Parsed::Refused(bad),
                "{}",
                String::from_utf8_lossy(l)
            );
        }
    }

    #[test]
    fn v1_over_107_bytes_is_oversized() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'x');
        assert_eq!(parse(&long), Parsed::Refused(ProxyRefusal::Oversized));
        // A CRLF just past the limit does not help.
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long), Parsed::Refused(ProxyRefusal::Oversized));
        // Exactly 107 with its CRLF is fine.
        let mut max = b"PROXY UNKNOWN ".to_vec();
        max.resize(V1_MAX - 2, b'x');
        max.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&max), Parsed::Done { len: V1_MAX, .. }));
    }

    #[test]
    fn v2_commands_families_and_bounds() {
        let h = v2_tcp4([203, 0, 113, 9], 51000);
        assert_eq!(
            parse(&h),
            Parsed::Done {
                announced: client("203.0.113.9:51000"),
                len: 28
            }
        );
        let mut p6 = Vec::new();
        p6.extend_from_slice(
            &"2001:db8::9"
                .parse::<std::net::Ipv6Addr>()
                .expect("v6")
                .octets(),
        );
        p6.extend_from_slice(&[0; 16]);
        p6.extend_from_slice(&[0xc7, 0x38, 1, 187]);
        assert_eq!(
            parse(&v2(1, 0x21, &p6)),
            Parsed::Done {
                announced: client("[2001:db8::9]:51000"),
                len: 52
            }
        );
        // LOCAL (a balancer's health check) and families without an IP keep the socket's.
        for local in [v2(0, 0x00, &[]), v2(0, 0x11, &[0; 12]), v2(1, 0x00, &[])] {
            assert!(
                matches!(
                    parse(&local),
                    Parsed::Done {
                        announced: Announced::Local,
                        ..
                    }
                ),
                "{local:?}"
            );
        }
        assert!(matches!(
            parse(&v2(1, 0x31, &[0; 216])),
            Parsed::Done {
                announced: Announced::Local,
                ..
            }
        ));
        // TLVs after the addresses are skipped over.
        let mut with_tlv = v2_tcp4([1, 2, 3, 4], 5).split_off(16);
        with_tlv.extend_from_slice(&[0x04, 0, 3, b'a', b'b', b'c']);
        assert!(matches!(
            parse(&v2(1, 0x11, &with_tlv)),
            Parsed::Done { len: 34, .. }
        ));
    }

    #[test]
    fn v2_malformed_and_oversized() {
        let bad = Parsed::Refused(ProxyRefusal::Malformed);
        let mut version1 = v2_tcp4([1, 2, 3, 4], 5);
        version1[12] = 0x11;
        assert_eq!(parse(&version1), bad);
        assert_eq!(parse(&v2(2, 0x11, &[0; 12])), bad, "command 2");
        assert_eq!(parse(&v2(1, 0x41, &[0; 12])), bad, "family 4");
        assert_eq!(parse(&v2(1, 0x11, &[0; 4])), bad, "too short for IPv4");
        assert_eq!(parse(&v2(1, 0x12, &[0; 12])), bad, "UDP");
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge), Parsed::Refused(ProxyRefusal::Oversized));
        let at_max = v2(1, 0x11, &vec![0; V2_MAX - 16]);
        assert!(matches!(parse(&at_max), Parsed::Done { len: V2_MAX, .. }));
        let over = v2(1, 0x11, &vec![0; V2_MAX - 15]);
        assert_eq!(parse(&over[..16]), Parsed::Refused(ProxyRefusal::Oversized));
    }
}
