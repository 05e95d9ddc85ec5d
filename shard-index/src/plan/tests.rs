//! Property and scenario tests for the planner.
//!
//! The properties are checked against the plan's own global sequence `S`
//! (`EpochPlan::global_sample`), whose composition is checked independently against the
//! manifests — so "every rank's batches" ↔ "S" ↔ "the data" are each tied down once.

use std::collections::HashMap;
use std::time::Instant;

use proptest::prelude::*;

use super::*;

fn spec(name: &str, samples: Vec<u64>, mix: Mix) -> StreamSpec {
    let bytes = samples
        .iter()
        .enumerate()
        .map(|(i, &n)| n * 1000 + i as u64)
        .collect();
    StreamSpec {
        name: name.into(),
        fingerprint: format!("fp-{name}"),
        shard_samples: samples,
        shard_bytes: bytes,
        mix,
    }
}

fn options(seed: u64, gb: u64, c: Option<u32>) -> PlanOptions {
    PlanOptions {
        seed,
        shuffle: true,
        window: Window::Samples(64),
        warmup: 0,
        global_batch_size: gb,
        drop_last: false,
        canonical_nodes: c,
        epoch_size: None,
    }
}

#[derive(Clone, Debug)]
struct Case {
    streams: Vec<StreamSpec>,
    options: PlanOptions,
    topology: Topology,
    epoch: u64,
}

fn arb_shards() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(0u64..200, 1..50).prop_map(|mut v| {
        if v.iter().all(|&x| x == 0) {
            v[0] = 1;
        }
        v
    })
}

fn arb_mix() -> impl Strategy<Value = Mix> {
    prop_oneof![
        3 => Just(Mix::Repeat(1.0)),
        2 => (0.3f64..2.6).prop_map(Mix::Repeat),
        2 => (0.1f64..3.0).prop_map(Mix::Weight),
    ]
}

fn arb_streams() -> impl Strategy<Value = Vec<StreamSpec>> {
    prop::collection::vec((arb_shards(), arb_mix()), 1..=3).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (s, m))| spec(&format!("s{i}"), s, m))
            .collect()
    })
}

fn arb_window() -> impl Strategy<Value = Window> {
    prop_oneof![
        (1u64..300).prop_map(Window::Samples),
        (1u64..300_000).prop_map(Window::Bytes),
    ]
}

fn arb_topology() -> impl Strategy<Value = Topology> {
    (1u32..=5, 1u32..=4, 1u32..=3).prop_map(|(n, r, w)| Topology::new(n, r, w))
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        arb_streams(),
        arb_topology(),
        1u64..=8,
        arb_window(),
        any::<bool>(),
        prop::bool::weighted(0.75),
        prop::option::of(1u32..=8),
        any::<u64>(),
        0u64..4,
        prop::option::weighted(0.3, 1u64..3000),
        prop_oneof![Just(0u32), 1u32..=8],
    )
        .prop_map(
            |(
                streams,
                topology,
                b,
                window,
                drop_last,
                shuffle,
                c,
                seed,
                epoch,
                epoch_size,
                warmup,
            )| {
                let weighted = streams.iter().any(|s| matches!(s.mix, Mix::Weight(_)));
                Case {
                    options: PlanOptions {
                        seed,
                        shuffle,
                        window,
                        warmup,
                        global_batch_size: topology.world() * b,
                        drop_last,
                        canonical_nodes: c,
                        epoch_size: if weighted { epoch_size } else { None },
                    },
                    streams,
                    topology,
                    epoch,
                }
            },
        )
}

