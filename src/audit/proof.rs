//! Inclusion proofs a court can check offline: one audit entry, its RFC
//! 9162 inclusion proof, the signed and cosigned checkpoint it is proved
//! against, and the public keys involved. Also the JSON-lines export.

use serde::{Deserialize, Serialize};

use super::merkle::{self, Hash};
use super::note::{self, Checkpoint, SignedNote};
use super::trust::Anchor;
use super::verify::{Conn, with_conn};
use super::{AuditError, leaf_hash, log_origin, witness_name};
use crate::config::NodeConfig;
use crate::crypto::signing::encode_public_key;
use crate::store::Database;

pub const FORMAT: &str = "alertrelay-inclusion-proof/v1";

/// One audit entry as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ExportedEntry {
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub actor: String,
    pub subject: String,
    /// The detail exactly as hashed (a JSON document, as text).
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofKey {
    /// The signed-note key name.
    pub name: String,
    pub node: String,
    /// `log` (signed the checkpoint) or `witness` (cosigned it).
    pub role: String,
    pub key_id: String,
    pub public_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofBundle {
    pub format: String,
    pub log: String,
    pub entry: ExportedEntry,
    pub leaf_index: u64,
    pub leaf_hash: String,
    pub tree_size: u64,
    pub inclusion_proof: Vec<String>,
    /// The checkpoint as a signed note, with its cosignatures.
    pub checkpoint: String,
    pub keys: Vec<ProofKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("no audit entry {0}")]
    NoEntry(i64),
    #[error(
        "entry {0} is not covered by a signed checkpoint yet; sign one (it happens on a schedule) and try again"
    )]
    NotCovered(i64),
    #[error("the proof is malformed: {0}")]
    Malformed(String),
    #[error("the proof does not verify: {0}")]
    Invalid(String),
}

/// What a verified proof establishes.
#[derive(Debug, Clone, Serialize)]
pub struct ProofReport {
    pub log: String,
    pub seq: i64,
    pub kind: String,
    pub subject: String,
    pub at_ms: i64,
    pub tree_size: u64,
    pub root: String,
    pub signed_by: String,
    pub cosigned_by: Vec<String>,
    /// What vouched for the keys.
    #[serde(default)]
    pub trusted: String,
}

