//! Synthetic datasets with known contents, for tests, the demo and benchmarks.
//!
//! Sample `i` of a generated dataset (ids 0..N-1, in shard order) is a pure function of `i` and
//! the config — see [`expected_tokens`] and [`expected_text`] — so a reader can check every
//! byte it delivers without keeping a copy. Shard sizes and Parquet row-group sizes are
//! deliberately uneven (within ±50% of the mean) so that code assuming equal shards breaks in
//! tests rather than in production.
//!
//! Formats: Parquet (`id: Int64`, `tokens: List<Int32>`, `text: Utf8`, optional `blob: Binary`),
//! WebDataset tar (`<key>.json` with id and text, `<key>.tokens` as little-endian int32,
//! optional `<key>.blob`) and JSONL (`{"id", "tokens", "text"}`), the latter two plain or zstd.

use crate::error::{Error, Result};
use crate::format::{Compression, ShardFormat, ShardKind};
use arrow::array::{
    ArrayRef, BinaryArray, Int32Builder, Int64Array, ListBuilder, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub kind: ShardKind,
    pub samples: u64,
    pub shards: u32,
    /// Token list length range (inclusive); equal bounds give fixed-length lists.
    pub tokens_min: u32,
    pub tokens_max: u32,
    /// Bytes of an extra binary `blob` field per sample (0 = no blob).
    pub blob_bytes: u32,
    /// Mean rows per Parquet row group (actual sizes vary ±50%).
    pub row_group_rows: u32,
    /// PLAIN encoding, no compression (for read-throughput benchmarks).
    pub parquet_plain: bool,
    /// Vary shard and row-group sizes (±50%).
    pub uneven: bool,
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            kind: ShardKind::new(ShardFormat::Parquet, Compression::None),
            samples: 10_000,
            shards: 8,
            tokens_min: 16,
            tokens_max: 256,
            blob_bytes: 0,
            row_group_rows: 1000,
            parquet_plain: false,
            uneven: true,
            seed: 0,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct SynthReport {
    pub dir: PathBuf,
    pub format: String,
    pub shards: u32,
    pub samples: u64,
    pub bytes: u64,
    /// Sample count of each shard, in name order.
    pub shard_samples: Vec<u64>,
}

/// SplitMix64: tiny, fast, and stable across crate versions (unlike library RNGs).
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The tokens of sample `id`.
pub fn expected_tokens(cfg: &SynthConfig, id: u64) -> Vec<i32> {
    let span = u64::from(cfg.tokens_max.saturating_sub(cfg.tokens_min)) + 1;
    let len = u64::from(cfg.tokens_min) + mix(id ^ cfg.seed) % span;
    (0..len)
        .map(|j| ((id.wrapping_mul(31).wrapping_add(j * 7)) % 50_000) as i32)
        .collect()
}

/// The text of sample `id`.
pub fn expected_text(id: u64) -> String {
    format!("sample {id} says hello")
}

/// The blob of sample `id` (deterministic bytes).
pub fn expected_blob(cfg: &SynthConfig, id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(cfg.blob_bytes as usize);
    let mut x = id ^ cfg.seed.rotate_left(17);
    while out.len() < cfg.blob_bytes as usize {
        x = mix(x);
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(cfg.blob_bytes as usize);
    out
}

/// Sample counts per shard: uneven (±50%) but summing exactly to `samples`.
pub fn shard_sizes(cfg: &SynthConfig) -> Vec<u64> {
    let n = u64::from(cfg.shards.max(1));
    if !cfg.uneven {
        return (0..n)
            .map(|i| cfg.samples / n + u64::from(i < cfg.samples % n))
            .collect();
    }
    let weights: Vec<u64> = (0..n)
        .map(|i| 50 + mix(cfg.seed ^ (i << 8)) % 101)
        .collect();
    let total_w: u64 = weights.iter().sum();
    let mut sizes: Vec<u64> = weights
        .iter()
        .map(|w| (u128::from(cfg.samples) * u128::from(*w) / u128::from(total_w)) as u64)
        .collect();
    let mut rest = cfg.samples - sizes.iter().sum::<u64>();
    let mut i = 0;
    let n = sizes.len();
    while rest > 0 {
        sizes[i % n] += 1;
        rest -= 1;
        i += 1;
    }
    sizes
}

/// Writes a dataset into `dir` (created if needed). Shards are `part-00000.<ext>` etc.
pub fn generate(dir: &Path, cfg: &SynthConfig) -> Result<SynthReport> {
    if cfg.samples == 0 || cfg.shards == 0 {
        return Err(Error::Config(
            "generate needs at least one sample and one shard".into(),
        ));
    }
    if cfg.tokens_min > cfg.tokens_max {
        return Err(Error::Config(
            "tokens_min must not exceed tokens_max".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let sizes = shard_sizes(cfg);
    let mut next_id = 0u64;
    let mut bytes = 0u64;
    for (s, &count) in sizes.iter().enumerate() {
        let path = dir.join(format!("part-{s:05}.{}", extension(cfg.kind)));
        let ids = next_id..next_id + count;
        next_id += count;
        let data = match cfg.kind.format {
            ShardFormat::Parquet => parquet_shard(cfg, ids, s as u64)?,
            ShardFormat::Tar => compress(cfg.kind.compression, tar_shard(cfg, ids)?)?,
            ShardFormat::Jsonl => compress(cfg.kind.compression, jsonl_shard(cfg, ids))?,
        };
        bytes += data.len() as u64;
        // Temp name + rename: a reader never sees a half-written shard. No fsync: generated
        // data can be regenerated, and 10,000 fsyncs would dominate generating small shards.
        let tmp = dir.join(format!(".part-{s:05}.tmp"));
        std::fs::write(&tmp, &data).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(SynthReport {
        dir: dir.to_path_buf(),
        format: cfg.kind.to_string(),
        shards: cfg.shards,
        samples: cfg.samples,
        bytes,
        shard_samples: sizes,
    })
}

fn extension(kind: ShardKind) -> String {
    match (kind.format, kind.compression) {
        (ShardFormat::Parquet, _) => "parquet".into(),
        (f, c) => {
            let base = if f == ShardFormat::Tar {
                "tar"
            } else {
                "jsonl"
            };
            match c {
                Compression::None => base.into(),
                Compression::Zstd => format!("{base}.zst"),
                Compression::Gzip => format!("{base}.gz"),
            }
        }
    }
}

/// The Arrow schema of generated Parquet shards.
pub fn parquet_schema(cfg: &SynthConfig) -> Schema {
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "tokens",
            DataType::List(Arc::new(Field::new("item", DataType::Int32, false))),
            false,
        ),
        Field::new("text", DataType::Utf8, false),
    ];
    if cfg.blob_bytes > 0 {
        fields.push(Field::new("blob", DataType::Binary, false));
    }
    Schema::new(fields)
}

fn parquet_batch(cfg: &SynthConfig, ids: std::ops::Range<u64>) -> Result<RecordBatch> {
    let schema = Arc::new(parquet_schema(cfg));
    let mut tokens = ListBuilder::new(Int32Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Int32,
        false,
    )));
    for id in ids.clone() {
        tokens.values().append_slice(&expected_tokens(cfg, id));
        tokens.append(true);
    }
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ids.clone().map(|i| i as i64))),
        Arc::new(tokens.finish()),
        Arc::new(StringArray::from_iter_values(
            ids.clone().map(expected_text),
        )),
    ];
    if cfg.blob_bytes > 0 {
        let blobs: Vec<Vec<u8>> = ids.map(|i| expected_blob(cfg, i)).collect();
        cols.push(Arc::new(BinaryArray::from_iter_values(blobs.iter())));
    }
    RecordBatch::try_new(schema, cols).map_err(|e| Error::Config(format!("synth batch: {e}")))
}

