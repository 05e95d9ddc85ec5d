//! The blocking face of an async crate.
//!
//! Indexing and manifest I/O are async inside (object_store), but the CLI and the planner's
//! callers are plain threads. [`block_on`] runs a future on one lazily started, process-wide
//! multi-threaded runtime. Calling it from inside a tokio runtime would deadlock or panic, so that
//! is reported as an error telling the caller to use the async function instead.

use crate::error::{Error, Result};
use std::future::Future;
use std::sync::OnceLock;
use tokio::runtime::{Builder, Handle, Runtime};

fn runtime() -> Result<&'static Runtime> {
    static RT: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(
                std::thread::available_parallelism()
                    .map_or(2, |n| n.get())
                    .clamp(2, 8),
            )
            .thread_name("shard-index-io")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::Config(format!("cannot start the I/O runtime: {e}")))
}

/// Runs `fut` to completion on the shared runtime.
pub fn block_on<F: Future>(fut: F) -> Result<F::Output> {
    if Handle::try_current().is_ok() {
        return Err(Error::Config(
            "a blocking shard-index call was made from inside an async runtime; use the async \
             variant of the function"
                .into(),
        ));
    }
    Ok(runtime()?.block_on(fut))
}
