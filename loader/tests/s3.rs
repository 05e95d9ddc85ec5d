//! The loader against a real S3 server on loopback (s3s-fs): ranged, etag-pinned reads through
//! object_store's S3 client, with and without the disk cache.

mod common;

use common::{assert_exactly_once, check_batch, index, synth};
use shard_index::synth::generate;
use shard_index::Location;
use shardstream_loader::config::LoaderConfig;
use shardstream_loader::engine::Loader;
use shardstream_loader::Error;
use shardstream_tests::s3::{upload_dir, S3Server};

#[test]
fn loads_parquet_and_tar_from_s3() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(&dir.path().join("s3")).unwrap();
    server.create_bucket("bucket").unwrap();
    let opts = server.storage_options();
    for (kind, prefix) in [("parquet", "pq"), ("tar.zst", "wds")] {
        let cfg = synth(kind, 600, 4, 50);
        let local = dir.path().join(prefix);
        generate(&local, &cfg).unwrap();
        let url = format!("s3://bucket/{prefix}");
        let loc = Location::open(&url, &opts).unwrap();
        shard_index::runtime::block_on(upload_dir(loc.store.as_ref(), &local, prefix))
            .unwrap()
            .unwrap();
        let manifest = index(&url, &opts);
        let manifest_path = dir.path().join(format!("{prefix}.manifest.parquet"));
        manifest
            .write_to(manifest_path.to_str().unwrap(), &Default::default())
            .unwrap();

        for cache in [None, Some(dir.path().join(format!("cache-{prefix}")))] {
            let mut c = LoaderConfig::new(manifest_path.to_str().unwrap(), 40)
                .with_storage_options(opts.clone())
                .with_window(shardstream_loader::config::Window::Samples(200))
                .with_prefetch_bytes(4 << 20);
            if let Some(cache) = &cache {
                c = c.with_cache_dir(cache);
            }
            let mut loader = Loader::new(c).unwrap();
            let mut rows = Vec::new();
            for batch in loader.iter() {
                let batch = batch.unwrap();
                check_batch(&batch, |_| &cfg);
                rows.extend(common::rows(&batch));
            }
            assert_exactly_once(rows, 0, 600);
            let stats = loader.stats();
            assert!(stats.requests > 0 && stats.bytes_fetched > 0, "{stats:?}");
        }
    }

    // An object overwritten in the bucket after indexing is refused: by its etag, or (s3s-fs
    // lists no etags) by its modification time, which has a one-second resolution.
    let url = "s3://bucket/pq";
    let manifest = index(url, &opts);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let loc = Location::open(url, &opts).unwrap();
    let victim = manifest.path(0).to_string();
    let mut bytes = std::fs::read(dir.path().join("pq").join(&victim)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    shard_index::runtime::block_on(async {
        use object_store::ObjectStoreExt;
        loc.store
            .put(&loc.key(&victim), bytes.into())
            .await
            .unwrap();
    })
    .unwrap();
    let c = LoaderConfig::from_manifest(manifest.clone(), 40)
        .with_storage_options(opts.clone())
        .with_shuffle(false);
    let mut loader = Loader::new(c).unwrap();
    let err = loader
        .iter()
        .find_map(|b| b.err())
        .expect("an error before the end");
    match err {
        Error::ShardChanged { url, .. } => assert_eq!(url, manifest.url(0)),
        other => panic!("expected ShardChanged, got {other}"),
    }
}

/// Until the first batch is out it has the store to itself: no GET for a later batch shares its
/// bandwidth. With 300 ms per request and one shard per batch (unshuffled), the first batch needs
/// its shard's footer and then its row groups; a loader that planned the next batch as soon as
/// that footer came back would send the next shard's GETs while the first batch still waits.
#[test]
fn until_the_first_batch_is_out_only_its_reads_are_sent() {
    use shardstream_loader::engine::NextBatch;
    use shardstream_tests::s3::ServerConfig;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start_with(
        &dir.path().join("s3"),
        ServerConfig {
            latency: Duration::from_millis(300),
            ..ServerConfig::default()
        },
    )
    .unwrap();
    server.create_bucket("bucket").unwrap();
    let opts = server.storage_options();
    // 4 shards of 150 rows in row groups of 50: a 150-sample batch is one shard, 3 row groups.
    let cfg = synth("parquet", 600, 4, 50);
    let local = dir.path().join("pq");
    generate(&local, &cfg).unwrap();
    let loc = Location::open("s3://bucket/pq", &opts).unwrap();
    shard_index::runtime::block_on(upload_dir(loc.store.as_ref(), &local, "pq"))
        .unwrap()
        .unwrap();
    let manifest = index("s3://bucket/pq", &opts);
    assert_eq!(
        manifest.row_groups(0).len(),
        3,
        "the layout this test assumes"
    );

    let c = LoaderConfig::from_manifest(manifest, 150)
        .with_storage_options(opts)
        .with_shuffle(false);
    let mut loader = Loader::new(c).unwrap();
    let stats = loader.stats_handle();
    let started = Instant::now();
    let mut most_while_waiting = 0;
    let first = loop {
        match loader.next_batch_within(Duration::from_millis(5)) {
            NextBatch::Ready(batch) => break batch.unwrap(),
            NextBatch::Pending => {
                // Only while the first batch's three units are still loading: once they are,
                // the look-ahead opens (before the batch is collated and handed over), and a
                // slow collation on a busy machine would let later GETs into the count.
                let now = stats.read();
                if now.units_loaded < 3 {
                    most_while_waiting = most_while_waiting.max(now.requests);
                }
            }
            NextBatch::End => panic!("the epoch ended before its first batch"),
        }
    };
    // Footer, then row groups: at least two request latencies passed, so the wait was watched
    // after the footer had come back.
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(common::rows(&first).iter().all(|&(_, id, _)| id < 150));
    // One footer GET and one GET per row group of shard 0, nothing for shard 1.
    assert!(
        (1..=4).contains(&most_while_waiting),
        "{most_while_waiting} GETs before the first batch was out"
    );
}
