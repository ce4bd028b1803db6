//! The signed payloads and their codec: report payloads, envelopes, hops,
//! receipts, status updates, returned items and amendments (this file), the
//! route as signed (`route`), and the law-enforcement export (`bundle`).
//! Builds and signs report payloads, hops,
//! receipts and status updates, and opens them again: signature first (over
//! the exact received bytes, under the purpose's domain tag), then decode,
//! then check the decoded message is byte-for-byte canonical (so no unknown
//! fields ride along inside a signed payload), then check who claims what.

pub mod bundle;
pub mod compat;
pub mod route;
pub mod stored;

use prost::Message;
use sha2::{Digest, Sha256};

use crate::crypto::signing::{NodeKey, Purpose, verify};
use crate::directory::Directory;
use crate::identity::NodeId;
use crate::pb;
use crate::report::InvalidInput;
use crate::report::validate::shown;

pub use crate::report::MAX_HOPS;

/// The protocol this build speaks. Version 1 is every release before the
/// signed directory and the DNS evidence (no `GetDirectory`, no protocol
/// in `NodeInfo`, no `HostingEvidence.dns`, `behind_cdn` or
/// `RouteDecision.family`).
pub const PROTOCOL: u32 = 2;

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
        batch: None,
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
    open_cached(signed, purpose, what, directory, now_ms, None)
}

/// `open`, remembering batch signatures already verified in `cache` (the
/// receipts of one batch share one signature: it is checked once).
pub fn open_cached<M: Message + Default>(
    signed: &pb::Signed,
    purpose: Purpose,
    what: &'static str,
    directory: &Directory,
    now_ms: i64,
    cache: Option<&mut BatchCache>,
) -> Result<(NodeId, M), WireError> {
    let signer =
        NodeId::new(&signed.signer).map_err(|_| WireError::UnknownSigner(shown(&signed.signer)))?;
    let node = directory
        .node(&signer)
        .ok_or_else(|| WireError::UnknownSigner(shown(&signed.signer)))?;
    if !node.active {
        return Err(WireError::SuspendedSigner(signer.to_string()));
    }
    let key = node
        .key(&signed.key_id, now_ms)
        .ok_or_else(|| WireError::UnknownKey {
            signer: signer.to_string(),
            key_id: shown(&signed.key_id),
        })?;
    verify_signed(key, purpose, signed, cache).map_err(|_| WireError::BadSignature(what))?;
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
    /// Every handoff in the hop chain, oldest first: (by, to, reason).
    pub handoffs: Vec<(NodeId, String, String)>,
    /// Whether the last hop is a handoff (to this node).
    pub handed_off_here: bool,
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
    let (origin, payload, digest) = open_by_origin(
        signed,
        env.hops.len(),
        Purpose::Report,
        "report",
        |p: &pb::ReportPayload| &p.origin,
        directory,
        now_ms,
    )?;
    let chain = HopChain {
        purpose: Purpose::Hop,
        first: &origin,
        report_id: &payload.report_id,
        origin: &payload.origin,
        digest: &digest,
        handoffs_allowed: true,
    };
    let hops = chain.check(&env.hops, sender, me, directory, now_ms)?;
    let mut handoffs = Vec::new();
    let mut handed_off_here = false;
    for (i, (by, hop)) in hops.iter().enumerate() {
        if hop.handoff {
            handoffs.push((by.clone(), hop.to.clone(), hop.reason.clone()));
            handed_off_here = i + 1 == hops.len();
        }
    }
    let relays = hops.into_iter().map(|(by, _)| by).collect();
    crate::report::validate::report_id(&payload.report_id)?;
    crate::report::validate::urls(&payload.urls)?;
    crate::report::Category::parse(&payload.category)
        .map_err(|_| InvalidInput::new("bad-category", "category", shown(&payload.category)))?;
    route::priority_from_pb(payload.priority)
        .ok_or_else(|| InvalidInput::new("bad-priority", "priority", "not one of: bulk, urgent"))?;
    let hashes: Vec<crate::report::MediaHash> = payload
        .hashes
        .iter()
        .map(|h| crate::report::MediaHash {
            algorithm: h.algorithm.clone(),
            value: h.value.clone(),
        })
        .collect();
    crate::report::validate::peer_fields(&payload.notes, &hashes)?;
    check_evidence_text(payload.hosting.as_ref(), payload.route.as_ref())?;
    Ok(OpenedReport {
        origin,
        payload,
        payload_bytes: signed.payload.clone(),
        digest,
        relays,
        handoffs,
        handed_off_here,
    })
}

