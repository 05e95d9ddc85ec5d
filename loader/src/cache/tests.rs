//! Tests of the node-local cache. Two `DiskCache` handles opened on one directory contend for
//! flock locks exactly like two processes (locks belong to open file descriptions), so most
//! cross-process behaviour is tested in-process; the crash test uses a real child process.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::format::{encode_trailer, parse_trailer};
use super::lock::{flock, try_flock};
use super::*;
use crate::Error;

// ---------------------------------------------------------------------------------------------
// Test hook: stop a writer halfway through an entry.

/// Env var naming a marker file: a writer that reaches half of its payload creates the marker
/// and then hangs forever (the crash test's child process, killed there with SIGKILL).
const CRASH_MARKER_ENV: &str = "SHARDSTREAM_CACHE_TEST_CRASH_MARKER";
/// Env var naming the cache directory the crash test's child writes into.
const CRASH_DIR_ENV: &str = "SHARDSTREAM_CACHE_TEST_CRASH_DIR";

/// In-process stall: writers of a payload of exactly `total` bytes stop halfway until released.
struct Stall {
    total: usize,
    reached: AtomicBool,
    release: AtomicBool,
}

static STALLS: Mutex<Vec<Arc<Stall>>> = Mutex::new(Vec::new());

fn stall_writers_of(total: usize) -> Arc<Stall> {
    let s = Arc::new(Stall {
        total,
        reached: AtomicBool::new(false),
        release: AtomicBool::new(false),
    });
    STALLS.lock().unwrap().push(Arc::clone(&s));
    s
}

