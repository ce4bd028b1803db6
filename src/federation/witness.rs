//! Witnessing peers' audit logs (C2SP tlog-witness, pulled): fetch a
//! peer's latest checkpoint, check its signature, check it is consistent
//! with the last one this node cosigned (atomic check-and-store), cosign,
//! and hand the cosignature back. A rollback or fork is refused, audited,
//! logged as an alert, and reported to the peer.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::transport::Channel;

use crate::audit::merkle::{self, Hash};
use crate::audit::note::{self, Checkpoint, SignedNote};
use crate::audit::{self, log_origin, witness_name};
use crate::identity::NodeId;
use crate::node::Core;
use crate::node::checkpoint::signature_line;
use crate::pb;
use crate::pb::federation_client::FederationClient;
use crate::store::WitnessedRow;

pub async fn run(
    core: Arc<Core>,
    peer: NodeId,
    channel: std::sync::Arc<super::channel::PeerChannel>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut generation, ch) = channel.current(&core);
    let mut client = FederationClient::new(ch);
    let mut last_alert: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(core.config.witness_interval) => {}
            _ = shutdown.changed() => return,
        }
        // After a reload, a new channel (new TLS material and CRLs).
        let (now_generation, ch) = channel.current(&core);
        if now_generation != generation {
            generation = now_generation;
            client = FederationClient::new(ch);
        }
        // A peer no longer active is not witnessed (nor told anything).
        if !core.directory().node(&peer).is_some_and(|n| n.active) {
            continue;
        }
        let outcome = witness_once(&core, &peer, &mut client).await;
        // An answer, whatever it says, shows the peer is reachable: the
        // node's one view of it (`peers`, `status`, health) says so.
        if outcome.is_ok() {
            core.peer_reachable(&peer, true);
        }
        match outcome {
            Ok(Outcome::Cosigned(_)) => core.metrics.witness(peer.as_str(), "cosigned"),
            Ok(Outcome::Refused(reason, checkpoint)) => {
                core.metrics.witness(peer.as_str(), "refused");
                // Alert once per distinct refusal, not every round.
                if last_alert.as_deref() != Some(reason.as_str()) {
                    alert(&core, &peer, &reason, &checkpoint).await;
                    if let Err(e) = send(&mut client, &checkpoint, "", &reason).await {
                        tracing::warn!(peer = %peer, error = %e, "could not tell the peer why");
                    }
                    last_alert = Some(reason);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(peer = %peer, error = %e, "witnessing skipped"),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing (new) to cosign.
    Nothing,
    Cosigned(u64),
    /// Refused, with the reason and the checkpoint text refused.
    Refused(String, String),
}

/// One round of witnessing `peer`. Public so tests and the demo can drive
/// it without waiting for the schedule.
pub async fn witness_once(
    core: &Core,
    peer: &NodeId,
    client: &mut FederationClient<Channel>,
) -> Result<Outcome, String> {
    let note_text = client
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .map_err(|s| format!("GetCheckpoint: {:?}: {}", s.code(), s.message()))?
        .into_inner()
        .note;
    if note_text.is_empty() {
        return Ok(Outcome::Nothing);
    }
    let (signed, cp) = match checked(core, peer, &note_text)? {
        Ok(checked) => checked,
        Err(refusal) => return Ok(refusal),
    };
    let prev = core
        .store
        .witnessed(peer.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let prev_state = prev.as_ref().map(|p| {
        let mut root: Hash = [0; 32];
        if p.root.len() == 32 {
            root.copy_from_slice(&p.root);
        }
        (u64::try_from(p.size).unwrap_or(0), root)
    });
    if let (Some(p), Some((size0, root0))) = (&prev, prev_state)
        && let Some(stop) = extends(client, &signed, &cp, size0, &root0, p).await?
    {
        return Ok(stop);
    }
    cosign(core, peer, client, &signed, &cp, note_text, prev_state).await
}

/// The peer's checkpoint, signed by one of its keys in the directory, for
/// its own log; or the refusal that says why not.
fn checked(
    core: &Core,
    peer: &NodeId,
    note_text: &str,
) -> Result<Result<(SignedNote, Checkpoint), Outcome>, String> {
    let origin = log_origin(&core.config.directory.federation, peer.as_str());
    let signed = SignedNote::parse(note_text).map_err(|e| format!("unreadable note: {e}"))?;
    // Keys valid now: not revoked, within their window.
    let now = Core::now_ms();
    let keys: Vec<_> = core
        .directory()
        .node(peer)
        .map(|n| n.keys_valid_at(now).copied().collect())
        .unwrap_or_default();
    if !keys
        .iter()
        .any(|k| note::verify_note(&signed, &origin, k).is_ok())
    {
        let why = "checkpoint not signed by the peer's directory key";
        return Ok(Err(refused(&signed.text, why)));
    }
    let cp =
        Checkpoint::parse_body(&signed.text).map_err(|e| format!("unreadable checkpoint: {e}"))?;
    if cp.origin != origin {
        let why = format!(
            "checkpoint names origin {:?}, expected {origin:?}",
            cp.origin
        );
        return Ok(Err(refused(&signed.text, why)));
    }
    // No log holds 2^63 entries: such a size is a lie, and stored clamped
    // it would make every honest checkpoint after it look like a rollback.
    if i64::try_from(cp.size).is_err() {
        let why = format!("checkpoint size {} is beyond any log's", cp.size);
        return Ok(Err(refused(&signed.text, why)));
    }
    Ok(Ok((signed, cp)))
}

/// Whether the checkpoint extends the one this node cosigned last (size
/// `size0`, root `root0`): `None` when it does (a consistency proof from
/// the peer shows it), else what to answer — a rollback, a fork, an
/// inconsistent log, or nothing new (the cosignature is handed over again
/// in case the peer never got it).
async fn extends(
    client: &mut FederationClient<Channel>,
    signed: &SignedNote,
    cp: &Checkpoint,
    size0: u64,
    root0: &Hash,
    prev: &WitnessedRow,
) -> Result<Option<Outcome>, String> {
    if cp.size < size0 {
        let why = format!(
            "rollback: checkpoint of size {} after this node cosigned size {size0}",
            cp.size
        );
        return Ok(Some(refused(&signed.text, why)));
    }
    if cp.size == size0 {
        if &cp.root != root0 {
            let why = format!("fork: a second, different checkpoint of size {size0}");
            return Ok(Some(refused(&signed.text, why)));
        }
        send(client, &signed.text, &prev.cosignature, "").await?;
        return Ok(Some(Outcome::Nothing));
    }
    let proof = client
        .get_consistency_proof(pb::ConsistencyProofRequest {
            old_size: size0,
            new_size: cp.size,
        })
        .await
        .map_err(|s| format!("GetConsistencyProof: {:?}: {}", s.code(), s.message()))?
        .into_inner()
        .hashes;
    let proof: Vec<Hash> = proof
        .iter()
        .map(|h| <Hash>::try_from(h.as_slice()).unwrap_or([0; 32]))
        .collect();
    if let Err(e) = merkle::verify_consistency(size0, cp.size, root0, &cp.root, &proof) {
        let why = format!(
            "inconsistent: checkpoint of size {} does not extend the cosigned size {size0} ({e})",
            cp.size
        );
        return Ok(Some(refused(&signed.text, why)));
    }
    Ok(None)
}

/// Cosigns the checkpoint, stores it as this node's view of the peer's log
/// (only if that view did not move meanwhile: an atomic check-and-store),
/// and hands the cosignature to the peer.
async fn cosign(
    core: &Core,
    peer: &NodeId,
    client: &mut FederationClient<Channel>,
    signed: &SignedNote,
    cp: &Checkpoint,
    note_text: String,
    prev_state: Option<(u64, Hash)>,
) -> Result<Outcome, String> {
    let now_secs = u64::try_from(Core::now_ms() / 1000).unwrap_or(0);
    let name = witness_name(&core.config.directory.federation, core.me.as_str());
    let sig = crate::audit::note::cosign(&signed.text, &name, core.key().signing_key(), now_secs)
        .map_err(|e| format!("cannot cosign: {e}"))?;
    let line = signature_line(&signed.text, sig);
    let row = WitnessedRow {
        log: peer.to_string(),
        size: i64::try_from(cp.size).map_err(|_| "checkpoint size beyond any log's".to_owned())?,
        root: cp.root.to_vec(),
        note: note_text,
        cosignature: line.clone(),
        updated_at_ms: Core::now_ms(),
    };
    let stored = async {
        let mut tx = core.store.begin().await?;
        let moved = tx
            .advance_witnessed(
                peer.as_str(),
                prev_state.as_ref().map(|(s, r)| (*s, r)),
                &row,
            )
            .await?;
        tx.commit().await?;
        Ok::<_, crate::store::StoreError>(moved)
    }
    .await
    .map_err(|e| e.to_string())?;
    if !stored {
        return Ok(Outcome::Nothing);
    }
    send(client, &signed.text, &line, "").await?;
    Ok(Outcome::Cosigned(cp.size))
}

fn refused(checkpoint: &str, reason: impl Into<String>) -> Outcome {
    Outcome::Refused(reason.into(), checkpoint.to_owned())
}

pub async fn send(
    client: &mut FederationClient<Channel>,
    checkpoint: &str,
    line: &str,
    refusal: &str,
) -> Result<(), String> {
    client
        .cosign(pb::CosignRequest {
            checkpoint: checkpoint.to_owned(),
            cosignature: line.to_owned(),
            refusal: refusal.to_owned(),
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("Cosign: {:?}: {}", s.code(), s.message()))
}

/// Records and raises a refusal to cosign (audited, counted by kind in
/// `alertrelay_witness_alarms_total`, and an alert); the caller tells the
/// peer.
pub async fn alert(core: &Core, peer: &NodeId, reason: &str, checkpoint: &str) {
    tracing::error!(peer = %peer, reason, "ALERT: refusing to cosign a peer's audit checkpoint");
    let kind = crate::node::alerts::events::witness_kind(reason);
    core.metrics.witness_alarm(peer.as_str(), kind);
    let entry = audit::Entry::new(
        "witness.refused",
        format!("node:{}", core.me),
        log_origin(&core.config.directory.federation, peer.as_str()),
        serde_json::json!({ "log": peer.as_str(), "reason": reason }),
    );
    let event = crate::node::alerts::events::witness_alarm(peer.as_str(), kind, reason, checkpoint);
    let result = async {
        let mut tx = core.store.begin().await?;
        tx.audit(&entry, Core::now_ms()).await?;
        crate::node::alerts::raise_in(core, &mut tx, &event).await?;
        tx.commit().await
    }
    .await;
    core.alert_wake.notify_one();
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot audit a witness refusal");
    }
}
