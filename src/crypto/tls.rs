//! rustls configurations: TLS 1.3 only, mutual authentication against the
//! federation CA, ALPN h2. Server and client side, and the client's
//! connection that checks a peer's certificate names the node we meant to
//! reach (`federation::channel` builds gRPC channels on it).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::crypto::signing::{PrivateFileError, check_private_file};
use crate::identity::{NodeId, PeerIdentity, identity_from_cert};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key")]
    NoKey { path: String },
    #[error("private key {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    Permissions { path: String, mode: u32 },
    #[error("TLS configuration refused")]
    Rustls(#[from] rustls::Error),
    #[error("certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("{path} holds no PEM certificate revocation list")]
    NoCrl { path: String },
}

/// The PEM files of one TLS identity.
#[derive(Debug, Clone)]
pub struct TlsFiles<'a> {
    pub ca: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
    /// Certificate revocation lists of the federation CA. When given, every
    /// peer certificate is checked against them, and an expired CRL fails
    /// the handshake (it is never silently accepted).
    pub crls: &'a [std::path::PathBuf],
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let shown = path.display().to_string();
    check_private_file(path).map_err(|e| match e {
        PrivateFileError::Io(source) => TlsError::Read {
            path: shown.clone(),
            source,
        },
        PrivateFileError::Mode(mode) => TlsError::Permissions {
            path: shown.clone(),
            mode,
        },
    })?;
    let pem = zeroize::Zeroizing::new(read(path)?);
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoKey { path: shown })
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

fn load_crls(
    paths: &[std::path::PathBuf],
) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for path in paths {
        let pem = read(path)?;
        let crls: Vec<_> = rustls::pki_types::CertificateRevocationListDer::pem_slice_iter(&pem)
            .filter_map(Result::ok)
            .collect();
        if crls.is_empty() {
            return Err(TlsError::NoCrl {
                path: path.display().to_string(),
            });
        }
        out.extend(crls);
    }
    Ok(out)
}

/// The check a client certificate must pass: chains to the federation CA,
/// not revoked by its CRLs (and those not expired), and proves exactly one
/// identity of this federation (one SPIFFE URI SAN, not a CA).
pub fn client_verifier(
    files: &TlsFiles<'_>,
    federation: &str,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(files.ca)?), provider());
    let crls = load_crls(files.crls)?;
    if !crls.is_empty() {
        builder = builder.with_crls(crls).enforce_revocation_expiration();
    }
    Ok(Arc::new(IdentityVerifier {
        inner: builder.build()?,
        federation: federation.to_owned(),
    }))
}

/// WebPKI verification, then: the leaf must name exactly one node or
/// operator of this federation, or the handshake fails.
#[derive(Debug)]
struct IdentityVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    federation: String,
}

impl rustls::server::danger::ClientCertVerifier for IdentityVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        identity_from_cert(end_entity, &self.federation).map_err(|_| {
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )
        })?;
        Ok(verified)
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

/// Server side: TLS 1.3 only, a client certificate from the federation CA is
/// mandatory (no certificate, or another CA, or a revoked one, fails the
/// handshake).
pub fn server_config(
    files: &TlsFiles<'_>,
    federation: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with(files, client_verifier(files, federation)?)
}

pub fn server_config_with(
    files: &TlsFiles<'_>,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(files.cert)?, load_key(files.key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The web console's server side, for browsers: TLS 1.3 (no
/// client certificate: people log in with a password and a TOTP code),
/// ALPN http/1.1.
pub fn browser_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client side: TLS 1.3 only, presenting our certificate, trusting only the
/// federation CA.
pub fn client_config(files: &TlsFiles<'_>) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let mut builder = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots(files.ca)?),
        provider.clone(),
    );
    let crls = load_crls(files.crls)?;
    if !crls.is_empty() {
        builder = builder.with_crls(crls).enforce_revocation_expiration();
    }
    let verifier = builder.build()?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(load_certs(files.cert)?, load_key(files.key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client for DNS over TLS to resolvers whose certificates chain to the
/// CA certificates in `ca` (instead of the Mozilla roots): no client
/// certificate; the resolver's name is checked by the resolver library.
pub fn dns_client_config(ca: &Path) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth())
}

/// A client TLS configuration that can be swapped at run time (reload):
/// each new connection uses the current one.
pub type ClientTls = Arc<std::sync::RwLock<Arc<ClientConfig>>>;

/// Connects over TCP to `uri`'s host and port and completes the TLS
/// handshake with `tls`, refusing the connection unless the server's
/// certificate names `expected` (when given).
pub async fn connect(
    uri: http::Uri,
    tls: Arc<ClientConfig>,
    expected: Option<NodeId>,
    federation: &str,
) -> std::io::Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>
{
    use std::io::{Error, ErrorKind};
    let host = uri
        .host()
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "endpoint has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(host)
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "endpoint host is not a valid name"))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    if let Some(expected) = expected {
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| Error::new(ErrorKind::PermissionDenied, "peer sent no certificate"))?;
        match identity_from_cert(leaf, federation) {
            Ok(PeerIdentity::Node(id)) if id == expected => {}
            _ => {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!("peer certificate does not name node {expected}"),
                ));
            }
        }
    }
    Ok(hyper_util::rt::TokioIo::new(stream))
}

/// When the first certificate in the PEM file `path` expires, in unix
/// milliseconds; None when the file cannot be read or parsed.
pub fn certificate_not_after_ms(path: &Path) -> Option<i64> {
    let certs = load_certs(path).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?).ok()?;
    Some(cert.validity().not_after.timestamp() * 1000)
}

/// When the CRL in the PEM file `path` is due to be replaced (its
/// `nextUpdate`), in unix milliseconds; None when it has none or the file
/// cannot be read or parsed.
pub fn crl_next_update_ms(path: &Path) -> Option<i64> {
    use rustls::pki_types::CertificateRevocationListDer;
    let pem = std::fs::read(path).ok()?;
    let der = CertificateRevocationListDer::pem_slice_iter(&pem)
        .next()?
        .ok()?;
    let (_, crl) = x509_parser::parse_x509_crl(&der).ok()?;
    Some(crl.next_update()?.timestamp() * 1000)
}
