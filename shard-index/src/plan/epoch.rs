//! [`EpochPlan`]: construction of the per-epoch structures and random access into them.
//!
//! Construction validates the input, fixes the epoch composition, cuts every stream into the
//! canonical nodes' runs, balances the node lengths and prepares this epoch's piece orders —
//! O(shards) time and memory, never O(samples). Everything afterwards (global batches, rank
//! slices, single positions of `S`) is computed on demand from those structures, so a plan
//! over 10^10 samples answers its first batch immediately.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::{PlanError, Result};
use super::mix::{epoch_counts, MixInput};
use super::order::GlobalOrder;
use super::partition::{
    balanced_split, cut_stream, prepare_epoch, water_fill, NodeStream, StreamLayout,
};
use super::rank::{RankPlan, SampleRef, Topology};
use super::window::{NodeLayout, WindowShape, MAX_WARMUP};
use super::{PlanOptions, StreamSpec, Window};

/// Largest supported `canonical_nodes`. Each batch costs O(C) bookkeeping and the node tables
/// are O(C·streams), so an absurd value (e.g. a sample count passed by mistake) is refused.
pub const MAX_CANONICAL_NODES: u32 = 1 << 16;

/// One contiguous row range of one shard, owned by a canonical node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Piece {
    /// Stream index.
    pub stream: u32,
    /// Shard's row in the stream's manifest.
    pub shard: u32,
    /// First row (inclusive).
    pub row_start: u64,
    /// Last row (exclusive).
    pub row_end: u64,
}

/// The order of every sample of one epoch, for every consumer. Cheap to clone (shared).
#[derive(Clone)]
pub struct EpochPlan {
    pub(crate) inner: Arc<PlanInner>,
}

/// Everything the plan precomputes; shared by the plan and its [`RankPlan`]s.
pub(crate) struct PlanInner {
    pub streams: Vec<StreamLayout>,
    pub nodes: Vec<NodeLayout>,
    pub order: GlobalOrder,
    /// For padding: the node whose samples repeat for padded positions `g ≡ c (mod C)`;
    /// `c` itself unless it is empty.
    pub pad_supplier: Vec<usize>,
    pub options: PlanOptions,
    pub canonical_nodes: u32,
    pub epoch: u64,
    /// Window length in samples.
    pub window: u64,
    /// `T`: samples in the epoch's global sequence.
    pub total: u64,
    /// Samples of `S` consumed before this plan (resume offset).
    pub start: u64,
    /// Global batches (= batches per rank) left in the epoch.
    pub num_batches: u64,
}

impl fmt::Debug for EpochPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("EpochPlan")
            .field("epoch", &inner.epoch)
            .field("streams", &inner.streams.len())
            .field("canonical_nodes", &inner.canonical_nodes)
            .field("total_samples", &inner.total)
            .field("samples_consumed", &inner.start)
            .field("num_batches", &inner.num_batches)
            .field("window", &inner.window)
            .finish()
    }
}

/// Cheap input checks shared by `new` and `resume`, run before any O(shards) work.
pub(crate) fn check_inputs(streams: &[StreamSpec], options: &PlanOptions) -> Result<()> {
    if options.global_batch_size == 0 {
        return Err(PlanError::ZeroBatchSize);
    }
    if matches!(options.window, Window::Samples(0) | Window::Bytes(0)) {
        return Err(PlanError::ZeroWindow);
    }
    if options.warmup > MAX_WARMUP {
        return Err(PlanError::InvalidWarmup {
            value: options.warmup,
            max: MAX_WARMUP,
        });
    }
    if let Some(c) = options.canonical_nodes {
        if c == 0 || c > MAX_CANONICAL_NODES {
            return Err(PlanError::InvalidCanonicalNodes {
                value: c,
                max: MAX_CANONICAL_NODES,
            });
        }
    }
    if streams.is_empty() {
        return Err(PlanError::NoStreams);
    }
    let mut names = std::collections::HashSet::new();
    for spec in streams {
        if !names.insert(spec.name.as_str()) {
            return Err(PlanError::DuplicateStreamName {
                name: spec.name.clone(),
            });
        }
        if spec.shard_bytes.len() != spec.shard_samples.len() {
            return Err(PlanError::ShardBytesLength {
                stream: spec.name.clone(),
                samples: spec.shard_samples.len(),
                bytes: spec.shard_bytes.len(),
            });
        }
        if u32::try_from(spec.shard_samples.len()).is_err() {
            return Err(PlanError::TooManyShards {
                stream: spec.name.clone(),
                shards: spec.shard_samples.len(),
            });
        }
        stream_samples(spec)?;
    }
    Ok(())
}

