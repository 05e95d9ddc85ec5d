//! shard-index: describe a sharded dataset where it lies, and plan the order of its samples.
//!
//! The crate owns the contract between a dataset in object storage and the loader that reads it:
//!
//! - [`storage`] turns a URL or path into an `object_store` store and prefix.
//! - [`format`] names shard formats (Parquet, WebDataset tar, JSONL; zstd/gzip variants).
//! - [`scan`] describes one shard: a Parquet footer, or one streaming pass over a tar/JSONL.
//! - [`schema`] reconciles shard schemas into one dataset schema.
//! - [`indexer`] lists sources and builds, updates and verifies manifests concurrently.
//! - [`fanout`] lists sources, splitting the listing between parts by prefix fan-out.
//! - [`manifest`] is the on-disk contract: a deterministic, versioned Parquet file.
//! - [`parts`] splits a build into N independent parts (`--part I/N`) and merges them.
//! - [`plan`] turns manifests, seed, epoch and topology into every consumer's sample order.
//! - [`deep`] decodes whole shards for `verify --deep`.
//! - [`synth`] generates datasets with known contents for tests, demos and benchmarks.
//!
//! [`cli`] (feature `cli`, on by default) is the command line, shared by the `shard-index`
//! binary and the Python package's command.
//!
//! The public API is async where it does I/O; [`runtime::block_on`] gives blocking callers a
//! shared runtime. The `shard-index` binary is a thin CLI over these modules.

#[cfg(feature = "cli")]
pub mod cli;
pub mod deep;
pub mod error;
pub mod fanout;
pub mod format;
pub mod indexer;
pub mod manifest;
pub mod parts;
pub mod plan;
pub mod runtime;
pub mod scan;
pub mod schema;
pub mod storage;
pub mod synth;

pub use error::{Error, Result};
pub use format::{Compression, FormatChoice, ShardFormat, ShardKind};
pub use indexer::{build, update, verify, BuildSummary, IndexOptions, Reporter, Silent};
pub use manifest::{Manifest, ManifestMeta, RowGroup, ShardEntry};
pub use storage::{Location, StorageConfig, StorageOptions};
