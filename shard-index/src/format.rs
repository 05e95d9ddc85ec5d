//! Shard formats and how an object's name maps to one.
//!
//! A shard is one object holding many samples: a Parquet file (one sample per row), a
//! WebDataset tar (one sample per group of consecutive members sharing a key) or a JSONL file
//! (one sample per non-empty line). Tar and JSONL may be compressed as a whole (zstd, gzip).
//! Parquet compresses its pages itself, so a "parquet.zst" is not a thing we accept.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The container format of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardFormat {
    Parquet,
    Tar,
    Jsonl,
}

/// Whole-object compression wrapped around a tar or JSONL shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Zstd,
    Gzip,
}

/// Format and compression together, as stored in the manifest's `format` column
/// (`parquet`, `tar`, `tar.zst`, `tar.gz`, `jsonl`, `jsonl.zst`, `jsonl.gz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardKind {
    pub format: ShardFormat,
    pub compression: Compression,
}

/// What `--format` asks for: detect from the name, or force one container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatChoice {
    #[default]
    Auto,
    Only(ShardFormat),
}

impl ShardKind {
    pub const fn new(format: ShardFormat, compression: Compression) -> Self {
        Self {
            format,
            compression,
        }
    }

    /// Guesses the kind from an object name; `None` for names that are not shards.
    pub fn from_name(name: &str) -> Option<Self> {
        let base = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
        let (stem, compression) = if let Some(s) = base.strip_suffix(".zst") {
            (s.to_string(), Compression::Zstd)
        } else if let Some(s) = base.strip_suffix(".zstd") {
            (s.to_string(), Compression::Zstd)
        } else if let Some(s) = base.strip_suffix(".gz") {
            (s.to_string(), Compression::Gzip)
        } else if let Some(s) = base.strip_suffix(".tgz") {
            (format!("{s}.tar"), Compression::Gzip)
        } else {
            (base, Compression::None)
        };
        let format = if stem.ends_with(".parquet") || stem.ends_with(".pq") {
            ShardFormat::Parquet
        } else if stem.ends_with(".tar") {
            ShardFormat::Tar
        } else if stem.ends_with(".jsonl") || stem.ends_with(".ndjson") {
            ShardFormat::Jsonl
        } else {
            return None;
        };
        if format == ShardFormat::Parquet && compression != Compression::None {
            return None;
        }
        Some(Self::new(format, compression))
    }

    /// The kind of `name` under a `--format` choice. A forced format still honours a
    /// compression suffix, so `--format jsonl` accepts `part-0.json.zst`.
    pub fn resolve(name: &str, choice: FormatChoice) -> Option<Self> {
        match choice {
            FormatChoice::Auto => Self::from_name(name),
            FormatChoice::Only(format) => {
                let detected = Self::from_name(name);
                if let Some(kind) = detected {
                    return (kind.format == format).then_some(kind);
                }
                let lower = name.to_ascii_lowercase();
                let compression = if lower.ends_with(".zst") || lower.ends_with(".zstd") {
                    Compression::Zstd
                } else if lower.ends_with(".gz") {
                    Compression::Gzip
                } else {
                    Compression::None
                };
                Some(Self::new(format, compression))
            }
        }
    }
}

/// Objects that are never shards: job markers, checksums, hidden and temporary files.
pub fn is_ignored_name(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.is_empty()
        || base.starts_with('.')
        || base.starts_with('_')
        || base.ends_with(".crc")
        || base.ends_with(".tmp")
        || path
            .split('/')
            .any(|part| part.starts_with('.') || part.starts_with('_'))
}

impl fmt::Display for ShardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = match self.format {
            ShardFormat::Parquet => "parquet",
            ShardFormat::Tar => "tar",
            ShardFormat::Jsonl => "jsonl",
        };
        match self.compression {
            Compression::None => f.write_str(format),
            Compression::Zstd => write!(f, "{format}.zst"),
            Compression::Gzip => write!(f, "{format}.gz"),
        }
    }
}

impl FromStr for ShardKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (format, compression) = match s.split_once('.') {
            Some((f, "zst")) => (f, Compression::Zstd),
            Some((f, "gz")) => (f, Compression::Gzip),
            None => (s, Compression::None),
            Some(_) => return Err(format!("unknown shard kind {s:?}")),
        };
        let format = ShardFormat::from_str(format)?;
        if format == ShardFormat::Parquet && compression != Compression::None {
            return Err(format!("unknown shard kind {s:?}"));
        }
        Ok(Self::new(format, compression))
    }
}

impl FromStr for ShardFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "parquet" => Ok(ShardFormat::Parquet),
            "tar" => Ok(ShardFormat::Tar),
            "jsonl" => Ok(ShardFormat::Jsonl),
            other => Err(format!(
                "unknown format {other:?}: expected parquet, tar or jsonl"
            )),
        }
    }
}

impl FromStr for FormatChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(FormatChoice::Auto),
            other => ShardFormat::from_str(other).map(FormatChoice::Only),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_kinds() {
        let cases = [
            ("a/b/part-0.parquet", Some("parquet")),
            ("x.tar", Some("tar")),
            ("x.tar.zst", Some("tar.zst")),
            ("x.tgz", Some("tar.gz")),
            ("x.jsonl.zst", Some("jsonl.zst")),
            ("x.ndjson", Some("jsonl")),
            ("x.parquet.zst", None),
            ("_SUCCESS", None),
            ("x.csv", None),
        ];
        for (name, want) in cases {
            let got = ShardKind::from_name(name).map(|k| k.to_string());
            assert_eq!(got.as_deref(), want, "{name}");
        }
    }

    #[test]
    fn kind_round_trips_through_text() {
        for s in ["parquet", "tar", "tar.zst", "tar.gz", "jsonl", "jsonl.zst"] {
            assert_eq!(s.parse::<ShardKind>().unwrap().to_string(), s);
        }
        assert!("parquet.zst".parse::<ShardKind>().is_err());
    }

    #[test]
    fn markers_and_hidden_files_are_ignored() {
        assert!(is_ignored_name("data/_SUCCESS"));
        assert!(is_ignored_name("data/.part-0.parquet.crc"));
        assert!(is_ignored_name("data/part-0.parquet.crc"));
        assert!(is_ignored_name("data/_temporary/0/part-0.parquet"));
        assert!(!is_ignored_name("data/part-0.parquet"));
    }

    #[test]
    fn forced_format_accepts_odd_names() {
        let k = ShardKind::resolve("part-0.json.zst", FormatChoice::Only(ShardFormat::Jsonl));
        assert_eq!(k.unwrap().to_string(), "jsonl.zst");
        let k = ShardKind::resolve("x.parquet", FormatChoice::Only(ShardFormat::Tar));
        assert!(k.is_none());
    }
}
