//! Partitioned builds (`shard-index build --part I/N`) and merging their partial manifests.
//!
//! A dataset of millions of shards is indexed by N independent processes, started by any job
//! launcher (a Slurm array, a Kubernetes indexed Job, Ray tasks), with no coordinator, and
//! [`merge`] combines the N partial manifests into exactly the bytes one process would have
//! written.
//!
//! Which objects a part holds: listing is split by prefix fan-out ([`crate::fanout`]). All
//! parts walk the sources' top levels alike and agree on a plan of *listing units* (prefixes);
//! each unit is listed by one part only, which keeps every object under it. Objects at the
//! levels every part walks, and layouts too flat to split (fallback), are split by the
//! [`stable_hash`] of their full URL instead: part `I` keeps those whose hash is `I` modulo
//! `N`. So describing shards (the footer reads and decoding that make up nearly all of the
//! work) is always split N ways, and listing is split too where the layout has enough
//! prefixes; `--no-split-listing` keeps the older scheme, where every part lists everything and
//! keeps its 1/N by key hash.
//!
//! Byte-identical merge: the sample schema of a dataset depends on the order in which shard
//! schemas are reconciled (JSONL field order, which shard counts as "first", which shards
//! `--skip-bad` rejects), so a part does not reduce its shards' schemas to one. It keeps every
//! shard it described, with each shard's own schema (deduplicated, run-length encoded per row in
//! [`PartDetail`]), and [`merge`] reconciles the union in manifest order, exactly as a single
//! build does. Whether a source holds any shard (a single build fails, or with `--skip-bad`
//! skips, one that holds none) is decided by `merge` too when the source's units are spread
//! over the parts, from the sum of the parts' counts.
//!
//! Checks: parts record how each source listed where every part lists (object count and an
//! order-independent digest of names, sizes and etags), the listing plan (scheme, depth, units
//! per source, fallback prefixes, a digest of the units) and the units each listed. Parts that
//! saw different listings or plans, came from different source lists, options or builder
//! versions, overlap (a shard or a unit in two parts), or hold a row that is not theirs, are
//! refused with a message naming which.

use crate::error::{Error, Result};
use crate::fanout::{check_owned_units, plan_difference, prefix_at_depth, ListingPlan, PlanPrefix};
use crate::indexer::{BadObject, BadSource, Reporter};
use crate::manifest::{Manifest, PartInfo, ShardEntry};
use crate::schema::reconcile;
use crate::storage::StorageOptions;
use arrow_schema::Schema;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

/// A 64-bit hash that never changes between builds, platforms or Rust versions (FNV-1a, then a
/// SplitMix64 finaliser so that `hash % N` is balanced even for keys differing in one digit).
/// Part assignment depends on it: changing it is a change of the manifest format.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl PartInfo {
    /// Parses `I/N` (0-based `I`, as Slurm's `SLURM_ARRAY_TASK_ID` and Kubernetes'
    /// `JOB_COMPLETION_INDEX` count).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "--part {text:?}: expected I/N with 0 <= I < N, e.g. 0/16"
            ))
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// Whether the object at `url` (its full URL: source root + relative path) belongs here.
    pub fn selects(&self, url: &str) -> bool {
        stable_hash(url.as_bytes()) % u64::from(self.count) == u64::from(self.index)
    }
}

/// How one source listed (at the levels every part lists, or under one part's own units).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceListing {
    /// Objects that look like shards (after filters).
    pub candidates: u64,
    /// Sum of a stable hash of each candidate's (path, size, etag or time): independent of
    /// listing order, different when the store changed between two parts' listings.
    pub digest: u64,
}

/// The build options that decide which objects become rows and how they are described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    pub format: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub skip_bad: bool,
}

/// `(schema index, rows)` runs, in row order.
pub type SchemaRuns = Vec<(u32, u64)>;

