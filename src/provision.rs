//! Provisioning a federation on disk (`federation init`, the demo, tests):
//! a CA, and for each node a directory with its `node.toml`, TLS identity,
//! signing key, operator certificate, the CA and the shared directory file.
//! Private keys are written mode 0600.

pub mod secretariat;

use std::path::{Path, PathBuf};

use crate::config::{
    RawAudit, RawDelivery, RawDns, RawExchange, RawLimits, RawMetrics, RawNodeConfig, RawSigning,
    RawTls,
};
use crate::crypto::pki::{FederationCa, PkiError};
use crate::crypto::signing::{KeyError, NodeKey, encode_public_key, write_private_file};
use crate::directory::{RawDirectory, RawKey, RawNode};
use crate::identity::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "--node {0:?}: expected ID=CC[,CC...] such as FR-PDC=FR (ID= for a node serving no country)"
    )]
    BadNodeSpec(String),
    #[error("node {0} is listed twice")]
    Duplicate(String),
    #[error("fallback {0} is not one of the nodes")]
    UnknownFallback(String),
    #[error("--relay names {0}, which is not one of the nodes")]
    UnknownRelay(String),
    #[error("--relay {0:?}: expected NODE=RELAY such as MT-NET=IT-NET")]
    BadRelaySpec(String),
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find a free loopback port")]
    Port(#[source] std::io::Error),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot serialise configuration")]
    Toml(#[from] toml::ser::Error),
    #[error("node {0} is not in the directory")]
    UnknownNode(String),
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error(transparent)]
    Directory(#[from] crate::directory::DirectoryError),
    #[error("not published: nodes would refuse this version: {0}")]
    Refused(crate::directory::signed::Refusal),
    #[error("--name must be 1-64 of A-Z, a-z, 0-9, '.', '_', '-'")]
    BadOperatorName,
}

/// One node to provision.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: NodeId,
    pub countries: Vec<String>,
    /// Categories accepted; empty means all.
    pub categories: Vec<String>,
    /// Loopback port; `None` picks a free one.
    pub port: Option<u16>,
}

impl NodeSpec {
    /// Parses `ID=CC[,CC...]`.
    pub fn parse(spec: &str) -> Result<Self, ProvisionError> {
        let bad = || ProvisionError::BadNodeSpec(spec.to_owned());
        let (id, ccs) = spec.split_once('=').ok_or_else(bad)?;
        let id = NodeId::new(id).map_err(|_| bad())?;
        let mut countries = Vec::new();
        for cc in ccs.split(',').filter(|c| !c.is_empty()) {
            let cc = cc.to_ascii_uppercase();
            if cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(bad());
            }
            countries.push(cc);
        }
        Ok(NodeSpec {
            id,
            countries,
            categories: Vec::new(),
            port: None,
        })
    }
}

/// How long a CRL written by `init` or `revoke` stays valid. A node refuses
/// every handshake once its CRL has expired, so the CA operator re-issues
/// (`federation revoke` with no new certificate) well before.
pub const CRL_VALIDITY: time::Duration = time::Duration::days(365);

pub struct Provisioned {
    /// `DIR/<ID>/node.toml` for each node, in the order given.
    pub configs: Vec<PathBuf>,
}

/// Options for the per-node configurations.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub fallback: Option<NodeId>,
    pub delivery: Option<RawDelivery>,
    pub audit: Option<RawAudit>,
    /// `[metrics] listen` for every node (e.g. `127.0.0.1:0` in tests).
    pub metrics_listen: Option<String>,
    pub limits: Option<RawLimits>,
    /// `(node, relay)`: the node is reached through the relay (directory
    /// `relay = "..."`).
    pub relays: Vec<(NodeId, NodeId)>,
    /// A signed directory (`secretariat`): the directory keys are made,
    /// version 1 is published, and each node reads `directory.signed`.
    pub signed_directory: bool,
    /// `[exchange]` for every node.
    pub exchange: Option<RawExchange>,
    /// `[dns]` for every node: `federation init` writes `system`; the
    /// demo and tests point their nodes at their own server on loopback.
    pub dns: RawDns,
}

