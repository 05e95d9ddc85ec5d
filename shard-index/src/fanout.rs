//! Listing sources, and splitting the listing between the parts of a partitioned build.
//!
//! A single build lists each source root with a delimiter (the objects directly under it and
//! its first-level prefixes), then each first-level prefix recursively, page by page, many at
//! once: object stores list one prefix sequentially, so fanning out is what makes a large source
//! list in parallel.
//!
//! A part (`--part I/N`) splits the listing itself, by prefix fan-out:
//!
//! 1. **The walk.** Every part walks all sources breadth-first with delimiter listings, level by
//!    level: level 0 lists each source root, level `d` lists every prefix found at level `d - 1`.
//!    Objects found directly at a walked level are *shared-level objects*: every part sees them
//!    and keeps its 1/N by [`stable_hash`] of the key, as every object was kept before.
//! 2. **The frontier** is the set of prefixes found at the level just listed, *over all
//!    sources*: a dataset of a thousand buckets with ten prefixes each splits at the first
//!    level, where one counted per source never would. The walk stops when the frontier holds
//!    at least [`UNITS_PER_PART`]` × N` prefixes (enough for each part to get several), when it
//!    is empty, or at depth [`MAX_DEPTH`].
//! 3. **Listing units.** A frontier that is large enough becomes the listing units. They are
//!    ordered by the stable hash of their URL and dealt round-robin, so each part owns ⌊U/N⌋ or
//!    ⌈U/N⌉ of them (a hash per unit, modulo N, would leave the busiest of 16 parts with about
//!    1.7× the mean number of units at 8 per part). Only the owner lists a unit, recursively and
//!    page by page, and keeps every object under it.
//! 4. **Fallback.** A frontier still too small at [`MAX_DEPTH`] (a flat layout: a few prefixes
//!    of millions of objects) is listed in full by every part, which keeps 1/N by key hash —
//!    what every part did before, so the split is never worse than no split, and balanced by key
//!    hash where the layout cannot be split.
//!
//! Every decision is a function of the walk's result, which every part computes alike, so
//! parts agree on the plan without talking to each other. Each part records the plan's
//! [`ListingPlan`] (scheme, depth, per-source unit counts, fallback prefixes and a digest of the
//! sorted units) and the units it owns; `merge` refuses parts whose plans differ (the store
//! changed between two parts' walks) and checks that the owned units are exactly the plan,
//! dealt as the rule says.
//!
//! The caveat: parts are balanced by number of units, not of objects. Prefixes of very
//! different sizes give parts of different sizes (a unit is listed, and its shards described,
//! by one part); `--no-split-listing` restores listing everything in every part.

use crate::error::{Error, Result};
use crate::indexer::{BadSource, Candidate, Filter, IndexOptions, Reporter};
use crate::manifest::PartInfo;
use crate::parts::{display_in, stable_hash, SourceListing};
use crate::scan;
use crate::storage::{canonical_source, Location};
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Listing units the walk wants per part before it stops descending: with fewer, dealing them
/// out leaves parts with visibly different amounts of work even when prefixes are alike.
pub const UNITS_PER_PART: u64 = 8;

/// The deepest level the walk lists. Every level costs every part one delimiter LIST per
/// prefix; three levels reach the `dataset/split/shard-group/` layouts seen in practice.
pub const MAX_DEPTH: u32 = 3;

/// Keys per LIST page (S3's ListObjectsV2 default and maximum; GCS and Azure page alike): what
/// [`ListStats::list_requests`] counts in.
const PAGE: u64 = 1000;

/// How a partitioned build divided the listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListingScheme {
    /// Every part lists everything and keeps 1/N by key hash (`--no-split-listing`).
    #[default]
    KeyHash,
    /// Prefix fan-out: units listed by one part each, the rest by key hash.
    PrefixFanout,
}

/// A prefix of the plan: its source and its path relative to the source root (no trailing
/// slash).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PlanPrefix {
    pub source: u32,
    pub prefix: String,
}

