//! Counters: always on, a relaxed atomic add per event, read as a [`LoaderStats`] snapshot.
//!
//! Busy times are summed over all threads of a stage (two decode threads busy for a second
//! each report two seconds), so comparing a stage's busy time with wall-clock time shows how
//! many threads it keeps busy. `consumer_stall_s` is wall time the consumer spent inside
//! `next()` waiting for a batch: zero means the loader keeps up.
//!
//! A [`StatsHandle`] reads them without the loader itself, so a monitoring thread is never
//! held up by a consumer waiting in `next()` (which borrows the loader for as long as the
//! store takes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cache::{CacheStats, DiskCache};
use crate::pinned::MemoryKind;
use crate::pool::{BufferPool, PoolStats};

/// Live counters shared by the pipeline's threads and tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub batches: AtomicU64,
    pub samples: AtomicU64,
    pub padded_samples: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub bytes_from_cache: AtomicU64,
    pub bytes_needed: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub timeouts: AtomicU64,
    pub throttled: AtomicU64,
    pub hedges_fired: AtomicU64,
    pub hedges_won: AtomicU64,
    /// Gauges: the AIMD request limit now, and the lowest it has been.
    pub concurrency_limit: AtomicU64,
    pub concurrency_limit_min: AtomicU64,
    /// Gauge: response bodies read at once now (0: no limit).
    pub transfer_limit: AtomicU64,
    /// Gauge: the most units fetching at once so far.
    pub units_fetching_peak: AtomicU64,
    pub units_loaded: AtomicU64,
    pub units_reread: AtomicU64,
    pub bytes_decoded: AtomicU64,
    pub fetch_ns: AtomicU64,
    pub decode_ns: AtomicU64,
    pub collate_ns: AtomicU64,
    pub stall_ns: AtomicU64,
    pub lookahead_bytes: AtomicU64,
    pub lookahead_peak_bytes: AtomicU64,
    pub first_batch_ns: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_time(counter: &AtomicU64, since: Instant) {
        Self::add_duration(counter, since.elapsed());
    }

    pub fn add_duration(counter: &AtomicU64, d: Duration) {
        counter.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn set_lookahead(&self, bytes: u64) {
        self.lookahead_bytes.store(bytes, Ordering::Relaxed);
        self.lookahead_peak_bytes
            .fetch_max(bytes, Ordering::Relaxed);
    }
}

/// Reads a loader's counters from any thread, independently of the loader (see
/// [`crate::Loader::stats_handle`]). Cheap to clone. It keeps the counters, the cache handle and
/// the buffer pool alive (with the free buffers the pool retains), not the pipeline: drop it
/// with the loader when that memory should go too.
#[derive(Clone, Debug)]
pub struct StatsHandle {
    counters: Arc<Counters>,
    pool: BufferPool,
    cache: Option<DiskCache>,
}

impl StatsHandle {
    pub(crate) fn new(counters: Arc<Counters>, pool: BufferPool, cache: Option<DiskCache>) -> Self {
        StatsHandle {
            counters,
            pool,
            cache,
        }
    }

    /// The counters now.
    pub fn read(&self) -> LoaderStats {
        let alloc = self.pool.allocator();
        LoaderStats::from_counters(
            &self.counters,
            alloc.kind(),
            alloc.reason().to_string(),
            self.pool.stats(),
            self.cache.as_ref().map(|c| c.stats()),
        )
    }
}

