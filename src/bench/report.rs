//! `bench --report DIR`: the run as one self-contained page,
//! DIR/index.html — its header (machine, build, date), every figure in
//! tables, and SVG charts of the scenarios that ran: throughput over time,
//! latency distribution per load level, the drain curve, urgent latency
//! against the backlog waiting, the per-report breakdown, store growth.
//! No script, no style sheet, font or image from elsewhere; maud escapes
//! every text. The drawing is in `svg.rs`.

mod svg;

use std::path::{Path, PathBuf};

use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

use super::{Drain, Growth, LatencyAt, Results, Throughput, UrgentLane};
use svg::{Axis, PALETTE, Plot};

/// Writes DIR/index.html (creating DIR); returns its path.
pub fn write(r: &Results, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("index.html");
    std::fs::write(&path, page(r)?.into_string())?;
    Ok(path)
}

/// The results' sections, in the order the bench runs them, with their
/// headings. A section not named here still gets a table, after these.
const SECTIONS: [(&str, &str); 11] = [
    ("limits", "This machine's limits"),
    ("throughput", "Throughput, sustained"),
    ("singles", "Single submissions, saturated"),
    (
        "latency",
        "Latency at fractions of the single submissions' rate",
    ),
    ("urgent_lane", "Urgent lane"),
    ("drain", "Backlog drain"),
    ("scale", "Simulated federation"),
    ("pdq", "Near-duplicate media"),
    ("dns", "Bulk import with DNS"),
    ("console", "Console pages"),
    ("growth", "Store growth"),
];

/// Top-level entries shown in the header, not as sections.
const HEADER: [&str; 2] = ["machine", "nodes_in"];

