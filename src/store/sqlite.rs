//! The SQLite backend, what differs from PostgreSQL: one writer
//! connection for transactions ([`Tx`]), a pool of read-only connections
//! for queries, a connection that checkpoints the WAL beside the writer,
//! outbox claims kept in memory (`Claims`), `secure_delete`, and
//! [`backup`]. WAL with `synchronous=FULL`: nothing is acknowledged before
//! it is on disk. The file is created mode 0600. The SQL both backends
//! share is in `read.rs`, `write.rs` and `batch.rs`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::{AuditRow, ClaimRequest, Conn, OutboxRow, StoreError, log, read};

#[derive(Clone)]
pub struct Store {
    writer: SqlitePool,
    pub(super) reader: SqlitePool,
    /// Folds the WAL back into the main file beside the writer (see
    /// `checkpoint_in_background`).
    checkpointer: SqlitePool,
    /// While any handle of this store lives, so does the checkpointer.
    _alive: std::sync::Arc<()>,
    /// Bulk transactions queue here, one at a time (see
    /// `store::Store::begin_bulk`).
    pub(super) bulk_gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Which outbox rows are claimed, by whom, until when (see `Claims`).
    claims: std::sync::Arc<tokio::sync::Mutex<Claims>>,
    /// Rows whose deletion is committing (see `SettlingGuard`).
    settling: Settling,
}

/// Claims on outbox rows, held in memory. A SQLite file has one node
/// process (a node starting releases every claim), so a claim only has
/// to keep this process's own senders apart and never outlives it: it
/// need not be written down. Kept here, a claim costs no write on the
/// single writer connection and no wait behind whatever transaction holds
/// it — an urgent report's claim used to queue behind a bulk chunk's
/// commit. The rows are read on the read-only pool. The semantics are
/// PostgreSQL's (`store::Store::claim_outbox`): leases, lapsed claims
/// taken over, the holder's own claims renewed and released, and a row
/// dequeued in a committed transaction no longer claimed.
#[derive(Default)]
pub(crate) struct Claims {
    rows: std::collections::HashMap<i64, Claim>,
    /// Claims per lane (peer, kind, urgent), lapsed ones included: how
    /// many rows past `limit` a claim reads to find `limit` free ones.
    per_lane: std::collections::HashMap<(String, String, bool), usize>,
}

struct Claim {
    holder: String,
    until_ms: i64,
    lane: (String, String, bool),
}

impl Claims {
    fn remove(&mut self, id: i64) -> Option<Claim> {
        let claim = self.rows.remove(&id)?;
        if let Some(n) = self.per_lane.get_mut(&claim.lane) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_lane.remove(&claim.lane);
            }
        }
        Some(claim)
    }

    fn insert(&mut self, id: i64, claim: Claim) {
        self.remove(id);
        *self.per_lane.entry(claim.lane.clone()).or_default() += 1;
        self.rows.insert(id, claim);
    }
}

/// Outbox rows deleted by a transaction that is committing: no claim takes
/// them from the moment before its commit until their claims are gone
/// after it. Without this, a claim whose read of the outbox began before
/// the commit could still see such a row, find it unclaimed (a row
/// withdrawn without a claim, or a lapsed one) and send it again. A
/// `std` lock, so the guard can clear its marks when dropped — also when
/// the commit fails or its future is dropped, leaving the rows claimable.
type Settling = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<i64>>>;

struct SettlingGuard {
    set: Settling,
    ids: Vec<i64>,
}

impl SettlingGuard {
    fn mark(set: &Settling, ids: Vec<i64>) -> SettlingGuard {
        if !ids.is_empty() {
            let mut marked = set.lock().unwrap_or_else(|e| e.into_inner());
            marked.extend(ids.iter().copied());
        }
        SettlingGuard {
            set: set.clone(),
            ids,
        }
    }
}

