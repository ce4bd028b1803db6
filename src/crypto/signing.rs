//! Ed25519 signing keys, key ids, and signatures under per-purpose domain tags.
//!
//! Every signature alertrelay makes is over `DOMAIN_TAG || payload`, where the
//! tag names the purpose. A signature made for one purpose therefore never
//! verifies for another (a receipt signature cannot pass as a report's).
//! Verification follows one rule alone and in batches (`crypto::ed25519`:
//! canonical encodings, no small-order points, the cofactored equation)
//! over the exact bytes received.

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
    /// A version of the federation directory, by a directory key.
    Directory,
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
            Purpose::Directory => b"alertrelay/v1/directory\0",
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

    /// The Ed25519 key itself, for the signed-note formats
    /// (`audit::note`: checkpoints and cosignatures). Note texts never
    /// contain NUL, and every domain tag does, so a note signature can
    /// never pass as one of the tagged signatures below.
    pub(crate) fn signing_key(&self) -> &ed25519_dalek::SigningKey {
        &self.key
    }

    /// Signs `payload` for `purpose`.
    pub fn sign(&self, purpose: Purpose, payload: &[u8]) -> [u8; 64] {
        with_message(purpose, payload, |msg| self.key.sign(msg).to_bytes())
    }
}

/// Verifies `signature` over `payload` for `purpose`, strictly — or, inside
/// [`verify_batched`], checks what can be checked alone and leaves the
/// signature equation to the batch.
pub fn verify(
    key: &VerifyingKey,
    purpose: Purpose,
    payload: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let sig = Signature::from_slice(signature).map_err(|_| SignatureError::Malformed)?;
    let deferred = DEFERRED.with_borrow_mut(|d| {
        let d = d.as_mut()?;
        Some(d.push(key, purpose, payload, &sig))
    });
    if let Some(r) = deferred {
        return r;
    }
    if with_message(purpose, payload, |msg| {
        super::ed25519::verify(key, msg, &sig)
    }) {
        Ok(())
    } else {
        Err(SignatureError::Invalid)
    }
}

/// Verifies a signature over `message` as it is, with no domain tag (the
/// signed-note formats of `audit::note`, whose texts never hold the NUL
/// that ends every tag), by the same rule as [`verify`].
pub fn verify_untagged(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
    super::ed25519::verify(key, message, signature)
}

/// Runs `f` with its signature checks ([`verify`]) deferred and then
/// checked together in one Ed25519 batch: about 40% less CPU per signature
/// for a batch of envelopes. If `f` fails, or the batch does not hold, `f`
/// runs again with every check made alone, so a failure is the very error
/// the single checks give, for the very item that fails.
///
/// A batch accepts exactly what [`verify`] accepts alone: the same rule
/// (`crypto::ed25519`), with random coefficients no signer can choose.
pub fn verify_batched<T, E>(f: impl Fn() -> Result<T, E>) -> Result<T, E> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DEFERRED.with_borrow_mut(|d| *d = None);
        }
    }
    let (first, batch) = {
        let _reset = Reset;
        DEFERRED.with_borrow_mut(|d| *d = Some(Deferred::default()));
        let first = f();
        (first, DEFERRED.with_borrow_mut(|d| d.take()))
    };
    match (first, batch) {
        (Ok(v), Some(b)) if b.holds() => Ok(v),
        _ => f(),
    }
}

