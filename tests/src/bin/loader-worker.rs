//! One loader in its own process, for tests that kill processes or run many at once.
//!
//! Reads epochs of a manifest and prints one JSON line per event on stdout (see
//! `shardstream_tests::reliability::WorkerEvent`): each batch's sample ids (flushed *before* the
//! state that counts it is saved), RSS samples, and a final `done` with the loader's stats. With
//! `--state-file` it resumes from that file when it exists and rewrites it atomically (a temp
//! file, then a rename) after every batch, like a training loop that checkpoints each step; so a
//! kill -9 at any point leaves the state of some batch boundary. Errors print an `error` event and exit 2.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use shard_index::plan::ResumeState;
use shard_index::synth::SynthConfig;
use shardstream_loader::config::Window;
use shardstream_loader::{Loader, LoaderConfig};
use shardstream_tests::reliability::{check_batch, rss_kib, SavedState, WorkerEvent};

#[derive(Parser)]
#[command(about = "Runs a shardstream loader and reports what it delivered, as JSON lines")]
struct Args {
    /// Manifest path or URL.
    manifest: String,
    #[arg(long, default_value_t = 16)]
    batch_size: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 64)]
    window_samples: u64,
    #[arg(long, default_value_t = 256 << 10)]
    prefetch_bytes: u64,
    #[arg(long, default_value_t = 4)]
    io_concurrency: usize,
    /// object_store option KEY=VALUE (repeatable).
    #[arg(long = "storage-option", value_parser = parse_kv)]
    storage_options: Vec<(String, String)>,
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    #[arg(long)]
    cache_limit: Option<u64>,
    /// Resume from this file if it exists; save the state there after every batch.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Sleep this long after each batch (a slow consumer).
    #[arg(long, default_value_t = 0)]
    slow_ms: u64,
    #[arg(long, default_value_t = 1)]
    epochs: u64,
    /// Print the RSS every N batches.
    #[arg(long, default_value_t = 0)]
    rss_every: u64,
    /// Check every sample against the generator: TOKENS_MIN:TOKENS_MAX:SEED.
    #[arg(long)]
    verify: Option<String>,
    #[arg(long)]
    no_hedge: bool,
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: u64,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn emit(e: &WorkerEvent) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, e);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        emit(&WorkerEvent::Error {
            message: format!("{e:#}"),
        });
        std::process::exit(2);
    }
}

fn run(args: Args) -> Result<()> {
    let verify = match &args.verify {
        Some(v) => {
            let p: Vec<&str> = v.split(':').collect();
            anyhow::ensure!(p.len() == 3, "--verify TOKENS_MIN:TOKENS_MAX:SEED");
            Some(SynthConfig {
                tokens_min: p[0].parse()?,
                tokens_max: p[1].parse()?,
                seed: p[2].parse()?,
                ..SynthConfig::default()
            })
        }
        None => None,
    };
    let mut config = LoaderConfig::new(args.manifest.clone(), args.batch_size)
        .with_seed(args.seed)
        .with_window(Window::Samples(args.window_samples))
        .with_prefetch_bytes(args.prefetch_bytes)
        .with_io_concurrency(args.io_concurrency)
        .with_io_threads(1)
        .with_decode_threads(1)
        .with_hedge(!args.no_hedge)
        .with_request_timeout(Duration::from_millis(args.request_timeout_ms));
    for (k, v) in &args.storage_options {
        config = config.with_storage_option(k, v);
    }
    if let Some(d) = &args.cache_dir {
        config = config.with_cache_dir(d);
    }
    if let Some(l) = args.cache_limit {
        config = config.with_cache_limit(l);
    }
    let mut saved: Option<SavedState> = None;
    if let Some(path) = &args.state_file {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let s: SavedState = serde_json::from_str(&text)
                    .with_context(|| format!("state file {}", path.display()))?;
                let state = ResumeState::from_json(&s.state.to_string())?;
                config = config.with_resume(state);
                saved = Some(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut loader = Loader::new(config)?;
    let first_epoch = loader.epoch();
    let mut consumed = saved.as_ref().map_or(0, |s| s.batches);
    let mut total = 0u64;
    for epoch in first_epoch..args.epochs.max(first_epoch + 1) {
        loader.set_epoch(epoch)?;
        if epoch != first_epoch {
            consumed = 0;
        }
        while let Some(batch) = loader.next_batch() {
            let batch = batch?;
            if let Some(cfg) = &verify {
                check_batch(&batch, cfg).map_err(anyhow::Error::msg)?;
            }
            emit(&WorkerEvent::Batch {
                epoch,
                index: batch.index,
                ids: batch.samples.iter().map(|s| s.global).collect(),
            });
            drop(batch);
            consumed += 1;
            total += 1;
            if let Some(path) = &args.state_file {
                let state = loader.state()?;
                let s = SavedState {
                    epoch,
                    batches: consumed,
                    state: serde_json::from_str(&state.to_json()?)?,
                };
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, serde_json::to_vec(&s)?)?;
                std::fs::rename(&tmp, path)?;
            }
            if args.rss_every > 0 && total.is_multiple_of(args.rss_every) {
                emit(&WorkerEvent::Rss {
                    batch: total,
                    rss_kib: rss_kib(),
                });
            }
            if args.slow_ms > 0 {
                std::thread::sleep(Duration::from_millis(args.slow_ms));
            }
        }
    }
    emit(&WorkerEvent::Done {
        batches: total,
        stats: serde_json::to_value(loader.stats())?,
    });
    Ok(())
}
