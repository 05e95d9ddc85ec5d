//! Parquet page headers, read from a [`Rope`]: the few fields the PLAIN fast path needs.
//!
//! A page header is a Thrift struct in the compact protocol. arrow-rs parses it inside its page
//! reader, which asks its `ChunkReader` for each page as one contiguous buffer — a copy of
//! every page whose bytes arrived in two HTTP chunks, which is nearly every page. Reading the
//! header here lets [`super::plain`] walk an uncompressed column chunk in place, taking each
//! page's bytes as the chunks that hold them. Fields other than those in [`PageHeader`]
//! (checksums, statistics, index and dictionary headers, fields added to the format later) are
//! skipped by their Thrift type, as any Thrift reader does.

use super::rope::Rope;

/// Parquet's `PageType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    Data,
    Index,
    Dictionary,
    DataV2,
}

/// The fields of a page header the fast path reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageHeader {
    pub kind: PageKind,
    /// Bytes of the page after the header (as stored).
    pub compressed_size: usize,
    /// Values in the page, nulls and list entries included (data pages).
    pub num_values: usize,
    /// Parquet `Encoding` ids: 0 PLAIN, 3 RLE (data pages).
    pub encoding: i32,
    /// V1: encodings of the definition and repetition levels.
    pub def_level_encoding: i32,
    pub rep_level_encoding: i32,
    /// V2: byte lengths of the definition and repetition levels at the start of the page.
    pub def_levels_len: usize,
    pub rep_levels_len: usize,
}

/// Parquet's encoding ids.
pub const PLAIN: i32 = 0;
pub const RLE: i32 = 3;

// Compact-protocol type ids.
const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const I8: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;

/// Nesting deeper than this is not a page header (and would only exhaust the stack).
const MAX_DEPTH: u32 = 32;

/// Reads one page header from the front of `rope`, consuming exactly its bytes.
pub fn read(rope: &mut Rope) -> Result<PageHeader, String> {
    let mut h = PageHeader {
        kind: PageKind::Index,
        compressed_size: 0,
        num_values: 0,
        encoding: -1,
        def_level_encoding: -1,
        rep_level_encoding: -1,
        def_levels_len: 0,
        rep_levels_len: 0,
    };
    let (mut kind, mut size, mut data) = (None, None, false);
    let mut r = Reader { rope };
    r.fields(|r, id, ty| {
        match (id, ty) {
            (1, I32) => {
                kind = Some(match r.int()? {
                    0 => PageKind::Data,
                    1 => PageKind::Index,
                    2 => PageKind::Dictionary,
                    3 => PageKind::DataV2,
                    other => return Err(format!("unknown page type {other}")),
                })
            }
            (3, I32) => size = Some(r.size()?),
            (5, STRUCT) => {
                data = true;
                r.fields(|r, id, ty| {
                    match (id, ty) {
                        (1, I32) => h.num_values = r.size()?,
                        (2, I32) => h.encoding = r.int()?,
                        (3, I32) => h.def_level_encoding = r.int()?,
                        (4, I32) => h.rep_level_encoding = r.int()?,
                        _ => r.skip(ty, 0)?,
                    }
                    Ok(())
                })?
            }
            (8, STRUCT) => {
                data = true;
                r.fields(|r, id, ty| {
                    match (id, ty) {
                        (1, I32) => h.num_values = r.size()?,
                        (4, I32) => h.encoding = r.int()?,
                        (5, I32) => h.def_levels_len = r.size()?,
                        (6, I32) => h.rep_levels_len = r.size()?,
                        _ => r.skip(ty, 0)?,
                    }
                    Ok(())
                })?
            }
            _ => r.skip(ty, 0)?,
        }
        Ok(())
    })?;
    h.kind = kind.ok_or("a page header without a page type")?;
    h.compressed_size = size.ok_or("a page header without a compressed size")?;
    if matches!(h.kind, PageKind::Data | PageKind::DataV2) && !data {
        return Err("a data page without its data page header".into());
    }
    Ok(h)
}

