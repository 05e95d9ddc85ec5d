//! WebDataset tar → Arrow.
//!
//! The whole (decompressed) shard is in memory, so this is a slice walk over 512-byte headers,
//! not a streaming state machine like the indexer's scanner. Grouping follows WebDataset and
//! the indexer exactly (the sample counts must agree): regular files only; a member's key is
//! its path up to the first `.` of its file name and the rest is the field; consecutive members
//! with one key form a sample; top-level `__name__` members are skipped; GNU long names and pax
//! `path` records are honoured.
//!
//! Output: the projected schema's columns — `__key__` (Utf8) and one Binary column per field,
//! null where a sample lacks that field. Each field's bytes are copied once, from the tar
//! buffer into the column's values buffer.

use arrow::array::{ArrayRef, BinaryBuilder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, SchemaRef};
use std::ops::Range;
use std::sync::Arc;

use shard_index::scan::tar::{header_name, parse_size, pax_path, split_key, verify_checksum};

use super::{check_rows, error};
use crate::Result;

const BLOCK: usize = 512;

/// Where one field of one sample lies in the buffer.
type Member = Range<usize>;

/// Decodes a tar held in `data` into `schema`'s columns; `expected_rows` is the manifest's count.
pub fn decode(
    data: &[u8],
    schema: &SchemaRef,
    url: &str,
    expected_rows: u64,
) -> Result<RecordBatch> {
    let wanted: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for f in schema.fields() {
        let ok = if f.name() == "__key__" {
            matches!(f.data_type(), DataType::Utf8)
        } else {
            matches!(f.data_type(), DataType::Binary)
        };
        if !ok {
            return Err(error(
                url,
                format!(
                    "tar field {:?} must be Utf8 (__key__) or Binary, the schema says {}",
                    f.name(),
                    f.data_type()
                ),
            ));
        }
    }
    let samples = walk(data, url, &wanted)?;
    check_rows(url, samples.keys.len(), expected_rows)?;
    let n = samples.keys.len();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(wanted.len());
    for (i, name) in wanted.iter().enumerate() {
        if *name == "__key__" {
            let total = samples.keys.iter().map(|k| k.len()).sum();
            let mut b = StringBuilder::with_capacity(n, total);
            for k in &samples.keys {
                b.append_value(k);
            }
            columns.push(Arc::new(b.finish()));
            continue;
        }
        let members = &samples.fields[i];
        let total = members.iter().flatten().map(|r| r.len()).sum();
        let mut b = BinaryBuilder::with_capacity(n, total);
        for m in members {
            match m {
                Some(r) => b.append_value(&data[r.clone()]),
                None => b.append_null(),
            }
        }
        columns.push(Arc::new(b.finish()));
    }
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| error(url, format!("assembling the tar columns: {e}")))
}

struct Samples {
    keys: Vec<String>,
    /// Per wanted column (same index as the schema), per sample: the member's byte range.
    fields: Vec<Vec<Option<Member>>>,
}

