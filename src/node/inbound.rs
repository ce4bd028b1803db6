//! The pipeline every batch from a peer goes through, written once for the
//! four inbound flows (envelopes, status updates, returned items,
//! amendments): open the batch (signatures checked over the exact bytes,
//! then decoded: CPU only, off the async threads when the flow asks) → a
//! batch that does not open is refused whole, with its audit entry and
//! nothing else → transactions (one, or short bulk chunks that yield to
//! urgent work) in which each item is applied with its audit entry →
//! commit → watchers told of the cases that changed, and the workers of
//! the peers that have new work woken.

use std::future::Future;
use std::sync::Arc;

use crate::identity::NodeId;
use crate::store::Tx;
use crate::wire::WireError;

use super::{Core, NodeError, background};

/// At most this many items per batch.
pub const MAX_BATCH: usize = 256;

/// Bulk work commits every this many items, so urgent work waits for at
/// most one such short transaction (one statement per kind of row for the
/// chunk: a few milliseconds).
pub const BULK_CHUNK: usize = 64;

/// The answer to one item of a batch. `api::status` alone turns it into the
/// item's gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Stored, applied, relayed, or an exact repeat of what was.
    Accepted,
    /// It names a report this node does not have.
    NotFound,
    /// The same id with different content (equivocation).
    Conflict,
    /// Refused for a reason its answer states (a loop, not a destination,
    /// stale, outside this hotline's jurisdiction, …).
    Refused,
}

/// What committed items changed, acted on after the commit.
#[derive(Debug, Default)]
pub struct Effects {
    /// Cases created or changed (`Core::case_changed`).
    pub changed: Vec<i64>,
    /// Peers with new work queued (`Core::wake`).
    pub wake: Vec<String>,
    /// Cases opened in this transaction with PDQ hashes (case seq, hash):
    /// matched before the index has read them (`near`).
    pub near: Vec<(i64, [u8; 32])>,
}

/// Where a flow opens its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// On the calling task (small batches, few signatures).
    Inline,
    /// On a blocking thread: the low-priority pool unless `urgent` (the
    /// sender's hint; each item's own signed priority is what counts).
    Background { urgent: bool },
}

/// One inbound flow: how its batch opens and how one chunk of opened items
/// is applied inside a transaction.
pub trait Flow: Send + Sync + 'static {
    /// An item whose signatures verified and which decoded.
    type Opened: Send + Sync + 'static;
    /// The answer for one item.
    type Answer: Send;

    /// Checks and decodes the whole batch: CPU only, no IO. Any error
    /// refuses the whole batch.
    fn open(&self, core: &Core, sender: &NodeId, now: i64) -> Result<Vec<Self::Opened>, NodeError>;

    /// The request's bytes, whose digest and size a refusal's audit entry
    /// records.
    fn bytes(&self) -> Vec<u8>;

    fn opening(&self) -> Opening {
        Opening::Inline
    }

    /// How many of the opened batch's items are urgent. A batch with any,
    /// within its sender's urgent quota, is applied at once in one
    /// transaction, and bulk work waits for it. Otherwise a chunked flow
    /// goes in short bulk transactions that yield to urgent work.
    fn urgent_items(&self, _opened: &[Self::Opened]) -> usize {
        0
    }

    /// How much near-duplicate matching the opened batch asks for (its PDQ
    /// hashes): held to the sender's quota of it (`[limits] peer_pdq_*`)
    /// before any of it is done.
    fn matching_work(&self, _opened: &[Self::Opened]) -> usize {
        0
    }

    /// Whether a bulk batch goes in chunks of `BULK_CHUNK` (else in one
    /// transaction, as urgent batches do).
    fn chunked(&self) -> bool {
        false
    }

    /// Applies `chunk` (the items from index `offset` of the batch) in
    /// `tx`, with an audit entry for each, and returns their answers in
    /// order. An `Err` rolls the whole chunk back.
    #[allow(clippy::too_many_arguments)]
    fn apply<'a>(
        &'a self,
        core: &'a Core,
        tx: &'a mut Tx,
        sender: &'a NodeId,
        chunk: &'a [Self::Opened],
        offset: usize,
        now: i64,
        effects: &'a mut Effects,
    ) -> impl Future<Output = Result<Vec<Self::Answer>, NodeError>> + Send + 'a;
}

