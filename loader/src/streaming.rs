//! Streaming (non-temporal) stores for batches larger than the cache.
//!
//! A gather writes every byte of its batch once, and the loader keeps several batches in
//! circulation (queued, being filled, held by the consumer). Once those outgrow the last-level
//! cache, each ordinary store first reads its destination line from memory (a read for
//! ownership) and later writes it back: three memory transfers per byte copied, where the
//! copy needs two. `memcpy` avoids this for one large copy by switching to non-temporal stores
//! above a size threshold, but a batch is assembled from thousands of small copies (8–64 KiB
//! rows), none of them large, so it never does. [`Stores`] makes that choice per output
//! buffer instead: a buffer of at least [`STREAMING_MIN_BYTES`] is written with 32-byte
//! non-temporal stores (AVX2), which go straight to memory without reading it first.
//!
//! Measured in a C model of the gather (two threads, each copying the peers bench's shuffled
//! rows from the page cache into 4 recycled batch buffers, 2-core AMD EPYC VM, medians of
//! alternated runs; GB/s per thread, `memcpy` → streaming): 64 KiB blobs into 16 MiB batches
//! 5.9 → 8.4; 8 KiB token rows into 8 MiB batches 6.9 → 8.5, into 4 MiB batches 7.2 → 8.1, and
//! into 2 MiB batches 8.8 → 7.7 (a loss: two megabytes × the buffers in circulation still fit
//! the cache, and a line read from it costs less than one from memory). 16-byte SSE2 streaming
//! stores were slower than 32-byte ones (7.4 at 4 MiB). Hence AVX2 and the 4 MiB threshold.
//!
//! Streaming stores are weakly ordered: before a batch written with them is handed to another
//! thread, [`fence`] must make them visible (the collator calls it once per batch). The
//! consumer then reads the batch from memory rather than the cache, which a GPU copy does
//! anyway. Elsewhere than on x86-64 with AVX2, every store is an ordinary one.

/// Output buffers at least this large are written with streaming stores (see the module docs).
pub const STREAMING_MIN_BYTES: usize = 4 << 20;

/// Below this many bytes a row is copied with ordinary stores even into a streaming buffer:
/// aligning the destination and the fence are not worth it for a few cache lines.
const STREAMING_MIN_COPY: usize = 256;

/// How a gather writes one output buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stores {
    /// Ordinary stores (`copy_from_slice`).
    Cached,
    /// Non-temporal stores where the CPU has AVX2 (ordinary ones elsewhere).
    Streaming,
}

impl Stores {
    /// The stores for an output buffer of `bytes`: streaming from [`STREAMING_MIN_BYTES`]
    /// where the CPU supports them, ordinary otherwise.
    pub fn for_output(bytes: usize) -> Stores {
        if bytes >= STREAMING_MIN_BYTES && streaming_supported() {
            Stores::Streaming
        } else {
            Stores::Cached
        }
    }

    /// Copies `src` into `dst` (of the same length).
    ///
    /// # Panics
    /// If the lengths differ.
    #[inline]
    pub fn copy(self, dst: &mut [u8], src: &[u8]) {
        assert_eq!(
            dst.len(),
            src.len(),
            "copy between slices of different lengths"
        );
        match self {
            Stores::Streaming if src.len() >= STREAMING_MIN_COPY => stream(dst, src),
            _ => dst.copy_from_slice(src),
        }
    }
}

/// Whether [`Stores::Streaming`] is available on this CPU.
pub fn streaming_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Makes this thread's streaming stores visible to other threads before what it stores next
/// (an `sfence`); call after a batch is gathered, before it is handed on. Cheap, and a no-op
/// elsewhere than on x86-64.
#[inline]
pub fn fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` is part of SSE, which every x86-64 CPU has.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

#[cfg(target_arch = "x86_64")]
fn stream(dst: &mut [u8], src: &[u8]) {
    // Checked here too (a cached atomic load), so that no value of `Stores` can reach the
    // AVX2 code on a CPU without it.
    if streaming_supported() {
        // SAFETY: AVX2 is available, as just checked.
        unsafe { stream_avx2(dst, src) }
    } else {
        dst.copy_from_slice(src);
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn stream(dst: &mut [u8], src: &[u8]) {
    dst.copy_from_slice(src);
}

/// Copies `src` (as long as `dst`) with 32-byte streaming stores: an ordinary copy up to the
/// first 32-byte boundary of `dst`, then 128 bytes per step (four unaligned loads, four
/// aligned non-temporal stores), then an ordinary copy of the rest.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn stream_avx2(dst: &mut [u8], src: &[u8]) {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_stream_si256};
    const STEP: usize = 128;
    let len = dst.len();
    let head = dst.as_ptr().align_offset(32).min(len);
    dst[..head].copy_from_slice(&src[..head]);
    let body = head + (len - head) / STEP * STEP;
    let mut at = head;
    while at < body {
        // SAFETY: `at + STEP <= body <= len`, so every 32-byte load reads inside `src` and
        // every store writes inside `dst`; `dst[at]` is 32-byte aligned (`head` aligned it and
        // `STEP` is a multiple of 32), as `_mm256_stream_si256` requires.
        unsafe {
            let s = src.as_ptr().add(at).cast::<__m256i>();
            let d = dst.as_mut_ptr().add(at).cast::<__m256i>();
            let (a, b) = (_mm256_loadu_si256(s), _mm256_loadu_si256(s.add(1)));
            let (c, e) = (_mm256_loadu_si256(s.add(2)), _mm256_loadu_si256(s.add(3)));
            _mm256_stream_si256(d, a);
            _mm256_stream_si256(d.add(1), b);
            _mm256_stream_si256(d.add(2), c);
            _mm256_stream_si256(d.add(3), e);
        }
        at += STEP;
    }
    dst[body..].copy_from_slice(&src[body..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length around the step and the threshold, at every destination and source
    /// alignment within a cache line: the bytes arrive exactly, and nothing around them is
    /// touched.
    #[test]
    fn streaming_copies_are_exact_at_any_alignment_and_length() {
        let src: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut buf = vec![0xAAu8; 5200];
        for len in [0, 1, 31, 32, 127, 128, 255, 256, 257, 383, 1000, 4096 + 17] {
            for dst_off in [0, 1, 5, 31, 32, 33, 63] {
                for src_off in [0, 3, 32, 61] {
                    buf.fill(0xAA);
                    let s = &src[src_off..src_off + len];
                    Stores::Streaming.copy(&mut buf[dst_off..dst_off + len], s);
                    fence();
                    assert_eq!(
                        &buf[dst_off..dst_off + len],
                        s,
                        "len {len} at {dst_off}/{src_off}"
                    );
                    assert!(buf[..dst_off].iter().all(|&b| b == 0xAA));
                    assert!(buf[dst_off + len..].iter().all(|&b| b == 0xAA));
                }
            }
        }
    }

    #[test]
    fn only_large_outputs_stream() {
        assert_eq!(Stores::for_output(STREAMING_MIN_BYTES - 1), Stores::Cached);
        let large = Stores::for_output(STREAMING_MIN_BYTES);
        assert_eq!(large == Stores::Streaming, streaming_supported());
    }
}
