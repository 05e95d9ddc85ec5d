//! `index()` and `inspect()`: building and summarising manifests from Python.
//!
//! Both run on a helper thread with the GIL released (Ctrl-C interrupts the wait) and on a
//! tokio runtime of their own, created per call, rather than shard-index's process-wide one:
//! a process-wide runtime started in a parent would be a runtime without threads in a forked
//! DataLoader worker, where a later call would wait forever.

use std::collections::HashMap;

use object_store::{ObjectStoreExt, PutPayload};
use pyo3::prelude::*;
use pyo3::types::PyAny;
use shard_index::indexer::{self, IndexOptions, Silent};
use shard_index::manifest::Manifest;
use shard_index::storage::{to_url, Location, StorageOptions};
use shard_index::FormatChoice;

use crate::errors::{config_error, to_pyerr, ShardStreamError};
use crate::loader::run_blocking;

/// A string, or a list of strings.
#[derive(FromPyObject)]
pub enum Sources {
    One(String),
    Many(Vec<String>),
}

fn runtime() -> Result<tokio::runtime::Runtime, shard_index::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 8),
        )
        .thread_name("shardstream-index")
        .enable_all()
        .build()
        .map_err(|e| shard_index::Error::Config(format!("cannot start the I/O runtime: {e}")))
}

fn json_to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value)
        .map_err(|e| ShardStreamError::new_err(format!("serialising a summary: {e}")))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// Writes `manifest` to a local path (atomically, via shard-index) or an object-store URL.
async fn write(
    manifest: &Manifest,
    output: &str,
    options: &StorageOptions,
) -> shard_index::Result<()> {
    if to_url(output)?.scheme() == "file" {
        return manifest.write_to(output, options);
    }
    let bytes = manifest.to_parquet_bytes()?;
    let loc = Location::open(output, options)?;
    loc.store
        .put(&loc.prefix, PutPayload::from(bytes))
        .await
        .map_err(|e| shard_index::Error::storage(output, e))?;
    Ok(())
}

/// Indexes the shards under `source` (a URL or local path, or a list of them) and writes a
/// manifest to `output`; returns the build summary (shards, samples, bytes, fingerprint, …).
#[pyfunction]
#[pyo3(signature = (
    source, output, *, format="auto", include=None, exclude=None, concurrency=16,
    storage_options=None, skip_bad=false
))]
#[allow(clippy::too_many_arguments)]
pub fn index<'py>(
    py: Python<'py>,
    source: Sources,
    output: String,
    format: &str,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    concurrency: usize,
    storage_options: Option<HashMap<String, String>>,
    skip_bad: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let sources = match source {
        Sources::One(s) => vec![s],
        Sources::Many(v) => v,
    };
    let format: FormatChoice = format
        .parse()
        .map_err(|e| config_error(format!("format must be auto, parquet, tar or jsonl ({e})")))?;
    let options = IndexOptions {
        format,
        include: include.unwrap_or_default(),
        exclude: exclude.unwrap_or_default(),
        concurrency,
        storage_options: storage_options.unwrap_or_default().into_iter().collect(),
        skip_bad,
        ..IndexOptions::default()
    };
    let summary = run_blocking(py, "shardstream-index", move || {
        let rt = runtime()?;
        let result = rt.block_on(async {
            let (manifest, summary) = indexer::build(&sources, &options, &Silent).await?;
            write(&manifest, &output, &options.storage_options).await?;
            Ok::<_, shard_index::Error>(summary)
        });
        rt.shutdown_background();
        result
    })?
    .map_err(to_pyerr)?;
    let value = serde_json::to_value(&summary)
        .map_err(|e| ShardStreamError::new_err(format!("serialising the summary: {e}")))?;
    json_to_py(py, &value)
}

/// Summarises a manifest: version, sources, totals, formats, schema, smallest/largest shard.
#[pyfunction]
#[pyo3(signature = (manifest, *, storage_options=None))]
pub fn inspect<'py>(
    py: Python<'py>,
    manifest: String,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<Bound<'py, PyAny>> {
    let options: StorageOptions = storage_options.unwrap_or_default().into_iter().collect();
    let location = manifest.clone();
    let m = run_blocking(py, "shardstream-inspect", move || {
        let rt = runtime()?;
        let result = rt.block_on(Manifest::read_async(&location, &options));
        rt.shutdown_background();
        result
    })?
    .map_err(to_pyerr)?;
    json_to_py(py, &summary(&manifest, &m))
}

/// The same report as `shard-index inspect --json`.
fn summary(location: &str, m: &Manifest) -> serde_json::Value {
    serde_json::to_value(shard_index::manifest::InspectReport::of(m, location))
        .expect("the report serialises")
}

/// Runs the `shard-index` command line (the same code as the Rust binary) with `argv`
/// (`argv[0]` is the program name) and returns its exit status. The GIL is released while it
/// runs; it is meant for the console script, which runs it in a fresh process.
#[pyfunction]
pub fn shard_index_main(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(move || shard_index::cli::main_with_args(argv))
}
