//! Cases in standard formats: an X-ARF v4 notice for the hosting provider
//! (`alertrelay notice CASE --format xarf`) and a STIX 2.1 bundle for law
//! enforcement (`alertrelay export stix`). Both are built from the case as
//! the node shows it (`GetCase` / `ListCases`); neither carries analysts'
//! identities or the case notes (they may hold personal data).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use serde_json::{Value, json};

use super::args::StixArgs;
use super::client::{connect, rpc};
use super::{Failure, load_config};
use crate::api::convert::case_from_pb;
use crate::config::NodeConfig;
use crate::node::cases::CaseView;
use crate::pb;

/// The X-ARF version the notices follow.
pub const XARF_VERSION: &str = "4.0.0";

pub(crate) async fn notice(
    config: PathBuf,
    case: String,
    format: String,
) -> Result<ExitCode, Failure> {
    let cfg = load_config(&config)?;
    if format != "xarf" {
        return Err(Failure::usage(anyhow!(
            "--format {format:?}: the supported format is xarf (X-ARF v4)"
        )));
    }
    let sender = notice_sender(&cfg)?;
    let mut client = connect(&cfg).await?;
    let case = client
        .get_case(pb::GetCaseRequest { id: case })
        .await
        .map_err(rpc)?
        .into_inner();
    let case = case_from_pb(case);
    let notices = xarf_notices(&case, &sender).map_err(|e| Failure {
        code: 1,
        error: anyhow!("case {}: {e}", case.id),
    })?;
    if let [one] = notices.as_slice() {
        println!("{}", serde_json::to_string_pretty(one)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&notices)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Who the notice is from: `[notice]` in node.toml.
pub struct Sender {
    pub org: String,
    pub contact: String,
    pub domain: String,
    pub node: String,
}

/// The hotline's name in the directory, or its node id.
fn hotline_name(cfg: &NodeConfig) -> String {
    cfg.directory
        .node(&cfg.node_id)
        .map(|n| n.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| cfg.node_id.to_string())
}

fn notice_sender(cfg: &NodeConfig) -> Result<Sender, Failure> {
    let n = cfg.notice.as_ref().ok_or_else(|| {
        Failure::usage(anyhow!(
            "{}: key `notice`: notices need a [notice] section with `contact` (e-mail) and `domain`",
            cfg.path.display()
        ))
    })?;
    Ok(Sender {
        org: n.org.clone().unwrap_or_else(|| hotline_name(cfg)),
        contact: n.contact.clone(),
        domain: n.domain.clone(),
        node: cfg.node_id.to_string(),
    })
}

/// The assessment a notice rests on, from the case's history.
fn assessment(case: &CaseView) -> Option<&str> {
    case.history
        .iter()
        .rev()
        .map(|h| h.status.as_str())
        .find(|s| ["illegal-baseline", "illegal-national", "not-illegal"].contains(s))
}

/// One X-ARF v4 notice per reported URL (the format has one `url` per
/// report). Refused for cases not assessed illegal here, and for
/// categories X-ARF v4 has no type for.
pub fn xarf_notices(case: &CaseView, sender: &Sender) -> Result<Vec<Value>, String> {
    if case.direction == "outgoing" {
        return Err(
            "is an outgoing report: the hotline of the hosting country sends the notice".into(),
        );
    }
    let assessed = match assessment(case) {
        Some("illegal-baseline") => "illegal under the INTERPOL baseline",
        Some("illegal-national") => "illegal under national law",
        Some(_) => return Err("was assessed not illegal: no notice".into()),
        None => {
            return Err(
                "has not been assessed yet (illegal-baseline or illegal-national first)".into(),
            );
        }
    };
    let kind = xarf_type(case)?;
    let common = XarfCommon::of(case, sender);
    Ok(case
        .urls
        .iter()
        .map(|url| xarf_notice(case, sender, &common, url, &kind, assessed))
        .collect())
}

/// The X-ARF content type for the case's category and assessment, with
/// the properties that type requires.
fn xarf_type(case: &CaseView) -> Result<(&'static str, Value), String> {
    Ok(match (case.category.as_str(), assessment(case)) {
        ("csam", Some("illegal-baseline")) => (
            "csam",
            json!({"classification": "baseline", "detection_method": "manual_review"}),
        ),
        ("csam", _) => {
            return Err(
                "X-ARF v4 csam classifications (baseline, A1, A2, B1, B2) have no value for \"illegal nationally\"; send this notice another way".into(),
            );
        }
        ("child-exploitation", _) => (
            "csem",
            json!({"exploitation_type": "distribution", "detection_method": "manual_review"}),
        ),
        ("grooming", _) => (
            "csem",
            json!({"exploitation_type": "grooming", "detection_method": "manual_review"}),
        ),
        ("trafficking", _) => (
            "csem",
            json!({"exploitation_type": "trafficking", "detection_method": "manual_review"}),
        ),
        (other, _) => return Err(format!("X-ARF v4 has no content type for category {other}")),
    })
}

/// What every notice about one case shares.
struct XarfCommon {
    address: Option<String>,
    asn: Option<u32>,
    country: Option<String>,
    contact: Value,
    /// The media hashes X-ARF knows, well-formed, by its names.
    hashes: serde_json::Map<String, Value>,
}

impl XarfCommon {
    fn of(case: &CaseView, sender: &Sender) -> Self {
        let route = case.route.as_ref();
        let mut hashes = serde_json::Map::new();
        for h in &case.hashes {
            let (name, len) = match h.algorithm.to_ascii_lowercase().as_str() {
                "md5" => ("md5", 32),
                "sha1" => ("sha1", 40),
                "sha256" => ("sha256", 64),
                _ => continue,
            };
            if h.value.len() == len && h.value.bytes().all(|b| b.is_ascii_hexdigit()) {
                hashes.insert(name.into(), Value::String(h.value.to_ascii_lowercase()));
            }
        }
        XarfCommon {
            address: route.map(|r| r.ip.clone()).filter(|ip| !ip.is_empty()),
            asn: route.map(|r| r.asn).filter(|a| *a > 0),
            country: case
                .hosting_country
                .clone()
                .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())),
            contact: json!({
                "org": bounded(&sender.org, XARF_ORG_MAX),
                "contact": sender.contact,
                "domain": sender.domain,
            }),
            hashes,
        }
    }
}

