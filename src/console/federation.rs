//! The federation page (supervisor, admin): each peer with its
//! reachability, queue, oldest undelivered item and last error
//! (`overview::peers`, as `ListPeers`); the audit log's latest checkpoint
//! with its cosignatures (`checkpoint::latest_with_cosignatures`); and
//! "verify now" (`checkpoint::verify_now`), which reads the whole log again
//! and checks every checkpoint and cosignature.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::Console;
use super::access::{Person, failure};
use super::pages::{age, layout};
use crate::audit::Verified;
use crate::identity::Role;
use crate::node::overview::PeerView;
use crate::node::{Core, NodeError, checkpoint, overview};
use crate::report::view::{rfc3339, visible};

/// What "verify now" found, shown above the page.
enum Outcome {
    Verified(Verified),
    Failed(String),
}

fn peers(t: &super::text::Text, list: &[PeerView]) -> Markup {
    html! {
        table id="peers" {
            thead { tr { th { (t.peer) } th { (t.country) } th { (t.reachable) } th { (t.queue_depth) }
                th { (t.oldest) } th { (t.last_error) } th { (t.last_seen) } } }
            tbody { @for p in list {
                tr.bad[p.reachable == "no"] {
                    td { (p.node_id) @if !p.active { " " span.flag { (t.suspended) } } }
                    td { (p.countries.join(", ")) }
                    td.reach { (p.reachable) }
                    td { (p.queue_depth) }
                    td { @if p.oldest_undelivered_age_ms > 0 { (age(p.oldest_undelivered_age_ms)) } }
                    td { (visible(&p.last_error)) @if p.consecutive_failures > 0 { " (×" (p.consecutive_failures) ")" } }
                    td { @if p.last_seen_ms > 0 { (rfc3339(p.last_seen_ms)) } }
                }
            } }
        }
    }
}

/// The checkpoint note and who signed it: this node, and each witness
/// whose cosignature was collected.
fn checkpoint_note(t: &super::text::Text, note: Option<&str>) -> Markup {
    let signers: Vec<String> = note
        .and_then(|n| crate::audit::note::SignedNote::parse(n).ok())
        .map(|n| n.signatures.into_iter().map(|s| s.name).collect())
        .unwrap_or_default();
    html! {
        @match note {
            None => { p.note { (t.no_checkpoint) } }
            Some(n) => {
                p { (t.signed_by) ": " span id="cosigners" { (signers.join(", ")) } }
                pre id="checkpoint" { (visible(n).replace("\\u{a}", "\n")) }
            }
        }
    }
}

fn page(
    person: &Person,
    list: &[PeerView],
    note: Option<&str>,
    outcome: Option<&Outcome>,
) -> Markup {
    let t = person.text;
    layout(
        t,
        Some(person),
        t.federation,
        html! {
            @match outcome {
                Some(Outcome::Verified(v)) => {
                    p.notice role="status" id="verified" {
                        "✓ " (t.log_verifies) ": " (v.entries) " " (t.entries) ", " (v.checkpoints) " " (t.checkpoints)
                        ", " (v.cosignatures) " " (t.cosignatures) "; root " code { (v.root) }
                    }
                }
                Some(Outcome::Failed(e)) => { p.error role="alert" id="verify-failed" { "✗ " (visible(e)) } }
                None => {}
            }
            h2 { (t.peers) }
            (peers(t, list))
            h2 { (t.checkpoint) }
            (checkpoint_note(t, note))
            form method="post" action="/federation/verify" {
                input type="hidden" name="csrf" value=(person.csrf);
                button type="submit" id="verify-now" { (t.verify_now) }
            }
        },
    )
}

async fn show_with(console: &Console, person: &Person, outcome: Option<&Outcome>) -> Response {
    let core: &Core = &console.core;
    let read = async {
        let list = overview::peers(core).await?;
        let note = checkpoint::latest_with_cosignatures(core).await?;
        Ok::<_, NodeError>((list, note))
    }
    .await;
    match read {
        Ok((list, note)) => page(person, &list, note.as_deref(), outcome).into_response(),
        Err(e) => failure(person.text, Some(person), e),
    }
}

pub async fn show(State(console): State<Arc<Console>>, person: Person) -> Response {
    if let Err(r) = person.require(&console, Role::Supervisor).await {
        return r;
    }
    show_with(&console, &person, None).await
}

#[derive(serde::Deserialize)]
pub struct CsrfForm {
    // Missing is refused like a wrong token (audited), not as a bad form.
    #[serde(default)]
    csrf: String,
}

pub async fn verify(
    State(console): State<Arc<Console>>,
    person: Person,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = person.check_csrf(&console, &f.csrf).await {
        return r;
    }
    if let Err(r) = person.require(&console, Role::Supervisor).await {
        return r;
    }
    let outcome = match checkpoint::verify_now(&console.core, &person.who).await {
        Ok(v) => Outcome::Verified(v),
        Err(e @ NodeError::FailedPrecondition(_)) => Outcome::Failed(e.to_string()),
        Err(e) => return failure(person.text, Some(&person), e),
    };
    show_with(&console, &person, Some(&outcome)).await
}
