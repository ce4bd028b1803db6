//! The tamper-evident audit log. Every state change and every refused
//! input appends one entry, in the same database transaction as the change
//! (see `store::Tx::audit`).
//!
//! Each entry is both a link of a hash chain (its hash covers the previous
//! one) and a leaf of an RFC 6962 Merkle tree (`merkle`). The node signs
//! checkpoints of the tree in the C2SP signed-note format (`note`); its
//! peers check each new checkpoint is consistent with the last one they saw
//! and cosign it, so not even the node's own operator can rewrite, truncate
//! or roll back the log unnoticed. `verify` recomputes everything from the
//! database file, without the running node.
//!
//! Entries never contain reported URLs: the report id links them.

pub mod merkle;
pub mod note;
pub mod proof;
pub mod verify;

pub use verify::{AuditError, Verified, VerifyContext, verify};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The hash "before" the first entry.
pub const GENESIS: [u8; 32] = [0u8; 32];
const DOMAIN: &[u8] = b"alertrelay/v1/audit-entry\0";

/// One audit entry, before it is chained.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// What happened, e.g. `report.submitted`, `input.refused`.
    pub kind: &'static str,
    /// Who did it: `operator:<node>/<name>`, `node:<id>` or `system`.
    pub actor: String,
    /// What it is about, usually `<origin>/<report-id>`.
    pub subject: String,
    /// Details as canonical JSON (serde_json writes struct fields in
    /// declaration order and `json!` maps sorted, so it is deterministic).
    pub detail: serde_json::Value,
}

impl Entry {
    pub fn new(
        kind: &'static str,
        actor: impl Into<String>,
        subject: impl Into<String>,
        detail: serde_json::Value,
    ) -> Self {
        Entry {
            kind,
            actor: actor.into(),
            subject: subject.into(),
            detail,
        }
    }
}

/// The chained hash of an entry.
pub fn entry_hash(
    prev: &[u8],
    seq: i64,
    at_ms: i64,
    kind: &str,
    actor: &str,
    subject: &str,
    detail: &str,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    for field in [kind, actor, subject, detail] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().into()
}

/// The canonical bytes of an entry: the Merkle leaf is `H(0x00 || these)`.
/// Length-prefixed fields, so no two entries share an encoding.
pub fn entry_bytes(
    seq: i64,
    at_ms: i64,
    kind: &str,
    actor: &str,
    subject: &str,
    detail: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + kind.len() + actor.len() + subject.len() + detail.len());
    out.extend_from_slice(b"alertrelay-audit-entry/v1\n");
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&at_ms.to_be_bytes());
    for field in [kind, actor, subject, detail] {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out
}

/// The Merkle leaf hash of an entry.
pub fn leaf_hash(
    seq: i64,
    at_ms: i64,
    kind: &str,
    actor: &str,
    subject: &str,
    detail: &str,
) -> merkle::Hash {
    merkle::leaf_hash(&entry_bytes(seq, at_ms, kind, actor, subject, detail))
}

/// One entry of a batch, chained and hashed, ready to store.
pub struct Chained<'a> {
    pub seq: i64,
    pub kind: &'static str,
    pub actor: &'a str,
    pub subject: &'a str,
    pub detail: String,
    pub prev_hash: Vec<u8>,
    pub hash: [u8; 32],
    pub leaf: merkle::Hash,
}

/// Chains a batch of entries after (`prev_seq`, `prev_hash`), all at `at_ms`.
pub fn chain<'a>(
    entries: &'a [Entry],
    prev_seq: i64,
    prev_hash: &[u8],
    at_ms: i64,
) -> Vec<Chained<'a>> {
    let mut prev = prev_hash.to_vec();
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let seq = prev_seq + 1 + i as i64;
            let detail = e.detail.to_string();
            let hash = entry_hash(&prev, seq, at_ms, e.kind, &e.actor, &e.subject, &detail);
            let leaf = leaf_hash(seq, at_ms, e.kind, &e.actor, &e.subject, &detail);
            let prev_hash = std::mem::replace(&mut prev, hash.to_vec());
            Chained {
                seq,
                kind: e.kind,
                actor: &e.actor,
                subject: &e.subject,
                detail,
                prev_hash,
                hash,
                leaf,
            }
        })
        .collect()
}

/// The checkpoint origin (and signing key name) of a node's audit log.
pub fn log_origin(federation: &str, node: &str) -> String {
    format!("{federation}/hotline/{node}/audit")
}

/// The key name a node cosigns its peers' checkpoints under.
pub fn witness_name(federation: &str, node: &str) -> String {
    format!("{federation}/hotline/{node}/witness")
}
