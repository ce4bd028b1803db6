//! The jurisdiction policy: what may be sent where. Applied to a routing
//! decision after the directory rules chose its destinations. A
//! destination may receive a report of category C and classification K
//! only if
//!
//! 1. its directory entry takes it (what the receiver's law covers):
//!    baseline material of any category it accepts, `national` material
//!    only of the categories in its `national_categories`; and
//! 2. every `[[jurisdiction.rule]]` of this node's configuration that names
//!    it (`peer = ID`) or one of its countries (`country = CC`) lists K in
//!    `classifications` and C in `categories` (an empty list allows all).
//!
//! A destination that may not receive it is replaced by the configured
//! alternative (`[jurisdiction] alternative`): another node such as a
//! law-enforcement channel, or `held` (kept here for an analyst, delivery
//! state `held`). The reason goes into `steps`, `reason` and `withheld`;
//! nothing is silently dropped or silently sent. Pure: no IO.

use serde::Serialize;

use crate::directory::Directory;
use crate::identity::NodeId;
use crate::report::{Category, Classification};

use super::{RouteDecision, RouteKind};

/// Where a report goes that may not go where its content is hosted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Alternative {
    /// Kept here for an analyst: delivery state `held`.
    #[default]
    Held,
    /// Sent to this node instead (e.g. a law-enforcement channel).
    Node(NodeId),
}

/// Whom a rule is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every hotline serving this country (its law).
    Country(String),
    /// One node.
    Peer(NodeId),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Country(c) => write!(f, "country = {c}"),
            Target::Peer(p) => write!(f, "peer = {p}"),
        }
    }
}

/// `[[jurisdiction.rule]]`: what may be sent to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub target: Target,
    /// Allowed classifications; empty: any.
    pub classifications: Vec<Classification>,
    /// Allowed categories; empty: any.
    pub categories: Vec<Category>,
}

/// `[jurisdiction]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub alternative: Alternative,
    pub rules: Vec<Rule>,
}

/// A destination the policy withheld the report from, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Withheld {
    pub node: NodeId,
    /// One line, no host names.
    pub reason: String,
}

impl Policy {
    /// Why `node` may not receive a `class` report of `category`, or `None`
    /// when it may.
    pub fn forbids(
        &self,
        directory: &Directory,
        node: &NodeId,
        category: Category,
        class: Classification,
    ) -> Option<String> {
        let entry = directory.node(node)?;
        if !entry.accepts_classified(category, class) {
            let covers: Vec<&str> = entry.national.iter().map(|c| c.as_str()).collect();
            return Some(format!(
                "its directory entry does not take {class} {category} (national_categories: {})",
                if covers.is_empty() {
                    "none".to_owned()
                } else {
                    covers.join(", ")
                }
            ));
        }
        for rule in &self.rules {
            let applies = match &rule.target {
                Target::Peer(p) => p == node,
                Target::Country(c) => entry.countries.iter().any(|x| x == c),
            };
            if !applies {
                continue;
            }
            if !rule.classifications.is_empty() && !rule.classifications.contains(&class) {
                return Some(format!(
                    "jurisdiction rule {} allows classifications {} only",
                    rule.target,
                    join(&rule.classifications)
                ));
            }
            if !rule.categories.is_empty() && !rule.categories.contains(&category) {
                return Some(format!(
                    "jurisdiction rule {} allows categories {} only",
                    rule.target,
                    join(&rule.categories)
                ));
            }
        }
        None
    }

