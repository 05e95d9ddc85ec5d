//! [`DiskCache`]: lookup, single-flight download, atomic publish and pinning.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memmap2::Mmap;

use super::format::{crc_matches, encode_trailer, parse_trailer, TRAILER_LEN};
use super::key::CacheKey;
use super::lock::{flock, is_unlinked, remove_unlocked_files, touch, try_flock, KeyLock};
use super::space::{Reserved, Space, SPACE_FILE};
use crate::{Error, Result};

/// Bytes each entry occupies on disk beyond its payload (the integrity trailer). The size limit
/// counts whole files, so callers sizing the cache may add this per entry.
pub const ENTRY_OVERHEAD: u64 = TRAILER_LEN as u64;

/// Where the cache lives and how big it may grow.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// The cache directory, shared by every process of the node that should share entries.
    pub dir: PathBuf,
    /// Upper bound on the bytes of all entries (payload + [`ENTRY_OVERHEAD`] each); `None` for
    /// no limit. Temp files of downloads in progress are not counted. Every process sharing
    /// `dir` should use the same limit: each enforces its own when it inserts, and a process
    /// without a limit does not update the shared total (the next scan corrects it).
    pub limit: Option<u64>,
    /// Advise huge pages on mapped entries (`LoaderConfig::huge_pages`).
    pub huge_pages: bool,
}

/// Counters of one [`DiskCache`] handle (and its clones), not of the whole directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Lookups answered from the cache (including after waiting for another downloader).
    pub hits: u64,
    /// Lookups that ran `fetch` and stored its result.
    pub misses: u64,
    /// Entries this handle removed to stay under the limit.
    pub evictions: u64,
    /// Payload bytes this handle stored.
    pub bytes_written: u64,
    /// Payload bytes of hits.
    pub bytes_served: u64,
    /// Lookups that waited for another task or process downloading the same key.
    pub waits: u64,
    /// Corrupt or truncated entries that were deleted and fetched again.
    pub corrupt_refetched: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    bytes_written: AtomicU64,
    bytes_served: AtomicU64,
    waits: AtomicU64,
    corrupt_refetched: AtomicU64,
}

/// A handle to a node-local cache directory. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct DiskCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("dir", &self.inner.dir)
            .field("limit", &self.inner.space.as_ref().map(|s| s.limit()))
            .finish()
    }
}

/// Identity of an entry file whose CRC this process already checked: entry files are never
/// modified after they are published, so the same inode with the same size and trailer CRC
/// (for the same key) needs no second check.
type VerifiedId = (u64, u64, u64, u32);

/// Forget verified identities beyond this many (they are then simply checked again).
const MAX_VERIFIED: usize = 1 << 16;

struct Inner {
    dir: PathBuf,
    entries: PathBuf,
    tmp: PathBuf,
    locks: PathBuf,
    space: Option<Space>,
    huge_pages: bool,
    /// In-process single flight: one async mutex per key being looked up on the slow path.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    verified: Mutex<HashSet<VerifiedId>>,
    tmp_seq: AtomicU64,
    counters: Counters,
}

/// A cache entry in use: a shared flock on its file keeps every process from evicting it.
///
/// The lock is held by the file's memory mapping rather than by a file descriptor (a mapping
/// references the open file description, and the kernel drops a flock only when the last
/// reference goes), so a pinned entry costs no descriptor and the pin lasts until this
/// `CacheEntry` *and* every [`Bytes`] view from [`bytes`](Self::bytes) are dropped. The bytes
/// cannot change under a reader: entry files are never written after they are published, and
/// on Linux an unlinked file's mapped pages stay valid until unmapped.
pub struct CacheEntry {
    /// View of the mapping; owning it is what pins the entry.
    bytes: Bytes,
    from_cache: bool,
}

impl std::fmt::Debug for CacheEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheEntry")
            .field("len", &self.bytes.len())
            .field("from_cache", &self.from_cache)
            .finish()
    }
}

impl CacheEntry {
    /// The payload, zero-copy: a view of the entry file's memory mapping.
    pub fn bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    /// Payload length in bytes.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// `true` for a hit, `false` when this call ran `fetch`.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }
}

enum Lookup {
    Hit(CacheEntry),
    Missing,
    Corrupt(String),
}

