//! The listener: accepts TCP (with TCP_NODELAY), completes the TLS 1.3
//! handshake off the accept loop (a client without a valid federation
//! certificate fails here), reads the client's identity once per
//! connection, and serves the gRPC services, health and reflection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::transport::server::Connected;

use crate::api::auth::ConnInfo;
use crate::api::federation::FederationService;
use crate::api::operator::OperatorService;
use crate::identity::{IdentityError, identity_from_cert};
use crate::node::Core;
use crate::node::admission::ConnectionSlot;
use crate::pb;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// TLS handshakes in progress at once; connections beyond are closed at
/// once, so a connection flood cannot grow memory.
const MAX_HANDSHAKES: usize = 1024;
/// ... and from any one address, so a slow client holding handshakes open
/// from one host cannot starve the others.
const MAX_HANDSHAKES_PER_IP: usize = 64;

/// Pending handshakes per remote address.
#[derive(Default)]
struct PerIp(std::sync::Mutex<std::collections::BTreeMap<std::net::IpAddr, usize>>);

/// Releases one address's handshake slot when dropped.
struct IpSlot(std::sync::Arc<PerIp>, std::net::IpAddr);

impl PerIp {
    fn take(self: &std::sync::Arc<Self>, ip: std::net::IpAddr) -> Option<IpSlot> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(ip).or_default();
        if *n >= MAX_HANDSHAKES_PER_IP {
            return None;
        }
        *n += 1;
        Some(IpSlot(self.clone(), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.0.0.lock()
            && let Some(n) = m.get_mut(&self.1)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}
/// Largest accepted request (a full batch of maximal reports fits).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A TLS connection with the identity its client certificate proves.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: ConnInfo,
    /// This connection's place among its caller's (and all) connections.
    _slot: ConnectionSlot,
    /// Resolves when the node reloads its directory or TLS material: the
    /// connection is then closed, so its peer must reconnect (and pass the
    /// handshake and checks again).
    reloaded: Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl TlsConn {
    fn check_reload(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        match self.reloaded.as_mut().poll(cx) {
            Poll::Ready(()) => Some(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the node reloaded its configuration",
            )),
            Poll::Pending => None,
        }
    }
}

impl Connected for TlsConn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.check_reload(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves the gRPC services on `listener` until `shutdown`: TLS handshakes
/// off the accept loop, one identity per connection, health and
/// reflection beside the two services.
pub async fn serve(core: Arc<Core>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let (conn_tx, conn_rx) = tokio::sync::mpsc::channel::<Result<TlsConn, std::io::Error>>(64);
    let accept_loop = tokio::spawn(accept(core.clone(), listener, conn_tx, shutdown.clone()));
    let (health, health_service) = tonic_health::server::health_reporter();
    let health_task = tokio::spawn(follow_readiness(core.clone(), health, shutdown.clone()));
    let Some((reflection, reflection_alpha)) = reflection() else {
        return;
    };
    let federation_svc = pb::federation_server::FederationServer::new(FederationService {
        core: core.clone(),
        shutdown: shutdown.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE);
    let rescue = crate::api::rescue::RescueLayer { core: core.clone() };
    let core_for_admit = core.clone();
    let operator_svc = pb::operator_server::OperatorServer::new(OperatorService { core })
        .max_decoding_message_size(MAX_MESSAGE);
    let result = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(60))
        .max_concurrent_streams(Some(128))
        // Per connection, on top of the per-caller limits in `auth`.
        .concurrency_limit_per_connection(64)
        // HTTP/2 rapid reset (CVE-2023-44487): a client that keeps opening
        // and resetting streams is cut off.
        .http2_max_pending_accept_reset_streams(Some(32))
        .http2_max_header_list_size(16 * 1024)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(crate::api::trace::TraceLayer)
        .layer(rescue)
        .layer(crate::api::deadline::DeadlineLayer)
        .layer(crate::api::admit::AdmitLayer {
            core: core_for_admit,
        })
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(federation_svc)
        .add_service(operator_svc)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(conn_rx),
            async move {
                let _ = shutdown.changed().await;
            },
        )
        .await;
    accept_loop.abort();
    health_task.abort();
    if let Err(e) = result {
        tracing::error!(error = %e, "gRPC server stopped");
    }
}

/// The accept loop: a bounded number of TLS handshakes at once (in total
/// and per address), each on a task of its own; established connections
/// go to the server through `conn_tx`.
async fn accept(
    core: Arc<Core>,
    listener: TcpListener,
    conn_tx: tokio::sync::mpsc::Sender<Result<TlsConn, std::io::Error>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let per_ip = Arc::new(PerIp::default());
    loop {
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Some(ip_slot) = per_ip.take(remote.ip()) else {
            tracing::warn!(%remote, "too many TLS handshakes in progress from this address; connection closed");
            continue;
        };
        let Ok(slot) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "too many TLS handshakes in progress; connection closed");
            continue;
        };
        // Without TCP_NODELAY, Nagle and delayed ACKs stall each exchange
        // by ~40 ms.
        let _ = tcp.set_nodelay(true);
        let (core, conn_tx) = (core.clone(), conn_tx.clone());
        tokio::spawn(async move {
            let conn = handshake(&core, tcp, remote).await;
            drop(slot);
            drop(ip_slot);
            if let Some(conn) = conn {
                let _ = conn_tx.send(Ok(conn)).await;
            }
        });
    }
}