/// What merging needs from a partial manifest beyond its rows (metadata
/// `shardstream.part_detail`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartDetail {
    pub options: BuildRecord,
    /// One per source, in source order: what every part lists alike (shared levels of the
    /// walk and fallback prefixes; everything without split listing).
    pub listings: Vec<SourceListing>,
    /// How the listing was split, and this part's share of it.
    pub listing: PartListing,
    /// Sources skipped (`--skip-bad`): unreachable or empty.
    pub bad_sources: Vec<BadSource>,
    /// This part's objects that could not be described (`--skip-bad`).
    pub bad_objects: Vec<BadObject>,
    /// The distinct schemas of this part's shards.
    pub schemas: Vec<Schema>,
    /// Index into `schemas` of each row, run-length encoded: `(schema, rows)` in row order.
    pub schema_runs: SchemaRuns,
    /// Objects this part listed (shared levels and its own units), and of those not shards.
    pub objects_listed: u64,
    pub objects_ignored: u64,
    pub bytes_read: u64,
}

/// A part's side of the split listing ([`crate::fanout`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartListing {
    /// The same in every part of a build.
    pub plan: ListingPlan,
    /// The listing units this part listed, sorted.
    pub owned_units: Vec<PlanPrefix>,
    /// Per source (source order; may be empty): the candidates under this part's units.
    pub owned: Vec<SourceListing>,
    /// Objects under this part's units, and of those not shards.
    pub owned_listed: u64,
    pub owned_ignored: u64,
    /// Sources this part dropped because one of its units failed to list (`--skip-bad`).
    pub unit_failures: Vec<BadSource>,
    /// The build's filters as error messages name them (for a source found empty by `merge`).
    pub filter: String,
}

impl PartDetail {
    /// Builds the schema dictionary and runs from each row's schema, in row order.
    pub(crate) fn encode_schemas(
        schemas: impl IntoIterator<Item = Schema>,
    ) -> (Vec<Schema>, SchemaRuns) {
        let mut distinct: Vec<Schema> = Vec::new();
        let mut seen: HashMap<String, u32> = HashMap::new();
        let mut runs: Vec<(u32, u64)> = Vec::new();
        for schema in schemas {
            let key = canonical_json(&schema);
            let next = distinct.len() as u32;
            let id = *seen.entry(key).or_insert(next);
            if id == next {
                distinct.push(schema);
            }
            match runs.last_mut() {
                Some((last, n)) if *last == id => *n += 1,
                _ => runs.push((id, 1)),
            }
        }
        (distinct, runs)
    }

    /// The schema index of every row, expanded from the runs.
    fn row_schemas(&self, rows: usize, display: &str) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(rows);
        for &(id, n) in &self.schema_runs {
            if id as usize >= self.schemas.len() {
                return Err(part_error(
                    display,
                    format!("schema run names schema {id} of {}", self.schemas.len()),
                ));
            }
            out.extend(std::iter::repeat_n(id, n as usize));
        }
        if out.len() != rows {
            return Err(part_error(
                display,
                format!("schema runs cover {} rows, the table has {rows}", out.len()),
            ));
        }
        Ok(out)
    }
}

/// JSON with object keys sorted: Arrow schemas keep their metadata in `HashMap`s, whose order
/// differs from process to process; manifests must not.
pub(crate) fn canonical_json<T: Serialize>(v: &T) -> String {
    let value = serde_json::to_value(v).expect("manifest metadata serialises");
    // serde_json's map is a BTreeMap (no `preserve_order` in this workspace): keys come sorted.
    serde_json::to_string(&value).expect("JSON value serialises")
}

fn part_error(path: &str, reason: String) -> Error {
    Error::PartMismatch {
        path: path.into(),
        reason,
    }
}

/// What `merge` did, for humans and `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct MergeSummary {
    pub parts: u32,
    pub sources: usize,
    pub shards: u64,
    pub samples: u64,
    pub bytes: u64,
    pub objects_listed: u64,
    pub objects_ignored: u64,
    pub bytes_read: u64,
    pub bad_sources: Vec<BadSource>,
    pub bad: Vec<BadObject>,
    pub fingerprint: String,
    /// Reading the parts.
    pub read_seconds: f64,
    /// Checking, reconciling and building the merged manifest.
    pub merge_seconds: f64,
    pub seconds: f64,
}

