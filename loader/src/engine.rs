//! [`Loader`]: the pipeline behind a synchronous iterator of batches.
//!
//! ```text
//!  consumer thread          producer thread                      tokio runtime (io_threads)
//!  ───────────────          ───────────────                      ──────────────────────────
//!  next() ◀── bounded ◀──── walk this worker's planned batches ──▶ dispatcher: one task per
//!            crossbeam       (look-ahead), map samples to units    unit, started in order of
//!            channel         (row group / whole shard), request    first use, ≤ io_concurrency
//!            (batch_queue)   each new unit once; when the front    fetching at once; decode on
//!                            batch's units are decoded, hand it    blocking threads (≤
//!                            to a collate thread, release units    decode_threads); result back
//!                            no pending batch uses; send batches   over a crossbeam channel
//!                            in plan order
//!                                 │ ▲
//!                                 ▼ │  collate threads (collate_threads, `assembly`): each
//!                                       gathers one batch into pooled buffers
//! ```
//!
//! # Look-ahead and memory
//!
//! The producer keeps a window of planned batches ahead of the consumer and, for every unit
//! those batches touch, a slot holding its decoded data (or a pending request). Slots are
//! reference-counted by the pending batches and dropped as soon as the last batch using them is
//! collated. The look-ahead grows, batch by batch, while its accounted bytes — decoded size of
//! loaded units, an estimate for units still loading (stored size × the stream's observed
//! decoded/stored ratio), plus the plan entries themselves — stay under `prefetch_bytes`. It
//! always holds at least the next batch, so a budget smaller than one batch's units slows the
//! loader down instead of deadlocking it. A unit needed again after it left the look-ahead is
//! simply read again (counted in `units_reread`; see `read_amplification`).
//!
//! Memory therefore stays near `prefetch_bytes` + `batch_queue` finished batches + at most
//! `collate_threads + 1` batches being assembled or waiting to be sent (with the units they
//! hold) + the buffer pool's retained free buffers, whatever the dataset size; a slow consumer
//! blocks the producer on the channel (backpressure), which stops the look-ahead from moving.
//!
//! # Determinism
//!
//! Which samples form batch `k`, and their order, come only from the plan. Timing, concurrency,
//! the cache and retries decide only *when* a batch is ready, never what it holds.
//!
//! # Errors and shutdown
//!
//! A failure anywhere (fetch, verification, decode, collation, even a panic in the producer) is
//! sent down the channel; the consumer gets it as `Err` from `next()`, after which the iterator
//! ends (calling [`Loader::iter`] again retries from the first batch not yet delivered).
//! Dropping the loader (or restarting the pipeline) disconnects a stop channel the producer
//! selects on in every blocking wait, joins it, aborts in-flight tasks and shuts the runtime down
//! in the background, so drop never hangs on the network.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, SchemaRef};
use crossbeam::channel::{self, Receiver, RecvTimeoutError, Select, Sender};
use rustc_hash::FxHashMap;
use shard_index::plan::{
    EpochPlan, PlanOptions, RankPlan, ResumeState, SampleRef, StreamSpec, Topology, DEFAULT_WARMUP,
};
use shard_index::{Location, Manifest, ShardFormat, ShardKind};
use tokio::runtime::Runtime;
use tokio::sync::{OnceCell, Semaphore};

use crate::assembly::{Assembly, Job};
use crate::cache::{CacheConfig, DiskCache};
use crate::collate::{Batch, Collator, SampleId};
use crate::config::{LoaderConfig, ManifestSource, LOCAL_IO_CONCURRENCY};
use crate::decode::parquet::{ShardFooter, Tail, FOOTER_GUESS};
use crate::decode::{self, DecodedUnit};
use crate::error::panic_message;
use crate::fetch::{shard_storage_options, FetchPolicy, Fetcher, ShardObject};
use crate::pinned::Allocator;
use crate::pool::BufferPool;
use crate::stats::{Counters, LoaderStats, StatsHandle};
use crate::{Error, Result};

/// Bytes charged to the look-ahead per planned sample (the plan entry and its row mapping).
const PLAN_BYTES_PER_SAMPLE: u64 = 64;
/// Batches planned per producer step before checking for finished units again.
const PLAN_STEP: usize = 8;
/// Free batch buffers the pool keeps, at least (more for large batches, see `POOL_BATCHES_EXTRA`).
const MIN_POOL_RETAIN: u64 = 64 << 20;
/// Batches in circulation beyond the `batch_queue` and the collate threads' `collate_threads + 1`:
/// the one the producer is sending, the consumer's current one and the one it just dropped.
/// The pool retains that many batches' buffers, so steady state allocates nothing.
const POOL_BATCHES_EXTRA: usize = 3;

/// What [`Loader::next_batch_within`] found.
#[derive(Debug)]
pub enum NextBatch {
    /// The next batch, or the error that ended the epoch.
    Ready(Result<Batch>),
    /// The epoch has no more batches (its end, or after an error).
    End,
    /// No batch arrived within the timeout; nothing was taken.
    Pending,
}

/// One dataset stream, opened.
struct StreamCtx {
    name: String,
    manifest: Arc<Manifest>,
    /// One per source root of the manifest.
    locations: Vec<Location>,
    /// Local directory of each source root (for `file://` roots).
    local_roots: Vec<Option<PathBuf>>,
    /// The stream's schema projected to the output columns (for tar / JSONL decoding).
    schema: SchemaRef,
}

impl StreamCtx {
    fn object(&self, shard: usize) -> ShardObject {
        let m = &self.manifest;
        let source = m.source(shard) as usize;
        let path = m.path(shard);
        let etag = m.etag(shard).map(str::to_string);
        // The manifest has no per-shard accessor for it; only needed without an etag.
        let last_modified_ms = if etag.is_none() {
            m.entry(shard).last_modified_ms
        } else {
            None
        };
        ShardObject {
            store: self.locations[source].store.clone(),
            key: self.locations[source].key(path),
            url: m.url(shard),
            size: m.size(shard),
            etag,
            last_modified_ms,
            local: self.local_roots[source]
                .as_ref()
                .map(|root| root.join(path)),
        }
    }
}

