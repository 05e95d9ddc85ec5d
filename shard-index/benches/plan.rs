//! The planner's per-sample cost: every batch of one epoch, as a loader asks for them.
//!
//! The loader's producer thread turns each batch of the plan into fetches and gathers, so
//! what a batch costs to compute is paid once per sample on a thread that shares the cores
//! with the decoders and collators. Two shapes: the peers bench's token data (32 shards of
//! 8,192 rows, a 16,384-sample window with the loader's warm-up, one node) and a many-node
//! job over three mixed streams.
//!
//! `cargo bench -p shard-index --bench plan`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shard_index::plan::{EpochPlan, Mix, PlanOptions, StreamSpec, Topology, Window};

fn stream(name: &str, shards: usize, rows: u64, mix: Mix) -> StreamSpec {
    StreamSpec {
        name: name.into(),
        fingerprint: format!("fp-{name}"),
        shard_samples: vec![rows; shards],
        shard_bytes: vec![rows * 8192; shards],
        mix,
    }
}

fn options(global_batch_size: u64, canonical_nodes: u32, window: u64) -> PlanOptions {
    PlanOptions {
        seed: 0,
        shuffle: true,
        window: Window::Samples(window),
        warmup: 6,
        global_batch_size,
        drop_last: false,
        canonical_nodes: Some(canonical_nodes),
        epoch_size: None,
    }
}

fn epoch_batches(c: &mut Criterion) {
    let cases = [
        (
            "tokens_1_node",
            vec![stream("tokens", 32, 8192, Mix::Repeat(1.0))],
            options(256, 1, 16_384),
            Topology::new(1, 1, 1),
        ),
        (
            "3_streams_8_nodes_rank_0",
            vec![
                stream("web", 400, 2000, Mix::Weight(3.0)),
                stream("code", 100, 3000, Mix::Weight(1.0)),
                stream("books", 20, 5000, Mix::Repeat(1.5)),
            ],
            options(8 * 256, 8, 16_384),
            Topology::new(8, 1, 1),
        ),
    ];
    let mut group = c.benchmark_group("plan_epoch_batches");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, streams, opts, topology) in cases {
        let plan = EpochPlan::with_topology(streams, opts, 0, topology).expect("plan");
        let rank = plan.rank(topology, 0).expect("rank");
        group.throughput(Throughput::Elements(rank.num_batches() * rank.batch_size()));
        group.bench_function(name, |b| {
            b.iter(|| {
                for batch in rank.batches_from(0) {
                    black_box(batch);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, epoch_batches);
criterion_main!(benches);
