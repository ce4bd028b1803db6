//! The `alerts` and `alert_deliveries` tables (migrations 0017, 0021),
//! written once for both backends: an event raised once per condition, and
//! its notifications, claimed with a lease, retried, kept once delivered or
//! given up, and deleted with their event by retention.
//! `node::alerts` decides what is raised; `notify` sends.

use super::*;

/// An event to store (`Tx::insert_alert`).
pub struct NewAlert<'a> {
    pub id: &'a str,
    pub dedup_key: &'a str,
    pub event: &'a str,
    pub severity: &'a str,
    pub summary: &'a str,
    pub raised_at_ms: i64,
}

/// One notification of one event to one channel.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AlertDeliveryRow {
    pub id: i64,
    pub alert_id: String,
    pub channel: String,
    pub body: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_ms: i64,
    pub delivered_at_ms: Option<i64>,
    /// When retention gave it up (never tried again, body dropped).
    pub given_up_at_ms: Option<i64>,
}

/// The notifications of one channel waiting to go out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WaitingNotifications {
    /// `webhook:NAME` or `email:a@x,b@y`.
    pub channel: String,
    pub waiting: i64,
    /// When the event of the oldest was raised.
    pub oldest_ms: i64,
}

/// What one alert retention pass did (`Tx::expire_alerts`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiredAlerts {
    /// The events of the notifications given up (each once).
    pub given_up: Vec<String>,
    /// How many notifications were given up.
    pub notifications_given_up: u64,
    /// The events deleted with their notifications.
    pub deleted: Vec<String>,
}

/// A case worked here, for the overdue scans.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CaseAge {
    pub seq: i64,
    pub origin: String,
    pub report_id: String,
    pub category: String,
    pub status: String,
    pub hosting_country: Option<String>,
    pub stored_at_ms: i64,
}

macro_rules! delivery_columns {
    () => {
        "id, alert_id, channel, body, attempts, last_error, next_attempt_ms, delivered_at_ms, \
         given_up_at_ms"
    };
}

impl Tx {
    /// Stores an event; false (and nothing stored) when one with the same
    /// `dedup_key` was raised before.
    pub async fn insert_alert(&mut self, a: &NewAlert<'_>) -> Result<bool, StoreError> {
        let n = sql!(
            self.conn(),
            execute(
                "INSERT INTO alerts (id, dedup_key, event, severity, summary, raised_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedup_key) DO NOTHING",
                a.id,
                a.dedup_key,
                a.event,
                a.severity,
                a.summary,
                a.raised_at_ms,
            )
        );
        Ok(n == 1)
    }

    /// Queues the event's notification to one channel, due at `due_ms`.
    pub async fn insert_alert_delivery(
        &mut self,
        alert_id: &str,
        channel: &str,
        body: &str,
        due_ms: i64,
    ) -> Result<(), StoreError> {
        sql!(
            self.conn(),
            execute(
                "INSERT INTO alert_deliveries (alert_id, channel, body, next_attempt_ms)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (alert_id, channel) DO NOTHING",
                alert_id,
                channel,
                body,
                due_ms,
            )
        );
        Ok(())
    }

    /// Claims up to `limit` notifications due at `now_ms` and not claimed
    /// (or whose claim lapsed), until `until_ms`.
    pub async fn claim_alert_deliveries(
        &mut self,
        now_ms: i64,
        until_ms: i64,
        limit: i64,
    ) -> Result<Vec<AlertDeliveryRow>, StoreError> {
        Ok(sql!(
            self.conn(),
            fetch_all(
                concat!(
                    "UPDATE alert_deliveries SET lease_until_ms = $2
                     WHERE id IN (SELECT id FROM alert_deliveries
                                  WHERE delivered_at_ms IS NULL AND given_up_at_ms IS NULL
                                    AND next_attempt_ms <= $1 AND lease_until_ms <= $1
                                  ORDER BY id LIMIT $3)
                       AND delivered_at_ms IS NULL AND given_up_at_ms IS NULL
                       AND lease_until_ms <= $1
                     RETURNING ",
                    delivery_columns!()
                ),
                now_ms,
                until_ms,
                limit,
            )
        ))
    }

