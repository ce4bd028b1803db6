//! gRPC over raw HTTP/2 on a real mutual-TLS connection: for tests that
//! play a client tonic's own would not be (one that sends headers a call's
//! body never follows, or that does not enforce its own deadline).

use std::sync::Arc;

use super::Federation;

pub type Sender = h2::client::SendRequest<bytes::Bytes>;

/// An HTTP/2 connection to node `to` with the client certificate in `tls`.
pub async fn connect(
    fed: &Federation,
    to: usize,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(fed.listen(to))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (h2, connection) = h2::client::handshake(stream)
        .await
        .map_err(|e| format!("HTTP/2: {e}"))?;
    tokio::spawn(connection);
    h2.ready().await.map_err(|e| format!("HTTP/2 ready: {e}"))
}

/// The request headers of a gRPC call to `path`, with `extra` headers.
pub fn request(path: &str, extra: &[(&str, &str)]) -> http::Request<()> {
    let mut req = http::Request::post(format!("https://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    req.body(()).unwrap()
}

/// One gRPC message frame (uncompressed) around `message`.
pub fn frame(message: &[u8]) -> bytes::Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.into()
}

/// A whole call: headers, one message, end of stream; the answer's
/// `grpc-status` (from the headers of a trailers-only answer or from the
/// trailers).
pub async fn call(sender: &mut Sender, req: http::Request<()>, message: &[u8]) -> String {
    let (response, mut body) = sender.send_request(req, false).unwrap();
    body.send_data(frame(message), true).unwrap();
    let response = response.await.unwrap();
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().unwrap().to_owned();
    }
    let mut body = response.into_body();
    while body.data().await.is_some() {}
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    trailers
        .get("grpc-status")
        .map(|s| s.to_str().unwrap().to_owned())
        .unwrap_or_default()
}
