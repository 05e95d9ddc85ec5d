//! A cursor over bytes that arrived in pieces: an HTTP body is a list of chunks (hyper hands
//! them over ~400 KB at a time), and the PLAIN fast path reads pages straight from those chunks
//! instead of joining them into one buffer first.
//!
//! Joining cost a full copy of every byte fetched from a store, plus the page faults of a fresh
//! 8 MiB buffer per row group: a fifth of the loader's CPU over S3 in a profile (blobs through
//! loopback nginx). [`Rope`] hands out zero-copy slices of the chunks wherever a read lies
//! inside one chunk, and copies only what straddles a boundary: a page header, a 4-byte length,
//! one element or one value cut in two.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Consecutive bytes held as a queue of chunks, read front to back.
#[derive(Clone, Debug, Default)]
pub struct Rope {
    /// Whole chunks, none empty; the front one is read from `head` on.
    chunks: VecDeque<Bytes>,
    head: usize,
    /// Bytes left.
    len: usize,
    /// Chunks read to their end so far: with `head`, it names a place in the rope.
    popped: u64,
}

impl Rope {
    pub fn new(chunks: impl IntoIterator<Item = Bytes>) -> Rope {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let len = chunks.iter().map(Bytes::len).sum();
        Rope {
            chunks,
            head: 0,
            len,
            popped: 0,
        }
    }

    /// Bytes left.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The unread part of the front chunk (empty at the end).
    pub fn front(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| &c[self.head..])
    }

    /// The front chunk whole, a number that names it among the chunks this rope has held, and
    /// how much of it has been read: what a caller needs to address bytes of the chunk later
    /// without copying them. `None` at the end.
    pub fn front_chunk(&self) -> Option<(u64, &Bytes, usize)> {
        self.chunks.front().map(|c| (self.popped, c, self.head))
    }

    /// The next `n` bytes as one buffer (a copy only when they straddle chunks); `None`, and
    /// nothing consumed, when fewer are left.
    pub fn take(&mut self, n: usize) -> Option<Bytes> {
        if n > self.len {
            return None;
        }
        if n == 0 {
            return Some(Bytes::new());
        }
        if self.front().len() >= n {
            let out = self.chunks[0].slice(self.head..self.head + n);
            self.consume(n);
            return Some(out);
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let k = self.front().len().min(n - out.len());
            out.extend_from_slice(&self.front()[..k]);
            self.consume(k);
        }
        Some(out.freeze())
    }

    /// The next `n` bytes as the zero-copy chunks that hold them (a new rope); `None`, and
    /// nothing consumed, when fewer are left.
    pub fn split_to(&mut self, n: usize) -> Option<Rope> {
        if n > self.len {
            return None;
        }
        let mut chunks = Vec::new();
        let mut got = 0;
        while got < n {
            let k = self.front().len().min(n - got);
            chunks.push(self.chunks[0].slice(self.head..self.head + k));
            self.consume(k);
            got += k;
        }
        Some(Rope::new(chunks))
    }

    /// Up to `max` whole items of `width` bytes that lie in the front chunk, zero-copy, with
    /// their count; `None` when the next item straddles chunks (or nothing is left).
    pub fn take_whole(&mut self, width: usize, max: usize) -> Option<(Bytes, usize)> {
        let k = (self.front().len() / width.max(1)).min(max);
        if k == 0 {
            return None;
        }
        let out = self.chunks[0].slice(self.head..self.head + k * width);
        self.consume(k * width);
        Some((out, k))
    }

    /// Skips `n` bytes; false, and nothing consumed, when fewer are left.
    pub fn advance(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.consume(n);
        true
    }

    /// A 4-byte little-endian length, as BYTE_ARRAY values and V1 levels are prefixed; `None`,
    /// and nothing consumed, when fewer bytes are left. No buffer is made for it: this runs once
    /// per value.
    pub fn u32_le(&mut self) -> Option<u32> {
        if self.len < 4 {
            return None;
        }
        let mut b = [0u8; 4];
        if let Some(front) = self.front().get(..4) {
            b.copy_from_slice(front);
            self.consume(4);
        } else {
            for x in &mut b {
                *x = self.byte().expect("length checked");
            }
        }
        Some(u32::from_le_bytes(b))
    }

    /// One byte; `None` at the end.
    pub fn byte(&mut self) -> Option<u8> {
        let b = *self.front().first()?;
        self.consume(1);
        Some(b)
    }

    /// Moves `n` (at most `len`) bytes on, dropping chunks read to their end.
    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let rest = self.chunks[0].len() - self.head;
            if n < rest {
                self.head += n;
                return;
            }
            n -= rest;
            self.chunks.pop_front();
            self.head = 0;
            self.popped += 1;
        }
    }
}

