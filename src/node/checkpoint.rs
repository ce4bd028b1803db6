//! Checkpoints of this node's audit log: signed on a schedule and on
//! demand, never inconsistent with one signed before; served to witnesses
//! with consistency proofs; and the cosignatures they return, verified and
//! stored.

use crate::audit::merkle::{self, Hash};
use crate::audit::note::{self, Checkpoint, NoteSignature, SignedNote};
use crate::audit::{self, log_origin, witness_name};
use crate::identity::NodeId;
use crate::node::{Core, NodeError};
use crate::report::InvalidInput;
use crate::store::CheckpointRow;

/// The line a signature takes in a signed note ("— name base64\n").
pub fn signature_line(text: &str, sig: NoteSignature) -> String {
    let encoded = SignedNote {
        text: text.to_owned(),
        signatures: vec![sig],
    }
    .encode();
    // `encode` writes the text, a blank line, then the signature lines.
    encoded.get(text.len() + 1..).unwrap_or_default().to_owned()
}

pub fn origin(core: &Core) -> String {
    log_origin(&core.config.directory.federation, core.me.as_str())
}

/// Signs a checkpoint of the log as it is now, unless the latest one
/// already covers every entry. Refuses (and alerts) if the log no longer
/// matches the last checkpoint it signed: a node never signs two
/// inconsistent histories.
pub async fn make(core: &Core) -> Result<CheckpointRow, NodeError> {
    make_if_older(core, None, false).await
}

/// `make`, having first read the whole log again to check it still
/// matches the last signed checkpoint (an admin's request, and one
/// scheduled checkpoint in `FULL_CHECK_EVERY`): an entry rewritten under
/// the running node is found here, not only by `audit verify`.
pub async fn make_verified(core: &Core, who: &str) -> Result<CheckpointRow, NodeError> {
    // Nothing new: the latest, at no cost. A new one is held to the
    // caller's quota of on-demand checkpoints.
    let latest = core.store.latest_checkpoint().await?;
    let size = core.store.audit_entries_count().await?;
    if let Some(l) = latest
        && u64::try_from(l.size).ok() == Some(size)
    {
        return Ok(l);
    }
    core.limiter
        .admit(&format!("checkpoint {who}"), ON_DEMAND)
        .map_err(|e| NodeError::Overloaded(e.to_string()))?;
    make_if_older(core, None, true).await
}

/// "Verify now" (the console's Federation page): the whole audit log read
/// again and checked as `alertrelay audit verify` does — every entry, the
/// hash chain, every checkpoint this node signed and every cosignature
/// with the witness's key. Held to the caller's on-demand quota; the
/// check and its outcome are audited under `who`.
pub async fn verify_now(
    core: &Core,
    who: &crate::identity::PeerIdentity,
) -> Result<crate::audit::Verified, NodeError> {
    let actor = who.to_string();
    core.limiter
        .admit(&format!("verify {actor}"), ON_DEMAND)
        .map_err(|e| NodeError::Overloaded(e.to_string()))?;
    let ctx = crate::audit::VerifyContext::from_config(&core.config);
    let result = crate::audit::verify(&core.config.database, &ctx).await;
    let detail = match &result {
        Ok(v) => serde_json::json!({"ok": true, "entries": v.entries, "root": v.root,
            "checkpoints": v.checkpoints, "cosignatures": v.cosignatures}),
        Err(e) => serde_json::json!({"ok": false, "problem": e.to_string()}),
    };
    let mut tx = core.store.begin().await?;
    tx.audit(
        &audit::Entry::new("audit.verified", actor, origin(core), detail),
        Core::now_ms(),
    )
    .await?;
    tx.commit().await?;
    result.map_err(|e| NodeError::FailedPrecondition(format!("the audit log does not verify: {e}")))
}

/// New checkpoints on demand, per caller: ten at once, then one every
/// ten seconds.
const ON_DEMAND: crate::config::Quota = crate::config::Quota {
    per_sec: 0.1,
    burst: 10.0,
    concurrent: usize::MAX >> 4,
};

/// One scheduled checkpoint in this many reads the whole log again
/// (`make_verified`); the others read only the entries since the last.
pub const FULL_CHECK_EVERY: u32 = 12;