/// Identifies a unit: a Parquet row group (`part`), or a whole tar / JSONL shard (`part` 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct UnitKey {
    stream: u32,
    shard: u32,
    part: u32,
}

/// A shard's footer, fetched once by whichever unit of the shard needs it first.
type FooterCell = Arc<OnceCell<Arc<ShardFooter>>>;

/// Everything the async side needs; shared by all pipelines of a loader.
struct Ctx {
    streams: Vec<StreamCtx>,
    columns: Vec<String>,
    fetcher: Fetcher,
    /// Decoded footers of Parquet shards with units in some look-ahead.
    footers: Mutex<HashMap<(u32, u32), FooterCell>>,
    decode_slots: Arc<Semaphore>,
    counters: Arc<Counters>,
    /// `LoaderConfig::plain_fast_path`.
    plain_fast_path: bool,
}

impl Ctx {
    async fn footer(&self, key: UnitKey, obj: &ShardObject) -> Result<Arc<ShardFooter>> {
        let cell = self
            .footers
            .lock()
            .expect("footer lock")
            .entry((key.stream, key.shard))
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let size = obj.size;
            let first = FOOTER_GUESS.min(size);
            let tail = self.fetcher.read(obj, Some(size - first..size)).await?;
            let meta = match decode::parquet::parse_tail(&tail, size, &obj.url)? {
                Tail::Complete(m) => *m,
                Tail::NeedFrom(start) => {
                    let head = self.fetcher.read(obj, Some(start..size - first)).await?;
                    let mut joined = Vec::with_capacity(head.len() + tail.len());
                    joined.extend_from_slice(&head);
                    joined.extend_from_slice(&tail);
                    match decode::parquet::parse_tail(&joined, size, &obj.url)? {
                        Tail::Complete(m) => *m,
                        Tail::NeedFrom(_) => {
                            return Err(decode::error(&obj.url, "footer length is inconsistent"))
                        }
                    }
                }
            };
            let url = obj.url.clone();
            let columns = self.columns.clone();
            let fast = self.plain_fast_path;
            let footer = decode::guarded(&url, || ShardFooter::new(meta, &columns, fast, &url))?;
            Ok(Arc::new(footer))
        })
        .await
        .cloned()
    }

    /// Fetches and decodes one unit. `io_permit` is held while fetching only.
    async fn load(
        self: Arc<Self>,
        key: UnitKey,
        first_use: bool,
        io_permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Arc<DecodedUnit>> {
        let stream = &self.streams[key.stream as usize];
        let shard = key.shard as usize;
        let obj = stream.object(shard);
        let kind = stream.manifest.kind(shard);
        let (job, stored): (Box<dyn FnOnce() -> Result<DecodedUnit> + Send>, u64) =
            match kind.format {
                ShardFormat::Parquet => {
                    let rg = key.part as usize;
                    let expected = stream
                        .manifest
                        .row_groups(shard)
                        .get(rg)
                        .map(|r| r.num_rows)
                        .ok_or_else(|| decode::error(&obj.url, format!("no row group {rg}")))?;
                    let footer = self.footer(key, &obj).await?;
                    let ranges = footer.ranges(rg);
                    // Each range as the chunks it arrived in, at their file offsets.
                    let reads = ranges
                        .iter()
                        .map(|r| self.fetcher.read_parts(&obj, Some(r.clone())));
                    let mut parts: Vec<(u64, bytes::Bytes)> = Vec::new();
                    for (r, chunks) in ranges
                        .iter()
                        .zip(futures::future::try_join_all(reads).await?)
                    {
                        let mut at = r.start;
                        for c in chunks {
                            let len = c.len() as u64;
                            parts.push((at, c));
                            at += len;
                        }
                    }
                    let stored = parts.iter().map(|(_, b)| b.len() as u64).sum();
                    let (url, size) = (obj.url.clone(), obj.size);
                    let job = move || {
                        decode::parquet::decode_row_group(&footer, rg, parts, size, &url, expected)
                    };
                    (Box::new(job), stored)
                }
                ShardFormat::Tar | ShardFormat::Jsonl => {
                    let data = self.fetcher.read(&obj, None).await?;
                    let expected = stream.manifest.num_samples(shard);
                    let schema = stream.schema.clone();
                    let url = obj.url.clone();
                    let stored = obj.size;
                    let job = move || {
                        let batch = decode_whole(kind, data, &schema, &url, expected)?;
                        Ok(DecodedUnit::from_batch(batch, stored))
                    };
                    (Box::new(job), stored)
                }
            };
        drop(io_permit);
        if first_use {
            Counters::add(&self.counters.bytes_needed, stored);
        }
        let _slot = self
            .decode_slots
            .acquire()
            .await
            .map_err(|_| Error::Stopped("decoder pool closed".into()))?;
        let url = obj.url.clone();
        let counters = self.counters.clone();
        let unit = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let r = decode::guarded(&url, job);
            Counters::add_time(&counters.decode_ns, started);
            r
        })
        .await
        .map_err(|e| decode::error(&obj.url, format!("decoder task failed: {e}")))??;
        Counters::add(&self.counters.units_loaded, 1);
        Counters::add(&self.counters.bytes_decoded, unit.memory_bytes());
        Ok(Arc::new(unit))
    }
}

fn decode_whole(
    kind: ShardKind,
    data: bytes::Bytes,
    schema: &SchemaRef,
    url: &str,
    expected: u64,
) -> Result<arrow::array::RecordBatch> {
    let plain = decode::decompress(kind.compression, data, url)?;
    match kind.format {
        ShardFormat::Tar => decode::tar::decode(&plain, schema, url, expected),
        _ => decode::jsonl::decode(&plain, schema, url, expected),
    }
}

/// A request from the producer to the dispatcher.
struct Request {
    key: UnitKey,
    first_use: bool,
}

