//! Who is who: node ids, and the identity a TLS client certificate proves
//! (a peer node or one of this hotline's operators), from its SPIFFE URI SAN.
//!
//! Node certificates carry `spiffe://<federation>/hotline/<NODE-ID>`; operator
//! certificates `spiffe://<federation>/operator/<NODE-ID>/<name>` (an
//! analyst), `.../<name>/supervisor` (a supervisor) or `.../<name>/admin`
//! (an administrator of the node). A
//! certificate with anything but exactly one URI SAN, or that is itself a CA,
//! proves nothing.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated node id: 2–32 of `A-Z 0-9 -`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "node id {0} must be 2-32 characters of A-Z, 0-9 and '-', starting with a letter or digit"
    )]
    BadNodeId(String),
    #[error("certificate could not be parsed")]
    Unparsable,
    #[error("certificate is a CA certificate, not a leaf")]
    LeafIsCa,
    #[error("certificate must carry exactly one URI SAN, found {0}")]
    UriSanCount(usize),
    #[error("certificate URI {0:?} is not a SPIFFE id of this federation")]
    ForeignUri(String),
    #[error("certificate URI {0:?} names no hotline or operator")]
    BadUri(String),
}

impl NodeId {
    pub fn new(s: &str) -> Result<Self, IdentityError> {
        let ok = (2..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-');
        if ok {
            Ok(NodeId(s.to_owned()))
        } else {
            Err(IdentityError::BadNodeId(shown(s)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = IdentityError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeId::new(&s)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// What a verified client certificate proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// A federation node (hotline).
    Node(NodeId),
    /// An operator of `node`'s hotline, with a role.
    Operator {
        node: NodeId,
        name: String,
        role: Role,
    },
}

/// What an operator may do. Analysts submit and work cases; supervisors
/// also see the federation's state and confirm what needs a second person;
/// admins also manage the node (reload keys, certificates, CRLs and the
/// directory) and its people's accounts. Ordered: each role may do what
/// the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Analyst,
    Supervisor,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "analyst" => Some(Role::Analyst),
            "supervisor" => Some(Role::Supervisor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Analyst => "analyst",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl PeerIdentity {
    /// The role of an operator; none for a node.
    pub fn role(&self) -> Option<Role> {
        match self {
            PeerIdentity::Operator { role, .. } => Some(*role),
            PeerIdentity::Node(_) => None,
        }
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerIdentity::Node(id) => write!(f, "node:{id}"),
            PeerIdentity::Operator {
                node,
                name,
                role: Role::Analyst,
            } => write!(f, "operator:{node}/{name}"),
            PeerIdentity::Operator {
                node,
                name,
                role: Role::Supervisor,
            } => write!(f, "supervisor:{node}/{name}"),
            PeerIdentity::Operator {
                node,
                name,
                role: Role::Admin,
            } => write!(f, "admin:{node}/{name}"),
        }
    }
}

pub fn node_uri(federation: &str, node: &NodeId) -> String {
    format!("spiffe://{federation}/hotline/{node}")
}

pub fn operator_uri(federation: &str, node: &NodeId, name: &str, role: Role) -> String {
    match role {
        Role::Analyst => format!("spiffe://{federation}/operator/{node}/{name}"),
        Role::Supervisor => {
            format!("spiffe://{federation}/operator/{node}/{name}/supervisor")
        }
        Role::Admin => format!("spiffe://{federation}/operator/{node}/{name}/admin"),
    }
}

/// Reads the identity out of a DER certificate that rustls has already
/// verified against the federation CA.
pub fn identity_from_cert(der: &[u8], federation: &str) -> Result<PeerIdentity, IdentityError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Unparsable)?;
    if let Ok(Some(bc)) = cert.basic_constraints()
        && bc.value.ca
    {
        return Err(IdentityError::LeafIsCa);
    }
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(_) => return Err(IdentityError::Unparsable),
    };
    let [uri] = uris.as_slice() else {
        return Err(IdentityError::UriSanCount(uris.len()));
    };
    parse_spiffe(uri, federation)
}

fn parse_spiffe(uri: &str, federation: &str) -> Result<PeerIdentity, IdentityError> {
    let prefix = format!("spiffe://{federation}/");
    let rest = uri
        .strip_prefix(&prefix)
        .ok_or_else(|| IdentityError::ForeignUri(uri.to_owned()))?;
    let bad = || IdentityError::BadUri(uri.to_owned());
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["hotline", id] => Ok(PeerIdentity::Node(NodeId::new(id).map_err(|_| bad())?)),
        ["operator", id, name] if valid_operator_name(name) => Ok(PeerIdentity::Operator {
            node: NodeId::new(id).map_err(|_| bad())?,
            name: (*name).to_owned(),
            role: Role::Analyst,
        }),
        ["operator", id, name, role @ ("supervisor" | "admin")] if valid_operator_name(name) => {
            Ok(PeerIdentity::Operator {
                node: NodeId::new(id).map_err(|_| bad())?,
                name: (*name).to_owned(),
                role: Role::parse(role).ok_or_else(bad)?,
            })
        }
        _ => Err(bad()),
    }
}

pub fn valid_operator_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// How an untrusted identifier (a node id, a key id, a report id) appears
/// in error messages, logs and audit entries: quoted when it has an
/// identifier's shape (1-64 of `A-Z a-z 0-9 . _ -`, so never a URL, a host
/// name with a path, or an escape sequence), otherwise only its length.
pub fn shown(s: &str) -> String {
    let id_shaped = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if id_shaped {
        format!("{s:?}")
    } else {
        format!("(a value of {} bytes, not shown)", s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_validated() {
        assert!(NodeId::new("FR-PDC").is_ok());
        assert!(NodeId::new("de-eco").is_err());
        assert!(NodeId::new("-X").is_err());
        assert!(NodeId::new("X").is_err());
        assert!(NodeId::new("A/B").is_err());
    }

    #[test]
    fn spiffe_uris_name_nodes_and_operators_of_this_federation_only() {
        let fr = NodeId::new("FR-PDC").unwrap();
        assert_eq!(
            parse_spiffe("spiffe://fed/hotline/FR-PDC", "fed"),
            Ok(PeerIdentity::Node(fr.clone()))
        );
        assert_eq!(
            parse_spiffe("spiffe://fed/operator/FR-PDC/alice", "fed"),
            Ok(PeerIdentity::Operator {
                node: fr.clone(),
                name: "alice".into(),
                role: Role::Analyst,
            })
        );
        assert_eq!(
            parse_spiffe("spiffe://fed/operator/FR-PDC/bob/admin", "fed"),
            Ok(PeerIdentity::Operator {
                node: fr,
                name: "bob".into(),
                role: Role::Admin,
            })
        );
        assert_eq!(
            parse_spiffe("spiffe://fed/operator/FR-PDC/carol/supervisor", "fed")
                .map(|p| p.to_string()),
            Ok("supervisor:FR-PDC/carol".to_owned())
        );
        assert!(parse_spiffe("spiffe://fed/operator/FR-PDC/bob/root", "fed").is_err());
        assert!(matches!(
            parse_spiffe("spiffe://other/hotline/FR-PDC", "fed"),
            Err(IdentityError::ForeignUri(_))
        ));
        assert!(matches!(
            parse_spiffe("spiffe://fed/hotline/FR-PDC/extra", "fed"),
            Err(IdentityError::BadUri(_))
        ));
        assert!(matches!(
            parse_spiffe("spiffe://fed/admin/FR-PDC", "fed"),
            Err(IdentityError::BadUri(_))
        ));
    }
}
