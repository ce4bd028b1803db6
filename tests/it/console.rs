//! Personal accounts and the analysts' web console (issue #23): accounts
//! through the CLI, enrolment with a password and TOTP, lockout, personal
//! operator certificates; and the console in a real headless Chromium
//! (`common::browser`): enrolment, login, the live queue, working a case
//! to removed, CSRF, expiry, roles, locked accounts and inert peer text.

use std::time::Duration;

use alertrelay::crypto::totp;
use alertrelay::identity::{PeerIdentity, Role};
use alertrelay::node::Core;
use alertrelay::node::users;

use crate::common::browser::Browser;
use crate::common::*;

pub(crate) const AB: &[(&str, &[&str])] = &[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])];
pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// The node's own admin certificate's identity (what `users add` runs as).
fn cert_admin(core: &Core) -> PeerIdentity {
    PeerIdentity::Operator {
        node: core.me.clone(),
        name: "admin".into(),
        role: Role::Admin,
    }
}

fn now_step() -> u64 {
    totp::step_at(u64::try_from(Core::now_ms() / 1000).unwrap())
}

/// A code of `secret` the node will take now, for a step after `last` (a
/// code is accepted once): the earliest step in the node's window (one
/// step of drift) after `last`. Waits for the next step when `last` used
/// up the window, or when this one ends within 3 s (the node must see the
/// same step).
pub(crate) async fn next_code(secret: &str, last: u64) -> (String, u64) {
    loop {
        let ms = u64::try_from(Core::now_ms()).unwrap();
        let left_ms = totp::STEP_SECS * 1000 - ms % (totp::STEP_SECS * 1000);
        let now = now_step();
        let step = now.saturating_sub(1).max(last + 1);
        if step <= now + 1 && left_ms > 3000 {
            let key = totp::from_base32(secret).unwrap();
            return (totp::code_at(&key, step), step);
        }
        tokio::time::sleep(Duration::from_millis(left_ms + 100)).await;
    }
}

/// An account enrolled through the node's functions: its TOTP secret and
/// the step its enrolment code used.
pub(crate) async fn enrolled(core: &Core, name: &str, role: &str) -> (String, u64) {
    let e = users::add(core, &cert_admin(core), name, role)
        .await
        .unwrap();
    let setup = users::begin_enrolment(core, &e.code, PASSWORD)
        .await
        .unwrap();
    let (code, step) = next_code(&setup.secret, 0).await;
    users::finish_enrolment(core, &e.code, &code).await.unwrap();
    (setup.secret, step)
}

pub(crate) fn console_on(dir: &std::path::Path, node: &str) {
    set_toml(
        &dir.join(node).join("node.toml"),
        "console.listen",
        "127.0.0.1:0",
    );
}