const STYLE: &str = "
body { font: 15px/1.45 system-ui, sans-serif; color: #222; margin: 0; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 20px 40px; }
h1 { font-size: 24px; margin: 8px 0; }
h2 { font-size: 19px; margin: 32px 0 8px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { padding: 2px 10px; border-bottom: 1px solid #eee; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 12px 0 20px; }
figcaption { color: #555; font-size: 13px; }
svg.chart { width: 100%; height: auto; }
svg text { font: 13px system-ui, sans-serif; fill: #222; }
svg text.label { font-size: 14px; }
svg .axis line { stroke: #444; }
svg .axis line.grid { stroke: #e4e4e4; }
svg polyline.series { fill: none; stroke-width: 2; }
";

fn page(r: &Results) -> anyhow::Result<Markup> {
    let figures = serde_json::to_value(r)?;
    let Value::Object(all) = &figures else {
        anyhow::bail!("the results are not a JSON object");
    };
    let known: Vec<&str> = SECTIONS.iter().map(|(k, _)| *k).collect();
    let others = all.iter().filter(|(k, v)| {
        v.is_object() && !known.contains(&k.as_str()) && !HEADER.contains(&k.as_str())
    });
    let run: Vec<(String, Value)> = all
        .iter()
        .filter(|(k, v)| is_scalar(v) && !v.is_null() && !HEADER.contains(&k.as_str()))
        .map(|(k, v)| (label(k), v.clone()))
        .collect();
    Ok(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "alertrelay bench, " (r.machine.started_utc) }
                style { (PreEscaped(STYLE)) }
            }
            body { main {
                h1 { "alertrelay bench" }
                (header(r))
                @for (key, heading) in SECTIONS {
                    @if let Some(v) = all.get(key).filter(|v| !v.is_null()) {
                        section id=(key) {
                            h2 { (heading) }
                            @for chart in charts(r, key) { (chart) }
                            (table(v))
                        }
                    }
                }
                @for (key, v) in others {
                    section id=(key) { h2 { (label(key)) } (table(v)) }
                }
                section id="run" {
                    h2 { "The run" }
                    (rows(run))
                }
            } }
        }
    })
}

/// Machine, build and date.
fn header(r: &Results) -> Markup {
    let m = &r.machine;
    html! {
        p {
            "alertrelay " (m.version) ", " (m.build) " build; started " (m.started_utc) "."
            br;
            (m.cpus) " CPUs (" (m.cpu_model) "), " (svg::number(m.memory_mib as f64))
            " MiB, Linux " (m.kernel) "; 1-minute load " (m.load_start) " at the start, "
            (m.load_end) " at the end."
            br;
            "Nodes: " (r.nodes_in) "; mutual TLS on loopback, durable SQLite (WAL, synchronous=FULL)."
        }
    }
}

/// The charts of a section, for the scenarios that ran.
fn charts(r: &Results, section: &str) -> Vec<Markup> {
    let mut v = Vec::new();
    match section {
        "throughput" => {
            if let Some(t) = &r.throughput {
                v.push(throughput(t));
                v.push(breakdown(r, t));
            }
        }
        "latency" => v.extend(r.latency.as_deref().map(latency)),
        "urgent_lane" => v.extend(r.urgent_lane.as_ref().map(urgent)),
        "drain" => v.extend(r.drain.as_ref().map(drain)),
        "growth" => v.extend(r.growth.as_ref().map(growth)),
        _ => {}
    }
    v
}

/// A chart and its caption.
fn figure(caption: &str, chart: Markup) -> Markup {
    html! { figure { (chart) figcaption { (caption) } } }
}

/// One line or set of dots of an x/y chart.
struct Series {
    name: String,
    xs: Vec<f64>,
    ys: Vec<f64>,
}

/// What an x/y chart shows.
struct Xy<'a> {
    id: &'a str,
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    dots: bool,
}

/// An x/y chart: axes, each series as a line (or dots), and a legend.
fn xy(what: &Xy, plot: &Plot, series: &[Series]) -> Markup {
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    plot.svg(
        what.id,
        what.title,
        html! {
            (plot.x_axis(what.x_label))
            (plot.y_axis(what.y_label))
            @for (i, s) in series.iter().enumerate() {
                @let colour = PALETTE[i % PALETTE.len()];
                @if what.dots { (plot.dots(&s.xs, &s.ys, colour)) }
                @else { (plot.line(&s.xs, &s.ys, colour)) }
            }
            (plot.legend(&names))
        },
    )
}

/// Horizontal bars with their labels and values.
fn bars(id: &str, title: &str, unit: &str, bars: &[(String, f64)]) -> Markup {
    let values: Vec<f64> = bars.iter().map(|(_, v)| *v).collect();
    let plot = Plot::bands(&values);
    plot.svg(
        id,
        title,
        html! { (plot.x_axis(unit)) (plot.bars(bars, unit)) },
    )
}

fn throughput(t: &Throughput) -> Markup {
    let s = &t.series;
    let series = [
        Series {
            name: "committed at the origin".into(),
            xs: s.secs.clone(),
            ys: s.intake_per_sec.clone(),
        },
        Series {
            name: "end to end (receipt stored)".into(),
            xs: s.secs.clone(),
            ys: s.end_to_end_per_sec.clone(),
        },
    ];
    let plot = Plot::xy(
        Axis::linear(s.secs.iter().copied()),
        Axis::linear(series.iter().flat_map(|s| s.ys.iter().copied())),
    );
    let what = Xy {
        id: "chart-throughput",
        title: "Throughput over time",
        x_label: "seconds into the measured window",
        y_label: "reports/s",
        dots: false,
    };
    figure(
        &format!(
            "Reports per second in each {} s interval of the throughput window: committed at the origin, and delivered end to end (the destination's signed receipt stored at the origin), counted by the origin's queue.",
            svg::number(s.interval_secs)
        ),
        xy(&what, &plot, &series),
    )
}

/// CPU per delivered report by thread group, the whole process's, and
/// the ceiling's model of a report when the limits ran.
fn breakdown(r: &Results, t: &Throughput) -> Markup {
    let b = &t.breakdown;
    let mut v = b.cpu_by_group.clone();
    v.push(("whole process".to_owned(), b.cpu_us));
    if let Some(l) = &r.limits {
        v.push((
            "the ceiling's model of a report".to_owned(),
            l.model_us_per_report,
        ));
    }
    let allocations = b.allocations.map_or(String::new(), |a| {
        format!(", {} allocations", svg::number(a))
    });
    figure(
        &format!(
            "Microseconds of CPU per report delivered end to end in the throughput window ({} reports; both nodes and the load in one process), by thread group, against the ceiling's model (1 sign + 1 batch verify + 3 durable writes + 3 streamed messages) when the limits ran. Per report also: {} SQL statements, {} bytes written to storage, {} context switches{}.",
            svg::number(b.reports as f64),
            svg::number(b.statements),
            svg::number(b.written_bytes),
            svg::number(b.context_switches),
            allocations
        ),
        bars(
            "chart-breakdown",
            "Per-report breakdown",
            "µs per report",
            &v,
        ),
    )
}

fn latency(levels: &[LatencyAt]) -> Markup {
    let series: Vec<Series> = levels
        .iter()
        .map(|l| Series {
            name: format!(
                "{:.0}% ({} reports/s)",
                l.fraction * 100.0,
                svg::number(l.offered_per_sec)
            ),
            ys: (0..l.distribution.percentile_ms.len())
                .map(|p| p as f64)
                .collect(),
            xs: l.distribution.percentile_ms.clone(),
        })
        .collect();
    let plot = Plot::xy(
        Axis::log(series.iter().flat_map(|s| s.xs.iter().copied())),
        Axis::fixed(0.0, 100.0, 10.0),
    );
    let what = Xy {
        id: "chart-latency",
        title: "Latency distribution per load level",
        x_label: "submitted → signed receipt stored at the origin, ms (log scale)",
        y_label: "% of reports at or below",
        dots: false,
    };
    figure(
        "The share of single submissions whose receipt was stored within a given time, at each load level: a fraction of the saturated single-submission rate, open loop, timed from each submission's scheduled time.",
        xy(&what, &plot, &series),
    )
}

fn urgent(u: &UrgentLane) -> Markup {
    let s = &u.by_backlog;
    let series = [Series {
        name: "urgent report while the backlog drains".into(),
        xs: s.queued.iter().map(|q| *q as f64).collect(),
        ys: s.latency_ms.clone(),
    }];
    let plot = Plot::xy(
        Axis::linear(series[0].xs.iter().copied().chain([u.backlog as f64])),
        Axis::linear(s.latency_ms.iter().copied()),
    );
    let what = Xy {
        id: "chart-urgent",
        title: "Urgent latency against the backlog waiting",
        x_label: "bulk reports still queued for the peer when submitted",
        y_label: "urgent report → receipt stored, ms",
        dots: true,
    };
    figure(
        &format!(
            "Each urgent report submitted while a backlog of {} bulk reports drained. A flat cloud means urgent latency does not depend on the backlog.",
            svg::number(u.backlog as f64)
        ),
        xy(&what, &plot, &series),
    )
}

fn drain(d: &Drain) -> Markup {
    let series = [Series {
        name: "queued at the origin".into(),
        xs: d.curve.secs.clone(),
        ys: d.curve.queued.iter().map(|q| *q as f64).collect(),
    }];
    let plot = Plot::xy(
        Axis::linear(d.curve.secs.iter().copied()),
        Axis::linear(series[0].ys.iter().copied().chain([d.reports as f64])),
    );
    let what = Xy {
        id: "chart-drain",
        title: "The drain curve",
        x_label: "seconds since the destinations came back",
        y_label: "reports still queued",
        dots: false,
    };
    figure(
        &format!(
            "{} reports queued with the destinations down, then drained at {} reports/s on average: the slope is the drain rate.",
            svg::number(d.reports as f64),
            svg::number(d.drain_per_sec)
        ),
        xy(&what, &plot, &series),
    )
}

fn growth(g: &Growth) -> Markup {
    let v = [
        (
            "end to end, 0 reports stored".to_owned(),
            g.empty.end_to_end_per_sec,
        ),
        (
            format!(
                "end to end, {} reports stored",
                svg::number(g.stored as f64)
            ),
            g.full.end_to_end_per_sec,
        ),
    ];
    figure(
        &format!(
            "Sustained end-to-end throughput on fresh nodes, empty and holding {} delivered reports: ratio {:.2}.",
            svg::number(g.stored as f64),
            g.ratio
        ),
        bars("chart-growth", "Store growth", "reports/s", &v),
    )
}

/// Every figure under `v` in tables: one row per number, string or
/// flag (nested names joined), a table of their own for lists of
/// records (one row each). Lists of numbers are the charts' data and
/// are left out.
fn table(v: &Value) -> Markup {
    let mut rows = Vec::new();
    let mut lists = Vec::new();
    flatten(String::new(), v, &mut rows, &mut lists);
    html! {
        @if !rows.is_empty() { (self::rows(rows)) }
        @for (name, items) in lists { (records(&name, items)) }
    }
}

/// Name/value rows.
fn rows(rows: Vec<(String, Value)>) -> Markup {
    html! {
        table { @for (k, v) in &rows { tr { th { (k) } (cell(v)) } } }
    }
}

/// A list of records: a column per figure of the first.
fn records(name: &str, items: &[Value]) -> Markup {
    let each: Vec<Vec<(String, Value)>> = items
        .iter()
        .map(|item| {
            let mut rows = Vec::new();
            flatten(String::new(), item, &mut rows, &mut Vec::new());
            rows
        })
        .collect();
    let columns: Vec<&String> = each
        .first()
        .map(|r| r.iter().map(|(k, _)| k).collect())
        .unwrap_or_default();
    html! {
        @if !name.is_empty() { h3 { (name) } }
        table {
            tr { @for c in &columns { th { (c) } } }
            @for row in &each {
                tr { @for (_, v) in row { (cell(v)) } }
            }
        }
    }
}

fn cell(v: &Value) -> Markup {
    match v {
        Value::Number(n) => html! { td.n { (svg::number(n.as_f64().unwrap_or(f64::NAN))) } },
        Value::String(s) => html! { td { (s) } },
        Value::Null => html! { td { "—" } },
        other => html! { td { (other.to_string()) } },
    }
}

fn is_scalar(v: &Value) -> bool {
    !(v.is_object() || v.is_array())
}

/// Walks `v`, naming each scalar by its path.
fn flatten<'a>(
    at: String,
    v: &'a Value,
    rows: &mut Vec<(String, Value)>,
    lists: &mut Vec<(String, &'a [Value])>,
) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let name = if at.is_empty() {
                    label(k)
                } else {
                    format!("{at} · {}", label(k))
                };
                flatten(name, x, rows, lists);
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            lists.push((at, items));
        }
        Value::Array(items) => {
            // (label, value) pairs, e.g. a breakdown: a row each.
            for item in items {
                if let [Value::String(name), x] = item.as_array().map_or(&[][..], Vec::as_slice)
                    && is_scalar(x)
                {
                    rows.push((format!("{at} · {name}"), x.clone()));
                }
            }
        }
        scalar => rows.push((at, scalar.clone())),
    }
}

