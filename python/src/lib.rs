//! `shardstream._native`: the PyO3 extension behind the `shardstream` Python package.
//!
//! A thin layer: every decision about data, order, caching and memory lives in the
//! `shard-index` and `shardstream-loader` crates. This crate only
//! - builds a `LoaderConfig` from Python arguments and drives the engine without holding the
//!   GIL, so Ctrl-C works while it waits ([`loader`]);
//! - hands batch columns to torch / NumPy without a copy through DLPack ([`dlpack`], the one
//!   module with `unsafe`);
//! - maps the crates' errors onto a Python exception hierarchy ([`errors`]);
//! - exposes manifest building and inspection, and the whole `shard-index` command line
//!   ([`index`]).
//!
//! The Python package (`python/shardstream/`) wraps these into `shardstream.Loader`,
//! `shardstream.torch.ShardStreamDataset` and friends; `_native.pyi` documents the types.

use pyo3::prelude::*;

mod dlpack;
mod errors;
mod index;
mod loader;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<loader::Loader>()?;
    m.add_class::<loader::ArrowColumn>()?;
    m.add_class::<dlpack::Tensor>()?;
    m.add_function(wrap_pyfunction!(index::index, m)?)?;
    m.add_function(wrap_pyfunction!(index::inspect, m)?)?;
    m.add_function(wrap_pyfunction!(index::shard_index_main, m)?)?;
    errors::register(m)?;
    Ok(())
}
