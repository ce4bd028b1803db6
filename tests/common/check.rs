//! What must hold of a federation after faults: every report an origin
//! stored delivered exactly once, with the receiver's original receipt
//! at the origin, nothing else arrived anywhere, one audit entry per step,
//! and every audit log complete and verifying (`check_delivery`); and the
//! figures a fault run prints (`Figures`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use alertrelay::config::NodeConfig;
use alertrelay::identity::NodeId;
use alertrelay::pb;
use prost::Message;

use super::Federation;

/// One line of `alertrelay audit export`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub kind: String,
    #[serde(default)]
    pub actor: String,
    pub subject: String,
    pub detail: serde_json::Value,
}

impl AuditEntry {
    fn detail_str(&self, field: &str) -> &str {
        self.detail
            .get(field)
            .and_then(|v| v.as_str())
            .unwrap_or("")
    }
}

/// A report whose submission was answered with its id.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub origin: usize,
    pub id: String,
}

/// What a run did and found; printed by every test.
#[derive(Debug, Default)]
pub struct Figures {
    pub test: &'static str,
    pub seed: Option<u64>,
    pub random_kills: u32,
    /// Windows in which a link lost replies or was partitioned.
    pub link_faults: u32,
    /// Deaths at each crash point.
    pub crashes: BTreeMap<String, u32>,
    pub submits: u64,
    pub accepted: usize,
    /// Submits that failed (the node died or was down): not accepted.
    pub failed_submits: u64,
    /// Stored by the origin although the submit failed (it died between
    /// the commit and the answer): must be delivered all the same.
    pub stored_unacknowledged: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// `report.repeat` entries at the receivers: a retry of a report the
    /// receiver already had, answered with the original receipt.
    pub retransmissions: usize,
    /// From the last restart (or the end of the load, if later) to every
    /// delivery settled.
    pub recovery: Option<Duration>,
    pub elapsed: Duration,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kills = self.random_kills + self.crashes.values().sum::<u32>();
        write!(f, "FAULT FIGURES [{}]", self.test)?;
        if let Some(seed) = self.seed {
            write!(f, " seed={seed}")?;
        }
        write!(f, " kills={kills} (sigkill={}", self.random_kills)?;
        for (point, n) in &self.crashes {
            write!(f, ", {point}={n}")?;
        }
        write!(
            f,
            ") link-faults={} submits={} accepted={} failed-submits={} stored-unacknowledged={} \
             delivered={} lost={} duplicated={} retransmissions={}",
            self.link_faults,
            self.submits,
            self.accepted,
            self.failed_submits,
            self.stored_unacknowledged,
            self.delivered,
            self.lost,
            self.duplicated,
            self.retransmissions,
        )?;
        if let Some(r) = self.recovery {
            write!(f, " recovery={}ms", r.as_millis())?;
        }
        write!(f, " elapsed={}ms", self.elapsed.as_millis())
    }
}

/// Everything the harness reads from one node at the end.
struct Snapshot {
    outgoing: Vec<pb::Case>,
    /// (origin, report id) → how many incoming cases.
    incoming: HashMap<(String, String), usize>,
    /// (kind, subject) → entries.
    audit: HashMap<(String, String), Vec<AuditEntry>>,
}

impl Snapshot {
    fn entries(&self, kind: &str, subject: &str) -> &[AuditEntry] {
        self.audit
            .get(&(kind.to_owned(), subject.to_owned()))
            .map_or(&[], Vec::as_slice)
    }
}

