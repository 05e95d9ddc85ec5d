//! Manifest scale: build, write and read a synthetic manifest of N shards (default 1M).
//!
//! The shards are fabricated (realistic paths, etags, sizes and row groups) so the measurement
//! isolates the manifest itself from any storage. Prints one JSON object: bytes per shard,
//! write and read time, and the in-memory size after reading.
//!
//!     cargo run --release -p shardstream-benches --bin manifest-scale -- --shards 1000000

use anyhow::Result;
use clap::Parser;
use shard_index::format::{Compression, ShardFormat, ShardKind};
use shard_index::manifest::{Manifest, RowGroup, ShardEntry};
use shard_index::synth::mix;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    shards: u64,
    /// Row groups per Parquet shard.
    #[arg(long, default_value_t = 4)]
    row_groups: u64,
    /// Where to write the manifest (default: a temporary file).
    #[arg(long)]
    output: Option<std::path::PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let t = Instant::now();
    let entries: Vec<ShardEntry> = (0..args.shards)
        .map(|i| {
            let size = 48_000_000 + mix(i) % 32_000_000;
            let rows = 20_000 + mix(i ^ 1) % 10_000;
            let per = rows / args.row_groups;
            let row_groups = (0..args.row_groups)
                .map(|k| RowGroup {
                    num_rows: if k + 1 == args.row_groups {
                        rows - per * k
                    } else {
                        per
                    },
                    offset: 4 + k * (size / args.row_groups),
                    length: size / args.row_groups - 64,
                })
                .collect();
            ShardEntry {
                source: 0,
                path: format!("train/year=2026/part-{i:08}-{:016x}.parquet", mix(i ^ 7)),
                size,
                etag: Some(format!("\"{:016x}{:016x}\"", mix(i ^ 2), mix(i ^ 3))),
                version: None,
                last_modified_ms: Some(1_790_000_000_000 + (mix(i ^ 4) % 10_000_000) as i64),
                kind: ShardKind::new(ShardFormat::Parquet, Compression::None),
                num_samples: rows,
                row_groups,
            }
        })
        .collect();
    let fabricate_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let schema = shard_index::synth::parquet_schema(&Default::default());
    let manifest =
        Manifest::from_entries(vec!["s3://bucket/dataset".into()], schema, entries, None)?;
    let build_s = t.elapsed().as_secs_f64();

    let tmp = tempfile::tempdir()?;
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| tmp.path().join("manifest.parquet"));
    let t = Instant::now();
    manifest.write_to(path.to_str().unwrap(), &Default::default())?;
    let write_s = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path)?.len();
    drop(manifest);

    let t = Instant::now();
    let read = Manifest::read(path.to_str().unwrap(), &Default::default())?;
    let read_s = t.elapsed().as_secs_f64();
    assert_eq!(read.len() as u64, args.shards);
    let t = Instant::now();
    let total: u64 = read.sample_counts().iter().sum();
    let sum_s = t.elapsed().as_secs_f64();

    let out = serde_json::json!({
        "shards": args.shards,
        "row_groups_per_shard": args.row_groups,
        "manifest_bytes": bytes,
        "bytes_per_shard": bytes as f64 / args.shards as f64,
        "fabricate_s": fabricate_s,
        "build_s": build_s,
        "write_s": write_s,
        "read_s": read_s,
        "sum_samples_s": sum_s,
        "samples": total,
        "projected_16m_shards": {
            "manifest_bytes": bytes as f64 / args.shards as f64 * 16e6,
            "read_s": read_s / args.shards as f64 * 16e6,
        }
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
