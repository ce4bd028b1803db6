//! The case page's HTML: the facts (URLs defanged, never links), the
//! actions the state machine and this hotline's policy allow the person
//! (status changes, a not-illegal close's proposal and confirmation, hand
//! off; retract and correct for this hotline's own reports), the route
//! with its evidence, deliveries, the signed history and every signature
//! with whether it verifies. maud escapes every value; peer text also goes
//! through `visible`.

use maud::{Markup, html};

use super::pages::{defang, layout, network};
use super::person::Person;
use super::text::Text;
use crate::identity::Role;
use crate::node::cases::{self, CaseView};
use crate::node::second::Proposal;
use crate::node::signatures::Signature;
use crate::report::view::{RouteView, visible};

/// Everything the case page shows.
pub struct CasePage<'a> {
    pub case: &'a CaseView,
    pub signatures: &'a [Signature],
    pub proposal: Option<&'a Proposal>,
    /// Whether a not-illegal close needs a second person here.
    pub second_person: bool,
    /// The hotlines a case may be handed to.
    pub peers: &'a [String],
    /// This node: only its own reports can be retracted or corrected.
    pub me: &'a str,
    pub categories: &'a [&'a str],
    pub error: Option<&'a str>,
}

fn facts(t: &Text, c: &CaseView) -> Markup {
    html! {
        dl.facts {
            dt { (t.status) } dd id="status" { (c.status) }
            dt { (t.category) } dd id="category" { (c.category) }
            dt { (t.priority) } dd { (c.priority) }
            dt { (t.origin) } dd { (c.origin) }
            dt { (t.destination) } dd { (c.destinations.join(", ")) }
            dt { (t.country) } dd { (c.hosting_country.as_deref().unwrap_or("")) }
            dt { (t.network) } dd { (network(c)) }
            dt { (t.when) } dd { (c.created_at) }
        }
        h2 { (t.urls) }
        p.note { (t.urls_note) }
        ul.urls {
            @for u in &c.urls {
                li {
                    code.url { (defang(u)) }
                    " "
                    button type="button" data-copy=(u) { (t.copy) }
                    @let flags = url_flags(u);
                    @if !flags.is_empty() { " " span.flag { (t.flags) ": " (flags.join(", ")) } }
                }
            }
        }
        @if !c.notes.is_empty() { h2 { (t.notes) } p.notes { (visible(&c.notes)) } }
        @if !c.hashes.is_empty() {
            h2 { (t.hashes) }
            ul { @for h in &c.hashes { li { code { (visible(&h.algorithm)) ":" (visible(&h.value)) } } } }
        }
    }
}

fn url_flags(u: &str) -> Vec<&'static str> {
    crate::report::validate::url(u)
        .map(|v| v.flags)
        .unwrap_or_default()
}

fn route(t: &Text, c: &CaseView) -> Markup {
    html! {
        @if let Some(r) = &c.route {
            h2 { (t.route) }
            (route_evidence(t, r))
        }
        @if !c.deliveries.is_empty() {
            h2 { (t.delivery) }
            ul id="deliveries" { @for d in &c.deliveries {
                li { (d.destination) ": " (d.state)
                    @if let Some(at) = &d.delivered_at { " " (at) }
                    @if d.receipt.is_some() { " (" (t.signed_receipt) ")" }
                    @if let Some(by) = &d.handed_off_by { " ← " (by) }
                    @if !d.reason.is_empty() { " — " (visible(&d.reason)) } }
            } }
        }
        h2 { (t.history) }
        table id="history" {
            thead { tr { th { (t.status) } th { (t.reason) } th { (t.who) } th { (t.signed_by) } th { (t.when) } } }
            tbody { @for h in &c.history {
                tr { td { (h.status) } td { (visible(&h.reason)) } td { (visible(&h.actor)) } td { (visible(&h.signer)) } td { (h.at) } }
            } }
        }
        @if !c.referrals.is_empty() {
            ul { @for r in &c.referrals { li { (visible(&r.agency)) " " (visible(&r.reference)) " " (r.referred_at) } } }
        }
    }
}

