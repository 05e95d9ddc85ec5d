//! Benchmarks for shardstream: criterion benches in `benches/` and measurement binaries in
//! `src/bin/` (`index-bench`, `manifest-scale`, `shardstream-bench`), and [`gather`], the
//! shuffled-copy ceiling `shardstream-bench gather` measures.

pub mod gather;
