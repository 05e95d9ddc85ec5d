//! Listing cost per object, through the s3s-fs loopback server in its own process.
//!
//! Creates `--buckets` buckets of `--objects` zero-byte `*.parquet` objects each, spread over
//! `--prefixes` first-level prefixes per bucket (files written straight into the server's
//! directory: s3s-fs lists from the file system, and listing reads no object), starts
//! `s3-test-server` as a child process so that this process's CPU time and peak RSS are the
//! client's alone, then lists every bucket with the indexer's listing (`indexer::list`: paged
//! ListObjectsV2, sources and first-level prefixes in parallel, filters and `--part`
//! selection, no object read) and prints one JSON object.
//!
//! s3s-fs walks a whole bucket for every LIST page, so one bucket of n objects costs it
//! O(n²/1000); many buckets of a few thousand objects keep the server linear, like a real store.
//!
//!     cargo build --release -p shardstream-tests --bin s3-test-server
//!     /usr/bin/time -v target/release/list-bench --buckets 100 --objects 2000

use anyhow::{bail, Context, Result};
use clap::Parser;
use shard_index::indexer::{self, IndexOptions, Silent};
use shard_index::manifest::PartInfo;
use shardstream_tests::s3::s3_options;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100)]
    buckets: u32,
    /// Objects per bucket.
    #[arg(long, default_value_t = 2000)]
    objects: u32,
    /// First-level prefixes per bucket.
    #[arg(long, default_value_t = 10)]
    prefixes: u32,
    /// Keep only part I/N of the objects (listing is still complete).
    #[arg(long, value_parser = |s: &str| PartInfo::parse(s).map_err(|e| e.to_string()))]
    part: Option<PartInfo>,
    #[arg(long, default_value_t = 16)]
    list_concurrency: usize,
    /// Server root (default: a temporary directory; reused when it already holds the buckets).
    #[arg(long)]
    root: Option<PathBuf>,
    /// The `s3-test-server` binary (default: next to this one).
    #[arg(long)]
    server: Option<PathBuf>,
}

fn rusage(who: libc::c_int) -> (f64, u64) {
    // SAFETY: getrusage only writes the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(u.ru_utime) + secs(u.ru_stime),
        u.ru_maxrss as u64 * 1024,
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let root = args.root.clone().unwrap_or_else(|| tmp.path().join("s3"));
    let t = Instant::now();
    let mut created = 0u64;
    for b in 0..args.buckets {
        for p in 0..args.prefixes {
            let dir = root.join(format!("bkt-{b:04}/data/p{p:03}"));
            if dir.exists() {
                continue;
            }
            std::fs::create_dir_all(&dir)?;
            for j in (p..args.objects).step_by(args.prefixes as usize) {
                std::fs::File::create(dir.join(format!("shard-{j:06}.parquet")))?;
                created += 1;
            }
        }
    }
    eprintln!(
        "created {created} objects in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let server = args.server.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("current exe")
            .with_file_name("s3-test-server")
    });
    let mut child = Command::new(&server)
        .arg(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", server.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let info: serde_json::Value = serde_json::from_str(&line).context("server banner")?;
    let Some(endpoint) = info["endpoint"].as_str() else {
        bail!("no endpoint in {line:?}");
    };

    let sources: Vec<String> = (0..args.buckets)
        .map(|b| format!("s3://bkt-{b:04}/data"))
        .collect();
    let options = IndexOptions {
        storage_options: s3_options(endpoint),
        part: args.part,
        list_concurrency: args.list_concurrency,
        ..IndexOptions::default()
    };
    let rt = tokio::runtime::Runtime::new()?;
    let (cpu0, _) = rusage(libc::RUSAGE_SELF);
    let t = Instant::now();
    let summary = rt.block_on(indexer::list(&sources, &options, &Silent))?;
    let wall = t.elapsed().as_secs_f64();
    let (cpu1, peak_rss) = rusage(libc::RUSAGE_SELF);
    drop(child.stdin.take());
    child.wait()?;
    let (server_cpu, server_rss) = rusage(libc::RUSAGE_CHILDREN);
    let n = summary.objects_listed.max(1) as f64;
    let out = serde_json::json!({
        "server": "s3-test-server (s3s-fs) on 127.0.0.1, separate process",
        "buckets": args.buckets,
        "prefixes_per_bucket": args.prefixes,
        "objects_listed": summary.objects_listed,
        "selected": summary.selected,
        "part": args.part,
        "listing": summary.listing,
        "list_concurrency": args.list_concurrency,
        "seconds": wall,
        "us_per_object_wall": wall * 1e6 / n,
        "client_cpu_s": cpu1 - cpu0,
        "client_cpu_us_per_object": (cpu1 - cpu0) * 1e6 / n,
        "client_peak_rss_bytes": peak_rss,
        "server_cpu_s": server_cpu,
        "server_peak_rss_bytes": server_rss,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
