//! The PLAIN fast path (`decode::plain`) must build exactly the batches the Arrow reader does.
//!
//! Random lists of numbers (empty and null lists included) and random numbers are written by
//! arrow-rs's Parquet writer with PLAIN encoding, tiny pages (so rows straddle page boundaries),
//! data page format V1 or V2, uncompressed or zstd; every row group is decoded twice (fast path
//! on and off) and gathered in a random order in both list modes, and the output bytes compared.
//! The same for binary and string columns (BYTE_ARRAY, FIXED_LEN_BYTE_ARRAY; empty values, values
//! larger than a page, nullable columns without nulls) in every binary mode.

mod common;

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, FixedSizeBinaryArray, Float64Array, Int32Builder, Int64Array,
    LargeBinaryArray, ListBuilder, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use common::{bytes_of, every_row, row_group_parts};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterVersion};
use proptest::prelude::*;
use shardstream_loader::collate::{pageable_pool, Collator, Column};
use shardstream_loader::config::{BinaryMode, ColumnMode, ListMode};
use shardstream_loader::decode::parquet::{decode_row_group, parse_tail, ShardFooter, Tail};
use shardstream_loader::decode::{DecodedUnit, UnitColumn};

/// A row: an id, a float, and a list that may be null.
type Row = (i64, f64, Option<Vec<i32>>);

fn write(rows: &[Row], v2: bool, zstd: bool, rows_per_group: usize) -> Bytes {
    let item = Arc::new(Field::new("item", DataType::Int32, false));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("score", DataType::Float64, true),
        Field::new("tokens", DataType::List(item.clone()), true),
    ]));
    let mut lists = ListBuilder::new(Int32Builder::new()).with_field(item);
    for (_, _, l) in rows {
        match l {
            Some(v) => {
                lists.values().append_slice(v);
                lists.append(true);
            }
            None => lists.append(false),
        }
    }
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(lists.finish()),
        ],
    )
    .unwrap();
    write_batch(batch, v2, zstd, rows_per_group)
}

fn write_batch(batch: RecordBatch, v2: bool, zstd: bool, rows_per_group: usize) -> Bytes {
    let schema = batch.schema();
    let props = WriterProperties::builder()
        .set_dictionary_enabled(false)
        .set_encoding(Encoding::PLAIN)
        .set_writer_version(if v2 {
            WriterVersion::PARQUET_2_0
        } else {
            WriterVersion::PARQUET_1_0
        })
        .set_compression(if zstd {
            Compression::ZSTD(ZstdLevel::default())
        } else {
            Compression::UNCOMPRESSED
        })
        .set_data_page_size_limit(64)
        .set_write_batch_size(3)
        .set_max_row_group_row_count(Some(rows_per_group))
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    Bytes::from(out)
}

fn decode_all(file: &Bytes, fast: bool, cut: usize) -> (Vec<DecodedUnit>, usize) {
    decode_cut(file, fast, &["tokens", "id", "score"], cut)
}

fn decode_columns(file: &Bytes, fast: bool, columns: &[&str]) -> (Vec<DecodedUnit>, usize) {
    decode_cut(file, fast, columns, 0)
}

/// Decodes every row group from its fetched ranges, each cut into chunks of `cut` bytes (as an
/// HTTP body arrives; 0: each range whole).
fn decode_cut(file: &Bytes, fast: bool, columns: &[&str], cut: usize) -> (Vec<DecodedUnit>, usize) {
    let size = file.len() as u64;
    let Tail::Complete(meta) = parse_tail(file, size, "t.parquet").unwrap() else {
        panic!("whole file given")
    };
    let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let footer = ShardFooter::new(*meta, &columns, fast, "t.parquet").unwrap();
    let units = (0..footer.num_row_groups())
        .map(|rg| {
            let parts = row_group_parts(file, &footer, rg, cut);
            let rows = footer.row_group_rows(rg);
            decode_row_group(&footer, rg, parts, size, "t.parquet", rows).unwrap()
        })
        .collect();
    (units, footer.fast_path_columns())
}

/// A shuffled list of every (unit, row).
fn shuffled_picks(units: &[DecodedUnit], seed: u64) -> Vec<(usize, usize)> {
    let mut picks = every_row(units);
    let mut state = seed | 1;
    for i in (1..picks.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        picks.swap(i, (state % (i as u64 + 1)) as usize);
    }
    picks
}

