//! [`Loader`]: the engine behind a Python iterator of batch dicts.
//!
//! ```text
//!  Python thread (__next__)                         engine (loader crate)
//!  ────────────────────────                         ─────────────────────
//!  next_batch_within(50 ms) with the  ◀── bounded ◀── producer, tokio I/O, decoders,
//!  GIL released; check_signals()          channel     collate threads
//!  between waits, so Ctrl-C raises at once
//! ```
//!
//! The Python thread takes batches from the engine itself, in waits of at most [`POLL`] with
//! the GIL released, checking for signals in between: Ctrl-C raises at once even on a stalled
//! store, and a wait that timed out took nothing, so the batch it was waiting for is the next
//! `__next__`'s. (An earlier design had a pump thread call the blocking `next_batch` and hand
//! each batch over a rendezvous channel: one more thread and one more wake-up per batch.) The
//! resume state counts only batches handed to Python (`state_after(index of the last one +
//! 1)`), never those the engine merely prefetched.
//!
//! Fork: a `Loader` remembers the process that created it. Used in another process (a forked
//! DataLoader worker), every method raises `ShardStreamError` instead of waiting for threads
//! that do not exist there, and dropping it there leaks it rather than touching locks those
//! threads may have held. This needs no `pthread_atfork` hook (and so no `unsafe`): comparing
//! the process id catches every kind of fork.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use crossbeam::channel::{self, Receiver, RecvTimeoutError};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyBytes, PyDict, PyList};
use shard_index::plan::ResumeState;
use shardstream_loader::config::{BinaryMode, ListMode, Mix, Window};
use shardstream_loader::pool::BufferPool;
use shardstream_loader::{
    Batch, Column, Loader as Engine, LoaderConfig, NextBatch, PinMemory, StatsHandle,
};

use crate::dlpack::Tensor;
use crate::errors::{config_error, to_pyerr, to_pyerr_with_hint, ShardStreamError};

/// Longest wait between two checks for signals (Ctrl-C) while blocked.
const POLL: Duration = Duration::from_millis(50);

const MANIFEST_HINT: &str =
    "check the manifest location, or build a manifest with `shard-index build DATASET -o MANIFEST`";

/// Runs `f` on a helper thread and waits for it with the GIL released, raising
/// `KeyboardInterrupt` (leaving the helper to finish on its own) if a signal arrives.
pub fn run_blocking<T: Send + 'static>(
    py: Python<'_>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> PyResult<T> {
    let (tx, rx) = channel::bounded(1);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| ShardStreamError::new_err(format!("cannot start a thread: {e}")))?;
    wait(py, &rx)
}

/// Receives from `rx` with the GIL released, checking for signals every [`POLL`].
fn wait<T: Send>(py: Python<'_>, rx: &Receiver<T>) -> PyResult<T> {
    loop {
        match py.detach(|| rx.recv_timeout(POLL)) {
            Ok(v) => return Ok(v),
            Err(RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(ShardStreamError::new_err(
                    "internal error: a shardstream helper thread ended without a result (it \
                     panicked; see the message above)",
                ))
            }
        }
    }
}

