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