/// Writes a federation of `nodes` into `dir`: the CA and its CRL, the
/// shared directory, and a folder per node with everything it needs to
/// start. Nothing is written when the nodes or options do not agree.
pub fn init(
    dir: &Path,
    federation: &str,
    nodes: &[NodeSpec],
    options: &Options,
) -> Result<Provisioned, ProvisionError> {
    check_nodes(nodes, options)?;
    mkdir(dir)?;
    let (ca, crl) = write_ca(dir, federation)?;
    let mut ports = Vec::with_capacity(nodes.len());
    for n in nodes {
        ports.push(match n.port {
            Some(p) => p,
            None => free_port()?,
        });
    }
    let keys: Vec<NodeKey> = nodes.iter().map(|_| NodeKey::generate()).collect();
    let directory_toml = directory_toml(federation, nodes, &ports, &keys, options)?;
    write(&dir.join("directory.toml"), directory_toml.as_bytes())?;
    let (directory_file, directory_bytes) = if options.signed_directory {
        secretariat::init_keys(dir)?;
        let published = secretariat::publish(dir, &Default::default())?;
        (
            secretariat::SIGNED,
            read_text(&published.path)?.into_bytes(),
        )
    } else {
        ("directory.toml", directory_toml.into_bytes())
    };

    let mut configs = Vec::with_capacity(nodes.len());
    for ((n, port), key) in nodes.iter().zip(&ports).zip(&keys) {
        let nd = dir.join(n.id.as_str());
        mkdir(&nd)?;
        write(&nd.join("ca.pem"), ca.cert_pem.as_bytes())?;
        write(&nd.join("crl.pem"), crl.as_bytes())?;
        write(&nd.join(directory_file), &directory_bytes)?;
        write_certificates(&nd, &n.id, &ca)?;
        key.save(&nd.join("signing.key"))?;
        let text = node_toml(n, *port, options)?;
        let path = nd.join("node.toml");
        write(&path, text.as_bytes())?;
        configs.push(path);
    }
    Ok(Provisioned { configs })
}

/// Refuses, before anything is written, a node listed twice and a
/// fallback or relay that is not one of the nodes.
fn check_nodes(nodes: &[NodeSpec], options: &Options) -> Result<(), ProvisionError> {
    for (i, n) in nodes.iter().enumerate() {
        if nodes[..i].iter().any(|m| m.id == n.id) {
            return Err(ProvisionError::Duplicate(n.id.to_string()));
        }
    }
    if let Some(f) = &options.fallback
        && !nodes.iter().any(|n| &n.id == f)
    {
        return Err(ProvisionError::UnknownFallback(f.to_string()));
    }
    for (node, via) in &options.relays {
        for id in [node, via] {
            if !nodes.iter().any(|n| &n.id == id) {
                return Err(ProvisionError::UnknownRelay(id.to_string()));
            }
        }
    }
    Ok(())
}

/// Makes the federation's CA and writes `DIR/ca.pem`, `DIR/ca.key` and an
/// empty CRL `DIR/crl.pem`; returns the CA and the CRL, which every node
/// gets a copy of.
fn write_ca(dir: &Path, federation: &str) -> Result<(FederationCa, String), ProvisionError> {
    let ca = FederationCa::generate(federation)?;
    write(&dir.join("ca.pem"), ca.cert_pem.as_bytes())?;
    // The CA key stays with whoever runs the federation's CA (`federation
    // revoke` needs it); nodes never need it.
    write_secret(&dir.join("ca.key"), ca.key_pem().as_bytes())?;
    let crl = ca.crl(&[], 1, CRL_VALIDITY)?;
    write(&dir.join("crl.pem"), crl.as_bytes())?;
    Ok((ca, crl))
}

/// The shared `directory.toml`: each node on its loopback port with its
/// signing key, and its relay if it has one.
fn directory_toml(
    federation: &str,
    nodes: &[NodeSpec],
    ports: &[u16],
    keys: &[NodeKey],
    options: &Options,
) -> Result<String, ProvisionError> {
    let directory = RawDirectory {
        federation: federation.to_owned(),
        nodes: nodes
            .iter()
            .zip(ports)
            .zip(keys)
            .map(|((n, port), key)| RawNode {
                relay: options
                    .relays
                    .iter()
                    .find(|(node, _)| node == &n.id)
                    .map(|(_, via)| via.to_string()),
                id: n.id.to_string(),
                name: String::new(),
                countries: n.countries.clone(),
                endpoint: format!("https://127.0.0.1:{port}"),
                categories: n.categories.clone(),
                active: true,
                keys: vec![RawKey {
                    id: key.key_id().to_owned(),
                    public_key: encode_public_key(&key.verifying_key()),
                    not_before: None,
                    not_after: None,
                    revoked: false,
                }],
                national_categories: Vec::new(),
            })
            .collect(),
    };
    Ok(format!(
        "# The federation directory: every node, its countries, endpoint and signing keys.\n\
         # Give the same file to every node.\n{}",
        toml::to_string_pretty(&directory)?
    ))
}

