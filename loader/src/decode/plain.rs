//! The fast path for the columns that matter most: numbers, lists of numbers and binary/string
//! values stored PLAIN.
//!
//! Token ids, embeddings and labels are fixed-width numbers, often written PLAIN (uncompressed,
//! or compressed per page). For them the general Arrow reader costs more than the bytes it
//! moves: it decodes every repetition and definition level into an `i16` buffer, copies the
//! values into a freshly allocated (and so freshly page-faulted) Arrow buffer, and the collator
//! then copies them once more into the batch. [`decode_column`] instead walks the pages of one
//! column chunk, reads the levels as *runs* (a list of 2,048 tokens is one RLE run, so the cost
//! is per row, not per value), and keeps the page's value bytes as they are — slices of the
//! fetched (often memory-mapped) bytes, no copy. The collator copies each row's values straight
//! from there into the batch buffer: one copy from storage to the batch. Bytes fetched over
//! HTTP stay the body's chunks ([`Pieces`]): an uncompressed chunk's pages are read where they
//! lie, with headers parsed by [`page_header`], and only a value or element cut by a chunk
//! boundary is copied, into a segment of its own.
//!
//! A column qualifies ([`PlainLeaf::for_column`]) when its Parquet physical type has the width
//! of its Arrow type (INT32 as Int32/UInt32, INT64, FLOAT, DOUBLE) and it is a number or a
//! single-level list of numbers; or when it is a BYTE_ARRAY read as Binary/LargeBinary/Utf8/
//! LargeUtf8, or a FIXED_LEN_BYTE_ARRAY read as FixedSizeBinary of the same length (not in a
//! list). A BYTE_ARRAY page is a run of values each behind a 4-byte length; [`decode_column`]
//! walks those prefixes once per page and keeps, per row, where its bytes lie in the page
//! (a value never straddles pages), so the collator copies each value straight from the page
//! into the batch — no Arrow offsets and values buffers in between. Utf8 values are checked to
//! be UTF-8 as the Arrow reader would (an invalid one declines, and the Arrow reader reports
//! it). A chunk whose pages turn out to use another encoding (dictionary, delta,
//! byte-stream-split) or hold nulls makes [`decode_column`] return [`Declined::Fallback`], and
//! the engine decodes that chunk with the Arrow reader instead, so the fast path never changes
//! what a batch holds — only how fast it is built.

use std::ops::Range;
use std::sync::Arc;

use arrow::datatypes::DataType;
use bytes::Bytes;
use parquet::basic::{Compression, Encoding, Type as PhysicalType};
use parquet::column::page::{Page, PageReader};
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::schema::types::ColumnDescriptor;

use super::page_header::{self, PageKind, PLAIN, RLE};
use super::pieces::Pieces;
use super::rope::Rope;
use crate::collate::DType;
use crate::streaming::Stores;

/// How a qualifying column's levels map to rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// One value per row; `max_def` 0 (required) or 1 (optional, must hold no nulls).
    Scalar { max_def: i16 },
    /// A single-level list. A level entry with `def >= element_def` is an element (a null one
    /// when `def < max_def`); below it the row is an empty or null list, which the collator
    /// treats alike.
    List { max_def: i16, element_def: i16 },
}

/// How a qualifying column's values are stored in a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Values {
    /// Back to back, `width` bytes each (numbers, FIXED_LEN_BYTE_ARRAY).
    Fixed { width: usize },
    /// BYTE_ARRAY: each value behind its 4-byte little-endian length; `utf8`: must be UTF-8.
    Prefixed { utf8: bool },
}

/// A projected column that may take the fast path: its Parquet leaf and shape.
#[derive(Clone, Copy, Debug)]
pub struct PlainLeaf {
    /// Index of the leaf column in the file's schema.
    pub leaf: usize,
    values: Values,
    shape: Shape,
}

