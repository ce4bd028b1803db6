//! The node's behaviour, independent of gRPC: intake of analysts' reports,
//! receiving envelopes and status updates from peers, and working cases.
//! `Core` is the shared state; `run` wires it to the listener and the
//! delivery workers and returns a handle that shuts them down.

pub mod amend;
pub mod background;
pub mod cases;
pub mod checkpoint;
pub mod export;
pub mod health;
pub mod intake;
pub mod overview;
pub mod receive;
pub mod retention;
pub mod stats;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::audit;
use crate::config::NodeConfig;
use crate::crypto::signing::NodeKey;
use crate::crypto::tls::{self, TlsError};
use crate::geo::{GeoDb, GeoError};
use crate::identity::NodeId;
use crate::report::InvalidInput;
use crate::store::{Store, StoreError};

/// Everything that can go wrong while handling a request. `api::status`
/// is the one place that turns these into gRPC statuses.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error(transparent)]
    Wire(#[from] crate::report::wire::WireError),
    #[error("storage failed")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("signing key")]
    Key(#[from] crate::crypto::signing::KeyError),
    #[error("signing key {key_id} of {node} is not in the directory; add it or fix `signing.key`")]
    KeyNotInDirectory { node: String, key_id: String },
    #[error("TLS")]
    Tls(#[from] TlsError),
    #[error(
        "database {path} is in use by another node process (lock {lock} held); a SQLite database has one node process — for several, use PostgreSQL replicas"
    )]
    AlreadyRunning { path: String, lock: String },
    #[error("database {path}")]
    Store {
        path: String,
        #[source]
        source: StoreError,
    },
    #[error("geo data")]
    Geo(#[from] GeoError),
    #[error("reload refused: {0}")]
    Reload(String),
    #[error(
        "audit log integrity check failed: {0}; run `alertrelay audit verify --config ...` for details"
    )]
    AuditIntegrity(String),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("peer {peer} endpoint")]
    Channel {
        peer: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Urgent work in progress on this node — an urgent submission being
/// stored, an urgent batch being received, delivered or settled, and
/// urgent reports queued for a peer whose urgent lane has not yet sent
/// them. Bulk work (intake groups, received chunks, delivery batches,
/// settlements) waits for it between its chunks, so an urgent report
/// shares neither the writer nor the CPU with more than the one bulk chunk
/// already under way when it arrived — from its intake to its receipt, not
/// only step by step.
#[derive(Default)]
pub struct UrgentGate {
    busy: std::sync::atomic::AtomicUsize,
    /// Peers with urgent reports queued and not yet sent, each until when
    /// the hold lapses on its own (a peer that is down must not slow bulk
    /// work for the others for longer than that).
    held: std::sync::Mutex<Vec<(String, std::time::Instant)>>,
    idle: tokio::sync::Notify,
    /// When urgent work was last seen here.
    last_seen: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Held while urgent work is in progress.
pub struct UrgentWork<'a>(&'a UrgentGate);

/// How long urgent reports queued for a peer hold bulk work back at most,
/// when the peer's urgent lane does not get them out sooner.
pub const URGENT_HOLD: std::time::Duration = std::time::Duration::from_secs(2);

/// For this long after urgent work was last seen, bulk work goes in
/// chunks of `URGENT_TIMES_CHUNK`: the next urgent report then waits for a
/// short bulk transaction at most, at the price of more commits per bulk
/// report while urgent reports keep coming.
pub const URGENT_TIMES: std::time::Duration = std::time::Duration::from_secs(5);
pub const URGENT_TIMES_CHUNK: usize = 16;

impl UrgentGate {
    pub fn enter(&self) -> UrgentWork<'_> {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.seen();
        UrgentWork(self)
    }

    fn seen(&self) {
        *self.last_seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
    }

    /// How many reports bulk work should take per transaction, `normal`
    /// unless urgent work was seen in the last `URGENT_TIMES`.
    pub fn bulk_chunk(&self, normal: usize) -> usize {
        let last = *self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < URGENT_TIMES) {
            normal.min(URGENT_TIMES_CHUNK)
        } else {
            normal
        }
    }

    /// Urgent reports are queued for `peer`: bulk work waits until its
    /// urgent lane has sent them (`release`), or `URGENT_HOLD` passed.
    pub fn hold(&self, peer: &str) {
        self.seen();
        let until = std::time::Instant::now() + URGENT_HOLD;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match held.iter_mut().find(|(p, _)| p == peer) {
            Some((_, u)) => *u = until,
            None => held.push((peer.to_owned(), until)),
        }
    }

    /// `peer`'s urgent lane found nothing more to send (or cannot reach
    /// the peer): its hold ends.
    pub fn release(&self, peer: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let before = held.len();
        held.retain(|(p, _)| p != peer);
        if held.len() < before && held.is_empty() && self.quiet_now() {
            self.idle.notify_waiters();
        }
    }

    fn quiet_now(&self) -> bool {
        self.busy.load(std::sync::atomic::Ordering::SeqCst) == 0
    }

    /// True when no urgent work is in progress or held for.
    pub fn is_idle(&self) -> bool {
        if !self.quiet_now() {
            return false;
        }
        let now = std::time::Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|(_, until)| *until > now);
        held.is_empty()
    }

    /// Waits until no urgent work is in progress — at most a second, so
    /// bulk work is slowed by a stream of urgent reports, never stopped.
    pub async fn wait_idle(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        while !self.is_idle() && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = self.idle.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(2)) => {}
            }
        }
    }
}

