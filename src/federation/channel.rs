//! Outbound gRPC channels: tonic endpoints over this node's own rustls
//! client (`crypto::tls::connect`), which refuses a server whose
//! certificate does not name the node meant; lazily connecting ones for
//! the delivery workers, witnesses and probes (`PeerChannel`, rebuilt after
//! a reload), and ones that connect at once and say why they cannot (the
//! command line).

use std::sync::Arc;

use rustls::ClientConfig;

use crate::crypto::tls::{ClientTls, connect};
use crate::identity::NodeId;
use crate::node::Core;

/// Opens a lazily connecting gRPC channel to `endpoint` (`https://host:port`)
/// over our own rustls client, and refuses the connection unless the
/// server's certificate names `expected` (when given).
pub fn channel(
    endpoint: &str,
    expected: Option<NodeId>,
    federation: &str,
    tls: Arc<ClientConfig>,
    timeout: std::time::Duration,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    channel_reloadable(
        endpoint,
        expected,
        federation,
        Arc::new(std::sync::RwLock::new(tls)),
        timeout,
    )
}

/// Why a connection to a node could not be made, in words an operator
/// can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{addr}: connection refused (is the node running and listening there?)")]
    Refused { addr: String },
    #[error(
        "{addr}: no answer within {secs} s (check the address, a firewall, or raise --connect-timeout)"
    )]
    TimedOut { addr: String, secs: u64 },
    #[error(
        "{addr}: the node's certificate was rejected: {why} (is this the node of this federation?)"
    )]
    CertificateRejected { addr: String, why: String },
    #[error(
        "{addr}: the TLS handshake failed: {why} (the node may not accept this certificate: expired, revoked, or of another federation)"
    )]
    Tls { addr: String, why: String },
    #[error("{addr}: cannot connect: {why}")]
    Other { addr: String, why: String },
    #[error("{addr}: bad address: {why}")]
    Address { addr: String, why: String },
}

/// Connects now (not at the first call), within `connect_timeout`, and
/// says where and why when it cannot. Calls on the channel then have
/// `timeout` each.
pub async fn connect_now(
    endpoint: &str,
    expected: Option<NodeId>,
    federation: &str,
    tls: Arc<ClientConfig>,
    connect_timeout: std::time::Duration,
    timeout: std::time::Duration,
) -> Result<tonic::transport::Channel, ConnectError> {
    let addr = endpoint.trim_start_matches("https://").to_owned();
    let plain = endpoint.replacen("https://", "http://", 1);
    let federation = federation.to_owned();
    let connector = tower::service_fn(move |uri: http::Uri| {
        let (tls, expected, federation) = (tls.clone(), expected.clone(), federation.clone());
        async move { connect(uri, tls, expected, &federation).await }
    });
    let endpoint = tonic::transport::Endpoint::from_shared(plain)
        .map_err(|e| ConnectError::Address {
            addr: addr.clone(),
            why: e.to_string(),
        })?
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .tcp_nodelay(true);
    match tokio::time::timeout(connect_timeout, endpoint.connect_with_connector(connector)).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(classify(&addr, connect_timeout, &e)),
        Err(_) => Err(ConnectError::TimedOut {
            addr,
            secs: connect_timeout.as_secs(),
        }),
    }
}

/// The connect error's cause, found in its chain of sources.
fn classify(
    addr: &str,
    connect_timeout: std::time::Duration,
    e: &(dyn std::error::Error + 'static),
) -> ConnectError {
    let addr = addr.to_owned();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            match io.kind() {
                ErrorKind::ConnectionRefused => return ConnectError::Refused { addr },
                ErrorKind::TimedOut => {
                    return ConnectError::TimedOut {
                        addr,
                        secs: connect_timeout.as_secs(),
                    };
                }
                ErrorKind::PermissionDenied => {
                    return ConnectError::CertificateRejected {
                        addr,
                        why: io.to_string(),
                    };
                }
                _ => {}
            }
            if let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return tls_error(addr, tls);
            }
        }
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return tls_error(addr, tls);
        }
        source = err.source();
    }
    ConnectError::Other {
        addr,
        why: e.to_string(),
    }
}