/// A row of the binary test: a blob (Binary, nullable column without nulls), a text (Utf8), a
/// large blob (LargeBinary) and a 3-byte code (FixedSizeBinary(3)).
type BytesRow = (Vec<u8>, String, Vec<u8>, [u8; 3]);

fn bytes_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("blob", DataType::Binary, true),
        Field::new("text", DataType::Utf8, false),
        Field::new("large", DataType::LargeBinary, false),
        Field::new("code", DataType::FixedSizeBinary(3), false),
    ]))
}

fn write_bytes(rows: &[BytesRow], v2: bool, zstd: bool, rows_per_group: usize) -> Bytes {
    let batch = RecordBatch::try_new(
        bytes_schema(),
        vec![
            Arc::new(BinaryArray::from_iter(rows.iter().map(|r| Some(&r.0[..])))) as ArrayRef,
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
            Arc::new(LargeBinaryArray::from_iter_values(
                rows.iter().map(|r| &r.2[..]),
            )),
            Arc::new(
                FixedSizeBinaryArray::try_from_iter(rows.iter().map(|r| r.3.to_vec())).unwrap(),
            ),
        ],
    )
    .unwrap();
    write_batch(batch, v2, zstd, rows_per_group)
}

fn bytes_rows_strategy() -> impl Strategy<Value = Vec<BytesRow>> {
    let blob = prop_oneof![
        2 => Just(Vec::new()),
        6 => prop::collection::vec(any::<u8>(), 0..40),
        1 => prop::collection::vec(any::<u8>(), 60..300),
    ];
    let row = (
        blob,
        "[a-zé€😀]{0,12}",
        prop::collection::vec(any::<u8>(), 0..20),
        any::<[u8; 3]>(),
    );
    prop::collection::vec(row, 1..150)
}

