//! What an offline verifier trusts (`audit verify-proof`,
//! `cases verify-export`): never the keys a bundle carries by themselves —
//! anyone can re-sign a bundle with a key of their own and list it. The
//! verifier gives a trust anchor: the federation directory (a key counts
//! only if the directory lists it for that node, not revoked, and valid at
//! the time it signed: one lookup, `DirectoryNode::key`), or keys it pinned
//! itself (the base64 public keys, as the directory writes them).

use ed25519_dalek::VerifyingKey;

use crate::crypto::signing::{key_id_of, parse_public_key};
use crate::directory::Directory;
use crate::identity::NodeId;

/// The verifier's trust anchor.
pub enum Anchor {
    Directory(Directory),
    Pinned(Vec<VerifyingKey>),
}

impl Anchor {
    /// Pinned keys from their base64 encodings.
    pub fn pinned(keys: &[String]) -> Result<Anchor, crate::crypto::signing::KeyError> {
        keys.iter()
            .map(|k| parse_public_key(k))
            .collect::<Result<Vec<_>, _>>()
            .map(Anchor::Pinned)
    }

    /// The key `key_id` of `node` that signed at `at_ms`, as the anchor
    /// vouches for it. `carried` is what the bundle lists, as (node, key
    /// id, base64 public key): used only to find a pinned key by its id.
    pub fn key<'a>(
        &self,
        node: &str,
        key_id: &str,
        at_ms: i64,
        carried: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Option<VerifyingKey> {
        match self {
            Anchor::Directory(dir) => {
                let id = NodeId::new(node).ok()?;
                dir.node(&id)?.key(key_id, at_ms).copied()
            }
            Anchor::Pinned(pinned) => carried
                .into_iter()
                .filter(|(n, id, _)| *n == node && *id == key_id)
                .filter_map(|(_, _, public)| parse_public_key(public).ok())
                .filter(|k| key_id_of(k) == key_id)
                .find(|k| pinned.contains(k)),
        }
    }

    /// `node`'s key `key_id` whatever its validity window (never a revoked
    /// one): what a signature is checked with before the signed time can be
    /// read; `key` then checks the window at that time.
    pub fn candidate<'a>(
        &self,
        node: &str,
        key_id: &str,
        carried: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Option<VerifyingKey> {
        match self {
            Anchor::Directory(dir) => {
                let id = NodeId::new(node).ok()?;
                dir.node(&id)?
                    .keys
                    .iter()
                    .find(|k| k.id == key_id && !k.revoked)
                    .map(|k| k.key)
            }
            Anchor::Pinned(_) => self.key(node, key_id, 0, carried),
        }
    }

    /// What the anchor was, for the verifier's report.
    pub fn describe(&self) -> String {
        match self {
            Anchor::Directory(dir) => format!("the directory of federation {}", dir.federation),
            Anchor::Pinned(keys) => format!("{} pinned key(s)", keys.len()),
        }
    }
}