/// Locks the engine, waiting with the GIL released and checking for signals (`__next__` holds
/// the lock while it waits for a batch, which can take as long as the store does).
fn lock_engine<'a>(py: Python<'_>, engine: &'a Mutex<Engine>) -> PyResult<MutexGuard<'a, Engine>> {
    let mut checked = Instant::now();
    loop {
        match engine.try_lock() {
            Ok(guard) => return Ok(guard),
            Err(TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => {}
        }
        py.detach(|| std::thread::sleep(Duration::from_millis(1)));
        if checked.elapsed() >= POLL {
            py.check_signals()?;
            checked = Instant::now();
        }
    }
}

/// The arrays the binding adds to each batch (`__index__`, `__stream__`, `__padded__`), made
/// in the engine's pool with the GIL released: page-locked like the columns, so that every
/// tensor of a batch can be copied to a GPU without staging.
struct Extras {
    index: Tensor,
    /// Only when the loader mixes several streams.
    stream: Option<Tensor>,
    padded: Tensor,
}

impl Extras {
    fn new(batch: &Batch, pool: &BufferPool, multi_stream: bool) -> Extras {
        let ids: Vec<i64> = batch.samples.iter().map(|s| s.global as i64).collect();
        let stream = multi_stream.then(|| {
            let streams: Vec<i64> = batch.samples.iter().map(|s| i64::from(s.stream)).collect();
            Tensor::pooled_i64(pool, &streams)
        });
        Extras {
            index: Tensor::pooled_i64(pool, &ids),
            stream,
            padded: Tensor::pooled_bools(pool, &batch.padded),
        }
    }
}

/// What `len()`, `.epoch` and `.columns` report, kept beside the engine so that reading them
/// never waits for the engine's lock (see [`State::stats`]). Refreshed wherever the epoch can
/// change: a new engine, `set_epoch`, and `__iter__` moving on to the next epoch.
struct EngineInfo {
    epoch: u64,
    len: u64,
    columns: Vec<String>,
    warnings: Vec<String>,
}

impl EngineInfo {
    fn of(engine: &Engine) -> Self {
        EngineInfo {
            epoch: engine.epoch(),
            len: engine.len(),
            columns: engine.columns().to_vec(),
            warnings: engine.warnings().to_vec(),
        }
    }
}

struct State {
    /// `None` after `close()`.
    engine: Option<Arc<Mutex<Engine>>>,
    /// The engine's counters, read without its lock: `__next__` holds that lock while it waits
    /// for a batch, and a thread watching the loader must not wait with it. Set and cleared
    /// with `engine` (it holds the buffer pool, whose memory `close()` must free).
    stats: Option<StatsHandle>,
    /// The engine's epoch, length and columns; `None` after `close()`.
    info: Option<EngineInfo>,
    /// What the engine was built from (a resume state rebuilds it with `with_resume`).
    config: LoaderConfig,
    /// The engine reported the end of the batches of this epoch (or an error).
    ended: bool,
    /// Batches handed to Python in the current epoch, and the plan index after the last one.
    handed: u64,
    next_index: u64,
}

impl State {
    fn engine(&self) -> PyResult<Arc<Mutex<Engine>>> {
        self.engine.clone().ok_or_else(closed)
    }

    fn info(&self) -> PyResult<&EngineInfo> {
        self.info.as_ref().ok_or_else(closed)
    }

    /// Installs a new engine, at the start (or resume point) of its epoch.
    fn set_engine(&mut self, engine: Engine) {
        self.stats = Some(engine.stats_handle());
        self.epoch_started(&engine);
        self.engine = Some(Arc::new(Mutex::new(engine)));
    }

    /// The engine moved to an epoch's start (or resume point): nothing of it handed out yet.
    fn epoch_started(&mut self, engine: &Engine) {
        self.info = Some(EngineInfo::of(engine));
        self.handed = 0;
        self.next_index = 0;
        self.ended = false;
    }

    /// Detaches the engine (to be dropped without the GIL).
    fn close(&mut self) -> Option<Arc<Mutex<Engine>>> {
        self.stats = None;
        self.info = None;
        self.engine.take()
    }
}

fn closed() -> PyErr {
    ShardStreamError::new_err("the Loader is closed; create a new one")
}

/// The native loader. Use `shardstream.Loader`, which builds it from friendlier arguments and
/// converts its batches to torch or NumPy; the methods here are that class's building blocks.
#[pyclass(module = "shardstream._native", frozen)]
pub struct Loader {
    state: Mutex<State>,
    streams: usize,
    pid: u32,
}

impl Loader {
    fn check_fork(&self) -> PyResult<()> {
        let now = std::process::id();
        if now != self.pid {
            return Err(ShardStreamError::new_err(format!(
                "this Loader was created in process {} and cannot be used in process {now}, a \
                 fork of it (e.g. a DataLoader worker) where its threads do not exist: create \
                 the Loader inside the worker, or use shardstream.torch.ShardStreamDataset",
                self.pid
            )));
        }
        Ok(())
    }

    fn state<'a>(&'a self, py: Python<'_>) -> PyResult<MutexGuard<'a, State>> {
        self.check_fork()?;
        Ok(self
            .state
            .lock_py_attached(py)
            .unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // A forked child: the engine's threads and locks belong to the parent.
            if let Ok(state) = self.state.get_mut() {
                std::mem::forget(state.engine.take());
                std::mem::forget(state.stats.take());
            }
        }
    }
}

fn parse_pin(s: &str) -> PyResult<PinMemory> {
    match s {
        "auto" => Ok(PinMemory::Auto),
        "always" => Ok(PinMemory::Always),
        "never" => Ok(PinMemory::Never),
        _ => Err(config_error(format!(
            "pin_memory must be \"auto\", \"always\" or \"never\", got {s:?}"
        ))),
    }
}

fn parse_list_mode(s: &str) -> PyResult<ListMode> {
    match s {
        "padded" => Ok(ListMode::Padded),
        "ragged" => Ok(ListMode::Ragged),
        _ => Err(config_error(format!(
            "list mode must be \"padded\" or \"ragged\", got {s:?}"
        ))),
    }
}

fn parse_binary_mode(s: &str) -> PyResult<BinaryMode> {
    match s {
        "bytes" => Ok(BinaryMode::Bytes),
        "padded" => Ok(BinaryMode::Padded),
        "ragged" => Ok(BinaryMode::Ragged),
        _ => Err(config_error(format!(
            "binary mode must be \"bytes\", \"padded\" or \"ragged\", got {s:?}"
        ))),
    }
}

#[pymethods]
impl Loader {
    /// Opens the manifests and plans the first epoch (nothing is fetched yet).
    ///
    /// `streams`: `(manifest, "weight" | "repeat", value, name or None)` per dataset.
    #[new]
    #[pyo3(signature = (
        streams, batch_size, *, columns=None, shuffle=true, seed=0, shuffle_window=None,
        shuffle_window_bytes=None, shuffle_warmup=None, drop_last=false, epoch_size=None, nodes=1, ranks_per_node=1,
        rank=0, worker=None, canonical_nodes=None, cache_dir=None, cache_limit=None,
        prefetch_bytes=None, io_concurrency=None, io_threads=None, decode_threads=None,
        batch_queue=None, list_mode=None, list_modes=None, binary_mode=None, binary_modes=None,
        pin_memory="auto", pin_device=None, huge_pages=true,
        storage_options=None, storage_config=None, resume=None, epoch=0
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        streams: Vec<(String, String, f64, Option<String>)>,
        batch_size: u64,
        columns: Option<Vec<String>>,
        shuffle: bool,
        seed: u64,
        shuffle_window: Option<u64>,
        shuffle_window_bytes: Option<u64>,
        shuffle_warmup: Option<u32>,
        drop_last: bool,
        epoch_size: Option<u64>,
        nodes: u32,
        ranks_per_node: u32,
        rank: u32,
        worker: Option<(u32, u32)>,
        canonical_nodes: Option<u32>,
        cache_dir: Option<PathBuf>,
        cache_limit: Option<u64>,
        prefetch_bytes: Option<u64>,
        io_concurrency: Option<usize>,
        io_threads: Option<usize>,
        decode_threads: Option<usize>,
        batch_queue: Option<usize>,
        list_mode: Option<String>,
        list_modes: Option<HashMap<String, String>>,
        binary_mode: Option<String>,
        binary_modes: Option<HashMap<String, String>>,
        pin_memory: &str,
        pin_device: Option<u32>,
        huge_pages: bool,
        storage_options: Option<HashMap<String, String>>,
        storage_config: Option<String>,
        resume: Option<String>,
        epoch: u64,
    ) -> PyResult<Loader> {
        if streams.is_empty() {
            return Err(config_error("no dataset given: pass at least one manifest"));
        }
        let mut config = LoaderConfig::new("unused", batch_size);
        config.streams.clear();
        for (url, kind, value, name) in &streams {
            let mix = match kind.as_str() {
                "weight" => Mix::Weight(*value),
                "repeat" => Mix::Repeat(*value),
                _ => {
                    return Err(config_error(format!(
                        "stream {url}: mix must be \"weight\" or \"repeat\", got {kind:?}"
                    )))
                }
            };
            config = config.with_stream(url.clone(), mix);
            if let Some(name) = name {
                config = config.with_stream_name(name.clone());
            }
        }
        if shuffle_window.is_some() && shuffle_window_bytes.is_some() {
            return Err(config_error(
                "give the shuffle window in samples or in bytes, not both",
            ));
        }
        config = config
            .with_shuffle(shuffle)
            .with_seed(seed)
            .with_drop_last(drop_last)
            .with_topology(nodes, ranks_per_node, rank)
            .with_pin_memory(parse_pin(pin_memory)?)
            .with_huge_pages(huge_pages)
            .with_epoch(epoch);
        if let Some(c) = columns {
            config = config.with_columns(c);
        }
        if let Some(w) = shuffle_window {
            config = config.with_window(Window::Samples(w));
        }
        if let Some(w) = shuffle_window_bytes {
            config = config.with_window(Window::Bytes(w));
        }
        if let Some(k) = shuffle_warmup {
            config = config.with_warmup(k);
        }
        if let Some(n) = epoch_size {
            config = config.with_epoch_size(n);
        }
        if let Some((w, n)) = worker {
            config = config.with_worker(w, n);
        }
        if let Some(c) = canonical_nodes {
            config = config.with_canonical_nodes(c);
        }
        if let Some(d) = cache_dir {
            config = config.with_cache_dir(d);
        }
        if let Some(l) = cache_limit {
            config = config.with_cache_limit(l);
        }
        if let Some(b) = prefetch_bytes {
            config = config.with_prefetch_bytes(b);
        }
        if let Some(n) = io_concurrency {
            config = config.with_io_concurrency(n);
        }
        if let Some(n) = io_threads {
            config = config.with_io_threads(n);
        }
        if let Some(n) = decode_threads {
            config = config.with_decode_threads(n);
        }
        if let Some(n) = batch_queue {
            config = config.with_batch_queue(n);
        }
        if let Some(m) = list_mode {
            config = config.with_default_list_mode(parse_list_mode(&m)?);
        }
        for (column, m) in list_modes.unwrap_or_default() {
            config = config.with_list_mode(column, parse_list_mode(&m)?);
        }
        if let Some(m) = binary_mode {
            config = config.with_default_binary_mode(parse_binary_mode(&m)?);
        }
        for (column, m) in binary_modes.unwrap_or_default() {
            config = config.with_binary_mode(column, parse_binary_mode(&m)?);
        }
        if let Some(d) = pin_device {
            config = config.with_pin_device(d);
        }
        if let Some(options) = storage_options {
            config = config.with_storage_options(options.into_iter().collect());
        }
        if let Some(text) = storage_config {
            let per_source =
                shard_index::StorageConfig::from_json(&text, "storage_config").map_err(to_pyerr)?;
            config = config.with_storage_config(per_source);
        }
        if let Some(text) = resume {
            config = config.with_resume(ResumeState::from_json(&text).map_err(to_pyerr)?);
        }
        let engine = open(py, config.clone())?;
        let mut state = State {
            engine: None,
            stats: None,
            info: None,
            config: LoaderConfig {
                resume: None,
                ..config
            },
            ended: false,
            handed: 0,
            next_index: 0,
        };
        state.set_engine(engine);
        Ok(Loader {
            state: Mutex::new(state),
            streams: streams.len(),
            pid: std::process::id(),
        })
    }

    /// Starts (or continues) iterating: after a finished epoch, moves on to the next one; after
    /// an error, retries from the first batch not handed out; otherwise continues.
    fn __iter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let py = slf.py();
        {
            let this = slf.get();
            let mut st = this.state(py)?;
            let engine = st.engine()?;
            let mut eng = lock_engine(py, &engine)?;
            if st.handed >= eng.len() {
                let next = eng.epoch() + 1;
                eng.set_epoch(next).map_err(to_pyerr)?;
                st.epoch_started(&eng);
            } else if st.ended {
                // After an error the engine's iterator ended; `iter()` re-arms it.
                let _ = eng.iter();
                st.ended = false;
            }
        }
        Ok(slf)
    }

    /// The next batch as a dict (`None` at the end of the epoch, which ends iteration).
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let engine = {
            let st = self.state(py)?;
            if st.ended {
                return Ok(None);
            }
            st.engine()?
        };
        let multi_stream = self.streams > 1;
        let (next, extras) = {
            let mut guard = lock_engine(py, &engine)?;
            let eng: &mut Engine = &mut guard;
            loop {
                let (next, extras) = py.detach(|| {
                    let next = eng.next_batch_within(POLL);
                    let extras = match &next {
                        NextBatch::Ready(Ok(batch)) => {
                            Some(Extras::new(batch, eng.pool(), multi_stream))
                        }
                        _ => None,
                    };
                    (next, extras)
                });
                match next {
                    // Nothing was taken: on KeyboardInterrupt the batch stays in the engine.
                    NextBatch::Pending => py.check_signals()?,
                    next => break (next, extras),
                }
            }
        };
        let mut st = self.state(py)?;
        match next {
            NextBatch::Ready(Ok(batch)) => {
                st.handed += 1;
                st.next_index = batch.index + 1;
                drop(st);
                let extras = extras.expect("made with every batch");
                batch_to_dict(py, batch, extras).map(Some)
            }
            NextBatch::Ready(Err(e)) => Err(to_pyerr(e)),
            NextBatch::End => {
                st.ended = true;
                Ok(None)
            }
            NextBatch::Pending => unreachable!("the loop waits until a batch or the end"),
        }
    }

    /// Batches this loader yields in the current epoch (from its start or resume point).
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.state(py)?.info()?.len as usize)
    }

    /// The current epoch.
    #[getter]
    fn epoch(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.state(py)?.info()?.epoch)
    }

    /// Batches handed out in the current epoch.
    #[getter]
    fn batches_handed(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.state(py)?.handed)
    }

    /// The output columns (dataset columns, before `_lengths` / `_offsets` companions).
    #[getter]
    fn columns(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        Ok(self.state(py)?.info()?.columns.clone())
    }

    /// Switches to `epoch` from its start. Asking for the current epoch before any of its
    /// batches was handed out changes nothing (so a resumed epoch keeps its position).
    fn set_epoch(&self, py: Python<'_>, epoch: u64) -> PyResult<()> {
        let mut st = self.state(py)?;
        let engine = st.engine()?;
        {
            let eng = lock_engine(py, &engine)?;
            if eng.epoch() == epoch && st.handed == 0 && !st.ended {
                return Ok(());
            }
        }
        let mut eng = lock_engine(py, &engine)?;
        eng.set_epoch(epoch).map_err(to_pyerr)?;
        st.epoch_started(&eng);
        Ok(())
    }

    /// The resume state (JSON text) after the batches handed out so far. With several workers
    /// per rank it assumes the rank consumed every batch up to this worker's last one.
    fn state_json(&self, py: Python<'_>) -> PyResult<String> {
        let st = self.state(py)?;
        let engine = st.engine()?;
        let eng = lock_engine(py, &engine)?;
        let state = eng.state_after(st.next_index).map_err(to_pyerr)?;
        state.to_json().map_err(to_pyerr)
    }

    /// The resume state (JSON text) after the rank consumed its first `batches` batches of the
    /// current epoch (across all its workers).
    fn state_after_json(&self, py: Python<'_>, batches: u64) -> PyResult<String> {
        let engine = self.state(py)?.engine()?;
        let eng = lock_engine(py, &engine)?;
        let state = eng.state_after(batches).map_err(to_pyerr)?;
        state.to_json().map_err(to_pyerr)
    }

    /// Continues the epoch recorded in a resume state (JSON text): re-plans it and delivers
    /// exactly the samples not yet consumed, on this loader's topology and batch size.
    fn load_state_json(&self, py: Python<'_>, state: &str) -> PyResult<()> {
        let resume = ResumeState::from_json(state).map_err(to_pyerr)?;
        let mut st = self.state(py)?;
        st.engine()?;
        let config = st.config.clone().with_resume(resume);
        // Opened before the old engine goes, so a state that does not fit leaves the loader as
        // it was. Nothing is fetched until the first batch, so the overlap costs little.
        let engine = open(py, config)?;
        st.set_engine(engine);
        Ok(())
    }

    /// Counters since the loader was created (JSON text of the engine's `LoaderStats`). Answers
    /// at once, also while another thread waits in `__next__`.
    fn stats_json(&self, py: Python<'_>) -> PyResult<String> {
        let stats = self.state(py)?.stats.clone().ok_or_else(closed)?;
        let stats = stats.read();
        serde_json::to_string(&stats)
            .map_err(|e| ShardStreamError::new_err(format!("serialising stats: {e}")))
    }

    /// What the configuration will cost that the caller may not expect (the engine's
    /// `Loader::warnings`); `shardstream.Loader` raises each with `warnings.warn`.
    fn warnings(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        Ok(self.state(py)?.info()?.warnings.clone())
    }

    /// Stops the pipeline and frees its memory; the loader cannot be used afterwards.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let engine = self.state(py)?.close();
        py.detach(move || drop(engine));
        Ok(())
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.state(py)?.engine.is_none())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let st = self.state(py)?;
        let Some(info) = &st.info else {
            return Ok("Loader(closed)".into());
        };
        Ok(format!(
            "Loader(epoch={}, batches={}, handed={}, columns={:?})",
            info.epoch, info.len, st.handed, info.columns
        ))
    }
}

