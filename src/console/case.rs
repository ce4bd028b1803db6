//! A case: its page (the read audited under the person before anything is
//! shown) and its actions, each through the node function the Operator
//! service calls for it: `cases::update` (UpdateCase), `second::propose`
//! and `second::reject` (a not-illegal close that needs a second person),
//! `handoff::hand_off` (HandOffCase), `amend::amend` (RetractReport,
//! CorrectReport). A refused action shows the case again with the node's
//! message.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};

use super::Console;
use super::access::{Person, failure};
use super::case_page::{self, CasePage};
use crate::identity::Role;
use crate::node::cases::{self, CaseView};
use crate::node::{Core, NodeError, amend, handoff, second, signatures};
use crate::report::{Category, InvalidInput, MediaHash};

fn case_id(origin: &str, id: &str) -> String {
    format!("{origin}/{id}")
}

/// One case, its read audited before it is shown.
pub async fn read(core: &Core, person: &Person, id: &str) -> Result<CaseView, NodeError> {
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

/// The hotlines a case may be handed to: every active node but this one.
fn peers(core: &Core) -> Vec<String> {
    core.directory()
        .nodes()
        .iter()
        .filter(|n| n.active && n.id != core.me)
        .map(|n| n.id.to_string())
        .collect()
}

/// The case page of `id` (read and audited), with `error` shown above it.
async fn page(
    console: &Console,
    person: &Person,
    id: &str,
    error: Option<&str>,
) -> Result<maud::Markup, NodeError> {
    let core = &console.core;
    let c = read(core, person, id).await?;
    let signatures = signatures::of_case(core, id).await?;
    let proposal = second::pending(core, &c).await?;
    let categories: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
    Ok(case_page::case(
        person,
        &CasePage {
            case: &c,
            signatures: &signatures,
            proposal: proposal.as_ref(),
            second_person: second::needed(core, crate::report::CaseStatus::NotIllegal),
            peers: &peers(core),
            me: core.me.as_str(),
            categories: &categories,
            error,
        },
    ))
}

pub async fn show(
    State(console): State<Arc<Console>>,
    person: Person,
    Path((origin, id)): Path<(String, String)>,
) -> Response {
    match page(&console, &person, &case_id(&origin, &id), None).await {
        Ok(p) => p.into_response(),
        Err(e) => failure(person.text, Some(&person), e),
    }
}

/// After an action: back to the case page, or the case again with the
/// node's reason (409) when it refused the action.
async fn after(
    console: &Console,
    person: &Person,
    id: &str,
    done: Result<CaseView, NodeError>,
) -> Response {
    match done {
        Ok(_) => Redirect::to(&format!("/case/{id}")).into_response(),
        Err(e @ (NodeError::Invalid(_) | NodeError::FailedPrecondition(_))) => {
            match page(console, person, id, Some(&e.to_string())).await {
                Ok(p) => (axum::http::StatusCode::CONFLICT, p).into_response(),
                Err(e) => failure(person.text, Some(person), e),
            }
        }
        Err(e) => failure(person.text, Some(person), e),
    }
}

/// The checks every action's form passes first: its CSRF token, and the
/// person may work cases.
async fn allowed(console: &Console, person: &Person, csrf: &str) -> Result<(), Response> {
    person.check_csrf(console, csrf).await?;
    person.require(console, Role::Analyst).await
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

/// A status change (or the confirmation of a proposed close), through
/// `cases::update` as `UpdateCase` does.
pub async fn update(
    State(console): State<Arc<Console>>,
    person: Person,
    Path((origin, id)): Path<(String, String)>,
    Form(f): Form<StatusForm>,
) -> Response {
    if let Err(r) = allowed(&console, &person, &f.csrf).await {
        return r;
    }
    let id = case_id(&origin, &id);
    let referral = cases::Referral {
        agency: &f.agency,
        reference: &f.reference,
        referred_at_ms: 0,
    };
    let done = cases::update(
        &console.core,
        &person.who,
        &id,
        &f.status,
        &f.reason,
        &referral,
    )
    .await;
    after(&console, &person, &id, done).await
}

#[derive(serde::Deserialize)]
pub struct ProposeForm {
    #[serde(default)]
    csrf: String,
    status: String,
    #[serde(default)]
    reason: String,
}

/// Proposes a close that needs a second person.
pub async fn propose(
    State(console): State<Arc<Console>>,
    person: Person,
    Path((origin, id)): Path<(String, String)>,
    Form(f): Form<ProposeForm>,
) -> Response {
    if let Err(r) = allowed(&console, &person, &f.csrf).await {
        return r;
    }
    let id = case_id(&origin, &id);
    let done = second::propose(&console.core, &person.who, &id, &f.status, &f.reason).await;
    after(&console, &person, &id, done).await
}

#[derive(serde::Deserialize)]
pub struct ReasonForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// Rejects (a supervisor) or withdraws (its proposer) a proposed close.
pub async fn reject(
    State(console): State<Arc<Console>>,
    person: Person,
    Path((origin, id)): Path<(String, String)>,
    Form(f): Form<ReasonForm>,
) -> Response {
    if let Err(r) = allowed(&console, &person, &f.csrf).await {
        return r;
    }
    let id = case_id(&origin, &id);
    let done = second::reject(&console.core, &person.who, &id, &f.reason).await;
    after(&console, &person, &id, done).await
}

#[derive(serde::Deserialize)]
pub struct HandOffForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    hosting_ip: String,
    #[serde(default)]
    reason: String,
}

/// Hands the case over to another hotline, as `HandOffCase` does.
pub async fn hand_off(
    State(console): State<Arc<Console>>,
    person: Person,
    Path((origin, id)): Path<(String, String)>,
    Form(f): Form<HandOffForm>,
) -> Response {
    if let Err(r) = allowed(&console, &person, &f.csrf).await {
        return r;
    }
    let id = case_id(&origin, &id);
    let done = handoff::hand_off(
        &console.core,
        &person.who,
        &id,
        f.to.trim(),
        f.hosting_ip.trim(),
        &f.reason,
    )
    .await;
    after(&console, &person, &id, done).await
}

/// Retracts a report this hotline sent, as `RetractReport` does.
pub async fn retract(
    State(console): State<Arc<Console>>,
    person: Person,
    Path((origin, id)): Path<(String, String)>,
    Form(f): Form<ReasonForm>,
) -> Response {
    if let Err(r) = allowed(&console, &person, &f.csrf).await {
        return r;
    }
    let id = case_id(&origin, &id);
    let done = amend::amend(
        &console.core,
        &person.who,
        &id,
        amend::Change::Retract,
        &f.reason,
    )
    .await;
    after(&console, &person, &id, done).await
}

#[derive(serde::Deserialize)]
pub struct CorrectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    notes: String,
    #[serde(default)]
    hashes: String,
    #[serde(default)]
    reason: String,
}

