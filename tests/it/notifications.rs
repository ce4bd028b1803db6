//! Notifications (issue #26): events raised by real nodes, delivered to a
//! real HTTP receiver on loopback that checks the HMAC signature itself,
//! retried after errors, exactly once per event across a restart, and to
//! a real SMTP server (aiosmtpd, STARTTLS) by email. None carries a
//! reported URL or host name.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use axum::http::{HeaderMap, StatusCode};

const AB: &[(&str, &[&str])] = &[("FR-PDC", &["FR"]), ("DE-ECO", &["DE"])];
const SECRET: &str = "a-shared-webhook-secret-of-the-test";
/// The reported URL: neither it nor its host may reach a notification.
const URL: &str = "http://85.214.132.117/very-secret-path/evidence.jpg";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hook {
    signature: String,
    idempotency_key: String,
    body: Vec<u8>,
    accepted: bool,
}

/// A webhook receiver: refuses the first `fail_first` requests with 503,
/// then accepts; remembers every request.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Hook>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    async fn serve(&self, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(take))
            .with_state(self.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        })
    }

    fn got(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }

    fn accepted(&self) -> Vec<Hook> {
        self.got().into_iter().filter(|h| h.accepted).collect()
    }
}

async fn take(
    axum::extract::State(r): axum::extract::State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let refuse = r
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    // The receiver's own check, as docs/operations.md tells receivers to
    // do it: a request that fails it is refused and never counted.
    let signature = header("alertrelay-signature");
    let valid = signature_valid(SECRET.as_bytes(), &signature, &body);
    r.got.lock().unwrap().push(Hook {
        signature,
        idempotency_key: header("idempotency-key"),
        body: body.to_vec(),
        accepted: valid && !refuse,
    });
    match (valid, refuse) {
        (false, _) => StatusCode::UNAUTHORIZED,
        (true, true) => StatusCode::SERVICE_UNAVAILABLE,
        (true, false) => StatusCode::NO_CONTENT,
    }
}

/// HMAC-SHA256 over `t.body`, written here independently of the node's
/// code: `t=SECONDS,v1=HEX`, within five minutes of now.
fn signature_valid(secret: &[u8], header: &str, body: &[u8]) -> bool {
    use hmac::Mac;
    let field = |k: &str| {
        header
            .split(',')
            .find_map(|p| p.strip_prefix(&format!("{k}=")))
            .map(str::to_owned)
    };
    let (Some(t), Some(v1)) = (field("t"), field("v1")) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let Ok(t_secs) = t.parse::<i64>() else {
        return false;
    };
    let Ok(tag) = hex::decode(v1) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    (now - t_secs).abs() < 300 && mac.verify_slice(&tag).is_ok()
}