fn rows_strategy() -> impl Strategy<Value = Vec<Row>> {
    let list = prop_oneof![
        1 => Just(None),
        6 => prop::collection::vec(any::<i32>(), 0..40).prop_map(Some),
    ];
    prop::collection::vec((any::<i64>(), -1e9f64..1e9, list), 1..200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fast_path_batches_equal_arrow_reader_batches(
        rows in rows_strategy(),
        v2 in any::<bool>(),
        zstd in any::<bool>(),
        rows_per_group in 7usize..300,
        seed in any::<u64>(),
        cut in prop_oneof![Just(0usize), 1usize..64, 64usize..5000],
    ) {
        let file = write(&rows, v2, zstd, rows_per_group);
        // The fast path reads chunks as they arrived, the Arrow reader gets whole ranges.
        let (fast, fast_cols) = decode_all(&file, true, cut);
        let (slow, slow_cols) = decode_all(&file, false, 0);
        prop_assert_eq!(fast_cols, 3, "tokens, id and score all qualify");
        prop_assert_eq!(slow_cols, 0);
        prop_assert!(fast.iter().all(|u| u.columns.iter().all(|c| matches!(c, UnitColumn::Plain(_)))));
        // A shuffled gather over every (unit, row).
        let picks = shuffled_picks(&fast, seed);
        prop_assert_eq!(picks.len(), rows.len());
        let schema = Schema::new(vec![
            Field::new("tokens", DataType::List(Arc::new(Field::new("item", DataType::Int32, false))), true),
            Field::new("id", DataType::Int64, false),
            Field::new("score", DataType::Float64, true),
        ]);
        for mode in [ListMode::Padded, ListMode::Ragged] {
            let c = Collator::new(&schema, |_| mode, pageable_pool());
            let a: Vec<&DecodedUnit> = fast.iter().collect();
            let b: Vec<&DecodedUnit> = slow.iter().collect();
            for chunk in picks.chunks(37) {
                let x = bytes_of(&c.collate(&a, chunk).unwrap());
                let y = bytes_of(&c.collate(&b, chunk).unwrap());
                prop_assert_eq!(x, y);
            }
        }
        // And the values are the ones written.
        let c = Collator::new(&schema, |_| ListMode::Ragged, pageable_pool());
        let all = every_row(&fast);
        let a: Vec<&DecodedUnit> = fast.iter().collect();
        let cols = c.collate(&a, &all).unwrap();
        let Column::Ragged { values, offsets } = &cols[0].1 else { panic!("ragged") };
        let (values, offsets) = (values.as_slice::<i32>().unwrap(), offsets.as_slice::<i64>().unwrap());
        for (i, (id, score, list)) in rows.iter().enumerate() {
            let got = &values[offsets[i] as usize..offsets[i + 1] as usize];
            prop_assert_eq!(got, list.as_deref().unwrap_or(&[]));
            let Column::Tensor(ids) = &cols[1].1 else { panic!("ids") };
            prop_assert_eq!(ids.as_slice::<i64>().unwrap()[i], *id);
            let Column::Tensor(scores) = &cols[2].1 else { panic!("scores") };
            prop_assert_eq!(scores.as_slice::<f64>().unwrap()[i], *score);
        }
    }
}

#[test]
fn null_numbers_fall_back_and_fail_clearly() {
    // A nullable column holding a null: the fast path declines, the Arrow reader decodes it and
    // the collator reports the null, as it always did.
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])) as ArrayRef],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_dictionary_enabled(false)
        .set_encoding(Encoding::PLAIN)
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema.clone(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let file = Bytes::from(out);
    let Tail::Complete(meta) = parse_tail(&file, file.len() as u64, "n.parquet").unwrap() else {
        panic!()
    };
    let footer = ShardFooter::new(*meta, &["x".to_string()], true, "n.parquet").unwrap();
    assert_eq!(footer.fast_path_columns(), 1);
    let parts = footer
        .ranges(0)
        .iter()
        .map(|r| (r.start, file.slice(r.start as usize..r.end as usize)))
        .collect();
    let u = decode_row_group(&footer, 0, parts, file.len() as u64, "n.parquet", 3).unwrap();
    assert!(matches!(u.columns[0], UnitColumn::Arrow(_)), "declined");
    let c = Collator::new(&schema, |_| ListMode::Padded, pageable_pool());
    let err = c.collate(&[&u], &[(0, 0), (0, 1)]).unwrap_err();
    assert!(err.to_string().contains("null"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fast_path_byte_batches_equal_arrow_reader_batches(
        rows in bytes_rows_strategy(),
        v2 in any::<bool>(),
        zstd in any::<bool>(),
        rows_per_group in 5usize..200,
        seed in any::<u64>(),
        cut in prop_oneof![Just(0usize), 1usize..64, 64usize..5000],
    ) {
        let columns = ["blob", "text", "large", "code"];
        let file = write_bytes(&rows, v2, zstd, rows_per_group);
        // The fast path reads chunks as they arrived; the Arrow reader reads them too (through
        // its ChunkReader, copying what straddles), and is checked against whole ranges below.
        let (fast, fast_cols) = decode_cut(&file, true, &columns, cut);
        let (slow, slow_cols) = decode_cut(&file, false, &columns, cut);
        let (whole, _) = decode_columns(&file, false, &columns);
        prop_assert_eq!(fast_cols, 4, "all four qualify");
        prop_assert_eq!(slow_cols, 0);
        prop_assert!(fast.iter().all(|u| u.columns.iter().all(|c| matches!(c, UnitColumn::Plain(_)))));
        let picks = shuffled_picks(&fast, seed);
        prop_assert_eq!(picks.len(), rows.len());
        let schema = bytes_schema();
        let a: Vec<&DecodedUnit> = fast.iter().collect();
        let b: Vec<&DecodedUnit> = slow.iter().collect();
        let w: Vec<&DecodedUnit> = whole.iter().collect();
        for binary in [BinaryMode::Bytes, BinaryMode::Padded, BinaryMode::Ragged] {
            let mode = ColumnMode { list: ListMode::Padded, binary };
            let c = Collator::new(&schema, |_| mode, pageable_pool());
            for chunk in picks.chunks(29) {
                let x = c.collate(&a, chunk).unwrap();
                let y = c.collate(&b, chunk).unwrap();
                prop_assert_eq!(bytes_of(&x), bytes_of(&y), "{:?}", binary);
                prop_assert_eq!(bytes_of(&c.collate(&w, chunk).unwrap()), bytes_of(&y));
                // A batch mixing fast-path and Arrow units gives the same too.
                let mixed: Vec<&DecodedUnit> = fast
                    .iter()
                    .zip(&slow)
                    .enumerate()
                    .map(|(i, (f, s))| if i % 2 == 0 { f } else { s })
                    .collect();
                let z = c.collate(&mixed, chunk).unwrap();
                prop_assert_eq!(bytes_of(&z), bytes_of(&y), "mixed, {:?}", binary);
            }
        }
        // And the values are the ones written, in ragged and padded form.
        let all = every_row(&fast);
        let ragged = ColumnMode { list: ListMode::Ragged, binary: BinaryMode::Ragged };
        let cols = Collator::new(&schema, |_| ragged, pageable_pool()).collate(&a, &all).unwrap();
        let padded = ColumnMode { list: ListMode::Padded, binary: BinaryMode::Padded };
        let pcols = Collator::new(&schema, |_| padded, pageable_pool()).collate(&a, &all).unwrap();
        for (k, get) in [
            (0usize, &(|r: &BytesRow| r.0.clone()) as &dyn Fn(&BytesRow) -> Vec<u8>),
            (1, &|r: &BytesRow| r.1.as_bytes().to_vec()),
            (2, &|r: &BytesRow| r.2.clone()),
        ] {
            let Column::Ragged { values, offsets } = &cols[k].1 else { panic!("ragged") };
            let (v, o) = (values.as_slice::<u8>().unwrap(), offsets.as_slice::<i64>().unwrap());
            let Column::Padded { values: pv, lengths } = &pcols[k].1 else { panic!("padded") };
            let (pv, lens) = (pv.as_slice::<u8>().unwrap(), lengths.as_slice::<i64>().unwrap());
            let lmax = pcols[k].1.padded_width();
            for (i, row) in rows.iter().enumerate() {
                let want = get(row);
                prop_assert_eq!(&v[o[i] as usize..o[i + 1] as usize], &want[..]);
                prop_assert_eq!(lens[i] as usize, want.len());
                prop_assert_eq!(&pv[i * lmax..i * lmax + want.len()], &want[..]);
                prop_assert!(pv[i * lmax + want.len()..(i + 1) * lmax].iter().all(|&x| x == 0));
            }
        }
        let Column::Tensor(code) = &cols[3].1 else { panic!("fixed-size binary is [B, L]") };
        prop_assert_eq!(code.shape(), &[rows.len(), 3]);
        let want: Vec<u8> = rows.iter().flat_map(|r| r.3).collect();
        prop_assert_eq!(code.as_slice::<u8>().unwrap(), &want[..]);
    }
}

/// Padded width of a padded column (test helper).
trait PaddedWidth {
    fn padded_width(&self) -> usize;
}

impl PaddedWidth for Column {
    fn padded_width(&self) -> usize {
        match self {
            Column::Padded { values, .. } => values.shape()[1],
            _ => panic!("not padded"),
        }
    }
}

#[test]
fn binary_with_nulls_or_a_dictionary_falls_back() {
    // Nulls: the fast path declines; the Arrow reader's nulls come out as empty values.
    let schema = Arc::new(Schema::new(vec![Field::new("b", DataType::Binary, true)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(BinaryArray::from(vec![Some(&b"ab"[..]), None, Some(b"c")])) as ArrayRef],
    )
    .unwrap();
    let file = write_batch(batch.clone(), false, false, 100);
    let (units, fast_cols) = decode_columns(&file, true, &["b"]);
    assert_eq!(fast_cols, 1, "the column qualifies; its chunk declines");
    assert!(matches!(units[0].columns[0], UnitColumn::Arrow(_)));
    let mode = ColumnMode {
        list: ListMode::Padded,
        binary: BinaryMode::Ragged,
    };
    let c = Collator::new(&schema, |_| mode, pageable_pool());
    let cols = c.collate(&[&units[0]], &[(0, 0), (0, 1), (0, 2)]).unwrap();
    let Column::Ragged { values, offsets } = &cols[0].1 else {
        panic!()
    };
    assert_eq!(values.as_slice::<u8>().unwrap(), b"abc");
    assert_eq!(offsets.as_slice::<i64>().unwrap(), &[0, 2, 2, 3]);
    // Dictionary encoding: the whole chunk goes to the Arrow reader.
    let props = WriterProperties::builder()
        .set_dictionary_enabled(true)
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let (units, _) = decode_columns(&Bytes::from(out), true, &["b"]);
    assert!(matches!(units[0].columns[0], UnitColumn::Arrow(_)));
}
