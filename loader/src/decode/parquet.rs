//! Parquet row groups → Arrow, from fetched byte ranges.
//!
//! A shard's footer is fetched once (a suffix read of [`FOOTER_GUESS`] bytes, plus the missing
//! part when the metadata is larger) and decoded into a [`ShardFooter`], which knows the
//! projection: which root columns the loader wants, in which order, and the byte ranges of their
//! column chunks in each row group. Only those ranges are fetched (adjacent ones coalesced when
//! the gap is under [`COALESCE_GAP`]); [`decode_row_group`] then runs parquet's synchronous
//! reader over a [`ChunkReader`] that maps file offsets to the fetched pieces — no copy of the
//! column chunks, and a request outside them is an error rather than a silent read of the wrong
//! bytes.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::{Schema, SchemaRef};
use bytes::{Buf, Bytes};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};

use super::{check_rows, error};
use crate::{Error, Result};

/// Bytes read from the end of a shard on the first footer read.
pub const FOOTER_GUESS: u64 = 64 << 10;
/// Column chunks closer than this are fetched in one request.
pub const COALESCE_GAP: u64 = 256 << 10;

/// What the last bytes of a file say about its footer.
pub enum Tail {
    /// The metadata, decoded.
    Complete(Box<ParquetMetaData>),
    /// The metadata starts at this file offset, before the bytes we have.
    NeedFrom(u64),
}

/// Parses the last `tail.len()` bytes of a `file_size`-byte Parquet file.
pub fn parse_tail(tail: &[u8], file_size: u64, url: &str) -> Result<Tail> {
    let n = tail.len();
    if n < 8 || file_size < 12 {
        return Err(error(
            url,
            format!("{file_size} bytes is too small to be Parquet"),
        ));
    }
    match &tail[n - 4..] {
        b"PAR1" => {}
        b"PARE" => return Err(error(url, "encrypted Parquet is not supported")),
        _ => {
            return Err(error(
                url,
                "missing PAR1 magic at the end (not Parquet, or truncated)",
            ))
        }
    }
    let len = u64::from(u32::from_le_bytes(
        tail[n - 8..n - 4].try_into().expect("4 bytes"),
    ));
    if len + 12 > file_size {
        return Err(error(
            url,
            format!("footer length {len} does not fit in a {file_size}-byte file"),
        ));
    }
    if len + 8 > n as u64 {
        return Ok(Tail::NeedFrom(file_size - 8 - len));
    }
    let bytes = &tail[n - 8 - len as usize..n - 8];
    let meta = super::guarded(url, || {
        ParquetMetaDataReader::decode_metadata(bytes)
            .map_err(|e| error(url, format!("bad footer: {e}")))
    })?;
    Ok(Tail::Complete(Box::new(meta)))
}

/// A shard's decoded footer plus the loader's projection of it.
#[derive(Debug, Clone)]
pub struct ShardFooter {
    reader_meta: ArrowReaderMetadata,
    mask: ProjectionMask,
    /// Parquet leaf columns of the projected roots.
    leaves: Vec<usize>,
    /// Output schema: the projected columns, in the loader's order, with the file's types.
    schema: SchemaRef,
}

