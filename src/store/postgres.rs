//! The PostgreSQL backend, what differs from SQLite: pools of writer and
//! reader connections, commits made durable (`synchronous_commit = on`,
//! whatever the server's default), one writer at a time, outbox claims with
//! `FOR UPDATE SKIP LOCKED` and leases, and `LISTEN`/`NOTIFY` of queued work
//! between replicas. The SQL both backends share is in `read.rs`,
//! `write.rs` and `batch.rs`.
//!
//! One writer at a time: every write transaction first takes a
//! transaction-level advisory lock ([`WRITER_LOCK`]) and holds it until it
//! commits or rolls back. This keeps the guarantees the node was built on
//! with SQLite's single writer — above all one linear audit log, each entry
//! chained to the one committed before it, with no gaps — also when several
//! processes share the database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::{ClaimRequest, OutboxRow, StoreError};

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

#[derive(Clone)]
pub struct Store {
    writer: PgPool,
    pub(super) reader: PgPool,
    /// For the work listener's own connection.
    options: std::sync::Arc<PgConnectOptions>,
    /// Bulk transactions queue here, one at a time (see
    /// `store::Store::begin_bulk`).
    pub(super) bulk_gate: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// How long one connection attempt may take before the node says the
/// database cannot be reached (and why).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection, made at once: an unreachable server, a refused login or
/// a missing database is reported within `CONNECT_TIMEOUT` with its cause
/// (a pool would retry until its own timeout and report only that).
async fn first_connection(
    url: &str,
    options: &PgConnectOptions,
) -> Result<sqlx::PgConnection, StoreError> {
    use sqlx::Connection;
    let shown = super::database::redact(url);
    match tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(source)) => Err(StoreError::Unreachable { url: shown, source }),
        Err(_) => Err(StoreError::ConnectTimedOut {
            url: shown,
            secs: CONNECT_TIMEOUT.as_secs(),
        }),
    }
}

/// What a PostgreSQL database holds of this node's schema, read without
/// writing anything (`doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaState {
    /// Migrations applied, and how many this version has.
    pub applied: usize,
    pub known: usize,
    /// Audit entries, when the schema exists.
    pub audit_entries: Option<i64>,
}

/// Reads the schema state of the database `url` names: connects (with the
/// cause when it cannot), and only reads.
pub async fn schema_state(url: &str) -> Result<SchemaState, StoreError> {
    use sqlx::Connection;
    let options = connect_options(url)?;
    let mut conn = first_connection(url, &options).await?;
    let known = sqlx::migrate!("migrations/postgres").iter().count();
    let exists: Option<String> =
        sqlx::query_scalar("SELECT CAST(to_regclass('_sqlx_migrations') AS TEXT)")
            .fetch_one(&mut conn)
            .await?;
    let applied = match exists {
        Some(_) => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut conn)
                .await?
        }
        None => 0,
    };
    let audit_entries = if applied > 0 {
        Some(
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_log")
                .fetch_one(&mut conn)
                .await?,
        )
    } else {
        None
    };
    let _ = conn.close().await;
    Ok(SchemaState {
        applied: usize::try_from(applied).unwrap_or(0),
        known,
        audit_entries,
    })
}

/// Says so (a warning at start) when the server runs without autovacuum:
/// the node's tables are then neither vacuumed nor analysed unless the
/// operator does it, and queries planned without statistics slow down.
async fn warn_without_autovacuum(pool: &PgPool) -> Result<(), StoreError> {
    let on: String = sqlx::query_scalar("SELECT current_setting('autovacuum')")
        .fetch_one(pool)
        .await?;
    if on != "on" {
        tracing::warn!(
            "the PostgreSQL server runs with autovacuum off: run VACUUM ANALYZE on the node's database regularly (docs/postgresql.md)"
        );
    }
    Ok(())
}

impl Store {
    /// Connects and migrates the database (`migrations/postgres`). The
    /// database must exist; the schema is created in it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = connect_options(url)?;
        // Fails fast, with the cause, when the server cannot be used.
        drop(first_connection(url, &options).await?);
        let writer = PgPoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        // sqlx's migrator takes its own advisory lock: several processes
        // starting at once migrate once.
        sqlx::migrate!("migrations/postgres").run(&writer).await?;
        warn_without_autovacuum(&writer).await?;
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

    /// Whether row `id` is claimed and its lease has not lapsed.
    pub(super) async fn is_claimed(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox
             WHERE id = $1 AND claimed_by IS NOT NULL AND lease_until_ms > $2",
        )
        .bind(id)
        .bind(now_ms)
        .fetch_one(&self.reader)
        .await?;
        Ok(n != 0)
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Starts a write transaction holding the writer lock.
    pub(super) async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx {
            tx: self.begin_raw().await?,
            notify: Vec::new(),
        })
    }

    /// A raw transaction holding the writer lock (for bulk copies).
    pub(crate) async fn begin_raw(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        super::counted();
        let mut tx = self.writer.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITER_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// After a purge: vacuums the tables retention rewrites, so the space
    /// of the purged row versions is reclaimed (PostgreSQL does not zero
    /// it; see README, "Running on PostgreSQL").
    pub(super) async fn vacuum_purged(&self) -> Result<(), StoreError> {
        sqlx::query("VACUUM reports, status_history, referrals, submissions, case_keys")
            .execute(&self.reader)
            .await?;
        Ok(())
    }

    /// Claims rows as `ask` says, in order. `FOR UPDATE SKIP LOCKED`:
    /// concurrent claimers (other replicas) skip each other's rows instead
    /// of waiting, and never get the same row. Not under [`WRITER_LOCK`]:
    /// claims do not queue behind commits.
    pub(super) async fn claim_outbox(
        &self,
        ask: &ClaimRequest<'_>,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        super::counted();
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
        .bind(ask.holder)
        .bind(ask.until_ms)
        .bind(ask.peer)
        .bind(ask.kind)
        .bind(i64::from(ask.urgent))
        .bind(ask.now_ms)
        .bind(ask.limit)
        .fetch_all(&self.writer)
        .await?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Moves the lease of `holder`'s claims on these rows to `until_ms`;
    /// returns how many it still holds.
    pub(super) async fn extend_claims(
        &self,
        ids: &[i64],
        holder: &str,
        until_ms: i64,
    ) -> Result<u64, StoreError> {
        super::counted();
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
    /// failed attempt for each row too, in the same statement. Not under
    /// [`WRITER_LOCK`].
    pub(super) async fn release_claims(
        &self,
        ids: &[i64],
        holder: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        super::counted();
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
    pub(super) async fn release_claims_of(&self, holder: Option<&str>) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE outbox SET claimed_by = NULL, lease_until_ms = NULL
             WHERE claimed_by IS NOT NULL AND ($1::TEXT IS NULL OR claimed_by = $1)",
        )
        .bind(holder)
        .execute(&self.writer)
        .await?
        .rows_affected())
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

/// PostgreSQL's half of a write transaction.
pub struct Tx {
    pub(super) tx: Transaction<'static, Postgres>,
    /// The lanes this transaction queued work for (`WORK_CHANNEL`
    /// payloads), announced when it commits.
    notify: Vec<String>,
}

impl Tx {
    /// Queued work for `peer`'s lane, to announce on commit.
    pub(super) fn announce(&mut self, peer: &str, urgent: bool) {
        let lane = format!("{} {peer}", if urgent { 'u' } else { 'b' });
        if !self.notify.contains(&lane) {
            self.notify.push(lane);
        }
    }

    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        if !self.notify.is_empty() {
            super::counted();
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
}
