//! The SQLite backend: one writer connection for transactions ([`Tx`]), a
//! pool of read-only connections for queries. WAL with `synchronous=FULL`:
//! nothing is acknowledged before it is on disk. The file is created mode
//! 0600.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::*;
use crate::audit;
use crate::audit::merkle::Hash;

// Queries used both inside write transactions and on the read pool.

async fn latest_checkpoint<'e>(
    e: impl sqlx::SqliteExecutor<'e>,
) -> Result<Option<CheckpointRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT size, root, note, created_at_ms FROM checkpoints ORDER BY size DESC LIMIT 1",
    )
    .fetch_optional(e)
    .await?)
}

async fn audit_size<'e>(e: impl sqlx::SqliteExecutor<'e>) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_log")
        .fetch_one(e)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The leaf hashes of audit entries `after + 1 ..= upto`, in order.
async fn leaf_range<'e>(
    e: impl sqlx::SqliteExecutor<'e>,
    after: u64,
    upto: u64,
) -> Result<Vec<Hash>, StoreError> {
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT leaf_hash FROM audit_log WHERE seq > ? AND seq <= ? ORDER BY seq",
    )
    .bind(i64::try_from(after).unwrap_or(i64::MAX))
    .bind(i64::try_from(upto).unwrap_or(i64::MAX))
    .fetch_all(e)
    .await?;
    Ok(rows.iter().map(|r| to_hash(r)).collect())
}

/// Binds `items` separated by commas (the inside of an `IN (…)` list).
fn push_list<T>(q: &mut sqlx::QueryBuilder<Sqlite>, items: &[T])
where
    T: Copy + for<'t> sqlx::Encode<'t, Sqlite> + sqlx::Type<Sqlite>,
{
    let mut list = q.separated(", ");
    for item in items {
        list.push_bind(*item);
    }
}

#[derive(Clone)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Folds the WAL back into the main file beside the writer (see
    /// `checkpoint_in_background`).
    checkpointer: SqlitePool,
    /// While any handle of this store lives, so does the checkpointer.
    _alive: std::sync::Arc<()>,
    /// Bulk transactions queue here, one at a time (see
    /// `store::Store::begin_bulk`).
    bulk_gate: std::sync::Arc<tokio::sync::Mutex<()>>,
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

