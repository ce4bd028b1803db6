//! The PostgreSQL backend. A pool of writer connections for transactions
//! ([`Tx`]) and one of reader connections for queries; commits are durable
//! (`synchronous_commit = on`, whatever the server's default).
//!
//! One writer at a time: every write transaction first takes a
//! transaction-level advisory lock ([`WRITER_LOCK`]) and holds it until it
//! commits or rolls back. This keeps the guarantees the node was built on
//! with SQLite's single writer — above all one linear audit log, each entry
//! chained to the one committed before it, with no gaps — also when several
//! processes share the database. Statements that write many rows are single
//! multi-row statements (`UNNEST` of arrays, `= ANY($1)`), the fast shape on
//! this server.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::*;
use crate::audit;
use crate::audit::merkle::Hash;

/// The advisory lock every write transaction holds (`pg_advisory_xact_lock`):
/// "alertrly" in ASCII. Advisory locks are per database, so nodes sharing a
/// server but not a database do not wait for each other.
pub const WRITER_LOCK: i64 = 0x616c_6572_7472_6c79;

/// The `LISTEN`/`NOTIFY` channel on which a committed transaction that
/// queued outbox work says so, for the other replicas' workers: the
/// payload is `u PEER` (urgent lane) or `b PEER` (bulk lane).
pub const WORK_CHANNEL: &str = "alertrelay_outbox";

/// Connection options from a `postgres://` URL, with durable commits and
/// the application name set.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    let opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::Url(e.to_string()))?;
    Ok(opts
        .application_name("alertrelay")
        .options([("synchronous_commit", "on")]))
}

// Queries used both inside write transactions and on the read pool.

async fn latest_checkpoint<'e>(
    e: impl sqlx::PgExecutor<'e>,
) -> Result<Option<CheckpointRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT size, root, note, created_at_ms FROM checkpoints ORDER BY size DESC LIMIT 1",
    )
    .fetch_optional(e)
    .await?)
}

async fn audit_size<'e>(e: impl sqlx::PgExecutor<'e>) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_log")
        .fetch_one(e)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The leaf hashes of audit entries `after + 1 ..= upto`, in order.
async fn leaf_range<'e>(
    e: impl sqlx::PgExecutor<'e>,
    after: u64,
    upto: u64,
) -> Result<Vec<Hash>, StoreError> {
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT leaf_hash FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq",
    )
    .bind(i64::try_from(after).unwrap_or(i64::MAX))
    .bind(i64::try_from(upto).unwrap_or(i64::MAX))
    .fetch_all(e)
    .await?;
    Ok(rows.iter().map(|r| to_hash(r)).collect())
}

/// Binds `items` separated by commas (the inside of an `IN (…)` list).
fn push_list<T>(q: &mut sqlx::QueryBuilder<Postgres>, items: &[T])
where
    T: Copy + for<'t> sqlx::Encode<'t, Postgres> + sqlx::Type<Postgres>,
{
    let mut list = q.separated(", ");
    for item in items {
        list.push_bind(*item);
    }
}