fn parquet_shard(cfg: &SynthConfig, ids: std::ops::Range<u64>, shard: u64) -> Result<Vec<u8>> {
    let mut props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(usize::MAX))
        .set_created_by("shardstream synth".into());
    props = if cfg.parquet_plain {
        props
            .set_compression(PqCompression::UNCOMPRESSED)
            .set_dictionary_enabled(false)
            .set_encoding(Encoding::PLAIN)
    } else {
        props.set_compression(PqCompression::ZSTD(ZstdLevel::try_new(1).expect("level")))
    };
    let codec = |e: parquet::errors::ParquetError| Error::Config(format!("synth parquet: {e}"));
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, Arc::new(parquet_schema(cfg)), Some(props.build()))
        .map_err(codec)?;
    let mean = u64::from(cfg.row_group_rows.max(1));
    let mut start = ids.start;
    let mut k = 0u64;
    while start < ids.end {
        let len = if cfg.uneven {
            mean / 2 + mix(cfg.seed ^ (shard << 32) ^ k) % (mean + 1)
        } else {
            mean
        }
        .max(1);
        let end = (start + len).min(ids.end);
        w.write(&parquet_batch(cfg, start..end)?).map_err(codec)?;
        w.flush().map_err(codec)?; // ends the row group here: uneven row groups on purpose
        start = end;
        k += 1;
    }
    w.close().map_err(codec)?;
    Ok(out)
}

