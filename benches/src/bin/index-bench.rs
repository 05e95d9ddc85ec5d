//! Indexing throughput from the S3 loopback server.
//!
//! Generates N small Parquet shards, uploads them to an in-process s3s-fs server (through S3
//! PUTs, so the server stores etags), then indexes the prefix at each requested concurrency
//! and prints one JSON object: shards/s and footer bytes read per shard for each.
//!
//!     cargo run --release -p shardstream-benches --bin index-bench -- --shards 10000

use anyhow::Result;
use clap::Parser;
use shard_index::indexer::{self, IndexOptions, Silent};
use shard_index::storage::Location;
use shard_index::synth::{self, SynthConfig};
use shardstream_tests::s3::{upload_dir, S3Server, ServerConfig};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    shards: u32,
    #[arg(long, default_value_t = 20)]
    samples_per_shard: u64,
    /// Binary payload per sample: makes shards larger than the footer read (64 KiB).
    #[arg(long, default_value_t = 8192)]
    blob_bytes: u32,
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Per-request latency injected by the server, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let local = tmp.path().join("dataset");
    let cfg = SynthConfig {
        samples: args.samples_per_shard * u64::from(args.shards),
        shards: args.shards,
        blob_bytes: args.blob_bytes,
        ..SynthConfig::default()
    };
    let t = Instant::now();
    synth::generate(&local, &cfg)?;
    eprintln!(
        "generated {} shards in {:.1}s",
        args.shards,
        t.elapsed().as_secs_f64()
    );

    let server = S3Server::start_with(
        &tmp.path().join("s3"),
        ServerConfig {
            latency: Duration::from_millis(args.latency_ms),
            port: 0,
        },
    )?;
    server.create_bucket("bench")?;
    let options = server.storage_options();
    let rt = tokio::runtime::Runtime::new()?;
    let loc = Location::open("s3://bench", &options)?;
    let t = Instant::now();
    rt.block_on(upload_dir(loc.store.as_ref(), &local, "data"))?;
    eprintln!("uploaded in {:.1}s", t.elapsed().as_secs_f64());

    let mut rows = Vec::new();
    for &c in &args.concurrency {
        let opts = IndexOptions {
            concurrency: c,
            storage_options: options.clone(),
            ..IndexOptions::default()
        };
        let (manifest, summary) = rt.block_on(indexer::build(
            &["s3://bench/data".to_string()],
            &opts,
            &Silent,
        ))?;
        assert_eq!(manifest.len() as u32, args.shards);
        eprintln!("concurrency {c}: {:.0} shards/s", summary.shards_per_s);
        rows.push(serde_json::json!({
            "concurrency": c,
            "seconds": summary.seconds,
            "shards_per_s": summary.shards_per_s,
            "footer_bytes_per_shard": summary.bytes_read as f64 / summary.shards as f64,
            "shard_bytes_mean": summary.bytes as f64 / summary.shards as f64,
        }));
    }
    let out = serde_json::json!({
        "server": "s3s-fs on 127.0.0.1 (in process)",
        "latency_ms": args.latency_ms,
        "shards": args.shards,
        "runs": rows,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