/// One TLS handshake under the current configuration (a reload applies to
/// every new handshake), within `HANDSHAKE_TIMEOUT`; the connection with
/// its client's identity, or `None` when refused.
async fn handshake(core: &Arc<Core>, tcp: TcpStream, remote: SocketAddr) -> Option<TlsConn> {
    let acceptor = tokio_rustls::TlsAcceptor::from(core.server_tls());
    // Subscribed before the handshake, so a reload during it is seen.
    let generation = core.generation.subscribe();
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(%remote, error = %e, "TLS handshake refused");
            return None;
        }
        Err(_) => {
            tracing::info!(%remote, "TLS handshake timed out");
            return None;
        }
    };
    let certificates = stream.get_ref().1.peer_certificates();
    let identity = certificates
        .and_then(|c| c.first())
        .map_or(Err(IdentityError::Unparsable), |leaf| {
            identity_from_cert(leaf, &core.config.directory.federation)
        });
    let chain: Vec<_> = certificates
        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
        .unwrap_or_default();
    let info = ConnInfo {
        remote: Some(remote),
        identity,
    };
    let slot = connection_slot(core, &info).await?;
    let reloaded = Box::pin(until_untrusted(
        core.clone(),
        generation,
        chain,
        info.identity.clone(),
    ));
    Some(TlsConn {
        inner: stream,
        info,
        _slot: slot,
        reloaded,
    })
}

/// A place for one more established connection of this caller (keyed by
/// its identity, or by its address when its certificate proves none),
/// within `[limits] connections_*`; beyond, the refusal is logged and
/// audited (within the refusal quotas) and the connection closed.
async fn connection_slot(core: &Arc<Core>, info: &ConnInfo) -> Option<ConnectionSlot> {
    let who = match (&info.identity, info.remote) {
        (Ok(id), _) => id.to_string(),
        (Err(_), Some(remote)) => format!("unidentified at {}", remote.ip()),
        (Err(_), None) => "unidentified".to_owned(),
    };
    match core.limiter.connect(&who, core.config.connections) {
        Ok(slot) => Some(slot),
        Err(e) => {
            tracing::warn!(caller = %who, error = %e, "connection refused");
            core.audit_refusal_on(
                info.remote,
                &who,
                "too-many-connections",
                &e.to_string(),
                &[],
            )
            .await;
            None
        }
    }
}

/// Resolves when, after a reload, the connection's client is no longer
/// trusted (revoked, suspended): the connection then closes.
async fn until_untrusted(
    core: Arc<Core>,
    mut generation: watch::Receiver<u64>,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    identity: Result<crate::identity::PeerIdentity, IdentityError>,
) {
    loop {
        if generation.changed().await.is_err() {
            return;
        }
        if !core.still_trusted(&chain, &identity) {
            tracing::warn!("closing a connection whose client is no longer trusted");
            return;
        }
    }
}

/// The overall health status ("") and both services follow the node's
/// readiness (`node::health`), updated whenever it changes.
async fn follow_readiness(
    core: Arc<Core>,
    health: tonic_health::server::HealthReporter,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ready = core.ready.subscribe();
    loop {
        let status = if ready.borrow_and_update().serving() {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        for name in [
            <pb::federation_server::FederationServer<FederationService> as tonic::server::NamedService>::NAME,
            <pb::operator_server::OperatorServer<OperatorService> as tonic::server::NamedService>::NAME,
        ] {
            health.set_service_status(name, status).await;
        }
        tokio::select! {
            r = ready.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

type Reflection<T> = tonic_reflection::server::v1::ServerReflectionServer<T>;
type ReflectionAlpha<T> = tonic_reflection::server::v1alpha::ServerReflectionServer<T>;

/// Both reflection versions: grpcurl and other tools still ask v1alpha.
#[allow(clippy::type_complexity)]
fn reflection() -> Option<(
    Reflection<impl tonic_reflection::server::v1::ServerReflection>,
    ReflectionAlpha<impl tonic_reflection::server::v1alpha::ServerReflection>,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    match (builder().build_v1(), builder().build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => Some((v1, v1alpha)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "reflection service could not be built");
            None
        }
    }
}