type Done = (UnitKey, Result<Arc<DecodedUnit>>);

/// Starts units in request order, at most `io_concurrency` fetching at once. Ends (aborting
/// every task it started) when the producer drops its request channel.
async fn dispatch(
    ctx: Arc<Ctx>,
    mut requests: tokio::sync::mpsc::UnboundedReceiver<Request>,
    done: Sender<Done>,
    io_slots: Arc<Semaphore>,
    io_limit: usize,
) {
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(req) = requests.recv().await {
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = io_slots.clone().acquire_owned().await else {
            return;
        };
        let fetching = io_limit.saturating_sub(io_slots.available_permits());
        ctx.counters
            .units_fetching_peak
            .fetch_max(fetching as u64, Ordering::Relaxed);
        let (ctx, done) = (ctx.clone(), done.clone());
        tasks.spawn(async move {
            let r = ctx.load(req.key, req.first_use, permit).await;
            let _ = done.send((req.key, r));
        });
    }
}

/// A planned batch waiting in the look-ahead.
struct Planned {
    index: u64,
    samples: Vec<SampleRef>,
    /// Distinct units, in order of first use.
    units: Vec<UnitKey>,
    /// Per sample: (index into `units`, row inside the unit).
    rows: Vec<(usize, usize)>,
}

struct Slot {
    /// Pending batches that use the unit.
    refs: u32,
    /// Bytes charged to the look-ahead (estimate until loaded, then the decoded size).
    charged: u64,
    /// Stored bytes estimated when requested (to refine the stream's ratio).
    stored_estimate: u64,
    unit: Option<Arc<DecodedUnit>>,
}

/// Why the producer stops early.
enum Halt {
    /// The pipeline is being dropped.
    Stop,
    Fail(Error),
}

impl From<Error> for Halt {
    fn from(e: Error) -> Self {
        Halt::Fail(e)
    }
}

/// The producer: plans ahead, requests units, collates and sends batches.
struct Producer {
    ctx: Arc<Ctx>,
    plan: RankPlan,
    epoch: u64,
    /// Next plan batch index to look at, and the stride between this worker's batches.
    next_k: u64,
    step: u64,
    budget: u64,
    /// Collate threads and the reorder buffer that keeps batches in plan order.
    assembly: Assembly,
    pending: VecDeque<Planned>,
    slots: HashMap<UnitKey, Slot>,
    units_per_shard: HashMap<(u32, u32), u32>,
    seen: HashSet<UnitKey>,
    /// Per stream: Σ decoded bytes and Σ stored estimates of loaded units (the size ratio).
    ratios: Vec<(u64, u64)>,
    /// Cumulative row-group row counts of Parquet shards met so far. This map and each
    /// batch's unit index are looked up once per sample, so they hash with Fx rather than
    /// SipHash (the keys are small integers from the plan; in a profile of 8 KiB token rows
    /// SipHash was about a third of the producer's time beside the planner).
    row_group_ends: FxHashMap<(u32, u32), Arc<[u64]>>,
    charged: u64,
    /// A batch has been assembled (before that, only the first batch's units are requested).
    started: bool,
    requests: tokio::sync::mpsc::UnboundedSender<Request>,
    /// Where released units are dropped: unmapping a mapped row group costs the producer
    /// ~10% of its time, and the producer's core is the one collating.
    io: tokio::runtime::Handle,
    done: Receiver<Done>,
    out: Sender<Result<Batch>>,
    stop: Receiver<()>,
}

