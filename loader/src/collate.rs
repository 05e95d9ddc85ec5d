//! Rows of decoded units → batch columns, gathered straight into pooled (pinned) buffers.
//!
//! A batch's rows come from many units at once (the window shuffle interleaves shards), so
//! collation is a gather: for each output row, read `(unit, row)` and write the value into its
//! place in the output buffer — one copy from the decoded unit (an Arrow buffer, or for PLAIN
//! Parquet numbers the page bytes themselves, see `decode::plain`) into memory that can go to
//! the GPU by DMA as it is. How a column is laid out depends on its Arrow type, fixed
//! once from the dataset schema so every batch of an epoch has the same kinds of columns:
//!
//! | Arrow type | [`Column`] |
//! |---|---|
//! | integers, floats | `Tensor [B]` |
//! | Boolean | `Tensor [B]` of u8 (0/1) |
//! | FixedSizeList of numbers | `Tensor [B, L]` |
//! | List / LargeList of numbers, [`ListMode::Padded`] | `Padded { values: [B, Lmax], lengths: [B] }` — when all lists of the batch have one length `L`, `values` is exactly `[B, L]` |
//! | List / LargeList of numbers, [`ListMode::Ragged`] | `Ragged { values: [ΣL], offsets: [B+1] }` |
//! | Binary, LargeBinary, Utf8, LargeUtf8 (and views), [`BinaryMode::Padded`] | `Padded { values: uint8 [B, Lmax], lengths: [B] }` |
//! | the same, [`BinaryMode::Ragged`] | `Ragged { values: uint8 [ΣL], offsets: [B+1] }` |
//! | FixedSizeBinary(L), either tensor mode | `Tensor` uint8 `[B, L]` |
//! | strings and binary in [`BinaryMode::Bytes`] (the default), anything else (structs, …) | `Arrow(ArrayRef)` |
//!
//! Lengths and offsets are int64. A null list, string or binary value counts as empty; a null
//! *number* (or fixed-size value) cannot be represented in a dense tensor and is an
//! [`Error::UnsupportedColumn`] naming the column (select the columns you need, or fill nulls
//! when writing the data). Binary values take the same road as lists of numbers: each row's
//! bytes are copied once, from the unit (an Arrow buffer, or for PLAIN Parquet the page itself)
//! into the pooled batch buffer, with no object per value. Each row's pages are prefetched a
//! few rows ahead ([`crate::prefetch`]), and a buffer of 4 MiB or more is written with
//! streaming stores, which skip reading the destination from memory first
//! ([`crate::streaming`]).

use std::fmt;
use std::mem::size_of;
use std::ops::Range;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BinaryViewArray, FixedSizeBinaryArray,
    FixedSizeListArray, GenericBinaryArray, GenericListArray, GenericStringArray, OffsetSizeTrait,
    StringViewArray,
};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, Schema,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use serde::{Deserialize, Serialize};

use crate::config::{BinaryMode, ColumnMode, ListMode};
use crate::decode::plain::PlainColumn;
use crate::decode::{DecodedUnit, UnitColumn};
use crate::pinned::{Element, MemoryKind};
use crate::pool::{BufferPool, PooledBuffer};
use crate::prefetch::{self, NUMBERS_AHEAD, ROWS_AHEAD};
use crate::streaming::{self, Stores};
use crate::{Error, Result};

/// Runs `$body` with `$A` bound to the Arrow primitive type of `$dtype`.
macro_rules! dispatch {
    ($dtype:expr, $A:ident => $body:expr) => {
        match $dtype {
            DType::I8 => {
                type $A = Int8Type;
                $body
            }
            DType::I16 => {
                type $A = Int16Type;
                $body
            }
            DType::I32 => {
                type $A = Int32Type;
                $body
            }
            DType::I64 => {
                type $A = Int64Type;
                $body
            }
            DType::U8 => {
                type $A = UInt8Type;
                $body
            }
            DType::U16 => {
                type $A = UInt16Type;
                $body
            }
            DType::U32 => {
                type $A = UInt32Type;
                $body
            }
            DType::U64 => {
                type $A = UInt64Type;
                $body
            }
            DType::F32 => {
                type $A = Float32Type;
                $body
            }
            DType::F64 => {
                type $A = Float64Type;
                $body
            }
        }
    };
}

/// Element type of a [`Tensor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }

    /// NumPy's name for it (`"int32"`, `"float64"`, …).
    pub fn numpy_name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::U16 => "uint16",
            DType::I16 => "int16",
            DType::U32 => "uint32",
            DType::I32 => "int32",
            DType::U64 => "uint64",
            DType::I64 => "int64",
            DType::F32 => "float32",
            DType::F64 => "float64",
        }
    }

    /// The tensor type for an Arrow number type (`None` for anything else).
    pub fn from_arrow(t: &DataType) -> Option<DType> {
        Some(match t {
            DataType::Int8 => DType::I8,
            DataType::Int16 => DType::I16,
            DataType::Int32 => DType::I32,
            DataType::Int64 => DType::I64,
            DataType::UInt8 => DType::U8,
            DataType::UInt16 => DType::U16,
            DataType::UInt32 => DType::U32,
            DataType::UInt64 => DType::U64,
            DataType::Float32 => DType::F32,
            DataType::Float64 => DType::F64,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.numpy_name())
    }
}

/// A dense, C-contiguous n-d array in a pooled host buffer.
///
/// [`Tensor::as_ptr`] and [`Tensor::byte_len`] describe memory that stays valid and unmoved
/// until the tensor is dropped — what DLPack or the buffer protocol export needs. Dropping it
/// returns the buffer to the loader's pool.
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    buffer: PooledBuffer,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("memory", &self.buffer.kind())
            .finish()
    }
}