/// What every part of a build must agree on about the listing (in `shardstream.part_detail`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingPlan {
    pub scheme: ListingScheme,
    /// Units the walk wanted before it stopped ([`UNITS_PER_PART`] × N).
    pub fanout_min: u64,
    pub max_depth: u32,
    /// The level of the final frontier: units and fallback prefixes have this many path
    /// segments below their source root. Objects with fewer lie at shared levels.
    pub depth: u32,
    /// Listing units in all, and per source (in source order).
    pub units: u64,
    pub source_units: Vec<u64>,
    /// Prefixes every part lists in full and files by key hash (a frontier too small at
    /// [`MAX_DEPTH`], or everything below level 0 with `--no-split-listing`).
    pub fallback: Vec<PlanPrefix>,
    /// [`plan_digest`] of the units and fallback prefixes.
    pub digest: u64,
}

/// What listing cost and how it was split, for summaries (`--json`) and the listing bench.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListStats {
    /// `None` for a single build.
    pub scheme: Option<ListingScheme>,
    /// LIST requests this process made, counted as pages of 1,000 keys and prefixes.
    pub list_requests: u64,
    /// Of those, the delimiter listings of the walk (levels 0 to depth − 1), made by every part.
    pub walk_requests: u64,
    pub depth: u32,
    pub units_total: u64,
    pub units_owned: u64,
    /// Sources listed in full by every part (no unit): flat layouts, and all of them without
    /// split listing.
    pub fallback_sources: u64,
    /// Objects this process listed, and of those the ones under its own units.
    pub objects_listed: u64,
    pub objects_owned: u64,
}

/// The owner of each unit (by index into `urls`): units ordered by (stable hash of URL, URL),
/// then dealt round-robin over `count` parts.
pub fn assign_units(urls: &[String], count: u32) -> Vec<u32> {
    let mut order: Vec<usize> = (0..urls.len()).collect();
    order.sort_by_cached_key(|&i| (stable_hash(urls[i].as_bytes()), urls[i].clone()));
    let mut owners = vec![0; urls.len()];
    for (rank, &i) in order.iter().enumerate() {
        owners[i] = (rank as u64 % u64::from(count.max(1))) as u32;
    }
    owners
}

/// A digest of a plan's units and fallback prefixes (each list in any order) and its depth:
/// parts whose walks saw the same prefixes have the same digest.
pub fn plan_digest(depth: u32, units: &[PlanPrefix], fallback: &[PlanPrefix]) -> u64 {
    let mut units: Vec<&PlanPrefix> = units.iter().collect();
    units.sort();
    let mut fallback: Vec<&PlanPrefix> = fallback.iter().collect();
    fallback.sort();
    let mut bytes = depth.to_le_bytes().to_vec();
    for (tag, list) in [(b'u', units), (b'f', fallback)] {
        for p in list {
            bytes.push(tag);
            bytes.extend_from_slice(&p.source.to_le_bytes());
            bytes.extend_from_slice(p.prefix.as_bytes());
            bytes.push(0);
        }
    }
    stable_hash(&bytes)
}

/// The first `depth` segments of `path` when the object lies below them (inside a prefix of
/// the final frontier), or `None` for an object at a shared level.
pub fn prefix_at_depth(path: &str, depth: u32) -> Option<&str> {
    if depth == 0 {
        return None;
    }
    let mut seen = 0;
    for (i, b) in path.bytes().enumerate() {
        if b == b'/' {
            seen += 1;
            if seen == depth {
                return Some(&path[..i]);
            }
        }
    }
    None
}

fn pages(entries: usize) -> u64 {
    (entries as u64).div_ceil(PAGE).max(1)
}

/// Whether an object is one of a part's by key hash (shared levels, fallback prefixes) or by
/// lying under one of its units.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    ByKeyHash,
    All,
}

/// What listing one source (or one prefix of it) found; partial results add up.
#[derive(Default)]
pub(crate) struct Found {
    pub candidates: Vec<Candidate>,
    /// Candidates every part sees (shared levels and fallback prefixes).
    pub shared: SourceListing,
    /// Candidates under this process's own units.
    pub owned: SourceListing,
    pub listed: u64,
    pub ignored: u64,
    pub owned_listed: u64,
    pub owned_ignored: u64,
    pub requests: u64,
}