#[tokio::test]
async fn accounts_are_managed_through_the_cli_and_audited_under_the_admin() {
    let fed = Federation::builder(AB)
        .prepare(|d| console_on(d, "DE-ECO"))
        .start()
        .await;
    let config = fed.config_path(1);
    let c = arg(&config);
    let (code, out, err) = cli(&[
        "users", "add", "alice", "--role", "analyst", "--config", c, "--json",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let added: serde_json::Value = serde_json::from_str(&out).unwrap();
    let enrol_code = added["enrolment_code"].as_str().unwrap();
    assert_eq!(enrol_code.len(), 24, "a 120-bit code in base32");
    let link = added["link"].as_str().unwrap();
    assert!(
        link.starts_with("https://127.0.0.1:") && link.ends_with(enrol_code),
        "{link}"
    );
    // A second account of that name, and a bad role, are refused by name.
    let (code, _, err) = cli(&["users", "add", "alice", "--role", "analyst", "--config", c]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exists"), "{err}");
    let (code, _, err) = cli(&["users", "add", "bob", "--role", "root", "--config", c]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("role") && !err.contains("root"),
        "field named, value not echoed: {err}"
    );

    let list = |args: &'static [&'static str]| {
        let c = c.to_owned();
        async move {
            let (code, out, err) = cli(&[args, &["--config", &c, "--json"]].concat()).await;
            assert_eq!(code, 0, "{err}");
            serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
        }
    };
    let l = list(&["users", "list"]).await;
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["state"], "enrolling");
    assert_eq!(l[0]["created_by"], "admin:DE-ECO/admin");

    for action in ["disable", "unlock"] {
        let (code, _, err) = cli(&["users", action, "alice", "--config", c]).await;
        assert_eq!(code, 0, "{action}: {err}");
    }
    assert_eq!(list(&["users", "list"]).await[0]["state"], "disabled");
    let (code, out, err) = cli(&["users", "reset", "alice", "--config", c, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let reset: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_ne!(reset["enrolment_code"], added["enrolment_code"]);
    assert_eq!(list(&["users", "list"]).await[0]["state"], "enrolling");
    // The first code no longer enrols; the new one does.
    let core = fed.core(1);
    assert!(
        users::begin_enrolment(core, enrol_code, PASSWORD)
            .await
            .is_err()
    );
    users::begin_enrolment(core, reset["enrolment_code"].as_str().unwrap(), PASSWORD)
        .await
        .unwrap();
    // An analyst's certificate may not manage accounts.
    let refused = fed
        .operator(1)
        .manage_users(alertrelay::pb::ManageUsersRequest {
            action: "list".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    let audit = fed.audit_export(1).await;
    let by_admin: Vec<&str> = audit
        .iter()
        .filter(|e| e.actor == "admin:DE-ECO/admin" && e.subject == "alice")
        .map(|e| e.kind.as_str())
        .collect();
    for kind in ["user.added", "user.disabled", "user.unlocked", "user.reset"] {
        assert!(by_admin.contains(&kind), "{kind} in {by_admin:?}");
    }
    assert!(
        audit
            .iter()
            .any(|e| e.kind == "user.read" && e.actor == "admin:DE-ECO/admin")
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn repeated_failed_logins_lock_an_account_with_growing_delays_until_an_admin_unlocks_it() {
    let fed = Federation::start(AB).await;
    let core = fed.core(1);
    let (secret, last) = enrolled(core, "carol", "analyst").await;
    let (code, last) = next_code(&secret, last).await;
    let who = users::login(core, "carol", PASSWORD, &code).await.unwrap();
    assert_eq!(who.to_string(), "operator:DE-ECO/carol");
    // The same code again is a replay.
    assert!(matches!(
        users::login(core, "carol", PASSWORD, &code).await,
        Err(users::LoginError::Wrong)
    ));
    // Four more failures (a wrong password with a fresh code, wrong codes).
    for _ in 0..3 {
        assert!(matches!(
            users::login(core, "carol", "not the password!", "000000").await,
            Err(users::LoginError::Wrong)
        ));
    }
    let (fresh, _) = next_code(&secret, last).await;
    assert!(matches!(
        users::login(core, "carol", "not the password!", &fresh).await,
        Err(users::LoginError::Wrong)
    ));
    // Locked now: even the right password and a fresh code are refused.
    let Err(users::LoginError::Locked { until_ms }) =
        users::login(core, "carol", PASSWORD, &fresh).await
    else {
        panic!("carol should be locked");
    };
    let lock = until_ms - Core::now_ms();
    assert!(lock > 50_000 && lock <= users::FIRST_LOCK_MS, "{lock}");
    // Each further failure doubles the lock (recorded without checking).
    assert_eq!(users::lock_ms(6), 2 * users::FIRST_LOCK_MS);
    users::change(core, &cert_admin(core), "carol", users::Change::Unlock)
        .await
        .unwrap();
    let who = users::login(core, "carol", PASSWORD, &fresh).await.unwrap();
    assert_eq!(who.role(), Some(Role::Analyst));
    // A disabled account cannot log in at all, with a code that would do.
    let (carl, step) = enrolled(core, "carl", "analyst").await;
    users::change(core, &cert_admin(core), "carl", users::Change::Disable)
        .await
        .unwrap();
    let (code, _) = next_code(&carl, step).await;
    assert!(matches!(
        users::login(core, "carl", PASSWORD, &code).await,
        Err(users::LoginError::Wrong)
    ));

    let audit = fed.audit_export(1).await;
    let carol: Vec<&str> = audit
        .iter()
        .filter(|e| e.actor == "operator:DE-ECO/carol")
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(
        carol.iter().filter(|k| **k == "user.login").count(),
        2,
        "{carol:?}"
    );
    assert_eq!(
        carol.iter().filter(|k| **k == "user.login-failed").count(),
        5,
        "{carol:?}"
    );
    assert!(
        carol.contains(&"input.refused"),
        "the locked attempt: {carol:?}"
    );
    fed.shutdown().await;
}

/// `federation operator issue` writes a personal certificate; with it the
/// CLI's calls are audited under that person, and `audit export --who`
/// finds them.
#[tokio::test]
async fn personal_operator_certificates_name_the_person_in_the_audit_log() {
    let fed = Federation::start(AB).await;
    let dir = fed
        .config_path(0)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let (code, out, err) = cli(&[
        "federation",
        "operator",
        "issue",
        "--dir",
        arg(&dir),
        "--node",
        "FR-PDC",
        "--name",
        "bob",
        "--role",
        "supervisor",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let cert = dir.join("FR-PDC/operators/bob.pem");
    assert!(out.contains(arg(&cert)), "{out}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("FR-PDC/operators/bob.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the key is private");
    // Bob's own copy of node.toml, with his certificate.
    let bob = dir.join("FR-PDC/bob.toml");
    std::fs::copy(fed.config_path(0), &bob).unwrap();
    set_toml(&bob, "operator.cert", arg(&cert));
    set_toml(
        &bob,
        "operator.key",
        arg(&dir.join("FR-PDC/operators/bob.key")),
    );
    let (code, _, err) = cli(&["cases", "list", "--config", arg(&bob)]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&[
        "audit",
        "export",
        "--config",
        arg(&fed.config_path(0)),
        "--who",
        "FR-PDC/bob",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let reads: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reads.len(), 1, "{out}");
    assert_eq!(reads[0]["actor"], "supervisor:FR-PDC/bob");
    assert_eq!(reads[0]["kind"], "case.read");
    // Bob's account disabled by the admin: his certificate is refused too,
    // though the CA has not revoked it.
    let node = arg(&fed.config_path(0)).to_owned();
    for args in [
        &[
            "users",
            "add",
            "bob",
            "--role",
            "supervisor",
            "--config",
            &node,
        ][..],
        &["users", "disable", "bob", "--config", &node][..],
    ] {
        let (code, _, err) = cli(args).await;
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    let (code, _, err) = cli(&["cases", "list", "--config", arg(&bob)]).await;
    assert_ne!(code, 0);
    assert!(err.contains("disabled"), "{err}");
    let (code, _, err) = cli(&["cases", "list", "--config", &node]).await;
    assert_eq!(code, 0, "the node's own certificate still works: {err}");
    // Names outside the grammar are refused before anything is written.
    let (code, _, err) = cli(&[
        "federation",
        "operator",
        "issue",
        "--dir",
        arg(&dir),
        "--node",
        "FR-PDC",
        "--name",
        "../x",
        "--role",
        "analyst",
    ])
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("--name"), "{err}");
    fed.shutdown().await;
}

// ---- in a real browser ----

/// Logs `name` in through the console's login page.
pub(crate) async fn log_in(b: &Browser, base: &str, name: &str, code: &str) {
    send_login(b, base, name, code).await;
    // The form's navigation may still be under way when the click returns:
    // the session exists once the browser has left the login page.
    b.wait_url(Duration::from_secs(20), |u| !u.contains("/login"))
        .await;
}

/// Fills the login form and sends it, whatever the answer.
async fn send_login(b: &Browser, base: &str, name: &str, code: &str) {
    b.goto(&format!("{base}/login")).await;
    b.fill("#name", name).await;
    b.fill("#password", PASSWORD).await;
    b.fill("#totp", code).await;
    b.click("#login").await;
}

/// Saves a screenshot under docs/console/ when asked to
/// (`ALERTRELAY_CONSOLE_SCREENSHOTS=1`), for the README.
pub(crate) async fn screenshot(b: &Browser, name: &str) {
    if std::env::var("ALERTRELAY_CONSOLE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all("docs/console").unwrap();
        std::fs::write(format!("docs/console/{name}.png"), b.screenshot().await).unwrap();
    }
}

/// The "done when" of issue #23: the admin enrols a new analyst in the
/// console; she enrols with a password and TOTP, logs in, sees a report a
/// peer forwarded appear in her queue live, works it to removed without
/// the command line; the origin sees the signed status; both audit logs
/// name the person who acted at each node.
#[tokio::test]
async fn browser_an_enrolled_analyst_works_a_forwarded_case_from_the_queue_to_removed() {
    let Some(b) = Browser::start(
        "browser_an_enrolled_analyst_works_a_forwarded_case_from_the_queue_to_removed",
    )
    .await
    else {
        return;
    };
    let fed = Federation::builder(AB)
        .prepare(|d| console_on(d, "DE-ECO"))
        .start()
        .await;
    let base = format!("https://{}", fed.handle(1).console.as_ref().unwrap().addr);
    let (boss_secret, boss_step) = enrolled(fed.core(1), "boss", "admin").await;

    // The admin adds alice.
    let (code, _) = next_code(&boss_secret, boss_step).await;
    log_in(&b, &base, "boss", &code).await;
    b.wait_url(Duration::from_secs(10), |u| u.ends_with("/queue"))
        .await;
    b.goto(&format!("{base}/users")).await;
    b.fill("#new-name", "alice").await;
    b.click("#add-user").await;
    b.wait_source(Duration::from_secs(10), "enrolment-code")
        .await;
    let enrol_code = b.text("#enrolment-code").await;
    assert_eq!(enrol_code.len(), 24);
    screenshot(&b, "users").await;
    b.click("header .logout button").await;
    b.wait_url(Duration::from_secs(10), |u| u.ends_with("/login"))
        .await;

    // Alice enrols: password, then the authenticator's code.
    b.goto(&format!("{base}/enrol?code={enrol_code}")).await;
    b.fill("#password", PASSWORD).await;
    b.fill("#password2", PASSWORD).await;
    screenshot(&b, "enrol").await;
    b.click("#enrol").await;
    b.wait_source(Duration::from_secs(10), "id=\"secret\"")
        .await;
    let secret = b.text("#secret").await;
    let uri = b.text("#otpauth").await;
    assert!(
        uri.starts_with("otpauth://totp/alertrelay%20DE-ECO:alice?secret="),
        "{uri}"
    );
    assert!(
        b.find("figure.qr svg").await.is_some(),
        "a QR code is shown"
    );
    screenshot(&b, "totp").await;
    let (code, step) = next_code(&secret, 0).await;
    b.fill("#totp", &code).await;
    b.click("#confirm").await;
    b.wait_url(Duration::from_secs(10), |u| u.contains("/login?enrolled=1"))
        .await;

    // She logs in with password and TOTP.
    let (code, _) = next_code(&secret, step).await;
    log_in(&b, &base, "alice", &code).await;
    b.wait_url(Duration::from_secs(10), |u| u.ends_with("/queue"))
        .await;
    let cookies = b.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "__Host-alertrelay-session")
        .expect("a session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["secure"], true);
    assert_eq!(session["sameSite"], "Strict");
    tokio::time::sleep(Duration::from_millis(300)).await; // the event stream opens

    // Bob at FR-PDC submits with his personal certificate; the report is
    // forwarded to DE-ECO and appears in alice's open queue.
    let dir = fed
        .config_path(0)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let (rc, _, err) = cli(&[
        "federation",
        "operator",
        "issue",
        "--dir",
        arg(&dir),
        "--node",
        "FR-PDC",
        "--name",
        "bob",
    ])
    .await;
    assert_eq!(rc, 0, "{err}");
    let bob = dir.join("FR-PDC/bob.toml");
    std::fs::copy(fed.config_path(0), &bob).unwrap();
    set_toml(
        &bob,
        "operator.cert",
        arg(&dir.join("FR-PDC/operators/bob.pem")),
    );
    set_toml(
        &bob,
        "operator.key",
        arg(&dir.join("FR-PDC/operators/bob.key")),
    );
    let url = format!("http://{DE_IP}/console-test");
    let (rc, out, err) = cli(&[
        "submit",
        "--config",
        arg(&bob),
        "--url",
        &url,
        "--category",
        "csam",
        "--json",
    ])
    .await;
    assert_eq!(rc, 0, "{err}");
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.wait_text("#queue tbody", Duration::from_secs(20), |t| t.contains(&id))
        .await;
    assert!(b.title().await.starts_with("(1) "), "{}", b.title().await);
    screenshot(&b, "queue").await;

    // She works the case: in review, illegal (baseline), notice sent, removed.
    b.goto(&format!("{base}/case/FR-PDC/{id}")).await;
    let shown = b.text("ul.urls").await;
    assert!(
        shown.contains("hxxp[://]85[.]214[.]132[.]117/console-test"),
        "{shown}"
    );
    assert_eq!(
        b.eval("return document.querySelectorAll('ul.urls a').length")
            .await,
        0
    );
    for status in ["in-review", "illegal-baseline", "notice-sent", "removed"] {
        b.click(&format!("#to-{status}")).await;
        b.wait_text("#status", Duration::from_secs(10), |t| t == status)
            .await;
        if status == "notice-sent" {
            screenshot(&b, "case").await;
        }
    }
    // The origin sees the signed status.
    fed.wait_case(0, &id, Duration::from_secs(20), |c| c.status == "removed")
        .await;

    let de = fed.audit_export(1).await;
    let alice: Vec<(&str, &str)> = de
        .iter()
        .filter(|e| e.actor == "operator:DE-ECO/alice")
        .map(|e| (e.kind.as_str(), e.subject.as_str()))
        .collect();
    let subject = format!("FR-PDC/{id}");
    assert!(alice.contains(&("user.enrolled", "alice")), "{alice:?}");
    assert!(alice.contains(&("user.login", "alice")), "{alice:?}");
    assert!(
        alice.contains(&("case.read", subject.as_str())),
        "{alice:?}"
    );
    assert_eq!(
        alice
            .iter()
            .filter(|(k, s)| *k == "case.status" && *s == subject)
            .count(),
        4,
        "{alice:?}"
    );
    assert!(
        de.iter()
            .any(|e| e.kind == "user.added" && e.actor == "admin:DE-ECO/boss")
    );
    let fr = fed.audit_export(0).await;
    assert!(
        fr.iter()
            .any(|e| e.actor == "operator:FR-PDC/bob" && e.subject.contains(&id)),
        "the origin's log names bob for the submission"
    );
    b.quit().await;
    fed.shutdown().await;
}

/// What the console refuses, seen from the browser: a form posted without
/// the session's CSRF token, an analyst opening the admin page, a session
/// past its idle timeout, and a locked account's login.
#[tokio::test]
async fn browser_refuses_forged_forms_other_roles_expired_sessions_and_locked_accounts() {
    let test = "browser_refuses_forged_forms_other_roles_expired_sessions_and_locked_accounts";
    let Some(b) = Browser::start(test).await else {
        return;
    };
    let fed = Federation::builder(AB)
        .prepare(|d| console_on(d, "DE-ECO"))
        .start()
        .await;
    let running = fed.handle(1).console.clone().unwrap();
    let base = format!("https://{}", running.addr);
    let id = fed.submit(0, DE_IP, 1).await.unwrap();
    fed.wait_case(1, &id, Duration::from_secs(20), |_| true)
        .await;
    let core = fed.core(1);
    let (secret, step) = enrolled(core, "dave", "analyst").await;
    let (code, step) = next_code(&secret, step).await;
    log_in(&b, &base, "dave", &code).await;
    b.wait_url(Duration::from_secs(10), |u| u.ends_with("/queue"))
        .await;

    // Every answer forbids caching and inline script.
    let csp = b
        .eval("return fetch('/queue').then(r => [r.headers.get('content-security-policy'), r.headers.get('cache-control')])")
        .await;
    assert_eq!(csp[0], alertrelay::console::CSP);
    assert_eq!(csp[1], "no-store");

    // The case page's form, with its CSRF token taken out, is refused and
    // changes nothing.
    b.goto(&format!("{base}/case/FR-PDC/{id}")).await;
    b.eval("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove()); return 0")
        .await;
    b.click("#to-in-review").await;
    b.wait_source(Duration::from_secs(10), "Refused").await;
    // And with a forged one.
    b.goto(&format!("{base}/case/FR-PDC/{id}")).await;
    b.eval(
        "document.querySelectorAll('input[name=csrf]').forEach(e => e.value = 'forged'); return 0",
    )
    .await;
    b.click("#to-in-review").await;
    b.wait_source(Duration::from_secs(10), "Refused").await;
    assert_eq!(fed.case(1, &id).await.unwrap().status, "received");

    // An analyst may not open the users page.
    b.goto(&format!("{base}/users")).await;
    b.wait_source(Duration::from_secs(10), "Your role may not open this page.")
        .await;
    assert!(b.find("#users").await.is_none());

    // Past the idle timeout the session is gone: to the login page.
    running
        .console
        .sessions
        .backdate(Duration::from_secs(31 * 60));
    b.goto(&format!("{base}/queue")).await;
    assert!(
        b.url().await.contains("/login?ended=1"),
        "{}",
        b.url().await
    );
    b.wait_source(Duration::from_secs(10), "Your session ended.")
        .await;

    // Five failures lock the account; then the right password and a fresh
    // code do not get in either.
    for _ in 0..5 {
        b.goto(&format!("{base}/login")).await;
        b.fill("#name", "dave").await;
        b.fill("#password", "wrong password, sorry").await;
        b.fill("#totp", "000000").await;
        b.click("#login").await;
        b.wait_source(Duration::from_secs(10), "Name, password or code is wrong.")
            .await;
    }
    let (code, _) = next_code(&secret, step).await;
    send_login(&b, &base, "dave", &code).await;
    b.wait_source(Duration::from_secs(10), "This account is locked")
        .await;
    assert!(b.url().await.ends_with("/login"), "{}", b.url().await);

    let audit = fed.audit_export(1).await;
    let reasons: Vec<&str> = audit
        .iter()
        .filter(|e| e.actor == "operator:DE-ECO/dave" && e.kind == "input.refused")
        .filter_map(|e| e.detail["reason_code"].as_str())
        .collect();
    for code in ["csrf", "permission-denied", "login-locked"] {
        assert!(reasons.contains(&code), "{code} in {reasons:?}");
    }
    b.quit().await;
    fed.shutdown().await;
}

/// Script put into the fields a peer controls as free text (notes, the
/// URL's path) and a reason an analyst typed is shown as text and never runs.
#[tokio::test]
async fn browser_script_in_peer_controlled_fields_never_runs() {
    let Some(b) = Browser::start("browser_script_in_peer_controlled_fields_never_runs").await
    else {
        return;
    };
    let fed = Federation::builder(AB)
        .prepare(|d| console_on(d, "DE-ECO"))
        .start()
        .await;
    let base = format!("https://{}", fed.handle(1).console.as_ref().unwrap().addr);
    let payload = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>";
    let mut op = fed.operator(0);
    // (Media hashes are held to their algorithm's form at intake, so no
    // markup can come through them.)
    let id = op
        .submit_report(alertrelay::pb::SubmitReportRequest {
            urls: vec![format!(
                "http://{DE_IP}/a\"><script>window.pwned=3</script>"
            )],
            category: "csam".into(),
            notes: payload.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report_id;
    fed.wait_case(1, &id, Duration::from_secs(20), |_| true)
        .await;
    let (secret, step) = enrolled(fed.core(1), "erin", "analyst").await;
    let (code, _) = next_code(&secret, step).await;
    log_in(&b, &base, "erin", &code).await;
    b.goto(&format!("{base}/case/FR-PDC/{id}")).await;
    let notes = b
        .wait_text("p.notes", Duration::from_secs(10), |t| !t.is_empty())
        .await;
    assert_eq!(notes, payload, "shown as text");
    // A reason with script, through the case's own form.
    b.goto(&format!("{base}/case/FR-PDC/{id}")).await;
    b.eval("document.querySelector('form.action input[name=reason]').value = '<script>window.pwned=5</script>'; return 0").await;
    b.click("#to-in-review").await;
    b.wait_text("#status", Duration::from_secs(10), |t| t == "in-review")
        .await;
    assert!(
        b.text("#history")
            .await
            .contains("<script>window.pwned=5</script>")
    );
    b.goto(&format!("{base}/queue")).await;
    b.goto(&format!("{base}/case/FR-PDC/{id}")).await;
    assert_eq!(b.eval("return window.pwned === undefined").await, true);
    assert_eq!(
        b.eval("return document.querySelectorAll('script:not([src])').length")
            .await,
        0
    );
    b.quit().await;
    fed.shutdown().await;
}

/// A person's own account page (every role): the language they choose
/// wins over the browser's on every later page; a language the console
/// does not have is refused by field; their password changes with the
/// current one and a TOTP code (a wrong current password is refused and
/// counts as a failure), other sessions end, and the new password logs
/// in. Each change and refusal is audited under the person.
#[tokio::test]
async fn browser_a_person_chooses_french_and_changes_their_own_password() {
    let test = "browser_a_person_chooses_french_and_changes_their_own_password";
    let Some(b) = Browser::start_with(test, "en-US").await else {
        return;
    };
    let fed = Federation::builder(AB)
        .prepare(|d| console_on(d, "DE-ECO"))
        .start()
        .await;
    let base = format!("https://{}", fed.handle(1).console.as_ref().unwrap().addr);
    let core = fed.core(1);
    let wait = Duration::from_secs(10);
    let (secret, step) = enrolled(core, "lea", "analyst").await;
    let (code, step) = next_code(&secret, step).await;
    log_in(&b, &base, "lea", &code).await;
    b.wait_url(wait, |u| u.ends_with("/queue")).await;
    let lang = || b.eval("return document.documentElement.lang");
    assert_eq!(lang().await, "en", "the browser's language");

    // The account page is reached from every page's header.
    b.click("#account-link").await;
    b.wait_url(wait, |u| u.ends_with("/account")).await;
    // A value the console has no catalogue for: refused by field, unechoed.
    b.eval("const o = document.querySelector('#language option[value=fr]'); o.value = 'zz-evil'; o.selected = true; return 0")
        .await;
    b.click("#save-language").await;
    b.wait_source(wait, "id=\"account-error\"").await;
    let error = b.text("#account-error").await;
    assert!(
        error.contains("language") && !error.contains("zz-evil"),
        "{error}"
    );
    assert_eq!(lang().await, "en", "nothing changed");
    b.goto(&format!("{base}/account")).await;
    screenshot(&b, "account").await;
    // With the keyboard alone: choose, Tab to Save, Enter.
    b.eval("const l = document.querySelector('#language'); l.value = 'fr'; l.focus(); return 0")
        .await;
    b.tab_to("save-language", 3).await;
    b.keys(crate::common::browser::ENTER).await;
    b.wait_text("#account-notice", wait, |t| {
        t == alertrelay::console::text::FR.language_saved
    })
    .await;
    // The next page is French although the browser still asks for English.
    b.goto(&format!("{base}/queue")).await;
    assert_eq!(lang().await, "fr");
    assert!(b.text("header nav").await.contains("File d'attente"));

    // A second session of lea's (another browser) ends when she changes
    // her password in this one.
    let (other, _) = fed
        .handle(1)
        .console
        .as_ref()
        .unwrap()
        .console
        .sessions
        .create("lea");
    b.goto(&format!("{base}/account")).await;
    let (code, changed) = next_code(&secret, step).await;
    let new = "a new and longer passphrase";
    let change = |current: &'static str, code: String| {
        let b = &b;
        async move {
            b.fill("#current-password", current).await;
            b.fill("#new-password", new).await;
            b.fill("#new-password2", new).await;
            b.fill("#account-totp", &code).await;
            b.click("#change-password").await;
        }
    };
    change("not my password at all", code.clone()).await;
    b.wait_source(wait, "id=\"account-error\"").await;
    assert!(b.text("#account-error").await.contains("current_password"));
    let failures = users::list(core, &cert_admin(core)).await.unwrap()[0].failures;
    assert_eq!(failures, 1, "a wrong password counts toward the lock");
    change(PASSWORD, code).await;
    b.wait_text("#account-notice", wait, |t| {
        t == alertrelay::console::text::FR.password_changed
    })
    .await;
    let sessions = &fed.handle(1).console.as_ref().unwrap().console.sessions;
    assert!(sessions.get(&other).is_none(), "the other session ended");

    // The old password no longer logs in; the new one does.
    b.click("header .logout button").await;
    b.wait_url(wait, |u| u.ends_with("/login")).await;
    let (code, _) = next_code(&secret, changed).await;
    assert!(users::login(core, "lea", PASSWORD, &code).await.is_err());
    b.fill("#name", "lea").await;
    b.fill("#password", new).await;
    b.fill("#totp", &code).await;
    b.click("#login").await;
    b.wait_url(wait, |u| u.ends_with("/queue")).await;
    assert_eq!(lang().await, "fr", "the setting stays with the account");

    let audit = fed.audit_export(1).await;
    let lea: Vec<(&str, &str)> = audit
        .iter()
        .filter(|e| e.actor == "operator:DE-ECO/lea")
        .map(|e| {
            let code = e.detail["reason_code"].as_str().unwrap_or("");
            (e.kind.as_str(), code)
        })
        .collect();
    for expected in ["user.language", "user.password-changed"] {
        assert!(
            lea.iter().any(|(k, _)| *k == expected),
            "{expected} in {lea:?}"
        );
    }
    for refusal in ["bad-setting", "bad-password"] {
        assert!(
            lea.iter().any(|(_, c)| *c == refusal),
            "{refusal} in {lea:?}"
        );
    }
    b.quit().await;
    fed.shutdown().await;
}
