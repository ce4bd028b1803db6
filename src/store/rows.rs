//! The rows the store reads and writes: what the node passes in
//! (`New*`), what it gets back (`*Row`), and the constants that give
//! columns their meaning.

use super::log::Hash;

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
    /// Empty when `envelope` carries the payload (see
    /// `wire::stored::StoredPayload`).
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
    /// The case family it belongs to (one report per hosting country),
    /// as its origin signed it into the route.
    #[sqlx(default)]
    pub family: Option<String>,
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
    /// What goes in the `payload` column: the payload's bytes, or nothing
    /// when `envelope` carries exactly them (the caller decides:
    /// `wire::stored::payload_column`). Stored as given.
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
    /// Its case family (`RouteDecision.family`).
    pub family: Option<&'a str>,
}

/// A new report's rows as its transaction stored them: what its case view
/// is built from without reading them back (`node::cases::view_just_stored`).
#[derive(Debug, Clone)]
pub struct JustStored {
    pub row: ReportRow,
    pub deliveries: Vec<DeliveryRow>,
    pub history: Vec<HistoryRow>,
}

impl NewReport<'_> {
    /// The row this insert stores, as `reports` reads it back: what a
    /// caller that just committed it can show without reading it again.
    pub fn as_stored(&self, seq: i64) -> ReportRow {
        ReportRow {
            seq,
            report_id: self.report_id.to_owned(),
            origin: self.origin.to_owned(),
            direction: self.direction.to_owned(),
            category: self.category.to_owned(),
            priority: self.priority.to_owned(),
            status: self.status.to_owned(),
            hosting_country: self.hosting_country.map(str::to_owned),
            route: self.route.to_owned(),
            stored_payload: self.payload.to_vec(),
            payload_digest: self.payload_digest.to_vec(),
            envelope: self.envelope.to_vec(),
            received_from: self.received_from.map(str::to_owned),
            receipt: self.receipt.map(<[u8]>::to_vec),
            created_at_ms: self.created_at_ms,
            stored_at_ms: self.now_ms,
            updated_at_ms: self.now_ms,
            relay: i64::from(self.relay),
            correction: None,
            joined_to: self.joined_to,
            purged_at_ms: None,
            family: self.family.map(str::to_owned),
        }
    }
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

impl NewDelivery<'_> {
    /// The `next_hop` column: none when the hop is the destination itself.
    pub fn stored_next_hop(&self) -> Option<&str> {
        self.next_hop.filter(|h| *h != self.destination)
    }

    /// The delivery this insert stores, as `Store::deliveries` reads it
    /// back before any attempt.
    pub fn as_stored(&self) -> DeliveryRow {
        DeliveryRow {
            destination: self.destination.to_owned(),
            state: QUEUED.to_owned(),
            receipt: None,
            reason: None,
            delivered_at_ms: None,
            attempts: 0,
            last_error: None,
            next_hop: self.stored_next_hop().map(str::to_owned),
            relayed_at_ms: None,
            via: None,
            handed_off_by: None,
        }
    }
}

/// A new delivery's state.
pub const QUEUED: &str = "queued";

/// One unsigned entry of a case's history (`Tx::insert_statuses`).
pub struct NewStatus<'a> {
    pub seq: i64,
    pub update_id: String,
    pub status: &'a str,
    pub reason: &'a str,
    pub actor: &'a str,
}

impl NewStatus<'_> {
    /// The entry this insert stores at `at_ms`, as `Store::history` reads
    /// it back.
    pub fn as_stored(&self, at_ms: i64) -> HistoryRow {
        HistoryRow {
            status: self.status.to_owned(),
            reason: self.reason.to_owned(),
            actor: self.actor.to_owned(),
            signer: None,
            at_ms,
        }
    }
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
    /// Only the reports of this case family.
    pub family: Option<&'a str>,
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

/// Audit leaf hashes read at a time (`Store::fold_leaves`): ~2 MiB of
/// hashes, a few more of rows.
pub const LEAF_PAGE: u64 = 65_536;

/// A 32-byte hash from a BLOB column; a short or long blob (a damaged row)
/// yields a hash that matches nothing.
pub(super) fn to_hash(bytes: &[u8]) -> Hash {
    let mut h = [0u8; 32];
    if bytes.len() == 32 {
        h.copy_from_slice(bytes);
    } else {
        h[0] = 0xff;
    }
    h
}

/// A purged report's route: only its kind and destinations stay.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

/// A personal account (`users`): see `node::users` for what each state
/// and value means.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub name: String,
    pub role: String,
    pub state: String,
    pub password_hash: Option<String>,
    pub totp_secret: Option<String>,
    pub totp_last_step: i64,
    pub enrol_code_hash: Option<String>,
    pub enrol_expires_ms: i64,
    pub failures: i64,
    pub locked_until_ms: i64,
    pub created_at_ms: i64,
    pub created_by: String,
    pub last_login_ms: Option<i64>,
    /// The person's console language (a catalogue tag); none: the browser's.
    pub language: Option<String>,
}

/// A pending close that waits for a second person (`close_proposals`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProposalRow {
    pub report_seq: i64,
    pub status: String,
    pub from_status: String,
    pub reason: String,
    pub proposed_by: String,
    pub proposed_at_ms: i64,
}
