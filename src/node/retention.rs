//! Retention: per record kind (`[retention]` in node.toml), reports whose
//! period is over lose their URLs, notes, media hashes, hosting evidence,
//! history reasons, operator names and submission keys. A tombstone stays
//! (origin, report id, category, status, payload digest, receipts), so
//! (origin, report id) stays unique forever and the audit entries, which
//! name reports by id and payload hash and never hold URLs, keep pointing at
//! something. The audit log itself is never purged, so `audit verify` and
//! every inclusion proof still hold. Each purge writes one audit entry
//! (counts and ids, no URLs). SQLite's `secure_delete` zeroes the freed
//! bytes, and the WAL is checkpointed and truncated after a purge, so the
//! data is gone from the files, not just unlinked.
//!
//! Alerts too (`alerts_days`, `undelivered_notifications_days`): a
//! notification still not delivered that long after its event is given up
//! (its body, which holds URLs when its route opted in, dropped), and old
//! events whose notifications are all delivered or given up are deleted
//! with them, in one transaction with a `retention.alerts` audit entry.
//!
//! Runs on a schedule inside the node and from `alertrelay retention run`.

use serde::Serialize;

use crate::audit;
use crate::config::Retention;
use crate::store::{Store, StoreError, Tx};

use super::{Core, NodeError};

/// At most this many reports per run (the next run takes the rest).
pub const MAX_PER_RUN: i64 = 10_000;

/// One report a run purged (or, dry, would purge).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PurgedReport {
    /// `ORIGIN/REPORT-ID`.
    pub report: String,
    /// `closed`, `refused` or `delivered`: the record kind that expired.
    pub kind: &'static str,
    pub direction: String,
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetentionRun {
    pub dry_run: bool,
    pub at_ms: i64,
    pub closed: u64,
    pub refused: u64,
    pub delivered: u64,
    pub reports: Vec<PurgedReport>,
    /// Alerts deleted with their notifications.
    pub alerts: u64,
    /// Notifications given up undelivered (their bodies dropped).
    pub notifications_given_up: u64,
    /// The audit entry that records the purge — the last one when it went
    /// in several transactions (none for a dry run, or when a scheduled
    /// run found nothing).
    pub audit_entry: Option<i64>,
    /// Whether the purged data is gone from the database's files too
    /// (SQLite: the WAL truncated; false when another process kept reading
    /// and the WAL still holds old page images of the purged rows).
    pub files_clean: bool,
    /// Stopped at its time budget with expired reports left (a run asked
    /// for through the node: the caller asks again).
    #[serde(skip)]
    pub more: bool,
}

const KINDS: [&str; 3] = ["closed", "refused", "delivered"];

/// The record kind `name` names (as a node answered it), `delivered` for
/// anything else.
pub fn kind_name(name: &str) -> &'static str {
    KINDS
        .iter()
        .find(|k| **k == name)
        .copied()
        .unwrap_or("delivered")
}

/// Reports purged per transaction: a purge is bulk work, in short
/// transactions that let urgent work take the writer in between (fewer
/// while urgent work was seen lately: `UrgentGate::bulk_chunk`).
pub const PURGE_CHUNK: usize = 64;

fn days(r: &Retention, kind: &str) -> Option<u32> {
    match kind {
        "closed" => r.closed_cases_days,
        "refused" => r.refused_reports_days,
        "delivered" => r.delivered_reports_days,
        _ => None,
    }
}

/// Where a purge writes: inside the running node (its bulk transactions,
/// which wait for urgent work), or the database alone (no node runs on it).
#[derive(Clone, Copy)]
pub enum Writer<'a> {
    Node(&'a Core),
    Alone(&'a Store),
}

impl Writer<'_> {
    fn store(&self) -> &Store {
        match self {
            Writer::Node(core) => &core.store,
            Writer::Alone(store) => store,
        }
    }

    fn chunk(&self) -> usize {
        match self {
            Writer::Node(core) => core.urgent.bulk_chunk(PURGE_CHUNK),
            Writer::Alone(_) => PURGE_CHUNK,
        }
    }

    async fn begin(&self) -> Result<Tx, StoreError> {
        match self {
            Writer::Node(core) => core.begin_bulk().await,
            Writer::Alone(store) => store.begin().await,
        }
    }
}

