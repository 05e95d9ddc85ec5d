//! Planner inputs from manifests: the bridge between [`crate::manifest`] and the planner.
//!
//! Kept apart from the algorithm so the planner itself depends on nothing but numbers.

use super::{Mix, StreamSpec, Window};
use crate::manifest::Manifest;

/// Default shuffle window: 256 MiB of samples per canonical node. Large enough to mix dozens
/// of typical shards, small enough that a node's cache holds a window comfortably.
pub const DEFAULT_WINDOW: Window = Window::Bytes(256 << 20);

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
