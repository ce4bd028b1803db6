//! One `tracing` span per request, named `request`, carrying the gRPC
//! method, the caller's identity (peer node or operator, from its
//! certificate), its address and, where the handler knows one, the report
//! id (`report_id`, recorded by the handler). Every request that ends with
//! a non-OK status gets one log line with its code and message (the
//! messages carry reason codes and never a reported URL); successful ones
//! are logged at debug with their duration.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tracing::Instrument;

use crate::api::auth::ConnInfo;

#[derive(Clone, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Trace<S> {
        Trace { inner }
    }
}

#[derive(Clone)]
pub struct Trace<S> {
    inner: S,
}

/// Records the report a request is about on the current request span
/// (only a well-formed id: this is caller input).
pub fn report_id(id: &str) {
    let clean = (1..=160).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if clean {
        tracing::Span::current().record("report_id", id);
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Trace<S>
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
        let caller = match info.map(|i| &i.identity) {
            Some(Ok(id)) => id.to_string(),
            Some(Err(e)) => format!("unidentified ({e})"),
            None => "unidentified".to_owned(),
        };
        let remote = info
            .and_then(|i| i.remote)
            .map(|r| r.to_string())
            .unwrap_or_default();
        let method = req.uri().path().to_owned();
        let span = tracing::info_span!(
            "request",
            method = %method,
            caller = %caller,
            remote = %remote,
            report_id = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let resp = fut.await?;
                // Trailers-only responses (every refusal) carry the status
                // in the headers; a streamed OK answer has it in trailers.
                let code = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(0);
                let ms = started.elapsed().as_millis() as u64;
                if code == 0 {
                    tracing::debug!(ms, "request done");
                } else {
                    let message = resp
                        .headers()
                        .get("grpc-message")
                        .and_then(|v| v.to_str().ok())
                        .map(|m| {
                            percent_decode(m)
                        })
                        .unwrap_or_default();
                    let code = tonic::Code::from_i32(code);
                    tracing::warn!(grpc_code = ?code, status_message = %message, ms, "request refused");
                }
                Ok(resp)
            }
            .instrument(span),
        )
    }
}

/// `grpc-message` is percent-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && s.is_char_boundary(i + 3)
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