    /// The notification reached its channel: it is never sent again, and
    /// its body (which holds URLs when its route opted in) is dropped.
    pub async fn alert_delivered(&mut self, id: i64, now_ms: i64) -> Result<(), StoreError> {
        sql!(
            self.conn(),
            execute(
                "UPDATE alert_deliveries SET delivered_at_ms = $2, attempts = attempts + 1,
                        lease_until_ms = 0, last_error = NULL, body = ''
                 WHERE id = $1",
                id,
                now_ms,
            )
        );
        Ok(())
    }

    /// An attempt failed: recorded, and tried again at `next_ms`.
    pub async fn alert_failed(
        &mut self,
        id: i64,
        error: &str,
        next_ms: i64,
    ) -> Result<(), StoreError> {
        sql!(
            self.conn(),
            execute(
                "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = $2,
                        next_attempt_ms = $3, lease_until_ms = 0
                 WHERE id = $1 AND delivered_at_ms IS NULL AND given_up_at_ms IS NULL",
                id,
                error,
                next_ms,
            )
        );
        Ok(())
    }
}

impl Tx {
    /// Alert retention at `now_ms`: the notifications of events raised at
    /// or before `give_up_before_ms` that are still not delivered (and not
    /// on the wire: claimed) are given up, their bodies dropped; then up
    /// to `limit` events raised at or before `delete_before_ms` whose
    /// notifications are all settled are deleted with them. `None`: that
    /// step is off.
    pub async fn expire_alerts(
        &mut self,
        give_up_before_ms: Option<i64>,
        delete_before_ms: Option<i64>,
        now_ms: i64,
        limit: i64,
    ) -> Result<ExpiredAlerts, StoreError> {
        let mut out = ExpiredAlerts::default();
        if let Some(cutoff) = give_up_before_ms {
            let ids: Vec<String> = sql!(
                self.conn(),
                scalar.fetch_all(
                    "UPDATE alert_deliveries SET given_up_at_ms = $2, body = '', lease_until_ms = 0
                     WHERE delivered_at_ms IS NULL AND given_up_at_ms IS NULL
                       AND lease_until_ms <= $2
                       AND alert_id IN (SELECT id FROM alerts WHERE raised_at_ms <= $1)
                     RETURNING alert_id",
                    cutoff,
                    now_ms,
                )
            );
            out.notifications_given_up = ids.len() as u64;
            out.given_up = ids;
            out.given_up.sort();
            out.given_up.dedup();
        }
        if let Some(cutoff) = delete_before_ms {
            let ids: Vec<String> = sql!(
                self.conn(),
                scalar.fetch_all(
                    "SELECT a.id FROM alerts a WHERE a.raised_at_ms <= $1
                       AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = a.id
                                       AND d.delivered_at_ms IS NULL AND d.given_up_at_ms IS NULL)
                     ORDER BY a.raised_at_ms, a.id LIMIT $2",
                    cutoff,
                    limit,
                )
            );
            for table in ["alert_deliveries WHERE alert_id", "alerts WHERE id"] {
                if ids.is_empty() {
                    break;
                }
                built!(self.conn(), |q| {
                    q.push(format!("DELETE FROM {table} IN ("));
                    let mut list = q.separated(", ");
                    for id in &ids {
                        list.push_bind(id.as_str());
                    }
                    q.push(")");
                } => execute);
            }
            out.deleted = ids;
        }
        Ok(out)
    }
}

/// An event as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AlertRow {
    pub id: String,
    pub dedup_key: String,
    pub event: String,
    pub severity: String,
    pub summary: String,
    pub raised_at_ms: i64,
}

