//! Logging in (password and TOTP code), logging out, and enrolment (an
//! enrolment code and a new password, then the authenticator's first
//! code). Before a session exists, forms carry a token bound to a
//! short-lived cookie of their own (login CSRF).

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::Console;
use super::access::{Lang, Person, cookie_of, failure};
use super::pages;
use super::session::{self, COOKIE, PRE_COOKIE};
use crate::node::users::{self, LoginError};

/// The pre-session token of this browser, and the header that sets it
/// when it had none.
fn pre_token(headers: &HeaderMap) -> (String, Option<String>) {
    match cookie_of(headers, PRE_COOKIE) {
        Some(t) if t.len() == 43 => (t, None),
        _ => {
            let t = session::token();
            let set = session::set_cookie(PRE_COOKIE, &t, Some(3600));
            (t, Some(set))
        }
    }
}

fn with_cookie(set: Option<String>, page: impl IntoResponse) -> Response {
    let mut res = page.into_response();
    if let Some(c) = set
        && let Ok(v) = c.parse()
    {
        res.headers_mut().append(SET_COOKIE, v);
    }
    res
}

/// Whether a pre-session form's token is this browser's.
fn pre_ok(headers: &HeaderMap, given: &str) -> bool {
    cookie_of(headers, PRE_COOKIE).is_some_and(|t| session::same(&t, given))
}

#[derive(serde::Deserialize, Default)]
pub struct LoginQuery {
    #[serde(default)]
    ended: Option<String>,
    #[serde(default)]
    enrolled: Option<String>,
}

pub async fn form(lang: Lang, Query(q): Query<LoginQuery>, headers: HeaderMap) -> Response {
    let (t, set) = pre_token(&headers);
    let notice = if q.enrolled.is_some() {
        Some(lang.0.enrolled)
    } else if q.ended.is_some() {
        Some(lang.0.session_ended)
    } else {
        None
    };
    with_cookie(set, pages::login(lang.0, &t, notice, None))
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    // Missing is refused like a wrong token (audited), not as a bad form.
    #[serde(default)]
    csrf: String,
    name: String,
    password: String,
    totp: String,
}

pub async fn submit(
    State(console): State<Arc<Console>>,
    lang: Lang,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let text = lang.0;
    if !pre_ok(&headers, &f.csrf) {
        return pages::message(text, None, StatusCode::FORBIDDEN, text.refused);
    }
    let error = match users::login(&console.core, &f.name, &f.password, &f.totp).await {
        Ok(_) => {
            let (token, _csrf) = console.sessions.create(&f.name);
            let mut res = Redirect::to("/queue").into_response();
            if let Ok(v) = session::set_cookie(COOKIE, &token, None).parse() {
                res.headers_mut().append(SET_COOKIE, v);
            }
            return res;
        }
        Err(LoginError::Wrong) => text.login_failed,
        Err(LoginError::Locked { .. }) => text.locked,
        Err(LoginError::Node(e)) => return failure(text, None, e),
    };
    (
        StatusCode::UNAUTHORIZED,
        pages::login(text, &f.csrf, None, Some(error)),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
pub struct CsrfForm {
    // Missing is refused like a wrong token (audited), not as a bad form.
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(console): State<Arc<Console>>,
    person: Person,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = person.check_csrf(&console, &f.csrf).await {
        return r;
    }
    if let Some(t) = cookie_of(&headers, COOKIE) {
        console.sessions.remove(&t);
    }
    let mut res = Redirect::to("/login").into_response();
    if let Ok(v) = session::set_cookie(COOKIE, "", Some(0)).parse() {
        res.headers_mut().append(SET_COOKIE, v);
    }
    res
}

#[derive(serde::Deserialize, Default)]
pub struct EnrolQuery {
    #[serde(default)]
    code: String,
}

pub async fn enrol_form(lang: Lang, Query(q): Query<EnrolQuery>, headers: HeaderMap) -> Response {
    let (t, set) = pre_token(&headers);
    // The code is only put back into the form, escaped.
    let code: String = q.code.chars().take(64).collect();
    with_cookie(set, pages::enrol(lang.0, &t, &code, None))
}

#[derive(serde::Deserialize)]
pub struct EnrolForm {
    // Missing is refused like a wrong token (audited), not as a bad form.
    #[serde(default)]
    csrf: String,
    code: String,
    password: String,
    password2: String,
}

pub async fn enrol_password(
    State(console): State<Arc<Console>>,
    lang: Lang,
    headers: HeaderMap,
    Form(f): Form<EnrolForm>,
) -> Response {
    let text = lang.0;
    if !pre_ok(&headers, &f.csrf) {
        return pages::message(text, None, StatusCode::FORBIDDEN, text.refused);
    }
    let code: String = f.code.trim().chars().take(64).collect();
    if f.password != f.password2 {
        let page = pages::enrol(text, &f.csrf, &code, Some(text.passwords_differ));
        return (StatusCode::BAD_REQUEST, page).into_response();
    }
    match users::begin_enrolment(&console.core, &code, &f.password).await {
        Ok(setup) => pages::totp(text, &f.csrf, &code, &setup, None).into_response(),
        Err(e @ crate::node::NodeError::Invalid(_)) => {
            let page = pages::enrol(text, &f.csrf, &code, Some(&e.to_string()));
            (StatusCode::BAD_REQUEST, page).into_response()
        }
        Err(e) => failure(text, None, e),
    }
}

#[derive(serde::Deserialize)]
pub struct ConfirmForm {
    // Missing is refused like a wrong token (audited), not as a bad form.
    #[serde(default)]
    csrf: String,
    code: String,
    totp: String,
}

pub async fn enrol_confirm(
    State(console): State<Arc<Console>>,
    lang: Lang,
    headers: HeaderMap,
    Form(f): Form<ConfirmForm>,
) -> Response {
    let text = lang.0;
    if !pre_ok(&headers, &f.csrf) {
        return pages::message(text, None, StatusCode::FORBIDDEN, text.refused);
    }
    match users::finish_enrolment(&console.core, &f.code, &f.totp).await {
        Ok(_) => Redirect::to("/login?enrolled=1").into_response(),
        Err(e) => failure(text, None, e),
    }
}
