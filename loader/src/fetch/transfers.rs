//! [`TransferGate`]: how many response bodies are read at once, adapted to what the link gives.
//!
//! GETs go out early, so that their latency is paid side by side. But when every answered GET
//! then reads its body at once, the bodies share the link evenly and all finish together: the
//! unit needed first arrives no sooner than the last of its burst, and decoding waits for the
//! whole burst while the link idles through the next burst's request latency. Reading a few
//! bodies at a time, in the order their headers arrived (the order the plan needs them), hands
//! units over one after another as fast as the link carries them. The other answered bodies wait
//! in their sockets (TCP flow control holds their senders back), their latency already paid.
//!
//! How many at once depends on where the bottleneck is. Where one connection can fill the link
//! (loopback, a saturated NIC) a few bodies carry everything; from S3, where one connection
//! carries tens of MB/s, every further body read at once adds to the total. So the limit is found
//! by probing, a hill climb on measured throughput ([`Controller`]):
//! - Throughput is measured only while bodies queue at the gate, as the bytes read in that time
//!   over that time. Only then does the limit bind, and say anything about the link.
//! - A window ends after at least [`MIN_WINDOW`] of such time and `limit` bodies finished.
//! - It starts at [`START`] bodies and doubles the limit, keeping each doubling that brings at
//!   least [`GROW`] more throughput. A per-connection-bound store is at the maximum within a few
//!   windows; a shared bottleneck stays near the start.
//! - Settled, it probes every [`PROBE_EVERY`] windows, alternately up (doubling, kept on
//!   [`GROW`] more) and down (halving, kept unless throughput falls below [`KEEP_DOWN`] of what
//!   it was), to follow a link that changes and to undo a doubling that noise let through.
//!
//! The maximum is the cap on GETs in flight, where the gate never binds. The gate is FIFO
//! (tokio's semaphore is fair), and waiting for it is cancellation-safe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bodies read at once before anything is measured.
pub(crate) const START: usize = 4;
/// The fewest bodies read at once.
pub(crate) const MIN: usize = 2;
/// Least queued time in a measurement window.
pub(crate) const MIN_WINDOW: Duration = Duration::from_millis(20);
/// A doubling is kept when throughput grows by at least this factor.
pub(crate) const GROW: f64 = 1.15;
/// A halving is kept when throughput stays at least this fraction of what it was.
pub(crate) const KEEP_DOWN: f64 = 0.92;
/// Settled windows between probes.
pub(crate) const PROBE_EVERY: u32 = 8;

/// The hill climb on the limit, apart from the gate's mechanics (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Controller {
    limit: usize,
    max: usize,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Measuring the starting limit: nothing to compare with yet.
    Start,
    /// Measuring `limit`, a probe from `from`, which gave `rate`.
    Probe { from: usize, rate: f64 },
    /// At `limit`, which gives about `rate`; `windows` since the last probe, and which way the
    /// next one goes.
    Settled {
        rate: f64,
        windows: u32,
        up_next: bool,
    },
}

impl Controller {
    /// Limits of at most `max` bodies at once (at least one).
    pub(crate) fn new(max: usize) -> Controller {
        let max = max.max(1);
        Controller {
            limit: START.min(max),
            max,
            phase: Phase::Start,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the limit can never bind (the gate is as wide as the requests in flight).
    pub(crate) fn open(&self) -> bool {
        self.limit >= self.max
    }

    /// A window at the current limit measured `rate` (bytes per second): the limit to use next.
    /// At the maximum nothing queues, so nothing is measured: the limit stays (as the gate
    /// does, which never calls this then).
    pub(crate) fn on_window(&mut self, rate: f64) -> usize {
        if self.open() {
            return self.limit;
        }
        let (limit, phase) = match self.phase {
            Phase::Start => self.probe(true, rate),
            Phase::Probe { from, rate: was } => {
                let went_up = self.limit > from;
                let keep = if went_up {
                    rate >= was * GROW
                } else {
                    rate >= was * KEEP_DOWN
                };
                if keep {
                    // Keep going the same way while it pays (or costs nothing, going down).
                    self.probe(went_up, rate)
                } else {
                    (from, settled(was, !went_up))
                }
            }
            Phase::Settled {
                rate: was,
                windows,
                up_next,
            } => {
                // Smoothed: one window is a few dozen bodies on a shared, noisy machine.
                let rate = 0.5 * was + 0.5 * rate;
                if windows + 1 < PROBE_EVERY {
                    let phase = Phase::Settled {
                        rate,
                        windows: windows + 1,
                        up_next,
                    };
                    (self.limit, phase)
                } else {
                    self.probe(up_next, rate)
                }
            }
        };
        self.limit = limit;
        self.phase = phase;
        limit
    }

    /// The next limit and phase for a probe `up` (doubling) or down (halving) from the current
    /// limit, which gave `rate`; settled where there is no room that way.
    fn probe(&self, up: bool, rate: f64) -> (usize, Phase) {
        let to = if up {
            (self.limit * 2).min(self.max)
        } else {
            (self.limit / 2).max(MIN.min(self.max))
        };
        if to == self.limit {
            return (self.limit, settled(rate, !up));
        }
        let phase = Phase::Probe {
            from: self.limit,
            rate,
        };
        (to, phase)
    }
}

fn settled(rate: f64, up_next: bool) -> Phase {
    Phase::Settled {
        rate,
        windows: 0,
        up_next,
    }
}

/// The gate bodies pass to be read. See the module docs.
#[derive(Debug)]
pub(crate) struct TransferGate {
    slots: Arc<Semaphore>,
    state: Mutex<State>,
    /// The limit now, for stats.
    limit: AtomicU64,
}

#[derive(Debug)]
struct State {
    ctl: Controller,
    /// Slots to take out of circulation as they come back (after the limit fell below the
    /// bodies being read).
    debt: usize,
    /// Bodies waiting for a slot, and since when some have been.
    waiting: usize,
    queued_since: Option<Instant>,
    window: Window,
}

/// What was measured at the current limit while bodies queued.
#[derive(Debug, Default)]
struct Window {
    queued: Duration,
    bytes: u64,
    finished: usize,
}

/// One body's slot at the gate; dropping it (the body read, or abandoned) frees the slot.
#[derive(Debug)]
pub(crate) struct Transfer {
    gate: Arc<TransferGate>,
    slot: Option<OwnedSemaphorePermit>,
}

impl Transfer {
    /// `n` more bytes of this body arrived.
    pub(crate) fn carried(&self, n: usize) {
        self.gate.carried(n);
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.gate.finished(slot);
        }
    }
}

/// Counts a body as waiting until it has its slot or is abandoned.
struct Waiting<'a>(&'a TransferGate);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.set_waiting(false);
    }
}