/// `N_s`, with overflow and emptiness checks.
pub(crate) fn stream_samples(spec: &StreamSpec) -> Result<u64> {
    let mut total = 0u64;
    for &n in &spec.shard_samples {
        total = total
            .checked_add(n)
            .ok_or_else(|| PlanError::SampleCountOverflow {
                stream: spec.name.clone(),
            })?;
    }
    if total == 0 {
        return Err(PlanError::EmptyStream {
            stream: spec.name.clone(),
        });
    }
    Ok(total)
}

/// Per-stream epoch counts `T_s` (after `check_inputs`).
pub(crate) fn composition(streams: &[StreamSpec], options: &PlanOptions) -> Result<Vec<u64>> {
    let mut inputs = Vec::with_capacity(streams.len());
    for spec in streams {
        inputs.push(MixInput {
            name: &spec.name,
            samples: stream_samples(spec)?,
            mix: spec.mix,
        });
    }
    epoch_counts(&inputs, options.epoch_size)
}

impl EpochPlan {
    /// Plans `epoch` of `streams`. `options.canonical_nodes` must be set; use
    /// [`EpochPlan::with_topology`] to default it to the job's node count.
    pub fn new(streams: Vec<StreamSpec>, options: PlanOptions, epoch: u64) -> Result<EpochPlan> {
        Self::build(streams, options, epoch, 0)
    }

    /// Like [`EpochPlan::new`], with `canonical_nodes: None` meaning `topology.nodes`.
    pub fn with_topology(
        streams: Vec<StreamSpec>,
        mut options: PlanOptions,
        epoch: u64,
        topology: Topology,
    ) -> Result<EpochPlan> {
        topology.validate()?;
        if options.canonical_nodes.is_none() {
            options.canonical_nodes = Some(topology.nodes);
        }
        Self::build(streams, options, epoch, 0)
    }

