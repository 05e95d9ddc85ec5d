//! Decoder throughput per format, in stored (fetched) bytes per second: one generated shard of
//! each kind, decoded from memory exactly as the engine does (Parquet: every row group from its
//! projected column-chunk ranges; tar / JSONL: decompress + parse the whole object).
//!
//! `cargo bench -p shardstream-loader --bench decode`

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shard_index::synth::{self, SynthConfig};
use shard_index::{IndexOptions, ShardFormat, ShardKind, Silent};
use shardstream_loader::decode::{self, parquet::ShardFooter, parquet::Tail};

const SAMPLES: u64 = 20_000;

fn decode_formats(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for kind in ["parquet", "tar", "tar.zst", "jsonl", "jsonl.zst"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = SynthConfig {
            kind: kind.parse::<ShardKind>().expect("kind"),
            samples: SAMPLES,
            shards: 1,
            tokens_min: 16,
            tokens_max: 256,
            row_group_rows: 2000,
            ..SynthConfig::default()
        };
        synth::generate(dir.path(), &cfg).expect("generate");
        let (manifest, _) = shard_index::runtime::block_on(shard_index::build(
            &[dir.path().to_string_lossy().into_owned()],
            &IndexOptions::default(),
            &Silent,
        ))
        .expect("runtime")
        .expect("index");
        let path = dir.path().join(manifest.path(0));
        let data = Bytes::from(std::fs::read(&path).expect("read shard"));
        let schema = decode::project(&manifest.meta.schema, None).expect("schema");
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        group.throughput(Throughput::Bytes(data.len() as u64));
        let kind = manifest.kind(0);
        group.bench_with_input(BenchmarkId::from_parameter(kind), &data, |b, data| {
            b.iter(|| match kind.format {
                ShardFormat::Parquet => {
                    let size = data.len() as u64;
                    let tail = data.slice(data.len().saturating_sub(64 << 10)..);
                    let Tail::Complete(meta) =
                        decode::parquet::parse_tail(&tail, size, "b").expect("footer")
                    else {
                        panic!("footer larger than 64 KiB")
                    };
                    let footer = ShardFooter::new(*meta, &columns, true, "b").expect("footer");
                    let mut rows = 0;
                    for rg in 0..footer.num_row_groups() {
                        let parts = footer
                            .ranges(rg)
                            .into_iter()
                            .map(|r| (r.start, data.slice(r.start as usize..r.end as usize)))
                            .collect();
                        let expected = footer.row_group_rows(rg);
                        let batch = decode::parquet::decode_row_group(
                            &footer, rg, parts, size, "b", expected,
                        )
                        .expect("decode");
                        rows += batch.num_rows();
                    }
                    black_box(rows)
                }
                format => {
                    let plain =
                        decode::decompress(kind.compression, data.clone(), "b").expect("inflate");
                    let batch = if format == ShardFormat::Tar {
                        decode::tar::decode(&plain, &schema, "b", SAMPLES)
                    } else {
                        decode::jsonl::decode(&plain, &schema, "b", SAMPLES)
                    }
                    .expect("decode");
                    black_box(batch.num_rows())
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode_formats);
criterion_main!(benches);