/// Called by the writer after each chunk (only in test builds).
pub(crate) fn maybe_stall_writer(written: usize, total: usize) {
    if written < total / 2 || written >= total {
        return;
    }
    if let Some(marker) = std::env::var_os(CRASH_MARKER_ENV) {
        std::fs::write(&marker, b"stalled").expect("write crash marker");
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let stall = STALLS
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.total == total)
        .cloned();
    if let Some(s) = stall {
        s.reached.store(true, SeqCst);
        while !s.release.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn key(i: u64, size: u64) -> CacheKey {
    CacheKey {
        url: format!("s3://bucket/train/shard-{i:05}.parquet"),
        etag: Some(format!("\"etag-{i}\"")),
        size,
        range: None,
    }
}

/// Deterministic pseudo-random bytes for key `i`.
fn payload(i: u64, len: usize) -> Bytes {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

fn open(dir: &Path, limit: Option<u64>) -> DiskCache {
    DiskCache::open(CacheConfig {
        dir: dir.to_path_buf(),
        limit,
        huge_pages: true,
    })
    .expect("open cache")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `get_or_fetch` whose fetch returns `data` and counts its calls in `fetches`.
async fn get(
    cache: &DiskCache,
    k: &CacheKey,
    data: Bytes,
    fetches: &Arc<AtomicU64>,
) -> crate::Result<CacheEntry> {
    let f = Arc::clone(fetches);
    cache
        .get_or_fetch(k, move || async move {
            f.fetch_add(1, SeqCst);
            Ok(data)
        })
        .await
}

fn entry_path(dir: &Path, k: &CacheKey) -> PathBuf {
    dir.join("entries").join(k.file_name())
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Runs `f` on its own thread and fails the test if it does not finish in `limit` (a deadlock).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            h.join().unwrap();
            v
        }
        Err(_) => {
            if h.is_finished() {
                // The closure panicked: surface its panic message.
                if let Err(p) = h.join() {
                    std::panic::resume_unwind(p);
                }
            }
            panic!("did not finish within {limit:?} (deadlock?)");
        }
    }
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sleep long enough that file mtimes (kernel coarse clock, a few ms) differ.
fn tick() {
    std::thread::sleep(Duration::from_millis(25));
}

// ---------------------------------------------------------------------------------------------
// Types the engine relies on.

#[allow(dead_code)]
fn handles_and_futures_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<DiskCache>();
    send_sync::<CacheEntry>();
    fn future(c: &DiskCache, k: &CacheKey) {
        send(&c.get_or_fetch(k, || async { Ok(Bytes::new()) }));
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and format.

#[test]
fn file_name_is_stable_hex_and_covers_every_field() {
    let k = key(7, 1234);
    let name = k.file_name();
    assert_eq!(name.len(), 64);
    assert!(name
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    // Pinned value: changing it orphans every cache on disk, so do it only on purpose (and bump
    // the encoding tag in key.rs).
    assert_eq!(
        name,
        "332aafa53a01bd959632f83158a4481342697118798f28fd7fdeff0dcc97acb6"
    );
    let variants = [
        CacheKey {
            url: "s3://bucket/train/shard-00008.parquet".into(),
            ..k.clone()
        },
        CacheKey {
            etag: None,
            ..k.clone()
        },
        CacheKey {
            etag: Some("\"other\"".into()),
            ..k.clone()
        },
        CacheKey {
            size: 1235,
            ..k.clone()
        },
        CacheKey {
            range: Some(0..1234),
            ..k.clone()
        },
        CacheKey {
            range: Some(0..1000),
            ..k.clone()
        },
    ];
    for v in &variants {
        assert_ne!(v.file_name(), name, "{v:?}");
    }
    // Field boundaries are unambiguous.
    let a = CacheKey {
        url: "a".into(),
        etag: Some("bc".into()),
        size: 0,
        range: None,
    };
    let b = CacheKey {
        url: "ab".into(),
        etag: Some("c".into()),
        ..a.clone()
    };
    assert_ne!(a.file_name(), b.file_name());
}

#[test]
fn trailer_detects_truncation_wrong_key_and_bad_magic() {
    let data = payload(1, 1000);
    let k = key(1, 1000);
    let mut file = data.to_vec();
    file.extend_from_slice(&encode_trailer(1000, crc32fast::hash(&data), &k.hash()));
    let t = parse_trailer(&file, &k.hash()).unwrap();
    assert_eq!(t.payload_len, 1000);
    assert!(super::format::crc_matches(&file[..1000], &t));
    assert!(parse_trailer(&file, &key(2, 1000).hash()).is_err());
    assert!(parse_trailer(&file[..file.len() - 1], &k.hash()).is_err());
    assert!(parse_trailer(&file[1..], &k.hash()).is_err());
    assert!(parse_trailer(&file[..10], &k.hash()).is_err());
    let mut flipped = file.clone();
    flipped[500] ^= 1;
    let t = parse_trailer(&flipped, &k.hash()).unwrap();
    assert!(!super::format::crc_matches(&flipped[..1000], &t));
}

// ---------------------------------------------------------------------------------------------
// Basic behaviour.

#[test]
fn miss_then_hit_is_zero_copy_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), None);
    let k = key(1, 100_000);
    let data = payload(1, 100_000);
    let fetches = Arc::new(AtomicU64::new(0));
    runtime().block_on(async {
        let e = get(&cache, &k, data.clone(), &fetches).await.unwrap();
        assert!(!e.from_cache());
        assert_eq!(e.len(), 100_000);
        assert_eq!(e.bytes(), data);
        // Served from the file's mapping, not from the buffer fetch returned.
        assert_ne!(e.bytes().as_ptr(), data.as_ptr());
        let e2 = get(&cache, &k, Bytes::new(), &fetches).await.unwrap();
        assert!(e2.from_cache());
        assert_eq!(e2.bytes(), data);
        // Two handles to the same bytes share the mapping (no copy per call).
        assert_eq!(e2.bytes().as_ptr(), e2.bytes().as_ptr());
    });
    assert_eq!(fetches.load(SeqCst), 1);
    let s = cache.stats();
    assert_eq!(
        s,
        CacheStats {
            hits: 1,
            misses: 1,
            evictions: 0,
            bytes_written: 100_000,
            bytes_served: 100_000,
            waits: 0,
            corrupt_refetched: 0,
        }
    );
    assert_eq!(
        std::fs::metadata(entry_path(dir.path(), &k)).unwrap().len(),
        100_000 + ENTRY_OVERHEAD
    );
    // Nothing left behind: temp file renamed, download lock removed.
    assert!(files_in(&dir.path().join("tmp")).is_empty());
    assert!(files_in(&dir.path().join("locks")).is_empty());
    // Empty payloads work too.
    runtime().block_on(async {
        let e = get(&cache, &key(2, 0), Bytes::new(), &fetches)
            .await
            .unwrap();
        assert!(e.is_empty());
        let e = get(&cache, &key(2, 0), Bytes::new(), &fetches)
            .await
            .unwrap();
        assert!(e.from_cache() && e.is_empty());
    });
    serde_json::to_string(&cache.stats()).unwrap();
}

#[test]
fn byte_ranges_of_one_object_are_separate_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), None);
    let object = payload(9, 30_000);
    let fetches = Arc::new(AtomicU64::new(0));
    runtime().block_on(async {
        for pass in 0..2 {
            for r in [0..10_000u64, 10_000..25_000, 25_000..30_000] {
                let k = CacheKey {
                    range: Some(r.clone()),
                    ..key(9, 30_000)
                };
                let part = object.slice(r.start as usize..r.end as usize);
                let e = get(&cache, &k, part.clone(), &fetches).await.unwrap();
                assert_eq!(e.from_cache(), pass == 1);
                assert!(e.bytes() == part);
            }
        }
    });
    assert_eq!(fetches.load(SeqCst), 3);
    assert_eq!(files_in(&dir.path().join("entries")).len(), 3);
}