impl DiskCache {
    /// Opens (creating if needed) the cache at `config.dir` and repairs what crashed processes
    /// left: temp files and lock files nobody holds are removed, and with a limit the total is
    /// recomputed and entries are evicted down to the limit. Entries with a bad trailer are
    /// removed when they are next looked up.
    ///
    /// Blocking (directory scans): call it from a synchronous context or `spawn_blocking`.
    pub fn open(config: CacheConfig) -> Result<DiskCache> {
        let dir = config.dir;
        let entries = dir.join("entries");
        let tmp = dir.join("tmp");
        let locks = dir.join("locks");
        for d in [&dir, &entries, &tmp, &locks] {
            std::fs::create_dir_all(d).map_err(|e| io_err(d, e))?;
        }
        let space = config.limit.map(|limit| Space::new(&dir, &entries, limit));
        let inner = Inner {
            dir,
            entries,
            tmp,
            locks,
            space,
            huge_pages: config.huge_pages,
            inflight: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashSet::new()),
            tmp_seq: AtomicU64::new(0),
            counters: Counters::default(),
        };
        inner.repair()?;
        Ok(DiskCache {
            inner: Arc::new(inner),
        })
    }

    /// `Err(Error::CacheTooSmall)` when the limit cannot hold `needed` bytes at once (for
    /// example the prefetch window of every rank on the node). `detail` says what needs them.
    pub fn check_fits(&self, needed: u64, detail: &str) -> Result<()> {
        match &self.inner.space {
            Some(space) if space.limit() < needed => Err(Error::CacheTooSmall {
                limit: space.limit(),
                needed,
                detail: format!("{detail}; cache {}", self.inner.dir.display()),
            }),
            _ => Ok(()),
        }
    }

    /// Returns the entry for `key`, running `fetch` to fill it when it is missing or corrupt.
    ///
    /// However many tasks and processes ask for the same missing key at once, one runs `fetch`
    /// and the rest wait and read its entry. If that `fetch` fails, its error goes to its caller
    /// only and the next waiter tries its own `fetch`.
    ///
    /// What `fetch` returns is stored only if its length is the one the key describes (the
    /// range's length, or `size`); checking the etag is the fetcher's job. Errors: `fetch`'s own;
    /// [`Error::ShortRead`] / [`Error::ShardChanged`] for a body shorter / longer than the key
    /// says (nothing is stored); [`Error::CacheTooSmall`] when the entry is larger than the
    /// limit (checked from the key, before fetching) or when entries in use leave no room for
    /// it; [`Error::Io`] naming the cache file otherwise.
    pub async fn get_or_fetch<F, Fut>(&self, key: &CacheKey, fetch: F) -> Result<CacheEntry>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Bytes>> + Send,
    {
        let hash = key.hash();
        let name = super::key::hex(&hash);
        let expected = key.expected_len();
        let c = &self.inner.counters;

        // Fast path: no locks beyond the entry's own shared flock.
        let n = name.clone();
        if let Lookup::Hit(entry) = self
            .blocking(move |inner| inner.lookup(&n, &hash, expected))
            .await?
        {
            c.hits.fetch_add(1, Relaxed);
            c.bytes_served.fetch_add(entry.len(), Relaxed);
            return Ok(entry);
        }
        // Fail before taking locks or downloading when the entry could never fit.
        self.inner
            .check_entry_fits(key.expected_len() + ENTRY_OVERHEAD, &key.url)?;

        // Slow path. First single flight within this handle, then across processes. Holding
        // the key lock, nobody else publishes or removes this entry, so look again under it
        // (someone may have just finished) and clear out a corrupt entry.
        let (_flight, waited_here) = Flight::enter(&self.inner, &name).await;
        let n = name.clone();
        let (key_lock, waited_other, found) = self
            .blocking(move |inner| {
                let lock_path = inner.locks.join(format!("{n}.lock"));
                let (lock, waited) =
                    KeyLock::acquire(&lock_path).map_err(|e| io_err(&lock_path, e))?;
                let found = inner.lookup(&n, &hash, expected)?;
                if let Lookup::Corrupt(_) = &found {
                    inner.remove_entry(&n)?;
                }
                Ok((lock, waited, found))
            })
            .await?;
        if waited_here || waited_other {
            c.waits.fetch_add(1, Relaxed);
        }
        match found {
            Lookup::Hit(entry) => {
                c.hits.fetch_add(1, Relaxed);
                c.bytes_served.fetch_add(entry.len(), Relaxed);
                return Ok(entry);
            }
            Lookup::Missing => {}
            Lookup::Corrupt(reason) => {
                tracing::warn!(
                    cache = %self.inner.dir.display(), url = %key.url, %reason,
                    "removed a corrupt cache entry; fetching it again"
                );
                c.corrupt_refetched.fetch_add(1, Relaxed);
            }
        }

        let data = fetch().await?;
        // Never persist a body that does not match its key: a short read would otherwise be
        // served from the cache forever.
        let got = data.len() as u64;
        if got < expected {
            return Err(Error::ShortRead {
                url: key.url.clone(),
                got,
                expected,
            });
        }
        if got > expected {
            return Err(Error::ShardChanged {
                url: key.url.clone(),
                detail: format!(
                    "fetched {got} bytes where {expected} were expected (object size {}, range {:?})",
                    key.size, key.range
                ),
            });
        }
        let url = key.url.clone();
        let entry = self
            .blocking(move |inner| inner.insert(&name, &hash, &url, data, key_lock))
            .await?;
        c.misses.fetch_add(1, Relaxed);
        c.bytes_written.fetch_add(entry.len(), Relaxed);
        Ok(entry)
    }

    /// This handle's counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        CacheStats {
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            bytes_written: c.bytes_written.load(Relaxed),
            bytes_served: c.bytes_served.load(Relaxed),
            waits: c.waits.load(Relaxed),
            corrupt_refetched: c.corrupt_refetched.load(Relaxed),
        }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The configured limit in bytes, if any.
    pub fn limit(&self) -> Option<u64> {
        self.inner.space.as_ref().map(|s| s.limit())
    }

    /// Runs blocking file work on tokio's blocking pool, never on an async worker thread.
    async fn blocking<T, G>(&self, f: G) -> Result<T>
    where
        T: Send + 'static,
        G: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(r) => r,
            Err(e) => Err(Error::Cache {
                path: self.inner.dir.clone(),
                reason: format!("cache worker thread failed: {e}"),
            }),
        }
    }
}