/// The notice about one URL.
fn xarf_notice(
    case: &CaseView,
    sender: &Sender,
    common: &XarfCommon,
    url: &str,
    (xarf_type, extra): &(&str, Value),
    assessed: &str,
) -> Value {
    let parsed = url::Url::parse(url).ok();
    // The host as ASCII (an IDN as punycode, an IPv6 address without
    // brackets): what `source_identifier` names when no address is known.
    let host = parsed.as_ref().and_then(|u| match u.host()? {
        url::Host::Domain(d) => Some(d.trim_end_matches('.').to_owned()),
        url::Host::Ipv4(a) => Some(a.to_string()),
        url::Host::Ipv6(a) => Some(a.to_string()),
    });
    // `domain` only in the form X-ARF's schema allows (lower-case LDH
    // labels without `--`, an alphabetic TLD): a punycode (IDN) domain
    // cannot be written there, and is in `url` and `source_identifier`.
    let domain = parsed.as_ref().and_then(|u| match u.host() {
        Some(url::Host::Domain(d)) => Some(d.trim_end_matches('.').to_owned()),
        _ => None,
    });
    let domain = domain.filter(|d| xarf_domain(d));
    let source = common
        .address
        .clone()
        .or(host)
        .unwrap_or_else(|| "unknown".to_owned());
    let mut n = json!({
        "xarf_version": XARF_VERSION,
        "report_id": derived_uuid(&format!("xarf|{}|{}|{url}", case.origin, case.id)),
        "timestamp": rfc3339_ms(case.created_at_ms),
        "reporter": common.contact,
        "sender": common.contact,
        "source_identifier": source,
        "category": "content",
        "type": xarf_type,
        "url": uri(url),
        "evidence_source": "user_report",
        "description": bounded(&format!(
            "Reported to {} and assessed {assessed}. Please remove the content and preserve it for law enforcement. Reference {} (case {}).",
            sender.org, sender.node, case.id
        ), XARF_DESCRIPTION_MAX),
    });
    let obj = n.as_object_mut().expect("an object");
    for (k, v) in extra.as_object().expect("an object") {
        obj.insert(k.clone(), v.clone());
    }
    if let Some(d) = domain {
        obj.insert("domain".into(), d.into());
    }
    if let Some(a) = common.asn {
        obj.insert("asn".into(), a.into());
    }
    if let Some(c) = &common.country {
        obj.insert("country_code".into(), c.clone().into());
    }
    if *xarf_type == "csam" && !common.hashes.is_empty() {
        obj.insert("hash_values".into(), Value::Object(common.hashes.clone()));
    }
    n
}

