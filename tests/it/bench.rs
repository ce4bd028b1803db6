//! `alertrelay bench` with tiny sizes: it runs every scenario against real
//! nodes and its JSON carries every figure. Speed is measured, not
//! asserted: the checks are that each figure was measured (present, finite,
//! non-negative, counted over the sizes asked for) and that the simulated
//! federation delivered every report where it belongs. Figures the bench
//! derives from other figures it printed (ratios, offered rates, sums of a
//! histogram, the order of its own percentiles) are not recomputed here:
//! that would test the arithmetic with itself.

use crate::common::BIN;
use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = std::process::Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--json")
        .env("TMPDIR", std::env::temp_dir())
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The number at `path` (e.g. `/limits/sign_per_sec`): present, finite,
/// not negative.
fn num(v: &Value, path: &str) -> f64 {
    let n = v
        .pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} missing in {v:#}"));
    assert!(n.is_finite() && n >= 0.0, "{path} = {n}");
    n
}

/// A latency summary over `samples` reports (`None`: at least one, the
/// test did not fix how many): every figure measured, and no report
/// answered in zero time.
fn latency(v: &Value, path: &str, samples: Option<f64>) {
    let n = num(v, &format!("{path}/samples"));
    match samples {
        Some(want) => assert_eq!(n, want, "{path}"),
        None => assert!(n >= 1.0, "{path}: no samples"),
    }
    for q in ["p50_ms", "p99_ms", "max_ms"] {
        assert!(num(v, &format!("{path}/{q}")) > 0.0, "{path}/{q}");
    }
}

/// The sizes of throughput, latency, urgent and drain in these tests,
/// small enough for a test. A window of a few seconds: this debug
/// build, beside the rest of the suite, can take more than a second to
/// settle one batch of receipts.
const TINY: [&str; 8] = [
    "--duration",
    "4",
    "--backlog",
    "120",
    "--urgent",
    "4",
    "--drain",
    "150",
];

