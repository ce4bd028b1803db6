//! The signed directory (issue #25): a version published at the
//! secretariat and put on one node only reaches every node by the nodes'
//! own exchange; a suspension cuts the node off everywhere; forged,
//! replayed, expired and key-dropping versions are refused by every node
//! and audited; a node does not start on a rolled-back file; a node of the
//! previous protocol is still talked to.

use std::path::Path;

use crate::common::*;
use alertrelay::crypto::signing::{NodeKey, encode_public_key};
use alertrelay::directory::RawDirectory;
use alertrelay::directory::signed::{
    NewVersion, RawDirectoryKey, RawDirectoryKeys, SignedDirectory,
};
use alertrelay::node::Core;
use alertrelay::pb;
use alertrelay::provision::secretariat::{self, Publish};
use tonic::Code;

const SIX: &[(&str, &[&str])] = &[
    ("FR-PDC", &["FR"]),
    ("DE-ECO", &["DE"]),
    ("NL-EOKM", &["NL"]),
    ("CH-ACTION", &["CH"]),
    ("BE-CHILDFOCUS", &["BE"]),
    ("AT-STOPLINE", &["AT"]),
];

const TWO: &[(&str, &[&str])] = &[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])];

/// The exchange interval of these federations, ms.
const INTERVAL: u64 = 200;

/// Waits until every running node uses directory serial `serial`.
async fn wait_serial(fed: &Federation, nodes: &[usize], serial: u64) {
    eventually(
        30,
        || async {
            nodes
                .iter()
                .map(|&i| (fed.id(i).to_string(), fed.core(i).directory().serial()))
                .collect::<Vec<_>>()
        },
        |v| v.iter().all(|(_, s)| *s == serial),
    )
    .await;
}

/// Puts the secretariat's latest version on node `i` only (its own
/// directory file), as an operator copying one file would.
fn install_on(fed: &Federation, i: usize) {
    let signed = fed.dir.path().join(secretariat::SIGNED);
    std::fs::copy(&signed, &fed.configs[i].directory_path).unwrap();
}

async fn node_info(
    fed: &Federation,
    from: usize,
    to: usize,
) -> Result<pb::NodeInfoResponse, tonic::Status> {
    fed.federation_as(from, to)
        .node_info(pb::NodeInfoRequest {})
        .await
        .map(|r| r.into_inner())
}

/// The `detail` of node `i`'s audit entries of `kind`.
async fn audited(fed: &Federation, i: usize, kind: &str) -> Vec<serde_json::Value> {
    fed.audit_export(i)
        .await
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.detail)
        .collect()
}

