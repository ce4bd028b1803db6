//! What an offline verifier trusts (`audit verify-proof`,
//! `cases verify-export`): never the keys a bundle carries by themselves —
//! anyone can re-sign a bundle with a key of their own and list it. The
//! verifier gives a trust anchor: the federation directory (a key counts
//! only if the directory lists it for that node, not revoked, and valid at
//! the time it signed: one lookup, `DirectoryNode::key`), or keys it pinned
//! itself, each for one node (`NODE=KEY`, the base64 public key as the
//! directory writes it): a pinned key vouches for signatures of that node
//! only.

use ed25519_dalek::VerifyingKey;

use crate::crypto::signing::{key_id_of, parse_public_key};
use crate::directory::Directory;
use crate::identity::NodeId;

/// The verifier's trust anchor.
pub enum Anchor {
    Directory(Directory),
    Pinned(Vec<(String, VerifyingKey)>),
}

/// A `--key` that is not `NODE=PUBLIC-KEY`.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("expected NODE=PUBLIC-KEY (the node the key signs for, then its base64 public key)")]
    NoNode,
    #[error("the node is not a valid node id: {0}")]
    Node(crate::identity::IdentityError),
    #[error(transparent)]
    Key(#[from] crate::crypto::signing::KeyError),
}

impl Anchor {
    /// Pinned keys, each `NODE=PUBLIC-KEY` (base64).
    pub fn pinned(keys: &[String]) -> Result<Anchor, PinError> {
        keys.iter()
            .map(|pin| {
                // A bare key (base64 ends in `=`) names no node.
                if parse_public_key(pin).is_ok() {
                    return Err(PinError::NoNode);
                }
                let (node, key) = pin.split_once('=').ok_or(PinError::NoNode)?;
                let node = NodeId::new(node).map_err(PinError::Node)?;
                Ok((node.to_string(), parse_public_key(key)?))
            })
            .collect::<Result<Vec<_>, PinError>>()
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
                .find(|k| pinned.iter().any(|(n, p)| n == node && p == k)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::signing::{NodeKey, encode_public_key};

    #[test]
    fn a_pinned_key_vouches_for_its_own_node_only() {
        let key = NodeKey::generate();
        let public = encode_public_key(&key.verifying_key());
        let id = key_id_of(&key.verifying_key());
        let anchor = Anchor::pinned(&[format!("FR-PDC={public}")]).unwrap();
        // A bundle that lists FR-PDC's key as DE-ECO's gets nothing.
        let as_de = [("DE-ECO", id.as_str(), public.as_str())];
        assert!(anchor.key("DE-ECO", &id, 0, as_de).is_none());
        let as_fr = [("FR-PDC", id.as_str(), public.as_str())];
        assert_eq!(
            anchor.key("FR-PDC", &id, 0, as_fr),
            Some(key.verifying_key())
        );
        assert!(matches!(Anchor::pinned(&[public]), Err(PinError::NoNode)));
    }
}
