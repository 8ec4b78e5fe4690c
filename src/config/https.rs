//! The HTTPS front door's extras in `[listen]`: `[[listen.certificates]]` (a certificate per
//! host name, chosen by SNI; the `[listen] cert`/`key` pair is the default) and
//! `redirect_https`. Raw values and validation only (FILE:LINE:COL through the caller's
//! `at`); the choice at handshake time is sni.rs's, the redirect the engine's.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, TlsConfig};
use crate::sni::{self, HostPattern, Source};
use crate::tls;

/// One `[[listen.certificates]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    hosts: Spanned<Vec<Spanned<String>>>,
    cert: Spanned<String>,
    key: Spanned<String>,
}

/// A certificate for some host names, validated: its pair loads, belongs together and
/// covers every name.
#[derive(Debug, Clone)]
pub struct CertificateConfig {
    pub hosts: Vec<HostPattern>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub loaded: Arc<CertifiedKey>,
}

/// Validates `[[listen.certificates]]`; `https` is `[listen] https` (they need it).
pub(super) fn certificates(
    raw: &[Spanned<RawCertificate>],
    https: bool,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<Vec<CertificateConfig>, ConfigError> {
    if let (Some(first), false) = (raw.first(), https) {
        return Err(at(
            first.span(),
            "[[listen.certificates]] needs [listen] https, cert and key (the default certificate)"
                .into(),
        ));
    }
    let mut out: Vec<CertificateConfig> = Vec::new();
    let mut seen: Vec<HostPattern> = Vec::new();
    for c in raw {
        let c = c.get_ref();
        if c.hosts.get_ref().is_empty() {
            return Err(at(
                c.hosts.span(),
                "[[listen.certificates]] hosts needs at least one host name".into(),
            ));
        }
        let mut hosts = Vec::new();
        for h in c.hosts.get_ref() {
            let p = sni::parse_host(h.get_ref())
                .map_err(|m| at(h.span(), format!("[[listen.certificates]] hosts: {m}")))?;
            if seen.contains(&p) {
                return Err(at(
                    h.span(),
                    format!("[[listen.certificates]] host name {p} is given twice: each name gets one certificate"),
                ));
            }
            seen.push(p.clone());
            hosts.push(p);
        }
        for v in [&c.cert, &c.key] {
            if v.get_ref().trim().is_empty() {
                return Err(at(
                    v.span(),
                    "[[listen.certificates]] cert and key must be file paths".into(),
                ));
            }
        }
        let cert = PathBuf::from(c.cert.get_ref());
        let key = PathBuf::from(c.key.get_ref());
        let loaded = tls::load(&cert, &key).map_err(|e| {
            let span = if e.in_key() {
                c.key.span()
            } else {
                c.cert.span()
            };
            at(span, format!("[[listen.certificates]] {e}"))
        })?;
        if let Some((p, span)) = hosts
            .iter()
            .zip(c.hosts.get_ref())
            .find(|(p, _)| !sni::covers(&loaded, p))
            .map(|(p, h)| (p, h.span()))
        {
            return Err(at(
                span,
                format!("[[listen.certificates]] the certificate in {} does not cover host name {p} (not in its subject alternative names)", cert.display()),
            ));
        }
        out.push(CertificateConfig {
            hosts,
            cert,
            key,
            loaded: Arc::new(loaded),
        });
    }
    Ok(out)
}

/// The sources and loaded pairs of the whole set, default first (what sni.rs serves).
pub fn sources(tls: &TlsConfig) -> (Vec<Source>, Vec<Arc<CertifiedKey>>) {
    let default = Source {
        hosts: Vec::new(),
        cert: tls.cert.clone(),
        key: tls.key.clone(),
    };
    let mut sources = vec![default];
    let mut keys = vec![tls.loaded.clone()];
    for c in &tls.certificates {
        sources.push(Source {
            hosts: c.hosts.clone(),
            cert: c.cert.clone(),
            key: c.key.clone(),
        });
        keys.push(c.loaded.clone());
    }
    (sources, keys)
}

/// `redirect_https = true`: the port the `Location` names (the https listener's). Refused
/// without `[listen] https`: the redirect would point at nothing.
pub(super) fn redirect_https(
    raw: Option<&Spanned<bool>>,
    tls: Option<&TlsConfig>,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<Option<u16>, ConfigError> {
    match (raw.filter(|r| *r.get_ref()), tls) {
        (None, _) => Ok(None),
        (Some(_), Some(t)) => Ok(Some(t.addr.port())),
        (Some(r), None) => Err(at(
            r.span(),
            "[listen] redirect_https = true needs [listen] https, cert and key: the redirect would point at nothing".into(),
        )),
    }
}
