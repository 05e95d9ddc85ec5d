//! Eight loader processes sharing one cache directory, reading the same epoch at once through
//! an S3 server with latency: with room for everything, each shard is downloaded exactly once
//! node-wide; with a limit that forces eviction, every process still delivers exactly the
//! epoch with correct contents (each worker checks every sample: no half-written file is ever
//! read), and nobody deadlocks (every process must finish within the time limit).

use std::time::Duration;

use shardstream_loader::Loader;
use shardstream_tests::fault::FaultSpec;
use shardstream_tests::reliability::{contention, deliver, synth_config, S3Dataset, Worker};

#[test]
fn eight_processes_share_one_cache_dir() {
    let dir = tempfile::tempdir().unwrap();
    let ds = S3Dataset::create(dir.path(), synth_config("tar", 480, 48)).unwrap();
    let proxy = ds
        .proxy(FaultSpec {
            latency: Duration::from_millis(5),
            ..FaultSpec::none()
        })
        .unwrap();
    let mut loader = Loader::new(ds.config(ds.server.storage_options(), 12)).unwrap();
    let baseline = deliver(&mut loader, &ds.synth, Duration::ZERO).ids;
    let total: u64 = ds.manifest.sizes().iter().sum();
    let shards = ds.manifest.len() as u64;

    let mut worker = Worker::for_dataset(
        std::path::Path::new(env!("CARGO_BIN_EXE_loader-worker")),
        &ds,
        proxy.storage_options(),
        12,
    );
    worker.prefetch_bytes = 64 << 10;
    worker.io_concurrency = 2;

    // Room for everything: one download per shard across all eight processes.
    worker.cache_dir = Some(dir.path().join("cache-roomy"));
    worker.cache_limit = Some(total * 2);
    let r = contention(&worker, 8, &baseline, Duration::from_secs(120)).unwrap();
    eprintln!("roomy: {}", serde_json::to_string(&r).unwrap());
    assert_eq!(r.perfect, 8, "{r:?}");
    assert_eq!(r.misses, shards, "each shard downloaded once: {r:?}");
    assert!(r.hits >= 7 * shards, "{r:?}");
    assert_eq!(r.evictions, 0);

    // A limit that forces eviction.
    worker.cache_dir = Some(dir.path().join("cache-tight"));
    worker.cache_limit = Some(total * 6 / 10);
    let r = contention(&worker, 8, &baseline, Duration::from_secs(120)).unwrap();
    eprintln!("tight: {}", serde_json::to_string(&r).unwrap());
    assert_eq!(r.perfect, 8, "{r:?}");
    assert!(r.evictions > 0, "{r:?}");
    assert_eq!(r.corrupt_refetched, 0, "{r:?}");
}
