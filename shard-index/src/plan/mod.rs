//! Epoch planner: which sample every consumer reads, in which order, for one epoch.
//!
//! Input: the streams' manifests ([`StreamSpec`]: per-shard sample and byte counts, a
//! fingerprint and a [`Mix`]), [`PlanOptions`] (seed, shuffle, window, batch size, …), the
//! epoch number and, per consumer, a [`Topology`] and rank. Output: each rank's batches of
//! [`SampleRef`]s. The plan is a pure function of those inputs, so every rank computes it
//! independently and all ranks agree without communicating.
//!
//! [`EpochPlan::new`] precomputes O(shards) structures (never O(samples)); every sample is
//! then found by O(1)/O(log) arithmetic — a 10^10-sample epoch answers its first batch in
//! about the time it takes to read the manifest.
//!
//! # Algorithm
//!
//! 1. **Composition** (`mix.rs`). Each stream's mix becomes an exact count `T_s`:
//!    `Repeat(r)` → `floor(r·N_s)`; `Weight(w)` → largest-remainder share of `epoch_size`
//!    (default `Σ N_s` of the weighted streams). A stream's epoch sequence is `⌊T_s/N_s⌋`
//!    full copies plus part of one more, so every sample appears `⌊r⌋` or `⌈r⌉` times.
//!
//! 2. **Canonical nodes** (`partition.rs`). `C` (default: the job's node
//!    count when the run starts; stored in the resume state so it never changes for a run)
//!    virtual nodes own the data. Per stream, shards are visited in a keyed order depending on
//!    `(seed, stream)` only — stable across epochs, so a node keeps its shards and its cache —
//!    and that order is cut into `C` contiguous runs of `⌊N_s/C⌋` or `⌈N_s/C⌉` samples,
//!    splitting at most `C-1` shards at row boundaries. The `+1` remainders rotate across
//!    streams so node totals differ by at most one. A node's epoch share of stream `s` is
//!    `k_s` copies of its run plus part of one more; partial copies are water-filled onto the
//!    shortest nodes so node lengths stay even where ownership allows.
//!
//! 3. **Within a node** (`window.rs`), per epoch: the node's pieces are shuffled
//!    (keyed by seed, epoch, node, stream; each repeated copy additionally starts at a keyed
//!    rotation, so a partial copy is a random subset), and the node sequence is cut into
//!    windows of `W` samples (`Window::Bytes` converts via the average sample size). Window
//!    `j` takes from each stream the proportional range `[⌊jW·T_s/L⌋, ⌊(j+1)W·T_s/L⌋)` of
//!    that stream's node sequence — mixing proportions hold in every window to ±1 per stream —
//!    and permutes the concatenation with a keyed Feistel permutation with cycle-walking
//!    (`feistel.rs`). With `shuffle: false` nothing is permuted: manifest order
//!    per node, windows only interleave streams.
//!
//! 4. **Global sequence `S`** (`order.rs`): round-robin over the canonical
//!    nodes — position `g < q·C` (`q` = shortest node) is node `g % C`'s `g / C`-th sample;
//!    later rounds take the longer nodes in increasing node order. `S` does not depend on the
//!    physical topology.
//!
//! 5. **Batches** (`rank.rs`). Global batch `k` is
//!    `S[start + k·GB, start + (k+1)·GB)` (`start` > 0 only when resumed), stably sorted by
//!    canonical node; rank `r` takes `[r·B, (r+1)·B)` with `B = GB / world`. Every topology
//!    therefore sees the same global batches, and when `C % nodes == 0` and `C | GB` each
//!    physical node reads only its own canonical nodes' shards (node `ν` owns canonical nodes
//!    `[ν·C/nodes, (ν+1)·C/nodes)`). Rank slices are computed from per-node counts in O(C).
//!    Worker `w` of a rank loads that rank's batches with `k % workers == w`.
//!
//! 6. **Tail.** If the samples left are not a multiple of `GB`, `drop_last` drops the partial
//!    global batch (those samples are not delivered this epoch); otherwise it is padded to
//!    `GB` with repeats flagged [`SampleRef::padded`]: padded position `g` repeats sample
//!    `L_c − 1 − ((g / C) mod L_c)` of canonical node `c = g % C` (or the next non-empty
//!    node) — counted back from the end of its sequence, so the repeats come from the window
//!    the loader has just read (repeating the epoch's first samples would read their row
//!    groups again) and locality holds. All ranks get the same batch count; with more consumers than samples, some
//!    ranks get entirely padded batches, and `drop_last` then is an error.
//!
//! # Locality caveat
//!
//! Locality is exact for every batch whenever node lengths differ by at most one with the
//! longer nodes first — always true without fractional or >1 repeats. Repeats can make node
//! lengths uneven (a node owning one more sample gets `k` more under `Repeat(k)`); then only
//! the epoch's last few batches (those past `q·C`) may read a few samples owned by other
//! canonical nodes of the same job.
//!
//! # Resume
//!
//! [`ResumeState`] records the stream identities, the shuffle-relevant options, `C` and the
//! number of samples of `S` consumed. [`EpochPlan::resume`] continues exactly after them on
//! any topology and batch size, and refuses states that would change `S`.
//!
//! # Randomness
//!
//! All randomness is the planner's own keyed SplitMix64-based hashing and Feistel networks,
//! so plans are reproducible across platforms and library versions. The test
//! `plan_orders_never_change` pins the order of a set of generated plans: a faster way of
//! computing the plan (batches set each window up once; piece shards come from a table) must
//! give the same samples in the same places.

