//! `alertrelay bench` with tiny sizes: it runs every scenario against real
//! nodes and its JSON carries every figure. Speed is measured, not
//! asserted: the checks are that each figure was measured (present, finite,
//! non-negative, counted over the sizes asked for) and that the simulated
//! federation delivered every report where it belongs.

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alertrelay"))
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

fn latency(v: &Value, path: &str, samples: f64) {
    assert_eq!(num(v, &format!("{path}/samples")), samples, "{path}");
    let (p50, p99, max) = (
        num(v, &format!("{path}/p50_ms")),
        num(v, &format!("{path}/p99_ms")),
        num(v, &format!("{path}/max_ms")),
    );
    assert!(
        p50 > 0.0 && p50 <= p99 && p99 <= max,
        "{path}: {p50} {p99} {max}"
    );
}

#[test]
fn every_scenario_reports_every_figure() {
    let v = bench(&[
        "--duration",
        "2",
        "--concurrency",
        "8",
        "--backlog",
        "120",
        "--urgent",
        "4",
        "--drain",
        "150",
        "--scale-nodes",
        "12",
        "--reports",
        "240",
    ]);
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
    let ratio = num(&v, "/ratio_to_ceiling");
    let ceiling = num(&v, "/limits/ceiling_per_sec");
    assert!((ratio - t / ceiling).abs() < 1e-9);
    // Latency at three fractions of it, every report with its receipt.
    let levels = v["latency"].as_array().expect("latency levels");
    let fractions: Vec<f64> = levels
        .iter()
        .map(|l| l["fraction"].as_f64().unwrap())
        .collect();
    assert_eq!(fractions, [0.25, 0.5, 0.9]);
    for (i, l) in levels.iter().enumerate() {
        assert_eq!(l["missing"], 0, "level {i}: a report without a receipt");
        let offered = num(&v, &format!("/latency/{i}/offered_per_sec"));
        assert!((offered - fractions[i] * t).abs() < 1e-6 || offered == 1.0);
        let samples = num(&v, &format!("/latency/{i}/end_to_end/samples"));
        latency(&v, &format!("/latency/{i}/end_to_end"), samples);
    }
    // The urgent lane.
    assert_eq!(num(&v, "/urgent_lane/backlog"), 120.0);
    latency(&v, "/urgent_lane/urgent_idle", 4.0);
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
    let hops: f64 = v["scale"]["hops"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_f64().unwrap())
        .sum();
    assert_eq!(hops, 240.0, "every report's hops are counted");
    assert!(num(&v, "/scale/per_sec") > 0.0);
}

#[test]
fn one_scenario_runs_alone_and_a_bad_one_is_refused() {
    let v = bench(&["--scenario", "limits"]);
    assert!(v["limits"].is_object());
    for other in ["throughput", "latency", "urgent_lane", "drain", "scale"] {
        assert!(v[other].is_null(), "{other} ran");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alertrelay"))
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