/// A snapshot of the loader's counters since it was created (all epochs).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoaderStats {
    /// Batches handed to the consumer.
    pub batches: u64,
    /// Samples in those batches, padded repeats included.
    pub samples: u64,
    /// Padded repeats among them.
    pub padded_samples: u64,
    /// Bytes read from the object store (local files included).
    pub bytes_fetched: u64,
    /// Bytes served by the disk cache instead of the store.
    pub bytes_from_cache: u64,
    /// Bytes of every distinct unit (row group or whole shard) the epoch's batches use, counted
    /// once each: the minimum any loader following this plan must read.
    pub bytes_needed: u64,
    /// `(bytes_fetched + bytes_from_cache) / bytes_needed`: 1.0 is ideal; footers, units
    /// re-read after leaving the look-ahead and whole-shard reads of partly used shards add to it.
    pub read_amplification: f64,
    /// GET requests made to the store.
    pub requests: u64,
    /// Reads retried after a short body, a throttled answer, a stall or a transient error.
    pub retries: u64,
    /// Requests that made no progress within `request_timeout` (headers or next body chunk).
    pub timeouts: u64,
    /// Answers saying the store is overloaded (503 SlowDown, 429).
    pub throttled: u64,
    /// Duplicate requests sent for requests slower than the recent 95th percentile, and how
    /// many of them answered first.
    pub hedges_fired: u64,
    pub hedges_won: u64,
    /// The adaptive (AIMD) cap on GETs in flight now, and the lowest it has been.
    pub concurrency_limit: u64,
    pub concurrency_limit_min: u64,
    /// Answered bodies read at once now, as the adaptive transfer limit chose it (0 when
    /// `adaptive_transfers` is off; see `fetch::transfers`).
    pub transfer_limit: u64,
    /// The most units that were fetching at once: up to `io_concurrency`, or
    /// [`crate::config::LOCAL_IO_CONCURRENCY`] when every shard is a local file read in place.
    pub units_fetching_peak: u64,
    /// Units fetched and decoded.
    pub units_loaded: u64,
    /// Units loaded again because a later batch needed them after they left the look-ahead.
    pub units_reread: u64,
    /// Arrow bytes produced by the decoders.
    pub bytes_decoded: u64,
    /// Busy time of fetching (summed over concurrent requests), decoding and collating.
    pub fetch_busy_s: f64,
    pub decode_busy_s: f64,
    pub collate_busy_s: f64,
    /// Time the consumer waited inside `next()`.
    pub consumer_stall_s: f64,
    /// Seconds from the first `next()` of the first epoch to its batch.
    pub time_to_first_batch_s: f64,
    /// Estimated bytes the look-ahead holds now, and its peak.
    pub lookahead_bytes: u64,
    pub lookahead_peak_bytes: u64,
    /// `"pinned"` or `"pageable"`.
    pub memory: MemoryKind,
    /// Why the memory is of that kind.
    pub memory_reason: String,
    pub pool: PoolStats,
    /// Disk-cache counters (`None` without a cache).
    pub cache: Option<CacheStats>,
}

impl LoaderStats {
    pub(crate) fn from_counters(
        c: &Counters,
        memory: MemoryKind,
        memory_reason: String,
        pool: PoolStats,
        cache: Option<CacheStats>,
    ) -> LoaderStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let secs = |a: &AtomicU64| load(a) as f64 * 1e-9;
        let fetched = load(&c.bytes_fetched);
        let cached = load(&c.bytes_from_cache);
        let needed = load(&c.bytes_needed);
        LoaderStats {
            batches: load(&c.batches),
            samples: load(&c.samples),
            padded_samples: load(&c.padded_samples),
            bytes_fetched: fetched,
            bytes_from_cache: cached,
            bytes_needed: needed,
            read_amplification: if needed == 0 {
                0.0
            } else {
                (fetched + cached) as f64 / needed as f64
            },
            requests: load(&c.requests),
            retries: load(&c.retries),
            timeouts: load(&c.timeouts),
            throttled: load(&c.throttled),
            hedges_fired: load(&c.hedges_fired),
            hedges_won: load(&c.hedges_won),
            concurrency_limit: load(&c.concurrency_limit),
            concurrency_limit_min: load(&c.concurrency_limit_min),
            transfer_limit: load(&c.transfer_limit),
            units_fetching_peak: load(&c.units_fetching_peak),
            units_loaded: load(&c.units_loaded),
            units_reread: load(&c.units_reread),
            bytes_decoded: load(&c.bytes_decoded),
            fetch_busy_s: secs(&c.fetch_ns),
            decode_busy_s: secs(&c.decode_ns),
            collate_busy_s: secs(&c.collate_ns),
            consumer_stall_s: secs(&c.stall_ns),
            time_to_first_batch_s: secs(&c.first_batch_ns),
            lookahead_bytes: load(&c.lookahead_bytes),
            lookahead_peak_bytes: load(&c.lookahead_peak_bytes),
            memory,
            memory_reason,
            pool,
            cache,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_computes_ratios_and_serialises() {
        let c = Counters::default();
        Counters::add(&c.bytes_fetched, 300);
        Counters::add(&c.bytes_from_cache, 100);
        Counters::add(&c.bytes_needed, 200);
        Counters::add_duration(&c.decode_ns, Duration::from_millis(1500));
        c.set_lookahead(10);
        c.set_lookahead(5);
        let s = LoaderStats::from_counters(
            &c,
            MemoryKind::Pageable,
            "test".into(),
            PoolStats::default(),
            None,
        );
        assert_eq!(s.read_amplification, 2.0);
        assert!((s.decode_busy_s - 1.5).abs() < 1e-9);
        assert_eq!((s.lookahead_bytes, s.lookahead_peak_bytes), (5, 10));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["memory"], "pageable");
        assert_eq!(json["bytes_fetched"], 300);
    }
}
