//! The federation directory: every node with its countries, endpoint,
//! accepted categories and signing keys (with key ids and validity). Loaded
//! from `directory.toml`, the same file given to every node, or from a
//! signed directory (`signed`) that spreads between nodes by itself.

pub mod signed;

use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::crypto::signing::{KeyError, key_id_of, parse_public_key};
use crate::identity::NodeId;
use crate::report::{Category, Classification};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot read directory {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: node {node}: {message}")]
    Invalid {
        path: String,
        node: String,
        message: String,
    },
    #[error("{path}: signed directory refused: {refusal}")]
    Signed {
        path: String,
        refusal: signed::Refusal,
    },
    #[error("{path}: node {node}: key {key_id}")]
    Key {
        path: String,
        node: String,
        key_id: String,
        #[source]
        source: KeyError,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectory {
    pub federation: String,
    #[serde(default, rename = "node")]
    pub nodes: Vec<RawNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// ISO 3166-1 alpha-2 codes of the countries whose hosted content this
    /// hotline handles.
    #[serde(default)]
    pub countries: Vec<String>,
    /// `https://host:port`.
    pub endpoint: String,
    /// Categories accepted; empty means all.
    #[serde(default)]
    pub categories: Vec<String>,
    /// `false` while the node is suspended from the federation.
    #[serde(default = "yes")]
    pub active: bool,
    /// The node this one is reached through: reports for it are delivered
    /// to the relay, which passes them on (and passes receipts and status
    /// updates back). A relay may itself have a relay; no cycles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    #[serde(default, rename = "key")]
    pub keys: Vec<RawKey>,
    /// Categories for which this hotline also takes reports classified
    /// `national` (illegal under the origin's law only), because its own
    /// law covers them too. Empty: INTERPOL-baseline material only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub national_categories: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub id: String,
    /// base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
    /// RFC 3339; the key is valid from then (optional).
    #[serde(default)]
    pub not_before: Option<String>,
    /// RFC 3339; the key is valid until then (optional).
    #[serde(default)]
    pub not_after: Option<String>,
    /// A revoked key verifies nothing, whatever its window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

#[derive(Debug, Clone)]
pub struct Directory {
    pub federation: String,
    nodes: Vec<DirectoryNode>,
    /// The signed version this directory was read from; `None` for a
    /// plain `directory.toml`.
    pub signed: Option<Arc<signed::SignedInfo>>,
}

#[derive(Debug, Clone)]
pub struct DirectoryNode {
    pub id: NodeId,
    pub name: String,
    pub countries: Vec<String>,
    pub endpoint: String,
    pub categories: Vec<Category>,
    pub active: bool,
    /// Reached through this node (see `RawNode::relay`).
    pub relay: Option<NodeId>,
    pub keys: Vec<NodeKeyEntry>,
    /// Categories whose nationally-illegal reports it takes (its law
    /// covers them); baseline material of an accepted category always.
    pub national: Vec<Category>,
}

#[derive(Debug, Clone)]
pub struct NodeKeyEntry {
    pub id: String,
    pub key: VerifyingKey,
    pub revoked: bool,
    pub not_before_ms: Option<i64>,
    pub not_after_ms: Option<i64>,
}

impl NodeKeyEntry {
    /// Whether the key counts for something signed at `at_ms`: not
    /// revoked (a revoked key verifies nothing, whatever its window), and
    /// within its window. The one rule every signature check applies.
    pub fn valid_at(&self, at_ms: i64) -> bool {
        !self.revoked
            && self.not_before_ms.is_none_or(|t| at_ms >= t)
            && self.not_after_ms.is_none_or(|t| at_ms <= t)
    }
}

impl DirectoryNode {
    pub fn accepts(&self, category: Category) -> bool {
        self.categories.is_empty() || self.categories.contains(&category)
    }

    /// Whether its directory entry says it takes reports of `category`
    /// with this classification (what the receiver's law covers).
    pub fn accepts_classified(&self, category: Category, class: Classification) -> bool {
        self.accepts(category)
            && (class == Classification::Baseline || self.national.contains(&category))
    }

    /// The key with `key_id`, if it is valid at `at_ms`.
    pub fn key(&self, key_id: &str, at_ms: i64) -> Option<&VerifyingKey> {
        self.keys
            .iter()
            .find(|k| k.id == key_id && k.valid_at(at_ms))
            .map(|k| &k.key)
    }

    /// Every key valid at `at_ms` (for signatures that name no key id:
    /// signed notes).
    pub fn keys_valid_at(&self, at_ms: i64) -> impl Iterator<Item = &VerifyingKey> {
        self.keys
            .iter()
            .filter(move |k| k.valid_at(at_ms))
            .map(|k| &k.key)
    }

    /// One `[[node]]` entry, checked; `earlier` are the entries before it
    /// (an id may be listed once). Its relay is checked once every node is
    /// known (`Directory::check_relay`).
    fn from_raw(
        n: RawNode,
        shown: &str,
        earlier: &[DirectoryNode],
    ) -> Result<Self, DirectoryError> {
        let invalid = invalid_node(shown, &n.id);
        let id = NodeId::new(&n.id).map_err(|e| invalid(e.to_string()))?;
        if earlier.iter().any(|m| m.id == id) {
            return Err(invalid("listed twice".into()));
        }
        let mut countries = Vec::new();
        for c in &n.countries {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(invalid(format!(
                    "country {c:?} is not an upper-case ISO 3166-1 alpha-2 code"
                )));
            }
            countries.push(c.clone());
        }
        if !(n.endpoint.starts_with("https://")) {
            return Err(invalid(format!(
                "endpoint {:?} must be https://host:port",
                n.endpoint
            )));
        }
        let mut categories = Vec::new();
        for c in &n.categories {
            categories
                .push(Category::parse(c).map_err(|_| invalid(format!("unknown category {c:?}")))?);
        }
        let mut national = Vec::new();
        for c in &n.national_categories {
            national
                .push(Category::parse(c).map_err(|_| {
                    invalid(format!("national_categories: unknown category {c:?}"))
                })?);
        }
        let keys = node_keys(&n, shown)?;
        let relay = n
            .relay
            .as_deref()
            .map(NodeId::new)
            .transpose()
            .map_err(|e| invalid(format!("relay: {e}")))?;
        Ok(DirectoryNode {
            id,
            name: n.name,
            countries,
            endpoint: n.endpoint,
            categories,
            active: n.active,
            relay,
            keys,
            national,
        })
    }
}

/// A node's `[[node.key]]` entries, checked: each public key must parse
/// and match its key id, and its validity window must be RFC 3339.
fn node_keys(n: &RawNode, shown: &str) -> Result<Vec<NodeKeyEntry>, DirectoryError> {
    let invalid = invalid_node(shown, &n.id);
    let mut keys = Vec::new();
    for k in &n.keys {
        let key_err = |source| DirectoryError::Key {
            path: shown.to_owned(),
            node: n.id.clone(),
            key_id: k.id.clone(),
            source,
        };
        let key = parse_public_key(&k.public_key).map_err(key_err)?;
        if keys.iter().any(|e: &NodeKeyEntry| e.id == k.id) {
            return Err(invalid(format!(
                "key id {} is listed twice: each key once, revoked or not",
                k.id
            )));
        }
        if key_id_of(&key) != k.id {
            return Err(invalid(format!(
                "key id {} does not match its public key (expected {})",
                k.id,
                key_id_of(&key)
            )));
        }
        keys.push(NodeKeyEntry {
            id: k.id.clone(),
            key,
            revoked: k.revoked,
            not_before_ms: parse_time(k.not_before.as_deref()).map_err(&invalid)?,
            not_after_ms: parse_time(k.not_after.as_deref()).map_err(&invalid)?,
        });
    }
    Ok(keys)
}

/// Builds the error for a message about `node` in the directory file
/// `shown`.
fn invalid_node<'a>(shown: &'a str, node: &'a str) -> impl Fn(String) -> DirectoryError + 'a {
    move |message| DirectoryError::Invalid {
        path: shown.to_owned(),
        node: node.to_owned(),
        message,
    }
}

impl Directory {
    pub fn load(path: &Path) -> Result<Self, DirectoryError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| DirectoryError::Read {
            path: shown.clone(),
            source,
        })?;
        if signed::SignedDirectory::looks_signed(&bytes) {
            let signed_err = |refusal| DirectoryError::Signed {
                path: shown.clone(),
                refusal,
            };
            let doc = signed::SignedDirectory::from_json(&bytes).map_err(signed_err)?;
            return signed::open_anchor(&doc, &shown).map_err(signed_err);
        }
        let text = String::from_utf8(bytes).map_err(|_| DirectoryError::Parse {
            path: shown.clone(),
            message: "not UTF-8".into(),
        })?;
        let raw: RawDirectory = toml::from_str(&text).map_err(|e| DirectoryError::Parse {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        Self::from_raw(raw, &shown)
    }

    pub fn from_raw(raw: RawDirectory, shown: &str) -> Result<Self, DirectoryError> {
        let mut nodes: Vec<DirectoryNode> = Vec::with_capacity(raw.nodes.len());
        for n in raw.nodes {
            let node = DirectoryNode::from_raw(n, shown, &nodes)?;
            nodes.push(node);
        }
        let dir = Directory {
            federation: raw.federation,
            nodes,
            signed: None,
        };
        for n in &dir.nodes {
            dir.check_relay(n)
                .map_err(invalid_node(shown, n.id.as_str()))?;
        }
        Ok(dir)
    }

    /// Checks `n`'s relay, if it has one: it must be in the directory, and
    /// following relays from `n` must end within the hop limit without
    /// coming back (a cycle would be a routing loop).
    fn check_relay(&self, n: &DirectoryNode) -> Result<(), String> {
        let Some(relay) = &n.relay else {
            return Ok(());
        };
        if self.node(relay).is_none() {
            return Err(format!("relay {relay} is not in the directory"));
        }
        let mut seen = vec![n.id.clone()];
        let mut at = self.node(relay);
        while let Some(r) = at {
            if seen.contains(&r.id) {
                return Err(format!("relay chain comes back to {}", r.id));
            }
            seen.push(r.id.clone());
            if seen.len() > crate::report::MAX_HOPS + 1 {
                return Err(format!(
                    "relay chain longer than {} hops",
                    crate::report::MAX_HOPS
                ));
            }
            at = r.relay.as_ref().and_then(|id| self.node(id));
        }
        Ok(())
    }

    /// The relays `dest` is reached through, nearest to it first.
    pub fn relays_of(&self, dest: &NodeId) -> Vec<NodeId> {
        let mut out = Vec::new();
        let mut at = self.node(dest).and_then(|n| n.relay.clone());
        while let Some(r) = at {
            if out.contains(&r) || out.len() > crate::report::MAX_HOPS {
                break;
            }
            at = self.node(&r).and_then(|n| n.relay.clone());
            out.push(r);
        }
        out
    }

    /// The node `from` hands a report for `dest` to: the next node on the
    /// way from the outermost relay in to `dest`, or `dest` itself.
    pub fn next_hop(&self, from: &NodeId, dest: &NodeId) -> NodeId {
        let relays = self.relays_of(dest);
        match relays.iter().position(|r| r == from) {
            Some(0) => dest.clone(),
            Some(i) => relays[i - 1].clone(),
            None => relays.last().cloned().unwrap_or_else(|| dest.clone()),
        }
    }

    pub fn node(&self, id: &NodeId) -> Option<&DirectoryNode> {
        self.nodes.iter().find(|n| &n.id == id)
    }

    pub fn nodes(&self) -> &[DirectoryNode] {
        &self.nodes
    }

    /// The signed version's serial; 0 for a plain `directory.toml`.
    pub fn serial(&self) -> u64 {
        self.signed.as_ref().map_or(0, |s| s.serial)
    }

    /// Active nodes serving `country`, in directory order.
    pub fn serving(&self, country: &str) -> impl Iterator<Item = &DirectoryNode> {
        self.nodes
            .iter()
            .filter(move |n| n.active && n.countries.iter().any(|c| c == country))
    }
}

pub(crate) fn parse_time(s: Option<&str>) -> Result<Option<i64>, String> {
    let Some(s) = s else { return Ok(None) };
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("{s:?} is not an RFC 3339 time"))?;
    Ok(Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
}
