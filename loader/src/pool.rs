//! Recycled batch buffers.
//!
//! Allocating pinned memory costs far more than copying into it (`cuMemHostAlloc` maps and
//! locks pages: milliseconds per call), and even pageable allocations of tens of megabytes fault
//! in fresh pages every time. So batch memory is recycled: a [`PooledBuffer`] returns its
//! [`HostBuffer`] to the pool when dropped — when the consumer drops the batch, or the Python
//! tensor exported from it is freed — and the next batch of the same shape reuses it.
//!
//! Buffers are kept by capacity; a request takes the smallest free buffer that fits and is at
//! most twice as large, otherwise allocates a new one with capacity rounded up to a size class
//! (1/8 steps between powers of two), so slowly varying sizes (e.g. padded token batches whose
//! longest list changes) still reuse buffers. The pool keeps at most `max_retained` bytes of
//! free buffers; beyond that, returned buffers are freed: pageable ones to the heap, pinned ones
//! into their allocator's block cache while it has room (still page-locked, reused by a later
//! allocation of the same size class without a driver call; see `pinned`).
//!
//! The limit follows the batches: a pool told how many batches the loader keeps in circulation
//! ([`BufferPool::keep_batches`]) raises it to that many of the largest batch it has seen
//! ([`BufferPool::note_batch`]). A fixed limit below the circulating bytes frees a buffer every
//! time the consumer drops a batch and allocates (and faults in) a fresh one for the next: with
//! 16 MiB batches of 64 KiB blobs (8 in circulation against a 64 MiB limit) that churn cost
//! 14% of the loader's CPU and 20% of its throughput. Once the pool recycles, how fresh memory
//! is obtained hardly matters: mapping large buffers directly (no `calloc` memset) and asking
//! for transparent huge pages were both tried and measured no faster side by side. What does
//! show is the first round of buffers in a short-lived process, and the TLB on batches of many
//! megabytes: pageable buffers from 4 MiB on are mapped in huge pages since (see
//! `pinned::HUGE_BUFFER_MIN`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::pinned::{Allocator, Element, HostBuffer, MemoryKind, PinnedStats, ALIGN, SMALL_ALIGN};
use crate::Result;

/// Counters of one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PoolStats {
    /// Buffers newly allocated.
    pub allocations: u64,
    /// Seconds spent in those allocations (pinned ones cost milliseconds each).
    pub alloc_busy_s: f64,
    /// Requests served by a recycled buffer.
    pub reuses: u64,
    /// Bytes of all buffers currently allocated (in use or free).
    pub allocated_bytes: u64,
    /// Bytes of free buffers kept for reuse.
    pub retained_bytes: u64,
    /// Below the pool: the pinned allocator's block cache and driver calls.
    pub pinned: PinnedStats,
}

struct Inner {
    allocator: Allocator,
    free: Mutex<BTreeMap<usize, Vec<HostBuffer>>>,
    /// Only grows: from the floor given to `new` to `keep_batches` × the largest batch noted.
    max_retained: AtomicU64,
    keep_batches: u64,
    retained: AtomicU64,
    allocated: AtomicU64,
    allocations: AtomicU64,
    alloc_nanos: AtomicU64,
    reuses: AtomicU64,
}

/// A pool of host buffers from one [`Allocator`]. Cheap to clone (shared).
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<Inner>,
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("kind", &self.kind())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Rounds up to a size class: multiples of 1/8 of the power of two below, in steps of at least
/// a cache line under a page and a page from there on (what the allocator rounds to anyway).
fn size_class(bytes: usize) -> usize {
    let bytes = bytes.max(SMALL_ALIGN);
    let pow = usize::BITS - 1 - bytes.leading_zeros();
    let step = (1usize << pow) / 8;
    let step = step.max(if bytes < ALIGN { SMALL_ALIGN } else { ALIGN });
    bytes.div_ceil(step) * step
}

impl BufferPool {
    pub fn new(allocator: Allocator, max_retained: u64) -> BufferPool {
        BufferPool {
            inner: Arc::new(Inner {
                allocator,
                free: Mutex::new(BTreeMap::new()),
                max_retained: AtomicU64::new(max_retained),
                keep_batches: 0,
                retained: AtomicU64::new(0),
                allocated: AtomicU64::new(0),
                allocations: AtomicU64::new(0),
                alloc_nanos: AtomicU64::new(0),
                reuses: AtomicU64::new(0),
            }),
        }
    }