impl Producer {
    fn run(mut self) {
        let out = self.out.clone();
        let stop = self.stop.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.work()));
        let err = match result {
            Ok(Ok(())) | Ok(Err(Halt::Stop)) => return,
            Ok(Err(Halt::Fail(e))) => e,
            Err(panic) => Error::Stopped(format!(
                "internal error in the batch producer: {}",
                panic_message(panic.as_ref())
            )),
        };
        channel::select! {
            send(out, Err(err)) -> _ => {},
            recv(stop) -> _ => {},
        }
    }

    fn work(&mut self) -> std::result::Result<(), Halt> {
        loop {
            // Planning ahead never blocks, so look for a shutdown here too.
            if let Err(channel::TryRecvError::Disconnected) = self.stop.try_recv() {
                return Err(Halt::Stop);
            }
            // Work that the collate threads and the consumer wait for comes first: a finished
            // unit can complete the front batch, a free collate thread can take it, a gathered
            // batch can go out. Planning (a few hundred µs per step of batches) only after that,
            // or it delays every hand-off it precedes (measured: ~0.2 ms from a gathered first
            // batch to its send).
            while let Ok(done) = self.done.try_recv() {
                self.complete(done)?;
            }
            self.assembly.poll();
            while self.assembly.has_room() && self.front_ready() {
                if !self.started {
                    // Plan ahead before the first batch releases its units: later batches
                    // that use them keep them, instead of reading them again.
                    self.started = true;
                    self.extend(PLAN_STEP)?;
                }
                self.submit_front()?;
            }
            if let Some(batch) = self.assembly.next_ready() {
                self.send(batch?)?;
                continue;
            }
            if self.pending.is_empty() || self.can_extend() {
                let planned = self.next_k;
                self.extend(PLAN_STEP)?;
                if self.next_k != planned {
                    continue;
                }
            }
            if self.pending.is_empty() && self.assembly.is_idle() {
                return Ok(());
            }
            let assembled = self.assembly.results().clone();
            channel::select! {
                recv(self.done) -> done => self.complete(done.map_err(|_| runtime_gone())?)?,
                recv(assembled) -> batch => self.assembly.accept(batch.map_err(|_| collate_gone())?),
                recv(self.stop) -> _ => return Err(Halt::Stop),
            }
        }
    }

    fn can_extend(&self) -> bool {
        self.started && self.next_k < self.plan.num_batches() && self.charged < self.budget
    }

    /// Plans up to `max` more batches while the budget allows (always at least one batch
    /// when none is pending).
    fn extend(&mut self, max: usize) -> Result<()> {
        let mut planned = 0;
        // Until the first batch is out, it has the store to itself: units of later batches
        // would share its bandwidth and delay it (time to first batch), so plan nothing else.
        // (`work` calls this after every finished unit; the front batch, once planned, stays
        // pending until it is out, so nothing more is planned before then.)
        let max = if self.started { max } else { 0 };
        while self.next_k < self.plan.num_batches()
            && (self.pending.is_empty() || (self.charged < self.budget && planned < max))
        {
            let batch = self.plan.batch(self.next_k)?;
            self.next_k += self.step;
            planned += 1;
            let mut units: Vec<UnitKey> = Vec::new();
            let mut index: FxHashMap<UnitKey, usize> = FxHashMap::default();
            let mut rows = Vec::with_capacity(batch.samples.len());
            for s in &batch.samples {
                let (key, row) = self.unit_of(s)?;
                let i = *index.entry(key).or_insert_with(|| {
                    units.push(key);
                    units.len() - 1
                });
                rows.push((i, row));
            }
            for &key in &units {
                self.reference(key);
            }
            self.charged += batch.samples.len() as u64 * PLAN_BYTES_PER_SAMPLE;
            self.pending.push_back(Planned {
                index: batch.index,
                samples: batch.samples,
                units,
                rows,
            });
        }
        self.ctx.counters.set_lookahead(self.charged);
        Ok(())
    }

    /// The unit holding sample `s`, and its row there.
    fn unit_of(&mut self, s: &SampleRef) -> Result<(UnitKey, usize)> {
        let stream = &self.ctx.streams[s.stream as usize];
        let shard = s.shard as usize;
        let mut key = UnitKey {
            stream: s.stream,
            shard: s.shard,
            part: 0,
        };
        if stream.manifest.kind(shard).format != ShardFormat::Parquet {
            return Ok((key, s.row as usize));
        }
        if self.row_group_ends.len() > 1 << 16 {
            self.row_group_ends.clear();
        }
        let ends = self
            .row_group_ends
            .entry((s.stream, s.shard))
            .or_insert_with(|| {
                let mut total = 0;
                stream
                    .manifest
                    .row_groups(shard)
                    .iter()
                    .map(|rg| {
                        total += rg.num_rows;
                        total
                    })
                    .collect()
            });
        let rg = ends.partition_point(|&end| end <= s.row);
        if rg >= ends.len() {
            return Err(Error::Index(shard_index::Error::InvalidManifest {
                path: stream.manifest.url(shard),
                reason: format!(
                    "row {} is past the shard's row groups ({} rows); rebuild the manifest",
                    s.row,
                    ends.last().copied().unwrap_or(0)
                ),
            }));
        }
        key.part = rg as u32;
        let start = if rg == 0 { 0 } else { ends[rg - 1] };
        Ok((key, (s.row - start) as usize))
    }

    /// Counts one more pending batch using `key`, requesting the unit if it is new.
    fn reference(&mut self, key: UnitKey) {
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.refs += 1;
            return;
        }
        let stream = &self.ctx.streams[key.stream as usize];
        let shard = key.shard as usize;
        let kind = stream.manifest.kind(shard);
        let stored = match kind.format {
            ShardFormat::Parquet => stream
                .manifest
                .row_groups(shard)
                .get(key.part as usize)
                .map_or(0, |rg| rg.length),
            _ => stream.manifest.size(shard),
        };
        let (decoded, stored_seen) = self.ratios[key.stream as usize];
        let estimate = if stored_seen > 0 {
            (stored as u128 * decoded as u128 / stored_seen as u128) as u64
        } else {
            // Before anything is decoded: Arrow data is usually a few times its compressed size.
            match (kind.format, kind.compression) {
                (ShardFormat::Parquet, _) => stored * 2,
                (_, shard_index::Compression::None) => stored,
                _ => stored * 4,
            }
        };
        let first_use = self.seen.insert(key);
        if !first_use {
            Counters::add(&self.ctx.counters.units_reread, 1);
        }
        self.charged += estimate;
        *self
            .units_per_shard
            .entry((key.stream, key.shard))
            .or_default() += 1;
        self.slots.insert(
            key,
            Slot {
                refs: 1,
                charged: estimate,
                stored_estimate: stored,
                unit: None,
            },
        );
        // The dispatcher outlives the producer's sender; a send error means shutdown, which
        // the stop channel reports.
        let _ = self.requests.send(Request { key, first_use });
    }

    fn complete(&mut self, (key, result): Done) -> Result<()> {
        let unit = result?;
        let Some(slot) = self.slots.get_mut(&key) else {
            return Ok(());
        };
        let actual = unit.memory_bytes();
        self.charged = self.charged - slot.charged + actual;
        let ratio = &mut self.ratios[key.stream as usize];
        ratio.0 += actual;
        ratio.1 += slot.stored_estimate.max(1);
        slot.charged = actual;
        slot.unit = Some(unit);
        self.ctx.counters.set_lookahead(self.charged);
        Ok(())
    }

    fn front_ready(&self) -> bool {
        self.pending.front().is_some_and(|p| {
            p.units
                .iter()
                .all(|k| self.slots.get(k).is_some_and(|s| s.unit.is_some()))
        })
    }

    /// Hands the front batch, whose units are all loaded, to the collate threads.
    fn submit_front(&mut self) -> Result<()> {
        let p = self.pending.pop_front().expect("front_ready");
        let units: Vec<Arc<DecodedUnit>> = p
            .units
            .iter()
            .map(|k| self.slots[k].unit.clone().expect("front_ready"))
            .collect();
        for (&(u, row), s) in p.rows.iter().zip(&p.samples) {
            if row >= units[u].num_rows() {
                let stream = &self.ctx.streams[s.stream as usize];
                return Err(decode::error(
                    &stream.manifest.url(s.shard as usize),
                    format!(
                        "row {row} of a unit with {} rows; the shard changed since it was indexed",
                        units[u].num_rows()
                    ),
                ));
            }
        }
        // The job holds its units, so their slots can go now.
        for key in &p.units {
            self.release(*key);
        }
        self.charged -= p.samples.len() as u64 * PLAN_BYTES_PER_SAMPLE;
        self.ctx.counters.set_lookahead(self.charged);
        self.assembly.submit(Job {
            units,
            rows: p.rows,
            epoch: self.epoch,
            index: p.index,
            padded: p.samples.iter().map(|s| s.padded).collect(),
            samples: p
                .samples
                .iter()
                .map(|s| SampleId {
                    stream: s.stream,
                    global: s.global,
                })
                .collect(),
        });
        Ok(())
    }

    fn release(&mut self, key: UnitKey) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        slot.refs -= 1;
        if slot.refs > 0 {
            return;
        }
        let slot = self.slots.remove(&key).expect("present");
        self.charged -= slot.charged;
        if let Some(unit) = slot.unit {
            // Dropped on the I/O runtime's blocking pool (or here, if it has shut down).
            drop(self.io.spawn_blocking(move || drop(unit)));
        }
        let shard = (key.stream, key.shard);
        if let Some(n) = self.units_per_shard.get_mut(&shard) {
            *n -= 1;
            if *n == 0 {
                self.units_per_shard.remove(&shard);
                self.ctx.footers.lock().expect("footer lock").remove(&shard);
            }
        }
    }

    /// Sends a batch, handling finished units while the consumer is slow.
    fn send(&mut self, batch: Batch) -> std::result::Result<(), Halt> {
        let mut batch = Ok(batch);
        loop {
            // Straight out whenever the queue has room: the select below picks at random among
            // ready operations, and finished units (each followed by a planning step) would
            // often go first.
            match self.out.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(channel::TrySendError::Disconnected(_)) => return Err(Halt::Stop),
                Err(channel::TrySendError::Full(unsent)) => batch = unsent,
            }
            let mut sel = Select::new();
            let send = sel.send(&self.out);
            let done = sel.recv(&self.done);
            let stop = sel.recv(&self.stop);
            let assembled_rx = self.assembly.results().clone();
            let assembled = sel.recv(&assembled_rx);
            let op = sel.select();
            match op.index() {
                i if i == send => return op.send(&self.out, batch).map_err(|_| Halt::Stop),
                i if i == done => {
                    let d = op.recv(&self.done).map_err(|_| runtime_gone())?;
                    self.complete(d)?;
                    // Keep the look-ahead moving while the consumer catches up.
                    self.extend(PLAN_STEP)?;
                }
                i if i == stop => {
                    let _ = op.recv(&self.stop);
                    return Err(Halt::Stop);
                }
                i if i == assembled => {
                    let batch = op.recv(&assembled_rx).map_err(|_| collate_gone())?;
                    self.assembly.accept(batch);
                }
                _ => unreachable!("four operations"),
            }
        }
    }
}

