//! [`LoaderConfig`]: what to load and how, as a plain struct with documented defaults and
//! `with_*` setters (object_store builder style). [`LoaderConfig::validate`] checks everything
//! that can be checked without reading the manifests; [`crate::engine::Loader::new`] checks the
//! rest (columns against the dataset schema, the planner's own rules).
//!
//! Options fall in three groups:
//! - **the plan** (`streams`, `seed`, `shuffle`, `window`, `drop_last`, `epoch_size`,
//!   `canonical_nodes`, the topology and `batch_size`): every rank must use the same values, and
//!   a resume state refuses a change that would alter the sample order;
//! - **what a batch holds** (`columns`, `list_mode`/`list_modes`, `binary_mode`/`binary_modes`);
//! - **performance and resources** (`prefetch_bytes`, `io_concurrency`, `decode_threads`,
//!   `cache_dir`/`cache_limit`, `pin_memory`, `batch_queue`, `huge_pages`): these never change
//!   which samples arrive or in which order.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shard_index::plan::ResumeState;
use shard_index::storage::StorageConfig;
use shard_index::{Manifest, StorageOptions};

pub use shard_index::plan::{Mix, Window};

pub use crate::pinned::PinMemory;
use crate::{Error, Result};

/// Default `prefetch_bytes`: 512 MiB.
pub const DEFAULT_PREFETCH_BYTES: u64 = 512 << 20;
/// Default shuffle window: 128 MiB of (stored) samples per canonical node. A quarter of the
/// default prefetch budget, so the look-ahead holds the current window and the next.
pub const DEFAULT_WINDOW: Window = Window::Bytes(128 << 20);
/// Default units fetched at once (the request cap is twice this): 32 row groups of 8 MiB keep
/// ~270 MB in flight, what a store answering in tens of milliseconds needs to stream at GB/s
/// (measured in `fetch`'s module docs).
pub const DEFAULT_IO_CONCURRENCY: usize = 32;

/// Units fetched at once, at most, when every shard is a local file mapped in place (no
/// `cache_dir`); `io_concurrency` still caps it. Fetching one is a `stat`, a `mmap` and, for
/// Parquet, parsing its footer: there is no latency to hide, and the pages are read later, by
/// the decoders and collate threads that touch them. 32 at once only started the whole
/// look-ahead together, ahead of the units the next batches wait for, on ~30 blocking
/// threads; 4 read the peers bench's epochs from the page cache ~3% faster (tokens and blobs
/// alike; 2 and 8 within noise of 4).
pub const LOCAL_IO_CONCURRENCY: usize = 4;

/// Default smallest piece of a split read: reads at least twice this long go out as several
/// concurrent ranged GETs of 8–16 MiB (see `fetch`'s module docs), the range size S3's own
/// guidance names; an 8 MiB row group stays one request.
pub const DEFAULT_RANGE_SPLIT_BYTES: u64 = 8 << 20;
/// Default decoder threads.
pub const DEFAULT_DECODE_THREADS: usize = 2;

/// Collate threads by default: one per core, at most 4 (the copy is bound by memory
/// bandwidth long before that).
pub fn default_collate_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
}
/// Default `request_timeout`: 30 s without response headers or body bytes.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `fetch_attempts`.
pub const DEFAULT_FETCH_ATTEMPTS: u32 = 10;
/// Default finished batches queued ahead of the consumer.
pub const DEFAULT_BATCH_QUEUE: usize = 2;

/// Where a stream's manifest comes from.
#[derive(Clone, Debug)]
pub enum ManifestSource {
    /// A local path or object-store URL of a `manifest.parquet`, read with `storage_options`.
    Url(String),
    /// A manifest already in memory.
    Loaded(Arc<Manifest>),
}

/// One dataset in the mix.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Identifies the stream in resume states; default `stream-<i>` (its position).
    pub name: Option<String>,
    pub manifest: ManifestSource,
    pub mix: Mix,
}

