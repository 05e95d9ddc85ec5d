//! Benchmarks for shardstream: criterion benches in `benches/` and measurement binaries in
//! `src/bin/` (`index-bench`, `manifest-scale`).
