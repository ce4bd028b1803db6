//! The law-enforcement export of a case: a bundle signed by this node with
//! the case, the signed report, receipts and status updates, and every audit
//! entry about the case with its inclusion proof (format and offline check:
//! `wire::bundle`). The export is an audited read: its own audit entry is
//! written first, a checkpoint is signed over it, and it is proved in the
//! bundle too.

use prost::Message;

use crate::identity::PeerIdentity;
use crate::node::{Core, NodeError, cases, checkpoint};
use crate::pb;
use crate::report::InvalidInput;
use crate::wire::bundle::{self, BundleKey, ExportAudit, ExportBody, ProvedEntry, b64e};

/// The only purpose so far.
pub const LAW_ENFORCEMENT: &str = "law-enforcement";

/// The signed export of case `id` for `purpose`, as JSON. Refusals and
/// the export itself are audited.
pub async fn case_bundle(
    core: &Core,
    operator: &PeerIdentity,
    id: &str,
    purpose: &str,
) -> Result<Vec<u8>, NodeError> {
    if purpose != LAW_ENFORCEMENT {
        let e = InvalidInput::new(
            "bad-purpose",
            "purpose",
            format!("must be {LAW_ENFORCEMENT:?}"),
        );
        core.audit_refusal(
            &operator.to_string(),
            e.code,
            &e.to_string(),
            format!("{id}\0{purpose}").as_bytes(),
        )
        .await;
        return Err(e.into());
    }
    let row = cases::find(core, id).await?;
    let case = cases::view_by_seq(core, row.seq).await?;
    let subject = cases::subject(&case);
    // An audited read, recorded before anything leaves the node.
    cases::audit_read(
        core,
        operator,
        "case.exported",
        subject.clone(),
        serde_json::json!({"rpc": "ExportCase", "purpose": purpose}),
    )
    .await?;
    // A checkpoint over the log including that entry: every proof below is
    // against it.
    let cp = checkpoint::make(core).await?;
    let note = checkpoint::with_cosignatures(core, &cp).await?;
    let size = u64::try_from(cp.size).unwrap_or(0);
    let entries = proved_entries(core, &subject, size).await?;
    let (report, receipts, status_updates) = signed_objects(core, &row).await?;
    let directory = core.directory();
    let body = ExportBody {
        format: bundle::FORMAT.into(),
        federation: directory.federation.clone(),
        exporter: core.me.to_string(),
        purpose: purpose.to_owned(),
        exported_at_ms: Core::now_ms(),
        exported_by: operator.to_string(),
        case,
        report,
        receipts,
        status_updates,
        audit: ExportAudit {
            log: checkpoint::origin(core),
            checkpoint: note,
            tree_size: size,
            entries,
        },
    };
    let sealed = bundle::seal(
        &core.key(),
        core.me.as_str(),
        &body,
        bundle_keys(&directory),
    )
    .map_err(|_| NodeError::Internal("cannot encode the export"))?;
    serde_json::to_vec_pretty(&sealed).map_err(|_| NodeError::Internal("cannot encode the export"))
}

/// Every audit entry about the case that the checkpoint of `size` covers,
/// each with its inclusion proof. Entries about one case are close
/// together in the log, so their proofs share most subtrees: each subtree
/// root is read from the log once.
async fn proved_entries(
    core: &Core,
    subject: &str,
    size: u64,
) -> Result<Vec<ProvedEntry>, NodeError> {
    let mut entries = Vec::new();
    let mut known = std::collections::HashMap::new();
    for e in core.store.audit_entries_about(subject).await? {
        let Ok(index) = u64::try_from(e.seq - 1) else {
            continue;
        };
        if index >= size {
            continue; // written after the checkpoint: not provable yet
        }
        let spans = crate::audit::merkle::inclusion_spans(index, size)
            .map_err(|_| NodeError::Internal("cannot build an inclusion proof"))?;
        let missing: Vec<_> = spans
            .iter()
            .filter(|s| !known.contains_key(&(s.start, s.end)))
            .cloned()
            .collect();
        for (span, root) in missing
            .iter()
            .zip(checkpoint::span_roots(&core.store, &missing).await?)
        {
            known.insert((span.start, span.end), root);
        }
        let proof: Vec<_> = spans
            .iter()
            .filter_map(|s| known.get(&(s.start, s.end)))
            .collect();
        entries.push(ProvedEntry {
            entry: crate::audit::proof::ExportedEntry {
                seq: e.seq,
                at_ms: e.at_ms,
                kind: e.kind,
                actor: e.actor,
                subject: e.subject,
                detail: e.detail,
            },
            leaf_index: index,
            inclusion_proof: proof.iter().map(hex::encode).collect(),
        });
    }
    Ok(entries)
}

/// The case's signed objects, base64: the origin's signed report, every
/// receipt (this node's and the destinations'), and every signed status
/// update.
async fn signed_objects(
    core: &Core,
    row: &crate::store::ReportRow,
) -> Result<(Option<String>, Vec<String>, Vec<String>), NodeError> {
    let report = pb::Envelope::decode(row.envelope.as_slice())
        .ok()
        .and_then(|e| e.report)
        .filter(|s| !s.payload.is_empty())
        .map(|s| b64e(&s.encode_to_vec()));
    let mut receipts: Vec<String> = row.receipt.as_deref().map(b64e).into_iter().collect();
    for d in core.store.deliveries(row.seq).await? {
        if let Some(r) = d.receipt.as_deref().filter(|r| !r.is_empty()) {
            receipts.push(b64e(r));
        }
    }
    let status_updates = core
        .store
        .signed_status_updates(row.seq)
        .await?
        .iter()
        .map(|s| b64e(s))
        .collect();
    Ok((report, receipts, status_updates))
}

/// Every key of the directory, for the bundle's keys section.
fn bundle_keys(directory: &crate::directory::Directory) -> Vec<BundleKey> {
    directory
        .nodes()
        .iter()
        .flat_map(|n| {
            n.keys.iter().map(|k| BundleKey {
                node: n.id.to_string(),
                key_id: k.id.clone(),
                public_key: crate::crypto::signing::encode_public_key(&k.key),
            })
        })
        .collect()
}
