//! Host memory for batches: page-locked (pinned) from the CUDA driver when it is there, ordinary
//! 4096-aligned pageable memory otherwise. Every `unsafe` block says why it is sound.
//!
//! The CUDA driver is loaded at run time with `libloading` (`libcuda.so.1`), never linked at
//! build time, so the crate builds and runs on machines without a GPU. [`Allocator::new`]
//! decides once per loader: [`PinMemory::Auto`] uses the driver when `cuInit`, the device's
//! primary context and a probe allocation all succeed and otherwise falls back with the reason,
//! [`PinMemory::Always`] turns any failure into an error, [`PinMemory::Never`] skips the driver.
//!
//! Pinned memory is allocated with `CU_MEMHOSTALLOC_PORTABLE`, so it counts as pinned for every
//! CUDA context of the process (PyTorch's included) and `tensor.cuda(non_blocking=True)` copies
//! it by DMA without a staging copy. The primary context of one device (the `LOCAL_RANK`-th by
//! default, so that eight ranks do not all create contexts on GPU 0) is retained while the
//! allocator lives and made current around each driver call. Freed pinned blocks, up to
//! [`BLOCK_CACHE_MAX_BYTES`], are cached for reuse rather than handed back to the driver (see
//! `BlockCache`: each driver call costs about a millisecond).
//!
//! Every buffer is zero-filled when it is first allocated, so reading any part of it is always
//! reading initialised memory; reused buffers keep their old (initialised) contents.

use std::alloc::Layout;
use std::collections::HashMap;
use std::ffi::c_void;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::collate::DType;
use crate::mapping::HUGE_PAGE;

/// Alignment of every buffer of a page or more: a page, which also satisfies every element type
/// and SIMD width (and keeps the copies into a batch off split cache lines).
pub const ALIGN: usize = 4096;

/// Alignment of pageable buffers smaller than a page: a cache line, which satisfies every element
/// type and SIMD width too. Page-aligning them cost each its own page (and glibc's aligned path
/// twice that in heap): a consumer that keeps each batch's ids (as the peers bench does, to check
/// exactly-once delivery; a training loop logging sample ids does the same) makes the pool
/// allocate one per batch. The pool's allocation time in a tokens/local epoch (1,024 batches)
/// fell from 21–27 ms to 11–21; most of what is left is the first touch of memory that the
/// consumer really keeps.
pub const SMALL_ALIGN: usize = 64;

/// Pageable buffers of at least this many bytes (after rounding up to a page) are mapped on their
/// own, on 2 MiB boundaries, with transparent huge pages asked for (Linux; elsewhere they come
/// from the heap like smaller ones). The batches they hold are written with streaming stores
/// (see `streaming`, same threshold), 512 times fewer page faults fill them the first time
/// round, and one TLB entry covers 2 MiB of a batch being written or read. Measured on the peers
/// bench's 16 MiB blob batches (`benches/peers/ab_python.py`, alternated processes, 2-core AMD
/// EPYC VM), with one epoch per process as the bench runs: 8,883 → 8,978 and 8,834 → 9,331
/// MB/s (12 and 10 rounds; 0.191 → 0.181 and 0.192 → 0.182 CPU-s/GB), and with a first version
/// 8,702 → 9,417 and 8,813 → 9,039; three epochs per process 9,099 → 9,855 MB/s (0.190 → 0.170
/// CPU-s/GB, 6 rounds). The 2 MiB token batches stay on the heap: the same change on them
/// measured 6,585 against 6,475 MB/s.
pub const HUGE_BUFFER_MIN: usize = 4 << 20;

/// Whether a pageable buffer of `capacity` bytes (a page multiple) is mapped on its own with
/// huge pages. Decided from the capacity alone, so that freeing takes the same road as
/// allocating: heap capacities are page multiples below the threshold, mapped ones 2 MiB
/// multiples at or above it.
fn huge_pageable(capacity: usize) -> bool {
    cfg!(target_os = "linux") && capacity >= HUGE_BUFFER_MIN
}

