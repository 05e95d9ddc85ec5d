//! The `shard-index` command line: build, update, merge, inspect, verify and plan manifests;
//! generate test datasets.
//!
//! A thin layer over the library: argument parsing (clap), a progress bar on a terminal
//! (indicatif; nothing when stderr is a pipe), human or `--json` output, and exit codes (0
//! success, 1 failure, 2 verification found mismatches). It lives in the library, behind the
//! default `cli` feature, only so that two front ends can share it: the `shard-index` binary and
//! the command the Python package installs. It is binary code all the same — the one place in
//! the crate where anyhow, clap and indicatif are used.

use crate::fanout::ListStats;
use crate::format::{Compression, FormatChoice, ShardFormat, ShardKind};
use crate::indexer::{self, BadObject, BadSource, BuildSummary, IndexOptions, Reporter};
use crate::manifest::{Manifest, PartInfo};
use crate::parts::MergeSummary;
use crate::runtime::block_on;
use crate::storage::{StorageConfig, StorageOptions};
use crate::synth::{self, SynthConfig};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "shard-index",
    version,
    about = "Index sharded datasets in object storage"
)]
struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// No progress bar and no human summary.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List prefixes and write a manifest of their shards (or one part of it: --part I/N).
    Build(BuildArgs),
    /// Combine the partial manifests of `build --part I/N` into the full manifest.
    Merge(MergeArgs),
    /// List sources as `build` would (filters, --part, the split of the listing) and read
    /// nothing: a dry run that reports what listing costs.
    List(ListArgs),
    /// Re-list the manifest's sources; re-read only new or changed objects.
    Update(UpdateArgs),
    /// Summarise a manifest.
    Inspect(InspectArgs),
    /// Check that every shard still matches the manifest (--deep: decode and count).
    Verify(VerifyArgs),
    /// Write a synthetic dataset with known contents.
    Generate(GenerateArgs),
    /// Dry-run the epoch plan: per-rank counts, locality, cache needs, shuffle quality.
    Plan(PlanArgs),
}

#[derive(Args)]
struct PlanArgs {
    /// One manifest per stream.
    #[arg(required = true)]
    manifest: Vec<String>,
    /// Stream weights (comma-separated, one per manifest): each stream's share of the epoch.
    #[arg(long, value_delimiter = ',', conflicts_with = "repeats")]
    weights: Vec<f64>,
    /// Stream repeat counts (comma-separated): how many times each sample appears per epoch.
    #[arg(long, value_delimiter = ',')]
    repeats: Vec<f64>,
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    #[arg(long, default_value_t = 1)]
    ranks_per_node: u32,
    /// Consumers inside one rank (DataLoader workers).
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Samples per batch per rank.
    #[arg(long)]
    batch_size: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 0)]
    epoch: u64,
    /// Shuffle window in samples (default: 256 MiB worth of samples).
    #[arg(long, conflicts_with = "window_bytes")]
    window: Option<u64>,
    /// Shuffle window in bytes.
    #[arg(long)]
    window_bytes: Option<u64>,
    /// Warm-up: the first window is 1/2^N of a window, doubling up to a full one, so the first
    /// batch needs few shards (0 = full windows from the start).
    #[arg(long, default_value_t = crate::plan::DEFAULT_WARMUP)]
    warmup: u32,
    /// Canonical nodes (default: --nodes); fix it to resume on other node counts.
    #[arg(long)]
    canonical_nodes: Option<u32>,
    #[arg(long)]
    drop_last: bool,
    #[arg(long)]
    no_shuffle: bool,
    /// Show this rank's first samples as (shard path, row).
    #[arg(long)]
    rank: Option<u32>,
    /// How many samples --rank shows.
    #[arg(long, default_value_t = 20)]
    show: usize,
    /// Write every batch of every consumer as a JSON line to FILE (small datasets).
    #[arg(long)]
    dump: Option<PathBuf>,
    #[arg(long = "storage-option", value_name = "KEY=VALUE", value_parser = parse_kv)]
    storage_options: Vec<(String, String)>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct StoreArgs {
    /// object_store config key=value (e.g. aws_endpoint=http://127.0.0.1:9000); repeatable.
    #[arg(long = "storage-option", value_name = "KEY=VALUE", value_parser = parse_kv)]
    storage_options: Vec<(String, String)>,
    /// JSON file of per-source storage options (see the README: "Many sources").
    #[arg(long, value_name = "FILE")]
    storage_config: Option<PathBuf>,
    /// Objects read at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// LIST requests in flight at once (over sources and their prefixes).
    #[arg(long, default_value_t = 16)]
    list_concurrency: usize,
}