/// Configures DE-ECO's `[alerts]` in its node.toml: a webhook to `port`,
/// fast retries, and `extra` keys.
fn alerts_to_webhook(dir: &std::path::Path, port: u16, events: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    let node = dir.join("DE-ECO");
    let secret = node.join("hook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = node.join("node.toml");
    set_toml(
        &config,
        "alerts.console_url",
        "https://console.de.example:8443",
    );
    set_toml(&config, "alerts.scan_interval_secs", 1);
    set_toml(&config, "alerts.retry_initial_ms", 200);
    set_toml(&config, "alerts.retry_max_secs", 1);
    let mut hook = toml::Table::new();
    hook.insert("url".into(), format!("http://127.0.0.1:{port}/hook").into());
    hook.insert("secret_file".into(), "hook.secret".into());
    set_toml(&config, "alerts.webhook.ops", hook);
    let mut route = toml::Table::new();
    route.insert("webhook".into(), "ops".into());
    if !events.is_empty() {
        let events: Vec<toml::Value> = events.iter().map(|e| (*e).into()).collect();
        route.insert("events".into(), events.into());
    }
    set_toml(&config, "alerts.route", vec![toml::Value::Table(route)]);
}

fn json(h: &Hook) -> serde_json::Value {
    serde_json::from_slice(&h.body).expect("a JSON body")
}

/// What no notification may carry: the reported URL, its host, its path.
fn assert_no_url(text: &str) {
    for secret in [
        "85.214.132.117",
        "very-secret-path",
        "evidence.jpg",
        "http://85",
    ] {
        assert!(!text.contains(secret), "{secret:?} in {text}");
    }
}

#[tokio::test]
async fn an_urgent_report_and_an_unassessed_case_reach_a_signed_webhook_retried_until_accepted() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = Receiver::default();
    receiver.fail_first.store(2, Ordering::SeqCst);
    let _server = receiver.serve(listener).await;
    let fed = Federation::builder(AB)
        .quiet_audit()
        .prepare(|dir| {
            alerts_to_webhook(dir, port, &[]);
            // csam cases must be assessed within 2 s here; others 24 h.
            let config = dir.join("DE-ECO/node.toml");
            let mut by = toml::Table::new();
            by.insert("csam".into(), (2.0 / 3600.0).into());
            set_toml(&config, "alerts.unassessed_hours_by_category", by);
        })
        .start()
        .await;
    let mut fr = fed.operator(0);
    let id = submit_urgent(&mut fr, URL).await;
    let case_id = format!("FR-PDC/{id}");

    let hooks = eventually(
        30,
        || async { receiver.accepted() },
        |h: &Vec<Hook>| {
            let events: Vec<_> = h.iter().map(|h| json(h)["event"].clone()).collect();
            events.contains(&"urgent_report".into()) && events.contains(&"case_unassessed".into())
        },
    )
    .await;
    for hook in &hooks {
        let body = json(hook);
        assert_eq!(body["facts"]["case_id"], case_id.as_str(), "{body}");
        assert_eq!(body["facts"]["category"], "csam");
        assert_eq!(body["facts"]["country"], "DE");
        assert_eq!(body["node"], "DE-ECO");
        assert_eq!(
            body["console_link"],
            format!("https://console.de.example:8443/case/FR-PDC/{id}").as_str()
        );
        assert_eq!(body["id"], hook.idempotency_key.as_str());
        assert!(body.get("urls").is_none(), "{body}");
        assert_no_url(&String::from_utf8_lossy(&hook.body));
    }
    let urgent = hooks
        .iter()
        .find(|h| json(h)["event"] == "urgent_report")
        .unwrap();
    assert_eq!(json(urgent)["severity"], "critical");
    let unassessed = hooks
        .iter()
        .find(|h| json(h)["event"] == "case_unassessed")
        .unwrap();
    assert_eq!(json(unassessed)["severity"], "warning");
    assert_eq!(json(unassessed)["facts"]["status"], "received");

    // The first two attempts were refused: each was retried, with the
    // same idempotency key, and every request was validly signed.
    let all = receiver.got();
    assert!(all.len() >= 4, "{all:#?}");
    assert!(
        all.iter()
            .all(|h| signature_valid(SECRET.as_bytes(), &h.signature, &h.body))
    );
    for refused in all.iter().filter(|h| !h.accepted) {
        assert!(
            hooks
                .iter()
                .any(|a| a.idempotency_key == refused.idempotency_key),
            "a refused notification was never delivered"
        );
    }
    // One accepted delivery per event, and the node knows them delivered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let accepted = receiver.accepted();
    let mut keys: Vec<_> = accepted.iter().map(|h| h.idempotency_key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), accepted.len(), "an event was delivered twice");
    let rows = fed.core(1).store.alert_deliveries().await.unwrap();
    assert_eq!(rows.len(), accepted.len(), "{rows:#?}");
    assert!(rows.iter().all(|r| r.delivered_at_ms.is_some()));
    assert!(rows.iter().any(|r| r.attempts >= 2), "{rows:#?}");
    fed.shutdown().await;
}

