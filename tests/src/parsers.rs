//! Every parser that reads untrusted bytes, behind one signature: `fn(&[u8]) -> Outcome`.
//!
//! Shared by the malformed-input tests (`tests/tests/bad_input.rs`), the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*`) and the stable-Rust mutation fuzzer (`fuzz-parsers`). Each entry
//! point feeds the bytes to the real parser — shard-index's streaming scanners (which the
//! indexer runs over every object), the loader's decoders (which every batch goes through),
//! the manifest reader and the resume-state parser — and reports whether they accepted it or
//! returned a typed error. A panic is a bug: callers wrap these in `catch_unwind` (the fuzzers
//! rely on the panic itself).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use shard_index::scan::decompress::Pipeline;
use shard_index::scan::jsonl::JsonlScanner;
use shard_index::scan::tar::TarScanner;
use shard_index::Compression;

/// What a parser made of an input.
#[derive(Debug)]
pub enum Outcome {
    Accepted,
    /// A typed error, as text (its `Display`).
    Rejected(String),
}

impl Outcome {
    fn of<T, E: std::fmt::Display>(r: Result<T, E>) -> Outcome {
        match r {
            Ok(_) => Outcome::Accepted,
            Err(e) => Outcome::Rejected(e.to_string()),
        }
    }

    fn and(self, other: impl FnOnce() -> Outcome) -> Outcome {
        match self {
            Outcome::Accepted => other(),
            r => r,
        }
    }

    pub fn is_rejected(&self) -> bool {
        matches!(self, Outcome::Rejected(_))
    }
}

/// A parser under test: bytes in, what it made of them out.
pub type Parser = fn(&[u8]) -> Outcome;

/// The parsers by name (the fuzz targets and corpus directories use these names).
pub const PARSERS: [(&str, Parser); 4] = [
    ("manifest", manifest),
    ("tar", tar),
    ("jsonl", jsonl),
    ("resume_state", resume_state),
];

/// The parser called `name`.
pub fn by_name(name: &str) -> Option<Parser> {
    PARSERS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// A manifest file (Parquet with our key-value metadata).
pub fn manifest(data: &[u8]) -> Outcome {
    Outcome::of(shard_index::Manifest::from_parquet_bytes(
        Bytes::copy_from_slice(data),
        "fuzz.manifest.parquet",
    ))
}

/// A WebDataset tar: shard-index's streaming scanner (fed in uneven chunks, plain and as the
/// payload of the zstd stage), then the loader's decoder.
pub fn tar(data: &[u8]) -> Outcome {
    scan(data, || Box::new(TarScanner::new("fuzz.tar"))).and(|| {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("__key__", DataType::Utf8, false),
            Field::new("tokens", DataType::Binary, true),
            Field::new("json", DataType::Binary, true),
        ]));
        Outcome::of(shardstream_loader::decode::tar::decode(
            data,
            &schema,
            "fuzz.tar",
            expected_rows(data),
        ))
    })
}

/// JSON lines: the scanner, then the loader's Arrow decoder.
pub fn jsonl(data: &[u8]) -> Outcome {
    scan(data, || Box::new(JsonlScanner::new("fuzz.jsonl"))).and(|| {
        let item = Arc::new(Field::new("item", DataType::Int32, true));
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("text", DataType::Utf8, true),
            Field::new("tokens", DataType::List(item), true),
        ]));
        Outcome::of(shardstream_loader::decode::jsonl::decode(
            data,
            &schema,
            "fuzz.jsonl",
            expected_rows(data),
        ))
    })
}

/// The small plan the resume-state parser resumes: its inputs.
fn plan_inputs() -> (
    Vec<shard_index::plan::StreamSpec>,
    shard_index::plan::PlanOptions,
) {
    use shard_index::plan::{Mix, PlanOptions, StreamSpec, Window};
    let specs = vec![StreamSpec {
        name: "stream-0".into(),
        fingerprint: "fuzz".into(),
        shard_samples: vec![10, 7, 13, 1],
        shard_bytes: vec![1000, 700, 1300, 100],
        mix: Mix::Repeat(1.0),
    }];
    let options = PlanOptions {
        seed: 1,
        shuffle: true,
        window: Window::Samples(8),
        warmup: 2,
        global_batch_size: 4,
        drop_last: false,
        canonical_nodes: None,
        epoch_size: None,
    };
    (specs, options)
}

/// A valid resume state of the plan [`resume_state`] resumes (a fuzzing seed).
pub fn sample_resume_state(batches: u64) -> String {
    let (specs, options) = plan_inputs();
    let topology = shard_index::plan::Topology::new(1, 1, 1);
    let plan = shard_index::plan::EpochPlan::with_topology(specs, options, 1, topology)
        .expect("a valid plan");
    plan.state_after(batches)
        .and_then(|s| s.to_json())
        .expect("a valid state")
}

/// A resume state (JSON), then resuming a small plan from it.
pub fn resume_state(data: &[u8]) -> Outcome {
    use shard_index::plan::{EpochPlan, ResumeState};
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::Rejected("not UTF-8".into());
    };
    let state = match ResumeState::from_json(text) {
        Ok(s) => s,
        Err(e) => return Outcome::Rejected(e.to_string()),
    };
    // Whatever the state says, resuming must validate it against the plan's inputs.
    let (specs, options) = plan_inputs();
    Outcome::of(EpochPlan::resume(specs, options, &state).and_then(|plan| {
        let topology = shard_index::plan::Topology::new(1, 1, 1);
        let rank = plan.rank(topology, 0)?;
        // Walk a few batches: a state that resumes must also plan.
        for k in 0..rank.num_batches().min(8) {
            rank.batch(k)?;
        }
        Ok(())
    }))
}

/// Feeds `data` to a fresh scanner in chunks of 1, 7, 512 and 4096 bytes (plain), then
/// zstd-compressed through the decompressing stage.
fn scan(data: &[u8], scanner: impl Fn() -> Box<dyn shard_index::scan::ShardScanner>) -> Outcome {
    let mut outcome = None;
    for chunk in [4096usize, 512, 7, 1] {
        if chunk == 1 && data.len() > 4096 {
            continue;
        }
        let mut p = Pipeline::new("fuzz", Compression::None, scanner());
        let r = data
            .chunks(chunk)
            .try_for_each(|c| p.feed(c))
            .and_then(|()| p.finish());
        let this = Outcome::of(r.map(|_| ()));
        // Chunking must not change the verdict.
        match (&outcome, &this) {
            (None, _) => outcome = Some(this),
            (Some(a), b) if a.is_rejected() != b.is_rejected() => {
                panic!("the scanner's verdict depends on chunking: {a:?} vs {b:?} ({chunk}-byte chunks)")
            }
            _ => {}
        }
    }
    if let Ok(z) = zstd::encode_all(data, 1) {
        let mut p = Pipeline::new("fuzz.zst", Compression::Zstd, scanner());
        let r = z
            .chunks(333)
            .try_for_each(|c| p.feed(c))
            .and_then(|()| p.finish());
        let this = Outcome::of(r.map(|_| ()));
        let plain = outcome.as_ref().expect("ran");
        if plain.is_rejected() != this.is_rejected() {
            panic!("zstd changes the scanner's verdict: {plain:?} vs {this:?}");
        }
    }
    outcome.expect("ran")
}

/// A row count for the decoders: they check it against what they find, so any number works;
/// derive one from the input so both the matching and mismatching paths get exercised.
fn expected_rows(data: &[u8]) -> u64 {
    data.first().map_or(0, |b| u64::from(b % 8))
}
