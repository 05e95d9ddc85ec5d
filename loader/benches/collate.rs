//! Batch assembly against its physical limit: gathering a shuffled batch's rows from several
//! decoded units into pooled buffers, next to a plain `memcpy` of the same number of bytes, in
//! one criterion group so the report shows them side by side (both as bytes/s of output); and
//! the memory system's own limit for a shuffled gather ([`row_copy`]).
//!
//! `cargo bench -p shardstream-loader --bench collate`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int32Builder, Int64Array, ListBuilder, RecordBatch, StringArray};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardstream_loader::collate::{pageable_pool, Collator, Column};
use shardstream_loader::config::ListMode;
use shardstream_loader::decode::DecodedUnit;

const UNITS: usize = 8;
const ROWS_PER_UNIT: usize = 4096;
const BATCH: usize = 1024;

fn unit(u: usize, tokens: usize, with_text: bool) -> RecordBatch {
    let mut list = ListBuilder::new(Int32Builder::new());
    let ids: Vec<i64> = (0..ROWS_PER_UNIT)
        .map(|r| (u * ROWS_PER_UNIT + r) as i64)
        .collect();
    for &id in &ids {
        let len = tokens / 2 + (id as usize * 7919) % (tokens / 2 + 1);
        list.values()
            .extend((0..len).map(|j| Some((id as i32).wrapping_add(j as i32))));
        list.append(true);
    }
    let mut cols: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(ids.clone()))),
        ("tokens", Arc::new(list.finish())),
    ];
    if with_text {
        cols.push((
            "text",
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("sample {i} says hello")),
            )),
        ));
    }
    RecordBatch::try_from_iter(cols).expect("batch")
}

/// A shuffled batch: rows spread over all units (what a window shuffle produces).
fn rows() -> Vec<(usize, usize)> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..BATCH)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (
                (x % UNITS as u64) as usize,
                ((x >> 8) % ROWS_PER_UNIT as u64) as usize,
            )
        })
        .collect()
}

fn output_bytes(cols: &[(String, Column)]) -> usize {
    cols.iter()
        .map(|(_, c)| match c {
            Column::Tensor(t) => t.byte_len(),
            Column::Padded { values, lengths } => values.byte_len() + lengths.byte_len(),
            Column::Ragged { values, offsets } => values.byte_len() + offsets.byte_len(),
            Column::Arrow(a) => a.get_array_memory_size(),
        })
        .sum()
}

fn assembly(c: &mut Criterion) {
    for (name, mode, text) in [
        ("padded_tokens", ListMode::Padded, false),
        ("ragged_tokens", ListMode::Ragged, false),
        ("padded_tokens_and_text", ListMode::Padded, true),
    ] {
        let batches: Vec<RecordBatch> = (0..UNITS).map(|u| unit(u, 256, text)).collect();
        let schema = batches[0].schema();
        let units: Vec<DecodedUnit> = batches
            .into_iter()
            .map(|b| DecodedUnit::from_batch(b, 0))
            .collect();
        let refs: Vec<&DecodedUnit> = units.iter().collect();
        let rows = rows();
        let collator = Collator::new(&schema, |_| mode, pageable_pool());
        let bytes = output_bytes(&collator.collate(&refs, &rows).expect("collate"));

        let mut group = c.benchmark_group(format!("assemble_{name}"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Bytes(bytes as u64));
        group.bench_function("collate", |b| {
            b.iter(|| black_box(collator.collate(&refs, &rows).expect("collate")))
        });
        let src = vec![1u8; bytes];
        let mut dst = vec![0u8; bytes];
        group.bench_function("memcpy", |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            })
        });
        group.finish();
    }
}

/// The memory system's limit for a shuffled gather: copying 8 KiB rows (2,048 int32 tokens)
/// out of 1 GiB — far larger than any cache, like page-cache-resident shards — in file order,
/// and in shuffled order. The bare sequential read streams with the hardware prefetchers; a
/// shuffled batch cannot, whatever the loader does, so `shuffled` bounds any loader's copy.
fn row_copy(c: &mut Criterion) {
    const ROW: usize = 8 << 10;
    const SOURCE: usize = 1 << 30;
    const BATCH_ROWS: usize = 256;
    let rows = SOURCE / ROW;
    let src: Vec<u8> = (0..SOURCE).map(|i| i as u8).collect();
    let mut dst = vec![0u8; BATCH_ROWS * ROW];
    let sequential: Vec<usize> = (0..rows).collect();
    let mut shuffled = sequential.clone();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..rows).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        shuffled.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let mut group = c.benchmark_group("row_copy_8KiB_from_1GiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(SOURCE as u64));
    for (name, order) in [("sequential", &sequential), ("shuffled", &shuffled)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                for (i, &r) in order.iter().enumerate() {
                    let at = (i % BATCH_ROWS) * ROW;
                    dst[at..at + ROW].copy_from_slice(&src[r * ROW..(r + 1) * ROW]);
                }
                black_box(&mut dst);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, assembly, row_copy);
criterion_main!(benches);