/// Builds the case's plan; `None` for the two legitimate refusals (checked here).
fn build(case: &Case) -> Option<EpochPlan> {
    match EpochPlan::with_topology(
        case.streams.clone(),
        case.options.clone(),
        case.epoch,
        case.topology,
    ) {
        Ok(plan) => Some(plan),
        Err(PlanError::EmptyEpoch) => None,
        Err(PlanError::NoFullBatch {
            samples,
            global_batch_size,
        }) => {
            assert!(case.options.drop_last && samples < global_batch_size);
            None
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn all_batches(plan: &EpochPlan, topology: Topology) -> Vec<Vec<Batch>> {
    (0..topology.world() as u32)
        .map(|r| plan.rank(topology, r).unwrap().batches_from(0).collect())
        .collect()
}

/// Global batch `k` as delivered: rank slices concatenated in rank order.
fn global_batch(per_rank: &[Vec<Batch>], k: usize) -> Vec<SampleRef> {
    per_rank
        .iter()
        .flat_map(|b| b[k].samples.iter().copied())
        .collect()
}

fn key(s: &SampleRef) -> (u32, u64) {
    (s.stream, s.global)
}

fn sorted_keys<'a>(it: impl Iterator<Item = &'a SampleRef>) -> Vec<(u32, u64)> {
    let mut v: Vec<_> = it.filter(|s| !s.padded).map(key).collect();
    v.sort_unstable();
    v
}

/// Multiset of `S[from, to)`.
fn s_range(plan: &EpochPlan, from: u64, to: u64) -> Vec<(u32, u64)> {
    let mut v: Vec<_> = (from..to)
        .map(|g| key(&plan.global_sample(g).unwrap()))
        .collect();
    v.sort_unstable();
    v
}

/// Every field of a sample agrees with the manifest.
fn check_manifest(streams: &[StreamSpec], s: &SampleRef) {
    let shards = &streams[s.stream as usize].shard_samples;
    let before: u64 = shards[..s.shard as usize].iter().sum();
    assert!(s.row < shards[s.shard as usize], "{s:?}");
    assert_eq!(s.global, before + s.row, "{s:?}");
}

/// `S` holds each sample of stream s ⌊T_s/N_s⌋ or ⌈T_s/N_s⌉ times, T_s in total.
fn check_composition(plan: &EpochPlan, streams: &[StreamSpec]) {
    let mut counts: HashMap<(u32, u64), u64> = HashMap::new();
    for g in 0..plan.num_samples() {
        let s = plan.global_sample(g).unwrap();
        check_manifest(streams, &s);
        *counts.entry(key(&s)).or_default() += 1;
    }
    for (i, (spec, &t)) in streams.iter().zip(&plan.stream_epoch_samples()).enumerate() {
        let n: u64 = spec.shard_samples.iter().sum();
        let (lo, hi) = (t / n, t.div_ceil(n));
        let mut total = 0;
        for global in 0..n {
            let c = counts.get(&(i as u32, global)).copied().unwrap_or(0);
            assert!(
                (lo..=hi).contains(&c),
                "stream {i} sample {global}: {c} not in {lo}..={hi}"
            );
            total += c;
        }
        assert_eq!(total, t);
    }
}

fn divisors(c: u32) -> Vec<u32> {
    (1..=c).filter(|&d| c.is_multiple_of(d)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Properties 1 and 2: determinism, exactly-once delivery, padding and batch counts.
    #[test]
    fn delivers_every_sample_exactly_as_planned(case in arb_case()) {
        let Some(plan) = build(&case) else { return Ok(()) };
        let topo = case.topology;
        let per_rank = all_batches(&plan, topo);
        let again = build(&case).unwrap();
        prop_assert_eq!(&per_rank, &all_batches(&again, topo));

        check_composition(&plan, &case.streams);
        let nb = plan.num_batches();
        let gb = case.options.global_batch_size;
        let t = plan.num_samples();
        let b = gb / topo.world();
        for (r, batches) in per_rank.iter().enumerate() {
            let rank = plan.rank(topo, r as u32).unwrap();
            prop_assert_eq!(rank.num_batches(), nb);
            prop_assert_eq!(batches.len() as u64, nb);
            for (k, batch) in batches.iter().enumerate() {
                prop_assert_eq!(batch.index, k as u64);
                prop_assert_eq!(batch.samples.len() as u64, b);
                if (k as u64) + 1 < nb {
                    prop_assert!(batch.samples.iter().all(|s| !s.padded));
                }
                for s in &batch.samples {
                    check_manifest(&case.streams, s);
                }
            }
            // Workers split the rank's batches round-robin and together cover them.
            let workers = topo.workers_per_rank;
            let mut seen = 0;
            for w in 0..workers {
                for batch in rank.worker_batches(w).unwrap() {
                    prop_assert_eq!(batch.index % u64::from(workers), u64::from(w));
                    prop_assert_eq!(&batch, &batches[batch.index as usize]);
                    seen += 1;
                }
            }
            prop_assert_eq!(seen, nb);
        }
        // Each global batch is exactly its range of S (padding aside), so the epoch delivers
        // S[0, min(T, nb*GB)): all of S unless drop_last dropped the tail.
        let mut delivered = 0u64;
        for k in 0..nb as usize {
            let batch = global_batch(&per_rank, k);
            let from = k as u64 * gb;
            let to = (from + gb).min(t);
            prop_assert_eq!(sorted_keys(batch.iter()), s_range(&plan, from, to));
            prop_assert_eq!(batch.iter().filter(|s| s.padded).count() as u64, from + gb - to);
            delivered += to - from;
        }
        if case.options.drop_last {
            prop_assert_eq!(delivered, t / gb * gb);
        } else {
            prop_assert_eq!(delivered, t);
        }
    }

    /// Batches evaluate a node's consecutive positions window by window
    /// (`PlanInner::node_samples`); any range of positions, across window and warm-up
    /// boundaries, must give what evaluating each position alone (`node_sample`) gives.
    #[test]
    fn node_runs_match_single_positions(case in arb_case(), cuts in prop::collection::vec(any::<u64>(), 0..6)) {
        let Some(plan) = build(&case) else { return Ok(()) };
        let inner = &plan.inner;
        for (node, layout) in inner.nodes.iter().enumerate() {
            let len = layout.len;
            let one: Vec<SampleRef> = (0..len).map(|i| inner.node_sample(node, i, false)).collect();
            // The node's sequence cut into runs at random places, as batches would cut it.
            let mut bounds: Vec<u64> = cuts.iter().map(|c| c % (len + 1)).collect();
            bounds.extend([0, len]);
            bounds.sort_unstable();
            let mut runs = Vec::new();
            for pair in bounds.windows(2) {
                inner.node_samples(node, pair[0]..pair[1], &mut runs);
            }
            prop_assert_eq!(runs, one);
        }
    }

    /// Property 3: resuming after any k batches on another topology delivers exactly the rest.
    #[test]
    fn resume_delivers_exactly_the_remainder(
        case in arb_case(),
        other in arb_topology(),
        frac in 0u64..=100,
        b in 1u64..=3,
        change_gb in prop::bool::weighted(0.3),
    ) {
        let mut case = case;
        // A GB valid for both topologies, so the same GB can be kept across the resume.
        case.options.global_batch_size = case.topology.world() * other.world() * b;
        let Some(plan) = build(&case) else { return Ok(()) };
        let k = plan.num_batches() * frac / 100;
        let state = plan.state_after(k).unwrap();
        let state = ResumeState::from_json(&state.to_json().unwrap()).unwrap();
        prop_assert_eq!(state.samples_consumed, k * case.options.global_batch_size);

        let mut options = case.options.clone();
        options.canonical_nodes = None;
        if change_gb {
            options.global_batch_size = other.world() * (b + 1);
        }
        let gb2 = options.global_batch_size;
        let resumed = EpochPlan::resume(case.streams.clone(), options, &state).unwrap();
        prop_assert_eq!(resumed.canonical_nodes(), plan.canonical_nodes());
        let rest = all_batches(&resumed, other);
        let start = state.samples_consumed.min(plan.num_samples());
        let left = plan.num_samples() - start;
        let deliverable = if case.options.drop_last { left / gb2 * gb2 } else { left };
        prop_assert_eq!(
            sorted_keys(rest.iter().flatten().flat_map(|b| b.samples.iter())),
            s_range(&plan, start, start + deliverable)
        );
        if !change_gb {
            // Same GB and C: the remaining global batches are the uninterrupted run's.
            let original = all_batches(&plan, case.topology);
            prop_assert_eq!(resumed.num_batches(), plan.num_batches() - k);
            for j in 0..resumed.num_batches() as usize {
                let mut a = global_batch(&rest, j);
                let mut b = global_batch(&original, j + k as usize);
                a.sort_unstable();
                b.sort_unstable();
                prop_assert_eq!(a, b);
            }
        }
    }

    /// Properties 4 and 5: for fixed C and GB, every topology with nodes | C sees the same
    /// global batches, and each physical node reads only its canonical nodes' shards.
    #[test]
    fn topology_independence_and_locality(
        streams in arb_streams(),
        c in 1u32..=6,
        rpn in 1u32..=3,
        m in 1u64..=3,
        window in arb_window(),
        shuffle in any::<bool>(),
        drop_last in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let gb = u64::from(c) * u64::from(rpn) * m;
        let mut opts = options(seed, gb, Some(c));
        opts.window = window;
        opts.shuffle = shuffle;
        opts.drop_last = drop_last;
        let plan = match EpochPlan::new(streams.clone(), opts, 1) {
            Ok(p) => p,
            Err(PlanError::EmptyEpoch | PlanError::NoFullBatch { .. }) => return Ok(()),
            Err(e) => panic!("{e}"),
        };
        let lens = plan.node_lengths();
        let q = lens.iter().copied().min().unwrap_or(0);
        // Node lengths within one of each other, longer nodes first, none empty: then S is
        // exactly "g -> node g % C" and locality holds for every batch, padding included.
        let prefix_balanced =
            q > 0 && lens.windows(2).all(|w| w[0] >= w[1]) && lens[0] - q <= 1;
        let pieces: Vec<Vec<Piece>> = (0..c).map(|n| plan.node_pieces(n).unwrap()).collect();

        let mut reference: Option<Vec<Vec<SampleRef>>> = None;
        for nodes in divisors(c) {
            let topo = Topology::new(nodes, rpn, 1);
            let per_rank = all_batches(&plan, topo);
            let globals: Vec<Vec<SampleRef>> =
                (0..plan.num_batches() as usize).map(|k| global_batch(&per_rank, k)).collect();
            match &reference {
                None => reference = Some(globals),
                Some(r) => prop_assert_eq!(r, &globals),
            }
            let per_node = c / nodes;
            for (r, batches) in per_rank.iter().enumerate() {
                let node = r as u32 / rpn;
                let own: Vec<&Piece> = pieces[(node * per_node) as usize..((node + 1) * per_node) as usize]
                    .iter()
                    .flatten()
                    .collect();
                for (k, batch) in batches.iter().enumerate() {
                    let in_balanced_region = (k as u64 + 1) * gb <= q * u64::from(c);
                    for s in &batch.samples {
                        if !(prefix_balanced || (in_balanced_region && !s.padded)) {
                            continue;
                        }
                        prop_assert!(
                            own.iter().any(|p| p.stream == s.stream
                                && p.shard == s.shard
                                && (p.row_start..p.row_end).contains(&s.row)),
                            "node {} read {:?} it does not own (lens {:?})", node, s, lens
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn plans_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<EpochPlan>();
    assert_send_sync::<RankPlan>();
    assert_send_sync::<Batches>();
}

/// Property 6: mixing proportions hold in every 10,000-sample window of S.
#[test]
fn mixing_holds_in_every_window() {
    let a: Vec<u64> = (0..300).map(|i| 40 + (i * 37) % 120).collect();
    let b: Vec<u64> = (0..300).map(|i| 20 + (i * 53) % 160).collect();
    let streams = vec![
        spec("a", a, Mix::Weight(0.7)),
        spec("b", b, Mix::Weight(0.3)),
    ];
    let mut opts = options(7, 64, Some(4));
    opts.window = Window::Samples(1000);
    let plan = EpochPlan::new(streams, opts, 3).unwrap();
    let t = plan.num_samples();
    let counts = plan.stream_epoch_samples();
    let share = counts[0] as f64 / t as f64;
    assert!((share - 0.7).abs() < 1e-4, "epoch share {share}");
    // Prefix sums of "is stream a" over S, then every sliding window in O(1).
    let mut prefix = vec![0u64; t as usize + 1];
    for g in 0..t {
        let is_a = plan.global_sample(g).unwrap().stream == 0;
        prefix[g as usize + 1] = prefix[g as usize] + u64::from(is_a);
    }
    const WINDOW: usize = 10_000;
    // Each node window (1000 samples) is exactly proportional (±1 per stream); a 10k window of
    // S covers 2500 positions of each of the 4 nodes, i.e. whole node windows plus two random
    // partial ones per node, whose hypergeometric noise is ~0.002. 0.01 is ~5 sigma.
    const TOLERANCE: f64 = 0.01;
    let mut worst = 0f64;
    for start in 0..=(t as usize - WINDOW) {
        let got = (prefix[start + WINDOW] - prefix[start]) as f64 / WINDOW as f64;
        worst = worst.max((got - share).abs());
    }
    assert!(worst <= TOLERANCE, "worst window deviates by {worst}");
    println!("mixing: T={t}, worst 10k-window deviation {worst:.4}");
}

/// Property 7: each epoch has a different order.
#[test]
fn each_epoch_has_a_different_order() {
    let streams = vec![spec("a", vec![100; 40], Mix::Repeat(1.0))];
    let topo = Topology::new(2, 2, 1);
    let orders: Vec<Vec<SampleRef>> = (0..3)
        .map(|epoch| {
            let plan = EpochPlan::new(streams.clone(), options(11, 8, Some(2)), epoch).unwrap();
            plan.rank(topo, 0)
                .unwrap()
                .batches_from(0)
                .flat_map(|b| b.samples)
                .collect()
        })
        .collect();
    for i in 0..3 {
        for j in i + 1..3 {
            let same = orders[i]
                .iter()
                .zip(&orders[j])
                .filter(|(a, b)| a == b)
                .count();
            assert!(
                same * 20 < orders[i].len(),
                "epochs {i} and {j} agree on {same} of {} positions",
                orders[i].len()
            );
        }
    }
    // ... while each canonical node keeps its shards.
    let p0 = EpochPlan::new(streams.clone(), options(11, 8, Some(2)), 0).unwrap();
    let p1 = EpochPlan::new(streams, options(11, 8, Some(2)), 1).unwrap();
    for node in 0..2 {
        assert_eq!(p0.node_pieces(node).unwrap(), p1.node_pieces(node).unwrap());
    }
}

#[test]
fn unshuffled_single_node_is_manifest_order() {
    let streams = vec![spec("a", vec![3, 0, 5, 2], Mix::Repeat(1.0))];
    let mut opts = options(1, 2, Some(1));
    opts.shuffle = false;
    let plan = EpochPlan::new(streams, opts, 9).unwrap();
    let order: Vec<u64> = plan
        .rank(Topology::new(1, 1, 1), 0)
        .unwrap()
        .batches_from(0)
        .flat_map(|b| b.samples)
        .map(|s| s.global)
        .collect();
    assert_eq!(order, (0..10).collect::<Vec<_>>());
}

#[test]
fn more_consumers_than_samples_pads_or_refuses() {
    let streams = vec![spec("a", vec![3], Mix::Repeat(1.0))];
    let topo = Topology::new(2, 4, 1);
    let plan = EpochPlan::with_topology(streams.clone(), options(0, 8, None), 0, topo).unwrap();
    assert_eq!(plan.num_batches(), 1);
    let all: Vec<SampleRef> = (0..8)
        .flat_map(|r| plan.rank(topo, r).unwrap().batch(0).unwrap().samples)
        .collect();
    assert_eq!(all.iter().filter(|s| !s.padded).count(), 3);
    assert_eq!(all.iter().filter(|s| s.padded).count(), 5);
    let mut opts = options(0, 8, None);
    opts.drop_last = true;
    assert!(matches!(
        EpochPlan::with_topology(streams, opts, 0, topo),
        Err(PlanError::NoFullBatch { .. })
    ));
}

#[test]
fn summary_reports_locality_and_quality() {
    let streams = vec![
        spec(
            "a",
            (0..400).map(|i| 50 + i % 7).collect(),
            Mix::Repeat(1.0),
        ),
        spec("b", vec![80; 60], Mix::Repeat(0.5)),
    ];
    let plan = EpochPlan::new(streams.clone(), options(5, 64, Some(4)), 0).unwrap();
    let local = plan.summary(Topology::new(4, 2, 1)).unwrap();
    assert!(local.locality);
    assert_eq!(local.batches_per_rank, plan.num_batches());
    assert_eq!(local.samples_per_rank, plan.num_batches() * 8);
    assert_eq!(local.per_node.len(), 4);
    for (i, node) in local.per_node.iter().enumerate() {
        assert_eq!(node.canonical_nodes, vec![i as u32]);
        assert!(node.bytes > 0 && node.window_cache_bytes > 0);
    }
    // Only the (at most 3 per stream) shards split between canonical nodes are read twice.
    assert!(local.read_amplification >= 1.0 && local.read_amplification < 1.02);
    assert_eq!(local.shards, 460);
    // Shuffled across ~460 shards: the manifest/delivery rank correlation is noise-level.
    assert!(
        local.shuffle.rank_correlation.abs() < 0.2,
        "{:?}",
        local.shuffle
    );
    assert!(local.shuffle.mean_distinct_shards_per_rank_batch > 1.0);
    assert_eq!(
        local.padded_samples + plan.num_samples(),
        local.batches_per_rank * 64
    );
    let pairs = plan.summary(Topology::new(2, 1, 1)).unwrap();
    assert!(pairs.locality);
    assert_eq!(pairs.per_node[1].canonical_nodes, vec![2, 3]);
    // Three physical nodes cannot own four canonical nodes cleanly: reads overlap.
    let plan3 = EpochPlan::new(streams.clone(), options(5, 60, Some(4)), 0).unwrap();
    let three = plan3.summary(Topology::new(3, 1, 1)).unwrap();
    assert!(!three.locality);
    assert!(
        three.read_amplification > 1.2,
        "{}",
        three.read_amplification
    );
    println!("{}", serde_json::to_string_pretty(&three).unwrap());
    // Unshuffled single stream on one node: delivery is manifest order.
    let mut opts = options(5, 64, Some(1));
    opts.shuffle = false;
    let plain = EpochPlan::new(streams[..1].to_vec(), opts, 0).unwrap();
    let q = plain.summary(Topology::new(1, 1, 1)).unwrap().shuffle;
    assert!(
        q.rank_correlation > 0.999 && q.mean_abs_displacement < 1e-9,
        "{q:?}"
    );
}

/// Property 8: bad input is an error, never a panic.
#[test]
fn bad_input_is_rejected() {
    let good = || vec![spec("a", vec![10, 10], Mix::Repeat(1.0))];
    let topo = Topology::new(2, 2, 1);
    let err =
        |streams: Vec<StreamSpec>, opts: PlanOptions| EpochPlan::new(streams, opts, 0).unwrap_err();
    assert!(matches!(
        err(good(), options(0, 0, Some(1))),
        PlanError::ZeroBatchSize
    ));
    assert!(matches!(
        err(vec![], options(0, 4, Some(1))),
        PlanError::NoStreams
    ));
    assert!(matches!(
        err(good(), options(0, 4, None)),
        PlanError::CanonicalNodesUnset
    ));
    assert!(matches!(
        err(good(), options(0, 4, Some(0))),
        PlanError::InvalidCanonicalNodes { .. }
    ));
    let mut opts = options(0, 4, Some(1));
    opts.window = Window::Samples(0);
    assert!(matches!(err(good(), opts), PlanError::ZeroWindow));
    assert!(matches!(
        err(
            vec![spec("a", vec![0, 0], Mix::Repeat(1.0))],
            options(0, 4, Some(1))
        ),
        PlanError::EmptyStream { .. }
    ));
    let mut bad_bytes = good();
    bad_bytes[0].shard_bytes.pop();
    assert!(matches!(
        err(bad_bytes, options(0, 4, Some(1))),
        PlanError::ShardBytesLength { .. }
    ));
    let mut dup = good();
    dup.push(dup[0].clone());
    assert!(matches!(
        err(dup, options(0, 4, Some(1))),
        PlanError::DuplicateStreamName { .. }
    ));
    for mix in [
        Mix::Weight(-1.0),
        Mix::Weight(f64::NAN),
        Mix::Repeat(f64::INFINITY),
    ] {
        assert!(matches!(
            err(vec![spec("a", vec![5], mix)], options(0, 4, Some(1))),
            PlanError::InvalidMix { .. }
        ));
    }
    assert!(matches!(
        err(
            vec![
                spec("a", vec![5], Mix::Weight(0.0)),
                spec("b", vec![5], Mix::Weight(0.0))
            ],
            options(0, 4, Some(1))
        ),
        PlanError::AllWeightsZero
    ));
    assert!(matches!(
        err(
            vec![spec("a", vec![5], Mix::Repeat(0.0))],
            options(0, 4, Some(1))
        ),
        PlanError::EmptyEpoch
    ));

    let plan = EpochPlan::new(good(), options(0, 6, Some(2)), 0).unwrap();
    for (t, field) in [
        (Topology::new(0, 1, 1), "nodes"),
        (Topology::new(1, 0, 1), "ranks_per_node"),
        (Topology::new(1, 1, 0), "workers_per_rank"),
    ] {
        match plan.rank(t, 0) {
            Err(PlanError::InvalidTopology { field: f }) => assert_eq!(f, field),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        plan.rank(topo, 0),
        Err(PlanError::BatchSizeNotDivisible { .. })
    ));
    let plan = EpochPlan::new(good(), options(0, 4, Some(2)), 0).unwrap();
    assert!(matches!(
        plan.rank(topo, 4),
        Err(PlanError::RankOutOfRange { .. })
    ));
    let rank = plan.rank(topo, 0).unwrap();
    assert!(matches!(
        rank.batch(rank.num_batches()),
        Err(PlanError::BatchOutOfRange { .. })
    ));
    assert!(matches!(
        rank.worker_batches(1),
        Err(PlanError::WorkerOutOfRange { .. })
    ));
    assert!(matches!(
        plan.global_sample(plan.num_samples()),
        Err(PlanError::SampleOutOfRange { .. })
    ));
    assert!(matches!(
        plan.state_after(plan.num_batches() + 1),
        Err(PlanError::ConsumedOutOfRange { .. })
    ));
    assert_eq!(rank.batches_from(u64::MAX).count(), 0);
    // Every message says what to do.
    let msg = PlanError::BatchSizeNotDivisible {
        global_batch_size: 6,
        world: 4,
    }
    .to_string();
    assert!(msg.contains("multiple of 4"), "{msg}");
}

#[test]
fn resume_refuses_mismatched_state() {
    let streams = || {
        vec![
            spec("a", vec![10, 10], Mix::Repeat(1.0)),
            spec("b", vec![7], Mix::Weight(1.0)),
        ]
    };
    let opts = options(3, 4, Some(2));
    let plan = EpochPlan::new(streams(), opts.clone(), 2).unwrap();
    let state = plan.state_after(2).unwrap();
    assert_eq!(state.samples_consumed, 8);
    let resume = |s: Vec<StreamSpec>, o: PlanOptions, st: &ResumeState| {
        EpochPlan::resume(s, o, st).unwrap_err()
    };

    let mut changed = streams();
    changed[0].fingerprint = "other".into();
    assert!(matches!(
        resume(changed, opts.clone(), &state),
        PlanError::FingerprintMismatch { .. }
    ));
    let mut o = opts.clone();
    o.seed = 4;
    assert!(matches!(
        resume(streams(), o, &state),
        PlanError::SeedMismatch { .. }
    ));
    let mut extra = streams();
    extra.push(spec("c", vec![1], Mix::Repeat(1.0)));
    match resume(extra, opts.clone(), &state) {
        PlanError::UnknownStream { name } => assert_eq!(name, "c"),
        other => panic!("{other}"),
    }
    let mut missing = streams();
    missing.pop();
    match resume(missing, opts.clone(), &state) {
        PlanError::MissingStream { name } => assert_eq!(name, "b"),
        other => panic!("{other}"),
    }
    let mut swapped = streams();
    swapped.swap(0, 1);
    assert!(matches!(
        resume(swapped, opts.clone(), &state),
        PlanError::StreamOrderChanged { .. }
    ));
    let mut newer = state.clone();
    newer.version = RESUME_STATE_VERSION + 1;
    assert!(matches!(
        resume(streams(), opts.clone(), &newer),
        PlanError::NewerStateVersion { .. }
    ));
    let json = newer.to_json().unwrap();
    assert!(matches!(
        ResumeState::from_json(&json),
        Err(PlanError::NewerStateVersion { .. })
    ));
    assert!(matches!(
        ResumeState::from_json("{"),
        Err(PlanError::InvalidState { .. })
    ));
    let mut o = opts.clone();
    o.canonical_nodes = Some(3);
    assert!(matches!(
        resume(streams(), o, &state),
        PlanError::CanonicalNodesMismatch { .. }
    ));
    let mut o = opts.clone();
    o.shuffle = false;
    assert!(matches!(
        resume(streams(), o, &state),
        PlanError::ShuffleMismatch { .. }
    ));
    let mut o = opts.clone();
    o.window = Window::Samples(65);
    assert!(matches!(
        resume(streams(), o, &state),
        PlanError::ShuffleMismatch { .. }
    ));
    let mut o = opts.clone();
    o.epoch_size = Some(3);
    assert!(matches!(
        resume(streams(), o, &state),
        PlanError::MixChanged { .. }
    ));
    // Past the padded end of the epoch is not a state any run wrote; the end itself is.
    let end = plan.state_after(plan.num_batches()).unwrap();
    assert_eq!(
        EpochPlan::resume(streams(), opts.clone(), &end)
            .unwrap()
            .num_batches(),
        0
    );
    let mut beyond = end.clone();
    beyond.samples_consumed += 1;
    match resume(streams(), opts.clone(), &beyond) {
        PlanError::InvalidState { reason } => {
            assert!(reason.contains("samples_consumed"), "{reason}")
        }
        other => panic!("{other}"),
    }
    // The matching resume works, with the state's epoch.
    let resumed = EpochPlan::resume(streams(), opts, &state).unwrap();
    assert_eq!(resumed.epoch(), 2);
    assert_eq!(resumed.samples_consumed(), 8);
}

/// Process peak resident memory in MiB (Linux), for the scale test's report.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// 16M shards × 625 samples = 10^10 samples: building is O(shards), the first batch is
/// immediate, and nothing per sample is ever allocated.
#[test]
fn sixteen_million_shards_plan_without_per_sample_work() {
    const SHARDS: usize = 16_000_000;
    let streams = vec![StreamSpec {
        name: "web".into(),
        fingerprint: "big".into(),
        shard_samples: vec![625; SHARDS],
        shard_bytes: vec![625 * 2048; SHARDS],
        mix: Mix::Repeat(1.0),
    }];
    let mut opts = options(42, 8 * 8 * 32, Some(8));
    opts.window = Window::Bytes(256 << 20);
    let topo = Topology::new(8, 8, 4);
    let started = Instant::now();
    let plan = EpochPlan::with_topology(streams, opts, 0, topo).unwrap();
    let built = started.elapsed();
    assert_eq!(plan.num_samples(), 10_000_000_000);
    let rank = plan.rank(topo, 0).unwrap();
    let started = Instant::now();
    let first = rank.batch(0).unwrap();
    let last = rank.batch(rank.num_batches() - 1).unwrap();
    let fetched = started.elapsed();
    assert_eq!(first.samples.len(), 32);
    assert_eq!(last.samples.len(), 32);
    let pieces = plan.node_pieces(0).unwrap().len();
    // Random access throughout the epoch: 200 batches spread over all of it.
    let started = Instant::now();
    let step = rank.num_batches() / 200;
    let mut fetched_samples = 0;
    for k in (0..200).map(|i| i * step) {
        fetched_samples += rank.batch(k).unwrap().samples.len();
    }
    let per_sample = started.elapsed() / fetched_samples as u32;
    // Per shard: one u64 prefix sum (built in place of the caller's sample counts), one u64
    // cumulative count and one u32 shard in this epoch's piece order: 20 bytes, 305 MiB; byte
    // sizes are dropped after planning.
    let heap_mib = plan.heap_bytes() >> 20;
    assert!(heap_mib < 330, "{heap_mib} MiB");
    println!(
        "16M shards / 1e10 samples: build {built:?}; rank 0 first+last batch {fetched:?}; \
         {per_sample:?}/sample over 200 scattered batches; {pieces} pieces on node 0; \
         plan heap ~{heap_mib} MiB; process peak RSS {:?} MiB (includes the test's input \
         vectors and any tests running alongside)",
        peak_rss_mib()
    );
}

#[test]
fn padding_repeats_the_end_of_the_sequence_not_its_start() {
    // 10 samples, global batches of 4: the last batch holds 2 real samples and 2 repeats.
    // The repeats come from the end of the order (the window just read), newest first.
    let streams = vec![spec("a", vec![4, 6], Mix::Repeat(1.0))];
    let mut opts = options(7, 4, Some(1));
    opts.window = Window::Samples(4);
    let plan = EpochPlan::with_topology(streams, opts, 0, Topology::new(1, 1, 1)).unwrap();
    let rank = plan.rank(Topology::new(1, 1, 1), 0).unwrap();
    let all: Vec<SampleRef> = (0..rank.num_batches())
        .flat_map(|k| rank.batch(k).unwrap().samples)
        .collect();
    let key = |s: &SampleRef| (s.shard, s.row);
    let real: Vec<_> = all.iter().filter(|s| !s.padded).map(key).collect();
    let padded: Vec<_> = all.iter().filter(|s| s.padded).map(key).collect();
    assert_eq!(real.len(), 10);
    assert_eq!(padded, vec![real[9], real[8]]);
}

/// FNV-1a over every field of every batch every rank gets: one number for a whole plan.
fn order_hash(plan: &EpochPlan, topology: Topology, mut h: u64) -> u64 {
    let mut eat = |v: u64| {
        for byte in v.to_le_bytes() {
            h = (h ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for rank in all_batches(plan, topology) {
        for batch in rank {
            eat(batch.index);
            for s in &batch.samples {
                for v in [
                    u64::from(s.stream),
                    u64::from(s.shard),
                    s.row,
                    s.global,
                    u64::from(s.padded),
                ] {
                    eat(v);
                }
            }
        }
    }
    h
}

/// The order a plan gives is part of the format: a resume state written by one version must
/// deliver the same remaining samples under the next, so an optimisation of the planner must
/// not move a single sample. The hashes below were taken from the planner as first released
/// (per-sample evaluation); they cover shuffled and unshuffled plans, warm-up windows, mixes
/// with fractional repeats and weights, several canonical nodes, padding, dropped last
/// batches and resumed plans, in cases drawn by a fixed generator over the property tests'
/// parameter space.
#[test]
fn plan_orders_never_change() {
    // xorshift64*, fixed seed: the cases must be the same on every run and platform.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |bound: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    };
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let (mut built, mut resumed_plans) = (0, 0);
    for _ in 0..60 {
        let streams: Vec<StreamSpec> = (0..1 + next(3))
            .map(|s| {
                let shards = (0..1 + next(40)).map(|_| next(150)).collect::<Vec<_>>();
                let mix = match next(3) {
                    0 => Mix::Repeat(1.0),
                    1 => Mix::Repeat(0.25 + next(9) as f64 * 0.25),
                    _ => Mix::Weight(0.5 + next(5) as f64 * 0.5),
                };
                spec(&format!("s{s}"), shards, mix)
            })
            .collect();
        let topology = Topology::new(1 + next(4) as u32, 1 + next(3) as u32, 1 + next(2) as u32);
        let options = PlanOptions {
            seed: next(u64::MAX),
            shuffle: next(4) != 0,
            window: if next(2) == 0 {
                Window::Samples(1 + next(300))
            } else {
                Window::Bytes(1 + next(300_000))
            },
            warmup: [0, 0, 1, 3, 6][next(5) as usize],
            global_batch_size: topology.world() * (1 + next(8)),
            drop_last: next(2) == 0,
            canonical_nodes: [None, Some(1), Some(3), Some(8)][next(4) as usize],
            epoch_size: None,
        };
        let epoch = next(3);
        let Some(plan) = build(&Case {
            streams: streams.clone(),
            options: options.clone(),
            topology,
            epoch,
        }) else {
            continue;
        };
        h = order_hash(&plan, topology, h);
        built += 1;
        // Resumed from a third of the way in, on the same topology.
        let at = plan.num_batches() / 3;
        if at > 0 {
            let state = plan.state_after(at).expect("resume state");
            let resumed = EpochPlan::resume(streams, options, &state).unwrap();
            h = order_hash(&resumed, topology, h);
            resumed_plans += 1;
        }
    }
    assert_eq!(
        (built, resumed_plans),
        (60, 59),
        "cases the generator gives"
    );
    // One large plan shaped like the peers bench's token data: 32 shards of 8,192 rows, a
    // 16,384-sample window with the loader's warm-up, batches of 256 on one node.
    let streams = vec![spec("tokens", vec![8192; 32], Mix::Repeat(1.0))];
    let mut opts = options(0, 256, Some(1));
    opts.window = Window::Samples(16_384);
    opts.warmup = 6;
    let topology = Topology::new(1, 1, 1);
    let plan = EpochPlan::with_topology(streams, opts, 0, topology).unwrap();
    let big = order_hash(&plan, topology, 0xcbf2_9ce4_8422_2325);
    assert_eq!(
        (h, big),
        (17_703_885_268_976_762_550, 9_500_127_999_395_931_345),
        "the planner's order changed: resume states of earlier versions would deliver \
         different samples"
    );
}
