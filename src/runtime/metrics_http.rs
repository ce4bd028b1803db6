//! The `/metrics` endpoint: Prometheus text from `node::metrics::render`
//! on its own listener (`[metrics] listen`), off the gRPC port, served by
//! a real HTTP server (axum on hyper): `GET` and `HEAD`, query strings
//! ignored as Prometheus expects, requests in any number of TCP segments.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::node::Core;

use super::StartError;

/// The content type of the Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .fallback(not_found)
        .with_state(core.clone());
    let mut shutdown = watch.clone();
    tasks.spawn(async move {
        let stopped = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(addr)
}

/// `GET /metrics` (and `HEAD`, which axum answers from the same handler
/// without the body).
async fn metrics(axum::extract::State(core): axum::extract::State<Arc<Core>>) -> impl IntoResponse {
    let body = crate::node::metrics::render(&core).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "try /metrics\n")
}