thread_local! {
    /// Signature checks deferred by [`verify_batched`] on this thread.
    static DEFERRED: std::cell::RefCell<Option<Deferred>> =
        const { std::cell::RefCell::new(None) };
    /// Reused for `tag || payload`, the bytes every signature covers.
    static MESSAGE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` over `tag || payload`, built in a per-thread buffer.
fn with_message<T>(purpose: Purpose, payload: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    MESSAGE.with_borrow_mut(|msg| {
        msg.clear();
        msg.extend_from_slice(purpose.tag());
        msg.extend_from_slice(payload);
        let out = f(msg);
        // A large payload's buffer is not kept.
        if msg.capacity() > 64 * 1024 {
            *msg = Vec::new();
        }
        out
    })
}

/// Signature checks gathered for one batch: every message back to back in
/// one buffer.
#[derive(Default)]
struct Deferred {
    prepared: Vec<super::ed25519::Prepared>,
}

impl Deferred {
    fn push(
        &mut self,
        key: &VerifyingKey,
        purpose: Purpose,
        payload: &[u8],
        sig: &Signature,
    ) -> Result<(), SignatureError> {
        // Everything but the equation is checked now, alone.
        let prepared = with_message(purpose, payload, |msg| {
            super::ed25519::prepare(key, msg, sig)
        })
        .ok_or(SignatureError::Invalid)?;
        self.prepared.push(prepared);
        Ok(())
    }

    fn holds(&self) -> bool {
        super::ed25519::all_hold(&self.prepared)
    }
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
    fn a_batch_accepts_good_signatures_and_a_bad_one_fails_as_it_would_alone() {
        let keys: Vec<NodeKey> = (0..3).map(|_| NodeKey::generate()).collect();
        let items: Vec<(VerifyingKey, Vec<u8>, [u8; 64])> = (0..100u32)
            .map(|i| {
                let k = &keys[i as usize % 3];
                let payload = format!("report {i}").into_bytes();
                let sig = k.sign(Purpose::Report, &payload);
                (k.verifying_key(), payload, sig)
            })
            .collect();
        let first_failure = |items: &[(VerifyingKey, Vec<u8>, [u8; 64])]| {
            verify_batched(|| {
                for (i, (vk, payload, sig)) in items.iter().enumerate() {
                    verify(vk, Purpose::Report, payload, sig).map_err(|e| (i, e))?;
                }
                Ok::<_, (usize, SignatureError)>(())
            })
        };
        assert_eq!(first_failure(&items), Ok(()));
        let mut bad = items.clone();
        bad[57].2[40] ^= 1;
        assert_eq!(first_failure(&bad), Err((57, SignatureError::Invalid)));
        // Right signature, wrong purpose: still the strict error.
        let wrong_purpose =
            verify_batched(|| verify(&items[3].0, Purpose::Hop, &items[3].1, &items[3].2));
        assert_eq!(wrong_purpose, Err(SignatureError::Invalid));
        // Nothing stays deferred on the thread afterwards.
        assert!(DEFERRED.with_borrow(|d| d.is_none()));
        assert_eq!(
            verify(&items[0].0, Purpose::Report, &items[0].1, &bad[57].2),
            Err(SignatureError::Invalid)
        );
    }

    /// A key's holder can make a signature whose `R` is the identity (or
    /// another encoding of it): the plain batch equation holds for it, but
    /// `verify_strict` refuses it, and so must a batch.
    #[test]
    fn signatures_with_a_small_order_or_non_canonical_r_are_refused_in_a_batch_too() {
        use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
        use curve25519_dalek::scalar::Scalar;
        use rand::RngCore;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let x = Scalar::from_bytes_mod_order(seed);
        let a = (x * ED25519_BASEPOINT_POINT).compress().to_bytes();
        let vk = VerifyingKey::from_bytes(&a).unwrap();
        let payload = b"crafted";
        let mut identity = [0u8; 32];
        identity[0] = 1;
        // y = p + 1, which reduces to 1: the identity again.
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        for r in [identity, non_canonical] {
            let mut h = sha2::Sha512::new();
            h.update(r);
            h.update(a);
            h.update(Purpose::Report.tag());
            h.update(payload);
            let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&r);
            sig[32..].copy_from_slice((k * x).as_bytes());
            // The batch equation alone would take it.
            let mut msg = Purpose::Report.tag().to_vec();
            msg.extend_from_slice(payload);
            let parsed = Signature::from_bytes(&sig);
            assert!(ed25519_dalek::verify_batch(&[&msg], &[parsed], &[vk]).is_ok());
            assert_eq!(
                verify(&vk, Purpose::Report, payload, &sig),
                Err(SignatureError::Invalid)
            );
            assert!(DEFERRED.with_borrow(|d| d.is_none()));
            let batched = verify_batched(|| verify(&vk, Purpose::Report, payload, &sig));
            assert_eq!(batched, Err(SignatureError::Invalid));
        }
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
