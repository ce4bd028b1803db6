//! The submit page: a form for a new report; the route it would get, with
//! its evidence, previewed (`route::route_preview`, as the `Route` call and
//! `alertrelay route` do) before the analyst confirms; then the report
//! submitted through `intake::submit` (as `SubmitReport`), once whatever
//! the browser resends (the preview's submission id is its idempotency
//! key). Nothing is stored or sent before the confirmation.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::Console;
use super::access::{Person, failure};
use super::case::parse_hashes;
use super::case_page::route_evidence;
use super::pages::layout;
use crate::identity::Role;
use crate::node::{NodeError, intake, route};
use crate::report::view::{RouteView, visible};
use crate::report::{Category, Classification, Priority, validate::Submission};

/// The report as typed.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct ReportForm {
    // Missing is refused like a wrong token (audited), not as a bad form.
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    urls: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    classification: String,
    #[serde(default)]
    hosting_ip: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    hashes: String,
    #[serde(default)]
    notes: String,
    /// Set by the preview: the idempotency key of the confirmation.
    #[serde(default)]
    submission_id: String,
}

impl ReportForm {
    fn urls(&self) -> Vec<String> {
        self.urls
            .lines()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

fn select(name: &str, id: &str, values: &[&str], chosen: &str) -> Markup {
    html! {
        select name=(name) id=(id) {
            @for v in values { option value=(v) selected[*v == chosen] { (v) } }
        }
    }
}

/// The report's fields, as a form to fill in (or as typed, to change).
fn fields(person: &Person, f: &ReportForm) -> Markup {
    let t = person.text;
    let categories: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
    let classes: Vec<&str> = Classification::ALL.iter().map(|c| c.as_str()).collect();
    let priorities: Vec<&str> = Priority::ALL.iter().map(|c| c.as_str()).collect();
    html! {
        form.report method="post" action="/submit/preview" {
            input type="hidden" name="csrf" value=(person.csrf);
            label { (t.urls_field) textarea name="urls" id="urls" rows="4" required autofocus { (f.urls) } }
            div.row {
                label { (t.category) (select("category", "category", &categories, &f.category)) }
                label { (t.classification) (select("classification", "classification", &classes, &f.classification)) }
                label { (t.priority) (select("priority", "priority", &priorities, &f.priority)) }
            }
            label { (t.hosting_ip) " " span.note { (t.optional) } input name="hosting_ip" id="hosting-ip" value=(f.hosting_ip) maxlength="64"; }
            label { (t.hashes_field) " " span.note { (t.optional) } input name="hashes" id="hashes" value=(f.hashes) maxlength="4096"; }
            label { (t.notes) " " span.note { (t.optional) } textarea name="notes" id="notes" rows="3" maxlength="4096" { (f.notes) } }
            button type="submit" id="preview" { (t.preview_route) }
        }
    }
}

/// The preview: the route and its evidence, and the confirmation form
/// that sends exactly what was previewed.
fn preview(person: &Person, f: &ReportForm, r: &RouteView) -> Markup {
    let t = person.text;
    html! {
        section.preview id="route-preview" {
            h2 { (t.route) }
            p.note { (t.preview_note) }
            (route_evidence(t, r))
            form method="post" action="/submit" {
                input type="hidden" name="csrf" value=(person.csrf);
                @for (name, value) in [("urls", &f.urls), ("category", &f.category),
                    ("classification", &f.classification), ("hosting_ip", &f.hosting_ip),
                    ("priority", &f.priority), ("hashes", &f.hashes), ("notes", &f.notes),
                    ("submission_id", &f.submission_id)] {
                    input type="hidden" name=(name) value=(value);
                }
                button type="submit" id="send" { (t.send_report) " → " (r.destinations.join(", ")) }
            }
        }
    }
}

fn page(person: &Person, f: &ReportForm, route: Option<&RouteView>, error: Option<&str>) -> Markup {
    let t = person.text;
    layout(
        t,
        Some(person),
        t.submit,
        html! {
            p { (t.submit_intro) }
            @if let Some(e) = error { p.error role="alert" id="error" { (visible(e)) } }
            (fields(person, f))
            @if let Some(r) = route { (preview(person, f, r)) }
        },
    )
}

pub async fn form(State(console): State<Arc<Console>>, person: Person) -> Response {
    if let Err(r) = person.require(&console, Role::Analyst).await {
        return r;
    }
    let f = ReportForm {
        category: "csam".into(),
        priority: "bulk".into(),
        classification: "baseline".into(),
        ..ReportForm::default()
    };
    page(&person, &f, None, None).into_response()
}

/// A refusal shown on the form, with what was typed.
fn refused(person: &Person, f: &ReportForm, e: NodeError) -> Response {
    match e {
        NodeError::Invalid(_) | NodeError::FailedPrecondition(_) => (
            StatusCode::BAD_REQUEST,
            page(person, f, None, Some(&e.to_string())),
        )
            .into_response(),
        e => failure(person.text, Some(person), e),
    }
}

pub async fn preview_route(
    State(console): State<Arc<Console>>,
    person: Person,
    Form(mut f): Form<ReportForm>,
) -> Response {
    if let Err(r) = person.check_csrf(&console, &f.csrf).await {
        return r;
    }
    if let Err(r) = person.require(&console, Role::Analyst).await {
        return r;
    }
    let decided = route::route_preview(
        &console.core,
        &f.urls(),
        f.hosting_ip.trim(),
        &f.category,
        &f.classification,
    )
    .await;
    match decided {
        Ok(d) => {
            let view = crate::wire::route::route_view_from_pb(&crate::wire::route::route_to_pb(&d));
            f.submission_id = super::session::token();
            page(&person, &f, Some(&view), None).into_response()
        }
        Err(e) => refused(&person, &f, e),
    }
}

pub async fn send(
    State(console): State<Arc<Console>>,
    person: Person,
    Form(f): Form<ReportForm>,
) -> Response {
    if let Err(r) = person.check_csrf(&console, &f.csrf).await {
        return r;
    }
    if let Err(r) = person.require(&console, Role::Analyst).await {
        return r;
    }
    let hashes = match parse_hashes(&f.hashes) {
        Ok(h) => h,
        Err(e) => {
            let who = person.who.to_string();
            console
                .core
                .audit_refusal(&who, e.code, &e.to_string(), f.hashes.as_bytes())
                .await;
            return refused(&person, &f, e.into());
        }
    };
    let urls = f.urls();
    let submission = Submission {
        urls: &urls,
        category: &f.category,
        hosting_ip: f.hosting_ip.trim(),
        priority: Priority::parse(&f.priority).ok(),
        notes: &f.notes,
        hashes,
        classification: &f.classification,
    };
    match intake::submit(&console.core, &person.who, submission, &f.submission_id).await {
        Ok(done) => {
            Redirect::to(&format!("/case/{}/{}", console.core.me, done.report_id)).into_response()
        }
        Err(e) => refused(&person, &f, e),
    }
}
