//! C2SP signed notes (c2sp.org/signed-note), transparency log checkpoints
//! (c2sp.org/tlog-checkpoint) and timestamped Ed25519 cosignatures
//! (c2sp.org/tlog-cosignature): the text formats, strict parsers, and
//! Ed25519 signing and verification. Pure: no IO, no clock.
//!
//! Domain separation. The project rule is one domain tag per purpose, so
//! that no signature can be replayed as another. The node's one Ed25519
//! key signs three kinds of message, and they can never coincide:
//!
//! - `crypto::signing` messages start with a tag such as
//!   `alertrelay/v1/checkpoint\0`, and every tag ends in NUL;
//! - a signed note's text (here, always a checkpoint body starting with
//!   the log's origin line) may not contain NUL or any other control
//!   character but newline, so the signed-note format itself is the
//!   domain separation for checkpoints; [`sign_note`] refuses any other
//!   text rather than rely on callers;
//! - a cosignature's message starts with the line `cosignature/v1`, and
//!   [`sign_note`] and [`verify_note`] refuse note texts whose first line
//!   starts with `cosignature/`, so a cosignature never passes as a note
//!   signature nor the other way round (the key IDs differ too, by the
//!   signature type byte, but a key ID is a hint, not a check).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::merkle::Hash;

/// The signature line prefix: em dash (U+2014) and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Signature type of plain Ed25519 note signatures (signed-note).
const TYPE_ED25519: u8 = 0x01;
/// Signature type of timestamped Ed25519 cosignatures (tlog-cosignature).
const TYPE_COSIGNATURE_V1: u8 = 0x04;

/// The first line of every cosignature/v1 signed message.
const COSIGNATURE_HEADER: &str = "cosignature/v1\n";
/// Note texts starting with this are refused, so that the texts of plain
/// notes and the messages of cosignatures (this and any later version)
/// stay disjoint.
const RESERVED_PREFIX: &str = "cosignature/";

/// The most signature lines [`SignedNote::parse`] reads (the spec asks for
/// at least 16; this is the limit golang.org/x/mod/sumdb/note uses).
pub const MAX_SIGNATURES: usize = 100;

const ED25519_SIGNATURE_LEN: usize = 64;
const TIMESTAMP_LEN: usize = 8;

/// Why a note, a checkpoint or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("contains a control character other than newline")]
    ControlCharacter,
    #[error("note text is empty or does not end with a newline")]
    TextNotNewlineTerminated,
    #[error("no blank line separates the text from the signatures")]
    MissingBlankLine,
    #[error("the signature block is empty or does not end with a newline")]
    BadSignatureBlock,
    #[error("more than {MAX_SIGNATURES} signature lines")]
    TooManySignatures,
    #[error("signature line {line} does not start with an em dash and a space")]
    BadSignaturePrefix { line: usize },
    #[error("signature line {line} has an invalid key name")]
    BadSignatureKeyName { line: usize },
    #[error("signature line {line} is not one canonical base64 value")]
    BadSignatureBase64 { line: usize },
    #[error("signature line {line} is shorter than a key ID and a signature")]
    SignatureTooShort { line: usize },
    #[error("invalid key name {0:?}: it must be non-empty, without spaces or '+'")]
    InvalidKeyName(String),
    #[error("note texts starting with {RESERVED_PREFIX:?} are reserved for cosignatures")]
    ReservedText,
    #[error("a checkpoint needs an origin, a size and a root hash line")]
    CheckpointTooShort,
    #[error("the checkpoint origin is empty")]
    EmptyOrigin,
    #[error("the checkpoint tree size is not a decimal number without leading zeros")]
    BadTreeSize,
    #[error("the checkpoint root hash is not the base64 of 32 bytes")]
    BadRootHash,
    #[error("a checkpoint extension line is empty")]
    EmptyExtensionLine,
    #[error("no signature from key {name} with key ID {key_id}")]
    NoMatchingSignature { name: String, key_id: String },
    #[error("the signature is from key {got}, not {want}")]
    KeyMismatch { got: String, want: String },
    #[error("the signature is {got} bytes where {want} are expected")]
    WrongSignatureLength { got: usize, want: usize },
    #[error("the cosignature timestamp exceeds 2^63 - 1")]
    TimestampOutOfRange,
    #[error("the signature does not verify")]
    InvalidSignature,
}