#[tokio::test]
async fn a_version_put_on_one_node_reaches_all_and_a_suspended_or_departed_node_is_refused_everywhere()
 {
    let fed = Federation::builder(SIX)
        .signed_directory(INTERVAL)
        .start()
        .await;
    let all = [0, 1, 2, 3, 4, 5];
    let others = [0, 1, 3, 4, 5];
    wait_serial(&fed, &all, 1).await;
    assert!(node_info(&fed, 2, 1).await.is_ok());

    // The secretariat suspends NL-EOKM; the version is put on FR-PDC only.
    let nl = fed.id(2);
    let published =
        secretariat::set_active(fed.dir.path(), &nl, false, &Publish::default()).unwrap();
    assert_eq!(published.serial, 2);
    install_on(&fed, 0);
    wait_serial(&fed, &others, 2).await;

    // NL-EOKM is refused by every other node.
    for to in others {
        let err = eventually(
            30,
            || async { node_info(&fed, 2, to).await.err() },
            |e| e.is_some(),
        )
        .await
        .unwrap();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("suspended"), "{err:?}");
    }

    // Each node audited what it applied and where it came from: FR-PDC
    // from its file, the others from a peer.
    for i in others {
        let applied = audited(&fed, i, "directory.applied").await;
        let last = applied
            .last()
            .unwrap_or_else(|| panic!("{}: nothing applied", fed.id(i)));
        assert_eq!(last["directory_serial"], 2, "{last}");
        assert_eq!(last["previous_serial"], 1, "{last}");
        let from = last["from"].as_str().unwrap();
        if i == 0 {
            assert_eq!(from, "file");
        } else {
            assert!(from.starts_with("node:"), "{last}");
        }
    }
    // `status` and the metrics show the serial.
    let status = fed
        .operator(1)
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.directory_serial, 2);
    assert!(status.directory_expires_at_ms > Core::now_ms());
    let metrics = fed.metrics(3).await;
    assert!(
        metrics.contains("alertrelay_directory_serial 2"),
        "{metrics}"
    );

    // Reinstated: NL-EOKM hears of it from its peers, and is let in again.
    let published =
        secretariat::set_active(fed.dir.path(), &nl, true, &Publish::default()).unwrap();
    assert_eq!(published.serial, 3);
    install_on(&fed, 3);
    wait_serial(&fed, &all, 3).await;
    eventually(
        30,
        || async { node_info(&fed, 2, 1).await.is_ok() },
        |ok| *ok,
    )
    .await;
    let mut nl_operator = fed.operator(2);
    let id = submit(
        &mut nl_operator,
        &format!("http://{DE_IP}/after-reinstatement"),
        "",
    )
    .await
    .report_id;
    wait_case(&nl_operator, &id, 30, |c| c.status == "delivered").await;

    // AT-STOPLINE leaves: out of the directory, its certificate revoked by
    // the CRL the version carries; every other node refuses it.
    let published = secretariat::leave(fed.dir.path(), &fed.id(5), &Publish::default()).unwrap();
    assert_eq!(published.serial, 4);
    install_on(&fed, 1);
    wait_serial(&fed, &[0, 1, 2, 3, 4], 4).await;
    for to in [0, 1, 2, 3, 4] {
        let gone = fed.id(5);
        assert!(fed.core(to).directory().node(&gone).is_none());
        eventually(
            30,
            || async { node_info(&fed, 5, to).await.is_err() },
            |refused| *refused,
        )
        .await;
    }
    fed.shutdown().await;
}

/// A version of the federation's directory signed by `signers`, with
/// `keys` as its directory keys.
fn version(
    dir: &Path,
    serial: u64,
    expires_in_ms: i64,
    keys: &RawDirectoryKeys,
    signers: &[&NodeKey],
) -> SignedDirectory {
    let source: RawDirectory =
        toml::from_str(&std::fs::read_to_string(dir.join("directory.toml")).unwrap()).unwrap();
    let now = Core::now_ms();
    let payload = NewVersion {
        source,
        serial,
        issued_at_ms: now - 1000,
        expires_at_ms: now + expires_in_ms,
        keys,
        crl: None,
    }
    .payload()
    .unwrap();
    SignedDirectory::sign(payload, signers)
}

fn directory_keys(keys: &[&NodeKey]) -> RawDirectoryKeys {
    RawDirectoryKeys {
        threshold: 1,
        keys: keys
            .iter()
            .map(|k| RawDirectoryKey {
                id: k.key_id().to_owned(),
                public_key: encode_public_key(&k.verifying_key()),
            })
            .collect(),
        retired: Vec::new(),
    }
}

