//! One manifest over many sources, and partitioned builds (`--part I/N` + merge).
//!
//! The central promise: merging the N partial manifests of a dataset gives exactly the bytes of
//! a single build over the same sources, whatever N and the concurrency; checked over sources
//! on the s3s-fs loopback server (two buckets) and local files together, and over JSONL shards
//! whose schemas only reconcile to the single build's schema when reconciled in manifest order.
//! Then bad input: unreachable and empty sources, overlapping sources, per-source storage
//! options, and parts that do not belong together.

use anyhow::Result;
use proptest::prelude::*;
use shard_index::format::{Compression, ShardFormat, ShardKind};
use shard_index::indexer::{self, IndexOptions, Silent};
use shard_index::manifest::{Manifest, PartInfo};
use shard_index::parts;
use shard_index::storage::{Location, StorageConfig, StorageOptions};
use shard_index::synth::{self, SynthConfig};
use shard_index::Error;
use shardstream_tests::s3::{upload_dir, S3Server};
use std::path::Path;

fn opts(base: &StorageOptions, concurrency: usize) -> IndexOptions {
    IndexOptions {
        concurrency,
        list_concurrency: concurrency.clamp(1, 8),
        storage_options: base.clone(),
        ..IndexOptions::default()
    }
}

async fn build(sources: &[String], o: &IndexOptions) -> Result<Manifest, Error> {
    Ok(indexer::build(sources, o, &Silent).await?.0)
}

/// Builds `n` parts (part i at concurrency 1 + i % 5), round-trips each through a file, merges
/// them in reverse order and returns the merged manifest's bytes.
async fn build_parts(sources: &[String], o: &IndexOptions, n: u32, tmp: &Path) -> Result<Vec<u8>> {
    let mut parts = Vec::new();
    for index in (0..n).rev() {
        let part = IndexOptions {
            part: Some(PartInfo { index, count: n }),
            concurrency: 1 + index as usize % 5,
            ..o.clone()
        };
        let (m, summary) = indexer::build(sources, &part, &Silent).await?;
        assert_eq!(summary.part, Some(PartInfo { index, count: n }));
        let path = tmp.join(format!("part-{index}-of-{n}.parquet"));
        m.write_to(path.to_str().unwrap(), &StorageOptions::new())?;
        let name = path.to_str().unwrap().to_string();
        parts.push((name.clone(), Manifest::read(&name, &StorageOptions::new())?));
    }
    let (merged, summary) = parts::merge(&parts)?;
    assert_eq!(summary.parts, n);
    Ok(merged.to_parquet_bytes()?)
}

fn generate(dir: &Path, kind: ShardKind, shards: u32, seed: u64) -> Result<()> {
    let cfg = SynthConfig {
        kind,
        samples: 40 * u64::from(shards),
        shards,
        tokens_min: 4,
        tokens_max: 16,
        row_group_rows: 16,
        seed,
        ..SynthConfig::default()
    };
    synth::generate(dir, &cfg)?;
    Ok(())
}

#[test]
fn parts_merge_to_the_single_build_over_s3_and_local_sources() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = S3Server::start(&tmp.path().join("s3"))?;
    server.create_bucket("alpha")?;
    server.create_bucket("beta")?;
    let s3 = server.storage_options();
    let rt = tokio::runtime::Runtime::new()?;
    let parquet = ShardKind::new(ShardFormat::Parquet, Compression::None);
    let mut sources = Vec::new();
    for (i, (bucket, prefix)) in [("alpha", "web/en"), ("beta", "books"), ("alpha", "web/fr")]
        .into_iter()
        .enumerate()
    {
        let local = tmp.path().join(format!("gen-{i}"));
        generate(&local, parquet, 7 + i as u32 * 3, i as u64)?;
        let loc = Location::open(&format!("s3://{bucket}"), &s3)?;
        // Nested prefixes, so first-level fan-out has something to fan out over.
        rt.block_on(upload_dir(
            loc.store.as_ref(),
            &local,
            &format!("{prefix}/a"),
        ))?;
        rt.block_on(upload_dir(
            loc.store.as_ref(),
            &local,
            &format!("{prefix}/b"),
        ))?;
        sources.push(format!("s3://{bucket}/{prefix}"));
    }
    let local = tmp.path().join("local-src");
    generate(&local, parquet, 9, 42)?;
    sources.push(local.to_str().unwrap().to_string());

    let o = opts(&s3, 16);
    let single = rt.block_on(build(&sources, &o))?;
    assert_eq!(single.meta.sources.len(), 4);
    assert_eq!(single.len(), 2 * (7 + 10 + 13) + 9);
    // Rows are ordered by (source as given, path), and the source column points into the list.
    assert!(
        single.url(0).starts_with("s3://alpha/web/en/"),
        "{}",
        single.url(0)
    );
    assert!(single.url(single.len() - 1).starts_with("file://"));
    let bytes = single.to_parquet_bytes()?;
    let serial = rt.block_on(build(&sources, &opts(&s3, 1)))?;
    assert_eq!(serial.to_parquet_bytes()?, bytes, "concurrency 1 vs 16");
    for n in [1, 2, 3, 7] {
        let merged = rt.block_on(build_parts(&sources, &o, n, tmp.path()))?;
        assert!(merged == bytes, "{n} parts differ from the single build");
    }
    Ok(())
}

