//! Cost of a cache hit: `DiskCache::get_or_fetch` on a key that is already on disk (open, shared
//! flock, mmap, trailer check, mtime touch, one trip through tokio's blocking pool), and the
//! CRC-32 that the first hit of an entry in each process pays on top.
//!
//! `cargo bench -p shardstream-loader --bench cache`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardstream_loader::cache::{CacheConfig, CacheKey, DiskCache};

fn hits(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = DiskCache::open(CacheConfig {
        dir: dir.path().to_path_buf(),
        limit: Some(1 << 30),
        huge_pages: true,
    })
    .expect("open cache");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let mut group = c.benchmark_group("cache_hit");
    for (label, len) in [("4KiB", 4usize << 10), ("64MiB", 64 << 20)] {
        let key = CacheKey {
            url: format!("s3://bench/shard-{label}.parquet"),
            etag: Some("\"bench\"".into()),
            size: len as u64,
            range: None,
        };
        let data = Bytes::from(vec![7u8; len]);
        rt.block_on(cache.get_or_fetch(&key, || async { Ok(data) }))
            .expect("fill");
        // Timed inside one async task (as the engine calls it), not one `block_on` per hit.
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let e = cache
                            .get_or_fetch(&key, || async {
                                Err(shardstream_loader::Error::Stopped(
                                    "miss in a hit benchmark".into(),
                                ))
                            })
                            .await
                            .expect("hit");
                        assert!(e.from_cache());
                        black_box(e.bytes());
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();

    // What a first hit per process adds: CRC-32 over a page-cache-resident 64 MiB payload.
    let mut group = c.benchmark_group("crc32");
    let payload = vec![7u8; 64 << 20];
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("64MiB", |b| b.iter(|| crc32fast::hash(black_box(&payload))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = hits
}
criterion_main!(benches);