/// Checks, with every node running and settled, that every report an
/// origin stored (every accepted one, and any stored whose submit failed)
/// is delivered exactly once with the receiver's original receipt stored
/// at the origin, that nothing else arrived anywhere, that each step has
/// exactly one audit entry, and that every audit log verifies. Fills in
/// `figures` and returns the violations found.
pub async fn check_delivery(
    fed: &Federation,
    accepted: &[Accepted],
    figures: &mut Figures,
) -> Vec<String> {
    let mut violations = Vec::new();
    let mut snaps = Vec::new();
    for i in 0..fed.len() {
        let outgoing = fed.cases(i, "outgoing").await.expect("list outgoing");
        let mut incoming = HashMap::new();
        for c in fed.cases(i, "incoming").await.expect("list incoming") {
            *incoming
                .entry((c.origin.clone(), c.id.clone()))
                .or_insert(0) += 1;
        }
        let mut audit: HashMap<(String, String), Vec<AuditEntry>> = HashMap::new();
        for e in fed.audit_export(i).await {
            audit
                .entry((e.kind.clone(), e.subject.clone()))
                .or_default()
                .push(e);
        }
        snaps.push(Snapshot {
            outgoing,
            incoming,
            audit,
        });
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);

    // Accepted reports: each must be stored at its origin.
    let mut accepted_ids = std::collections::HashSet::new();
    for a in accepted {
        accepted_ids.insert((a.origin, a.id.clone()));
        if !snaps[a.origin].outgoing.iter().any(|c| c.id == a.id) {
            figures.lost += 1;
            violations.push(format!(
                "LOST: {} accepted report {} but does not list it",
                fed.id(a.origin),
                a.id
            ));
        }
    }
    figures.accepted = accepted.len();

    // Every report an origin stored: delivered once, original receipt kept.
    let mut expected_incoming: HashMap<usize, HashMap<(String, String), ()>> = HashMap::new();
    for (o, snap) in snaps.iter().enumerate() {
        let origin = fed.id(o).to_string();
        for case in &snap.outgoing {
            let subject = format!("{origin}/{}", case.id);
            let was_accepted = accepted_ids.contains(&(o, case.id.clone()));
            if !was_accepted {
                figures.stored_unacknowledged += 1;
            }
            let submitted = snap.entries("report.submitted", &subject);
            if submitted.len() != 1 {
                violations.push(format!(
                    "{subject}: {} report.submitted audit entries at the origin, want 1",
                    submitted.len()
                ));
            }
            let digest = submitted
                .first()
                .map(|e| e.detail_str("payload_sha256").to_owned())
                .unwrap_or_default();
            let mut ok = !case.deliveries.is_empty();
            let mut duplicated = false;
            for d in &case.deliveries {
                let Some(r) = fed
                    .configs
                    .iter()
                    .position(|c| c.node_id.as_str() == d.destination)
                else {
                    violations.push(format!("{subject}: unknown destination {}", d.destination));
                    ok = false;
                    continue;
                };
                expected_incoming
                    .entry(r)
                    .or_default()
                    .insert((origin.clone(), case.id.clone()), ());
                let at_receiver = snaps[r]
                    .incoming
                    .get(&(origin.clone(), case.id.clone()))
                    .copied()
                    .unwrap_or(0);
                if at_receiver == 0 {
                    ok = false;
                    violations.push(format!("LOST: {subject} is not at {}", d.destination));
                } else if at_receiver > 1 {
                    duplicated = true;
                    violations.push(format!(
                        "DUPLICATED: {subject} is {at_receiver} times at {}",
                        d.destination
                    ));
                }
                if d.state != "delivered" {
                    ok = false;
                    violations.push(format!(
                        "{subject} -> {}: delivery {:?}, want delivered (last error {:?})",
                        d.destination, d.state, d.last_error
                    ));
                }
                let received = snaps[r].entries("report.received", &subject);
                if received.len() != 1 {
                    duplicated |= received.len() > 1;
                    violations.push(format!(
                        "{subject}: {} report.received audit entries at {}, want 1",
                        received.len(),
                        d.destination
                    ));
                }
                figures.retransmissions += snaps[r].entries("report.repeat", &subject).len();
                let receipts = snap.entries("delivery.receipt", &subject);
                if receipts.len() != 1 {
                    violations.push(format!(
                        "{subject}: {} delivery.receipt audit entries at the origin, want 1",
                        receipts.len()
                    ));
                }
                let problem = check_receipt(
                    &d.receipt,
                    fed.id(r).as_str(),
                    &case.id,
                    &digest,
                    &fed.configs[o],
                    now,
                    received.first(),
                    receipts.first(),
                );
                if let Some(problem) = problem {
                    ok = false;
                    violations.push(format!("{subject} -> {}: {problem}", d.destination));
                }
            }
            if duplicated {
                figures.duplicated += 1;
            }
            if ok {
                figures.delivered += 1;
            } else if was_accepted {
                figures.lost += 1;
            }
        }
    }

    // Nothing arrived that its origin does not hold as outgoing to here.
    for (r, snap) in snaps.iter().enumerate() {
        for (key, _) in snap.incoming.iter() {
            let expected = expected_incoming
                .get(&r)
                .is_some_and(|m| m.contains_key(key));
            if !expected {
                violations.push(format!(
                    "{} holds {}/{} which its origin does not list as sent to it",
                    fed.id(r),
                    key.0,
                    key.1
                ));
            }
        }
    }

    // Every audit log verifies: from the file, and against its witnesses.
    for i in 0..fed.len() {
        for offline in [true, false] {
            let (code, text) = fed.audit_verify(i, offline).await;
            if code != 0 {
                violations.push(format!(
                    "audit verify{} of {} exited {code}: {text}",
                    if offline { " --offline" } else { "" },
                    fed.id(i)
                ));
            }
        }
    }
    violations
}

/// Checks a stored receipt: signed by the receiver for this report and
/// this content, and the very receipt the receiver issued when it stored
/// the report (a retry must get the original back).
#[allow(clippy::too_many_arguments)]
fn check_receipt(
    bytes: &[u8],
    receiver: &str,
    report_id: &str,
    digest_hex: &str,
    origin: &NodeConfig,
    now_ms: i64,
    received: Option<&AuditEntry>,
    delivery_entry: Option<&AuditEntry>,
) -> Option<String> {
    if bytes.is_empty() {
        return Some("no receipt stored at the origin".into());
    }
    let Ok(signed) = pb::Signed::decode(bytes) else {
        return Some("stored receipt does not decode".into());
    };
    let receiver_id = NodeId::new(receiver).expect("node id");
    let digest = hex::decode(digest_hex).unwrap_or_default();
    if let Err(e) = alertrelay::wire::open_receipt(
        &signed,
        &receiver_id,
        report_id,
        &digest,
        &origin.directory,
        now_ms,
    ) {
        return Some(format!("stored receipt does not verify: {e}"));
    }
    let signature = hex::encode(&signed.signature);
    if let Some(e) = received
        && e.detail_str("receipt_signature") != signature
    {
        return Some(format!(
            "stored receipt is not the one the receiver issued on storing it ({} != {signature})",
            e.detail_str("receipt_signature")
        ));
    }
    if let Some(e) = delivery_entry
        && e.detail_str("receipt_signature") != signature
    {
        return Some("origin's delivery.receipt audit entry names another receipt".into());
    }
    None
}
