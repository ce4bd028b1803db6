//! Who is asking: the language of the page, the logged-in person (from
//! the session cookie, with the account's current role: a disabled account
//! is logged out at its next request), role checks, and the CSRF token
//! every state-changing form must carry.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};

use super::Console;
use super::pages;
use super::session::{self, COOKIE};
use super::text::{self, Text};

pub use super::person::Person;
use crate::identity::Role;
use crate::node::{NodeError, users};

/// The page's language, from `Accept-Language` (for pages before a
/// login; a logged-in `Person` has the one they chose).
pub struct Lang(pub &'static Text);

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok());
        Ok(Lang(text::for_accept_language(header)))
    }
}

/// The value of a cookie of the request.
pub fn cookie_of(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| session::cookie(h, name).map(str::to_owned))
}

impl FromRequestParts<Arc<Console>> for Person {
    type Rejection = Response;

    /// No session, an expired one, or a disabled account: to the login page.
    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let browser = parts
            .headers
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok());
        let text = text::for_accept_language(browser);
        let to_login = || Redirect::to("/login?ended=1").into_response();
        let token = cookie_of(&parts.headers, COOKIE).ok_or_else(to_login)?;
        let s = console.sessions.get(&token).ok_or_else(to_login)?;
        match users::current(&console.core, &s.name).await {
            Ok(Some(users::Current { who, language })) => {
                // The person's own language wins over the browser's.
                let text = text::choose(language.as_deref(), browser);
                let core = &console.core;
                let permit = core
                    .limiter
                    .admit(&who.to_string(), core.config.operator_quota)
                    .map_err(|e| {
                        pages::message(text, None, StatusCode::TOO_MANY_REQUESTS, &e.to_string())
                    })?;
                Ok(Person {
                    role: who.role().unwrap_or(Role::Analyst),
                    who,
                    name: s.name,
                    csrf: s.csrf,
                    language,
                    text,
                    _permit: permit,
                })
            }
            Ok(None) => {
                console.sessions.remove(&token);
                Err(to_login())
            }
            Err(e) => Err(failure(text, None, e)),
        }
    }
}

impl Person {
    /// This person's role is at least `role`, or a 403 page (the refusal
    /// audited under the person).
    pub async fn require(&self, console: &Console, role: Role) -> Result<(), Response> {
        if self.role >= role {
            return Ok(());
        }
        console
            .core
            .audit_refusal(
                &self.who.to_string(),
                "permission-denied",
                &format!("the console page needs the {role} role"),
                &[],
            )
            .await;
        Err(pages::message(
            self.text,
            Some(self),
            StatusCode::FORBIDDEN,
            self.text.forbidden,
        ))
    }

    /// The form's CSRF token is this session's, or a 403 (audited).
    pub async fn check_csrf(&self, console: &Console, given: &str) -> Result<(), Response> {
        if session::same(given, &self.csrf) {
            return Ok(());
        }
        console
            .core
            .audit_refusal(
                &self.who.to_string(),
                "csrf",
                "a console form came without this session's CSRF token",
                &[],
            )
            .await;
        Err(pages::message(
            self.text,
            Some(self),
            StatusCode::FORBIDDEN,
            self.text.refused,
        ))
    }
}

/// The page a node error becomes: the status a browser understands and
/// the node's message (which names fields and reasons, never storage
/// details or reported URLs).
pub fn failure(text: &'static Text, person: Option<&Person>, e: NodeError) -> Response {
    let status = match &e {
        NodeError::Invalid(_) => StatusCode::BAD_REQUEST,
        NodeError::NotFound(_) => StatusCode::NOT_FOUND,
        NodeError::FailedPrecondition(_) => StatusCode::CONFLICT,
        NodeError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        NodeError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
        NodeError::Wire(_) | NodeError::Store(_) | NodeError::Internal(_) => {
            tracing::error!(error = %e, "console request failed");
            return pages::message(
                text,
                person,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            );
        }
    };
    pages::message(text, person, status, &e.to_string())
}