/// Runs `flow`'s batch from `sender` through the pipeline and returns one
/// answer per item, after everything is committed.
pub async fn run<F: Flow>(
    core: &Arc<Core>,
    sender: &NodeId,
    flow: Arc<F>,
) -> Result<Vec<F::Answer>, NodeError> {
    let now = Core::now_ms();
    let opened = match open(core, sender, &flow, now)
        .await?
        .and_then(|opened| matching_admitted(core, sender, &*flow, opened))
    {
        Ok(opened) => opened,
        Err(e) => {
            let (code, message) = refusal_code(&e);
            let actor = format!("node:{sender}");
            core.audit_refusal(&actor, code, &message, &flow.bytes())
                .await;
            return Err(e);
        }
    };
    let urgent = urgent_admitted(core, sender, flow.urgent_items(&opened));
    let _urgent = urgent.then(|| core.urgent.enter());
    let chunk_size = if urgent || !flow.chunked() {
        opened.len().max(1)
    } else {
        core.urgent.bulk_chunk(BULK_CHUNK)
    };
    let bulk = !urgent && flow.chunked();
    let mut answers = Vec::with_capacity(opened.len());
    let mut effects = Effects::default();
    for (i, chunk) in opened.chunks(chunk_size).enumerate() {
        let offset = i * chunk_size;
        answers.extend(
            apply_chunk(core, sender, &*flow, chunk, offset, now, bulk, &mut effects).await?,
        );
    }
    tell(core, effects, urgent);
    Ok(answers)
}

/// The opened batch, if its near-duplicate matching fits in the sender's
/// quota of it; otherwise the whole batch is refused as over quota (the
/// sender retries later, as after any RESOURCE_EXHAUSTED).
fn matching_admitted<F: Flow>(
    core: &Core,
    sender: &NodeId,
    flow: &F,
    opened: Vec<F::Opened>,
) -> Result<Vec<F::Opened>, NodeError> {
    let key = format!("matching node:{sender}");
    let quota = core.config.matching_quota;
    // More than a burst needs a full bucket: no batch is refused for ever.
    let n = flow.matching_work(&opened).min(quota.burst as usize);
    if n == 0 || core.limiter.admit_work(&key, quota, n).is_ok() {
        return Ok(opened);
    }
    Err(NodeError::Overloaded(
        "near-duplicate matching (PDQ hashes) over this peer's quota; retry later".into(),
    ))
}

/// Whether a batch with `n` urgent items gets urgent treatment: each
/// within the sender's urgent quota (`[limits] peer_urgent_*`). Past
/// it the batch is received as bulk work and counted.
fn urgent_admitted(core: &Core, sender: &NodeId, n: usize) -> bool {
    if n == 0 {
        return false;
    }
    let key = format!("urgent node:{sender}");
    let quota = core.config.urgent_quota;
    if core.limiter.admit_work(&key, quota, n).is_ok() {
        return true;
    }
    core.metrics.urgent_demoted(sender.as_str(), n as u64);
    tracing::warn!(peer = %sender, reports = n, "urgent reports past the peer's urgent quota received as bulk work");
    false
}

