//! The law-enforcement export of one case (`alertrelay cases export CASE
//! --for-law-enforcement`) and its offline check (`cases verify-export`).
//!
//! The bundle is JSON: the exact `body` bytes (a JSON document, kept as a
//! string so they are verified before they are read), the exporting node's
//! Ed25519 signature over `"alertrelay/v1/case-export\0" || body`, and the
//! public keys involved. The body holds the case as the node shows it, the
//! origin's signed report, the signed receipts and status updates, and every
//! audit entry about the case with its RFC 9162 inclusion proof against a
//! checkpoint the node signed for the export (the export's own audit entry
//! included). No IO.

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::audit::merkle::{self, Hash};
use crate::audit::note::{self, Checkpoint, SignedNote};
use crate::audit::proof::{ExportedEntry, ProofError};
use crate::audit::trust::Anchor;
use crate::audit::{leaf_hash, log_origin};
use crate::crypto::signing::{Purpose, verify};
use crate::pb;
use crate::report::validate::shown;
use crate::report::view::CaseView;

pub const FORMAT: &str = "alertrelay-case-export/v1";

/// A public key named in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleKey {
    pub node: String,
    pub key_id: String,
    pub public_key: String,
}

/// What is signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportBody {
    pub format: String,
    pub federation: String,
    /// The node that exported (and signed) it.
    pub exporter: String,
    /// `law-enforcement`.
    pub purpose: String,
    pub exported_at_ms: i64,
    /// The operator who exported it (from the certificate).
    pub exported_by: String,
    pub case: CaseView,
    /// The origin's signed report (an encoded `alertrelay.v1.Signed`),
    /// base64; absent once retention purged it.
    pub report: Option<String>,
    /// Signed receipts (encoded `Signed`), base64.
    pub receipts: Vec<String>,
    /// Signed status updates (encoded `Signed`), base64.
    pub status_updates: Vec<String>,
    pub audit: ExportAudit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportAudit {
    /// The log's checkpoint origin, `<federation>/hotline/<ID>/audit`.
    pub log: String,
    /// The signed checkpoint (C2SP signed note) every proof is against.
    pub checkpoint: String,
    pub tree_size: u64,
    pub entries: Vec<ProvedEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvedEntry {
    pub entry: ExportedEntry,
    pub leaf_index: u64,
    /// Hex hashes.
    pub inclusion_proof: Vec<String>,
}

/// The bundle as written to the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportBundle {
    pub format: String,
    pub exporter: String,
    pub key_id: String,
    /// The signed body: a JSON document, as text, exactly as signed.
    pub body: String,
    /// base64 Ed25519 signature over the domain tag and `body`.
    pub signature: String,
    pub keys: Vec<BundleKey>,
}

/// What a verified bundle establishes.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub case: String,
    pub status: String,
    pub exporter: String,
    pub exported_by: String,
    pub exported_at_ms: i64,
    /// `NODE (key KEYID)` that signed the bundle.
    pub signed_by: String,
    /// The node whose signature over the report verified (its origin), or
    /// empty when the report was purged.
    pub report_signed_by: String,
    pub receipts: usize,
    pub status_updates: usize,
    pub referrals: usize,
    /// Audit entries proved included in the log.
    pub audit_entries: usize,
    pub tree_size: u64,
    pub root: String,
    /// What vouched for the keys.
    pub trusted: String,
}

