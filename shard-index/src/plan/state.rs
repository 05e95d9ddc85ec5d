//! Resume state: the few numbers that pin an interrupted epoch, and resuming from them.
//!
//! Because the global sequence `S` depends only on the streams, the seed, the epoch, the
//! shuffle settings and the canonical node count — never on the physical topology or the
//! batch size — a position in `S` (`samples_consumed`) is all a checkpoint has to remember.
//! The state is O(streams) JSON; resuming re-plans the epoch and continues at that position,
//! possibly on a different topology or with a different global batch size. Everything that
//! would change `S` is checked, and a mismatch is refused with an error saying what to restore.

use serde::{Deserialize, Serialize};

use super::epoch::{check_inputs, composition, stream_samples, EpochPlan};
use super::error::{PlanError, Result};
use super::mix::Mix;
use super::{PlanOptions, StreamSpec, Window};

/// Format version written by this planner; states from newer planners are refused.
pub const RESUME_STATE_VERSION: u32 = 1;

/// What a resume state remembers about one stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    pub name: String,
    pub fingerprint: String,
    pub mix: Mix,
    /// `N_s`, a cheap second check beside the fingerprint.
    pub samples: u64,
    /// `T_s` as planned; compared exactly on resume (the mix is an f64 and may not round-trip
    /// JSON bit-exactly, but the integer composition it produced must not change).
    pub epoch_samples: u64,
}

/// Checkpointable position inside an epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResumeState {
    pub version: u32,
    pub streams: Vec<StreamState>,
    pub seed: u64,
    pub epoch: u64,
    pub canonical_nodes: u32,
    pub shuffle: bool,
    pub window: Window,
    /// States written before warm-up windows existed had none.
    #[serde(default)]
    pub warmup: u32,
    pub drop_last: bool,
    pub epoch_size: Option<u64>,
    /// Batch size when the state was written (informational: resuming may change it).
    pub global_batch_size: u64,
    /// Samples of the epoch's global sequence already consumed, padded ones included.
    pub samples_consumed: u64,
}

impl ResumeState {
    /// Serialises to JSON.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string(self)?)
    }

    /// Parses JSON, refusing states written by a newer planner before looking at the rest
    /// (whose layout this version cannot know).
    pub fn from_json(text: &str) -> Result<ResumeState> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let version = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| PlanError::InvalidState {
                reason: "missing or non-integer `version` field".into(),
            })?;
        if version > u64::from(RESUME_STATE_VERSION) {
            return Err(PlanError::NewerStateVersion {
                found: version,
                supported: RESUME_STATE_VERSION,
            });
        }
        Ok(serde_json::from_value(value)?)
    }
}

impl EpochPlan {
    /// State after every rank has consumed `batches_consumed_per_rank` batches of this plan.
    pub fn state_after(&self, batches_consumed_per_rank: u64) -> Result<ResumeState> {
        let inner = &self.inner;
        if batches_consumed_per_rank > inner.num_batches {
            return Err(PlanError::ConsumedOutOfRange {
                consumed: batches_consumed_per_rank,
                num_batches: inner.num_batches,
            });
        }
        let o = &inner.options;
        Ok(ResumeState {
            version: RESUME_STATE_VERSION,
            streams: inner
                .streams
                .iter()
                .map(|s| StreamState {
                    name: s.name.clone(),
                    fingerprint: s.fingerprint.clone(),
                    mix: s.mix,
                    samples: s.samples,
                    epoch_samples: s.epoch_samples,
                })
                .collect(),
            seed: o.seed,
            epoch: inner.epoch,
            canonical_nodes: inner.canonical_nodes,
            shuffle: o.shuffle,
            window: o.window,
            warmup: o.warmup,
            drop_last: o.drop_last,
            epoch_size: o.epoch_size,
            global_batch_size: o.global_batch_size,
            samples_consumed: inner
                .start
                .saturating_add(batches_consumed_per_rank.saturating_mul(o.global_batch_size)),
        })
    }

