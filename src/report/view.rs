//! How a case looks to its readers: the views the Operator service
//! returns, `--json` prints, the console shows and a law-enforcement export
//! carries, with the time and encoding helpers they share.

use serde::{Deserialize, Serialize};

use super::MediaHash;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryView {
    pub destination: String,
    /// queued, delivered, refused.
    pub state: String,
    pub reason: String,
    pub delivered_at: Option<String>,
    pub attempts: u32,
    pub last_error: String,
    /// The receiver's signed receipt (protobuf `Signed`), base64.
    pub receipt: Option<String>,
    /// The relay the report was handed to, when not the destination.
    #[serde(default)]
    pub next_hop: Option<String>,
    /// When that relay took the report over (its signed receipt).
    #[serde(default)]
    pub relayed_at: Option<String>,
    /// The relays the destination's receipt came back through.
    #[serde(default)]
    pub via: Vec<String>,
    /// The destination that handed the case over to this one.
    #[serde(default)]
    pub handed_off_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryView {
    pub status: String,
    pub reason: String,
    pub actor: String,
    pub signer: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteView {
    pub kind: String,
    pub destinations: Vec<String>,
    pub reason: String,
    pub ip: String,
    pub ip_source: String,
    pub country: String,
    pub dataset: String,
    pub dataset_date: String,
    #[serde(default)]
    pub method: String,
    /// The hosting network: AS number (0 = unknown) and organisation.
    #[serde(default)]
    pub asn: u32,
    #[serde(default)]
    pub org: String,
    #[serde(default)]
    pub network_dataset: String,
    #[serde(default)]
    pub network_dataset_date: String,
    /// Set for anycast/CDN networks.
    #[serde(default)]
    pub ambiguity: String,
    /// Every hosting country named.
    #[serde(default)]
    pub countries: Vec<String>,
    /// e.g. `mixed-script-host`, `confusable-host`, `onion-host`.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Every address considered, with every source's answer.
    #[serde(default)]
    pub addresses: Vec<AddressView>,
    /// The chain of reasoning.
    #[serde(default)]
    pub steps: Vec<String>,
    /// What DNS said about each host name.
    #[serde(default)]
    pub dns: Vec<DnsView>,
    /// The CDN or reverse proxy the content is behind, when the route
    /// follows one.
    #[serde(default)]
    pub behind_cdn: String,
    /// The case family (one report per hosting country, linked), empty
    /// for a report of one country.
    #[serde(default)]
    pub family: String,
}

/// One host name's resolution, as signed into the route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsView {
    pub host: String,
    pub resolver: String,
    pub questions: Vec<DnsQuestionView>,
    /// CNAMEs first.
    pub answers: Vec<DnsAnswerView>,
    /// When it was resolved (RFC 3339, and milliseconds since the epoch).
    pub at: String,
    pub at_ms: i64,
    pub failure: String,
    pub error: String,
    pub dnssec: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsQuestionView {
    /// e.g. `files.example. IN A`.
    pub question: String,
    /// `answered`, `no-data`, `nxdomain`, `servfail`, `timeout`, …
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsAnswerView {
    pub name: String,
    pub kind: String,
    pub value: String,
    pub ttl: u32,
}

/// One address a route considered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddressView {
    pub ip: String,
    pub ip_source: String,
    pub host: String,
    pub used: bool,
    pub country: String,
    pub dataset: String,
    pub dataset_date: String,
    pub method: String,
    pub answers: Vec<SourceAnswerView>,
    pub sources_disagree: bool,
    pub asn: u32,
    pub org: String,
    pub network_dataset: String,
    pub network_dataset_date: String,
    pub ambiguity: String,
}

/// One geo source's answer for an address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceAnswerView {
    pub source: String,
    pub dataset_date: String,
    pub method: String,
    pub raw_code: String,
    pub country: String,
}

/// A case as operators see it (and as `--json` prints it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseView {
    pub id: String,
    pub origin: String,
    pub direction: String,
    pub destination: String,
    pub destinations: Vec<String>,
    pub status: String,
    pub category: String,
    pub priority: String,
    pub urls: Vec<String>,
    pub hosting_country: Option<String>,
    pub created_at: String,
    pub created_at_ms: i64,
    pub received_from: Option<String>,
    pub notes: String,
    pub hashes: Vec<MediaHashView>,
    pub route: Option<RouteView>,
    pub deliveries: Vec<DeliveryView>,
    pub history: Vec<HistoryView>,
    /// Other reports of the same content that joined this case
    /// (ORIGIN/REPORT-ID).
    #[serde(default)]
    pub also_reported_by: Vec<String>,
    /// The case (ORIGIN/REPORT-ID) this report joined, if it did.
    #[serde(default)]
    pub joined_to: Option<String>,
    /// Law-enforcement referrals recorded here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referrals: Vec<ReferralView>,
    /// When retention purged its URLs, notes and evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_at: Option<String>,
    /// `national` when the origin classified it so; empty for baseline.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub classification: String,
    /// Its case family (content hosted in several countries, one report
    /// per destination), as the origin signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The other reports of the family held here (ORIGIN/REPORT-ID), with
    /// where each went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub family_reports: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferralView {
    pub agency: String,
    pub reference: String,
    pub referred_at: String,
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaHashView {
    pub algorithm: String,
    pub value: String,
}

impl From<&MediaHash> for MediaHashView {
    fn from(h: &MediaHash) -> Self {
        MediaHashView {
            algorithm: h.algorithm.clone(),
            value: h.value.clone(),
        }
    }
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// How a case is named in audit entries and exports: `ORIGIN/REPORT-ID`.
pub fn subject(case: &CaseView) -> String {
    format!("{}/{}", case.origin, case.id)
}

/// Control and bidirectional-override characters shown escaped (`\u{202e}`):
/// text from other hotlines and reporters, made inert for terminals and
/// pages alike, so right-to-left tricks show as what they are.
pub fn visible(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}');
            if c.is_control() || bidi {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}