/// Signs this node's hop for a report it passes on: to the next relay or
/// destination, or — `handoff` with a reason — to the hotline it hands the
/// case over to.
#[allow(clippy::too_many_arguments)]
pub fn hop(
    key: &NodeKey,
    by: &NodeId,
    report_id: &str,
    origin: &str,
    report_digest: &[u8],
    from: &str,
    to: &str,
    handoff: Option<&str>,
    now_ms: i64,
) -> pb::Signed {
    let h = pb::Hop {
        report_id: report_id.to_owned(),
        origin: origin.to_owned(),
        report_digest: report_digest.to_vec(),
        from: from.to_owned(),
        by: by.to_string(),
        to: to.to_owned(),
        at_ms: now_ms,
        handoff: handoff.is_some(),
        reason: handoff.unwrap_or_default().to_owned(),
    };
    sign(key, by, Purpose::Hop, &h)
}

/// Adds this node's return hop to a receipt or status update it passes
/// back towards the origin, and returns the extended item.
#[allow(clippy::too_many_arguments)]
pub fn return_hop(
    key: &NodeKey,
    by: &NodeId,
    returned: &pb::Returned,
    report_id: &str,
    origin: &str,
    from: &str,
    to: &str,
    now_ms: i64,
) -> pb::Returned {
    let item = returned
        .item
        .as_ref()
        .map(|s| s.payload.as_slice())
        .unwrap_or_default();
    let h = pb::Hop {
        report_id: report_id.to_owned(),
        origin: origin.to_owned(),
        report_digest: digest(item).to_vec(),
        from: from.to_owned(),
        by: by.to_string(),
        to: to.to_owned(),
        at_ms: now_ms,
        handoff: false,
        reason: String::new(),
    };
    let mut out = returned.clone();
    out.hops.push(sign(key, by, Purpose::ReturnHop, &h));
    out
}

/// What a `Returned` item carries, once opened.
#[derive(Debug, Clone)]
pub enum ReturnedItem {
    Receipt(pb::Receipt),
    Status(pb::StatusUpdate),
}

/// A receipt or status update passed back through relays, every signature
/// checked.
#[derive(Debug, Clone)]
pub struct OpenedReturned {
    /// The node that signed the item (the receiver or case holder).
    pub maker: NodeId,
    pub item: ReturnedItem,
    /// The relays that passed it back, in order (the last is the sender).
    pub via: Vec<NodeId>,
    pub report_id: String,
    pub origin: String,
}

/// Opens a returned item received from `sender`: the item's signature
/// under its own purpose, then the return-hop chain from its maker to the
/// sender, each hop naming the next node and finally `me`.
pub fn open_returned(
    ret: &pb::Returned,
    sender: &NodeId,
    me: &NodeId,
    directory: &Directory,
    now_ms: i64,
) -> Result<OpenedReturned, WireError> {
    let signed = ret
        .item
        .as_ref()
        .ok_or(WireError::Missing("returned item"))?;
    if ret.hops.len() > MAX_HOPS {
        return Err(WireError::TooManyHops);
    }
    let (maker, item, report_id, origin) = match pb::ReturnedKind::try_from(ret.kind) {
        Ok(pb::ReturnedKind::Receipt) => {
            let (maker, r): (NodeId, pb::Receipt) =
                open(signed, Purpose::Receipt, "receipt", directory, now_ms)?;
            if r.receiver != maker.as_str() {
                return Err(WireError::IdentityMismatch {
                    claimed: shown(&r.receiver),
                    actual: maker.to_string(),
                });
            }
            crate::report::validate::single_line("receipt.reason", &r.reason, 4096)?;
            crate::report::validate::single_line("receipt.reason_code", &r.reason_code, 64)?;
            let (id, o) = (r.report_id.clone(), r.origin.clone());
            (maker, ReturnedItem::Receipt(r), id, o)
        }
        Ok(pb::ReturnedKind::Status) => {
            let (maker, u): (NodeId, pb::StatusUpdate) =
                open(signed, Purpose::Status, "status", directory, now_ms)?;
            if u.node != maker.as_str() {
                return Err(WireError::IdentityMismatch {
                    claimed: shown(&u.node),
                    actual: maker.to_string(),
                });
            }
            let (id, o) = (u.report_id.clone(), u.origin.clone());
            (maker, ReturnedItem::Status(u), id, o)
        }
        _ => {
            return Err(WireError::Invalid(InvalidInput::new(
                "bad-kind",
                "returned.kind",
                "a receipt or a status update",
            )));
        }
    };
    crate::report::validate::report_id(&report_id)?;
    let item_digest = digest(&signed.payload);
    let chain = HopChain {
        purpose: Purpose::ReturnHop,
        first: &maker,
        report_id: &report_id,
        origin: &origin,
        digest: &item_digest,
        handoffs_allowed: false,
    };
    let via = chain
        .check(&ret.hops, sender, me, directory, now_ms)?
        .into_iter()
        .map(|(by, _)| by)
        .collect();
    Ok(OpenedReturned {
        maker,
        item,
        via,
        report_id,
        origin,
    })
}