/// A zero-filled anonymous mapping of `len` bytes (a multiple of [`HUGE_PAGE`]) starting on a
/// [`HUGE_PAGE`] boundary, with huge pages asked for: mapped one huge page longer, then trimmed.
#[cfg(target_os = "linux")]
fn map_huge_pageable(len: usize) -> std::io::Result<NonNull<u8>> {
    let total = len + HUGE_PAGE;
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE);
    let (head, tail) = (aligned - start, start + total - (aligned + len));
    // SAFETY: the head and the tail lie inside the mapping just made and outside the aligned
    // `len` bytes that are kept; `aligned..aligned + len` is mapped, readable and writable.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut c_void, tail);
        }
        // Only a hint: without transparent huge pages the buffer is simply in small pages.
        libc::madvise(aligned as *mut c_void, len, libc::MADV_HUGEPAGE);
    }
    Ok(NonNull::new(aligned as *mut u8).expect("mmap does not return null"))
}

#[cfg(not(target_os = "linux"))]
fn map_huge_pageable(_len: usize) -> std::io::Result<NonNull<u8>> {
    unreachable!("huge_pageable is false off Linux")
}

/// Capacity and layout of a pageable buffer of at least `capacity` bytes.
/// (Also the layout to free it with: a capacity it returned maps to the same layout again.)
fn pageable_layout(capacity: usize) -> Result<Layout, std::alloc::LayoutError> {
    let small = capacity.max(1).div_ceil(SMALL_ALIGN) * SMALL_ALIGN;
    if small < ALIGN {
        Layout::from_size_align(small, SMALL_ALIGN)
    } else {
        Layout::from_size_align(capacity.div_ceil(ALIGN) * ALIGN, ALIGN)
    }
}

/// The driver library's soname.
pub const CUDA_LIBRARY: &str = "libcuda.so.1";

const CU_MEMHOSTALLOC_PORTABLE: u32 = 0x01;
const CUDA_SUCCESS: i32 = 0;

/// Whether batch memory should be page-locked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinMemory {
    /// Pinned when the CUDA driver works, pageable (with the reason in stats) otherwise.
    #[default]
    Auto,
    /// Pinned or an error.
    Always,
    /// Always ordinary pageable memory.
    Never,
}

/// What the allocator hands out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryKind {
    Pinned,
    #[default]
    Pageable,
}

impl fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryKind::Pinned => "pinned",
            MemoryKind::Pageable => "pageable",
        })
    }
}

type CuResult = i32;
type CuDevice = i32;
type CuContext = *mut c_void;

/// The driver entry points we use, resolved once per process.
struct Driver {
    // Kept alive so the function pointers below stay valid.
    _lib: libloading::Library,
    device_get: unsafe extern "C" fn(*mut CuDevice, i32) -> CuResult,
    device_get_count: unsafe extern "C" fn(*mut i32) -> CuResult,
    primary_ctx_retain: unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult,
    primary_ctx_release: unsafe extern "C" fn(CuDevice) -> CuResult,
    ctx_push: unsafe extern "C" fn(CuContext) -> CuResult,
    ctx_pop: unsafe extern "C" fn(*mut CuContext) -> CuResult,
    mem_host_alloc: unsafe extern "C" fn(*mut *mut c_void, usize, u32) -> CuResult,
    mem_free_host: unsafe extern "C" fn(*mut c_void) -> CuResult,
}

