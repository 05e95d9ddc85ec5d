//! [`LatencyTracker`]: recent time-to-first-byte of GETs, and the hedging threshold it implies.
//!
//! A hedged request (Dean & Barroso, "The Tail at Scale") is a duplicate sent when the original
//! has taken longer than a high percentile of recent requests; whichever answers first is used
//! and the other is cancelled. With the threshold at the 95th percentile it costs about 5% more
//! requests and cuts the tail that a few slow servers or lost packets add.
//!
//! What is timed is the time to the response headers, not the whole body: it barely depends on
//! the request's size, so one threshold serves small footer reads and whole-shard reads alike.
//! The tracker keeps the last [`WINDOW`] samples; the percentile is recomputed every
//! [`RECOMPUTE_EVERY`] samples (sorting 256 numbers), and hedging starts only after
//! [`MIN_SAMPLES`] of them. The fetcher only hedges when the concurrency limiter has a free slot,
//! so hedges never add load to a store that is throttling us.
//!
//! [`HedgeBudget`] holds hedges to the 5% the percentile promises. The percentile only promises
//! it while latencies hold still: when every request slows down at once (a loaded server, or a
//! client short of CPU: on a two-core machine reading loopback S3, the loader and the server
//! share the cores), the recent 95th percentile lags behind, 11% of GETs were hedged, few of
//! those hedges won (8 of 35), and each loser's connection is dropped after the server has
//! already pushed megabytes into it. With the budget (`benches/peers/ab.py`, blobs over loopback
//! S3, 6 interleaved rounds): 6–9 hedges per run instead of 6–29, 1,127 MB/s median instead of
//! 1,062, 0.77 CPU-s/GB instead of 0.80; under a heavy-tailed store (`soak --only hedging`) the
//! p99 batch wait stays cut from 147 ms to 48 (43 without the budget).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Samples kept.
pub(crate) const WINDOW: usize = 256;
/// Samples needed before any hedge.
pub(crate) const MIN_SAMPLES: usize = 20;
/// The percentile a request must exceed to be hedged.
pub(crate) const PERCENTILE: f64 = 0.95;
/// Never hedge sooner than this (loopback answers in microseconds; scheduling noise is not a
/// slow server).
pub(crate) const MIN_DELAY: Duration = Duration::from_millis(5);
const RECOMPUTE_EVERY: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct LatencyTracker {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    samples: VecDeque<Duration>,
    since_recompute: usize,
    threshold: Option<Duration>,
}

impl LatencyTracker {
    pub(crate) fn record(&self, d: Duration) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if s.samples.len() == WINDOW {
            s.samples.pop_front();
        }
        s.samples.push_back(d);
        s.since_recompute += 1;
        if s.samples.len() >= MIN_SAMPLES
            && (s.threshold.is_none() || s.since_recompute >= RECOMPUTE_EVERY)
        {
            let mut v: Vec<Duration> = s.samples.iter().copied().collect();
            v.sort_unstable();
            let i = ((v.len() as f64 * PERCENTILE).ceil() as usize).clamp(1, v.len()) - 1;
            s.threshold = Some(v[i].max(MIN_DELAY));
            s.since_recompute = 0;
        }
    }

    /// How long to wait before hedging; `None` until enough samples were seen.
    pub(crate) fn threshold(&self) -> Option<Duration> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .threshold
    }
}

/// One hedge is allowed per this many requests (5%), beyond [`HEDGE_BURST`].
pub(crate) const REQUESTS_PER_HEDGE: u64 = 20;
/// Hedges allowed before any request has earned one.
pub(crate) const HEDGE_BURST: u64 = 1;

/// Caps hedges at one per [`REQUESTS_PER_HEDGE`] first attempts (plus [`HEDGE_BURST`]), so a
/// lagging threshold cannot turn hedging into a second copy of the load.
#[derive(Debug, Default)]
pub(crate) struct HedgeBudget {
    requests: AtomicU64,
    hedges: AtomicU64,
}

impl HedgeBudget {
    /// Counts one request that could be hedged (each attempt's first GET, not the hedges).
    pub(crate) fn note_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one hedge from the budget; `false` when it is spent.
    pub(crate) fn try_spend(&self) -> bool {
        let allowed = self.requests.load(Ordering::Relaxed) / REQUESTS_PER_HEDGE + HEDGE_BURST;
        self.hedges
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                (h < allowed).then_some(h + 1)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_one_hedge_per_twenty_requests() {
        let b = HedgeBudget::default();
        assert!(b.try_spend(), "the burst");
        assert!(!b.try_spend());
        let mut spent = 1;
        for request in 1..=1000u64 {
            b.note_request();
            while b.try_spend() {
                spent += 1;
            }
            assert_eq!(
                spent,
                request / REQUESTS_PER_HEDGE + HEDGE_BURST,
                "after {request}"
            );
        }
        assert_eq!(spent, 51);
    }

    #[test]
    fn threshold_is_a_high_percentile_after_enough_samples() {
        let t = LatencyTracker::default();
        for i in 0..MIN_SAMPLES - 1 {
            t.record(Duration::from_millis(10 + i as u64));
        }
        assert_eq!(t.threshold(), None);
        for _ in 0..200 {
            for ms in 1..=100 {
                t.record(Duration::from_millis(ms));
            }
        }
        let th = t.threshold().unwrap();
        assert!(
            th >= Duration::from_millis(90) && th <= Duration::from_millis(100),
            "{th:?}"
        );
        for _ in 0..WINDOW + RECOMPUTE_EVERY {
            t.record(Duration::from_micros(50));
        }
        assert_eq!(t.threshold(), Some(MIN_DELAY));
    }
}
