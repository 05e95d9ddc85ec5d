//! The loader's real object_store client against a misbehaving S3 server: each fault of
//! `shardstream_tests::fault` (latency, heavy tails, 503 SlowDown at 5% and 30%, resets
//! mid-body, bodies cut short under a full Content-Length, stalls that never end) injected by a
//! proxy in front of s3s-fs with a fixed seed. Every run must deliver exactly the samples of a
//! fault-free run, in the same order and with the right contents; data really gone or changed
//! must be an error naming the shard. Nothing may hang: every test has a time limit.

use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use shard_index::synth::SynthConfig;
use shardstream_loader::{Error, Loader, LoaderConfig};
use shardstream_tests::fault::{FaultSpec, FaultStats, Pareto};
use shardstream_tests::reliability::{deliver, synth_config, Delivery, S3Dataset, Tally};

/// Runs `f` on a thread and fails the test if it takes longer than `limit` (a hang).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hung for more than {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the test thread panicked"),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    ds: S3Dataset,
    /// The fault-free delivery order.
    baseline: Vec<u64>,
}

/// One tar and one Parquet dataset shared by the tests that do not change them.
fn fixture(kind: &'static str) -> &'static Fixture {
    static TAR: OnceLock<Fixture> = OnceLock::new();
    static PARQUET: OnceLock<Fixture> = OnceLock::new();
    let cell = if kind == "tar" { &TAR } else { &PARQUET };
    cell.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ds = S3Dataset::create(dir.path(), synth_config(kind, 960, 48)).unwrap();
        let mut loader = Loader::new(ds.config(ds.server.storage_options(), 16)).unwrap();
        let d = deliver(&mut loader, &ds.synth, Duration::ZERO);
        assert!(d.error.is_none() && d.corrupt.is_empty(), "{:?}", d.error);
        assert_eq!(d.ids.len(), 960);
        Fixture {
            _dir: dir,
            ds,
            baseline: d.ids,
        }
    })
}

/// Reads the fixture's epoch through a proxy injecting `spec`.
fn through(
    fx: &'static Fixture,
    spec: FaultSpec,
    tweak: impl FnOnce(LoaderConfig) -> LoaderConfig + Send + 'static,
) -> (Delivery, FaultStats, Tally) {
    within(Duration::from_secs(60), move || {
        let proxy = fx.ds.proxy(spec).unwrap();
        let config = tweak(fx.ds.config(proxy.storage_options(), 16));
        let mut loader = Loader::new(config).unwrap();
        let d = deliver(&mut loader, &fx.ds.synth, Duration::ZERO);
        let stats = proxy.stats();
        let tally = Tally::of(&fx.baseline, &d.ids);
        (d, stats, tally)
    })
}

fn assert_perfect(d: &Delivery, faults: &FaultStats, tally: &Tally) {
    assert!(
        d.error.is_none(),
        "error: {:?} (faults {faults:?})",
        d.error
    );
    assert!(d.corrupt.is_empty(), "corrupt samples: {:?}", d.corrupt);
    assert!(tally.perfect(), "{tally:?} (faults {faults:?})");
}

fn spec(seed: u64) -> FaultSpec {
    FaultSpec::none().with_seed(seed)
}

#[test]
fn fixed_and_heavy_tailed_latency() {
    let s = FaultSpec {
        latency: Duration::from_millis(3),
        tail: Some(Pareto {
            scale: Duration::from_millis(1),
            alpha: 1.2,
            cap: Duration::from_millis(400),
        }),
        ..spec(1)
    };
    let (d, f, t) = through(fixture("tar"), s, |c| c);
    assert_perfect(&d, &f, &t);
    assert!(f.long_delays > 0, "{f:?}");
}

#[test]
fn slowdown_5_percent_is_retried_and_cuts_concurrency() {
    let s = FaultSpec {
        slowdown: 0.05,
        ..spec(2)
    };
    let (d, f, t) = through(fixture("tar"), s, |c| c);
    assert_perfect(&d, &f, &t);
    assert!(f.slowdowns > 0, "{f:?}");
    // Every 503 reaches the loader (a hedge dropped while its 503 was in flight may not).
    assert!(
        d.stats.throttled > 0 && d.stats.throttled <= f.slowdowns,
        "{:?}",
        d.stats
    );
    assert!(
        d.stats.retries + d.stats.hedges_fired >= f.slowdowns,
        "{:?}",
        d.stats
    );
    assert!(d.stats.concurrency_limit_min < 8, "{:?}", d.stats);
}

#[test]
fn slowdown_30_percent_on_parquet_ranges() {
    let s = FaultSpec {
        slowdown: 0.3,
        ..spec(3)
    };
    let (d, f, t) = through(fixture("parquet"), s, |c| c);
    assert_perfect(&d, &f, &t);
    assert!(f.slowdowns > 10, "{f:?}");
    assert_eq!(d.stats.concurrency_limit_min, 1, "{:?}", d.stats);
}