#[derive(Clone)]
pub struct Store {
    writer: PgPool,
    reader: PgPool,
    /// For the work listener's own connection.
    options: std::sync::Arc<PgConnectOptions>,
    /// Bulk transactions queue here, one at a time (see
    /// `store::Store::begin_bulk`).
    bulk_gate: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Connects and migrates the database (`migrations/postgres`). The
    /// database must exist; the schema is created in it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = connect_options(url)?;
        let writer = PgPoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        // sqlx's migrator takes its own advisory lock: several processes
        // starting at once migrate once.
        sqlx::migrate!("migrations/postgres").run(&writer).await?;
        let reader = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        Ok(Store {
            writer,
            reader,
            options: std::sync::Arc::new(options),
            bulk_gate: Default::default(),
        })
    }

    /// A connection listening on [`WORK_CHANNEL`]: what other replicas
    /// queued, as (peer, urgent).
    pub async fn work_listener(&self) -> Result<WorkListener, StoreError> {
        // A connection of its own (a listener holds its connection), in a
        // pool of one that sqlx reconnects through after a loss.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with((*self.options).clone())
            .await?;
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
        listener.listen(WORK_CHANNEL).await?;
        Ok(WorkListener { listener })
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Starts a write transaction holding the writer lock.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITER_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(Tx {
            tx,
            _bulk: None,
            notify: Vec::new(),
        })
    }

    /// A write transaction for bulk work, behind this process's bulk gate.
    pub async fn begin_bulk(&self, ready: impl Future<Output = ()>) -> Result<Tx, StoreError> {
        let gate = self.bulk_gate.clone().lock_owned().await;
        ready.await;
        let mut tx = self.begin().await?;
        tx._bulk = Some(gate);
        Ok(tx)
    }

    /// A raw transaction holding the writer lock (for bulk copies).
    pub(crate) async fn begin_raw(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.begin().await?.tx)
    }

    /// The disk-full simulation is SQLite's (`max_page_count`).
    pub async fn danger_limit_database(&self) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(
            "limiting the database size is a SQLite test facility",
        ))
    }

    pub async fn danger_unlimit_database(&self) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(
            "limiting the database size is a SQLite test facility",
        ))
    }

    pub async fn report_by_seq(&self, seq: i64) -> Result<Option<ReportRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM reports WHERE seq = $1")
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
            "SELECT * FROM reports WHERE report_id = $1 AND ($2 IS NULL OR origin = $2) ORDER BY seq LIMIT 2",
        )
        .bind(report_id)
        .bind(origin)
        .fetch_all(&self.reader)
        .await?)
    }

    pub async fn list_reports(&self, f: &CaseFilter<'_>) -> Result<Vec<ReportRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM reports r
             WHERE ($1 IS NULL OR (CASE WHEN r.relay = 1 THEN 'relayed' ELSE r.direction END) = $1)
               AND ($2 IS NULL OR r.status = $2)
               AND ($3 IS NULL OR r.category = $3)
               AND ($4 IS NULL OR r.priority = $4)
               AND ($5 IS NULL OR r.created_at_ms >= $5)
               AND ($6 IS NULL OR r.origin = $6 OR r.received_from = $6
                    OR EXISTS (SELECT 1 FROM deliveries d WHERE d.report_seq = r.seq AND d.destination = $6))
             ORDER BY r.seq DESC LIMIT $7",
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
             WHERE d.report_seq = $1
             GROUP BY d.report_seq, d.destination ORDER BY d.destination",
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
             WHERE r.origin = $1 AND r.relay = 0 AND r.created_at_ms >= $2 ORDER BY r.seq",
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
                    NULL::BIGINT AS delivered_at_ms, NULL::BIGINT AS relayed_at_ms, NULL::TEXT AS next_hop
             FROM reports r
             WHERE r.direction IN ('incoming', 'local') AND r.relay = 0 AND r.joined_to IS NULL
               AND r.stored_at_ms >= $1 ORDER BY r.seq",
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
             FROM status_history WHERE report_seq >= $1
             GROUP BY report_seq, signer, status",
        )
        .bind(since_seq)
        .fetch_all(&self.reader)
        .await?)
    }

    /// The reports that joined the case `seq` (same content, other origins).
    pub async fn joined(&self, seq: i64) -> Result<Vec<ReportRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM reports WHERE joined_to = $1 ORDER BY seq")
                .bind(seq)
                .fetch_all(&self.reader)
                .await?,
        )
    }

    pub async fn history(&self, seq: i64) -> Result<Vec<HistoryRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT status, reason, actor, signer, at_ms FROM status_history WHERE report_seq = $1 ORDER BY id",
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
             WHERE peer = $1 AND kind = $2 ORDER BY urgent DESC, id LIMIT $3",
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
             WHERE peer = $1 AND kind = $2 AND urgent = $3 ORDER BY id LIMIT $4",
        )
        .bind(peer)
        .bind(kind)
        .bind(i64::from(urgent))
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }

    /// (seq, envelope) of these reports.
    pub async fn report_envelopes(&self, seqs: &[i64]) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Postgres>::new(
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
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE peer = $1 AND kind IN ('report', 'status') AND urgent = 1)",
        )
        .bind(peer)
        .fetch_one(&self.reader)
        .await?)
    }

    /// Records a failed attempt for these outbox rows.
    pub async fn outbox_failed(&self, ids: &[i64], error: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1 WHERE id = ANY($2)",
        )
        .bind(error)
        .bind(ids)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await
    }

    /// Claims up to `limit` rows of one lane of `peer` whose claim is
    /// absent or lapsed, for `holder` until `now_ms + lease_ms`, in order.
    /// `FOR UPDATE SKIP LOCKED`: concurrent claimers (other replicas) skip
    /// each other's rows instead of waiting, and never get the same row.
    /// Not under [`WRITER_LOCK`]: claims do not queue behind commits.
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
        let mut rows: Vec<OutboxRow> = sqlx::query_as(
            "WITH c AS (SELECT id, claimed_by AS prev FROM outbox
                        WHERE peer = $3 AND kind = $4 AND urgent = $5
                          AND (lease_until_ms IS NULL OR lease_until_ms <= $6)
                        ORDER BY id LIMIT $7
                        FOR UPDATE SKIP LOCKED)
             UPDATE outbox o SET claimed_by = $1, lease_until_ms = $2
             FROM c WHERE o.id = c.id
             RETURNING o.id, o.peer, o.kind, o.urgent, o.report_seq, o.body, o.attempts,
                       o.returned, c.prev AS taken_from",
        )
        .bind(holder)
        .bind(now_ms.saturating_add(lease_ms))
        .bind(peer)
        .bind(kind)
        .bind(i64::from(urgent))
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.writer)
        .await?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Moves the lease of `holder`'s claims on these rows to `until_ms`;
    /// returns how many it still holds.
    pub async fn extend_claims(
        &self,
        ids: &[i64],
        holder: &str,
        until_ms: i64,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE outbox SET lease_until_ms = $1 WHERE id = ANY($2) AND claimed_by = $3",
        )
        .bind(until_ms)
        .bind(ids)
        .bind(holder)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    /// Gives up `holder`'s claims on these rows; with `error`, records a
    /// failed attempt for each row too. Not under [`WRITER_LOCK`].
    pub async fn release_claims(
        &self,
        ids: &[i64],
        holder: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET
                attempts = attempts + CASE WHEN $1::TEXT IS NULL THEN 0 ELSE 1 END,
                last_error = COALESCE($1, last_error),
                claimed_by = CASE WHEN claimed_by = $3 THEN NULL ELSE claimed_by END,
                lease_until_ms = CASE WHEN claimed_by = $3 THEN NULL ELSE lease_until_ms END
             WHERE id = ANY($2)",
        )
        .bind(error)
        .bind(ids)
        .bind(holder)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Gives up every claim of `holder`, or every claim at all (`None`).
    /// Returns how many were released.
    pub async fn release_claims_of(&self, holder: Option<&str>) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE outbox SET claimed_by = NULL, lease_until_ms = NULL
             WHERE claimed_by IS NOT NULL AND ($1::TEXT IS NULL OR claimed_by = $1)",
        )
        .bind(holder)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    pub async fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError> {
        latest_checkpoint(&self.reader).await
    }

    pub async fn checkpoint(&self, size: u64) -> Result<Option<CheckpointRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT size, root, note, created_at_ms FROM checkpoints WHERE size = $1",
        )
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .fetch_optional(&self.reader)
        .await?)
    }

    pub async fn cosignatures(&self, size: u64) -> Result<Vec<CosignatureRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT size, witness, line, timestamp FROM cosignatures WHERE size = $1 ORDER BY witness",
        )
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?)
    }

    pub async fn witnessed(&self, log: &str) -> Result<Option<WitnessedRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT log, size, root, note, cosignature, updated_at_ms FROM witnessed WHERE log = $1",
        )
        .bind(log)
        .fetch_optional(&self.reader)
        .await?)
    }

    /// The leaf hashes of the first `size` entries, in order.
    pub async fn leaf_range(&self, after: u64, upto: u64) -> Result<Vec<Hash>, StoreError> {
        leaf_range(&self.reader, after, upto).await
    }

    /// Whether the database answers a read (for health).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query_scalar::<_, i32>("SELECT 1")
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
            "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log WHERE kind = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(kind)
        .fetch_optional(&self.reader)
        .await?)
    }

    pub async fn referrals(&self, seq: i64) -> Result<Vec<ReferralRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT agency, reference, referred_at_ms, actor FROM referrals WHERE report_seq = $1 ORDER BY id",
        )
        .bind(seq)
        .fetch_all(&self.reader)
        .await?)
    }

    /// The signed status updates (protobuf `Signed`) of a case, in order.
    pub async fn signed_status_updates(&self, seq: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT signed FROM status_history WHERE report_seq = $1 AND signed IS NOT NULL ORDER BY id",
        )
        .bind(seq)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Every audit entry about `subject` (e.g. `ORIGIN/REPORT-ID`), in order.
    pub async fn audit_entries_about(&self, subject: &str) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log WHERE subject = $1 ORDER BY seq",
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
                 WHERE r.purged_at_ms IS NULL AND r.updated_at_ms <= $1
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.report_seq = r.seq)
                   AND r.status IN ('not-illegal', 'removed', 'moved', 'retracted')
                 ORDER BY r.seq LIMIT $2"
            }
            "refused" => {
                "SELECT r.seq, r.origin, r.report_id, r.direction, r.status FROM reports r
                 WHERE r.purged_at_ms IS NULL AND r.updated_at_ms <= $1
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.report_seq = r.seq)
                   AND r.direction = 'outgoing' AND r.status = 'refused'
                 ORDER BY r.seq LIMIT $2"
            }
            "delivered" => {
                "SELECT r.seq, r.origin, r.report_id, r.direction, r.status FROM reports r
                 WHERE r.purged_at_ms IS NULL AND r.updated_at_ms <= $1
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
                 ORDER BY r.seq LIMIT $2"
            }
            _ => return Ok(Vec::new()),
        };
        Ok(sqlx::query_as(sql)
            .bind(cutoff_ms)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?)
    }

    /// After a purge: vacuums the tables retention rewrites, so the space
    /// of the purged row versions is reclaimed (PostgreSQL does not zero
    /// it; see README, "Running on PostgreSQL").
    pub async fn checkpoint_wal(&self) -> Result<(), StoreError> {
        sqlx::query("VACUUM reports, status_history, referrals, submissions, case_keys")
            .execute(&self.reader)
            .await?;
        Ok(())
    }

    pub async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }
}