#[tokio::test]
async fn a_notification_queued_while_the_receiver_is_down_is_delivered_once_after_a_restart() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut fed = Federation::builder(AB)
        .quiet_audit()
        .prepare(|dir| alerts_to_webhook(dir, port, &["urgent_report"]))
        .start()
        .await;
    let mut fr = fed.operator(0);
    submit_urgent(&mut fr, URL).await;
    // Nothing listens: the node tries, fails and keeps the notification.
    let failed = eventually(
        30,
        || async { fed.core(1).store.alert_deliveries().await.unwrap() },
        |rows| rows.len() == 1 && rows[0].attempts >= 2,
    )
    .await;
    assert!(failed[0].delivered_at_ms.is_none());
    assert!(failed[0].last_error.is_some());
    fed.stop(1).await;

    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let _server = receiver.serve(listener).await;
    fed.restart(1).await;
    eventually(30, || async { receiver.got().len() }, |n| *n >= 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = receiver.got();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].accepted);
    assert_eq!(json(&got[0])["event"], "urgent_report");
    assert_eq!(got[0].idempotency_key, failed[0].alert_id);
    let rows = fed.core(1).store.alert_deliveries().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].delivered_at_ms.is_some());
    fed.shutdown().await;
}

/// The Python environment `.ci/run` installs aiosmtpd into; None (the
/// test skips, saying why) when it is absent and not required.
fn smtp_python(test: &str) -> Option<std::path::PathBuf> {
    let venv = match std::env::var_os("ALERTRELAY_VALIDATORS") {
        Some(dir) if !dir.is_empty() => std::path::PathBuf::from(dir),
        _ => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv"),
    };
    let python = venv.join("bin/python");
    let works = std::process::Command::new(&python)
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(python);
    }
    assert!(
        std::env::var("ALERTRELAY_REQUIRE_SMTP").unwrap_or_default() != "1",
        "{test}: ALERTRELAY_REQUIRE_SMTP is set, but {} cannot import aiosmtpd",
        python.display()
    );
    eprintln!("SKIPPED {test}: aiosmtpd is not installed (.ci/run installs it into .ci/venv)");
    None
}

/// aiosmtpd on 127.0.0.1:`port`, STARTTLS required with `cert`/`key`,
/// writing what it receives into the Maildir `mail`.
async fn smtp_server(
    python: &std::path::Path,
    port: u16,
    cert: &std::path::Path,
    key: &std::path::Path,
    mail: &std::path::Path,
) -> tokio::process::Child {
    let child = tokio::process::Command::new(python)
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .arg("--tlscert")
        .arg(cert)
        .arg("--tlskey")
        .arg(key)
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(mail)
        .kill_on_drop(true)
        .spawn()
        .expect("start aiosmtpd");
    eventually(
        20,
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
        |up| *up,
    )
    .await;
    child
}