/// JSONL shards whose fields appear in different shards, and one type conflict that
/// `--skip-bad` resolves by rejecting whichever shard comes later in manifest order.
fn write_jsonl_dataset(dir: &Path, shards: usize, conflict: bool) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in 0..shards {
        let line = match i % 4 {
            0 => format!("{{\"id\": {i}, \"a{}\": 1}}", i % 3),
            1 => format!("{{\"id\": {i}.5, \"b\": \"x\"}}"),
            2 if conflict => format!("{{\"id\": \"text-{i}\"}}"),
            _ => format!("{{\"id\": {i}, \"c\": [1, 2]}}"),
        };
        std::fs::write(
            dir.join(format!("s-{i:03}.jsonl")),
            format!("{line}\n{line}\n"),
        )?;
    }
    Ok(())
}

#[test]
fn jsonl_schemas_reconcile_in_manifest_order_across_parts() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let dirs: Vec<String> = (0..3)
        .map(|k| {
            let d = tmp.path().join(format!("src{k}"));
            write_jsonl_dataset(&d, 10 + k, k == 1).unwrap();
            d.to_str().unwrap().to_string()
        })
        .collect();
    let base = StorageOptions::new();
    // Without --skip-bad the conflict fails the build, and every part that holds both sides.
    let err = rt.block_on(build(&dirs, &opts(&base, 4))).unwrap_err();
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err}");
    let o = IndexOptions {
        skip_bad: true,
        ..opts(&base, 4)
    };
    let (single, summary) = rt.block_on(indexer::build(&dirs, &o, &Silent))?;
    assert!(
        !summary.bad.is_empty(),
        "the conflicting shards are recorded"
    );
    let bytes = single.to_parquet_bytes()?;
    for n in [2, 3, 5] {
        let merged = rt.block_on(build_parts(&dirs, &o, n, tmp.path()))?;
        assert!(merged == bytes, "{n} parts differ from the single build");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]
    /// Any part count and any concurrency give the single build's bytes.
    #[test]
    fn merge_is_byte_identical_for_any_split(n in 1u32..9, concurrency in 1usize..33, shards in 1usize..24) {
        let tmp = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        write_jsonl_dataset(&a, shards, false).unwrap();
        write_jsonl_dataset(&b, 3, false).unwrap();
        let sources = vec![b.to_str().unwrap().to_string(), a.to_str().unwrap().to_string()];
        let base = StorageOptions::new();
        let single = rt.block_on(build(&sources, &opts(&base, 3))).unwrap().to_parquet_bytes().unwrap();
        let merged = rt.block_on(build_parts(&sources, &opts(&base, concurrency), n, tmp.path())).unwrap();
        prop_assert!(merged == single);
    }
}

