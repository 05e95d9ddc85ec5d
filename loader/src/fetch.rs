//! Reading shard bytes: from the store through object_store, verified against the manifest,
//! through the node-local disk cache when there is one, or mapped from local files.
//!
//! Every read names one object version: the GET carries `If-Match: <manifest etag>`, and the
//! size and etag the store reports back must equal the manifest's, so an object rewritten since
//! indexing is [`Error::ShardChanged`] naming its URL, never bytes of a different version mixed
//! into a batch. A body shorter than asked is [`Error::ShortRead`]; it and transient transport
//! errors are retried (`fetch_attempts`, with a short backoff) on top of object_store's own
//! request retries. Nothing partial is ever returned.
//!
//! Without a cache, objects under a `file://` root are memory-mapped instead of read: the page
//! cache *is* the buffer, so a Parquet row group or a plain tar reaches the decoder without a
//! copy. Their size and etag are checked (a `stat` through object_store) before mapping.
//! With a cache, every read goes through [`DiskCache::get_or_fetch`] keyed by
//! (URL, etag, size, range), and the cache serves mapped files too.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};

use crate::cache::{CacheKey, DiskCache};
use crate::stats::Counters;
use crate::{Error, Result};

/// One shard as the manifest describes it, and where to read it.
#[derive(Clone, Debug)]
pub struct ShardObject {
    pub store: Arc<dyn ObjectStore>,
    pub key: StorePath,
    /// Full URL (for errors and cache keys).
    pub url: String,
    pub size: u64,
    pub etag: Option<String>,
    /// Modification time in the manifest (ms since the epoch); compared, at the one-second
    /// precision of HTTP dates, only when the manifest has no etag (some S3 implementations list
    /// objects without one).
    pub last_modified_ms: Option<i64>,
    /// The file, when the object is on a local file system.
    pub local: Option<PathBuf>,
}

/// Reads verified bytes of shards.
pub struct Fetcher {
    counters: Arc<Counters>,
    cache: Option<DiskCache>,
    attempts: u32,
}

impl Fetcher {
    pub(crate) fn new(counters: Arc<Counters>, cache: Option<DiskCache>, attempts: u32) -> Self {
        Fetcher {
            counters,
            cache,
            attempts: attempts.max(1),
        }
    }

    pub fn cache(&self) -> Option<&DiskCache> {
        self.cache.as_ref()
    }

    /// `range` of `obj` (`None`: all of it), exactly as long as asked.
    pub async fn read(&self, obj: &ShardObject, range: Option<Range<u64>>) -> Result<Bytes> {
        let expected = match &range {
            Some(r) if r.start > r.end || r.end > obj.size => {
                return Err(Error::ShardChanged {
                    url: obj.url.clone(),
                    detail: format!(
                        "bytes {}..{} requested from a {}-byte object (the manifest and the file disagree)",
                        r.start, r.end, obj.size
                    ),
                })
            }
            Some(r) => r.end - r.start,
            None => obj.size,
        };
        let bytes = match &self.cache {
            Some(cache) => {
                // Without an etag the modification time names the version, so a rebuilt
                // manifest over a rewritten object never hits the old version's entry.
                let version = obj
                    .etag
                    .clone()
                    .or_else(|| obj.last_modified_ms.map(|ms| format!("last-modified:{ms}")));
                let key = CacheKey {
                    url: obj.url.clone(),
                    etag: version,
                    size: obj.size,
                    range: range.clone(),
                };
                let entry = cache
                    .get_or_fetch(&key, || self.read_store(obj, range.clone()))
                    .await?;
                if entry.from_cache() {
                    Counters::add(&self.counters.bytes_from_cache, entry.len());
                }
                entry.bytes()
            }
            None if obj.local.is_some() => self.read_local(obj, range).await?,
            None => self.read_store(obj, range).await?,
        };
        if bytes.len() as u64 != expected {
            return Err(Error::ShortRead {
                url: obj.url.clone(),
                got: bytes.len() as u64,
                expected,
            });
        }
        Ok(bytes)
    }

