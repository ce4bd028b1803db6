//! Durable storage: reports, deliveries, the outbox, case history and the
//! audit chain, on one of two backends chosen by `database` in node.toml:
//! SQLite (`sqlite.rs`: a file, WAL, `synchronous=FULL`, one writer
//! connection) or PostgreSQL (`postgres.rs`: a `postgres://` URL, durable
//! commits, one writer at a time through an advisory lock).
//!
//! [`Store`] and [`Tx`] are what the node uses; each method dispatches to
//! the backend, and both backends pass the same conformance suite
//! (`tests/store_conformance.rs`). Every write transaction that changes
//! state also appends its audit entry before it commits. This module holds
//! SQL only; the decisions are in `node/`.

use std::path::{Path, PathBuf};

use crate::audit;
use crate::audit::merkle::Hash;

pub mod copy;
pub mod postgres;
pub mod sqlite;

/// A 32-byte hash from a BLOB column; a short or long blob (a damaged row)
/// yields a hash that matches nothing.
fn to_hash(bytes: &[u8]) -> Hash {
    let mut h = [0u8; 32];
    if bytes.len() == 32 {
        h.copy_from_slice(bytes);
    } else {
        h[0] = 0xff;
    }
    h
}

/// A purged report's route: only its kind and destinations stay (what the
/// SQLite backend computes in SQL with its JSON functions).
pub fn purged_route(route: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(route) {
        Ok(v) => serde_json::json!({
            "kind": v.get("kind").cloned().unwrap_or(serde_json::Value::Null),
            "destinations": v.get("destinations").cloned().unwrap_or_else(|| serde_json::json!([])),
            "purged": true,
        })
        .to_string(),
        Err(_) => r#"{"purged":true}"#.to_owned(),
    }
}

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
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportRow {
    pub seq: i64,
    pub report_id: String,
    pub origin: String,
    pub direction: String,
    pub category: String,
    pub priority: String,
    pub status: String,
    pub hosting_country: Option<String>,
    pub route: String,
    /// Empty when `envelope` carries the payload (see `payload()`).
    #[sqlx(rename = "payload")]
    pub stored_payload: Vec<u8>,
    pub payload_digest: Vec<u8>,
    pub envelope: Vec<u8>,
    pub received_from: Option<String>,
    pub receipt: Option<Vec<u8>>,
    pub created_at_ms: i64,
    pub stored_at_ms: i64,
    pub updated_at_ms: i64,
    /// 1 when this node only passes the report on as a relay.
    pub relay: i64,
    /// The origin's latest signed correction (protobuf `Signed` Amendment).
    pub correction: Option<Vec<u8>>,
    /// The case this report joined (same content), if any.
    pub joined_to: Option<i64>,
    /// When retention purged its URLs, notes and evidence.
    #[sqlx(default)]
    pub purged_at_ms: Option<i64>,
}

impl ReportRow {
    /// The origin's exact signed payload bytes. They are stored once: in
    /// the envelope when it carries them (every report this version
    /// stores), in the `payload` column otherwise (rows of older versions).
    /// Empty once retention purged the report.
    pub fn payload(&self) -> &[u8] {
        if self.stored_payload.is_empty() {
            envelope_payload(&self.envelope).unwrap_or_default()
        } else {
            &self.stored_payload
        }
    }
}

/// The report payload bytes inside an encoded `Envelope` (`report` = 1,
/// its `Signed.payload` = 1), found without copying. `None` unless each of
/// the two fields occurs exactly once in well-formed protobuf, so the
/// bytes are exactly what any decoder reads there.
fn envelope_payload(envelope: &[u8]) -> Option<&[u8]> {
    let report = only_bytes_field(envelope, 1)?;
    only_bytes_field(report, 1)
}

/// The single occurrence of length-delimited field `field` in `msg`.
fn only_bytes_field(mut msg: &[u8], field: u64) -> Option<&[u8]> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut found = None;
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        let len = match key & 7 {
            0 => {
                varint(&mut msg)?;
                0
            }
            1 => 8,
            2 => usize::try_from(varint(&mut msg)?).ok()?,
            5 => 4,
            _ => return None,
        };
        if len > msg.len() {
            return None;
        }
        let (value, rest) = msg.split_at(len);
        msg = rest;
        if key >> 3 == field {
            if key & 7 != 2 || found.is_some() {
                return None;
            }
            found = Some(value);
        }
    }
    found
}

/// What goes in the `payload` column for a new report: nothing when its
/// envelope carries exactly these bytes (the payload is then stored once,
/// ~1.5 KiB less per report), the bytes themselves otherwise.
pub(crate) fn payload_column<'a>(r: &NewReport<'a>) -> &'a [u8] {
    if !r.payload.is_empty() && envelope_payload(r.envelope) == Some(r.payload) {
        &[]
    } else {
        r.payload
    }
}

