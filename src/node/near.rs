//! Near-duplicate matching of incoming reports against the open cases'
//! PDQ hashes, in memory (`report::near`) and never by a search in the
//! writer's transaction.
//!
//! The index is kept up to date from the store, not from this process's
//! own writes: at the start of a writer transaction that needs it (before
//! the transaction writes anything) it reads the `pdq:` keys of the
//! reports stored since it last looked. Every writer holds the writer
//! lock, so what it reads then is everything committed, on SQLite and on
//! PostgreSQL with several replicas alike, and nothing a transaction that
//! is later rolled back wrote. Cases opened in the current transaction
//! are matched from the transaction's own list (`Effects::near`).
//!
//! A case that is closed or joined stays in the index until a match finds
//! it closed (it is then forgotten) or the index is rebuilt: matches are
//! always confirmed open in the transaction before a report joins them.

use super::inbound::Effects;
use super::{Core, NodeError};
use crate::report::content::{PDQ_MATCH_DISTANCE, parse_pdq, pdq_distance};
use crate::report::near::NearIndex;
use crate::store::Tx;

/// The index and how far into the reports table it has read.
#[derive(Debug, Default)]
pub struct Near {
    index: NearIndex,
    /// The highest report sequence number read.
    mark: i64,
}

/// Reads the PDQ hashes committed since the index last looked. Call it
/// in a writer transaction before the transaction writes anything.
pub async fn catch_up(core: &Core, tx: &mut Tx) -> Result<(), NodeError> {
    let mark = core.near.lock().map_err(poisoned)?.mark;
    let upto = tx.last_report_seq().await?;
    if upto <= mark {
        return Ok(());
    }
    let rows = tx.pdq_keys_between(mark, upto).await?;
    let mut near = core.near.lock().map_err(poisoned)?;
    for (seq, origin, hex, open) in rows {
        if open && let Some(h) = parse_pdq(&hex) {
            near.index.insert(seq, &origin, h);
        }
    }
    near.mark = upto;
    core.metrics.pdq_indexed(near.index.len());
    Ok(())
}

/// Whether the index holds a near-duplicate of `pdq` (its case not yet
/// confirmed open): such a report needs `open_match`.
pub fn may_match(core: &Core, pdq: &[[u8; 32]]) -> Result<bool, NodeError> {
    if pdq.is_empty() {
        return Ok(false);
    }
    Ok(!core
        .near
        .lock()
        .map_err(poisoned)?
        .index
        .near(pdq)
        .is_empty())
}

/// The oldest open case holding a near-duplicate of `pdq`, confirmed
/// open in `tx`; candidates found closed are forgotten.
pub async fn open_match(
    core: &Core,
    tx: &mut Tx,
    effects: &Effects,
    pdq: &[[u8; 32]],
) -> Result<Option<i64>, NodeError> {
    let mut candidates = core.near.lock().map_err(poisoned)?.index.near(pdq);
    candidates.truncate(MAX_CANDIDATES);
    let open = tx.open_among(&candidates).await?;
    if open.len() < candidates.len() {
        let mut near = core.near.lock().map_err(poisoned)?;
        for seq in candidates.iter().filter(|s| !open.contains(s)) {
            near.index.forget(*seq);
        }
    }
    Ok(open
        .first()
        .copied()
        .or_else(|| near_in(&effects.near, pdq)))
}

/// Candidates confirmed per report, at most (the oldest): a peer that
/// stored many near-identical cases cannot make one report's check long.
const MAX_CANDIDATES: usize = 64;

/// Of `cases` (case seq, hash), the first with a near-duplicate of
/// `pdq`: cases opened earlier in this transaction.
pub fn near_in(cases: &[(i64, [u8; 32])], pdq: &[[u8; 32]]) -> Option<i64> {
    cases
        .iter()
        .find(|(_, h)| pdq.iter().any(|p| pdq_distance(p, h) <= PDQ_MATCH_DISTANCE))
        .map(|(seq, _)| *seq)
}

/// Whether a new case of `origin` gets its PDQ hashes indexed: each
/// origin may have `[limits] peer_open_pdq_cases` open cases in the
/// index. Past it the case is stored and worked as any other, but later
/// near-duplicates will not find it; counted and logged.
pub fn may_index(core: &Core, origin: &str) -> Result<bool, NodeError> {
    let open = core.near.lock().map_err(poisoned)?.index.open_of(origin);
    if open < core.config.open_pdq_per_peer {
        return Ok(true);
    }
    core.metrics.pdq_unindexed(origin);
    tracing::warn!(peer = %origin, open, "PDQ hashes of a new case not indexed: the origin's open near-duplicate cases are at [limits] peer_open_pdq_cases");
    Ok(false)
}

fn poisoned<T>(_: T) -> NodeError {
    NodeError::Internal("near-duplicate index lock poisoned")
}
