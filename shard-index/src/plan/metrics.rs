//! Dry-run metrics for `shard-index plan`: sizes, I/O locality and shuffle quality.
//!
//! Counts (batches, padding, dropping) are exact. I/O figures are *estimates* computed from the
//! O(shards) structures without enumerating samples: which canonical nodes a physical node
//! reads is found by simulating the group layout of a bounded set of batches (one period of the
//! batch-offset pattern plus the epoch's last batches), and a node is assumed to read every
//! piece of those canonical nodes (scaled down for partial copies). Per-window cache needs use
//! each node's average piece size. Shuffle quality is measured on the first
//! `max_samples` delivered samples (1M by default).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::epoch::{EpochPlan, PlanInner};
use super::error::Result;
use super::partition::NodeStream;
use super::rank::Topology;

/// Samples examined for the shuffle-quality metrics by [`EpochPlan::summary`].
pub const DEFAULT_METRIC_SAMPLES: u64 = 1_000_000;

/// Cap on batch-layout simulation work (batches × canonical nodes).
const LAYOUT_WORK: u64 = 1 << 22;

/// Per-physical-node I/O estimate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSummary {
    /// Physical node id.
    pub node: u32,
    /// Canonical nodes whose samples this node reads.
    pub canonical_nodes: Vec<u32>,
    /// Distinct shards read this epoch (estimate; split shards count once per node).
    pub shards_touched: u64,
    /// Bytes of those shards (split shards proportionally; estimate).
    pub bytes: u64,
    /// Bytes of distinct shards needed to serve one window of each of its canonical nodes
    /// (estimate from average piece size).
    pub window_cache_bytes: u64,
}

/// Order statistics of the delivered sample sequence (non-padded samples only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShuffleQuality {
    /// Samples examined (prefix of the delivered order).
    pub samples_examined: u64,
    /// Mean distinct (stream, shard) pairs per rank batch.
    pub mean_distinct_shards_per_rank_batch: f64,
    /// Mean distinct (stream, shard) pairs per global batch.
    pub mean_distinct_shards_per_global_batch: f64,
    /// Spearman rank correlation between manifest order (streams concatenated) and delivered
    /// position: ~1 unshuffled, ~0 well shuffled.
    pub rank_correlation: f64,
    /// Mean |delivered position − manifest position| / T.
    pub mean_abs_displacement: f64,
}

/// What `shard-index plan` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub epoch: u64,
    pub canonical_nodes: u32,
    pub nodes: u32,
    pub world: u64,
    /// `T`.
    pub total_samples: u64,
    /// Resume offset into the epoch.
    pub samples_consumed: u64,
    /// `T_s` per stream.
    pub stream_epoch_samples: Vec<u64>,
    pub global_batch_size: u64,
    pub batch_size_per_rank: u64,
    pub batches_per_rank: u64,
    /// Including padding.
    pub samples_per_rank: u64,
    /// Repeats added to fill the last global batch.
    pub padded_samples: u64,
    /// Samples not delivered this epoch because of `drop_last`.
    pub dropped_samples: u64,
    pub window_samples: u64,
    /// Whether each physical node reads only its own canonical nodes' shards
    /// (`C % nodes == 0`, `C | GB` and a batch-aligned resume offset).
    pub locality: bool,
    /// Non-empty shards over all streams.
    pub shards: u64,
    /// Distinct shards the whole job reads this epoch (estimate).
    pub shards_read: u64,
    /// Σ over physical nodes of shards touched / `shards_read`: 1.0 means no shard is read by
    /// two nodes.
    pub read_amplification: f64,
    /// Largest per-node `window_cache_bytes`.
    pub max_window_cache_bytes: u64,
    pub per_node: Vec<NodeSummary>,
    pub shuffle: ShuffleQuality,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Fraction of a node's run read this epoch (partial copies read part of it).
fn read_fraction(ns: &NodeStream) -> f64 {
    if ns.epoch == 0 || ns.owned == 0 {
        0.0
    } else {
        (ns.epoch as f64 / ns.owned as f64).min(1.0)
    }
}

fn pieces_read(ns: &NodeStream) -> u64 {
    let f = read_fraction(ns);
    if f >= 1.0 {
        ns.pieces
    } else {
        (ns.pieces as f64 * f).ceil() as u64
    }
}

