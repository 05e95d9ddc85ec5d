//! Reading shard bytes: from the store through object_store, verified against the manifest,
//! through the node-local disk cache when there is one, or mapped from local files.
//!
//! Every read names one object version: the GET carries `If-Match: <manifest etag>`, and the
//! size and etag the store reports back must equal the manifest's, so an object rewritten since
//! indexing is [`Error::ShardChanged`] naming its URL, never bytes of a different version mixed
//! into a batch. A body shorter than asked is [`Error::ShortRead`]. Nothing partial is ever
//! returned.
//!
//! # Surviving a misbehaving store
//!
//! Shard stores are opened with object_store's own retries off ([`shard_storage_options`]), so
//! this module sees every failure and decides ([`retry`]):
//! - **Retries**: throttling (503 SlowDown, 429), other 5xx, resets, bodies cut short and stalls
//!   are retried up to `fetch_attempts` times with jittered exponential backoff; a changed or
//!   deleted shard, or a 4xx, fails at once.
//! - **Timeouts**: waiting for the response headers, and then for each chunk of the body, is
//!   bounded by `request_timeout`, so a connection that stalls forever (before or after the
//!   headers) becomes [`Error::Timeout`] and is retried. It bounds *progress*, not the whole
//!   transfer, so a large shard on a slow link is not cut off while bytes keep coming.
//! - **Adaptive concurrency** ([`adaptive`]): GETs in flight are capped by an AIMD limit that
//!   halves on throttling and creeps back up as requests succeed.
//! - **Hedging** ([`hedge`]): when a request has waited for its headers longer than the 95th
//!   percentile of recent requests, the limiter has a free slot and fewer than 5% of requests
//!   were hedged so far, a duplicate is sent; the first response wins and the other is dropped
//!   (`hedge = false` turns this off).
//!
//! - **Bodies a few at a time** ([`transfers`]): an answered GET waits at a FIFO gate before
//!   its body is read, so units arrive in the order they are needed instead of all together at
//!   the end of a burst; how many bodies pass at once is found by probing throughput, from a
//!   few on a link one connection can fill up to every GET in flight where each connection is
//!   slow (`adaptive_transfers = false` reads every body at once).
//!
//! Retries, timeouts, throttled answers, hedges fired and won, the concurrency limit and the
//! transfer limit are counted in [`crate::LoaderStats`].
//!
//! # Split ranges
//!
//! One HTTP response is one TCP stream, and a single stream rarely fills the link, so a read at
//! least twice `range_split_bytes` (8 MiB) long is sent as several ranged GETs at once, each of
//! 8–16 MiB (each retried and hedged on its own, all under the same limiter), whose bodies'
//! chunks follow each other in order. Shorter reads stay whole: a request's fixed cost (tens
//! of milliseconds on S3, per-request work in the server and here) buys nothing when the unit
//! is fetched alongside dozens of others anyway. Cutting an 8 MiB row group into three 2.8 MB
//! GETs, as a 4 MiB upper bound on pieces did, and fetching 16 units at once instead of 32,
//! moved 10–15% less (loopback nginx with two workers,
//! `shardstream-bench read --no-cache`, 3–5 interleaved runs, medians, MB/s old → new): s3
//! blobs 870 → 1,019, tokens 898 → 992; s3 with 30 ms per request blobs 792 → 890, tokens
//! 854 → 948; CPU per GB equal or lower.
//!
//! [`Fetcher::read_parts`] hands those chunks over as they came (hyper's, ~400 KB each), which
//! the Parquet decoder reads in place; [`Fetcher::read`] joins them into one buffer for the
//! readers that need one (footers, tar and JSONL shards, the cache).
//!
//! Without a cache, objects under a `file://` root are memory-mapped instead of read: the page
//! cache *is* the buffer, so a Parquet row group or a plain tar reaches the decoder without a
//! copy. Their size and etag are checked (a `stat` through object_store) before mapping.
//! With a cache, every read goes through [`DiskCache::get_or_fetch`] keyed by
//! (URL, etag, size, range), and the cache serves mapped files too.

pub(crate) mod adaptive;
pub(crate) mod hedge;
pub(crate) mod retry;
pub(crate) mod transfers;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt};

pub use retry::shard_storage_options;

