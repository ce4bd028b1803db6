//! Rescues the refusal tonic makes before any handler runs when a request
//! body does not decode: tonic answers INTERNAL; the node answers
//! INVALID_ARGUMENT, as SPEC.md says, and audits it like every other
//! refused input. Such refusals arrive as "trailers-only" responses, whose
//! status is in the headers. (A body over the size limit is refused by
//! tonic with OUT_OF_RANGE in the trailers, which this does not rewrite.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::HeaderValue;

use crate::api::auth::ConnInfo;
use crate::node::Core;

#[derive(Clone)]
pub struct RescueLayer {
    pub core: Arc<Core>,
}

impl<S> tower::Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue {
            inner,
            core: self.core.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Rescue<S> {
    inner: S,
    core: Arc<Core>,
}

const INTERNAL: &str = "13";

impl<S, B, R> tower::Service<http::Request<B>> for Rescue<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let who = match req.extensions().get::<ConnInfo>().map(|i| &i.identity) {
            Some(Ok(id)) => id.to_string(),
            _ => "unidentified".to_owned(),
        };
        let path = req.uri().path().to_owned();
        let core = self.core.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            let status = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let message = resp
                .headers()
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if status.as_deref() == Some(INTERNAL) && message.contains("decode") {
                let text = "the request is not valid protobuf";
                let headers = resp.headers_mut();
                headers.insert("grpc-status", HeaderValue::from_static("3"));
                headers.insert("grpc-message", HeaderValue::from_static(text));
                let detail = format!("{text} ({path})");
                core.audit_refusal(&who, "malformed", &detail, &[]).await;
            }
            Ok(resp)
        })
    }
}
