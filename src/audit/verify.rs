//! Recomputing the audit log from the database (a SQLite file, opened
//! read-only, or a PostgreSQL database in a read-only session): the hash
//! chain, every leaf hash, the Merkle root at every signed checkpoint,
//! every checkpoint signature and every stored cosignature. Names the first
//! thing wrong.

use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::merkle::{self, CompactRange, Hash};
use super::note::{self, SignedNote};
use super::{GENESIS, entry_hash, leaf_hash, log_origin, witness_name};
use crate::config::NodeConfig;
use crate::directory::NodeKeyEntry;
use crate::store::Database;

/// A read-only connection to either backend. The SQL the audit readers use
/// is the same on both (`$N` parameters work in SQLite too).
pub(crate) enum Conn {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

/// Runs `$body` with `$c` bound to the backend's connection (the body is
/// compiled once per backend).
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::audit::verify::Conn::Sqlite($c) => $body,
            $crate::audit::verify::Conn::Postgres($c) => $body,
        }
    };
}
pub(crate) use with_conn;

impl Conn {
    /// Opens `db` for reading only.
    pub(crate) async fn open(db: &Database) -> Result<Conn, AuditError> {
        use sqlx::ConnectOptions;
        let open = |source| AuditError::Open {
            path: db.display(),
            source,
        };
        match db {
            Database::Sqlite(path) => sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .read_only(true)
                .connect()
                .await
                .map(Conn::Sqlite)
                .map_err(open),
            Database::Postgres(url) => {
                let options =
                    crate::store::postgres::connect_options(url).map_err(|e| AuditError::Open {
                        path: db.display(),
                        source: sqlx::Error::Configuration(e.to_string().into()),
                    })?;
                // An unreachable server is reported at once, with why.
                let wait = crate::store::postgres::CONNECT_TIMEOUT;
                let options = options.options([("default_transaction_read_only", "on")]);
                match tokio::time::timeout(wait, options.connect()).await {
                    Ok(connected) => connected.map(Conn::Postgres).map_err(open),
                    Err(_) => Err(open(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {} s", wait.as_secs()),
                    )))),
                }
            }
        }
    }

    pub(crate) async fn close(self) {
        use sqlx::Connection;
        with_conn!(self, c => { let _ = c.close().await; })
    }
}

/// Whose log it is and the keys to check it with (from the directory).
pub struct VerifyContext {
    pub origin: String,
    pub node: String,
    /// The log owner's signing keys (any valid when it signed may have
    /// signed a checkpoint).
    pub owner_keys: Vec<NodeKeyEntry>,
    /// Each peer's witness key name and keys.
    pub witnesses: Vec<(String, String, Vec<NodeKeyEntry>)>,
}

/// The keys of `keys` that count for something signed at `at_ms` (or,
/// when the time is not known, that are not revoked).
fn valid(keys: &[NodeKeyEntry], at_ms: Option<i64>) -> impl Iterator<Item = &VerifyingKey> {
    keys.iter()
        .filter(move |k| at_ms.map_or(!k.revoked, |t| k.valid_at(t)))
        .map(|k| &k.key)
}

impl VerifyContext {
    pub fn from_config(cfg: &NodeConfig) -> Self {
        let fed = &cfg.directory.federation;
        let keys = |n: &crate::directory::DirectoryNode| n.keys.clone();
        let me = cfg.directory.node(&cfg.node_id);
        VerifyContext {
            origin: log_origin(fed, cfg.node_id.as_str()),
            node: cfg.node_id.to_string(),
            owner_keys: me.map(keys).unwrap_or_default(),
            witnesses: cfg
                .directory
                .nodes()
                .iter()
                .filter(|n| n.id != cfg.node_id)
                .map(|n| (n.id.to_string(), witness_name(fed, n.id.as_str()), keys(n)))
                .collect(),
        }
    }
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
    #[error("checkpoint of size {size}: {problem}")]
    Checkpoint { size: i64, problem: String },
    #[error(
        "entries were deleted or the tail truncated: checkpoint of size {size} was signed, but the database holds only {entries} entries"
    )]
    Truncated { size: i64, entries: u64 },
    #[error("cosignature of {witness} on checkpoint {size}: {problem}")]
    Cosignature {
        size: i64,
        witness: String,
        problem: String,
    },
    #[error("rolled back: witness {witness} cosigned this log at size {witnessed}, but {problem}")]
    RolledBack {
        witness: String,
        witnessed: u64,
        problem: String,
    },
}

impl AuditError {
    /// True when the log itself is bad (as opposed to unreadable).
    pub fn is_tampering(&self) -> bool {
        !matches!(self, AuditError::Open { .. } | AuditError::Read(_))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub entries: u64,
    /// Merkle root of the whole log, hex.
    pub root: String,
    /// Head of the hash chain, hex.
    pub head: String,
    pub checkpoints: u64,
    pub cosignatures: u64,
    /// Largest checkpoint size cosigned by at least one witness.
    pub cosigned_size: u64,
    /// Every leaf hash in order (for rollback checks against witnesses).
    #[serde(skip)]
    pub leaves: Vec<Hash>,
}

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    at_ms: i64,
    kind: String,
    actor: String,
    subject: String,
    detail: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    leaf_hash: Option<Vec<u8>>,
}

