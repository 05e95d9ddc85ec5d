//! Read-only file mappings: how local shards and cache entries are read without a copy.
//!
//! Mapped pages cost the loader in three places: a page fault for every 16 pages first
//! touched (the kernel's fault-around), a TLB miss for nearly every row the shuffled gather
//! copies, and tearing the page tables down when the unit is dropped. All three shrink 512-fold
//! where the kernel can map a 2 MiB page-cache folio with one page-directory entry, which needs
//! two things the loader controls:
//!
//! - **Huge-page advice** (`MADV_HUGEPAGE`). A file read from disk through a mapping is read
//!   ahead into small folios unless the mapping asks for huge pages, and stays in them for as
//!   long as it is cached: every later epoch pays for it. With the advice, the kernel (with
//!   transparent huge pages at `madvise` or `always`, and a file system that caches large
//!   folios: ext4 and XFS on recent kernels) reads 2 MiB folios. Measured on the peers bench's
//!   token files (2.15 GB, evicted first, 2-core AMD EPYC VM, Linux 6.18, ext4; two runs each):
//!   the cold first epoch read 1.1–1.7 GB/s either way, and the second epoch, from the page
//!   cache, 7.0–7.8 GB/s with the advice against 4.3–4.6 without; afterwards 1.8 GB of the
//!   files were mapped in 2 MiB pages, against none.
//! - **2 MiB-aligned ranges.** A unit is a row group at any offset of its file, and only
//!   folios wholly inside a mapping can be mapped huge, so a range is widened to the 2 MiB
//!   boundaries around it (within the file). Widening costs nothing until touched, and no
//!   more of the file is read than before. With the page cache as the peers bench leaves it
//!   (about a third of the token files in 2 MiB folios): +1.8% and +2.6% MB/s on tokens, +1%
//!   on blobs, in alternated runs of `benches/peers/ab_python.py`.
//!
//! `LoaderConfig::huge_pages = false` drops the advice (not the alignment, which costs
//! nothing): on a VM with free page reporting, fresh 2 MiB frames fault on the host, and a cold
//! epoch read 16% slower with the advice (measured with `ab_python.py --cold`).

use std::fs::File;
use std::ops::Range;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

/// The huge page size the alignment aims at (x86-64 and most aarch64 kernels); large batch
/// buffers are aligned to it too (see `pinned`).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Maps bytes `range` of a file `file_len` bytes long (the range must lie inside it)
/// read-only and returns them as `Bytes` without copying, asking for huge pages if
/// `huge_pages`.
///
/// The mapping stays valid while any clone of the returned `Bytes` lives. If another process
/// truncates the file meanwhile, touching the lost pages raises SIGBUS — the same contract as
/// every mmap-based reader; callers verify size and etag against the manifest first, and the
/// shards of a dataset are not rewritten in place while a job reads them.
///
/// The mapping is not populated: pages are mapped as the decoder and the collator first touch
/// them, on the threads that read them. Filling the page tables at once (`MAP_POPULATE`)
/// instead puts all of that work on the single I/O thread, ahead of the decoders: measured side
/// by side, it made epochs from the page cache 6% slower on PLAIN token lists and 15% slower
/// on 64 KiB blobs.
pub(crate) fn map_range(
    file: &File,
    file_len: u64,
    range: Range<u64>,
    huge_pages: bool,
) -> std::io::Result<Bytes> {
    if range.is_empty() {
        return Ok(Bytes::new());
    }
    const HUGE: u64 = HUGE_PAGE as u64;
    let start = range.start - range.start % HUGE;
    let end = range
        .end
        .checked_next_multiple_of(HUGE)
        .map_or(file_len, |e| e.min(file_len))
        .max(range.end);
    let len = usize::try_from(end - start)
        .map_err(|_| std::io::Error::other("range too large to map"))?;
    // SAFETY: read-only shared mapping of a file we opened; see above for the truncation
    // caveat. `Bytes::from_owner` keeps the `Mmap` (and so the mapping) alive.
    let map = unsafe { MmapOptions::new().offset(start).len(len).map(file)? };
    if huge_pages {
        advise_huge_pages(&map);
    }
    let from = (range.start - start) as usize;
    let to = from + (range.end - range.start) as usize;
    Ok(Bytes::from_owner(map).slice(from..to))
}

/// Asks the kernel to back `map` with huge pages where it can (see the module docs). Only a
/// hint: where transparent huge pages are off, or the call is refused, nothing changes.
pub(crate) fn advise_huge_pages(map: &Mmap) {
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    #[cfg(not(target_os = "linux"))]
    let _ = map;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn files_map_without_copies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello mapped world").unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(
            &map_range(&file, 18, 0..18, true).unwrap()[..],
            b"hello mapped world"
        );
        // Offsets need not be page-aligned.
        assert_eq!(&map_range(&file, 18, 6..12, true).unwrap()[..], b"mapped");
        assert!(map_range(&file, 18, 5..5, true).unwrap().is_empty());
    }

    /// The `/proc/self/smaps` entry of the mapping holding `addr`: its header line (with the
    /// file offset it maps from) and its `VmFlags`.
    #[cfg(target_os = "linux")]
    pub(crate) fn smaps_entry(addr: usize) -> (String, String) {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut header = None;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = first.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    header = (lo <= addr && addr < hi).then(|| line.to_string());
                    continue;
                }
            }
            if let (Some(h), Some(flags)) = (&header, line.strip_prefix("VmFlags:")) {
                return (h.clone(), flags.to_string());
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn mappings_start_on_a_huge_page_boundary_of_the_file_and_ask_for_huge_pages_if_told() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            eprintln!("skipped: this kernel has no transparent huge pages");
            return;
        }
        let len = 5u64 << 20;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![3u8; len as usize]).unwrap();
        let file = File::open(&path).unwrap();
        for huge_pages in [true, false] {
            let range = (2 << 20) + 12_345..(4 << 20) + 1;
            let bytes = map_range(&file, len, range, huge_pages).unwrap();
            let (header, flags) = smaps_entry(bytes.as_ptr() as usize);
            // `start-end perms offset dev inode path`: mapped from the file's 2 MiB mark.
            let offset = header.split_whitespace().nth(2).unwrap();
            assert_eq!(
                u64::from_str_radix(offset, 16).unwrap(),
                2 << 20,
                "{header}"
            );
            let advised = flags.split_whitespace().any(|f| f == "hg");
            assert_eq!(advised, huge_pages, "VmFlags:{flags}");
        }
    }

    #[test]
    fn ranges_far_from_huge_page_boundaries_map_exactly_their_bytes() {
        // 5 MiB: the ranges below widen to 0..2 MiB, 2..4 MiB, 0..5 MiB (the file's end) and
        // 4..5 MiB, and must still return exactly the bytes asked for.
        let len = 5u64 << 20;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        for range in [
            1..4097,
            (2 << 20) + 5..(3 << 20),
            (1 << 20)..(4 << 20) + 1,
            len - 3..len,
        ] {
            let got = map_range(&file, len, range.clone(), true).unwrap();
            let want = &data[range.start as usize..range.end as usize];
            assert!(got[..] == *want, "{range:?}");
        }
    }
}
