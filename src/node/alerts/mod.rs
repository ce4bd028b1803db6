//! Alerts: the node raises an event where it notices the condition (a
//! report arriving, a witness refusing a checkpoint, a scan finding an
//! overdue case), stores it once per condition with its audit entry, and
//! queues one notification per channel its `[[alerts.route]]` rules
//! choose, in the same transaction. `notify` (an edge) delivers them.
//!
//! A notification carries the case id, category, country, age and a link
//! to the console, never a reported URL or host name, unless its route
//! opted in (`include_urls`).

pub mod events;
pub mod scan;

use prost::Message;

use crate::audit;
use crate::config::alerts::{Severity, channel_label, severity_of};
use crate::pb;
use crate::store::{NewAlert, StoreError, Tx};
use crate::wire::stored::StoredPayload;

use super::Core;

/// One occurrence of a condition worth telling someone about.
#[derive(Debug, Clone)]
pub struct Event {
    /// One of `config::alerts::EVENTS`.
    pub name: &'static str,
    /// The condition, so it is raised once: `case_unassessed:SEQ`,
    /// `peer_unreachable:PEER:SINCE`, …
    pub key: String,
    /// One line for a person, with no URL or host name in it.
    pub title: String,
    /// The facts (a JSON object): case id, category, country, age, peer…
    pub facts: serde_json::Value,
    /// The case it is about, if any.
    pub case: Option<CaseRef>,
}

/// A case an event is about.
#[derive(Debug, Clone)]
pub struct CaseRef {
    pub seq: i64,
    pub origin: String,
    pub report_id: String,
}

impl Event {
    pub fn new(name: &'static str, key: String, title: String, facts: serde_json::Value) -> Self {
        Event {
            name,
            key,
            title,
            facts,
            case: None,
        }
    }

    pub fn about(mut self, case: CaseRef) -> Self {
        self.case = Some(case);
        self
    }

    pub fn severity(&self) -> Severity {
        severity_of(self.name).unwrap_or(Severity::Warning)
    }
}

/// Raises `event` in a transaction of its own. Returns whether it is new
/// (false: the same condition was raised before).
pub async fn raise(core: &Core, event: &Event) -> Result<bool, StoreError> {
    let mut tx = core.store.begin().await?;
    let new = raise_in(core, &mut tx, event).await?;
    tx.commit().await?;
    if new {
        core.alert_wake.notify_one();
    }
    Ok(new)
}

/// Raises `event` in the caller's transaction: stored once per condition,
/// audited, and queued for each channel its routes choose. The notifier
/// finds the queued notifications once the caller commits.
pub async fn raise_in(core: &Core, tx: &mut Tx, event: &Event) -> Result<bool, StoreError> {
    let now = Core::now_ms();
    let severity = event.severity();
    let id = uuid::Uuid::now_v7().to_string();
    let summary = serde_json::json!({ "title": event.title, "facts": event.facts }).to_string();
    let new = tx
        .insert_alert(&NewAlert {
            id: &id,
            dedup_key: &event.key,
            event: event.name,
            severity: severity.as_str(),
            summary: &summary,
            raised_at_ms: now,
        })
        .await?;
    if !new {
        return Ok(false);
    }
    let routes = core.config.alerts.routes_for(event.name, severity);
    tx.audit(
        &audit::Entry::new(
            "alert.raised",
            format!("node:{}", core.me),
            event.name,
            serde_json::json!({
                "alert_id": id,
                "severity": severity.as_str(),
                "channels": routes.iter().map(|r| r.channel.key()).collect::<Vec<_>>(),
            }),
        ),
        now,
    )
    .await?;
    let mut urls: Option<Vec<String>> = None;
    for route in routes {
        let with_urls = if route.include_urls {
            if urls.is_none() {
                urls = Some(case_urls(tx, event).await?);
            }
            urls.as_deref()
        } else {
            None
        };
        let body = body(core, &id, event, now, with_urls);
        tx.insert_alert_delivery(&id, &route.channel.key(), &body, now)
            .await?;
    }
    tracing::warn!(event = event.name, severity = severity.as_str(), alert_id = %id, "ALERT: {}", event.title);
    Ok(true)
}

/// The reported URLs of the event's case (only for a route that opted in).
async fn case_urls(tx: &mut Tx, event: &Event) -> Result<Vec<String>, StoreError> {
    let Some(case) = &event.case else {
        return Ok(Vec::new());
    };
    let Some(row) = tx.report_by_seq(case.seq).await? else {
        return Ok(Vec::new());
    };
    Ok(pb::ReportPayload::decode(row.payload())
        .map(|p| p.urls)
        .unwrap_or_default())
}

/// The notification as sent: JSON, the same for every channel (email
/// renders it as text). `id` is the idempotency key.
pub fn body(core: &Core, id: &str, event: &Event, now_ms: i64, urls: Option<&[String]>) -> String {
    let mut b = serde_json::json!({
        "id": id,
        "event": event.name,
        "severity": event.severity().as_str(),
        "node": core.me.as_str(),
        "raised_at": crate::report::view::rfc3339(now_ms),
        "title": event.title,
        "facts": event.facts,
    });
    if let (Some(base), Some(case)) = (&core.config.alerts.console_url, &event.case) {
        b["console_link"] = format!(
            "{base}/case/{}/{}",
            url_path_segment(&case.origin),
            url_path_segment(&case.report_id)
        )
        .into();
    }
    if let Some(urls) = urls {
        b["urls"] = urls.into();
    }
    b.to_string()
}

fn url_path_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The notifications of one channel not yet delivered (nor given up).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Waiting {
    /// `webhook:NAME`, or `email` for every e-mail list.
    pub channel: String,
    pub waiting: u64,
    /// How long ago the event of the oldest was raised (0 when none).
    pub oldest_age_ms: i64,
}

/// Per channel, the notifications waiting to go out: every configured
/// channel (0 when none waits), and any other that still holds some.
pub async fn waiting(core: &Core) -> Result<Vec<Waiting>, StoreError> {
    let rows = core.store.waiting_notifications().await?;
    let now = Core::now_ms();
    let mut by: std::collections::BTreeMap<String, (u64, i64)> = core
        .config
        .alerts
        .routes
        .iter()
        .map(|r| (channel_label(&r.channel.key()).to_owned(), (0, 0)))
        .collect();
    for row in rows {
        let (n, age) = by
            .entry(channel_label(&row.channel).to_owned())
            .or_default();
        *n += u64::try_from(row.waiting).unwrap_or(0);
        *age = (*age).max(now - row.oldest_ms);
    }
    Ok(by
        .into_iter()
        .map(|(channel, (waiting, oldest_age_ms))| Waiting {
            channel,
            waiting,
            oldest_age_ms,
        })
        .collect())
}

/// `origin/report id`, as cases are named everywhere.
pub fn case_name(origin: &str, report_id: &str) -> String {
    format!("{origin}/{report_id}")
}

/// Hours between `from_ms` and `to_ms`, to one decimal.
pub fn hours(from_ms: i64, to_ms: i64) -> f64 {
    ((to_ms - from_ms).max(0) as f64 / 360_000.0).round() / 10.0
}
