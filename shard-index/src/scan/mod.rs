//! Reading one shard to learn its sample count, row groups and schema.
//!
//! Parquet shards are described by their footer alone ([`parquet`]): one ranged read of the tail,
//! a second only when the footer is larger than the first guess. Tar and JSONL shards have no
//! index, so their bytes are streamed once through a push-based scanner ([`tar`], [`jsonl`]),
//! behind a streaming decompressor when the object is compressed ([`decompress`]); nothing is
//! buffered beyond one chunk.
//!
//! Every read is pinned to the etag seen in the listing (`If-Match`) and the etag and size
//! the store reports on the read are checked again, so an object overwritten while it is being
//! indexed is an [`Error::ObjectChanged`] rather than a row describing bytes that no longer
//! exist.

pub mod decompress;
pub mod jsonl;
pub mod parquet;
pub mod tar;

use crate::error::{Error, Result};
use crate::format::{ShardFormat, ShardKind};
use crate::manifest::ShardEntry;
use arrow_schema::Schema;
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, ObjectMeta, ObjectStore};

/// What a streaming scanner learned about a shard.
#[derive(Debug, Clone)]
pub struct ScanOutput {
    pub num_samples: u64,
    pub schema: Schema,
}

/// A consumer of a shard's (decompressed) bytes, fed in arbitrary chunks.
pub trait ShardScanner: Send {
    fn feed(&mut self, data: &[u8]) -> Result<()>;
    fn finish(self: Box<Self>) -> Result<ScanOutput>;
}

/// A fully described shard: its manifest row and its sample schema.
#[derive(Debug, Clone)]
pub struct ScannedShard {
    pub entry: ShardEntry,
    pub schema: Schema,
    /// Bytes read from the store to describe it (the footer for Parquet, all of it otherwise).
    pub bytes_read: u64,
}

/// Describes the object `meta` (whose manifest path is `relative`) as a shard of `kind`.
pub async fn scan_object(
    store: &dyn ObjectStore,
    meta: &ObjectMeta,
    relative: &str,
    display: &str,
    kind: ShardKind,
    footer_hint: &parquet::FooterHint,
) -> Result<ScannedShard> {
    let (num_samples, row_groups, schema, bytes_read) = match kind.format {
        ShardFormat::Parquet => {
            let footer = parquet::read_footer(store, meta, display, footer_hint).await?;
            (
                footer.num_rows,
                Some(footer.row_groups),
                footer.schema,
                footer.bytes_read,
            )
        }
        ShardFormat::Tar | ShardFormat::Jsonl => {
            let scanner: Box<dyn ShardScanner> = match kind.format {
                ShardFormat::Tar => Box::new(tar::TarScanner::new(display)),
                _ => Box::new(jsonl::JsonlScanner::new(display)),
            };
            let mut pipeline = decompress::Pipeline::new(display, kind.compression, scanner);
            let bytes = stream_object(store, meta, display, |chunk| pipeline.feed(chunk)).await?;
            let out = pipeline.finish()?;
            (out.num_samples, None, out.schema, bytes)
        }
    };
    Ok(ScannedShard {
        entry: ShardEntry {
            source: 0,
            path: relative.to_string(),
            size: meta.size,
            etag: meta.e_tag.clone(),
            version: meta.version.clone(),
            last_modified_ms: Some(meta.last_modified.timestamp_millis()),
            kind,
            num_samples,
            row_groups: row_groups.unwrap_or_default(),
        },
        schema,
        bytes_read,
    })
}

/// Streams the whole object into `sink`, checking that it is still the listed version and
/// that exactly `meta.size` bytes arrive.
pub async fn stream_object(
    store: &dyn ObjectStore,
    meta: &ObjectMeta,
    display: &str,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let opts = GetOptions {
        if_match: meta.e_tag.clone(),
        ..GetOptions::default()
    };
    let result = store
        .get_opts(&meta.location, opts)
        .await
        .map_err(|e| Error::storage(display, e))?;
    check_same_object(meta, &result.meta, display)?;
    let mut stream = result.into_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::storage(display, e))?;
        total += chunk.len() as u64;
        sink(&chunk)?;
    }
    if total != meta.size {
        return Err(Error::ObjectChanged {
            path: display.into(),
            detail: format!("read {total} bytes, expected {}", meta.size),
        });
    }
    Ok(total)
}

/// Errors unless `seen` (from a read) is the same object version as `listed`.
pub fn check_same_object(listed: &ObjectMeta, seen: &ObjectMeta, display: &str) -> Result<()> {
    if seen.size != listed.size {
        return Err(Error::ObjectChanged {
            path: display.into(),
            detail: format!("size is now {} (listed as {})", seen.size, listed.size),
        });
    }
    if let (Some(a), Some(b)) = (&listed.e_tag, &seen.e_tag) {
        if a != b {
            return Err(Error::ObjectChanged {
                path: display.into(),
                detail: format!("etag is now {b} (listed as {a})"),
            });
        }
    }
    Ok(())
}

/// Looks up one object's metadata (used for single-object sources and verification).
pub async fn head(store: &dyn ObjectStore, key: &StorePath, display: &str) -> Result<ObjectMeta> {
    use object_store::ObjectStoreExt;
    store
        .head(key)
        .await
        .map_err(|e| Error::storage(display, e))
}
