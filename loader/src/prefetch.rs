//! Software prefetch for the shuffled gather: start loading a row's bytes before it is copied.
//!
//! A shuffled batch copies rows from scattered places of the units (8 KiB token rows each
//! from a different spot of a 128 MiB window). Every row starts cold: its pages' address
//! translations and first cache lines miss, and the hardware prefetchers only pick up the
//! stream after the copy has stalled on it. Touching each page of the row a couple of rows
//! ahead lets those misses overlap with the copy in progress. One prefetch per 4 KiB page is
//! enough: it starts the translation and the first line, and the hardware streams the rest.
//!
//! Measured on the peers bench's token data (8 KiB rows, 128 MiB windows, page cache warm, a
//! 2-core AMD EPYC VM): the Python loop of `benches/peers/ab_python.py`, 14 rounds × 3 epochs
//! alternated, went from 6,716 to 7,165 MB/s (0.262 → 0.250 CPU-s/GB); 64 KiB blobs from
//! 5,675 to 5,852 (the hardware streams a long row well by itself). Most of the token gain is
//! the sample ids: each id is one cache miss, which a copy of 8 bytes cannot hide (in a
//! three-way run, prefetching the rows alone gained 1% and the ids with them 6.5%). In
//! a C model of the gather alone, one prefetch per page beat one per cache line (whose
//! instructions cost more than the misses they hide), and 2 rows ahead beat 4. On a CPU other
//! than x86-64 this does nothing yet.

/// Rows ahead of the one being copied whose bytes are prefetched (rows of lists, byte
/// strings, fixed-size lists).
pub const ROWS_AHEAD: usize = 2;

/// The same for single numbers (a sample's id, a label): each is one cache miss and copying
/// it takes a few nanoseconds, so the miss must start further ahead to be hidden.
pub const NUMBERS_AHEAD: usize = 8;

/// Before item `i` of a gather is copied: prefetches item `i + distance` with `fetch`, and at
/// `i == 0` the items before it too, so every item has been prefetched once by the time it
/// is copied. The loader's collator and the benches' shuffled-copy ceiling both gather this
/// way.
#[inline]
pub fn ahead<T>(items: &[T], i: usize, distance: usize, fetch: impl Fn(&T)) {
    let first = if i == 0 { 0 } else { i + distance };
    for x in items.iter().take(i + distance + 1).skip(first) {
        fetch(x);
    }
}

/// Bytes between the prefetches of one row: a base page.
const PAGE: usize = 4096;

/// Asks the CPU to start loading `values` into its caches: one cache line in each page the
/// slice touches (its start, every 4 KiB after it, and its last byte's page if that is a
/// further one). Never faults: a page not mapped yet is skipped by the CPU, and the copy's own
/// fault maps it later.
#[inline]
pub fn prefetch<T>(values: &[T]) {
    let len = std::mem::size_of_val(values);
    if len == 0 {
        return;
    }
    // `wrapping_add` with offsets inside the slice: plain pointer arithmetic, no `unsafe`.
    let start = values.as_ptr().cast::<u8>();
    let mut at = 0;
    while at < len {
        line(start.wrapping_add(at));
        at += PAGE;
    }
    let (last, last_fetched) = (len - 1, at - PAGE);
    let base = start as usize;
    if (base + last) / PAGE != (base + last_fetched) / PAGE {
        line(start.wrapping_add(last));
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn line(p: *const u8) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: a prefetch is a hint: it never faults or reads memory the program can observe,
    // and SSE, which it needs, is part of x86-64.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn line(_p: *const u8) {}