impl PlanInner {
    /// Shards and bytes read by a set of canonical nodes (sorted), deduplicating shards split
    /// between two members.
    fn read_by(&self, members: &[u32]) -> (u64, u64) {
        let mut shards = 0u64;
        let mut bytes = 0f64;
        for &c in members {
            for ns in &self.nodes[c as usize].streams {
                shards += pieces_read(ns);
                bytes += ns.bytes as f64 * read_fraction(ns);
            }
        }
        // A shard split between consecutive owners c1 < c2 (no owner between them) is the last
        // piece of c1 and the first of c2.
        for s in 0..self.streams.len() {
            let mut prev: Option<usize> = None;
            for c in 0..self.nodes.len() {
                let ns = &self.nodes[c].streams[s];
                if ns.owned == 0 {
                    continue;
                }
                if let Some(p) = prev {
                    let pn = &self.nodes[p].streams[s];
                    if pn.last_pos == ns.first_pos
                        && pn.epoch > 0
                        && ns.epoch > 0
                        && members.binary_search(&(p as u32)).is_ok()
                        && members.binary_search(&(c as u32)).is_ok()
                    {
                        shards = shards.saturating_sub(1);
                    }
                }
                prev = Some(c);
            }
        }
        (shards, bytes as u64)
    }

    /// Bytes of distinct shards one window of canonical node `c` spans (estimate).
    fn window_cache(&self, c: usize) -> u64 {
        let node = &self.nodes[c];
        let mut total = 0f64;
        for ns in &node.streams {
            if ns.epoch == 0 || ns.pieces == 0 || node.len == 0 {
                continue;
            }
            let per_window = (self.window as f64 * ns.epoch as f64 / node.len as f64)
                .ceil()
                .min(ns.epoch as f64);
            let avg_piece = ns.owned as f64 / ns.pieces as f64;
            // A contiguous run of the node's piece sequence touches ~len/avg + 1 pieces.
            let distinct = ((per_window / avg_piece).ceil() + 1.0).min(ns.pieces as f64);
            total += distinct * ns.bytes as f64 / ns.pieces as f64;
        }
        total as u64
    }

    /// Canonical nodes each physical node reads, from the group layout of sampled batches.
    fn canonical_sets(&self, nodes: u32) -> Vec<Vec<u32>> {
        let c = u64::from(self.canonical_nodes);
        let gb = self.options.global_batch_size;
        let per_node = (gb / u64::from(nodes)).max(1);
        let nb = self.num_batches;
        let period = c / gcd(gb, c);
        let head = period.min((LAYOUT_WORK / c).max(1)).min(nb);
        let tail_from = nb.saturating_sub(4).max(head);
        let mut sets: Vec<Vec<u32>> = vec![Vec::new(); nodes as usize];
        for k in (0..head).chain(tail_from..nb) {
            let layout = self.batch_layout(k);
            let mut offset = 0u64;
            for cn in 0..self.nodes.len() {
                let size = layout.real[cn] + layout.pad[cn];
                if size == 0 {
                    continue;
                }
                let first = (offset / per_node).min(u64::from(nodes) - 1);
                let last = ((offset + size - 1) / per_node).min(u64::from(nodes) - 1);
                for set in &mut sets[first as usize..=last as usize] {
                    set.push(cn as u32);
                }
                offset += size;
            }
        }
        for set in &mut sets {
            set.sort_unstable();
            set.dedup();
        }
        sets
    }
}

impl EpochPlan {
    /// Dry-run metrics for `topology`, measuring shuffle quality on the first
    /// [`DEFAULT_METRIC_SAMPLES`] delivered samples.
    pub fn summary(&self, topology: Topology) -> Result<PlanSummary> {
        self.summary_with_sample(topology, DEFAULT_METRIC_SAMPLES)
    }