struct Reader<'a> {
    rope: &'a mut Rope,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        self.rope
            .byte()
            .ok_or_else(|| "the page header is cut short".to_string())
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint longer than 64 bits in a page header".into())
    }

    /// A zigzag-encoded i32.
    fn int(&mut self) -> Result<i32, String> {
        let v = self.varint()?;
        let v = ((v >> 1) as i64) ^ -((v & 1) as i64);
        i32::try_from(v).map_err(|_| format!("{v} does not fit an i32 field of a page header"))
    }

    /// A zigzag i32 that must be a size or count (not negative).
    fn size(&mut self) -> Result<usize, String> {
        let v = self.int()?;
        usize::try_from(v).map_err(|_| format!("a negative size ({v}) in a page header"))
    }

    /// Calls `f(reader, field id, type)` for each field of a struct, up to its stop byte.
    fn fields(
        &mut self,
        mut f: impl FnMut(&mut Self, i16, u8) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut last = 0i16;
        loop {
            let b = self.byte()?;
            if b == 0 {
                return Ok(());
            }
            let (delta, ty) = (b >> 4, b & 0x0f);
            let id = if delta == 0 {
                i16::try_from(self.int()?).map_err(|_| "a field id out of range".to_string())?
            } else {
                last.wrapping_add(i16::from(delta))
            };
            last = id;
            f(self, id, ty)?;
        }
    }

    /// Skips one value of compact type `ty` (a field's; booleans are in the field header).
    fn skip(&mut self, ty: u8, depth: u32) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("a page header nested too deeply".into());
        }
        match ty {
            BOOL_TRUE | BOOL_FALSE => {}
            I8 => {
                self.byte()?;
            }
            I16 | I32 | I64 => {
                self.varint()?;
            }
            DOUBLE => self.bytes(8)?,
            BINARY => {
                let n = self.varint()?;
                self.bytes(usize::try_from(n).map_err(|_| "a huge binary field")?)?
            }
            LIST | SET => {
                let b = self.byte()?;
                let (n, elem) = match b >> 4 {
                    15 => (self.varint()?, b & 0x0f),
                    n => (u64::from(n), b & 0x0f),
                };
                for _ in 0..n {
                    self.skip_element(elem, depth + 1)?;
                }
            }
            MAP => {
                let n = self.varint()?;
                if n > 0 {
                    let kv = self.byte()?;
                    for _ in 0..n {
                        self.skip_element(kv >> 4, depth + 1)?;
                        self.skip_element(kv & 0x0f, depth + 1)?;
                    }
                }
            }
            STRUCT => self.fields(|r, _, ty| r.skip(ty, depth + 1))?,
            other => return Err(format!("unknown Thrift type {other} in a page header")),
        }
        Ok(())
    }

    /// Skips a list, set or map element: there a boolean is a byte of its own.
    fn skip_element(&mut self, ty: u8, depth: u32) -> Result<(), String> {
        if ty == BOOL_TRUE || ty == BOOL_FALSE {
            self.byte()?;
            return Ok(());
        }
        self.skip(ty, depth)
    }

    fn bytes(&mut self, n: usize) -> Result<(), String> {
        if self.rope.advance(n) {
            Ok(())
        } else {
            Err("the page header is cut short".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn header(bytes: &[u8]) -> Result<(PageHeader, usize), String> {
        let mut rope = Rope::new([Bytes::copy_from_slice(bytes)]);
        let h = read(&mut rope)?;
        Ok((h, bytes.len() - rope.len()))
    }

    /// Zigzag varint of a small non-negative i32.
    fn zz(v: i32) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 31)) as u32;
        let mut out = Vec::new();
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return out;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    #[test]
    fn reads_a_v1_header_and_skips_what_it_does_not_need() {
        let mut b = vec![0x15];
        b.extend(zz(0)); // 1: type DATA_PAGE
        b.push(0x15);
        b.extend(zz(1000)); // 2: uncompressed size
        b.push(0x15);
        b.extend(zz(900)); // 3: compressed size
        b.push(0x15);
        b.extend(zz(-5)); // 4: crc
        b.push(0x1c); // 5: data page header
        b.push(0x15);
        b.extend(zz(300)); // num_values
        b.push(0x15);
        b.extend(zz(0)); // encoding PLAIN
        b.push(0x15);
        b.extend(zz(3)); // def RLE
        b.push(0x15);
        b.extend(zz(3)); // rep RLE
        b.push(0x1c); // statistics { 1: binary max, 2: list<i64> }
        b.extend([0x18, 3, b'a', b'b', b'c', 0x19, 0x26, 2, 4]);
        b.push(0); // end statistics
        b.push(0); // end data page header
        b.extend([0x4b, 2, 0x51]); // 9: map<i32, bool> of 2 (unknown to us)
        b.extend(zz(1));
        b.push(1);
        b.extend(zz(2));
        b.push(2);
        b.push(0x0c); // 300 (long-form id): struct { 1: i64 }
        b.extend(zz(300));
        b.extend([0x16, 0x80, 0x01, 0]);
        b.push(0); // end page header
        b.extend([0xde, 0xad]); // the page data that follows
        let (h, used) = header(&b).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(h.kind, PageKind::Data);
        assert_eq!(h.compressed_size, 900);
        assert_eq!(h.num_values, 300);
        assert_eq!(
            (h.encoding, h.def_level_encoding, h.rep_level_encoding),
            (0, 3, 3)
        );
        assert_eq!(used, b.len() - 2, "consumes exactly the header");
    }

    proptest::proptest! {
        /// Any bytes, however they are cut into chunks, give the same header or the same
        /// error, consume the same bytes, and never panic or loop.
        #[test]
        fn any_bytes_parse_alike_whatever_the_chunks(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            cut in 1usize..9,
        ) {
            let mut whole = Rope::new([Bytes::copy_from_slice(&data)]);
            let mut pieces = Rope::new(data.chunks(cut).map(Bytes::copy_from_slice));
            proptest::prop_assert_eq!(read(&mut whole), read(&mut pieces));
            proptest::prop_assert_eq!(whole.len(), pieces.len());
        }
    }

    #[test]
    fn truncated_and_malformed_headers_are_errors() {
        let mut b = vec![0x15];
        b.extend(zz(3));
        b.push(0x25);
        b.extend(zz(10));
        // No stop byte: cut short.
        assert!(header(&b).unwrap_err().contains("cut short"));
        b.push(0);
        // A V2 data page without its data page header.
        assert!(header(&b).unwrap_err().contains("data page header"));
        assert!(header(&[0x1f, 0])
            .unwrap_err()
            .contains("unknown Thrift type"));
        let mut neg = vec![0x15];
        neg.extend(zz(2));
        neg.push(0x25);
        neg.extend(zz(-1));
        neg.push(0);
        assert!(header(&neg).unwrap_err().contains("negative size"));
    }
}
