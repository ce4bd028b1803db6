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
    let alternative = match &policy.alternative {
        Alternative::Node(a) => Some(a),
        Alternative::Held => None,
    };
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
    // The alternative's own directory entry must take it (or it would
    // refuse it): otherwise the report is held here.
    let usable = alternative.filter(|a| {
        *a != me
            && directory
                .node(a)
                .is_some_and(|n| n.active && n.accepts_classified(category, class))
    });
    let outcome = match (alternative, usable) {
        (_, Some(a)) => {
            if !kept.contains(a) {
                kept.push(a.clone());
            }
            decision.steps.push(format!(
                "jurisdiction: to the alternative {a} (`jurisdiction.alternative`) instead of {withheld_from}"
            ));
            format!("to the alternative {a}")
        }
        (Some(a), None) => {
            decision.steps.push(format!(
                "jurisdiction: the alternative {a} cannot take it (suspended, unknown, or its directory entry does not take {class} {category}): held here for an analyst"
            ));
            "held here for an analyst".to_owned()
        }
        (None, None) => {
            decision
                .steps
                .push("jurisdiction: held here for an analyst (delivery `held`)".to_owned());
            "held here for an analyst".to_owned()
        }
    };
    decision.reason.push_str(&format!(
        "; jurisdiction policy: {class} {category} may not go to {withheld_from}: {outcome}"
    ));
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