/// The longest `description` and reporter `org` X-ARF v4 allows
/// (characters).
const XARF_DESCRIPTION_MAX: usize = 1000;
const XARF_ORG_MAX: usize = 200;

/// `text` cut to at most `max` characters (an ellipsis where it was cut).
fn bounded(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Whether `d` fits X-ARF v4's `domain` pattern,
/// `^([a-z0-9]+(-[a-z0-9]+)*\.)+[a-z]{2,}$`.
fn xarf_domain(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    let Some((tld, rest)) = labels.split_last() else {
        return false;
    };
    let ldh = |l: &&str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && !l.contains("--")
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    !rest.is_empty()
        && rest.iter().all(ldh)
        && tld.len() >= 2
        && tld.bytes().all(|b| b.is_ascii_lowercase())
}

/// A reported URL as an RFC 3986 URI, as STIX and X-ARF require: the host
/// in ASCII (an IDN as punycode), every character RFC 3986 does not allow
/// percent-encoded as UTF-8 (spaces, non-ASCII, `|`, `^`, `{`, …), a `%`
/// that begins no escape written `%25`, and a second `#` encoded. The case
/// keeps the URL exactly as it was reported; this is its form in the
/// standard documents.
pub fn uri(url: &str) -> String {
    let parsed = url::Url::parse(url);
    let (text, rest_from) = match &parsed {
        // The WHATWG serialization: scheme, userinfo and host already in
        // ASCII; the path, query and fragment still need RFC 3986's rules.
        Ok(u) => (u.as_str(), after_authority(u)),
        Err(_) => (url, 0),
    };
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..rest_from]);
    let rest = &text.as_bytes()[rest_from..];
    let mut in_fragment = false;
    for (i, &b) in rest.iter().enumerate() {
        let keep = match b {
            b'%' => {
                rest.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && rest.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
            }
            b'#' => !std::mem::replace(&mut in_fragment, true),
            _ => uri_char(b),
        };
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where the path begins in a parsed URL's serialization.
fn after_authority(u: &url::Url) -> usize {
    let s = u.as_str();
    let path = u.path();
    // The path (possibly empty) is followed by `?query` and `#fragment`.
    let tail =
        path.len() + u.query().map_or(0, |q| q.len() + 1) + u.fragment().map_or(0, |f| f.len() + 1);
    s.len().saturating_sub(tail)
}

/// RFC 3986's unreserved, sub-delims and the gen-delims a path, query or
/// fragment may hold (`:`, `@`, `/`, `?`).
fn uri_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?".contains(&b)
}

