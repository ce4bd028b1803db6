//! URLs → hosts → addresses → what every geo source says about each
//! address. The analyst's traced IP takes priority over the addresses found
//! from the URLs, which are still looked up and recorded as not used.

use std::net::IpAddr;

use crate::geo::dns::Resolved;
use crate::geo::{Hosting, Sources, cdn_by_cname};
use crate::report::validate::UrlHost;

use super::{AddressEvidence, Evidence, RouteInput};

/// What the hosting search found.
pub(super) struct Found {
    pub(super) evidence: Evidence,
    /// Onion hosts that decide the route (none when the analyst traced an IP).
    pub(super) onion_hosts: usize,
    /// Why (part of) the hosting is unknown, for the decision's reason.
    pub(super) unknown_reason: Option<String>,
    /// Host names DNS gave no address for, as `host N (failure)`: never
    /// the name (the reason goes into the audit log).
    pub(super) dns_failed: Vec<String>,
}

struct HostGroup<'a> {
    host: &'a UrlHost,
    urls: Vec<usize>,
    flags: Vec<&'static str>,
}

struct Candidate {
    ip: IpAddr,
    source: &'static str,
    host: String,
}

pub(super) fn find(input: &RouteInput<'_>, geo: &Sources, steps: &mut Vec<String>) -> Found {
    let from_urls = from_urls(input, steps);
    let (used, unused) = prioritise(input.hosting_ip, from_urls.candidates, steps);
    if !used.is_empty() || !unused.is_empty() {
        steps.push(format!(
            "geo sources, in order: {}",
            geo.describe()
                .iter()
                .map(|s| format!("{} ({}, {})", s.name, s.kind.as_str(), s.dataset_date))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut addresses = Vec::with_capacity(used.len() + unused.len());
    for (c, is_used) in used
        .iter()
        .map(|c| (c, true))
        .chain(unused.iter().map(|c| (c, false)))
    {
        let h = geo.lookup(c.ip);
        explain_address(c, is_used, &h, steps);
        addresses.push(address_evidence(c, is_used, h));
    }
    let mut countries: Vec<String> = Vec::new();
    for a in addresses.iter().filter(|a| a.used) {
        if let Some(cc) = &a.country
            && !countries.contains(cc)
        {
            countries.push(cc.clone());
        }
    }
    // The analyst's traced address stands for the onion service too.
    let onion_hosts = if input.hosting_ip.is_some() {
        0
    } else {
        from_urls.onion_hosts
    };
    let unknown_reason = unknown_reason(input, &addresses, &countries, onion_hosts);
    let mut evidence = primary_evidence(&addresses);
    evidence.countries = countries;
    evidence.flags = from_urls.flags;
    evidence.behind_cdn = behind_cdn(&addresses, &from_urls.dns, steps);
    evidence.addresses = addresses;
    evidence.dns = from_urls.dns;
    Found {
        evidence,
        onion_hosts,
        unknown_reason,
        dns_failed: if input.hosting_ip.is_some() {
            Vec::new()
        } else {
            from_urls.dns_failed
        },
    }
}

/// The CDN or reverse proxy in front of the content, when an address the
/// route follows is in a known anycast/CDN network or a host's CNAME
/// chain ends at a known CDN; not when the analyst traced the origin.
pub(super) fn behind_cdn(
    addresses: &[super::AddressEvidence],
    dns: &[Resolved],
    steps: &mut Vec<String>,
) -> Option<String> {
    let by_network = addresses
        .iter()
        .filter(|a| a.used && a.ip_source != "analyst" && a.country.is_some())
        .find_map(|a| {
            let n = a.network.as_ref()?;
            crate::geo::anycast_operator(n.asn).map(|op| (op, format!("network AS{}", n.asn)))
        });
    let by_cname = || {
        dns.iter().find_map(|r| {
            r.answers
                .iter()
                .filter(|a| a.kind == "CNAME")
                .find_map(|a| cdn_by_cname(&a.value).map(|op| (op, format!("CNAME {}", a.value))))
        })
    };
    let used_dns = addresses.iter().any(|a| a.used && a.ip_source == "dns");
    let (operator, how) = by_network.or_else(|| if used_dns { by_cname() } else { None })?;
    steps.push(format!(
        "behind a CDN or reverse proxy: {operator} ({how}): routed to the hotline of the \
         CDN's country; the receiving hotline asks {operator} for the origin server \
         (an analyst who traced the origin gives --hosting-ip)"
    ));
    Some(operator.to_owned())
}

/// What the URLs give: their hosts' flags, their addresses (IP literals,
/// DNS answers) and how many hosts are onion services.
struct FromUrls {
    flags: Vec<String>,
    candidates: Vec<Candidate>,
    onion_hosts: usize,
    /// What DNS said about each host name, in order.
    dns: Vec<Resolved>,
    dns_failed: Vec<String>,
}

fn from_urls(input: &RouteInput<'_>, steps: &mut Vec<String>) -> FromUrls {
    let mut out = FromUrls {
        flags: Vec::new(),
        candidates: Vec::new(),
        onion_hosts: 0,
        dns: Vec::new(),
        dns_failed: Vec::new(),
    };
    for (i, g) in group_hosts(input).iter().enumerate() {
        steps.push(describe_host(g));
        for f in &g.flags {
            if !out.flags.iter().any(|x| x == f) {
                out.flags.push((*f).to_owned());
            }
        }
        match g.host {
            UrlHost::Ip(ip) => out.candidates.push(Candidate {
                ip: *ip,
                source: "ip-literal",
                host: ip.to_string(),
            }),
            UrlHost::Domain(d) => {
                if let Some(r) = resolve(d, input, &mut out.candidates, steps) {
                    if let Some(f) = r.failure.filter(|_| r.addresses.is_empty()) {
                        out.dns_failed
                            .push(format!("host {} ({})", i + 1, f.as_str()));
                    }
                    out.dns.push(r.clone());
                }
            }
            UrlHost::Onion(_) => out.onion_hosts += 1,
        }
    }
    out
}

/// (used, not used): the analyst's traced address alone when there is one,
/// otherwise every distinct address from the URLs.
fn prioritise(
    analyst: Option<IpAddr>,
    candidates: Vec<Candidate>,
    steps: &mut Vec<String>,
) -> (Vec<Candidate>, Vec<Candidate>) {
    let Some(ip) = analyst else {
        let mut unique: Vec<Candidate> = Vec::new();
        for c in candidates {
            if !unique.iter().any(|u| u.ip == c.ip) {
                unique.push(c);
            }
        }
        return (unique, Vec::new());
    };
    steps.push(format!(
        "hosting IP {ip} declared by the analyst (--hosting-ip): analyst-declared \
         evidence takes priority over dataset evidence{}",
        if candidates.is_empty() {
            ""
        } else {
            "; the addresses found from the URLs are recorded below, not used"
        }
    ));
    let analyst = Candidate {
        ip,
        source: "analyst",
        host: String::new(),
    };
    (vec![analyst], candidates)
}

/// The single-address fields: the first used address with a country (or
/// the first used address).
pub(super) fn primary_evidence(addresses: &[AddressEvidence]) -> Evidence {
    let used = || addresses.iter().filter(|a| a.used);
    let primary = used()
        .find(|a| a.country.is_some())
        .or_else(|| used().next());
    let mut evidence = match primary {
        Some(p) => Evidence {
            ip: Some(p.ip),
            ip_source: p.ip_source.clone(),
            country: p.country.clone(),
            dataset: p.dataset.clone(),
            dataset_date: p.dataset_date.clone(),
            method: p.method.clone(),
            network: p.network.clone(),
            network_dataset: p.network_dataset.clone(),
            network_dataset_date: p.network_dataset_date.clone(),
            ..Evidence::default()
        },
        None => Evidence::default(),
    };
    // Ambiguity matters where it decides a route: a used address with a country.
    evidence.ambiguity = used()
        .filter(|a| a.country.is_some())
        .find_map(|a| a.ambiguity.clone());
    evidence
}

fn group_hosts<'a>(input: &RouteInput<'a>) -> Vec<HostGroup<'a>> {
    let mut groups: Vec<HostGroup<'a>> = Vec::new();
    for (i, u) in input.urls.iter().enumerate() {
        match groups.iter_mut().find(|g| *g.host == u.host) {
            Some(g) => g.urls.push(i),
            None => groups.push(HostGroup {
                host: &u.host,
                urls: vec![i],
                flags: u.flags.clone(),
            }),
        }
    }
    groups
}

fn describe_host(g: &HostGroup<'_>) -> String {
    let urls = g
        .urls
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let what = match g.host {
        UrlHost::Ip(_) => "an IP literal",
        UrlHost::Domain(_) => "a host name",
        UrlHost::Onion(_) => "a Tor onion service: no geolocatable address",
    };
    let flags = if g.flags.is_empty() {
        String::new()
    } else {
        format!("; flagged {}", g.flags.join(", "))
    };
    format!("urls[{urls}]: host {} ({what}{flags})", g.host)
}

/// The DNS evidence for host `d`, its steps, and its addresses as
/// candidates.
fn resolve<'a>(
    d: &str,
    input: &RouteInput<'a>,
    out: &mut Vec<Candidate>,
    steps: &mut Vec<String>,
) -> Option<&'a Resolved> {
    let Some(resolved) = input.resolved else {
        steps.push(format!(
            "host {d}: not resolved (DNS is off: [dns] mode = \"off\")"
        ));
        return None;
    };
    let Some(r) = resolved.iter().find(|r| r.host == d) else {
        steps.push(format!("host {d}: not resolved"));
        return None;
    };
    explain_dns(r, steps);
    for ip in &r.addresses {
        out.push(Candidate {
            ip: *ip,
            source: "dns",
            host: d.to_owned(),
        });
    }
    Some(r)
}

