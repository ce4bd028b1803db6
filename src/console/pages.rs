//! The console's HTML. maud escapes every value it interpolates, so text
//! from peers, reporters and analysts is always inert; in addition it is
//! shown through `visible` (control and bidi characters escaped) and
//! reported URLs are defanged and never links.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::person::Person;
use super::text::Text;
use crate::identity::Role;
use crate::node::cases::CaseView;
use crate::node::users::{Enrolment, TotpSetup, UserView};
use crate::report::view::{rfc3339, visible};

/// Every page: the header with the person's menu, the body.
pub fn layout(text: &Text, person: Option<&Person>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(text.lang) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — " (text.title) }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                header {
                    span.brand { (text.title) }
                    @if let Some(p) = person {
                        nav {
                            a href="/queue" { (text.queue) }
                            a href="/submit" { (text.submit) }
                            a href="/outgoing" { (text.outgoing) }
                            a href="/statistics" { (text.statistics) }
                            @if p.role >= Role::Supervisor {
                                a href="/federation" { (text.federation) }
                            }
                            @if p.role >= Role::Admin {
                                a href="/users" { (text.users) }
                            }
                        }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(p.csrf);
                            a.who href="/account" id="account-link" title=(text.account) { (p.name) " (" (p.role) ")" }
                            button type="submit" { (text.logout) }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page with one message and a status code.
pub fn message(text: &Text, person: Option<&Person>, status: StatusCode, msg: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("");
    (
        status,
        layout(
            text,
            person,
            title,
            html! { p.error role="alert" { (visible(msg)) } },
        ),
    )
        .into_response()
}

pub fn login(text: &Text, csrf: &str, notice: Option<&str>, error: Option<&str>) -> Markup {
    layout(
        text,
        None,
        text.login,
        html! {
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            @if let Some(e) = error { p.error role="alert" id="login-error" { (e) } }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label { (text.name) input name="name" id="name" autocomplete="username" required autofocus; }
                label { (text.password) input type="password" name="password" id="password" autocomplete="current-password" required; }
                label { (text.totp) input name="totp" id="totp" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" required; }
                button type="submit" id="login" { (text.login) }
            }
        },
    )
}

pub fn enrol(text: &Text, csrf: &str, code: &str, error: Option<&str>) -> Markup {
    layout(
        text,
        None,
        text.enrol,
        html! {
            p { (text.enrol_intro) }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/enrol" {
                input type="hidden" name="csrf" value=(csrf);
                label { (text.enrol_code) input name="code" id="code" value=(code) required autocomplete="off"; }
                label { (text.password) input type="password" name="password" id="password" autocomplete="new-password" minlength="12" required; }
                label { (text.password_again) input type="password" name="password2" id="password2" autocomplete="new-password" minlength="12" required; }
                button type="submit" id="enrol" { (text.enrol) }
            }
        },
    )
}

/// The second enrolment step: the QR code (SVG drawn here), the URI and
/// the key, and a form for the first code.
pub fn totp(text: &Text, csrf: &str, code: &str, setup: &TotpSetup, error: Option<&str>) -> Markup {
    let qr = qrcode::QrCode::new(setup.uri.as_bytes())
        .map(|q| {
            q.render::<qrcode::render::svg::Color>()
                .min_dimensions(220, 220)
                .build()
        })
        .ok();
    layout(
        text,
        None,
        text.enrol,
        html! {
            p { (text.totp_intro) }
            @if let Some(svg) = qr {
                figure.qr { (PreEscaped(svg.trim_start_matches(|c| c != '<').replace("<?xml version=\"1.0\" standalone=\"yes\"?>", ""))) }
            }
            p { code id="otpauth" { (setup.uri) } }
            p { "Key: " code id="secret" { (setup.secret) } }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/enrol/confirm" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="code" value=(code);
                label { (text.totp) input name="totp" id="totp" inputmode="numeric" autocomplete="one-time-code" required autofocus; }
                button type="submit" id="confirm" { (text.totp_confirm) }
            }
        },
    )
}

/// A reported URL as text that cannot be followed: `hxxps://host[.]tld/…`,
/// with control and bidi characters escaped.
pub fn defang(u: &str) -> String {
    let u = visible(u);
    let (scheme, rest) = match u.split_once("://") {
        Some((s, r)) => (
            s.replace("http", "hxxp").replace("ftp", "fxp"),
            r.to_owned(),
        ),
        None => (String::new(), u.clone()),
    };
    let (host, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest.as_str(), ""),
    };
    let host = host.replace('.', "[.]").replace(':', "[:]");
    if scheme.is_empty() {
        format!("{host}{path}")
    } else {
        format!("{scheme}[://]{host}{path}")
    }
}

