//! The outgoing page: this hotline's reports abroad, newest first — where
//! each went and where it is (delivery per destination, relays), its
//! signed receipt, the receiving hotline's status and the time from the
//! report to its removal. The read is audited under the person, as
//! `ListCases` does.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::Console;
use super::access::{Person, failure};
use super::pages::{age, layout};
use crate::node::cases::{self, CaseView};
use crate::node::{Core, NodeError};
use crate::report::view::visible;

/// Reports shown on one page.
const PAGE: i64 = 200;

async fn sent(core: &Core, person: &Person) -> Result<Vec<CaseView>, NodeError> {
    let filter = crate::store::CaseFilter {
        direction: Some("outgoing"),
        limit: PAGE,
        ..Default::default()
    };
    let mut list = cases::list(core, &filter).await?;
    list.sort_by_key(|c| std::cmp::Reverse(c.created_at_ms));
    cases::audit_read(
        core,
        &person.who,
        "case.read",
        String::new(),
        serde_json::json!({
            "via": "console",
            "page": "outgoing",
            "filter": {"direction": "outgoing"},
            "count": list.len(),
            "cases": list.iter().map(cases::subject).collect::<Vec<_>>(),
        }),
    )
    .await?;
    Ok(list)
}

/// Milliseconds since the epoch of an RFC 3339 time the node wrote.
fn ms(at: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// From the report to the receiver's first `removed`, if it came.
pub fn time_to_takedown(c: &CaseView) -> Option<i64> {
    c.history
        .iter()
        .filter(|h| h.status == "removed")
        .filter_map(|h| ms(&h.at))
        .min()
        .map(|at| at - c.created_at_ms)
}

fn row(t: &super::text::Text, c: &CaseView, now_ms: i64) -> Markup {
    html! {
        tr {
            td { a href={ "/case/" (c.origin) "/" (c.id) } { (c.id) } }
            td { (age(now_ms - c.created_at_ms)) }
            td { (c.category) " " @if c.priority == "urgent" { span.flag { (c.priority) } } }
            td { (c.hosting_country.as_deref().unwrap_or("")) }
            td.place {
                @for d in &c.deliveries {
                    div { (d.destination) ": " (d.state)
                        @if let Some(hop) = &d.next_hop { " " (t.via) " " (hop) }
                        @if !d.last_error.is_empty() && d.state == "queued" { " — " span.note { (visible(&d.last_error)) } } }
                }
            }
            td { @for d in c.deliveries.iter().filter(|d| d.receipt.is_some()) {
                div { "✓ " (d.destination) " " (d.delivered_at.as_deref().unwrap_or("")) }
            } }
            td.status { (c.status) }
            td { @if let Some(ms) = time_to_takedown(c) { (age(ms)) } @else { "—" } }
        }
    }
}

pub fn page(person: &Person, list: &[CaseView], now_ms: i64) -> Markup {
    let t = person.text;
    layout(
        t,
        Some(person),
        t.outgoing,
        html! {
            p { (t.outgoing_intro) }
            table id="outgoing" {
                thead { tr {
                    th { (t.case) } th { (t.age) } th { (t.category) } th { (t.country) }
                    th { (t.where_it_is) } th { (t.receipt) } th { (t.status) } th { (t.time_to_takedown) }
                } }
                tbody { @for c in list { (row(t, c, now_ms)) } }
            }
            @if list.is_empty() { p id="empty" { (t.no_cases) } }
        },
    )
}

pub async fn show(State(console): State<Arc<Console>>, person: Person) -> Response {
    match sent(&console.core, &person).await {
        Ok(list) => page(&person, &list, Core::now_ms()).into_response(),
        Err(e) => failure(person.text, Some(&person), e),
    }
}