#[derive(sqlx::FromRow)]
struct CheckpointRow {
    size: i64,
    root: Vec<u8>,
    note: String,
    created_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct CosigRow {
    size: i64,
    witness: String,
    line: String,
}

const PROGRESS_EVERY: usize = 4096;

/// How far a long verification is: (phase, entries done, entries in all).
pub type Progress<'a> = &'a (dyn Fn(&'static str, u64, u64) + Sync);

/// Recomputes the audit log of the database `db` (opened read-only).
pub async fn verify(db: &Database, ctx: &VerifyContext) -> Result<Verified, AuditError> {
    verify_with_progress(db, ctx, &|_, _, _| {}).await
}

/// [`verify`], reporting progress every few thousand entries (`reading`,
/// then `checking`).
pub async fn verify_with_progress(
    db: &Database,
    ctx: &VerifyContext,
    progress: Progress<'_>,
) -> Result<Verified, AuditError> {
    let mut conn = Conn::open(db).await?;
    let read = with_conn!(&mut conn, c => {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&mut *c)
            .await
            .map_err(AuditError::Read)?;
        let total = u64::try_from(total).unwrap_or(0);
        let mut rows: Vec<Row> = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        {
            use tokio_stream::StreamExt;
            let mut stream = sqlx::query_as::<_, Row>(
                "SELECT seq, at_ms, kind, actor, subject, detail, prev_hash, hash, leaf_hash FROM audit_log ORDER BY seq",
            )
            .fetch(&mut *c);
            while let Some(row) = stream.next().await {
                rows.push(row.map_err(AuditError::Read)?);
                if rows.len().is_multiple_of(PROGRESS_EVERY) {
                    progress("reading", rows.len() as u64, total);
                }
            }
        }
        progress("reading", rows.len() as u64, total);
        let checkpoints: Vec<CheckpointRow> =
            sqlx::query_as("SELECT size, root, note, created_at_ms FROM checkpoints ORDER BY size")
                .fetch_all(&mut *c)
                .await
                .map_err(AuditError::Read)?;
        let cosigs: Vec<CosigRow> =
            sqlx::query_as("SELECT size, witness, line FROM cosignatures ORDER BY size, witness")
                .fetch_all(&mut *c)
                .await
                .map_err(AuditError::Read)?;
        Ok::<_, AuditError>((rows, checkpoints, cosigs))
    });
    conn.close().await;
    let (rows, checkpoints, cosigs) = read?;

    let leaves = check_entries(&rows, progress)?;
    let entries = leaves.len() as u64;
    let cosigned_size = check_checkpoints(ctx, &leaves, &checkpoints, &cosigs)?;
    let head = rows
        .last()
        .map(|r| hex::encode(&r.hash))
        .unwrap_or_else(|| hex::encode(GENESIS));
    Ok(Verified {
        entries,
        root: hex::encode(merkle::root(&leaves)),
        head,
        checkpoints: checkpoints.len() as u64,
        cosignatures: cosigs.len() as u64,
        cosigned_size,
        leaves,
    })
}

/// The chain, the sequence and each leaf hash; returns the leaf hashes.
fn check_entries(rows: &[Row], progress: Progress<'_>) -> Result<Vec<Hash>, AuditError> {
    let mut prev = GENESIS.to_vec();
    let mut leaves = Vec::with_capacity(rows.len());
    for (expected_seq, row) in (1i64..).zip(rows.iter()) {
        if leaves.len().is_multiple_of(PROGRESS_EVERY) {
            progress("checking", leaves.len() as u64, rows.len() as u64);
        }
        let seq = row.seq;
        let broken = |problem: String| AuditError::Broken { seq, problem };
        if seq != expected_seq {
            return Err(broken(format!(
                "expected entry {expected_seq} here: entries were deleted, inserted or reordered"
            )));
        }
        if row.prev_hash != prev {
            return Err(broken(
                "its previous-hash does not match the entry before it".into(),
            ));
        }
        let hash = entry_hash(
            &prev,
            seq,
            row.at_ms,
            &row.kind,
            &row.actor,
            &row.subject,
            &row.detail,
        );
        if hash.as_slice() != row.hash.as_slice() {
            return Err(broken(
                "its content does not match its hash: the row was edited".into(),
            ));
        }
        let leaf = leaf_hash(
            seq,
            row.at_ms,
            &row.kind,
            &row.actor,
            &row.subject,
            &row.detail,
        );
        if row.leaf_hash.as_deref() != Some(leaf.as_slice()) {
            return Err(broken(
                "its content does not match its Merkle leaf hash: the row was edited".into(),
            ));
        }
        prev = hash.to_vec();
        leaves.push(leaf);
    }
    Ok(leaves)
}

/// Every checkpoint: its signature, and the recomputed root at its size;
/// every cosignature. Returns the largest cosigned size.
fn check_checkpoints(
    ctx: &VerifyContext,
    leaves: &[Hash],
    checkpoints: &[CheckpointRow],
    cosigs: &[CosigRow],
) -> Result<u64, AuditError> {
    let mut range = CompactRange::new();
    let mut leaves_iter = leaves.iter();
    let mut cosigned_size = 0u64;
    for cp in checkpoints {
        let size = cp.size;
        let bad = |problem: String| AuditError::Checkpoint { size, problem };
        let signed =
            SignedNote::parse(&cp.note).map_err(|e| bad(format!("unreadable note: {e}")))?;
        if !valid(&ctx.owner_keys, Some(cp.created_at_ms))
            .any(|k| note::verify_note(&signed, &ctx.origin, k).is_ok())
        {
            return Err(bad(format!(
                "not signed by a key of {} that the directory lists as valid when it was signed",
                ctx.node
            )));
        }
        let body = note::Checkpoint::parse_body(&signed.text)
            .map_err(|e| bad(format!("unreadable checkpoint: {e}")))?;
        if body.origin != ctx.origin || i64::try_from(body.size).ok() != Some(size) {
            return Err(bad("its text does not match its row".into()));
        }
        if body.root.as_slice() != cp.root.as_slice() {
            return Err(bad("its root does not match its row".into()));
        }
        if body.size > leaves.len() as u64 {
            return Err(AuditError::Truncated {
                size,
                entries: leaves.len() as u64,
            });
        }
        while range.size() < body.size {
            match leaves_iter.next() {
                Some(l) => range.push(l),
                None => break,
            }
        }
        if range.root() != body.root {
            return Err(bad(
                "the entries up to it no longer hash to the root it signed: the log was rewritten"
                    .into(),
            ));
        }
        for c in cosigs.iter().filter(|c| c.size == size) {
            let witness = ctx.witnesses.iter().find(|(id, _, _)| *id == c.witness);
            let cosig_err = |problem: &str| AuditError::Cosignature {
                size,
                witness: c.witness.clone(),
                problem: problem.to_owned(),
            };
            let Some((_, name, keys)) = witness else {
                return Err(cosig_err("the witness is not in the directory"));
            };
            let parsed = SignedNote::parse(&format!("{}\n{}", signed.text, c.line))
                .map_err(|_| cosig_err("unreadable cosignature line"))?;
            let ok = parsed.signatures.iter().any(|s| {
                keys.iter().filter(|k| !k.revoked).any(|k| {
                    note::verify_cosignature(&signed.text, s, name, &k.key)
                        .ok()
                        .and_then(|at| i64::try_from(at).ok()?.checked_mul(1000))
                        .is_some_and(|at_ms| k.valid_at(at_ms))
                })
            });
            if !ok {
                return Err(cosig_err("does not verify"));
            }
            cosigned_size = cosigned_size.max(body.size);
        }
    }
    if let Some(c) = cosigs
        .iter()
        .find(|c| !checkpoints.iter().any(|cp| cp.size == c.size))
    {
        return Err(AuditError::Cosignature {
            size: c.size,
            witness: c.witness.clone(),
            problem: "cosigns a checkpoint that is no longer in the database".into(),
        });
    }
    Ok(cosigned_size)
}

/// Checks the log against a witness's latest cosigned checkpoint of it:
/// a database restored from an old backup holds fewer entries, or other
/// ones, than the witness cosigned.
pub fn check_witnessed(
    ctx: &VerifyContext,
    verified: &Verified,
    witness: &str,
    note_text: &str,
) -> Result<u64, AuditError> {
    let rolled = |witnessed: u64, problem: String| AuditError::RolledBack {
        witness: witness.to_owned(),
        witnessed,
        problem,
    };
    let signed = SignedNote::parse(note_text)
        .map_err(|e| rolled(0, format!("unreadable note from the witness: {e}")))?;
    if !valid(&ctx.owner_keys, None).any(|k| note::verify_note(&signed, &ctx.origin, k).is_ok()) {
        return Err(rolled(
            0,
            "the witness holds a checkpoint this node's key did not sign".into(),
        ));
    }
    let cp = note::Checkpoint::parse_body(&signed.text)
        .map_err(|e| rolled(0, format!("unreadable checkpoint: {e}")))?;
    if cp.size > verified.entries {
        return Err(rolled(
            cp.size,
            format!("the database holds only {} entries", verified.entries),
        ));
    }
    let size = usize::try_from(cp.size).unwrap_or(usize::MAX);
    if merkle::root(&verified.leaves[..size]) != cp.root {
        return Err(rolled(
            cp.size,
            "the database's first entries hash to another root".into(),
        ));
    }
    Ok(cp.size)
}
