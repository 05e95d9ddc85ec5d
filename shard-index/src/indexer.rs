//! Building, updating and verifying manifests.
//!
//! [`build`] lists every source, filters the listing (shard formats, `--include`/`--exclude`,
//! markers like `_SUCCESS`), describes each object concurrently (bounded by
//! [`IndexOptions::concurrency`], one tokio task per object so CPU-heavy decompression spreads
//! over the runtime's threads and a panic in a decoder stays confined to its object), retries
//! transient failures, reconciles the shards' schemas and returns a [`Manifest`].
//!
//! The result never depends on completion order: rows are sorted by (source, path) and the
//! schema is taken from the first shard in that order, so `--concurrency 1` and `64` agree
//! byte for byte.
//!
//! Many sources (thousands of buckets and prefixes) are listed concurrently
//! ([`IndexOptions::list_concurrency`]), each fanned out over its first-level prefixes, with
//! pages streamed rather than collected, so listing time is not the sum over sources and memory
//! holds only the objects this build (or this part) will read; a part lists only its share of
//! the prefixes where the layout allows ([`crate::fanout`]). Sources
//! that would count a shard twice (one inside another) are refused before anything is listed.
//! A source that cannot be listed, or lists no shard, fails the build unless
//! [`IndexOptions::skip_bad`] is set, which records it in [`BuildSummary::bad_sources`].

use crate::error::{Error, Result};
use crate::fanout::{list_sources, ListStats};
use crate::format::{is_ignored_name, FormatChoice, ShardFormat, ShardKind};
use crate::manifest::{Manifest, PartInfo, ShardEntry};
use crate::parts::{display_in, BuildRecord, PartDetail, PartListing};
use crate::scan::parquet::FooterHint;
use crate::scan::{self, ScannedShard};
use crate::schema::reconcile;
use crate::storage::{canonical_source, is_within, Location, StorageConfig, StorageOptions};
use futures::StreamExt;
use globset::{Glob, GlobSet, GlobSetBuilder};
use object_store::{ObjectMeta, ObjectStore};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to index.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub format: FormatChoice,
    /// Globs on the path relative to the source root; empty means everything.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Objects described at once.
    pub concurrency: usize,
    pub storage_options: StorageOptions,
    /// Record bad objects in the summary instead of failing.
    pub skip_bad: bool,
    /// Attempts per object for transient errors (network, throttling).
    pub attempts: u32,
    /// Per-source options (endpoint, region, credentials per bucket), on top of
    /// `storage_options`.
    pub storage_config: StorageConfig,
    /// Build only this part of the objects (`--part I/N`): a partial manifest for `merge`.
    pub part: Option<PartInfo>,
    /// LIST requests in flight at once (sources and their prefixes).
    pub list_concurrency: usize,
    /// With `part`: split the listing between parts by prefix fan-out (see [`crate::fanout`]);
    /// off, every part lists everything and keeps its 1/N by key hash. All parts of a build
    /// must agree (`merge` checks).
    pub split_listing: bool,
}

impl IndexOptions {
    /// The storage options for the source whose canonical URL is `url`.
    pub fn options_for(&self, url: &str) -> StorageOptions {
        if self.storage_config.is_empty() {
            return self.storage_options.clone();
        }
        self.storage_config.options_for(url, &self.storage_options)
    }

    fn record(&self) -> BuildRecord {
        BuildRecord {
            format: format!("{:?}", self.format),
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            skip_bad: self.skip_bad,
        }
    }
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            format: FormatChoice::Auto,
            include: Vec::new(),
            exclude: Vec::new(),
            concurrency: 16,
            storage_options: StorageOptions::new(),
            skip_bad: false,
            attempts: 3,
            storage_config: StorageConfig::default(),
            part: None,
            list_concurrency: 16,
            split_listing: true,
        }
    }
}

/// Progress callbacks; the CLI draws a bar from them, libraries and tests ignore them.
pub trait Reporter: Send + Sync {
    /// Listing is under way: this many more objects were listed.
    fn listed(&self, _objects: u64) {}
    /// Listing is done: this many objects and bytes will be read.
    fn start(&self, _objects: u64, _bytes: u64) {}
    /// One object is done (successfully or not); `bytes` is its size.
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

/// A reporter that reports nothing.
pub struct Silent;
impl Reporter for Silent {}

/// An object that could not be indexed (listed with `--skip-bad`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadObject {
    pub path: String,
    pub error: String,
}

/// A source that could not be listed or held no shard (recorded with `--skip-bad`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadSource {
    pub source: String,
    pub error: String,
}

