//! The directory rules: a hosting country → this node, or the first peer in
//! directory order that serves it and accepts the category; otherwise the
//! fallback chain for the category (category-specific fallbacks in
//! configuration order, then the general fallback), skipping this node,
//! suspended nodes and nodes that decline the category.

use crate::directory::DirectoryNode;
use crate::identity::NodeId;
use crate::report::Category;

use super::Federation;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Local,
    Peer(NodeId),
    Fallback(NodeId),
    NoHotline,
}

/// Where content hosted in `country` goes, with the reason and the steps.
pub(super) fn for_country(
    country: &str,
    category: Category,
    fed: &Federation<'_>,
    steps: &mut Vec<String>,
) -> (Outcome, String) {
    let me = fed.directory.node(fed.me);
    if me.is_some_and(|n| n.countries.iter().any(|c| c == country)) {
        steps.push(format!(
            "{country}: served by this node ({}): kept here",
            fed.me
        ));
        return (
            Outcome::Local,
            format!("hosted in {country}, served by this node"),
        );
    }
    let suspended: Vec<&str> = fed
        .directory
        .nodes()
        .iter()
        .filter(|n| !n.active && n.countries.iter().any(|c| c == country))
        .map(|n| n.id.as_str())
        .collect();
    if !suspended.is_empty() {
        steps.push(format!(
            "{country}: {} suspended (active = false), not considered",
            suspended.join(", ")
        ));
    }
    let serving: Vec<&DirectoryNode> = fed
        .directory
        .serving(country)
        .filter(|n| &n.id != fed.me)
        .collect();
    for n in &serving {
        if n.accepts(category) {
            steps.push(format!(
                "{country}: {} is the first hotline in directory order that serves {country} \
                 and accepts {category}",
                n.id
            ));
            return (
                Outcome::Peer(n.id.clone()),
                format!("hosted in {country}, served by {}", n.id),
            );
        }
        steps.push(format!(
            "{country}: {} serves {country} but declines {category} (accepts {})",
            n.id,
            accepted(n)
        ));
    }
    let why = if serving.is_empty() {
        steps.push(format!("{country}: no hotline in the federation serves it"));
        format!("hosted in {country}, which has no hotline in the federation")
    } else {
        format!("hosted in {country}, whose hotlines do not accept category {category}")
    };
    fallback(why, category, fed, steps)
}

/// The fallback chain for `category`; `why` says why it is needed.
pub(super) fn fallback(
    why: String,
    category: Category,
    fed: &Federation<'_>,
    steps: &mut Vec<String>,
) -> (Outcome, String) {
    let chain: Vec<(&NodeId, &str)> = fed
        .fallback_for
        .iter()
        .filter(|(c, _)| *c == category)
        .map(|(_, id)| (id, "fallback_for"))
        .chain(fed.fallback.map(|id| (id, "fallback")))
        .collect();
    let mut skipped = Vec::new();
    for (id, key) in &chain {
        let node = fed.directory.node(id);
        let skip = if *id == fed.me {
            Some("is this node")
        } else if node.is_none() {
            Some("is not in the directory")
        } else if node.is_some_and(|n| !n.active) {
            Some("is suspended")
        } else if node.is_some_and(|n| !n.accepts(category)) {
            Some("declines the category")
        } else {
            None
        };
        match skip {
            Some(s) => {
                steps.push(format!("fallback {id} (from `{key}`) {s}: skipped"));
                skipped.push(format!("{id} {s}"));
            }
            None => {
                steps.push(format!(
                    "{why}: to the fallback {id} (from `{key}` for {category})"
                ));
                return (
                    Outcome::Fallback((*id).clone()),
                    format!("{why}: to the fallback {id}"),
                );
            }
        }
    }
    steps.push(format!(
        "{why}: no usable fallback for {category}: kept here, delivery no-hotline"
    ));
    let reason = if chain.is_empty() {
        format!("{why}, and no fallback is configured: kept here")
    } else {
        format!(
            "{why}, and no fallback can take it ({}): kept here",
            skipped.join(", ")
        )
    };
    (Outcome::NoHotline, reason)
}

fn accepted(n: &DirectoryNode) -> String {
    n.categories
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