/// A UUID (version 4 layout) derived from `name`, so the same notice or
/// object always gets the same id.
fn derived_uuid(name: &str) -> String {
    let d = crate::wire::digest(name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

/// RFC 3339 in UTC with milliseconds, as STIX requires.
pub fn rfc3339_ms(ms: i64) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

pub(crate) async fn export_stix(a: StixArgs) -> Result<ExitCode, Failure> {
    let cfg = load_config(&a.config)?;
    let mut client = connect(&cfg).await?;
    let cases = if a.cases.is_empty() {
        let filter = pb::ListCasesRequest {
            direction: a.direction.unwrap_or_default(),
            limit: a.limit,
            status: a.status.unwrap_or_default(),
            category: a.category.unwrap_or_default(),
            peer: String::new(),
            priority: 0,
            max_age_secs: a.max_age_secs.unwrap_or(0),
            family: String::new(),
        };
        matching_cases(&mut client, filter).await?
    } else {
        named_cases(&mut client, a.cases).await?
    };
    let bundle = stix_bundle(
        &cfg.node_id.to_string(),
        &hotline_name(&cfg),
        &cases,
        identity_since_ms(&cfg),
    );
    println!("{}", serde_json::to_string_pretty(&bundle)?);
    eprintln!("{} case(s) exported", cases.len());
    Ok(ExitCode::SUCCESS)
}

type Client = pb::operator_client::OperatorClient<tonic::transport::Channel>;

/// Every case `filter` lists, in full.
async fn matching_cases(
    client: &mut Client,
    filter: pb::ListCasesRequest,
) -> Result<Vec<CaseView>, Failure> {
    let list = client.list_cases(filter).await.map_err(rpc)?.into_inner();
    // The list view is enough for ids; the full case has the route.
    let ids = list
        .cases
        .into_iter()
        .map(|c| format!("{}/{}", c.origin, c.id))
        .collect();
    named_cases(client, ids).await
}

async fn named_cases(client: &mut Client, ids: Vec<String>) -> Result<Vec<CaseView>, Failure> {
    let mut cases = Vec::new();
    for id in ids {
        let c = client
            .get_case(pb::GetCaseRequest { id })
            .await
            .map_err(rpc)?
            .into_inner();
        cases.push(case_from_pb(c));
    }
    Ok(cases)
}

/// The identity object must keep its `created` across exports: the start
/// of this node's certificate is as stable as it gets.
fn identity_since_ms(cfg: &NodeConfig) -> i64 {
    crate::crypto::tls::load_certs(&cfg.tls.cert)
        .ok()
        .and_then(|certs| {
            let (_, x) = x509_parser::parse_x509_certificate(certs.first()?).ok()?;
            Some(x.validity().not_before.timestamp() * 1000)
        })
        .unwrap_or(0)
}

/// STIX's namespace for deterministic (v5) ids of cyber-observables.
const STIX_NAMESPACE: uuid::Uuid = uuid::uuid!("00abedb4-aa42-466c-9c01-fed23315a9b7");

fn sco_id(kind: &str, contributing: &Value) -> String {
    // The id-contributing properties as canonical JSON (serde_json sorts
    // object keys: it has no `preserve_order` here).
    let name = contributing.to_string();
    format!(
        "{kind}--{}",
        uuid::Uuid::new_v5(&STIX_NAMESPACE, name.as_bytes())
    )
}

fn sdo_id(kind: &str, name: &str) -> String {
    format!("{kind}--{}", derived_uuid(&format!("stix|{kind}|{name}")))
}

/// The STIX extension that carries what a case has beyond STIX's own
/// properties (STIX 2.1 §7.3: a `property-extension` defined by an
/// `extension-definition` object), and the identity that defines it. Both
/// are constants, the same in every export and at every node.
const EXTENSION_ID: &str = "extension-definition--5d3a9e0c-7b1f-4c2a-8e6d-2f4b8a1c9e37";
const PROJECT_IDENTITY_ID: &str = "identity--8f2c6a41-3d7e-4b59-a1c0-6e9d2b7f4a18";
const EXTENSION_CREATED: &str = "2026-12-01T00:00:00.000Z";

/// The extension's normative definition (its `schema`, as plain text).
const EXTENSION_SCHEMA: &str = "Properties of an alertrelay case (see alertrelay's docs/formats.md). On a report: case_id (string, the report id), origin (string, the node id of the hotline that first received it), direction (incoming, outgoing, local or relayed), status (the case status at this hotline), priority (bulk or urgent), status_history (list of {status, at (RFC 3339), signer (node id)}; absent when empty), hosting_country (ISO 3166-1 alpha-2), asn (integer), route_reason (string). On an identity: node (the hotline's node id).";

/// The project's identity and its extension definition.
fn extension_objects() -> [Value; 2] {
    [
        json!({
            "type": "identity",
            "spec_version": "2.1",
            "id": PROJECT_IDENTITY_ID,
            "created": EXTENSION_CREATED,
            "modified": EXTENSION_CREATED,
            "name": "alertrelay",
            "description": "The federation software that wrote this bundle; it defines the alertrelay case extension.",
            "identity_class": "system",
        }),
        json!({
            "type": "extension-definition",
            "spec_version": "2.1",
            "id": EXTENSION_ID,
            "created_by_ref": PROJECT_IDENTITY_ID,
            "created": EXTENSION_CREATED,
            "modified": EXTENSION_CREATED,
            "name": "alertrelay case",
            "description": "What an alertrelay hotline knows of a case beyond STIX's own properties: its id, origin, direction, status and history, priority, hosting country, AS number and route reason.",
            "schema": EXTENSION_SCHEMA,
            "version": "1.0.0",
            "extension_types": ["property-extension"],
        }),
    ]
}

/// `props` as the alertrelay extension of an object.
fn extension(mut props: serde_json::Map<String, Value>) -> Value {
    props.insert("extension_type".into(), "property-extension".into());
    json!({ EXTENSION_ID: props })
}

/// A STIX 2.1 bundle: this hotline as an `identity`, and per case a
/// `report` whose `object_refs` are the case's `url`s, hosting addresses
/// and media `file` hashes (cyber-observables with deterministic ids), with
/// the case's category, status and route in the alertrelay extension
/// (defined in the bundle). `identity_since_ms` dates the hotline's
/// `identity` object (stable, so every export carries the same version of
/// it). Nothing in it is an empty list, which STIX forbids.
pub fn stix_bundle(node: &str, name: &str, cases: &[CaseView], identity_since_ms: i64) -> Value {
    let identity_id = sdo_id("identity", node);
    let since = rfc3339_ms(identity_since_ms);
    let mut hotline = serde_json::Map::new();
    hotline.insert("node".into(), node.into());
    let mut objects = Vec::from(extension_objects());
    objects.push(json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": identity_id,
        "created": since,
        "modified": since,
        "name": name,
        "identity_class": "organization",
        "sectors": ["non-profit"],
        "extensions": extension(hotline),
    }));
    let mut seen = std::collections::BTreeSet::new();
    for case in cases {
        let mut refs = Vec::new();
        for obj in observables(case) {
            let id = obj["id"].as_str().unwrap_or_default().to_owned();
            if seen.insert(id.clone()) {
                objects.push(obj);
            }
            refs.push(id);
        }
        if refs.is_empty() {
            // object_refs must not be empty: refer to the hotline itself.
            refs.push(identity_id.clone());
        }
        objects.push(stix_report(case, &identity_id, refs));
    }
    json!({
        "type": "bundle",
        "id": format!("bundle--{}", uuid::Uuid::new_v4()),
        "objects": objects,
    })
}