/// What a build did, for humans (`Display`) and scripts (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct BuildSummary {
    pub sources: usize,
    pub objects_listed: u64,
    pub objects_ignored: u64,
    pub shards: u64,
    pub samples: u64,
    pub bytes: u64,
    /// Bytes read from the store to describe the shards (footers only, for Parquet).
    pub bytes_read: u64,
    pub bad: Vec<BadObject>,
    /// Sources skipped with `--skip-bad` (unreachable, denied, or without shards).
    pub bad_sources: Vec<BadSource>,
    /// The part this build covers (`--part I/N`); its manifest is partial.
    pub part: Option<PartInfo>,
    /// What listing cost, and how it was split between parts.
    pub listing: ListStats,
    pub seconds: f64,
    pub shards_per_s: f64,
    pub fingerprint: String,
    /// Shards reused unchanged from the previous manifest (`update` only).
    pub unchanged: u64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// A listed object that looks like a shard.
pub(crate) struct Candidate {
    pub source: u32,
    pub relative: String,
    pub display: String,
    pub meta: ObjectMeta,
    pub kind: ShardKind,
}

/// Indexes `sources` (URLs or local paths) into a manifest.
pub async fn build(
    sources: &[String],
    options: &IndexOptions,
    reporter: &dyn Reporter,
) -> Result<(Manifest, BuildSummary)> {
    build_with_previous(sources, options, reporter, None).await
}

/// What listing alone found ([`list`]).
#[derive(Debug, Clone, Serialize)]
pub struct ListSummary {
    pub sources: usize,
    pub objects_listed: u64,
    pub objects_ignored: u64,
    /// Objects that look like shards, among those listed.
    pub candidates: u64,
    /// Of those, the ones this build (or this part) would read.
    pub selected: u64,
    pub bad_sources: Vec<BadSource>,
    /// What listing cost, and how it was split between parts.
    pub listing: ListStats,
    pub seconds: f64,
}