/// Notifications of outbox work committed by any process on the database.
pub struct WorkListener {
    listener: sqlx::postgres::PgListener,
}

impl WorkListener {
    /// The next lane with new work: (peer, urgent). After a lost
    /// connection sqlx reconnects; what was said meanwhile is lost (the
    /// workers' idle poll finds it).
    pub async fn next(&mut self) -> Result<(String, bool), StoreError> {
        loop {
            let n = self.listener.recv().await?;
            if let Some((lane, peer)) = n.payload().split_once(' ') {
                return Ok((peer.to_owned(), lane == "u"));
            }
        }
    }
}

/// One write transaction. Dropping it without `commit` rolls back.
pub struct Tx {
    tx: Transaction<'static, Postgres>,
    /// Held by a bulk transaction until it ends.
    _bulk: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// The lanes this transaction queued work for (`WORK_CHANNEL`
    /// payloads), announced when it commits.
    notify: Vec<String>,
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
        if !self.notify.is_empty() {
            // Delivered to the listeners only if and when this commits.
            sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::TEXT[]) AS p")
                .bind(WORK_CHANNEL)
                .bind(&self.notify)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }

    /// Undoes the transaction (its notifications are never sent).
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
            sqlx::query_as("SELECT * FROM reports WHERE origin = $1 AND report_id = $2")
                .bind(origin)
                .bind(report_id)
                .fetch_optional(&mut *self.tx)
                .await?,
        )
    }

    pub async fn report_by_seq(&mut self, seq: i64) -> Result<Option<ReportRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM reports WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&mut *self.tx)
            .await?)
    }

    pub async fn insert_report(&mut self, r: &NewReport<'_>) -> Result<i64, StoreError> {
        let res: i64 = sqlx::query_scalar(
            "INSERT INTO reports (report_id, origin, direction, category, priority, status,
                hosting_country, route, payload, payload_digest, envelope, received_from,
                created_at_ms, stored_at_ms, updated_at_ms, relay, receipt, joined_to)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
             RETURNING seq",
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
        .bind(i64::from(r.relay))
        .bind(r.receipt)
        .bind(r.joined_to)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(res)
    }

    pub async fn insert_reports(&mut self, rs: &[NewReport<'_>]) -> Result<Vec<i64>, StoreError> {
        let mut by_key = std::collections::HashMap::with_capacity(rs.len());
        for chunk in rs.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Postgres>::new(
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
                    .push_bind(i64::from(r.relay))
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
            let mut q = sqlx::QueryBuilder::<Postgres>::new("SELECT r.* FROM reports r JOIN (");
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
            let mut q = sqlx::QueryBuilder::<Postgres>::new("SELECT * FROM reports WHERE seq IN (");
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
            let mut q = sqlx::QueryBuilder::<Postgres>::new(
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
            let mut q =
                sqlx::QueryBuilder::<Postgres>::new("INSERT INTO case_keys (key, report_seq) ");
            q.push_values(chunk, |mut b, (seq, key)| {
                b.push_bind(*key).push_bind(*seq);
            });
            q.push(" ON CONFLICT DO NOTHING");
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub async fn insert_deliveries(&mut self, ds: &[NewDelivery<'_>]) -> Result<(), StoreError> {
        for chunk in ds.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Postgres>::new(
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
            let mut q = sqlx::QueryBuilder::<Postgres>::new(
                "INSERT INTO outbox (peer, kind, urgent, report_seq, body, created_at_ms, returned) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.peer)
                    .push_bind(r.kind)
                    .push_bind(i64::from(r.urgent))
                    .push_bind(r.report_seq)
                    .push_bind(r.body)
                    .push_bind(now_ms)
                    .push_bind(r.returned);
            });
            q.build().execute(&mut *self.tx).await?;
        }
        for r in rows {
            let lane = format!("{} {}", if r.urgent { 'u' } else { 'b' }, r.peer);
            if !self.notify.contains(&lane) {
                self.notify.push(lane);
            }
        }
        Ok(())
    }

    pub async fn insert_statuses(
        &mut self,
        rows: &[NewStatus<'_>],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Postgres>::new(
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
        // The writer lock taken in `begin` is held until this transaction
        // ends: the tail read here is still the tail at commit.
        let last: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *self.tx)
                .await?;
        let (prev_seq, prev_hash) = last.unwrap_or((0, audit::GENESIS.to_vec()));
        let rows = audit::chain(entries, prev_seq, &prev_hash, now_ms);
        crate::faults::crash_point("audit-append");
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Postgres>::new(
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
        Ok(rows.last().map_or(prev_seq, |r| r.seq))
    }

    pub async fn dequeue_many(&mut self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Postgres>::new("DELETE FROM outbox WHERE id IN (");
            push_list(&mut q, chunk);
            q.push(") RETURNING id");
            out.extend(
                q.build_query_scalar::<i64>()
                    .fetch_all(&mut *self.tx)
                    .await?,
            );
        }
        Ok(out)
    }

    pub async fn destinations_via_many(
        &mut self,
        seqs: &[i64],
        next_hop: &str,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let mut out = Vec::new();
        for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Postgres>::new(
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
            let mut q = sqlx::QueryBuilder::<Postgres>::new(
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
            let mut q = sqlx::QueryBuilder::<Postgres>::new("UPDATE reports SET status = ");
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
            let mut q = sqlx::QueryBuilder::<Postgres>::new(
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
            let mut q = sqlx::QueryBuilder::<Postgres>::new(
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
            "SELECT report_seq FROM submissions WHERE operator = $1 AND submission_id = $2",
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
            "INSERT INTO submissions (operator, submission_id, report_seq) VALUES ($1, $2, $3)",
        )
        .bind(operator)
        .bind(submission_id)
        .bind(report_seq)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn set_receipt(&mut self, seq: i64, receipt: &[u8]) -> Result<(), StoreError> {
        sqlx::query("UPDATE reports SET receipt = $1 WHERE seq = $2")
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
        sqlx::query("UPDATE reports SET status = $1, updated_at_ms = $2 WHERE seq = $3")
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
             VALUES ($1, $2, 'queued', $3, $4) ON CONFLICT (report_seq, destination) DO NOTHING",
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
            "SELECT state FROM deliveries WHERE report_seq = $1 AND destination = $2",
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
            "UPDATE deliveries SET relay_receipt = $1, relayed_at_ms = $2
             WHERE report_seq = $3 AND destination = $4 AND state = 'queued' AND relayed_at_ms IS NULL",
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
        sqlx::query("UPDATE deliveries SET via = $1 WHERE report_seq = $2 AND destination = $3")
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
             WHERE report_seq = $1 AND COALESCE(next_hop, destination) = $2 ORDER BY destination",
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
            "UPDATE deliveries SET state = $1, receipt = $2, reason = $3, delivered_at_ms = $4
             WHERE report_seq = $5 AND destination = $6",
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
            "SELECT COUNT(*) FROM deliveries WHERE report_seq = $1 AND destination = $2",
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(peer)
        .bind(kind)
        .bind(i64::from(urgent))
        .bind(report_seq)
        .bind(body)
        .bind(now_ms)
        .bind(returned)
        .execute(&mut *self.tx)
        .await?;
        let lane = format!("{} {peer}", if urgent { 'u' } else { 'b' });
        if !self.notify.contains(&lane) {
            self.notify.push(lane);
        }
        Ok(())
    }

    /// The outbox row still holding this report for `peer`, if not sent.
    pub async fn queued_report(
        &mut self,
        report_seq: i64,
        peer: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM outbox WHERE report_seq = $1 AND peer = $2 AND kind = 'report' LIMIT 1",
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
             WHERE report_seq = $1 ORDER BY destination",
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
            "UPDATE reports SET category = $1, correction = $2, updated_at_ms = $3 WHERE seq = $4",
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
        if keys.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO case_keys (key, report_seq) SELECT k, $2 FROM UNNEST($1::text[]) AS t(k)
             ON CONFLICT DO NOTHING",
        )
        .bind(keys)
        .bind(seq)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The oldest open case worked here with any of these keys.
    pub async fn open_case_with_keys(
        &mut self,
        keys: &[String],
    ) -> Result<Option<i64>, StoreError> {
        if keys.is_empty() {
            return Ok(None);
        }
        Ok(sqlx::query_scalar(concat!(
            "SELECT MIN(r.seq) FROM case_keys k JOIN reports r ON r.seq = k.report_seq
             WHERE k.key = ANY($1) AND ",
            open_case!()
        ))
        .bind(keys)
        .fetch_one(&mut *self.tx)
        .await?)
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
        sqlx::query("UPDATE reports SET joined_to = $1 WHERE seq = $2")
            .bind(case_seq)
            .bind(seq)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The reports that joined the case `seq`.
    pub async fn joined(&mut self, seq: i64) -> Result<Vec<ReportRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM reports WHERE joined_to = $1 ORDER BY seq")
                .bind(seq)
                .fetch_all(&mut *self.tx)
                .await?,
        )
    }

    /// Removes a sent outbox row; false when it was already gone.
    pub async fn dequeue(&mut self, id: i64) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM outbox WHERE id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Whether a history entry with this id is recorded for the report.
    pub async fn status_recorded(&mut self, seq: i64, update_id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM status_history WHERE report_seq = $1 AND update_id = $2",
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE report_seq = $1")
            .bind(seq)
            .fetch_one(&mut *self.tx)
            .await?;
        if pending > 0 {
            return Ok(false);
        }
        let route: Option<String> =
            sqlx::query_scalar("SELECT route FROM reports WHERE seq = $1 AND purged_at_ms IS NULL")
                .bind(seq)
                .fetch_optional(&mut *self.tx)
                .await?;
        let Some(route) = route else {
            return Ok(false);
        };
        let res = sqlx::query(
            "UPDATE reports SET payload = ''::bytea, envelope = ''::bytea, route = $1,
                correction = NULL, purged_at_ms = $2
             WHERE seq = $3 AND purged_at_ms IS NULL",
        )
        .bind(super::purged_route(&route))
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
             WHERE report_seq = $1",
        )
        .bind(seq)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query("UPDATE referrals SET actor = 'operator (purged)' WHERE report_seq = $1")
            .bind(seq)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query("DELETE FROM submissions WHERE report_seq = $1")
            .bind(seq)
            .execute(&mut *self.tx)
            .await?;
        // The content keys hold normalised URLs and media hashes.
        sqlx::query("DELETE FROM case_keys WHERE report_seq = $1")
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (update_id) DO NOTHING",
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
            "INSERT INTO checkpoints (size, root, note, created_at_ms) VALUES ($1, $2, $3, $4)",
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
            "INSERT INTO cosignatures (size, witness, line, timestamp) VALUES ($1, $2, $3, $4)
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
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (log) DO NOTHING",
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
                    "UPDATE witnessed SET size = $1, root = $2, note = $3, cosignature = $4, updated_at_ms = $5
                     WHERE log = $6 AND size = $7 AND root = $8",
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
