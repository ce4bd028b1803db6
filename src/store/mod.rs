//! Durable storage: reports, deliveries, the outbox, case history and the
//! audit chain, on one of two backends chosen by `database` in node.toml:
//! SQLite (`sqlite.rs`: a file, WAL, `synchronous=FULL`, one writer
//! connection) or PostgreSQL (`postgres.rs`: a `postgres://` URL, durable
//! commits, one writer at a time through an advisory lock).
//!
//! [`Store`] and [`Tx`] are what the node uses, and each of their methods
//! is written once: the SQL both backends share is in `read.rs` (queries
//! on the read pool), `write.rs` (one-row statements in a transaction) and
//! `batch.rs` (the hot paths' multi-row statements), run on either backend
//! by the `on!`/`sql!`/`built!` macros below. Fixed statements use `$N`
//! placeholders, which both backends take; statements built at run time
//! get each backend's own placeholders from sqlx's `QueryBuilder`. The
//! backend files hold only what differs: connections, the writer lock,
//! outbox claims, notifications, WAL and backups. Both backends pass the
//! same conformance suite (`tests/store_conformance.rs`).
//!
//! Every write transaction that changes state also appends its audit entry
//! (`log.rs`) before it commits. This module holds SQL only and names no
//! other room of the crate (only `faults`' crash point, a leaf); the
//! decisions are in `node/`.

use std::path::Path;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres, Sqlite, SqliteConnection};

/// Runs `$body` on whichever backend `$conn` (a `Conn`) is: `$c` is the
/// connection (`&mut SqliteConnection` or `&mut PgConnection`) and `$db`
/// names its sqlx database type. The body is written once and compiled
/// once per backend.
macro_rules! on {
    ($conn:expr, |$c:ident, $db:ident| $body:expr) => {
        match $conn {
            $crate::store::Conn::Sqlite($c) => {
                #[allow(dead_code)]
                type $db = sqlx::Sqlite;
                $body
            }
            $crate::store::Conn::Postgres($c) => {
                #[allow(dead_code)]
                type $db = sqlx::Postgres;
                $body
            }
        }
    };
}

/// One fixed statement (`$N` placeholders), its arguments bound in order:
/// `sql!(conn, fetch_all(SQL, a, b))` reads rows (`query_as`),
/// `sql!(conn, scalar.fetch_one(SQL, a))` one column (`query_scalar`),
/// `sql!(conn, execute(SQL, a))` the number of rows changed.
macro_rules! sql {
    ($conn:expr, execute($sql:expr $(, $arg:expr)* $(,)?)) => {{
        $crate::store::counted();
        on!($conn, |c, _Db| sqlx::query($sql)$(.bind($arg))*.execute(&mut *c).await?.rows_affected())
    }};
    ($conn:expr, scalar.$verb:ident($sql:expr $(, $arg:expr)* $(,)?)) => {{
        $crate::store::counted();
        on!($conn, |c, _Db| sqlx::query_scalar($sql)$(.bind($arg))*.$verb(&mut *c).await?)
    }};
    ($conn:expr, $verb:ident($sql:expr $(, $arg:expr)* $(,)?)) => {{
        $crate::store::counted();
        on!($conn, |c, _Db| sqlx::query_as($sql)$(.bind($arg))*.$verb(&mut *c).await?)
    }};
}

/// One statement built at run time (a multi-row `VALUES` list, an `IN`
/// list): `$build` pushes its text and arguments onto `$q`, a
/// `QueryBuilder` of the backend's type, which writes that backend's
/// placeholders. `=> execute`, `=> scalar.fetch_all` or `=> fetch_all` as
/// in `sql!`.
macro_rules! built {
    ($conn:expr, |$q:ident| $build:expr => execute) => {
        on!($conn, |c, Db| {
            $crate::store::counted();
            let mut $q = sqlx::QueryBuilder::<Db>::new("");
            $build;
            $q.build().execute(&mut *c).await?.rows_affected()
        })
    };
    ($conn:expr, |$q:ident| $build:expr => scalar.$verb:ident) => {
        on!($conn, |c, Db| {
            $crate::store::counted();
            let mut $q = sqlx::QueryBuilder::<Db>::new("");
            $build;
            $q.build_query_scalar().$verb(&mut *c).await?
        })
    };
    ($conn:expr, |$q:ident| $build:expr => $verb:ident) => {
        on!($conn, |c, Db| {
            $crate::store::counted();
            let mut $q = sqlx::QueryBuilder::<Db>::new("");
            $build;
            $q.build_query_as().$verb(&mut *c).await?
        })
    };
}