impl Found {
    fn add(&mut self, other: Found) {
        self.candidates.extend(other.candidates);
        self.shared.add(&other.shared);
        self.owned.add(&other.owned);
        self.listed += other.listed;
        self.ignored += other.ignored;
        self.owned_listed += other.owned_listed;
        self.owned_ignored += other.owned_ignored;
        self.requests += other.requests;
    }
}

impl SourceListing {
    pub(crate) fn add(&mut self, other: &SourceListing) {
        self.candidates += other.candidates;
        self.digest = self.digest.wrapping_add(other.digest);
    }
}

/// Files one listed object: ignored, another part's, or a candidate of this build.
struct Sorter<'a> {
    source: u32,
    root: &'a Location,
    filter: &'a Filter,
    part: Option<PartInfo>,
}

impl Sorter<'_> {
    fn take(&self, found: &mut Found, meta: ObjectMeta, keep: Keep) {
        found.listed += 1;
        if keep == Keep::All {
            found.owned_listed += 1;
        }
        let relative = self.root.relative(&meta.location).to_string();
        let Some(kind) = self.filter.kind_of(&relative) else {
            found.ignored += 1;
            if keep == Keep::All {
                found.owned_ignored += 1;
            }
            return;
        };
        // An order-independent digest of what was seen, so `merge` can check that the parts
        // that saw the same objects saw the same versions of them.
        let mut id = Vec::with_capacity(relative.len() + 48);
        id.extend_from_slice(relative.as_bytes());
        id.push(0);
        id.extend_from_slice(&meta.size.to_le_bytes());
        match &meta.e_tag {
            Some(etag) => id.extend_from_slice(etag.as_bytes()),
            None => id.extend_from_slice(&meta.last_modified.timestamp_millis().to_le_bytes()),
        }
        let seen = SourceListing {
            candidates: 1,
            digest: stable_hash(&id),
        };
        let display = self.root.display(&relative);
        match keep {
            Keep::All => found.owned.add(&seen),
            Keep::ByKeyHash => {
                found.shared.add(&seen);
                if self.part.is_some_and(|p| !p.selects(&display)) {
                    return;
                }
            }
        }
        found.candidates.push(Candidate {
            source: self.source,
            display,
            relative,
            meta,
            kind,
        });
    }
}

/// Everything listing found, in source order.
pub(crate) struct Listing {
    /// Root URL of each source, as the manifest records it.
    pub roots: Vec<String>,
    /// The store of each source (`None` for a source skipped as bad).
    pub stores: Vec<Option<Arc<dyn ObjectStore>>>,
    /// The objects this build will read, sorted by (source, path).
    pub candidates: Vec<Candidate>,
    /// Per source: candidates every part sees, and those under this part's units.
    pub shared: Vec<SourceListing>,
    pub owned: Vec<SourceListing>,
    pub bad_sources: Vec<BadSource>,
    /// Sources this part dropped because one of its units failed to list (`--skip-bad`):
    /// `merge` drops them from every part, as a single build would have skipped them.
    pub unit_failures: Vec<BadSource>,
    pub listed: u64,
    pub ignored: u64,
    pub owned_listed: u64,
    pub owned_ignored: u64,
    pub plan: ListingPlan,
    pub owned_units: Vec<PlanPrefix>,
    pub stats: ListStats,
}

impl Listing {
    /// Whether the whole build is known to hold no shard (no part can find more).
    pub fn known_empty(&self) -> bool {
        self.plan.units == 0
            && self
                .shared
                .iter()
                .chain(&self.owned)
                .all(|l| l.candidates == 0)
    }
}

/// How far to walk, from the options.
#[derive(Clone, Copy)]
struct Walk {
    part: Option<PartInfo>,
    scheme: ListingScheme,
    fanout_min: u64,
    max_depth: u32,
}