/// A law-enforcement referral recorded on a case.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReferralRow {
    pub agency: String,
    pub reference: String,
    pub referred_at_ms: i64,
    pub actor: String,
}

/// A report whose retention period is over, and the record kind that
/// expired.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExpiredRow {
    pub seq: i64,
    pub origin: String,
    pub report_id: String,
    pub direction: String,
    pub status: String,
}

pub struct NewReport<'a> {
    pub report_id: &'a str,
    pub origin: &'a str,
    pub direction: &'a str,
    pub category: &'a str,
    pub priority: &'a str,
    pub status: &'a str,
    pub hosting_country: Option<&'a str>,
    pub route: &'a str,
    pub payload: &'a [u8],
    pub payload_digest: &'a [u8],
    pub envelope: &'a [u8],
    pub received_from: Option<&'a str>,
    pub created_at_ms: i64,
    pub now_ms: i64,
    /// Passed on as a relay, not a case here.
    pub relay: bool,
    /// The receipt this node signed for it (incoming).
    pub receipt: Option<&'a [u8]>,
    /// The case it joins (same content).
    pub joined_to: Option<i64>,
}

/// The body of an outbox row that carries its report's stored envelope
/// unchanged (the origin's own send): read from `reports` when claimed.
pub const BODY_IS_ENVELOPE: &[u8] = &[];

/// One outbox row to add (`Tx::enqueue_many`).
pub struct NewOutbox<'a> {
    pub peer: &'a str,
    pub kind: &'a str,
    pub urgent: bool,
    pub report_seq: i64,
    pub body: &'a [u8],
    /// One of the `OUTBOX_*` kinds of body.
    pub returned: i64,
}

/// One destination of a report (`Tx::insert_deliveries`).
pub struct NewDelivery<'a> {
    pub seq: i64,
    pub destination: &'a str,
    /// The next hop when it is not the destination itself.
    pub next_hop: Option<&'a str>,
}

/// One unsigned entry of a case's history (`Tx::insert_statuses`).
pub struct NewStatus<'a> {
    pub seq: i64,
    pub update_id: String,
    pub status: &'a str,
    pub reason: &'a str,
    pub actor: &'a str,
}

/// A delivery settled by the peer's answer (`Tx::finish_deliveries`).
pub struct FinishedDelivery<'a> {
    pub seq: i64,
    pub destination: &'a str,
    pub state: &'a str,
    pub receipt: &'a [u8],
    pub reason: Option<&'a str>,
}

/// Rows per multi-row statement: well under both backends' limits on bound
/// parameters (SQLite 32,766; PostgreSQL 65,535) at 18 columns.
pub const ROWS_PER_STATEMENT: usize = 512;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub destination: String,
    pub state: String,
    pub receipt: Option<Vec<u8>>,
    pub reason: Option<String>,
    pub delivered_at_ms: Option<i64>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_hop: Option<String>,
    pub relayed_at_ms: Option<i64>,
    pub via: Option<String>,
    pub handed_off_by: Option<String>,
}

