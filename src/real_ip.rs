//! Who the client really is, behind load balancers: the decisions, pure.
//!
//! Owns `[server] trusted_proxies` ([`TrustedProxies`]) and the two rules built on it:
//! - a PROXY protocol header (read at accept, src/proxy_protocol/) is believed only from a
//!   trusted source ([`accept_proxy_header`]); from anyone else it closes the connection;
//! - `X-Forwarded-For` is believed only from a trusted peer, and then the client is the
//!   rightmost address in it that is not itself trusted, as nginx's `real_ip_recursive on`
//!   ([`client_from_xff`]); [`believes_xff`] tells the upstream head writer whether the
//!   client's list goes upstream at all.
//!
//! The "peer" here is the connection's address after any PROXY header: the socket digest
//! pingora's listener and the PROXY hook leave behind. This module reads no sockets and
//! parses no wire formats other than the addresses in an `X-Forwarded-For` value.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// `[server] trusted_proxies`: the networks whose PROXY header and `X-Forwarded-For` are
/// believed. Empty (the default) believes nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(nets)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what
    /// a dual-stack listener reports) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; anything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// What a PROXY protocol header said, once parsed (src/proxy_protocol/header.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// A proxied TCP connection from this client address.
    Client(SocketAddr),
    /// v2 `LOCAL` (the balancer's own health check), v1 `UNKNOWN`, or a v2 family without
    /// an IP address (unspecified, unix): the connection keeps its socket address.
    Local,
}

/// Why a connection is closed before it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyRefusal {
    /// A PROXY header from a source not in `trusted_proxies`: someone trying to choose the
    /// address switchyard logs, limits and previews by.
    Untrusted,
    /// A trusted source sent no PROXY header: a balancer without `send-proxy` would
    /// otherwise turn every client into the balancer's own address.
    Missing,
    /// Not a PROXY header that parses (bad signature, version, command, family, address).
    Malformed,
    /// Longer than a PROXY header may be (v1: 107 bytes; v2: the cap in proxy_protocol).
    Oversized,
    /// Not complete within `[limits] header_timeout`, or the client hung up first.
    Timeout,
}

impl ProxyRefusal {
    /// The `reason` label of `switchyard_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            ProxyRefusal::Untrusted => "proxy_untrusted",
            ProxyRefusal::Missing => "proxy_missing",
            ProxyRefusal::Malformed => "proxy_malformed",
            ProxyRefusal::Oversized => "proxy_oversized",
            ProxyRefusal::Timeout => "proxy_timeout",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            ProxyRefusal::Untrusted => "PROXY header from a source not in [server] trusted_proxies",
            ProxyRefusal::Missing => {
                "no PROXY header from a trusted proxy on a proxy_protocol listener"
            }
            ProxyRefusal::Malformed => "malformed PROXY header",
            ProxyRefusal::Oversized => "PROXY header too long",
            ProxyRefusal::Timeout => "PROXY header not complete within [limits] header_timeout",
        }
    }
}

/// The address a connection is served as, given its socket peer and what its first bytes
/// were (`None`: no PROXY header). With `proxy_protocol = true`:
/// - a trusted source must send a header (nginx requires one from everybody; switchyard
///   only from the balancers it trusts, so operators and monitors can still reach an
///   instance directly from elsewhere, under their own address);
/// - an untrusted source must not: its header is refused, its plain connection is served
///   under its socket address.
///
/// `Ok(None)`: keep the socket address; `Ok(Some(a))`: serve the connection as `a`.
pub fn accept_proxy_header(
    socket_peer: IpAddr,
    trusted: &TrustedProxies,
    header: Option<Announced>,
) -> Result<Option<SocketAddr>, ProxyRefusal> {
    match (trusted.contains(socket_peer), header) {
        (false, Some(_)) => Err(ProxyRefusal::Untrusted),
        (false, None) => Ok(None),
        (true, None) => Err(ProxyRefusal::Missing),
        (true, Some(Announced::Local)) => Ok(None),
        (true, Some(Announced::Client(a))) => Ok(Some(a)),
    }
}