/// Hashes as typed: `ALGORITHM:VALUE`, separated by spaces, commas or
/// line breaks. The node checks each against its algorithm.
pub fn parse_hashes(text: &str) -> Result<Vec<MediaHash>, InvalidInput> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|h| !h.is_empty())
        .map(|h| {
            h.split_once(':')
                .map(|(a, v)| MediaHash {
                    algorithm: a.to_owned(),
                    value: v.to_owned(),
                })
                .ok_or_else(|| InvalidInput::new("bad-hash", "hashes", "each as ALGORITHM:VALUE"))
        })
        .collect()
}

/// Corrects a report this hotline sent, as `CorrectReport` does.
pub async fn correct(
    State(console): State<Arc<Console>>,
    person: Person,
    Path((origin, id)): Path<(String, String)>,
    Form(f): Form<CorrectForm>,
) -> Response {
    if let Err(r) = allowed(&console, &person, &f.csrf).await {
        return r;
    }
    let id = case_id(&origin, &id);
    let done = match parse_hashes(&f.hashes) {
        Ok(hashes) => {
            let change = amend::Change::Correct {
                category: f.category.clone(),
                hashes,
                notes: f.notes.clone(),
            };
            amend::amend(&console.core, &person.who, &id, change, &f.reason).await
        }
        Err(e) => {
            let core = &console.core;
            let who = person.who.to_string();
            core.audit_refusal(&who, e.code, &e.to_string(), f.hashes.as_bytes())
                .await;
            Err(e.into())
        }
    };
    after(&console, &person, &id, done).await
}