fn tls_error(addr: String, e: &rustls::Error) -> ConnectError {
    match e {
        rustls::Error::InvalidCertificate(why) => ConnectError::CertificateRejected {
            addr,
            why: format!("{why:?}"),
        },
        other => ConnectError::Tls {
            addr,
            why: other.to_string(),
        },
    }
}

/// Like [`channel`], with a configuration that a reload can swap.
pub fn channel_reloadable(
    endpoint: &str,
    expected: Option<NodeId>,
    federation: &str,
    tls: ClientTls,
    timeout: std::time::Duration,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    // TLS is done by the connector below, so tonic itself sees plain http.
    let plain = endpoint.replacen("https://", "http://", 1);
    let federation = federation.to_owned();
    let connector = tower::service_fn(move |uri: http::Uri| {
        let tls = match tls.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let expected = expected.clone();
        let federation = federation.clone();
        async move { connect(uri, tls, expected, &federation).await }
    });
    Ok(tonic::transport::Endpoint::from_shared(plain)?
        .connect_timeout(timeout)
        .timeout(timeout)
        .tcp_nodelay(true)
        // A connection that dies silently (a NAT or firewall forgetting it:
        // no RST, no FIN) is noticed by an unanswered HTTP/2 ping and
        // replaced, instead of swallowing every retry until TCP gives up.
        .http2_keep_alive_interval(timeout)
        .keep_alive_timeout(timeout)
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(connector))
}

/// Every peer's channel, shared by the health probe and the directory
/// exchange; `runtime` adds the channels of nodes that join.
pub type Channels = Arc<std::sync::RwLock<Vec<(NodeId, Arc<PeerChannel>)>>>;

/// The channels as they are now.
pub fn snapshot(channels: &Channels) -> Vec<(NodeId, Arc<PeerChannel>)> {
    channels.read().map(|c| c.clone()).unwrap_or_default()
}

/// One peer's outbound channel, shared by its delivery lanes, its witness
/// and the health probe. After a reload it is built anew from the
/// directory's endpoint for the peer and the new TLS material (CA, CRLs):
/// users pick the new one up at their next step and drop the old, whose
/// connections then close, so none made under the old rules goes on.
pub struct PeerChannel {
    peer: NodeId,
    current: std::sync::Mutex<(u64, tonic::transport::Channel)>,
}

impl PeerChannel {
    pub fn new(core: &Core, peer: &NodeId) -> Result<PeerChannel, tonic::transport::Error> {
        let generation = *core.generation.borrow();
        Ok(PeerChannel {
            peer: peer.clone(),
            current: std::sync::Mutex::new((generation, build(core, peer)?)),
        })
    }

    /// The channel as of the node's current configuration, and the
    /// generation it was built for.
    pub fn current(&self, core: &Core) -> (u64, tonic::transport::Channel) {
        let generation = *core.generation.borrow();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != generation {
            match build(core, &self.peer) {
                Ok(channel) => *current = (generation, channel),
                Err(e) => {
                    tracing::warn!(peer = %self.peer, error = %e, "cannot rebuild the channel after a reload; keeping the old one");
                }
            }
        }
        current.clone()
    }
}

/// A lazily connecting channel to `peer`'s endpoint as the directory says
/// now.
fn build(core: &Core, peer: &NodeId) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let endpoint = core
        .directory()
        .node(peer)
        .map(|n| n.endpoint.clone())
        .unwrap_or_default();
    channel_reloadable(
        &endpoint,
        Some(peer.clone()),
        &core.config.directory.federation,
        core.client_tls(),
        core.config.delivery.request_timeout,
    )
}