/// Builds an engine on a helper thread (reading manifests can take a while on a remote store).
fn open(py: Python<'_>, config: LoaderConfig) -> PyResult<Engine> {
    run_blocking(py, "shardstream-open", move || Engine::new(config))?.map_err(|e| {
        let e = crate::errors::NativeError::from(e);
        if e.is_not_found() {
            to_pyerr_with_hint(e, MANIFEST_HINT)
        } else {
            to_pyerr(e)
        }
    })
}

/// One batch as a dict: columns in order, then `__index__` (global sample ids, int64),
/// `__stream__` (stream of each sample, int64; only with several streams), `__padded__` (bool),
/// `__batch__` (the batch's index in the rank's epoch plan) and `__epoch__`.
fn batch_to_dict(py: Python<'_>, batch: Batch, extras: Extras) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (name, column) in batch.columns {
        match column {
            Column::Tensor(t) => d.set_item(&name, Tensor::from_loader(t))?,
            Column::Padded { values, lengths } => {
                d.set_item(&name, Tensor::from_loader(values))?;
                d.set_item(format!("{name}_lengths"), Tensor::from_loader(lengths))?;
            }
            Column::Ragged { values, offsets } => {
                d.set_item(&name, Tensor::from_loader(values))?;
                d.set_item(format!("{name}_offsets"), Tensor::from_loader(offsets))?;
            }
            Column::Arrow(array) => d.set_item(&name, arrow_to_py(py, &name, &array)?)?,
        }
    }
    d.set_item("__index__", extras.index)?;
    if let Some(stream) = extras.stream {
        d.set_item("__stream__", stream)?;
    }
    d.set_item("__padded__", extras.padded)?;
    d.set_item("__batch__", batch.index)?;
    d.set_item("__epoch__", batch.epoch)?;
    Ok(d)
}

