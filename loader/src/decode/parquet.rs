//! Parquet row groups → Arrow, from fetched byte ranges.
//!
//! A shard's footer is fetched once (a suffix read of [`FOOTER_GUESS`] bytes, plus the missing
//! part when the metadata is larger) and decoded into a [`ShardFooter`], which knows the
//! projection: which root columns the loader wants, in which order, and the byte ranges of their
//! column chunks in each row group. Only those ranges are fetched (adjacent ones coalesced when
//! the gap is under [`COALESCE_GAP`]); [`decode_row_group`] then decodes them from
//! [`Pieces`], which maps file offsets to the fetched chunks: parquet's synchronous reader
//! through its `ChunkReader`, the PLAIN fast path in place. A request outside them is an error
//! rather than a silent read of the wrong bytes.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::concat_batches;
use arrow::datatypes::{Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::pieces::Pieces;
use super::plain::{self, Declined, PlainLeaf};
use super::{check_rows, error, DecodedUnit, UnitColumn};
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
    /// File root column of each output column.
    roots: Vec<usize>,
    /// Parquet leaf columns of the projected roots.
    leaves: Vec<usize>,
    /// Per output column: its fast-path description, when it qualifies (see [`plain`]).
    plain: Vec<Option<PlainLeaf>>,
    /// Output schema: the projected columns, in the loader's order, with the file's types.
    schema: SchemaRef,
}