impl Drop for UrgentWork<'_> {
    fn drop(&mut self) {
        if self
            .0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
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
    pub peers: BTreeMap<NodeId, Arc<crate::federation::PeerLink>>,
    pub metrics: crate::metrics::Metrics,
    pub limiter: crate::api::limits::Limiter,
    /// The sequence number of every case that was created or changed, for
    /// `WatchCases`. Bounded: a watcher that falls behind is told so.
    pub case_events: tokio::sync::broadcast::Sender<i64>,
    /// Urgent work in progress here: bulk work waits at its next chunk.
    pub urgent: UrgentGate,
    /// Concurrent single bulk submissions, committed together.
    pub group: intake::GroupCommit,
    /// Readiness as last probed (`health`): drives `grpc.health.v1`.
    pub ready: tokio::sync::watch::Sender<health::Readiness>,
}

impl Core {
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
    pub async fn reload(&self, actor: &str) -> Result<(), StartError> {
        let directory = crate::directory::Directory::load(&self.config.directory_path)
            .map_err(|e| StartError::Reload(e.to_string()))?;
        // A rotated signing key: sign with the new one from now on; peers
        // accept the old one until its window in the directory ends.
        let key = NodeKey::load(&self.config.signing_key)?;
        let listed = directory
            .node(&self.me)
            .is_some_and(|n| n.keys.iter().any(|k| k.id == key.key_id() && !k.revoked));
        if !listed {
            return Err(StartError::KeyNotInDirectory {
                node: self.me.to_string(),
                key_id: key.key_id().to_owned(),
            });
        }
        let key_id = key.key_id().to_owned();
        let verifier =
            tls::client_verifier(&self.config.tls.files(), &self.config.directory.federation)?;
        let server = tls::server_config_with(&self.config.tls.files(), verifier.clone())?;
        let client = tls::client_config(&self.config.tls.files())?;
        let new_peers: Vec<String> = directory
            .nodes()
            .iter()
            .filter(|n| n.id != self.me && !self.peers.contains_key(&n.id))
            .map(|n| n.id.to_string())
            .collect();
        if let Ok(mut d) = self.directory.write() {
            *d = Arc::new(directory);
        }
        if let Ok(mut k) = self.key.write() {
            *k = Arc::new(key);
        }
        if let Ok(mut s) = self.server_tls.write() {
            *s = server;
        }
        if let Ok(mut v) = self.client_verifier.write() {
            *v = verifier;
        }
        if let Ok(mut c) = self.client_tls.write() {
            *c = client;
        }
        self.generation.send_modify(|g| *g += 1);
        if !new_peers.is_empty() {
            tracing::warn!(
                ?new_peers,
                "new peers in the directory take effect at the next restart"
            );
        }
        let entry = audit::Entry::new(
            "node.reloaded",
            actor,
            self.me.to_string(),
            serde_json::json!({
                "directory_sha256": file_sha256(&self.config.directory_path),
                "key_id": key_id,
                "tls_cert_sha256": file_sha256(&self.config.tls.cert),
                "crls_sha256": self.config.tls.crls.iter().map(|c| file_sha256(c)).collect::<Vec<_>>(),
                "new_peers_pending_restart": new_peers,
            }),
        );
        let logged = async {
            let mut tx = self.store.begin().await?;
            tx.audit(&entry, Core::now_ms()).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = logged {
            tracing::error!(error = %e, "cannot audit the reload");
        }
        tracing::info!("directory, certificates and CRLs reloaded");
        Ok(())
    }

    pub fn wake(&self, peer: &str) {
        if let Some((_, link)) = self.peers.iter().find(|(id, _)| id.as_str() == peer) {
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
        if let Some((_, link)) = self.peers.iter().find(|(id, _)| id.as_str() == peer) {
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

    /// Writes the audit entry of a refused input (and nothing else).
    pub async fn audit_refusal(&self, actor: &str, code: &str, message: &str, bytes: &[u8]) {
        self.metrics.refusal(code);
        // Reasons name fields and codes, never a reported URL (they go into
        // the audit log too).
        tracing::warn!(caller = %actor, reason_code = code, reason = message, "input refused");
        let entry = audit::Entry::new(
            "input.refused",
            actor,
            "",
            serde_json::json!({
                "reason_code": code,
                "reason": message,
                "sha256": hex::encode(crate::report::wire::digest(bytes)),
                "bytes": bytes.len(),
            }),
        );
        let result = async {
            let mut tx = self.store.begin().await?;
            tx.audit(&entry, Core::now_ms()).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot write the audit entry of a refusal");
        }
    }
}

/// A running node. Dropping it does not stop it; call `shutdown`.
pub struct NodeHandle {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served, when configured.
    pub metrics_addr: Option<SocketAddr>,
    pub core: Arc<Core>,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
    /// On SQLite, held while this node runs (`lock_sqlite`).
    _lock: Option<std::fs::File>,
}

impl NodeHandle {
    /// Stops accepting, lets in-flight requests finish, stops the workers
    /// and closes the database.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.core.store.close().await;
    }

    /// Resolves when shutdown has been requested by a signal.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// A replica id for a process that was given none: host name, process id
/// and a random part (two processes on one host never share one).
fn generated_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(40)
        .collect();
    let host = if host.is_empty() { "host".into() } else { host };
    let random: u32 = rand::random();
    format!("{host}-{}-{random:08x}", std::process::id())
}

/// Starts a node on `config.listen`.
pub async fn start(config: NodeConfig) -> Result<NodeHandle, StartError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
    start_with_listener(config, listener).await
}

/// Starts a node on an already bound listener (tests bind 127.0.0.1:0).
pub async fn start_with_listener(
    config: NodeConfig,
    listener: tokio::net::TcpListener,
) -> Result<NodeHandle, StartError> {
    let key = NodeKey::load(&config.signing_key)?;
    let me = config.node_id.clone();
    let in_directory = config
        .directory
        .node(&me)
        .is_some_and(|n| n.keys.iter().any(|k| k.id == key.key_id() && !k.revoked));
    if !in_directory {
        return Err(StartError::KeyNotInDirectory {
            node: me.to_string(),
            key_id: key.key_id().to_owned(),
        });
    }
    let client_verifier = tls::client_verifier(&config.tls.files(), &config.directory.federation)?;
    let server_tls = tls::server_config_with(&config.tls.files(), client_verifier.clone())?;
    let client_tls = tls::client_config(&config.tls.files())?;
    let lock = match config.database.sqlite_path() {
        Some(path) => Some(lock_sqlite(path)?),
        None => None,
    };
    let store = Store::connect(&config.database)
        .await
        .map_err(|source| StartError::Store {
            path: config.database.display().to_string(),
            source,
        })?;
    checkpoint::check_latest(&store)
        .await
        .map_err(StartError::AuditIntegrity)?;
    let replica = config
        .delivery
        .replica
        .clone()
        .unwrap_or_else(generated_replica_id);
    // Claims left by an earlier run: on SQLite every claim is this
    // process's (one process per file); on PostgreSQL only those under
    // this replica's configured id (other replicas' claims lapse with
    // their leases).
    let holder = match (&store, &config.delivery.replica) {
        (Store::Sqlite(_), _) => Some(None),
        (Store::Postgres(_), Some(id)) => Some(Some(id.as_str())),
        (Store::Postgres(_), None) => None,
    };
    if let Some(holder) = holder {
        store
            .release_claims_of(holder)
            .await
            .map_err(|source| StartError::Store {
                path: config.database.display().to_string(),
                source,
            })?;
    }
    let geo = GeoDb::embedded()?;
    let peers: Vec<_> = config
        .directory
        .nodes()
        .iter()
        .filter(|n| n.id != me)
        .cloned()
        .collect();
    let links = peers
        .iter()
        .map(|p| {
            (
                p.id.clone(),
                Arc::new(crate::federation::PeerLink::default()),
            )
        })
        .collect();
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen.to_string(),
        source,
    })?;
    let client_tls = Arc::new(std::sync::RwLock::new(client_tls));
    let core = Arc::new(Core {
        directory: std::sync::RwLock::new(Arc::new(config.directory.clone())),
        server_tls: std::sync::RwLock::new(server_tls),
        client_verifier: std::sync::RwLock::new(client_verifier),
        client_tls: client_tls.clone(),
        generation: tokio::sync::watch::channel(0).0,
        me: me.clone(),
        replica: replica.clone(),
        key: std::sync::RwLock::new(Arc::new(key)),
        store,
        geo,
        peers: links,
        started_at_ms: Core::now_ms(),
        metrics: crate::metrics::Metrics::default(),
        limiter: crate::api::limits::Limiter::default(),
        case_events: tokio::sync::broadcast::channel(1024).0,
        urgent: UrgentGate::default(),
        group: Default::default(),
        ready: tokio::sync::watch::channel(health::Readiness {
            peers_configured: peers.len(),
            ..Default::default()
        })
        .0,
        config,
    });
    audit_start(&core, addr, &peers)
        .await
        .map_err(|source| StartError::Store {
            path: core.config.database.display().to_string(),
            source,
        })?;

