//! [`Tensor`]: a batch column handed to Python without a copy, through DLPack.
//!
//! A `Tensor` owns its memory — a pooled (often page-locked) buffer of the loader, or for the
//! copy made for a consumer that asks for one (`__dlpack__(copy=True)`) a plain allocation —
//! behind an `Arc`. `__dlpack__` exports a `DLManagedTensor` (or, when the consumer asks for DLPack
//! ≥ 1.0 through `max_version`, a `DLManagedTensorVersioned`) whose manager context holds a
//! clone of that `Arc` plus the shape and strides it points to. The memory therefore lives
//! until both the Python `Tensor` and every consumer (a `torch.Tensor`, a `numpy.ndarray`) are
//! gone; then the pooled buffer goes back to the loader's pool for a later batch.
//!
//! This is the only module of the binding with `unsafe` code: the DLPack structs, the capsule
//! and its destructor, and the deleter. Everything else is safe Rust.
//!
//! Fork safety: memory inherited by a forked child belongs to the parent's pool, whose locks
//! may have been held by a thread that does not exist in the child; dropping it there leaks it
//! instead of touching the pool (see [`Storage`]).

use std::ffi::{c_void, CStr};
use std::sync::Arc;

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use shardstream_loader::pool::{BufferPool, PooledBuffer};
use shardstream_loader::DType;

const CAPSULE_NAME: &CStr = c"dltensor";
const CAPSULE_NAME_VERSIONED: &CStr = c"dltensor_versioned";

/// `kDLCPU`.
const DEVICE_CPU: i32 = 1;
/// DLPack version exported in versioned capsules.
const DLPACK_MAJOR: u32 = 1;
const DLPACK_MINOR: u32 = 0;
/// `DLPACK_FLAG_BITMASK_IS_COPIED`.
const FLAG_IS_COPIED: u64 = 1 << 1;

// ---- the DLPack ABI (dlpack.h v1.0) ----

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

#[repr(C)]
struct DLPackVersion {
    major: u32,
    minor: u32,
}

#[repr(C)]
struct DLManagedTensorVersioned {
    version: DLPackVersion,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DLTensor,
}

/// Element type of a [`Tensor`]: the loader's numbers plus `bool` (bytes of 0/1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    Num(DType),
    Bool,
}

impl ElemType {
    pub fn size(self) -> usize {
        match self {
            ElemType::Num(d) => d.size(),
            ElemType::Bool => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ElemType::Num(d) => d.numpy_name(),
            ElemType::Bool => "bool",
        }
    }

    fn dl(self) -> DLDataType {
        const INT: u8 = 0;
        const UINT: u8 = 1;
        const FLOAT: u8 = 2;
        const BOOL: u8 = 6;
        let code = match self {
            ElemType::Bool => BOOL,
            ElemType::Num(DType::I8 | DType::I16 | DType::I32 | DType::I64) => INT,
            ElemType::Num(DType::U8 | DType::U16 | DType::U32 | DType::U64) => UINT,
            ElemType::Num(DType::F32 | DType::F64) => FLOAT,
        };
        DLDataType {
            code,
            bits: (self.size() * 8) as u8,
            lanes: 1,
        }
    }
}

enum Buffer {
    Pooled(PooledBuffer),
    /// `u64` words so that 8-byte elements are aligned.
    Owned {
        words: Vec<u64>,
        len: usize,
    },
}

/// The memory of a tensor, shared by the Python object and its DLPack exports.
pub struct Storage {
    buffer: Option<Buffer>,
    /// The process that created it (a forked child must not return it to the pool).
    pid: u32,
}

impl Storage {
    fn new(buffer: Buffer) -> Arc<Storage> {
        Arc::new(Storage {
            buffer: Some(buffer),
            pid: std::process::id(),
        })
    }

    fn buffer(&self) -> &Buffer {
        self.buffer.as_ref().expect("present until drop")
    }

    fn ptr(&self) -> *const u8 {
        match self.buffer() {
            Buffer::Pooled(b) => b.as_ptr(),
            Buffer::Owned { words, .. } => words.as_ptr().cast(),
        }
    }

