//! Shared helpers: generate and index datasets, read them through the loader, and check every
//! delivered sample against the generator's known contents.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, AsArray};
use bytes::Bytes;
use shard_index::synth::{self, SynthConfig};
use shard_index::{IndexOptions, Manifest, ShardKind, Silent, StorageOptions};
use shardstream_loader::collate::{Batch, Column};
use shardstream_loader::config::LoaderConfig;
use shardstream_loader::decode::parquet::ShardFooter;
use shardstream_loader::decode::DecodedUnit;
use shardstream_loader::engine::Loader;

/// A small dataset: uneven shards, uneven row groups of ~`rg` rows.
pub fn synth(kind: &str, samples: u64, shards: u32, rg: u32) -> SynthConfig {
    SynthConfig {
        kind: kind.parse::<ShardKind>().unwrap(),
        samples,
        shards,
        tokens_min: 1,
        tokens_max: 24,
        row_group_rows: rg,
        ..SynthConfig::default()
    }
}

/// Generates `cfg` under `dir/data` and indexes it.
pub fn dataset(dir: &Path, cfg: &SynthConfig) -> Manifest {
    let data = dir.join("data");
    synth::generate(&data, cfg).unwrap();
    index(&data.to_string_lossy(), &StorageOptions::new())
}

/// Indexes a location.
pub fn index(location: &str, storage_options: &StorageOptions) -> Manifest {
    let opts = IndexOptions {
        storage_options: storage_options.clone(),
        ..IndexOptions::default()
    };
    let (m, _) =
        shard_index::runtime::block_on(shard_index::build(&[location.to_string()], &opts, &Silent))
            .unwrap()
            .unwrap();
    m
}

/// What one delivered row was: (stream, global id, padded).
pub type Row = (u32, u64, bool);

/// Reads a whole epoch, checking every row's contents; returns the rows batch by batch.
pub fn read_epoch(loader: &mut Loader, cfg: &SynthConfig) -> Vec<(u64, Vec<Row>)> {
    let mut out = Vec::new();
    let expected = loader.len();
    for batch in loader.iter() {
        let batch = batch.unwrap();
        check_batch(&batch, |_| cfg);
        out.push((batch.index, rows(&batch)));
    }
    assert_eq!(
        out.len() as u64,
        expected,
        "len() matches what the iterator yields"
    );
    out
}

pub fn rows(batch: &Batch) -> Vec<Row> {
    batch
        .samples
        .iter()
        .zip(&batch.padded)
        .map(|(s, &p)| (s.stream, s.global, p))
        .collect()
}

/// Checks every row of `batch` against the generator (`cfg_of(stream)` gives its config).
pub fn check_batch<'a>(batch: &Batch, cfg_of: impl Fn(u32) -> &'a SynthConfig) {
    let n = batch.len();
    assert_eq!(batch.padded.len(), n);
    for (name, col) in &batch.columns {
        for i in 0..n {
            let s = batch.samples[i];
            let cfg = cfg_of(s.stream);
            let id = s.global;
            match (name.as_str(), col) {
                ("id", Column::Tensor(t)) => {
                    assert_eq!(t.shape(), &[n]);
                    assert_eq!(t.as_slice::<i64>().unwrap()[i] as u64, id, "id of row {i}");
                }
                ("tokens", Column::Padded { values, lengths }) => {
                    let want = synth::expected_tokens(cfg, id);
                    let lmax = values.shape()[1];
                    let len = lengths.as_slice::<i64>().unwrap()[i] as usize;
                    assert_eq!(len, want.len(), "token count of {id}");
                    let got: Vec<i64> = match values.dtype() {
                        shardstream_loader::collate::DType::I32 => {
                            values.as_slice::<i32>().unwrap()[i * lmax..i * lmax + lmax]
                                .iter()
                                .map(|&v| i64::from(v))
                                .collect()
                        }
                        _ => values.as_slice::<i64>().unwrap()[i * lmax..i * lmax + lmax].to_vec(),
                    };
                    let want: Vec<i64> = want.iter().map(|&v| i64::from(v)).collect();
                    assert_eq!(&got[..len], &want[..], "tokens of {id}");
                    assert!(got[len..].iter().all(|&v| v == 0), "padding of {id}");
                }
                ("tokens", Column::Ragged { values, offsets }) => {
                    let offs = offsets.as_slice::<i64>().unwrap();
                    let (a, b) = (offs[i] as usize, offs[i + 1] as usize);
                    let got: Vec<i32> = values.as_slice::<i32>().unwrap()[a..b].to_vec();
                    assert_eq!(got, synth::expected_tokens(cfg, id), "tokens of {id}");
                }
                ("text", Column::Arrow(a)) => {
                    assert_eq!(a.as_string::<i32>().value(i), synth::expected_text(id));
                }
                ("__key__", Column::Arrow(a)) => {
                    assert_eq!(a.as_string::<i32>().value(i), format!("{id:09}"));
                }
                ("json", Column::Arrow(a)) => {
                    let v: serde_json::Value =
                        serde_json::from_slice(a.as_binary::<i32>().value(i)).unwrap();
                    assert_eq!(v["id"], id);
                    assert_eq!(v["text"], synth::expected_text(id));
                }
                ("tokens", Column::Arrow(a)) => {
                    let bytes = a.as_binary::<i32>();
                    assert!(!bytes.is_null(i));
                    let got: Vec<i32> = bytes
                        .value(i)
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    assert_eq!(got, synth::expected_tokens(cfg, id), "tokens of {id}");
                }
                (name, col) => panic!("unexpected column {name}: {col:?}"),
            }
        }
    }
}

