//! Running a node for real: health that follows readiness, the metrics a
//! dashboard relies on, `doctor`, the annotated configuration, bulk
//! import, standard formats (X-ARF, STIX) and online backups. Real nodes,
//! real mutual TLS, real SQLite files; the CLI is the built binary.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use alertrelay::config::{
    RawAudit, RawDelivery, RawDns, RawFallbackFor, RawGeo, RawGeoSource, RawHealth, RawLimits,
    RawMetrics, RawNodeConfig, RawNotice, RawSigning, RawTls,
};
use alertrelay::pb;
use tokio::process::Command;
use tonic_health::pb::health_check_response::ServingStatus;

const AB: &[(&str, &[&str])] = &[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])];

/// Rewrites every node.toml of a provisioned federation.
fn edit_configs(dir: &Path, f: impl Fn(&str) -> String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path().join("node.toml");
        if p.exists() {
            let text = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, f(&text)).unwrap();
        }
    }
}

fn fast_health(text: &str) -> String {
    assert!(text.contains("probe_interval_ms = 5000"), "{text}");
    text.replace("probe_interval_ms = 5000", "probe_interval_ms = 100")
}

/// The overall status and the Operator service's.
async fn health(fed: &Federation, i: usize) -> (ServingStatus, ServingStatus) {
    let cfg = &fed.configs[i];
    let tls =
        alertrelay::crypto::tls::client_config(&cfg.operator.as_ref().unwrap().files()).unwrap();
    let ch = alertrelay::federation::channel::channel(
        &fed.endpoint(i),
        Some(cfg.node_id.clone()),
        "test-federation",
        tls,
        Duration::from_secs(5),
    )
    .unwrap();
    let mut client = tonic_health::pb::health_client::HealthClient::new(ch);
    let overall = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    let operator = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: "alertrelay.v1.Operator".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    (overall, operator)
}

const SERVING: (ServingStatus, ServingStatus) = (ServingStatus::Serving, ServingStatus::Serving);
const NOT_SERVING: (ServingStatus, ServingStatus) =
    (ServingStatus::NotServing, ServingStatus::NotServing);

#[tokio::test]
async fn health_is_serving_only_while_a_peer_is_reachable() {
    let mut fed = Federation::builder(AB)
        .quiet_audit()
        .prepare(|dir| edit_configs(dir, fast_health))
        .start()
        .await;
    eventually(10, || health(&fed, 0), |s| *s == SERVING).await;
    assert!(fed.metrics(0).await.contains("alertrelay_ready 1"));

    // Its only peer goes down: the node cannot forward anything.
    fed.stop(1).await;
    eventually(10, || health(&fed, 0), |s| *s == NOT_SERVING).await;
    assert!(fed.metrics(0).await.contains("alertrelay_ready 0"));

    // ... and comes back.
    fed.restart(1).await;
    eventually(10, || health(&fed, 0), |s| *s == SERVING).await;
    fed.shutdown().await;
}

#[tokio::test]
async fn health_of_a_node_without_peers_is_serving() {
    let fed = Federation::builder(&[("FR-PDC", &["FR"])])
        .quiet_audit()
        .prepare(|dir| edit_configs(dir, fast_health))
        .start()
        .await;
    eventually(10, || health(&fed, 0), |s| *s == SERVING).await;
    fed.shutdown().await;
}

/// The metric names a PromQL expression uses (`alertrelay_*`, `process_*`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            cur.push(c);
        } else {
            if (cur.starts_with("alertrelay_") || cur.starts_with("process_"))
                && !out.contains(&cur)
            {
                out.push(cur.clone());
            }
            cur.clear();
        }
    }
    out
}

fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if (k == "expr" || k == "query")
                    && let Some(s) = v.as_str()
                {
                    out.push(s.to_owned());
                }
                dashboard_queries(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported_and_names_follow_conventions() {
    let mut fed = Federation::start(AB).await;
    let mut fr = fed.operator(0);
    // Deliveries and their latency.
    let delivered = submit(&mut fr, &format!("http://{DE_IP}/a"), "").await;
    wait_case(&fr, &delivered.report_id, 10, |c| c.status == "delivered").await;
    // A refusal.
    let refused = fr
        .submit_report(pb::SubmitReportRequest {
            urls: vec!["gopher://x".into()],
            category: "csam".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::InvalidArgument);
    // A delivery failure.
    fed.stop(1).await;
    let queued = submit(&mut fr, &format!("http://{DE_IP}/b"), "").await;
    wait_case(&fr, &queued.report_id, 10, |c| {
        c.deliveries[0].attempts >= 1
    })
    .await;
    fed.restart(1).await;
    wait_case(&fr, &queued.report_id, 10, |c| c.status == "delivered").await;
    // Witnessing (100 ms in these federations).
    let page = eventually(
        10,
        || fed.metrics(0),
        |p| p.contains("alertrelay_witness_events_total{"),
    )
    .await;
    let page = eventually(
        10,
        || fed.metrics(0),
        |p| p.contains("alertrelay_ready 1") && p.contains("alertrelay_delivery_failures_total{"),
    )
    .await
    .to_string()
        + &page;

    let text = std::fs::read_to_string("contrib/grafana/alertrelay.json").unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 15, "{queries:?}");
    let mut used = BTreeSet::new();
    for q in &queries {
        used.extend(metric_names(q));
    }
    assert!(used.len() >= 15, "{used:?}");
    let samples: Vec<&str> = page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    for name in &used {
        assert!(
            samples
                .iter()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "the dashboard queries {name}, which the node does not export:\n{page}"
        );
    }

    // Conventions: counters end in _total, units are base units in the name.
    let mut types = Vec::new();
    for l in page.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut f = l.split_whitespace().skip(2);
        types.push((f.next().unwrap().to_owned(), f.next().unwrap().to_owned()));
    }
    for (name, kind) in &types {
        assert!(
            name.starts_with("alertrelay_") || name.starts_with("process_"),
            "{name}"
        );
        if kind == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
        } else {
            assert!(
                !name.ends_with("_total"),
                "{kind} {name} must not end in _total"
            );
        }
        for bad in ["_ms", "_millis", "_kb", "_mb", "_minutes"] {
            assert!(
                !name.contains(bad),
                "{name}: use base units (seconds, bytes)"
            );
        }
    }
    // The process figures, with sane values.
    let value = |name: &str| -> f64 {
        samples
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name}"))
            .parse()
            .unwrap()
    };
    let rss = value("process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 8e9, "rss {rss}");
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_cpu_seconds_total") > 0.0);
    let start = value("process_start_time_seconds");
    let now = alertrelay::node::Core::now_ms() as f64 / 1000.0;
    assert!(
        start <= now && start > now - 600.0,
        "start {start}, now {now}"
    );
    fed.shutdown().await;
}

