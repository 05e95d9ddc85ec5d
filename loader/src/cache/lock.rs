//! `flock(2)` helpers and the per-key download lock.
//!
//! flock locks belong to the *open file description*: two `open()`s of one file in the same
//! process contend exactly like two processes, and the kernel drops a lock when the last
//! descriptor of its description closes — including when a process is SIGKILLed. That last
//! property is what makes crash repair simple: a lock that can be taken belongs to nobody alive.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Blocking `flock(file, op)`, retried on EINTR.
pub(crate) fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: plain syscall on a descriptor `file` owns for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Non-blocking `flock`: `Ok(false)` when another description holds a conflicting lock.
pub(crate) fn try_flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    match flock(file, op | libc::LOCK_NB) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// True when the file behind `file` has no name any more (it was unlinked — evicted, cleaned
/// up or replaced — after we opened it). Anyone who takes a lock on a file that others may
/// unlink must check this *after* the lock is granted and retry with a fresh `open()`.
pub(crate) fn is_unlinked(file: &File) -> io::Result<bool> {
    Ok(file.metadata()?.nlink() == 0)
}

/// Sets the file's mtime to now (`futimens` with `UTIME_NOW`, which needs only ownership or
/// write permission — a read-only descriptor is enough for the owner).
pub(crate) fn touch(file: &File) -> io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    ];
    // SAFETY: `times` is a valid two-element array that outlives the call.
    let rc = unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Exclusive right to download one key, held across processes (`locks/<name>.lock`).
///
/// The holder unlinks the lock file before releasing it, so `locks/` does not accumulate one
/// file per key ever fetched. That is safe because every acquirer re-checks after the lock is
/// granted that its file still has a name; a waiter that wakes up on an unlinked file starts
/// over with a fresh `open()` (which creates a new lock file that everyone after it shares).
pub(crate) struct KeyLock {
    file: Option<File>,
    path: PathBuf,
}

impl KeyLock {
    /// Blocks until the lock is held. The flag says whether someone else held it first (a
    /// download of the same key was in progress somewhere on the node).
    pub(crate) fn acquire(path: &Path) -> io::Result<(KeyLock, bool)> {
        let mut waited = false;
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)?;
            if !try_flock(&file, libc::LOCK_EX)? {
                waited = true;
                flock(&file, libc::LOCK_EX)?;
            }
            if is_unlinked(&file)? {
                // Its holder finished (or a cleaner removed it) while we waited: start over.
                continue;
            }
            return Ok((
                KeyLock {
                    file: Some(file),
                    path: path.to_path_buf(),
                },
                waited,
            ));
        }
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock (see the type's docs), then close to release.
        // A failed unlink only leaves a file that the next `DiskCache::open` removes.
        let _ = std::fs::remove_file(&self.path);
        drop(self.file.take());
    }
}

/// Removes every file in `dir` that nobody holds a lock on (leftovers of dead processes).
/// `keep` names files that must never be removed. Returns how many were removed.
pub(crate) fn remove_unlocked_files(dir: &Path, keep: &[&str]) -> io::Result<usize> {
    let mut removed = 0;
    for dirent in std::fs::read_dir(dir)? {
        let dirent = dirent?;
        if !dirent.file_type()?.is_file() {
            continue;
        }
        if keep.iter().any(|k| dirent.file_name() == *k) {
            continue;
        }
        let path = dirent.path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // Holding the exclusive lock while unlinking: a writer or waiter that opened this file
        // earlier blocks until we are done and then sees it unlinked (and starts over).
        if try_flock(&file, libc::LOCK_EX)? && !is_unlinked(&file)? {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}