impl Walk {
    fn of(options: &IndexOptions) -> Self {
        match options.part {
            // One process owns everything: stop at the first level, as many prefixes as exist
            // are listed in parallel.
            None => Self {
                part: None,
                scheme: ListingScheme::PrefixFanout,
                fanout_min: 0,
                max_depth: 1,
            },
            Some(p) if options.split_listing => Self {
                part: Some(p),
                scheme: ListingScheme::PrefixFanout,
                fanout_min: UNITS_PER_PART * u64::from(p.count),
                max_depth: MAX_DEPTH,
            },
            // Never enough units: the first-level prefixes fall back to key hash.
            Some(p) => Self {
                part: Some(p),
                scheme: ListingScheme::KeyHash,
                fanout_min: u64::MAX,
                max_depth: 1,
            },
        }
    }
}

/// One source during the walk.
struct Walking {
    loc: Location,
    found: Found,
    /// Listing failed where every part lists (the whole source is bad).
    failure: Option<Error>,
    /// One of this part's own units failed to list.
    unit_failure: Option<Error>,
}

/// Lists every source, `options.list_concurrency` LIST requests at a time, splitting the
/// listing between parts as the module docs describe.
pub(crate) async fn list_sources(
    sources: &[String],
    options: &IndexOptions,
    filter: &Filter,
    reporter: &dyn Reporter,
) -> Result<Listing> {
    crate::indexer::check_overlaps(sources)?;
    let walk = Walk::of(options);
    let semaphore = Semaphore::new(options.list_concurrency);
    let lc = options.list_concurrency;

    // Level 0: every source root.
    let mut roots: Vec<(usize, Result<Root>)> =
        futures::stream::iter(sources.iter().enumerate().map(|(i, raw)| {
            let semaphore = &semaphore;
            async move {
                let r = list_root(i as u32, raw, options, filter, walk.part, semaphore).await;
                (i, r)
            }
        }))
        .buffer_unordered(lc)
        .collect()
        .await;
    roots.sort_by_key(|(i, _)| *i);
    let mut states: Vec<Result<Walking>> = Vec::with_capacity(sources.len());
    let mut frontier: Vec<(u32, StorePath)> = Vec::new();
    let mut walk_requests = 0;
    for (i, r) in roots {
        states.push(r.map(|(loc, found, prefixes)| {
            reporter.listed(found.listed);
            walk_requests += found.requests;
            frontier.extend(prefixes.into_iter().map(|p| (i as u32, p)));
            Walking {
                loc,
                found,
                failure: None,
                unit_failure: None,
            }
        }));
    }

    // Levels 1.. : descend while the frontier is non-empty and too small to deal out.
    let mut depth = 1;
    let (units, fallback) = loop {
        if frontier.is_empty() || frontier.len() as u64 >= walk.fanout_min {
            break (frontier, Vec::new());
        }
        if depth >= walk.max_depth {
            break (Vec::new(), frontier);
        }
        let mut level: Vec<(usize, _)> =
            futures::stream::iter(frontier.iter().enumerate().map(|(k, (s, prefix))| {
                let store = match &states[*s as usize] {
                    Ok(w) => Some(w.loc.store.clone()),
                    Err(_) => None,
                };
                let semaphore = &semaphore;
                async move {
                    let store = store.expect("the frontier holds listed sources only");
                    let _permit = semaphore.acquire().await.expect("never closed");
                    (k, store.list_with_delimiter(Some(prefix)).await)
                }
            }))
            .buffer_unordered(lc)
            .collect()
            .await;
        level.sort_by_key(|(k, _)| *k);
        let mut next = Vec::new();
        for (k, result) in level {
            let (s, prefix) = &frontier[k];
            let Ok(w) = &mut states[*s as usize] else {
                continue;
            };
            if w.failure.is_some() {
                continue;
            }
            match result {
                Ok(l) => {
                    let mut found = Found {
                        requests: pages(l.objects.len() + l.common_prefixes.len()),
                        ..Found::default()
                    };
                    let sorter = Sorter {
                        source: *s,
                        root: &w.loc,
                        filter,
                        part: walk.part,
                    };
                    for meta in l.objects {
                        sorter.take(&mut found, meta, Keep::ByKeyHash);
                    }
                    reporter.listed(found.listed);
                    walk_requests += found.requests;
                    w.found.add(found);
                    next.extend(l.common_prefixes.into_iter().map(|p| (*s, p)));
                }
                Err(e) => {
                    let url = w.loc.display(w.loc.relative(prefix));
                    w.failure = Some(Error::storage(url, e));
                }
            }
        }
        // A source that failed at this level lists nothing more, in any part.
        next.retain(|(s, _)| matches!(&states[*s as usize], Ok(w) if w.failure.is_none()));
        frontier = next;
        depth += 1;
    };

    // The plan, and this part's share of the units.
    let relative = |(s, p): &(u32, StorePath)| -> PlanPrefix {
        let w = states[*s as usize].as_ref().expect("listed source");
        PlanPrefix {
            source: *s,
            prefix: w.loc.relative(p).trim_end_matches('/').to_string(),
        }
    };
    let unit_prefixes: Vec<PlanPrefix> = units.iter().map(relative).collect();
    let fallback_prefixes: Vec<PlanPrefix> = fallback.iter().map(relative).collect();
    let unit_urls: Vec<String> = unit_prefixes
        .iter()
        .map(|u| {
            let w = states[u.source as usize].as_ref().expect("listed source");
            display_in(&w.loc.url, &u.prefix)
        })
        .collect();
    let (index, count) = walk.part.map_or((0, 1), |p| (p.index, p.count));
    let owners = assign_units(&unit_urls, count);
    let mut source_units = vec![0u64; sources.len()];
    for u in &unit_prefixes {
        source_units[u.source as usize] += 1;
    }
    let plan = ListingPlan {
        scheme: walk.scheme,
        fanout_min: walk.fanout_min,
        max_depth: walk.max_depth,
        depth,
        units: unit_prefixes.len() as u64,
        source_units,
        digest: plan_digest(depth, &unit_prefixes, &fallback_prefixes),
        fallback: fallback_prefixes,
    };

    // Own units (everything under them) and fallback prefixes (by key hash), page by page.
    let mut jobs: Vec<(u32, &StorePath, Keep, Option<usize>)> = Vec::new();
    let mut owned_units = Vec::new();
    for (k, (s, p)) in units.iter().enumerate() {
        if owners[k] == index {
            jobs.push((*s, p, Keep::All, Some(k)));
            owned_units.push(unit_prefixes[k].clone());
        }
    }
    jobs.extend(fallback.iter().map(|(s, p)| (*s, p, Keep::ByKeyHash, None)));
    let mut listed: Vec<(usize, std::result::Result<Found, object_store::Error>)> = {
        let states = &states;
        futures::stream::iter(jobs.iter().enumerate().map(|(j, (s, prefix, keep, _))| {
            let semaphore = &semaphore;
            async move {
                let w = states[*s as usize].as_ref().expect("listed source");
                let sorter = Sorter {
                    source: *s,
                    root: &w.loc,
                    filter,
                    part: walk.part,
                };
                let store = w.loc.store.clone();
                let r = list_prefix(store.as_ref(), prefix, &sorter, *keep, semaphore, reporter);
                (j, r.await)
            }
        }))
        .buffer_unordered(lc)
        .collect()
        .await
    };
    listed.sort_by_key(|(j, _)| *j);
    for (j, result) in listed {
        let (s, prefix, _, unit) = jobs[j];
        let Ok(w) = &mut states[s as usize] else {
            continue;
        };
        match result {
            Ok(found) => w.found.add(found),
            Err(e) => {
                let url = w.loc.display(w.loc.relative(prefix));
                let error = Error::storage(url, e);
                // Only this part lists its units: a failure there is this part's alone.
                if unit.is_some() && walk.part.is_some() {
                    w.unit_failure.get_or_insert(error);
                } else {
                    w.failure.get_or_insert(error);
                }
            }
        }
    }

    let mut stats = ListStats {
        scheme: walk.part.map(|_| walk.scheme),
        walk_requests,
        depth,
        units_total: plan.units,
        units_owned: owned_units.len() as u64,
        ..ListStats::default()
    };
    let mut listing = Listing {
        roots: Vec::with_capacity(sources.len()),
        stores: Vec::with_capacity(sources.len()),
        candidates: Vec::new(),
        shared: Vec::with_capacity(sources.len()),
        owned: Vec::with_capacity(sources.len()),
        bad_sources: Vec::new(),
        unit_failures: Vec::new(),
        listed: 0,
        ignored: 0,
        owned_listed: 0,
        owned_ignored: 0,
        plan,
        owned_units,
        stats: ListStats::default(),
    };
    for (i, state) in states.into_iter().enumerate() {
        let raw = &sources[i];
        let (url, error) = match state {
            Ok(w) => {
                stats.list_requests += w.found.requests;
                listing.listed += w.found.listed;
                listing.ignored += w.found.ignored;
                if let Some(e) = w.failure {
                    (w.loc.url, e)
                } else {
                    let has_units = listing.plan.source_units[i] > 0;
                    if !has_units {
                        stats.fallback_sources += 1;
                    }
                    // With units in other parts, whether the source holds a shard is only known
                    // to `merge`, which sums the parts' counts.
                    let known = walk.part.is_none() || !has_units;
                    let total = w.found.shared.candidates + w.found.owned.candidates;
                    if known && total == 0 {
                        let empty = Error::EmptySource {
                            location: w.loc.url.clone(),
                            filter: filter.describe(),
                        };
                        (w.loc.url, empty)
                    } else {
                        listing.roots.push(w.loc.url.clone());
                        listing.stores.push(Some(w.loc.store.clone()));
                        listing.shared.push(w.found.shared);
                        listing.owned.push(w.found.owned);
                        listing.owned_listed += w.found.owned_listed;
                        listing.owned_ignored += w.found.owned_ignored;
                        match w.unit_failure {
                            Some(e) if !options.skip_bad => return Err(e),
                            Some(e) => listing.unit_failures.push(BadSource {
                                source: w.loc.url,
                                error: e.to_string(),
                            }),
                            None => listing.candidates.extend(w.found.candidates),
                        }
                        continue;
                    }
                }
            }
            // A malformed URL or option is a mistake in the command, never something to skip.
            Err(e @ (Error::Config(_) | Error::InvalidLocation { .. })) => return Err(e),
            Err(e) => (canonical_source(raw)?, e),
        };
        if !options.skip_bad {
            // The error keeps its own type (permission, not found, storage...) and names the
            // source's URL; `--skip-bad` is the way past it.
            return Err(error);
        }
        listing.bad_sources.push(BadSource {
            source: url.clone(),
            error: error.to_string(),
        });
        listing.roots.push(url);
        listing.stores.push(None);
        listing.shared.push(SourceListing::default());
        listing.owned.push(SourceListing::default());
    }
    stats.objects_listed = listing.listed;
    stats.objects_owned = listing.owned_listed;
    listing.stats = stats;
    // Deterministic work order (and so deterministic "first error" at concurrency 1).
    listing
        .candidates
        .sort_by(|a, b| (a.source, &a.relative).cmp(&(b.source, &b.relative)));
    Ok(listing)
}