/// A case's cyber-observables: its `url`s (as URIs), the hosting address,
/// the media `file` hashes STIX names.
fn observables(case: &CaseView) -> Vec<Value> {
    let mut out = Vec::new();
    for url in &case.urls {
        let value = uri(url);
        let id = sco_id("url", &json!({"value": value}));
        out.push(json!({"type": "url", "spec_version": "2.1", "id": id, "value": value}));
    }
    if let Some(r) = &case.route
        && let Ok(ip) = r.ip.parse::<std::net::IpAddr>()
    {
        let kind = if ip.is_ipv4() {
            "ipv4-addr"
        } else {
            "ipv6-addr"
        };
        let value = ip.to_string();
        let id = sco_id(kind, &json!({"value": value}));
        out.push(json!({"type": kind, "spec_version": "2.1", "id": id, "value": value}));
    }
    for h in &case.hashes {
        let algo = match h.algorithm.to_ascii_lowercase().as_str() {
            "md5" => "MD5",
            "sha1" => "SHA-1",
            "sha256" => "SHA-256",
            "sha512" => "SHA-512",
            _ => continue,
        };
        let hashes = json!({ algo: h.value.to_ascii_lowercase() });
        let id = sco_id("file", &json!({ "hashes": hashes }));
        out.push(json!({"type": "file", "spec_version": "2.1", "id": id, "hashes": hashes}));
    }
    out
}

/// The STIX `report` of one case, referring to `refs`.
fn stix_report(case: &CaseView, identity_id: &str, refs: Vec<String>) -> Value {
    let mut props = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        props.insert(k.into(), v);
    };
    put("case_id", case.id.clone().into());
    put("origin", case.origin.clone().into());
    put("direction", case.direction.clone().into());
    put("status", case.status.clone().into());
    put("priority", case.priority.clone().into());
    if !case.history.is_empty() {
        put(
            "status_history",
            case.history
                .iter()
                .map(|h| json!({"status": h.status, "at": h.at, "signer": h.signer}))
                .collect(),
        );
    }
    if let Some(c) = &case.hosting_country {
        put("hosting_country", c.clone().into());
    }
    if let Some(r) = &case.route {
        put("route_reason", r.reason.clone().into());
        if r.asn > 0 {
            put("asn", r.asn.into());
        }
    }
    let mut report = json!({
        "type": "report",
        "spec_version": "2.1",
        "id": sdo_id("report", &format!("{}/{}", case.origin, case.id)),
        "created_by_ref": identity_id,
        "created": rfc3339_ms(case.created_at_ms),
        "modified": rfc3339_ms(last_change_ms(case)),
        "name": format!("{} report {} from {}", case.category, case.id, case.origin),
        "report_types": ["indicator"],
        "published": rfc3339_ms(case.created_at_ms),
        "object_refs": refs,
        "extensions": extension(props),
    });
    if !case.category.is_empty() {
        report["labels"] = json!([case.category]);
    }
    report
}

/// The case's latest change (its history), never before its creation.
fn last_change_ms(case: &CaseView) -> i64 {
    case.history
        .iter()
        .filter_map(|h| {
            time::OffsetDateTime::parse(&h.at, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .max()
        .unwrap_or(case.created_at_ms)
        .max(case.created_at_ms)
}