/// Every key `node.toml` accepts, with a value, so that serialising it
/// names them all. A new config field fails to compile here until it is
/// added (and so documented in docs/node.example.toml).
fn every_key() -> RawNodeConfig {
    let tls = RawTls {
        ca: Some("ca.pem".into()),
        cert: "c.pem".into(),
        key: "c.key".into(),
        crls: vec!["crl.pem".into()],
    };
    RawNodeConfig {
        node_id: "FR-PDC".into(),
        listen: "127.0.0.1:1".into(),
        database: "n.db".into(),
        directory: "d.toml".into(),
        fallback: Some("LE".into()),
        tls: tls.clone(),
        signing: RawSigning {
            key: "s.key".into(),
        },
        operator: Some(tls.clone()),
        admin: Some(tls),
        delivery: RawDelivery::default(),
        limits: RawLimits::default(),
        audit: RawAudit::default(),
        metrics: RawMetrics {
            listen: Some("127.0.0.1:2".into()),
        },
        health: RawHealth::default(),
        exchange: alertrelay::config::RawExchange {
            directory_interval_ms: 1000,
            protocol: 1,
        },
        jurisdiction: alertrelay::config::RawJurisdiction {
            alternative: Some("held".into()),
            rules: vec![alertrelay::config::RawJurisdictionRule {
                country: Some("DE".into()),
                peer: Some("DE-ECO".into()),
                classifications: vec!["baseline".into()],
                categories: vec!["csam".into()],
            }],
        },
        retention: alertrelay::config::RawRetention {
            closed_cases_days: Some(1),
            refused_reports_days: Some(1),
            delivered_reports_days: Some(1),
            alerts_days: Some(1),
            undelivered_notifications_days: Some(1),
            interval_secs: Some(1),
        },
        notice: Some(RawNotice {
            org: Some("o".into()),
            contact: "a@b.example".into(),
            domain: "b.example".into(),
        }),
        fallback_for: vec![RawFallbackFor {
            category: "ncii".into(),
            node: "X".into(),
        }],
        geo: RawGeo {
            sources: vec![
                RawGeoSource {
                    kind: "mmdb".into(),
                    path: Some("a".into()),
                    paths: vec![],
                    name: Some("n".into()),
                    date: Some("2026-01-01".into()),
                },
                RawGeoSource {
                    kind: "csv".into(),
                    path: None,
                    paths: vec!["b".into()],
                    name: None,
                    date: None,
                },
            ],
        },
        dns: RawDns {
            mode: "static".into(),
            hosts: [("h.example".to_owned(), vec!["192.0.2.1".to_owned()])].into(),
            resolvers: vec!["127.0.0.1".into()],
            tls_ca: Some("dns-ca.pem".into()),
            ..RawDns::default()
        },
        console: Some(alertrelay::config::RawConsole {
            listen: Some("127.0.0.1:8443".into()),
            cert: Some("console.pem".into()),
            key: Some("console.key".into()),
            idle_timeout_mins: Some(30),
            absolute_timeout_hours: Some(12),
        }),
        cases: alertrelay::config::RawCases {
            not_illegal_needs_supervisor: true,
        },
        alerts: every_alerts_key(),
    }
}

fn every_alerts_key() -> alertrelay::config::alerts::RawAlerts {
    use alertrelay::config::alerts::{RawAlerts, RawRoute, RawSmtp, RawWebhook};
    RawAlerts {
        console_url: Some("https://c.example".into()),
        scan_interval_secs: Some(60),
        unassessed_hours: Some(24.0),
        unassessed_hours_by_category: [("csam".to_owned(), 4.0)].into(),
        takedown_days: Some(3.0),
        takedown_days_by_category: [("csam".to_owned(), 2.0)].into(),
        peer_unreachable_mins: Some(60.0),
        expiry_days: Some(14.0),
        disk_min_free_percent: Some(10.0),
        retry_initial_ms: Some(5000),
        retry_max_secs: Some(3600),
        webhook: [(
            "ops".to_owned(),
            RawWebhook {
                url: "https://h.example/".into(),
                secret_file: "s".into(),
                ca: Some("ca.pem".into()),
            },
        )]
        .into(),
        smtp: Some(RawSmtp {
            server: "smtp.example".into(),
            port: 587,
            from: "a@b.example".into(),
            username: Some("u".into()),
            password_file: Some("p".into()),
            ca: Some("ca.pem".into()),
        }),
        route: vec![RawRoute {
            events: vec!["urgent_report".into()],
            min_severity: Some("warning".into()),
            webhook: Some("ops".into()),
            email: vec!["a@b.example".into()],
            include_urls: true,
        }],
    }
}

/// Dotted key paths of a TOML document (tables and arrays of tables
/// descended; `dns.hosts` is a map of names, a leaf).
fn key_paths(v: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(path.clone());
                if path != "dns.hosts" {
                    key_paths(v, &path, out);
                }
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| key_paths(v, prefix, out)),
        _ => {}
    }
}