fn collate_gone() -> Error {
    Error::Stopped("the collate threads stopped".into())
}

fn runtime_gone() -> Error {
    Error::Stopped("the I/O runtime stopped".into())
}

/// A running pipeline for one epoch (from some batch on).
struct Pipeline {
    batches: Receiver<Result<Batch>>,
    stop: Option<Sender<()>>,
    producer: Option<std::thread::JoinHandle<()>>,
    dispatcher: tokio::task::AbortHandle,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop.take();
        self.dispatcher.abort();
        if let Some(t) = self.producer.take() {
            let _ = t.join();
        }
    }
}

/// Loads batches for one rank (and worker) following the epoch plan. See the module docs.
pub struct Loader {
    config: LoaderConfig,
    ctx: Arc<Ctx>,
    specs: Vec<StreamSpec>,
    options: PlanOptions,
    topology: Topology,
    plan: EpochPlan,
    rank_plan: RankPlan,
    worker: (u32, u32),
    /// This worker's batches delivered in the current epoch (plan).
    delivered: u64,
    /// Index of the last batch delivered in the current epoch.
    last_index: Option<u64>,
    pipeline: Option<Pipeline>,
    failed: bool,
    collator: Arc<Collator>,
    pool: BufferPool,
    io_slots: Arc<Semaphore>,
    /// Units fetched at once, at most: `io_concurrency`, capped for local files read in place.
    io_limit: usize,
    /// See [`Loader::warnings`].
    warnings: Vec<String>,
    created: Instant,
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("epoch", &self.plan.epoch())
            .field("rank", &self.config.rank)
            .field("worker", &self.worker)
            .field("len", &self.len())
            .field("delivered", &self.delivered)
            .finish()
    }
}

impl Loader {
    /// Opens the manifests and storage, validates the configuration against the data and plans
    /// the first epoch. Nothing is fetched until the first batch is asked for.
    pub fn new(config: LoaderConfig) -> Result<Loader> {
        let created = Instant::now();
        config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.io_threads)
            // Decoders, plus object_store's local-file reads, which also run as blocking tasks.
            .max_blocking_threads(config.decode_threads + config.io_concurrency.min(64) + 2)
            .thread_name("shardstream-io")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the I/O runtime: {e}")))?;

        let mut streams = Vec::with_capacity(config.streams.len());
        let mut specs = Vec::with_capacity(config.streams.len());
        for (i, s) in config.streams.iter().enumerate() {
            let manifest = match &s.manifest {
                ManifestSource::Loaded(m) => m.clone(),
                ManifestSource::Url(u) => Arc::new(block_on(
                    &runtime,
                    Manifest::read_async(u, &config.storage_options),
                )?),
            };
            let name = s.name.clone().unwrap_or_else(|| format!("stream-{i}"));
            let mut locations = Vec::new();
            let mut local_roots = Vec::new();
            for root in &manifest.meta.sources {
                let options = match &config.storage_config {
                    Some(per_source) => per_source.options_for(root, &config.storage_options),
                    None => config.storage_options.clone(),
                };
                let loc = Location::open(root, &shard_storage_options(&options))?;
                let local = if loc.url.starts_with("file:") {
                    shard_index::storage::to_url(&loc.url)?.to_file_path().ok()
                } else {
                    None
                };
                locations.push(loc);
                local_roots.push(local);
            }
            specs.push(StreamSpec {
                name: name.clone(),
                fingerprint: manifest.meta.fingerprint.clone(),
                shard_samples: manifest.sample_counts().to_vec(),
                shard_bytes: manifest.sizes().to_vec(),
                mix: s.mix,
            });
            streams.push((name, manifest, locations, local_roots));
        }

