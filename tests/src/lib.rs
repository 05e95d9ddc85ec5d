//! Test infrastructure shared by the workspace's integration tests and benchmarks.
//!
//! - [`s3`]: an S3 server on loopback (`s3s` + `s3s-fs`) with optional per-request latency.
//! - [`moto`]: moto's S3 server as an independent second implementation.
//! - [`fault`]: a fault-injecting HTTP proxy (latency, 503 SlowDown, resets, truncated bodies,
//!   stalls) with a seeded, reproducible schedule, to put in front of either server.
//! - [`reliability`]: datasets on S3, delivery checks, worker processes, crash and contention
//!   loops — shared by the reliability tests and the `soak` binary.
//! - [`parsers`]: every parser of untrusted bytes behind one signature (bad-input tests, fuzzers).
//! - [`testdata`]: where the real-world files in `../shared/testdata` live.
//!
//! The integration tests themselves are in `tests/tests/`; the `s3-test-server` binary serves a
//! directory for the Python tests and benchmarks.

pub mod fault;
pub mod moto;
pub mod parsers;
pub mod reliability;
pub mod s3;

/// Locations of the shared real-world test data (not part of this repository).
pub mod testdata {
    use std::path::PathBuf;

    /// `../shared/testdata` relative to the workspace root, or `SHARDSTREAM_TESTDATA`.
    pub fn root() -> PathBuf {
        if let Ok(p) = std::env::var("SHARDSTREAM_TESTDATA") {
            return PathBuf::from(p);
        }
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata")
    }
}