/// How long one `RunRetention` call purges before it answers (`more`)
/// and lets the caller ask again: well within a client's call timeout and
/// the server's own limit, whatever the backlog.
pub const CALL_BUDGET: std::time::Duration = std::time::Duration::from_secs(15);

/// What has expired at `now_ms`, and (unless `dry_run`) purges it. `actor`
/// is who ran it (`system:retention` on the schedule, `cli:retention` from
/// the command line); `subject` the node id. `audit_if_empty`: write the
/// audit entry even when nothing expired (a run asked for by a person).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    writer: Writer<'_>,
    retention: &Retention,
    actor: &str,
    subject: &str,
    dry_run: bool,
    audit_if_empty: bool,
    now_ms: i64,
) -> Result<RetentionRun, StoreError> {
    let ask = Ask {
        actor,
        subject,
        dry_run,
        audit_if_empty,
        now_ms,
        budget: None,
    };
    run_within(writer, retention, &ask).await
}

/// Who asks for a run, and how.
pub struct Ask<'a> {
    pub actor: &'a str,
    pub subject: &'a str,
    pub dry_run: bool,
    pub audit_if_empty: bool,
    pub now_ms: i64,
    /// Start no chunk past this long after the start (the first always
    /// runs): the run then answers with `more` set.
    pub budget: Option<std::time::Duration>,
}

/// `run`, as `ask` says.
pub async fn run_within(
    writer: Writer<'_>,
    retention: &Retention,
    ask: &Ask<'_>,
) -> Result<RetentionRun, StoreError> {
    let started = std::time::Instant::now();
    let Ask {
        actor,
        subject,
        dry_run,
        audit_if_empty,
        now_ms,
        budget,
    } = *ask;
    let found = expired(writer.store(), retention, now_ms).await?;
    let mut out = RetentionRun {
        dry_run,
        at_ms: now_ms,
        closed: 0,
        refused: 0,
        delivered: 0,
        reports: Vec::new(),
        alerts: 0,
        notifications_given_up: 0,
        audit_entry: None,
        files_clean: true,
        more: false,
    };
    expire_alerts(writer, retention, ask, &mut out).await?;
    let alerts_changed = out.alerts > 0 || out.notifications_given_up > 0;
    if dry_run {
        for (_, p) in found {
            count(&mut out, p);
        }
        return Ok(out);
    }
    if found.is_empty() && !audit_if_empty {
        if alerts_changed {
            out.files_clean = scrub_files(writer.store()).await;
        }
        return Ok(out);
    }
    let chunks: Vec<&[(i64, PurgedReport)]> = if found.is_empty() {
        vec![&[]]
    } else {
        found.chunks(writer.chunk().max(1)).collect()
    };
    for (i, chunk) in chunks.into_iter().enumerate() {
        if i > 0 && budget.is_some_and(|b| started.elapsed() >= b) {
            out.more = true;
            break;
        }
        let mut tx = writer.begin().await?;
        let mut purged = Vec::with_capacity(chunk.len());
        for (seq, p) in chunk {
            // Re-checked inside the transaction: a report that got
            // something to send meanwhile is left for the next run.
            if tx.purge_report(*seq, now_ms).await? {
                purged.push(p.clone());
            }
        }
        let entry = purge_entry(actor, subject, retention, &purged);
        let seq = tx.audit(&entry, now_ms).await?;
        tx.commit().await?;
        out.audit_entry = Some(seq);
        for p in purged {
            count(&mut out, p);
        }
    }
    // Also when nothing was purged this time, for a run a person asked
    // for: the WAL may still hold what an earlier purge could not scrub
    // (another reader kept it), and "run it again" must clean it.
    if !out.reports.is_empty() || audit_if_empty || alerts_changed {
        out.files_clean = scrub_files(writer.store()).await;
        tracing::info!(
            purged = out.reports.len(),
            files_clean = out.files_clean,
            "retention purged expired reports"
        );
    }
    Ok(out)
}