fn sample_json(cfg: &SynthConfig, id: u64, with_tokens: bool) -> String {
    let mut v = serde_json::json!({ "id": id, "text": expected_text(id) });
    if with_tokens {
        v["tokens"] = serde_json::json!(expected_tokens(cfg, id));
    }
    v.to_string()
}

fn tar_shard(cfg: &SynthConfig, ids: std::ops::Range<u64>) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: String, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, data)
            .map_err(|e| Error::Config(format!("synth tar: {e}")))
    };
    for id in ids {
        let key = format!("{id:09}");
        add(
            format!("{key}.json"),
            sample_json(cfg, id, false).as_bytes(),
        )?;
        let tokens: Vec<u8> = expected_tokens(cfg, id)
            .iter()
            .flat_map(|t| t.to_le_bytes())
            .collect();
        add(format!("{key}.tokens"), &tokens)?;
        if cfg.blob_bytes > 0 {
            add(format!("{key}.blob"), &expected_blob(cfg, id))?;
        }
    }
    b.into_inner()
        .map_err(|e| Error::Config(format!("synth tar: {e}")))
}

fn jsonl_shard(cfg: &SynthConfig, ids: std::ops::Range<u64>) -> Vec<u8> {
    let mut out = String::new();
    for id in ids {
        out.push_str(&sample_json(cfg, id, true));
        out.push('\n');
    }
    out.into_bytes()
}

fn compress(c: Compression, data: Vec<u8>) -> Result<Vec<u8>> {
    match c {
        Compression::None => Ok(data),
        Compression::Zstd => {
            zstd::encode_all(&data[..], 3).map_err(|e| Error::Config(format!("zstd: {e}")))
        }
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&data)
                .and_then(|()| enc.finish())
                .map_err(|e| Error::Config(format!("gzip: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_sizes_are_uneven_and_exact() {
        let cfg = SynthConfig {
            samples: 10_007,
            shards: 13,
            ..SynthConfig::default()
        };
        let s = shard_sizes(&cfg);
        assert_eq!(s.iter().sum::<u64>(), 10_007);
        assert!(s.iter().max() > s.iter().min());
    }

    #[test]
    fn contents_are_a_function_of_id() {
        let cfg = SynthConfig::default();
        assert_eq!(expected_tokens(&cfg, 5), expected_tokens(&cfg, 5));
        let l = expected_tokens(&cfg, 5).len() as u32;
        assert!((cfg.tokens_min..=cfg.tokens_max).contains(&l));
    }
}
