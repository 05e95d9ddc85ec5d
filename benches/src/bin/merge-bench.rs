//! Many sources and partitioned builds: manifest bytes per shard with S sources, and the time to
//! merge N partial manifests.
//!
//! Shards are fabricated (realistic paths, etags, sizes and row groups, as in `manifest-scale`)
//! and spread in contiguous blocks over S sources (`s3://dataset-bucket-0000/train`, ...), so the
//! measurement isolates the manifest and the merge from any storage. The N parts are split by
//! the same hash `--part I/N` uses, written to disk, then `merge_files` reads and merges them;
//! the result is checked to be byte-identical to the manifest built in one piece. Prints one
//! JSON object.
//!
//!     cargo run --release -p shardstream-benches --bin merge-bench -- --shards 1000000 --sources 1000 --parts 64

use anyhow::{ensure, Result};
use clap::Parser;
use shard_index::format::{Compression, ShardFormat, ShardKind};
use shard_index::indexer::Silent;
use shard_index::manifest::{Manifest, PartInfo, RowGroup, ShardEntry};
use shard_index::parts::{self, BuildRecord, PartDetail, SourceListing};
use shard_index::synth::mix;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    shards: u64,
    #[arg(long, default_value_t = 1000)]
    sources: u64,
    #[arg(long, default_value_t = 64)]
    parts: u32,
    /// Row groups per Parquet shard.
    #[arg(long, default_value_t = 4)]
    row_groups: u64,
}

fn entry(i: u64, shards: u64, sources: u64, row_groups: u64) -> ShardEntry {
    let size = 48_000_000 + mix(i) % 32_000_000;
    let rows = 20_000 + mix(i ^ 1) % 10_000;
    let per = rows / row_groups;
    let row_groups = (0..row_groups)
        .map(|k| RowGroup {
            num_rows: if k + 1 == row_groups {
                rows - per * k
            } else {
                per
            },
            offset: 4 + k * (size / row_groups),
            length: size / row_groups - 64,
        })
        .collect();
    ShardEntry {
        // Contiguous blocks per source, as listing a bucket gives them.
        source: (u128::from(i) * u128::from(sources) / u128::from(shards)) as u32,
        path: format!("year=2026/part-{i:08}-{:016x}.parquet", mix(i ^ 7)),
        size,
        etag: Some(format!("\"{:016x}{:016x}\"", mix(i ^ 2), mix(i ^ 3))),
        version: None,
        last_modified_ms: Some(1_790_000_000_000 + (mix(i ^ 4) % 10_000_000) as i64),
        kind: ShardKind::new(ShardFormat::Parquet, Compression::None),
        num_samples: rows,
        row_groups,
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let roots: Vec<String> = (0..args.sources)
        .map(|s| format!("s3://dataset-bucket-{s:04}/train"))
        .collect();
    let entries: Vec<ShardEntry> = (0..args.shards)
        .map(|i| entry(i, args.shards, args.sources, args.row_groups))
        .collect();
    let schema = shard_index::synth::parquet_schema(&Default::default());
    let tmp = tempfile::tempdir()?;

    // One piece, with S sources and (for comparison) with one.
    let t = Instant::now();
    let single = Manifest::from_entries(roots.clone(), schema.clone(), entries.clone(), None)?;
    let bytes = single.to_parquet_bytes()?;
    let single_s = t.elapsed().as_secs_f64();
    let one_source: Vec<ShardEntry> = entries
        .iter()
        .map(|e| ShardEntry {
            source: 0,
            path: format!("dataset-bucket-{:04}/{}", e.source, e.path),
            ..e.clone()
        })
        .collect();
    let one = Manifest::from_entries(
        vec!["s3://one-bucket/train".into()],
        schema.clone(),
        one_source,
        None,
    )?
    .to_parquet_bytes()?;

    // N parts, split by the --part hash, written as files.
    let t = Instant::now();
    let mut buckets: Vec<Vec<ShardEntry>> = vec![Vec::new(); args.parts as usize];
    for e in entries {
        let url = format!("{}/{}", roots[e.source as usize], e.path);
        let owner = (0..args.parts)
            .find(|&index| {
                PartInfo {
                    index,
                    count: args.parts,
                }
                .selects(&url)
            })
            .expect("one part owns each object");
        buckets[owner as usize].push(e);
    }
    let listings = vec![SourceListing::default(); roots.len()];
    let mut paths = Vec::new();
    for (index, part_entries) in buckets.into_iter().enumerate() {
        let part = PartInfo {
            index: index as u32,
            count: args.parts,
        };
        let rows = part_entries.len() as u64;
        let mut m =
            Manifest::from_entries(roots.clone(), schema.clone(), part_entries, Some(part))?;
        m.meta.part_detail = Some(Box::new(PartDetail {
            options: BuildRecord {
                format: "Auto".into(),
                include: vec![],
                exclude: vec![],
                skip_bad: false,
            },
            listings: listings.clone(),
            bad_sources: vec![],
            bad_objects: vec![],
            schemas: vec![schema.clone()],
            schema_runs: if rows > 0 { vec![(0, rows)] } else { vec![] },
            objects_listed: args.shards,
            listing: Default::default(),
            objects_ignored: 0,
            bytes_read: 0,
        }));
        let path = tmp.path().join(format!("part-{index:03}.parquet"));
        m.write_to(path.to_str().unwrap(), &Default::default())?;
        paths.push(path.to_str().unwrap().to_string());
    }
    let split_s = t.elapsed().as_secs_f64();
    let part_bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();

    let rt = tokio::runtime::Runtime::new()?;
    let t = Instant::now();
    let (merged, summary) =
        rt.block_on(parts::merge_files(&paths, &Default::default(), &Silent))?;
    let merge_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let merged_bytes = merged.to_parquet_bytes()?;
    let encode_s = t.elapsed().as_secs_f64();
    ensure!(
        merged_bytes == bytes,
        "merged manifest differs from the single build"
    );

    let out = serde_json::json!({
        "shards": args.shards,
        "sources": args.sources,
        "parts": args.parts,
        "manifest_bytes": bytes.len(),
        "bytes_per_shard": bytes.len() as f64 / args.shards as f64,
        "one_source_bytes_per_shard": one.len() as f64 / args.shards as f64,
        "build_and_encode_s": single_s,
        "split_and_write_parts_s": split_s,
        "part_bytes_total": part_bytes,
        "merge_read_s": summary.read_seconds,
        "merge_s": summary.merge_seconds,
        "merge_total_s": merge_s,
        "encode_merged_s": encode_s,
        "merge_plus_encode_s": merge_s + encode_s,
        "byte_identical": true,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