/// A node's certificates from the CA, each beside its private key: its TLS
/// identity (`node`), its analyst's (`operator`) and its admin's (`admin`).
fn write_certificates(nd: &Path, id: &NodeId, ca: &FederationCa) -> Result<(), ProvisionError> {
    let tls = ca.node_cert(id, &["localhost".to_owned()])?;
    write(&nd.join("node.pem"), tls.cert_pem.as_bytes())?;
    write_secret(&nd.join("node.key"), tls.key_pem.as_bytes())?;
    let op = ca.operator_cert(id, "analyst")?;
    write(&nd.join("operator.pem"), op.cert_pem.as_bytes())?;
    write_secret(&nd.join("operator.key"), op.key_pem.as_bytes())?;
    let admin = ca.operator_cert_with_role(id, "admin", crate::identity::Role::Admin)?;
    write(&nd.join("admin.pem"), admin.cert_pem.as_bytes())?;
    write_secret(&nd.join("admin.key"), admin.key_pem.as_bytes())?;
    Ok(())
}

/// A node's `node.toml`, with paths relative to its folder (the files
/// `init` writes there) and the fallback unless the node is it.
fn node_toml(n: &NodeSpec, port: u16, options: &Options) -> Result<String, ProvisionError> {
    let client = |name: &str| RawTls {
        ca: None,
        cert: format!("{name}.pem"),
        key: format!("{name}.key"),
        crls: Vec::new(),
    };
    let raw = RawNodeConfig {
        node_id: n.id.to_string(),
        listen: format!("127.0.0.1:{port}"),
        database: "node.db".into(),
        directory: if options.signed_directory {
            secretariat::SIGNED.into()
        } else {
            "directory.toml".into()
        },
        fallback: options
            .fallback
            .as_ref()
            .filter(|f| *f != &n.id)
            .map(|f| f.to_string()),
        tls: RawTls {
            ca: Some("ca.pem".into()),
            cert: "node.pem".into(),
            key: "node.key".into(),
            crls: vec!["crl.pem".into()],
        },
        signing: RawSigning {
            key: "signing.key".into(),
        },
        operator: Some(client("operator")),
        admin: Some(client("admin")),
        delivery: options.delivery.clone().unwrap_or_default(),
        limits: options.limits.clone().unwrap_or_default(),
        audit: options.audit.clone().unwrap_or_default(),
        metrics: RawMetrics {
            listen: options.metrics_listen.clone(),
        },
        health: Default::default(),
        exchange: options.exchange.clone().unwrap_or_default(),
        notice: None,
        fallback_for: Vec::new(),
        geo: Default::default(),
        dns: options.dns.clone(),
        jurisdiction: Default::default(),
        retention: Default::default(),
        console: None,
        cases: Default::default(),
        alerts: Default::default(),
    };
    Ok(format!(
        "# alertrelay node {} (written by `alertrelay federation init`).\n\
         # Paths are relative to this file. docs/node.example.toml explains every key.\n{}",
        n.id,
        toml::to_string_pretty(&raw)?
    ))
}

fn read_text(p: &Path) -> Result<String, ProvisionError> {
    std::fs::read_to_string(p).map_err(|source| ProvisionError::Write {
        path: p.display().to_string(),
        source,
    })
}

fn free_port() -> Result<u16, ProvisionError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(ProvisionError::Port)?;
    Ok(l.local_addr().map_err(ProvisionError::Port)?.port())
}

fn mkdir(p: &Path) -> Result<(), ProvisionError> {
    std::fs::create_dir_all(p).map_err(|source| ProvisionError::Write {
        path: p.display().to_string(),
        source,
    })
}

