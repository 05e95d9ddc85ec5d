//! The manifest: one Parquet file, one row per shard, describing a dataset in place.
//!
//! Layout (format version [`FORMAT_VERSION`]):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `source` | UInt32 | index into the `shardstream.sources` list of root URLs |
//! | `path` | Utf8 | object path relative to its source root |
//! | `size` | UInt64 | object size in bytes |
//! | `etag` / `version` | Utf8, nullable | what the store reported, used to detect changes |
//! | `last_modified` | Timestamp(ms, UTC), nullable | the object's own modification time |
//! | `format` | Utf8 | `parquet`, `tar`, `tar.zst`, `tar.gz`, `jsonl`, `jsonl.zst`, `jsonl.gz` |
//! | `num_samples` | UInt64 | samples in the shard |
//! | `row_group_rows` / `row_group_offsets` / `row_group_lengths` | List<UInt64> | Parquet row groups: rows and byte range (empty lists for other formats) |
//!
//! Rows are sorted by (source, path). Key-value metadata carries the format version, the source
//! roots, the sample schema (Arrow, as JSON), totals, the builder version and a fingerprint
//! (SHA-256 over every row's identity: source, path, size, etag and counts).
//!
//! A partial manifest (`build --part I/N`, see [`crate::parts`]) has the same layout, holds only
//! its part's rows, and adds `shardstream.part` and `shardstream.part_detail`; `merge` turns the
//! parts into a manifest without them.
//!
//! Determinism: nothing in the file depends on listing order, concurrency or the time of the
//! build, so the same objects always give byte-identical manifests. In memory the table stays
//! columnar (Arrow arrays), so a 16M-shard manifest costs about its compressed size times a
//! small factor, not a struct with four `String`s per shard.

mod model;
mod read;
mod report;
mod write;

pub use model::{builder_version, Manifest, ManifestMeta, PartInfo, RowGroup, ShardEntry, Totals};
pub use report::{FieldReport, InspectReport, ShardReport};
pub use write::write_atomic;

/// Major.minor of the manifest layout this build writes. Readers refuse a newer major.
pub const FORMAT_VERSION: (u32, u32) = (1, 0);

/// Metadata keys.
pub(crate) mod keys {
    pub const VERSION: &str = "shardstream.manifest_version";
    pub const SOURCES: &str = "shardstream.sources";
    pub const SCHEMA: &str = "shardstream.schema";
    pub const TOTALS: &str = "shardstream.totals";
    pub const FINGERPRINT: &str = "shardstream.fingerprint";
    pub const BUILDER: &str = "shardstream.builder";
    pub const PART: &str = "shardstream.part";
    /// Partial manifests only: what `merge` needs to reproduce a single build.
    pub const PART_DETAIL: &str = "shardstream.part_detail";
}
