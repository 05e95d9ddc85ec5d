//! Encoding a manifest as Parquet and writing it atomically.
//!
//! A local output is written to a temporary file in the same directory, synced, and renamed over
//! the target, so a crash or an error leaves either the old file or the new one, never half of
//! one. An object-store output is one PUT, which stores are required to apply atomically.

use super::model::Manifest;
use super::{keys, FORMAT_VERSION};
use crate::error::{Error, Result};
use crate::parts::canonical_json;
use crate::storage::{to_url, Location, StorageOptions};
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::io::Write;

/// Rows per Parquet row group: 1M shards is ~a few MB compressed; readers load whole manifests.
const ROWS_PER_GROUP: usize = 1 << 20;

impl Manifest {
    /// The manifest as Parquet bytes (deterministic for equal manifests).
    pub fn to_parquet_bytes(&self) -> Result<Vec<u8>> {
        let meta = &self.meta;
        let kv = vec![
            KeyValue::new(
                keys::VERSION.into(),
                format!("{}.{}", FORMAT_VERSION.0, FORMAT_VERSION.1),
            ),
            KeyValue::new(keys::SOURCES.into(), json(&meta.sources)),
            // Sorted keys: schema metadata lives in HashMaps, whose order varies per process.
            KeyValue::new(keys::SCHEMA.into(), canonical_json(&meta.schema)),
            KeyValue::new(keys::TOTALS.into(), json(&meta.totals)),
            KeyValue::new(keys::FINGERPRINT.into(), meta.fingerprint.clone()),
            KeyValue::new(keys::BUILDER.into(), meta.builder.clone()),
        ]
        .into_iter()
        .chain(
            meta.part
                .map(|p| KeyValue::new(keys::PART.into(), json(&p))),
        )
        .chain(
            meta.part_detail
                .as_ref()
                .map(|d| KeyValue::new(keys::PART_DETAIL.into(), canonical_json(d))),
        )
        .collect();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid level"),
            ))
            .set_max_row_group_row_count(Some(ROWS_PER_GROUP))
            .set_statistics_enabled(EnabledStatistics::None)
            .set_key_value_metadata(Some(kv))
            .build();
        let codec = |source| Error::ManifestCodec {
            path: "<manifest>".into(),
            source,
        };
        let mut out = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut out, self.batch.schema(), Some(props)).map_err(codec)?;
        writer.write(&self.batch).map_err(codec)?;
        writer.close().map_err(codec)?;
        Ok(out)
    }

    /// Writes the manifest to a local path or object-store URL, atomically.
    pub fn write_to(&self, output: &str, options: &StorageOptions) -> Result<()> {
        let bytes = self.to_parquet_bytes()?;
        write_atomic(output, options, bytes)
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("manifest metadata serialises")
}

/// Writes `bytes` to `output` (local path or URL) so that readers see all of it or none.
pub fn write_atomic(output: &str, options: &StorageOptions, bytes: Vec<u8>) -> Result<()> {
    let url = to_url(output)?;
    if url.scheme() == "file" {
        let path = url.to_file_path().map_err(|()| Error::InvalidLocation {
            location: output.into(),
            reason: "not a local path".into(),
        })?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let name = path
            .file_name()
            .ok_or_else(|| Error::InvalidLocation {
                location: output.into(),
                reason: "the output needs a file name".into(),
            })?
            .to_string_lossy()
            .into_owned();
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, e))?;
        tmp.write_all(&bytes)
            .map_err(|e| Error::io(tmp.path(), e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io(tmp.path(), e))?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        return Ok(());
    }
    let loc = Location::open(output, options)?;
    let key: StorePath = loc.prefix.clone();
    crate::runtime::block_on(loc.store.put(&key, PutPayload::from(bytes)))?
        .map_err(|e| Error::storage(output, e))?;
    Ok(())
}