impl Driver {
    /// Loads `library` and initialises the driver; the error says what failed.
    fn load(library: &str) -> Result<Driver, String> {
        // SAFETY: loading a shared library runs its initialisers. We only load the CUDA driver
        // (or a name a test passes), whose initialisers are designed to run in any process.
        let lib = unsafe { libloading::Library::new(library) }
            .map_err(|e| format!("cannot load {library}: {e}"))?;
        macro_rules! sym {
            ($name:literal, $ty:ty) => {{
                // SAFETY: the symbol is a CUDA driver API function whose C signature is `$ty`
                // (cuda.h); the pointer is copied out and used only while `lib` is alive, which
                // `Driver` guarantees by owning it.
                let s: libloading::Symbol<$ty> = unsafe { lib.get($name) }.map_err(|e| {
                    format!(
                        "{library} lacks {}: {e}",
                        String::from_utf8_lossy(&$name[..$name.len() - 1])
                    )
                })?;
                *s
            }};
        }
        let init = sym!(b"cuInit\0", unsafe extern "C" fn(u32) -> CuResult);
        let driver = Driver {
            device_get: sym!(
                b"cuDeviceGet\0",
                unsafe extern "C" fn(*mut CuDevice, i32) -> CuResult
            ),
            device_get_count: sym!(
                b"cuDeviceGetCount\0",
                unsafe extern "C" fn(*mut i32) -> CuResult
            ),
            primary_ctx_retain: sym!(
                b"cuDevicePrimaryCtxRetain\0",
                unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult
            ),
            primary_ctx_release: sym!(
                b"cuDevicePrimaryCtxRelease_v2\0",
                unsafe extern "C" fn(CuDevice) -> CuResult
            ),
            ctx_push: sym!(
                b"cuCtxPushCurrent_v2\0",
                unsafe extern "C" fn(CuContext) -> CuResult
            ),
            ctx_pop: sym!(
                b"cuCtxPopCurrent_v2\0",
                unsafe extern "C" fn(*mut CuContext) -> CuResult
            ),
            mem_host_alloc: sym!(
                b"cuMemHostAlloc\0",
                unsafe extern "C" fn(*mut *mut c_void, usize, u32) -> CuResult
            ),
            mem_free_host: sym!(
                b"cuMemFreeHost\0",
                unsafe extern "C" fn(*mut c_void) -> CuResult
            ),
            _lib: lib,
        };
        // SAFETY: cuInit takes flags (must be 0) and is safe to call repeatedly from any thread.
        let rc = unsafe { init(0) };
        if rc != CUDA_SUCCESS {
            return Err(format!(
                "cuInit failed with CUDA error {rc} (no usable GPU or driver)"
            ));
        }
        Ok(driver)
    }
}

/// The process-wide driver (loaded once; the CUDA driver cannot be unloaded safely anyway).
fn driver() -> Result<&'static Driver, String> {
    static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();
    DRIVER
        .get_or_init(|| Driver::load(CUDA_LIBRARY))
        .as_ref()
        .map_err(Clone::clone)
}

/// Freed blocks of page-locked memory kept for reuse, by capacity (addresses as integers).
///
/// Allocating pinned memory is slow: on an H100 host `cuMemHostAlloc` took 0.75–1.3 ms per call
/// on average over an epoch's mix of 4 KiB and 2 MiB blocks (`PinnedStats`), against ~0.4 ms
/// for a zero-filled pageable block, and every driver call is one more the training loop's
/// own CUDA calls may wait behind. So, like PyTorch's caching host allocator, a pinned
/// [`Allocator`] does not hand a freed block back at once: it waits here for the next request
/// of the same capacity (the pool asks in size classes, so capacities repeat). The cache keeps
/// at most [`BLOCK_CACHE_MAX_BYTES`]; beyond that, and when the driver refuses an allocation
/// (the cached blocks are then freed and the allocation retried), blocks go back to the driver,
/// as all of them do when the allocator is dropped.
#[derive(Default)]
struct BlockCache {
    free: Mutex<CachedBlocks>,
    /// Requests served from the cache, and blocks asked of the driver (with their time).
    reuses: AtomicU64,
    driver_allocations: AtomicU64,
    driver_alloc_nanos: AtomicU64,
}

/// What a pinned allocator's block cache did (all zero for pageable memory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PinnedStats {
    /// Allocations served by a cached block, without a driver call.
    pub block_reuses: u64,
    /// Bytes of freed blocks cached now (still page-locked; not in the pool's counts).
    pub cached_bytes: u64,
    /// Blocks allocated by `cuMemHostAlloc`, and the seconds those calls took.
    pub driver_allocations: u64,
    pub driver_alloc_s: f64,
}

/// Most bytes of freed pinned blocks kept for reuse, per allocator.
pub const BLOCK_CACHE_MAX_BYTES: usize = 256 << 20;

/// Cached block addresses by capacity, and their total size.
#[derive(Default)]
struct CachedBlocks {
    by_capacity: HashMap<usize, Vec<usize>>,
    bytes: usize,
}

impl BlockCache {
    /// Keeps a freed block; `false` if the cache is full (the caller frees it).
    fn put(&self, capacity: usize, address: usize) -> bool {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.bytes + capacity > BLOCK_CACHE_MAX_BYTES {
            return false;
        }
        free.bytes += capacity;
        free.by_capacity.entry(capacity).or_default().push(address);
        true
    }

