//! Size accounting and LRU eviction, shared by every process using the cache directory.
//!
//! All changes to the *set* of entries that affect the total — renaming a new entry into
//! `entries/`, evicting, removing a corrupt entry — happen while holding an exclusive flock on
//! `<dir>/space`. That file also stores the running total of entry bytes, so an insert that fits
//! costs one lock and a 20-byte read/write instead of a directory scan. The stored total is
//! trusted for [`STATE_MAX_AGE`] seconds and is recomputed by a full scan of `entries/` when it
//! is older, unreadable, or says the new entry does not fit (eviction needs the scan's LRU order
//! anyway). The only ways it can drift are a process dying between a rename and the counter
//! update (a microsecond window) or someone deleting files by hand; both are bounded by the
//! periodic rescan and corrected by every `DiskCache::open`.
//!
//! Recency is the entry file's mtime: created at write, bumped on every hit by whichever process
//! reads it. A scan keeps the [`MAX_CANDIDATES`] least recently used entries, oldest first, in a
//! per-process list. Later evictions walk that list without rescanning; a candidate whose mtime
//! or size changed since the scan was used (or replaced) meanwhile and is dropped from the list,
//! so the walk stays exact LRU: everything not in the list, or touched since, is newer than every
//! untouched candidate.
//!
//! An entry is evicted only after taking a non-blocking exclusive flock on it. Readers hold a
//! shared flock for as long as they use an entry, so an entry in use is skipped, never removed.
//! When a fresh scan's candidates are all in use and the new entry still does not fit, the
//! insert fails at once with `CacheTooSmall` (nothing waits for space to free up, so nothing can
//! deadlock). Because a scan keeps only the [`MAX_CANDIDATES`] oldest entries, that verdict could
//! be premature only if more than that many of the oldest entries were in use at once.
//!
//! Cost, measured on the 2-core dev VM under load: a scan is ~3-5 µs per entry (50 ms for
//! 10,000 entries), which is why inserts that fit use the stored total instead of scanning.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::lock::{flock, is_unlinked, try_flock};

/// Seconds for which the stored total is trusted without a rescan of `entries/`.
pub(crate) const STATE_MAX_AGE: u64 = 10;

/// How many eviction candidates one scan remembers (bounds per-process memory with huge caches;
/// each candidate is ~100 bytes).
pub(crate) const MAX_CANDIDATES: usize = 65_536;

const STATE_LEN: usize = 20;

/// Name of the accounting/lock file in the cache root.
pub(crate) const SPACE_FILE: &str = "space";

pub(crate) struct Space {
    limit: u64,
    state_path: PathBuf,
    entries: PathBuf,
    candidates: Mutex<VecDeque<Candidate>>,
}

struct Candidate {
    name: std::ffi::OsString,
    len: u64,
    mtime: (i64, i64),
}

/// Result of [`Space::reserve`].
pub(crate) enum Reserved {
    /// There was room (after `evicted` evictions) and the commit ran.
    Done { evicted: u64 },
    /// Even after evicting everything evictable, `in_use` bytes in `in_use_entries` entries
    /// remain and the new entry does not fit. The commit did not run.
    TooSmall {
        evicted: u64,
        in_use: u64,
        in_use_entries: u64,
    },
}

#[derive(Clone, Copy)]
struct State {
    total: u64,
    scanned_at: u64,
}