#[test]
fn fetch_error_is_returned_and_nothing_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), None);
    let k = key(1, 10);
    runtime().block_on(async {
        let err = cache
            .get_or_fetch(&k, || async { Err(Error::Stopped("boom".into())) })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Stopped(_)), "{err}");
        let fetches = Arc::new(AtomicU64::new(0));
        let e = get(&cache, &k, payload(1, 10), &fetches).await.unwrap();
        assert!(!e.from_cache());
        assert_eq!(fetches.load(SeqCst), 1);
    });
    assert!(files_in(&dir.path().join("tmp")).is_empty());
}

#[test]
fn a_body_of_the_wrong_length_is_an_error_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), Some(1 << 20));
    let fetches = Arc::new(AtomicU64::new(0));
    runtime().block_on(async {
        let k = key(1, 1000);
        let err = get(&cache, &k, payload(1, 999), &fetches)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::ShortRead { url, got: 999, expected: 1000 } if *url == k.url),
            "{err}"
        );
        let err = get(&cache, &k, payload(1, 1001), &fetches)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::ShardChanged { url, .. } if *url == k.url),
            "{err}"
        );
        assert!(files_in(&dir.path().join("entries")).is_empty());
        // A stored entry whose length disagrees with its key (written by a buggy or older
        // writer) counts as corrupt.
        let mut file = payload(1, 999).to_vec();
        file.extend_from_slice(&encode_trailer(999, crc32fast::hash(&file), &k.hash()));
        std::fs::write(entry_path(dir.path(), &k), file).unwrap();
        let e = get(&cache, &k, payload(1, 1000), &fetches).await.unwrap();
        assert!(!e.from_cache() && e.bytes() == payload(1, 1000));
        assert_eq!(cache.stats().corrupt_refetched, 1);
    });
}

// ---------------------------------------------------------------------------------------------
// 1. Atomic writes (and cross-handle single flight while a write is in progress).

#[test]
fn readers_never_see_a_half_written_entry() {
    within(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        const LEN: usize = 20_000_003; // unique size selects this test's stall
        let stall = stall_writers_of(LEN);
        let k = key(3, LEN as u64);
        let data = payload(3, LEN);
        let writer = open(dir.path(), None);
        let reader = open(dir.path(), None);
        let rt = runtime();
        let fetches = Arc::new(AtomicU64::new(0));
        let w = {
            let (k, data, f) = (k.clone(), data.clone(), Arc::clone(&fetches));
            rt.spawn(async move { get(&writer, &k, data, &f).await.map(|e| e.from_cache()) })
        };
        wait_until("writer halfway", Duration::from_secs(30), || {
            stall.reached.load(SeqCst)
        });
        // Half the bytes are on disk, but only under tmp/.
        let tmp = files_in(&dir.path().join("tmp"));
        assert_eq!(tmp.len(), 1);
        assert!(tmp[0].starts_with(&k.file_name()));
        assert!(!entry_path(dir.path(), &k).exists());
        // A second handle (a second process, as far as locks go) waits instead of reading it
        // or fetching it again.
        let r = {
            let (k, f) = (k.clone(), Arc::clone(&fetches));
            let reader = reader.clone();
            rt.spawn(async move { get(&reader, &k, Bytes::new(), &f).await })
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(!r.is_finished());
        stall.release.store(true, SeqCst);
        assert!(!rt.block_on(w).unwrap().unwrap());
        let e = rt.block_on(r).unwrap().unwrap();
        assert!(e.from_cache());
        assert!(e.bytes() == data);
        assert_eq!(fetches.load(SeqCst), 1);
        assert_eq!(reader.stats().waits, 1);
        assert_eq!(reader.stats().hits, 1);
    });
}

