//! TLS termination: the certificate and key switchyard presents on `[listen] https`.
//!
//! Owns reading a PEM cert/key pair and checking it (the chain parses, the key parses, the key
//! belongs to the certificate). Which pair a handshake gets, and swapping them all on
//! `reload-tls` (a failed reload leaves the old pairs serving; handshakes already done keep
//! the pair they started with), is sni.rs's.
//!
//! It does not own the listener (server.rs adds it to the proxy service through pingora's
//! rustls `TlsSettings`) nor anything after the handshake: the proxy sees decrypted bytes.

use std::io;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;

/// Why a cert/key pair cannot be used. Every message names the file at fault, and
/// [`TlsError::in_key`] tells which of the two config values to point at.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file {path}: {source}")]
    CertRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("certificate file {path} has no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCert { path: PathBuf },
    #[error("certificate file {path} does not parse: {detail}")]
    CertParse { path: PathBuf, detail: String },
    #[error("cannot read key file {path}: {source}")]
    KeyRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("key file {path} has no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("key file {path} does not parse: {detail}")]
    KeyParse { path: PathBuf, detail: String },
    #[error("key file {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
}

impl TlsError {
    /// Whether the key (rather than the certificate) is what is wrong.
    pub fn in_key(&self) -> bool {
        matches!(
            self,
            TlsError::KeyRead { .. }
                | TlsError::NoKey { .. }
                | TlsError::KeyParse { .. }
                | TlsError::Mismatch { .. }
        )
    }
}

/// Parses a PEM certificate chain (leaf first, as in a `fullchain.pem`).
pub fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| TlsError::CertParse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Parses the first PEM private key in a file.
pub fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        e => TlsError::KeyParse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
    })
}

/// Builds the pair rustls signs with, refusing a key that belongs to another certificate
/// (rustls would accept it and every handshake would fail).
pub fn certified_key(
    cert_path: &Path,
    certs: Vec<CertificateDer<'static>>,
    key_path: &Path,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    // The same provider pingora installs for its listeners.
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::KeyParse {
            path: key_path.to_path_buf(),
            detail: e.to_string(),
        })?;
    let ck = CertifiedKey::new(certs, signing);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            })
        }
        // Comparing the keys parses the leaf certificate: this is where a PEM block that
        // holds no valid X.509 certificate shows.
        Err(e) => Err(TlsError::CertParse {
            path: cert_path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

/// Reads and checks a cert/key pair from disk.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::CertRead {
        path: cert.to_path_buf(),
        source,
    })?;
    let key_pem = std::fs::read(key).map_err(|source| TlsError::KeyRead {
        path: key.to_path_buf(),
        source,
    })?;
    let certs = parse_certs(cert, &cert_pem)?;
    let key_der = parse_key(key, &key_pem)?;
    certified_key(cert, certs, key, key_der)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let k = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
        (k.cert.pem(), k.key_pair.serialize_pem())
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn loads_a_matching_pair_and_names_the_file_at_fault() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = pair("a.test");
        let (_, other_key) = pair("b.test");
        let c = write(dir.path(), "cert.pem", &cert);
        let k = write(dir.path(), "key.pem", &key);
        let ck = load(&c, &k).expect("good pair");
        assert_eq!(ck.cert.len(), 1);

        let missing = dir.path().join("nope.pem");
        let e = load(&missing, &k).expect_err("missing cert");
        assert!(matches!(e, TlsError::CertRead { .. }) && !e.in_key(), "{e}");
        assert!(e.to_string().contains("nope.pem"), "{e}");

        let e = load(&c, &missing).expect_err("missing key");
        assert!(e.in_key(), "{e}");

        let junk = write(dir.path(), "junk.pem", "hello\n");
        assert!(matches!(load(&junk, &k), Err(TlsError::NoCert { .. })));
        assert!(matches!(load(&c, &junk), Err(TlsError::NoKey { .. })));
        // The key file holds a certificate, not a key.
        assert!(matches!(load(&c, &c), Err(TlsError::NoKey { .. })));

        let bad_der = write(
            dir.path(),
            "bad.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = load(&bad_der, &k).expect_err("not X.509");
        assert!(matches!(e, TlsError::CertParse { .. }), "{e}");

        let ok2 = write(dir.path(), "other.pem", &other_key);
        let e = load(&c, &ok2).expect_err("mismatch");
        assert!(matches!(e, TlsError::Mismatch { .. }) && e.in_key(), "{e}");
        assert!(e.to_string().contains("other.pem"), "{e}");
    }
}
