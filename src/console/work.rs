//! The analyst's queue of incoming cases, with new ones pushed live as
//! server-sent events. Every read is audited under the person before
//! anything is shown, as the Operator service does.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::Console;
use super::access::{Person, failure};
use super::pages::{self, QueueFilter};
use crate::node::cases::{self, CaseView};
use crate::node::{Core, NodeError};
use crate::report::{CaseStatus, Category, InvalidInput};

/// Cases shown on one queue page.
const PAGE: i64 = 200;

fn check_filter(f: &QueueFilter) -> Result<(), NodeError> {
    if !f.category.is_empty() {
        Category::parse(&f.category)
            .map_err(|e| InvalidInput::new("bad-filter", "category", e.message))?;
    }
    if !f.status.is_empty() {
        CaseStatus::parse(&f.status)
            .map_err(|_| InvalidInput::new("bad-filter", "status", "is not a case status"))?;
    }
    Ok(())
}

/// The incoming cases the filter selects, urgent first then oldest
/// (final ones only when asked for by status), with the read audited.
async fn waiting(
    core: &Core,
    person: &Person,
    f: &QueueFilter,
) -> Result<Vec<CaseView>, NodeError> {
    check_filter(f)?;
    let filter = crate::store::CaseFilter {
        direction: Some("incoming"),
        status: (!f.status.is_empty()).then_some(f.status.as_str()),
        category: (!f.category.is_empty()).then_some(f.category.as_str()),
        priority: None,
        peer: None,
        created_after_ms: None,
        family: None,
        limit: PAGE,
    };
    // The open queue a page at a time from its index; a status asked for
    // (final ones too) from the case list.
    let mut list = if f.status.is_empty() {
        cases::queue(core, filter.category, i64::from(f.page), PAGE).await?
    } else {
        cases::list(core, &filter).await?
    };
    list.sort_by_key(|c| (c.priority != "urgent", c.created_at_ms));
    cases::audit_read(
        core,
        &person.who,
        "case.read",
        String::new(),
        serde_json::json!({
            "via": "console",
            "page": "queue",
            "filter": {"category": filter.category, "status": filter.status, "page": f.page},
            "count": list.len(),
            "cases": list.iter().map(cases::subject).collect::<Vec<_>>(),
        }),
    )
    .await?;
    Ok(list)
}

pub async fn queue(
    State(console): State<Arc<Console>>,
    person: Person,
    Query(f): Query<QueueFilter>,
) -> Response {
    match waiting(&console.core, &person, &f).await {
        Ok(list) => {
            let categories: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
            let page = (Core::now_ms(), PAGE as usize);
            pages::queue(&person, &list, &f, &categories, page).into_response()
        }
        Err(e) => failure(person.text, Some(&person), e),
    }
}

/// What a live queue update carries: what a queue row shows.
fn row_json(c: &CaseView) -> serde_json::Value {
    serde_json::json!({
        "case": cases::subject(c),
        "href": format!("/case/{}/{}", c.origin, c.id),
        "priority": c.priority,
        "category": c.category,
        "country": c.hosting_country,
        "network": c.route.as_ref().filter(|r| r.asn != 0).map(|r| format!("AS{} {}", r.asn, r.org)),
        "origin": c.origin,
        "status": c.status,
    })
}

/// New and changed incoming cases as server-sent events (`case`), for the
/// queue page's script. Audited once when it opens, like `WatchCases`.
pub async fn events(State(console): State<Arc<Console>>, person: Person) -> Response {
    let core = console.core.clone();
    if let Err(e) = cases::audit_read(
        &core,
        &person.who,
        "case.read",
        String::new(),
        serde_json::json!({"via": "console", "page": "events", "filter": {"direction": "incoming"}}),
    )
    .await
    {
        return failure(person.text, Some(&person), e);
    }
    let mut changes = core.case_events.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        // Ends when the browser goes (send fails) or it fell behind.
        while let Ok(seq) = changes.recv().await {
            let Ok(case) = cases::view_by_seq(&core, seq).await else {
                continue;
            };
            if case.direction != "incoming" {
                continue;
            }
            let event = Event::default()
                .event("case")
                .data(row_json(&case).to_string());
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}