impl ShardFooter {
    /// Projects `metadata` to `columns` (the loader's output order). `fast_path`: decode the
    /// columns that qualify with [`plain`] instead of the Arrow reader.
    pub fn new(
        metadata: ParquetMetaData,
        columns: &[String],
        fast_path: bool,
        url: &str,
    ) -> Result<ShardFooter> {
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
        let leaves: Vec<usize> = (0..descr.num_columns())
            .filter(|&leaf| roots.contains(&descr.get_column_root_idx(leaf)))
            .collect();
        let plain = roots
            .iter()
            .zip(&fields)
            .map(|(&root, field)| {
                let mut own = leaves
                    .iter()
                    .filter(|&&leaf| descr.get_column_root_idx(leaf) == root);
                match (own.next(), own.next()) {
                    (Some(&leaf), None) if fast_path => {
                        PlainLeaf::for_column(field.data_type(), leaf, &descr.column(leaf))
                    }
                    _ => None,
                }
            })
            .collect();
        Ok(ShardFooter {
            reader_meta,
            roots,
            leaves,
            plain,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// The output columns: the projected ones, in the loader's order, with the file's types.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// How many output columns take the fast path (for tests and stats).
    pub fn fast_path_columns(&self) -> usize {
        self.plain.iter().flatten().count()
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

/// Decodes row group `rg` of a shard from `parts` (file offset, bytes; a range may come as
/// many consecutive parts), which must cover [`ShardFooter::ranges`], into the footer's output
/// columns: the fast-path ones by [`plain`], the others (and fast-path chunks that turn out not
/// to qualify) by the Arrow reader.
pub fn decode_row_group(
    footer: &ShardFooter,
    rg: usize,
    parts: Vec<(u64, Bytes)>,
    file_size: u64,
    url: &str,
    expected_rows: u64,
) -> Result<DecodedUnit> {
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
    let stored_bytes = parts.iter().map(|(_, b)| b.len() as u64).sum();
    let pieces = Pieces::new(file_size, parts);
    let rows = usize::try_from(expected_rows).unwrap_or(usize::MAX);
    let meta = footer.reader_meta.metadata().row_group(rg);
    let mut columns: Vec<Option<UnitColumn>> = Vec::with_capacity(footer.roots.len());
    let mut general = Vec::new();
    for (i, leaf) in footer.plain.iter().enumerate() {
        let decoded = match leaf {
            None => None,
            Some(leaf) => {
                let chunk = meta.column(leaf.leaf);
                match plain::decode_column(leaf, chunk, &pieces, rows) {
                    Ok(col) => Some(UnitColumn::Plain(col)),
                    Err(Declined::Fallback) => None,
                    Err(Declined::Corrupt(why)) => {
                        let name = footer.schema.field(i).name();
                        return Err(error(url, format!("row group {rg}, column {name}: {why}")));
                    }
                }
            }
        };
        if decoded.is_none() {
            general.push(i);
        }
        columns.push(decoded);
    }
    if !general.is_empty() {
        let arrays = read_arrow(footer, rg, pieces, &general, rows, url)?;
        for (i, array) in general.into_iter().zip(arrays) {
            columns[i] = Some(UnitColumn::Arrow(array));
        }
    }
    let columns: Vec<UnitColumn> = columns
        .into_iter()
        .map(|c| c.expect("every column"))
        .collect();
    for c in &columns {
        check_rows(url, c.len(), expected_rows)?;
    }
    Ok(DecodedUnit {
        columns,
        num_rows: rows,
        stored_bytes,
    })
}

/// The output columns `which` of row group `rg`, through parquet's Arrow reader.
fn read_arrow(
    footer: &ShardFooter,
    rg: usize,
    pieces: Pieces,
    which: &[usize],
    rows: usize,
    url: &str,
) -> Result<Vec<ArrayRef>> {
    let descr = footer.reader_meta.metadata().file_metadata().schema_descr();
    let mask = ProjectionMask::roots(descr, which.iter().map(|&i| footer.roots[i]));
    let reader =
        ParquetRecordBatchReaderBuilder::new_with_metadata(pieces, footer.reader_meta.clone())
            .with_row_groups(vec![rg])
            .with_projection(mask)
            .with_batch_size(rows.max(1))
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
    // The reader yields file order; the loader wants its own order.
    which
        .iter()
        .map(|&i| {
            let name = footer.schema.field(i).name();
            decoded
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| error(url, format!("column {name:?} missing after decoding")))
        })
        .collect()
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
        ShardFooter::new(meta, &cols, true, "x").unwrap()
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
            let u = decode_row_group(&f, rg, parts, file.len() as u64, "x", rows).unwrap();
            assert_eq!(u.num_rows(), rows as usize);
            let ids = ids_of(&u.columns[1]);
            let UnitColumn::Arrow(text) = &u.columns[0] else {
                panic!("text is not a number column")
            };
            let text = text.as_any().downcast_ref::<StringArray>().unwrap();
            assert_eq!(ids.len(), u.num_rows());
            for (i, &got) in ids.iter().enumerate() {
                let id = first_id + i as u64;
                assert_eq!(got as u64, id);
                assert_eq!(text.value(i), synth::expected_text(id));
            }
            first_id += rows;
        }
        assert_eq!(first_id, 3000);
    }

    /// The values of an Int64 column, whichever path decoded it.
    fn ids_of(col: &UnitColumn) -> Vec<i64> {
        match col {
            UnitColumn::Arrow(a) => a
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec(),
            UnitColumn::Plain(p) => (0..p.num_rows())
                .map(|r| {
                    let mut b = [0u8; 8];
                    p.copy_to(p.row(r), &mut b, crate::streaming::Stores::Cached);
                    i64::from_le_bytes(b)
                })
                .collect(),
        }
    }

    #[test]
    fn plain_columns_take_the_fast_path_and_others_do_not() {
        let plain = SynthConfig {
            samples: 700,
            shards: 1,
            row_group_rows: 300,
            parquet_plain: true,
            ..SynthConfig::default()
        };
        let file = shard(&plain);
        let f = footer(&file, &["tokens", "text", "id"]);
        assert_eq!(f.fast_path_columns(), 3, "tokens, text and id qualify");
        let parts = f
            .ranges(0)
            .iter()
            .map(|r| (r.start, file.slice(r.start as usize..r.end as usize)))
            .collect();
        let u =
            decode_row_group(&f, 0, parts, file.len() as u64, "x", f.row_group_rows(0)).unwrap();
        assert!(matches!(u.columns[0], UnitColumn::Plain(_)));
        assert!(matches!(&u.columns[1], UnitColumn::Plain(p) if p.is_byte_array()));
        assert!(matches!(u.columns[2], UnitColumn::Plain(_)));
        // Dictionary-encoded, compressed files fall back to the Arrow reader, chunk by chunk.
        let packed = shard(&SynthConfig {
            parquet_plain: false,
            ..plain
        });
        let f = footer(&packed, &["tokens", "text", "id"]);
        let parts = f
            .ranges(0)
            .iter()
            .map(|r| (r.start, packed.slice(r.start as usize..r.end as usize)))
            .collect();
        let u =
            decode_row_group(&f, 0, parts, packed.len() as u64, "x", f.row_group_rows(0)).unwrap();
        assert!(u.columns.iter().all(|c| matches!(c, UnitColumn::Arrow(_))));
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