/// A source root after level 0: where it is, what lies directly under it, its prefixes.
type Root = (Location, Found, Vec<StorePath>);

/// Level 0 of one source: the objects directly under its root and its first-level prefixes.
/// A source naming one object becomes that object under its parent.
async fn list_root(
    index: u32,
    raw: &str,
    options: &IndexOptions,
    filter: &Filter,
    part: Option<PartInfo>,
    semaphore: &Semaphore,
) -> Result<Root> {
    let url = canonical_source(raw)?;
    let loc = Location::open(raw, &options.options_for(&url))?;
    let store = loc.store.clone();
    let root = (!loc.prefix.as_ref().is_empty()).then(|| loc.prefix.clone());
    let mut found = Found::default();
    let top = {
        let _permit = semaphore.acquire().await.expect("never closed");
        store.list_with_delimiter(root.as_ref()).await
    };
    let prefixes = {
        let sorter = Sorter {
            source: index,
            root: &loc,
            filter,
            part,
        };
        match top {
            Ok(top) => {
                found.requests += pages(top.objects.len() + top.common_prefixes.len());
                for meta in top.objects {
                    sorter.take(&mut found, meta, Keep::ByKeyHash);
                }
                top.common_prefixes
            }
            Err(e) => {
                found.requests += 1;
                // A local path that does not exist, or is a file, does not list: let the
                // single-object and empty-source logic below explain.
                let missing = matches!(e, object_store::Error::NotFound { .. });
                let is_object = match &root {
                    Some(r) if !missing => scan::head(store.as_ref(), r, &loc.url).await.is_ok(),
                    _ => false,
                };
                if !missing && !is_object {
                    return Err(Error::storage(loc.url.clone(), e));
                }
                Vec::new()
            }
        }
    };
    if found.listed == 0 && prefixes.is_empty() {
        if let Some(root) = &root {
            // The source may name one object rather than a prefix.
            if let Ok(meta) = scan::head(store.as_ref(), root, &loc.url).await {
                let parent = loc.parent();
                let sorter = Sorter {
                    source: index,
                    root: &parent,
                    filter,
                    part,
                };
                sorter.take(&mut found, meta, Keep::ByKeyHash);
                return Ok((parent, found, Vec::new()));
            }
        }
    }
    Ok((loc, found, prefixes))
}

