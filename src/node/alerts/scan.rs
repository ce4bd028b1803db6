//! The conditions only time reveals, looked for every
//! `[alerts] scan_interval_secs`: cases not assessed or not taken down in
//! time (per category), peers silent too long, a certificate, CRL, the
//! signed directory or this node's signing key expiring soon, and the
//! database's disk filling. Each is raised once per condition
//! (`super::raise`).

use std::sync::Arc;

use crate::config::alerts::Thresholds;
use crate::store::StoreError;

use super::{CaseRef, Event, case_name, hours, raise};
use crate::node::Core;

/// Cases read per scan and event: more wait for the next scan.
const CASES_PER_SCAN: i64 = 200;

/// The statuses of a case judged illegal and not yet taken down.
const AWAITING_TAKEDOWN: &[&str] = &[
    "illegal-baseline",
    "illegal-national",
    "notice-sent",
    "still-online",
];

/// Runs the scans until shutdown.
pub async fn run_schedule(core: Arc<Core>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut disk_low = false;
    loop {
        if let Err(e) = scan(&core, &mut disk_low).await {
            tracing::error!(error = %e, "alert scan failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(core.config.alerts.scan_interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One scan of every timed condition.
pub async fn scan(core: &Core, disk_low: &mut bool) -> Result<(), StoreError> {
    let a = &core.config.alerts;
    let now = Core::now_ms();
    overdue(core, "case_unassessed", &["received"], &a.unassessed, now).await?;
    overdue(core, "no_takedown", AWAITING_TAKEDOWN, &a.takedown, now).await?;
    for event in silent_peers(core, now) {
        raise(core, &event).await?;
    }
    for event in expiring(core, now) {
        raise(core, &event).await?;
    }
    if let Some(event) = disk(core, disk_low, now) {
        raise(core, &event).await?;
    }
    Ok(())
}

/// Raises `event` for each case in `statuses` older than its category's
/// threshold.
async fn overdue(
    core: &Core,
    event: &'static str,
    statuses: &[&str],
    limits: &Thresholds,
    now: i64,
) -> Result<(), StoreError> {
    let before = now - limits.shortest().as_millis() as i64;
    let cases = core
        .store
        .cases_waiting(statuses, before, event, CASES_PER_SCAN)
        .await?;
    for c in cases {
        let limit = limits.of(&c.category);
        if now - c.stored_at_ms < limit.as_millis() as i64 {
            continue;
        }
        let name = case_name(&c.origin, &c.report_id);
        let age = hours(c.stored_at_ms, now);
        let what = if event == "case_unassessed" {
            "not assessed"
        } else {
            "not taken down"
        };
        let e = Event::new(
            event,
            format!("{event}:{}", c.seq),
            format!("Case {name} ({}) {what} after {age} h", c.category),
            serde_json::json!({
                "case_id": name,
                "category": c.category,
                "country": c.hosting_country,
                "status": c.status,
                "age_hours": age,
                "threshold_hours": limit.as_secs_f64() / 3600.0,
            }),
        )
        .about(CaseRef {
            seq: c.seq,
            origin: c.origin,
            report_id: c.report_id,
        });
        raise(core, &e).await?;
    }
    Ok(())
}

/// Active peers not seen answering for longer than the threshold: one
/// event per silence (the key names when the peer was last seen, or the
/// node's start when never).
fn silent_peers(core: &Core, now: i64) -> Vec<Event> {
    let limit = core.config.alerts.peer_unreachable.as_millis() as i64;
    let directory = core.directory();
    let mut out = Vec::new();
    for peer in core.peers.keys() {
        if !directory.node(&peer).is_some_and(|n| n.active) {
            continue;
        }
        let Some(link) = core.peers.get(&peer) else {
            continue;
        };
        let status = link.status();
        let since = status.last_seen_ms.unwrap_or(core.started_at_ms);
        if now - since <= limit {
            continue;
        }
        let silent = hours(since, now);
        out.push(Event::new(
            "peer_unreachable",
            format!("peer_unreachable:{peer}:{since}"),
            format!("Peer {peer} unreachable for {silent} h"),
            serde_json::json!({
                "peer": peer.as_str(),
                "last_seen": status.last_seen_ms.map(crate::report::view::rfc3339),
                "silent_hours": silent,
                "last_error": crate::node::bounded(&status.last_error),
            }),
        ));
    }
    out
}

/// Material that expires within the threshold: this node's TLS
/// certificate, the CA's, each CRL (its next update), the signed
/// directory and this node's signing key in it.
fn expiring(core: &Core, now: i64) -> Vec<Event> {
    use crate::crypto::tls::{certificate_not_after_ms, crl_next_update_ms};
    let tls = &core.config.tls;
    let mut found: Vec<(String, i64)> = Vec::new();
    for (what, path) in [("node certificate", &tls.cert), ("CA certificate", &tls.ca)] {
        if let Some(ms) = certificate_not_after_ms(path) {
            found.push((what.to_owned(), ms));
        }
    }
    for path in &tls.crls {
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
        if let (Some(ms), Some(file)) = (crl_next_update_ms(path), file) {
            found.push((format!("CRL {file}"), ms));
        }
    }
    let directory = core.directory();
    if let Some(info) = &directory.signed {
        found.push(("signed directory".to_owned(), info.expires_at_ms));
    }
    let key_id = core.key().key_id().to_owned();
    let mine = directory.node(&core.me).and_then(|n| {
        n.keys
            .iter()
            .find(|k| k.id == key_id)
            .and_then(|k| k.not_after_ms)
    });
    if let Some(ms) = mine {
        found.push((format!("signing key {key_id}"), ms));
    }
    let limit = core.config.alerts.expiry.as_millis() as i64;
    found
        .into_iter()
        .filter(|(_, at)| *at - now <= limit)
        .map(|(what, at)| {
            let days = ((at - now) as f64 / 8_640_000.0).round() / 10.0;
            let title = if at <= now {
                format!("The {what} has expired")
            } else {
                format!("The {what} expires in {days} days")
            };
            Event::new(
                "expiry",
                format!("expiry:{what}:{at}"),
                title,
                serde_json::json!({
                    "what": what,
                    "expires_at": crate::report::view::rfc3339(at),
                    "days_left": days,
                }),
            )
        })
        .collect()
}

/// Free space on the SQLite database's file system below the threshold:
/// raised when it falls below, again only after it recovered.
fn disk(core: &Core, low: &mut bool, now: i64) -> Option<Event> {
    let path = core.config.database.sqlite_path()?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty())?;
    let free = free_percent(dir)?;
    let threshold = core.config.alerts.disk_min_free_percent;
    if free >= threshold {
        *low = false;
        return None;
    }
    if std::mem::replace(low, true) {
        return None;
    }
    let free = (free * 10.0).round() / 10.0;
    Some(Event::new(
        "disk_low",
        format!("disk_low:{now}"),
        format!("The database's disk has {free}% free (threshold {threshold}%)"),
        serde_json::json!({ "free_percent": free, "threshold_percent": threshold }),
    ))
}

/// The percentage of the file system holding `dir` that is free for an
/// unprivileged writer.
pub fn free_percent(dir: &std::path::Path) -> Option<f64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    if s.f_blocks == 0 {
        return None;
    }
    Some(s.f_bavail as f64 * 100.0 / s.f_blocks as f64)
}