/// Opens what a report's origin signed (a report or an amendment), carried
/// with `hops` hops: at most `MAX_HOPS`, signed by the origin the payload
/// names. Returns the origin, the payload and the digest of its bytes.
fn open_by_origin<M: Message + Default>(
    signed: &pb::Signed,
    hops: usize,
    purpose: Purpose,
    what: &'static str,
    claimed_origin: impl Fn(&M) -> &String,
    directory: &Directory,
    now_ms: i64,
) -> Result<(NodeId, M, [u8; 32]), WireError> {
    if hops > MAX_HOPS {
        return Err(WireError::TooManyHops);
    }
    let (origin, msg): (NodeId, M) = open(signed, purpose, what, directory, now_ms)?;
    let claimed = claimed_origin(&msg);
    if claimed != origin.as_str() {
        return Err(WireError::IdentityMismatch {
            claimed: shown(claimed),
            actual: origin.to_string(),
        });
    }
    Ok((origin, msg, digest(&signed.payload)))
}

/// A chain of signed hops after `first` (the signer of the item they
/// carry): each hop names the previous signer as `from`, the next hop's
/// signer (or, for the last, this node) as `to`, and the item's report and
/// digest; the last signer must be the node at the other end of the TLS
/// connection.
struct HopChain<'a> {
    purpose: Purpose,
    first: &'a NodeId,
    report_id: &'a str,
    origin: &'a str,
    digest: &'a [u8],
    handoffs_allowed: bool,
}

impl HopChain<'_> {
    fn check(
        &self,
        hops: &[pb::Signed],
        sender: &NodeId,
        me: &NodeId,
        directory: &Directory,
        now_ms: i64,
    ) -> Result<Vec<(NodeId, pb::Hop)>, WireError> {
        if hops.len() > MAX_HOPS {
            return Err(WireError::TooManyHops);
        }
        let mut prev = self.first.clone();
        let mut out = Vec::with_capacity(hops.len());
        for (i, h) in hops.iter().enumerate() {
            let (by, hop): (NodeId, pb::Hop) = open(h, self.purpose, "hop", directory, now_ms)?;
            let next_expected = hops
                .get(i + 1)
                .map(|n| n.signer.as_str())
                .unwrap_or(me.as_str());
            if hop.by != by.as_str()
                || hop.from != prev.as_str()
                || hop.to != next_expected
                || hop.report_id != self.report_id
                || hop.origin != self.origin
                || hop.report_digest != self.digest
                || (hop.handoff && !self.handoffs_allowed)
            {
                return Err(WireError::BadHopChain(format!("hop {i} by {by}")));
            }
            if hop.handoff {
                crate::report::validate::single_line("hop.reason", &hop.reason, 1024)?;
            } else if !hop.reason.is_empty() {
                return Err(WireError::BadHopChain(format!(
                    "hop {i} by {by} has a reason but is no handoff"
                )));
            }
            prev = by.clone();
            out.push((by, hop));
        }
        // The node at the other end of the TLS connection must be the last
        // signer: the first itself, or the last relay.
        if &prev != sender {
            return Err(WireError::IdentityMismatch {
                claimed: prev.to_string(),
                actual: sender.to_string(),
            });
        }
        Ok(out)
    }
}