/// Reads the partial manifests at `paths` (local paths or URLs, 8 at a time) and merges them.
pub async fn merge_files(
    paths: &[String],
    storage_options: &StorageOptions,
    reporter: &dyn Reporter,
) -> Result<(Manifest, MergeSummary)> {
    let started = Instant::now();
    reporter.start(paths.len() as u64, 0);
    let mut parts = Vec::with_capacity(paths.len());
    let mut reads = futures::stream::iter(
        paths
            .iter()
            .map(|p| async move { (p.clone(), Manifest::read_async(p, storage_options).await) }),
    )
    .buffered(8);
    while let Some((path, m)) = reads.next().await {
        reporter.advance(0);
        parts.push((path, m?));
    }
    reporter.finish();
    let read_seconds = started.elapsed().as_secs_f64();
    let (manifest, mut summary) = merge(&parts)?;
    summary.read_seconds = read_seconds;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok((manifest, summary))
}

/// Merges partial manifests (`(display name, manifest)`, any order) into the manifest a single
/// build over the same sources would have written, byte for byte.
pub fn merge(parts: &[(String, Manifest)]) -> Result<(Manifest, MergeSummary)> {
    let started = Instant::now();
    let (first_path, first) = parts
        .first()
        .ok_or_else(|| Error::Config("merge needs at least one part".into()))?;
    let detail_of = |path: &str, m: &Manifest| -> Result<(PartInfo, PartDetail)> {
        match (m.meta.part, &m.meta.part_detail) {
            (Some(p), Some(d)) => Ok((p, (**d).clone())),
            _ => Err(part_error(
                path,
                "not a partial manifest (it was not built with --part I/N)".into(),
            )),
        }
    };
    let (info0, detail0) = detail_of(first_path, first)?;
    let builder = crate::manifest::builder_version();
    let mut seen: Vec<Option<&str>> = vec![None; info0.count as usize];
    let mut details = Vec::with_capacity(parts.len());
    for (path, m) in parts {
        let (info, detail) = detail_of(path, m)?;
        if m.meta.builder != builder {
            return Err(part_error(
                path,
                format!(
                    "it was built by {} but this is {builder}: build and merge all parts with one version",
                    m.meta.builder
                ),
            ));
        }
        if m.meta.version != first.meta.version {
            return Err(part_error(
                path,
                format!(
                    "manifest format {:?} differs from {first_path}'s {:?}",
                    m.meta.version, first.meta.version
                ),
            ));
        }
        if info.index >= info.count {
            return Err(part_error(
                path,
                format!("part {}/{} is not a valid part", info.index, info.count),
            ));
        }
        if info.count != info0.count {
            return Err(part_error(
                path,
                format!(
                    "it is part {}/{} but {first_path} is part {}/{}: all parts must come from one --part I/N split",
                    info.index, info.count, info0.index, info0.count
                ),
            ));
        }
        if let Some(other) = seen[info.index as usize].replace(path) {
            return Err(part_error(
                path,
                format!(
                    "part {}/{} is given twice (also {other})",
                    info.index, info.count
                ),
            ));
        }
        if m.meta.sources != first.meta.sources {
            let (a, b) = (&m.meta.sources, &first.meta.sources);
            let reason = match a.iter().zip(b).position(|(x, y)| x != y) {
                Some(i) => format!(
                    "its source {i} is {} but {first_path}'s is {}: parts come from different source lists",
                    a[i], b[i]
                ),
                None => format!(
                    "it has {} sources but {first_path} has {}: parts come from different source lists",
                    a.len(),
                    b.len()
                ),
            };
            return Err(part_error(path, reason));
        }
        if detail.options != detail0.options {
            return Err(part_error(
                path,
                format!(
                    "it was built with {:?} but {first_path} with {:?}: use the same --format, --include, --exclude and --skip-bad for every part",
                    detail.options, detail0.options
                ),
            ));
        }
        if detail.listing.plan != detail0.listing.plan {
            let why = plan_difference(
                &detail.listing.plan,
                &detail0.listing.plan,
                first_path,
                &first.meta.sources,
            );
            return Err(part_error(path, why));
        }
        if let Some(i) = (0..detail.listings.len().min(detail0.listings.len()))
            .find(|&i| detail.listings[i] != detail0.listings[i])
            .or((detail.listings.len() != detail0.listings.len()).then_some(0))
        {
            return Err(part_error(
                path,
                format!(
                    "it saw a different listing of {} than {first_path} ({} vs {} shards where every part lists): the store changed between the parts' builds; rebuild the parts",
                    first.meta.sources.get(i).map_or("a source", |s| s.as_str()),
                    detail.listings.get(i).map_or(0, |l| l.candidates),
                    detail0.listings.get(i).map_or(0, |l| l.candidates),
                ),
            ));
        }
        if detail.bad_sources != detail0.bad_sources {
            return Err(part_error(
                path,
                format!(
                    "it skipped sources {:?} but {first_path} skipped {:?}: rebuild the parts once the sources are reachable",
                    detail.bad_sources.iter().map(|b| &b.source).collect::<Vec<_>>(),
                    detail0.bad_sources.iter().map(|b| &b.source).collect::<Vec<_>>()
                ),
            ));
        }
        details.push(detail);
    }
    let missing: Vec<u32> = (0..info0.count)
        .filter(|&i| seen[i as usize].is_none())
        .collect();
    if !missing.is_empty() {
        return Err(part_error(
            first_path,
            format!(
                "parts {missing:?} of {} are missing: merge needs every part",
                info0.count
            ),
        ));
    }

    let sources = first.meta.sources.clone();
    let listing0 = &detail0.listing;
    let plan = &listing0.plan;
    // Where each row may come from: under a unit, only its owner; elsewhere, by key hash.
    let mut placed: Vec<HashMap<String, Placed>> = vec![HashMap::new(); sources.len()];
    if plan.units > 0 {
        let owned: Vec<(&str, u32, &[PlanPrefix])> = parts
            .iter()
            .zip(&details)
            .map(|((path, m), d)| {
                let index = m.meta.part.expect("checked above").index;
                (path.as_str(), index, d.listing.owned_units.as_slice())
            })
            .collect();
        let owners = check_owned_units(plan, &sources, info0.count, &owned)
            .map_err(|(path, reason)| part_error(&path, reason))?;
        for (u, owner) in owners {
            if let Some(map) = placed.get_mut(u.source as usize) {
                map.insert(u.prefix, Placed::Unit(owner));
            }
        }
    }
    for f in &plan.fallback {
        if let Some(map) = placed.get_mut(f.source as usize) {
            map.insert(f.prefix.clone(), Placed::KeyHash);
        }
    }

    // Sources a single build would have skipped: those every part skipped, those whose units
    // failed to list in some part (`--skip-bad`), and those holding no shard in any part (only
    // the sum over the parts tells, when their units are spread over the parts).
    let mut skipped: BTreeMap<usize, BadSource> = BTreeMap::new();
    for b in &detail0.bad_sources {
        if let Some(i) = sources.iter().position(|s| *s == b.source) {
            skipped.insert(i, b.clone());
        }
    }
    let mut dropped: HashSet<u32> = HashSet::new();
    for d in &details {
        for b in &d.listing.unit_failures {
            if let Some(i) = sources.iter().position(|s| *s == b.source) {
                dropped.insert(i as u32);
                skipped.entry(i).or_insert_with(|| b.clone());
            }
        }
    }
    for (i, url) in sources.iter().enumerate() {
        let deferred = plan.source_units.get(i).copied().unwrap_or(0) > 0;
        if !deferred || skipped.contains_key(&i) {
            continue;
        }
        let owned: u64 = details
            .iter()
            .map(|d| d.listing.owned.get(i).map_or(0, |l| l.candidates))
            .sum();
        if detail0.listings.get(i).map_or(0, |l| l.candidates) + owned == 0 {
            let empty = Error::EmptySource {
                location: url.clone(),
                filter: listing0.filter.clone(),
            };
            if !detail0.options.skip_bad {
                return Err(empty);
            }
            skipped.insert(
                i,
                BadSource {
                    source: url.clone(),
                    error: empty.to_string(),
                },
            );
        }
    }

    // Every row with its own schema, in manifest order, as a single build would reconcile them.
    let total: usize = parts.iter().map(|(_, m)| m.len()).sum();
    let mut rows: Vec<(ShardEntry, Option<Schema>)> = Vec::with_capacity(total);
    let mut from_part: Vec<u32> = Vec::with_capacity(total);
    for (k, ((path, m), detail)) in parts.iter().zip(&details).enumerate() {
        let info = m.meta.part.expect("checked above");
        let ids = detail.row_schemas(m.len(), path)?;
        for (i, id) in ids.into_iter().enumerate() {
            let entry = m.entry(i);
            if dropped.contains(&entry.source) {
                continue;
            }
            let Some(root) = sources.get(entry.source as usize) else {
                return Err(part_error(
                    path,
                    format!("a row names source {} of {}", entry.source, sources.len()),
                ));
            };
            let url = display_in(root, &entry.path);
            let placed_by = match prefix_at_depth(&entry.path, plan.depth) {
                Some(prefix) => match placed[entry.source as usize].get(prefix) {
                    Some(p) => *p,
                    None => {
                        return Err(part_error(
                            path,
                            format!(
                                "{url} lies under {}, which is not in the parts' listing plan",
                                display_in(root, prefix)
                            ),
                        ))
                    }
                },
                None => Placed::KeyHash,
            };
            let belongs = match placed_by {
                Placed::Unit(owner) => owner == info.index,
                Placed::KeyHash => info.selects(&url),
            };
            if !belongs {
                return Err(part_error(
                    path,
                    format!(
                        "{url} does not belong to part {}/{}",
                        info.index, info.count
                    ),
                ));
            }
            rows.push((entry, Some(detail.schemas[id as usize].clone())));
            from_part.push(k as u32);
        }
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        (rows[a].0.source, &rows[a].0.path).cmp(&(rows[b].0.source, &rows[b].0.path))
    });
    if let Some(w) = order.windows(2).find(|w| {
        (rows[w[0]].0.source, &rows[w[0]].0.path) == (rows[w[1]].0.source, &rows[w[1]].0.path)
    }) {
        let e = &rows[w[0]].0;
        return Err(part_error(
            &parts[from_part[w[1]] as usize].0,
            format!(
                "shard {} is also in {}",
                display_in(&sources[e.source as usize], &e.path),
                parts[from_part[w[0]] as usize].0
            ),
        ));
    }
    let mut slots: Vec<Option<(ShardEntry, Option<Schema>)>> = rows.into_iter().map(Some).collect();
    let mut shards: Vec<(ShardEntry, Option<Schema>)> = order
        .iter()
        .map(|&i| slots[i].take().expect("each row once"))
        .collect();
    drop(slots);

    let skip_bad = detail0.options.skip_bad;
    let displays: Vec<String> = shards
        .iter()
        .map(|(e, _)| display_in(&sources[e.source as usize], &e.path))
        .collect();
    let (schema, rejected) = reconcile(&shards, &displays, None, skip_bad)?;
    let mut bad: Vec<BadObject> = details
        .iter()
        .flat_map(|d| d.bad_objects.iter().cloned())
        .collect();
    for (i, reason) in rejected.iter().rev() {
        let (e, _) = shards.remove(*i);
        bad.push(BadObject {
            path: display_in(&sources[e.source as usize], &e.path),
            error: reason.clone(),
        });
    }
    bad.sort_by(|a, b| a.path.cmp(&b.path));
    if shards.is_empty() {
        return Err(Error::EmptySource {
            location: crate::indexer::describe_sources(&sources),
            filter: String::new(),
        });
    }
    let entries: Vec<ShardEntry> = shards.into_iter().map(|(e, _)| e).collect();
    let manifest = Manifest::from_entries(sources, schema, entries, None)?;
    let t = manifest.meta.totals;
    // Shared levels once (every part saw them), plus every part's own units.
    let listed = detail0.objects_listed - listing0.owned_listed
        + details.iter().map(|d| d.listing.owned_listed).sum::<u64>();
    let ignored = detail0.objects_ignored - listing0.owned_ignored
        + details.iter().map(|d| d.listing.owned_ignored).sum::<u64>();
    let summary = MergeSummary {
        parts: info0.count,
        sources: manifest.meta.sources.len(),
        shards: t.shards,
        samples: t.samples,
        bytes: t.bytes,
        objects_listed: listed,
        objects_ignored: ignored,
        bytes_read: details.iter().map(|d| d.bytes_read).sum(),
        bad_sources: skipped.into_values().collect(),
        bad,
        fingerprint: manifest.meta.fingerprint.clone(),
        read_seconds: 0.0,
        merge_seconds: started.elapsed().as_secs_f64(),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((manifest, summary))
}

