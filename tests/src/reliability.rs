//! Building blocks of the reliability suite, shared by the fast tests (`tests/tests/faults.rs`,
//! `crash.rs`, `contention.rs`) and the long runs of the `soak` binary (`scripts/soak`).
//!
//! - [`S3Dataset`]: a generated dataset uploaded to an s3s-fs server and indexed, with its
//!   manifest in a local file, ready to be read through a [`crate::fault::FaultProxy`].
//! - [`deliver`]: reads an epoch through the loader's public API, checking every sample's
//!   contents against the generator and timing each batch's delivery.
//! - [`Tally`]: a delivered id sequence against the expected one — lost, duplicated, order.
//! - [`Worker`]: the command line of the `loader-worker` binary (one loader in its own process,
//!   for kill -9 and many-process tests) and the parsing of what it prints.
//! - [`crash_loop`]: kill -9 a worker at random points, resume it from its last saved state.
//! - [`contention`]: N workers sharing one cache directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arrow::array::{Array, AsArray};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use shard_index::synth::{self, SynthConfig};
use shard_index::{IndexOptions, Location, Manifest, ShardKind, Silent, StorageOptions};
use shardstream_loader::collate::{Batch, Column, DType};
use shardstream_loader::config::Window;
use shardstream_loader::{Loader, LoaderConfig, LoaderStats};

use crate::fault::{FaultProxy, FaultSpec};
use crate::s3::{upload_dir, S3Server};

/// Bucket the datasets live in.
pub const BUCKET: &str = "data";

/// A small synthetic dataset of `kind` (`tar`, `jsonl`, `parquet`, `tar.zst`, ...).
pub fn synth_config(kind: &str, samples: u64, shards: u32) -> SynthConfig {
    SynthConfig {
        kind: kind.parse::<ShardKind>().expect("a known kind"),
        samples,
        shards,
        tokens_min: 1,
        tokens_max: 24,
        row_group_rows: 40,
        seed: 11,
        ..SynthConfig::default()
    }
}

/// A dataset on an S3 server on loopback, indexed, manifest in a local file.
pub struct S3Dataset {
    pub server: S3Server,
    pub synth: SynthConfig,
    pub manifest: Manifest,
    pub manifest_path: PathBuf,
    /// `s3://data/<prefix>`.
    pub url: String,
    pub prefix: String,
}

impl S3Dataset {
    /// A fault-injecting proxy in front of this dataset's server.
    pub fn proxy(&self, spec: FaultSpec) -> Result<FaultProxy> {
        let upstream = format!("127.0.0.1:{}", self.server.port()).parse()?;
        FaultProxy::start(upstream, spec)
    }

    /// Generates `synth` under `dir`, serves it from `dir/s3` and indexes it.
    pub fn create(dir: &Path, synth: SynthConfig) -> Result<S3Dataset> {
        let server = S3Server::start(&dir.join("s3"))?;
        server.create_bucket(BUCKET)?;
        let prefix = "ds".to_string();
        let local = dir.join("generated");
        synth::generate(&local, &synth)?;
        let url = format!("s3://{BUCKET}/{prefix}");
        let opts = server.storage_options();
        let loc = Location::open(&url, &opts)?;
        shard_index::runtime::block_on(upload_dir(loc.store.as_ref(), &local, &prefix))??;
        let index = IndexOptions {
            storage_options: opts.clone(),
            ..IndexOptions::default()
        };
        let (manifest, _) = shard_index::runtime::block_on(shard_index::build(
            std::slice::from_ref(&url),
            &index,
            &Silent,
        ))??;
        let manifest_path = dir.join("manifest.parquet");
        manifest.write_to(&manifest_path.to_string_lossy(), &StorageOptions::new())?;
        Ok(S3Dataset {
            server,
            synth,
            manifest,
            manifest_path,
            url,
            prefix,
        })
    }

    /// A loader configuration reading this dataset with `options` (e.g. a proxy's): small
    /// look-ahead and concurrency so that faults meet a pipeline that is actually waiting.
    pub fn config(&self, options: StorageOptions, batch_size: u64) -> LoaderConfig {
        LoaderConfig::new(self.manifest_path.to_string_lossy(), batch_size)
            .with_storage_options(options)
            .with_seed(7)
            .with_window(Window::Samples(64))
            .with_prefetch_bytes(256 << 10)
            .with_io_concurrency(4)
            .with_io_threads(1)
            .with_decode_threads(1)
            .with_request_timeout(Duration::from_millis(1500))
    }