use crate::cache::{CacheKey, DiskCache};
use crate::config::LoaderConfig;
use crate::stats::Counters;
use crate::{Error, Result};
use adaptive::{Limiter, Permit};
use hedge::{HedgeBudget, LatencyTracker};
use retry::Class;
use transfers::{Transfer, TransferGate};

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

/// How reads behave under failure (from [`LoaderConfig`]).
#[derive(Clone, Debug)]
pub struct FetchPolicy {
    /// Attempts per read (at least 1).
    pub attempts: u32,
    /// Longest wait for response headers, and for each body chunk after them.
    pub request_timeout: Duration,
    /// Send a duplicate of a request slower than the recent 95th percentile.
    pub hedge: bool,
    /// Most GETs in flight (the AIMD limit's ceiling).
    pub max_requests: usize,
    /// Reads at least twice this long are split into concurrent ranged GETs of at least this
    /// size (and under twice it).
    pub range_split_bytes: u64,
    /// Read answered bodies a few at a time, as many as add throughput ([`transfers`]), rather
    /// than all at once.
    pub adaptive_transfers: bool,
    /// Advise huge pages on mapped local files (`LoaderConfig::huge_pages`).
    pub huge_pages: bool,
}

impl FetchPolicy {
    pub fn from_config(c: &LoaderConfig) -> FetchPolicy {
        FetchPolicy {
            attempts: c.fetch_attempts,
            request_timeout: c.request_timeout,
            hedge: c.hedge,
            max_requests: c.io_concurrency.saturating_mul(2).clamp(1, 1024),
            range_split_bytes: c.range_split_bytes.max(1),
            adaptive_transfers: c.adaptive_transfers,
            huge_pages: c.huge_pages,
        }
    }
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy::from_config(&LoaderConfig::new("unused", 1))
    }
}

/// Reads verified bytes of shards.
pub struct Fetcher {
    counters: Arc<Counters>,
    cache: Option<DiskCache>,
    policy: FetchPolicy,
    limiter: Arc<Limiter>,
    /// `None` without `adaptive_transfers`: every answered body is read at once.
    transfers: Option<Arc<TransferGate>>,
    latency: LatencyTracker,
    hedges: HedgeBudget,
}

impl Fetcher {
    pub(crate) fn new(
        counters: Arc<Counters>,
        cache: Option<DiskCache>,
        policy: FetchPolicy,
    ) -> Self {
        let limiter = Limiter::new(policy.max_requests);
        let limit = limiter.current.load(Ordering::Relaxed);
        counters.concurrency_limit.store(limit, Ordering::Relaxed);
        counters
            .concurrency_limit_min
            .store(limit, Ordering::Relaxed);
        let transfers = policy
            .adaptive_transfers
            .then(|| TransferGate::new(policy.max_requests));
        let transfer_limit = transfers.as_ref().map_or(0, |g| g.limit());
        counters
            .transfer_limit
            .store(transfer_limit, Ordering::Relaxed);
        Fetcher {
            counters,
            cache,
            policy: FetchPolicy {
                attempts: policy.attempts.max(1),
                ..policy
            },
            limiter,
            transfers,
            latency: LatencyTracker::default(),
            hedges: HedgeBudget::default(),
        }
    }

    pub fn cache(&self) -> Option<&DiskCache> {
        self.cache.as_ref()
    }

    /// `range` of `obj` (`None`: all of it), exactly as long as asked, in one buffer.
    pub async fn read(&self, obj: &ShardObject, range: Option<Range<u64>>) -> Result<Bytes> {
        Ok(join(self.read_parts(obj, range).await?))
    }