#[tokio::test]
async fn forged_replayed_expired_and_key_dropping_versions_are_refused_everywhere_and_audited() {
    let mut fed = Federation::builder(TWO)
        .signed_directory(INTERVAL)
        .start()
        .await;
    let dir = fed.dir.path().to_path_buf();
    let first = std::fs::read(dir.join(secretariat::SIGNED)).unwrap();
    let published = secretariat::publish(&dir, &Publish::default()).unwrap();
    assert_eq!(published.serial, 2);
    install_on(&fed, 1);
    wait_serial(&fed, &[0, 1], 2).await;
    // `GetDirectory` gives the exact bytes published to a node behind, and
    // nothing to one that is not.
    let served = fed
        .federation_as(0, 1)
        .get_directory(pb::GetDirectoryRequest { known_serial: 1 })
        .await
        .unwrap()
        .into_inner();
    let published =
        SignedDirectory::from_json(&std::fs::read(dir.join(secretariat::SIGNED)).unwrap()).unwrap();
    assert_eq!(served.payload, published.payload);
    assert_eq!(served.signatures.len(), 1);
    let nothing = fed
        .federation_as(0, 1)
        .get_directory(pb::GetDirectoryRequest { known_serial: 2 })
        .await
        .unwrap()
        .into_inner();
    assert!(nothing.payload.is_empty() && nothing.signatures.is_empty());

    let key = NodeKey::load(&dir.join(secretariat::DIRECTORY_KEY)).unwrap();
    let thief = NodeKey::generate();
    let trusted = directory_keys(&[&key]);
    let bad = [
        // Signed by a key nodes do not trust.
        (
            "directory-unsigned",
            version(&dir, 9, 86_400_000, &directory_keys(&[&thief]), &[&thief]).to_json(),
        ),
        // Serial 1, validly signed: a replay of the first version.
        (
            "directory-rollback",
            String::from_utf8(first.clone()).unwrap(),
        ),
        // Validly signed, newer, but expired.
        (
            "directory-expired",
            version(&dir, 10, -1000, &trusted, &[&key]).to_json(),
        ),
        // Signed by the trusted key and a new one, dropping the trusted one.
        (
            "directory-removes-key",
            version(
                &dir,
                11,
                86_400_000,
                &directory_keys(&[&thief]),
                &[&key, &thief],
            )
            .to_json(),
        ),
    ];
    for (code, doc) in &bad {
        for i in [0, 1] {
            std::fs::write(&fed.configs[i].directory_path, doc).unwrap();
        }
        // A reload (SIGHUP) refuses it too, and changes nothing.
        let err = fed.admin(0).reload(pb::ReloadRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{code}: {err:?}");
        assert!(err.message().contains("nothing changed"), "{err:?}");
        for i in [0, 1] {
            let refused = eventually(
                30,
                || async { audited(&fed, i, "directory.refused").await },
                |entries| entries.iter().any(|e| e["reason_code"] == *code),
            )
            .await;
            let entry = refused.iter().find(|e| e["reason_code"] == *code).unwrap();
            assert_eq!(entry["serial_here"], 2, "{entry}");
            // And an alert is raised for the people on duty.
            let alerts = fed
                .audit_export(i)
                .await
                .into_iter()
                .filter(|e| e.kind == "alert.raised" && e.subject == "directory_refused")
                .count();
            assert!(alerts > 0, "{code}: no alert at {}", fed.id(i));
            assert_eq!(
                fed.core(i).directory().serial(),
                2,
                "{code} at {}",
                fed.id(i)
            );
        }
        let metrics = fed.metrics(0).await;
        assert!(
            metrics.contains(&format!("alertrelay_refusals_total{{reason=\"{code}\"}}")),
            "{code}: {metrics}"
        );
    }
    // Nothing of it was applied anywhere.
    for i in [0, 1] {
        let applied = audited(&fed, i, "directory.applied").await;
        assert!(
            applied.iter().all(|e| e["directory_serial"] == 2),
            "{applied:?}"
        );
    }

    // A node whose file was rolled back behind what it applied does not
    // start, and says why; with the latest version back it does.
    fed.stop(1).await;
    std::fs::write(&fed.configs[1].directory_path, &first).unwrap();
    let err = fed.try_restart(1).await.unwrap_err();
    let text = error_chain(&err);
    assert!(
        text.contains("rollback") && text.contains("serial 1"),
        "{text}"
    );
    std::fs::copy(
        dir.join(secretariat::SIGNED),
        &fed.configs[1].directory_path,
    )
    .unwrap();
    fed.restart(1).await;
    assert_eq!(fed.core(1).directory().serial(), 2);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_node_of_the_previous_protocol_is_still_talked_to() {
    const THREE: &[(&str, &[&str])] = &[
        ("FR-PDC", &["FR"]),
        ("DE-ECO", &["DE"]),
        ("NL-EOKM", &["NL"]),
    ];
    let mut fed = Federation::builder(THREE)
        .signed_directory(INTERVAL)
        .create()
        .await;
    // NL-EOKM behaves on the wire as the previous release.
    fed.set(2, "exchange.protocol", 1);
    fed.start_all().await;

    let new = node_info(&fed, 0, 1).await.unwrap();
    assert_eq!(new.protocol_version, 2);
    assert!(
        new.features.iter().any(|f| f == "directory-exchange"),
        "{new:?}"
    );
    assert_eq!(new.directory_serial, 1);
    let old = node_info(&fed, 0, 2).await.unwrap();
    assert_eq!(old.protocol_version, 0, "{old:?}");
    assert!(old.features.is_empty(), "{old:?}");
    let err = fed
        .federation_as(0, 2)
        .get_directory(pb::GetDirectoryRequest { known_serial: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    // `doctor` tells the operator which peer is behind.
    let config = fed.config_path(0);
    let (_, out, err) = cli(&["doctor", "--config", arg(&config), "--json"]).await;
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no {name}: {report}"))
            .clone()
    };
    assert_eq!(check("protocol of DE-ECO")["status"], "ok");
    let old = check("protocol of NL-EOKM");
    assert_eq!(old["status"], "warn", "{old}");
    assert!(
        old["detail"].as_str().unwrap().contains("previous release"),
        "{old}"
    );

    // The new nodes note it, and reports flow both ways.
    eventually(
        30,
        || async { fed.metrics(0).await },
        |m| m.contains("alertrelay_peer_protocol{peer=\"NL-EOKM\"} 1"),
    )
    .await;
    let mut fr = fed.operator(0);
    let to_old = submit(&mut fr, &format!("http://{NL_IP}/to-the-old-node"), "")
        .await
        .report_id;
    wait_case(&fr, &to_old, 30, |c| c.status == "delivered").await;
    let mut nl = fed.operator(2);
    let from_old = submit(&mut nl, &format!("http://{FR_IP}/from-the-old-node"), "")
        .await
        .report_id;
    wait_case(&nl, &from_old, 30, |c| c.status == "delivered").await;

    // A new version spreads among the new nodes; the old one keeps its own
    // until its operator installs it (or it is upgraded).
    secretariat::publish(fed.dir.path(), &Publish::default()).unwrap();
    install_on(&fed, 0);
    wait_serial(&fed, &[0, 1], 2).await;
    assert_eq!(fed.core(2).directory().serial(), 1);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_hotline_joins_rotates_its_signing_key_and_its_certificate_with_one_command_each() {
    // Six hotlines; a seventh joins.
    let mut fed = Federation::builder(SIX_WITHOUT_CH)
        .signed_directory(INTERVAL)
        .start()
        .await;
    let existing = [0, 1, 2, 3, 4, 5];
    let dir = fed.dir.path().to_path_buf();

    // CH-ACTION joins: one command at the secretariat, the version put on
    // one existing node; the new node starts from the folder it was given.
    let options = alertrelay::provision::Options {
        delivery: Some(fast_delivery()),
        audit: Some(alertrelay::config::RawAudit {
            checkpoint_interval_ms: 100,
            witness_interval_ms: 100,
        }),
        metrics_listen: Some("127.0.0.1:0".into()),
        exchange: Some(alertrelay::config::RawExchange {
            directory_interval_ms: INTERVAL,
            protocol: 2,
        }),
        ..Default::default()
    };
    let spec = alertrelay::provision::NodeSpec::parse("CH-ACTION=CH").unwrap();
    let published = secretariat::join(&dir, &spec, None, &options, &Publish::default()).unwrap();
    assert_eq!(published.serial, 2);
    install_on(&fed, 0);
    let ch = fed.add_node(&dir.join("CH-ACTION/node.toml"));
    fed.restart(ch).await;
    let everyone = [0, 1, 2, 3, 4, 5, ch];
    wait_serial(&fed, &everyone, 2).await;
    // Reports flow between the new node and every other, both ways.
    let ips = [FR_IP, DE_IP, NL_IP, BE_IP, AT_IP, IT_IP];
    let mut ch_operator = fed.operator(ch);
    for (i, ip) in ips.iter().enumerate() {
        let mut operator = fed.operator(i);
        let to_new = submit(&mut operator, &format!("http://{CH_IP}/from-{i}"), "")
            .await
            .report_id;
        wait_case(&operator, &to_new, 30, |c| c.status == "delivered").await;
        let from_new = submit(&mut ch_operator, &format!("http://{ip}/to-{i}"), "")
            .await
            .report_id;
        wait_case(&ch_operator, &from_new, 30, |c| c.status == "delivered").await;
    }

    // FR-PDC's signing key is rotated: the secretariat holds FR-PDC's
    // folder, so the new key and version go there; the rest learn it.
    let fr = fed.id(0);
    let old_key = fed.core(0).key().key_id().to_owned();
    let (published, new_key) = secretariat::rotate_key(
        &dir,
        &fr,
        None,
        time::Duration::days(1),
        &Publish::default(),
    )
    .unwrap();
    assert_eq!(published.serial, 3);
    wait_serial(&fed, &everyone, 3).await;
    assert_eq!(fed.core(0).key().key_id(), new_key);
    let fr_entry = fed.core(1).directory().node(&fr).unwrap().clone();
    let old = fr_entry.keys.iter().find(|k| k.id == old_key).unwrap();
    assert!(
        old.not_after_ms.is_some_and(|t| t > Core::now_ms()),
        "the old key overlaps"
    );
    let mut fr_operator = fed.operator(0);
    let signed_new = submit(&mut fr_operator, &format!("http://{DE_IP}/new-key"), "")
        .await
        .report_id;
    wait_case(&fr_operator, &signed_new, 30, |c| c.status == "delivered").await;

    // DE-ECO's TLS certificate is rotated: the old one is revoked by the
    // CRL the next version carries, and refused by every node.
    let de = fed.id(1);
    let de_dir = dir.join("DE-ECO");
    let old_cert = std::fs::read(de_dir.join("node.pem")).unwrap();
    let old_tls_key = std::fs::read(de_dir.join("node.key")).unwrap();
    let keep = dir.join("old-de");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::write(keep.join("node.pem"), &old_cert).unwrap();
    write_private(&keep.join("node.key"), &old_tls_key);
    let published = secretariat::rotate_tls(&dir, &de, &Publish::default()).unwrap();
    assert_eq!(published.serial, 4);
    wait_serial(&fed, &everyone, 4).await;
    let mut de_operator = fed.operator(1);
    let after = submit(&mut de_operator, &format!("http://{FR_IP}/new-cert"), "")
        .await
        .report_id;
    wait_case(&de_operator, &after, 30, |c| c.status == "delivered").await;
    let old_tls = alertrelay::crypto::tls::client_config(&alertrelay::crypto::tls::TlsFiles {
        ca: &dir.join("ca.pem"),
        cert: &keep.join("node.pem"),
        key: &keep.join("node.key"),
        crls: &[],
    })
    .unwrap();
    for to in existing.into_iter().filter(|&i| i != 1).chain([ch]) {
        let channel = alertrelay::federation::channel::channel(
            &fed.endpoint(to),
            Some(fed.id(to)),
            FEDERATION,
            old_tls.clone(),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let refused = pb::federation_client::FederationClient::new(channel)
            .node_info(pb::NodeInfoRequest {})
            .await;
        assert!(
            refused.is_err(),
            "{} let the revoked certificate in",
            fed.id(to)
        );
    }
    fed.shutdown().await;
}

/// Six hotlines, CH-ACTION not yet among them.
const SIX_WITHOUT_CH: &[(&str, &[&str])] = &[
    ("FR-PDC", &["FR"]),
    ("DE-ECO", &["DE"]),
    ("NL-EOKM", &["NL"]),
    ("BE-CHILDFOCUS", &["BE"]),
    ("AT-STOPLINE", &["AT"]),
    ("IT-TELEFONO", &["IT"]),
];
/// Addresses the shipped geo data places in Belgium, Austria and Italy.
const BE_IP: &str = "193.190.198.1";
const AT_IP: &str = "131.130.1.1";
const IT_IP: &str = "193.204.1.1";

const THREE_NODES: &[(&str, &[&str])] = &[
    ("FR-PDC", &["FR"]),
    ("DE-ECO", &["DE"]),
    ("NL-EOKM", &["NL"]),
];

fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

#[tokio::test]
async fn a_rolling_upgrade_from_the_previous_protocol_loses_and_duplicates_no_report() {
    let mut fed = Federation::builder(THREE_NODES)
        .signed_directory(INTERVAL)
        .create()
        .await;
    // A federation of the previous protocol.
    for i in 0..3 {
        fed.set(i, "exchange.protocol", 1);
    }
    fed.start_all().await;
    let ips = [FR_IP, DE_IP, NL_IP];
    // (origin, report id, destination)
    let mut sent: Vec<(usize, String, usize)> = Vec::new();
    let mut n = 0;
    let mut send = async |fed: &Federation, from: usize, to: usize| {
        n += 1;
        let id = fed.submit(from, ips[to], n).await.unwrap();
        (from, id, to)
    };
    // One node at a time: stopped (reports for it queue at the others),
    // started as this release on the same database and files.
    for upgraded in 0..3 {
        for from in 0..3 {
            for to in (0..3).filter(|&to| to != from) {
                sent.push(send(&fed, from, to).await);
            }
        }
        fed.stop(upgraded).await;
        for from in (0..3).filter(|&from| from != upgraded) {
            for to in (0..3).filter(|&to| to != from) {
                sent.push(send(&fed, from, to).await);
            }
        }
        fed.set(upgraded, "exchange.protocol", 2);
        fed.restart(upgraded).await;
        let info = node_info(&fed, (upgraded + 1) % 3, upgraded).await.unwrap();
        assert_eq!(info.protocol_version, 2);
    }
    for from in 0..3 {
        for to in (0..3).filter(|&to| to != from) {
            sent.push(send(&fed, from, to).await);
        }
    }
    fed.wait_settled(std::time::Duration::from_secs(60)).await;
    // Every report arrived once where it was sent.
    for to in 0..3 {
        let incoming = fed.cases(to, "incoming").await.unwrap();
        for (from, id, _) in sent.iter().filter(|(_, _, d)| *d == to) {
            let origin = fed.id(*from).to_string();
            let copies = incoming
                .iter()
                .filter(|c| &c.id == id && c.origin == origin)
                .count();
            assert_eq!(copies, 1, "{origin}/{id} at {}", fed.id(to));
        }
        let expected = sent.iter().filter(|(_, _, d)| *d == to).count();
        assert_eq!(incoming.len(), expected, "at {}", fed.id(to));
    }
    // Now all of this release: the directory spreads.
    secretariat::publish(fed.dir.path(), &Publish::default()).unwrap();
    install_on(&fed, 2);
    wait_serial(&fed, &[0, 1, 2], 2).await;
    for i in 0..3 {
        let (code, out) = fed.audit_verify(i, false).await;
        assert_eq!(code, 0, "{}: {out}", fed.id(i));
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn the_previous_release_database_migrates_and_verifies() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/previous-release/FR-PDC");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("FR-PDC");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        let to = dir.join(entry.file_name());
        std::fs::copy(entry.path(), &to).unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".key") || name.starts_with("node.db") {
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let config_path = dir.join("node.toml");
    let verify = async || {
        cli(&[
            "audit",
            "verify",
            "--offline",
            "--config",
            arg(&config_path),
        ])
        .await
    };
    let export = async || {
        let (code, out, err) = cli(&["audit", "export", "--config", arg(&config_path)]).await;
        assert_eq!(code, 0, "{err}");
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let (code, out, err) = verify().await;
    assert_eq!(code, 0, "the fixture verifies as written: {out}{err}");
    let before = export().await;
    assert!(
        before
            .iter()
            .filter(|e| e["kind"] == "node.started")
            .all(|e| e["detail"].get("directory_serial").is_none()),
        "the fixture was written by the previous release"
    );

    // This release starts on it (migrating the database), runs, stops.
    let config = alertrelay::config::NodeConfig::load(&config_path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = alertrelay::runtime::start_with_listener(config, listener)
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!(node.core.directory().serial(), 0, "a plain directory file");
    node.shutdown().await;

    let (code, out, err) = verify().await;
    assert_eq!(code, 0, "after the upgrade: {out}{err}");
    let after = export().await;
    assert!(after.len() > before.len());
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "the old entries are untouched"
    );
    let started = after.iter().rfind(|e| e["kind"] == "node.started").unwrap();
    assert_eq!(started["detail"]["directory_serial"], 0, "{started}");
}

/// A peer that answers `GetDirectory` with what the test gives it, and
/// nothing else.
struct DirectoryPeer(Result<pb::SignedDirectory, Code>);

#[tonic::async_trait]
impl pb::federation_server::Federation for DirectoryPeer {
    async fn forward(
        &self,
        _: tonic::Request<pb::ForwardRequest>,
    ) -> Result<tonic::Response<pb::ForwardResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    type ForwardStreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::ForwardResponse, tonic::Status>> + Send>,
    >;
    async fn forward_stream(
        &self,
        _: tonic::Request<tonic::Streaming<pb::ForwardRequest>>,
    ) -> Result<tonic::Response<Self::ForwardStreamStream>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn push_status(
        &self,
        _: tonic::Request<pb::PushStatusRequest>,
    ) -> Result<tonic::Response<pb::PushStatusResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn node_info(
        &self,
        _: tonic::Request<pb::NodeInfoRequest>,
    ) -> Result<tonic::Response<pb::NodeInfoResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn get_checkpoint(
        &self,
        _: tonic::Request<pb::GetCheckpointRequest>,
    ) -> Result<tonic::Response<pb::CheckpointNote>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn get_consistency_proof(
        &self,
        _: tonic::Request<pb::ConsistencyProofRequest>,
    ) -> Result<tonic::Response<pb::ConsistencyProof>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn cosign(
        &self,
        _: tonic::Request<pb::CosignRequest>,
    ) -> Result<tonic::Response<pb::CosignResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn get_witnessed(
        &self,
        _: tonic::Request<pb::GetWitnessedRequest>,
    ) -> Result<tonic::Response<pb::CheckpointNote>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn get_directory(
        &self,
        _: tonic::Request<pb::GetDirectoryRequest>,
    ) -> Result<tonic::Response<pb::SignedDirectory>, tonic::Status> {
        self.0
            .clone()
            .map(tonic::Response::new)
            .map_err(|code| tonic::Status::new(code, "as told"))
    }
}

async fn serve_directory_peer(
    answer: Result<pb::SignedDirectory, Code>,
) -> pb::federation_client::FederationClient<tonic::transport::Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::federation_server::FederationServer::new(DirectoryPeer(
                answer,
            )))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    pb::federation_client::FederationClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn to_pb(doc: &SignedDirectory) -> pb::SignedDirectory {
    pb::SignedDirectory {
        payload: doc.payload.clone(),
        signatures: doc
            .signatures
            .iter()
            .map(|(key_id, signature)| pb::DirectorySignature {
                key_id: key_id.clone(),
                signature: signature.clone(),
            })
            .collect(),
    }
}

#[tokio::test]
async fn what_a_peer_offers_over_the_wire_is_applied_only_when_valid_and_newer() {
    use alertrelay::federation::exchange::{Exchanged, exchange_once};
    // Exchanges only when the test drives them.
    let fed = Federation::builder(TWO)
        .signed_directory(3_600_000)
        .quiet_audit()
        .start()
        .await;
    let dir = fed.dir.path().to_path_buf();
    let de = fed.id(1);
    let key = NodeKey::load(&dir.join(secretariat::DIRECTORY_KEY)).unwrap();
    let trusted = directory_keys(&[&key]);
    let thief = NodeKey::generate();
    let first =
        SignedDirectory::from_json(&std::fs::read(dir.join(secretariat::SIGNED)).unwrap()).unwrap();
    let cases = [
        (
            Ok(to_pb(&version(&dir, 2, 86_400_000, &trusted, &[&thief]))),
            Exchanged::Refused("directory-unsigned"),
        ),
        (
            Ok(to_pb(&version(&dir, 2, -1, &trusted, &[&key]))),
            Exchanged::Refused("directory-expired"),
        ),
        (Ok(pb::SignedDirectory::default()), Exchanged::Nothing),
        (Ok(to_pb(&first)), Exchanged::Same),
        (Err(Code::Unimplemented), Exchanged::PreviousProtocol),
        (
            Ok(to_pb(&version(&dir, 2, 86_400_000, &trusted, &[&key]))),
            Exchanged::Applied(2),
        ),
        // Once at 2, the first version is a rollback.
        (Ok(to_pb(&first)), Exchanged::Refused("directory-rollback")),
    ];
    for (answer, expected) in cases {
        let mut client = serve_directory_peer(answer).await;
        let got = exchange_once(fed.core(0), &de, &mut client).await;
        assert_eq!(got, expected);
    }
    assert_eq!(fed.core(0).directory().serial(), 2);
    let refused = audited(&fed, 0, "directory.refused").await;
    let codes: Vec<&str> = refused
        .iter()
        .map(|e| e["reason_code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "directory-unsigned",
            "directory-expired",
            "directory-rollback"
        ]
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn the_directory_key_is_replaced_through_the_exchange_and_a_version_of_the_new_key_alone_is_refused_before()
 {
    const THREE: &[(&str, &[&str])] = &[
        ("FR-PDC", &["FR"]),
        ("DE-ECO", &["DE"]),
        ("NL-EOKM", &["NL"]),
    ];
    let fed = Federation::builder(THREE)
        .signed_directory(INTERVAL)
        .start()
        .await;
    let dir = fed.dir.path().to_path_buf();
    let old = NodeKey::load(&dir.join(secretariat::DIRECTORY_KEY)).unwrap();
    let put_everywhere = |doc: &SignedDirectory| {
        for i in 0..3 {
            std::fs::write(&fed.configs[i].directory_path, doc.to_json()).unwrap();
        }
    };
    let refused_everywhere = async |code: &str| {
        for i in 0..3 {
            eventually(
                30,
                || async { audited(&fed, i, "directory.refused").await },
                |entries| entries.iter().any(|e| e["reason_code"] == code),
            )
            .await;
        }
    };
    // Someone with a new key of their own claims to replace the directory
    // key: signed by the new key alone, it is refused everywhere.
    let usurper = NodeKey::generate();
    let mut theirs = directory_keys(&[&usurper]);
    theirs.retired = vec![old.key_id().to_owned()];
    put_everywhere(&version(&dir, 5, 86_400_000, &theirs, &[&usurper]));
    refused_everywhere("directory-unsigned").await;
    for i in 0..3 {
        assert_eq!(fed.core(i).directory().serial(), 1);
    }
    // Put the real version back before anyone reads the file again.
    for i in 0..3 {
        std::fs::copy(
            dir.join(secretariat::SIGNED),
            &fed.configs[i].directory_path,
        )
        .unwrap();
    }

    // The secretariat replaces the key with one command; the version (old
    // and new signatures) is put on one node and spreads.
    let (published, new_id) = secretariat::rotate_directory_key(&dir, &Publish::default()).unwrap();
    assert_ne!(new_id, old.key_id());
    install_on(&fed, 0);
    wait_serial(&fed, &[0, 1, 2], published.serial).await;
    for i in 0..3 {
        let signed = fed.core(i).directory().signed.clone().unwrap();
        assert_eq!(signed.keys.ids(), vec![new_id.clone()], "at {}", fed.id(i));
        let applied = audited(&fed, i, "directory.applied").await;
        assert!(
            applied
                .iter()
                .any(|e| e["directory_keys"] == serde_json::json!([new_id])),
            "{applied:?}"
        );
    }
    // From now on versions signed by the new key alone are taken ...
    let next = secretariat::set_active(
        &dir,
        &alertrelay::identity::NodeId::new("NL-EOKM").unwrap(),
        false,
        &Publish::default(),
    )
    .unwrap();
    install_on(&fed, 1);
    wait_serial(&fed, &[0, 1], next.serial).await;
    // ... and the retired key counts for nothing (a thief of it, or a
    // replay of the versions it signed).
    let retired = dir.join(format!(
        "{}.retired-{}",
        secretariat::DIRECTORY_KEY,
        old.key_id()
    ));
    let retired = NodeKey::load(&retired).unwrap();
    put_everywhere(&version(
        &dir,
        50,
        86_400_000,
        &directory_keys(&[&retired]),
        &[&retired],
    ));
    for i in 0..2 {
        eventually(
            30,
            || async { audited(&fed, i, "directory.refused").await },
            |entries| {
                entries
                    .iter()
                    .filter(|e| e["reason_code"] == "directory-unsigned")
                    .count()
                    >= 2
            },
        )
        .await;
        assert_eq!(fed.core(i).directory().serial(), next.serial);
    }
    fed.shutdown().await;
}