/// How a variable-length list column becomes tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListMode {
    /// `values: [B, Lmax]` padded with zeros, plus `lengths: [B]` (int64).
    #[default]
    Padded,
    /// `values: [ΣL]` concatenated, plus `offsets: [B + 1]` (int64).
    Ragged,
}

/// How a binary or string column (Arrow Binary, LargeBinary, Utf8, LargeUtf8, their views, and
/// FixedSizeBinary) reaches the consumer.
///
/// The tensor modes treat each value as a list of `uint8` and lay it out like a list of numbers
/// in [`ListMode`]: gathered straight into pooled (pinned when available) batch memory, no
/// per-value objects. A null value counts as empty. FixedSizeBinary(L) is an exact `[B, L]`
/// uint8 tensor in both tensor modes (like a fixed-size list of numbers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BinaryMode {
    /// One Arrow array per batch (`Column::Arrow`); the Python binding makes a `list[bytes]` /
    /// `list[str]` of it (one Python object per value).
    #[default]
    Bytes,
    /// `values: uint8 [B, Lmax]` padded with zeros, plus `lengths: [B]` (int64).
    Padded,
    /// `values: uint8 [ΣL]` concatenated, plus `offsets: [B + 1]` (int64).
    Ragged,
}

impl BinaryMode {
    /// The list layout of the tensor modes (`None` for [`BinaryMode::Bytes`]).
    pub fn tensor(self) -> Option<ListMode> {
        match self {
            BinaryMode::Bytes => None,
            BinaryMode::Padded => Some(ListMode::Padded),
            BinaryMode::Ragged => Some(ListMode::Ragged),
        }
    }
}

/// How one column is laid out: its list mode (lists of numbers) and its binary mode (binary
/// and string columns). A column has only one of those types, so only one of the two applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ColumnMode {
    pub list: ListMode,
    pub binary: BinaryMode,
}

impl From<ListMode> for ColumnMode {
    /// The list mode, binary columns as today ([`BinaryMode::Bytes`]).
    fn from(list: ListMode) -> ColumnMode {
        ColumnMode {
            list,
            binary: BinaryMode::Bytes,
        }
    }
}