/// A field's name as a heading: words, and units out of the suffixes.
fn label(key: &str) -> String {
    const UNITS: [(&str, &str); 6] = [
        ("_us_per_report", ", µs per report"),
        ("_per_sec", ", /s"),
        ("_secs", ", s"),
        ("_mib", ", MiB"),
        ("_ms", ", ms"),
        ("_us", ", µs"),
    ];
    let (base, unit) = UNITS
        .iter()
        .find_map(|(suffix, unit)| key.strip_suffix(suffix).map(|b| (b, *unit)))
        .unwrap_or((key, ""));
    format!("{}{unit}", base.replace('_', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_as_words_with_their_units() {
        assert_eq!(label("end_to_end_per_sec"), "end to end, /s");
        assert_eq!(label("cpu_us_per_report"), "cpu, µs per report");
        assert_eq!(label("p99_ms"), "p99, ms");
        assert_eq!(label("queued_at_end"), "queued at end");
    }

    #[test]
    fn tables_name_nested_figures_and_leave_out_chart_data() {
        let v = serde_json::json!({
            "a": { "p50_ms": 1.5 },
            "series": { "secs": [0.5, 1.0] },
            "levels": [ { "fraction": 0.25 }, { "fraction": 0.5 } ],
            "breakdown": [ ["sign", 36.0] ],
        });
        let (mut rows, mut lists) = (Vec::new(), Vec::new());
        flatten(String::new(), &v, &mut rows, &mut lists);
        let names: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["a · p50, ms", "breakdown · sign"]);
        assert_eq!(lists.len(), 1);
        assert_eq!(lists[0].0, "levels");
    }
}