    fn take(&self, capacity: usize) -> Option<usize> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let address = free.by_capacity.get_mut(&capacity)?.pop()?;
        free.bytes -= capacity;
        self.reuses.fetch_add(1, Ordering::Relaxed);
        Some(address)
    }

    fn stats(&self) -> PinnedStats {
        let cached_bytes = self.free.lock().unwrap_or_else(|p| p.into_inner()).bytes as u64;
        PinnedStats {
            block_reuses: self.reuses.load(Ordering::Relaxed),
            cached_bytes,
            driver_allocations: self.driver_allocations.load(Ordering::Relaxed),
            driver_alloc_s: self.driver_alloc_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    fn drain(&self) -> Vec<usize> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.bytes = 0;
        free.by_capacity
            .drain()
            .flat_map(|(_, blocks)| blocks)
            .collect()
    }
}

/// A retained primary context of one device, and the page-locked blocks allocated in it.
struct Context {
    driver: &'static Driver,
    device: CuDevice,
    ctx: CuContext,
    cache: BlockCache,
}

// SAFETY: a CUcontext is a handle the driver API accepts from any thread (that is what
// cuCtxPushCurrent is for); we never touch the memory it points to.
unsafe impl Send for Context {}
// SAFETY: as above; every use pushes/pops the context on the calling thread only.
unsafe impl Sync for Context {}

impl Context {
    fn retain(driver: &'static Driver, ordinal: Option<u32>) -> Result<Context, String> {
        let mut count = 0i32;
        // SAFETY: `count` is a valid out-pointer for the duration of the call.
        let rc = unsafe { (driver.device_get_count)(&mut count) };
        if rc != CUDA_SUCCESS || count <= 0 {
            return Err(format!(
                "no CUDA device (cuDeviceGetCount: error {rc}, {count} devices)"
            ));
        }
        let ordinal = match ordinal {
            Some(o) => o as i32,
            None => std::env::var("LOCAL_RANK")
                .ok()
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(0, |r| r.rem_euclid(count)),
        };
        let mut device: CuDevice = 0;
        // SAFETY: `device` is a valid out-pointer; the ordinal is range-checked by the driver.
        let rc = unsafe { (driver.device_get)(&mut device, ordinal) };
        if rc != CUDA_SUCCESS {
            return Err(format!(
                "cuDeviceGet({ordinal}) failed with CUDA error {rc}"
            ));
        }
        let mut ctx: CuContext = std::ptr::null_mut();
        // SAFETY: `ctx` is a valid out-pointer; `device` came from cuDeviceGet.
        let rc = unsafe { (driver.primary_ctx_retain)(&mut ctx, device) };
        if rc != CUDA_SUCCESS || ctx.is_null() {
            return Err(format!(
                "cuDevicePrimaryCtxRetain(device {ordinal}) failed with CUDA error {rc}"
            ));
        }
        Ok(Context {
            driver,
            device,
            ctx,
            cache: BlockCache::default(),
        })
    }

    /// Runs `f` with this context current on the calling thread.
    fn with_current<T>(&self, f: impl FnOnce() -> T) -> Result<T, String> {
        // SAFETY: `self.ctx` is a retained primary context, valid until `Drop` releases it.
        let rc = unsafe { (self.driver.ctx_push)(self.ctx) };
        if rc != CUDA_SUCCESS {
            return Err(format!("cuCtxPushCurrent failed with CUDA error {rc}"));
        }
        let out = f();
        let mut popped: CuContext = std::ptr::null_mut();
        // SAFETY: pops the context pushed above on this same thread; `popped` is a valid
        // out-pointer.
        unsafe { (self.driver.ctx_pop)(&mut popped) };
        Ok(out)
    }

    /// A block of `size` bytes: a cached one if there is one of exactly that size (its old
    /// contents are initialised), else a new zero-filled one from the driver; if the driver
    /// refuses, the cached blocks are handed back and the allocation tried once more.
    fn alloc(&self, size: usize) -> Result<NonNull<u8>, String> {
        if let Some(address) = self.cache.take(size) {
            return Ok(NonNull::new(address as *mut u8).expect("cached blocks are not null"));
        }
        self.alloc_from_driver(size).or_else(|first| {
            let cached = self.cache.drain();
            if cached.is_empty() {
                return Err(first);
            }
            self.free_all(cached);
            self.alloc_from_driver(size)
        })
    }

