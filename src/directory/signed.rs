//! The signed federation directory: a document (the payload) signed by
//! the federation's directory keys, kept offline by its secretariat like
//! the CA's key. Like The Update Framework's root role, the document names
//! its own keys and how many of them must sign (`threshold`: k of n
//! officers); a node trusts a new version only when enough of the keys it
//! already trusts signed it (and enough of the new version's keys).
//!
//! The payload is TOML: `format`, `federation`, a `serial` that only
//! grows, `issued_at` and `expires_at` (RFC 3339), the CA's current `crl`
//! (PEM), `[directory_keys]` and the `[[node]]` entries of
//! `directory.toml`. On disk and on the wire the exact payload bytes travel
//! with their signatures (`Purpose::Directory`, over
//! `tag || payload`): they are verified before they are decoded, and never
//! re-encoded.

use std::sync::Arc;

use base64::Engine;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::{Directory, RawDirectory, RawNode, parse_time};
use crate::crypto::signing::{self, NodeKey, Purpose, key_id_of, parse_public_key};

/// The envelope's `format`.
pub const ENVELOPE_FORMAT: &str = "alertrelay-signed-directory/1";
/// The payload's `format` this version reads.
pub const PAYLOAD_FORMAT: u32 = 1;
/// A document larger than this is refused before anything else.
pub const MAX_BYTES: usize = 4 << 20;

/// Why a signed directory was refused. Each has a stable reason code
/// (`code`) for the audit entry and the metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a signed directory: {0}")]
    Malformed(String),
    #[error(
        "not validly signed by the directory keys this node trusts ({valid} of {needed} needed)"
    )]
    Unsigned { valid: usize, needed: usize },
    #[error("of federation {offered:?}, not {expected:?}")]
    OtherFederation { expected: String, offered: String },
    #[error("serial {offered} is not newer than serial {have} this node has (rollback)")]
    Rollback { have: u64, offered: u64 },
    #[error("expired at {expires_at}")]
    Expired { expires_at: String },
    #[error(
        "it drops directory key {0}, which this node trusts (the directory key cannot be removed by a published version)"
    )]
    RemovesKey(String),
    #[error("invalid content: {0}")]
    Invalid(String),
}

impl Refusal {
    /// The reason code, for audit entries and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "directory-malformed",
            Refusal::Unsigned { .. } => "directory-unsigned",
            Refusal::OtherFederation { .. } => "directory-other-federation",
            Refusal::Rollback { .. } => "directory-rollback",
            Refusal::Expired { .. } => "directory-expired",
            Refusal::RemovesKey(_) => "directory-removes-key",
            Refusal::Invalid(_) => "directory-invalid",
        }
    }
}

/// The document as it travels: the exact payload bytes and the
/// signatures over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDirectory {
    pub payload: Vec<u8>,
    /// (key id, 64-byte signature).
    pub signatures: Vec<(String, Vec<u8>)>,
}

/// The envelope on disk (JSON): the payload in base64, so its bytes are
/// kept exactly.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: String,
    payload: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeSignature {
    key_id: String,
    signature: String,
}

impl SignedDirectory {
    /// Signs `payload` with each of `keys`.
    pub fn sign(payload: Vec<u8>, keys: &[&NodeKey]) -> Self {
        let signatures = keys
            .iter()
            .map(|k| {
                (
                    k.key_id().to_owned(),
                    k.sign(Purpose::Directory, &payload).to_vec(),
                )
            })
            .collect();
        SignedDirectory {
            payload,
            signatures,
        }
    }