impl PlainLeaf {
    /// The fast-path description of a root column whose only leaf is `descr`, if it has one.
    pub fn for_column(
        arrow_type: &DataType,
        leaf: usize,
        descr: &ColumnDescriptor,
    ) -> Option<PlainLeaf> {
        let (max_def, max_rep) = (descr.max_def_level(), descr.max_rep_level());
        let scalar = (max_rep == 0 && max_def <= 1).then_some(Shape::Scalar { max_def });
        let width = match descr.physical_type() {
            PhysicalType::INT32 | PhysicalType::FLOAT => 4,
            PhysicalType::INT64 | PhysicalType::DOUBLE => 8,
            PhysicalType::BYTE_ARRAY => {
                let utf8 = match arrow_type {
                    DataType::Binary | DataType::LargeBinary => false,
                    DataType::Utf8 | DataType::LargeUtf8 => true,
                    _ => return None,
                };
                return scalar.map(|shape| PlainLeaf {
                    leaf,
                    values: Values::Prefixed { utf8 },
                    shape,
                });
            }
            PhysicalType::FIXED_LEN_BYTE_ARRAY => {
                let width = usize::try_from(descr.type_length()).ok()?;
                return match arrow_type {
                    DataType::FixedSizeBinary(n) if *n as usize == width && width > 0 => scalar
                        .map(|shape| PlainLeaf {
                            leaf,
                            values: Values::Fixed { width },
                            shape,
                        }),
                    _ => None,
                };
            }
            _ => return None,
        };
        let (item, shape) = match arrow_type {
            DataType::List(f) | DataType::LargeList(f) if max_rep == 1 => {
                let leaf_optional = descr.self_type().is_optional();
                let element_def = max_def - i16::from(leaf_optional);
                (
                    f.data_type(),
                    Shape::List {
                        max_def,
                        element_def,
                    },
                )
            }
            t => (t, scalar?),
        };
        // The Arrow type must be a number of the physical width (not Int8 stored as INT32, not
        // a date or a decimal): then the stored little-endian bytes are the output bytes.
        let dtype = DType::from_arrow(item)?;
        (dtype.size() == width).then_some(PlainLeaf {
            leaf,
            values: Values::Fixed { width },
            shape,
        })
    }
}

/// Where one BYTE_ARRAY value lies: `segments[segment][start..start + len]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ValueRange {
    segment: u32,
    start: u32,
    len: u32,
}

/// One column of one row group, decoded by the fast path: the pages' value bytes, untouched,
/// and where each row's values start.
#[derive(Debug)]
pub struct PlainColumn {
    /// Bytes per element (1 for BYTE_ARRAY values, whose elements are bytes).
    width: usize,
    /// The values of each data page, PLAIN little-endian, in order (BYTE_ARRAY: with their
    /// length prefixes).
    segments: Vec<Bytes>,
    /// Element index at which each segment starts, plus the total at the end (BYTE_ARRAY: row
    /// index).
    segment_starts: Vec<usize>,
    /// Lists: row `r` holds elements `offsets[r]..offsets[r + 1]`. Numbers: `None` (row `r` is
    /// element `r`).
    offsets: Option<Vec<usize>>,
    /// BYTE_ARRAY: row `r`'s bytes.
    values: Option<Vec<ValueRange>>,
}

impl PlainColumn {
    /// Bytes per element.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Whether rows are BYTE_ARRAY values (read them with [`PlainColumn::value`]).
    pub fn is_byte_array(&self) -> bool {
        self.values.is_some()
    }

    /// Whether rows are lists (read them with [`PlainColumn::row`] and
    /// [`PlainColumn::copy_to`]).
    pub fn is_list(&self) -> bool {
        self.offsets.is_some()
    }

    pub fn num_rows(&self) -> usize {
        match (&self.offsets, &self.values) {
            (Some(o), _) => o.len() - 1,
            (None, Some(v)) => v.len(),
            (None, None) => self.num_elements(),
        }
    }

    /// The bytes of row `r` of a column that is not a list: a BYTE_ARRAY value, or one
    /// fixed-width element (a number or a FIXED_LEN_BYTE_ARRAY value).
    pub fn value(&self, r: usize) -> &[u8] {
        debug_assert!(self.offsets.is_none(), "lists have no single value");
        if let Some(values) = &self.values {
            let v = values[r];
            let start = v.start as usize;
            return &self.segments[v.segment as usize][start..start + v.len as usize];
        }
        let seg = self.segment_of(r);
        let from = (r - self.segment_starts[seg]) * self.width;
        &self.segments[seg][from..from + self.width]
    }

    /// The segment (page piece) holding element `element`.
    fn segment_of(&self, element: usize) -> usize {
        self.segment_starts.partition_point(|&s| s <= element) - 1
    }

