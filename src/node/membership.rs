//! The signed directory at a node: a version offered by a peer (or found
//! in the node's own directory file) is checked as a successor of the one
//! the node has (`directory::signed::check_successor`), and either applied
//! without a restart, as a reload does (its CRL written to the node's CRL
//! file first, then the directory file, then everything swapped in and
//! every open connection re-checked), or refused, audited and alerted.
//! Also: what each peer said of its protocol, and the check at start that
//! the directory file was not rolled back behind what the node applied.

use std::collections::BTreeMap;
use std::path::Path;

use crate::audit;
use crate::directory::signed::{Refusal, SignedDirectory, Verdict, check_successor};
use crate::identity::NodeId;
use crate::store::StoreError;

use super::{Core, ReloadError};

/// The protocol this build speaks (`wire::PROTOCOL`).
pub const PROTOCOL: u32 = crate::wire::PROTOCOL;
/// The oldest protocol this build still talks to.
pub const OLDEST_PROTOCOL: u32 = PROTOCOL - 1;
/// What this build offers, by name, in `NodeInfo.features`.
pub const FEATURES: &[&str] = &[
    "forward-stream",
    "receipt-batch",
    "directory-exchange",
    "protocol-version",
];

/// The protocol a peer speaks from what its `NodeInfo` states: nothing
/// (0) is the previous release; a newer one than this build's is talked
/// to as this build's.
pub fn stated(protocol_version: u32) -> u32 {
    match protocol_version {
        0 => OLDEST_PROTOCOL,
        p => p.min(PROTOCOL),
    }
}

/// The membership side of `Core`.
#[derive(Default)]
pub struct State {
    /// One version is checked and applied at a time (also against a
    /// reload).
    pub lock: tokio::sync::Mutex<()>,
    /// Wakes the exchange: a peer has a newer version, or this node just
    /// applied one (its peers should hear of it now).
    pub wake: tokio::sync::Notify,
    /// The last refusal audited per peer (reason and payload digest): the
    /// same bad version offered again each round is counted, not audited
    /// again.
    last_refused: std::sync::Mutex<BTreeMap<String, (String, [u8; 32])>>,
    /// What each peer said of itself: its protocol (1 when it does not
    /// serve directories) and features.
    peers: std::sync::Mutex<BTreeMap<NodeId, Stated>>,
    /// Versions applied and refused, for the metrics.
    pub applied: std::sync::atomic::AtomicU64,
}

/// What a peer said of itself (`NodeInfo`, or the directory exchange).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stated {
    pub protocol: u32,
    /// Empty for a node of protocol 1, or when only the exchange was seen.
    pub features: Vec<String>,
}

impl State {
    /// Records `peer`'s protocol (1 when it does not serve directories);
    /// the features it stated stay while the protocol is the same.
    pub fn peer_protocol(&self, peer: &NodeId, protocol: u32) {
        if let Ok(mut g) = self.peers.lock() {
            let s = g.entry(peer.clone()).or_default();
            if s.protocol != protocol {
                *s = Stated {
                    protocol,
                    features: Vec::new(),
                };
            }
        }
    }

    /// Records what `peer` states in `NodeInfo`.
    pub fn peer_info(&self, peer: &NodeId, info: &crate::pb::NodeInfoResponse) {
        if let Ok(mut g) = self.peers.lock() {
            g.insert(
                peer.clone(),
                Stated {
                    protocol: stated(info.protocol_version),
                    features: info.features.clone(),
                },
            );
        }
    }

    /// `peer`'s protocol as last seen, if it was.
    pub fn protocol_of(&self, peer: &NodeId) -> Option<u32> {
        self.stated(peer).map(|s| s.protocol)
    }

    /// What `peer` said of itself, if it was seen.
    pub fn stated(&self, peer: &NodeId) -> Option<Stated> {
        self.peers.lock().ok().and_then(|g| g.get(peer).cloned())
    }

    /// Forgets what `peer` said of its protocol: it is asked again.
    pub fn forget_protocol(&self, peer: &NodeId) {
        if let Ok(mut g) = self.peers.lock() {
            g.remove(peer);
        }
    }

    /// Each peer's protocol as last seen.
    pub fn peer_protocols(&self) -> BTreeMap<NodeId, u32> {
        self.peers
            .lock()
            .map(|g| g.iter().map(|(k, s)| (k.clone(), s.protocol)).collect())
            .unwrap_or_default()
    }
}

/// What came of an offered version.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    /// This node's directory is a plain file: nothing is exchanged.
    NotSigned,
    /// The version this node has.
    Same,
    /// Applied: the new serial.
    Applied(u64),
}

/// Why an offered version was not taken.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Valid, but this node cannot work under it (its own key not listed,
    /// TLS material that does not load): audited, nothing changed.
    #[error("cannot apply it here: {0}")]
    NotApplicable(String),
}

impl OfferError {
    pub fn code(&self) -> &'static str {
        match self {
            OfferError::Refused(r) => r.code(),
            OfferError::NotApplicable(_) => "directory-not-applicable",
        }
    }
}

/// Takes `doc`, offered by `from` (`node:ID`, or `file` for the node's
/// own directory file), if it is a valid newer version of the signed
/// directory: applied at once; otherwise refused and audited.
pub async fn offer(core: &Core, from: &str, doc: SignedDirectory) -> Result<Offered, OfferError> {
    let _one_at_a_time = core.membership.lock.lock().await;
    let current = core.directory();
    let Some(info) = current.signed.clone() else {
        return Ok(Offered::NotSigned);
    };
    let result = match check_successor(&info, &current.federation, &doc, Core::now_ms()) {
        Ok(Verdict::Same) => return Ok(Offered::Same),
        Ok(Verdict::Newer(directory)) => apply(core, from, *directory, info.serial).await,
        Err(refusal) => Err(OfferError::Refused(refusal)),
    };
    if let Err(e) = &result {
        refused(core, from, e, &doc).await;
    }
    result
}