    /// Reads from the store with retries.
    async fn read_store(&self, obj: &ShardObject, range: Option<Range<u64>>) -> Result<Bytes> {
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let r = self.get_once(obj, range.clone()).await;
            Counters::add_time(&self.counters.fetch_ns, started);
            match r {
                Ok(b) => {
                    Counters::add(&self.counters.bytes_fetched, b.len() as u64);
                    return Ok(b);
                }
                Err(e) if attempt < self.attempts && retryable(&e) => {
                    Counters::add(&self.counters.retries, 1);
                    tracing::debug!(url = %obj.url, attempt, error = %e, "retrying read");
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn get_once(&self, obj: &ShardObject, range: Option<Range<u64>>) -> Result<Bytes> {
        Counters::add(&self.counters.requests, 1);
        let expected = range.as_ref().map_or(obj.size, |r| r.end - r.start);
        let opts = GetOptions {
            if_match: obj.etag.clone(),
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = obj
            .store
            .get_opts(&obj.key, opts)
            .await
            .map_err(|e| store_error(obj, e))?;
        check_version(obj, &result.meta)?;
        let bytes = result.bytes().await.map_err(|e| store_error(obj, e))?;
        if bytes.len() as u64 != expected {
            return Err(Error::ShortRead {
                url: obj.url.clone(),
                got: bytes.len() as u64,
                expected,
            });
        }
        Ok(bytes)
    }

    /// Maps a local file after checking it is the indexed version.
    async fn read_local(&self, obj: &ShardObject, range: Option<Range<u64>>) -> Result<Bytes> {
        let started = Instant::now();
        Counters::add(&self.counters.requests, 1);
        let meta = obj
            .store
            .head(&obj.key)
            .await
            .map_err(|e| store_error(obj, e))?;
        check_version(obj, &meta)?;
        let path = obj.local.clone().expect("checked by the caller");
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        let all = crate::pinned::map_file(&file).map_err(io)?;
        check_size(obj, all.len() as u64)?;
        let bytes = match range {
            Some(r) => all.slice(r.start as usize..r.end as usize),
            None => all,
        };
        Counters::add(&self.counters.bytes_fetched, bytes.len() as u64);
        Counters::add_time(&self.counters.fetch_ns, started);
        Ok(bytes)
    }
}

/// Errors unless the store's size and etag (or, lacking an etag, modification time) are the
/// manifest's.
fn check_version(obj: &ShardObject, seen: &object_store::ObjectMeta) -> Result<()> {
    check_size(obj, seen.size)?;
    match (
        obj.etag.as_deref(),
        seen.e_tag.as_deref(),
        obj.last_modified_ms,
    ) {
        (Some(want), Some(got), _) if want != got => Err(Error::ShardChanged {
            url: obj.url.clone(),
            detail: format!("its etag is now {got}, the manifest says {want}"),
        }),
        (None, _, Some(ms)) if ms.div_euclid(1000) != seen.last_modified.timestamp() => {
            Err(Error::ShardChanged {
                url: obj.url.clone(),
                detail: format!(
                    "it was modified at {} (the manifest has no etag and a different time)",
                    seen.last_modified
                ),
            })
        }
        _ => Ok(()),
    }
}

fn check_size(obj: &ShardObject, size: u64) -> Result<()> {
    if size != obj.size {
        return Err(Error::ShardChanged {
            url: obj.url.clone(),
            detail: format!(
                "its size is now {size} bytes, the manifest says {}",
                obj.size
            ),
        });
    }
    Ok(())
}

fn store_error(obj: &ShardObject, source: object_store::Error) -> Error {
    match source {
        object_store::Error::Precondition { .. } => Error::ShardChanged {
            url: obj.url.clone(),
            detail: format!(
                "the store refused the read pinned to etag {} ({source})",
                obj.etag.as_deref().unwrap_or("?")
            ),
        },
        object_store::Error::NotFound { .. } => Error::ShardChanged {
            url: obj.url.clone(),
            detail: "it no longer exists".into(),
        },
        source => Error::Fetch {
            url: obj.url.clone(),
            source,
        },
    }
}

/// Short bodies and transport trouble may succeed on a second try; a changed object, missing
/// permissions or a bad request will not.
fn retryable(e: &Error) -> bool {
    match e {
        Error::ShortRead { .. } => true,
        Error::Fetch { source, .. } => matches!(
            source,
            object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;
    use object_store::PutPayload;

    fn fetcher() -> (Fetcher, Arc<Counters>) {
        let c = Arc::new(Counters::default());
        (Fetcher::new(c.clone(), None, 3), c)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn reads_ranges_and_checks_the_version() {
        rt().block_on(async {
            let store = Arc::new(InMemory::new());
            let key = StorePath::from("d/x.tar");
            let put = store
                .put(&key, PutPayload::from(vec![7u8; 1000]))
                .await
                .unwrap();
            let mut obj = ShardObject {
                store: store.clone(),
                key: key.clone(),
                url: "memory:///d/x.tar".into(),
                size: 1000,
                etag: put.e_tag.clone(),
                last_modified_ms: None,
                local: None,
            };
            let (f, c) = fetcher();
            assert_eq!(f.read(&obj, Some(10..20)).await.unwrap().len(), 10);
            assert_eq!(f.read(&obj, None).await.unwrap().len(), 1000);
            assert_eq!(
                c.bytes_fetched.load(std::sync::atomic::Ordering::Relaxed),
                1010
            );

            obj.etag = Some("stale".into());
            let err = f.read(&obj, Some(0..5)).await.unwrap_err();
            assert!(matches!(err, Error::ShardChanged { .. }), "{err}");
            assert!(err.to_string().contains("memory:///d/x.tar"), "{err}");

            obj.etag = None;
            obj.last_modified_ms = Some(0);
            let err = f.read(&obj, Some(0..5)).await.unwrap_err();
            assert!(err.to_string().contains("no etag"), "{err}");
            obj.last_modified_ms = None;
            obj.size = 999;
            let err = f.read(&obj, Some(0..5)).await.unwrap_err();
            assert!(err.to_string().contains("size is now 1000"), "{err}");
            let err = f.read(&obj, Some(990..1000)).await.unwrap_err();
            assert!(matches!(err, Error::ShardChanged { .. }), "{err}");

            store.delete(&key).await.unwrap();
            obj.size = 1000;
            let err = f.read(&obj, None).await.unwrap_err();
            assert!(err.to_string().contains("no longer exists"), "{err}");
        });
    }

    #[test]
    fn local_files_are_mapped_and_checked() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.jsonl");
            std::fs::write(&path, b"0123456789").unwrap();
            let store = Arc::new(LocalFileSystem::new());
            let key = StorePath::from_filesystem_path(&path).unwrap();
            let etag = store.head(&key).await.unwrap().e_tag;
            let obj = ShardObject {
                store,
                key,
                url: format!("file://{}", path.display()),
                size: 10,
                etag,
                last_modified_ms: None,
                local: Some(path.clone()),
            };
            let (f, _) = fetcher();
            assert_eq!(&f.read(&obj, Some(2..5)).await.unwrap()[..], b"234");
            std::thread::sleep(Duration::from_millis(20));
            std::fs::write(&path, b"abcdefghij").unwrap();
            let err = f.read(&obj, None).await.unwrap_err();
            assert!(matches!(err, Error::ShardChanged { .. }), "{err}");
        });
    }
}
