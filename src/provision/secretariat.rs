//! The federation's secretariat: its folder (written by `federation
//! init`) holds the CA (`ca.pem`, `ca.key`, `crl.pem`), the directory's
//! source (`directory.toml`), the directory keys (`directory.key`, kept
//! offline like `ca.key`, and `directory-keys.toml`: which keys sign and
//! how many must) and the latest signed version (`directory.signed`).
//! `publish` signs a new version; each lifecycle command (join, leave,
//! suspend, reinstate, rotate a signing key, rotate a TLS certificate)
//! edits the source and publishes, in one step. Nodes learn the new
//! version from each other (`federation::exchange`): nothing is copied by
//! hand to the other nodes.

use std::path::{Path, PathBuf};

use super::{
    NodeSpec, Options, ProvisionError, mkdir, read_text, write, write_certificates, write_secret,
};
use crate::crypto::pki::FederationCa;
use crate::crypto::signing::{NodeKey, encode_public_key};
use crate::directory::signed::{
    self, NewVersion, RawDirectoryKey, RawDirectoryKeys, SignedDirectory, Verdict,
};
use crate::directory::{Directory, RawDirectory, RawKey, RawNode};
use crate::identity::NodeId;

/// The directory key of a federation with one (`init`).
pub const DIRECTORY_KEY: &str = "directory.key";
/// The directory keys and their threshold (TUF's root role).
pub const DIRECTORY_KEYS: &str = "directory-keys.toml";
/// The latest signed version, as published.
pub const SIGNED: &str = "directory.signed";
/// How long a published version is accepted by default. Nodes refuse an
/// expired version, so a federation whose exchange is frozen by an
/// attacker notices within this time; publish again before it ends.
pub const DEFAULT_VALIDITY: time::Duration = time::Duration::days(90);

/// Writes `DIR/directory.key` (mode 0600) and `DIR/directory-keys.toml`
/// naming it, threshold 1.
pub fn init_keys(dir: &Path) -> Result<(), ProvisionError> {
    let key = NodeKey::generate();
    key.save(&dir.join(DIRECTORY_KEY))?;
    write_keys(dir, &one_key(&key, Vec::new()))
}

/// A directory key set of one key, threshold 1.
fn one_key(key: &NodeKey, retired: Vec<String>) -> RawDirectoryKeys {
    RawDirectoryKeys {
        threshold: 1,
        keys: vec![RawDirectoryKey {
            id: key.key_id().to_owned(),
            public_key: encode_public_key(&key.verifying_key()),
        }],
        retired,
    }
}

/// Writes `DIR/directory-keys.toml`.
fn write_keys(dir: &Path, keys: &RawDirectoryKeys) -> Result<(), ProvisionError> {
    write(
        &dir.join(DIRECTORY_KEYS),
        format!(
            "# The directory keys: `threshold` of them must sign each version of the directory.\n\
             # Nodes refuse a version that drops a key they trust, unless it lists the key in\n\
             # `retired` and is signed by both the old keys and the new (`rotate-directory-key`).\n{}",
            toml::to_string_pretty(keys)?
        )
        .as_bytes(),
    )
}

