//! Certificates per host name: which certificate a TLS handshake gets for the name the
//! client asked for (SNI), and the set's reload.
//!
//! Owns the host patterns (`api.example.com`, `*.example.com`: one whole leftmost label),
//! the pure choice ([`Table::pick`]: exact name, else the wildcard of its parent, else the
//! default `[listen] cert`), whether a certificate covers a name (its SANs, checked by
//! webpki as a client would), and the rustls resolver that serves every new handshake from
//! one `ArcSwap`ed table, so `reload-tls` swaps all pairs at once and a failed reload of any
//! of them keeps all the old ones.
//!
//! Reading and checking one cert/key pair is tls.rs's; the listener is server.rs's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::{DnsName, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::tls::{self, TlsError};

/// A host name a certificate is chosen for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `api.example.com` (lower case, no trailing dot).
    Exact(String),
    /// `*.example.com`, stored as `example.com`: any one label in front of it.
    Wildcard(String),
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(h) => write!(f, "*.{h}"),
        }
    }
}

/// Parses a `hosts` entry: a DNS name, or `*.` and a name of at least two labels.
pub fn parse_host(s: &str) -> Result<HostPattern, String> {
    let lower = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let (wild, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest.to_string()),
        None => (false, lower.clone()),
    };
    if name.contains('*') {
        return Err(format!(
            "\"{s}\": a wildcard is only allowed as the whole first label, like \"*.example.com\""
        ));
    }
    if DnsName::try_from(name.as_str()).is_err() || name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("\"{s}\" is not a DNS host name"));
    }
    if wild && !name.contains('.') {
        return Err(format!(
            "\"{s}\" would match a whole top-level domain; write \"*.example.com\""
        ));
    }
    Ok(if wild {
        HostPattern::Wildcard(name)
    } else {
        HostPattern::Exact(name)
    })
}

/// Whether a certificate's leaf is valid for `host` (its SANs, as a client checks them).
/// A wildcard pattern is covered when any name under it is: tried with a name no real
/// host is likely to have.
pub fn covers(ck: &CertifiedKey, host: &HostPattern) -> bool {
    let Some(leaf) = ck.cert.first() else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let probe = match host {
        HostPattern::Exact(h) => h.clone(),
        HostPattern::Wildcard(h) => format!("switchyard-sni-probe.{h}"),
    };
    ServerName::try_from(probe.as_str())
        .map(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
        .unwrap_or(false)
}

/// Where one pair comes from: its files and its names (none for the default).
#[derive(Debug, Clone)]
pub struct Source {
    pub hosts: Vec<HostPattern>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The pairs in use, indexed for the handshake.
#[derive(Debug)]
pub struct Table {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    /// `keys[0]` is the default.
    keys: Vec<Arc<CertifiedKey>>,
}

impl Table {
    /// `keys[i]` belongs to `sources[i]`; `sources[0]` is the default.
    pub fn new(sources: &[Source], keys: Vec<Arc<CertifiedKey>>) -> Table {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, s) in sources.iter().enumerate() {
            for h in &s.hosts {
                match h {
                    HostPattern::Exact(n) => exact.insert(n.clone(), i),
                    HostPattern::Wildcard(n) => wildcard.insert(n.clone(), i),
                };
            }
        }
        Table {
            exact,
            wildcard,
            keys,
        }
    }

    /// The pair for a requested name: exact, else the wildcard of its parent domain, else
    /// the default (also for a client that sent no name, or an IP address).
    pub fn pick(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let i = sni.and_then(|name| self.index(name)).unwrap_or(0);
        &self.keys[i]
    }

    fn index(&self, name: &str) -> Option<usize> {
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&lower) {
            return Some(i);
        }
        let (_, parent) = lower.split_once('.')?;
        self.wildcard.get(parent).copied()
    }
}

/// Why a reload (or the first load) of the set failed: the file at fault is named.
#[derive(Debug, thiserror::Error)]
pub enum SniError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("certificate file {cert} does not cover host name {host} (not in its subject alternative names)")]
    NotCovered { cert: PathBuf, host: String },
}

/// Reads and checks every pair; the first failure is the answer.
pub fn load_all(sources: &[Source]) -> Result<Vec<Arc<CertifiedKey>>, SniError> {
    sources
        .iter()
        .map(|s| {
            let ck = tls::load(&s.cert, &s.key)?;
            if let Some(h) = s.hosts.iter().find(|h| !covers(&ck, h)) {
                return Err(SniError::NotCovered {
                    cert: s.cert.clone(),
                    host: h.to_string(),
                });
            }
            Ok(Arc::new(ck))
        })
        .collect()
}

/// The certificates every new handshake chooses from; `reload` re-reads all their files.
#[derive(Debug)]
pub struct CertStore {
    sources: Vec<Source>,
    current: ArcSwap<Table>,
}

