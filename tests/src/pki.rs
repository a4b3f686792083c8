//! A throwaway test PKI: one CA per [`TestPki`], leaf certificates with DNS/IP SANs
//! or a SPIFFE ID (one per trust domain: a cloud's CA issues its domain's IDs),
//! PEM files in a temp dir for the proxy to read, and rustls client/server configs that
//! always use the `ring` provider explicitly (never a process-wide default).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The crypto provider every config in this crate uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test certificate authority plus a temp dir for PEM files (deleted on drop).
pub struct TestPki {
    name: String,
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    dir: tempfile::TempDir,
}

/// A leaf certificate (usable for both server and client auth) and its private key.
#[derive(Clone)]
pub struct Leaf {
    /// The leaf certificate alone, PEM.
    pub cert_pem: String,
    /// The leaf's PKCS#8 private key, PEM.
    pub key_pem: String,
    /// The leaf certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The issuing CA certificate, PEM (for building chain files).
    pub ca_pem: String,
    key_der: Vec<u8>,
}

impl Leaf {
    /// Leaf then CA certificate, PEM (what a server usually presents).
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.ca_pem)
    }

    /// The private key, DER, for rustls.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf").finish_non_exhaustive()
    }
}

/// Paths of a leaf written by [`TestPki::write_leaf`].
#[derive(Debug, Clone)]
pub struct LeafFiles {
    /// The leaf certificate alone.
    pub cert: PathBuf,
    /// Leaf + CA certificates.
    pub chain: PathBuf,
    /// The PKCS#8 private key.
    pub key: PathBuf,
}

impl TestPki {
    /// A new CA named `<name> test CA`; its certificate is written to [`TestPki::ca_path`].
    pub fn new(name: &str) -> TestPki {
        TestPki::try_new(name).unwrap_or_else(|e| panic!("creating test PKI {name:?}: {e:#}"))
    }

    /// Like [`TestPki::new`], returning errors instead of panicking.
    pub fn try_new(name: &str) -> anyhow::Result<TestPki> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let dir = tempfile::Builder::new()
            .prefix("corridor-pki-")
            .tempdir()
            .context("creating PKI temp dir")?;
        let pki = TestPki {
            name: name.to_owned(),
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            dir,
        };
        std::fs::write(pki.ca_path(), &pki.ca_pem)?;
        Ok(pki)
    }

    /// The CA's name as given to [`TestPki::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The temp dir holding this PKI's files (removed when the `TestPki` drops).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the CA certificate PEM file.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf signed by this CA with these SANs (IP literals become IP SANs, the rest DNS
    /// names; the first is also the CN). Panics on an invalid name.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.try_leaf(names)
            .unwrap_or_else(|e| panic!("issuing leaf for {names:?}: {e:#}"))
    }

    /// An X.509-SVID: a leaf with the URI SAN `spiffe_id` and DNS/IP `names`,
    /// valid now, or (`expired`) only in 2020.
    pub fn spiffe_leaf(&self, spiffe_id: &str, names: &[&str], expired: bool) -> Leaf {
        self.issue(names, Some(spiffe_id), expired)
            .unwrap_or_else(|e| panic!("issuing SVID {spiffe_id}: {e:#}"))
    }

    /// Like [`TestPki::leaf`], returning errors instead of panicking.
    pub fn try_leaf(&self, names: &[&str]) -> anyhow::Result<Leaf> {
        self.issue(names, None, false)
    }

    fn issue(
        &self,
        names: &[&str],
        spiffe_id: Option<&str>,
        expired: bool,
    ) -> anyhow::Result<Leaf> {
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans)?;
        if let Some(id) = spiffe_id {
            params.subject_alt_names.push(SanType::URI(
                id.try_into().context("SPIFFE ID as a URI SAN")?,
            ));
        }
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, (*first).to_owned());
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            ca_pem: self.ca_pem.clone(),
            key_der: key.serialize_der(),
        })
    }

    /// Writes `<stem>.crt`, `<stem>.chain.crt` and `<stem>.key` into [`TestPki::dir`].
    pub fn write_leaf(&self, leaf: &Leaf, stem: &str) -> LeafFiles {
        let files = LeafFiles {
            cert: self.dir.path().join(format!("{stem}.crt")),
            chain: self.dir.path().join(format!("{stem}.chain.crt")),
            key: self.dir.path().join(format!("{stem}.key")),
        };
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
        };
        write(&files.cert, &leaf.cert_pem);
        write(&files.chain, &leaf.chain_pem());
        write(&files.key, &leaf.key_pem);
        files
    }

    /// Roots containing only this CA.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .expect("rcgen CA certificate parses");
        roots
    }

    /// A client config trusting only this CA, offering `alpn` (e.g. `&[b"h2", b"http/1.1"]`).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// Like [`TestPki::client_config`], presenting `leaf` as a client certificate (mTLS).
    pub fn client_config_with_cert(&self, alpn: &[&[u8]], leaf: &Leaf) -> Arc<ClientConfig> {
        TestPki::client_config_presenting(self, alpn, leaf)
    }

    /// A client config trusting only `server_ca` for the server and presenting
    /// `leaf` (issued by any CA) as its client certificate.
    pub fn client_config_presenting(
        server_ca: &TestPki,
        alpn: &[&[u8]],
        leaf: &Leaf,
    ) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(server_ca.roots())
            .with_client_auth_cert(vec![leaf.cert_der.clone()], leaf.key_der())
            .expect("rcgen leaf and key match");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A server config presenting `leaf` (no client auth), advertising `alpn`.
    pub fn server_config(&self, leaf: &Leaf, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        server_config(leaf, alpn).expect("rcgen leaf and key match")
    }

    /// A server config presenting `leaf` and requiring a client certificate from this CA.
    pub fn server_config_mtls(&self, leaf: &Leaf, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots().into(),
            provider(),
        )
        .build()
        .expect("client verifier with one root");
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![leaf.cert_der.clone()], leaf.key_der())
            .expect("rcgen leaf and key match");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("name", &self.name)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// A server config presenting `leaf` (no client auth), advertising `alpn`.