    /// [`EpochPlan::summary`] examining at most `max_samples` samples for shuffle quality.
    pub fn summary_with_sample(&self, topology: Topology, max_samples: u64) -> Result<PlanSummary> {
        let inner = &*self.inner;
        let gb = inner.options.global_batch_size;
        let batch = topology.batch_size(gb)?;
        let c = inner.canonical_nodes;
        let remaining = inner.total.saturating_sub(inner.start);
        let delivered = inner.num_batches.saturating_mul(gb);
        let (padded, dropped) = if delivered >= remaining {
            (delivered - remaining, 0)
        } else {
            (0, remaining - delivered)
        };

        let sets = inner.canonical_sets(topology.nodes);
        let cache: Vec<u64> = (0..inner.nodes.len())
            .map(|i| inner.window_cache(i))
            .collect();
        let mut per_node = Vec::with_capacity(sets.len());
        let mut touched_sum = 0u64;
        for (node, set) in sets.into_iter().enumerate() {
            let (shards, bytes) = inner.read_by(&set);
            touched_sum += shards;
            per_node.push(NodeSummary {
                node: node as u32,
                window_cache_bytes: set.iter().map(|&cn| cache[cn as usize]).sum(),
                canonical_nodes: set,
                shards_touched: shards,
                bytes,
            });
        }
        let all: Vec<u32> = (0..c).collect();
        let (shards_read, _) = inner.read_by(&all);
        let shards: u64 = inner.streams.iter().map(|s| s.nonempty_shards).sum();

        Ok(PlanSummary {
            epoch: inner.epoch,
            canonical_nodes: c,
            nodes: topology.nodes,
            world: topology.world(),
            total_samples: inner.total,
            samples_consumed: inner.start,
            stream_epoch_samples: self.stream_epoch_samples(),
            global_batch_size: gb,
            batch_size_per_rank: batch,
            batches_per_rank: inner.num_batches,
            samples_per_rank: inner.num_batches.saturating_mul(batch),
            padded_samples: padded,
            dropped_samples: dropped,
            window_samples: inner.window,
            locality: c.is_multiple_of(topology.nodes)
                && gb.is_multiple_of(u64::from(c))
                && inner.start.is_multiple_of(u64::from(c)),
            shards,
            shards_read,
            read_amplification: if shards_read == 0 {
                0.0
            } else {
                touched_sum as f64 / shards_read as f64
            },
            max_window_cache_bytes: per_node
                .iter()
                .map(|n| n.window_cache_bytes)
                .max()
                .unwrap_or(0),
            per_node,
            shuffle: inner.shuffle_quality(batch, max_samples),
        })
    }
}

impl PlanInner {
    fn shuffle_quality(&self, batch: u64, max_samples: u64) -> ShuffleQuality {
        let gb = self.options.global_batch_size;
        let mut stream_offset = Vec::with_capacity(self.streams.len());
        let mut acc = 0u64;
        for s in &self.streams {
            stream_offset.push(acc);
            acc = acc.saturating_add(s.samples);
        }
        // (manifest position, delivered position) of real samples.
        let mut pairs: Vec<(u64, u64)> = Vec::new();
        let mut rank_batches = (0u64, 0u64); // (batches, distinct sum)
        let mut global_batches = (0u64, 0u64);
        let mut examined = 0u64;
        let mut k = 0u64;
        while k < self.num_batches && examined < max_samples {
            let take = gb.min(max_samples - examined);
            let slice = self.global_slice(k, 0, take);
            let mut global_set = HashSet::new();
            for chunk in slice.chunks(batch.max(1) as usize) {
                let set: HashSet<(u32, u32)> = chunk
                    .iter()
                    .filter(|s| !s.padded)
                    .map(|s| (s.stream, s.shard))
                    .collect();
                if !set.is_empty() {
                    rank_batches.0 += 1;
                    rank_batches.1 += set.len() as u64;
                }
                global_set.extend(set);
            }
            if !global_set.is_empty() {
                global_batches.0 += 1;
                global_batches.1 += global_set.len() as u64;
            }
            for (i, s) in slice.iter().enumerate() {
                if !s.padded {
                    let manifest = stream_offset[s.stream as usize] + s.global;
                    pairs.push((manifest, self.start + examined + i as u64));
                }
            }
            examined += slice.len() as u64;
            k += 1;
        }
        let mean = |(n, sum): (u64, u64)| if n == 0 { 0.0 } else { sum as f64 / n as f64 };
        let n = pairs.len();
        let displacement = if n == 0 {
            0.0
        } else {
            pairs
                .iter()
                .map(|&(m, d)| m.abs_diff(d) as f64)
                .sum::<f64>()
                / n as f64
                / self.total.max(1) as f64
        };
        // Delivered ranks are the collection order; manifest ranks come from a sort (ties,
        // i.e. repeats of one sample, broken by delivery order).
        let correlation = if n < 2 {
            1.0
        } else {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.sort_by_key(|&i| (pairs[i].0, i));
            let mut d2 = 0f64;
            for (manifest_rank, &i) in idx.iter().enumerate() {
                let d = manifest_rank as f64 - i as f64;
                d2 += d * d;
            }
            let nf = n as f64;
            1.0 - 6.0 * d2 / (nf * (nf * nf - 1.0))
        };
        ShuffleQuality {
            samples_examined: examined,
            mean_distinct_shards_per_rank_batch: mean(rank_batches),
            mean_distinct_shards_per_global_batch: mean(global_batches),
            rank_correlation: correlation,
            mean_abs_displacement: displacement,
        }
    }
}