    /// Re-plans `state.epoch` and continues after `state.samples_consumed`. The topology and
    /// `global_batch_size` may differ from the original run (batch boundaries then shift, but
    /// exactly the remaining samples are delivered); `drop_last` is taken from `options`.
    /// `options.canonical_nodes` may be `None` (use the state's) or must equal the state's.
    pub fn resume(
        streams: Vec<StreamSpec>,
        mut options: PlanOptions,
        state: &ResumeState,
    ) -> Result<EpochPlan> {
        if state.version > RESUME_STATE_VERSION {
            return Err(PlanError::NewerStateVersion {
                found: u64::from(state.version),
                supported: RESUME_STATE_VERSION,
            });
        }
        if options.seed != state.seed {
            return Err(PlanError::SeedMismatch {
                expected: state.seed,
                found: options.seed,
            });
        }
        if options.shuffle != state.shuffle {
            return Err(PlanError::ShuffleMismatch {
                what: format!(
                    "shuffle is {} but the state has {}",
                    options.shuffle, state.shuffle
                ),
            });
        }
        if options.window != state.window {
            return Err(PlanError::ShuffleMismatch {
                what: format!(
                    "window is {:?} but the state has {:?}",
                    options.window, state.window
                ),
            });
        }
        if options.warmup != state.warmup {
            return Err(PlanError::ShuffleMismatch {
                what: format!(
                    "warm-up is {} but the state has {}",
                    options.warmup, state.warmup
                ),
            });
        }
        match options.canonical_nodes {
            Some(c) if c != state.canonical_nodes => {
                return Err(PlanError::CanonicalNodesMismatch {
                    expected: state.canonical_nodes,
                    found: c,
                })
            }
            _ => options.canonical_nodes = Some(state.canonical_nodes),
        }
        for spec in &streams {
            if !state.streams.iter().any(|s| s.name == spec.name) {
                return Err(PlanError::UnknownStream {
                    name: spec.name.clone(),
                });
            }
        }
        for saved in &state.streams {
            if !streams.iter().any(|s| s.name == saved.name) {
                return Err(PlanError::MissingStream {
                    name: saved.name.clone(),
                });
            }
        }
        if streams.len() != state.streams.len()
            || streams
                .iter()
                .zip(&state.streams)
                .any(|(a, b)| a.name != b.name)
        {
            return Err(PlanError::StreamOrderChanged {
                expected: state.streams.iter().map(|s| s.name.clone()).collect(),
            });
        }
        check_inputs(&streams, &options)?;
        for (spec, saved) in streams.iter().zip(&state.streams) {
            if spec.fingerprint != saved.fingerprint {
                return Err(PlanError::FingerprintMismatch {
                    stream: spec.name.clone(),
                    expected: saved.fingerprint.clone(),
                    found: spec.fingerprint.clone(),
                });
            }
            let n = stream_samples(spec)?;
            if n != saved.samples {
                return Err(PlanError::SampleCountMismatch {
                    stream: spec.name.clone(),
                    expected: saved.samples,
                    found: n,
                });
            }
        }
        let counts = composition(&streams, &options)?;
        for ((spec, saved), &t) in streams.iter().zip(&state.streams).zip(&counts) {
            if t != saved.epoch_samples {
                return Err(PlanError::MixChanged {
                    stream: spec.name.clone(),
                    expected: saved.epoch_samples,
                    found: t,
                });
            }
        }
        // A state can only count samples up to the end of its epoch, the last batch padded.
        let total = counts.iter().fold(0u64, |a, &n| a.saturating_add(n));
        let gb = state.global_batch_size.max(1);
        let padded_end = total.div_ceil(gb).saturating_mul(gb);
        if state.samples_consumed > padded_end {
            return Err(PlanError::InvalidState {
                reason: format!(
                    "samples_consumed is {} but the epoch has {total} samples ({padded_end} with \
                     its last batch of {gb} padded)",
                    state.samples_consumed
                ),
            });
        }
        EpochPlan::build(streams, options, state.epoch, state.samples_consumed)
    }
}
