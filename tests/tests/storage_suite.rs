//! One storage suite, run against every backend: local files, the s3s-fs server on loopback and
//! moto's S3 server (an independent implementation). Each case builds real datasets with the
//! generator, indexes them through the backend, and checks counts, determinism, updates,
//! verification and the detection of objects that change under the indexer.

use anyhow::Result;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use shard_index::format::{Compression, ShardFormat, ShardKind};
use shard_index::indexer::{self, IndexOptions, Silent};
use shard_index::storage::{Location, StorageOptions};
use shard_index::synth::{self, SynthConfig};
use shard_index::Error;
use shardstream_tests::moto::MotoServer;
use shardstream_tests::s3::{s3_options, upload_dir, S3Server};
use std::path::Path;
use std::sync::Arc;

/// A dataset location on one backend, with whatever keeps its server alive.
struct Backend {
    name: &'static str,
    /// Root URL under which tests put datasets.
    root: String,
    options: StorageOptions,
    store: Arc<dyn ObjectStore>,
    /// Prefix inside `store` corresponding to `root`.
    prefix: String,
    _guard: Box<dyn std::any::Any + Send>,
}

impl Backend {
    fn local(tmp: &Path) -> Result<Self> {
        let dir = tmp.join("local-root");
        std::fs::create_dir_all(&dir)?;
        let loc = Location::open(dir.to_str().unwrap(), &StorageOptions::new())?;
        Ok(Self {
            name: "local",
            root: dir.to_str().unwrap().to_string(),
            options: StorageOptions::new(),
            store: loc.store.clone(),
            prefix: loc.prefix.as_ref().to_string(),
            _guard: Box::new(()),
        })
    }

    fn s3s(tmp: &Path) -> Result<Self> {
        let server = S3Server::start(&tmp.join("s3s-root"))?;
        server.create_bucket("data")?;
        let options = server.storage_options();
        let loc = Location::open("s3://data", &options)?;
        Ok(Self {
            name: "s3s-fs",
            root: "s3://data".into(),
            options,
            store: loc.store.clone(),
            prefix: String::new(),
            _guard: Box::new(server),
        })
    }

    fn moto() -> Result<Self> {
        let server = MotoServer::start()?;
        server.create_bucket("data")?;
        let options = s3_options(&server.endpoint());
        let loc = Location::open("s3://data", &options)?;
        Ok(Self {
            name: "moto",
            root: "s3://data".into(),
            options,
            store: loc.store.clone(),
            prefix: String::new(),
            _guard: Box::new(server),
        })
    }

    fn key(&self, rel: &str) -> StorePath {
        if self.prefix.is_empty() {
            StorePath::from(rel)
        } else {
            StorePath::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.root)
    }

    fn opts(&self, concurrency: usize) -> IndexOptions {
        IndexOptions {
            concurrency,
            storage_options: self.options.clone(),
            ..IndexOptions::default()
        }
    }

    async fn put(&self, rel: &str, data: Vec<u8>) -> Result<()> {
        self.store
            .put(&self.key(rel), PutPayload::from(data))
            .await?;
        Ok(())
    }

    async fn upload(&self, local: &Path, rel: &str) -> Result<()> {
        let prefix = self.key(rel);
        upload_dir(self.store.as_ref(), local, prefix.as_ref()).await?;
        Ok(())
    }
}

fn kinds() -> Vec<ShardKind> {
    vec![
        ShardKind::new(ShardFormat::Parquet, Compression::None),
        ShardKind::new(ShardFormat::Tar, Compression::None),
        ShardKind::new(ShardFormat::Tar, Compression::Zstd),
        ShardKind::new(ShardFormat::Jsonl, Compression::None),
        ShardKind::new(ShardFormat::Jsonl, Compression::Zstd),
    ]
}