// ---------------------------------------------------------------------------------------------
// 2. Integrity.

#[test]
fn corrupt_truncated_or_misplaced_entries_are_refetched() {
    type Damage = fn(&Path, &Path);
    let cases: [(&str, Damage); 5] = [
        ("flipped payload byte", |p, _| {
            let f = OpenOptions::new().read(true).write(true).open(p).unwrap();
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, 1234).unwrap();
            f.write_all_at(&[b[0] ^ 0x40], 1234).unwrap();
        }),
        ("truncated", |p, _| {
            let f = OpenOptions::new().write(true).open(p).unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len / 2).unwrap();
        }),
        ("cut inside the trailer", |p, _| {
            let f = OpenOptions::new().write(true).open(p).unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len - 3).unwrap();
        }),
        ("empty file", |p, _| {
            File::create(p).unwrap();
        }),
        ("another key's entry", |p, other| {
            std::fs::copy(other, p).unwrap();
        }),
    ];
    for (what, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let k = key(1, 50_000);
        let other = key(2, 50_000);
        let data = payload(1, 50_000);
        let fetches = Arc::new(AtomicU64::new(0));
        let rt = runtime();
        {
            let c = open(dir.path(), Some(10 << 20));
            rt.block_on(async {
                get(&c, &k, data.clone(), &fetches).await.unwrap();
                get(&c, &other, payload(2, 50_000), &fetches).await.unwrap();
            });
        }
        damage(&entry_path(dir.path(), &k), &entry_path(dir.path(), &other));
        // A fresh handle (a new process: it has not checked this file's CRC yet).
        let c = open(dir.path(), Some(10 << 20));
        let e = rt.block_on(get(&c, &k, data.clone(), &fetches)).unwrap();
        assert!(!e.from_cache(), "{what}");
        assert!(e.bytes() == data, "{what}");
        assert_eq!(c.stats().corrupt_refetched, 1, "{what}");
        assert_eq!(fetches.load(SeqCst), 3, "{what}");
        drop(e);
        // The replacement is good.
        let c2 = open(dir.path(), Some(10 << 20));
        let e = rt.block_on(get(&c2, &k, Bytes::new(), &fetches)).unwrap();
        assert!(e.from_cache() && e.bytes() == data, "{what}");
        assert_eq!(c2.stats().corrupt_refetched, 0, "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Single flight.

#[test]
fn single_flight_within_one_handle() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), None);
    let k = key(5, 4096);
    let fetches = Arc::new(AtomicU64::new(0));
    let rt = runtime();
    within(Duration::from_secs(30), move || {
        rt.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let (cache, k, f) = (cache.clone(), k.clone(), Arc::clone(&fetches));
                tasks.push(tokio::spawn(async move {
                    cache
                        .get_or_fetch(&k, move || async move {
                            f.fetch_add(1, SeqCst);
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            Ok(payload(5, 4096))
                        })
                        .await
                }));
            }
            for t in tasks {
                assert!(t.await.unwrap().unwrap().bytes() == payload(5, 4096));
            }
        });
        assert_eq!(fetches.load(SeqCst), 1);
        let s = cache.stats();
        assert_eq!((s.misses, s.hits), (1, 15));
        // Normally all 15 others wait; one scheduled after the publish would be a plain hit.
        assert!((1..=15).contains(&s.waits), "{s:?}");
        assert!(cache.inner_inflight_is_empty());
    });
}

#[test]
fn single_flight_across_handles() {
    let dir = tempfile::tempdir().unwrap();
    let caches: Vec<DiskCache> = (0..4).map(|_| open(dir.path(), None)).collect();
    let k = key(6, 4096);
    let fetches = Arc::new(AtomicU64::new(0));
    let rt = runtime();
    within(Duration::from_secs(30), move || {
        rt.block_on(async {
            let mut tasks = Vec::new();
            for cache in &caches {
                for _ in 0..4 {
                    let (cache, k, f) = (cache.clone(), k.clone(), Arc::clone(&fetches));
                    tasks.push(tokio::spawn(async move {
                        cache
                            .get_or_fetch(&k, move || async move {
                                f.fetch_add(1, SeqCst);
                                tokio::time::sleep(Duration::from_millis(300)).await;
                                Ok(payload(6, 4096))
                            })
                            .await
                    }));
                }
            }
            for t in tasks {
                assert!(t.await.unwrap().unwrap().bytes() == payload(6, 4096));
            }
        });
        assert_eq!(fetches.load(SeqCst), 1);
        let waits: u64 = caches.iter().map(|c| c.stats().waits).sum();
        let misses: u64 = caches.iter().map(|c| c.stats().misses).sum();
        assert_eq!(misses, 1);
        assert!((1..=15).contains(&waits), "{waits}");
    });
}

