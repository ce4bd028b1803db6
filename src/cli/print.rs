//! What commands print: [`emit`] (JSON for scripts, or text for humans)
//! and the human-readable views several commands share.

use std::process::ExitCode;

use super::Failure;
use crate::node::cases::{CaseView, RouteView, rfc3339};
use crate::node::overview::{NodeSummary, PeerView};

/// Prints `value` as JSON for scripts, or for humans with `human`.
pub(crate) fn emit<T: serde::Serialize>(
    value: &T,
    json: bool,
    human: impl FnOnce(&T),
) -> Result<ExitCode, Failure> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        human(value);
    }
    Ok(ExitCode::SUCCESS)
}

/// Control and bidirectional characters shown escaped: what is printed
/// comes partly from other hotlines and must not drive the terminal.
pub(crate) fn clean(s: &str) -> String {
    crate::report::view::visible(s)
}

fn age(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        0 => "-".to_owned(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

pub(crate) fn peers(peers: &[PeerView]) {
    println!(
        "{:<14} {:<9} {:>8} {:>7} {:>8} {:>8}  {:<24} LAST ERROR",
        "PEER", "REACHABLE", "PROTOCOL", "QUEUED", "OLDEST", "FAILURES", "NEXT ATTEMPT"
    );
    for p in peers {
        let next = if p.next_attempt_ms > 0 {
            rfc3339(p.next_attempt_ms)
        } else {
            "-".to_owned()
        };
        println!(
            "{:<14} {:<9} {:>8} {:>7} {:>8} {:>8}  {:<24} {}",
            p.node_id,
            if p.active {
                p.reachable.as_str()
            } else {
                "suspended"
            },
            match p.protocol {
                0 => "?".to_owned(),
                n => n.to_string(),
            },
            p.queue_depth,
            age(p.oldest_undelivered_age_ms),
            p.consecutive_failures,
            next,
            p.last_error
        );
    }
    for p in peers.iter().filter(|p| p.protocol > 0) {
        println!("{}: {}", p.node_id, protocol_line(p.protocol, &p.features));
    }
}

/// What a peer's protocol means for this node, in words.
fn protocol_line(protocol: u32, features: &[String]) -> String {
    if protocol < crate::node::membership::PROTOCOL {
        return format!(
            "protocol {protocol}, the previous release: sent the previous protocol's copy of \
             reports (no DNS evidence fields), learns no directory by itself; upgrade it"
        );
    }
    format!("protocol {protocol}, features: {}", features.join(", "))
}

pub(crate) fn summary(s: &NodeSummary) {
    println!(
        "node {} (alertrelay {}), serving {}",
        s.node_id,
        s.version,
        s.countries.join(", ")
    );
    println!(
        "  listening on {}, up since {}",
        s.listen,
        rfc3339(s.started_at_ms)
    );
    println!("  signing key {}", s.key_id);
    if s.directory_serial == 0 {
        println!("  directory: a plain file (not signed; nothing spreads)");
    } else {
        println!(
            "  directory: signed serial {}, issued {}, expires {}",
            s.directory_serial,
            rfc3339(s.directory_issued_at_ms),
            rfc3339(s.directory_expires_at_ms)
        );
    }
    println!(
        "  peers: {} of {} reachable; {} items waiting in the outbox",
        s.peers_reachable, s.peers_total, s.outbox_total
    );
    if !s.notifications.is_empty() && s.notifications.iter().all(|w| w.waiting == 0) {
        println!("  notifications: none waiting");
    }
    for w in s.notifications.iter().filter(|w| w.waiting > 0) {
        println!(
            "  notifications waiting for {}: {} (oldest {}); see the node's log for why",
            w.channel,
            w.waiting,
            age(w.oldest_age_ms)
        );
    }
    println!("  protocol {}", s.protocol);
    if !s.peers_previous_protocol.is_empty() {
        println!(
            "  peers at the previous protocol ({}): {} (sent the previous protocol's copy of reports)",
            crate::node::membership::OLDEST_PROTOCOL,
            s.peers_previous_protocol.join(", ")
        );
    }
    println!(
        "  audit log: {} entries; latest checkpoint {} with {} cosignatures",
        s.audit_entries, s.checkpoint_size, s.checkpoint_cosignatures
    );
    for c in &s.cases {
        println!("  cases {:<9} {:<28} {}", c.direction, c.status, c.count);
    }
    let held: u64 = s
        .cases
        .iter()
        .filter(|c| c.status == "held")
        .map(|c| c.count)
        .sum();
    if held > 0 {
        println!(
            "  {held} report(s) held for an analyst (DNS failed or the jurisdiction policy): \
             `cases list --status held`, the reason in `cases show`"
        );
    }
}

pub(crate) fn route(r: &RouteView) {
    let dest = if r.destinations.is_empty() {
        "(kept here)".to_owned()
    } else {
        r.destinations.join(", ")
    };
    println!("  route:    {} -> {dest}", r.kind);
    println!("  reason:   {}", clean(&r.reason));
    if !r.ip.is_empty() {
        println!(
            "  evidence: ip {} ({}), country {}, {} of {}",
            r.ip,
            r.ip_source,
            if r.country.is_empty() {
                "unknown"
            } else {
                &r.country
            },
            r.dataset,
            r.dataset_date
        );
    }
    if r.asn != 0 {
        println!(
            "  network:  AS{} {} ({} of {})",
            r.asn,
            clean(&r.org),
            r.network_dataset,
            r.network_dataset_date
        );
    }
    if r.countries.len() > 1 {
        println!("  countries: {}", r.countries.join(", "));
    }
    if !r.ambiguity.is_empty() {
        println!("  warning:  {}", r.ambiguity);
    }
    if !r.flags.is_empty() {
        println!("  flags:    {}", r.flags.join(", "));
    }
    if !r.behind_cdn.is_empty() {
        println!(
            "  behind a CDN: {} (ask {} for the origin server)",
            clean(&r.behind_cdn),
            clean(&r.behind_cdn)
        );
    }
    for d in &r.dns {
        dns(d);
    }
    for s in &r.steps {
        println!("  step:     {}", clean(s));
    }
}

/// One host name's resolution: resolver, time, questions, each answer.
fn dns(d: &crate::report::view::DnsView) {
    println!(
        "  dns:      {} via {} at {}{}",
        clean(&d.host),
        clean(&d.resolver),
        d.at,
        if d.dnssec.is_empty() {
            String::new()
        } else {
            format!(", DNSSEC {}", clean(&d.dnssec))
        }
    );
    for q in &d.questions {
        println!(
            "            asked {} ({})",
            clean(&q.question),
            clean(&q.outcome)
        );
    }
    for a in &d.answers {
        println!(
            "            {} {} {} (TTL {} s)",
            clean(&a.name),
            clean(&a.kind),
            clean(&a.value),
            a.ttl
        );
    }
    if !d.failure.is_empty() {
        println!(
            "            failed: {} ({})",
            clean(&d.failure),
            clean(&d.error)
        );
    }
}

pub(crate) fn case_table(cases: &[CaseView]) {
    println!(
        "{:<36}  {:<10}  {:<8}  {:<12}  {:<20}  {:<18}  {:<7}  FAMILY",
        "ID", "ORIGIN", "DIR", "DESTINATION", "STATUS", "CATEGORY", "COUNTRY"
    );
    for c in cases {
        println!(
            "{:<36}  {:<10}  {:<8}  {:<12}  {:<20}  {:<18}  {:<7}  {}",
            c.id,
            c.origin,
            c.direction,
            if c.destination.is_empty() {
                "-"
            } else {
                &c.destination
            },
            c.status,
            c.category,
            c.hosting_country.as_deref().unwrap_or("?"),
            c.family.as_deref().unwrap_or("-")
        );
    }
}

pub(crate) fn case(c: &CaseView) {
    println!("case {} from {} ({})", c.id, c.origin, c.direction);
    println!("  status:   {}", c.status);
    println!(
        "  category: {} ({}{})",
        c.category,
        c.priority,
        if c.classification.is_empty() {
            String::new()
        } else {
            format!(", {}", c.classification)
        }
    );
    println!("  created:  {}", c.created_at);
    if let Some(p) = &c.purged_at {
        println!("  purged:   {p} (URLs, notes and evidence removed by retention or erasure)");
    }
    for u in &c.urls {
        println!("  url:      {}", clean(u));
    }
    if let Some(f) = &c.family {
        println!("  family:   {f} (one report per hosting country)");
        for other in &c.family_reports {
            println!("  family report: {}", clean(other));
        }
    }
    if let Some(r) = &c.route {
        route(r);
    }
    for d in &c.deliveries {
        let mut path = String::new();
        if let Some(by) = &d.handed_off_by {
            path.push_str(&format!(" (handed over by {by})"));
        }
        if let Some(hop) = &d.next_hop {
            path.push_str(&format!(" through {hop}"));
            if let Some(t) = &d.relayed_at {
                path.push_str(&format!(" (relaying since {t})"));
            }
        }
        if !d.via.is_empty() {
            path.push_str(&format!(", receipt back via {}", d.via.join(" > ")));
        }
        println!(
            "  delivery: {} {}{}{}{}",
            d.destination,
            d.state,
            d.delivered_at
                .as_deref()
                .map(|t| format!(" at {t}"))
                .unwrap_or_default(),
            path,
            if d.reason.is_empty() && d.last_error.is_empty() {
                String::new()
            } else {
                format!(" ({}{})", clean(&d.reason), clean(&d.last_error))
            }
        );
    }
    for h in &c.history {
        println!(
            "  history:  {} {} by {}{}{}",
            h.at,
            h.status,
            clean(&h.actor),
            if h.signer.is_empty() {
                String::new()
            } else {
                format!(", signed by {}", h.signer)
            },
            if h.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", clean(&h.reason))
            }
        );
    }
    for r in &c.referrals {
        println!(
            "  referral: {} to {} (reference {}), recorded by {}",
            r.referred_at,
            clean(&r.agency),
            clean(&r.reference),
            clean(&r.actor)
        );
    }
}

/// A duration for humans: `850ms`, `42s`, `17m`, `5.2h`, `2.5d`.
pub fn duration_ms(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60.0 {
        format!("{s:.0}s")
    } else if s < 3600.0 {
        format!("{:.0}m", s / 60.0)
    } else if s < 86_400.0 {
        format!("{:.1}h", s / 3600.0)
    } else {
        format!("{:.1}d", s / 86_400.0)
    }
}
