//! The PLAIN fast path (`decode::plain`) must build exactly the batches the Arrow reader does.
//!
//! Random lists of numbers (empty and null lists included) and random numbers are written by
//! arrow-rs's Parquet writer with PLAIN encoding, tiny pages (so rows straddle page boundaries),
//! data page format V1 or V2, uncompressed or zstd; every row group is decoded twice (fast path
//! on and off) and gathered in a random order in both list modes, and the output bytes compared.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Builder, Int64Array, ListBuilder, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterVersion};
use proptest::prelude::*;
use shardstream_loader::collate::{pageable_pool, Collator, Column};
use shardstream_loader::config::ListMode;
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

fn decode_all(file: &Bytes, fast: bool) -> (Vec<DecodedUnit>, usize) {
    let size = file.len() as u64;
    let Tail::Complete(meta) = parse_tail(file, size, "t.parquet").unwrap() else {
        panic!("whole file given")
    };
    let columns = ["tokens", "id", "score"].map(String::from);
    let footer = ShardFooter::new(*meta, &columns, fast, "t.parquet").unwrap();
    let units = (0..footer.num_row_groups())
        .map(|rg| {
            let parts = footer
                .ranges(rg)
                .iter()
                .map(|r| (r.start, file.slice(r.start as usize..r.end as usize)))
                .collect();
            let rows = footer.row_group_rows(rg);
            decode_row_group(&footer, rg, parts, size, "t.parquet", rows).unwrap()
        })
        .collect();
    (units, footer.fast_path_columns())
}

fn bytes_of(cols: &[(String, Column)]) -> Vec<Vec<u8>> {
    cols.iter()
        .flat_map(|(_, c)| match c {
            Column::Tensor(t) => vec![t.as_bytes().to_vec()],
            Column::Padded { values, lengths } => {
                vec![values.as_bytes().to_vec(), lengths.as_bytes().to_vec()]
            }
            Column::Ragged { values, offsets } => {
                vec![values.as_bytes().to_vec(), offsets.as_bytes().to_vec()]
            }
            Column::Arrow(a) => vec![format!("{a:?}").into_bytes()],
        })
        .collect()
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
    ) {
        let file = write(&rows, v2, zstd, rows_per_group);
        let (fast, fast_cols) = decode_all(&file, true);
        let (slow, slow_cols) = decode_all(&file, false);
        prop_assert_eq!(fast_cols, 3, "tokens, id and score all qualify");
        prop_assert_eq!(slow_cols, 0);
        prop_assert!(fast.iter().all(|u| u.columns.iter().all(|c| matches!(c, UnitColumn::Plain(_)))));
        // A shuffled gather over every (unit, row).
        let mut picks: Vec<(usize, usize)> = fast
            .iter()
            .enumerate()
            .flat_map(|(u, unit)| (0..unit.num_rows()).map(move |r| (u, r)))
            .collect();
        prop_assert_eq!(picks.len(), rows.len());
        let mut state = seed | 1;
        for i in (1..picks.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            picks.swap(i, (state % (i as u64 + 1)) as usize);
        }
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
        let all: Vec<(usize, usize)> = fast
            .iter()
            .enumerate()
            .flat_map(|(u, unit)| (0..unit.num_rows()).map(move |r| (u, r)))
            .collect();
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