/// The directory key replaced (TUF's root rotation): a new key is made,
/// the old keys are listed as retired, and the version is signed by the
/// old keys (`how.keys`, or `DIR/directory.key`) and the new one. Every
/// node takes it through the exchange and from then on trusts only the
/// new key; a version signed by the new key alone before that is refused.
/// The new key becomes `DIR/directory.key`; the old one is kept as
/// `DIR/directory.key.retired-<ID>` (destroy it once every node took the
/// new version). Returns the new key's id.
pub fn rotate_directory_key(
    dir: &Path,
    how: &Publish,
) -> Result<(Published, String), ProvisionError> {
    let keys_path = dir.join(DIRECTORY_KEYS);
    let keys_before = read_text(&keys_path)?;
    let old: RawDirectoryKeys = parse(&keys_path)?;
    let new = NodeKey::generate();
    let new_path = dir.join(format!("{DIRECTORY_KEY}.new"));
    new.save(&new_path)?;
    let retired = old.keys.iter().map(|k| k.id.clone()).collect();
    write_keys(dir, &one_key(&new, retired))?;
    let mut signers = if how.keys.is_empty() {
        vec![dir.join(DIRECTORY_KEY)]
    } else {
        how.keys.clone()
    };
    signers.push(new_path.clone());
    let signing = Publish {
        keys: signers,
        valid_for: how.valid_for,
    };
    let published = match publish(dir, &signing) {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::write(&keys_path, keys_before);
            let _ = std::fs::remove_file(&new_path);
            return Err(e);
        }
    };
    let default = dir.join(DIRECTORY_KEY);
    if let Ok(previous) = NodeKey::load(&default) {
        let aside = dir.join(format!("{DIRECTORY_KEY}.retired-{}", previous.key_id()));
        std::fs::rename(&default, &aside).map_err(|e| ProvisionError::Write {
            path: aside.display().to_string(),
            source: e,
        })?;
    }
    std::fs::rename(&new_path, &default).map_err(|e| ProvisionError::Write {
        path: default.display().to_string(),
        source: e,
    })?;
    Ok((published, new.key_id().to_owned()))
}

/// How to sign a version.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The private directory keys to sign with; empty: `DIR/directory.key`.
    pub keys: Vec<PathBuf>,
    pub valid_for: time::Duration,
}

impl Default for Publish {
    fn default() -> Self {
        Publish {
            keys: Vec::new(),
            valid_for: DEFAULT_VALIDITY,
        }
    }
}

/// A version just published.
#[derive(Debug, Clone)]
pub struct Published {
    pub serial: u64,
    pub path: PathBuf,
    pub expires_at_ms: i64,
}

