//! [`Limiter`]: an AIMD (additive-increase, multiplicative-decrease) cap on concurrent GETs.
//!
//! Object stores answer overload with `503 SlowDown` (S3) or `429 Too Many Requests`. Retrying
//! at the same concurrency keeps the store overloaded, so every throttled answer halves the
//! limit — at most once per "round trip": a throttle reported by a request that started before
//! the last cut says nothing about the new limit, and is not cut for again (TCP's one-decrease-
//! per-window rule). Every successful request adds `1 / limit`, so the limit grows by about one
//! per window of successes and climbs back to its maximum once the store recovers.
//!
//! The limit never goes below 1 (one request always proceeds) and never above the maximum
//! (`2 × io_concurrency`: a projected Parquet row group issues a few coalesced range requests at
//! once, so the request cap must sit above the unit cap or it would slow the happy path).
//! Waiting is cancellation-safe: a dropped `acquire` leaves no trace, and a dropped [`Permit`]
//! returns its slot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// Shared AIMD limiter. See the module docs.
#[derive(Debug)]
pub(crate) struct Limiter {
    state: Mutex<State>,
    notify: Notify,
    max: f64,
    /// Gauges for stats: the current limit (floor) and the lowest it has been.
    pub(crate) current: AtomicU64,
    pub(crate) lowest: AtomicU64,
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    last_cut: Option<Instant>,
}

/// One request's slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = self.limiter.lock();
        s.in_flight -= 1;
        drop(s);
        self.limiter.notify.notify_waiters();
    }
}

impl Limiter {
    pub(crate) fn new(max: usize) -> Arc<Limiter> {
        let max = max.max(1);
        Arc::new(Limiter {
            state: Mutex::new(State {
                limit: max as f64,
                in_flight: 0,
                last_cut: None,
            }),
            notify: Notify::new(),
            max: max as f64,
            current: AtomicU64::new(max as u64),
            lowest: AtomicU64::new(max as u64),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a slot under the current limit.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a release between the check and the wait is seen.
            notified.as_mut().enable();
            if let Some(p) = self.try_acquire() {
                return p;
            }
            notified.await;
        }
    }

    /// A slot if one is free right now (hedges use this: never queue extra load).
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut s = self.lock();
        if (s.in_flight as f64) < s.limit.floor().max(1.0) {
            s.in_flight += 1;
            Some(Permit {
                limiter: self.clone(),
            })
        } else {
            None
        }
    }

    /// A request succeeded: grow by `1 / limit`.
    pub(crate) fn on_success(&self) {
        let mut s = self.lock();
        let before = s.limit.floor();
        s.limit = (s.limit + 1.0 / s.limit).min(self.max);
        let after = s.limit.floor();
        drop(s);
        if after > before {
            self.current.store(after as u64, Ordering::Relaxed);
            self.notify.notify_waiters();
        }
    }

    /// A request that started at `started` was throttled: halve, once per round trip.
    /// Returns whether the limit was cut.
    pub(crate) fn on_throttle(&self, started: Instant) -> bool {
        let mut s = self.lock();
        if s.last_cut.is_some_and(|cut| started < cut) {
            return false;
        }
        s.limit = (s.limit / 2.0).max(1.0);
        s.last_cut = Some(Instant::now());
        let now = s.limit.floor() as u64;
        drop(s);
        self.current.store(now, Ordering::Relaxed);
        self.lowest.fetch_min(now, Ordering::Relaxed);
        true
    }

    /// The current limit.
    pub(crate) fn limit(&self) -> f64 {
        self.lock().limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn halves_once_per_round_trip_and_recovers() {
        let l = Limiter::new(16);
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(l.on_throttle(Instant::now()));
        assert_eq!(l.limit(), 8.0);
        // A request that started before the cut does not cut again.
        assert!(!l.on_throttle(before));
        assert_eq!(l.limit(), 8.0);
        std::thread::sleep(Duration::from_millis(2));
        for _ in 0..4 {
            l.on_throttle(Instant::now());
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(l.limit(), 1.0, "never below one");
        assert_eq!(l.lowest.load(Ordering::Relaxed), 1);
        for _ in 0..1000 {
            l.on_success();
        }
        assert_eq!(l.limit(), 16.0, "back to the maximum");
        assert_eq!(l.current.load(Ordering::Relaxed), 16);
    }

    #[test]
    fn waiters_wake_when_slots_free_up() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = Limiter::new(2);
            let a = l.acquire().await;
            let _b = l.acquire().await;
            assert!(l.try_acquire().is_none());
            let l2 = l.clone();
            let waiter = tokio::spawn(async move {
                let _c = l2.acquire().await;
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(!waiter.is_finished());
            drop(a);
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("woken")
                .unwrap();
        });
    }
}