    fn len(&self) -> usize {
        match self.buffer() {
            Buffer::Pooled(b) => b.len(),
            Buffer::Owned { len, .. } => *len,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self.buffer() {
            Buffer::Pooled(b) => b.as_bytes(),
            Buffer::Owned { words, len } => &words_as_bytes(words)[..*len],
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            if std::process::id() != self.pid {
                std::mem::forget(buffer);
            }
        }
    }
}

fn words_as_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding and any byte pattern is a valid u8; the slice covers exactly
    // the words' memory and borrows it for the same lifetime.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) }
}

fn owned_from_bytes(bytes: &[u8]) -> Buffer {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: `words` holds at least `bytes.len()` bytes, is freshly allocated (no overlap)
    // and u8 writes into u64 memory are always valid.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast::<u8>(), bytes.len());
    }
    Buffer::Owned {
        words,
        len: bytes.len(),
    }
}

/// A dense, C-contiguous CPU array from the loader, exported to torch / NumPy by DLPack.
///
/// `torch.from_dlpack(t)` and `numpy.from_dlpack(t)` share its memory (no copy); `ptr` is the
/// address of the first element, the same as the resulting tensor's `data_ptr()`.
#[pyclass(module = "shardstream._native", frozen)]
pub struct Tensor {
    storage: Arc<Storage>,
    elem: ElemType,
    shape: Vec<usize>,
}

impl Tensor {
    /// Takes over a loader tensor's pooled buffer.
    pub fn from_loader(t: shardstream_loader::Tensor) -> Tensor {
        let (dtype, shape, buffer) = t.into_parts();
        Tensor {
            storage: Storage::new(Buffer::Pooled(buffer)),
            elem: ElemType::Num(dtype),
            shape,
        }
    }

    /// A 1-d int64 tensor of `values` in the loader's pool (page-locked like the columns).
    pub fn pooled_i64(pool: &BufferPool, values: &[i64]) -> Tensor {
        let bytes = || {
            values
                .iter()
                .flat_map(|v| v.to_ne_bytes())
                .collect::<Vec<u8>>()
        };
        Self::pooled_1d(
            shardstream_loader::Tensor::from_values(pool, values),
            bytes,
            ElemType::Num(DType::I64),
        )
    }

    /// A 1-d bool tensor of `values` in the loader's pool.
    pub fn pooled_bools(pool: &BufferPool, values: &[bool]) -> Tensor {
        let bytes: Vec<u8> = values.iter().map(|&b| u8::from(b)).collect();
        let pooled = shardstream_loader::Tensor::from_values(pool, &bytes);
        Self::pooled_1d(pooled, || bytes.clone(), ElemType::Bool)
    }

    /// The pooled tensor, or — if the pool could not allocate (pinned memory exhausted) — the
    /// same values in ordinary memory: these small arrays go with a batch the engine has
    /// already counted as delivered, which must not be lost over a few kilobytes.
    fn pooled_1d(
        pooled: shardstream_loader::Result<shardstream_loader::Tensor>,
        bytes: impl FnOnce() -> Vec<u8>,
        elem: ElemType,
    ) -> Tensor {
        match pooled {
            Ok(t) => {
                let (_, shape, buffer) = t.into_parts();
                Tensor {
                    storage: Storage::new(Buffer::Pooled(buffer)),
                    elem,
                    shape,
                }
            }
            Err(_) => {
                let bytes = bytes();
                Tensor {
                    shape: vec![bytes.len() / elem.size()],
                    storage: Storage::new(owned_from_bytes(&bytes)),
                    elem,
                }
            }
        }
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn memory_kind(&self) -> &'static str {
        match self.storage.buffer() {
            Buffer::Pooled(b) => match b.kind() {
                shardstream_loader::pinned::MemoryKind::Pinned => "pinned",
                shardstream_loader::pinned::MemoryKind::Pageable => "pageable",
            },
            Buffer::Owned { .. } => "pageable",
        }
    }

