//! The shuffled-copy ceiling: what copying every sample of some files into batches, in a
//! shuffled order, costs this machine with no loader around it.
//!
//! The bare read (every file whole, in order, into one reused buffer) is the limit the peers
//! benchmark holds the loader to. A shuffled loader cannot read in order: each batch gathers
//! samples from all over its shuffle window, and on some machines such gathers from memory run
//! at half the speed of a sequential read per core (the hardware prefetchers see 8 KiB runs
//! instead of a stream). This measures that cost on its own, on the same files and page cache:
//! each file mapped whole, every `sample_bytes` of it one sample, samples shuffled the way the
//! planner shuffles them (files in a seeded order, cut into windows of `window_bytes`, each
//! window permuted), batches of `batch_samples` copied by `threads` threads into their own
//! reused, pre-faulted buffers, each sample's pages prefetched two samples ahead and batches
//! of 4 MiB or more written with streaming stores, as the loader's gather does. Page faults on the mappings and their unmapping are timed, as a
//! loader pays them; nothing else a loader does (planning, decoding, handing batches on) is.
//!
//! It is a ceiling, not a target: two buffers per thread of batches under 4 MiB stay in the
//! last-level cache, while a loader keeps more batches in circulation (queued, being filled,
//! held by the consumer). On the 2-core benchmark VM, 16 buffers per thread copied 18% slower
//! than 2 (medians of 8 alternated passes: 7,104 against 8,625 MB/s). Larger batches are
//! streamed past the cache either way; on 16 MiB batches of 64 KiB blobs that raised this
//! ceiling from 6,922 to 9,206 MB/s (medians of 5 alternated passes).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use memmap2::Mmap;
use shardstream_loader::prefetch::{self, ROWS_AHEAD};
use shardstream_loader::streaming::{self, Stores};

/// One measured pass.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Gathered {
    pub threads: usize,
    pub sample_bytes: usize,
    pub batch_samples: usize,
    /// Bytes copied: whole samples only (a file's tail shorter than a sample is skipped).
    pub bytes: u64,
    pub wall_s: f64,
    pub mb_per_s: f64,
}

/// What to copy and how.
#[derive(Clone, Debug)]
pub struct GatherOptions {
    pub sample_bytes: usize,
    pub batch_samples: usize,
    /// Samples are permuted within consecutive windows of this many bytes (the loader's
    /// default shuffle window is `shardstream_loader::config::DEFAULT_WINDOW`).
    pub window_bytes: u64,
    pub threads: usize,
    pub seed: u64,
}

/// Copies every `sample_bytes` chunk of `files` once, shuffled, into batches; see the module
/// docs. An error if no file holds a whole sample.
///
/// # Panics
/// If `sample_bytes`, `batch_samples` or `threads` is 0.
pub fn shuffled_copy(files: &[PathBuf], o: &GatherOptions) -> std::io::Result<Gathered> {
    let (sample_bytes, batch_samples, threads) = (o.sample_bytes, o.batch_samples, o.threads);
    assert!(sample_bytes > 0 && batch_samples > 0 && threads > 0);
    let maps = files
        .iter()
        .map(|p| map(p))
        .collect::<std::io::Result<Vec<_>>>()?;
    let lens: Vec<usize> = maps.iter().map(|m| m.len()).collect();
    let samples = shuffled_samples(&lens, o);
    if samples.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("no file holds a whole sample of {sample_bytes} bytes"),
        ));
    }
    let batches: Vec<&[(u32, u64)]> = samples.chunks(batch_samples).collect();
    let batch_bytes = sample_bytes * batches[0].len();

    // Two buffers per thread, alternated, as a loader hands one batch on while filling the
    // next; written once here, so no fresh page is faulted in the timed loop.
    let buffers: Vec<[Vec<u8>; 2]> = (0..threads)
        .map(|_| std::array::from_fn(|_| vec![1u8; batch_bytes]))
        .collect();

    // Mapping, the permutation and the buffers are set-up, left out of the time; faults on
    // the mappings and unmapping them are not.
    // As the loader's collator writes a batch this large (see `shardstream_loader::streaming`).
    let stores = Stores::for_output(batch_bytes);
    let started = Instant::now();
    std::thread::scope(|s| {
        for (t, mut buffers) in buffers.into_iter().enumerate() {
            let (maps, batches) = (&maps, &batches);
            s.spawn(move || {
                for (i, batch) in batches.iter().skip(t).step_by(threads).enumerate() {
                    let out = &mut buffers[i % 2];
                    let sample = |&(f, at): &(u32, u64)| {
                        let at = at as usize;
                        &maps[f as usize][at..at + sample_bytes]
                    };
                    for (j, (slot, x)) in out
                        .chunks_exact_mut(sample_bytes)
                        .zip(batch.iter())
                        .enumerate()
                    {
                        // As the loader's gather does (see `shardstream_loader::prefetch`).
                        prefetch::ahead(batch, j, ROWS_AHEAD, |x| prefetch::prefetch(sample(x)));
                        stores.copy(slot, sample(x));
                    }
                    streaming::fence();
                    std::hint::black_box(&out);
                }
            });
        }
    });
    drop(maps);
    let wall_s = started.elapsed().as_secs_f64();
    let bytes = samples.len() as u64 * sample_bytes as u64;
    Ok(Gathered {
        threads,
        sample_bytes,
        batch_samples,
        bytes,
        wall_s,
        mb_per_s: bytes as f64 / wall_s / 1e6,
    })
}

