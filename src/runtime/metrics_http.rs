//! The `/metrics` endpoint: Prometheus text from `node::metrics::render`
//! on its own listener (`[metrics] listen`), off the gRPC port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::node::Core;

use super::StartError;

/// Binds `listen` and serves the metrics there until shutdown; returns the
/// bound address.
pub(super) async fn spawn(
    core: &Arc<Core>,
    listen: SocketAddr,
    tasks: &mut tokio::task::JoinSet<()>,
    watch: &tokio::sync::watch::Receiver<bool>,
) -> Result<SocketAddr, StartError> {
    let bind_error = |source| StartError::Listen {
        addr: listen.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    tasks.spawn(serve(core.clone(), listener, watch.clone()));
    Ok(addr)
}

/// Serves `GET /metrics` over plain HTTP/1.1 on `listener` until shutdown.
async fn serve(
    core: Arc<Core>,
    listener: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (mut sock, _) = tokio::select! {
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let core = core.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if request.starts_with("GET /metrics ") {
                ("200 OK", crate::node::metrics::render(&core).await)
            } else {
                ("404 Not Found", "try /metrics\n".to_owned())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