    /// Like [`Fetcher::read`], but bytes from the store stay the chunks their bodies arrived in
    /// (consecutive, in order), for readers that take them as they are (Parquet row groups:
    /// see `decode::pieces`). Joining them would copy every byte once more into a freshly
    /// faulted buffer. A cache entry or a mapped file is one part.
    pub async fn read_parts(
        &self,
        obj: &ShardObject,
        range: Option<Range<u64>>,
    ) -> Result<Vec<Bytes>> {
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
        let parts = match &self.cache {
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
                let fetch = || async { Ok(join(self.read_store(obj, range.clone()).await?)) };
                let entry = cache.get_or_fetch(&key, fetch).await?;
                if entry.from_cache() {
                    Counters::add(&self.counters.bytes_from_cache, entry.len());
                }
                vec![entry.bytes()]
            }
            None if obj.local.is_some() => vec![self.read_local(obj, range).await?],
            None => self.read_store(obj, range).await?,
        };
        let got: u64 = parts.iter().map(|b| b.len() as u64).sum();
        if got != expected {
            return Err(Error::ShortRead {
                url: obj.url.clone(),
                got,
                expected,
            });
        }
        Ok(parts)
    }

    /// Reads from the store, long ranges as several concurrent GETs (see the module docs); the
    /// bodies' chunks in order.
    async fn read_store(&self, obj: &ShardObject, range: Option<Range<u64>>) -> Result<Vec<Bytes>> {
        let whole = range.clone().unwrap_or(0..obj.size);
        let pieces = split_range(whole, self.policy.range_split_bytes);
        if pieces.len() <= 1 {
            // One GET, of the range as asked (a whole object stays an unranged GET).
            return self.read_attempts(obj, range).await;
        }
        let reads = pieces.into_iter().map(|p| self.read_attempts(obj, Some(p)));
        let pieces = futures::future::try_join_all(reads).await?;
        Ok(pieces.into_iter().flatten().collect())
    }

    /// One GET (of `range`) with retries; the body's chunks, of exactly the asked length.
    async fn read_attempts(
        &self,
        obj: &ShardObject,
        range: Option<Range<u64>>,
    ) -> Result<Vec<Bytes>> {
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let r = self.get_hedged(obj, range.clone()).await;
            Counters::add_time(&self.counters.fetch_ns, started);
            let e = match r {
                Ok(chunks) => {
                    let n: usize = chunks.iter().map(Bytes::len).sum();
                    Counters::add(&self.counters.bytes_fetched, n as u64);
                    return Ok(chunks);
                }
                Err(e) => e,
            };
            let class = retry::classify(&e);
            if class == Class::Fatal || attempt >= self.policy.attempts {
                return Err(e);
            }
            Counters::add(&self.counters.retries, 1);
            let wait = retry::backoff(attempt, class);
            tracing::debug!(url = %obj.url, attempt, ?class, ?wait, error = %e, "retrying read");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One attempt: a GET, plus a hedge if it is slow to answer. The first response whose
    /// headers arrive wins; its body is then read (the other request is dropped).
    async fn get_hedged(&self, obj: &ShardObject, range: Option<Range<u64>>) -> Result<Vec<Bytes>> {
        let threshold = if self.policy.hedge {
            self.latency.threshold()
        } else {
            None
        };
        let permit = self.limiter.acquire().await;
        self.hedges.note_request();
        let started = Instant::now();
        let primary = self.get_head(obj, range.clone(), permit);
        let Some(delay) = threshold else {
            let head = primary.await?;
            self.latency.record(started.elapsed());
            return self.read_body(obj, head).await;
        };
        tokio::pin!(primary);
        tokio::select! {
            biased;
            head = &mut primary => {
                let head = head?;
                self.latency.record(started.elapsed());
                return self.read_body(obj, head).await;
            }
            _ = tokio::time::sleep(delay) => {}
        }
        // Never add load the limiter has no room for (e.g. while the store throttles us), nor
        // beyond the hedge budget.
        let permit = self
            .limiter
            .try_acquire()
            .filter(|_| self.hedges.try_spend());
        let Some(permit) = permit else {
            let head = primary.await?;
            self.latency.record(started.elapsed());
            return self.read_body(obj, head).await;
        };
        Counters::add(&self.counters.hedges_fired, 1);
        let backup = self.get_head(obj, range, permit);
        tokio::pin!(backup);
        let (head, won) = tokio::select! {
            head = &mut primary => match head {
                Ok(h) => (h, false),
                Err(_) => (backup.await?, true),
            },
            head = &mut backup => match head {
                Ok(h) => (h, true),
                Err(_) => (primary.await?, false),
            },
        };
        if won {
            Counters::add(&self.counters.hedges_won, 1);
        }
        self.latency.record(started.elapsed());
        self.read_body(obj, head).await
    }

    /// Sends a GET and waits (at most `request_timeout`) for its headers; checks the version.
    async fn get_head(
        &self,
        obj: &ShardObject,
        range: Option<Range<u64>>,
        permit: Permit,
    ) -> Result<Head> {
        Counters::add(&self.counters.requests, 1);
        let started = Instant::now();
        let expected = range.as_ref().map_or(obj.size, |r| r.end - r.start);
        let opts = GetOptions {
            if_match: obj.etag.clone(),
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let timeout = self.policy.request_timeout;
        let result = match tokio::time::timeout(timeout, obj.store.get_opts(&obj.key, opts)).await {
            Ok(r) => r.map_err(|e| store_error(obj, e)),
            Err(_) => Err(self.timed_out(obj, "the response headers", timeout)),
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                self.feedback(&e, started);
                return Err(e);
            }
        };
        check_version(obj, &result.meta)?;
        Ok(Head {
            result,
            expected,
            started,
            _permit: permit,
        })
    }

    /// Reads a response body, each chunk within `request_timeout`, and checks its length. It
    /// first waits its turn at the transfer gate, if there is one; `request_timeout` starts
    /// after that.
    async fn read_body(&self, obj: &ShardObject, head: Head) -> Result<Vec<Bytes>> {
        let Head {
            result,
            expected,
            started,
            _permit,
        } = head;
        let transfer = match &self.transfers {
            Some(gate) => Some(gate.enter().await),
            None => None,
        };
        let r = self
            .collect_body(obj, result, expected, transfer.as_ref())
            .await;
        drop(transfer);
        if let Some(gate) = &self.transfers {
            self.counters
                .transfer_limit
                .store(gate.limit(), Ordering::Relaxed);
        }
        match &r {
            Ok(_) => self.feedback_ok(),
            Err(e) => self.feedback(e, started),
        }
        r
    }

    async fn collect_body(
        &self,
        obj: &ShardObject,
        result: GetResult,
        expected: u64,
        transfer: Option<&Transfer>,
    ) -> Result<Vec<Bytes>> {
        let timeout = self.policy.request_timeout;
        let mut stream = result.into_stream();
        let mut parts: Vec<Bytes> = Vec::new();
        let mut got = 0u64;
        loop {
            let chunk = match tokio::time::timeout(timeout, stream.next()).await {
                Err(_) => return Err(self.timed_out(obj, "the next part of the body", timeout)),
                Ok(None) => break,
                Ok(Some(c)) => c.map_err(|e| store_error(obj, e))?,
            };
            got += chunk.len() as u64;
            if let Some(t) = transfer {
                t.carried(chunk.len());
            }
            if got > expected {
                break;
            }
            parts.push(chunk);
        }
        if got != expected {
            return Err(Error::ShortRead {
                url: obj.url.clone(),
                got,
                expected,
            });
        }
        Ok(parts)
    }

    fn timed_out(&self, obj: &ShardObject, what: &'static str, after: Duration) -> Error {
        Counters::add(&self.counters.timeouts, 1);
        Error::Timeout {
            url: obj.url.clone(),
            what,
            after_s: after.as_secs_f64(),
        }
    }

    fn feedback_ok(&self) {
        self.limiter.on_success();
        self.counters.concurrency_limit.store(
            self.limiter.current.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }

    fn feedback(&self, e: &Error, started: Instant) {
        if retry::classify(e) == Class::Throttled {
            Counters::add(&self.counters.throttled, 1);
            if self.limiter.on_throttle(started) {
                tracing::debug!(
                    limit = self.limiter.limit(),
                    "store throttles: concurrency halved"
                );
            }
            let c = &self.counters;
            c.concurrency_limit.store(
                self.limiter.current.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            c.concurrency_limit_min.store(
                self.limiter.lowest.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
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
        let len = file.metadata().map_err(io)?.len();
        check_size(obj, len)?;
        let range = range.unwrap_or(0..len);
        if range.end > len {
            return Err(Error::ShortRead {
                url: obj.url.clone(),
                expected: range.end - range.start,
                got: len.saturating_sub(range.start),
            });
        }
        // Only the range, mapped as it is touched: see `map_range`.
        let bytes =
            crate::mapping::map_range(&file, len, range, self.policy.huge_pages).map_err(io)?;
        Counters::add(&self.counters.bytes_fetched, bytes.len() as u64);
        Counters::add_time(&self.counters.fetch_ns, started);
        Ok(bytes)
    }
}

/// `range` cut into as many near-equal consecutive pieces as fit at `min_piece` bytes or more
/// each (one piece if it is shorter than two): every piece is at least `min_piece` and under
/// twice that, so no piece is a small straggler whose request costs more than it carries.
fn split_range(range: Range<u64>, min_piece: u64) -> Vec<Range<u64>> {
    let len = range.end.saturating_sub(range.start);
    let n = (len / min_piece.max(1)).max(1);
    if n == 1 {
        return vec![range];
    }
    // Boundaries at i·len/n (in u128: len·i can pass u64 for a huge object).
    let at = |i: u64| range.start + (u128::from(len) * u128::from(i) / u128::from(n)) as u64;
    (0..n).map(|i| at(i)..at(i + 1)).collect()
}

/// Chunks as one buffer (a copy only when there are several).
fn join(mut chunks: Vec<Bytes>) -> Bytes {
    if chunks.len() <= 1 {
        return chunks.pop().unwrap_or_default();
    }
    let len = chunks.iter().map(Bytes::len).sum();
    let mut joined = Vec::with_capacity(len);
    for c in chunks {
        joined.extend_from_slice(&c);
    }
    Bytes::from(joined)
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

/// A response whose headers arrived, holding its concurrency slot until its body is read.
struct Head {
    result: GetResult,
    expected: u64,
    started: Instant,
    _permit: Permit,
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;
    use object_store::PutPayload;

    fn fetcher() -> (Fetcher, Arc<Counters>) {
        let c = Arc::new(Counters::default());
        (Fetcher::new(c.clone(), None, FetchPolicy::default()), c)
    }

    /// A single-threaded runtime for async tests (the transfer gate's too).
    pub(in crate::fetch) fn rt() -> tokio::runtime::Runtime {
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
    fn split_ranges_tile_the_range_in_near_equal_pieces_of_at_least_the_minimum() {
        assert_eq!(split_range(0..10, 100), vec![0..10]);
        assert_eq!(split_range(5..5, 4), vec![5..5]);
        // Shorter than two pieces: one GET, not a full piece and a straggler.
        assert_eq!(split_range(0..7, 4), vec![0..7]);
        assert_eq!(split_range(0..10, 4), vec![0..5, 5..10]);
        assert_eq!(split_range(100..200, 50), vec![100..150, 150..200]);
        assert_eq!(split_range(0..9, 2), vec![0..2, 2..4, 4..6, 6..9]);
        for (start, len, min) in [
            (0u64, 1000u64, 7u64),
            (13, 4096, 1000),
            (1, 9, 1),
            (0, 9, 2),
            (0, 1 << 40, 3 << 20),
            (u64::MAX - (1 << 41), 1 << 41, 1 << 20),
        ] {
            let pieces = split_range(start..start + len, min);
            assert_eq!(pieces.first().unwrap().start, start);
            assert_eq!(pieces.last().unwrap().end, start + len);
            assert!(pieces.windows(2).all(|w| w[0].end == w[1].start));
            assert!(
                pieces.len() == 1
                    || pieces
                        .iter()
                        .all(|p| p.end - p.start >= min && p.end - p.start < 2 * min),
                "{start} {len} {min}"
            );
            assert!(
                pieces.iter().all(|p| p.end > p.start),
                "{start} {len} {min}"
            );
        }
    }

    #[test]
    fn long_reads_are_split_into_concurrent_gets_and_joined_in_order() {
        rt().block_on(async {
            let store = Arc::new(InMemory::new());
            let key = StorePath::from("d/x.parquet");
            let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
            let put = store
                .put(&key, PutPayload::from(data.clone()))
                .await
                .unwrap();
            let obj = ShardObject {
                store,
                key,
                url: "memory:///d/x.parquet".into(),
                size: data.len() as u64,
                etag: put.e_tag,
                last_modified_ms: None,
                local: None,
            };
            let c = Arc::new(Counters::default());
            let policy = FetchPolicy {
                range_split_bytes: 1000,
                ..FetchPolicy::default()
            };
            let f = Fetcher::new(c.clone(), None, policy);
            let got = f.read(&obj, Some(123..4_567)).await.unwrap();
            assert_eq!(&got[..], &data[123..4_567]);
            let requests = |c: &Counters| c.requests.load(Ordering::Relaxed);
            assert_eq!(requests(&c), 4, "4,444 bytes in pieces of at least 1,000");
            assert_eq!(&f.read(&obj, None).await.unwrap()[..], &data[..]);
            assert_eq!(requests(&c), 14);
            // Shorter than two pieces: one GET.
            assert_eq!(
                &f.read(&obj, Some(1..2_000)).await.unwrap()[..],
                &data[1..2_000]
            );
            assert_eq!(requests(&c), 15);
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