async fn suite(b: &Backend, tmp: &Path) -> Result<()> {
    // 1. Every format: exact counts, row groups, and byte-identical manifests at any concurrency.
    for (n, kind) in kinds().into_iter().enumerate() {
        let cfg = SynthConfig {
            kind,
            samples: 1500 + n as u64 * 77,
            shards: 6,
            row_group_rows: 100,
            // Parquet shards larger than the footer read, so "footer only" is visible.
            blob_bytes: if kind.format == ShardFormat::Parquet {
                512
            } else {
                0
            },
            ..SynthConfig::default()
        };
        let local = tmp.join(format!("{}-{n}", b.name));
        let report = synth::generate(&local, &cfg)?;
        let rel = format!("fmt{n}");
        b.upload(&local, &rel).await?;
        let (m1, s1) = indexer::build(&[b.url(&rel)], &b.opts(1), &Silent).await?;
        let (m64, _) = indexer::build(&[b.url(&rel)], &b.opts(64), &Silent).await?;
        assert_eq!(s1.shards, 6, "{} {kind}", b.name);
        assert_eq!(m1.meta.totals.samples, cfg.samples, "{} {kind}", b.name);
        assert_eq!(
            m1.sample_counts(),
            &report.shard_samples[..],
            "{} {kind}",
            b.name
        );
        assert_eq!(
            m1.to_parquet_bytes()?,
            m64.to_parquet_bytes()?,
            "{} {kind}",
            b.name
        );
        if kind.format == ShardFormat::Parquet {
            for i in 0..m1.len() {
                let rgs = m1.row_groups(i);
                assert!(rgs.len() > 1, "uneven row groups expected");
                assert_eq!(
                    rgs.iter().map(|r| r.num_rows).sum::<u64>(),
                    m1.num_samples(i)
                );
                assert!(rgs
                    .windows(2)
                    .all(|w| w[0].offset + w[0].length <= w[1].offset));
                assert!(rgs
                    .iter()
                    .all(|r| r.offset >= 4 && r.offset + r.length <= m1.size(i)));
            }
            // Footer-only: far fewer bytes read than stored.
            let guess = shard_index::scan::parquet::FOOTER_GUESS;
            assert!(
                s1.bytes_read <= s1.shards * guess,
                "{}: read {}",
                b.name,
                s1.bytes_read
            );
            assert!(
                s1.bytes_read < s1.bytes / 2,
                "{}: read {} of {}",
                b.name,
                s1.bytes_read,
                s1.bytes
            );
        } else {
            assert_eq!(s1.bytes_read, s1.bytes);
        }
        let report = indexer::verify(&m1, &b.opts(8), true, &Silent).await?;
        assert!(
            report.mismatches.is_empty(),
            "{}: {:?}",
            b.name,
            report.mismatches
        );
    }

    // 2. Update: one added, one removed, one changed, the rest reused without reading.
    let local = tmp.join(format!("{}-upd", b.name));
    let cfg = SynthConfig {
        kind: ShardKind::new(ShardFormat::Jsonl, Compression::None),
        samples: 400,
        shards: 4,
        ..SynthConfig::default()
    };
    synth::generate(&local, &cfg)?;
    b.upload(&local, "upd").await?;
    let (before, _) = indexer::build(&[b.url("upd")], &b.opts(4), &Silent).await?;
    b.store.delete(&b.key("upd/part-00000.jsonl")).await?;
    b.put("upd/part-00001.jsonl", b"{\"id\": 1}\n".to_vec())
        .await?;
    b.put(
        "upd/part-00007.jsonl",
        b"{\"id\": 7}\n{\"id\": 8}\n".to_vec(),
    )
    .await?;
    let stale = indexer::verify(&before, &b.opts(4), false, &Silent).await?;
    assert_eq!(
        stale.mismatches.len(),
        2,
        "{}: {:?}",
        b.name,
        stale.mismatches
    );
    let (after, s) = indexer::update(&before, &b.opts(4), &Silent).await?;
    assert_eq!(
        (s.added.len(), s.removed.len(), s.changed.len(), s.unchanged),
        (1, 1, 1, 2),
        "{}",
        b.name
    );
    assert_eq!(after.len(), 4);
    let fresh = indexer::verify(&after, &b.opts(4), true, &Silent).await?;
    assert!(
        fresh.mismatches.is_empty(),
        "{}: {:?}",
        b.name,
        fresh.mismatches
    );

    // 3. An object overwritten between listing and reading is caught, never described wrongly.
    b.put("race/a.jsonl", b"{\"id\": 1}\n".to_vec()).await?;
    let meta = b.store.head(&b.key("race/a.jsonl")).await?;
    b.put(
        "race/a.jsonl",
        b"{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3}\n".to_vec(),
    )
    .await?;
    let kind = ShardKind::new(ShardFormat::Jsonl, Compression::None);
    let err = shard_index::scan::scan_object(
        b.store.as_ref(),
        &meta,
        "a.jsonl",
        "race/a.jsonl",
        kind,
        &Default::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::ObjectChanged { .. }),
        "{}: {err}",
        b.name
    );

    // 4. An empty prefix and a malformed object.
    let err = indexer::build(&[b.url("nothing-here")], &b.opts(4), &Silent)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::EmptySource { .. }),
        "{}: {err}",
        b.name
    );
    b.put(
        "bad/x.parquet",
        b"not parquet at all, just text....".to_vec(),
    )
    .await?;
    b.put("bad/y.jsonl", b"{\"ok\": 1}\n".to_vec()).await?;
    let err = indexer::build(&[b.url("bad")], &b.opts(4), &Silent)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("x.parquet"), "{}: {err}", b.name);
    Ok(())
}

fn run_suite(make: impl FnOnce(&Path) -> Result<Backend>) {
    let tmp = tempfile::tempdir().unwrap();
    let backend = make(tmp.path()).expect("backend starts");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(suite(&backend, tmp.path())).unwrap();
}

#[test]
fn local_files() {
    run_suite(Backend::local);
}

#[test]
fn s3s_fs_on_loopback() {
    run_suite(Backend::s3s);
}

#[test]
fn moto_on_loopback() {
    run_suite(|_| Backend::moto());
}

#[test]
fn wrong_credentials_are_permission_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(tmp.path()).unwrap();
    server.create_bucket("data").unwrap();
    std::fs::write(server.bucket_dir("data").join("a.jsonl"), b"{\"a\":1}\n").unwrap();
    let mut options = server.storage_options();
    options.insert("aws_secret_access_key".into(), "wrong".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = IndexOptions {
        storage_options: options,
        ..IndexOptions::default()
    };
    let err = rt
        .block_on(indexer::build(&["s3://data".to_string()], &opts, &Silent))
        .unwrap_err();
    assert!(
        matches!(err, Error::PermissionDenied { .. } | Error::Storage { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("s3://data"), "{err}");
}
