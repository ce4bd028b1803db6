//! Webhooks: one HTTP/1.1 `POST` of the notification's JSON, signed the
//! way the large webhook providers sign theirs. The header
//!
//! `Alertrelay-Signature: t=UNIX_SECONDS,v1=HEX`
//!
//! carries HMAC-SHA256 under the shared secret over `t`, a `.` and the
//! exact body. A receiver recomputes it, compares in constant time, and
//! refuses a `t` too far from its clock (replays). `Idempotency-Key` is
//! the alert's id: at most one per event. Any 2xx is delivered; anything
//! else (or no answer) is tried again.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use sha2::Sha256;

use crate::config::alerts::Webhook;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "alertrelay-signature";

/// `t=…,v1=…` for `body` signed at `t` (seconds) with `secret`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let tag = keyed(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(tag))
}

/// HMAC-SHA256 under `secret`, fed `t`, `.` and `body`.
fn keyed(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// Whether `header` is a valid signature of `body` under `secret`, made
/// within `tolerance_secs` of `now_secs` (what a receiver checks; the
/// comparison is constant-time).
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> bool {
    let mut t = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => tags.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    (now_secs - t).abs() <= tolerance_secs
        && tags
            .iter()
            .any(|tag| keyed(secret, t, body).verify_slice(tag).is_ok())
}

/// Reads the shared secret: a file only its owner may read, trimmed.
pub fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    crate::crypto::signing::check_private_file(path).map_err(|e| match e {
        crate::crypto::signing::PrivateFileError::Io(e) => format!("webhook secret file: {e}"),
        crate::crypto::signing::PrivateFileError::Mode(m) => {
            format!("webhook secret file has mode {m:o}; it must be 0600")
        }
    })?;
    let text = std::fs::read(path).map_err(|e| format!("webhook secret file: {e}"))?;
    let secret = text.trim_ascii().to_vec();
    if secret.len() < 16 {
        return Err("webhook secret is shorter than 16 bytes".into());
    }
    Ok(secret)
}

/// Posts `body` to the webhook, signed; Ok on a 2xx answer.
pub async fn post(hook: &Webhook, alert_id: &str, body: &str) -> Result<(), String> {
    let secret = read_secret(&hook.secret_file)?;
    let t = crate::node::Core::now_ms() / 1000;
    let url = &hook.url;
    let host = url.host_str().ok_or("webhook URL has no host")?;
    let port = url
        .port_or_known_default()
        .ok_or("webhook URL has no port")?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("alertrelay/", env!("CARGO_PKG_VERSION")),
        )
        .header(SIGNATURE_HEADER, signature(&secret, t, body.as_bytes()))
        .header("idempotency-key", alert_id)
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    tcp.set_nodelay(true).ok();
    let status = if url.scheme() == "https" {
        let tls = tls_connector(hook)?;
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .map_err(|_| "webhook host is not a valid TLS name".to_owned())?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(TokioIo::new(stream), request).await?
    } else {
        exchange(TokioIo::new(tcp), request).await?
    };
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

/// One request on a fresh HTTP/1.1 connection; the answer's status.
async fn exchange<S>(
    io: S,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::StatusCode, String>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(conn);
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = answer.status();
    // Read (and drop) the answer's body, bounded by the send timeout.
    let _ = answer.into_body().collect().await;
    driver.abort();
    Ok(status)
}

/// TLS to the webhook: the public web's roots, plus `ca` when given.
fn tls_connector(hook: &Webhook) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &hook.ca {
        let pem = std::fs::read(ca).map_err(|e| format!("webhook CA file: {e}"))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("webhook CA file: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("webhook CA file: {e}"))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