/// Everything the loader needs to know. See the module docs for the groups of options.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Datasets and their share of the epoch. At least one.
    pub streams: Vec<StreamConfig>,
    /// object_store options for manifests and shards (see `shard_index::storage`).
    pub storage_options: StorageOptions,
    /// Per-source options on top of `storage_options` (endpoints, regions, credentials per
    /// bucket), in the format of `shard-index build --storage-config`; applied to each source
    /// root of the manifests (default: none).
    pub storage_config: Option<StorageConfig>,
    /// Samples per batch on this rank (the global batch is `batch_size × world`). Required.
    pub batch_size: u64,
    /// Columns to load, in output order; `None` = all columns of the schema.
    pub columns: Option<Vec<String>>,
    /// Shuffle (default true). `false` keeps manifest order per canonical node.
    pub shuffle: bool,
    /// Seed of every permutation (default 0).
    pub seed: u64,
    /// Shuffle window per canonical node (default [`DEFAULT_WINDOW`]).
    pub window: Option<Window>,
    /// Warm-up windows: the first window is `window >> warmup`, doubling up to a full window,
    /// so the first batch waits for one or two row groups (default
    /// [`shard_index::plan::DEFAULT_WARMUP`], or the resume state's; 0 = off).
    pub warmup: Option<u32>,
    /// Drop the epoch's partial last global batch instead of padding it (default false).
    pub drop_last: bool,
    /// Samples per epoch shared by `Mix::Weight` streams (default: their summed sizes).
    pub epoch_size: Option<u64>,
    /// Machines in the job (default 1).
    pub nodes: u32,
    /// Ranks (training processes) per machine (default 1).
    pub ranks_per_node: u32,
    /// This process's global rank (default 0).
    pub rank: u32,
    /// `(worker, num_workers)` when the rank's batches are split over several loaders
    /// (DataLoader workers): worker `w` loads batches `k` with `k % num_workers == w`.
    pub worker: Option<(u32, u32)>,
    /// Canonical node count `C` (default: `nodes` when the run starts; a resume state's wins).
    pub canonical_nodes: Option<u32>,
    /// Node-local disk cache; `None` streams through memory only (default).
    pub cache_dir: Option<PathBuf>,
    /// Cache size limit in bytes (default: unlimited).
    pub cache_limit: Option<u64>,
    /// Memory budget for fetched and decoded data ahead of the consumer (default 512 MiB). The
    /// look-ahead always holds at least what the next batch needs, even if that exceeds it.
    pub prefetch_bytes: u64,
    /// Units (row groups or whole shards) being fetched at once, started in order of first use
    /// (default 32; at most [`LOCAL_IO_CONCURRENCY`] when every shard is a local file and there
    /// is no `cache_dir`). A projected Parquet row group issues one request per coalesced range
    /// of its column chunks, so the request count can be a small multiple of this.
    pub io_concurrency: usize,
    /// Reads from the store at least twice this long go out as several concurrent ranged GETs
    /// of at least this size each (default [`DEFAULT_RANGE_SPLIT_BYTES`]).
    pub range_split_bytes: u64,
    /// Threads of the loader's async I/O runtime (default 2).
    pub io_threads: usize,
    /// Concurrent decoders (default 2).
    pub decode_threads: usize,
    /// Threads gathering batches into pooled buffers, each working on its own batch (default:
    /// the machine's cores, at most 4). On PLAIN Parquet from the page cache this copy is the
    /// loader's main cost, so it scales with these threads.
    pub collate_threads: usize,
    /// Decode PLAIN numbers and lists of numbers in Parquet without arrow-rs's reader, copying
    /// page bytes straight into batches (default true; see `decode::plain`). Off only to compare.
    pub plain_fast_path: bool,
    /// Ask the kernel for huge pages on mapped files (local shards, cache entries; default
    /// true, see `mapping`): a file read from disk through the loader then stays cached in
    /// 2 MiB folios, and every later epoch maps it ~1.6× faster. Off where the first read costs
    /// more than that wins: measured 16% slower on a VM whose free 2 MiB blocks fault on the
    /// host (virtio-balloon free page reporting) and whose disk reads ahead 8 MiB.
    pub huge_pages: bool,
    /// Finished batches waiting for the consumer (default 2); their memory comes on top of
    /// `prefetch_bytes`.
    pub batch_queue: usize,
    /// Default for list columns (default [`ListMode::Padded`]).
    pub list_mode: ListMode,
    /// Per-column overrides of `list_mode`.
    pub list_modes: BTreeMap<String, ListMode>,
    /// Default for binary and string columns (default [`BinaryMode::Bytes`]: Arrow arrays, which
    /// Python sees as lists of `bytes`/`str`).
    pub binary_mode: BinaryMode,
    /// Per-column overrides of `binary_mode`.
    pub binary_modes: BTreeMap<String, BinaryMode>,
    /// Page-locked batch memory (default [`PinMemory::Auto`]).
    pub pin_memory: PinMemory,
    /// CUDA device whose context allocates pinned memory (default `LOCAL_RANK`, else 0).
    pub pin_device: Option<u32>,
    /// Continue an interrupted epoch (its epoch number wins over `epoch`).
    pub resume: Option<ResumeState>,
    /// Epoch to load first (default 0).
    pub epoch: u64,
    /// Attempts per read on throttling (503/429), 5xx, resets, short bodies and stalls
    /// (default 10, with jittered exponential backoff). The loader turns object_store's own
    /// retries off for shard reads unless `storage_options` sets `max_retries`, so that it sees
    /// every failure (see [`crate::fetch`]).
    pub fetch_attempts: u32,
    /// Longest wait for a response's headers, and then for each further chunk of its body
    /// (default 30 s); a stalled request is abandoned and retried. It bounds progress, not
    /// transfer time.
    pub request_timeout: Duration,
    /// Hedged requests (default true): a GET still without an answer after the 95th
    /// percentile of recent GETs gets a duplicate, and the first answer wins. Only sent when
    /// the adaptive concurrency limit has room.
    pub hedge: bool,
    /// Read answered response bodies a few at a time, in the order their headers came, as many
    /// at once as add throughput (default true; see `fetch::transfers`), so units arrive in the
    /// order they are needed instead of all together at the end of a burst. Off: every
    /// answered body is read at once.
    pub adaptive_transfers: bool,
}