#[test]
fn failed_download_lets_the_waiters_fetch_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), None);
    let b = open(dir.path(), None);
    let k = key(7, 100);
    let rt = runtime();
    within(Duration::from_secs(30), move || {
        rt.block_on(async {
            let failing = {
                let (a, k) = (a.clone(), k.clone());
                tokio::spawn(async move {
                    a.get_or_fetch(&k, || async {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Err(Error::Stopped("store unreachable".into()))
                    })
                    .await
                })
            };
            tokio::time::sleep(Duration::from_millis(100)).await;
            let fetches = Arc::new(AtomicU64::new(0));
            let waiter = get(&b, &k, payload(7, 100), &fetches);
            let e = waiter.await.unwrap();
            assert!(matches!(failing.await.unwrap(), Err(Error::Stopped(_))));
            assert!(!e.from_cache());
            assert_eq!(fetches.load(SeqCst), 1);
            assert_eq!(b.stats().waits, 1);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Size limit and LRU eviction.

const ENTRY: u64 = 10_000;
const FILE: u64 = ENTRY + ENTRY_OVERHEAD;

#[test]
fn evicts_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), Some(3 * FILE));
    let other = open(dir.path(), Some(3 * FILE)); // recency is shared across processes
    let fetches = Arc::new(AtomicU64::new(0));
    let rt = runtime();
    rt.block_on(async {
        for i in 1..=3 {
            drop(get(&cache, &key(i, ENTRY), payload(i, ENTRY as usize), &fetches).await);
            tick();
        }
        // Key 1 is used again (by another process), so key 2 is now the least recent.
        assert!(get(&other, &key(1, ENTRY), Bytes::new(), &fetches)
            .await
            .unwrap()
            .from_cache());
        tick();
        drop(get(&cache, &key(4, ENTRY), payload(4, ENTRY as usize), &fetches).await);
    });
    let present: Vec<bool> = (1..=4)
        .map(|i| entry_path(dir.path(), &key(i, ENTRY)).exists())
        .collect();
    assert_eq!(present, [true, false, true, true]);
    assert_eq!(cache.stats().evictions, 1);
}

#[test]
fn entries_in_use_are_never_evicted_and_a_full_cache_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), Some(2 * FILE));
    let fetches = Arc::new(AtomicU64::new(0));
    let rt = runtime();
    within(Duration::from_secs(30), move || {
        rt.block_on(async {
            let k = |i| key(i, ENTRY);
            let p = |i| payload(i, ENTRY as usize);
            let e1 = get(&cache, &k(1), p(1), &fetches).await.unwrap();
            tick();
            drop(get(&cache, &k(2), p(2), &fetches).await.unwrap());
            tick();
            // Key 1 is the oldest but pinned by `e1`: key 2 goes instead.
            let e3 = get(&cache, &k(3), p(3), &fetches).await.unwrap();
            assert!(entry_path(cache.dir(), &k(1)).exists());
            assert!(!entry_path(cache.dir(), &k(2)).exists());
            // Everything is pinned: the new entry cannot fit — an error, not a wait.
            let err = get(&cache, &k(4), p(4), &fetches).await.unwrap_err();
            match &err {
                Error::CacheTooSmall {
                    limit,
                    needed,
                    detail,
                } => {
                    assert_eq!(*limit, 2 * FILE);
                    assert_eq!(*needed, 3 * FILE);
                    assert!(detail.contains("in use"), "{detail}");
                    assert!(detail.contains(&k(4).url), "{detail}");
                }
                other => panic!("expected CacheTooSmall, got {other}"),
            }
            assert!(files_in(&cache.dir().join("tmp")).is_empty());
            assert!(files_in(&cache.dir().join("locks")).is_empty());
            // Pinned entries still read fine; once released, there is room again.
            assert!(e1.bytes() == p(1) && e3.bytes() == p(3));
            drop(e1);
            let e4 = get(&cache, &k(4), p(4), &fetches).await.unwrap();
            assert!(!entry_path(cache.dir(), &k(1)).exists());
            assert!(e4.bytes() == p(4));
        });
        assert_eq!(cache.stats().evictions, 2);
    });
}

