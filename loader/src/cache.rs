//! Node-local disk cache of shard bytes, shared by every process on the node.
//!
//! All ranks of a job on one machine, and their DataLoader workers, point a [`DiskCache`] at the
//! same directory. Each object (or Parquet row-group byte range) fetched from the store is kept
//! there once, under a name derived from its [`CacheKey`] (URL, etag, size, range), so a shard
//! changed in the store never matches its old bytes.
//!
//! # Layout
//!
//! ```text
//! <dir>/entries/<sha256 hex>        complete entries: payload + 56-byte trailer (see below)
//! <dir>/tmp/<name>.<pid>.<seq>      entries being written; the writer holds LOCK_EX on it
//! <dir>/locks/<name>.lock           per-key download locks (exist only while someone holds one)
//! <dir>/space                       node-wide lock for publishing/evicting + running byte total
//! ```
//!
//! The trailer (payload length, CRC-32 of the payload, format version, key hash, magic — magic
//! last) lets a reader detect a truncated, corrupt or misplaced file; such an entry is deleted
//! and fetched again. Length, magic, version and key are checked on every open; the CRC is
//! checked the first time a [`DiskCache`] handle (and its clones — normally one per process)
//! opens an entry and then remembered by (device, inode, size, CRC). Entry files are immutable
//! once published, a process crash cannot tear one (see the publish rule below), and a power
//! loss or disk fault starts new processes, which check again.
//!
//! # Locking protocol (all `flock(2)`, so a dead process's locks vanish with it)
//!
//! * **Publish atomically.** A writer creates a unique file in `tmp/`, takes `LOCK_EX` on it,
//!   writes payload and trailer, and `rename`s it into `entries/`. Readers therefore see either
//!   no entry or a whole one, and a temp file nobody holds a lock on is garbage from a crash.
//! * **One download per key.** Within one [`DiskCache`] handle an async mutex per key lets one
//!   task through; across handles and processes, that task then takes `LOCK_EX` on
//!   `locks/<name>.lock`. Whoever gets it looks again (someone may have just finished) and only
//!   then fetches. The holder unlinks the lock file before releasing it; acquirers re-check after
//!   the lock is granted that their file still has a name and retry if not. If the fetch fails,
//!   the error goes to its caller, the locks are released, and the next waiter fetches itself.
//! * **Never evict what is in use.** A [`CacheEntry`] holds `LOCK_SH` on its entry file for its
//!   whole life (through the file's memory mapping, see below). Evictors take a non-blocking
//!   `LOCK_EX` and skip entries they cannot lock. A reader that opened a file just as it was
//!   evicted notices after its lock is granted (the file has no links left) and treats the entry
//!   as missing.
//! * **Stay under the limit.** Renaming into `entries/`, evicting and deleting corrupt entries
//!   happen under `LOCK_EX` on `<dir>/space`, which also stores the running byte total, so an
//!   insert that fits costs a lock and a 20-byte read/write, not a directory scan. The total is
//!   recomputed by scanning `entries/` when it is over 10 s old or when eviction is needed (see
//!   `cache/space.rs`). LRU order is the entry files' mtime, bumped on every hit by whichever
//!   process reads the entry, so recency is shared by all processes. If even evicting everything not in use leaves no room, the
//!   insert fails with [`Error::CacheTooSmall`](crate::Error::CacheTooSmall) at once — no waiting
//!   for space, so no deadlock. An entry larger than the limit fails before it is downloaded.
//! * **Repair.** [`DiskCache::open`] removes temp and lock files it can lock (their owners are
//!   dead), recounts the total and evicts down to the limit. Bad entries go when next read.
//!
//! All file I/O of [`DiskCache::get_or_fetch`] runs on tokio's blocking pool; `open` is
//! synchronous (it scans directories).
//!
//! The directory must be on a local file system (ext4, xfs, tmpfs, ...): on NFS, `flock` is
//! emulated with per-process POSIX locks and does not give the guarantees above.
//!
//! Pinned bytes: [`CacheEntry::bytes`] is a zero-copy view of the entry file's memory mapping,
//! and it may outlive the `CacheEntry`. The pin is the shared flock, which the kernel keeps for
//! as long as the open file description lives — and a memory mapping holds a reference to it.
//! The descriptor itself is closed right after mapping (a prefetch window of pinned entries
//! costs no file descriptors), so an entry stays pinned (unevictable, counted against the limit)
//! until its `CacheEntry` *and* every `Bytes` view of it are dropped. That is deliberate: an
//! unlinked file that is still mapped keeps its disk blocks, so evicting it would free nothing.
//! Should the file be unlinked anyway (a person cleaning up), the bytes stay valid: Linux keeps
//! an unlinked file's pages for as long as they are mapped, and entry files are never written
//! after they are published.

mod format;
mod key;
mod lock;
mod space;
mod store;

#[cfg(test)]
mod tests;

pub use key::CacheKey;
pub use store::{CacheConfig, CacheEntry, CacheStats, DiskCache, ENTRY_OVERHEAD};