impl Drop for SettlingGuard {
    fn drop(&mut self) {
        if !self.ids.is_empty() {
            let mut marked = self.set.lock().unwrap_or_else(|e| e.into_inner());
            for id in &self.ids {
                marked.remove(id);
            }
        }
    }
}

/// How long a connection waits for a lock before it answers busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the truncating checkpoint after a purge waits for readers
/// before it answers busy (`checkpoint_wal`).
const CHECKPOINT_BUSY_WAIT: Duration = Duration::from_millis(50);

impl Store {
    /// Opens (creating if needed, mode 0600) and migrates the database.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            create_private(path)?;
        }
        let base = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Deleted and overwritten content is zeroed on disk, so data
            // purged by retention is gone from the file, not just unlinked.
            .pragma("secure_delete", "ON")
            .busy_timeout(BUSY_TIMEOUT);
        let writer = Self::open_writer(base.clone()).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base.clone().read_only(true))
            .await?;
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base)
            .await?;
        let alive = std::sync::Arc::new(());
        tokio::spawn(Self::checkpoint_in_background(
            checkpointer.clone(),
            std::sync::Arc::downgrade(&alive),
        ));
        Ok(Store {
            writer,
            reader,
            checkpointer,
            _alive: alive,
            bulk_gate: Default::default(),
            claims: Default::default(),
            settling: Default::default(),
        })
    }

    /// The single writer connection: checked, migrated, old rows' leaf
    /// hashes filled in.
    async fn open_writer(base: SqliteConnectOptions) -> Result<SqlitePool, StoreError> {
        // The writer keeps the hot pages (outbox, indexes, the audit tail)
        // in its own cache rather than re-reading them through the kernel.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(
                base.pragma("cache_size", "-32768")
                    // Fold the WAL back every ~40 MB rather than every 4 MB:
                    // hot pages (outbox, indexes) rewritten by many commits
                    // are copied back once instead of ten times.
                    .pragma("wal_autocheckpoint", "10000"),
            )
            .await?;
        // Fail closed on a damaged file rather than build on it.
        let check: Vec<String> = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_all(&writer)
            .await?;
        if check != ["ok"] {
            return Err(StoreError::Corrupt(check.join("; ")));
        }
        sqlx::migrate!("migrations/sqlite").run(&writer).await?;
        backfill_leaf_hashes(&writer).await?;
        Ok(writer)
    }

    /// Copies committed WAL frames back into the main file every
    /// `CHECKPOINT_EVERY`, on a connection of its own: a passive checkpoint
    /// takes no lock the writer waits for, so the copying and its `fsync`
    /// happen beside the writer instead of at the end of one of its
    /// commits (where they held up whatever came next — an urgent report
    /// behind a bulk chunk waited up to ~50 ms). The writer's own
    /// automatic checkpoint (every ~40 MB of WAL) then finds the frames
    /// already copied and only restarts the WAL; it stays as the fallback.
    async fn checkpoint_in_background(pool: SqlitePool, alive: std::sync::Weak<()>) {
        const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
        loop {
            tokio::time::sleep(CHECKPOINT_EVERY).await;
            if alive.strong_count() == 0 {
                pool.close().await;
                return;
            }
            if pool.is_closed() {
                return;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                if pool.is_closed() {
                    return;
                }
                tracing::debug!(error = %e, "background WAL checkpoint failed (the writer's own checkpoint remains)");
            }
        }
    }

    /// Closes the database, folding the WAL back into the main file so a
    /// stopped node's database is one self-contained file.
    pub async fn close(&self) {
        self.checkpointer.close().await;
        self.reader.close().await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint at close failed");
        }
        self.writer.close().await;
    }

    /// Starts a write transaction on the single writer connection.
    pub(super) async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx {
            tx: self.writer.begin().await?,
            claims: self.claims.clone(),
            settling: self.settling.clone(),
            dequeued: Vec::new(),
        })
    }

    /// `PRAGMA max_page_count = …`: the disk-full simulation of
    /// `store::Store::danger_limit_database`.
    pub(super) async fn danger_max_pages(&self, pragma: &'static str) -> Result<(), StoreError> {
        sqlx::query(pragma).execute(&self.writer).await?;
        Ok(())
    }

    /// Folds the WAL into the file and truncates it, so overwritten pages
    /// are gone from the WAL too (after a purge). SQLite answers one row
    /// `(busy, log, checkpointed)`: `busy` = 1 when a reader kept it from
    /// finishing; then nothing is truncated. Runs on the writer's
    /// connection (so no write of the node's can be caught between), which
    /// meanwhile waits for readers only `CHECKPOINT_BUSY_WAIT`, not its
    /// usual `BUSY_TIMEOUT`: the writer is held a moment at most, and the
    /// caller retries. Returns whether it finished.
    pub(super) async fn checkpoint_wal(&self) -> Result<bool, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let wait = |d: Duration| format!("PRAGMA busy_timeout = {}", d.as_millis());
        sqlx::query(sqlx::AssertSqlSafe(wait(CHECKPOINT_BUSY_WAIT)))
            .execute(&mut *conn)
            .await?;
        let answer: Result<(i64, i64, i64), sqlx::Error> =
            sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut *conn)
                .await;
        let restored = sqlx::query(sqlx::AssertSqlSafe(wait(BUSY_TIMEOUT)))
            .execute(&mut *conn)
            .await;
        if restored.is_err() {
            // A writer that would give up at once must not go back.
            conn.detach();
        }
        let (busy, _log, _done) = answer?;
        restored?;
        Ok(busy == 0)
    }

    /// Whether row `id` is claimed and its claim has not lapsed.
    pub(super) async fn is_claimed(&self, id: i64, now_ms: i64) -> bool {
        let claims = self.claims.lock().await;
        claims.rows.get(&id).is_some_and(|c| c.until_ms > now_ms)
    }

    /// Claims rows as `ask` says, in order. In memory (`Claims`); the rows
    /// are read on the read-only pool, so a claim never waits for the
    /// writer.
    pub(super) async fn claim_outbox(
        &self,
        ask: &ClaimRequest<'_>,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let (limit, now_ms) = (ask.limit, ask.now_ms);
        let lane = (ask.peer.to_owned(), ask.kind.to_owned(), ask.urgent);
        let mut claims = self.claims.lock().await;
        let held = claims.per_lane.get(&lane).copied().unwrap_or(0);
        let read_limit = limit.saturating_add(i64::try_from(held).unwrap_or(i64::MAX));
        let (peer, kind, urgent) = (ask.peer, ask.kind, Some(ask.urgent));
        let rows = {
            let mut conn = self.reader.acquire().await?;
            read::outbox_rows(Conn::Sqlite(&mut conn), peer, kind, urgent, read_limit).await?
        };
        let settling = self.settling.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(rows.len().min(usize::try_from(limit).unwrap_or(0)));
        for mut row in rows {
            if out.len() as i64 >= limit {
                break;
            }
            if settling.contains(&row.id) {
                continue;
            }
            match claims.rows.get(&row.id) {
                Some(c) if c.until_ms > now_ms => continue,
                Some(_) => row.taken_from = claims.remove(row.id).map(|c| c.holder),
                None => {}
            }
            claims.insert(
                row.id,
                Claim {
                    holder: ask.holder.to_owned(),
                    until_ms: ask.until_ms,
                    lane: lane.clone(),
                },
            );
            out.push(row);
        }
        Ok(out)
    }

    /// Moves the lease of `holder`'s claims on these rows to `until_ms`;
    /// returns how many it still holds.
    pub(super) async fn extend_claims(&self, ids: &[i64], holder: &str, until_ms: i64) -> u64 {
        let mut claims = self.claims.lock().await;
        let mut n = 0;
        for id in ids {
            if let Some(c) = claims.rows.get_mut(id).filter(|c| c.holder == holder) {
                c.until_ms = until_ms;
                n += 1;
            }
        }
        n
    }

    /// Gives up `holder`'s claims on these rows.
    pub(super) async fn release_claims(&self, ids: &[i64], holder: &str) {
        let mut claims = self.claims.lock().await;
        for id in ids {
            if claims.rows.get(id).is_some_and(|c| c.holder == holder) {
                claims.remove(*id);
            }
        }
    }

    /// Gives up every claim of `holder`, or every claim at all (`None`).
    /// Returns how many were released. (Claims of an earlier process are
    /// gone with it; columns `claimed_by`/`lease_until_ms` written by
    /// versions that kept claims in the file are ignored.)
    pub(super) async fn release_claims_of(&self, holder: Option<&str>) -> u64 {
        let mut claims = self.claims.lock().await;
        let ids: Vec<i64> = claims
            .rows
            .iter()
            .filter(|(_, c)| holder.is_none_or(|h| c.holder == h))
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            claims.remove(*id);
        }
        ids.len() as u64
    }
}

