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
//! Runs on a schedule inside the node and from `alertrelay retention run`.

use serde::Serialize;

use crate::audit;
use crate::config::Retention;
use crate::store::{Store, StoreError};

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
    /// The audit entry that records the purge (none for a dry run, or when
    /// a scheduled run found nothing).
    pub audit_entry: Option<i64>,
}

const KINDS: [&str; 3] = ["closed", "refused", "delivered"];

fn days(r: &Retention, kind: &str) -> Option<u32> {
    match kind {
        "closed" => r.closed_cases_days,
        "refused" => r.refused_reports_days,
        "delivered" => r.delivered_reports_days,
        _ => None,
    }
}

/// What has expired at `now_ms`, and (unless `dry_run`) purges it. `actor`
/// is who ran it (`system:retention` on the schedule, `cli:retention` from
/// the command line); `subject` the node id. `audit_if_empty`: write the
/// audit entry even when nothing expired (a run asked for by a person).
pub async fn run(
    store: &Store,
    retention: &Retention,
    actor: &str,
    subject: &str,
    dry_run: bool,
    audit_if_empty: bool,
    now_ms: i64,
) -> Result<RetentionRun, StoreError> {
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
    let mut out = RetentionRun {
        dry_run,
        at_ms: now_ms,
        closed: 0,
        refused: 0,
        delivered: 0,
        reports: Vec::new(),
        audit_entry: None,
    };
    if dry_run {
        for (_, p) in found {
            count(&mut out, p);
        }
        return Ok(out);
    }
    if found.is_empty() && !audit_if_empty {
        return Ok(out);
    }
    let mut tx = store.begin().await?;
    for (seq, p) in found {
        // Re-checked inside the transaction: a report that got something
        // to send meanwhile is left for the next run.
        if tx.purge_report(seq, now_ms).await? {
            count(&mut out, p);
        }
    }
    let seq = tx
        .audit(
            &audit::Entry::new(
                "retention.purged",
                actor,
                subject,
                serde_json::json!({
                    "closed": out.closed,
                    "refused": out.refused,
                    "delivered": out.delivered,
                    "reports": out.reports.iter().map(|p| &p.report).collect::<Vec<_>>(),
                    "policy_days": {
                        "closed_cases": retention.closed_cases_days,
                        "refused_reports": retention.refused_reports_days,
                        "delivered_reports": retention.delivered_reports_days,
                    },
                }),
            ),
            now_ms,
        )
        .await?;
    tx.commit().await?;
    out.audit_entry = Some(seq);
    if !out.reports.is_empty() {
        // Old page images of the purged rows live on in the WAL until it
        // is checkpointed; fold it back and truncate it.
        if let Err(e) = store.checkpoint_wal().await {
            tracing::warn!(error = %e, "WAL checkpoint after a purge failed; the next one will do it");
        }
        tracing::info!(
            purged = out.reports.len(),
            "retention purged expired reports"
        );
    }
    Ok(out)
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
            &core.store,
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

/// Why a case could not be erased.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("no case {0:?}")]
    NotFound(String),
    #[error("two origins used report id {0:?}: give ORIGIN/{0}")]
    Ambiguous(String),
    #[error("case {0} was already purged")]
    AlreadyPurged(String),
    #[error(
        "case {0} still has something to send to a peer (a report or status update in the outbox); erase it once that is delivered"
    )]
    Pending(String),
    #[error(transparent)]
    Invalid(#[from] crate::report::InvalidInput),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Erases one case now (an erasure request), as retention would when its
/// period ends: the same tombstone, one audit entry (`retention.erased`,
/// with the reason given, never the URLs). `id` is a report id or
/// `ORIGIN/REPORT-ID`.
pub async fn erase(
    store: &Store,
    id: &str,
    actor: &str,
    reason: &str,
    now_ms: i64,
) -> Result<(String, i64), EraseError> {
    crate::report::validate::single_line("reason", reason, 1024)?;
    if reason.trim().is_empty() {
        return Err(crate::report::InvalidInput::new(
            "no-reason",
            "reason",
            "say why (e.g. the erasure request's reference)",
        )
        .into());
    }
    let (origin, report_id) = match id.split_once('/') {
        Some((o, r)) => (Some(o), r),
        None => (None, id),
    };
    let mut rows = store.reports_by_id(origin, report_id).await?;
    let row = match rows.len() {
        0 => return Err(EraseError::NotFound(id.to_owned())),
        1 => rows.remove(0),
        _ => return Err(EraseError::Ambiguous(id.to_owned())),
    };
    let subject = format!("{}/{}", row.origin, row.report_id);
    if row.purged_at_ms.is_some() {
        return Err(EraseError::AlreadyPurged(subject));
    }
    let mut tx = store.begin().await?;
    if !tx.purge_report(row.seq, now_ms).await? {
        return Err(EraseError::Pending(subject));
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
    if let Err(e) = store.checkpoint_wal().await {
        tracing::warn!(error = %e, "WAL checkpoint after an erasure failed; the next one will do it");
    }
    Ok((subject, seq))
}