    fn alloc_from_driver(&self, size: usize) -> Result<NonNull<u8>, String> {
        let mut ptr: *mut c_void = std::ptr::null_mut();
        let started = Instant::now();
        let rc = self.with_current(|| {
            // SAFETY: `ptr` is a valid out-pointer; a context is current on this thread.
            unsafe { (self.driver.mem_host_alloc)(&mut ptr, size, CU_MEMHOSTALLOC_PORTABLE) }
        })?;
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.cache
            .driver_alloc_nanos
            .fetch_add(nanos, Ordering::Relaxed);
        self.cache
            .driver_allocations
            .fetch_add(1, Ordering::Relaxed);
        if rc != CUDA_SUCCESS {
            return Err(format!(
                "cuMemHostAlloc({size} bytes) failed with CUDA error {rc}"
            ));
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| "cuMemHostAlloc returned a null pointer".to_string())?;
        if !(ptr.as_ptr() as usize).is_multiple_of(ALIGN) {
            // The driver returns page-aligned memory; if not, our typed views would be unsound.
            self.free(ptr);
            return Err("cuMemHostAlloc returned memory that is not page-aligned".into());
        }
        // SAFETY: `ptr` points to `size` writable bytes just allocated for us alone.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, size) };
        Ok(ptr)
    }

    /// Keeps a block of `size` bytes (from [`Context::alloc`]) for reuse, or frees it if the
    /// cache is full.
    fn recycle(&self, ptr: NonNull<u8>, size: usize) {
        if !self.cache.put(size, ptr.as_ptr() as usize) {
            self.free(ptr);
        }
    }

    fn free_all(&self, addresses: Vec<usize>) {
        for address in addresses {
            self.free(NonNull::new(address as *mut u8).expect("cached blocks are not null"));
        }
    }

    /// Hands a block back to the driver.
    fn free(&self, ptr: NonNull<u8>) {
        let _ = self.with_current(|| {
            // SAFETY: `ptr` came from cuMemHostAlloc in this process and is freed exactly once
            // (by the one `HostBuffer` that owns it).
            unsafe { (self.driver.mem_free_host)(ptr.as_ptr().cast()) }
        });
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // Every buffer holds an `Arc` to the allocator owning this context, so all of them
        // are gone and every block left is in the cache.
        self.free_all(self.cache.drain());
        // SAFETY: balances the retain in `Context::retain`; no block of it is left (above).
        unsafe { (self.driver.primary_ctx_release)(self.device) };
    }
}

enum Backend {
    Pinned(Context),
    Pageable,
}

struct AllocatorInner {
    backend: Backend,
    reason: String,
}

/// Allocates [`HostBuffer`]s, pinned or pageable as decided at construction. Cheap to clone.
#[derive(Clone)]
pub struct Allocator {
    inner: Arc<AllocatorInner>,
}

impl fmt::Debug for Allocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allocator")
            .field("kind", &self.kind())
            .field("reason", &self.inner.reason)
            .finish()
    }
}

impl Allocator {
    /// Decides the memory kind. `device` picks the CUDA device whose primary context is used
    /// (default: `LOCAL_RANK` modulo the device count, else 0).
    pub fn new(pin: PinMemory, device: Option<u32>) -> crate::Result<Allocator> {
        Self::with_library(pin, device, None)
    }

    /// Like [`Allocator::new`], loading `library` instead of the process-wide driver (tests use
    /// this to exercise failures without a GPU).
    fn with_library(
        pin: PinMemory,
        device: Option<u32>,
        library: Option<&str>,
    ) -> crate::Result<Allocator> {
        if pin == PinMemory::Never {
            return Ok(Self::pageable("pin_memory is \"never\"".into()));
        }
        let attempt = || -> Result<Context, String> {
            let driver = match library {
                None => driver()?,
                // Leaked on purpose: drivers stay loaded for the process (tests only).
                Some(name) => Box::leak(Box::new(Driver::load(name)?)),
            };
            let ctx = Context::retain(driver, device)?;
            // Probe once so a driver that loads but cannot pin fails here, not mid-epoch.
            let probe = ctx.alloc(ALIGN)?;
            ctx.free(probe);
            Ok(ctx)
        };
        match attempt() {
            Ok(ctx) => Ok(Allocator {
                inner: Arc::new(AllocatorInner {
                    backend: Backend::Pinned(ctx),
                    reason: "page-locked with cuMemHostAlloc (portable)".into(),
                }),
            }),
            Err(reason) if pin == PinMemory::Auto => Ok(Self::pageable(reason)),
            Err(reason) => Err(crate::Error::Config(format!(
                "pin_memory is \"always\" but pinned memory is unavailable: {reason}; use \"auto\" to fall back to pageable memory"
            ))),
        }
    }