impl Tensor {
    fn new(pool: &BufferPool, dtype: DType, shape: Vec<usize>) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        let buffer = pool.get(numel * dtype.size())?;
        Ok(Tensor {
            dtype,
            shape,
            buffer,
        })
    }

    /// A 1-d tensor of `values` in `pool`'s memory (page-locked when the pool's is), for the
    /// small per-batch arrays a binding adds beside the columns (sample ids, padding flags).
    pub fn from_values<T: Element>(pool: &BufferPool, values: &[T]) -> Result<Tensor> {
        let mut tensor = Tensor::new(pool, T::DTYPE, vec![values.len()])?;
        tensor.as_mut_slice::<T>().copy_from_slice(values);
        Ok(tensor)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn byte_len(&self) -> usize {
        self.buffer.len()
    }

    /// Start of the data (page-aligned; cache-line-aligned for pageable buffers under a page).
    pub fn as_ptr(&self) -> *const u8 {
        self.buffer.as_ptr()
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_bytes()
    }

    /// The elements as `T`s, or `None` if `T` is not the tensor's dtype.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        (T::DTYPE == self.dtype).then(|| self.buffer.as_slice::<T>())
    }

    fn as_mut_slice<T: Element>(&mut self) -> &mut [T] {
        debug_assert_eq!(T::DTYPE, self.dtype);
        self.buffer.as_mut_slice::<T>()
    }

    fn as_mut_bytes(&mut self) -> &mut [u8] {
        self.buffer.as_mut_slice::<u8>()
    }

    pub fn memory_kind(&self) -> MemoryKind {
        self.buffer.kind()
    }

    /// The underlying buffer (for exporters that manage lifetimes themselves).
    pub fn buffer(&self) -> &PooledBuffer {
        &self.buffer
    }

    /// Gives up the tensor's buffer, e.g. to hand its ownership to a DLPack deleter.
    pub fn into_parts(self) -> (DType, Vec<usize>, PooledBuffer) {
        (self.dtype, self.shape, self.buffer)
    }
}

/// One column of a batch.
#[derive(Debug)]
pub enum Column {
    /// Numbers `[B]`, or fixed-size lists `[B, L]`.
    Tensor(Tensor),
    /// Variable-length lists padded with zeros to `[B, Lmax]`, with their lengths `[B]`.
    Padded { values: Tensor, lengths: Tensor },
    /// Variable-length lists concatenated `[ΣL]`, with offsets `[B + 1]`.
    Ragged { values: Tensor, offsets: Tensor },
    /// Everything that is not a number and not asked for as a tensor: strings and binary in
    /// [`BinaryMode::Bytes`], nested types.
    Arrow(ArrayRef),
}

impl Column {
    /// Bytes of pool buffers this column holds (their capacities; 0 for Arrow arrays).
    pub fn pooled_capacity(&self) -> usize {
        match self {
            Column::Tensor(t) => t.buffer().capacity(),
            Column::Padded {
                values,
                lengths: other,
            }
            | Column::Ragged {
                values,
                offsets: other,
            } => values.buffer().capacity() + other.buffer().capacity(),
            Column::Arrow(_) => 0,
        }
    }
}

/// Identifies a delivered sample: its stream and its index within the stream (samples of
/// earlier shards + row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SampleId {
    pub stream: u32,
    pub global: u64,
}

/// One batch for the consumer.
#[derive(Debug)]
pub struct Batch {
    /// Epoch it belongs to.
    pub epoch: u64,
    /// Index in this rank's batch sequence of the epoch (0-based; a resumed epoch restarts at 0).
    pub index: u64,
    /// The columns, in the configured order.
    pub columns: Vec<(String, Column)>,
    /// Per row: a padded repeat (only in the epoch's last batch, without `drop_last`).
    pub padded: Vec<bool>,
    /// Per row: which sample it is.
    pub samples: Vec<SampleId>,
}

impl Batch {
    /// Rows.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }
}

/// How one column is collated, decided from the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Number(DType),
    Bool,
    FixedList(DType, usize),
    List {
        item: DType,
        large: bool,
        mode: ListMode,
    },
    /// Binary and string values.
    Bytes {
        ty: BytesType,
        mode: BinaryMode,
    },
    Arrow,
}

/// The Arrow type of a binary or string column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BytesType {
    Binary,
    LargeBinary,
    Utf8,
    LargeUtf8,
    BinaryView,
    Utf8View,
    Fixed(usize),
}

impl BytesType {
    fn from_arrow(t: &DataType) -> Option<BytesType> {
        Some(match t {
            DataType::Binary => BytesType::Binary,
            DataType::LargeBinary => BytesType::LargeBinary,
            DataType::Utf8 => BytesType::Utf8,
            DataType::LargeUtf8 => BytesType::LargeUtf8,
            DataType::BinaryView => BytesType::BinaryView,
            DataType::Utf8View => BytesType::Utf8View,
            DataType::FixedSizeBinary(n) => BytesType::Fixed((*n).max(0) as usize),
            _ => return None,
        })
    }
}

/// Builds batches from decoded units for one output schema.
#[derive(Debug)]
pub struct Collator {
    columns: Vec<(String, Layout)>,
    pool: BufferPool,
}