/// Fills in the leaf hashes of audit entries written before they existed.
async fn backfill_leaf_hashes(writer: &SqlitePool) -> Result<(), StoreError> {
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log
         WHERE leaf_hash IS NULL ORDER BY seq",
    )
    .fetch_all(writer)
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut tx = writer.begin().await?;
    for r in rows {
        let leaf = log::leaf_hash(r.seq, r.at_ms, &r.kind, &r.actor, &r.subject, &r.detail);
        sqlx::query("UPDATE audit_log SET leaf_hash = ? WHERE seq = ?")
            .bind(leaf.as_slice())
            .bind(r.seq)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// SQLite's half of a write transaction.
pub struct Tx {
    pub(super) tx: Transaction<'static, Sqlite>,
    /// The store's claims, and the outbox rows this transaction deleted:
    /// their claims end when it commits.
    claims: std::sync::Arc<tokio::sync::Mutex<Claims>>,
    settling: Settling,
    pub(super) dequeued: Vec<i64>,
}

impl Tx {
    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        let dequeued = std::mem::take(&mut self.dequeued);
        // From before the commit until the rows' claims are gone, no claim
        // takes the rows deleted here (`SettlingGuard`).
        let _settling = SettlingGuard::mark(&self.settling, dequeued.clone());
        self.tx.commit().await?;
        // Only once the deletion is visible to readers: a claim reads the
        // outbox and the claims under the same lock, so one that begins
        // after this no longer sees the rows.
        if !dequeued.is_empty() {
            let mut claims = self.claims.lock().await;
            for id in &dequeued {
                claims.remove(*id);
            }
        }
        Ok(())
    }
}