    /// Lets retention grow with the batches: up to `batches` times the largest batch passed to
    /// [`BufferPool::note_batch`] (the limit given to `new` stays the floor). Call before
    /// cloning the pool.
    pub fn keep_batches(mut self, batches: u64) -> BufferPool {
        Arc::get_mut(&mut self.inner)
            .expect("keep_batches before the pool is shared")
            .keep_batches = batches;
        self
    }

    /// Records a finished batch holding `bytes` of this pool's buffers (their capacities).
    pub fn note_batch(&self, bytes: u64) {
        let wanted = bytes.saturating_mul(self.inner.keep_batches);
        self.inner.max_retained.fetch_max(wanted, Ordering::Relaxed);
    }

    /// The current retention limit in bytes.
    pub fn max_retained(&self) -> u64 {
        self.inner.max_retained.load(Ordering::Relaxed)
    }

    pub fn kind(&self) -> MemoryKind {
        self.inner.allocator.kind()
    }

    pub fn allocator(&self) -> &Allocator {
        &self.inner.allocator
    }

    /// A buffer holding `len` bytes (contents unspecified but initialised: zero or old data).
    pub fn get(&self, len: usize) -> Result<PooledBuffer> {
        let want = len.max(1);
        let recycled = {
            let mut free = self.inner.free.lock().expect("pool lock");
            let found = free
                .range(want..=want.saturating_mul(2).max(ALIGN))
                .next()
                .map(|(&cap, _)| cap);
            found.and_then(|cap| {
                let list = free.get_mut(&cap)?;
                let buf = list.pop();
                if list.is_empty() {
                    free.remove(&cap);
                }
                buf
            })
        };
        let buffer = match recycled {
            Some(buf) => {
                self.inner
                    .retained
                    .fetch_sub(buf.capacity() as u64, Ordering::Relaxed);
                self.inner.reuses.fetch_add(1, Ordering::Relaxed);
                buf
            }
            None => {
                let started = Instant::now();
                let buf = self.inner.allocator.alloc(size_class(want))?;
                let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.inner.alloc_nanos.fetch_add(nanos, Ordering::Relaxed);
                self.inner
                    .allocated
                    .fetch_add(buf.capacity() as u64, Ordering::Relaxed);
                self.inner.allocations.fetch_add(1, Ordering::Relaxed);
                buf
            }
        };
        Ok(PooledBuffer {
            buffer: Some(buffer),
            len,
            pool: self.inner.clone(),
        })
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            allocations: self.inner.allocations.load(Ordering::Relaxed),
            alloc_busy_s: self.inner.alloc_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            reuses: self.inner.reuses.load(Ordering::Relaxed),
            allocated_bytes: self.inner.allocated.load(Ordering::Relaxed),
            retained_bytes: self.inner.retained.load(Ordering::Relaxed),
            pinned: self.inner.allocator.pinned_stats(),
        }
    }
}

impl Inner {
    fn give_back(&self, buf: HostBuffer) {
        let cap = buf.capacity() as u64;
        let kept = self.retained.fetch_add(cap, Ordering::Relaxed) + cap;
        if kept > self.max_retained.load(Ordering::Relaxed) {
            self.retained.fetch_sub(cap, Ordering::Relaxed);
            self.allocated.fetch_sub(cap, Ordering::Relaxed);
            drop(buf);
            return;
        }
        self.free
            .lock()
            .expect("pool lock")
            .entry(buf.capacity())
            .or_default()
            .push(buf);
    }
}

/// A buffer on loan from a [`BufferPool`]; returns to it when dropped.
///
/// `len` is the number of meaningful bytes; the memory behind [`PooledBuffer::as_ptr`] is
/// aligned (see [`HostBuffer`]) and stays valid (and unmoved) until the buffer is dropped, which
/// is what a zero-copy export (DLPack, the buffer protocol) needs.
pub struct PooledBuffer {
    buffer: Option<HostBuffer>,
    len: usize,
    pool: Arc<Inner>,
}

impl fmt::Debug for PooledBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBuffer")
            .field("len", &self.len)
            .field("kind", &self.kind())
            .finish()
    }
}

impl PooledBuffer {
    fn host(&self) -> &HostBuffer {
        self.buffer.as_ref().expect("present until drop")
    }

    fn host_mut(&mut self) -> &mut HostBuffer {
        self.buffer.as_mut().expect("present until drop")
    }

    /// Meaningful bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes reserved (at least `len`).
    pub fn capacity(&self) -> usize {
        self.host().capacity()
    }

    pub fn kind(&self) -> MemoryKind {
        self.host().kind()
    }

