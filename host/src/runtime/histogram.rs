//! A lock-free latency histogram with fixed buckets, for plugin calls: the
//! subtasks record, `/metrics` reads. Fixed Prometheus-style `le` buckets
//! keep recording to one atomic add per call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (the last bucket is +Inf).
pub const BUCKETS: [f64; 12] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Default)]
pub struct LatencyHistogram {
    /// Non-cumulative counts per bucket; index `BUCKETS.len()` is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A consistent-enough copy for rendering: cumulative counts per bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub cumulative: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(BUCKETS.len());
        for (i, bound) in BUCKETS.iter().enumerate() {
            running += self.counts[i].load(Ordering::Relaxed);
            cumulative.push((*bound, running));
        }
        running += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            cumulative,
            count: running,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_lands_in_the_first_bucket_that_holds_it_and_counts_cumulate() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(5));
        h.record(Duration::from_micros(700));
        h.record(Duration::from_secs(3));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative[0], (0.000_01, 1));
        // 700 µs is above 0.5 ms and at most 1 ms.
        assert_eq!(s.cumulative[3].1, 1);
        assert_eq!(s.cumulative[4].1, 2);
        // The 3 s call is only in +Inf.
        assert_eq!(s.cumulative.last().unwrap().1, 2);
        assert!((s.sum_seconds - 3.000_705).abs() < 1e-9);
    }
}