#[test]
fn bytes_keep_the_entry_pinned_and_stay_valid_even_if_unlinked() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), Some(FILE));
    let fetches = Arc::new(AtomicU64::new(0));
    let (k1, k2) = (key(1, ENTRY), key(2, ENTRY));
    let (p1, p2) = (payload(1, ENTRY as usize), payload(2, ENTRY as usize));
    runtime().block_on(async {
        let bytes = get(&cache, &k1, p1.clone(), &fetches)
            .await
            .unwrap()
            .bytes();
        // The `CacheEntry` is gone, but its mapping still holds the shared lock (flock locks
        // live as long as the open file description, and a mapping references it).
        let err = get(&cache, &k2, p2.clone(), &fetches).await.unwrap_err();
        assert!(matches!(err, Error::CacheTooSmall { .. }), "{err}");
        assert!(entry_path(cache.dir(), &k1).exists());
        // Deleted by hand while mapped: the bytes stay valid (Linux keeps the pages).
        std::fs::remove_file(entry_path(cache.dir(), &k1)).unwrap();
        assert!(bytes == p1);
        drop(bytes);
        // Once the last view is gone, the entry can be evicted.
        get(&cache, &k1, p1.clone(), &fetches).await.unwrap();
        get(&cache, &k2, p2.clone(), &fetches).await.unwrap();
        assert!(!entry_path(cache.dir(), &k1).exists());
        assert_eq!(cache.stats().evictions, 1);
    });
}

// ---------------------------------------------------------------------------------------------
// 7. Limits too small for one entry.

#[test]
fn an_entry_larger_than_the_limit_fails_at_insert() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), Some(1000));
    let fetches = Arc::new(AtomicU64::new(0));
    runtime().block_on(async {
        // Known from the key: fails before downloading anything.
        let err = get(&cache, &key(1, 5000), payload(1, 5000), &fetches)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::CacheTooSmall { limit: 1000, needed, .. } if needed == 5000 + ENTRY_OVERHEAD),
            "{err}"
        );
        assert!(err.to_string().contains("larger than the whole cache"), "{err}");
        assert!(err.to_string().contains(&cache.dir().display().to_string()), "{err}");
        assert_eq!(fetches.load(SeqCst), 0);
    });
    assert!(files_in(&dir.path().join("tmp")).is_empty());
    assert!(files_in(&dir.path().join("entries")).is_empty());
    assert!(files_in(&dir.path().join("locks")).is_empty());
}

#[test]
fn check_fits_reports_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), Some(1 << 20));
    cache.check_fits(1 << 20, "prefetch window").unwrap();
    let err = cache
        .check_fits((1 << 20) + 1, "prefetch window of 8 ranks")
        .unwrap_err();
    assert!(
        matches!(&err, Error::CacheTooSmall { limit, needed, detail }
            if *limit == 1 << 20 && *needed == (1 << 20) + 1 && detail.contains("8 ranks")),
        "{err}"
    );
    open(dir.path(), None)
        .check_fits(u64::MAX, "anything")
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// 5. Crash repair.

#[test]
fn open_removes_leftovers_but_not_live_writers_and_applies_a_smaller_limit() {
    let dir = tempfile::tempdir().unwrap();
    let fetches = Arc::new(AtomicU64::new(0));
    let rt = runtime();
    {
        let c = open(dir.path(), Some(10 * FILE));
        rt.block_on(async {
            for i in 0..5 {
                drop(get(&c, &key(i, ENTRY), payload(i, ENTRY as usize), &fetches).await);
                tick();
            }
        });
    }
    // Leftovers of dead processes: nobody holds their locks.
    std::fs::write(dir.path().join("tmp/dead.1.0"), b"partial").unwrap();
    std::fs::write(dir.path().join("locks/dead.lock"), b"").unwrap();
    // A live writer and a live downloader: locked, so they must survive.
    let live_tmp = File::create(dir.path().join("tmp/live.2.0")).unwrap();
    flock(&live_tmp, libc::LOCK_EX).unwrap();
    let live_lock = File::create(dir.path().join("locks/live.lock")).unwrap();
    flock(&live_lock, libc::LOCK_EX).unwrap();
    // A smaller limit than last time: the two least recent entries go at open.
    let c = open(dir.path(), Some(3 * FILE));
    assert_eq!(files_in(&dir.path().join("tmp")), ["live.2.0"]);
    assert_eq!(files_in(&dir.path().join("locks")), ["live.lock"]);
    assert_eq!(c.stats().evictions, 2);
    let present: Vec<bool> = (0..5)
        .map(|i| entry_path(dir.path(), &key(i, ENTRY)).exists())
        .collect();
    assert_eq!(present, [false, false, true, true, true]);
    drop((live_tmp, live_lock));
}