impl Inner {
    /// Maps the published entry file `file` (at `path`) read-only, with the huge-page advice
    /// when the loader asks for it (see `crate::mapping`).
    fn map_entry(&self, file: &File, path: &Path) -> Result<Mmap> {
        // SAFETY: the mapping is only undefined behaviour if the file changes underneath it.
        // Entry files are never opened for writing after they are published (writers build a
        // new file in tmp/ and rename it over), and unlinking keeps the mapped pages valid.
        // Only a person editing cache files by hand could break this.
        let map = unsafe { Mmap::map(file) }.map_err(|e| io_err(path, e))?;
        if self.huge_pages {
            crate::mapping::advise_huge_pages(&map);
        }
        Ok(map)
    }

    fn repair(&self) -> Result<()> {
        let tmp = remove_unlocked_files(&self.tmp, &[]).map_err(|e| io_err(&self.tmp, e))?;
        let locks = remove_unlocked_files(&self.locks, &[]).map_err(|e| io_err(&self.locks, e))?;
        if tmp + locks > 0 {
            tracing::info!(
                cache = %self.dir.display(), temp_files = tmp, lock_files = locks,
                "removed leftovers of crashed cache writers"
            );
        }
        if let Some(space) = &self.space {
            // Recount (a crash may have left the stored total off) and apply the limit, which
            // may be smaller than the last run's.
            match space
                .reserve(0, true, || Ok(()))
                .map_err(|e| io_err(&self.dir.join(SPACE_FILE), e))?
            {
                Reserved::Done { evicted } => {
                    self.counters.evictions.fetch_add(evicted, Relaxed);
                }
                Reserved::TooSmall {
                    evicted, in_use, ..
                } => {
                    // Other processes' readers pin more than the (new, smaller) limit. Not an
                    // error yet: inserts fail with CacheTooSmall if it is still so then.
                    self.counters.evictions.fetch_add(evicted, Relaxed);
                    tracing::warn!(
                        cache = %self.dir.display(), in_use, limit = space.limit(),
                        "entries in use exceed the cache limit"
                    );
                }
            }
        }
        Ok(())
    }

