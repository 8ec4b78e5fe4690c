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
        let (field, special): (Field, &[u8]) = match (b.len(), first | 0x20) {
            (2, b't') => (Field::Te, b"te"),
            (4, b'h') => (Field::Host, b"host"),
            (4, b'v') => (Field::Vary, b"vary"),
            (6, b'e') => (Field::Expect, b"expect"),
            (7, b'u') => (Field::Upgrade, b"upgrade"),
            (10, b'c') => (Field::Connection, b"connection"),
            (10, b'k') => (Field::KeepAlive, b"keep-alive"),
            (14, b'c') => (Field::ContentLength, b"content-length"),
            (14, b'h') => (Field::Http2Settings, b"http2-settings"),
            (15, b'x') => (Field::XForwardedFor, b"x-forwarded-for"),
            (16, b'p') => (Field::ProxyConnection, b"proxy-connection"),
            (17, b't') => (Field::TransferEncoding, b"transfer-encoding"),
            (17, b'x') => (Field::XForwardedProto, b"x-forwarded-proto"),
            _ => return Field::Other,
        };
        if eq_lower(b, special) {
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

/// How many fields of a head [`Kinds`] remembers; later ones are looked up again.
pub const KINDS: usize = 32;

/// The kinds of a head's first fields, found once while it is checked and read again while
/// it is rewritten (each lookup is a few dozen instructions, and every field was looked up
/// twice).
#[derive(Debug, Clone, Copy)]
pub struct Kinds([Field; KINDS]);

impl Default for Kinds {
    fn default() -> Kinds {
        Kinds([Field::Other; KINDS])
    }
}

impl Kinds {
    /// Looks up field `i` named `name` and remembers its kind.
    pub fn find(&mut self, i: usize, name: &str) -> Field {
        let f = Field::of(name);
        if let Some(k) = self.0.get_mut(i) {
            *k = f;
        }
        f
    }

    /// The kind of field `i` named `name`: remembered by [`Kinds::find`] (which must have
    /// seen every field of the head), or looked up for a field past the first [`KINDS`].
    pub fn of(&self, i: usize, name: &str) -> Field {
        match self.0.get(i) {
            Some(&f) => f,
            None => Field::of(name),
        }
    }
}

/// Case-insensitive equality with a lower-case special name made of letters, digits and
/// '-': setting bit 5 maps only 'A'-'Z' onto 'a'-'z' among the bytes a header name may hold
/// (httparse allows only token characters there), with none of the general case-folding's
/// branches. Eight bytes at a time (the last word overlapping the one before): a name is
/// compared in one to three steps instead of one per byte.
fn eq_lower(name: &[u8], special: &[u8]) -> bool {
    const LOWER: u64 = u64::from_ne_bytes([0x20; 8]);
    let n = name.len();
    if n != special.len() {
        return false;
    }
    if n < 8 {
        return name.iter().zip(special).all(|(&a, &b)| a | 0x20 == b);
    }
    let word = |s: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_ne_bytes(w)
    };
    let mut at = 0;
    while at + 8 < n {
        if word(name, at) | LOWER != word(special, at) {
            return false;
        }
        at += 8;
    }
    word(name, n - 8) | LOWER == word(special, n - 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPECIAL: [(&str, Field); 13] = [
        ("te", Field::Te),
        ("host", Field::Host),
        ("vary", Field::Vary),
        ("expect", Field::Expect),
        ("upgrade", Field::Upgrade),
        ("connection", Field::Connection),
        ("keep-alive", Field::KeepAlive),
        ("content-length", Field::ContentLength),
        ("http2-settings", Field::Http2Settings),
        ("x-forwarded-for", Field::XForwardedFor),
        ("proxy-connection", Field::ProxyConnection),
        ("transfer-encoding", Field::TransferEncoding),
        ("x-forwarded-proto", Field::XForwardedProto),
    ];

    /// The plain reading of what `Field::of` answers.
    fn reference(name: &str) -> Field {
        SPECIAL
            .iter()
            .find(|(n, _)| name.eq_ignore_ascii_case(n))
            .map_or(Field::Other, |(_, f)| *f)
    }

    proptest! {
        #[test]
        fn any_token_is_read_as_a_plain_comparison_reads_it(
            name in "[A-Za-z0-9!#$%&'*+.^_`|~-]{0,20}",
        ) {
            prop_assert_eq!(Field::of(&name), reference(&name));
        }

        #[test]
        fn special_names_in_any_case_and_with_one_byte_changed(
            i in 0..SPECIAL.len(),
            case in any::<u32>(),
            at in any::<usize>(),
            to in "[A-Za-z0-9!#$%&'*+.^_`|~-]",
        ) {
            let (n, f) = SPECIAL[i];
            let mixed: String = n
                .chars()
                .enumerate()
                .map(|(k, c)| if case >> (k % 32) & 1 == 1 { c.to_ascii_uppercase() } else { c })
                .collect();
            prop_assert_eq!(Field::of(&mixed), f);
            let mut changed = mixed.clone().into_bytes();
            changed[at % n.len()] = to.as_bytes()[0];
            let changed = String::from_utf8(changed).expect("ascii");
            prop_assert_eq!(Field::of(&changed), reference(&changed));
        }
    }

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
        assert_eq!(Field::of("CONTENT-LENGTH"), Field::ContentLength);
        assert_eq!(Field::of("content-lengtH"), Field::ContentLength);
        assert_eq!(Field::of("content_length"), Field::Other);
        assert_eq!(Field::of("content-lengti"), Field::Other);
        assert_eq!(Field::of("x-forwarded-fo_"), Field::Other);
        assert_eq!(Field::of("x-forwarded-protO"), Field::XForwardedProto);
        assert_eq!(Field::of("x-forwarded-prot0"), Field::Other);
        assert_eq!(Field::of("Connection"), Field::Connection);
        assert_eq!(Field::of("Connectiom"), Field::Other);
        assert_eq!(Field::of("Upgrade"), Field::Upgrade);
        assert_eq!(Field::of("Upgradf"), Field::Other);
        assert!(Field::of("Keep-Alive").is_hop_by_hop());
        assert!(!Field::of("Host").is_hop_by_hop());
    }

    #[test]
    fn kinds_remember_the_first_fields_and_look_up_the_rest() {
        let names: Vec<String> = (0..KINDS + 3)
            .map(|i| {
                if i % 2 == 0 {
                    "Content-Length".into()
                } else {
                    format!("x-{i}")
                }
            })
            .collect();
        let mut k = Kinds::default();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(k.find(i, n), Field::of(n));
        }
        for (i, n) in names.iter().enumerate() {
            assert_eq!(k.of(i, n), Field::of(n), "field {i}");
        }
    }
}
