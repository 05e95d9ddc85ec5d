//! The Python exception hierarchy, and the one mapping from the crates' errors onto it.
//!
//! ```text
//! ShardStreamError(Exception)                 anything from shardstream (also: loader stopped,
//! │                                           use after fork)
//! ├── ManifestError                           invalid / newer / stale manifest, schema clash
//! ├── StorageError                            the store failed (after retries), short reads
//! │   ├── NotFoundError(FileNotFoundError)    manifest or object missing, empty prefix
//! │   └── AccessDeniedError(PermissionError)  HTTP 401/403, local permission denied
//! ├── DecodeError                             malformed Parquet / tar / JSON, bad compression
//! ├── CacheError                              node-local cache failures, cache_limit too small
//! └── ConfigError(ValueError)                 bad option values, batch_size 0, topology
//!     ├── ColumnNotFoundError                 a requested column is not in the dataset
//!     └── ResumeStateError                    a resume state that does not fit this run
//! ```
//!
//! Single-base classes come from `create_exception!`. The classes with two bases (so that
//! `except ValueError` / `except FileNotFoundError` work as users expect) cannot be made with
//! that macro; they are created once per interpreter with `type(name, bases, namespace)`.
//! The messages come from the crates, which name the object concerned and say what to do.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyFileNotFoundError, PyPermissionError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use shard_index::plan::PlanError;

create_exception!(
    shardstream,
    ShardStreamError,
    PyException,
    "Base class of every error raised by shardstream."
);
create_exception!(
    shardstream,
    ManifestError,
    ShardStreamError,
    "A manifest is invalid, from a newer shardstream, or out of date with the data it describes."
);
create_exception!(
    shardstream,
    StorageError,
    ShardStreamError,
    "Reading from or writing to the object store (or local disk) failed."
);
create_exception!(
    shardstream,
    DecodeError,
    ShardStreamError,
    "A shard's bytes could not be decoded (malformed Parquet, tar, JSON or compression)."
);
create_exception!(
    shardstream,
    CacheError,
    ShardStreamError,
    "The node-local disk cache failed or cannot hold what the plan needs."
);

/// The error classes with two bases, created on first use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extra {
    Config,
    ColumnNotFound,
    ResumeState,
    NotFound,
    AccessDenied,
}

impl Extra {
    const ALL: [Extra; 5] = [
        Extra::Config,
        Extra::ColumnNotFound,
        Extra::ResumeState,
        Extra::NotFound,
        Extra::AccessDenied,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Extra::Config => "ConfigError",
            Extra::ColumnNotFound => "ColumnNotFoundError",
            Extra::ResumeState => "ResumeStateError",
            Extra::NotFound => "NotFoundError",
            Extra::AccessDenied => "AccessDeniedError",
        }
    }

    fn doc(self) -> &'static str {
        match self {
            Extra::Config => {
                "An option has an unusable value (also a ValueError): batch_size 0, a topology \
                 that does not fit, an unknown column, a bad location."
            }
            Extra::ColumnNotFound => "A requested column is not in the dataset's schema.",
            Extra::ResumeState => {
                "A resume state does not fit this run: another seed, manifest, mix or shuffle \
                 setting, a malformed state, or one from a newer shardstream."
            }
            Extra::NotFound => "A manifest or object does not exist (also a FileNotFoundError).",
            Extra::AccessDenied => {
                "The store or file system refused access (also a PermissionError)."
            }
        }
    }

    fn bases<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        Ok(match self {
            Extra::Config => PyTuple::new(
                py,
                [
                    py.get_type::<ShardStreamError>(),
                    py.get_type::<PyValueError>(),
                ],
            )?,
            Extra::ColumnNotFound | Extra::ResumeState => {
                PyTuple::new(py, [extra_type(py, Extra::Config)?])?
            }
            Extra::NotFound => PyTuple::new(
                py,
                [
                    py.get_type::<StorageError>(),
                    py.get_type::<PyFileNotFoundError>(),
                ],
            )?,
            Extra::AccessDenied => PyTuple::new(
                py,
                [
                    py.get_type::<StorageError>(),
                    py.get_type::<PyPermissionError>(),
                ],
            )?,
        })
    }
}

static EXTRA_TYPES: [PyOnceLock<Py<PyType>>; 5] = [
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
];

/// The class object of one of the two-base exceptions.
pub fn extra_type(py: Python<'_>, which: Extra) -> PyResult<Bound<'_, PyType>> {
    let slot = &EXTRA_TYPES[which as usize];
    let ty = slot.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let namespace = PyDict::new(py);
        namespace.set_item("__module__", "shardstream")?;
        namespace.set_item("__doc__", which.doc())?;
        let created = py
            .get_type::<PyType>()
            .call1((which.name(), which.bases(py)?, namespace))?;
        Ok(created.cast_into::<PyType>()?.unbind())
    })?;
    Ok(ty.bind(py).clone())
}

/// Adds every exception class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ShardStreamError", py.get_type::<ShardStreamError>())?;
    m.add("ManifestError", py.get_type::<ManifestError>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("DecodeError", py.get_type::<DecodeError>())?;
    m.add("CacheError", py.get_type::<CacheError>())?;
    for which in Extra::ALL {
        m.add(which.name(), extra_type(py, which)?)?;
    }
    Ok(())
}

/// Which Python class an error becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Base,
    Manifest,
    Storage,
    Decode,
    Cache,
    Extra(Extra),
}

/// An error from either crate (what [`to_pyerr`] accepts).
#[derive(Debug)]
pub enum NativeError {
    Loader(shardstream_loader::Error),
    Index(shard_index::Error),
}

