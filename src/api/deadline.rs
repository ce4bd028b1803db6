//! Deadlines: a call whose deadline (the client's `grpc-timeout`, or the
//! server's own limit) runs out at the server is answered
//! DEADLINE_EXCEEDED, as gRPC says. tonic's own timeout, around the whole
//! service, answers CANCELLED; this layer, inside it, ends the call a
//! moment earlier with the right code. The handler's work is dropped
//! (a transaction not yet committed rolls back; one committed stays, and a
//! retry is answered as a repeat).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The longest a call may take at the server when its client set no
/// deadline.
pub const SERVER_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Deadline<S>
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

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let limit = budget(req.headers());
        let fut = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(answer) => answer,
                Err(_) => Ok(tonic::Status::deadline_exceeded(
                    "the call's deadline ran out at the server",
                )
                .into_http()),
            }
        })
    }
}

/// How long this layer lets a call run: the client's deadline (or the
/// server's limit, whichever is shorter), less a margin so that this layer,
/// not tonic's outer timeout, answers when it runs out.
fn budget(headers: &http::HeaderMap) -> Duration {
    let deadline = headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(SERVER_LIMIT, |d| d.min(SERVER_LIMIT));
    // At least two ticks of the timer (1 ms) ahead of tonic's own, which
    // started a moment earlier.
    let margin = (deadline / 20).clamp(Duration::from_millis(2), Duration::from_millis(20));
    deadline.saturating_sub(margin)
}

/// A `grpc-timeout` value: at most 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit_at = value.len().checked_sub(1)?;
    let (digits, unit) = (value.get(..unit_at)?, value.get(unit_at..)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_leave_a_margin() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        let mut headers = http::HeaderMap::new();
        assert_eq!(budget(&headers), SERVER_LIMIT - Duration::from_millis(20));
        headers.insert("grpc-timeout", http::HeaderValue::from_static("100m"));
        assert_eq!(budget(&headers), Duration::from_millis(95));
        headers.insert("grpc-timeout", http::HeaderValue::from_static("1m"));
        assert_eq!(budget(&headers), Duration::ZERO);
    }
}
