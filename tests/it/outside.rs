//! What outside clients and an operator found (issue #22), class by class:
//! refusals that echoed the refused value, unknown enum values taken as
//! defaults, malformed media hashes, the metrics endpoint's HTTP, deadlines,
//! the bulk stream's oversize refusal, exit codes, connection errors, the
//! node's one view of its peers, and retention on a live node.

use std::time::Duration;

use alertrelay::pb;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::common::*;

const AB: &[(&str, &[&str])] = &[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])];

/// A refused field is named with its reason; its value is never copied
/// into the answer, the log or the audit entry, however long; and two
/// requests that differ only in that field leave different digests.
#[tokio::test]
async fn a_refusal_never_echoes_the_refused_value() {
    let fed = Federation::builder(AB).start().await;
    let mut fr = fed.operator(0);
    let url = "https://secret-host.example/gallery/123";
    let request = |hosting_ip: String| pb::SubmitReportRequest {
        urls: vec![format!("http://{DE_IP}/x")],
        category: "csam".into(),
        hosting_ip,
        ..Default::default()
    };
    let err = fr.submit_report(request(url.into())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("hosting_ip"), "{}", err.message());
    assert!(!err.message().contains("secret-host"), "{}", err.message());
    // A megabyte: the answer stays small (a C-core client sees the real
    // status, not "Stream removed").
    let huge = "9".repeat(1 << 20);
    let err = fr.submit_report(request(huge)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().len() < 300, "{} bytes", err.message().len());
    // Another value in the same field: another digest.
    let _ = fr
        .submit_report(request("https://other.example/".into()))
        .await
        .unwrap_err();
    let refused: Vec<_> = fed
        .audit_export(0)
        .await
        .into_iter()
        .filter(|e| e.kind == "input.refused")
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    for e in &refused {
        let detail = e.detail.to_string();
        assert!(!detail.contains("secret-host"), "{detail}");
        assert!(detail.len() < 1000, "{} bytes", detail.len());
    }
    let digests: std::collections::BTreeSet<_> = refused
        .iter()
        .map(|e| e.detail["sha256"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(digests.len(), 3, "every field is in the digest");
    fed.shutdown().await;
}

/// An out-of-range priority is refused, not stored as bulk (from a peer:
/// `security.rs`); a malformed media hash is refused at intake and from a
/// peer.
#[tokio::test]
async fn unknown_enum_values_and_malformed_hashes_are_invalid_argument() {
    let fed = Federation::builder(AB).start().await;
    let mut fr = fed.operator(0);
    let err = fr
        .submit_report(pb::SubmitReportRequest {
            urls: vec![format!("http://{DE_IP}/x")],
            category: "csam".into(),
            priority: 7,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("priority"), "{}", err.message());
    let err = fr
        .submit_report(pb::SubmitReportRequest {
            urls: vec![format!("http://{DE_IP}/x")],
            category: "csam".into(),
            hashes: vec![pb::MediaHash {
                algorithm: "sha256".into(),
                value: "abc".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("hashes[0]"), "{}", err.message());
    // From a peer: FR-PDC signs a report with the same hash for DE-ECO.
    let payload = pb::ReportPayload {
        report_id: "bad-hash-1".into(),
        origin: "FR-PDC".into(),
        created_at_ms: alertrelay::node::Core::now_ms(),
        urls: vec![format!("http://{DE_IP}/x")],
        category: "csam".into(),
        hashes: vec![pb::MediaHash {
            algorithm: "sha256".into(),
            value: "abc".into(),
        }],
        route: Some(pb::RouteDecision {
            kind: "peer".into(),
            destinations: vec!["DE-ECO".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let signed = alertrelay::wire::sign(
        &fed.signing_key(0),
        &fed.id(0),
        alertrelay::crypto::signing::Purpose::Report,
        &payload,
    );
    let err = fed
        .federation_as(0, 1)
        .forward(pb::ForwardRequest {
            envelopes: vec![pb::Envelope {
                report: Some(signed),
                hops: vec![],
            }],
            urgent: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(fed.cases(1, "incoming").await.unwrap().is_empty());
    fed.shutdown().await;
}

/// Sends raw bytes to the metrics listener and returns the answer.
async fn http(addr: std::net::SocketAddr, parts: &[&[u8]]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for part in parts {
        s.write_all(part).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("the server answers and closes")
        .unwrap();
    out
}

/// The metrics endpoint is a real HTTP server: HEAD, a query string, and a
/// request that arrives in several TCP segments all work.
#[tokio::test]
async fn the_metrics_endpoint_speaks_http() {
    let fed = Federation::builder(AB).start().await;
    let addr = fed.handle(0).metrics_addr.unwrap();
    let get = http(
        addr,
        &[b"GET /metrics?name[]=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
    )
    .await;
    assert!(get.starts_with("HTTP/1.1 200"), "{get}");
    assert!(get.contains("alertrelay_ready"), "{get}");
    let head = http(
        addr,
        &[b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.contains("alertrelay_ready"), "no body: {head}");
    let split = http(
        addr,
        &[
            b"GET /met",
            b"rics HTTP/1.1\r\nHo",
            b"st: x\r\nConnection: close\r\n",
            b"\r\n",
        ],
    )
    .await;
    assert!(split.starts_with("HTTP/1.1 200"), "{split}");
    let missing = http(
        addr,
        &[b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
    )
    .await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    fed.shutdown().await;
}

/// A call whose deadline runs out at the server is DEADLINE_EXCEEDED, as
/// gRPC says (tonic's own answer would be CANCELLED). The handler here
/// waits for the database's writer, which the test holds. The client is
/// raw HTTP/2: it sends the deadline as the header says it but does not
/// enforce it itself (tonic's own client would give up first, racing the
/// server's answer, and say CANCELLED), so what the server answers is
/// what is seen.
#[tokio::test]
async fn a_deadline_that_runs_out_at_the_server_is_deadline_exceeded() {
    let fed = Federation::builder(AB).start().await;
    let operator =
        alertrelay::crypto::tls::client_config(&fed.configs[0].operator.as_ref().unwrap().files())
            .unwrap();
    let mut h2 = raw::connect(&fed, 0, operator).await.unwrap();
    let held = fed.core(0).store.begin().await.unwrap();
    let request = pb::SubmitReportRequest {
        urls: vec![format!("http://{DE_IP}/deadline")],
        category: "csam".into(),
        priority: pb::Priority::Urgent as i32,
        ..Default::default()
    };
    let req = raw::request(
        "/alertrelay.v1.Operator/SubmitReport",
        &[("grpc-timeout", "300m")],
    );
    let code = raw::call(&mut h2, req, &request.encode_to_vec()).await;
    assert_eq!(code, (Code::DeadlineExceeded as i32).to_string());
    held.rollback().await.unwrap();
    fed.shutdown().await;
}

/// A batch over the size limit on the bulk stream is refused as the unary
/// call would be: RESOURCE_EXHAUSTED, audited, counted.
#[tokio::test]
async fn an_oversize_batch_on_the_stream_is_resource_exhausted_and_audited() {
    let fed = Federation::builder(AB).start().await;
    let before = fed.metrics(1).await;
    let big = pb::ForwardRequest {
        envelopes: vec![pb::Envelope {
            report: Some(pb::Signed {
                payload: vec![7; alertrelay::api::server::MAX_MESSAGE + 10],
                ..Default::default()
            }),
            hops: vec![],
        }],
        urgent: false,
    };
    let mut client = fed
        .federation_as(0, 1)
        .max_encoding_message_size(64 * 1024 * 1024);
    let (batches, rx) = tokio::sync::mpsc::channel(1);
    batches.send(big).await.unwrap();
    let result = client
        .forward_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let status = match result {
        Err(status) => status,
        Ok(answers) => answers
            .into_inner()
            .message()
            .await
            .expect_err("the oversize batch is refused"),
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let after = fed.metrics(1).await;
    let too_large = |page: &str| {
        page.lines()
            .find_map(|l| l.strip_prefix("alertrelay_refusals_total{reason=\"too-large\"}"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(too_large(&after) - too_large(&before), 1.0, "{after}");
    let audited = fed
        .audit_export(1)
        .await
        .into_iter()
        .filter(|e| e.kind == "input.refused" && e.detail["reason_code"] == "too-large")
        .count();
    assert_eq!(audited, 1);
    fed.shutdown().await;
}

/// Exit codes mean one thing: a usage error is 64 (never clap's 2), an
/// unreachable node 69 with the address and why, a verification that
/// fails 2.
#[tokio::test]
async fn exit_codes_mean_one_thing_for_every_command_family() {
    let fed = Federation::builder(AB).start().await;
    let config = fed.config_path(0);
    let config = arg(&config);
    for args in [
        vec!["audit", "verify", "--confg", config],
        vec!["cases", "list", "--nope"],
        vec!["submit", "--config", config],
        vec!["bench", "--scenario", "nope"],
        vec!["federation", "init"],
        vec!["db", "backup"],
        vec!["retention", "run"],
        vec!["geo", "lookup"],
        vec![
            "submit",
            "--config",
            config,
            "--url",
            "http://x/",
            "--category",
            "csam",
            "--priority",
            "high",
        ],
    ] {
        let (code, _, err) = cli(&args).await;
        assert_eq!(code, 64, "{args:?}: {err}");
    }
    let (code, _, _) = cli(&["--help"]).await;
    assert_eq!(code, 0);
    // A proof file that is not one: a verification that failed.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{}").unwrap();
    let directory = fed.configs[0].directory_path.clone();
    for family in [["audit", "verify-proof"], ["cases", "verify-export"]] {
        let (code, _, err) = cli(&[
            family[0],
            family[1],
            arg(&junk),
            "--directory",
            arg(&directory),
        ])
        .await;
        assert_eq!(code, 2, "{family:?}: {err}");
    }
    fed.shutdown().await;
}

/// A node that cannot be reached: exit 69, within the connect timeout,
/// naming the address and why.
#[tokio::test]
async fn the_cli_says_where_and_why_it_cannot_connect() {
    let mut fed = Federation::builder(AB).start().await;
    fed.stop(0).await;
    let config = fed.config_path(0);
    let started = std::time::Instant::now();
    let (code, _, err) = cli(&["status", "--config", arg(&config)]).await;
    assert_eq!(code, 69, "{err}");
    assert!(err.contains(&fed.listen(0).to_string()), "{err}");
    assert!(err.contains("connection refused"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing listening that answers: a timeout of its own, said so.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    set_toml(&config, "listen", addr.to_string());
    let started = std::time::Instant::now();
    let (code, _, err) = cli(&["status", "--config", arg(&config), "--connect-timeout", "1"]).await;
    assert_eq!(code, 69, "{err}");
    assert!(err.contains(&addr.to_string()), "{err}");
    assert!(err.contains("no answer within 1 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4));
    drop(silent);
    fed.shutdown().await;
}

/// The same truth everywhere: a node that serves, whose peer answers its
/// health probe and witnesses it, shows that peer reachable in `peers` and
/// `status`.
#[tokio::test]
async fn peers_and_status_agree_with_health_and_witnessing() {
    let fed = Federation::builder(AB)
        .audit_every_ms(100, 100)
        .start()
        .await;
    let mut admin = fed.admin(0);
    let peers = eventually(
        20,
        || {
            let mut admin = admin.clone();
            async move {
                admin
                    .list_peers(pb::ListPeersRequest {})
                    .await
                    .unwrap()
                    .into_inner()
                    .peers
            }
        },
        |peers| {
            peers
                .iter()
                .all(|p| p.reachable == "yes" && p.last_seen_ms > 0)
        },
    )
    .await;
    assert_eq!(peers.len(), 1);
    let status = admin
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.peers_reachable, 1, "{status:?}");
    fed.shutdown().await;
}

// ---- retention on a live node (item 11) ----

/// FR-PDC purges what it delivered as soon as it is delivered (on its own
/// schedule once an hour, and at start).
fn purge_delivered(dir: &std::path::Path) {
    let fr = dir.join("FR-PDC/node.toml");
    let text = std::fs::read_to_string(&fr).unwrap();
    std::fs::write(
        &fr,
        format!("{text}\n[retention]\ndelivered_reports_days = 0\n"),
    )
    .unwrap();
}

/// `alertrelay audit export` of node `i` as JSON values (with actors).
async fn audit_lines(fed: &Federation, i: usize) -> Vec<serde_json::Value> {
    let (code, out, err) = cli(&["audit", "export", "--config", arg(&fed.config_path(i))]).await;
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Submits `n` bulk reports whose URLs hold `marker` and waits until every
/// one is delivered (and so has expired under `purge_delivered`).
async fn delivered_reports(fed: &Federation, marker: &str, n: usize) {
    let mut fr = fed.operator(0);
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            submit(&mut fr, &format!("http://{DE_IP}/{marker}/{i}"), "")
                .await
                .report_id,
        );
    }
    for id in &ids {
        wait_case(&fr, id, 30, |c| c.status == "delivered").await;
    }
}

/// With another reader holding the database open, `retention run` cannot
/// truncate the WAL that still holds old pages of the purged reports: it
/// waits for the reader, then says so and exits 1 instead of claiming
/// success. Once the reader is gone, running it again cleans the files;
/// and a reader that lets go while the run waits lets it finish.
#[tokio::test]
async fn retention_kept_from_the_files_by_a_reader_fails_loudly_and_a_rerun_cleans_them() {
    let fed = Federation::builder(AB)
        .prepare(purge_delivered)
        .start()
        .await;
    let marker = "zq-reader-kept-4471";
    delivered_reports(&fed, marker, 10).await;
    let db = fed.database(0);
    assert!(files_hold(&db, marker));

    // Another process's reader: a read transaction left open.
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .read_only(true);
    let mut reader = sqlx::ConnectOptions::connect(&options).await.unwrap();
    let mut snapshot = sqlx::Connection::begin(&mut reader).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM reports")
        .fetch_one(&mut *snapshot)
        .await
        .unwrap();
    assert!(seen >= 10);

    let cfg = fed.config_path(0);
    let (code, out, err) = cli(&["retention", "run", "--config", arg(&cfg), "--json"]).await;
    assert_eq!(code, 1, "{out}{err}");
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(run["delivered"], 10, "{run}");
    assert_eq!(run["files_clean"], false, "{run}");
    assert!(err.contains("WAL"), "{err}");
    assert!(
        err.contains("run `alertrelay retention run` again"),
        "{err}"
    );

    drop(snapshot);
    sqlx::Connection::close(reader).await.unwrap();
    let (code, out, err) = cli(&["retention", "run", "--config", arg(&cfg), "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let again: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["files_clean"], true, "{again}");
    assert!(
        !files_hold(&db, marker),
        "a purged URL is still in the database's files"
    );

    // A reader that lets go while the run waits for it: the run finishes
    // the job and succeeds.
    let marker = "zq-reader-lets-go-9182";
    delivered_reports(&fed, marker, 5).await;
    let mut reader = sqlx::ConnectOptions::connect(&options).await.unwrap();
    let mut snapshot = sqlx::Connection::begin(&mut reader).await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM reports")
        .fetch_one(&mut *snapshot)
        .await
        .unwrap();
    let run = {
        let cfg = cfg.clone();
        tokio::spawn(
            async move { cli(&["retention", "run", "--config", arg(&cfg), "--json"]).await },
        )
    };
    // Once the purge is committed, the run is waiting for this reader.
    let watcher = sqlx::SqlitePool::connect_with(options.clone())
        .await
        .unwrap();
    eventually(
        20,
        || {
            let watcher = watcher.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM reports WHERE purged_at_ms IS NOT NULL",
                )
                .fetch_one(&watcher)
                .await
                .unwrap()
            }
        },
        |purged| *purged >= 15,
    )
    .await;
    watcher.close().await;
    drop(snapshot);
    sqlx::Connection::close(reader).await.unwrap();
    let (code, out, err) = run.await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let waited: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(waited["delivered"], 5, "{waited}");
    assert_eq!(waited["files_clean"], true, "{waited}");
    assert!(!files_hold(&db, marker));
    fed.shutdown().await;
}

/// `retention run` against a node that is busy importing goes through the
/// node (its admin call, its writer), so it never fails "database is
/// locked", and the import loses nothing to it.
#[tokio::test]
async fn retention_run_against_a_busy_node_goes_through_it_and_the_load_loses_nothing() {
    let fed = Federation::builder(AB)
        .prepare(purge_delivered)
        .start()
        .await;
    delivered_reports(&fed, "zq-before-load", 20).await;
    let mut text = String::from("url,category,hosting_ip,hashes,priority,notes\n");
    for i in 0..300 {
        text.push_str(&format!("http://{DE_IP}/busy-import/{i},csam,,,,\n"));
    }
    let csv = fed.dir.path().join("load.csv");
    std::fs::write(&csv, text).unwrap();
    let cfg = fed.config_path(0);
    let import = {
        let (cfg, csv) = (cfg.clone(), csv.clone());
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
    let mut purged = 0;
    for _ in 0..6 {
        let (code, out, err) = cli(&["retention", "run", "--config", arg(&cfg), "--json"]).await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(!err.contains("locked"), "{err}");
        let run: serde_json::Value = serde_json::from_str(&out).unwrap();
        purged += run["delivered"].as_u64().unwrap();
    }
    assert!(
        purged >= 20,
        "the reports delivered before were purged: {purged}"
    );
    let (code, out, err) = import.await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let imported: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(imported["accepted"], 300, "{}", imported);
    assert_eq!(imported["refused"], 0);
    assert_eq!(imported["unknown"], 0);
    // The node's writer did the purges, under the admin who asked.
    let runs: Vec<_> = audit_lines(&fed, 0)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "retention.purged")
        .collect();
    assert!(!runs.is_empty());
    for e in &runs {
        assert_ne!(e["actor"], "cli:retention", "{e}");
    }
    fed.shutdown().await;
}

/// The node's scheduled purge of many reports goes in short transactions,
/// each its own audit entry of at most `PURGE_CHUNK` reports, and urgent
/// reports submitted while it runs are taken and delivered.
#[tokio::test]
async fn a_large_scheduled_purge_goes_in_short_transactions_and_urgent_reports_go_through() {
    use alertrelay::node::retention::PURGE_CHUNK;
    let mut fed = Federation::builder(AB)
        .prepare(purge_delivered)
        .start()
        .await;
    let n = 6 * PURGE_CHUNK + 10;
    let mut text = String::from("url,category,hosting_ip,hashes,priority,notes\n");
    for i in 0..n {
        text.push_str(&format!("http://{DE_IP}/large-purge/{i},csam,,,,\n"));
    }
    let csv = fed.dir.path().join("many.csv");
    std::fs::write(&csv, text).unwrap();
    let cfg = fed.config_path(0);
    let (code, _, err) = cli(&["import", "--config", arg(&cfg), "--csv", arg(&csv)]).await;
    assert_eq!(code, 0, "{err}");
    // Every one delivered, so due (a dry run only counts).
    eventually(
        60,
        || async {
            let (_, out, _) = cli(&[
                "retention",
                "run",
                "--config",
                arg(&cfg),
                "--dry-run",
                "--json",
            ])
            .await;
            serde_json::from_str::<serde_json::Value>(&out).unwrap()["delivered"].as_u64()
        },
        |d| *d == Some(n as u64),
    )
    .await;
    // The schedule runs at every start: the whole backlog at once.
    fed.stop(0).await;
    fed.restart(0).await;
    let mut fr = fed.operator(0);
    let mut urgent = Vec::new();
    for i in 0..5 {
        urgent
            .push(submit_urgent(&mut fr, &format!("http://{DE_IP}/urgent-during-purge/{i}")).await);
    }
    let runs = eventually(
        60,
        || async {
            audit_lines(&fed, 0)
                .await
                .into_iter()
                .filter(|e| e["kind"] == "retention.purged" && e["actor"] == "system:retention")
                .collect::<Vec<_>>()
        },
        |runs| {
            runs.iter()
                .map(|e| e["detail"]["reports"].as_array().unwrap().len())
                .sum::<usize>()
                >= n
        },
    )
    .await;
    let sizes: Vec<usize> = runs
        .iter()
        .map(|e| e["detail"]["reports"].as_array().unwrap().len())
        .filter(|s| *s > 0)
        .collect();
    assert!(sizes.len() >= n.div_ceil(PURGE_CHUNK), "{sizes:?}");
    assert!(sizes.iter().all(|s| *s <= PURGE_CHUNK), "{sizes:?}");
    for id in &urgent {
        wait_case(&fr, id, 30, |c| c.status == "delivered").await;
    }
    fed.shutdown().await;
}

/// A run asked for through the node answers within its time budget,
/// whatever the backlog, saying there is more (so no call outlives its
/// deadline); `retention run` asks until nothing due is left.
#[tokio::test]
async fn a_retention_call_stops_at_its_budget_and_the_cli_asks_again_until_done() {
    use alertrelay::node::retention::{self, Ask, PURGE_CHUNK, Writer};
    let fed = Federation::builder(AB)
        .prepare(purge_delivered)
        .start()
        .await;
    let n = 3 * PURGE_CHUNK + 5;
    let mut text = String::from("url,category,hosting_ip,hashes,priority,notes\n");
    for i in 0..n {
        text.push_str(&format!("http://{DE_IP}/budget/{i},csam,,,,\n"));
    }
    let csv = fed.dir.path().join("budget.csv");
    std::fs::write(&csv, text).unwrap();
    let cfg = fed.config_path(0);
    let (code, _, err) = cli(&["import", "--config", arg(&cfg), "--csv", arg(&csv)]).await;
    assert_eq!(code, 0, "{err}");
    eventually(
        60,
        || async {
            let (_, out, _) = cli(&[
                "retention",
                "run",
                "--config",
                arg(&cfg),
                "--dry-run",
                "--json",
            ])
            .await;
            serde_json::from_str::<serde_json::Value>(&out).unwrap()["delivered"].as_u64()
        },
        |d| *d == Some(n as u64),
    )
    .await;
    // A call whose budget is spent at once does one chunk and says so.
    let core = fed.core(0);
    let ask = Ask {
        actor: "test",
        subject: core.me.as_str(),
        dry_run: false,
        audit_if_empty: true,
        now_ms: alertrelay::node::Core::now_ms(),
        budget: Some(Duration::ZERO),
    };
    let first = retention::run_within(Writer::Node(core), &core.config.retention, &ask)
        .await
        .unwrap();
    assert!(first.more, "{first:?}");
    assert!(first.delivered >= 1 && first.delivered as usize <= PURGE_CHUNK);
    // The CLI takes the rest (asking again while the node says more).
    let (code, out, err) = cli(&["retention", "run", "--config", arg(&cfg), "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let rest: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        rest["delivered"].as_u64().unwrap() + first.delivered,
        n as u64,
        "{rest}"
    );
    assert_eq!(rest["files_clean"], true);
    fed.shutdown().await;
}
