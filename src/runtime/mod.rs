//! Starts and stops a node: loads its keys, TLS material, database and
//! geo data, builds the shared `node::Core`, and runs the gRPC listener
//! (`api::server`), one delivery worker and one witness per peer
//! (`federation`), the health probe, the checkpoint and retention
//! schedules, the metrics endpoint and the web console. `NodeHandle::shutdown`
//! stops them.
//! Entry points (`serve`, the demo, the bench, tests) start nodes here.

mod metrics_http;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::audit::merkle::CompactRange;
use crate::config::NodeConfig;
use crate::crypto::signing::NodeKey;
use crate::crypto::tls::{self, TlsError};
use crate::directory::DirectoryNode;
use crate::federation::channel::{Channels, PeerChannel};
use crate::geo::{GeoDb, GeoError};
use crate::node::{Core, CoreParts, checkpoint, retention, startup};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("signing key")]
    Key(#[from] crate::crypto::signing::KeyError),
    #[error("signing key {key_id} of {node} is not in the directory; add it or fix `signing.key`")]
    KeyNotInDirectory { node: String, key_id: String },
    #[error("TLS")]
    Tls(#[from] TlsError),
    #[error(
        "directory {path} is serial {found}, older than serial {applied} this node already applied (a rollback); put the latest signed directory back (any peer serves it)"
    )]
    DirectoryRollback {
        path: String,
        found: u64,
        applied: u64,
    },
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
    #[error("[dns]")]
    Dns(#[from] crate::node::dns::DnsStartError),
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
    #[error("console")]
    Console(#[from] crate::console::ConsoleError),
    #[error("peer {peer} endpoint")]
    Channel {
        peer: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// A running node. Dropping it does not stop it; call `shutdown`.
pub struct NodeHandle {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served, when configured.
    pub metrics_addr: Option<SocketAddr>,
    /// The web console, when `[console]` is configured.
    pub console: Option<crate::console::Running>,
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
        if let Err(e) = startup::audit_stop(&self.core).await {
            tracing::error!(error = %e, "cannot audit the stop (the next start will alert a crash)");
        }
        self.core.store.close().await;
    }

    /// Resolves when shutdown has been requested by a signal.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
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
    if !key_listed(&config, &key) {
        return Err(StartError::KeyNotInDirectory {
            node: config.node_id.to_string(),
            key_id: key.key_id().to_owned(),
        });
    }
    let client_verifier = tls::client_verifier(&config.tls.files(), &config.directory.federation)?;
    let server_tls = tls::server_config_with(&config.tls.files(), client_verifier.clone())?;
    let client_tls = Arc::new(std::sync::RwLock::new(tls::client_config(
        &config.tls.files(),
    )?));
    let lock = match config.database.sqlite_path() {
        Some(path) => Some(lock_sqlite(path)?),
        None => None,
    };
    let (store, edge) = open_store(&config).await?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen.to_string(),
        source,
    })?;
    let replica = config
        .delivery
        .replica
        .clone()
        .unwrap_or_else(generated_replica_id);
    let dns = crate::node::dns::DnsService::new(&config.dns)?;
    let core = Arc::new(Core::new(CoreParts {
        dns,
        key,
        server_tls,
        client_verifier,
        client_tls,
        store,
        geo: GeoDb::embedded()?,
        replica,
        config,
    }));
    *core.frontier.lock().unwrap_or_else(|e| e.into_inner()) = edge;
    check_no_rollback(&core).await?;
    let peers = other_nodes(&core);
    startup::audit_start(&core, addr, &peers)
        .await
        .map_err(|source| store_error(&core.config, source))?;
    let (shutdown, watch) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::api::server::serve(
        core.clone(),
        listener,
        watch.clone(),
    ));
    let channels = spawn_peer_tasks(&core, &peers, &mut tasks, &watch)?;
    tasks.spawn(checkpoint::run_schedule(core.clone(), watch.clone()));
    if core.config.exchange.protocol >= 2 {
        tasks.spawn(crate::federation::exchange::run(
            core.clone(),
            channels.clone(),
            watch.clone(),
        ));
    }
    tasks.spawn(crate::federation::wakeups::run(core.clone(), watch.clone()));
    tasks.spawn(retention::run_schedule(core.clone(), watch.clone()));
    tasks.spawn(crate::node::alerts::scan::run_schedule(
        core.clone(),
        watch.clone(),
    ));
    tasks.spawn(crate::notify::run(core.clone(), watch.clone()));
    tasks.spawn(crate::node::handoff::recheck_schedule(
        core.clone(),
        watch.clone(),
    ));
    let metrics_addr = match core.config.metrics_listen {
        Some(listen) => Some(metrics_http::spawn(&core, listen, &mut tasks, &watch).await?),
        None => None,
    };
    let console = match &core.config.console {
        Some(cfg) => Some(crate::console::spawn(&core, cfg, &mut tasks, &watch).await?),
        None => None,
    };
    tracing::info!(node = %core.me, %addr, replica = %core.replica, backend = core.store.backend(), "node started");
    if core.config.tls.crls.is_empty() {
        tracing::error!(
            "tls.crls is empty: NO CERTIFICATE REVOCATION IS CHECKED; a revoked node or operator certificate still gets in (set tls.crls to the CA's CRL; `alertrelay doctor` fails until then)"
        );
    }
    Ok(NodeHandle {
        addr,
        metrics_addr,
        console,
        core,
        shutdown,
        tasks,
        _lock: lock,
    })
}

