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
pub mod trust;
pub mod verify;

pub use verify::{AuditError, Verified, VerifyContext, verify};

// The stored entry format lives with the store, which appends entries in
// the transaction of the change they record; the log is built on it here.
pub use crate::store::log::{Chained, Entry, GENESIS, chain, entry_bytes, entry_hash, leaf_hash};

/// The checkpoint origin (and signing key name) of a node's audit log.
pub fn log_origin(federation: &str, node: &str) -> String {
    format!("{federation}/hotline/{node}/audit")
}

/// The key name a node cosigns its peers' checkpoints under.
pub fn witness_name(federation: &str, node: &str) -> String {
    format!("{federation}/hotline/{node}/witness")
}
