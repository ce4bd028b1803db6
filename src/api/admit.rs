//! Admission before any request body is read. A call's headers arrive
//! first; this layer decides from them and from the connection's identity
//! (read once at the TLS handshake) whether the caller may call that
//! service at all and is within its quota. A refused call is answered at
//! once (trailers-only, audited within the refusal quotas) and its body is
//! never read, so a caller over its quota, or with the wrong kind of
//! certificate, cannot make the node buffer requests up to the message
//! limit. An admitted call carries its `auth::Admitted` (identity and
//! permit) to the handler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::api::auth::{self, ConnInfo, Service};
use crate::node::Core;

#[derive(Clone)]
pub struct AdmitLayer {
    pub core: Arc<Core>,
}

impl<S> tower::Layer<S> for AdmitLayer {
    type Service = Admit<S>;
    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            inner,
            core: self.core.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Admit<S> {
    inner: S,
    core: Arc<Core>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Admit<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(service) = Service::of(req.uri().path()) else {
            return Box::pin(self.inner.call(req));
        };
        let info = req.extensions().get::<ConnInfo>().cloned();
        match auth::admit(&self.core, info.as_ref(), service) {
            Ok(admitted) => {
                req.extensions_mut().insert(admitted);
                Box::pin(self.inner.call(req))
            }
            Err(status) => {
                let core = self.core.clone();
                Box::pin(async move {
                    let status = auth::refused(&core, info.as_ref(), status).await;
                    Ok(status.into_http())
                })
            }
        }
    }
}
