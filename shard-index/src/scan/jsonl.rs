//! A push-based JSONL reader: one sample per non-empty line, each a JSON object.
//!
//! Every line is parsed (an invalid line anywhere must fail indexing, not a training job hours
//! later), but only the first [`SCHEMA_SAMPLE_LINES`] are kept to infer the Arrow schema, so
//! memory stays bounded whatever the shard size.

use super::{ScanOutput, ShardScanner};
use crate::error::{Error, Result};
use arrow::json::reader::infer_json_schema_from_iterator;
use serde_json::Value;

/// Lines per shard used for schema inference.
const SCHEMA_SAMPLE_LINES: usize = 256;
/// A single line longer than this is treated as corrupt input rather than buffered forever.
const MAX_LINE_BYTES: usize = 256 << 20;

pub struct JsonlScanner {
    path: String,
    partial: Vec<u8>,
    line_no: u64,
    samples: u64,
    kept: Vec<Value>,
    bytes_seen: u64,
}

impl JsonlScanner {
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            partial: Vec::new(),
            line_no: 0,
            samples: 0,
            kept: Vec::new(),
            bytes_seen: 0,
        }
    }

    fn line(&mut self, line: &[u8]) -> Result<()> {
        self.line_no += 1;
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            return Ok(());
        }
        let value: Value = serde_json::from_slice(trimmed).map_err(|e| Error::MalformedJson {
            path: self.path.clone(),
            line: self.line_no,
            reason: e.to_string(),
        })?;
        if !value.is_object() {
            return Err(Error::MalformedJson {
                path: self.path.clone(),
                line: self.line_no,
                reason: "expected a JSON object per line".into(),
            });
        }
        self.samples += 1;
        if self.kept.len() < SCHEMA_SAMPLE_LINES {
            self.kept.push(value);
        }
        Ok(())
    }
}

impl ShardScanner for JsonlScanner {
    fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        self.bytes_seen += data.len() as u64;
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.line(&data[..nl])?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&data[..nl]);
                self.line(&line)?;
                line.clear();
                self.partial = line;
            }
            data = &data[nl + 1..];
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() > MAX_LINE_BYTES {
            return Err(Error::MalformedJson {
                path: self.path.clone(),
                line: self.line_no + 1,
                reason: format!("line longer than {MAX_LINE_BYTES} bytes"),
            });
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<ScanOutput> {
        if !self.partial.is_empty() {
            let last = std::mem::take(&mut self.partial);
            self.line(&last)?;
        }
        if self.bytes_seen == 0 {
            return Err(Error::MalformedJson {
                path: self.path.clone(),
                line: 0,
                reason: "empty file".into(),
            });
        }
        let schema = infer_json_schema_from_iterator(self.kept.iter().map(Ok)).map_err(|e| {
            Error::MalformedJson {
                path: self.path.clone(),
                line: 0,
                reason: format!("cannot infer a schema: {e}"),
            }
        })?;
        Ok(ScanOutput {
            num_samples: self.samples,
            schema,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str, chunk: usize) -> Result<ScanOutput> {
        let mut s = Box::new(JsonlScanner::new("t.jsonl"));
        for c in text.as_bytes().chunks(chunk) {
            s.feed(c)?;
        }
        s.finish()
    }

    #[test]
    fn counts_non_empty_lines_across_chunk_boundaries() {
        let text = "{\"id\": 0, \"t\": \"a\"}\n\n  \n{\"id\": 1, \"t\": \"b\"}\r\n{\"id\": 2}";
        for chunk in [1, 3, 1000] {
            let out = scan(text, chunk).unwrap();
            assert_eq!(out.num_samples, 3);
            assert!(out.schema.field_with_name("id").is_ok());
        }
    }

    #[test]
    fn invalid_line_names_its_number() {
        let err = scan("{\"a\":1}\n{\"a\":\n{\"a\":3}\n", 4).unwrap_err();
        match err {
            Error::MalformedJson { line, .. } => assert_eq!(line, 2),
            other => panic!("unexpected {other}"),
        }
        assert!(scan("[1,2]\n", 4).is_err());
        assert!(scan("", 4).is_err());
    }
}