/// A transparency log checkpoint: the note text of a signed tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity; also the key name the log signs under.
    pub origin: String,
    /// The number of leaves.
    pub size: u64,
    /// The RFC 6962 root hash at that size.
    pub root: Hash,
    /// Opaque extra lines (not recommended by the spec; we write none).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text: origin, decimal size, base64 root, then extension
    /// lines, each ending in a newline. Only a checkpoint that passes
    /// [`validate`](Self::validate) gives a text that parses back to it.
    pub fn body(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for line in &self.extensions {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Checks the fields against the rules [`parse_body`](Self::parse_body)
    /// enforces, so a caller can refuse a bad origin before signing.
    pub fn validate(&self) -> Result<(), NoteError> {
        check_origin(&self.origin)?;
        self.extensions
            .iter()
            .try_for_each(|line| check_extension(line))
    }

    /// Parses a checkpoint note text, strictly: exactly newline-terminated
    /// lines; a non-empty origin; the size in decimal without leading zeros
    /// (but "0"), within u64; the root as canonical base64 of exactly 32
    /// bytes; non-empty extension lines; no control characters; nothing
    /// after the final newline.
    pub fn parse_body(text: &str) -> Result<Checkpoint, NoteError> {
        let Some(body) = text.strip_suffix('\n') else {
            return Err(NoteError::TextNotNewlineTerminated);
        };
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(NoteError::CheckpointTooShort);
        };
        check_origin(origin)?;
        let size = parse_size(size)?;
        let root = parse_root(root)?;
        let extensions = lines
            .map(|line| check_extension(line).map(|()| line.to_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

fn check_origin(origin: &str) -> Result<(), NoteError> {
    if origin.is_empty() {
        return Err(NoteError::EmptyOrigin);
    }
    // The spec only recommends an origin without spaces or '+'; clients
    // must not assume it, so only what would break the format is refused.
    if origin.chars().any(char::is_control) {
        return Err(NoteError::ControlCharacter);
    }
    Ok(())
}

fn check_extension(line: &str) -> Result<(), NoteError> {
    if line.is_empty() {
        return Err(NoteError::EmptyExtensionLine);
    }
    if line.chars().any(char::is_control) {
        return Err(NoteError::ControlCharacter);
    }
    Ok(())
}

/// ASCII decimal, no sign, no leading zeros except "0" itself: one tree
/// size has exactly one spelling, so one checkpoint has one text.
fn parse_size(s: &str) -> Result<u64, NoteError> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if !canonical {
        return Err(NoteError::BadTreeSize);
    }
    s.parse().map_err(|_| NoteError::BadTreeSize)
}

fn parse_root(s: &str) -> Result<Hash, NoteError> {
    // The STANDARD engine requires padding and refuses non-zero trailing
    // bits, so only the canonical 44-character spelling decodes.
    STANDARD
        .decode(s)
        .ok()
        .and_then(|bytes| Hash::try_from(bytes.as_slice()).ok())
        .ok_or(NoteError::BadRootHash)
}

/// One signature line of a note: the key name, the 4-byte key ID, and the
/// signature bytes after it (for a cosignature: timestamp, then signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_hash: [u8; 4],
    pub signature: Vec<u8>,
}

/// A note text and its signature lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The signed text, including its final newline.
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// The text, a blank line, then one line `— <name> <base64(key ID ||
    /// signature)>` per signature. A note with no signatures, or with a
    /// text that [`parse`](Self::parse) would refuse, does not parse back.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 1 + 128 * self.signatures.len());
        out.push_str(&self.text);
        out.push('\n');
        for sig in &self.signatures {
            let mut bytes = Vec::with_capacity(4 + sig.signature.len());
            bytes.extend_from_slice(&sig.key_hash);
            bytes.extend_from_slice(&sig.signature);
            out.push_str(SIGNATURE_PREFIX);
            out.push_str(&sig.name);
            out.push(' ');
            out.push_str(&STANDARD.encode(bytes));
            out.push('\n');
        }
        out
    }

    /// Parses a signed note, strictly per c2sp.org/signed-note: no control
    /// characters but newline; the text ends at the last blank line; then
    /// one to [`MAX_SIGNATURES`] lines of exactly em dash, space, a valid
    /// key name, one space, and canonical base64 of at least five bytes;
    /// nothing after the last newline. Signatures are not checked here.
    pub fn parse(s: &str) -> Result<SignedNote, NoteError> {
        check_note_chars(s)?;
        // The text keeps its final newline; the blank line is dropped.
        let split = s.rfind("\n\n").ok_or(NoteError::MissingBlankLine)?;
        let (text, sigs) = (&s[..=split], &s[split + 2..]);
        let Some(sigs) = sigs.strip_suffix('\n') else {
            return Err(NoteError::BadSignatureBlock);
        };
        if sigs.is_empty() {
            return Err(NoteError::BadSignatureBlock);
        }
        let mut signatures = Vec::new();
        for (i, line) in sigs.split('\n').enumerate() {
            if i == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(parse_signature_line(line, i + 1)?);
        }
        Ok(SignedNote {
            text: text.to_owned(),
            signatures,
        })
    }
}

fn parse_signature_line(line: &str, number: usize) -> Result<NoteSignature, NoteError> {
    let rest = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(NoteError::BadSignaturePrefix { line: number })?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or(NoteError::BadSignatureBase64 { line: number })?;
    if !is_valid_key_name(name) {
        return Err(NoteError::BadSignatureKeyName { line: number });
    }
    // An empty value, a second space or any other stray character fails.
    if b64.is_empty() {
        return Err(NoteError::BadSignatureBase64 { line: number });
    }
    let bytes = STANDARD
        .decode(b64)
        .map_err(|_| NoteError::BadSignatureBase64 { line: number })?;
    let (Some(key_hash), Some(signature)) = (bytes.first_chunk::<4>(), bytes.get(4..)) else {
        return Err(NoteError::SignatureTooShort { line: number });
    };
    if signature.is_empty() {
        return Err(NoteError::SignatureTooShort { line: number });
    }
    Ok(NoteSignature {
        name: name.to_owned(),
        key_hash: *key_hash,
        signature: signature.to_vec(),
    })
}

/// Signed notes are UTF-8 (a `&str` already is) without ASCII control
/// characters other than newline.
fn check_note_chars(s: &str) -> Result<(), NoteError> {
    if s.bytes().any(|b| b < 0x20 && b != b'\n') {
        return Err(NoteError::ControlCharacter);
    }
    Ok(())
}