/// The reports whose period is over, at most `MAX_PER_RUN` per kind.
async fn expired(
    store: &Store,
    retention: &Retention,
    now_ms: i64,
) -> Result<Vec<(i64, PurgedReport)>, StoreError> {
    let mut found: Vec<(i64, PurgedReport)> = Vec::new();
    for kind in KINDS {
        let Some(d) = days(retention, kind) else {
            continue;
        };
        let cutoff = now_ms.saturating_sub(i64::from(d).saturating_mul(86_400_000));
        for row in store.expired_reports(kind, cutoff, MAX_PER_RUN).await? {
            if found.iter().any(|(s, _)| *s == row.seq) {
                continue;
            }
            found.push((
                row.seq,
                PurgedReport {
                    report: format!("{}/{}", row.origin, row.report_id),
                    kind,
                    direction: row.direction,
                    status: row.status,
                },
            ));
        }
    }
    Ok(found)
}

/// Alerts whose period is over (see the module's doc), in one transaction
/// with its audit entry (counts and alert ids); a dry run rolls it back.
async fn expire_alerts(
    writer: Writer<'_>,
    retention: &Retention,
    ask: &Ask<'_>,
    out: &mut RetentionRun,
) -> Result<(), StoreError> {
    let cutoff = |days: Option<u32>| {
        days.map(|d| {
            ask.now_ms
                .saturating_sub(i64::from(d).saturating_mul(86_400_000))
        })
    };
    let give_up = cutoff(retention.undelivered_notifications_days);
    let delete = cutoff(retention.alerts_days);
    if give_up.is_none() && delete.is_none() {
        return Ok(());
    }
    let mut tx = writer.begin().await?;
    let done = tx
        .expire_alerts(give_up, delete, ask.now_ms, MAX_PER_RUN)
        .await?;
    out.alerts = done.deleted.len() as u64;
    out.notifications_given_up = done.notifications_given_up;
    if ask.dry_run || (done.deleted.is_empty() && done.given_up.is_empty()) {
        return tx.rollback().await;
    }
    let entry = audit::Entry::new(
        "retention.alerts",
        ask.actor,
        ask.subject,
        serde_json::json!({
            "notifications_given_up": done.notifications_given_up,
            "given_up_alerts": done.given_up,
            "deleted_alerts": done.deleted,
            "policy_days": {
                "alerts": retention.alerts_days,
                "undelivered_notifications": retention.undelivered_notifications_days,
            },
        }),
    );
    out.audit_entry = Some(tx.audit(&entry, ask.now_ms).await?);
    tx.commit().await?;
    if done.notifications_given_up > 0 {
        tracing::warn!(
            given_up = done.notifications_given_up,
            "retention gave up notifications never delivered (see `alertrelay status`)"
        );
    }
    Ok(())
}

/// The audit entry of one purge transaction: counts and ids, no URLs.
fn purge_entry(
    actor: &str,
    subject: &str,
    retention: &Retention,
    purged: &[PurgedReport],
) -> audit::Entry {
    let of = |kind: &str| purged.iter().filter(|p| p.kind == kind).count();
    audit::Entry::new(
        "retention.purged",
        actor,
        subject,
        serde_json::json!({
            "closed": of("closed"),
            "refused": of("refused"),
            "delivered": of("delivered"),
            "reports": purged.iter().map(|p| &p.report).collect::<Vec<_>>(),
            "policy_days": {
                "closed_cases": retention.closed_cases_days,
                "refused_reports": retention.refused_reports_days,
                "delivered_reports": retention.delivered_reports_days,
            },
        }),
    )
}

