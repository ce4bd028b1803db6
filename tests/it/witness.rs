//! Peer witnessing of audit logs between real nodes: checkpoints cosigned
//! by every peer, and a node restored from an old backup refused by its
//! witnesses and caught by `audit verify`.

use std::path::Path;

use crate::common::*;
use alertrelay::audit::note::{Checkpoint, SignedNote};
use alertrelay::pb;

const ABC: &[(&str, &[&str])] = &[
    ("FR-PDC", &["FR"]),
    ("DE-ECO", &["DE"]),
    ("NL-EOKM", &["NL"]),
];

async fn checkpoint_now(fed: &Federation, i: usize) -> SignedNote {
    let note = fed
        .admin(i)
        .make_checkpoint(pb::MakeCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .note;
    SignedNote::parse(&note).unwrap()
}

/// Waits until node `i`'s latest checkpoint carries `n` cosignatures.
async fn cosigned_by(fed: &Federation, i: usize, n: usize) -> SignedNote {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let note = checkpoint_now(fed, i).await;
        // The owner's signature plus one cosignature per witness.
        if note.signatures.len() > n {
            return note;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not cosigned: {note:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `alertrelay audit verify` on a node's files.
async fn audit_verify(config: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["audit", "verify", "--config", arg(config)];
    args.extend_from_slice(extra);
    cli(&args).await
}

async fn audit_kinds(db: &Path) -> Vec<(String, String)> {
    let store = alertrelay::store::Store::open(db).await.unwrap();
    let rows = store.audit_entries(0, 10_000).await.unwrap();
    store.close().await;
    rows.into_iter().map(|r| (r.kind, r.detail)).collect()
}

#[tokio::test]
async fn three_nodes_witness_each_other_and_a_rolled_back_node_is_refused() {
    let mut fed = Federation::start(ABC).await;
    let mut fr = fed.operator(0);
    let id = submit(&mut fr, &format!("http://{DE_IP}/a"), "")
        .await
        .report_id;
    wait_case(&fr, &id, 10, |c| c.status == "delivered").await;

    // Every node's checkpoints get cosigned by both of its peers.
    for i in 0..3 {
        let note = cosigned_by(&fed, i, 2).await;
        let cp = Checkpoint::parse_body(&note.text).unwrap();
        assert!(cp.size >= 1);
        assert_eq!(
            cp.origin,
            format!("test-federation/hotline/{}/audit", fed.id(i))
        );
    }
    let (code, out, err) = audit_verify(&fed.config_path(0), &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("witness DE-ECO: cosigned size"), "{out}");
    assert!(out.contains("witness NL-EOKM: cosigned size"), "{out}");

    // A backup of FR's database, taken now.
    fed.stop(0).await;
    let db = fed.database(0);
    let backup = std::fs::read(&db).unwrap();
    fed.restart(0).await;

    // FR carries on: more reports, a larger log, cosigned by the witnesses.
    let mut fr = fed.operator(0);
    for i in 0..3 {
        let id = submit(&mut fr, &format!("http://{DE_IP}/more/{i}"), "")
            .await
            .report_id;
        wait_case(&fr, &id, 10, |c| c.status == "delivered").await;
    }
    let witnessed = cosigned_by(&fed, 0, 2).await;
    let big = Checkpoint::parse_body(&witnessed.text).unwrap().size;

    // FR is restored from the old backup.
    fed.stop(0).await;
    std::fs::write(&db, &backup).unwrap();
    let _ = std::fs::remove_file(db.with_extension("db-wal"));
    let _ = std::fs::remove_file(db.with_extension("db-shm"));
    // Offline, the restored database is consistent with itself...
    let (code, out, err) = audit_verify(&fed.config_path(0), &["--offline"]).await;
    assert_eq!(code, 0, "{out}{err}");
    // ...but the witnesses remember the larger tree.
    let (code, out, err) = audit_verify(&fed.config_path(0), &[]).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert!(
        err.contains(&format!("cosigned this log at size {big}")),
        "{err}"
    );

    // Restarted on the old data, FR's new checkpoints are refused.
    fed.restart(0).await;
    checkpoint_now(&fed, 0).await;
    let de_db = fed.database(1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let note = checkpoint_now(&fed, 0).await;
        assert_eq!(
            note.signatures.len(),
            1,
            "no witness cosigns the rolled-back log"
        );
        let fr_kinds = audit_kinds(&fed.database(0)).await;
        if fr_kinds.iter().any(|(k, _)| k == "witness.refused-us") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "FR never heard of the refusal"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Both sides raise it as a metric too (the refusal FR heard first may
    // have been another witness's: wait for DE-ECO's).
    eventually(
        20,
        || fed.metrics(1),
        |p| p.contains("alertrelay_witness_events_total{peer=\"FR-PDC\",event=\"refused\"}"),
    )
    .await;
    eventually(
        20,
        || fed.metrics(0),
        |p| p.contains("alertrelay_witness_events_total{peer=\"DE-ECO\",event=\"refused_us\"}"),
    )
    .await;
    // DE-ECO counts the alarm by kind and raises it as an event.
    let page = eventually(
        20,
        || fed.metrics(1),
        |p| p.contains("alertrelay_witness_alarms_total{peer=\"FR-PDC\",kind="),
    )
    .await;
    assert!(
        page.contains("alertrelay_witness_alarms_total{peer=\"FR-PDC\",kind=\"rollback\"}")
            || page
                .contains("alertrelay_witness_alarms_total{peer=\"FR-PDC\",kind=\"inconsistent\"}"),
        "{page}"
    );
    let alarms: Vec<_> = fed
        .core(1)
        .store
        .alerts()
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.event == "witness_alarm")
        .collect();
    assert!(!alarms.is_empty(), "no witness_alarm event");
    assert_eq!(alarms[0].severity, "critical");
    assert!(alarms[0].summary.contains("FR-PDC"), "{alarms:?}");
    fed.stop(1).await;
    let refusals: Vec<_> = audit_kinds(&de_db)
        .await
        .into_iter()
        .filter(|(k, _)| k == "witness.refused")
        .collect();
    assert!(!refusals.is_empty(), "the witness recorded its refusal");
    assert!(
        refusals[0].1.contains("rollback") || refusals[0].1.contains("inconsistent"),
        "{refusals:?}"
    );
    fed.shutdown().await;
}

/// A hostile peer's Federation service, in plain HTTP/2 (the witness is
/// handed the client; what is tested is what it does with the answers): it
/// serves one checkpoint note, takes cosignatures, and nothing else.
struct HostilePeer {
    note: String,
}

type NoStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::ForwardResponse, tonic::Status>> + Send>,
>;

#[tonic::async_trait]
impl pb::federation_server::Federation for HostilePeer {
    async fn forward(
        &self,
        _: tonic::Request<pb::ForwardRequest>,
    ) -> Result<tonic::Response<pb::ForwardResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("hostile"))
    }
    type ForwardStreamStream = NoStream;
    async fn forward_stream(
        &self,
        _: tonic::Request<tonic::Streaming<pb::ForwardRequest>>,
    ) -> Result<tonic::Response<NoStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("hostile"))
    }
    async fn push_status(
        &self,
        _: tonic::Request<pb::PushStatusRequest>,
    ) -> Result<tonic::Response<pb::PushStatusResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("hostile"))
    }
    async fn node_info(
        &self,
        _: tonic::Request<pb::NodeInfoRequest>,
    ) -> Result<tonic::Response<pb::NodeInfoResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("hostile"))
    }
    async fn get_checkpoint(
        &self,
        _: tonic::Request<pb::GetCheckpointRequest>,
    ) -> Result<tonic::Response<pb::CheckpointNote>, tonic::Status> {
        Ok(tonic::Response::new(pb::CheckpointNote {
            note: self.note.clone(),
        }))
    }
    async fn get_consistency_proof(
        &self,
        _: tonic::Request<pb::ConsistencyProofRequest>,
    ) -> Result<tonic::Response<pb::ConsistencyProof>, tonic::Status> {
        Err(tonic::Status::unimplemented("hostile"))
    }
    async fn cosign(
        &self,
        _: tonic::Request<pb::CosignRequest>,
    ) -> Result<tonic::Response<pb::CosignResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::CosignResponse {}))
    }
    async fn get_witnessed(
        &self,
        _: tonic::Request<pb::GetWitnessedRequest>,
    ) -> Result<tonic::Response<pb::CheckpointNote>, tonic::Status> {
        Err(tonic::Status::unimplemented("hostile"))
    }
    async fn get_directory(
        &self,
        _: tonic::Request<pb::GetDirectoryRequest>,
    ) -> Result<tonic::Response<pb::SignedDirectory>, tonic::Status> {
        Err(tonic::Status::unimplemented("hostile"))
    }
}

