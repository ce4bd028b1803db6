//! Inclusion proofs a court can check offline: one audit entry, its RFC
//! 9162 inclusion proof, the signed and cosigned checkpoint it is proved
//! against, and the public keys involved. Also the JSON-lines export.

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::merkle::{self, Hash};
use super::note::{self, Checkpoint, SignedNote};
use super::verify::{Conn, with_conn};
use super::{AuditError, leaf_hash, log_origin, witness_name};
use crate::config::NodeConfig;
use crate::crypto::signing::{encode_public_key, key_id_of, parse_public_key};
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

/// Checks a proof bundle offline. The keys come from the bundle unless
/// `trusted` (e.g. the federation directory) is given, in which case every
/// key used must also be in it.
pub fn verify_bundle(
    b: &ProofBundle,
    trusted: Option<&crate::directory::Directory>,
) -> Result<ProofReport, ProofError> {
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
    if u64::try_from(e.seq - 1).ok() != Some(b.leaf_index) {
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
    let keys: Vec<(&ProofKey, VerifyingKey)> = b
        .keys
        .iter()
        .filter_map(|k| parse_public_key(&k.public_key).ok().map(|v| (k, v)))
        .filter(|(k, v)| key_id_of(v) == k.key_id)
        .filter(|(k, v)| match trusted {
            None => true,
            Some(dir) => crate::identity::NodeId::new(&k.node)
                .ok()
                .and_then(|id| dir.node(&id).map(|n| n.keys.iter().any(|dk| dk.key == *v)))
                .unwrap_or(false),
        })
        .collect();
    let signer = keys
        .iter()
        .filter(|(k, _)| k.role == "log" && k.name == b.log)
        .find(|(_, v)| note::verify_note(&signed, &b.log, v).is_ok())
        .map(|(k, _)| format!("{} (key {})", k.node, k.key_id))
        .ok_or_else(|| invalid("the checkpoint is not signed by a known key of the log".into()))?;
    let mut cosigned_by = Vec::new();
    for sig in &signed.signatures {
        let witness = keys
            .iter()
            .filter(|(k, _)| k.role == "witness" && k.name == sig.name)
            .find(|(_, v)| note::verify_cosignature(&signed.text, sig, &sig.name, v).is_ok());
        if let Some((k, _)) = witness
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
    })
}

/// Every entry after `after`, in order, as JSON lines.
/// With `who`, only the entries of that actor: an identity as the log
/// names it (`operator:FR-PDC/alice`, `admin:...`, `node:DE-ECO`), or an
/// operator's `NODE/NAME`.
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
    let (exact, operator, admin) = match who {
        Some(w) => (
            Some(w.to_owned()),
            Some(format!("operator:{w}")),
            Some(format!("admin:{w}")),
        ),
        None => (None, None, None),
    };
    loop {
        let rows: Vec<ExportedEntry> = with_conn!(&mut *conn, c => sqlx::query_as(
            "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log
             WHERE seq > $1 AND ($2 IS NULL OR actor IN ($2, $3, $4)) ORDER BY seq LIMIT 1000",
        )
        .bind(last)
        .bind(exact.clone())
        .bind(operator.clone())
        .bind(admin.clone())
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