    pub(crate) fn build(
        streams: Vec<StreamSpec>,
        options: PlanOptions,
        epoch: u64,
        start: u64,
    ) -> Result<EpochPlan> {
        check_inputs(&streams, &options)?;
        let c = options
            .canonical_nodes
            .ok_or(PlanError::CanonicalNodesUnset)?;
        let counts = composition(&streams, &options)?;
        let mut total = 0u64;
        for (spec, &n) in streams.iter().zip(&counts) {
            total = total
                .checked_add(n)
                .ok_or_else(|| PlanError::SampleCountOverflow {
                    stream: spec.name.clone(),
                })?;
        }
        if total == 0 {
            return Err(PlanError::EmptyEpoch);
        }
        let gb = options.global_batch_size;
        if start == 0 && options.drop_last && total < gb {
            return Err(PlanError::NoFullBatch {
                samples: total,
                global_batch_size: gb,
            });
        }

        let window = match options.window {
            Window::Samples(w) => w,
            Window::Bytes(b) => {
                let bytes: u128 = streams
                    .iter()
                    .flat_map(|s| s.shard_bytes.iter())
                    .map(|&b| u128::from(b))
                    .sum();
                let samples: u128 = streams
                    .iter()
                    .flat_map(|s| s.shard_samples.iter())
                    .map(|&n| u128::from(n))
                    .sum();
                let avg = u64::try_from(bytes / samples.max(1))
                    .unwrap_or(u64::MAX)
                    .max(1);
                (b / avg).max(1)
            }
        };

        let seed = options.seed;
        let shuffle = options.shuffle;
        let cu = c as usize;
        let mut layouts = Vec::with_capacity(streams.len());
        let mut shares: Vec<Vec<NodeStream>> = Vec::with_capacity(streams.len());
        // Where the next stream's +1 remainders start, so node totals stay within one.
        let mut offset = 0u64;
        for (s, spec) in streams.into_iter().enumerate() {
            let StreamSpec {
                name,
                fingerprint,
                shard_samples,
                shard_bytes,
                mix,
            } = spec;
            let mut layout = StreamLayout::new(
                name,
                fingerprint,
                mix,
                shard_samples,
                seed,
                s as u32,
                shuffle,
            );
            layout.epoch_samples = counts[s];
            layout.copies = counts[s] / layout.samples;
            let owned = balanced_split(layout.samples, c, offset as u32);
            offset = (offset + layout.samples % u64::from(c)) % u64::from(c);
            // The byte sizes are only needed for the per-node metrics computed here; dropping
            // them keeps a 16M-shard plan at one u64 per shard (plus the shuffled piece sums
            // and shards).
            shares.push(cut_stream(&layout, &shard_bytes, &owned));
            drop(shard_bytes);
            layouts.push(layout);
        }

        // Node epoch lengths: full copies are fixed by ownership; each stream's partial copy is
        // water-filled onto the currently shortest nodes (within what each node owns) so that
        // node lengths, and hence locality of the tail batches, stay as even as possible.
        let mut levels = vec![0u64; cu];
        for (layout, nodes) in layouts.iter().zip(&mut shares) {
            for (level, ns) in levels.iter_mut().zip(nodes.iter_mut()) {
                ns.epoch = layout.copies * ns.owned;
                *level += ns.epoch;
            }
        }
        for (layout, nodes) in layouts.iter().zip(&mut shares) {
            let partial = layout.epoch_samples - layout.copies * layout.samples;
            if partial == 0 {
                continue;
            }
            let caps: Vec<u64> = nodes.iter().map(|ns| ns.owned).collect();
            let extra = water_fill(&levels, &caps, partial);
            for ((level, ns), e) in levels.iter_mut().zip(nodes.iter_mut()).zip(extra) {
                ns.epoch += e;
                *level += e;
            }
        }

        // Transpose to node-major and randomise this epoch's piece orders.
        let mut per_node: Vec<Vec<NodeStream>> = (0..cu).map(|_| Vec::new()).collect();
        for (s, nodes) in shares.into_iter().enumerate() {
            for (node, mut ns) in nodes.into_iter().enumerate() {
                prepare_epoch(
                    &mut ns,
                    &layouts[s],
                    seed,
                    epoch,
                    node as u32,
                    s as u32,
                    shuffle,
                );
                per_node[node].push(ns);
            }
        }
        let nodes: Vec<NodeLayout> = per_node
            .into_iter()
            .enumerate()
            .map(|(c, streams)| NodeLayout::new(streams, seed, epoch, c as u32))
            .collect();
        let order = GlobalOrder::new(nodes.iter().map(|n| n.len).collect());
        // Next non-empty node at or after each node, cyclically: one backward sweep over two
        // laps (O(C), even when almost every node is empty).
        let mut pad_supplier = vec![0usize; cu];
        let mut next_nonempty = None;
        for i in (0..2 * cu).rev() {
            let node = i % cu;
            if nodes[node].len > 0 {
                next_nonempty = Some(node);
            }
            if i < cu {
                pad_supplier[node] = next_nonempty.unwrap_or(node);
            }
        }
        let remaining = total.saturating_sub(start);
        let num_batches = if options.drop_last {
            remaining / gb
        } else {
            remaining.div_ceil(gb)
        };
        Ok(EpochPlan {
            inner: Arc::new(PlanInner {
                streams: layouts,
                nodes,
                order,
                pad_supplier,
                options,
                canonical_nodes: c,
                epoch,
                window,
                total,
                start,
                num_batches,
            }),
        })
    }

    /// The consumer view of one rank. Fails if the topology has a zero field, `rank` is out of
    /// range, or the global batch does not divide evenly over the ranks.
    pub fn rank(&self, topology: Topology, rank: u32) -> Result<RankPlan> {
        RankPlan::new(self.inner.clone(), topology, rank)
    }

    /// Epoch number.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    /// Options the plan was built with (`canonical_nodes` resolved).
    pub fn options(&self) -> &PlanOptions {
        &self.inner.options
    }

