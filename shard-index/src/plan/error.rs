//! The planner's single error type.
//!
//! Every way a caller can hand the planner bad input maps to one variant of [`PlanError`];
//! nothing in the planner panics on user input. Messages name the offending value and say
//! what to change, because these errors surface directly in the `shard-index plan` CLI and
//! in training-job logs where nobody will read the source to decode them.

/// Result type used throughout [`crate::plan`].
pub type Result<T, E = PlanError> = std::result::Result<T, E>;

/// Everything that can go wrong while planning an epoch or resuming one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// No streams were given.
    #[error("no streams given: pass at least one StreamSpec with samples")]
    NoStreams,

    /// Two streams share a name; names identify streams in resume states.
    #[error("stream name `{name}` is used twice: give every stream a unique name")]
    DuplicateStreamName { name: String },

    /// A stream has no samples at all.
    #[error("stream `{stream}` has no samples: remove it from the plan or fix its manifest")]
    EmptyStream { stream: String },

    /// `shard_bytes` and `shard_samples` disagree in length.
    #[error(
        "stream `{stream}` lists {samples} shard sample counts but {bytes} shard byte sizes: \
         give one byte size per shard (use 0 where unknown)"
    )]
    ShardBytesLength {
        stream: String,
        samples: usize,
        bytes: usize,
    },

    /// More shards than a `u32` shard id can address.
    #[error(
        "stream `{stream}` has {shards} shards; at most 4294967295 are supported: split the stream"
    )]
    TooManyShards { stream: String, shards: usize },

    /// A mix value is negative, NaN or infinite.
    #[error(
        "stream `{stream}` has an invalid mix {value}: weights and repeats must be finite and >= 0"
    )]
    InvalidMix { stream: String, value: f64 },

    /// Every `Mix::Weight` stream has weight zero.
    #[error("all weighted streams have weight 0: give at least one Mix::Weight stream a positive weight")]
    AllWeightsZero,

    /// `epoch_size` was set but no stream is weighted.
    #[error("epoch_size is set but no stream uses Mix::Weight: unset epoch_size or use weights")]
    EpochSizeWithoutWeights,

    /// Sample counts do not fit in 64 bits.
    #[error("stream `{stream}`: the epoch's sample count overflows u64: lower its repeat/weight or epoch_size")]
    SampleCountOverflow { stream: String },

    /// The epoch would contain no samples.
    #[error(
        "the epoch has no samples: every stream's repeat/weight share rounds to 0; raise them"
    )]
    EmptyEpoch,

    /// `global_batch_size` is zero.
    #[error("global_batch_size is 0: set it to the number of samples per optimizer step across all ranks")]
    ZeroBatchSize,

    /// The warm-up is more doublings than a window can have.
    #[error("warm-up of {value} doublings: use 0..={max} (0 turns the warm-up off)")]
    InvalidWarmup { value: u32, max: u32 },
    /// The shuffle window is zero samples or zero bytes.
    #[error("the shuffle window is 0: use Window::Samples(n) or Window::Bytes(n) with n >= 1")]
    ZeroWindow,

    /// `canonical_nodes` was not set and no topology was given to default it from.
    #[error(
        "canonical_nodes is unset: set PlanOptions::canonical_nodes (normally the job's node count) \
         or build with EpochPlan::with_topology"
    )]
    CanonicalNodesUnset,

    /// `canonical_nodes` is zero or unreasonably large.
    #[error("canonical_nodes is {value}; it must be between 1 and {max}")]
    InvalidCanonicalNodes { value: u32, max: u32 },

    /// A topology field is zero.
    #[error("topology.{field} is 0: every topology field must be at least 1")]
    InvalidTopology { field: &'static str },

    /// The global batch does not split evenly over ranks.
    #[error(
        "global_batch_size {global_batch_size} is not divisible by the world size {world} \
         (nodes x ranks_per_node): pick a multiple of {world}"
    )]
    BatchSizeNotDivisible { global_batch_size: u64, world: u64 },

    /// A rank id beyond the world size.
    #[error("rank {rank} is out of range: the topology has {world} ranks (0..{world})")]
    RankOutOfRange { rank: u32, world: u64 },

    /// A worker id beyond `workers_per_rank`.
    #[error("worker {worker} is out of range: the topology has {workers} workers per rank")]
    WorkerOutOfRange { worker: u32, workers: u32 },

    /// A batch index beyond the epoch.
    #[error("batch {index} is out of range: this plan has {num_batches} batches per rank")]
    BatchOutOfRange { index: u64, num_batches: u64 },

    /// A position beyond the epoch's global sequence.
    #[error("global position {index} is out of range: the epoch has {total} samples")]
    SampleOutOfRange { index: u64, total: u64 },

    /// A canonical node id beyond `canonical_nodes`.
    #[error(
        "canonical node {node} is out of range: the plan has {canonical_nodes} canonical nodes"
    )]
    NodeOutOfRange { node: u32, canonical_nodes: u32 },

    /// `drop_last` would drop the whole epoch.
    #[error(
        "drop_last leaves no batch: the epoch has {samples} samples but global_batch_size is \
         {global_batch_size}; lower the batch size, add data, or disable drop_last"
    )]
    NoFullBatch {
        samples: u64,
        global_batch_size: u64,
    },

    /// The resume state was written by a newer planner.
    #[error(
        "resume state version {found} is newer than this planner supports ({supported}): \
         upgrade shardstream to resume this run"
    )]
    NewerStateVersion { found: u64, supported: u32 },

    /// The resume state is not valid JSON for this format.
    #[error("resume state is malformed: {reason}")]
    InvalidState { reason: String },

    /// A stream's manifest changed since the state was written.
    #[error(
        "stream `{stream}` has fingerprint {found} but the resume state was written for {expected}: \
         the manifest changed; resume with the original manifest or start a fresh epoch"
    )]
    FingerprintMismatch {
        stream: String,
        expected: String,
        found: String,
    },

    /// A stream's sample count changed since the state was written.
    #[error(
        "stream `{stream}` has {found} samples but the resume state recorded {expected}: \
         resume with the original manifest or start a fresh epoch"
    )]
    SampleCountMismatch {
        stream: String,
        expected: u64,
        found: u64,
    },

    /// A stream's mix changed the epoch composition since the state was written.
    #[error(
        "stream `{stream}` would contribute {found} samples this epoch but the resume state \
         planned {expected}: restore its mix (and epoch_size) or start a fresh epoch"
    )]
    MixChanged {
        stream: String,
        expected: u64,
        found: u64,
    },

    /// A stream not present in the resume state.
    #[error(
        "stream `{name}` is not in the resume state: remove it, or start a fresh epoch to add it"
    )]
    UnknownStream { name: String },

    /// A stream of the resume state is missing.
    #[error("stream `{name}` from the resume state is missing: add it back to resume")]
    MissingStream { name: String },

    /// Same streams, different order.
    #[error("streams are in a different order than in the resume state: pass them in the order {expected:?}")]
    StreamOrderChanged { expected: Vec<String> },

    /// The seed changed.
    #[error(
        "seed {found} differs from the resume state's seed {expected}: resume with seed {expected}"
    )]
    SeedMismatch { expected: u64, found: u64 },

    /// `canonical_nodes` changed.
    #[error(
        "canonical_nodes {found} differs from the resume state's {expected}: leave canonical_nodes \
         unset (None) or set it to {expected} when resuming"
    )]
    CanonicalNodesMismatch { expected: u32, found: u32 },

    /// Shuffle on/off or the shuffle window changed.
    #[error("shuffle settings differ from the resume state ({what}): resume with the original shuffle and window")]
    ShuffleMismatch { what: String },

    /// `state_after` was asked about more batches than exist.
    #[error(
        "cannot record {consumed} consumed batches: this plan has {num_batches} batches per rank"
    )]
    ConsumedOutOfRange { consumed: u64, num_batches: u64 },
}

impl From<serde_json::Error> for PlanError {
    fn from(err: serde_json::Error) -> Self {
        PlanError::InvalidState {
            reason: err.to_string(),
        }
    }
}