    /// The object of shard `i` (for deleting or overwriting it behind the loader's back).
    pub fn shard_url(&self, i: usize) -> String {
        self.manifest.url(i)
    }

    /// Deletes shard `i` from the bucket.
    pub fn delete_shard(&self, i: usize) -> Result<()> {
        let loc = Location::open(&self.url, &self.server.storage_options())?;
        let key = loc.key(self.manifest.path(i));
        shard_index::runtime::block_on(async {
            loc.store.delete(&key).await?;
            match loc.store.head(&key).await {
                Err(object_store::Error::NotFound { .. }) => anyhow::Ok(()),
                Ok(_) => Err(anyhow::anyhow!("{key} still exists after its deletion")),
                Err(e) => Err(e.into()),
            }
        })??;
        Ok(())
    }

    /// Overwrites shard `i` with different bytes (a new size, etag and modification time).
    pub fn overwrite_shard(&self, i: usize) -> Result<()> {
        let loc = Location::open(&self.url, &self.server.storage_options())?;
        let key = loc.key(self.manifest.path(i));
        shard_index::runtime::block_on(async {
            let old = loc.store.get(&key).await?.bytes().await?;
            let mut new = old.to_vec();
            new.extend_from_slice(b"\n");
            loc.store.put(&key, new.into()).await
        })??;
        Ok(())
    }
}

/// What one epoch delivered.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Global sample ids in delivery order (padded repeats included).
    pub ids: Vec<u64>,
    pub batches: u64,
    /// Time each `next()` took (the consumer's wait for that batch).
    pub waits: Vec<Duration>,
    pub stats: LoaderStats,
    /// The error that ended the epoch early, if any.
    pub error: Option<shardstream_loader::Error>,
    /// Samples whose contents differed from the generator's.
    pub corrupt: Vec<String>,
    pub elapsed: Duration,
}

/// Reads the rest of the loader's epoch, checking contents, sleeping `slow` per batch.
pub fn deliver(loader: &mut Loader, synth: &SynthConfig, slow: Duration) -> Delivery {
    let started = Instant::now();
    let mut d = Delivery::default();
    loop {
        let t = Instant::now();
        let Some(next) = loader.next_batch() else {
            break;
        };
        d.waits.push(t.elapsed());
        match next {
            Ok(batch) => {
                if let Err(e) = check_batch(&batch, synth) {
                    d.corrupt.push(e);
                }
                d.ids.extend(batch.samples.iter().map(|s| s.global));
                d.batches += 1;
            }
            Err(e) => {
                d.error = Some(e);
                break;
            }
        }
        if !slow.is_zero() {
            std::thread::sleep(slow);
        }
    }
    d.elapsed = started.elapsed();
    d.stats = loader.stats();
    d
}

/// Checks every row of `batch` against the generator.
pub fn check_batch(batch: &Batch, cfg: &SynthConfig) -> Result<(), String> {
    let n = batch.len();
    for (name, col) in &batch.columns {
        for i in 0..n {
            let id = batch.samples[i].global;
            let bad = |what: &str| Err(format!("sample {id}: {what} differs (column {name})"));
            match (name.as_str(), col) {
                ("id", Column::Tensor(t)) => {
                    if t.as_slice::<i64>().map(|s| s[i] as u64) != Some(id) {
                        return bad("id");
                    }
                }
                ("tokens", Column::Padded { values, lengths }) => {
                    let want = synth::expected_tokens(cfg, id);
                    let lmax = values.shape()[1];
                    let len = lengths
                        .as_slice::<i64>()
                        .map_or(usize::MAX, |l| l[i] as usize);
                    let got: Vec<i64> = match values.dtype() {
                        DType::I32 => values.as_slice::<i32>().unwrap_or(&[])
                            [i * lmax..i * lmax + lmax.min(len)]
                            .iter()
                            .map(|&v| i64::from(v))
                            .collect(),
                        _ => values.as_slice::<i64>().unwrap_or(&[])
                            [i * lmax..i * lmax + lmax.min(len)]
                            .to_vec(),
                    };
                    let want: Vec<i64> = want.iter().map(|&v| i64::from(v)).collect();
                    if len != want.len() || got != want {
                        return bad("tokens");
                    }
                }
                ("tokens", Column::Ragged { values, offsets }) => {
                    let offs = offsets.as_slice::<i64>().unwrap_or(&[]);
                    let (a, b) = (offs[i] as usize, offs[i + 1] as usize);
                    if values.as_slice::<i32>().map(|v| v[a..b].to_vec())
                        != Some(synth::expected_tokens(cfg, id))
                    {
                        return bad("tokens");
                    }
                }
                ("text", Column::Arrow(a)) => {
                    if a.as_string::<i32>().value(i) != synth::expected_text(id) {
                        return bad("text");
                    }
                }
                ("__key__", Column::Arrow(a)) => {
                    if a.as_string::<i32>().value(i) != format!("{id:09}") {
                        return bad("key");
                    }
                }
                ("json", Column::Arrow(a)) => {
                    let v: serde_json::Value =
                        serde_json::from_slice(a.as_binary::<i32>().value(i))
                            .map_err(|e| format!("sample {id}: json: {e}"))?;
                    if v["id"] != id || v["text"] != synth::expected_text(id) {
                        return bad("json");
                    }
                }
                ("tokens", Column::Arrow(a)) => {
                    let bytes = a.as_binary::<i32>();
                    let got: Vec<i32> = bytes
                        .value(i)
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    if bytes.is_null(i) || got != synth::expected_tokens(cfg, id) {
                        return bad("tokens");
                    }
                }
                (name, _) => return Err(format!("unexpected column {name}")),
            }
        }
    }
    Ok(())
}