    fn check_entry_fits(&self, needed: u64, url: &str) -> Result<()> {
        match &self.space {
            Some(space) if needed > space.limit() => Err(Error::CacheTooSmall {
                limit: space.limit(),
                needed,
                detail: format!(
                    "one entry for {url} is larger than the whole cache {}",
                    self.dir.display()
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Opens, pins and validates the entry `name`.
    fn lookup(&self, name: &str, key_hash: &[u8; 32], expected_len: u64) -> Result<Lookup> {
        let path = self.entries.join(name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lookup::Missing),
            Err(e) => return Err(io_err(&path, e)),
        };
        // Evictors hold their exclusive lock only for an unlink, so this never waits long.
        flock(&file, libc::LOCK_SH).map_err(|e| io_err(&path, e))?;
        let meta = file.metadata().map_err(|e| io_err(&path, e))?;
        if meta.nlink() == 0 {
            // Evicted or replaced between our open and our lock.
            return Ok(Lookup::Missing);
        }
        if meta.len() < TRAILER_LEN as u64 {
            return Ok(Lookup::Corrupt(format!(
                "{} bytes, shorter than the trailer",
                meta.len()
            )));
        }
        let map = self.map_entry(&file, &path)?;
        let trailer = match parse_trailer(&map, key_hash) {
            Ok(t) => t,
            Err(reason) => return Ok(Lookup::Corrupt(reason)),
        };
        if trailer.payload_len != expected_len {
            return Ok(Lookup::Corrupt(format!(
                "entry holds {} bytes, its key describes {expected_len}",
                trailer.payload_len
            )));
        }
        let len = trailer.payload_len as usize;
        let id = (meta.dev(), meta.ino(), meta.len(), trailer.crc);
        if !self.is_verified(&id) {
            if !crc_matches(&map[..len], &trailer) {
                return Ok(Lookup::Corrupt("payload CRC mismatch".into()));
            }
            self.mark_verified(id);
        }
        // Recency for LRU, visible to every process. Failing to record it (a file owned by
        // another user, say) only makes eviction order less exact: not worth failing a hit.
        if let Err(e) = touch(&file) {
            tracing::debug!(path = %path.display(), error = %e, "could not update entry mtime");
        }
        // The mapping now holds the lock; the descriptor can go (see `CacheEntry`).
        drop(file);
        Ok(Lookup::Hit(CacheEntry {
            bytes: Bytes::from_owner(map).slice(..len),
            from_cache: true,
        }))
    }

    /// Removes a corrupt entry. Called with the key lock held, so it cannot be a fresh
    /// replacement that someone else just published.
    fn remove_entry(&self, name: &str) -> Result<()> {
        let path = self.entries.join(name);
        let r = match &self.space {
            Some(space) => space.remove(&path),
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                r => r,
            },
        };
        r.map_err(|e| io_err(&path, e))
    }

    fn is_verified(&self, id: &VerifiedId) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(id)
    }

    fn mark_verified(&self, id: VerifiedId) {
        let mut set = self
            .verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if set.len() >= MAX_VERIFIED {
            set.clear();
        }
        set.insert(id);
    }

    /// Writes `data` to a temp file, makes room, publishes it by rename and returns it pinned.
    /// `key_lock` is released (and its file removed) only once the entry is in place.
    fn insert(
        &self,
        name: &str,
        key_hash: &[u8; 32],
        url: &str,
        data: Bytes,
        key_lock: KeyLock,
    ) -> Result<CacheEntry> {
        let file_len = data.len() as u64 + ENTRY_OVERHEAD;
        self.check_entry_fits(file_len, url)?;
        let (tmp_path, mut file) = self.create_temp(name)?;
        let crc = crc32fast::hash(&data);
        let written = write_entry(
            &mut file,
            &data,
            &encode_trailer(data.len() as u64, crc, key_hash),
        );
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(io_err(&tmp_path, e));
        }
        // No fsync: a process crash cannot tear a renamed file (the page cache outlives the
        // process), and after a power loss the trailer and CRC catch whatever the disk kept.

        let dest = self.entries.join(name);
        let publish = || std::fs::rename(&tmp_path, &dest);
        let outcome = match &self.space {
            Some(space) => space
                .reserve(file_len, false, publish)
                .map_err(|e| io_err(&dest, e)),
            None => publish()
                .map(|()| Reserved::Done { evicted: 0 })
                .map_err(|e| io_err(&dest, e)),
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp_path);
                return Err(e);
            }
        };
        match outcome {
            Reserved::Done { evicted } => {
                self.counters.evictions.fetch_add(evicted, Relaxed);
            }
            Reserved::TooSmall {
                evicted,
                in_use,
                in_use_entries,
            } => {
                self.counters.evictions.fetch_add(evicted, Relaxed);
                let _ = std::fs::remove_file(&tmp_path);
                let limit = self.space.as_ref().map_or(0, |s| s.limit());
                return Err(Error::CacheTooSmall {
                    limit,
                    needed: in_use + file_len,
                    detail: format!(
                        "{in_use} bytes in {in_use_entries} entries of cache {} are in use by \
                         readers and a new {file_len}-byte entry for {url} does not fit",
                        self.dir.display()
                    ),
                });
            }
        }
        // Downgrade our exclusive lock to the reader's shared pin. Even if the conversion let
        // an evictor slip in, our mapping would stay valid; the entry would just be re-fetched
        // by the next reader.
        flock(&file, libc::LOCK_SH).map_err(|e| io_err(&dest, e))?;
        let meta = file.metadata().map_err(|e| io_err(&dest, e))?;
        self.mark_verified((meta.dev(), meta.ino(), meta.len(), crc));
        let map = self.map_entry(&file, &dest)?;
        drop(file); // the mapping holds the lock now (see `CacheEntry`)
        drop(key_lock);
        let len = data.len();
        drop(data);
        Ok(CacheEntry {
            bytes: Bytes::from_owner(map).slice(..len),
            from_cache: false,
        })
    }

    /// Creates `tmp/<name>.<pid>.<seq>` holding an exclusive flock, which tells
    /// [`DiskCache::open`]'s repair that its writer is alive.
    fn create_temp(&self, name: &str) -> Result<(PathBuf, File)> {
        loop {
            let seq = self.tmp_seq.fetch_add(1, Relaxed);
            let path = self
                .tmp
                .join(format!("{name}.{}.{seq}", std::process::id()));
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
            {
                Ok(f) => f,
                // A dead process with our pid (pid reuse) left this name: pick another.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&path, e)),
            };
            let locked = try_flock(&file, libc::LOCK_EX).map_err(|e| io_err(&path, e))?;
            if !locked {
                // A repairing process locked it between our create and our lock: it will
                // unlink it. Wait for that and start over with a new name.
                flock(&file, libc::LOCK_EX).map_err(|e| io_err(&path, e))?;
            }
            if is_unlinked(&file).map_err(|e| io_err(&path, e))? {
                continue;
            }
            return Ok((path, file));
        }
    }
}

