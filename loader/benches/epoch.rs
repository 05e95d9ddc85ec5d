//! One shuffled epoch through the whole engine (plan → fetch → decode → collate → channel)
//! from local files, next to a bare sequential read of the same files: bytes/s of stored data.
//!
//! `cargo bench -p shardstream-loader --bench epoch`

use std::hint::black_box;
use std::io::Read;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shard_index::synth::{self, SynthConfig};
use shard_index::{IndexOptions, ShardKind, Silent};
use shardstream_loader::config::{LoaderConfig, Window};
use shardstream_loader::engine::Loader;

fn epoch(c: &mut Criterion) {
    let mut group = c.benchmark_group("epoch_local");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for kind in ["parquet", "tar.zst", "jsonl"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let cfg = SynthConfig {
            kind: kind.parse::<ShardKind>().expect("kind"),
            samples: 100_000,
            shards: 16,
            tokens_min: 16,
            tokens_max: 256,
            row_group_rows: 2000,
            ..SynthConfig::default()
        };
        synth::generate(&data, &cfg).expect("generate");
        let (manifest, _) = shard_index::runtime::block_on(shard_index::build(
            &[data.to_string_lossy().into_owned()],
            &IndexOptions::default(),
            &Silent,
        ))
        .expect("runtime")
        .expect("index");
        let total: u64 = manifest.sizes().iter().sum();
        group.throughput(Throughput::Bytes(total));
        group.bench_function(BenchmarkId::new("loader", kind), |b| {
            b.iter(|| {
                let config = LoaderConfig::from_manifest(manifest.clone(), 256)
                    .with_window(Window::Samples(20_000))
                    .with_prefetch_bytes(256 << 20);
                let mut loader = Loader::new(config).expect("loader");
                let mut n = 0;
                for batch in loader.iter() {
                    n += black_box(batch.expect("batch")).len();
                }
                assert_eq!(n as u64, 100_000u64.div_ceil(256) * 256);
            })
        });
        group.bench_function(BenchmarkId::new("sequential_read", kind), |b| {
            let mut buf = vec![0u8; 1 << 20];
            b.iter(|| {
                for i in 0..manifest.len() {
                    let mut f = std::fs::File::open(data.join(manifest.path(i))).expect("open");
                    while f.read(&mut buf).expect("read") > 0 {}
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, epoch);
criterion_main!(benches);
