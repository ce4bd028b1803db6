//! The tamper-evident audit chain. Every state change and every refused
//! input appends one entry, in the same database transaction as the change
//! (see `store::Tx::audit`). Each entry's hash covers its sequence number,
//! its content and the previous entry's hash, so editing, deleting or
//! reordering any row breaks the chain from that row on. `verify` recomputes
//! the whole chain from the database file, without the running node.
//!
//! Entries never contain reported URLs: the report id links them.

use std::path::Path;

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

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open database {path}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot read the audit log")]
    Read(#[source] sqlx::Error),
    #[error("audit entry {seq}: {problem}")]
    Broken { seq: i64, problem: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub entries: u64,
    pub head: String,
}

/// Recomputes the chain of the database at `path` (opened read-only) and
/// names the first bad entry.
pub async fn verify(path: &Path) -> Result<Verified, AuditError> {
    use sqlx::Row;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};
    let shown = path.display().to_string();
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .map_err(|source| AuditError::Open {
            path: shown.clone(),
            source,
        })?;
    let rows = sqlx::query(
        "SELECT seq, at_ms, kind, actor, subject, detail, prev_hash, hash FROM audit_log ORDER BY rowid",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(AuditError::Read)?;
    let _ = conn.close().await;
    let mut prev = GENESIS.to_vec();
    for (expected_seq, row) in (1i64..).zip(rows.iter()) {
        let seq: i64 = row.try_get("seq").map_err(AuditError::Read)?;
        let broken = |problem: String| AuditError::Broken { seq, problem };
        if seq != expected_seq {
            return Err(broken(format!(
                "expected entry {expected_seq} here: entries were deleted or reordered"
            )));
        }
        let stored_prev: Vec<u8> = row.try_get("prev_hash").map_err(AuditError::Read)?;
        let stored_hash: Vec<u8> = row.try_get("hash").map_err(AuditError::Read)?;
        if stored_prev != prev {
            return Err(broken(
                "its previous-hash does not match the entry before it".into(),
            ));
        }
        let text = |name: &str| -> Result<String, AuditError> {
            row.try_get::<String, _>(name).map_err(AuditError::Read)
        };
        let hash = entry_hash(
            &prev,
            seq,
            row.try_get("at_ms").map_err(AuditError::Read)?,
            &text("kind")?,
            &text("actor")?,
            &text("subject")?,
            &text("detail")?,
        );
        if hash.as_slice() != stored_hash.as_slice() {
            return Err(broken(
                "its content does not match its hash: the row was edited".into(),
            ));
        }
        prev = hash.to_vec();
    }
    Ok(Verified {
        entries: rows.len() as u64,
        head: hex::encode(prev),
    })
}
