//! The one harness every test file starts federations with: real
//! alertrelay nodes on loopback, certificates minted per test by
//! `provision::init` (what `alertrelay federation init` runs), temp SQLite
//! files (or a PostgreSQL database of their own), real mutual TLS.
//!
//! `Federation::builder(&[("FR-PDC", &["FR"]), ...])` says how: the nodes
//! in this process (the default) or as `alertrelay serve` processes
//! (`.processes()`: SIGKILL, crash points, logs, memory of their own),
//! limits, audit intervals, relays, a fallback, databases, and edits of
//! the files before any node starts; `.start()` runs them, `.create()`
//! only writes them, `.provision()` writes files for configuration tests.
//! `check` holds the delivery invariants a fault run must keep, `proxy` a
//! link that loses replies or partitions, `pg` a fresh PostgreSQL
//! database per test.

// Each test binary uses part of the harness.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use alertrelay::api::convert::case_from_pb;
use alertrelay::node::cases::CaseView;
use alertrelay::pb;
use alertrelay::pb::operator_client::OperatorClient;
use tonic::transport::Channel;

pub mod bind;
pub mod browser;
pub mod check;
mod federation;
pub mod pg;
pub mod proxy;
pub mod raw;
pub mod validators;

// Each test binary uses part of what the harness offers.
#[allow(unused_imports)]
pub use federation::{
    BIN, Builder, CRASH_ENV, FEDERATION, Federation, Provisioned, Run, error_chain, fast_delivery,
    process_delivery, set_toml,
};

/// A German IP address in the shipped IPFire data.
pub const DE_IP: &str = "85.214.132.117";
/// A French one.
pub const FR_IP: &str = "62.210.16.6";
/// A Dutch one.
pub const NL_IP: &str = "145.100.100.100";
/// A Swiss one (no hotline in the test federations).
pub const CH_IP: &str = "130.59.1.1";

/// Runs the CLI (the built binary) without blocking the runtime the
/// in-process nodes run on: exit code, stdout, stderr.
pub async fn cli(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run alertrelay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the CLI from a test with no runtime of its own.
pub fn cli_blocking(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .output()
        .expect("run alertrelay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A path as a CLI argument.
pub fn arg(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Submits one bulk report of `http://<hosting_ip>/fault-harness/<n>`
/// through `client`; returns its id.
pub async fn submit_numbered(
    mut client: OperatorClient<Channel>,
    hosting_ip: &str,
    n: u64,
) -> Result<String, tonic::Status> {
    let r = client
        .submit_report(pb::SubmitReportRequest {
            urls: vec![format!("http://{hosting_ip}/fault-harness/{n}")],
            category: "csam".into(),
            priority: pb::Priority::Bulk as i32,
            ..Default::default()
        })
        .await?;
    Ok(r.into_inner().report_id)
}

pub async fn submit(
    client: &mut OperatorClient<Channel>,
    url: &str,
    hosting_ip: &str,
) -> pb::SubmitReportResponse {
    client
        .submit_report(pb::SubmitReportRequest {
            urls: vec![url.to_owned()],
            category: "csam".into(),
            hosting_ip: hosting_ip.into(),
            priority: pb::Priority::Bulk as i32,
            notes: String::new(),
            hashes: vec![],
            submission_id: String::new(),
            classification: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Submits an urgent report of `url`; returns its report id.
pub async fn submit_urgent(client: &mut OperatorClient<Channel>, url: &str) -> String {
    client
        .submit_report(pb::SubmitReportRequest {
            urls: vec![url.to_owned()],
            category: "csam".into(),
            priority: pb::Priority::Urgent as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report_id
}

pub async fn case(client: &mut OperatorClient<Channel>, id: &str) -> CaseView {
    case_from_pb(
        client
            .get_case(pb::GetCaseRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner(),
    )
}

pub async fn cases(client: &mut OperatorClient<Channel>, direction: &str) -> Vec<CaseView> {
    client
        .list_cases(pb::ListCasesRequest {
            direction: direction.into(),
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .cases
        .into_iter()
        .map(case_from_pb)
        .collect()
}

/// Polls a case until `check` holds (each poll is a real RPC), or panics
/// after `secs` seconds with the last state.
pub async fn wait_case(
    client: &OperatorClient<Channel>,
    id: &str,
    secs: u64,
    check: impl Fn(&CaseView) -> bool,
) -> CaseView {
    let client = client.clone();
    eventually(
        secs,
        || {
            let mut c = client.clone();
            let id = id.to_owned();
            async move { case(&mut c, &id).await }
        },
        check,
    )
    .await
}

/// Polls `check` until it holds (each poll is a real RPC), or panics after
/// `secs` seconds with the last state.
pub async fn eventually<T: std::fmt::Debug, F, Fut>(
    secs: u64,
    mut probe: F,
    check: impl Fn(&T) -> bool,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = probe().await;
        if check(&v) {
            return v;
        }
        if Instant::now() > deadline {
            panic!("condition not reached in {secs}s; last state: {v:#?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether the database's files (the file, its WAL) hold `needle`.
pub fn files_hold(db: &std::path::Path, needle: &str) -> bool {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    [db.to_path_buf(), std::path::PathBuf::from(wal)]
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .any(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
}
