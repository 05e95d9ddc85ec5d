//! Shard bytes to columns: one [`DecodedUnit`] per *unit* (a Parquet row group, or a whole tar
//! or JSONL shard), holding exactly the requested columns in the requested order.
//!
//! - [`parquet`]: a row group decoded from its fetched byte ranges with the shard's footer
//!   metadata, projected to the requested columns (only their column chunks are fetched);
//!   numbers, lists of numbers and byte strings stored PLAIN take [`plain`]'s fast path, which
//!   reads uncompressed pages in place from the fetched chunks ([`pieces`], [`rope`],
//!   [`page_header`]).
//! - [`tar`]: WebDataset tar (plain, zstd or gzip) → `__key__` (Utf8) plus one Binary column per
//!   field, null where a sample lacks the field.
//! - [`jsonl`]: JSON lines (plain, zstd or gzip) → Arrow with the manifest's schema, projected.
//!
//! Decoders are synchronous and CPU-bound; the engine runs them on blocking threads bounded by
//! `decode_threads`. [`guarded`] turns a panic inside a decoder (a hostile or corrupt file can
//! trip an assertion deep in a codec) into [`Error::Decode`] naming the shard, and every decoder
//! checks the row count against the manifest, so a shard that changed without its etag changing
//! is still caught.

pub mod jsonl;
pub mod page_header;
pub mod parquet;
pub mod pieces;
pub mod plain;
pub mod rope;
pub mod tar;

use std::io::Read;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{Schema, SchemaRef};
use bytes::Bytes;
use shard_index::Compression;

use crate::{Error, Result};

/// One column of a decoded unit.
#[derive(Debug)]
pub enum UnitColumn {
    /// Decoded by arrow-rs (every type).
    Arrow(ArrayRef),
    /// Numbers or lists of numbers left in their PLAIN page bytes (the fast path).
    Plain(plain::PlainColumn),
}