impl LoaderConfig {
    /// One stream read from `manifest` (path or URL), seen once per epoch.
    pub fn new(manifest: impl Into<String>, batch_size: u64) -> LoaderConfig {
        LoaderConfig {
            streams: Vec::new(),
            storage_options: StorageOptions::new(),
            storage_config: None,
            batch_size,
            columns: None,
            shuffle: true,
            seed: 0,
            window: None,
            warmup: None,
            drop_last: false,
            epoch_size: None,
            nodes: 1,
            ranks_per_node: 1,
            rank: 0,
            worker: None,
            canonical_nodes: None,
            cache_dir: None,
            cache_limit: None,
            prefetch_bytes: DEFAULT_PREFETCH_BYTES,
            io_concurrency: DEFAULT_IO_CONCURRENCY,
            range_split_bytes: DEFAULT_RANGE_SPLIT_BYTES,
            io_threads: 2,
            decode_threads: DEFAULT_DECODE_THREADS,
            collate_threads: default_collate_threads(),
            plain_fast_path: true,
            huge_pages: true,
            batch_queue: DEFAULT_BATCH_QUEUE,
            list_mode: ListMode::Padded,
            list_modes: BTreeMap::new(),
            binary_mode: BinaryMode::Bytes,
            binary_modes: BTreeMap::new(),
            pin_memory: PinMemory::Auto,
            pin_device: None,
            resume: None,
            epoch: 0,
            fetch_attempts: DEFAULT_FETCH_ATTEMPTS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            hedge: true,
            adaptive_transfers: true,
        }
        .with_stream(manifest, Mix::Repeat(1.0))
    }

    /// One stream from a manifest already in memory, seen once per epoch.
    pub fn from_manifest(manifest: Manifest, batch_size: u64) -> LoaderConfig {
        let mut c = LoaderConfig::new("", batch_size);
        c.streams.clear();
        c.with_manifest(manifest, Mix::Repeat(1.0))
    }

    /// Adds a stream read from a manifest path or URL.
    pub fn with_stream(mut self, manifest: impl Into<String>, mix: Mix) -> Self {
        self.streams.push(StreamConfig {
            name: None,
            manifest: ManifestSource::Url(manifest.into()),
            mix,
        });
        self
    }

    /// Adds a stream from a manifest in memory.
    pub fn with_manifest(mut self, manifest: Manifest, mix: Mix) -> Self {
        self.streams.push(StreamConfig {
            name: None,
            manifest: ManifestSource::Loaded(Arc::new(manifest)),
            mix,
        });
        self
    }

    /// Names the most recently added stream (resume states identify streams by name).
    pub fn with_stream_name(mut self, name: impl Into<String>) -> Self {
        if let Some(s) = self.streams.last_mut() {
            s.name = Some(name.into());
        }
        self
    }

    pub fn with_storage_options(mut self, options: StorageOptions) -> Self {
        self.storage_options = options;
        self
    }

    /// Per-source storage options (see [`LoaderConfig::storage_config`]).
    pub fn with_storage_config(mut self, config: StorageConfig) -> Self {
        self.storage_config = Some(config);
        self
    }