/// A delivered id sequence compared with the expected one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub expected: u64,
    pub delivered: u64,
    /// Expected samples that never arrived.
    pub lost: u64,
    /// Deliveries beyond the expected count of a sample.
    pub duplicated: u64,
    /// Exactly the expected sequence.
    pub same_order: bool,
}

impl Tally {
    pub fn of(expected: &[u64], got: &[u64]) -> Tally {
        let mut want: BTreeMap<u64, i64> = BTreeMap::new();
        for &id in expected {
            *want.entry(id).or_default() += 1;
        }
        let mut have: BTreeMap<u64, i64> = BTreeMap::new();
        for &id in got {
            *have.entry(id).or_default() += 1;
        }
        let mut lost = 0;
        let mut duplicated = 0;
        for (id, &w) in &want {
            let h = have.get(id).copied().unwrap_or(0);
            lost += (w - h).max(0) as u64;
        }
        for (id, &h) in &have {
            let w = want.get(id).copied().unwrap_or(0);
            duplicated += (h - w).max(0) as u64;
        }
        Tally {
            expected: expected.len() as u64,
            delivered: got.len() as u64,
            lost,
            duplicated,
            same_order: expected == got,
        }
    }

    /// Exactly once, in the expected order.
    pub fn perfect(&self) -> bool {
        self.same_order && self.lost == 0 && self.duplicated == 0
    }
}