impl Space {
    pub(crate) fn new(dir: &Path, entries: &Path, limit: u64) -> Space {
        Space {
            limit,
            state_path: dir.join(SPACE_FILE),
            entries: entries.to_path_buf(),
            candidates: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Makes room for `new_len` more bytes, evicting least-recently-used entries that nobody
    /// uses, then runs `commit` (the rename that publishes the entry) and accounts for it — all
    /// under the node-wide space lock, so concurrent inserts cannot both squeeze into the same
    /// free space. `force_scan` recomputes the total from the directory first.
    pub(crate) fn reserve(
        &self,
        new_len: u64,
        force_scan: bool,
        commit: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<Reserved> {
        let lock = self.lock()?;
        let now = unix_now();
        // The list is only used under the space lock; the mutex just makes `Space` Sync.
        let mut cands = self
            .candidates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut scanned = false;
        let mut state = match read_state(&lock) {
            Some(s) if !force_scan && now >= s.scanned_at && now - s.scanned_at < STATE_MAX_AGE => {
                s
            }
            _ => {
                scanned = true;
                State {
                    total: self.scan(&mut cands)?,
                    scanned_at: now,
                }
            }
        };
        let mut evicted = 0;
        loop {
            if state.total.saturating_add(new_len) <= self.limit {
                break;
            }
            let need = state.total.saturating_add(new_len) - self.limit;
            let (freed, n) = self.evict(&mut cands, need)?;
            evicted += n;
            state.total = state.total.saturating_sub(freed);
            if state.total.saturating_add(new_len) <= self.limit {
                break;
            }
            if scanned {
                // A fresh scan's candidates are all in use: nothing more can go.
                write_state(&lock, state)?;
                return Ok(Reserved::TooSmall {
                    evicted,
                    in_use: state.total,
                    in_use_entries: cands.len() as u64,
                });
            }
            // The list ran out (or the stored total was stale): look at the directory again.
            scanned = true;
            state = State {
                total: self.scan(&mut cands)?,
                scanned_at: now,
            };
        }
        let committed = commit();
        if committed.is_ok() {
            state.total = state.total.saturating_add(new_len);
        }
        write_state(&lock, state)?;
        committed?;
        Ok(Reserved::Done { evicted })
    }

    /// Deletes the entry file at `path` (a corrupt one) and subtracts its size from the total.
    pub(crate) fn remove(&self, path: &Path) -> io::Result<()> {
        let lock = self.lock()?;
        let len = match std::fs::symlink_metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        if let Some(mut s) = read_state(&lock) {
            s.total = s.total.saturating_sub(len);
            write_state(&lock, s)?;
        }
        Ok(())
    }

    fn lock(&self) -> io::Result<File> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&self.state_path)?;
        flock(&f, libc::LOCK_EX)?;
        Ok(f)
    }

    /// Lists `entries/`, returns the total bytes and refills `cands` with the least recently
    /// used entries, oldest first.
    fn scan(&self, cands: &mut VecDeque<Candidate>) -> io::Result<u64> {
        let mut total = 0u64;
        let mut all = Vec::new();
        for dirent in std::fs::read_dir(&self.entries)? {
            let dirent = dirent?;
            let meta = match dirent.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !meta.is_file() {
                continue;
            }
            total = total.saturating_add(meta.len());
            all.push(Candidate {
                name: dirent.file_name(),
                len: meta.len(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
            });
        }
        if all.len() > MAX_CANDIDATES {
            all.select_nth_unstable_by_key(MAX_CANDIDATES, |c| c.mtime);
            all.truncate(MAX_CANDIDATES);
        }
        all.sort_unstable_by_key(|c| c.mtime);
        *cands = all.into();
        Ok(total)
    }

    /// Evicts candidates in LRU order until `need` bytes are freed or the list is exhausted.
    /// Returns (bytes freed, entries evicted). Candidates in use stay in the list.
    fn evict(&self, cands: &mut VecDeque<Candidate>, need: u64) -> io::Result<(u64, u64)> {
        let (mut freed, mut n) = (0u64, 0u64);
        let mut i = 0;
        while i < cands.len() && freed < need {
            let path = self.entries.join(&cands[i].name);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    cands.remove(i);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let meta = file.metadata()?;
            if (meta.mtime(), meta.mtime_nsec()) != cands[i].mtime || meta.len() != cands[i].len {
                // Used or replaced since the scan: it is no longer among the least recent.
                cands.remove(i);
                continue;
            }
            if !try_flock(&file, libc::LOCK_EX)? {
                // In use by a reader (shared lock) or being published (exclusive): skip it.
                i += 1;
                continue;
            }
            if is_unlinked(&file)? {
                cands.remove(i);
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    freed += meta.len();
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            cands.remove(i);
        }
        Ok((freed, n))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn read_state(f: &File) -> Option<State> {
    let mut buf = [0u8; STATE_LEN];
    f.read_exact_at(&mut buf, 0).ok()?;
    let crc = u32::from_le_bytes([buf[16], buf[17], buf[18], buf[19]]);
    if crc32fast::hash(&buf[..16]) != crc {
        return None;
    }
    let mut total = [0u8; 8];
    total.copy_from_slice(&buf[0..8]);
    let mut at = [0u8; 8];
    at.copy_from_slice(&buf[8..16]);
    Some(State {
        total: u64::from_le_bytes(total),
        scanned_at: u64::from_le_bytes(at),
    })
}

fn write_state(f: &File, s: State) -> io::Result<()> {
    let mut buf = [0u8; STATE_LEN];
    buf[0..8].copy_from_slice(&s.total.to_le_bytes());
    buf[8..16].copy_from_slice(&s.scanned_at.to_le_bytes());
    let crc = crc32fast::hash(&buf[..16]);
    buf[16..20].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&buf, 0)
}