/// `make`, but keeping the latest checkpoint when it was signed less than
/// `min_age_ms` ago. Decided under the writer lock: of several replicas
/// on one database whose schedules come due together, one signs and the
/// others find its checkpoint, so a checkpoint is signed once per interval
/// by one replica at a time, each extending the one before.
async fn make_if_older(
    core: &Core,
    min_age_ms: Option<i64>,
    verify_all: bool,
) -> Result<CheckpointRow, NodeError> {
    if verify_all {
        check_again(core).await?;
    }
    let ahead = read_ahead(core, min_age_ms).await?;
    let mut tx = core.store.begin().await?;
    let size = tx.audit_size().await?;
    let last = tx.latest_checkpoint().await?;
    if let Some(l) = &last
        && (u64::try_from(l.size).ok() == Some(size)
            || min_age_ms.is_some_and(|age| Core::now_ms() - l.created_at_ms < age))
    {
        return Ok(l.clone());
    }
    // Under the writer lock only the entries written since `read_ahead`
    // are read (unless another replica signed meanwhile: then from its
    // checkpoint's edge, or from the start).
    let old = last
        .as_ref()
        .map(|l| u64::try_from(l.size).unwrap_or(u64::MAX));
    let mut edge = match ahead {
        Some(e) if e.at == old && e.range.size() <= size => e,
        _ => Edge::kept(core, old),
    };
    let from = edge.range.size();
    tx.fold_leaves(from, size, |leaf| edge.push(leaf)).await?;
    core.metrics.leaves_read("sign", size.saturating_sub(from));
    let Edge { range, prefix, .. } = edge;
    if range.size() != size {
        return Err(NodeError::Internal(
            "the audit log has fewer entries than its size says",
        ));
    }
    if let Some(l) = &last
        && prefix.is_none_or(|p| p.as_slice() != l.root.as_slice())
    {
        return Err(inconsistent(l.size));
    }
    let row = sign_and_store(core, &mut tx, size, range.root()).await?;
    tx.commit().await?;
    *core.frontier.lock().unwrap_or_else(|e| e.into_inner()) = Some(range);
    tracing::info!(
        size,
        read = size.saturating_sub(from),
        "audit checkpoint signed"
    );
    Ok(row)
}

/// The audit tree's right edge, being extended from the checkpoint of
/// `at` entries (none yet: `None`), with that checkpoint's root once the
/// edge has passed it (`prefix`).
struct Edge {
    at: Option<u64>,
    range: merkle::CompactRange,
    prefix: Option<Hash>,
}

impl Edge {
    /// The edge kept at the latest checkpoint this process signed or
    /// checked (`Core::frontier`) when that is the checkpoint of `at`
    /// entries; otherwise the empty tree, to be read from the start.
    fn kept(core: &Core, at: Option<u64>) -> Edge {
        let cached = core
            .frontier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|r| Some(r.size()) == at);
        match cached {
            Some(range) => Edge {
                at,
                prefix: Some(range.root()),
                range,
            },
            None => Edge {
                at,
                range: merkle::CompactRange::new(),
                prefix: (at == Some(0)).then(merkle::empty_root),
            },
        }
    }

    fn push(&mut self, leaf: &Hash) {
        self.range.push(leaf);
        if Some(self.range.size()) == self.at {
            self.prefix = Some(self.range.root());
        }
    }
}

/// Folds the entries written since the latest checkpoint into the tree's
/// edge through a reader, outside the writer lock (entries never change
/// once written): a checkpoint after a busy interval (a million reports
/// imported) would otherwise hold every commit, urgent reports' included,
/// for the seconds it takes to read and hash millions of entries. `None`
/// when the latest checkpoint is too recent to be replaced.
async fn read_ahead(core: &Core, min_age_ms: Option<i64>) -> Result<Option<Edge>, NodeError> {
    let last = core.store.latest_checkpoint().await?;
    if let Some(l) = &last
        && min_age_ms.is_some_and(|age| Core::now_ms() - l.created_at_ms < age)
    {
        return Ok(None);
    }
    let mut edge = Edge::kept(
        core,
        last.map(|l| u64::try_from(l.size).unwrap_or(u64::MAX)),
    );
    let size = core.store.audit_entries_count().await?;
    let from = edge.range.size();
    let read = core
        .store
        .fold_leaves(from, size, |leaf| edge.push(leaf))
        .await?;
    core.metrics.leaves_read("ahead", read);
    Ok(Some(edge))
}