impl CertStore {
    /// A store serving `keys`, loaded (and checked) from `sources`; `sources[0]` is the
    /// default pair.
    pub fn new(sources: Vec<Source>, keys: Vec<Arc<CertifiedKey>>) -> CertStore {
        let table = Table::new(&sources, keys);
        CertStore {
            sources,
            current: ArcSwap::from_pointee(table),
        }
    }

    /// Re-reads every pair; on any error every pair in use stays. Returns how many pairs
    /// are now in use.
    pub fn reload(&self) -> Result<usize, SniError> {
        let keys = load_all(&self.sources)?;
        let n = keys.len();
        self.current
            .store(Arc::new(Table::new(&self.sources, keys)));
        Ok(n)
    }

    pub fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        self.current.load().pick(sni).clone()
    }

    /// The default pair's certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.sources[0].cert
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, stem: &str, names: &[&str]) -> Source {
        let k = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .expect("rcgen");
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, k.cert.pem()).expect("write");
        std::fs::write(&key, k.key_pair.serialize_pem()).expect("write");
        Source {
            hosts: Vec::new(),
            cert,
            key,
        }
    }

    fn hosts(list: &[&str]) -> Vec<HostPattern> {
        list.iter().map(|h| parse_host(h).expect("host")).collect()
    }

    #[test]
    fn host_patterns() {
        assert_eq!(
            parse_host("API.Example.com."),
            Ok(HostPattern::Exact("api.example.com".into()))
        );
        assert_eq!(
            parse_host("*.example.com"),
            Ok(HostPattern::Wildcard("example.com".into()))
        );
        assert_eq!(
            parse_host("*.example.com").expect("w").to_string(),
            "*.example.com"
        );
        for bad in [
            "*.com",
            "a.*.com",
            "*x.example.com",
            "",
            "a b.com",
            "10.0.0.1",
            "*",
        ] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_wins_then_one_label_wildcard_then_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut srcs = vec![
            pair(dir.path(), "default", &["localhost"]),
            pair(dir.path(), "api", &["api.example.com"]),
            pair(dir.path(), "wild", &["*.example.com"]),
        ];
        srcs[1].hosts = hosts(&["api.example.com"]);
        srcs[2].hosts = hosts(&["*.example.com"]);
        let keys = load_all(&srcs).expect("load");
        let t = Table::new(&srcs, keys.clone());
        let is = |sni: Option<&str>, i: usize| Arc::ptr_eq(t.pick(sni), &keys[i]);
        assert!(is(Some("api.example.com"), 1));
        assert!(is(Some("API.EXAMPLE.COM"), 1));
        assert!(is(Some("www.example.com"), 2));
        assert!(
            is(Some("a.b.example.com"), 0),
            "a wildcard covers one label"
        );
        assert!(is(Some("example.com"), 0));
        assert!(is(Some("other.test"), 0));
        assert!(is(None, 0));
    }

    #[test]
    fn coverage_is_checked_against_the_sans() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = pair(dir.path(), "a", &["api.example.com", "*.svc.example.com"]);
        let ck = tls::load(&s.cert, &s.key).expect("load");
        assert!(covers(&ck, &parse_host("api.example.com").expect("h")));
        assert!(covers(&ck, &parse_host("x.svc.example.com").expect("h")));
        assert!(covers(&ck, &parse_host("*.svc.example.com").expect("h")));
        assert!(!covers(&ck, &parse_host("www.example.com").expect("h")));
        assert!(!covers(&ck, &parse_host("*.example.com").expect("h")));
        let mut src = s.clone();
        src.hosts = hosts(&["www.example.com"]);
        let e = load_all(&[src]).expect_err("not covered");
        assert!(
            e.to_string()
                .contains("does not cover host name www.example.com"),
            "{e}"
        );
    }

    #[test]
    fn reload_swaps_all_or_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut srcs = vec![
            pair(dir.path(), "default", &["localhost"]),
            pair(dir.path(), "api", &["api.example.com"]),
        ];
        srcs[1].hosts = hosts(&["api.example.com"]);
        let store = CertStore::new(srcs.clone(), load_all(&srcs).expect("load"));
        let before = (store.pick(None), store.pick(Some("api.example.com")));

        // New default, broken second pair: nothing changes.
        let _ = pair(dir.path(), "default", &["localhost"]);
        std::fs::write(&srcs[1].key, "junk").expect("write");
        let e = store.reload().expect_err("broken key");
        assert!(e.to_string().contains("api.key"), "{e}");
        assert!(Arc::ptr_eq(&store.pick(None), &before.0));
        assert!(Arc::ptr_eq(&store.pick(Some("api.example.com")), &before.1));

        let _ = pair(dir.path(), "api", &["api.example.com"]);
        assert_eq!(store.reload().expect("reload"), 2);
        assert_ne!(store.pick(None).cert[0], before.0.cert[0]);
        assert_ne!(
            store.pick(Some("api.example.com")).cert[0],
            before.1.cert[0]
        );
    }
}
