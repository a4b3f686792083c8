//! Owns downstream workload identity (D7): the client certificate verifier
//! of an mTLS listener (one trust bundle per SPIFFE trust domain; a
//! certificate must chain to the bundle of the domain its SPIFFE ID names),
//! the identity read once per connection after the handshake, and the
//! `x-forwarded-client-cert` value built from it.

use std::collections::HashMap;
use std::sync::Arc;

use corridor_config::{parse_spiffe_id, ClientAuth, Files};
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::tls::{read_certs, ReloadableCert, TlsError};

/// The URI and DNS names of a certificate's subjectAltName (none without one).
fn san_names<'a>(
    cert: &'a x509_parser::certificate::X509Certificate<'_>,
) -> Result<(Vec<&'a str>, Vec<&'a str>), String> {
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?;
    for n in san.iter().flat_map(|s| s.value.general_names.iter()) {
        match n {
            x509_parser::extensions::GeneralName::URI(u) => uris.push(*u),
            x509_parser::extensions::GeneralName::DNSName(d) => dns.push(*d),
            _ => {}
        }
    }
    Ok((uris, dns))
}

/// The SPIFFE ID of a certificate: its one URI SAN, which must be a valid
/// SPIFFE ID (an X.509-SVID has exactly one).
pub(crate) fn spiffe_id_of(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let (uris, _) = san_names(&cert)?;
    match uris.as_slice() {
        [one] => {
            parse_spiffe_id(one)?;
            Ok((*one).to_string())
        }
        [] => Err("the certificate has no URI SAN (no SPIFFE ID)".into()),
        _ => Err(format!(
            "the certificate has {} URI SANs; a SPIFFE certificate has one",
            uris.len()
        )),
    }
}

/// Checks an upstream's certificate against the identities it must carry
/// (any one): a SPIFFE ID compared with its URI SANs, a DNS name with its DNS
/// SANs (case-insensitive). The error names what it carries instead.
pub(crate) fn check_upstream(der: &[u8], expected: &[Arc<str>]) -> Result<(), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable upstream certificate: {e}"))?;
    let (uris, dns) = san_names(&cert)?;
    let ok = expected.iter().any(|e| {
        if e.starts_with("spiffe://") {
            uris.iter().any(|u| u == &e.as_ref())
        } else {
            dns.iter().any(|d| d.eq_ignore_ascii_case(e))
        }
    });
    if ok {
        Ok(())
    } else {
        let carried: Vec<&str> = uris.iter().chain(dns.iter()).copied().collect();
        Err(format!(
            "the upstream presented {} but one of {} was expected",
            if carried.is_empty() {
                "no identity".to_string()
            } else {
                carried.join(", ")
            },
            expected
                .iter()
                .map(|e| e.as_ref())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// When the first of `certs` (DER) to expire expires (Unix seconds).
pub(crate) fn earliest_not_after<'a>(certs: impl IntoIterator<Item = &'a [u8]>) -> Option<i64> {
    certs.into_iter().filter_map(not_after).min()
}

/// When a certificate expires (Unix seconds), if it can be read.
pub(crate) fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The verified client of a connection, read once after its handshake
/// (requests share it through an `Arc`).
#[derive(Debug)]
pub(crate) struct PeerIdentity {
    /// The client's SPIFFE ID.
    pub(crate) spiffe_id: Arc<str>,
    /// The `x-forwarded-client-cert` value (Envoy's format:
    /// `By=<listener ID>;Hash=<SHA-256 of the certificate>;URI=<client ID>`),
    /// built once per connection.
    pub(crate) xfcc: Option<http::HeaderValue>,
    /// When the client's certificate expires (Unix seconds): a resumed TLS
    /// session is not verified again, so requests check this themselves.
    pub(crate) not_after: i64,
}

/// Verifies client certificates against one trust bundle per trust domain.
/// A reload that changes the bundles builds a new verifier (and a new TLS
/// acceptor, so that sessions verified under the old bundles cannot be
/// resumed); established connections are not touched.
#[derive(Debug)]
pub(crate) struct SpiffeClientVerifier {
    /// Trust domain → a verifier trusting only that domain's CAs.
    domains: HashMap<Arc<str>, Arc<dyn ClientCertVerifier>>,
    /// The CA certificates read, to tell whether a reload changed them.
    certs: Vec<CertificateDer<'static>>,
    /// Per trust domain, when its earliest CA expires (Unix seconds).
    pub(crate) expiry: Vec<(Arc<str>, i64)>,
    required: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl SpiffeClientVerifier {
    /// A verifier for `auth`, reading each bundle (errors name the file).
    pub(crate) fn new(auth: &ClientAuth, files: &dyn Files) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut domains = HashMap::new();
        let mut all = Vec::new();
        let mut expiry = Vec::new();
        for (domain, file) in &auth.trust_bundles {
            let mut roots = rustls::RootCertStore::empty();
            let certs = read_certs(files, file)?;
            let earliest = earliest_not_after(certs.iter().map(|c| c.as_ref()));
            for (i, c) in certs.into_iter().enumerate() {
                all.push(c.clone());
                roots.add(c).map_err(|e| TlsError {
                    file: file.to_string(),
                    reason: format!("certificate #{} is not a usable CA: {e}", i + 1),
                })?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| TlsError {
                file: file.to_string(),
                reason: format!("cannot verify clients with it: {e}"),
            })?;
            domains.insert(Arc::clone(domain), v);
            expiry.extend(earliest.map(|t| (Arc::clone(domain), t)));
        }
        Ok(Self {
            domains,
            certs: all,
            expiry,
            required: auth.required,
            provider,
        })
    }

    /// Whether `other` trusts other CA certificates than this one.
    pub(crate) fn differs(&self, other: &SpiffeClientVerifier) -> bool {
        self.certs != other.certs
    }
}

fn rejected(why: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(std::io::Error::other(why)),
    )))
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: an SVID client presents its one certificate anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let id = spiffe_id_of(end_entity).map_err(rejected)?;
        let (domain, _) = parse_spiffe_id(&id).map_err(rejected)?;
        let Some(v) = self.domains.get(domain) else {
            return Err(rejected(format!(
                "trust domain `{domain}` of {id} is not accepted here"
            )));
        };
        v.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Reads the verified client's identity once per connection, after the