#[test]
fn resets_mid_body_are_retried() {
    let s = FaultSpec {
        reset: 0.15,
        ..spec(4)
    };
    let (d, f, t) = through(fixture("tar"), s, |c| c);
    assert_perfect(&d, &f, &t);
    assert!(
        f.resets > 0 && d.stats.retries + d.stats.hedges_fired >= f.resets,
        "{f:?} {:?}",
        d.stats
    );
}

#[test]
fn bodies_cut_short_are_retried() {
    let s = FaultSpec {
        truncate: 0.15,
        ..spec(5)
    };
    let (d, f, t) = through(fixture("parquet"), s, |c| c);
    assert_perfect(&d, &f, &t);
    assert!(
        // A failed hedge needs no retry when its twin answered.
        f.truncations > 0 && d.stats.retries + d.stats.hedges_fired >= f.truncations,
        "{f:?} {:?}",
        d.stats
    );
}

#[test]
fn stalled_connections_time_out_and_are_retried() {
    let s = FaultSpec {
        stall: 0.06,
        ..spec(6)
    };
    let (d, f, t) = through(fixture("tar"), s, |c| {
        c.with_request_timeout(Duration::from_millis(500))
            .with_hedge(false)
    });
    assert_perfect(&d, &f, &t);
    assert!(f.stalls > 0, "{f:?}");
    assert_eq!(d.stats.timeouts, f.stalls, "{:?}", d.stats);
}