/// Opens the batch where the flow says. The outer `Err` is a failure of
/// the node (the task died), the inner one a refusal of the batch.
async fn open<F: Flow>(
    core: &Arc<Core>,
    sender: &NodeId,
    flow: &Arc<F>,
    now: i64,
) -> Result<Result<Vec<F::Opened>, NodeError>, NodeError> {
    match flow.opening() {
        Opening::Inline => Ok(flow.open(core, sender, now)),
        Opening::Background { urgent } => {
            let (core, sender, flow) = (core.clone(), sender.clone(), flow.clone());
            background::run_for(urgent, move || flow.open(&core, &sender, now))
                .await
                .map_err(|_| NodeError::Internal("verification task failed"))
        }
    }
}

/// One chunk in one transaction. A bulk chunk written while urgent work
/// arrived is undone and written again after it (once: bulk work always
/// gets through).
#[allow(clippy::too_many_arguments)]
async fn apply_chunk<F: Flow>(
    core: &Core,
    sender: &NodeId,
    flow: &F,
    chunk: &[F::Opened],
    offset: usize,
    now: i64,
    bulk: bool,
    effects: &mut Effects,
) -> Result<Vec<F::Answer>, NodeError> {
    let mut yielded = false;
    loop {
        let mut tx = if bulk {
            core.begin_bulk().await?
        } else {
            core.store.begin().await?
        };
        let mut these = Effects::default();
        let answers = flow
            .apply(core, &mut tx, sender, chunk, offset, now, &mut these)
            .await?;
        if bulk && !yielded && core.bulk_yields() {
            tx.rollback().await?;
            yielded = true;
            continue;
        }
        tx.commit().await?;
        effects.changed.extend(these.changed);
        effects.wake.extend(these.wake);
        return Ok(answers);
    }
}

/// After the commit: watchers hear of every changed case, and each peer
/// with new work has its worker woken (for an urgent batch relayed onward,
/// bulk work here waits for it).
fn tell(core: &Core, mut effects: Effects, urgent: bool) {
    for seq in effects.changed {
        core.case_changed(seq);
    }
    effects.wake.sort();
    effects.wake.dedup();
    for peer in effects.wake {
        if urgent {
            core.urgent.hold(&peer);
        }
        core.wake(&peer);
    }
}

/// The reason code and message of a refused batch, for its audit entry.
pub(crate) fn refusal_code(e: &NodeError) -> (&'static str, String) {
    let code = match e {
        NodeError::Invalid(i) => i.code,
        NodeError::PermissionDenied(_) => "permission-denied",
        NodeError::Wire(WireError::IdentityMismatch { .. }) => "identity-mismatch",
        NodeError::Wire(WireError::BadSignature(_)) => "bad-signature",
        NodeError::Wire(WireError::UnknownKey { .. }) => "unknown-key",
        NodeError::Wire(WireError::UnknownSigner(_)) => "unknown-signer",
        NodeError::Wire(WireError::SuspendedSigner(_)) => "suspended-signer",
        NodeError::Wire(WireError::NonCanonical(_)) => "non-canonical",
        NodeError::Wire(WireError::Malformed(_)) => "malformed",
        NodeError::Wire(WireError::BadHopChain(_)) => "bad-hop-chain",
        NodeError::Wire(WireError::TooManyHops) => "too-many-hops",
        NodeError::Wire(WireError::Missing(_)) => "missing-field",
        NodeError::Wire(WireError::Invalid(i)) => i.code,
        NodeError::Overloaded(_) => "over-quota",
        _ => "refused",
    };
    (code, e.to_string())
}

/// Refuses a batch of more than `MAX_BATCH` items (or, unless `may_be_empty`,
/// none) before anything else is done with it. `field` is the request's
/// field, `noun` what the message calls its items.
pub(crate) fn check_size(
    field: &'static str,
    noun: &str,
    len: usize,
    may_be_empty: bool,
) -> Result<(), NodeError> {
    if len > MAX_BATCH || (len == 0 && !may_be_empty) {
        return Err(crate::report::InvalidInput::new(
            "batch-size",
            field,
            format!("1 to {MAX_BATCH} {noun}, got {len}"),
        )
        .into());
    }
    Ok(())
}