/// Asserts every sample `0..n` of stream `stream` appears exactly once unpadded, and that
/// padded rows only repeat real samples.
pub fn assert_exactly_once(rows: impl IntoIterator<Item = Row>, stream: u32, n: u64) {
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    let mut padded = Vec::new();
    for (s, g, p) in rows {
        if s != stream {
            continue;
        }
        if p {
            padded.push(g);
        } else {
            *counts.entry(g).or_default() += 1;
        }
    }
    assert_eq!(counts.len() as u64, n, "distinct samples delivered");
    assert!(
        counts.values().all(|&c| c == 1),
        "a sample was delivered twice"
    );
    assert_eq!(*counts.keys().last().unwrap(), n - 1);
    assert!(padded.iter().all(|g| *g < n));
}

/// A loader config over an in-memory manifest with small, test-friendly defaults.
pub fn config(manifest: &Manifest, batch_size: u64) -> LoaderConfig {
    LoaderConfig::from_manifest(manifest.clone(), batch_size)
        .with_window(shardstream_loader::config::Window::Samples(300))
        .with_prefetch_bytes(8 << 20)
        .with_seed(7)
}

/// The fetched parts of row group `rg` of `file`: its ranges, each cut into `cut`-byte chunks
/// as an HTTP body arrives (0: each range whole), at their file offsets.
pub fn row_group_parts(
    file: &Bytes,
    footer: &ShardFooter,
    rg: usize,
    cut: usize,
) -> Vec<(u64, Bytes)> {
    let step = if cut == 0 { usize::MAX } else { cut };
    footer
        .ranges(rg)
        .iter()
        .flat_map(|r| {
            let end = r.end as usize;
            (r.start as usize..end)
                .step_by(step)
                .map(move |at| (at, at.saturating_add(step).min(end)))
        })
        .map(|(at, end)| (at as u64, file.slice(at..end)))
        .collect()
}

/// Every `(unit, row)` of `units`, in order: the picks that gather all of them.
pub fn every_row(units: &[DecodedUnit]) -> Vec<(usize, usize)> {
    units
        .iter()
        .enumerate()
        .flat_map(|(u, unit)| (0..unit.num_rows()).map(move |r| (u, r)))
        .collect()
}

/// A batch's columns as bytes, for comparing two batches.
pub fn bytes_of(cols: &[(String, Column)]) -> Vec<Vec<u8>> {
    cols.iter()
        .flat_map(|(_, c)| match c {
            Column::Tensor(t) => vec![t.as_bytes().to_vec()],
            Column::Padded { values, lengths } => {
                vec![values.as_bytes().to_vec(), lengths.as_bytes().to_vec()]
            }
            Column::Ragged { values, offsets } => {
                vec![values.as_bytes().to_vec(), offsets.as_bytes().to_vec()]
            }
            Column::Arrow(a) => vec![format!("{a:?}").into_bytes()],
        })
        .collect()
}
