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

/// Writes `shards` one-line JSONL shards under `dir`: `at_root` of them directly in it, the rest
/// dealt over `subdirs` subdirectories (nested `depth` levels deep), plus a non-shard marker in
/// each subdirectory.
fn write_tree(
    dir: &Path,
    shards: usize,
    at_root: usize,
    subdirs: usize,
    depth: usize,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in 0..shards {
        let sub = if i < at_root || subdirs == 0 {
            dir.to_path_buf()
        } else {
            let mut d = dir.to_path_buf();
            for level in 0..depth {
                d = d.join(format!("d{level}-{:03}", (i - at_root) % subdirs));
            }
            d
        };
        std::fs::create_dir_all(&sub)?;
        std::fs::write(
            sub.join(format!("s-{i:04}.jsonl")),
            format!("{{\"id\": {i}}}\n"),
        )?;
        std::fs::write(sub.join("_SUCCESS"), "")?;
    }
    Ok(())
}

/// Builds every part of `n` (in reverse order), returning each part's manifest and summary.
fn build_each_part(
    rt: &tokio::runtime::Runtime,
    sources: &[String],
    o: &IndexOptions,
    n: u32,
) -> Result<Vec<(String, Manifest, indexer::BuildSummary)>> {
    let mut out = Vec::new();
    for index in (0..n).rev() {
        let part = IndexOptions {
            part: Some(PartInfo { index, count: n }),
            concurrency: 1 + index as usize % 3,
            ..o.clone()
        };
        let (m, summary) = rt.block_on(indexer::build(sources, &part, &Silent))?;
        out.push((format!("part {index}/{n}"), m, summary));
    }
    Ok(out)
}

fn merge_bytes(parts: &[(String, Manifest, indexer::BuildSummary)]) -> Result<Vec<u8>> {
    let parts: Vec<(String, Manifest)> = parts
        .iter()
        .map(|(name, m, _)| (name.clone(), m.clone()))
        .collect();
    Ok(parts::merge(&parts)?.0.to_parquet_bytes()?)
}

#[test]
fn fanned_out_listing_lists_each_unit_once_and_merges_to_the_single_build() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let server = S3Server::start(&tmp.path().join("s3"))?;
    server.create_bucket("fan")?;
    let s3 = server.storage_options();
    // An s3s-fs bucket of 24 subdirectories and a local directory of 20 (plus 5 shards at its
    // root, where every part lists): 44 first-level prefixes, enough units for 4 parts (32).
    let gen = tmp.path().join("gen");
    write_tree(&gen, 72, 0, 24, 1)?;
    rt.block_on(upload_dir(
        Location::open("s3://fan", &s3)?.store.as_ref(),
        &gen,
        "data",
    ))?;
    let local = tmp.path().join("local");
    write_tree(&local, 65, 5, 20, 1)?;
    let sources = vec![
        "s3://fan/data".to_string(),
        local.to_str().unwrap().to_string(),
    ];
    let o = opts(&s3, 8);
    let (single, whole) = rt.block_on(indexer::build(&sources, &o, &Silent))?;
    assert_eq!(single.len(), 72 + 65);
    let bytes = single.to_parquet_bytes()?;

    let n = 4;
    let parts = build_each_part(&rt, &sources, &o, n)?;
    assert!(
        merge_bytes(&parts)? == bytes,
        "merged parts differ from the single build"
    );
    let mut owned = std::collections::BTreeSet::new();
    let mut owned_objects = 0;
    for (name, m, summary) in &parts {
        let l = &summary.listing;
        assert_eq!(
            l.scheme,
            Some(shard_index::fanout::ListingScheme::PrefixFanout)
        );
        assert_eq!(
            (l.depth, l.units_total, l.fallback_sources),
            (1, 44, 0),
            "{name}"
        );
        // Dealt round-robin: 44 units over 4 parts is 11 each.
        assert_eq!(l.units_owned, 11, "{name}");
        let detail = m.meta.part_detail.as_ref().unwrap();
        assert_eq!(detail.listing.owned_units.len(), 11);
        for u in &detail.listing.owned_units {
            assert!(
                owned.insert(u.clone()),
                "{name}: unit {u:?} listed by two parts"
            );
        }
        // A part lists the 6 root objects (5 shards, a marker) and its own units, never
        // another part's.
        assert_eq!(l.objects_listed, 6 + l.objects_owned, "{name}");
        assert!(l.objects_listed < whole.objects_listed, "{name}: {l:?}");
        owned_objects += l.objects_owned;
        // LIST requests: two root listings (the walk), one per own unit.
        assert_eq!((l.walk_requests, l.list_requests), (2, 2 + 11), "{name}");
    }
    assert_eq!(
        owned.len(),
        44,
        "the owned units together are the whole plan"
    );
    // Every object under a unit (shards and markers) was listed by exactly one part.
    assert_eq!(owned_objects, whole.objects_listed - 6);

    // Without split listing every part lists everything; the manifest is the same.
    let full = IndexOptions {
        split_listing: false,
        ..o.clone()
    };
    let parts_full = build_each_part(&rt, &sources, &full, n)?;
    assert!(merge_bytes(&parts_full)? == bytes);
    for (name, _, summary) in &parts_full {
        assert_eq!(
            summary.listing.objects_listed, whole.objects_listed,
            "{name}"
        );
        assert_eq!(summary.listing.units_owned, 0);
    }
    // Parts of the two schemes do not merge.
    let mixed: Vec<(String, Manifest)> = vec![
        (parts[0].0.clone(), parts[0].1.clone()),
        ("unsplit".into(), parts_full[1].1.clone()),
        (parts[2].0.clone(), parts[2].1.clone()),
        (parts[3].0.clone(), parts[3].1.clone()),
    ];
    match parts::merge(&mixed) {
        Err(Error::PartMismatch { path, reason }) => {
            assert_eq!(path, "unsplit");
            assert!(reason.contains("--no-split-listing"), "{reason}");
        }
        other => panic!("merged parts of two listing schemes: {:?}", other.err()),
    }
    Ok(())
}

