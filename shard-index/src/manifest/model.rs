//! In-memory manifest: metadata plus a columnar table of shards.

use super::FORMAT_VERSION;
use crate::error::{Error, Result};
use crate::format::ShardKind;
use arrow::array::{
    Array, ArrayRef, ListArray, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMillisecondArray, UInt32Array, UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// One Parquet row group: its row count and the byte range holding its column chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowGroup {
    pub num_rows: u64,
    pub offset: u64,
    pub length: u64,
}

/// One shard as the indexer produces it (and as [`Manifest::entry`] returns it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardEntry {
    /// Index into [`ManifestMeta::sources`].
    pub source: u32,
    /// Path relative to the source root.
    pub path: String,
    pub size: u64,
    pub etag: Option<String>,
    pub version: Option<String>,
    pub last_modified_ms: Option<i64>,
    pub kind: ShardKind,
    pub num_samples: u64,
    /// Row groups (Parquet only; empty otherwise).
    pub row_groups: Vec<RowGroup>,
}

/// Dataset totals, stored in the metadata so `inspect` need not scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Totals {
    pub shards: u64,
    pub samples: u64,
    pub bytes: u64,
}

/// Which slice of a partitioned build a partial manifest holds (`--part I/N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub index: u32,
    pub count: u32,
}

/// Manifest-level metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestMeta {
    /// (major, minor) format version.
    pub version: (u32, u32),
    /// Root URL of each source; rows refer to them by index.
    pub sources: Vec<String>,
    /// Arrow schema of one sample.
    pub schema: Schema,
    pub totals: Totals,
    /// Hex SHA-256 over sources and every shard's identity.
    pub fingerprint: String,
    /// `shard-index <version>` of the build that wrote it.
    pub builder: String,
    pub part: Option<PartInfo>,
    /// Partial manifests only: each row's schema, listings and skipped objects, for `merge`.
    pub part_detail: Option<Box<crate::parts::PartDetail>>,
}

/// A manifest: metadata plus the shard table.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub meta: ManifestMeta,
    pub(super) batch: RecordBatch,
    pub(super) cols: Columns,
}

#[derive(Debug, Clone)]
pub(super) struct Columns {
    source: UInt32Array,
    path: StringArray,
    size: UInt64Array,
    etag: StringArray,
    version: StringArray,
    last_modified: TimestampMillisecondArray,
    kinds: Vec<ShardKind>,
    num_samples: UInt64Array,
    rg_rows: ListArray,
    rg_offsets: ListArray,
    rg_lengths: ListArray,
}

/// The builder string written into manifests.
pub fn builder_version() -> String {
    format!("shard-index {}", env!("CARGO_PKG_VERSION"))
}

impl Manifest {
    /// Builds a manifest from shard entries (any order) and the dataset's sample schema.
    pub fn from_entries(
        sources: Vec<String>,
        schema: Schema,
        mut entries: Vec<ShardEntry>,
        part: Option<PartInfo>,
    ) -> Result<Self> {
        entries.sort_by(|a, b| (a.source, &a.path).cmp(&(b.source, &b.path)));
        if let Some(w) = entries
            .windows(2)
            .find(|w| (w[0].source, &w[0].path) == (w[1].source, &w[1].path))
        {
            return Err(Error::Config(format!(
                "shard {} appears twice in one source",
                w[0].path
            )));
        }
        let totals = Totals {
            shards: entries.len() as u64,
            samples: entries.iter().map(|e| e.num_samples).sum(),
            bytes: entries.iter().map(|e| e.size).sum(),
        };
        let fingerprint = fingerprint(&sources, &entries);
        let meta = ManifestMeta {
            version: FORMAT_VERSION,
            sources,
            schema,
            totals,
            fingerprint,
            builder: builder_version(),
            part,
            part_detail: None,
        };
        let batch = to_batch(&entries)?;
        Self::from_batch(meta, batch, "<in memory>")
    }