/// Signs a new version of the directory from `DIR/directory.toml`,
/// `DIR/directory-keys.toml` and `DIR/crl.pem`, with the serial after the
/// last published one, and writes it to `DIR/directory.signed`. Nothing is
/// written when nodes would refuse it (too few signatures, a directory key
/// dropped, invalid content).
pub fn publish(dir: &Path, how: &Publish) -> Result<Published, ProvisionError> {
    let source_path = dir.join("directory.toml");
    let source: RawDirectory = parse(&source_path)?;
    Directory::from_raw(source.clone(), &source_path.display().to_string())?;
    let keys: RawDirectoryKeys = parse(&dir.join(DIRECTORY_KEYS))?;
    let previous = previous(dir)?;
    let crl = std::fs::read_to_string(dir.join("crl.pem")).ok();
    let now = now_ms();
    let expires_at_ms = now + how.valid_for.whole_milliseconds() as i64;
    let payload = NewVersion {
        source,
        serial: previous.as_ref().map_or(0, |p| p.serial()) + 1,
        issued_at_ms: now,
        expires_at_ms,
        keys: &keys,
        crl,
    }
    .payload()?;
    let key_paths = if how.keys.is_empty() {
        vec![dir.join(DIRECTORY_KEY)]
    } else {
        how.keys.clone()
    };
    let signers = key_paths
        .iter()
        .map(|p| NodeKey::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let doc = SignedDirectory::sign(payload, &signers.iter().collect::<Vec<_>>());
    let shown = dir.join(SIGNED).display().to_string();
    let opened = signed::open_anchor(&doc, &shown).map_err(ProvisionError::Refused)?;
    if let Some(info) = previous.as_ref().and_then(|p| p.signed.clone()) {
        match signed::check_successor(&info, &opened.federation, &doc, now) {
            Ok(Verdict::Newer(_)) => {}
            Ok(Verdict::Same) => {}
            Err(refusal) => return Err(ProvisionError::Refused(refusal)),
        }
    }
    let path = dir.join(SIGNED);
    write(&path, doc.to_json().as_bytes())?;
    Ok(Published {
        serial: opened.serial(),
        path,
        expires_at_ms,
    })
}

/// The last published version, if any.
fn previous(dir: &Path) -> Result<Option<Directory>, ProvisionError> {
    let path = dir.join(SIGNED);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(Directory::load(&path)?))
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ProvisionError> {
    let text = read_text(path)?;
    toml::from_str(&text).map_err(|e| ProvisionError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Edits `DIR/directory.toml` with `f`, then publishes. The source is
/// written back only when the publication succeeds.
fn edit_and_publish(
    dir: &Path,
    how: &Publish,
    f: impl FnOnce(&mut RawDirectory) -> Result<(), ProvisionError>,
) -> Result<Published, ProvisionError> {
    let path = dir.join("directory.toml");
    let before = read_text(&path)?;
    let mut source: RawDirectory = parse(&path)?;
    f(&mut source)?;
    write(
        &path,
        format!(
            "# The federation directory's source: edit it and run `alertrelay federation publish`.\n{}",
            toml::to_string_pretty(&source)?
        )
        .as_bytes(),
    )?;
    publish(dir, how).inspect_err(|_| {
        let _ = std::fs::write(&path, &before);
    })
}

fn entry<'a>(
    source: &'a mut RawDirectory,
    node: &NodeId,
) -> Result<&'a mut RawNode, ProvisionError> {
    source
        .nodes
        .iter_mut()
        .find(|n| n.id == node.as_str())
        .ok_or_else(|| ProvisionError::UnknownNode(node.to_string()))
}

/// Suspends (`active = false`) or reinstates a node, and publishes: within
/// one exchange interval every node refuses (or again accepts) it.
pub fn set_active(
    dir: &Path,
    node: &NodeId,
    active: bool,
    how: &Publish,
) -> Result<Published, ProvisionError> {
    edit_and_publish(dir, how, |source| {
        entry(source, node)?.active = active;
        Ok(())
    })
}

/// Removes a node from the directory, revokes its TLS certificate when
/// the secretariat holds it (`DIR/<ID>/node.pem`), and publishes.
pub fn leave(dir: &Path, node: &NodeId, how: &Publish) -> Result<Published, ProvisionError> {
    let cert = dir.join(node.as_str()).join("node.pem");
    if cert.exists() {
        super::reissue_crl(dir, &[cert.as_path()])?;
    }
    edit_and_publish(dir, how, |source| {
        entry(source, node)?;
        source.nodes.retain(|n| n.id != node.as_str());
        Ok(())
    })
}

/// A hotline joins: the CA issues its certificates, a signing key is made,
/// its folder `DIR/<ID>/` is written (node.toml and everything it names,
/// with the new version of the directory), the directory lists it, and the
/// version is published. `endpoint` is where peers reach it
/// (`https://127.0.0.1:PORT` on the spec's port by default).
pub fn join(
    dir: &Path,
    spec: &NodeSpec,
    endpoint: Option<String>,
    options: &Options,
    how: &Publish,
) -> Result<Published, ProvisionError> {
    let source: RawDirectory = parse(&dir.join("directory.toml"))?;
    if source.nodes.iter().any(|n| n.id == spec.id.as_str()) {
        return Err(ProvisionError::Duplicate(spec.id.to_string()));
    }
    let port = match spec.port {
        Some(p) => p,
        None => super::free_port()?,
    };
    let nd = dir.join(spec.id.as_str());
    mkdir(&nd)?;
    let ca = FederationCa::load(
        &source.federation,
        &read_text(&dir.join("ca.pem"))?,
        &read_text(&dir.join("ca.key"))?,
    )?;
    write(&nd.join("ca.pem"), ca.cert_pem.as_bytes())?;
    write(
        &nd.join("crl.pem"),
        read_text(&dir.join("crl.pem"))?.as_bytes(),
    )?;
    write_certificates(&nd, &spec.id, &ca)?;
    let key = NodeKey::generate();
    key.save(&nd.join("signing.key"))?;
    let mut options = options.clone();
    options.signed_directory = true;
    let text = super::node_toml(spec, port, &options)?;
    write(&nd.join("node.toml"), text.as_bytes())?;
    let endpoint = endpoint.unwrap_or_else(|| format!("https://127.0.0.1:{port}"));
    let published = edit_and_publish(dir, how, |source| {
        source.nodes.push(RawNode {
            id: spec.id.to_string(),
            name: String::new(),
            countries: spec.countries.clone(),
            endpoint,
            categories: spec.categories.clone(),
            active: true,
            relay: None,
            keys: vec![RawKey {
                id: key.key_id().to_owned(),
                public_key: encode_public_key(&key.verifying_key()),
                not_before: None,
                not_after: None,
                revoked: false,
            }],
            national_categories: Vec::new(),
        });
        Ok(())
    })?;
    std::fs::copy(&published.path, nd.join(SIGNED)).map_err(|source| ProvisionError::Write {
        path: nd.join(SIGNED).display().to_string(),
        source,
    })?;
    Ok(published)
}

/// A node's new signing key, published beside the old one, whose
/// `not_after` becomes now + `overlap`: what the node signed with the old
/// key until then still verifies. With `public_key`, the hotline made the
/// key itself (and installs it); without, the secretariat makes it and
/// writes it to `DIR/<ID>/signing.key` (the node's folder it holds),
/// which the node takes at its next reload or new directory version.
pub fn rotate_key(
    dir: &Path,
    node: &NodeId,
    public_key: Option<&str>,
    overlap: time::Duration,
    how: &Publish,
) -> Result<(Published, String), ProvisionError> {
    let (public, generated) = match public_key {
        Some(p) => (crate::crypto::signing::parse_public_key(p)?, None),
        None => {
            let k = NodeKey::generate();
            (k.verifying_key(), Some(k))
        }
    };
    let key_id = crate::crypto::signing::key_id_of(&public);
    let key_path = dir.join(node.as_str()).join("signing.key");
    let old_key = std::fs::read(&key_path).ok();
    if let Some(k) = &generated {
        k.save(&key_path)?;
    }
    let not_after = signed::rfc3339(now_ms() + overlap.whole_milliseconds() as i64);
    let published = edit_and_publish(dir, how, |source| {
        let n = entry(source, node)?;
        for k in n
            .keys
            .iter_mut()
            .filter(|k| !k.revoked && k.not_after.is_none())
        {
            k.not_after = Some(not_after.clone());
        }
        n.keys.push(RawKey {
            id: key_id.clone(),
            public_key: encode_public_key(&public),
            not_before: None,
            not_after: None,
            revoked: false,
        });
        Ok(())
    });
    match published {
        Ok(p) => {
            let folder = dir.join(node.as_str());
            if folder.join("node.toml").exists() {
                write(
                    &folder.join(SIGNED),
                    &std::fs::read(&p.path).unwrap_or_default(),
                )?;
            }
            Ok((p, key_id))
        }
        Err(e) => {
            if let (Some(_), Some(old)) = (&generated, old_key) {
                let _ = write_secret(&key_path, &old);
            }
            Err(e)
        }
    }
}

/// A node's new TLS certificate from the CA, written to `DIR/<ID>/`
/// (node.pem, node.key); the old certificate is revoked and the CRL
/// published with a new version, so every node refuses the old one within
/// an exchange interval. The node presents the new one from its next
/// reload or new directory version.
pub fn rotate_tls(dir: &Path, node: &NodeId, how: &Publish) -> Result<Published, ProvisionError> {
    let source: RawDirectory = parse(&dir.join("directory.toml"))?;
    if !source.nodes.iter().any(|n| n.id == node.as_str()) {
        return Err(ProvisionError::UnknownNode(node.to_string()));
    }
    let nd = dir.join(node.as_str());
    let old = nd.join("node.pem");
    let old_pem = read_text(&old)?;
    let ca = FederationCa::load(
        &source.federation,
        &read_text(&dir.join("ca.pem"))?,
        &read_text(&dir.join("ca.key"))?,
    )?;
    let tls = ca.node_cert(node, &["localhost".to_owned()])?;
    let revoked = dir.join("revoked-on-rotation.pem");
    write(&revoked, old_pem.as_bytes())?;
    super::reissue_crl(dir, &[revoked.as_path()])?;
    let _ = std::fs::remove_file(&revoked);
    write(&nd.join("node.pem"), tls.cert_pem.as_bytes())?;
    write_secret(&nd.join("node.key"), tls.key_pem.as_bytes())?;
    let published = publish(dir, how)?;
    write(
        &nd.join(SIGNED),
        &std::fs::read(&published.path).unwrap_or_default(),
    )?;
    Ok(published)
}
