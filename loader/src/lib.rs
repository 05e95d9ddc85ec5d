//! shardstream-loader: the engine that follows a shard-index plan.
//!
//! ```text
//! plan (shard_index::plan) ─▶ fetch (tokio + object_store) ─▶ cache (node-local disk)
//!        ─▶ decode (parquet / tar / jsonl → Arrow) ─▶ collate (pooled, pinned buffers)
//!        ─▶ crossbeam channel ─▶ consumer (synchronous iterator of batches)
//! ```
//!
//! Modules: [`config`] (what to load and how), [`fetch`] (reads from the store, verified
//! against the manifest), [`cache`] (node-local shared disk cache), `mapping` (local files and
//! cache entries mapped, in huge pages where the kernel can), [`decode`] (shard bytes to
//! Arrow), [`collate`] (rows to batch columns) with [`prefetch`] (rows loaded ahead of its
//! copy) and [`streaming`] (large batches written past the cache), [`pool`] and [`pinned`]
//! (recycled, page-locked batch memory), [`engine`] (the
//! pipeline and the public iterator), [`stats`] (counters).
//! tokio never leaks out of this crate: the public API is synchronous.
//!
//! ```no_run
//! use shardstream_loader::{Loader, LoaderConfig};
//!
//! let config = LoaderConfig::new("s3://bucket/dataset/manifest.parquet", 32)
//!     .with_columns(["tokens", "id"])
//!     .with_seed(1234);
//! let mut loader = Loader::new(config)?;
//! for epoch in 0..3 {
//!     loader.set_epoch(epoch)?;
//!     for batch in loader.iter() {
//!         let _batch = batch?;
//!         // _batch.columns: ("tokens", Column::Padded { values: [32, Lmax], lengths: [32] }), ...
//!     }
//! }
//! # Ok::<(), shardstream_loader::Error>(())
//! ```

mod assembly;
pub mod cache;
pub mod collate;
pub mod config;
pub mod decode;
pub mod engine;
pub mod error;
pub mod fetch;
mod mapping;
pub mod pinned;
pub mod pool;
pub mod prefetch;
pub mod stats;
pub mod streaming;

pub use collate::{Batch, Column, DType, SampleId, Tensor};
pub use config::{BinaryMode, ColumnMode, ListMode, LoaderConfig, PinMemory};
pub use engine::{Loader, NextBatch};
pub use error::{Error, Result};
pub use stats::{LoaderStats, StatsHandle};
