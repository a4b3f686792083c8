//! Owns the one seam through which configuration reaches files (certificates,
//! keys, CA bundles, tokens). Compile checks them through it and the proxy
//! reads them through it, so material carried inline by pushed resources can
//! later be served by another implementation without touching either side.

use std::io;
use std::sync::Arc;

/// Reads the files a configuration names.
pub trait Files: Send + Sync {
    /// The whole content of `path`.
    fn read(&self, path: &str) -> io::Result<Vec<u8>>;

    /// Whether `path` can be read, without reading it all.
    fn check(&self, path: &str) -> io::Result<()> {
        self.read(path).map(drop)
    }
}

/// Files on the local disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskFiles;

impl Files for DiskFiles {
    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn check(&self, path: &str) -> io::Result<()> {
        std::fs::File::open(path).map(drop)
    }
}

/// Accepts every path without reading it: for validating resources on a
/// machine other than the one that will read the files (the control plane
/// checks a listener's certificate path is given, the proxy that serves it
/// checks the file).
#[derive(Debug, Clone, Copy, Default)]
pub struct UncheckedPaths;

impl Files for UncheckedPaths {
    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{path} is not read here"),
        ))
    }

    fn check(&self, _path: &str) -> io::Result<()> {
        Ok(())
    }
}

/// Prefix of the paths that name a part of a `Secret` resource instead of a
/// file: `secret:<name>#<part>`. Compile turns a `secret` field into such a
/// path, so everything that reads TLS material through [`Files`] reads pushed
/// Secrets the same way.
pub const SECRET_PREFIX: &str = "secret:";

/// The part of a `Secret` a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretPart {
    /// `tls_certificate.certificate_chain`.
    CertificateChain,
    /// `tls_certificate.private_key`.
    PrivateKey,
    /// `validation_context.trusted_ca`.
    TrustedCa,
}

impl SecretPart {
    /// Its field name, as in a path.
    pub fn name(self) -> &'static str {
        match self {
            SecretPart::CertificateChain => "certificate_chain",
            SecretPart::PrivateKey => "private_key",
            SecretPart::TrustedCa => "trusted_ca",
        }
    }

    fn from_name(s: &str) -> Option<SecretPart> {
        [
            SecretPart::CertificateChain,
            SecretPart::PrivateKey,
            SecretPart::TrustedCa,
        ]
        .into_iter()
        .find(|p| p.name() == s)
    }
}

/// The path naming `part` of Secret `name`.
pub fn secret_path(name: &str, part: SecretPart) -> String {
    format!("{SECRET_PREFIX}{name}#{}", part.name())
}

/// The Secret and part a path names, if it names one.
pub fn secret_of(path: &str) -> Option<(&str, SecretPart)> {
    let rest = path.strip_prefix(SECRET_PREFIX)?;
    let (name, part) = rest.rsplit_once('#')?;
    Some((name, SecretPart::from_name(part)?))
}

/// A compiled `Secret`: checked PEM text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A certificate chain and its private key.
    TlsCertificate {
        /// PEM certificate chain, leaf first.
        chain: Arc<[u8]>,
        /// PEM private key.
        key: Arc<[u8]>,
    },
    /// CA certificates to trust.
    ValidationContext {
        /// PEM CA certificates.
        trusted_ca: Arc<[u8]>,
    },
}

impl Secret {
    /// The bytes of `part`, or why this Secret has none.
    pub fn part(&self, name: &str, part: SecretPart) -> io::Result<&Arc<[u8]>> {
        match (self, part) {
            (Secret::TlsCertificate { chain, .. }, SecretPart::CertificateChain) => Ok(chain),
            (Secret::TlsCertificate { key, .. }, SecretPart::PrivateKey) => Ok(key),
            (Secret::ValidationContext { trusted_ca }, SecretPart::TrustedCa) => Ok(trusted_ca),
            (Secret::TlsCertificate { .. }, _) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("Secret `{name}` is a tls_certificate, not a validation_context"),
            )),
            (Secret::ValidationContext { .. }, _) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("Secret `{name}` is a validation_context, not a tls_certificate"),
            )),
        }
    }
}

/// Files seen through a set of Secrets: `secret:` paths read the Secrets,
/// every other path reads `inner`.
pub struct WithSecrets<'a> {
    pub(crate) secrets: &'a imbl::OrdMap<Arc<str>, crate::store::Entry<Secret>>,
    pub(crate) inner: &'a dyn Files,
}

impl WithSecrets<'_> {
    fn secret(&self, name: &str, part: SecretPart) -> io::Result<&Arc<[u8]>> {
        match self.secrets.get(name) {
            Some(e) => e.compiled.part(name, part),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no Secret `{name}` has arrived"),
            )),
        }
    }
}

impl Files for WithSecrets<'_> {
    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        match secret_of(path) {
            Some((name, part)) => self.secret(name, part).map(|b| b.to_vec()),
            None => self.inner.read(path),
        }
    }

    fn check(&self, path: &str) -> io::Result<()> {
        match secret_of(path) {
            Some((name, part)) => self.secret(name, part).map(drop),
            None => self.inner.check(path),
        }
    }
}
