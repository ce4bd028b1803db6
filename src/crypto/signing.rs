//! Ed25519 signing keys, key ids, and signatures under per-purpose domain tags.
//!
//! Every signature alertrelay makes is over `DOMAIN_TAG || payload`, where the
//! tag names the purpose. A signature made for one purpose therefore never
//! verifies for another (a receipt signature cannot pass as a report's).
//! Verification is `verify_strict` (rejects small-order keys and
//! non-canonical signatures) over the exact bytes received.

use std::fmt;
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// What a signature is for. Each purpose has its own domain tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Report,
    Hop,
    /// A relay passing a receipt or status update back towards the origin.
    ReturnHop,
    Receipt,
    /// One signature over a batch of receipts (`ReceiptBatch`).
    ReceiptBatch,
    Status,
    /// An origin's retraction or correction of a report it sent.
    Amendment,
    Checkpoint,
    /// A case exported for law enforcement (`cases export`).
    CaseExport,
}

impl Purpose {
    /// The domain separation tag prefixed to the payload before signing.
    pub fn tag(self) -> &'static [u8] {
        match self {
            Purpose::Report => b"alertrelay/v1/report\0",
            Purpose::Hop => b"alertrelay/v1/hop\0",
            Purpose::ReturnHop => b"alertrelay/v1/return-hop\0",
            Purpose::Receipt => b"alertrelay/v1/receipt\0",
            Purpose::ReceiptBatch => b"alertrelay/v1/receipt-batch\0",
            Purpose::Status => b"alertrelay/v1/status\0",
            Purpose::Amendment => b"alertrelay/v1/amendment\0",
            Purpose::Checkpoint => b"alertrelay/v1/checkpoint\0",
            Purpose::CaseExport => b"alertrelay/v1/case-export\0",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read signing key {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("signing key {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    Permissions { path: String, mode: u32 },
    #[error("signing key {path} is not a PKCS#8 Ed25519 private key")]
    Format { path: String },
    #[error("cannot write signing key {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("public key {0:?} is not 32 bytes of base64")]
    PublicKeyFormat(String),
    #[error("public key {0:?} is weak (small order) and is refused")]
    WeakKey(String),
}

/// Why a signature did not verify. Deliberately coarse: a peer learns only
/// that its signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is not 64 bytes")]
    Malformed,
    #[error("signature does not verify")]
    Invalid,
}

/// A short, stable identifier of a public key: the first 8 bytes of
/// SHA-256(public key), hex.
pub fn key_id_of(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

/// The node's private signing key. Zeroized on drop; `Debug` never shows it.
pub struct NodeKey {
    key: ed25519_dalek::SigningKey,
    key_id: String,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("key_id", &self.key_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl NodeKey {
    pub fn generate() -> Self {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        Self::from_signing_key(key)
    }

    fn from_signing_key(key: ed25519_dalek::SigningKey) -> Self {
        let key_id = key_id_of(&key.verifying_key());
        NodeKey { key, key_id }
    }

    /// Loads a PKCS#8 PEM key, refusing files readable by anyone but the owner.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        check_private_file(path).map_err(|e| match e {
            PrivateFileError::Io(source) => KeyError::Read {
                path: shown.clone(),
                source,
            },
            PrivateFileError::Mode(mode) => KeyError::Permissions {
                path: shown.clone(),
                mode,
            },
        })?;
        let pem =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                    path: shown.clone(),
                    source,
                })?,
            );
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
            .map_err(|_| KeyError::Format { path: shown })?;
        Ok(Self::from_signing_key(key))
    }

    /// Writes the key as PKCS#8 PEM with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let shown = path.display().to_string();
        let pem = self
            .key
            .to_pkcs8_pem(Default::default())
            .map_err(|_| KeyError::Format {
                path: shown.clone(),
            })?;
        write_private_file(path, pem.as_bytes()).map_err(|source| KeyError::Write {
            path: shown,
            source,
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs a C2SP signed-note text (a checkpoint) under key name `name`.
    /// Note texts never contain NUL, and every domain tag does, so a note
    /// signature can never pass as one of the tagged signatures below.
    pub fn sign_note(
        &self,
        text: &str,
        name: &str,
    ) -> Result<crate::audit::note::NoteSignature, crate::audit::note::NoteError> {
        crate::audit::note::sign_note(text, name, &self.key)
    }

    /// Cosigns another log's checkpoint (C2SP tlog-cosignature).
    pub fn cosign_note(
        &self,
        checkpoint: &str,
        name: &str,
        timestamp: u64,
    ) -> Result<crate::audit::note::NoteSignature, crate::audit::note::NoteError> {
        crate::audit::note::cosign(checkpoint, name, &self.key, timestamp)
    }

    /// Signs `payload` for `purpose`.
    pub fn sign(&self, purpose: Purpose, payload: &[u8]) -> [u8; 64] {
        let mut msg = Vec::with_capacity(purpose.tag().len() + payload.len());
        msg.extend_from_slice(purpose.tag());
        msg.extend_from_slice(payload);
        self.key.sign(&msg).to_bytes()
    }
}

/// Verifies `signature` over `payload` for `purpose`, strictly.
pub fn verify(
    key: &VerifyingKey,
    purpose: Purpose,
    payload: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let sig = Signature::from_slice(signature).map_err(|_| SignatureError::Malformed)?;
    let mut msg = Vec::with_capacity(purpose.tag().len() + payload.len());
    msg.extend_from_slice(purpose.tag());
    msg.extend_from_slice(payload);
    key.verify_strict(&msg, &sig)
        .map_err(|_| SignatureError::Invalid)
}

/// Parses a base64 public key from the directory, refusing weak keys.
pub fn parse_public_key(b64: &str) -> Result<VerifyingKey, KeyError> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| KeyError::PublicKeyFormat(b64.to_owned()))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| KeyError::PublicKeyFormat(b64.to_owned()))?;
    let key =
        VerifyingKey::from_bytes(&arr).map_err(|_| KeyError::PublicKeyFormat(b64.to_owned()))?;
    if key.is_weak() {
        return Err(KeyError::WeakKey(b64.to_owned()));
    }
    Ok(key)
}

