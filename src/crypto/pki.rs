//! Minting the federation's X.509 material: the CA, node certificates and
//! operator certificates. Used by `federation init`, the demo and the tests;
//! a production federation may use its own CA tooling as long as the
//! certificates carry the same SPIFFE URI SANs.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::identity::{NodeId, Role, node_uri, operator_uri};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed")]
    Rcgen(#[from] rcgen::Error),
    #[error("not a PEM certificate")]
    NotACertificate,
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertifiedPem {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The federation certificate authority.
pub struct FederationCa {
    pub federation: String,
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
    pub cert_pem: String,
}

impl FederationCa {
    pub fn generate(federation: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(&format!("{federation} federation CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(FederationCa {
            federation: federation.to_owned(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA written by `federation init` (its certificate and key).
    pub fn load(federation: &str, cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(FederationCa {
            federation: federation.to_owned(),
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            key_pem: key_pem.to_owned(),
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// The CA's private key, PEM: keep it offline, mode 0600.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate revocation list revoking these certificates (PEM),
    /// valid for `valid_for`.
    pub fn crl(
        &self,
        revoked_cert_pems: &[&str],
        number: u64,
        valid_for: Duration,
    ) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut revoked = Vec::new();
        for pem in revoked_cert_pems {
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial_of(pem)?),
                revocation_time: now - Duration::minutes(1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(1),
            next_update: now + valid_for,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// A node's TLS certificate: URI SAN `spiffe://<federation>/hotline/<id>`,
    /// plus DNS `localhost` and IP 127.0.0.1 so loopback endpoints verify.
    pub fn node_cert(&self, node: &NodeId, dns_names: &[String]) -> Result<CertifiedPem, PkiError> {
        let mut sans = vec![SanType::URI(node_uri(&self.federation, node).try_into()?)];
        for name in dns_names {
            sans.push(SanType::DnsName(name.clone().try_into()?));
        }
        sans.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        self.leaf(
            &format!("hotline {node}"),
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Duration::days(825),
        )
    }

    /// An analyst's client certificate for `node`'s hotline.
    pub fn operator_cert(&self, node: &NodeId, name: &str) -> Result<CertifiedPem, PkiError> {
        self.operator_cert_with_role(node, name, Role::Analyst)
    }

    /// An operator's client certificate with a role.
    pub fn operator_cert_with_role(
        &self,
        node: &NodeId,
        name: &str,
        role: Role,
    ) -> Result<CertifiedPem, PkiError> {
        let sans = vec![SanType::URI(
            operator_uri(&self.federation, node, name, role).try_into()?,
        )];
        self.leaf(
            &format!("operator {name} of {node}"),
            sans,
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            Duration::days(365),
        )
    }

    /// A leaf with arbitrary SANs and validity: for tests of what the node
    /// must refuse (expired, several URI SANs, ...).
    pub fn custom_leaf(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        is_ca: bool,
    ) -> Result<CertifiedPem, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(common_name);
        params.subject_alt_names = sans;
        params.not_before = not_before;
        params.not_after = not_after;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        self.sign(params)
    }

    fn leaf(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        ekus: Vec<ExtendedKeyUsagePurpose>,
        lifetime: Duration,
    ) -> Result<CertifiedPem, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(common_name);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = ekus;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + lifetime;
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<CertifiedPem, PkiError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The serial number of a PEM certificate.
pub fn serial_of(cert_pem: &str) -> Result<Vec<u8>, PkiError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::*;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|_| PkiError::NotACertificate)?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|_| PkiError::NotACertificate)?;
    Ok(cert.raw_serial().to_vec())
}

/// The CRL number of a PEM certificate revocation list (RFC 5280
/// 5.2.3), or `None` when it is not a CRL or carries no number. CRL
/// numbers only grow: of two CRLs of one CA, the higher is the newer.
pub fn crl_number(crl_pem: &str) -> Option<u128> {
    use rustls::pki_types::CertificateRevocationListDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::*;
    let der = CertificateRevocationListDer::from_pem_slice(crl_pem.as_bytes()).ok()?;
    let (_, crl) = CertificateRevocationList::from_der(&der).ok()?;
    let bytes = crl.crl_number()?.to_bytes_be();
    if bytes.len() > 16 {
        return None;
    }
    Some(bytes.iter().fold(0u128, |n, b| (n << 8) | u128::from(*b)))
}
