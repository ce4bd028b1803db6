//! BIND 9 on loopback, serving a DNSSEC-signed zone: the signer is not
//! ours (Debian's `bind9-utils`: `dnssec-keygen`, `dnssec-signzone`) and
//! the server is not ours (`named`, Debian's `bind9`), so the node's
//! validation is judged against the standard's reference implementation.
//!
//! The zone is the root zone: every test name sits in it, signed by one
//! key-signing key whose DNSKEY file is the trust anchor the node is given
//! (`[dns] trust_anchor`). Without BIND the tests print one `SKIPPED`
//! line, unless `ALERTRELAY_REQUIRE_BIND` is set (`.ci/run` installs BIND
//! and sets it), which makes a missing BIND a failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// `named` answering for the signed zone; killed when dropped.
pub struct SignedZone {
    addr: SocketAddr,
    anchor: PathBuf,
    _named: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl SignedZone {
    /// Where `named` answers (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The key-signing key's DNSKEY record (`dnssec-keygen`'s `.key`).
    pub fn trust_anchor(&self) -> &Path {
        &self.anchor
    }
}

fn required() -> bool {
    std::env::var("ALERTRELAY_REQUIRE_BIND").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether BIND's server and signing tools are installed; `false` after
/// printing why the test is skipped.
pub fn available(test: &str) -> bool {
    let missing: Vec<&str> = ["named", "dnssec-keygen", "dnssec-signzone"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("-V")
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !required(),
        "{test}: ALERTRELAY_REQUIRE_BIND is set, but {missing:?} cannot run"
    );
    eprintln!(
        "SKIPPED {test}: BIND ({missing:?}) is not installed (.ci/run installs bind9 and bind9-utils)"
    );
    false
}

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Signs a root zone holding `records` (zone-file lines with absolute
/// names), lets `tamper` change the signed text (to forge an answer after
/// signing), and serves it with `named` on a free loopback port, with
/// `unsigned` child zones (name, records) delegated from it without a DS
/// record: provably unsigned.
pub async fn start(
    records: &str,
    unsigned: &[(&str, &str)],
    tamper: impl FnOnce(String) -> String,
) -> SignedZone {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let delegations: String = unsigned
        .iter()
        .map(|(name, _)| format!("{name}. IN NS ns.example.\n"))
        .collect();
    let ksk = run(
        path,
        "dnssec-keygen",
        &["-q", "-a", "ED25519", "-f", "KSK", "-K", ".", "."],
    );
    run(
        path,
        "dnssec-keygen",
        &["-q", "-a", "ED25519", "-K", ".", "."],
    );
    std::fs::write(
        path.join("root.db"),
        format!(
            "$TTL 300\n\
             . IN SOA ns.example. admin.example. 1 3600 600 86400 300\n\
             . IN NS ns.example.\n\
             ns.example. IN A 127.0.0.1\n\
             {records}\n{delegations}"
        ),
    )
    .unwrap();
    let mut zones = String::new();
    for (i, (name, records)) in unsigned.iter().enumerate() {
        let file = format!("unsigned-{i}.db");
        std::fs::write(
            path.join(&file),
            format!(
                "$TTL 300\n\
                 {name}. IN SOA ns.example. admin.example. 1 3600 600 86400 300\n\
                 {name}. IN NS ns.example.\n\
                 {records}\n"
            ),
        )
        .unwrap();
        zones.push_str(&format!(
            "zone \"{name}\" {{ type primary; file \"{file}\"; }};\n"
        ));
    }
    // Smart signing (-S) takes both keys from the key directory; NSEC
    // (the default) proves names that do not exist.
    run(
        path,
        "dnssec-signzone",
        &["-S", "-K", ".", "-o", ".", "-f", "root.signed", "root.db"],
    );
    let signed = std::fs::read_to_string(path.join("root.signed")).unwrap();
    std::fs::write(path.join("root.signed"), tamper(signed)).unwrap();

    let port = free_port();
    std::fs::write(
        path.join("named.conf"),
        format!(
            "options {{\n\
               directory \"{dir}\";\n\
               listen-on port {port} {{ 127.0.0.1; }};\n\
               listen-on-v6 {{ none; }};\n\
               recursion no;\n\
               dnssec-validation no;\n\
               notify no;\n\
               pid-file none;\n\
               session-keyfile \"{dir}/session.key\";\n\
               managed-keys-directory \"{dir}\";\n\
             }};\n\
             controls {{ }};\n\
             zone \".\" {{ type primary; file \"root.signed\"; }};\n\
             {zones}",
            dir = path.display()
        ),
    )
    .unwrap();
    let mut named = tokio::process::Command::new("named")
        .args(["-g", "-n", "1", "-c"])
        .arg(path.join("named.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cannot start named");
    // `named -g` logs to standard error; it answers once it says running.
    let mut log = BufReader::new(named.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = log.next_line().await {
            let running = line.ends_with("running");
            seen.push(line);
            if running {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(ready, Ok(true)),
        "named did not start:\n{}",
        seen.join("\n")
    );
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    SignedZone {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        anchor: path.join(format!("{ksk}.key")),
        _named: named,
        _dir: dir,
    }
}

/// A port free for both UDP and TCP on loopback at the time of asking.
fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
