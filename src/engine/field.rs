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
        let is = |f: &str| name.eq_ignore_ascii_case(f);
        match name.len() {
            2 if is("te") => Field::Te,
            4 if is("host") => Field::Host,
            4 if is("vary") => Field::Vary,
            6 if is("expect") => Field::Expect,
            7 if is("upgrade") => Field::Upgrade,
            10 if is("connection") => Field::Connection,
            10 if is("keep-alive") => Field::KeepAlive,
            14 if is("content-length") => Field::ContentLength,
            14 if is("http2-settings") => Field::Http2Settings,
            15 if is("x-forwarded-for") => Field::XForwardedFor,
            16 if is("proxy-connection") => Field::ProxyConnection,
            17 if is("transfer-encoding") => Field::TransferEncoding,
            17 if is("x-forwarded-proto") => Field::XForwardedProto,
            _ => Field::Other,
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
        assert!(Field::of("Keep-Alive").is_hop_by_hop());
        assert!(!Field::of("Host").is_hop_by_hop());
    }
}