#[test]
fn every_scenario_reports_every_figure() {
    let v = bench(
        &[
            &TINY[..],
            &[
                "--concurrency",
                "8",
                "--scale-nodes",
                "12",
                "--reports",
                "240",
                "--pdq",
                "300",
                "--dns-reports",
                "300",
                "--dns-hosts",
                "60",
                "--console-cases",
                "300",
            ],
        ]
        .concat(),
    );
    // The machine and its limits.
    assert!(num(&v, "/machine/cpus") >= 1.0);
    for f in [
        "sign_per_sec",
        "verify_batch64_per_sec",
        "sqlite_reports_per_sec",
        "tonic_stream_per_sec",
        "model_us_per_report",
        "ceiling_per_sec",
    ] {
        assert!(num(&v, &format!("/limits/{f}")) > 0.0, "{f}");
    }
    // Throughput and the ratio to the ceiling.
    let t = num(&v, "/throughput/end_to_end_per_sec");
    assert!(t > 0.0, "nothing delivered in the window");
    assert!(num(&v, "/throughput/intake_per_sec") > 0.0);
    num(&v, "/throughput/queued_at_end");
    num(&v, "/throughput/cpu_us_per_report");
    // Where it goes: CPU by thread group (adding up to the whole), and
    // the binary's own allocator counting allocations.
    let b = &v["throughput"]["breakdown"];
    let cpu = num(b, "/cpu_us");
    assert!(cpu > 0.0, "{b:#}");
    let groups = b["cpu_by_group"].as_array().expect("CPU by thread group");
    let summed: f64 = groups.iter().map(|g| g[1].as_f64().unwrap()).sum();
    assert!((summed - cpu).abs() <= cpu * 0.1 + 1.0, "{b:#}");
    assert!(
        groups
            .iter()
            .any(|g| g[0].as_str().unwrap().starts_with("SQLite")),
        "{b:#}"
    );
    assert!(num(b, "/allocations") > 0.0, "{b:#}");
    assert!(num(b, "/context_switches") > 0.0, "{b:#}");
    num(b, "/written_bytes");
    assert!(num(b, "/statements") > 0.0, "{b:#}");
    assert!(num(&v, "/ratio_to_ceiling") > 0.0);
    // Single submissions saturated, and the latency at three fractions of
    // their rate, every report with its receipt.
    let singles = num(&v, "/singles/per_sec");
    assert!(singles > 0.0);
    latency(&v, "/singles/answered", None);
    let levels = v["latency"].as_array().expect("latency levels");
    let fractions: Vec<f64> = levels
        .iter()
        .map(|l| l["fraction"].as_f64().unwrap())
        .collect();
    assert_eq!(fractions, [0.25, 0.5, 0.9]);
    for (i, l) in levels.iter().enumerate() {
        assert_eq!(l["missing"], 0, "level {i}: a report without a receipt");
        let offered = num(&v, &format!("/latency/{i}/offered_per_sec"));
        assert!(
            (offered - (fractions[i] * singles).max(1.0)).abs() <= 1.0,
            "{offered}"
        );
        latency(&v, &format!("/latency/{i}/end_to_end"), None);
    }
    // The urgent lane.
    assert_eq!(num(&v, "/urgent_lane/backlog"), 120.0);
    latency(&v, "/urgent_lane/urgent_idle", Some(4.0));
    assert!(num(&v, "/urgent_lane/urgent_during_drain/samples") >= 1.0);
    // The drain's samples split by how much of the backlog still waited
    // (either part may be empty with a backlog this small).
    for part in ["urgent_most_queued", "urgent_little_queued"] {
        for field in ["samples", "p50_ms", "p99_ms", "max_ms"] {
            assert!(
                v.pointer(&format!("/urgent_lane/{part}/{field}"))
                    .is_some_and(|x| x.is_number()),
                "{part}.{field} in the JSON"
            );
        }
    }
    assert!(num(&v, "/urgent_lane/drain_per_sec") > 0.0);
    assert!(num(&v, "/urgent_lane/intake_per_sec") > 0.0);
    // Backlog drain and memory.
    assert_eq!(num(&v, "/drain/reports"), 150.0);
    assert!(num(&v, "/drain/drain_per_sec") > 0.0);
    let (before, peak) = (
        num(&v, "/drain/rss_before_mib"),
        num(&v, "/drain/rss_peak_mib"),
    );
    assert!(before > 0.0 && peak > 0.0, "{before} {peak}");
    assert!(
        num(&v, "/drain/destination_rss_peak_mib") > 0.0,
        "the destination's own process was measured"
    );
    // The simulated federation: everything where it belongs.
    assert_eq!(num(&v, "/scale/nodes"), 12.0);
    assert_eq!(num(&v, "/scale/reports"), 240.0);
    assert_eq!(v["scale"]["wrong"], 0, "{:#}", v["scale"]);
    assert_eq!(num(&v, "/scale/correct"), 240.0);
    assert!(v["scale"]["hops"].is_object(), "{:#}", v["scale"]);
    assert!(num(&v, "/scale/per_sec") > 0.0);
    // Near-duplicate media at scale.
    assert_eq!(num(&v, "/pdq/stored"), 300.0);
    assert!(num(&v, "/pdq/load_per_sec") > 0.0);
    latency(&v, "/pdq/urgent_new", Some(4.0));
    latency(&v, "/pdq/urgent_near_duplicate", Some(4.0));
    assert_eq!(
        num(&v, "/pdq/near_duplicates_joined"),
        num(&v, "/pdq/urgent_near_duplicate/samples"),
        "every near-duplicate joined its stored case"
    );
    dns_import(&v);
    // The console's pages with that many cases stored.
    assert_eq!(num(&v, "/console/stored"), 300.0);
    assert!(num(&v, "/console/load_per_sec") > 0.0);
    latency(&v, "/console/queue", Some(200.0));
    latency(&v, "/console/case", Some(200.0));
    assert!(v["growth"].is_null(), "growth is not in the default set");
}