#[test]
fn the_annotated_example_config_parses_and_names_every_key() {
    let text = std::fs::read_to_string("docs/node.example.toml").unwrap();
    let parsed: RawNodeConfig = toml::from_str(&text).expect("the example must parse");
    assert_eq!(parsed.node_id, "FR-PDC");
    let mut documented = BTreeSet::new();
    key_paths(&toml::from_str(&text).unwrap(), "", &mut documented);
    let mut accepted = BTreeSet::new();
    key_paths(
        &toml::Value::try_from(every_key()).unwrap(),
        "",
        &mut accepted,
    );
    let missing: Vec<_> = accepted.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "docs/node.example.toml lacks {missing:?}"
    );
    // A key the config does not accept makes it fail: nothing in the
    // example is decoration.
    assert!(
        documented.is_subset(&accepted),
        "{documented:?} vs {accepted:?}"
    );
    // Every key is explained by a comment on or above its line.
    for key in accepted.iter().filter(|k| !k.contains('.')) {
        let line = text
            .lines()
            .position(|l| {
                l.starts_with(&format!("{key} ="))
                    || l.starts_with(&format!("[{key}]"))
                    || l.starts_with(&format!("[[{key}]]"))
                    || l.starts_with(&format!("[[{key}."))
            })
            .unwrap_or_else(|| panic!("{key} not at the start of a line"));
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[line].contains('#') || lines[line - 1].starts_with('#'),
            "{key} has no comment"
        );
    }
}

#[tokio::test]
async fn config_errors_name_the_file_the_key_and_what_was_expected() {
    let fed = Federation::builder(&[("FR-PDC", &["FR"])])
        .quiet_audit()
        .prepare(|_| {})
        .start()
        .await;
    let path = fed.config_path(0);
    let original = std::fs::read_to_string(&path).unwrap();
    let cases: &[(&str, String, &[&str])] = &[
        (
            "wrong type",
            original.replace("batch_size = 64", "batch_size = \"many\""),
            &["delivery.batch_size", "expected"],
        ),
        (
            "unknown key",
            original.replace("batch_size = 64", "batch_size = 64\nbatchsize = 3"),
            &["batchsize", "unknown field"],
        ),
        (
            "missing key",
            original
                .lines()
                .filter(|l| !l.starts_with("database ="))
                .collect::<Vec<_>>()
                .join("\n"),
            &["database", "missing"],
        ),
        (
            "bad value",
            original.replace("batch_size = 64", "batch_size = 0"),
            &["delivery.batch_size", "1..=256"],
        ),
        (
            "bad address",
            original.replace("listen = \"127.0.0.1:", "listen = \"localhost-"),
            &["listen", "host:port"],
        ),
        (
            "bad notice",
            format!("{original}\n[notice]\ncontact = \"nobody\"\ndomain = \"x.example\"\n"),
            &["notice.contact", "e-mail"],
        ),
        ("not TOML", format!("{original}\n[[[\n"), &["line"]),
    ];
    for (what, text, needles) in cases {
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = cli(&["status", "--config", arg(&path)]).await;
        assert_eq!(code, 64, "{what}: {out}{err}");
        assert!(err.contains(arg(&path)), "{what}: names the file: {err}");
        for n in *needles {
            assert!(err.contains(n), "{what}: {n:?} in {err}");
        }
    }
    std::fs::write(&path, &original).unwrap();
    fed.shutdown().await;
}