impl Store {
    /// Every event raised, oldest first.
    pub async fn alerts(&self) -> Result<Vec<AlertRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT id, dedup_key, event, severity, summary, raised_at_ms
                 FROM alerts ORDER BY raised_at_ms, id"
            )
        ))
    }

    /// Every notification, oldest first (for `alertrelay status`-like
    /// views and tests).
    pub async fn alert_deliveries(&self) -> Result<Vec<AlertDeliveryRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM alert_deliveries ORDER BY id"
            ))
        ))
    }

    /// The latest audit entry of `kind` whose detail names this replica
    /// (`"replica":"ID"`): a replica's own starts and stops among those of
    /// the other replicas of its node.
    pub async fn last_audit_of_replica(
        &self,
        kind: &str,
        replica: &str,
    ) -> Result<Option<AuditRow>, StoreError> {
        let id = serde_json::to_string(replica).unwrap_or_default();
        let escaped = id
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = format!("%\"replica\":{escaped}%");
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_optional(
                "SELECT seq, at_ms, kind, actor, subject, detail FROM audit_log
                 WHERE kind = $1 AND detail LIKE $2 ESCAPE '\\' ORDER BY seq DESC LIMIT 1",
                kind,
                pattern,
            )
        ))
    }

    /// Ends every claim on notifications (a SQLite node starting: its
    /// one process is the only claimer, and a killed run's claims would
    /// otherwise hold them back until they lapse).
    pub async fn release_alert_claims(&self) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let n = sql!(
            tx.conn(),
            execute(
                "UPDATE alert_deliveries SET lease_until_ms = 0
                 WHERE delivered_at_ms IS NULL AND lease_until_ms > 0"
            )
        );
        tx.commit().await?;
        Ok(n)
    }

    /// The soonest time a notification not yet delivered is due.
    pub async fn next_alert_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            scalar.fetch_one(
                "SELECT MIN(CASE WHEN lease_until_ms > next_attempt_ms
                                 THEN lease_until_ms ELSE next_attempt_ms END)
                 FROM alert_deliveries WHERE delivered_at_ms IS NULL AND given_up_at_ms IS NULL"
            )
        ))
    }

    /// Per channel: the notifications neither delivered nor given up, and
    /// when the event of the oldest was raised.
    pub async fn waiting_notifications(&self) -> Result<Vec<WaitingNotifications>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(
                "SELECT d.channel, COUNT(*) AS waiting, MIN(a.raised_at_ms) AS oldest_ms
                 FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id
                 WHERE d.delivered_at_ms IS NULL AND d.given_up_at_ms IS NULL
                 GROUP BY d.channel ORDER BY d.channel"
            )
        ))
    }

    /// Cases worked here in one of `statuses`, stored here at or before
    /// `before_ms`, for which no event `event` was raised yet (its dedup
    /// key is `event:SEQ`), oldest first, at most `limit`.
    pub async fn cases_waiting(
        &self,
        statuses: &[&str],
        before_ms: i64,
        event: &str,
        limit: i64,
    ) -> Result<Vec<CaseAge>, StoreError> {
        let prefix = format!("{event}:");
        Ok(built!(self.reader().await?.conn(), |q| {
            q.push(
                "SELECT r.seq, r.origin, r.report_id, r.category, r.status, r.hosting_country,
                        r.stored_at_ms
                 FROM reports r
                 WHERE r.relay = 0 AND r.joined_to IS NULL
                   AND r.direction IN ('incoming', 'local') AND r.stored_at_ms <= ",
            );
            q.push_bind(before_ms);
            q.push(" AND r.status IN (");
            {
                let mut list = q.separated(", ");
                for s in statuses {
                    list.push_bind(*s);
                }
            }
            q.push(") AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.dedup_key = ");
            q.push_bind(prefix);
            q.push(" || CAST(r.seq AS TEXT)) ORDER BY r.stored_at_ms LIMIT ");
            q.push_bind(limit);
        } => fetch_all))
    }
}
