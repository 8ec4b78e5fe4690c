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

/// `[[listen.certificates]]` added to the validated `[listen] https` pair, and the
/// `redirect_https` port.
pub(super) fn listen_extras(
    raw: &super::RawListen,
    mut tls: Option<TlsConfig>,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<(Option<TlsConfig>, Option<u16>), ConfigError> {
    let certs = certificates(&raw.certificates, tls.is_some(), at)?;
    if let Some(t) = tls.as_mut() {
        t.certificates = certs;
    }
    let redirect = redirect_https(raw.redirect_https.as_ref(), tls.as_ref(), at)?;
    Ok((tls, redirect))
}

/// Validates `[[listen.certificates]]`; `https` is `[listen] https` (they need it).
fn certificates(
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
        let (cert, key, loaded) = load_pair("[[listen.certificates]]", &c.cert, &c.key, at)?;
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

/// Reads and checks the cert/key pair `scope` names (tls.rs); an error points at the value
/// of the file at fault.
pub(super) fn load_pair(
    scope: &str,
    cert: &Spanned<String>,
    key: &Spanned<String>,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<(PathBuf, PathBuf, CertifiedKey), ConfigError> {
    for v in [cert, key] {
        if v.get_ref().trim().is_empty() {
            return Err(at(
                v.span(),
                format!("{scope} cert and key must be file paths"),
            ));
        }
    }
    let (cert_path, key_path) = (PathBuf::from(cert.get_ref()), PathBuf::from(key.get_ref()));
    let loaded = tls::load(&cert_path, &key_path).map_err(|e| {
        let span = if e.in_key() { key.span() } else { cert.span() };
        at(span, format!("{scope} {e}"))
    })?;
    Ok((cert_path, key_path, loaded))
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
fn redirect_https(
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::sni::HostPattern;

    /// A config with https on a default pair and `certs` (TOML) after the routes.
    fn parse(dir: &Path, listen: &str, certs: &str) -> Result<Config, String> {
        for (stem, names) in [
            ("d", vec!["localhost"]),
            ("a", vec!["api.example.com", "*.svc.example.com"]),
            ("w", vec!["*.example.org"]),
        ] {
            let k = rcgen::generate_simple_self_signed(
                names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            )
            .expect("rcgen");
            std::fs::write(dir.join(format!("{stem}.pem")), k.cert.pem()).expect("write");
            std::fs::write(dir.join(format!("{stem}.key")), k.key_pair.serialize_pem())
                .expect("write");
        }
        let text = format!(
            "[listen]\nhttp = \"127.0.0.1:8000\"\n{listen}\n[[route]]\nname = \"web\"\npath_prefix = \"/\"\nblue = [\"127.0.0.1:3000\"]\ngreen = [\"127.0.0.1:3002\"]\n{}",
            certs.replace("DIR", &dir.display().to_string())
        );
        Config::parse(Path::new("t.toml"), &text).map_err(|e| e.to_string())
    }

    const HTTPS: &str = "https = \"127.0.0.1:8443\"\ncert = \"DIR/d.pem\"\nkey = \"DIR/d.key\"\n";

    fn https(dir: &Path) -> String {
        HTTPS.replace("DIR", &dir.display().to_string())
    }

    const TWO: &str = "[[listen.certificates]]\nhosts = [\"api.example.com\", \"x.svc.example.com\"]\ncert = \"DIR/a.pem\"\nkey = \"DIR/a.key\"\n[[listen.certificates]]\nhosts = [\"*.example.org\"]\ncert = \"DIR/w.pem\"\nkey = \"DIR/w.key\"\n";

    #[test]
    fn certificates_and_redirect_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = parse(
            dir.path(),
            &format!("{}redirect_https = true\n", https(dir.path())),
            TWO,
        )
        .expect("valid");
        let t = c.tls.expect("tls");
        assert_eq!(t.certificates.len(), 2);
        assert_eq!(
            t.certificates[1].hosts,
            vec![HostPattern::Wildcard("example.org".into())]
        );
        assert_eq!(c.redirect_https, Some(8443));
        let c = parse(dir.path(), &https(dir.path()), "").expect("no extras");
        assert!(c.tls.expect("tls").certificates.is_empty() && c.redirect_https.is_none());
    }

    #[test]
    fn mistakes_are_located() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let e = parse(d, "", TWO).unwrap_err();
        assert!(
            e.contains("[[listen.certificates]] needs [listen] https"),
            "{e}"
        );
        let dup = TWO.replace("\"*.example.org\"", "\"API.example.com\"");
        let e = parse(d, &https(d), &dup).unwrap_err();
        assert!(
            e.contains(":17:10: [[listen.certificates]] host name api.example.com is given twice"),
            "{e}"
        );
        let e = parse(d, &https(d), &TWO.replace("DIR/a.pem", "DIR/missing.pem")).unwrap_err();
        assert!(
            e.contains(":14:8: [[listen.certificates]] cannot read certificate file"),
            "{e}"
        );
        let e = parse(d, &https(d), &TWO.replace("DIR/a.key", "DIR/w.key")).unwrap_err();
        assert!(
            e.contains(":15:7: ") && e.contains("does not belong"),
            "{e}"
        );
        let e = parse(
            d,
            &https(d),
            &TWO.replace("x.svc.example.com", "x.example.com"),
        )
        .unwrap_err();
        assert!(
            e.contains(":13:29: ") && e.contains("does not cover host name x.example.com"),
            "{e}"
        );
        let e = parse(d, &https(d), &TWO.replace("*.example.org", "*.org")).unwrap_err();
        assert!(e.contains("whole top-level domain"), "{e}");
        let e = parse(
            d,
            &https(d),
            "[[listen.certificates]]\nhosts = []\ncert = \"x\"\nkey = \"y\"\n",
        )
        .unwrap_err();
        assert!(e.contains("hosts needs at least one host name"), "{e}");
        let e = parse(
            d,
            &https(d),
            "[[listen.certificates]]\nhosts = [\"a.b\"]\ncert = \"x\"\n",
        )
        .unwrap_err();
        assert!(e.contains("missing field `key`"), "{e}");
        let e = parse(d, "redirect_https = true\n", "").unwrap_err();
        assert!(
            e.starts_with("t.toml:3:18: [listen] redirect_https = true needs"),
            "{e}"
        );
    }
}
