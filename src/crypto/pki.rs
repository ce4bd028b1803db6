//! Minting the federation's X.509 material: the CA, node certificates and
//! operator certificates. Used by `federation init`, the demo and the tests;
//! a production federation may use its own CA tooling as long as the
//! certificates carry the same SPIFFE URI SANs.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::identity::{NodeId, node_uri, operator_uri};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed")]
    Rcgen(#[from] rcgen::Error),
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
    params: CertificateParams,
    key: KeyPair,
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
            params,
            key,
        })
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

    /// An operator's client certificate for `node`'s hotline.
    pub fn operator_cert(&self, node: &NodeId, name: &str) -> Result<CertifiedPem, PkiError> {
        let sans = vec![SanType::URI(
            operator_uri(&self.federation, node, name).try_into()?,
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
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
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