fn b64d(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

pub fn b64e(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Signs `body` as `exporter` and wraps it with the keys.
pub fn seal(
    key: &crate::crypto::signing::NodeKey,
    exporter: &str,
    body: &ExportBody,
    keys: Vec<BundleKey>,
) -> Result<ExportBundle, serde_json::Error> {
    let text = serde_json::to_string(body)?;
    let signature = key.sign(Purpose::CaseExport, text.as_bytes());
    Ok(ExportBundle {
        format: FORMAT.into(),
        exporter: exporter.to_owned(),
        key_id: key.key_id().to_owned(),
        body: text,
        signature: b64e(&signature),
        keys,
    })
}

/// Checks a bundle offline: the exporter's signature first, then every
/// signed object and every inclusion proof inside. Every key must be one
/// the verifier's `anchor` vouches for, at the time it signed (never a
/// key merely carried in the bundle).
pub fn verify_export(b: &ExportBundle, anchor: &Anchor) -> Result<ExportReport, ProofError> {
    if b.format != FORMAT {
        return Err(malformed("not an alertrelay case export"));
    }
    let keys = Keys {
        keys: &b.keys,
        anchor,
    };
    let (body, exporter_key) = open(b, &keys)?;
    let subject = crate::report::view::subject(&body.case);
    let report_signed_by = check_report(&body, &keys)?;
    check_receipts(&body, &keys)?;
    check_history(&body, &keys)?;
    let root = check_audit(&body, &exporter_key, &subject)?;
    Ok(ExportReport {
        case: subject,
        status: body.case.status.clone(),
        exporter: body.exporter.clone(),
        exported_by: body.exported_by.clone(),
        exported_at_ms: body.exported_at_ms,
        signed_by: format!("{} (key {})", b.exporter, b.key_id),
        report_signed_by,
        receipts: body.receipts.len(),
        status_updates: body.status_updates.len(),
        referrals: body.case.referrals.len(),
        audit_entries: body.audit.entries.len(),
        tree_size: body.audit.tree_size,
        root: hex::encode(root),
        trusted: anchor.describe(),
    })
}

fn malformed(m: &str) -> ProofError {
    ProofError::Malformed(m.to_owned())
}

/// The keys a bundle's signatures are checked with: only those the
/// verifier's anchor vouches for.
struct Keys<'a> {
    keys: &'a [BundleKey],
    anchor: &'a Anchor,
}

impl Keys<'_> {
    /// `node`'s key `key_id`, valid at `at_ms` (the signing time), as the
    /// anchor vouches for it.
    fn of(&self, node: &str, key_id: &str, at_ms: i64) -> Option<VerifyingKey> {
        let carried = self
            .keys
            .iter()
            .map(|k| (k.node.as_str(), k.key_id.as_str(), k.public_key.as_str()));
        self.anchor.key(node, key_id, at_ms, carried)
    }

    /// The key a signed object names, valid at `at_ms`, or why not.
    fn for_signed(
        &self,
        s: &pb::Signed,
        at_ms: i64,
        what: &str,
    ) -> Result<VerifyingKey, ProofError> {
        self.of(&s.signer, &s.key_id, at_ms).ok_or_else(|| {
            ProofError::Invalid(format!(
                "{what}: key {} of {} is not trusted at the time it signed (unknown to the trust anchor, revoked, or outside its validity)",
                shown(&s.key_id),
                shown(&s.signer)
            ))
        })
    }
}

/// Verifies the exporter's signature over the body and only then reads
/// the body, which must name the same format and exporter; the key must
/// have been valid when the body says it was exported. Returns the body
/// and the exporter's key (its checkpoint is checked with it too).
fn open(b: &ExportBundle, keys: &Keys) -> Result<(ExportBody, VerifyingKey), ProofError> {
    let signature = b64d(&b.signature).ok_or_else(|| malformed("signature is not base64"))?;
    // The body's time is known only once its signature verified: the
    // anchor's key under that id checks the signature, and its window is
    // checked against the signed time below.
    let carried = keys
        .keys
        .iter()
        .map(|k| (k.node.as_str(), k.key_id.as_str(), k.public_key.as_str()));
    let candidate = keys
        .anchor
        .candidate(&b.exporter, &b.key_id, carried)
        .filter(|k| verify(k, Purpose::CaseExport, b.body.as_bytes(), &signature).is_ok())
        .ok_or_else(|| {
            ProofError::Invalid(format!(
                "the bundle's signature by {} does not verify with its key {} as the trust anchor knows it (it was altered, or re-signed with another key)",
                shown(&b.exporter),
                shown(&b.key_id)
            ))
        })?;
    // Only now is the body read.
    let body: ExportBody =
        serde_json::from_str(&b.body).map_err(|_| malformed("the signed body is not readable"))?;
    if body.format != FORMAT || body.exporter != b.exporter {
        return Err(ProofError::Invalid(
            "the signed body names another format or exporter".into(),
        ));
    }
    let trusted = keys.of(&b.exporter, &b.key_id, body.exported_at_ms);
    if trusted != Some(candidate) {
        return Err(ProofError::Invalid(format!(
            "the bundle is signed with key {} of {}, which the trust anchor does not vouch for at the time of the export",
            shown(&b.key_id),
            shown(&b.exporter)
        )));
    }
    Ok((body, candidate))
}