/// Reads the whole log again, outside the writer lock, to check that it
/// still hashes to the latest checkpoint (entries are never changed once
/// written, so what the writer adds meanwhile does not matter), and keeps
/// the edge it built for the next checkpoint.
async fn check_again(core: &Core) -> Result<(), NodeError> {
    let Some(last) = core.store.latest_checkpoint().await? else {
        return Ok(());
    };
    let size = u64::try_from(last.size).unwrap_or(u64::MAX);
    let mut range = merkle::CompactRange::new();
    let read = core
        .store
        .fold_leaves(0, size, |leaf| range.push(leaf))
        .await?;
    core.metrics.leaves_read("check", read);
    if read != size || range.root().as_slice() != last.root.as_slice() {
        return Err(inconsistent(last.size));
    }
    *core.frontier.lock().unwrap_or_else(|e| e.into_inner()) = Some(range);
    Ok(())
}

/// The refusal to sign on top of a log that no longer matches the last
/// signed checkpoint, with its alert: a node never signs two inconsistent
/// histories.
fn inconsistent(size: i64) -> NodeError {
    tracing::error!(
        size,
        "ALERT: the audit log no longer matches the last signed checkpoint; refusing to sign"
    );
    NodeError::FailedPrecondition(format!(
        "the audit log no longer matches checkpoint {size}; not signing"
    ))
}

/// Signs the checkpoint of the log at `size` with `root` and stores it in
/// the writer's transaction.
async fn sign_and_store(
    core: &Core,
    tx: &mut crate::store::Tx,
    size: u64,
    root: Hash,
) -> Result<CheckpointRow, NodeError> {
    let origin = origin(core);
    let text = Checkpoint {
        origin: origin.clone(),
        size,
        root,
        extensions: vec![],
    }
    .body();
    let signature = crate::audit::note::sign_note(&text, &origin, core.key().signing_key())
        .map_err(|e| NodeError::FailedPrecondition(format!("cannot sign the checkpoint: {e}")))?;
    let signed = SignedNote {
        text,
        signatures: vec![signature],
    }
    .encode();
    let now = Core::now_ms();
    tx.insert_checkpoint(size, &root, &signed, now).await?;
    Ok(CheckpointRow {
        size: i64::try_from(size).unwrap_or(i64::MAX),
        root: root.to_vec(),
        note: signed,
        created_at_ms: now,
    })
}

/// The latest checkpoint with every cosignature collected for it.
pub async fn latest_with_cosignatures(core: &Core) -> Result<Option<String>, NodeError> {
    let Some(cp) = core.store.latest_checkpoint().await? else {
        return Ok(None);
    };
    Ok(Some(with_cosignatures(core, &cp).await?))
}

pub async fn with_cosignatures(core: &Core, cp: &CheckpointRow) -> Result<String, NodeError> {
    let mut out = cp.note.clone();
    for c in core
        .store
        .cosignatures(u64::try_from(cp.size).unwrap_or(0))
        .await?
    {
        out.push_str(&c.line);
    }
    Ok(out)
}

/// Start-up check: the log still hashes to the root of the latest checkpoint
/// this node signed. A node whose log was rewritten must not start signing
/// on top of it. Returns the tree's edge at that checkpoint, for the next.
pub async fn check_latest(
    store: &crate::store::Store,
) -> Result<Option<merkle::CompactRange>, String> {
    let Some(cp) = store.latest_checkpoint().await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let size = u64::try_from(cp.size).unwrap_or(0);
    let mut range = merkle::CompactRange::new();
    store
        .fold_leaves(0, size, |leaf| range.push(leaf))
        .await
        .map_err(|e| e.to_string())?;
    if range.size() < size {
        return Err(format!(
            "the audit log holds {} entries but checkpoint {size} was signed",
            range.size()
        ));
    }
    if range.root().as_slice() != cp.root.as_slice() {
        return Err(format!(
            "the audit log no longer hashes to the root of checkpoint {size}"
        ));
    }
    Ok(Some(range))
}

