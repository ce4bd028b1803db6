//! Work before authorisation is bounded (#21 item 11): a caller's kind of
//! certificate and its quota are checked from the call's headers, before
//! its body is read, and established connections are bounded per caller
//! and in all. Each test plays the hostile client over raw HTTP/2 on a
//! real mutual-TLS connection.

use std::sync::Arc;
use std::time::Duration;

use crate::common::check::AuditEntry;
use crate::common::*;
use alertrelay::config::RawLimits;
use alertrelay::crypto::tls;

fn operator_tls(fed: &Federation, i: usize) -> Arc<rustls::ClientConfig> {
    tls::client_config(&fed.configs[i].operator.as_ref().unwrap().files()).unwrap()
}

/// Starts a call to `path` whose body announces `announced` bytes but
/// carries only the first few, and never ends: a server that reads the
/// body before deciding would wait for the rest. Returns the gRPC status
/// code of the answer, or `None` when none came within 5 s.
async fn call_with_unfinished_body(
    h2: &mut raw::Sender,
    path: &str,
    announced: u32,
) -> Option<String> {
    let (response, mut body) = h2.send_request(raw::request(path, &[]), false).unwrap();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&announced.to_be_bytes());
    frame.extend_from_slice(&[0x0a; 64]);
    body.send_data(frame.into(), false).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), response).await;
    let response = answer.ok()?.ok()?;
    let status = response.headers().get("grpc-status")?;
    // Keep the request stream open until the answer is read.
    drop(body);
    Some(status.to_str().unwrap().to_owned())
}

/// A complete call with an empty request message.
async fn empty_call(h2: &mut raw::Sender, path: &str) -> String {
    raw::call(h2, raw::request(path, &[]), &[]).await
}

fn refusals(entries: &[AuditEntry], reason_code: &str) -> usize {
    entries
        .iter()
        .filter(|e| e.kind == "input.refused" && e.detail["reason_code"] == reason_code)
        .count()
}

#[tokio::test]
async fn a_caller_over_its_quota_is_refused_before_its_body_is_read() {
    let fed = Federation::builder(&[("FR-PDC", &["FR"])])
        .limits(RawLimits {
            operator_requests_per_sec: 0.001,
            operator_burst: 1,
            ..Default::default()
        })
        .start()
        .await;
    let mut h2 = raw::connect(&fed, 0, operator_tls(&fed, 0)).await.unwrap();
    // The one call its burst allows.
    assert_eq!(
        empty_call(&mut h2, "/alertrelay.v1.Operator/Status").await,
        "0"
    );
    // The next, with a body announced at 8 MB that never arrives, is
    // answered RESOURCE_EXHAUSTED at once.
    let code =
        call_with_unfinished_body(&mut h2, "/alertrelay.v1.Operator/SubmitReport", 8 << 20).await;
    assert_eq!(
        code.as_deref(),
        Some("8"),
        "refused from the headers, without waiting for the body"
    );
    let log = fed.audit_export(0).await;
    assert_eq!(refusals(&log, "rate-limited"), 1, "the refusal is audited");
    fed.shutdown().await;
}

#[tokio::test]
async fn the_wrong_kind_of_certificate_is_refused_before_its_body_is_read() {
    let fed = Federation::start(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])]).await;
    // DE-ECO's node certificate on FR-PDC's Operator service, and FR-PDC's
    // operator certificate on DE-ECO's Federation service.
    let mut as_node = raw::connect(&fed, 0, fed.node_tls(1)).await.unwrap();
    let code = call_with_unfinished_body(
        &mut as_node,
        "/alertrelay.v1.Operator/SubmitReport",
        8 << 20,
    )
    .await;
    assert_eq!(
        code.as_deref(),
        Some("7"),
        "PERMISSION_DENIED from the headers"
    );
    let mut as_operator = raw::connect(&fed, 1, operator_tls(&fed, 0)).await.unwrap();
    let code = call_with_unfinished_body(
        &mut as_operator,
        "/alertrelay.v1.Federation/Forward",
        8 << 20,
    )
    .await;
    assert_eq!(
        code.as_deref(),
        Some("7"),
        "PERMISSION_DENIED from the headers"
    );
    fed.shutdown().await;
}

/// A new connection with `tls` to node `to`, if it is served: its
/// handshake completes and a health check on it is answered. The
/// connection stays open while the returned sender lives.
async fn open(fed: &Federation, to: usize, tls: Arc<rustls::ClientConfig>) -> Option<raw::Sender> {
    let mut h2 = raw::connect(fed, to, tls).await.ok()?;
    let req = raw::request("/grpc.health.v1.Health/Check", &[]);
    let (response, mut body) = h2.send_request(req, false).ok()?;
    body.send_data(raw::frame(&[]), true).ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .ok()?
        .ok()?;
    (response.status() == 200).then_some(h2)
}

#[tokio::test]
async fn established_connections_are_bounded_per_caller_and_in_all() {
    let fed = Federation::builder(&[
        ("FR-PDC", &["FR"]),
        ("DE-ECO", &["DE"]),
        ("NL-EOKM", &["NL"]),
    ])
    .limits(RawLimits {
        connections_per_caller: 2,
        connections_total: 6,
        ..Default::default()
    })
    .create()
    .await;
    let mut fed = fed;
    // FR-PDC alone, so no peer's worker holds connections to it.
    fed.start_armed(0, None).await;
    let admin = fed.admin_tls(0);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            open(&fed, 0, admin.clone())
                .await
                .expect("within the caller's limit"),
        );
    }
    assert!(
        open(&fed, 0, admin.clone()).await.is_none(),
        "a third connection of the same caller is closed"
    );
    // Other callers still get in, up to the total.
    for i in [1, 2] {
        for _ in 0..2 {
            held.push(
                open(&fed, 0, fed.node_tls(i))
                    .await
                    .expect("within the total"),
            );
        }
    }
    assert!(
        open(&fed, 0, operator_tls(&fed, 0)).await.is_none(),
        "past the total, any new caller's connection is closed"
    );
    // A closed connection frees its place.
    held.remove(0);
    eventually(10, || open(&fed, 0, admin.clone()), |c| c.is_some()).await;
    drop(held);
    let log = fed.audit_export(0).await;
    assert!(
        refusals(&log, "too-many-connections") >= 2,
        "each refused connection is audited"
    );
    fed.shutdown().await;
}