/// Checks a text this module signs or verifies as a plain note: ends in a
/// newline, no control characters but newline, not in the cosignature
/// namespace (see the module doc).
fn check_note_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::TextNotNewlineTerminated);
    }
    check_note_chars(text)?;
    if text.starts_with(RESERVED_PREFIX) {
        return Err(NoteError::ReservedText);
    }
    Ok(())
}

/// Key names are non-empty, without Unicode white space, '+' or control
/// characters.
fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(NoteError::InvalidKeyName(name.to_owned()))
    }
}

/// SHA-256(name || 0x0A || type || public key)[:4].
fn typed_key_hash(name: &str, signature_type: u8, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', signature_type]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 4];
    id.copy_from_slice(&digest[..4]);
    id
}

/// The key ID of an Ed25519 note signing key (signature type 0x01).
pub fn key_hash(name: &str, key: &VerifyingKey) -> [u8; 4] {
    typed_key_hash(name, TYPE_ED25519, key)
}

/// The key ID of an Ed25519 cosigner key (signature type 0x04).
pub fn cosigner_key_hash(name: &str, key: &VerifyingKey) -> [u8; 4] {
    typed_key_hash(name, TYPE_COSIGNATURE_V1, key)
}

/// Signs a note text with Ed25519 under key name `name`. Refuses an invalid
/// key name and any text [`SignedNote::parse`] would not give back, or that
/// falls in the cosignature namespace: the domain separation in the module
/// doc holds only because such texts are never signed.
pub fn sign_note(text: &str, name: &str, key: &SigningKey) -> Result<NoteSignature, NoteError> {
    check_key_name(name)?;
    check_note_text(text)?;
    Ok(NoteSignature {
        name: name.to_owned(),
        key_hash: key_hash(name, &key.verifying_key()),
        signature: key.sign(text.as_bytes()).to_bytes().to_vec(),
    })
}

/// Verifies the note's signature by `name` with `key`: every signature line
/// with that name and the key's ID must verify (strictly), and there must
/// be at least one. Lines of other keys are ignored, as the spec requires.
pub fn verify_note(note: &SignedNote, name: &str, key: &VerifyingKey) -> Result<(), NoteError> {
    check_note_text(&note.text)?;
    let id = key_hash(name, key);
    let mut found = false;
    for sig in note
        .signatures
        .iter()
        .filter(|s| s.name == name && s.key_hash == id)
    {
        let signature =
            Signature::from_slice(&sig.signature).map_err(|_| NoteError::WrongSignatureLength {
                got: sig.signature.len(),
                want: ED25519_SIGNATURE_LEN,
            })?;
        if !crate::crypto::signing::verify_untagged(key, note.text.as_bytes(), &signature) {
            return Err(NoteError::InvalidSignature);
        }
        found = true;
    }
    if found {
        Ok(())
    } else {
        Err(NoteError::NoMatchingSignature {
            name: name.to_owned(),
            key_id: hex::encode(id),
        })
    }
}

/// The cosignature/v1 signed message: header line, time line, then the
/// checkpoint body.
fn cosigned_message(checkpoint_body: &str, timestamp: u64) -> String {
    format!("{COSIGNATURE_HEADER}time {timestamp}\n{checkpoint_body}")
}

/// Cosigns a checkpoint body (c2sp.org/tlog-cosignature, Ed25519, type
/// 0x04) at `timestamp` (POSIX seconds). Refuses an invalid key name, a
/// body that is not a valid checkpoint, and a timestamp above 2^63 - 1.
pub fn cosign(
    checkpoint_body: &str,
    name: &str,
    key: &SigningKey,
    timestamp: u64,
) -> Result<NoteSignature, NoteError> {
    check_key_name(name)?;
    Checkpoint::parse_body(checkpoint_body)?;
    if i64::try_from(timestamp).is_err() {
        return Err(NoteError::TimestampOutOfRange);
    }
    let message = cosigned_message(checkpoint_body, timestamp);
    let mut signature = Vec::with_capacity(TIMESTAMP_LEN + ED25519_SIGNATURE_LEN);
    signature.extend_from_slice(&timestamp.to_be_bytes());
    signature.extend_from_slice(&key.sign(message.as_bytes()).to_bytes());
    Ok(NoteSignature {
        name: name.to_owned(),
        key_hash: cosigner_key_hash(name, &key.verifying_key()),
        signature,
    })
}