/// Which objects of which sources: shared by `build` and `list`.
#[derive(Args)]
struct SelectArgs {
    /// Dataset locations: s3://, gs://, az://, http(s)://, file:// URLs or local paths, in
    /// manifest order.
    #[arg(required_unless_present = "sources_file")]
    source: Vec<String>,
    /// More sources, one per line (blank lines and `#` comments ignored), after SOURCE....
    #[arg(long, value_name = "FILE")]
    sources_file: Option<PathBuf>,
    /// Index only part I of N (0-based) of the objects, chosen by a hash of their URL, into a
    /// partial manifest for `merge`.
    #[arg(long, value_name = "I/N", value_parser = parse_part)]
    part: Option<PartInfo>,
    /// With --part: list every source in full in every part (keeping 1/N by key hash) instead
    /// of splitting the listing by prefix; every part of a build must agree.
    #[arg(long, requires = "part")]
    no_split_listing: bool,
    /// Shard format: auto (from names), parquet, tar or jsonl.
    #[arg(long, default_value = "auto")]
    format: FormatChoice,
    /// Only index paths (relative to the source) matching this glob; repeatable.
    #[arg(long)]
    include: Vec<String>,
    /// Skip paths matching this glob; repeatable.
    #[arg(long)]
    exclude: Vec<String>,
    /// List unreadable objects in the summary instead of failing.
    #[arg(long)]
    skip_bad: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
struct BuildArgs {
    #[command(flatten)]
    select: SelectArgs,
    /// Where to write the manifest (local path or URL).
    #[arg(short, long)]
    output: String,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    select: SelectArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct MergeArgs {
    /// The partial manifests of every part (any order).
    #[arg(required = true)]
    parts: Vec<String>,
    /// Where to write the merged manifest (local path or URL).
    #[arg(short, long)]
    output: String,
    #[arg(long = "storage-option", value_name = "KEY=VALUE", value_parser = parse_kv)]
    storage_options: Vec<(String, String)>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct UpdateArgs {
    manifest: String,
    /// Write the updated manifest here instead of over MANIFEST.
    #[arg(short, long)]
    output: Option<String>,
    #[arg(long)]
    skip_bad: bool,
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InspectArgs {
    manifest: String,
    #[arg(long = "storage-option", value_name = "KEY=VALUE", value_parser = parse_kv)]
    storage_options: Vec<(String, String)>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct VerifyArgs {
    manifest: String,
    /// Decode every shard and compare its sample count.
    #[arg(long)]
    deep: bool,
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct GenerateArgs {
    /// Output directory.
    dir: PathBuf,
    /// parquet, tar, tar.zst, jsonl or jsonl.zst.
    #[arg(long, default_value = "parquet")]
    format: ShardKind,
    #[arg(long, default_value_t = 10_000)]
    samples: u64,
    #[arg(long, default_value_t = 8)]
    shards: u32,
    /// Token-list length range, e.g. 16..256 or 2048 (fixed).
    #[arg(long, default_value = "16..256")]
    tokens: String,
    /// Extra binary blob bytes per sample.
    #[arg(long, default_value_t = 0)]
    blob_bytes: u32,
    #[arg(long, default_value_t = 1000)]
    row_group_rows: u32,
    /// PLAIN-encoded, uncompressed Parquet.
    #[arg(long)]
    plain: bool,
    /// Equal shard and row-group sizes.
    #[arg(long)]
    even: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

fn parse_part(s: &str) -> std::result::Result<PartInfo, String> {
    PartInfo::parse(s).map_err(|e| e.to_string())
}

fn parse_kv(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Runs the command line with these arguments (the first is the program name) and returns the
/// process exit status.
pub fn main_with_args<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_tracing(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .ok(); // a second call in one process (the Python front end) keeps the first set-up
}

fn run(cli: Cli) -> Result<u8> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Build(a) => build(a, quiet),
        Command::Merge(a) => merge(a, quiet),
        Command::List(a) => list(a, quiet),
        Command::Update(a) => update(a, quiet),
        Command::Inspect(a) => inspect(a),
        Command::Verify(a) => verify(a, quiet),
        Command::Generate(a) => generate(a),
        Command::Plan(a) => plan(a),
    }
}

fn options(store: &StoreArgs, skip_bad: bool) -> Result<IndexOptions> {
    let storage_config = match &store.storage_config {
        Some(path) => StorageConfig::from_file(path)?,
        None => StorageConfig::default(),
    };
    Ok(IndexOptions {
        concurrency: store.concurrency,
        list_concurrency: store.list_concurrency,
        storage_options: store.storage_options.iter().cloned().collect(),
        storage_config,
        skip_bad,
        ..IndexOptions::default()
    })
}

/// SOURCE... followed by the lines of --sources-file.
fn read_sources(source: &[String], sources_file: &Option<PathBuf>) -> Result<Vec<String>> {
    let mut sources = source.to_vec();
    if let Some(path) = sources_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the sources file {}", path.display()))?;
        sources.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
        if sources.is_empty() {
            bail!("the sources file {} names no source", path.display());
        }
    }
    Ok(sources)
}

impl SelectArgs {
    /// The sources, in order, and the index options they select with.
    fn resolve(&self) -> Result<(Vec<String>, IndexOptions)> {
        let opts = IndexOptions {
            format: self.format,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            part: self.part,
            split_listing: !self.no_split_listing,
            ..options(&self.store, self.skip_bad)?
        };
        Ok((read_sources(&self.source, &self.sources_file)?, opts))
    }
}

fn build(a: BuildArgs, quiet: bool) -> Result<u8> {
    let (sources, opts) = a.select.resolve()?;
    let bar = Bar::new(quiet || a.json, "indexing");
    let (manifest, summary) = block_on(indexer::build(&sources, &opts, &bar))??;
    manifest
        .write_to(&a.output, &opts.storage_options)
        .with_context(|| format!("writing {}", a.output))?;
    report_build(&summary, &a.output, a.json, quiet)
}

fn update(a: UpdateArgs, quiet: bool) -> Result<u8> {
    let opts = options(&a.store, a.skip_bad)?;
    let previous = Manifest::read(&a.manifest, &opts.storage_options)?;
    let bar = Bar::new(quiet || a.json, "updating");
    let (manifest, summary) = block_on(indexer::update(&previous, &opts, &bar))??;
    let output = a.output.as_deref().unwrap_or(&a.manifest);
    manifest
        .write_to(output, &opts.storage_options)
        .with_context(|| format!("writing {output}"))?;
    report_build(&summary, output, a.json, quiet)
}

fn merge(a: MergeArgs, quiet: bool) -> Result<u8> {
    let opts: StorageOptions = a.storage_options.into_iter().collect();
    let bar = Bar::new(quiet || a.json, "reading parts");
    let (manifest, summary) = block_on(crate::parts::merge_files(&a.parts, &opts, &bar))??;
    manifest
        .write_to(&a.output, &opts)
        .with_context(|| format!("writing {}", a.output))?;
    report_merge(&summary, &a.output, a.json, quiet)
}

fn list(a: ListArgs, quiet: bool) -> Result<u8> {
    let (sources, opts) = a.select.resolve()?;
    let bar = Bar::new(quiet || a.json, "listing");
    let s = block_on(indexer::list(&sources, &opts, &bar))??;
    bar.finish();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else if !quiet {
        println!(
            "listed {} objects in {:.2}s: {} shards, {} selected{}",
            s.objects_listed,
            s.seconds,
            s.candidates,
            s.selected,
            opts.part
                .map(|p| format!(" for part {}/{}", p.index, p.count))
                .unwrap_or_default()
        );
        print_listing(&s.listing);
        print_skipped(&s.bad_sources, &[]);
    }
    Ok(0)
}

/// What `--skip-bad` left out: whole sources, then single objects.
fn print_skipped(sources: &[BadSource], objects: &[BadObject]) {
    for b in sources {
        println!("skipped source {}: {}", b.source, b.error);
    }
    for b in objects {
        println!("skipped {}: {}", b.path, b.error);
    }
}

/// One line on how listing was split (parts only).
fn print_listing(l: &ListStats) {
    if l.scheme.is_some() {
        println!(
            "listing: {} LIST requests ({} by the walk every part makes), {} of {} units at depth {}, {} sources listed in full by every part",
            l.list_requests, l.walk_requests, l.units_owned, l.units_total, l.depth, l.fallback_sources
        );
    }
}

fn report_merge(s: &MergeSummary, output: &str, json: bool, quiet: bool) -> Result<u8> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else if !quiet {
        println!(
            "wrote {output}: merged {} parts: {} shards, {} samples, {} from {} sources in {:.2}s",
            s.parts,
            s.shards,
            s.samples,
            human_bytes(s.bytes),
            s.sources,
            s.seconds
        );
        print_skipped(&s.bad_sources, &s.bad);
        println!("fingerprint {}", s.fingerprint);
    }
    Ok(0)
}

fn report_build(s: &BuildSummary, output: &str, json: bool, quiet: bool) -> Result<u8> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else if !quiet {
        if let Some(p) = s.part {
            println!(
                "part {}/{} (a partial manifest: `shard-index merge` all {} parts)",
                p.index, p.count, p.count
            );
            print_listing(&s.listing);
        }
        println!(
            "wrote {output}: {} shards, {} samples, {} in {:.2}s ({:.0} shards/s, {} read)",
            s.shards,
            s.samples,
            human_bytes(s.bytes),
            s.seconds,
            s.shards_per_s,
            human_bytes(s.bytes_read)
        );
        if s.objects_ignored > 0 {
            println!("ignored {} non-shard objects", s.objects_ignored);
        }
        if !s.added.is_empty() || !s.removed.is_empty() || !s.changed.is_empty() || s.unchanged > 0
        {
            println!(
                "unchanged {}, added {}, removed {}, changed {}",
                s.unchanged,
                s.added.len(),
                s.removed.len(),
                s.changed.len()
            );
            for (tag, list) in [("+", &s.added), ("-", &s.removed), ("~", &s.changed)] {
                for p in list.iter().take(20) {
                    println!("  {tag} {p}");
                }
            }
        }
        print_skipped(&s.bad_sources, &s.bad);
        println!("fingerprint {}", s.fingerprint);
    }
    Ok(0)
}

fn inspect(a: InspectArgs) -> Result<u8> {
    let opts: StorageOptions = a.storage_options.into_iter().collect();
    let m = Manifest::read(&a.manifest, &opts)?;
    let r = crate::manifest::InspectReport::of(&m, &a.manifest);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(0);
    }
    println!(
        "manifest     {} (format {}, {})",
        r.manifest, r.version, r.builder
    );
    if let Some(p) = r.part {
        println!(
            "part         {}/{} (a partial manifest: merge all parts)",
            p.index, p.count
        );
    }
    for s in &r.sources {
        println!("source       {s}");
    }
    println!("shards       {}", r.shards);
    println!("samples      {}", r.samples);
    println!("bytes        {} ({})", r.bytes, human_bytes(r.bytes));
    let formats: Vec<String> = r.formats.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("formats      {}", formats.join(", "));
    if r.row_groups > 0 {
        println!("row groups   {}", r.row_groups);
    }
    println!("fingerprint  {}", r.fingerprint);
    for (label, shard) in [("smallest", &r.smallest), ("largest ", &r.largest)] {
        if let Some(s) = shard {
            let size = human_bytes(s.bytes);
            println!("{label}     {} ({size}, {} samples)", s.path, s.samples);
        }
    }
    println!("schema");
    for f in &r.schema {
        let null = if f.nullable { "" } else { " not null" };
        println!("  {:<20} {}{null}", f.name, f.data_type);
    }
    Ok(0)
}

fn verify(a: VerifyArgs, quiet: bool) -> Result<u8> {
    let opts = options(&a.store, false)?;
    let m = Manifest::read(&a.manifest, &opts.storage_options)?;
    let bar = Bar::new(
        quiet || a.json,
        if a.deep { "decoding" } else { "checking" },
    );
    let report = block_on(indexer::verify(&m, &opts, a.deep, &bar))??;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !quiet {
        println!(
            "{} of {} shards ok{} in {:.2}s",
            report.ok,
            report.shards,
            if report.deep { " (decoded)" } else { "" },
            report.seconds
        );
        for m in &report.mismatches {
            println!("MISMATCH {}: {}", m.path, m.problem);
        }
    }
    Ok(if report.mismatches.is_empty() { 0 } else { 2 })
}

fn generate(a: GenerateArgs) -> Result<u8> {
    let (tokens_min, tokens_max) = match a.tokens.split_once("..") {
        Some((lo, hi)) => (lo.parse()?, hi.parse()?),
        None => {
            let n = a.tokens.parse()?;
            (n, n)
        }
    };
    if a.format.format == ShardFormat::Parquet && a.format.compression != Compression::None {
        bail!("Parquet shards compress their pages themselves; use --format parquet");
    }
    let cfg = SynthConfig {
        kind: a.format,
        samples: a.samples,
        shards: a.shards,
        tokens_min,
        tokens_max,
        blob_bytes: a.blob_bytes,
        row_group_rows: a.row_group_rows,
        parquet_plain: a.plain,
        uneven: !a.even,
        seed: a.seed,
    };
    let report = synth::generate(&a.dir, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "wrote {} {} shards with {} samples ({}) to {}",
            report.shards,
            report.format,
            report.samples,
            human_bytes(report.bytes),
            report.dir.display()
        );
    }
    Ok(0)
}

fn plan(a: PlanArgs) -> Result<u8> {
    use crate::plan::{EpochPlan, Mix, PlanOptions, StreamSpec, Topology, Window, DEFAULT_WINDOW};
    let opts: StorageOptions = a.storage_options.iter().cloned().collect();
    let n = a.manifest.len();
    let mixes: Vec<Mix> = match (a.weights.is_empty(), a.repeats.is_empty()) {
        (false, _) if a.weights.len() != n => bail!("--weights needs {n} values, one per manifest"),
        (_, false) if a.repeats.len() != n => bail!("--repeats needs {n} values, one per manifest"),
        (false, _) => a.weights.iter().map(|&w| Mix::Weight(w)).collect(),
        (_, false) => a.repeats.iter().map(|&r| Mix::Repeat(r)).collect(),
        _ => vec![Mix::Repeat(1.0); n],
    };
    let manifests = a
        .manifest
        .iter()
        .map(|m| Manifest::read(m, &opts).with_context(|| format!("reading {m}")))
        .collect::<Result<Vec<_>>>()?;
    let streams: Vec<StreamSpec> = manifests
        .iter()
        .zip(&a.manifest)
        .zip(mixes)
        .map(|((m, name), mix)| StreamSpec::from_manifest(name.clone(), m, mix))
        .collect();
    let topology = Topology::new(a.nodes, a.ranks_per_node, a.workers);
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let window = match (a.window, a.window_bytes) {
        (Some(w), _) => Window::Samples(w),
        (_, Some(b)) => Window::Bytes(b),
        _ => DEFAULT_WINDOW,
    };
    let options = PlanOptions {
        seed: a.seed,
        shuffle: !a.no_shuffle,
        window,
        warmup: a.warmup,
        global_batch_size: a.batch_size.saturating_mul(topology.world()),
        drop_last: a.drop_last,
        canonical_nodes: a.canonical_nodes,
        epoch_size: None,
    };
    let plan = EpochPlan::with_topology(streams, options, a.epoch, topology)?;
    let summary = plan.summary(topology)?;
    let first = match a.rank {
        Some(r) => {
            let rank_plan = plan.rank(topology, r)?;
            let mut out = Vec::new();
            for batch in rank_plan.batches_from(0) {
                for s in batch.samples {
                    let m = &manifests[s.stream as usize];
                    out.push(serde_json::json!({
                        "stream": s.stream, "shard": m.url(s.shard as usize), "row": s.row,
                        "global": s.global, "padded": s.padded,
                    }));
                    if out.len() >= a.show {
                        break;
                    }
                }
                if out.len() >= a.show {
                    break;
                }
            }
            Some(out)
        }
        None => None,
    };
    if let Some(path) = &a.dump {
        dump_plan(&plan, topology, path, n > 1)?;
    }
    if a.json {
        let mut v = serde_json::to_value(&summary)?;
        if let Some(f) = &first {
            v["first_samples"] = serde_json::Value::Array(f.clone());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "epoch {}: {} samples over {} node(s) x {} rank(s) x {} worker(s); canonical nodes {}",
        summary.epoch,
        summary.total_samples,
        a.nodes,
        a.ranks_per_node,
        a.workers,
        summary.canonical_nodes
    );
    println!(
        "per rank       {} batches of {} = {} samples (padded {}, dropped {})",
        summary.batches_per_rank,
        summary.batch_size_per_rank,
        summary.samples_per_rank,
        summary.padded_samples,
        summary.dropped_samples
    );
    println!("window         {} samples", summary.window_samples);
    println!(
        "locality       {}; read amplification {:.4} ({} shards read of {})",
        if summary.locality {
            "exact"
        } else {
            "approximate"
        },
        summary.read_amplification,
        summary.shards_read,
        summary.shards
    );
    println!(
        "node cache     {} for one window (largest node)",
        human_bytes(summary.max_window_cache_bytes)
    );
    for node in summary.per_node.iter().take(16) {
        println!(
            "  node {:<4} {:>8} shards  {:>10}  window cache {}",
            node.node,
            node.shards_touched,
            human_bytes(node.bytes),
            human_bytes(node.window_cache_bytes)
        );
    }
    if summary.per_node.len() > 16 {
        println!(
            "  ... {} more nodes (see --json)",
            summary.per_node.len() - 16
        );
    }
    let q = &summary.shuffle;
    println!(
        "shuffle        {:.1} distinct shards per rank batch, {:.1} per global batch; rank correlation {:.4}; mean displacement {:.4} (first {} samples)",
        q.mean_distinct_shards_per_rank_batch,
        q.mean_distinct_shards_per_global_batch,
        q.rank_correlation,
        q.mean_abs_displacement,
        q.samples_examined
    );
    if let Some(first) = first {
        println!("rank {} first samples:", a.rank.unwrap_or(0));
        for s in first {
            println!(
                "  {} row {}{}",
                s["shard"].as_str().unwrap_or(""),
                s["row"],
                if s["padded"] == true { " (padded)" } else { "" }
            );
        }
    }
    Ok(0)
}

/// Every batch of every consumer as JSON lines, in (rank, worker, batch) order.
fn dump_plan(
    plan: &crate::plan::EpochPlan,
    topology: crate::plan::Topology,
    path: &std::path::Path,
    with_streams: bool,
) -> Result<()> {
    use std::io::Write;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for rank in 0..topology.world() as u32 {
        let rank_plan = plan.rank(topology, rank)?;
        for worker in 0..topology.workers_per_rank {
            for batch in rank_plan.worker_batches(worker)? {
                let mut line = serde_json::json!({
                    "rank": rank,
                    "worker": worker,
                    "batch": batch.index,
                    "samples": batch.samples.iter().map(|s| s.global).collect::<Vec<_>>(),
                    "padded": batch.samples.iter().map(|s| s.padded).collect::<Vec<_>>(),
                });
                if with_streams {
                    line["streams"] = batch
                        .samples
                        .iter()
                        .map(|s| s.stream)
                        .collect::<Vec<_>>()
                        .into();
                }
                writeln!(out, "{line}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// A progress bar on a terminal; silent otherwise.
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new(quiet: bool, what: &'static str) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} {wide_bar} {pos}/{len} objects  {prefix}  {per_sec}  eta {eta}",
            )
            .expect("valid template"),
        );
        bar.set_message(what);
        Self(Some(bar))
    }
}

impl Reporter for Bar {
    fn listed(&self, objects: u64) {
        if let Some(b) = &self.0 {
            // Before `start` the bar counts listed objects (its length is still 0).
            b.inc(objects);
            b.set_prefix("listed");
        }
    }
    fn start(&self, objects: u64, bytes: u64) {
        if let Some(b) = &self.0 {
            b.set_position(0);
            b.set_length(objects);
            b.set_prefix(format!("of {}", human_bytes(bytes)));
        }
    }
    fn advance(&self, _bytes: u64) {
        if let Some(b) = &self.0 {
            b.inc(1);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
