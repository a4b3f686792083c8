//! Owns TLS on the control stream: the proxy's connector (TLS with an
//! optional client certificate, the control plane's chain and identity
//! checked before any xDS byte is sent) and the control plane's acceptor
//! (its certificate, and SPIFFE client certificates verified against one
//! trust bundle per domain). Files are read on every connection, so rotated
//! certificates take effect from the next (re)connect without a restart.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use corridor_config::{ClientAuth, DiskFiles, XdsTls};
use corridor_xds::transport::PeerInfo;
use corridor_xds::transport::{Connecting, Io};
use corridor_xds::{Accepted, Connector};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::identity::{check_upstream, spiffe_id_of, SpiffeClientVerifier};
use crate::tls::{read_certs, read_key};

/// How long a control-plane TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The connector for a control stream secured by `tls`.
pub(crate) fn connector(tls: XdsTls) -> Connector {
    let tls = Arc::new(tls);
    Connector::new(move |authority| -> Connecting {
        let tls = Arc::clone(&tls);
        Box::pin(async move { connect(&authority, &tls).await })
    })
}

async fn connect(authority: &str, tls: &XdsTls) -> io::Result<Box<dyn Io>> {
    let config = client_config(tls).map_err(io::Error::other)?;
    let host = if tls.sni.is_empty() {
        host_of(authority)
    } else {
        tls.sni.to_string()
    };
    let name = ServerName::try_from(host.clone())
        .map_err(|e| io::Error::other(format!("bad server name `{host}`: {e}")))?;
    let tcp = tokio::net::TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    if !tls.expected_identities.is_empty() {
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| io::Error::other("the control plane presented no certificate"))?;
        check_upstream(leaf, &tls.expected_identities).map_err(|e| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("control plane identity: {e}"),
            )
        })?;
    }
    Ok(Box::new(stream))
}

/// The host of `host:port` (brackets of an IPv6 literal removed).
fn host_of(authority: &str) -> String {
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// A rustls client configuration for `tls`, read from its files now.
fn client_config(tls: &XdsTls) -> Result<Arc<rustls::ClientConfig>, String> {
    let files = DiskFiles;
    let roots = match &tls.ca_file {
        Some(f) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(&files, f).map_err(|e| e.to_string())? {
                roots
                    .add(c)
                    .map_err(|e| format!("{f}: not a usable CA: {e}"))?;
            }
            Arc::new(roots)
        }
        None => crate::tls::system_roots(),
    };
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| format!("cannot verify the control plane: {e}"))?;
    let spiffe_only = !tls.expected_identities.is_empty()
        && tls
            .expected_identities
            .iter()
            .all(|i| i.starts_with("spiffe://"));
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainVerifier {
            inner: webpki,
            ignore_name: spiffe_only,
        }));
    let mut config = match &tls.client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                read_certs(&files, cert).map_err(|e| e.to_string())?,
                read_key(&files, key).map_err(|e| e.to_string())?,
            )
            .map_err(|e| format!("{key}: does not match {cert}: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// WebPKI verification of the control plane's chain; when the identity to
/// check is a SPIFFE ID (checked after the handshake), its DNS name is not.
#[derive(Debug)]
struct ChainVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    ignore_name: bool,
}

impl rustls::client::danger::ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError as C;
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            )) if self.ignore_name => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The control plane's TLS: its certificate and, when `client_auth` names
/// trust bundles, required SPIFFE client certificates.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// PEM certificate chain file.
    pub cert_file: String,
    /// PEM private key file.
    pub key_file: String,
    /// Client verification; `None` accepts clients without certificates.
    pub client_auth: Option<ClientAuth>,
}

impl ServerTls {
    /// Reads the files now into a rustls configuration (errors name the file).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let files = DiskFiles;
        let certs = read_certs(&files, &self.cert_file).map_err(|e| e.to_string())?;
        let key = read_key(&files, &self.key_file).map_err(|e| e.to_string())?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_auth {
            Some(auth) => builder.with_client_cert_verifier(Arc::new(
                SpiffeClientVerifier::new(auth, &files).map_err(|e| e.to_string())?,
            )),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("{}: {e}", self.key_file))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// Accepts TLS connections on `listener`, handshaking each on its own
    /// task (files read per connection, so rotation needs no restart).
    pub(crate) fn incoming(
        self,
        listener: tokio::net::TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<io::Result<Accepted>> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("control plane accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let config = match self.server_config() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!("control plane TLS: {e}; connection from {peer} refused");
                        continue;
                    }
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Some(a) = handshake(tcp, peer, config).await {
                        let _ = tx.send(Ok(a)).await;
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

async fn handshake(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    config: Arc<rustls::ServerConfig>,
) -> Option<Accepted> {
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().ok();
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%peer, "control plane TLS handshake failed: {e}");
            return None;
        }
        Err(_) => {
            tracing::warn!(%peer, "control plane TLS handshake timed out");
            return None;
        }
    };
    let id = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| spiffe_id_of(c).ok());
    tracing::info!(%peer, identity = id.as_deref().unwrap_or("none"), "control stream client connected over TLS");
    let info = PeerInfo {
        remote: peer,
        local,
        identity: id.map(Arc::from),
    };
    Some(Accepted::new(Box::new(stream), info))
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_of_an_authority_drops_the_port_and_brackets() {
        assert_eq!(host_of("cp.internal:18000"), "cp.internal");
        assert_eq!(host_of("[::1]:18000"), "::1");
        assert_eq!(host_of("cp.internal"), "cp.internal");
    }
}