/// Verifies a cosignature line over a checkpoint body by cosigner `name`
/// with `key`, strictly, and returns its timestamp. The timestamp is only
/// the cosigner's claim; whether it is recent enough is the caller's call.
pub fn verify_cosignature(
    checkpoint_body: &str,
    sig: &NoteSignature,
    name: &str,
    key: &VerifyingKey,
) -> Result<u64, NoteError> {
    let id = cosigner_key_hash(name, key);
    if sig.name != name || sig.key_hash != id {
        return Err(NoteError::KeyMismatch {
            got: format!("{}+{}", sig.name, hex::encode(sig.key_hash)),
            want: format!("{name}+{}", hex::encode(id)),
        });
    }
    Checkpoint::parse_body(checkpoint_body)?;
    let (Some(timestamp), Some(signature)) = (
        sig.signature.first_chunk::<TIMESTAMP_LEN>(),
        sig.signature.get(TIMESTAMP_LEN..),
    ) else {
        return Err(NoteError::WrongSignatureLength {
            got: sig.signature.len(),
            want: TIMESTAMP_LEN + ED25519_SIGNATURE_LEN,
        });
    };
    let signature =
        Signature::from_slice(signature).map_err(|_| NoteError::WrongSignatureLength {
            got: sig.signature.len(),
            want: TIMESTAMP_LEN + ED25519_SIGNATURE_LEN,
        })?;
    let timestamp = u64::from_be_bytes(*timestamp);
    if i64::try_from(timestamp).is_err() {
        return Err(NoteError::TimestampOutOfRange);
    }
    let message = cosigned_message(checkpoint_body, timestamp);
    if !crate::crypto::signing::verify_untagged(key, message.as_bytes(), &signature) {
        return Err(NoteError::InvalidSignature);
    }
    Ok(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "example.org/hotline/a/audit".into(),
            size: 20852163,
            root: super::super::merkle::leaf_hash(b"x"),
            extensions: vec![],
        }
    }

    /// Decodes a golang.org/x/mod/sumdb/note key's base64 part into its
    /// algorithm byte and key bytes.
    fn go_key_material(b64: &str) -> (u8, [u8; 32]) {
        let bytes = STANDARD.decode(b64).unwrap();
        (bytes[0], bytes[1..].try_into().unwrap())
    }

    // ---- Checkpoints ------------------------------------------------------

    #[test]
    fn checkpoint_round_trips() {
        let cp = checkpoint();
        let body = cp.body();
        assert!(body.starts_with("example.org/hotline/a/audit\n20852163\n"));
        assert!(body.ends_with("=\n"));
        assert_eq!(Checkpoint::parse_body(&body), Ok(cp.clone()));
        let with_ext = Checkpoint {
            extensions: vec!["ext one".into(), "— two".into()],
            ..cp
        };
        assert_eq!(with_ext.validate(), Ok(()));
        assert_eq!(Checkpoint::parse_body(&with_ext.body()), Ok(with_ext));
        let empty = Checkpoint {
            size: 0,
            root: super::super::merkle::empty_root(),
            ..checkpoint()
        };
        assert!(
            empty
                .body()
                .contains("\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n")
        );
        assert_eq!(Checkpoint::parse_body(&empty.body()), Ok(empty));
    }

    /// The example checkpoint of C2SP tlog-checkpoint.md ("Note text").
    #[test]
    fn spec_example_checkpoint_parses() {
        let body =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let cp = Checkpoint::parse_body(body).unwrap();
        assert_eq!(cp.origin, "example.com/behind-the-sofa");
        assert_eq!(cp.size, 20852163);
        assert_eq!(cp.body(), body);
    }

    #[test]
    fn checkpoint_parse_refusals() {
        let root = STANDARD.encode([0xfbu8; 32]);
        let ok = format!("o\n5\n{root}\n");
        assert!(Checkpoint::parse_body(&ok).is_ok());
        let cases: Vec<(String, NoteError)> = vec![
            (format!("o\n5\n{root}"), NoteError::TextNotNewlineTerminated),
            (format!("o\n5\n{root}\n\n"), NoteError::EmptyExtensionLine),
            (
                format!("o\n5\n{root}\nx\n\n"),
                NoteError::EmptyExtensionLine,
            ),
            (format!("o\n5\n{root}\nx\ty\n"), NoteError::ControlCharacter),
            ("o\n5\n".into(), NoteError::CheckpointTooShort),
            ("".into(), NoteError::TextNotNewlineTerminated),
            (format!("\n5\n{root}\n"), NoteError::EmptyOrigin),
            (format!("o\x00\n5\n{root}\n"), NoteError::ControlCharacter),
            (format!("o\r\n5\n{root}\n"), NoteError::ControlCharacter),
            (format!("o\n05\n{root}\n"), NoteError::BadTreeSize),
            (format!("o\n00\n{root}\n"), NoteError::BadTreeSize),
            (format!("o\n+5\n{root}\n"), NoteError::BadTreeSize),
            (format!("o\n-5\n{root}\n"), NoteError::BadTreeSize),
            (format!("o\n 5\n{root}\n"), NoteError::BadTreeSize),
            (format!("o\n5 \n{root}\n"), NoteError::BadTreeSize),
            (format!("o\n0x5\n{root}\n"), NoteError::BadTreeSize),
            (format!("o\n\n{root}\n"), NoteError::BadTreeSize),
            (format!("o\n５\n{root}\n"), NoteError::BadTreeSize),
            (
                format!("o\n18446744073709551616\n{root}\n"),
                NoteError::BadTreeSize,
            ),
            ("o\n5\nAAAA\n".into(), NoteError::BadRootHash),
            (
                format!("o\n5\n{}\n", STANDARD.encode([7u8; 33])),
                NoteError::BadRootHash,
            ),
            (
                format!("o\n5\n{}\n", STANDARD.encode([7u8; 31])),
                NoteError::BadRootHash,
            ),
            (
                format!("o\n5\n{}\n", root.trim_end_matches('=')),
                NoteError::BadRootHash,
            ),
            (format!("o\n5\n{root} \n"), NoteError::BadRootHash),
            (format!("o\n5\n{root}=\n"), NoteError::BadRootHash),
            (
                format!("o\n5\n{}\n", root.replace('/', "_")),
                NoteError::BadRootHash,
            ),
            // Non-zero trailing bits: a lenient decoder reads the same 32
            // bytes, but it is not the canonical spelling.
            (
                "o\n5\n+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/t=\n".into(),
                NoteError::BadRootHash,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Checkpoint::parse_body(&text), Err(want), "{text:?}");
        }
        assert_eq!(
            Checkpoint::parse_body(&format!("o\n18446744073709551615\n{root}\n"))
                .unwrap()
                .size,
            u64::MAX
        );
    }

    #[test]
    fn checkpoint_validate_refuses_what_would_not_parse_back() {
        let bad_origin = Checkpoint {
            origin: "a\nb".into(),
            ..checkpoint()
        };
        assert_eq!(bad_origin.validate(), Err(NoteError::ControlCharacter));
        let empty_origin = Checkpoint {
            origin: String::new(),
            ..checkpoint()
        };
        assert_eq!(empty_origin.validate(), Err(NoteError::EmptyOrigin));
        let empty_ext = Checkpoint {
            extensions: vec![String::new()],
            ..checkpoint()
        };
        assert_eq!(empty_ext.validate(), Err(NoteError::EmptyExtensionLine));
    }

    // ---- Signed notes -----------------------------------------------------

    #[test]
    fn signed_note_round_trips() {
        let text = checkpoint().body();
        let (a, b) = (key(1), key(2));
        let note = SignedNote {
            text: text.clone(),
            signatures: vec![
                sign_note(&text, "a.example/log", &a).unwrap(),
                sign_note(&text, "b.example/log", &b).unwrap(),
            ],
        };
        let encoded = note.encode();
        assert!(encoded.starts_with(&format!("{text}\n\u{2014} a.example/log ")));
        let parsed = SignedNote::parse(&encoded).unwrap();
        assert_eq!(parsed, note);
        assert_eq!(parsed.encode(), encoded);
        assert_eq!(
            verify_note(&parsed, "a.example/log", &a.verifying_key()),
            Ok(())
        );
        assert_eq!(
            verify_note(&parsed, "b.example/log", &b.verifying_key()),
            Ok(())
        );
        // Right name, wrong key; right key, wrong name.
        assert!(matches!(
            verify_note(&parsed, "a.example/log", &b.verifying_key()),
            Err(NoteError::NoMatchingSignature { .. })
        ));
        assert!(matches!(
            verify_note(&parsed, "b.example/log", &a.verifying_key()),
            Err(NoteError::NoMatchingSignature { .. })
        ));
    }

    #[test]
    fn a_note_text_may_contain_blank_lines() {
        let text = "first\n\nsecond\n";
        let k = key(3);
        let note = SignedNote {
            text: text.into(),
            signatures: vec![sign_note(text, "k", &k).unwrap()],
        };
        let parsed = SignedNote::parse(&note.encode()).unwrap();
        assert_eq!(parsed.text, text);
        assert_eq!(verify_note(&parsed, "k", &k.verifying_key()), Ok(()));
    }

    #[test]
    fn a_signature_over_one_note_does_not_verify_another() {
        let k = key(4);
        let first = checkpoint().body();
        let second = Checkpoint {
            size: 20852164,
            ..checkpoint()
        }
        .body();
        let sig = sign_note(&first, "log", &k).unwrap();
        let forged = SignedNote {
            text: second,
            signatures: vec![sig],
        };
        assert_eq!(
            verify_note(&forged, "log", &k.verifying_key()),
            Err(NoteError::InvalidSignature)
        );
    }

    #[test]
    fn a_bad_signature_from_the_key_spoils_the_note() {
        let k = key(5);
        let text = checkpoint().body();
        let good = sign_note(&text, "log", &k).unwrap();
        let mut bad = good.clone();
        bad.signature[0] ^= 1;
        let note = SignedNote {
            text,
            signatures: vec![good, bad],
        };
        assert_eq!(
            verify_note(&note, "log", &k.verifying_key()),
            Err(NoteError::InvalidSignature)
        );
    }

    #[test]
    fn signing_refuses_bad_names_and_texts() {
        let k = key(6);
        for name in ["", "a b", "a+b", "a\u{a0}b", "a\tb", "a\u{2028}b"] {
            assert_eq!(
                sign_note("t\n", name, &k),
                Err(NoteError::InvalidKeyName(name.into())),
                "{name:?}"
            );
        }
        assert_eq!(
            sign_note("t", "k", &k),
            Err(NoteError::TextNotNewlineTerminated)
        );
        assert_eq!(
            sign_note("", "k", &k),
            Err(NoteError::TextNotNewlineTerminated)
        );
        assert_eq!(
            sign_note("a\0b\n", "k", &k),
            Err(NoteError::ControlCharacter)
        );
        // A crypto::signing message always contains NUL, so it can never
        // be signed as a note.
        assert_eq!(
            sign_note("alertrelay/v1/checkpoint\0x\n", "k", &k),
            Err(NoteError::ControlCharacter)
        );
        assert_eq!(
            sign_note("cosignature/v1\ntime 1\no\n", "k", &k),
            Err(NoteError::ReservedText)
        );
        assert_eq!(
            sign_note("cosignature/v2\n", "k", &k),
            Err(NoteError::ReservedText)
        );
    }

    #[test]
    fn parse_refusals() {
        let k = key(7);
        let text = "hello\n";
        let good = SignedNote {
            text: text.into(),
            signatures: vec![sign_note(text, "k", &k).unwrap()],
        }
        .encode();
        assert!(SignedNote::parse(&good).is_ok());
        let line = good.strip_prefix("hello\n\n").unwrap();
        let b64 = line
            .strip_prefix("\u{2014} k ")
            .unwrap()
            .strip_suffix('\n')
            .unwrap();
        let cases = block_refusals(&good, line)
            .into_iter()
            .chain(signature_line_refusals(b64))
            .chain(content_refusals(&good, line));
        for (s, want) in cases {
            assert_eq!(SignedNote::parse(&s), Err(want), "{s:?}");
        }
        // Exactly the limit is fine; five bytes is the shortest signature.
        let many = format!("hello\n\n{}", line.repeat(MAX_SIGNATURES));
        assert_eq!(
            SignedNote::parse(&many).unwrap().signatures.len(),
            MAX_SIGNATURES
        );
        assert_eq!(
            SignedNote::parse("hello\n\n\u{2014} k AAAAAAE=\n")
                .unwrap()
                .signatures[0]
                .signature,
            vec![1]
        );
    }

    /// Notes of `parse_refusals` without the blank line after the text or
    /// without a well-formed signature block; `good` is a signed "hello\n"
    /// and `line` its signature line.
    fn block_refusals(good: &str, line: &str) -> Vec<(String, NoteError)> {
        vec![
            ("hello\n".into(), NoteError::MissingBlankLine),
            (format!("hello\n{line}"), NoteError::MissingBlankLine),
            ("hello\n\n".into(), NoteError::BadSignatureBlock),
            (
                good.strip_suffix('\n').unwrap().into(),
                NoteError::BadSignatureBlock,
            ),
        ]
    }

    /// Notes of `parse_refusals` whose one signature line is malformed:
    /// its prefix, key name, base64 or length; `b64` is a good signature.
    fn signature_line_refusals(b64: &str) -> Vec<(String, NoteError)> {
        vec![
            (
                format!("hello\n\n- k {b64}\n"),
                NoteError::BadSignaturePrefix { line: 1 },
            ),
            (
                format!("hello\n\n\u{2013} k {b64}\n"),
                NoteError::BadSignaturePrefix { line: 1 },
            ),
            (
                format!("hello\n\n\u{2014}k {b64}\n"),
                NoteError::BadSignaturePrefix { line: 1 },
            ),
            (
                format!("hello\n\n\u{2014}  k {b64}\n"),
                NoteError::BadSignatureKeyName { line: 1 },
            ),
            (
                format!("hello\n\n\u{2014} k  {b64}\n"),
                NoteError::BadSignatureBase64 { line: 1 },
            ),
            (
                format!("hello\n\n\u{2014} k {b64} \n"),
                NoteError::BadSignatureBase64 { line: 1 },
            ),
            (
                "hello\n\n\u{2014} k\n".into(),
                NoteError::BadSignatureBase64 { line: 1 },
            ),
            (
                "hello\n\n\u{2014} k \n".into(),
                NoteError::BadSignatureBase64 { line: 1 },
            ),
            (
                format!("hello\n\n\u{2014} k {}\n", b64.trim_end_matches('=')),
                NoteError::BadSignatureBase64 { line: 1 },
            ),
            (
                format!("hello\n\n\u{2014} k !{b64}\n"),
                NoteError::BadSignatureBase64 { line: 1 },
            ),
            (
                format!("hello\n\n\u{2014} a+b {b64}\n"),
                NoteError::BadSignatureKeyName { line: 1 },
            ),
            (
                "hello\n\n\u{2014} k AAAAAA==\n".into(),
                NoteError::SignatureTooShort { line: 1 },
            ),
            (
                "hello\n\n\u{2014} k AAA=\n".into(),
                NoteError::SignatureTooShort { line: 1 },
            ),
        ]
    }

    /// Notes of `parse_refusals` that are well-formed but for what they
    /// carry: a stray line after the signatures, control characters, more
    /// signatures than allowed.
    fn content_refusals(good: &str, line: &str) -> Vec<(String, NoteError)> {
        vec![
            (
                format!("{good}unexpected line\n"),
                NoteError::BadSignaturePrefix { line: 2 },
            ),
            (format!("\u{1}{good}"), NoteError::ControlCharacter),
            (
                good.replace("hello", "hel\rlo"),
                NoteError::ControlCharacter,
            ),
            (
                good.replace("hello", "hel\tlo"),
                NoteError::ControlCharacter,
            ),
            (
                format!("hello\n\n{}", line.repeat(MAX_SIGNATURES + 1)),
                NoteError::TooManySignatures,
            ),
        ]
    }

    #[test]
    fn verify_refuses_wrong_length_and_reserved_texts() {
        let k = key(8);
        let id = key_hash("k", &k.verifying_key());
        let note = SignedNote {
            text: "t\n".into(),
            signatures: vec![NoteSignature {
                name: "k".into(),
                key_hash: id,
                signature: vec![0; 63],
            }],
        };
        assert_eq!(
            verify_note(&note, "k", &k.verifying_key()),
            Err(NoteError::WrongSignatureLength { got: 63, want: 64 })
        );
        // Even a genuine signature over a reserved text is refused: this
        // key might have made it as a cosignature (see next test).
        let reserved = "cosignature/v1\ntime 5\no\n";
        let note = SignedNote {
            text: reserved.into(),
            signatures: vec![NoteSignature {
                name: "k".into(),
                key_hash: id,
                signature: k.sign(reserved.as_bytes()).to_bytes().to_vec(),
            }],
        };
        assert_eq!(
            verify_note(&note, "k", &k.verifying_key()),
            Err(NoteError::ReservedText)
        );
    }

    // ---- Cosignatures -----------------------------------------------------

    #[test]
    fn cosignature_round_trips() {
        let k = key(9);
        let body = checkpoint().body();
        let sig = cosign(&body, "witness.example/w1", &k, 1679315147).unwrap();
        assert_eq!(sig.signature.len(), 8 + 64);
        assert_eq!(
            sig.key_hash,
            cosigner_key_hash("witness.example/w1", &k.verifying_key())
        );
        assert_ne!(
            sig.key_hash,
            key_hash("witness.example/w1", &k.verifying_key())
        );
        // The line survives a trip through a signed note.
        let note = SignedNote {
            text: body.clone(),
            signatures: vec![sig.clone()],
        };
        let parsed = SignedNote::parse(&note.encode()).unwrap();
        assert_eq!(parsed.signatures[0], sig);
        assert_eq!(
            verify_cosignature(&body, &sig, "witness.example/w1", &k.verifying_key()),
            Ok(1679315147)
        );
        // The signed message is exactly the spec's.
        let message = format!("cosignature/v1\ntime 1679315147\n{body}");
        let raw = Signature::from_slice(&sig.signature[8..]).unwrap();
        assert!(
            k.verifying_key()
                .verify_strict(message.as_bytes(), &raw)
                .is_ok()
        );
    }

    #[test]
    fn cosignature_refusals() {
        let k = key(10);
        let vk = k.verifying_key();
        let body = checkpoint().body();
        let other = Checkpoint {
            size: 1,
            ..checkpoint()
        }
        .body();
        let sig = cosign(&body, "w", &k, 100).unwrap();
        assert_eq!(
            verify_cosignature(&other, &sig, "w", &vk),
            Err(NoteError::InvalidSignature)
        );
        assert!(matches!(
            verify_cosignature(&body, &sig, "w2", &vk),
            Err(NoteError::KeyMismatch { .. })
        ));
        assert!(matches!(
            verify_cosignature(&body, &sig, "w", &key(11).verifying_key()),
            Err(NoteError::KeyMismatch { .. })
        ));
        // The timestamp is signed: changing it breaks the signature.
        let mut later = sig.clone();
        later.signature[7] ^= 1;
        assert_eq!(
            verify_cosignature(&body, &later, "w", &vk),
            Err(NoteError::InvalidSignature)
        );
        let mut short = sig.clone();
        short.signature.truncate(71);
        assert_eq!(
            verify_cosignature(&body, &short, "w", &vk),
            Err(NoteError::WrongSignatureLength { got: 71, want: 72 })
        );
        let mut huge = sig.clone();
        huge.signature[0] = 0x80;
        assert_eq!(
            verify_cosignature(&body, &huge, "w", &vk),
            Err(NoteError::TimestampOutOfRange)
        );
        assert_eq!(
            cosign(&body, "w", &k, 1 << 63),
            Err(NoteError::TimestampOutOfRange)
        );
        assert!(cosign(&body, "w", &k, (1 << 63) - 1).is_ok());
        assert_eq!(
            cosign("not a checkpoint\n", "w", &k, 1),
            Err(NoteError::CheckpointTooShort)
        );
        assert_eq!(
            cosign(&body, "w w", &k, 1),
            Err(NoteError::InvalidKeyName("w w".into()))
        );
    }

    #[test]
    fn cosignatures_and_note_signatures_do_not_cross() {
        let k = key(12);
        let vk = k.verifying_key();
        let body = checkpoint().body();
        // A cosignature is not a note signature of the checkpoint ...
        let co = cosign(&body, "n", &k, 7).unwrap();
        let as_note = SignedNote {
            text: body.clone(),
            signatures: vec![co.clone()],
        };
        assert!(verify_note(&as_note, "n", &vk).is_err());
        // ... even relabelled with the note key ID and stripped of its
        // timestamp ...
        let relabelled = NoteSignature {
            key_hash: key_hash("n", &vk),
            signature: co.signature[8..].to_vec(),
            ..co.clone()
        };
        let as_note = SignedNote {
            text: body.clone(),
            signatures: vec![relabelled.clone()],
        };
        assert_eq!(
            verify_note(&as_note, "n", &vk),
            Err(NoteError::InvalidSignature)
        );
        // ... nor of the message it actually signs.
        let as_note = SignedNote {
            text: format!("cosignature/v1\ntime 7\n{body}"),
            signatures: vec![relabelled],
        };
        assert_eq!(
            verify_note(&as_note, "n", &vk),
            Err(NoteError::ReservedText)
        );
        // A note signature is not a cosignature, with either key ID.
        let plain = sign_note(&body, "n", &k).unwrap();
        assert!(matches!(
            verify_cosignature(&body, &plain, "n", &vk),
            Err(NoteError::KeyMismatch { .. })
        ));
        let mut relabelled = plain.clone();
        relabelled.key_hash = cosigner_key_hash("n", &vk);
        let mut with_time = 7u64.to_be_bytes().to_vec();
        with_time.extend_from_slice(&plain.signature);
        relabelled.signature = with_time;
        assert_eq!(
            verify_cosignature(&body, &relabelled, "n", &vk),
            Err(NoteError::InvalidSignature)
        );
    }

    // ---- Published vectors -------------------------------------------------

    /// golang.org/x/mod, file sumdb/note/note_test.go (TestSign, TestOpen)
    /// and the package doc in sumdb/note/note.go: the "PeterNeumann" and
    /// "EnochRoot" keys and their signatures. Ed25519 is deterministic, so
    /// signing the same text with the same key must give the same bytes.
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    /// Splits a Go verifier key "name+hash+base64(alg || key)".
    fn go_vkey(vkey: &str) -> (String, [u8; 4], VerifyingKey) {
        let mut parts = vkey.splitn(3, '+');
        let (name, id, b64) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let (alg, bytes) = go_key_material(b64);
        assert_eq!(alg, 1, "Ed25519");
        let id: [u8; 4] = hex::decode(id).unwrap().try_into().unwrap();
        (
            name.to_owned(),
            id,
            VerifyingKey::from_bytes(&bytes).unwrap(),
        )
    }

    #[test]
    fn known_answer_go_sumdb_note_sign() {
        let b64 = PETER_SKEY.splitn(5, '+').nth(4).unwrap();
        let (alg, seed) = go_key_material(b64);
        assert_eq!(alg, 1);
        let sk = SigningKey::from_bytes(&seed);
        let (name, id, vk) = go_vkey(PETER_VKEY);
        assert_eq!(sk.verifying_key(), vk);
        assert_eq!(key_hash(&name, &vk), id);
        assert_eq!(hex::encode(id), "c74f20a3");
        let note = SignedNote {
            text: GO_TEXT.into(),
            signatures: vec![sign_note(GO_TEXT, &name, &sk).unwrap()],
        };
        assert_eq!(note.encode(), format!("{GO_TEXT}\n{PETER_SIG}"));
    }

    #[test]
    fn known_answer_go_sumdb_note_open() {
        let (peter, peter_id, peter_key) = go_vkey(PETER_VKEY);
        let (enoch, enoch_id, enoch_key) = go_vkey(ENOCH_VKEY);
        assert_eq!(key_hash(&enoch, &enoch_key), enoch_id);
        let msg = format!("{GO_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        let note = SignedNote::parse(&msg).unwrap();
        assert_eq!(note.text, GO_TEXT);
        assert_eq!(note.signatures.len(), 2);
        assert_eq!(note.signatures[0].key_hash, peter_id);
        assert_eq!(note.signatures[1].key_hash, enoch_id);
        assert_eq!(note.encode(), msg);
        assert_eq!(verify_note(&note, &peter, &peter_key), Ok(()));
        assert_eq!(verify_note(&note, &enoch, &enoch_key), Ok(()));
        assert!(verify_note(&note, &peter, &enoch_key).is_err());

        // TestOpen's "invalid signature": four base64 characters inserted.
        let bad = format!("{GO_TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        let bad = SignedNote::parse(&bad).unwrap();
        assert!(verify_note(&bad, &peter, &peter_key).is_err());

        // TestOpen's malformed messages.
        let bad_msgs = [
            GO_TEXT.to_owned(),
            format!("{GO_TEXT}\n"),
            format!("{GO_TEXT}\n{}", PETER_SIG.strip_suffix('\n').unwrap()),
            format!("\u{1}{GO_TEXT}\n{PETER_SIG}"),
            format!(
                "{GO_TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
            ),
            format!("{GO_TEXT}\n{PETER_SIG}Unexpected line.\n"),
            format!("{GO_TEXT}\n{}", PETER_SIG.repeat(101)),
        ];
        for msg in bad_msgs {
            assert!(SignedNote::parse(&msg).is_err(), "{msg:?}");
        }
        // (TestOpen's "\xff" + text case is not valid UTF-8, which a &str
        // cannot hold: it is refused before it reaches this parser.)
    }

    /// C2SP signed-note.md, section "Verifier keys", example (as cited by
    /// several independent implementations, e.g. the Cloudflare
    /// signed-note tests pinning C2SP/C2SP commit d4c16da5): verifier key
    /// "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
    /// and a note signed by it.
    #[test]
    fn known_answer_c2sp_signed_note_example() {
        let (name, id, vk) =
            go_vkey("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k");
        assert_eq!(key_hash(&name, &vk), id);
        let msg = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
        let note = SignedNote::parse(msg).unwrap();
        assert_eq!(note.text, "This is an example message.\n");
        assert_eq!(verify_note(&note, &name, &vk), Ok(()));
        assert_eq!(note.encode(), msg);
        let tampered = SignedNote {
            text: "This is an example message!\n".into(),
            ..note
        };
        assert_eq!(
            verify_note(&tampered, &name, &vk),
            Err(NoteError::InvalidSignature)
        );
    }

    /// C2SP signed-note.md opening example (no key published: parse only)
    /// and the cosigned checkpoint example of C2SP tlog-cosignature.md,
    /// whose witness line carries the timestamp 1679315147 that the spec's
    /// "Ed25519 signed message" example shows as "time 1679315147".
    #[test]
    fn known_answer_c2sp_examples_parse() {
        let poem = "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned \u{e8} subito sera.\n\n\u{2014} quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n";
        let note = SignedNote::parse(poem).unwrap();
        assert!(note.text.ends_with("\n\ned \u{e8} subito sera.\n"));
        assert_eq!(note.signatures[0].name, "quasimodo.example/salvatore");
        assert_eq!(note.encode(), poem);

        let cosigned = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";
        let note = SignedNote::parse(cosigned).unwrap();
        let cp = Checkpoint::parse_body(&note.text).unwrap();
        assert_eq!(
            (cp.origin.as_str(), cp.size),
            ("example.com/behind-the-sofa", 20852163)
        );
        assert_eq!(note.signatures[0].signature.len(), 64);
        let witness = &note.signatures[1];
        assert_eq!(witness.signature.len(), 8 + 64);
        let time = u64::from_be_bytes(witness.signature[..8].try_into().unwrap());
        assert_eq!(time, 1679315147);
        assert_eq!(note.encode(), cosigned);
    }
}
