//! `alertrelay db migrate-to`: copies a SQLite node's data into an empty
//! PostgreSQL database, every table and every row as it is (the audit log
//! byte for byte, so its hashes and signed checkpoints still hold), in one
//! PostgreSQL transaction, from one consistent SQLite snapshot. Rows go in
//! multi-row statements of up to [`CHUNK`] rows.

use std::path::Path;

use sqlx::{Connection, Row};

use super::{StoreError, postgres};

/// Rows per INSERT statement.
pub const CHUNK: usize = 500;

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    Blob,
}
use Kind::{Blob, Int, Text};

/// A table: its name, the column that orders it, its columns.
type Table = (&'static str, &'static str, &'static [(&'static str, Kind)]);

/// Every table of the final schema, in foreign-key order.
const TABLES: &[Table] = &[
    (
        "reports",
        "seq",
        &[
            ("seq", Int),
            ("report_id", Text),
            ("origin", Text),
            ("direction", Text),
            ("category", Text),
            ("priority", Text),
            ("status", Text),
            ("hosting_country", Text),
            ("route", Text),
            ("payload", Blob),
            ("payload_digest", Blob),
            ("envelope", Blob),
            ("received_from", Text),
            ("receipt", Blob),
            ("created_at_ms", Int),
            ("stored_at_ms", Int),
            ("updated_at_ms", Int),
            ("purged_at_ms", Int),
            ("relay", Int),
            ("correction", Blob),
            ("joined_to", Int),
            ("family", Text),
        ],
    ),
    (
        "deliveries",
        "rowid",
        &[
            ("report_seq", Int),
            ("destination", Text),
            ("state", Text),
            ("receipt", Blob),
            ("reason", Text),
            ("delivered_at_ms", Int),
            ("next_hop", Text),
            ("relay_receipt", Blob),
            ("relayed_at_ms", Int),
            ("via", Text),
            ("handed_off_by", Text),
        ],
    ),
    // Claims (`claimed_by`, `lease_until_ms`) are not copied: the copy's
    // queue starts unclaimed, for whichever replica starts first.
    (
        "outbox",
        "id",
        &[
            ("id", Int),
            ("peer", Text),
            ("kind", Text),
            ("urgent", Int),
            ("report_seq", Int),
            ("body", Blob),
            ("attempts", Int),
            ("last_error", Text),
            ("created_at_ms", Int),
            ("returned", Int),
        ],
    ),
    (
        "status_history",
        "id",
        &[
            ("id", Int),
            ("report_seq", Int),
            ("update_id", Text),
            ("status", Text),
            ("reason", Text),
            ("actor", Text),
            ("signer", Text),
            ("signed", Blob),
            ("at_ms", Int),
        ],
    ),
    (
        "audit_log",
        "seq",
        &[
            ("seq", Int),
            ("at_ms", Int),
            ("kind", Text),
            ("actor", Text),
            ("subject", Text),
            ("detail", Text),
            ("prev_hash", Blob),
            ("hash", Blob),
            ("leaf_hash", Blob),
        ],
    ),
    (
        "checkpoints",
        "size",
        &[
            ("size", Int),
            ("root", Blob),
            ("note", Text),
            ("created_at_ms", Int),
        ],
    ),
    (
        "cosignatures",
        "rowid",
        &[
            ("size", Int),
            ("witness", Text),
            ("line", Text),
            ("timestamp", Int),
        ],
    ),
    (
        "witnessed",
        "rowid",
        &[
            ("log", Text),
            ("size", Int),
            ("root", Blob),
            ("note", Text),
            ("cosignature", Text),
            ("updated_at_ms", Int),
        ],
    ),
    (
        "submissions",
        "rowid",
        &[
            ("operator", Text),
            ("submission_id", Text),
            ("report_seq", Int),
        ],
    ),
    (
        "referrals",
        "id",
        &[
            ("id", Int),
            ("report_seq", Int),
            ("update_id", Text),
            ("agency", Text),
            ("reference", Text),
            ("referred_at_ms", Int),
            ("actor", Text),
            ("recorded_at_ms", Int),
        ],
    ),
    ("case_keys", "rowid", &[("key", Text), ("report_seq", Int)]),
    (
        "users",
        "name",
        &[
            ("name", Text),
            ("role", Text),
            ("state", Text),
            ("password_hash", Text),
            ("totp_secret", Text),
            ("totp_last_step", Int),
            ("enrol_code_hash", Text),
            ("enrol_expires_ms", Int),
            ("failures", Int),
            ("locked_until_ms", Int),
            ("created_at_ms", Int),
            ("created_by", Text),
            ("last_login_ms", Int),
            ("language", Text),
        ],
    ),
    (
        "close_proposals",
        "report_seq",
        &[
            ("report_seq", Int),
            ("status", Text),
            ("from_status", Text),
            ("reason", Text),
            ("proposed_by", Text),
            ("proposed_at_ms", Int),
        ],
    ),
    (
        "alerts",
        "raised_at_ms",
        &[
            ("id", Text),
            ("dedup_key", Text),
            ("event", Text),
            ("severity", Text),
            ("summary", Text),
            ("raised_at_ms", Int),
        ],
    ),
    (
        "alert_deliveries",
        "id",
        &[
            ("id", Int),
            ("alert_id", Text),
            ("channel", Text),
            ("body", Text),
            ("attempts", Int),
            ("last_error", Text),
            ("next_attempt_ms", Int),
            ("lease_until_ms", Int),
            ("delivered_at_ms", Int),
            ("given_up_at_ms", Int),
        ],
    ),
];