/// Serves `peer` on loopback; a client for it.
async fn serve_hostile(
    peer: HostilePeer,
) -> pb::federation_client::FederationClient<tonic::transport::Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::federation_server::FederationServer::new(peer))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    pb::federation_client::FederationClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_checkpoint_larger_than_any_log_is_refused_not_clamped() {
    use alertrelay::federation::witness::{Outcome, witness_once};
    let fed = Federation::builder(ABC).quiet_audit().start().await;
    // NL-EOKM, with its real signing key, claims a log of 2^63 + 5 entries.
    let origin = alertrelay::audit::log_origin("test-federation", "NL-EOKM");
    let cp = Checkpoint {
        origin: origin.clone(),
        size: (1u64 << 63) + 5,
        root: [7; 32],
        extensions: vec![],
    };
    let text = cp.body();
    let pem = std::fs::read_to_string(&fed.configs[2].signing_key).unwrap();
    let key =
        <ed25519_dalek::SigningKey as ed25519_dalek::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem)
            .unwrap();
    let sig = alertrelay::audit::note::sign_note(&text, &origin, &key).unwrap();
    let note = SignedNote {
        text,
        signatures: vec![sig],
    }
    .encode();
    let mut client = serve_hostile(HostilePeer { note }).await;
    let nl = fed.id(2);
    let outcome = witness_once(fed.core(0), &nl, &mut client).await.unwrap();
    assert!(
        matches!(&outcome, Outcome::Refused(why, _) if why.contains("beyond any log")),
        "{outcome:?}"
    );
    assert!(
        fed.core(0)
            .store
            .witnessed("NL-EOKM")
            .await
            .unwrap()
            .is_none(),
        "nothing is stored of the lie"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn a_checkpoint_signed_with_a_revoked_key_is_not_witnessed() {
    use alertrelay::crypto::signing::{NodeKey, encode_public_key};
    use alertrelay::federation::witness::{Outcome, witness_once};
    let fed = Federation::builder(ABC).quiet_audit().start().await;
    // FR's directory: NL-EOKM rotated to a new key and revoked the old one.
    let path = fed.dir.path().join("FR-PDC").join("directory.toml");
    let mut raw: alertrelay::directory::RawDirectory =
        toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let nl = raw.nodes.iter_mut().find(|n| n.id == "NL-EOKM").unwrap();
    let new = NodeKey::generate();
    let mut entry = nl.keys[0].clone();
    entry.id = new.key_id().to_string();
    entry.public_key = encode_public_key(&new.verifying_key());
    nl.keys[0].revoked = true;
    nl.keys.push(entry);
    std::fs::write(&path, toml::to_string_pretty(&raw).unwrap()).unwrap();
    fed.admin(0).reload(pb::ReloadRequest {}).await.unwrap();
    // A checkpoint of NL's log signed with the revoked key.
    let origin = alertrelay::audit::log_origin("test-federation", "NL-EOKM");
    let text = Checkpoint {
        origin: origin.clone(),
        size: 3,
        root: [7; 32],
        extensions: vec![],
    }
    .body();
    let pem = std::fs::read_to_string(&fed.configs[2].signing_key).unwrap();
    let old =
        <ed25519_dalek::SigningKey as ed25519_dalek::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem)
            .unwrap();
    let sig = alertrelay::audit::note::sign_note(&text, &origin, &old).unwrap();
    let note = SignedNote {
        text,
        signatures: vec![sig],
    }
    .encode();
    let mut client = serve_hostile(HostilePeer { note }).await;
    let outcome = witness_once(fed.core(0), &fed.id(2), &mut client)
        .await
        .unwrap();
    assert!(
        matches!(&outcome, Outcome::Refused(..)),
        "a revoked key's checkpoint is refused: {outcome:?}"
    );
    assert!(
        fed.core(0)
            .store
            .witnessed("NL-EOKM")
            .await
            .unwrap()
            .is_none(),
        "and not recorded as NL's log"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn a_witness_refusal_is_bounded_escaped_and_throttled() {
    let fed = Federation::builder(ABC).quiet_audit().start().await;
    let mut de = fed.federation_as(1, 0);
    let refusal = format!(
        "forged\n2026-12-07T00:00:00Z INFO all good \u{1b}[2J{}",
        "x".repeat(100_000)
    );
    for _ in 0..8 {
        de.cosign(pb::CosignRequest {
            checkpoint: String::new(),
            cosignature: String::new(),
            refusal: refusal.clone(),
        })
        .await
        .unwrap();
    }
    let entries = fed.audit_export(0).await;
    let refused: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == "witness.refused-us")
        .collect();
    assert_eq!(refused.len(), 5, "five at once, then throttled");
    for e in refused {
        let reason = e.detail["reason"].as_str().unwrap();
        // 512 characters of it, the two control characters escaped.
        assert!(
            reason.ends_with('…') && reason.chars().count() < 540,
            "bounded: {}",
            reason.chars().count()
        );
        assert!(
            !reason.contains('\n') && !reason.contains('\u{1b}'),
            "escaped: {reason:.80}"
        );
    }
    let page = fed.metrics(0).await;
    assert!(
        page.contains("alertrelay_refusals_total{reason=\"refusals-throttled\"} 3"),
        "the rest counted: {page}"
    );
    fed.shutdown().await;
}