    /// An allocator of ordinary aligned memory; `reason` says why (shown in stats).
    pub fn pageable(reason: String) -> Allocator {
        Allocator {
            inner: Arc::new(AllocatorInner {
                backend: Backend::Pageable,
                reason,
            }),
        }
    }

    pub fn kind(&self) -> MemoryKind {
        match self.inner.backend {
            Backend::Pinned(_) => MemoryKind::Pinned,
            Backend::Pageable => MemoryKind::Pageable,
        }
    }

    /// What the pinned block cache did (zeros for pageable memory).
    pub fn pinned_stats(&self) -> PinnedStats {
        match &self.inner.backend {
            Backend::Pinned(ctx) => ctx.cache.stats(),
            Backend::Pageable => PinnedStats::default(),
        }
    }

    /// Why the memory is of its kind (e.g. why pinning is not available).
    pub fn reason(&self) -> &str {
        &self.inner.reason
    }

    /// A zero-filled buffer of at least `capacity` bytes: rounded up to [`ALIGN`] (pinned, or a
    /// page or more), to [`SMALL_ALIGN`] (pageable, under a page), or to 2 MiB (pageable, from
    /// [`HUGE_BUFFER_MIN`] on: a mapping of its own, in huge pages where the kernel has them).
    pub fn alloc(&self, capacity: usize) -> crate::Result<HostBuffer> {
        let (ptr, capacity) = match &self.inner.backend {
            Backend::Pinned(ctx) => {
                let capacity = capacity.max(1).div_ceil(ALIGN) * ALIGN;
                let ptr = ctx
                    .alloc(capacity)
                    .map_err(|e| crate::Error::Stopped(format!("allocating pinned memory: {e}")))?;
                (ptr, capacity)
            }
            Backend::Pageable if huge_pageable(capacity.div_ceil(ALIGN) * ALIGN) => {
                let capacity = capacity.next_multiple_of(HUGE_PAGE);
                let ptr = map_huge_pageable(capacity).map_err(|e| {
                    crate::Error::Stopped(format!(
                        "mapping a batch buffer of {capacity} bytes: {e}"
                    ))
                })?;
                (ptr, capacity)
            }
            Backend::Pageable => {
                let layout = pageable_layout(capacity).map_err(|e| {
                    crate::Error::Config(format!("buffer of {capacity} bytes: {e}"))
                })?;
                // SAFETY: `layout` has a non-zero size (at least SMALL_ALIGN).
                let raw = unsafe { std::alloc::alloc_zeroed(layout) };
                match NonNull::new(raw) {
                    Some(p) => (p, layout.size()),
                    None => std::alloc::handle_alloc_error(layout),
                }
            }
        };
        Ok(HostBuffer {
            ptr,
            capacity,
            allocator: self.clone(),
        })
    }

    fn free(&self, ptr: NonNull<u8>, capacity: usize) {
        match &self.inner.backend {
            Backend::Pinned(ctx) => ctx.recycle(ptr, capacity),
            Backend::Pageable if huge_pageable(capacity) => {
                // SAFETY: mapped by `map_huge_pageable` with exactly this length (see
                // `huge_pageable`) and unmapped once, by the `HostBuffer` owning it.
                unsafe { libc::munmap(ptr.as_ptr().cast(), capacity) };
            }
            Backend::Pageable => {
                let layout = pageable_layout(capacity).expect("checked at alloc");
                // SAFETY: `ptr` was returned by `alloc_zeroed` with this exact layout and is
                // freed once, by the `HostBuffer` owning it.
                unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
            }
        }
    }
}

/// Plain numeric types a buffer can be viewed as: every bit pattern is a valid value, and their
/// alignment divides [`ALIGN`].
pub trait Element: Copy + Default + Send + Sync + 'static + sealed::Sealed {
    const DTYPE: DType;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t { const DTYPE: DType = DType::$d; }
    )*};
}
element!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, u64 => U64,
    i64 => I64, f32 => F32, f64 => F64);

