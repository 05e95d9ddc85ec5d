//! Decoder throughput per format, in stored (fetched) bytes per second: one generated shard of
//! each kind, decoded from memory exactly as the engine does (Parquet: every row group from its
//! projected column-chunk ranges; tar / JSONL: decompress + parse the whole object).
//!
//! `http_body`: a PLAIN uncompressed shard of 64 KiB blobs (8 MiB row groups), each row group's
//! bytes cut into 417,792-byte chunks as hyper hands a response body over, decoded from the
//! chunks in place (what the engine does) or after joining them into one buffer (what it did
//! before): the join's copy and page faults, against the fast path's page walk.
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

fn http_body(c: &mut Criterion) {
    /// Bytes per chunk of a response body as hyper delivers it (its largest read buffer).
    const CHUNK: usize = 417_792;
    let mut group = c.benchmark_group("http_body");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = SynthConfig {
        samples: 1024,
        shards: 1,
        tokens_min: 1,
        tokens_max: 1,
        blob_bytes: 64 << 10,
        row_group_rows: 128,
        parquet_plain: true,
        uneven: false,
        ..SynthConfig::default()
    };
    synth::generate(dir.path(), &cfg).expect("generate");
    let path = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .expect("a shard");
    let data = Bytes::from(std::fs::read(&path).expect("read shard"));
    let size = data.len() as u64;
    let Tail::Complete(meta) = decode::parquet::parse_tail(&data, size, "b").expect("footer")
    else {
        panic!("whole file given")
    };
    let columns = vec!["id".to_string(), "blob".to_string()];
    let footer = ShardFooter::new(*meta, &columns, true, "b").expect("footer");
    // Every row group's ranges as body chunks, at their file offsets.
    let bodies: Vec<Vec<(u64, Vec<Bytes>)>> = (0..footer.num_row_groups())
        .map(|rg| {
            footer
                .ranges(rg)
                .into_iter()
                .map(|r| {
                    let range = data.slice(r.start as usize..r.end as usize);
                    let chunks = (0..range.len())
                        .step_by(CHUNK)
                        .map(|at| range.slice(at..(at + CHUNK).min(range.len())))
                        .collect();
                    (r.start, chunks)
                })
                .collect()
        })
        .collect();
    group.throughput(Throughput::Bytes(size));
    for joined in [false, true] {
        let name = if joined { "joined" } else { "in_place" };
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut rows = 0;
                for (rg, ranges) in bodies.iter().enumerate() {
                    let mut parts = Vec::new();
                    for (start, chunks) in ranges {
                        if joined {
                            let mut one = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
                            chunks.iter().for_each(|c| one.extend_from_slice(c));
                            parts.push((*start, Bytes::from(one)));
                        } else {
                            let mut at = *start;
                            for c in chunks {
                                parts.push((at, c.clone()));
                                at += c.len() as u64;
                            }
                        }
                    }
                    let expected = footer.row_group_rows(rg);
                    let unit =
                        decode::parquet::decode_row_group(&footer, rg, parts, size, "b", expected)
                            .expect("decode");
                    rows += unit.num_rows();
                }
                black_box(rows)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode_formats, http_body);
criterion_main!(benches);