        // Output columns: as configured, or all of the first stream's; every stream must have
        // them with the same types.
        let first_schema = &streams[0].1.meta.schema;
        let columns: Vec<String> = match &config.columns {
            Some(c) => c.clone(),
            None => first_schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        };
        let output_schema = decode::project(first_schema, Some(&columns))?;
        let mut stream_ctxs = Vec::with_capacity(streams.len());
        for (name, manifest, locations, local_roots) in streams {
            let schema = decode::project(&manifest.meta.schema, Some(&columns))?;
            for (a, b) in output_schema.fields().iter().zip(schema.fields()) {
                if !same_type(a.data_type(), b.data_type()) {
                    return Err(Error::Config(format!(
                        "column {:?} is {} in stream {} but {} in stream {name}; select columns \
                         that agree",
                        a.name(),
                        a.data_type(),
                        stream_ctxs
                            .first()
                            .map_or("0", |s: &StreamCtx| s.name.as_str()),
                        b.data_type()
                    )));
                }
            }
            stream_ctxs.push(StreamCtx {
                name,
                manifest,
                locations,
                local_roots,
                schema,
            });
        }

        let counters = Arc::new(Counters::default());
        let data = DataSize::of(&stream_ctxs);
        let cache = match &config.cache_dir {
            Some(dir) => {
                let cache = DiskCache::open(CacheConfig {
                    dir: dir.clone(),
                    limit: config.cache_limit,
                    huge_pages: config.huge_pages,
                })?;
                cache.check_fits(
                    data.working_set(config.prefetch_bytes),
                    &format!(
                        "prefetch_bytes {} bounds the look-ahead; the largest unit is {} bytes",
                        config.prefetch_bytes, data.largest_unit
                    ),
                )?;
                Some(cache)
            }
            None => None,
        };

        let allocator = Allocator::new(config.pin_memory, config.pin_device)?;
        let circulating = config.batch_queue + config.collate_threads + 1 + POOL_BATCHES_EXTRA;
        let pool = BufferPool::new(allocator, MIN_POOL_RETAIN).keep_batches(circulating as u64);
        let collator = Arc::new(Collator::new(
            &output_schema,
            |c| config.column_mode_of(c),
            pool.clone(),
        ));

        let (worker, workers) = config.effective_worker();
        let topology = Topology::new(config.nodes, config.ranks_per_node, workers);
        let options = PlanOptions {
            seed: config.seed,
            shuffle: config.shuffle,
            window: config.effective_window(),
            // A resumed run keeps the warm-up it started with unless told otherwise.
            warmup: config
                .warmup
                .or(config.resume.as_ref().map(|s| s.warmup))
                .unwrap_or(DEFAULT_WARMUP),
            global_batch_size: config.batch_size * topology.world(),
            drop_last: config.drop_last,
            canonical_nodes: config.canonical_nodes,
            epoch_size: config.epoch_size,
        };
        let plan = match &config.resume {
            Some(state) => EpochPlan::resume(specs.clone(), options.clone(), state)?,
            None => {
                EpochPlan::with_topology(specs.clone(), options.clone(), config.epoch, topology)?
            }
        };
        // Later epochs keep this run's canonical node count (a resume state's included).
        let mut options = options;
        options.canonical_nodes = Some(plan.canonical_nodes());
        let rank_plan = plan.rank(topology, config.rank)?;
        let warnings: Vec<String> = data
            .look_ahead_warning(plan.window_samples(), config.prefetch_bytes)
            .into_iter()
            .collect();
        for w in &warnings {
            tracing::warn!("{w}");
        }