const SHORT: usize = 1024;
const LONG: usize = 4096;

fn many(field: &str, n: usize, max: usize) -> Result<(), InvalidInput> {
    if n > max {
        Err(InvalidInput::new(
            "too-many",
            field,
            format!("at most {max}, got {n}"),
        ))
    } else {
        Ok(())
    }
}

/// Every text field of the routing evidence a peer sends is one clean line
/// of bounded length, and every list is bounded: it is stored and shown to
/// analysts. The route's own copy of the evidence (what views show) is
/// held to the same rules as the payload's.
fn check_evidence_text(
    hosting: Option<&pb::HostingEvidence>,
    route: Option<&pb::RouteDecision>,
) -> Result<(), InvalidInput> {
    use crate::report::validate::single_line;
    if let Some(h) = hosting {
        check_hosting(h)?;
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
        if !r.family.is_empty() {
            crate::report::validate::report_id(&r.family).map_err(|mut e| {
                e.code = "bad-family";
                e.field = "route.family".into();
                e
            })?;
        }
        if let Some(h) = &r.evidence {
            check_hosting(h)?;
        }
    }
    Ok(())
}

fn check_hosting(h: &pb::HostingEvidence) -> Result<(), InvalidInput> {
    use crate::report::validate::single_line;
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
        ("hosting.behind_cdn", &h.behind_cdn),
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
    check_dns(&h.dns)
}

/// The DNS evidence: one resolution per host name (at most one per URL),
/// each with a few questions and a bounded number of records.
fn check_dns(dns: &[pb::DnsResolution]) -> Result<(), InvalidInput> {
    use crate::report::validate::single_line;
    many("hosting.dns", dns.len(), 100)?;
    for d in dns {
        for v in [&d.host, &d.resolver, &d.failure, &d.error, &d.dnssec] {
            single_line("hosting.dns", v, SHORT)?;
        }
        many("hosting.dns.questions", d.questions.len(), 8)?;
        for q in &d.questions {
            single_line("hosting.dns.questions", &q.question, SHORT)?;
            single_line("hosting.dns.questions", &q.outcome, SHORT)?;
        }
        many("hosting.dns.answers", d.answers.len(), 128)?;
        for a in &d.answers {
            for v in [&a.name, &a.kind, &a.value] {
                single_line("hosting.dns.answers", v, SHORT)?;
            }
        }
    }
    Ok(())
}

/// Batch signatures already verified (signer, key id, signed root bytes,
/// signature), so the receipts of one batch cost one verification.
#[derive(Default)]
pub struct BatchCache(Vec<(String, String, Vec<u8>, Vec<u8>)>);

/// Checks `signed`'s signature by `key` for `purpose`: over the payload,
/// or — for a receipt signed as part of a batch — over the batch root, with
/// the payload's inclusion in it.
pub fn verify_signed(
    key: &ed25519_dalek::VerifyingKey,
    purpose: Purpose,
    signed: &pb::Signed,
    cache: Option<&mut BatchCache>,
) -> Result<(), &'static str> {
    let Some(batch) = &signed.batch else {
        return verify(key, purpose, &signed.payload, &signed.signature)
            .map_err(|_| "bad signature");
    };
    if purpose != Purpose::Receipt {
        return Err("only receipts are signed in batches");
    }
    let known = cache.as_ref().is_some_and(|c| {
        c.0.iter().any(|(s, k, r, sig)| {
            *s == signed.signer
                && *k == signed.key_id
                && *r == batch.root
                && *sig == signed.signature
        })
    });
    if !known {
        verify(key, Purpose::ReceiptBatch, &batch.root, &signed.signature)
            .map_err(|_| "bad batch signature")?;
        if let Some(c) = cache {
            c.0.push((
                signed.signer.clone(),
                signed.key_id.clone(),
                batch.root.clone(),
                signed.signature.clone(),
            ));
        }
    }
    let root = pb::ReceiptBatch::decode(batch.root.as_slice()).map_err(|_| "bad batch root")?;
    if root.encode_to_vec() != batch.root || root.receiver != signed.signer {
        return Err("bad batch root");
    }
    let tree_hash: Hash = root
        .tree_hash
        .as_slice()
        .try_into()
        .map_err(|_| "bad batch root")?;
    let path = batch
        .path
        .iter()
        .map(|h| Hash::try_from(h.as_slice()).map_err(|_| "bad batch path"))
        .collect::<Result<Vec<_>, _>>()?;
    crate::audit::merkle::verify_inclusion(
        &crate::audit::merkle::leaf_hash(&signed.payload),
        batch.index,
        root.size,
        &path,
        &tree_hash,
    )
    .map_err(|_| "receipt not in its batch")
}

