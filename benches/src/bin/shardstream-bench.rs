//! `shardstream-bench read MANIFEST`: one epoch through the loader, measured against the bare
//! read limit of the same source in the same run.
//!
//! Reports (with `--json`, one JSON object): `samples_per_s`, `mb_per_s` (payload bytes
//! delivered in batches), `ttfb_s` (time to first batch, loader construction included),
//! `cpu_s_per_gb` (user+system CPU of the whole process per GB delivered), `peak_rss_mb`,
//! `bare_read_mb_per_s` (every shard of the manifest read whole, sequentially, from the same
//! source: shard-file bytes) and `ratio_to_bare_read` = `mb_per_s / bare_read_mb_per_s`. On
//! PLAIN-encoded, uncompressed Parquet the two byte counts are comparable.
//!
//! `--step-us N` makes the consumer a training step of N µs per batch (then the loader is not
//! the bottleneck; watch `peak_rss_mb` and `stats.pool`). `--pin-memory` picks the batch
//! memory, as the loader's option does.
//!
//! `--latency-ms N` (or `--via-s3`) serves the manifest's shards from the in-process s3s-fs
//! server on loopback with N ms added before every request: the shards are uploaded, indexed
//! over S3, and both the bare read and the loader then read through S3.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use shard_index::indexer::{self, IndexOptions, Silent};
use shard_index::manifest::Manifest;
use shard_index::plan::Window;
use shard_index::storage::{Location, StorageOptions};
use shardstream_benches::gather::GatherOptions;
use shardstream_loader::config::DEFAULT_WINDOW;
use shardstream_loader::{Batch, BinaryMode, Column, Loader, LoaderConfig, PinMemory};
use shardstream_tests::s3::{upload_dir, S3Server, ServerConfig};
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Epochs shorter than this (seconds) get a note that their throughput figures are start-up.
const SHORTEST_MEASURED_EPOCH_S: f64 = 1.0;

#[derive(Parser)]
#[command(
    name = "shardstream-bench",
    about = "Measure the loader against the bare read limit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read one epoch (shuffle on) and report throughput.
    Read(ReadArgs),
    /// The shuffled-copy ceiling: copy every sample of some files into batches in a shuffled
    /// order, with nothing else a loader does (see `shardstream_benches::gather`).
    Gather(GatherArgs),
}

