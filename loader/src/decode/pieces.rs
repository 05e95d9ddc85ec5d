//! The fetched bytes of one Parquet file, addressed by file offset.
//!
//! A row group's projected column chunks are fetched as a few byte ranges, and each range may
//! arrive as many consecutive chunks (an HTTP body's, left as they came: see
//! `fetch::Fetcher::read_parts`) or as one buffer (a memory-mapped file, a cache entry).
//! [`Pieces`] serves both readers of them:
//! - parquet's page reader, through [`ChunkReader`]: a request inside one chunk is a zero-copy
//!   slice; one that straddles chunks is copied into one buffer;
//! - the PLAIN fast path, through [`Pieces::rope`]: the chunks covering a column chunk as they
//!   are, read in place.
//!
//! A request for bytes that were not fetched is an error, never a silent read of other bytes.

use std::sync::Arc;

use bytes::Bytes;
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

use super::rope::Rope;

/// Fetched chunks of one file (cheap to clone).
#[derive(Clone)]
pub struct Pieces {
    file_size: u64,
    /// `(file offset, bytes)`, sorted by offset, none empty.
    parts: Arc<[(u64, Bytes)]>,
}

impl Pieces {
    /// `parts` in any order; they must not overlap.
    pub fn new(file_size: u64, mut parts: Vec<(u64, Bytes)>) -> Pieces {
        parts.retain(|(_, b)| !b.is_empty());
        parts.sort_by_key(|(offset, _)| *offset);
        Pieces {
            file_size,
            parts: parts.into(),
        }
    }

    /// Bytes `start..end` as the chunks that hold them, zero-copy.
    pub fn rope(&self, start: u64, end: u64) -> Result<Rope, String> {
        let missing = || format!("bytes {start}..{end} were not fetched");
        let mut i = self.first_part(start);
        let mut chunks = Vec::new();
        let mut at = start;
        while at < end {
            let (offset, bytes) = self.parts.get(i).ok_or_else(missing)?;
            if *offset > at {
                return Err(missing());
            }
            let from = (at - offset) as usize;
            let to = usize::try_from(end - offset).map_or(bytes.len(), |e| e.min(bytes.len()));
            chunks.push(bytes.slice(from..to));
            at = offset + to as u64;
            i += 1;
        }
        Ok(Rope::new(chunks))
    }

    /// The first part that ends after `start` (it may begin after it: a gap).
    fn first_part(&self, start: u64) -> usize {
        self.parts
            .partition_point(|(offset, b)| offset + b.len() as u64 <= start)
    }

    /// Where the fetched bytes that run on without a gap from `start` end.
    fn run_end(&self, start: u64) -> u64 {
        let mut i = self.first_part(start);
        let mut end = start;
        while let Some((offset, bytes)) = self.parts.get(i) {
            if *offset > end {
                break;
            }
            end = offset + bytes.len() as u64;
            i += 1;
        }
        end
    }
}

impl Length for Pieces {
    fn len(&self) -> u64 {
        self.file_size
    }
}

impl ChunkReader for Pieces {
    type T = Rope;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Rope> {
        let end = self.run_end(start);
        if end == start {
            return Err(ParquetError::General(format!(
                "bytes from {start} were not fetched"
            )));
        }
        self.rope(start, end).map_err(ParquetError::General)
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let mut rope = self
            .rope(start, start + length as u64)
            .map_err(ParquetError::General)?;
        Ok(rope
            .take(length)
            .expect("the rope holds exactly length bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pieces() -> (Vec<u8>, Pieces) {
        let file: Vec<u8> = (0..100u8).collect();
        let b = |r: std::ops::Range<usize>| (r.start as u64, Bytes::copy_from_slice(&file[r]));
        // 10..40 in three chunks, 60..70 in one; nothing else fetched.
        let parts = vec![b(60..70), b(10..20), b(20..21), b(21..40)];
        (file.clone(), Pieces::new(100, parts))
    }

    #[test]
    fn reads_across_chunks_and_refuses_what_was_not_fetched() {
        let (file, p) = pieces();
        assert_eq!(&p.get_bytes(12, 20).unwrap()[..], &file[12..32]);
        assert_eq!(&p.get_bytes(60, 10).unwrap()[..], &file[60..70]);
        let mut all = Vec::new();
        p.get_read(15).unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(
            all,
            &file[15..40],
            "a reader runs to the end of the fetched run"
        );
        for (start, len) in [(5, 10), (35, 10), (40, 1), (59, 2), (69, 2)] {
            assert!(p.get_bytes(start, len).is_err(), "{start}+{len}");
        }
        assert!(p.get_read(45).is_err());
        let mut rope = p.rope(18, 25).unwrap();
        assert_eq!(rope.len(), 7);
        assert_eq!(&Rope::take(&mut rope, 7).unwrap()[..], &file[18..25]);
    }
}