/// An RFC 9162 consistency proof between two sizes of this log.
pub async fn consistency_proof(
    core: &Core,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, NodeError> {
    let latest = core
        .store
        .latest_checkpoint()
        .await?
        .map_or(0, |c| u64::try_from(c.size).unwrap_or(0));
    if old_size > new_size || new_size > latest {
        return Err(InvalidInput::new(
            "bad-proof-range",
            "new_size",
            format!("need old_size <= new_size <= {latest} (the latest checkpoint)"),
        )
        .into());
    }
    let spans = merkle::consistency_spans(old_size, new_size)
        .map_err(|e| NodeError::FailedPrecondition(format!("cannot prove consistency: {e}")))?;
    span_roots(&core.store, &spans).await
}

/// The root of each run of the log's leaves, read a page at a time: a
/// proof's hashes without the whole log in memory.
pub async fn span_roots(
    store: &crate::store::Store,
    spans: &[merkle::Span],
) -> Result<Vec<Hash>, NodeError> {
    let mut roots = Vec::with_capacity(spans.len());
    for span in spans {
        let mut range = merkle::CompactRange::new();
        let n = store
            .fold_leaves(span.start, span.end, |leaf| range.push(leaf))
            .await?;
        if n != span.end - span.start {
            return Err(NodeError::Internal(
                "the audit log has fewer entries than its checkpoint",
            ));
        }
        roots.push(range.root());
    }
    Ok(roots)
}

/// How often one witness may tell this node it refused to cosign: five at
/// once, then one every ten minutes.
const WITNESS_REFUSALS: crate::config::Quota = crate::config::Quota {
    per_sec: 1.0 / 600.0,
    burst: 5.0,
    concurrent: usize::MAX >> 4,
};

/// A witness returns its cosignature of one of our checkpoints, or tells us
/// why it refused.
pub async fn receive_cosignature(
    core: &Core,
    witness: &NodeId,
    checkpoint: &str,
    line: &str,
    refusal: &str,
) -> Result<(), NodeError> {
    let actor = format!("node:{witness}");
    let now = Core::now_ms();
    if !refusal.is_empty() {
        // Only a node that witnesses this log (an active peer: `auth`
        // admitted it) may refuse, a few times an hour at most; what it
        // says is bounded and escaped before it is logged or stored.
        let key = format!("witness refusal {witness}");
        if core.limiter.admit(&key, WITNESS_REFUSALS).is_err() {
            core.metrics.refusal("refusals-throttled");
            return Ok(());
        }
        let refusal = super::state::bounded(refusal);
        tracing::error!(witness = %witness, reason = %refusal, "ALERT: a witness refused to cosign our audit checkpoint");
        core.metrics.witness(witness.as_str(), "refused_us");
        let mut tx = core.store.begin().await?;
        tx.audit(
            &audit::Entry::new(
                "witness.refused-us",
                actor,
                origin(core),
                serde_json::json!({
                    "reason": refusal,
                    "checkpoint_sha256": hex::encode(crate::wire::digest(checkpoint.as_bytes())),
                }),
            ),
            now,
        )
        .await?;
        tx.commit().await?;
        return Ok(());
    }
    let bad = |m: &str| NodeError::from(InvalidInput::new("bad-cosignature", "cosignature", m));
    let cp = Checkpoint::parse_body(checkpoint).map_err(|_| bad("unreadable checkpoint"))?;
    let ours = core
        .store
        .checkpoint(cp.size)
        .await?
        .ok_or_else(|| bad("no checkpoint of that size was signed here"))?;
    if !ours.note.starts_with(checkpoint) {
        return Err(bad(
            "that is not the checkpoint this node signed at that size",
        ));
    }
    let parsed = SignedNote::parse(&format!("{checkpoint}\n{line}"))
        .map_err(|_| bad("unreadable cosignature line"))?;
    let [sig] = parsed.signatures.as_slice() else {
        return Err(bad("exactly one cosignature line expected"));
    };
    let name = witness_name(&core.config.directory.federation, witness.as_str());
    // A key of the witness valid when it cosigned (the cosignature's own
    // timestamp, known once it verifies).
    let directory = core.directory();
    let timestamp = directory
        .node(witness)
        .into_iter()
        .flat_map(|n| n.keys.iter())
        .filter(|k| !k.revoked)
        .find_map(|k| {
            let at = note::verify_cosignature(checkpoint, sig, &name, &k.key).ok()?;
            let at_ms = i64::try_from(at).ok()?.checked_mul(1000)?;
            k.valid_at(at_ms).then_some(at)
        })
        .ok_or_else(|| NodeError::Wire(crate::wire::WireError::BadSignature("cosignature")))?;
    let mut tx = core.store.begin().await?;
    let line = signature_line(checkpoint, sig.clone());
    tx.insert_cosignature(cp.size, witness.as_str(), &line, timestamp)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Signs a checkpoint every `checkpoint_interval` when the log has grown.
pub async fn run_schedule(
    core: std::sync::Arc<Core>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut round = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(core.config.checkpoint_interval) => {}
            _ = shutdown.changed() => return,
        }
        // Half an interval: replicas started at different times still
        // sign about once per interval between them.
        let min_age = i64::try_from(core.config.checkpoint_interval.as_millis() / 2).ok();
        round = round.wrapping_add(1);
        let verify_all = round.is_multiple_of(FULL_CHECK_EVERY);
        if let Err(e) = make_if_older(&core, min_age, verify_all).await {
            tracing::error!(error = %e, "scheduled checkpoint failed");
        }
    }
}
