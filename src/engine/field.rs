//! The header fields the engine treats specially, recognised with one match on the name's
//! length and then one case-insensitive comparison: a head's fields are each looked at
//! several times (framing, hop-by-hop, forwarding), and comparing every name against every
//! special name cost hundreds of instructions per request.

/// A field name as far as forwarding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Upgrade,
    Http2Settings,
    TransferEncoding,
    ContentLength,
    Host,
    Expect,
    XForwardedFor,
    XForwardedProto,
    Vary,
    Other,
}

impl Field {
    pub fn of(name: &str) -> Field {
        let b = name.as_bytes();
        let Some(&first) = b.first() else {
            return Field::Other;
        };
        // Length and first letter pick the one candidate; most names are not special and
        // stop here without a comparison.
        let (field, special) = match (b.len(), first | 0x20) {
            (2, b't') => (Field::Te, "te"),
            (4, b'h') => (Field::Host, "host"),
            (4, b'v') => (Field::Vary, "vary"),
            (6, b'e') => (Field::Expect, "expect"),
            (7, b'u') => (Field::Upgrade, "upgrade"),
            (10, b'c') => (Field::Connection, "connection"),
            (10, b'k') => (Field::KeepAlive, "keep-alive"),
            (14, b'c') => (Field::ContentLength, "content-length"),
            (14, b'h') => (Field::Http2Settings, "http2-settings"),
            (15, b'x') => (Field::XForwardedFor, "x-forwarded-for"),
            (16, b'p') => (Field::ProxyConnection, "proxy-connection"),
            (17, b't') => (Field::TransferEncoding, "transfer-encoding"),
            (17, b'x') => (Field::XForwardedProto, "x-forwarded-proto"),
            _ => return Field::Other,
        };
        if eq_lower(b, special.as_bytes()) {
            field
        } else {
            Field::Other
        }
    }

    /// Belongs to one connection and never passes a proxy as it is (RFC 9110 §7.6.1).
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Field::Connection
                | Field::KeepAlive
                | Field::ProxyConnection
                | Field::Te
                | Field::Upgrade
                | Field::Http2Settings
        )
    }
}

/// Case-insensitive equality with a lower-case special name made of letters, digits and
/// '-': setting bit 5 maps only 'A'-'Z' onto 'a'-'z' among the bytes a header name may hold
/// (httparse allows only token characters there), with none of the general case-folding's
/// branches.
fn eq_lower(name: &[u8], special: &[u8]) -> bool {
    name.len() == special.len() && name.iter().zip(special).all(|(&a, &b)| a | 0x20 == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_recognised_in_any_case_and_nothing_else_is() {
        assert_eq!(Field::of("Content-Length"), Field::ContentLength);
        assert_eq!(Field::of("TRANSFER-ENCODING"), Field::TransferEncoding);
        assert_eq!(Field::of("x-forwarded-proto"), Field::XForwardedProto);
        assert_eq!(Field::of("te"), Field::Te);
        assert_eq!(Field::of("Http2-Settings"), Field::Http2Settings);
        assert_eq!(Field::of("content-lengthx"), Field::Other);
        assert_eq!(Field::of("x-content-length"), Field::Other);
        assert_eq!(Field::of(""), Field::Other);
        assert_eq!(Field::of("Content-Type"), Field::Other);
        assert_eq!(Field::of("Cache-Control"), Field::Other);
        assert_eq!(Field::of("Tk"), Field::Other);
        assert_eq!(Field::of("x-forwarded-for"), Field::XForwardedFor);
        assert_eq!(Field::of("X-FORWARDED-FOR"), Field::XForwardedFor);
        assert!(Field::of("Keep-Alive").is_hop_by_hop());
        assert!(!Field::of("Host").is_hop_by_hop());
    }
}