type Hash = crate::audit::merkle::Hash;

/// The levels of an RFC 6962 tree built bottom up (an odd node at the end
/// of a level moves up unchanged): the same tree hash and audit paths as
/// the recursive definition, every path in one pass.
fn tree_levels(leaves: Vec<Hash>) -> Vec<Vec<Hash>> {
    let mut levels = vec![leaves];
    while levels.last().is_some_and(|l| l.len() > 1) {
        let below = levels.last().map(Vec::as_slice).unwrap_or_default();
        let up = below
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => crate::audit::merkle::node_hash(l, r),
                [one] => *one,
                _ => unreachable!("chunks of two"),
            })
            .collect();
        levels.push(up);
    }
    levels
}

/// The audit path of leaf `index` in `levels`, bottom up.
fn audit_path(levels: &[Vec<Hash>], mut index: usize) -> Vec<Hash> {
    let mut path = Vec::new();
    for level in &levels[..levels.len().saturating_sub(1)] {
        let sibling = index ^ 1;
        if sibling < level.len() {
            path.push(level[sibling]);
        }
        index /= 2;
    }
    path
}

/// Signs many receipts with one signature: each comes back as a `Signed`
/// carrying its own payload and its inclusion proof in the signed batch.
pub fn sign_receipts(
    key: &NodeKey,
    receiver: &NodeId,
    receipts: &[pb::Receipt],
    now_ms: i64,
) -> Vec<pb::Signed> {
    if receipts.len() == 1 {
        return vec![sign(key, receiver, Purpose::Receipt, &receipts[0])];
    }
    let payloads: Vec<Vec<u8>> = receipts.iter().map(Message::encode_to_vec).collect();
    let leaves: Vec<Hash> = payloads
        .iter()
        .map(|p| crate::audit::merkle::leaf_hash(p))
        .collect();
    let levels = tree_levels(leaves);
    let tree_hash = levels
        .last()
        .and_then(|l| l.first())
        .copied()
        .unwrap_or_else(crate::audit::merkle::empty_root);
    let root = pb::ReceiptBatch {
        receiver: receiver.to_string(),
        size: receipts.len() as u64,
        tree_hash: tree_hash.to_vec(),
        at_ms: now_ms,
    }
    .encode_to_vec();
    let signature = key.sign(Purpose::ReceiptBatch, &root).to_vec();
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| pb::Signed {
            payload,
            signer: receiver.to_string(),
            key_id: key.key_id().to_owned(),
            signature: signature.clone(),
            batch: Some(pb::BatchProof {
                root: root.clone(),
                index: i as u64,
                path: audit_path(&levels, i).iter().map(|h| h.to_vec()).collect(),
            }),
        })
        .collect()
}

/// The unsigned receipt for a report (see `receipt_relaying`).
#[allow(clippy::too_many_arguments)]
pub fn receipt_body(
    receiver: &NodeId,
    report_id: &str,
    origin: &str,
    report_digest: &[u8],
    outcome: pb::ReceiptOutcome,
    reason_code: &str,
    reason: &str,
    relayed_to: &[String],
    now_ms: i64,
) -> pb::Receipt {
    pb::Receipt {
        report_id: report_id.to_owned(),
        origin: origin.to_owned(),
        report_digest: report_digest.to_vec(),
        receiver: receiver.to_string(),
        outcome: outcome as i32,
        reason_code: reason_code.to_owned(),
        reason: reason.to_owned(),
        at_ms: now_ms,
        relayed_to: relayed_to.to_vec(),
    }
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
    receipt_relaying(
        key,
        receiver,
        report_id,
        origin,
        report_digest,
        outcome,
        reason_code,
        reason,
        &[],
        now_ms,
    )
}