/// `q`-quantile (0..=1) of `v` (nearest rank); zero for an empty slice.
pub fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let i = ((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

/// Resident set size of this process in KiB (Linux; 0 elsewhere).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The `loader-worker` command line (see that binary's docs).
#[derive(Clone, Debug, Default)]
pub struct Worker {
    pub exe: PathBuf,
    pub manifest: PathBuf,
    pub storage_options: StorageOptions,
    pub batch_size: u64,
    pub seed: u64,
    pub window_samples: u64,
    pub prefetch_bytes: u64,
    pub io_concurrency: usize,
    pub cache_dir: Option<PathBuf>,
    pub cache_limit: Option<u64>,
    /// Resume from / save the state to this file after every batch.
    pub state_file: Option<PathBuf>,
    /// Sleep per batch (a slow consumer).
    pub slow_ms: u64,
    pub epochs: u64,
    /// Print RSS every this many batches (0: never).
    pub rss_every: u64,
    /// Generator parameters to check contents with: tokens_min, tokens_max, seed.
    pub verify: Option<(u32, u32, u64)>,
    pub hedge: bool,
    pub request_timeout_ms: u64,
}

impl Worker {
    /// A worker reading `ds` through `options`, with the same plan as [`S3Dataset::config`].
    pub fn for_dataset(
        exe: &Path,
        ds: &S3Dataset,
        options: StorageOptions,
        batch_size: u64,
    ) -> Worker {
        Worker {
            exe: exe.to_path_buf(),
            manifest: ds.manifest_path.clone(),
            storage_options: options,
            batch_size,
            seed: 7,
            window_samples: 64,
            prefetch_bytes: 256 << 10,
            io_concurrency: 4,
            epochs: 1,
            verify: Some((ds.synth.tokens_min, ds.synth.tokens_max, ds.synth.seed)),
            hedge: true,
            request_timeout_ms: 1500,
            ..Worker::default()
        }
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg(&self.manifest)
            .arg("--batch-size")
            .arg(self.batch_size.to_string())
            .arg("--seed")
            .arg(self.seed.to_string())
            .arg("--window-samples")
            .arg(self.window_samples.to_string())
            .arg("--prefetch-bytes")
            .arg(self.prefetch_bytes.to_string())
            .arg("--io-concurrency")
            .arg(self.io_concurrency.to_string())
            .arg("--epochs")
            .arg(self.epochs.to_string())
            .arg("--request-timeout-ms")
            .arg(self.request_timeout_ms.to_string());
        for (k, v) in &self.storage_options {
            c.arg("--storage-option").arg(format!("{k}={v}"));
        }
        if let Some(d) = &self.cache_dir {
            c.arg("--cache-dir").arg(d);
        }
        if let Some(l) = self.cache_limit {
            c.arg("--cache-limit").arg(l.to_string());
        }
        if let Some(s) = &self.state_file {
            c.arg("--state-file").arg(s);
        }
        if self.slow_ms > 0 {
            c.arg("--slow-ms").arg(self.slow_ms.to_string());
        }
        if self.rss_every > 0 {
            c.arg("--rss-every").arg(self.rss_every.to_string());
        }
        if let Some((a, b, s)) = self.verify {
            c.arg("--verify").arg(format!("{a}:{b}:{s}"));
        }
        if !self.hedge {
            c.arg("--no-hedge");
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    pub fn spawn(&self) -> Result<Child> {
        self.command()
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))
    }
}

/// One line of a worker's output.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// A batch was delivered (printed before the state that includes it is saved).
    Batch {
        epoch: u64,
        index: u64,
        ids: Vec<u64>,
    },
    /// Memory, every `rss_every` batches.
    Rss { batch: u64, rss_kib: u64 },
    /// The run ended normally.
    Done {
        batches: u64,
        stats: serde_json::Value,
    },
    /// The run failed.
    Error { message: String },
}

/// The saved state file of a worker: batches of the epoch consumed so far, and the state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedState {
    pub epoch: u64,
    pub batches: u64,
    pub state: serde_json::Value,
}

/// Everything a worker printed (complete lines only: a killed worker may leave half a line).
pub fn read_events(out: &[u8]) -> Vec<WorkerEvent> {
    out.split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

/// Waits for `child` at most `limit`; kills it and errors on a hang.
pub fn wait_output(
    mut child: Child,
    limit: Duration,
) -> Result<(std::process::ExitStatus, Vec<u8>, String)> {
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut BufReader::new(stdout), &mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("worker {} hung for more than {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    ))
}

/// What [`crash_loop`] saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CrashReport {
    /// Workers killed with SIGKILL (before they finished).
    pub kills: u32,
    /// Kills that hit while a cache temp file existed (a download in progress).
    pub kills_mid_download: u32,
    /// Runs started (kills + the final run).
    pub runs: u32,
    /// Temp or lock files left by killed workers, found before the next start (then repaired).
    pub leftovers_repaired: u64,
    pub tally: Tally,
}

/// Kills a worker `kills` times at random points (seeded), resuming each time from its last
/// saved state, then lets it finish. Returns the samples delivered up to each saved state plus
/// the last run, compared with `expected` (the whole epoch, fault-free).
///
/// Kill times are uniform over `0..span` after start; with a cache limit that forces eviction,
/// they land during downloads, cache writes and evictions alike.
pub fn crash_loop(
    worker: &Worker,
    expected: &[u64],
    kills: u32,
    span: Duration,
    seed: u64,
) -> Result<CrashReport> {
    let state_file = worker
        .state_file
        .clone()
        .context("crash_loop needs a state file")?;
    let mut report = CrashReport::default();
    // Delivered batches, by their position in the epoch.
    let mut delivered: Vec<Vec<u64>> = Vec::new();
    let mut rng = seed;
    let mut finished = false;
    while !finished {
        let base = saved_batches(&state_file)?;
        delivered.truncate(base as usize);
        if let Some(dir) = &worker.cache_dir {
            report.leftovers_repaired +=
                count_files(&dir.join("tmp")) + count_files(&dir.join("locks"));
        }
        let mut child = worker.spawn()?;
        report.runs += 1;
        let kill_now = report.kills < kills;
        let mut status = None;
        if kill_now {
            rng = synth::mix(rng);
            // Spread over what is left of the epoch (a resumed run is shorter).
            let done = delivered.iter().map(Vec::len).sum::<usize>() as f64;
            let left = (1.0 - done / expected.len().max(1) as f64).max(0.1);
            // (0.7: a run is not always as fast as the one that measured `span`.)
            let window = span.mul_f64(0.7 * left).as_micros().max(1) as u64;
            let at = Duration::from_micros(rng % window);
            let t = Instant::now();
            while t.elapsed() < at {
                if let Some(s) = child.try_wait()? {
                    status = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if status.is_none() {
                let mid = worker
                    .cache_dir
                    .as_ref()
                    .is_some_and(|d| count_files(&d.join("tmp")) > 0);
                child.kill()?; // SIGKILL
                report.kills += 1;
                report.kills_mid_download += u32::from(mid);
            }
        }
        let (st, out, err) = wait_output(child, Duration::from_secs(120))?;
        let events = read_events(&out);
        for e in &events {
            match e {
                WorkerEvent::Batch { ids, .. } => delivered.push(ids.clone()),
                WorkerEvent::Error { message } => bail!("worker failed: {message}\n{err}"),
                _ => {}
            }
        }
        if events.iter().any(|e| matches!(e, WorkerEvent::Done { .. })) {
            if !st.success() {
                bail!("worker said done but exited with {st}: {err}");
            }
            finished = true;
        } else if status.is_some() || !kill_now {
            bail!("worker exited with {st} without finishing: {err}");
        }
        // Only what the saved state covers counts as consumed; later batches are re-delivered.
        let saved = saved_batches(&state_file)?;
        if !finished {
            delivered.truncate(saved as usize);
        }
    }
    let got: Vec<u64> = delivered.concat();
    report.tally = Tally::of(expected, &got);
    Ok(report)
}

fn saved_batches(path: &Path) -> Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(serde_json::from_str::<SavedState>(&s)
            .with_context(|| format!("state file {}", path.display()))?
            .batches),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e.into()),
    }
}