    /// What one export's manager context keeps alive, and the DLTensor describing it.
    fn export_parts(&self, copy: bool) -> (Export, DLTensor) {
        let storage = if copy {
            Storage::new(owned_from_bytes(self.storage.bytes()))
        } else {
            self.storage.clone()
        };
        let mut export = Export {
            _storage: storage.clone(),
            shape: self.shape.iter().map(|&d| d as i64).collect(),
            strides: vec![0; self.shape.len()],
        };
        let mut stride = 1i64;
        for (s, &d) in export.strides.iter_mut().zip(&export.shape).rev() {
            *s = stride;
            stride *= d.max(1);
        }
        let tensor = DLTensor {
            data: storage.ptr().cast_mut().cast(),
            device: DLDevice {
                device_type: DEVICE_CPU,
                device_id: 0,
            },
            ndim: self.shape.len() as i32,
            dtype: self.elem.dl(),
            // Filled in once the export sits at its final (heap) address.
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            byte_offset: 0,
        };
        (export, tensor)
    }
}

/// The manager context of one export: keeps the memory alive, owns shape and strides.
struct Export {
    _storage: Arc<Storage>,
    shape: Vec<i64>,
    strides: Vec<i64>,
}

/// One allocation per legacy export; `managed` first so a `*mut DLManagedTensor` is also a
/// pointer to the holder.
#[repr(C)]
struct LegacyHolder {
    managed: DLManagedTensor,
    export: Export,
}

#[repr(C)]
struct VersionedHolder {
    managed: DLManagedTensorVersioned,
    export: Export,
}

unsafe extern "C" fn delete_legacy(managed: *mut DLManagedTensor) {
    if managed.is_null() {
        return;
    }
    // SAFETY: `managed` came from `Box::into_raw(Box<LegacyHolder>)` in `__dlpack__` (the
    // holder is `repr(C)` with `managed` first), and DLPack calls the deleter exactly once.
    drop(unsafe { Box::from_raw(managed.cast::<LegacyHolder>()) });
}

unsafe extern "C" fn delete_versioned(managed: *mut DLManagedTensorVersioned) {
    if managed.is_null() {
        return;
    }
    // SAFETY: as in `delete_legacy`, for `VersionedHolder`.
    drop(unsafe { Box::from_raw(managed.cast::<VersionedHolder>()) });
}

/// Capsule destructor: frees the export unless a consumer took it over. A consumer renames
/// the capsule (`used_dltensor`, `used_dltensor_versioned`) and calls the deleter itself when
/// it is done, so only a capsule still carrying our name is ours to free.
unsafe extern "C" fn capsule_destructor(capsule: *mut ffi::PyObject) {
    // SAFETY: called by CPython with a live capsule; `PyCapsule_IsValid` only reads its name
    // and never raises. A capsule still carrying our name was never consumed, so its pointer
    // is the holder we made and nobody else will call its deleter.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, CAPSULE_NAME.as_ptr()) == 1 {
            let managed =
                ffi::PyCapsule_GetPointer(capsule, CAPSULE_NAME.as_ptr()).cast::<DLManagedTensor>();
            if let Some(deleter) = (*managed).deleter {
                deleter(managed);
            }
        } else if ffi::PyCapsule_IsValid(capsule, CAPSULE_NAME_VERSIONED.as_ptr()) == 1 {
            let managed = ffi::PyCapsule_GetPointer(capsule, CAPSULE_NAME_VERSIONED.as_ptr())
                .cast::<DLManagedTensorVersioned>();
            if let Some(deleter) = (*managed).deleter {
                deleter(managed);
            }
        }
    }
}

fn new_capsule<'py>(
    py: Python<'py>,
    pointer: *mut c_void,
    name: &'static CStr,
    free: impl FnOnce(),
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: `pointer` is a live heap allocation owned by the capsule from here on, `name` is a
    // 'static C string (capsules keep the pointer, not a copy), and the destructor handles both
    // the consumed and the unconsumed case.
    let raw = unsafe { ffi::PyCapsule_New(pointer, name.as_ptr(), Some(capsule_destructor)) };
    if raw.is_null() {
        free();
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `raw` is a new, non-null reference returned by `PyCapsule_New`.
    Ok(unsafe { Bound::from_owned_ptr(py, raw) })
}

