//! Serves a directory over S3 on 127.0.0.1 for Python tests and benchmarks.
//!
//! Prints one JSON line `{"endpoint": ..., "port": ..., "access_key": ..., "secret_key": ...,
//! "region": ...}` on stdout once it accepts connections, then serves until stdin closes or it is
//! killed, so a parent process that dies takes the server with it.
//!
//! With `--faults SPEC` (see `shardstream_tests::fault::FaultSpec`, e.g.
//! `seed=1,tail=5ms:1.5,slowdown=0.05,reset=0.01`) a fault-injecting proxy sits in front of the
//! server: `endpoint` is then the proxy's, and `direct_endpoint` the server's own (for uploads
//! and indexing without faults).

use anyhow::Result;
use clap::Parser;
use shardstream_tests::fault::{FaultProxy, FaultSpec};
use shardstream_tests::s3::{S3Server, ServerConfig, ACCESS_KEY, REGION, SECRET_KEY};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "S3 test server (s3s-fs) on loopback")]
struct Args {
    /// Directory to serve; its subdirectories are buckets.
    root: PathBuf,
    /// Port (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Delay before serving each request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Buckets to create at start.
    #[arg(long)]
    bucket: Vec<String>,
    /// Put a fault-injecting proxy in front: KEY=VALUE,... with seed, latency, tail
    /// (SCALE:ALPHA[:CAP]), slowdown, reset, truncate, stall (probabilities per GET).
    #[arg(long)]
    faults: Option<FaultSpec>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let server = S3Server::start_with(
        &args.root,
        ServerConfig {
            latency: Duration::from_millis(args.latency_ms),
            port: args.port,
        },
    )?;
    for b in &args.bucket {
        server.create_bucket(b)?;
    }
    let proxy = match &args.faults {
        Some(spec) => {
            let upstream = format!("127.0.0.1:{}", server.port()).parse()?;
            Some(FaultProxy::start(upstream, spec.clone())?)
        }
        None => None,
    };
    let line = serde_json::json!({
        "endpoint": proxy.as_ref().map_or_else(|| server.endpoint(), |p| p.endpoint()),
        "direct_endpoint": server.endpoint(),
        "port": proxy.as_ref().map_or(server.port(), |p| p.addr().port()),
        "direct_port": server.port(),
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "region": REGION,
    });
    println!("{line}");
    std::io::stdout().flush()?;
    // Serve until our parent closes stdin (or kills us).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(proxy);
    drop(server);
    Ok(())
}