/// Builds the inclusion proof of entry `seq` against the latest cosigned
/// checkpoint that covers it (or the latest signed one, when none is
/// cosigned yet).
pub async fn prove(cfg: &NodeConfig, seq: i64) -> Result<ProofBundle, ProofError> {
    let mut conn = Conn::open(&cfg.database).await?;
    let read = AuditError::Read;
    let found = with_conn!(&mut conn, c => {
        let entry: Option<ExportedEntry> = sqlx::query_as(
            "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log WHERE seq = $1",
        )
        .bind(seq)
        .fetch_optional(&mut *c)
        .await
        .map_err(read)?;
        // Prefer a checkpoint with cosignatures: the witnesses' word is what
        // makes it independent of this node's operator.
        let cp: Option<(i64, String)> = sqlx::query_as(
            "SELECT c.size, c.note FROM checkpoints c
             WHERE c.size >= $1
             ORDER BY (SELECT COUNT(*) FROM cosignatures s WHERE s.size = c.size) > 0 DESC, c.size DESC
             LIMIT 1",
        )
        .bind(seq)
        .fetch_optional(&mut *c)
        .await
        .map_err(read)?;
        let size = cp.as_ref().map_or(0, |(size, _)| *size);
        let lines: Vec<(String, String)> =
            sqlx::query_as("SELECT witness, line FROM cosignatures WHERE size = $1 ORDER BY witness")
                .bind(size)
                .fetch_all(&mut *c)
                .await
                .map_err(read)?;
        let leaves: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT leaf_hash FROM audit_log WHERE seq <= $1 ORDER BY seq")
                .bind(size)
                .fetch_all(&mut *c)
                .await
                .map_err(read)?;
        Ok::<_, AuditError>((entry, cp, lines, leaves))
    });
    conn.close().await;
    let (entry, cp, lines, leaves) = found?;
    let entry = entry.ok_or(ProofError::NoEntry(seq))?;
    let (size, mut note_text) = cp.ok_or(ProofError::NotCovered(seq))?;
    let leaves: Vec<Hash> = leaves
        .iter()
        .map(|l| <Hash>::try_from(l.as_slice()).unwrap_or([0; 32]))
        .collect();
    let index = u64::try_from(seq - 1).map_err(|_| ProofError::NoEntry(seq))?;
    let proof = merkle::inclusion_proof(&leaves, index)
        .map_err(|e| ProofError::Malformed(e.to_string()))?;
    for (_, line) in &lines {
        note_text.push_str(line);
    }
    let fed = &cfg.directory.federation;
    let mut keys = Vec::new();
    let mut add = |node: &crate::identity::NodeId, role: &str, name: String| {
        if let Some(n) = cfg.directory.node(node) {
            for k in &n.keys {
                keys.push(ProofKey {
                    name: name.clone(),
                    node: node.to_string(),
                    role: role.to_owned(),
                    key_id: k.id.clone(),
                    public_key: encode_public_key(&k.key),
                });
            }
        }
    };
    add(&cfg.node_id, "log", log_origin(fed, cfg.node_id.as_str()));
    for (witness, _) in &lines {
        if let Ok(id) = crate::identity::NodeId::new(witness) {
            add(&id, "witness", witness_name(fed, witness));
        }
    }
    Ok(ProofBundle {
        format: FORMAT.into(),
        log: log_origin(fed, cfg.node_id.as_str()),
        leaf_hash: hex::encode(leaf_hash(
            entry.seq,
            entry.at_ms,
            &entry.kind,
            &entry.actor,
            &entry.subject,
            &entry.detail,
        )),
        entry,
        leaf_index: index,
        tree_size: u64::try_from(size).unwrap_or(0),
        inclusion_proof: proof.iter().map(hex::encode).collect(),
        checkpoint: note_text,
        keys,
    })
}

/// Checks a proof bundle offline. Every key must be one the verifier's
/// `anchor` vouches for (never a key merely carried in the bundle): the
/// log's at the time of the entry, each witness's at the time of its
/// cosignature.
pub fn verify_bundle(b: &ProofBundle, anchor: &Anchor) -> Result<ProofReport, ProofError> {
    let malformed = |m: &str| ProofError::Malformed(m.to_owned());
    let invalid = |m: String| ProofError::Invalid(m);
    if b.format != FORMAT {
        return Err(malformed("unknown format"));
    }
    let e = &b.entry;
    let leaf = leaf_hash(e.seq, e.at_ms, &e.kind, &e.actor, &e.subject, &e.detail);
    if hex::encode(leaf) != b.leaf_hash {
        return Err(invalid("the entry does not hash to the stated leaf".into()));
    }
    if e.seq.checked_sub(1).and_then(|i| u64::try_from(i).ok()) != Some(b.leaf_index) {
        return Err(invalid(
            "the entry's number does not match its leaf index".into(),
        ));
    }
    let signed =
        SignedNote::parse(&b.checkpoint).map_err(|e| ProofError::Malformed(e.to_string()))?;
    let cp =
        Checkpoint::parse_body(&signed.text).map_err(|e| ProofError::Malformed(e.to_string()))?;
    if cp.origin != b.log || cp.size != b.tree_size {
        return Err(invalid("the checkpoint is for another log or size".into()));
    }
    let carried = || {
        b.keys
            .iter()
            .map(|k| (k.node.as_str(), k.key_id.as_str(), k.public_key.as_str()))
    };
    let signer = b
        .keys
        .iter()
        .filter(|k| k.role == "log" && k.name == b.log)
        .filter_map(|k| Some((k, anchor.key(&k.node, &k.key_id, e.at_ms, carried())?)))
        .find(|(_, v)| note::verify_note(&signed, &b.log, v).is_ok())
        .map(|(k, _)| format!("{} (key {})", k.node, k.key_id))
        .ok_or_else(|| {
            invalid(
                "the checkpoint is not signed by a key of the log the trust anchor vouches for"
                    .into(),
            )
        })?;
    let mut cosigned_by = Vec::new();
    for sig in &signed.signatures {
        let witness = b
            .keys
            .iter()
            .filter(|k| k.role == "witness" && k.name == sig.name)
            .find(|k| {
                anchor
                    .candidate(&k.node, &k.key_id, carried())
                    .and_then(|v| note::verify_cosignature(&signed.text, sig, &sig.name, &v).ok())
                    .and_then(|at| i64::try_from(at.saturating_mul(1000)).ok())
                    .and_then(|at| anchor.key(&k.node, &k.key_id, at, carried()))
                    .is_some()
            });
        if let Some(k) = witness
            && !cosigned_by.contains(&k.node)
        {
            cosigned_by.push(k.node.clone());
        }
    }
    let proof: Vec<Hash> = b
        .inclusion_proof
        .iter()
        .map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|v| <Hash>::try_from(v.as_slice()).ok())
                .ok_or_else(|| malformed("a proof hash is not 32 bytes of hex"))
        })
        .collect::<Result<_, _>>()?;
    merkle::verify_inclusion(&leaf, b.leaf_index, b.tree_size, &proof, &cp.root)
        .map_err(|e| invalid(format!("inclusion: {e}")))?;
    Ok(ProofReport {
        log: b.log.clone(),
        seq: e.seq,
        kind: e.kind.clone(),
        subject: e.subject.clone(),
        at_ms: e.at_ms,
        tree_size: b.tree_size,
        root: hex::encode(cp.root),
        signed_by: signer,
        cosigned_by,
        trusted: anchor.describe(),
    })
}