impl Store {
    /// Opens (creating if needed, mode 0600) and migrates the database.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            crate::crypto::signing::write_private_file(path, b"").map_err(|source| {
                StoreError::Create {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        }
        let base = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Deleted and overwritten content is zeroed on disk, so data
            // purged by retention is gone from the file, not just unlinked.
            .pragma("secure_delete", "ON")
            .busy_timeout(Duration::from_secs(10));
        // The writer keeps the hot pages (outbox, indexes, the audit tail)
        // in its own cache rather than re-reading them through the kernel.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(
                base.clone()
                    .pragma("cache_size", "-32768")
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
        Self::backfill_leaf_hashes(&writer).await?;
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
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx {
            tx: self.writer.begin().await?,
            audit_head: None,
            _bulk: None,
            claims: self.claims.clone(),
            settling: self.settling.clone(),
            dequeued: Vec::new(),
        })
    }

    /// A write transaction for bulk work, behind the bulk gate; `ready`
    /// is awaited once the gate is held.
    pub async fn begin_bulk(&self, ready: impl Future<Output = ()>) -> Result<Tx, StoreError> {
        let gate = self.bulk_gate.clone().lock_owned().await;
        ready.await;
        Ok(Tx {
            tx: self.writer.begin().await?,
            audit_head: None,
            _bulk: Some(gate),
            claims: self.claims.clone(),
            settling: self.settling.clone(),
            dequeued: Vec::new(),
        })
    }

    /// Caps the database at its current size, as a full disk would: every
    /// write that needs a new page then fails. For tests of disk-full
    /// behaviour; `danger_unlimit_database` lifts it.
    pub async fn danger_limit_database(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA max_page_count = 1")
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn danger_unlimit_database(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA max_page_count = 4294967294")
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn report_by_seq(&self, seq: i64) -> Result<Option<ReportRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM reports WHERE seq = ?")
            .bind(seq)
            .fetch_optional(&self.reader)
            .await?)
    }

    /// Reports with this id (from any origin), or with `origin` when given.
    pub async fn reports_by_id(
        &self,
        origin: Option<&str>,
        report_id: &str,
    ) -> Result<Vec<ReportRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM reports WHERE report_id = ?1 AND (?2 IS NULL OR origin = ?2) ORDER BY seq LIMIT 2",
        )
        .bind(report_id)
        .bind(origin)
        .fetch_all(&self.reader)
        .await?)
    }

    pub async fn list_reports(&self, f: &CaseFilter<'_>) -> Result<Vec<ReportRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM reports r
             WHERE (?1 IS NULL OR (CASE WHEN r.relay = 1 THEN 'relayed' ELSE r.direction END) = ?1)
               AND (?2 IS NULL OR r.status = ?2)
               AND (?3 IS NULL OR r.category = ?3)
               AND (?4 IS NULL OR r.priority = ?4)
               AND (?5 IS NULL OR r.created_at_ms >= ?5)
               AND (?6 IS NULL OR r.origin = ?6 OR r.received_from = ?6
                    OR EXISTS (SELECT 1 FROM deliveries d WHERE d.report_seq = r.seq AND d.destination = ?6))
             ORDER BY r.seq DESC LIMIT ?7",
        )
        .bind(f.direction)
        .bind(f.status)
        .bind(f.category)
        .bind(f.priority)
        .bind(f.created_after_ms)
        .bind(f.peer)
        .bind(f.limit)
        .fetch_all(&self.reader)
        .await?)
    }

    pub async fn deliveries(&self, seq: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT d.destination, d.state, d.receipt, d.reason, d.delivered_at_ms,
                    COALESCE(MAX(o.attempts), 0) AS attempts, MAX(o.last_error) AS last_error,
                    d.next_hop, d.relayed_at_ms, d.via, d.handed_off_by
             FROM deliveries d
             LEFT JOIN outbox o ON o.report_seq = d.report_seq
                AND o.peer = COALESCE(d.next_hop, d.destination) AND o.kind = 'report'
             WHERE d.report_seq = ?
             GROUP BY d.destination ORDER BY d.destination",
        )
        .bind(seq)
        .fetch_all(&self.reader)
        .await?)
    }

    /// For time-to-takedown figures: every destination of the reports
    /// `origin` sent since `since_ms`.
    pub async fn sent_since(
        &self,
        origin: &str,
        since_ms: i64,
    ) -> Result<Vec<SentRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT r.seq, r.category, COALESCE(r.hosting_country, '') AS country, r.created_at_ms,
                    d.destination, d.state, d.delivered_at_ms, d.relayed_at_ms, d.next_hop
             FROM reports r JOIN deliveries d ON d.report_seq = r.seq
             WHERE r.origin = ? AND r.relay = 0 AND r.created_at_ms >= ? ORDER BY r.seq",
        )
        .bind(origin)
        .bind(since_ms)
        .fetch_all(&self.reader)
        .await?)
    }

    /// For time-to-takedown figures: cases worked here received since
    /// `since_ms` (not joined to another case).
    pub async fn worked_since(&self, since_ms: i64) -> Result<Vec<SentRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT r.seq, r.category, COALESCE(r.hosting_country, '') AS country,
                    r.stored_at_ms AS created_at_ms, r.origin AS destination, r.status AS state,
                    NULL AS delivered_at_ms, NULL AS relayed_at_ms, NULL AS next_hop
             FROM reports r
             WHERE r.direction IN ('incoming', 'local') AND r.relay = 0 AND r.joined_to IS NULL
               AND r.stored_at_ms >= ? ORDER BY r.seq",
        )
        .bind(since_ms)
        .fetch_all(&self.reader)
        .await?)
    }

    /// The first time each status was reached, per report and signer, for
    /// reports since `since_seq`.
    pub async fn first_statuses(&self, since_seq: i64) -> Result<Vec<FirstStatus>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT report_seq, COALESCE(signer, '') AS signer, status, MIN(at_ms) AS at_ms
             FROM status_history WHERE report_seq >= ?
             GROUP BY report_seq, signer, status",
        )
        .bind(since_seq)
        .fetch_all(&self.reader)
        .await?)
    }

    /// The reports that joined the case `seq` (same content, other origins).
    pub async fn joined(&self, seq: i64) -> Result<Vec<ReportRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM reports WHERE joined_to = ? ORDER BY seq")
                .bind(seq)
                .fetch_all(&self.reader)
                .await?,
        )
    }

    pub async fn history(&self, seq: i64) -> Result<Vec<HistoryRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT status, reason, actor, signer, at_ms FROM status_history WHERE report_seq = ? ORDER BY id",
        )
        .bind(seq)
        .fetch_all(&self.reader)
        .await?)
    }

    /// The next batch for `peer` of one kind: urgent first, then in order.
    pub async fn outbox_batch(
        &self,
        peer: &str,
        kind: &str,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, peer, kind, urgent, report_seq, body, attempts, returned FROM outbox
             WHERE peer = ? AND kind = ? ORDER BY urgent DESC, id LIMIT ?",
        )
        .bind(peer)
        .bind(kind)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }

    pub async fn outbox_lane(
        &self,
        peer: &str,
        kind: &str,
        urgent: bool,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, peer, kind, urgent, report_seq, body, attempts, returned FROM outbox
             WHERE peer = ? AND kind = ? AND urgent = ? ORDER BY id LIMIT ?",
        )
        .bind(peer)
        .bind(kind)
        .bind(urgent)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }

    /// (seq, envelope) of these reports.
    pub async fn report_envelopes(&self, seqs: &[i64]) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "SELECT seq, envelope FROM reports WHERE seq IN (",
            );
            push_list(&mut q, chunk);
            q.push(")");
            out.extend(
                q.build_query_as::<(i64, Vec<u8>)>()
                    .fetch_all(&self.reader)
                    .await?,
            );
        }
        Ok(out)
    }

    pub async fn urgent_pending(&self, peer: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE peer = ? AND kind IN ('report', 'status') AND urgent = 1)",
        )
        .bind(peer)
        .fetch_one(&self.reader)
        .await?;
        Ok(n != 0)
    }

    /// Records a failed attempt for these outbox rows.
    pub async fn outbox_failed(&self, ids: &[i64], error: &str) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ",
            );
            q.push_bind(error);
            q.push(" WHERE id IN (");
            push_list(&mut q, chunk);
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` rows of one lane of `peer` whose claim is
    /// absent or lapsed, for `holder` until `now_ms + lease_ms`, in order.
    /// In memory (`Claims`); the rows are read on the read-only pool, so a
    /// claim never waits for the writer.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_outbox(
        &self,
        peer: &str,
        kind: &str,
        urgent: bool,
        limit: i64,
        holder: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let lane = (peer.to_owned(), kind.to_owned(), urgent);
        let mut claims = self.claims.lock().await;
        let held = claims.per_lane.get(&lane).copied().unwrap_or(0);
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, peer, kind, urgent, report_seq, body, attempts, returned FROM outbox
             WHERE peer = ? AND kind = ? AND urgent = ? ORDER BY id LIMIT ?",
        )
        .bind(peer)
        .bind(kind)
        .bind(urgent)
        .bind(limit.saturating_add(i64::try_from(held).unwrap_or(i64::MAX)))
        .fetch_all(&self.reader)
        .await?;
        let until_ms = now_ms.saturating_add(lease_ms);
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
                    holder: holder.to_owned(),
                    until_ms,
                    lane: lane.clone(),
                },
            );
            out.push(row);
        }
        Ok(out)
    }

    /// Moves the lease of `holder`'s claims on these rows to `until_ms`;
    /// returns how many it still holds.
    pub async fn extend_claims(
        &self,
        ids: &[i64],
        holder: &str,
        until_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut claims = self.claims.lock().await;
        let mut n = 0;
        for id in ids {
            if let Some(c) = claims.rows.get_mut(id).filter(|c| c.holder == holder) {
                c.until_ms = until_ms;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Gives up `holder`'s claims on these rows; with `error`, records a
    /// failed attempt for each row too (durably, before the claims end).
    pub async fn release_claims(
        &self,
        ids: &[i64],
        holder: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        if let Some(error) = error {
            self.outbox_failed(ids, error).await?;
        }
        let mut claims = self.claims.lock().await;
        for id in ids {
            if claims.rows.get(id).is_some_and(|c| c.holder == holder) {
                claims.remove(*id);
            }
        }
        Ok(())
    }

    /// Gives up every claim of `holder`, or every claim at all (`None`).
    /// Returns how many were released. (Claims of an earlier process are
    /// gone with it; columns `claimed_by`/`lease_until_ms` written by
    /// versions that kept claims in the file are ignored.)
    pub async fn release_claims_of(&self, holder: Option<&str>) -> Result<u64, StoreError> {
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
        Ok(ids.len() as u64)
    }

    pub async fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError> {
        latest_checkpoint(&self.reader).await
    }

    pub async fn checkpoint(&self, size: u64) -> Result<Option<CheckpointRow>, StoreError> {
        Ok(
            sqlx::query_as(
                "SELECT size, root, note, created_at_ms FROM checkpoints WHERE size = ?",
            )
            .bind(i64::try_from(size).unwrap_or(i64::MAX))
            .fetch_optional(&self.reader)
            .await?,
        )
    }

    pub async fn cosignatures(&self, size: u64) -> Result<Vec<CosignatureRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT size, witness, line, timestamp FROM cosignatures WHERE size = ? ORDER BY witness",
        )
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?)
    }

    pub async fn witnessed(&self, log: &str) -> Result<Option<WitnessedRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT log, size, root, note, cosignature, updated_at_ms FROM witnessed WHERE log = ?",
        )
        .bind(log)
        .fetch_optional(&self.reader)
        .await?)
    }

    /// The leaf hashes of the first `size` entries, in order.
    pub async fn leaf_range(&self, after: u64, upto: u64) -> Result<Vec<Hash>, StoreError> {
        leaf_range(&self.reader, after, upto).await
    }

    /// Fills in the leaf hashes of entries written before they existed.
    async fn backfill_leaf_hashes(writer: &SqlitePool) -> Result<(), StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log WHERE leaf_hash IS NULL ORDER BY seq",
        )
        .fetch_all(writer)
        .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = writer.begin().await?;
        for r in rows {
            let leaf = audit::leaf_hash(r.seq, r.at_ms, &r.kind, &r.actor, &r.subject, &r.detail);
            sqlx::query("UPDATE audit_log SET leaf_hash = ? WHERE seq = ?")
                .bind(leaf.as_slice())
                .bind(r.seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether the database file answers a read (for health).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sqlite_master")
            .fetch_one(&self.reader)
            .await?;
        Ok(())
    }

    /// Per peer: undelivered items and the creation time of the oldest.
    pub async fn outbox_summary(&self) -> Result<Vec<QueueRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT peer, COUNT(*) AS depth, MIN(created_at_ms) AS oldest_ms FROM outbox GROUP BY peer ORDER BY peer",
        )
        .fetch_all(&self.reader)
        .await?)
    }

    pub async fn audit_entries_count(&self) -> Result<u64, StoreError> {
        audit_size(&self.reader).await
    }

    /// Number of cases by direction and status.
    pub async fn case_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT direction, status, COUNT(*) FROM reports GROUP BY direction, status ORDER BY direction, status",
        )
        .fetch_all(&self.reader)
        .await?)
    }

    /// The latest audit entry of `kind`.
    pub async fn last_audit_of_kind(&self, kind: &str) -> Result<Option<AuditRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log WHERE kind = ? ORDER BY seq DESC LIMIT 1",
        )
        .bind(kind)
        .fetch_optional(&self.reader)
        .await?)
    }

    pub async fn referrals(&self, seq: i64) -> Result<Vec<ReferralRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT agency, reference, referred_at_ms, actor FROM referrals WHERE report_seq = ? ORDER BY id",
        )
        .bind(seq)
        .fetch_all(&self.reader)
        .await?)
    }

    /// The signed status updates (protobuf `Signed`) of a case, in order.
    pub async fn signed_status_updates(&self, seq: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT signed FROM status_history WHERE report_seq = ? AND signed IS NOT NULL ORDER BY id",
        )
        .bind(seq)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Every audit entry about `subject` (e.g. `ORIGIN/REPORT-ID`), in order.
    pub async fn audit_entries_about(&self, subject: &str) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log WHERE subject = ? ORDER BY seq",
        )
        .bind(subject)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Reports not purged yet, with nothing left to send, whose record kind
    /// expired: `closed` (a final case status, last changed before
    /// `cutoff_ms`), `refused` (outgoing, refused by every receiver) or
    /// `delivered` (outgoing, delivered to every destination).
    pub async fn expired_reports(
        &self,
        kind: &str,
        cutoff_ms: i64,
        limit: i64,
    ) -> Result<Vec<ExpiredRow>, StoreError> {
        let sql: &'static str = match kind {
            "closed" => {
                "SELECT r.seq, r.origin, r.report_id, r.direction, r.status FROM reports r
                 WHERE r.purged_at_ms IS NULL AND r.updated_at_ms <= ?1
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.report_seq = r.seq)
                   AND r.status IN ('not-illegal', 'removed', 'moved', 'retracted')
                 ORDER BY r.seq LIMIT ?2"
            }
            "refused" => {
                "SELECT r.seq, r.origin, r.report_id, r.direction, r.status FROM reports r
                 WHERE r.purged_at_ms IS NULL AND r.updated_at_ms <= ?1
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.report_seq = r.seq)
                   AND r.direction = 'outgoing' AND r.status = 'refused'
                 ORDER BY r.seq LIMIT ?2"
            }
            "delivered" => {
                "SELECT r.seq, r.origin, r.report_id, r.direction, r.status FROM reports r
                 WHERE r.purged_at_ms IS NULL AND r.updated_at_ms <= ?1
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.report_seq = r.seq)
                   AND EXISTS (SELECT 1 FROM deliveries d WHERE d.report_seq = r.seq)
                   AND ((r.direction = 'outgoing' AND r.relay = 0
                         AND r.status NOT IN ('queued', 'held', 'no-hotline', 'refused',
                                              'not-illegal', 'removed', 'moved', 'retracted')
                         AND NOT EXISTS (SELECT 1 FROM deliveries d
                                         WHERE d.report_seq = r.seq AND d.state <> 'delivered'))
                        -- a copy this node only relayed, once every destination answered
                        OR (r.relay = 1
                            AND NOT EXISTS (SELECT 1 FROM deliveries d
                                            WHERE d.report_seq = r.seq AND d.state = 'queued')))
                 ORDER BY r.seq LIMIT ?2"
            }
            _ => return Ok(Vec::new()),
        };
        Ok(sqlx::query_as(sql)
            .bind(cutoff_ms)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?)
    }

    /// Folds the WAL into the main file and truncates it, so overwritten
    /// pages are gone from the WAL too (after a purge).
    pub async fn checkpoint_wal(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }
}

/// One write transaction. Dropping it without `commit` rolls back.
pub struct Tx {
    tx: Transaction<'static, Sqlite>,
    /// The audit log's head as this transaction left it: later entries in
    /// the same transaction chain to it without reading it back.
    audit_head: Option<(i64, Vec<u8>)>,
    /// Held by a bulk transaction until it ends.
    _bulk: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// The store's claims, and the outbox rows this transaction deleted:
    /// their claims end when it commits.
    claims: std::sync::Arc<tokio::sync::Mutex<Claims>>,
    settling: Settling,
    dequeued: Vec<i64>,
}

/// A case worked here that new reports of the same content may join.
macro_rules! open_case {
    () => {
        "r.relay = 0 AND r.joined_to IS NULL AND r.direction IN ('incoming', 'local')
         AND r.status NOT IN ('removed', 'moved', 'retracted')"
    };
}

impl Tx {
    pub async fn commit(mut self) -> Result<(), StoreError> {
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

    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }

    pub async fn find_report(
        &mut self,
        origin: &str,
        report_id: &str,
    ) -> Result<Option<ReportRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM reports WHERE origin = ? AND report_id = ?")
                .bind(origin)
                .bind(report_id)
                .fetch_optional(&mut *self.tx)
                .await?,
        )
    }

    pub async fn report_by_seq(&mut self, seq: i64) -> Result<Option<ReportRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM reports WHERE seq = ?")
            .bind(seq)
            .fetch_optional(&mut *self.tx)
            .await?)
    }

    pub async fn insert_report(&mut self, r: &NewReport<'_>) -> Result<i64, StoreError> {
        let res = sqlx::query(
            "INSERT INTO reports (report_id, origin, direction, category, priority, status,
                hosting_country, route, payload, payload_digest, envelope, received_from,
                created_at_ms, stored_at_ms, updated_at_ms, relay, receipt, joined_to)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.report_id)
        .bind(r.origin)
        .bind(r.direction)
        .bind(r.category)
        .bind(r.priority)
        .bind(r.status)
        .bind(r.hosting_country)
        .bind(r.route)
        .bind(super::payload_column(r))
        .bind(r.payload_digest)
        .bind(r.envelope)
        .bind(r.received_from)
        .bind(r.created_at_ms)
        .bind(r.now_ms)
        .bind(r.now_ms)
        .bind(r.relay)
        .bind(r.receipt)
        .bind(r.joined_to)
        .execute(&mut *self.tx)
        .await?;
        Ok(res.last_insert_rowid())
    }

    pub async fn insert_reports(&mut self, rs: &[NewReport<'_>]) -> Result<Vec<i64>, StoreError> {
        let mut by_key = std::collections::HashMap::with_capacity(rs.len());
        for chunk in rs.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO reports (report_id, origin, direction, category, priority, status,
                    hosting_country, route, payload, payload_digest, envelope, received_from,
                    created_at_ms, stored_at_ms, updated_at_ms, relay, receipt, joined_to) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.report_id)
                    .push_bind(r.origin)
                    .push_bind(r.direction)
                    .push_bind(r.category)
                    .push_bind(r.priority)
                    .push_bind(r.status)
                    .push_bind(r.hosting_country)
                    .push_bind(r.route)
                    .push_bind(super::payload_column(r))
                    .push_bind(r.payload_digest)
                    .push_bind(r.envelope)
                    .push_bind(r.received_from)
                    .push_bind(r.created_at_ms)
                    .push_bind(r.now_ms)
                    .push_bind(r.now_ms)
                    .push_bind(r.relay)
                    .push_bind(r.receipt)
                    .push_bind(r.joined_to);
            });
            q.push(" RETURNING seq, origin, report_id");
            let rows: Vec<(i64, String, String)> =
                q.build_query_as().fetch_all(&mut *self.tx).await?;
            for (seq, origin, id) in rows {
                by_key.insert((origin, id), seq);
            }
        }
        rs.iter()
            .map(|r| {
                by_key
                    .get(&(r.origin.to_owned(), r.report_id.to_owned()))
                    .copied()
                    .ok_or_else(|| StoreError::Invariant("an inserted report has no seq".into()))
            })
            .collect()
    }

    pub async fn find_reports(
        &mut self,
        keys: &[(&str, &str)],
    ) -> Result<Vec<ReportRow>, StoreError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new("SELECT r.* FROM reports r JOIN (");
            q.push_values(chunk, |mut b, (origin, id)| {
                b.push_bind(*origin).push_bind(*id);
            });
            q.push(") AS k ON r.origin = k.column1 AND r.report_id = k.column2");
            out.extend(q.build_query_as().fetch_all(&mut *self.tx).await?);
        }
        Ok(out)
    }

    pub async fn reports_by_seqs(&mut self, seqs: &[i64]) -> Result<Vec<ReportRow>, StoreError> {
        let mut out = Vec::new();
        for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new("SELECT * FROM reports WHERE seq IN (");
            push_list(&mut q, chunk);
            q.push(")");
            out.extend(q.build_query_as().fetch_all(&mut *self.tx).await?);
        }
        Ok(out)
    }

    pub async fn open_cases_with_keys(
        &mut self,
        keys: &[&str],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "SELECT k.key, MIN(r.seq) FROM case_keys k JOIN reports r ON r.seq = k.report_seq
                 WHERE k.key IN (",
            );
            push_list(&mut q, chunk);
            q.push(concat!(") AND ", open_case!(), " GROUP BY k.key"));
            out.extend(
                q.build_query_as::<(String, i64)>()
                    .fetch_all(&mut *self.tx)
                    .await?,
            );
        }
        Ok(out)
    }

    pub async fn insert_case_keys_many(&mut self, keys: &[(i64, &str)]) -> Result<(), StoreError> {
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO case_keys (key, report_seq) ",
            );
            q.push_values(chunk, |mut b, (seq, key)| {
                b.push_bind(*key).push_bind(*seq);
            });
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub async fn insert_deliveries(&mut self, ds: &[NewDelivery<'_>]) -> Result<(), StoreError> {
        for chunk in ds.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO deliveries (report_seq, destination, state, next_hop, handed_off_by) ",
            );
            q.push_values(chunk, |mut b, d| {
                b.push_bind(d.seq)
                    .push_bind(d.destination)
                    .push_bind("queued")
                    .push_bind(d.next_hop.filter(|h| *h != d.destination))
                    .push_bind(None::<&str>);
            });
            q.push(" ON CONFLICT (report_seq, destination) DO NOTHING");
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub async fn enqueue_many(
        &mut self,
        rows: &[NewOutbox<'_>],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO outbox (peer, kind, urgent, report_seq, body, created_at_ms, returned) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.peer)
                    .push_bind(r.kind)
                    .push_bind(r.urgent)
                    .push_bind(r.report_seq)
                    .push_bind(r.body)
                    .push_bind(now_ms)
                    .push_bind(r.returned);
            });
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub async fn insert_statuses(
        &mut self,
        rows: &[NewStatus<'_>],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO status_history (report_seq, update_id, status, reason, actor, signer, signed, at_ms) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.seq)
                    .push_bind(r.update_id.as_str())
                    .push_bind(r.status)
                    .push_bind(r.reason)
                    .push_bind(r.actor)
                    .push_bind(None::<&str>)
                    .push_bind(None::<&[u8]>)
                    .push_bind(at_ms);
            });
            q.push(" ON CONFLICT (update_id) DO NOTHING");
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Appends the entries in order, chained; returns the sequence number
    /// of the last (the log's size).
    pub async fn audit_many(
        &mut self,
        entries: &[audit::Entry],
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let (prev_seq, prev_hash) = match self.audit_head.take() {
            Some(head) => head,
            None => {
                let last: Option<(i64, Vec<u8>)> =
                    sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                        .fetch_optional(&mut *self.tx)
                        .await?;
                last.unwrap_or((0, audit::GENESIS.to_vec()))
            }
        };
        let rows = audit::chain(entries, prev_seq, &prev_hash, now_ms);
        crate::faults::crash_point("audit-append");
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO audit_log (seq, at_ms, kind, actor, subject, detail, prev_hash, hash, leaf_hash) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.seq)
                    .push_bind(now_ms)
                    .push_bind(r.kind)
                    .push_bind(r.actor)
                    .push_bind(r.subject)
                    .push_bind(r.detail.as_str())
                    .push_bind(r.prev_hash.as_slice())
                    .push_bind(r.hash.as_slice())
                    .push_bind(r.leaf.as_slice());
            });
            q.build().execute(&mut *self.tx).await?;
        }
        let head = match rows.last() {
            Some(last) => (last.seq, last.hash.to_vec()),
            None => (prev_seq, prev_hash),
        };
        let seq = head.0;
        self.audit_head = Some(head);
        Ok(seq)
    }

    pub async fn dequeue_many(&mut self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new("DELETE FROM outbox WHERE id IN (");
            push_list(&mut q, chunk);
            q.push(") RETURNING id");
            out.extend(
                q.build_query_scalar::<i64>()
                    .fetch_all(&mut *self.tx)
                    .await?,
            );
        }
        self.dequeued.extend_from_slice(&out);
        Ok(out)
    }

    pub async fn destinations_via_many(
        &mut self,
        seqs: &[i64],
        next_hop: &str,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let mut out = Vec::new();
        for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "SELECT report_seq, destination FROM deliveries WHERE COALESCE(next_hop, destination) = ",
            );
            q.push_bind(next_hop);
            q.push(" AND report_seq IN (");
            push_list(&mut q, chunk);
            q.push(") ORDER BY report_seq, destination");
            out.extend(
                q.build_query_as::<(i64, String)>()
                    .fetch_all(&mut *self.tx)
                    .await?,
            );
        }
        Ok(out)
    }

    pub async fn finish_deliveries(
        &mut self,
        ds: &[FinishedDelivery<'_>],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        for chunk in ds.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "WITH v (report_seq, destination, state, receipt, reason) AS (",
            );
            q.push_values(chunk, |mut b, d| {
                b.push_bind(d.seq)
                    .push_bind(d.destination)
                    .push_bind(d.state)
                    .push_bind(d.receipt)
                    .push_bind(d.reason);
            });
            q.push(
                ") UPDATE deliveries SET state = v.state, receipt = v.receipt, reason = v.reason,
                    delivered_at_ms = ",
            );
            q.push_bind(now_ms);
            q.push(
                " FROM v WHERE deliveries.report_seq = v.report_seq
                   AND deliveries.destination = v.destination",
            );
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub async fn set_status_many(
        &mut self,
        seqs: &[i64],
        from: &str,
        to: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new("UPDATE reports SET status = ");
            q.push_bind(to);
            q.push(", updated_at_ms = ");
            q.push_bind(now_ms);
            q.push(" WHERE status = ");
            q.push_bind(from);
            q.push(" AND seq IN (");
            push_list(&mut q, chunk);
            q.push(")");
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub async fn find_submissions(
        &mut self,
        operator: &str,
        ids: &[&str],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "SELECT submission_id, report_seq FROM submissions WHERE operator = ",
            );
            q.push_bind(operator);
            q.push(" AND submission_id IN (");
            push_list(&mut q, chunk);
            q.push(")");
            out.extend(
                q.build_query_as::<(String, i64)>()
                    .fetch_all(&mut *self.tx)
                    .await?,
            );
        }
        Ok(out)
    }

    pub async fn insert_submissions(
        &mut self,
        operator: &str,
        rows: &[(&str, i64)],
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO submissions (operator, submission_id, report_seq) ",
            );
            q.push_values(chunk, |mut b, (id, seq)| {
                b.push_bind(operator).push_bind(*id).push_bind(*seq);
            });
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// The report an operator's earlier submission with this key created.
    pub async fn find_submission(
        &mut self,
        operator: &str,
        submission_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT report_seq FROM submissions WHERE operator = ? AND submission_id = ?",
        )
        .bind(operator)
        .bind(submission_id)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    pub async fn insert_submission(
        &mut self,
        operator: &str,
        submission_id: &str,
        report_seq: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO submissions (operator, submission_id, report_seq) VALUES (?, ?, ?)",
        )
        .bind(operator)
        .bind(submission_id)
        .bind(report_seq)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn set_receipt(&mut self, seq: i64, receipt: &[u8]) -> Result<(), StoreError> {
        sqlx::query("UPDATE reports SET receipt = ? WHERE seq = ?")
            .bind(receipt)
            .bind(seq)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn set_status(
        &mut self,
        seq: i64,
        status: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE reports SET status = ?, updated_at_ms = ? WHERE seq = ?")
            .bind(status)
            .bind(now_ms)
            .bind(seq)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// A destination of a report, reached through `next_hop` when that is
    /// not the destination itself; `handed_off_by` when another destination
    /// handed the case over to it. False when it was already there.
    pub async fn insert_delivery(
        &mut self,
        seq: i64,
        destination: &str,
        next_hop: Option<&str>,
        handed_off_by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "INSERT INTO deliveries (report_seq, destination, state, next_hop, handed_off_by)
             VALUES (?, ?, 'queued', ?, ?) ON CONFLICT (report_seq, destination) DO NOTHING",
        )
        .bind(seq)
        .bind(destination)
        .bind(next_hop.filter(|h| *h != destination))
        .bind(handed_off_by)
        .execute(&mut *self.tx)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// The delivery state of one destination of a report.
    pub async fn delivery_state(
        &mut self,
        seq: i64,
        destination: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT state FROM deliveries WHERE report_seq = ? AND destination = ?",
        )
        .bind(seq)
        .bind(destination)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// A relay took the report over for `destination`: its receipt is kept
    /// while the destination's own receipt is awaited.
    pub async fn relayed_delivery(
        &mut self,
        seq: i64,
        destination: &str,
        relay_receipt: &[u8],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE deliveries SET relay_receipt = ?, relayed_at_ms = ?
             WHERE report_seq = ? AND destination = ? AND state = 'queued' AND relayed_at_ms IS NULL",
        )
        .bind(relay_receipt)
        .bind(now_ms)
        .bind(seq)
        .bind(destination)
        .execute(&mut *self.tx)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// The relays a destination's receipt came back through.
    pub async fn set_delivery_via(
        &mut self,
        seq: i64,
        destination: &str,
        via: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE deliveries SET via = ? WHERE report_seq = ? AND destination = ?")
            .bind(via)
            .bind(seq)
            .bind(destination)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The destinations whose reports go through `next_hop`.
    pub async fn destinations_via(
        &mut self,
        seq: i64,
        next_hop: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT destination FROM deliveries
             WHERE report_seq = ? AND COALESCE(next_hop, destination) = ? ORDER BY destination",
        )
        .bind(seq)
        .bind(next_hop)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    pub async fn finish_delivery(
        &mut self,
        seq: i64,
        destination: &str,
        state: &str,
        receipt: &[u8],
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries SET state = ?, receipt = ?, reason = ?, delivered_at_ms = ?
             WHERE report_seq = ? AND destination = ?",
        )
        .bind(state)
        .bind(receipt)
        .bind(reason)
        .bind(now_ms)
        .bind(seq)
        .bind(destination)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Whether `destination` is one of the report's destinations.
    pub async fn is_destination(
        &mut self,
        seq: i64,
        destination: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE report_seq = ? AND destination = ?",
        )
        .bind(seq)
        .bind(destination)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(n > 0)
    }

    /// Queues `body` for `peer`; `returned` says what a status row's body
    /// is (see `store::OUTBOX_RETURNED`).
    #[allow(clippy::too_many_arguments)]
    pub async fn enqueue(
        &mut self,
        peer: &str,
        kind: &str,
        urgent: bool,
        report_seq: i64,
        body: &[u8],
        now_ms: i64,
        returned: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO outbox (peer, kind, urgent, report_seq, body, created_at_ms, returned)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(peer)
        .bind(kind)
        .bind(urgent)
        .bind(report_seq)
        .bind(body)
        .bind(now_ms)
        .bind(returned)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The outbox row still holding this report for `peer`, if not sent.
    pub async fn queued_report(
        &mut self,
        report_seq: i64,
        peer: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM outbox WHERE report_seq = ? AND peer = ? AND kind = 'report' LIMIT 1",
        )
        .bind(report_seq)
        .bind(peer)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// Every destination of a report: (destination, next hop, state).
    pub async fn delivery_routes(
        &mut self,
        report_seq: i64,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT destination, COALESCE(next_hop, destination), state FROM deliveries
             WHERE report_seq = ? ORDER BY destination",
        )
        .bind(report_seq)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    /// Records the origin's latest correction (and the category it sets).
    pub async fn set_correction(
        &mut self,
        seq: i64,
        category: &str,
        correction: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE reports SET category = ?, correction = ?, updated_at_ms = ? WHERE seq = ?",
        )
        .bind(category)
        .bind(correction)
        .bind(now_ms)
        .bind(seq)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// What identifies a case's content (see `case_keys`).
    pub async fn insert_case_keys(&mut self, seq: i64, keys: &[String]) -> Result<(), StoreError> {
        // One multi-row statement (each statement costs a thread hand-off).
        for chunk in keys.chunks(200) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO case_keys (key, report_seq) ",
            );
            q.push_values(chunk, |mut b, key| {
                b.push_bind(key).push_bind(seq);
            });
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// The oldest open case worked here with any of these keys.
    pub async fn open_case_with_keys(
        &mut self,
        keys: &[String],
    ) -> Result<Option<i64>, StoreError> {
        let mut best: Option<i64> = None;
        for key in keys {
            let seq: Option<i64> = sqlx::query_scalar(concat!(
                "SELECT r.seq FROM case_keys k JOIN reports r ON r.seq = k.report_seq
                 WHERE k.key = ? AND ",
                open_case!(),
                " ORDER BY r.seq LIMIT 1"
            ))
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await?;
            best = match (best, seq) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(best)
    }

    /// Every PDQ hash of an open case worked here: (hex, case seq).
    pub async fn open_pdq_keys(&mut self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT substr(k.key, 5), r.seq FROM case_keys k JOIN reports r ON r.seq = k.report_seq
             WHERE k.key LIKE 'pdq:%' AND ",
            open_case!(),
            " ORDER BY r.seq"
        ))
        .fetch_all(&mut *self.tx)
        .await?)
    }

    pub async fn set_joined(&mut self, seq: i64, case_seq: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE reports SET joined_to = ? WHERE seq = ?")
            .bind(case_seq)
            .bind(seq)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The reports that joined the case `seq`.
    pub async fn joined(&mut self, seq: i64) -> Result<Vec<ReportRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM reports WHERE joined_to = ? ORDER BY seq")
                .bind(seq)
                .fetch_all(&mut *self.tx)
                .await?,
        )
    }

    /// Removes a sent outbox row; false when it was already gone.
    pub async fn dequeue(&mut self, id: i64) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM outbox WHERE id = ?")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        let gone = res.rows_affected() == 1;
        if gone {
            self.dequeued.push(id);
        }
        Ok(gone)
    }

    /// Whether a history entry with this id is recorded for the report.
    pub async fn status_recorded(&mut self, seq: i64, update_id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM status_history WHERE report_seq = ? AND update_id = ?",
        )
        .bind(seq)
        .bind(update_id)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(n > 0)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_referral(
        &mut self,
        seq: i64,
        update_id: &str,
        agency: &str,
        reference: &str,
        referred_at_ms: i64,
        actor: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO referrals (report_seq, update_id, agency, reference, referred_at_ms, actor, recorded_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(seq)
        .bind(update_id)
        .bind(agency)
        .bind(reference)
        .bind(referred_at_ms)
        .bind(actor)
        .bind(now_ms)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Retention: removes a report's URLs, notes, hashes, hosting evidence,
    /// history reasons, operator names and submission keys, keeping a
    /// tombstone (ids, category, status, payload digest, receipts) that the
    /// audit log's entries still point at. False when it was already
    /// purged or something is still to be sent for it.
    pub async fn purge_report(&mut self, seq: i64, now_ms: i64) -> Result<bool, StoreError> {
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE report_seq = ?")
            .bind(seq)
            .fetch_one(&mut *self.tx)
            .await?;
        if pending > 0 {
            return Ok(false);
        }
        let res = sqlx::query(
            "UPDATE reports SET payload = x'', envelope = x'',
                route = CASE WHEN json_valid(route) THEN
                    json_object('kind', json_extract(route, '$.kind'),
                                'destinations', json(COALESCE(json_extract(route, '$.destinations'), '[]')),
                                'purged', json('true'))
                    ELSE '{\"purged\":true}' END,
                correction = NULL, purged_at_ms = ?
             WHERE seq = ? AND purged_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(seq)
        .execute(&mut *self.tx)
        .await?;
        if res.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE status_history SET reason = '', signed = NULL,
                actor = CASE WHEN actor LIKE 'node:%' THEN actor ELSE 'operator (purged)' END
             WHERE report_seq = ?",
        )
        .bind(seq)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query("UPDATE referrals SET actor = 'operator (purged)' WHERE report_seq = ?")
            .bind(seq)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query("DELETE FROM submissions WHERE report_seq = ?")
            .bind(seq)
            .execute(&mut *self.tx)
            .await?;
        // The content keys hold normalised URLs and media hashes.
        sqlx::query("DELETE FROM case_keys WHERE report_seq = ?")
            .bind(seq)
            .execute(&mut *self.tx)
            .await?;
        Ok(true)
    }

    /// Adds a status change; false when `update_id` is already recorded.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_status(
        &mut self,
        seq: i64,
        update_id: &str,
        status: &str,
        reason: &str,
        actor: &str,
        signer: Option<&str>,
        signed: Option<&[u8]>,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "INSERT INTO status_history (report_seq, update_id, status, reason, actor, signer, signed, at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (update_id) DO NOTHING",
        )
        .bind(seq)
        .bind(update_id)
        .bind(status)
        .bind(reason)
        .bind(actor)
        .bind(signer)
        .bind(signed)
        .bind(at_ms)
        .execute(&mut *self.tx)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Appends an audit entry, chained to the previous one. Runs inside the
    /// transaction of the change it records.
    pub async fn audit(&mut self, entry: &audit::Entry, now_ms: i64) -> Result<i64, StoreError> {
        self.audit_many(std::slice::from_ref(entry), now_ms).await
    }

    /// Number of entries in the audit log.
    pub async fn audit_size(&mut self) -> Result<u64, StoreError> {
        audit_size(&mut *self.tx).await
    }

    /// The leaf hashes of the first `size` entries, in order.
    pub async fn leaf_range(&mut self, after: u64, upto: u64) -> Result<Vec<Hash>, StoreError> {
        leaf_range(&mut *self.tx, after, upto).await
    }

    pub async fn latest_checkpoint(&mut self) -> Result<Option<CheckpointRow>, StoreError> {
        latest_checkpoint(&mut *self.tx).await
    }

    pub async fn insert_checkpoint(
        &mut self,
        size: u64,
        root: &Hash,
        note: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO checkpoints (size, root, note, created_at_ms) VALUES (?, ?, ?, ?)",
        )
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(root.as_slice())
        .bind(note)
        .bind(now_ms)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Stores a witness's cosignature; false when it was already stored.
    pub async fn insert_cosignature(
        &mut self,
        size: u64,
        witness: &str,
        line: &str,
        timestamp: u64,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "INSERT INTO cosignatures (size, witness, line, timestamp) VALUES (?, ?, ?, ?)
             ON CONFLICT (size, witness) DO NOTHING",
        )
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(witness)
        .bind(line)
        .bind(i64::try_from(timestamp).unwrap_or(i64::MAX))
        .execute(&mut *self.tx)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// As a witness: moves `log`'s witnessed checkpoint from `from` (None:
    /// never witnessed) to the new one, only if it is still `from`. The
    /// atomic check-and-store of tlog-witness: false when it changed meanwhile.
    pub async fn advance_witnessed(
        &mut self,
        log: &str,
        from: Option<(u64, &Hash)>,
        to: &WitnessedRow,
    ) -> Result<bool, StoreError> {
        let res = match from {
            None => {
                sqlx::query(
                    "INSERT INTO witnessed (log, size, root, note, cosignature, updated_at_ms)
                     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (log) DO NOTHING",
                )
                .bind(log)
                .bind(to.size)
                .bind(&to.root)
                .bind(&to.note)
                .bind(&to.cosignature)
                .bind(to.updated_at_ms)
                .execute(&mut *self.tx)
                .await?
            }
            Some((size, root)) => {
                sqlx::query(
                    "UPDATE witnessed SET size = ?, root = ?, note = ?, cosignature = ?, updated_at_ms = ?
                     WHERE log = ? AND size = ? AND root = ?",
                )
                .bind(to.size)
                .bind(&to.root)
                .bind(&to.note)
                .bind(&to.cosignature)
                .bind(to.updated_at_ms)
                .bind(log)
                .bind(i64::try_from(size).unwrap_or(i64::MAX))
                .bind(root.as_slice())
                .execute(&mut *self.tx)
                .await?
            }
        };
        Ok(res.rows_affected() == 1)
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
    crate::crypto::signing::write_private_file(out, b"").map_err(|source| StoreError::Create {
        path: out.display().to_string(),
        source,
    })?;
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
    let n = audit_size(&copy).await;
    copy.close().await;
    n
}