/// A signed object of the body (base64 of an encoded `Signed`), decoded;
/// `what` names it in errors. Its signature is checked by `check`, which
/// knows its purpose and time.
fn signed_obj(s: &str, what: &str) -> Result<pb::Signed, ProofError> {
    let bytes = b64d(s).ok_or_else(|| ProofError::Malformed(format!("{what} is not base64")))?;
    <pb::Signed as prost::Message>::decode(bytes.as_slice())
        .map_err(|_| ProofError::Malformed(format!("{what} is not a signed message")))
}

/// Checks a signed object's signature for `purpose` with the key its
/// signer had at `at_ms`. The time comes from the decoded payload, which
/// is trusted only once the signature verifies with that very key.
fn check_signed(
    s: &pb::Signed,
    purpose: Purpose,
    at_ms: impl Fn(&[u8]) -> Option<i64>,
    keys: &Keys,
    what: &str,
) -> Result<(), ProofError> {
    let at = at_ms(&s.payload)
        .ok_or_else(|| ProofError::Malformed(format!("{what} does not decode")))?;
    let key = keys.for_signed(s, at, what)?;
    crate::wire::verify_signed(&key, purpose, s, None).map_err(|_| {
        ProofError::Invalid(format!(
            "{what}: the signature of {} does not verify",
            shown(&s.signer)
        ))
    })
}

/// The origin's signed report, if not purged: it must be this case's, by
/// its origin, and the case must show the URLs it signed. Returns who
/// signed it (empty when purged).
fn check_report(body: &ExportBody, keys: &Keys) -> Result<String, ProofError> {
    let Some(r) = &body.report else {
        return Ok(String::new());
    };
    let s = signed_obj(r, "the report")?;
    let decode = |b: &[u8]| <pb::ReportPayload as prost::Message>::decode(b).ok();
    check_signed(
        &s,
        Purpose::Report,
        |b| decode(b).map(|p| p.created_at_ms),
        keys,
        "the report",
    )?;
    let p = decode(&s.payload).ok_or_else(|| malformed("the signed report does not decode"))?;
    if p.report_id != body.case.id || p.origin != body.case.origin || s.signer != p.origin {
        return Err(ProofError::Invalid(
            "the signed report is not this case's".into(),
        ));
    }
    if body.case.purged_at.is_none() && p.urls != body.case.urls {
        return Err(ProofError::Invalid(
            "the case's URLs differ from those the origin signed".into(),
        ));
    }
    Ok(s.signer)
}

/// The signed receipts (numbered from 1 in errors): each verifies and is
/// about this case's report.
fn check_receipts(body: &ExportBody, keys: &Keys) -> Result<(), ProofError> {
    let decode = |b: &[u8]| <pb::Receipt as prost::Message>::decode(b).ok();
    for (i, item) in body.receipts.iter().enumerate() {
        let what = format!("receipt {}", i + 1);
        let s = signed_obj(item, &what)?;
        check_signed(
            &s,
            Purpose::Receipt,
            |b| decode(b).map(|r| r.at_ms),
            keys,
            &what,
        )?;
        let r = decode(&s.payload).ok_or_else(|| malformed("a receipt does not decode"))?;
        about_case(&r.report_id, &r.origin, &body.case, &what)?;
    }
    Ok(())
}