/// Lists everything under `prefix`, page by page, keeping only what `sorter` keeps.
async fn list_prefix(
    store: &dyn ObjectStore,
    prefix: &StorePath,
    sorter: &Sorter<'_>,
    keep: Keep,
    semaphore: &Semaphore,
    reporter: &dyn Reporter,
) -> std::result::Result<Found, object_store::Error> {
    let _permit = semaphore.acquire().await.expect("never closed");
    let mut found = Found::default();
    let mut pages = store.list(Some(prefix));
    let mut since_report = 0u64;
    let mut objects = 0usize;
    while let Some(meta) = pages.next().await {
        sorter.take(&mut found, meta?, keep);
        objects += 1;
        since_report += 1;
        if since_report == 1000 {
            reporter.listed(since_report);
            since_report = 0;
        }
    }
    reporter.listed(since_report);
    found.requests = self::pages(objects);
    Ok(found)
}

/// The owned units of every part together, checked against the plan: every unit owned once,
/// by the part the dealing rule gives it. `parts` is `(display name, part index, owned)`.
/// Returns each unit's owner.
pub(crate) fn check_owned_units(
    plan: &ListingPlan,
    roots: &[String],
    count: u32,
    parts: &[(&str, u32, &[PlanPrefix])],
) -> std::result::Result<std::collections::HashMap<PlanPrefix, u32>, (String, String)> {
    let mut owner_of: std::collections::HashMap<PlanPrefix, (u32, &str)> =
        std::collections::HashMap::new();
    for &(path, index, owned) in parts {
        for u in owned {
            if let Some((_, other)) = owner_of.insert(u.clone(), (index, path)) {
                let url = display_in(&roots[u.source as usize], &u.prefix);
                return Err((
                    path.to_string(),
                    format!("it listed unit {url}, which {other} also listed"),
                ));
            }
        }
    }
    let units: Vec<PlanPrefix> = owner_of
        .keys()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let digest = plan_digest(plan.depth, &units, &plan.fallback);
    if units.len() as u64 != plan.units || digest != plan.digest {
        let name = parts.first().map_or("", |p| p.0);
        return Err((
            name.to_string(),
            format!(
                "the parts' own listing units ({} together) are not the {} units of the plan: a part's metadata was altered or a part is missing",
                units.len(),
                plan.units
            ),
        ));
    }
    let urls: Vec<String> = units
        .iter()
        .map(|u| display_in(&roots[u.source as usize], &u.prefix))
        .collect();
    let owners = assign_units(&urls, count);
    let mut out = std::collections::HashMap::with_capacity(units.len());
    for ((u, url), owner) in units.into_iter().zip(&urls).zip(owners) {
        let (listed_by, path) = owner_of[&u];
        if listed_by != owner {
            return Err((
                path.to_string(),
                format!("it listed unit {url}, which belongs to part {owner}/{count}"),
            ));
        }
        out.insert(u, owner);
    }
    Ok(out)
}

