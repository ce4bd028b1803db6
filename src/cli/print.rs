//! Human-readable output.

use crate::node::cases::{CaseView, RouteView};

pub(crate) fn route(r: &RouteView) {
    let dest = if r.destinations.is_empty() {
        "(kept here)".to_owned()
    } else {
        r.destinations.join(", ")
    };
    println!("  route:    {} -> {dest}", r.kind);
    println!("  reason:   {}", r.reason);
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
}

pub(crate) fn case_table(cases: &[CaseView]) {
    println!(
        "{:<36}  {:<10}  {:<8}  {:<12}  {:<20}  {:<18}  COUNTRY",
        "ID", "ORIGIN", "DIR", "DESTINATION", "STATUS", "CATEGORY"
    );
    for c in cases {
        println!(
            "{:<36}  {:<10}  {:<8}  {:<12}  {:<20}  {:<18}  {}",
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
            c.hosting_country.as_deref().unwrap_or("?")
        );
    }
}

pub(crate) fn case(c: &CaseView) {
    println!("case {} from {} ({})", c.id, c.origin, c.direction);
    println!("  status:   {}", c.status);
    println!("  category: {} ({})", c.category, c.priority);
    println!("  created:  {}", c.created_at);
    for u in &c.urls {
        println!("  url:      {u}");
    }
    if let Some(r) = &c.route {
        route(r);
    }
    for d in &c.deliveries {
        println!(
            "  delivery: {} {}{}{}",
            d.destination,
            d.state,
            d.delivered_at
                .as_deref()
                .map(|t| format!(" at {t}"))
                .unwrap_or_default(),
            if d.reason.is_empty() && d.last_error.is_empty() {
                String::new()
            } else {
                format!(" ({}{})", d.reason, d.last_error)
            }
        );
    }
    for h in &c.history {
        println!(
            "  history:  {} {} by {}{}{}",
            h.at,
            h.status,
            h.actor,
            if h.signer.is_empty() {
                String::new()
            } else {
                format!(", signed by {}", h.signer)
            },
            if h.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", h.reason)
            }
        );
    }
}