        // Every shard mapped in place (local files, no cache to copy them into).
        let all_mapped = cache.is_none()
            && stream_ctxs
                .iter()
                .all(|s| s.local_roots.iter().all(Option::is_some));
        let io_concurrency = if all_mapped {
            config.io_concurrency.min(LOCAL_IO_CONCURRENCY)
        } else {
            config.io_concurrency
        };
        let ctx = Arc::new(Ctx {
            streams: stream_ctxs,
            columns,
            fetcher: Fetcher::new(counters.clone(), cache, FetchPolicy::from_config(&config)),
            footers: Mutex::new(HashMap::new()),
            decode_slots: Arc::new(Semaphore::new(config.decode_threads)),
            plain_fast_path: config.plain_fast_path,
            counters,
        });
        Ok(Loader {
            io_slots: Arc::new(Semaphore::new(io_concurrency)),
            io_limit: io_concurrency,
            config,
            ctx,
            specs,
            options,
            topology,
            plan,
            rank_plan,
            worker: (worker, workers),
            delivered: 0,
            last_index: None,
            pipeline: None,
            failed: false,
            collator,
            pool,
            warnings,
            created,
            runtime: Some(runtime),
        })
    }

    /// What the configuration will cost that the caller may not expect (today: a look-ahead
    /// too small for the shuffle window), one sentence each; also logged at construction. The
    /// Python binding raises them as `warnings.warn`.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Batches this loader yields in the current epoch (from its start, or from the resume
    /// point), counting those already delivered.
    pub fn len(&self) -> u64 {
        let (w, n) = self.worker;
        self.rank_plan
            .num_batches()
            .saturating_sub(u64::from(w))
            .div_ceil(u64::from(n))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batches still to come in the current epoch.
    pub fn remaining(&self) -> u64 {
        self.len() - self.delivered
    }

    /// Current epoch.
    pub fn epoch(&self) -> u64 {
        self.plan.epoch()
    }

    /// The plan of the current epoch (for inspection).
    pub fn plan(&self) -> &EpochPlan {
        &self.plan
    }

    /// The output schema's column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.ctx.columns
    }

    /// Switches to epoch `epoch` from its start (stopping any prefetching of the current one).
    ///
    /// Asking for the current epoch before any of its batches was delivered changes nothing, so
    /// the usual `for e in start..n { loader.set_epoch(e); for b in loader.iter() { … } }` keeps
    /// a resumed epoch's position instead of restarting it.
    pub fn set_epoch(&mut self, epoch: u64) -> Result<()> {
        if epoch == self.plan.epoch() && self.delivered == 0 {
            self.failed = false;
            return Ok(());
        }
        self.pipeline = None;
        let plan = EpochPlan::with_topology(
            self.specs.clone(),
            self.options.clone(),
            epoch,
            self.topology,
        )?;
        self.rank_plan = plan.rank(self.topology, self.config.rank)?;
        self.plan = plan;
        self.delivered = 0;
        self.last_index = None;
        self.failed = false;
        Ok(())
    }

    /// Resume state after the batches this loader delivered (not those merely prefetched).
    ///
    /// With one worker per rank it is exact. With several, each worker only knows its own
    /// batches; the state assumes the rank consumed every batch up to this worker's last one,
    /// which is what a DataLoader reading its workers round-robin does — the process that
    /// consumes batches should call [`Loader::state_after`] with its own count instead.
    pub fn state(&self) -> Result<ResumeState> {
        let consumed = self.last_index.map_or(0, |k| k + 1);
        self.state_after(consumed)
    }

    /// Resume state after the rank consumed its first `batches` batches of the current epoch
    /// plan (across all its workers).
    pub fn state_after(&self, batches: u64) -> Result<ResumeState> {
        Ok(self.plan.state_after(batches)?)
    }

    /// Counters since the loader was created.
    pub fn stats(&self) -> LoaderStats {
        self.stats_handle().read()
    }

    /// Reads this loader's counters from another thread while the loader is busy (a consumer
    /// blocked in `next()` holds `&mut self`).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle::new(
            self.ctx.counters.clone(),
            self.pool.clone(),
            self.ctx.fetcher.cache().cloned(),
        )
    }

    /// The pool every batch buffer comes from (for arrays a binding adds to a batch, so that
    /// they are page-locked like the columns).
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// Iterates over the rest of the current epoch. Calling it again continues where the last
    /// iterator stopped (prefetched batches are kept); after an error it retries from the first
    /// batch not delivered.
    pub fn iter(&mut self) -> Iter<'_> {
        self.failed = false;
        Iter { loader: self }
    }

    /// The next batch of the current epoch; `None` at its end or after an error.
    pub fn next_batch(&mut self) -> Option<Result<Batch>> {
        match self.receive(None) {
            NextBatch::Ready(batch) => Some(batch),
            NextBatch::End => None,
            NextBatch::Pending => unreachable!("a wait without a timeout does not time out"),
        }
    }

    /// Like [`next_batch`](Self::next_batch), but waits at most `timeout`. A caller that must
    /// stay responsive while the store stalls (the Python binding checks for Ctrl-C between
    /// waits) calls it in a loop: a wait that times out takes nothing, so nothing is lost.
    pub fn next_batch_within(&mut self, timeout: Duration) -> NextBatch {
        self.receive(Some(timeout))
    }

    fn receive(&mut self, timeout: Option<Duration>) -> NextBatch {
        if self.failed || self.delivered >= self.len() {
            return NextBatch::End;
        }
        if self.pipeline.is_none() {
            self.pipeline = Some(self.start_pipeline());
        }
        let pipeline = self.pipeline.as_ref().expect("started");
        let started = Instant::now();
        // `None` inside: the channel closed (the producer ended).
        let received = match timeout {
            None => Ok(pipeline.batches.recv().ok()),
            Some(timeout) => match pipeline.batches.recv_timeout(timeout) {
                Ok(received) => Ok(Some(received)),
                Err(RecvTimeoutError::Disconnected) => Ok(None),
                Err(RecvTimeoutError::Timeout) => Err(()),
            },
        };
        Counters::add_time(&self.ctx.counters.stall_ns, started);
        let Ok(received) = received else {
            return NextBatch::Pending;
        };
        let counters = &self.ctx.counters;
        NextBatch::Ready(match received {
            Some(Ok(batch)) => {
                self.delivered += 1;
                self.last_index = Some(batch.index);
                Counters::add(&counters.batches, 1);
                Counters::add(&counters.samples, batch.len() as u64);
                let padded = batch.padded.iter().filter(|&&p| p).count() as u64;
                Counters::add(&counters.padded_samples, padded);
                if counters.first_batch_ns.load(Ordering::Relaxed) == 0 {
                    Counters::add_time(&counters.first_batch_ns, self.created);
                }
                Ok(batch)
            }
            Some(Err(e)) => {
                self.pipeline = None;
                self.failed = true;
                Err(e)
            }
            None => {
                // The producer ended without sending everything: only a shutdown does that.
                self.pipeline = None;
                self.failed = true;
                Err(Error::Stopped("the batch producer ended early".into()))
            }
        })
    }

    fn start_pipeline(&self) -> Pipeline {
        let runtime = self.runtime.as_ref().expect("present until drop");
        let (w, n) = self.worker;
        // Footers left over from an earlier pipeline (aborted mid-epoch) are not tracked by
        // the new producer; start clean.
        self.ctx.footers.lock().expect("footer lock").clear();
        let (req_tx, req_rx) = tokio::sync::mpsc::unbounded_channel();
        let (done_tx, done_rx) = channel::unbounded();
        let (out_tx, out_rx) = channel::bounded(self.config.batch_queue);
        let (stop_tx, stop_rx) = channel::bounded::<()>(0);
        let dispatcher = runtime
            .spawn(dispatch(
                self.ctx.clone(),
                req_rx,
                done_tx,
                self.io_slots.clone(),
                self.io_limit,
            ))
            .abort_handle();
        let producer = Producer {
            ctx: self.ctx.clone(),
            plan: self.rank_plan.clone(),
            epoch: self.plan.epoch(),
            next_k: u64::from(w) + self.delivered * u64::from(n),
            step: u64::from(n),
            budget: self.config.prefetch_bytes,
            assembly: Assembly::start(
                self.config.collate_threads,
                self.collator.clone(),
                self.ctx.counters.clone(),
            ),
            pending: VecDeque::new(),
            slots: HashMap::new(),
            units_per_shard: HashMap::new(),
            seen: HashSet::new(),
            ratios: vec![(0, 0); self.ctx.streams.len()],
            row_group_ends: FxHashMap::default(),
            charged: 0,
            started: false,
            requests: req_tx,
            io: runtime.handle().clone(),
            done: done_rx,
            out: out_tx,
            stop: stop_rx,
        };
        let thread = std::thread::Builder::new()
            .name("shardstream-producer".into())
            .spawn(move || producer.run())
            .expect("spawning the producer thread");
        Pipeline {
            batches: out_rx,
            stop: Some(stop_tx),
            producer: Some(thread),
            dispatcher,
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.pipeline = None;
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The loader's batches for the rest of the current epoch.
pub struct Iter<'a> {
    loader: &'a mut Loader,
}

impl Iterator for Iter<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        self.loader.next_batch()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.loader.remaining()).unwrap_or(usize::MAX);
        (0, Some(n))
    }
}