pub fn encode_public_key(key: &VerifyingKey) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
}

pub(crate) enum PrivateFileError {
    Io(std::io::Error),
    Mode(u32),
}

/// Refuses a secret file that group or others can read or write.
pub(crate) fn check_private_file(path: &Path) -> Result<(), PrivateFileError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(PrivateFileError::Io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::Mode(mode));
    }
    Ok(())
}

/// Creates (or replaces) a file only its owner can read.
pub(crate) fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_purpose_and_bytes() {
        let key = NodeKey::generate();
        let sig = key.sign(Purpose::Receipt, b"payload");
        let vk = key.verifying_key();
        assert_eq!(verify(&vk, Purpose::Receipt, b"payload", &sig), Ok(()));
        assert_eq!(
            verify(&vk, Purpose::Report, b"payload", &sig),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(&vk, Purpose::Receipt, b"paylaod", &sig),
            Err(SignatureError::Invalid)
        );
        let mut flipped = sig;
        flipped[10] ^= 1;
        assert_eq!(
            verify(&vk, Purpose::Receipt, b"payload", &flipped),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(&vk, Purpose::Receipt, b"payload", &sig[..63]),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn keys_round_trip_and_loose_permissions_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let key = NodeKey::generate();
        key.save(&path).unwrap();
        let loaded = NodeKey::load(&path).unwrap();
        assert_eq!(loaded.key_id(), key.key_id());
        assert!(!format!("{loaded:?}").contains("BEGIN"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            NodeKey::load(&path),
            Err(KeyError::Permissions { .. })
        ));
    }

    #[test]
    fn weak_public_keys_are_refused() {
        use base64::Engine;
        // The identity point (y = 1) has small order.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let b64 = base64::engine::general_purpose::STANDARD.encode(weak);
        assert!(matches!(parse_public_key(&b64), Err(KeyError::WeakKey(_))));
        let good = NodeKey::generate().verifying_key();
        assert_eq!(parse_public_key(&encode_public_key(&good)).unwrap(), good);
    }
}