/// Strings become `list[str]`, binary `list[bytes]` (nulls `None`) — in the default binary mode;
/// the `padded`/`ragged` modes arrive as uint8 tensors instead. Anything else (structs,
/// lists of strings, …) an [`ArrowColumn`] holding the column as Arrow IPC.
fn arrow_to_py<'py>(py: Python<'py>, name: &str, array: &ArrayRef) -> PyResult<Bound<'py, PyAny>> {
    let array = match array.data_type() {
        DataType::Dictionary(_, values) => arrow::compute::cast(array, values)
            .map_err(|e| ShardStreamError::new_err(format!("column {name:?}: {e}")))?,
        _ => array.clone(),
    };
    let list = match array.data_type() {
        DataType::Utf8 => PyList::new(py, array.as_string::<i32>().iter())?,
        DataType::LargeUtf8 => PyList::new(py, array.as_string::<i64>().iter())?,
        DataType::Utf8View => PyList::new(py, array.as_string_view().iter())?,
        DataType::Binary => PyList::new(py, array.as_binary::<i32>().iter())?,
        DataType::LargeBinary => PyList::new(py, array.as_binary::<i64>().iter())?,
        DataType::BinaryView => PyList::new(py, array.as_binary_view().iter())?,
        DataType::FixedSizeBinary(_) => PyList::new(py, array.as_fixed_size_binary().iter())?,
        _ => {
            let column = ArrowColumn::from_array(name, array)
                .map_err(|e| ShardStreamError::new_err(format!("column {name:?}: {e}")))?;
            return Ok(Bound::new(py, column)?.into_any());
        }
    };
    Ok(list.into_any())
}