/// (file, offset) of every whole sample of files `lens` bytes long: files in a seeded order,
/// their samples cut into windows of `window_bytes`, each window permuted.
fn shuffled_samples(lens: &[usize], o: &GatherOptions) -> Vec<(u32, u64)> {
    let sample_bytes = o.sample_bytes;
    let mut rng = SplitMix64(o.seed);
    let mut order: Vec<usize> = (0..lens.len()).collect();
    rng.shuffle(&mut order);
    let mut samples: Vec<(u32, u64)> = order
        .iter()
        .flat_map(|&f| {
            let n = (lens[f] / sample_bytes) as u64;
            (0..n).map(move |i| (f as u32, i * sample_bytes as u64))
        })
        .collect();
    let window = usize::try_from(o.window_bytes / sample_bytes as u64)
        .unwrap_or(usize::MAX)
        .max(1);
    for w in samples.chunks_mut(window) {
        rng.shuffle(w);
    }
    samples
}

/// A seeded generator for the permutation (SplitMix64): any fixed shuffle serves here, so the
/// benchmarks need no random-number crate.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher–Yates (the modulo's bias is irrelevant to a benchmark's access pattern).
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Maps `path` whole; errors name the file.
fn map(path: &Path) -> std::io::Result<Mmap> {
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let file = File::open(path).map_err(named)?;
    // SAFETY: a read-only mapping of a file this benchmark only reads; nothing truncates the
    // benchmark's dataset while it runs.
    unsafe { Mmap::map(&file) }.map_err(named)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_whole_sample_once_shuffled_within_its_window() {
        let o = GatherOptions {
            sample_bytes: 1024,
            batch_samples: 3,
            window_bytes: 4096,
            threads: 2,
            seed: 1,
        };
        // 9 + 4 + 0 whole 1 KiB samples; the tails are skipped.
        let lens = [10_000usize, 4_096, 100];
        let got = shuffled_samples(&lens, &o);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        let mut want: Vec<(u32, u64)> = (0..9).map(|i| (0, i * 1024)).collect();
        want.extend((0..4).map(|i| (1, i * 1024)));
        assert_eq!(sorted, want);
        assert_ne!(
            got,
            shuffled_samples(
                &lens,
                &GatherOptions {
                    seed: 2,
                    ..o.clone()
                }
            )
        );
        // A window of 4 samples holds 4 consecutive samples of the file order, permuted.
        let in_file_order = shuffled_samples(
            &lens,
            &GatherOptions {
                window_bytes: 1024,
                ..o.clone()
            },
        );
        for (w, chunk) in got.chunks(4).enumerate() {
            let mut a = chunk.to_vec();
            let mut b = in_file_order[w * 4..(w * 4 + chunk.len())].to_vec();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "window {w}");
        }
        assert_ne!(got, in_file_order, "the windows are permuted");

        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::File::create(&p)
                    .unwrap()
                    .write_all(&vec![7u8; len])
                    .unwrap();
                p
            })
            .collect();
        let g = shuffled_copy(&files, &o).unwrap();
        assert_eq!(g.bytes, 13 * 1024);
        let too_large = GatherOptions {
            sample_bytes: 1 << 20,
            ..o
        };
        let err = shuffled_copy(&files, &too_large).unwrap_err();
        assert!(
            err.to_string().contains("no file holds a whole sample"),
            "{err}"
        );
    }
}