/// A case worked here that new reports of the same content may join.
macro_rules! open_case {
    () => {
        "r.relay = 0 AND r.joined_to IS NULL AND r.direction IN ('incoming', 'local')
         AND r.status NOT IN ('removed', 'moved', 'retracted')"
    };
}

mod alerts;
mod batch;
pub mod copy;
mod database;
pub mod log;
pub mod postgres;
mod proposals;
mod read;
mod rows;
pub mod sqlite;
mod users;
mod write;

pub use alerts::{
    AlertDeliveryRow, AlertRow, CaseAge, ExpiredAlerts, NewAlert, WaitingNotifications,
};
pub use database::{Database, redact};
pub use rows::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create database file {path}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the database file is damaged: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("invalid database setting: {0}")]
    Url(String),
    #[error("store invariant broken: {0}")]
    Invariant(String),
    /// The database server could not be reached or refused the
    /// connection: the cause (refused, timed out, authentication, no such
    /// database) is in the source.
    #[error("cannot connect to {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot connect to {url}: no answer within {secs} s")]
    ConnectTimedOut { url: String, secs: u64 },
}

/// SQL statements this process's stores have run: each statement of the
/// shared SQL (`sql!`, `built!`), each BEGIN, COMMIT and ROLLBACK, and
/// the backends' own statements on the hot paths (PostgreSQL's writer
/// lock, claims and notifications). For the bench's per-report
/// breakdown; one relaxed add per statement.
static STATEMENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts one statement run (see [`STATEMENTS`]).
pub(crate) fn counted() {
    STATEMENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// How many SQL statements this process's stores have run so far (see
/// [`STATEMENTS`]).
pub fn statements_run() -> u64 {
    STATEMENTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The node's store: one backend behind one interface.
#[derive(Clone)]
pub enum Store {
    Sqlite(sqlite::Store),
    Postgres(postgres::Store),
}

/// One write transaction. Dropping it without `commit` rolls back.
pub struct Tx {
    backend: TxOn,
    /// The audit log's head as this transaction left it: later entries in
    /// the same transaction chain to it without reading it back (no other
    /// writer can append meanwhile, on either backend).
    audit_head: Option<(i64, Vec<u8>)>,
    /// Held by a bulk transaction until it ends.
    _bulk: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// The backend's half of a transaction: its connection and what it does
/// when it commits.
enum TxOn {
    Sqlite(sqlite::Tx),
    Postgres(postgres::Tx),
}

/// A connection shared SQL runs on (see `on!`): a write transaction's,
/// or one from the read pool.
pub(crate) enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl Conn<'_> {
    /// The same connection, borrowed again (for one statement of many).
    fn re(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }
}

/// Binds `items` separated by commas: the inside of an `IN (…)` list, in
/// a statement built at run time (`built!`).
trait PushList<DB: sqlx::Database> {
    fn push_list<T>(&mut self, items: &[T]) -> &mut Self
    where
        T: Copy + for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>;
}

impl<DB: sqlx::Database> PushList<DB> for sqlx::QueryBuilder<DB> {
    fn push_list<T>(&mut self, items: &[T]) -> &mut Self
    where
        T: Copy + for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        let mut list = self.separated(", ");
        for item in items {
            list.push_bind(*item);
        }
        self
    }
}

/// What `Store::claim_outbox` asks of the backend that keeps the claims:
/// up to `limit` rows of one lane of `peer` whose claim is absent or lapsed
/// at `now_ms`, for `holder` until `until_ms`.
#[derive(Clone, Copy)]
struct ClaimRequest<'a> {
    peer: &'a str,
    kind: &'a str,
    urgent: bool,
    limit: i64,
    holder: &'a str,
    now_ms: i64,
    until_ms: i64,
}