/// An owned, initialised block of host memory, aligned to a page ([`ALIGN`]), or to a cache line
/// ([`SMALL_ALIGN`]) for pageable blocks under a page.
pub struct HostBuffer {
    ptr: NonNull<u8>,
    capacity: usize,
    allocator: Allocator,
}

// SAFETY: the buffer exclusively owns its memory (like a `Vec<u8>`); moving it between threads
// is fine, and shared access only hands out `&[T]`.
unsafe impl Send for HostBuffer {}
// SAFETY: `&HostBuffer` only permits reads.
unsafe impl Sync for HostBuffer {}

impl fmt::Debug for HostBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostBuffer")
            .field("capacity", &self.capacity)
            .field("kind", &self.kind())
            .finish()
    }
}

impl HostBuffer {
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn kind(&self) -> MemoryKind {
        self.allocator.kind()
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The first `len` elements as `T`s. Panics if they do not fit in the capacity.
    pub fn as_slice<T: Element>(&self, len: usize) -> &[T] {
        let bytes = len.checked_mul(size_of::<T>()).expect("length overflows");
        assert!(
            bytes <= self.capacity,
            "{bytes} bytes exceed the buffer's {}",
            self.capacity
        );
        // SAFETY: the region is inside the allocation, initialised (zero-filled at allocation,
        // written only through `as_mut_slice` since), aligned (SMALL_ALIGN, and so ALIGN, is a
        // multiple of T's alignment) and any bit pattern is a valid `T` (sealed `Element`). The
        // borrow of `self` keeps it alive and unmutated.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<T>(), len) }
    }

    /// The first `len` elements as mutable `T`s. Panics if they do not fit in the capacity.
    pub fn as_mut_slice<T: Element>(&mut self, len: usize) -> &mut [T] {
        let bytes = len.checked_mul(size_of::<T>()).expect("length overflows");
        assert!(
            bytes <= self.capacity,
            "{bytes} bytes exceed the buffer's {}",
            self.capacity
        );
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<T>(), len) }
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        self.allocator.free(self.ptr, self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_cache_reuses_exact_capacities_and_gives_everything_back() {
        let cache = BlockCache::default();
        assert_eq!(cache.take(ALIGN), None);
        assert!(cache.put(ALIGN, 0x1000));
        assert!(cache.put(2 * ALIGN, 0x2000));
        assert!(cache.put(2 * ALIGN, 0x4000));
        assert_eq!(cache.stats().cached_bytes, 5 * ALIGN as u64);
        // Only a block of exactly the asked capacity is reused.
        assert_eq!(cache.take(3 * ALIGN), None);
        assert_eq!(cache.take(ALIGN), Some(0x1000));
        assert_eq!(cache.take(ALIGN), None);
        let taken = cache.take(2 * ALIGN).expect("one of two");
        let mut left = cache.drain();
        left.push(taken);
        left.sort_unstable();
        assert_eq!(left, vec![0x2000, 0x4000]);
        assert_eq!(cache.take(2 * ALIGN), None, "drained");
        assert_eq!(cache.stats().cached_bytes, 0);
    }

    #[test]
    fn the_block_cache_refuses_blocks_beyond_its_limit() {
        let cache = BlockCache::default();
        let big = BLOCK_CACHE_MAX_BYTES / 2;
        assert!(cache.put(big, 0x1000));
        assert!(cache.put(big, 0x2000));
        assert!(
            !cache.put(ALIGN, 0x3000),
            "full: the caller frees the block"
        );
        assert_eq!(cache.take(big), Some(0x2000));
        assert!(cache.put(ALIGN, 0x3000), "room again after a reuse");
        assert_eq!(cache.stats().cached_bytes, (big + ALIGN) as u64);
    }

    /// Pageable buffers from `HUGE_BUFFER_MIN` on are their own 2 MiB-aligned mappings, ask for
    /// huge pages and start zeroed; smaller ones stay on the heap.
    #[cfg(target_os = "linux")]
    #[test]
    fn large_pageable_buffers_are_mapped_on_huge_page_boundaries() {
        let a = Allocator::new(PinMemory::Never, None).unwrap();
        let small = a.alloc(HUGE_BUFFER_MIN - ALIGN).unwrap();
        assert_eq!(
            small.capacity(),
            HUGE_BUFFER_MIN - ALIGN,
            "heap: page multiple"
        );
        let asked = HUGE_BUFFER_MIN + 1;
        let mut b = a.alloc(asked).unwrap();
        assert_eq!(b.capacity(), HUGE_BUFFER_MIN + HUGE_PAGE);
        let addr = b.as_ptr() as usize;
        assert_eq!(addr % HUGE_PAGE, 0);
        assert!(
            b.as_slice::<u64>(asked / 8).iter().all(|&x| x == 0),
            "zero-filled"
        );
        b.as_mut_slice::<u8>(asked).fill(7);
        assert!(b.as_slice::<u8>(asked).iter().all(|&x| x == 7));
        let (header, flags) = crate::mapping::tests::smaps_entry(addr);
        let range = header.split_whitespace().next().unwrap();
        let (lo, hi) = range.split_once('-').unwrap();
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).unwrap(),
            usize::from_str_radix(hi, 16).unwrap(),
        );
        assert!(lo <= addr && addr + b.capacity() <= hi, "{header}");
        if std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
        }
        // Freed with `munmap` (the capacity says which road it took).
        drop(b);
        drop(small);
    }

    #[test]
    fn never_gives_pageable_memory_with_a_reason() {
        let a = Allocator::new(PinMemory::Never, None).unwrap();
        assert_eq!(a.kind(), MemoryKind::Pageable);
        assert!(a.reason().contains("never"));
        let mut b = a.alloc(10).unwrap();
        assert_eq!(b.capacity(), SMALL_ALIGN);
        assert_eq!(b.as_ptr() as usize % SMALL_ALIGN, 0);
        assert!(b.as_slice::<u64>(8).iter().all(|&x| x == 0), "zero-filled");
        b.as_mut_slice::<i32>(3).copy_from_slice(&[1, -2, 3]);
        assert_eq!(b.as_slice::<i32>(3), &[1, -2, 3]);
        for (asked, capacity, align) in [
            (2048, 2048, SMALL_ALIGN),
            (ALIGN - 1, ALIGN, ALIGN),
            (ALIGN + 1, 2 * ALIGN, ALIGN),
        ] {
            let b = a.alloc(asked).unwrap();
            assert_eq!(b.capacity(), capacity, "{asked}");
            assert_eq!(b.as_ptr() as usize % align, 0, "{asked}");
            assert!(b.as_slice::<u8>(capacity).iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn a_missing_driver_falls_back_and_says_why() {
        let a = Allocator::with_library(
            PinMemory::Auto,
            None,
            Some("libshardstream-no-such-driver.so.1"),
        )
        .unwrap();
        assert_eq!(a.kind(), MemoryKind::Pageable);
        assert!(a.reason().contains("cannot load"), "{}", a.reason());
        let b = a.alloc(ALIGN * 3 + 1).unwrap();
        assert_eq!(b.capacity(), ALIGN * 4);
    }

    #[test]
    fn a_library_without_the_symbols_falls_back() {
        // libc loads everywhere but is not a CUDA driver.
        let a = Allocator::with_library(PinMemory::Auto, None, Some("libc.so.6")).unwrap();
        assert_eq!(a.kind(), MemoryKind::Pageable);
        assert!(a.reason().contains("lacks cuInit"), "{}", a.reason());
    }

    #[test]
    fn always_is_an_error_without_a_driver() {
        let err = Allocator::with_library(
            PinMemory::Always,
            None,
            Some("libshardstream-no-such-driver.so.1"),
        )
        .unwrap_err();
        assert!(matches!(err, crate::Error::Config(_)), "{err}");
        assert!(err.to_string().contains("always"), "{err}");
    }

    #[test]
    fn auto_agrees_with_the_machine() {
        // Pinned on a machine with a working driver, pageable (with the reason) elsewhere.
        let a = Allocator::new(PinMemory::Auto, None).unwrap();
        match driver() {
            Ok(_) if a.kind() == MemoryKind::Pinned => {
                let b = a.alloc(1 << 20).unwrap();
                assert_eq!(b.kind(), MemoryKind::Pinned);
                assert!(b.as_slice::<u8>(1 << 20).iter().all(|&x| x == 0));
            }
            Ok(_) => assert!(!a.reason().is_empty()),
            Err(reason) => {
                assert_eq!(a.kind(), MemoryKind::Pageable);
                assert_eq!(a.reason(), reason);
            }
        }
    }
}