/// Whether this peer's `X-Forwarded-For` is believed (and so forwarded upstream with the
/// peer appended). From anyone else the client's list is dropped and the upstream gets
/// `X-Forwarded-For: <peer>` alone: a backend can then never be fooled by a value the
/// client wrote, whichever end of the list it reads.
pub fn believes_xff(peer: IpAddr, trusted: &TrustedProxies) -> bool {
    trusted.contains(peer)
}

/// What the front door believes about one request's sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    /// The client: the access log's, preview `allow`'s and rate limits' address.
    pub client: Option<IpAddr>,
    /// The peer is a trusted proxy: its `X-Forwarded-For` goes upstream before the peer.
    pub peer_trusted: bool,
    /// The request came over https (switchyard's TLS listener, or a trusted proxy's).
    pub https: bool,
}

impl Sender {
    /// What [`sender`] decides when nobody is trusted (`trusted_proxies` empty, the
    /// default), without reading the request's fields: the peer, and https only over TLS.
    pub fn direct(peer: Option<IpAddr>, tls: bool) -> Sender {
        Sender {
            client: peer,
            peer_trusted: false,
            https: tls,
        }
    }
}

/// The three decisions below for one request, as any data path asks them: the connection's
/// peer (after any PROXY header) and TLS, the request's `X-Forwarded-For` values in order,
/// and its `X-Forwarded-Proto`.
pub fn sender<'a, I>(
    peer: Option<IpAddr>,
    tls: bool,
    trusted: &TrustedProxies,
    xff: I,
    proto: Option<&[u8]>,
) -> Sender
where
    I: DoubleEndedIterator<Item = &'a [u8]>,
{
    let peer_trusted = peer.is_some_and(|p| believes_xff(p, trusted));
    Sender {
        client: peer.map(|p| client_from_xff(p, trusted, xff)),
        peer_trusted,
        https: forwarded_https(tls, peer_trusted, proto),
    }
}

/// Whether a request came to the front over https: over switchyard's own TLS listener, or,
/// from a trusted proxy, as its `X-Forwarded-Proto` says (the first value of a list: the
/// scheme the first proxy saw). A TLS-terminating balancer forwarding plain HTTP then gets
/// no `redirect_https` loop, and the backend hears `https`. An untrusted peer's value is
/// ignored, as its `X-Forwarded-For` is.
pub fn forwarded_https(tls: bool, peer_trusted: bool, proto: Option<&[u8]>) -> bool {
    if tls {
        return true;
    }
    let Some(v) = proto.filter(|_| peer_trusted) else {
        return false;
    };
    let first = v.split(|&b| b == b',').next().unwrap_or_default();
    first.trim_ascii().eq_ignore_ascii_case(b"https")
}

