//! Ordinary (pageable) batch memory, and why large buffers bypass the heap.
//!
//! A batch of 256 blobs of 64 KiB is a 16 MiB buffer. From the heap, such a buffer costs more
//! than its contents: glibc serves the first one with `mmap` and, once it is freed, raises its
//! mmap threshold, so the next ones come from the arena and `calloc` zeroes all 16 MiB with a
//! `memset`, and 4,096 page faults follow when the arena grows. Buffers of at least
//! [`HUGE_PAGE`] therefore come straight from an anonymous mapping, aligned to 2 MiB and marked
//! `MADV_HUGEPAGE`: the kernel hands them out zeroed, 2 MiB per fault where transparent huge
//! pages are allowed (`madvise` mode, the common default), and the gather into them misses the
//! TLB less. Where the advice is refused, they are ordinary lazily zeroed pages. Smaller buffers
//! stay on the heap.

use std::alloc::Layout;
use std::ptr::NonNull;

use crate::pinned::ALIGN;

/// Size (and alignment) of a transparent huge page on x86-64 and most aarch64 kernels; buffers
/// this large or larger are mapped directly.
pub const HUGE_PAGE: usize = 2 << 20;

/// A zero-filled, [`ALIGN`]-aligned block of `capacity` bytes (a multiple of [`ALIGN`]), or
/// `None` if the system has no memory for it. Free it with [`free`] and the same capacity.
pub fn alloc_zeroed(capacity: usize) -> Option<NonNull<u8>> {
    debug_assert!(capacity > 0 && capacity.is_multiple_of(ALIGN));
    if capacity < HUGE_PAGE {
        let layout = Layout::from_size_align(capacity, ALIGN).ok()?;
        // SAFETY: `layout` has a non-zero size.
        return NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) });
    }
    // Over-map by one huge page, then cut the mapping down to a 2 MiB-aligned start: the
    // kernel only backs whole, aligned 2 MiB ranges with huge pages.
    let span = capacity.checked_add(HUGE_PAGE)?;
    // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    let raw = raw as usize;
    let start = raw.next_multiple_of(HUGE_PAGE);
    let head = start - raw;
    let tail = span - head - capacity;
    // SAFETY: both ranges lie inside the mapping made above, are page-aligned (`raw`, `start`
    // and `capacity` are multiples of the page size) and nothing refers to them.
    unsafe {
        if head > 0 {
            libc::munmap(raw as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + capacity) as *mut libc::c_void, tail);
        }
        // Advice only: where transparent huge pages are off, this fails and nothing changes.
        libc::madvise(start as *mut libc::c_void, capacity, libc::MADV_HUGEPAGE);
    }
    NonNull::new(start as *mut u8)
}

/// Returns a block from [`alloc_zeroed`].
///
/// # Safety
/// `ptr` came from `alloc_zeroed(capacity)` with this `capacity` and is not used afterwards.
pub unsafe fn free(ptr: NonNull<u8>, capacity: usize) {
    if capacity < HUGE_PAGE {
        let layout = Layout::from_size_align(capacity, ALIGN).expect("checked at alloc");
        // SAFETY: by the caller's contract, allocated by `alloc_zeroed` with this layout.
        unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
    } else {
        // SAFETY: by the caller's contract, exactly the mapping `alloc_zeroed` kept.
        unsafe { libc::munmap(ptr.as_ptr().cast(), capacity) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_zeroed_aligned_and_reusable_after_free() {
        for capacity in [ALIGN, 5 * ALIGN, HUGE_PAGE, 18 << 20, HUGE_PAGE + 3 * ALIGN] {
            let ptr = alloc_zeroed(capacity).expect("memory");
            let addr = ptr.as_ptr() as usize;
            assert!(addr.is_multiple_of(ALIGN), "{capacity}: {addr:#x}");
            if capacity >= HUGE_PAGE {
                assert!(addr.is_multiple_of(HUGE_PAGE), "{capacity}: {addr:#x}");
            }
            // SAFETY: `capacity` bytes were just allocated for this test alone.
            let bytes = unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), capacity) };
            assert!(bytes.iter().all(|&b| b == 0), "{capacity}: not zeroed");
            bytes[0] = 1;
            bytes[capacity - 1] = 2;
            // SAFETY: allocated above with this capacity; `bytes` is not used afterwards.
            unsafe { free(ptr, capacity) };
        }
    }
}
