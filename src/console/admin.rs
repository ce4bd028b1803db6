//! The users page (admin): every account, adding one (its one-time
//! enrolment code shown once), and disable, reset, unlock. Through the
//! node's `users` functions, as the `ManageUsers` call does.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::Console;
use super::access::{Person, failure};
use super::pages;
use crate::identity::Role;
use crate::node::users::{self, Change, Enrolment};

async fn show(console: &Console, person: &Person, enrolment: Option<&Enrolment>) -> Response {
    match users::list(&console.core, &person.who).await {
        Ok(list) => pages::users(person, &list, enrolment).into_response(),
        Err(e) => failure(person.text, Some(person), e),
    }
}

pub async fn page(State(console): State<Arc<Console>>, person: Person) -> Response {
    if let Err(r) = person.require(&console, Role::Admin).await {
        return r;
    }
    show(&console, &person, None).await
}

#[derive(serde::Deserialize)]
pub struct AddForm {
    // Missing is refused like a wrong token (audited), not as a bad form.
    #[serde(default)]
    csrf: String,
    name: String,
    role: String,
}

pub async fn add(
    State(console): State<Arc<Console>>,
    person: Person,
    Form(f): Form<AddForm>,
) -> Response {
    if let Err(r) = person.check_csrf(&console, &f.csrf).await {
        return r;
    }
    if let Err(r) = person.require(&console, Role::Admin).await {
        return r;
    }
    match users::add(&console.core, &person.who, &f.name, &f.role).await {
        Ok(e) => show(&console, &person, Some(&e)).await,
        Err(e) => failure(person.text, Some(&person), e),
    }
}

#[derive(serde::Deserialize)]
pub struct ChangeForm {
    // Missing is refused like a wrong token (audited), not as a bad form.
    #[serde(default)]
    csrf: String,
}

pub async fn change(
    State(console): State<Arc<Console>>,
    person: Person,
    Path((name, action)): Path<(String, String)>,
    Form(f): Form<ChangeForm>,
) -> Response {
    if let Err(r) = person.check_csrf(&console, &f.csrf).await {
        return r;
    }
    if let Err(r) = person.require(&console, Role::Admin).await {
        return r;
    }
    let core = &console.core;
    let done = match action.as_str() {
        "disable" => users::change(core, &person.who, &name, Change::Disable)
            .await
            .map(|_| None),
        "unlock" => users::change(core, &person.who, &name, Change::Unlock)
            .await
            .map(|_| None),
        "reset" => users::reset(core, &person.who, &name).await.map(Some),
        _ => {
            return failure(
                person.text,
                Some(&person),
                crate::node::NodeError::NotFound("no such action".into()),
            );
        }
    };
    match done {
        Ok(enrolment) => {
            if action != "unlock" {
                // A disabled or reset account's open sessions end now.
                console.sessions.remove_person(&name);
            }
            show(&console, &person, enrolment.as_ref()).await
        }
        Err(e) => failure(person.text, Some(&person), e),
    }
}