/// Child half of [`a_writer_killed_mid_write_is_repaired`]: does nothing unless that test
/// started this binary with the env vars set.
#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let cache = open(Path::new(&dir), Some(1 << 30));
    let fetches = Arc::new(AtomicU64::new(0));
    // The write stalls forever halfway (see `maybe_stall_writer`) until the parent kills us.
    let _ = runtime().block_on(get(&cache, &crash_key(), crash_payload(), &fetches));
    unreachable!("the crash-test writer should have been killed");
}

fn crash_key() -> CacheKey {
    key(99, CRASH_LEN as u64)
}
const CRASH_LEN: usize = 24 << 20;
fn crash_payload() -> Bytes {
    payload(99, CRASH_LEN)
}

#[test]
fn a_writer_killed_mid_write_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let marker = dir.path().join("stalled");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cache::tests::crash_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, &cache_dir)
        .env(CRASH_MARKER_ENV, &marker)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child exited before stalling: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child never stalled"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Mid-write: a partial temp file and the download lock exist, no entry.
    let tmp = files_in(&cache_dir.join("tmp"));
    assert_eq!(tmp.len(), 1);
    let tmp_len = std::fs::metadata(cache_dir.join("tmp").join(&tmp[0]))
        .unwrap()
        .len();
    assert!(tmp_len >= (CRASH_LEN / 2) as u64 && tmp_len < CRASH_LEN as u64);
    assert_eq!(files_in(&cache_dir.join("locks")).len(), 1);
    assert!(!entry_path(&cache_dir, &crash_key()).exists());
    // While it lives, its temp file is protected.
    drop(open(&cache_dir, Some(1 << 30)));
    assert_eq!(files_in(&cache_dir.join("tmp")).len(), 1);

    child.kill().unwrap(); // SIGKILL: no destructors, no cleanup
    child.wait().unwrap();

    let cache = open(&cache_dir, Some(1 << 30));
    assert!(files_in(&cache_dir.join("tmp")).is_empty());
    assert!(files_in(&cache_dir.join("locks")).is_empty());
    let fetches = Arc::new(AtomicU64::new(0));
    let e = within(Duration::from_secs(30), move || {
        runtime().block_on(async {
            get(&cache, &crash_key(), crash_payload(), &fetches)
                .await
                .map(|e| {
                    (
                        e.from_cache(),
                        e.bytes() == crash_payload(),
                        fetches.load(SeqCst),
                    )
                })
        })
    })
    .unwrap();
    assert_eq!(e, (false, true, 1));
}

// ---------------------------------------------------------------------------------------------
// 6. Blocking I/O stays off the async threads.

