//! The node's behaviour, independent of gRPC: intake of analysts' reports,
//! receiving envelopes and status updates from peers, and working cases.
//! `Core` is the shared state; `run` wires it to the listener and the
//! delivery workers and returns a handle that shuts them down.

pub mod cases;
pub mod checkpoint;
pub mod intake;
pub mod overview;
pub mod receive;

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
    #[error("database {path}")]
    Store {
        path: String,
        #[source]
        source: StoreError,
    },
    #[error("geo data")]
    Geo(#[from] GeoError),
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

/// Shared state of a running node.
pub struct Core {
    pub config: NodeConfig,
    pub started_at_ms: i64,
    pub me: NodeId,
    pub key: NodeKey,
    pub store: Store,
    pub geo: &'static GeoDb,
    /// Per peer: wake-ups for its delivery worker and what it last saw.
    pub peers: BTreeMap<NodeId, Arc<crate::federation::PeerLink>>,
    pub metrics: crate::metrics::Metrics,
    pub limiter: crate::api::limits::Limiter,
}

impl Core {
    pub fn now_ms() -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.as_millis() as i64
    }

    pub fn wake(&self, peer: &str) {
        if let Some((_, link)) = self.peers.iter().find(|(id, _)| id.as_str() == peer) {
            link.wake.notify_one();
        }
    }

    /// A peer reached us: if its worker is backing off, it retries now.
    pub fn contacted_by(&self, peer: &NodeId) {
        if let Some(link) = self.peers.get(peer) {
            link.contact.notify_one();
        }
    }

    /// Writes the audit entry of a refused input (and nothing else).
    pub async fn audit_refusal(&self, actor: &str, code: &str, message: &str, bytes: &[u8]) {
        self.metrics.refusal(code);
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
        .is_some_and(|n| n.keys.iter().any(|k| k.id == key.key_id()));
    if !in_directory {
        return Err(StartError::KeyNotInDirectory {
            node: me.to_string(),
            key_id: key.key_id().to_owned(),
        });
    }
    let server_tls = tls::server_config(&config.tls.files())?;
    let client_tls = tls::client_config(&config.tls.files())?;
    let store = Store::open(&config.database)
        .await
        .map_err(|source| StartError::Store {
            path: config.database.display().to_string(),
            source,
        })?;
    checkpoint::check_latest(&store)
        .await
        .map_err(StartError::AuditIntegrity)?;
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
    let core = Arc::new(Core {
        me: me.clone(),
        key,
        store,
        geo,
        peers: links,
        started_at_ms: Core::now_ms(),
        metrics: crate::metrics::Metrics::default(),
        limiter: crate::api::limits::Limiter::default(),
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
        server_tls,
        watch.clone(),
    ));
    for peer in peers {
        let channel = tls::channel(
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
            channel,
            watch.clone(),
        ));
    }
    tasks.spawn(checkpoint::run_schedule(core.clone(), watch.clone()));
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
    tracing::info!(node = %me, %addr, "node started");
    Ok(NodeHandle {
        addr,
        metrics_addr,
        core,
        shutdown,
        tasks,
    })
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
        "key_id": core.key.key_id(),
        "config_sha256": file_sha256(&cfg.path),
        "directory_sha256": file_sha256(&cfg.directory_path),
        "tls_cert_sha256": file_sha256(&cfg.tls.cert),
        "ca_sha256": file_sha256(&cfg.tls.ca),
        "listen": addr.to_string(),
        "peers": peers.iter().map(|p| p.id.to_string()).collect::<Vec<_>>(),
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
