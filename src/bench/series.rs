//! What the report (`report.rs`) draws, kept while a scenario runs and
//! serialized with its figures: rates per interval, a queue over time, a
//! latency distribution, and latency against the backlog waiting.

use std::time::Duration;

use serde::Serialize;

/// Rates per interval over a measured window, from the counters the
/// scenario polls: reports committed at the origin (answered
/// submissions) and the origin's queue. Delivered end to end in an
/// interval = committed in it - growth of the queue, as for the whole
/// window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rates {
    pub interval_secs: f64,
    /// Seconds from the start of the window at the end of each interval.
    pub secs: Vec<f64>,
    pub intake_per_sec: Vec<f64>,
    pub end_to_end_per_sec: Vec<f64>,
    /// The counters at the end of the last interval: (secs, committed,
    /// queued).
    #[serde(skip)]
    last: (f64, u64, u64),
}

impl Rates {
    pub const INTERVAL: Duration = Duration::from_millis(500);

    /// Starts at the window's beginning, with the counters read then.
    pub fn start(committed: u64, queued: u64) -> Self {
        Rates {
            interval_secs: Self::INTERVAL.as_secs_f64(),
            last: (0.0, committed, queued),
            ..Rates::default()
        }
    }

    /// The counters read `secs` into the window; closes an interval when
    /// one has passed since the last.
    pub fn observe(&mut self, secs: f64, committed: u64, queued: u64) {
        let (at, c0, q0) = self.last;
        let dt = secs - at;
        if dt < self.interval_secs {
            return;
        }
        let intake = committed.saturating_sub(c0) as f64;
        let delivered = intake - (queued as f64 - q0 as f64);
        self.secs.push(secs);
        self.intake_per_sec.push(intake / dt);
        self.end_to_end_per_sec.push(delivered.max(0.0) / dt);
        self.last = (secs, committed, queued);
    }
}

/// A queue over time: reports still queued, read every `SPACING` at
/// most (and always the first and the last, empty, reading).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Curve {
    pub secs: Vec<f64>,
    pub queued: Vec<u64>,
}

impl Curve {
    pub const SPACING: Duration = Duration::from_millis(200);

    pub fn observe(&mut self, secs: f64, queued: u64) {
        let due = self
            .secs
            .last()
            .is_none_or(|last| secs - last >= Self::SPACING.as_secs_f64());
        if due || queued == 0 {
            self.secs.push(secs);
            self.queued.push(queued);
        }
    }
}

/// A latency distribution: the latency at each percentile 0, 1, …, 100
/// (0 is the fastest sample, 100 the slowest), ms. Empty without samples.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cdf {
    pub percentile_ms: Vec<f64>,
}

impl Cdf {
    pub fn of(samples: &[Duration]) -> Self {
        let mut v = samples.to_vec();
        v.sort();
        if v.is_empty() {
            return Cdf::default();
        }
        Cdf {
            percentile_ms: (0..=100)
                .map(|p| super::quantile_ms(&v, f64::from(p) / 100.0))
                .collect(),
        }
    }
}

/// Latency of each sample against how many reports still waited when it
/// was submitted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scatter {
    pub queued: Vec<u64>,
    pub latency_ms: Vec<f64>,
}

impl Scatter {
    pub fn push(&mut self, queued: u64, latency: Duration) {
        self.queued.push(queued);
        self.latency_ms.push(latency.as_secs_f64() * 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_delivered_as_committed_less_the_queue_growth() {
        let mut r = Rates::start(100, 10);
        r.observe(0.2, 150, 20); // shorter than an interval: not closed
        r.observe(0.5, 300, 60);
        r.observe(1.0, 400, 10);
        assert_eq!(r.secs, [0.5, 1.0]);
        assert_eq!(r.intake_per_sec, [400.0, 200.0]);
        // 200 committed, queue +50: 150 delivered in 0.5 s; then 100
        // committed, queue -50: 150 delivered.
        assert_eq!(r.end_to_end_per_sec, [300.0, 300.0]);
    }

    #[test]
    fn a_curve_keeps_its_spacing_and_always_the_empty_end() {
        let mut c = Curve::default();
        for (t, q) in [(0.0, 90), (0.1, 80), (0.25, 50), (0.3, 0)] {
            c.observe(t, q);
        }
        assert_eq!(c.secs, [0.0, 0.25, 0.3]);
        assert_eq!(c.queued, [90, 50, 0]);
    }

    #[test]
    fn a_cdf_runs_from_the_fastest_to_the_slowest_sample() {
        let v: Vec<Duration> = (1..=200).rev().map(Duration::from_millis).collect();
        let c = Cdf::of(&v);
        assert_eq!(c.percentile_ms.len(), 101);
        assert_eq!(c.percentile_ms[0], 1.0);
        assert_eq!(c.percentile_ms[50], 100.0);
        assert_eq!(c.percentile_ms[100], 200.0);
        assert!(Cdf::of(&[]).percentile_ms.is_empty());
    }
}
