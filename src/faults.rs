//! Named crash points for fault-injection tests (see tests/fault.rs).
//! Inert unless the process was started with `ALERTRELAY_CRASH_AT` set.
//!
//! `ALERTRELAY_CRASH_AT=NAME` aborts the process the first time the crash
//! point `NAME` is reached; `NAME:N` the N-th time. The abort is
//! `std::process::abort()`: no destructors run and nothing is flushed, as
//! with SIGKILL, so whatever the node had not committed is lost exactly as
//! in a real crash. The points, in the order a report meets them:
//!
//! | name | where |
//! |---|---|
//! | `intake-before-commit` | `node::intake::store_batch`, just before the submissions' transaction commits |
//! | `origin-after-commit-before-send` | `federation::worker`, just before `Forward` is called |
//! | `receiver-after-commit-before-reply` | `node::receive::forward`, after the batch committed, before the reply |
//! | `origin-storing-receipt` | `federation::worker`, just before the transaction storing receipts commits |
//! | `audit-append` | `store::Tx::audit`, just before the audit entry is inserted (every entry counts, `node.started` included) |

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the crash point.
pub const ENV: &str = "ALERTRELAY_CRASH_AT";

/// Every crash point compiled into the node.
pub const CRASH_POINTS: &[&str] = &[
    "intake-before-commit",
    "origin-after-commit-before-send",
    "receiver-after-commit-before-reply",
    "origin-storing-receipt",
    "audit-append",
];

/// The armed crash point, if any.
struct Armed {
    name: String,
    /// Abort on this hit (1-based).
    nth: u64,
    hits: AtomicU64,
}

static ARMED: OnceLock<Option<Armed>> = OnceLock::new();

/// Aborts the process here if the fault harness asked for it.
///
/// Unarmed (the normal case), this is one initialised-`OnceLock` load.
pub fn crash_point(name: &'static str) {
    let Some(armed) = ARMED.get_or_init(armed_from_env) else {
        return;
    };
    if armed.name != name {
        return;
    }
    let hit = armed.hits.fetch_add(1, Ordering::SeqCst) + 1;
    if hit == armed.nth {
        // stderr is unbuffered: this line is written before the abort, so a
        // harness can tell the node died at the point and not elsewhere.
        eprintln!("{ENV}: aborting at crash point {name} (hit {hit})");
        std::process::abort();
    }
}

fn armed_from_env() -> Option<Armed> {
    let spec = std::env::var(ENV).ok()?;
    match parse(&spec) {
        Some((name, nth)) => Some(Armed {
            name: name.to_owned(),
            nth,
            hits: AtomicU64::new(0),
        }),
        None => {
            // A typo must not look like a crash point that is never reached.
            eprintln!(
                "{ENV}={spec:?} ignored: expected NAME or NAME:N (N >= 1) with NAME one of {}",
                CRASH_POINTS.join(", ")
            );
            None
        }
    }
}

/// Parses `NAME` or `NAME:N` (N >= 1, default 1); NAME must be a known point.
fn parse(spec: &str) -> Option<(&str, u64)> {
    let (name, nth) = match spec.split_once(':') {
        Some((name, n)) => (name, n.parse().ok().filter(|n| *n >= 1)?),
        None => (spec, 1),
    };
    CRASH_POINTS.contains(&name).then_some((name, nth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_count() {
        assert_eq!(parse("audit-append"), Some(("audit-append", 1)));
        assert_eq!(parse("audit-append:7"), Some(("audit-append", 7)));
        assert_eq!(
            parse("origin-storing-receipt:1"),
            Some(("origin-storing-receipt", 1))
        );
    }

    #[test]
    fn refuses_unknown_names_and_bad_counts() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("audit"), None);
        assert_eq!(parse("audit-append:0"), None);
        assert_eq!(parse("audit-append:x"), None);
        assert_eq!(parse("audit-append:"), None);
        assert_eq!(parse("audit-append:-1"), None);
    }

    #[test]
    fn an_unarmed_point_returns() {
        // The test process never sets the variable: reaching a point is a no-op.
        if std::env::var_os(ENV).is_none() {
            for name in CRASH_POINTS {
                crash_point(name);
            }
        }
    }
}