fn write(p: &Path, bytes: &[u8]) -> Result<(), ProvisionError> {
    std::fs::write(p, bytes).map_err(|source| ProvisionError::Write {
        path: p.display().to_string(),
        source,
    })
}

fn write_secret(p: &Path, bytes: &[u8]) -> Result<(), ProvisionError> {
    write_private_file(p, bytes).map_err(|source| ProvisionError::Write {
        path: p.display().to_string(),
        source,
    })
}

/// Issues a personal operator certificate for one person of `node`'s
/// hotline (`federation operator issue`), signed by the federation CA in
/// `dir`: written as `dir/<NODE>/operators/<name>.pem` and `.key` (mode
/// 0600). Returns the two paths. The node reads the person's name and role
/// from it, so the audit log names that person for every call.
pub fn issue_operator(
    dir: &Path,
    node: &NodeId,
    name: &str,
    role: crate::identity::Role,
) -> Result<(PathBuf, PathBuf), ProvisionError> {
    if !crate::identity::valid_operator_name(name) {
        return Err(ProvisionError::BadOperatorName);
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| ProvisionError::Write {
            path: p.display().to_string(),
            source,
        })
    };
    let directory = crate::directory::Directory::load(&dir.join("directory.toml"))?;
    if directory.node(node).is_none() {
        return Err(ProvisionError::UnknownNode(node.to_string()));
    }
    let ca = FederationCa::load(
        &directory.federation,
        &read(&dir.join("ca.pem"))?,
        &read(&dir.join("ca.key"))?,
    )?;
    let cert = ca.operator_cert_with_role(node, name, role)?;
    let out = dir.join(node.as_str()).join("operators");
    mkdir(&out)?;
    let (cert_path, key_path) = (
        out.join(format!("{name}.pem")),
        out.join(format!("{name}.key")),
    );
    write(&cert_path, cert.cert_pem.as_bytes())?;
    write_secret(&key_path, cert.key_pem.as_bytes())?;
    Ok((cert_path, key_path))
}

/// Revokes certificates of a federation written by `init`: re-issues
/// `DIR/crl.pem` (with every serial revoked so far) and copies it into each
/// node folder. Nodes pick it up on SIGHUP or `alertrelay reload` (or, with
/// a signed directory, from its next published version).
pub fn revoke(dir: &Path, certs: &[&Path]) -> Result<usize, ProvisionError> {
    let (count, crl) = reissue_crl(dir, certs)?;
    let nodes = std::fs::read_dir(dir).map_err(|source| ProvisionError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    for n in nodes.flatten() {
        if n.path().join("node.toml").exists() {
            write(&n.path().join("crl.pem"), crl.as_bytes())?;
        }
    }
    Ok(count)
}

/// Adds `certs` to the revoked certificates kept in `DIR/revoked/` and
/// re-issues `DIR/crl.pem`; returns how many are revoked, and the CRL.
fn reissue_crl(dir: &Path, certs: &[&Path]) -> Result<(usize, String), ProvisionError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| ProvisionError::Write {
            path: p.display().to_string(),
            source,
        })
    };
    // The federation name only matters for minting leaves, not CRLs.
    let ca = FederationCa::load("", &read(&dir.join("ca.pem"))?, &read(&dir.join("ca.key"))?)?;
    // The list of revoked certificates is kept beside the CA.
    let revoked_dir = dir.join("revoked");
    mkdir(&revoked_dir)?;
    for cert in certs {
        let pem = read(cert)?;
        let serial = hex::encode(crate::crypto::pki::serial_of(&pem)?);
        write(&revoked_dir.join(format!("{serial}.pem")), pem.as_bytes())?;
    }
    let mut all = Vec::new();
    let entries = std::fs::read_dir(&revoked_dir).map_err(|source| ProvisionError::Write {
        path: revoked_dir.display().to_string(),
        source,
    })?;
    for e in entries.flatten() {
        all.push(read(&e.path())?);
    }
    // CRL numbers must increase: milliseconds since the epoch do (two
    // revocations within one second each get a newer number).
    let number = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let crl = ca.crl(&refs, number, CRL_VALIDITY)?;
    write(&dir.join("crl.pem"), crl.as_bytes())?;
    Ok((all.len(), crl))
}