/// handshake; requests find it in the connection's TLS digest.
pub(crate) struct IdentityCallback {
    /// The listener's certificate (for its own SPIFFE ID, `By=`).
    pub(crate) cert: Arc<ReloadableCert>,
}

#[async_trait::async_trait]
impl TlsAccept for IdentityCallback {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        use std::fmt::Write as _;
        let der = tls.peer_certificate_der()?;
        // The verifier accepted it, so it has a SPIFFE ID.
        let spiffe_id = spiffe_id_of(der).ok()?;
        let mut xfcc = String::with_capacity(200);
        if let Some(by) = self
            .cert
            .current()
            .cert
            .first()
            .and_then(|c| spiffe_id_of(c).ok())
        {
            let _ = write!(xfcc, "By={by};");
        }
        xfcc.push_str("Hash=");
        for b in ring::digest::digest(&ring::digest::SHA256, der).as_ref() {
            let _ = write!(xfcc, "{b:02x}");
        }
        let _ = write!(xfcc, ";URI={spiffe_id}");
        // Stored as an `Arc` inside the extension, so requests clone one `Arc`.
        Some(Arc::new(Arc::new(PeerIdentity {
            spiffe_id: spiffe_id.into(),
            xfcc: http::HeaderValue::from_str(&xfcc).ok(),
            not_after: not_after(der)?,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with these URI and DNS SANs.
    fn cert(uris: &[&str], dns: &[&str]) -> Vec<u8> {
        let mut p =
            rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .unwrap();
        for u in uris {
            p.subject_alt_names
                .push(rcgen::SanType::URI((*u).try_into().unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_has_exactly_one_spiffe_id() {
        let one = cert(&["spiffe://aws.corridor/ns/a"], &["a.test"]);
        assert_eq!(spiffe_id_of(&one).unwrap(), "spiffe://aws.corridor/ns/a");
        let two = cert(
            &["spiffe://aws.corridor/ns/a", "spiffe://gcp.corridor/ns/b"],
            &[],
        );
        assert!(spiffe_id_of(&two).unwrap_err().contains("2 URI SANs"));
        let none = cert(&[], &["a.test"]);
        assert!(spiffe_id_of(&none).unwrap_err().contains("no URI SAN"));
        let bad = cert(&["https://aws.corridor/ns/a"], &[]);
        assert!(spiffe_id_of(&bad).unwrap_err().contains("not a SPIFFE ID"));
        assert!(spiffe_id_of(b"garbage").is_err());
        assert!(not_after(&one).is_some_and(|t| t > 1_700_000_000));
    }

    #[test]
    fn upstream_identities_match_spiffe_ids_or_dns_names() {
        let c = cert(&["spiffe://aws.corridor/ns/model"], &["Model.AWS.test"]);
        let ok = |e: &[&str]| {
            let e: Vec<Arc<str>> = e.iter().map(|s| Arc::from(*s)).collect();
            check_upstream(&c, &e)
        };
        assert!(ok(&["spiffe://aws.corridor/ns/model"]).is_ok());
        assert!(ok(&["model.aws.test"]).is_ok(), "DNS names ignore case");
        assert!(ok(&["spiffe://aws.corridor/ns/other", "model.aws.test"]).is_ok());
        let err = ok(&["spiffe://aws.corridor/ns/other"]).unwrap_err();
        assert!(
            err.contains("spiffe://aws.corridor/ns/model") && err.contains("ns/other"),
            "{err}"
        );
        assert!(
            ok(&["spiffe://aws.corridor/ns/mode"]).is_err(),
            "no prefix match"
        );
        assert!(check_upstream(b"garbage", &[Arc::from("x")]).is_err());
    }
}