#[test]
fn bad_sources_fail_or_are_recorded() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let server = S3Server::start(&tmp.path().join("s3"))?;
    server.create_bucket("good")?;
    server.create_bucket("dead")?;
    let s3 = server.storage_options();
    let jsonl = ShardKind::new(ShardFormat::Jsonl, Compression::None);
    let gen = tmp.path().join("gen");
    generate(&gen, jsonl, 3, 1)?;
    let loc = Location::open("s3://good", &s3)?;
    rt.block_on(upload_dir(loc.store.as_ref(), &gen, "ds"))?;
    rt.block_on(upload_dir(
        Location::open("s3://dead", &s3)?.store.as_ref(),
        &gen,
        "ds",
    ))?;
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty)?;

    // Per-source options: route bucket `dead` to a port nobody listens on, quickly.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = StorageConfig::from_json(
        &format!(
            r#"{{"sources": [{{"match": "s3://dead", "options": {{
                "aws_endpoint": "http://127.0.0.1:{closed}", "max_retries": "0",
                "retry_timeout_secs": "1"}}}}]}}"#
        ),
        "test-config",
    )?;
    let o = IndexOptions {
        storage_config: config,
        ..opts(&s3, 4)
    };
    let sources = vec!["s3://good/ds".to_string(), "s3://dead/ds".to_string()];
    let err = rt.block_on(build(&sources, &o)).unwrap_err();
    // The storage error keeps its type and names the source that failed.
    assert!(
        matches!(&err, Error::Storage { path, .. } if path == "s3://dead/ds"),
        "{err}"
    );
    let skip = IndexOptions {
        skip_bad: true,
        ..o.clone()
    };
    let (m, summary) = rt.block_on(indexer::build(&sources, &skip, &Silent))?;
    assert_eq!(m.len(), 3);
    assert_eq!(m.meta.sources, sources, "a skipped source keeps its index");
    assert_eq!(summary.bad_sources.len(), 1);
    assert_eq!(summary.bad_sources[0].source, "s3://dead/ds");
    // Without the config the same bucket is fine: the options really were per source.
    let (m, _) = rt.block_on(indexer::build(&sources, &opts(&s3, 4), &Silent))?;
    assert_eq!(m.len(), 6);

    // An empty source among good ones.
    let with_empty = vec![
        "s3://good/ds".to_string(),
        empty.to_str().unwrap().to_string(),
    ];
    let err = rt.block_on(build(&with_empty, &opts(&s3, 4))).unwrap_err();
    assert!(matches!(err, Error::EmptySource { .. }), "{err}");
    assert!(err.to_string().contains("empty"), "{err}");
    let (_, summary) = rt.block_on(indexer::build(&with_empty, &skip, &Silent))?;
    assert_eq!(summary.bad_sources.len(), 1);

    // Overlapping sources would count shards twice.
    let nested = tmp.path().join("gen").to_str().unwrap().to_string();
    for overlapping in [
        vec!["s3://good/ds".to_string(), "s3://good/ds/".to_string()],
        vec!["s3://good".to_string(), "s3://good/ds".to_string()],
        vec![
            nested.clone(),
            format!("{nested}/part-00000.jsonl"),
            "s3://good/ds".into(),
        ],
    ] {
        let err = rt.block_on(build(&overlapping, &skip)).unwrap_err();
        assert!(
            matches!(err, Error::OverlappingSources { .. }),
            "{overlapping:?}: {err}"
        );
    }
    // Neighbours sharing a name prefix do not overlap.
    std::fs::create_dir_all(tmp.path().join("gen2"))?;
    generate(&tmp.path().join("gen2"), jsonl, 2, 3)?;
    let m = rt.block_on(build(
        &[nested.clone(), format!("{nested}2")],
        &opts(&s3, 4),
    ))?;
    assert_eq!(m.len(), 5);
    Ok(())
}

#[test]
fn merge_refuses_parts_that_do_not_belong_together() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    write_jsonl_dataset(&a, 12, false)?;
    write_jsonl_dataset(&b, 5, false)?;
    let (a, b) = (
        a.to_str().unwrap().to_string(),
        b.to_str().unwrap().to_string(),
    );
    let base = StorageOptions::new();
    let part = |sources: Vec<String>, index: u32, count: u32, skip_bad: bool| {
        let o = IndexOptions {
            part: Some(PartInfo { index, count }),
            skip_bad,
            ..opts(&base, 2)
        };
        let m = rt.block_on(build(&sources, &o)).unwrap();
        (format!("{index}/{count} of {sources:?}"), m)
    };
    let ab = vec![a.clone(), b.clone()];
    let good = vec![part(ab.clone(), 0, 2, false), part(ab.clone(), 1, 2, false)];
    assert!(parts::merge(&good).is_ok());
    let reason = |parts: Vec<(String, Manifest)>| match parts::merge(&parts) {
        Err(Error::PartMismatch { reason, .. }) => reason,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("merged parts that do not belong together"),
    };
    let r = reason(vec![good[0].clone()]);
    assert!(r.contains("missing"), "{r}");
    let r = reason(vec![good[0].clone(), good[0].clone(), good[1].clone()]);
    assert!(r.contains("twice"), "{r}");
    let r = reason(vec![good[0].clone(), part(vec![a.clone()], 1, 2, false)]);
    assert!(r.contains("different source lists"), "{r}");
    let r = reason(vec![
        good[0].clone(),
        part(vec![b.clone(), a.clone()], 1, 2, false),
    ]);
    assert!(r.contains("different source lists"), "{r}");
    let r = reason(vec![good[0].clone(), part(ab.clone(), 1, 3, false)]);
    assert!(r.contains("--part"), "{r}");
    let r = reason(vec![good[0].clone(), part(ab.clone(), 1, 2, true)]);
    assert!(r.contains("--skip-bad"), "{r}");
    // A different builder version.
    let mut old = good[1].clone();
    old.1.meta.builder = "shard-index 0.0.1".into();
    let r = reason(vec![good[0].clone(), old]);
    assert!(r.contains("shard-index 0.0.1"), "{r}");
    // A full manifest is not a part.
    let full = rt.block_on(build(&ab, &opts(&base, 2)))?;
    let r = reason(vec![good[0].clone(), ("full".into(), full)]);
    assert!(r.contains("not a partial manifest"), "{r}");
    // The store changed between two parts' listings.
    let p0 = part(ab.clone(), 0, 2, false);
    std::fs::write(Path::new(&b).join("s-999.jsonl"), "{\"id\": 1}\n")?;
    let p1 = part(ab.clone(), 1, 2, false);
    let r = reason(vec![p0, p1]);
    assert!(r.contains("different listing") && r.contains(&b), "{r}");
    Ok(())
}
