//! Describing a Parquet shard from its footer alone.
//!
//! One ranged read of the tail usually holds the whole footer; when the metadata is larger,
//! exactly the missing bytes are fetched. The first reads take [`FOOTER_GUESS`] bytes; after
//! that a shared [`FooterHint`] sizes the tail read to twice the largest footer seen, because
//! the shards of one dataset have footers of about the same size and every byte is egress. The footer gives the row count, the
//! byte range of every row group (so the loader can fetch one row group alone) and the schema.
//! Decoding the Thrift footer runs under `catch_unwind`: a hostile or corrupt footer must be an
//! error naming the file, never a crash of the indexer.

use crate::error::{Error, Result};
use crate::manifest::RowGroup;
use arrow_schema::Schema;
use bytes::Bytes;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes read from the end of the object while nothing is known about the footers.
pub const FOOTER_GUESS: u64 = 64 << 10;
/// Smallest tail read once footers are known (a round trip costs the same below this).
const MIN_GUESS: u64 = 8 << 10;
const TAIL: u64 = 8;

/// The tail-read size learnt from footers seen so far; shared by concurrent reads.
#[derive(Debug, Default)]
pub struct FooterHint {
    largest: AtomicU64,
}

impl FooterHint {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes to read from the end of the next object.
    pub fn guess(&self) -> u64 {
        match self.largest.load(Ordering::Relaxed) {
            0 => FOOTER_GUESS,
            n => (2 * n).clamp(MIN_GUESS, FOOTER_GUESS),
        }
    }

    fn observe(&self, footer_bytes: u64) {
        self.largest.fetch_max(footer_bytes, Ordering::Relaxed);
    }
}

/// What the footer says about a shard.
#[derive(Debug, Clone)]
pub struct Footer {
    pub num_rows: u64,
    pub row_groups: Vec<RowGroup>,
    pub schema: Schema,
    pub bytes_read: u64,
}

/// Reads and decodes the footer of `meta` (pinned to its etag).
pub async fn read_footer(
    store: &dyn ObjectStore,
    meta: &ObjectMeta,
    display: &str,
    hint: &FooterHint,
) -> Result<Footer> {
    let malformed = |reason: String| Error::MalformedParquet {
        path: display.into(),
        reason,
    };
    if meta.size < 12 {
        return Err(malformed(format!(
            "{} bytes is too small to be Parquet",
            meta.size
        )));
    }
    let first = hint.guess().min(meta.size);
    let tail = get_range(store, meta, display, meta.size - first..meta.size).await?;
    let mut bytes_read = tail.len() as u64;
    let n = tail.len();
    let magic = &tail[n - 4..];
    if magic == b"PARE" {
        return Err(malformed(
            "the footer is encrypted; encrypted Parquet is not supported".into(),
        ));
    }
    if magic != b"PAR1" {
        return Err(malformed(
            "missing PAR1 magic at the end (not a Parquet file, or truncated)".into(),
        ));
    }
    let len = u32::from_le_bytes(tail[n - 8..n - 4].try_into().expect("4 bytes")) as u64;
    if len + TAIL + 4 > meta.size {
        return Err(malformed(format!(
            "footer length {len} does not fit in a {}-byte file",
            meta.size
        )));
    }
    hint.observe(len + TAIL);
    let metadata_bytes: Bytes = if len + TAIL <= n as u64 {
        tail.slice(n - (len + TAIL) as usize..n - TAIL as usize)
    } else {
        let start = meta.size - TAIL - len;
        let missing = get_range(store, meta, display, start..meta.size - first).await?;
        bytes_read += missing.len() as u64;
        let mut joined = Vec::with_capacity(len as usize);
        joined.extend_from_slice(&missing);
        joined.extend_from_slice(&tail[..n - TAIL as usize]);
        Bytes::from(joined)
    };
    let metadata = decode(&metadata_bytes).map_err(malformed)?;
    describe(&metadata, meta.size)
        .map(|(num_rows, row_groups, schema)| Footer {
            num_rows,
            row_groups,
            schema,
            bytes_read,
        })
        .map_err(malformed)
}

/// Decodes Thrift metadata, turning both errors and panics into a message.
fn decode(bytes: &[u8]) -> std::result::Result<ParquetMetaData, String> {
    match std::panic::catch_unwind(|| ParquetMetaDataReader::decode_metadata(bytes)) {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the footer could not be decoded (decoder panicked)".into()),
    }
}

/// Row count, row-group layout and Arrow schema of decoded metadata, validated against the file.
pub fn describe(
    metadata: &ParquetMetaData,
    file_size: u64,
) -> std::result::Result<(u64, Vec<RowGroup>, Schema), String> {
    let file = metadata.file_metadata();
    let schema = std::panic::catch_unwind(|| {
        parquet::arrow::parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
    })
    .map_err(|_| "schema conversion panicked".to_string())?
    .map_err(|e| format!("schema: {e}"))?;
    // Only the fields matter for comparing shards; the writer's own metadata (ARROW:schema, pandas) is noise.
    let schema = Schema::new(schema.fields().clone());
    let mut row_groups = Vec::with_capacity(metadata.num_row_groups());
    let mut total: u64 = 0;
    for (i, rg) in metadata.row_groups().iter().enumerate() {
        let rows = u64::try_from(rg.num_rows())
            .map_err(|_| format!("row group {i} has a negative row count"))?;
        let mut start = u64::MAX;
        let mut end = 0u64;
        for col in rg.columns() {
            let (s, len) = col.byte_range();
            start = start.min(s);
            end = end.max(s.saturating_add(len));
        }
        if rg.columns().is_empty() {
            start = 0;
        }
        if end > file_size {
            return Err(format!(
                "row group {i} ends at byte {end}, past the end of the {file_size}-byte file"
            ));
        }
        total = total
            .checked_add(rows)
            .ok_or_else(|| "row count overflows".to_string())?;
        row_groups.push(RowGroup {
            num_rows: rows,
            offset: start,
            length: end - start,
        });
    }
    // Some old writers leave the file-level count at 0; the row groups are what a reader
    // delivers, so only a non-zero disagreement is treated as corruption.
    let declared = file.num_rows();
    if declared > 0 && declared as u64 != total {
        return Err(format!(
            "footer says {declared} rows but its row groups hold {total}"
        ));
    }
    Ok((total, row_groups, schema))
}

async fn get_range(
    store: &dyn ObjectStore,
    meta: &ObjectMeta,
    display: &str,
    range: std::ops::Range<u64>,
) -> Result<Bytes> {
    let want = range.end - range.start;
    let opts = GetOptions {
        if_match: meta.e_tag.clone(),
        range: Some(GetRange::Bounded(range)),
        ..GetOptions::default()
    };
    let result = store
        .get_opts(&meta.location, opts)
        .await
        .map_err(|e| Error::storage(display, e))?;
    super::check_same_object(meta, &result.meta, display)?;
    let bytes = result
        .bytes()
        .await
        .map_err(|e| Error::storage(display, e))?;
    if bytes.len() as u64 != want {
        return Err(Error::ObjectChanged {
            path: display.into(),
            detail: format!(
                "a ranged read returned {} bytes, expected {want}",
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}
