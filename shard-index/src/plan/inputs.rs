//! Planner inputs from manifests: the bridge between [`crate::manifest`] and the planner.
//!
//! Kept apart from the algorithm so the planner itself depends on nothing but numbers.

use super::{Mix, StreamSpec, Window};
use crate::manifest::Manifest;

/// Default shuffle window: 256 MiB of samples per canonical node. Large enough to mix dozens
/// of typical shards, small enough that a node's cache holds a window comfortably.
pub const DEFAULT_WINDOW: Window = Window::Bytes(256 << 20);

/// Default warm-up: the first window is 1/64 of a window (4 MiB of the default 256 MiB), so a
/// job's first batch waits for one or two row groups, not a whole window's shards.
pub const DEFAULT_WARMUP: u32 = 6;

impl StreamSpec {
    /// A stream over every shard of `manifest`, named `name` (its location, usually).
    pub fn from_manifest(name: impl Into<String>, manifest: &Manifest, mix: Mix) -> Self {
        Self {
            name: name.into(),
            fingerprint: manifest.meta.fingerprint.clone(),
            shard_samples: manifest.sample_counts().to_vec(),
            shard_bytes: manifest.sizes().to_vec(),
            mix,
        }
    }
}
