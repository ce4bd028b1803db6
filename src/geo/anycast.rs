//! Known anycast / CDN networks. Their addresses are announced from many
//! places at once, and what a dataset names is usually the network's
//! registration country, not where the reported content's origin server
//! is: a route to such an address still follows the dataset, but says it
//! is ambiguous so that the receiving analyst traces the origin.
//!
//! The list is short on purpose: the largest CDNs and cloud front ends
//! that reports commonly land on (an operator learns more from the `org`
//! that every route names). Sources: each operator's own AS registration
//! (PeeringDB / RIR whois records of these ASNs).

/// What a route says about an address in one of these networks.
pub const ANYCAST_NOTE: &str =
    "ambiguous: anycast/CDN network, the content's origin server may be elsewhere";

/// ASN → operator, sorted by ASN (binary search).
const ANYCAST_CDN: [(u32, &str); 11] = [
    (8075, "Microsoft"),
    (13335, "Cloudflare"),
    (13414, "Twitter / X"),
    (14618, "Amazon"),
    (15169, "Google"),
    (16509, "Amazon"),
    (16625, "Akamai"),
    (20940, "Akamai"),
    (32934, "Meta (Facebook)"),
    (54113, "Fastly"),
    (396982, "Google Cloud"),
];

/// The operator of `asn` if it is a known anycast/CDN network.
pub fn anycast_operator(asn: u32) -> Option<&'static str> {
    ANYCAST_CDN
        .binary_search_by_key(&asn, |e| e.0)
        .ok()
        .and_then(|i| ANYCAST_CDN.get(i))
        .map(|e| e.1)
}

/// CNAME targets under which known CDNs and reverse proxies serve their
/// customers' names (each operator's documented customer domains), sorted
/// by suffix. A host whose chain ends here is behind that CDN even where
/// the address data does not say so.
const CDN_CNAME_SUFFIXES: [(&str, &str); 14] = [
    ("akamai.net", "Akamai"),
    ("akamaiedge.net", "Akamai"),
    ("azureedge.net", "Microsoft"),
    ("azurefd.net", "Microsoft"),
    ("b-cdn.net", "Bunny CDN"),
    ("cdn.cloudflare.net", "Cloudflare"),
    ("cdn77.org", "CDN77"),
    ("cloudfront.net", "Amazon"),
    ("edgekey.net", "Akamai"),
    ("edgesuite.net", "Akamai"),
    ("fastly.net", "Fastly"),
    ("fastlylb.net", "Fastly"),
    ("googlehosted.com", "Google"),
    ("x.incapdns.net", "Imperva"),
];

/// The CDN serving a CNAME target, if it is one of the known customer
/// domains (`name` with or without its final dot).
pub fn cdn_by_cname(name: &str) -> Option<&'static str> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    CDN_CNAME_SUFFIXES
        .iter()
        .find(|(suffix, _)| {
            name == *suffix
                || name
                    .strip_suffix(suffix)
                    .is_some_and(|rest| rest.ends_with('.'))
        })
        .map(|e| e.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_and_found() {
        assert!(ANYCAST_CDN.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(anycast_operator(13335), Some("Cloudflare"));
        assert_eq!(anycast_operator(396982), Some("Google Cloud"));
        assert_eq!(anycast_operator(3320), None); // Deutsche Telekom
    }

    #[test]
    fn cdn_customer_domains_are_matched_by_whole_labels() {
        assert!(CDN_CNAME_SUFFIXES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(cdn_by_cname("d111.cloudfront.net."), Some("Amazon"));
        assert_eq!(cdn_by_cname("Shop.CDN.Cloudflare.net"), Some("Cloudflare"));
        assert_eq!(cdn_by_cname("notcloudfront.net"), None);
        assert_eq!(cdn_by_cname("hosting.example"), None);
    }
}