    /// The node named by `[jurisdiction] alternative`, or `None` for `held`.
    fn alternative_node(&self) -> Option<&NodeId> {
        match &self.alternative {
            Alternative::Node(a) => Some(a),
            Alternative::Held => None,
        }
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies the policy to a decision: forbidden destinations are replaced by
/// the alternative, with the reason in the steps, the reason and
/// `withheld`. `me` is this node (never a destination of its own).
pub fn apply(
    mut decision: RouteDecision,
    category: Category,
    class: Classification,
    policy: &Policy,
    directory: &Directory,
    me: &NodeId,
) -> RouteDecision {
    if decision.destinations.is_empty() {
        return decision;
    }
    let alternative = policy.alternative_node();
    let mut kept = withhold_forbidden(&mut decision, category, class, policy, directory);
    if decision.withheld.is_empty() {
        decision.destinations = kept;
        decision.steps.push(format!(
            "jurisdiction: {class} {category} may go to {}",
            join(&decision.destinations)
        ));
        return decision;
    }
    let withheld_from = join(
        &decision
            .withheld
            .iter()
            .map(|w| w.node.clone())
            .collect::<Vec<_>>(),
    );
    let usable = usable_alternative(alternative, directory, me, category, class);
    let (step, outcome) = instead(
        alternative,
        usable,
        &mut kept,
        &withheld_from,
        category,
        class,
    );
    decision.steps.push(step);
    decision.reason.push_str(&format!(
        "; jurisdiction policy: {class} {category} may not go to {withheld_from}: {outcome}"
    ));
    settle(decision, kept, alternative)
}

/// Takes the destinations out of `decision` and returns those the policy
/// lets through; each one it forbids goes into `withheld`, with a step
/// saying why.
fn withhold_forbidden(
    decision: &mut RouteDecision,
    category: Category,
    class: Classification,
    policy: &Policy,
    directory: &Directory,
) -> Vec<NodeId> {
    let alternative = policy.alternative_node();
    let mut kept = Vec::new();
    for d in std::mem::take(&mut decision.destinations) {
        // The alternative is the channel the policy itself designates.
        if Some(&d) == alternative {
            kept.push(d);
            continue;
        }
        match policy.forbids(directory, &d, category, class) {
            None => kept.push(d),
            Some(why) => {
                decision.steps.push(format!(
                    "jurisdiction: {class} {category} may not go to {d}: {why}"
                ));
                decision.withheld.push(Withheld {
                    node: d,
                    reason: why,
                });
            }
        }
    }
    kept
}

/// The alternative, if it can take the report. Its own directory entry
/// must take it (or it would refuse it), and it must be active and not
/// this node: otherwise the report is held here.
fn usable_alternative<'a>(
    alternative: Option<&'a NodeId>,
    directory: &Directory,
    me: &NodeId,
    category: Category,
    class: Classification,
) -> Option<&'a NodeId> {
    alternative.filter(|a| {
        *a != me
            && directory
                .node(a)
                .is_some_and(|n| n.active && n.accepts_classified(category, class))
    })
}

/// Where a withheld report goes instead: the usable alternative (added to
/// `kept`), or nowhere (held here). Returns the step to record and the
/// outcome for the decision's reason.
fn instead(
    alternative: Option<&NodeId>,
    usable: Option<&NodeId>,
    kept: &mut Vec<NodeId>,
    withheld_from: &str,
    category: Category,
    class: Classification,
) -> (String, String) {
    match (alternative, usable) {
        (_, Some(a)) => {
            if !kept.contains(a) {
                kept.push(a.clone());
            }
            (
                format!(
                    "jurisdiction: to the alternative {a} (`jurisdiction.alternative`) instead of {withheld_from}"
                ),
                format!("to the alternative {a}"),
            )
        }
        (Some(a), None) => (
            format!(
                "jurisdiction: the alternative {a} cannot take it (suspended, unknown, or its directory entry does not take {class} {category}): held here for an analyst"
            ),
            "held here for an analyst".to_owned(),
        ),
        (None, None) => (
            "jurisdiction: held here for an analyst (delivery `held`)".to_owned(),
            "held here for an analyst".to_owned(),
        ),
    }
}

