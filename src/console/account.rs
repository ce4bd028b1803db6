//! The person's own account ("my account", every role): their console
//! language (which wins over the browser's) and their password (the
//! current one and a TOTP code required). Through `node::account`, which
//! audits each change and refusal under the person.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::Console;
use super::access::{Person, cookie_of, failure};
use super::pages;
use super::session::COOKIE;
use super::text::{self, Text};
use crate::node::{NodeError, account};

/// The page, with a notice (a change made) or an error (a refusal).
fn render(
    person: &Person,
    text: &'static Text,
    notice: Option<&str>,
    error: Option<&str>,
) -> Markup {
    let chosen = person.language.as_deref().unwrap_or("");
    pages::layout(
        text,
        Some(person),
        text.account,
        html! {
            @if let Some(n) = notice { p.notice role="status" id="account-notice" { (n) } }
            @if let Some(e) = error { p.error role="alert" id="account-error" { (e) } }
            h2 { (text.language) }
            form method="post" action="/account/language" {
                input type="hidden" name="csrf" value=(person.csrf);
                label { (text.language)
                    select name="language" id="language" {
                        option value="" selected[chosen.is_empty()] { (text.browser_language) }
                        @for t in text::ALL {
                            option value=(t.lang) lang=(t.lang) selected[chosen == t.lang] { (t.language_name) }
                        }
                    }
                }
                button type="submit" id="save-language" { (text.save) }
            }
            h2 { (text.change_password) }
            p.note { (text.password_change_note) }
            form method="post" action="/account/password" {
                input type="hidden" name="csrf" value=(person.csrf);
                label { (text.current_password) input type="password" name="current" id="current-password" autocomplete="current-password" required; }
                label { (text.new_password) input type="password" name="new" id="new-password" autocomplete="new-password" minlength="12" required; }
                label { (text.password_again) input type="password" name="new2" id="new-password2" autocomplete="new-password" minlength="12" required; }
                label { (text.totp) input name="totp" id="account-totp" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" required; }
                button type="submit" id="change-password" { (text.change_password) }
            }
        },
    )
}

pub async fn page(person: Person) -> Response {
    render(&person, person.text, None, None).into_response()
}

/// A refusal the person can fix shown on the page itself; others as the
/// console shows any node error.
fn refused(person: &Person, e: NodeError) -> Response {
    match e {
        NodeError::Invalid(_) => {
            let page = render(person, person.text, None, Some(&e.to_string()));
            (StatusCode::BAD_REQUEST, page).into_response()
        }
        e => failure(person.text, Some(person), e),
    }
}

#[derive(serde::Deserialize)]
pub struct LanguageForm {
    // Missing is refused like a wrong token (audited), not as a bad form.
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    language: String,
}

pub async fn language(
    State(console): State<Arc<Console>>,
    person: Person,
    Form(f): Form<LanguageForm>,
) -> Response {
    if let Err(r) = person.check_csrf(&console, &f.csrf).await {
        return r;
    }
    let tags = text::tags();
    match account::set_language(&console.core, &person.who, &f.language, &tags).await {
        Ok(()) => {
            // This very answer is already in the language chosen.
            let chosen = Some(f.language.trim()).filter(|l| !l.is_empty());
            let text = match chosen {
                Some(l) => text::choose(Some(l), None),
                None => person.text,
            };
            let mut person = person;
            person.language = chosen.map(str::to_owned);
            render(&person, text, Some(text.language_saved), None).into_response()
        }
        Err(e) => refused(&person, e),
    }
}

#[derive(serde::Deserialize)]
pub struct PasswordForm {
    // Missing is refused like a wrong token (audited), not as a bad form.
    #[serde(default)]
    csrf: String,
    current: String,
    new: String,
    new2: String,
    totp: String,
}

pub async fn password(
    State(console): State<Arc<Console>>,
    person: Person,
    headers: HeaderMap,
    Form(f): Form<PasswordForm>,
) -> Response {
    if let Err(r) = person.check_csrf(&console, &f.csrf).await {
        return r;
    }
    let text = person.text;
    if f.new != f.new2 {
        let page = render(&person, text, None, Some(text.passwords_differ));
        return (StatusCode::BAD_REQUEST, page).into_response();
    }
    let core = &console.core;
    match account::change_password(core, &person.who, &f.current, &f.totp, &f.new).await {
        Ok(()) => {
            // Whoever else was logged in as this person is logged out.
            if let Some(t) = cookie_of(&headers, COOKIE) {
                console.sessions.remove_others(&person.name, &t);
            }
            render(&person, text, Some(text.password_changed), None).into_response()
        }
        Err(e) => refused(&person, e),
    }
}