    /// Canonical node count `C`.
    pub fn canonical_nodes(&self) -> u32 {
        self.inner.canonical_nodes
    }

    /// `T`: samples in the epoch (before resume offsets, padding or dropping).
    pub fn num_samples(&self) -> u64 {
        self.inner.total
    }

    /// Samples of the epoch consumed before this plan started (0 unless resumed).
    pub fn samples_consumed(&self) -> u64 {
        self.inner.start
    }

    /// Global batches left (equal to every rank's `num_batches`).
    pub fn num_batches(&self) -> u64 {
        self.inner.num_batches
    }

    /// Window length in samples (after converting `Window::Bytes`).
    pub fn window_samples(&self) -> u64 {
        self.inner.window
    }

    /// Samples each stream contributes to the epoch (`T_s`), in stream order.
    pub fn stream_epoch_samples(&self) -> Vec<u64> {
        self.inner.streams.iter().map(|s| s.epoch_samples).collect()
    }

    /// Length of each canonical node's epoch sequence (`L_c`).
    pub fn node_lengths(&self) -> Vec<u64> {
        self.inner.order.lens().to_vec()
    }

    /// Approximate heap memory held by the plan's structures, in bytes: the per-shard prefix
    /// sums, this epoch's per-piece cumulative counts and shards, and the O(C·streams) node
    /// tables.
    pub fn heap_bytes(&self) -> u64 {
        let inner = &self.inner;
        let word = std::mem::size_of::<u64>();
        let streams: usize = inner
            .streams
            .iter()
            .map(|s| s.ends.capacity() * word + s.name.capacity() + s.fingerprint.capacity())
            .sum();
        let nodes: usize = inner
            .nodes
            .iter()
            .flat_map(|n| n.streams.iter())
            .map(|ns| {
                ns.cum.capacity() * word
                    + ns.piece_shards.capacity() * std::mem::size_of::<u32>()
                    + std::mem::size_of_val(ns)
            })
            .sum();
        let order = inner.nodes.len() * 4 * word;
        (streams + nodes + order) as u64
    }

    /// Sample at position `g` of the epoch's global sequence `S` (0-based, ignoring any resume
    /// offset). O(C + streams + log shards); meant for inspection and tests.
    pub fn global_sample(&self, g: u64) -> Result<SampleRef> {
        let inner = &self.inner;
        if g >= inner.total {
            return Err(PlanError::SampleOutOfRange {
                index: g,
                total: inner.total,
            });
        }
        let (node, local) = inner.order.locate(g);
        Ok(inner.node_sample(node, local, false))
    }