/// Every entry after `after`, in order, as JSON lines.
/// With `who`, only the entries of that actor: an identity as the log
/// names it (`operator:FR-PDC/alice`, `supervisor:...`, `admin:...`,
/// `node:DE-ECO`), or a person's `NODE/NAME` (whatever their role).
pub async fn export(
    db: &Database,
    after: i64,
    who: Option<&str>,
    out: &mut impl std::io::Write,
) -> Result<u64, ProofError> {
    let mut conn = Conn::open(db).await?;
    let result = export_from(&mut conn, after, who, out).await;
    conn.close().await;
    result
}

async fn export_from(
    conn: &mut Conn,
    after: i64,
    who: Option<&str>,
    out: &mut impl std::io::Write,
) -> Result<u64, ProofError> {
    let mut n = 0u64;
    let mut last = after;
    let (exact, operator, admin, supervisor) = match who {
        Some(w) => (
            Some(w.to_owned()),
            Some(format!("operator:{w}")),
            Some(format!("admin:{w}")),
            Some(format!("supervisor:{w}")),
        ),
        None => (None, None, None, None),
    };
    loop {
        let rows: Vec<ExportedEntry> = with_conn!(&mut *conn, c => sqlx::query_as(
            "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log
             WHERE seq > $1 AND ($2 IS NULL OR actor IN ($2, $3, $4, $5)) ORDER BY seq LIMIT 1000",
        )
        .bind(last)
        .bind(exact.clone())
        .bind(operator.clone())
        .bind(admin.clone())
        .bind(supervisor.clone())
        .fetch_all(&mut *c)
        .await
        .map_err(AuditError::Read)?);
        let Some(tail) = rows.last() else { break };
        last = tail.seq;
        for r in &rows {
            let line = serde_json::json!({
                "seq": r.seq,
                "at_ms": r.at_ms,
                "at": crate::report::view::rfc3339(r.at_ms),
                "kind": r.kind,
                "actor": r.actor,
                "subject": r.subject,
                "detail": serde_json::from_str::<serde_json::Value>(&r.detail).unwrap_or(serde_json::Value::String(r.detail.clone())),
                "leaf_hash": hex::encode(leaf_hash(r.seq, r.at_ms, &r.kind, &r.actor, &r.subject, &r.detail)),
            });
            writeln!(out, "{line}")
                .map_err(|e| ProofError::Malformed(format!("cannot write: {e}")))?;
            n += 1;
        }
    }
    Ok(n)
}