/// Lists `sources` as [`build`] does (filters, `part`, `skip_bad`, overlap checks) without
/// reading any object: a dry run, and what the listing benchmark measures.
pub async fn list(
    sources: &[String],
    options: &IndexOptions,
    reporter: &dyn Reporter,
) -> Result<ListSummary> {
    let started = Instant::now();
    if options.list_concurrency == 0 {
        return Err(Error::Config("list concurrency must be at least 1".into()));
    }
    let filter = Filter::new(options)?;
    let listing = list_sources(sources, options, &filter, reporter).await?;
    Ok(ListSummary {
        sources: sources.len(),
        objects_listed: listing.listed,
        objects_ignored: listing.ignored,
        candidates: listing
            .shared
            .iter()
            .chain(&listing.owned)
            .map(|l| l.candidates)
            .sum(),
        selected: listing.candidates.len() as u64,
        bad_sources: listing.bad_sources,
        listing: listing.stats,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Re-lists the sources of `previous` and re-reads only new or changed objects.
pub async fn update(
    previous: &Manifest,
    options: &IndexOptions,
    reporter: &dyn Reporter,
) -> Result<(Manifest, BuildSummary)> {
    let sources = previous.meta.sources.clone();
    build_with_previous(&sources, options, reporter, Some(previous)).await
}

async fn build_with_previous(
    sources: &[String],
    options: &IndexOptions,
    reporter: &dyn Reporter,
    previous: Option<&Manifest>,
) -> Result<(Manifest, BuildSummary)> {
    let started = Instant::now();
    if sources.is_empty() {
        return Err(Error::Config("no source given".into()));
    }
    if options.concurrency == 0 || options.list_concurrency == 0 {
        return Err(Error::Config("concurrency must be at least 1".into()));
    }
    if previous.is_some() && options.part.is_some() {
        return Err(Error::Config(
            "update cannot build a part: update the merged manifest instead".into(),
        ));
    }
    if let Some(p) = previous.and_then(|p| p.meta.part) {
        return Err(Error::Config(format!(
            "the manifest is part {}/{} of a partitioned build: merge the parts, then update the result",
            p.index, p.count
        )));
    }
    let filter = Filter::new(options)?;
    let listing = list_sources(sources, options, &filter, reporter).await?;
    let known_empty = listing.known_empty();

    // Split into objects we can reuse from the previous manifest and objects to read.
    let listed: HashSet<(u32, String)> = listing
        .candidates
        .iter()
        .map(|c| (c.source, c.relative.clone()))
        .collect();
    let mut reused = Vec::new();
    let mut to_read = Vec::new();
    let mut changed = Vec::new();
    let mut added = Vec::new();
    for c in listing.candidates {
        let old = previous.and_then(|p| p.find(c.source, &c.relative).map(|i| p.entry(i)));
        match old {
            Some(e) if same_version(&e, &c.meta) && e.kind == c.kind => reused.push(e),
            Some(_) => {
                changed.push(c.display.clone());
                to_read.push(c);
            }
            None => {
                if previous.is_some() {
                    added.push(c.display.clone());
                }
                to_read.push(c);
            }
        }
    }
    let removed = previous
        .map(|p| {
            (0..p.len())
                .filter(|&i| !listed.contains(&(p.source(i), p.path(i).to_string())))
                .map(|i| p.url(i))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();

    let total_bytes = to_read.iter().map(|c| c.meta.size).sum();
    reporter.start(to_read.len() as u64, total_bytes);
    let (scanned, mut bad) = scan_all(&listing.stores, to_read, options, reporter).await?;
    reporter.finish();

    let bytes_read = scanned.iter().map(|s| s.bytes_read).sum();
    let mut shards: Vec<(ShardEntry, Option<arrow_schema::Schema>)> = scanned
        .into_iter()
        .map(|s| (s.entry, Some(s.schema)))
        .collect();
    let unchanged = reused.len() as u64;
    let previous_schema = previous.map(|p| p.meta.schema.clone());
    shards.extend(reused.into_iter().map(|e| (e, None)));
    shards.sort_by(|a, b| (a.0.source, &a.0.path).cmp(&(b.0.source, &b.0.path)));

    let roots = &listing.roots;
    let displays: Vec<String> = shards
        .iter()
        .map(|(e, _)| display_in(&roots[e.source as usize], &e.path))
        .collect();
    let (schema, rejected) = reconcile(
        &shards,
        &displays,
        previous_schema.as_ref(),
        options.skip_bad,
    )?;
    // A part keeps the shards that its own reconciliation would reject: whether they are
    // rejected depends on shards in other parts, so `merge` decides, over all of them at once.
    // (Without `skip_bad` a conflict within a part is a conflict of the whole dataset, so
    // failing here is what the single build would do, only sooner.)
    if options.part.is_none() {
        for i in rejected.iter().rev() {
            let (e, _) = shards.remove(i.0);
            bad.push(BadObject {
                path: display_in(&roots[e.source as usize], &e.path),
                error: i.1.clone(),
            });
        }
    }
    bad.sort_by(|a, b| a.path.cmp(&b.path));
    if shards.is_empty() && (options.part.is_none() || known_empty) {
        return Err(Error::EmptySource {
            location: describe_sources(sources),
            filter: filter.describe(),
        });
    }
    let part_detail = match options.part {
        Some(_) => {
            let (schemas, schema_runs) = PartDetail::encode_schemas(
                shards
                    .iter()
                    .map(|(_, s)| s.clone().expect("a part reads every shard")),
            );
            Some(Box::new(PartDetail {
                options: options.record(),
                listings: listing.shared.clone(),
                listing: PartListing {
                    plan: listing.plan.clone(),
                    owned_units: listing.owned_units.clone(),
                    owned: listing.owned.clone(),
                    owned_listed: listing.owned_listed,
                    owned_ignored: listing.owned_ignored,
                    unit_failures: listing.unit_failures.clone(),
                    filter: filter.describe(),
                },
                bad_sources: listing.bad_sources.clone(),
                bad_objects: bad.clone(),
                schemas,
                schema_runs,
                objects_listed: listing.listed,
                objects_ignored: listing.ignored,
                bytes_read,
            }))
        }
        None => None,
    };
    let entries: Vec<ShardEntry> = shards.into_iter().map(|(e, _)| e).collect();
    let mut manifest =
        Manifest::from_entries(listing.roots.clone(), schema, entries, options.part)?;
    manifest.meta.part_detail = part_detail;
    let seconds = started.elapsed().as_secs_f64();
    let summary = BuildSummary {
        sources: sources.len(),
        objects_listed: listing.listed,
        objects_ignored: listing.ignored,
        shards: manifest.meta.totals.shards,
        samples: manifest.meta.totals.samples,
        bytes: manifest.meta.totals.bytes,
        bytes_read,
        bad,
        bad_sources: listing.bad_sources,
        part: options.part,
        listing: listing.stats.clone(),
        seconds,
        shards_per_s: manifest.meta.totals.shards as f64 / seconds.max(1e-9),
        fingerprint: manifest.meta.fingerprint.clone(),
        unchanged,
        added,
        removed,
        changed,
    };
    Ok((manifest, summary))
}

/// Whether a listed object is the version a manifest row describes: size and etag, or the
/// modification time where the store lists no etag (s3s-fs, some HTTP servers), to the second:
/// listings carry milliseconds but HEAD's `Last-Modified` header only seconds.
fn same_version(entry: &ShardEntry, seen: &ObjectMeta) -> bool {
    entry.size == seen.size
        && match &entry.etag {
            Some(etag) => seen.e_tag.as_ref() == Some(etag),
            // A listing without etags may be compared with a HEAD that has one: use the time.
            None => {
                entry.last_modified_ms.map(|ms| ms.div_euclid(1000))
                    == Some(seen.last_modified.timestamp())
            }
        }
}

/// Include/exclude globs and the format choice.
pub(crate) struct Filter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    format: FormatChoice,
    text: String,
}

impl Filter {
    fn new(options: &IndexOptions) -> Result<Self> {
        let set = |globs: &[String]| -> Result<Option<GlobSet>> {
            if globs.is_empty() {
                return Ok(None);
            }
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(Glob::new(g).map_err(|e| Error::Config(format!("bad glob {g:?}: {e}")))?);
            }
            b.build()
                .map(Some)
                .map_err(|e| Error::Config(format!("bad globs: {e}")))
        };
        let mut text = String::new();
        if !options.include.is_empty() {
            text.push_str(&format!(" (include {:?})", options.include));
        }
        if !options.exclude.is_empty() {
            text.push_str(&format!(" (exclude {:?})", options.exclude));
        }
        if let FormatChoice::Only(f) = options.format {
            text.push_str(&format!(" (format {f:?})"));
        }
        Ok(Self {
            include: set(&options.include)?,
            exclude: set(&options.exclude)?,
            format: options.format,
            text,
        })
    }

    pub(crate) fn kind_of(&self, relative: &str) -> Option<ShardKind> {
        if relative.is_empty() || is_ignored_name(relative) {
            return None;
        }
        if self.include.as_ref().is_some_and(|g| !g.is_match(relative)) {
            return None;
        }
        if self.exclude.as_ref().is_some_and(|g| g.is_match(relative)) {
            return None;
        }
        ShardKind::resolve(relative, self.format)
    }

    pub(crate) fn describe(&self) -> String {
        self.text.clone()
    }
}

/// Names the sources in a message: all of a few, the first of many.
pub(crate) fn describe_sources(sources: &[String]) -> String {
    match sources {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a}, {b}"),
        [first, rest @ ..] => format!("{first} and {} more sources", rest.len()),
    }
}

/// Refuses sources of which one lies inside another (or is given twice), by canonical URL:
/// they would list the same objects, and the dataset would count those shards twice.
pub(crate) fn check_overlaps(sources: &[String]) -> Result<()> {
    let urls = sources
        .iter()
        .map(|s| canonical_source(s))
        .collect::<Result<Vec<_>>>()?;
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, u) in urls.iter().enumerate() {
        if let Some(&j) = seen.get(u.as_str()) {
            return Err(Error::OverlappingSources {
                outer: sources[j].clone(),
                inner: sources[i].clone(),
            });
        }
        seen.insert(u, i);
    }
    // Walk each URL's ancestors: O(total path segments), fine for thousands of sources.
    for (i, u) in urls.iter().enumerate() {
        let mut cut = u.len();
        while let Some(slash) = u[..cut].rfind('/') {
            let ancestor = &u[..slash];
            if ancestor.ends_with('/') || !ancestor.contains("://") {
                break; // reached "scheme://" or "file://"
            }
            if let Some(&j) = seen.get(ancestor) {
                debug_assert!(is_within(u, ancestor));
                return Err(Error::OverlappingSources {
                    outer: sources[j].clone(),
                    inner: sources[i].clone(),
                });
            }
            cut = slash;
        }
    }
    Ok(())
}

async fn scan_all(
    stores: &[Option<Arc<dyn ObjectStore>>],
    candidates: Vec<Candidate>,
    options: &IndexOptions,
    reporter: &dyn Reporter,
) -> Result<(Vec<ScannedShard>, Vec<BadObject>)> {
    let attempts = options.attempts.max(1);
    let hint = Arc::new(FooterHint::new());
    let mut results = futures::stream::iter(candidates.into_iter().map(|c| {
        let store = stores[c.source as usize]
            .clone()
            .expect("candidates come from listed sources");
        let size = c.meta.size;
        let display = c.display.clone();
        let hint = hint.clone();
        let task = tokio::spawn(async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let r = scan::scan_object(
                    store.as_ref(),
                    &c.meta,
                    &c.relative,
                    &c.display,
                    c.kind,
                    &hint,
                )
                .await
                .map(|mut s| {
                    s.entry.source = c.source;
                    s
                });
                match r {
                    Err(e) if e.is_transient() && attempt < attempts => {
                        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    }
                    r => return r,
                }
            }
        });
        async move {
            let r = match task.await {
                Ok(r) => r,
                Err(join) => Err(Error::MalformedParquet {
                    path: display.clone(),
                    reason: format!("the decoder crashed ({join})"),
                }),
            };
            (display, size, r)
        }
    }))
    .buffer_unordered(options.concurrency);

    let mut scanned = Vec::new();
    let mut bad = Vec::new();
    while let Some((display, size, r)) = results.next().await {
        reporter.advance(size);
        match r {
            Ok(s) => scanned.push(s),
            Err(e) if options.skip_bad => bad.push(BadObject {
                path: display,
                error: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok((scanned, bad))
}

/// One shard whose stored description no longer matches the store.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub path: String,
    pub problem: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub shards: u64,
    pub deep: bool,
    pub ok: u64,
    pub mismatches: Vec<Mismatch>,
    pub seconds: f64,
}

/// Checks every shard of `manifest` against the store: size and etag, and with `deep` the
/// sample count obtained by decoding the whole shard.
pub async fn verify(
    manifest: &Manifest,
    options: &IndexOptions,
    deep: bool,
    reporter: &dyn Reporter,
) -> Result<VerifyReport> {
    let started = Instant::now();
    let mut locations = Vec::new();
    for s in &manifest.meta.sources {
        locations.push(Location::open(s, &options.options_for(s))?);
    }
    let total: u64 = manifest.sizes().iter().sum();
    reporter.start(manifest.len() as u64, total);
    let checks = (0..manifest.len()).map(|i| {
        let entry = manifest.entry(i);
        let loc = locations[entry.source as usize].clone();
        tokio::spawn(async move {
            let display = loc.display(&entry.path);
            let key = loc.key(&entry.path);
            let result = verify_one(&loc, &key, &entry, &display, deep).await;
            (display, entry.size, result)
        })
    });
    let mut stream = futures::stream::iter(checks).buffer_unordered(options.concurrency.max(1));
    let mut mismatches = Vec::new();
    let mut ok = 0;
    while let Some(joined) = stream.next().await {
        let (display, size, result) =
            joined.map_err(|e| Error::Config(format!("verify task failed: {e}")))?;
        reporter.advance(size);
        match result {
            Ok(()) => ok += 1,
            Err(e) => mismatches.push(Mismatch {
                path: display,
                problem: e.to_string(),
            }),
        }
    }
    reporter.finish();
    mismatches.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(VerifyReport {
        shards: manifest.len() as u64,
        deep,
        ok,
        mismatches,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn verify_one(
    loc: &Location,
    key: &object_store::path::Path,
    entry: &ShardEntry,
    display: &str,
    deep: bool,
) -> Result<()> {
    let meta = scan::head(loc.store.as_ref(), key, display).await?;
    let expected = ObjectMeta {
        location: key.clone(),
        last_modified: meta.last_modified,
        size: entry.size,
        e_tag: entry.etag.clone(),
        version: None,
    };
    scan::check_same_object(&expected, &meta, display)?;
    if !same_version(entry, &meta) {
        return Err(Error::ObjectChanged {
            path: display.into(),
            detail: "modified since it was indexed (the store gives no etag; its modification time changed)".into(),
        });
    }
    if !deep {
        return Ok(());
    }
    let counted = match entry.kind.format {
        ShardFormat::Parquet => {
            crate::deep::count_parquet_rows(loc.store.clone(), &expected, display).await?
        }
        _ => {
            scan::scan_object(
                loc.store.as_ref(),
                &expected,
                &entry.path,
                display,
                entry.kind,
                &FooterHint::new(),
            )
            .await?
            .entry
            .num_samples
        }
    };
    if counted != entry.num_samples {
        return Err(Error::ObjectChanged {
            path: display.into(),
            detail: format!(
                "decoded {counted} samples, the manifest says {}",
                entry.num_samples
            ),
        });
    }
    Ok(())
}
