//! Rescues the two refusals tonic makes before any handler runs, so they
//! get the codes docs/contract.md names and an audit entry like every other refused
//! input: a request body that does not decode (tonic: INTERNAL) becomes
//! INVALID_ARGUMENT, and one over the size limit (tonic: OUT_OF_RANGE,
//! before the body is read) becomes RESOURCE_EXHAUSTED. Both arrive as
//! "trailers-only" responses, whose status is in the headers (and whose
//! `grpc-message` is percent-encoded).

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

/// What tonic's own refusal of a request body becomes: a body that does
/// not decode (INTERNAL) is INVALID_ARGUMENT, one over the size limit
/// (OUT_OF_RANGE) RESOURCE_EXHAUSTED; with the refusal's reason code and
/// the message the caller gets. Also used for the messages of a stream,
/// which tonic refuses after the response has begun
/// (`api::federation`).
pub fn rescued(
    code: tonic::Code,
    message: &str,
) -> Option<(tonic::Code, &'static str, &'static str)> {
    match code {
        tonic::Code::Internal if message.contains("decode") => Some((
            tonic::Code::InvalidArgument,
            "malformed",
            "the request is not valid protobuf",
        )),
        tonic::Code::OutOfRange if message.contains("large") => Some((
            tonic::Code::ResourceExhausted,
            "too-large",
            "the request is over the size limit",
        )),
        _ => None,
    }
}

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
        let info = req.extensions().get::<ConnInfo>();
        let who = match info.map(|i| &i.identity) {
            Some(Ok(id)) => id.to_string(),
            _ => "unidentified".to_owned(),
        };
        let connection = info.and_then(|i| i.remote);
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
            let code = status
                .as_deref()
                .map(|c| tonic::Code::from_bytes(c.as_bytes()));
            if let Some((code, reason_code, text)) = code.and_then(|c| rescued(c, &message)) {
                let headers = resp.headers_mut();
                headers.insert("grpc-status", HeaderValue::from(code as i32));
                headers.insert("grpc-message", HeaderValue::from_static(text));
                let detail = format!("{text} ({path})");
                core.audit_refusal_on(connection, &who, reason_code, &detail, &[])
                    .await;
            }
            Ok(resp)
        })
    }
}
