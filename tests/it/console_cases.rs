//! The console's case actions beyond status changes (issue #23), in a real
//! headless Chromium: who signed what and whether it verifies, handing a
//! case off to another hotline, a not-illegal close that needs a
//! supervisor other than the proposer, and the origin's retraction and
//! correction of a report it sent. Each action goes through the node
//! function the Operator service calls, so the peers see its effect.

use std::time::Duration;

use alertrelay::node::{Core, users};

use crate::common::browser::{Browser, ENTER};
use crate::common::*;
use crate::console::{AB, console_on, enrolled, log_in, next_code, screenshot};

const ABC: &[(&str, &[&str])] = &[
    ("FR-PDC", &["FR"]),
    ("DE-ECO", &["DE"]),
    ("NL-HOT", &["NL"]),
];
const WAIT: Duration = Duration::from_secs(20);

/// The console's address on node `i`.
fn base(fed: &Federation, i: usize) -> String {
    format!("https://{}", fed.handle(i).console.as_ref().unwrap().addr)
}

/// A new account `name` with `role` at node `core`, logged in in `b`.
async fn logged_in(b: &Browser, core: &Core, base: &str, name: &str, role: &str) {
    let (secret, step) = enrolled(core, name, role).await;
    let (code, _) = next_code(&secret, step).await;
    log_in(b, base, name, &code).await;
    b.wait_url(Duration::from_secs(10), |u| u.ends_with("/queue"))
        .await;
}

async fn log_out(b: &Browser) {
    b.click("header .logout button").await;
    b.wait_url(Duration::from_secs(10), |u| u.ends_with("/login"))
        .await;
}

/// The rows of the case page's signatures table: (what, signer, verdict).
async fn signatures(b: &Browser) -> Vec<(String, String, String)> {
    let rows = b
        .eval(
            "return [...document.querySelectorAll('#signatures tbody tr')].map(r => \
             [r.cells[0].textContent, r.cells[2].textContent, r.cells[5].textContent])",
        )
        .await;
    serde_json::from_value(rows).unwrap()
}

/// The case page shows every signature of the case and that it verifies;
/// an analyst hands the case off to another hotline, which gets it, and a
/// handoff the node refuses (back to the origin: a loop) is shown with its
/// reason and changes nothing.
#[tokio::test]
async fn browser_signatures_are_verified_and_a_case_is_handed_off_to_another_hotline() {
    let test = "browser_signatures_are_verified_and_a_case_is_handed_off_to_another_hotline";
    let Some(b) = Browser::start(test).await else {
        return;
    };
    let fed = Federation::builder(ABC)
        .prepare(|d| console_on(d, "DE-ECO"))
        .start()
        .await;
    let base = base(&fed, 1);
    let id = fed.submit(0, DE_IP, 1).await.unwrap();
    fed.wait_case(0, &id, WAIT, |c| {
        c.deliveries.iter().any(|d| d.state == "delivered")
    })
    .await;
    logged_in(&b, fed.core(1), &base, "hana", "analyst").await;
    b.goto(&format!("{base}/case/FR-PDC/{id}")).await;
    b.click("#to-in-review").await;
    b.wait_text("#status", WAIT, |t| t == "in-review").await;

    let signed = signatures(&b).await;
    let by = |what: &str, signer: &str| {
        signed
            .iter()
            .find(|(w, s, _)| w == what && s == signer)
            .unwrap_or_else(|| panic!("no {what} signed by {signer} in {signed:?}"))
            .2
            .clone()
    };
    assert!(by("report", "FR-PDC").starts_with("✓"), "{signed:?}");
    assert!(by("status", "DE-ECO").starts_with("✓"), "{signed:?}");

    // A stored signature altered under the node (its last byte flipped in
    // the database file) is shown as not verifying.
    let db = fed.config_path(1).parent().unwrap().join("node.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", arg(&db)))
        .await
        .unwrap();
    let (id_, mut signed_): (i64, Vec<u8>) = sqlx::query_as(
        "SELECT id, signed FROM status_history WHERE status = 'in-review' AND signed IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    *signed_.last_mut().unwrap() ^= 1;
    sqlx::query("UPDATE status_history SET signed = $1 WHERE id = $2")
        .bind(&signed_)
        .bind(id_)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    b.goto(&format!("{base}/case/FR-PDC/{id}")).await;
    let signed = signatures(&b).await;
    let status = signed.iter().find(|(w, _, _)| w == "status").unwrap();
    assert!(status.2.starts_with("✗"), "{signed:?}");
    assert!(
        signed
            .iter()
            .any(|(w, _, v)| w == "report" && v.starts_with("✓"))
    );

    // Back to the origin is a loop: refused, shown, nothing changes.
    b.eval("document.querySelector('#handoff-to').value = 'FR-PDC'; return 0")
        .await;
    b.fill("#handoff-reason", "try the origin").await;
    b.click("#hand-off").await;
    b.wait_source(WAIT, "id=\"error\"").await;
    assert_eq!(b.text("#status").await, "in-review");

    b.eval("document.querySelector('#handoff-to').value = 'NL-HOT'; return 0")
        .await;
    b.fill("#handoff-reason", "now hosted in the Netherlands")
        .await;
    b.eval("document.querySelector('#signatures').scrollIntoView(false); return 0")
        .await;
    screenshot(&b, "case-actions").await;
    // With the keyboard alone: Tab to the action, Enter.
    b.tab_to("hand-off", 5).await;
    b.keys(ENTER).await;
    b.wait_text("#status", WAIT, |t| t == "moved").await;
    fed.wait_case(2, &id, WAIT, |c| c.status == "received")
        .await;
    fed.wait_case(0, &id, WAIT, |c| {
        c.deliveries
            .iter()
            .any(|d| d.destination == "NL-HOT" && d.state == "delivered")
    })
    .await;

    let audit = fed.audit_export(1).await;
    let hana: Vec<&str> = audit
        .iter()
        .filter(|e| e.actor == "operator:DE-ECO/hana" && e.subject == format!("FR-PDC/{id}"))
        .map(|e| e.kind.as_str())
        .collect();
    for kind in ["case.status", "case.handoff"] {
        assert!(hana.contains(&kind), "{kind} in {hana:?}");
    }
    assert!(
        audit.iter().any(|e| e.actor == "operator:DE-ECO/hana"
            && e.kind == "input.refused"
            && e.detail["reason_code"] == "invalid-handoff"),
        "the refused handoff is audited under hana"
    );
    b.quit().await;
    fed.shutdown().await;
}