#[test]
fn one_scenario_runs_alone_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = bench(&[
        "--scenario",
        "limits",
        "--report",
        dir.path().to_str().unwrap(),
    ]);
    assert!(v["limits"].is_object());
    for other in ["throughput", "latency", "urgent_lane", "drain", "scale"] {
        assert!(v[other].is_null(), "{other} ran");
    }
    // The report of a run without a chartable scenario: the figures, no
    // chart.
    let page = report_page(dir.path());
    assert!(
        !page.contains("<svg"),
        "a chart of a scenario that did not run"
    );
    assert!(page.contains("sign, /s"), "the limits' table is missing");
    let out = std::process::Command::new(BIN)
        .args(["bench", "--scenario", "warp-speed"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown scenario"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The DNS scenario's figures: every report committed, every host asked
/// about (A and AAAA) at the bench's own server, the cache used.
fn dns_import(v: &Value) {
    assert_eq!(num(v, "/dns/reports"), 300.0);
    assert_eq!(num(v, "/dns/hosts"), 60.0);
    assert!(num(v, "/dns/intake_per_sec") > 0.0);
    assert!(num(v, "/dns/questions_asked") >= 120.0);
    assert!(num(v, "/dns/answered") >= 60.0);
    num(v, "/dns/cache_hits");
}

#[test]
fn the_dns_scenario_imports_reports_naming_hosts_through_its_own_server() {
    let v = bench(&[
        "--scenario",
        "dns",
        "--dns-reports",
        "300",
        "--dns-hosts",
        "60",
    ]);
    dns_import(&v);
    assert!(
        v.pointer("/pdq").is_some_and(Value::is_null),
        "only dns ran"
    );
}

/// The console scenario alone: that many cases stored at the destination,
/// and every queue and case page timed (each a 200 over HTTPS, or the
/// bench fails).
#[test]
fn the_console_scenario_times_the_queue_and_case_pages() {
    let v = bench(&["--scenario", "console", "--console-cases", "300"]);
    assert_eq!(num(&v, "/console/stored"), 300.0);
    assert!(num(&v, "/console/load_per_sec") > 0.0);
    latency(&v, "/console/queue", Some(200.0));
    latency(&v, "/console/case", Some(200.0));
    assert!(v["pdq"].is_null(), "only the scenario asked for ran");
}

/// DIR/index.html of `--report DIR`: present, and referring to nothing
/// outside itself (no script, style sheet, font or image from elsewhere).
fn report_page(dir: &std::path::Path) -> String {
    let page = std::fs::read_to_string(dir.join("index.html")).expect("index.html written");
    assert!(
        page.starts_with("<!DOCTYPE html>"),
        "{}",
        &page[..80.min(page.len())]
    );
    for outside in ["http://", "https://", "<script", "<link", "url(", "@import"] {
        assert!(!page.contains(outside), "the page refers to {outside}");
    }
    page
}

/// Each `<svg>…</svg>` of the page, parsed as XML (it must be well
/// formed), by its id.
fn charts(page: &str) -> std::collections::BTreeMap<String, String> {
    let mut found = std::collections::BTreeMap::new();
    let mut rest = page;
    while let Some(start) = rest.find("<svg") {
        let end = rest[start..].find("</svg>").expect("an <svg> is closed") + start + 6;
        let svg = &rest[start..end];
        let doc = roxmltree::Document::parse(svg)
            .unwrap_or_else(|e| panic!("an SVG is not well-formed XML ({e}): {svg}"));
        let id = doc
            .root_element()
            .attribute("id")
            .expect("each chart has an id");
        found.insert(id.to_owned(), svg.to_owned());
        rest = &rest[end..];
    }
    found
}

/// How many `tag` elements an SVG holds (with non-empty `points` for
/// lines).
fn marks(svg: &str, tag: &str) -> usize {
    let doc = roxmltree::Document::parse(svg).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name(tag))
        .filter(|n| tag != "polyline" || n.attribute("points").is_some_and(|p| !p.is_empty()))
        .count()
}

/// The scenarios the report draws, with tiny sizes, growth among them:
/// the page holds a chart for each, every chart is well-formed SVG with
/// the data of the run, and growth measured both rates and their ratio.
#[test]
fn the_report_draws_every_scenario_that_ran_and_growth_compares_two_stores() {
    let dir = tempfile::tempdir().unwrap();
    let v = bench(&[
        "--scenario",
        "throughput,latency,urgent,drain,growth",
        // Long enough that a receipt comes back within each window while
        // the whole suite shares two cores (a 1 s window once saw none).
        "--duration",
        "3",
        "--backlog",
        "120",
        "--urgent",
        "2",
        "--drain",
        "150",
        "--growth",
        "300",
        "--report",
        dir.path().to_str().unwrap(),
    ]);
    // Growth: both rates and their ratio.
    assert_eq!(num(&v, "/growth/stored"), 300.0);
    assert!(num(&v, "/growth/load_intake_per_sec") > 0.0);
    assert!(num(&v, "/growth/load_delivered_per_sec") > 0.0);
    assert!(
        num(&v, "/growth/checkpoint_secs") > 0.0,
        "a checkpoint signed on the loaded nodes"
    );
    assert!(num(&v, "/growth/empty/end_to_end_per_sec") > 0.0);
    assert!(num(&v, "/growth/full/end_to_end_per_sec") > 0.0);
    assert!(num(&v, "/growth/ratio") > 0.0);
    // The series the charts draw, kept in the JSON.
    let intervals = v["throughput"]["series"]["secs"].as_array().unwrap().len();
    assert!(intervals >= 1, "no interval of the throughput window");
    for (i, l) in v["latency"].as_array().unwrap().iter().enumerate() {
        let cdf = l["distribution"]["percentile_ms"].as_array().unwrap();
        assert_eq!(cdf.len(), 101, "level {i}: percentiles 0 to 100");
    }
    let queued = v["drain"]["curve"]["queued"].as_array().unwrap();
    assert_eq!(
        queued.last(),
        Some(&Value::from(0)),
        "the curve ends drained"
    );
    let urgent = num(&v, "/urgent_lane/urgent_during_drain/samples") as usize;
    assert_eq!(
        v["urgent_lane"]["by_backlog"]["latency_ms"]
            .as_array()
            .unwrap()
            .len(),
        urgent
    );

    let page = report_page(dir.path());
    let charts = charts(&page);
    let ids: Vec<&str> = charts.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        [
            "chart-breakdown",
            "chart-drain",
            "chart-growth",
            "chart-latency",
            "chart-throughput",
            "chart-urgent",
        ]
    );
    // Each chart drew the run's data: a line per series, a dot per
    // urgent report, a bar per figure.
    assert_eq!(marks(&charts["chart-throughput"], "polyline"), 2);
    assert_eq!(marks(&charts["chart-latency"], "polyline"), 3);
    assert_eq!(marks(&charts["chart-drain"], "polyline"), 1);
    assert_eq!(marks(&charts["chart-urgent"], "circle"), urgent);
    assert_eq!(marks(&charts["chart-growth"], "rect"), 2, "a bar per store");
    // A bar per thread group and one for the whole process.
    let groups = v["throughput"]["breakdown"]["cpu_by_group"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(marks(&charts["chart-breakdown"], "rect"), groups + 1);
    // Every figure table, the header with the machine and the date.
    for heading in [
        "Throughput, sustained",
        "Urgent lane",
        "Backlog drain",
        "Store growth",
    ] {
        assert!(page.contains(heading), "{heading}");
    }
    let started = v["machine"]["started_utc"].as_str().unwrap();
    assert!(page.contains(started), "the run's date");
}

/// Throughput, urgent, drain and latency on PostgreSQL, each node as three
/// replicas in fresh databases of the test server: the JSON says which
/// store the figures are for, every figure was measured over the sizes
/// asked for, and every database the bench created is gone afterwards.
#[tokio::test]
async fn the_postgres_scenarios_run_on_three_replicas_and_leave_no_database() {
    let test = "bench::the_postgres_scenarios_run_on_three_replicas";
    let Some(mut admin) = crate::common::pg::server(test).await else {
        return;
    };
    let server = crate::common::pg::admin_url();
    let v = tokio::task::spawn_blocking(move || {
        bench(
            &[
                &TINY[..],
                &[
                    "--database",
                    server.as_str(),
                    "--replicas",
                    "3",
                    "--scenario",
                    "throughput,urgent,drain,latency",
                ],
            ]
            .concat(),
        )
    })
    .await
    .unwrap();
    assert_eq!(v["store"]["kind"], "postgresql", "{:#}", v["store"]);
    assert_eq!(num(&v, "/store/replicas"), 3.0);
    // Two nodes in each of three clusters (throughput and latency share
    // one): a database each, none left behind.
    let created: Vec<String> = v["store"]["databases"]
        .as_array()
        .expect("the databases created")
        .iter()
        .map(|d| d.as_str().expect("a name").to_owned())
        .collect();
    assert_eq!(created.len(), 6, "{created:?}");
    assert_eq!(v["store"]["left_behind"], serde_json::json!([]));
    let still: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname = ANY($1)")
            .bind(&created)
            .fetch_all(&mut admin)
            .await
            .unwrap();
    assert!(still.is_empty(), "databases left on the server: {still:?}");
    // Every figure measured: reports delivered in the window, every
    // latency sample and urgent report with its receipt, the drain done.
    assert!(num(&v, "/throughput/end_to_end_per_sec") > 0.0);
    assert!(num(&v, "/throughput/intake_per_sec") > 0.0);
    // The server's own work, when it runs on this machine.
    let host = url::Url::parse(&crate::common::pg::admin_url())
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned));
    if matches!(host.as_deref(), Some("127.0.0.1" | "localhost")) {
        assert!(num(&v, "/throughput/postgres_server/cpu_us") > 0.0);
        num(&v, "/throughput/postgres_server/written_bytes");
    }
    assert!(num(&v, "/singles/per_sec") > 0.0);
    latency(&v, "/singles/answered", None);
    let levels = v["latency"].as_array().expect("latency levels");
    assert_eq!(levels.len(), 3);
    for (i, l) in levels.iter().enumerate() {
        assert_eq!(l["missing"], 0, "level {i}: a report without a receipt");
        latency(&v, &format!("/latency/{i}/end_to_end"), None);
    }
    assert_eq!(num(&v, "/urgent_lane/backlog"), 120.0);
    latency(&v, "/urgent_lane/urgent_idle", Some(4.0));
    latency(&v, "/urgent_lane/urgent_during_drain", None);
    assert!(num(&v, "/urgent_lane/drain_per_sec") > 0.0);
    assert_eq!(num(&v, "/drain/reports"), 150.0);
    assert!(num(&v, "/drain/drain_per_sec") > 0.0);
    assert!(num(&v, "/drain/destination_rss_peak_mib") > 0.0);
    for other in ["limits", "scale", "pdq", "dns", "console"] {
        assert!(v[other].is_null(), "{other} ran");
    }
}

/// The scenarios that measure SQLite nodes are refused with --database,
/// naming them, before anything is created; --replicas needs --database.
#[test]
fn sqlite_only_scenarios_are_refused_on_postgres() {
    let out = std::process::Command::new(BIN)
        .args([
            "bench",
            "--database",
            "postgres://nobody@127.0.0.1:1/none",
            "--scenario",
            "throughput,limits,console",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("limits, console measure SQLite nodes only"),
        "{err}"
    );
    let out = std::process::Command::new(BIN)
        .args(["bench", "--replicas", "3", "--scenario", "throughput"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--database"), "{err}");
}