/// A receipt that also names the destinations the receiver took over to
/// deliver onward.
#[allow(clippy::too_many_arguments)]
pub fn receipt_relaying(
    key: &NodeKey,
    receiver: &NodeId,
    report_id: &str,
    origin: &str,
    report_digest: &[u8],
    outcome: pb::ReceiptOutcome,
    reason_code: &str,
    reason: &str,
    relayed_to: &[String],
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
        relayed_to: relayed_to.to_vec(),
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
    open_receipt_cached(
        signed,
        receiver,
        report_id,
        report_digest,
        directory,
        now_ms,
        None,
    )
}

/// `open_receipt`, checking each batch signature once (see `BatchCache`).
pub fn open_receipt_cached(
    signed: &pb::Signed,
    receiver: &NodeId,
    report_id: &str,
    report_digest: &[u8],
    directory: &Directory,
    now_ms: i64,
    cache: Option<&mut BatchCache>,
) -> Result<pb::Receipt, WireError> {
    let (signer, r): (NodeId, pb::Receipt) = open_cached(
        signed,
        Purpose::Receipt,
        "receipt",
        directory,
        now_ms,
        cache,
    )?;
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
    crate::report::validate::single_line("receipt.reason", &r.reason, 4096)?;
    crate::report::validate::single_line("receipt.reason_code", &r.reason_code, 64)?;
    if r.relayed_to.len() > 16 {
        return Err(WireError::Invalid(InvalidInput::new(
            "too-many",
            "receipt.relayed_to",
            "at most 16",
        )));
    }
    Ok(r)
}

/// An origin's amendment that passed every check.
#[derive(Debug, Clone)]
pub struct OpenedAmendment {
    pub origin: NodeId,
    pub amendment: pb::Amendment,
    /// The exact signed amendment (protobuf `Signed`), to store and pass on.
    pub signed: pb::Signed,
    pub relays: Vec<NodeId>,
}

/// Signs an amendment (retraction or correction) as the report's origin.
pub fn amendment(key: &NodeKey, origin: &NodeId, a: &pb::Amendment) -> pb::Signed {
    sign(key, origin, Purpose::Amendment, a)
}

