//! Whole nodes on PostgreSQL (the real server, a fresh database per node,
//! dropped afterwards; skipped with the reason when the server cannot be
//! reached), and moving an existing SQLite node there with
//! `alertrelay db migrate-to`.

use std::path::Path;

use crate::common::pg::TestDb;
use crate::common::*;
use alertrelay::pb;
use alertrelay::store::{Database, Store};

const AB: &[(&str, &[&str])] = &[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])];

/// `alertrelay audit verify --offline --json` on a stopped node.
async fn audit_verify(config: &Path) -> serde_json::Value {
    let (code, out, err) = cli(&[
        "audit",
        "verify",
        "--config",
        arg(config),
        "--offline",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    v
}

async fn set_status(
    client: &mut pb::operator_client::OperatorClient<tonic::transport::Channel>,
    id: &str,
    status: &str,
) {
    client
        .update_case(pb::UpdateCaseRequest {
            id: id.into(),
            status: status.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_federation_on_postgres_delivers_end_to_end_and_its_audit_logs_verify() {
    let Some(fr_db) = TestDb::create("a_federation_on_postgres").await else {
        return;
    };
    let de_db = TestDb::create("a_federation_on_postgres").await.unwrap();
    let mut fed = Federation::builder(AB)
        .database(0, &fr_db.url)
        .database(1, &de_db.url)
        .start()
        .await;
    assert_eq!(
        fed.configs[0].database,
        Database::Postgres(fr_db.url.clone())
    );
    let (mut fr, mut de) = (fed.operator(0), fed.operator(1));

    let id = submit(&mut fr, &format!("http://{DE_IP}/on/postgres"), "")
        .await
        .report_id;
    let sent = wait_case(&fr, &id, 15, |c| c.status == "delivered").await;
    assert_eq!(sent.deliveries[0].state, "delivered");
    assert!(
        sent.deliveries[0].receipt.is_some(),
        "the signed receipt is stored"
    );
    let got = wait_case(&de, &id, 15, |c| c.status == "received").await;
    assert_eq!(got.origin, "FR-PDC");
    // The receiver's status change travels back, signed.
    set_status(&mut de, &id, "in-review").await;
    let seen = wait_case(&fr, &id, 15, |c| c.status == "in-review").await;
    assert!(
        seen.history
            .iter()
            .any(|h| h.status == "in-review" && h.signer == "DE-ECO"),
        "{seen:?}"
    );
    // An exact resubmission from the analyst's tool is one report, not two.
    let mut again = fed.operator(0);
    let first = again
        .submit_report(pb::SubmitReportRequest {
            urls: vec![format!("http://{DE_IP}/idempotent")],
            category: "csam".into(),
            priority: pb::Priority::Urgent as i32,
            submission_id: "sub-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let second = again
        .submit_report(pb::SubmitReportRequest {
            urls: vec![format!("http://{DE_IP}/idempotent")],
            category: "csam".into(),
            priority: pb::Priority::Urgent as i32,
            submission_id: "sub-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.report_id, second.report_id);
    // (The receiver knows a case only once it is delivered.)
    wait_case(&fr, &first.report_id, 15, |c| c.status == "delivered").await;
    wait_case(&de, &first.report_id, 15, |c| c.status == "received").await;
    // Let the checkpoints and cosignatures of both logs be written.
    eventually(
        15,
        || async {
            let store = Store::connect(&Database::Postgres(fr_db.url.clone()))
                .await
                .unwrap();
            let cp = store.latest_checkpoint().await.unwrap();
            let cos = match &cp {
                Some(c) => store.cosignatures(c.size as u64).await.unwrap().len(),
                None => 0,
            };
            store.close().await;
            cos
        },
        |n| *n > 0,
    )
    .await;
    let configs: Vec<_> = (0..2).map(|i| fed.config_path(i)).collect();
    fed.stop(0).await;
    fed.stop(1).await;

    // Nothing went to a SQLite file; everything is in PostgreSQL.
    assert!(!configs[0].parent().unwrap().join("node.db").exists());
    let store = Store::connect(&Database::Postgres(de_db.url.clone()))
        .await
        .unwrap();
    assert_eq!(
        store
            .reports_by_id(Some("FR-PDC"), &id)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .reports_by_id(None, &first.report_id)
            .await
            .unwrap()
            .len(),
        1
    );
    store.close().await;

    // The audit export and inclusion proofs read PostgreSQL too.
    let (code, out, err) = cli(&["audit", "export", "--config", arg(&configs[1])]).await;
    assert_eq!(code, 0, "{err}");
    let exported: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        exported.iter().any(|e| e["kind"] == "report.received"),
        "{out}"
    );
    let (code, out, err) = cli(&[
        "audit",
        "prove",
        "1",
        "--config",
        arg(&configs[0]),
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let proof = fed.dir.path().join("proof.json");
    std::fs::write(&proof, out).unwrap();
    let directory = fed.dir.path().join("directory.toml");
    let (code, out, err) = cli(&[
        "audit",
        "verify-proof",
        arg(&proof),
        "--directory",
        arg(&directory),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("VALID"), "{out}");

    for config in &configs {
        let v = audit_verify(config).await;
        assert!(v["entries"].as_u64().unwrap() >= 3, "{v}");
        assert!(v["checkpoints"].as_u64().unwrap() >= 1, "{v}");
    }
    let v = audit_verify(&configs[0]).await;
    assert!(v["cosignatures"].as_u64().unwrap() >= 1, "{v}");
}

#[tokio::test]
async fn a_sqlite_node_moves_to_postgres_with_its_audit_log_intact() {
    let Some(pg) = TestDb::create("a_sqlite_node_moves_to_postgres").await else {
        return;
    };
    let mut fed = Federation::start(AB).await;
    let (mut fr, de) = (fed.operator(0), fed.operator(1));
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = submit(&mut fr, &format!("http://{DE_IP}/before/{i}"), "")
            .await
            .report_id;
        wait_case(&fr, &id, 15, |c| c.status == "delivered").await;
        ids.push(id);
    }
    let config = fed.config_path(0);
    let sqlite = fed.database(0);
    eventually(
        15,
        || async {
            let store = Store::open(&sqlite).await.unwrap();
            let cp = store.latest_checkpoint().await.unwrap();
            store.close().await;
            cp.map(|c| c.size)
        },
        |size| size.is_some(),
    )
    .await;
    fed.stop(0).await;
    let before = audit_verify(&config).await;

    // A URL that is no PostgreSQL URL is refused before anything happens.
    let (code, _, err) = cli(&["db", "migrate-to", "mysql://x/y", "--config", arg(&config)]).await;
    assert_eq!(code, 64, "{err}");

    let (code, out, err) = cli(&[
        "db",
        "migrate-to",
        &pg.url,
        "--config",
        arg(&config),
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let moved: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(moved["ok"], true, "{moved}");
    assert_eq!(moved["root"], before["root"], "same audit log, same root");
    assert_eq!(moved["entries"], before["entries"]);
    assert_eq!(moved["checkpoints"], before["checkpoints"]);
    let rows = |t: &str| {
        moved["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["table"] == t)
            .unwrap()["rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows("reports"), 3);
    assert_eq!(rows("audit_log"), before["entries"].as_u64().unwrap());

    // Into a database that is no longer empty, nothing is copied.
    let (code, out, err) = cli(&["db", "migrate-to", &pg.url, "--config", arg(&config)]).await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("not empty"), "{err}");

    // The node runs on the copy: old cases are there, new ones flow, and
    // the log goes on from where it was.
    fed.set(0, "database", pg.url.as_str());
    fed.restart(0).await;
    let mut fr = fed.operator(0);
    for id in &ids {
        let c = case(&mut fr, id).await;
        assert_eq!(c.status, "delivered");
    }
    let id = submit(&mut fr, &format!("http://{DE_IP}/after"), "")
        .await
        .report_id;
    wait_case(&fr, &id, 15, |c| c.status == "delivered").await;
    wait_case(&de, &id, 15, |c| c.status == "received").await;
    fed.stop(0).await;
    fed.stop(1).await;
    let after = audit_verify(&config).await;
    assert!(
        after["entries"].as_u64().unwrap() > before["entries"].as_u64().unwrap(),
        "{after}"
    );
}

// ---- PostgreSQL as the README tells it (issue #22, item 12) ----

/// Tables in the `public` schema of the database `url` names.
async fn tables(url: &str) -> Vec<String> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let names = sqlx::query_scalar(
        "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    names
}

/// `doctor` only reads: pointed at an empty database it says there is no
/// schema yet, and the database stays empty (it used to create the schema
/// in whatever database the URL named, and report ok).
#[tokio::test]
async fn doctor_reads_an_empty_database_and_writes_nothing_to_it() {
    let Some(pg) = TestDb::create("doctor_reads_an_empty_database").await else {
        return;
    };
    let fed = Federation::builder(AB).database(0, &pg.url).create().await;
    let cfg = fed.config_path(0);
    let (code, out, err) = cli(&["doctor", "--config", arg(&cfg), "--json"]).await;
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    let database = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "database")
        .unwrap_or_else(|| panic!("no database check: {report}"))
        .clone();
    assert_eq!(database["status"], "warn", "{database} (exit {code})");
    assert!(
        database["detail"]
            .as_str()
            .unwrap()
            .contains("no alertrelay schema"),
        "{database}"
    );
    assert_eq!(tables(&pg.url).await, Vec::<String>::new(), "doctor wrote");
}

/// `db migrate-to` refuses while a node runs on the SQLite file (a copy
/// that missed the node's last writes would later look like a rollback),
/// and copies nothing.
#[tokio::test]
async fn migrate_to_is_refused_while_the_node_runs_and_copies_nothing() {
    let Some(pg) = TestDb::create("migrate_to_is_refused_while_the_node_runs").await else {
        return;
    };
    let fed = Federation::start(AB).await;
    let mut fr = fed.operator(0);
    submit(&mut fr, &format!("http://{DE_IP}/while-running"), "").await;
    let cfg = fed.config_path(0);
    let (code, out, err) = cli(&["db", "migrate-to", &pg.url, "--config", arg(&cfg)]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("running node"), "{err}");
    assert_eq!(
        tables(&pg.url).await,
        Vec::<String>::new(),
        "nothing copied"
    );
    fed.shutdown().await;
}

/// Replicas of one node each have a node.toml of their own (their own
/// listen and metrics addresses and replica id, the file written anew):
/// starting them is no configuration change. A change of a setting that
/// matters still is.
#[tokio::test]
async fn replica_starts_are_no_configuration_change() {
    let Some(pg) = TestDb::create("replica_starts_are_no_configuration_change").await else {
        return;
    };
    let mut fed = Federation::builder(AB).database(0, &pg.url).create().await;
    let r2 = fed.add_replica(0, "fr-2");
    fed.set(0, "delivery.replica", "fr-1");
    fed.start_together(&[(1, None), (0, None)]).await;
    fed.start_together(&[(r2, None)]).await;
    fed.stop(0).await;
    fed.restart(0).await;
    fed.stop(r2).await;
    fed.restart(r2).await;
    fed.stop(0).await;
    fed.stop(r2).await;
    let kinds = |entries: &[serde_json::Value], kind: &str| {
        entries.iter().filter(|e| e["kind"] == kind).count()
    };
    let entries = audit_json(&fed.config_path(0)).await;
    assert_eq!(kinds(&entries, "node.started"), 4);
    assert_eq!(kinds(&entries, "config.changed"), 0, "{entries:#?}");
    // One replica starting while another runs is no crash (#26).
    assert_eq!(kinds(&entries, "alert.raised"), 0, "{entries:#?}");
    // A setting every replica shares does show.
    fed.set(r2, "limits.max_report_age_days", 17);
    fed.restart(r2).await;
    fed.stop(r2).await;
    let entries = audit_json(&fed.config_path(0)).await;
    assert_eq!(kinds(&entries, "config.changed"), 1);
    fed.shutdown().await;
}

/// `alertrelay audit export` as JSON values.
async fn audit_json(config: &Path) -> Vec<serde_json::Value> {
    let (code, out, err) = cli(&["audit", "export", "--config", arg(config)]).await;
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A database that cannot be reached is reported at once with its cause,
/// by the node and by the commands that use it (it took ~34 s and said
/// only that a pool timed out).
#[tokio::test]
async fn an_unreachable_database_is_reported_at_once_with_its_cause() {
    let files = Federation::builder(AB).provision();
    let cfg = files.configs[0].clone();
    // Nothing listens: refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_port = closed.local_addr().unwrap().port();
    drop(closed);
    // Something listens and never answers: no answer.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for (port, cause) in [
        (refused_port, "refused"),
        (silent_port, "no answer within 5 s"),
    ] {
        set_toml(
            &cfg,
            "database",
            format!("postgres://postgres@127.0.0.1:{port}/nowhere"),
        );
        for args in [
            vec!["serve", "--config", arg(&cfg)],
            vec!["doctor", "--config", arg(&cfg)],
            vec!["audit", "verify", "--config", arg(&cfg), "--offline"],
        ] {
            let started = std::time::Instant::now();
            let (code, out, err) =
                tokio::time::timeout(std::time::Duration::from_secs(60), cli(&args))
                    .await
                    .unwrap_or_else(|_| panic!("{args:?} still waits after 60 s"));
            assert_ne!(code, 0, "{args:?}: {out}{err}");
            let said = format!("{out}{err}");
            assert!(
                said.contains(&format!("127.0.0.1:{port}")),
                "{args:?}: {said}"
            );
            assert!(said.to_lowercase().contains(cause), "{args:?}: {said}");
            // The bound is loose (the point is seconds, not half a minute).
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{args:?} took {:?}",
                started.elapsed()
            );
        }
    }
    drop(silent);
}

/// The HAProxy configuration docs/postgresql.md shows, for replicas at
/// `backends` and a frontend at `front`: the document's own text, its
/// addresses replaced, without the lines that belong to a system service
/// (syslog, chroot, stats socket, user, group, daemon).
fn documented_haproxy(front: std::net::SocketAddr, backends: &[std::net::SocketAddr]) -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/postgresql.md"))
            .unwrap();
    let fence = "```haproxy\n";
    let start = doc.find(fence).expect("the HAProxy block") + fence.len();
    let end = start + doc[start..].find("```").unwrap();
    let service = [
        "log /dev/log",
        "chroot ",
        "stats ",
        "user ",
        "group ",
        "daemon",
    ];
    let mut out = String::new();
    let mut servers = 0;
    for line in doc[start..end].lines() {
        let t = line.trim_start();
        if service.iter().any(|s| t.starts_with(s)) {
            continue;
        }
        if t.starts_with("bind ") {
            out.push_str(&format!("    bind {front}\n"));
        } else if t.starts_with("server ") {
            servers += 1;
            if servers == 1 {
                for (i, b) in backends.iter().enumerate() {
                    out.push_str(&format!("    server replica-{i} {b} check\n"));
                }
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        servers > 0,
        "the documented configuration names its replicas"
    );
    out
}

/// HAProxy (Debian's package) running `config` in the foreground, once
/// `haproxy -c` accepts it; None when it is not installed and not required
/// (`.ci/run` installs it and sets ALERTRELAY_REQUIRE_HAPROXY=1).
async fn haproxy(test: &str, dir: &Path, config: &str) -> Option<tokio::process::Child> {
    use std::io::Write;
    let required = std::env::var("ALERTRELAY_REQUIRE_HAPROXY").is_ok_and(|v| v == "1");
    let Some(bin) = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        assert!(
            !required,
            "{test}: ALERTRELAY_REQUIRE_HAPROXY is set, but haproxy is not installed"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: haproxy is not installed (.ci/run installs it)"
        );
        return None;
    };
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let check = std::process::Command::new(bin)
        .args(["-c", "-f", arg(&path)])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy -c: {}{}\n{config}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    Some(
        tokio::process::Command::new(bin)
            .args(["-db", "-f", arg(&path)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap(),
    )
}

/// `import` through HAProxy, configured as docs/postgresql.md says, while
/// the replica it streams to is killed: the rows that replica never
/// answered are sent again (the balancer hands the new stream to the other
/// replica), none is labelled refused or unknown, and every row is stored
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_resends_what_a_dead_replica_never_answered() {
    let Some(pg) = TestDb::create("import_resends_what_a_dead_replica").await else {
        return;
    };
    const ROWS: i64 = 3000;
    let mut fed = Federation::builder(AB)
        .processes()
        .database(0, &pg.url)
        .create()
        .await;
    let r2 = fed.add_replica(0, "fr-2");
    fed.set(0, "delivery.replica", "fr-1");
    fed.start_together(&[(1, None), (0, None), (r2, None)])
        .await;
    // The balancer as docs/postgresql.md configures it.
    let front = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = documented_haproxy(front, &[fed.listen(0), fed.listen(r2)]);
    let test = "import_resends_what_a_dead_replica_never_answered";
    let Some(_balancer) = haproxy(test, fed.dir.path(), &config).await else {
        return;
    };
    eventually(
        10,
        || async { tokio::net::TcpStream::connect(front).await.is_ok() },
        |up| *up,
    )
    .await;
    // The operator's configuration names the balancer.
    let cli_cfg = fed.config_path(0).with_file_name("operator.toml");
    std::fs::copy(fed.config_path(0), &cli_cfg).unwrap();
    set_toml(&cli_cfg, "listen", front.to_string());
    let mut text = String::from("url,category,hosting_ip,hashes,priority,notes\n");
    for i in 0..ROWS {
        text.push_str(&format!("http://{DE_IP}/replica-import/{i},csam,,,,\n"));
    }
    let csv = fed.dir.path().join("replicas.csv");
    std::fs::write(&csv, text).unwrap();
    let import = {
        let (cfg, csv) = (cli_cfg.clone(), csv.clone());
        tokio::spawn(async move {
            cli(&[
                "import",
                "--config",
                arg(&cfg),
                "--csv",
                arg(&csv),
                "--json",
            ])
            .await
        })
    };
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let stored = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM reports")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    eventually(60, stored, |n| *n >= 100).await;
    // The replica the balancer gave the import to dies.
    let submitted = |page: String| {
        page.lines()
            .find_map(|l| l.strip_prefix("alertrelay_reports_submitted_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (first, second) = (
        submitted(fed.metrics(0).await),
        submitted(fed.metrics(r2).await),
    );
    assert!(first + second > 0.0);
    let streaming = if first >= second { 0 } else { r2 };
    fed.kill(streaming).await;
    let at_kill = stored().await;
    assert!(
        at_kill < ROWS,
        "the replica died mid-import ({at_kill} stored)"
    );
    let (code, out, err) = import.await.unwrap();
    assert_eq!(code, 0, "{err}");
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["refused"], 0, "{err}");
    assert_eq!(result["unknown"], 0, "{err}");
    assert_eq!(
        result["accepted"].as_i64().unwrap() + result["already_imported"].as_i64().unwrap(),
        ROWS
    );
    assert_eq!(stored().await, ROWS, "every row stored once");
    pool.close().await;
    fed.shutdown().await;
}
