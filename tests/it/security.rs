//! TLS identity and key lifecycle: CRLs applied by a reload without a
//! restart (and the revoked peer's open connection closed), expired CRLs
//! refused, admin-only node management, signing-key rotation and revocation;
//! open `ForwardStream`s cut off by a suspension and ended by a shutdown.

use std::time::{Duration, Instant};

use crate::common::*;
use alertrelay::crypto::pki::FederationCa;
use alertrelay::crypto::signing::{NodeKey, Purpose, encode_public_key};
use alertrelay::pb;
use alertrelay::wire;
use tonic::Code;

const ABC: &[(&str, &[&str])] = &[
    ("FR-PDC", &["FR"]),
    ("DE-ECO", &["DE"]),
    ("NL-EOKM", &["NL"]),
];

async fn node_info(
    client: &mut pb::federation_client::FederationClient<tonic::transport::Channel>,
) -> Result<(), String> {
    client
        .node_info(pb::NodeInfoRequest {})
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {} {:?}", s.code(), s.message(), s))
}

fn report_to(origin: &str, id: &str) -> pb::ReportPayload {
    pb::ReportPayload {
        report_id: id.into(),
        origin: origin.into(),
        created_at_ms: alertrelay::node::Core::now_ms(),
        urls: vec![format!("http://{DE_IP}/x")],
        category: "csam".into(),
        route: Some(pb::RouteDecision {
            kind: "peer".into(),
            destinations: vec!["DE-ECO".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn forward_signed(
    fed: &Federation,
    key: &NodeKey,
    payload: &pb::ReportPayload,
) -> Result<pb::ForwardResult, tonic::Status> {
    let env = pb::Envelope {
        report: Some(wire::sign(key, &fed.id(0), Purpose::Report, payload)),
        hops: vec![],
    };
    fed.federation_as(0, 1)
        .forward(pb::ForwardRequest {
            envelopes: vec![env],
            urgent: false,
        })
        .await
        .map(|r| r.into_inner().results.remove(0))
}

#[tokio::test]
async fn a_revoked_peer_is_cut_off_by_a_reload_without_a_restart() {
    let fed = Federation::start(ABC).await;
    let mut nl = fed.federation_as(2, 1);
    node_info(&mut nl).await.unwrap();

    // The federation's CA revokes NL's node certificate.
    let nl_cert = fed.dir.path().join("NL-EOKM/node.pem");
    let n = alertrelay::provision::revoke(fed.dir.path(), &[nl_cert.as_path()]).unwrap();
    assert_eq!(n, 1);
    // Only an admin may make DE apply it.
    let err = fed
        .operator(1)
        .reload(pb::ReloadRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    fed.admin(1).reload(pb::ReloadRequest {}).await.unwrap();

    // NL's open connection is closed and it cannot come back...
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match node_info(&mut nl).await {
            Err(e) => break e,
            Ok(()) => {
                assert!(
                    Instant::now() < deadline,
                    "NL still served after revocation"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        refused.contains("Revoked") || refused.contains("revoked") || refused.contains("alert"),
        "{refused}"
    );
    assert!(node_info(&mut fed.federation_as(2, 1)).await.is_err());
    // ...while FR reconnects and carries on.
    let mut fr = fed.operator(0);
    let id = submit(&mut fr, &format!("http://{DE_IP}/after-revocation"), "")
        .await
        .report_id;
    wait_case(&fr, &id, 10, |c| c.status == "delivered").await;
    fed.shutdown().await;
}

#[tokio::test]
async fn an_expired_crl_fails_closed() {
    let fed = Federation::start(ABC).await;
    let ca = FederationCa::load(
        "test-federation",
        &std::fs::read_to_string(fed.dir.path().join("ca.pem")).unwrap(),
        &std::fs::read_to_string(fed.dir.path().join("ca.key")).unwrap(),
    )
    .unwrap();
    // The admin's client is set up while DE's CRL is still valid.
    let mut admin = fed.admin(1);
    admin.status(pb::StatusRequest {}).await.unwrap();
    let crl = ca.crl(&[], 99, time::Duration::seconds(1)).unwrap();
    std::fs::write(fed.dir.path().join("DE-ECO/crl.pem"), crl).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The reload applies at once, to the admin's own connection too (an
    // expired CRL trusts nobody), so its answer may not get out.
    let _ = admin.reload(pb::ReloadRequest {}).await;
    // Every new handshake now fails: an expired CRL is not accepted as "no
    // revocations".
    let err = node_info(&mut fed.federation_as(0, 1)).await.unwrap_err();
    assert!(
        err.contains("alert") || err.contains("Expired") || err.contains("expired"),
        "{err}"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn signing_keys_rotate_without_downtime_and_a_revoked_key_verifies_nothing() {
    let fed = Federation::start(ABC).await;
    let old = fed.signing_key(0);
    let new = NodeKey::generate();
    // The new key joins FR's directory entry everywhere; FR signs with it.
    for id in ["FR-PDC", "DE-ECO", "NL-EOKM"] {
        let path = fed.dir.path().join(id).join("directory.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let marker = format!("id = \"{}\"", old.key_id());
        let at = text.find(&marker).unwrap();
        let (head, tail) = text.split_at(at);
        let entry = format!(
            "id = \"{}\"\npublic_key = \"{}\"\n\n[[node.key]]\n",
            new.key_id(),
            encode_public_key(&new.verifying_key())
        );
        std::fs::write(&path, format!("{head}{entry}{tail}")).unwrap();
    }
    new.save(&fed.configs[0].signing_key).unwrap();
    for i in [1, 2, 0] {
        fed.admin(i).reload(pb::ReloadRequest {}).await.unwrap();
    }
    let mut fr = fed.operator(0);
    let id = submit(&mut fr, &format!("http://{DE_IP}/rotated"), "")
        .await
        .report_id;
    wait_case(&fr, &id, 10, |c| c.status == "delivered").await;
    // A report signed with the old key before the rotation is still good.
    let r = forward_signed(&fed, &old, &report_to("FR-PDC", "signed-before"))
        .await
        .unwrap();
    assert_eq!(r.code, 0);

    // The old key is revoked at DE: it verifies nothing any more.
    let path = fed.dir.path().join("DE-ECO/directory.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let marker = format!("id = \"{}\"", old.key_id());
    std::fs::write(
        &path,
        text.replace(&marker, &format!("{marker}\nrevoked = true")),
    )
    .unwrap();
    fed.admin(1).reload(pb::ReloadRequest {}).await.unwrap();
    let err = forward_signed(&fed, &old, &report_to("FR-PDC", "signed-with-revoked"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // FR's new key still works.
    let id = submit(&mut fr, &format!("http://{DE_IP}/after"), "")
        .await
        .report_id;
    wait_case(&fr, &id, 10, |c| c.status == "delivered").await;
    fed.shutdown().await;
}

/// Opens a `ForwardStream` from node `from` to node `to` without sending
/// anything yet; returns the sender of batches and the answers.
async fn open_stream(
    fed: &Federation,
    from: usize,
    to: usize,
) -> (
    tokio::sync::mpsc::Sender<pb::ForwardRequest>,
    tonic::Streaming<pb::ForwardResponse>,
) {
    let (batches, rx) = tokio::sync::mpsc::channel(4);
    let answers = fed
        .federation_as(from, to)
        .forward_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("the stream opens")
        .into_inner();
    (batches, answers)
}

/// A node suspended in the directory while its stream is open cannot go
/// on sending on it: after the reload, its next batch is not admitted (the
/// connection is closed, or the batch refused as from a suspended node),
/// where an active node's empty batch would be checked and refused as
/// malformed.
#[tokio::test]
async fn a_node_suspended_while_its_stream_is_open_cannot_go_on_sending() {
    let fed = Federation::start(ABC).await;
    let (batches, mut answers) = open_stream(&fed, 2, 1).await;
    let path = fed.dir.path().join("DE-ECO/directory.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for n in t["node"].as_array_mut().unwrap() {
        let n = n.as_table_mut().unwrap();
        if n["id"].as_str() == Some("NL-EOKM") {
            n.insert("active".into(), false.into());
        }
    }
    std::fs::write(&path, toml::to_string_pretty(&t).unwrap()).unwrap();
    fed.admin(1).reload(pb::ReloadRequest {}).await.unwrap();
    let _ = batches.send(pb::ForwardRequest::default()).await;
    match tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .expect("an answer or the end of the stream")
    {
        Ok(None) => {}
        Ok(Some(a)) => panic!("a suspended node's batch was answered: {a:?}"),
        Err(s) => assert_ne!(s.code(), Code::InvalidArgument, "admitted: {s:?}"),
    }
    fed.shutdown().await;
}

/// A node shutting down ends the streams open to it, so its graceful
/// shutdown does not wait for senders that keep them open.
#[tokio::test]
async fn a_node_shutting_down_ends_the_streams_open_to_it() {
    let mut fed = Federation::start(ABC).await;
    let (_batches, mut answers) = open_stream(&fed, 2, 1).await;
    tokio::time::timeout(Duration::from_secs(20), fed.stop(1))
        .await
        .expect("the shutdown does not wait for the open stream");
    let end = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .expect("the stream ended");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    fed.shutdown().await;
}

/// Marks `node` active or not in `at`'s copy of the directory.
fn set_active(fed: &Federation, at: &str, node: &str, active: bool) {
    let path = fed.dir.path().join(at).join("directory.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for n in t["node"].as_array_mut().unwrap() {
        let n = n.as_table_mut().unwrap();
        if n["id"].as_str() == Some(node) {
            n.insert("active".into(), active.into());
        }
    }
    std::fs::write(&path, toml::to_string_pretty(&t).unwrap()).unwrap();
}

/// A peer suspended in this node's directory gets nothing: reports queued
/// for it stay queued (not delivered with their URLs, not re-sent forever),
/// and go out once it is reinstated.
#[tokio::test]
async fn a_suspended_peer_gets_nothing_until_it_is_reinstated() {
    let mut fed = Federation::start(ABC).await;
    fed.stop(1).await;
    let mut fr = fed.operator(0);
    let id = submit(&mut fr, &format!("http://{DE_IP}/suspended"), "")
        .await
        .report_id;
    set_active(&fed, "FR-PDC", "DE-ECO", false);
    fed.admin(0).reload(pb::ReloadRequest {}).await.unwrap();
    fed.restart(1).await;
    // DE-ECO is up and reachable, but suspended at FR-PDC: two seconds of
    // quick retries later, nothing has gone to it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut de = fed.operator(1);
    assert!(cases(&mut de, "incoming").await.is_empty());
    assert_eq!(case(&mut fr, &id).await.status, "queued");
    set_active(&fed, "FR-PDC", "DE-ECO", true);
    fed.admin(0).reload(pb::ReloadRequest {}).await.unwrap();
    wait_case(&fr, &id, 20, |c| c.status == "delivered").await;
    fed.shutdown().await;
}

/// An IP-literal host of a reported URL (here one no geo source places)
/// reaches neither the route's reason nor any audit entry.
#[tokio::test]
async fn no_host_of_a_reported_url_reaches_the_audit_log() {
    let fed = Federation::start(ABC).await;
    let mut fr = fed.operator(0);
    // 2.16.0.1: a range the shipped data marks "EU", no country.
    let sent = submit(&mut fr, "http://2.16.0.1/hidden-host-check", "").await;
    let reason = sent.route.unwrap_or_default().reason;
    assert!(!reason.contains("2.16.0.1"), "{reason}");
    for e in fed.audit_export(0).await {
        let text = format!("{} {}", e.subject, e.detail);
        assert!(!text.contains("2.16.0.1"), "{text}");
    }
    fed.shutdown().await;
}

/// Near-duplicate media (PDQ hashes a few bits apart) from two hotlines
/// are one case at the receiver, found through the PDQ index.
#[tokio::test]
async fn reports_of_near_duplicate_media_join_one_case() {
    let fed = Federation::start(ABC).await;
    let pdq_a = "f0".repeat(32);
    // 20 bits differ from `pdq_a`: the same picture.
    let pdq_b = format!("{}{}", "0f".repeat(3), &pdq_a[6..]);
    let mut sent = Vec::new();
    for (i, pdq) in [(0, &pdq_a), (2, &pdq_b)] {
        let r = fed
            .operator(i)
            .submit_report(pb::SubmitReportRequest {
                urls: vec![format!("http://{DE_IP}/media-{i}")],
                category: "csam".into(),
                hashes: vec![pb::MediaHash {
                    algorithm: "pdq".into(),
                    value: pdq.clone(),
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        sent.push(r.report_id);
    }
    let mut de = fed.operator(1);
    let joined = eventually(
        20,
        || {
            let mut de = de.clone();
            async move { cases(&mut de, "incoming").await }
        },
        |cases| cases.len() == 2,
    )
    .await;
    let second = joined.iter().find(|c| c.id == sent[1]).unwrap();
    assert_eq!(
        second.joined_to.as_deref(),
        Some(format!("FR-PDC/{}", sent[0]).as_str()),
        "{second:?}"
    );
    let first = case(&mut de, &sent[0]).await;
    assert_eq!(first.also_reported_by, vec![format!("NL-EOKM/{}", sent[1])]);
    fed.shutdown().await;
}

/// A status update signed by node `by` about `origin`'s report `id`.
fn status_update(fed: &Federation, by: usize, id: &str, update_id: &str) -> pb::Signed {
    let update = pb::StatusUpdate {
        update_id: update_id.into(),
        report_id: id.into(),
        origin: "FR-PDC".into(),
        node: fed.id(by).to_string(),
        status: "in-review".into(),
        reason: format!("looked at by {}", fed.id(by)),
        at_ms: alertrelay::node::Core::now_ms(),
    };
    wire::sign(&fed.signing_key(by), &fed.id(by), Purpose::Status, &update)
}

#[tokio::test]
async fn a_peer_cannot_have_another_hotlines_status_update_skipped_by_choosing_its_id() {
    let fed = Federation::start(ABC).await;
    let mut fr = fed.operator(0);
    let to_de = submit(&mut fr, &format!("http://{DE_IP}/a"), "")
        .await
        .report_id;
    let to_nl = submit(&mut fr, &format!("http://{NL_IP}/b"), "")
        .await
        .report_id;
    for id in [&to_de, &to_nl] {
        wait_case(&fr, id, 20, |c| c.status == "delivered").await;
    }
    // NL-EOKM learned (or guessed) the id DE-ECO will use next, and uses it
    // first, on its own report.
    for (by, id) in [(2, &to_nl), (1, &to_de)] {
        fed.federation_as(by, 0)
            .push_status(pb::PushStatusRequest {
                updates: vec![status_update(&fed, by, id, "the-same-update-id")],
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for (id, by) in [(&to_de, "DE-ECO"), (&to_nl, "NL-EOKM")] {
        let c = case(&mut fr, id).await;
        assert!(
            c.history
                .iter()
                .any(|h| h.status == "in-review" && h.signer == by),
            "{by}'s update is recorded: {:#?}",
            c.history
        );
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn corrections_apply_by_their_signed_time_whatever_order_they_arrive_in() {
    let fed = Federation::start(ABC).await;
    let payload = report_to("FR-PDC", "corrected-twice");
    let signed = wire::sign(&fed.signing_key(0), &fed.id(0), Purpose::Report, &payload);
    assert_eq!(
        forward_signed(&fed, &fed.signing_key(0), &payload)
            .await
            .unwrap()
            .code,
        Code::Ok as i32
    );
    let now = alertrelay::node::Core::now_ms();
    let correction = |id: &str, notes: &str, at_ms: i64| {
        let a = pb::Amendment {
            amendment_id: id.into(),
            report_id: payload.report_id.clone(),
            origin: "FR-PDC".into(),
            report_digest: wire::digest(&signed.payload).to_vec(),
            kind: pb::AmendmentKind::Correct as i32,
            notes: notes.into(),
            reason: "corrected".into(),
            at_ms,
            ..Default::default()
        };
        pb::AmendEnvelope {
            amendment: Some(wire::sign(
                &fed.signing_key(0),
                &fed.id(0),
                Purpose::Amendment,
                &a,
            )),
            hops: vec![],
        }
    };
    // The newer correction overtakes the older one on the way.
    for env in [
        correction("second", "the newer notes", now),
        correction("first", "the older notes", now - 60_000),
    ] {
        fed.federation_as(0, 1)
            .push_status(pb::PushStatusRequest {
                amendments: vec![env],
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let c = cases(&mut fed.operator(1), "incoming")
        .await
        .into_iter()
        .find(|c| c.id.ends_with("corrected-twice"))
        .expect("DE-ECO has the case");
    assert_eq!(c.notes, "the newer notes");
    assert_eq!(
        c.history.iter().filter(|h| h.status == "corrected").count(),
        2,
        "both corrections are in the history: {:#?}",
        c.history
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn a_peer_marking_everything_urgent_gets_urgent_treatment_only_within_its_quota() {
    let fed = Federation::start(ABC).await;
    let key = fed.signing_key(0);
    // 40 urgent reports in one batch: more than the 30 a peer may send
    // ahead of everyone's bulk work at once.
    let envelopes: Vec<pb::Envelope> = (0..40)
        .map(|i| {
            let mut p = report_to("FR-PDC", &format!("all-urgent-{i}"));
            p.priority = pb::Priority::Urgent as i32;
            pb::Envelope {
                report: Some(wire::sign(&key, &fed.id(0), Purpose::Report, &p)),
                hops: vec![],
            }
        })
        .collect();
    let answer = fed
        .federation_as(0, 1)
        .forward(pb::ForwardRequest {
            envelopes,
            urgent: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        answer.results.iter().all(|r| r.code == Code::Ok as i32),
        "every report is taken all the same: {:?}",
        answer.results
    );
    let page = fed.metrics(1).await;
    assert!(
        page.contains("alertrelay_urgent_demoted_total{peer=\"FR-PDC\"} 40"),
        "received as bulk work and counted: {page}"
    );
    let stored = cases(&mut fed.operator(1), "incoming").await;
    assert_eq!(
        stored
            .iter()
            .filter(|c| c.id.contains("all-urgent-") && c.priority == "urgent")
            .count(),
        40,
        "they keep their signed priority"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn a_peers_report_with_an_unknown_priority_is_refused_not_taken_as_bulk() {
    let fed = Federation::start(ABC).await;
    let key = fed.signing_key(0);
    for (value, what) in [(7, "out of range"), (-1, "negative")] {
        let mut p = report_to("FR-PDC", &format!("odd-priority-{value}"));
        p.priority = value;
        let err = forward_signed(&fed, &key, &p).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "a priority {what} is refused: {err:?}"
        );
        assert!(err.message().contains("priority"), "{}", err.message());
    }
    let stored = cases(&mut fed.operator(1), "incoming").await;
    assert!(
        stored.iter().all(|c| !c.id.contains("odd-priority-")),
        "nothing stored: {stored:?}"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn a_directory_listing_a_key_id_twice_is_refused_and_the_node_keeps_the_one_it_has() {
    let fed = Federation::start(ABC).await;
    let path = fed.dir.path().join("DE-ECO").join("directory.toml");
    let mut raw: alertrelay::directory::RawDirectory =
        toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let fr = raw.nodes.iter_mut().find(|n| n.id == "FR-PDC").unwrap();
    // The same key id once more, revoked: which entry would count?
    let mut twin = fr.keys[0].clone();
    twin.revoked = true;
    fr.keys.push(twin);
    std::fs::write(&path, toml::to_string_pretty(&raw).unwrap()).unwrap();
    let err = fed.admin(1).reload(pb::ReloadRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("listed twice"),
        "names the reason: {}",
        err.message()
    );
    // DE goes on with the directory it had: FR's reports still verify.
    let mut fr = fed.operator(0);
    let id = submit(&mut fr, &format!("http://{DE_IP}/after-refused-reload"), "")
        .await
        .report_id;
    wait_case(&fr, &id, 10, |c| c.status == "delivered").await;
    fed.shutdown().await;
}

#[tokio::test]
async fn checkpoints_on_demand_are_for_admins_and_held_to_a_quota() {
    let fed = Federation::builder(ABC).quiet_audit().start().await;
    let err = fed
        .operator(0)
        .make_checkpoint(pb::MakeCheckpointRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "an analyst: {err:?}");
    let mut fr = fed.operator(0);
    let mut admin = fed.admin(0);
    let mut answers = Vec::new();
    for i in 0..11 {
        // Something new each time, so each asks for a new checkpoint.
        submit(&mut fr, &format!("http://{DE_IP}/cp-{i}"), "").await;
        answers.push(
            admin
                .make_checkpoint(pb::MakeCheckpointRequest {})
                .await
                .map(|_| ())
                .map_err(|s| s.code()),
        );
    }
    assert!(answers[..10].iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(answers[10], Err(Code::ResourceExhausted), "{answers:?}");
    fed.shutdown().await;
}

#[tokio::test]
async fn consistency_proofs_a_peer_asks_for_are_held_to_a_quota_of_their_own() {
    let fed = Federation::builder(ABC).quiet_audit().start().await;
    let mut fr = fed.operator(0);
    submit(&mut fr, &format!("http://{DE_IP}/proof"), "").await;
    let size = fed
        .admin(0)
        .make_checkpoint(pb::MakeCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .note
        .lines()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let mut de = fed.federation_as(1, 0);
    let mut codes = Vec::new();
    for _ in 0..11 {
        let r = de
            .get_consistency_proof(pb::ConsistencyProofRequest {
                old_size: 1,
                new_size: size,
            })
            .await;
        codes.push(r.map(|_| ()).map_err(|s| s.code()));
    }
    assert!(codes[..10].iter().all(Result::is_ok), "{codes:?}");
    assert_eq!(codes[10], Err(Code::ResourceExhausted), "{codes:?}");
    // Another peer is not affected.
    let nl = fed
        .federation_as(2, 0)
        .get_consistency_proof(pb::ConsistencyProofRequest {
            old_size: 1,
            new_size: size,
        })
        .await;
    assert!(nl.is_ok(), "{nl:?}");
    fed.shutdown().await;
}

#[tokio::test]
async fn a_reload_rebuilds_outbound_channels_so_a_revoked_peer_is_sent_nothing_more() {
    let fed = Federation::start(ABC).await;
    let mut fr = fed.operator(0);
    // FR has a connection open to DE.
    let id = submit(&mut fr, &format!("http://{DE_IP}/before-revocation"), "")
        .await
        .report_id;
    wait_case(&fr, &id, 10, |c| c.status == "delivered").await;
    // The CA revokes DE's node certificate; FR applies the new CRL.
    let de_cert = fed.dir.path().join("DE-ECO/node.pem");
    alertrelay::provision::revoke(fed.dir.path(), &[de_cert.as_path()]).unwrap();
    fed.admin(0).reload(pb::ReloadRequest {}).await.unwrap();
    let id = submit(&mut fr, &format!("http://{DE_IP}/after-revocation"), "")
        .await
        .report_id;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = case(&mut fr, &id).await;
    assert_ne!(
        c.status, "delivered",
        "not sent over the connection made before the reload"
    );
    let at_de = cases(&mut fed.operator(1), "incoming").await;
    assert!(
        at_de.iter().all(|c| !c.id.contains(&id)),
        "DE holds nothing of it"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn near_duplicate_matching_a_peer_asks_for_is_held_to_its_quota() {
    let fed = Federation::builder(ABC)
        .quiet_audit()
        .limits(alertrelay::config::RawLimits {
            peer_pdq_per_sec: 0.001,
            peer_pdq_burst: 8,
            ..Default::default()
        })
        .start()
        .await;
    let key = fed.signing_key(0);
    let with_pdq = |id: &str, n: u8| {
        let mut p = report_to("FR-PDC", id);
        p.hashes = (0..n)
            .map(|i| pb::MediaHash {
                algorithm: "pdq".into(),
                value: hex::encode([id.len() as u8 * 16 + i; 32]),
            })
            .collect();
        p
    };
    let send = |payloads: Vec<pb::ReportPayload>| {
        let envelopes = payloads
            .iter()
            .map(|p| pb::Envelope {
                report: Some(wire::sign(&key, &fed.id(0), Purpose::Report, p)),
                hops: vec![],
            })
            .collect();
        let mut client = fed.federation_as(0, 1);
        async move {
            client
                .forward(pb::ForwardRequest {
                    envelopes,
                    urgent: false,
                })
                .await
        }
    };
    // Eight hashes: the whole burst.
    let first = send(vec![with_pdq("pdq-a", 4), with_pdq("pdq-bb", 4)]).await;
    assert!(first.is_ok(), "{first:?}");
    // One more is past it: the whole batch is refused, to be sent again.
    let err = send(vec![with_pdq("pdq-ccc", 1)]).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // A report without PDQ hashes costs no matching.
    let plain = send(vec![report_to("FR-PDC", "no-pdq")]).await;
    assert!(plain.is_ok(), "{plain:?}");
    let stored = cases(&mut fed.operator(1), "incoming").await;
    assert!(
        stored.iter().all(|c| !c.id.contains("pdq-ccc")),
        "nothing of the refused batch is stored"
    );
    let refused = fed
        .audit_export(1)
        .await
        .into_iter()
        .filter(|e| e.kind == "input.refused" && e.detail["reason_code"] == "over-quota")
        .count();
    assert_eq!(refused, 1, "the refusal is audited");
    fed.shutdown().await;
}

/// A PDQ hash: 256 bits from `seed`, with `flips` of them flipped.
fn pdq_hash(seed: u64, flips: &[usize]) -> String {
    use rand::{Rng, SeedableRng};
    let mut h = [0u8; 32];
    rand::rngs::StdRng::seed_from_u64(seed).fill(&mut h);
    for &b in flips {
        h[b / 8] ^= 1 << (b % 8);
    }
    hex::encode(h)
}

/// Node `by` forwards to DE-ECO its own report `id` of the media `pdq`.
async fn forward_pdq(fed: &Federation, by: usize, id: &str, pdq: String) {
    let mut p = report_to(fed.id(by).as_str(), id);
    p.urls = vec![format!("http://{DE_IP}/{id}")];
    p.hashes = vec![pb::MediaHash {
        algorithm: "pdq".into(),
        value: pdq,
    }];
    let envelopes = vec![pb::Envelope {
        report: Some(wire::sign(
            &fed.signing_key(by),
            &fed.id(by),
            Purpose::Report,
            &p,
        )),
        hops: vec![],
    }];
    let answer = fed
        .federation_as(by, 1)
        .forward(pb::ForwardRequest {
            envelopes,
            urgent: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.results.len(), 1, "{answer:?}");
}

/// A flood of one origin's near-duplicate cases is bounded: past `[limits]
/// peer_open_pdq_cases` open cases in the index, its new cases are stored
/// and worked, but not indexed (counted). The index is read again from the
/// store after a restart.
#[tokio::test]
async fn an_origins_open_cases_in_the_near_duplicate_index_are_bounded() {
    let mut fed = Federation::builder(ABC)
        .quiet_audit()
        .limits(alertrelay::config::RawLimits {
            peer_open_pdq_cases: 2,
            ..Default::default()
        })
        .start()
        .await;
    for seed in 1..=3 {
        forward_pdq(&fed, 0, &format!("fr-{seed}"), pdq_hash(seed, &[])).await;
    }
    let metrics = fed.metrics(1).await;
    assert!(
        metrics.contains("alertrelay_pdq_unindexed_total{peer=\"FR-PDC\"} 1"),
        "{metrics}"
    );
    // NL-EOKM reports the same three pictures, 12 bits off.
    for seed in 1..=3 {
        forward_pdq(
            &fed,
            2,
            &format!("nl-{seed}"),
            pdq_hash(seed, &[0, 9, 17, 30, 44, 61, 77, 90, 130, 170, 200, 250]),
        )
        .await;
    }
    let at_de = cases(&mut fed.operator(1), "incoming").await;
    let joined = |id: &str| {
        at_de
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("{id} stored: {at_de:?}"))
            .joined_to
            .clone()
    };
    assert_eq!(joined("nl-1").as_deref(), Some("FR-PDC/fr-1"));
    assert_eq!(joined("nl-2").as_deref(), Some("FR-PDC/fr-2"));
    assert_eq!(joined("fr-3"), None, "past the bound, still a case");
    assert_eq!(joined("nl-3"), None, "fr-3 was not indexed");
    // After a restart the index is read again from the store.
    fed.stop(1).await;
    fed.restart(1).await;
    forward_pdq(&fed, 2, "nl-again", pdq_hash(2, &[3, 5, 8])).await;
    let again = case(&mut fed.operator(1), "nl-again").await;
    assert_eq!(again.joined_to.as_deref(), Some("FR-PDC/fr-2"), "{again:?}");
    fed.shutdown().await;
}