/// The client of one request: the peer, or, when the peer is a trusted proxy, the rightmost
/// `X-Forwarded-For` address that is not trusted (every header line in order, each a comma
/// list). When every address is trusted, the leftmost. An entry that is not an IP address
/// stops the walk at the last trusted hop before it: whoever wrote it is not to be believed
/// about anything further left.
pub fn client_from_xff<'a, I>(peer: IpAddr, trusted: &TrustedProxies, values: I) -> IpAddr
where
    I: DoubleEndedIterator<Item = &'a [u8]>,
{
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    for value in values.rev() {
        for entry in value.rsplit(|&b| b == b',') {
            let entry = entry.trim_ascii();
            if entry.is_empty() {
                continue;
            }
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip;
            if !trusted.contains(ip) {
                return ip;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an IPv4 or IPv6 address, also in the forms proxies write
/// with a port (`1.2.3.4:5678`, `[2001:db8::1]:443`) or brackets (`[2001:db8::1]`).
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|v6| canonical(IpAddr::V6(v6)))
}

#[cfg(test)]
mod tests {

    #[test]
    fn with_nobody_trusted_the_direct_sender_is_what_sender_decides() {
        let none = TrustedProxies::default();
        let peer: IpAddr = "203.0.113.7".parse().expect("ip");
        for tls in [false, true] {
            let xff: [&[u8]; 2] = [b"10.0.0.1", b"198.51.100.2, 10.0.0.3"];
            let decided = sender(Some(peer), tls, &none, xff.into_iter(), Some(b"https"));
            assert_eq!(decided, Sender::direct(Some(peer), tls));
        }
        let decided = sender(None, false, &none, std::iter::empty(), None);
        assert_eq!(decided, Sender::direct(None, false));
    }

    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the list holds, the client is the peer or an address written in it, and
        /// an untrusted peer is always its own client.
        #[test]
        fn the_client_comes_from_the_peer_or_the_list(
            peer_trusted in any::<bool>(),
            entries in proptest::collection::vec((any::<bool>(), any::<u8>(), any::<bool>()), 0..8),
        ) {
            let t = trusted(&["10.0.0.0/8"]);
            let peer = if peer_trusted { ip("10.0.0.1") } else { ip("192.0.2.1") };
            let list: Vec<String> = entries
                .iter()
                .map(|(trusted, n, garbage)| match (garbage, trusted) {
                    (true, _) => format!("junk{n}"),
                    (false, true) => format!("10.1.1.{n}"),
                    (false, false) => format!("198.51.100.{n}"),
                })
                .collect();
            let value = list.join(", ");
            let got = client_from_xff(peer, &t, std::iter::once(value.as_bytes()));
            if !peer_trusted {
                prop_assert_eq!(got, peer);
            }
            prop_assert!(got == peer || list.contains(&got.to_string()), "{got} from {value}");
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().expect("net")).collect())
    }

    fn xff(peer: &str, t: &TrustedProxies, values: &[&str]) -> IpAddr {
        client_from_xff(ip(peer), t, values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn xff_is_believed_only_from_a_trusted_peer() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(xff("203.0.113.9", &t, &["1.2.3.4"]), ip("203.0.113.9"));
        assert_eq!(xff("10.0.0.5", &t, &["1.2.3.4"]), ip("1.2.3.4"));
        assert_eq!(xff("10.0.0.5", &t, &[]), ip("10.0.0.5"));
        assert!(believes_xff(ip("10.1.2.3"), &t));
        assert!(!believes_xff(ip("11.1.2.3"), &t));
        let nobody = TrustedProxies::default();
        assert_eq!(xff("10.0.0.5", &nobody, &["1.2.3.4"]), ip("10.0.0.5"));
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_address() {
        let t = trusted(&["10.0.0.0/8", "192.168.0.0/16"]);
        // (peer, X-Forwarded-For lines, client)
        let cases: &[(&str, &[&str], &str)] = &[
            // A spoofed entry on the left is never reached.
            (
                "10.0.0.1",
                &["6.6.6.6, 198.51.100.7, 192.168.1.1"],
                "198.51.100.7",
            ),
            // Several header lines are one list, in order.
            (
                "10.0.0.1",
                &["6.6.6.6", "198.51.100.7", "10.2.2.2"],
                "198.51.100.7",
            ),
            // All trusted: the leftmost.
            ("10.0.0.1", &["10.9.9.9, 10.8.8.8"], "10.9.9.9"),
            // Empty entries are skipped; spaces and tabs trimmed.
            ("10.0.0.1", &[" ,\t198.51.100.7 ,"], "198.51.100.7"),
            // Garbage stops the walk at the last trusted hop.
            ("10.0.0.1", &["unknown"], "10.0.0.1"),
            ("10.0.0.1", &["1.1.1.1, junk, 10.3.3.3"], "10.3.3.3"),
            ("10.0.0.1", &["\u{ff}"], "10.0.0.1"),
            ("10.0.0.1", &["1.1.1.1\r\n"], "1.1.1.1"),
            // Ports, brackets, IPv6.
            ("10.0.0.1", &["198.51.100.7:5555"], "198.51.100.7"),
            ("10.0.0.1", &["[2001:db8::1]:443"], "2001:db8::1"),
            ("10.0.0.1", &["[2001:db8::1]"], "2001:db8::1"),
            ("10.0.0.1", &["2001:db8::2"], "2001:db8::2"),
            // A mapped trusted address is trusted, as a peer and inside the list.
            ("::ffff:10.0.0.1", &["1.2.3.4, ::ffff:10.4.4.4"], "1.2.3.4"),
        ];
        for (peer, values, want) in cases {
            assert_eq!(xff(peer, &t, values), ip(want), "{peer} {values:?}");
        }
    }

    #[test]
    fn a_sender_combines_the_three() {
        let t = trusted(&["10.0.0.0/8"]);
        let xff: [&[u8]; 1] = [b"198.51.100.9"];
        let s = sender(
            Some(ip("10.0.0.1")),
            false,
            &t,
            xff.into_iter(),
            Some(b"https"),
        );
        assert_eq!(
            s,
            Sender {
                client: Some(ip("198.51.100.9")),
                peer_trusted: true,
                https: true
            }
        );
        let s = sender(
            Some(ip("192.0.2.1")),
            false,
            &t,
            xff.into_iter(),
            Some(b"https"),
        );
        assert_eq!(
            s,
            Sender {
                client: Some(ip("192.0.2.1")),
                peer_trusted: false,
                https: false
            }
        );
        let none: [&[u8]; 0] = [];
        assert_eq!(sender(None, true, &t, none.into_iter(), None).client, None);
    }

    #[test]
    fn forwarded_proto_only_from_trusted_peers() {
        assert!(forwarded_https(true, false, None));
        assert!(forwarded_https(true, false, Some(b"http")));
        assert!(forwarded_https(false, true, Some(b"https")));
        assert!(forwarded_https(false, true, Some(b" HTTPS ")));
        assert!(forwarded_https(false, true, Some(b"https, http")));
        assert!(!forwarded_https(false, true, Some(b"http, https")));
        assert!(!forwarded_https(false, true, None));
        assert!(!forwarded_https(false, false, Some(b"https")));
        assert!(!forwarded_https(false, true, Some(b"httpsx")));
    }

    #[test]
    fn proxy_headers_only_from_trusted_sources() {
        let t = trusted(&["10.0.0.0/8"]);
        let real: SocketAddr = "203.0.113.9:51000".parse().expect("addr");
        let lb = ip("10.0.0.2");
        let stranger = ip("198.51.100.1");
        assert_eq!(
            accept_proxy_header(lb, &t, Some(Announced::Client(real))),
            Ok(Some(real))
        );
        assert_eq!(
            accept_proxy_header(lb, &t, Some(Announced::Local)),
            Ok(None)
        );
        assert_eq!(
            accept_proxy_header(lb, &t, None),
            Err(ProxyRefusal::Missing)
        );
        assert_eq!(
            accept_proxy_header(stranger, &t, Some(Announced::Client(real))),
            Err(ProxyRefusal::Untrusted)
        );
        assert_eq!(
            accept_proxy_header(stranger, &t, Some(Announced::Local)),
            Err(ProxyRefusal::Untrusted)
        );
        assert_eq!(accept_proxy_header(stranger, &t, None), Ok(None));
        assert_eq!(
            accept_proxy_header(ip("::ffff:10.0.0.2"), &t, Some(Announced::Client(real))),
            Ok(Some(real))
        );
    }

    #[test]
    fn refusal_labels_are_distinct() {
        let all = [
            ProxyRefusal::Untrusted,
            ProxyRefusal::Missing,
            ProxyRefusal::Malformed,
            ProxyRefusal::Oversized,
            ProxyRefusal::Timeout,
        ];
        let mut labels: Vec<_> = all.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
        assert!(all.iter().all(|r| !r.reason().is_empty()));
    }
}