/// Reading a rope copies out of its chunks (parquet's page reader reads headers this way).
impl std::io::Read for Rope {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let front = self.front();
        let n = front.len().min(buf.len());
        buf[..n].copy_from_slice(&front[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rope_of(data: &[u8], cuts: &[usize]) -> Rope {
        let mut chunks = Vec::new();
        let mut at = 0;
        for &c in cuts {
            let end = (at + c).min(data.len());
            chunks.push(Bytes::copy_from_slice(&data[at..end]));
            at = end;
        }
        chunks.push(Bytes::copy_from_slice(&data[at..]));
        Rope::new(chunks)
    }

    proptest! {
        /// Whatever the chunking, reading a rope by any mix of operations yields the bytes in
        /// order, and a read past the end consumes nothing.
        #[test]
        fn reads_see_the_bytes_in_order_whatever_the_chunks(
            data in proptest::collection::vec(any::<u8>(), 0..400),
            cuts in proptest::collection::vec(0usize..50, 0..12),
            ops in proptest::collection::vec((0u8..6, 0usize..40), 0..40),
        ) {
            let mut rope = rope_of(&data, &cuts);
            prop_assert_eq!(rope.len(), data.len());
            let mut at = 0;
            for (op, n) in ops {
                let left = data.len() - at;
                match op {
                    0 => match rope.take(n) {
                        Some(b) => { prop_assert_eq!(&b[..], &data[at..at + n]); at += n; }
                        None => prop_assert!(n > left),
                    },
                    1 => match rope.split_to(n) {
                        Some(mut r) => {
                            prop_assert_eq!(r.len(), n);
                            let b = r.take(n).unwrap();
                            prop_assert_eq!(&b[..], &data[at..at + n]);
                            at += n;
                        }
                        None => prop_assert!(n > left),
                    },
                    2 => {
                        let width = n % 7 + 1;
                        if let Some((b, k)) = rope.take_whole(width, 5) {
                            prop_assert!((1..=5).contains(&k));
                            prop_assert_eq!(b.len(), k * width);
                            prop_assert_eq!(&b[..], &data[at..at + k * width]);
                            at += k * width;
                        }
                    }
                    3 => {
                        if rope.advance(n) { at += n } else { prop_assert!(n > left) }
                    }
                    4 => match rope.u32_le() {
                        Some(v) => {
                            let want = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                            prop_assert_eq!(v, want);
                            at += 4;
                        }
                        None => prop_assert!(left < 4),
                    },
                    _ => match rope.byte() {
                        Some(b) => { prop_assert_eq!(b, data[at]); at += 1; }
                        None => prop_assert_eq!(left, 0),
                    },
                }
                prop_assert_eq!(rope.len(), data.len() - at);
                prop_assert_eq!(!rope.front().is_empty(), !rope.is_empty());
            }
        }
    }

    #[test]
    fn a_read_within_one_chunk_shares_its_memory() {
        let chunk = Bytes::from(vec![7u8; 100]);
        let mut rope = Rope::new([chunk.clone(), Bytes::from(vec![8u8; 10])]);
        let a = rope.take(60).unwrap();
        assert_eq!(a.as_ptr(), chunk.as_ptr(), "no copy inside one chunk");
        let (id, whole, head) = rope.front_chunk().unwrap();
        assert_eq!((id, whole.as_ptr(), head), (0, chunk.as_ptr(), 60));
        let b = rope.take(45).unwrap();
        assert_eq!(rope.front_chunk().unwrap().0, 1, "the second chunk");
        assert_ne!(
            b.as_ptr(),
            chunk[60..].as_ptr(),
            "a straddling read is a copy"
        );
        assert_eq!(&b[..40], &[7u8; 40][..]);
        assert_eq!(&b[40..], &[8u8; 5][..]);
    }
}
