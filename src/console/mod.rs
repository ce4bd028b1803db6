//! The analysts' web console: an edge beside `api`, on its own HTTPS
//! listener (`[console] listen`), server-rendered HTML (maud) with a small
//! embedded script and style sheet, no build step and nothing fetched from
//! elsewhere.
//!
//! It calls the same node functions the Operator service calls, with the
//! logged-in person's identity (`node::users`), so the audit log names
//! that person for every read and change; it writes no SQL of its own.
//!
//! - `listener.rs` HTTPS: TCP accept, TLS handshakes in tasks of their own
//! - `session.rs`  server-side sessions, cookies, CSRF tokens
//! - `text.rs`     every string shown, per language (English, French)
//! - `pages.rs`    the HTML: layout and each page
//! - `access.rs`   who is asking: the session's person and role, forms' CSRF
//! - `person.rs`   the logged-in person a page is for
//! - `login.rs`    login, logout, enrolment
//! - `account.rs`  the person's own account: language, password
//! - `work.rs`     the queue (with live updates)
//! - `case.rs`     a case and its actions
//! - `case_page.rs` the case page's HTML
//! - `submit.rs`   a new report, its route previewed before it is sent
//! - `outgoing.rs` this hotline's reports abroad
//! - `statistics.rs` time to takedown, with SVG charts drawn here
//! - `federation.rs` peers, the latest checkpoint, "verify now"
//! - `admin.rs`    the users page

mod access;
mod account;
mod admin;
mod case;
mod case_page;
mod federation;
mod listener;
mod login;
mod outgoing;
mod pages;
mod person;
pub mod session;
mod statistics;
mod submit;
pub mod text;
mod work;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::node::Core;

/// The console's shared state.
pub struct Console {
    pub core: Arc<Core>,
    pub sessions: session::Sessions,
}

/// A running console: where it listens, and its state (tests reach the
/// sessions through it).
#[derive(Clone)]
pub struct Running {
    pub addr: SocketAddr,
    pub console: Arc<Console>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console TLS")]
    Tls(#[from] crate::crypto::tls::TlsError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The Content-Security-Policy of every answer: only this origin's own
/// script and style sheet, no inline script, no framing, forms post here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Binds `cfg.listen` and serves the console there until `stop`.
pub async fn spawn(
    core: &Arc<Core>,
    cfg: &crate::config::Console,
    tasks: &mut tokio::task::JoinSet<()>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<Running, ConsoleError> {
    let tls = crate::crypto::tls::browser_server_config(&cfg.cert, &cfg.key)?;
    let listen_error = |source| ConsoleError::Listen {
        addr: cfg.listen.to_string(),
        source,
    };
    let tcp = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(listen_error)?;
    let listener = listener::TlsListener::start(tcp, tls, stop.clone()).map_err(listen_error)?;
    let addr = axum::serve::Listener::local_addr(&listener).map_err(listen_error)?;
    let console = Arc::new(Console {
        core: core.clone(),
        sessions: session::Sessions::new(cfg.idle_timeout, cfg.absolute_timeout),
    });
    let app = router(console.clone());
    let mut shutdown = stop.clone();
    tasks.spawn(async move {
        let stopped = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(error = %e, "the console stopped");
        }
    });
    tracing::info!(%addr, "console listening");
    Ok(Running { addr, console })
}

fn router(console: Arc<Console>) -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/queue") }))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/enrol", get(login::enrol_form).post(login::enrol_password))
        .route("/enrol/confirm", post(login::enrol_confirm))
        .route("/account", get(account::page))
        .route("/account/language", post(account::language))
        .route("/account/password", post(account::password))
        .route("/queue", get(work::queue))
        .route("/events", get(work::events))
        .route("/case/{origin}/{id}", get(case::show))
        .route("/case/{origin}/{id}/status", post(case::update))
        .route("/case/{origin}/{id}/propose", post(case::propose))
        .route("/case/{origin}/{id}/reject", post(case::reject))
        .route("/case/{origin}/{id}/handoff", post(case::hand_off))
        .route("/case/{origin}/{id}/retract", post(case::retract))
        .route("/case/{origin}/{id}/correct", post(case::correct))
        .route("/submit", get(submit::form).post(submit::send))
        .route("/submit/preview", post(submit::preview_route))
        .route("/outgoing", get(outgoing::show))
        .route("/statistics", get(statistics::show))
        .route("/federation", get(federation::show))
        .route("/federation/verify", post(federation::verify))
        .route("/users", get(admin::page).post(admin::add))
        .route("/users/{name}/{action}", post(admin::change))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(headers))
        .with_state(console)
}

/// Headers on every answer: the CSP, no caching of anything (case data
/// never stays in the browser), no sniffing, no referrer, no framing.
async fn headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/console.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/console.js"),
    )
}

async fn not_found(lang: access::Lang) -> Response {
    pages::message(
        lang.0,
        None,
        axum::http::StatusCode::NOT_FOUND,
        lang.0.not_found,
    )
}
