//! kill -9 a loader process at random points — mid-download, mid cache write, mid-eviction —
//! and restart it from its last saved resume state, many times: the next start repairs the
//! cache (temp and lock files of the dead process) and the resumed runs together deliver
//! exactly the epoch, in order, with correct contents. The soak runs many more iterations.

use std::time::{Duration, Instant};

use shardstream_loader::Loader;
use shardstream_tests::fault::FaultSpec;
use shardstream_tests::reliability::{crash_loop, deliver, synth_config, S3Dataset, Worker};

#[test]
fn killed_workers_resume_with_exactly_the_remaining_samples() {
    let dir = tempfile::tempdir().unwrap();
    let ds = S3Dataset::create(dir.path(), synth_config("tar", 600, 40)).unwrap();
    // A little latency makes the epoch last long enough to be killed anywhere in it.
    let proxy = ds
        .proxy(FaultSpec {
            latency: Duration::from_millis(15),
            ..FaultSpec::none()
        })
        .unwrap();
    let mut loader = Loader::new(ds.config(ds.server.storage_options(), 12)).unwrap();
    let baseline = deliver(&mut loader, &ds.synth, Duration::ZERO).ids;
    assert_eq!(baseline.len(), 600);

    let total: u64 = ds.manifest.sizes().iter().sum();
    let cache = dir.path().join("cache");
    let mut worker = Worker::for_dataset(
        std::path::Path::new(env!("CARGO_BIN_EXE_loader-worker")),
        &ds,
        proxy.storage_options(),
        12,
    );
    worker.prefetch_bytes = 64 << 10;
    worker.io_concurrency = 2;
    worker.slow_ms = 3;
    worker.cache_dir = Some(cache.clone());
    // Smaller than the dataset: inserts evict, so kills also land in evictions.
    worker.cache_limit = Some((total / 2).max(160 << 10));
    worker.state_file = Some(dir.path().join("state.json"));

    // How long one uninterrupted run takes, to spread the kills over it.
    let t = Instant::now();
    let mut probe = worker.clone();
    probe.state_file = Some(dir.path().join("probe-state.json"));
    probe.cache_dir = Some(dir.path().join("probe-cache"));
    let (st, _, err) = shardstream_tests::reliability::wait_output(
        probe.spawn().unwrap(),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(st.success(), "{err}");
    let span = t.elapsed();

    let report = crash_loop(&worker, &baseline, 6, span, 42).unwrap();
    eprintln!("span {span:?}: {}", serde_json::to_string(&report).unwrap());
    assert!(report.kills >= 3, "{report:?}");
    assert!(report.tally.perfect(), "{report:?}");
    // The last run repaired what the kills left, and left nothing behind itself.
    assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(cache.join("locks")).unwrap().count(), 0);
}