    /// Reads the JSON envelope (`directory.signed`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, Refusal> {
        if bytes.len() > MAX_BYTES {
            return Err(Refusal::Malformed(format!("larger than {MAX_BYTES} bytes")));
        }
        // Where it is wrong, never what it says (no echo of the input).
        let env: Envelope = serde_json::from_slice(bytes).map_err(|e| {
            Refusal::Malformed(format!(
                "the envelope is not the expected JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if env.format != ENVELOPE_FORMAT {
            return Err(Refusal::Malformed(format!(
                "format is not {ENVELOPE_FORMAT}"
            )));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64
            .decode(&env.payload)
            .map_err(|_| Refusal::Malformed("payload is not base64".into()))?;
        let mut signatures = Vec::with_capacity(env.signatures.len());
        for s in env.signatures {
            let sig = b64
                .decode(&s.signature)
                .map_err(|_| Refusal::Malformed("a signature is not base64".into()))?;
            signatures.push((s.key_id, sig));
        }
        Ok(SignedDirectory {
            payload,
            signatures,
        })
    }

    /// The JSON envelope, as written to `directory.signed`.
    pub fn to_json(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let env = Envelope {
            format: ENVELOPE_FORMAT.to_owned(),
            payload: b64.encode(&self.payload),
            signatures: self
                .signatures
                .iter()
                .map(|(key_id, sig)| EnvelopeSignature {
                    key_id: key_id.clone(),
                    signature: b64.encode(sig),
                })
                .collect(),
        };
        let mut text = serde_json::to_string_pretty(&env).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Whether this looks like a signed directory's envelope (a JSON
    /// object) rather than a plain `directory.toml`.
    pub fn looks_signed(bytes: &[u8]) -> bool {
        bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{')
    }
}

/// The payload as written (TOML).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPayload {
    pub format: u32,
    pub federation: String,
    pub serial: u64,
    /// RFC 3339.
    pub issued_at: String,
    /// RFC 3339: no node accepts this version after then.
    pub expires_at: String,
    /// The federation CA's current CRL (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<String>,
    pub directory_keys: RawDirectoryKeys,
    #[serde(default, rename = "node")]
    pub nodes: Vec<RawNode>,
}

/// The directory keys (TUF's root role): `threshold` of them must sign.
/// The secretariat keeps the list in `directory-keys.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectoryKeys {
    pub threshold: u32,
    #[serde(rename = "key")]
    pub keys: Vec<RawDirectoryKey>,
    /// Ids of directory keys this version retires (a key replacement,
    /// TUF's root rotation): a node takes a version that drops a key it
    /// trusts only when the key is listed here and the version is signed
    /// by a threshold of the keys it trusts and of the keys it names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectoryKey {
    pub id: String,
    /// base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
}

/// The directory keys, checked.
#[derive(Debug, Clone)]
pub struct DirectoryKeys {
    pub threshold: usize,
    pub keys: Vec<(String, VerifyingKey)>,
}

impl DirectoryKeys {
    pub fn from_raw(raw: &RawDirectoryKeys) -> Result<Self, String> {
        let mut keys: Vec<(String, VerifyingKey)> = Vec::new();
        for k in &raw.keys {
            let key = parse_public_key(&k.public_key)
                .map_err(|e| format!("directory key {}: {e}", k.id))?;
            if key_id_of(&key) != k.id {
                return Err(format!(
                    "directory key id {} does not match its public key",
                    k.id
                ));
            }
            if keys.iter().any(|(id, _)| id == &k.id) {
                return Err(format!("directory key {} is listed twice", k.id));
            }
            keys.push((k.id.clone(), key));
        }
        let threshold = raw.threshold as usize;
        if threshold == 0 || threshold > keys.len() {
            return Err(format!(
                "directory_keys.threshold must be 1 to {} (the number of keys)",
                keys.len()
            ));
        }
        Ok(DirectoryKeys { threshold, keys })
    }

    /// How many distinct keys of this set validly signed `doc`.
    pub fn valid_signatures(&self, doc: &SignedDirectory) -> usize {
        self.keys
            .iter()
            .filter(|(id, key)| {
                doc.signatures.iter().any(|(sig_id, sig)| {
                    sig_id == id
                        && signing::verify(key, Purpose::Directory, &doc.payload, sig).is_ok()
                })
            })
            .count()
    }

    /// `Ok` when at least `threshold` of the keys signed `doc`.
    pub fn check(&self, doc: &SignedDirectory) -> Result<(), Refusal> {
        let valid = self.valid_signatures(doc);
        if valid < self.threshold {
            return Err(Refusal::Unsigned {
                valid,
                needed: self.threshold,
            });
        }
        Ok(())
    }

    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|(id, _)| id.clone()).collect()
    }
}

/// What a node knows of its directory's signed version.
#[derive(Debug, Clone)]
pub struct SignedInfo {
    pub serial: u64,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub keys: DirectoryKeys,
    pub crl: Option<String>,
    /// The document, to serve to peers and write to disk.
    pub document: SignedDirectory,
}

/// A version checked as a successor of the current one.
#[derive(Debug)]
pub enum Verdict {
    /// The same document (nothing to do).
    Same,
    /// A newer, valid version.
    Newer(Box<Directory>),
}

/// Opens a document trusting the keys it names itself: a node's first
/// signed directory, installed with its files (the trust anchor, like a
/// TUF client's shipped root). Its expiry is not checked here: a node
/// with an expired directory still starts, and says so.
pub fn open_anchor(doc: &SignedDirectory, shown: &str) -> Result<Directory, Refusal> {
    let raw = decode(&doc.payload)?;
    let keys = DirectoryKeys::from_raw(&raw.directory_keys).map_err(Refusal::Invalid)?;
    keys.check(doc)?;
    build(raw, keys, doc, shown)
}

/// Checks `doc`, offered by a peer or found on disk, as a successor of
/// the signed directory `current`: signed by the keys `current` trusts
/// (before anything of it is decoded) and by its own, of the same
/// federation, keeping every directory key it does not retire, with a
/// higher serial, and not expired at `now_ms`.
pub fn check_successor(
    current: &SignedInfo,
    federation: &str,
    doc: &SignedDirectory,
    now_ms: i64,
) -> Result<Verdict, Refusal> {
    if doc.payload.len() > MAX_BYTES {
        return Err(Refusal::Malformed(format!("larger than {MAX_BYTES} bytes")));
    }
    if doc.payload == current.document.payload {
        return Ok(Verdict::Same);
    }
    current.keys.check(doc)?;
    let raw = decode(&doc.payload)?;
    if raw.federation != federation {
        return Err(Refusal::OtherFederation {
            expected: federation.to_owned(),
            offered: raw.federation,
        });
    }
    let keys = DirectoryKeys::from_raw(&raw.directory_keys).map_err(Refusal::Invalid)?;
    let retired = &raw.directory_keys.retired;
    for (id, key) in &current.keys.keys {
        let kept = keys.keys.iter().any(|(i, k)| i == id && k == key);
        if !kept && !retired.contains(id) {
            return Err(Refusal::RemovesKey(id.clone()));
        }
    }
    // Signed by the keys it names too: a replacement is signed by the old
    // keys and the new ones (the old alone cannot hand trust to keys that
    // never signed; the new alone are not trusted yet).
    keys.check(doc)?;
    if raw.serial <= current.serial {
        return Err(Refusal::Rollback {
            have: current.serial,
            offered: raw.serial,
        });
    }
    let directory = build(raw, keys, doc, "the offered directory")?;
    let expires = directory.signed.as_ref().map_or(0, |s| s.expires_at_ms);
    if expires <= now_ms {
        return Err(Refusal::Expired {
            expires_at: rfc3339(expires),
        });
    }
    Ok(Verdict::Newer(Box::new(directory)))
}

fn decode(payload: &[u8]) -> Result<RawPayload, Refusal> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| Refusal::Malformed("payload is not UTF-8".into()))?;
    let raw: RawPayload = toml::from_str(text).map_err(|e| {
        Refusal::Malformed(format!(
            "the payload is not the expected TOML (at byte {})",
            e.span().map_or(0, |s| s.start)
        ))
    })?;
    if raw.format != PAYLOAD_FORMAT {
        return Err(Refusal::Malformed(format!(
            "payload format {} is not {PAYLOAD_FORMAT} (a newer version of alertrelay?)",
            raw.format
        )));
    }
    Ok(raw)
}

