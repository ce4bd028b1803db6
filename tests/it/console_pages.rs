//! The console's submit, outgoing, statistics and federation pages (issue
//! #23) in a real headless Chromium: a report previewed with its route
//! and evidence, then sent with the keyboard alone and followed abroad to
//! its removal; charts of time to takedown; the federation's peers and
//! "verify now" for supervisors only; and every page at 1280×800 with no
//! horizontal scroll and no script from a peer running.

use std::time::Duration;

use alertrelay::pb;

use crate::common::browser::{Browser, ENTER};
use crate::common::*;
use crate::console::{AB, console_on, enrolled, log_in, next_code, screenshot};

const WAIT: Duration = Duration::from_secs(20);

fn base(fed: &Federation, i: usize) -> String {
    format!("https://{}", fed.handle(i).console.as_ref().unwrap().addr)
}

async fn logged_in(b: &Browser, fed: &Federation, i: usize, name: &str, role: &str) {
    let (secret, step) = enrolled(fed.core(i), name, role).await;
    let (code, _) = next_code(&secret, step).await;
    log_in(b, &base(fed, i), name, &code).await;
    b.wait_url(Duration::from_secs(10), |u| u.ends_with("/queue"))
        .await;
}

/// Moves the report `id`, received at node `i`, to removed.
async fn removed(fed: &Federation, i: usize, id: &str) {
    let mut op = fed.operator(i);
    for status in ["in-review", "illegal-baseline", "notice-sent", "removed"] {
        op.update_case(pb::UpdateCaseRequest {
            id: id.to_owned(),
            status: status.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

/// The page fits a 1280-pixel-wide window: nothing scrolls sideways.
async fn fits(b: &Browser, page: &str) {
    let width = b
        .eval("return document.documentElement.scrollWidth")
        .await
        .as_u64()
        .unwrap();
    assert!(width <= 1280, "{page} is {width} px wide");
}

/// An analyst writes a report, sees where it would go and why (nothing
/// stored yet), sends it with the keyboard, and follows it on the
/// outgoing page to its signed receipt and removal; the statistics page
/// then charts the time to takedown for that destination.
#[tokio::test]
async fn browser_a_report_is_sent_after_its_route_preview_and_followed_to_its_removal() {
    let test = "browser_a_report_is_sent_after_its_route_preview_and_followed_to_its_removal";
    let Some(b) = Browser::start(test).await else {
        return;
    };
    b.window(1280, 800).await;
    let fed = Federation::builder(AB)
        .prepare(|d| console_on(d, "FR-PDC"))
        .start()
        .await;
    let base = base(&fed, 0);
    logged_in(&b, &fed, 0, "lea", "analyst").await;

    // A URL of a scheme the node refuses: named, not echoed, not stored.
    b.goto(&format!("{base}/submit")).await;
    b.fill("#urls", "gopher://secret-host.example/x").await;
    b.click("#preview").await;
    b.wait_source(WAIT, "id=\"error\"").await;
    let error = b.text("#error").await;
    assert!(error.contains("url"), "{error}");
    assert!(!error.contains("secret-host"), "{error}");

    b.fill("#urls", &format!("http://{DE_IP}/console-submit"))
        .await;
    b.fill("#notes", "found through a forum link").await;
    b.eval("document.querySelector('#urls').focus(); return 0")
        .await;
    b.tab_to("preview", 12).await;
    b.keys(ENTER).await;
    b.wait_source(WAIT, "id=\"route-preview\"").await;
    assert!(b.text("#route-destinations").await.contains("DE-ECO"));
    assert!(b.text("#route-country").await.contains("DE"));
    assert!(
        fed.cases(0, "outgoing").await.unwrap().is_empty(),
        "nothing is stored before the confirmation"
    );
    fits(&b, "submit").await;
    b.eval("document.querySelector('#route-preview').scrollIntoView(); return 0")
        .await;
    screenshot(&b, "submit").await;
    b.tab_to("send", 20).await;
    b.keys(ENTER).await;
    let url = b.wait_url(WAIT, |u| u.contains("/case/FR-PDC/")).await;
    let id = url.rsplit('/').next().unwrap().to_owned();
    // Sent once, whatever the browser resends.
    assert_eq!(fed.cases(0, "outgoing").await.unwrap().len(), 1);
    fed.wait_case(1, &id, WAIT, |_| true).await;

    removed(&fed, 1, &id).await;
    fed.wait_case(0, &id, WAIT, |c| c.status == "removed").await;
    b.goto(&format!("{base}/outgoing")).await;
    let row = b.text("#outgoing tbody tr").await;
    assert!(
        row.contains(&id) && row.contains("DE-ECO: delivered"),
        "{row}"
    );
    assert!(row.contains("✓ DE-ECO"), "the signed receipt: {row}");
    let ttd = b.text("#outgoing tbody tr td:last-child").await;
    assert_ne!(ttd, "—", "time to takedown");
    fits(&b, "outgoing").await;
    screenshot(&b, "outgoing").await;

    b.goto(&format!("{base}/statistics")).await;
    assert_eq!(
        b.eval("return document.querySelectorAll('#by-destination rect.bar').length")
            .await,
        1
    );
    assert!(b.text("#table-destination").await.contains("DE-ECO"));
    let weeks = b
        .eval("return [...document.querySelectorAll('#weekly rect.week')].map(r => +r.getAttribute('height'))")
        .await;
    let weeks: Vec<f64> = serde_json::from_value(weeks).unwrap();
    assert_eq!(weeks.len(), 12);
    assert!(*weeks.last().unwrap() > 0.0, "this week's bar: {weeks:?}");
    fits(&b, "statistics").await;
    screenshot(&b, "statistics").await;

    let audit = fed.audit_export(0).await;
    assert!(
        audit.iter().any(|e| e.actor == "operator:FR-PDC/lea"
            && e.kind == "case.read"
            && e.detail["page"] == "outgoing"),
        "the outgoing page's read is audited under lea"
    );
    b.quit().await;
    fed.shutdown().await;
}

/// The federation page: refused to an analyst (and not in her menu);
/// a supervisor sees each peer and the latest checkpoint, and verifies
/// the audit log with the keyboard.
#[tokio::test]
async fn browser_the_federation_page_is_for_supervisors_and_verifies_the_audit_log() {
    let test = "browser_the_federation_page_is_for_supervisors_and_verifies_the_audit_log";
    let Some(b) = Browser::start(test).await else {
        return;
    };
    b.window(1280, 800).await;
    let fed = Federation::builder(AB)
        .prepare(|d| console_on(d, "DE-ECO"))
        .start()
        .await;
    let base = base(&fed, 1);
    let id = fed.submit(0, DE_IP, 1).await.unwrap();
    fed.wait_case(1, &id, WAIT, |_| true).await;
    alertrelay::node::checkpoint::make(fed.core(1))
        .await
        .unwrap();

    logged_in(&b, &fed, 1, "abel", "analyst").await;
    assert!(b.find("a[href='/federation']").await.is_none());
    b.goto(&format!("{base}/federation")).await;
    b.wait_source(WAIT, "Your role may not open this page.")
        .await;
    assert!(b.find("#peers").await.is_none());
    b.click("header .logout button").await;
    b.wait_url(WAIT, |u| u.ends_with("/login")).await;

    logged_in(&b, &fed, 1, "vera", "supervisor").await;
    b.goto(&format!("{base}/federation")).await;
    let peers = b.text("#peers tbody").await;
    assert!(peers.contains("FR-PDC"), "{peers}");
    assert!(b.text("#cosigners").await.contains("DE-ECO"));
    assert!(
        b.text("#checkpoint")
            .await
            .contains("/hotline/DE-ECO/audit")
    );
    b.eval("document.querySelector('header a').focus(); return 0")
        .await;
    b.tab_to("verify-now", 30).await;
    b.keys(ENTER).await;
    b.wait_source(WAIT, "id=\"verified\"").await;
    assert!(b.text("#verified").await.contains("entries"));
    fits(&b, "federation").await;
    screenshot(&b, "federation").await;

    let audit = fed.audit_export(1).await;
    assert!(audit.iter().any(|e| e.actor == "supervisor:DE-ECO/vera"
        && e.kind == "audit.verified"
        && e.detail["ok"] == true));
    assert!(audit.iter().any(|e| e.actor == "operator:DE-ECO/abel"
        && e.kind == "input.refused"
        && e.detail["reason_code"] == "permission-denied"));
    b.quit().await;
    fed.shutdown().await;
}

/// Script put by the origin into a report's notes, its correction and its
/// retraction's reason, and by the receiver into a status reason, is shown
/// as text on every page of both consoles and never runs; every page fits
/// 1280 pixels, in French (the longer strings).
#[tokio::test]
async fn browser_every_page_fits_1280_pixels_and_runs_no_peer_script() {
    let test = "browser_every_page_fits_1280_pixels_and_runs_no_peer_script";
    let Some(b) = Browser::start_with(test, "fr-FR").await else {
        return;
    };
    b.window(1280, 800).await;
    let fed = Federation::builder(AB)
        .prepare(|d| {
            console_on(d, "FR-PDC");
            console_on(d, "DE-ECO");
        })
        .start()
        .await;
    let payload = |n: u8| {
        format!("<img src=x onerror=\"window.pwned={n}\"><script>window.pwned={n}</script>")
    };
    let mut fr = fed.operator(0);
    let id = fr
        .submit_report(pb::SubmitReportRequest {
            urls: vec![format!(
                "http://{DE_IP}/p\"><script>window.pwned=9</script>"
            )],
            category: "csam".into(),
            notes: payload(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report_id;
    fed.wait_case(1, &id, WAIT, |_| true).await;
    fed.operator(1)
        .update_case(pb::UpdateCaseRequest {
            id: id.clone(),
            status: "in-review".into(),
            reason: payload(2),
            ..Default::default()
        })
        .await
        .unwrap();
    fr.correct_report(pb::CorrectReportRequest {
        id: id.clone(),
        notes: payload(3),
        reason: payload(4),
        ..Default::default()
    })
    .await
    .unwrap();
    fed.wait_case(0, &id, WAIT, |c| c.status == "in-review")
        .await;
    fr.retract_report(pb::RetractReportRequest {
        id: id.clone(),
        reason: payload(5),
    })
    .await
    .unwrap();
    fed.wait_case(1, &id, WAIT, |c| c.status == "retracted")
        .await;

    for (i, pages) in [
        (
            1,
            &[
                "/queue",
                "/submit",
                "/outgoing",
                "/statistics",
                "/federation",
                "/users",
                "/account",
            ][..],
        ),
        (0, &["/outgoing", "/statistics", "/federation"][..]),
    ] {
        let base = base(&fed, i);
        logged_in(&b, &fed, i, "ines", "admin").await;
        let case = format!("/case/FR-PDC/{id}");
        for page in pages.iter().copied().chain([case.as_str()]) {
            b.goto(&format!("{base}{page}")).await;
            b.wait_source(WAIT, "</main>").await;
            fits(&b, page).await;
            assert_eq!(
                b.eval("return window.pwned === undefined").await,
                true,
                "{page}"
            );
            assert_eq!(
                b.eval("return document.querySelectorAll('script:not([src]), img').length")
                    .await,
                0,
                "{page}"
            );
        }
        let shown = b.source().await;
        assert!(
            shown.contains("&lt;script&gt;window.pwned=5"),
            "the retraction's reason, as text"
        );
        assert!(shown.contains("<html lang=\"fr\">"), "in French");
        b.click("header .logout button").await;
        b.wait_url(WAIT, |u| u.ends_with("/login")).await;
    }
    b.quit().await;
    fed.shutdown().await;
}

/// The queue's open cases come from an index a page at a time: urgent
/// first, then oldest; closed ones are not in it.
#[tokio::test]
async fn the_open_queue_is_urgent_first_then_oldest_a_page_at_a_time() {
    let fed = Federation::start(AB).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(fed.submit(0, DE_IP, n).await.unwrap());
    }
    let urgent = fed
        .operator(0)
        .submit_report(pb::SubmitReportRequest {
            urls: vec![format!("http://{DE_IP}/urgent")],
            category: "csam".into(),
            priority: pb::Priority::Urgent as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report_id;
    for id in ids.iter().chain([&urgent]) {
        fed.wait_case(1, id, WAIT, |_| true).await;
    }
    removed(&fed, 1, &ids[1]).await;
    let core = fed.core(1);
    let page = |n| alertrelay::node::cases::queue(core, None, n, 2);
    let first: Vec<String> = page(0).await.unwrap().into_iter().map(|c| c.id).collect();
    let second: Vec<String> = page(1).await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(first, [urgent.clone(), ids[0].clone()]);
    assert_eq!(second, [ids[2].clone(), ids[3].clone()]);
    assert!(page(2).await.unwrap().is_empty());
    let grooming = alertrelay::node::cases::queue(core, Some("grooming"), 0, 10)
        .await
        .unwrap();
    assert!(grooming.is_empty());
    fed.shutdown().await;
}