/// The signed history (numbered from 1 in errors): status updates by the
/// hotlines working the case, and the origin's amendments (retractions
/// and corrections), each checked as what it is — the domain tag its
/// signature verifies under says which — and about this case's report.
fn check_history(body: &ExportBody, keys: &Keys) -> Result<(), ProofError> {
    let status = |b: &[u8]| <pb::StatusUpdate as prost::Message>::decode(b).ok();
    let amendment = |b: &[u8]| <pb::Amendment as prost::Message>::decode(b).ok();
    for (i, item) in body.status_updates.iter().enumerate() {
        let what = format!("status update {}", i + 1);
        let s = signed_obj(item, &what)?;
        let as_status = check_signed(
            &s,
            Purpose::Status,
            |b| status(b).map(|u| u.at_ms),
            keys,
            &what,
        );
        let (report_id, origin) = match as_status {
            Ok(()) => status(&s.payload).map(|u| (u.report_id, u.origin)),
            Err(status_error) => {
                let what = format!("amendment {}", i + 1);
                check_signed(
                    &s,
                    Purpose::Amendment,
                    |b| amendment(b).map(|a| a.at_ms),
                    keys,
                    &what,
                )
                .map_err(|_| status_error)?;
                amendment(&s.payload).map(|a| (a.report_id, a.origin))
            }
        }
        .ok_or_else(|| ProofError::Malformed(format!("{what} does not decode")))?;
        about_case(&report_id, &origin, &body.case, &what)?;
    }
    Ok(())
}

fn about_case(
    report_id: &str,
    origin: &str,
    case: &CaseView,
    what: &str,
) -> Result<(), ProofError> {
    if report_id != case.id || origin != case.origin {
        return Err(ProofError::Invalid(format!(
            "{what} is about another report"
        )));
    }
    Ok(())
}

/// The audit entries: the log must be the exporter's, its checkpoint
/// signed by the exporter, and each entry about the case and included in
/// the log at that checkpoint. Returns the checkpoint's root.
fn check_audit(
    body: &ExportBody,
    exporter_key: &VerifyingKey,
    subject: &str,
) -> Result<Hash, ProofError> {
    let a = &body.audit;
    if a.log != log_origin(&body.federation, &body.exporter) {
        return Err(ProofError::Invalid(
            "the audit log is not the exporter's".into(),
        ));
    }
    let signed =
        SignedNote::parse(&a.checkpoint).map_err(|e| ProofError::Malformed(e.to_string()))?;
    note::verify_note(&signed, &a.log, exporter_key)
        .map_err(|_| ProofError::Invalid("the checkpoint is not signed by the exporter".into()))?;
    let cp =
        Checkpoint::parse_body(&signed.text).map_err(|e| ProofError::Malformed(e.to_string()))?;
    if cp.origin != a.log || cp.size != a.tree_size {
        return Err(ProofError::Invalid(
            "the checkpoint is for another log or size".into(),
        ));
    }
    if a.entries.is_empty() {
        return Err(ProofError::Invalid("no audit entry about the case".into()));
    }
    for p in &a.entries {
        check_entry(p, subject, a.tree_size, &cp.root)?;
    }
    Ok(cp.root)
}

/// One audit entry: about `subject`, numbered as its leaf, and proved
/// included in the tree of `tree_size` leaves with `root`.
fn check_entry(
    p: &ProvedEntry,
    subject: &str,
    tree_size: u64,
    root: &Hash,
) -> Result<(), ProofError> {
    let e = &p.entry;
    if e.subject != subject {
        return Err(ProofError::Invalid(format!(
            "audit entry {} is about another case",
            e.seq
        )));
    }
    if u64::try_from(e.seq - 1).ok() != Some(p.leaf_index) {
        return Err(ProofError::Invalid(format!(
            "audit entry {}: its number does not match its leaf index",
            e.seq
        )));
    }
    let leaf = leaf_hash(e.seq, e.at_ms, &e.kind, &e.actor, &e.subject, &e.detail);
    let proof: Vec<Hash> = p
        .inclusion_proof
        .iter()
        .map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|v| <Hash>::try_from(v.as_slice()).ok())
                .ok_or_else(|| malformed("a proof hash is not 32 bytes of hex"))
        })
        .collect::<Result<_, _>>()?;
    merkle::verify_inclusion(&leaf, p.leaf_index, tree_size, &proof, root)
        .map_err(|e2| ProofError::Invalid(format!("audit entry {}: inclusion: {e2}", e.seq)))
}
