//! The PLAIN fast path on Parquet files from other writers (apache/parquet-testing in
//! `../shared/testdata`): every column that qualifies is decoded by the fast path — from its
//! ranges whole and cut into tiny chunks, as an HTTP body arrives — and by arrow-rs's reader,
//! and every row is gathered from both; the batches must be identical, and wherever arrow-rs
//! decodes a column the fast path must too (by itself or by declining to it). This is what
//! checks the fast path's own page-header reader against headers written by parquet-mr,
//! parquet-cpp, arrow-rs and others (statistics, checksums, V1 and V2 pages).

mod common;

use bytes::Bytes;
use common::{bytes_of, every_row, row_group_parts};
use shardstream_loader::collate::{pageable_pool, Collator};
use shardstream_loader::config::{BinaryMode, ColumnMode, ListMode};
use shardstream_loader::decode::parquet::{decode_row_group, parse_tail, ShardFooter, Tail};
use shardstream_loader::decode::{DecodedUnit, UnitColumn};
use shardstream_loader::Result;

fn parquet_files() -> Vec<std::path::PathBuf> {
    let dir = shardstream_tests::testdata::root().join("parquet-testing/data");
    let mut out = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every row group of `file`, its fetched ranges cut into `cut`-byte chunks (0: whole).
fn decode(file: &Bytes, footer: &ShardFooter, cut: usize, name: &str) -> Result<Vec<DecodedUnit>> {
    (0..footer.num_row_groups())
        .map(|rg| {
            let parts = row_group_parts(file, footer, rg, cut);
            let rows = footer.row_group_rows(rg);
            decode_row_group(footer, rg, parts, file.len() as u64, name, rows)
        })
        .collect()
}

/// Every row of `units`, gathered in `mode` (or the error the collator gives).
fn gather(
    footer: &ShardFooter,
    units: &[DecodedUnit],
    mode: ColumnMode,
) -> std::result::Result<Vec<Vec<u8>>, String> {
    let all = every_row(units);
    let refs: Vec<&DecodedUnit> = units.iter().collect();
    let c = Collator::new(footer.schema(), |_| mode, pageable_pool());
    let mut out = Vec::new();
    for batch in all.chunks(100) {
        out.extend(bytes_of(
            &c.collate(&refs, batch).map_err(|e| e.to_string())?,
        ));
    }
    Ok(out)
}

#[test]
fn fast_path_matches_arrow_rs_on_files_from_other_writers() {
    let (mut checked, mut row_groups, mut in_place) = (Vec::new(), 0, 0);
    for path in parquet_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let file = Bytes::from(std::fs::read(&path).unwrap());
        let Ok(Tail::Complete(meta)) = parse_tail(&file, file.len() as u64, &name) else {
            continue; // unreadable footers are the indexer's tests' business
        };
        let columns: Vec<String> = meta
            .file_metadata()
            .schema_descr()
            .root_schema()
            .get_fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for column in columns {
            let one = std::slice::from_ref(&column);
            let Ok(fast) = ShardFooter::new((*meta).clone(), one, true, &name) else {
                continue;
            };
            if fast.fast_path_columns() == 0 {
                continue;
            }
            let slow = ShardFooter::new((*meta).clone(), one, false, &name).unwrap();
            let Ok(want) = decode(&file, &slow, 0, &name) else {
                continue; // arrow-rs cannot decode it either
            };
            for cut in [0, 7, 1000] {
                let got = decode(&file, &fast, cut, &name)
                    .unwrap_or_else(|e| panic!("{name} column {column}, cut {cut}: {e}"));
                for binary in [BinaryMode::Ragged, BinaryMode::Bytes] {
                    let mode = ColumnMode {
                        list: ListMode::Ragged,
                        binary,
                    };
                    assert_eq!(
                        gather(&fast, &got, mode),
                        gather(&slow, &want, mode),
                        "{name} column {column}, cut {cut}, {binary:?}"
                    );
                }
            }
            row_groups += want.len();
            // Decoded by the fast path itself (not declined), from an uncompressed chunk: the
            // page-header reader and the in-place page walk ran.
            let uncompressed = meta.row_groups().iter().all(|rg| {
                rg.columns()
                    .iter()
                    .all(|c| c.compression() == parquet::basic::Compression::UNCOMPRESSED)
            });
            let got = decode(&file, &fast, 7, &name).unwrap();
            if uncompressed
                && got
                    .iter()
                    .all(|u| matches!(u.columns[0], UnitColumn::Plain(_)))
            {
                in_place += 1;
            }
            checked.push(format!("{name}:{column}"));
        }
    }
    eprintln!(
        "{} columns ({row_groups} row groups) checked, {in_place} read in place: {checked:?}",
        checked.len()
    );
    assert!(checked.len() >= 100, "too few columns qualify: {checked:?}");
    assert!(in_place >= 20, "only {in_place} columns were read in place");
}
