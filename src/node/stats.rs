//! Time to takedown, computed from what the node stores: for each report
//! it sent, the times from the report to the receiver's receipt, to its
//! assessment, notice and removal (taken from the receiver's signed status
//! updates), and per hop through relays; for cases worked here, from their
//! receipt here. Median and 90th percentile per destination, category and
//! hosting country.

use std::collections::{BTreeMap, HashMap};

use crate::node::{Core, NodeError};
use crate::store::SentRow;

/// The window when none is asked for.
pub const DEFAULT_WINDOW_MS: i64 = 30 * 86_400_000;

/// The milestone a status marks, if any.
pub fn milestone(status: &str) -> Option<&'static str> {
    match status {
        "illegal-baseline" | "illegal-national" | "not-illegal" => Some("assessment"),
        "notice-sent" => Some("notice"),
        "removed" => Some("removal"),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub dimension: &'static str,
    pub key: String,
    pub milestone: &'static str,
    pub count: u64,
    pub p50_ms: i64,
    pub p90_ms: i64,
    pub of: u64,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

type Key = (&'static str, String, &'static str);

#[derive(Default)]
struct Groups {
    /// (dimension, key, milestone) → durations.
    times: BTreeMap<Key, Vec<i64>>,
    /// (dimension, key) → reports in the group.
    sizes: BTreeMap<(&'static str, String), u64>,
}

impl Groups {
    fn add(&mut self, dims: &[(&'static str, String)], milestone: &'static str, ms: i64) {
        for (d, k) in dims {
            self.times
                .entry((d, k.clone(), milestone))
                .or_default()
                .push(ms.max(0));
        }
    }

    fn count(&mut self, dims: &[(&'static str, String)]) {
        for (d, k) in dims {
            *self.sizes.entry((d, k.clone())).or_default() += 1;
        }
    }

    fn rows(self) -> Vec<Row> {
        let sizes = self.sizes;
        self.times
            .into_iter()
            .map(|((dimension, key, milestone), mut v)| {
                v.sort_unstable();
                Row {
                    of: sizes.get(&(dimension, key.clone())).copied().unwrap_or(0),
                    dimension,
                    key,
                    milestone,
                    count: v.len() as u64,
                    p50_ms: percentile(&v, 0.5),
                    p90_ms: percentile(&v, 0.9),
                }
            })
            .collect()
    }
}

pub async fn compute(core: &Core, window_ms: i64) -> Result<Vec<Row>, NodeError> {
    let since = Core::now_ms() - window_ms;
    let sent = core.store.sent_since(core.me.as_str(), since).await?;
    let worked = core.store.worked_since(since).await?;
    let first_seq = sent
        .iter()
        .chain(&worked)
        .map(|r| r.seq)
        .min()
        .unwrap_or(i64::MAX);
    // (report, signer) → status → first time.
    let mut reached: HashMap<(i64, String), HashMap<String, i64>> = HashMap::new();
    if first_seq != i64::MAX {
        for s in core.store.first_statuses(first_seq).await? {
            reached
                .entry((s.report_seq, s.signer))
                .or_default()
                .insert(s.status, s.at_ms);
        }
    }
    let mut groups = Groups::default();
    for r in &sent {
        let dims = [
            ("all", String::new()),
            ("destination", r.destination.clone()),
            ("category", r.category.clone()),
            ("country", r.country.clone()),
        ];
        groups.count(&dims);
        add_sent(
            &mut groups,
            &dims,
            r,
            reached.get(&(r.seq, r.destination.clone())),
        );
    }
    let me = core.me.to_string();
    for r in &worked {
        let dims = [("worked-here", r.destination.clone())];
        groups.count(&dims);
        let mut firsts: HashMap<&str, i64> = HashMap::new();
        for signer in [me.as_str(), ""] {
            for (status, at) in reached
                .get(&(r.seq, signer.to_owned()))
                .into_iter()
                .flatten()
            {
                if let Some(m) = milestone(status) {
                    let e = firsts.entry(m).or_insert(*at);
                    *e = (*e).min(*at);
                }
            }
        }
        for (m, at) in firsts {
            groups.add(&dims, m, at - r.created_at_ms);
        }
    }
    Ok(groups.rows())
}

/// One week of this node's reports abroad: how many were sent, how many
/// were removed, and the median time from report to removal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Week {
    /// The week's first millisecond (weeks are counted back from now).
    pub start_ms: i64,
    pub sent: u64,
    pub removed: u64,
    pub p50_removal_ms: i64,
}

const WEEK_MS: i64 = 7 * 86_400_000;

/// The last `weeks` weeks (oldest first), by when each report was made.
pub async fn weekly(core: &Core, weeks: usize) -> Result<Vec<Week>, NodeError> {
    let now = Core::now_ms();
    let n = i64::try_from(weeks).unwrap_or(52).clamp(1, 104);
    let since = now - n * WEEK_MS;
    let sent = core.store.sent_since(core.me.as_str(), since).await?;
    let first_seq = sent.iter().map(|r| r.seq).min();
    let mut removed_at: HashMap<i64, i64> = HashMap::new();
    if let Some(first) = first_seq {
        for s in core.store.first_statuses(first).await? {
            if s.status == "removed" {
                let e = removed_at.entry(s.report_seq).or_insert(s.at_ms);
                *e = (*e).min(s.at_ms);
            }
        }
    }
    let mut out: Vec<(std::collections::BTreeSet<i64>, Vec<i64>)> =
        (0..n).map(|_| Default::default()).collect();
    for r in &sent {
        let Ok(i) = usize::try_from((r.created_at_ms - since) / WEEK_MS) else {
            continue;
        };
        let Some((seqs, times)) = out.get_mut(i) else {
            continue;
        };
        if seqs.insert(r.seq)
            && let Some(at) = removed_at.get(&r.seq)
        {
            times.push((at - r.created_at_ms).max(0));
        }
    }
    Ok(out
        .into_iter()
        .zip(0..)
        .map(|((seqs, mut times), i)| {
            times.sort_unstable();
            Week {
                start_ms: since + i * WEEK_MS,
                sent: seqs.len() as u64,
                removed: times.len() as u64,
                p50_removal_ms: percentile(&times, 0.5),
            }
        })
        .collect())
}

fn add_sent(
    groups: &mut Groups,
    dims: &[(&'static str, String)],
    r: &SentRow,
    statuses: Option<&HashMap<String, i64>>,
) {
    if r.state == "delivered"
        && let Some(at) = r.delivered_at_ms
    {
        groups.add(dims, "receipt", at - r.created_at_ms);
        if let Some(relayed) = r.relayed_at_ms {
            groups.add(dims, "to-first-relay", relayed - r.created_at_ms);
            groups.add(dims, "relay-to-destination", at - relayed);
        }
    }
    let mut firsts: HashMap<&str, i64> = HashMap::new();
    for (status, at) in statuses.into_iter().flatten() {
        if let Some(m) = milestone(status) {
            let e = firsts.entry(m).or_insert(*at);
            *e = (*e).min(*at);
        }
    }
    for (m, at) in firsts {
        groups.add(dims, m, at - r.created_at_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile(&v, 0.5), 5);
        assert_eq!(percentile(&v, 0.9), 9);
        assert_eq!(percentile(&[7], 0.9), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn groups_count_reports_and_milestones_separately() {
        let mut g = Groups::default();
        let a = [("all", String::new()), ("category", "csam".to_owned())];
        g.count(&a);
        g.count(&a);
        g.add(&a, "removal", 100);
        let rows = g.rows();
        let all = rows.iter().find(|r| r.dimension == "all").unwrap();
        assert_eq!((all.count, all.of, all.p50_ms), (1, 2, 100));
    }
}
