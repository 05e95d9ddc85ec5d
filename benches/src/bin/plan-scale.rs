//! Planner scale: plan one epoch of a petabyte-sized dataset and time the first batch.
//!
//! Fabricates per-shard sample counts (no manifest I/O) for N shards (default 16M shards of
//! ~625 samples: 10^10 samples), builds the epoch plan for a 64-node x 8-rank job and fetches
//! rank 0's first batch. Prints one JSON object with the build time, the time to the first
//! batch, the plan's own heap estimate and the process's peak RSS.
//!
//!     cargo run --release -p shardstream-benches --bin plan-scale

use anyhow::Result;
use clap::Parser;
use shard_index::plan::{EpochPlan, Mix, PlanOptions, StreamSpec, Topology, Window};
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 16_000_000)]
    shards: u64,
    #[arg(long, default_value_t = 625)]
    samples_per_shard: u64,
    #[arg(long, default_value_t = 64)]
    nodes: u32,
    #[arg(long, default_value_t = 8)]
    ranks_per_node: u32,
    #[arg(long, default_value_t = 32)]
    batch_size: u64,
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<()> {
    let a = Args::parse();
    let rss_before = peak_rss_mb();
    let t = Instant::now();
    let spec = StreamSpec {
        name: "synthetic".into(),
        fingerprint: "bench".into(),
        shard_samples: vec![a.samples_per_shard; a.shards as usize],
        shard_bytes: vec![64 << 20; a.shards as usize],
        mix: Mix::Repeat(1.0),
    };
    let inputs_s = t.elapsed().as_secs_f64();
    let topology = Topology::new(a.nodes, a.ranks_per_node, 1);
    let options = PlanOptions {
        seed: 1,
        shuffle: true,
        window: Window::Samples(1 << 20),
        warmup: shard_index::plan::DEFAULT_WARMUP,
        global_batch_size: a.batch_size * topology.world(),
        drop_last: false,
        canonical_nodes: None,
        epoch_size: None,
    };
    let t = Instant::now();
    let plan = EpochPlan::with_topology(vec![spec], options, 0, topology)?;
    let build_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let rank = plan.rank(topology, 0)?;
    let first = rank.batch(0)?;
    let first_batch_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let last = rank.batch(rank.num_batches() - 1)?;
    let last_batch_s = t.elapsed().as_secs_f64();
    let out = serde_json::json!({
        "shards": a.shards,
        "samples": plan.num_samples(),
        "world": topology.world(),
        "batches_per_rank": rank.num_batches(),
        "inputs_s": inputs_s,
        "plan_build_s": build_s,
        "first_batch_s": first_batch_s,
        "last_batch_s": last_batch_s,
        "time_to_first_batch_s": build_s + first_batch_s,
        "plan_heap_mb": plan.heap_bytes() as f64 / (1 << 20) as f64,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss_before,
        "first_batch_len": first.samples.len(),
        "last_batch_len": last.samples.len(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