#[test]
fn everything_at_once_through_the_disk_cache() {
    let cache = tempfile::tempdir().unwrap();
    let path = cache.path().to_path_buf();
    let s = FaultSpec {
        tail: Some(Pareto {
            scale: Duration::from_millis(1),
            alpha: 1.5,
            cap: Duration::from_millis(200),
        }),
        slowdown: 0.05,
        reset: 0.03,
        truncate: 0.03,
        stall: 0.02,
        ..spec(7)
    };
    let (d, f, t) = through(fixture("parquet"), s, move |c| {
        c.with_cache_dir(path)
            .with_cache_limit(1 << 20)
            .with_request_timeout(Duration::from_millis(500))
    });
    assert_perfect(&d, &f, &t);
    assert!(f.failures() > 3, "{f:?}");
    assert!(cache
        .path()
        .join("tmp")
        .read_dir()
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn concurrency_backs_off_in_a_storm_and_recovers() {
    let fx = fixture("parquet");
    let (min_in_storm, end) = within(Duration::from_secs(60), move || {
        let storm = FaultSpec {
            slowdown: 0.5,
            ..spec(8)
        };
        let proxy = fx.ds.proxy(storm).unwrap();
        let mut loader = Loader::new(fx.ds.config(proxy.storage_options(), 16)).unwrap();
        let mut ids = Vec::new();
        let mut min_in_storm = u64::MAX;
        let mut k = 0;
        while let Some(b) = loader.next_batch() {
            let b = b.unwrap();
            ids.extend(b.samples.iter().map(|s| s.global));
            k += 1;
            if k == 12 {
                min_in_storm = loader.stats().concurrency_limit;
                proxy.set_spec(spec(8));
            }
        }
        assert!(Tally::of(&fx.baseline, &ids).perfect());
        (min_in_storm, loader.stats())
    });
    assert!(
        min_in_storm < 8,
        "the limit dropped in the storm: {min_in_storm}"
    );
    assert!(
        end.concurrency_limit > end.concurrency_limit_min,
        "and grew again once the store recovered: {end:?}"
    );
}

#[test]
fn slow_requests_are_hedged() {
    let s = FaultSpec {
        tail: Some(Pareto {
            scale: Duration::from_millis(2),
            alpha: 1.1,
            cap: Duration::from_millis(800),
        }),
        ..spec(9)
    };
    let (d, f, t) = through(fixture("parquet"), s, |c| c.with_io_concurrency(2));
    assert_perfect(&d, &f, &t);
    assert!(d.stats.hedges_fired > 0, "{:?}", d.stats);
    assert!(d.stats.hedges_won <= d.stats.hedges_fired);
}

/// When every request slows down at once, the recent 95th percentile lags behind and every GET
/// looks like an outlier until it catches up; the hedge budget keeps that from becoming a
/// duplicate of each of them.
#[test]
fn a_store_slowing_down_as_a_whole_is_not_hedged_twice_over() {
    let fx = fixture("parquet");
    let stats = within(Duration::from_secs(60), move || {
        let proxy = fx.ds.proxy(spec(10)).unwrap();
        let config = fx
            .ds
            .config(proxy.storage_options(), 16)
            .with_io_concurrency(2);
        let mut loader = Loader::new(config).unwrap();
        let mut ids = Vec::new();
        let mut k = 0;
        while let Some(b) = loader.next_batch() {
            ids.extend(b.unwrap().samples.iter().map(|s| s.global));
            k += 1;
            if k == 4 {
                proxy.set_spec(FaultSpec {
                    latency: Duration::from_millis(40),
                    ..spec(10)
                });
            }
        }
        assert!(Tally::of(&fx.baseline, &ids).perfect());
        loader.stats()
    });
    // At most one hedge per 20 first attempts, plus one: `requests` counts hedges too.
    let first_attempts = stats.requests - stats.hedges_fired;
    assert!(
        stats.hedges_fired <= first_attempts / 20 + 1,
        "hedges over budget: {stats:?}"
    );
}

#[test]
fn a_store_that_never_answers_is_an_error_not_a_hang() {
    let s = FaultSpec {
        stall: 1.0,
        ..spec(10)
    };
    let (d, f, _) = through(fixture("tar"), s, |c| {
        c.with_request_timeout(Duration::from_millis(200))
            .with_fetch_attempts(3)
    });
    match d.error {
        Some(Error::Timeout { url, .. }) => assert!(url.starts_with("s3://data/ds/"), "{url}"),
        other => panic!("expected a timeout naming the shard, got {other:?} ({f:?})"),
    }
    assert!(d.ids.is_empty());
}

#[test]
fn a_store_that_always_throttles_is_an_error_naming_the_shard() {
    let s = FaultSpec {
        slowdown: 1.0,
        ..spec(11)
    };
    let (d, _, _) = through(fixture("tar"), s, |c| c.with_fetch_attempts(2));
    match d.error {
        Some(Error::Fetch { url, source }) => {
            assert!(url.starts_with("s3://data/ds/"), "{url}");
            assert!(source.to_string().contains("503"), "{source}");
        }
        other => panic!("expected a fetch error, got {other:?}"),
    }
}

/// Deletes or overwrites the last shard of an unshuffled epoch after its first batch.
fn changed_mid_epoch(overwrite: bool) {
    within(Duration::from_secs(60), move || {
        let dir = tempfile::tempdir().unwrap();
        let ds = S3Dataset::create(dir.path(), synth_config("tar", 400, 20)).unwrap();
        let config = |ds: &S3Dataset| {
            // The look-ahead holds only the next batch, so the last shard is read long after
            // it changed.
            ds.config(ds.server.storage_options(), 10)
                .with_shuffle(false)
                .with_prefetch_bytes(1)
                .with_batch_queue(1)
        };
        let baseline = {
            let mut l = Loader::new(config(&ds)).unwrap();
            deliver(&mut l, &ds.synth, Duration::ZERO).ids
        };
        let last = ds.manifest.len() - 1;
        let mut loader = Loader::new(config(&ds)).unwrap();
        let first = loader.next_batch().unwrap().unwrap();
        let mut ids: Vec<u64> = first.samples.iter().map(|s| s.global).collect();
        if overwrite {
            ds.overwrite_shard(last).unwrap();
        } else {
            ds.delete_shard(last).unwrap();
        }
        let rest = deliver(&mut loader, &ds.synth, Duration::ZERO);
        assert!(rest.corrupt.is_empty(), "{:?}", rest.corrupt);
        ids.extend(&rest.ids);
        // Everything before the error is the fault-free order; nothing of the shard is mixed in.
        assert_eq!(&baseline[..ids.len()], &ids[..]);
        match rest.error {
            Some(Error::ShardChanged { url, detail }) => {
                assert_eq!(url, ds.shard_url(last));
                let what = if overwrite {
                    "size is now"
                } else {
                    "no longer exists"
                };
                assert!(detail.contains(what), "{detail}");
            }
            other => panic!("expected ShardChanged naming the shard, got {other:?}"),
        }
    });
}

#[test]
fn a_shard_deleted_mid_epoch_is_an_error_naming_it() {
    changed_mid_epoch(false);
}

#[test]
fn a_shard_overwritten_mid_epoch_is_an_error_naming_it() {
    changed_mid_epoch(true);
}

/// Where each connection is slow (S3 gives one connection tens of MB/s however fast the link),
/// every body read at once adds throughput, so the adaptive transfer limit must grow from its
/// few bodies at once to one per unit in flight. Stuck at its start, it would leave most
/// answered bodies waiting while their connections idle. (A controller that never keeps a
/// doubling ends this test at 4.)
#[test]
fn bodies_read_at_once_grow_where_each_connection_is_slow() {
    let stats = within(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let synth = SynthConfig {
            tokens_min: 4096,
            tokens_max: 4096,
            ..synth_config("tar", 2048, 32)
        };
        let ds = S3Dataset::create(dir.path(), synth).unwrap();
        // 2 MB/s per body: each 1.1 MB shard takes over half a second.
        let slow = FaultSpec {
            body_rate: Some(2_000_000),
            ..spec(12)
        };
        let proxy = ds.proxy(slow).unwrap();
        let config = ds
            .config(proxy.storage_options(), 16)
            .with_io_concurrency(16)
            .with_prefetch_bytes(64 << 20)
            .with_hedge(false);
        let mut loader = Loader::new(config).unwrap();
        let d = deliver(&mut loader, &ds.synth, Duration::ZERO);
        assert!(d.error.is_none(), "{:?}", d.error);
        assert!(d.corrupt.is_empty(), "{:?}", d.corrupt);
        let mut ids = d.ids.clone();
        ids.sort_unstable();
        assert_eq!(ids, (0..2048).collect::<Vec<u64>>(), "every sample once");
        d.stats
    });
    assert!(
        stats.transfer_limit >= 16,
        "one body per unit in flight (16) should be read at once: {stats:?}"
    );
}