/// What an outbox row's `body` is (`OutboxRow::returned`): the envelope or
/// `Signed` status update this node sent, a `Returned` item passed back
/// through relays, or an origin's `AmendEnvelope`.
pub const OUTBOX_SIGNED: i64 = 0;
pub const OUTBOX_RETURNED: i64 = 1;
pub const OUTBOX_AMENDMENT: i64 = 2;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub peer: String,
    pub kind: String,
    pub urgent: i64,
    pub report_seq: i64,
    pub body: Vec<u8>,
    pub attempts: i64,
    /// 1 when `body` is a `Returned` rather than a `Signed` status update.
    pub returned: i64,
    /// From a claim: the replica whose lapsed claim this one replaced
    /// (PostgreSQL; None when the row was unclaimed).
    #[sqlx(default)]
    pub taken_from: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SentRow {
    pub seq: i64,
    pub category: String,
    pub country: String,
    pub created_at_ms: i64,
    pub destination: String,
    pub state: String,
    pub delivered_at_ms: Option<i64>,
    pub relayed_at_ms: Option<i64>,
    pub next_hop: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FirstStatus {
    pub report_seq: i64,
    pub signer: String,
    pub status: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryRow {
    pub status: String,
    pub reason: String,
    pub actor: String,
    pub signer: Option<String>,
    pub at_ms: i64,
}

/// Filters for listing cases; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter<'a> {
    pub direction: Option<&'a str>,
    pub status: Option<&'a str>,
    pub category: Option<&'a str>,
    pub priority: Option<&'a str>,
    pub peer: Option<&'a str>,
    pub created_after_ms: Option<i64>,
    pub limit: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueRow {
    pub peer: String,
    pub depth: i64,
    pub oldest_ms: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CheckpointRow {
    pub size: i64,
    pub root: Vec<u8>,
    pub note: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CosignatureRow {
    pub size: i64,
    pub witness: String,
    pub line: String,
    pub timestamp: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WitnessedRow {
    pub log: String,
    pub size: i64,
    pub root: Vec<u8>,
    pub note: String,
    pub cosignature: String,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub actor: String,
    pub subject: String,
    pub detail: String,
}

/// Where a node keeps its data: `database` in node.toml. A path or
/// `sqlite://PATH` is a SQLite file; `postgres://…` (or `postgresql://…`)
/// a PostgreSQL database.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Database {
    /// Parses the setting; relative SQLite paths are resolved by `resolve`
    /// (against the configuration file's folder).
    pub fn parse(setting: &str, resolve: impl Fn(&str) -> PathBuf) -> Result<Self, String> {
        let s = setting.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            let url = url::Url::parse(s).map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
            if url.path().trim_start_matches('/').is_empty() {
                return Err("the PostgreSQL URL names no database (postgres://HOST/DBNAME)".into());
            }
            return Ok(Database::Postgres(s.to_owned()));
        }
        let path = s.strip_prefix("sqlite://").unwrap_or(s);
        if path.is_empty() {
            return Err("empty: a SQLite file path or a postgres:// URL".into());
        }
        if s.contains("://") && !s.starts_with("sqlite://") {
            return Err(format!(
                "unknown scheme in {:?}: use a file path, sqlite://PATH or postgres://…",
                redact(s)
            ));
        }
        Ok(Database::Sqlite(resolve(path)))
    }

    /// The SQLite file, when the node runs on SQLite.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(p) => Some(p),
            Database::Postgres(_) => None,
        }
    }

    /// For messages: the file path, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Database::Sqlite(p) => p.display().to_string(),
            Database::Postgres(u) => redact(u),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({})", self.display())
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// A URL with its password (if any) replaced by `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(unparsable URL)".into(),
    }
}

/// The node's store: one backend behind one interface.
#[derive(Clone)]
pub enum Store {
    Sqlite(sqlite::Store),
    Postgres(postgres::Store),
}

/// One write transaction. Dropping it without `commit` rolls back.
pub enum Tx {
    Sqlite(sqlite::Tx),
    Postgres(postgres::Tx),
}

/// Audit leaf hashes read at a time (`Store::fold_leaves`): ~2 MiB of
/// hashes, a few more of rows.
pub const LEAF_PAGE: u64 = 65_536;