#[test]
fn waiting_for_another_process_does_not_block_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), None);
    let k = key(8, 100);
    // Pretend another process is downloading this key.
    let lock_path = dir
        .path()
        .join("locks")
        .join(format!("{}.lock", k.file_name()));
    let held = File::create(&lock_path).unwrap();
    assert!(try_flock(&held, libc::LOCK_EX).unwrap());
    within(Duration::from_secs(30), move || {
        // One async thread: if the lookup blocked it on flock, the task that releases the lock
        // could never run.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let fetches = Arc::new(AtomicU64::new(0));
            let lookup = {
                let (cache, k, f) = (cache.clone(), k.clone(), Arc::clone(&fetches));
                tokio::spawn(async move { get(&cache, &k, payload(8, 100), &f).await })
            };
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!lookup.is_finished());
            // The "other process" gives up: unlink, then release (the holder's protocol).
            std::fs::remove_file(&lock_path).unwrap();
            drop(held);
            let e = lookup.await.unwrap().unwrap();
            assert!(!e.from_cache());
            assert_eq!(cache.stats().waits, 1);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// 8. Stress: many handles, tasks and keys on one directory.

struct Stress {
    handles: usize,
    tasks: usize,
    ops: usize,
    keys: u64,
    limit: u64,
}

fn stress_len(k: u64) -> usize {
    1 + (k as usize * 7919) % 16_000
}

/// Returns (fetches per key, keys looked up at least once, handles' stats).
fn run_stress(cfg: Stress) -> (Vec<u64>, Vec<bool>, Vec<CacheStats>) {
    let dir = tempfile::tempdir().unwrap();
    let fetches: Arc<Vec<AtomicU64>> = Arc::new((0..cfg.keys).map(|_| AtomicU64::new(0)).collect());
    let used: Arc<Vec<AtomicBool>> =
        Arc::new((0..cfg.keys).map(|_| AtomicBool::new(false)).collect());
    let mut threads = Vec::new();
    for h in 0..cfg.handles {
        let (dir, fetches, used) = (
            dir.path().to_path_buf(),
            Arc::clone(&fetches),
            Arc::clone(&used),
        );
        let (tasks, ops, keys, limit) = (cfg.tasks, cfg.ops, cfg.keys, cfg.limit);
        threads.push(std::thread::spawn(move || {
            // One handle and one runtime per thread: a stand-in for one process.
            let cache = open(&dir, Some(limit));
            let rt = runtime();
            rt.block_on(async {
                let mut joins = Vec::new();
                for t in 0..tasks {
                    let (cache, fetches, used) =
                        (cache.clone(), Arc::clone(&fetches), Arc::clone(&used));
                    joins.push(tokio::spawn(async move {
                        let mut x = ((h * 1000 + t) as u64).wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
                        for _ in 0..ops {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            let k = x % keys;
                            used[k as usize].store(true, SeqCst);
                            let len = stress_len(k);
                            let f = Arc::clone(&fetches);
                            let e = cache
                                .get_or_fetch(&key(k, len as u64), move || async move {
                                    f[k as usize].fetch_add(1, SeqCst);
                                    if k.is_multiple_of(3) {
                                        tokio::time::sleep(Duration::from_millis(1)).await;
                                    }
                                    Ok(payload(k, len))
                                })
                                .await
                                .unwrap_or_else(|e| panic!("key {k}: {e}"));
                            assert!(e.bytes() == payload(k, len), "wrong bytes for key {k}");
                            if x.is_multiple_of(4) {
                                tokio::task::yield_now().await; // hold the pin a little
                            }
                            drop(e);
                        }
                    }));
                }
                for j in joins {
                    j.await.unwrap();
                }
            });
            cache.stats()
        }));
    }
    let stats = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // Nothing left over, and the directory respects the limit.
    assert!(files_in(&dir.path().join("tmp")).is_empty());
    assert!(files_in(&dir.path().join("locks")).is_empty());
    let total: u64 = std::fs::read_dir(dir.path().join("entries"))
        .unwrap()
        .map(|d| d.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        total <= cfg.limit,
        "{total} bytes on disk > limit {}",
        cfg.limit
    );
    (
        fetches.iter().map(|f| f.load(SeqCst)).collect(),
        used.iter().map(|u| u.load(SeqCst)).collect(),
        stats,
    )
}

#[test]
fn stress_with_eviction() {
    // 4 handles x 8 tasks pin at most 32 entries of <= 16 KB at once; 200 keys (~1.6 MB) do
    // not fit in 640 KiB, so entries are evicted and fetched again all the time.
    let (fetches, _, stats) = within(Duration::from_secs(120), || {
        run_stress(Stress {
            handles: 4,
            tasks: 8,
            ops: 60,
            keys: 200,
            limit: 640 << 10,
        })
    });
    let evictions: u64 = stats.iter().map(|s| s.evictions).sum();
    let misses: u64 = stats.iter().map(|s| s.misses).sum();
    assert!(evictions > 0, "{stats:?}");
    assert_eq!(misses, fetches.iter().sum::<u64>());
    assert_eq!(
        stats.iter().map(|s| s.hits + s.misses).sum::<u64>(),
        4 * 8 * 60
    );
}

#[test]
fn stress_without_eviction_fetches_each_key_once() {
    let (fetches, used, stats) = within(Duration::from_secs(120), || {
        run_stress(Stress {
            handles: 4,
            tasks: 8,
            ops: 60,
            keys: 64,
            limit: 1 << 30,
        })
    });
    for (k, (&n, &u)) in fetches.iter().zip(&used).enumerate() {
        assert_eq!(n, u64::from(u), "key {k} fetched {n} times");
    }
    assert_eq!(stats.iter().map(|s| s.evictions).sum::<u64>(), 0);
}