/// The messages in a Maildir, with folded header lines unfolded and a
/// quoted-printable body decoded.
fn maildir(mail: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(mail.join("new")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .map(|m| {
            let m = m.replace("\r\n", "\n");
            let (head, body) = m.split_once("\n\n").unwrap_or((&m, ""));
            let head = head.replace("\n ", " ").replace("\n\t", " ");
            let body = if head.contains("Content-Transfer-Encoding: quoted-printable") {
                quoted_printable(body)
            } else {
                body.to_owned()
            };
            format!("{head}\n\n{body}")
        })
        .collect()
}

/// RFC 2045 quoted-printable: soft line breaks joined, `=XX` decoded.
fn quoted_printable(s: &str) -> String {
    let joined = s.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_email_route_sends_through_smtp_with_starttls_and_no_url() {
    let test = "an_email_route_sends_through_smtp_with_starttls_and_no_url";
    let Some(python) = smtp_python(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // The mail server's certificate, from a CA only this test has.
    let ca = alertrelay::crypto::pki::FederationCa::generate("smtp-test").unwrap();
    let leaf = ca
        .node_cert(&alertrelay::identity::NodeId::new("SMTP").unwrap(), &[])
        .unwrap();
    let (cert, key, ca_pem) = (
        tmp.path().join("smtp.pem"),
        tmp.path().join("smtp.key"),
        tmp.path().join("smtp-ca.pem"),
    );
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    std::fs::write(&ca_pem, &ca.cert_pem).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mail = tmp.path().join("mail");
    let _smtp = smtp_server(&python, port, &cert, &key, &mail).await;

    let fed = Federation::builder(AB)
        .quiet_audit()
        .prepare(|dir| {
            let config = dir.join("DE-ECO/node.toml");
            set_toml(
                &config,
                "alerts.console_url",
                "https://console.de.example:8443",
            );
            set_toml(&config, "alerts.retry_initial_ms", 200);
            let mut smtp = toml::Table::new();
            smtp.insert("server".into(), "127.0.0.1".into());
            smtp.insert("port".into(), i64::from(port).into());
            smtp.insert("from".into(), "alertrelay@de.example".into());
            smtp.insert("ca".into(), ca_pem.display().to_string().into());
            set_toml(&config, "alerts.smtp", smtp);
            let mut route = toml::Table::new();
            route.insert(
                "events".into(),
                vec![toml::Value::from("urgent_report")].into(),
            );
            route.insert(
                "email".into(),
                vec![
                    toml::Value::from("duty@de.example"),
                    toml::Value::from("lead@de.example"),
                ]
                .into(),
            );
            set_toml(&config, "alerts.route", vec![toml::Value::Table(route)]);
        })
        .start()
        .await;
    let mut fr = fed.operator(0);
    let id = submit_urgent(&mut fr, URL).await;
    let messages = eventually(30, || async { maildir(&mail) }, |m| !m.is_empty()).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let m = &messages[0];
    let subject = format!(
        "Subject: [alertrelay DE-ECO] CRITICAL: Urgent report FR-PDC/{id} (csam) received from FR-PDC"
    );
    assert!(m.contains(&subject), "{m}");
    assert!(m.contains("From: alertrelay@de.example"), "{m}");
    assert!(
        m.contains("duty@de.example") && m.contains("lead@de.example"),
        "{m}"
    );
    assert!(m.contains(&format!("case_id: FR-PDC/{id}")), "{m}");
    assert!(
        m.contains("category: csam") && m.contains("country: DE"),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "Open the case: https://console.de.example:8443/case/FR-PDC/{id}"
        )),
        "{m}"
    );
    assert_no_url(m);
    // The server has the message before the node hears its answer and
    // records the delivery: wait for the record, then check nothing was
    // sent twice.
    let rows = eventually(
        30,
        || async { fed.core(1).store.alert_deliveries().await.unwrap() },
        |rows| rows.iter().any(|d| d.delivered_at_ms.is_some()),
    )
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].channel, "email:duty@de.example,lead@de.example");
    assert_eq!(maildir(&mail).len(), 1);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_node_process_killed_then_started_raises_crash_restart_and_a_clean_stop_does_not() {
    let mut fed = Federation::builder(&[("FR-PDC", &["FR"])])
        .quiet_audit()
        .processes()
        .start()
        .await;
    fed.stop(0).await; // SIGTERM: a clean stop, audited
    fed.restart(0).await;
    fed.kill(0).await; // SIGKILL: nothing is recorded
    fed.restart(0).await;
    fed.stop(0).await;
    let store = alertrelay::store::Store::open(&fed.database(0))
        .await
        .unwrap();
    let alerts = store.alerts().await.unwrap();
    store.close().await;
    let crashes: Vec<_> = alerts
        .iter()
        .filter(|a| a.event == "crash_restart")
        .collect();
    assert_eq!(crashes.len(), 1, "{alerts:#?}");
    assert_eq!(crashes[0].severity, "warning");
    assert!(crashes[0].summary.contains("unclean stop"), "{crashes:?}");
    fed.shutdown().await;
}

