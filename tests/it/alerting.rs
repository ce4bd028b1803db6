//! The Prometheus alerting rules in contrib/prometheus: promtool accepts
//! them and their unit tests pass, and every node metric they use (with
//! the labels they match on) is one a real node serves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::common::*;

const RULES: &str = "contrib/prometheus/alerts.yml";
const RULE_TESTS: &str = "contrib/prometheus/alerts.test.yml";

/// promtool (Debian's `prometheus` package); None when it is not
/// installed and not required (`.ci/run` installs it and sets
/// ALERTRELAY_REQUIRE_PROMTOOL=1).
fn promtool(test: &str) -> Option<&'static str> {
    use std::io::Write;
    let required = std::env::var("ALERTRELAY_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
    let found = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if found.is_none() {
        assert!(
            !required,
            "{test}: ALERTRELAY_REQUIRE_PROMTOOL is set, but promtool is not installed"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: promtool is not installed (.ci/run installs Debian's prometheus)"
        );
    }
    found
}

fn run(bin: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(bin).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{bin} {args:?}:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_alerting_rules_and_their_unit_tests_pass() {
    let Some(bin) = promtool("promtool_accepts_the_alerting_rules") else {
        return;
    };
    let checked = run(bin, &["check", "rules", RULES]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run(bin, &["test", "rules", RULE_TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has unit tests.
    let rules = std::fs::read_to_string(RULES).unwrap();
    let tests = std::fs::read_to_string(RULE_TESTS).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no unit test in {RULE_TESTS}"
        );
    }
}

/// `(metric, label names matched on)` for each node metric (`alertrelay_*`,
/// `process_*`) the rules' expressions use.
fn rule_metrics(rules: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for expr in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
    {
        let mut rest = expr;
        while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic()) {
            rest = &rest[start..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            rest = &rest[end..];
            if !(name.starts_with("alertrelay_") || name.starts_with("process_")) {
                continue;
            }
            let labels = out.entry(name.to_owned()).or_default();
            if let Some(sel) = rest.strip_prefix('{') {
                let sel = &sel[..sel.find('}').unwrap()];
                for m in sel.split(',') {
                    let label = m.split(['=', '!']).next().unwrap().trim();
                    labels.insert(label.to_owned());
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn every_metric_and_label_the_alerting_rules_use_is_served_by_a_node() {
    let mut fed = Federation::start(&[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])]).await;
    let mut fr = fed.operator(0);
    // A delivery, then a delivery failure while the peer is stopped, so
    // the per-peer series exist with their labels.
    let delivered = submit(&mut fr, &format!("http://{DE_IP}/a"), "").await;
    wait_case(&fr, &delivered.report_id, 10, |c| c.status == "delivered").await;
    // Witnessing (every 100 ms in these federations) while both run.
    let witnessed = eventually(10, || fed.metrics(0), |p| p.contains("event=\"cosigned\"}")).await;
    fed.stop(1).await;
    let queued = submit(&mut fr, &format!("http://{DE_IP}/b"), "").await;
    wait_case(&fr, &queued.report_id, 10, |c| {
        c.deliveries[0].attempts >= 1
    })
    .await;
    let page = eventually(
        10,
        || fed.metrics(0),
        |p| {
            p.contains("alertrelay_delivery_failures_total{")
                && p.contains("alertrelay_outbox_oldest_age_seconds{peer=\"DE-ECO\"}")
        },
    )
    .await
        + &witnessed;
    fed.shutdown().await;

    // The metric families the node declares, and the label names of
    // their samples.
    let declared: BTreeSet<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut labels: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for l in page.lines().filter(|l| !l.starts_with('#')) {
        if let Some((name, rest)) = l.split_once('{') {
            let set = labels.entry(name).or_default();
            for pair in rest[..rest.find('}').unwrap()].split("\",") {
                set.insert(pair.split('=').next().unwrap());
            }
        }
    }
    let rules = std::fs::read_to_string(RULES).unwrap();
    let used = rule_metrics(&rules);
    assert!(used.len() >= 10, "{used:?}");
    for (name, matched) in &used {
        assert!(
            declared.contains(name.as_str()),
            "{RULES} uses {name}, which the node does not serve:\n{page}"
        );
        // `job` and `instance` are added by Prometheus at scrape time.
        for label in matched
            .iter()
            .filter(|l| !["job", "instance"].contains(&l.as_str()))
        {
            let served = labels.get(name.as_str());
            assert!(
                served.is_none_or(|s| s.contains(label.as_str())),
                "{RULES} matches {name} on label {label}, which the node does not set ({served:?})"
            );
        }
    }
    // Certificate and CRL expiry, read from the node's files: the test
    // CA mints certificates for years and CRLs for days ahead.
    let value = |prefix: &str| -> f64 {
        page.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix}:\n{page}"))
            .trim()
            .parse()
            .unwrap()
    };
    let node = value("alertrelay_certificate_expires_in_seconds{certificate=\"node\"}");
    assert!(node > 30.0 * 86400.0, "{node}");
    assert!(value("alertrelay_certificate_expires_in_seconds{certificate=\"ca\"}") > node - 1.0);
    let crl = page
        .lines()
        .find(|l| l.starts_with("alertrelay_crl_next_update_in_seconds{crl=\""))
        .unwrap_or_else(|| panic!("no CRL series:\n{page}"));
    let crl: f64 = crl.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(crl > 0.0, "{crl}");
    // The label values the rules match on are the ones the node writes.
    assert!(page.contains("alertrelay_deliveries_total{peer=\"DE-ECO\",outcome=\"delivered\"}"));
}
