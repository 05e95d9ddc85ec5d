//! The consumer side: topologies, per-rank batch sequences and their worker split.
//!
//! Global batch `k` is `S[start + k·GB, start + (k+1)·GB)`, stably sorted by canonical node;
//! rank `r` takes elements `[r·B, (r+1)·B)` with `B = GB / world`. The slice is computed
//! arithmetically from per-node counts (O(C) per batch plus O(1)/O(log) per sample), never by
//! materialising the global batch. Workers of a rank split its batches round-robin, so the
//! rank's sequence does not depend on how many workers read it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::epoch::PlanInner;
use super::error::{PlanError, Result};

/// Physical layout of the training job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Topology {
    /// Machines.
    pub nodes: u32,
    /// Training processes (usually GPUs) per machine.
    pub ranks_per_node: u32,
    /// Data-loading workers per rank.
    pub workers_per_rank: u32,
}

impl Topology {
    /// Convenience constructor.
    pub fn new(nodes: u32, ranks_per_node: u32, workers_per_rank: u32) -> Self {
        Topology {
            nodes,
            ranks_per_node,
            workers_per_rank,
        }
    }

    /// `nodes * ranks_per_node`.
    pub fn world(&self) -> u64 {
        u64::from(self.nodes) * u64::from(self.ranks_per_node)
    }

    /// Rejects zero fields.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("nodes", self.nodes),
            ("ranks_per_node", self.ranks_per_node),
            ("workers_per_rank", self.workers_per_rank),
        ] {
            if v == 0 {
                return Err(PlanError::InvalidTopology { field });
            }
        }
        Ok(())
    }

    /// Per-rank batch size for `global_batch_size`, or an error if it does not divide.
    pub fn batch_size(&self, global_batch_size: u64) -> Result<u64> {
        self.validate()?;
        let world = self.world();
        if global_batch_size == 0 {
            return Err(PlanError::ZeroBatchSize);
        }
        if !global_batch_size.is_multiple_of(world) {
            return Err(PlanError::BatchSizeNotDivisible {
                global_batch_size,
                world,
            });
        }
        Ok(global_batch_size / world)
    }
}

/// One delivered sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SampleRef {
    /// Stream index (position in the plan's stream list).
    pub stream: u32,
    /// Shard's row in the stream's manifest.
    pub shard: u32,
    /// Row inside the shard.
    pub row: u64,
    /// Global index inside the stream: samples of earlier shards + `row`.
    pub global: u64,
    /// A repeat that only fills up the epoch's last batch; exclude it from the loss if exact
    /// epoch semantics matter.
    pub padded: bool,
}

/// One rank's batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Batch index within this plan (0-based; restarts at 0 in a resumed plan).
    pub index: u64,
    /// Exactly the per-rank batch size, in delivery order.
    pub samples: Vec<SampleRef>,
}

/// The batches of one rank for one epoch. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct RankPlan {
    inner: Arc<PlanInner>,
    topology: Topology,
    rank: u32,
    batch_size: u64,
}

impl fmt::Debug for RankPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RankPlan")
            .field("rank", &self.rank)
            .field("topology", &self.topology)
            .field("batch_size", &self.batch_size)
            .field("num_batches", &self.inner.num_batches)
            .finish()
    }
}

impl RankPlan {
    pub(crate) fn new(inner: Arc<PlanInner>, topology: Topology, rank: u32) -> Result<Self> {
        let batch_size = topology.batch_size(inner.options.global_batch_size)?;
        if u64::from(rank) >= topology.world() {
            return Err(PlanError::RankOutOfRange {
                rank,
                world: topology.world(),
            });
        }
        Ok(RankPlan {
            inner,
            topology,
            rank,
            batch_size,
        })
    }

    /// This rank's id.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// The topology the plan was cut for.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Samples per batch for this rank (`global_batch_size / world`).
    pub fn batch_size(&self) -> u64 {
        self.batch_size
    }

    /// Batches this rank gets; the same for every rank of the topology.
    pub fn num_batches(&self) -> u64 {
        self.inner.num_batches
    }

    /// Batch `k` (`k < num_batches`).
    pub fn batch(&self, k: u64) -> Result<Batch> {
        if k >= self.inner.num_batches {
            return Err(PlanError::BatchOutOfRange {
                index: k,
                num_batches: self.inner.num_batches,
            });
        }
        Ok(self.batch_unchecked(k))
    }

    fn batch_unchecked(&self, k: u64) -> Batch {
        let lo = u64::from(self.rank) * self.batch_size;
        Batch {
            index: k,
            samples: self.inner.global_slice(k, lo, lo + self.batch_size),
        }
    }

    /// Batches `k, k+1, …` to the end of the epoch (empty if `k >= num_batches`).
    pub fn batches_from(&self, k: u64) -> Batches {
        Batches {
            plan: self.clone(),
            next: k,
            step: 1,
        }
    }

    /// The batches worker `worker` of this rank loads: those with `k % workers_per_rank == worker`.
    pub fn worker_batches(&self, worker: u32) -> Result<Batches> {
        let workers = self.topology.workers_per_rank;
        if worker >= workers {
            return Err(PlanError::WorkerOutOfRange { worker, workers });
        }
        Ok(Batches {
            plan: self.clone(),
            next: u64::from(worker),
            step: u64::from(workers),
        })
    }
}

/// Iterator over a rank's batches (all of them from some index, or one worker's share).
#[derive(Clone, Debug)]
pub struct Batches {
    plan: RankPlan,
    next: u64,
    step: u64,
}

impl Iterator for Batches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.plan.inner.num_batches {
            return None;
        }
        let batch = self.plan.batch_unchecked(self.next);
        self.next = self.next.saturating_add(self.step);
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self
            .plan
            .inner
            .num_batches
            .saturating_sub(self.next)
            .div_ceil(self.step);
        let left = usize::try_from(left).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}