#[test]
fn flat_and_deep_layouts_fall_back_to_key_hash() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let base = StorageOptions::new();
    // Flat: shards only at the roots (the walk ends at level 0). Deep: three prefixes, each
    // nested three levels, so the frontier is still small at the deepest level walked.
    let flat = tmp.path().join("flat");
    write_tree(&flat, 30, 30, 0, 0)?;
    let deep = tmp.path().join("deep");
    write_tree(&deep, 30, 2, 3, 4)?;
    for (sources, depth, fallback) in [
        (vec![flat.clone()], 1, 0),
        (vec![deep.clone()], 3, 3),
        (vec![flat.clone(), deep.clone()], 3, 3),
    ] {
        let sources: Vec<String> = sources
            .iter()
            .map(|p| p.to_str().unwrap().to_string())
            .collect();
        let o = opts(&base, 4);
        let (single, whole) = rt.block_on(indexer::build(&sources, &o, &Silent))?;
        let parts = build_each_part(&rt, &sources, &o, 3)?;
        assert!(
            merge_bytes(&parts)? == single.to_parquet_bytes()?,
            "{sources:?}"
        );
        for (name, m, summary) in &parts {
            let l = &summary.listing;
            assert_eq!((l.units_total, l.depth), (0, depth), "{name} {sources:?}");
            assert_eq!(l.fallback_sources, sources.len() as u64);
            assert_eq!(
                l.objects_listed, whole.objects_listed,
                "every part lists everything"
            );
            let plan = &m.meta.part_detail.as_ref().unwrap().listing.plan;
            assert_eq!(plan.fallback.len(), fallback, "{name} {sources:?}");
        }
    }
    Ok(())
}

