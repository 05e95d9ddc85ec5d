//! Reading manifests: version check first, then the table.
//!
//! The version key is checked before anything else is interpreted, so a manifest written by a
//! newer major version fails with "upgrade shardstream" rather than a confusing column error.

use super::model::{Manifest, ManifestMeta, PartInfo, Totals};
use super::{keys, FORMAT_VERSION};
use crate::error::{Error, Result};
use crate::storage::{to_url, Location, StorageOptions};
use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::compute::concat_batches;
use bytes::Bytes;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::HashMap;
use std::sync::Arc;

impl Manifest {
    /// Reads a manifest from a local path or object-store URL.
    pub fn read(location: &str, options: &StorageOptions) -> Result<Self> {
        let bytes = match local_path(location)? {
            Some(path) => Bytes::from(std::fs::read(&path).map_err(|e| Error::io(&path, e))?),
            None => crate::runtime::block_on(fetch_remote(location, options))??,
        };
        Self::from_parquet_bytes(bytes, location)
    }

    /// Async variant of [`Manifest::read`] for callers already inside a runtime.
    pub async fn read_async(location: &str, options: &StorageOptions) -> Result<Self> {
        let bytes = match local_path(location)? {
            Some(path) => Bytes::from(
                tokio::fs::read(&path)
                    .await
                    .map_err(|e| Error::io(&path, e))?,
            ),
            None => fetch_remote(location, options).await?,
        };
        Self::from_parquet_bytes(bytes, location)
    }

    /// Decodes a manifest held in memory; `display` names it in errors.
    pub fn from_parquet_bytes(bytes: Bytes, display: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidManifest {
            path: display.into(),
            reason,
        };
        let builder = std::panic::catch_unwind(|| ParquetRecordBatchReaderBuilder::try_new(bytes))
            .map_err(|_| bad("the Parquet footer could not be decoded".into()))?
            .map_err(|e| bad(format!("not a readable Parquet file ({e})")))?;
        let kv: HashMap<String, String> = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .map(|kvs| {
                kvs.iter()
                    .filter_map(|kv| kv.value.clone().map(|v| (kv.key.clone(), v)))
                    .collect()
            })
            .unwrap_or_default();
        let version = kv.get(keys::VERSION).ok_or_else(|| {
            bad(
                "no shardstream.manifest_version: this Parquet file is not a shardstream manifest"
                    .into(),
            )
        })?;
        let parsed =
            parse_version(version).ok_or_else(|| bad(format!("bad version {version:?}")))?;
        if parsed.0 > FORMAT_VERSION.0 {
            return Err(Error::UnsupportedManifestVersion {
                path: display.into(),
                found: version.clone(),
                supported: format!("{}.x", FORMAT_VERSION.0),
            });
        }
        let get = |k: &str| {
            kv.get(k)
                .ok_or_else(|| bad(format!("missing metadata key {k}")))
        };
        let parse =
            |k: &str, v: &str, e: serde_json::Error| bad(format!("metadata {k}: {e} in {v:?}"));
        let sources: Vec<String> = {
            let v = get(keys::SOURCES)?;
            serde_json::from_str(v).map_err(|e| parse(keys::SOURCES, v, e))?
        };
        let schema = {
            let v = get(keys::SCHEMA)?;
            serde_json::from_str(v).map_err(|e| parse(keys::SCHEMA, v, e))?
        };
        let totals: Totals = {
            let v = get(keys::TOTALS)?;
            serde_json::from_str(v).map_err(|e| parse(keys::TOTALS, v, e))?
        };
        let part: Option<PartInfo> = match kv.get(keys::PART) {
            Some(v) => Some(serde_json::from_str(v).map_err(|e| parse(keys::PART, v, e))?),
            None => None,
        };
        let part_detail = match kv.get(keys::PART_DETAIL) {
            Some(v) => Some(Box::new(
                serde_json::from_str(v).map_err(|e| parse(keys::PART_DETAIL, v, e))?,
            )),
            None => None,
        };
        let meta = ManifestMeta {
            version: parsed,
            sources,
            schema,
            totals,
            fingerprint: get(keys::FINGERPRINT)?.clone(),
            builder: get(keys::BUILDER)?.clone(),
            part,
            part_detail,
        };
        // The parquet crate can panic on corrupt pages (found by fuzzing: "Decoder for dict
        // should have been set", "column start and length should not be negative"), so a
        // damaged manifest must not take the process down with it.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let reader = builder
                .with_batch_size(1 << 16)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            let schema = reader.schema();
            let batches = reader
                .collect::<std::result::Result<Vec<RecordBatch>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            Ok::<_, Error>((schema, batches))
        }));
        let (schema, batches) = match decoded {
            Ok(r) => r?,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                return Err(bad(format!("the Parquet data is corrupt ({what})")));
            }
        };
        let batch = concat_batches(&schema, &batches).map_err(|e| bad(e.to_string()))?;
        let batch = RecordBatch::try_new(
            Arc::new(super::model::table_schema()),
            batch.columns().to_vec(),
        )
        .map_err(|e| bad(format!("unexpected table layout: {e}")))?;
        let manifest = Manifest::from_batch(meta, batch, display)?;
        check_consistency(&manifest).map_err(bad)?;
        Ok(manifest)
    }
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Totals and source indices must agree with the rows: a hand-edited or damaged manifest is
/// caught here instead of as an out-of-bounds index deep inside the loader.
fn check_consistency(m: &Manifest) -> std::result::Result<(), String> {
    let t = m.meta.totals;
    if t.shards != m.len() as u64 {
        return Err(format!(
            "totals say {} shards, table has {}",
            t.shards,
            m.len()
        ));
    }
    // Checked: a damaged table can hold counts that overflow when summed (found by fuzzing).
    let samples = m
        .sample_counts()
        .iter()
        .try_fold(0u64, |a, &n| a.checked_add(n))
        .ok_or("the rows' sample counts overflow a 64-bit total")?;
    if samples != t.samples {
        return Err(format!(
            "totals say {} samples, rows sum to {samples}",
            t.samples
        ));
    }
    let nsources = m.meta.sources.len() as u32;
    if let Some(i) = (0..m.len()).find(|&i| m.source(i) >= nsources) {
        return Err(format!(
            "row {i} names source {} of {nsources}",
            m.source(i)
        ));
    }
    Ok(())
}

fn local_path(location: &str) -> Result<Option<std::path::PathBuf>> {
    let url = to_url(location)?;
    if url.scheme() != "file" {
        return Ok(None);
    }
    url.to_file_path()
        .map(Some)
        .map_err(|()| Error::InvalidLocation {
            location: location.into(),
            reason: "not a local path".into(),
        })
}

async fn fetch_remote(location: &str, options: &StorageOptions) -> Result<Bytes> {
    let loc = Location::open(location, options)?;
    loc.store
        .get(&loc.prefix)
        .await
        .map_err(|e| Error::storage(location, e))?
        .bytes()
        .await
        .map_err(|e| Error::storage(location, e))
}
