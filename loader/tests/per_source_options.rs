//! One manifest over two S3 servers whose buckets have the same name: only per-source storage
//! options (the `--storage-config` file format) can tell the loader which endpoint serves which
//! source, and with them it delivers the union exactly once.

mod common;

use common::{assert_exactly_once, synth};
use shard_index::synth::generate;
use shard_index::{IndexOptions, Location, Silent, StorageConfig};
use shardstream_loader::config::{LoaderConfig, Window};
use shardstream_loader::engine::Loader;
use shardstream_tests::s3::{upload_dir, S3Server};

#[test]
fn each_source_is_read_with_its_own_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let servers = [
        S3Server::start(&dir.path().join("s3-a")).unwrap(),
        S3Server::start(&dir.path().join("s3-b")).unwrap(),
    ];
    let mut sources = Vec::new();
    let mut rules = Vec::new();
    for (i, (server, name)) in servers.iter().zip(["a", "b"]).enumerate() {
        server.create_bucket("data").unwrap();
        let local = dir.path().join(name);
        let mut cfg = synth("parquet", 300, 3, 40);
        cfg.seed = i as u64;
        generate(&local, &cfg).unwrap();
        let url = format!("s3://data/{name}");
        let loc = Location::open(&url, &server.storage_options()).unwrap();
        shard_index::runtime::block_on(upload_dir(loc.store.as_ref(), &local, name))
            .unwrap()
            .unwrap();
        let endpoint = &server.storage_options()["aws_endpoint"];
        rules.push(format!(
            r#"{{"match": "{url}", "options": {{"aws_endpoint": "{endpoint}"}}}}"#
        ));
        sources.push(url);
    }
    let per_source =
        StorageConfig::from_json(&format!(r#"{{"sources": [{}]}}"#, rules.join(",")), "test")
            .unwrap();
    // Credentials and the rest are shared; the endpoint is per source.
    let base = servers[0].storage_options();
    let opts = IndexOptions {
        storage_options: base.clone(),
        storage_config: per_source.clone(),
        ..IndexOptions::default()
    };
    let (manifest, _) =
        shard_index::runtime::block_on(shard_index::build(&sources, &opts, &Silent))
            .unwrap()
            .unwrap();
    assert_eq!(manifest.meta.sources.len(), 2);
    let total = manifest.meta.totals.samples;
    assert_eq!(total, 600);

    let config = LoaderConfig::from_manifest(manifest.clone(), 32)
        .with_storage_options(base.clone())
        .with_window(Window::Samples(100));
    let mut loader = Loader::new(config.clone().with_storage_config(per_source)).unwrap();
    let mut rows = Vec::new();
    for batch in loader.iter() {
        let batch = batch.unwrap();
        rows.extend(
            batch
                .samples
                .iter()
                .zip(&batch.padded)
                .map(|(s, &p)| (s.stream, s.global, p)),
        );
    }
    assert_exactly_once(rows, 0, total);

    // Without the per-source rules every source goes to server A, which lacks `b`'s shards:
    // an error naming one of them, not a silent skip.
    let mut loader = Loader::new(config).unwrap();
    let err = loader
        .iter()
        .find_map(Result::err)
        .expect("source b cannot be read from server a");
    assert!(err.to_string().contains("s3://data/b/"), "{err}");
}