impl Collator {
    /// `schema`: the loader's output columns in order; `mode` gives each column's list mode, or
    /// a [`ColumnMode`] with its binary mode too (a bare [`ListMode`] keeps binary and string
    /// columns as Arrow arrays).
    pub fn new<M: Into<ColumnMode>>(
        schema: &Schema,
        mode: impl Fn(&str) -> M,
        pool: BufferPool,
    ) -> Collator {
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let mode: ColumnMode = mode(f.name()).into();
                let layout = match f.data_type() {
                    DataType::Boolean => Layout::Bool,
                    DataType::FixedSizeList(item, n) => match DType::from_arrow(item.data_type()) {
                        Some(d) => Layout::FixedList(d, (*n).max(0) as usize),
                        None => Layout::Arrow,
                    },
                    DataType::List(item) | DataType::LargeList(item) => {
                        match DType::from_arrow(item.data_type()) {
                            Some(d) => Layout::List {
                                item: d,
                                large: matches!(f.data_type(), DataType::LargeList(_)),
                                mode: mode.list,
                            },
                            None => Layout::Arrow,
                        }
                    }
                    t => match (DType::from_arrow(t), BytesType::from_arrow(t)) {
                        (Some(d), _) => Layout::Number(d),
                        (None, Some(ty)) => Layout::Bytes {
                            ty,
                            mode: mode.binary,
                        },
                        (None, None) => Layout::Arrow,
                    },
                };
                (f.name().clone(), layout)
            })
            .collect();
        Collator { columns, pool }
    }

    /// Gathers `rows` (`(unit index, row)` pairs) from `units` (whose columns follow the
    /// collator's schema, by position) into batch columns.
    pub fn collate(
        &self,
        units: &[&DecodedUnit],
        rows: &[(usize, usize)],
    ) -> Result<Vec<(String, Column)>> {
        let mut out = Vec::with_capacity(self.columns.len());
        for (i, (name, layout)) in self.columns.iter().enumerate() {
            let sources: Vec<&UnitColumn> = units.iter().map(|u| &u.columns[i]).collect();
            let col = self.column(name, *layout, &sources, rows)?;
            out.push((name.clone(), col));
        }
        // Some buffers may have been written with streaming stores: make them visible before
        // the batch goes to another thread.
        streaming::fence();
        let pooled: usize = out.iter().map(|(_, c)| c.pooled_capacity()).sum();
        self.pool.note_batch(pooled as u64);
        Ok(out)
    }

    fn column(
        &self,
        name: &str,
        layout: Layout,
        sources: &[&UnitColumn],
        rows: &[(usize, usize)],
    ) -> Result<Column> {
        let b = rows.len();
        let unsupported = |why: &str| Error::UnsupportedColumn {
            column: name.to_string(),
            data_type: sources
                .iter()
                .find_map(|s| match s {
                    UnitColumn::Arrow(a) => Some(a.data_type().to_string()),
                    UnitColumn::Plain(_) => None,
                })
                .unwrap_or_default(),
            how: why.to_string(),
        };
        // Only numbers and lists of numbers are ever decoded by the fast path.
        let arrow_only = || {
            sources
                .iter()
                .map(|s| match s {
                    UnitColumn::Arrow(a) => Some(a),
                    UnitColumn::Plain(_) => None,
                })
                .collect::<Option<Vec<&ArrayRef>>>()
                .ok_or_else(|| unsupported("this layout (its units were decoded as raw numbers)"))
        };
        match layout {
            Layout::Number(d) => {
                let mut t = Tensor::new(&self.pool, d, vec![b])?;
                dispatch!(d, A => gather_numbers::<A>(sources, rows, t.as_mut_bytes())
                    .map_err(|e| unsupported(&e))?);
                Ok(Column::Tensor(t))
            }
            Layout::Bool => {
                let arrays = arrow_only()?;
                let mut t = Tensor::new(&self.pool, DType::U8, vec![b])?;
                let out = t.as_mut_slice::<u8>();
                let bools = arrays
                    .iter()
                    .map(|a| a.as_boolean_opt())
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        unsupported("a bool tensor (the shards disagree on its type)")
                    })?;
                for (o, &(u, r)) in out.iter_mut().zip(rows) {
                    if bools[u].is_null(r) {
                        return Err(unsupported("a dense tensor: it holds nulls"));
                    }
                    *o = u8::from(bools[u].value(r));
                }
                Ok(Column::Tensor(t))
            }
            Layout::FixedList(d, len) => {
                let arrays = arrow_only()?;
                let lists = arrays
                    .iter()
                    .map(|a| a.as_fixed_size_list_opt())
                    .collect::<Option<Vec<&FixedSizeListArray>>>()
                    .ok_or_else(|| {
                        unsupported("a [B, L] tensor (the shards disagree on its type)")
                    })?;
                let mut t = Tensor::new(&self.pool, d, vec![b, len])?;
                dispatch!(d, A => gather_fixed::<A>(&lists, rows, len, t.as_mut_bytes())
                    .map_err(|e| unsupported(&e))?);
                Ok(Column::Tensor(t))
            }
            Layout::List { item, large, mode } => {
                if large {
                    let views = dispatch!(item, A => list_views::<i64, A>(sources))
                        .map_err(|e| unsupported(&e))?;
                    self.gather_lists(&views, rows, item, mode)
                } else {
                    let views = dispatch!(item, A => list_views::<i32, A>(sources))
                        .map_err(|e| unsupported(&e))?;
                    self.gather_lists(&views, rows, item, mode)
                }
            }
            Layout::Bytes { ty, mode } => {
                let views = sources
                    .iter()
                    .map(|s| BytesView::new(s, ty))
                    .collect::<std::result::Result<Vec<_>, String>>()
                    .map_err(|e| unsupported(&e))?;
                match (mode.tensor(), ty) {
                    (None, _) if views.iter().all(|v| matches!(v, BytesView::Arrow(_))) => {
                        // Only Arrow arrays: as it always was.
                        let arrays = arrow_only()?;
                        let dyns: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
                        let array = arrow::compute::interleave(&dyns, rows)
                            .map_err(|e| unsupported(&format!("an Arrow array ({e})")))?;
                        Ok(Column::Arrow(array))
                    }
                    (None, _) => build_arrow_bytes(ty, &views, rows)
                        .map(Column::Arrow)
                        .map_err(|e| unsupported(&e)),
                    (Some(_), BytesType::Fixed(len)) => {
                        let mut t = Tensor::new(&self.pool, DType::U8, vec![b, len])?;
                        let out = t.as_mut_bytes();
                        let stores = Stores::for_output(out.len());
                        for (i, &(u, r)) in rows.iter().enumerate() {
                            prefetch::ahead(rows, i, ROWS_AHEAD, |&(u, r)| {
                                prefetch::prefetch(views[u].value(r).unwrap_or_default())
                            });
                            let v = views[u]
                                .value(r)
                                .ok_or_else(|| unsupported("a dense tensor: it holds nulls"))?;
                            stores.copy(&mut out[i * len..(i + 1) * len], v);
                        }
                        Ok(Column::Tensor(t))
                    }
                    (Some(mode), _) => self.gather_bytes(&views, rows, mode),
                }
            }
            Layout::Arrow => {
                let arrays = arrow_only()?;
                let dyns: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
                let array = arrow::compute::interleave(&dyns, rows)
                    .map_err(|e| unsupported(&format!("an Arrow array ({e})")))?;
                Ok(Column::Arrow(array))
            }
        }
    }

    /// Copies each row's list into the batch: straight from the unit's bytes (Arrow buffer or
    /// PLAIN page) into the pooled buffer, one `memcpy` per row (or per page piece).
    fn gather_lists<O: OffsetSizeTrait>(
        &self,
        views: &[ListView<'_, O>],
        rows: &[(usize, usize)],
        item: DType,
        mode: ListMode,
    ) -> Result<Column> {
        let w = item.size();
        let b = rows.len();
        match mode {
            ListMode::Padded => {
                let lmax = rows
                    .iter()
                    .map(|&(u, r)| views[u].span(r).len())
                    .max()
                    .unwrap_or(0);
                let mut values = Tensor::new(&self.pool, item, vec![b, lmax])?;
                let mut lengths = Tensor::new(&self.pool, DType::I64, vec![b])?;
                let out = values.as_mut_bytes();
                let stores = Stores::for_output(out.len());
                let lens = lengths.as_mut_slice::<i64>();
                for (i, &(u, r)) in rows.iter().enumerate() {
                    prefetch::ahead(rows, i, ROWS_AHEAD, |&(u, r)| views[u].prefetch(r));
                    let span = views[u].span(r);
                    let n = span.len();
                    let row = &mut out[i * lmax * w..(i + 1) * lmax * w];
                    views[u].copy(span, &mut row[..n * w], stores);
                    // Pooled buffers are recycled: padding must be written, not assumed.
                    row[n * w..].fill(0);
                    lens[i] = n as i64;
                }
                Ok(Column::Padded { values, lengths })
            }
            ListMode::Ragged => {
                let total: usize = rows.iter().map(|&(u, r)| views[u].span(r).len()).sum();
                let mut values = Tensor::new(&self.pool, item, vec![total])?;
                let mut offsets = Tensor::new(&self.pool, DType::I64, vec![b + 1])?;
                let out = values.as_mut_bytes();
                let stores = Stores::for_output(out.len());
                let offs = offsets.as_mut_slice::<i64>();
                let mut at = 0usize;
                offs[0] = 0;
                for (i, &(u, r)) in rows.iter().enumerate() {
                    prefetch::ahead(rows, i, ROWS_AHEAD, |&(u, r)| views[u].prefetch(r));
                    let span = views[u].span(r);
                    let n = span.len();
                    views[u].copy(span, &mut out[at * w..(at + n) * w], stores);
                    at += n;
                    offs[i + 1] = at as i64;
                }
                Ok(Column::Ragged { values, offsets })
            }
        }
    }
}

