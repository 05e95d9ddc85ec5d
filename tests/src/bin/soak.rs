//! The long reliability runs (`scripts/soak`): faults, hedging, crashes, contention and memory,
//! each reported as one JSON object on stdout, then a summary.
//!
//! - `faults`: epochs through the fault proxy with every fault at once (heavy-tailed latency,
//!   503s, resets, truncations, stalls), several seeds; delivered / lost / duplicated vs a
//!   fault-free run.
//! - `hedging`: heavy-tailed latency only, hedging on vs off, alternating runs: batch-delivery
//!   p50/p99 (the time each `next()` waited).
//! - `crash`: kill -9 the `loader-worker` many times at random points, resuming each time.
//! - `contention`: 8 workers sharing one cache dir with a limit that forces eviction.
//! - `memory`: a slow consumer over several epochs; the RSS curve, first half vs second half.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use clap::Parser;
use serde_json::json;
use shardstream_loader::Loader;
use shardstream_tests::fault::{FaultSpec, FaultStats, Pareto};
use shardstream_tests::reliability::{
    contention, crash_loop, deliver, quantile, stream_events, synth_config, S3Dataset, Tally,
    Worker, WorkerEvent,
};

#[derive(Parser)]
#[command(about = "Long reliability runs of shardstream (see scripts/soak)")]
struct Args {
    /// Parts to run (default all): faults, hedging, crash, contention, memory.
    #[arg(long)]
    only: Vec<String>,
    /// Samples of the fault/hedging dataset.
    #[arg(long, default_value_t = 6000)]
    samples: u64,
    /// Fault-run seeds.
    #[arg(long, default_value_t = 3)]
    fault_runs: u64,
    /// Hedging on/off pairs.
    #[arg(long, default_value_t = 3)]
    hedge_runs: u64,
    /// kill -9 iterations.
    #[arg(long, default_value_t = 40)]
    kills: u32,
    /// Epochs of the slow-consumer memory run.
    #[arg(long, default_value_t = 4)]
    memory_epochs: u64,
    /// Scratch directory (default: a temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let want = |p: &str| args.only.is_empty() || args.only.iter().any(|o| o == p);
    let worker_exe = std::env::current_exe()?
        .parent()
        .expect("bin dir")
        .join("loader-worker");
    let mut summary = serde_json::Map::new();
    let t0 = Instant::now();