macro_rules! dispatch {
    ($self:ident, $m:ident ( $($a:expr),* )) => {
        match $self {
            Self::Sqlite(s) => s.$m($($a),*).await,
            Self::Postgres(s) => s.$m($($a),*).await,
        }
    };
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
        dispatch!(self, close())
    }

    /// Starts a write transaction (one writer at a time, on both backends).
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(Tx::Sqlite(s.begin().await?)),
            Store::Postgres(s) => Ok(Tx::Postgres(s.begin().await?)),
        }
    }

    /// Starts a write transaction for bulk work: bulk transactions queue
    /// behind a gate, one at a time, so an urgent transaction waits at most
    /// for the bulk one holding the writer. Keep bulk transactions short.
    /// `ready` is awaited once this transaction is first in the queue and
    /// before it takes the writer (the node waits there for urgent work in
    /// progress: see `Core::begin_bulk`).
    pub async fn begin_bulk(&self, ready: impl Future<Output = ()>) -> Result<Tx, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(Tx::Sqlite(s.begin_bulk(ready).await?)),
            Store::Postgres(s) => Ok(Tx::Postgres(s.begin_bulk(ready).await?)),
        }
    }

    /// Caps the database at its current size, as a full disk would: every
    /// write that needs a new page then fails. For tests of disk-full
    /// behaviour; `danger_unlimit_database` lifts it.
    pub async fn danger_limit_database(&self) -> Result<(), StoreError> {
        dispatch!(self, danger_limit_database())
    }

    pub async fn danger_unlimit_database(&self) -> Result<(), StoreError> {
        dispatch!(self, danger_unlimit_database())
    }

    pub async fn report_by_seq(&self, seq: i64) -> Result<Option<ReportRow>, StoreError> {
        dispatch!(self, report_by_seq(seq))
    }

    /// Reports with this id (from any origin), or with `origin` when given.
    pub async fn reports_by_id(
        &self,
        origin: Option<&str>,
        report_id: &str,
    ) -> Result<Vec<ReportRow>, StoreError> {
        dispatch!(self, reports_by_id(origin, report_id))
    }

    pub async fn list_reports(&self, f: &CaseFilter<'_>) -> Result<Vec<ReportRow>, StoreError> {
        dispatch!(self, list_reports(f))
    }

    pub async fn deliveries(&self, seq: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        dispatch!(self, deliveries(seq))
    }

    /// For time-to-takedown figures: every destination of the reports
    /// `origin` sent since `since_ms`.
    pub async fn sent_since(
        &self,
        origin: &str,
        since_ms: i64,
    ) -> Result<Vec<SentRow>, StoreError> {
        dispatch!(self, sent_since(origin, since_ms))
    }

    /// For time-to-takedown figures: cases worked here received since
    /// `since_ms` (not joined to another case).
    pub async fn worked_since(&self, since_ms: i64) -> Result<Vec<SentRow>, StoreError> {
        dispatch!(self, worked_since(since_ms))
    }

    /// The first time each status was reached, per report and signer, for
    /// reports since `since_seq`.
    pub async fn first_statuses(&self, since_seq: i64) -> Result<Vec<FirstStatus>, StoreError> {
        dispatch!(self, first_statuses(since_seq))
    }

    /// The reports that joined the case `seq` (same content, other origins).
    pub async fn joined(&self, seq: i64) -> Result<Vec<ReportRow>, StoreError> {
        dispatch!(self, joined(seq))
    }

    pub async fn history(&self, seq: i64) -> Result<Vec<HistoryRow>, StoreError> {
        dispatch!(self, history(seq))
    }

    /// The next batch for `peer` of one kind: urgent first, then in order.
    pub async fn outbox_batch(
        &self,
        peer: &str,
        kind: &str,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut rows = dispatch!(self, outbox_batch(peer, kind, limit))?;
        self.fill_bodies(&mut rows).await?;
        Ok(rows)
    }

    /// The next batch for one lane of `peer` (urgent or bulk), in order.
    pub async fn outbox_lane(
        &self,
        peer: &str,
        kind: &str,
        urgent: bool,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut rows = dispatch!(self, outbox_lane(peer, kind, urgent, limit))?;
        self.fill_bodies(&mut rows).await?;
        Ok(rows)
    }

    /// A report row queued with an empty body carries the report's own
    /// envelope as stored (the origin's first send): written once, in
    /// `reports`, not again in the outbox, its claims and its deletion.
    async fn fill_bodies(&self, rows: &mut [OutboxRow]) -> Result<(), StoreError> {
        let seqs: Vec<i64> = rows
            .iter()
            .filter(|r| r.body.is_empty() && r.kind == "report")
            .map(|r| r.report_seq)
            .collect();
        if seqs.is_empty() {
            return Ok(());
        }
        let envelopes: std::collections::HashMap<i64, Vec<u8>> =
            dispatch!(self, report_envelopes(&seqs))?
                .into_iter()
                .collect();
        for r in rows
            .iter_mut()
            .filter(|r| r.body.is_empty() && r.kind == "report")
        {
            if let Some(e) = envelopes.get(&r.report_seq) {
                r.body = e.clone();
            }
        }
        Ok(())
    }

    /// Whether urgent work waits for `peer`.
    pub async fn urgent_pending(&self, peer: &str) -> Result<bool, StoreError> {
        dispatch!(self, urgent_pending(peer))
    }

    /// Records a failed attempt for these outbox rows.
    pub async fn outbox_failed(&self, ids: &[i64], error: &str) -> Result<(), StoreError> {
        dispatch!(self, outbox_failed(ids, error))
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
        let mut rows = dispatch!(
            self,
            claim_outbox(peer, kind, urgent, limit, holder, now_ms, lease_ms)
        )?;
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
        dispatch!(self, extend_claims(ids, holder, until_ms))
    }

    /// Gives up `holder`'s claims on these rows, so any replica may send
    /// them again; with `error`, a failed attempt is recorded on each.
    pub async fn release_claims(
        &self,
        ids: &[i64],
        holder: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        dispatch!(self, release_claims(ids, holder, error))
    }

    /// Gives up every claim of `holder` (a replica restarting under the
    /// same id), or every claim (`None`: a node that is the only process
    /// on its database). Returns how many were released.
    pub async fn release_claims_of(&self, holder: Option<&str>) -> Result<u64, StoreError> {
        dispatch!(self, release_claims_of(holder))
    }

    pub async fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError> {
        dispatch!(self, latest_checkpoint())
    }

    pub async fn checkpoint(&self, size: u64) -> Result<Option<CheckpointRow>, StoreError> {
        dispatch!(self, checkpoint(size))
    }

    pub async fn cosignatures(&self, size: u64) -> Result<Vec<CosignatureRow>, StoreError> {
        dispatch!(self, cosignatures(size))
    }

    pub async fn witnessed(&self, log: &str) -> Result<Option<WitnessedRow>, StoreError> {
        dispatch!(self, witnessed(log))
    }

    /// The leaf hashes of the first `size` entries, in order.
    /// Calls `f` with the leaf hashes of audit entries `after + 1 ..=
    /// upto`, in order, read `LEAF_PAGE` at a time, so that checkpoints and
    /// proofs never hold the whole log in memory. Returns how many.
    pub async fn fold_leaves(
        &self,
        after: u64,
        upto: u64,
        f: impl FnMut(&Hash),
    ) -> Result<u64, StoreError> {
        self.fold_leaves_paged(after, upto, LEAF_PAGE, f).await
    }

    /// `fold_leaves` with a page size of `page`.
    pub async fn fold_leaves_paged(
        &self,
        after: u64,
        upto: u64,
        page: u64,
        mut f: impl FnMut(&Hash),
    ) -> Result<u64, StoreError> {
        let (mut at, mut n) = (after, 0);
        while at < upto {
            let end = upto.min(at.saturating_add(page.max(1)));
            let hashes = dispatch!(self, leaf_range(at, end))?;
            hashes.iter().for_each(&mut f);
            n += hashes.len() as u64;
            at = end;
        }
        Ok(n)
    }

    /// Whether the database file answers a read (for health).
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, ping())
    }

    /// Per peer: undelivered items and the creation time of the oldest.
    pub async fn outbox_summary(&self) -> Result<Vec<QueueRow>, StoreError> {
        dispatch!(self, outbox_summary())
    }

    pub async fn audit_entries_count(&self) -> Result<u64, StoreError> {
        dispatch!(self, audit_entries_count())
    }

    /// Number of cases by direction and status.
    pub async fn case_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        dispatch!(self, case_counts())
    }

    /// The latest audit entry of `kind`.
    pub async fn last_audit_of_kind(&self, kind: &str) -> Result<Option<AuditRow>, StoreError> {
        dispatch!(self, last_audit_of_kind(kind))
    }

    pub async fn referrals(&self, seq: i64) -> Result<Vec<ReferralRow>, StoreError> {
        dispatch!(self, referrals(seq))
    }

    /// The signed status updates (protobuf `Signed`) of a case, in order.
    pub async fn signed_status_updates(&self, seq: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        dispatch!(self, signed_status_updates(seq))
    }

    /// Every audit entry about `subject` (e.g. `ORIGIN/REPORT-ID`), in order.
    pub async fn audit_entries_about(&self, subject: &str) -> Result<Vec<AuditRow>, StoreError> {
        dispatch!(self, audit_entries_about(subject))
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
        dispatch!(self, expired_reports(kind, cutoff_ms, limit))
    }

    /// Folds the WAL into the main file and truncates it, so overwritten
    /// pages are gone from the WAL too (after a purge).
    pub async fn checkpoint_wal(&self) -> Result<(), StoreError> {
        dispatch!(self, checkpoint_wal())
    }

    pub async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        dispatch!(self, audit_entries(after, limit))
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        dispatch!(self, commit())
    }

    /// Undoes everything written in this transaction.
    pub async fn rollback(self) -> Result<(), StoreError> {
        dispatch!(self, rollback())
    }

    pub async fn find_report(
        &mut self,
        origin: &str,
        report_id: &str,
    ) -> Result<Option<ReportRow>, StoreError> {
        dispatch!(self, find_report(origin, report_id))
    }

    pub async fn report_by_seq(&mut self, seq: i64) -> Result<Option<ReportRow>, StoreError> {
        dispatch!(self, report_by_seq(seq))
    }

    pub async fn insert_report(&mut self, r: &NewReport<'_>) -> Result<i64, StoreError> {
        dispatch!(self, insert_report(r))
    }

    // Batched forms of the hot paths: one statement per kind of row for a
    // whole batch (each statement costs a thread hand-off to the database
    // driver, which dominates a report's cost when done row by row).

    /// Inserts the reports in order and returns their seqs in the same order.
    pub async fn insert_reports(&mut self, rs: &[NewReport<'_>]) -> Result<Vec<i64>, StoreError> {
        dispatch!(self, insert_reports(rs))
    }

    /// The stored reports among these (origin, report id) pairs.
    pub async fn find_reports(
        &mut self,
        keys: &[(&str, &str)],
    ) -> Result<Vec<ReportRow>, StoreError> {
        dispatch!(self, find_reports(keys))
    }

    pub async fn reports_by_seqs(&mut self, seqs: &[i64]) -> Result<Vec<ReportRow>, StoreError> {
        dispatch!(self, reports_by_seqs(seqs))
    }

    /// (key, case seq) for every open case worked here holding one of
    /// these content keys.
    pub async fn open_cases_with_keys(
        &mut self,
        keys: &[&str],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        dispatch!(self, open_cases_with_keys(keys))
    }

    pub async fn insert_case_keys_many(&mut self, keys: &[(i64, &str)]) -> Result<(), StoreError> {
        dispatch!(self, insert_case_keys_many(keys))
    }

    pub async fn insert_deliveries(&mut self, ds: &[NewDelivery<'_>]) -> Result<(), StoreError> {
        dispatch!(self, insert_deliveries(ds))
    }

    pub async fn enqueue_many(
        &mut self,
        rows: &[NewOutbox<'_>],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, enqueue_many(rows, now_ms))
    }

    pub async fn insert_statuses(
        &mut self,
        rows: &[NewStatus<'_>],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, insert_statuses(rows, at_ms))
    }

    /// Appends the entries in order, one audit sequence number each;
    /// returns the last one's (the log's size).
    pub async fn audit_many(
        &mut self,
        entries: &[audit::Entry],
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        if entries.is_empty() {
            return Ok(i64::try_from(self.audit_size().await?).unwrap_or(i64::MAX));
        }
        dispatch!(self, audit_many(entries, now_ms))
    }

    /// Deletes these outbox rows; returns the ids that were still there.
    pub async fn dequeue_many(&mut self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        dispatch!(self, dequeue_many(ids))
    }

    /// (report seq, destination) of every destination of these reports
    /// reached through `next_hop` (itself included).
    pub async fn destinations_via_many(
        &mut self,
        seqs: &[i64],
        next_hop: &str,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        dispatch!(self, destinations_via_many(seqs, next_hop))
    }

    pub async fn finish_deliveries(
        &mut self,
        ds: &[FinishedDelivery<'_>],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, finish_deliveries(ds, now_ms))
    }

    /// Sets the status of those of these reports whose status is `from`.
    pub async fn set_status_many(
        &mut self,
        seqs: &[i64],
        from: &str,
        to: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, set_status_many(seqs, from, to, now_ms))
    }

    /// (submission id, report seq) of this operator's earlier submissions
    /// among these keys.
    pub async fn find_submissions(
        &mut self,
        operator: &str,
        ids: &[&str],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        dispatch!(self, find_submissions(operator, ids))
    }

    pub async fn insert_submissions(
        &mut self,
        operator: &str,
        rows: &[(&str, i64)],
    ) -> Result<(), StoreError> {
        dispatch!(self, insert_submissions(operator, rows))
    }

    /// The report an operator's earlier submission with this key created.
    pub async fn find_submission(
        &mut self,
        operator: &str,
        submission_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        dispatch!(self, find_submission(operator, submission_id))
    }

    pub async fn insert_submission(
        &mut self,
        operator: &str,
        submission_id: &str,
        report_seq: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, insert_submission(operator, submission_id, report_seq))
    }

    pub async fn set_receipt(&mut self, seq: i64, receipt: &[u8]) -> Result<(), StoreError> {
        dispatch!(self, set_receipt(seq, receipt))
    }

    pub async fn set_status(
        &mut self,
        seq: i64,
        status: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, set_status(seq, status, now_ms))
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
        dispatch!(
            self,
            insert_delivery(seq, destination, next_hop, handed_off_by)
        )
    }

    /// The delivery state of one destination of a report.
    pub async fn delivery_state(
        &mut self,
        seq: i64,
        destination: &str,
    ) -> Result<Option<String>, StoreError> {
        dispatch!(self, delivery_state(seq, destination))
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
        dispatch!(
            self,
            relayed_delivery(seq, destination, relay_receipt, now_ms)
        )
    }

    /// The relays a destination's receipt came back through.
    pub async fn set_delivery_via(
        &mut self,
        seq: i64,
        destination: &str,
        via: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, set_delivery_via(seq, destination, via))
    }

    /// The destinations whose reports go through `next_hop`.
    pub async fn destinations_via(
        &mut self,
        seq: i64,
        next_hop: &str,
    ) -> Result<Vec<String>, StoreError> {
        dispatch!(self, destinations_via(seq, next_hop))
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
        dispatch!(
            self,
            finish_delivery(seq, destination, state, receipt, reason, now_ms)
        )
    }

    /// Whether `destination` is one of the report's destinations.
    pub async fn is_destination(
        &mut self,
        seq: i64,
        destination: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self, is_destination(seq, destination))
    }

    pub async fn enqueue(
        &mut self,
        peer: &str,
        kind: &str,
        urgent: bool,
        report_seq: i64,
        body: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        dispatch!(
            self,
            enqueue(peer, kind, urgent, report_seq, body, now_ms, OUTBOX_SIGNED)
        )
    }

    /// Queues a receipt or status update passed back towards the origin
    /// (a protobuf `Returned`) for `peer`.
    pub async fn enqueue_returned(
        &mut self,
        peer: &str,
        urgent: bool,
        report_seq: i64,
        body: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        dispatch!(
            self,
            enqueue(
                peer,
                "status",
                urgent,
                report_seq,
                body,
                now_ms,
                OUTBOX_RETURNED
            )
        )
    }

    /// Queues an origin's amendment (a protobuf `AmendEnvelope`) for `peer`.
    pub async fn enqueue_amendment(
        &mut self,
        peer: &str,
        urgent: bool,
        report_seq: i64,
        body: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        dispatch!(
            self,
            enqueue(
                peer,
                "status",
                urgent,
                report_seq,
                body,
                now_ms,
                OUTBOX_AMENDMENT
            )
        )
    }

    /// The outbox row still holding this report for `peer`, if not sent.
    pub async fn queued_report(
        &mut self,
        report_seq: i64,
        peer: &str,
    ) -> Result<Option<i64>, StoreError> {
        dispatch!(self, queued_report(report_seq, peer))
    }

    /// Every destination of a report: (destination, next hop, state).
    pub async fn delivery_routes(
        &mut self,
        report_seq: i64,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        dispatch!(self, delivery_routes(report_seq))
    }

    /// Records the origin's latest correction (and the category it sets).
    pub async fn set_correction(
        &mut self,
        seq: i64,
        category: &str,
        correction: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, set_correction(seq, category, correction, now_ms))
    }

    /// What identifies a case's content (see `case_keys`).
    pub async fn insert_case_keys(&mut self, seq: i64, keys: &[String]) -> Result<(), StoreError> {
        dispatch!(self, insert_case_keys(seq, keys))
    }

    /// The oldest open case worked here with any of these keys.
    pub async fn open_case_with_keys(
        &mut self,
        keys: &[String],
    ) -> Result<Option<i64>, StoreError> {
        dispatch!(self, open_case_with_keys(keys))
    }

    /// Every PDQ hash of an open case worked here: (hex, case seq).
    pub async fn open_pdq_keys(&mut self) -> Result<Vec<(String, i64)>, StoreError> {
        dispatch!(self, open_pdq_keys())
    }

    pub async fn set_joined(&mut self, seq: i64, case_seq: i64) -> Result<(), StoreError> {
        dispatch!(self, set_joined(seq, case_seq))
    }

    /// The reports that joined the case `seq`.
    pub async fn joined(&mut self, seq: i64) -> Result<Vec<ReportRow>, StoreError> {
        dispatch!(self, joined(seq))
    }

    /// Removes a sent outbox row; false when it was already gone.
    pub async fn dequeue(&mut self, id: i64) -> Result<bool, StoreError> {
        dispatch!(self, dequeue(id))
    }

    /// Whether a history entry with this id is recorded for the report.
    pub async fn status_recorded(&mut self, seq: i64, update_id: &str) -> Result<bool, StoreError> {
        dispatch!(self, status_recorded(seq, update_id))
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
        dispatch!(
            self,
            insert_referral(
                seq,
                update_id,
                agency,
                reference,
                referred_at_ms,
                actor,
                now_ms
            )
        )
    }

    /// Retention: removes a report's URLs, notes, hashes, hosting evidence,
    /// history reasons, operator names and submission keys, keeping a
    /// tombstone (ids, category, status, payload digest, receipts) that the
    /// audit log's entries still point at. False when it was already
    /// purged or something is still to be sent for it.
    pub async fn purge_report(&mut self, seq: i64, now_ms: i64) -> Result<bool, StoreError> {
        dispatch!(self, purge_report(seq, now_ms))
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
        dispatch!(
            self,
            insert_status(seq, update_id, status, reason, actor, signer, signed, at_ms)
        )
    }

    /// Appends an audit entry, chained to the previous one. Runs inside the
    /// transaction of the change it records.
    pub async fn audit(&mut self, entry: &audit::Entry, now_ms: i64) -> Result<i64, StoreError> {
        dispatch!(self, audit(entry, now_ms))
    }

    /// Number of entries in the audit log.
    pub async fn audit_size(&mut self) -> Result<u64, StoreError> {
        dispatch!(self, audit_size())
    }

    /// The leaf hashes of the first `size` entries, in order.
    /// `Store::fold_leaves`, inside this transaction.
    pub async fn fold_leaves(
        &mut self,
        after: u64,
        upto: u64,
        mut f: impl FnMut(&Hash),
    ) -> Result<u64, StoreError> {
        let (mut at, mut n) = (after, 0);
        while at < upto {
            let end = upto.min(at.saturating_add(LEAF_PAGE));
            let hashes = dispatch!(self, leaf_range(at, end))?;
            hashes.iter().for_each(&mut f);
            n += hashes.len() as u64;
            at = end;
        }
        Ok(n)
    }

    pub async fn latest_checkpoint(&mut self) -> Result<Option<CheckpointRow>, StoreError> {
        dispatch!(self, latest_checkpoint())
    }

    pub async fn insert_checkpoint(
        &mut self,
        size: u64,
        root: &Hash,
        note: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, insert_checkpoint(size, root, note, now_ms))
    }

    /// Stores a witness's cosignature; false when it was already stored.
    pub async fn insert_cosignature(
        &mut self,
        size: u64,
        witness: &str,
        line: &str,
        timestamp: u64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, insert_cosignature(size, witness, line, timestamp))
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
        dispatch!(self, advance_witnessed(log, from, to))
    }
}

