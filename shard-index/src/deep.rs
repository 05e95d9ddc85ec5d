//! Decoding whole shards, for `verify --deep`.
//!
//! Indexing reads Parquet footers only; a deep check decodes every page of every column, which
//! is what catches corruption inside pages (bad levels, bad dictionaries, truncated pages) that
//! a valid footer hides. The decoder runs on a blocking thread under `catch_unwind`, so a
//! hostile file yields an error naming it, never a crash.

use crate::error::{Error, Result};
use bytes::Bytes;
use object_store::{ObjectMeta, ObjectStore};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::sync::Arc;

/// Decodes every row of a Parquet object and returns the row count.
pub async fn count_parquet_rows(
    store: Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
    display: &str,
) -> Result<u64> {
    let mut bytes = Vec::with_capacity(meta.size as usize);
    crate::scan::stream_object(store.as_ref(), meta, display, |chunk| {
        bytes.extend_from_slice(chunk);
        Ok(())
    })
    .await?;
    let display = display.to_string();
    tokio::task::spawn_blocking(move || decode_all(Bytes::from(bytes), &display))
        .await
        .map_err(|e| Error::Config(format!("decoder task failed: {e}")))?
}

/// Decodes a whole Parquet file held in memory.
pub fn decode_all(bytes: Bytes, display: &str) -> Result<u64> {
    let malformed = |reason: String| Error::MalformedParquet {
        path: display.into(),
        reason,
    };
    let run = || -> std::result::Result<u64, String> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| e.to_string())?
            .with_batch_size(8192)
            .build()
            .map_err(|e| e.to_string())?;
        let mut rows = 0u64;
        for batch in reader {
            rows += batch.map_err(|e| e.to_string())?.num_rows() as u64;
        }
        Ok(rows)
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(r) => r.map_err(malformed),
        Err(_) => Err(malformed("the decoder panicked on this file".into())),
    }
}
