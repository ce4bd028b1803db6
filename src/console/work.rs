//! The analyst's work: the queue of incoming cases (with new ones pushed
//! live as server-sent events), a case, and its status changes. Every read
//! is audited under the person before anything is shown, as the Operator
//! service does.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};

use super::Console;
use super::access::{Person, failure};
use super::pages::{self, QueueFilter};
use crate::identity::Role;
use crate::node::cases::{self, CaseView};
use crate::node::{Core, NodeError};
use crate::report::{CaseStatus, Category, InvalidInput};

/// Cases shown on one queue page.
const PAGE: i64 = 200;

/// Whether a case still waits for work here.
fn open(c: &CaseView) -> bool {
    CaseStatus::parse(&c.status).is_ok_and(|s| !s.next().is_empty())
}

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
    let mut list = cases::list(core, &filter).await?;
    if f.status.is_empty() {
        list.retain(open);
    }
    list.sort_by_key(|c| (c.priority != "urgent", c.created_at_ms));
    cases::audit_read(
        core,
        &person.who,
        "case.read",
        String::new(),
        serde_json::json!({
            "via": "console",
            "page": "queue",
            "filter": {"category": filter.category, "status": filter.status},
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
            pages::queue(&person, &list, &f, &categories, Core::now_ms()).into_response()
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

fn case_id(origin: &str, id: &str) -> String {
    format!("{origin}/{id}")
}

/// One case, its read audited before it is shown.
async fn read(core: &Core, person: &Person, id: &str) -> Result<CaseView, NodeError> {
    let case = cases::get(core, id).await?;
    cases::audit_read(
        core,
        &person.who,
        "case.read",
        cases::subject(&case),
        serde_json::json!({"via": "console", "page": "case"}),
    )
    .await?;
    Ok(case)
}

pub async fn case(
    State(console): State<Arc<Console>>,
    person: Person,
    Path((origin, id)): Path<(String, String)>,
) -> Response {
    match read(&console.core, &person, &case_id(&origin, &id)).await {
        Ok(c) => pages::case(&person, &c, None).into_response(),
        Err(e) => failure(person.text, Some(&person), e),
    }
}

#[derive(serde::Deserialize)]
pub struct StatusForm {
    // Missing is refused like a wrong token (audited), not as a bad form.
    #[serde(default)]
    csrf: String,
    status: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    agency: String,
    #[serde(default)]
    reference: String,
}

/// A status change, through the node's `cases::update` as `UpdateCase`
/// does; back to the case page.
pub async fn update(
    State(console): State<Arc<Console>>,
    person: Person,
    Path((origin, id)): Path<(String, String)>,
    Form(f): Form<StatusForm>,
) -> Response {
    if let Err(r) = person.check_csrf(&console, &f.csrf).await {
        return r;
    }
    if let Err(r) = person.require(&console, Role::Analyst).await {
        return r;
    }
    let id = case_id(&origin, &id);
    let referral = cases::Referral {
        agency: &f.agency,
        reference: &f.reference,
        referred_at_ms: 0,
    };
    match cases::update(
        &console.core,
        &person.who,
        &id,
        &f.status,
        &f.reason,
        &referral,
    )
    .await
    {
        Ok(_) => Redirect::to(&format!("/case/{id}")).into_response(),
        Err(e @ (NodeError::Invalid(_) | NodeError::FailedPrecondition(_))) => {
            match read(&console.core, &person, &id).await {
                Ok(c) => (
                    axum::http::StatusCode::CONFLICT,
                    pages::case(&person, &c, Some(&e.to_string())),
                )
                    .into_response(),
                Err(e) => failure(person.text, Some(&person), e),
            }
        }
        Err(e) => failure(person.text, Some(&person), e),
    }
}