fn doctor_failures(json: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_owned(),
                c["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn doctor_passes_a_good_config_and_names_what_is_wrong_in_broken_ones() {
    let fed = Federation::start(AB).await;
    let cfg = fed.config_path(0);
    let dir = cfg.parent().unwrap().to_path_buf();

    let (code, out, err) = cli(&["doctor", "--config", arg(&cfg), "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    let checks: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    for c in [
        "permissions tls.key",
        "permissions signing.key",
        "chain tls.cert",
        "expiry tls.cert",
        "chain operator.cert",
        "signing key",
        "peer DE-ECO",
        "clock vs DE-ECO",
    ] {
        assert!(checks.contains(&c), "{c} in {checks:?}");
    }
    let (code, human, _) = cli(&["doctor", "--config", arg(&cfg)]).await;
    assert_eq!(code, 0);
    assert!(
        human.contains("ok    peer DE-ECO") || human.contains("ok    peer DE-ECO "),
        "{human}"
    );
    assert!(
        human.lines().last().unwrap().starts_with("doctor: ok"),
        "{human}"
    );

    // A private key readable by others.
    let key = dir.join("node.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, _) = cli(&["doctor", "--config", arg(&cfg), "--json"]).await;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(code, 1, "{out}");
    let fails = doctor_failures(&out);
    assert!(
        fails
            .iter()
            .any(|(c, d)| c == "permissions tls.key" && d.contains("644") && d.contains("0600")),
        "{fails:?}"
    );

    // A signing key that is not this node's.
    let signing = dir.join("signing.key");
    let saved = std::fs::read(&signing).unwrap();
    std::fs::remove_file(&signing).unwrap();
    alertrelay::crypto::signing::NodeKey::generate()
        .save(&signing)
        .unwrap();
    let (code, out, _) = cli(&["doctor", "--config", arg(&cfg), "--json"]).await;
    std::fs::remove_file(&signing).unwrap();
    std::fs::write(&signing, &saved).unwrap();
    std::fs::set_permissions(&signing, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(code, 1, "{out}");
    let fails = doctor_failures(&out);
    assert!(
        fails
            .iter()
            .any(|(c, d)| c == "signing key" && d.contains("is not one of FR-PDC's keys")),
        "{fails:?}"
    );

    // An expired node certificate (from the federation CA) and one that
    // expires within 30 days.
    let ca = alertrelay::crypto::pki::FederationCa::load(
        "test-federation",
        &std::fs::read_to_string(fed.dir.path().join("ca.pem")).unwrap(),
        &std::fs::read_to_string(fed.dir.path().join("ca.key")).unwrap(),
    )
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let uri = alertrelay::identity::node_uri("test-federation", &fed.id(0));
    let leaf = |not_after: time::OffsetDateTime| {
        ca.custom_leaf(
            "hotline FR-PDC",
            vec![
                rcgen::SanType::URI(uri.clone().try_into().unwrap()),
                rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            ],
            now - time::Duration::days(400),
            not_after,
            false,
        )
        .unwrap()
    };
    let cert = dir.join("node.pem");
    let saved_cert = std::fs::read(&cert).unwrap();
    let saved_key = std::fs::read(&key).unwrap();
    let install = |c: &alertrelay::crypto::pki::CertifiedPem| {
        std::fs::write(&cert, &c.cert_pem).unwrap();
        std::fs::write(&key, &c.key_pem).unwrap();
    };
    install(&leaf(now - time::Duration::days(2)));
    let (code, out, _) = cli(&["doctor", "--config", arg(&cfg), "--json"]).await;
    assert_eq!(code, 1, "{out}");
    let fails = doctor_failures(&out);
    assert!(
        fails
            .iter()
            .any(|(c, d)| c == "expiry tls.cert" && d.contains("EXPIRED")),
        "{fails:?}"
    );
    assert!(
        fails.iter().any(|(c, _)| c == "chain tls.cert"),
        "an expired certificate does not verify: {fails:?}"
    );

    install(&leaf(now + time::Duration::days(10)));
    let (code, out, _) = cli(&["doctor", "--config", arg(&cfg), "--json"]).await;
    assert_eq!(code, 0, "a warning is not a failure: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let expiry = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "expiry tls.cert")
        .unwrap();
    assert_eq!(expiry["status"], "warn", "{expiry}");
    assert!(
        expiry["detail"].as_str().unwrap().contains("in 9 days")
            || expiry["detail"].as_str().unwrap().contains("in 10 days"),
        "{expiry}"
    );
    std::fs::write(&cert, &saved_cert).unwrap();
    std::fs::write(&key, &saved_key).unwrap();

    // A config that does not load is a configuration error.
    let (code, out, _) = cli(&["doctor", "--config", "/nonexistent/node.toml"]).await;
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains("FAIL") && out.contains("/nonexistent/node.toml"),
        "{out}"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn doctor_warns_about_an_unreachable_peer_and_fails_a_peer_that_is_not_who_it_should_be() {
    let mut fed = Federation::start(AB).await;
    let cfg = fed.config_path(0);
    fed.stop(1).await;
    let (code, out, _) = cli(&["doctor", "--config", arg(&cfg), "--json"]).await;
    assert_eq!(code, 0, "a peer that is down is a warning: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let peer = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "peer DE-ECO")
        .unwrap()
        .clone();
    assert_eq!(peer["status"], "warn", "{peer}");
    fed.shutdown().await;

    // The directory (wrongly) sends DE-ECO's traffic to NL-EOKM's address:
    // the node that answers is not DE-ECO.
    let fed = Federation::start(&[
        ("FR-PDC", &["FR"]),
        ("DE-ECO", &["DE"]),
        ("NL-EOKM", &["NL"]),
    ])
    .await;
    let cfg = fed.config_path(0);
    let directory = cfg.parent().unwrap().join("directory.toml");
    let text = std::fs::read_to_string(&directory).unwrap();
    let de = format!("endpoint = \"{}\"", fed.endpoint(1));
    let nl = format!("endpoint = \"{}\"", fed.endpoint(2));
    assert!(text.contains(&de), "{text}");
    std::fs::write(&directory, text.replace(&de, &nl)).unwrap();
    let (code, out, _) = cli(&["doctor", "--config", arg(&cfg), "--json"]).await;
    assert_eq!(code, 1, "{out}");
    let fails = doctor_failures(&out);
    assert!(
        fails
            .iter()
            .any(|(c, d)| c == "peer DE-ECO" && d.contains("does not name node DE-ECO")),
        "{fails:?}"
    );
    assert!(!fails.iter().any(|(c, _)| c == "peer NL-EOKM"), "{fails:?}");
    fed.shutdown().await;
}

fn write_csv(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn import_submits_good_rows_refuses_bad_ones_with_reasons_and_a_rerun_adds_nothing() {
    let fed = Federation::start(AB).await;
    let cfg = fed.config_path(0);
    let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let mut text = String::from("url,category,hosting_ip,hashes,priority,notes\n");
    for i in 0..20 {
        text.push_str(&format!(
            "http://{DE_IP}/import/{i},csam,,sha256:{sha};md5:d41d8cd98f00b204e9800998ecf8427e,,\n"
        ));
    }
    // Line 22 onwards: bad rows.
    text.push_str("gopher://x/1,csam,,,,\n"); // 22
    text.push_str(&format!("http://{DE_IP}/z,kittens,,,,\n")); // 23
    text.push_str(&format!("http://{DE_IP}/y,csam,999.1.1.1,,,\n")); // 24
    text.push_str(&format!("http://{DE_IP}/w,csam,,sha256,,\n")); // 25
    text.push_str(&format!("http://{DE_IP}/v,csam,,,soon,\n")); // 26
    text.push_str(&format!(
        "\"http://{FR_IP}/local http://{FR_IP}/local2\",grooming,{FR_IP},,urgent,\"notes, with a comma\"\n"
    )); // 27: good, two URLs
    let csv = write_csv(fed.dir.path(), "batch.csv", &text);

    let (code, out, err) = cli(&[
        "import",
        "--config",
        arg(&cfg),
        "--csv",
        arg(&csv),
        "--json",
    ])
    .await;
    assert_eq!(code, 1, "some rows were refused: {out}{err}");
    assert!(
        !err.contains("rows"),
        "no progress bar when not a TTY: {err}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"], 26);
    assert_eq!(v["accepted"], 21, "{v}");
    assert_eq!(v["refused"], 5, "{v}");
    let reason = |row: u64| -> String {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["row"] == row)
            .unwrap_or_else(|| panic!("no row {row}"))["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(reason(22).contains("url"), "{}", reason(22));
    assert!(reason(23).contains("bad-category"), "{}", reason(23));
    assert!(reason(24).contains("hosting_ip"), "{}", reason(24));
    assert!(reason(25).contains("hashes[0]"), "{}", reason(25));
    assert!(reason(26).contains("priority"), "{}", reason(26));
    assert!(reason(2).is_empty());

    let mut fr = fed.operator(0);
    let before = cases(&mut fr, "").await;
    assert_eq!(before.len(), 21);
    let local = before
        .iter()
        .find(|c| c.urls.len() == 2)
        .expect("the two-URL row");
    assert_eq!(local.priority, "urgent");
    assert_eq!(local.notes, "notes, with a comma");
    let outgoing = before.iter().find(|c| c.direction == "outgoing").unwrap();
    assert_eq!(outgoing.hashes.len(), 2);
    for c in before.iter().filter(|c| c.direction == "outgoing") {
        wait_case(&fr, &c.id, 20, |c| c.status == "delivered").await;
    }

    // The same file again: nothing new, every good row already imported.
    let (code, out, _) = cli(&[
        "import",
        "--config",
        arg(&cfg),
        "--csv",
        arg(&csv),
        "--json",
    ])
    .await;
    assert_eq!(code, 1);
    let again: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["accepted"], 0, "{again}");
    assert_eq!(again["already_imported"], 21, "{again}");
    let after = cases(&mut fr, "").await;
    assert_eq!(after.len(), 21, "a re-run duplicates nothing");
    let mut de = fed.operator(1);
    assert_eq!(cases(&mut de, "incoming").await.len(), 20);

    // A file whose header is wrong is a usage error.
    let bad = write_csv(fed.dir.path(), "bad.csv", "link,category\nhttp://x/,csam\n");
    let (code, _, err) = cli(&["import", "--config", arg(&cfg), "--csv", arg(&bad)]).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("unknown column \"link\""), "{err}");
    fed.shutdown().await;
}

/// The hosts a reported URL can have, as the standard documents must
/// write them: an IPv4 and an IPv6 literal, an ASCII name, an IDN (written
/// as punycode), and a path with spaces, non-ASCII and characters RFC 3986
/// does not allow raw. (reported, as a URI)
fn every_kind_of_host() -> Vec<(String, String)> {
    vec![
        (
            format!("http://{DE_IP}/gallery/1"),
            format!("http://{DE_IP}/gallery/1"),
        ),
        (
            "http://[2a01:4f8::1]/chat?room=1".into(),
            "http://[2a01:4f8::1]/chat?room=1".into(),
        ),
        (
            "https://files.example.org/x".into(),
            "https://files.example.org/x".into(),
        ),
        (
            "https://bücher.example/straße".into(),
            "https://xn--bcher-kva.example/stra%C3%9Fe".into(),
        ),
        (
            "https://files.example.org/my album/ünïcode|x^{y}.jpg?q=a b&r=100%#top#2".into(),
            "https://files.example.org/my%20album/%C3%BCn%C3%AFcode%7Cx%5E%7By%7D.jpg?q=a%20b&r=100%25#top%232".into(),
        ),
    ]
}

/// The extension properties (docs/formats.md) of a STIX object.
fn stix_ext(o: &serde_json::Value) -> &serde_json::Value {
    let ext = o["extensions"].as_object().expect("extensions");
    assert_eq!(ext.len(), 1, "{o}");
    ext.values().next().unwrap()
}

const VALIDATED: &str =
    "notices_and_stix_bundles_pass_the_official_validators_for_every_kind_of_host";

#[tokio::test]
async fn notices_and_stix_bundles_pass_the_official_validators_for_every_kind_of_host() {
    let fed = Federation::builder(AB)
        .quiet_audit()
        .prepare(|dir| {
            let de = dir.join("DE-ECO/node.toml");
            let text = std::fs::read_to_string(&de).unwrap();
            std::fs::write(
            &de,
            format!(
                "{text}\n[notice]\ncontact = \"notices@eco.example\"\ndomain = \"eco.example\"\n"
            ),
        )
        .unwrap();
        })
        .start()
        .await;
    let mut fr = fed.operator(0);
    let mut de = fed.operator(1);
    let hosts = every_kind_of_host();
    let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let sent = fr
        .submit_report(pb::SubmitReportRequest {
            urls: hosts.iter().map(|(u, _)| u.clone()).collect(),
            category: "csam".into(),
            hosting_ip: DE_IP.into(),
            priority: pb::Priority::Urgent as i32,
            notes: "reporter: Jane Doe".into(),
            hashes: vec![pb::MediaHash {
                algorithm: "sha256".into(),
                value: sha.into(),
            }],
            submission_id: String::new(),
            classification: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let id = sent.report_id;
    // A case whose hosting address is IPv6, routed by its URL alone.
    let grooming = fr
        .submit_report(pb::SubmitReportRequest {
            urls: vec!["http://[2a01:4f8::1]/chat".into()],
            category: "grooming".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    eventually(
        10,
        || {
            let mut de = de.clone();
            async move { cases(&mut de, "incoming").await.len() }
        },
        |n| *n == 2,
    )
    .await;
    let de_cfg = fed.config_path(1);

    // Not assessed yet: no notice.
    let (code, _, err) = cli(&["notice", &id, "--config", arg(&de_cfg), "--format", "xarf"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("has not been assessed"), "{err}");

    for case in [&id, &grooming.report_id] {
        for st in ["in-review", "illegal-baseline"] {
            de.update_case(pb::UpdateCaseRequest {
                id: case.clone(),
                status: st.into(),
                reason: "analyst alice decided".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
    }
    let (code, out, err) =
        cli(&["notice", &id, "--config", arg(&de_cfg), "--format", "xarf"]).await;
    assert_eq!(code, 0, "{err}");
    let notices: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(notices.len(), hosts.len(), "one notice per URL");
    // What the official validators must pass (and, below, refuse): all
    // checked at the end, in one run.
    let mut valid = vec![("xarf", serde_json::Value::from(notices.clone()))];
    let mut refused = Vec::new();
    for (n, (_, as_uri)) in notices.iter().zip(&hosts) {
        assert_eq!(n["type"], "csam");
        assert_eq!(n["classification"], "baseline");
        assert_eq!(&n["url"], as_uri);
        assert_eq!(n["source_identifier"], DE_IP);
        assert_eq!(n["country_code"], "DE");
        assert_eq!(n["sender"]["contact"], "notices@eco.example");
        assert_eq!(n["hash_values"]["sha256"], sha);
    }
    assert_eq!(notices[2]["domain"], "files.example.org");
    // A punycode name does not fit X-ARF's `domain` pattern: it is in the
    // URL, not in `domain` (docs/formats.md).
    assert!(notices[3].get("domain").is_none(), "{}", notices[3]);
    assert!(
        notices[0].get("domain").is_none(),
        "an address is no domain"
    );
    assert_ne!(notices[0]["report_id"], notices[1]["report_id"]);
    // The host needs the URLs; nobody needs the analysts or the notes.
    for secret in ["alice", "Jane Doe", "operator"] {
        assert!(!out.contains(secret), "{secret} in {out}");
    }
    // An IPv6 hosting address, and a csem notice.
    let (code, out, err) = cli(&[
        "notice",
        &grooming.report_id,
        "--config",
        arg(&de_cfg),
        "--format",
        "xarf",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let notice: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(notice["type"], "csem");
    assert_eq!(notice["source_identifier"], "2a01:4f8::1");
    valid.push(("xarf", notice));
    // What the node wrote before (the URL as reported, the punycode
    // domain), an unknown classification and a missing reporter.
    for (key, bad) in [
        ("url", serde_json::json!(hosts[4].0)),
        ("domain", serde_json::json!("xn--bcher-kva.example")),
        ("classification", serde_json::json!("A3")),
    ] {
        let mut broken = notices[4].clone();
        broken[key] = bad;
        refused.push(("xarf", broken));
    }
    let mut broken = notices[0].clone();
    broken.as_object_mut().unwrap().remove("reporter");
    refused.push(("xarf", broken));

    // A configuration without [notice] cannot send notices.
    let (code, _, err) = cli(&["notice", &id, "--config", arg(&fed.config_path(0))]).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("notice"), "{err}");

    // STIX: all cases, and one by id; a case with no status history yet
    // (no empty lists) among them.
    let fresh = submit(&mut fr, "http://192.0.2.9/unrouted", "").await;
    let (code, out, err) = cli(&["export", "stix", "--config", arg(&fed.config_path(0))]).await;
    assert_eq!(code, 0, "{err}");
    let bundle: serde_json::Value = serde_json::from_str(&out).unwrap();
    valid.push(("stix", bundle.clone()));
    let objects = bundle["objects"].as_array().unwrap();
    let reports: Vec<_> = objects.iter().filter(|o| o["type"] == "report").collect();
    assert_eq!(reports.len(), 3);
    let urls: Vec<_> = objects
        .iter()
        .filter(|o| o["type"] == "url")
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    for (_, as_uri) in &hosts {
        assert!(urls.contains(&as_uri.as_str()), "{as_uri} in {urls:?}");
    }
    assert!(
        objects
            .iter()
            .any(|o| o["type"] == "ipv4-addr" && o["value"] == DE_IP)
    );
    assert!(
        objects
            .iter()
            .any(|o| o["type"] == "ipv6-addr" && o["value"] == "2a01:4f8::1")
    );
    assert!(
        objects
            .iter()
            .any(|o| o["type"] == "file" && o["hashes"]["SHA-256"] == sha)
    );
    for r in &reports {
        for referenced in r["object_refs"].as_array().unwrap() {
            assert!(
                objects.iter().any(|o| &o["id"] == referenced),
                "{referenced} is in the bundle"
            );
        }
    }
    let fresh_report = reports
        .iter()
        .find(|r| stix_ext(r)["case_id"] == fresh.report_id.as_str())
        .unwrap();
    assert_eq!(stix_ext(fresh_report)["origin"], "FR-PDC");
    for secret in ["alice", "Jane Doe"] {
        assert!(!out.contains(secret), "{secret} in {out}");
    }
    // Observables have the spec's deterministic ids: the same URL, the
    // same id in every export.
    let (_, again, _) = cli(&[
        "export",
        "stix",
        "--config",
        arg(&fed.config_path(0)),
        "--case",
        &grooming.report_id,
    ])
    .await;
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    valid.push(("stix", again.clone()));
    let reports: Vec<_> = again["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] == "report")
        .collect();
    assert_eq!(reports.len(), 1);
    assert_eq!(stix_ext(reports[0])["case_id"], grooming.report_id);
    assert_eq!(stix_ext(reports[0])["status"], "illegal-baseline");
    let identity = |b: &serde_json::Value| {
        b["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["type"] == "identity" && o["identity_class"] == "organization")
            .unwrap()
            .clone()
    };
    assert_eq!(
        identity(&bundle),
        identity(&again),
        "one version of the hotline"
    );
    let url_id = |b: &serde_json::Value, u: &str| {
        b["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["type"] == "url" && o["value"] == u)
            .map(|o| o["id"].clone())
    };
    let chat = "http://[2a01:4f8::1]/chat";
    assert!(url_id(&bundle, chat).is_some());
    assert_eq!(
        url_id(&bundle, chat),
        url_id(&again, chat),
        "deterministic SCO ids"
    );
    // An empty list, a URL that is no URI, a custom property outside an
    // extension.
    let index = |b: &serde_json::Value, t: &str| {
        b["objects"]
            .as_array()
            .unwrap()
            .iter()
            .position(|o| o["type"] == t)
            .unwrap()
    };
    let (r, u) = (index(&bundle, "report"), index(&bundle, "url"));
    for (at, key, bad) in [
        (r, "labels", serde_json::json!([])),
        (u, "value", serde_json::json!(hosts[4].0)),
        (r, "x_alertrelay_case_id", serde_json::json!("x")),
    ] {
        let mut broken = bundle.clone();
        broken["objects"][at][key] = bad;
        refused.push(("stix", broken));
    }
    fed.shutdown().await;
    let docs: Vec<(&str, &serde_json::Value)> = valid
        .iter()
        .chain(&refused)
        .map(|(kind, doc)| (*kind, doc))
        .collect();
    if let Some(verdicts) = validators::validate_all(VALIDATED, &docs).await {
        let (passed, failed) = verdicts.split_at(valid.len());
        for ((kind, doc), v) in valid.iter().zip(passed) {
            assert!(v.clean(), "{kind}: {v:#?}\n{doc:#}");
        }
        // The validators are no rubber stamp: each broken document fails.
        for ((kind, doc), v) in refused.iter().zip(failed) {
            assert!(
                !v.errors.is_empty() || !v.warnings.is_empty(),
                "{kind}: {doc:#}"
            );
        }
    }
}

#[tokio::test]
async fn an_online_backup_is_a_consistent_copy_that_verifies() {
    let fed = Federation::start(AB).await;
    let mut fr = fed.operator(0);
    let cfg = fed.config_path(0);
    // Writes go on while the backup runs.
    let writer = {
        let mut fr = fr.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                submit(&mut fr, &format!("http://{DE_IP}/during/{i}"), "").await;
            }
        })
    };
    submit(&mut fr, &format!("http://{DE_IP}/before"), "").await;
    let out = fed.dir.path().join("backup.db");
    let (code, stdout, err) =
        cli(&["db", "backup", "--config", arg(&cfg), "--out", arg(&out)]).await;
    assert_eq!(code, 0, "{stdout}{err}");
    writer.await.unwrap();
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second backup to the same file is refused.
    let (code, _, err) = cli(&["db", "backup", "--config", arg(&cfg), "--out", arg(&out)]).await;
    assert_eq!(code, 64, "{err}");

    // The copy verifies on its own, offline, with the node's directory.
    let copy_cfg = fed.dir.path().join("FR-PDC/restored.toml");
    std::fs::write(
        &copy_cfg,
        std::fs::read_to_string(&cfg).unwrap().replace(
            "database = \"node.db\"",
            &format!("database = {:?}", arg(&out)),
        ),
    )
    .unwrap();
    let (code, stdout, err) = cli(&[
        "audit",
        "verify",
        "--config",
        arg(&copy_cfg),
        "--offline",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{stdout}{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["entries"].as_u64().unwrap() > 0);
    fed.shutdown().await;
}

#[tokio::test]
async fn logs_have_a_span_per_request_and_a_line_per_refusal_and_never_a_url() {
    let mut fed = Federation::builder(&[("FR-PDC", &["FR"])])
        .processes()
        .json_logs("info,alertrelay=debug")
        .start()
        .await;
    let cfg = fed.config_path(0);
    let fed_ref = &fed;
    eventually(
        5,
        || async { fed_ref.stdout(0) },
        |out| out.contains("listening"),
    )
    .await;

    let secret = format!("http://{FR_IP}/very-secret-path");
    let (code, out, err) = cli(&[
        "submit",
        "--config",
        arg(&cfg),
        "--url",
        &secret,
        "--category",
        "csam",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, _, _) = cli(&[
        "submit",
        "--config",
        arg(&cfg),
        "--url",
        &secret,
        "--category",
        "kittens",
    ])
    .await;
    assert_ne!(code, 0);
    let (code, _, _) = cli(&["cases", "show", "no-such-case", "--config", arg(&cfg)]).await;
    assert_ne!(code, 0);
    // A URL pasted into the hosting-IP field is refused by field and
    // reason: neither its host nor its path reaches the log.
    let err = fed
        .operator(0)
        .submit_report(pb::SubmitReportRequest {
            urls: vec![format!("http://{FR_IP}/x")],
            category: "csam".into(),
            hosting_ip: "https://pasted-host.example/very-secret-path".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let status = fed.terminate(0, Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    let stderr = fed.log(0);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // Never a reported URL at info or above.
    for l in &lines {
        if l["level"] != "DEBUG" && l["level"] != "TRACE" {
            assert!(!l.to_string().contains("very-secret-path"), "{l}");
            assert!(!l.to_string().contains("pasted-host"), "{l}");
        }
    }
    let in_request = |l: &serde_json::Value, method: &str| {
        l["span"]["name"] == "request"
            && l["span"]["method"]
                .as_str()
                .is_some_and(|m| m.ends_with(method))
            && l["span"]["caller"]
                .as_str()
                .is_some_and(|c| c.starts_with("operator:FR-PDC/"))
    };
    // The accepted report: its lines carry the request span and the id.
    let accepted: Vec<_> = lines
        .iter()
        .filter(|l| in_request(l, "/SubmitReport") && l["span"]["report_id"] == id.as_str())
        .collect();
    assert!(
        accepted
            .iter()
            .any(|l| l["fields"]["message"] == "request done"),
        "{stderr}"
    );
    // The refused one: a line with its reason code, in its request span,
    // and the request's own refusal line with the gRPC code.
    assert!(
        lines.iter().any(|l| in_request(l, "/SubmitReport")
            && l["fields"]["message"] == "input refused"
            && l["fields"]["reason_code"] == "bad-category"
            && l["level"] == "WARN"),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| in_request(l, "/SubmitReport")
            && l["fields"]["message"] == "input refused"
            && l["fields"]["reason_code"] == "bad-hosting-ip"),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| in_request(l, "/SubmitReport")
            && l["fields"]["message"] == "request refused"
            && l["fields"]["grpc_code"] == "InvalidArgument"),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| in_request(l, "/GetCase")
            && l["fields"]["message"] == "request refused"
            && l["fields"]["grpc_code"] == "NotFound"
            && l["span"]["report_id"] == "no-such-case"),
        "{stderr}"
    );
}

/// Runs the CLI on a pseudo-terminal (util-linux `script`), returning
/// everything it drew there.
async fn cli_on_tty(args: &[&str]) -> Option<String> {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("util-linux `script` is not installed: terminal output not checked");
        return None;
    }
    let mut line = String::from(BIN);
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .output()
        .await
        .unwrap();
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn long_work_shows_progress_on_a_terminal() {
    let fed = Federation::start(&[("FR-PDC", &["FR"])]).await;
    let cfg = fed.config_path(0);
    let mut text = String::from("url,category\n");
    for i in 0..200 {
        text.push_str(&format!("http://{FR_IP}/tty/{i},csam\n"));
    }
    let csv = write_csv(fed.dir.path(), "tty.csv", &text);
    let Some(out) = cli_on_tty(&["import", "--config", arg(&cfg), "--csv", arg(&csv)]).await else {
        return;
    };
    assert!(out.contains("/200 rows"), "a progress bar: {out:?}");
    assert!(out.contains("200 rows: 200 accepted"), "{out:?}");
    // Not on a pipe (the other tests read stderr of piped runs).
    let (_, _, err) = cli(&["import", "--config", arg(&cfg), "--csv", arg(&csv)]).await;
    assert!(!err.contains("/200 rows"), "{err}");

    let out = cli_on_tty(&["audit", "verify", "--config", arg(&cfg), "--offline"])
        .await
        .unwrap();
    assert!(out.contains("entries  eta"), "a progress bar: {out:?}");
    assert!(out.contains("verifies"), "{out:?}");
    fed.shutdown().await;
}

#[tokio::test]
async fn a_bad_case_filter_is_refused_like_any_bad_input() {
    let fed = Federation::start(&[("FR-PDC", &["FR"])]).await;
    let mut fr = fed.operator(0);
    for (request, field) in [
        (
            pb::ListCasesRequest {
                status: "lost".into(),
                ..Default::default()
            },
            "status",
        ),
        (
            pb::ListCasesRequest {
                direction: "sideways".into(),
                ..Default::default()
            },
            "direction",
        ),
        (
            pb::ListCasesRequest {
                category: "kittens".into(),
                ..Default::default()
            },
            "category",
        ),
    ] {
        let e = fr.list_cases(request).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().starts_with(&format!("{field}: ")),
            "{}",
            e.message()
        );
        assert!(e.message().ends_with("(bad-filter)"), "{}", e.message());
    }
    let e = fr
        .watch_cases(pb::WatchCasesRequest {
            direction: "sideways".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("direction: "), "{}", e.message());
    let page = fed.metrics(0).await;
    assert!(
        page.contains("alertrelay_refusals_total{reason=\"bad-filter\"} 4"),
        "{page}"
    );
    let (code, out, err) = cli(&["audit", "export", "--config", arg(&fed.config_path(0))]).await;
    assert_eq!(code, 0, "{err}");
    let refused: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "input.refused")
        .collect();
    assert_eq!(refused.len(), 4, "{out}");
    assert!(
        refused.iter().all(|e| e.to_string().contains("bad-filter")),
        "{refused:?}"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn health_is_not_serving_once_the_directory_suspends_this_node() {
    // Probes once a minute when ready: the change below is seen because a
    // reload triggers a probe.
    let fed = Federation::builder(AB)
        .quiet_audit()
        .prepare(|dir| {
            edit_configs(dir, |t| {
                t.replace("probe_interval_ms = 5000", "probe_interval_ms = 60000")
            })
        })
        .start()
        .await;
    eventually(10, || health(&fed, 0), |s| *s == SERVING).await;
    // FR-PDC's own directory now suspends it; a reload applies it.
    let path = fed.configs[0].directory_path.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    let (head, tail) = text.split_at(text.find("id = \"FR-PDC\"").unwrap());
    let tail = tail.replacen("active = true", "active = false", 1);
    std::fs::write(&path, format!("{head}{tail}")).unwrap();
    fed.admin(0).reload(pb::ReloadRequest {}).await.unwrap();
    eventually(5, || health(&fed, 0), |s| *s == NOT_SERVING).await;
    fed.shutdown().await;
}

#[tokio::test]
async fn a_node_without_a_crl_fails_doctor_and_says_so_loudly_when_it_serves() {
    let mut fed = Federation::builder(AB).processes().create().await;
    fed.set(0, "tls.crls", toml::Value::Array(vec![]));
    let cfg = fed.config_path(0);
    let (code, out, _) = cli(&["doctor", "--config", arg(&cfg), "--json"]).await;
    assert_eq!(code, 1, "{out}");
    let fails = doctor_failures(&out);
    assert!(
        fails
            .iter()
            .any(|(c, d)| c == "crl" && d.contains("no revocation is checked")),
        "{fails:?}"
    );
    fed.start_armed(0, None).await;
    eventually(
        10,
        || async { fed.log(0) },
        |log| log.contains("NO CERTIFICATE REVOCATION IS CHECKED"),
    )
    .await;
    fed.shutdown().await;
}
