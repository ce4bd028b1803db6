//! Load shedding per authenticated caller: a token bucket (rate and burst)
//! and a cap on requests in flight. A caller over either is refused at
//! once (`Overloaded`; RESOURCE_EXHAUSTED on gRPC), without touching the others' capacity. The
//! table is keyed by authenticated identity, so its size is bounded by the
//! directory and the certificates the federation CA issued.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use crate::config::{ConnectionLimits, Quota};

/// Why a caller was not admitted (`api::status` makes it
/// RESOURCE_EXHAUSTED).
#[derive(Debug, thiserror::Error)]
pub enum Overloaded {
    #[error("more than {limit} requests in flight from {who}; retry later")]
    InFlight { who: String, limit: usize },
    #[error("rate limit of {per_sec} requests/s for {who} exceeded; retry later")]
    Rate { who: String, per_sec: f64 },
    #[error("more than {limit} connections open from {who}; connection closed")]
    Connections { who: String, limit: usize },
    #[error("more than {limit} connections open in all; connection closed")]
    AllConnections { limit: usize },
    #[error("limiter unavailable")]
    Unavailable,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct CallerLimit {
    bucket: Mutex<Bucket>,
    inflight: Arc<Semaphore>,
}

pub struct Limiter {
    callers: Mutex<BTreeMap<String, Arc<CallerLimit>>>,
    /// Established connections per caller, and their sum.
    connections: Arc<Mutex<Connections>>,
    /// Refusals not audited one by one (over the refusal quota), per caller,
    /// until the next one that is.
    suppressed: Mutex<BTreeMap<String, u64>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            callers: Mutex::new(BTreeMap::new()),
            connections: Arc::default(),
            suppressed: Mutex::new(BTreeMap::new()),
        }
    }
}

/// How many refusals per caller are audited one by one: beyond it, the
/// caller gets RESOURCE_EXHAUSTED and its refusals are counted into the
/// next audited one, so a refused caller cannot grow the audit log (or
/// make the node fsync) without bound.
pub const REFUSALS: Quota = Quota {
    per_sec: 2.0,
    burst: 20.0,
    concurrent: usize::MAX >> 4,
};

/// Held for the duration of an admitted request.
pub struct Permit {
    _inflight: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Connections {
    per_caller: BTreeMap<String, usize>,
    total: usize,
}

/// Held for the life of an admitted connection; frees its place when
/// dropped.
pub struct ConnectionSlot {
    table: Arc<Mutex<Connections>>,
    who: String,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut table = match self.table.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        table.total = table.total.saturating_sub(1);
        if let Some(n) = table.per_caller.get_mut(&self.who) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                table.per_caller.remove(&self.who);
            }
        }
    }
}

impl Limiter {
    /// Whether this refusal of `who` gets its own audit entry; if so, how
    /// many were suppressed since the last one.
    pub fn refusal(&self, who: &str) -> Option<u64> {
        let key = format!("refused {who}");
        if self.admit(&key, REFUSALS).is_ok() {
            let n = self
                .suppressed
                .lock()
                .ok()
                .and_then(|mut m| m.remove(who))
                .unwrap_or(0);
            Some(n)
        } else {
            if let Ok(mut m) = self.suppressed.lock() {
                *m.entry(who.to_owned()).or_default() += 1;
            }
            None
        }
    }

    /// Admits one more established connection from `who` (whose TLS
    /// handshake has succeeded), or refuses it: within `limits` per caller
    /// and in total. The table only holds callers with open connections.
    pub fn connect(
        &self,
        who: &str,
        limits: ConnectionLimits,
    ) -> Result<ConnectionSlot, Overloaded> {
        let mut table = self
            .connections
            .lock()
            .map_err(|_| Overloaded::Unavailable)?;
        if table.total >= limits.total {
            return Err(Overloaded::AllConnections {
                limit: limits.total,
            });
        }
        let mine = table.per_caller.entry(who.to_owned()).or_default();
        if *mine >= limits.per_caller {
            return Err(Overloaded::Connections {
                who: who.to_owned(),
                limit: limits.per_caller,
            });
        }
        *mine += 1;
        table.total += 1;
        Ok(ConnectionSlot {
            table: self.connections.clone(),
            who: who.to_owned(),
        })
    }

    /// Admits one request from `who`, or refuses it.
    pub fn admit(&self, who: &str, quota: Quota) -> Result<Permit, Overloaded> {
        self.admit_work(who, quota, 1)
    }

    /// Admits `n` units of work from `who` at once (all or none: a refusal
    /// takes nothing from its bucket; more than a burst is never admitted).
    pub fn admit_work(&self, who: &str, quota: Quota, n: usize) -> Result<Permit, Overloaded> {
        let caller = {
            let mut callers = self.callers.lock().map_err(|_| Overloaded::Unavailable)?;
            callers
                .entry(who.to_owned())
                .or_insert_with(|| {
                    Arc::new(CallerLimit {
                        bucket: Mutex::new(Bucket {
                            tokens: quota.burst,
                            last: Instant::now(),
                        }),
                        inflight: Arc::new(Semaphore::new(quota.concurrent)),
                    })
                })
                .clone()
        };
        let inflight =
            caller
                .inflight
                .clone()
                .try_acquire_owned()
                .map_err(|_| Overloaded::InFlight {
                    who: who.to_owned(),
                    limit: quota.concurrent,
                })?;
        let mut b = caller.bucket.lock().map_err(|_| Overloaded::Unavailable)?;
        let now = Instant::now();
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * quota.per_sec).min(quota.burst);
        b.last = now;
        let cost = n as f64;
        if b.tokens < cost {
            return Err(Overloaded::Rate {
                who: who.to_owned(),
                per_sec: quota.per_sec,
            });
        }
        b.tokens -= cost;
        Ok(Permit {
            _inflight: inflight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_bounded_per_caller_and_in_all_and_freed_on_drop() {
        let l = Limiter::default();
        let limits = ConnectionLimits {
            per_caller: 2,
            total: 3,
        };
        let a1 = l.connect("node:A", limits).unwrap();
        let _a2 = l.connect("node:A", limits).unwrap();
        let err = l.connect("node:A", limits).err().unwrap();
        assert!(
            matches!(err, Overloaded::Connections { limit: 2, .. }),
            "{err:?}"
        );
        let _b1 = l.connect("node:B", limits).unwrap();
        let err = l.connect("node:C", limits).err().unwrap();
        assert!(
            matches!(err, Overloaded::AllConnections { limit: 3 }),
            "{err:?}"
        );
        drop(a1);
        let _c1 = l.connect("node:C", limits).unwrap();
        assert!(
            l.connect("node:A", limits).is_err(),
            "the total is full again"
        );
    }

    #[test]
    fn a_caller_over_its_rate_is_refused_and_others_are_not() {
        let l = Limiter::default();
        let q = Quota {
            per_sec: 0.001,
            burst: 5.0,
            concurrent: 100,
        };
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(l.admit("node:A", q).unwrap());
        }
        let err = l.admit("node:A", q).err().unwrap();
        assert!(matches!(err, Overloaded::Rate { .. }), "{err:?}");
        assert!(l.admit("node:B", q).is_ok());
    }

    #[test]
    fn concurrency_is_capped_and_released() {
        let l = Limiter::default();
        let q = Quota {
            per_sec: 1e9,
            burst: 1e9,
            concurrent: 2,
        };
        let a = l.admit("x", q).unwrap();
        let _b = l.admit("x", q).unwrap();
        assert!(l.admit("x", q).is_err());
        drop(a);
        assert!(l.admit("x", q).is_ok());
    }
}