/// Writes payload then trailer. Tests can make it stop halfway (see `tests::crash_writer`).
fn write_entry(file: &mut File, data: &[u8], trailer: &[u8]) -> io::Result<()> {
    const CHUNK: usize = 8 << 20;
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        file.write_all(chunk)?;
        #[cfg(test)]
        super::tests::maybe_stall_writer(i * CHUNK + chunk.len(), data.len());
        #[cfg(not(test))]
        let _ = i;
    }
    file.write_all(trailer)
}

fn io_err(path: &Path, source: io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Membership of the in-process single flight for one key. Dropping it releases the key's
/// async mutex and removes the map slot when nobody else uses it.
struct Flight {
    // Field order matters: the guard (which holds a clone of the Arc) must drop before `slot`
    // checks how many clones remain.
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    _slot: FlightSlot,
}

struct FlightSlot {
    inner: Arc<Inner>,
    name: String,
    mutex: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl Flight {
    /// Waits for this handle's turn to look up `name` on the slow path. The flag says whether
    /// another task held it first.
    async fn enter(inner: &Arc<Inner>, name: &str) -> (Flight, bool) {
        let mutex = {
            let mut map = inner
                .inflight
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(map.entry(name.to_string()).or_default())
        };
        // The slot exists before we wait, so a cancelled wait also cleans up.
        let slot = FlightSlot {
            inner: Arc::clone(inner),
            name: name.to_string(),
            mutex: Some(Arc::clone(&mutex)),
        };
        let (guard, waited) = match Arc::clone(&mutex).try_lock_owned() {
            Ok(g) => (g, false),
            Err(_) => (mutex.lock_owned().await, true),
        };
        (
            Flight {
                guard: Some(guard),
                _slot: slot,
            },
            waited,
        )
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        drop(self.guard.take());
    }
}

impl Drop for FlightSlot {
    fn drop(&mut self) {
        let mut map = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        drop(self.mutex.take());
        if map
            .get(&self.name)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.name);
        }
    }
}

#[cfg(test)]
impl DiskCache {
    /// The in-process single-flight map cleans up after itself.
    pub(crate) fn inner_inflight_is_empty(&self) -> bool {
        self.inner
            .inflight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_empty()
    }
}
