//! `[server] trusted_proxies` and `[listen] proxy_protocol`: the raw values and their
//! validation (FILE:LINE:COL through the caller's `at`). What they mean at run time is
//! real_ip.rs's and proxy_protocol/'s.

use std::ops::Range;

use ipnet::IpNet;
use toml::Spanned;

use super::ConfigError;
use crate::real_ip::TrustedProxies;

/// `trusted_proxies = ["10.0.0.0/8", "192.0.2.7"]`: CIDRs, or single addresses.
pub(super) type RawTrusted = Option<Spanned<Vec<Spanned<String>>>>;

/// Validates `trusted_proxies`; `proxy_protocol` (its span, when set to true) needs it.
pub(super) fn trusted_proxies(
    raw: &RawTrusted,
    proxy_protocol: Option<&Spanned<bool>>,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<TrustedProxies, ConfigError> {
    let mut nets: Vec<IpNet> = Vec::new();
    for a in raw.iter().flat_map(|l| l.get_ref()) {
        let s = a.get_ref().trim();
        let net = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                at(
                    a.span(),
                    format!("[server] trusted_proxies: \"{s}\" is not an address or CIDR like \"10.0.0.0/8\""),
                )
            })?;
        if net.prefix_len() == 0 {
            return Err(at(
                a.span(),
                format!("[server] trusted_proxies: \"{s}\" trusts every address, so any client could choose the address it is logged and rate limited by; list your balancers' networks"),
            ));
        }
        // `10.0.0.1/8` is almost always a typo for one address or for the network.
        if net.trunc() != net {
            return Err(at(
                a.span(),
                format!(
                    "[server] trusted_proxies: \"{s}\" has host bits set; write \"{}\" for the network or \"{}\" for one address",
                    net.trunc(),
                    net.addr()
                ),
            ));
        }
        nets.push(net);
    }
    if let Some(p) = proxy_protocol.filter(|p| *p.get_ref()) {
        if nets.is_empty() {
            return Err(at(
                p.span(),
                "[listen] proxy_protocol = true needs [server] trusted_proxies: the balancers whose PROXY header is believed, like [\"10.0.0.0/8\"]".into(),
            ));
        }
    }
    Ok(TrustedProxies::new(nets))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const MIN: &str = "[listen]\nhttp = \"127.0.0.1:8000\"\n\n[server]\n\n[[route]]\nname = \"web\"\npath_prefix = \"/\"\nblue = [\"127.0.0.1:3000\"]\ngreen = [\"127.0.0.1:3002\"]\n";

    fn parse(listen: &str, server: &str) -> Result<Config, String> {
        let text = MIN
            .replace("[listen]\n", &format!("[listen]\n{listen}"))
            .replace("[server]\n", &format!("[server]\n{server}"));
        Config::parse(Path::new("t.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn trusted_proxies_and_proxy_protocol_are_read() {
        let c = parse(
            "proxy_protocol = true\n",
            "trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n",
        )
        .expect("valid");
        assert!(c.proxy_protocol);
        assert_eq!(c.trusted_proxies.nets().len(), 3);
        assert!(c.trusted_proxies.contains("192.0.2.7".parse().expect("ip")));
        let c = parse("", "").expect("defaults");
        assert!(!c.proxy_protocol && c.trusted_proxies.is_empty());
    }

    #[test]
    fn bad_values_point_at_themselves() {
        let e = parse("", "trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:5:34: [server] trusted_proxies: \"10.0.0.0/33\" is not"),
            "{e}"
        );
        let e = parse("", "trusted_proxies = [\"0.0.0.0/0\"]\n").unwrap_err();
        assert!(e.contains("trusts every address"), "{e}");
        let e = parse("", "trusted_proxies = [\"10.0.0.1/8\"]\n").unwrap_err();
        assert!(e.contains("write \"10.0.0.0/8\" for the network"), "{e}");
        let e = parse("proxy_protocol = true\n", "").unwrap_err();
        assert!(
            e.starts_with(
                "t.toml:2:18: [listen] proxy_protocol = true needs [server] trusted_proxies"
            ),
            "{e}"
        );
        let e = parse("proxy_protocol = \"yes\"\n", "").unwrap_err();
        assert!(e.starts_with("t.toml:2:"), "{e}");
    }
}