impl<'a> IntoIterator for &'a mut Loader {
    type Item = Result<Batch>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Runs `fut` on the loader's runtime, also when called from inside another runtime (a plain
/// `block_on` would panic there), by blocking a helper thread instead of this one.
fn block_on<F>(runtime: &Runtime, fut: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return runtime.block_on(fut);
    }
    std::thread::scope(|s| {
        s.spawn(|| runtime.block_on(fut))
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// What sizes the look-ahead, summed over the streams' manifests once per loader.
struct DataSize {
    /// Stored bytes of every shard.
    bytes: u64,
    samples: u64,
    /// The largest unit: a Parquet row group, or a whole tar / JSONL shard.
    largest_unit: u64,
}

impl DataSize {
    fn of(streams: &[StreamCtx]) -> DataSize {
        let mut d = DataSize {
            bytes: 0,
            samples: 0,
            largest_unit: 0,
        };
        for s in streams {
            let m = &s.manifest;
            d.bytes = d.bytes.saturating_add(m.sizes().iter().sum());
            d.samples = d.samples.saturating_add(m.sample_counts().iter().sum());
            let whole_shards = (0..m.len())
                .filter(|&i| m.kind(i).format != ShardFormat::Parquet)
                .map(|i| m.size(i))
                .max()
                .unwrap_or(0);
            d.largest_unit = d
                .largest_unit
                .max(m.max_row_group_length())
                .max(whole_shards);
        }
        d
    }

    /// Bytes the cache must hold at once: what the look-ahead may keep in use (its stored bytes
    /// are at most `prefetch_bytes`, and no more than the data) — and at least the largest unit.
    fn working_set(&self, prefetch_bytes: u64) -> u64 {
        prefetch_bytes.min(self.bytes).max(self.largest_unit)
    }

    /// A warning when `prefetch_bytes` cannot hold two shuffle windows of the data (in stored
    /// bytes, as the planner converts a window: its samples × the average stored bytes per
    /// sample) plus the largest unit. Every batch draws from its whole window, so a unit stays
    /// needed until its window's last batches; a look-ahead below two windows cannot keep one
    /// window while it loads the next, evicts units that later batches still need, and fetches
    /// them again. Measured on 2 GiB of 8 KiB token rows (windows of 128 MiB, 276 MB by this
    /// rule): 128 MB of look-ahead fetched the data 64 times over, 268 MB 1.9 times, 300 MB
    /// once. An estimate from below: it counts one canonical node's window in stored bytes,
    /// while a loader reading several nodes, or charging decompressed units, needs more.
    fn look_ahead_warning(&self, window_samples: u64, prefetch_bytes: u64) -> Option<String> {
        let per_sample = self.bytes / self.samples.max(1);
        let largest = self.largest_unit;
        let needed = u64::try_from(
            2 * u128::from(window_samples) * u128::from(per_sample) + u128::from(largest),
        )
        .unwrap_or(u64::MAX);
        (prefetch_bytes < needed).then(|| {
            format!(
                "prefetch_bytes ({prefetch_bytes}) is below two shuffle windows of this data \
                 ({needed} bytes: 2 x {window_samples} samples x {per_sample} stored bytes each, \
                 plus the largest unit, {largest}): units will be fetched more than once per \
                 epoch, up to once per batch of their window. Raise prefetch_bytes to at least \
                 {needed}, or shrink the window"
            )
        })
    }
}

/// Types equal up to nullability and list item names.
fn same_type(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::List(x), DataType::List(y))
        | (DataType::LargeList(x), DataType::LargeList(y)) => {
            same_type(x.data_type(), y.data_type())
        }
        (DataType::FixedSizeList(x, n), DataType::FixedSizeList(y, m)) => {
            n == m && same_type(x.data_type(), y.data_type())
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_types_can_cross_threads() {
        // The Python binding moves loaders and batches between threads (and releases the GIL).
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Loader>();
        send_sync::<Batch>();
        send_sync::<LoaderStats>();
    }

    #[test]
    fn column_types_agree_up_to_nullability_and_item_names() {
        assert!(same_type(
            &DataType::List(Arc::new(arrow::datatypes::Field::new(
                "item",
                DataType::Int32,
                true
            ))),
            &DataType::List(Arc::new(arrow::datatypes::Field::new(
                "element",
                DataType::Int32,
                false
            ))),
        ));
        assert!(!same_type(&DataType::Int32, &DataType::Int64));
    }
}