/// A route with its evidence: where it goes and why, the hosting country
/// and network with their sources, flags, and the chain of reasoning (the
/// case page, and the submit page's preview).
pub fn route_evidence(t: &Text, r: &RouteView) -> Markup {
    let dated = |what: &str, date: &str| {
        if date.is_empty() {
            visible(what)
        } else {
            format!("{} ({})", visible(what), visible(date))
        }
    };
    html! {
        dl.facts.route {
            dt { (t.destination) } dd id="route-destinations" { (r.kind) " → " (r.destinations.join(", ")) }
            dt { (t.reason) } dd { (visible(&r.reason)) }
            dt { (t.country) } dd id="route-country" { (visible(&r.country)) " — " (dated(&r.dataset, &r.dataset_date)) " " (visible(&r.method)) }
            @if !r.ip.is_empty() { dt { (t.hosting_ip) } dd { (visible(&r.ip)) " (" (visible(&r.ip_source)) ")" } }
            @if r.asn != 0 { dt { (t.network) } dd { "AS" (r.asn) " " (visible(&r.org)) " — " (dated(&r.network_dataset, &r.network_dataset_date)) } }
            @if !r.ambiguity.is_empty() { dt { (t.flags) } dd.flag { (visible(&r.ambiguity)) } }
            @if !r.flags.is_empty() { dt { (t.flags) } dd.flag { (r.flags.join(", ")) } }
        }
        h3 { (t.evidence) }
        ol.steps { @for s in &r.steps { li { (visible(s)) } } }
    }
}

/// Every signed object and whether its signature verifies.
fn signatures(t: &Text, list: &[Signature]) -> Markup {
    html! {
        h2 { (t.signatures) }
        table id="signatures" {
            thead { tr { th { (t.what) } th { (t.says) } th { (t.signed_by) } th { (t.key) } th { (t.when) } th { (t.verifies) } } }
            tbody { @for s in list {
                tr.bad[!s.verifies] {
                    td { (s.what) } td { (visible(&s.says)) } td { (visible(&s.signer)) }
                    td { code { (visible(&s.key_id)) } } td { (s.at) }
                    td.verdict {
                        @if s.verifies { "✓ " (t.yes) } @else { "✗ " (t.no) ": " (s.problem) }
                    }
                }
            } }
        }
    }
}

/// The opening of a form that posts to the case's `action`, with the CSRF
/// token.
fn form_to(person: &Person, c: &CaseView, action: &str, body: Markup) -> Markup {
    html! {
        form.action method="post" action={ "/case/" (c.origin) "/" (c.id) "/" (action) } {
            input type="hidden" name="csrf" value=(person.csrf);
            (body)
        }
    }
}

/// One status change's form (a not-illegal close that needs a second
/// person is proposed instead, or confirmed by a supervisor).
fn status_form(person: &Person, p: &CasePage, s: &str) -> Markup {
    let t = person.text;
    let second = p.second_person && s == "not-illegal";
    if second && p.proposal.is_some() {
        return html! {};
    }
    let (action, label, id) = if second {
        ("propose", t.propose, format!("propose-{s}"))
    } else {
        ("status", t.move_to, format!("to-{s}"))
    };
    form_to(
        person,
        p.case,
        action,
        html! {
            input type="hidden" name="status" value=(s);
            label { (t.reason) input name="reason" maxlength="4096" required[second]; }
            @if s == "referred-to-law-enforcement" {
                label { (t.agency) input name="agency" required; }
                label { (t.reference) input name="reference" required; }
            }
            button type="submit" id=(id) { (label) " " (s) }
        },
    )
}