fn build(
    raw: RawPayload,
    keys: DirectoryKeys,
    doc: &SignedDirectory,
    shown: &str,
) -> Result<Directory, Refusal> {
    let issued_at_ms = parse_time(Some(&raw.issued_at))
        .map_err(|e| Refusal::Invalid(format!("issued_at: {e}")))?
        .unwrap_or_default();
    let expires_at_ms = parse_time(Some(&raw.expires_at))
        .map_err(|e| Refusal::Invalid(format!("expires_at: {e}")))?
        .unwrap_or_default();
    let mut directory = Directory::from_raw(
        RawDirectory {
            federation: raw.federation,
            nodes: raw.nodes,
        },
        shown,
    )
    .map_err(|e| Refusal::Invalid(e.to_string()))?;
    directory.signed = Some(Arc::new(SignedInfo {
        serial: raw.serial,
        issued_at_ms,
        expires_at_ms,
        keys,
        crl: raw.crl,
        document: doc.clone(),
    }));
    Ok(directory)
}

/// `ms` since the epoch as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The payload of a new version: `source` (the secretariat's
/// `directory.toml`) with its serial, times, keys and CRL.
pub struct NewVersion<'a> {
    pub source: RawDirectory,
    pub serial: u64,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub keys: &'a RawDirectoryKeys,
    pub crl: Option<String>,
}

