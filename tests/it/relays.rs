//! Relays: a hotline reached through other nodes. Reports travel out
//! through the relays the directory names, each adding its signed hop;
//! receipts and status updates travel back the same way, each relay adding
//! a signed return hop. Loops built from disagreeing directories are
//! refused without a duplicate case, and the origin hears of it.

use std::path::Path;

use crate::common::*;
use alertrelay::directory::{Directory, RawDirectory, RawNode};
use alertrelay::pb;
use alertrelay::store::Store;
use alertrelay::wire;
use prost::Message;

const CHAIN: &[(&str, &[&str])] = &[
    ("NL-HOT", &["NL"]),
    ("BE-HOT", &["BE"]),
    ("DE-HOT", &["DE"]),
    ("FR-HOT", &["FR"]),
];
const NL: usize = 0;
const BE: usize = 1;
const DE: usize = 2;
const FR: usize = 3;

/// Edits the directory copy of `node` (or every copy when `node` is
/// `None`).
fn edit_directory(root: &Path, node: Option<&str>, edit: impl Fn(&mut RawNode)) {
    let files: Vec<_> = match node {
        Some(n) => vec![root.join(n).join("directory.toml")],
        None => std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().path().join("directory.toml"))
            .filter(|p| p.exists())
            .chain([root.join("directory.toml")])
            .collect(),
    };
    for f in files {
        let mut raw: RawDirectory = toml::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        raw.nodes.iter_mut().for_each(&edit);
        std::fs::write(&f, toml::to_string_pretty(&raw).unwrap()).unwrap();
    }
}

/// Sets `relay` for some nodes in the directory copy of `node` (or in
/// every copy when `node` is `None`): directories that disagree.
fn set_relays(root: &Path, node: Option<&str>, relays: &[(&str, &str)]) {
    edit_directory(root, node, |n| {
        n.relay = relays
            .iter()
            .find(|(id, _)| *id == n.id)
            .map(|(_, via)| (*via).to_owned());
    });
}

async fn stored_envelope(fed: &Federation, i: usize, report_id: &str) -> pb::Envelope {
    let store = Store::open(&fed.database(i)).await.unwrap();
    let rows = store.reports_by_id(None, report_id).await.unwrap();
    store.close().await;
    assert_eq!(rows.len(), 1, "exactly one row for the report");
    pb::Envelope::decode(rows[0].envelope.as_slice()).unwrap()
}