    /// Start of the data; valid for `len()` bytes while `self` lives.
    pub fn as_ptr(&self) -> *const u8 {
        self.host().as_ptr()
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.host().as_slice::<u8>(self.len)
    }

    /// The data as `T`s (`len()` must be a multiple of `size_of::<T>()`).
    pub fn as_slice<T: Element>(&self) -> &[T] {
        debug_assert_eq!(self.len % size_of::<T>(), 0);
        self.host().as_slice::<T>(self.len / size_of::<T>())
    }

    pub fn as_mut_slice<T: Element>(&mut self) -> &mut [T] {
        debug_assert_eq!(self.len % size_of::<T>(), 0);
        let n = self.len / size_of::<T>();
        self.host_mut().as_mut_slice::<T>(n)
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buf) = self.buffer.take() {
            self.pool.give_back(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max: u64) -> BufferPool {
        BufferPool::new(Allocator::pageable("test".into()), max)
    }

    #[test]
    fn size_classes_round_up_in_eighths() {
        assert_eq!(size_class(1), SMALL_ALIGN);
        assert_eq!(size_class(2048), 2048);
        assert_eq!(size_class(2049), 2048 + 256);
        assert_eq!(size_class(ALIGN - 1), ALIGN);
        assert_eq!(size_class(ALIGN), ALIGN);
        assert_eq!(size_class(ALIGN + 1), 2 * ALIGN);
        assert_eq!(size_class(1 << 20), 1 << 20);
        assert_eq!(size_class((1 << 20) + 1), (1 << 20) + (1 << 17));
        for n in [5000usize, 123_456, 9_999_999] {
            let c = size_class(n);
            assert!(c >= n && c < n + n / 4 + ALIGN, "{n} -> {c}");
        }
    }

    #[test]
    fn buffers_come_back_and_are_reused() {
        let p = pool(1 << 30);
        let mut a = p.get(100_000).unwrap();
        a.as_mut_slice::<u8>()[0] = 7;
        let ptr = a.as_ptr();
        drop(a);
        assert_eq!(p.stats().retained_bytes, size_class(100_000) as u64);
        let b = p.get(90_000).unwrap();
        assert_eq!(b.as_ptr(), ptr, "the free buffer is reused");
        assert_eq!(b.len(), 90_000);
        let s = p.stats();
        assert_eq!((s.allocations, s.reuses, s.retained_bytes), (1, 1, 0));
        // Far smaller requests do not take a much larger buffer.
        drop(b);
        let c = p.get(1000).unwrap();
        assert_ne!(c.as_ptr(), ptr);
        assert_eq!(p.stats().allocations, 2);
    }

    #[test]
    fn retention_is_bounded() {
        let p = pool(200_000);
        let bufs: Vec<_> = (0..4).map(|_| p.get(100_000).unwrap()).collect();
        drop(bufs);
        let s = p.stats();
        assert!(s.retained_bytes <= 200_000, "{s:?}");
        assert_eq!(s.allocated_bytes, s.retained_bytes);
    }

    #[test]
    fn retention_grows_to_the_batches_in_circulation() {
        let p = pool(100_000).keep_batches(3);
        let class = size_class(200_000) as u64;
        p.note_batch(class);
        assert_eq!(p.max_retained(), 3 * class);
        // A smaller batch never lowers the limit, and without `keep_batches` nothing grows.
        p.note_batch(1);
        assert_eq!(p.max_retained(), 3 * class);
        let fixed = pool(100_000);
        fixed.note_batch(class);
        assert_eq!(fixed.max_retained(), 100_000);
        // Three batches' buffers come back and are all kept: the next three reuse them.
        let bufs: Vec<_> = (0..3).map(|_| p.get(200_000).unwrap()).collect();
        drop(bufs);
        let again: Vec<_> = (0..3).map(|_| p.get(200_000).unwrap()).collect();
        let s = p.stats();
        assert_eq!((s.allocations, s.reuses), (3, 3), "{s:?}");
        drop(again);
        // A fourth would exceed the limit and is freed.
        let bufs: Vec<_> = (0..4).map(|_| p.get(200_000).unwrap()).collect();
        drop(bufs);
        assert_eq!(p.stats().retained_bytes, 3 * class);
    }

    #[test]
    fn buffers_outlive_the_pool_handle() {
        let p = pool(1 << 20);
        let b = p.get(10).unwrap();
        drop(p);
        assert_eq!(b.as_bytes().len(), 10);
        drop(b);
    }
}