fn walk(data: &[u8], url: &str, wanted: &[&str]) -> Result<Samples> {
    let malformed = |reason: String| error(url, format!("malformed tar: {reason}"));
    if data.is_empty() {
        return Err(malformed("empty file".into()));
    }
    let mut out = Samples {
        keys: Vec::new(),
        fields: vec![Vec::new(); wanted.len()],
    };
    let mut current_fields: Vec<String> = Vec::new();
    let mut pending_name: Option<String> = None;
    let mut pos = 0usize;
    loop {
        if pos == data.len() {
            break; // no end-of-archive blocks: accepted, like tarfile
        }
        let Some(block) = data.get(pos..pos + BLOCK) else {
            return Err(malformed(format!("truncated in a header at byte {pos}")));
        };
        if block.iter().all(|&b| b == 0) {
            break;
        }
        verify_checksum(block).map_err(|r| malformed(format!("{r} at byte {pos}")))?;
        let size = parse_size(&block[124..136])
            .ok_or_else(|| malformed(format!("bad size field at byte {pos}")))?;
        let size = usize::try_from(size).map_err(|_| malformed("member too large".into()))?;
        let start = pos + BLOCK;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| {
                malformed(format!(
                    "truncated: a member at byte {pos} needs {size} bytes, the file has {} left",
                    data.len().saturating_sub(start)
                ))
            })?;
        let typeflag = block[156];
        match typeflag {
            b'L' => {
                let rec = &data[start..end];
                let n = rec.iter().position(|&b| b == 0).unwrap_or(rec.len());
                pending_name = Some(String::from_utf8_lossy(&rec[..n]).into_owned());
            }
            b'x' => {
                if let Some(p) = pax_path(&data[start..end]).map_err(malformed)? {
                    pending_name = Some(p);
                }
            }
            b'g' | b'K' => {}
            _ => {
                let name = pending_name.take().unwrap_or_else(|| header_name(block));
                if matches!(typeflag, b'0' | 0 | b'7') {
                    if let Some((key, field)) = split_key(&name) {
                        let skipped =
                            !key.contains('/') && key.starts_with("__") && field.ends_with("__");
                        if !skipped {
                            if out.keys.last().map(String::as_str) != Some(key)
                                || out.keys.is_empty()
                            {
                                out.keys.push(key.to_string());
                                for f in &mut out.fields {
                                    f.push(None);
                                }
                                current_fields.clear();
                            }
                            if current_fields.iter().any(|f| f == field) {
                                return Err(malformed(format!(
                                    "duplicate file name {name:?} in one sample"
                                )));
                            }
                            current_fields.push(field.to_string());
                            if let Some(i) = wanted.iter().position(|w| *w == field) {
                                *out.fields[i].last_mut().expect("sample pushed") =
                                    Some(start..end);
                            }
                        }
                    }
                }
            }
        }
        pos = start + size.div_ceil(BLOCK) * BLOCK;
        if pos > data.len() {
            // The last member's padding is missing; its data was complete.
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, BinaryArray, StringArray};
    use arrow::datatypes::{Field, Schema};

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = ::tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = ::tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn schema(fields: &[&str]) -> SchemaRef {
        Arc::new(Schema::new(
            fields
                .iter()
                .map(|f| {
                    if *f == "__key__" {
                        Field::new(*f, DataType::Utf8, false)
                    } else {
                        Field::new(*f, DataType::Binary, true)
                    }
                })
                .collect::<Vec<_>>(),
        ))
    }

    #[test]
    fn groups_members_and_fills_nulls() {
        let long = format!("{}/s2.txt", "d".repeat(150));
        let t = tar_of(&[
            ("a/000.jpg", b"x"),
            ("a/000.cls", b"1"),
            ("a/001.jpg", b"yy"),
            (long.as_str(), b"long"),
        ]);
        let b = decode(&t, &schema(&["__key__", "cls", "jpg", "txt"]), "t.tar", 3).unwrap();
        let keys = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(keys.value(0), "a/000");
        assert_eq!(keys.value(2), format!("{}/s2", "d".repeat(150)));
        let cls = b.column(1).as_any().downcast_ref::<BinaryArray>().unwrap();
        assert_eq!(cls.value(0), b"1");
        assert!(cls.is_null(1) && cls.is_null(2));
        let jpg = b.column(2).as_any().downcast_ref::<BinaryArray>().unwrap();
        assert_eq!(jpg.value(1), b"yy");
        let txt = b.column(3).as_any().downcast_ref::<BinaryArray>().unwrap();
        assert_eq!(txt.value(2), b"long");
        // Projection: only asked-for fields are built.
        let b = decode(&t, &schema(&["jpg"]), "t.tar", 3).unwrap();
        assert_eq!(b.num_columns(), 1);
    }

    #[test]
    fn count_mismatch_truncation_and_garbage_are_errors() {
        let t = tar_of(&[("a.txt", &[7u8; 3000]), ("b.txt", b"2")]);
        let s = schema(&["txt"]);
        assert!(decode(&t, &s, "t", 2).is_ok());
        let err = decode(&t, &s, "t", 3).unwrap_err();
        assert!(err.to_string().contains("manifest says 3"), "{err}");
        let err = decode(&t[..1500], &s, "t", 2).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(decode(&[b'x'; 2048], &s, "t", 0).is_err());
        assert!(decode(&[], &s, "t", 0).is_err());
        let dup = tar_of(&[("s/1.txt", b"a"), ("s/1.txt", b"b")]);
        assert!(decode(&dup, &s, "t", 1).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
            let _ = decode(&bytes, &schema(&["__key__", "txt"]), "t", 1);
        }
    }
}