    /// The shard pieces owned by canonical node `node`, over all streams (O(pieces)). These
    /// are the only shards that node ever reads, in any epoch.
    pub fn node_pieces(&self, node: u32) -> Result<Vec<Piece>> {
        let inner = &self.inner;
        let n = inner
            .nodes
            .get(node as usize)
            .ok_or(PlanError::NodeOutOfRange {
                node,
                canonical_nodes: inner.canonical_nodes,
            })?;
        let mut out = Vec::new();
        for (s, (ns, stream)) in n.streams.iter().zip(&inner.streams).enumerate() {
            if ns.owned == 0 {
                continue;
            }
            for p in ns.first_pos..=ns.last_pos {
                let shard = stream.shard_at(p);
                let (lo, hi) = ns.piece_rows(stream, p, shard);
                if hi > lo {
                    out.push(Piece {
                        stream: s as u32,
                        shard: shard as u32,
                        row_start: lo,
                        row_end: hi,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Sizes of one global batch's groups after the stable sort by canonical node.
pub(crate) struct BatchLayout {
    /// Node `c`'s first local position in the batch.
    pub first: Vec<u64>,
    /// Real samples of node `c` in the batch.
    pub real: Vec<u64>,
    /// Padded positions with `g % C == c` in the batch.
    pub pad: Vec<u64>,
    /// First padded position of the batch (`>= T`); meaningful when any `pad > 0`.
    pub pad_start: u64,
}

impl PlanInner {
    /// Group sizes of global batch `k` (O(C)).
    pub(crate) fn batch_layout(&self, k: u64) -> BatchLayout {
        let gb = self.options.global_batch_size;
        let a = self.start.saturating_add(k.saturating_mul(gb));
        let b = a.saturating_add(gb);
        let (ra, rb) = (a.min(self.total), b.min(self.total));
        let mut first = Vec::new();
        let mut end = Vec::new();
        self.order.counts_before(ra, &mut first);
        self.order.counts_before(rb, &mut end);
        let real = end.iter().zip(&first).map(|(e, f)| e - f).collect();
        let pad_start = a.max(self.total);
        let c = u64::from(self.canonical_nodes);
        // Positions g < x with g % C == node.
        let below = |x: u64, node: u64| x / c + u64::from(x % c > node);
        let pad = (0..c)
            .map(|node| {
                if b > pad_start {
                    below(b, node) - below(pad_start, node)
                } else {
                    0
                }
            })
            .collect();
        BatchLayout {
            first,
            real,
            pad,
            pad_start,
        }
    }

    /// Elements `[lo, hi)` of global batch `k` after its stable sort by canonical node.
    pub(crate) fn global_slice(&self, k: u64, lo: u64, hi: u64) -> Vec<SampleRef> {
        let layout = self.batch_layout(k);
        let c = u64::from(self.canonical_nodes);
        let mut out = Vec::with_capacity(hi.saturating_sub(lo).min(1 << 20) as usize);
        let mut offset = 0u64;
        for node in 0..self.nodes.len() {
            if offset >= hi {
                break;
            }
            let real = layout.real[node];
            let group = real + layout.pad[node];
            let from = lo.max(offset);
            let to = hi.min(offset + group);
            // The real samples: consecutive positions of the node's sequence.
            let real_to = to.min(offset + real);
            if from < real_to {
                let first = layout.first[node] + (from - offset);
                self.node_samples(node, first..first + (real_to - from), &mut out);
            }
            // Then its padded positions, if this is the epoch's last batch.
            for idx in from.max(real_to)..to {
                let j = idx - offset;
                // The (j - real)-th padded position of this node's residue class.
                let first_g = layout.pad_start + (node as u64 + c - layout.pad_start % c) % c;
                let g = first_g + (j - real) * c;
                let supplier = self.pad_supplier[node];
                let len = self.nodes[supplier].len.max(1);
                // Counted back from the end of the supplier's sequence: the last window's
                // samples are still loaded, the epoch's first ones long gone.
                let back = (g / c) % len;
                out.push(self.node_sample(supplier, len - 1 - back, true));
            }
            offset += group;
        }
        out
    }

    fn window_shape(&self) -> WindowShape {
        WindowShape {
            len: self.window,
            warmup: self.options.warmup,
        }
    }

    /// The sample at local position `i` of canonical node `node`'s epoch sequence.
    pub(crate) fn node_sample(&self, node: usize, i: u64, padded: bool) -> SampleRef {
        let layout = &self.nodes[node];
        let (s, x) = layout.locate(i, self.window_shape(), self.options.shuffle);
        self.stream_sample(node, s, x, padded)
    }

    /// [`PlanInner::node_sample`] of every position in `positions`, appended to `out`: the
    /// windows they lie in are set up once each rather than once per sample.
    pub(crate) fn node_samples(
        &self,
        node: usize,
        positions: std::ops::Range<u64>,
        out: &mut Vec<SampleRef>,
    ) {
        let layout = &self.nodes[node];
        let mut start = positions.start;
        while start < positions.end {
            let window = layout.window_at(start, self.window_shape(), self.options.shuffle);
            let stop = positions.end.min(window.end);
            for i in start..stop {
                let (s, x) = window.locate(i);
                out.push(self.stream_sample(node, s, x, false));
            }
            start = stop;
        }
    }

    /// The sample behind element `x` of stream `s`'s epoch sequence on node `node`.
    #[inline]
    fn stream_sample(&self, node: usize, s: usize, x: u64, padded: bool) -> SampleRef {
        let ns = &self.nodes[node].streams[s];
        let y = if ns.owned == 0 { 0 } else { ns.run_position(x) };
        let (shard, row, global) = ns.sample(&self.streams[s], y);
        SampleRef {
            stream: s as u32,
            shard: shard as u32,
            row,
            global,
            padded,
        }
    }
}
