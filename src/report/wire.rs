//! The signed payload codec. Builds and signs report payloads, hops,
//! receipts and status updates, and opens them again: signature first (over
//! the exact received bytes, under the purpose's domain tag), then decode,
//! then check the decoded message is byte-for-byte canonical (so no unknown
//! fields ride along inside a signed payload), then check who claims what.

use prost::Message;
use sha2::{Digest, Sha256};

use crate::crypto::signing::{NodeKey, Purpose, verify};
use crate::directory::Directory;
use crate::identity::NodeId;
use crate::pb;
use crate::report::InvalidInput;
use crate::report::validate::shown;

/// Reports may pass through at most this many relays.
pub const MAX_HOPS: usize = 8;

/// Why something from a peer was refused. `api::status` maps each to a gRPC
/// code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("signer {0} is not in the directory")]
    UnknownSigner(String),
    #[error("signer {0} is suspended from the federation")]
    SuspendedSigner(String),
    #[error("key {key_id} of {signer} is unknown, expired or revoked")]
    UnknownKey { signer: String, key_id: String },
    #[error("{0} signature does not verify")]
    BadSignature(&'static str),
    #[error("{0} payload is not valid protobuf")]
    Malformed(&'static str),
    #[error("{0} payload is not canonical (unknown or duplicated fields)")]
    NonCanonical(&'static str),
    #[error("the payload says {claimed}, but the connection is from {actual}")]
    IdentityMismatch { claimed: String, actual: String },
    #[error("hop chain is broken: {0}")]
    BadHopChain(String),
    #[error("more than {MAX_HOPS} hops")]
    TooManyHops,
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
}

pub fn digest(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

/// Signs `msg` for `purpose` as `signer`.
pub fn sign<M: Message>(key: &NodeKey, signer: &NodeId, purpose: Purpose, msg: &M) -> pb::Signed {
    let payload = msg.encode_to_vec();
    let signature = key.sign(purpose, &payload).to_vec();
    pb::Signed {
        payload,
        signer: signer.to_string(),
        key_id: key.key_id().to_owned(),
        signature,
    }
}

/// Verifies a signed message against the directory and decodes it. The
/// signature is checked before anything is decoded.
pub fn open<M: Message + Default>(
    signed: &pb::Signed,
    purpose: Purpose,
    what: &'static str,
    directory: &Directory,
    now_ms: i64,
) -> Result<(NodeId, M), WireError> {
    let signer =
        NodeId::new(&signed.signer).map_err(|_| WireError::UnknownSigner(signed.signer.clone()))?;
    let node = directory
        .node(&signer)
        .ok_or_else(|| WireError::UnknownSigner(signed.signer.clone()))?;
    if !node.active {
        return Err(WireError::SuspendedSigner(signer.to_string()));
    }
    let key = node
        .key(&signed.key_id, now_ms)
        .ok_or_else(|| WireError::UnknownKey {
            signer: signer.to_string(),
            key_id: shown(&signed.key_id),
        })?;
    verify(key, purpose, &signed.payload, &signed.signature)
        .map_err(|_| WireError::BadSignature(what))?;
    let msg = M::decode(signed.payload.as_slice()).map_err(|_| WireError::Malformed(what))?;
    // prost drops unknown fields silently: a re-encoding that differs means
    // the signed bytes carry something we would not see.
    if msg.encoded_len() != signed.payload.len() || msg.encode_to_vec() != signed.payload {
        return Err(WireError::NonCanonical(what));
    }
    Ok((signer, msg))
}

/// A report envelope that passed every check.
#[derive(Debug, Clone)]
pub struct OpenedReport {
    pub origin: NodeId,
    pub payload: pb::ReportPayload,
    /// The exact signed payload bytes.
    pub payload_bytes: Vec<u8>,
    pub digest: [u8; 32],
    /// Every node named in the hop chain (the relays), oldest first.
    pub relays: Vec<NodeId>,
}

/// Opens an envelope received over a connection authenticated as `sender`
/// and addressed to `me`.
pub fn open_envelope(
    env: &pb::Envelope,
    sender: &NodeId,
    me: &NodeId,
    directory: &Directory,
    now_ms: i64,
) -> Result<OpenedReport, WireError> {
    let signed = env.report.as_ref().ok_or(WireError::Missing("report"))?;
    if env.hops.len() > MAX_HOPS {
        return Err(WireError::TooManyHops);
    }
    let (origin, payload): (NodeId, pb::ReportPayload) =
        open(signed, Purpose::Report, "report", directory, now_ms)?;
    if payload.origin != origin.as_str() {
        return Err(WireError::IdentityMismatch {
            claimed: shown(&payload.origin),
            actual: origin.to_string(),
        });
    }
    let digest = digest(&signed.payload);
    let mut prev = origin.clone();
    let mut relays = Vec::with_capacity(env.hops.len());
    for (i, h) in env.hops.iter().enumerate() {
        let (by, hop): (NodeId, pb::Hop) = open(h, Purpose::Hop, "hop", directory, now_ms)?;
        let next_expected = env
            .hops
            .get(i + 1)
            .map(|n| n.signer.as_str())
            .unwrap_or(me.as_str());
        if hop.by != by.as_str()
            || hop.from != prev.as_str()
            || hop.to != next_expected
            || hop.report_id != payload.report_id
            || hop.origin != payload.origin
            || hop.report_digest != digest
        {
            return Err(WireError::BadHopChain(format!("hop {i} by {by}")));
        }
        prev = by.clone();
        relays.push(by);
    }
    // The node at the other end of the TLS connection must be the last
    // signer: the origin itself, or the last relay.
    if &prev != sender {
        return Err(WireError::IdentityMismatch {
            claimed: prev.to_string(),
            actual: sender.to_string(),
        });
    }
    super::validate::report_id(&payload.report_id)?;
    super::validate::urls(&payload.urls)?;
    crate::report::Category::parse(&payload.category)
        .map_err(|_| InvalidInput::new("bad-category", "category", shown(&payload.category)))?;
    let hashes: Vec<crate::report::MediaHash> = payload
        .hashes
        .iter()
        .map(|h| crate::report::MediaHash {
            algorithm: h.algorithm.clone(),
            value: h.value.clone(),
        })
        .collect();
    super::validate::peer_fields(&payload.notes, &hashes)?;
    check_evidence_text(payload.hosting.as_ref(), payload.route.as_ref())?;
    Ok(OpenedReport {
        origin,
        payload,
        payload_bytes: signed.payload.clone(),
        digest,
        relays,
    })
}

/// Every text field of the routing evidence a peer sends is one clean line
/// of bounded length, and every list is bounded: it is stored and shown to
/// analysts.
fn check_evidence_text(
    hosting: Option<&pb::HostingEvidence>,
    route: Option<&pb::RouteDecision>,
) -> Result<(), InvalidInput> {
    use super::validate::single_line;
    const SHORT: usize = 1024;
    const LONG: usize = 4096;
    let many = |field: &str, n: usize, max: usize| {
        if n > max {
            Err(InvalidInput::new(
                "too-many",
                field,
                format!("at most {max}, got {n}"),
            ))
        } else {
            Ok(())
        }
    };
    if let Some(h) = hosting {
        for (f, v) in [
            ("hosting.ip", &h.ip),
            ("hosting.country", &h.country),
            ("hosting.ip_source", &h.ip_source),
            ("hosting.dataset", &h.dataset),
            ("hosting.dataset_date", &h.dataset_date),
            ("hosting.method", &h.method),
            ("hosting.org", &h.org),
            ("hosting.network_dataset", &h.network_dataset),
            ("hosting.network_dataset_date", &h.network_dataset_date),
            ("hosting.ambiguity", &h.ambiguity),
        ] {
            single_line(f, v, SHORT)?;
        }
        many("hosting.countries", h.countries.len(), 64)?;
        many("hosting.flags", h.flags.len(), 32)?;
        many("hosting.addresses", h.addresses.len(), 256)?;
        for v in h.countries.iter().chain(&h.flags) {
            single_line("hosting", v, SHORT)?;
        }
        for a in &h.addresses {
            for v in [
                &a.ip,
                &a.ip_source,
                &a.host,
                &a.country,
                &a.dataset,
                &a.dataset_date,
                &a.method,
            ] {
                single_line("hosting.addresses", v, SHORT)?;
            }
            many("hosting.addresses.answers", a.answers.len(), 16)?;
            for g in &a.answers {
                for v in [
                    &g.source,
                    &g.dataset_date,
                    &g.method,
                    &g.raw_code,
                    &g.country,
                ] {
                    single_line("hosting.addresses.answers", v, SHORT)?;
                }
            }
        }
    }
    if let Some(r) = route {
        single_line("route.kind", &r.kind, SHORT)?;
        single_line("route.reason", &r.reason, LONG)?;
        many("route.destinations", r.destinations.len(), 16)?;
        many("route.steps", r.steps.len(), 128)?;
        for d in &r.destinations {
            single_line("route.destinations", d, SHORT)?;
        }
        for st in &r.steps {
            single_line("route.steps", st, LONG)?;
        }
    }
    Ok(())
}

/// Builds the receipt a receiver signs for a report.
#[allow(clippy::too_many_arguments)]
pub fn receipt(
    key: &NodeKey,
    receiver: &NodeId,
    report_id: &str,
    origin: &str,
    report_digest: &[u8],
    outcome: pb::ReceiptOutcome,
    reason_code: &str,
    reason: &str,
    now_ms: i64,
) -> pb::Signed {
    let r = pb::Receipt {
        report_id: report_id.to_owned(),
        origin: origin.to_owned(),
        report_digest: report_digest.to_vec(),
        receiver: receiver.to_string(),
        outcome: outcome as i32,
        reason_code: reason_code.to_owned(),
        reason: reason.to_owned(),
        at_ms: now_ms,
    };
    sign(key, receiver, Purpose::Receipt, &r)
}

/// Opens a receipt from `receiver` for the report with `report_digest`.
pub fn open_receipt(
    signed: &pb::Signed,
    receiver: &NodeId,
    report_id: &str,
    report_digest: &[u8],
    directory: &Directory,
    now_ms: i64,
) -> Result<pb::Receipt, WireError> {
    let (signer, r): (NodeId, pb::Receipt) =
        open(signed, Purpose::Receipt, "receipt", directory, now_ms)?;
    if &signer != receiver || r.receiver != receiver.as_str() {
        return Err(WireError::IdentityMismatch {
            claimed: shown(&r.receiver),
            actual: receiver.to_string(),
        });
    }
    if r.report_id != report_id || r.report_digest != report_digest {
        return Err(WireError::Invalid(InvalidInput::new(
            "receipt-mismatch",
            "receipt",
            "receipt is for another report",
        )));
    }
    // The receiver's reason is shown to the origin's analysts.
    super::validate::single_line("receipt.reason", &r.reason, 4096)?;
    super::validate::single_line("receipt.reason_code", &r.reason_code, 64)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{RawDirectory, RawKey, RawNode};

    fn directory(nodes: &[(&str, &NodeKey)]) -> Directory {
        let raw = RawDirectory {
            federation: "test".into(),
            nodes: nodes
                .iter()
                .map(|(id, key)| RawNode {
                    id: (*id).into(),
                    name: String::new(),
                    countries: vec![],
                    endpoint: "https://127.0.0.1:1".into(),
                    categories: vec![],
                    active: true,
                    keys: vec![RawKey {
                        id: key.key_id().into(),
                        public_key: crate::crypto::signing::encode_public_key(&key.verifying_key()),
                        not_before: None,
                        not_after: None,
                        revoked: false,
                    }],
                    national_categories: vec![],
                })
                .collect(),
        };
        Directory::from_raw(raw, "test").unwrap()
    }

    fn report(origin: &str) -> pb::ReportPayload {
        pb::ReportPayload {
            report_id: "r1".into(),
            origin: origin.into(),
            created_at_ms: 1,
            urls: vec!["http://example.com/".into()],
            category: "csam".into(),
            ..Default::default()
        }
    }

    #[test]
    fn envelopes_open_only_when_signed_by_the_claimed_sender() {
        let (ka, kb) = (NodeKey::generate(), NodeKey::generate());
        let dir = directory(&[("AA", &ka), ("BB", &kb)]);
        let (a, b) = (NodeId::new("AA").unwrap(), NodeId::new("BB").unwrap());
        let env = pb::Envelope {
            report: Some(sign(&ka, &a, Purpose::Report, &report("AA"))),
            hops: vec![],
        };
        let opened = open_envelope(&env, &a, &b, &dir, 0).unwrap();
        assert_eq!(opened.origin, a);
        // Sent over B's connection while claiming to be from A.
        assert!(matches!(
            open_envelope(&env, &b, &b, &dir, 0),
            Err(WireError::IdentityMismatch { .. })
        ));
        // Signed by B's key but claiming A as signer.
        let mut forged = sign(&kb, &b, Purpose::Report, &report("AA"));
        forged.signer = "AA".into();
        forged.key_id = ka.key_id().into();
        let env2 = pb::Envelope {
            report: Some(forged),
            hops: vec![],
        };
        assert_eq!(
            open_envelope(&env2, &a, &b, &dir, 0).unwrap_err(),
            WireError::BadSignature("report")
        );
    }

    #[test]
    fn a_receipt_signature_never_passes_as_a_report_signature() {
        let ka = NodeKey::generate();
        let dir = directory(&[("AA", &ka)]);
        let a = NodeId::new("AA").unwrap();
        let mut s = sign(&ka, &a, Purpose::Receipt, &report("AA"));
        assert!(matches!(
            open::<pb::ReportPayload>(&s, Purpose::Report, "report", &dir, 0),
            Err(WireError::BadSignature(_))
        ));
        s.payload[3] ^= 1;
        assert!(matches!(
            open::<pb::ReportPayload>(&s, Purpose::Receipt, "receipt", &dir, 0),
            Err(WireError::BadSignature(_))
        ));
    }

    #[test]
    fn unknown_fields_inside_a_signed_payload_are_refused() {
        let ka = NodeKey::generate();
        let dir = directory(&[("AA", &ka)]);
        let mut payload = report("AA").encode_to_vec();
        // Field 99, varint 1: unknown to this schema.
        payload.extend_from_slice(&[0x98, 0x06, 0x01]);
        let signed = pb::Signed {
            signature: ka.sign(Purpose::Report, &payload).to_vec(),
            payload,
            signer: "AA".into(),
            key_id: ka.key_id().into(),
        };
        assert_eq!(
            open::<pb::ReportPayload>(&signed, Purpose::Report, "report", &dir, 0).unwrap_err(),
            WireError::NonCanonical("report")
        );
    }
}
