//! Owns TLS material: reading PEM files (through the configuration's one
//! files seam), the listener certificate resolver that a reload swaps without
//! restarting (D7), and upstream trust roots.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use corridor_config::Files;
use pingora_core::utils::tls::WrappedX509;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A TLS material problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct TlsError {
    /// The file that could not be used.
    pub file: String,
    /// Why.
    pub reason: String,
}

fn err(file: &str, reason: impl Into<String>) -> TlsError {
    TlsError {
        file: file.to_string(),
        reason: reason.into(),
    }
}

/// Reads all certificates of a PEM file.
pub fn read_certs(files: &dyn Files, file: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = files
        .read(file)
        .map_err(|e| err(file, format!("cannot read: {e}")))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| err(file, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(file, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub(crate) fn read_key(
    files: &dyn Files,
    key_file: &str,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = files
        .read(key_file)
        .map_err(|e| err(key_file, format!("cannot read: {e}")))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| err(key_file, format!("invalid PEM: {e}")))?
        .ok_or_else(|| err(key_file, "no PRIVATE KEY block found"))
}

/// Reads a certificate chain and key into a signing key for rustls.
pub fn load_certified_key(
    files: &dyn Files,
    cert_file: &str,
    key_file: &str,
) -> Result<Arc<CertifiedKey>, TlsError> {
    certified_key(
        read_certs(files, cert_file)?,
        &read_key(files, key_file)?,
        cert_file,
        key_file,
    )
}

/// A rustls signing key of `certs` and `key`, checked to match.
fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
    cert_file: &str,
    key_file: &str,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let signing = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|e| err(key_file, format!("unsupported private key: {e}")))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        err(
            key_file,
            format!("does not match the certificate in {cert_file}: {e}"),
        )
    })?;
    Ok(Arc::new(ck))
}

/// Reads an upstream client certificate chain and key (checked with rustls
/// first: Pingora's wrapper panics on malformed input) as Pingora's `CertKey`.
pub fn load_client_cert(
    files: &dyn Files,
    cert_file: &str,
    key_file: &str,
) -> Result<Arc<pingora_core::utils::tls::CertKey>, TlsError> {
    let key = read_key(files, key_file)?;
    let ck = certified_key(read_certs(files, cert_file)?, &key, cert_file, key_file)?;
    for (i, c) in ck.cert.iter().enumerate() {
        x509_parser::parse_x509_certificate(c).map_err(|e| {
            err(
                cert_file,
                format!("certificate #{} is unreadable: {e}", i + 1),
            )
        })?;
    }
    let certs = ck.cert.iter().map(|c| c.as_ref().to_vec()).collect();
    Ok(Arc::new(pingora_core::utils::tls::CertKey::new(
        certs,
        key.secret_der().to_vec(),
    )))
}

/// Serves the listener's current certificate; `store` swaps it on reload.
pub struct ReloadableCert {
    current: ArcSwap<CertifiedKey>,
}

impl ReloadableCert {
    /// A resolver serving `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self {
            current: ArcSwap::new(key),
        }
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Replaces the served certificate; new handshakes use it at once.
    pub fn store(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReloadableCert")
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Reads a CA bundle as pingora's per-peer trust roots. Every certificate is
/// checked first, because pingora's wrapper panics on malformed DER.
pub fn load_ca(files: &dyn Files, file: &str) -> Result<Arc<[WrappedX509]>, TlsError> {
    let certs = read_certs(files, file)?;
    let mut store = rustls::RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        store.add(c.clone()).map_err(|e| {
            err(
                file,
                format!("certificate #{} is not a usable CA: {e}", i + 1),
            )
        })?;
    }
    let wrapped: Vec<WrappedX509> = certs
        .into_iter()
        .map(|c| WrappedX509::new(c.as_ref().to_vec(), pingora_core::utils::tls::parse_x509))
        .collect();
    Ok(wrapped.into())
}

/// The system's trust roots, read once per process.
pub(crate) fn system_roots() -> Arc<rustls::RootCertStore> {
    static SYSTEM_ROOTS: std::sync::OnceLock<Arc<rustls::RootCertStore>> =
        std::sync::OnceLock::new();
    Arc::clone(SYSTEM_ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().unwrap_or_default() {
            let _ = roots.add(c);
        }
        Arc::new(roots)
    }))
}

/// A TLS client configuration for health probes of a cluster: its trust roots
/// (`ca`, else the system's, read once per process) and its client
/// certificate, or no verification when the cluster skips it.
pub(crate) fn probe_client_config(
    ca: Option<&[WrappedX509]>,
    insecure: bool,
    client_cert: Option<&pingora_core::utils::tls::CertKey>,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder_with_protocol_versions(rustls::DEFAULT_VERSIONS)
        });
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
            .with_no_client_auth()
    } else {
        let roots = match ca {
            Some(certs) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs {
                    let _ = roots.add(CertificateDer::from(c.borrow_raw_cert().to_vec()));
                }
                Arc::new(roots)
            }
            None => system_roots(),
        };
        let builder = builder.with_root_certificates(roots);
        // An upstream that requires client certificates gets the cluster's.
        let with_cert = client_cert.and_then(|k| {
            let chain = std::iter::once(k.leaf())
                .chain(k.intermediates())
                .map(|c| CertificateDer::from(c.borrow_raw_cert().to_vec()))
                .collect();
            let key = PrivateKeyDer::try_from(k.key().clone()).ok()?;
            builder.clone().with_client_auth_cert(chain, key).ok()
        });
        match with_cert {
            Some(c) => c,
            None => builder.with_no_client_auth(),
        }
    };
    Arc::new(config)
}

/// Accepts any server certificate: only for clusters configured with
/// `insecure_skip_verify` (tests).
#[derive(Debug)]
struct AcceptAnyServer;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
