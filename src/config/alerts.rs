//! `[alerts]`: the events the node raises (their names and severities),
//! the thresholds that decide when, the channels (webhooks, one SMTP
//! server) and the `[[alerts.route]]` rules that send each event to a
//! channel. Checked here; raised by `node::alerts`, delivered by `notify`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::report::Category;

use super::Invalid;

/// How much an event needs someone: routes choose by a minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    fn parse(s: &str) -> Option<Severity> {
        [Severity::Info, Severity::Warning, Severity::Critical]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// Every event the node raises, with its severity (docs/operations.md
/// "Alerts" lists what each means and what to do).
pub const EVENTS: &[(&str, Severity)] = &[
    ("urgent_report", Severity::Critical),
    ("case_unassessed", Severity::Warning),
    ("no_takedown", Severity::Warning),
    ("peer_unreachable", Severity::Warning),
    ("delivery_refused", Severity::Warning),
    ("witness_alarm", Severity::Critical),
    ("equivocation", Severity::Critical),
    ("directory_refused", Severity::Critical),
    ("expiry", Severity::Warning),
    ("disk_low", Severity::Critical),
    ("crash_restart", Severity::Warning),
];

/// The severity of the event named `name` (None: no such event).
pub fn severity_of(name: &str) -> Option<Severity> {
    EVENTS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// `[alerts]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAlerts {
    /// The console's address as analysts reach it (`https://…`): each
    /// notification links to its case there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
    /// How often the node looks for overdue cases, silent peers, expiring
    /// material and a filling disk (seconds; default 60).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan_interval_secs: Option<u64>,
    /// An incoming case still `received` after this many hours
    /// (`case_unassessed`; default 24), per category below.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unassessed_hours: Option<f64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unassessed_hours_by_category: BTreeMap<String, f64>,
    /// A case judged illegal but not `removed` this many days after it
    /// arrived (`no_takedown`; default 3), per category below.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub takedown_days: Option<f64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub takedown_days_by_category: BTreeMap<String, f64>,
    /// A peer not seen answering for this many minutes (default 60).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_unreachable_mins: Option<f64>,
    /// A certificate, CRL, the signed directory or the signing key expiring
    /// within this many days (default 14).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_days: Option<f64>,
    /// Free space on the database's file system below this percentage
    /// (default 10; SQLite only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_min_free_percent: Option<f64>,
    /// A notification that could not be delivered is tried again after
    /// this long, doubling up to `retry_max_secs` (defaults 5 and 3600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_initial_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max_secs: Option<u64>,
    /// Webhooks by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub webhook: BTreeMap<String, RawWebhook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<RawSmtp>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RawRoute>,
}

impl RawAlerts {
    pub fn is_default(&self) -> bool {
        *self == RawAlerts::default()
    }
}

/// `[alerts.webhook.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// `https://…`, or `http://` to a loopback address only.
    pub url: String,
    /// A file (mode 0600) holding the shared secret the body is signed
    /// with (HMAC-SHA256).
    pub secret_file: String,
    /// Extra CA certificates (PEM) to trust for this URL, beside the
    /// public web's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// `[alerts.smtp]`: one mail server, always with STARTTLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    pub server: String,
    #[serde(default = "submission_port")]
    pub port: u16,
    /// The sender address.
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file (mode 0600) holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// Extra CA certificates (PEM) to trust for the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

fn submission_port() -> u16 {
    587
}

/// `[[alerts.route]]`: these events go to this channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRoute {
    /// Event names; every event when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// `info`, `warning` or `critical` (default info: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<String>,
    /// A webhook's name, or …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// … email recipients (through `[alerts.smtp]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<String>,
    /// Put reported URLs and host names into the notification. Off by
    /// default: see the warning in docs/operations.md.
    pub include_urls: bool,
}

/// `[alerts]`, checked.
#[derive(Debug, Clone)]
pub struct Alerts {
    pub console_url: Option<String>,
    pub scan_interval: Duration,
    pub unassessed: Thresholds,
    pub takedown: Thresholds,
    pub peer_unreachable: Duration,
    pub expiry: Duration,
    pub disk_min_free_percent: f64,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub webhooks: BTreeMap<String, Webhook>,
    pub smtp: Option<Smtp>,
    pub routes: Vec<Route>,
}

/// A default and per-category durations.
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub default: Duration,
    pub by_category: Vec<(Category, Duration)>,
}

