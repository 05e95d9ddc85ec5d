//! What `inspect` shows about a manifest, shared by the CLI and the Python binding.

use super::model::{Manifest, PartInfo};
use serde::Serialize;
use std::collections::BTreeMap;

/// A manifest at a glance (`shard-index inspect --json`, `shardstream.inspect()`).
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub manifest: String,
    pub version: String,
    pub builder: String,
    pub sources: Vec<String>,
    pub shards: u64,
    pub samples: u64,
    pub bytes: u64,
    pub row_groups: u64,
    /// Shards per format (`parquet`, `tar.zst`, ...).
    pub formats: BTreeMap<String, u64>,
    pub fingerprint: String,
    pub schema: Vec<FieldReport>,
    pub smallest: Option<ShardReport>,
    pub largest: Option<ShardReport>,
    pub part: Option<PartInfo>,
}

/// One field of the sample schema.
#[derive(Debug, Clone, Serialize)]
pub struct FieldReport {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
}

/// One shard, by URL.
#[derive(Debug, Clone, Serialize)]
pub struct ShardReport {
    pub path: String,
    pub bytes: u64,
    pub samples: u64,
}

impl InspectReport {
    /// The report for `manifest`, read from `location`.
    pub fn of(manifest: &Manifest, location: &str) -> Self {
        let m = manifest;
        let sizes = m.sizes();
        let shard = |i: usize| ShardReport {
            path: m.url(i),
            bytes: m.size(i),
            samples: m.num_samples(i),
        };
        let mut formats = BTreeMap::new();
        for i in 0..m.len() {
            *formats.entry(m.kind(i).to_string()).or_default() += 1;
        }
        Self {
            manifest: location.to_string(),
            version: format!("{}.{}", m.meta.version.0, m.meta.version.1),
            builder: m.meta.builder.clone(),
            sources: m.meta.sources.clone(),
            shards: m.meta.totals.shards,
            samples: m.meta.totals.samples,
            bytes: m.meta.totals.bytes,
            row_groups: (0..m.len()).map(|i| m.row_groups(i).len() as u64).sum(),
            formats,
            fingerprint: m.meta.fingerprint.clone(),
            schema: m
                .meta
                .schema
                .fields()
                .iter()
                .map(|f| FieldReport {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                    nullable: f.is_nullable(),
                })
                .collect(),
            smallest: (0..m.len()).min_by_key(|&i| (sizes[i], i)).map(shard),
            largest: (0..m.len())
                .max_by_key(|&i| (sizes[i], std::cmp::Reverse(i)))
                .map(shard),
            part: m.meta.part,
        }
    }
}