/// How often, and how long apart, the WAL truncation after a purge is
/// tried while another connection keeps reading.
const SCRUB_ATTEMPTS: u32 = 20;
const SCRUB_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Old page images of the purged rows live on in the WAL until it is
/// checkpointed and truncated: done now, waiting (about 5 s at most) for
/// readers to let go. Each try keeps the writer out for a moment at most
/// (the store's checkpoint wait), and the writer is free between tries, so
/// urgent work goes on meanwhile. False, loudly, when it could not be done.
async fn scrub_files(store: &Store) -> bool {
    for attempt in 0..SCRUB_ATTEMPTS {
        match store.checkpoint_wal().await {
            Ok(true) => return true,
            Ok(false) if attempt + 1 < SCRUB_ATTEMPTS => tokio::time::sleep(SCRUB_WAIT).await,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot truncate the WAL after a purge");
                return false;
            }
        }
    }
    tracing::error!(
        "the WAL still holds old pages of purged reports: another process kept reading the database; they go at the next purge or restart"
    );
    false
}

fn count(out: &mut RetentionRun, p: PurgedReport) {
    match p.kind {
        "closed" => out.closed += 1,
        "refused" => out.refused += 1,
        _ => out.delivered += 1,
    }
    out.reports.push(p);
}

/// Purges on `[retention] interval_secs` while the node runs (only when a
/// retention period is configured).
pub async fn run_schedule(
    core: std::sync::Arc<crate::node::Core>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let r = &core.config.retention;
    if !r.any() {
        return;
    }
    loop {
        let now = crate::node::Core::now_ms();
        if let Err(e) = run(
            Writer::Node(&core),
            r,
            "system:retention",
            core.me.as_str(),
            false,
            false,
            now,
        )
        .await
        {
            tracing::error!(error = %e, "scheduled retention run failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(r.interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// An erasure done: the case (`ORIGIN/REPORT-ID`), its audit entry, and
/// whether the erased data is gone from the database's files too.
#[derive(Debug, Clone, Serialize)]
pub struct Erased {
    pub erased: String,
    pub audit_entry: i64,
    pub files_clean: bool,
}

/// Erases one case now (an erasure request), as retention would when its
/// period ends: the same tombstone, one audit entry (`retention.erased`,
/// with the reason given, never the URLs). `id` is a report id or
/// `ORIGIN/REPORT-ID`.
pub async fn erase(
    writer: Writer<'_>,
    id: &str,
    actor: &str,
    reason: &str,
    now_ms: i64,
) -> Result<Erased, NodeError> {
    crate::report::validate::single_line("reason", reason, 1024)?;
    if reason.trim().is_empty() {
        return Err(crate::report::InvalidInput::new(
            "no-reason",
            "reason",
            "say why (e.g. the erasure request's reference)",
        )
        .into());
    }
    let (origin, report_id) = super::cases::case_id(id)?;
    let mut rows = writer.store().reports_by_id(origin, report_id).await?;
    let row = match rows.len() {
        0 => return Err(NodeError::NotFound(format!("no case {id:?}"))),
        1 => rows.remove(0),
        _ => {
            return Err(NodeError::FailedPrecondition(format!(
                "two origins used report id {id:?}: give ORIGIN/{id}"
            )));
        }
    };
    let subject = format!("{}/{}", row.origin, row.report_id);
    if row.purged_at_ms.is_some() {
        return Err(NodeError::FailedPrecondition(format!(
            "case {subject} was already purged"
        )));
    }
    let mut tx = writer.begin().await?;
    if !tx.purge_report(row.seq, now_ms).await? {
        return Err(NodeError::FailedPrecondition(format!(
            "case {subject} still has something to send to a peer (a report or status update in the outbox); erase it once that is delivered"
        )));
    }
    let seq = tx
        .audit(
            &audit::Entry::new(
                "retention.erased",
                actor,
                subject.clone(),
                serde_json::json!({
                    "reason": reason,
                    "direction": row.direction,
                    "status": row.status,
                    "payload_sha256": hex::encode(&row.payload_digest),
                }),
            ),
            now_ms,
        )
        .await?;
    tx.commit().await?;
    let files_clean = scrub_files(writer.store()).await;
    Ok(Erased {
        erased: subject,
        audit_entry: seq,
        files_clean,
    })
}