    pub(super) fn from_batch(
        meta: ManifestMeta,
        batch: RecordBatch,
        display: &str,
    ) -> Result<Self> {
        let cols = Columns::from_batch(&batch, display)?;
        Ok(Self { meta, batch, cols })
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn source(&self, i: usize) -> u32 {
        self.cols.source.value(i)
    }

    pub fn path(&self, i: usize) -> &str {
        self.cols.path.value(i)
    }

    pub fn size(&self, i: usize) -> u64 {
        self.cols.size.value(i)
    }

    pub fn etag(&self, i: usize) -> Option<&str> {
        self.cols.etag.is_valid(i).then(|| self.cols.etag.value(i))
    }

    pub fn kind(&self, i: usize) -> ShardKind {
        self.cols.kinds[i]
    }

    pub fn num_samples(&self, i: usize) -> u64 {
        self.cols.num_samples.value(i)
    }

    /// Sample counts of all shards, in manifest order (the planner's input).
    pub fn sample_counts(&self) -> &[u64] {
        self.cols.num_samples.values()
    }

    /// Sizes of all shards, in manifest order.
    pub fn sizes(&self) -> &[u64] {
        self.cols.size.values()
    }

    /// The root URL of shard `i`'s source joined with its path.
    pub fn url(&self, i: usize) -> String {
        let root = &self.meta.sources[self.source(i) as usize];
        format!("{}/{}", root.trim_end_matches('/'), self.path(i))
    }

    /// The longest row group of any shard in bytes (0 when no shard has row groups), read
    /// straight from the column: one pass, no per-shard allocation as [`Manifest::row_groups`]
    /// makes (a loader asks this of manifests of millions of shards).
    pub fn max_row_group_length(&self) -> u64 {
        let list = &self.cols.rg_lengths;
        let Some(values) = list.values().as_any().downcast_ref::<UInt64Array>() else {
            return 0;
        };
        let offsets = list.value_offsets();
        (0..list.len())
            .filter(|&i| list.is_valid(i))
            .flat_map(|i| &values.values()[offsets[i] as usize..offsets[i + 1] as usize])
            .copied()
            .max()
            .unwrap_or(0)
    }

    pub fn row_groups(&self, i: usize) -> Vec<RowGroup> {
        let rows = list_values(&self.cols.rg_rows, i);
        let offsets = list_values(&self.cols.rg_offsets, i);
        let lengths = list_values(&self.cols.rg_lengths, i);
        rows.iter()
            .zip(offsets.iter())
            .zip(lengths.iter())
            .map(|((&num_rows, &offset), &length)| RowGroup {
                num_rows,
                offset,
                length,
            })
            .collect()
    }

    /// Shard `i` as an owned entry.
    pub fn entry(&self, i: usize) -> ShardEntry {
        ShardEntry {
            source: self.source(i),
            path: self.path(i).to_string(),
            size: self.size(i),
            etag: self.etag(i).map(str::to_string),
            version: self
                .cols
                .version
                .is_valid(i)
                .then(|| self.cols.version.value(i).to_string()),
            last_modified_ms: self
                .cols
                .last_modified
                .is_valid(i)
                .then(|| self.cols.last_modified.value(i)),
            kind: self.kind(i),
            num_samples: self.num_samples(i),
            row_groups: self.row_groups(i),
        }
    }

    /// All shards as owned entries.
    pub fn entries(&self) -> impl Iterator<Item = ShardEntry> + '_ {
        (0..self.len()).map(|i| self.entry(i))
    }

    /// Index of the shard with this (source, path), by binary search.
    pub fn find(&self, source: u32, path: &str) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match (self.source(mid), self.path(mid)).cmp(&(source, path)) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }
}

fn list_values(list: &ListArray, i: usize) -> Vec<u64> {
    if list.is_null(i) {
        return Vec::new();
    }
    let values = list.value(i);
    values
        .as_any()
        .downcast_ref::<UInt64Array>()
        .map(|a| a.values().to_vec())
        .unwrap_or_default()
}