/// Refuses to start with a signed directory older than one this node
/// already applied (its audit log says which).
async fn check_no_rollback(core: &Core) -> Result<(), StartError> {
    let directory = core.directory();
    let Some(info) = &directory.signed else {
        return Ok(());
    };
    let found = info.serial;
    if info.expires_at_ms <= Core::now_ms() {
        tracing::error!(
            serial = found,
            "ALERT: the signed directory has expired; the node goes on with it, but the secretariat must publish a new version"
        );
    }
    let applied = crate::node::membership::highest_serial_seen(core)
        .await
        .map_err(|source| store_error(&core.config, source))?;
    if found < applied {
        return Err(StartError::DirectoryRollback {
            path: core.config.directory_path.display().to_string(),
            found,
            applied,
        });
    }
    Ok(())
}

fn key_listed(config: &NodeConfig, key: &NodeKey) -> bool {
    config
        .directory
        .node(&config.node_id)
        .is_some_and(|n| n.keys.iter().any(|k| k.id == key.key_id() && !k.revoked))
}

fn store_error(config: &NodeConfig, source: StoreError) -> StartError {
    StartError::Store {
        path: config.database.display().to_string(),
        source,
    }
}

/// Opens the database, checks the audit log against its latest signed
/// checkpoint, and releases the outbox claims an earlier run left: on
/// SQLite every claim is this process's (one process per file); on
/// PostgreSQL only those under this replica's configured id (other
/// replicas' claims lapse with their leases).
async fn open_store(config: &NodeConfig) -> Result<(Store, Option<CompactRange>), StartError> {
    let store = Store::connect(&config.database)
        .await
        .map_err(|source| store_error(config, source))?;
    let edge = checkpoint::check_latest(&store)
        .await
        .map_err(StartError::AuditIntegrity)?;
    let holder = match (&store, &config.delivery.replica) {
        (Store::Sqlite(_), _) => Some(None),
        (Store::Postgres(_), Some(id)) => Some(Some(id.as_str())),
        (Store::Postgres(_), None) => None,
    };
    if let Some(holder) = holder {
        store
            .release_claims_of(holder)
            .await
            .map_err(|source| store_error(config, source))?;
    }
    Ok((store, edge))
}

fn other_nodes(core: &Core) -> Vec<DirectoryNode> {
    core.config
        .directory
        .nodes()
        .iter()
        .filter(|n| n.id != core.me)
        .cloned()
        .collect()
}

/// One delivery worker and one witness per peer, over one channel each
/// (rebuilt after every reload), the health probe and the directory
/// exchange that use the same channels, and the task that starts the same
/// for nodes a newer directory adds (`grow`).
fn spawn_peer_tasks(
    core: &Arc<Core>,
    peers: &[DirectoryNode],
    tasks: &mut tokio::task::JoinSet<()>,
    watch: &tokio::sync::watch::Receiver<bool>,
) -> Result<Channels, StartError> {
    let channels: Channels = Default::default();
    for peer in peers {
        spawn_peer(core, &peer.id, &channels, tasks, watch).map_err(|source| {
            StartError::Channel {
                peer: peer.id.to_string(),
                source,
            }
        })?;
    }
    tasks.spawn(crate::federation::probe::run(
        core.clone(),
        channels.clone(),
        core.config.health_probe_interval,
        watch.clone(),
    ));
    tasks.spawn(grow(core.clone(), channels.clone(), watch.clone()));
    Ok(channels)
}

/// A peer's channel, delivery worker and witness.
fn spawn_peer(
    core: &Arc<Core>,
    peer: &crate::identity::NodeId,
    channels: &Channels,
    tasks: &mut tokio::task::JoinSet<()>,
    watch: &tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let channel = Arc::new(PeerChannel::new(core, peer)?);
    tasks.spawn(crate::federation::worker::run(
        core.clone(),
        peer.clone(),
        channel.clone(),
        watch.clone(),
    ));
    tasks.spawn(crate::federation::witness::run(
        core.clone(),
        peer.clone(),
        channel.clone(),
        watch.clone(),
    ));
    if let Ok(mut c) = channels.write() {
        c.push((peer.clone(), channel));
    }
    Ok(())
}

/// After each reload or newer directory: a peer link, channel, worker and
/// witness for every node that joined, without a restart.
async fn grow(
    core: Arc<Core>,
    channels: Channels,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut reloaded = core.generation.subscribe();
    loop {
        tokio::select! {
            changed = reloaded.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
        }
        let directory = core.directory();
        let added = core.peers.add_new(
            directory
                .nodes()
                .iter()
                .filter(|n| n.id != core.me)
                .map(|n| n.id.clone()),
        );
        for peer in added {
            match spawn_peer(&core, &peer, &channels, &mut tasks, &shutdown) {
                Ok(()) => tracing::info!(%peer, "new peer: delivery and witnessing started"),
                Err(e) => tracing::error!(%peer, error = %e, "cannot start delivery to a new peer"),
            }
        }
    }
    while tasks.join_next().await.is_some() {}
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

/// One node process per SQLite database: it keeps its outbox claims in
/// memory (`store::sqlite::Claims`), so a second process on the same file
/// would send every queued report again. An exclusive lock on
/// `<database>.lock` (mode 0600, created if needed, left in place), held
/// for the node's life and released by the kernel when the process ends,
/// however it ends. Commands that only read the database (`audit verify`,
/// `db backup`, `doctor`) do not take it; `db migrate-to` and `retention`
/// with no node running do, so no node starts while they work.
pub fn lock_sqlite(db: &std::path::Path) -> Result<std::fs::File, StartError> {
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
