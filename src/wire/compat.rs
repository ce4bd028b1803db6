//! What each protocol version's report payload holds. Protocol 2 added
//! fields to the signed route (the DNS evidence, `behind_cdn`, the case
//! family); a node of protocol 1 drops them when it decodes, so the
//! re-encoding differs from the signed bytes and it refuses the report as
//! non-canonical. The origin therefore sends such a node the previous
//! protocol's copy: the same report without those fields, signed anew
//! (Ed25519 is deterministic: every retry sends the same bytes). The
//! reasoning in words (`steps`) stays, so the receiver still reads why.

use prost::Message;

use crate::pb;

/// The report as a node of `protocol` understands it: `None` when it
/// holds nothing that node does not know (send it as it is).
pub fn copy_for(protocol: u32, p: &pb::ReportPayload) -> Option<pb::ReportPayload> {
    if protocol >= crate::wire::PROTOCOL {
        return None;
    }
    let mut copy = p.clone();
    strip(copy.hosting.as_mut());
    if let Some(route) = copy.route.as_mut() {
        strip(route.evidence.as_mut());
        route.family.clear();
    }
    (copy != *p).then_some(copy)
}

/// Whether a node of `protocol` sees every field of `p` (no copy made:
/// this is asked of every report sent).
pub fn known_to(protocol: u32, p: &pb::ReportPayload) -> bool {
    let plain = |e: Option<&pb::HostingEvidence>| {
        e.is_none_or(|e| e.dns.is_empty() && e.behind_cdn.is_empty())
    };
    protocol >= crate::wire::PROTOCOL
        || (plain(p.hosting.as_ref())
            && p.route
                .as_ref()
                .is_none_or(|r| r.family.is_empty() && plain(r.evidence.as_ref())))
}

/// The digest of the previous protocol's copy of these signed payload
/// bytes, when it differs from them: what a receipt from a node of the
/// previous protocol names.
pub fn previous_digest(payload: &[u8]) -> Option<[u8; 32]> {
    let p = pb::ReportPayload::decode(payload).ok()?;
    let copy = copy_for(crate::wire::PROTOCOL - 1, &p)?;
    Some(crate::wire::digest(&copy.encode_to_vec()))
}

/// Removes what protocol 1 does not know from hosting evidence.
fn strip(e: Option<&mut pb::HostingEvidence>) {
    if let Some(e) = e {
        e.dns.clear();
        e.behind_cdn.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_dns() -> pb::ReportPayload {
        let evidence = pb::HostingEvidence {
            country: "DE".into(),
            dns: vec![pb::DnsResolution {
                host: "h.example".into(),
                ..Default::default()
            }],
            behind_cdn: "Cloudflare".into(),
            ..Default::default()
        };
        pb::ReportPayload {
            report_id: "r".into(),
            hosting: Some(evidence.clone()),
            route: Some(pb::RouteDecision {
                kind: "peer".into(),
                steps: vec!["host h.example: A 192.0.2.1".into()],
                evidence: Some(evidence),
                family: "f".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_previous_protocols_copy_drops_only_what_it_does_not_know() {
        let p = with_dns();
        assert!(known_to(2, &p));
        assert!(!known_to(1, &p));
        let copy = copy_for(1, &p).unwrap();
        let ev = copy.hosting.as_ref().unwrap();
        assert!(ev.dns.is_empty() && ev.behind_cdn.is_empty());
        assert_eq!(ev.country, "DE");
        let route = copy.route.as_ref().unwrap();
        assert!(route.family.is_empty());
        assert_eq!(route.steps, p.route.as_ref().unwrap().steps);
        assert!(known_to(1, &copy));
        assert_eq!(
            previous_digest(&p.encode_to_vec()),
            Some(crate::wire::digest(&copy.encode_to_vec()))
        );
        assert_eq!(previous_digest(&copy.encode_to_vec()), None);
    }
}