    /// The bytes of `elements`, one slice per segment they lie in, in order.
    fn pieces(&self, elements: Range<usize>) -> impl Iterator<Item = &[u8]> {
        let mut seg = self.segment_of(elements.start);
        let mut next = elements.start;
        std::iter::from_fn(move || {
            if next >= elements.end {
                return None;
            }
            let (start, end) = (self.segment_starts[seg], self.segment_starts[seg + 1]);
            let to = elements.end.min(end);
            let piece = &self.segments[seg][(next - start) * self.width..(to - start) * self.width];
            (next, seg) = (to, seg + 1);
            Some(piece)
        })
    }

    fn num_elements(&self) -> usize {
        self.segment_starts.last().copied().unwrap_or(0)
    }

    /// Elements of row `r`.
    pub fn row(&self, r: usize) -> Range<usize> {
        match &self.offsets {
            Some(o) => o[r]..o[r + 1],
            None => r..r + 1,
        }
    }

    /// The bytes of `elements` that lie in the page holding the first of them (all of them
    /// unless the range crosses into the next page): what a prefetch ahead of
    /// [`PlainColumn::copy_to`] should touch.
    pub fn first_piece(&self, elements: Range<usize>) -> &[u8] {
        self.pieces(elements).next().unwrap_or_default()
    }

    /// Copies elements `elements` into `out` (exactly their byte length) with `stores`.
    pub fn copy_to(&self, elements: Range<usize>, out: &mut [u8], stores: Stores) {
        debug_assert_eq!(out.len(), elements.len() * self.width);
        let mut at = 0;
        for piece in self.pieces(elements) {
            stores.copy(&mut out[at..at + piece.len()], piece);
            at += piece.len();
        }
    }

    /// Bytes this column keeps alive (the page slices and the offsets).
    pub fn memory_bytes(&self) -> u64 {
        let values: usize = self.segments.iter().map(Bytes::len).sum();
        let offsets = self.offsets.as_ref().map_or(0, |o| o.len() * 8);
        let ranges = self
            .values
            .as_ref()
            .map_or(0, |v| v.len() * std::mem::size_of::<ValueRange>());
        (values + offsets + ranges) as u64
    }
}

/// Why the fast path declined a chunk (the caller then uses the Arrow reader), or a real error.
#[derive(Debug)]
pub enum Declined {
    /// Not PLAIN, or holds nulls: decode it the general way.
    Fallback,
    /// The bytes are broken (the Arrow reader would fail too).
    Corrupt(String),
}

impl From<parquet::errors::ParquetError> for Declined {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Declined::Corrupt(e.to_string())
    }
}

