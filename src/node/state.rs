//! `Core`, the shared state of a running node: configuration, the
//! reloadable directory, keys and TLS material, the store, the peer links,
//! counters, the urgent gate. Everything above `node` reaches the node
//! through it; `runtime` builds it at start-up.

use std::sync::Arc;

use crate::audit;
use crate::config::NodeConfig;
use crate::crypto::signing::{KeyError, NodeKey};
use crate::crypto::tls::{self, TlsError};
use crate::geo::GeoDb;
use crate::identity::NodeId;
use crate::store::Store;

use super::admission::Limiter;
use super::health::Readiness;
use super::intake::GroupCommit;
use super::metrics::Metrics;
use super::peers::Peers;
use super::urgent::UrgentGate;

/// What start-up loaded, for `Core::new`.
pub struct CoreParts {
    pub config: NodeConfig,
    pub key: NodeKey,
    pub server_tls: Arc<rustls::ServerConfig>,
    pub client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    pub client_tls: Arc<std::sync::RwLock<Arc<rustls::ClientConfig>>>,
    pub store: Store,
    pub geo: &'static GeoDb,
    pub replica: String,
    /// The host-name resolver (`[dns]`).
    pub dns: super::dns::DnsService,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("directory: {0}")]
    Directory(String),
    #[error("signing key")]
    Key(#[from] KeyError),
    #[error("signing key {key_id} of {node} is not in the directory; add it or fix `signing.key`")]
    KeyNotInDirectory { node: String, key_id: String },
    #[error("TLS")]
    Tls(#[from] TlsError),
}

/// What a reload swaps in, loaded and checked (`Core::prepare`).
pub struct Prepared {
    directory: crate::directory::Directory,
    key: NodeKey,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

/// Shared state of a running node.
pub struct Core {
    /// The configuration as loaded at start. The directory and the TLS
    /// material are reloadable: use `directory()` and the TLS accessors.
    pub config: NodeConfig,
    directory: std::sync::RwLock<Arc<crate::directory::Directory>>,
    server_tls: std::sync::RwLock<Arc<rustls::ServerConfig>>,
    client_verifier: std::sync::RwLock<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    client_tls: Arc<std::sync::RwLock<Arc<rustls::ClientConfig>>>,
    /// Bumped by every reload; open connections close when it changes, so
    /// a revoked or suspended peer is cut off.
    pub generation: tokio::sync::watch::Sender<u64>,
    pub started_at_ms: i64,
    pub me: NodeId,
    /// This process's replica id (`delivery.replica`, or generated): the
    /// holder of its claims on outbox rows, and in its logs.
    pub replica: String,
    key: std::sync::RwLock<Arc<NodeKey>>,
    pub store: Store,
    pub geo: &'static GeoDb,
    /// Per peer: wake-ups for its delivery worker and what it last saw.
    pub peers: Peers,
    pub metrics: Metrics,
    pub limiter: Limiter,
    /// The sequence number of every case that was created or changed, for
    /// `WatchCases`. Bounded: a watcher that falls behind is told so.
    pub case_events: tokio::sync::broadcast::Sender<i64>,
    /// Urgent work in progress here: bulk work waits at its next chunk.
    pub urgent: UrgentGate,
    /// Concurrent single bulk submissions, committed together.
    pub group: GroupCommit,
    /// The audit tree's right edge as of the last checkpoint this process
    /// signed (`checkpoint::make`): the next one folds only the entries
    /// after it, never the whole log again. The log only grows, so it
    /// stays a true prefix (also when other replicas append).
    pub frontier: std::sync::Mutex<Option<crate::audit::merkle::CompactRange>>,
    /// Resolves reported URLs' host names for routing (`[dns]`).
    pub dns: super::dns::DnsService,
    /// People's account states as last read for their operator
    /// certificates: name → (disabled, when read) (`users::disabled`).
    pub account_states: std::sync::Mutex<std::collections::HashMap<String, (bool, i64)>>,
    /// The open cases' PDQ hashes, for near-duplicate matching (`near`).
    pub near: std::sync::Mutex<super::near::Near>,
    /// Readiness as last probed (`health`): drives `grpc.health.v1`.
    pub ready: tokio::sync::watch::Sender<Readiness>,
    /// The signed directory's exchange with peers (`membership`).
    pub membership: super::membership::State,
    /// Notifications were queued (`alerts::raise`): the notifier looks.
    pub alert_wake: tokio::sync::Notify,
}

impl Core {
    /// The node's shared state from what start-up loaded: a peer link for
    /// every other node of the directory, counters at zero, not yet ready.
    pub fn new(parts: CoreParts) -> Core {
        let me = parts.config.node_id.clone();
        let peers = Peers::new(
            parts
                .config
                .directory
                .nodes()
                .iter()
                .filter(|n| n.id != me)
                .map(|n| n.id.clone()),
        );
        let peers_configured = peers.len();
        Core {
            directory: std::sync::RwLock::new(Arc::new(parts.config.directory.clone())),
            server_tls: std::sync::RwLock::new(parts.server_tls),
            client_verifier: std::sync::RwLock::new(parts.client_verifier),
            client_tls: parts.client_tls,
            generation: tokio::sync::watch::channel(0).0,
            me,
            replica: parts.replica,
            key: std::sync::RwLock::new(Arc::new(parts.key)),
            store: parts.store,
            geo: parts.geo,
            peers,
            started_at_ms: Core::now_ms(),
            metrics: Metrics::default(),
            limiter: Limiter::default(),
            case_events: tokio::sync::broadcast::channel(1024).0,
            urgent: UrgentGate::default(),
            group: Default::default(),
            frontier: std::sync::Mutex::new(None),
            dns: parts.dns,
            near: Default::default(),
            account_states: Default::default(),
            ready: tokio::sync::watch::channel(Readiness {
                peers_configured,
                ..Default::default()
            })
            .0,
            membership: Default::default(),
            alert_wake: tokio::sync::Notify::new(),
            config: parts.config,
        }
    }

    /// The client TLS configuration, shared with every outbound channel
    /// (a reload swaps it for all of them).
    pub fn client_tls(&self) -> Arc<std::sync::RwLock<Arc<rustls::ClientConfig>>> {
        self.client_tls.clone()
    }

    pub fn now_ms() -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.as_millis() as i64
    }

    /// The signing key as last (re)loaded.
    pub fn key(&self) -> Arc<NodeKey> {
        match self.key.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The federation directory as last (re)loaded.
    pub fn directory(&self) -> Arc<crate::directory::Directory> {
        match self.directory.read() {
            Ok(d) => d.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether a connection's client may go on after a reload: its
    /// certificate chain still verifies (CA, CRLs) and, for a node, it is
    /// still an active directory member.
    pub fn still_trusted(
        &self,
        chain: &[rustls::pki_types::CertificateDer<'static>],
        identity: &Result<crate::identity::PeerIdentity, crate::identity::IdentityError>,
    ) -> bool {
        let verifier = match self.client_verifier.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let Some((leaf, rest)) = chain.split_first() else {
            return false;
        };
        if verifier
            .verify_client_cert(leaf, rest, rustls::pki_types::UnixTime::now())
            .is_err()
        {
            return false;
        }
        match identity {
            Ok(crate::identity::PeerIdentity::Node(id)) => {
                self.directory().node(id).is_some_and(|n| n.active)
            }
            Ok(crate::identity::PeerIdentity::Operator { node, .. }) => node == &self.me,
            Err(_) => false,
        }
    }

    pub fn server_tls(&self) -> Arc<rustls::ServerConfig> {
        match self.server_tls.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the directory, certificates, keys and CRLs from the paths
    /// in the configuration, swaps them in, and closes every open
    /// connection so that peers reconnect under the new rules (a revoked
    /// or suspended one cannot). Nothing changes if anything fails to load.
    /// A signed directory is replaced only by a valid newer version
    /// (`directory::signed::check_successor`).
    pub async fn reload(&self, actor: &str) -> Result<(), ReloadError> {
        if self.directory().signed.is_some() {
            // A newer version put in the file is taken as from a peer (its
            // CRL installed, audited as applied, or refused and audited).
            super::membership::check_own_file(self)
                .await
                .map_err(|e| ReloadError::Directory(e.to_string()))?;
        }
        let _one_at_a_time = self.membership.lock.lock().await;
        let directory = self.directory_from_file()?;
        let prepared = self.prepare(directory)?;
        self.swap(prepared, "node.reloaded", actor, serde_json::json!({}))
            .await;
        Ok(())
    }

    /// The directory file as a reload takes it: a plain one as it is; a
    /// signed one only as a valid successor of the current one (the same
    /// one changes nothing).
    fn directory_from_file(&self) -> Result<crate::directory::Directory, ReloadError> {
        use crate::directory::signed::{Verdict, check_successor};
        let loaded = crate::directory::Directory::load(&self.config.directory_path)
            .map_err(|e| ReloadError::Directory(e.to_string()))?;
        let current = self.directory();
        let (Some(info), Some(new)) = (&current.signed, &loaded.signed) else {
            if current.signed.is_some() {
                return Err(ReloadError::Directory(
                    "this node has a signed directory: a plain directory.toml cannot replace it"
                        .into(),
                ));
            }
            return Ok(loaded);
        };
        match check_successor(info, &current.federation, &new.document, Core::now_ms()) {
            Ok(Verdict::Same) => Ok((*current).clone()),
            Ok(Verdict::Newer(d)) => Ok(*d),
            Err(refusal) => Err(ReloadError::Directory(refusal.to_string())),
        }
    }

    /// Loads what a reload swaps in under `directory`: the signing key
    /// (which `directory` must list for this node), the TLS material and
    /// CRLs from their files. Changes nothing.
    pub fn prepare(&self, directory: crate::directory::Directory) -> Result<Prepared, ReloadError> {
        // A rotated signing key: sign with the new one from now on; peers
        // accept the old one until its window in the directory ends.
        let key = NodeKey::load(&self.config.signing_key)?;
        let listed = directory
            .node(&self.me)
            .is_some_and(|n| n.keys.iter().any(|k| k.id == key.key_id() && !k.revoked));
        if !listed {
            return Err(ReloadError::KeyNotInDirectory {
                node: self.me.to_string(),
                key_id: key.key_id().to_owned(),
            });
        }
        let verifier =
            tls::client_verifier(&self.config.tls.files(), &self.config.directory.federation)?;
        let server = tls::server_config_with(&self.config.tls.files(), verifier.clone())?;
        let client = tls::client_config(&self.config.tls.files())?;
        Ok(Prepared {
            directory,
            key,
            verifier,
            server,
            client,
        })
    }

    /// Swaps in what `prepare` loaded, closes every open connection (each
    /// re-checks its client: `still_trusted`), and audits it as `kind`
    /// with `facts` added.
    pub async fn swap(
        &self,
        p: Prepared,
        kind: &'static str,
        actor: &str,
        facts: serde_json::Value,
    ) {
        let key_id = p.key.key_id().to_owned();
        let serial = p.directory.serial();
        let new_peers: Vec<String> = p
            .directory
            .nodes()
            .iter()
            .filter(|n| n.id != self.me && !self.peers.contains_key(&n.id))
            .map(|n| n.id.to_string())
            .collect();
        if let Ok(mut d) = self.directory.write() {
            *d = Arc::new(p.directory);
        }
        if let Ok(mut k) = self.key.write() {
            *k = Arc::new(p.key);
        }
        if let Ok(mut s) = self.server_tls.write() {
            *s = p.server;
        }
        if let Ok(mut v) = self.client_verifier.write() {
            *v = p.verifier;
        }
        if let Ok(mut c) = self.client_tls.write() {
            *c = p.client;
        }
        self.generation.send_modify(|g| *g += 1);
        if !new_peers.is_empty() {
            // `runtime` starts their workers on the generation change.
            tracing::info!(?new_peers, "new peers in the directory");
        }
        let mut detail = serde_json::json!({
            "directory_sha256": super::startup::file_sha256(&self.config.directory_path),
            "directory_serial": serial,
            "key_id": key_id,
            "tls_cert_sha256": super::startup::file_sha256(&self.config.tls.cert),
            "crls_sha256": self.config.tls.crls.iter().map(|c| super::startup::file_sha256(c)).collect::<Vec<_>>(),
            "new_peers": new_peers,
        });
        if let (Some(d), serde_json::Value::Object(extra)) = (detail.as_object_mut(), facts) {
            d.extend(extra);
        }
        let entry = audit::Entry::new(kind, actor, self.me.to_string(), detail);
        let logged = async {
            let mut tx = self.store.begin().await?;
            tx.audit(&entry, Core::now_ms()).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = logged {
            tracing::error!(error = %e, "cannot audit the reload");
        }
        tracing::info!(
            directory_serial = serial,
            "directory, certificates and CRLs reloaded"
        );
    }

    pub fn wake(&self, peer: &str) {
        if let Some(link) = self.peers.find(peer) {
            link.wake.notify_one();
            link.wake_urgent.notify_one();
        }
    }

    /// Starts a write transaction for bulk work: after the bulk
    /// transactions queued before it, and once no urgent work is in
    /// progress or held for (checked when it is first in the queue, so a
    /// queue of bulk work never slips in ahead of an urgent report).
    pub async fn begin_bulk(&self) -> Result<crate::store::Tx, crate::store::StoreError> {
        self.store.begin_bulk(self.urgent.wait_idle()).await
    }

    /// A bulk transaction written while urgent work arrived should be
    /// undone and written again after it (callers do so once per chunk, so
    /// bulk work always gets through); counted when it is.
    pub fn bulk_yields(&self) -> bool {
        if self.urgent.is_idle() {
            return false;
        }
        self.metrics
            .bulk_yielded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// Wakes one lane of a peer's worker: new urgent or bulk work.
    pub fn wake_lane(&self, peer: &str, urgent: bool) {
        if let Some(link) = self.peers.find(peer) {
            if urgent {
                self.urgent.hold(peer);
                link.wake_urgent.notify_one();
            } else {
                link.wake.notify_one();
            }
        }
    }

    /// Tells watchers that case `seq` was created or changed (after commit).
    pub fn case_changed(&self, seq: i64) {
        let _ = self.case_events.send(seq);
    }

    /// A peer reached us: if its worker is backing off, it retries now.
    pub fn contacted_by(&self, peer: &NodeId) {
        if let Some(link) = self.peers.get(peer) {
            link.contact.notify_one();
            link.contact_urgent.notify_one();
            self.peer_reachable(peer, true);
        }
    }

    /// Passes `result` on; when it refuses an operator's request as bad
    /// input or an impossible change, first writes the refusal's audit
    /// entry, with a digest of every field the request carried (`fields`,
    /// length-prefixed) and the input's reason code (or `code`).
    pub async fn audit_if_refused<T>(
        &self,
        operator: &crate::identity::PeerIdentity,
        code: &'static str,
        fields: &[&[u8]],
        result: Result<T, super::NodeError>,
    ) -> Result<T, super::NodeError> {
        use super::NodeError;
        if let Err(e @ (NodeError::Invalid(_) | NodeError::FailedPrecondition(_))) = &result {
            let code = match e {
                NodeError::Invalid(i) => i.code,
                _ => code,
            };
            let mut request = Vec::new();
            for field in fields {
                request.extend_from_slice(&(field.len() as u64).to_be_bytes());
                request.extend_from_slice(field);
            }
            self.audit_refusal(&operator.to_string(), code, &e.to_string(), &request)
                .await;
        }
        result
    }

    /// Writes the audit entry of a refused input (and nothing else).
    pub async fn audit_refusal(&self, actor: &str, code: &str, message: &str, bytes: &[u8]) {
        self.audit_refusal_checked(actor, code, message, bytes)
            .await;
    }

    /// Writes the audit entry of a refused input (and nothing else) within
    /// the refusal quota of its caller (`node::admission::REFUSALS`): past
    /// it, the refusal is counted into the caller's next entry, so no one
    /// can grow the audit log (or make the node fsync) without bound.
    /// Returns whether it got an entry of its own. The message is bounded
    /// and escaped: no refusal copies its input into logs or the log.
    pub async fn audit_refusal_checked(
        &self,
        actor: &str,
        code: &str,
        message: &str,
        bytes: &[u8],
    ) -> bool {
        self.metrics.refusal(code);
        let message = bounded(message);
        let Some(suppressed) = self.limiter.refusal(actor) else {
            self.metrics.refusal("refusals-throttled");
            tracing::debug!(caller = %actor, reason_code = code, "refusal counted into the caller's next audit entry");
            return false;
        };
        // Reasons name fields and codes, never a reported URL (they go into
        // the audit log too).
        tracing::warn!(caller = %actor, reason_code = code, reason = %message, "input refused");
        let mut detail = serde_json::json!({
            "reason_code": code,
            "reason": message,
            "sha256": hex::encode(crate::wire::digest(bytes)),
            "bytes": bytes.len(),
        });
        if suppressed > 0 {
            detail["refusals_not_audited_since_last"] = suppressed.into();
        }
        let entry = audit::Entry::new("input.refused", actor, "", detail);
        let result = async {
            let mut tx = self.store.begin().await?;
            tx.audit(&entry, Core::now_ms()).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot write the audit entry of a refusal");
        }
        true
    }

    /// As `audit_refusal_checked`, first within the refusal quota of the
    /// connection it came on: one connection's flood of refused requests
    /// cannot use up its identity's entries either.
    pub async fn audit_refusal_on(
        &self,
        connection: Option<std::net::SocketAddr>,
        actor: &str,
        code: &str,
        message: &str,
        bytes: &[u8],
    ) -> bool {
        if let Some(remote) = connection
            && self
                .limiter
                .refusal(&format!("connection {remote}"))
                .is_none()
        {
            self.metrics.refusal(code);
            self.metrics.refusal("refusals-throttled");
            return false;
        }
        self.audit_refusal_checked(actor, code, message, bytes)
            .await
    }
}

/// At most 512 characters of `message`, control characters escaped: what
/// a refusal's log line and audit entry may carry of it.
pub fn bounded(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(520));
    for (i, c) in message.chars().enumerate() {
        if i == 512 {
            out.push('…');
            break;
        }
        let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}');
        if c.is_control() || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}