/// With `[cases] not_illegal_needs_supervisor`, an analyst proposes the
/// close; she cannot make it herself (nor through her certificate's
/// UpdateCase), nor can the proposer confirm; a supervisor other than her
/// confirms it in the console, and the origin sees the signed status.
#[tokio::test]
async fn browser_a_not_illegal_close_needs_a_supervisor_other_than_the_proposer() {
    let test = "browser_a_not_illegal_close_needs_a_supervisor_other_than_the_proposer";
    let Some(b) = Browser::start(test).await else {
        return;
    };
    let fed = Federation::builder(AB)
        .prepare(|d| {
            console_on(d, "DE-ECO");
            set_toml(
                &d.join("DE-ECO/node.toml"),
                "cases.not_illegal_needs_supervisor",
                true,
            );
        })
        .start()
        .await;
    let base = base(&fed, 1);
    let core = fed.core(1);
    let id = fed.submit(0, DE_IP, 1).await.unwrap();
    fed.wait_case(1, &id, WAIT, |_| true).await;
    logged_in(&b, core, &base, "ana", "analyst").await;
    b.goto(&format!("{base}/case/FR-PDC/{id}")).await;
    b.click("#to-in-review").await;
    b.wait_text("#status", WAIT, |t| t == "in-review").await;
    assert!(b.find("#to-not-illegal").await.is_none(), "no direct close");
    b.fill(
        "form[action$='/propose'] input[name=reason]",
        "a lawful adult site",
    )
    .await;
    b.click("#propose-not-illegal").await;
    b.wait_source(WAIT, "id=\"proposal\"").await;
    assert_eq!(b.text("#status").await, "in-review");
    assert!(b.text("#proposal").await.contains("operator:DE-ECO/ana"));
    assert!(b.find("#confirm-close").await.is_none(), "not hers");
    b.eval("document.querySelector('#proposal').scrollIntoView(); return 0")
        .await;
    screenshot(&b, "case-proposal").await;

    // Not through the analyst certificate either.
    let refused = fed
        .operator(1)
        .update_case(alertrelay::pb::UpdateCaseRequest {
            id: format!("FR-PDC/{id}"),
            status: "not-illegal".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("supervisor"), "{refused:?}");
    // A supervisor who proposed cannot confirm her own proposal.
    users::add(core, &admin(core), "sam", "supervisor")
        .await
        .unwrap();
    let sam = alertrelay::identity::PeerIdentity::Operator {
        node: core.me.clone(),
        name: "sam".into(),
        role: alertrelay::identity::Role::Supervisor,
    };
    let other = fed.submit(0, DE_IP, 2).await.unwrap();
    fed.wait_case(1, &other, WAIT, |_| true).await;
    let other = format!("FR-PDC/{other}");
    let none = alertrelay::node::cases::Referral::default();
    alertrelay::node::cases::update(core, &sam, &other, "in-review", "", &none)
        .await
        .unwrap();
    alertrelay::node::second::propose(core, &sam, &other, "not-illegal", "mine")
        .await
        .unwrap();
    let own = alertrelay::node::cases::update(core, &sam, &other, "not-illegal", "", &none)
        .await
        .unwrap_err();
    assert!(own.to_string().contains("other than its proposer"), "{own}");

    // Sue, a supervisor, confirms ana's proposal in the console.
    log_out(&b).await;
    logged_in(&b, core, &base, "sue", "supervisor").await;
    b.goto(&format!("{base}/case/FR-PDC/{id}")).await;
    b.click("#confirm-close").await;
    b.wait_text("#status", WAIT, |t| t == "not-illegal").await;
    let history = b.text("#history").await;
    assert!(history.contains("a lawful adult site"), "{history}");
    fed.wait_case(0, &id, WAIT, |c| c.status == "not-illegal")
        .await;

    let audit = fed.audit_export(1).await;
    let subject = format!("FR-PDC/{id}");
    let about: Vec<(&str, &str)> = audit
        .iter()
        .filter(|e| e.subject == subject)
        .map(|e| (e.kind.as_str(), e.actor.as_str()))
        .collect();
    for expected in [
        ("case.close-proposed", "operator:DE-ECO/ana"),
        ("case.close-confirmed", "supervisor:DE-ECO/sue"),
        ("case.status", "supervisor:DE-ECO/sue"),
    ] {
        assert!(about.contains(&expected), "{expected:?} in {about:?}");
    }
    b.quit().await;
    fed.shutdown().await;
}

fn admin(core: &Core) -> alertrelay::identity::PeerIdentity {
    alertrelay::identity::PeerIdentity::Operator {
        node: core.me.clone(),
        name: "admin".into(),
        role: alertrelay::identity::Role::Admin,
    }
}

/// The origin's analyst corrects a report it sent (the receiver shows the
/// new category and notes) and then retracts it (the receiver's case is
/// retracted); a malformed hash is refused by field, without its value.
#[tokio::test]
async fn browser_the_origin_corrects_and_retracts_a_report_it_sent() {
    let test = "browser_the_origin_corrects_and_retracts_a_report_it_sent";
    let Some(b) = Browser::start(test).await else {
        return;
    };
    let fed = Federation::builder(AB)
        .prepare(|d| console_on(d, "FR-PDC"))
        .start()
        .await;
    let base = base(&fed, 0);
    let id = fed.submit(0, DE_IP, 1).await.unwrap();
    fed.wait_case(1, &id, WAIT, |_| true).await;
    logged_in(&b, fed.core(0), &base, "remi", "analyst").await;
    b.goto(&format!("{base}/case/FR-PDC/{id}")).await;
    assert!(b.find("#to-in-review").await.is_none(), "worked by DE-ECO");

    b.fill("#correct-hashes", "not-a-hash-secret-value").await;
    b.fill("#correct-reason", "typo").await;
    b.click("#correct").await;
    b.wait_source(WAIT, "id=\"error\"").await;
    let error = b.text("#error").await;
    assert!(error.contains("hashes"), "{error}");
    assert!(!error.contains("secret-value"), "{error}");

    b.eval("document.querySelector('#correct-category').value = 'grooming'; return 0")
        .await;
    b.fill("#correct-hashes", "").await;
    b.fill("#correct-notes", "seen again on a mirror").await;
    b.fill("#correct-reason", "wrong category").await;
    b.click("#correct").await;
    b.wait_text("#category", WAIT, |t| t == "grooming").await;
    let at_de = fed
        .wait_case(1, &id, WAIT, |c| c.category == "grooming")
        .await;
    assert_eq!(at_de.notes, "seen again on a mirror");

    b.fill("#retract-reason", "sent by mistake").await;
    b.click("#retract").await;
    b.wait_text("#status", WAIT, |t| t == "retracted").await;
    assert!(b.find("#retract").await.is_none(), "once");
    fed.wait_case(1, &id, WAIT, |c| c.status == "retracted")
        .await;
    let signed = signatures(&b).await;
    assert!(
        signed
            .iter()
            .any(|(w, s, v)| w == "retraction" && s == "FR-PDC" && v.starts_with("✓")),
        "{signed:?}"
    );

    let audit = fed.audit_export(0).await;
    let remi: Vec<&str> = audit
        .iter()
        .filter(|e| e.actor == "operator:FR-PDC/remi")
        .map(|e| e.kind.as_str())
        .collect();
    for kind in ["report.corrected", "report.retracted", "input.refused"] {
        assert!(remi.contains(&kind), "{kind} in {remi:?}");
    }
    b.quit().await;
    fed.shutdown().await;
}

/// `cases update --status not-illegal` from the command line when the
/// node's policy wants a second person: refused with how to propose it;
/// `--propose` records the proposal (the case keeps its status); the
/// proposer cannot confirm it but can withdraw it (`cases reject-close`);
/// a supervisor's personal certificate confirms it with a plain `cases
/// update`, and the origin sees the close.
#[tokio::test]
async fn cli_a_not_illegal_close_is_proposed_and_a_supervisor_confirms_it() {
    let fed = Federation::builder(AB)
        .prepare(|d| {
            set_toml(
                &d.join("DE-ECO/node.toml"),
                "cases.not_illegal_needs_supervisor",
                true,
            );
        })
        .start()
        .await;
    let id = fed.submit(0, DE_IP, 1).await.unwrap();
    fed.wait_case(1, &id, WAIT, |_| true).await;
    let case = format!("FR-PDC/{id}");
    let config = fed.config_path(1);
    let c = arg(&config);
    let update = |extra: &'static [&'static str], c: String| {
        let case = case.clone();
        async move {
            let args = [&["cases", "update", &case, "--config", &c][..], extra].concat();
            cli(&args).await
        }
    };
    let (code, _, err) = update(&["--status", "in-review"], c.into()).await;
    assert_eq!(code, 0, "{err}");
    let close = &["--status", "not-illegal", "--reason", "a lawful adult site"];
    let (code, _, err) = update(close, c.into()).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("needs a second person") && err.contains("--propose"),
        "{err}"
    );
    let proposal = &[
        "--status",
        "not-illegal",
        "--reason",
        "a lawful adult site",
        "--propose",
    ];
    let (code, out, err) = update(proposal, c.into()).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("proposed closing case") && out.contains("stays in-review"),
        "{out}"
    );
    // The proposer's certificate cannot confirm it.
    let (code, _, err) = update(close, c.into()).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("supervisor"), "{err}");
    // The proposer withdraws it, and proposes it again.
    let withdraw = [
        "cases",
        "reject-close",
        &case,
        "--reason",
        "wrong case",
        "--config",
        c,
    ];
    let (code, out, err) = cli(&withdraw).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rejected; it stays in-review"), "{out}");
    let (code, _, err) = cli(&withdraw).await;
    assert_eq!(code, 1, "nothing left to withdraw");
    assert!(err.contains("no pending proposal"), "{err}");
    let (code, _, err) = update(proposal, c.into()).await;
    assert_eq!(code, 0, "{err}");
    // A supervisor's personal certificate confirms it.
    let dir = config.parent().unwrap().parent().unwrap().to_path_buf();
    let issue = [
        "federation",
        "operator",
        "issue",
        "--dir",
        arg(&dir),
        "--node",
        "DE-ECO",
        "--name",
        "sue",
        "--role",
        "supervisor",
    ];
    let (code, _, err) = cli(&issue).await;
    assert_eq!(code, 0, "{err}");
    let sue = dir.join("DE-ECO/sue.toml");
    std::fs::copy(&config, &sue).unwrap();
    let ops = dir.join("DE-ECO/operators");
    set_toml(&sue, "operator.cert", arg(&ops.join("sue.pem")));
    set_toml(&sue, "operator.key", arg(&ops.join("sue.key")));
    let (code, out, err) = update(&["--status", "not-illegal"], arg(&sue).into()).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is now not-illegal"), "{out}");
    fed.wait_case(0, &id, WAIT, |c| c.status == "not-illegal")
        .await;

    let audit = fed.audit_export(1).await;
    let kinds: Vec<(&str, &str)> = audit
        .iter()
        .filter(|e| e.subject == case)
        .map(|e| (e.kind.as_str(), e.actor.as_str()))
        .collect();
    let proposer = kinds.iter().find(|(k, _)| *k == "case.close-proposed");
    let proposer = proposer.expect("the proposal audited").1;
    assert!(
        proposer.ends_with("DE-ECO/analyst") || proposer.starts_with("operator:DE-ECO/"),
        "{proposer}"
    );
    for expected in [
        ("case.close-confirmed", "supervisor:DE-ECO/sue"),
        ("case.status", "supervisor:DE-ECO/sue"),
    ] {
        assert!(kinds.contains(&expected), "{expected:?} in {kinds:?}");
    }
    fed.shutdown().await;
}
