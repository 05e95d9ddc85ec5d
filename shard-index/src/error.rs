//! The crate's one error type.
//!
//! Every variant that concerns an object carries its location (`path`, a URL or a path relative
//! to the dataset root) so a message read in a log of a 10,000-shard job names the culprit, and
//! most carry a `source` so the underlying cause is kept. Messages end with what to do where
//! there is something to do.

use std::path::PathBuf;

/// Convenience alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while indexing, reading manifests or planning.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source string is not a URL or path we can turn into a store.
    #[error("invalid dataset location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },

    /// No credentials are configured for a cloud store.
    #[error("no credentials for {location}: {hint}")]
    MissingCredentials { location: String, hint: String },

    /// A storage operation failed (after object_store's own retries).
    #[error("storage error on {path}: {source}")]
    Storage {
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// The store refused us (HTTP 401/403).
    #[error("access denied to {path}: check the credentials and their permissions ({source})")]
    PermissionDenied {
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// The object does not exist.
    #[error("object not found: {path}")]
    NotFound {
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// The listing found no shard under the prefix.
    #[error("no shards found under {location}{filter}: check the prefix and --include/--exclude")]
    EmptySource { location: String, filter: String },

    /// The object changed while we read it, or since the manifest was built.
    #[error(
        "object {path} changed: {detail}; re-run `shard-index update` to refresh the manifest"
    )]
    ObjectChanged { path: String, detail: String },

    /// We cannot tell what kind of shard an object is.
    #[error("unknown shard format for {path}: expected .parquet, .tar, .tar.zst, .tgz, .jsonl or .jsonl.zst (or pass --format)")]
    UnknownFormat { path: String },

    /// A Parquet shard could not be understood.
    #[error("malformed Parquet in {path}: {reason}")]
    MalformedParquet { path: String, reason: String },

    /// A tar shard could not be understood.
    #[error("malformed tar in {path}: {reason}")]
    MalformedTar { path: String, reason: String },

    /// A JSONL shard has an invalid line.
    #[error("invalid JSON in {path} at line {line}: {reason}")]
    MalformedJson {
        path: String,
        line: u64,
        reason: String,
    },

    /// A compressed shard could not be decompressed.
    #[error("corrupt compressed stream in {path}: {reason}")]
    Decompress { path: String, reason: String },

    /// Shards of one dataset disagree on the sample schema.
    #[error("schema of {path} differs from {first}: {detail}; index them as separate datasets (streams)")]
    SchemaMismatch {
        path: String,
        first: String,
        detail: String,
    },

    /// The manifest file is not a manifest, or is damaged.
    #[error("invalid manifest {path}: {reason}")]
    InvalidManifest { path: String, reason: String },

    /// The manifest was written by a newer shard-index.
    #[error("manifest {path} has format version {found}, this build reads up to {supported}: upgrade shardstream")]
    UnsupportedManifestVersion {
        path: String,
        found: String,
        supported: String,
    },

    /// Local file-system error (output files, temporary files).
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Arrow/Parquet error while writing or reading a manifest.
    #[error("manifest encoding error on {path}: {source}")]
    ManifestCodec {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// Some objects could not be indexed (the whole build fails unless `skip_bad` is set).
    #[error("{count} object(s) could not be indexed; first: {first}")]
    BadObjects { count: usize, first: Box<Error> },

    /// Two sources cover the same objects, which would count shards twice.
    #[error("sources overlap: {inner} lies inside {outer}, so its shards would be counted twice; remove one of them")]
    OverlappingSources { outer: String, inner: String },

    /// The per-source storage configuration file is unreadable or invalid.
    #[error("storage config {path}: {reason}")]
    StorageConfig { path: String, reason: String },

    /// Partial manifests given to `merge` do not belong together (or are not parts at all).
    #[error("cannot merge {path}: {reason}")]
    PartMismatch { path: String, reason: String },

    /// The planner refused its inputs (batch sizes, topology, weights, resume state).
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),

    /// An option has an unusable value.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// Wraps an object_store error, sorting out the cases a user reacts to differently.
    pub fn storage(path: impl Into<String>, source: object_store::Error) -> Self {
        let path = path.into();
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound { path, source },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                Error::PermissionDenied { path, source }
            }
            object_store::Error::Precondition { .. } => Error::ObjectChanged {
                path,
                detail: format!("the store reports a failed precondition ({source})"),
            },
            source => Error::Storage { path, source },
        }
    }

    /// Whether retrying the same operation could succeed (network trouble, throttling).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Storage {
                source: object_store::Error::Generic { .. },
                ..
            }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