/// Decodes one column chunk of `rows` rows by the fast path, from the fetched `pieces`.
///
/// An uncompressed chunk is read in place: each page header is parsed where it lies
/// ([`page_header`]) and the page's bytes stay the fetched chunks that hold them ([`Rope`]);
/// only what straddles two chunks (a header, a length prefix, one value or element) is copied.
/// A compressed chunk goes through parquet's page reader, which decompresses each page into a
/// buffer of its own.
pub fn decode_column(
    leaf: &PlainLeaf,
    chunk: &ColumnChunkMetaData,
    pieces: &Pieces,
    rows: usize,
) -> Result<PlainColumn, Declined> {
    if chunk.dictionary_page_offset().is_some() {
        return Err(Declined::Fallback);
    }
    let mut col = PlainColumn {
        width: match leaf.values {
            Values::Fixed { width } => width,
            Values::Prefixed { .. } => 1,
        },
        segments: Vec::new(),
        segment_starts: vec![0],
        offsets: matches!(leaf.shape, Shape::List { .. }).then(|| Vec::with_capacity(rows + 1)),
        values: matches!(leaf.values, Values::Prefixed { .. }).then(|| Vec::with_capacity(rows)),
    };
    let mut levels = LevelScratch::default();
    if chunk.compression() == Compression::UNCOMPRESSED {
        let (start, len) = chunk.byte_range();
        let mut rest = pieces.rope(start, start + len).map_err(Declined::Corrupt)?;
        while !rest.is_empty() {
            let h = page_header::read(&mut rest).map_err(Declined::Corrupt)?;
            let data = rest
                .split_to(h.compressed_size)
                .ok_or_else(|| Declined::Corrupt("a page overruns its column chunk".into()))?;
            let page = match h.kind {
                PageKind::Index => continue,
                PageKind::Dictionary => return Err(Declined::Fallback),
                PageKind::Data => {
                    let rle = (h.rep_level_encoding == RLE, h.def_level_encoding == RLE);
                    v1_page(leaf, h.num_values, h.encoding == PLAIN, rle, data)?
                }
                PageKind::DataV2 => {
                    let levels = (h.rep_levels_len, h.def_levels_len);
                    v2_page(h.num_values, h.encoding == PLAIN, levels, data)?
                }
            };
            col.push_page(leaf, &mut levels, page)?;
        }
    } else {
        let reader = Arc::new(pieces.clone());
        let mut pages = SerializedPageReader::new(reader, chunk, rows, None)?;
        while let Some(page) = pages.get_next_page()? {
            let page = match page {
                Page::DataPage {
                    buf,
                    num_values,
                    encoding,
                    def_level_encoding,
                    rep_level_encoding,
                    ..
                } => {
                    let rle = (
                        rep_level_encoding == Encoding::RLE,
                        def_level_encoding == Encoding::RLE,
                    );
                    let plain = encoding == Encoding::PLAIN;
                    v1_page(leaf, num_values as usize, plain, rle, Rope::new([buf]))?
                }
                Page::DataPageV2 {
                    buf,
                    num_values,
                    encoding,
                    def_levels_byte_len,
                    rep_levels_byte_len,
                    ..
                } => {
                    let levels = (rep_levels_byte_len as usize, def_levels_byte_len as usize);
                    let plain = encoding == Encoding::PLAIN;
                    v2_page(num_values as usize, plain, levels, Rope::new([buf]))?
                }
                Page::DictionaryPage { .. } => return Err(Declined::Fallback),
            };
            col.push_page(leaf, &mut levels, page)?;
        }
    }
    if let Some(o) = col.offsets.as_mut() {
        o.push(col.segment_starts.last().copied().unwrap_or(0));
    }
    if col.num_rows() != rows {
        return Err(Declined::Corrupt(format!(
            "the column chunk holds {} rows, the row group {rows}",
            col.num_rows()
        )));
    }
    Ok(col)
}

/// A data page split into its levels and its value bytes.
struct RawPage {
    num_values: usize,
    /// Whether the values are PLAIN.
    plain: bool,
    rep: Bytes,
    def: Bytes,
    values: Rope,
}

/// Splits a V1 data page (levels behind 4-byte lengths, then values); declines levels that are
/// not RLE (`rle`: repetition, definition), which only matters where a column has them.
fn v1_page(
    leaf: &PlainLeaf,
    num_values: usize,
    plain: bool,
    rle: (bool, bool),
    mut data: Rope,
) -> Result<RawPage, Declined> {
    let uses_rle = |rle: bool, max: i16| max == 0 || rle;
    if !uses_rle(rle.0, max_rep(leaf)) || !uses_rle(rle.1, max_def(leaf)) {
        return Err(Declined::Fallback);
    }
    let rep = take_v1_levels(&mut data, max_rep(leaf))?;
    let def = take_v1_levels(&mut data, max_def(leaf))?;
    Ok(RawPage {
        num_values,
        plain,
        rep,
        def,
        values: data,
    })
}

/// Splits a V2 data page: repetition and definition levels of the lengths its header gives
/// (`levels`), then values.
fn v2_page(
    num_values: usize,
    plain: bool,
    levels: (usize, usize),
    mut data: Rope,
) -> Result<RawPage, Declined> {
    let overrun = || Declined::Corrupt("page levels overrun the page".into());
    Ok(RawPage {
        num_values,
        plain,
        rep: data.take(levels.0).ok_or_else(overrun)?,
        def: data.take(levels.1).ok_or_else(overrun)?,
        values: data,
    })
}

impl PlainColumn {
    /// Adds one data page: its rows (from the levels) and where its values lie.
    fn push_page(
        &mut self,
        leaf: &PlainLeaf,
        levels: &mut LevelScratch,
        page: RawPage,
    ) -> Result<(), Declined> {
        if !page.plain {
            return Err(Declined::Fallback);
        }
        let n = page.num_values;
        let elements = match leaf.shape {
            Shape::Scalar { max_def: 0 } => n,
            Shape::Scalar { max_def } => {
                levels.decode(&page.def, max_def, n, "definition")?;
                if levels.def.iter().any(|&(v, _)| v != max_def) {
                    return Err(Declined::Fallback);
                }
                n
            }
            Shape::List {
                max_def,
                element_def,
            } => {
                levels.decode_both(&page.rep, &page.def, max_def, n)?;
                let offsets = self.offsets.as_mut().expect("lists have offsets");
                let before = self.segment_starts.last().copied().unwrap_or(0);
                levels.rows(offsets, before, element_def, max_def)?
            }
        };
        let mut values = page.values;
        match leaf.values {
            Values::Prefixed { utf8 } => self.push_prefixed(&mut values, elements, utf8),
            Values::Fixed { width } => self.push_fixed(&mut values, elements, width),
        }
    }