fn count_files(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.filter_map(|e| e.ok()).count() as u64)
}

/// What [`contention`] saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ContentionReport {
    pub processes: u32,
    /// Processes whose delivery was exactly the expected sequence with correct contents.
    pub perfect: u32,
    /// Cache downloads (misses) summed over processes, and hits, waits and evictions.
    pub misses: u64,
    pub hits: u64,
    pub waits: u64,
    pub evictions: u64,
    pub corrupt_refetched: u64,
    pub elapsed_s: f64,
}

/// Runs `n` copies of `worker` at once (all sharing its cache directory) and checks each
/// delivered exactly `expected`. Errors if any process fails or hangs past `limit`.
pub fn contention(
    worker: &Worker,
    n: u32,
    expected: &[u64],
    limit: Duration,
) -> Result<ContentionReport> {
    let started = Instant::now();
    let children: Vec<Child> = (0..n).map(|_| worker.spawn()).collect::<Result<_>>()?;
    let mut report = ContentionReport {
        processes: n,
        ..ContentionReport::default()
    };
    let mut failures = Vec::new();
    for child in children {
        let (st, out, err) = wait_output(child, limit)?;
        let events = read_events(&out);
        let ids: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                WorkerEvent::Batch { ids, .. } => Some(ids.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let done = events.iter().find_map(|e| match e {
            WorkerEvent::Done { stats, .. } => Some(stats.clone()),
            _ => None,
        });
        match done {
            Some(stats) if st.success() => {
                if Tally::of(expected, &ids).perfect() {
                    report.perfect += 1;
                }
                let c = &stats["cache"];
                let g = |k: &str| c[k].as_u64().unwrap_or(0);
                report.misses += g("misses");
                report.hits += g("hits");
                report.waits += g("waits");
                report.evictions += g("evictions");
                report.corrupt_refetched += g("corrupt_refetched");
            }
            _ => failures.push(format!("exit {st}: {}", err.lines().last().unwrap_or(""))),
        }
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    if !failures.is_empty() {
        bail!("{} of {n} workers failed: {failures:?}", failures.len());
    }
    Ok(report)
}

/// Reads lines of a child's stdout as they come (for RSS curves of long runs).
pub fn stream_events(child: &mut Child, mut each: impl FnMut(WorkerEvent)) {
    let Some(stdout) = child.stdout.take() else {
        return;
    };
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Ok(e) = serde_json::from_str(&line) {
            each(e);
        }
    }
}