    let (shutdown, watch) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::api::server::serve(
        core.clone(),
        listener,
        watch.clone(),
    ));
    let mut probes = Vec::new();
    for peer in peers {
        let channel = tls::channel_reloadable(
            &peer.endpoint,
            Some(peer.id.clone()),
            &core.config.directory.federation,
            client_tls.clone(),
            core.config.delivery.request_timeout,
        )
        .map_err(|source| StartError::Channel {
            peer: peer.id.to_string(),
            source,
        })?;
        tasks.spawn(crate::federation::worker::run(
            core.clone(),
            peer.id.clone(),
            channel.clone(),
            watch.clone(),
        ));
        tasks.spawn(crate::federation::witness::run(
            core.clone(),
            peer.id.clone(),
            channel.clone(),
            watch.clone(),
        ));
        probes.push((peer.id.clone(), channel));
    }
    tasks.spawn(health::run(
        core.clone(),
        probes,
        core.config.health_probe_interval,
        watch.clone(),
    ));
    tasks.spawn(checkpoint::run_schedule(core.clone(), watch.clone()));
    tasks.spawn(crate::federation::wakeups::run(core.clone(), watch.clone()));
    tasks.spawn(retention::run_schedule(core.clone(), watch.clone()));
    let mut metrics_addr = None;
    if let Some(listen) = core.config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: listen.to_string(),
                source,
            })?;
        metrics_addr = listener.local_addr().ok();
        tasks.spawn(crate::metrics::serve(core.clone(), listener, watch.clone()));
    }
    tracing::info!(node = %me, %addr, replica = %replica, backend = core.store.backend(), "node started");
    Ok(NodeHandle {
        addr,
        metrics_addr,
        core,
        shutdown,
        tasks,
        _lock: lock,
    })
}