#[pymethods]
impl Tensor {
    /// Exports the tensor as a DLPack capsule (the array-API `__dlpack__` protocol).
    ///
    /// `max_version` ≥ (1, 0) gets a versioned capsule (`"dltensor_versioned"`), otherwise a
    /// legacy `"dltensor"` one. The memory is shared unless `copy=True`. Only the CPU device
    /// exists: `dl_device` other than `(1, 0)` raises `BufferError`; `stream` must be `None`
    /// or is ignored (CPU memory has no streams).
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__<'py>(
        &self,
        py: Python<'py>,
        stream: Option<Bound<'py, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = stream;
        if let Some(device) = dl_device {
            if device != (DEVICE_CPU, 0) {
                return Err(PyBufferError::new_err(format!(
                    "shardstream tensors live on the CPU (1, 0); cannot export to device {device:?} \
                     (copy with .to(device) after from_dlpack instead)"
                )));
            }
        }
        let copied = copy == Some(true);
        let (export, tensor) = self.export_parts(copied);
        let versioned = max_version.is_some_and(|(major, _)| major >= DLPACK_MAJOR);
        if versioned {
            let holder = Box::into_raw(Box::new(VersionedHolder {
                managed: DLManagedTensorVersioned {
                    version: DLPackVersion {
                        major: DLPACK_MAJOR,
                        minor: DLPACK_MINOR,
                    },
                    manager_ctx: std::ptr::null_mut(),
                    deleter: Some(delete_versioned),
                    flags: if copied { FLAG_IS_COPIED } else { 0 },
                    dl_tensor: tensor,
                },
                export,
            }));
            // SAFETY: `holder` is a valid, uniquely owned allocation; the shape/strides vectors'
            // heap buffers stay put for as long as the holder lives.
            unsafe {
                let h = &mut *holder;
                h.managed.manager_ctx = holder.cast();
                h.managed.dl_tensor.shape = h.export.shape.as_mut_ptr();
                h.managed.dl_tensor.strides = h.export.strides.as_mut_ptr();
            }
            new_capsule(py, holder.cast(), CAPSULE_NAME_VERSIONED, || {
                // SAFETY: the capsule was not created, so we still own `holder`.
                unsafe { delete_versioned(holder.cast()) }
            })
        } else {
            let holder = Box::into_raw(Box::new(LegacyHolder {
                managed: DLManagedTensor {
                    dl_tensor: tensor,
                    manager_ctx: std::ptr::null_mut(),
                    deleter: Some(delete_legacy),
                },
                export,
            }));
            // SAFETY: as above.
            unsafe {
                let h = &mut *holder;
                h.managed.manager_ctx = holder.cast();
                h.managed.dl_tensor.shape = h.export.shape.as_mut_ptr();
                h.managed.dl_tensor.strides = h.export.strides.as_mut_ptr();
            }
            new_capsule(py, holder.cast(), CAPSULE_NAME, || {
                // SAFETY: the capsule was not created, so we still own `holder`.
                unsafe { delete_legacy(holder.cast()) }
            })
        }
    }

    /// `(device_type, device_id)` for DLPack: always `(1, 0)`, the CPU.
    fn __dlpack_device__(&self) -> (i32, i32) {
        (DEVICE_CPU, 0)
    }

    /// Address of the first element (equals `torch.from_dlpack(t).data_ptr()`).
    #[getter]
    fn ptr(&self) -> usize {
        self.storage.ptr() as usize
    }

    /// The shape, as a tuple of ints.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.shape)
    }

    /// NumPy's name of the element type (`"int64"`, `"float32"`, `"bool"`, …).
    #[getter]
    fn dtype(&self) -> &'static str {
        self.elem.name()
    }

    /// Bytes of data.
    #[getter]
    fn nbytes(&self) -> usize {
        self.storage.len().min(self.numel() * self.elem.size())
    }

    /// `"pinned"` (page-locked, ready for asynchronous copies to a GPU) or `"pageable"`.
    #[getter]
    fn memory(&self) -> &'static str {
        self.memory_kind()
    }

    /// Length of the first dimension.
    fn __len__(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    fn __repr__(&self) -> String {
        format!(
            "Tensor(shape={:?}, dtype={}, memory={})",
            self.shape,
            self.elem.name(),
            self.memory_kind()
        )
    }
}