/// An age for humans: 45s, 12m, 5h, 3d.
pub fn age(ms: i64) -> String {
    let s = (ms / 1000).max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The queue's filters as given.
#[derive(Debug, Default, serde::Deserialize)]
pub struct QueueFilter {
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub status: String,
    /// The page of the open queue, from 0.
    #[serde(default)]
    pub page: u32,
}

pub fn network(c: &CaseView) -> String {
    match &c.route {
        Some(r) if r.asn != 0 => format!("AS{} {}", r.asn, visible(&r.org)),
        _ => String::new(),
    }
}

/// One queue row (the live updates build the same from JSON).
fn queue_row(c: &CaseView, now_ms: i64) -> Markup {
    html! {
        tr.urgent[c.priority == "urgent"] {
            td { (age(now_ms - c.created_at_ms)) }
            td { (c.priority) }
            td { a href={ "/case/" (c.origin) "/" (c.id) } { (c.origin) "/" (c.id) } }
            td { (c.category) }
            td { (c.hosting_country.as_deref().unwrap_or("")) }
            td { (network(c)) }
            td { (c.origin) }
            td { (c.status) }
        }
    }
}

pub fn queue(
    person: &Person,
    cases: &[CaseView],
    filter: &QueueFilter,
    categories: &[&str],
    (now_ms, per_page): (i64, usize),
) -> Markup {
    let t = person.text;
    layout(
        t,
        Some(person),
        t.queue,
        html! {
            p { (t.queue_intro) " " span id="new-count" data-label=(t.new_cases) {} }
            form.filters method="get" action="/queue" {
                label { (t.category)
                    select name="category" {
                        option value="" { (t.any) }
                        @for c in categories {
                            option value=(c) selected[filter.category == *c] { (c) }
                        }
                    }
                }
                label { (t.status) input name="status" value=(filter.status); }
                button type="submit" { (t.filter) }
            }
            table id="queue" {
                thead { tr {
                    th { (t.age) } th { (t.priority) } th { (t.case) } th { (t.category) }
                    th { (t.country) } th { (t.network) } th { (t.origin) } th { (t.status) }
                } }
                tbody {
                    @for c in cases { (queue_row(c, now_ms)) }
                }
            }
            @if cases.is_empty() { p id="empty" { (t.no_cases) } }
            @if filter.status.is_empty() { nav.pages {
                @if filter.page > 0 {
                    a id="previous" href={ "/queue?category=" (filter.category) "&status=" (filter.status) "&page=" (filter.page - 1) } { "← " (t.previous) }
                }
                @if cases.len() >= per_page {
                    a id="next" href={ "/queue?category=" (filter.category) "&status=" (filter.status) "&page=" (filter.page + 1) } { (t.next) " →" }
                }
            } }
        },
    )
}

pub fn users(person: &Person, list: &[UserView], enrolment: Option<&Enrolment>) -> Markup {
    let t = person.text;
    layout(
        t,
        Some(person),
        t.users,
        html! {
            @if let Some(e) = enrolment {
                p.notice role="status" {
                    (t.enrolment_for) " " (e.name) ": " code id="enrolment-code" { (e.code) }
                    " (" (t.valid_until) " " (rfc3339(e.expires_at_ms)) ") — "
                    a id="enrolment-link" href={ "/enrol?code=" (e.code) } { "/enrol?code=" (e.code) }
                }
            }
            table id="users" {
                thead { tr { th { (t.name) } th { (t.role) } th { (t.state) } th { (t.failures) }
                    th { (t.locked_until) } th { (t.last_login) } th { (t.actions) } } }
                tbody { @for u in list {
                    tr {
                        td { (u.name) } td { (u.role) } td { (u.state) } td { (u.failures) }
                        td { (u.locked_until.as_deref().unwrap_or("")) }
                        td { (u.last_login.as_deref().unwrap_or("")) }
                        td { @for (action, label) in [("disable", t.disable), ("reset", t.reset), ("unlock", t.unlock)] {
                            form.inline method="post" action={ "/users/" (u.name) "/" (action) } {
                                input type="hidden" name="csrf" value=(person.csrf);
                                button type="submit" id={ (action) "-" (u.name) } { (label) }
                            }
                        } }
                    }
                } }
            }
            h2 { (t.add_user) }
            form method="post" action="/users" {
                input type="hidden" name="csrf" value=(person.csrf);
                label { (t.name) input name="name" id="new-name" required; }
                label { (t.role)
                    select name="role" id="new-role" {
                        option value="analyst" { "analyst" }
                        option value="supervisor" { "supervisor" }
                        option value="admin" { "admin" }
                    }
                }
                button type="submit" id="add-user" { (t.add_user) }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_defanged_and_inert() {
        assert_eq!(
            defang("https://evil.example/a.b?x=1"),
            "hxxps[://]evil[.]example/a.b?x=1"
        );
        assert_eq!(
            defang("http://10.0.0.1:8080/x"),
            "hxxp[://]10[.]0[.]0[.]1[:]8080/x"
        );
        assert_eq!(
            defang("http://a.b/\u{202e}gpj.exe"),
            "hxxp[://]a[.]b/\\u{202e}gpj.exe"
        );
    }
}