impl Thresholds {
    pub fn of(&self, category: &str) -> Duration {
        Category::parse(category)
            .ok()
            .and_then(|c| self.by_category.iter().find(|(k, _)| *k == c))
            .map_or(self.default, |(_, d)| *d)
    }

    /// The shortest of them: cases younger than this are never overdue.
    pub fn shortest(&self) -> Duration {
        self.by_category
            .iter()
            .map(|(_, d)| *d)
            .fold(self.default, Duration::min)
    }
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: url::Url,
    pub secret_file: PathBuf,
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Smtp {
    pub server: String,
    pub port: u16,
    pub from: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

/// Where a route sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    Webhook(String),
    Email(Vec<String>),
}

impl Channel {
    /// A stable name for the delivery table: `webhook:NAME` or
    /// `email:a@x,b@y`.
    pub fn key(&self) -> String {
        match self {
            Channel::Webhook(n) => format!("webhook:{n}"),
            Channel::Email(to) => format!("email:{}", to.join(",")),
        }
    }
}

/// A channel as logs, metrics and `alertrelay status` name it:
/// `webhook:NAME` as is, every e-mail list as `email` (no addresses).
pub fn channel_label(key: &str) -> &str {
    if key.starts_with("email:") {
        "email"
    } else {
        key
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub events: Vec<String>,
    pub min_severity: Severity,
    pub channel: Channel,
    pub include_urls: bool,
}

impl Route {
    pub fn matches(&self, event: &str, severity: Severity) -> bool {
        severity >= self.min_severity
            && (self.events.is_empty() || self.events.iter().any(|e| e == event))
    }
}

impl Alerts {
    /// The routes an event goes through, in file order, one per channel.
    pub fn routes_for(&self, event: &str, severity: Severity) -> Vec<&Route> {
        let mut out: Vec<&Route> = Vec::new();
        for r in self.routes.iter().filter(|r| r.matches(event, severity)) {
            if !out.iter().any(|o| o.channel == r.channel) {
                out.push(r);
            }
        }
        out
    }
}

pub(super) fn alerts(
    raw: &RawAlerts,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<Alerts, Invalid> {
    let console_url = match raw.console_url.as_deref() {
        None | Some("") => None,
        Some(u) => {
            let parsed =
                url::Url::parse(u).map_err(|_| ("alerts.console_url", "not a URL".to_owned()))?;
            if parsed.scheme() != "https" && parsed.scheme() != "http" {
                return Err(("alerts.console_url", "must be https://…".into()));
            }
            Some(u.trim_end_matches('/').to_owned())
        }
    };
    let webhooks = raw
        .webhook
        .iter()
        .map(|(name, w)| Ok((name.clone(), webhook(w, resolve)?)))
        .collect::<Result<BTreeMap<_, _>, Invalid>>()?;
    let smtp = raw.smtp.as_ref().map(|s| smtp(s, resolve)).transpose()?;
    let routes = raw
        .route
        .iter()
        .map(|r| route(r, &webhooks, smtp.is_some()))
        .collect::<Result<Vec<_>, _>>()?;
    let secs = |key: &'static str, v: Option<f64>, unit: f64, default: f64| {
        duration(key, v.unwrap_or(default) * unit)
    };
    Ok(Alerts {
        console_url,
        scan_interval: duration(
            "alerts.scan_interval_secs",
            raw.scan_interval_secs.unwrap_or(60) as f64,
        )?,
        unassessed: thresholds(
            (
                "alerts.unassessed_hours",
                "alerts.unassessed_hours_by_category",
            ),
            raw.unassessed_hours.unwrap_or(24.0),
            &raw.unassessed_hours_by_category,
            3600.0,
        )?,
        takedown: thresholds(
            ("alerts.takedown_days", "alerts.takedown_days_by_category"),
            raw.takedown_days.unwrap_or(3.0),
            &raw.takedown_days_by_category,
            86_400.0,
        )?,
        peer_unreachable: secs(
            "alerts.peer_unreachable_mins",
            raw.peer_unreachable_mins,
            60.0,
            60.0,
        )?,
        expiry: secs("alerts.expiry_days", raw.expiry_days, 86_400.0, 14.0)?,
        disk_min_free_percent: match raw.disk_min_free_percent.unwrap_or(10.0) {
            p if (0.0..100.0).contains(&p) => p,
            _ => return Err(("alerts.disk_min_free_percent", "must be 0-100".into())),
        },
        retry_initial: Duration::from_millis(raw.retry_initial_ms.unwrap_or(5000).max(1)),
        retry_max: Duration::from_secs(raw.retry_max_secs.unwrap_or(3600).max(1)),
        webhooks,
        smtp,
        routes,
    })
}

fn duration(key: &'static str, secs: f64) -> Result<Duration, Invalid> {
    if !(secs.is_finite() && secs > 0.0 && secs < 1e10) {
        return Err((key, "must be a positive number".into()));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn thresholds(
    (key, by_key): (&'static str, &'static str),
    default: f64,
    by_category: &BTreeMap<String, f64>,
    unit: f64,
) -> Result<Thresholds, Invalid> {
    let mut by = Vec::new();
    for (name, v) in by_category {
        let category = Category::parse(name).map_err(|e| (by_key, e.message))?;
        by.push((category, duration(by_key, v * unit)?));
    }
    Ok(Thresholds {
        default: duration(key, default * unit)?,
        by_category: by,
    })
}

fn webhook(w: &RawWebhook, resolve: &dyn Fn(&str) -> PathBuf) -> Result<Webhook, Invalid> {
    const KEY: &str = "alerts.webhook.url";
    let url = url::Url::parse(&w.url).map_err(|_| (KEY, "not a URL".to_owned()))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err((
                KEY,
                "must be https://…, or http:// to a loopback address".into(),
            ));
        }
    }
    if w.secret_file.is_empty() {
        return Err(("alerts.webhook.secret_file", "must name a file".into()));
    }
    Ok(Webhook {
        url,
        secret_file: resolve(&w.secret_file),
        ca: w.ca.as_deref().map(resolve),
    })
}

fn smtp(s: &RawSmtp, resolve: &dyn Fn(&str) -> PathBuf) -> Result<Smtp, Invalid> {
    if s.server.is_empty() {
        return Err(("alerts.smtp.server", "must name the mail server".into()));
    }
    if !plausible_address(&s.from) {
        return Err(("alerts.smtp.from", "not an email address".into()));
    }
    if s.username.is_some() != s.password_file.is_some() {
        return Err((
            "alerts.smtp.username",
            "give both username and password_file, or neither".into(),
        ));
    }
    Ok(Smtp {
        server: s.server.clone(),
        port: s.port,
        from: s.from.clone(),
        username: s.username.clone(),
        password_file: s.password_file.as_deref().map(resolve),
        ca: s.ca.as_deref().map(resolve),
    })
}

fn route(
    r: &RawRoute,
    webhooks: &BTreeMap<String, Webhook>,
    have_smtp: bool,
) -> Result<Route, Invalid> {
    for e in &r.events {
        if severity_of(e).is_none() {
            let names: Vec<_> = EVENTS.iter().map(|(n, _)| *n).collect();
            return Err((
                "alerts.route.events",
                format!("an event is not one of: {}", names.join(", ")),
            ));
        }
    }
    let min_severity = match r.min_severity.as_deref() {
        None => Severity::Info,
        Some(s) => Severity::parse(s).ok_or((
            "alerts.route.min_severity",
            "not one of: info, warning, critical".to_owned(),
        ))?,
    };
    let channel = match (&r.webhook, r.email.is_empty()) {
        (Some(name), true) => {
            if !webhooks.contains_key(name) {
                return Err((
                    "alerts.route.webhook",
                    "names no [alerts.webhook.NAME] section".into(),
                ));
            }
            Channel::Webhook(name.clone())
        }
        (None, false) => {
            if !have_smtp {
                return Err((
                    "alerts.route.email",
                    "needs an [alerts.smtp] section".into(),
                ));
            }
            if !r.email.iter().all(|a| plausible_address(a)) {
                return Err((
                    "alerts.route.email",
                    "a recipient is not an email address".into(),
                ));
            }
            Channel::Email(r.email.clone())
        }
        _ => {
            return Err((
                "alerts.route",
                "give either webhook or email (a list of recipients)".into(),
            ));
        }
    };
    Ok(Route {
        events: r.events.clone(),
        min_severity,
        channel,
        include_urls: r.include_urls,
    })
}

fn plausible_address(a: &str) -> bool {
    let Some((local, domain)) = a.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !a
            .chars()
            .any(|c| c.is_whitespace() || c == ',' || c == '<' || c == '>')
}