/// Sets the decision's destinations to `kept` and its kind to what they
/// amount to: held when none is left, fallback when only the alternative
/// is, unchanged otherwise; then records the final decision as a step.
fn settle(
    mut decision: RouteDecision,
    kept: Vec<NodeId>,
    alternative: Option<&NodeId>,
) -> RouteDecision {
    let all_withheld = kept.iter().all(|k| Some(k) == alternative);
    decision.kind = if kept.is_empty() {
        RouteKind::Held
    } else if all_withheld {
        RouteKind::Fallback
    } else {
        decision.kind
    };
    decision.destinations = kept;
    decision.steps.push(format!(
        "decision after the jurisdiction policy: {} -> {}",
        decision.kind.as_str(),
        if decision.destinations.is_empty() {
            "held here".to_owned()
        } else {
            join(&decision.destinations)
        }
    ));
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{RawDirectory, RawNode};
    use crate::routing::Evidence;

    fn node(id: &str, cc: &[&str], national: &[&str], active: bool) -> RawNode {
        RawNode {
            relay: None,
            id: id.into(),
            name: String::new(),
            countries: cc.iter().map(|c| (*c).into()).collect(),
            endpoint: "https://127.0.0.1:1".into(),
            categories: vec![],
            active,
            keys: vec![],
            national_categories: national.iter().map(|c| (*c).into()).collect(),
        }
    }

    fn dir() -> Directory {
        Directory::from_raw(
            RawDirectory {
                federation: "t".into(),
                nodes: vec![
                    node("FR-PDC", &["FR"], &[], true),
                    node("DE-ECO", &["DE"], &[], true),
                    node("NL-HOT", &["NL"], &["csam"], true),
                    node("LE", &[], &["csam", "grooming"], true),
                    node("LE-OFF", &[], &["csam"], false),
                ],
            },
            "t",
        )
        .unwrap()
    }

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn to(dests: &[&str]) -> RouteDecision {
        RouteDecision {
            kind: RouteKind::Peer,
            destinations: dests.iter().map(|d| id(d)).collect(),
            reason: "hosted somewhere".into(),
            evidence: Evidence::default(),
            steps: vec![],
            withheld: vec![],
            family: None,
            parts: vec![],
        }
    }

    fn policy(alternative: Option<&str>, rules: Vec<Rule>) -> Policy {
        Policy {
            alternative: alternative.map_or(Alternative::Held, |a| Alternative::Node(id(a))),
            rules,
        }
    }

    fn apply_to(dests: &[&str], cat: Category, class: Classification, p: &Policy) -> RouteDecision {
        apply(to(dests), cat, class, p, &dir(), &id("FR-PDC"))
    }

    #[test]
    fn baseline_material_goes_where_the_directory_rules_sent_it() {
        let r = apply_to(
            &["DE-ECO"],
            Category::Csam,
            Classification::Baseline,
            &Policy::default(),
        );
        assert_eq!(
            (r.kind, r.destinations.clone()),
            (RouteKind::Peer, vec![id("DE-ECO")])
        );
        assert!(r.withheld.is_empty());
        assert!(r.steps.iter().any(|s| s.contains("may go to DE-ECO")));
    }

    #[test]
    fn national_material_goes_only_where_the_receivers_law_covers_it() {
        let p = policy(Some("LE"), vec![]);
        let r = apply_to(&["NL-HOT"], Category::Csam, Classification::National, &p);
        assert_eq!(r.destinations, vec![id("NL-HOT")]);
        let r = apply_to(&["DE-ECO"], Category::Csam, Classification::National, &p);
        assert_eq!(
            (r.kind, r.destinations.clone()),
            (RouteKind::Fallback, vec![id("LE")])
        );
        assert_eq!(r.withheld[0].node, id("DE-ECO"));
        assert!(r.reason.contains("may not go to DE-ECO"), "{}", r.reason);
        // Several destinations: the allowed one stays, the other is replaced.
        let r = apply_to(
            &["NL-HOT", "DE-ECO"],
            Category::Csam,
            Classification::National,
            &p,
        );
        assert_eq!(r.kind, RouteKind::Peer);
        assert_eq!(r.destinations, vec![id("NL-HOT"), id("LE")]);
    }

    #[test]
    fn without_a_usable_alternative_the_report_is_held_never_dropped() {
        for p in [
            Policy::default(),
            policy(Some("LE-OFF"), vec![]), // suspended
        ] {
            let r = apply_to(&["DE-ECO"], Category::Csam, Classification::National, &p);
            assert_eq!(r.kind, RouteKind::Held);
            assert!(r.destinations.is_empty());
            assert!(
                r.reason.contains("held here for an analyst"),
                "{}",
                r.reason
            );
        }
        // LE's own entry does not take national trafficking material.
        let r = apply_to(
            &["DE-ECO"],
            Category::Trafficking,
            Classification::National,
            &policy(Some("LE"), vec![]),
        );
        assert_eq!(r.kind, RouteKind::Held);
    }

    #[test]
    fn configured_rules_restrict_by_country_and_by_peer() {
        let rules = vec![
            Rule {
                target: Target::Country("NL".into()),
                classifications: vec![Classification::Baseline],
                categories: vec![],
            },
            Rule {
                target: Target::Peer(id("DE-ECO")),
                classifications: vec![],
                categories: vec![Category::Csam],
            },
        ];
        let p = policy(None, rules);
        // NL's law would take it, but this node's rule for NL says baseline only.
        let r = apply_to(&["NL-HOT"], Category::Csam, Classification::National, &p);
        assert_eq!(r.kind, RouteKind::Held);
        assert!(r.withheld[0].reason.contains("country = NL"));
        let r = apply_to(
            &["DE-ECO"],
            Category::Grooming,
            Classification::Baseline,
            &p,
        );
        assert_eq!(r.kind, RouteKind::Held);
        assert!(r.withheld[0].reason.contains("peer = DE-ECO"));
        let r = apply_to(&["DE-ECO"], Category::Csam, Classification::Baseline, &p);
        assert_eq!(r.destinations, vec![id("DE-ECO")]);
    }
}