#[test]
fn merge_refuses_parts_whose_listing_plans_differ() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let base = StorageOptions::new();
    let a = tmp.path().join("a");
    write_tree(&a, 40, 2, 20, 1)?;
    let sources = vec![a.to_str().unwrap().to_string()];
    let o = opts(&base, 2);
    let mut parts = build_each_part(&rt, &sources, &o, 2)?;
    // A new prefix appears between two parts' walks: a unit only the later part knows.
    write_tree(&a.join("d0-new"), 1, 1, 0, 0)?;
    let late = build_each_part(&rt, &sources, &o, 2)?;
    parts[0] = late.into_iter().next().unwrap();
    parts[0].0 = "late part".into();
    let refs: Vec<(String, Manifest)> = parts
        .iter()
        .map(|(name, m, _)| (name.clone(), m.clone()))
        .collect();
    match parts::merge(&refs) {
        Err(Error::PartMismatch { path, reason }) => {
            assert!(
                path == "late part" || reason.contains("late part"),
                "{path}: {reason}"
            );
            assert!(
                reason.contains("listing units")
                    && reason.contains("21")
                    && reason.contains(&sources[0]),
                "{reason}"
            );
        }
        other => panic!("merged parts of different plans: {:?}", other.err()),
    }
    // A part claiming a unit it does not own.
    let parts = build_each_part(&rt, &sources, &o, 2)?;
    let mut forged: Vec<(String, Manifest)> = parts
        .iter()
        .map(|(name, m, _)| (name.clone(), m.clone()))
        .collect();
    let stolen = forged[1]
        .1
        .meta
        .part_detail
        .as_ref()
        .unwrap()
        .listing
        .owned_units[0]
        .clone();
    let mut detail = forged[0].1.meta.part_detail.clone().unwrap();
    detail.listing.owned_units.push(stolen);
    forged[0].1.meta.part_detail = Some(detail);
    match parts::merge(&forged) {
        Err(Error::PartMismatch { reason, .. }) => {
            assert!(reason.contains("also listed"), "{reason}")
        }
        other => panic!("merged overlapping units: {:?}", other.err()),
    }
    Ok(())
}

#[test]
fn a_source_empty_in_every_part_is_found_by_merge() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let base = StorageOptions::new();
    let good = tmp.path().join("good");
    write_tree(&good, 12, 12, 0, 0)?;
    // 20 prefixes of markers only: split into units, so no single part can tell it is empty.
    let hollow = tmp.path().join("hollow");
    for i in 0..20 {
        let d = hollow.join(format!("p{i:02}"));
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("_SUCCESS"), "")?;
    }
    let sources: Vec<String> = [&good, &hollow]
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    let err = rt.block_on(build(&sources, &opts(&base, 2))).unwrap_err();
    assert!(matches!(err, Error::EmptySource { .. }), "{err}");
    let parts = build_each_part(&rt, &sources, &opts(&base, 2), 2)?;
    assert!(parts.iter().all(|p| p.2.listing.units_total == 20));
    let refs: Vec<(String, Manifest)> = parts
        .iter()
        .map(|(name, m, _)| (name.clone(), m.clone()))
        .collect();
    let err = parts::merge(&refs).unwrap_err();
    assert!(
        matches!(&err, Error::EmptySource { location, .. } if location.ends_with("/hollow")),
        "{err}"
    );
    // With --skip-bad the merge records it, as the single build does.
    let skip = IndexOptions {
        skip_bad: true,
        ..opts(&base, 2)
    };
    let (single, summary) = rt.block_on(indexer::build(&sources, &skip, &Silent))?;
    let parts = build_each_part(&rt, &sources, &skip, 2)?;
    let refs: Vec<(String, Manifest)> = parts
        .iter()
        .map(|(name, m, _)| (name.clone(), m.clone()))
        .collect();
    let (merged, merge_summary) = parts::merge(&refs)?;
    assert!(merged.to_parquet_bytes()? == single.to_parquet_bytes()?);
    assert_eq!(merge_summary.bad_sources, summary.bad_sources);
    assert_eq!(merge_summary.objects_listed, summary.objects_listed);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]
    /// Nested layouts, split or falling back depending on N and the number of prefixes: always
    /// the single build's bytes, every unit owned by exactly one part.
    #[test]
    fn fanned_out_merge_is_byte_identical(
        n in 1u32..7,
        subdirs in 0usize..60,
        at_root in 0usize..4,
        depth in 1usize..5,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let a = tmp.path().join("a");
        write_tree(&a, at_root + subdirs + 3, at_root, subdirs, depth).unwrap();
        let b = tmp.path().join("b");
        write_tree(&b, 5, 1, 4, 1).unwrap();
        let sources = vec![a.to_str().unwrap().to_string(), b.to_str().unwrap().to_string()];
        let o = opts(&StorageOptions::new(), 3);
        let single = rt.block_on(build(&sources, &o)).unwrap().to_parquet_bytes().unwrap();
        let parts = build_each_part(&rt, &sources, &o, n).unwrap();
        prop_assert!(merge_bytes(&parts).unwrap() == single);
        let owned: usize = parts.iter().map(|p| p.2.listing.units_owned as usize).sum();
        prop_assert_eq!(owned as u64, parts[0].2.listing.units_total);
    }
}
