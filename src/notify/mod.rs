//! Notifications out: the edge that delivers the alerts `node::alerts`
//! queued (`alert_deliveries`), to webhooks (`webhook.rs`: JSON signed
//! with HMAC-SHA256) and by email (`email.rs`: SMTP with STARTTLS). It
//! claims due notifications with a lease, sends each, and records the
//! outcome: delivered (never sent again) or failed (tried again after a
//! backoff that doubles up to `[alerts] retry_max_secs`, forever, also
//! across restarts). A notification may reach a receiver twice only if
//! the node dies between the receiver's answer and the commit; the body's
//! `id` (also the `Idempotency-Key` header) lets a receiver drop it.

pub mod email;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use crate::config::alerts::{Alerts, channel_label};
use crate::node::Core;
use crate::store::{AlertDeliveryRow, StoreError};

/// Notifications claimed at once (sent one after the other).
const BATCH: i64 = 4;
/// How long one send may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a claim lasts: longer than the whole batch's sends, so that
/// no other replica takes a notification over while it may be on the wire.
const LEASE: Duration = Duration::from_secs(30 * (BATCH as u64 + 1));
/// How often the queue is looked at when nothing woke the notifier.
const POLL: Duration = Duration::from_secs(1);

/// Delivers notifications until shutdown.
pub async fn run(core: Arc<Core>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    if core.config.alerts.routes.is_empty() {
        return;
    }
    // One process per SQLite database: claims left by a killed run are
    // its own. (On PostgreSQL another replica's claims lapse with their
    // lease.)
    if core.store.backend() == "sqlite"
        && let Err(e) = core.store.release_alert_claims().await
    {
        tracing::error!(error = %e, "notifications: cannot release old claims");
    }
    loop {
        match deliver_due(&core).await {
            Ok(0) => {}
            Ok(_) => continue,
            Err(e) => tracing::error!(error = %e, "notifications: cannot read the queue"),
        }
        tokio::select! {
            _ = core.alert_wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Claims and sends what is due; returns how many were claimed.
pub async fn deliver_due(core: &Core) -> Result<usize, StoreError> {
    let now = Core::now_ms();
    match core.store.next_alert_due().await? {
        Some(due) if due <= now => {}
        _ => return Ok(0),
    }
    let mut tx = core.store.begin().await?;
    let rows = tx
        .claim_alert_deliveries(now, now + LEASE.as_millis() as i64, BATCH)
        .await?;
    tx.commit().await?;
    let n = rows.len();
    for row in rows {
        let outcome = tokio::time::timeout(SEND_TIMEOUT, send(&core.config.alerts, &row))
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        settle(core, &row, outcome).await?;
    }
    Ok(n)
}

/// Sends one notification on its channel.
async fn send(alerts: &Alerts, row: &AlertDeliveryRow) -> Result<(), String> {
    if let Some(name) = row.channel.strip_prefix("webhook:") {
        let hook = alerts
            .webhooks
            .get(name)
            .ok_or_else(|| format!("no webhook {name} configured any more"))?;
        webhook::post(hook, &row.alert_id, &row.body).await
    } else if let Some(to) = row.channel.strip_prefix("email:") {
        let smtp = alerts
            .smtp
            .as_ref()
            .ok_or("no [alerts.smtp] configured any more")?;
        let to: Vec<&str> = to.split(',').collect();
        email::send(smtp, &to, &row.body).await
    } else {
        Err("unknown channel".into())
    }
}

/// Records the outcome of one attempt.
async fn settle(
    core: &Core,
    row: &AlertDeliveryRow,
    outcome: Result<(), String>,
) -> Result<(), StoreError> {
    let now = Core::now_ms();
    let mut tx = core.store.begin().await?;
    match &outcome {
        Ok(()) => tx.alert_delivered(row.id, now).await?,
        Err(e) => {
            let wait = backoff(&core.config.alerts, row.attempts);
            tx.alert_failed(row.id, e, now + wait.as_millis() as i64)
                .await?;
        }
    }
    tx.commit().await?;
    match outcome {
        Ok(()) => {
            tracing::info!(channel = %channel_label(&row.channel), alert_id = %row.alert_id, "notification delivered")
        }
        Err(e) => tracing::warn!(channel = %channel_label(&row.channel), alert_id = %row.alert_id,
            attempts = row.attempts + 1, error = %e, "notification not delivered; will retry"),
    }
    Ok(())
}

/// The wait after the `attempts`+1-th failure: the initial wait doubled
/// per earlier failure, at most the maximum.
pub fn backoff(alerts: &Alerts, attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.clamp(0, 30)).unwrap_or(30);
    alerts
        .retry_initial
        .saturating_mul(1u32 << doublings.min(20))
        .min(alerts.retry_max)
}
