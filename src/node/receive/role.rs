//! Who may take a report over here: the hotline(s) the origin chose in
//! the route it signed, a hotline one of them handed the case to, or a
//! relay the directory puts in front of a destination (it only passes the
//! report on); and whether this hotline's own directory entry (its law)
//! covers the report's classification.

use crate::identity::NodeId;
use crate::node::Core;
use crate::node::relay::chain;
use crate::pb;
use crate::wire::OpenedReport;

/// What this node does with a report: work it as a case, pass it on to the
/// destinations behind it, or both.
pub(super) struct Role {
    pub case: bool,
    pub relay_for: Vec<NodeId>,
}

/// Decides from the origin's signed route, the handoffs in the hop chain
/// and the directory's relays whether this node may take the report.
pub(super) fn takes_over(
    core: &Core,
    r: &OpenedReport,
) -> Result<Role, (&'static str, &'static str)> {
    let route: Vec<&str> = r
        .payload
        .route
        .as_ref()
        .map(|route| route.destinations.iter().map(String::as_str).collect())
        .unwrap_or_default();
    // The hops before the first handoff are the report's way from its
    // origin to the first holder: exactly the directory's relays for it.
    let before_handoffs = r.relays.len().saturating_sub(r.handoffs.len());
    if let Some((first, _, _)) = r.handoffs.first()
        && r.relays.get(..before_handoffs) != Some(&chain(&core.directory(), &r.origin, first)[..])
    {
        return Err((
            "not-the-relay-chain",
            "the report reached the node that handed it over through nodes that are not its relays",
        ));
    }
    // Each handoff must come from a node holding the case: a destination
    // the origin chose, or the target of an earlier handoff.
    let mut holders: Vec<&str> = route.clone();
    for (by, to, _) in &r.handoffs {
        if !holders.contains(&by.as_str()) {
            return Err((
                "bad-handoff",
                "a node that did not hold the case handed it over",
            ));
        }
        holders.push(to.as_str());
    }
    if r.handed_off_here {
        let accepts = crate::report::Category::parse(&r.payload.category)
            .ok()
            .zip(core.directory().node(&core.me).cloned())
            .is_some_and(|(c, me)| me.accepts(c));
        if !accepts {
            return Err((
                "declined",
                "this hotline does not take reports of this category",
            ));
        }
        return Ok(Role {
            case: true,
            relay_for: vec![],
        });
    }
    if !r.handoffs.is_empty() {
        return Err((
            "bad-handoff",
            "a handed-over case must come straight from the node that handed it over",
        ));
    }
    let directory = core.directory();
    let case = route.contains(&core.me.as_str());
    let relay_for: Vec<NodeId> = route
        .iter()
        .filter(|d| **d != core.me.as_str())
        .filter_map(|d| NodeId::new(d).ok())
        .filter(|d| relayed_by_me(&directory, &r.origin, d, &core.me, &r.relays))
        .collect();
    if !case && relay_for.is_empty() {
        let in_a_chain = route
            .iter()
            .filter_map(|d| NodeId::new(d).ok())
            .any(|d| chain(&directory, &r.origin, &d).contains(&core.me));
        if in_a_chain {
            return Err((
                "not-the-relay-chain",
                "the report came through nodes that are not the directory's relays in front of this one",
            ));
        }
        return Err((
            "not-a-destination",
            "the origin's signed route does not name this node, nor a node it relays for",
        ));
    }
    // Only the relays the directory puts in front of this node may have
    // passed it on: a node that merely holds a copy (a co-destination)
    // cannot pose as one.
    if case && r.relays != chain(&directory, &r.origin, &core.me) {
        return Err((
            "not-the-relay-chain",
            "the report came through nodes that are not the directory's relays for this hotline",
        ));
    }
    Ok(Role { case, relay_for })
}

/// Whether `me` relays a report from `origin` for `dest`: it is in the
/// directory's chain in front of `dest`, and the report came through
/// exactly the relays before it in that chain.
fn relayed_by_me(
    directory: &crate::directory::Directory,
    origin: &NodeId,
    dest: &NodeId,
    me: &NodeId,
    came_through: &[NodeId],
) -> bool {
    let chain = chain(directory, origin, dest);
    chain
        .iter()
        .position(|r| r == me)
        .is_some_and(|i| chain.get(..i) == Some(came_through))
}

/// Why this node may not take `p` over under its own directory entry
/// (`national_categories`), or `None`.
pub(super) fn outside_jurisdiction(core: &Core, p: &pb::ReportPayload) -> Option<String> {
    let class = match crate::report::Classification::parse_or_baseline(&p.classification) {
        Ok(c) => c,
        Err(_) => return Some("unknown classification".into()),
    };
    let category = crate::report::Category::parse(&p.category).ok()?;
    let directory = core.directory();
    let me = directory.node(&core.me)?;
    let covered =
        class == crate::report::Classification::Baseline || me.national.contains(&category);
    (!covered)
        .then(|| format!("this hotline does not take {class} {category} (see its directory entry)"))
}
