//! Hosting in several countries that lead to different places: one
//! decision per place, each with the evidence of its own countries (the
//! addresses located there, and DNS's answers in full, so each receiver
//! sees the whole round-robin), to be sent as reports of their own and
//! linked as one case family. Countries that lead to the same place stay
//! one report.

use super::{AddressEvidence, Evidence, Outcome, hosting};

/// One part of a family: its outcome (with its reasons), its evidence and
/// its steps.
pub(super) type Part = ((Outcome, String), Evidence, Vec<String>);

/// The family's parts, in the order of the countries; empty when every
/// country (and an onion host's fallback) leads to one place.
pub(super) fn parts(
    by_country: &[(String, Outcome, String)],
    outcomes: &[(Outcome, String)],
    evidence: &Evidence,
    steps: &[String],
) -> Vec<Part> {
    // (outcome, reasons, countries)
    let mut groups: Vec<(Outcome, Vec<String>, Vec<String>)> = Vec::new();
    let countries = by_country.iter().map(|(c, o, r)| (Some(c), o, r));
    // Outcomes of no country (an onion host's fallback) come after.
    let others = outcomes
        .iter()
        .skip(by_country.len())
        .map(|(o, r)| (None, o, r));
    for (country, outcome, reason) in countries.chain(others) {
        let i = match groups.iter().position(|g| g.0 == *outcome) {
            Some(i) => i,
            None => {
                groups.push((outcome.clone(), Vec::new(), Vec::new()));
                groups.len() - 1
            }
        };
        groups[i].1.push(reason.clone());
        groups[i].2.extend(country.cloned());
    }
    if groups.len() < 2 {
        return Vec::new();
    }
    let n = groups.len();
    let all = groups
        .iter()
        .map(|(o, _, c)| format!("{} -> {}", shown_countries(c), place(o)))
        .collect::<Vec<_>>()
        .join("; ");
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (outcome, reasons, countries))| {
            let mut steps = steps.to_vec();
            steps.push(format!(
                "case family: report {} of {n}, for {} ({all}); each report of the family \
                 carries its own evidence and the family id",
                i + 1,
                shown_countries(&countries),
            ));
            let evidence = evidence_for(evidence, &countries);
            ((outcome, reasons.join("; ")), evidence, steps)
        })
        .collect()
}

fn place(o: &Outcome) -> String {
    match o {
        Outcome::Local => "kept here".to_owned(),
        Outcome::Peer(id) | Outcome::Fallback(id) => id.to_string(),
        Outcome::NoHotline => "no hotline".to_owned(),
    }
}

fn shown_countries(c: &[String]) -> String {
    if c.is_empty() {
        "the onion host".to_owned()
    } else {
        c.join(", ")
    }
}

/// The evidence of one part: every address but those used and located
/// in another of the family's countries; the primary address, network,
/// ambiguity and CDN taken from its own. A part of no country (an onion
/// host's) keeps the whole evidence.
fn evidence_for(whole: &Evidence, countries: &[String]) -> Evidence {
    if countries.is_empty() {
        return whole.clone();
    }
    let elsewhere = |a: &AddressEvidence| {
        a.used
            && a.country
                .as_ref()
                .is_some_and(|c| whole.countries.contains(c) && !countries.contains(c))
    };
    let addresses: Vec<AddressEvidence> = whole
        .addresses
        .iter()
        .filter(|a| !elsewhere(a))
        .cloned()
        .collect();
    let mut e = hosting::primary_evidence(&addresses);
    e.countries = countries.to_vec();
    e.flags = whole.flags.clone();
    e.behind_cdn = hosting::behind_cdn(&addresses, &whole.dns, &mut Vec::new());
    e.addresses = addresses;
    e.dns = whole.dns.clone();
    e
}
