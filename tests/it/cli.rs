//! The command line as users run it: the built binary.

use crate::common::*;

#[test]
fn the_demo_walks_reports_through_a_federation_and_verifies_every_audit_log() {
    let (code, out, err) = cli_blocking(&["demo"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for want in [
        "route:    peer -> DE-ECO",
        // The first report names a host: the demo's own DNS server on
        // loopback answers, and the route carries the resolution.
        "dns:      gallery.example.de via resolvers 127.0.0.1:",
        "            asked gallery.example.de. IN A (answered)",
        "            gallery.example.de. CNAME edge.hosting.example.de. (TTL 300 s)",
        "            edge.hosting.example.de. A 85.214.132.117 (TTL 300 s)",
        "route:    fallback -> LE-FALLBACK",
        "route:    local -> (kept here)",
        "-> DE-ECO: delivered (signed receipt stored",
        "removed            signed by DE-ECO",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert_eq!(out.matches(": verified (root").count(), 5, "{out}");
    // Every node's checkpoint is cosigned by its four peers.
    assert_eq!(out.matches("cosigned by").count(), 5, "{out}");
    for line in out.lines().filter(|l| l.contains("cosigned by")) {
        let witnesses = line.split("cosigned by ").nth(1).unwrap_or_default();
        assert_eq!(witnesses.split(", ").count(), 4, "{line}");
    }
}

#[test]
fn federation_init_writes_loadable_configs_and_config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("fed");
    let (code, out, err) = cli_blocking(&[
        "federation",
        "init",
        "--out",
        out_dir.to_str().unwrap(),
        "--node",
        "FR-PDC=FR",
        "--node",
        "DE-ECO=DE,AT",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let config = out_dir.join("FR-PDC/node.toml");
    let loaded = alertrelay::config::NodeConfig::load(&config).unwrap();
    assert_eq!(loaded.node_id.as_str(), "FR-PDC");
    // A new node resolves reported host names with the machine's resolvers.
    assert_eq!(loaded.dns.mode(), "system");
    use std::os::unix::fs::PermissionsExt;
    for key in ["node.key", "operator.key", "signing.key"] {
        let mode = std::fs::metadata(out_dir.join("FR-PDC").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    // An unknown key is refused, naming the file and the key; exit code 64.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\nlisten_adress = \"x\"\n")).unwrap();
    let (code, _, err) = cli_blocking(&["audit", "verify", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("listen_adress") && err.contains("node.toml"),
        "{err}"
    );

    // A bad value names its key.
    std::fs::write(&config, text.replace("127.0.0.1:", "localhost-")).unwrap();
    let (code, _, err) = cli_blocking(&["audit", "verify", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("`listen`"), "{err}");

    // A malformed --node is a usage error.
    let (code, _, err) = cli_blocking(&["federation", "init", "--out", "x", "--node", "fr=FRA"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("ID=CC"), "{err}");
}

#[test]
fn geo_lookup_answers_from_the_shipped_data_with_its_source() {
    let (code, out, _) = cli_blocking(&["geo", "lookup", "130.59.1.1", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["country"], "CH");
    assert_eq!(v["dataset_date"], "2026-06-25");
    let (code, out, _) = cli_blocking(&["geo", "lookup", "2.16.0.1", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["country"], serde_json::Value::Null, "EU is not a country");
    assert_eq!(v["raw_code"], "EU");
}

#[tokio::test]
async fn sigterm_shuts_a_node_down_cleanly_within_a_bound() {
    use std::time::Duration;
    let mut fed = Federation::builder(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])])
        .processes()
        .create()
        .await;
    fed.restart(0).await;
    // It says where it listens.
    let fed_ref = &fed;
    eventually(
        5,
        || async { fed_ref.stdout(0) },
        |out| out.contains("listening on"),
    )
    .await;
    let exit = fed.terminate(0, Duration::from_secs(15)).await;
    assert_eq!(exit.code(), Some(0), "{}", fed.log_tail(0, 20));
    // Flushed: the WAL was folded into the database file.
    let mut wal = fed.database(0).into_os_string();
    wal.push("-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "WAL left behind"
    );
    let config = fed.config_path(0);
    let (code, out, err) = cli(&["audit", "verify", "--offline", "--config", arg(&config)]).await;
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_secretariat_publishes_each_change_as_a_signed_version_and_refuses_what_nodes_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let fed = dir.path().join("fed");
    let fed_arg = fed.to_str().unwrap();
    let (code, out, err) = cli_blocking(&[
        "federation",
        "init",
        "--out",
        fed_arg,
        "--node",
        "FR-PDC=FR",
        "--node",
        "DE-ECO=DE",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // The nodes read the signed version; the directory key is private.
    let config = alertrelay::config::NodeConfig::load(&fed.join("FR-PDC/node.toml")).unwrap();
    assert_eq!(config.directory.serial(), 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(fed.join("directory.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let (code, out, err) = cli_blocking(&[
        "federation",
        "suspend",
        "--dir",
        fed_arg,
        "--node",
        "DE-ECO",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("serial 2"), "{out}");
    let signed = alertrelay::directory::Directory::load(&fed.join("directory.signed")).unwrap();
    assert_eq!(signed.serial(), 2);
    let de = alertrelay::identity::NodeId::new("DE-ECO").unwrap();
    assert!(!signed.node(&de).unwrap().active);

    // A node that is not a member: a usage error naming it; nothing published.
    let (code, _, err) = cli_blocking(&[
        "federation",
        "suspend",
        "--dir",
        fed_arg,
        "--node",
        "XX-NONE",
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("XX-NONE"), "{err}");
    // Signed by a key the nodes do not trust: refused, nothing written.
    let stranger = dir.path().join("stranger.key");
    alertrelay::crypto::signing::NodeKey::generate()
        .save(&stranger)
        .unwrap();
    let (code, _, err) = cli_blocking(&[
        "federation",
        "publish",
        "--dir",
        fed_arg,
        "--key",
        stranger.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("would refuse"), "{err}");
    let after = alertrelay::directory::Directory::load(&fed.join("directory.signed")).unwrap();
    assert_eq!(after.serial(), 2);

    // `doctor` says which version a node holds and until when.
    let fr_config = fed.join("FR-PDC/node.toml");
    let (_, out, err) =
        cli_blocking(&["doctor", "--config", fr_config.to_str().unwrap(), "--json"]);
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "directory")
        .unwrap();
    assert_eq!(check["status"], "ok", "{check}");
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("signed serial 1"),
        "{check}"
    );
}
