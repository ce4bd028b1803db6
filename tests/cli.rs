//! The command line as users run it: the built binary.

use std::process::Command;

fn alertrelay(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_alertrelay"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_demo_walks_reports_through_a_federation_and_verifies_every_audit_log() {
    let (code, out, err) = alertrelay(&["demo"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for want in [
        "route:    peer -> DE-ECO",
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
    let (code, out, err) = alertrelay(&[
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
    let (code, _, err) = alertrelay(&["audit", "verify", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("listen_adress") && err.contains("node.toml"),
        "{err}"
    );

    // A bad value names its key.
    std::fs::write(&config, text.replace("127.0.0.1:", "localhost-")).unwrap();
    let (code, _, err) = alertrelay(&["audit", "verify", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("`listen`"), "{err}");

    // A malformed --node is a usage error.
    let (code, _, err) = alertrelay(&["federation", "init", "--out", "x", "--node", "fr=FRA"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("ID=CC"), "{err}");
}

#[test]
fn geo_lookup_answers_from_the_shipped_data_with_its_source() {
    let (code, out, _) = alertrelay(&["geo", "lookup", "130.59.1.1", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["country"], "CH");
    assert_eq!(v["dataset_date"], "2026-06-25");
    let (code, out, _) = alertrelay(&["geo", "lookup", "2.16.0.1", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["country"], serde_json::Value::Null, "EU is not a country");
    assert_eq!(v["raw_code"], "EU");
}

#[test]
fn sigterm_shuts_a_node_down_cleanly_within_a_bound() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("fed");
    let (code, _, err) = alertrelay(&[
        "federation",
        "init",
        "--out",
        out_dir.to_str().unwrap(),
        "--node",
        "FR-PDC=FR",
        "--node",
        "DE-ECO=DE",
    ]);
    assert_eq!(code, 0, "{err}");
    let config = out_dir.join("FR-PDC/node.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_alertrelay"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Ready when it says where it listens.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "did not exit within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
    // Flushed: the WAL was folded into the database file.
    let wal = out_dir.join("FR-PDC/node.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "WAL left behind"
    );
    let (code, out, err) = alertrelay(&[
        "audit",
        "verify",
        "--offline",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
}