    /// Fixed-width values: runs of whole elements within one chunk as segments (zero-copy), an
    /// element cut by a chunk boundary as a segment of its own (copied).
    fn push_fixed(&mut self, values: &mut Rope, n: usize, width: usize) -> Result<(), Declined> {
        if values.len() < n * width {
            return Err(Declined::Corrupt(format!(
                "a page promises {n} values but holds {} bytes",
                values.len()
            )));
        }
        let mut left = n;
        while left > 0 {
            let (bytes, k) = match values.take_whole(width, left) {
                Some(run) => run,
                None => (values.take(width).expect("length checked"), 1),
            };
            let total = self.num_elements() + k;
            self.segments.push(bytes);
            self.segment_starts.push(total);
            left -= k;
        }
        Ok(())
    }

    /// `n` BYTE_ARRAY values, each behind its 4-byte little-endian length: a value inside one
    /// chunk is addressed in it (the chunk becomes a segment once), one cut by a chunk boundary
    /// is copied into a segment of its own. A value never straddles pages.
    fn push_prefixed(&mut self, values: &mut Rope, n: usize, utf8: bool) -> Result<(), Declined> {
        let page_bytes = values.len();
        let short = |i: usize| {
            Declined::Corrupt(format!(
                "a page promises {n} values but value {i} overruns its {page_bytes} bytes"
            ))
        };
        let ranges = self.values.as_mut().expect("byte arrays have ranges");
        ranges.reserve(n);
        // The chunk last made a segment: (its number in the rope, its segment).
        let mut current: Option<(u64, u32)> = None;
        for i in 0..n {
            let len = values.u32_le().ok_or_else(|| short(i))?;
            let size = len as usize;
            if size > values.len() {
                return Err(short(i));
            }
            let (segment, start, in_place) = match values.front_chunk() {
                Some((id, chunk, head)) if chunk.len() - head >= size => {
                    let segment = match current {
                        Some((seen, segment)) if seen == id => segment,
                        _ => {
                            // Page sizes are i32 in the format, so offsets within the slice of
                            // a chunk that a page holds fit u32.
                            if u32::try_from(chunk.len()).is_err() {
                                return Err(Declined::Corrupt("a page of 4 GiB or more".into()));
                            }
                            let segment = segment_index(self.segments.len())?;
                            self.segments.push(chunk.clone());
                            current = Some((id, segment));
                            segment
                        }
                    };
                    (segment, head as u32, true)
                }
                _ => {
                    let segment = segment_index(self.segments.len())?;
                    let copied = values.take(size).expect("length checked");
                    self.segments.push(copied);
                    (segment, 0, false)
                }
            };
            let bytes = &self.segments[segment as usize][start as usize..start as usize + size];
            if utf8 && std::str::from_utf8(bytes).is_err() {
                return Err(Declined::Fallback);
            }
            if in_place {
                values.advance(size);
            }
            ranges.push(ValueRange {
                segment,
                start,
                len,
            });
        }
        self.segment_starts.push(ranges.len());
        Ok(())
    }
}

fn segment_index(len: usize) -> Result<u32, Declined> {
    u32::try_from(len)
        .map_err(|_| Declined::Corrupt("more than 2^32 pieces in one column chunk".into()))
}

fn max_rep(leaf: &PlainLeaf) -> i16 {
    match leaf.shape {
        Shape::Scalar { .. } => 0,
        Shape::List { .. } => 1,
    }
}

fn max_def(leaf: &PlainLeaf) -> i16 {
    match leaf.shape {
        Shape::Scalar { max_def } | Shape::List { max_def, .. } => max_def,
    }
}

/// The levels of a V1 page: a 4-byte length, then RLE/bit-packed data (none when `max` is 0).
fn take_v1_levels(data: &mut Rope, max: i16) -> Result<Bytes, Declined> {
    if max == 0 {
        return Ok(Bytes::new());
    }
    let short = || Declined::Corrupt("page levels overrun the page".into());
    let len = data.u32_le().ok_or_else(short)? as usize;
    data.take(len).ok_or_else(short)
}

