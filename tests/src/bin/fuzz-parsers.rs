//! A stable-Rust mutation fuzzer for the parsers in `shardstream_tests::parsers`, for machines
//! without a nightly toolchain and `cargo fuzz` (the `fuzz/` targets run the same functions
//! under libFuzzer where those exist).
//!
//! Starting from the seed corpus (`tests/corpus/<parser>/`, plus valid files generated here),
//! it applies random byte-level mutations (bit flips, byte sets, deletions, duplications,
//! splices, truncations, interesting integers) and feeds every input to the parser on a
//! worker thread. A panic, or an input taking longer than `--hang-ms`, is a failure: the input
//! is written to `--crashes` and the run exits 1. Deterministic for a given `--seed`.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use shardstream_tests::parsers::{Outcome, PARSERS};

#[derive(Parser)]
#[command(about = "Mutation-fuzz shardstream's parsers on stable Rust")]
struct Args {
    /// Parsers to fuzz (default: all of manifest, tar, jsonl, resume_state).
    #[arg(long)]
    parser: Vec<String>,
    /// Seconds per parser.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seed corpus root (one directory per parser).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus"))]
    corpus: PathBuf,
    /// Where failing inputs are written.
    #[arg(long, default_value = "target/fuzz-crashes")]
    crashes: PathBuf,
    /// An input running longer than this is a hang.
    #[arg(long, default_value_t = 5_000)]
    hang_ms: u64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = shard_index::synth::mix(self.0);
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Panics are findings, reported below; keep the default hook from printing each one twice.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    for (name, parse) in PARSERS {
        if !args.parser.is_empty() && !args.parser.iter().any(|p| p == name) {
            continue;
        }
        let seeds = seeds(&args.corpus.join(name), name);
        let r = fuzz(name, parse, &seeds, &args)?;
        println!(
            "{{\"parser\":\"{name}\",\"inputs\":{},\"accepted\":{},\"rejected\":{},\"seconds\":{:.1},\"failures\":{}}}",
            r.inputs, r.accepted, r.rejected, r.seconds, r.failures
        );
        failed |= r.failures > 0;
    }
    if failed {
        bail!(
            "parsers panicked or hung; inputs in {}",
            args.crashes.display()
        );
    }
    Ok(())
}

struct Run {
    inputs: u64,
    accepted: u64,
    rejected: u64,
    failures: u64,
    seconds: f64,
}

fn seeds(dir: &Path, name: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    out.extend(valid_inputs(name));
    if out.is_empty() {
        out.push(Vec::new());
    }
    out
}

/// Well-formed inputs, so mutations start from deep inside the formats.
fn valid_inputs(name: &str) -> Vec<Vec<u8>> {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(_) => return Vec::new(),
    };
    let kind = match name {
        "tar" => "tar",
        "jsonl" => "jsonl",
        "manifest" => "jsonl",
        _ => {
            return (0..3)
                .map(|k| shardstream_tests::parsers::sample_resume_state(k).into_bytes())
                .collect()
        }
    };
    let cfg = shardstream_tests::reliability::synth_config(kind, 12, 2);
    let data = dir.path().join("d");
    if shard_index::synth::generate(&data, &cfg).is_err() {
        return Vec::new();
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    if name == "manifest" {
        let opts = shard_index::IndexOptions::default();
        let built = shard_index::runtime::block_on(shard_index::build(
            &[data.to_string_lossy().into_owned()],
            &opts,
            &shard_index::Silent,
        ));
        let out = dir.path().join("m.parquet");
        if let Ok(Ok((m, _))) = built {
            if m.write_to(&out.to_string_lossy(), &Default::default())
                .is_ok()
            {
                return std::fs::read(&out).into_iter().collect();
            }
        }
        return Vec::new();
    }
    files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0u8, 0xff, 0x7f, 0x80, b'0', b'\n', b'{', b'"'][rng.below(8)];
            }
            2 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                v.drain(a..b);
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(512)).min(len);
                let chunk = v[a..b].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = (a + 1 + rng.below(1024)).min(other.len());
                    let at = rng.below(len + 1);
                    v.splice(at..at, other[a..b].iter().copied());
                }
            }
            5 if len > 0 => v.truncate(rng.below(len)),
            6 if len >= 8 => {
                let i = rng.below(len - 7);
                let vals: [u64; 6] = [0, 1, u64::MAX, u64::from(u32::MAX), 1 << 40, 511];
                let x = vals[rng.below(vals.len())];
                v[i..i + 8].copy_from_slice(&x.to_le_bytes());
            }
            _ if len > 0 => {
                // Overwrite a run with one digit (octal size fields, JSON numbers).
                let a = rng.below(len);
                let b = (a + 1 + rng.below(12)).min(len);
                let d = b'0' + rng.below(10) as u8;
                v[a..b].iter_mut().for_each(|x| *x = d);
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v
}

fn fuzz(name: &str, parse: fn(&[u8]) -> Outcome, seeds: &[Vec<u8>], args: &Args) -> Result<Run> {
    let mut rng = Rng(args.seed ^ shard_index::synth::mix(name.len() as u64));
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut run = Run {
        inputs: 0,
        accepted: 0,
        rejected: 0,
        failures: 0,
        seconds: 0.0,
    };
    // One long-lived worker thread per parser; replaced after a hang (it is left behind).
    let (mut tx, mut rx) = spawn_worker(parse);
    let mut first = seeds.iter().cloned();
    while Instant::now() < deadline {
        let input = first.next().unwrap_or_else(|| mutate(&mut rng, seeds));
        tx.send(input.clone())?;
        match rx.recv_timeout(Duration::from_millis(args.hang_ms)) {
            Ok(Ok(true)) => run.accepted += 1,
            Ok(Ok(false)) => run.rejected += 1,
            Ok(Err(panic)) => {
                run.failures += 1;
                save(&args.crashes, name, "panic", &input, &panic);
                (tx, rx) = spawn_worker(parse);
            }
            Err(_) => {
                run.failures += 1;
                save(&args.crashes, name, "hang", &input, "no answer in time");
                (tx, rx) = spawn_worker(parse);
            }
        }
        run.inputs += 1;
    }
    run.seconds = started.elapsed().as_secs_f64();
    Ok(run)
}

type Verdict = std::result::Result<bool, String>;

fn spawn_worker(parse: fn(&[u8]) -> Outcome) -> (mpsc::Sender<Vec<u8>>, mpsc::Receiver<Verdict>) {
    let (tx, in_rx) = mpsc::channel::<Vec<u8>>();
    let (out_tx, rx) = mpsc::channel::<Verdict>();
    std::thread::spawn(move || {
        for input in in_rx {
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| parse(&input)));
            let v = match r {
                Ok(o) => Ok(!o.is_rejected()),
                Err(p) => Err(p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into())),
            };
            let fatal = v.is_err();
            if out_tx.send(v).is_err() || fatal {
                return;
            }
        }
    });
    (tx, rx)
}

fn save(dir: &Path, parser: &str, what: &str, input: &[u8], why: &str) {
    let _ = std::fs::create_dir_all(dir);
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let path = dir.join(format!("{parser}-{what}-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    eprintln!(
        "{parser}: {what} ({why}); input saved to {}",
        path.display()
    );
}
