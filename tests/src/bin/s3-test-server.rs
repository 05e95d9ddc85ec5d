//! Serves a directory over S3 on 127.0.0.1 for Python tests and benchmarks.
//!
//! Prints one JSON line `{"endpoint": ..., "port": ..., "access_key": ..., "secret_key": ...,
//! "region": ...}` on stdout once it accepts connections, then serves until stdin closes or it is
//! killed, so a parent process that dies takes the server with it.

use anyhow::Result;
use clap::Parser;
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
    let line = serde_json::json!({
        "endpoint": server.endpoint(),
        "port": server.port(),
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "region": REGION,
    });
    println!("{line}");
    std::io::stdout().flush()?;
    // Serve until our parent closes stdin (or kills us).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(server);
    Ok(())
}