/// One step for what was asked of whom and when, one for the answers
/// (the CNAME chain, each address with its TTL) or the failure.
fn explain_dns(r: &Resolved, steps: &mut Vec<String>) {
    let asked = r
        .questions
        .iter()
        .map(|q| format!("{} ({})", q.question, q.outcome))
        .collect::<Vec<_>>()
        .join(", ");
    let when = crate::report::view::rfc3339(r.at_ms);
    let dnssec = if r.dnssec.is_empty() {
        String::new()
    } else {
        format!("; DNSSEC {}", r.dnssec)
    };
    // A static map asks nothing: its answer is the map's.
    if !asked.is_empty() {
        steps.push(format!(
            "host {}: asked {} at {when}: {asked}{dnssec}",
            r.host, r.resolver
        ));
    }
    if r.addresses.is_empty() {
        let why = r.error.as_deref().unwrap_or("no addresses");
        let kind = r.failure.map_or("no-address", |f| f.as_str());
        steps.push(format!("host {}: no address: {kind}: {why}", r.host));
        return;
    }
    if let Some(chain) = r.cname_chain() {
        steps.push(format!("host {}: CNAME chain {chain}", r.host));
    }
    let answers = r
        .answers
        .iter()
        .filter(|a| a.kind != "CNAME")
        .map(|a| {
            if r.resolver == crate::geo::dns::STATIC_MAP {
                a.value.clone()
            } else {
                format!("{} {} (TTL {} s)", a.kind, a.value, a.ttl)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    steps.push(format!("host {}: {} gives {answers}", r.host, r.resolver));
}

fn explain_address(c: &Candidate, used: bool, h: &Hosting, steps: &mut Vec<String>) {
    let prefix = if used { "" } else { "(not used) " };
    let from = if c.host.is_empty() || c.source == "ip-literal" {
        c.source.to_owned()
    } else {
        format!("{} of host {}", c.source, c.host)
    };
    let answers = h
        .countries
        .iter()
        .map(|a| {
            let said = match (&a.country, a.raw_code.as_str()) {
                (Some(cc), raw) if cc == raw => cc.clone(),
                (Some(cc), raw) => format!("{cc} (code {raw:?})"),
                (None, "") => "no data".to_owned(),
                (None, raw) => format!("{raw:?}, which means unknown"),
            };
            format!("{} of {}: {said}", a.source, a.dataset_date)
        })
        .collect::<Vec<_>>()
        .join("; ");
    let verdict = match h.country_answer() {
        Some(a) => format!(
            "{} (following {}, the first source that knows)",
            a.country.as_deref().unwrap_or_default(),
            a.source
        ),
        None => "unknown (no source names a country)".to_owned(),
    };
    steps.push(format!("{prefix}{} ({from}): {answers} -> {verdict}", h.ip));
    if h.disagree {
        steps.push(format!(
            "{prefix}the sources disagree about {}: they name {}; the decision follows {}, \
             the first in order that knows",
            h.ip,
            h.named_countries().join(" and "),
            h.country_answer()
                .map(|a| a.source.as_str())
                .unwrap_or_default()
        ));
    }
    match h.network() {
        Some((n, a)) => steps.push(format!(
            "{prefix}{}: network AS{} {} ({} of {})",
            h.ip, n.asn, n.org, a.source, a.dataset_date
        )),
        None if !h.networks.is_empty() => {
            steps.push(format!("{prefix}{}: no source knows its network", h.ip));
        }
        None => {}
    }
    if let Some(a) = &h.ambiguity {
        steps.push(format!("{prefix}{}: {a}", h.ip));
    }
    for e in &h.errors {
        steps.push(format!("{prefix}{}: source failed: {e}", h.ip));
    }
}

fn address_evidence(c: &Candidate, used: bool, h: Hosting) -> AddressEvidence {
    let followed = h.country_answer().cloned();
    let network = h
        .network()
        .map(|(n, a)| (n.clone(), a.source.clone(), a.dataset_date.clone()));
    let (dataset, dataset_date, method) = match (&followed, h.countries.first()) {
        (Some(a), _) | (None, Some(a)) => (a.source.clone(), a.dataset_date.clone(), a.method),
        (None, None) => (String::new(), String::new(), ""),
    };
    let (network, network_dataset, network_dataset_date) = match network {
        Some((n, s, d)) => (Some(n), s, d),
        None => (None, String::new(), String::new()),
    };
    AddressEvidence {
        ip: c.ip,
        ip_source: c.source.to_owned(),
        host: c.host.clone(),
        used,
        country: followed.and_then(|a| a.country),
        dataset,
        dataset_date,
        method: method.to_owned(),
        sources_disagree: h.disagree,
        answers: h.countries,
        network,
        network_dataset,
        network_dataset_date,
        ambiguity: h.ambiguity,
    }
}

fn unknown_reason(
    input: &RouteInput<'_>,
    addresses: &[AddressEvidence],
    countries: &[String],
    onion_hosts: usize,
) -> Option<String> {
    let used: Vec<&AddressEvidence> = addresses.iter().filter(|a| a.used).collect();
    if used.is_empty() {
        if onion_hosts > 0 {
            return None;
        }
        return Some(match input.resolved {
            None => "hosting unknown: no IP literal and no --hosting-ip (DNS is not used); \
                     kept here for an analyst to trace"
                .to_owned(),
            Some(_) => "hosting unknown: no IP literal, no --hosting-ip, and DNS gave no \
                        address; kept here for an analyst to trace"
                .to_owned(),
        });
    }
    // Addresses are named by their place in the evidence, never by value:
    // the reason goes into the audit log, which holds no host of a
    // reported URL (an IP literal is one).
    let parts: Vec<String> = addresses
        .iter()
        .enumerate()
        .filter(|(_, a)| a.used && a.country.is_none())
        .map(|(i, a)| {
            let raw = a
                .answers
                .iter()
                .find(|x| !x.raw_code.is_empty())
                .map(|x| format!("code {:?}", x.raw_code))
                .unwrap_or_else(|| "no range".to_owned());
            format!("hosting country of address {} unknown ({raw})", i + 1)
        })
        .collect();
    if parts.is_empty() {
        return None;
    }
    let mut reason = parts.join("; ");
    if countries.is_empty() && onion_hosts == 0 {
        reason.push_str("; kept here for an analyst");
    }
    Some(reason)
}