mod epoch;
mod error;
mod feistel;
mod inputs;
mod metrics;
mod mix;
mod order;
mod partition;
mod rank;
mod state;
mod window;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use epoch::{EpochPlan, Piece, MAX_CANONICAL_NODES};
pub use error::{PlanError, Result};
pub use inputs::{DEFAULT_WARMUP, DEFAULT_WINDOW};
pub use metrics::{NodeSummary, PlanSummary, ShuffleQuality, DEFAULT_METRIC_SAMPLES};
pub use mix::Mix;
pub use rank::{Batch, Batches, RankPlan, SampleRef, Topology};
pub use state::{ResumeState, StreamState, RESUME_STATE_VERSION};
pub use window::MAX_WARMUP;

/// One dataset stream as the planner sees it: its manifest's shard sizes and its mix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamSpec {
    /// Unique name; identifies the stream in resume states.
    pub name: String,
    /// Manifest fingerprint; a resume refuses a changed manifest.
    pub fingerprint: String,
    /// Samples per shard, in manifest order (zero-sample shards are allowed).
    pub shard_samples: Vec<u64>,
    /// Bytes per shard, same length as `shard_samples` (0 where unknown).
    pub shard_bytes: Vec<u64>,
    /// How much of the epoch this stream makes up.
    pub mix: Mix,
}

/// Shuffle / mixing window of a canonical node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Window length in samples.
    Samples(u64),
    /// Approximate window size in bytes (converted with the average bytes per sample).
    Bytes(u64),
}

/// Everything about the plan that is not the data or the topology.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanOptions {
    /// Seed of every permutation.
    pub seed: u64,
    /// `false`: manifest order everywhere (streams still interleave per window).
    pub shuffle: bool,
    /// Shuffle window per canonical node.
    pub window: Window,
    /// Warm-up: the node's first window is cut into `warmup + 1` windows doubling from
    /// `W >> warmup`, so the first batch needs a small fraction of a window's shards (time to
    /// first batch); 0 = full windows from the start. See [`DEFAULT_WARMUP`].
    #[serde(default)]
    pub warmup: u32,
    /// Samples per optimizer step across all ranks; must be a multiple of the world size.
    pub global_batch_size: u64,
    /// Drop the epoch's partial last global batch instead of padding it.
    pub drop_last: bool,
    /// `C`; `None` means the job's node count (see [`EpochPlan::with_topology`]).
    pub canonical_nodes: Option<u32>,
    /// Samples per epoch shared by the `Mix::Weight` streams; `None` = their summed sizes.
    pub epoch_size: Option<u64>,
}