impl TransferGate {
    /// A gate for at most `max` bodies at once (the cap on GETs in flight).
    pub(crate) fn new(max: usize) -> Arc<TransferGate> {
        let ctl = Controller::new(max);
        let limit = ctl.limit();
        Arc::new(TransferGate {
            slots: Arc::new(Semaphore::new(limit)),
            state: Mutex::new(State {
                ctl,
                debt: 0,
                waiting: 0,
                queued_since: None,
                window: Window::default(),
            }),
            limit: AtomicU64::new(limit as u64),
        })
    }

    /// Bodies read at once now.
    pub(crate) fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (first come, first served) for a slot to read a body in.
    pub(crate) async fn enter(self: &Arc<Self>) -> Transfer {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return self.transfer(slot);
        }
        self.set_waiting(true);
        let waiting = Waiting(self);
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the gate's semaphore is never closed");
        drop(waiting);
        self.transfer(slot)
    }

    fn transfer(self: &Arc<Self>, slot: OwnedSemaphorePermit) -> Transfer {
        Transfer {
            gate: self.clone(),
            slot: Some(slot),
        }
    }

    fn set_waiting(&self, arrived: bool) {
        let mut s = self.lock();
        if arrived {
            s.waiting += 1;
            if s.waiting == 1 {
                s.queued_since = Some(Instant::now());
            }
        } else {
            s.waiting -= 1;
            if s.waiting == 0 {
                if let Some(since) = s.queued_since.take() {
                    s.window.queued += since.elapsed();
                }
            }
        }
    }

    fn carried(&self, n: usize) {
        let mut s = self.lock();
        if s.waiting > 0 {
            s.window.bytes += n as u64;
        }
    }

    /// A body is done with its slot: counts it, ends the window when it is long enough, and
    /// returns the slot (or retires it, if the limit fell).
    fn finished(&self, slot: OwnedSemaphorePermit) {
        let mut s = self.lock();
        if s.waiting > 0 {
            s.window.finished += 1;
        }
        let now = Instant::now();
        let queued = s.window.queued + s.queued_since.map_or(Duration::ZERO, |t| now - t);
        if !s.ctl.open() && s.window.finished >= s.ctl.limit() && queued >= MIN_WINDOW {
            let rate = s.window.bytes as f64 / queued.as_secs_f64();
            let before = s.ctl.limit();
            let after = s.ctl.on_window(rate);
            s.window = Window::default();
            if s.queued_since.is_some() {
                s.queued_since = Some(now);
            }
            self.resize(&mut s, before, after);
        }
        if s.debt > 0 {
            s.debt -= 1;
            slot.forget();
        } else {
            drop(s);
            drop(slot);
        }
    }

    fn resize(&self, s: &mut State, before: usize, after: usize) {
        self.limit.store(after as u64, Ordering::Relaxed);
        if after > before {
            let more = after - before;
            let cancelled = more.min(s.debt);
            s.debt -= cancelled;
            self.slots.add_permits(more - cancelled);
        } else {
            // Free slots go at once; slots in use as their bodies finish.
            let mut fewer = before - after;
            while fewer > 0 {
                match self.slots.try_acquire() {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
                fewer -= 1;
            }
            s.debt += fewer;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::tests::rt;

    /// Runs the controller against a link model for `windows` windows; the limits it chose.
    fn climb(max: usize, windows: usize, link: impl Fn(usize, usize) -> f64) -> Vec<usize> {
        let mut c = Controller::new(max);
        (0..windows)
            .map(|i| {
                let rate = link(c.limit(), i);
                c.on_window(rate)
            })
            .collect()
    }

    /// Deterministic noise in [1 - amp, 1 + amp].
    fn noise(i: usize, amp: f64) -> f64 {
        let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 29;
        1.0 + amp * (2.0 * ((x >> 11) as f64 / (1u64 << 53) as f64) - 1.0)
    }

    #[test]
    fn per_connection_bound_links_climb_to_the_maximum_and_stay() {
        // 50 MB/s per body, as from S3: every body read at once adds to the total.
        let limits = climb(64, 200, |n, i| n as f64 * 50e6 * noise(i, 0.1));
        assert_eq!(limits[4], 64, "{limits:?}");
        assert!(limits[4..].iter().all(|&n| n == 64), "{limits:?}");
    }

    #[test]
    fn a_shared_bottleneck_keeps_few_bodies_at_once_despite_noise() {
        // 1.4 GB/s however many bodies share it, give or take 10% per window.
        let limits = climb(64, 2000, |_, i| 1.4e9 * noise(i, 0.1));
        let wide = limits.iter().filter(|&&n| n > 8).count();
        assert!(wide < limits.len() / 20, "{wide} wide windows");
        assert!(limits.iter().all(|&n| n >= MIN));
    }

    #[test]
    fn a_link_both_per_connection_and_shared_bound_settles_where_the_link_fills() {
        // 50 MB/s per body, 600 MB/s in all: 12 bodies fill it. Settled at 16, probing 8 and
        // 32 now and then.
        let limits = climb(64, 400, |n, _| (n as f64 * 50e6).min(600e6));
        let settled = &limits[10..];
        assert!(
            settled.iter().all(|&n| (8..=32).contains(&n)),
            "{settled:?}"
        );
        let at_16 = settled.iter().filter(|&&n| n == 16).count();
        assert!(at_16 > settled.len() * 3 / 4, "{settled:?}");
    }

    #[test]
    fn follows_a_link_that_changes() {
        // Shared at 1 GB/s; then 20 MB/s per body up to 320 MB/s (16 bodies); then 4 bodies
        // fill it.
        let limits = climb(64, 600, |n, i| match i {
            0..100 => 1e9,
            100..300 => (n as f64 * 20e6).min(320e6),
            _ => (n as f64 * 20e6).min(80e6),
        });
        assert!(limits[..100].iter().all(|&n| n <= 8), "{limits:?}");
        let mid = &limits[200..300];
        assert!(mid.iter().filter(|&&n| n == 16).count() > 75, "{mid:?}");
        let end = &limits[400..];
        assert!(end.iter().filter(|&&n| n == 4).count() > 150, "{end:?}");
    }

    #[test]
    fn a_gate_as_wide_as_the_requests_never_changes() {
        let mut c = Controller::new(3);
        assert_eq!(c.limit(), 3);
        assert!(c.open());
        assert_eq!(c.on_window(1.0), 3);
    }

    /// A new gate, and transfers holding all of its slots.
    async fn full_gate() -> (Arc<TransferGate>, Vec<Transfer>) {
        let gate = TransferGate::new(64);
        let held = futures::future::join_all((0..START).map(|_| gate.enter())).await;
        (gate, held)
    }

    #[test]
    fn bodies_enter_in_arrival_order_at_most_limit_at_once() {
        rt().block_on(async {
            let (gate, held) = full_gate().await;
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut waiters = Vec::new();
            for i in 0..6 {
                let (gate, order) = (gate.clone(), order.clone());
                waiters.push(tokio::spawn(async move {
                    let t = gate.enter().await;
                    order.lock().unwrap().push(i);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    drop(t);
                }));
                // Each waiter queues before the next is spawned.
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(order.lock().unwrap().is_empty(), "the gate is full");
            assert_eq!(gate.lock().waiting, 6);
            drop(held);
            for w in waiters {
                w.await.unwrap();
            }
            assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
            assert_eq!(gate.lock().waiting, 0);
        });
    }

    #[test]
    fn abandoned_waits_leave_no_trace_and_shrinking_retires_slots_as_they_return() {
        rt().block_on(async {
            let (gate, held) = full_gate().await;
            let wait = tokio::time::timeout(Duration::from_millis(5), gate.enter()).await;
            assert!(wait.is_err());
            assert_eq!(gate.lock().waiting, 0);
            assert!(gate.lock().queued_since.is_none());

            // Halve while every slot is in use: two slots retire as bodies finish.
            {
                let mut s = gate.lock();
                gate.resize(&mut s, START, START / 2);
                assert_eq!(s.debt, START / 2);
            }
            drop(held);
            assert_eq!(gate.slots.available_permits(), START / 2);
            assert_eq!(gate.lock().debt, 0);
            assert_eq!(gate.limit(), (START / 2) as u64);
            // Growing again first cancels debt, then adds slots.
            {
                let mut s = gate.lock();
                s.debt = 1;
                gate.resize(&mut s, START / 2, START);
                assert_eq!(s.debt, 0);
            }
            assert_eq!(gate.slots.available_permits(), START / 2 + 1);
        });
    }
}