impl ShardFooter {
    /// Projects `metadata` to `columns` (the loader's output order).
    pub fn new(metadata: ParquetMetaData, columns: &[String], url: &str) -> Result<ShardFooter> {
        let reader_meta = super::guarded(url, || {
            ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new())
                .map_err(|e| error(url, format!("bad schema: {e}")))
        })?;
        let file_schema = reader_meta.schema().clone();
        let mut roots = Vec::with_capacity(columns.len());
        let mut fields = Vec::with_capacity(columns.len());
        for c in columns {
            let (i, f) = file_schema
                .column_with_name(c)
                .ok_or_else(|| Error::ColumnNotFound {
                    column: c.clone(),
                    available: file_schema
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect(),
                })?;
            roots.push(i);
            fields.push(f.clone());
        }
        let descr = reader_meta.metadata().file_metadata().schema_descr();
        let leaves = (0..descr.num_columns())
            .filter(|&leaf| roots.contains(&descr.get_column_root_idx(leaf)))
            .collect();
        let mask = ProjectionMask::roots(descr, roots.iter().copied());
        Ok(ShardFooter {
            reader_meta,
            mask,
            leaves,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    pub fn num_row_groups(&self) -> usize {
        self.reader_meta.metadata().num_row_groups()
    }

    pub fn row_group_rows(&self, rg: usize) -> u64 {
        self.reader_meta.metadata().row_group(rg).num_rows().max(0) as u64
    }

    /// The byte ranges holding the projected columns of row group `rg`, coalesced.
    pub fn ranges(&self, rg: usize) -> Vec<Range<u64>> {
        let meta = self.reader_meta.metadata().row_group(rg);
        let mut ranges: Vec<Range<u64>> = self
            .leaves
            .iter()
            .map(|&leaf| {
                let (start, len) = meta.column(leaf).byte_range();
                start..start + len
            })
            .filter(|r| !r.is_empty())
            .collect();
        coalesce(&mut ranges, COALESCE_GAP);
        ranges
    }
}

/// Sorts and merges ranges that overlap or lie within `gap` bytes of each other.
pub fn coalesce(ranges: &mut Vec<Range<u64>>, gap: u64) {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match out.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(gap) => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    *ranges = out;
}

/// The fetched pieces of one file, addressed by file offset.
struct Pieces {
    file_size: u64,
    parts: Vec<(u64, Bytes)>,
}

impl Pieces {
    fn slice(&self, start: u64, len: Option<usize>) -> parquet::errors::Result<Bytes> {
        for (offset, bytes) in &self.parts {
            let end = offset + bytes.len() as u64;
            if start >= *offset && start < end.max(offset + 1) {
                let from = (start - offset) as usize;
                let to = match len {
                    Some(l) => from + l,
                    None => bytes.len(),
                };
                if to <= bytes.len() {
                    return Ok(bytes.slice(from..to));
                }
            }
        }
        Err(ParquetError::General(format!(
            "bytes {start}..{} were not fetched",
            len.map_or("end".to_string(), |l| (start + l as u64).to_string())
        )))
    }
}

impl Length for Pieces {
    fn len(&self) -> u64 {
        self.file_size
    }
}

impl ChunkReader for Pieces {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}

/// Decodes row group `rg` of a shard from `parts` (file offset, bytes), which must cover
/// [`ShardFooter::ranges`]. The batch has the footer's output schema.
pub fn decode_row_group(
    footer: &ShardFooter,
    rg: usize,
    parts: Vec<(u64, Bytes)>,
    file_size: u64,
    url: &str,
    expected_rows: u64,
) -> Result<RecordBatch> {
    if rg >= footer.num_row_groups() {
        return Err(error(
            url,
            format!(
                "row group {rg} does not exist (the footer lists {}); the shard changed since it \
                 was indexed",
                footer.num_row_groups()
            ),
        ));
    }
    check_rows(url, footer.row_group_rows(rg) as usize, expected_rows)?;
    let rows = usize::try_from(expected_rows).unwrap_or(usize::MAX).max(1);
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
        Pieces { file_size, parts },
        footer.reader_meta.clone(),
    )
    .with_row_groups(vec![rg])
    .with_projection(footer.mask.clone())
    .with_batch_size(rows)
    .build()
    .map_err(|e| error(url, format!("row group {rg}: {e}")))?;
    let mut batches = Vec::with_capacity(1);
    for b in reader {
        batches.push(b.map_err(|e| error(url, format!("row group {rg}: {e}")))?);
    }
    let decoded = match batches.len() {
        1 => batches.pop().expect("one"),
        _ => {
            let schema = batches
                .first()
                .map(|b| b.schema())
                .unwrap_or_else(|| Arc::new(Schema::empty()));
            concat_batches(&schema, &batches).map_err(|e| error(url, e.to_string()))?
        }
    };
    check_rows(url, decoded.num_rows(), expected_rows)?;
    // The reader yields file order; the loader wants its own order.
    let columns = footer
        .schema
        .fields()
        .iter()
        .map(|f| {
            decoded
                .column_by_name(f.name())
                .cloned()
                .ok_or_else(|| error(url, format!("column {:?} missing after decoding", f.name())))
        })
        .collect::<Result<Vec<_>>>()?;
    let schema = Arc::new(Schema::new(
        footer
            .schema
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(schema, columns).map_err(|e| error(url, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, StringArray};
    use shard_index::synth::{self, SynthConfig};

    fn shard(cfg: &SynthConfig) -> Bytes {
        let dir = tempfile::tempdir().unwrap();
        synth::generate(dir.path(), cfg).unwrap();
        Bytes::from(std::fs::read(dir.path().join("part-00000.parquet")).unwrap())
    }

    fn footer(file: &Bytes, columns: &[&str]) -> ShardFooter {
        let size = file.len() as u64;
        let tail = file.slice(file.len().saturating_sub(FOOTER_GUESS as usize)..);
        let meta = match parse_tail(&tail, size, "x").unwrap() {
            Tail::Complete(m) => *m,
            Tail::NeedFrom(_) => panic!("small footer"),
        };
        let cols: Vec<String> = columns.iter().map(|s| s.to_string()).collect();
        ShardFooter::new(meta, &cols, "x").unwrap()
    }

    #[test]
    fn row_groups_decode_from_their_projected_ranges_only() {
        let cfg = SynthConfig {
            samples: 3000,
            shards: 1,
            row_group_rows: 400,
            blob_bytes: 64,
            ..SynthConfig::default()
        };
        let file = shard(&cfg);
        let f = footer(&file, &["text", "id"]);
        assert!(f.num_row_groups() > 3);
        let mut first_id = 0u64;
        for rg in 0..f.num_row_groups() {
            let ranges = f.ranges(rg);
            let parts: Vec<(u64, Bytes)> = ranges
                .iter()
                .map(|r| (r.start, file.slice(r.start as usize..r.end as usize)))
                .collect();
            let rows = f.row_group_rows(rg);
            let b = decode_row_group(&f, rg, parts, file.len() as u64, "x", rows).unwrap();
            assert_eq!(b.schema().field(0).name(), "text");
            let ids = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            let text = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..b.num_rows() {
                let id = first_id + i as u64;
                assert_eq!(ids.value(i) as u64, id);
                assert_eq!(text.value(i), synth::expected_text(id));
            }
            first_id += rows;
        }
        assert_eq!(first_id, 3000);
    }

    #[test]
    fn projection_skips_unwanted_column_chunks() {
        let cfg = SynthConfig {
            samples: 500,
            shards: 1,
            row_group_rows: 500,
            uneven: false,
            blob_bytes: 4096,
            ..SynthConfig::default()
        };
        let file = shard(&cfg);
        let all = footer(&file, &["id", "tokens", "text", "blob"]);
        let some = footer(&file, &["id"]);
        let len = |f: &ShardFooter| f.ranges(0).iter().map(|r| r.end - r.start).sum::<u64>();
        assert!(
            len(&some) * 10 < len(&all),
            "{} vs {}",
            len(&some),
            len(&all)
        );
    }

    #[test]
    fn missing_bytes_are_an_error_not_garbage() {
        let cfg = SynthConfig {
            samples: 200,
            shards: 1,
            ..SynthConfig::default()
        };
        let file = shard(&cfg);
        let f = footer(&file, &["tokens"]);
        let r = f.ranges(0)[0].clone();
        let short = vec![(r.start, file.slice(r.start as usize..(r.end - 10) as usize))];
        let err = decode_row_group(
            &f,
            0,
            short,
            file.len() as u64,
            "s.parquet",
            f.row_group_rows(0),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
        assert!(err.to_string().contains("s.parquet"));
    }

    #[test]
    fn tails_that_are_not_parquet_are_rejected() {
        assert!(parse_tail(b"not parquet at all", 18, "x").is_err());
        let mut t = vec![0u8; 100];
        t[92..96].copy_from_slice(&1000u32.to_le_bytes());
        t[96..].copy_from_slice(b"PAR1");
        assert!(matches!(
            parse_tail(&t, 100_000, "x").unwrap(),
            Tail::NeedFrom(98_992)
        ));
        assert!(parse_tail(&t, 500, "x").is_err());
    }

    #[test]
    fn coalescing_merges_near_ranges() {
        let mut r = vec![100..200, 0..50, 210..300, 10_000_000..10_000_010];
        coalesce(&mut r, 20);
        assert_eq!(r, vec![0..50, 100..300, 10_000_000..10_000_010]);
    }
}