/// The tables whose ids come from a sequence (`BIGSERIAL`).
const SERIALS: &[(&str, &str)] = &[
    ("reports", "seq"),
    ("outbox", "id"),
    ("status_history", "id"),
    ("referrals", "id"),
    ("alert_deliveries", "id"),
];

enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
}

/// How many rows of each table were copied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Copied {
    pub tables: Vec<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0} does not exist")]
    NoSource(String),
    #[error(
        "the target database is not empty ({0} has rows): migrate-to copies into an empty database only"
    )]
    NotEmpty(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        CopyError::Store(StoreError::Db(e))
    }
}

/// Copies the SQLite database at `source` into the PostgreSQL database at
/// `url` (migrated first; it must hold no rows). The source is migrated to
/// the current schema as the node's own start-up would.
pub async fn sqlite_to_postgres(source: &Path, url: &str) -> Result<Copied, CopyError> {
    if !source.exists() {
        return Err(CopyError::NoSource(source.display().to_string()));
    }
    // Bring the source to the current schema (and fill in old leaf hashes).
    super::sqlite::Store::open(source).await?.close().await;
    let target = postgres::Store::open(url).await?;
    let result = copy_into(source, &target).await;
    target.close().await;
    result
}

async fn copy_into(source: &Path, target: &postgres::Store) -> Result<Copied, CopyError> {
    use sqlx::ConnectOptions;
    let mut src = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(source)
        .read_only(true)
        .connect()
        .await?;
    // One read transaction: a consistent snapshot of every table.
    let mut snapshot = src.begin().await?;
    let mut tx = target.begin_raw().await?;
    for (table, _, _) in TABLES {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&mut *tx)
                .await?;
        if n > 0 {
            return Err(CopyError::NotEmpty(table));
        }
    }
    let mut copied = Vec::new();
    for (table, order, columns) in TABLES {
        let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
        let select = format!(
            "SELECT {order} AS copy_key, {} FROM {table} WHERE {order} > $1 ORDER BY {order} LIMIT {CHUNK}",
            names.join(", ")
        );
        let mut after = i64::MIN;
        let mut n = 0u64;
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
                .bind(after)
                .fetch_all(&mut *snapshot)
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get("copy_key")?;
            let mut values = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut v = Vec::with_capacity(columns.len());
                for (c, kind) in columns.iter() {
                    v.push(match kind {
                        Int => Value::Int(row.try_get(*c)?),
                        Text => Value::Text(row.try_get(*c)?),
                        Blob => Value::Blob(row.try_get(*c)?),
                    });
                }
                values.push(v);
            }
            n += values.len() as u64;
            let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
                "INSERT INTO {table} ({}) ",
                names.join(", ")
            ));
            insert.push_values(values, |mut b, row| {
                for v in row {
                    match v {
                        Value::Int(x) => b.push_bind(x),
                        Value::Text(x) => b.push_bind(x),
                        Value::Blob(x) => b.push_bind(x),
                    };
                }
            });
            insert.build().execute(&mut *tx).await?;
        }
        copied.push(((*table).to_owned(), n));
    }
    for (table, column) in SERIALS {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                           COALESCE(MAX({column}), 1), MAX({column}) IS NOT NULL) FROM {table}"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    snapshot.rollback().await?;
    let _ = src.close().await;
    Ok(Copied { tables: copied })
}
