//! Malformed input to every parser of untrusted bytes (`shardstream_tests::parsers`): the
//! manifest reader, the tar and JSONL scanners and decoders, the resume-state parser. Each must
//! answer with a typed error — never a panic, never a hang.
//!
//! Inputs: the corpus in `tests/corpus/<parser>/` (hand-made malformed files, also the fuzzers'
//! seeds), and inputs derived here from valid files: every truncation point of a small one,
//! and seeded bit flips and byte overwrites.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use shardstream_tests::parsers::{self, Outcome, PARSERS};
use shardstream_tests::reliability::synth_config;

/// Runs `parse` on `input` on a thread: `Err` on a panic or when it takes over 10 s.
fn run(parse: fn(&[u8]) -> Outcome, input: Vec<u8>) -> Result<Outcome, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| parse(&input)));
        let _ = tx.send(r.map_err(|p| {
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        }));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(panic)) => Err(format!("panicked: {panic}")),
        Err(_) => Err("hung".into()),
    }
}

fn corpus(parser: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(parser);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_is_a_typed_error() {
    let mut failures = Vec::new();
    let mut n = 0;
    for (name, parse) in PARSERS {
        for file in corpus(name) {
            n += 1;
            let input = std::fs::read(&file).unwrap();
            match run(parse, input) {
                Ok(Outcome::Rejected(msg)) => assert!(!msg.is_empty()),
                Ok(Outcome::Accepted) => failures.push(format!("{}: accepted", file.display())),
                Err(e) => failures.push(format!("{}: {e}", file.display())),
            }
        }
    }
    assert!(n >= 30, "the corpus has {n} files");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Valid inputs of each parser, generated.
fn valid(parser: &str) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    if parser == "resume_state" {
        return (0..4)
            .map(|k| parsers::sample_resume_state(k).into_bytes())
            .collect();
    }
    let kind = if parser == "tar" { "tar" } else { "jsonl" };
    let data = dir.path().join("d");
    shard_index::synth::generate(&data, &synth_config(kind, 6, 2)).unwrap();
    if parser == "manifest" {
        let (m, _) = shard_index::runtime::block_on(shard_index::build(
            &[data.to_string_lossy().into_owned()],
            &shard_index::IndexOptions::default(),
            &shard_index::Silent,
        ))
        .unwrap()
        .unwrap();
        let out = dir.path().join("m.parquet");
        m.write_to(&out.to_string_lossy(), &Default::default())
            .unwrap();
        return vec![std::fs::read(out).unwrap()];
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn valid_inputs_are_accepted_by_the_scanners() {
    // The decoders check the row count they are given, so only the manifest and resume-state
    // parsers must accept outright; the others must at least not fail.
    for (name, parse) in PARSERS {
        for input in valid(name) {
            let o = run(parse, input).unwrap_or_else(|e| panic!("{name}: {e}"));
            if name == "manifest" || name == "resume_state" {
                assert!(!o.is_rejected(), "{name}: {o:?}");
            }
        }
    }
}

#[test]
fn truncations_and_corruptions_never_panic_or_hang() {
    let mut failures = Vec::new();
    let mut rejected_truncations = 0;
    for (name, parse) in PARSERS {
        let inputs = valid(name);
        let v = &inputs[0];
        // Truncations: every point of a small input, a spread of points of a larger one.
        let step = (v.len() / 200).max(1);
        for cut in (0..v.len()).step_by(step) {
            match run(parse, v[..cut].to_vec()) {
                Ok(o) => rejected_truncations += u32::from(o.is_rejected()),
                Err(e) => failures.push(format!("{name} cut at {cut}: {e}")),
            }
        }
        // Seeded corruptions.
        let mut x = 0x5eed_u64;
        for i in 0..300 {
            x = shard_index::synth::mix(x);
            let mut m = v.clone();
            if m.is_empty() {
                continue;
            }
            let at = (x as usize) % m.len();
            if i % 2 == 0 {
                m[at] ^= 1 << ((x >> 32) % 8);
            } else {
                let end = (at + 1 + (x >> 40) as usize % 16).min(m.len());
                m[at..end].fill([0u8, 0xff, b'9', b'"'][(x >> 20) as usize % 4]);
            }
            if let Err(e) = run(parse, m) {
                failures.push(format!("{name} corruption {i} at {at}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(rejected_truncations > 100, "{rejected_truncations}");
}

#[test]
fn resume_states_with_impossible_values_are_typed_errors() {
    let good: serde_json::Value = serde_json::from_str(&parsers::sample_resume_state(2)).unwrap();
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("version", serde_json::json!(999)),
        ("version", serde_json::json!(-1)),
        ("canonical_nodes", serde_json::json!(0)),
        ("canonical_nodes", serde_json::json!(u32::MAX)),
        ("streams", serde_json::json!([])),
        ("seed", serde_json::json!("seven")),
        ("epoch", serde_json::json!(1.5)),
        ("window", serde_json::json!({"samples": 0})),
    ];
    let mut failures = Vec::new();
    for (field, value) in cases {
        let mut v = good.clone();
        v[field] = value.clone();
        let input = serde_json::to_vec(&v).unwrap();
        match run(parsers::resume_state, input) {
            Ok(Outcome::Rejected(_)) => {}
            Ok(Outcome::Accepted) => failures.push(format!("{field}={value}: accepted")),
            Err(e) => failures.push(format!("{field}={value}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Accepted by design, but must neither panic nor hang: the state's `global_batch_size` is
    // informational (a resume may change it), and a consumed count past the end of the epoch
    // leaves nothing to deliver. (Rejecting the latter as InvalidState would be stricter.)
    for (field, value) in [
        ("samples_consumed", serde_json::json!(u64::MAX)),
        ("global_batch_size", serde_json::json!(0)),
        ("global_batch_size", serde_json::json!(u64::MAX)),
    ] {
        let mut v = good.clone();
        v[field] = value.clone();
        let input = serde_json::to_vec(&v).unwrap();
        if let Err(e) = run(parsers::resume_state, input) {
            panic!("{field}={value}: {e}");
        }
    }
}
