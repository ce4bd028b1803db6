//! The statistics page: time to takedown (`node::stats`, as the `Stats`
//! call and `alertrelay stats` compute it) per destination, hosting
//! country and category, and weekly trends, as tables and as SVG charts
//! drawn here on the server (no script, no external library).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::Console;
use super::access::{Person, failure};
use super::pages::{age, layout};
use super::text::Text;
use crate::node::stats::{self, Row, Week};
use crate::report::view::visible;

/// Weeks in the trend chart.
const WEEKS: usize = 12;

/// A horizontal bar chart: one bar per label, the median, and a thin bar
/// to the 90th percentile.
fn bars(id: &str, rows: &[&Row]) -> Markup {
    let max = rows
        .iter()
        .map(|r| r.p90_ms.max(r.p50_ms))
        .max()
        .unwrap_or(0)
        .max(1);
    let (label_w, bar_w, row_h) = (140.0, 360.0, 24.0);
    let height = row_h * rows.len() as f64 + 8.0;
    let scale = |ms: i64| bar_w * ms as f64 / max as f64;
    html! {
        svg.chart id=(id) role="img" width="600" height=(height) viewBox={ "0 0 600 " (height) } xmlns="http://www.w3.org/2000/svg" {
            @for (i, r) in rows.iter().enumerate() {
                @let y = i as f64 * row_h + 4.0;
                text x="0" y=(y + 15.0) font-size="12" fill="#1b1f24" { (visible(&r.key)) }
                rect x=(label_w) y=(y + 9.0) width=(scale(r.p90_ms)) height="4" fill="#9db7d5" {}
                rect.bar x=(label_w) y=(y + 2.0) width=(scale(r.p50_ms)) height="10" fill="#0b5394" {
                    title { (visible(&r.key)) ": " (age(r.p50_ms)) " / " (age(r.p90_ms)) }
                }
                text x=(label_w + scale(r.p90_ms.max(r.p50_ms)) + 6.0) y=(y + 13.0) font-size="11" fill="#5b6470" { (age(r.p50_ms)) " · " (age(r.p90_ms)) }
            }
        }
    }
}

/// The weekly trend: reports sent (bars) and the median time to removal
/// (a line with points), oldest week on the left.
fn trend(t: &Text, weeks: &[Week]) -> Markup {
    let (w, h, left, bottom) = (600.0, 200.0, 40.0, 24.0);
    let n = weeks.len().max(1) as f64;
    let step = (w - left) / n;
    let most = weeks.iter().map(|x| x.sent).max().unwrap_or(0).max(1) as f64;
    let slowest = weeks
        .iter()
        .map(|x| x.p50_removal_ms)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let plot = h - bottom - 10.0;
    let points: Vec<String> = weeks
        .iter()
        .enumerate()
        .filter(|(_, x)| x.removed > 0)
        .map(|(i, x)| {
            let cx = left + step * (i as f64 + 0.5);
            let cy = 10.0 + plot - plot * x.p50_removal_ms as f64 / slowest;
            format!("{cx:.1},{cy:.1}")
        })
        .collect();
    html! {
        svg.chart id="weekly" role="img" width="600" height="200" viewBox="0 0 600 200" xmlns="http://www.w3.org/2000/svg" {
            title { (t.weekly) }
            line x1=(left) y1=(h - bottom) x2=(w) y2=(h - bottom) stroke="#5b6470" {}
            text x="0" y="16" font-size="11" fill="#5b6470" { (most as u64) }
            @for (i, x) in weeks.iter().enumerate() {
                @let bh = plot * x.sent as f64 / most;
                rect.week x=(left + step * i as f64 + 4.0) y=(h - bottom - bh) width=(step - 8.0) height=(bh) fill="#9db7d5" {
                    title { (crate::report::view::rfc3339(x.start_ms)) ": " (x.sent) " / " (x.removed) }
                }
                text x=(left + step * i as f64 + 4.0) y=(h - 6.0) font-size="10" fill="#5b6470" {
                    (crate::report::view::rfc3339(x.start_ms).get(5..10).unwrap_or(""))
                }
            }
            @if points.len() > 1 {
                polyline points=(points.join(" ")) fill="none" stroke="#a61b1b" stroke-width="2" {}
            }
            @for p in &points {
                @let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
                circle cx=(cx) cy=(cy) r="3" fill="#a61b1b" {}
            }
        }
        p.note { (t.weekly_legend) }
    }
}

/// One dimension's table and chart, for the removal milestone.
fn dimension(t: &Text, rows: &[Row], dim: &str, title: &str) -> Markup {
    let mut of: Vec<&Row> = rows
        .iter()
        .filter(|r| r.dimension == dim && r.milestone == "removal")
        .collect();
    of.sort_by_key(|r| std::cmp::Reverse(r.p50_ms));
    html! {
        h2 { (title) }
        @if of.is_empty() { p.note { (t.no_data) } } @else {
            (bars(&format!("by-{dim}"), &of))
            table.stats id={ "table-" (dim) } {
                thead { tr { th { (title) } th { (t.removed_count) } th { (t.median) } th { "p90" } } }
                tbody { @for r in &of { tr {
                    td { (visible(&r.key)) } td { (r.count) " / " (r.of) } td { (age(r.p50_ms)) } td { (age(r.p90_ms)) }
                } } }
            }
        }
    }
}

pub fn page(person: &Person, rows: &[Row], weeks: &[Week]) -> Markup {
    let t = person.text;
    layout(
        t,
        Some(person),
        t.statistics,
        html! {
            p { (t.statistics_intro) }
            h2 { (t.weekly) }
            (trend(t, weeks))
            (dimension(t, rows, "destination", t.destination))
            (dimension(t, rows, "country", t.country))
            (dimension(t, rows, "category", t.category))
        },
    )
}

pub async fn show(State(console): State<Arc<Console>>, person: Person) -> Response {
    let core = &console.core;
    let computed = async {
        let rows = stats::compute(core, stats::DEFAULT_WINDOW_MS).await?;
        let weeks = stats::weekly(core, WEEKS).await?;
        Ok::<_, crate::node::NodeError>((rows, weeks))
    }
    .await;
    match computed {
        Ok((rows, weeks)) => page(&person, &rows, &weeks).into_response(),
        Err(e) => failure(person.text, Some(&person), e),
    }
}