/// What differs between two parts' listing plans, for the message refusing them.
pub(crate) fn plan_difference(
    a: &ListingPlan,
    b: &ListingPlan,
    first: &str,
    sources: &[String],
) -> String {
    let rebuild = "the store changed between the parts' listing walks; rebuild the parts";
    if (a.scheme, a.fanout_min, a.max_depth) != (b.scheme, b.fanout_min, b.max_depth) {
        return format!(
            "it split the listing as {:?} (fan-out {}, depth {}) but {first} as {:?} (fan-out {}, depth {}): use the same --no-split-listing for every part",
            a.scheme, a.fanout_min, a.max_depth, b.scheme, b.fanout_min, b.max_depth
        );
    }
    if a.depth != b.depth {
        return format!(
            "its listing walk stopped at depth {} but {first}'s at {}: {rebuild}",
            a.depth, b.depth
        );
    }
    let name = |i: usize| sources.get(i).map_or("a source", |s| s.as_str());
    if let Some(i) = (0..a.source_units.len().max(b.source_units.len()))
        .find(|&i| a.source_units.get(i) != b.source_units.get(i))
    {
        return format!(
            "its walk found {} listing units in {} but {first}'s found {}: {rebuild}",
            a.source_units.get(i).copied().unwrap_or(0),
            name(i),
            b.source_units.get(i).copied().unwrap_or(0)
        );
    }
    if a.fallback != b.fallback {
        let differs = a
            .fallback
            .iter()
            .zip(&b.fallback)
            .find(|(x, y)| x != y)
            .or(a.fallback.first().zip(b.fallback.first()))
            .map_or(0, |(x, _)| x.source as usize);
        return format!(
            "its walk found different prefixes to list in full in {} than {first}'s ({} vs {}): {rebuild}",
            name(differs),
            a.fallback.len(),
            b.fallback.len()
        );
    }
    format!(
        "its walk found as many listing units as {first}'s in every source, but not the same ones (plan digest {:016x} vs {:016x}): {rebuild}",
        a.digest, b.digest
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_dealt_evenly_and_deterministically() {
        for (units, n) in [(128usize, 16u32), (130, 16), (7, 3), (1000, 64), (5, 8)] {
            let urls: Vec<String> = (0..units).map(|i| format!("s3://b/data/p{i:04}")).collect();
            let owners = assign_units(&urls, n);
            let mut counts = vec![0usize; n as usize];
            for &o in &owners {
                counts[o as usize] += 1;
            }
            let (lo, hi) = (units / n as usize, units.div_ceil(n as usize));
            assert!(counts.iter().all(|&c| c == lo || c == hi), "{counts:?}");
            // Any order of the same units gives the same owners.
            let mut rev = urls.clone();
            rev.reverse();
            let mut back = assign_units(&rev, n);
            back.reverse();
            assert_eq!(back, owners);
        }
    }

    #[test]
    fn plan_digest_ignores_order_and_sees_changes() {
        let p = |s: u32, x: &str| PlanPrefix {
            source: s,
            prefix: x.into(),
        };
        let a = vec![p(0, "a"), p(0, "b"), p(1, "a")];
        let b = vec![p(1, "a"), p(0, "b"), p(0, "a")];
        assert_eq!(plan_digest(1, &a, &[]), plan_digest(1, &b, &[]));
        assert_ne!(plan_digest(1, &a, &[]), plan_digest(2, &a, &[]));
        assert_ne!(plan_digest(1, &a, &[]), plan_digest(1, &a[..2], &[]));
        assert_ne!(plan_digest(1, &a, &[]), plan_digest(1, &[], &a));
        // Unit names cannot run into each other.
        assert_ne!(
            plan_digest(1, &[p(0, "ab"), p(0, "c")], &[]),
            plan_digest(1, &[p(0, "a"), p(0, "bc")], &[])
        );
    }

    #[test]
    fn prefixes_at_depth() {
        assert_eq!(prefix_at_depth("a/b/c.parquet", 1), Some("a"));
        assert_eq!(prefix_at_depth("a/b/c.parquet", 2), Some("a/b"));
        assert_eq!(prefix_at_depth("a/b/c.parquet", 3), None);
        assert_eq!(prefix_at_depth("c.parquet", 1), None);
        assert_eq!(prefix_at_depth("a/b/c.parquet", 0), None);
    }
}