async fn audit_verifies(fed: &Federation, i: usize) {
    let out = tokio::process::Command::new(BIN)
        .args(["audit", "verify", "--offline", "--config"])
        .arg(fed.config_path(i))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify failed on node {i}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_report_crosses_two_relays_and_its_receipt_and_statuses_come_back_signed() {
    // FR-HOT is reached through DE-HOT, which is reached through BE-HOT.
    let fed = Federation::builder(CHAIN)
        .quiet_audit()
        .relay("FR-HOT", "DE-HOT")
        .relay("DE-HOT", "BE-HOT")
        .start()
        .await;
    let mut nl = fed.operator(NL);
    let sent = submit(&mut nl, &format!("http://{FR_IP}/relayed"), "").await;
    assert_eq!(sent.route.as_ref().unwrap().destinations, vec!["FR-HOT"]);

    // The origin's view: delivered to FR-HOT, handed to BE-HOT, with FR's
    // own receipt that came back through DE-HOT and BE-HOT.
    // (A case view is read in several queries, not one snapshot: wait for
    // the status and the delivery together.)
    let at_origin = wait_case(&nl, &sent.report_id, 20, |c| {
        c.status == "delivered" && c.deliveries.iter().any(|d| d.state == "delivered")
    })
    .await;
    assert_eq!(at_origin.status, "delivered");
    let d = &at_origin.deliveries[0];
    assert_eq!(d.destination, "FR-HOT");
    assert_eq!(d.next_hop.as_deref(), Some("BE-HOT"));
    assert!(d.relayed_at.is_some(), "the relay's receipt is kept: {d:?}");
    assert_eq!(d.via, vec!["DE-HOT", "BE-HOT"]);
    let receipt =
        pb::Signed::decode(base64_decode(d.receipt.as_deref().unwrap()).as_slice()).unwrap();
    let directory = Directory::load(&fed.dir.path().join("directory.toml")).unwrap();
    let origin_env = stored_envelope(&fed, NL, &sent.report_id).await;
    let digest = wire::digest(&origin_env.report.as_ref().unwrap().payload);
    let r = wire::open_receipt(
        &receipt,
        &fed.id(FR),
        &sent.report_id,
        &digest,
        &directory,
        alertrelay::node::Core::now_ms(),
    )
    .expect("FR-HOT's own signed receipt reached the origin");
    assert_eq!(r.outcome, pb::ReceiptOutcome::Stored as i32);

    // The destination verifies the whole hop chain it received: origin,
    // then BE-HOT, then DE-HOT, each signed.
    let env = stored_envelope(&fed, FR, &sent.report_id).await;
    let opened = wire::open_envelope(
        &env,
        &fed.id(DE),
        &fed.id(FR),
        &directory,
        alertrelay::node::Core::now_ms(),
    )
    .unwrap();
    assert_eq!(
        opened.relays.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        vec!["BE-HOT", "DE-HOT"]
    );
    let mut fr = fed.operator(FR);
    let at_fr = case(&mut fr, &sent.report_id).await;
    assert_eq!(at_fr.direction, "incoming");
    assert_eq!(at_fr.received_from.as_deref(), Some("DE-HOT"));

    // The relays pass it on; they do not work it.
    for relay in [BE, DE] {
        let mut op = fed.operator(relay);
        assert!(cases(&mut op, "incoming").await.is_empty());
        let relayed = cases(&mut op, "relayed").await;
        assert_eq!(relayed.len(), 1);
        assert_eq!(relayed[0].destinations, vec!["FR-HOT"]);
        let refused = op
            .update_case(pb::UpdateCaseRequest {
                id: sent.report_id.clone(),
                status: "in-review".into(),
                reason: String::new(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    }

    // FR-HOT works the case; each change reaches the origin, signed by
    // FR-HOT, through both relays.
    for status in ["in-review", "illegal-baseline", "notice-sent", "removed"] {
        fr.update_case(pb::UpdateCaseRequest {
            id: sent.report_id.clone(),
            status: status.into(),
            reason: format!("now {status}"),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let at_origin = wait_case(&nl, &sent.report_id, 20, |c| c.status == "removed").await;
    let signed: Vec<_> = at_origin
        .history
        .iter()
        .filter(|h| h.signer == "FR-HOT")
        .map(|h| h.status.as_str())
        .collect();
    assert_eq!(
        signed,
        vec!["in-review", "illegal-baseline", "notice-sent", "removed"]
    );
    for i in [NL, BE, DE, FR] {
        audit_verifies(&fed, i).await;
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn a_retraction_and_a_correction_follow_the_report_through_its_relay() {
    let fed = Federation::builder(CHAIN)
        .quiet_audit()
        .relay("FR-HOT", "DE-HOT")
        .start()
        .await;
    let (mut nl, fr) = (fed.operator(NL), fed.operator(FR));
    let sent = submit(&mut nl, &format!("http://{FR_IP}/retracted"), "").await;
    wait_case(&nl, &sent.report_id, 20, |c| c.status == "delivered").await;
    nl.correct_report(pb::CorrectReportRequest {
        id: sent.report_id.clone(),
        category: "grooming".into(),
        reason: "wrong category".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_case(&fr, &sent.report_id, 20, |c| c.category == "grooming").await;
    nl.retract_report(pb::RetractReportRequest {
        id: sent.report_id.clone(),
        reason: "withdrawn".into(),
    })
    .await
    .unwrap();
    let at_fr = wait_case(&fr, &sent.report_id, 20, |c| c.status == "retracted").await;
    let h = at_fr
        .history
        .iter()
        .find(|h| h.status == "retracted")
        .unwrap();
    assert_eq!(h.signer, "NL-HOT");
    // FR-HOT's confirmation comes back through the relay, signed.
    wait_case(&nl, &sent.report_id, 20, |c| {
        c.history
            .iter()
            .any(|h| h.signer == "FR-HOT" && h.status == "retracted")
    })
    .await;
    // The relay recorded both amendments and passed them on.
    let mut de = fed.operator(DE);
    let relayed = case(&mut de, &sent.report_id).await;
    let seen: Vec<&str> = relayed.history.iter().map(|h| h.status.as_str()).collect();
    assert!(
        seen.contains(&"corrected") && seen.contains(&"retracted"),
        "{seen:?}"
    );
    for i in [NL, DE, FR] {
        audit_verifies(&fed, i).await;
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn a_tampered_hop_is_refused_and_stores_nothing() {
    let fed = Federation::builder(&CHAIN[1..])
        .quiet_audit()
        .relay("FR-HOT", "DE-HOT")
        .start()
        .await;
    let (be, de, fr) = (0, 1, 2);
    let mut origin = fed.operator(be);
    let sent = submit(&mut origin, &format!("http://{FR_IP}/tampered"), "").await;
    wait_case(&origin, &sent.report_id, 20, |c| c.status == "delivered").await;
    let good = stored_envelope(&fed, fr, &sent.report_id).await;
    assert_eq!(good.hops.len(), 1);

    // The same envelope with the relay's hop altered: one byte of its
    // signature flipped; a hop that names another sender, re-signed by
    // the relay; a hop by the relay presented as the origin's report.
    let mut flipped = good.clone();
    flipped.hops[0].signature[7] ^= 1;
    let mut hop = pb::Hop::decode(good.hops[0].payload.as_slice()).unwrap();
    hop.from = "NL-HOT".into();
    let mut rerouted = good.clone();
    rerouted.hops[0] = wire::sign(
        &fed.signing_key(de),
        &fed.id(de),
        alertrelay::crypto::signing::Purpose::Hop,
        &hop,
    );
    let mut wrong_purpose = good.clone();
    wrong_purpose.hops[0] = wire::sign(
        &fed.signing_key(de),
        &fed.id(de),
        alertrelay::crypto::signing::Purpose::Report,
        &pb::Hop::decode(good.hops[0].payload.as_slice()).unwrap(),
    );
    let mut client = fed.federation_as(de, fr);
    for (what, env) in [
        ("flipped", flipped),
        ("rerouted", rerouted),
        ("wrong purpose", wrong_purpose),
    ] {
        let err = client
            .forward(pb::ForwardRequest {
                envelopes: vec![env],
                urgent: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{what}: {err:?}");
    }
    let mut op = fed.operator(fr);
    assert_eq!(cases(&mut op, "incoming").await.len(), 1);
    assert!(
        fed.metrics(fr).await.contains("alertrelay_refusals_total"),
        "refusals are counted"
    );
    audit_verifies(&fed, fr).await;
    fed.shutdown().await;
}

#[tokio::test]
async fn a_loop_through_three_nodes_is_refused_without_a_duplicate_case() {
    // Directories that disagree: NL-HOT sends FR-HOT's reports to BE-HOT,
    // BE-HOT passes them to DE-HOT, and DE-HOT — believing NL-HOT is in
    // front of FR-HOT — would pass them back to NL-HOT. DE-HOT refuses
    // them instead: by its directory they came through a node that is
    // not a relay in front of it, so the loop never closes.
    let fed = Federation::builder(CHAIN)
        .quiet_audit()
        .prepare(|root| {
            set_relays(root, Some("NL-HOT"), &[("FR-HOT", "BE-HOT")]);
            set_relays(
                root,
                Some("BE-HOT"),
                &[("FR-HOT", "DE-HOT"), ("DE-HOT", "BE-HOT")],
            );
            set_relays(
                root,
                Some("DE-HOT"),
                &[("FR-HOT", "NL-HOT"), ("NL-HOT", "DE-HOT")],
            );
        })
        .start()
        .await;
    let mut nl = fed.operator(NL);
    let sent = submit(&mut nl, &format!("http://{FR_IP}/looping"), "").await;
    let at_origin = wait_case(&nl, &sent.report_id, 20, |c| c.status == "refused").await;
    let d = &at_origin.deliveries[0];
    assert_eq!(d.state, "refused");
    assert!(d.reason.contains("DE-HOT refused it"), "{d:?}");
    assert_eq!(
        d.via,
        vec!["BE-HOT"],
        "the refusal came back the way it went"
    );

    // One row per node that saw it, no case anywhere, nothing at FR-HOT.
    let mut fr = fed.operator(FR);
    assert!(cases(&mut fr, "").await.is_empty());
    for (i, relayed) in [(BE, 1), (DE, 0)] {
        let mut op = fed.operator(i);
        assert!(cases(&mut op, "incoming").await.is_empty());
        assert_eq!(cases(&mut op, "relayed").await.len(), relayed);
    }
    assert_eq!(cases(&mut nl, "").await.len(), 1);
    for i in [NL, BE, DE] {
        audit_verifies(&fed, i).await;
    }
    fed.shutdown().await;
}

async fn hand_off(
    fed: &Federation,
    i: usize,
    id: &str,
    target: &[&str],
    reason: &str,
) -> std::process::Output {
    tokio::process::Command::new(BIN)
        .args(["cases", "handoff", id, "--reason", reason])
        .args(target)
        .arg("--config")
        .arg(fed.config_path(i))
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_moved_case_is_handed_over_and_the_origin_follows_it() {
    // BE-HOT's own directory entry says it takes only grooming reports;
    // the others do not know yet.
    let fed = Federation::builder(CHAIN)
        .quiet_audit()
        .prepare(|root| {
            edit_directory(root, Some("BE-HOT"), |n| {
                if n.id == "BE-HOT" {
                    n.categories = vec!["grooming".into()];
                }
            });
        })
        .start()
        .await;
    let mut nl = fed.operator(NL);
    let mut fr = fed.operator(FR);
    let sent = submit(&mut nl, &format!("http://{FR_IP}/moving"), "").await;
    let id = sent.report_id.clone();
    wait_case(&nl, &id, 20, |c| c.status == "delivered").await;
    for status in ["in-review", "illegal-baseline", "notice-sent"] {
        fr.update_case(pb::UpdateCaseRequest {
            id: id.clone(),
            status: status.into(),
            reason: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    }

    // Handing back to the origin would be a loop; the origin cannot hand
    // over a case it does not work.
    let loop_back = fr
        .hand_off_case(pb::HandOffCaseRequest {
            id: id.clone(),
            to: "NL-HOT".into(),
            reason: "back".into(),
            hosting_ip: String::new(),
            resolve_again: false,
        })
        .await
        .unwrap_err();
    assert_eq!(loop_back.code(), tonic::Code::FailedPrecondition);
    let not_worked = nl
        .hand_off_case(pb::HandOffCaseRequest {
            id: id.clone(),
            to: "DE-HOT".into(),
            reason: "mine".into(),
            hosting_ip: String::new(),
            resolve_again: false,
        })
        .await
        .unwrap_err();
    assert_eq!(not_worked.code(), tonic::Code::FailedPrecondition);

    // First try: BE-HOT declines (its own entry says grooming only).
    let out = hand_off(&fed, FR, &id, &["--to", "BE-HOT"], "now hosted in Belgium").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at_fr = wait_case(&fr, &id, 20, |c| {
        c.deliveries
            .iter()
            .any(|d| d.destination == "BE-HOT" && d.state == "refused")
    })
    .await;
    assert_eq!(at_fr.status, "moved");

    // Second try, by where the content is hosted now: routing picks DE-HOT.
    let out = hand_off(
        &fed,
        FR,
        &id,
        &["--hosting-ip", DE_IP],
        "moved to a German host",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at_fr = wait_case(&fr, &id, 20, |c| {
        c.deliveries
            .iter()
            .any(|d| d.destination == "DE-HOT" && d.state == "delivered")
    })
    .await;
    assert_eq!(at_fr.status, "moved");
    let mut de = fed.operator(DE);
    let at_de = case(&mut de, &id).await;
    assert_eq!(at_de.status, "received");
    assert_eq!(at_de.origin, "NL-HOT");
    assert_eq!(at_de.received_from.as_deref(), Some("FR-HOT"));
    assert!(at_de.history[0].reason.contains("handed over by FR-HOT"));
    // The handoff hop is signed by FR-HOT and names its reason.
    let env = stored_envelope(&fed, DE, &id).await;
    let directory = Directory::load(&fed.dir.path().join("directory.toml")).unwrap();
    let opened = wire::open_envelope(
        &env,
        &fed.id(FR),
        &fed.id(DE),
        &directory,
        alertrelay::node::Core::now_ms(),
    )
    .unwrap();
    assert!(opened.handed_off_here);
    assert_eq!(opened.handoffs[0].0.as_str(), "FR-HOT");
    let hop_reason = &opened.handoffs[0].2;
    assert!(
        hop_reason.starts_with("moved to a German host [new evidence: hosted in DE per "),
        "{hop_reason}"
    );
    // Once accepted, it is not handed over a second time.
    let again = hand_off(&fed, FR, &id, &["--to", "DE-HOT"], "again").await;
    assert!(!again.status.success());

    for status in ["in-review", "illegal-baseline", "notice-sent", "removed"] {
        de.update_case(pb::UpdateCaseRequest {
            id: id.clone(),
            status: status.into(),
            reason: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // The origin follows the case: FR-HOT moved it, BE-HOT declined,
    // DE-HOT took it and removed the content — each signed by its hotline.
    let at_nl = wait_case(&nl, &id, 20, |c| c.status == "removed").await;
    let by = |dest: &str| {
        at_nl
            .deliveries
            .iter()
            .find(|d| d.destination == dest)
            .unwrap()
    };
    assert_eq!(by("FR-HOT").state, "delivered");
    assert_eq!(by("BE-HOT").state, "refused");
    assert!(
        by("BE-HOT").reason.contains("declined"),
        "{:?}",
        by("BE-HOT")
    );
    assert_eq!(by("BE-HOT").handed_off_by.as_deref(), Some("FR-HOT"));
    assert_eq!(by("DE-HOT").state, "delivered");
    assert_eq!(by("DE-HOT").handed_off_by.as_deref(), Some("FR-HOT"));
    assert_eq!(by("DE-HOT").via, vec!["FR-HOT"]);
    let history: Vec<(&str, &str)> = at_nl
        .history
        .iter()
        .map(|h| (h.signer.as_str(), h.status.as_str()))
        .collect();
    assert!(history.contains(&("FR-HOT", "moved")), "{history:?}");
    assert!(history.contains(&("DE-HOT", "removed")), "{history:?}");
    for i in [NL, BE, DE, FR] {
        audit_verifies(&fed, i).await;
    }
    fed.shutdown().await;
}

#[test]
fn a_directory_whose_relays_form_a_cycle_is_refused() {
    let text = r#"
federation = "f"
[[node]]
id = "AA"
endpoint = "https://127.0.0.1:1"
relay = "BB"
[[node]]
id = "BB"
endpoint = "https://127.0.0.1:2"
relay = "CC"
[[node]]
id = "CC"
endpoint = "https://127.0.0.1:3"
relay = "AA"
"#;
    let raw: RawDirectory = toml::from_str(text).unwrap();
    let err = Directory::from_raw(raw, "directory.toml").unwrap_err();
    assert!(err.to_string().contains("relay chain comes back"), "{err}");
    let raw: RawDirectory = toml::from_str(&text.replace("relay = \"AA\"", "")).unwrap();
    let dir = Directory::from_raw(raw, "directory.toml").unwrap();
    let id = |s: &str| alertrelay::identity::NodeId::new(s).unwrap();
    assert_eq!(dir.relays_of(&id("AA")), vec![id("BB"), id("CC")]);
    assert_eq!(dir.next_hop(&id("XX"), &id("AA")), id("CC"));
    assert_eq!(dir.next_hop(&id("CC"), &id("AA")), id("BB"));
    assert_eq!(dir.next_hop(&id("BB"), &id("AA")), id("AA"));
    let raw: RawDirectory =
        toml::from_str(&text.replace("relay = \"AA\"", "relay = \"ZZ\"")).unwrap();
    assert!(
        Directory::from_raw(raw, "directory.toml")
            .unwrap_err()
            .to_string()
            .contains("not in the directory")
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[tokio::test]
async fn a_relay_purges_its_copy_on_schedule_and_still_passes_statuses_back() {
    let mut fed = Federation::builder(CHAIN)
        .quiet_audit()
        .relay("FR-HOT", "DE-HOT")
        .prepare(|root| {
            let cfg = root.join("DE-HOT").join("node.toml");
            let mut text = std::fs::read_to_string(&cfg).unwrap();
            text.push_str("\n[retention]\ndelivered_reports_days = 0\n");
            std::fs::write(&cfg, text).unwrap();
        })
        .start()
        .await;
    let nl = fed.operator(NL);
    let marker = "zq-relayed-marker-3319";
    let sent = submit(
        &mut fed.operator(NL),
        &format!("http://{FR_IP}/{marker}"),
        "",
    )
    .await;
    wait_case(&nl, &sent.report_id, 20, |c| c.status == "delivered").await;
    // The relay's copy is due once the destination answered and the
    // receipt went back (nothing left in its outbox for the report).
    fed.stop(DE).await;
    let out = tokio::process::Command::new(BIN)
        .args(["retention", "run", "--json", "--config"])
        .arg(fed.config_path(DE))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["delivered"], 1, "{run}");
    let bytes = std::fs::read(fed.database(DE)).unwrap();
    assert!(
        !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
        "the relayed URL is gone from the relay's file"
    );
    audit_verifies(&fed, DE).await;
    // The tombstone still carries FR-HOT's updates back to the origin.
    fed.restart(DE).await;
    let mut fr = fed.operator(FR);
    fr.update_case(pb::UpdateCaseRequest {
        id: sent.report_id.clone(),
        status: "in-review".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_case(&nl, &sent.report_id, 20, |c| c.status == "in-review").await;
    fed.shutdown().await;
}

/// A co-destination cannot pose as a relay: NL-HOT, which holds a copy of
/// a report routed to it and to DE-HOT, signs its own hop and hands the
/// envelope to DE-HOT. DE-HOT has no relay in front of it, so the hop
/// chain is not its relay chain: refused, nothing stored, and the refusal
/// audited.
#[tokio::test]
async fn a_co_destination_cannot_pose_as_a_relay() {
    let fed = Federation::start(CHAIN).await;
    let origin = &fed.id(FR);
    let payload = pb::ReportPayload {
        report_id: "posed-relay-1".into(),
        origin: origin.to_string(),
        created_at_ms: alertrelay::node::Core::now_ms(),
        urls: vec!["http://85.214.132.117/x".into()],
        category: "csam".into(),
        route: Some(pb::RouteDecision {
            kind: "peer".into(),
            destinations: vec!["NL-HOT".into(), "DE-HOT".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let signed = wire::sign(
        &fed.signing_key(FR),
        origin,
        alertrelay::crypto::signing::Purpose::Report,
        &payload,
    );
    let digest = wire::digest(&signed.payload);
    let posed = wire::hop(
        &fed.signing_key(NL),
        &fed.id(NL),
        &payload.report_id,
        origin.as_str(),
        &digest,
        origin.as_str(),
        "DE-HOT",
        None,
        alertrelay::node::Core::now_ms(),
    );
    let envelope = pb::Envelope {
        report: Some(signed),
        hops: vec![posed],
    };
    let answer = fed
        .federation_as(NL, DE)
        .forward(pb::ForwardRequest {
            envelopes: vec![envelope],
            urgent: false,
        })
        .await
        .unwrap()
        .into_inner();
    let result = &answer.results[0];
    assert_eq!(
        result.code,
        tonic::Code::FailedPrecondition as i32,
        "{result:?}"
    );
    assert!(result.message.contains("relays"), "{result:?}");
    let mut de = fed.operator(DE);
    assert!(
        cases(&mut de, "").await.is_empty(),
        "nothing stored at DE-HOT"
    );
    fed.shutdown().await;
}

/// Statuses go back through the node a report came from only while the
/// directory names it as the relay in front of this hotline: once FR-HOT
/// no longer sits behind DE-HOT, its statuses go straight to the origin,
/// and DE-HOT (here, gone) can neither read nor drop them.
#[tokio::test]
async fn statuses_go_straight_to_the_origin_past_a_node_that_is_not_the_relay() {
    let mut fed = Federation::builder(CHAIN)
        .quiet_audit()
        .relay("FR-HOT", "DE-HOT")
        .start()
        .await;
    let nl = fed.operator(NL);
    let sent = submit(
        &mut fed.operator(NL),
        &format!("http://{FR_IP}/past-relay"),
        "",
    )
    .await;
    wait_case(&nl, &sent.report_id, 20, |c| c.status == "delivered").await;
    let mut fr = fed.operator(FR);
    assert_eq!(
        case(&mut fr, &sent.report_id)
            .await
            .received_from
            .as_deref(),
        Some("DE-HOT")
    );
    set_relays(fed.dir.path(), Some("FR-HOT"), &[]);
    fed.admin(FR).reload(pb::ReloadRequest {}).await.unwrap();
    fed.stop(DE).await;
    fr.update_case(pb::UpdateCaseRequest {
        id: sent.report_id.clone(),
        status: "in-review".into(),
        reason: "looking".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let at_origin = wait_case(&nl, &sent.report_id, 20, |c| c.status == "in-review").await;
    assert!(
        at_origin
            .history
            .iter()
            .any(|h| h.signer == "FR-HOT" && h.status == "in-review"),
        "{:?}",
        at_origin.history
    );
    fed.shutdown().await;
}