    if want("faults") || want("hedging") {
        let ds = S3Dataset::create(
            &dir.join("faults"),
            synth_config("parquet", args.samples, 60),
        )?;
        let mut l = Loader::new(ds.config(ds.server.storage_options(), 32))?;
        let base = deliver(&mut l, &ds.synth, Duration::ZERO);
        ensure!(base.error.is_none(), "baseline failed: {:?}", base.error);
        let baseline = base.ids;
        if want("faults") {
            let mut injected = FaultStats::default();
            let mut tally = Tally::default();
            let (mut retries, mut timeouts, mut hedges) = (0, 0, 0);
            for seed in 0..args.fault_runs {
                let spec = FaultSpec {
                    seed,
                    tail: Some(Pareto {
                        scale: Duration::from_millis(2),
                        alpha: 1.3,
                        cap: Duration::from_millis(1500),
                    }),
                    slowdown: 0.05,
                    reset: 0.02,
                    truncate: 0.02,
                    stall: 0.01,
                    ..FaultSpec::none()
                };
                let proxy = ds.proxy(spec)?;
                let config = ds
                    .config(proxy.storage_options(), 32)
                    .with_request_timeout(Duration::from_millis(800));
                let mut l = Loader::new(config)?;
                let d = deliver(&mut l, &ds.synth, Duration::ZERO);
                ensure!(d.error.is_none(), "fault run {seed} failed: {:?}", d.error);
                ensure!(d.corrupt.is_empty(), "corrupt: {:?}", d.corrupt);
                let f = proxy.stats();
                let t = Tally::of(&baseline, &d.ids);
                let line = json!({"part": "faults", "seed": seed, "faults": f, "tally": t,
                    "retries": d.stats.retries, "timeouts": d.stats.timeouts,
                    "throttled": d.stats.throttled, "hedges_fired": d.stats.hedges_fired,
                    "concurrency_limit_min": d.stats.concurrency_limit_min,
                    "seconds": d.elapsed.as_secs_f64()});
                println!("{line}");
                injected.requests += f.requests;
                injected.slowdowns += f.slowdowns;
                injected.resets += f.resets;
                injected.truncations += f.truncations;
                injected.stalls += f.stalls;
                injected.long_delays += f.long_delays;
                tally.expected += t.expected;
                tally.delivered += t.delivered;
                tally.lost += t.lost;
                tally.duplicated += t.duplicated;
                retries += d.stats.retries;
                timeouts += d.stats.timeouts;
                hedges += d.stats.hedges_fired;
            }
            tally.same_order = tally.lost == 0 && tally.duplicated == 0;
            summary.insert(
                "faults".into(),
                json!({"runs": args.fault_runs, "injected": injected,
                    "failures_injected": injected.failures(), "tally": tally,
                    "retries": retries, "timeouts": timeouts, "hedges_fired": hedges}),
            );
        }
        if want("hedging") {
            let spec = FaultSpec {
                seed: 99,
                tail: Some(Pareto {
                    scale: Duration::from_millis(3),
                    alpha: 1.2,
                    cap: Duration::from_millis(2000),
                }),
                ..FaultSpec::none()
            };
            let mut waits = [Vec::new(), Vec::new()];
            let mut fired = 0;
            let mut won = 0;
            for run in 0..args.hedge_runs * 2 {
                let hedge = run % 2 == 0;
                let proxy = ds.proxy(spec.clone().with_seed(99 + run / 2))?;
                let config = ds.config(proxy.storage_options(), 32).with_hedge(hedge);
                let mut l = Loader::new(config)?;
                let d = deliver(&mut l, &ds.synth, Duration::ZERO);
                ensure!(d.error.is_none(), "hedging run failed: {:?}", d.error);
                ensure!(
                    Tally::of(&baseline, &d.ids).perfect(),
                    "hedging run lost samples"
                );
                if hedge {
                    fired += d.stats.hedges_fired;
                    won += d.stats.hedges_won;
                }
                println!(
                    "{}",
                    json!({"part": "hedging", "hedge": hedge, "seed": 99 + run / 2,
                        "p50_ms": ms(quantile(&d.waits, 0.5)), "p99_ms": ms(quantile(&d.waits, 0.99)),
                        "seconds": d.elapsed.as_secs_f64(), "requests": d.stats.requests,
                        "hedges_fired": d.stats.hedges_fired, "hedges_won": d.stats.hedges_won})
                );
                waits[usize::from(!hedge)].extend(d.waits);
            }
            summary.insert(
                "hedging".into(),
                json!({"latency": "pareto scale 3 ms, alpha 1.2, cap 2 s, per request",
                    "batches_per_side": waits[0].len(),
                    "with": {"p50_ms": ms(quantile(&waits[0], 0.5)), "p99_ms": ms(quantile(&waits[0], 0.99))},
                    "without": {"p50_ms": ms(quantile(&waits[1], 0.5)), "p99_ms": ms(quantile(&waits[1], 0.99))},
                    "hedges_fired": fired, "hedges_won": won}),
            );
        }
    }