    pub fn with_storage_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.storage_options.insert(key.into(), value.into());
        self
    }

    pub fn with_batch_size(mut self, batch_size: u64) -> Self {
        self.batch_size = batch_size;
        self
    }

    pub fn with_columns<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.columns = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    pub fn with_shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn with_window(mut self, window: Window) -> Self {
        self.window = Some(window);
        self
    }

    pub fn with_warmup(mut self, warmup: u32) -> Self {
        self.warmup = Some(warmup);
        self
    }

    pub fn with_drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    pub fn with_huge_pages(mut self, huge_pages: bool) -> Self {
        self.huge_pages = huge_pages;
        self
    }

    pub fn with_epoch_size(mut self, samples: u64) -> Self {
        self.epoch_size = Some(samples);
        self
    }

    /// Physical topology: `nodes` machines of `ranks_per_node` ranks; this process is `rank`.
    pub fn with_topology(mut self, nodes: u32, ranks_per_node: u32, rank: u32) -> Self {
        self.nodes = nodes;
        self.ranks_per_node = ranks_per_node;
        self.rank = rank;
        self
    }

    /// Reads the topology that torchrun exports (`RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`);
    /// leaves it unchanged when they are unset.
    pub fn with_torchrun_env(self) -> Result<Self> {
        let var = |name: &str| -> Result<Option<u32>> {
            match std::env::var(name) {
                Err(_) => Ok(None),
                Ok(v) => v.trim().parse().map(Some).map_err(|_| {
                    Error::Config(format!("environment variable {name}={v:?} is not a number"))
                }),
            }
        };
        let (Some(rank), Some(world)) = (var("RANK")?, var("WORLD_SIZE")?) else {
            return Ok(self);
        };
        let local = var("LOCAL_WORLD_SIZE")?.unwrap_or(world);
        if local == 0 || world % local != 0 {
            return Err(Error::Config(format!(
                "WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE={local}"
            )));
        }
        Ok(self.with_topology(world / local, local, rank))
    }

    /// This loader is worker `worker` of `num_workers` loading the rank's batches.
    pub fn with_worker(mut self, worker: u32, num_workers: u32) -> Self {
        self.worker = Some((worker, num_workers));
        self
    }

    pub fn with_canonical_nodes(mut self, c: u32) -> Self {
        self.canonical_nodes = Some(c);
        self
    }

    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    pub fn with_cache_limit(mut self, bytes: u64) -> Self {
        self.cache_limit = Some(bytes);
        self
    }

    pub fn with_prefetch_bytes(mut self, bytes: u64) -> Self {
        self.prefetch_bytes = bytes;
        self
    }

    pub fn with_range_split_bytes(mut self, bytes: u64) -> Self {
        self.range_split_bytes = bytes;
        self
    }

    pub fn with_io_concurrency(mut self, n: usize) -> Self {
        self.io_concurrency = n;
        self
    }

    pub fn with_io_threads(mut self, n: usize) -> Self {
        self.io_threads = n;
        self
    }

    pub fn with_collate_threads(mut self, n: usize) -> Self {
        self.collate_threads = n;
        self
    }

    pub fn with_decode_threads(mut self, n: usize) -> Self {
        self.decode_threads = n;
        self
    }

    pub fn with_batch_queue(mut self, n: usize) -> Self {
        self.batch_queue = n;
        self
    }

    /// Default list mode for all list columns.
    pub fn with_default_list_mode(mut self, mode: ListMode) -> Self {
        self.list_mode = mode;
        self
    }

    /// List mode of one column.
    pub fn with_list_mode(mut self, column: impl Into<String>, mode: ListMode) -> Self {
        self.list_modes.insert(column.into(), mode);
        self
    }

    /// Default binary mode for all binary and string columns.
    pub fn with_default_binary_mode(mut self, mode: BinaryMode) -> Self {
        self.binary_mode = mode;
        self
    }

    /// Binary mode of one column.
    pub fn with_binary_mode(mut self, column: impl Into<String>, mode: BinaryMode) -> Self {
        self.binary_modes.insert(column.into(), mode);
        self
    }

    pub fn with_pin_memory(mut self, pin: PinMemory) -> Self {
        self.pin_memory = pin;
        self
    }

    pub fn with_pin_device(mut self, device: u32) -> Self {
        self.pin_device = Some(device);
        self
    }

    pub fn with_resume(mut self, state: ResumeState) -> Self {
        self.resume = Some(state);
        self
    }

    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    pub fn with_fetch_attempts(mut self, attempts: u32) -> Self {
        self.fetch_attempts = attempts;
        self
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn with_hedge(mut self, hedge: bool) -> Self {
        self.hedge = hedge;
        self
    }

    pub fn with_adaptive_transfers(mut self, on: bool) -> Self {
        self.adaptive_transfers = on;
        self
    }

    /// The layout modes of `column`: its list mode and its binary mode.
    pub fn column_mode_of(&self, column: &str) -> ColumnMode {
        ColumnMode {
            list: self.list_mode_of(column),
            binary: self.binary_mode_of(column),
        }
    }

    /// The list mode of `column`.
    pub fn list_mode_of(&self, column: &str) -> ListMode {
        self.list_modes
            .get(column)
            .copied()
            .unwrap_or(self.list_mode)
    }

    /// The binary mode of `column`.
    pub fn binary_mode_of(&self, column: &str) -> BinaryMode {
        self.binary_modes
            .get(column)
            .copied()
            .unwrap_or(self.binary_mode)
    }

    /// The shuffle window in effect.
    pub fn effective_window(&self) -> Window {
        self.window.unwrap_or(DEFAULT_WINDOW)
    }

    /// `(worker, num_workers)` in effect.
    pub fn effective_worker(&self) -> (u32, u32) {
        self.worker.unwrap_or((0, 1))
    }

    /// Checks the options that need no manifest. Every failure is [`Error::Config`] saying
    /// which option and what would be valid.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.streams.is_empty() {
            return bad("no streams: add a manifest with with_stream".into());
        }
        for (i, s) in self.streams.iter().enumerate() {
            if let ManifestSource::Url(u) = &s.manifest {
                if u.is_empty() {
                    return bad(format!("stream {i} has an empty manifest location"));
                }
            }
            let (Mix::Weight(v) | Mix::Repeat(v)) = s.mix;
            if !v.is_finite() || v < 0.0 {
                return bad(format!("stream {i} has an invalid mix value {v}"));
            }
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.nodes == 0 || self.ranks_per_node == 0 {
            return bad(format!(
                "nodes ({}) and ranks_per_node ({}) must be at least 1",
                self.nodes, self.ranks_per_node
            ));
        }
        let world = u64::from(self.nodes) * u64::from(self.ranks_per_node);
        if u64::from(self.rank) >= world {
            return bad(format!(
                "rank {} is out of range for a world of {world} ranks",
                self.rank
            ));
        }
        if self.batch_size.checked_mul(world).is_none() {
            return bad("batch_size × world overflows".into());
        }
        if let Some((w, n)) = self.worker {
            if n == 0 || w >= n {
                return bad(format!("worker {w} of {n} workers is out of range"));
            }
        }
        if self.canonical_nodes == Some(0) {
            return bad("canonical_nodes must be at least 1".into());
        }
        if matches!(self.window, Some(Window::Samples(0) | Window::Bytes(0))) {
            return bad("the shuffle window must be larger than 0".into());
        }
        if self.prefetch_bytes == 0 {
            return bad("prefetch_bytes must be larger than 0".into());
        }
        if self.io_concurrency == 0 {
            return bad("io_concurrency must be at least 1".into());
        }
        if self.range_split_bytes == 0 {
            return bad("range_split_bytes must be larger than 0".into());
        }
        if !(1..=64).contains(&self.io_threads) {
            return bad(format!(
                "io_threads must be 1..=64, got {}",
                self.io_threads
            ));
        }
        if self.collate_threads == 0 || self.collate_threads > 256 {
            return bad(format!(
                "collate_threads must be 1..=256, got {}",
                self.collate_threads
            ));
        }
        if self.decode_threads == 0 || self.decode_threads > 256 {
            return bad(format!(
                "decode_threads must be 1..=256, got {}",
                self.decode_threads
            ));
        }
        if self.batch_queue == 0 {
            return bad("batch_queue must be at least 1".into());
        }
        if self.fetch_attempts == 0 {
            return bad("fetch_attempts must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be longer than 0".into());
        }
        if self.cache_limit.is_some() && self.cache_dir.is_none() {
            return bad("cache_limit is set but cache_dir is not".into());
        }
        if self.cache_limit == Some(0) {
            return bad("cache_limit must be larger than 0 (or unset for no limit)".into());
        }
        if let Some(cols) = &self.columns {
            if cols.is_empty() {
                return bad("columns is an empty list; use None for all columns".into());
            }
            let mut seen = std::collections::HashSet::new();
            for c in cols {
                if !seen.insert(c) {
                    return bad(format!("column {c:?} is listed twice"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LoaderConfig {
        LoaderConfig::new("m.parquet", 8)
    }

    #[test]
    fn defaults_are_valid() {
        let c = cfg();
        c.validate().unwrap();
        assert_eq!(c.effective_window(), DEFAULT_WINDOW);
        assert_eq!(c.effective_worker(), (0, 1));
        assert_eq!(c.streams.len(), 1);
        assert!(c.shuffle);
    }

    #[test]
    fn bad_values_are_config_errors() {
        let cases: Vec<(LoaderConfig, &str)> = vec![
            (cfg().with_batch_size(0), "batch_size"),
            (cfg().with_topology(2, 2, 4), "rank 4"),
            (cfg().with_worker(2, 2), "worker 2"),
            (cfg().with_io_concurrency(0), "io_concurrency"),
            (cfg().with_decode_threads(0), "decode_threads"),
            (cfg().with_collate_threads(0), "collate_threads"),
            (cfg().with_range_split_bytes(0), "range_split_bytes"),
            (cfg().with_prefetch_bytes(0), "prefetch_bytes"),
            (cfg().with_window(Window::Samples(0)), "window"),
            (cfg().with_cache_limit(10), "cache_dir"),
            (cfg().with_columns(["a", "a"]), "twice"),
            (cfg().with_canonical_nodes(0), "canonical_nodes"),
            (cfg().with_batch_queue(0), "batch_queue"),
            (
                cfg().with_request_timeout(Duration::ZERO),
                "request_timeout",
            ),
        ];
        for (c, needle) in cases {
            let err = c.validate().unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{err}");
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
    }

    #[test]
    fn list_modes_fall_back_to_the_default() {
        let c = cfg()
            .with_default_list_mode(ListMode::Ragged)
            .with_list_mode("tokens", ListMode::Padded);
        assert_eq!(c.list_mode_of("tokens"), ListMode::Padded);
        assert_eq!(c.list_mode_of("other"), ListMode::Ragged);
    }

    #[test]
    fn binary_modes_fall_back_to_the_default_and_keep_bytes_by_default() {
        let c = LoaderConfig::new("m", 4);
        assert_eq!(c.binary_mode_of("blob"), BinaryMode::Bytes);
        let c = c
            .with_default_binary_mode(BinaryMode::Ragged)
            .with_binary_mode("text", BinaryMode::Bytes);
        assert_eq!(c.column_mode_of("blob").binary, BinaryMode::Ragged);
        assert_eq!(c.column_mode_of("text").binary, BinaryMode::Bytes);
        assert_eq!(BinaryMode::Padded.tensor(), Some(ListMode::Padded));
        assert_eq!(BinaryMode::Bytes.tensor(), None);
    }
}