pub fn server_config(leaf: &Leaf, alpn: &[&[u8]]) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert_der.clone()], leaf.key_der())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The identities [`write_three_clouds`] issues: directory, SPIFFE ID and
/// DNS name (if any).
pub const THREE_CLOUD_IDENTITIES: [(&str, &str, &str); 5] = [
    (
        "oci",
        "spiffe://oci.corridor/corridor/ingress",
        "ingress.oci.corridor",
    ),
    (
        "aws",
        "spiffe://aws.corridor/corridor/sidecar",
        "sidecar.aws.corridor",
    ),
    (
        "azure",
        "spiffe://azure.corridor/corridor/sidecar",
        "sidecar.azure.corridor",
    ),
    (
        "control-plane",
        "spiffe://oci.corridor/corridor/control-plane",
        "control-plane.oci.corridor",
    ),
    ("client", "spiffe://aws.corridor/ns/app/sa/chat", ""),
];

/// Writes a three-cloud PKI for the README's mTLS example into `dir`: one
/// CA per cloud (`bundles/{oci,aws,azure}.pem`) and an X.509-SVID with its
/// key for each of [`THREE_CLOUD_IDENTITIES`] (`<name>/svid.pem`, leaf then
/// CA, and `<name>/svid.key`), issued by the CA of its trust domain.
pub fn write_three_clouds(dir: &Path) -> anyhow::Result<()> {
    let clouds = [
        ("oci", TestPki::try_new("oci")?),
        ("aws", TestPki::try_new("aws")?),
        ("azure", TestPki::try_new("azure")?),
    ];
    std::fs::create_dir_all(dir.join("bundles"))?;
    for (name, ca) in &clouds {
        std::fs::write(dir.join("bundles").join(format!("{name}.pem")), ca.ca_pem())?;
    }
    for (name, id, dns) in THREE_CLOUD_IDENTITIES {
        let domain = id
            .strip_prefix("spiffe://")
            .and_then(|r| r.split('.').next())
            .context("SPIFFE ID")?;
        let (_, ca) = clouds
            .iter()
            .find(|(c, _)| *c == domain)
            .context("a cloud's CA")?;
        let names: &[&str] = if dns.is_empty() { &[] } else { &[dns] };
        let leaf = ca.issue(names, Some(id), false)?;
        let out = dir.join(name);
        std::fs::create_dir_all(&out)?;
        std::fs::write(out.join("svid.pem"), leaf.chain_pem())?;
        std::fs::write(out.join("svid.key"), &leaf.key_pem)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_through_pem_parsing() {
        let pki = TestPki::new("unit");
        let leaf = pki.leaf(&["localhost", "127.0.0.1", "::1"]);
        let files = pki.write_leaf(&leaf, "server");
        let certs: Vec<_> = rustls_pemfile::certs(&mut &std::fs::read(&files.chain).unwrap()[..])
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(certs.len(), 2, "chain file holds leaf + CA");
        assert_eq!(certs[0], leaf.cert_der);
        assert_eq!(&certs[1], pki.ca_der());
        let key = rustls_pemfile::private_key(&mut &std::fs::read(&files.key).unwrap()[..])
            .unwrap()
            .expect("a key");
        assert_eq!(key.secret_der(), leaf.key_der().secret_der());
        let ca = std::fs::read_to_string(pki.ca_path()).unwrap();
        assert_eq!(ca, pki.ca_pem());
        // Both config kinds build from the same material.
        server_config(&leaf, &[b"h2"]).unwrap();
        pki.server_config_mtls(&leaf, &[b"h2"]);
        pki.client_config_with_cert(&[b"h2"], &leaf);
    }

    #[test]
    fn leaf_verifies_for_dns_and_ip_names_only() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let pki = TestPki::new("verify");
        let leaf = pki.leaf(&["localhost", "127.0.0.1"]);
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            pki.roots().into(),
            provider(),
        )
        .build()
        .unwrap();
        let check = |name: &str| {
            verifier.verify_server_cert(
                &leaf.cert_der,
                &[],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
        };
        check("localhost").expect("DNS SAN verifies");
        check("127.0.0.1").expect("IP SAN verifies");
        assert!(check("example.com").is_err(), "other names must not verify");
        let other = TestPki::new("other");
        let stranger = other.leaf(&["localhost"]);
        let res = verifier.verify_server_cert(
            &stranger.cert_der,
            &[],
            &ServerName::try_from("localhost").unwrap(),
            &[],
            UnixTime::now(),
        );
        assert!(res.is_err(), "a leaf from another CA must not verify");
    }
}