/// A column that is neither numbers nor strings/binary (e.g. structs, lists of strings), as
/// Arrow IPC stream bytes; `to_pyarrow()` turns it into a `pyarrow.Array`.
#[pyclass(module = "shardstream._native", frozen)]
pub struct ArrowColumn {
    name: String,
    ipc: Vec<u8>,
    len: usize,
}

impl ArrowColumn {
    fn from_array(name: &str, array: ArrayRef) -> Result<ArrowColumn, arrow::error::ArrowError> {
        let field = Field::new(name, array.data_type().clone(), true);
        let schema = Arc::new(Schema::new(vec![field]));
        let len = array.len();
        let batch = RecordBatch::try_new(schema.clone(), vec![array])?;
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema)?;
        writer.write(&batch)?;
        writer.finish()?;
        Ok(ArrowColumn {
            name: name.to_string(),
            ipc: writer.into_inner()?,
            len,
        })
    }
}

#[pymethods]
impl ArrowColumn {
    /// The column's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The column as Arrow IPC stream bytes (one record batch of one column).
    fn ipc<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.ipc)
    }

    /// The column as a `pyarrow.Array` (needs pyarrow).
    fn to_pyarrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let ipc = py.import("pyarrow.ipc")?;
        let reader = ipc.call_method1("open_stream", (self.ipc(py),))?;
        let table = reader.call_method0("read_all")?;
        table
            .call_method1("column", (0,))?
            .call_method0("combine_chunks")
    }

    fn __len__(&self) -> usize {
        self.len
    }

    fn __repr__(&self) -> String {
        format!("ArrowColumn(name={:?}, len={})", self.name, self.len)
    }
}