/// Opens an amendment received from `sender`: signed by the report's
/// origin, carried by a hop chain like the report's.
pub fn open_amendment(
    env: &pb::AmendEnvelope,
    sender: &NodeId,
    me: &NodeId,
    directory: &Directory,
    now_ms: i64,
) -> Result<OpenedAmendment, WireError> {
    let signed = env
        .amendment
        .as_ref()
        .ok_or(WireError::Missing("amendment"))?;
    let (origin, a, item_digest) = open_by_origin(
        signed,
        env.hops.len(),
        Purpose::Amendment,
        "amendment",
        |a: &pb::Amendment| &a.origin,
        directory,
        now_ms,
    )?;
    let chain = HopChain {
        purpose: Purpose::Hop,
        first: &origin,
        report_id: &a.report_id,
        origin: &a.origin,
        digest: &item_digest,
        handoffs_allowed: false,
    };
    let relays = chain
        .check(&env.hops, sender, me, directory, now_ms)?
        .into_iter()
        .map(|(by, _)| by)
        .collect();
    crate::report::validate::report_id(&a.report_id)?;
    crate::report::validate::report_id(&a.amendment_id).map_err(|mut e| {
        e.field = "amendment_id".into();
        e
    })?;
    crate::report::validate::single_line("reason", &a.reason, 1024)?;
    match pb::AmendmentKind::try_from(a.kind) {
        Ok(pb::AmendmentKind::Retract) => {}
        Ok(pb::AmendmentKind::Correct) => {
            if !a.category.is_empty() {
                crate::report::Category::parse(&a.category).map_err(|_| {
                    InvalidInput::new("bad-category", "category", shown(&a.category))
                })?;
            }
            let hashes: Vec<crate::report::MediaHash> = a
                .hashes
                .iter()
                .map(|h| crate::report::MediaHash {
                    algorithm: h.algorithm.clone(),
                    value: h.value.clone(),
                })
                .collect();
            crate::report::validate::peer_fields(&a.notes, &hashes)?;
        }
        _ => {
            return Err(WireError::Invalid(InvalidInput::new(
                "bad-kind",
                "amendment.kind",
                "retract or correct",
            )));
        }
    }
    Ok(OpenedAmendment {
        origin,
        amendment: a,
        signed: signed.clone(),
        relays,
    })
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
                    relay: None,
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
    fn batch_trees_match_rfc6962_at_every_size() {
        use crate::audit::merkle;
        for n in 1..=70usize {
            let leaves: Vec<Hash> = (0..n)
                .map(|i| merkle::leaf_hash(&(i as u64).to_be_bytes()))
                .collect();
            let levels = tree_levels(leaves.clone());
            assert_eq!(levels.last().unwrap()[0], merkle::root(&leaves), "size {n}");
            for i in 0..n {
                assert_eq!(
                    audit_path(&levels, i),
                    merkle::inclusion_proof(&leaves, i as u64).unwrap(),
                    "size {n}, leaf {i}"
                );
            }
        }
    }

    fn receipts_for(n: usize, receiver: &str) -> Vec<pb::Receipt> {
        (0..n)
            .map(|i| pb::Receipt {
                report_id: format!("r{i}"),
                origin: "AA".into(),
                report_digest: digest(&[i as u8]).to_vec(),
                receiver: receiver.into(),
                outcome: pb::ReceiptOutcome::Stored as i32,
                at_ms: 5,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn each_receipt_of_a_batch_opens_on_its_own_and_only_as_itself() {
        let kb = NodeKey::generate();
        let dir = directory(&[("BB", &kb)]);
        let b = NodeId::new("BB").unwrap();
        let signed = sign_receipts(&kb, &b, &receipts_for(37, "BB"), 5);
        assert_eq!(signed.len(), 37);
        // One signature for the whole batch.
        assert!(signed.iter().all(|s| s.signature == signed[0].signature));
        let mut cache = BatchCache::default();
        for (i, s) in signed.iter().enumerate() {
            let digest = digest(&[i as u8]);
            // Alone (as stored, exported, or passed back through relays)…
            let alone = pb::Signed::decode(s.encode_to_vec().as_slice()).unwrap();
            let r = open_receipt(&alone, &b, &format!("r{i}"), &digest, &dir, 0).unwrap();
            assert_eq!(r.report_id, format!("r{i}"));
            // …and with the batch's signature checked once.
            open_receipt_cached(s, &b, &format!("r{i}"), &digest, &dir, 0, Some(&mut cache))
                .unwrap();
        }
        assert_eq!(cache.0.len(), 1);
        // Moved to another position, another payload, a forged root, or
        // claimed for another purpose: refused.
        let mut moved = signed[3].clone();
        moved.batch.as_mut().unwrap().index = 4;
        assert!(open_receipt(&moved, &b, "r3", &digest(&[3]), &dir, 0).is_err());
        let mut swapped = signed[3].clone();
        swapped.payload = signed[4].payload.clone();
        assert!(open_receipt(&swapped, &b, "r4", &digest(&[4]), &dir, 0).is_err());
        let mut forged = signed[3].clone();
        let mut root =
            pb::ReceiptBatch::decode(forged.batch.as_ref().unwrap().root.as_slice()).unwrap();
        root.size = 36;
        forged.batch.as_mut().unwrap().root = root.encode_to_vec();
        assert!(open_receipt(&forged, &b, "r3", &digest(&[3]), &dir, 0).is_err());
        // A cached signature does not vouch for a different root.
        assert!(
            open_receipt_cached(&forged, &b, "r3", &digest(&[3]), &dir, 0, Some(&mut cache))
                .is_err()
        );
        assert!(matches!(
            open::<pb::Receipt>(&signed[3], Purpose::Status, "status", &dir, 0),
            Err(WireError::BadSignature(_))
        ));
        // A batch that names another receiver than its signer.
        let other = sign_receipts(&kb, &NodeId::new("CC").unwrap(), &receipts_for(2, "CC"), 5);
        let mut claimed = other[0].clone();
        claimed.signer = "BB".into();
        assert!(open_receipt(&claimed, &b, "r0", &digest(&[0]), &dir, 0).is_err());
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
            batch: None,
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