#[tokio::test]
async fn the_scan_raises_a_silent_peer_an_overdue_takedown_expiring_material_and_a_full_disk_once_each()
 {
    let mut fed = Federation::builder(AB)
        .quiet_audit()
        .prepare(|dir| {
            let config = dir.join("DE-ECO/node.toml");
            set_toml(&config, "alerts.scan_interval_secs", 1);
            // A peer silent for 3 s; material expiring within 20 years
            // (the test CA's certificates live 10).
            set_toml(&config, "alerts.peer_unreachable_mins", 0.05);
            set_toml(&config, "alerts.expiry_days", 7300.0);
            // Illegal csam content must be down within 2 s here.
            let mut by = toml::Table::new();
            by.insert("csam".into(), (2.0 / 86_400.0).into());
            set_toml(&config, "alerts.takedown_days_by_category", by);
            // No disk is this empty: the disk is "filling".
            set_toml(&config, "alerts.disk_min_free_percent", 99.999);
        })
        .start()
        .await;
    // A case DE-ECO judged illegal and has not had taken down.
    let mut fr = fed.operator(0);
    let id = submit(&mut fr, URL, "").await.report_id;
    let mut de = fed.operator(1);
    fed.wait_case(1, &id, Duration::from_secs(15), |c| c.status == "received")
        .await;
    for status in ["in-review", "illegal-baseline"] {
        de.update_case(alertrelay::pb::UpdateCaseRequest {
            id: id.clone(),
            status: status.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    fed.stop(0).await;
    let raised = eventually(
        30,
        || async { fed.core(1).store.alerts().await.unwrap() },
        |a| {
            ["peer_unreachable", "no_takedown", "disk_low"]
                .iter()
                .all(|e| a.iter().any(|a| a.event == *e))
        },
    )
    .await;
    let takedown = raised.iter().find(|a| a.event == "no_takedown").unwrap();
    assert!(
        takedown.summary.contains(&format!("FR-PDC/{id}"))
            && takedown.summary.contains("illegal-baseline"),
        "{takedown:?}"
    );
    assert_no_url(&takedown.summary);
    assert_eq!(
        raised
            .iter()
            .find(|a| a.event == "disk_low")
            .unwrap()
            .severity,
        "critical"
    );
    let silent: Vec<_> = raised
        .iter()
        .filter(|a| a.event == "peer_unreachable")
        .collect();
    assert!(silent[0].summary.contains("FR-PDC"), "{silent:?}");
    let expiring: Vec<_> = raised.iter().filter(|a| a.event == "expiry").collect();
    let what = |w: &str| expiring.iter().any(|a| a.summary.contains(w));
    assert!(
        what("node certificate") && what("CA certificate") && what("CRL"),
        "{expiring:#?}"
    );
    // Scans go on (one a second): each condition stays raised once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = fed.core(1).store.alerts().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = fed.core(1).store.alerts().await.unwrap();
    assert_eq!(before.len(), after.len(), "{after:#?}");
    fed.shutdown().await;
}

#[test]
fn alerts_settings_that_cannot_work_are_refused_naming_the_key_without_echoing_the_value() {
    let fed = Federation::builder(AB).provision();
    let config = fed.configs[1].clone();
    let refused = |key: &str, value: toml::Value| {
        let text = std::fs::read_to_string(&config).unwrap();
        set_toml(&config, key, value);
        let e = alertrelay::config::NodeConfig::load(&config).unwrap_err();
        std::fs::write(&config, text).unwrap();
        e.to_string()
    };
    let mut hook = toml::Table::new();
    hook.insert("url".into(), "http://hooks.example/secret-hook".into());
    hook.insert("secret_file".into(), "s".into());
    let e = refused("alerts.webhook.ops", hook.into());
    assert!(
        e.contains("alerts.webhook.url") && e.contains("loopback"),
        "{e}"
    );
    assert!(!e.contains("hooks.example"), "{e}");
    let mut route = toml::Table::new();
    route.insert(
        "events".into(),
        vec![toml::Value::from("http://x.example/")].into(),
    );
    route.insert(
        "email".into(),
        vec![toml::Value::from("a@b.example")].into(),
    );
    let e = refused("alerts.route", vec![toml::Value::Table(route)].into());
    assert!(
        e.contains("alerts.route.events") && e.contains("urgent_report"),
        "{e}"
    );
    assert!(!e.contains("x.example"), "{e}");
    let mut route = toml::Table::new();
    route.insert("webhook".into(), "nowhere".into());
    let e = refused("alerts.route", vec![toml::Value::Table(route)].into());
    assert!(e.contains("alerts.route.webhook"), "{e}");
    let mut by = toml::Table::new();
    by.insert("not-a-category".into(), 1.0.into());
    let e = refused("alerts.unassessed_hours_by_category", by.into());
    assert!(e.contains("alerts.unassessed_hours_by_category"), "{e}");
    assert!(!e.contains("not-a-category"), "{e}");
}

#[tokio::test]
async fn only_a_route_that_opted_in_gets_the_reported_urls() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = Receiver::default();
    let _server = receiver.serve(listener).await;
    let fed = Federation::builder(AB)
        .quiet_audit()
        .prepare(|dir| {
            alerts_to_webhook(dir, port, &["urgent_report"]);
            // A second webhook to the same receiver (another path is not
            // needed: the body tells them apart), opted in.
            let config = dir.join("DE-ECO/node.toml");
            let mut hook = toml::Table::new();
            hook.insert("url".into(), format!("http://127.0.0.1:{port}/hook").into());
            hook.insert("secret_file".into(), "hook.secret".into());
            set_toml(&config, "alerts.webhook.analysts", hook);
            let text = std::fs::read_to_string(&config).unwrap();
            let mut doc: toml::Table = toml::from_str(&text).unwrap();
            let routes = doc["alerts"]["route"].as_array_mut().unwrap();
            let mut opted = toml::Table::new();
            opted.insert("webhook".into(), "analysts".into());
            opted.insert(
                "events".into(),
                vec![toml::Value::from("urgent_report")].into(),
            );
            opted.insert("include_urls".into(), true.into());
            routes.push(opted.into());
            std::fs::write(&config, toml::to_string_pretty(&doc).unwrap()).unwrap();
        })
        .start()
        .await;
    let mut fr = fed.operator(0);
    submit_urgent(&mut fr, URL).await;
    let hooks = eventually(30, || async { receiver.accepted() }, |h| h.len() >= 2).await;
    let (with, without): (Vec<_>, Vec<_>) = hooks
        .iter()
        .map(json)
        .partition(|b| b.get("urls").is_some());
    assert_eq!((with.len(), without.len()), (1, 1), "{hooks:#?}");
    assert_eq!(with[0]["urls"], serde_json::json!([URL]));
    assert_eq!(with[0]["id"], without[0]["id"], "one event, two channels");
    assert_no_url(&without[0].to_string());
    // Once delivered, no body is kept: the URLs leave the database.
    let rows = eventually(
        10,
        || async { fed.core(1).store.alert_deliveries().await.unwrap() },
        |r| r.len() == 2 && r.iter().all(|r| r.delivered_at_ms.is_some()),
    )
    .await;
    assert!(rows.iter().all(|r| r.body.is_empty()), "{rows:#?}");
    fed.shutdown().await;
}

#[tokio::test]
async fn on_postgresql_an_event_is_stored_once_and_its_webhook_delivered_once() {
    let test = "on_postgresql_an_event_is_stored_once_and_its_webhook_delivered_once";
    let Some(db) = crate::common::pg::TestDb::create(test).await else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = Receiver::default();
    receiver.fail_first.store(1, Ordering::SeqCst);
    let _server = receiver.serve(listener).await;
    let fed = Federation::builder(AB)
        .quiet_audit()
        .database(1, &db.url)
        .prepare(|dir| {
            alerts_to_webhook(dir, port, &[]);
            let config = dir.join("DE-ECO/node.toml");
            let mut by = toml::Table::new();
            by.insert("csam".into(), (1.0 / 3600.0).into());
            set_toml(&config, "alerts.unassessed_hours_by_category", by);
        })
        .start()
        .await;
    let mut fr = fed.operator(0);
    let id = submit_urgent(&mut fr, URL).await;
    let hooks = eventually(
        30,
        || async { receiver.accepted() },
        |h: &Vec<Hook>| h.len() >= 2,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.accepted().len(), hooks.len(), "delivered twice");
    let mut events: Vec<_> = hooks
        .iter()
        .map(|h| json(h)["event"].as_str().unwrap().to_owned())
        .collect();
    events.sort();
    assert_eq!(events, ["case_unassessed", "urgent_report"]);
    let store = &fed.core(1).store;
    let raised = store.alerts().await.unwrap();
    assert_eq!(raised.len(), 2, "{raised:#?}");
    let rows = store.alert_deliveries().await.unwrap();
    assert!(
        rows.iter().all(|r| r.delivered_at_ms.is_some()),
        "{rows:#?}"
    );
    assert!(rows.iter().any(|r| r.attempts == 2), "{rows:#?}");
    assert!(
        hooks
            .iter()
            .all(|h| json(h)["facts"]["case_id"] == format!("FR-PDC/{id}").as_str())
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn a_mail_server_without_starttls_gets_nothing_and_the_mail_waits() {
    let test = "a_mail_server_without_starttls_gets_nothing_and_the_mail_waits";
    let Some(python) = smtp_python(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mail = tmp.path().join("mail");
    // aiosmtpd with no certificate: it offers no STARTTLS.
    let _smtp = tokio::process::Command::new(&python)
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&mail)
        .kill_on_drop(true)
        .spawn()
        .expect("start aiosmtpd");
    eventually(
        20,
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
        |up| *up,
    )
    .await;
    let fed = Federation::builder(AB)
        .quiet_audit()
        .prepare(|dir| {
            let config = dir.join("DE-ECO/node.toml");
            set_toml(&config, "alerts.retry_initial_ms", 200);
            let mut smtp = toml::Table::new();
            smtp.insert("server".into(), "127.0.0.1".into());
            smtp.insert("port".into(), i64::from(port).into());
            smtp.insert("from".into(), "alertrelay@de.example".into());
            set_toml(&config, "alerts.smtp", smtp);
            let mut route = toml::Table::new();
            route.insert(
                "email".into(),
                vec![toml::Value::from("duty@de.example")].into(),
            );
            set_toml(&config, "alerts.route", vec![toml::Value::Table(route)]);
        })
        .start()
        .await;
    let mut fr = fed.operator(0);
    submit_urgent(&mut fr, URL).await;
    let rows = eventually(
        30,
        || async { fed.core(1).store.alert_deliveries().await.unwrap() },
        |rows| rows.iter().any(|r| r.attempts >= 2),
    )
    .await;
    assert!(
        rows.iter().all(|r| r.delivered_at_ms.is_none()),
        "{rows:#?}"
    );
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(error.to_lowercase().contains("tls"), "{error}");
    assert!(maildir(&mail).is_empty(), "a mail went out in clear");
    fed.shutdown().await;
}

#[tokio::test]
async fn doctor_fails_a_webhook_secret_others_can_read_and_passes_it_at_0600() {
    use std::os::unix::fs::PermissionsExt;
    let fed = Federation::builder(AB).provision();
    alerts_to_webhook(fed.dir.path(), 1, &[]);
    let config = fed.dir.path().join("DE-ECO/node.toml");
    let secret = fed.dir.path().join("DE-ECO/hook.secret");
    let check = |out: &str| {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "alerts.webhook.ops")
            .cloned()
            .unwrap_or_else(|| panic!("no webhook check: {out}"))
    };
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, _) = cli(&["doctor", "--config", arg(&config), "--json"]).await;
    assert_ne!(code, 0);
    let c = check(&out);
    assert_eq!(c["status"], "fail", "{c}");
    assert!(c["detail"].as_str().unwrap().contains("0600"), "{c}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, out, _) = cli(&["doctor", "--config", arg(&config), "--json"]).await;
    assert_eq!(check(&out)["status"], "ok");
}

/// The sample of `metric` on `page`, as a number.
fn gauge(page: &str, metric: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(metric))
        .unwrap_or_else(|| panic!("no {metric}:\n{page}"))
        .trim()
        .parse()
        .unwrap()
}

/// Operators see notifications that are not going out (the gauges rise,
/// `alertrelay status` lists them; an urgent report of the node's own
/// analyst adds none), and retention gives one up after
/// `undelivered_notifications_days`, dropping its body (the reported URLs
/// its route opted into) from the database's files, and deletes the old
/// alert with it.
#[tokio::test]
async fn a_receiver_that_is_down_shows_in_the_gauges_and_status_until_retention_gives_up() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let fed = Federation::builder(AB)
        .quiet_audit()
        .prepare(|dir| {
            alerts_to_webhook(dir, port, &["urgent_report"]);
            let config = dir.join("DE-ECO/node.toml");
            let text = std::fs::read_to_string(&config).unwrap();
            let mut doc: toml::Table = toml::from_str(&text).unwrap();
            doc["alerts"]["route"].as_array_mut().unwrap()[0]
                .as_table_mut()
                .unwrap()
                .insert("include_urls".into(), true.into());
            std::fs::write(&config, toml::to_string_pretty(&doc).unwrap()).unwrap();
            set_toml(&config, "retention.undelivered_notifications_days", 0);
            set_toml(&config, "retention.alerts_days", 0);
        })
        .start()
        .await;
    let mut fr = fed.operator(0);
    submit_urgent(&mut fr, URL).await;
    let waiting = "alertrelay_notifications_waiting{channel=\"webhook:ops\"}";
    let age = "alertrelay_notifications_oldest_waiting_age_seconds{channel=\"webhook:ops\"}";
    let page = eventually(
        30,
        || fed.metrics(1),
        |p| p.contains(&format!("{waiting} 1\n")),
    )
    .await;
    let first = gauge(&page, age);
    // An urgent report DE-ECO's own analyst submits raises nothing here
    // (`urgent_report` is about reports from peers): still one waits.
    let mut de = fed.operator(1);
    submit_urgent(&mut de, "http://85.214.132.118/own-analyst/x.jpg").await;
    let urgent = fed.core(1).store.alerts().await.unwrap();
    let urgent: Vec<_> = urgent
        .iter()
        .filter(|a| a.event == "urgent_report")
        .collect();
    assert_eq!(urgent.len(), 1, "{urgent:#?}");
    assert!(urgent[0].summary.contains("FR-PDC"), "{urgent:#?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let page = fed.metrics(1).await;
    assert_eq!(gauge(&page, waiting), 1.0);
    assert!(
        gauge(&page, age) >= first + 1.0,
        "the age does not rise:\n{page}"
    );
    let rows = fed.core(1).store.alert_deliveries().await.unwrap();
    assert!(
        rows[0].attempts >= 1 && rows[0].delivered_at_ms.is_none(),
        "{rows:#?}"
    );
    assert!(
        rows[0].body.contains("very-secret-path"),
        "the route opted in"
    );
    // The body as stored (the case itself keeps its URL, in its payload).
    let body_urls = format!("\"urls\":[\"{URL}\"]");
    assert!(files_hold(&fed.database(1), &body_urls));

    let cfg = fed.config_path(1);
    let (code, out, err) = cli(&["status", "--config", arg(&cfg)]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("notifications waiting for webhook:ops: 1 (oldest "),
        "{out}"
    );

    let (code, out, err) = cli(&["retention", "run", "--config", arg(&cfg), "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(run["notifications_given_up"], 1, "{run}");
    assert!(run["alerts"].as_u64().unwrap() >= 1, "{run}");
    assert_eq!(run["files_clean"], true, "{run}");
    let store = &fed.core(1).store;
    assert!(store.alert_deliveries().await.unwrap().is_empty());
    assert!(
        store
            .alerts()
            .await
            .unwrap()
            .iter()
            .all(|a| a.event != "urgent_report")
    );
    assert!(
        !files_hold(&fed.database(1), &body_urls),
        "the given-up body is still in the database's files"
    );
    let page = fed.metrics(1).await;
    assert_eq!((gauge(&page, waiting), gauge(&page, age)), (0.0, 0.0));
    let (_, out, _) = cli(&["status", "--config", arg(&cfg)]).await;
    assert!(out.contains("notifications: none waiting"), "{out}");
    let audit = store.audit_entries(0, 10_000).await.unwrap();
    let entry = audit
        .iter()
        .find(|e| e.kind == "retention.alerts")
        .expect("the retention.alerts audit entry");
    assert!(
        !entry.detail.contains("very-secret-path"),
        "{}",
        entry.detail
    );
    fed.shutdown().await;
}