/// Copies the database at `path` to a new file `out` (mode 0600) with
/// SQLite's `VACUUM INTO`: a consistent snapshot taken in one read
/// transaction, safe while the node runs and writes. Returns the number of
/// audit entries in the copy.
pub async fn backup(path: &Path, out: &Path) -> Result<u64, StoreError> {
    if !path.exists() {
        return Err(StoreError::Corrupt(format!(
            "{} does not exist",
            path.display()
        )));
    }
    // VACUUM INTO needs a new or empty file; creating it first gives it
    // mode 0600.
    create_private(out)?;
    let options = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let target = out.display().to_string();
    let result = sqlx::query("VACUUM INTO ?")
        .bind(&target)
        .execute(&pool)
        .await;
    pool.close().await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(out);
        return Err(e.into());
    }
    let copy = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::from_str("sqlite://")?
                .filename(out)
                .read_only(true),
        )
        .await?;
    let mut conn = copy.acquire().await?;
    let n = read::audit_size(Conn::Sqlite(&mut conn)).await;
    drop(conn);
    copy.close().await;
    n
}

/// Creates `path` as a new, empty file only its owner may read and write
/// (mode 0600), replacing any file there, and syncs it.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let create = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(path);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?
            .sync_all()
    };
    create().map_err(|source| StoreError::Create {
        path: path.display().to_string(),
        source,
    })
}