/// How a row's place in the listing plan decides its part.
#[derive(Debug, Clone, Copy)]
enum Placed {
    /// Under a listing unit: the part that owns it.
    Unit(u32),
    /// At a shared level or under a fallback prefix: by key hash.
    KeyHash,
}

/// `root/relative`, as error messages and part hashing name an object.
pub(crate) fn display_in(root: &str, relative: &str) -> String {
    if relative.is_empty() {
        root.to_string()
    } else {
        format!("{}/{}", root.trim_end_matches('/'), relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_stable() {
        // Pinned values: part assignment is part of the manifest contract.
        assert_eq!(stable_hash(b""), stable_hash(b""));
        let a = stable_hash(b"s3://bucket/data/part-00000.parquet");
        assert_eq!(a, stable_hash(b"s3://bucket/data/part-00000.parquet"));
        assert_ne!(a, stable_hash(b"s3://bucket/data/part-00001.parquet"));
        assert_eq!(stable_hash(b"abc"), 996_580_060_897_260_808);
    }

    #[test]
    fn parts_are_balanced_and_disjoint() {
        for n in [1u32, 3, 16, 64] {
            let parts: Vec<PartInfo> = (0..n).map(|index| PartInfo { index, count: n }).collect();
            let mut counts = vec![0u32; n as usize];
            let objects = 64_000;
            for k in 0..objects {
                let url = format!("s3://b/data/shard-{k:06}.tar");
                let owners: Vec<_> = parts.iter().filter(|p| p.selects(&url)).collect();
                assert_eq!(owners.len(), 1, "{url} in {} parts", owners.len());
                counts[owners[0].index as usize] += 1;
            }
            let mean = objects as f64 / f64::from(n);
            for c in counts {
                assert!(
                    (f64::from(c) - mean).abs() < 6.0 * mean.sqrt() + 1.0,
                    "n={n}: {c} vs {mean}"
                );
            }
        }
    }

    #[test]
    fn part_syntax() {
        assert_eq!(
            PartInfo::parse("3/16").unwrap(),
            PartInfo {
                index: 3,
                count: 16
            }
        );
        for bad in ["16/16", "1/0", "x/2", "2", "-1/4"] {
            assert!(PartInfo::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schema_runs_round_trip() {
        use arrow_schema::{DataType, Field};
        let a = Schema::new(vec![Field::new("x", DataType::Int64, true)]);
        let b = Schema::new(vec![Field::new("y", DataType::Utf8, true)]);
        let (distinct, runs) =
            PartDetail::encode_schemas([a.clone(), a.clone(), b.clone(), a.clone()]);
        assert_eq!(distinct, vec![a, b]);
        assert_eq!(runs, vec![(0, 2), (1, 1), (0, 1)]);
    }
}
