//! The loader's one error type.
//!
//! Variants carry the object (URL or cache path) they concern and say what to do. The Python
//! binding maps each variant to an exception class (StorageError, DecodeError, CacheError,
//! ConfigError, ManifestError), so keep the grouping meaningful when adding variants.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A manifest, planner or storage-configuration error from shard-index.
    #[error(transparent)]
    Index(#[from] shard_index::Error),

    /// Reading a shard from the store failed (after retries).
    #[error("fetching {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: object_store::Error,
    },

    /// The store returned something other than what the manifest promised.
    #[error("shard {url} changed since it was indexed: {detail}; rebuild the manifest with `shard-index update`")]
    ShardChanged { url: String, detail: String },

    /// A body ended early or had the wrong length.
    #[error("short read from {url}: got {got} of {expected} bytes")]
    ShortRead {
        url: String,
        got: u64,
        expected: u64,
    },

    /// The store stopped answering: no response headers, or no further body bytes, within
    /// `request_timeout` (after retries).
    #[error("no progress reading {url}: waited {after_s} s for {what} (request_timeout); the store or the network is stalled")]
    Timeout {
        url: String,
        what: &'static str,
        after_s: f64,
    },

    /// A shard's bytes could not be decoded.
    #[error("decoding {url}: {reason}")]
    Decode { url: String, reason: String },

    /// A requested column does not exist in the dataset schema.
    #[error("column {column:?} not found; the dataset has {available:?}")]
    ColumnNotFound {
        column: String,
        available: Vec<String>,
    },

    /// A column's type cannot be collated into a batch the way requested.
    #[error("column {column:?} of type {data_type} cannot be batched as {how}")]
    UnsupportedColumn {
        column: String,
        data_type: String,
        how: String,
    },

    /// The node-local cache failed.
    #[error("cache {}: {reason}", path.display())]
    Cache { path: PathBuf, reason: String },

    /// The cache limit cannot hold what the plan needs at once.
    #[error("cache_limit {limit} bytes is smaller than the {needed} bytes the plan needs at once ({detail}); raise cache_limit or shrink the shuffle window/prefetch")]
    CacheTooSmall {
        limit: u64,
        needed: u64,
        detail: String,
    },

    /// Local I/O error.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Invalid loader configuration (batch size 0, bad option values, ...).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The loader was shut down (e.g. after an earlier error in a background task).
    #[error("the loader stopped: {0}")]
    Stopped(String),
}

impl From<shard_index::plan::PlanError> for Error {
    fn from(e: shard_index::plan::PlanError) -> Self {
        Error::Index(shard_index::Error::Plan(e))
    }
}

/// The message of a caught panic (`catch_unwind`'s payload), for the error that replaces it.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
