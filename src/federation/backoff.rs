//! Capped exponential backoff with jitter that never gives up: after any
//! number of failures the next delay is at most `max`, never "stop".

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            failures: 0,
        }
    }

    /// The delay before the next attempt after one more failure: the
    /// exponential step `initial * 2^failures`, capped at `max`, with "equal
    /// jitter" (uniform between half and all of it) so that many nodes
    /// retrying one peer do not synchronise.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let step = self
            .initial
            .saturating_mul(1u32 << self.failures.min(30))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        half + rng.gen_range(Duration::ZERO..=step - half)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delays_grow_then_stay_capped_forever_and_reset() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(300));
        let mut b = Backoff::new(initial, max);
        let first = b.next_delay(&mut rng);
        assert!(first >= Duration::from_millis(50) && first <= initial);
        let mut last = Duration::ZERO;
        for _ in 0..10_000 {
            last = b.next_delay(&mut rng);
            assert!(last <= max);
        }
        // After thousands of failures it still retries, between max/2 and max.
        assert!(last >= max / 2, "{last:?}");
        b.reset();
        assert!(b.next_delay(&mut rng) <= initial);
    }

    #[test]
    fn jitter_spreads_retries() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let delays: Vec<_> = (0..20)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
                for _ in 0..3 {
                    b.next_delay(&mut rng);
                }
                b.next_delay(&mut rng)
            })
            .collect();
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 10);
    }
}