/// Copies the SQLite database at `path` to a new file `out` (mode 0600):
/// a consistent snapshot, safe while the node runs (see
/// [`sqlite::backup`]). Returns the number of audit entries in the copy.
pub async fn backup(path: &Path, out: &Path) -> Result<u64, StoreError> {
    sqlite::backup(path, out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Database, String> {
        Database::parse(s, |p: &str| Path::new("/etc/alertrelay").join(p))
    }

    #[test]
    fn the_database_setting_names_a_file_or_a_postgres_url() {
        assert_eq!(
            parse("node.db").unwrap(),
            Database::Sqlite("/etc/alertrelay/node.db".into())
        );
        assert_eq!(
            parse("sqlite:///var/lib/alertrelay/node.db").unwrap(),
            Database::Sqlite("/var/lib/alertrelay/node.db".into())
        );
        let pg = parse("postgres://alertrelay:s3cret@db:5432/alertrelay").unwrap();
        assert_eq!(
            pg,
            Database::Postgres("postgres://alertrelay:s3cret@db:5432/alertrelay".into())
        );
        assert!(pg.sqlite_path().is_none());
        // The password never shows in messages.
        assert_eq!(pg.display(), "postgres://alertrelay:***@db:5432/alertrelay");
        assert!(!format!("{pg:?}").contains("s3cret"));
        assert!(matches!(
            parse("postgresql://db/alertrelay").unwrap(),
            Database::Postgres(_)
        ));
        let err = parse("postgres://db").unwrap_err();
        assert!(err.contains("names no database"), "{err}");
        let err = parse("mysql://u:pw@db/x").unwrap_err();
        assert!(
            err.contains("unknown scheme") && !err.contains("pw"),
            "{err}"
        );
        assert!(parse("").is_err());
    }

    #[test]
    fn a_purged_route_keeps_only_its_kind_and_destinations() {
        let r: serde_json::Value = serde_json::from_str(&purged_route(
            r#"{"kind":"peer","destinations":["DE"],"evidence":{"ip":"1.2.3.4"}}"#,
        ))
        .unwrap();
        assert_eq!(
            r,
            serde_json::json!({"kind": "peer", "destinations": ["DE"], "purged": true})
        );
        assert_eq!(purged_route("not json"), r#"{"purged":true}"#);
    }

    /// The payload found in an envelope without decoding it is what prost
    /// decodes there, and anything ambiguous (a field twice, a field of the
    /// wrong type, truncation) finds nothing, so the column keeps it.
    #[test]
    fn the_payload_inside_an_envelope_is_found_exactly_or_not_at_all() {
        use crate::pb;
        use prost::Message;
        let signed = |payload: Vec<u8>| pb::Signed {
            payload,
            signer: "de-hotline".into(),
            key_id: "k".into(),
            signature: vec![1; 64],
            batch: None,
        };
        for len in [1usize, 127, 128, 300, 20_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 256) as u8).collect();
            let env = pb::Envelope {
                report: Some(signed(payload.clone())),
                hops: vec![signed(b"hop one".to_vec()), signed(b"hop two".to_vec())],
            };
            let bytes = env.encode_to_vec();
            let decoded = pb::Envelope::decode(bytes.as_slice())
                .unwrap()
                .report
                .unwrap()
                .payload;
            assert_eq!(envelope_payload(&bytes), Some(decoded.as_slice()));
            assert_eq!(envelope_payload(&bytes), Some(payload.as_slice()));
            assert_eq!(envelope_payload(&bytes[..bytes.len() - 1]), None);
        }
        // Two `report` fields (a decoder merges them): not taken.
        let one = pb::Envelope {
            report: Some(signed(b"a".to_vec())),
            hops: vec![],
        }
        .encode_to_vec();
        let twice = [one.clone(), one.clone()].concat();
        assert_eq!(envelope_payload(&twice), None);
        // An empty payload is no field at all in protobuf: nothing found
        // (and an empty payload keeps its own, empty, column).
        let empty = pb::Envelope {
            report: Some(signed(Vec::new())),
            hops: vec![],
        }
        .encode_to_vec();
        assert_eq!(envelope_payload(&empty), None);
        // No report at all, or not protobuf.
        assert_eq!(
            envelope_payload(&pb::Envelope::default().encode_to_vec()),
            None
        );
        assert_eq!(envelope_payload(b"\x0b\x0c"), None);
        assert_eq!(envelope_payload(b""), None);
    }
}