impl UnitColumn {
    /// Rows.
    pub fn len(&self) -> usize {
        match self {
            UnitColumn::Arrow(a) => a.len(),
            UnitColumn::Plain(p) => p.num_rows(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the column keeps alive.
    pub fn memory_bytes(&self) -> u64 {
        match self {
            UnitColumn::Arrow(a) => a.get_array_memory_size() as u64,
            UnitColumn::Plain(p) => p.memory_bytes(),
        }
    }
}

/// One decoded unit: the loader's columns, in the loader's order.
#[derive(Debug)]
pub struct DecodedUnit {
    pub columns: Vec<UnitColumn>,
    pub num_rows: usize,
    /// Bytes read from storage to produce it (its ranges, or the whole object).
    pub stored_bytes: u64,
}

impl DecodedUnit {
    /// A unit decoded by arrow-rs as one batch.
    pub fn from_batch(batch: RecordBatch, stored_bytes: u64) -> DecodedUnit {
        DecodedUnit {
            num_rows: batch.num_rows(),
            columns: batch
                .columns()
                .iter()
                .cloned()
                .map(UnitColumn::Arrow)
                .collect(),
            stored_bytes,
        }
    }

    pub fn num_rows(&self) -> usize {
        self.num_rows
    }

    /// Bytes held by the decoded columns.
    pub fn memory_bytes(&self) -> u64 {
        self.columns.iter().map(UnitColumn::memory_bytes).sum()
    }
}

/// `Error::Decode` for `url`.
pub(crate) fn error(url: &str, reason: impl Into<String>) -> Error {
    Error::Decode {
        url: url.to_string(),
        reason: reason.into(),
    }
}

/// Runs a decoder, turning a panic into [`Error::Decode`] naming `url`.
pub fn guarded<T>(url: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => Err(error(
            url,
            format!(
                "the decoder panicked: {}",
                crate::error::panic_message(panic.as_ref())
            ),
        )),
    }
}

/// Errors unless a decoded unit has the row count the manifest promised.
pub(crate) fn check_rows(url: &str, got: usize, expected: u64) -> Result<()> {
    if got as u64 != expected {
        return Err(error(
            url,
            format!(
                "decoded {got} samples but the manifest says {expected}; the shard changed since \
                 it was indexed: rebuild the manifest with `shard-index update`"
            ),
        ));
    }
    Ok(())
}

/// Decompresses a whole tar/JSONL object. Uncompressed data is returned as is (no copy).
/// Truncated input is an error: zstd would otherwise return the frames decoded so far.
pub fn decompress(compression: Compression, data: Bytes, url: &str) -> Result<Bytes> {
    match compression {
        Compression::None => Ok(data),
        Compression::Zstd => {
            let hint = zstd::zstd_safe::get_frame_content_size(&data)
                .ok()
                .flatten()
                .unwrap_or(data.len() as u64 * 4)
                .min(1 << 32);
            let mut out = Vec::with_capacity(hint as usize);
            let mut decoder = zstd::stream::read::Decoder::with_buffer(&data[..])
                .map_err(|e| error(url, format!("zstd: {e}")))?;
            decoder
                .read_to_end(&mut out)
                .map_err(|e| error(url, format!("zstd: {e}")))?;
            // The reader stops quietly at the end of input even inside a frame; a complete
            // stream's frames add up to exactly the input.
            check_zstd_complete(&data, url)?;
            Ok(Bytes::from(out))
        }
        Compression::Gzip => {
            let mut out = Vec::with_capacity(data.len() * 4);
            flate2::read::MultiGzDecoder::new(&data[..])
                .read_to_end(&mut out)
                .map_err(|e| error(url, format!("gzip: {e}")))?;
            Ok(Bytes::from(out))
        }
    }
}

/// Walks the zstd frames of `data`; errors if the last one is cut short.
fn check_zstd_complete(mut data: &[u8], url: &str) -> Result<()> {
    while !data.is_empty() {
        let n = zstd::zstd_safe::find_frame_compressed_size(data).map_err(|code| {
            error(
                url,
                format!(
                    "zstd stream is truncated or corrupt ({})",
                    zstd::zstd_safe::get_error_name(code)
                ),
            )
        })?;
        if n == 0 || n > data.len() {
            return Err(error(url, "zstd stream is truncated"));
        }
        data = &data[n..];
    }
    Ok(())
}

/// The schema of the loader's output: `columns` of `schema`, in that order (all of them for
/// `None`). An unknown column is [`Error::ColumnNotFound`] listing what exists.
pub fn project(schema: &Schema, columns: Option<&[String]>) -> Result<SchemaRef> {
    let Some(columns) = columns else {
        return Ok(Arc::new(Schema::new(schema.fields().clone())));
    };
    let mut fields = Vec::with_capacity(columns.len());
    for c in columns {
        match schema.field_with_name(c) {
            Ok(f) => fields.push(f.clone()),
            Err(_) => {
                return Err(Error::ColumnNotFound {
                    column: c.clone(),
                    available: schema.fields().iter().map(|f| f.name().clone()).collect(),
                })
            }
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    #[test]
    fn zstd_round_trips_and_truncation_is_caught() {
        let plain: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let z = zstd::encode_all(&plain[..], 3).unwrap();
        let out = decompress(Compression::Zstd, Bytes::from(z.clone()), "x.zst").unwrap();
        assert_eq!(&out[..], &plain[..]);
        let err = decompress(
            Compression::Zstd,
            Bytes::from(z[..z.len() - 10].to_vec()),
            "x.zst",
        )
        .unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
        assert!(err.to_string().contains("x.zst"), "{err}");
        let err = decompress(Compression::Zstd, Bytes::from_static(b"nope"), "y").unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
    }

    #[test]
    fn gzip_round_trips_and_truncation_is_caught() {
        use std::io::Write;
        let plain = b"hello gzip ".repeat(1000);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&plain).unwrap();
        let gz = enc.finish().unwrap();
        let out = decompress(Compression::Gzip, Bytes::from(gz.clone()), "x.gz").unwrap();
        assert_eq!(&out[..], &plain[..]);
        assert!(decompress(
            Compression::Gzip,
            Bytes::from(gz[..gz.len() / 2].to_vec()),
            "x"
        )
        .is_err());
    }

    #[test]
    fn plain_data_is_not_copied() {
        let b = Bytes::from(vec![1u8; 100]);
        let out = decompress(Compression::None, b.clone(), "x").unwrap();
        assert_eq!(out.as_ptr(), b.as_ptr());
    }

    #[test]
    fn panics_become_decode_errors() {
        let err = guarded::<()>("s3://b/x.tar", || panic!("boom")).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }));
        assert!(err.to_string().contains("s3://b/x.tar") && err.to_string().contains("boom"));
    }

    #[test]
    fn projection_keeps_order_and_names_missing_columns() {
        let s = Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Utf8, true),
        ]);
        let p = project(&s, Some(&["b".into(), "a".into()])).unwrap();
        assert_eq!(p.field(0).name(), "b");
        let err = project(&s, Some(&["zz".into()])).unwrap_err();
        match err {
            Error::ColumnNotFound { column, available } => {
                assert_eq!(column, "zz");
                assert_eq!(available, ["a", "b"]);
            }
            other => panic!("{other}"),
        }
    }
}