/// Levels of one page as runs `(level, count)`, reused from page to page.
#[derive(Default)]
struct LevelScratch {
    rep: Vec<(i16, usize)>,
    def: Vec<(i16, usize)>,
}

impl LevelScratch {
    fn decode(&mut self, data: &[u8], max: i16, n: usize, what: &str) -> Result<(), Declined> {
        decode_runs(data, bit_width(max), n, &mut self.def)
            .map_err(|e| Declined::Corrupt(format!("{what} levels: {e}")))
    }

    fn decode_both(
        &mut self,
        rep: &[u8],
        def: &[u8],
        max_def: i16,
        n: usize,
    ) -> Result<(), Declined> {
        decode_runs(rep, bit_width(1), n, &mut self.rep)
            .map_err(|e| Declined::Corrupt(format!("repetition levels: {e}")))?;
        self.decode(def, max_def, n, "definition")
    }

    /// Walks both run lists in step, appending the start of each new row to `offsets` (element
    /// indices counted from `first`); returns the page's element count.
    fn rows(
        &self,
        offsets: &mut Vec<usize>,
        first: usize,
        element_def: i16,
        max_def: i16,
    ) -> Result<usize, Declined> {
        let mut elements = 0;
        let (mut ri, mut di) = (0, 0);
        let (mut r_left, mut d_left) = (0, 0);
        let (mut r_val, mut d_val) = (0, 0);
        loop {
            if r_left == 0 {
                let Some(&(v, c)) = self.rep.get(ri) else {
                    break;
                };
                (r_val, r_left, ri) = (v, c, ri + 1);
                continue;
            }
            if d_left == 0 {
                let Some(&(v, c)) = self.def.get(di) else {
                    break;
                };
                (d_val, d_left, di) = (v, c, di + 1);
                continue;
            }
            let k = r_left.min(d_left);
            let is_element = d_val >= element_def;
            if is_element && d_val < max_def {
                // A null number inside a list: the Arrow path reports it properly.
                return Err(Declined::Fallback);
            }
            if r_val == 0 {
                // Each of the k entries starts a row holding at most this one element.
                for _ in 0..k {
                    offsets.push(first + elements);
                    elements += usize::from(is_element);
                }
            } else {
                if offsets.is_empty() {
                    return Err(Declined::Corrupt(
                        "a column chunk starts inside a list".into(),
                    ));
                }
                if is_element {
                    elements += k;
                }
            }
            r_left -= k;
            d_left -= k;
        }
        if r_left != 0 || d_left != 0 || ri != self.rep.len() || di != self.def.len() {
            return Err(Declined::Corrupt(
                "repetition and definition levels disagree on the value count".into(),
            ));
        }
        Ok(elements)
    }
}

/// Bits per level for levels up to `max`.
fn bit_width(max: i16) -> u8 {
    (16 - (max as u16).leading_zeros()) as u8
}

/// Decodes exactly `n` levels of Parquet's RLE/bit-packed hybrid encoding into runs, merging
/// neighbours of equal value. Errors when the data ends early.
fn decode_runs(
    mut data: &[u8],
    bit_width: u8,
    n: usize,
    runs: &mut Vec<(i16, usize)>,
) -> Result<(), String> {
    runs.clear();
    let mut push = |v: i16, c: usize| match runs.last_mut() {
        Some((last, count)) if *last == v => *count += c,
        _ => runs.push((v, c)),
    };
    let value_bytes = usize::from(bit_width).div_ceil(8);
    let mut left = n;
    while left > 0 {
        let header = read_uleb128(&mut data).ok_or("truncated run header")?;
        if header & 1 == 0 {
            let count = usize::try_from(header >> 1).map_err(|_| "run too long")?;
            let bytes = data.get(..value_bytes).ok_or("truncated run value")?;
            let mut v = 0u32;
            for (i, b) in bytes.iter().enumerate() {
                v |= u32::from(*b) << (8 * i);
            }
            data = &data[value_bytes..];
            let take = count.min(left);
            push(v as i16, take);
            left -= take;
        } else {
            let groups = usize::try_from(header >> 1).map_err(|_| "run too long")?;
            let len = groups * usize::from(bit_width);
            let packed = data.get(..len).ok_or("truncated bit-packed run")?;
            data = &data[len..];
            let count = (groups * 8).min(left);
            let mask = (1u32 << bit_width) - 1;
            for i in 0..count {
                let bit = i * usize::from(bit_width);
                let mut word = 0u32;
                for (j, b) in packed[bit / 8..(bit / 8 + 3).min(packed.len())]
                    .iter()
                    .enumerate()
                {
                    word |= u32::from(*b) << (8 * j);
                }
                push(((word >> (bit % 8)) & mask) as i16, 1);
            }
            left -= count;
        }
        if header >> 1 == 0 {
            return Err("empty run".into());
        }
    }
    Ok(())
}