/// Applies a checked newer version: CRL, then the directory file, then
/// the swap (as a reload).
async fn apply(
    core: &Core,
    from: &str,
    directory: crate::directory::Directory,
    previous: u64,
) -> Result<Offered, OfferError> {
    let Some(info) = directory.signed.clone() else {
        return Err(OfferError::NotApplicable("not signed".into()));
    };
    let not_applicable = |e: &dyn std::fmt::Display| OfferError::NotApplicable(e.to_string());
    if let Some(crl) = &info.crl {
        install_crl(core, crl).map_err(|e| not_applicable(&e))?;
    }
    let prepared = core
        .prepare(directory)
        .map_err(|e: ReloadError| not_applicable(&format!("{e:#}")))?;
    write_atomically(
        &core.config.directory_path,
        info.document.to_json().as_bytes(),
    )
    .map_err(|e| not_applicable(&e))?;
    let facts = serde_json::json!({
        "from": from,
        "previous_serial": previous,
        "issued_at": crate::directory::signed::rfc3339(info.issued_at_ms),
        "expires_at": crate::directory::signed::rfc3339(info.expires_at_ms),
        "directory_keys": info.keys.ids(),
        "payload_sha256": hex::encode(crate::wire::digest(&info.document.payload)),
    });
    core.swap(prepared, "directory.applied", from, facts).await;
    core.membership
        .applied
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        serial = info.serial,
        previous,
        from,
        "newer signed directory applied"
    );
    // Peers that have not heard of it yet ask us (we tell them our serial).
    core.membership.wake.notify_one();
    Ok(Offered::Applied(info.serial))
}

/// Writes the directory's CRL to the node's first CRL file when it is
/// newer (a higher CRL number) than the one there, or there is none.
fn install_crl(core: &Core, crl: &str) -> std::io::Result<()> {
    let Some(path) = core.config.tls.crls.first() else {
        return Ok(());
    };
    let offered = crate::crypto::pki::crl_number(crl);
    let have = std::fs::read_to_string(path)
        .ok()
        .and_then(|pem| crate::crypto::pki::crl_number(&pem));
    match (offered, have) {
        (Some(o), Some(h)) if o <= h => Ok(()),
        (None, _) => Ok(()),
        _ => write_atomically(path, crl.as_bytes()),
    }
}

/// Writes `bytes` to `path` through a temporary file beside it and a
/// rename: a reader (or a crash) sees the old file or the new, never half.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Audits and alerts a refused version, once per peer and distinct
/// version and reason; every refusal is counted
/// (`alertrelay_refusals_total{reason}`).
async fn refused(core: &Core, from: &str, e: &OfferError, doc: &SignedDirectory) {
    let digest = crate::wire::digest(&doc.payload);
    core.metrics.refusal(e.code());
    let again = core.membership.last_refused.lock().is_ok_and(|mut g| {
        let key = (e.code().to_owned(), digest);
        g.insert(from.to_owned(), key.clone()).as_ref() == Some(&key)
    });
    if again {
        return;
    }
    tracing::error!(from, reason_code = e.code(), reason = %e, "ALERT: signed directory refused");
    let entry = audit::Entry::new(
        "directory.refused",
        from,
        core.me.to_string(),
        serde_json::json!({
            "reason_code": e.code(),
            "reason": e.to_string().chars().take(512).collect::<String>(),
            "payload_sha256": hex::encode(digest),
            "bytes": doc.payload.len(),
            "serial_here": core.directory().serial(),
        }),
    );
    let event = super::alerts::events::directory_refused(
        from,
        e.code(),
        &digest,
        core.directory().serial(),
    );
    let logged = async {
        let mut tx = core.store.begin().await?;
        tx.audit(&entry, Core::now_ms()).await?;
        let new = super::alerts::raise_in(core, &mut tx, &event).await?;
        tx.commit().await?;
        Ok::<_, StoreError>(new)
    }
    .await;
    match logged {
        Ok(true) => core.alert_wake.notify_one(),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "cannot audit the refused directory"),
    }
}

/// The highest serial this node has applied or started with, from its
/// audit log (0 when none).
pub async fn highest_serial_seen(core: &Core) -> Result<u64, StoreError> {
    let mut highest = 0;
    for kind in ["directory.applied", "node.started", "node.reloaded"] {
        let row = core.store.last_audit_of_kind(kind).await?;
        let serial = row
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.detail).ok())
            .and_then(|d| d.get("directory_serial").and_then(|s| s.as_u64()))
            .unwrap_or(0);
        highest = highest.max(serial);
    }
    Ok(highest)
}

/// Reads the node's own directory file: a newer version put there by its
/// operator (or the secretariat) is offered like one from a peer.
pub async fn check_own_file(core: &Core) -> Result<Offered, OfferError> {
    if core.directory().signed.is_none() {
        return Ok(Offered::NotSigned);
    }
    let Ok(bytes) = std::fs::read(&core.config.directory_path) else {
        return Ok(Offered::Same);
    };
    let doc = SignedDirectory::from_json(&bytes)?;
    offer(core, "file", doc).await
}