/// A pending proposal: who and why; confirm or reject for a supervisor
/// other than the proposer, withdraw for the proposer.
fn proposal(person: &Person, c: &CaseView, p: &Proposal) -> Markup {
    let t = person.text;
    let me = person.who.to_string();
    let mine = cases::person(&p.proposed_by) == cases::person(&me);
    let supervisor = person.role >= Role::Supervisor;
    html! {
        div.proposal id="proposal" role="status" {
            p { strong { (t.proposal) ": " (p.status) } " — " (t.proposed_by) " " (visible(&p.proposed_by))
                " (" (p.proposed_at) "): " (visible(&p.reason)) }
            @if supervisor && !mine {
                (form_to(person, c, "status", html! {
                    input type="hidden" name="status" value=(p.status);
                    label { (t.reason) input name="reason" maxlength="4096"; }
                    button type="submit" id="confirm-close" { (t.confirm) " " (p.status) }
                }))
            } @else {
                p.note { (t.awaiting_supervisor) }
            }
            @if supervisor || mine {
                (form_to(person, c, "reject", html! {
                    label { (t.reason) input name="reason" maxlength="4096"; }
                    button type="submit" id="reject-close" { @if mine { (t.withdraw) } @else { (t.reject) } }
                }))
            }
        }
    }
}

/// Handing the case over to another hotline: a named one, or the one
/// routing picks for a new hosting IP.
fn hand_off(person: &Person, p: &CasePage) -> Markup {
    let t = person.text;
    html! {
        h3 { (t.hand_off) }
        p.note { (t.hand_off_note) }
        (form_to(person, p.case, "handoff", html! {
            label { (t.hand_off_to)
                select name="to" id="handoff-to" {
                    option value="" { (t.by_hosting_ip) }
                    @for peer in p.peers { option value=(peer) { (peer) } }
                }
            }
            label { (t.hosting_ip) input name="hosting_ip" id="handoff-ip" maxlength="64"; }
            label { (t.reason) input name="reason" id="handoff-reason" maxlength="512" required; }
            button type="submit" id="hand-off" { (t.hand_off) }
        }))
    }
}

/// The origin's amendments of a report it sent: retract, correct.
fn amend(person: &Person, p: &CasePage) -> Markup {
    let t = person.text;
    html! {
        p.note { (t.amend_note) }
        h3 { (t.retract) }
        (form_to(person, p.case, "retract", html! {
            label { (t.reason) input name="reason" id="retract-reason" maxlength="1024" required; }
            button type="submit" id="retract" { (t.retract) }
        }))
        h3 { (t.correct) }
        (form_to(person, p.case, "correct", html! {
            label { (t.category)
                select name="category" id="correct-category" {
                    option value="" { (t.unchanged) }
                    @for c in p.categories { option value=(c) { (c) } }
                }
            }
            label { (t.notes) input name="notes" id="correct-notes" maxlength="4096"; }
            label { (t.hashes_field) input name="hashes" id="correct-hashes" maxlength="4096"; }
            label { (t.reason) input name="reason" id="correct-reason" maxlength="1024" required; }
            button type="submit" id="correct" { (t.correct) }
        }))
    }
}

/// The case's actions: what the state machine and the policy allow.
fn actions(person: &Person, p: &CasePage) -> Markup {
    let t = person.text;
    let c = p.case;
    let worked_here = c.direction == "incoming" || c.direction == "local";
    let ours = c.origin == p.me && c.direction != "relayed";
    let next: Vec<&str> = crate::report::CaseStatus::parse(&c.status)
        .map(|s| s.next().iter().map(|n| n.as_str()).collect())
        .unwrap_or_default();
    html! {
        h2 { (t.actions) }
        @if worked_here && !next.is_empty() {
            @if p.second_person { p.note { (t.second_person_note) } }
            @if let Some(prop) = p.proposal { (proposal(person, c, prop)) }
            @for s in &next { (status_form(person, p, s)) }
            @if c.direction == "incoming" { (hand_off(person, p)) }
        } @else if worked_here {
            p { (t.final_status) }
        } @else if !ours {
            p { (t.not_worked_here) }
        }
        @if ours && c.status != "retracted" { (amend(person, p)) }
    }
}

pub fn case(person: &Person, p: &CasePage) -> Markup {
    let t = person.text;
    let c = p.case;
    let title = format!("{} {}/{}", t.case, c.origin, c.id);
    layout(
        t,
        Some(person),
        &title,
        html! {
            @if let Some(e) = p.error { p.error role="alert" id="error" { (visible(e)) } }
            (facts(t, c))
            (actions(person, p))
            (route(t, c))
            (signatures(t, p.signatures))
        },
    )
}