#[derive(clap::Args)]
struct GatherArgs {
    /// The files (mapped whole; every `--sample-bytes` of each is one sample).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..))]
    sample_bytes: u32,
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Copying threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// Samples are shuffled within windows of this many bytes (default: the loader's window).
    #[arg(long)]
    window_bytes: Option<u64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ReadArgs {
    manifest: String,
    #[arg(long, default_value_t = 256)]
    batch_size: u64,
    /// Node-local cache directory (default: a temporary one).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Stream through memory only.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
    /// Serve the shards from the S3 loopback server with this latency per request.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Serve through the S3 loopback server (implied by --latency-ms).
    #[arg(long)]
    via_s3: bool,
    /// Only these columns.
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    #[arg(long)]
    prefetch_bytes: Option<u64>,
    /// Units fetched at once; GETs in flight are capped at twice this (default: the loader's).
    #[arg(long)]
    io_concurrency: Option<usize>,
    /// Reads at least twice this long go out as several concurrent ranged GETs of at least this
    /// size (default: the loader's).
    #[arg(long)]
    range_split_bytes: Option<u64>,
    /// Never send a duplicate of a slow GET (the loader's `hedge = false`).
    #[arg(long)]
    no_hedge: bool,
    /// Read every answered body at once (the loader's `adaptive_transfers = false`).
    #[arg(long)]
    no_adaptive_transfers: bool,
    #[arg(long = "storage-option", value_name = "KEY=VALUE", value_parser = parse_kv)]
    storage_options: Vec<(String, String)>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Decode PLAIN Parquet numbers with arrow-rs's reader too (to measure the fast path).
    #[arg(long)]
    no_fast_path: bool,
    /// Map local files and cache entries without asking for huge pages
    /// (`LoaderConfig::huge_pages`).
    #[arg(long)]
    no_huge_pages: bool,
    /// Threads gathering batches (default: one per core, at most 4).
    #[arg(long)]
    collate_threads: Option<usize>,
    /// Warm-up windows of the plan (default: the loader's; 0 = off).
    #[arg(long)]
    warmup: Option<u32>,
    /// A training step's time per batch, in microseconds: the consumer sleeps that long after
    /// each batch, to measure the loader behind a consumer slower than itself (memory held,
    /// pool allocations).
    #[arg(long, default_value_t = 0)]
    step_us: u64,
    /// Page-locked batch memory: auto (pinned when a CUDA driver works), always or never.
    #[arg(long, value_enum, default_value_t = Pin::Auto)]
    pin_memory: Pin,
    /// Layout of binary and string columns: bytes (one Arrow array per batch), padded or ragged
    /// (uint8 tensors in pooled memory, what the Python peers bench asks for).
    #[arg(long, value_enum, default_value_t = Binary::Bytes)]
    binary_mode: Binary,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Pin {
    Auto,
    Always,
    Never,
}

impl From<Pin> for PinMemory {
    fn from(p: Pin) -> PinMemory {
        match p {
            Pin::Auto => PinMemory::Auto,
            Pin::Always => PinMemory::Always,
            Pin::Never => PinMemory::Never,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Binary {
    Bytes,
    Padded,
    Ragged,
}

impl From<Binary> for BinaryMode {
    fn from(b: Binary) -> BinaryMode {
        match b {
            Binary::Bytes => BinaryMode::Bytes,
            Binary::Padded => BinaryMode::Padded,
            Binary::Ragged => BinaryMode::Ragged,
        }
    }
}

fn parse_kv(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Read(a) => read(a),
        Command::Gather(a) => gather(a),
    }
}

fn gather(a: GatherArgs) -> Result<()> {
    let threads = a.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |t| t as usize,
    );
    let cpu = cpu_seconds();
    let window_bytes = a.window_bytes.unwrap_or(match DEFAULT_WINDOW {
        Window::Bytes(b) => b,
        Window::Samples(n) => n.saturating_mul(u64::from(a.sample_bytes)),
    });
    let options = GatherOptions {
        sample_bytes: a.sample_bytes as usize,
        batch_samples: a.batch_size as usize,
        window_bytes,
        threads,
        seed: a.seed,
    };
    let g = shardstream_benches::gather::shuffled_copy(&a.files, &options)?;
    let cpu_s_per_gb = (cpu_seconds() - cpu) / (g.bytes as f64 / 1e9);
    if a.json {
        let mut v = serde_json::to_value(&g)?;
        v["cpu_s_per_gb"] = cpu_s_per_gb.into();
        println!("{v}");
    } else {
        println!(
            "shuffled copy: {:.0} MB/s ({} threads, {} B samples, {:.2} GB, {:.3} s, {cpu_s_per_gb:.3} CPU-s/GB incl. set-up)",
            g.mb_per_s,
            g.threads,
            g.sample_bytes,
            g.bytes as f64 / 1e9,
            g.wall_s
        );
    }
    Ok(())
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Payload bytes of a batch: tensor values and Arrow value buffers (not lengths/offsets/masks).
fn payload_bytes(batch: &Batch) -> u64 {
    batch
        .columns
        .iter()
        .map(|(_, c)| match c {
            Column::Tensor(t) => t.byte_len() as u64,
            Column::Padded { values, lengths } => {
                // Count the real elements, not the zero padding.
                let width = values.shape().get(1).copied().unwrap_or(1).max(1) as u64;
                let elem = values.byte_len() as u64 / (values.shape()[0].max(1) as u64 * width);
                lengths
                    .as_slice::<i64>()
                    .map(|l| l.iter().map(|&n| n as u64 * elem).sum())
                    .unwrap_or(values.byte_len() as u64)
            }
            Column::Ragged { values, .. } => values.byte_len() as u64,
            Column::Arrow(a) => a
                .to_data()
                .buffers()
                .iter()
                .skip(1)
                .map(|b| b.len() as u64)
                .sum::<u64>()
                .max(a.get_buffer_memory_size() as u64 / 2),
        })
        .sum()
}

/// Reads every shard whole, in manifest order, one at a time: the sequential-read limit.
fn bare_read(manifest: &Manifest, options: &StorageOptions) -> Result<(u64, f64)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let locations = manifest
        .meta
        .sources
        .iter()
        .map(|s| Location::open(s, options))
        .collect::<shard_index::Result<Vec<_>>>()?;
    let start = Instant::now();
    let mut total = 0u64;
    // One reused buffer: the limit is the storage (or page cache) and the copy out of it, not
    // the allocator faulting in a fresh buffer per file. Page-aligned: the kernel's copy into
    // a buffer 16 bytes off a cache line (where `vec!` of this size starts, after malloc's
    // header) ran at half the speed here, which would flatter every ratio to this read.
    let mut backing = vec![0u8; (8 << 20) + 4096];
    let aligned = backing.as_ptr().align_offset(4096);
    let buf = &mut backing[aligned..aligned + (8 << 20)];
    for i in 0..manifest.len() {
        let loc = &locations[manifest.source(i) as usize];
        let key = loc.key(manifest.path(i));
        if loc.url.starts_with("file://") {
            let path = format!("/{}", key.as_ref());
            let mut file = std::fs::File::open(&path).with_context(|| path.clone())?;
            loop {
                let n = file.read(buf).with_context(|| path.clone())?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        } else {
            total += rt.block_on(async {
                let mut stream = loc.store.get(&key).await?.into_stream();
                let mut n = 0u64;
                while let Some(chunk) = stream.next().await {
                    n += chunk?.len() as u64;
                }
                anyhow::Ok(n)
            })?;
        }
    }
    Ok((total, start.elapsed().as_secs_f64()))
}

/// Serves the manifest's local shards over S3 and returns the S3 manifest and its options.
fn serve_over_s3(
    manifest: &Manifest,
    latency: Duration,
    tmp: &std::path::Path,
) -> Result<(S3Server, Manifest, StorageOptions)> {
    if manifest.meta.sources.len() != 1 || !manifest.meta.sources[0].starts_with("file://") {
        bail!("--via-s3/--latency-ms need a manifest of one local directory");
    }
    let local = Location::open(&manifest.meta.sources[0], &StorageOptions::new())?;
    let dir = PathBuf::from(format!("/{}", local.prefix.as_ref()));
    // Upload with no latency, then restart the server with it for the measured part.
    let root = tmp.join("s3");
    let options = {
        let server = S3Server::start(&root)?;
        server.create_bucket("bench")?;
        let options = server.storage_options();
        let loc = Location::open("s3://bench", &options)?;
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(upload_dir(loc.store.as_ref(), &dir, "data"))?;
        options
    };
    let server = S3Server::start_with(&root, ServerConfig { latency, port: 0 })?;
    let mut options = options;
    options.insert("aws_endpoint".into(), server.endpoint());
    let index = IndexOptions {
        concurrency: 64,
        storage_options: options.clone(),
        ..IndexOptions::default()
    };
    let (s3_manifest, _) = shard_index::runtime::block_on(indexer::build(
        &["s3://bench/data".to_string()],
        &index,
        &Silent,
    ))??;
    Ok((server, s3_manifest, options))
}

fn read(a: ReadArgs) -> Result<()> {
    let mut options: StorageOptions = a.storage_options.iter().cloned().collect();
    let mut manifest = Manifest::read(&a.manifest, &options)?;
    let tmp = tempfile::tempdir()?;
    let mut _server = None;
    let source = if a.via_s3 || a.latency_ms.is_some() {
        let latency = Duration::from_millis(a.latency_ms.unwrap_or(0));
        let (server, m, o) = serve_over_s3(&manifest, latency, tmp.path())?;
        manifest = m;
        options = o;
        _server = Some(server);
        format!("s3s-fs loopback, {} ms per request", latency.as_millis())
    } else {
        manifest.meta.sources.join(", ")
    };

    let (bare_bytes, bare_s) = bare_read(&manifest, &options)?;

    let mut config = LoaderConfig::from_manifest(manifest.clone(), a.batch_size)
        .with_storage_options(options.clone())
        .with_shuffle(true)
        .with_seed(a.seed)
        .with_pin_memory(a.pin_memory.into())
        .with_default_binary_mode(a.binary_mode.into());
    if !a.columns.is_empty() {
        config = config.with_columns(a.columns.clone());
    }
    if let Some(p) = a.prefetch_bytes {
        config = config.with_prefetch_bytes(p);
    }
    if let Some(n) = a.io_concurrency {
        config = config.with_io_concurrency(n);
    }
    if let Some(b) = a.range_split_bytes {
        config = config.with_range_split_bytes(b);
    }
    config.plain_fast_path = !a.no_fast_path;
    config.huge_pages = !a.no_huge_pages;
    config = config
        .with_hedge(!a.no_hedge)
        .with_adaptive_transfers(!a.no_adaptive_transfers);
    if let Some(n) = a.collate_threads {
        config = config.with_collate_threads(n);
    }
    if let Some(k) = a.warmup {
        config = config.with_warmup(k);
    }
    let cache_dir = tmp.path().join("cache");
    if !a.no_cache {
        config = config.with_cache_dir(a.cache_dir.clone().unwrap_or(cache_dir));
    }
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let config_collate_threads = config.collate_threads;
    let config_io_concurrency = config.io_concurrency;
    let config_range_split_bytes = config.range_split_bytes;
    let mut loader = Loader::new(config)?;
    let mut ttfb = None;
    let mut first_batch_fetched = 0;
    let (mut batches, mut samples, mut bytes) = (0u64, 0u64, 0u64);
    while let Some(batch) = loader.next_batch() {
        let batch = batch?;
        if ttfb.is_none() {
            ttfb = Some(start.elapsed().as_secs_f64());
            let s = loader.stats();
            first_batch_fetched = s.bytes_fetched + s.bytes_from_cache;
        }
        batches += 1;
        samples += batch.padded.iter().filter(|p| !**p).count() as u64;
        bytes += payload_bytes(&batch);
        if a.step_us > 0 {
            std::thread::sleep(Duration::from_micros(a.step_us));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let stats = loader.stats();
    let mb = |b: u64| b as f64 / 1e6;
    let mb_per_s = mb(bytes) / secs;
    let bare_mb_per_s = mb(bare_bytes) / bare_s;
    let out = serde_json::json!({
        "manifest": a.manifest,
        "source": source,
        "cache": if a.no_cache { "none".to_string() } else { "disk (cold)".to_string() },
        "batch_size": a.batch_size,
        "fast_path": !a.no_fast_path,
        "huge_pages": !a.no_huge_pages,
        "binary_mode": a.binary_mode.to_possible_value().map(|v| v.get_name().to_string()),
        "collate_threads": config_collate_threads,
        "io_concurrency": config_io_concurrency,
        "range_split_bytes": config_range_split_bytes,
        "hedge": !a.no_hedge,
        "adaptive_transfers": !a.no_adaptive_transfers,
        "step_us": a.step_us,
        "first_batch_fetched_mb": mb(first_batch_fetched),
        "batches": batches,
        "samples": samples,
        "seconds": secs,
        "samples_per_s": samples as f64 / secs,
        "mb_delivered": mb(bytes),
        "mb_per_s": mb_per_s,
        "ttfb_s": ttfb.unwrap_or(secs),
        "cpu_s": cpu,
        "cpu_s_per_gb": cpu / (bytes as f64 / 1e9).max(1e-9),
        "peak_rss_mb": peak_rss_mb(),
        "bare_read_mb": mb(bare_bytes),
        "bare_read_mb_per_s": bare_mb_per_s,
        "ratio_to_bare_read": mb_per_s / bare_mb_per_s,
        "read_amplification": stats.read_amplification,
        "memory": stats.memory,
        "stats": stats,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} samples in {:.2}s: {:.0} samples/s, {:.1} MB/s (bare read {:.1} MB/s, ratio {:.2}), ttfb {:.3}s, {:.2} CPU-s/GB, peak RSS {:.0} MB",
            samples,
            secs,
            samples as f64 / secs,
            mb_per_s,
            bare_mb_per_s,
            mb_per_s / bare_mb_per_s,
            ttfb.unwrap_or(secs),
            cpu / (bytes as f64 / 1e9).max(1e-9),
            peak_rss_mb()
        );
        if secs < SHORTEST_MEASURED_EPOCH_S {
            // A tiny dataset's epoch is mostly thread start-up and the first fetches, so its
            // MB/s and ratio say nothing about throughput; say so instead of letting them stand.
            println!(
                "(an epoch of {secs:.2}s is mostly start-up, not throughput: measure on a dataset that takes seconds, e.g. scripts/bench-peers)"
            );
        }
    }
    Ok(())
}