    if want("crash") || want("contention") || want("memory") {
        let ds = S3Dataset::create(&dir.join("procs"), synth_config("tar", 1200, 80))?;
        let proxy = ds.proxy(FaultSpec {
            latency: Duration::from_millis(4),
            ..FaultSpec::none()
        })?;
        let mut l = Loader::new(ds.config(ds.server.storage_options(), 12))?;
        let baseline = deliver(&mut l, &ds.synth, Duration::ZERO).ids;
        let total: u64 = ds.manifest.sizes().iter().sum();
        let base_worker = Worker::for_dataset(&worker_exe, &ds, proxy.storage_options(), 12);

        if want("crash") {
            let mut w = base_worker.clone();
            w.prefetch_bytes = 64 << 10;
            w.cache_dir = Some(dir.join("crash-cache"));
            w.cache_limit = Some((total / 2).max(160 << 10));
            w.state_file = Some(dir.join("crash-state.json"));
            let span = time_run(&w, &dir.join("crash-probe"))?;
            let mut kills = 0;
            let mut mid = 0;
            let mut repaired = 0;
            let mut tally = Tally::default();
            let mut rounds = 0;
            // Several epochs' worth of kills: each crash_loop covers one epoch.
            let per_round = 8.min(args.kills.max(1));
            while kills < args.kills {
                let _ = std::fs::remove_file(dir.join("crash-state.json"));
                let r = crash_loop(&w, &baseline, per_round, span, 1000 + rounds)?;
                println!("{}", json!({"part": "crash", "round": rounds, "report": r}));
                ensure!(
                    r.tally.perfect(),
                    "crash round {rounds} lost or repeated samples: {r:?}"
                );
                kills += r.kills.max(1);
                mid += r.kills_mid_download;
                repaired += r.leftovers_repaired;
                tally.expected += r.tally.expected;
                tally.delivered += r.tally.delivered;
                tally.lost += r.tally.lost;
                tally.duplicated += r.tally.duplicated;
                rounds += 1;
            }
            tally.same_order = tally.lost == 0 && tally.duplicated == 0;
            summary.insert(
                "crash".into(),
                json!({"kills_survived": kills, "kills_mid_download": mid, "epochs": rounds,
                    "leftover_files_repaired": repaired, "tally": tally}),
            );
        }

        if want("contention") {
            let mut w = base_worker.clone();
            w.prefetch_bytes = 64 << 10;
            w.io_concurrency = 2;
            w.cache_dir = Some(dir.join("contention-roomy"));
            w.cache_limit = Some(total * 2);
            let roomy = contention(&w, 8, &baseline, Duration::from_secs(600))?;
            println!(
                "{}",
                json!({"part": "contention", "limit": "roomy", "report": roomy})
            );
            w.cache_dir = Some(dir.join("contention-tight"));
            w.cache_limit = Some(total * 6 / 10);
            let tight = contention(&w, 8, &baseline, Duration::from_secs(600))?;
            println!(
                "{}",
                json!({"part": "contention", "limit": "tight", "report": tight})
            );
            summary.insert(
                "contention".into(),
                json!({"shards": ds.manifest.len(), "roomy": roomy, "tight": tight}),
            );
        }

        if want("memory") {
            let mut w = base_worker.clone();
            w.slow_ms = 15;
            w.epochs = args.memory_epochs;
            w.rss_every = 10;
            w.cache_dir = Some(dir.join("memory-cache"));
            let mut child = w.spawn()?;
            let mut curve: Vec<(u64, u64)> = Vec::new();
            let mut done = false;
            stream_events(&mut child, |e| match e {
                WorkerEvent::Rss { batch, rss_kib } => curve.push((batch, rss_kib)),
                WorkerEvent::Done { .. } => done = true,
                _ => {}
            });
            let st = child.wait()?;
            ensure!(done && st.success(), "memory run failed ({st})");
            let half = curve.len() / 2;
            let peak = |s: &[(u64, u64)]| s.iter().map(|p| p.1).max().unwrap_or(0);
            let (first, second) = (peak(&curve[..half]), peak(&curve[half..]));
            println!(
                "{}",
                json!({"part": "memory", "curve_batch_rss_kib": curve})
            );
            summary.insert(
                "memory".into(),
                json!({"epochs": args.memory_epochs, "samples": curve.len(),
                    "first_half_peak_kib": first, "second_half_peak_kib": second,
                    "growth_pct": 100.0 * (second as f64 - first as f64) / first.max(1) as f64,
                    "curve_every_10_batches_kib": curve.iter().map(|p| p.1).collect::<Vec<_>>()}),
            );
        }
    }
    summary.insert("seconds".into(), json!(t0.elapsed().as_secs_f64()));
    println!("{}", json!({"summary": summary}));
    Ok(())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// How long one uninterrupted worker run takes (with its own state and cache).
fn time_run(w: &Worker, scratch: &Path) -> Result<Duration> {
    let mut probe = w.clone();
    std::fs::create_dir_all(scratch)?;
    probe.state_file = Some(scratch.join("state.json"));
    probe.cache_dir = Some(scratch.join("cache"));
    let t = Instant::now();
    let (st, _, err) =
        shardstream_tests::reliability::wait_output(probe.spawn()?, Duration::from_secs(300))?;
    ensure!(st.success(), "probe run failed: {err}");
    Ok(t.elapsed())
}
