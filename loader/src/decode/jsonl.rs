//! JSON lines → Arrow with the manifest's (projected) schema.
//!
//! `arrow::json` parses straight into Arrow builders (a tape decoder, no `serde_json::Value`
//! per line). Fields of a line that are not in the schema are ignored, which is how column
//! projection works here; blank lines are skipped, as the indexer counts them.

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::json::ReaderBuilder;

use super::{check_rows, error};
use crate::Result;

/// Rows per internal batch; the pieces are concatenated into one batch per shard.
const CHUNK_ROWS: usize = 16 * 1024;

/// Decodes the (decompressed) JSONL text in `data`.
pub fn decode(
    data: &[u8],
    schema: &SchemaRef,
    url: &str,
    expected_rows: u64,
) -> Result<RecordBatch> {
    let rows = usize::try_from(expected_rows).unwrap_or(usize::MAX);
    let reader = ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.clamp(1, CHUNK_ROWS))
        .build(data)
        .map_err(|e| error(url, format!("invalid JSON: {e}")))?;
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.map_err(|e| error(url, format!("invalid JSON: {e}")))?);
    }
    let batch = match batches.len() {
        0 => RecordBatch::new_empty(schema.clone()),
        1 => batches.pop().expect("one"),
        _ => concat_batches(schema, &batches).map_err(|e| error(url, e.to_string()))?,
    };
    check_rows(url, batch.num_rows(), expected_rows)?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, ListArray, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new(
                "tokens",
                DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
                true,
            ),
        ]))
    }

    #[test]
    fn decodes_projected_fields_and_skips_blank_lines() {
        let text =
            b"{\"id\": 1, \"tokens\": [1,2], \"text\": \"a\"}\n\n{\"id\": 2, \"tokens\": []}\n";
        let b = decode(text, &schema(), "x.jsonl", 2).unwrap();
        assert_eq!(b.num_columns(), 2);
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.values(), &[1, 2]);
        let t = b.column(1).as_any().downcast_ref::<ListArray>().unwrap();
        assert_eq!(t.value_length(0), 2);
        assert_eq!(t.value_length(1), 0);
    }

    #[test]
    fn many_chunks_are_concatenated() {
        let text: String = (0..40_000)
            .map(|i| format!("{{\"id\": {i}, \"tokens\": [{i}]}}\n"))
            .collect();
        let b = decode(text.as_bytes(), &schema(), "x", 40_000).unwrap();
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.value(39_999), 39_999);
    }

    #[test]
    fn bad_json_and_wrong_counts_are_errors() {
        let err = decode(b"{\"id\": 1}\n{\"id\": \n", &schema(), "bad.jsonl", 2).unwrap_err();
        assert!(err.to_string().contains("bad.jsonl"), "{err}");
        let err = decode(b"{\"id\": 1}\n", &schema(), "x", 2).unwrap_err();
        assert!(err.to_string().contains("manifest says 2"), "{err}");
        let s = Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, true)]));
        let b = decode(b"{\"text\": \"hi\"}\n", &s, "x", 1).unwrap();
        let t = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert!(!t.is_null(0));
    }
}