impl Collator {
    /// Copies each row's bytes into a uint8 batch tensor (a null value counts as empty).
    fn gather_bytes(
        &self,
        views: &[BytesView<'_>],
        rows: &[(usize, usize)],
        mode: ListMode,
    ) -> Result<Column> {
        let b = rows.len();
        let value = |&(u, r): &(usize, usize)| views[u].value(r).unwrap_or_default();
        match mode {
            ListMode::Padded => {
                let lmax = rows.iter().map(|x| value(x).len()).max().unwrap_or(0);
                let mut values = Tensor::new(&self.pool, DType::U8, vec![b, lmax])?;
                let mut lengths = Tensor::new(&self.pool, DType::I64, vec![b])?;
                let out = values.as_mut_bytes();
                let stores = Stores::for_output(out.len());
                let lens = lengths.as_mut_slice::<i64>();
                for (i, x) in rows.iter().enumerate() {
                    prefetch::ahead(rows, i, ROWS_AHEAD, |x| prefetch::prefetch(value(x)));
                    let v = value(x);
                    let row = &mut out[i * lmax..(i + 1) * lmax];
                    stores.copy(&mut row[..v.len()], v);
                    // Pooled buffers are recycled: padding must be written, not assumed.
                    row[v.len()..].fill(0);
                    lens[i] = v.len() as i64;
                }
                Ok(Column::Padded { values, lengths })
            }
            ListMode::Ragged => {
                let total: usize = rows.iter().map(|x| value(x).len()).sum();
                let mut values = Tensor::new(&self.pool, DType::U8, vec![total])?;
                let mut offsets = Tensor::new(&self.pool, DType::I64, vec![b + 1])?;
                let out = values.as_mut_bytes();
                let stores = Stores::for_output(out.len());
                let offs = offsets.as_mut_slice::<i64>();
                let mut at = 0usize;
                offs[0] = 0;
                for (i, x) in rows.iter().enumerate() {
                    prefetch::ahead(rows, i, ROWS_AHEAD, |x| prefetch::prefetch(value(x)));
                    let v = value(x);
                    stores.copy(&mut out[at..at + v.len()], v);
                    at += v.len();
                    offs[i + 1] = at as i64;
                }
                Ok(Column::Ragged { values, offsets })
            }
        }
    }
}

/// One unit's binary or string column, seen as one byte string per row.
enum BytesView<'a> {
    Arrow(ArrowBytes<'a>),
    /// PLAIN BYTE_ARRAY or FIXED_LEN_BYTE_ARRAY values in their pages (never null).
    Plain(&'a PlainColumn),
}

enum ArrowBytes<'a> {
    Binary(&'a GenericBinaryArray<i32>),
    LargeBinary(&'a GenericBinaryArray<i64>),
    Utf8(&'a GenericStringArray<i32>),
    LargeUtf8(&'a GenericStringArray<i64>),
    BinaryView(&'a BinaryViewArray),
    Utf8View(&'a StringViewArray),
    Fixed(&'a FixedSizeBinaryArray),
}

impl<'a> BytesView<'a> {
    /// Views a unit's column; any binary or string type will do (shards may store one column
    /// as Binary in one file and LargeUtf8 in another), except that a fixed-size column needs
    /// values of exactly its size.
    fn new(source: &'a UnitColumn, ty: BytesType) -> std::result::Result<Self, String> {
        let mismatch = || "a byte tensor (the shards disagree on its type)".to_string();
        let fixed = match ty {
            BytesType::Fixed(n) => Some(n),
            _ => None,
        };
        let a = match source {
            UnitColumn::Plain(p) => {
                return match fixed {
                    Some(n) if !p.is_byte_array() && !p.is_list() && p.width() == n => {
                        Ok(BytesView::Plain(p))
                    }
                    None if p.is_byte_array() => Ok(BytesView::Plain(p)),
                    _ => Err(mismatch()),
                }
            }
            UnitColumn::Arrow(a) => a,
        };
        let view = match a.data_type() {
            DataType::FixedSizeBinary(n) if fixed == Some((*n).max(0) as usize) => {
                ArrowBytes::Fixed(a.as_fixed_size_binary())
            }
            _ if fixed.is_some() => return Err(mismatch()),
            DataType::Binary => ArrowBytes::Binary(a.as_binary::<i32>()),
            DataType::LargeBinary => ArrowBytes::LargeBinary(a.as_binary::<i64>()),
            DataType::Utf8 => ArrowBytes::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => ArrowBytes::LargeUtf8(a.as_string::<i64>()),
            DataType::BinaryView => ArrowBytes::BinaryView(a.as_binary_view()),
            DataType::Utf8View => ArrowBytes::Utf8View(a.as_string_view()),
            _ => return Err(mismatch()),
        };
        Ok(BytesView::Arrow(view))
    }

    /// Row `r`'s bytes, `None` when null.
    fn value(&self, r: usize) -> Option<&'a [u8]> {
        let a = match self {
            BytesView::Plain(p) => return Some(p.value(r)),
            BytesView::Arrow(a) => a,
        };
        macro_rules! get {
            ($arr:expr, $v:expr) => {
                if $arr.is_null(r) {
                    None
                } else {
                    Some($v)
                }
            };
        }
        match a {
            ArrowBytes::Binary(x) => get!(x, x.value(r)),
            ArrowBytes::LargeBinary(x) => get!(x, x.value(r)),
            ArrowBytes::Utf8(x) => get!(x, x.value(r).as_bytes()),
            ArrowBytes::LargeUtf8(x) => get!(x, x.value(r).as_bytes()),
            ArrowBytes::BinaryView(x) => get!(x, x.value(r)),
            ArrowBytes::Utf8View(x) => get!(x, x.value(r).as_bytes()),
            ArrowBytes::Fixed(x) => get!(x, x.value(r)),
        }
    }
}

/// An Arrow array of type `ty` holding `rows`, for [`BinaryMode::Bytes`] when some units were
/// decoded by the PLAIN fast path (the values are the same as `interleave` would give).
fn build_arrow_bytes(
    ty: BytesType,
    views: &[BytesView<'_>],
    rows: &[(usize, usize)],
) -> std::result::Result<ArrayRef, String> {
    use arrow::array::{
        BinaryViewBuilder, FixedSizeBinaryBuilder, GenericBinaryBuilder, GenericStringBuilder,
        StringViewBuilder,
    };
    use std::sync::Arc;
    let total: usize = rows
        .iter()
        .map(|&(u, r)| views[u].value(r).map_or(0, <[u8]>::len))
        .sum();
    fn utf8(v: &[u8]) -> std::result::Result<&str, String> {
        std::str::from_utf8(v).map_err(|e| format!("a string column ({e})"))
    }
    fn same(v: &[u8]) -> std::result::Result<&[u8], String> {
        Ok(v)
    }
    macro_rules! build {
        ($builder:expr, $conv:expr) => {{
            let mut b = $builder;
            for &(u, r) in rows {
                match views[u].value(r) {
                    Some(v) => b.append_value($conv(v)?),
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match ty {
        BytesType::Binary => build!(
            GenericBinaryBuilder::<i32>::with_capacity(rows.len(), total),
            same
        ),
        BytesType::LargeBinary => build!(
            GenericBinaryBuilder::<i64>::with_capacity(rows.len(), total),
            same
        ),
        BytesType::Utf8 => build!(
            GenericStringBuilder::<i32>::with_capacity(rows.len(), total),
            utf8
        ),
        BytesType::LargeUtf8 => build!(
            GenericStringBuilder::<i64>::with_capacity(rows.len(), total),
            utf8
        ),
        BytesType::BinaryView => build!(BinaryViewBuilder::with_capacity(rows.len()), same),
        BytesType::Utf8View => build!(StringViewBuilder::with_capacity(rows.len()), utf8),
        BytesType::Fixed(n) => {
            let mut b = FixedSizeBinaryBuilder::with_capacity(rows.len(), n as i32);
            for &(u, r) in rows {
                match views[u].value(r) {
                    Some(v) => b.append_value(v).map_err(|e| e.to_string())?,
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }
    })
}

/// One unit's list column, seen as rows of elements with their bytes.
enum ListView<'a, O: OffsetSizeTrait> {
    Arrow {
        list: &'a GenericListArray<O>,
        /// The values' bytes, little-endian.
        bytes: &'a [u8],
        width: usize,
    },
    Plain(&'a PlainColumn),
}

impl<O: OffsetSizeTrait> ListView<'_, O> {
    /// Element range of row `r` (a null list is empty).
    fn span(&self, r: usize) -> Range<usize> {
        match self {
            ListView::Arrow { list, .. } if list.is_null(r) => 0..0,
            ListView::Arrow { list, .. } => {
                let offs = list.value_offsets();
                offs[r].as_usize()..offs[r + 1].as_usize()
            }
            ListView::Plain(p) => p.row(r),
        }
    }

    /// Starts loading row `r`'s bytes (see [`prefetch`]).
    fn prefetch(&self, r: usize) {
        let span = self.span(r);
        match self {
            ListView::Arrow { bytes, width, .. } => {
                prefetch::prefetch(&bytes[span.start * width..span.end * width])
            }
            ListView::Plain(p) => prefetch::prefetch(p.first_piece(span)),
        }
    }

    fn copy(&self, elements: Range<usize>, out: &mut [u8], stores: Stores) {
        match self {
            ListView::Arrow { bytes, width, .. } => {
                stores.copy(out, &bytes[elements.start * width..elements.end * width])
            }
            ListView::Plain(p) => p.copy_to(elements, out, stores),
        }
    }
}

/// Checks each unit's list column against the element type `A` and views it as bytes.
fn list_views<'a, O: OffsetSizeTrait, A: ArrowPrimitiveType>(
    sources: &[&'a UnitColumn],
) -> std::result::Result<Vec<ListView<'a, O>>, String>
where
    A::Native: Element,
{
    let mismatch = || "a list tensor (the shards disagree on its type)".to_string();
    let width = size_of::<A::Native>();
    sources
        .iter()
        .map(|s| match s {
            UnitColumn::Plain(p) if p.width() == width && p.is_list() => Ok(ListView::Plain(p)),
            UnitColumn::Plain(_) => Err(mismatch()),
            UnitColumn::Arrow(a) => {
                let list = a.as_list_opt::<O>().ok_or_else(mismatch)?;
                let values = list.values().as_primitive_opt::<A>().ok_or_else(mismatch)?;
                if values.null_count() > 0 {
                    return Err("a dense tensor: its lists hold null numbers".into());
                }
                Ok(ListView::Arrow {
                    list,
                    bytes: values.values().inner().as_slice(),
                    width,
                })
            }
        })
        .collect()
}

/// Numbers `[B]`: copies each row's value bytes (from an Arrow buffer or a PLAIN page).
fn gather_numbers<A: ArrowPrimitiveType>(
    sources: &[&UnitColumn],
    rows: &[(usize, usize)],
    out: &mut [u8],
) -> std::result::Result<(), String>
where
    A::Native: Element,
{
    let w = size_of::<A::Native>();
    let mismatch = || "a tensor (the shards disagree on its type)".to_string();
    let mut arrays = Vec::with_capacity(sources.len());
    for s in sources {
        arrays.push(match s {
            UnitColumn::Arrow(a) => Some(a.as_primitive_opt::<A>().ok_or_else(mismatch)?),
            UnitColumn::Plain(p) if p.width() == w && !p.is_list() && !p.is_byte_array() => None,
            UnitColumn::Plain(_) => return Err(mismatch()),
        });
    }
    // A row's value bytes (a null's slot too: nulls are refused below, not here).
    let bytes = |u: usize, r: usize| match (arrays[u], sources[u]) {
        (Some(p), _) => &p.values().inner().as_slice()[r * w..(r + 1) * w],
        (None, UnitColumn::Plain(p)) => p.value(r),
        (None, UnitColumn::Arrow(_)) => unreachable!("Arrow sources were checked above"),
    };
    for (i, &(u, r)) in rows.iter().enumerate() {
        prefetch::ahead(rows, i, NUMBERS_AHEAD, |&(u, r)| {
            prefetch::prefetch(bytes(u, r))
        });
        if arrays[u].is_some_and(|p| p.is_null(r)) {
            return Err("a dense tensor: it holds nulls".into());
        }
        // `w` is a constant here, so this is one load and one store, not a `memcpy` call.
        out[i * w..(i + 1) * w].copy_from_slice(bytes(u, r));
    }
    Ok(())
}

/// Fixed-size lists `[B, L]`: copies each row's `len` numbers, as bytes, into `out`.
fn gather_fixed<A: ArrowPrimitiveType>(
    lists: &[&FixedSizeListArray],
    rows: &[(usize, usize)],
    len: usize,
    out: &mut [u8],
) -> std::result::Result<(), String>
where
    A::Native: Element,
{
    let w = size_of::<A::Native>();
    let mut views = Vec::with_capacity(lists.len());
    for l in lists {
        if l.value_length().max(0) as usize != len {
            return Err("a [B, L] tensor (the shards disagree on L)".into());
        }
        let values = l
            .values()
            .as_primitive_opt::<A>()
            .ok_or("a [B, L] tensor (the shards disagree on its type)")?;
        if values.null_count() > 0 || l.null_count() > 0 {
            return Err("a dense tensor: it holds nulls".into());
        }
        views.push((*l, values.values().inner().as_slice()));
    }
    let row = |u: usize, r: usize| {
        let (list, values): (&FixedSizeListArray, &[u8]) = views[u];
        let s = list.value_offset_at(r) * w;
        &values[s..s + len * w]
    };
    let stores = Stores::for_output(out.len());
    let row_bytes = len * w;
    for (i, &(u, r)) in rows.iter().enumerate() {
        prefetch::ahead(rows, i, ROWS_AHEAD, |&(u, r)| prefetch::prefetch(row(u, r)));
        stores.copy(&mut out[i * row_bytes..(i + 1) * row_bytes], row(u, r));
    }
    Ok(())
}

/// Convenience for tests and benches: a shared pool of pageable memory.
pub fn pageable_pool() -> BufferPool {
    BufferPool::new(
        crate::pinned::Allocator::pageable("requested pageable memory".into()),
        256 << 20,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BinaryArray, BooleanArray, FixedSizeListBuilder, Int32Builder, Int64Array, ListBuilder,
        RecordBatch, StringArray,
    };
    use arrow::datatypes::Field;
    use std::sync::Arc;

    fn lists(rows: &[&[i32]]) -> ArrayRef {
        let mut b = ListBuilder::new(Int32Builder::new());
        for r in rows {
            b.values().append_slice(r);
            b.append(true);
        }
        Arc::new(b.finish())
    }

    fn unit(ids: &[i64], toks: &[&[i32]], text: &[&str]) -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
            ("tokens", lists(toks)),
            (
                "text",
                Arc::new(StringArray::from(text.to_vec())) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    fn du(b: &RecordBatch) -> DecodedUnit {
        DecodedUnit::from_batch(b.clone(), 0)
    }

    fn collator(u: &RecordBatch, mode: ListMode) -> Collator {
        Collator::new(&u.schema(), |_| mode, pageable_pool())
    }

    #[test]
    fn gathers_numbers_lists_and_strings_across_units() {
        let a = unit(&[0, 1], &[&[1, 2, 3], &[4]], &["a", "b"]);
        let b = unit(&[10, 11], &[&[], &[5, 6]], &["c", "d"]);
        let rows = [(1, 1), (0, 0), (1, 0), (0, 1)];
        let cols = collator(&a, ListMode::Padded)
            .collate(&[&du(&a), &du(&b)], &rows)
            .unwrap();
        let Column::Tensor(ids) = &cols[0].1 else {
            panic!()
        };
        assert_eq!(ids.as_slice::<i64>().unwrap(), &[11, 0, 10, 1]);
        assert_eq!(ids.shape(), &[4]);
        assert!(
            ids.as_slice::<i32>().is_none(),
            "typed access checks the dtype"
        );
        let Column::Padded { values, lengths } = &cols[1].1 else {
            panic!()
        };
        assert_eq!(values.shape(), &[4, 3]);
        assert_eq!(
            values.as_slice::<i32>().unwrap(),
            &[5, 6, 0, 1, 2, 3, 0, 0, 0, 4, 0, 0]
        );
        assert_eq!(lengths.as_slice::<i64>().unwrap(), &[2, 3, 0, 1]);
        let Column::Arrow(text) = &cols[2].1 else {
            panic!()
        };
        let text = text.as_string::<i32>();
        assert_eq!(
            (0..4).map(|i| text.value(i)).collect::<Vec<_>>(),
            ["d", "a", "c", "b"]
        );

        let cols = collator(&a, ListMode::Ragged)
            .collate(&[&du(&a), &du(&b)], &rows)
            .unwrap();
        let Column::Ragged { values, offsets } = &cols[1].1 else {
            panic!()
        };
        assert_eq!(values.as_slice::<i32>().unwrap(), &[5, 6, 1, 2, 3, 4]);
        assert_eq!(offsets.as_slice::<i64>().unwrap(), &[0, 2, 5, 5, 6]);
    }

    /// Batches of several megabytes are written with streaming stores (see `streaming`): each
    /// layout still holds exactly the rows asked for, at odd lengths and offsets.
    #[test]
    fn batches_larger_than_the_cache_are_gathered_exactly() {
        let n = 48;
        // Row i: 20,000 + 997·i numbers (80–270 KB) and as many bytes, so neither the rows
        // nor their offsets in a ragged batch are multiples of the stores' 32 bytes.
        let toks: Vec<Vec<i32>> = (0..n)
            .map(|i| {
                (0..20_000 + 997 * i)
                    .map(|j| (i * 100_003 + j) as i32)
                    .collect()
            })
            .collect();
        let blobs: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                (0..20_000 + 997 * i)
                    .map(|j| (i * 31 + j * 7) as u8)
                    .collect()
            })
            .collect();
        let refs: Vec<&[i32]> = toks.iter().map(Vec::as_slice).collect();
        let u = RecordBatch::try_from_iter(vec![
            ("tokens", lists(&refs)),
            (
                "blob",
                Arc::new(BinaryArray::from_iter_values(&blobs)) as ArrayRef,
            ),
        ])
        .unwrap();
        let rows: Vec<(usize, usize)> = (0..n).rev().map(|r| (0, r)).collect();
        for list in [ListMode::Padded, ListMode::Ragged] {
            let binary = match list {
                ListMode::Padded => BinaryMode::Padded,
                ListMode::Ragged => BinaryMode::Ragged,
            };
            let c = Collator::new(
                &u.schema(),
                |_| ColumnMode { list, binary },
                pageable_pool(),
            );
            let cols = c.collate(&[&du(&u)], &rows).unwrap();
            let (tok_bytes, blob_bytes): (Vec<u8>, Vec<u8>) = match (&cols[0].1, &cols[1].1) {
                (Column::Ragged { values: t, .. }, Column::Ragged { values: b, .. }) => {
                    (t.as_bytes().to_vec(), b.as_bytes().to_vec())
                }
                (Column::Padded { values: t, .. }, Column::Padded { values: b, .. }) => {
                    (t.as_bytes().to_vec(), b.as_bytes().to_vec())
                }
                other => panic!("unexpected layout {other:?}"),
            };
            assert!(
                tok_bytes.len() >= crate::streaming::STREAMING_MIN_BYTES,
                "the batch is large enough to stream"
            );
            let longest = toks.iter().map(Vec::len).max().unwrap();
            let (mut want_t, mut want_b) = (Vec::new(), Vec::new());
            for &(_, r) in &rows {
                want_t.extend(toks[r].iter().flat_map(|x| x.to_ne_bytes()));
                want_b.extend(&blobs[r]);
                if list == ListMode::Padded {
                    want_t.resize(want_t.len() + (longest - toks[r].len()) * 4, 0);
                    want_b.resize(want_b.len() + longest - blobs[r].len(), 0);
                }
            }
            assert!(tok_bytes == want_t, "{list:?} token rows differ");
            assert!(blob_bytes == want_b, "{list:?} blob rows differ");
        }
    }

    #[test]
    fn equal_lengths_give_an_exact_matrix_and_padding_is_rezeroed() {
        let a = unit(&[0, 1], &[&[1, 2], &[3, 4]], &["a", "b"]);
        let c = collator(&a, ListMode::Padded);
        // A first batch leaves non-zero data in the pooled buffer ...
        let wide = unit(&[0], &[&[9, 9, 9, 9, 9, 9, 9, 9]], &["w"]);
        drop(c.collate(&[&du(&wide)], &[(0, 0), (0, 0)]).unwrap());
        // ... which a later batch must not show through its padding.
        let cols = c.collate(&[&du(&a)], &[(0, 1), (0, 0)]).unwrap();
        let Column::Padded { values, .. } = &cols[1].1 else {
            panic!()
        };
        assert_eq!(values.shape(), &[2, 2]);
        assert_eq!(values.as_slice::<i32>().unwrap(), &[3, 4, 1, 2]);
        let short = unit(&[0, 1], &[&[1], &[2, 3, 4]], &["a", "b"]);
        let cols = c.collate(&[&du(&short)], &[(0, 0), (0, 1)]).unwrap();
        let Column::Padded { values, .. } = &cols[1].1 else {
            panic!()
        };
        assert_eq!(values.as_slice::<i32>().unwrap(), &[1, 0, 0, 2, 3, 4]);
    }

    #[test]
    fn fixed_size_lists_and_bools() {
        let mut fl = FixedSizeListBuilder::new(Int32Builder::new(), 2);
        for v in [[1, 2], [3, 4], [5, 6]] {
            fl.values().append_slice(&v);
            fl.append(true);
        }
        let fl: ArrayRef = Arc::new(fl.finish());
        let flags: ArrayRef = Arc::new(BooleanArray::from(vec![true, false, true]));
        let u = RecordBatch::try_from_iter(vec![("v", fl.slice(1, 2)), ("f", flags.slice(1, 2))])
            .unwrap();
        let c = Collator::new(&u.schema(), |_| ListMode::Padded, pageable_pool());
        let cols = c.collate(&[&du(&u)], &[(0, 1), (0, 0)]).unwrap();
        let Column::Tensor(v) = &cols[0].1 else {
            panic!()
        };
        assert_eq!(v.shape(), &[2, 2]);
        assert_eq!(v.as_slice::<i32>().unwrap(), &[5, 6, 3, 4]);
        let Column::Tensor(f) = &cols[1].1 else {
            panic!()
        };
        assert_eq!(f.as_slice::<u8>().unwrap(), &[1, 0]);
    }

    #[test]
    fn nulls_in_numbers_are_a_clear_error() {
        let u = RecordBatch::try_from_iter(vec![(
            "x",
            Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
        )])
        .unwrap();
        let c = Collator::new(&u.schema(), |_| ListMode::Padded, pageable_pool());
        assert!(
            c.collate(&[&du(&u)], &[(0, 0)]).is_ok(),
            "nulls in rows not taken are fine"
        );
        let err = c.collate(&[&du(&u)], &[(0, 1)]).unwrap_err();
        assert!(matches!(err, Error::UnsupportedColumn { .. }), "{err}");
        assert!(err.to_string().contains("\"x\""), "{err}");
    }

    #[test]
    fn each_batch_raises_the_pools_retention_to_the_batches_in_circulation() {
        let a = unit(&[0, 1, 2], &[&[1, 2, 3], &[4], &[]], &["a", "bb", "ccc"]);
        let pool =
            BufferPool::new(crate::pinned::Allocator::pageable("test".into()), 64).keep_batches(5);
        let c = Collator::new(&a.schema(), |_| ListMode::Ragged, pool.clone());
        let cols = c.collate(&[&du(&a)], &[(0, 2), (0, 0), (0, 1)]).unwrap();
        let pooled: usize = cols.iter().map(|(_, col)| col.pooled_capacity()).sum();
        // id [3] and tokens (values + offsets) in pool buffers of a cache line each; the
        // strings are an Arrow array.
        assert_eq!(pooled, 3 * crate::pinned::SMALL_ALIGN, "{cols:?}");
        assert!(matches!(cols[2].1, Column::Arrow(_)));
        assert_eq!(pool.max_retained(), 5 * pooled as u64);
    }

    #[test]
    fn binary_and_strings_become_byte_tensors_when_asked() {
        use arrow::array::{BinaryArray, FixedSizeBinaryArray};
        let a = unit(&[0, 1], &[&[1], &[2]], &["héllo", ""]);
        let blob: ArrayRef = Arc::new(BinaryArray::from(vec![Some(&b"xy"[..]), None]));
        let code: ArrayRef =
            Arc::new(FixedSizeBinaryArray::try_from_iter([b"ab", b"cd"].into_iter()).unwrap());
        let extra = RecordBatch::try_from_iter(vec![("blob", blob), ("code", code)]).unwrap();
        let modes = |binary| {
            move |_: &str| ColumnMode {
                list: ListMode::Padded,
                binary,
            }
        };
        let rows = [(0, 1), (0, 0)];
        // Ragged strings.
        let c = Collator::new(&a.schema(), modes(BinaryMode::Ragged), pageable_pool());
        let cols = c.collate(&[&du(&a)], &rows).unwrap();
        let Column::Ragged { values, offsets } = &cols[2].1 else {
            panic!()
        };
        assert_eq!(values.dtype(), DType::U8);
        assert_eq!(values.as_slice::<u8>().unwrap(), "héllo".as_bytes());
        assert_eq!(offsets.as_slice::<i64>().unwrap(), &[0, 0, 6]);
        // Padded binary (a null is empty, padding rezeroed after a wider batch), and a
        // fixed-size column is exactly [B, L].
        let c = Collator::new(&extra.schema(), modes(BinaryMode::Padded), pageable_pool());
        drop(c.collate(&[&du(&extra)], &[(0, 0); 8]).unwrap());
        let cols = c
            .collate(&[&du(&extra)], &[(0, 1), (0, 0), (0, 0)])
            .unwrap();
        let Column::Padded { values, lengths } = &cols[0].1 else {
            panic!()
        };
        assert_eq!(values.shape(), &[3, 2]);
        assert_eq!(values.as_slice::<u8>().unwrap(), b"\0\0xyxy");
        assert_eq!(lengths.as_slice::<i64>().unwrap(), &[0, 2, 2]);
        let Column::Tensor(code) = &cols[1].1 else {
            panic!()
        };
        assert_eq!(code.shape(), &[3, 2]);
        assert_eq!(code.as_slice::<u8>().unwrap(), b"cdabab");
        // The default keeps Arrow arrays.
        let c = Collator::new(&extra.schema(), |_| ListMode::Ragged, pageable_pool());
        let cols = c.collate(&[&du(&extra)], &rows).unwrap();
        assert!(matches!(cols[0].1, Column::Arrow(_)) && matches!(cols[1].1, Column::Arrow(_)));
    }

    #[test]
    fn layouts_follow_the_schema() {
        let s = Schema::new(vec![
            Field::new("f", DataType::Float16, false),
            Field::new(
                "l",
                DataType::LargeList(Arc::new(Field::new("item", DataType::UInt8, true))),
                true,
            ),
        ]);
        let c = Collator::new(&s, |_| ListMode::Ragged, pageable_pool());
        assert_eq!(c.columns[0].1, Layout::Arrow);
        assert_eq!(
            c.columns[1].1,
            Layout::List {
                item: DType::U8,
                large: true,
                mode: ListMode::Ragged
            }
        );
    }
}