/// Hex SHA-256 over the sources and each entry's identity (path, size, etag — or the
/// modification time when the store gives no etag — and counts), in order.
pub fn fingerprint(sources: &[String], entries: &[ShardEntry]) -> String {
    let mut h = Sha256::new();
    h.update(b"shardstream-manifest-v1\0");
    for s in sources {
        h.update(s.as_bytes());
        h.update([0]);
    }
    for e in entries {
        h.update(e.source.to_le_bytes());
        h.update(e.path.as_bytes());
        h.update([0]);
        h.update(e.size.to_le_bytes());
        h.update(e.etag.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
        if e.etag.is_none() {
            // Without an etag the modification time is what tells versions apart.
            h.update(e.last_modified_ms.unwrap_or(0).to_le_bytes());
        }
        h.update(e.num_samples.to_le_bytes());
        h.update((e.row_groups.len() as u64).to_le_bytes());
        for rg in &e.row_groups {
            h.update(rg.num_rows.to_le_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// The Arrow schema of the shard table.
pub fn table_schema() -> Schema {
    let list = || DataType::List(Arc::new(Field::new("item", DataType::UInt64, false)));
    Schema::new(vec![
        Field::new("source", DataType::UInt32, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("size", DataType::UInt64, false),
        Field::new("etag", DataType::Utf8, true),
        Field::new("version", DataType::Utf8, true),
        Field::new(
            "last_modified",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("format", DataType::Utf8, false),
        Field::new("num_samples", DataType::UInt64, false),
        Field::new("row_group_rows", list(), false),
        Field::new("row_group_offsets", list(), false),
        Field::new("row_group_lengths", list(), false),
    ])
}

fn to_batch(entries: &[ShardEntry]) -> Result<RecordBatch> {
    let n = entries.len();
    let list_of = |f: fn(&RowGroup) -> u64| -> ArrayRef {
        let mut b = ListBuilder::new(UInt64Builder::new()).with_field(Arc::new(Field::new(
            "item",
            DataType::UInt64,
            false,
        )));
        for e in entries {
            b.values()
                .append_slice(&e.row_groups.iter().map(f).collect::<Vec<_>>());
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let mut paths = StringBuilder::with_capacity(n, entries.iter().map(|e| e.path.len()).sum());
    let mut formats = StringBuilder::with_capacity(n, n * 8);
    for e in entries {
        paths.append_value(&e.path);
        formats.append_value(e.kind.to_string());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(
            entries.iter().map(|e| e.source),
        )),
        Arc::new(paths.finish()),
        Arc::new(UInt64Array::from_iter_values(
            entries.iter().map(|e| e.size),
        )),
        Arc::new(StringArray::from_iter(
            entries.iter().map(|e| e.etag.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            entries.iter().map(|e| e.version.as_deref()),
        )),
        Arc::new(
            TimestampMillisecondArray::from_iter(entries.iter().map(|e| e.last_modified_ms))
                .with_timezone("UTC"),
        ),
        Arc::new(formats.finish()),
        Arc::new(UInt64Array::from_iter_values(
            entries.iter().map(|e| e.num_samples),
        )),
        list_of(|r| r.num_rows),
        list_of(|r| r.offset),
        list_of(|r| r.length),
    ];
    RecordBatch::try_new(Arc::new(table_schema()), columns).map_err(|e| Error::InvalidManifest {
        path: "<in memory>".into(),
        reason: e.to_string(),
    })
}

impl Columns {
    fn from_batch(batch: &RecordBatch, display: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidManifest {
            path: display.into(),
            reason,
        };
        fn col<'a, T: 'static>(
            batch: &'a RecordBatch,
            name: &str,
            bad: &dyn Fn(String) -> Error,
        ) -> Result<&'a T> {
            batch
                .column_by_name(name)
                .ok_or_else(|| bad(format!("missing column {name:?}")))?
                .as_any()
                .downcast_ref::<T>()
                .ok_or_else(|| bad(format!("column {name:?} has the wrong type")))
        }
        let format: &StringArray = col(batch, "format", &bad)?;
        let kinds = (0..format.len())
            .map(|i| {
                format
                    .value(i)
                    .parse::<ShardKind>()
                    .map_err(|e| bad(format!("row {i}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let cols = Self {
            source: col::<UInt32Array>(batch, "source", &bad)?.clone(),
            path: col::<StringArray>(batch, "path", &bad)?.clone(),
            size: col::<UInt64Array>(batch, "size", &bad)?.clone(),
            etag: col::<StringArray>(batch, "etag", &bad)?.clone(),
            version: col::<StringArray>(batch, "version", &bad)?.clone(),
            last_modified: col::<TimestampMillisecondArray>(batch, "last_modified", &bad)?.clone(),
            kinds,
            num_samples: col::<UInt64Array>(batch, "num_samples", &bad)?.clone(),
            rg_rows: col::<ListArray>(batch, "row_group_rows", &bad)?.clone(),
            rg_offsets: col::<ListArray>(batch, "row_group_offsets", &bad)?.clone(),
            rg_lengths: col::<ListArray>(batch, "row_group_lengths", &bad)?.clone(),
        };
        if cols.source.null_count() + cols.path.null_count() + cols.size.null_count() > 0 {
            return Err(bad("null in a required column".into()));
        }
        Ok(cols)
    }
}