impl NewVersion<'_> {
    /// The payload bytes to sign.
    pub fn payload(self) -> Result<Vec<u8>, toml::ser::Error> {
        let raw = RawPayload {
            format: PAYLOAD_FORMAT,
            federation: self.source.federation,
            serial: self.serial,
            issued_at: rfc3339(self.issued_at_ms),
            expires_at: rfc3339(self.expires_at_ms),
            crl: self.crl,
            directory_keys: self.keys.clone(),
            nodes: self.source.nodes,
        };
        Ok(toml::to_string_pretty(&raw)?.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::signing::encode_public_key;

    const DAY: i64 = 86_400_000;

    fn keys(threshold: u32, keys: &[&NodeKey]) -> RawDirectoryKeys {
        RawDirectoryKeys {
            threshold,
            keys: keys
                .iter()
                .map(|k| RawDirectoryKey {
                    id: k.key_id().to_owned(),
                    public_key: encode_public_key(&k.verifying_key()),
                })
                .collect(),
            retired: Vec::new(),
        }
    }

    fn version(serial: u64, root: &RawDirectoryKeys, signers: &[&NodeKey]) -> SignedDirectory {
        let now = 1_800_000_000_000;
        let payload = NewVersion {
            source: RawDirectory {
                federation: "f".into(),
                nodes: vec![],
            },
            serial,
            issued_at_ms: now,
            expires_at_ms: now + DAY,
            keys: root,
            crl: None,
        }
        .payload()
        .unwrap();
        SignedDirectory::sign(payload, signers)
    }

    fn info(doc: &SignedDirectory) -> Arc<SignedInfo> {
        open_anchor(doc, "test").unwrap().signed.unwrap()
    }

    #[test]
    fn k_of_n_officers_each_counted_once_old_and_new_keys_both_needed() {
        let [a, b, c, d, thief] = [(); 5].map(|_| NodeKey::generate());
        let root = keys(2, &[&a, &b, &c]);
        let now = 1_800_000_000_000;
        // Two of three officers: a valid anchor; one alone, or one twice, is not.
        let v1 = version(1, &root, &[&a, &b]);
        let current = info(&v1);
        assert_eq!(
            open_anchor(&version(1, &root, &[&a]), "t").unwrap_err(),
            Refusal::Unsigned {
                valid: 1,
                needed: 2
            }
        );
        assert!(open_anchor(&version(1, &root, &[&a, &a]), "t").is_err());
        // A successor needs two of the trusted officers, whoever else signs.
        let ok = version(2, &root, &[&a, &c]);
        assert!(matches!(
            check_successor(&current, "f", &ok, now),
            Ok(Verdict::Newer(_))
        ));
        assert!(matches!(
            check_successor(&current, "f", &version(2, &root, &[&a, &thief]), now),
            Err(Refusal::Unsigned { valid: 1, .. })
        ));
        // An officer added (threshold 3 of four): the new threshold must be
        // met too.
        let grown = keys(3, &[&a, &b, &c, &d]);
        assert!(matches!(
            check_successor(&current, "f", &version(2, &grown, &[&a, &b]), now),
            Err(Refusal::Unsigned { needed: 3, .. })
        ));
        assert!(matches!(
            check_successor(&current, "f", &version(2, &grown, &[&a, &b, &d]), now),
            Ok(Verdict::Newer(_))
        ));
        // Dropping an officer's key is refused, however many sign.
        let shrunk = keys(2, &[&a, &b]);
        assert_eq!(
            check_successor(&current, "f", &version(2, &shrunk, &[&a, &b, &c]), now).unwrap_err(),
            Refusal::RemovesKey(c.key_id().to_owned())
        );
        // The same version again changes nothing; another federation's is refused.
        assert!(matches!(
            check_successor(&current, "f", &v1, now),
            Ok(Verdict::Same)
        ));
        assert!(matches!(
            check_successor(&current, "g", &ok, now),
            Err(Refusal::OtherFederation { .. })
        ));
        // Past its expiry, a newer version is refused.
        assert!(matches!(
            check_successor(&current, "f", &ok, now + 2 * DAY),
            Err(Refusal::Expired { .. })
        ));
    }

    #[test]
    fn a_key_replacement_needs_the_old_threshold_and_the_new_and_the_retirement_said() {
        let [a, b, c, n1, n2] = [(); 5].map(|_| NodeKey::generate());
        let now = 1_800_000_000_000;
        let current = info(&version(1, &keys(2, &[&a, &b, &c]), &[&a, &b]));
        let mut new = keys(2, &[&n1, &n2]);
        new.retired = vec![a.key_id().into(), b.key_id().into(), c.key_id().into()];
        // Two old officers and two new: taken; the node then trusts the new.
        let rotated = version(2, &new, &[&a, &b, &n1, &n2]);
        let Ok(Verdict::Newer(d)) = check_successor(&current, "f", &rotated, now) else {
            panic!("the rotation is refused");
        };
        let after = d.signed.clone().unwrap();
        assert_eq!(after.keys.ids(), vec![n1.key_id(), n2.key_id()]);
        // The new keys alone, or the old alone, cannot rotate.
        assert!(matches!(
            check_successor(&current, "f", &version(2, &new, &[&n1, &n2]), now),
            Err(Refusal::Unsigned { valid: 0, .. })
        ));
        assert!(matches!(
            check_successor(&current, "f", &version(2, &new, &[&a, &b, &n1]), now),
            Err(Refusal::Unsigned { valid: 1, .. })
        ));
        // Not said to be retired: refused as before.
        let unsaid = keys(2, &[&n1, &n2]);
        assert_eq!(
            check_successor(
                &current,
                "f",
                &version(2, &unsaid, &[&a, &b, &n1, &n2]),
                now
            )
            .unwrap_err(),
            Refusal::RemovesKey(a.key_id().to_owned())
        );
        // After it: the new keys suffice, the retired ones count for nothing.
        let next = version(3, &keys(2, &[&n1, &n2]), &[&n1, &n2]);
        assert!(matches!(
            check_successor(&after, "f", &next, now),
            Ok(Verdict::Newer(_))
        ));
        assert!(matches!(
            check_successor(
                &after,
                "f",
                &version(3, &keys(2, &[&a, &b]), &[&a, &b]),
                now
            ),
            Err(Refusal::Unsigned { valid: 0, .. })
        ));
    }

    #[test]
    fn the_envelope_keeps_the_payload_bytes_exactly() {
        let a = NodeKey::generate();
        let doc = version(1, &keys(1, &[&a]), &[&a]);
        let back = SignedDirectory::from_json(doc.to_json().as_bytes()).unwrap();
        assert_eq!(back, doc);
        assert!(SignedDirectory::looks_signed(doc.to_json().as_bytes()));
        assert!(!SignedDirectory::looks_signed(b"federation = \"f\"\n"));
        // One byte of the payload changed: no longer signed.
        let mut flipped = doc.clone();
        flipped.payload[10] ^= 1;
        assert!(open_anchor(&flipped, "t").is_err());
    }
}