/// One node process per SQLite database: it keeps its outbox claims in
/// memory (`store::sqlite::Claims`), so a second process on the same file
/// would send every queued report again. An exclusive lock on
/// `<database>.lock` (mode 0600, created if needed, left in place), held
/// for the node's life and released by the kernel when the process ends,
/// however it ends. Commands that only read or maintain the database
/// (`audit verify`, `db backup`, `retention`, `doctor`) do not take it.
fn lock_sqlite(db: &std::path::Path) -> Result<std::fs::File, StartError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let lock = std::path::PathBuf::from(name);
    let failed = |source: std::io::Error| StartError::Store {
        path: db.display().to_string(),
        source: StoreError::Create {
            path: lock.display().to_string(),
            source,
        },
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::AlreadyRunning {
            path: db.display().to_string(),
            lock: lock.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
    }
}

fn file_sha256(path: &std::path::Path) -> String {
    std::fs::read(path)
        .map(|b| hex::encode(crate::report::wire::digest(&b)))
        .unwrap_or_default()
}

/// Audits the start-up, and every change of configuration, directory, TLS
/// certificate or signing key since the previous start.
async fn audit_start(
    core: &Core,
    addr: SocketAddr,
    peers: &[crate::directory::DirectoryNode],
) -> Result<(), StoreError> {
    let cfg = &core.config;
    let facts = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "key_id": core.key().key_id(),
        "config_sha256": file_sha256(&cfg.path),
        "directory_sha256": file_sha256(&cfg.directory_path),
        "tls_cert_sha256": file_sha256(&cfg.tls.cert),
        "ca_sha256": file_sha256(&cfg.tls.ca),
        "listen": addr.to_string(),
        "peers": peers.iter().map(|p| p.id.to_string()).collect::<Vec<_>>(),
        // Which hosting data routed reports from now on.
        "geo_sources": cfg
            .geo
            .describe()
            .iter()
            .map(|g| format!("{} ({})", g.name, g.dataset_date))
            .collect::<Vec<_>>(),
    });
    let previous = core
        .store
        .last_audit_of_kind("node.started")
        .await?
        .and_then(|row| serde_json::from_str::<serde_json::Value>(&row.detail).ok());
    let me = format!("node:{}", core.me);
    let now = Core::now_ms();
    let mut tx = core.store.begin().await?;
    if let Some(prev) = previous {
        for (field, kind) in [
            ("key_id", "key.changed"),
            ("config_sha256", "config.changed"),
            ("directory_sha256", "directory.changed"),
            ("tls_cert_sha256", "certificate.changed"),
            ("ca_sha256", "ca.changed"),
            ("geo_sources", "geo.changed"),
        ] {
            if prev.get(field) != facts.get(field) {
                tracing::warn!(what = field, "changed since the last start");
                tx.audit(
                    &audit::Entry::new(
                        kind,
                        me.clone(),
                        core.me.to_string(),
                        serde_json::json!({
                            "field": field,
                            "before": prev.get(field),
                            "after": facts.get(field),
                        }),
                    ),
                    now,
                )
                .await?;
            }
        }
    }
    tx.audit(
        &audit::Entry::new("node.started", me, core.me.to_string(), facts),
        now,
    )
    .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::UrgentGate;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Bulk work waits while urgent reports are queued for a peer, and
    /// goes on as soon as the peer's urgent lane has sent them.
    #[tokio::test]
    async fn bulk_waits_for_urgent_reports_held_for_a_peer() {
        let gate = Arc::new(UrgentGate::default());
        assert!(gate.is_idle());
        gate.hold("DE-1");
        assert!(!gate.is_idle());
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                gate.wait_idle().await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiter.is_finished(),
            "bulk work went on while urgent work was held"
        );
        // Another peer's lane finishing does not end this hold.
        gate.release("FR-1");
        assert!(!gate.is_idle());
        gate.release("DE-1");
        let waited = waiter.await.unwrap();
        assert!(gate.is_idle());
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_millis(900),
            "waited {waited:?}"
        );
    }

    /// A hold never stops bulk work: one wait lasts at most a second, and a
    /// hold nobody releases (the peer is down) lapses on its own.
    #[tokio::test]
    async fn an_unreleased_hold_slows_bulk_work_but_never_stops_it() {
        let gate = UrgentGate::default();
        gate.hold("DE-1");
        let started = Instant::now();
        gate.wait_idle().await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(950) && waited < Duration::from_millis(1500),
            "waited {waited:?}"
        );
        assert!(!gate.is_idle());
        tokio::time::sleep(super::URGENT_HOLD - waited + Duration::from_millis(50)).await;
        assert!(gate.is_idle(), "the hold did not lapse");
        // Urgent work in progress holds bulk work back the same way.
        let work = gate.enter();
        assert!(!gate.is_idle());
        drop(work);
        assert!(gate.is_idle());
    }
}
