//! The Debian package (issue #26): `cargo deb` packages the binary this
//! test build made (`--no-build --profile dev`: a release build would take
//! most of CI's time; the package's layout is the same), `dpkg-deb`
//! unpacks it into a temporary root, and the test checks what an operator
//! gets: the binary on PATH, the hardened unit pointing at it, the
//! maintainer scripts (system user, private directories, backup and
//! migration on upgrade), no configuration or key shipped. The upgrade's
//! `db migrate` is run for real on a node's database.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;

/// Whether `cargo deb` runs; panics when it does not and
/// ALERTRELAY_REQUIRE_CARGO_DEB=1 (`.ci/run` installs it and sets it).
fn cargo_deb(test: &str) -> bool {
    let works = std::process::Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        assert!(
            std::env::var("ALERTRELAY_REQUIRE_CARGO_DEB").unwrap_or_default() != "1",
            "{test}: ALERTRELAY_REQUIRE_CARGO_DEB is set, but `cargo deb` does not run"
        );
        eprintln!("SKIPPED {test}: cargo-deb is not installed (cargo install --locked cargo-deb)");
    }
    works
}

fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every regular file under `root`, relative.
fn files(root: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Builds the package from the test build's binary; returns the .deb.
fn build_deb(out: &Path) -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_alertrelay"));
    let profile_dir = binary.parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let deb = out.join("alertrelay.deb");
    run(std::process::Command::new("cargo")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir)
        .args([
            "deb",
            "--no-build",
            "--no-strip",
            "--fast",
            "--profile",
            "dev",
            "--output",
        ])
        .arg(&deb));
    deb
}

#[test]
fn the_debian_package_has_the_binary_the_hardened_unit_and_safe_maintainer_scripts() {
    let test = "the_debian_package_has_the_binary_the_hardened_unit_and_safe_maintainer_scripts";
    if !cargo_deb(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let deb = build_deb(tmp.path());
    let root = tmp.path().join("root");
    let control = root.join("DEBIAN");
    run(std::process::Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root));
    run(std::process::Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&control));

    // The binary on PATH, executable, and it runs.
    let bin = root.join("usr/bin/alertrelay");
    assert_eq!(mode(&bin), 0o755);
    let version = run(std::process::Command::new(&bin).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");

    // The hardened unit, running that binary as the system user on
    // /etc/alertrelay, writing only /var/lib/alertrelay.
    let unit = ["lib/systemd/system", "usr/lib/systemd/system"]
        .iter()
        .map(|d| root.join(d).join("alertrelay.service"))
        .find(|p| p.exists())
        .expect("the systemd unit is in the package");
    assert_eq!(mode(&unit), 0o644);
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "User=alertrelay",
        "ExecStart=/usr/bin/alertrelay serve --config /etc/alertrelay/node.toml --log-format json",
        "ExecStartPre=/usr/bin/alertrelay doctor --config /etc/alertrelay/node.toml",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/alertrelay",
        "ReadOnlyPaths=/etc/alertrelay",
        "CapabilityBoundingSet=",
        "UMask=0077",
    ] {
        assert!(text.lines().any(|l| l == line), "the unit lacks {line:?}");
    }
    for exec in text.lines().filter(|l| l.starts_with("Exec")) {
        let program = exec.split_once('=').unwrap().1.split(' ').next().unwrap();
        if program.starts_with("/usr/bin/alertrelay") {
            assert!(root.join(&program[1..]).exists(), "{exec}");
        }
    }

    // Nothing under /etc: no configuration or key travels in a package.
    let mut all = Vec::new();
    files(&root, &mut all);
    assert!(
        !root.join("etc").exists(),
        "the package ships files under /etc"
    );
    for f in all.iter().filter(|f| !f.starts_with(&control)) {
        let m = mode(f);
        assert!(m == 0o644 || m == 0o755, "{}: mode {m:o}", f.display());
    }
    assert!(root.join("usr/share/doc/alertrelay/README.md").exists());
    assert!(
        root.join("usr/share/doc/alertrelay/node.example.toml")
            .exists()
    );

    let control_text = std::fs::read_to_string(control.join("control")).unwrap();
    assert!(
        control_text.contains("Package: alertrelay"),
        "{control_text}"
    );
    let depends = control_text
        .lines()
        .find(|l| l.starts_with("Depends:"))
        .unwrap_or_default();
    assert!(depends.contains("adduser"), "{control_text}");

    // The maintainer scripts: executable, valid shell, and doing in order
    // what an upgrade must (user, private directories, backup, migrate,
    // then start again).
    for script in ["postinst", "prerm", "postrm"] {
        let p = control.join(script);
        assert_eq!(mode(&p), 0o755, "{script}");
        run(std::process::Command::new("sh").arg("-n").arg(&p));
    }
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    let at = |needle: &str| {
        postinst
            .find(needle)
            .unwrap_or_else(|| panic!("postinst lacks {needle:?}"))
    };
    at("adduser --system --group --home /var/lib/alertrelay");
    at(r#"install -d -o "$user" -g "$user" -m 0700 /etc/alertrelay"#);
    at(r#"install -d -o "$user" -g "$user" -m 0700 /var/lib/alertrelay"#);
    at(r#"-exec chmod 0600 {} +"#);
    assert!(at("alertrelay db backup") < at("alertrelay db migrate"));
    assert!(at("alertrelay db migrate") < at("systemctl start alertrelay.service"));
    let prerm = std::fs::read_to_string(control.join("prerm")).unwrap();
    assert!(
        prerm.contains("systemctl stop alertrelay.service"),
        "{prerm}"
    );
}

#[tokio::test]
async fn db_migrate_is_refused_while_the_node_runs_and_migrates_once_it_stopped() {
    let mut fed = Federation::builder(&[("FR-PDC", &["FR"])])
        .quiet_audit()
        .start()
        .await;
    let config = fed.config_path(0);
    let (code, _, err) = cli(&["db", "migrate", "--config", arg(&config)]).await;
    assert_ne!(code, 0);
    assert!(err.contains("in use by a running node"), "{err}");
    fed.stop(0).await;
    let (code, out, err) = cli(&["db", "migrate", "--config", arg(&config)]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is migrated to this version"), "{out}");
    // The node starts on it as before.
    fed.restart(0).await;
    fed.shutdown().await;
}