fn read_uleb128(data: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = data.split_first()?;
        *data = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes levels the simple way: one RLE run per value change.
    fn rle(levels: &[i16], bit_width: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < levels.len() {
            let v = levels[i];
            let mut j = i;
            while j < levels.len() && levels[j] == v {
                j += 1;
            }
            let mut h = ((j - i) as u64) << 1;
            loop {
                let b = (h & 0x7f) as u8;
                h >>= 7;
                out.push(if h > 0 { b | 0x80 } else { b });
                if h == 0 {
                    break;
                }
            }
            out.extend_from_slice(&(v as u32).to_le_bytes()[..usize::from(bit_width).div_ceil(8)]);
            i = j;
        }
        out
    }

    #[test]
    fn runs_decode_rle_and_bit_packed() {
        let levels = [0i16, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 2];
        let mut runs = Vec::new();
        decode_runs(&rle(&levels, 2), 2, levels.len(), &mut runs).unwrap();
        assert_eq!(runs, vec![(0, 1), (1, 9), (0, 2), (2, 1)]);
        // One bit-packed group of 8 levels, width 1: 0,1,1,1,1,1,1,1 → 0b1111_1110.
        let mut runs = Vec::new();
        decode_runs(&[0x03, 0xFE], 1, 8, &mut runs).unwrap();
        assert_eq!(runs, vec![(0, 1), (1, 7)]);
        assert!(decode_runs(&[0x03], 1, 8, &mut runs).is_err(), "truncated");
        assert!(decode_runs(&[], 1, 1, &mut runs).is_err(), "empty");
    }

    #[test]
    fn rows_follow_levels_with_empty_and_null_lists() {
        // Rows: [a, b], [], null, [c]. 3-level list, required elements: max_def 2,
        // element_def 2; an empty list is def 1, a null list def 0.
        let rep = [0i16, 1, 0, 0, 0];
        let def = [2i16, 2, 1, 0, 2];
        let mut s = LevelScratch::default();
        decode_runs(&rle(&rep, 1), 1, 5, &mut s.rep).unwrap();
        decode_runs(&rle(&def, 2), 2, 5, &mut s.def).unwrap();
        let mut offsets = Vec::new();
        assert_eq!(s.rows(&mut offsets, 10, 2, 2).unwrap(), 3);
        assert_eq!(offsets, vec![10, 12, 12, 12]);
        // A null element (optional leaf: max_def 3, element_def 2, def 2) declines.
        let def = [3i16, 2, 1, 0, 3];
        decode_runs(&rle(&def, 2), 2, 5, &mut s.def).unwrap();
        assert!(matches!(
            s.rows(&mut Vec::new(), 0, 2, 3),
            Err(Declined::Fallback)
        ));
    }

    #[test]
    fn copies_across_page_boundaries() {
        let col = PlainColumn {
            width: 4,
            segments: vec![
                Bytes::from((0u32..3).flat_map(u32::to_le_bytes).collect::<Vec<_>>()),
                Bytes::from((3u32..10).flat_map(u32::to_le_bytes).collect::<Vec<_>>()),
            ],
            segment_starts: vec![0, 3, 10],
            offsets: Some(vec![0, 2, 5, 10]),
            values: None,
        };
        let u32s = |b: &[u8]| -> Vec<u32> {
            b.chunks(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        assert_eq!(col.num_rows(), 3);
        let mut out = vec![0u8; 12];
        col.copy_to(col.row(1), &mut out, Stores::Cached);
        assert_eq!(u32s(&out), vec![2, 3, 4]);
        // What a prefetch of each row touches: the row's bytes in the page of its first
        // element, which for the row crossing pages is its start only.
        assert_eq!(u32s(col.first_piece(col.row(0))), vec![0, 1]);
        assert_eq!(u32s(col.first_piece(col.row(1))), vec![2]);
        assert_eq!(u32s(col.first_piece(col.row(2))), vec![5, 6, 7, 8, 9]);
        assert!(col.first_piece(3..3).is_empty());
    }

    fn prefixed(values: &[&[u8]]) -> Vec<u8> {
        values
            .iter()
            .flat_map(|v| {
                (v.len() as u32)
                    .to_le_bytes()
                    .into_iter()
                    .chain(v.iter().copied())
            })
            .collect()
    }

    /// An empty byte-array column, as [`decode_column`] starts one.
    fn byte_column() -> PlainColumn {
        PlainColumn {
            width: 1,
            segments: Vec::new(),
            segment_starts: vec![0],
            offsets: None,
            values: Some(Vec::new()),
        }
    }

    /// `bytes` as a rope cut every `cut` bytes.
    fn cut(bytes: &[u8], cut: usize) -> Rope {
        Rope::new(bytes.chunks(cut.max(1)).map(Bytes::copy_from_slice))
    }

    #[test]
    fn byte_array_values_are_found_behind_their_prefixes_whatever_the_chunks() {
        let page = prefixed(&[b"ab", b"", b"xyz"]);
        // trailing bytes are ignored
        let page2 = [prefixed(&[b"q", b"0123456789"]), vec![0xAA; 3]].concat();
        for chunk in [1, 2, 3, 5, 7, 100] {
            let mut col = byte_column();
            col.push_prefixed(&mut cut(&page, chunk), 3, true).unwrap();
            let mut rest = cut(&page2, chunk);
            col.push_prefixed(&mut rest, 2, false).unwrap();
            assert_eq!(rest.len(), 3, "stops after its values");
            assert!(col.is_byte_array() && !col.is_list());
            assert_eq!(col.num_rows(), 5);
            let rows: Vec<&[u8]> = (0..5).map(|r| col.value(r)).collect();
            assert_eq!(
                rows,
                [&b"ab"[..], b"", b"xyz", b"q", b"0123456789"],
                "cut {chunk}"
            );
        }
        // In one chunk, values are addressed in it: one segment per page, no copies.
        let mut col = byte_column();
        col.push_prefixed(&mut cut(&page, 100), 3, true).unwrap();
        assert_eq!(col.segments.len(), 1);
    }

    #[test]
    fn elements_cut_by_chunk_boundaries_are_whole_in_their_segments() {
        let values: Vec<u8> = (0u32..5000).flat_map(u32::to_le_bytes).collect();
        for chunk in [1, 3, 4, 6, 13, 200, 4099] {
            let mut col = PlainColumn {
                width: 4,
                segments: Vec::new(),
                segment_starts: vec![0],
                offsets: None,
                values: None,
            };
            col.push_fixed(&mut cut(&values, chunk), 5000, 4).unwrap();
            // Streaming stores (a large batch) copy whole segments past the cache.
            for stores in [Stores::Cached, Stores::Streaming] {
                let mut out = vec![0u8; 20_000];
                col.copy_to(0..5000, &mut out, stores);
                crate::streaming::fence();
                assert!(out == values, "cut {chunk}, {stores:?}");
                let mut out = vec![0u8; 4 * 3000];
                col.copy_to(1003..4003, &mut out, stores);
                assert!(out == values[4 * 1003..4 * 4003], "cut {chunk}, {stores:?}");
            }
            assert_eq!(col.value(17), &17u32.to_le_bytes());
        }
    }

    #[test]
    fn byte_array_overruns_are_corrupt_and_bad_utf8_falls_back() {
        let page = prefixed(&[b"abc"]);
        for chunk in [1, 4, 100] {
            assert!(matches!(
                byte_column().push_prefixed(&mut cut(&page[..6], chunk), 1, false),
                Err(Declined::Corrupt(_))
            ));
            assert!(matches!(
                byte_column().push_prefixed(&mut cut(&page, chunk), 2, false),
                Err(Declined::Corrupt(_))
            ));
            let bad = prefixed(&[&[0xff, 0xfe]]);
            assert!(matches!(
                byte_column().push_prefixed(&mut cut(&bad, chunk), 1, true),
                Err(Declined::Fallback)
            ));
            assert!(byte_column()
                .push_prefixed(&mut cut(&bad, chunk), 1, false)
                .is_ok());
        }
    }
}