/// A connection taken from the read pool for one query, back in the pool
/// when dropped.
enum Reader {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl Reader {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Reader::Sqlite(c) => Conn::Sqlite(c),
            Reader::Postgres(c) => Conn::Postgres(c),
        }
    }
}

impl Store {
    /// Opens (creating if needed, mode 0600) and migrates a SQLite file.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Store::Sqlite(sqlite::Store::open(path).await?))
    }

    /// Opens and migrates the configured database, SQLite or PostgreSQL.
    pub async fn connect(db: &Database) -> Result<Self, StoreError> {
        match db {
            Database::Sqlite(p) => Self::open(p).await,
            Database::Postgres(url) => Ok(Store::Postgres(postgres::Store::open(url).await?)),
        }
    }

    /// Which backend this is: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// On PostgreSQL, a listener for the outbox work other processes on
    /// the same database (replicas) commit; None on SQLite (one process).
    pub async fn work_listener(&self) -> Result<Option<postgres::WorkListener>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(s) => Ok(Some(s.work_listener().await?)),
        }
    }

    /// Closes the database (SQLite: folds the WAL back into the file).
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }

    /// Starts a write transaction (one writer at a time, on both backends).
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        counted();
        let backend = match self {
            Store::Sqlite(s) => TxOn::Sqlite(s.begin().await?),
            Store::Postgres(s) => TxOn::Postgres(s.begin().await?),
        };
        Ok(Tx {
            backend,
            audit_head: None,
            _bulk: None,
        })
    }

    /// Starts a write transaction for bulk work: bulk transactions queue
    /// behind a gate, one at a time, so an urgent transaction waits at most
    /// for the bulk one holding the writer. Keep bulk transactions short.
    /// `ready` is awaited once this transaction is first in the queue and
    /// before it takes the writer (the node waits there for urgent work in
    /// progress: see `Core::begin_bulk`).
    pub async fn begin_bulk(&self, ready: impl Future<Output = ()>) -> Result<Tx, StoreError> {
        let gate = match self {
            Store::Sqlite(s) => &s.bulk_gate,
            Store::Postgres(s) => &s.bulk_gate,
        };
        let gate = gate.clone().lock_owned().await;
        ready.await;
        let mut tx = self.begin().await?;
        tx._bulk = Some(gate);
        Ok(tx)
    }

    /// Caps the database at its current size, as a full disk would: every
    /// write that needs a new page then fails. For tests of disk-full
    /// behaviour (SQLite only); `danger_unlimit_database` lifts it.
    pub async fn danger_limit_database(&self) -> Result<(), StoreError> {
        self.danger_max_pages("PRAGMA max_page_count = 1").await
    }

    pub async fn danger_unlimit_database(&self) -> Result<(), StoreError> {
        self.danger_max_pages("PRAGMA max_page_count = 4294967294")
            .await
    }

    async fn danger_max_pages(&self, pragma: &'static str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.danger_max_pages(pragma).await,
            Store::Postgres(_) => Err(StoreError::Unsupported(
                "limiting the database size is a SQLite test facility",
            )),
        }
    }

    /// Claims the next rows of one lane of `peer` for `holder` (a
    /// replica's id): up to `limit` rows, in order, whose claim is absent
    /// or lapsed (`lease_until_ms <= now_ms`), leased until `now_ms +
    /// lease_ms`. Two claimers never get the same row while its lease
    /// lasts; a dead replica's rows are claimable again once it lapsed.
    /// The row leaves the outbox only through `Tx::dequeue`, in the
    /// transaction that records the peer's answer.
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
        let ask = ClaimRequest {
            peer,
            kind,
            urgent,
            limit,
            holder,
            now_ms,
            until_ms: now_ms.saturating_add(lease_ms),
        };
        let mut rows = match self {
            Store::Sqlite(s) => s.claim_outbox(&ask).await?,
            Store::Postgres(s) => s.claim_outbox(&ask).await?,
        };
        self.fill_bodies(&mut rows).await?;
        Ok(rows)
    }

    /// Renews `holder`'s claims on these rows until `until_ms`; returns
    /// how many it still holds (a lapsed claim may have been taken over).
    pub async fn extend_claims(
        &self,
        ids: &[i64],
        holder: &str,
        until_ms: i64,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.extend_claims(ids, holder, until_ms).await),
            Store::Postgres(s) => s.extend_claims(ids, holder, until_ms).await,
        }
    }

    /// Gives up `holder`'s claims on these rows, so any replica may send
    /// them again; with `error`, a failed attempt is recorded on each
    /// (durably, before the claims end).
    pub async fn release_claims(
        &self,
        ids: &[i64],
        holder: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => {
                if let Some(error) = error {
                    self.outbox_failed(ids, error).await?;
                }
                s.release_claims(ids, holder).await;
                Ok(())
            }
            Store::Postgres(s) => s.release_claims(ids, holder, error).await,
        }
    }

    /// Gives up every claim of `holder` (a replica restarting under the
    /// same id), or every claim (`None`: a node that is the only process
    /// on its database). Returns how many were released.
    pub async fn release_claims_of(&self, holder: Option<&str>) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.release_claims_of(holder).await),
            Store::Postgres(s) => s.release_claims_of(holder).await,
        }
    }

    /// After a purge, makes the overwritten data unrecoverable from the
    /// database's own files (SQLite: folds the WAL into the main file and
    /// truncates it; PostgreSQL: vacuums the tables retention rewrites).
    /// `Ok(false)` when SQLite could not truncate the WAL because another
    /// connection (another process) kept reading: the old page images are
    /// then still in the `-wal` file.
    pub async fn checkpoint_wal(&self) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.checkpoint_wal().await,
            Store::Postgres(s) => s.vacuum_purged().await.map(|()| true),
        }
    }

    /// Whether outbox row `id` is claimed for sending right now (its lease
    /// not lapsed at `now_ms`): it may be on the wire.
    pub async fn is_claimed(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.is_claimed(id, now_ms).await),
            Store::Postgres(s) => s.is_claimed(id, now_ms).await,
        }
    }

    /// A connection from the read pool, for one query.
    async fn reader(&self) -> Result<Reader, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => Reader::Sqlite(s.reader.acquire().await?),
            Store::Postgres(s) => Reader::Postgres(s.reader.acquire().await?),
        })
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        counted();
        match self.backend {
            TxOn::Sqlite(t) => t.commit().await,
            TxOn::Postgres(t) => t.commit().await,
        }
    }

    /// Undoes everything written in this transaction (on PostgreSQL, its
    /// notifications are never sent).
    pub async fn rollback(self) -> Result<(), StoreError> {
        counted();
        match self.backend {
            TxOn::Sqlite(t) => t.tx.rollback().await?,
            TxOn::Postgres(t) => t.tx.rollback().await?,
        }
        Ok(())
    }

    /// This transaction's connection, for shared SQL.
    fn conn(&mut self) -> Conn<'_> {
        match &mut self.backend {
            TxOn::Sqlite(t) => Conn::Sqlite(&mut t.tx),
            TxOn::Postgres(t) => Conn::Postgres(&mut t.tx),
        }
    }

    /// Work was queued for `peer`'s lane: PostgreSQL announces it to the
    /// other replicas when this commits.
    fn queued(&mut self, peer: &str, urgent: bool) {
        if let TxOn::Postgres(t) = &mut self.backend {
            t.announce(peer, urgent);
        }
    }

    /// These outbox rows were deleted: on SQLite their in-memory claims
    /// end when this commits.
    fn dequeued(&mut self, ids: &[i64]) {
        if let TxOn::Sqlite(t) = &mut self.backend {
            t.dequeued.extend_from_slice(ids);
        }
    }
}

/// Copies the SQLite database at `path` to a new file `out` (mode 0600):
/// a consistent snapshot, safe while the node runs (see
/// [`sqlite::backup`]). Returns the number of audit entries in the copy.
pub async fn backup(path: &Path, out: &Path) -> Result<u64, StoreError> {
    sqlite::backup(path, out).await
}