impl From<shardstream_loader::Error> for NativeError {
    fn from(e: shardstream_loader::Error) -> Self {
        NativeError::Loader(e)
    }
}

impl From<shard_index::Error> for NativeError {
    fn from(e: shard_index::Error) -> Self {
        NativeError::Index(e)
    }
}

impl From<PlanError> for NativeError {
    fn from(e: PlanError) -> Self {
        NativeError::Index(shard_index::Error::Plan(e))
    }
}

impl NativeError {
    fn class(&self) -> Class {
        match self {
            NativeError::Loader(e) => loader_class(e),
            NativeError::Index(e) => index_class(e),
        }
    }

    fn message(&self) -> String {
        match self {
            NativeError::Loader(e) => e.to_string(),
            NativeError::Index(e) => e.to_string(),
        }
    }

    /// Whether the error says that an object (a manifest, when opening a loader) is missing.
    pub fn is_not_found(&self) -> bool {
        self.class() == Class::Extra(Extra::NotFound)
    }
}

fn io_class(kind: std::io::ErrorKind) -> Class {
    match kind {
        std::io::ErrorKind::NotFound => Class::Extra(Extra::NotFound),
        std::io::ErrorKind::PermissionDenied => Class::Extra(Extra::AccessDenied),
        _ => Class::Storage,
    }
}

fn store_class(e: &object_store::Error) -> Class {
    match e {
        object_store::Error::NotFound { .. } => Class::Extra(Extra::NotFound),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Class::Extra(Extra::AccessDenied),
        _ => Class::Storage,
    }
}

fn loader_class(e: &shardstream_loader::Error) -> Class {
    use shardstream_loader::Error as E;
    match e {
        E::Index(inner) => index_class(inner),
        E::Fetch { source, .. } => store_class(source),
        // The data moved under the manifest: the fix is rebuilding the manifest.
        E::ShardChanged { .. } => Class::Manifest,
        E::ShortRead { .. } | E::Timeout { .. } => Class::Storage,
        E::Decode { .. } => Class::Decode,
        E::ColumnNotFound { .. } => Class::Extra(Extra::ColumnNotFound),
        E::UnsupportedColumn { .. } | E::Config(_) => Class::Extra(Extra::Config),
        E::Cache { .. } | E::CacheTooSmall { .. } => Class::Cache,
        E::Io { source, .. } => io_class(source.kind()),
        _ => Class::Base,
    }
}

fn index_class(e: &shard_index::Error) -> Class {
    use shard_index::Error as E;
    match e {
        E::InvalidLocation { .. }
        | E::Config(_)
        | E::OverlappingSources { .. }
        | E::StorageConfig { .. } => Class::Extra(Extra::Config),
        E::MissingCredentials { .. } | E::Storage { .. } => Class::Storage,
        E::PermissionDenied { .. } => Class::Extra(Extra::AccessDenied),
        E::NotFound { .. } | E::EmptySource { .. } => Class::Extra(Extra::NotFound),
        E::ObjectChanged { .. }
        | E::SchemaMismatch { .. }
        | E::InvalidManifest { .. }
        | E::UnsupportedManifestVersion { .. }
        | E::ManifestCodec { .. }
        | E::PartMismatch { .. } => Class::Manifest,
        E::UnknownFormat { .. }
        | E::MalformedParquet { .. }
        | E::MalformedTar { .. }
        | E::MalformedJson { .. }
        | E::Decompress { .. } => Class::Decode,
        E::Io { source, .. } => io_class(source.kind()),
        E::BadObjects { first, .. } => index_class(first),
        E::Plan(p) => plan_class(p),
        _ => Class::Base,
    }
}

fn plan_class(e: &PlanError) -> Class {
    use PlanError as P;
    match e {
        P::NewerStateVersion { .. }
        | P::InvalidState { .. }
        | P::FingerprintMismatch { .. }
        | P::SampleCountMismatch { .. }
        | P::MixChanged { .. }
        | P::UnknownStream { .. }
        | P::MissingStream { .. }
        | P::StreamOrderChanged { .. }
        | P::SeedMismatch { .. }
        | P::CanonicalNodesMismatch { .. }
        | P::ShuffleMismatch { .. } => Class::Extra(Extra::ResumeState),
        _ => Class::Extra(Extra::Config),
    }
}

/// The one mapping from the crates' errors to Python exceptions; `.map_err(to_pyerr)`.
pub fn to_pyerr(e: impl Into<NativeError>) -> PyErr {
    let e = e.into();
    raise(e.class(), e.message())
}

/// Like [`to_pyerr`], with a hint appended to the message.
pub fn to_pyerr_with_hint(e: impl Into<NativeError>, hint: &str) -> PyErr {
    let e = e.into();
    raise(e.class(), format!("{}; {hint}", e.message()))
}

fn raise(class: Class, message: String) -> PyErr {
    match class {
        Class::Base => ShardStreamError::new_err(message),
        Class::Manifest => ManifestError::new_err(message),
        Class::Storage => StorageError::new_err(message),
        Class::Decode => DecodeError::new_err(message),
        Class::Cache => CacheError::new_err(message),
        Class::Extra(which) => new_extra(which, message),
    }
}

/// An exception of one of the two-base classes.
pub fn new_extra(which: Extra, message: String) -> PyErr {
    Python::attach(|py| match extra_type(py, which) {
        Ok(ty) => PyErr::from_type(ty, message),
        Err(e) => e,
    })
}

/// A [`ConfigError`](Extra::Config) raised by the binding itself.
pub fn config_error(message: impl Into<String>) -> PyErr {
    new_extra(Extra::Config, message.into())
}
